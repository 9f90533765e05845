/*
 * test-lock.c - unit tests for src/lock: the generic layer and the local,
 * fcntl and dlm backends.
 *
 * The behavioural tests run against every backend through one table, on
 * real ioloops: each "actor" is a thread with its own loop (all sharing
 * one iopool), and the test thread drives them by posting calls and then
 * waiting - with a deadline, so a lost callback fails instead of hanging -
 * for the lock callbacks to be recorded. Lock calls are always made on
 * the loop thread that owns the request, as lock.h requires.
 *
 * fcntl also gets a cross-process test: a forked child holds EX on the
 * same spool, releases on command, and is finally killed with SIGKILL
 * while holding EX - the single-host stand-in for a dead node.
 *
 * The dlm suite needs a kernel DLM (/dev/misc/dlm-control, dlm_controld);
 * without one it is reported as skipped and not counted.
 *
 * Everything lives in a private mkdtemp directory removed at exit; every
 * thread, loop, child and descriptor is gone when a test returns. Works
 * forked and with CK_FORK=no (the lock-order panic test needs a fork and
 * is left out without one).
 *
 * Longer than our usual file limit on purpose: the thread/loop harness
 * and the behavioural tests belong together, and splitting the backends
 * into separate programs would duplicate both.
 */
#include "lib/lib.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>

#define ACTOR_COUNT 3
#define WAIT_MSECS 5000		/* deadline for anything we expect */
#define SETTLE_MSECS 80		/* "nothing more happens" window */
#define DLM_CONTROL_DEVICE "/dev/misc/dlm-control"

/* ---- backends under test ---- */

struct backend_case {
	const char *name;
	enum settings_lock_backend backend;
	bool blocking_callbacks;	/* tells holders about waiters */
	bool fifo;			/* strict FIFO grants */
	bool fresh_value_invalid;	/* never-written value reads invalid */
};

static const struct backend_case backend_cases[] = {
	{ "local", SETTINGS_LOCK_LOCAL, true, true, true },
	{ "fcntl", SETTINGS_LOCK_FCNTL, false, false, true },
	/* The DLM hands out zeroes without VALNOTVALID for new resources. */
	{ "dlm", SETTINGS_LOCK_DLM, true, true, false },
};
#define BACKEND_LOCAL 0
#define BACKEND_FCNTL 1
#define BACKEND_DLM 2

/* ---- actors: a thread with a loop ---- */

struct actor {
	pthread_t thread;
	struct ioloop *loop;
	pid_t tid;
	bool ready;
	char name[16];
};

/* One record per lock request made by a test. */
struct req {
	struct lock *lock;
	struct actor *actor;
	bool in_acquire;	/* lock_acquire() is running */
	int calls;		/* callbacks seen */
	int result;
	pid_t callback_tid;
	bool inside_acquire;	/* a callback ran inside lock_acquire() */
	unsigned int seq;	/* event number of the last callback */
	int blocking_calls;
	enum lock_mode blocking_wanted;
	pid_t blocking_tid;
};

struct env {
	const struct backend_case *bc;
	char *dir;
	struct iopool *pool;
	struct actor actors[ACTOR_COUNT];
	struct lock_client *client;
	unsigned int name_counter;
};

static char base_dir[64];
static struct env env;
static pthread_mutex_t t_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t t_cond;
static unsigned int t_seq;	/* event counter, under t_mutex */

