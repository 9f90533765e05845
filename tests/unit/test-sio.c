/*
 * test-sio.c - unit tests for src/maildir/sio.c and src/io/coro.c.
 *
 * One "script" of spool operations (files, names, listings, every error
 * path we promise -errno for) is run three ways: with a sync sio, with a
 * loop sio inside a coroutine (io_uring, plus the blocking pool for
 * ftruncate and readdir), and inside a coroutine on a loop whose file
 * operations are forced onto the pool. The script never asserts: it
 * records each result and the first mismatch, and the test asserts on
 * the main stack afterwards (a Check failure longjmp()ing out of a
 * coroutine stack would confuse ASan and leak the stack). The three runs
 * must agree step by step.
 *
 * The lock tests prove that a waiting coroutine does not block its loop:
 * a timer on the same loop keeps ticking while a coroutine waits in
 * sio_lock() for a handle held by someone else, and the timer is what
 * finally releases it. This runs on the local and the fcntl backends
 * (fcntl waits go through the blocking pool).
 *
 * The coroutine tests cover ordering, nesting, many interleaved
 * coroutines, the done callback, the guard page (in a forked child: the
 * overflow must fault inside the guard page) and the panics for misuse
 * (needs CK_FORK; left out with CK_FORK=no).
 *
 * Everything lives under a private mkdtemp() directory per test. Tests
 * that need io_uring are left out (with a note) where it is unavailable.
 */
#include "lib/lib.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <liburing.h>

#define WATCHDOG_MSECS 10000	/* a lost wake-up fails instead of hanging */
#define SCRIPT_MAX_STEPS 128
#define BIG_SIZE (100 * 1024)
#define LISTING_FILES 40
#define WRITER_COUNT 16
#define WRITER_BLOCKS 20
#define TICK_MSECS 10
#define RELEASE_TICK 5

/* ---- fixture: temp dir, pool and loop on the test thread ---- */

struct fixture {
	char dir[64];
	int dirfd;
	struct iopool *pool;
	struct ioloop *loop;
	bool loop_wanted;
	bool force_fallback;
};

static struct fixture fx;

static int remove_entry(const char *path, const struct stat *st ATTR_UNUSED,
			int type ATTR_UNUSED, struct FTW *ftw ATTR_UNUSED)
{
	(void)remove(path);
	return 0;
}

static void fixture_dir_setup(void)
{
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/cm-test-sio.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(fx.dir));
	fx.dirfd = open(fx.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(fx.dirfd, 0);
}

static void fixture_loop_setup(void)
{
	struct ioloop_settings set = { .name = "test-sio" };

	fixture_dir_setup();
	fx.pool = iopool_create(2);
	set.pool = fx.pool;
	set.force_fallback = fx.force_fallback;
	fx.loop = ioloop_create(&set);
}

static void fixture_fallback_setup(void)
{
	fx.force_fallback = true;
	fixture_loop_setup();
}

