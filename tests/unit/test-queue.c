/*
 * test-queue.c - the outbound queue store (src/queue/queue.c) through its
 * public API, on a temp spool with the fcntl lock backend and synchronous
 * sio. Two "nodes" are two queues with their own lock clients in one
 * process: their lock handles conflict exactly as two processes' would.
 */
#include "lib/lib.h"
#include "lib/str.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "queue/queue.h"
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#define GRACE_SECS 60

struct node {
	struct iopool *pool;
	struct ioloop *loop;
	struct lock_client *locks;
	struct sio *sio;
	struct queue *queue;
};

static char spool[256];
static struct node n1, n2;

static void node_init(struct node *n, const char *name)
{
	struct ioloop_settings ls = { .name = name };
	struct lock_client_settings cs = {
		.backend = SETTINGS_LOCK_FCNTL, .spool_dir = spool,
	};
	struct queue_settings qs = {
		.spool_dir = spool, .node_name = name,
		.tmp_grace_secs = GRACE_SECS,
	};
	char *error = NULL;

	n->pool = iopool_create(1);
	ls.pool = n->pool;
	n->loop = ioloop_create(&ls);
	cs.pool = n->pool;
	n->locks = lock_client_create(&cs, &error);
	ck_assert_msg(n->locks != NULL, "lock client: %s", error);
	n->sio = sio_create_sync(n->loop);
	qs.locks = n->locks;
	n->queue = queue_create(&qs, &error);
	ck_assert_msg(n->queue != NULL, "queue: %s", error);
}

static void stop_cb(struct io_request *req, int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

static void node_deinit(struct node *n)
{
	struct io_request req;

	queue_destroy(&n->queue);
	sio_destroy(&n->sio);
	lock_client_destroy(&n->locks);
	/* Cancelled lock timers complete on the next loop iterations. */
	while (ioloop_pending_count(n->loop) > 0) {
		io_request_init(&req, stop_cb, n->loop);
		io_timeout(n->loop, &req, 1);
		ioloop_run(n->loop);
	}
	ioloop_destroy(&n->loop);
	iopool_destroy(&n->pool);
}

static int rm_cb(const char *path, const struct stat *st ATTR_UNUSED,
		 int flag ATTR_UNUSED, struct FTW *ftw ATTR_UNUSED)
{
	return remove(path);
}

static void setup(void)
{
	snprintf(spool, sizeof(spool), "/tmp/cm-test-queue.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(spool));
	node_init(&n1, "node1");
	node_init(&n2, "node2");
}

static void teardown(void)
{
	node_deinit(&n1);
	node_deinit(&n2);
	nftw(spool, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void queue_path(char *buf, size_t size, const char *sub,
		       const char *name)
{
	snprintf(buf, size, "%s/.queue/%s/%s", spool, sub, name);
}

/* count_dir - entries in SPOOL/.queue/sub (not . and ..) */
static unsigned int count_dir(const char *sub)
{
	char path[512];
	struct dirent *d;
	unsigned int count = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "%s/.queue/%s", spool, sub);
	dir = opendir(path);
	ck_assert_ptr_nonnull(dir);
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			count++;
	}
	closedir(dir);
	return count;
}

static bool queue_file_exists(const char *sub, const char *name)
{
	char path[512];

	queue_path(path, sizeof(path), sub, name);
	return access(path, F_OK) == 0;
}

static char *read_queue_file(const char *sub, const char *name,
			     size_t *size_r)
{
	char path[512], *data;
	struct stat st;
	int fd;

	queue_path(path, sizeof(path), sub, name);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	data = mem_zalloc((size_t)st.st_size + 1);
	ck_assert_int_eq(read(fd, data, (size_t)st.st_size), st.st_size);
	close(fd);
	*size_r = (size_t)st.st_size;
	return data;
}

static void write_queue_file(const char *sub, const char *name,
			     const char *data, size_t size)
{
	char path[512];
	int fd;

	queue_path(path, sizeof(path), sub, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, size), (ssize_t)size);
	close(fd);
}

static void age_queue_file(const char *sub, const char *name, time_t secs)
{
	struct timeval tv[2];
	char path[512];

	queue_path(path, sizeof(path), sub, name);
	gettimeofday(&tv[0], NULL);
	tv[0].tv_sec -= secs;
	tv[1] = tv[0];
	ck_assert_int_eq(utimes(path, tv), 0);
}

/* new_envelope - sender and count recipients a0@example.org ... */
static struct queue_envelope *new_envelope(const char *sender,
					   unsigned int count)
{
	struct queue_envelope *env = mem_zalloc(sizeof(*env));

	env->sender = mem_strdup(sender);
	env->origin_node = mem_strdup("node1");
	env->origin_client = mem_strdup("local");
	env->rcpts = mem_calloc(count, sizeof(*env->rcpts));
	env->rcpt_count = count;
	for (unsigned int i = 0; i < count; i++)
		env->rcpts[i].address = mem_printf("a%u@example.org", i);
	return env;
}

/* enqueue - commit text with env on node n; returns env->id */
static const char *enqueue(struct node *n, struct queue_envelope *env,
			   const char *text)
{
	struct queue_writer *w;

	ck_assert_int_eq(queue_write_begin(n->queue, n->sio, &w), 0);
	ck_assert_int_eq(queue_write(w, text, strlen(text)), 0);
	ck_assert_msg(queue_write_commit(&w, env) == 0, "commit: %s",
		      queue_error());
	ck_assert_ptr_null(w);
	return env->id;
}

static const char *enqueue_simple(struct node *n, char id_r[QUEUE_ID_MAX + 1])
{
	struct queue_envelope *env = new_envelope("s@example.org", 2);

	strcpy(id_r, enqueue(n, env, "Subject: x\r\n\r\nbody\r\n"));
	queue_envelope_free(&env);
	return id_r;
}

static void assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		ck_assert_ptr_eq(a, b);
	else
		ck_assert_str_eq(a, b);
}

