/*
 * lock.c - the generic cluster lock layer: backend selection, handle
 * lifetime, exactly-once completion on the requesting loop, timeouts,
 * stats, resource names and (debug builds) lock-order checking.
 *
 * Races this file exists to close
 * -------------------------------
 * 1. A result must reach the caller exactly once, on the loop it passed,
 *    and never from inside lock_acquire() (the caller may not have
 *    finished setting up its own state yet). A backend that knows the
 *    answer at once (uncontended local or fcntl lock, NOQUEUE refusal)
 *    returns it from acquire(); we record it ("resolve") and deliver it
 *    through ioloop_post(). A backend that has to wait completes later
 *    from a loop callback, and we deliver directly.
 *
 * 2. A result and a cancel/timeout can cross. The timeout does not decide
 *    the outcome: it only asks the backend to give up, and whatever the
 *    backend then reports wins (-ECANCELED becomes -ETIMEDOUT if the
 *    timer asked; a grant that beat the cancel is delivered as 0 and the
 *    caller holds the lock). This is the DLM's own model (cancel is a
 *    request, not a verdict), and doing the same for every backend keeps
 *    the mode we report equal to the mode the backend really granted.
 *
 * 3. lock_destroy() may run while completions, blocking callbacks and
 *    timers are in flight, some of them posted by other threads. Every
 *    one of those holds a reference on the handle; the handle is freed
 *    when the last drops it, and each of them checks lock_is_destroyed()
 *    first and then does nothing. So "callbacks never run after
 *    lock_destroy()" holds without the destroyer having to wait.
 *
 *    The cost: a destroyed handle may leave a cancelled io_timeout (or a
 *    backend retry timer) on its loop for one more iteration. Owners
 *    must run a loop until ioloop_pending_count() is zero before
 *    destroying it - the same rule as for every other io request.
 *
 * 4. Timeout timers are allocated per request rather than embedded in
 *    the handle: a cancelled io_timeout stays pending until its CQE
 *    arrives, and a caller that gets -ETIMEDOUT may acquire again at
 *    once, before the old timer's completion was reaped.
 *
 * Lock order (DESIGN invariant 7) is checked in --enable-debug-checks
 * builds: every granted handle is recorded with the thread it was granted
 * on and its owner (lock_set_owner(); by default the coroutine that asked
 * for it, since sessions that share a loop thread each run in their own,
 * or NULL outside coroutines); acquiring a handle of a lower class than
 * one the same thread and owner holds panics. The
 * record is one mutex-protected list rather than thread-local arrays so
 * that a handle released on another thread than it was granted on is
 * removed correctly. Conversions are exempt: they acquire nothing new.
 *
 * Lock caching (lock_release_cached()): with a backend that has blocking
 * callbacks, a caller that lets go of a lock may leave it held in the
 * backend. The handle then reads as not held (lock_get_mode() is NONE,
 * it leaves the lock-order record), and the next lock_acquire() in the
 * same mode is granted without asking the backend - no DLM round trip,
 * and the value block is still the one read at the grant, because nobody
 * else could change it meanwhile. When another handle wants the resource
 * (the blocking callback), a cached lock is given up: at once if it was
 * granted at least cache_hold_msecs ago, otherwise when that time is up
 * (the minimum hold keeps two nodes that take turns on one mailbox from
 * bouncing the lock on every command). A lock still in use when someone
 * wants it is released, not cached, by its next lock_release_cached().
 * An acquire in the other mode releases the cached lock first and asks
 * anew: converting a shared cached lock up could meet another node's
 * conversion and end in EDEADLK.
 */
#include "lib/lib.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "lock-private.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <unistd.h>

#define LOCK_DEFAULT_TIMEOUT_MSECS 30000

struct lock_timer {
	struct io_request req;
	struct ioloop *loop;
	struct lock *lock;		/* NULL once detached; holds a reference */
};

struct lock_cache_timer {
	struct io_request req;
	struct lock *lock;		/* NULL once detached; holds a reference */
};

struct lock_posted_completion {
	struct lock *lock;		/* holds a reference */
	int result;
};

struct lock_posted_blocking {
	struct lock *lock;		/* holds a reference */
	enum lock_mode wanted;
};

