/*
 * worker.c - worker threads: one ioloop each, accepting on every listener.
 *
 * All workers post an accept on the same listening sockets; the kernel
 * hands each new connection to one of them, and the session then lives on
 * that worker's loop until it ends (no cross-thread hand-off).
 *
 * Draining (SIGTERM): each worker stops its acceptors (whose cancelled
 * requests the kernel owns until they complete) and leaves its loop once
 * no session and no request is left. workers_abort() closes the
 * sessions still open when the drain timeout runs out.
 */
#include "lib/lib.h"
#include "io/acceptor.h"
#include "io/connection.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "maildir/sio.h"
#include "protocols/imap/imap.h"
#include "protocols/pop3/pop3.h"
#include "protocols/smtp/smtp.h"
#include "daemon.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

/* How often a draining worker checks whether it is done. */
#define WORKER_DRAIN_CHECK_MSECS 50

struct worker;

struct worker_listener {
	struct worker *worker;		/* owner */
	enum settings_service service;
	int fd;				/* listening socket (borrowed); -1 = off */
	struct acceptor *acceptor;	/* NULL when not accepting */
};

struct worker {
	unsigned int index;
	char name[24];
	pthread_t thread;
	struct iopool *pool;		/* borrowed */
	/* Owned by the worker's thread, which creates and destroys it; other
	   threads post to it only under lock, while it is not NULL. */
	pthread_mutex_t lock;
	struct ioloop *loop;
	struct worker_listener listeners[SETTINGS_SERVICE_COUNT];
	struct io_request drain_timer;
	bool draining;
};

static struct worker *worker_list;	/* owned array */
/* This worker thread's sio for the store (owned by worker_main). */
static __thread struct sio *worker_thread_sio;
static unsigned int worker_count;
static atomic_uint worker_running_count;
static atomic_uint worker_accepting_count;
/* workers_start() waits until every worker has its loop. */
static pthread_mutex_t worker_start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t worker_start_cond = PTHREAD_COND_INITIALIZER;
static unsigned int worker_started_count;

/* worker_accepted - a client connected to one of our listeners */
static void worker_accepted(void *context, int fd, const struct sockaddr *peer,
			    socklen_t peer_len)
{
	struct worker_listener *listener = context;

	listener_session_start(listener->worker->loop, listener->service, fd,
			       peer, peer_len);
}

static void worker_accept_stopped(void *context)
{
	atomic_fetch_sub(&worker_accepting_count, 1);
}

/* worker_drain_check - leave the loop once nothing is left to wait for */
static void worker_drain_check(struct io_request *req, int result)
{
	struct worker *worker = req->context;

	/* Sessions end after their connection; their coroutines' done
	   callbacks must have run before the loop goes away. */
	if (ioloop_pending_count(worker->loop) == 0 && connection_count() == 0 &&
	    imap_session_count() == 0 && pop3_session_count() == 0 &&
	    smtp_session_count() == 0 &&
	    coro_live_count() == 0) {
		ioloop_stop(worker->loop);
		return;
	}
	io_timeout(worker->loop, &worker->drain_timer, WORKER_DRAIN_CHECK_MSECS);
}

/* worker_drain - runs on the worker's thread */
static void worker_drain(void *context)
{
	struct worker *worker = context;

	if (worker->draining)
		return;
	worker->draining = true;
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++)
		acceptor_stop(&worker->listeners[i].acceptor, worker_accept_stopped);
	imap_sessions_shutdown();
	pop3_sessions_shutdown();
	smtp_sessions_shutdown();
	io_timeout(worker->loop, &worker->drain_timer, WORKER_DRAIN_CHECK_MSECS);
}

static void worker_abort(void *context)
{
	(void)context;
	connection_abort_all("server shutting down");
}