static void assert_rcpts_equal(const struct queue_rcpt *x,
			       const struct queue_rcpt *y)
{
	assert_str_eq_null(x->address, y->address);
	assert_str_eq_null(x->orcpt, y->orcpt);
	ck_assert_uint_eq(x->notify, y->notify);
	ck_assert_int_eq(x->state, y->state);
	ck_assert(x->dsn_sent == y->dsn_sent);
	assert_str_eq_null(x->status, y->status);
	assert_str_eq_null(x->diagnostic, y->diagnostic);
	assert_str_eq_null(x->remote_mta, y->remote_mta);
	ck_assert_int_eq(x->updated, y->updated);
}

static void assert_envelopes_equal(const struct queue_envelope *a,
				   const struct queue_envelope *b)
{
	ck_assert_str_eq(a->id, b->id);
	assert_str_eq_null(a->sender, b->sender);
	assert_str_eq_null(a->envid, b->envid);
	ck_assert_int_eq(a->ret, b->ret);
	ck_assert(a->smtputf8 == b->smtputf8);
	ck_assert(a->body_8bit == b->body_8bit);
	assert_str_eq_null(a->origin_node, b->origin_node);
	assert_str_eq_null(a->origin_client, b->origin_client);
	ck_assert_int_eq(a->created, b->created);
	ck_assert_uint_eq(a->size, b->size);
	ck_assert_uint_eq(a->attempts, b->attempts);
	ck_assert_int_eq(a->last_attempt, b->last_attempt);
	ck_assert_int_eq(a->next_attempt, b->next_attempt);
	ck_assert(a->held == b->held);
	ck_assert(a->delay_warned == b->delay_warned);
	assert_str_eq_null(a->last_error, b->last_error);
	ck_assert_uint_eq(a->rcpt_count, b->rcpt_count);
	for (size_t i = 0; i < a->rcpt_count; i++)
		assert_rcpts_equal(&a->rcpts[i], &b->rcpts[i]);
}

