/*
 * test-store.c - the mailbox store through its public API, on a temp
 * spool with the fcntl lock backend, synchronous sio. Two "nodes" are two
 * stores with their own lock clients in one process: their lock handles
 * conflict exactly as two processes' would.
 */
#include "lib/lib.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "maildir/store.h"
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

struct node {
	struct iopool *pool;
	struct ioloop *loop;
	struct lock_client *locks;
	struct sio *sio;
	struct store *store;
};

static char spool[256];
static struct node n1, n2;

static void node_init(struct node *n, const char *name)
{
	struct ioloop_settings ls = { .name = name };
	struct lock_client_settings cs = {
		.backend = SETTINGS_LOCK_FCNTL, .spool_dir = spool,
	};
	struct store_settings ss = { .spool_dir = spool, .node_name = name };
	char *error;

	n->pool = iopool_create(1);
	ls.pool = n->pool;
	n->loop = ioloop_create(&ls);
	cs.pool = n->pool;
	n->locks = lock_client_create(&cs, &error);
	ck_assert_msg(n->locks != NULL, "lock client: %s", error);
	n->sio = sio_create_sync(n->loop);
	ss.locks = n->locks;
	ss.log_compact_bytes = 4096;	/* exercise compaction */
	n->store = store_create(&ss);
}

static void stop_cb(struct io_request *req, int result)
{
	ioloop_stop(req->context);
}

