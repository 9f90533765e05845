/*
 * test-io.c - unit tests for src/io: the io_uring loop and its fallbacks,
 * the blocking pool, buffered connections, and TLS (direct and STARTTLS).
 *
 * Everything runs over 127.0.0.1 or socketpairs in a private temp
 * directory; a throw-away certificate is generated at start. Each test
 * runs its loop under a watchdog timer, so a hang fails instead of
 * blocking the suite.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "io/connection.h"
#include "io/tls.h"
#include "io/acceptor.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <liburing.h>
#include <zlib.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#  endif
#endif
#ifndef RUNNING_ON_VALGRIND
#  define RUNNING_ON_VALGRIND 0
#endif

#define WATCHDOG_MSECS 10000
#define SMALL_SOCKBUF 4096

static char test_dir[64];
static char cert_path[128], key_path[128], other_key_path[128];

static struct iopool *pool;
static struct ioloop *loop;
static pthread_t main_thread;
static int fds_at_setup;

/* count_open_fds - descriptors open in this process right now */
static int count_open_fds(void)
{
	int count = 0;

	for (int fd = 0; fd < 1024; fd++) {
		if (fcntl(fd, F_GETFD) >= 0)
			count++;
	}
	return count;
}

/*
 * Fixture and loop helpers
 */

static void loop_setup(void)
{
	struct ioloop_settings set = { .name = "test" };

	main_thread = pthread_self();
	fds_at_setup = count_open_fds();
	pool = iopool_create(2);
	set.pool = pool;
	loop = ioloop_create(&set);
}

static void loop_teardown(void)
{
	ck_assert_uint_eq(ioloop_pending_count(loop), 0);
	ck_assert_uint_eq(connection_count(), 0);
	ioloop_destroy(&loop);
	ck_assert_ptr_null(loop);
	iopool_destroy(&pool);
	ck_assert_ptr_null(pool);
	ck_assert_int_eq(count_open_fds(), fds_at_setup);
}

/*
 * The watchdog fails a test that hangs. Under valgrind it also ticks every
 * 10 ms and yields: valgrind 3.19 keeps its global lock while a thread
 * waits in io_uring_enter(), so pool threads and posters would never run
 * until the loop woke for some other reason (sched_yield() is where
 * valgrind lets another thread have the lock). Natively it must not tick,
 * or it would hide a broken eventfd wake-up.
 */
#define WATCHDOG_TICK_MSECS 10

static struct io_request watchdog_req;
static struct ioloop *watchdog_loop;
static uint64_t watchdog_deadline;
static bool watchdog_fired, watchdog_stopping;

static void watchdog_done(struct io_request *req, int result)
{
	if (result == -ETIME && !watchdog_stopping &&
	    ioloop_now_msecs() < watchdog_deadline) {
		sched_yield();
		io_timeout(watchdog_loop, req, WATCHDOG_TICK_MSECS);
		return;
	}
	if (result == -ETIME && !watchdog_stopping)
		watchdog_fired = true;
	ioloop_stop(watchdog_loop);
}

/* run_loop_on - run l until a test callback stops it, or time out */
static void run_loop_on(struct ioloop *l)
{
	watchdog_loop = l;
	watchdog_fired = watchdog_stopping = false;
	watchdog_deadline = ioloop_now_msecs() + WATCHDOG_MSECS;
	io_request_init(&watchdog_req, watchdog_done, NULL);
	io_timeout(l, &watchdog_req, RUNNING_ON_VALGRIND ?
		   WATCHDOG_TICK_MSECS : WATCHDOG_MSECS);
	ioloop_run(l);
	watchdog_stopping = true;
	if (io_request_is_pending(&watchdog_req)) {
		io_cancel(l, &watchdog_req);
		while (io_request_is_pending(&watchdog_req))
			ioloop_run(l);
	}
	ck_assert_msg(!watchdog_fired, "test timed out");
}

static void run_loop(void)
{
	run_loop_on(loop);
}

/* tcp_listener - a non-blocking listener on 127.0.0.1:<ephemeral> */
static int tcp_listener(uint16_t *port_r, bool small_buffers)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int size = SMALL_SOCKBUF;

	ck_assert_int_ge(fd, 0);
	if (small_buffers) {
		ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
		ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)), 0);
	}
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port_r = ntohs(sin.sin_port);
	return fd;
}

/* tcp_connect - connect to 127.0.0.1:port, then make it non-blocking */
static int tcp_connect(uint16_t port, bool small_buffers)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int size = SMALL_SOCKBUF;

	ck_assert_int_ge(fd, 0);
	if (small_buffers) {
		ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size)), 0);
		ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size)), 0);
	}
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	return fd;
}

/* tcp_pair - a connected loopback TCP pair, both non-blocking */
static void tcp_pair(int fds[2], bool small_buffers)
{
	uint16_t port;
	int lfd = tcp_listener(&port, small_buffers);

	fds[0] = tcp_connect(port, small_buffers);
	/* Loopback connect() completes the handshake; the peer is queued. */
	fds[1] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	ck_assert_int_ge(fds[1], 0);
	close(lfd);
}

static void unix_pair(int fds[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK |
				    SOCK_CLOEXEC, 0, fds), 0);
}

/* pattern_byte - deterministic test data that catches reordering */
static unsigned char pattern_byte(size_t i)
{
	return (unsigned char)((i * 131) ^ (i >> 9) ^ (i >> 17));
}

/*
 * Connection probes: what each test connection saw
 */

struct probe {
	int destroyed;
	char reason[256];
	int input_calls;
	int drained_calls;
	int established;
	uint64_t destroyed_at;
	struct buffer seen;		/* input kept by some tests */
	void *extra;
};

static int destroyed_total, destroyed_expected;
static bool inside_close_call;

static void probe_init(struct probe *probe)
{
	memset(probe, 0, sizeof(*probe));
	buffer_init(&probe->seen, 0);
}

static void probe_destroyed(struct connection *conn, const char *reason)
{
	struct probe *probe = connection_context(conn);

	ck_assert_msg(!inside_close_call,
		      "destroyed() ran inside connection_close/abort");
	ck_assert_int_eq(connection_fd(conn), -1);
	probe->destroyed++;
	probe->destroyed_at = ioloop_now_msecs();
	snprintf(probe->reason, sizeof(probe->reason), "%s", reason);
	if (++destroyed_total == destroyed_expected)
		ioloop_stop(loop);
}

static void expect_destroyed(int count)
{
	destroyed_total = 0;
	destroyed_expected = count;
}

static struct connection *
make_conn(int fd, const struct connection_settings *set,
	  const struct connection_callbacks *callbacks, struct probe *probe)
{
	return connection_create(loop, fd, NULL, 0, set, callbacks, probe);
}

/*
 * Raw io_uring: accept / recv / send over TCP
 */

struct raw_echo {
	int listen_fd, server_fd, client_fd;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	struct io_request accept_req, server_recv, server_send;
	struct io_request client_send, client_recv;
	char server_buf[64], client_buf[64];
	int echoed;
};

static void raw_client_recv_done(struct io_request *req, int result)
{
	struct raw_echo *echo = req->context;

	ck_assert_int_eq(result, 11);
	ck_assert_mem_eq(echo->client_buf, "hello uring", 11);
	ck_assert(pthread_equal(pthread_self(), main_thread));
	ioloop_stop(loop);
}

static void raw_server_send_done(struct io_request *req, int result)
{
	struct raw_echo *echo = req->context;

	ck_assert_int_eq(result, echo->echoed);
}

static void raw_server_recv_done(struct io_request *req, int result)
{
	struct raw_echo *echo = req->context;

	ck_assert_int_eq(result, 11);
	echo->echoed = result;
	io_send(loop, &echo->server_send, echo->server_fd, echo->server_buf,
		(size_t)result);
}

static void raw_accept_done(struct io_request *req, int result)
{
	struct raw_echo *echo = req->context;

	ck_assert_int_ge(result, 0);
	echo->server_fd = result;
	ck_assert((fcntl(result, F_GETFL) & O_NONBLOCK) != 0);
	ck_assert((fcntl(result, F_GETFD) & FD_CLOEXEC) != 0);
	ck_assert_int_eq(echo->peer.ss_family, AF_INET);
	io_recv(loop, &echo->server_recv, result, echo->server_buf,
		sizeof(echo->server_buf));
}

static void raw_client_send_done(struct io_request *req, int result)
{
	ck_assert_int_eq(result, 11);
}

START_TEST(test_uring_echo)
{
	struct raw_echo echo;
	uint16_t port;

	memset(&echo, 0, sizeof(echo));
	echo.listen_fd = tcp_listener(&port, false);
	echo.peer_len = sizeof(echo.peer);
	io_request_init(&echo.accept_req, raw_accept_done, &echo);
	io_request_init(&echo.server_recv, raw_server_recv_done, &echo);
	io_request_init(&echo.server_send, raw_server_send_done, &echo);
	io_request_init(&echo.client_send, raw_client_send_done, &echo);
	io_request_init(&echo.client_recv, raw_client_recv_done, &echo);
	io_accept(loop, &echo.accept_req, echo.listen_fd,
		  (struct sockaddr *)&echo.peer, &echo.peer_len);
	echo.client_fd = tcp_connect(port, false);
	io_send(loop, &echo.client_send, echo.client_fd, "hello uring", 11);
	io_recv(loop, &echo.client_recv, echo.client_fd, echo.client_buf,
		sizeof(echo.client_buf));
	ck_assert_uint_eq(ioloop_pending_count(loop), 3);
	run_loop();
	ck_assert_uint_eq(ioloop_pending_count(loop), 0);
	close(echo.client_fd);
	close(echo.server_fd);
	close(echo.listen_fd);
}
END_TEST

