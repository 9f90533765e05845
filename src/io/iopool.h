#ifndef CM_IOPOOL_H
#define CM_IOPOOL_H
/*
 * iopool - a small pool of threads for blocking calls.
 *
 * Jobs are queued FIFO; a job's completion is handed back to the loop that
 * submitted it (through ioloop_post-like machinery and an eventfd), so the
 * request callback always runs on the loop's own thread. Used through
 * ioloop_run_blocking() and the ioloop fallbacks; the pool has no public
 * job API of its own.
 */

struct iopool;

/* Start threads (0 = 4) pool threads. */
struct iopool *iopool_create(unsigned int threads);
/* Finish queued jobs, join the threads, free the pool; sets *pool = NULL.
   Completions of jobs whose loop is already gone must not exist: destroy
   loops only after their requests completed. */
void iopool_destroy(struct iopool **pool);

#endif