/* deadline_ts - CLOCK_MONOTONIC now + msecs */
static struct timespec deadline_ts(unsigned int msecs)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += msecs / 1000;
	ts.tv_nsec += (long)(msecs % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

/* tick_done - stop the loop: used to run it for one short slice */
static void tick_done(struct io_request *req, int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

/* actor_drain - run the loop until nothing is pending on it */
static void actor_drain(struct actor *a)
{
	struct io_request tick;

	for (int i = 0; i < 400 && ioloop_pending_count(a->loop) > 0; i++) {
		io_request_init(&tick, tick_done, a->loop);
		io_timeout(a->loop, &tick, 5);
		ioloop_run(a->loop);
	}
	/* One more slice runs posts queued by other threads meanwhile. */
	io_request_init(&tick, tick_done, a->loop);
	io_timeout(a->loop, &tick, 2);
	ioloop_run(a->loop);
}

static void *actor_main(void *context)
{
	struct actor *a = context;
	struct ioloop_settings set = { .name = a->name, .pool = env.pool };

	a->loop = ioloop_create(&set);
	pthread_mutex_lock(&t_mutex);
	a->tid = gettid();
	a->ready = true;
	pthread_cond_broadcast(&t_cond);
	pthread_mutex_unlock(&t_mutex);

	ioloop_run(a->loop);
	actor_drain(a);
	if (ioloop_pending_count(a->loop) != 0)
		fprintf(stderr, "actor %s: %u requests still pending\n",
			a->name, ioloop_pending_count(a->loop));
	else
		ioloop_destroy(&a->loop);
	return NULL;
}

struct call {
	void (*fn)(void *arg);
	void *arg;
	bool done;
};

static void call_run(void *context)
{
	struct call *call = context;

	call->fn(call->arg);
	pthread_mutex_lock(&t_mutex);
	call->done = true;
	pthread_cond_broadcast(&t_cond);
	pthread_mutex_unlock(&t_mutex);
}

/* actor_call - run fn(arg) on the actor's loop thread and wait for it */
static void actor_call(struct actor *a, void (*fn)(void *arg), void *arg)
{
	struct call call = { fn, arg, false };
	struct timespec deadline = deadline_ts(WAIT_MSECS);
	int ret = 0;

	ioloop_post(a->loop, call_run, &call);
	pthread_mutex_lock(&t_mutex);
	while (!call.done && ret == 0)
		ret = pthread_cond_timedwait(&t_cond, &t_mutex, &deadline);
	pthread_mutex_unlock(&t_mutex);
	/* A call stuck on its loop would be a bug elsewhere; do not return
	   while the loop may still touch our stack frame. */
	if (!call.done)
		log_panic("test: call on %s did not run within %d ms",
			  a->name, WAIT_MSECS);
}

/* ---- environment ---- */

static void env_make_dir(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/t-XXXXXX", base_dir);
	ck_assert_ptr_nonnull(mkdtemp(path));
	env.dir = mem_strdup(path);
}

static void client_create_run(void *arg ATTR_UNUSED)
{
	struct lock_client_settings set = {
		.backend = env.bc->backend,
		.spool_dir = env.dir,
		.dispatch_loop = env.actors[0].loop,
		.pool = env.pool,
		.default_timeout_msecs = 10000,
	};
	char *error = NULL;

	env.client = lock_client_create(&set, &error);
	if (env.client == NULL)
		fprintf(stderr, "lock_client_create(%s): %s\n", env.bc->name,
			error);
	free(error);
}

/* env_start - pool, actors, and a client on actor 0 */
static void env_start(void)
{
	struct timespec deadline = deadline_ts(WAIT_MSECS);

	env.pool = iopool_create(2);
	for (int i = 0; i < ACTOR_COUNT; i++) {
		struct actor *a = &env.actors[i];

		snprintf(a->name, sizeof(a->name), "actor-%d", i);
		ck_assert_int_eq(pthread_create(&a->thread, NULL, actor_main, a), 0);
	}
	pthread_mutex_lock(&t_mutex);
	for (int i = 0; i < ACTOR_COUNT; i++) {
		while (!env.actors[i].ready &&
		       pthread_cond_timedwait(&t_cond, &t_mutex, &deadline) == 0) ;
		ck_assert(env.actors[i].ready);
	}
	pthread_mutex_unlock(&t_mutex);
	actor_call(&env.actors[0], client_create_run, NULL);
	ck_assert_ptr_nonnull(env.client);
	ck_assert_str_eq(lock_client_backend_name(env.client), env.bc->name);
}

static void env_setup(int backend)
{
	memset(&env, 0, sizeof(env));
	env.bc = &backend_cases[backend];
	env_make_dir();
	env_start();
}

static void client_destroy_run(void *arg ATTR_UNUSED)
{
	lock_client_destroy(&env.client);
}

static int remove_entry(const char *path, const struct stat *st ATTR_UNUSED,
			int flag ATTR_UNUSED, struct FTW *ftw ATTR_UNUSED)
{
	return remove(path);
}

static void env_teardown(void)
{
	if (env.client != NULL)
		actor_call(&env.actors[0], client_destroy_run, NULL);
	ck_assert_ptr_null(env.client);
	for (int i = 0; i < ACTOR_COUNT; i++) {
		if (env.actors[i].loop == NULL)
			continue;
		ioloop_stop_async(env.actors[i].loop);
		pthread_join(env.actors[i].thread, NULL);
		ck_assert_ptr_null(env.actors[i].loop);
	}
	iopool_destroy(&env.pool);
	nftw(env.dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(env.dir);
	memset(&env, 0, sizeof(env));
}

/* ---- requests ---- */

static void lock_done(struct lock *lock, int result, void *context)
{
	struct req *r = context;

	pthread_mutex_lock(&t_mutex);
	ck_assert_ptr_eq(lock, r->lock);
	r->calls++;
	r->result = result;
	r->callback_tid = gettid();
	r->inside_acquire = r->inside_acquire || r->in_acquire;
	r->seq = ++t_seq;
	pthread_cond_broadcast(&t_cond);
	pthread_mutex_unlock(&t_mutex);
}

static void lock_blocked(struct lock *lock, enum lock_mode wanted,
			 void *context)
{
	struct req *r = context;

	pthread_mutex_lock(&t_mutex);
	ck_assert_ptr_eq(lock, r->lock);
	r->blocking_calls++;
	r->blocking_wanted = wanted;
	r->blocking_tid = gettid();
	pthread_cond_broadcast(&t_cond);
	pthread_mutex_unlock(&t_mutex);
}

/* req_init - a fresh handle on name, used from actor number actor */
static void req_init(struct req *r, const char *name, int actor)
{
	memset(r, 0, sizeof(*r));
	r->actor = &env.actors[actor];
	r->lock = lock_create(env.client, name, LOCK_CLASS_OTHER);
}

/* unique_name - a resource name no other test (or earlier run) used */
static void unique_name(char *buf, size_t size, const char *what)
{
	snprintf(buf, size, "t:%s-%ld-%u-%ld", what, (long)getpid(),
		 env.name_counter++, (long)time(NULL));
}

struct acquire_args {
	struct req *r;
	enum lock_mode mode;
	unsigned int flags;
	uint64_t timeout_msecs;
};

static void acquire_run(void *arg)
{
	struct acquire_args *args = arg;
	struct req *r = args->r;

	r->in_acquire = true;
	lock_acquire(r->lock, r->actor->loop, args->mode, args->flags,
		     args->timeout_msecs, lock_done, r);
	r->in_acquire = false;
}

/* start - lock_acquire() on the request's actor, without waiting */
static void start(struct req *r, enum lock_mode mode, unsigned int flags,
		  uint64_t timeout_msecs)
{
	struct acquire_args args = { r, mode, flags, timeout_msecs };

	actor_call(r->actor, acquire_run, &args);
}

/* wait_calls - wait until r has had count callbacks; false on deadline */
static bool wait_calls(struct req *r, int count, unsigned int msecs)
{
	struct timespec deadline = deadline_ts(msecs);
	bool ok;

	pthread_mutex_lock(&t_mutex);
	while (r->calls < count &&
	       pthread_cond_timedwait(&t_cond, &t_mutex, &deadline) == 0) ;
	ok = r->calls >= count;
	pthread_mutex_unlock(&t_mutex);
	return ok;
}

static int calls_of(struct req *r)
{
	int calls;

	pthread_mutex_lock(&t_mutex);
	calls = r->calls;
	pthread_mutex_unlock(&t_mutex);
	return calls;
}

/* acquire - start and wait for the result (exactly one callback) */
static int acquire(struct req *r, enum lock_mode mode, unsigned int flags,
		   uint64_t timeout_msecs)
{
	int before = calls_of(r);

	start(r, mode, flags, timeout_msecs);
	ck_assert_msg(wait_calls(r, before + 1, WAIT_MSECS),
		      "%s: no lock callback within %d ms", env.bc->name,
		      WAIT_MSECS);
	ck_assert_int_eq(calls_of(r), before + 1);
	ck_assert(!r->inside_acquire);
	ck_assert_int_eq(r->callback_tid, r->actor->tid);
	return r->result;
}

static void release_run(void *arg)
{
	struct req *r = arg;

	lock_release(r->lock);
}

static void release(struct req *r)
{
	actor_call(r->actor, release_run, r);
}

/* release_seq - release; returns an event number taken just before it
   (the waiter's grant may run on its own thread before we return) */
static unsigned int release_seq(struct req *r)
{
	unsigned int seq;

	pthread_mutex_lock(&t_mutex);
	seq = ++t_seq;
	pthread_mutex_unlock(&t_mutex);
	release(r);
	return seq;
}

static void cancel_run(void *arg)
{
	struct req *r = arg;

	lock_cancel(r->lock);
}

static void destroy_run(void *arg)
{
	struct req *r = arg;

	lock_destroy(&r->lock);
}

static void destroy(struct req *r)
{
	if (r->lock != NULL)
		actor_call(r->actor, destroy_run, r);
	ck_assert_ptr_null(r->lock);
}

struct value_args {
	struct req *r;
	uint8_t value[LOCK_VALUE_SIZE];
};

static void value_set_run(void *arg)
{
	struct value_args *args = arg;

	lock_value_set(args->r->lock, args->value);
}

static void value_set(struct req *r, uint8_t fill)
{
	struct value_args args = { .r = r };

	memset(args.value, fill, sizeof(args.value));
	actor_call(r->actor, value_set_run, &args);
}

/* value_is - does r's value read as LOCK_VALUE_SIZE bytes of fill? */
static bool value_is(struct req *r, uint8_t fill)
{
	const uint8_t *value = lock_value(r->lock);

	for (size_t i = 0; i < LOCK_VALUE_SIZE; i++) {
		if (value[i] != fill)
			return false;
	}
	return true;
}

static void blocking_set_run(void *arg)
{
	struct req *r = arg;

	lock_set_blocking_callback(r->lock, lock_blocked, r);
}

/* ---- behaviour, every backend ---- */

START_TEST(test_pr_shared)
{
	struct req a, b;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "shared");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_PR);
	ck_assert_int_eq(lock_get_mode(b.lock), LOCK_MODE_PR);
	ck_assert_str_eq(lock_get_name(a.lock), name);
	ck_assert(!lock_is_pending(b.lock));
	/* Acquiring the mode already held succeeds at once. */
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), 0);
	destroy(&a);
	destroy(&b);
	env_teardown();
}
END_TEST

