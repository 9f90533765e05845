/*
 * sio.c - spool I/O: one straight-line API, carried out synchronously or
 * on an ioloop from inside a coroutine.
 *
 * Every call first decides how it runs (sio_coro()):
 *
 *   - sync sio, or loop sio called outside any coroutine: the plain
 *     system call, restarted on EINTR, errno turned into -errno. The
 *     fallback exists so that setup code (before any session coroutine
 *     is running) can share the store with the daemon; it blocks the
 *     loop's thread, so it must stay rare.
 *
 *   - loop sio inside a coroutine: the request lives on the coroutine's
 *     stack (struct sio_wait). It is submitted with the io_*() call of the
 *     same name, and the coroutine yields until the completion callback
 *     stores the result and resumes it. The request, path and buffers stay
 *     valid for the kernel because the coroutine's stack frame does not go
 *     away while it is suspended - which is also why a coroutine waiting
 *     here must never be abandoned (its loop refuses to be destroyed while
 *     the request is pending, see ioloop.h).
 *
 * What io_uring cannot do here - ftruncate (not in liburing 2.3) and
 * directory listings - runs as a job on the loop's blocking pool through
 * ioloop_run_blocking(): the work function runs on a pool thread and its
 * return value comes back as the request's result on the loop thread.
 * The work functions only touch their argument struct (on the waiting
 * coroutine's stack) and thread-safe libc.
 *
 * Locks: lock_acquire() always completes through a loop. In sync mode we
 * run the sio's loop until our callback arrives (ioloop_run() may return
 * earlier for someone else's stop; we just run it again); so a sync
 * sio_lock() must not be called from inside a callback of that loop
 * (ioloop_run() panics on recursion). In loop mode the
 * coroutine yields until the callback resumes it. A loop-mode lock wait
 * outside a coroutine would have to run the loop recursively, which the
 * loop forbids: that is a caller bug and panics.
 *
 * Statistics count one per system call or request at this level:
 * sio_fsync_dir() counts three (open, fsync, close), a sio_pread() one per
 * chunk (usually one), a listing one. sio_lock() is not counted.
 *
 * ESTALE (a stale NFS file handle: the file or a directory on the way was
 * replaced on the server since the client looked it up) is retried up to
 * SIO_ESTALE_RETRIES more times for the calls that take a path - openat,
 * fstatat, renameat, linkat, unlinkat, mkdirat: doing the call again
 * looks the path up again and usually finds the new object. That cannot
 * help when the stale handle is dirfd itself, nor for calls on a file
 * descriptor (pread, fstat, fsync ...): those return -ESTALE, which the
 * store reports as a temporary failure (STORE_ERR_TEMP) after logging.
 * A rename or unlink that failed with ESTALE did not happen, so repeating
 * it is safe. sio_inject_fault() lets tests make any of these fail.
 *
 * A sync sio may be created without a loop (sio_create_sync(NULL)) when
 * it never waits for a lock; sio_lock() on it panics.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "io/ioloop.h"
#include "io/coro.h"
#include "sio.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Linux transfers at most this much per read/write; we ask for no more,
   so that one chunk's byte count always fits the int result. */
#define SIO_MAX_CHUNK 0x7ffff000u
/* Extra attempts of a path-based call that failed with ESTALE. */
#define SIO_ESTALE_RETRIES 3

struct sio {
	struct ioloop *loop;	/* borrowed; may be NULL in sync mode */
	bool async;
	/* sio_inject_fault(): the next fault_count calls of fault_op fail. */
	enum sio_op fault_op;
	int fault_err;
	unsigned int fault_count;
};

/* One request a coroutine waits for; lives on the coroutine's stack. */
struct sio_wait {
	struct io_request req;
	struct coro *coro;
	int result;
	bool done;
};

static atomic_uint_fast64_t sio_stat_uring;
static atomic_uint_fast64_t sio_stat_pool;
static atomic_uint_fast64_t sio_stat_sync;

/*
 * Create / destroy
 */

static struct sio *sio_create(struct ioloop *loop, bool async)
{
	struct sio *sio = mem_zalloc(sizeof(*sio));

	sio->loop = loop;
	sio->async = async;
	return sio;
}

struct sio *sio_create_sync(struct ioloop *loop)
{
	return sio_create(loop, false);
}