static atomic_uint_fast64_t lock_stat_grants;
static atomic_uint_fast64_t lock_stat_waits;
static atomic_uint_fast64_t lock_stat_wait_msecs;
static atomic_uint_fast64_t lock_stat_wait_buckets[LOCK_WAIT_BUCKETS];
static atomic_uint_fast64_t lock_stat_busy;
static atomic_uint_fast64_t lock_stat_timeouts;
static atomic_uint_fast64_t lock_stat_blocking;
static atomic_uint_fast64_t lock_stat_errors;
static atomic_uint_fast64_t lock_stat_cache_hits;
static atomic_uint_fast64_t lock_stat_cache_drops;

static const uint64_t lock_wait_bucket_limits[LOCK_WAIT_BUCKETS] = {
	1, 5, 25, 100, 500, 2000, 10000, UINT64_MAX
};

static void lock_order_check(struct lock *lock);
static void lock_cache_timer_detach(struct lock *lock);
static void lock_cache_give_up(struct lock *lock);
static void lock_order_add(struct lock *lock);
static void lock_order_remove(struct lock *lock);

/*
 * Clients
 */

/* lock_backend_find - the vfuncs of a configured backend, or NULL */
static const struct lock_backend_vfuncs *
lock_backend_find(enum settings_lock_backend backend, char **error_r)
{
	switch (backend) {
	case SETTINGS_LOCK_LOCAL:
		return &lock_local_vfuncs;
	case SETTINGS_LOCK_FCNTL:
		return &lock_fcntl_vfuncs;
	case SETTINGS_LOCK_DLM:
#ifdef HAVE_DLM
		return &lock_dlm_vfuncs;
#else
		*error_r = mem_strdup("dlm lock backend: not built into this "
				      "binary (configure --with-dlm; needs "
				      "libdlm-dev)");
		return NULL;
#endif
	}
	*error_r = mem_printf("lock backend %d: unknown", (int)backend);
	return NULL;
}

struct lock_client *lock_client_create(const struct lock_client_settings *set,
				       char **error_r)
{
	const struct lock_backend_vfuncs *v;
	struct lock_client *client;

	*error_r = NULL;
	if ((v = lock_backend_find(set->backend, error_r)) == NULL)
		return NULL;
	if ((client = v->client_create(set, error_r)) == NULL)
		return NULL;
	client->v = v;
	client->default_timeout_msecs = set->default_timeout_msecs != 0 ?
		set->default_timeout_msecs : LOCK_DEFAULT_TIMEOUT_MSECS;
	atomic_init(&client->handle_count, 0);
	return client;
}

void lock_client_destroy(struct lock_client **_client)
{
	struct lock_client *client = *_client;
	unsigned int handles;

	if (client == NULL)
		return;
	*_client = NULL;
	handles = atomic_load(&client->handle_count);
	if (handles != 0)
		log_panic("lock_client_destroy(%s): %u lock handles were not "
			  "destroyed", client->v->name, handles);
	client->v->client_destroy(client);
}

int lock_client_start_keeper(struct lock_client *client, char **error_r)
{
	*error_r = NULL;
	if (client->v->start_keeper == NULL)
		return 0;
	return client->v->start_keeper(client, error_r);
}

const char *lock_client_backend_name(const struct lock_client *client)
{
	return client->v->name;
}

/*
 * Handles
 */

/* lock_name_check - panic unless name is a valid resource name */
static void lock_name_check(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > LOCK_NAME_MAX)
		log_panic("lock_create: resource name of %zu bytes "
			  "(1..%d allowed): %.80s", len, LOCK_NAME_MAX, name);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 0x20 || c > 0x7e)
			log_panic("lock_create: resource name has byte 0x%02x "
				  "at %zu (printable ASCII only)", c, i);
	}
}

struct lock *lock_create(struct lock_client *client, const char *name,
			 enum lock_class lock_class)
{
	struct lock *lock;

	lock_name_check(name);
	if (lock_class < LOCK_CLASS_USER || lock_class > LOCK_CLASS_OTHER)
		log_panic("lock_create(%s): invalid lock class %d", name,
			  (int)lock_class);
	lock = mem_zalloc(client->v->lock_size);
	lock->client = client;
	atomic_init(&lock->refcount, 1);
	atomic_init(&lock->destroyed, false);
	memcpy(lock->name, name, strlen(name) + 1);
	lock->lock_class = lock_class;
	lock->mode = LOCK_MODE_NONE;
	atomic_fetch_add(&client->handle_count, 1);
	client->v->lock_init(lock);
	return lock;
}