START_TEST(test_ex_excludes)
{
	struct req a, b, c;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "excl");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	/* Two handles on one loop conflict too: handles hold locks. */
	req_init(&c, name, 0);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(acquire(&c, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(lock_get_mode(b.lock), LOCK_MODE_NONE);
	release(&a);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert_int_eq(acquire(&c, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), 0);
	destroy(&a);
	destroy(&b);
	destroy(&c);
	env_teardown();
}
END_TEST

START_TEST(test_waiter_granted_after_release)
{
	struct req holder, waiter;
	char name[LOCK_NAME_MAX + 1];
	unsigned int released;

	env_setup(_i);
	unique_name(name, sizeof(name), "wait");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	start(&waiter, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&waiter, 1, SETTLE_MSECS));
	ck_assert(lock_is_pending(waiter.lock));

	released = release_seq(&holder);
	ck_assert(wait_calls(&waiter, 1, WAIT_MSECS));
	ck_assert_int_eq(waiter.result, 0);
	ck_assert_uint_gt(waiter.seq, released);
	/* On the waiter's own loop, never inside lock_acquire(). */
	ck_assert_int_eq(waiter.callback_tid, env.actors[1].tid);
	ck_assert(!waiter.inside_acquire);
	ck_assert_int_eq(lock_get_mode(waiter.lock), LOCK_MODE_EX);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0),
			 -EAGAIN);
	destroy(&holder);
	destroy(&waiter);
	env_teardown();
}
END_TEST

START_TEST(test_timeout)
{
	struct req holder, waiter;
	char name[LOCK_NAME_MAX + 1];
	uint64_t start_msecs, elapsed;

	env_setup(_i);
	unique_name(name, sizeof(name), "timeout");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	start_msecs = ioloop_now_msecs();
	ck_assert_int_eq(acquire(&waiter, LOCK_MODE_PR, 0, 150), -ETIMEDOUT);
	elapsed = ioloop_now_msecs() - start_msecs;
	ck_assert_uint_ge(elapsed, 145);
	ck_assert_uint_lt(elapsed, 3000);
	ck_assert_int_eq(lock_get_mode(waiter.lock), LOCK_MODE_NONE);
	/* Nothing more arrives, and the handle can be used again at once. */
	ck_assert(!wait_calls(&waiter, 2, SETTLE_MSECS));
	release(&holder);
	ck_assert_int_eq(acquire(&waiter, LOCK_MODE_PR, 0, 0), 0);
	destroy(&holder);
	destroy(&waiter);
	env_teardown();
}
END_TEST

START_TEST(test_cancel)
{
	struct req holder, waiter;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "cancel");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	start(&waiter, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&waiter, 1, SETTLE_MSECS));
	actor_call(waiter.actor, cancel_run, &waiter);
	ck_assert(wait_calls(&waiter, 1, WAIT_MSECS));
	ck_assert_int_eq(waiter.result, -ECANCELED);
	ck_assert(!waiter.inside_acquire);
	/* A second cancel is a no-op; releasing the holder grants nothing. */
	actor_call(waiter.actor, cancel_run, &waiter);
	release(&holder);
	ck_assert(!wait_calls(&waiter, 2, SETTLE_MSECS));
	ck_assert_int_eq(lock_get_mode(waiter.lock), LOCK_MODE_NONE);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), 0);
	destroy(&holder);
	destroy(&waiter);
	env_teardown();
}
END_TEST

START_TEST(test_destroy_pending)
{
	struct req holder, waiter, third;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "destroy");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	req_init(&third, name, 2);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	start(&waiter, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&waiter, 1, SETTLE_MSECS));
	destroy(&waiter);
	release(&holder);
	ck_assert(!wait_calls(&waiter, 1, SETTLE_MSECS));
	/* The destroyed waiter left nothing behind on the resource. */
	ck_assert_int_eq(acquire(&third, LOCK_MODE_EX, 0, 0), 0);
	/* Destroying a holder releases it. */
	destroy(&third);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	destroy(&holder);
	env_teardown();
}
END_TEST