struct sio *sio_create_loop(struct ioloop *loop)
{
	if (loop == NULL)
		log_panic("sio_create_loop: loop is NULL");
	return sio_create(loop, true);
}

void sio_destroy(struct sio **sio)
{
	MEM_FREE(sio);
}

bool sio_is_async(const struct sio *sio)
{
	return sio->async;
}

struct ioloop *sio_get_loop(const struct sio *sio)
{
	return sio->loop;
}

void sio_get_stats(struct sio_stats *stats_r)
{
	stats_r->uring_ops = atomic_load(&sio_stat_uring);
	stats_r->pool_ops = atomic_load(&sio_stat_pool);
	stats_r->sync_ops = atomic_load(&sio_stat_sync);
}

/*
 * Waiting for a request from a coroutine
 */

/* sio_coro - the coroutine this call waits in; NULL: make it sync */
static struct coro *sio_coro(const struct sio *sio)
{
	struct coro *coro;

	if (!sio->async || (coro = coro_current()) == NULL) {
		atomic_fetch_add(&sio_stat_sync, 1);
		return NULL;
	}
	if (coro_get_loop(coro) != sio->loop)
		log_panic("sio: loop-mode call from a coroutine of loop %s "
			  "on an sio of loop %s",
			  ioloop_name(coro_get_loop(coro)),
			  ioloop_name(sio->loop));
	return coro;
}

/* sio_wait_done - completion: record the result, wake the coroutine */
static void sio_wait_done(struct io_request *req, int result)
{
	struct sio_wait *wait = req->context;

	wait->result = result;
	wait->done = true;
	coro_resume(wait->coro);
}

/* sio_wait_prepare - prepare wait for one submission by coro */
static struct io_request *sio_wait_prepare(struct sio_wait *wait,
					   struct coro *coro)
{
	io_request_init(&wait->req, sio_wait_done, wait);
	wait->coro = coro;
	wait->result = 0;
	wait->done = false;
	return &wait->req;
}

/* sio_wait_init - prepare wait for one io_uring submission (counted) */
static struct io_request *sio_wait_init(struct sio_wait *wait,
					struct coro *coro)
{
	atomic_fetch_add(&sio_stat_uring, 1);
	return sio_wait_prepare(wait, coro);
}

/* sio_wait_yield - yield until the submitted request completed */
static int sio_wait_yield(struct sio_wait *wait)
{
	/* A loop, not a single yield: only the completion sets done. */
	while (!wait->done)
		coro_yield();
	return wait->result;
}

/* sio_run_blocking - run work(arg) on the pool, yield until it is done */
static int sio_run_blocking(struct sio *sio, struct coro *coro,
			    int (*work)(void *arg), void *arg)
{
	struct sio_wait wait;

	atomic_fetch_add(&sio_stat_pool, 1);
	ioloop_run_blocking(sio->loop, sio_wait_prepare(&wait, coro), work,
			    arg);
	return sio_wait_yield(&wait);
}

/* sio_syscall_result - a system call's return value as ours */
static inline int sio_syscall_result(int ret)
{
	return ret < 0 ? -errno : ret;
}

/* sio_fault - an injected failure for op, or 0 */
static int sio_fault(struct sio *sio, enum sio_op op)
{
	if (sio->fault_count == 0 || sio->fault_op != op)
		return 0;
	sio->fault_count--;
	return -sio->fault_err;
}

/* sio_inject_fault - tests: fail the next count calls of op */
void sio_inject_fault(struct sio *sio, enum sio_op op, int err,
		      unsigned int count)
{
	sio->fault_op = op;
	sio->fault_err = err;
	sio->fault_count = count;
}

/*
 * Files
 */

static int sio_openat_once(struct sio *sio, int dirfd, const char *path,
			   int flags, mode_t mode)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	flags |= O_CLOEXEC;
	if (coro == NULL) {
		do {
			ret = openat(dirfd, path, flags, mode);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_openat(sio->loop, sio_wait_init(&wait, coro), dirfd, path,
			  flags, mode);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

int sio_close(struct sio *sio, int fd)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		ret = sio_syscall_result(close(fd));
	} else {
		io_close(sio->loop, sio_wait_init(&wait, coro), fd);
		ret = sio_wait_yield(&wait);
	}
	/* Never retry close(): on Linux the fd is gone even after EINTR,
	   and a retry could close an fd another thread just got. Our data
	   was made durable by fsync before, not by close. */
	return ret == -EINTR ? 0 : ret;
}

