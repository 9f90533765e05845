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
#include "maildir/mailbox-private.h"	/* mailbox_lock(): a hold to die in */
#include "unit.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

struct node {
	struct iopool *pool;
	struct ioloop *loop;
	struct lock_client *locks;
	struct sio *sio;
	struct store *store;
};

static char spool[256];
static struct node n1, n2;
/* node_init(): the store marks the change log while writing it (as on
   NFS, where it is always on) */
static bool node_log_writer_mark;

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
	ss.expunge_history_max = 32;	/* and the expunge history's bound */
	ss.log_writer_mark = node_log_writer_mark;
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

/* is_object_id - prefix and 32 lower-case hex digits (RFC 8474 alphabet) */
static bool is_object_id(const char *id, char prefix)
{
	if (strlen(id) != 33 || id[0] != prefix)
		return false;
	for (size_t i = 1; i < 33; i++) {
		if (strchr("0123456789abcdef", id[i]) == NULL)
			return false;
	}
	return true;
}

START_TEST(test_mailbox_id)
{
	struct store_user *u = user_open(&n1, "olga@example.com");
	struct store_user *u2 = user_open(&n2, "olga@example.com");
	char inbox[STORE_MAILBOX_ID_SIZE], a[STORE_MAILBOX_ID_SIZE];
	char id[STORE_MAILBOX_ID_SIZE], old[STORE_MAILBOX_ID_SIZE];
	char path[PATH_MAX];
	struct store_status st;
	FILE *f;

	ck_assert_int_eq(store_mailbox_id(u, "INBOX", inbox), 0);
	ck_assert(is_object_id(inbox, 'F'));
	ck_assert_int_eq(store_mailbox_create(u, "A", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "A/B", 0), 0);
	ck_assert_int_eq(store_mailbox_id(u, "A", a), 0);
	ck_assert(is_object_id(a, 'F'));
	ck_assert_str_ne(a, inbox);
	/* The other node sees the same id; a rename keeps it. */
	ck_assert_int_eq(store_mailbox_id(u2, "A", id), 0);
	ck_assert_str_eq(id, a);
	ck_assert_int_eq(store_mailbox_rename(u, "A", "C"), 0);
	ck_assert_int_eq(store_mailbox_id(u2, "C", id), 0);
	ck_assert_str_eq(id, a);
	ck_assert_int_eq(store_mailbox_id(u, "A", id), STORE_ERR_NOTFOUND);
	/* The same name again is another mailbox. */
	ck_assert_int_eq(store_mailbox_create(u, "A", 0), 0);
	ck_assert_int_eq(store_mailbox_id(u, "A", id), 0);
	ck_assert_str_ne(id, a);

	/* A mailbox from before MAILBOXID: no attribute file, or one
	   with only its special-use. Both nodes agree on the id it gets. */
	ck_assert_int_eq(store_mailbox_create(u, "Old", STORE_SPECIAL_TRASH), 0);
	snprintf(path, sizeof(path), "%s/.Old/clustermail.mailbox",
		 store_user_path(u));
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fputs("special-use 1024\n", f);
	fclose(f);
	ck_assert_int_eq(store_mailbox_id(u2, "Old", old), 0);
	ck_assert(is_object_id(old, 'F'));
	ck_assert_int_eq(store_mailbox_id(u, "Old", id), 0);
	ck_assert_str_eq(id, old);
	ck_assert_int_eq(store_mailbox_status(u, "Old", &st), 0);
	ck_assert_uint_eq(st.special_use, STORE_SPECIAL_TRASH);
	snprintf(path, sizeof(path), "%s/.C.B/clustermail.mailbox",
		 store_user_path(u));
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(store_mailbox_id(u, "C/B", id), 0);
	ck_assert_int_eq(store_mailbox_id(u2, "C/B", old), 0);
	ck_assert_str_eq(id, old);
	/* A damaged id is replaced (logged); other lines stay. */
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fputs("mailbox-id F../..\nspecial-use 256\n", f);
	fclose(f);
	ck_assert_int_eq(store_mailbox_id(u, "C/B", id), 0);
	ck_assert(is_object_id(id, 'F'));
	ck_assert_int_eq(store_mailbox_id(u2, "C/B", old), 0);
	ck_assert_str_eq(id, old);
	ck_assert_int_eq(store_mailbox_status(u, "C/B", &st), 0);
	ck_assert_uint_eq(st.special_use, STORE_SPECIAL_DRAFTS);
	/* Another user learns the id only of a mailbox it can see. */
	ck_assert_int_eq(store_mailbox_id(u, "C", a), 0);
	store_user_set_requester(u2, "quentin@example.com");
	ck_assert_int_eq(store_mailbox_id(u2, "C", id), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_acl_set(u, "C", "quentin@example.com", "l"), 0);
	ck_assert_int_eq(store_mailbox_id(u2, "C", id), 0);
	ck_assert_str_eq(id, a);
	store_user_close(&u2);
	store_user_close(&u);
}
END_TEST

