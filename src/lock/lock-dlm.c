/*
 * lock-dlm.c - the "dlm" lock backend: the Linux distributed lock manager
 * through libdlm (the "lite" API: our own lockspace, our own dispatch).
 *
 * Shape
 * -----
 * One lockspace ("clustermail" unless configured), opened or created at
 * lock_client_create(). Its device fd is watched with io_poll on the
 * dispatch loop; when readable, dlm_dispatch() reads the kernel's results
 * and calls our AST/BAST routines there. Results are forwarded to the
 * requesting handle's loop with ioloop_post (lock_backend_post_complete),
 * so callers see the same threading as with every other backend.
 *
 * Every libdlm call runs on the dispatch thread
 * ---------------------------------------------
 * libdlm writes the lksb from both sides: dlm_ls_lock()/dlm_ls_unlock()
 * store EINPROG into sb_status, and dlm_dispatch() copies each result
 * (status, flags, LVB) into the same lksb just before calling the AST. If
 * a loop thread issued a cancel while the dispatch thread delivered the
 * grant, the AST could read EINPROG instead of 0 and lose a grant. So
 * loop threads never call libdlm: they queue an operation (lock, convert,
 * cancel, unlock, detach) on the client's mutex-protected queue and wake
 * the dispatch loop; the dispatch thread runs the queue in order. All
 * lksb traffic is then on one thread, and records need no lock at all.
 * The cost is one thread hop per request, small next to a DLM round trip.
 *
 * Records outlive handles
 * -----------------------
 * A DLM lock (one lkid, one lksb, one LVB buffer) is a record owned by
 * the dispatch side. The kernel keeps our lksb and AST argument until the
 * lock's final AST, so a record is freed only when no DLM lock and no
 * operation remain. A handle points at its current record; lock_release()
 * hands the record over with an unlock (the handle may acquire again at
 * once, on a new record and lkid); lock_destroy() detaches it, after
 * which the dispatch side cancels what is in flight, unlocks what was
 * granted, and frees it - without ever touching the handle again. An
 * attached record holds a reference on its handle, so posting a result
 * to a handle that its owner just destroyed is safe (the post sees
 * lock_is_destroyed() and drops it).
 *
 * Results
 * -------
 * Exactly one completion AST follows each lock or convert request; after
 * dlm_dispatch() its sb_status is a positive code: 0 granted, EAGAIN
 * (NOQUEUE and busy), ECANCEL (our LKF_CANCEL won; a conversion keeps its
 * old mode), EDEADLK (the kernel broke a conversion deadlock by refusing
 * this one; we do not set LKF_CONVDEADLK, so it keeps its old mode).
 * A cancel that loses to the grant is ignored by the kernel and the grant
 * arrives as 0 - the generic layer then delivers 0, as lock.h promises.
 * Timeouts are built from LKF_CANCEL by lock.c; kernel lock timeouts are
 * deprecated and not used.
 *
 * Value block
 * -----------
 * Lock and up-convert requests always carry LKF_VALBLK, so the LVB is
 * copied into the record at the grant; DLM_SBF_VALNOTVALID (the DLM lost
 * it in recovery because an EX holder died) makes lock_value_is_valid()
 * false. Down-conversions and unlocks from EX carry LKF_VALBLK only when
 * the holder set a value: from EX, LKF_VALBLK *writes* the LVB, and
 * writing back what we read would turn a VALNOTVALID block valid again.
 * A holder that dies while holding EX has its locks purged by the kernel
 * with the LVB invalidated (node death: recovery; process death: the
 * purge of a closed lockspace fd) - the "crash leaves the value invalid"
 * rule of lock.h. A resource the DLM has forgotten comes back with a
 * zero LVB that is *not* flagged invalid; lock.h tells callers to treat
 * an all-zero value as unknown.
 *
 * Blocking callbacks: the BAST routine posts to the holder's loop. libdlm
 * does not pass the blocking mode to the routine, so we report EX, the
 * conservative answer (the holder lets go rather than down-converting).
 *
 * Shutdown: lock_client_destroy() (on the dispatch loop's thread, after
 * every handle is destroyed) runs the queued operations, then dispatches
 * synchronously until every record is gone (bounded by
 * LOCK_DLM_DRAIN_MSECS: blocking is acceptable at shutdown, hanging is
 * not), and drops our create reference on the lockspace (the kernel
 * removes it with the last reference) or, if we only opened it, closes it.
 */
#include "lib/lib.h"
#include "io/ioloop.h"
#include "lock-private.h"
#include "lock-dlm-device.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <syslog.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <libdlm.h>

