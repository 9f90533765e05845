#ifndef CM_LOCK_H
#define CM_LOCK_H
/*
 * lock - named cluster-wide locks with a value block.
 *
 * One API over three backends, chosen by lock_backend in the config:
 *   dlm    the Linux distributed lock manager through libdlm (lockspace
 *          "clustermail"); the real thing on GFS2/OCFS2 clusters.
 *   fcntl  open-file-description (OFD) locks on one lock file per resource
 *          under SPOOL/.locks/; cluster-wide on NFSv4 and on GFS2/OCFS2
 *          (POSIX locks go through dlm_controld), and across processes on
 *          one host.
 *   local  in-process only: one daemon, and unit tests.
 *
 * Modes follow the DLM: PR (protected read, shared) and EX (exclusive).
 * A struct lock is one handle on one resource, owned by one session; two
 * handles on the same resource conflict even inside one process (the
 * handles, not the processes, hold the locks). Acquiring a handle that is
 * already held converts it (PR -> EX, EX -> PR).
 *
 * Waiting never blocks an event loop: lock_acquire() completes through the
 * loop given to it, with a result:
 *     0            granted
 *    -EAGAIN       LOCK_FLAG_NOQUEUE and the resource is busy
 *    -ETIMEDOUT    not granted within the timeout (built from NOQUEUE
 *                  retries or cancel: kernel DLM lock timeouts are gone)
 *    -ECANCELED    lock_cancel() or client shutdown
 *    -EDEADLK      a conversion deadlock was broken by refusing this one
 *    -EIO / other  the backend failed (logged with the resource name)
 *
 * Value block (32 bytes): the EX holder may set it; it is stored when the
 * holder releases or converts down, and every later holder reads it. It
 * carries a mailbox's version stamp (DESIGN invariant 3). When the backend
 * cannot vouch for it (DLM recovery lost it: DLM_SBF_VALNOTVALID; a new or
 * short lock file), lock_value_is_valid() is false and the holder must
 * rebuild the state from disk and write a fresh value. Treat an all-zero
 * value as unknown too: the DLM hands out zeroes, not flagged invalid,
 * for a resource it has forgotten. An EX holder that dies before storing
 * leaves the value invalid (dlm: recovery invalidates it; fcntl: the
 * record is marked "EX holder at work" before EX is granted - durably on
 * shared file systems - and the mark is cleared by the release). An EX holder
 * that releases without lock_value_set() leaves the value as it was.
 *
 * Blocking callbacks: with dlm (and local), a holder is told when another
 * handle wants a conflicting mode, so that a cached lock can be released
 * (after a short minimum hold time, against ping-pong). fcntl has no such
 * signal: callers must not cache fcntl locks beyond one operation.
 * lock_release_cached() is that caching, done here for every caller.
 *
 * Lock order (DESIGN invariant 7): user -> mailbox -> queue item. Each
 * handle has a class; in --enable-debug-checks builds acquiring a lower
 * class while the thread holds a higher one panics.
 *
 * Threads: a client serves every thread; a handle is used by one loop's
 * thread at a time (the one passed to lock_acquire). Callbacks run on that
 * loop's thread.
 *
 * Loops: a handle may leave a cancelled timer on its loop for one more
 * iteration after lock_destroy() or a timeout; as with any io request,
 * run a loop until ioloop_pending_count() is 0 before destroying it.
 */
#include <stdbool.h>
#include <stdint.h>

#include "lib/settings.h"

struct ioloop;
struct iopool;
struct lock;
struct lock_client;

#define LOCK_VALUE_SIZE 32
/* The DLM's limit on resource names; every backend keeps to it. */
#define LOCK_NAME_MAX 64

enum lock_mode {
	LOCK_MODE_NONE,		/* not held */
	LOCK_MODE_PR,
	LOCK_MODE_EX,
};

/* Lock classes in their only permitted acquisition order. */
enum lock_class {
	LOCK_CLASS_USER = 1,
	LOCK_CLASS_MAILBOX = 2,
	LOCK_CLASS_QUEUE = 3,
	LOCK_CLASS_OTHER = 4,	/* leaf locks held alone (probes, tests) */
};

/* Don't wait: fail with -EAGAIN if the resource is busy. */
#define LOCK_FLAG_NOQUEUE 0x1

struct lock_client_settings {
	enum settings_lock_backend backend;
	/* fcntl: lock files live under SPOOL/.locks/ (created if missing). */
	const char *spool_dir;
	/* dlm: lockspace name; NULL = "clustermail". Created if missing
	   (needs CAP_SYS_ADMIN: do it before dropping privileges). */
	const char *lockspace;
	/* The loop that watches the DLM device fd (usually the main loop);
	   completions are forwarded to each request's own loop. Required for
	   dlm, ignored otherwise. */
	struct ioloop *dispatch_loop;
	/* Blocking pool (fcntl waits); borrowed. */
	struct iopool *pool;
	/* Default timeout for lock_acquire() with timeout 0; 0 = 30 s. */
	uint64_t default_timeout_msecs;
};

/* Result callback of lock_acquire(); see the result list above. */
typedef void lock_callback_t(struct lock *lock, int result, void *context);
/* Another handle wants this resource in a mode that conflicts with ours. */
typedef void lock_blocking_callback_t(struct lock *lock,
				      enum lock_mode wanted, void *context);

/* Open the backend. Returns NULL with *error_r (caller frees) when it
   cannot be used (no /dev/misc/dlm-control, dlm_controld not running, an
   unwritable spool ...). */