START_TEST(test_convert)
{
	struct req a, b;
	char name[LOCK_NAME_MAX + 1];
	int calls;

	env_setup(_i);
	unique_name(name, sizeof(name), "convert");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	/* PR -> EX alone, EX -> PR, then a reader shares. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_EX);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_PR);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, 0), 0);

	/* A refused conversion keeps the old mode. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_PR);

	/* A waiting conversion is granted when the other reader leaves. */
	calls = calls_of(&a);
	start(&a, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&a, calls + 1, SETTLE_MSECS));
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_PR);
	release(&b);
	ck_assert(wait_calls(&a, calls + 1, WAIT_MSECS));
	ck_assert_int_eq(a.result, 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_EX);

	/* EX -> PR lets a waiting reader in. */
	calls = calls_of(&b);
	start(&b, LOCK_MODE_PR, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&b, calls + 1, SETTLE_MSECS));
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(wait_calls(&b, calls + 1, WAIT_MSECS));
	ck_assert_int_eq(b.result, 0);
	destroy(&a);
	destroy(&b);
	env_teardown();
}
END_TEST

START_TEST(test_convert_deadlock)
{
	struct req a, b;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "deadlock");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, 0), 0);
	start(&a, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&a, 2, SETTLE_MSECS));
	/* The second upgrader is refused at once, well before a timeout,
	   and keeps its PR. */
	ck_assert_int_eq(acquire(&b, LOCK_MODE_EX, 0, WAIT_MSECS), -EDEADLK);
	ck_assert_int_eq(lock_get_mode(b.lock), LOCK_MODE_PR);
	ck_assert_int_eq(calls_of(&a), 1);
	release(&b);
	ck_assert(wait_calls(&a, 2, WAIT_MSECS));
	ck_assert_int_eq(a.result, 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_EX);
	destroy(&a);
	destroy(&b);
	env_teardown();
}
END_TEST

START_TEST(test_value_block)
{
	struct req a, b;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "value");
	req_init(&a, name, 0);
	req_init(&b, name, 1);

	/* Never written: zeroes, and (except dlm) not valid. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	ck_assert(value_is(&a, 0));
	if (env.bc->fresh_value_invalid)
		ck_assert(!lock_value_is_valid(a.lock));
	value_set(&a, 0x5a);
	release(&a);

	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(lock_value_is_valid(b.lock));
	ck_assert(value_is(&b, 0x5a));
	release(&b);

	/* EX without lock_value_set() leaves the value as it was. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	ck_assert(lock_value_is_valid(a.lock));
	ck_assert(value_is(&a, 0x5a));
	release(&a);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(lock_value_is_valid(b.lock));
	ck_assert(value_is(&b, 0x5a));
	release(&b);

	/* Down-conversion stores it: the converter and a new reader see it. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	value_set(&a, 0xc3);
	ck_assert(value_is(&a, 0x5a));	/* still the value read at grant */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(value_is(&a, 0xc3));
	ck_assert(lock_value_is_valid(a.lock));
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(value_is(&b, 0xc3));
	destroy(&a);
	destroy(&b);
	env_teardown();
}
END_TEST

START_TEST(test_stats)
{
	struct req holder, waiter;
	struct lock_stats before, after;
	char name[LOCK_NAME_MAX + 1];
	uint64_t bucket_delta = 0;

	env_setup(_i);
	unique_name(name, sizeof(name), "stats");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	lock_get_stats(&before);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_EX, 0, 0), 0);
	ck_assert_int_eq(acquire(&waiter, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(acquire(&waiter, LOCK_MODE_EX, 0, 60), -ETIMEDOUT);
	start(&waiter, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&waiter, 3, 30));
	release(&holder);
	ck_assert(wait_calls(&waiter, 3, WAIT_MSECS));
	ck_assert_int_eq(waiter.result, 0);
	lock_get_stats(&after);

	ck_assert_uint_ge(after.grants - before.grants, 2);
	ck_assert_uint_ge(after.waits - before.waits, 1);
	ck_assert_uint_ge(after.busy - before.busy, 1);
	ck_assert_uint_ge(after.timeouts - before.timeouts, 1);
	ck_assert_uint_ge(after.wait_msecs_total - before.wait_msecs_total, 25);
	for (unsigned int i = 0; i < LOCK_WAIT_BUCKETS; i++)
		bucket_delta += after.wait_buckets[i] - before.wait_buckets[i];
	ck_assert_uint_eq(bucket_delta, after.grants - before.grants);
	ck_assert_uint_eq(after.errors, before.errors);
	destroy(&holder);
	destroy(&waiter);
	env_teardown();
}
END_TEST

START_TEST(test_blocking_callback)
{
	struct req holder, waiter;
	struct lock_stats before, after;
	char name[LOCK_NAME_MAX + 1];
	struct timespec deadline;

	env_setup(_i);
	unique_name(name, sizeof(name), "blocking");
	req_init(&holder, name, 0);
	req_init(&waiter, name, 1);
	actor_call(holder.actor, blocking_set_run, &holder);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_PR, 0, 0), 0);
	lock_get_stats(&before);
	start(&waiter, LOCK_MODE_EX, 0, WAIT_MSECS);

	deadline = deadline_ts(env.bc->blocking_callbacks ? WAIT_MSECS :
			       SETTLE_MSECS);
	pthread_mutex_lock(&t_mutex);
	while (holder.blocking_calls == 0 &&
	       pthread_cond_timedwait(&t_cond, &t_mutex, &deadline) == 0) ;
	pthread_mutex_unlock(&t_mutex);
	if (env.bc->blocking_callbacks) {
		ck_assert_int_eq(holder.blocking_calls, 1);
		ck_assert_int_eq(holder.blocking_wanted, LOCK_MODE_EX);
		ck_assert_int_eq(holder.blocking_tid, env.actors[0].tid);
		lock_get_stats(&after);
		ck_assert_uint_ge(after.blocking_callbacks - before.blocking_callbacks, 1);
	} else {
		ck_assert_int_eq(holder.blocking_calls, 0);
	}
	release(&holder);
	ck_assert(wait_calls(&waiter, 1, WAIT_MSECS));
	ck_assert_int_eq(waiter.result, 0);
	destroy(&holder);
	destroy(&waiter);
	env_teardown();
}
END_TEST

/* ---- lock caching (lock_release_cached) ---- */