static void tick_stop(struct io_request *req, int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

/* loop_drain - run the loop until nothing is pending or posted on it */
static void loop_drain(struct ioloop *loop)
{
	struct io_request tick;

	io_request_init(&tick, tick_stop, loop);
	for (int i = 0; i < 400; i++) {
		unsigned int pending = ioloop_pending_count(loop) -
			(io_request_is_pending(&tick) ? 1 : 0);
		bool idle = pending == 0 && coro_live_count() == 0;

		/* One more slice even when idle: runs posted items. A
		   callback may stop the loop before the tick fires. */
		if (!io_request_is_pending(&tick))
			io_timeout(loop, &tick, 2);
		ioloop_run(loop);
		if (idle)
			break;
	}
	while (io_request_is_pending(&tick))
		ioloop_run(loop);
}

static void fixture_teardown(void)
{
	if (fx.loop != NULL) {
		loop_drain(fx.loop);
		ck_assert_uint_eq(ioloop_pending_count(fx.loop), 0);
		ioloop_destroy(&fx.loop);
		iopool_destroy(&fx.pool);
	}
	ck_assert_uint_eq(coro_live_count(), 0);
	close(fx.dirfd);
	nftw(fx.dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	fx.force_fallback = false;
}

/* ---- running the loop until a flag is set ---- */

struct watchdog {
	struct io_request req;
	struct ioloop *loop;
	bool fired;
};

/* watchdog_fired - fired or cancelled: either way run_until() goes on */
static void watchdog_fired(struct io_request *req, int result)
{
	struct watchdog *dog = req->context;

	dog->fired = result == -ETIME;
	ioloop_stop(dog->loop);
}

/* run_until - run the loop until *flag (set by a callback that also
   stops the loop); fails the test after WATCHDOG_MSECS */
static void run_until(struct ioloop *loop, const bool *flag)
{
	struct watchdog dog = { .loop = loop, .fired = false };

	io_request_init(&dog.req, watchdog_fired, &dog);
	io_timeout(loop, &dog.req, WATCHDOG_MSECS);
	while (!*flag && !dog.fired)
		ioloop_run(loop);
	io_cancel(loop, &dog.req);
	while (io_request_is_pending(&dog.req))
		ioloop_run(loop);
	ck_assert_msg(*flag, "timed out waiting for the loop");
}

/* ---- the script: every sio call, recorded ---- */

struct script {
	struct sio *sio;
	int dirfd;
	int values[SCRIPT_MAX_STEPS];	/* each step's result */
	const char *names[SCRIPT_MAX_STEPS];
	unsigned int steps;
	unsigned int failures;
	char failure[256];		/* the first one */
	bool done;			/* done callback ran (loop mode) */
};

/* expect - record a step; remember it if got is not want */
static void expect(struct script *s, const char *what, long got, long want)
{
	if (s->steps < SCRIPT_MAX_STEPS) {
		s->names[s->steps] = what;
		s->values[s->steps++] = (int)got;
	}
	if (got != want && s->failures++ == 0)
		snprintf(s->failure, sizeof(s->failure),
			 "%s: got %ld, want %ld", what, got, want);
}

static void fill_pattern(unsigned char *buf, size_t size, unsigned int seed)
{
	for (size_t i = 0; i < size; i++)
		buf[i] = (unsigned char)((i * 31 + seed) & 0xff);
}

/* script_file_io - write, read back, stat, truncate, sync one file */
static void script_file_io(struct script *s, int fd)
{
	unsigned char *big = mem_zalloc(BIG_SIZE), *back = mem_zalloc(BIG_SIZE);
	unsigned char small[16];
	struct stat st;

	fill_pattern(big, BIG_SIZE, 7);
	expect(s, "pwrite big", sio_pwrite(s->sio, fd, big, BIG_SIZE, 0),
	       BIG_SIZE);
	expect(s, "pwrite after hole",
	       sio_pwrite(s->sio, fd, "tail", 4, 200000), 4);
	expect(s, "fsync", sio_fsync(s->sio, fd, false), 0);
	expect(s, "fdatasync", sio_fsync(s->sio, fd, true), 0);
	expect(s, "fstat", sio_fstat(s->sio, fd, &st), 0);
	expect(s, "fstat size", st.st_size, 200004);
	expect(s, "fstat regular", S_ISREG(st.st_mode), 1);
	expect(s, "pread big", sio_pread(s->sio, fd, back, BIG_SIZE, 0),
	       BIG_SIZE);
	expect(s, "pread content", memcmp(big, back, BIG_SIZE) == 0, 1);
	expect(s, "pread short at eof",
	       sio_pread(s->sio, fd, small, sizeof(small), 200000), 4);
	expect(s, "pread short content", memcmp(small, "tail", 4) == 0, 1);
	expect(s, "pread past eof",
	       sio_pread(s->sio, fd, small, sizeof(small), 300000), 0);
	expect(s, "pread hole", sio_pread(s->sio, fd, small, 4, 150000), 4);
	expect(s, "pread hole zero", small[0] == 0 && small[3] == 0, 1);
	expect(s, "ftruncate", sio_ftruncate(s->sio, fd, 50), 0);
	expect(s, "fstat truncated", sio_fstat(s->sio, fd, &st), 0);
	expect(s, "truncated size", st.st_size, 50);
	memset(&st, 0, sizeof(st));
	expect(s, "fstat fresh", sio_fstat_fresh(s->sio, fd, &st), 0);
	expect(s, "fresh size", st.st_size, 50);
	expect(s, "fresh regular", S_ISREG(st.st_mode), 1);
	free(big);
	free(back);
}

/* script_files - open, I/O, close and their failures */
static void script_files(struct script *s)
{
	struct stat st;
	int fd, rdonly;

	expect(s, "mkdirat", sio_mkdirat(s->sio, s->dirfd, "d", 0700), 0);
	expect(s, "mkdirat exists", sio_mkdirat(s->sio, s->dirfd, "d", 0700),
	       -EEXIST);
	fd = sio_openat(s->sio, s->dirfd, "d/f", O_RDWR | O_CREAT | O_EXCL,
			0600);
	expect(s, "openat create", fd >= 0, 1);
	expect(s, "openat cloexec", (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, 1);
	expect(s, "openat excl", sio_openat(s->sio, s->dirfd, "d/f",
					    O_RDWR | O_CREAT | O_EXCL, 0600),
	       -EEXIST);
	expect(s, "openat missing", sio_openat(s->sio, s->dirfd, "d/nope",
					       O_RDONLY, 0), -ENOENT);
	script_file_io(s, fd);
	expect(s, "close", sio_close(s->sio, fd), 0);
	expect(s, "close again", sio_close(s->sio, fd), -EBADF);

	rdonly = sio_openat(s->sio, s->dirfd, "d/f", O_RDONLY, 0);
	expect(s, "openat rdonly", rdonly >= 0, 1);
	expect(s, "pwrite rdonly", sio_pwrite(s->sio, rdonly, "x", 1, 0),
	       -EBADF);
	expect(s, "ftruncate rdonly", sio_ftruncate(s->sio, rdonly, 0),
	       -EINVAL);
	expect(s, "close rdonly", sio_close(s->sio, rdonly), 0);
	expect(s, "pread bad fd", sio_pread(s->sio, -1, &st, 1, 0), -EBADF);
	expect(s, "fsync bad fd", sio_fsync(s->sio, -1, false), -EBADF);
	expect(s, "fstat bad fd", sio_fstat(s->sio, -1, &st), -EBADF);
	expect(s, "fstat fresh bad fd", sio_fstat_fresh(s->sio, -1, &st),
	       -EBADF);
	expect(s, "ftruncate bad fd", sio_ftruncate(s->sio, -1, 0), -EBADF);
}

/* script_names - stat, link, rename, fsync_dir, unlink */
static void script_names(struct script *s)
{
	struct stat st;

	expect(s, "fstatat", sio_fstatat(s->sio, s->dirfd, "d/f", &st, 0), 0);
	expect(s, "fstatat size", st.st_size, 50);
	expect(s, "fstatat missing",
	       sio_fstatat(s->sio, s->dirfd, "d/nope", &st, 0), -ENOENT);
	memset(&st, 0, sizeof(st));
	expect(s, "fstatat by open",
	       sio_fstatat_open(s->sio, s->dirfd, "d/f", 0, &st), 0);
	expect(s, "fstatat by open size", st.st_size, 50);
	expect(s, "fstatat by open dir",
	       sio_fstatat_open(s->sio, s->dirfd, "d", O_DIRECTORY, &st), 0);
	expect(s, "fstatat by open is dir", S_ISDIR(st.st_mode), 1);
	expect(s, "fstatat by open not dir",
	       sio_fstatat_open(s->sio, s->dirfd, "d/f", O_DIRECTORY, &st),
	       -ENOTDIR);
	expect(s, "fstatat by open missing",
	       sio_fstatat_open(s->sio, s->dirfd, "d/nope", 0, &st), -ENOENT);
	expect(s, "linkat", sio_linkat(s->sio, s->dirfd, "d/f", s->dirfd,
				       "d/g"), 0);
	expect(s, "linkat exists", sio_linkat(s->sio, s->dirfd, "d/f",
					      s->dirfd, "d/g"), -EEXIST);
	expect(s, "fstatat nofollow", sio_fstatat(s->sio, s->dirfd, "d/g", &st,
						  AT_SYMLINK_NOFOLLOW), 0);
	expect(s, "nlink", st.st_nlink, 2);
	expect(s, "renameat", sio_renameat(s->sio, s->dirfd, "d/g", s->dirfd,
					   "d/h", 0), 0);
	expect(s, "renameat noreplace",
	       sio_renameat(s->sio, s->dirfd, "d/f", s->dirfd, "d/h",
			    RENAME_NOREPLACE), -EEXIST);
	expect(s, "renameat missing",
	       sio_renameat(s->sio, s->dirfd, "d/nope", s->dirfd, "d/x", 0),
	       -ENOENT);
	expect(s, "fsync_dir", sio_fsync_dir(s->sio, s->dirfd, "d"), 0);
	expect(s, "fsync_dir dot", sio_fsync_dir(s->sio, s->dirfd, "."), 0);
	expect(s, "fsync_dir missing", sio_fsync_dir(s->sio, s->dirfd, "nope"),
	       -ENOENT);
	expect(s, "fsync_dir file", sio_fsync_dir(s->sio, s->dirfd, "d/h"),
	       -ENOTDIR);
	expect(s, "rmdir not empty",
	       sio_unlinkat(s->sio, s->dirfd, "d", AT_REMOVEDIR), -ENOTEMPTY);
	expect(s, "unlinkat", sio_unlinkat(s->sio, s->dirfd, "d/h", 0), 0);
	expect(s, "unlinkat missing", sio_unlinkat(s->sio, s->dirfd, "d/h", 0),
	       -ENOENT);
	expect(s, "unlinkat f", sio_unlinkat(s->sio, s->dirfd, "d/f", 0), 0);
	expect(s, "rmdir", sio_unlinkat(s->sio, s->dirfd, "d", AT_REMOVEDIR),
	       0);
}

struct listing {
	unsigned int count;
	unsigned int stop_after;	/* 0: never stop */
	unsigned int dirs;
	unsigned int dots;
	unsigned long name_sum;		/* order-independent fingerprint */
};

static int listing_entry(const char *name, unsigned char d_type,
			 void *context)
{
	struct listing *l = context;
	unsigned int n;

	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		l->dots++;
	if (d_type == DT_DIR)
		l->dirs++;
	if (sscanf(name, "m%u", &n) == 1)
		l->name_sum += n;
	l->count++;
	return l->stop_after != 0 && l->count == l->stop_after ? 42 : 0;
}

/* script_listing - readdir: full, stopped early, and failures */
static void script_listing(struct script *s)
{
	struct listing l = { 0 };
	char name[32];
	int fd;

	expect(s, "mkdirat list", sio_mkdirat(s->sio, s->dirfd, "l", 0700), 0);
	expect(s, "mkdirat sub", sio_mkdirat(s->sio, s->dirfd, "l/sub", 0700),
	       0);
	for (unsigned int i = 1; i <= LISTING_FILES; i++) {
		snprintf(name, sizeof(name), "l/m%u", i);
		fd = sio_openat(s->sio, s->dirfd, name, O_WRONLY | O_CREAT,
				0600);
		if (fd >= 0)
			(void)sio_close(s->sio, fd);
	}
	expect(s, "readdir", sio_readdir(s->sio, s->dirfd, "l", listing_entry,
					 &l), 0);
	expect(s, "readdir count", l.count, LISTING_FILES + 1);
	expect(s, "readdir no dots", l.dots, 0);
	expect(s, "readdir names", l.name_sum,
	       LISTING_FILES * (LISTING_FILES + 1) / 2);
	expect(s, "readdir d_type", l.dirs == 1 || l.dirs == 0, 1);

	memset(&l, 0, sizeof(l));
	l.stop_after = 3;
	expect(s, "readdir stop", sio_readdir(s->sio, s->dirfd, "l",
					      listing_entry, &l), 42);
	expect(s, "readdir stop count", l.count, 3);
	expect(s, "readdir missing", sio_readdir(s->sio, s->dirfd, "nope",
						 listing_entry, &l), -ENOENT);
	expect(s, "readdir file", sio_readdir(s->sio, s->dirfd, "l/m1",
					      listing_entry, &l), -ENOTDIR);
}

static void script_run(struct script *s)
{
	script_files(s);
	script_names(s);
	script_listing(s);
}

static void script_init(struct script *s, struct sio *sio)
{
	memset(s, 0, sizeof(*s));
	s->sio = sio;
	s->dirfd = fx.dirfd;
}

static void script_check(const struct script *s, const char *mode)
{
	ck_assert_msg(s->failures == 0, "%s: %u failures, first: %s", mode,
		      s->failures, s->failure);
}

/* script_same - two runs produced the same results step by step */
static void script_same(const struct script *a, const struct script *b)
{
	ck_assert_uint_eq(a->steps, b->steps);
	for (unsigned int i = 0; i < a->steps; i++)
		ck_assert_msg(a->values[i] == b->values[i],
			      "step %s: %d vs %d", a->names[i], a->values[i],
			      b->values[i]);
}

static void script_coro(void *ctx)
{
	script_run(ctx);
}

static void script_done(void *ctx)
{
	struct script *s = ctx;

	s->done = true;
	ioloop_stop(sio_get_loop(s->sio));
}

/* script_in_coro - run the script in a coroutine on fx.loop */
static void script_in_coro(struct script *s)
{
	struct sio *sio = sio_create_loop(fx.loop);

	script_init(s, sio);
	ck_assert(sio_is_async(sio));
	ck_assert_ptr_eq(sio_get_loop(sio), fx.loop);
	(void)coro_start(fx.loop, 0, script_coro, s, script_done);
	run_until(fx.loop, &s->done);
	sio_destroy(&sio);
	ck_assert_ptr_null(sio);
}

/* cleanup_listing - remove what script_listing() left behind */
static void cleanup_listing(void)
{
	char name[32];

	for (unsigned int i = 1; i <= LISTING_FILES; i++) {
		snprintf(name, sizeof(name), "l/m%u", i);
		(void)unlinkat(fx.dirfd, name, 0);
	}
	(void)unlinkat(fx.dirfd, "l/sub", AT_REMOVEDIR);
	ck_assert_int_eq(unlinkat(fx.dirfd, "l", AT_REMOVEDIR), 0);
}

/* ---- sync mode ---- */

START_TEST(test_sync_script)
{
	struct sio *sio = sio_create_sync(NULL);
	struct sio_stats before, after;
	struct script s;

	ck_assert(!sio_is_async(sio));
	ck_assert_ptr_null(sio_get_loop(sio));
	sio_get_stats(&before);
	script_init(&s, sio);
	script_run(&s);
	sio_get_stats(&after);
	script_check(&s, "sync");
	ck_assert_uint_gt(after.sync_ops, before.sync_ops + 50);
	ck_assert_uint_eq(after.uring_ops, before.uring_ops);
	ck_assert_uint_eq(after.pool_ops, before.pool_ops);
	sio_destroy(&sio);
	ck_assert_ptr_null(sio);
}
END_TEST

START_TEST(test_sync_estale_retry)
{
	struct sio *sio = sio_create_sync(NULL);
	struct stat st;
	char buf[4];
	int fd;

	fd = sio_openat(sio, fx.dirfd, "f", O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(sio_pwrite(sio, fd, "abc", 3, 0), 3);
	ck_assert_int_eq(sio_close(sio, fd), 0);
	/* Path-based calls look the path up again: three stale handles in a
	   row are survived, a fourth is not. */
	sio_inject_fault(sio, SIO_OP_OPENAT, ESTALE, 3);
	fd = sio_openat(sio, fx.dirfd, "f", O_RDONLY, 0);
	ck_assert_int_ge(fd, 0);
	sio_inject_fault(sio, SIO_OP_FSTATAT, ESTALE, 4);
	ck_assert_int_eq(sio_fstatat(sio, fx.dirfd, "f", &st, 0), -ESTALE);
	ck_assert_int_eq(sio_fstatat(sio, fx.dirfd, "f", &st, 0), 0);
	sio_inject_fault(sio, SIO_OP_RENAMEAT, ESTALE, 2);
	ck_assert_int_eq(sio_renameat(sio, fx.dirfd, "f", fx.dirfd, "g", 0), 0);
	sio_inject_fault(sio, SIO_OP_LINKAT, ESTALE, 1);
	ck_assert_int_eq(sio_linkat(sio, fx.dirfd, "g", fx.dirfd, "h"), 0);
	sio_inject_fault(sio, SIO_OP_UNLINKAT, ESTALE, 3);
	ck_assert_int_eq(sio_unlinkat(sio, fx.dirfd, "h", 0), 0);
	sio_inject_fault(sio, SIO_OP_MKDIRAT, ESTALE, 1);
	ck_assert_int_eq(sio_mkdirat(sio, fx.dirfd, "d", 0700), 0);
	/* Other errors are not retried. */
	sio_inject_fault(sio, SIO_OP_OPENAT, EIO, 1);
	ck_assert_int_eq(sio_openat(sio, fx.dirfd, "g", O_RDONLY, 0), -EIO);
	/* A descriptor cannot be looked up again: -ESTALE at once. */
	sio_inject_fault(sio, SIO_OP_PREAD, ESTALE, 1);
	ck_assert_int_eq(sio_pread(sio, fd, buf, 3, 0), -ESTALE);
	ck_assert_int_eq(sio_pread(sio, fd, buf, 3, 0), 3);
	sio_inject_fault(sio, SIO_OP_FSTAT, ESTALE, 1);
	ck_assert_int_eq(sio_fstat(sio, fd, &st), -ESTALE);
	ck_assert_int_eq(sio_close(sio, fd), 0);
	ck_assert_int_eq(unlinkat(fx.dirfd, "g", 0), 0);
	ck_assert_int_eq(unlinkat(fx.dirfd, "d", AT_REMOVEDIR), 0);
	sio_destroy(&sio);
}
END_TEST

START_TEST(test_sync_large_io)
{
	/* Megabytes in one call, at an offset, and a short read at EOF. */
	struct sio *sio = sio_create_sync(NULL);
	size_t size = 3 * 1024 * 1024;
	unsigned char *buf = mem_zalloc(size), *back = mem_zalloc(size);
	int fd;

	fill_pattern(buf, size, 3);
	fd = sio_openat(sio, fx.dirfd, "large", O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(sio_pwrite(sio, fd, buf, size, 4096), (ssize_t)size);
	ck_assert_int_eq(sio_pread(sio, fd, back, size, 4096), (ssize_t)size);
	ck_assert(memcmp(buf, back, size) == 0);
	ck_assert_int_eq(sio_pread(sio, fd, back, size, 0), (ssize_t)size);
	ck_assert_int_eq(sio_pread(sio, fd, back, size, size), 4096);
	ck_assert_int_eq(sio_close(sio, fd), 0);
	ck_assert_int_eq(sio_unlinkat(sio, fx.dirfd, "large", 0), 0);
	free(buf);
	free(back);
	sio_destroy(&sio);
}
END_TEST

/* ---- loop mode ---- */

START_TEST(test_loop_script)
{
	struct sio *sync_sio = sio_create_sync(fx.loop);
	struct sio_stats before, after;
	struct script sync_run, loop_run;

	script_init(&sync_run, sync_sio);
	script_run(&sync_run);
	script_check(&sync_run, "sync");
	cleanup_listing();

	sio_get_stats(&before);
	script_in_coro(&loop_run);
	sio_get_stats(&after);
	script_check(&loop_run, "loop");
	script_same(&sync_run, &loop_run);
	/* Everything but ftruncate and readdir went through io_uring. */
	ck_assert_uint_gt(after.uring_ops, before.uring_ops + 50);
	ck_assert_uint_ge(after.pool_ops, before.pool_ops + 7);
	/* The only sync calls: none from the coroutine. */
	ck_assert_uint_eq(after.sync_ops, before.sync_ops);
	sio_destroy(&sync_sio);
}
END_TEST

START_TEST(test_loop_script_fallback)
{
	struct ioloop_stats before, after;
	struct script s;

	/* fx.loop runs every file operation on the pool: same results. */
	ioloop_get_stats(&before);
	script_in_coro(&s);
	ioloop_get_stats(&after);
	script_check(&s, "fallback");
	ck_assert_uint_gt(after.fallbacks, before.fallbacks + 50);
}
END_TEST

START_TEST(test_loop_outside_coro_is_sync)
{
	struct sio *sio = sio_create_loop(fx.loop);
	struct sio_stats before, after;
	struct script s;

	ck_assert_ptr_null(coro_current());
	sio_get_stats(&before);
	script_init(&s, sio);
	script_run(&s);
	sio_get_stats(&after);
	script_check(&s, "loop, outside a coroutine");
	ck_assert_uint_eq(after.uring_ops, before.uring_ops);
	ck_assert_uint_eq(after.pool_ops, before.pool_ops);
	ck_assert_uint_gt(after.sync_ops, before.sync_ops + 50);
	sio_destroy(&sio);
}
END_TEST

struct writer {
	struct sio *sio;
	unsigned int id;
	int result;
};

static unsigned int writers_finished;
static bool writers_all_done;

/* writer_run - one coroutine: a file in small synced blocks */
static void writer_run(void *ctx)
{
	struct writer *w = ctx;
	unsigned char block[64];
	char name[32];
	struct stat st;
	int fd, ret = 0;

	snprintf(name, sizeof(name), "w%u", w->id);
	fd = sio_openat(w->sio, fx.dirfd, name, O_WRONLY | O_CREAT | O_TRUNC,
			0600);
	if (fd < 0) {
		w->result = fd;
		return;
	}
	fill_pattern(block, sizeof(block), w->id);
	for (unsigned int i = 0; i < WRITER_BLOCKS && ret >= 0; i++) {
		ret = (int)sio_pwrite(w->sio, fd, block, sizeof(block),
				      i * sizeof(block));
		if (ret >= 0)
			ret = sio_fsync(w->sio, fd, true);
	}
	if (sio_close(w->sio, fd) < 0 && ret >= 0)
		ret = -EIO;
	if (ret >= 0)
		ret = sio_fstatat(w->sio, fx.dirfd, name, &st, 0);
	if (ret >= 0 && st.st_size != WRITER_BLOCKS * sizeof(block))
		ret = -EBADMSG;
	w->result = ret;
}

static void writer_done(void *ctx)
{
	struct writer *w = ctx;

	if (++writers_finished == WRITER_COUNT) {
		writers_all_done = true;
		ioloop_stop(sio_get_loop(w->sio));
	}
}

START_TEST(test_loop_many_coroutines)
{
	struct sio *sio = sio_create_loop(fx.loop);
	struct writer writers[WRITER_COUNT];

	writers_finished = 0;
	writers_all_done = false;
	for (unsigned int i = 0; i < WRITER_COUNT; i++) {
		writers[i] = (struct writer){ sio, i, 1 };
		(void)coro_start(fx.loop, 0, writer_run, &writers[i],
				 writer_done);
	}
	/* Each one is suspended in its first request: all in flight. */
	ck_assert_uint_eq(coro_live_count(), WRITER_COUNT);
	ck_assert_uint_ge(ioloop_pending_count(fx.loop), WRITER_COUNT);
	run_until(fx.loop, &writers_all_done);
	for (unsigned int i = 0; i < WRITER_COUNT; i++)
		ck_assert_msg(writers[i].result == 0, "writer %u: %d", i,
			      writers[i].result);
	sio_destroy(&sio);
}
END_TEST

/* ---- locks ---- */

static const enum settings_lock_backend lock_backends[] = {
	SETTINGS_LOCK_LOCAL, SETTINGS_LOCK_FCNTL,
};

struct lock_env {
	struct lock_client *client;
	struct lock *holder, *waiter;
	struct sio *sync_sio, *loop_sio;

	/* the ticker: a timer on the same loop */
	struct io_request tick;
	unsigned int ticks;
	bool ticking;

	/* the waiting coroutine */
	int result;
	unsigned int ticks_at_grant;
	int file_result;
	bool done;
};

static void lock_env_init(struct lock_env *env, int backend_index)
{
	struct lock_client_settings set = {
		.backend = lock_backends[backend_index],
		.spool_dir = fx.dir,
		.pool = fx.pool,
	};
	char *error = NULL;

	memset(env, 0, sizeof(*env));
	env->client = lock_client_create(&set, &error);
	ck_assert_msg(env->client != NULL, "lock_client_create: %s", error);
	env->holder = lock_create(env->client, "sio-test", LOCK_CLASS_OTHER);
	env->waiter = lock_create(env->client, "sio-test", LOCK_CLASS_OTHER);
	env->sync_sio = sio_create_sync(fx.loop);
	env->loop_sio = sio_create_loop(fx.loop);
}

static void lock_env_deinit(struct lock_env *env)
{
	lock_destroy(&env->holder);
	lock_destroy(&env->waiter);
	loop_drain(fx.loop);
	lock_client_destroy(&env->client);
	sio_destroy(&env->sync_sio);
	sio_destroy(&env->loop_sio);
}

/* ticker_fired - every TICK_MSECS; releases the holder at RELEASE_TICK */
static void ticker_fired(struct io_request *req, int result ATTR_UNUSED)
{
	struct lock_env *env = req->context;

	env->ticks++;
	if (env->ticks == RELEASE_TICK)
		lock_release(env->holder);
	if (env->ticking)
		io_timeout(fx.loop, &env->tick, TICK_MSECS);
}

static void ticker_start(struct lock_env *env)
{
	env->ticks = 0;
	env->ticking = true;
	io_request_init(&env->tick, ticker_fired, env);
	io_timeout(fx.loop, &env->tick, TICK_MSECS);
}

static void ticker_stop(struct lock_env *env)
{
	env->ticking = false;
	io_cancel(fx.loop, &env->tick);
	loop_drain(fx.loop);
}

START_TEST(test_sync_lock)
{
	struct lock_env env;

	lock_env_init(&env, _i);
	ck_assert_int_eq(sio_lock(env.sync_sio, env.holder, LOCK_MODE_EX, 0, 0),
			 0);
	ck_assert_int_eq(lock_get_mode(env.holder), LOCK_MODE_EX);
	ck_assert_int_eq(sio_lock(env.sync_sio, env.waiter, LOCK_MODE_EX,
				  LOCK_FLAG_NOQUEUE, 0), -EAGAIN);
	ck_assert_int_eq(sio_lock(env.sync_sio, env.waiter, LOCK_MODE_PR, 0,
				  50), -ETIMEDOUT);
	/* A sync wait runs the loop: the ticker releases the holder. */
	ticker_start(&env);
	ck_assert_int_eq(sio_lock(env.sync_sio, env.waiter, LOCK_MODE_PR, 0,
				  5000), 0);
	ck_assert_uint_ge(env.ticks, RELEASE_TICK);
	ck_assert_int_eq(lock_get_mode(env.waiter), LOCK_MODE_PR);
	ticker_stop(&env);
	lock_release(env.waiter);
	lock_env_deinit(&env);
}
END_TEST

/* lock_waiter_run - coroutine: wait for the lock, then touch a file */
static void lock_waiter_run(void *ctx)
{
	struct lock_env *env = ctx;
	int fd;

	env->result = sio_lock(env->loop_sio, env->waiter, LOCK_MODE_EX, 0,
			       5000);
	env->ticks_at_grant = env->ticks;
	fd = sio_openat(env->loop_sio, fx.dirfd, "locked", O_WRONLY | O_CREAT,
			0600);
	env->file_result = fd < 0 ? fd : sio_close(env->loop_sio, fd);
	lock_release(env->waiter);
}

static void lock_waiter_done(void *ctx)
{
	struct lock_env *env = ctx;

	env->done = true;
	ioloop_stop(fx.loop);
}

START_TEST(test_loop_lock_keeps_loop_running)
{
	struct lock_env env;

	lock_env_init(&env, _i);
	ck_assert_int_eq(sio_lock(env.sync_sio, env.holder, LOCK_MODE_EX, 0, 0),
			 0);
	ticker_start(&env);
	(void)coro_start(fx.loop, 0, lock_waiter_run, &env, lock_waiter_done);
	ck_assert_uint_eq(coro_live_count(), 1);
	run_until(fx.loop, &env.done);
	ck_assert_int_eq(env.result, 0);
	/* The timer fired again and again while the coroutine waited, and
	   its RELEASE_TICK-th firing is what let the coroutine go on. */
	ck_assert_uint_ge(env.ticks_at_grant, RELEASE_TICK);
	ck_assert_int_eq(env.file_result, 0);
	ticker_stop(&env);
	lock_env_deinit(&env);
}
END_TEST

START_TEST(test_loop_lock_outside_coro_panics)
{
	struct lock_env env;

	lock_env_init(&env, 0);
	(void)sio_lock(env.loop_sio, env.holder, LOCK_MODE_EX, 0, 0);
}
END_TEST

/* ---- coroutines ---- */

struct order {
	char log[256];
	struct coro *self;
	unsigned int done_calls;
	bool done;
};

static void order_note(struct order *o, const char *what)
{
	strncat(o->log, what, sizeof(o->log) - strlen(o->log) - 1);
}

static void order_run(void *ctx)
{
	struct order *o = ctx;

	o->self = coro_current();
	order_note(o, "a1 ");
	coro_yield();
	order_note(o, coro_current() == o->self ? "a2 " : "a2-wrong ");
	coro_yield();
	order_note(o, "a3 ");
}

static void order_done(void *ctx)
{
	struct order *o = ctx;

	o->done_calls++;
	o->done = true;
	ioloop_stop(fx.loop);
}

START_TEST(test_coro_order)
{
	struct order o = { .done_calls = 0 };
	struct coro *c;

	ck_assert_ptr_null(coro_current());
	c = coro_start(fx.loop, 0, order_run, &o, order_done);
	ck_assert_ptr_eq(c, o.self);
	ck_assert_ptr_eq(coro_get_loop(c), fx.loop);
	ck_assert_ptr_null(coro_current());
	order_note(&o, "m1 ");
	coro_resume(c);
	order_note(&o, "m2 ");
	coro_resume(c);
	order_note(&o, "m3");
	ck_assert_str_eq(o.log, "a1 m1 a2 m2 a3 m3");
	/* Finished, but done runs on the loop, not inside coro_resume(). */
	ck_assert_uint_eq(o.done_calls, 0);
	ck_assert_uint_eq(coro_live_count(), 1);
	run_until(fx.loop, &o.done);
	ck_assert_uint_eq(o.done_calls, 1);
	ck_assert_uint_eq(coro_live_count(), 0);
}
END_TEST

static void no_yield_run(void *ctx)
{
	*(int *)ctx += 1;
}

static void no_yield_done(void *ctx)
{
	*(int *)ctx += 10;
	ioloop_stop(fx.loop);
}

START_TEST(test_coro_no_yield)
{
	int value = 0;

	/* fn runs at once and to its end inside coro_start(). */
	(void)coro_start(fx.loop, 64 * 1024, no_yield_run, &value,
			 no_yield_done);
	ck_assert_int_eq(value, 1);
	/* Without a done callback the coroutine is still freed. */
	(void)coro_start(fx.loop, 0, no_yield_run, &value, NULL);
	ck_assert_int_eq(value, 2);
	ck_assert_uint_eq(coro_live_count(), 2);
	loop_drain(fx.loop);
	ck_assert_int_eq(value, 12);
	ck_assert_uint_eq(coro_live_count(), 0);
}
END_TEST

#define MANY_COROS 100
#define MANY_ROUNDS 5

struct many {
	struct coro *coros[MANY_COROS];
	unsigned int trace[MANY_COROS * (MANY_ROUNDS + 1)];
	unsigned int trace_len;
	unsigned int finished;
	bool all_done;
};

struct many_one {
	struct many *m;
	unsigned int id;
};

static void many_run(void *ctx)
{
	struct many_one *one = ctx;

	for (unsigned int round = 0; round < MANY_ROUNDS; round++) {
		one->m->trace[one->m->trace_len++] = one->id;
		coro_yield();
	}
	one->m->trace[one->m->trace_len++] = one->id;
}

static void many_done(void *ctx)
{
	struct many_one *one = ctx;

	if (++one->m->finished == MANY_COROS) {
		one->m->all_done = true;
		ioloop_stop(fx.loop);
	}
}

START_TEST(test_coro_many_interleaved)
{
	static struct many m;
	static struct many_one ones[MANY_COROS];

	memset(&m, 0, sizeof(m));
	for (unsigned int i = 0; i < MANY_COROS; i++) {
		ones[i] = (struct many_one){ &m, i };
		m.coros[i] = coro_start(fx.loop, 0, many_run, &ones[i],
					many_done);
	}
	ck_assert_uint_eq(coro_live_count(), MANY_COROS);
	for (unsigned int round = 0; round < MANY_ROUNDS; round++) {
		for (unsigned int i = 0; i < MANY_COROS; i++)
			coro_resume(m.coros[i]);
	}
	/* Strict round robin: round r of every coroutine before r + 1. */
	ck_assert_uint_eq(m.trace_len, MANY_COROS * (MANY_ROUNDS + 1));
	for (unsigned int i = 0; i < m.trace_len; i++)
		ck_assert_uint_eq(m.trace[i], i % MANY_COROS);
	run_until(fx.loop, &m.all_done);
	ck_assert_uint_eq(coro_live_count(), 0);
}
END_TEST

struct nest {
	struct coro *outer, *inner;
	char log[128];
	bool all_done;
};

static void nest_inner(void *ctx)
{
	struct nest *n = ctx;

	n->inner = coro_current();
	strcat(n->log, "i1 ");
	coro_yield();
	strcat(n->log, coro_current() == n->inner ? "i2 " : "i2-wrong ");
}

static void nest_outer(void *ctx)
{
	struct nest *n = ctx;

	n->outer = coro_current();
	strcat(n->log, "o1 ");
	(void)coro_start(fx.loop, 0, nest_inner, n, NULL);
	/* The inner yield came back here, not to the test. */
	strcat(n->log, coro_current() == n->outer ? "o2 " : "o2-wrong ");
	coro_yield();
	strcat(n->log, "o3 ");
}

static void nest_done(void *ctx)
{
	struct nest *n = ctx;

	n->all_done = true;
	ioloop_stop(fx.loop);
}

START_TEST(test_coro_nested)
{
	struct nest n = { .all_done = false };

	(void)coro_start(fx.loop, 0, nest_outer, &n, nest_done);
	ck_assert_ptr_null(coro_current());
	strcat(n.log, "m1 ");
	coro_resume(n.inner);
	ck_assert_ptr_null(coro_current());
	strcat(n.log, "m2 ");
	coro_resume(n.outer);
	ck_assert_str_eq(n.log, "o1 i1 o2 m1 i2 m2 o3 ");
	run_until(fx.loop, &n.all_done);
	ck_assert_uint_eq(coro_live_count(), 0);
}
END_TEST

static void resume_self_run(void *ctx ATTR_UNUSED)
{
	coro_resume(coro_current());
}

START_TEST(test_coro_resume_running_panics)
{
	(void)coro_start(fx.loop, 0, resume_self_run, NULL, NULL);
}
END_TEST

START_TEST(test_coro_yield_outside_panics)
{
	coro_yield();
}
END_TEST

/* ---- the guard page ---- */

static uintptr_t guard_stack_top;
static size_t guard_stack_size;

static void guard_segv(int sig ATTR_UNUSED, siginfo_t *info,
		       void *uctx ATTR_UNUSED)
{
	uintptr_t addr = (uintptr_t)info->si_addr;
	uintptr_t bottom = guard_stack_top - guard_stack_size;
	long page = sysconf(_SC_PAGESIZE);

	/* The fault must be just below the stack: in the guard page. */
	_exit(addr < bottom + (uintptr_t)page &&
	      addr + 2 * (uintptr_t)page >= bottom ? 42 : 43);
}

static int guard_recurse(unsigned int depth)
{
	volatile char frame[512];

	frame[0] = (char)depth;
	if (depth > 1000000)
		return frame[0];
	return guard_recurse(depth + 1) + frame[0];
}

static void guard_run(void *ctx)
{
	char here;

	guard_stack_top = (uintptr_t)&here;
	*(int *)ctx = guard_recurse(0);
}

/* guard_child - overflow a small coroutine stack; never returns */
static void guard_child(void)
{
	static char alt_stack[64 * 1024];
	stack_t ss = { .ss_sp = alt_stack, .ss_size = sizeof(alt_stack) };
	struct sigaction sa;
	int value = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = guard_segv;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	if (sigaltstack(&ss, NULL) < 0 || sigaction(SIGSEGV, &sa, NULL) < 0)
		_exit(44);
	guard_stack_size = 32 * 1024;
	(void)coro_start(fx.loop, guard_stack_size, guard_run, &value, NULL);
	_exit(45);
}

START_TEST(test_coro_stack_guard)
{
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		guard_child();
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "child died of signal %d",
		      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	ck_assert_msg(WEXITSTATUS(status) == 42,
		      "child exit %d (43: fault outside the guard page)",
		      WEXITSTATUS(status));
}
END_TEST

/* ---- suites ---- */

static bool fork_mode(void)
{
	const char *mode = getenv("CK_FORK");

	return mode == NULL || strcmp(mode, "no") != 0;
}

static Suite *sync_suite(void)
{
	Suite *suite = suite_create("sio-sync");
	TCase *tc = tcase_create("files");

	tcase_add_checked_fixture(tc, fixture_dir_setup, fixture_teardown);
	tcase_add_test(tc, test_sync_script);
	tcase_add_test(tc, test_sync_large_io);
	tcase_add_test(tc, test_sync_estale_retry);
	suite_add_tcase(suite, tc);
	return suite;
}

static Suite *loop_suite(void)
{
	Suite *suite = suite_create("sio-loop");
	TCase *tc = tcase_create("loop");

	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, fixture_loop_setup, fixture_teardown);
	tcase_add_test(tc, test_loop_script);
	tcase_add_test(tc, test_loop_outside_coro_is_sync);
	tcase_add_test(tc, test_loop_many_coroutines);
	tcase_add_loop_test(tc, test_sync_lock, 0, N_ELEMENTS(lock_backends));
	tcase_add_loop_test(tc, test_loop_lock_keeps_loop_running, 0,
			    N_ELEMENTS(lock_backends));
	if (fork_mode())
		tcase_add_test_raise_signal(tc,
			test_loop_lock_outside_coro_panics, SIGABRT);
	suite_add_tcase(suite, tc);

	tc = tcase_create("fallback");
	tcase_set_timeout(tc, 30);
	tcase_add_checked_fixture(tc, fixture_fallback_setup, fixture_teardown);
	tcase_add_test(tc, test_loop_script_fallback);
	suite_add_tcase(suite, tc);
	return suite;
}

static Suite *coro_suite(void)
{
	Suite *suite = suite_create("coro");
	TCase *tc = tcase_create("coro");

	tcase_add_checked_fixture(tc, fixture_loop_setup, fixture_teardown);
	tcase_add_test(tc, test_coro_order);
	tcase_add_test(tc, test_coro_no_yield);
	tcase_add_test(tc, test_coro_many_interleaved);
	tcase_add_test(tc, test_coro_nested);
	tcase_add_test(tc, test_coro_stack_guard);
	if (fork_mode()) {
		tcase_add_test_raise_signal(tc, test_coro_resume_running_panics,
					    SIGABRT);
		tcase_add_test_raise_signal(tc, test_coro_yield_outside_panics,
					    SIGABRT);
	} else {
		printf("NOTE: coroutine panic tests need CK_FORK; left out\n");
	}
	suite_add_tcase(suite, tc);
	return suite;
}

int main(void)
{
	Suite *suites[3];
	size_t count = 0;
	struct io_uring ring;
	int ret;

	suites[count++] = sync_suite();
	/* The loop and coroutine suites need io_uring (seccomp, sysctl). */
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0) {
		printf("NOTE: io_uring unavailable (%s): loop suites left "
		       "out\n", strerror(-ret));
	} else {
		io_uring_queue_exit(&ring);
		suites[count++] = loop_suite();
		suites[count++] = coro_suite();
	}
	return unit_run(suites, count);
}