static void *worker_main(void *context)
{
	struct worker *worker = context;
	struct ioloop_settings loop_set = {
		.name = worker->name,
		.pool = worker->pool,
	};

	/* The loop is created here: io_uring's single-issuer mode wants the
	   thread that submits to be the one that created the ring. */
	pthread_mutex_lock(&worker->lock);
	worker->loop = ioloop_create(&loop_set);
	pthread_mutex_unlock(&worker->lock);
	worker_thread_sio = sio_create_loop(worker->loop);
	pthread_mutex_lock(&worker_start_lock);
	worker_started_count++;
	pthread_cond_broadcast(&worker_start_cond);
	pthread_mutex_unlock(&worker_start_lock);

	io_request_init(&worker->drain_timer, worker_drain_check, worker);
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		struct worker_listener *listener = &worker->listeners[i];
		char name[64];

		if (listener->fd < 0)
			continue;
		snprintf(name, sizeof(name), "%s %s", worker->name,
			 settings_service_key(listener->service));
		atomic_fetch_add(&worker_accepting_count, 1);
		listener->acceptor = acceptor_create(worker->loop, listener->fd,
						     name, worker_accepted, listener);
	}
	ioloop_run(worker->loop);
	sio_destroy(&worker_thread_sio);
	pthread_mutex_lock(&worker->lock);
	ioloop_destroy(&worker->loop);
	pthread_mutex_unlock(&worker->lock);
	atomic_fetch_sub(&worker_running_count, 1);
	return NULL;
}

void workers_start(unsigned int count, const int listen_fds[SETTINGS_SERVICE_COUNT],
		   struct iopool *pool)
{
	worker_list = mem_calloc(count, sizeof(*worker_list));
	worker_count = count;
	for (unsigned int i = 0; i < count; i++) {
		struct worker *worker = &worker_list[i];
		int ret;

		worker->index = i + 1;
		worker->pool = pool;
		pthread_mutex_init(&worker->lock, NULL);
		snprintf(worker->name, sizeof(worker->name), "worker-%u", i + 1);
		for (int s = 0; s < SETTINGS_SERVICE_COUNT; s++) {
			worker->listeners[s].worker = worker;
			worker->listeners[s].service = (enum settings_service)s;
			worker->listeners[s].fd = listen_fds[s];
		}
		atomic_fetch_add(&worker_running_count, 1);
		ret = pthread_create(&worker->thread, NULL, worker_main, worker);
		if (ret != 0)
			log_fatal("cannot start %s: %s", worker->name, strerror(ret));
	}
	pthread_mutex_lock(&worker_start_lock);
	while (worker_started_count < count)
		pthread_cond_wait(&worker_start_cond, &worker_start_lock);
	pthread_mutex_unlock(&worker_start_lock);
}

/* worker_post_all - run fn on the thread of every worker still running */
static void worker_post_all(void (*fn)(void *context))
{
	for (unsigned int i = 0; i < worker_count; i++) {
		struct worker *worker = &worker_list[i];

		pthread_mutex_lock(&worker->lock);
		if (worker->loop != NULL)
			ioloop_post(worker->loop, fn, worker);
		pthread_mutex_unlock(&worker->lock);
	}
}

void workers_post_each(void (*fn)(void *context), void *context,
		       void (*ref)(void *context))
{
	for (unsigned int i = 0; i < worker_count; i++) {
		struct worker *worker = &worker_list[i];

		pthread_mutex_lock(&worker->lock);
		if (worker->loop != NULL) {
			ref(context);
			ioloop_post(worker->loop, fn, context);
		}
		pthread_mutex_unlock(&worker->lock);
	}
}

void workers_drain(void)
{
	worker_post_all(worker_drain);
}

void workers_abort(void)
{
	worker_post_all(worker_abort);
}

struct sio *worker_sio(void)
{
	return worker_thread_sio;
}

unsigned int workers_running(void)
{
	return atomic_load(&worker_running_count);
}

unsigned int workers_accepting(void)
{
	return atomic_load(&worker_accepting_count);
}

void workers_join(void)
{
	for (unsigned int i = 0; i < worker_count; i++) {
		pthread_join(worker_list[i].thread, NULL);
		pthread_mutex_destroy(&worker_list[i].lock);
	}
	free(worker_list);
	worker_list = NULL;
	worker_count = 0;
}
