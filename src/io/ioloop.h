#ifndef CM_IOLOOP_H
#define CM_IOLOOP_H
/*
 * ioloop - a completion-based event loop on io_uring (liburing).
 *
 * One loop per thread; a loop is only touched from its own thread, except
 * ioloop_post() and ioloop_stop_async(), which any thread may call.
 *
 * Every operation is described by a struct io_request that the caller owns
 * (usually embedded in a connection or session struct). Submitting hands the
 * request, and every buffer, path and struct passed with it, to the kernel
 * until the request's callback runs: the caller must not free or reuse them
 * before that. Exactly one callback runs per submission (after cancellation
 * too), with the operation's result: >= 0 for success (bytes, an fd, ...),
 * or -errno (-ECANCELED when cancelled, -ETIME when a timeout fires).
 *
 * There is one dispatch point (the CQE loop in ioloop.c); callbacks may
 * submit new operations, including re-submitting the same request.
 *
 * Kernel features are probed at run time (io_uring_get_probe). An operation
 * the kernel cannot do in io_uring (e.g. MKDIRAT before 5.15) is run as the
 * plain system call on the blocking pool instead and still completes through
 * the loop; each such fallback is logged once per opcode at start.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/time_types.h>

struct ioloop;
struct iopool;
struct io_request;
struct statx;

/* Completion callback: result as described above. */
typedef void io_callback_t(struct io_request *req, int result);

struct io_request {
	io_callback_t *callback;	/* set by io_request_init() */
	void *context;			/* caller's, never touched by the loop */

	/* Private to ioloop.c / iopool.c. */
	struct ioloop *loop;
	bool pending;			/* submitted, callback not yet run */
	bool in_pool;			/* running as a blocking-pool job */
	uint8_t opcode;
	struct __kernel_timespec timeout;	/* storage for io_timeout() */
	void *pool_job;			/* owned by iopool.c while in_pool */
};

struct ioloop_settings {
	/* Name for log lines ("main", "worker-1"); copied. */
	const char *name;
	/* Submission queue entries; 0 = 256. */
	unsigned int queue_depth;
	/* Blocking pool for fallbacks and ioloop_run_blocking(); borrowed,
	   must outlive the loop. Required. */
	struct iopool *pool;
	/* Run every file operation on the blocking pool instead of io_uring
	   (tests use it to exercise the fallback path). */
	bool force_fallback;
};

/* Create a loop, on the thread that will run it (io_uring's single-issuer
   mode binds the ring to that thread; other threads panic). Fatal
   (log_fatal) if io_uring cannot be set up at all
   (for example kernel.io_uring_disabled=2 or a seccomp filter), with the
   reason in the log line. */
struct ioloop *ioloop_create(const struct ioloop_settings *set);
/* Destroy a loop; no request may be pending (panics otherwise). */
void ioloop_destroy(struct ioloop **loop);
/* Dispatch completions until ioloop_stop(). Returns 0. */
int ioloop_run(struct ioloop *loop);
/* Make ioloop_run() return after the current callback (loop thread). */
void ioloop_stop(struct ioloop *loop);
/* Thread-safe: make ioloop_run() return soon. */
void ioloop_stop_async(struct ioloop *loop);
/* Thread-safe: run fn(context) on the loop's thread soon, in post order. */
void ioloop_post(struct ioloop *loop, void (*fn)(void *context), void *context);
/* The loop's name. */
const char *ioloop_name(const struct ioloop *loop);
/* Number of requests submitted and not yet completed. */
unsigned int ioloop_pending_count(const struct ioloop *loop);
/* Monotonic milliseconds. */
uint64_t ioloop_now_msecs(void);

/* Prepare a request; must be called before its first submission. */
void io_request_init(struct io_request *req, io_callback_t *callback,
		     void *context);
static inline bool io_request_is_pending(const struct io_request *req)
{
	return req->pending;
}

/* Cancel a pending request. Its callback still runs exactly once, with
   -ECANCELED, or with its real result if it completed first. No-op if the
   request is not pending. A pool job already running cannot be stopped;
   its callback runs when it finishes. */
void io_cancel(struct ioloop *loop, struct io_request *req);

/* Sockets. accept: result is a new fd (SOCK_CLOEXEC | SOCK_NONBLOCK);
   addr/addrlen may be NULL. recv: result 0 means EOF. send: may send less
   than len (callers handle short sends); never raises SIGPIPE. */
void io_accept(struct ioloop *loop, struct io_request *req, int fd,
	       struct sockaddr *addr, socklen_t *addrlen);
void io_recv(struct ioloop *loop, struct io_request *req, int fd,
	     void *buf, size_t len);
void io_send(struct ioloop *loop, struct io_request *req, int fd,
	     const void *buf, size_t len);
/* Wait until fd is readable/writable (poll(2) events); result = revents. */
void io_poll(struct ioloop *loop, struct io_request *req, int fd,
	     unsigned int events);
/* Timer: result -ETIME when it fires, -ECANCELED when cancelled. */
void io_timeout(struct ioloop *loop, struct io_request *req, uint64_t msecs);

/* Files: the results are those of the system calls of the same names. */
void io_openat(struct ioloop *loop, struct io_request *req, int dirfd,
	       const char *path, int flags, mode_t mode);
void io_read(struct ioloop *loop, struct io_request *req, int fd,
	     void *buf, size_t len, uint64_t offset);
void io_write(struct ioloop *loop, struct io_request *req, int fd,
	      const void *buf, size_t len, uint64_t offset);
void io_fsync(struct ioloop *loop, struct io_request *req, int fd,
	      bool datasync);
void io_statx(struct ioloop *loop, struct io_request *req, int dirfd,
	      const char *path, int flags, unsigned int mask,
	      struct statx *statx_r);
void io_renameat(struct ioloop *loop, struct io_request *req,
		 int old_dirfd, const char *old_path,
		 int new_dirfd, const char *new_path, unsigned int flags);
void io_linkat(struct ioloop *loop, struct io_request *req,
	       int old_dirfd, const char *old_path,
	       int new_dirfd, const char *new_path, int flags);
void io_unlinkat(struct ioloop *loop, struct io_request *req, int dirfd,
		 const char *path, int flags);
void io_mkdirat(struct ioloop *loop, struct io_request *req, int dirfd,
		const char *path, mode_t mode);
void io_close(struct ioloop *loop, struct io_request *req, int fd);

/* Run work(arg) on the blocking pool (for what io_uring cannot do:
   readdir, crypt, DNS, blocking lock waits); its return value becomes the
   request's result, delivered on this loop's thread. */
void ioloop_run_blocking(struct ioloop *loop, struct io_request *req,
			 int (*work)(void *arg), void *arg);

/* Process-wide counters for metrics. */
struct ioloop_stats {
	uint64_t submitted;		/* requests submitted to io_uring */
	uint64_t completed;		/* callbacks run */
	uint64_t fallbacks;		/* requests run on the pool as fallback */
	uint64_t blocking_jobs;		/* ioloop_run_blocking() calls */
};
void ioloop_get_stats(struct ioloop_stats *stats_r);

#endif