static int short_send_result;

static void short_send_done(struct io_request *req, int result)
{
	short_send_result = result;
	ioloop_stop(loop);
}

START_TEST(test_uring_short_send)
{
	const size_t len = 1024 * 1024;
	unsigned char *data = mem_zalloc(len);
	struct io_request req;
	int fds[2];

	tcp_pair(fds, true);
	io_request_init(&req, short_send_done, NULL);
	io_send(loop, &req, fds[0], data, len);
	run_loop();
	/* Nobody reads fds[1]: the send must return what fit, not block. */
	ck_assert_int_gt(short_send_result, 0);
	ck_assert_int_lt(short_send_result, (int)len);
	close(fds[0]);
	close(fds[1]);
	free(data);
}
END_TEST

/*
 * Timers and cancellation
 */

struct timed {
	uint64_t started, finished;
	int result;
	int calls;
};

static void timed_done(struct io_request *req, int result)
{
	struct timed *timed = req->context;

	timed->finished = ioloop_now_msecs();
	timed->result = result;
	timed->calls++;
}

static void timed_done_stop(struct io_request *req, int result)
{
	timed_done(req, result);
	ioloop_stop(loop);
}

START_TEST(test_timeout_fires)
{
	struct timed timed = { .started = ioloop_now_msecs() };
	struct io_request req;

	io_request_init(&req, timed_done_stop, &timed);
	io_timeout(loop, &req, 50);
	ck_assert(io_request_is_pending(&req));
	run_loop();
	ck_assert_int_eq(timed.calls, 1);
	ck_assert_int_eq(timed.result, -ETIME);
	/* Millisecond truncation may shave one off. */
	ck_assert_uint_ge(timed.finished - timed.started, 49);
	ck_assert_uint_lt(timed.finished - timed.started, 2000);
}
END_TEST

static int cancel_calls_left;

static void cancel_done(struct io_request *req, int result)
{
	timed_done(req, result);
	if (--cancel_calls_left == 0)
		ioloop_stop(loop);
}