START_TEST(test_email_id)
{
	struct store_user *u = user_open(&n1, "paul@example.com");
	char id1[MAILBOX_EMAIL_ID_SIZE], id2[MAILBOX_EMAIL_ID_SIZE];
	char id[MAILBOX_EMAIL_ID_SIZE];
	struct mailbox *inbox, *b, *c;
	uint32_t uids[2] = { 1, 2 };

	ck_assert_int_eq(store_mailbox_create(u, "B", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "C", 0), 0);
	deliver(u, NULL, "Subject: same\n\nx\n", 0);
	deliver(u, NULL, "Subject: same\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &inbox), 0);
	ck_assert_uint_eq(mailbox_count(inbox), 2);
	mailbox_email_id(mailbox_record(inbox, 0)->base, id1);
	mailbox_email_id(mailbox_record(inbox, 1)->base, id2);
	ck_assert(is_object_id(id1, 'M'));
	ck_assert_str_ne(id1, id2);
	/* Copies keep it, and copies of copies; so does a move. */
	ck_assert_int_eq(mailbox_copy(inbox, uids, 2, "B", false, NULL, NULL,
				      NULL, NULL), 0);
	ck_assert_int_eq(mailbox_open(u, "B", 0, &b), 0);
	ck_assert_int_eq(mailbox_copy(b, uids, 1, "C", true, NULL, NULL,
				      NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(b, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(b), 1);
	mailbox_email_id(mailbox_record(b, 0)->base, id);
	ck_assert_str_eq(id, id2);
	ck_assert_int_eq(mailbox_open(u, "C", 0, &c), 0);
	ck_assert_uint_eq(mailbox_count(c), 1);
	mailbox_email_id(mailbox_record(c, 0)->base, id);
	ck_assert_str_eq(id, id1);
	ck_assert_str_ne(mailbox_record(c, 0)->base,
			 mailbox_record(inbox, 0)->base);
	/* Only a well-formed ",E=" counts; the rest is hashed. */
	mailbox_email_id("123.M1P2Q3.x,E=bad,S=1,W=1", id);
	mailbox_email_id("123.M1P2Q3.x,S=1,W=1", id1);
	ck_assert_str_eq(id, id1);
	mailbox_email_id("123.M1P2Q4.x", id2);
	ck_assert_str_ne(id1, id2);
	mailbox_close(&c);
	mailbox_close(&b);
	mailbox_close(&inbox);
	ck_assert_uint_eq(check_problems(u, NULL), 0);
	ck_assert_uint_eq(check_problems(u, "C"), 0);
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

/* ---- the message cache ---- */

/* cache_has - does box's cache hold exactly text for (uid, field)? */
static bool cache_has(struct mailbox *box, uint32_t uid,
		      enum mail_cache_field field, const char *text)
{
	const void *data;
	size_t size;

	if (mailbox_cache_lookup(box, uid, field, &data, &size) != 1)
		return false;
	return size == strlen(text) && memcmp(data, text, size) == 0;
}

static void cache_path(const char *user_dir, char *path, size_t size)
{
	snprintf(path, size, "%s/%s/clustermail.cache", spool, user_dir);
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

START_TEST(test_cache_two_views)
{
	struct store_user *a = user_open(&n1, "cache1@example.com");
	struct store_user *a2 = user_open(&n1, "cache1@example.com");
	struct store_user *b = user_open(&n2, "cache1@example.com");
	struct mailbox *va, *va2, *vb;

	for (int i = 0; i < 3; i++)
		deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(a2, "INBOX", 0, &va2), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	ck_assert(!cache_has(va, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1"));
	mailbox_cache_add(va, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1", 3);
	mailbox_cache_add(va, 2, MAIL_CACHE_ENVELOPE, "env2", 4);
	mailbox_cache_add(va, 99, MAIL_CACHE_ENVELOPE, "none", 4);
	/* Seen at once by the view that added it, not yet by others. */
	ck_assert(cache_has(va, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1"));
	ck_assert(!cache_has(va, 99, MAIL_CACHE_ENVELOPE, "none"));
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert(!cache_has(vb, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1"));
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	/* After their next sync, other views on both "nodes" see it. */
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert_int_eq(mailbox_sync(va2, 0, NULL), 0);
	ck_assert(cache_has(vb, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1"));
	ck_assert(cache_has(vb, 2, MAIL_CACHE_ENVELOPE, "env2"));
	ck_assert(cache_has(va2, 2, MAIL_CACHE_ENVELOPE, "env2"));
	ck_assert(!cache_has(vb, 2, MAIL_CACHE_BODYSTRUCTURE, "env2"));
	/* An add is also written by the next EX section (here a STORE). */
	mailbox_cache_add(vb, 3, MAIL_CACHE_BODY, "body3", 5);
	{
		uint32_t uid = 3;

		ck_assert_int_eq(mailbox_store(vb, &uid, 1, MAILBOX_STORE_ADD,
					       MAIL_SEEN, NULL, 0, NULL, NULL), 0);
	}
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	ck_assert(cache_has(va, 3, MAIL_CACHE_BODY, "body3"));
	mailbox_close(&va);
	mailbox_close(&va2);
	mailbox_close(&vb);

	/* It survives closing every view. */
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_BODYSTRUCTURE, "bs1"));
	ck_assert(cache_has(va, 3, MAIL_CACHE_BODY, "body3"));
	mailbox_close(&va);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);
	store_user_close(&a);
	store_user_close(&a2);
	store_user_close(&b);
}
END_TEST

/* cache_value - a test record for uid: its number, then filler, of a size
   that varies (some past the read-ahead window of 64 KiB) */
static size_t cache_value(uint32_t uid, char *buf, size_t size)
{
	size_t len = uid == 41 ? 70000 : 40 + (size_t)uid * 97 % 3000;

	ck_assert_uint_le(len, size);
	memset(buf, 'a' + (int)(uid % 26), len);
	snprintf(buf, 16, "env-%u-", uid);
	buf[strlen(buf)] = 'x';
	return len;
}

static bool cache_has_value(struct mailbox *box, uint32_t uid)
{
	static char want[80000];
	const void *data;
	size_t size, len = cache_value(uid, want, sizeof(want));

	return mailbox_cache_lookup(box, uid, MAIL_CACHE_ENVELOPE, &data,
				    &size) == 1 &&
		size == len && memcmp(data, want, len) == 0;
}

/* Lookups read ahead (a window of the file) and must still return each
   record exactly: in order, backwards, one bigger than the window, and
   records another node appended after the window was read. */
START_TEST(test_cache_window)
{
	struct store_user *a = user_open(&n1, "cachew@example.com");
	struct store_user *b = user_open(&n2, "cachew@example.com");
	static char buf[80000];
	struct mailbox *va, *vb;

	for (int i = 0; i < 60; i++)
		deliver(a, NULL, "Subject: w\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	for (uint32_t uid = 1; uid <= 41; uid++)
		mailbox_cache_add(va, uid, MAIL_CACHE_ENVELOPE, buf,
				  cache_value(uid, buf, sizeof(buf)));
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	for (uint32_t uid = 1; uid <= 41; uid++)
		ck_assert_msg(cache_has_value(vb, uid), "UID %u in order", uid);
	for (uint32_t uid = 41; uid >= 1; uid--)
		ck_assert_msg(cache_has_value(vb, uid), "UID %u backwards", uid);
	ck_assert(!cache_has_value(vb, 42));
	/* The window now starts at UID 5's record; another node appends. */
	ck_assert(cache_has_value(vb, 5));
	for (uint32_t uid = 42; uid <= 60; uid++)
		mailbox_cache_add(va, uid, MAIL_CACHE_ENVELOPE, buf,
				  cache_value(uid, buf, sizeof(buf)));
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	ck_assert(cache_has_value(vb, 6));
	ck_assert(!cache_has_value(vb, 42));	/* not before our next sync */
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	for (uint32_t uid = 60; uid >= 1; uid--)
		ck_assert_msg(cache_has_value(vb, uid), "UID %u after sync", uid);
	for (uint32_t uid = 1; uid <= 60; uid++)
		ck_assert_msg(cache_has_value(va, uid), "UID %u, writer", uid);
	mailbox_close(&va);
	mailbox_close(&vb);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

/* A busy lock leaves the adds pending (mailbox_cache_flush never waits);
   mailbox_cache_flush_wait(), for a view about to close, waits for the
   lock (here held by another process for 300 ms) and writes them. */
START_TEST(test_cache_flush_wait)
{
	struct store_user *a = user_open(&n1, "cachefw@example.com");
	struct store_user *b = user_open(&n2, "cachefw@example.com");
	struct mailbox *va, *vb;
	struct timespec t0, t1;
	int pipefd[2], status;
	char c;
	pid_t pid;

	deliver(a, NULL, "Subject: f\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	ck_assert_int_eq(pipe(pipefd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct node n3;
		struct store_user *c3;
		struct mailbox *vc;
		const char *error;

		close(pipefd[0]);
		node_init(&n3, "node3");
		if (store_user_open(n3.store, n3.sio, "cachefw@example.com", 0,
				    &c3, &error) != 0 ||
		    mailbox_open(c3, "INBOX", 0, &vc) != 0 ||
		    mailbox_lock(vc, LOCK_MODE_PR) != 0)
			_exit(1);
		(void)write(pipefd[1], "L", 1);
		usleep(300 * 1000);
		mailbox_unlock(vc);
		_exit(0);
	}
	close(pipefd[1]);
	ck_assert_int_eq(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "envf", 4);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);	/* busy: kept */
	ck_assert(cache_has(va, 1, MAIL_CACHE_ENVELOPE, "envf"));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(mailbox_cache_flush_wait(va), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* It waited for the holder, then wrote: another node sees it. */
	ck_assert_int_ge((t1.tv_sec - t0.tv_sec) * 1000 +
			 (t1.tv_nsec - t0.tv_nsec) / 1000000, 100);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert(cache_has(vb, 1, MAIL_CACHE_ENVELOPE, "envf"));
	mailbox_close(&va);
	mailbox_close(&vb);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

START_TEST(test_cache_other_process)
{
	struct store_user *a = user_open(&n1, "cache2@example.com");
	struct mailbox *va;
	int status;
	pid_t pid;

	deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* Its own lock client: OFD locks of inherited descriptors
		   would be shared with the parent. */
		struct node n3;
		struct store_user *c;
		struct mailbox *vc;
		const char *error;
		int ok;

		node_init(&n3, "node3");
		ok = store_user_open(n3.store, n3.sio, "cache2@example.com", 0,
				     &c, &error) == 0 &&
			mailbox_open(c, "INBOX", 0, &vc) == 0;
		if (ok) {
			mailbox_cache_add(vc, 1, MAIL_CACHE_MIME_TREE, "tree", 4);
			ok = mailbox_cache_flush(vc) == 0;
			mailbox_close(&vc);
			store_user_close(&c);
		}
		_exit(ok ? 0 : 1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert(!cache_has(va, 1, MAIL_CACHE_MIME_TREE, "tree"));
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_MIME_TREE, "tree"));
	mailbox_close(&va);
	store_user_close(&a);
}
END_TEST

/* Run fn with stderr going to a file; returns what was logged. */
static char *capture_stderr_begin(int *saved_fd, char *path, size_t size)
{
	int fd;

	snprintf(path, size, "%s/stderr.log", spool);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	*saved_fd = dup(2);
	dup2(fd, 2);
	close(fd);
	return path;
}

static char *capture_stderr_end(int saved_fd, const char *path)
{
	static char buf[8192];
	ssize_t n;
	int fd;

	dup2(saved_fd, 2);
	close(saved_fd);
	fd = open(path, O_RDONLY);
	n = fd < 0 ? 0 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

/* log_writer_mark - the writer mark in a change log's header (bytes
   20-23), and the log's inode */
static uint32_t log_writer_mark(const char *user_dir, ino_t *ino_r)
{
	char path[512];
	uint32_t mark = 99;
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/%s/clustermail.log", spool, user_dir);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &mark, sizeof(mark), 20), sizeof(mark));
	ck_assert_int_eq(fstat(fd, &st), 0);
	close(fd);
	if (ino_r != NULL)
		*ino_r = st.st_ino;
	return mark;
}

/* A writer that dies holding EX after writing the log (on NFS its last
   writes could still land) leaves its mark in the log header; the next
   EX holder completes its work, starts a new log file (a new inode, so
   late writes land in the old one) and keeps every record that was
   there. A writer that finishes clears its mark. */
START_TEST(test_writer_died)
{
	struct store_user *a = user_open(&n1, "writer@example.com");
	char path[512], logpath[512], *logged;
	struct mailbox *va;
	ino_t before, after;
	uint32_t uid = 1;
	int status, saved;
	pid_t pid;

	deliver(a, NULL, "Subject: w1\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	mailbox_close(&va);
	ck_assert_uint_eq(log_writer_mark("example.com/writer", &before), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct node n3;
		struct store_user *c;
		struct mailbox *vc;
		const char *error;
		int fd;

		node_log_writer_mark = true;
		node_init(&n3, "node3");
		if (store_user_open(n3.store, n3.sio, "writer@example.com", 0,
				    &c, &error) != 0 ||
		    mailbox_open(c, "INBOX", 0, &vc) != 0)
			_exit(1);
		/* A file another MDA put into new/: the EX sync gives it a
		   UID (a log write, so the mark goes on first). */
		snprintf(path, sizeof(path),
			 "%s/example.com/writer/new/1.M1P1.other", spool);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
		if (fd < 0 || write(fd, "Subject: w2\n\ny\n", 16) != 16 ||
		    close(fd) != 0)
			_exit(1);
		if (mailbox_lock(vc, LOCK_MODE_EX) != 0 ||
		    mailbox_count(vc) != 2)
			_exit(1);
		raise(SIGKILL);	/* dies holding EX, mark set */
		_exit(1);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
		      "child status %d", status);
	ck_assert_uint_eq(log_writer_mark("example.com/writer", &after), 1);
	ck_assert(after == before);

	/* A node without marks of its own still honours one it finds. */
	capture_stderr_begin(&saved, logpath, sizeof(logpath));
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	logged = capture_stderr_end(saved, logpath);
	ck_assert_msg(strstr(logged, "the last writer of the change log died; "
			     "starting a new log") != NULL, "logged: %s", logged);
	ck_assert_uint_eq(mailbox_count(va), 2);
	ck_assert_ptr_nonnull(mailbox_lookup_uid(va, 2, NULL));
	ck_assert_uint_eq(log_writer_mark("example.com/writer", &after), 0);
	ck_assert(after != before);
	mailbox_close(&va);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);

	/* A marking writer that finishes leaves no mark: no new log next. */
	{
		struct node n3;
		struct store_user *c;
		struct mailbox *vc;

		node_log_writer_mark = true;
		node_init(&n3, "node3");
		node_log_writer_mark = false;
		c = user_open(&n3, "writer@example.com");
		ck_assert_int_eq(mailbox_open(c, "INBOX", 0, &vc), 0);
		ck_assert_int_eq(mailbox_store(vc, &uid, 1, MAILBOX_STORE_ADD,
					       MAIL_SEEN, NULL, 0, NULL, NULL), 0);
		ck_assert_uint_eq(log_writer_mark("example.com/writer", &before), 0);
		mailbox_close(&vc);
		store_user_close(&c);
		node_deinit(&n3);
	}
	capture_stderr_begin(&saved, logpath, sizeof(logpath));
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	logged = capture_stderr_end(saved, logpath);
	ck_assert_msg(strstr(logged, "died") == NULL, "logged: %s", logged);
	ck_assert_uint_eq(log_writer_mark("example.com/writer", &after), 0);
	ck_assert(after == before);
	ck_assert((mailbox_lookup_uid(va, 1, NULL)->flags & MAIL_SEEN) != 0);
	mailbox_close(&va);
	store_user_close(&a);
}
END_TEST

START_TEST(test_cache_damage)
{
	struct store_user *a = user_open(&n1, "cache3@example.com");
	struct mailbox *va;
	char path[512], logpath[512], *logged;
	int fd, saved;

	for (int i = 0; i < 3; i++)
		deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "first", 5);
	mailbox_cache_add(va, 2, MAIL_CACHE_ENVELOPE, "second", 6);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	mailbox_close(&va);
	cache_path("example.com/cache3", path, sizeof(path));

	/* Torn: the last record cut short. The first still reads. */
	ck_assert_int_eq(truncate(path, file_size(path) - 3), 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_ENVELOPE, "first"));
	ck_assert(!cache_has(va, 2, MAIL_CACHE_ENVELOPE, "second"));
	mailbox_close(&va);

	/* Garbled inside the first record: nothing after it is trusted. */
	fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "X", 1, 32 + 9 + 1), 1);
	close(fd);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(!cache_has(va, 1, MAIL_CACHE_ENVELOPE, "first"));
	/* The next EX holder drops and rebuilds it, with a log line. */
	mailbox_cache_add(va, 3, MAIL_CACHE_ENVELOPE, "third", 5);
	capture_stderr_begin(&saved, logpath, sizeof(logpath));
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	logged = capture_stderr_end(saved, logpath);
	ck_assert_msg(strstr(logged, "clustermail.cache is damaged") != NULL,
		      "logged: %s", logged);
	mailbox_close(&va);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(cache_has(va, 3, MAIL_CACHE_ENVELOPE, "third"));
	ck_assert(!cache_has(va, 1, MAIL_CACHE_ENVELOPE, "first"));
	mailbox_close(&va);

	/* Garbage from the start (a bad header). */
	fd = open(path, O_WRONLY);
	ck_assert_int_eq(pwrite(fd, "garbage!", 8, 0), 8);
	close(fd);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(!cache_has(va, 3, MAIL_CACHE_ENVELOPE, "third"));
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "again", 5);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	mailbox_close(&va);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_ENVELOPE, "again"));
	mailbox_close(&va);
	store_user_close(&a);
}
END_TEST

START_TEST(test_cache_uidvalidity)
{
	struct store_user *a = user_open(&n1, "cache4@example.com");
	struct mailbox *va;
	char path[512];
	uint32_t header_uv;
	int fd;

	deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "old", 3);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	mailbox_close(&va);
	/* A rebuild with a new UIDVALIDITY: UID 1 may be another message. */
	corrupt_file("example.com/cache4", "clustermail.index");
	ck_assert_int_eq(store_index_rebuild(a, "INBOX"), 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(!cache_has(va, 1, MAIL_CACHE_ENVELOPE, "old"));
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "new", 3);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	cache_path("example.com/cache4", path, sizeof(path));
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &header_uv, 4, 12), 4);
	close(fd);
	ck_assert_uint_eq(header_uv, mailbox_uidvalidity(va));
	mailbox_close(&va);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_ENVELOPE, "new"));
	mailbox_close(&va);
	store_user_close(&a);
}
END_TEST

START_TEST(test_cache_compaction_and_limits)
{
	struct store_user *a = user_open(&n1, "cache5@example.com");
	struct mailbox *va, *vb;
	uint32_t uids[60];
	char path[512], text[32];
	uint8_t *big;
	off_t before;

	for (int i = 0; i < 100; i++)
		deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	for (uint32_t uid = 1; uid <= 100; uid++) {
		snprintf(text, sizeof(text), "envelope of %u", uid);
		mailbox_cache_add(va, uid, MAIL_CACHE_ENVELOPE, text, strlen(text));
		mailbox_cache_add(va, uid, MAIL_CACHE_BODY, "b", 1);
	}
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	cache_path("example.com/cache5", path, sizeof(path));
	before = file_size(path);
	/* Most messages expunged: the file is rewritten without them. */
	for (uint32_t i = 0; i < 60; i++)
		uids[i] = i + 1;
	ck_assert_int_eq(mailbox_expunge(va, uids, 60, NULL, NULL), 0);
	ck_assert_int_lt(file_size(path), before / 2 + 64);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &vb), 0);
	ck_assert(!cache_has(vb, 1, MAIL_CACHE_ENVELOPE, "envelope of 1"));
	ck_assert(cache_has(vb, 61, MAIL_CACHE_ENVELOPE, "envelope of 61"));
	ck_assert(cache_has(vb, 100, MAIL_CACHE_BODY, "b"));
	mailbox_close(&vb);

	/* MAIL_CACHE_VALUE_MAX: up to it is kept, past it ignored. */
	big = calloc(1, MAIL_CACHE_VALUE_MAX + 1);
	memset(big, 'x', MAIL_CACHE_VALUE_MAX + 1);
	mailbox_cache_add(va, 70, MAIL_CACHE_MIME_TREE, big, MAIL_CACHE_VALUE_MAX + 1);
	mailbox_cache_add(va, 71, MAIL_CACHE_MIME_TREE, big, MAIL_CACHE_VALUE_MAX);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &vb), 0);
	{
		const void *data;
		size_t size;

		ck_assert_int_eq(mailbox_cache_lookup(vb, 70, MAIL_CACHE_MIME_TREE,
						      &data, &size), 0);
		ck_assert_int_eq(mailbox_cache_lookup(vb, 71, MAIL_CACHE_MIME_TREE,
						      &data, &size), 1);
		ck_assert_uint_eq(size, MAIL_CACHE_VALUE_MAX);
		ck_assert(memcmp(data, big, size) == 0);
	}
	free(big);
	mailbox_close(&vb);
	mailbox_close(&va);
	store_user_close(&a);
}
END_TEST