static void node_deinit(struct node *n)
{
	struct io_request req;

	store_destroy(&n->store);
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

static int rm_cb(const char *path, const struct stat *st, int flag,
		 struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	snprintf(spool, sizeof(spool), "/tmp/cm-test-store.XXXXXX");
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

static struct store_user *user_open(struct node *n, const char *name)
{
	struct store_user *u;
	const char *error;

	ck_assert_int_eq(store_user_open(n->store, n->sio, name,
					 STORE_USER_CREATE, &u, &error), 0);
	return u;
}

static void deliver(struct store_user *u, const char *box, const char *text,
		    uint32_t flags)
{
	struct store_save_options opts = { .flags = flags };
	struct store_save *save;
	int ret;

	save = store_save_begin(u, &ret);
	ck_assert_int_eq(ret, 0);
	ck_assert_int_eq(store_save_write(save, text, strlen(text)), 0);
	ck_assert_int_eq(store_save_finish(save), 0);
	ret = store_save_deliver(save, u, box, &opts);
	ck_assert_msg(ret == 0, "deliver: %s", store_user_error(u));
	store_save_free(&save);
}

static unsigned int check_problems(struct store_user *u, const char *box)
{
	unsigned int problems = 99;

	(void)store_index_check(u, box, NULL, NULL, &problems);
	return problems;
}

START_TEST(test_user_and_layout)
{
	struct store_user *u = user_open(&n1, "Alice@Example.COM");
	struct store_status st;
	char path[512];
	struct stat sb;

	ck_assert_str_eq(store_user_name(u), "alice@example.com");
	snprintf(path, sizeof(path), "%s/example.com/alice/cur", spool);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(store_mailbox_status(u, "INBOX", &st), 0);
	ck_assert_uint_eq(st.messages, 0);
	ck_assert_uint_eq(st.uidnext, 1);
	ck_assert_uint_ne(st.uidvalidity, 0);
	store_user_close(&u);

	/* Bad addresses never reach the file system. */
	ck_assert_int_eq(store_user_open(n1.store, n1.sio, "../x@y", STORE_USER_CREATE,
					 &u, NULL), STORE_ERR_BADNAME);
	ck_assert_int_eq(store_user_open(n1.store, n1.sio, "a@../../etc",
					 STORE_USER_CREATE, &u, NULL), STORE_ERR_BADNAME);
	ck_assert_int_eq(store_user_open(n1.store, n1.sio, "nobody@example.com", 0,
					 &u, NULL), STORE_ERR_NOTFOUND);
}
END_TEST

START_TEST(test_deliver_and_sync)
{
	struct store_user *u = user_open(&n1, "bob@example.com");
	struct mailbox *box;
	struct mailbox_changes ch;
	const struct mail_record *rec;
	char buf[64];
	ssize_t n;
	int fd;

	deliver(u, NULL, "Subject: one\r\n\r\nbody\r\n", 0);
	deliver(u, NULL, "Subject: two\n\nbody\n", MAIL_SEEN);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	ck_assert_uint_eq(mailbox_count(box), 2);
	rec = mailbox_record(box, 0);
	ck_assert_uint_eq(rec->uid, 1);
	/* Stored with LF; RFC822.SIZE counts CRLF. */
	ck_assert_uint_eq(rec->size, strlen("Subject: one\n\nbody\n"));
	ck_assert_uint_eq(rec->vsize, strlen("Subject: one\r\n\r\nbody\r\n"));
	ck_assert_uint_eq(mailbox_record(box, 1)->flags & MAIL_SEEN, MAIL_SEEN);
	ck_assert_int_eq(mailbox_open_message(box, 1, &fd), 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "Subject: one\n\nbody\n");

	/* Another node delivers; our sync sees it as new. */
	{
		struct store_user *u2 = user_open(&n2, "bob@example.com");

		deliver(u2, NULL, "Subject: three\n\nx\n", 0);
		store_user_close(&u2);
	}
	ck_assert_int_eq(mailbox_sync(box, 0, &ch), 0);
	ck_assert_uint_eq(ch.new_count, 1);
	ck_assert_uint_eq(mailbox_count(box), 3);
	ck_assert_uint_eq(mailbox_record(box, 2)->uid, 3);
	mailbox_changes_free(&ch);
	mailbox_close(&box);
	ck_assert_uint_eq(check_problems(u, NULL), 0);
	store_user_close(&u);
}
END_TEST

START_TEST(test_store_expunge_two_nodes)
{
	struct store_user *a = user_open(&n1, "carol@example.com");
	struct store_user *b = user_open(&n2, "carol@example.com");
	struct mailbox *va, *vb;
	struct mailbox_changes ch;
	const char *kw[] = { "$Important", NULL };
	uint32_t uids[] = { 1, 2 }, *failed, *expunged;
	size_t failed_count, expunged_count;
	uint64_t modseq;

	for (int i = 0; i < 4; i++)
		deliver(a, NULL, "Subject: m\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	ck_assert_uint_eq(mailbox_count(vb), 4);
	modseq = mailbox_highestmodseq(va);

	ck_assert_int_eq(mailbox_store(va, uids, 2, MAILBOX_STORE_ADD,
				       MAIL_SEEN | MAIL_DELETED, kw, 0,
				       &failed, &failed_count), 0);
	ck_assert_uint_eq(failed_count, 0);
	ck_assert_uint_gt(mailbox_highestmodseq(va), modseq);
	/* Node 2 sees the change after a sync, as FETCH-worthy changes. */
	ck_assert_int_eq(mailbox_sync(vb, 0, &ch), 0);
	ck_assert_uint_eq(ch.changed_count, 2);
	ck_assert_uint_eq(mailbox_record(vb, 0)->flags & MAIL_FLAGS_MASK,
			  MAIL_SEEN | MAIL_DELETED);
	ck_assert_uint_eq(mailbox_keyword_count(vb), 1);
	ck_assert_str_eq(mailbox_keyword_name(vb, 0), "$Important");
	ck_assert_uint_eq(mailbox_record(vb, 0)->keywords, 1);
	mailbox_changes_free(&ch);

	/* CONDSTORE: an UNCHANGEDSINCE older than the message fails. */
	ck_assert_int_eq(mailbox_store(vb, uids, 1, MAILBOX_STORE_ADD,
				       MAIL_FLAGGED, NULL, modseq,
				       &failed, &failed_count), 0);
	ck_assert_uint_eq(failed_count, 1);
	ck_assert_uint_eq(failed[0], 1);
	free(failed);

	/* Node 2 expunges \Deleted; node 1 keeps them until it syncs
	   without NO_EXPUNGE, then reports them once. */
	ck_assert_int_eq(mailbox_expunge(vb, NULL, 0, &expunged,
					 &expunged_count), 0);
	ck_assert_uint_eq(expunged_count, 2);
	free(expunged);
	ck_assert_int_eq(mailbox_sync(va, MAILBOX_SYNC_NO_EXPUNGE, &ch), 0);
	ck_assert_uint_eq(ch.expunged_count, 0);
	ck_assert_uint_eq(mailbox_count(va), 4);
	ck_assert(mailbox_record(va, 0)->flags & MAIL_EXPUNGED);
	mailbox_changes_free(&ch);
	ck_assert_int_eq(mailbox_sync(va, 0, &ch), 0);
	ck_assert_uint_eq(ch.expunged_count, 2);
	ck_assert_uint_eq(ch.expunged_uids[0], 1);
	ck_assert_uint_eq(ch.expunged_seqs[1], 2);
	ck_assert_uint_eq(mailbox_count(va), 2);
	mailbox_changes_free(&ch);

	/* An expunged UID is never reused. */
	deliver(a, NULL, "Subject: new\n\nx\n", 0);
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_record(va, 2)->uid, 5);
	mailbox_close(&va);
	mailbox_close(&vb);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

START_TEST(test_append_copy_move)
{
	struct store_user *u = user_open(&n1, "dave@example.com");
	struct store_save_options opts = { .flags = MAIL_FLAGGED,
					   .internaldate = 1000000000 };
	const char *kw[] = { "work", NULL };
	struct mailbox *inbox, *arch;
	struct store_save *save;
	uint32_t uid, uidv, uids[2], *src, *dst;
	size_t copied;
	int ret;

	ck_assert_int_eq(store_mailbox_create(u, "Archive", STORE_SPECIAL_ARCHIVE), 0);
	ck_assert_int_eq(store_mailbox_create(u, "Archive", 0), STORE_ERR_EXISTS);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &inbox), 0);
	opts.keywords = kw;
	for (int i = 0; i < 2; i++) {
		save = store_save_begin(u, &ret);
		ck_assert_int_eq(store_save_write(save, "Subject: a\r\n\r\nz\r\n", 16), 0);
		ck_assert_int_eq(store_save_finish(save), 0);
		ck_assert_int_eq(store_save_append(save, inbox, &opts, &uid, &uidv), 0);
		store_save_free(&save);
		ck_assert_uint_eq(uid, (uint32_t)i + 1);
		ck_assert_uint_eq(uidv, mailbox_uidvalidity(inbox));
		uids[i] = uid;
	}
	ck_assert_int_eq(mailbox_sync(inbox, 0, NULL), 0);
	ck_assert_int_eq(mailbox_record(inbox, 0)->internaldate, 1000000000);
	ck_assert_int_eq(mailbox_copy(inbox, uids, 2, "Archive", false, &uidv,
				      &src, &dst, &copied), 0);
	ck_assert_uint_eq(copied, 2);
	ck_assert_uint_eq(dst[0], 1);
	ck_assert_uint_eq(dst[1], 2);
	free(src);
	free(dst);
	ck_assert_int_eq(mailbox_copy(inbox, uids, 2, "Nope", false, NULL,
				      NULL, NULL, NULL), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(mailbox_copy(inbox, uids, 1, "Archive", true, NULL,
				      NULL, NULL, &copied), 0);
	ck_assert_int_eq(mailbox_sync(inbox, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(inbox), 1);
	ck_assert_int_eq(mailbox_open(u, "Archive", 0, &arch), 0);
	ck_assert_uint_eq(mailbox_count(arch), 3);
	/* Flags and keywords travel with the copy. */
	ck_assert_uint_eq(mailbox_record(arch, 2)->flags & MAIL_FLAGS_MASK,
			  MAIL_FLAGGED);
	ck_assert_str_eq(mailbox_keyword_name(arch,
			 (unsigned int)__builtin_ctzll(mailbox_record(arch, 2)->keywords)),
			 "work");
	mailbox_close(&arch);
	mailbox_close(&inbox);
	ck_assert_uint_eq(check_problems(u, NULL), 0);
	store_user_close(&u);
}
END_TEST

START_TEST(test_list_rename_delete)
{
	struct store_user *u = user_open(&n1, "erin@example.com");
	struct store_list_entry *e;
	struct store_status st, st2;
	size_t count;

	ck_assert_int_eq(store_mailbox_create(u, "A", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "A/B", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "A/B/C", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "Dots.in.name", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "bad//name", 0), STORE_ERR_BADNAME);
	ck_assert_int_eq(store_mailbox_create(u, "../etc", 0), 0 /* escaped */);
	deliver(u, "A/B", "Subject: x\n\nx\n", 0);
	ck_assert_int_eq(store_mailbox_status(u, "A/B", &st), 0);
	ck_assert_uint_eq(st.messages, 1);
	ck_assert_int_eq(store_list(u, &e, &count), 0);
	ck_assert_str_eq(e[0].name, "INBOX");
	/* INBOX A A/B A/B/C Dots.in.name .. (a parent only) ../etc */
	ck_assert_uint_eq(count, 7);
	store_list_free(e, count);

	ck_assert_int_eq(store_mailbox_rename(u, "A", "A/X"), STORE_ERR_CANNOT);
	ck_assert_int_eq(store_mailbox_rename(u, "A", "Z"), 0);
	ck_assert_int_eq(store_mailbox_exists(u, "Z/B/C"), 0);
	ck_assert_int_eq(store_mailbox_exists(u, "A/B"), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_mailbox_status(u, "Z/B", &st2), 0);
	ck_assert_uint_eq(st2.messages, 1);
	ck_assert_uint_eq(st2.uidvalidity, st.uidvalidity);

	ck_assert_int_eq(store_mailbox_delete(u, "INBOX"), STORE_ERR_CANNOT);
	ck_assert_int_eq(store_mailbox_delete(u, "Z/B"), 0);
	ck_assert_int_eq(store_mailbox_exists(u, "Z/B"), STORE_ERR_NOTFOUND);
	/* The child survives; its parent lists as nonexistent. */
	ck_assert_int_eq(store_mailbox_exists(u, "Z/B/C"), 0);
	ck_assert_int_eq(store_list(u, &e, &count), 0);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(e[i].name, "Z/B") == 0)
			ck_assert(e[i].attrs & STORE_LIST_NONEXISTENT);
	}
	store_list_free(e, count);
	/* Recreated: a new UIDVALIDITY. */
	ck_assert_int_eq(store_mailbox_create(u, "Z/B", 0), 0);
	ck_assert_int_eq(store_mailbox_status(u, "Z/B", &st2), 0);
	ck_assert_uint_ne(st2.uidvalidity, st.uidvalidity);
	ck_assert_uint_eq(st2.messages, 0);
	store_user_close(&u);
}
END_TEST

START_TEST(test_compaction_and_reload)
{
	struct store_user *a = user_open(&n1, "fay@example.com");
	struct store_user *b = user_open(&n2, "fay@example.com");
	struct mailbox *va, *vb;
	uint32_t uid;

	deliver(a, NULL, "Subject: x\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	/* Enough changes to pass the 4 KiB compaction threshold several
	   times; the other view must follow across generations. */
	for (int i = 0; i < 300; i++) {
		uid = 1;
		ck_assert_int_eq(mailbox_store(va, &uid, 1, (i % 2) == 0 ?
					       MAILBOX_STORE_ADD : MAILBOX_STORE_REMOVE,
					       MAIL_SEEN, NULL, 0, NULL, NULL), 0);
	}
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_highestmodseq(vb), mailbox_highestmodseq(va));
	ck_assert_uint_eq(mailbox_record(vb, 0)->flags & MAIL_SEEN, 0);
	mailbox_close(&va);
	mailbox_close(&vb);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

static void corrupt_file(const char *user_dir, const char *name)
{
	char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s/%s", spool, user_dir, name);
	fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "garbage!", 8, 30), 8);
	close(fd);
}

