/*
 * runner.c - the queue runner of one node (see runner.h and README).
 *
 * Threads. One scanner lists the queue and puts the ids of due messages
 * on a bounded job list; queue_workers delivery threads take ids from it.
 * Each thread has its own synchronous sio over a private ioloop that is
 * only run while a lock is awaited. An id is on the job list or being
 * delivered at most once per node (the "busy" set), so a slow delivery
 * is not picked up again by the next scan; other nodes are kept out by
 * the claim lock.
 *
 * Lock order (DESIGN invariant 7: user -> mailbox -> queue item). Storing
 * a message into a mailbox may take user and mailbox locks (creating the
 * spool, the quota check), so it never runs under a claim. A message
 * with local recipients is handled by runner_deliver_with_locals(): a
 * "local delivery" lock of the user class (NOQUEUE) keeps other runners
 * out, the message is stored without the claim, and the claim is taken
 * afterwards to record the results and to do the remote part. No thread
 * ever waits for a user or mailbox lock while it holds a queue item lock.
 *
 * Crash safety. The envelope is written after every transaction, before
 * the next one starts: a crash repeats at most one transaction's
 * recipients. A failed recipient keeps dsn_sent = false until its DSN is
 * queued, so a crash between the two sends the DSN on the next attempt
 * (at worst twice, never not at all).
 *
 * Size. This file is a little over 1,200 lines: the scanner, the
 * delivery threads and the per-message logic share the job list, the busy
 * set and the destination counters, and splitting it would mean a private
 * header for state that nothing else should see.
 *
 * Shutdown. runner_stop() sets the stop flag (no new claims, no new
 * transactions), wakes every thread and joins them; a transaction that is
 * running finishes or times out (transport timeouts).
 */
#include "lib/lib.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "auth/authdb.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "maildir/sio.h"
#include "maildir/store.h"
#include "queue.h"
#include "transport.h"
#include "bounce.h"
#include "runner.h"

#include <inttypes.h>
#include <pthread.h>
#include <strings.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Messages waiting for a delivery thread, at most; the rest waits for a
   later scan (bounded memory with a huge queue). */
#define RUNNER_JOBS_MAX 4096
/* The flush stamp is polled this often. */
#define RUNNER_FLUSH_POLL_MSECS 1000
/* Kicks (one per enqueue on a busy server) cause at most one scan per
   this many milliseconds: a scan reads every envelope. */
#define RUNNER_KICK_GAP_MSECS 100
/* Local delivery locks (see runner_deliver_with_locals()): this many
   buckets, so that at most this many lock files exist for them. */
#define RUNNER_LOCAL_LOCK_BUCKETS 1024
/* Waiting for the claim to record local deliveries. */
#define RUNNER_RECLAIM_MSECS 30000
/* Copying a message into a mailbox: piece size. */
#define RUNNER_COPY_CHUNK (64 * 1024)
/* Draining a thread's private loop before destroying it. */
#define RUNNER_DRAIN_TICKS 100
#define RUNNER_TICK_MSECS 10

struct runner_job {
	char id[QUEUE_ID_MAX + 1];
	bool force;		/* flush: ignore next_attempt */
};

/* Transactions running per destination on this node. */
struct runner_destination {
	char *name;		/* owned; lowercased domain or relayhost */
	unsigned int count;
};

struct runner {
	struct runner_settings set;
	struct iopool *pool;		/* owned; for the private loops */
	pthread_t scanner;
	pthread_t *workers;		/* owned */
	unsigned int worker_count;
	bool started, scanner_started;

	pthread_mutex_t lock;		/* guards everything below */
	pthread_cond_t scan_cond;	/* scanner: kicked or stopping */
	pthread_cond_t job_cond;	/* workers: a job or stopping */
	pthread_cond_t dest_cond;	/* a destination slot freed */
	bool stopping, kicked;
	struct runner_job *jobs;	/* ring of RUNNER_JOBS_MAX */
	unsigned int job_head, job_count;
	/* ids on the job list or in delivery on this node (a linear set:
	   at most RUNNER_JOBS_MAX + queue_workers entries) */
	char (*busy)[QUEUE_ID_MAX + 1];
	unsigned int busy_count, busy_alloc;
	struct runner_destination *dests;
	unsigned int dest_count, dest_alloc;
};

static struct runner runner = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static struct {
	atomic_ullong delivered, deferred, bounced, dsn_sent;
	atomic_uint active, queued;
} runner_counters;

/* What one thread needs to talk to the spool. */
struct runner_thread {
	struct ioloop *loop;
	struct sio *sio;
	const char *name;
};

/* ---- thread context ----------------------------------------------------- */

static void runner_thread_init(struct runner_thread *thread, const char *name)
{
	struct ioloop_settings loop_set = { .name = name, .pool = runner.pool };

	thread->name = name;
	thread->loop = ioloop_create(&loop_set);
	thread->sio = sio_create_sync(thread->loop);
}