START_TEST(test_cache_flush_busy)
{
	struct store_user *a = user_open(&n1, "cache6@example.com");
	struct store_user *b = user_open(&n2, "cache6@example.com");
	char lock_name[LOCK_NAME_MAX + 1];
	struct mailbox *va, *vb;
	struct lock *lock;

	deliver(a, NULL, "Subject: c\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	mailbox_cache_add(va, 1, MAIL_CACHE_ENVELOPE, "pending", 7);
	/* Another handle holds EX: flush does not wait, the add stays. */
	lock_name_mailbox("cache6@example.com", "INBOX", lock_name);
	lock = lock_create(n2.locks, lock_name, LOCK_CLASS_OTHER);
	/* it stands for another node: its own scope for the lock order
	   checks of --enable-debug-checks builds */
	lock_set_owner(lock, &lock_name);
	ck_assert_int_eq(sio_lock(n2.sio, lock, LOCK_MODE_EX, 0, 1000), 0);
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	ck_assert(cache_has(va, 1, MAIL_CACHE_ENVELOPE, "pending"));
	lock_release(lock);
	lock_destroy(&lock);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert(!cache_has(vb, 1, MAIL_CACHE_ENVELOPE, "pending"));
	/* Free again: written now. */
	ck_assert_int_eq(mailbox_cache_flush(va), 0);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert(cache_has(vb, 1, MAIL_CACHE_ENVELOPE, "pending"));
	mailbox_close(&va);
	mailbox_close(&vb);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

static uint64_t sync_ops(void)
{
	struct sio_stats st;

	sio_get_stats(&st);
	return st.sync_ops;
}

/* A view whose stamp matches the lock value block reads nothing of the
   log: after another node's write (the value was stored at its release)
   one sync catches up, the next costs only the directory checks. */
START_TEST(test_stamp_saves_log_reads)
{
	struct store_user *a = user_open(&n1, "stamp@example.com");
	struct store_user *b = user_open(&n2, "stamp@example.com");
	struct mailbox *va, *vb;
	uint64_t before, idle, after;
	uint32_t uid = 1;

	deliver(a, NULL, "Subject: s\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	before = sync_ops();
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	idle = sync_ops() - before;
	ck_assert_int_eq(mailbox_store(va, &uid, 1, MAILBOX_STORE_ADD,
				       MAIL_FLAGGED, NULL, 0, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_record(vb, 0)->flags & MAIL_FLAGGED,
			  MAIL_FLAGGED);
	before = sync_ops();
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	after = sync_ops() - before;
	ck_assert_msg(after == idle, "idle sync %llu ops, after a write %llu",
		      (unsigned long long)idle, (unsigned long long)after);
	/* The writer's own view matches what it published. */
	before = sync_ops();
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	ck_assert_uint_eq(sync_ops() - before, idle);
	/* The directory check, new/ (stat + listing: it changed within the
	   last seconds) and the cache file's stat; nothing of the log. */
	ck_assert_uint_le(idle, 4);
	mailbox_close(&va);
	mailbox_close(&vb);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

/* new/ is listed only when it may have changed: a sync skips the listing
   of a new/ this process found empty whose mtime has not moved since,
   and a delivery (which moves it) is still seen at once. */
START_TEST(test_new_dir_skip)
{
	struct store_user *a = user_open(&n1, "newdir@example.com");
	struct store_user *b = user_open(&n2, "newdir@example.com");
	struct timespec times[2];
	struct mailbox *va, *vb;
	struct mailbox_changes ch;
	uint64_t before, skipped, hinted;
	char path[512];

	deliver(a, NULL, "Subject: n\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	/* Make new/'s last change look settled (10 s ago). */
	snprintf(path, sizeof(path), "%s/example.com/newdir/new", spool);
	clock_gettime(CLOCK_REALTIME, &times[0]);
	times[0].tv_sec -= 10;
	times[0].tv_nsec = 123456789;
	times[1] = times[0];
	ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);	/* lists, remembers */
	before = sync_ops();
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	skipped = sync_ops() - before;
	/* The directory check, new/'s stat, the cache's stat: no listing. */
	ck_assert_uint_eq(skipped, 3);
	/* Another process (here: store) learns it from the hint file: three
	   calls to read it, where without the file there are one (the open
	   that fails), the listing of new/ and four to write the hint. */
	before = sync_ops();
	ck_assert_int_eq(mailbox_open(b, "INBOX", MAILBOX_OPEN_READONLY, &vb), 0);
	hinted = sync_ops() - before;
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	mailbox_close(&vb);
	{
		struct node n3;
		struct store_user *c;

		snprintf(path, sizeof(path),
			 "%s/example.com/newdir/clustermail.newseen", spool);
		ck_assert_int_eq(unlink(path), 0);
		node_init(&n3, "node3");
		c = user_open(&n3, "newdir@example.com");
		before = sync_ops();
		ck_assert_int_eq(mailbox_open(c, "INBOX", MAILBOX_OPEN_READONLY,
					      &vb), 0);
		ck_assert_uint_eq(sync_ops() - before, hinted + 3);
		mailbox_close(&vb);
		store_user_close(&c);
		node_deinit(&n3);
		snprintf(path, sizeof(path), "%s/example.com/newdir/new", spool);
	}
	/* Another node delivers: the mtime moves, the listing runs. */
	deliver(b, NULL, "Subject: n2\n\nx\n", 0);
	ck_assert_int_eq(mailbox_sync(va, 0, &ch), 0);
	ck_assert_uint_eq(ch.new_count, 1);
	ck_assert_uint_eq(mailbox_count(va), 2);
	mailbox_changes_free(&ch);
	/* A file system with whole-second times (tv_nsec 0): always listed. */
	times[0].tv_nsec = 0;
	times[1] = times[0];
	ck_assert_int_eq(utimensat(AT_FDCWD, path, times, 0), 0);
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	before = sync_ops();
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	ck_assert_uint_eq(sync_ops() - before, skipped + 1);
	mailbox_close(&va);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

/* A stale NFS handle on a descriptor cannot be retried: the store says
   "try again later" and nothing breaks; the next attempt works. */
START_TEST(test_estale_is_temporary)
{
	struct store_user *u = user_open(&n1, "stale@example.com");
	struct mailbox *box;

	deliver(u, NULL, "Subject: s\n\nx\n", 0);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	mailbox_close(&box);
	/* Opening reads the attribute file (special-use: a failure there
	   only loses the attribute) and then the index: both stale. */
	sio_inject_fault(n1.sio, SIO_OP_PREAD, ESTALE, 2);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), STORE_ERR_TEMP);
	/* Path lookups that go stale are redone: no error at all. */
	sio_inject_fault(n1.sio, SIO_OP_OPENAT, ESTALE, 2);
	ck_assert_int_eq(mailbox_open(u, "INBOX", 0, &box), 0);
	ck_assert_uint_eq(mailbox_count(box), 1);
	mailbox_close(&box);
	store_user_close(&u);
}
END_TEST

/* store_list: every mailbox once, parents that exist only as prefixes,
   subscriptions of missing names, in order, with the right attributes. */
START_TEST(test_list_parents_and_subscriptions)
{
	static const struct {
		const char *name;
		unsigned int attrs;
	} want[] = {
		{ "INBOX", STORE_LIST_HAS_CHILDREN },
		{ "INBOX/sub", 0 },
		{ "a", STORE_LIST_NONEXISTENT | STORE_LIST_HAS_CHILDREN },
		{ "a/b", STORE_LIST_NONEXISTENT | STORE_LIST_SUBSCRIBED |
		  STORE_LIST_HAS_CHILDREN },
		{ "a/b/c", STORE_LIST_SUBSCRIBED },
		{ "a/b/d", 0 },
		{ "a/x", 0 },
		{ "gone", STORE_LIST_NONEXISTENT | STORE_LIST_SUBSCRIBED },
		{ "m", STORE_LIST_HAS_CHILDREN },
		{ "m/n", 0 },
	};
	struct store_user *u = user_open(&n1, "lister@example.com");
	struct store_list_entry *e;
	size_t count;

	ck_assert_int_eq(store_mailbox_create(u, "a/b/c", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "a/b/d", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "a/x", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "m/n", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "m", 0), 0);
	ck_assert_int_eq(store_mailbox_create(u, "INBOX/sub", 0), 0);
	ck_assert_int_eq(store_subscribe(u, "a/b", true), 0);
	ck_assert_int_eq(store_subscribe(u, "a/b/c", true), 0);
	ck_assert_int_eq(store_subscribe(u, "gone", true), 0);
	ck_assert_int_eq(store_list(u, &e, &count), 0);
	ck_assert_uint_eq(count, N_ELEMENTS(want));
	for (size_t i = 0; i < count; i++) {
		ck_assert_str_eq(e[i].name, want[i].name);
		ck_assert_msg((e[i].attrs & ~STORE_SPECIAL_MASK) == want[i].attrs,
			      "%s: attrs %#x, want %#x", e[i].name, e[i].attrs,
			      want[i].attrs);
	}
	store_list_free(e, count);
	store_user_close(&u);
}
END_TEST

/* Delivery into a missing mailbox says so; a missing tmp file (the
   other side of the link) is not "no such mailbox". */
START_TEST(test_deliver_missing_mailbox)
{
	struct store_user *u = user_open(&n1, "missing@example.com");
	struct store_save_options opts = { 0 };
	struct store_save *save;
	int ret;

	save = store_save_begin(u, &ret);
	ck_assert_int_eq(ret, 0);
	ck_assert_int_eq(store_save_write(save, "S: x\n\nx\n", 8), 0);
	ck_assert_int_eq(store_save_finish(save), 0);
	ck_assert_int_eq(store_save_deliver(save, u, "Nope", &opts),
			 STORE_ERR_NOTFOUND);
	ck_assert_ptr_nonnull(strstr(store_user_error(u), "doesn't exist"));
	/* The saved file vanishes (a tmp/ cleaner): a temporary failure. */
	{
		char path[300], file[600];
		struct dirent *d;
		DIR *dir;

		snprintf(path, sizeof(path), "%s/example.com/missing/tmp", spool);
		dir = opendir(path);
		ck_assert_ptr_nonnull(dir);
		while ((d = readdir(dir)) != NULL) {
			if (d->d_name[0] == '.')
				continue;
			snprintf(file, sizeof(file), "%s/%s", path, d->d_name);
			ck_assert_int_eq(unlink(file), 0);
		}
		closedir(dir);
	}
	ret = store_save_deliver(save, u, "INBOX", &opts);
	ck_assert_int_eq(ret, STORE_ERR_TEMP);
	store_save_free(&save);
	store_user_close(&u);
}
END_TEST

/* shared_append - APPEND one message with flags into box */
static int shared_append(struct store_user *u, struct mailbox *box,
			 uint32_t flags, const char *const *keywords)
{
	struct store_save_options opts = { .flags = flags, .keywords = keywords };
	struct store_save *save;
	uint32_t uid, uidv;
	int ret;

	save = store_save_begin(u, &ret);
	ck_assert_int_eq(ret, 0);
	ck_assert_int_eq(store_save_write(save, "Subject: s\r\n\r\nb\r\n", 16), 0);
	ck_assert_int_eq(store_save_finish(save), 0);
	ret = store_save_append(save, box, &opts, &uid, &uidv);
	store_save_free(&save);
	return ret;
}

/* registry_append - add text to SPOOL/.shared/<identifier> */
static void registry_append(const char *identifier, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/.shared/%s", spool, identifier);
	ck_assert_ptr_nonnull(f = fopen(path, "a"));
	fputs(text, f);
	fclose(f);
}

/* A session of alice on bob's spool: every operation checks alice's
   rights; no "l" and no "r" looks like a missing mailbox. */
START_TEST(test_shared_open_list_status)
{
	struct store_user *alice = user_open(&n1, "alice@example.com");
	struct store_user *bob = user_open(&n1, "bob@example.com");
	struct store_user *shared;
	struct store_list_entry *entries;
	struct store_status st;
	struct mailbox *box;
	unsigned int rights;
	char letters[16], **owners;
	size_t count;

	ck_assert_int_eq(store_mailbox_create(bob, "Projects", 0), 0);
	ck_assert_int_eq(store_mailbox_create(bob, "Projects/X", 0), 0);
	ck_assert_int_eq(store_mailbox_create(bob, "Private", 0), 0);
	deliver(bob, "Projects/X", "Subject: x\n\nx\n", 0);

	/* Nothing granted: no owners, nothing listed, nothing opens. */
	ck_assert_int_eq(store_shared_owners(alice, &owners, &count), 0);
	ck_assert_uint_eq(count, 0);
	store_shared_owners_free(owners, count);
	ck_assert_int_eq(store_user_open_shared(alice, "bob@example.com", &shared), 0);
	ck_assert_str_eq(store_user_requester(shared), "alice@example.com");
	ck_assert_int_eq(store_list(shared, &entries, &count), 0);
	ck_assert_uint_eq(count, 0);
	store_list_free(entries, count);
	ck_assert_int_eq(mailbox_open(shared, "Projects/X", 0, &box),
			 STORE_ERR_NOTFOUND);
	ck_assert_int_eq(mailbox_open(shared, "Nope", 0, &box),
			 STORE_ERR_NOTFOUND);
	/* The refusal reads exactly like a missing mailbox, in alice's
	   session too. */
	ck_assert_str_eq(store_user_error(alice), "Mailbox doesn't exist: Nope");
	ck_assert_int_eq(mailbox_open(shared, "Projects/X", 0, &box),
			 STORE_ERR_NOTFOUND);
	ck_assert_str_eq(store_user_error(alice),
			 "Mailbox doesn't exist: Projects/X");
	ck_assert_int_eq(store_mailbox_status(shared, "Projects/X", &st),
			 STORE_ERR_NOTFOUND);

	/* "l" only: listed (with its parent as a non-existent prefix), but
	   neither opened nor counted. */
	ck_assert_int_eq(store_acl_set(bob, "Projects/X", "alice@example.com", "l"), 0);
	ck_assert_int_eq(store_shared_owners(alice, &owners, &count), 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_str_eq(owners[0], "bob@example.com");
	store_shared_owners_free(owners, count);
	ck_assert_int_eq(store_list(shared, &entries, &count), 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_str_eq(entries[0].name, "Projects");
	ck_assert_uint_eq(entries[0].attrs, STORE_LIST_NONEXISTENT |
			  STORE_LIST_HAS_CHILDREN);
	ck_assert_str_eq(entries[1].name, "Projects/X");
	ck_assert_uint_eq(entries[1].attrs, 0);
	store_list_free(entries, count);
	ck_assert_int_eq(mailbox_open(shared, "Projects/X", 0, &box),
			 STORE_ERR_NOPERM);
	ck_assert_int_eq(store_mailbox_status(shared, "Projects/X", &st),
			 STORE_ERR_NOPERM);
	ck_assert_int_eq(store_mailbox_myrights(shared, "Projects/X", &rights), 0);
	ck_assert_int_eq(store_acl_myrights(shared, "Projects/X", letters), 0);
	ck_assert_str_eq(letters, "l");
	ck_assert_int_eq(store_mailbox_myrights(shared, "Private", &rights),
			 STORE_ERR_NOTFOUND);

	/* "lr": opens and counts; the view says what alice may do. */
	ck_assert_int_eq(store_acl_set(bob, "Projects/X", "alice@example.com", "+r"), 0);
	ck_assert_int_eq(store_mailbox_status(shared, "Projects/X", &st), 0);
	ck_assert_uint_eq(st.messages, 1);
	ck_assert_int_eq(mailbox_open(shared, "Projects/X", 0, &box), 0);
	ck_assert_uint_eq(mailbox_count(box), 1);
	ck_assert_str_eq(letters, "l");
	mailbox_close(&box);
	/* The owner's own handle is not restricted. */
	ck_assert_ptr_null(store_user_requester(bob));
	ck_assert_int_eq(mailbox_open(bob, "Private", 0, &box), 0);
	mailbox_close(&box);
	/* "anyone" counts, and lands in the registry too. */
	ck_assert_int_eq(store_acl_set(bob, "Private", "anyone", "lr"), 0);
	ck_assert_int_eq(store_list(shared, &entries, &count), 0);
	ck_assert_uint_eq(count, 3);
	store_list_free(entries, count);
	/* The registry is a hint: junk and duplicate lines are dropped. */
	registry_append("alice@example.com",
			"../../etc\n\nBOB@example.com\nalice@example.com\n"
			"carol@example.com");
	ck_assert_int_eq(store_shared_owners(alice, &owners, &count), 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_str_eq(owners[0], "bob@example.com");
	ck_assert_str_eq(owners[1], "carol@example.com");
	store_shared_owners_free(owners, count);
	/* Subscriptions, quota limits and index repair are the owner's. */
	ck_assert_int_eq(store_subscribe(shared, "Private", true), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_quota_set(shared, 1, 1), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_index_rebuild(shared, "Private"), STORE_ERR_NOPERM);
	store_user_close(&shared);
	store_user_close(&bob);
	/* Unknown or invalid owners look like missing mailboxes. */
	ck_assert_int_eq(store_user_open_shared(alice, "nobody@example.com", &shared),
			 STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_user_open_shared(alice, "..", &shared),
			 STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_user_open_shared(alice, "../x@example.com", &shared),
			 STORE_ERR_NOTFOUND);
	store_user_close(&alice);
}
END_TEST

/* Flags, expunge, append and copy each need their own right. */
START_TEST(test_shared_message_rights)
{
	struct store_user *alice = user_open(&n1, "alice@example.com");
	struct store_user *bob = user_open(&n1, "bob@example.com");
	const char *kw[] = { "todo", NULL };
	struct store_user *shared;
	struct mailbox *box, *own;
	uint32_t uid;
	int fd;

	ck_assert_int_eq(store_mailbox_create(bob, "Team", 0), 0);
	deliver(bob, "Team", "Subject: 1\n\n1\n", 0);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "lr"), 0);
	ck_assert_int_eq(store_user_open_shared(alice, "bob@example.com", &shared), 0);
	ck_assert_int_eq(mailbox_open(shared, "Team", 0, &box), 0);
	uid = mailbox_record(box, 0)->uid;
	ck_assert_int_eq(mailbox_open_message(box, uid, &fd), 0);
	close(fd);

	/* "r" only: flag changes are left out silently (FETCH's \Seen). */
	ck_assert_int_eq(mailbox_store(box, &uid, 1, MAILBOX_STORE_ADD,
				       MAIL_SEEN | MAIL_FLAGGED | MAIL_DELETED,
				       kw, 0, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_record(box, 0)->flags & MAIL_FLAGS_MASK, 0);
	ck_assert_uint_eq(mailbox_record(box, 0)->keywords, 0);
	/* "s": \Seen only; "t": \Deleted; "w": the rest and keywords. */
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "+s"), 0);
	ck_assert_int_eq(mailbox_store(box, &uid, 1, MAILBOX_STORE_ADD,
				       MAIL_SEEN | MAIL_FLAGGED, kw, 0, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_record(box, 0)->flags & MAIL_FLAGS_MASK, MAIL_SEEN);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "+wt"), 0);
	ck_assert_int_eq(mailbox_store(box, &uid, 1, MAILBOX_STORE_REPLACE,
				       MAIL_FLAGGED | MAIL_DELETED, kw, 0, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_record(box, 0)->flags & MAIL_FLAGS_MASK,
			  MAIL_FLAGGED | MAIL_DELETED);
	ck_assert_uint_ne(mailbox_record(box, 0)->keywords, 0);
	/* Expunge needs "e". */
	ck_assert_int_eq(mailbox_expunge(box, NULL, 0, NULL, NULL), STORE_ERR_NOPERM);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(box), 1);
	/* Append needs "i"; without "w" the keywords are dropped. */
	ck_assert_int_eq(shared_append(alice, box, MAIL_SEEN, NULL), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "lrsi"), 0);
	ck_assert_int_eq(shared_append(alice, box, MAIL_SEEN | MAIL_FLAGGED, kw), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(box), 2);
	ck_assert_uint_eq(mailbox_record(box, 1)->flags & MAIL_FLAGS_MASK, MAIL_SEEN);
	ck_assert_uint_eq(mailbox_record(box, 1)->keywords, 0);
	/* Copy out of the shared mailbox into alice's own, and back in. */
	ck_assert_int_eq(mailbox_copy_to(box, &uid, 1, alice, "INBOX", false,
					 NULL, NULL, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_open(alice, "INBOX", 0, &own), 0);
	ck_assert_uint_eq(mailbox_count(own), 1);
	/* Moving out needs "t" and "e" on the source. */
	ck_assert_int_eq(mailbox_copy_to(box, &uid, 1, alice, "INBOX", true,
					 NULL, NULL, NULL, NULL), STORE_ERR_NOPERM);
	uid = mailbox_record(own, 0)->uid;
	ck_assert_int_eq(mailbox_copy_to(own, &uid, 1, shared, "Team", false,
					 NULL, NULL, NULL, NULL), 0);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "lr"), 0);
	ck_assert_int_eq(mailbox_copy_to(own, &uid, 1, shared, "Team", false,
					 NULL, NULL, NULL, NULL), STORE_ERR_NOPERM);
	ck_assert_int_eq(mailbox_copy_to(own, &uid, 1, shared, "Nope", false,
					 NULL, NULL, NULL, NULL), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(box), 3);
	/* "te": expunge works. */
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "lrte"), 0);
	ck_assert_int_eq(mailbox_expunge(box, NULL, 0, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_uint_eq(mailbox_count(box), 2);
	/* Revoked: the open view can no longer read messages. */
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", NULL), 0);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_int_eq(mailbox_open_message(box, mailbox_record(box, 0)->uid, &fd),
			 STORE_ERR_NOTFOUND);
	mailbox_close(&own);
	/* The view may own its user. */
	mailbox_take_user(box);
	mailbox_close(&box);
	ck_assert_uint_eq(check_problems(bob, NULL), 0);
	store_user_close(&bob);
	store_user_close(&alice);
}
END_TEST