struct cached_args {
	struct req *r;
	uint64_t hold_msecs;
	bool cached;		/* out: lock_is_cached() afterwards */
	enum lock_mode mode;	/* out: lock_get_mode() afterwards */
};

static void release_cached_run(void *arg)
{
	struct cached_args *args = arg;

	lock_release_cached(args->r->lock, args->hold_msecs);
	args->cached = lock_is_cached(args->r->lock);
	args->mode = lock_get_mode(args->r->lock);
}

/* release_cached - lock_release_cached(); true if the lock was kept */
static bool release_cached(struct req *r, uint64_t hold_msecs)
{
	struct cached_args args = { .r = r, .hold_msecs = hold_msecs };

	actor_call(r->actor, release_cached_run, &args);
	/* A cached lock reads as not held, whatever the backend keeps. */
	ck_assert_int_eq(args.mode, LOCK_MODE_NONE);
	return args.cached;
}

static void is_cached_run(void *arg)
{
	struct cached_args *args = arg;

	args->cached = lock_is_cached(args->r->lock);
}

static bool is_cached(struct req *r)
{
	struct cached_args args = { .r = r };

	actor_call(r->actor, is_cached_run, &args);
	return args.cached;
}

/* The next acquire in the same mode is served from the cache, and the
   value block reads as the holder left it. */
START_TEST(test_cache_reuse)
{
	struct req a, b;
	struct lock_stats before, after;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	unique_name(name, sizeof(name), "cache");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	ck_assert(lock_client_can_cache(env.client) ==
		  env.bc->blocking_callbacks);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	value_set(&a, 0x5a);
	lock_get_stats(&before);
	ck_assert(release_cached(&a, 0) == env.bc->blocking_callbacks);
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	lock_get_stats(&after);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_EX);
	ck_assert(value_is(&a, 0x5a));
	ck_assert_uint_eq(after.cache_hits - before.cache_hits,
			  env.bc->blocking_callbacks ? 1 : 0);
	/* Cached again and then wanted: given up, and the value the EX
	   holder set is what the next holder reads. */
	value_set(&a, 0x6b);
	release_cached(&a, 0);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_PR, 0, WAIT_MSECS), 0);
	ck_assert(value_is(&b, 0x6b));
	ck_assert(!is_cached(&a));
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_NONE);
	/* With b holding PR, a cached PR of a is shared, not given up. */
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	release_cached(&a, 0);
	ck_assert(!wait_calls(&b, 2, SETTLE_MSECS));
	ck_assert(is_cached(&a) == env.bc->blocking_callbacks);
	destroy(&a);
	destroy(&b);
	env_teardown();
}
END_TEST

/* A cached lock that someone wants is kept for its minimum hold time
   after its grant, then given up; one that is in use when wanted is
   released, not cached, by its next lock_release_cached(). */
START_TEST(test_cache_min_hold)
{
	struct req a, b;
	struct lock_stats before, after;
	char name[LOCK_NAME_MAX + 1];
	uint64_t start_msecs, waited;

	env_setup(_i);
	if (!env.bc->blocking_callbacks) {
		env_teardown();
		return;
	}
	unique_name(name, sizeof(name), "hold");
	req_init(&a, name, 0);
	req_init(&b, name, 1);
	lock_get_stats(&before);
	start_msecs = ioloop_now_msecs();
	ck_assert_int_eq(acquire(&a, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(release_cached(&a, 400));
	start(&b, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&b, 1, 150));
	ck_assert(wait_calls(&b, 1, WAIT_MSECS));
	waited = ioloop_now_msecs() - start_msecs;
	ck_assert_int_eq(b.result, 0);
	ck_assert_uint_ge(waited, 390);
	ck_assert(!is_cached(&a));
	lock_get_stats(&after);
	ck_assert_uint_ge(after.cache_drops - before.cache_drops, 1);
	ck_assert_uint_ge(after.blocking_callbacks - before.blocking_callbacks, 1);

	/* a waits for b; b is wanted while in use, so b's cached release
	   is a real one and a is granted at once. */
	start(&a, LOCK_MODE_PR, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&a, 2, SETTLE_MSECS));
	ck_assert(!release_cached(&b, 10000));
	ck_assert(wait_calls(&a, 2, WAIT_MSECS));
	ck_assert_int_eq(a.result, 0);

	/* An acquire in the other mode gives up the cached lock and asks
	   anew (no conversion of a cached lock). */
	ck_assert(release_cached(&a, 0));
	ck_assert_int_eq(acquire(&a, LOCK_MODE_EX, 0, 0), 0);
	ck_assert_int_eq(lock_get_mode(a.lock), LOCK_MODE_EX);
	/* Destroying a cached lock frees the resource. */
	ck_assert(release_cached(&a, 10000));
	destroy(&a);
	ck_assert_int_eq(acquire(&b, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0), 0);
	destroy(&b);
	env_teardown();
}
END_TEST

/* FIFO: a reader behind a queued writer waits, then readers share. */
START_TEST(test_fifo)
{
	struct req holder, writer, reader1, reader2;
	char name[LOCK_NAME_MAX + 1];

	env_setup(_i);
	if (!env.bc->fifo) {
		env_teardown();
		return;
	}
	unique_name(name, sizeof(name), "fifo");
	req_init(&holder, name, 0);
	req_init(&writer, name, 1);
	req_init(&reader1, name, 2);
	req_init(&reader2, name, 0);
	ck_assert_int_eq(acquire(&holder, LOCK_MODE_PR, 0, 0), 0);
	start(&writer, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&writer, 1, SETTLE_MSECS));
	start(&reader1, LOCK_MODE_PR, 0, WAIT_MSECS);
	start(&reader2, LOCK_MODE_PR, 0, WAIT_MSECS);
	/* Compatible with the holder, but behind the writer. */
	ck_assert(!wait_calls(&reader1, 1, SETTLE_MSECS));
	release(&holder);
	ck_assert(wait_calls(&writer, 1, WAIT_MSECS));
	ck_assert_int_eq(writer.result, 0);
	ck_assert(!wait_calls(&reader1, 1, SETTLE_MSECS));
	release(&writer);
	ck_assert(wait_calls(&reader1, 1, WAIT_MSECS));
	ck_assert(wait_calls(&reader2, 1, WAIT_MSECS));
	ck_assert_int_eq(reader1.result, 0);
	ck_assert_int_eq(reader2.result, 0);
	destroy(&holder);
	destroy(&writer);
	destroy(&reader1);
	destroy(&reader2);
	env_teardown();
}
END_TEST

