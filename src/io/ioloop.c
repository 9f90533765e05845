/*
 * ioloop.c - the completion-based event loop on io_uring.
 *
 * Ownership. An SQE carries pointers: the io_request itself (as
 * user_data), and whatever buffers, paths, sockaddrs and timespecs the
 * operation reads or writes. From the moment an SQE is queued until its CQE
 * is reaped, that memory belongs to the kernel. It may be read or written
 * at any time in between, possibly long after the submitting function
 * returned, and even after a cancel request was issued: cancellation is
 * itself asynchronous and only the target's CQE proves the kernel is done.
 * So a request's memory may be reused only once its callback has run, and
 * each submission produces exactly one callback. Freeing earlier lets the
 * kernel scribble on reused heap memory, a bug that shows up far away and
 * rarely; delivering two callbacks (or none) makes owners free twice (or
 * leak and hang at shutdown).
 *
 * Cancellation. io_cancel() queues an ASYNC_CANCEL SQE aimed at the
 * request's user_data. The cancel operation has its own CQE, which carries
 * a loop-internal tag as user_data and is swallowed here: the user sees one
 * callback, from the target, with -ECANCELED or with its real result if it
 * won the race. SQEs are queued strictly in order (see the backlog below),
 * so a cancel can never overtake the request it aims at, nor hit a later
 * re-submission of the same io_request. A request running on the blocking
 * pool can be cancelled only while still queued there.
 *
 * Teardown. Owners (connections) cancel everything they have pending and
 * free themselves only when the last callback arrived. The loop itself
 * refuses to be destroyed with user requests pending (log_panic): that is
 * always a bug that would otherwise surface as a use-after-free. Its own
 * internal eventfd read is cancelled and reaped before the ring goes away.
 *
 * Backpressure. A full SQ makes io_uring_get_sqe() return NULL; we submit
 * to make room. If the kernel still refuses (-EBUSY while the CQ
 * overflows, -EAGAIN when short of memory), the prepared SQE goes to a
 * backlog flushed before the next wait. Once the backlog is non-empty every
 * new SQE queues behind it, preserving submission order.
 *
 * Cross-thread wake-ups. ioloop_post(), ioloop_stop_async() and pool
 * completions append to a mutex-protected list and write an eventfd that
 * the loop always has a READ armed on. Writers only signal when the list
 * goes from empty to non-empty, and the loop thread never signals itself.
 *
 * Fallbacks. Opcodes are probed per ring at creation. File and socket
 * operations the kernel cannot do in io_uring run on the blocking pool as
 * the plain system call and complete through the posted-item path above;
 * force_fallback does the same for every file operation.
 */
#include "lib/lib.h"
#include "ioloop.h"
#include "iopool.h"
#include "io-private.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>

/* Default submission queue depth; the CQ is larger so that bursts of
   completions do not overflow it. */
#define IOLOOP_DEFAULT_QUEUE_DEPTH 256
#define IOLOOP_CQ_FACTOR 4
/* Linux never transfers more than this in one read/write/send/recv. */
#define IOLOOP_MAX_RW_COUNT 0x7ffff000u
/* Marks requests started with ioloop_run_blocking(); not an io_uring op. */
#define IOLOOP_OP_BLOCKING 0xff

struct ioloop {
	char *name;
	struct io_uring ring;
	struct iopool *pool;		/* borrowed */
	pthread_t thread;		/* the only thread that may submit */
	bool force_fallback;
	bool running;
	bool stop;
	bool destroying;

	unsigned int pending;		/* user requests not yet completed */
	unsigned int internal_inflight;	/* cancel SQEs not yet reaped */
	bool supported[IORING_OP_LAST];	/* probed opcode support */

	/* Prepared SQEs that did not fit into the SQ; flushed in order. */
	struct io_uring_sqe *backlog;
	size_t backlog_count, backlog_alloc;

	/* Cross-thread posts; everything below the lock is protected by it. */
	pthread_mutex_t post_lock;
	struct ioloop_post_item *post_head, *post_tail;
	atomic_bool stop_async;

	int event_fd;
	uint64_t event_value;		/* kernel-owned while event_req pending */
	struct io_request event_req;	/* internal: always-armed eventfd read */
	char cancel_tag;		/* user_data of cancel SQEs (address only) */
};

/* One operation's arguments: turned into an SQE, or kept for the pool
   when the operation runs there as the plain system call. */
struct ioloop_call {
	uint8_t opcode;
	int fd, fd2;
	int flags;
	unsigned int mask;		/* poll events, statx mask */
	mode_t mode;
	const char *path, *path2;
	void *buf;
	size_t len;
	uint64_t offset;		/* UINT64_MAX: the file position */
	struct sockaddr *addr;
	socklen_t *addrlen;
	struct statx *statx_buf;
};

/* A call running on the pool. The job is the first member, so freeing
   the job frees the whole record. */
struct ioloop_fallback {
	struct iopool_job job;
	struct ioloop_call call;
};

/* Ops that have a pool fallback, and whether they are file operations
   (which force_fallback reroutes). */