/* Mailbox management and ACL administration of another user's mailboxes. */
START_TEST(test_shared_manage_rights)
{
	struct store_user *alice = user_open(&n1, "alice@example.com");
	struct store_user *bob = user_open(&n1, "bob@example.com");
	struct store_acl_entry *acl;
	struct store_user *shared;
	char letters[16];
	size_t count;

	ck_assert_int_eq(store_mailbox_create(bob, "Team", 0), 0);
	ck_assert_int_eq(store_user_open_shared(alice, "bob@example.com", &shared), 0);
	ck_assert_int_eq(store_mailbox_create(shared, "Team/Sub", 0), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "l"), 0);
	ck_assert_int_eq(store_mailbox_create(shared, "Team/Sub", 0), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_mailbox_create(shared, "Top", 0), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "lk"), 0);
	ck_assert_int_eq(store_mailbox_create(shared, "Team/Sub", 0), 0);
	ck_assert_int_eq(store_mailbox_exists(bob, "Team/Sub"), 0);
	/* The new child has the default ACL: alice does not see it. */
	ck_assert_int_eq(store_mailbox_delete(shared, "Team/Sub"), STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_acl_set(bob, "Team/Sub", "alice@example.com", "lx"), 0);
	ck_assert_int_eq(store_mailbox_rename(shared, "Team/Sub", "Team/Other"), 0);
	ck_assert_int_eq(store_mailbox_rename(shared, "Team/Other", "Elsewhere"),
			 STORE_ERR_NOTFOUND);
	ck_assert_int_eq(store_mailbox_delete(shared, "Team"), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_mailbox_delete(shared, "Team/Other"), 0);
	ck_assert_int_eq(store_mailbox_exists(bob, "Team/Other"), STORE_ERR_NOTFOUND);
	/* ACL administration needs "a"; one's own rights do not. */
	ck_assert_int_eq(store_acl_get(shared, "Team", &acl, &count), STORE_ERR_NOPERM);
	ck_assert_int_eq(store_acl_set(shared, "Team", "alice@example.com", "+a"),
			 STORE_ERR_NOPERM);
	ck_assert_int_eq(store_acl_rights(shared, "Team", "carol@example.com", letters),
			 STORE_ERR_NOPERM);
	ck_assert_int_eq(store_acl_rights(shared, "Team", "alice@example.com", letters), 0);
	ck_assert_str_eq(letters, "lk");
	ck_assert_int_eq(store_acl_set(bob, "Team", "alice@example.com", "+a"), 0);
	ck_assert_int_eq(store_acl_get(shared, "Team", &acl, &count), 0);
	ck_assert_uint_eq(count, 2);
	store_acl_free(acl, count);
	ck_assert_int_eq(store_acl_set(shared, "Team", "carol@example.com", "lr"), 0);
	ck_assert_int_eq(store_acl_rights(bob, "Team", "carol@example.com", letters), 0);
	ck_assert_str_eq(letters, "lr");
	ck_assert_int_eq(store_acl_set(shared, "Team", "bob@example.com", "lr"),
			 STORE_ERR_CANNOT);
	store_user_close(&shared);
	store_user_close(&bob);
	store_user_close(&alice);
}
END_TEST