/* sio_read_chunk - one read of at most SIO_MAX_CHUNK bytes */
static int sio_read_chunk(struct sio *sio, int fd, void *buf, size_t size,
			  uint64_t offset)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	ssize_t ret;

	if (coro == NULL) {
		do {
			ret = pread(fd, buf, size, (off_t)offset);
		} while (ret < 0 && errno == EINTR);
		return ret < 0 ? -errno : (int)ret;
	}
	do {
		io_read(sio->loop, sio_wait_init(&wait, coro), fd, buf, size,
			offset);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return (int)ret;
}

/* sio_write_chunk - one write of at most SIO_MAX_CHUNK bytes */
static int sio_write_chunk(struct sio *sio, int fd, const void *buf,
			   size_t size, uint64_t offset)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	ssize_t ret;

	if (coro == NULL) {
		do {
			ret = pwrite(fd, buf, size, (off_t)offset);
		} while (ret < 0 && errno == EINTR);
		return ret < 0 ? -errno : (int)ret;
	}
	do {
		io_write(sio->loop, sio_wait_init(&wait, coro), fd, buf, size,
			 offset);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return (int)ret;
}

ssize_t sio_pread(struct sio *sio, int fd, void *buf, size_t size,
		  uint64_t offset)
{
	size_t done = 0;
	int ret;

	if ((ret = sio_fault(sio, SIO_OP_PREAD)) < 0)
		return ret;
	while (done < size) {
		size_t chunk = size - done > SIO_MAX_CHUNK ?
			SIO_MAX_CHUNK : size - done;

		ret = sio_read_chunk(sio, fd, (char *)buf + done, chunk,
				     offset + done);
		if (ret < 0)
			return ret;
		if (ret == 0)
			break;	/* end of file */
		done += (size_t)ret;
	}
	return (ssize_t)done;
}

ssize_t sio_pwrite(struct sio *sio, int fd, const void *buf, size_t size,
		   uint64_t offset)
{
	size_t done = 0;
	int ret;

	while (done < size) {
		size_t chunk = size - done > SIO_MAX_CHUNK ?
			SIO_MAX_CHUNK : size - done;

		ret = sio_write_chunk(sio, fd, (const char *)buf + done,
				      chunk, offset + done);
		if (ret < 0)
			return ret;
		/* A regular file never takes zero bytes of a non-empty
		   write; looping on it would never end. */
		if (ret == 0)
			return -EIO;
		done += (size_t)ret;
	}
	return (ssize_t)done;
}