#define LOCK_DLM_DEFAULT_LOCKSPACE "clustermail"
/* Longest lock_client_destroy() waits for outstanding unlocks. */
#define LOCK_DLM_DRAIN_MSECS 10000
/* A grant slower than this probably queued (the kernel does not say). */
#define LOCK_DLM_WAITED_MSECS 1

enum lock_dlm_op_kind {
	LOCK_DLM_OP_NONE,
	LOCK_DLM_OP_LOCK,
	LOCK_DLM_OP_CONVERT,
	LOCK_DLM_OP_CANCEL,
	LOCK_DLM_OP_UNLOCK,
	LOCK_DLM_OP_DETACH,
};

struct lock_dlm_client;

/* One DLM lock; owned and touched only by the dispatch thread once the
   first operation for it was queued. */
struct lock_dlm_record {
	struct lock_dlm_record *prev, *next;	/* client->records */
	struct lock_dlm_client *client;
	struct dlm_lksb lksb;
	char lvb[DLM_LVB_LEN];
	char name[LOCK_NAME_MAX + 1];

	struct lock *lock;		/* attached handle (referenced) or NULL */
	struct ioloop *loop;		/* the handle's request loop */
	enum lock_dlm_op_kind op;	/* LOCK, CONVERT, UNLOCK in flight */
	bool linked;			/* in client->records */
	bool exists;			/* the DLM holds a lock for us */
	bool cancel_sent;
	bool down_convert;		/* the CONVERT in flight goes down */
	enum lock_mode requested;
	uint64_t start_msecs;
};

struct lock_dlm_op {
	struct lock_dlm_op *next;
	enum lock_dlm_op_kind kind;
	struct lock_dlm_record *rec;
	struct ioloop *loop;		/* LOCK, CONVERT: where results go */
	enum lock_mode mode;		/* LOCK, CONVERT: wanted */
	bool noqueue;
	bool store_value;		/* CONVERT down, UNLOCK: write the LVB */
	uint8_t value[LOCK_VALUE_SIZE];
};

struct lock_dlm_client {
	struct lock_client client;
	atomic_uint refcount;		/* owner + wake post + armed poll */
	char *ls_name;			/* owned */
	dlm_lshandle_t ls;
	/* We hold one of the kernel's create references on the lockspace
	   (dlm_create_lockspace), which dlm_release_lockspace() drops. */
	bool ls_referenced;
	int fd;
	/* Write end of the keeper's pipe (lock_dlm_start_keeper); -1. */
	int keeper_fd;
	struct ioloop *dispatch_loop;	/* borrowed */
	struct io_request poll_req;

	pthread_mutex_t mutex;		/* protects the three fields below */
	struct lock_dlm_op *ops_head, *ops_tail;
	bool wake_posted;
	bool closed;			/* destroyed: posts only unref */

	/* Dispatch thread only. */
	struct lock_dlm_record *records;
	unsigned int record_count;
};

struct lock_dlm_lock {
	struct lock lock;
	struct lock_dlm_record *rec;	/* loop thread: current record */
};

static inline struct lock_dlm_lock *lock_dlm_lock(struct lock *lock)
{
	return CONTAINER_OF(lock, struct lock_dlm_lock, lock);
}

static inline struct lock_dlm_client *lock_dlm_client(struct lock_client *client)
{
	return CONTAINER_OF(client, struct lock_dlm_client, client);
}

/* lock_dlm_client_unref - free the client with its last reference */
static void lock_dlm_client_unref(struct lock_dlm_client *dc)
{
	if (atomic_fetch_sub(&dc->refcount, 1) != 1)
		return;
	pthread_mutex_destroy(&dc->mutex);
	free(dc->ls_name);
	free(dc);
}

/*
 * Records (dispatch thread)
 */

/* lock_dlm_record_link - track rec so shutdown can account for it */
static void lock_dlm_record_link(struct lock_dlm_record *rec)
{
	struct lock_dlm_client *dc = rec->client;

	if (rec->linked)
		return;
	rec->linked = true;
	rec->prev = NULL;
	rec->next = dc->records;
	if (dc->records != NULL)
		dc->records->prev = rec;
	dc->records = rec;
	dc->record_count++;
}

/* lock_dlm_record_detach - forget the handle (drop our reference) */
static void lock_dlm_record_detach(struct lock_dlm_record *rec)
{
	if (rec->lock == NULL)
		return;
	lock_unref(rec->lock);
	rec->lock = NULL;
}