START_TEST(test_cancel_recv_and_timer)
{
	struct timed recv_timed = { .started = ioloop_now_msecs() };
	struct timed timer_timed = { .started = ioloop_now_msecs() };
	struct io_request recv_req, timer_req;
	char buf[16];
	int fds[2];

	unix_pair(fds);
	io_request_init(&recv_req, cancel_done, &recv_timed);
	io_request_init(&timer_req, cancel_done, &timer_timed);
	io_recv(loop, &recv_req, fds[0], buf, sizeof(buf));
	io_timeout(loop, &timer_req, 10000);
	cancel_calls_left = 2;
	io_cancel(loop, &recv_req);
	io_cancel(loop, &recv_req);	/* twice: still one callback */
	io_cancel(loop, &timer_req);
	run_loop();
	ck_assert_int_eq(recv_timed.calls, 1);
	ck_assert_int_eq(recv_timed.result, -ECANCELED);
	ck_assert_int_eq(timer_timed.calls, 1);
	ck_assert_int_eq(timer_timed.result, -ECANCELED);
	ck_assert_uint_lt(timer_timed.finished - timer_timed.started, 2000);
	/* Cancelling a completed request is a no-op. */
	io_cancel(loop, &recv_req);
	ck_assert_uint_eq(ioloop_pending_count(loop), 0);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

struct small_queue {
	struct ioloop *loop;
	int left, cancelled, fired;
};

static void small_queue_done(struct io_request *req, int result)
{
	struct small_queue *sq = req->context;

	if (result == -ECANCELED)
		sq->cancelled++;
	else if (result == -ETIME)
		sq->fired++;
	if (--sq->left == 0)
		ioloop_stop(sq->loop);
}

START_TEST(test_small_queue)
{
	struct ioloop_settings set = { .name = "small", .pool = pool,
		.queue_depth = 2 };
	struct small_queue sq = { .left = 64 };
	struct io_request reqs[64];

	/* 64 timers and 32 cancels through a 2-entry SQ and an 8-entry
	   CQ: full-SQ submits and CQ overflow must lose nothing. */
	sq.loop = ioloop_create(&set);
	for (int i = 0; i < 64; i++) {
		io_request_init(&reqs[i], small_queue_done, &sq);
		io_timeout(sq.loop, &reqs[i], i % 2 == 0 ? 5000 : 1);
	}
	for (int i = 0; i < 64; i += 2)
		io_cancel(sq.loop, &reqs[i]);
	ck_assert_uint_eq(ioloop_pending_count(sq.loop), 64);
	ioloop_run(sq.loop);
	ck_assert_int_eq(sq.left, 0);
	ck_assert_int_eq(sq.cancelled, 32);
	ck_assert_int_eq(sq.fired, 32);
	ck_assert_uint_eq(ioloop_pending_count(sq.loop), 0);
	ioloop_destroy(&sq.loop);
}
END_TEST

/*
 * Blocking pool
 */

static pthread_t blocking_thread;
static int gate_fds[2];

static int blocking_work(void *arg)
{
	blocking_thread = pthread_self();
	return *(int *)arg;
}

static void blocking_done(struct io_request *req, int result)
{
	ck_assert(pthread_equal(pthread_self(), main_thread));
	ck_assert(!pthread_equal(blocking_thread, main_thread));
	ck_assert_int_eq(result, 42);
	ioloop_stop(loop);
}

START_TEST(test_run_blocking)
{
	struct ioloop_stats before, after;
	struct io_request req;
	int value = 42;

	ioloop_get_stats(&before);
	io_request_init(&req, blocking_done, NULL);
	ioloop_run_blocking(loop, &req, blocking_work, &value);
	run_loop();
	ioloop_get_stats(&after);
	ck_assert_uint_eq(after.blocking_jobs - before.blocking_jobs, 1);
}
END_TEST

/* gate_work - block a pool thread until the test opens the gate */
static int gate_work(void *arg)
{
	char c;

	return read(gate_fds[0], &c, 1) == 1 ? 1 : -EIO;
}

static int never_work(void *arg)
{
	ck_abort_msg("a cancelled job ran");
	return 0;
}

static int pool_calls_left;
static struct timed pool_results[3];

static void pool_job_done(struct io_request *req, int result)
{
	timed_done(req, result);
	if (result == -ECANCELED) {
		/* Now let the two running jobs finish. */
		ck_assert_int_eq(write(gate_fds[1], "xx", 2), 2);
	}
	if (--pool_calls_left == 0)
		ioloop_stop(loop);
}

START_TEST(test_pool_cancel_queued)
{
	struct io_request reqs[3];

	memset(pool_results, 0, sizeof(pool_results));
	ck_assert_int_eq(pipe2(gate_fds, O_CLOEXEC), 0);
	for (int i = 0; i < 3; i++)
		io_request_init(&reqs[i], pool_job_done, &pool_results[i]);
	/* Both pool threads block on the gate; the third job waits. */
	ioloop_run_blocking(loop, &reqs[0], gate_work, NULL);
	ioloop_run_blocking(loop, &reqs[1], gate_work, NULL);
	ioloop_run_blocking(loop, &reqs[2], never_work, NULL);
	io_cancel(loop, &reqs[2]);
	pool_calls_left = 3;
	run_loop();
	ck_assert_int_eq(pool_results[2].result, -ECANCELED);
	ck_assert_int_eq(pool_results[0].result, 1);
	ck_assert_int_eq(pool_results[1].result, 1);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(pool_results[i].calls, 1);
	close(gate_fds[0]);
	close(gate_fds[1]);
}
END_TEST

/*
 * ioloop_post / ioloop_stop_async from another thread
 */

#define POST_COUNT 200
static int post_next;

static void posted_fn(void *context)
{
	int n = (int)(intptr_t)context;

	ck_assert(pthread_equal(pthread_self(), main_thread));
	ck_assert_int_eq(n, post_next);
	if (++post_next == POST_COUNT)
		ioloop_stop(loop);
}

static void *post_thread(void *arg)
{
	for (int i = 0; i < POST_COUNT; i++) {
		ioloop_post(loop, posted_fn, (void *)(intptr_t)i);
		if (i % 50 == 0)
			usleep(1000);
	}
	return NULL;
}

START_TEST(test_post_from_thread)
{
	pthread_t thread;

	post_next = 0;
	ck_assert_int_eq(pthread_create(&thread, NULL, post_thread, NULL), 0);
	run_loop();
	ck_assert_int_eq(pthread_join(thread, NULL), 0);
	ck_assert_int_eq(post_next, POST_COUNT);
}
END_TEST

static void *stop_thread(void *arg)
{
	usleep(20 * 1000);
	ioloop_stop_async(loop);
	return NULL;
}

START_TEST(test_stop_async)
{
	uint64_t started = ioloop_now_msecs();
	pthread_t thread;

	ck_assert_int_eq(pthread_create(&thread, NULL, stop_thread, NULL), 0);
	run_loop();
	ck_assert_int_eq(pthread_join(thread, NULL), 0);
	ck_assert_uint_ge(ioloop_now_msecs() - started, 19);
}
END_TEST

/*
 * File operations, through io_uring and through the pool
 */

struct file_test {
	struct ioloop *loop;
	struct io_request req;
	int dirfd, fd;
	int step;
	char buf[32];
	struct statx stx;
};

/* file_step - check the previous step's result, submit the next */
static void file_step(struct io_request *req, int result)
{
	struct file_test *ft = req->context;
	struct ioloop *fl = ft->loop;

	switch (ft->step++) {
	case 0:
		io_mkdirat(fl, req, ft->dirfd, "sub", 0700);
		return;
	case 1:
		ck_assert_int_eq(result, 0);
		io_openat(fl, req, ft->dirfd, "sub/a",
			  O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
		return;
	case 2:
		ck_assert_int_ge(result, 0);
		ft->fd = result;
		io_write(fl, req, ft->fd, "hello world", 11, 0);
		return;
	case 3:
		ck_assert_int_eq(result, 11);
		io_fsync(fl, req, ft->fd, false);
		return;
	case 4:
		ck_assert_int_eq(result, 0);
		io_fsync(fl, req, ft->fd, true);
		return;
	case 5:
		ck_assert_int_eq(result, 0);
		io_close(fl, req, ft->fd);
		return;
	case 6:
		ck_assert_int_eq(result, 0);
		io_openat(fl, req, ft->dirfd, "sub/a", O_RDONLY | O_CLOEXEC, 0);
		return;
	case 7:
		ck_assert_int_ge(result, 0);
		ft->fd = result;
		io_read(fl, req, ft->fd, ft->buf, sizeof(ft->buf), 6);
		return;
	case 8:
		ck_assert_int_eq(result, 5);
		ck_assert_mem_eq(ft->buf, "world", 5);
		io_close(fl, req, ft->fd);
		return;
	case 9:
		ck_assert_int_eq(result, 0);
		io_statx(fl, req, ft->dirfd, "sub/a", 0, STATX_SIZE, &ft->stx);
		return;
	case 10:
		ck_assert_int_eq(result, 0);
		ck_assert_uint_eq(ft->stx.stx_size, 11);
		io_renameat(fl, req, ft->dirfd, "sub/a", ft->dirfd, "sub/b",
			    RENAME_NOREPLACE);
		return;
	case 11:
		ck_assert_int_eq(result, 0);
		io_linkat(fl, req, ft->dirfd, "sub/b", ft->dirfd, "sub/c", 0);
		return;
	case 12:
		ck_assert_int_eq(result, 0);
		io_unlinkat(fl, req, ft->dirfd, "sub/b", 0);
		return;
	case 13:
		ck_assert_int_eq(result, 0);
		io_statx(fl, req, ft->dirfd, "sub/c", 0, STATX_NLINK, &ft->stx);
		return;
	case 14:
		ck_assert_int_eq(result, 0);
		ck_assert_uint_eq(ft->stx.stx_nlink, 1);
		io_unlinkat(fl, req, ft->dirfd, "sub/c", 0);
		return;
	case 15:
		ck_assert_int_eq(result, 0);
		io_unlinkat(fl, req, ft->dirfd, "sub", AT_REMOVEDIR);
		return;
	case 16:
		ck_assert_int_eq(result, 0);
		io_openat(fl, req, ft->dirfd, "missing", O_RDONLY | O_CLOEXEC, 0);
		return;
	default:
		ck_assert_int_eq(result, -ENOENT);
		ck_assert(pthread_equal(pthread_self(), main_thread));
		ioloop_stop(fl);
		return;
	}
}

/* kernel_has_file_ops - can this kernel do every file op in io_uring? */
static bool kernel_has_file_ops(void)
{
	static const int ops[] = {
		IORING_OP_OPENAT, IORING_OP_READ, IORING_OP_WRITE,
		IORING_OP_FSYNC, IORING_OP_STATX, IORING_OP_RENAMEAT,
		IORING_OP_LINKAT, IORING_OP_UNLINKAT, IORING_OP_MKDIRAT,
		IORING_OP_CLOSE,
	};
	struct io_uring_probe *probe = io_uring_get_probe();
	bool all = probe != NULL;

	for (size_t i = 0; all && i < N_ELEMENTS(ops); i++)
		all = io_uring_opcode_supported(probe, ops[i]) != 0;
	if (probe != NULL)
		io_uring_free_probe(probe);
	return all;
}

START_TEST(test_file_ops)
{
	bool fallback = _i == 1;
	struct ioloop_settings set = {
		.name = fallback ? "files-fallback" : "files",
		.pool = pool,
		.force_fallback = fallback,
	};
	struct ioloop_stats before, after;
	struct file_test ft;
	char dir[128];

	snprintf(dir, sizeof(dir), "%s/files-XXXXXX", test_dir);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	memset(&ft, 0, sizeof(ft));
	ft.loop = ioloop_create(&set);
	ft.dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(ft.dirfd, 0);
	io_request_init(&ft.req, file_step, &ft);

	ioloop_get_stats(&before);
	file_step(&ft.req, 0);
	run_loop_on(ft.loop);
	ioloop_get_stats(&after);
	ck_assert_int_eq(ft.step, 18);
	ck_assert_uint_eq(ioloop_pending_count(ft.loop), 0);
	if (fallback) {
		ck_assert_uint_ge(after.fallbacks - before.fallbacks, 17);
	} else {
		ck_assert_uint_ge(after.submitted - before.submitted, 17);
		if (kernel_has_file_ops())
			ck_assert_uint_eq(after.fallbacks, before.fallbacks);
	}
	ck_assert_uint_ge(after.completed - before.completed, 17);
	ioloop_destroy(&ft.loop);
	close(ft.dirfd);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/*
 * Connections: echo, limits, timeouts, close semantics
 */

/* echo_input - write back what fits; pause until the output drains */
static void echo_input(struct connection *conn)
{
	struct buffer *in = connection_input(conn);
	size_t len = in->used, room = connection_output_room(conn);
	struct probe *probe = connection_context(conn);

	probe->input_calls++;
	if (len > room)
		len = room;
	if (len > 0) {
		ck_assert_int_eq(connection_write(conn, in->data, len), 0);
		buffer_consume(in, len);
	}
	/* Also pause with an empty buffer when the output is full: under
	   TLS, OpenSSL may still hold data that resume must pick up. */
	if (in->used > 0 || connection_output_room(conn) == 0)
		connection_pause_input(conn);
}

static void echo_drained(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->drained_calls++;
	connection_resume_input(conn);
}

static const struct connection_callbacks echo_callbacks = {
	.input = echo_input,
	.output_drained = echo_drained,
	.destroyed = probe_destroyed,
};

struct bulk {
	size_t total, sent, received;
	unsigned char chunk[64 * 1024];
};

/* bulk_fill - write pattern data while the output queue has room */
static void bulk_fill(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct bulk *bulk = probe->extra;
	size_t len;

	while (bulk->sent < bulk->total &&
	       (len = connection_output_room(conn)) > 0) {
		if (len > sizeof(bulk->chunk))
			len = sizeof(bulk->chunk);
		if (len > bulk->total - bulk->sent)
			len = bulk->total - bulk->sent;
		for (size_t i = 0; i < len; i++)
			bulk->chunk[i] = pattern_byte(bulk->sent + i);
		ck_assert_int_eq(connection_write(conn, bulk->chunk, len), 0);
		bulk->sent += len;
	}
}

static void bulk_drained(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->drained_calls++;
	bulk_fill(conn);
}

/* bulk_input - verify echoed bytes in order; close when all came back */
static void bulk_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct bulk *bulk = probe->extra;
	struct buffer *in = connection_input(conn);

	probe->input_calls++;
	for (size_t i = 0; i < in->used; i++) {
		if (in->data[i] != pattern_byte(bulk->received + i))
			ck_abort_msg("echo mismatch at byte %zu", bulk->received + i);
	}
	bulk->received += in->used;
	buffer_consume(in, in->used);
	ck_assert_uint_le(bulk->received, bulk->sent);
	if (bulk->received == bulk->total)
		connection_close(conn, "all echoed");
}

static const struct connection_callbacks bulk_callbacks = {
	.input = bulk_input,
	.output_drained = bulk_drained,
	.destroyed = probe_destroyed,
};

START_TEST(test_conn_echo_large)
{
	struct connection_settings server_set = { .id = "echo-server",
		.input_limit = 32 * 1024, .output_limit = 64 * 1024 };
	struct connection_settings client_set = { .id = "echo-client",
		.output_limit = 256 * 1024 };
	struct probe server, client;
	struct bulk *bulk = mem_zalloc(sizeof(*bulk));
	struct connection *conn;
	int fds[2];

	tcp_pair(fds, true);
	probe_init(&server);
	probe_init(&client);
	bulk->total = 8 * 1024 * 1024;
	client.extra = bulk;
	make_conn(fds[1], &server_set, &echo_callbacks, &server);
	conn = make_conn(fds[0], &client_set, &bulk_callbacks, &client);
	ck_assert_uint_eq(connection_count(), 2);
	ck_assert_str_eq(connection_id(conn), "echo-client");
	ck_assert_ptr_eq(connection_loop(conn), loop);
	ck_assert_int_eq(connection_peer(conn)->sa_family, AF_UNSPEC);
	bulk_fill(conn);
	expect_destroyed(2);
	run_loop();
	ck_assert_uint_eq(bulk->received, bulk->total);
	ck_assert_int_eq(client.destroyed, 1);
	ck_assert_int_eq(server.destroyed, 1);
	ck_assert_str_eq(client.reason, "all echoed");
	ck_assert_str_eq(server.reason, "closed by peer");
	/* The server had to stop reading and resume: flow control ran. */
	ck_assert_int_gt(server.drained_calls, 1);
	ck_assert_int_gt(client.drained_calls, 1);
	free(bulk);
}
END_TEST

static void ignore_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->input_calls++;
}

static const struct connection_callbacks ignore_callbacks = {
	.input = ignore_input,
	.destroyed = probe_destroyed,
};

START_TEST(test_conn_output_limit)
{
	struct connection_settings set = { .id = "limit", .output_limit = 1024 };
	unsigned char data[1024];
	struct probe probe;
	struct connection *conn;
	int fds[2];

	memset(data, 'x', sizeof(data));
	unix_pair(fds);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &ignore_callbacks, &probe);
	ck_assert_uint_eq(connection_output_room(conn), 1024);
	ck_assert_int_eq(connection_write(conn, data, 1000), 0);
	ck_assert_uint_eq(connection_output_pending(conn), 1000);
	ck_assert_uint_eq(connection_output_room(conn), 24);
	ck_assert_int_eq(connection_write(conn, data, 100), -1);
	ck_assert_int_eq(connection_printf(conn, "%0100d", 7), -1);
	ck_assert_uint_eq(connection_output_pending(conn), 1000);
	ck_assert_int_eq(connection_printf(conn, "%s", "0123456789"), 0);
	ck_assert_int_eq(connection_write_str(conn, "abcdefghijklmn"), 0);
	ck_assert_uint_eq(connection_output_room(conn), 0);
	ck_assert_int_eq(connection_write(conn, data, 1), -1);
	ck_assert_int_eq(connection_write(conn, data, 0), 0);

	connection_close(conn, "done");
	ck_assert(connection_is_closing(conn));
	ck_assert_int_eq(connection_write(conn, data, 1), -1);
	expect_destroyed(1);
	run_loop();
	ck_assert_str_eq(probe.reason, "done");
	/* The graceful close sent everything that was accepted. */
	ck_assert_int_eq(read(fds[1], data, sizeof(data)), 1024);
	close(fds[1]);
}
END_TEST