/* runner_tick_done - end of one drain slice */
static void runner_tick_done(struct io_request *req, int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

static void runner_thread_deinit(struct runner_thread *thread)
{
	struct io_request tick;

	sio_destroy(&thread->sio);
	/* A destroyed lock handle can leave a cancelled timer behind for
	   one iteration: run the loop until nothing is pending. */
	for (unsigned int i = 0; i < RUNNER_DRAIN_TICKS &&
	     ioloop_pending_count(thread->loop) > 0; i++) {
		io_request_init(&tick, runner_tick_done, thread->loop);
		io_timeout(thread->loop, &tick, RUNNER_TICK_MSECS);
		while (io_request_is_pending(&tick))
			ioloop_run(thread->loop);
	}
	if (ioloop_pending_count(thread->loop) == 0)
		ioloop_destroy(&thread->loop);
	else
		log_warn("queue runner %s: %u I/O requests still pending at "
			 "exit", thread->name, ioloop_pending_count(thread->loop));
}

/* ---- configuration snapshot --------------------------------------------- */

struct runner_config {
	const struct settings *set;
	void *ref;
};

static void runner_config_get(struct runner_config *config)
{
	config->set = runner.set.config_get(&config->ref);
}

static void runner_config_put(struct runner_config *config)
{
	runner.set.config_put(config->ref);
	config->set = NULL;
	config->ref = NULL;
}

static uint64_t runner_now_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- busy set and job list (runner.lock held) ---------------------------- */

static bool runner_busy_has(const char *id)
{
	for (unsigned int i = 0; i < runner.busy_count; i++) {
		if (strcmp(runner.busy[i], id) == 0)
			return true;
	}
	return false;
}

static void runner_busy_add(const char *id)
{
	if (runner.busy_count == runner.busy_alloc) {
		runner.busy_alloc = runner.busy_alloc == 0 ? 64 :
			runner.busy_alloc * 2;
		runner.busy = mem_realloc(runner.busy, runner.busy_alloc *
					  sizeof(*runner.busy));
	}
	snprintf(runner.busy[runner.busy_count++], QUEUE_ID_MAX + 1, "%s", id);
}

static void runner_busy_remove(const char *id)
{
	for (unsigned int i = 0; i < runner.busy_count; i++) {
		if (strcmp(runner.busy[i], id) == 0) {
			runner.busy_count--;
			if (i != runner.busy_count)
				memcpy(runner.busy[i], runner.busy[runner.busy_count],
				       sizeof(runner.busy[i]));
			return;
		}
	}
}

/* runner_job_push - false when the list is full or id is already here */
static bool runner_job_push(const char *id, bool force)
{
	struct runner_job *job;

	if (runner.job_count == RUNNER_JOBS_MAX || runner_busy_has(id))
		return false;
	job = &runner.jobs[(runner.job_head + runner.job_count) % RUNNER_JOBS_MAX];
	snprintf(job->id, sizeof(job->id), "%s", id);
	job->force = force;
	runner.job_count++;
	runner_busy_add(id);
	return true;
}

static void runner_job_pop(struct runner_job *job_r)
{
	*job_r = runner.jobs[runner.job_head];
	runner.job_head = (runner.job_head + 1) % RUNNER_JOBS_MAX;
	runner.job_count--;
}

/* ---- per-destination concurrency ----------------------------------------- */

static struct runner_destination *runner_dest_find(const char *name)
{
	for (unsigned int i = 0; i < runner.dest_count; i++) {
		if (strcmp(runner.dests[i].name, name) == 0)
			return &runner.dests[i];
	}
	return NULL;
}

/* runner_dest_acquire - wait for a slot; false when stopping */
static bool runner_dest_acquire(const char *name, unsigned int limit)
{
	struct runner_destination *dest;

	pthread_mutex_lock(&runner.lock);
	while (!runner.stopping && (dest = runner_dest_find(name)) != NULL &&
	       dest->count >= limit)
		pthread_cond_wait(&runner.dest_cond, &runner.lock);
	if (runner.stopping) {
		pthread_mutex_unlock(&runner.lock);
		return false;
	}
	if ((dest = runner_dest_find(name)) == NULL) {
		if (runner.dest_count == runner.dest_alloc) {
			runner.dest_alloc = runner.dest_alloc == 0 ? 16 :
				runner.dest_alloc * 2;
			runner.dests = mem_realloc(runner.dests, runner.dest_alloc *
						   sizeof(*runner.dests));
		}
		dest = &runner.dests[runner.dest_count++];
		dest->name = mem_strdup(name);
		dest->count = 0;
	}
	dest->count++;
	pthread_mutex_unlock(&runner.lock);
	return true;
}

static void runner_dest_release(const char *name)
{
	struct runner_destination *dest;

	pthread_mutex_lock(&runner.lock);
	dest = runner_dest_find(name);
	if (dest == NULL)
		log_panic("queue runner: destination %s released but not held",
			  name);
	if (--dest->count == 0) {
		/* Forget idle destinations: the table stays as small as the
		   number of transactions running. */
		free(dest->name);
		*dest = runner.dests[--runner.dest_count];
	}
	pthread_cond_broadcast(&runner.dest_cond);
	pthread_mutex_unlock(&runner.lock);
}

/* ---- recipients ------------------------------------------------------------ */

static const char *runner_rcpt_domain(const char *address)
{
	const char *at = strrchr(address, '@');

	return at != NULL ? at + 1 : "";
}

static bool runner_rcpt_is_local(const struct settings *set,
				 const struct queue_rcpt *rcpt)
{
	return settings_is_local_domain(set, runner_rcpt_domain(rcpt->address));
}

/* runner_rcpt_set - record one recipient's result */
static void runner_rcpt_set(struct queue_rcpt *rcpt, enum queue_rcpt_state state,
			    const char *status, const char *diagnostic,
			    const char *remote_mta)
{
	/* Copies first: a new value may be the old one (expiry keeps the
	   last remote MTA). */
	char *new_status = mem_strdup(status);
	char *new_diagnostic = mem_strdup(diagnostic);
	char *new_remote_mta = mem_strdup(remote_mta);

	rcpt->state = state;
	free(rcpt->status);
	rcpt->status = new_status;
	free(rcpt->diagnostic);
	rcpt->diagnostic = new_diagnostic;
	free(rcpt->remote_mta);
	rcpt->remote_mta = new_remote_mta;
	rcpt->updated = (int64_t)time(NULL);
}

/* runner_log_rcpt - one Postfix-like line per recipient result */
static void runner_log_rcpt(const struct queue_envelope *env,
			    const struct queue_rcpt *rcpt, const char *relay)
{
	const char *status;

	switch (rcpt->state) {
	case QUEUE_RCPT_DELIVERED:
		status = "sent";
		atomic_fetch_add(&runner_counters.delivered, 1);
		break;
	case QUEUE_RCPT_FAILED:
		status = "bounced";
		atomic_fetch_add(&runner_counters.bounced, 1);
		break;
	default:
		status = "deferred";
		atomic_fetch_add(&runner_counters.deferred, 1);
		break;
	}
	log_id_info(env->id, "to=<%s>, relay=%s, delay=%" PRId64 ", dsn=%s, "
		    "status=%s (%s)", rcpt->address, relay,
		    (int64_t)time(NULL) - env->created,
		    rcpt->status != NULL ? rcpt->status : "-", status,
		    rcpt->diagnostic != NULL ? rcpt->diagnostic : "");
}

/* ---- local delivery ---------------------------------------------------------- */

/* A local recipient prepared before the claim (see the lock order note). */
struct runner_local {
	const char *address;		/* borrowed from the pre-claim envelope */
	struct store_user *user;	/* NULL: see failed/status */
	bool failed;			/* permanent: unknown user or bad name */
	const char *status;		/* static, when user == NULL */
	const char *reason;		/* static, when user == NULL */
};

struct runner_locals {
	struct runner_local *items;
	size_t count;
};

/* runner_local_prepare - check the user and open (create) its spool */
static void runner_local_prepare(struct runner_thread *thread,
				 const struct settings *set,
				 const char *address, struct runner_local *local)
{
	const char *error = NULL;
	int ret;

	local->address = address;
	ret = authdb_user_exists(set->users_file, address);
	if (ret < 0) {
		local->status = "4.3.0";
		local->reason = "users file unavailable";
		return;
	}
	if (ret == 0) {
		local->failed = true;
		local->status = "5.1.1";
		local->reason = "unknown user";
		return;
	}
	ret = store_user_open(runner.set.store, thread->sio, address,
			      STORE_USER_CREATE, &local->user, &error);
	if (ret == STORE_OK)
		return;
	local->user = NULL;
	if (ret == STORE_ERR_BADNAME) {
		local->failed = true;
		local->status = "5.1.3";
	} else {
		local->status = "4.3.0";
	}
	local->reason = error != NULL ? error : store_result_name(ret);
}

static void runner_locals_prepare(struct runner_thread *thread,
				  const struct settings *set,
				  const struct queue_envelope *env,
				  struct runner_locals *locals_r)
{
	locals_r->items = mem_calloc(env->rcpt_count == 0 ? 1 : env->rcpt_count,
				     sizeof(*locals_r->items));
	locals_r->count = 0;
	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (env->rcpts[i].state != QUEUE_RCPT_PENDING ||
		    !runner_rcpt_is_local(set, &env->rcpts[i]))
			continue;
		runner_local_prepare(thread, set, env->rcpts[i].address,
				     &locals_r->items[locals_r->count++]);
	}
}