START_TEST(test_envelope_round_trip)
{
	/* Every byte 0x01..0xff somewhere, and the format's own syntax. */
	char all[256];
	struct queue_envelope *env, *read, *copy;

	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	env = new_envelope("odd\"sender=%41%\r\nend=0@x", 3);
	env->envid = mem_strdup("env id %2B\x7f");
	env->ret = QUEUE_RET_HDRS;
	env->smtputf8 = true;
	env->body_8bit = true;
	free(env->origin_client);
	env->origin_client = mem_strdup("helo [192.0.2.1]\n");
	env->attempts = 7;
	env->last_attempt = 1764000000;
	env->next_attempt = -5;
	env->held = true;
	env->delay_warned = true;
	env->last_error = mem_strdup(all);
	free(env->rcpts[0].address);
	env->rcpts[0].address = mem_strdup("\"a b\"@\xc3\xa9xample.org");
	env->rcpts[0].orcpt = mem_strdup("rfc822;a+20b@example.org");
	env->rcpts[0].notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY;
	env->rcpts[0].state = QUEUE_RCPT_DELIVERED;
	env->rcpts[0].dsn_sent = true;
	env->rcpts[0].status = mem_strdup("2.0.0");
	env->rcpts[0].diagnostic = mem_strdup(all);
	env->rcpts[0].remote_mta = mem_strdup("");
	env->rcpts[0].updated = 42;
	env->rcpts[2].notify = QUEUE_NOTIFY_NEVER;
	env->rcpts[2].diagnostic = mem_strdup("smtp; 450 4.2.0 %%%\t=");

	enqueue(&n1, env, "x\r\n");
	ck_assert_int_eq(queue_read(n2.queue, n2.sio, env->id, &read), 0);
	assert_envelopes_equal(env, read);
	/* NULL and "" stay apart. */
	ck_assert_ptr_null(read->rcpts[1].orcpt);
	ck_assert_str_eq(read->rcpts[0].remote_mta, "");
	copy = queue_envelope_dup(read);
	assert_envelopes_equal(copy, read);
	ck_assert_uint_eq(queue_envelope_pending(copy), 2);
	queue_envelope_free(&copy);
	ck_assert_ptr_null(copy);
	queue_envelope_free(&read);
	queue_envelope_free(&env);
}
END_TEST

START_TEST(test_enqueue_shape)
{
	struct queue_envelope *env = new_envelope("", 1), *read;
	struct queue_writer *w;
	char *data;
	size_t size;

	ck_assert_int_eq(queue_write_begin(n1.queue, n1.sio, &w), 0);
	ck_assert_uint_eq(count_dir("tmp"), 1);
	/* LF, CRLF, a CRLF split across two writes, no final line end. */
	ck_assert_int_eq(queue_write(w, "A: 1\nB: 2\r\n\r", 12), 0);
	ck_assert_int_eq(queue_write(w, "\nbody", 5), 0);
	ck_assert_int_eq(queue_write_commit(&w, env), 0);
	ck_assert_uint_gt(strlen(env->id), 0);
	ck_assert_uint_eq(count_dir("tmp"), 0);
	ck_assert(queue_file_exists("msg", env->id));
	ck_assert(queue_file_exists("env", env->id));
	data = read_queue_file("msg", env->id, &size);
	ck_assert_str_eq(data, "A: 1\r\nB: 2\r\n\r\nbody\r\n");
	ck_assert_uint_eq(env->size, size);
	ck_assert_int_ne(env->created, 0);
	free(data);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, env->id, &read), 0);
	ck_assert_str_eq(read->sender, "");
	ck_assert_uint_eq(read->size, size);
	queue_envelope_free(&read);
	queue_envelope_free(&env);

	/* Abort: nothing anywhere. */
	ck_assert_int_eq(queue_write_begin(n1.queue, n1.sio, &w), 0);
	ck_assert_int_eq(queue_write(w, "x\n", 2), 0);
	queue_write_abort(&w);
	ck_assert_ptr_null(w);
	ck_assert_uint_eq(count_dir("tmp"), 0);
	ck_assert_uint_eq(count_dir("msg"), 1);
	ck_assert_uint_eq(count_dir("env"), 1);

	/* A refused commit leaves nothing either. */
	env = new_envelope("s@x", 1);
	env->rcpts[0].state = QUEUE_RCPT_FAILED;
	ck_assert_int_eq(queue_write_begin(n1.queue, n1.sio, &w), 0);
	ck_assert_int_eq(queue_write_commit(&w, env), -EINVAL);
	ck_assert_uint_eq(count_dir("tmp"), 0);
	ck_assert_uint_eq(count_dir("msg"), 1);
	ck_assert_uint_eq(count_dir("env"), 1);
	queue_envelope_free(&env);
}
END_TEST