START_TEST(test_conn_input_limit)
{
	struct connection_settings set = { .id = "inlimit", .input_limit = 1024 };
	unsigned char data[4096];
	struct probe probe;
	struct connection *conn;
	int fds[2];

	memset(data, 'y', sizeof(data));
	unix_pair(fds);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &ignore_callbacks, &probe);
	ck_assert_int_eq(write(fds[1], data, sizeof(data)), (int)sizeof(data));
	expect_destroyed(1);
	run_loop();
	(void)conn;
	ck_assert_str_eq(probe.reason, "input limit exceeded");
	ck_assert_int_ge(probe.input_calls, 1);
	close(fds[1]);
}
END_TEST

START_TEST(test_conn_idle_timeout)
{
	struct connection_settings set = { .id = "idle", .idle_timeout_msecs = 100 };
	uint64_t started = ioloop_now_msecs();
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	make_conn(fds[0], &set, &ignore_callbacks, &probe);
	expect_destroyed(1);
	run_loop();
	ck_assert_str_eq(probe.reason, "idle timeout");
	ck_assert_uint_ge(probe.destroyed_at - started, 99);
	ck_assert_uint_lt(probe.destroyed_at - started, 3000);
	close(fds[1]);
}
END_TEST

/* slow_writer - keep the idle connection busy for a while */
struct slow_writer {
	struct io_request timer;
	int fd, left;
};

static void slow_writer_tick(struct io_request *req, int result)
{
	struct slow_writer *writer = req->context;

	ck_assert_int_eq(write(writer->fd, "z", 1), 1);
	if (--writer->left > 0)
		io_timeout(loop, req, 40);
}

START_TEST(test_conn_idle_timeout_activity)
{
	struct connection_settings set = { .id = "idle2", .idle_timeout_msecs = 100 };
	uint64_t started = ioloop_now_msecs();
	struct slow_writer writer = { .left = 5 };
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	writer.fd = fds[1];
	make_conn(fds[0], &set, &ignore_callbacks, &probe);
	io_request_init(&writer.timer, slow_writer_tick, &writer);
	io_timeout(loop, &writer.timer, 40);
	expect_destroyed(1);
	run_loop();
	/* Input every 40 ms for 200 ms kept it open past 100 ms. */
	ck_assert_str_eq(probe.reason, "idle timeout");
	ck_assert_uint_ge(probe.destroyed_at - started, 290);
	ck_assert_int_eq(probe.input_calls, 5);
	close(fds[1]);
}
END_TEST

/* reentrant_input - close, abort and write from inside the callback */
static void reentrant_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->input_calls++;
	ck_assert_int_eq(connection_write_str(conn, "bye\r\n"), 0);
	inside_close_call = true;
	connection_close(conn, "first");
	connection_abort(conn, "second");
	connection_close(conn, "third");
	inside_close_call = false;
	ck_assert(connection_is_closing(conn));
	ck_assert_int_eq(connection_write_str(conn, "more"), -1);
	buffer_consume(connection_input(conn), connection_input(conn)->used);
}

static const struct connection_callbacks reentrant_callbacks = {
	.input = reentrant_input,
	.destroyed = probe_destroyed,
};

START_TEST(test_conn_close_from_callback)
{
	struct connection_settings set = { .id = "reentrant" };
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	make_conn(fds[0], &set, &reentrant_callbacks, &probe);
	ck_assert_int_eq(write(fds[1], "x", 1), 1);
	expect_destroyed(1);
	run_loop();
	ck_assert_int_eq(probe.destroyed, 1);
	ck_assert_int_eq(probe.input_calls, 1);
	ck_assert_str_eq(probe.reason, "first");
	close(fds[1]);
}
END_TEST

START_TEST(test_conn_abort_outside_callback)
{
	struct connection_settings set = { .id = "abort" };
	struct probe probe[3];
	int fds[3][2];

	for (int i = 0; i < 3; i++) {
		unix_pair(fds[i]);
		probe_init(&probe[i]);
		make_conn(fds[i][0], &set, &ignore_callbacks, &probe[i]);
	}
	ck_assert_uint_eq(connection_count(), 3);
	inside_close_call = true;
	connection_abort_all("shutting down");
	inside_close_call = false;
	expect_destroyed(3);
	run_loop();
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(probe[i].destroyed, 1);
		ck_assert_str_eq(probe[i].reason, "shutting down");
		close(fds[i][1]);
	}
}
END_TEST

/* pause_input - pause on the first call; the second sees the same data */
static void pause_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct buffer *in = connection_input(conn);

	ck_assert_uint_eq(in->used, 5);
	if (++probe->input_calls == 1) {
		connection_pause_input(conn);
		return;
	}
	connection_close(conn, "resumed");
}

static const struct connection_callbacks pause_callbacks = {
	.input = pause_input,
	.destroyed = probe_destroyed,
};

static void resume_timer_done(struct io_request *req, int result)
{
	struct connection *conn = req->context;
	struct probe *probe = connection_context(conn);

	ck_assert_int_eq(probe->input_calls, 1);
	connection_resume_input(conn);
	ck_assert_int_eq(probe->input_calls, 1);	/* not from in here */
}

START_TEST(test_conn_pause_resume)
{
	struct connection_settings set = { .id = "pause" };
	struct io_request timer;
	struct connection *conn;
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &pause_callbacks, &probe);
	ck_assert_int_eq(write(fds[1], "hello", 5), 5);
	io_request_init(&timer, resume_timer_done, conn);
	io_timeout(loop, &timer, 50);
	expect_destroyed(1);
	run_loop();
	ck_assert_int_eq(probe.input_calls, 2);
	ck_assert_str_eq(probe.reason, "resumed");
	close(fds[1]);
}
END_TEST

/* Raw reader of everything a connection sends until EOF. */
struct drain_reader {
	struct io_request req;
	int fd;
	size_t total;
	bool eof;
	char buf[8192];
};

static void drain_reader_done(struct io_request *req, int result)
{
	struct drain_reader *reader = req->context;

	ck_assert_int_ge(result, 0);
	if (result == 0) {
		reader->eof = true;
		if (++destroyed_total == destroyed_expected)
			ioloop_stop(loop);
		return;
	}
	for (int i = 0; i < result; i++)
		ck_assert_int_eq((unsigned char)reader->buf[i],
				 pattern_byte(reader->total + (size_t)i));
	reader->total += (size_t)result;
	io_recv(loop, req, reader->fd, reader->buf, sizeof(reader->buf));
}