void lock_ref(struct lock *lock)
{
	atomic_fetch_add(&lock->refcount, 1);
}

void lock_unref(struct lock *lock)
{
	unsigned int old = atomic_fetch_sub(&lock->refcount, 1);

	if (old == 0)
		log_panic("lock %s: reference count underflow", lock->name);
	if (old > 1)
		return;
	/* Only lock_destroy() drops the caller's reference. */
	if (!atomic_load(&lock->destroyed))
		log_panic("lock %s: freed without lock_destroy()", lock->name);
	free(lock);
}

bool lock_is_destroyed(const struct lock *lock)
{
	return atomic_load(&lock->destroyed);
}

/* lock_cache_timer_detach - stop the cached lock's hold timer, if any */
static void lock_cache_timer_detach(struct lock *lock)
{
	struct lock_cache_timer *timer = lock->cache_timer;

	if (timer == NULL)
		return;
	lock->cache_timer = NULL;
	timer->lock = NULL;
	/* The timer frees itself when its cancelled completion arrives. */
	io_cancel(lock->loop, &timer->req);
	lock_unref(lock);
}

/* lock_timer_detach - stop the request's timeout timer, if any */
static void lock_timer_detach(struct lock *lock)
{
	struct lock_timer *timer = lock->timer;

	if (timer == NULL)
		return;
	lock->timer = NULL;
	timer->lock = NULL;
	/* The timer frees itself when its cancelled completion arrives. */
	io_cancel(timer->loop, &timer->req);
	lock_unref(lock);
}

void lock_destroy(struct lock **_lock)
{
	struct lock *lock = *_lock;

	if (lock == NULL)
		return;
	*_lock = NULL;
	if (atomic_load(&lock->destroyed))
		log_panic("lock_destroy(%s): destroyed twice", lock->name);

	lock->in_call = true;
	/* A resolved request is settled in the backend; an unresolved one
	   is still in flight there and backend destroy() drops it. */
	if (lock->mode != LOCK_MODE_NONE && (!lock->pending || lock->resolved))
		lock->client->v->release(lock);
	atomic_store(&lock->destroyed, true);
	lock_timer_detach(lock);
	lock_cache_timer_detach(lock);
	lock->cached = false;
	lock_order_remove(lock);
	lock->client->v->destroy(lock);
	atomic_fetch_sub(&lock->client->handle_count, 1);
	lock_unref(lock);
}

/*
 * Results
 */

/* lock_stats_count - account one resolved request */
static void lock_stats_count(const struct lock *lock, int result)
{
	uint64_t elapsed;
	unsigned int i;

	switch (result) {
	case 0:
		elapsed = ioloop_now_msecs() - lock->req_start_msecs;
		atomic_fetch_add(&lock_stat_grants, 1);
		if (lock->backend_waited)
			atomic_fetch_add(&lock_stat_waits, 1);
		atomic_fetch_add(&lock_stat_wait_msecs, elapsed);
		i = 0;
		while (elapsed > lock_wait_bucket_limits[i])
			i++;
		atomic_fetch_add(&lock_stat_wait_buckets[i], 1);
		break;
	case -EAGAIN:
		atomic_fetch_add(&lock_stat_busy, 1);
		break;
	case -ETIMEDOUT:
		atomic_fetch_add(&lock_stat_timeouts, 1);
		break;
	case -ECANCELED:
	case -EDEADLK:
		/* Outcomes the caller asked for or must handle; not faults. */
		break;
	default:
		atomic_fetch_add(&lock_stat_errors, 1);
		break;
	}
}

/* lock_granted - the handle now holds req_mode */
static void lock_granted(struct lock *lock)
{
	if (lock->req_mode != lock->mode) {
		memcpy(lock->value, lock->grant_value, LOCK_VALUE_SIZE);
		lock->value_valid = lock->grant_value_valid;
		lock->value_dirty = false;
		if (lock->mode == LOCK_MODE_NONE)
			lock->wanted = false;
		lock->granted_msecs = ioloop_now_msecs();
	}
	lock->mode = lock->req_mode;
	lock_order_add(lock);
}