START_TEST(test_ids_unique)
{
	static const char id_chars[] = "0123456789-_."
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
	char ids[50][QUEUE_ID_MAX + 1];

	for (unsigned int i = 0; i < N_ELEMENTS(ids); i++) {
		enqueue_simple(i % 2 == 0 ? &n1 : &n2, ids[i]);
		ck_assert_ptr_nonnull(strstr(ids[i], i % 2 == 0 ? "-node1-" :
					     "-node2-"));
		ck_assert_uint_le(strlen(ids[i]), QUEUE_ID_MAX);
		ck_assert_uint_eq(strspn(ids[i], id_chars), strlen(ids[i]));
		for (unsigned int j = 0; j < i; j++)
			ck_assert_str_ne(ids[i], ids[j]);
	}
	ck_assert_uint_eq(count_dir("env"), N_ELEMENTS(ids));
}
END_TEST

START_TEST(test_claim_exclusive)
{
	char id[QUEUE_ID_MAX + 1];
	struct queue_claim *c1, *c2;
	char *node;

	enqueue_simple(&n1, id);
	ck_assert_ptr_null(queue_active_node(n2.queue, n2.sio, id));
	ck_assert_int_eq(queue_claim(n1.queue, n1.sio, id, 0, &c1), 0);
	ck_assert_str_eq(queue_claim_envelope(c1)->id, id);
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 0, &c2), -EAGAIN);
	ck_assert_ptr_null(c2);
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 200, &c2),
			 -ETIMEDOUT);
	node = queue_active_node(n2.queue, n2.sio, id);
	ck_assert_ptr_nonnull(node);
	ck_assert_str_eq(node, "node1");
	free(node);
	queue_claim_release(&c1);
	ck_assert_ptr_null(c1);
	ck_assert(!queue_file_exists("active", id));
	ck_assert_ptr_null(queue_active_node(n2.queue, n2.sio, id));
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 0, &c2), 0);
	queue_claim_release(&c2);
}
END_TEST

START_TEST(test_claim_vanished)
{
	char id[QUEUE_ID_MAX + 1];
	struct queue_envelope *env;
	struct queue_claim *c1, *c2;

	ck_assert_int_eq(queue_claim(n1.queue, n1.sio,
				     "20261124T000000Z-x-1-000001", 0, &c1),
			 -ENOENT);
	ck_assert_int_eq(queue_claim(n1.queue, n1.sio, "../etc", 0, &c1),
			 -EINVAL);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, "a/b", &env), -EINVAL);
	ck_assert_int_eq(queue_claim(n1.queue, n1.sio, "", 0, &c1), -EINVAL);

	/* Node 1 removes; node 2, which waited, then finds nothing. */
	enqueue_simple(&n1, id);
	ck_assert_int_eq(queue_claim(n1.queue, n1.sio, id, 0, &c1), 0);
	ck_assert_int_eq(queue_claim_remove(&c1), 0);
	ck_assert_ptr_null(c1);
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 1000, &c2), -ENOENT);
	ck_assert_int_eq(queue_read(n2.queue, n2.sio, id, &env), -ENOENT);
	ck_assert_uint_eq(count_dir("msg"), 0);
	ck_assert_uint_eq(count_dir("env"), 0);
	ck_assert_uint_eq(count_dir("active"), 0);
}
END_TEST