START_TEST(test_conn_close_flushes)
{
	struct connection_settings set = { .id = "flush" };
	const size_t total = 300 * 1024;
	unsigned char *data = mem_zalloc(total);
	struct drain_reader reader;
	struct connection *conn;
	struct probe probe;
	int fds[2];

	for (size_t i = 0; i < total; i++)
		data[i] = pattern_byte(i);
	tcp_pair(fds, true);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &ignore_callbacks, &probe);
	ck_assert_int_eq(connection_write(conn, data, total), 0);
	inside_close_call = true;
	connection_close(conn, "bye");
	inside_close_call = false;
	memset(&reader, 0, sizeof(reader));
	reader.fd = fds[1];
	io_request_init(&reader.req, drain_reader_done, &reader);
	io_recv(loop, &reader.req, reader.fd, reader.buf, sizeof(reader.buf));
	expect_destroyed(2);	/* the connection, and the reader's EOF */
	run_loop();
	ck_assert(reader.eof);
	ck_assert_uint_eq(reader.total, total);
	ck_assert_str_eq(probe.reason, "bye");
	close(fds[1]);
	free(data);
}
END_TEST

START_TEST(test_conn_close_timeout)
{
	struct connection_settings set = { .id = "stuck",
		.close_timeout_msecs = 100, .idle_timeout_msecs = 60000 };
	const size_t total = 512 * 1024;
	unsigned char *data = mem_zalloc(total);
	uint64_t started = ioloop_now_msecs();
	struct connection *conn;
	struct probe probe;
	int fds[2];

	tcp_pair(fds, true);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &ignore_callbacks, &probe);
	ck_assert_int_eq(connection_write(conn, data, total), 0);
	connection_close(conn, "bye");
	expect_destroyed(1);
	run_loop();
	/* The peer never reads: the flush gives up at the close timeout. */
	ck_assert_str_eq(probe.reason, "bye");
	ck_assert_uint_ge(probe.destroyed_at - started, 99);
	ck_assert_uint_lt(probe.destroyed_at - started, 3000);
	close(fds[1]);
	free(data);
}
END_TEST

START_TEST(test_conn_peer_vanishes)
{
	struct connection_settings set = { .id = "vanish" };
	const size_t total = 512 * 1024;
	unsigned char *data = mem_zalloc(total);
	struct connection *conn;
	struct probe probe;
	int fds[2];

	/* TCP reports ECONNRESET; a unix socket reports EPIPE, which
	   would also raise SIGPIPE without MSG_NOSIGNAL. */
	if (_i == 0)
		tcp_pair(fds, true);
	else
		unix_pair(fds);
	probe_init(&probe);
	ck_assert_int_eq(write(fds[1], "unread data", 11), 11);
	conn = make_conn(fds[0], &set, &ignore_callbacks, &probe);
	ck_assert_int_eq(connection_write(conn, data, total), 0);
	/* The peer is gone before the first byte is sent. */
	close(fds[1]);
	expect_destroyed(1);
	run_loop();
	ck_assert_int_eq(probe.destroyed, 1);
	ck_assert_msg(strcmp(probe.reason, "closed by peer") == 0 ||
		      strcmp(probe.reason, "connection reset by peer") == 0,
		      "unexpected reason: %s", probe.reason);
	free(data);
}
END_TEST

/*
 * TLS
 */

static struct tls_context *server_tls, *client_tls;

static void tls_setup(void)
{
	const char *error;

	loop_setup();
	server_tls = tls_context_create_server(cert_path, key_path, &error);
	ck_assert_msg(server_tls != NULL, "server context: %s", error);
	client_tls = tls_context_create_client(NULL, false, &error);
	ck_assert_msg(client_tls != NULL, "client context: %s", error);
}

static void tls_teardown(void)
{
	tls_context_unref(&server_tls);
	tls_context_unref(&client_tls);
	ck_assert_ptr_null(server_tls);
	loop_teardown();
}

START_TEST(test_tls_context_errors)
{
	struct tls_context *tls;
	const char *error;

	tls = tls_context_create_server("/nonexistent/cert.pem", NULL, &error);
	ck_assert_ptr_null(tls);
	ck_assert_msg(strstr(error, "/nonexistent/cert.pem") != NULL, "%s", error);

	tls = tls_context_create_server(cert_path, other_key_path, &error);
	ck_assert_ptr_null(tls);
	ck_assert_msg(strstr(error, "match") != NULL, "%s", error);

	tls = tls_context_create_server(cert_path, key_path, &error);
	ck_assert_ptr_nonnull(tls);
	ck_assert(tls_context_is_server(tls));
	ck_assert(!tls_context_is_server(client_tls));
	ck_assert_ptr_nonnull(tls_context_ssl_ctx(tls));
	/* Two references: the first unref leaves it alive, the second
	   frees it (ASan/LSan would flag either mistake). */
	tls_context_ref(tls);
	{
		struct tls_context *second = tls;

		tls_context_unref(&second);
		ck_assert_ptr_null(second);
	}
	ck_assert_ptr_nonnull(tls_context_ssl_ctx(tls));
	tls_context_unref(&tls);
	ck_assert_ptr_null(tls);
}
END_TEST

/* tls_line_input - collect input; act on complete lines */
static void tls_line_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct buffer *in = connection_input(conn);

	probe->input_calls++;
	ck_assert_int_eq(buffer_append(&probe->seen, in->data, in->used), 0);
	buffer_consume(in, in->used);
	if (strstr(buffer_cstr(&probe->seen), "ping\n") != NULL &&
	    strstr(buffer_cstr(&probe->seen), "pong\n") == NULL &&
	    probe->extra == NULL) {
		/* server side: answer once */
		probe->extra = conn;
		ck_assert_int_eq(connection_write_str(conn, "pong\n"), 0);
	}
	if (strstr(buffer_cstr(&probe->seen), "pong\n") != NULL &&
	    strstr(buffer_cstr(&probe->seen), "hello\n") != NULL)
		connection_close(conn, "client done");
}

static void tls_established(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	const char *version = connection_tls_version(conn);

	probe->established++;
	ck_assert(connection_is_tls(conn));
	ck_assert_ptr_nonnull(version);
	ck_assert_msg(str_begins_with(version, "TLSv1."), "version %s", version);
	ck_assert_ptr_nonnull(connection_tls_cipher(conn));
	ck_assert_int_eq(connection_write_str(conn, probe->extra == NULL ?
					      "hello\n" : "ping\n"), 0);
}

static const struct connection_callbacks tls_callbacks = {
	.input = tls_line_input,
	.tls_established = tls_established,
	.destroyed = probe_destroyed,
};

/* Variants: 0 no verification, 1 verified "localhost", 2 wrong name. */
START_TEST(test_tls_exchange)
{
	struct connection_settings server_set = { .id = "tls-server" };
	struct connection_settings client_set = { .id = "tls-client" };
	struct tls_context *ctx = client_tls;
	struct connection *server_conn, *client_conn;
	struct probe server, client;
	const char *error;
	int fds[2];

	if (_i > 0) {
		ctx = tls_context_create_client(cert_path, true, &error);
		ck_assert_msg(ctx != NULL, "%s", error);
	}
	tcp_pair(fds, false);
	probe_init(&server);
	probe_init(&client);
	client.extra = &client;		/* marks the client side */
	server_conn = make_conn(fds[1], &server_set, &tls_callbacks, &server);
	client_conn = make_conn(fds[0], &client_set, &tls_callbacks, &client);
	ck_assert(!connection_is_tls(server_conn));
	ck_assert_ptr_null(connection_tls_version(server_conn));
	ck_assert_int_eq(connection_start_tls(server_conn, server_tls, NULL), 0);
	ck_assert_int_eq(connection_start_tls(client_conn, ctx, _i == 2 ?
					      "wrong.example" : "localhost"), 0);
	ck_assert_int_eq(connection_start_tls(client_conn, ctx, NULL), -1);
	/* The contexts may go: connections hold their own references. */
	if (ctx != client_tls)
		tls_context_unref(&ctx);
	expect_destroyed(2);
	run_loop();
	if (_i == 2) {
		ck_assert_int_eq(client.established, 0);
		ck_assert_msg(str_begins_with(client.reason, "TLS handshake failed: "),
			      "client: %s", client.reason);
		ck_assert_msg(strstr(client.reason, "certificate") != NULL ||
			      strstr(client.reason, "hostname") != NULL,
			      "client: %s", client.reason);
		ck_assert_msg(str_begins_with(server.reason, "TLS handshake failed"),
			      "server: %s", server.reason);
	} else {
		ck_assert_int_eq(client.established, 1);
		ck_assert_int_eq(server.established, 1);
		ck_assert_str_eq(client.reason, "client done");
		ck_assert_str_eq(server.reason, "closed by peer");
		ck_assert_str_eq(buffer_cstr(&server.seen), "ping\n");
		ck_assert_str_eq(buffer_cstr(&client.seen), "hello\npong\n");
	}
	buffer_clear(&server.seen);
	buffer_clear(&client.seen);
}
END_TEST

/* STARTTLS: the server answers "OK go ahead" and starts TLS; the client
   injected a plaintext command right behind STARTTLS. */
static void starttls_server_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct buffer *in = connection_input(conn);
	const char *nl;

	probe->input_calls++;
	if (connection_is_tls(conn)) {
		ck_assert_int_eq(buffer_append(&probe->seen, in->data, in->used), 0);
		buffer_consume(in, in->used);
		if (strstr(buffer_cstr(&probe->seen), "\n") != NULL)
			connection_close(conn, "server done");
		return;
	}
	nl = memchr(in->data, '\n', in->used);
	if (nl == NULL)
		return;
	ck_assert(str_begins_with(buffer_cstr(in), "STARTTLS\r\n"));
	ck_assert_int_eq(connection_write_str(conn, "OK go ahead\r\n"), 0);
	ck_assert_int_eq(connection_start_tls(conn, server_tls, NULL), 0);
	/* Like a real protocol: consume the command, parse nothing more. */
	buffer_consume(in, (size_t)(nl - (const char *)in->data) + 1);
}