static const struct {
	uint8_t opcode;
	bool file_op;
	const char *name;
} ioloop_fallback_ops[] = {
	{ IORING_OP_ACCEPT, false, "ACCEPT" },
	{ IORING_OP_RECV, false, "RECV" },
	{ IORING_OP_SEND, false, "SEND" },
	{ IORING_OP_POLL_ADD, false, "POLL_ADD" },
	{ IORING_OP_OPENAT, true, "OPENAT" },
	{ IORING_OP_READ, true, "READ" },
	{ IORING_OP_WRITE, true, "WRITE" },
	{ IORING_OP_FSYNC, true, "FSYNC" },
	{ IORING_OP_STATX, true, "STATX" },
	{ IORING_OP_RENAMEAT, true, "RENAMEAT" },
	{ IORING_OP_LINKAT, true, "LINKAT" },
	{ IORING_OP_UNLINKAT, true, "UNLINKAT" },
	{ IORING_OP_MKDIRAT, true, "MKDIRAT" },
	{ IORING_OP_CLOSE, true, "CLOSE" },
};

static atomic_uint_fast64_t ioloop_stat_submitted;
static atomic_uint_fast64_t ioloop_stat_completed;
static atomic_uint_fast64_t ioloop_stat_fallbacks;
static atomic_uint_fast64_t ioloop_stat_blocking_jobs;
/* One bit per opcode: "fallback already logged by this process". */
static atomic_uint_fast64_t ioloop_fallback_logged[4];

static void ioloop_event_read_done(struct io_request *req, int result);

uint64_t ioloop_now_msecs(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		log_panic("clock_gettime(CLOCK_MONOTONIC) failed: %s",
			  strerror(errno));
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void ioloop_get_stats(struct ioloop_stats *stats_r)
{
	stats_r->submitted = atomic_load(&ioloop_stat_submitted);
	stats_r->completed = atomic_load(&ioloop_stat_completed);
	stats_r->fallbacks = atomic_load(&ioloop_stat_fallbacks);
	stats_r->blocking_jobs = atomic_load(&ioloop_stat_blocking_jobs);
}

const char *ioloop_name(const struct ioloop *loop)
{
	return loop->name;
}

unsigned int ioloop_pending_count(const struct ioloop *loop)
{
	return loop->pending;
}

bool ioloop_is_current_thread(const struct ioloop *loop)
{
	return pthread_equal(loop->thread, pthread_self()) != 0;
}

/* loop_check_thread - panic when a loop is used from a foreign thread */
static void loop_check_thread(const struct ioloop *loop, const char *what)
{
	if (!ioloop_is_current_thread(loop))
		log_panic("%s: ioloop %s used from a thread that does not own it",
			  what, loop->name);
}

/*
 * Ring setup
 */

/* loop_ring_init - set up the ring with the best flags the kernel takes */
static int loop_ring_init(struct ioloop *loop, unsigned int entries)
{
	/* Newest first. SINGLE_ISSUER|DEFER_TASKRUN (6.1) runs completion
	   work only when we wait, in our thread: fewer interrupts and no
	   cross-CPU bouncing. COOP_TASKRUN (5.19) is the weaker cousin. */
	static const unsigned int attempts[] = {
#if defined(IORING_SETUP_SINGLE_ISSUER) && defined(IORING_SETUP_DEFER_TASKRUN)
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		IORING_SETUP_SUBMIT_ALL,
#endif
#ifdef IORING_SETUP_COOP_TASKRUN
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
#endif
		0,
	};
	struct io_uring_params params;
	int ret = -EINVAL;

	for (size_t i = 0; i < N_ELEMENTS(attempts); i++) {
		memset(&params, 0, sizeof(params));
		params.flags = attempts[i] | IORING_SETUP_CQSIZE;
		params.cq_entries = entries * IOLOOP_CQ_FACTOR;
		ret = io_uring_queue_init_params(entries, &loop->ring, &params);
		if (ret != -EINVAL)
			return ret;
	}
	return ret;
}

/* loop_ring_fatal - explain why io_uring is unusable, then exit */
static void ATTR_NORETURN loop_ring_fatal(const char *name, int err)
{
	const char *hint = "";

	if (err == EPERM)
		hint = " (io_uring may be disabled by the kernel.io_uring_disabled"
			" sysctl, or blocked by a seccomp filter such as a"
			" container runtime's default profile)";
	else if (err == ENOSYS)
		hint = " (the kernel lacks io_uring, or a seccomp filter blocks"
			" io_uring_setup)";
	else if (err == ENOMEM)
		hint = " (before Linux 5.12 rings count against RLIMIT_MEMLOCK)";
	log_fatal("ioloop %s: cannot set up io_uring: %s%s", name,
		  strerror(err), hint);
}

/* loop_probe - record which opcodes this kernel supports */
static void loop_probe(struct ioloop *loop)
{
	static const uint8_t required[] = {
		IORING_OP_READ, IORING_OP_TIMEOUT, IORING_OP_ASYNC_CANCEL,
	};
	struct io_uring_probe *probe = io_uring_get_probe_ring(&loop->ring);

	if (probe == NULL)
		log_fatal("ioloop %s: io_uring opcode probe failed "
			  "(Linux 5.6 or later is required)", loop->name);
	for (unsigned int op = 0; op < IORING_OP_LAST; op++)
		loop->supported[op] = io_uring_opcode_supported(probe, (int)op) != 0;
	io_uring_free_probe(probe);

	for (size_t i = 0; i < N_ELEMENTS(required); i++) {
		if (!loop->supported[required[i]])
			log_fatal("ioloop %s: kernel io_uring lacks opcode %u "
				  "(Linux 5.6 or later is required)",
				  loop->name, required[i]);
	}
}

/* loop_log_fallbacks - one notice per unsupported opcode per process */
static void loop_log_fallbacks(const struct ioloop *loop)
{
	for (size_t i = 0; i < N_ELEMENTS(ioloop_fallback_ops); i++) {
		uint8_t op = ioloop_fallback_ops[i].opcode;
		uint_fast64_t bit = (uint_fast64_t)1 << (op % 64);

		if (loop->supported[op])
			continue;
		if ((atomic_fetch_or(&ioloop_fallback_logged[op / 64], bit) & bit) != 0)
			continue;
		log_notice("io_uring on this kernel cannot do %s; running it "
			   "on the blocking pool instead",
			   ioloop_fallback_ops[i].name);
	}
}

/*
 * Submission
 */

/* loop_backlog_push - keep a prepared SQE until the SQ has room */
static void loop_backlog_push(struct ioloop *loop,
			      const struct io_uring_sqe *sqe)
{
	if (loop->backlog_count == loop->backlog_alloc) {
		loop->backlog_alloc = loop->backlog_alloc == 0 ? 16 :
			loop->backlog_alloc * 2;
		loop->backlog = mem_realloc(loop->backlog, loop->backlog_alloc *
					    sizeof(*loop->backlog));
	}
	loop->backlog[loop->backlog_count++] = *sqe;
}

/* loop_get_sqe - a free SQE, submitting once to make room; NULL if full */
static struct io_uring_sqe *loop_get_sqe(struct ioloop *loop)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

	if (sqe == NULL) {
		/* Errors (-EBUSY, -EAGAIN) leave the SQEs queued; the
		   caller falls back to the backlog. */
		(void)io_uring_submit(&loop->ring);
		sqe = io_uring_get_sqe(&loop->ring);
	}
	return sqe;
}