START_TEST(test_self_repair)
{
	struct store_user *u = user_open(&n1, "gus@example.com");
	struct store_status st, st2;
	struct mailbox *box;
	uint32_t uid = 2;

	for (int i = 0; i < 3; i++)
		deliver(u, NULL, "Subject: x\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	ck_assert_int_eq(mailbox_store(box, &uid, 1, MAILBOX_STORE_ADD, MAIL_SEEN,
				       NULL, 0, NULL, NULL), 0);
	mailbox_close(&box);
	ck_assert_int_eq(store_mailbox_status(u, "INBOX", &st), 0);
	store_user_close(&u);

	/* A damaged log: detected by check, repaired by the next open. No
	   message is lost. */
	corrupt_file("example.com/gus", "clustermail.log");
	u = user_open(&n1, "gus@example.com");
	ck_assert_uint_gt(check_problems(u, "INBOX"), 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	ck_assert_uint_eq(mailbox_count(box), 3);
	mailbox_close(&box);
	ck_assert_uint_eq(check_problems(u, "INBOX"), 0);

	/* ... and a damaged index: rebuilt with a new UIDVALIDITY. */
	ck_assert_int_eq(store_mailbox_status(u, "INBOX", &st), 0);
	store_user_close(&u);
	corrupt_file("example.com/gus", "clustermail.index");
	u = user_open(&n1, "gus@example.com");
	ck_assert_int_eq(store_index_rebuild(u, "INBOX"), 0);
	ck_assert_int_eq(store_mailbox_status(u, "INBOX", &st2), 0);
	ck_assert_uint_eq(st2.messages, 3);
	ck_assert_uint_gt(st2.uidvalidity, st.uidvalidity);
	ck_assert_uint_eq(check_problems(u, "INBOX"), 0);
	store_user_close(&u);
}
END_TEST

