#ifndef CM_LOCK_PRIVATE_H
#define CM_LOCK_PRIVATE_H
/*
 * lock-private.h - the seam between the generic lock layer (lock.c) and
 * its backends (lock-local.c, lock-fcntl.c, lock-dlm.c). Nothing outside
 * src/lock includes this.
 *
 * Division of labour. lock.c owns everything a caller can observe: the
 * pending request, its timeout timer, exactly-once delivery of the result
 * on the requesting loop, the handle's mode as the caller knows it, the
 * value block as last read, stats and lock-order checks. A backend owns
 * only the question "is this handle granted this mode on this resource",
 * and answers it through the vfuncs below.
 *
 * Lifetime. A handle is reference counted: the caller's reference is
 * dropped by lock_destroy(); every posted completion, posted blocking
 * callback, and io_request in flight on behalf of the handle holds one
 * more. A destroyed handle's memory therefore stays valid until the last
 * such callback has seen lock_is_destroyed() and dropped its reference;
 * it must do nothing else (the client may already be gone by then).
 */
#include <stdatomic.h>

#include "io/ioloop.h"
#include "lock.h"

/* acquire() result meaning "in progress: lock_backend_complete() follows". */
#define LOCK_BACKEND_QUEUED 1

struct lock_client {
	const struct lock_backend_vfuncs *v;
	uint64_t default_timeout_msecs;
	/* Handles created and not yet destroyed (any thread). */
	atomic_uint handle_count;
};

struct lock_timer;
struct lock_cache_timer;

struct lock {
	struct lock_client *client;	/* borrowed; outlives the caller's use */
	atomic_uint refcount;
	atomic_bool destroyed;		/* lock_destroy() ran */
	char name[LOCK_NAME_MAX + 1];
	enum lock_class lock_class;
	const void *owner;		/* lock-order scope; see lock_set_owner() */

	/* The rest is touched only by the thread of loop. */
	enum lock_mode mode;		/* granted mode as the caller knows it */
	struct ioloop *loop;		/* loop of the current or last request */

	/* The current request (pending until its callback has run). */
	bool pending;
	bool resolved;			/* result known, delivery posted */
	bool in_call;			/* inside a lock_*() API function */
	int result;			/* valid when resolved */
	int abort_reason;		/* -ETIMEDOUT / -ECANCELED once asked */
	enum lock_mode req_mode;
	unsigned int req_flags;
	uint64_t req_start_msecs;
	lock_callback_t *callback;
	void *context;
	struct lock_timer *timer;	/* owned; NULL when no timeout runs */

	/* Set by the backend: the request had to queue behind others. */
	bool backend_waited;
	/* Set by the backend before completing a grant: the value it read.
	   (Written on whatever thread grants; published by the post.) */
	uint8_t grant_value[LOCK_VALUE_SIZE];
	bool grant_value_valid;

	/* Value as read at the last grant, and the one to store. */
	uint8_t value[LOCK_VALUE_SIZE];
	bool value_valid;
	uint8_t value_out[LOCK_VALUE_SIZE];
	bool value_dirty;		/* value_out set by the EX holder */

	lock_blocking_callback_t *blocking_callback;
	void *blocking_context;

	/* Lock caching (lock_release_cached()): the caller let go, we keep
	   the backend's lock until someone else wants it. */
	bool cached;
	bool wanted;			/* a blocking callback since the grant */
	uint64_t granted_msecs;		/* when the current mode was granted */
	uint64_t cache_hold_msecs;	/* minimum hold asked for */
	struct lock_cache_timer *cache_timer;	/* owned; NULL if none runs */

#ifdef DEBUG_CHECKS
	/* Lock-order record (lock.c); protected by its global mutex. */
	bool order_recorded;
	unsigned long order_thread;
	/* owner, or else the coroutine that asked (each session runs in
	   its own), taken when the handle is acquired */
	const void *order_owner;
	struct lock *order_prev, *order_next;
#endif
};

struct lock_backend_vfuncs {
	const char *name;
	/* The backend tells holders about waiters (lock_backend_post_blocking),
	   so a released lock may be kept (lock_release_cached()). */
	bool blocking_callbacks;
	/* Size of the backend's handle struct, which starts with struct lock. */
	size_t lock_size;

	/* Open the backend: returns a client struct starting with struct
	   lock_client (the generic fields are filled in by lock.c), or NULL
	   with *error_r set. */
	struct lock_client *(*client_create)(const struct lock_client_settings *set,
					     char **error_r);
	/* Free the client; every handle has been destroyed. */
	void (*client_destroy)(struct lock_client *client);
	/* lock_client_start_keeper(); NULL: nothing to keep. */
	int (*start_keeper)(struct lock_client *client, char **error_r);

	/* A new handle: generic fields are set, backend fields are zero. */
	void (*lock_init)(struct lock *lock);
	/* Start acquiring lock->req_mode (from lock->mode, which differs;
	   lock->req_flags, lock->loop are set). Returns 0 (granted now:
	   grant_value is set), -errno (refused now; the handle keeps its
	   mode), or LOCK_BACKEND_QUEUED: then lock_backend_complete() is
	   called later on lock->loop's thread, never from inside acquire(). */
	int (*acquire)(struct lock *lock);
	/* Give up a queued acquire: the backend completes it with -ECANCELED
	   (the handle keeps its old mode), or with its real result if that
	   won the race. May complete from inside this call. */
	void (*cancel)(struct lock *lock);
	/* Drop a held lock (nothing pending). If lock->mode is EX and
	   lock->value_dirty, store lock->value_out first. */
	void (*release)(struct lock *lock);
	/* The handle is going away: drop whatever it holds or waits for
	   (without storing a value), and never complete it again. Anything
	   still in flight keeps its reference and sees lock_is_destroyed(). */
	void (*destroy)(struct lock *lock);
};

extern const struct lock_backend_vfuncs lock_local_vfuncs;
extern const struct lock_backend_vfuncs lock_fcntl_vfuncs;
#ifdef HAVE_DLM
extern const struct lock_backend_vfuncs lock_dlm_vfuncs;
#endif

/* Reference counting (any thread). lock_unref() frees at zero. */
void lock_ref(struct lock *lock);
void lock_unref(struct lock *lock);
bool lock_is_destroyed(const struct lock *lock);

/* The pending request finished with result (0, -EAGAIN, -ECANCELED,
   -EDEADLK, -errno). Call on lock->loop's thread. */
void lock_backend_complete(struct lock *lock, int result);
/* Thread-safe: run lock_backend_complete(lock, result) on loop (the
   handle's request loop, which the caller captured under its own lock).
   Skipped if the handle is destroyed by then. */
void lock_backend_post_complete(struct lock *lock, struct ioloop *loop,
				int result);
/* Thread-safe: tell the holder on loop that another handle wants mode
   wanted. Dropped if by then the handle is destroyed, not held, or has no
   blocking callback. */
void lock_backend_post_blocking(struct lock *lock, struct ioloop *loop,
				enum lock_mode wanted);
/* Count a backend failure that no request result reports (for example a
   value block that could not be stored at release). */
void lock_backend_count_error(void);

static inline bool lock_modes_conflict(enum lock_mode a, enum lock_mode b)
{
	return a != LOCK_MODE_NONE && b != LOCK_MODE_NONE &&
		(a == LOCK_MODE_EX || b == LOCK_MODE_EX);
}

static inline const char *lock_mode_name(enum lock_mode mode)
{
	return mode == LOCK_MODE_EX ? "EX" : mode == LOCK_MODE_PR ? "PR" : "NONE";
}

#endif