/* lock_dlm_record_free - no DLM lock, no operation: free rec */
static void lock_dlm_record_free(struct lock_dlm_record *rec)
{
	struct lock_dlm_client *dc = rec->client;

	lock_dlm_record_detach(rec);
	if (rec->linked) {
		if (rec->prev != NULL)
			rec->prev->next = rec->next;
		else
			dc->records = rec->next;
		if (rec->next != NULL)
			rec->next->prev = rec->prev;
		dc->record_count--;
	}
	free(rec);
}

static int lock_dlm_mode(enum lock_mode mode)
{
	return mode == LOCK_MODE_EX ? LKM_EXMODE : LKM_PRMODE;
}

/* lock_dlm_fail - log a failed libdlm call on rec; returns -err */
static int lock_dlm_fail(const struct lock_dlm_record *rec, const char *what,
			 int err)
{
	log_id_error(rec->name, "dlm lock backend: %s in lockspace %s failed: "
		     "%s", what, rec->client->ls_name, strerror(err));
	lock_backend_count_error();
	return -err;
}

static void lock_dlm_ast(void *arg);
static void lock_dlm_bast(void *arg);

/* lock_dlm_unlock - give the DLM lock back; frees rec if that fails */
static void lock_dlm_unlock(struct lock_dlm_record *rec, bool store_value,
			    const uint8_t *value)
{
	uint32_t flags = 0;

	if (store_value) {
		memcpy(rec->lvb, value, DLM_LVB_LEN);
		flags |= LKF_VALBLK;
	}
	rec->op = LOCK_DLM_OP_UNLOCK;
	if (dlm_ls_unlock(rec->client->ls, rec->lksb.sb_lkid, flags,
			  &rec->lksb, rec) < 0) {
		/* Nothing will complete; the kernel drops the lock when
		   the lockspace is closed. */
		(void)lock_dlm_fail(rec, "dlm_ls_unlock", errno);
		lock_dlm_record_free(rec);
	}
}

/* lock_dlm_orphan - rec has no handle and no operation: finish it */
static void lock_dlm_orphan(struct lock_dlm_record *rec)
{
	if (rec->exists)
		lock_dlm_unlock(rec, false, NULL);
	else
		lock_dlm_record_free(rec);
}

/* lock_dlm_result - map a lock/convert AST status to our result */
static int lock_dlm_result(struct lock_dlm_record *rec)
{
	int status = rec->lksb.sb_status;

	switch (status) {
	case 0:
		return 0;
	case EAGAIN:
		return -EAGAIN;
	case ECANCEL:
		return -ECANCELED;
	case EDEADLK:
		return -EDEADLK;
	}
	log_id_error(rec->name, "dlm lock backend: %s request in lockspace %s "
		     "failed with status %d (%s)",
		     rec->op == LOCK_DLM_OP_CONVERT ? "convert" : "lock",
		     rec->client->ls_name, status,
		     status > 0 && status < 0x10000 ? strerror(status) : "?");
	return status > 0 && status < 0x10000 ? -status : -EIO;
}

/* lock_dlm_forward - hand a lock/convert result to the attached handle */
static void lock_dlm_forward(struct lock_dlm_record *rec, int result)
{
	struct lock *lock = rec->lock;

	/* Published to the handle's thread by the post below. */
	if (result == 0 && !rec->down_convert) {
		memcpy(lock->grant_value, rec->lvb, LOCK_VALUE_SIZE);
		lock->grant_value_valid =
			(rec->lksb.sb_flags & DLM_SBF_VALNOTVALID) == 0;
	}
	if (ioloop_now_msecs() - rec->start_msecs > LOCK_DLM_WAITED_MSECS)
		lock->backend_waited = true;
	lock_backend_post_complete(lock, rec->loop, result);
}

/* lock_dlm_ast - completion AST (dispatch thread, inside dlm_dispatch) */
static void lock_dlm_ast(void *arg)
{
	struct lock_dlm_record *rec = arg;
	int result;

	if (rec->op == LOCK_DLM_OP_UNLOCK) {
		if (rec->lksb.sb_status != EUNLOCK)
			(void)lock_dlm_fail(rec, "unlock",
					    rec->lksb.sb_status > 0 &&
					    rec->lksb.sb_status < 0x10000 ?
					    rec->lksb.sb_status : EIO);
		lock_dlm_record_free(rec);
		return;
	}
	if (rec->op != LOCK_DLM_OP_LOCK && rec->op != LOCK_DLM_OP_CONVERT) {
		log_id_error(rec->name, "dlm lock backend: unexpected AST "
			     "(status %d) with no request in flight",
			     rec->lksb.sb_status);
		return;
	}
	result = lock_dlm_result(rec);
	if (result == 0)
		rec->exists = true;
	rec->op = LOCK_DLM_OP_NONE;
	rec->cancel_sent = false;
	if (rec->lock != NULL)
		lock_dlm_forward(rec, result);
	else
		lock_dlm_orphan(rec);
}

