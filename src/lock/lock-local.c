/*
 * lock-local.c - the "local" lock backend: resources inside one process.
 *
 * For a single daemon and for unit tests. It mirrors the DLM's rules so
 * that code tested against it behaves the same on a cluster:
 *
 *   - Handles, not threads or loops, hold locks: two handles on one loop
 *     conflict. Handles on different loops (threads) contend for the same
 *     resource table, so all state below lives under one client mutex.
 *     Sections under it are short (no allocation-heavy work, no user
 *     callbacks); everything user-visible is posted to the handle's loop.
 *   - Each resource has a granted set and one FIFO queue. Conversions
 *     queue ahead of new requests (as the DLM's convert queue does), and
 *     a waiter is granted only when it is at the head: a stream of PR
 *     requests cannot starve an EX waiter, and a PR request behind an EX
 *     waiter waits even if it would be compatible with the holders.
 *   - Conversion deadlock: PR->EX waits until no other handle holds the
 *     resource, so two PR holders converting at once would wait for each
 *     other forever. The second converter is refused with -EDEADLK
 *     immediately (it keeps PR), like the DLM without LKF_CONVDEADLK.
 *   - Blocking callbacks: when a request queues, every holder whose mode
 *     conflicts is told once per mode (the DLM's "highbast" dedupe), and
 *     when a grant leaves waiters queued the new holders are told too.
 *   - Value block: stored per resource by an EX holder's release or
 *     down-conversion, read at every grant. A resource no handle uses is
 *     freed, except that up to LOCAL_IDLE_MAX unused resources with a
 *     valid value are kept in an LRU (the DLM keeps unused resources on
 *     its "toss" list the same way) - otherwise every lock cycle of a
 *     single daemon would find the value invalid and force a rebuild.
 *
 * Races: a grant is decided under the mutex on the releasing thread and
 * posted to the waiter's loop. Until the post runs, the waiter is granted
 * as far as the resource is concerned; a cancel or timeout on the
 * waiter's loop finds it no longer queued and does nothing, and the grant
 * is delivered (the "grant won" case of lock_cancel()). lock_destroy() in
 * that window releases it here; the post then sees a destroyed handle.
 */
#include "lib/lib.h"
#include "io/ioloop.h"
#include "lock-private.h"

#include <pthread.h>

#define LOCAL_INITIAL_BUCKETS 64
/* Unused resources kept for their value block. */
#define LOCAL_IDLE_MAX 1024

struct local_lock;

struct local_resource {
	struct local_resource *hash_next;
	uint32_t hash;
	char name[LOCK_NAME_MAX + 1];

	struct local_lock *granted;		/* granted handles */
	struct local_lock *queue_head, *queue_tail;	/* waiters, in order */
	unsigned int converters;		/* waiters that hold a mode */

	/* In the idle LRU (no handle uses it; kept for its value). */
	bool idle;
	struct local_resource *idle_prev, *idle_next;

	uint8_t value[LOCK_VALUE_SIZE];
	bool value_valid;
};

struct local_lock {
	struct lock lock;

	/* Protected by the client mutex. */
	struct local_resource *res;	/* while granted or queued */
	enum lock_mode granted;
	enum lock_mode wanted;		/* queued for this mode, or NONE */
	struct local_lock *granted_prev, *granted_next;
	struct local_lock *queue_prev, *queue_next;
	struct ioloop *loop;		/* grants and blocking callbacks go here */
	enum lock_mode bast_sent;	/* highest mode already told about */
};

struct local_client {
	struct lock_client client;
	pthread_mutex_t mutex;
	struct local_resource **buckets;	/* owned */
	unsigned int bucket_count, resource_count;
	struct local_resource *idle_head, *idle_tail;	/* LRU: head newest */
	unsigned int idle_count;
};

static inline struct local_lock *local_lock(struct lock *lock)
{
	return CONTAINER_OF(lock, struct local_lock, lock);
}

static inline struct local_client *local_client(struct lock_client *client)
{
	return CONTAINER_OF(client, struct local_client, client);
}

/* local_hash - FNV-1a of a resource name */
static uint32_t local_hash(const char *name)
{
	uint32_t hash = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++)
		hash = (hash ^ *p) * 16777619u;
	return hash;
}

/*
 * Resource table (caller holds the mutex)
 */