static void runner_locals_free(struct runner_locals *locals)
{
	for (size_t i = 0; i < locals->count; i++) {
		if (locals->items[i].user != NULL)
			store_user_close(&locals->items[i].user);
	}
	free(locals->items);
	locals->items = NULL;
	locals->count = 0;
}

static struct runner_local *runner_locals_find(struct runner_locals *locals,
					       const char *address)
{
	for (size_t i = 0; i < locals->count; i++) {
		if (strcmp(locals->items[i].address, address) == 0)
			return &locals->items[i];
	}
	return NULL;
}

/* runner_save_content - copy the queued message into a new save */
static int runner_save_content(struct store_user *user, int fd,
			       struct store_save **save_r)
{
	unsigned char *buf = mem_zalloc(RUNNER_COPY_CHUNK);
	struct store_save *save;
	uint64_t offset = 0;
	ssize_t n;
	int ret;

	*save_r = NULL;
	save = store_save_begin(user, &ret);
	if (save == NULL) {
		free(buf);
		return ret;
	}
	for (;;) {
		n = sio_pread(store_user_sio(user), fd, buf, RUNNER_COPY_CHUNK,
			      offset);
		if (n < 0) {
			log_error("queue runner: read the queued message: %s",
				  strerror((int)-n));
			ret = STORE_ERR_TEMP;
			break;
		}
		if (n == 0) {
			ret = store_save_finish(save);
			break;
		}
		if ((ret = store_save_write(save, buf, (size_t)n)) < 0)
			break;
		offset += (uint64_t)n;
	}
	free(buf);
	if (ret < 0) {
		store_save_free(&save);
		return ret;
	}
	*save_r = save;
	return STORE_OK;
}

/* runner_deliver_one_local - one recipient; result into rcpt */
static void runner_deliver_one_local(struct queue_rcpt *rcpt,
				     struct runner_local *local,
				     struct store_save **save, int fd)
{
	char diagnostic[256];
	int ret;