/* lock_resolve - record the final result of the pending request */
static void lock_resolve(struct lock *lock, int result)
{
	if (result == -ECANCELED && lock->abort_reason != 0)
		result = lock->abort_reason;
	if (result > 0)
		log_panic("lock %s: backend returned result %d", lock->name,
			  result);
	lock->resolved = true;
	lock->result = result;
	lock_timer_detach(lock);
	if (result == 0)
		lock_granted(lock);
	lock_stats_count(lock, result);
}

/* lock_deliver - run the pending request's callback (once) */
static void lock_deliver(struct lock *lock)
{
	lock_callback_t *callback = lock->callback;
	void *context = lock->context;

	lock->pending = false;
	lock->resolved = false;
	lock->callback = NULL;
	lock->context = NULL;
	callback(lock, lock->result, context);
}

/* lock_delivery_run - loop thread: a posted delivery */
static void lock_delivery_run(void *context)
{
	struct lock *lock = context;

	if (!lock_is_destroyed(lock))
		lock_deliver(lock);
	lock_unref(lock);
}

/* lock_deliver_later - deliver through the loop, not from this call */
static void lock_deliver_later(struct lock *lock)
{
	lock_ref(lock);
	ioloop_post(lock->loop, lock_delivery_run, lock);
}

void lock_backend_complete(struct lock *lock, int result)
{
	if (lock_is_destroyed(lock))
		log_panic("lock %s: backend completed a destroyed handle",
			  lock->name);
	if (!lock->pending || lock->resolved)
		log_panic("lock %s: backend completion (result %d) without a "
			  "pending request", lock->name, result);
	lock_resolve(lock, result);
	if (lock->in_call)
		lock_deliver_later(lock);
	else
		lock_deliver(lock);
}

/* lock_posted_completion_run - loop thread: a backend's posted result */
static void lock_posted_completion_run(void *context)
{
	struct lock_posted_completion *posted = context;

	if (!lock_is_destroyed(posted->lock))
		lock_backend_complete(posted->lock, posted->result);
	lock_unref(posted->lock);
	free(posted);
}

void lock_backend_post_complete(struct lock *lock, struct ioloop *loop,
				int result)
{
	struct lock_posted_completion *posted = mem_zalloc(sizeof(*posted));

	lock_ref(lock);
	posted->lock = lock;
	posted->result = result;
	ioloop_post(loop, lock_posted_completion_run, posted);
}

/* lock_release_now - drop the backend's lock (held or cached) */
static void lock_release_now(struct lock *lock)
{
	lock_cache_timer_detach(lock);
	lock->cached = false;
	if (lock->mode == LOCK_MODE_NONE)
		return;
	lock->in_call = true;
	lock->client->v->release(lock);
	lock->in_call = false;
	lock->mode = LOCK_MODE_NONE;
	lock->value_dirty = false;
	lock_order_remove(lock);
}

/* lock_cache_timer_fired - a cached lock's minimum hold is over */
static void lock_cache_timer_fired(struct io_request *req, int result)
{
	struct lock_cache_timer *timer = req->context;
	struct lock *lock = timer->lock;

	free(timer);
	if (lock == NULL)
		return;		/* detached: the reference went with it */
	lock->cache_timer = NULL;
	if (result != -ETIME)
		log_id_error(lock->name, "lock hold timer failed: %s; "
			     "releasing now", strerror(-result));
	if (!lock_is_destroyed(lock) && lock->cached) {
		atomic_fetch_add(&lock_stat_cache_drops, 1);
		lock_release_now(lock);
	}
	lock_unref(lock);
}

/* lock_cache_give_up - someone wants our cached lock: release it now, or
   once it has been held for its minimum time */
static void lock_cache_give_up(struct lock *lock)
{
	uint64_t held = ioloop_now_msecs() - lock->granted_msecs;
	struct lock_cache_timer *timer;

	if (held >= lock->cache_hold_msecs) {
		atomic_fetch_add(&lock_stat_cache_drops, 1);
		lock_release_now(lock);
		return;
	}
	if (lock->cache_timer != NULL)
		return;
	timer = mem_zalloc(sizeof(*timer));
	io_request_init(&timer->req, lock_cache_timer_fired, timer);
	timer->lock = lock;
	lock_ref(lock);
	lock->cache_timer = timer;
	io_timeout(lock->loop, &timer->req, lock->cache_hold_msecs - held);
}