/* local_table_grow - double the bucket array */
static void local_table_grow(struct local_client *lc)
{
	unsigned int count = lc->bucket_count * 2;
	struct local_resource **buckets = mem_calloc(count, sizeof(*buckets));

	for (unsigned int i = 0; i < lc->bucket_count; i++) {
		struct local_resource *res = lc->buckets[i], *next;

		for (; res != NULL; res = next) {
			next = res->hash_next;
			res->hash_next = buckets[res->hash & (count - 1)];
			buckets[res->hash & (count - 1)] = res;
		}
	}
	free(lc->buckets);
	lc->buckets = buckets;
	lc->bucket_count = count;
}

/* local_idle_unlink - take res out of the idle LRU */
static void local_idle_unlink(struct local_client *lc,
			      struct local_resource *res)
{
	if (res->idle_prev != NULL)
		res->idle_prev->idle_next = res->idle_next;
	else
		lc->idle_head = res->idle_next;
	if (res->idle_next != NULL)
		res->idle_next->idle_prev = res->idle_prev;
	else
		lc->idle_tail = res->idle_prev;
	res->idle_prev = res->idle_next = NULL;
	res->idle = false;
	lc->idle_count--;
}

/* local_resource_get - find or create the resource called name */
static struct local_resource *local_resource_get(struct local_client *lc,
						 const char *name)
{
	uint32_t hash = local_hash(name);
	struct local_resource *res = lc->buckets[hash & (lc->bucket_count - 1)];

	for (; res != NULL; res = res->hash_next) {
		if (res->hash == hash && strcmp(res->name, name) == 0) {
			if (res->idle)
				local_idle_unlink(lc, res);
			return res;
		}
	}
	if (lc->resource_count >= lc->bucket_count * 2)
		local_table_grow(lc);
	res = mem_zalloc(sizeof(*res));
	res->hash = hash;
	memcpy(res->name, name, strlen(name) + 1);
	res->hash_next = lc->buckets[hash & (lc->bucket_count - 1)];
	lc->buckets[hash & (lc->bucket_count - 1)] = res;
	lc->resource_count++;
	return res;
}

/* local_resource_free - unlink res from the table and free it */
static void local_resource_free(struct local_client *lc,
				struct local_resource *res)
{
	struct local_resource **pos = &lc->buckets[res->hash & (lc->bucket_count - 1)];

	while (*pos != res)
		pos = &(*pos)->hash_next;
	*pos = res->hash_next;
	if (res->idle)
		local_idle_unlink(lc, res);
	lc->resource_count--;
	free(res);
}

/* local_resource_put - free res, or park it in the LRU, if unused */
static void local_resource_put(struct local_client *lc,
			       struct local_resource *res)
{
	if (res->granted != NULL || res->queue_head != NULL)
		return;
	if (!res->value_valid) {
		local_resource_free(lc, res);
		return;
	}
	res->idle = true;
	res->idle_prev = NULL;
	res->idle_next = lc->idle_head;
	if (lc->idle_head != NULL)
		lc->idle_head->idle_prev = res;
	else
		lc->idle_tail = res;
	lc->idle_head = res;
	if (++lc->idle_count > LOCAL_IDLE_MAX)
		local_resource_free(lc, lc->idle_tail);
}

/*
 * Granted set and queue (caller holds the mutex)
 */

/* local_granted_link - add ll to its resource's granted set */
static void local_granted_link(struct local_lock *ll)
{
	struct local_resource *res = ll->res;

	ll->granted_prev = NULL;
	ll->granted_next = res->granted;
	if (res->granted != NULL)
		res->granted->granted_prev = ll;
	res->granted = ll;
}

/* local_granted_unlink - remove ll from the granted set */
static void local_granted_unlink(struct local_lock *ll)
{
	if (ll->granted_prev != NULL)
		ll->granted_prev->granted_next = ll->granted_next;
	else
		ll->res->granted = ll->granted_next;
	if (ll->granted_next != NULL)
		ll->granted_next->granted_prev = ll->granted_prev;
	ll->granted_prev = ll->granted_next = NULL;
	ll->granted = LOCK_MODE_NONE;
}

/* local_queue_insert - queue ll; conversions go after earlier ones but
   before every new request */
static void local_queue_insert(struct local_lock *ll, enum lock_mode wanted)
{
	struct local_resource *res = ll->res;
	struct local_lock *after = NULL;

	if (ll->granted != LOCK_MODE_NONE) {
		for (struct local_lock *q = res->queue_head;
		     q != NULL && q->granted != LOCK_MODE_NONE; q = q->queue_next)
			after = q;
		res->converters++;
	} else {
		after = res->queue_tail;
	}
	ll->wanted = wanted;
	ll->queue_prev = after;
	ll->queue_next = after != NULL ? after->queue_next : res->queue_head;
	if (ll->queue_next != NULL)
		ll->queue_next->queue_prev = ll;
	else
		res->queue_tail = ll;
	if (after != NULL)
		after->queue_next = ll;
	else
		res->queue_head = ll;
}