	if (local == NULL || local->user == NULL) {
		snprintf(diagnostic, sizeof(diagnostic), "x-clustermail; %s",
			 local != NULL ? local->reason : "spool not prepared");
		runner_rcpt_set(rcpt, local != NULL && local->failed ?
				QUEUE_RCPT_FAILED : QUEUE_RCPT_PENDING,
				local != NULL ? local->status : "4.3.0",
				diagnostic, NULL);
		return;
	}
	/* One saved file, hard-linked into every local recipient's INBOX. */
	ret = *save != NULL ? STORE_OK :
		runner_save_content(local->user, fd, save);
	if (ret == STORE_OK)
		ret = store_save_deliver(*save, local->user, NULL, NULL);
	if (ret == STORE_OK) {
		runner_rcpt_set(rcpt, QUEUE_RCPT_DELIVERED, "2.0.0",
				"x-clustermail; delivered to mailbox", NULL);
		return;
	}
	snprintf(diagnostic, sizeof(diagnostic), "x-clustermail; %s",
		 store_user_error(local->user));
	runner_rcpt_set(rcpt, QUEUE_RCPT_PENDING,
			ret == STORE_ERR_OVERQUOTA ? "4.2.2" : "4.3.0",
			diagnostic, NULL);
}

/* runner_deliver_local - every pending local recipient; true if any */
static bool runner_deliver_local(struct queue_envelope *env,
				 const struct settings *set,
				 struct runner_locals *locals, int fd,
				 bool *done)
{
	struct store_save *save = NULL;
	bool any = false;

	for (size_t i = 0; i < env->rcpt_count; i++) {
		struct queue_rcpt *rcpt = &env->rcpts[i];

		if (rcpt->state != QUEUE_RCPT_PENDING ||
		    !runner_rcpt_is_local(set, rcpt))
			continue;
		runner_deliver_one_local(rcpt, runner_locals_find(locals,
								  rcpt->address),
					 &save, fd);
		runner_log_rcpt(env, rcpt, "local");
		done[i] = true;
		any = true;
	}
	if (save != NULL)
		store_save_free(&save);
	return any;
}

/* ---- remote delivery ---------------------------------------------------------- */

/* runner_transaction - one transport call for the pending remote
   recipients of domain (all of them with a relayhost) */
static void runner_transaction(struct queue_envelope *env,
			       const struct settings *set, const char *domain,
			       int fd)
{
	const char *dest_name = set->relayhost != NULL ? set->relayhost : domain;
	struct transport_message msg = {
		.sender = env->sender, .envid = env->envid, .ret = (int)env->ret,
		.smtputf8 = env->smtputf8, .body_8bit = env->body_8bit,
		.size = env->size, .content_fd = fd,
	};
	struct transport_rcpt *rcpts;
	size_t *index, count = 0;

	rcpts = mem_calloc(env->rcpt_count, sizeof(*rcpts));
	index = mem_calloc(env->rcpt_count, sizeof(*index));
	for (size_t i = 0; i < env->rcpt_count; i++) {
		struct queue_rcpt *rcpt = &env->rcpts[i];

		if (rcpt->state != QUEUE_RCPT_PENDING ||
		    runner_rcpt_is_local(set, rcpt) ||
		    (set->relayhost == NULL &&
		     strcasecmp(runner_rcpt_domain(rcpt->address), domain) != 0))
			continue;
		rcpts[count].address = rcpt->address;
		rcpts[count].orcpt = rcpt->orcpt;
		rcpts[count].notify = rcpt->notify;
		index[count++] = i;
	}
	if (count > 0 && runner_dest_acquire(dest_name,
					     set->queue_destination_concurrency)) {
		(void)transport_deliver(set, domain, &msg, rcpts, count);
		runner_dest_release(dest_name);
		for (size_t j = 0; j < count; j++) {
			struct queue_rcpt *rcpt = &env->rcpts[index[j]];
			const struct transport_rcpt *result = &rcpts[j];
			enum queue_rcpt_state state =
				result->result == TRANSPORT_OK ? QUEUE_RCPT_DELIVERED :
				result->result == TRANSPORT_PERM ? QUEUE_RCPT_FAILED :
				QUEUE_RCPT_PENDING;

			runner_rcpt_set(rcpt, state, result->status[0] != '\0' ?
					result->status : NULL,
					result->diagnostic, result->remote_mta);
			/* A next hop that supports DSN got our NOTIFY and
			   reports success itself (RFC 3461 5.2.2); only
			   without it do we say "relayed". */
			if (state == QUEUE_RCPT_DELIVERED && !result->dsn_relayed)
				rcpt->dsn_sent = true;
			runner_log_rcpt(env, rcpt, result->remote_mta != NULL ?
					result->remote_mta : dest_name);
		}
		transport_rcpts_clear(rcpts, count);
	}
	free(rcpts);
	free(index);
}

/* runner_next_domain - a domain of a pending remote recipient not yet
   tried in this attempt (tried[i] marks recipients handled) */
static const char *runner_next_domain(const struct queue_envelope *env,
				      const struct settings *set, bool *tried)
{
	const char *domain = NULL;

	for (size_t i = 0; i < env->rcpt_count; i++) {
		const struct queue_rcpt *rcpt = &env->rcpts[i];

		if (tried[i] || rcpt->state != QUEUE_RCPT_PENDING ||
		    runner_rcpt_is_local(set, rcpt))
			continue;
		if (domain == NULL)
			domain = runner_rcpt_domain(rcpt->address);
		if (set->relayhost != NULL ||
		    strcasecmp(runner_rcpt_domain(rcpt->address), domain) == 0)
			tried[i] = true;
	}
	return domain;
}

/* ---- one message --------------------------------------------------------- */

struct runner_attempt {
	struct runner_thread *thread;
	const struct settings *set;
	struct queue_claim *claim;
	struct queue_envelope *env;	/* the claim's */
	int fd;				/* the content */
};

static bool runner_is_stopping(void)
{
	bool stopping;

	pthread_mutex_lock(&runner.lock);
	stopping = runner.stopping;
	pthread_mutex_unlock(&runner.lock);
	return stopping;
}