/* lock_dlm_bast - blocking AST: someone wants what we hold */
static void lock_dlm_bast(void *arg)
{
	struct lock_dlm_record *rec = arg;

	if (rec->lock != NULL && rec->exists)
		lock_backend_post_blocking(rec->lock, rec->loop, LOCK_MODE_EX);
}

/*
 * Operations (dispatch thread)
 */

/* lock_dlm_op_request - LOCK or CONVERT */
static void lock_dlm_op_request(struct lock_dlm_op *op)
{
	struct lock_dlm_record *rec = op->rec;
	bool convert = op->kind == LOCK_DLM_OP_CONVERT;
	uint32_t flags = 0;

	if (convert != rec->exists || rec->op != LOCK_DLM_OP_NONE)
		log_panic("dlm lock backend: %s: %s request in state exists=%d "
			  "op=%d", rec->name, convert ? "convert" : "lock",
			  rec->exists, rec->op);
	lock_dlm_record_link(rec);
	rec->loop = op->loop;
	rec->requested = op->mode;
	rec->down_convert = convert && op->mode == LOCK_MODE_PR;
	rec->start_msecs = ioloop_now_msecs();
	rec->cancel_sent = false;
	rec->lksb.sb_lvbptr = rec->lvb;

	/* VALBLK reads the LVB going up and writes it going down. */
	if (!rec->down_convert || op->store_value)
		flags |= LKF_VALBLK;
	if (op->store_value)
		memcpy(rec->lvb, op->value, DLM_LVB_LEN);
	if (convert)
		flags |= LKF_CONVERT;
	if (op->noqueue)
		flags |= LKF_NOQUEUE;
	rec->op = op->kind;
	if (dlm_ls_lock(rec->client->ls, (uint32_t)lock_dlm_mode(op->mode),
			&rec->lksb, flags, rec->name, strlen(rec->name), 0,
			lock_dlm_ast, rec, lock_dlm_bast, NULL) < 0) {
		rec->op = LOCK_DLM_OP_NONE;
		lock_backend_post_complete(rec->lock, rec->loop,
					   lock_dlm_fail(rec, "dlm_ls_lock", errno));
	}
}

/* lock_dlm_cancel_request - ask the DLM to give up the request in flight */
static void lock_dlm_cancel_request(struct lock_dlm_record *rec)
{
	if ((rec->op != LOCK_DLM_OP_LOCK && rec->op != LOCK_DLM_OP_CONVERT) ||
	    rec->cancel_sent)
		return;
	rec->cancel_sent = true;
	/* EBUSY: already granted; the grant's AST is on its way. */
	if (dlm_ls_unlock(rec->client->ls, rec->lksb.sb_lkid, LKF_CANCEL,
			  &rec->lksb, rec) < 0 && errno != EBUSY)
		(void)lock_dlm_fail(rec, "dlm_ls_unlock(LKF_CANCEL)", errno);
}

/* lock_dlm_op_run - carry out one queued operation */
static void lock_dlm_op_run(struct lock_dlm_op *op)
{
	struct lock_dlm_record *rec = op->rec;

	switch (op->kind) {
	case LOCK_DLM_OP_LOCK:
	case LOCK_DLM_OP_CONVERT:
		lock_dlm_op_request(op);
		break;
	case LOCK_DLM_OP_CANCEL:
		lock_dlm_cancel_request(rec);
		break;
	case LOCK_DLM_OP_UNLOCK:
		lock_dlm_record_detach(rec);
		lock_dlm_unlock(rec, op->store_value, op->value);
		break;
	case LOCK_DLM_OP_DETACH:
		lock_dlm_record_detach(rec);
		if (rec->op == LOCK_DLM_OP_NONE)
			lock_dlm_orphan(rec);
		else
			lock_dlm_cancel_request(rec);
		break;
	case LOCK_DLM_OP_NONE:
		log_panic("dlm lock backend: empty operation queued");
	}
}

/* lock_dlm_ops_run - run every queued operation, in order */
static void lock_dlm_ops_run(struct lock_dlm_client *dc)
{
	struct lock_dlm_op *op, *next;

	pthread_mutex_lock(&dc->mutex);
	op = dc->ops_head;
	dc->ops_head = dc->ops_tail = NULL;
	pthread_mutex_unlock(&dc->mutex);

	for (; op != NULL; op = next) {
		next = op->next;
		lock_dlm_op_run(op);
		free(op);
	}
}