/* local_queue_unlink - take ll out of the queue */
static void local_queue_unlink(struct local_lock *ll)
{
	struct local_resource *res = ll->res;

	if (ll->queue_prev != NULL)
		ll->queue_prev->queue_next = ll->queue_next;
	else
		res->queue_head = ll->queue_next;
	if (ll->queue_next != NULL)
		ll->queue_next->queue_prev = ll->queue_prev;
	else
		res->queue_tail = ll->queue_prev;
	ll->queue_prev = ll->queue_next = NULL;
	ll->wanted = LOCK_MODE_NONE;
	if (ll->granted != LOCK_MODE_NONE)
		res->converters--;
}

/* local_compatible - could ll hold mode next to the other holders? */
static bool local_compatible(const struct local_lock *ll, enum lock_mode mode)
{
	for (const struct local_lock *h = ll->res->granted; h != NULL;
	     h = h->granted_next) {
		if (h != ll && lock_modes_conflict(h->granted, mode))
			return false;
	}
	return true;
}

/* local_grant - ll now holds mode; its grant value is the resource's */
static void local_grant(struct local_lock *ll, enum lock_mode mode)
{
	if (ll->granted == LOCK_MODE_NONE)
		local_granted_link(ll);
	ll->granted = mode;
	ll->bast_sent = LOCK_MODE_NONE;
	memcpy(ll->lock.grant_value, ll->res->value, LOCK_VALUE_SIZE);
	ll->lock.grant_value_valid = ll->res->value_valid;
}

/* local_send_blocking - tell holders that conflict with waiter */
static void local_send_blocking(const struct local_lock *waiter)
{
	for (struct local_lock *h = waiter->res->granted; h != NULL;
	     h = h->granted_next) {
		if (h == waiter || !lock_modes_conflict(h->granted, waiter->wanted) ||
		    h->bast_sent >= waiter->wanted)
			continue;
		h->bast_sent = waiter->wanted;
		lock_backend_post_blocking(&h->lock, h->loop, waiter->wanted);
	}
}

/* local_grant_waiters - grant from the queue head while possible */
static void local_grant_waiters(struct local_resource *res)
{
	struct local_lock *w;

	while ((w = res->queue_head) != NULL && local_compatible(w, w->wanted)) {
		enum lock_mode mode = w->wanted;

		local_queue_unlink(w);
		local_grant(w, mode);
		lock_backend_post_complete(&w->lock, w->loop, 0);
	}
	/* The new holders may block those still waiting. */
	for (w = res->queue_head; w != NULL; w = w->queue_next)
		local_send_blocking(w);
}

/*
 * Backend vfuncs
 */

/* local_client_create - an empty resource table */
static struct lock_client *
local_client_create(const struct lock_client_settings *set ATTR_UNUSED,
		    char **error_r ATTR_UNUSED)
{
	struct local_client *lc = mem_zalloc(sizeof(*lc));
	int ret;

	if ((ret = pthread_mutex_init(&lc->mutex, NULL)) != 0)
		log_fatal("local lock backend: pthread_mutex_init: %s",
			  strerror(ret));
	lc->bucket_count = LOCAL_INITIAL_BUCKETS;
	lc->buckets = mem_calloc(lc->bucket_count, sizeof(*lc->buckets));
	return &lc->client;
}

/* local_client_destroy - free the table and the idle resources */
static void local_client_destroy(struct lock_client *client)
{
	struct local_client *lc = local_client(client);

	/* Every handle is gone, so only idle resources remain. */
	while (lc->idle_head != NULL)
		local_resource_free(lc, lc->idle_head);
	if (lc->resource_count != 0)
		log_panic("local lock backend: %u resources still in use at "
			  "client destroy", lc->resource_count);
	pthread_mutex_destroy(&lc->mutex);
	free(lc->buckets);
	free(lc);
}

static void local_lock_init(struct lock *lock ATTR_UNUSED)
{
}

