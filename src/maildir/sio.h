#ifndef CM_SIO_H
#define CM_SIO_H
/*
 * sio - spool I/O for the mailbox store, synchronous or on an event loop.
 *
 * The store (src/maildir) is written as straight-line code: open, write,
 * fsync, rename, one after the other. Where that code runs decides how
 * each call is carried out:
 *
 *   sync mode   (clustermailctl, the torture test, unit tests) every call
 *               is the plain system call; a lock wait runs a private
 *               ioloop until the lock callback arrives.
 *   loop mode   (clustermaild) the store runs inside a coroutine on a
 *               worker's ioloop (see io/coro.h). Every file call is
 *               submitted to io_uring and the coroutine yields until its
 *               completion, so a slow fsync on a cluster filesystem stalls
 *               only the session that asked for it. Directory listings
 *               (which io_uring cannot do) run on the blocking pool; lock
 *               waits yield until the lock callback.
 *
 * All functions return >= 0 on success and -errno on failure, never set
 * errno, and never return -EINTR. Paths are relative to dirfd (AT_FDCWD
 * allowed). Every fd is opened O_CLOEXEC.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>

#include "lock/lock.h"

struct ioloop;
struct sio;

/* Sync mode. loop is used only to wait for locks (it is run until the
   lock callback arrives, then stopped); borrowed, must be this thread's. */
struct sio *sio_create_sync(struct ioloop *loop);
/* Loop mode: calls must be made from a coroutine running on loop
   (coro_current() != NULL); a call made outside any coroutine falls back
   to the synchronous system call. Borrowed loop. */
struct sio *sio_create_loop(struct ioloop *loop);
void sio_destroy(struct sio **sio);
bool sio_is_async(const struct sio *sio);
struct ioloop *sio_get_loop(const struct sio *sio);

int sio_openat(struct sio *sio, int dirfd, const char *path, int flags,
	       mode_t mode);
int sio_close(struct sio *sio, int fd);
/* Full reads/writes: loops over short transfers. pread returns the bytes
   read (less than size only at end of file). */
ssize_t sio_pread(struct sio *sio, int fd, void *buf, size_t size,
		  uint64_t offset);
ssize_t sio_pwrite(struct sio *sio, int fd, const void *buf, size_t size,
		   uint64_t offset);
int sio_fsync(struct sio *sio, int fd, bool datasync);
/* fsync of a directory given by path (opened O_RDONLY|O_DIRECTORY). */
int sio_fsync_dir(struct sio *sio, int dirfd, const char *path);
int sio_fstat(struct sio *sio, int fd, struct stat *st_r);
/* fstat that asks the file system, not its caches (statx with
   AT_STATX_FORCE_SYNC): on NFS a GETATTR, which also makes the client
   drop names it cached under a directory that changed. */
int sio_fstat_fresh(struct sio *sio, int fd, struct stat *st_r);
/* stat by opening path (O_RDONLY | open_flags): fresh attributes on NFS
   (close-to-open); an ESTALE between the open and the fstat is retried */
int sio_fstatat_open(struct sio *sio, int dirfd, const char *path,
		     int open_flags, struct stat *st_r);
int sio_fstatat(struct sio *sio, int dirfd, const char *path,
		struct stat *st_r, int flags);
int sio_ftruncate(struct sio *sio, int fd, uint64_t size);
int sio_renameat(struct sio *sio, int olddirfd, const char *oldpath,
		 int newdirfd, const char *newpath, unsigned int flags);
int sio_linkat(struct sio *sio, int olddirfd, const char *oldpath,
	       int newdirfd, const char *newpath);
int sio_unlinkat(struct sio *sio, int dirfd, const char *path, int flags);
int sio_mkdirat(struct sio *sio, int dirfd, const char *path, mode_t mode);

/* Directory listing (the blocking pool in loop mode). Calls cb for every
   entry except "." and ".."; a non-zero return from cb stops the listing
   and is returned. d_type is DT_UNKNOWN where the filesystem does not say.
   Returns 0, -errno, or cb's value. cb runs on the caller's thread (the
   names are collected first in loop mode). */
typedef int sio_readdir_callback_t(const char *name, unsigned char d_type,
				   void *context);
int sio_readdir(struct sio *sio, int dirfd, const char *path,
		sio_readdir_callback_t *cb, void *context);

/* Wait for a lock (lock_acquire() on this sio's loop); returns the
   lock_acquire() result (0, -EAGAIN, -ETIMEDOUT, -EDEADLK, ...). */
int sio_lock(struct sio *sio, struct lock *lock, enum lock_mode mode,
	     unsigned int flags, uint64_t timeout_msecs);

/* Tests: make the next count calls of op on this sio fail with -err
   (before the system call; path-based calls retry ESTALE, see sio.c). */
enum sio_op {
	SIO_OP_NONE,
	SIO_OP_OPENAT,
	SIO_OP_FSTATAT,
	SIO_OP_RENAMEAT,
	SIO_OP_LINKAT,
	SIO_OP_UNLINKAT,
	SIO_OP_MKDIRAT,
	SIO_OP_PREAD,
	SIO_OP_FSTAT,
};
void sio_inject_fault(struct sio *sio, enum sio_op op, int err,
		      unsigned int count);

/* Counters for tests and metrics (process-wide). */
struct sio_stats {
	uint64_t uring_ops;	/* calls carried out through io_uring */
	uint64_t pool_ops;	/* calls run on the blocking pool */
	uint64_t sync_ops;	/* plain system calls */
};
void sio_get_stats(struct sio_stats *stats_r);

#endif