/* lock_dlm_wake_run - posted to the dispatch loop by lock_dlm_queue() */
static void lock_dlm_wake_run(void *context)
{
	struct lock_dlm_client *dc = context;
	bool closed;

	pthread_mutex_lock(&dc->mutex);
	dc->wake_posted = false;
	closed = dc->closed;
	pthread_mutex_unlock(&dc->mutex);
	if (!closed)
		lock_dlm_ops_run(dc);
	lock_dlm_client_unref(dc);
}

/* lock_dlm_queue - hand op to the dispatch thread (any thread) */
static void lock_dlm_queue(struct lock_dlm_client *dc, struct lock_dlm_op *op)
{
	bool wake;

	pthread_mutex_lock(&dc->mutex);
	if (dc->closed)
		log_panic("dlm lock backend: operation queued after "
			  "lock_client_destroy()");
	op->next = NULL;
	if (dc->ops_tail != NULL)
		dc->ops_tail->next = op;
	else
		dc->ops_head = op;
	dc->ops_tail = op;
	wake = !dc->wake_posted;
	dc->wake_posted = true;
	if (wake)
		atomic_fetch_add(&dc->refcount, 1);
	pthread_mutex_unlock(&dc->mutex);
	if (wake)
		ioloop_post(dc->dispatch_loop, lock_dlm_wake_run, dc);
}

/* lock_dlm_queue_simple - queue an operation that carries no data */
static void lock_dlm_queue_simple(struct lock_dlm_client *dc,
				  enum lock_dlm_op_kind kind,
				  struct lock_dlm_record *rec)
{
	struct lock_dlm_op *op = mem_zalloc(sizeof(*op));

	op->kind = kind;
	op->rec = rec;
	lock_dlm_queue(dc, op);
}

/*
 * Dispatch
 */

/* lock_dlm_dispatch - run the ASTs the kernel has for us */
static void lock_dlm_dispatch(struct lock_dlm_client *dc)
{
	if (dlm_dispatch(dc->fd) < 0)
		log_error("dlm lock backend: dlm_dispatch on lockspace %s "
			  "failed: %s", dc->ls_name, strerror(errno));
}

static void lock_dlm_poll_done(struct io_request *req, int result);

/* lock_dlm_poll_arm - (re)start watching the lockspace fd */
static void lock_dlm_poll_arm(struct lock_dlm_client *dc)
{
	io_request_init(&dc->poll_req, lock_dlm_poll_done, dc);
	io_poll(dc->dispatch_loop, &dc->poll_req, dc->fd, POLLIN);
}

/* lock_dlm_poll_done - the lockspace fd is readable: dispatch ASTs */
static void lock_dlm_poll_done(struct io_request *req, int result)
{
	struct lock_dlm_client *dc = req->context;

	if (dc->closed) {
		lock_dlm_client_unref(dc);
		return;
	}
	if (result < 0)
		log_error("dlm lock backend: polling lockspace %s failed: %s",
			  dc->ls_name, strerror(-result));
	else
		lock_dlm_dispatch(dc);
	lock_dlm_poll_arm(dc);
}

/* lock_dlm_start - posted once by lock_client_create(): arm the poll on
   the dispatch loop's own thread */
static void lock_dlm_start(void *context)
{
	struct lock_dlm_client *dc = context;

	if (dc->closed) {
		lock_dlm_client_unref(dc);
		return;
	}
	/* The reference now belongs to the armed poll. */
	lock_dlm_poll_arm(dc);
}

/* lock_dlm_drain - shutdown: dispatch until every record is gone */
static void lock_dlm_drain(struct lock_dlm_client *dc)
{
	uint64_t deadline = ioloop_now_msecs() + LOCK_DLM_DRAIN_MSECS;
	struct pollfd pfd = { .fd = dc->fd, .events = POLLIN };
	uint64_t now;

	while (dc->record_count > 0 && (now = ioloop_now_msecs()) < deadline) {
		int ret = poll(&pfd, 1, (int)(deadline - now));

		if (ret < 0 && errno != EINTR) {
			log_error("dlm lock backend: poll on lockspace %s: %s",
				  dc->ls_name, strerror(errno));
			break;
		}
		if (ret > 0)
			lock_dlm_dispatch(dc);
	}
	if (dc->record_count > 0)
		log_error("dlm lock backend: %u locks in lockspace %s did not "
			  "finish unlocking within %d ms; closing anyway",
			  dc->record_count, dc->ls_name, LOCK_DLM_DRAIN_MSECS);
}

/*
 * Backend vfuncs
 */