START_TEST(test_update_and_content)
{
	char id[QUEUE_ID_MAX + 1], buf[64];
	struct queue_envelope *env, *read;
	struct queue_claim *c;
	int fd;

	enqueue_simple(&n1, id);
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 1000, &c), 0);
	ck_assert_int_eq(queue_claim_open_content(c, &fd), 0);
	ck_assert_int_eq(sio_pread(n2.sio, fd, buf, sizeof(buf), 0), 20);
	ck_assert_int_eq(memcmp(buf, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	sio_close(n2.sio, fd);
	env = queue_claim_envelope(c);
	env->attempts = 1;
	env->next_attempt = 1000;
	env->last_error = mem_strdup("connect: refused");
	env->rcpts[1].state = QUEUE_RCPT_DELIVERED;
	env->rcpts[1].status = mem_strdup("2.0.0");
	env->rcpts[1].remote_mta = mem_strdup("mx.example.org");
	ck_assert_int_eq(queue_claim_update(c), 0);
	ck_assert_uint_eq(count_dir("tmp"), 0);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, id, &read), 0);
	assert_envelopes_equal(env, read);
	ck_assert_uint_eq(queue_envelope_pending(read), 1);
	queue_envelope_free(&read);
	queue_claim_release(&c);
}
END_TEST

/* collect_ids - scan callback: remember every ID */
static int collect_ids(const struct queue_envelope *env, void *context)
{
	str_array_add(context, env->id);
	return 0;
}

static int stop_at_first(const struct queue_envelope *env ATTR_UNUSED,
			 void *context)
{
	(*(unsigned int *)context)++;
	return 99;
}

START_TEST(test_torn_envelope)
{
	char id1[QUEUE_ID_MAX + 1], id2[QUEUE_ID_MAX + 1], id3[QUEUE_ID_MAX + 1];
	struct queue_envelope *env;
	struct str_array ids;
	unsigned int calls = 0;
	char *data;
	size_t size;

	enqueue_simple(&n1, id1);
	enqueue_simple(&n1, id2);
	enqueue_simple(&n1, id3);
	/* id1: cut short, as after a crash without ordered data. */
	data = read_queue_file("env", id1, &size);
	write_queue_file("env", id1, data, size / 2);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, id1, &env), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(queue_error(), "damaged"));
	/* Without its end line, too. */
	write_queue_file("env", id1, data, size - 22);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, id1, &env), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(queue_error(), "truncated"));
	free(data);
	/* id2: one byte changed. */
	data = read_queue_file("env", id2, &size);
	data[size / 2] ^= 1;
	write_queue_file("env", id2, data, size);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, id2, &env), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(queue_error(), "checksum"));
	free(data);
	/* A later version, and garbage. */
	write_queue_file("env", "other1", "clustermail-queue-envelope 2\n", 29);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, "other1", &env), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(queue_error(), "version"));
	write_queue_file("env", "other2", "\0\0\0", 3);
	write_queue_file("msg", "other1", "x", 1);
	write_queue_file("msg", "other2", "x", 1);
	ck_assert_int_eq(queue_read(n1.queue, n1.sio, "other2", &env), -EBADMSG);

	/* The scan reports only the good one, and stops when asked. */
	str_array_init(&ids);
	ck_assert_int_eq(queue_scan(n2.queue, n2.sio, collect_ids, &ids), 0);
	ck_assert_uint_eq(ids.count, 1);
	ck_assert_str_eq(ids.items[0], id3);
	str_array_clear(&ids);
	ck_assert_int_eq(queue_scan(n2.queue, n2.sio, stop_at_first, &calls),
			 99);
	ck_assert_uint_eq(calls, 1);
	/* Damaged envelopes are kept for the admin to look at. */
	ck_assert(queue_file_exists("env", id1));
}
END_TEST