/* lock_posted_blocking_run - loop thread: tell the holder */
static void lock_posted_blocking_run(void *context)
{
	struct lock_posted_blocking *posted = context;
	struct lock *lock = posted->lock;

	if (!lock_is_destroyed(lock) && lock->mode != LOCK_MODE_NONE) {
		lock->wanted = true;
		if (lock->cached) {
			atomic_fetch_add(&lock_stat_blocking, 1);
			lock_cache_give_up(lock);
		} else if (lock->blocking_callback != NULL) {
			atomic_fetch_add(&lock_stat_blocking, 1);
			lock->blocking_callback(lock, posted->wanted,
						lock->blocking_context);
		}
	}
	lock_unref(lock);
	free(posted);
}

void lock_backend_post_blocking(struct lock *lock, struct ioloop *loop,
				enum lock_mode wanted)
{
	struct lock_posted_blocking *posted = mem_zalloc(sizeof(*posted));

	lock_ref(lock);
	posted->lock = lock;
	posted->wanted = wanted;
	ioloop_post(loop, lock_posted_blocking_run, posted);
}

void lock_backend_count_error(void)
{
	atomic_fetch_add(&lock_stat_errors, 1);
}

/*
 * Requests
 */

/* lock_timer_fired - the request's timeout: ask the backend to give up */
static void lock_timer_fired(struct io_request *req, int result)
{
	struct lock_timer *timer = req->context;
	struct lock *lock = timer->lock;

	free(timer);
	if (lock == NULL)
		return;		/* detached: the reference went with it */
	lock->timer = NULL;
	if (result != -ETIME)
		log_id_error(lock->name, "lock timeout timer failed: %s; "
			     "treating the request as timed out",
			     strerror(-result));
	if (!lock_is_destroyed(lock) && lock->pending && !lock->resolved &&
	    lock->abort_reason == 0) {
		lock->abort_reason = -ETIMEDOUT;
		lock->client->v->cancel(lock);
	}
	lock_unref(lock);
}

/* lock_timer_start - bound the pending request by msecs */
static void lock_timer_start(struct lock *lock, uint64_t msecs)
{
	struct lock_timer *timer = mem_zalloc(sizeof(*timer));

	io_request_init(&timer->req, lock_timer_fired, timer);
	timer->loop = lock->loop;
	timer->lock = lock;
	lock_ref(lock);
	lock->timer = timer;
	io_timeout(lock->loop, &timer->req, msecs);
}

void lock_acquire(struct lock *lock, struct ioloop *loop, enum lock_mode mode,
		  unsigned int flags, uint64_t timeout_msecs,
		  lock_callback_t *callback, void *context)
{
	int ret;

	if (lock->pending)
		log_panic("lock_acquire(%s): a request is already pending",
			  lock->name);
	if ((mode != LOCK_MODE_PR && mode != LOCK_MODE_EX) || callback == NULL)
		log_panic("lock_acquire(%s): invalid mode %d or no callback",
			  lock->name, (int)mode);
	if (lock->cached) {
		/* Take the cached lock back, unless it is in the other mode
		   or it is over its time and someone waits for it. */
		if (mode != lock->mode || (lock->wanted &&
		    ioloop_now_msecs() - lock->granted_msecs >=
		    lock->cache_hold_msecs)) {
			atomic_fetch_add(&lock_stat_cache_drops, 1);
			lock_release_now(lock);
		} else {
			lock_cache_timer_detach(lock);
			lock->cached = false;
			/* What a new grant would read: the value we set. */
			if (lock->value_dirty) {
				memcpy(lock->value, lock->value_out,
				       LOCK_VALUE_SIZE);
				lock->value_valid = true;
			}
			atomic_fetch_add(&lock_stat_cache_hits, 1);
			lock_order_check(lock);
		}
	}
	if (lock->mode == LOCK_MODE_NONE)
		lock_order_check(lock);

	lock->loop = loop;
	lock->pending = true;
	lock->resolved = false;
	lock->abort_reason = 0;
	lock->req_mode = mode;
	lock->req_flags = flags;
	lock->req_start_msecs = ioloop_now_msecs();
	lock->callback = callback;
	lock->context = context;
	lock->backend_waited = false;

	lock->in_call = true;
	ret = mode == lock->mode ? 0 : lock->client->v->acquire(lock);
	if (ret == LOCK_BACKEND_QUEUED) {
		lock_timer_start(lock, timeout_msecs != 0 ? timeout_msecs :
				 lock->client->default_timeout_msecs);
	} else {
		lock_resolve(lock, ret);
		lock_deliver_later(lock);
	}
	lock->in_call = false;
}

