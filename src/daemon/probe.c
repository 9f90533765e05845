/*
 * probe.c - the deep health check behind the control command "probe"
 * (`clustermailctl probe`, the OCF agent's monitor depth 20).
 *
 * Two steps, both through the daemon's own machinery so that a pass means
 * this daemon can work: an exclusive lock on "probe.NODE" taken and
 * released through the daemon's lock client (a round trip in the DLM
 * lockspace, or an OFD lock on the spool), then a file SPOOL/.probe/NODE
 * written, fsynced, read back and removed on the blocking pool.
 *
 * A spool that hangs (a dead NFS server with a hard mount, a GFS2 waiting
 * for fencing) keeps its pool thread; one probe at a time is allowed, and
 * a probe that finds the previous one still stuck fails at once saying for
 * how long, which is exactly what the monitor needs to hear.
 */
#include "lib/lib.h"
#include "lock/lock.h"
#include "io/ioloop.h"
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE_LOCK_TIMEOUT_MSECS 10000

struct probe {
	struct ioloop *loop;
	struct lock *lock;
	struct io_request req;
	char *spool_dir;
	char node[64];
	char error[256];	/* set by the spool step (pool thread) */
	uint64_t started, lock_msecs;
	probe_done_t *done;
	void *context;
};

/* One probe at a time; a stuck one stays here. */
static struct probe *probe_current;

/* probe_finish - report and forget */
static void probe_finish(struct probe *probe, const char *error)
{
	uint64_t total = ioloop_now_msecs() - probe->started;

	probe->done(error, probe->lock_msecs,
		    error == NULL ? total - probe->lock_msecs : 0, probe->context);
	if (probe->lock != NULL)
		lock_destroy(&probe->lock);
	free(probe->spool_dir);
	free(probe);
	probe_current = NULL;
}

/* probe_spool_work - pool thread: write, fsync, read back, remove */
static int probe_spool_work(void *arg)
{
	struct probe *probe = arg;
	char dir[4096], path[4200], token[96], back[96];
	ssize_t n;
	int fd;

	snprintf(dir, sizeof(dir), "%s/.probe", probe->spool_dir);
	snprintf(path, sizeof(path), "%s/%s", dir, probe->node);
	snprintf(token, sizeof(token), "probe %s %ld %llu\n", probe->node,
		 (long)getpid(), (unsigned long long)probe->started);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		snprintf(probe->error, sizeof(probe->error), "mkdir %.200s: %s",
			 dir, strerror(errno));
		return -1;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(probe->error, sizeof(probe->error), "create %.200s: %s",
			 path, strerror(errno));
		return -1;
	}
	n = write(fd, token, strlen(token));
	if (n != (ssize_t)strlen(token) || fsync(fd) < 0) {
		snprintf(probe->error, sizeof(probe->error), "write %.200s: %s", path,
			 n < 0 || n == (ssize_t)strlen(token) ? strerror(errno) :
			 "short write");
		(void)close(fd);
		(void)unlink(path);
		return -1;
	}
	if (close(fd) < 0) {
		snprintf(probe->error, sizeof(probe->error), "close %.200s: %s",
			 path, strerror(errno));
		(void)unlink(path);
		return -1;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	n = fd < 0 ? -1 : read(fd, back, sizeof(back));
	if (fd >= 0)
		(void)close(fd);
	if (n != (ssize_t)strlen(token) || memcmp(back, token, (size_t)n) != 0) {
		snprintf(probe->error, sizeof(probe->error),
			 "read back %.200s: %s", path,
			 n < 0 ? strerror(errno) : "different content");
		(void)unlink(path);
		return -1;
	}
	if (unlink(path) < 0) {
		snprintf(probe->error, sizeof(probe->error), "unlink %.200s: %s",
			 path, strerror(errno));
		return -1;
	}
	return 0;
}

static void probe_spool_done(struct io_request *req, int result)
{
	struct probe *probe = req->context;

	probe_finish(probe, result < 0 ? probe->error : NULL);
}

static void probe_locked(struct lock *lock, int result, void *context)
{
	struct probe *probe = context;
	char error[128];

	probe->lock_msecs = ioloop_now_msecs() - probe->started;
	if (result < 0) {
		snprintf(error, sizeof(error), "lock %s: %s", lock_get_name(lock),
			 result == -ETIMEDOUT ? "timed out" : strerror(-result));
		probe_finish(probe, error);
		return;
	}
	lock_release(lock);
	lock_destroy(&probe->lock);
	io_request_init(&probe->req, probe_spool_done, probe);
	ioloop_run_blocking(probe->loop, &probe->req, probe_spool_work, probe);
}

/* A probe refused before it began; answered from the loop like any
   other, so that the caller never sees its callback inside probe_start()
   (the control socket keeps its replies in the order of the commands). */
struct probe_refusal {
	probe_done_t *done;
	void *context;
	char error[128];
};

static void probe_refusal_run(void *context)
{
	struct probe_refusal *refusal = context;

	refusal->done(refusal->error, 0, 0, refusal->context);
	free(refusal);
}

static void probe_refuse(struct ioloop *loop, probe_done_t *done,
			 void *context, const char *error)
{
	struct probe_refusal *refusal = mem_zalloc(sizeof(*refusal));

	refusal->done = done;
	refusal->context = context;
	snprintf(refusal->error, sizeof(refusal->error), "%s", error);
	ioloop_post(loop, probe_refusal_run, refusal);
}

void probe_start(struct ioloop *loop, probe_done_t *done, void *context)
{
	struct daemon_config *config;
	struct lock_client *locks;
	struct probe *probe;
	char name[LOCK_NAME_MAX + 1], error[128];

	if (probe_current != NULL) {
		snprintf(error, sizeof(error),
			 "the previous probe has been stuck for %llu s",
			 (unsigned long long)(ioloop_now_msecs() -
					      probe_current->started) / 1000);
		probe_refuse(loop, done, context, error);
		return;
	}
	if (daemon_store() == NULL || (locks = daemon_lock_client()) == NULL) {
		probe_refuse(loop, done, context,
			     "the mail store is unavailable (is the spool mounted?)");
		return;
	}
	probe = mem_zalloc(sizeof(*probe));
	probe->loop = loop;
	probe->done = done;
	probe->context = context;
	probe->started = ioloop_now_msecs();
	config = daemon_config_get();
	probe->spool_dir = mem_strdup(config->set->spool_dir);
	snprintf(probe->node, sizeof(probe->node), "%s", config->set->node_name);
	daemon_config_put(&config);
	snprintf(name, sizeof(name), "probe.%.58s", probe->node);
	probe->lock = lock_create(locks, name, LOCK_CLASS_OTHER);
	probe_current = probe;
	lock_acquire(probe->lock, loop, LOCK_MODE_EX, 0, PROBE_LOCK_TIMEOUT_MSECS,
		     probe_locked, probe);
}