/* lock_dlm_open - open the lockspace, creating it if needed */
static int lock_dlm_open(struct lock_dlm_client *dc, char **error_r)
{
	if (access(LOCK_DLM_DEVICE_CONTROL, F_OK) < 0) {
		*error_r = mem_printf("dlm lock backend: %s: %s (the dlm kernel "
				      "module is not loaded; is dlm_controld "
				      "running?)", LOCK_DLM_DEVICE_CONTROL,
				      strerror(errno));
		return -1;
	}
	/* The kernel counts the creators of a lockspace and removes it when
	   the last one releases it; a process that merely opened it must
	   only close it, or its release would drop another process's
	   reference and tear the lockspace down under that process (with
	   dlm_controld's leave, which blocks the release in the kernel).
	   So join as a creator when we may (CAP_SYS_ADMIN: the daemon
	   before dropping privileges, root tools), and open otherwise. */
	dc->ls = dlm_create_lockspace(dc->ls_name, 0600);
	dc->ls_referenced = dc->ls != NULL;
	if (dc->ls == NULL)
		dc->ls = dlm_open_lockspace(dc->ls_name);
	if (dc->ls == NULL) {
		*error_r = mem_printf("dlm lock backend: cannot open lockspace "
				      "%s: %s (is dlm_controld running?)",
				      dc->ls_name, strerror(errno));
		return -1;
	}
	dc->fd = dlm_ls_get_fd(dc->ls);
	return 0;
}

/* lock_dlm_client_create - open the lockspace, start dispatching */
static struct lock_client *
lock_dlm_client_create(const struct lock_client_settings *set, char **error_r)
{
	struct lock_dlm_client *dc;
	int ret;

	if (set->dispatch_loop == NULL) {
		*error_r = mem_strdup("dlm lock backend: no dispatch loop given");
		return NULL;
	}
	dc = mem_zalloc(sizeof(*dc));
	dc->ls_name = mem_strdup(set->lockspace != NULL ? set->lockspace :
				 LOCK_DLM_DEFAULT_LOCKSPACE);
	dc->dispatch_loop = set->dispatch_loop;
	dc->fd = -1;
	dc->keeper_fd = -1;
	if ((ret = pthread_mutex_init(&dc->mutex, NULL)) != 0)
		log_fatal("dlm lock backend: pthread_mutex_init: %s",
			  strerror(ret));
	atomic_init(&dc->refcount, 1);
	if (lock_dlm_open(dc, error_r) < 0) {
		lock_dlm_client_unref(dc);
		return NULL;
	}
	atomic_fetch_add(&dc->refcount, 1);
	ioloop_post(dc->dispatch_loop, lock_dlm_start, dc);
	return &dc->client;
}

/* lock_dlm_client_destroy - finish every unlock, release the lockspace */
static void lock_dlm_client_destroy(struct lock_client *client)
{
	struct lock_dlm_client *dc = lock_dlm_client(client);

	/* The detaches and unlocks of the destroyed handles first. */
	lock_dlm_ops_run(dc);
	lock_dlm_drain(dc);

	pthread_mutex_lock(&dc->mutex);
	dc->closed = true;
	pthread_mutex_unlock(&dc->mutex);
	if (io_request_is_pending(&dc->poll_req))
		io_cancel(dc->dispatch_loop, &dc->poll_req);

	/* Drops our create reference (the kernel removes the lockspace
	   with the last one) and closes our handle; a handle we only
	   opened is only closed. */
	if (dc->ls_referenced) {
		if (dlm_release_lockspace(dc->ls_name, dc->ls, 0) < 0)
			log_warn("dlm lock backend: releasing lockspace %s: %s",
				 dc->ls_name, strerror(errno));
	} else if (dlm_close_lockspace(dc->ls) < 0) {
		log_warn("dlm lock backend: closing lockspace %s: %s",
			 dc->ls_name, strerror(errno));
	}
	/* A clean stop: the keeper releases as soon as we have exited (the
	   pipe stays open until then). */
	if (dc->keeper_fd >= 0 && write(dc->keeper_fd, "c", 1) != 1)
		log_warn("dlm lock backend: telling the keeper: %s",
			 strerror(errno));
	/* The fd is closed: no AST can reach what is left. */
	while (dc->records != NULL)
		lock_dlm_record_free(dc->records);
	lock_dlm_client_unref(dc);
}

static void lock_dlm_lock_init(struct lock *lock ATTR_UNUSED)
{
}

/* lock_dlm_record_new - a record for the handle's next DLM lock */
static struct lock_dlm_record *lock_dlm_record_new(struct lock *lock)
{
	struct lock_dlm_record *rec = mem_zalloc(sizeof(*rec));

