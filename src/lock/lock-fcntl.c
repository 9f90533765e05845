/*
 * lock-fcntl.c - the "fcntl" lock backend: OFD locks on lock files.
 *
 * One file per resource, SPOOL/.locks/<encoded name>; a handle holds
 * F_RDLCK (PR) or F_WRLCK (EX) on bytes 0..LOCK_VALUE_SIZE-1 of it through
 * its own open file description. OFD locks (F_OFD_SETLK, Linux 3.15)
 * rather than classic POSIX locks because POSIX locks belong to the
 * process: two handles in one process would never conflict, and closing
 * *any* descriptor of the file would silently drop every lock the process
 * holds on it. OFD locks belong to the open file description, so each
 * handle is its own lock owner, as the API promises. On NFSv4 they go to
 * the server and are cluster-wide; on GFS2/OCFS2 they go through the
 * cluster's plock service; locally they work across processes.
 *
 * Waiting without blocking a loop
 * -------------------------------
 * Every acquire first tries F_OFD_SETLK, which never waits: the common,
 * uncontended case is one system call on the loop thread. (On NFS that
 * call, like the open() at a handle's first acquire and the pread/pwrite
 * of the value record, is one round trip to the server. It waits for the
 * server, never for another lock holder; invariant 7 is about the
 * latter.) When the range is busy we poll:
 * F_OFD_SETLK again after an io_timeout of 1, 2, 4, 8 and then every
 * 16 ms. The alternative, F_OFD_SETLKW on the blocking pool, was
 * rejected: the pool is small and shared (readdir, crypt, DNS), so a few
 * contended mailboxes would starve everything else, and a thread inside
 * SETLKW cannot be interrupted for a timeout or cancel - pool threads
 * block all signals, and closing the descriptor does not wake a waiter.
 * Polling is interruptible for free (cancel the timer) and costs no
 * thread. Its price: no FIFO fairness (a newcomer can win the race
 * against a poller, and a steady stream of PR holders can starve an EX
 * poller until its timeout), up to 16 ms of latency after a release, and
 * one system call (on NFS one RPC) per waiter every 16 ms. fcntl locks
 * are meant to be held for one short operation (there are no blocking
 * callbacks to tell a holder to let go - see lock.h), which keeps both
 * costs small; the DLM backend is the one for heavy contention.
 *
 * Conversion deadlock
 * -------------------
 * PR -> EX is not atomic for fcntl locks in the sense that matters: the
 * kernel keeps our F_RDLCK while the F_WRLCK waits, and it does no
 * deadlock detection for OFD locks. Two PR holders upgrading at once
 * would each wait for the other's read lock forever (until timeouts).
 * So an upgrade that has to wait first takes an exclusive "upgrade gate"
 * lock on one byte at FCNTL_GATE_OFFSET with F_OFD_SETLK, and holds it
 * while it waits. If the gate is busy, another handle already holds PR
 * and waits for EX - and it waits for our PR, while we would wait for
 * its PR: a certain deadlock. We refuse at once with -EDEADLK and keep
 * PR; the caller releases and retries, which lets the gate holder in.
 * This works across processes and nodes because the gate is an ordinary
 * lock on the same file; a dead gate holder's gate dies with it.
 * Deadlocks across *different* resources are not detected (lock order,
 * DESIGN invariant 7, prevents them); the request timeout ends them.
 *
 * Value block
 * -----------
 * The first FCNTL_RECORD_SIZE bytes of the lock file hold a record:
 * magic "CMLK", format version, flags (VALID), a store sequence number,
 * a checksum, then the 32-byte value. A new, short, or damaged file reads
 * as "not valid" (damage is logged). The record is read after every
 * grant, and written by an EX holder at release or down-conversion -
 * always while we still hold F_WRLCK, so the next holder, who reads only
 * after our unlock, sees it: the kernel (and the NFS client, which
 * flushes before unlocking and revalidates after locking) orders it.
 * No fsync is needed for that.
 *
 * Crashes are the hard part. The value is the version stamp of what the
 * lock protects (DESIGN invariant 3). An EX holder changes the mailbox
 * (and makes those changes durable) before it stores the new stamp at
 * release; if it dies in between, the old stamp must not survive as
 * "valid", or the next holder would trust a cache that misses the
 * changes. So the record has two parts: the last stored value, and an
 * "EX holder at work" marker (the VALID flag cleared). When EX is granted
 * on a valid record, we write the marker - the value stays in place - and
 * at release the holder either stores its new value (valid, sequence +
 * 1) or, if it set none, clears the marker again: not setting a value
 * means "nothing the stamp covers changed". So after any EX holder that
 * released normally, every reader on every node finds the value valid
 * and a reader whose view matches it reads nothing of the mailbox's log
 * (tests/unit/test-store.c: test_stamp_saves_log_reads). A holder that
 * dies before its release leaves the marker, and the next holder finds
 * the value invalid and rebuilds from disk.
 *
 * Durability of the marker. Who could trust a stale value after the
 * holder died? If only the process died, its host's kernel still has the
 * marker write: in the page cache, and on NFS the client flushes it to
 * the server when it closes the dead process's descriptors, before the
 * lock goes (close flushes, then the lock is dropped). Every later reader
 * sees it without any fsync. If the whole host died, what matters is who
 * survives with a cached view: on a file system that only this host
 * mounts (ext4, xfs, btrfs, tmpfs ...), nobody - every process restarts
 * with empty views, which load everything from disk and never consult
 * the stamp for it. On a shared file system (NFS, GFS2, OCFS2, and any
 * type we do not recognise), other nodes survive with views that the old
 * stamp would match, while the dead holder's log records may be durable.
 * There the marker must be durable before the holder can change
 * anything: we fdatasync() it (through io_fsync, off the loop) before
 * the grant is delivered. That costs one journal commit (on NFS one
 * COMMIT) per EX grant of a valid value; EX holders of mailboxes fsync
 * their own changes anyway. The release writes need no fsync: if they
 * are lost in a crash, the durable state is the marker, which is safe.
 * Records that are already invalid are not rewritten, so locks that
 * never carry a value (queue items) pay nothing. (The environment
 * variable CLUSTERMAIL_FCNTL_DURABLE=1 or =0 overrides the file system
 * guess; the unit tests use it to run both paths.)
 *
 * Files and processes
 * -------------------
 * Lock files are never deleted while any daemon may run: between someone's
 * open() and lock, an unlink plus a re-create by a third party would give
 * two handles locks on two different inodes under one name, and both
 * would "hold" EX. (Pruning .locks is an offline job.) A process's OFD
 * locks go away when the last descriptor of each description closes - at
 * exit or kill -9 too, which is how a dead process (or, on NFS after its
 * lease expires, a dead node) releases its locks. Descriptors are
 * O_CLOEXEC; a fork() without exec would share the lock, so the daemon
 * must not fork while it holds handles.
 */