static void starttls_client_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct buffer *in = connection_input(conn);

	probe->input_calls++;
	ck_assert(!connection_is_tls(conn));
	if (in->used < 13)
		return;
	ck_assert_str_eq(buffer_cstr(in), "OK go ahead\r\n");
	buffer_consume(in, in->used);
	ck_assert_int_eq(connection_start_tls(conn, client_tls, "localhost"), 0);
}

static void starttls_client_established(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->established++;
	ck_assert_int_eq(connection_write_str(conn, "SECRET\r\n"), 0);
}

static void starttls_server_established(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->established++;
}

static const struct connection_callbacks starttls_server_callbacks = {
	.input = starttls_server_input,
	.tls_established = starttls_server_established,
	.destroyed = probe_destroyed,
};

static const struct connection_callbacks starttls_client_callbacks = {
	.input = starttls_client_input,
	.tls_established = starttls_client_established,
	.destroyed = probe_destroyed,
};

START_TEST(test_tls_starttls)
{
	struct connection_settings server_set = { .id = "starttls-server" };
	struct connection_settings client_set = { .id = "starttls-client" };
	struct connection *client_conn;
	struct probe server, client;
	int fds[2];

	unix_pair(fds);
	probe_init(&server);
	probe_init(&client);
	make_conn(fds[1], &server_set, &starttls_server_callbacks, &server);
	client_conn = make_conn(fds[0], &client_set, &starttls_client_callbacks,
				&client);
	ck_assert_int_eq(connection_write_str(client_conn,
					      "STARTTLS\r\nINJECTED\r\n"), 0);
	expect_destroyed(2);
	run_loop();
	ck_assert_int_eq(server.established, 1);
	ck_assert_int_eq(client.established, 1);
	/* The injected line never reached the protocol. */
	ck_assert_str_eq(buffer_cstr(&server.seen), "SECRET\r\n");
	ck_assert_str_eq(server.reason, "server done");
	ck_assert_str_eq(client.reason, "closed by peer");
	buffer_clear(&server.seen);
}
END_TEST

START_TEST(test_tls_echo_large)
{
	struct connection_settings server_set = { .id = "tls-echo-server",
		.input_limit = 20 * 1024, .output_limit = 48 * 1024 };
	struct connection_settings client_set = { .id = "tls-echo-client",
		.output_limit = 300 * 1024 };
	struct probe server, client;
	struct bulk *bulk = mem_zalloc(sizeof(*bulk));
	struct connection *server_conn, *client_conn;
	int fds[2];

	/* Default buffers: with 4 KiB windows on loopback (64 KiB MSS)
	   Nagle and delayed ACKs pace TCP to a crawl. */
	tcp_pair(fds, false);
	probe_init(&server);
	probe_init(&client);
	bulk->total = 3 * 1024 * 1024 + 12345;
	client.extra = bulk;
	server_conn = make_conn(fds[1], &server_set, &echo_callbacks, &server);
	client_conn = make_conn(fds[0], &client_set, &bulk_callbacks, &client);
	ck_assert_int_eq(connection_start_tls(server_conn, server_tls, NULL), 0);
	ck_assert_int_eq(connection_start_tls(client_conn, client_tls, "localhost"), 0);
	/* Written before the handshake: queued as plaintext, sent after. */
	bulk_fill(client_conn);
	ck_assert_uint_gt(connection_output_pending(client_conn), 0);
	expect_destroyed(2);
	run_loop();
	ck_assert_uint_eq(bulk->received, bulk->total);
	ck_assert_str_eq(client.reason, "all echoed");
	ck_assert_str_eq(server.reason, "closed by peer");
	ck_assert_int_gt(server.drained_calls, 1);
	free(bulk);
}
END_TEST

/* A protocol that pauses in the callback and consumes later, from a
   timer, then resumes: OpenSSL may hold the rest of the request while
   the peer sends nothing more, so resume itself must fetch it. */
struct late_reader {
	struct connection *conn;
	struct io_request timer;
	size_t total, expected;
};

static void late_reader_timer(struct io_request *req, int result)
{
	struct late_reader *reader = req->context;
	struct buffer *in = connection_input(reader->conn);

	reader->total += in->used;
	buffer_consume(in, in->used);
	if (reader->total == reader->expected)
		connection_close(reader->conn, "got all");
	else
		connection_resume_input(reader->conn);
}

static void late_reader_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct late_reader *reader = probe->extra;

	probe->input_calls++;
	connection_pause_input(conn);
	if (!io_request_is_pending(&reader->timer))
		io_timeout(loop, &reader->timer, 2);
}

static const struct connection_callbacks late_reader_callbacks = {
	.input = late_reader_input,
	.destroyed = probe_destroyed,
};

START_TEST(test_tls_resume_outside_callback)
{
	struct connection_settings server_set = { .id = "tls-late",
		.input_limit = 4096 };
	struct connection_settings client_set = { .id = "tls-sender" };
	struct late_reader reader = { .expected = 60000 };
	struct connection *client_conn;
	struct probe server, client;
	unsigned char *data = mem_zalloc(reader.expected);
	int fds[2];

	unix_pair(fds);
	probe_init(&server);
	probe_init(&client);
	server.extra = &reader;
	io_request_init(&reader.timer, late_reader_timer, &reader);
	reader.conn = make_conn(fds[1], &server_set, &late_reader_callbacks, &server);
	client_conn = make_conn(fds[0], &client_set, &ignore_callbacks, &client);
	ck_assert_int_eq(connection_start_tls(reader.conn, server_tls, NULL), 0);
	ck_assert_int_eq(connection_start_tls(client_conn, client_tls, NULL), 0);
	ck_assert_int_eq(connection_write(client_conn, data, reader.expected), 0);
	expect_destroyed(2);
	run_loop();
	ck_assert_uint_eq(reader.total, reader.expected);
	ck_assert_str_eq(server.reason, "got all");
	ck_assert_int_gt(server.input_calls, 5);
	free(data);
}
END_TEST

START_TEST(test_tls_garbage_peer)
{
	static const char garbage[] =
		"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n"
		"\x16\x03\x01\x00\x05garbage after a fake record header";
	struct connection_settings set = { .id = "tls-garbage" };
	struct connection *conn;
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &tls_callbacks, &probe);
	ck_assert_int_eq(connection_start_tls(conn, server_tls, NULL), 0);
	ck_assert_int_eq(write(fds[1], garbage, sizeof(garbage) - 1),
			 (int)sizeof(garbage) - 1);
	expect_destroyed(1);
	run_loop();
	ck_assert_int_eq(probe.established, 0);
	ck_assert_msg(str_begins_with(probe.reason, "TLS handshake failed: "),
		      "reason: %s", probe.reason);
	close(fds[1]);
}
END_TEST

START_TEST(test_tls_peer_closes_in_handshake)
{
	struct connection_settings set = { .id = "tls-eof" };
	struct connection *conn;
	struct probe probe;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	conn = make_conn(fds[0], &set, &tls_callbacks, &probe);
	ck_assert_int_eq(connection_start_tls(conn, server_tls, NULL), 0);
	close(fds[1]);
	expect_destroyed(1);
	run_loop();
	ck_assert_str_eq(probe.reason,
			 "TLS handshake failed: connection closed by peer");
}
END_TEST

/*
 * Certificate generation and main
 */

/* write_key - a fresh P-256 key in PEM; returns it (caller frees) */
static EVP_PKEY *write_key(const char *path)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	FILE *file = fopen(path, "w");

	if (key == NULL || file == NULL ||
	    PEM_write_PrivateKey(file, key, NULL, NULL, 0, NULL, NULL) != 1) {
		fprintf(stderr, "cannot write key %s\n", path);
		exit(EXIT_FAILURE);
	}
	fclose(file);
	return key;
}

/* write_self_signed - CN=localhost, SAN DNS:localhost, one day */
static void write_self_signed(const char *path, EVP_PKEY *key)
{
	X509 *x509 = X509_new();
	X509_NAME *name;
	X509_EXTENSION *ext;
	X509V3_CTX v3;
	FILE *file;

	X509_set_version(x509, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
	X509_gmtime_adj(X509_getm_notBefore(x509), -60);
	X509_gmtime_adj(X509_getm_notAfter(x509), 86400);
	X509_set_pubkey(x509, key);
	name = X509_get_subject_name(x509);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x509, name);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, x509, x509, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
	if (ext == NULL || X509_add_ext(x509, ext, -1) != 1 ||
	    X509_sign(x509, key, EVP_sha256()) == 0 ||
	    (file = fopen(path, "w")) == NULL || PEM_write_X509(file, x509) != 1) {
		fprintf(stderr, "cannot create test certificate %s\n", path);
		exit(EXIT_FAILURE);
	}
	fclose(file);
	X509_EXTENSION_free(ext);
	X509_free(x509);
}

static void make_test_files(void)
{
	EVP_PKEY *key, *other;

	snprintf(test_dir, sizeof(test_dir), "/tmp/test-io-XXXXXX");
	if (mkdtemp(test_dir) == NULL) {
		perror("mkdtemp");
		exit(EXIT_FAILURE);
	}
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", test_dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", test_dir);
	snprintf(other_key_path, sizeof(other_key_path), "%s/other.pem", test_dir);
	key = write_key(key_path);
	other = write_key(other_key_path);
	write_self_signed(cert_path, key);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	return remove(path);
}