START_TEST(test_check_finds_missing_file)
{
	struct store_user *u = user_open(&n1, "hal@example.com");
	struct mailbox *box;
	char path[1024];
	int fd;

	deliver(u, NULL, "Subject: x\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	/* Another tool drops a file straight into cur/: no UID yet. */
	snprintf(path, sizeof(path), "%s/example.com/hal/cur/foreign:2,S", spool);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	mailbox_close(&box);
	ck_assert_uint_eq(check_problems(u, "INBOX"), 1);
	ck_assert_int_eq(store_index_rebuild(u, "INBOX"), 0);
	ck_assert_uint_eq(check_problems(u, "INBOX"), 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	ck_assert_uint_eq(mailbox_count(box), 2);
	ck_assert_uint_eq(mailbox_record(box, 0)->uid, 1);	/* kept */
	ck_assert_uint_eq(mailbox_record(box, 1)->uid, 2);
	mailbox_close(&box);
	store_user_close(&u);
}
END_TEST


START_TEST(test_quota)
{
	struct store_user *u = user_open(&n1, "ivy@example.com");
	struct store_quota q;
	struct store_save *save;
	int ret;

	ck_assert_int_eq(store_quota_set(u, 0, 2), 0);
	deliver(u, NULL, "Subject: 1\n\nx\n", 0);
	deliver(u, NULL, "Subject: 2\n\nx\n", 0);
	ck_assert_int_eq(store_quota_get(u, &q), 0);
	ck_assert_uint_eq(q.messages_used, 2);
	ck_assert_uint_eq(q.messages_limit, 2);
	save = store_save_begin(u, &ret);
	ck_assert_int_eq(store_save_write(save, "x\n", 2), 0);
	ck_assert_int_eq(store_save_finish(save), 0);
	ck_assert_int_eq(store_save_deliver(save, u, NULL, NULL), STORE_ERR_OVERQUOTA);
	/* Lifting the limit lets it in. */
	ck_assert_int_eq(store_quota_set(u, 0, 0), 0);
	ck_assert_int_eq(store_save_deliver(save, u, NULL, NULL), 0);
	store_save_free(&save);
	ck_assert_int_eq(store_quota_get(u, &q), 0);
	ck_assert_uint_eq(q.messages_used, 3);
	ck_assert_uint_eq(q.storage_used, 2 * strlen("Subject: 1\r\n\r\nx\r\n") + 3);
	store_user_close(&u);
}
END_TEST

START_TEST(test_subscriptions_acl)
{
	struct store_user *a = user_open(&n1, "jo@example.com");
	struct store_user *b = user_open(&n2, "jo@example.com");
	struct store_list_entry *e;
	struct store_acl_entry *acl;
	char rights[16];
	size_t count;
	bool found = false;

	ck_assert_int_eq(store_mailbox_create(a, "Shared", 0), 0);
	ck_assert_int_eq(store_subscribe(a, "Shared", true), 0);
	ck_assert_int_eq(store_subscribe(a, "Gone/Away", true), 0);
	ck_assert_int_eq(store_list(b, &e, &count), 0);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(e[i].name, "Shared") == 0)
			ck_assert(e[i].attrs & STORE_LIST_SUBSCRIBED);
		if (strcmp(e[i].name, "Gone/Away") == 0) {
			ck_assert_uint_eq(e[i].attrs & (STORE_LIST_SUBSCRIBED |
				STORE_LIST_NONEXISTENT), STORE_LIST_SUBSCRIBED |
				STORE_LIST_NONEXISTENT);
			found = true;
		}
	}
	ck_assert(found);
	store_list_free(e, count);

	ck_assert_int_eq(store_acl_set(a, "Shared", "fred@example.com", "lr"), 0);
	ck_assert_int_eq(store_acl_set(a, "Shared", "fred@example.com", "+w"), 0);
	ck_assert_int_eq(store_acl_rights(b, "Shared", "fred@example.com", rights), 0);
	ck_assert_str_eq(rights, "lrw");
	ck_assert_int_eq(store_acl_get(b, "Shared", &acl, &count), 0);
	ck_assert_uint_ge(count, 2);
	store_acl_free(acl, count);
	ck_assert_int_eq(store_acl_set(a, "Nope", "fred@example.com", "lr"),
			 STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_acl_set(a, "Shared", "fred@example.com", NULL), 0);
	ck_assert_int_eq(store_acl_rights(b, "Shared", "fred@example.com", rights), 0);
	ck_assert_str_eq(rights, "");
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("fcntl");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_user_and_layout);
	tcase_add_test(tc, test_deliver_and_sync);
	tcase_add_test(tc, test_store_expunge_two_nodes);
	tcase_add_test(tc, test_append_copy_move);
	tcase_add_test(tc, test_list_rename_delete);
	tcase_add_test(tc, test_compaction_and_reload);
	tcase_add_test(tc, test_self_repair);
	tcase_add_test(tc, test_check_finds_missing_file);
	tcase_add_test(tc, test_quota);
	tcase_add_test(tc, test_subscriptions_acl);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { store_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