#include "lib/lib.h"
#include "io/ioloop.h"
#include "lock-private.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define FCNTL_LOCK_DIR ".locks"
#define FCNTL_PROBE_FILE ".probe"	/* never a resource: '.' is encoded */
#define FCNTL_FILE_NAME_MAX (LOCK_NAME_MAX * 3)

/* The value record at offset 0 of each lock file. */
#define FCNTL_MAGIC "CMLK"
#define FCNTL_FORMAT_VERSION 1
#define FCNTL_FLAG_VALID 0x01
#define FCNTL_HEADER_SIZE 16
#define FCNTL_RECORD_SIZE (FCNTL_HEADER_SIZE + LOCK_VALUE_SIZE)
/* The upgrade gate: one byte well past the record. */
#define FCNTL_GATE_OFFSET 4096

#define FCNTL_BACKOFF_MIN_MSECS 1
#define FCNTL_BACKOFF_MAX_MSECS 16

struct fcntl_record {
	bool valid;
	uint32_t sequence;		/* stores so far (wraps) */
	uint8_t value[LOCK_VALUE_SIZE];
};

struct fcntl_client {
	struct lock_client client;
	int dir_fd;			/* SPOOL/.locks */
	char *dir_path;			/* owned; for messages */
	/* fdatasync the invalidation at EX grants (see "Crashes"). */
	bool durable_invalidate;
};