/* runner_update - write the envelope after a transaction */
static void runner_update(struct runner_attempt *a)
{
	int ret = queue_claim_update(a->claim);

	if (ret < 0)
		log_id_error(a->env->id, "queue runner: envelope update: %s",
			     queue_error());
}

/* runner_send_dsns - DSNs for failed recipients (and NOTIFY=SUCCESS
   deliveries) that have none yet. false when one could not be queued. */
static bool runner_send_dsns(struct runner_attempt *a)
{
	struct queue_envelope *env = a->env;
	static const struct {
		enum queue_rcpt_state state;
		enum bounce_kind kind;
	} kinds[] = {
		{ QUEUE_RCPT_FAILED, BOUNCE_FAILED },
		{ QUEUE_RCPT_DELIVERED, BOUNCE_DELIVERED },
	};
	bool *selected = mem_calloc(env->rcpt_count, sizeof(*selected));
	bool ok = true, changed = false;

	for (size_t k = 0; k < N_ELEMENTS(kinds); k++) {
		bool any = false;

		for (size_t i = 0; i < env->rcpt_count; i++) {
			const struct queue_rcpt *rcpt = &env->rcpts[i];

			selected[i] = rcpt->state == kinds[k].state &&
				!rcpt->dsn_sent &&
				(kinds[k].kind == BOUNCE_FAILED ||
				 (rcpt->notify & QUEUE_NOTIFY_SUCCESS) != 0);
			any = any || selected[i];
		}
		if (!any)
			continue;
		if (bounce_queue(runner.set.queue, a->thread->sio, a->set, env,
				 selected, kinds[k].kind, a->fd) < 0) {
			log_id_error(env->id, "queue runner: cannot queue the "
				     "delivery status notification: %s",
				     queue_error());
			ok = false;
			continue;
		}
		if (env->sender[0] != '\0')
			atomic_fetch_add(&runner_counters.dsn_sent, 1);
		for (size_t i = 0; i < env->rcpt_count; i++) {
			if (selected[i])
				env->rcpts[i].dsn_sent = true;
		}
		changed = true;
	}
	free(selected);
	if (changed)
		runner_kick();
	return ok;
}

/* runner_expire - past queue_lifetime: the pending recipients fail */
static void runner_expire(struct runner_attempt *a)
{
	struct queue_envelope *env = a->env;
	char diagnostic[512];

	for (size_t i = 0; i < env->rcpt_count; i++) {
		struct queue_rcpt *rcpt = &env->rcpts[i];

		if (rcpt->state != QUEUE_RCPT_PENDING)
			continue;
		snprintf(diagnostic, sizeof(diagnostic), "%s%s",
			 rcpt->diagnostic != NULL ? rcpt->diagnostic :
			 "x-clustermail; delivery time expired",
			 rcpt->diagnostic != NULL ? " (delivery time expired)" : "");
		runner_rcpt_set(rcpt, QUEUE_RCPT_FAILED, "4.4.7", diagnostic,
				rcpt->remote_mta);
		runner_log_rcpt(env, rcpt, "none");
	}
}

/* runner_delay_warning - one delay DSN after queue_delay_warning */
static void runner_delay_warning(struct runner_attempt *a, int64_t now)
{
	struct queue_envelope *env = a->env;
	uint64_t after = a->set->queue_delay_warning_msecs / 1000;
	bool *selected;

	if (after == 0 || env->delay_warned ||
	    now - env->created < (int64_t)after)
		return;
	selected = mem_calloc(env->rcpt_count, sizeof(*selected));
	for (size_t i = 0; i < env->rcpt_count; i++)
		selected[i] = env->rcpts[i].state == QUEUE_RCPT_PENDING;
	if (bounce_queue(runner.set.queue, a->thread->sio, a->set, env, selected,
			 BOUNCE_DELAYED, a->fd) == 0) {
		env->delay_warned = true;
		if (env->sender[0] != '\0') {
			atomic_fetch_add(&runner_counters.dsn_sent, 1);
			runner_kick();
		}
	} else {
		log_id_warn(env->id, "queue runner: cannot queue the delay "
			    "notification: %s", queue_error());
	}
	free(selected);
}

/* runner_finish - after the transactions: remove, expire or reschedule */
static void runner_finish(struct runner_attempt *a, bool attempted)
{
	struct queue_envelope *env = a->env;
	int64_t now = (int64_t)time(NULL);
	uint64_t delay;
	bool dsns_ok;

	if (queue_envelope_pending(env) > 0 &&
	    now - env->created >= (int64_t)(a->set->queue_lifetime_msecs / 1000))
		runner_expire(a);
	dsns_ok = runner_send_dsns(a);
	if (queue_envelope_pending(env) == 0 && dsns_ok) {
		/* env belongs to the claim, which the removal frees */
		char id[QUEUE_ID_MAX + 1];

		memcpy(id, env->id, sizeof(id));
		a->env = NULL;
		if (queue_claim_remove(&a->claim) < 0)
			log_id_error(id, "queue runner: remove: %s",
				     queue_error());
		else
			log_id_info(id, "removed");
		return;
	}
	if (queue_envelope_pending(env) > 0)
		runner_delay_warning(a, now);
	if (attempted || !dsns_ok) {
		delay = queue_retry_delay_msecs(env->attempts == 0 ? 1 :
						env->attempts,
						a->set->queue_retry_initial_msecs,
						a->set->queue_retry_max_msecs);
		env->next_attempt = now + (int64_t)((delay + 999) / 1000);
	}
	runner_update(a);
	queue_claim_release(&a->claim);
}