START_TEST(test_leftover_cleanup)
{
	char id[QUEUE_ID_MAX + 1], orphan[QUEUE_ID_MAX + 1], path[512];
	struct queue_claim *c;
	struct str_array ids;

	enqueue_simple(&n1, id);
	enqueue_simple(&n1, orphan);
	/* A message being delivered, old: it must survive. */
	ck_assert_int_eq(queue_claim(n1.queue, n1.sio, id, 0, &c), 0);
	age_queue_file("msg", id, 2 * GRACE_SECS);
	age_queue_file("active", id, 2 * GRACE_SECS);
	/* Content whose envelope is gone (a crash during removal). */
	write_queue_file("msg", "old-content", "x", 1);
	age_queue_file("msg", "old-content", 2 * GRACE_SECS);
	write_queue_file("msg", "new-content", "x", 1);
	write_queue_file("tmp", "old.msg", "x", 1);
	age_queue_file("tmp", "old.msg", 2 * GRACE_SECS);
	write_queue_file("tmp", "new.msg", "x", 1);
	/* Just written by a node whose clock is ahead of ours. */
	write_queue_file("tmp", "ahead.msg", "x", 1);
	age_queue_file("tmp", "ahead.msg", -GRACE_SECS / 2);
	write_queue_file("active", "gone", "node9", 5);
	age_queue_file("active", "gone", 2 * GRACE_SECS);
	/* An envelope whose content vanished. */
	queue_path(path, sizeof(path), "msg", orphan);
	ck_assert_int_eq(unlink(path), 0);

	str_array_init(&ids);
	ck_assert_int_eq(queue_scan(n2.queue, n2.sio, collect_ids, &ids), 0);
	ck_assert_uint_eq(ids.count, 1);
	ck_assert_str_eq(ids.items[0], id);
	str_array_clear(&ids);
	ck_assert(!queue_file_exists("msg", "old-content"));
	ck_assert(queue_file_exists("msg", "new-content"));
	ck_assert(!queue_file_exists("tmp", "old.msg"));
	ck_assert(queue_file_exists("tmp", "new.msg"));
	ck_assert(queue_file_exists("tmp", "ahead.msg"));
	ck_assert(!queue_file_exists("active", "gone"));
	ck_assert(queue_file_exists("active", id));
	ck_assert(queue_file_exists("msg", id));
	ck_assert(!queue_file_exists("env", orphan));
	queue_claim_release(&c);
}
END_TEST

START_TEST(test_retry_delay)
{
	ck_assert_uint_eq(queue_retry_delay_msecs(1, 1000, 60000), 1000);
	ck_assert_uint_eq(queue_retry_delay_msecs(2, 1000, 60000), 2000);
	ck_assert_uint_eq(queue_retry_delay_msecs(3, 1000, 60000), 4000);
	ck_assert_uint_eq(queue_retry_delay_msecs(6, 1000, 60000), 32000);
	ck_assert_uint_eq(queue_retry_delay_msecs(7, 1000, 60000), 60000);
	ck_assert_uint_eq(queue_retry_delay_msecs(1000, 1000, 60000), 60000);
	ck_assert_uint_eq(queue_retry_delay_msecs(100, UINT64_MAX / 3,
						  UINT64_MAX), UINT64_MAX);
	ck_assert_uint_eq(queue_retry_delay_msecs(0, 500, 60000), 500);
}
END_TEST