struct fcntl_lock {
	struct lock lock;
	char file_name[FCNTL_FILE_NAME_MAX + 1];
	int fd;				/* -1 until the first acquire */

	/* Polling while busy; holds a reference while pending. */
	struct io_request retry_req;
	unsigned int backoff_msecs;
	bool cancel_requested;
	bool gate_held;
	/* fdatasync of an invalidated record; holds a reference. */
	struct io_request sync_req;

	enum lock_mode from_mode;	/* mode held when the request began */
	struct fcntl_record record;	/* on disk as far as we know */
	bool invalidated;		/* we wrote record invalid at EX grant */
};

static inline struct fcntl_lock *fcntl_lock(struct lock *lock)
{
	return CONTAINER_OF(lock, struct fcntl_lock, lock);
}

static inline struct fcntl_client *fcntl_client(struct lock_client *client)
{
	return CONTAINER_OF(client, struct fcntl_client, client);
}

/* fcntl_file_name - a resource name as a safe file name: [A-Za-z0-9_-],
   and '.' except first, stay; every other byte becomes %XX */
static void fcntl_file_name(const char *name, char out[FCNTL_FILE_NAME_MAX + 1])
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; name[i] != '\0'; i++) {
		unsigned char c = (unsigned char)name[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_' || c == '-' ||
		    (c == '.' && i > 0)) {
			*out++ = (char)c;
			continue;
		}
		*out++ = '%';
		*out++ = hex[c >> 4];
		*out++ = hex[c & 0xf];
	}
	*out = '\0';
}

/* fcntl_setlk - F_OFD_SETLK: 0, -EAGAIN when busy, or -errno */
static int fcntl_setlk(int fd, short type, off_t start, off_t len)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = start,
		.l_len = len,
		.l_pid = 0,		/* required for OFD locks */
	};

	while (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		if (errno == EINTR)
			continue;
		/* POSIX allows either for "held by someone else". */
		return errno == EACCES ? -EAGAIN : -errno;
	}
	return 0;
}

/* fcntl_range_lock - lock or unlock the resource range */
static inline int fcntl_range_lock(struct fcntl_lock *fl, short type)
{
	return fcntl_setlk(fl->fd, type, 0, LOCK_VALUE_SIZE);
}

/* fcntl_fail - log a failed system call on the lock file, return ret */
static int fcntl_fail(struct fcntl_lock *fl, const char *what, int ret)
{
	log_id_error(fl->lock.name, "fcntl lock backend: %s on %s/%s "
		     "failed: %s", what,
		     fcntl_client(fl->lock.client)->dir_path, fl->file_name,
		     strerror(-ret));
	return ret;
}