/* runner_transactions - one transaction per remote destination */
static bool runner_transactions(struct runner_attempt *a)
{
	struct queue_envelope *env = a->env;
	bool attempted = false;
	const char *domain;
	bool *tried;

	tried = mem_calloc(env->rcpt_count, sizeof(*tried));
	while (!runner_is_stopping() &&
	       (domain = runner_next_domain(env, a->set, tried)) != NULL) {
		char *domain_copy = str_lcase(mem_strdup(domain));

		runner_transaction(env, a->set, domain_copy, a->fd);
		free(domain_copy);
		attempted = true;
		runner_update(a);
	}
	free(tried);
	return attempted;
}

/* runner_is_due - may this claimed envelope be attempted now? */
static bool runner_is_due(const struct queue_envelope *env, bool force)
{
	/* The scan's copy may be stale: another node may have delivered
	   it meanwhile, or it was held. */
	return !env->held && (force || env->next_attempt <= (int64_t)time(NULL) ||
			      queue_envelope_pending(env) == 0);
}

/* runner_attempt_claimed - the remote part of an attempt and its end.
   local_done: the local recipients were attempted just before (see
   runner_deliver_with_locals()), which counts as this attempt. */
static void runner_attempt_claimed(struct runner_attempt *a, bool local_done)
{
	struct queue_envelope *env = a->env;
	bool attempted = local_done;
	int ret;

	if (a->fd < 0 &&
	    (ret = queue_claim_open_content(a->claim, &a->fd)) < 0) {
		log_id_error(env->id, "queue runner: open the message: %s",
			     queue_error());
		queue_claim_release(&a->claim);
		return;
	}
	if (local_done || queue_envelope_pending(env) > 0) {
		env->attempts++;
		env->last_attempt = (int64_t)time(NULL);
		if (runner_transactions(a))
			attempted = true;
		if (!attempted)
			env->attempts--;
	}
	runner_finish(a, attempted);
}

static bool runner_has_local_pending(const struct settings *set,
				     const struct queue_envelope *env)
{
	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (env->rcpts[i].state == QUEUE_RCPT_PENDING &&
		    runner_rcpt_is_local(set, &env->rcpts[i]))
			return true;
	}
	return false;
}

/* runner_local_lock_name - the bucket of id (see runner_deliver_with_locals) */
static void runner_local_lock_name(const char *id, char name_r[LOCK_NAME_MAX + 1])
{
	char bucket[32];
	uint32_t hash = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
		hash = (hash ^ *p) * 16777619u;
	snprintf(bucket, sizeof(bucket), "queue-local-%u",
		 hash % RUNNER_LOCAL_LOCK_BUCKETS);
	lock_name_user(bucket, name_r);
}

/* runner_apply_local - copy the local results (from the envelope read
   before the claim) into the claimed envelope */
static void runner_apply_local(struct queue_envelope *env,
			       const struct queue_envelope *pre,
			       const bool *done)
{
	for (size_t i = 0; i < pre->rcpt_count && i < env->rcpt_count; i++) {
		const struct queue_rcpt *result = &pre->rcpts[i];
		struct queue_rcpt *rcpt = &env->rcpts[i];

		if (!done[i] || rcpt->state != QUEUE_RCPT_PENDING ||
		    strcmp(rcpt->address, result->address) != 0)
			continue;
		runner_rcpt_set(rcpt, result->state, result->status,
				result->diagnostic, NULL);
	}
}

/* runner_deliver_with_locals - a message with local recipients.
 *
 * Storing into a mailbox may take user and mailbox locks (spool
 * creation, the quota check), which come BEFORE queue item locks in the
 * lock order. So the local part runs without the claim, under a "local
 * delivery" lock of the user class taken first (NOQUEUE: busy means
 * another runner is at it; skip). Every runner takes it before storing a
 * queued message locally, so no two store the same one; the envelope is
 * read again under it (a runner that finished before us has written its
 * results), and the results are written to the envelope under the claim
 * before the local lock is let go. Locks are per bucket of ids (bounded
 * lock files); two messages in one bucket just wait for a later scan.
 *   local lock -> [short claim: due? content fd] -> user/mailbox locks
 *   (store) -> claim (waits) -> envelope update -> remote part
 */
static void runner_deliver_with_locals(struct runner_attempt *a,
				       const char *id, bool force)
{
	char name[LOCK_NAME_MAX + 1];
	struct runner_locals locals = { NULL, 0 };
	struct queue_envelope *pre = NULL;
	struct lock *local_lock;
	bool *done = NULL;
	int ret;

	runner_local_lock_name(id, name);
	local_lock = lock_create(runner.set.locks, name, LOCK_CLASS_USER);
	ret = sio_lock(a->thread->sio, local_lock, LOCK_MODE_EX,
		       LOCK_FLAG_NOQUEUE, 0);
	if (ret < 0) {
		if (ret != -EAGAIN)
			log_id_warn(id, "queue runner: local delivery lock: %s",
				    strerror(-ret));
		lock_destroy(&local_lock);
		return;
	}
	/* A short claim: is it still due, and the content to store. */
	ret = queue_claim(runner.set.queue, a->thread->sio, id, 0, &a->claim);
	if (ret < 0)
		goto out;
	if (!runner_is_due(queue_claim_envelope(a->claim), force) ||
	    queue_claim_open_content(a->claim, &a->fd) < 0) {
		queue_claim_release(&a->claim);
		goto out;
	}
	pre = queue_envelope_dup(queue_claim_envelope(a->claim));
	queue_claim_release(&a->claim);

	done = mem_calloc(pre->rcpt_count == 0 ? 1 : pre->rcpt_count,
			  sizeof(*done));
	runner_locals_prepare(a->thread, a->set, pre, &locals);
	runner_deliver_local(pre, a->set, &locals, a->fd, done);
	runner_locals_free(&locals);

	/* Record what was stored: wait for the claim (an admin command may
	   hold it for a moment). */
	ret = queue_claim(runner.set.queue, a->thread->sio, id,
			  RUNNER_RECLAIM_MSECS, &a->claim);
	if (ret < 0) {
		log_id_error(id, "queue runner: cannot record the local "
			     "deliveries (%s); they may be repeated",
			     queue_error());
		goto out;
	}
	a->env = queue_claim_envelope(a->claim);
	runner_apply_local(a->env, pre, done);
	runner_update(a);
	runner_attempt_claimed(a, true);
out:
	if (a->fd >= 0) {
		(void)sio_close(a->thread->sio, a->fd);
		a->fd = -1;
	}
	free(done);
	queue_envelope_free(&pre);
	lock_destroy(&local_lock);
}

