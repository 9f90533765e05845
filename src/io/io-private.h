#ifndef CM_IO_PRIVATE_H
#define CM_IO_PRIVATE_H
/*
 * io-private.h - the seams between ioloop.c, iopool.c, connection.c and
 * tls.c. Nothing outside src/io includes this.
 *
 * Two mechanisms live here:
 *
 *   - posted items: a caller-owned record that any thread may hand to a
 *     loop; the loop runs item->fn(item->context) on its own thread. This
 *     is how pool jobs complete, how ioloop_post() works, and how a
 *     connection defers work "to the next loop iteration" without
 *     allocating (its item is embedded in the connection).
 *
 *   - pool jobs: a blocking call queued on an iopool, completed back into
 *     the loop that submitted it through the job's embedded posted item.
 */
#include <stdbool.h>

struct ioloop;
struct iopool;
struct io_request;

struct ioloop_post_item {
	struct ioloop_post_item *next;	/* owned by the loop while queued */
	void (*fn)(void *context);
	void *context;
};

/* Queue item on loop; thread-safe. The item's memory belongs to the loop
   until fn runs (it is not touched after fn is called, so fn may free it).
   From the loop's own thread no wake-up syscall is made: the loop runs
   posted items before it next waits. */
void ioloop_post_item(struct ioloop *loop, struct ioloop_post_item *item);

/* Does the calling thread run this loop? */
bool ioloop_is_current_thread(const struct ioloop *loop);

struct iopool_job {
	/* Pool queue links; protected by the pool's lock. */
	struct iopool_job *prev, *next;
	bool queued;			/* in the queue, not yet picked up */

	/* Set by the submitter; read by the pool thread. */
	struct ioloop *loop;
	struct io_request *req;
	int (*work)(void *arg);
	void *arg;

	/* Written by the pool thread before posting `done'. */
	int result;
	/* Posted to loop when the job finished or was cancelled; the loop
	   owns and frees the job from there. fn/context set by the submitter. */
	struct ioloop_post_item done;
};

/* Queue job (FIFO). When work() returns, job->result is set and job->done
   is posted to job->loop. */
void iopool_job_submit(struct iopool *pool, struct iopool_job *job);
/* Remove job from the queue if no thread has picked it up yet. Returns
   true if removed (the caller completes it), false if it is running or
   done (its completion will be posted as usual). */
bool iopool_job_cancel(struct iopool *pool, struct iopool_job *job);

/* The OpenSSL error queue of this thread as one readable line, then
   cleared; fallback when the queue is empty. The string lives in
   thread-local storage until the next call. */
const char *tls_error_string(const char *fallback);

#endif