/* fcntl_open - open (or create) the handle's lock file */
static int fcntl_open(struct fcntl_lock *fl)
{
	struct fcntl_client *fc = fcntl_client(fl->lock.client);

	fl->fd = openat(fc->dir_fd, fl->file_name,
			O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
	if (fl->fd < 0)
		return fcntl_fail(fl, "open", -errno);
	return 0;
}

/* fcntl_close - close the lock file, dropping every lock on it */
static void fcntl_close(struct fcntl_lock *fl)
{
	if (fl->fd < 0)
		return;
	if (close(fl->fd) < 0)
		(void)fcntl_fail(fl, "close", -errno);
	fl->fd = -1;
	fl->gate_held = false;
}

/*
 * Value record
 */

static void fcntl_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t fcntl_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 |
		(uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* fcntl_checksum - FNV-1a over the record except the checksum field */
static uint32_t fcntl_checksum(const uint8_t buf[FCNTL_RECORD_SIZE])
{
	uint32_t hash = 2166136261u;

	for (size_t i = 0; i < FCNTL_RECORD_SIZE; i++) {
		if (i >= 12 && i < 16)
			continue;
		hash = (hash ^ buf[i]) * 16777619u;
	}
	return hash;
}

/* fcntl_record_encode - serialise rec (little endian, fixed layout) */
static void fcntl_record_encode(const struct fcntl_record *rec,
				uint8_t buf[FCNTL_RECORD_SIZE])
{
	memset(buf, 0, FCNTL_RECORD_SIZE);
	memcpy(buf, FCNTL_MAGIC, 4);
	buf[4] = FCNTL_FORMAT_VERSION;
	buf[5] = rec->valid ? FCNTL_FLAG_VALID : 0;
	fcntl_put32(buf + 8, rec->sequence);
	memcpy(buf + FCNTL_HEADER_SIZE, rec->value, LOCK_VALUE_SIZE);
	fcntl_put32(buf + 12, fcntl_checksum(buf));
}

/* fcntl_record_decode - parse; false (logged) if damaged */
static bool fcntl_record_decode(struct fcntl_lock *fl,
				const uint8_t buf[FCNTL_RECORD_SIZE],
				struct fcntl_record *rec_r)
{
	const char *problem = NULL;

	if (memcmp(buf, FCNTL_MAGIC, 4) != 0)
		problem = "bad magic";
	else if (buf[4] != FCNTL_FORMAT_VERSION)
		problem = "unknown format version";
	else if (fcntl_get32(buf + 12) != fcntl_checksum(buf))
		problem = "checksum mismatch";
	if (problem != NULL) {
		log_id_warn(fl->lock.name, "fcntl lock backend: value record "
			    "in %s/%s is damaged (%s); treating the value as "
			    "invalid", fcntl_client(fl->lock.client)->dir_path,
			    fl->file_name, problem);
		return false;
	}
	rec_r->valid = (buf[5] & FCNTL_FLAG_VALID) != 0;
	rec_r->sequence = fcntl_get32(buf + 8);
	memcpy(rec_r->value, buf + FCNTL_HEADER_SIZE, LOCK_VALUE_SIZE);
	return true;
}

/* fcntl_record_read - read the record into fl->record (invalid if absent,
   short or damaged). Returns 0, or -errno if it cannot be read at all. */
static int fcntl_record_read(struct fcntl_lock *fl)
{
	uint8_t buf[FCNTL_RECORD_SIZE];
	ssize_t ret;

	memset(&fl->record, 0, sizeof(fl->record));
	do {
		ret = pread(fl->fd, buf, sizeof(buf), 0);
	} while (ret < 0 && errno == EINTR);
	if (ret < 0)
		return fcntl_fail(fl, "reading the value record", -errno);
	if (ret == 0)
		return 0;	/* a new lock file: no value yet */
	if (ret < FCNTL_RECORD_SIZE) {
		log_id_warn(fl->lock.name, "fcntl lock backend: value record in "
			    "%s/%s is short (%zd of %d bytes); treating the value "
			    "as invalid", fcntl_client(fl->lock.client)->dir_path,
			    fl->file_name, ret, FCNTL_RECORD_SIZE);
		return 0;
	}
	if (!fcntl_record_decode(fl, buf, &fl->record))
		memset(&fl->record, 0, sizeof(fl->record));
	return 0;
}

/* fcntl_record_write - write rec; fl->record follows what is on disk
   (invalid after a failed or short write). Returns 0 or -errno. */
static int fcntl_record_write(struct fcntl_lock *fl,
			      const struct fcntl_record *rec)
{
	uint8_t buf[FCNTL_RECORD_SIZE];
	ssize_t ret;

	fcntl_record_encode(rec, buf);
	do {
		ret = pwrite(fl->fd, buf, sizeof(buf), 0);
	} while (ret < 0 && errno == EINTR);
	if (ret == FCNTL_RECORD_SIZE) {
		fl->record = *rec;
		return 0;
	}
	/* A short write leaves a record the checksum rejects: invalid,
	   which is the safe state. */
	fl->record.valid = false;
	lock_backend_count_error();
	return fcntl_fail(fl, "writing the value record",
			  ret < 0 ? -errno : -EIO);
}

/* fcntl_record_store - leaving EX: store the new value, or restore the
   record found at the grant if the holder set none */
static void fcntl_record_store(struct fcntl_lock *fl)
{
	struct fcntl_record rec = fl->record;

	if (fl->lock.value_dirty) {
		rec.valid = true;
		rec.sequence++;
		memcpy(rec.value, fl->lock.value_out, LOCK_VALUE_SIZE);
	} else if (fl->invalidated) {
		rec.valid = true;
	} else {
		return;
	}
	fl->invalidated = false;
	(void)fcntl_record_write(fl, &rec);
}

/* fcntl_set_grant_value - hand the record's value to the generic layer */
static void fcntl_set_grant_value(struct fcntl_lock *fl)
{
	fl->lock.grant_value_valid = fl->record.valid;
	if (fl->record.valid)
		memcpy(fl->lock.grant_value, fl->record.value, LOCK_VALUE_SIZE);
	else
		memset(fl->lock.grant_value, 0, LOCK_VALUE_SIZE);
}

/*
 * Granting
 */

/* fcntl_undo - after a failed EX grant, go back to the mode we had */
static void fcntl_undo(struct fcntl_lock *fl)
{
	int ret = fcntl_range_lock(fl, fl->from_mode == LOCK_MODE_PR ?
				   F_RDLCK : F_UNLCK);

	if (ret < 0) {
		/* Closing drops every lock of this description. */
		(void)fcntl_fail(fl, "undoing a failed grant", ret);
		fcntl_close(fl);
	}
}

static void fcntl_sync_done(struct io_request *req, int result);

/* fcntl_granted - the range is ours: read the value and, for EX, make
   the invalidation durable before the caller hears of the grant */
static int fcntl_granted(struct fcntl_lock *fl)
{
	struct fcntl_record rec;

	/* Unreadable is not "invalid": the disk may hold a valid record
	   that an EX holder would then fail to invalidate. */
	if (fcntl_record_read(fl) < 0) {
		fcntl_undo(fl);
		return -EIO;
	}
	fcntl_set_grant_value(fl);
	if (fl->lock.req_mode != LOCK_MODE_EX || !fl->record.valid)
		return 0;

	/* The marker: the value stays in the record, the flag says "an EX
	   holder is at work". */
	rec = fl->record;
	rec.valid = false;
	if (fcntl_record_write(fl, &rec) < 0) {
		fcntl_undo(fl);
		return -EIO;
	}
	/* Restore at release needs the value we found. */
	fl->record.valid = true;
	fl->invalidated = true;
	if (!fcntl_client(fl->lock.client)->durable_invalidate)
		return 0;

	lock_ref(&fl->lock);
	io_request_init(&fl->sync_req, fcntl_sync_done, fl);
	io_fsync(fl->lock.loop, &fl->sync_req, fl->fd, true);
	return LOCK_BACKEND_QUEUED;
}

/* fcntl_sync_done - the invalidated record is durable: deliver the grant */
static void fcntl_sync_done(struct io_request *req, int result)
{
	struct fcntl_lock *fl = req->context;
	struct lock *lock = &fl->lock;

	if (lock_is_destroyed(lock)) {
		/* fcntl_destroy() left the close to us. */
		fcntl_close(fl);
		lock_unref(lock);
		return;
	}
	if (result < 0) {
		(void)fcntl_fail(fl, "fdatasync of the invalidated value", result);
		/* The value stays invalid on disk: safe. */
		fl->invalidated = false;
		fcntl_undo(fl);
	}
	lock_backend_complete(lock, result < 0 ? -EIO : 0);
	lock_unref(lock);
}

/* fcntl_gate_release - end an upgrade's claim on the gate */
static void fcntl_gate_release(struct fcntl_lock *fl)
{
	int ret;

	if (!fl->gate_held)
		return;
	fl->gate_held = false;
	if ((ret = fcntl_setlk(fl->fd, F_UNLCK, FCNTL_GATE_OFFSET, 1)) < 0)
		(void)fcntl_fail(fl, "releasing the upgrade gate", ret);
}

static void fcntl_retry(struct io_request *req, int result);

/* fcntl_wait_start - busy: poll again after a backoff */
static int fcntl_wait_start(struct fcntl_lock *fl)
{
	int ret;

	if (fl->from_mode == LOCK_MODE_PR) {
		ret = fcntl_setlk(fl->fd, F_WRLCK, FCNTL_GATE_OFFSET, 1);
		if (ret == -EAGAIN)
			return -EDEADLK;	/* another PR holder upgrades */
		if (ret < 0)
			return fcntl_fail(fl, "taking the upgrade gate", ret);
		fl->gate_held = true;
	}
	fl->lock.backend_waited = true;
	fl->backoff_msecs = FCNTL_BACKOFF_MIN_MSECS;
	lock_ref(&fl->lock);
	io_request_init(&fl->retry_req, fcntl_retry, fl);
	io_timeout(fl->lock.loop, &fl->retry_req, fl->backoff_msecs);
	return LOCK_BACKEND_QUEUED;
}

/* fcntl_retry_attempt - one more F_OFD_SETLK while waiting; returns the
   request's result, or LOCK_BACKEND_QUEUED if it goes on */
static int fcntl_retry_attempt(struct fcntl_lock *fl)
{
	int ret;

	if (fl->cancel_requested) {
		fcntl_gate_release(fl);
		return -ECANCELED;
	}
	ret = fcntl_range_lock(fl, fl->lock.req_mode == LOCK_MODE_EX ?
			       F_WRLCK : F_RDLCK);
	if (ret == -EAGAIN) {
		if (fl->backoff_msecs < FCNTL_BACKOFF_MAX_MSECS)
			fl->backoff_msecs *= 2;
		io_timeout(fl->lock.loop, &fl->retry_req, fl->backoff_msecs);
		return LOCK_BACKEND_QUEUED;
	}
	fcntl_gate_release(fl);
	if (ret < 0)
		return fcntl_fail(fl, "F_OFD_SETLK", ret);
	return fcntl_granted(fl);
}

/* fcntl_retry - the backoff timer fired (or was cancelled) */
static void fcntl_retry(struct io_request *req, int result ATTR_UNUSED)
{
	struct fcntl_lock *fl = req->context;
	struct lock *lock = &fl->lock;
	int ret;

	if (lock_is_destroyed(lock)) {
		lock_unref(lock);
		return;
	}
	ret = fcntl_retry_attempt(fl);
	if (ret == LOCK_BACKEND_QUEUED) {
		/* Still waiting: the reference stays with the timer (or
		   moved to the fsync). */
		if (!io_request_is_pending(&fl->retry_req))
			lock_unref(lock);
		return;
	}
	lock_backend_complete(lock, ret);
	lock_unref(lock);
}

/*
 * Backend vfuncs
 */

/* fcntl_probe - fail early when the file system has no OFD locks */
static int fcntl_probe(struct fcntl_client *fc, char **error_r)
{
	int fd, ret;

	fd = openat(fc->dir_fd, FCNTL_PROBE_FILE,
		    O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660);
	if (fd < 0) {
		*error_r = mem_printf("fcntl lock backend: cannot create files "
				      "in %s: %s", fc->dir_path, strerror(errno));
		return -1;
	}
	ret = fcntl_setlk(fd, F_WRLCK, 0, 1);
	if (ret == 0)
		ret = fcntl_setlk(fd, F_UNLCK, 0, 1);
	(void)close(fd);
	if (ret < 0 && ret != -EAGAIN) {
		*error_r = mem_printf("fcntl lock backend: %s does not support "
				      "OFD locks: %s%s", fc->dir_path,
				      strerror(-ret), ret == -ENOLCK ?
				      " (NFS without a lock service?)" : "");
		return -1;
	}
	/* -EAGAIN: another daemon is probing right now; locks work. */
	return 0;
}

/* fcntl_open_dir - create and open SPOOL/.locks */
static int fcntl_open_dir(struct fcntl_client *fc, char **error_r)
{
	if (mkdir(fc->dir_path, 0770) < 0 && errno != EEXIST) {
		*error_r = mem_printf("fcntl lock backend: cannot create %s: %s",
				      fc->dir_path, strerror(errno));
		return -1;
	}
	fc->dir_fd = open(fc->dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fc->dir_fd < 0) {
		*error_r = mem_printf("fcntl lock backend: cannot open %s: %s",
				      fc->dir_path, strerror(errno));
		return -1;
	}
	if (faccessat(fc->dir_fd, ".", W_OK | X_OK, AT_EACCESS) < 0) {
		*error_r = mem_printf("fcntl lock backend: %s is not writable: %s",
				      fc->dir_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* fcntl_local_fs - is the lock directory on a file system that only this
   host mounts (so that no process outlives a crash of the host)? Unknown
   types count as shared. */
static bool fcntl_local_fs(int dir_fd)
{
	static const unsigned long local_types[] = {
		0xEF53,		/* ext2/3/4 */
		0x58465342,	/* xfs */
		0x9123683E,	/* btrfs */
		0x01021994,	/* tmpfs */
		0xF2F52010,	/* f2fs */
		0x794c7630,	/* overlayfs */
	};
	struct statfs sfs;

	if (fstatfs(dir_fd, &sfs) < 0)
		return false;
	for (size_t i = 0; i < N_ELEMENTS(local_types); i++) {
		if ((unsigned long)sfs.f_type == local_types[i])
			return true;
	}
	return false;
}

/* fcntl_client_create - SPOOL/.locks, checked to be usable */
static struct lock_client *
fcntl_client_create(const struct lock_client_settings *set, char **error_r)
{
	struct fcntl_client *fc;

	if (set->spool_dir == NULL || set->spool_dir[0] == '\0') {
		*error_r = mem_strdup("fcntl lock backend: spool_dir is not set");
		return NULL;
	}
	fc = mem_zalloc(sizeof(*fc));
	fc->dir_fd = -1;
	fc->dir_path = mem_printf("%s/%s", set->spool_dir, FCNTL_LOCK_DIR);
	if (fcntl_open_dir(fc, error_r) < 0 || fcntl_probe(fc, error_r) < 0) {
		if (fc->dir_fd >= 0)
			(void)close(fc->dir_fd);
		free(fc->dir_path);
		free(fc);
		return NULL;
	}
	fc->durable_invalidate = !fcntl_local_fs(fc->dir_fd);
	/* Tests force either way ("1" or "0"). */
	if (getenv("CLUSTERMAIL_FCNTL_DURABLE") != NULL)
		fc->durable_invalidate =
			strcmp(getenv("CLUSTERMAIL_FCNTL_DURABLE"), "1") == 0;
	return &fc->client;
}

/* fcntl_client_destroy - close the lock directory */
static void fcntl_client_destroy(struct lock_client *client)
{
	struct fcntl_client *fc = fcntl_client(client);

	if (close(fc->dir_fd) < 0)
		log_error("fcntl lock backend: close(%s): %s", fc->dir_path,
			  strerror(errno));
	free(fc->dir_path);
	free(fc);
}

/* fcntl_lock_init - no file yet; its name is fixed */
static void fcntl_lock_init(struct lock *lock)
{
	struct fcntl_lock *fl = fcntl_lock(lock);

	fl->fd = -1;
	fcntl_file_name(lock->name, fl->file_name);
}

/* fcntl_downgrade - EX -> PR: store the value, then let readers in */
static int fcntl_downgrade(struct fcntl_lock *fl)
{
	int ret;

	fcntl_record_store(fl);
	if ((ret = fcntl_range_lock(fl, F_RDLCK)) < 0)
		return fcntl_fail(fl, "F_OFD_SETLK (EX -> PR)", ret);
	fcntl_set_grant_value(fl);
	return 0;
}

/* fcntl_acquire - try once; refuse, or start polling */
static int fcntl_acquire(struct lock *lock)
{
	struct fcntl_lock *fl = fcntl_lock(lock);
	int ret;

	fl->cancel_requested = false;
	fl->from_mode = lock->mode;
	if (fl->fd < 0 && (ret = fcntl_open(fl)) < 0)
		return ret;
	if (lock->mode == LOCK_MODE_EX)
		return fcntl_downgrade(fl);

	ret = fcntl_range_lock(fl, lock->req_mode == LOCK_MODE_EX ?
			       F_WRLCK : F_RDLCK);
	if (ret == 0)
		return fcntl_granted(fl);
	if (ret != -EAGAIN)
		return fcntl_fail(fl, "F_OFD_SETLK", ret);
	if ((lock->req_flags & LOCK_FLAG_NOQUEUE) != 0)
		return -EAGAIN;
	return fcntl_wait_start(fl);
}

/* fcntl_cancel - stop polling; the retry callback completes */
static void fcntl_cancel(struct lock *lock)
{
	struct fcntl_lock *fl = fcntl_lock(lock);

	/* While the invalidation is being synced the grant is decided;
	   it wins. */
	if (!io_request_is_pending(&fl->retry_req) || fl->cancel_requested)
		return;
	fl->cancel_requested = true;
	io_cancel(lock->loop, &fl->retry_req);
}

/* fcntl_release - store or restore the value, then unlock */
static void fcntl_release(struct lock *lock)
{
	struct fcntl_lock *fl = fcntl_lock(lock);
	int ret;

	if (fl->fd < 0)
		return;
	if (lock->mode == LOCK_MODE_EX)
		fcntl_record_store(fl);
	if ((ret = fcntl_range_lock(fl, F_UNLCK)) < 0) {
		(void)fcntl_fail(fl, "F_OFD_SETLK (unlock)", ret);
		lock_backend_count_error();
		fcntl_close(fl);
	}
}

/* fcntl_destroy - stop polling and close (dropping every lock) */
static void fcntl_destroy(struct lock *lock)
{
	struct fcntl_lock *fl = fcntl_lock(lock);

	if (io_request_is_pending(&fl->retry_req))
		io_cancel(lock->loop, &fl->retry_req);
	/* The kernel may still use the descriptor for the fsync; its
	   completion closes it. */
	if (io_request_is_pending(&fl->sync_req))
		return;
	fcntl_close(fl);
}

const struct lock_backend_vfuncs lock_fcntl_vfuncs = {
	.name = "fcntl",
	.lock_size = sizeof(struct fcntl_lock),
	.client_create = fcntl_client_create,
	.client_destroy = fcntl_client_destroy,
	.lock_init = fcntl_lock_init,
	.acquire = fcntl_acquire,
	.cancel = fcntl_cancel,
	.release = fcntl_release,
	.destroy = fcntl_destroy,
};