/* ---- client errors ---- */

START_TEST(test_client_errors)
{
	struct lock_client_settings set = { .backend = SETTINGS_LOCK_FCNTL };
	char path[160], *error = NULL;
	int fd;

	ck_assert_ptr_null(lock_client_create(&set, &error));
	ck_assert_str_eq(error, "fcntl lock backend: spool_dir is not set");
	free(error);

	/* A spool that is a file: no .locks directory can exist there
	   (this fails even for root, unlike a read-only directory). */
	snprintf(path, sizeof(path), "%s/not-a-dir", base_dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	set.spool_dir = path;
	ck_assert_ptr_null(lock_client_create(&set, &error));
	ck_assert_msg(strstr(error, "cannot create") != NULL &&
		      strstr(error, "not-a-dir/.locks") != NULL, "%s", error);
	free(error);
	unlink(path);

	if (access(DLM_CONTROL_DEVICE, F_OK) < 0) {
		set.backend = SETTINGS_LOCK_DLM;
		set.dispatch_loop = (struct ioloop *)1;	/* never used */
		ck_assert_ptr_null(lock_client_create(&set, &error));
		ck_assert_msg(strstr(error, "dlm lock backend") != NULL, "%s", error);
		free(error);
	}
}
END_TEST

/* ---- fcntl across processes ---- */

#define XPROC_VALUE 0x77

struct child_state {
	struct ioloop *loop;
	int result;
	bool done;
};

static void child_lock_done(struct lock *lock ATTR_UNUSED, int result,
			    void *context)
{
	struct child_state *cs = context;

	cs->result = result;
	cs->done = true;
	ioloop_stop(cs->loop);
}

/* child_acquire_ex - the child's EX, waiting on its own loop */
static int child_acquire_ex(struct child_state *cs, struct lock *lock)
{
	cs->done = false;
	lock_acquire(lock, cs->loop, LOCK_MODE_EX, 0, WAIT_MSECS,
		     child_lock_done, cs);
	while (!cs->done)
		ioloop_run(cs->loop);
	return cs->result;
}

/* child_main - obey one-byte commands: L(ock EX), V(alue), R(elease),
   anything else or EOF: exit. Acks every command. */
static void ATTR_NORETURN child_main(const char *spool, const char *name,
				     int cmd_fd, int ack_fd)
{
	struct lock_client_settings set = {
		.backend = SETTINGS_LOCK_FCNTL, .spool_dir = spool,
	};
	struct child_state cs = { 0 };
	struct ioloop_settings loop_set = { .name = "child" };
	uint8_t value[LOCK_VALUE_SIZE];
	struct lock_client *client;
	struct lock *lock;
	char *error = NULL, cmd, ack;

	/* Die with the test, whatever happens to it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	loop_set.pool = iopool_create(1);
	cs.loop = ioloop_create(&loop_set);
	if ((client = lock_client_create(&set, &error)) == NULL)
		_exit(2);
	lock = lock_create(client, name, LOCK_CLASS_OTHER);
	memset(value, XPROC_VALUE, sizeof(value));
	while (read(cmd_fd, &cmd, 1) == 1) {
		ack = (char)(cmd + 32);
		if (cmd == 'L' && child_acquire_ex(&cs, lock) != 0)
			ack = 'e';
		else if (cmd == 'V')
			lock_value_set(lock, value);
		else if (cmd == 'R')
			lock_release(lock);
		else if (cmd != 'L')
			break;
		if (write(ack_fd, &ack, 1) != 1)
			break;
	}
	_exit(0);
}

/* child_command - send cmd, expect its acknowledgement */
static void child_command(int cmd_fd, int ack_fd, char cmd)
{
	char ack = 0;

	ck_assert_int_eq(write(cmd_fd, &cmd, 1), 1);
	ck_assert_int_eq(read(ack_fd, &ack, 1), 1);
	ck_assert_int_eq(ack, cmd + 32);
}

START_TEST(test_fcntl_cross_process)
{
	int cmd_pipe[2], ack_pipe[2], status;
	struct req r;
	pid_t pid;
	const char *name = "x:shared";

	/* _i = 0: the invalidation marker durable (as on shared file
	   systems), 1: not (local file systems). */
	setenv("CLUSTERMAIL_FCNTL_DURABLE", _i == 0 ? "1" : "0", 1);
	memset(&env, 0, sizeof(env));
	env.bc = &backend_cases[BACKEND_FCNTL];
	env_make_dir();
	ck_assert_int_eq(pipe2(cmd_pipe, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(ack_pipe, O_CLOEXEC), 0);
	/* Fork before any thread exists. */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		close(cmd_pipe[1]);
		close(ack_pipe[0]);
		child_main(env.dir, name, cmd_pipe[0], ack_pipe[1]);
	}
	close(cmd_pipe[0]);
	close(ack_pipe[1]);
	env_start();
	req_init(&r, name, 1);

	/* The child's EX keeps us out, then lets us in on release. */
	child_command(cmd_pipe[1], ack_pipe[0], 'L');
	ck_assert_int_eq(acquire(&r, LOCK_MODE_PR, LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	start(&r, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&r, 2, SETTLE_MSECS));
	child_command(cmd_pipe[1], ack_pipe[0], 'V');
	child_command(cmd_pipe[1], ack_pipe[0], 'R');
	ck_assert(wait_calls(&r, 2, WAIT_MSECS));
	ck_assert_int_eq(r.result, 0);
	ck_assert(lock_value_is_valid(r.lock));
	ck_assert(value_is(&r, XPROC_VALUE));
	release(&r);
	/* A reader after a finished EX holder finds the value valid. */
	ck_assert_int_eq(acquire(&r, LOCK_MODE_PR, 0, WAIT_MSECS), 0);
	ck_assert(lock_value_is_valid(r.lock));
	ck_assert(value_is(&r, XPROC_VALUE));
	release(&r);

	/* The child takes EX again and dies holding it: the kernel drops
	   its lock, and the value it may have been changing is invalid. */
	child_command(cmd_pipe[1], ack_pipe[0], 'L');
	start(&r, LOCK_MODE_EX, 0, WAIT_MSECS);
	ck_assert(!wait_calls(&r, 4, SETTLE_MSECS));
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	ck_assert(wait_calls(&r, 4, WAIT_MSECS));
	ck_assert_int_eq(r.result, 0);
	ck_assert(!lock_value_is_valid(r.lock));
	ck_assert(value_is(&r, 0));

	close(cmd_pipe[1]);
	close(ack_pipe[0]);
	destroy(&r);
	env_teardown();
	unsetenv("CLUSTERMAIL_FCNTL_DURABLE");
}
END_TEST

/* A damaged or short lock file reads as "value not valid". */
START_TEST(test_fcntl_damaged_record)
{
	struct req r;
	char path[256];
	int fd;

	env_setup(BACKEND_FCNTL);
	req_init(&r, "d:amaged", 0);
	ck_assert_int_eq(acquire(&r, LOCK_MODE_EX, 0, 0), 0);
	value_set(&r, 0x11);
	release(&r);
	ck_assert_int_eq(acquire(&r, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(lock_value_is_valid(r.lock));
	release(&r);

	/* "d:amaged" as a file name: ':' is encoded. */
	snprintf(path, sizeof(path), "%s/.locks/d%%3Aamaged", env.dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "X", 1, 20), 1);	/* flip a value byte */
	close(fd);
	ck_assert_int_eq(acquire(&r, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(!lock_value_is_valid(r.lock));
	ck_assert(value_is(&r, 0));
	release(&r);

	ck_assert_int_eq(truncate(path, 10), 0);
	ck_assert_int_eq(acquire(&r, LOCK_MODE_PR, 0, 0), 0);
	ck_assert(!lock_value_is_valid(r.lock));
	destroy(&r);
	env_teardown();
}
END_TEST

/* ---- names ---- */

static void assert_name_ok(const char *name)
{
	size_t len = strlen(name);

	ck_assert_uint_ge(len, 1);
	ck_assert_uint_le(len, LOCK_NAME_MAX);
	for (size_t i = 0; i < len; i++)
		ck_assert(name[i] > 0x20 && name[i] < 0x7f);
}

START_TEST(test_names_readable)
{
	char name[LOCK_NAME_MAX + 1];

	lock_name_user("alice@example.com", name);
	ck_assert_str_eq(name, "u:alice@example.com");
	lock_name_mailbox("alice@example.com", "INBOX/Sub.Folder", name);
	ck_assert_str_eq(name, "m:alice@example.com/INBOX/Sub.Folder");
	lock_name_queue("1a2b3c-node1", name);
	ck_assert_str_eq(name, "q:1a2b3c-node1");
	lock_name_mailbox("bob", "", name);
	ck_assert_str_eq(name, "m:bob/");
}
END_TEST

START_TEST(test_names_hashed)
{
	char long_user[200], a[LOCK_NAME_MAX + 1], b[LOCK_NAME_MAX + 1];

	memset(long_user, 'x', sizeof(long_user) - 1);
	long_user[sizeof(long_user) - 1] = '\0';
	lock_name_user(long_user, a);
	assert_name_ok(a);
	ck_assert(strncmp(a, "u:~", 3) == 0);
	lock_name_user(long_user, b);
	ck_assert_str_eq(a, b);		/* deterministic */
	long_user[100] = 'y';
	lock_name_user(long_user, b);
	ck_assert_str_ne(a, b);

	/* Odd bytes, spaces, the hash marker: hashed, still valid names. */
	lock_name_user("a b", a);
	assert_name_ok(a);
	ck_assert(strncmp(a, "u:~", 3) == 0);
	lock_name_user("\xc3\xa9t\xc3\xa9", b);
	assert_name_ok(b);
	ck_assert_str_ne(a, b);
	lock_name_user("~x", a);
	ck_assert(strncmp(a, "u:~", 3) == 0);
	ck_assert_str_ne(a, "u:~x");
	lock_name_mailbox("alice", "Sent Items", a);
	assert_name_ok(a);
	ck_assert(strncmp(a, "m:~", 3) == 0);

	/* The user/mailbox split is unambiguous. */
	lock_name_mailbox("a", "b/c", a);
	lock_name_mailbox("a/b", "c", b);
	ck_assert_str_ne(a, b);
	ck_assert_str_eq(a, "m:a/b/c");
	ck_assert(strncmp(b, "m:~", 3) == 0);

	/* Same input, different kinds: different names. */
	lock_name_user(long_user, a);
	lock_name_queue(long_user, b);
	ck_assert_str_ne(a + 2, b + 2);

	/* Exactly at the limit stays readable; one more is hashed. */
	memset(long_user, 'q', LOCK_NAME_MAX - 2);
	long_user[LOCK_NAME_MAX - 2] = '\0';
	lock_name_queue(long_user, a);
	ck_assert_uint_eq(strlen(a), LOCK_NAME_MAX);
	ck_assert(a[2] == 'q');
	long_user[LOCK_NAME_MAX - 2] = 'q';
	long_user[LOCK_NAME_MAX - 1] = '\0';
	lock_name_queue(long_user, a);
	ck_assert(strncmp(a, "q:~", 3) == 0);

	ck_assert_uint_eq(lock_wait_bucket_limit(0), 1);
	ck_assert_uint_eq(lock_wait_bucket_limit(LOCK_WAIT_BUCKETS - 1), UINT64_MAX);
}
END_TEST

/* ---- lock order (debug builds) ---- */

struct order_args {
	struct lock *lock;
	enum lock_mode mode;
	const void *owner;
};

static void order_done(struct lock *lock ATTR_UNUSED, int result,
		       void *context)
{
	int *result_r = context;

	pthread_mutex_lock(&t_mutex);
	*result_r = result;
	pthread_cond_broadcast(&t_cond);
	pthread_mutex_unlock(&t_mutex);
}

static int order_result;

static void order_acquire_run(void *arg)
{
	struct order_args *args = arg;

	if (lock_get_mode(args->lock) == LOCK_MODE_NONE)
		lock_set_owner(args->lock, args->owner);
	lock_acquire(args->lock, env.actors[0].loop, args->mode, 0, 0,
		     order_done, &order_result);
}

/* order_acquire - acquire on actor 0 and wait for the grant */
static void order_acquire(struct lock *lock, enum lock_mode mode,
			  const void *owner)
{
	struct order_args args = { lock, mode, owner };
	struct timespec deadline = deadline_ts(WAIT_MSECS);

	order_result = 1;
	actor_call(&env.actors[0], order_acquire_run, &args);
	pthread_mutex_lock(&t_mutex);
	while (order_result == 1 &&
	       pthread_cond_timedwait(&t_cond, &t_mutex, &deadline) == 0) ;
	pthread_mutex_unlock(&t_mutex);
	ck_assert_int_eq(order_result, 0);
}

struct order_locks {
	struct lock *user, *mailbox, *queue;
};

static void order_destroy_run(void *arg)
{
	struct order_locks *locks = arg;

	lock_destroy(&locks->user);
	lock_destroy(&locks->mailbox);
	lock_destroy(&locks->queue);
}

static void order_create(struct order_locks *locks)
{
	locks->user = lock_create(env.client, "u:order", LOCK_CLASS_USER);
	locks->mailbox = lock_create(env.client, "m:order/INBOX",
				     LOCK_CLASS_MAILBOX);
	locks->queue = lock_create(env.client, "q:order", LOCK_CLASS_QUEUE);
}

START_TEST(test_lock_order_allowed)
{
	struct order_locks locks;
	int owner_a = 0, owner_b = 0;	/* only their addresses matter */

	env_setup(BACKEND_LOCAL);
	order_create(&locks);
	/* In order, then a conversion of an already held lower class. */
	order_acquire(locks.user, LOCK_MODE_PR, NULL);
	order_acquire(locks.mailbox, LOCK_MODE_EX, NULL);
	order_acquire(locks.queue, LOCK_MODE_EX, NULL);
	order_acquire(locks.user, LOCK_MODE_EX, NULL);
	actor_call(&env.actors[0], order_destroy_run, &locks);

	/* Another owner on the same thread has its own order. */
	order_create(&locks);
	order_acquire(locks.queue, LOCK_MODE_EX, &owner_a);
	order_acquire(locks.user, LOCK_MODE_EX, &owner_b);
	actor_call(&env.actors[0], order_destroy_run, &locks);
	env_teardown();
}
END_TEST

START_TEST(test_lock_order_violation)
{
	struct order_locks locks;

	env_setup(BACKEND_LOCAL);
	order_create(&locks);
	order_acquire(locks.queue, LOCK_MODE_EX, NULL);
	/* Panics (SIGABRT) on the actor's thread. */
	order_acquire(locks.user, LOCK_MODE_PR, NULL);
	ck_abort_msg("lock order violation was not detected");
}
END_TEST

/* ---- suites ---- */

/* behaviour_tcase - every behavioural test, for backends [first, end) */
static TCase *behaviour_tcase(const char *name, int first, int end)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_pr_shared, first, end);
	tcase_add_loop_test(tc, test_ex_excludes, first, end);
	tcase_add_loop_test(tc, test_waiter_granted_after_release, first, end);
	tcase_add_loop_test(tc, test_timeout, first, end);
	tcase_add_loop_test(tc, test_cancel, first, end);
	tcase_add_loop_test(tc, test_destroy_pending, first, end);
	tcase_add_loop_test(tc, test_convert, first, end);
	tcase_add_loop_test(tc, test_convert_deadlock, first, end);
	tcase_add_loop_test(tc, test_value_block, first, end);
	tcase_add_loop_test(tc, test_stats, first, end);
	tcase_add_loop_test(tc, test_blocking_callback, first, end);
	tcase_add_loop_test(tc, test_fifo, first, end);
	tcase_add_loop_test(tc, test_cache_reuse, first, end);
	tcase_add_loop_test(tc, test_cache_min_hold, first, end);
	return tc;
}

static Suite *lock_suite(void)
{
	Suite *suite = suite_create("lock");
	TCase *tc;
	const char *fork_mode = getenv("CK_FORK");

	suite_add_tcase(suite, behaviour_tcase("local", BACKEND_LOCAL,
					       BACKEND_LOCAL + 1));
	tc = behaviour_tcase("fcntl", BACKEND_FCNTL, BACKEND_FCNTL + 1);
	tcase_add_loop_test(tc, test_fcntl_cross_process, 0, 2);
	tcase_add_test(tc, test_fcntl_damaged_record);
	suite_add_tcase(suite, tc);

	tc = tcase_create("names");
	tcase_add_test(tc, test_names_readable);
	tcase_add_test(tc, test_names_hashed);
	tcase_add_test(tc, test_client_errors);
	suite_add_tcase(suite, tc);

	tc = tcase_create("order");
	tcase_add_test(tc, test_lock_order_allowed);
#ifdef DEBUG_CHECKS
	if (fork_mode == NULL || strcmp(fork_mode, "no") != 0)
		tcase_add_test_raise_signal(tc, test_lock_order_violation, SIGABRT);
	else
		printf("NOTE: lock order panic test needs CK_FORK; left out\n");
#else
	(void)fork_mode;
	(void)test_lock_order_violation;
	printf("NOTE: lock order checks need --enable-debug-checks; "
	       "panic test left out\n");
#endif
	suite_add_tcase(suite, tc);
	return suite;
}

static Suite *dlm_suite(void)
{
	Suite *suite = suite_create("lock-dlm");

	suite_add_tcase(suite, behaviour_tcase("dlm", BACKEND_DLM,
					       BACKEND_DLM + 1));
	return suite;
}

int main(void)
{
	Suite *suites[2];
	size_t count = 0;
	struct io_uring ring;
	pthread_condattr_t attr;
	int ret;

	/* Skip cleanly where io_uring is unavailable (seccomp, sysctl). */
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0) {
		char reason[128];

		snprintf(reason, sizeof(reason), "io_uring unavailable: %s",
			 strerror(-ret));
		unit_skip(reason);
	}
	io_uring_queue_exit(&ring);

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&t_cond, &attr);
	pthread_condattr_destroy(&attr);
	snprintf(base_dir, sizeof(base_dir), "/tmp/test-lock-XXXXXX");
	if (mkdtemp(base_dir) == NULL) {
		perror("mkdtemp");
		return EXIT_FAILURE;
	}

	suites[count++] = lock_suite();
	if (access(DLM_CONTROL_DEVICE, F_OK) == 0)
		suites[count++] = dlm_suite();
	else
		printf("SKIP dlm: no %s (no kernel DLM here; runs in the "
		       "cluster lab)\n", DLM_CONTROL_DEVICE);
	ret = unit_run(suites, count);
	nftw(base_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	return ret;
}