/* expunged_has - is uid in the array? */
static bool expunged_has(const uint32_t *uids, size_t count, uint32_t uid)
{
	for (size_t i = 0; i < count; i++) {
		if (uids[i] == uid)
			return true;
	}
	return false;
}

START_TEST(test_expunged_since)
{
	struct store_user *a = user_open(&n1, "qr@example.com");
	struct store_user *b = user_open(&n2, "qr@example.com");
	struct mailbox *va, *vb;
	uint32_t uid, *uids;
	uint64_t before, middle;
	size_t count;
	bool complete;

	for (int i = 0; i < 6; i++)
		deliver(a, NULL, "Subject: q\n\nq\n", 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_open(b, "INBOX", 0, &vb), 0);
	before = mailbox_highestmodseq(va);
	uid = 2;
	ck_assert_int_eq(mailbox_expunge(va, &uid, 1, NULL, NULL), 0);
	middle = mailbox_highestmodseq(va);
	uid = 5;
	ck_assert_int_eq(mailbox_expunge(va, &uid, 1, NULL, NULL), 0);

	/* The other node's view learns the expunges from the log. */
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	ck_assert_int_eq(mailbox_expunged_since(vb, before, &uids, &count,
						&complete), 0);
	ck_assert(complete);
	ck_assert_uint_eq(count, 2);
	ck_assert_uint_eq(uids[0], 2);
	ck_assert_uint_eq(uids[1], 5);
	free(uids);
	ck_assert_int_eq(mailbox_expunged_since(vb, middle, &uids, &count,
						&complete), 0);
	ck_assert(complete);
	ck_assert_uint_eq(count, 1);
	ck_assert_uint_eq(uids[0], 5);
	free(uids);

	/* Compact the log many times (4 KiB threshold): the index keeps
	   the history, for this view, the other one, and a fresh one. */
	for (int i = 0; i < 300; i++) {
		uid = 1;
		ck_assert_int_eq(mailbox_store(va, &uid, 1, (i % 2) == 0 ?
					       MAILBOX_STORE_ADD : MAILBOX_STORE_REMOVE,
					       MAIL_SEEN, NULL, 0, NULL, NULL), 0);
	}
	ck_assert_int_eq(mailbox_sync(vb, 0, NULL), 0);
	mailbox_close(&va);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_expunged_since(va, before, &uids, &count,
						&complete), 0);
	ck_assert(complete);
	ck_assert(count == 2 && expunged_has(uids, count, 2) &&
		  expunged_has(uids, count, 5));
	free(uids);
	ck_assert_int_eq(mailbox_expunged_since(vb, before, &uids, &count,
						&complete), 0);
	ck_assert(complete && count == 2);
	free(uids);
	/* Nothing newer than the current HIGHESTMODSEQ. */
	ck_assert_int_eq(mailbox_expunged_since(va, mailbox_highestmodseq(va),
						&uids, &count, &complete), 0);
	ck_assert(complete && count == 0);
	free(uids);
	mailbox_close(&va);
	mailbox_close(&vb);

	/* A rebuild forgets the history: older modseqs are incomplete. */
	ck_assert_int_eq(store_index_rebuild(a, "INBOX"), 0);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_expunged_since(va, before, &uids, &count,
						&complete), 0);
	ck_assert(!complete);
	free(uids);
	/* ... and later expunges are remembered again. */
	middle = mailbox_highestmodseq(va);
	uid = 3;
	ck_assert_int_eq(mailbox_expunge(va, &uid, 1, NULL, NULL), 0);
	ck_assert_int_eq(mailbox_expunged_since(va, middle, &uids, &count,
						&complete), 0);
	ck_assert(complete && count == 1 && uids[0] == 3);
	free(uids);
	mailbox_close(&va);
	ck_assert_uint_eq(check_problems(a, "INBOX"), 0);
	store_user_close(&a);
	store_user_close(&b);
}
END_TEST