void lock_cancel(struct lock *lock)
{
	if (!lock->pending || lock->resolved || lock->abort_reason != 0)
		return;
	lock->abort_reason = -ECANCELED;
	lock->in_call = true;
	lock->client->v->cancel(lock);
	lock->in_call = false;
}

void lock_release(struct lock *lock)
{
	if (lock->pending)
		log_panic("lock_release(%s): an acquire is pending "
			  "(lock_cancel() it first)", lock->name);
	lock_release_now(lock);
}

bool lock_client_can_cache(const struct lock_client *client)
{
	return client->v->blocking_callbacks;
}

void lock_release_cached(struct lock *lock, uint64_t min_hold_msecs)
{
	if (lock->pending)
		log_panic("lock_release_cached(%s): an acquire is pending "
			  "(lock_cancel() it first)", lock->name);
	if (lock->cached || lock->mode == LOCK_MODE_NONE)
		return;
	if (!lock->client->v->blocking_callbacks || lock->wanted) {
		lock_release_now(lock);
		return;
	}
	/* A value set by an EX holder is stored by the backend's release,
	   whenever that comes; until then nobody else can read it. */
	lock->cached = true;
	lock->cache_hold_msecs = min_hold_msecs;
	lock_order_remove(lock);
}

bool lock_is_cached(const struct lock *lock)
{
	return lock->cached;
}

/*
 * Accessors
 */

enum lock_mode lock_get_mode(const struct lock *lock)
{
	return lock->cached ? LOCK_MODE_NONE : lock->mode;
}

const char *lock_get_name(const struct lock *lock)
{
	return lock->name;
}

bool lock_is_pending(const struct lock *lock)
{
	return lock->pending;
}

const uint8_t *lock_value(const struct lock *lock)
{
	return lock->value;
}

bool lock_value_is_valid(const struct lock *lock)
{
	return lock->value_valid;
}

void lock_value_set(struct lock *lock, const uint8_t value[LOCK_VALUE_SIZE])
{
	if (lock->mode != LOCK_MODE_EX)
		log_panic("lock_value_set(%s): the handle holds %s, not EX",
			  lock->name, lock_mode_name(lock->mode));
	memcpy(lock->value_out, value, LOCK_VALUE_SIZE);
	lock->value_dirty = true;
}

void lock_set_blocking_callback(struct lock *lock,
				lock_blocking_callback_t *callback,
				void *context)
{
	lock->blocking_callback = callback;
	lock->blocking_context = context;
}

void lock_set_owner(struct lock *lock, const void *owner)
{
	if (lock->cached && !lock->pending)
		lock_release_now(lock);
	if (lock->mode != LOCK_MODE_NONE || lock->pending)
		log_panic("lock_set_owner(%s): the handle is held or pending",
			  lock->name);
	lock->owner = owner;
}

/*
 * Stats
 */

void lock_get_stats(struct lock_stats *stats_r)
{
	stats_r->grants = atomic_load(&lock_stat_grants);
	stats_r->waits = atomic_load(&lock_stat_waits);
	stats_r->wait_msecs_total = atomic_load(&lock_stat_wait_msecs);
	for (unsigned int i = 0; i < LOCK_WAIT_BUCKETS; i++)
		stats_r->wait_buckets[i] = atomic_load(&lock_stat_wait_buckets[i]);
	stats_r->busy = atomic_load(&lock_stat_busy);
	stats_r->timeouts = atomic_load(&lock_stat_timeouts);
	stats_r->blocking_callbacks = atomic_load(&lock_stat_blocking);
	stats_r->cache_hits = atomic_load(&lock_stat_cache_hits);
	stats_r->cache_drops = atomic_load(&lock_stat_cache_drops);
	stats_r->errors = atomic_load(&lock_stat_errors);
}