START_TEST(test_flush_stamp)
{
	struct timespec step = { 0, 20 * 1000 * 1000 };
	uint64_t first, second;

	ck_assert_uint_eq(queue_flush_stamp(n1.queue, n1.sio), 0);
	ck_assert_int_eq(queue_flush_touch(n1.queue, n1.sio), 0);
	first = queue_flush_stamp(n2.queue, n2.sio);
	ck_assert_uint_ne(first, 0);
	/* mtime granularity can be a jiffy: step past it */
	nanosleep(&step, NULL);
	ck_assert_int_eq(queue_flush_touch(n2.queue, n2.sio), 0);
	second = queue_flush_stamp(n1.queue, n1.sio);
	ck_assert_uint_gt(second, first);
}
END_TEST

/* In a coroutine with a loop-mode sio, as an SMTP session uses it. */
struct loop_script {
	struct sio *sio;
	const char *held_id;		/* claimed by node 2 meanwhile */
	char id[QUEUE_ID_MAX + 1];
	int busy_result;
	unsigned int scanned;
	bool done;
};

static int count_messages(const struct queue_envelope *env ATTR_UNUSED,
			  void *context)
{
	(*(unsigned int *)context)++;
	return 0;
}

static void loop_script_run(void *context)
{
	struct loop_script *ls = context;
	struct queue_envelope *env = new_envelope("s@example.org", 1);
	struct queue_writer *w;
	struct queue_claim *c;

	ck_assert_int_eq(queue_write_begin(n1.queue, ls->sio, &w), 0);
	ck_assert_int_eq(queue_write(w, "a\nb\n", 4), 0);
	ck_assert_int_eq(queue_write_commit(&w, env), 0);
	strcpy(ls->id, env->id);
	queue_envelope_free(&env);
	ck_assert_int_eq(queue_scan(n1.queue, ls->sio, count_messages,
				    &ls->scanned), 0);
	/* Waiting for a busy message yields, then times out. */
	ls->busy_result = queue_claim(n1.queue, ls->sio, ls->held_id, 100, &c);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(queue_claim(n1.queue, ls->sio, ls->id, 100, &c), 0);
	ck_assert_int_eq(queue_claim_remove(&c), 0);
}

static void loop_script_done(void *context)
{
	struct loop_script *ls = context;

	ls->done = true;
	ioloop_stop(n1.loop);
}

START_TEST(test_loop_mode)
{
	struct loop_script ls = { .sio = sio_create_loop(n1.loop) };
	struct sio_stats before, after;
	char id[QUEUE_ID_MAX + 1];
	struct queue_claim *c;

	enqueue_simple(&n2, id);
	sio_get_stats(&before);
	ck_assert_int_eq(queue_claim(n2.queue, n2.sio, id, 0, &c), 0);
	ls.held_id = id;
	(void)coro_start(n1.loop, 0, loop_script_run, &ls, loop_script_done);
	while (!ls.done)
		ioloop_run(n1.loop);
	sio_get_stats(&after);
	/* The listings at least went through the loop's pool. */
	ck_assert_uint_gt(after.uring_ops + after.pool_ops,
			  before.uring_ops + before.pool_ops);
	ck_assert_uint_eq(ls.scanned, 2);
	ck_assert_int_eq(ls.busy_result, -ETIMEDOUT);
	ck_assert(!queue_file_exists("env", ls.id));
	ck_assert_uint_eq(count_dir("env"), 1);
	queue_claim_release(&c);
	sio_destroy(&ls.sio);
}
END_TEST

static Suite *queue_suite(void)
{
	Suite *s = suite_create("queue");
	TCase *tc = tcase_create("fcntl");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_envelope_round_trip);
	tcase_add_test(tc, test_enqueue_shape);
	tcase_add_test(tc, test_ids_unique);
	tcase_add_test(tc, test_claim_exclusive);
	tcase_add_test(tc, test_claim_vanished);
	tcase_add_test(tc, test_update_and_content);
	tcase_add_test(tc, test_torn_envelope);
	tcase_add_test(tc, test_leftover_cleanup);
	tcase_add_test(tc, test_retry_delay);
	tcase_add_test(tc, test_flush_stamp);
	tcase_add_test(tc, test_loop_mode);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { queue_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