int sio_fsync(struct sio *sio, int fd, bool datasync)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		do {
			ret = datasync ? fdatasync(fd) : fsync(fd);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_fsync(sio->loop, sio_wait_init(&wait, coro), fd, datasync);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

int sio_fsync_dir(struct sio *sio, int dirfd, const char *path)
{
	int fd, ret, close_ret;

	fd = sio_openat(sio, dirfd, path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	ret = sio_fsync(sio, fd, false);
	close_ret = sio_close(sio, fd);
	return ret < 0 ? ret : close_ret;
}

/* sio_statx_to_stat - the struct stat that fstatat() would have filled */
static void sio_statx_to_stat(const struct statx *stx, struct stat *st_r)
{
	memset(st_r, 0, sizeof(*st_r));
	st_r->st_dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
	st_r->st_ino = stx->stx_ino;
	st_r->st_mode = stx->stx_mode;
	st_r->st_nlink = stx->stx_nlink;
	st_r->st_uid = stx->stx_uid;
	st_r->st_gid = stx->stx_gid;
	st_r->st_rdev = makedev(stx->stx_rdev_major, stx->stx_rdev_minor);
	st_r->st_size = (off_t)stx->stx_size;
	st_r->st_blksize = (blksize_t)stx->stx_blksize;
	st_r->st_blocks = (blkcnt_t)stx->stx_blocks;
	st_r->st_atim.tv_sec = stx->stx_atime.tv_sec;
	st_r->st_atim.tv_nsec = stx->stx_atime.tv_nsec;
	st_r->st_mtim.tv_sec = stx->stx_mtime.tv_sec;
	st_r->st_mtim.tv_nsec = stx->stx_mtime.tv_nsec;
	st_r->st_ctim.tv_sec = stx->stx_ctime.tv_sec;
	st_r->st_ctim.tv_nsec = stx->stx_ctime.tv_nsec;
}

/* sio_statx - loop mode fstat/fstatat: IORING_OP_STATX */
static int sio_statx(struct sio *sio, struct coro *coro, int dirfd,
		     const char *path, int flags, struct stat *st_r)
{
	struct sio_wait wait;
	struct statx stx;
	int ret;

	do {
		io_statx(sio->loop, sio_wait_init(&wait, coro), dirfd, path,
			 flags, STATX_BASIC_STATS, &stx);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	if (ret == 0)
		sio_statx_to_stat(&stx, st_r);
	return ret;
}

/* sio_fstat_flags - fstat through statx; sync_flag 0 or
   AT_STATX_FORCE_SYNC */
static int sio_fstat_flags(struct sio *sio, int fd, int sync_flag,
			   struct stat *st_r)
{
	int fault = sio_fault(sio, SIO_OP_FSTAT);

	if (fault < 0)
		return fault;
	struct coro *coro = sio_coro(sio);
	struct statx stx;
	int ret;

	if (coro != NULL)
		return sio_statx(sio, coro, fd, "", AT_EMPTY_PATH | sync_flag,
				 st_r);
	do {
		ret = statx(fd, "", AT_EMPTY_PATH | sync_flag,
			    STATX_BASIC_STATS, &stx);
	} while (ret < 0 && errno == EINTR);
	if (ret == 0)
		sio_statx_to_stat(&stx, st_r);
	return sio_syscall_result(ret);
}

int sio_fstat(struct sio *sio, int fd, struct stat *st_r)
{
	return sio_fstat_flags(sio, fd, 0, st_r);
}

int sio_fstat_fresh(struct sio *sio, int fd, struct stat *st_r)
{
	return sio_fstat_flags(sio, fd, AT_STATX_FORCE_SYNC, st_r);
}

/* sio_fstatat_open - stat path by opening it (open_flags | O_RDONLY) and
   fstat()ing the descriptor: on NFS the open revalidates the attributes
   (close-to-open consistency) where a plain stat may be answered from
   the client's caches. ESTALE from the fstat (another node replaced the
   file in between) opens the name again, up to three tries. */
int sio_fstatat_open(struct sio *sio, int dirfd, const char *path,
		     int open_flags, struct stat *st_r)
{
	int fd, ret;

	for (int tries = 0;; tries++) {
		fd = sio_openat(sio, dirfd, path, O_RDONLY | open_flags, 0);
		if (fd < 0)
			return fd;
		ret = sio_fstat(sio, fd, st_r);
		(void)sio_close(sio, fd);
		if (ret != -ESTALE || tries == 2)
			return ret;
	}
}

static int sio_fstatat_once(struct sio *sio, int dirfd, const char *path,
			    struct stat *st_r, int flags)
{
	struct coro *coro = sio_coro(sio);
	int ret;

	if (coro != NULL)
		return sio_statx(sio, coro, dirfd, path, flags, st_r);
	do {
		ret = fstatat(dirfd, path, st_r, flags);
	} while (ret < 0 && errno == EINTR);
	return sio_syscall_result(ret);
}

struct sio_truncate_args {
	int fd;
	uint64_t size;
};

/* sio_truncate_work - pool thread: ftruncate */
static int sio_truncate_work(void *arg)
{
	const struct sio_truncate_args *args = arg;
	int ret;

	do {
		ret = ftruncate(args->fd, (off_t)args->size);
	} while (ret < 0 && errno == EINTR);
	return sio_syscall_result(ret);
}

int sio_ftruncate(struct sio *sio, int fd, uint64_t size)
{
	struct coro *coro = sio_coro(sio);
	struct sio_truncate_args args = { .fd = fd, .size = size };

	if (size > INT64_MAX)
		return -EFBIG;
	if (coro == NULL)
		return sio_truncate_work(&args);
	return sio_run_blocking(sio, coro, sio_truncate_work, &args);
}

/*
 * Names
 */

static int sio_renameat_once(struct sio *sio, int olddirfd,
			     const char *oldpath, int newdirfd,
			     const char *newpath, unsigned int flags)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		do {
			ret = renameat2(olddirfd, oldpath, newdirfd, newpath,
					flags);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_renameat(sio->loop, sio_wait_init(&wait, coro), olddirfd,
			    oldpath, newdirfd, newpath, flags);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

static int sio_linkat_once(struct sio *sio, int olddirfd,
			   const char *oldpath, int newdirfd,
			   const char *newpath)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		do {
			ret = linkat(olddirfd, oldpath, newdirfd, newpath, 0);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_linkat(sio->loop, sio_wait_init(&wait, coro), olddirfd,
			  oldpath, newdirfd, newpath, 0);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

static int sio_unlinkat_once(struct sio *sio, int dirfd, const char *path,
			     int flags)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		do {
			ret = unlinkat(dirfd, path, flags);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_unlinkat(sio->loop, sio_wait_init(&wait, coro), dirfd, path,
			    flags);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

static int sio_mkdirat_once(struct sio *sio, int dirfd, const char *path,
			    mode_t mode)
{
	struct coro *coro = sio_coro(sio);
	struct sio_wait wait;
	int ret;

	if (coro == NULL) {
		do {
			ret = mkdirat(dirfd, path, mode);
		} while (ret < 0 && errno == EINTR);
		return sio_syscall_result(ret);
	}
	do {
		io_mkdirat(sio->loop, sio_wait_init(&wait, coro), dirfd, path,
			   mode);
		ret = sio_wait_yield(&wait);
	} while (ret == -EINTR);
	return ret;
}

/*
 * ESTALE: path-based calls are retried (see the top)
 */

#define SIO_RETRY(op, call) do {					\
	int ret_, tries_ = 0;						\
									\
	do {								\
		ret_ = sio_fault(sio, op);				\
		if (ret_ == 0)						\
			ret_ = call;					\
	} while (ret_ == -ESTALE && tries_++ < SIO_ESTALE_RETRIES);	\
	return ret_;							\
} while (0)

/* sio_openat - with ESTALE retries */
int sio_openat(struct sio *sio, int dirfd, const char *path, int flags,
	       mode_t mode)
{
	SIO_RETRY(SIO_OP_OPENAT, sio_openat_once(sio, dirfd, path, flags, mode));
}

/* sio_fstatat - with ESTALE retries */
int sio_fstatat(struct sio *sio, int dirfd, const char *path,
		struct stat *st_r, int flags)
{
	SIO_RETRY(SIO_OP_FSTATAT, sio_fstatat_once(sio, dirfd, path, st_r, flags));
}

/* sio_renameat - with ESTALE retries */
int sio_renameat(struct sio *sio, int olddirfd, const char *oldpath,
		 int newdirfd, const char *newpath, unsigned int flags)
{
	SIO_RETRY(SIO_OP_RENAMEAT, sio_renameat_once(sio, olddirfd, oldpath,
						     newdirfd, newpath, flags));
}

/* sio_linkat - with ESTALE retries */
int sio_linkat(struct sio *sio, int olddirfd, const char *oldpath,
	       int newdirfd, const char *newpath)
{
	SIO_RETRY(SIO_OP_LINKAT, sio_linkat_once(sio, olddirfd, oldpath,
						 newdirfd, newpath));
}

/* sio_unlinkat - with ESTALE retries */
int sio_unlinkat(struct sio *sio, int dirfd, const char *path, int flags)
{
	SIO_RETRY(SIO_OP_UNLINKAT, sio_unlinkat_once(sio, dirfd, path, flags));
}

/* sio_mkdirat - with ESTALE retries */
int sio_mkdirat(struct sio *sio, int dirfd, const char *path, mode_t mode)
{
	SIO_RETRY(SIO_OP_MKDIRAT, sio_mkdirat_once(sio, dirfd, path, mode));
}

/*
 * Directory listings
 */

/* sio_opendir - open dirfd/path for listing */
static int sio_opendir(int dirfd, const char *path, DIR **dir_r)
{
	int fd;

	do {
		fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -errno;
	if ((*dir_r = fdopendir(fd)) == NULL) {
		int err = errno;

		(void)close(fd);
		return -err;
	}
	return 0;
}

/* sio_is_dot - "." or ".." */
static inline bool sio_is_dot(const char *name)
{
	return name[0] == '.' &&
		(name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/* sio_readdir_sync - list in this thread, calling cb as we go */
static int sio_readdir_sync(int dirfd, const char *path,
			    sio_readdir_callback_t *cb, void *context)
{
	struct dirent *d;
	DIR *dir;
	int ret;

	if ((ret = sio_opendir(dirfd, path, &dir)) < 0)
		return ret;
	for (;;) {
		errno = 0;
		if ((d = readdir(dir)) == NULL) {
			ret = -errno;
			break;
		}
		if (sio_is_dot(d->d_name))
			continue;
		if ((ret = cb(d->d_name, d->d_type, context)) != 0)
			break;
	}
	(void)closedir(dir);
	return ret;
}

struct sio_list_args {
	int dirfd;
	const char *path;
	/* Filled by the pool thread: entries packed as
	   <d_type byte><name><NUL>, one after the other. */
	struct buffer entries;
};

/* sio_list_work - pool thread: collect the names of a directory */
static int sio_list_work(void *arg)
{
	struct sio_list_args *args = arg;
	struct dirent *d;
	DIR *dir;
	int ret;

	if ((ret = sio_opendir(args->dirfd, args->path, &dir)) < 0)
		return ret;
	for (;;) {
		errno = 0;
		if ((d = readdir(dir)) == NULL) {
			ret = -errno;
			break;
		}
		if (sio_is_dot(d->d_name))
			continue;
		/* Unlimited buffer: appends cannot fail. */
		(void)buffer_append_byte(&args->entries, d->d_type);
		(void)buffer_append(&args->entries, d->d_name,
				    strlen(d->d_name) + 1);
	}
	(void)closedir(dir);
	return ret;
}

/* sio_list_deliver - hand the collected entries to cb, on our thread */
static int sio_list_deliver(const struct buffer *entries,
			    sio_readdir_callback_t *cb, void *context)
{
	/* Raw walk over the packed records written by sio_list_work(). */
	const unsigned char *p = entries->data;
	const unsigned char *end = p + entries->used;
	int ret;

	while (p < end) {
		const char *name = (const char *)p + 1;

		if ((ret = cb(name, p[0], context)) != 0)
			return ret;
		p += 1 + strlen(name) + 1;
	}
	return 0;
}

int sio_readdir(struct sio *sio, int dirfd, const char *path,
		sio_readdir_callback_t *cb, void *context)
{
	struct coro *coro = sio_coro(sio);
	struct sio_list_args args = { .dirfd = dirfd, .path = path };
	int ret;

	if (coro == NULL)
		return sio_readdir_sync(dirfd, path, cb, context);
	buffer_init(&args.entries, 0);
	ret = sio_run_blocking(sio, coro, sio_list_work, &args);
	if (ret == 0)
		ret = sio_list_deliver(&args.entries, cb, context);
	buffer_clear(&args.entries);
	return ret;
}

/*
 * Locks
 */

struct sio_lock_wait {
	struct ioloop *loop;
	struct coro *coro;	/* NULL: sync mode */
	int result;
	bool done;
};

/* sio_lock_done - lock callback: record, then wake the waiter */
static void sio_lock_done(struct lock *lock ATTR_UNUSED, int result,
			  void *context)
{
	struct sio_lock_wait *wait = context;

	wait->result = result;
	wait->done = true;
	if (wait->coro != NULL)
		coro_resume(wait->coro);
	else
		ioloop_stop(wait->loop);
}

int sio_lock(struct sio *sio, struct lock *lock, enum lock_mode mode,
	     unsigned int flags, uint64_t timeout_msecs)
{
	struct sio_lock_wait wait = { .loop = sio->loop };

	if (sio->loop == NULL)
		log_panic("sio_lock(%s): sync sio created without a loop",
			  lock_get_name(lock));
	if (sio->async) {
		wait.coro = coro_current();
		if (wait.coro == NULL)
			log_panic("sio_lock(%s): loop-mode sio used outside a "
				  "coroutine (would need to run the loop "
				  "recursively)", lock_get_name(lock));
	}
	lock_acquire(lock, sio->loop, mode, flags, timeout_msecs,
		     sio_lock_done, &wait);
	/* ioloop_run() may also return for another caller's stop; the
	   callback is the only thing that ends the wait. */
	while (!wait.done) {
		if (wait.coro != NULL)
			coro_yield();
		else
			ioloop_run(sio->loop);
	}
	return wait.result;
}