uint64_t lock_wait_bucket_limit(unsigned int i)
{
	return i < LOCK_WAIT_BUCKETS ? lock_wait_bucket_limits[i] : UINT64_MAX;
}

/*
 * Resource names
 *
 * A readable name ("u:alice", "m:alice/INBOX", "q:1a2b3c") makes lock
 * files and dlm_tool output easy to follow. Anything that would not fit,
 * or contains bytes that are not printable non-space ASCII, or starts
 * with the hash marker '~', becomes "<prefix>:~<base64url(SHA-256)>"
 * (46 bytes; the whole 256-bit digest fits, so nothing is truncated).
 * The marker keeps the two forms from ever colliding; the digest covers
 * every input part with a NUL after each, so ("a", "b/c") and ("a/b",
 * "c") differ.
 */

#define LOCK_NAME_HASH_MARKER '~'
#define LOCK_SHA256_LEN 32

/* lock_name_part_is_readable - may part appear in a name unhashed? */
static bool lock_name_part_is_readable(const char *part, bool allow_slash)
{
	for (const char *p = part; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7e || (*p == '/' && !allow_slash))
			return false;
	}
	return part[0] != LOCK_NAME_HASH_MARKER;
}

/* lock_base64url - unpadded base64url of data; out has 4*len/3+2 bytes */
static void lock_base64url(const uint8_t *data, size_t len, char *out)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	uint32_t bits = 0;
	unsigned int nbits = 0;

	for (size_t i = 0; i < len; i++) {
		bits = (bits << 8) | data[i];
		nbits += 8;
		while (nbits >= 6) {
			nbits -= 6;
			*out++ = alphabet[(bits >> nbits) & 0x3f];
		}
	}
	if (nbits > 0)
		*out++ = alphabet[(bits << (6 - nbits)) & 0x3f];
	*out = '\0';
}