	rec->client = lock_dlm_client(lock->client);
	memcpy(rec->name, lock->name, sizeof(rec->name));
	rec->lksb.sb_lvbptr = rec->lvb;
	lock_ref(lock);
	rec->lock = lock;
	return rec;
}

/* lock_dlm_acquire - queue a lock or convert request */
static int lock_dlm_acquire(struct lock *lock)
{
	struct lock_dlm_lock *dl = lock_dlm_lock(lock);
	struct lock_dlm_op *op = mem_zalloc(sizeof(*op));

	/* A record left by a refused request is reused: it holds no lock. */
	if (dl->rec == NULL)
		dl->rec = lock_dlm_record_new(lock);
	op->kind = lock->mode == LOCK_MODE_NONE ? LOCK_DLM_OP_LOCK :
		LOCK_DLM_OP_CONVERT;
	op->rec = dl->rec;
	op->loop = lock->loop;
	op->mode = lock->req_mode;
	op->noqueue = (lock->req_flags & LOCK_FLAG_NOQUEUE) != 0;
	if (lock->mode == LOCK_MODE_EX) {
		/* Going down we already know the value the grant carries. */
		op->store_value = lock->value_dirty;
		memcpy(op->value, lock->value_out, LOCK_VALUE_SIZE);
		memcpy(lock->grant_value, lock->value_dirty ? lock->value_out :
		       lock->value, LOCK_VALUE_SIZE);
		lock->grant_value_valid = lock->value_dirty || lock->value_valid;
	}
	lock_dlm_queue(lock_dlm_client(lock->client), op);
	return LOCK_BACKEND_QUEUED;
}

/* lock_dlm_cancel - queue an LKF_CANCEL of the request in flight */
static void lock_dlm_cancel(struct lock *lock)
{
	struct lock_dlm_lock *dl = lock_dlm_lock(lock);

	lock_dlm_queue_simple(lock_dlm_client(lock->client),
			      LOCK_DLM_OP_CANCEL, dl->rec);
}

/* lock_dlm_release - hand the record over with an unlock */
static void lock_dlm_release(struct lock *lock)
{
	struct lock_dlm_lock *dl = lock_dlm_lock(lock);
	struct lock_dlm_op *op = mem_zalloc(sizeof(*op));

	op->kind = LOCK_DLM_OP_UNLOCK;
	op->rec = dl->rec;
	op->store_value = lock->mode == LOCK_MODE_EX && lock->value_dirty;
	memcpy(op->value, lock->value_out, LOCK_VALUE_SIZE);
	dl->rec = NULL;
	lock_dlm_queue(lock_dlm_client(lock->client), op);
}

/* lock_dlm_destroy - detach the record; the dispatch side cleans up */
static void lock_dlm_destroy(struct lock *lock)
{
	struct lock_dlm_lock *dl = lock_dlm_lock(lock);

	if (dl->rec == NULL)
		return;
	lock_dlm_queue_simple(lock_dlm_client(lock->client),
			      LOCK_DLM_OP_DETACH, dl->rec);
	dl->rec = NULL;
}

/*
 * The lockspace keeper
 *
 * Only root (CAP_SYS_ADMIN) may drop a create reference, and the daemon
 * gives up root right after creating the lockspace; its own release at
 * stop would fail, the lockspace would stay, and dlm_controld would refuse
 * to leave - a node put in standby would be fenced when its DLM stop timed
 * out. So before the privilege drop the daemon forks a keeper that stays
 * root, holds nothing but the read end of a pipe, and waits for EOF: the
 * daemon has exited. It then removes our reference by the lockspace's
 * minor number; while locks remain the kernel says EBUSY, and the keeper
 * tries again for a while.
 *
 * A daemon that stops cleanly closes its lockspace first and then writes
 * one byte to the pipe: the keeper releases once it has exited. A daemon
 * that was killed may still have its lockspace file open after it is gone
 * (io_uring tears a dead process's ring down asynchronously, and the
 * ring's poll holds the file); releasing then hung in the lab (the
 * release in D state waiting for that file, the dead ring holding the
 * daemon's ports, a new daemon's join blocked behind the release). So
 * after a crash the keeper leaves the reference alone: the next daemon
 * joins the lockspace again, and dlm_tool leave removes it.
 */

#define LOCK_DLM_KEEPER_NAME "clustermail-dlm"	/* comm, 15 bytes at most */
#define LOCK_DLM_KEEPER_RETRY_MSECS 100
#define LOCK_DLM_KEEPER_RETRIES 600		/* one minute */