/* runner_deliver - one job */
static void runner_deliver(struct runner_thread *thread,
			   const struct runner_job *job)
{
	struct runner_attempt a = { .thread = thread, .fd = -1 };
	struct runner_config config;
	struct queue_envelope *pre;
	int ret;

	runner_config_get(&config);
	a.set = config.set;
	ret = queue_read(runner.set.queue, thread->sio, job->id, &pre);
	if (ret < 0) {
		if (ret != -ENOENT)
			log_id_warn(job->id, "queue runner: %s", queue_error());
		runner_config_put(&config);
		return;
	}
	atomic_fetch_add(&runner_counters.active, 1);
	if (pre->held) {
		/* never delivered while held */
	} else if (runner_has_local_pending(config.set, pre)) {
		runner_deliver_with_locals(&a, job->id, job->force);
	} else if ((ret = queue_claim(runner.set.queue, thread->sio, job->id,
				      0, &a.claim)) == 0) {
		a.env = queue_claim_envelope(a.claim);
		if (runner_is_due(a.env, job->force))
			runner_attempt_claimed(&a, false);
		else
			queue_claim_release(&a.claim);
		if (a.fd >= 0)
			(void)sio_close(thread->sio, a.fd);
	} else if (ret != -EAGAIN && ret != -ENOENT) {
		log_id_warn(job->id, "queue runner: claim: %s", queue_error());
	}
	atomic_fetch_sub(&runner_counters.active, 1);
	queue_envelope_free(&pre);
	runner_config_put(&config);
}

static void *runner_worker_main(void *context ATTR_UNUSED)
{
	struct runner_thread thread;
	struct runner_job job;

	runner_thread_init(&thread, "queue-worker");
	pthread_mutex_lock(&runner.lock);
	for (;;) {
		while (!runner.stopping && runner.job_count == 0)
			pthread_cond_wait(&runner.job_cond, &runner.lock);
		if (runner.stopping)
			break;
		runner_job_pop(&job);
		pthread_mutex_unlock(&runner.lock);
		runner_deliver(&thread, &job);
		pthread_mutex_lock(&runner.lock);
		runner_busy_remove(job.id);
	}
	pthread_mutex_unlock(&runner.lock);
	runner_thread_deinit(&thread);
	return NULL;
}

/* ---- scanner --------------------------------------------------------------- */

struct runner_scan {
	int64_t now;
	bool force;
	unsigned int seen;
	struct runner_job *due;		/* owned */
	size_t due_count, due_alloc;
};

static int runner_scan_cb(const struct queue_envelope *env, void *context)
{
	struct runner_scan *scan = context;

	scan->seen++;
	if (env->held)
		return 0;
	/* Done messages (a crash between the last update and the removal)
	   are due at once; so is everything after a flush. */
	if (!scan->force && env->next_attempt > scan->now &&
	    queue_envelope_pending(env) > 0)
		return 0;
	if (scan->due_count == RUNNER_JOBS_MAX)
		return 0;	/* the rest waits for the next scan */
	if (scan->due_count == scan->due_alloc) {
		scan->due_alloc = scan->due_alloc == 0 ? 64 : scan->due_alloc * 2;
		scan->due = mem_realloc(scan->due, scan->due_alloc *
					sizeof(*scan->due));
	}
	snprintf(scan->due[scan->due_count].id, QUEUE_ID_MAX + 1, "%s", env->id);
	scan->due[scan->due_count].force = scan->force;
	scan->due_count++;
	return 0;
}

/* runner_scan_once - list the queue, hand the due messages out */
static void runner_scan_once(struct runner_thread *thread, bool force)
{
	struct runner_scan scan = { .now = (int64_t)time(NULL), .force = force };
	int ret;

	ret = queue_scan(runner.set.queue, thread->sio, runner_scan_cb, &scan);
	if (ret < 0) {
		log_warn("queue runner: scan: %s", queue_error());
	} else {
		atomic_store(&runner_counters.queued, scan.seen);
	}
	pthread_mutex_lock(&runner.lock);
	for (size_t i = 0; i < scan.due_count; i++)
		(void)runner_job_push(scan.due[i].id, scan.due[i].force);
	if (runner.job_count > 0)
		pthread_cond_broadcast(&runner.job_cond);
	pthread_mutex_unlock(&runner.lock);
	free(scan.due);
}

/* runner_wait - sleep until kicked, stopped, or msecs passed; returns
   false when stopping; *kicked_r says whether runner_kick() woke us */
static bool runner_wait(uint64_t msecs, bool *kicked_r)
{
	struct timespec deadline;
	bool stopping;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)(msecs / 1000);
	deadline.tv_nsec += (long)(msecs % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&runner.lock);
	while (!runner.stopping && !runner.kicked) {
		if (pthread_cond_timedwait(&runner.scan_cond, &runner.lock,
					   &deadline) == ETIMEDOUT)
			break;
	}
	*kicked_r = runner.kicked;
	runner.kicked = false;
	stopping = runner.stopping;
	pthread_mutex_unlock(&runner.lock);
	return !stopping;
}