/* loop_backlog_flush - move backlogged SQEs into the SQ, oldest first */
static void loop_backlog_flush(struct ioloop *loop)
{
	size_t done = 0;
	struct io_uring_sqe *sqe;

	while (done < loop->backlog_count &&
	       (sqe = loop_get_sqe(loop)) != NULL)
		*sqe = loop->backlog[done++];
	if (done == 0)
		return;
	memmove(loop->backlog, loop->backlog + done,
		(loop->backlog_count - done) * sizeof(*loop->backlog));
	loop->backlog_count -= done;
}

/* loop_queue_sqe - hand a prepared SQE to the ring (or the backlog) */
static void loop_queue_sqe(struct ioloop *loop, const struct io_uring_sqe *prep)
{
	struct io_uring_sqe *sqe;

	if (loop->backlog_count > 0)
		loop_backlog_flush(loop);
	if (loop->backlog_count == 0 && (sqe = loop_get_sqe(loop)) != NULL) {
		*sqe = *prep;
		return;
	}
	loop_backlog_push(loop, prep);
}

/* loop_begin - mark a user request as submitted on this loop */
static void loop_begin(struct ioloop *loop, struct io_request *req,
		       uint8_t opcode)
{
	loop_check_thread(loop, "io request");
	if (req->callback == NULL)
		log_panic("ioloop %s: io_request submitted without "
			  "io_request_init()", loop->name);
	if (req->pending)
		log_panic("ioloop %s: io_request submitted while still pending",
			  loop->name);
	if (loop->destroying)
		log_panic("ioloop %s: request submitted during destroy",
			  loop->name);
	req->loop = loop;
	req->pending = true;
	req->in_pool = false;
	req->opcode = opcode;
	req->pool_job = NULL;
	if (req != &loop->event_req)
		loop->pending++;
}

/* loop_submit - queue an SQE prepared in *sqe for req */
static void loop_submit(struct ioloop *loop, struct io_request *req,
			struct io_uring_sqe *sqe)
{
	loop_begin(loop, req, sqe->opcode);
	io_uring_sqe_set_data(sqe, req);
	loop_queue_sqe(loop, sqe);
	if (req != &loop->event_req)
		atomic_fetch_add(&ioloop_stat_submitted, 1);
}

/* loop_complete - run req's callback: the single way a request ends */
static void loop_complete(struct ioloop *loop, struct io_request *req,
			  int result)
{
	if (!req->pending)
		log_panic("ioloop %s: completion for a request that is not "
			  "pending (result %d)", loop->name, result);
	req->pending = false;
	if (req != &loop->event_req) {
		loop->pending--;
		atomic_fetch_add(&ioloop_stat_completed, 1);
	}
	req->callback(req, result);
}