/* lock_dlm_keeper_main - the keeper process; never returns */
static void lock_dlm_keeper_main(int pipe_fd, unsigned int minor,
				 const char *ls_name)
{
	int null_fd, ret = 0;
	bool clean = false;
	char c;

	(void)prctl(PR_SET_NAME, LOCK_DLM_KEEPER_NAME);
	/* Its own session: a terminal's ^C for a foreground daemon must
	   not take the keeper along. SIGTERM to everyone (a service
	   manager's stop) is ignored: the keeper ends with the daemon. */
	(void)setsid();
	(void)signal(SIGTERM, SIG_IGN);
	(void)signal(SIGINT, SIG_IGN);
	(void)signal(SIGHUP, SIG_IGN);
	(void)signal(SIGPIPE, SIG_IGN);
	null_fd = open("/dev/null", O_RDWR);
	if (null_fd >= 0) {
		(void)dup2(null_fd, STDIN_FILENO);
		(void)dup2(null_fd, STDOUT_FILENO);
		(void)dup2(null_fd, STDERR_FILENO);
	}
	/* Nothing of the daemon's but the pipe: not its listeners, pid file
	   lock, lockspace fd (which would keep its locks alive) or loops. */
	if (dup2(pipe_fd, 3) < 0)
		_exit(1);
	(void)close_range(4, ~0U, 0);
	openlog("clustermaild", LOG_PID, LOG_MAIL);

	for (;;) {
		ssize_t n = read(3, &c, 1);

		if (n > 0)
			clean = true;
		else if (n == 0 || errno != EINTR)
			break;	/* EOF: every copy of the write end is closed */
	}
	if (!clean) {
		syslog(LOG_WARNING, "dlm lock backend: the daemon died; its "
		       "reference on lockspace %s stays (the next daemon on "
		       "this node joins it; dlm_tool leave %s removes it when "
		       "none runs)", ls_name, ls_name);
		_exit(1);
	}
	for (int i = 0; i < LOCK_DLM_KEEPER_RETRIES; i++) {
		ret = lock_dlm_device_remove(minor);
		if (ret != -EBUSY)
			break;
		usleep(LOCK_DLM_KEEPER_RETRY_MSECS * 1000);
	}
	if (ret == 0 || ret == -ENOENT) {
		syslog(LOG_INFO, "dlm lock backend: released the daemon's "
		       "reference on lockspace %s", ls_name);
		_exit(0);
	}
	syslog(LOG_WARNING, "dlm lock backend: cannot release lockspace %s: "
	       "%s (dlm_tool leave %s removes it)", ls_name, strerror(-ret),
	       ls_name);
	_exit(1);
}

/* lock_dlm_start_keeper - fork the keeper (see above), if we hold a
   create reference; from then on the keeper releases it */
static int lock_dlm_start_keeper(struct lock_client *client, char **error_r)
{
	struct lock_dlm_client *dc = lock_dlm_client(client);
	struct stat st;
	int fds[2], write_fd;
	pid_t pid;

	if (!dc->ls_referenced || dc->keeper_fd >= 0)
		return 0;
	if (fstat(dc->fd, &st) < 0) {
		*error_r = mem_printf("dlm lock backend: fstat lockspace %s: %s",
				      dc->ls_name, strerror(errno));
		return -1;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		*error_r = mem_printf("dlm lock backend: pipe: %s",
				      strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		*error_r = mem_printf("dlm lock backend: fork: %s",
				      strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[1]);
		lock_dlm_keeper_main(fds[0], minor(st.st_rdev), dc->ls_name);
	}
	close(fds[0]);
	/* Above every fd the lockspace uses, out of the way of dup2()s. */
	write_fd = fcntl(fds[1], F_DUPFD_CLOEXEC, 64);
	if (write_fd >= 0) {
		close(fds[1]);
		fds[1] = write_fd;
	}
	dc->keeper_fd = fds[1];
	dc->ls_referenced = false;
	log_info("dlm lock backend: lockspace %s is released by process %d "
		 "when this one exits", dc->ls_name, (int)pid);
	return 0;
}

const struct lock_backend_vfuncs lock_dlm_vfuncs = {
	.name = "dlm",
	.blocking_callbacks = true,
	.lock_size = sizeof(struct lock_dlm_lock),
	.client_create = lock_dlm_client_create,
	.client_destroy = lock_dlm_client_destroy,
	.start_keeper = lock_dlm_start_keeper,
	.lock_init = lock_dlm_lock_init,
	.acquire = lock_dlm_acquire,
	.cancel = lock_dlm_cancel,
	.release = lock_dlm_release,
	.destroy = lock_dlm_destroy,
};