/*
 * Compression (connection_start_compress): raw deflate under the
 * protocol, against an independent zlib peer and against ourselves
 * under TLS; bounded memory against a decompression bomb; corrupt data.
 */

/* A peer on the other end of a socketpair, in two threads (blocking
   I/O): one writes out[] then shuts down its sending side, the other
   reads everything until EOF into in. */
struct zpeer {
	int fd;
	unsigned char *out;		/* owned */
	size_t out_len;
	struct buffer in;
	pthread_t writer, reader;
};

static void *zpeer_write(void *arg)
{
	struct zpeer *peer = arg;
	size_t off = 0;
	ssize_t ret;

	while (off < peer->out_len) {
		ret = send(peer->fd, peer->out + off, peer->out_len - off,
			   MSG_NOSIGNAL);
		if (ret <= 0)
			break;		/* the server closed on us: fine */
		off += (size_t)ret;
	}
	(void)shutdown(peer->fd, SHUT_WR);
	return NULL;
}

static void *zpeer_read(void *arg)
{
	struct zpeer *peer = arg;
	unsigned char chunk[65536];
	ssize_t ret;

	while ((ret = read(peer->fd, chunk, sizeof(chunk))) > 0)
		(void)buffer_append(&peer->in, chunk, (size_t)ret);
	return NULL;
}

/* zpeer_start - take over fd (made blocking) and start both threads */
static void zpeer_start(struct zpeer *peer, int fd)
{
	ck_assert_int_eq(fcntl(fd, F_SETFL, 0), 0);
	peer->fd = fd;
	buffer_init(&peer->in, 0);
	ck_assert_int_eq(pthread_create(&peer->writer, NULL, zpeer_write, peer), 0);
	ck_assert_int_eq(pthread_create(&peer->reader, NULL, zpeer_read, peer), 0);
}

/* zpeer_join - wait for both threads; peer->in holds what was read */
static void zpeer_join(struct zpeer *peer)
{
	ck_assert_int_eq(pthread_join(peer->writer, NULL), 0);
	ck_assert_int_eq(pthread_join(peer->reader, NULL), 0);
	close(peer->fd);
	free(peer->out);
	peer->out = NULL;
}

/* zdeflate_append - raw-deflate data into out, with a sync flush */
static void zdeflate_append(z_stream *zs, struct buffer *out,
			    const void *data, size_t len, int flush)
{
	zs->next_in = (unsigned char *)(uintptr_t)data;
	zs->avail_in = (uInt)len;
	do {
		unsigned char *dest = buffer_reserve(out, 65536);

		zs->next_out = dest;
		zs->avail_out = 65536;
		ck_assert_int_ne(deflate(zs, flush), Z_STREAM_ERROR);
		buffer_commit(out, 65536 - zs->avail_out);
	} while (zs->avail_out == 0);
	ck_assert_uint_eq(zs->avail_in, 0);
}