/* lock_sha256_parts - SHA-256 of each part followed by a NUL */
static void lock_sha256_parts(const char *const *parts, size_t count,
			      uint8_t digest_r[LOCK_SHA256_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int len = 0;
	bool ok = ctx != NULL &&
		EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;

	for (size_t i = 0; ok && i < count; i++)
		ok = EVP_DigestUpdate(ctx, parts[i], strlen(parts[i]) + 1) == 1;
	if (ok)
		ok = EVP_DigestFinal_ex(ctx, digest_r, &len) == 1 &&
			len == LOCK_SHA256_LEN;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		log_fatal("lock names: SHA-256 from OpenSSL failed: %s",
			  ERR_error_string(ERR_get_error(), NULL));
}

/* lock_name_hashed - "<prefix>:~<base64url digest of parts>" */
static void lock_name_hashed(char prefix, const char *const *parts,
			     size_t count, char name_r[LOCK_NAME_MAX + 1])
{
	uint8_t digest[LOCK_SHA256_LEN];
	char type[2] = { prefix, '\0' };
	const char *all[3];

	/* The type is hashed too, so equal inputs of different kinds still
	   get different names even if someone strips the prefix. */
	all[0] = type;
	for (size_t i = 0; i < count; i++)
		all[i + 1] = parts[i];
	lock_sha256_parts(all, count + 1, digest);
	name_r[0] = prefix;
	name_r[1] = ':';
	name_r[2] = LOCK_NAME_HASH_MARKER;
	lock_base64url(digest, sizeof(digest), name_r + 3);
}

/* lock_name_single - names built from one input ("u:", "q:") */
static void lock_name_single(char prefix, const char *input,
			     char name_r[LOCK_NAME_MAX + 1])
{
	if (strlen(input) + 2 <= LOCK_NAME_MAX &&
	    lock_name_part_is_readable(input, true)) {
		name_r[0] = prefix;
		name_r[1] = ':';
		memcpy(name_r + 2, input, strlen(input) + 1);
		return;
	}
	lock_name_hashed(prefix, &input, 1, name_r);
}

void lock_name_user(const char *user, char name_r[LOCK_NAME_MAX + 1])
{
	lock_name_single('u', user, name_r);
}

void lock_name_queue(const char *queue_id, char name_r[LOCK_NAME_MAX + 1])
{
	lock_name_single('q', queue_id, name_r);
}

void lock_name_mailbox(const char *user, const char *mailbox,
		       char name_r[LOCK_NAME_MAX + 1])
{
	const char *parts[2] = { user, mailbox };
	size_t user_len = strlen(user), mailbox_len = strlen(mailbox);

	/* The first '/' separates user from mailbox, so the user part may
	   not contain one; the mailbox part may (hierarchy separators). */
	if (user_len + mailbox_len + 3 <= LOCK_NAME_MAX &&
	    lock_name_part_is_readable(user, false) &&
	    (mailbox_len == 0 || lock_name_part_is_readable(mailbox, true))) {
		name_r[0] = 'm';
		name_r[1] = ':';
		memcpy(name_r + 2, user, user_len);
		name_r[2 + user_len] = '/';
		memcpy(name_r + 3 + user_len, mailbox, mailbox_len + 1);
		return;
	}
	lock_name_hashed('m', parts, 2, name_r);
}

/*
 * Lock order (debug builds)
 */

#ifdef DEBUG_CHECKS
static pthread_mutex_t lock_order_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct lock *lock_order_head;	/* every recorded (held) handle */

/* lock_class_name - for panic messages */
static const char *lock_class_name(enum lock_class lock_class)
{
	switch (lock_class) {
	case LOCK_CLASS_USER: return "user";
	case LOCK_CLASS_MAILBOX: return "mailbox";
	case LOCK_CLASS_QUEUE: return "queue";
	case LOCK_CLASS_OTHER: return "other";
	}
	return "invalid";
}

/* lock_order_check - panic if this thread and owner hold a higher class
   (called by lock_acquire(), in the asking coroutine) */
static void lock_order_check(struct lock *lock)
{
	unsigned long me = (unsigned long)gettid();
	char held_name[LOCK_NAME_MAX + 1];
	enum lock_class held_class = 0;

	lock->order_owner = lock->owner != NULL ? lock->owner :
		(const void *)coro_current();
	pthread_mutex_lock(&lock_order_mutex);
	for (struct lock *h = lock_order_head; h != NULL; h = h->order_next) {
		if (h != lock && h->order_thread == me &&
		    h->order_owner == lock->order_owner &&
		    h->lock_class > lock->lock_class) {
			memcpy(held_name, h->name, sizeof(held_name));
			held_class = h->lock_class;
			break;
		}
	}
	pthread_mutex_unlock(&lock_order_mutex);
	if (held_class != 0)
		log_panic("lock order violation: acquiring %s (class %s) while "
			  "holding %s (class %s) on the same thread and owner; "
			  "the order is user -> mailbox -> queue item -> other",
			  lock->name, lock_class_name(lock->lock_class),
			  held_name, lock_class_name(held_class));
}

/* lock_order_add - record a granted handle */
static void lock_order_add(struct lock *lock)
{
	if (lock->order_recorded)
		return;
	pthread_mutex_lock(&lock_order_mutex);
	lock->order_recorded = true;
	lock->order_thread = (unsigned long)gettid();
	lock->order_prev = NULL;
	lock->order_next = lock_order_head;
	if (lock_order_head != NULL)
		lock_order_head->order_prev = lock;
	lock_order_head = lock;
	pthread_mutex_unlock(&lock_order_mutex);
}

/* lock_order_remove - forget a handle that is no longer held */
static void lock_order_remove(struct lock *lock)
{
	if (!lock->order_recorded)
		return;
	pthread_mutex_lock(&lock_order_mutex);
	if (lock->order_prev != NULL)
		lock->order_prev->order_next = lock->order_next;
	else
		lock_order_head = lock->order_next;
	if (lock->order_next != NULL)
		lock->order_next->order_prev = lock->order_prev;
	lock->order_recorded = false;
	pthread_mutex_unlock(&lock_order_mutex);
}
#else
static void lock_order_check(struct lock *lock ATTR_UNUSED) { }
static void lock_order_add(struct lock *lock ATTR_UNUSED) { }
static void lock_order_remove(struct lock *lock ATTR_UNUSED) { }
#endif