/* loop_is_file_op - may force_fallback move this opcode to the pool? */
static bool loop_is_file_op(uint8_t opcode)
{
	for (size_t i = 0; i < N_ELEMENTS(ioloop_fallback_ops); i++) {
		if (ioloop_fallback_ops[i].opcode == opcode)
			return ioloop_fallback_ops[i].file_op;
	}
	return false;
}

/* loop_prep_path_call - the SQE for the path-based file operations */
static void loop_prep_path_call(struct io_uring_sqe *sqe,
				const struct ioloop_call *call)
{
	switch (call->opcode) {
	case IORING_OP_STATX:
		io_uring_prep_statx(sqe, call->fd, call->path, call->flags,
				    call->mask, call->statx_buf);
		break;
	case IORING_OP_RENAMEAT:
		io_uring_prep_renameat(sqe, call->fd, call->path, call->fd2,
				       call->path2, (unsigned int)call->flags);
		break;
	case IORING_OP_LINKAT:
		io_uring_prep_linkat(sqe, call->fd, call->path, call->fd2,
				     call->path2, call->flags);
		break;
	case IORING_OP_UNLINKAT:
		io_uring_prep_unlinkat(sqe, call->fd, call->path, call->flags);
		break;
	case IORING_OP_MKDIRAT:
		io_uring_prep_mkdirat(sqe, call->fd, call->path, call->mode);
		break;
	case IORING_OP_CLOSE:
		io_uring_prep_close(sqe, call->fd);
		break;
	default:
		log_panic("ioloop: unexpected opcode %u", call->opcode);
	}
}

/*
 * Blocking pool: fallbacks and ioloop_run_blocking()
 */