static void zdeflate_init(z_stream *zs)
{
	memset(zs, 0, sizeof(*zs));
	ck_assert_int_eq(deflateInit2(zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
				      -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
}

/* zpattern_stream - "COMPRESS\n" then total pattern bytes, deflated in
   sync-flushed pieces like a client writing commands */
static unsigned char *zpattern_stream(size_t total, size_t *len_r)
{
	struct buffer out;
	unsigned char chunk[40000];
	z_stream zs;
	size_t done = 0, len;

	buffer_init(&out, 0);
	buffer_append_str(&out, "COMPRESS\n");
	zdeflate_init(&zs);
	while (done < total) {
		len = total - done < sizeof(chunk) ? total - done : sizeof(chunk);
		for (size_t i = 0; i < len; i++)
			chunk[i] = pattern_byte(done + i);
		zdeflate_append(&zs, &out, chunk, len, Z_SYNC_FLUSH);
		done += len;
	}
	deflateEnd(&zs);
	return (unsigned char *)buffer_export(&out, len_r);
}

/* zecho_input - "COMPRESS\n" switches to deflate; after that, echo */
static void zecho_input(struct connection *conn)
{
	struct buffer *in = connection_input(conn);
	const unsigned char *nl;

	if (connection_is_compressed(conn)) {
		echo_input(conn);
		return;
	}
	nl = memchr(in->data, '\n', in->used);
	if (nl == NULL)
		return;
	ck_assert(str_begins_with(buffer_cstr(in), "COMPRESS\n"));
	ck_assert_int_eq(connection_write_str(conn, "OK\n"), 0);
	/* Consume the command; what follows is compressed already. */
	buffer_consume(in, (size_t)(nl - in->data) + 1);
	ck_assert_int_eq(connection_start_compress(conn), 0);
	ck_assert_int_eq(connection_start_compress(conn), -1);
	ck_assert(connection_is_compressed(conn));
	ck_assert_int_eq(connection_start_tls(conn, NULL, NULL), -1);
}

static const struct connection_callbacks zecho_callbacks = {
	.input = zecho_input,
	.output_drained = echo_drained,
	.destroyed = probe_destroyed,
};

/* zinflate_check - the peer's view: "OK\n", then deflate of the pattern */
static void zinflate_check(const struct buffer *wire, size_t total)
{
	unsigned char out[65536];
	size_t seen = 0, len;
	z_stream zs;
	int ret;

	ck_assert_uint_ge(wire->used, 3);
	ck_assert(memcmp(wire->data, "OK\n", 3) == 0);
	memset(&zs, 0, sizeof(zs));
	ck_assert_int_eq(inflateInit2(&zs, -15), Z_OK);
	zs.next_in = wire->data + 3;
	zs.avail_in = (uInt)(wire->used - 3);
	do {
		zs.next_out = out;
		zs.avail_out = sizeof(out);
		ret = inflate(&zs, Z_SYNC_FLUSH);
		ck_assert_msg(ret == Z_OK || ret == Z_BUF_ERROR, "inflate %d", ret);
		len = sizeof(out) - zs.avail_out;
		for (size_t i = 0; i < len; i++) {
			if (out[i] != pattern_byte(seen + i))
				ck_abort_msg("mismatch at byte %zu", seen + i);
		}
		seen += len;
	} while (len > 0);
	ck_assert_uint_eq(zs.avail_in, 0);
	inflateEnd(&zs);
	ck_assert_uint_eq(seen, total);
}

START_TEST(test_compress_zlib_peer_echo)
{
	struct connection_settings set = { .id = "zecho",
		.input_limit = 16 * 1024, .output_limit = 48 * 1024 };
	struct zpeer peer = { 0 };
	struct probe server;
	size_t total = 6 * 1024 * 1024 + 777;
	int fds[2];

	unix_pair(fds);
	probe_init(&server);
	make_conn(fds[0], &set, &zecho_callbacks, &server);
	/* The command and the compressed data behind it go out at once. */
	peer.out = zpattern_stream(total, &peer.out_len);
	zpeer_start(&peer, fds[1]);
	expect_destroyed(1);
	run_loop();
	zpeer_join(&peer);
	ck_assert_str_eq(server.reason, "closed by peer");
	/* Flow control ran (output full, input paused and resumed). */
	ck_assert_int_gt(server.drained_calls, 1);
	zinflate_check(&peer.in, total);
	/* It really went compressed: the pattern deflates about 12:1. */
	ck_assert_uint_lt(peer.in.used, total / 4);
	buffer_clear(&peer.in);
}
END_TEST

/* Both ends are connections, TLS first, then compression in both
   directions as soon as the handshake is done (RFC 4978 6 order). */
static void ztls_established(struct connection *conn)
{
	struct probe *probe = connection_context(conn);

	probe->established++;
	ck_assert_int_eq(connection_start_compress(conn), 0);
	ck_assert(connection_is_compressed(conn));
	if (probe->extra != NULL)
		bulk_fill(conn);
}

static const struct connection_callbacks ztls_echo_callbacks = {
	.input = echo_input,
	.output_drained = echo_drained,
	.tls_established = ztls_established,
	.destroyed = probe_destroyed,
};

static const struct connection_callbacks ztls_bulk_callbacks = {
	.input = bulk_input,
	.output_drained = bulk_drained,
	.tls_established = ztls_established,
	.destroyed = probe_destroyed,
};

START_TEST(test_compress_over_tls_echo)
{
	struct connection_settings server_set = { .id = "ztls-server",
		.input_limit = 20 * 1024, .output_limit = 48 * 1024 };
	struct connection_settings client_set = { .id = "ztls-client",
		.output_limit = 300 * 1024 };
	struct probe server, client;
	struct bulk *bulk = mem_zalloc(sizeof(*bulk));
	struct connection *server_conn, *client_conn;
	int fds[2];

	tcp_pair(fds, false);
	probe_init(&server);
	probe_init(&client);
	bulk->total = 4 * 1024 * 1024 + 4321;
	client.extra = bulk;
	server_conn = make_conn(fds[1], &server_set, &ztls_echo_callbacks, &server);
	client_conn = make_conn(fds[0], &client_set, &ztls_bulk_callbacks, &client);
	ck_assert_int_eq(connection_start_tls(server_conn, server_tls, NULL), 0);
	ck_assert_int_eq(connection_start_tls(client_conn, client_tls, "localhost"), 0);
	/* Not while TLS is starting: the layers would be ambiguous. */
	ck_assert_int_eq(connection_start_compress(client_conn), -1);
	expect_destroyed(2);
	run_loop();
	ck_assert_int_eq(client.established, 1);
	ck_assert_int_eq(server.established, 1);
	ck_assert_uint_eq(bulk->received, bulk->total);
	ck_assert_str_eq(client.reason, "all echoed");
	ck_assert_str_eq(server.reason, "closed by peer");
	ck_assert_int_gt(server.drained_calls, 1);
	free(bulk);
}
END_TEST

/* A protocol that consumes everything and remembers the largest input
   it was ever handed; probe->seen keeps the first bytes. */
struct zsink {
	size_t total, max_used;
	bool ignore;			/* consume nothing (a line never ends) */
};

static void zsink_input(struct connection *conn)
{
	struct probe *probe = connection_context(conn);
	struct zsink *sink = probe->extra;
	struct buffer *in = connection_input(conn);

	probe->input_calls++;
	if (in->used > sink->max_used)
		sink->max_used = in->used;
	if (sink->ignore)
		return;
	if (probe->seen.used < 64)
		(void)buffer_append(&probe->seen, in->data,
				    in->used < 64 ? in->used : 64);
	sink->total += in->used;
	buffer_consume(in, in->used);
}

static const struct connection_callbacks zsink_callbacks = {
	.input = zsink_input,
	.destroyed = probe_destroyed,
};

/* zbomb - 64 MiB of zeros as raw deflate (about 64 KiB) */
static unsigned char *zbomb(size_t *len_r, size_t *plain_r)
{
	static unsigned char zeros[1024 * 1024];
	struct buffer out;
	z_stream zs;

	buffer_init(&out, 0);
	zdeflate_init(&zs);
	for (int i = 0; i < 64; i++)
		zdeflate_append(&zs, &out, zeros, sizeof(zeros), Z_NO_FLUSH);
	zdeflate_append(&zs, &out, "", 0, Z_SYNC_FLUSH);
	deflateEnd(&zs);
	*plain_r = 64 * sizeof(zeros);
	return (unsigned char *)buffer_export(&out, len_r);
}

/* Variant 0: the protocol consumes everything: all of it arrives, never
   more than input_limit at once. Variant 1: it consumes nothing: the
   connection closes at the input limit instead of inflating on. */
START_TEST(test_compress_bomb_bounded)
{
	struct connection_settings set = { .id = "zbomb", .input_limit = 8192 };
	struct zpeer peer = { 0 };
	struct zsink sink = { .ignore = _i == 1 };
	struct connection *conn;
	struct probe probe;
	size_t plain;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	probe.extra = &sink;
	conn = make_conn(fds[0], &set, &zsink_callbacks, &probe);
	ck_assert_int_eq(connection_start_compress(conn), 0);
	peer.out = zbomb(&peer.out_len, &plain);
	ck_assert_uint_lt(peer.out_len, plain / 500);
	zpeer_start(&peer, fds[1]);
	expect_destroyed(1);
	run_loop();
	zpeer_join(&peer);
	ck_assert_uint_le(sink.max_used, set.input_limit);
	if (_i == 0) {
		ck_assert_str_eq(probe.reason, "closed by peer");
		ck_assert_uint_eq(sink.total, plain);
	} else {
		ck_assert_str_eq(probe.reason, "input limit exceeded");
		ck_assert_uint_eq(sink.max_used, set.input_limit);
	}
	buffer_clear(&peer.in);
	buffer_clear(&probe.seen);
}
END_TEST

/* Valid compressed data, then garbage: the good part is delivered, the
   connection closes with a reason naming the corruption. */
START_TEST(test_compress_corrupt_input)
{
	struct connection_settings set = { .id = "zcorrupt" };
	static const unsigned char garbage[64] = {
		/* final block with the reserved type 3 */
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	struct zpeer peer = { 0 };
	struct zsink sink = { 0 };
	struct connection *conn;
	struct buffer wire;
	struct probe probe;
	z_stream zs;
	int fds[2];

	unix_pair(fds);
	probe_init(&probe);
	probe.extra = &sink;
	conn = make_conn(fds[0], &set, &zsink_callbacks, &probe);
	ck_assert_int_eq(connection_start_compress(conn), 0);
	buffer_init(&wire, 0);
	zdeflate_init(&zs);
	zdeflate_append(&zs, &wire, "hello\n", 6, Z_SYNC_FLUSH);
	deflateEnd(&zs);
	ck_assert_int_eq(buffer_append(&wire, garbage, sizeof(garbage)), 0);
	peer.out = (unsigned char *)buffer_export(&wire, &peer.out_len);
	zpeer_start(&peer, fds[1]);
	expect_destroyed(1);
	run_loop();
	zpeer_join(&peer);
	ck_assert_msg(str_begins_with(probe.reason, "corrupt compressed input: "),
		      "reason: %s", probe.reason);
	ck_assert_str_eq(buffer_cstr(&probe.seen), "hello\n");
	buffer_clear(&peer.in);
	buffer_clear(&probe.seen);
}
END_TEST

/*
 * Acceptor
 */

struct accept_result {
	int fd;
	int nodelay;
};

static void accept_stopped(void *context)
{
	(void)context;
	ioloop_stop(loop);
}

static void accept_got(void *context, int fd, const struct sockaddr *peer,
		       socklen_t peer_len)
{
	struct accept_result *res = context;
	socklen_t len = sizeof(res->nodelay);

	(void)peer;
	(void)peer_len;
	res->fd = fd;
	ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY,
				    &res->nodelay, &len), 0);
	ioloop_stop(loop);
}

/* Accepted TCP sockets have Nagle off: request/response protocols would
   otherwise stall about 40 ms on the client's delayed ACK whenever a
   reply takes two sends. */
START_TEST(test_acceptor_tcp_nodelay)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t len = sizeof(addr);
	struct accept_result res = { .fd = -1, .nodelay = 0 };
	struct acceptor *acc;
	int lfd, cfd;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(listen(lfd, 4), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&addr, &len), 0);
	acc = acceptor_create(loop, lfd, "test", accept_got, &res);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(connect(cfd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	run_loop();
	ck_assert_int_ge(res.fd, 0);
	ck_assert_int_eq(res.nodelay, 1);
	acceptor_stop(&acc, accept_stopped);
	run_loop();
	close(res.fd);
	close(cfd);
	close(lfd);
}
END_TEST

static Suite *io_suite(void)
{
	Suite *suite = suite_create("io");
	TCase *tc;

	tc = tcase_create("ioloop");
	tcase_add_checked_fixture(tc, loop_setup, loop_teardown);
	tcase_add_test(tc, test_uring_echo);
	tcase_add_test(tc, test_uring_short_send);
	tcase_add_test(tc, test_timeout_fires);
	tcase_add_test(tc, test_cancel_recv_and_timer);
	tcase_add_test(tc, test_small_queue);
	tcase_add_test(tc, test_run_blocking);
	tcase_add_test(tc, test_pool_cancel_queued);
	tcase_add_test(tc, test_post_from_thread);
	tcase_add_test(tc, test_stop_async);
	tcase_add_loop_test(tc, test_file_ops, 0, 2);
	tcase_add_test(tc, test_acceptor_tcp_nodelay);
	suite_add_tcase(suite, tc);

	tc = tcase_create("connection");
	tcase_add_checked_fixture(tc, loop_setup, loop_teardown);
	tcase_add_test(tc, test_conn_echo_large);
	tcase_add_test(tc, test_conn_output_limit);
	tcase_add_test(tc, test_conn_input_limit);
	tcase_add_test(tc, test_conn_idle_timeout);
	tcase_add_test(tc, test_conn_idle_timeout_activity);
	tcase_add_test(tc, test_conn_close_from_callback);
	tcase_add_test(tc, test_conn_abort_outside_callback);
	tcase_add_test(tc, test_conn_pause_resume);
	tcase_add_test(tc, test_conn_close_flushes);
	tcase_add_test(tc, test_conn_close_timeout);
	tcase_add_loop_test(tc, test_conn_peer_vanishes, 0, 2);
	suite_add_tcase(suite, tc);

	tc = tcase_create("tls");
	tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
	tcase_add_test(tc, test_tls_context_errors);
	tcase_add_loop_test(tc, test_tls_exchange, 0, 3);
	tcase_add_test(tc, test_tls_starttls);
	tcase_add_test(tc, test_tls_echo_large);
	tcase_add_test(tc, test_tls_resume_outside_callback);
	tcase_add_test(tc, test_tls_garbage_peer);
	tcase_add_test(tc, test_tls_peer_closes_in_handshake);
	suite_add_tcase(suite, tc);

	tc = tcase_create("compress");
	tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
	tcase_add_test(tc, test_compress_zlib_peer_echo);
	tcase_add_test(tc, test_compress_over_tls_echo);
	tcase_add_loop_test(tc, test_compress_bomb_bounded, 0, 2);
	tcase_add_test(tc, test_compress_corrupt_input);
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	Suite *suites[1];
	struct io_uring ring;
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

	make_test_files();
	suites[0] = io_suite();
	ret = unit_run(suites, N_ELEMENTS(suites));
	nftw(test_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	return ret;
}