struct lock_client *lock_client_create(const struct lock_client_settings *set,
				       char **error_r);
/* Close the backend. Every handle must have been destroyed first. For dlm
   this releases the lockspace (removing it when we were its last user);
   call it on dispatch_loop's thread: it waits (at most 10 s) for the
   unlocks of the destroyed handles to finish. */
void lock_client_destroy(struct lock_client **client);
const char *lock_client_backend_name(const struct lock_client *client);
/* Call as root, before giving root up: start a small process that stays
   root and, once this process has exited (cleanly or not), undoes what
   only root can undo - with dlm, our create reference on the lockspace,
   which would otherwise outlive us and keep dlm_controld from leaving
   it. Nothing to do for the other backends. 0, or -1 with *error_r. */
int lock_client_start_keeper(struct lock_client *client, char **error_r);

/* A handle on resource name (1..LOCK_NAME_MAX bytes of printable ASCII;
   use lock_name_*() to build names). Not held until lock_acquire(). */
struct lock *lock_create(struct lock_client *client, const char *name,
			 enum lock_class lock_class);
/* Release if held (a pending acquire is cancelled first) and free; sets
   *lock = NULL. Callbacks of the handle never run after this. */
void lock_destroy(struct lock **lock);

/* Acquire or convert to mode. timeout_msecs 0 = the client's default.
   callback runs exactly once, on loop's thread, never inside this call. */
void lock_acquire(struct lock *lock, struct ioloop *loop, enum lock_mode mode,
		  unsigned int flags, uint64_t timeout_msecs,
		  lock_callback_t *callback, void *context);
/* Cancel a pending lock_acquire(); its callback runs with -ECANCELED
   (or 0 if the grant won the race). */
void lock_cancel(struct lock *lock);
/* Release the lock (storing the value block if EX and it was set). The
   handle may be acquired again. */
void lock_release(struct lock *lock);

/* Let go of the lock but, where the backend has blocking callbacks (dlm,
   local), keep it in the backend until another handle wants it and it
   has been held for min_hold_msecs since its grant; the next
   lock_acquire() in the same mode then needs no backend request. With
   fcntl, or when someone already waits for it, this is lock_release().
   The handle reads as not held meanwhile (lock_get_mode() NONE). The
   handle's loop (that of its last lock_acquire()) must keep running:
   the blocking callbacks that end the caching are served there. */
void lock_release_cached(struct lock *lock, uint64_t min_hold_msecs);
bool lock_is_cached(const struct lock *lock);
/* Does lock_release_cached() keep locks with this client's backend? */
bool lock_client_can_cache(const struct lock_client *client);

enum lock_mode lock_get_mode(const struct lock *lock);
const char *lock_get_name(const struct lock *lock);
bool lock_is_pending(const struct lock *lock);

/* The value block as read at the last grant (zeroes if never written). */
const uint8_t *lock_value(const struct lock *lock);
/* Can lock_value() be trusted? (See above.) */
bool lock_value_is_valid(const struct lock *lock);
/* Set the value to store at release/down-conversion (EX holder only;
   panics otherwise). */
void lock_value_set(struct lock *lock, const uint8_t value[LOCK_VALUE_SIZE]);

/* Be told when others want this resource (dlm, local). NULL to stop.
   (dlm cannot tell which mode is wanted and always reports EX.) */
void lock_set_blocking_callback(struct lock *lock,
				lock_blocking_callback_t *callback,
				void *context);

/* Lock-order scope (debug builds): the order is checked among handles
   granted on the same thread with the same owner. By default the owner
   is the coroutine that called lock_acquire() (NULL outside coroutines:
   one scope per thread), so that sessions sharing a loop thread, each in
   its own coroutine, do not make each other's locks look out of order.
   Set one to group handles otherwise. Only while not held. */
void lock_set_owner(struct lock *lock, const void *owner);

/* Resource names (all fit LOCK_NAME_MAX; long inputs are hashed, which
   may make two resources share a lock - slower, never incorrect). */
void lock_name_user(const char *user, char name_r[LOCK_NAME_MAX + 1]);
void lock_name_mailbox(const char *user, const char *mailbox,
		       char name_r[LOCK_NAME_MAX + 1]);
void lock_name_queue(const char *queue_id, char name_r[LOCK_NAME_MAX + 1]);

/* Counters (process-wide, all backends). */
#define LOCK_WAIT_BUCKETS 8	/* <=1ms, 5ms, 25ms, 100ms, 500ms, 2s, 10s, more */
/* wait_msecs_total and wait_buckets cover every grant (time from
   lock_acquire() to the grant), so their count is `grants'. `waits'
   counts grants that queued behind another holder (dlm cannot tell:
   there it counts grants slower than 1 ms). */
struct lock_stats {
	uint64_t grants;		/* acquisitions and conversions granted */
	uint64_t waits;			/* grants that were not immediate */
	uint64_t wait_msecs_total;
	uint64_t wait_buckets[LOCK_WAIT_BUCKETS];
	uint64_t busy;			/* NOQUEUE refusals */
	uint64_t timeouts;
	uint64_t blocking_callbacks;	/* times another node wanted ours */
	uint64_t cache_hits;		/* grants served by a cached lock */
	uint64_t cache_drops;		/* cached locks given up */
	uint64_t errors;
};
void lock_get_stats(struct lock_stats *stats_r);
/* Upper bound of wait bucket i in milliseconds (UINT64_MAX for the last). */
uint64_t lock_wait_bucket_limit(unsigned int i);

#endif