/* loop_wait_socket - block a pool thread until fd is ready */
static int loop_wait_socket(int fd, short events)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	while (poll(&pfd, 1, -1) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

/* loop_syscall_socket - one attempt at a socket call */
static ssize_t loop_syscall_socket(const struct ioloop_call *call)
{
	struct pollfd pfd = { .fd = call->fd, .events = (short)call->mask };
	int ret;

	switch (call->opcode) {
	case IORING_OP_ACCEPT:
		return accept4(call->fd, call->addr, call->addrlen,
			       SOCK_CLOEXEC | SOCK_NONBLOCK);
	case IORING_OP_RECV:
		return recv(call->fd, call->buf, call->len, 0);
	case IORING_OP_SEND:
		return send(call->fd, call->buf, call->len, MSG_NOSIGNAL);
	}
	ret = poll(&pfd, 1, -1);
	return ret > 0 ? pfd.revents : ret;
}

/* loop_fallback_socket - socket calls, waiting out EAGAIN like io_uring */
static ssize_t loop_fallback_socket(const struct ioloop_call *call)
{
	ssize_t ret;

	while ((ret = loop_syscall_socket(call)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN ||
		    loop_wait_socket(call->fd, call->opcode == IORING_OP_SEND ?
				     POLLOUT : POLLIN) < 0)
			break;
	}
	return ret;
}

/* loop_fallback_file - the file system calls */
static ssize_t loop_fallback_file(const struct ioloop_call *call)
{
	bool at_pos = call->offset == UINT64_MAX;

	switch (call->opcode) {
	case IORING_OP_OPENAT:
		return openat(call->fd, call->path, call->flags, call->mode);
	case IORING_OP_READ:
		return at_pos ? read(call->fd, call->buf, call->len) :
			pread(call->fd, call->buf, call->len, (off_t)call->offset);
	case IORING_OP_WRITE:
		return at_pos ? write(call->fd, call->buf, call->len) :
			pwrite(call->fd, call->buf, call->len, (off_t)call->offset);
	case IORING_OP_FSYNC:
		return call->flags != 0 ? fdatasync(call->fd) : fsync(call->fd);
	case IORING_OP_STATX:
		return statx(call->fd, call->path, call->flags, call->mask,
			     call->statx_buf);
	case IORING_OP_RENAMEAT:
		return renameat2(call->fd, call->path, call->fd2, call->path2,
				 (unsigned int)call->flags);
	case IORING_OP_LINKAT:
		return linkat(call->fd, call->path, call->fd2, call->path2,
			      call->flags);
	case IORING_OP_UNLINKAT:
		return unlinkat(call->fd, call->path, call->flags);
	case IORING_OP_MKDIRAT:
		return mkdirat(call->fd, call->path, call->mode);
	case IORING_OP_CLOSE:
		return close(call->fd);
	}
	log_panic("ioloop fallback: unexpected opcode %u", call->opcode);
}

/* loop_fallback_work - pool thread: the plain syscall, result as -errno */
static int loop_fallback_work(void *arg)
{
	const struct ioloop_call *call = arg;
	ssize_t ret;

	if (!loop_is_file_op(call->opcode))
		ret = loop_fallback_socket(call);
	else
		ret = loop_fallback_file(call);
	return ret < 0 ? -errno : (int)ret;
}

/* loop_job_done - loop thread: a pool job finished or was cancelled */
static void loop_job_done(void *context)
{
	struct iopool_job *job = context;
	struct io_request *req = job->req;
	int result = job->result;

	/* For fallbacks this frees the enclosing ioloop_fallback too. */
	free(job);
	req->pool_job = NULL;
	req->in_pool = false;
	loop_complete(req->loop, req, result);
}

/* loop_pool_submit - start req as a job on the pool */
static void loop_pool_submit(struct ioloop *loop, struct io_request *req,
			     uint8_t opcode, struct iopool_job *job)
{
	loop_begin(loop, req, opcode);
	job->loop = loop;
	job->req = req;
	job->done.fn = loop_job_done;
	job->done.context = job;
	req->in_pool = true;
	req->pool_job = job;
	iopool_job_submit(loop->pool, job);
}

void ioloop_run_blocking(struct ioloop *loop, struct io_request *req,
			 int (*work)(void *arg), void *arg)
{
	struct iopool_job *job = mem_zalloc(sizeof(*job));

	job->work = work;
	job->arg = arg;
	atomic_fetch_add(&ioloop_stat_blocking_jobs, 1);
	loop_pool_submit(loop, req, IOLOOP_OP_BLOCKING, job);
}

/*
 * Operations: every io_*() fills an ioloop_call and hands it to
 * loop_start(), which picks io_uring or the pool.
 */

/* loop_prep_call - the SQE for call */
static void loop_prep_call(struct io_uring_sqe *sqe, const struct ioloop_call *call)
{
	unsigned int len = call->len > IOLOOP_MAX_RW_COUNT ?
		IOLOOP_MAX_RW_COUNT : (unsigned int)call->len;

	memset(sqe, 0, sizeof(*sqe));
	switch (call->opcode) {
	case IORING_OP_ACCEPT:
		io_uring_prep_accept(sqe, call->fd, call->addr, call->addrlen,
				     SOCK_CLOEXEC | SOCK_NONBLOCK);
		break;
	case IORING_OP_RECV:
		io_uring_prep_recv(sqe, call->fd, call->buf, len, 0);
		break;
	case IORING_OP_SEND:
		/* A vanished peer must give -EPIPE, not kill the process. */
		io_uring_prep_send(sqe, call->fd, call->buf, len, MSG_NOSIGNAL);
		break;
	case IORING_OP_POLL_ADD:
		io_uring_prep_poll_add(sqe, call->fd, call->mask);
		break;
	case IORING_OP_OPENAT:
		io_uring_prep_openat(sqe, call->fd, call->path, call->flags,
				     call->mode);
		break;
	case IORING_OP_READ:
	case IORING_OP_WRITE:
		/* offset -1 means "the file position", as in preadv2(). */
		io_uring_prep_rw(call->opcode, sqe, call->fd, call->buf, len,
				 call->offset);
		break;
	case IORING_OP_FSYNC:
		io_uring_prep_fsync(sqe, call->fd, call->flags != 0 ?
				    IORING_FSYNC_DATASYNC : 0);
		break;
	default:
		loop_prep_path_call(sqe, call);
		break;
	}
}

/* loop_start - submit call for req, on io_uring or on the pool */
static void loop_start(struct ioloop *loop, struct io_request *req,
		       const struct ioloop_call *call)
{
	struct io_uring_sqe sqe;
	struct ioloop_fallback *fb;

	if (loop->supported[call->opcode] &&
	    !(loop->force_fallback && loop_is_file_op(call->opcode))) {
		loop_prep_call(&sqe, call);
		loop_submit(loop, req, &sqe);
		return;
	}
	fb = mem_zalloc(sizeof(*fb));
	fb->call = *call;
	if (fb->call.len > IOLOOP_MAX_RW_COUNT)
		fb->call.len = IOLOOP_MAX_RW_COUNT;
	fb->job.work = loop_fallback_work;
	fb->job.arg = &fb->call;
	atomic_fetch_add(&ioloop_stat_fallbacks, 1);
	loop_pool_submit(loop, req, call->opcode, &fb->job);
}

void io_request_init(struct io_request *req, io_callback_t *callback,
		     void *context)
{
	memset(req, 0, sizeof(*req));
	req->callback = callback;
	req->context = context;
}

void io_accept(struct ioloop *loop, struct io_request *req, int fd,
	       struct sockaddr *addr, socklen_t *addrlen)
{
	struct ioloop_call call = { .opcode = IORING_OP_ACCEPT, .fd = fd,
		.addr = addr, .addrlen = addrlen };

	loop_start(loop, req, &call);
}

void io_recv(struct ioloop *loop, struct io_request *req, int fd,
	     void *buf, size_t len)
{
	struct ioloop_call call = { .opcode = IORING_OP_RECV, .fd = fd,
		.buf = buf, .len = len };

	loop_start(loop, req, &call);
}

void io_send(struct ioloop *loop, struct io_request *req, int fd,
	     const void *buf, size_t len)
{
	struct ioloop_call call = { .opcode = IORING_OP_SEND, .fd = fd,
		.buf = (void *)buf, .len = len };

	loop_start(loop, req, &call);
}

void io_poll(struct ioloop *loop, struct io_request *req, int fd,
	     unsigned int events)
{
	struct ioloop_call call = { .opcode = IORING_OP_POLL_ADD, .fd = fd,
		.mask = events };

	loop_start(loop, req, &call);
}

void io_timeout(struct ioloop *loop, struct io_request *req, uint64_t msecs)
{
	struct io_uring_sqe sqe;

	/* The timespec lives in the request: the kernel reads it after
	   this function returns. */
	req->timeout.tv_sec = (long long)(msecs / 1000);
	req->timeout.tv_nsec = (long long)(msecs % 1000) * 1000000;
	memset(&sqe, 0, sizeof(sqe));
	io_uring_prep_timeout(&sqe, &req->timeout, 0, 0);
	loop_submit(loop, req, &sqe);
}

void io_openat(struct ioloop *loop, struct io_request *req, int dirfd,
	       const char *path, int flags, mode_t mode)
{
	struct ioloop_call call = { .opcode = IORING_OP_OPENAT, .fd = dirfd,
		.path = path, .flags = flags, .mode = mode };

	loop_start(loop, req, &call);
}

void io_read(struct ioloop *loop, struct io_request *req, int fd,
	     void *buf, size_t len, uint64_t offset)
{
	struct ioloop_call call = { .opcode = IORING_OP_READ, .fd = fd,
		.buf = buf, .len = len, .offset = offset };

	loop_start(loop, req, &call);
}

void io_write(struct ioloop *loop, struct io_request *req, int fd,
	      const void *buf, size_t len, uint64_t offset)
{
	struct ioloop_call call = { .opcode = IORING_OP_WRITE, .fd = fd,
		.buf = (void *)buf, .len = len, .offset = offset };

	loop_start(loop, req, &call);
}

void io_fsync(struct ioloop *loop, struct io_request *req, int fd,
	      bool datasync)
{
	struct ioloop_call call = { .opcode = IORING_OP_FSYNC, .fd = fd,
		.flags = datasync ? 1 : 0 };

	loop_start(loop, req, &call);
}

void io_statx(struct ioloop *loop, struct io_request *req, int dirfd,
	      const char *path, int flags, unsigned int mask,
	      struct statx *statx_r)
{
	struct ioloop_call call = { .opcode = IORING_OP_STATX, .fd = dirfd,
		.path = path, .flags = flags, .mask = mask, .statx_buf = statx_r };

	loop_start(loop, req, &call);
}

void io_renameat(struct ioloop *loop, struct io_request *req,
		 int old_dirfd, const char *old_path,
		 int new_dirfd, const char *new_path, unsigned int flags)
{
	struct ioloop_call call = { .opcode = IORING_OP_RENAMEAT,
		.fd = old_dirfd, .path = old_path, .fd2 = new_dirfd,
		.path2 = new_path, .flags = (int)flags };

	loop_start(loop, req, &call);
}

void io_linkat(struct ioloop *loop, struct io_request *req,
	       int old_dirfd, const char *old_path,
	       int new_dirfd, const char *new_path, int flags)
{
	struct ioloop_call call = { .opcode = IORING_OP_LINKAT,
		.fd = old_dirfd, .path = old_path, .fd2 = new_dirfd,
		.path2 = new_path, .flags = flags };

	loop_start(loop, req, &call);
}

void io_unlinkat(struct ioloop *loop, struct io_request *req, int dirfd,
		 const char *path, int flags)
{
	struct ioloop_call call = { .opcode = IORING_OP_UNLINKAT, .fd = dirfd,
		.path = path, .flags = flags };

	loop_start(loop, req, &call);
}

void io_mkdirat(struct ioloop *loop, struct io_request *req, int dirfd,
		const char *path, mode_t mode)
{
	struct ioloop_call call = { .opcode = IORING_OP_MKDIRAT, .fd = dirfd,
		.path = path, .mode = mode };

	loop_start(loop, req, &call);
}

void io_close(struct ioloop *loop, struct io_request *req, int fd)
{
	struct ioloop_call call = { .opcode = IORING_OP_CLOSE, .fd = fd };

	loop_start(loop, req, &call);
}

/* loop_cancel_sqe - queue an ASYNC_CANCEL whose own CQE is swallowed */
static void loop_cancel_sqe(struct ioloop *loop, struct io_request *req)
{
	struct io_uring_sqe sqe;

	memset(&sqe, 0, sizeof(sqe));
	io_uring_prep_cancel(&sqe, req, 0);
	io_uring_sqe_set_data(&sqe, &loop->cancel_tag);
	loop->internal_inflight++;
	loop_queue_sqe(loop, &sqe);
}

void io_cancel(struct ioloop *loop, struct io_request *req)
{
	loop_check_thread(loop, "io_cancel");
	if (!req->pending)
		return;
	if (req->loop != loop)
		log_panic("io_cancel: request belongs to ioloop %s, not %s",
			  req->loop->name, loop->name);
	if (!req->in_pool) {
		loop_cancel_sqe(loop, req);
		return;
	}
	/* A queued job is completed with -ECANCELED through the normal
	   posted path, never from inside io_cancel(): callers must be able
	   to cancel from anywhere without their callback re-entering them. */
	if (iopool_job_cancel(loop->pool, req->pool_job)) {
		struct iopool_job *job = req->pool_job;

		job->result = -ECANCELED;
		ioloop_post_item(loop, &job->done);
	}
}

/*
 * Cross-thread posting
 */

/* loop_wake - make a waiting loop return from io_uring_enter */
static void loop_wake(struct ioloop *loop)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is saturated: a wake-up is pending. */
	if (write(loop->event_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_panic("ioloop %s: eventfd write failed: %s", loop->name,
			  strerror(errno));
}

void ioloop_post_item(struct ioloop *loop, struct ioloop_post_item *item)
{
	bool was_empty;

	item->next = NULL;
	pthread_mutex_lock(&loop->post_lock);
	was_empty = loop->post_head == NULL;
	if (was_empty)
		loop->post_head = item;
	else
		loop->post_tail->next = item;
	loop->post_tail = item;
	/* An empty list may mean the loop is asleep; a non-empty one means
	   a wake-up is already on its way. The loop's own thread runs the
	   list before it sleeps again. The write happens under the lock:
	   once it is released the loop may run the item, finish and be
	   destroyed, so this thread must not touch the loop after that. */
	if (was_empty && !ioloop_is_current_thread(loop))
		loop_wake(loop);
	pthread_mutex_unlock(&loop->post_lock);
}

struct ioloop_post_call {
	struct ioloop_post_item item;
	void (*fn)(void *context);
	void *context;
};

/* loop_post_call_run - run and free one ioloop_post() record */
static void loop_post_call_run(void *context)
{
	struct ioloop_post_call *call = context;
	void (*fn)(void *) = call->fn;
	void *fn_context = call->context;

	free(call);
	fn(fn_context);
}

void ioloop_post(struct ioloop *loop, void (*fn)(void *context), void *context)
{
	struct ioloop_post_call *call = mem_zalloc(sizeof(*call));

	call->fn = fn;
	call->context = context;
	call->item.fn = loop_post_call_run;
	call->item.context = call;
	ioloop_post_item(loop, &call->item);
}

void ioloop_stop_async(struct ioloop *loop)
{
	/* Under the lock for the same reason as in ioloop_post_item(). */
	pthread_mutex_lock(&loop->post_lock);
	atomic_store(&loop->stop_async, true);
	if (!ioloop_is_current_thread(loop))
		loop_wake(loop);
	pthread_mutex_unlock(&loop->post_lock);
}

void ioloop_stop(struct ioloop *loop)
{
	loop->stop = true;
}

/* loop_run_posted - run queued items; true if more were posted meanwhile */
static bool loop_run_posted(struct ioloop *loop)
{
	struct ioloop_post_item *item, *rest;
	bool more;

	pthread_mutex_lock(&loop->post_lock);
	item = loop->post_head;
	loop->post_head = loop->post_tail = NULL;
	pthread_mutex_unlock(&loop->post_lock);

	while (item != NULL && !loop->stop) {
		struct ioloop_post_item *next = item->next;

		item->fn(item->context);
		item = next;
	}
	rest = item;

	pthread_mutex_lock(&loop->post_lock);
	if (rest != NULL) {
		/* Stopped mid-list: keep the remainder in front, in order. */
		struct ioloop_post_item *last = rest;

		while (last->next != NULL)
			last = last->next;
		last->next = loop->post_head;
		if (loop->post_head == NULL)
			loop->post_tail = last;
		loop->post_head = rest;
	}
	more = loop->post_head != NULL;
	pthread_mutex_unlock(&loop->post_lock);
	return more;
}

/* loop_arm_event_read - keep a read pending on the wake-up eventfd */
static void loop_arm_event_read(struct ioloop *loop)
{
	struct io_uring_sqe sqe;

	memset(&sqe, 0, sizeof(sqe));
	io_uring_prep_read(&sqe, loop->event_fd, &loop->event_value,
			   sizeof(loop->event_value), 0);
	loop_submit(loop, &loop->event_req, &sqe);
}

/* ioloop_event_read_done - wake-up eventfd was read: re-arm it */
static void ioloop_event_read_done(struct io_request *req, int result)
{
	struct ioloop *loop = req->context;

	if (loop->destroying)
		return;
	if (result < 0 && result != -EAGAIN && result != -EINTR)
		log_panic("ioloop %s: eventfd read failed: %s", loop->name,
			  strerror(-result));
	/* The posted list itself is run by the main loop. */
	loop_arm_event_read(loop);
}

/*
 * Dispatch
 */

/* loop_enter - submit queued SQEs and wait for at least wait_nr CQEs */
static void loop_enter(struct ioloop *loop, unsigned int wait_nr)
{
	int ret;

	loop_backlog_flush(loop);
	/* With DEFER_TASKRUN completions are only produced when we ask for
	   events, so a non-waiting pass still has to "get events". */
	if (wait_nr == 0)
		ret = io_uring_submit_and_get_events(&loop->ring);
	else
		ret = io_uring_submit_and_wait(&loop->ring, wait_nr);
	if (ret >= 0 || ret == -EINTR || ret == -ETIME)
		return;
	/* -EBUSY: the CQ overflowed and the kernel wants us to reap first.
	   -EAGAIN: transient lack of memory. Both: reap, then try again. */
	if (ret == -EBUSY || ret == -EAGAIN)
		return;
	log_fatal("ioloop %s: io_uring_enter failed: %s", loop->name,
		  strerror(-ret));
}

/* loop_dispatch - the one place where CQEs turn into callbacks */
static void loop_dispatch(struct ioloop *loop, void *user_data, int result)
{
	if (user_data == &loop->cancel_tag) {
		/* The cancel op's own result (0, -ENOENT, -EALREADY) says
		   nothing the target's completion will not say. */
		loop->internal_inflight--;
		return;
	}
	loop_complete(loop, user_data, result);
}

/* loop_reap - dispatch the CQEs that are ready; stops early on stop */
static void loop_reap(struct ioloop *loop)
{
	struct io_uring_cqe *cqe;

	while (!loop->stop && io_uring_peek_cqe(&loop->ring, &cqe) == 0) {
		void *user_data = io_uring_cqe_get_data(cqe);
		int result = cqe->res;

		/* Free the CQ slot first: the callback may submit a lot. */
		io_uring_cqe_seen(&loop->ring, cqe);
		loop_dispatch(loop, user_data, result);
	}
}

int ioloop_run(struct ioloop *loop)
{
	bool more_posted;

	loop_check_thread(loop, "ioloop_run");
	if (loop->running)
		log_panic("ioloop_run(%s) called recursively", loop->name);
	loop->running = true;
	loop->stop = false;
	while (!loop->stop) {
		if (atomic_exchange(&loop->stop_async, false))
			break;
		more_posted = loop_run_posted(loop);
		if (loop->stop)
			break;
		loop_enter(loop, more_posted ? 0 : 1);
		loop_reap(loop);
	}
	loop->running = false;
	return 0;
}

/*
 * Create / destroy
 */

struct ioloop *ioloop_create(const struct ioloop_settings *set)
{
	struct ioloop *loop = mem_zalloc(sizeof(*loop));
	unsigned int depth = set->queue_depth == 0 ?
		IOLOOP_DEFAULT_QUEUE_DEPTH : set->queue_depth;
	int ret;

	if (set->pool == NULL)
		log_panic("ioloop_create: settings.pool is required");
	loop->name = mem_strdup(set->name != NULL ? set->name : "ioloop");
	loop->pool = set->pool;
	loop->force_fallback = set->force_fallback;
	loop->thread = pthread_self();
	atomic_init(&loop->stop_async, false);

	ret = loop_ring_init(loop, depth);
	if (ret < 0)
		loop_ring_fatal(loop->name, -ret);
	loop_probe(loop);
	loop_log_fallbacks(loop);

	if ((ret = pthread_mutex_init(&loop->post_lock, NULL)) != 0)
		log_fatal("ioloop %s: pthread_mutex_init: %s", loop->name,
			  strerror(ret));
	loop->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->event_fd < 0)
		log_fatal("ioloop %s: eventfd: %s", loop->name, strerror(errno));
	io_request_init(&loop->event_req, ioloop_event_read_done, loop);
	loop_arm_event_read(loop);
	return loop;
}

/* loop_drain_internal - cancel the eventfd read, reap internal CQEs */
static void loop_drain_internal(struct ioloop *loop)
{
	loop->destroying = true;
	if (loop->event_req.pending)
		loop_cancel_sqe(loop, &loop->event_req);
	while (loop->event_req.pending || loop->internal_inflight > 0) {
		loop->stop = false;
		loop_enter(loop, 1);
		loop_reap(loop);
	}
}

/* loop_drop_posted - free posts that never ran (ioloop_post() records) */
static void loop_drop_posted(struct ioloop *loop)
{
	struct ioloop_post_item *item = loop->post_head;
	unsigned int count = 0;

	while (item != NULL) {
		struct ioloop_post_item *next = item->next;

		/* Pool completions cannot be here: their requests are
		   pending, which destroy already refused. */
		if (item->fn == loop_post_call_run)
			free(item->context);
		count++;
		item = next;
	}
	loop->post_head = loop->post_tail = NULL;
	if (count > 0)
		log_warn("ioloop %s destroyed with %u posted callbacks not run",
			 loop->name, count);
}

void ioloop_destroy(struct ioloop **_loop)
{
	struct ioloop *loop = *_loop;

	if (loop == NULL)
		return;
	*_loop = NULL;
	loop_check_thread(loop, "ioloop_destroy");
	if (loop->pending > 0)
		log_panic("ioloop_destroy(%s): %u requests still pending",
			  loop->name, loop->pending);
	loop_drain_internal(loop);
	/* Taking the lock also waits out a thread still inside
	   ioloop_post_item() or ioloop_stop_async(). */
	pthread_mutex_lock(&loop->post_lock);
	loop_drop_posted(loop);
	pthread_mutex_unlock(&loop->post_lock);
	io_uring_queue_exit(&loop->ring);
	if (close(loop->event_fd) < 0)
		log_error("ioloop %s: close(eventfd): %s", loop->name,
			  strerror(errno));
	pthread_mutex_destroy(&loop->post_lock);
	free(loop->backlog);
	free(loop->name);
	free(loop);
}