/* expunge_many - deliver n messages and expunge all of them */
static void expunge_many(struct store_user *u, struct mailbox *box,
			 unsigned int n)
{
	for (unsigned int i = 0; i < n; i++)
		deliver(u, NULL, "Subject: e\n\ne\n", MAIL_DELETED);
	ck_assert_int_eq(mailbox_sync(box, 0, NULL), 0);
	ck_assert_int_eq(mailbox_expunge(box, NULL, 0, NULL, NULL), 0);
}

START_TEST(test_expunge_history_bounded)
{
	struct store_user *a = user_open(&n1, "qb@example.com");
	struct mailbox *va;
	uint32_t *uids, uid = 1;
	uint64_t start;
	size_t count;
	bool complete;

	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	start = mailbox_highestmodseq(va);
	/* One big EXPUNGE record of more UIDs than the index keeps. */
	expunge_many(a, va, 40);
	deliver(a, NULL, "Subject: k\n\nk\n", 0);
	ck_assert_int_eq(mailbox_sync(va, 0, NULL), 0);
	uid = mailbox_record(va, 0)->uid;
	/* Compact: the history is cut to its bound. */
	for (int i = 0; i < 300; i++) {
		ck_assert_int_eq(mailbox_store(va, &uid, 1, (i % 2) == 0 ?
					       MAILBOX_STORE_ADD : MAILBOX_STORE_REMOVE,
					       MAIL_SEEN, NULL, 0, NULL, NULL), 0);
	}
	mailbox_close(&va);
	ck_assert_int_eq(mailbox_open(a, "INBOX", 0, &va), 0);
	ck_assert_int_eq(mailbox_expunged_since(va, start, &uids, &count,
						&complete), 0);
	ck_assert(!complete);
	ck_assert_uint_le(count, 32);
	free(uids);
	mailbox_close(&va);
	store_user_close(&a);
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
	tcase_add_test(tc, test_mailbox_id);
	tcase_add_test(tc, test_email_id);
	tcase_add_test(tc, test_compaction_and_reload);
	tcase_add_test(tc, test_expunged_since);
	tcase_add_test(tc, test_expunge_history_bounded);
	tcase_add_test(tc, test_self_repair);
	tcase_add_test(tc, test_check_finds_missing_file);
	tcase_add_test(tc, test_quota);
	tcase_add_test(tc, test_subscriptions_acl);
	tcase_add_test(tc, test_stamp_saves_log_reads);
	tcase_add_test(tc, test_new_dir_skip);
	tcase_add_test(tc, test_list_parents_and_subscriptions);
	tcase_add_test(tc, test_deliver_missing_mailbox);
	tcase_add_test(tc, test_shared_open_list_status);
	tcase_add_test(tc, test_shared_message_rights);
	tcase_add_test(tc, test_shared_manage_rights);
	tcase_add_test(tc, test_estale_is_temporary);
	tcase_add_test(tc, test_cache_two_views);
	tcase_add_test(tc, test_cache_other_process);
	tcase_add_test(tc, test_cache_window);
	tcase_add_test(tc, test_cache_flush_wait);
	tcase_add_test(tc, test_cache_damage);
	tcase_add_test(tc, test_writer_died);
	tcase_add_test(tc, test_cache_uidvalidity);
	tcase_add_test(tc, test_cache_compaction_and_limits);
	tcase_add_test(tc, test_cache_flush_busy);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { store_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
