/*
 * iopool.c - a fixed set of threads running blocking calls for the loops.
 *
 * Jobs wait in one FIFO queue (doubly linked so that a queued job can be
 * cancelled in O(1)). A thread takes the oldest job, runs it without any
 * lock held, stores the result and posts the job's completion to the loop
 * that submitted it; from then on the loop owns the job. The pool never
 * touches a job again after posting it.
 *
 * Pool threads are created with every signal blocked, so that process
 * signals (SIGTERM, SIGHUP, SIGCHLD) are only ever seen by the main
 * thread's signalfd and a blocking call here is never interrupted.
 */
#include "lib/lib.h"
#include "iopool.h"
#include "io-private.h"

#include <pthread.h>
#include <signal.h>

#define IOPOOL_DEFAULT_THREADS 4

struct iopool {
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* signalled when a job is queued */
	struct iopool_job *head, *tail;	/* queue; protected by lock */
	bool stopping;			/* protected by lock */

	unsigned int thread_count;
	pthread_t *threads;
};

/* pool_take - wait for the oldest job; NULL when stopping and drained */
static struct iopool_job *pool_take(struct iopool *pool)
{
	struct iopool_job *job;

	pthread_mutex_lock(&pool->lock);
	while (pool->head == NULL && !pool->stopping)
		pthread_cond_wait(&pool->cond, &pool->lock);
	job = pool->head;
	if (job != NULL) {
		pool->head = job->next;
		if (pool->head == NULL)
			pool->tail = NULL;
		else
			pool->head->prev = NULL;
		job->next = job->prev = NULL;
		job->queued = false;
	}
	pthread_mutex_unlock(&pool->lock);
	return job;
}

/* pool_thread - run jobs until the pool stops and the queue is empty */
static void *pool_thread(void *context)
{
	struct iopool *pool = context;
	struct iopool_job *job;

	while ((job = pool_take(pool)) != NULL) {
		job->result = job->work(job->arg);
		/* The loop owns the job from here on. */
		ioloop_post_item(job->loop, &job->done);
	}
	return NULL;
}

struct iopool *iopool_create(unsigned int threads)
{
	struct iopool *pool = mem_zalloc(sizeof(*pool));
	sigset_t all, old;
	int ret;

	pool->thread_count = threads == 0 ? IOPOOL_DEFAULT_THREADS : threads;
	pool->threads = mem_calloc(pool->thread_count, sizeof(*pool->threads));
	if ((ret = pthread_mutex_init(&pool->lock, NULL)) != 0 ||
	    (ret = pthread_cond_init(&pool->cond, NULL)) != 0)
		log_fatal("iopool: cannot initialise lock: %s", strerror(ret));

	/* Threads inherit the creator's mask: block everything around
	   pthread_create so there is no window where a new thread could
	   take a signal meant for the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned int i = 0; i < pool->thread_count; i++) {
		ret = pthread_create(&pool->threads[i], NULL, pool_thread, pool);
		if (ret != 0)
			log_fatal("iopool: cannot start thread %u of %u: %s",
				  i + 1, pool->thread_count, strerror(ret));
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return pool;
}

void iopool_destroy(struct iopool **_pool)
{
	struct iopool *pool = *_pool;
	int ret;

	if (pool == NULL)
		return;
	*_pool = NULL;

	pthread_mutex_lock(&pool->lock);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->cond);
	pthread_mutex_unlock(&pool->lock);

	/* Threads leave only once the queue is empty, so queued jobs still
	   run and post their completions. */
	for (unsigned int i = 0; i < pool->thread_count; i++) {
		if ((ret = pthread_join(pool->threads[i], NULL)) != 0)
			log_panic("iopool: pthread_join: %s", strerror(ret));
	}
	pthread_cond_destroy(&pool->cond);
	pthread_mutex_destroy(&pool->lock);
	free(pool->threads);
	free(pool);
}

void iopool_job_submit(struct iopool *pool, struct iopool_job *job)
{
	pthread_mutex_lock(&pool->lock);
	if (pool->stopping)
		log_panic("iopool: job submitted while the pool is being destroyed");
	job->next = NULL;
	job->prev = pool->tail;
	if (pool->tail == NULL)
		pool->head = job;
	else
		pool->tail->next = job;
	pool->tail = job;
	job->queued = true;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

bool iopool_job_cancel(struct iopool *pool, struct iopool_job *job)
{
	bool removed = false;

	pthread_mutex_lock(&pool->lock);
	if (job->queued) {
		if (job->prev == NULL)
			pool->head = job->next;
		else
			job->prev->next = job->next;
		if (job->next == NULL)
			pool->tail = job->prev;
		else
			job->next->prev = job->prev;
		job->next = job->prev = NULL;
		job->queued = false;
		removed = true;
	}
	pthread_mutex_unlock(&pool->lock);
	return removed;
}