static void *runner_scanner_main(void *context ATTR_UNUSED)
{
	struct runner_thread thread;
	struct runner_config config;
	uint64_t stamp, last_stamp, next_scan = 0, earliest = 0, now, wait_msecs;
	bool kicked = false, kick_pending = false;

	runner_thread_init(&thread, "queue-scanner");
	last_stamp = queue_flush_stamp(runner.set.queue, thread.sio);
	do {
		bool force = false;

		kick_pending = kick_pending || kicked;
		stamp = queue_flush_stamp(runner.set.queue, thread.sio);
		if (stamp != last_stamp) {
			last_stamp = stamp;
			force = true;
			log_info("queue runner: flush requested");
		}
		now = runner_now_msecs();
		if (force || now >= next_scan ||
		    (kick_pending && now >= earliest)) {
			/* The interval is read each time: SIGHUP applies. */
			runner_config_get(&config);
			next_scan = now + config.set->queue_scan_interval_msecs;
			runner_config_put(&config);
			runner_scan_once(&thread, force);
			kick_pending = false;
			now = runner_now_msecs();
			earliest = now + RUNNER_KICK_GAP_MSECS;
		}
		wait_msecs = next_scan > now ? next_scan - now : 0;
		if (wait_msecs > RUNNER_FLUSH_POLL_MSECS)
			wait_msecs = RUNNER_FLUSH_POLL_MSECS;
		if (kick_pending && earliest > now && earliest - now < wait_msecs)
			wait_msecs = earliest - now;
	} while (runner_wait(wait_msecs, &kicked));
	runner_thread_deinit(&thread);
	return NULL;
}

/* ---- public ---------------------------------------------------------------- */

int runner_start(const struct runner_settings *set)
{
	struct runner_config config;
	int ret;

	if (runner.started)
		log_panic("runner_start: already started");
	runner.set = *set;
	runner_config_get(&config);
	runner.worker_count = config.set->queue_workers;
	runner_config_put(&config);
	if (runner.worker_count == 0)
		runner.worker_count = 1;
	pthread_cond_init(&runner.scan_cond, NULL);
	pthread_cond_init(&runner.job_cond, NULL);
	pthread_cond_init(&runner.dest_cond, NULL);
	runner.stopping = false;
	runner.kicked = false;
	runner.jobs = mem_calloc(RUNNER_JOBS_MAX, sizeof(*runner.jobs));
	runner.pool = iopool_create(1);
	runner.workers = mem_calloc(runner.worker_count, sizeof(*runner.workers));
	for (unsigned int i = 0; i < runner.worker_count; i++) {
		ret = pthread_create(&runner.workers[i], NULL, runner_worker_main,
				     NULL);
		if (ret != 0) {
			log_error("queue runner: start a delivery thread: %s",
				  strerror(ret));
			runner.worker_count = i;
			runner.started = true;
			runner_stop();
			return -1;
		}
	}
	ret = pthread_create(&runner.scanner, NULL, runner_scanner_main, NULL);
	if (ret != 0) {
		log_error("queue runner: start the scanner: %s", strerror(ret));
		runner.started = true;
		runner_stop();
		return -1;
	}
	runner.scanner_started = true;
	runner.started = true;
	log_info("queue runner started: %u delivery threads",
		 runner.worker_count);
	return 0;
}

void runner_kick(void)
{
	pthread_mutex_lock(&runner.lock);
	runner.kicked = true;
	/* After runner_stop() began the condition may be gone: sessions
	   that finish during the drain still queue mail (and kick). */
	if (runner.started && !runner.stopping)
		pthread_cond_signal(&runner.scan_cond);
	pthread_mutex_unlock(&runner.lock);
}

void runner_stop(void)
{
	if (!runner.started)
		return;
	pthread_mutex_lock(&runner.lock);
	runner.stopping = true;
	pthread_cond_broadcast(&runner.scan_cond);
	pthread_cond_broadcast(&runner.job_cond);
	pthread_cond_broadcast(&runner.dest_cond);
	pthread_mutex_unlock(&runner.lock);
	if (runner.scanner_started)
		pthread_join(runner.scanner, NULL);
	for (unsigned int i = 0; i < runner.worker_count; i++)
		pthread_join(runner.workers[i], NULL);
	iopool_destroy(&runner.pool);
	free(runner.workers);
	runner.workers = NULL;
	free(runner.jobs);
	runner.jobs = NULL;
	free(runner.busy);
	runner.busy = NULL;
	runner.busy_count = runner.busy_alloc = 0;
	runner.job_count = runner.job_head = 0;
	for (unsigned int i = 0; i < runner.dest_count; i++)
		free(runner.dests[i].name);
	free(runner.dests);
	runner.dests = NULL;
	runner.dest_count = runner.dest_alloc = 0;
	pthread_cond_destroy(&runner.scan_cond);
	pthread_cond_destroy(&runner.job_cond);
	pthread_cond_destroy(&runner.dest_cond);
	runner.started = false;
	runner.scanner_started = false;
	log_info("queue runner stopped");
}

void runner_get_stats(struct runner_stats *stats_r)
{
	stats_r->delivered = atomic_load(&runner_counters.delivered);
	stats_r->deferred = atomic_load(&runner_counters.deferred);
	stats_r->bounced = atomic_load(&runner_counters.bounced);
	stats_r->dsn_sent = atomic_load(&runner_counters.dsn_sent);
	stats_r->active = atomic_load(&runner_counters.active);
	stats_r->queued = atomic_load(&runner_counters.queued);
}