/* local_convert - change a held mode; caller holds the mutex */
static int local_convert(struct local_lock *ll, enum lock_mode mode,
			 unsigned int flags)
{
	struct local_resource *res = ll->res;

	if (mode == LOCK_MODE_PR) {
		/* Down-conversion never waits; store the value first so
		   the readers it lets in see it. */
		if (ll->lock.value_dirty) {
			memcpy(res->value, ll->lock.value_out, LOCK_VALUE_SIZE);
			res->value_valid = true;
		}
		local_grant(ll, mode);
		local_grant_waiters(res);
		return 0;
	}
	if (res->converters == 0 && local_compatible(ll, mode)) {
		local_grant(ll, mode);
		return 0;
	}
	if ((flags & LOCK_FLAG_NOQUEUE) != 0)
		return -EAGAIN;
	if (res->converters > 0)
		return -EDEADLK;
	local_queue_insert(ll, mode);
	local_send_blocking(ll);
	return LOCK_BACKEND_QUEUED;
}

/* local_request - a new request; caller holds the mutex */
static int local_request(struct local_client *lc, struct local_lock *ll,
			 enum lock_mode mode, unsigned int flags)
{
	ll->res = local_resource_get(lc, ll->lock.name);
	if (ll->res->queue_head == NULL && local_compatible(ll, mode)) {
		local_grant(ll, mode);
		return 0;
	}
	if ((flags & LOCK_FLAG_NOQUEUE) != 0) {
		struct local_resource *res = ll->res;

		ll->res = NULL;
		local_resource_put(lc, res);
		return -EAGAIN;
	}
	local_queue_insert(ll, mode);
	local_send_blocking(ll);
	return LOCK_BACKEND_QUEUED;
}

/* local_acquire - grant, refuse or queue under the client mutex */
static int local_acquire(struct lock *lock)
{
	struct local_client *lc = local_client(lock->client);
	struct local_lock *ll = local_lock(lock);
	int ret;

	pthread_mutex_lock(&lc->mutex);
	ll->loop = lock->loop;
	if (ll->granted != LOCK_MODE_NONE)
		ret = local_convert(ll, lock->req_mode, lock->req_flags);
	else
		ret = local_request(lc, ll, lock->req_mode, lock->req_flags);
	pthread_mutex_unlock(&lc->mutex);
	if (ret == LOCK_BACKEND_QUEUED)
		lock->backend_waited = true;
	return ret;
}

/* local_drop - remove ll from its resource entirely; mutex held */
static void local_drop(struct local_client *lc, struct local_lock *ll)
{
	struct local_resource *res = ll->res;

	if (res == NULL)
		return;
	if (ll->wanted != LOCK_MODE_NONE)
		local_queue_unlink(ll);
	if (ll->granted != LOCK_MODE_NONE)
		local_granted_unlink(ll);
	ll->res = NULL;
	local_grant_waiters(res);
	local_resource_put(lc, res);
}

/* local_cancel - leave the queue, unless the grant already happened */
static void local_cancel(struct lock *lock)
{
	struct local_client *lc = local_client(lock->client);
	struct local_lock *ll = local_lock(lock);
	bool removed = false;

	pthread_mutex_lock(&lc->mutex);
	if (ll->wanted != LOCK_MODE_NONE) {
		struct local_resource *res = ll->res;

		removed = true;
		if (ll->granted != LOCK_MODE_NONE) {
			/* A conversion: keep the old mode, and let the
			   waiters it was holding up in. */
			local_queue_unlink(ll);
			local_grant_waiters(res);
		} else {
			local_drop(lc, ll);
		}
	}
	pthread_mutex_unlock(&lc->mutex);
	/* Not removed: the grant was already posted and will win. */
	if (removed)
		lock_backend_complete(lock, -ECANCELED);
}

/* local_release - store the value (EX, set) and let waiters in */
static void local_release(struct lock *lock)
{
	struct local_client *lc = local_client(lock->client);
	struct local_lock *ll = local_lock(lock);

	pthread_mutex_lock(&lc->mutex);
	if (ll->granted == LOCK_MODE_EX && lock->value_dirty) {
		memcpy(ll->res->value, lock->value_out, LOCK_VALUE_SIZE);
		ll->res->value_valid = true;
	}
	local_drop(lc, ll);
	pthread_mutex_unlock(&lc->mutex);
}

/* local_destroy - drop whatever the handle holds or waits for */
static void local_destroy(struct lock *lock)
{
	struct local_client *lc = local_client(lock->client);

	pthread_mutex_lock(&lc->mutex);
	local_drop(lc, local_lock(lock));
	pthread_mutex_unlock(&lc->mutex);
}

const struct lock_backend_vfuncs lock_local_vfuncs = {
	.name = "local",
	.blocking_callbacks = true,
	.lock_size = sizeof(struct local_lock),
	.client_create = local_client_create,
	.client_destroy = local_client_destroy,
	.lock_init = local_lock_init,
	.acquire = local_acquire,
	.cancel = local_cancel,
	.release = local_release,
	.destroy = local_destroy,
};
