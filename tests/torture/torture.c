/*
 * torture.c - the mailbox store's concurrency torture test (with its final
 * dump), and the C side of the store benchmarks in bench/.
 *
 *   torture --init  --spool DIR --users a@x,b@x --journal FILE
 *   torture --run   --spool DIR --users ... --node NAME --journal FILE
 *                   (--seconds N | --deadline UNIXTIME) [--seed S]
 *                   [--compact-bytes N]
 *   torture --dump  --spool DIR --users ...          > state
 *   torture --bench-open    --spool DIR --users u@x [--mailbox M]
 *   torture --bench-deliver N --spool DIR --users u1@x,... [--mailbox M]
 *                   [--stdin]
 *
 * How the test works. tests/torture/run-torture.sh starts several --run
 * processes on one spool, each pretending to be a different node: its own
 * node name, its own fcntl lock client, its own store. Each loops over
 * random operations through the store API - deliveries (sometimes into
 * two mailboxes at once, through hard links), appends, flag and keyword
 * changes (some CONDSTORE-conditional), expunges by UID and by \Deleted,
 * copies, moves, status, re-reads and reopens - on every user's three
 * mailboxes, keeping the mailboxes open between operations the way IMAP
 * sessions do, so that incremental syncs from the change log are what
 * gets exercised. The driver SIGKILLs one process at random moments and
 * starts it again with a fresh journal.
 *
 * The journal. Every operation writes an intent line before the call and
 * an ack (or fail) line after it, with write(2) on an O_APPEND file: a
 * SIGKILL loses nothing that write() returned for (we do not simulate a
 * power cut, so no fsync). The ack is the client's view of "acknowledged";
 * an intent without a result is an operation that may or may not have
 * happened. Every message carries a unique "Message-ID: <node.pid.n@torture>"
 * as its first line and a body derived from that id, so content can be
 * checked anywhere; before an operation on existing messages the process
 * reads their ids and logs them ("seen"), which lets the checker tie UIDs
 * to messages across processes.
 *
 * Checks made here, on every view after every open and sync (a violation
 * is logged, printed, and the run goes on): UIDVALIDITY never changes;
 * UIDs strictly increase and stay below UIDNEXT; modseqs are at most
 * HIGHESTMODSEQ, and neither HIGHESTMODSEQ nor UIDNEXT ever goes back
 * (also across reopens and against STATUS); a UID that appears is above
 * every UID and at or above the UIDNEXT of the previous view (so nothing
 * expunged comes back and nothing is slotted in behind the client); a
 * record's modseq never decreases, and a flag change always comes with a
 * new modseq; a UID keeps its file; the changes a sync reports match what
 * changed in the view; store calls return only OK or TEMP. The rest - the
 * global accounting of every acknowledged message - is done after the run
 * by check-spool.py over all journals and the --dump of the final state.
 *
 * Longer than our usual file limit on purpose: the Makefile builds the
 * torture program from this one source, and the operations, the view
 * checks and the dump share the journal and message helpers.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "maildir/store.h"

#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_USERS 128
#define MAX_PICK 5
/* Above this many messages an expunge takes up to MAX_EXPUNGE of them, so
   that mailboxes stop growing and long runs stay fast. */
#define LARGE_MAILBOX 400
#define MAX_EXPUNGE 24
#define KEYWORD_COUNT 5		/* "k0" .. "k4" */
#define LOCK_TIMEOUT_MSECS 20000
#define EXIT_SETUP 2

static const char *const torture_mailboxes[] = { "INBOX", "Archive", "Work/Sub" };
#define MAILBOX_COUNT N_ELEMENTS(torture_mailboxes)

static const char *const keyword_names[KEYWORD_COUNT + 1] = {
	"k0", "k1", "k2", "k3", "k4", NULL
};

enum torture_mode {
	MODE_NONE, MODE_INIT, MODE_RUN, MODE_DUMP, MODE_BENCH_OPEN,
	MODE_BENCH_DELIVER,
};

struct options {
	enum torture_mode mode;
	const char *spool;
	const char *node;
	const char *journal;
	const char *mailbox;		/* bench modes; NULL = INBOX */
	char *users[MAX_USERS];		/* owned */
	unsigned int user_count;
	int64_t deadline_msecs;		/* CLOCK_REALTIME */
	uint64_t seed;
	uint64_t compact_bytes;
	bool writer_mark;	/* store_settings.log_writer_mark */
	unsigned long bench_count;
	bool bench_stdin;
	enum settings_lock_backend lock_backend;	/* default fcntl */
};

/* Everything a store needs in a process: pool, loop, locks, sio. */
struct env {
	struct iopool *pool;
	struct ioloop *loop;
	struct lock_client *locks;
	struct sio *sio;
	struct store *store;
	struct store_user *users[MAX_USERS];
};

/* A record as the previous view showed it. */
struct snap_record {
	uint32_t uid;
	uint32_t flags;		/* MAIL_FLAGS_MASK | MAIL_EXPUNGED */
	uint32_t keywords;	/* bit i = keyword_names[i] */
	uint64_t modseq;
	char *base;		/* owned */
};

/* One mailbox as this process sees it over the whole run. */
struct box_state {
	unsigned int user_idx;
	const char *name;
	struct mailbox *box;		/* NULL while closed */
	uint32_t uidvalidity;		/* 0 until first seen */
	uint32_t snap_uidnext;		/* UIDNEXT of the snapshot's view */
	uint32_t max_uidnext;		/* highest ever observed (+STATUS) */
	uint64_t max_hms;
	struct snap_record *snap;	/* owned; the last checked view */
	uint32_t snap_count;
	bool have_snap;
};

/* What our own modifying call may have changed without a sync saying so. */
struct own_changes {
	const uint32_t *uids;
	size_t count;
	bool appended;
};

struct op_stats {
	unsigned long attempts, ok, temp;
};

static struct options opt;
static struct env env;
static struct box_state states[MAX_USERS][MAILBOX_COUNT];
static int journal_fd = -1;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static unsigned long mid_counter;
static unsigned long violation_count;

/* ---- small helpers ---------------------------------------------------- */

static int64_t now_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* write_full - write all of data or die: a lost journal line is a lie */
static void write_full(int fd, const void *data, size_t size)
{
	const char *p = data;

	while (size > 0) {
		ssize_t ret = write(fd, p, size);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0)
			log_fatal("journal write failed: %s", strerror(errno));
		p += ret;
		size -= (size_t)ret;
	}
}

/* journal - one timestamped line; before a call for intents, after it for
   results. Without a journal (bench modes) lines are dropped. */
static void ATTR_FORMAT(1, 2) journal(const char *fmt, ...)
{
	struct buffer line;
	va_list args;

	if (journal_fd < 0)
		return;
	buffer_init(&line, 0);
	buffer_printf(&line, "%" PRId64 " ", now_msecs());
	va_start(args, fmt);
	buffer_vprintf(&line, fmt, args);
	va_end(args);
	buffer_append_byte(&line, '\n');
	write_full(journal_fd, line.data, line.used);
	buffer_clear(&line);
}

/* violation - an invariant broke: journal it, say it, carry on */
static void ATTR_FORMAT(1, 2) violation(const char *fmt, ...)
{
	va_list args;
	char *text;

	va_start(args, fmt);
	text = mem_vprintf(fmt, args);
	va_end(args);
	violation_count++;
	journal("violation %s", text);
	fprintf(stderr, "torture[%s]: VIOLATION: %s\n",
		opt.node != NULL ? opt.node : "-", text);
	free(text);
}

static uint64_t rng_next(void)
{
	uint64_t x = rng_state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static uint32_t rng_below(uint32_t n)
{
	return n == 0 ? 0 : (uint32_t)(rng_next() % n);
}

/* percent - true with probability p % */
static bool percent(unsigned int p)
{
	return rng_below(100) < p;
}

static const char *user_name(unsigned int idx)
{
	return opt.users[idx];
}

/* flags_string - "SAFDT" letters, "-" for none */
static const char *flags_string(uint32_t flags, char buf[8])
{
	static const char letters[] = "SAFDT";
	size_t n = 0;

	for (unsigned int i = 0; i < 5; i++) {
		if ((flags & (1U << i)) != 0)
			buf[n++] = letters[i];
	}
	if (n == 0)
		buf[n++] = '-';
	buf[n] = '\0';
	return buf;
}

/* keywords_string - "k0,k3", "-" for none */
static const char *keywords_string(uint32_t mask, char buf[32])
{
	size_t n = 0;

	for (unsigned int i = 0; i < KEYWORD_COUNT; i++) {
		if ((mask & (1U << i)) == 0)
			continue;
		n += (size_t)snprintf(buf + n, 32 - n, "%s%s",
				      n > 0 ? "," : "", keyword_names[i]);
	}
	if (n == 0)
		strcpy(buf, "-");
	return buf;
}

/* uids_string - "1,5,9" or "-" (caller frees) */
static char *uids_string(const uint32_t *uids, size_t count)
{
	struct buffer buf;

	if (count == 0)
		return mem_strdup("-");
	buffer_init(&buf, 0);
	for (size_t i = 0; i < count; i++)
		buffer_printf(&buf, "%s%u", i > 0 ? "," : "", uids[i]);
	return buffer_export(&buf, NULL);
}

static bool uid_in(const uint32_t *uids, size_t count, uint32_t uid)
{
	for (size_t i = 0; i < count; i++) {
		if (uids[i] == uid)
			return true;
	}
	return false;
}

/* ---- messages ------------------------------------------------------------ */

static uint64_t hash_string(const char *str)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *str != '\0'; str++)
		h = (h ^ (unsigned char)*str) * 0x100000001b3ULL;
	return h;
}

/* message_generate - the message (LF line ends) that mid names: headers,
   then a body derived from the id alone, so any copy can be verified */
static void message_generate(const char *mid, struct buffer *out)
{
	static const char chars[] =
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,-";
	uint64_t s = hash_string(mid) | 1;
	unsigned int lines;

	buffer_reset(out);
	buffer_printf(out, "Message-ID: %s\nFrom: torture@example.org\n"
		      "To: torture@example.org\nSubject: torture %s\n"
		      "Date: Thu, 01 Jan 2026 00:00:00 +0000\n\n", mid, mid);
	s = s * 6364136223846793005ULL + 1442695040888963407ULL;
	lines = 1 + (unsigned int)(s >> 33) % 40;
	if ((s >> 20) % 20 == 0)
		lines = 200 + (unsigned int)(s >> 40) % 3000;
	for (unsigned int i = 0; i < lines; i++) {
		unsigned int len;

		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		len = (unsigned int)(s >> 33) % 100;
		for (unsigned int j = 0; j < len; j++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			buffer_append_byte(out, (unsigned char)
					   chars[(s >> 33) % (sizeof(chars) - 1)]);
		}
		buffer_append_byte(out, '\n');
	}
}

/* message_mid_parse - the <...@torture> id on the first line, or NULL */
static char *message_mid_parse(const char *data, size_t size)
{
	static const char prefix[] = "Message-ID: <";
	const char *end;

	if (size < sizeof(prefix) || memcmp(data, prefix, sizeof(prefix) - 1) != 0)
		return NULL;
	end = memchr(data, '>', size);
	if (end == NULL || memchr(data, '\n', (size_t)(end - data)) != NULL)
		return NULL;
	return mem_strndup(data + sizeof(prefix) - 2,
			   (size_t)(end - data) - (sizeof(prefix) - 2) + 1);
}

static char *mid_next(void)
{
	return mem_printf("<%s.%ld.%lu@torture>", opt.node, (long)getpid(),
			  ++mid_counter);
}

/* message_write - feed msg to the save in random chunks, sometimes with
   CRLF line ends (so a CR and its LF may arrive in different calls) */
static int message_write(struct store_save *save, const struct buffer *msg)
{
	struct buffer crlf;
	const unsigned char *data = msg->data;
	size_t size = msg->used, pos = 0;
	int ret = STORE_OK;

	buffer_init(&crlf, 0);
	if (percent(35)) {
		for (size_t i = 0; i < msg->used; i++) {
			if (msg->data[i] == '\n')
				buffer_append_byte(&crlf, '\r');
			buffer_append_byte(&crlf, msg->data[i]);
		}
		data = crlf.data;
		size = crlf.used;
	}
	while (pos < size && ret == STORE_OK) {
		size_t chunk = percent(20) ? 1 + rng_below(7) : 1 + rng_below(4096);

		if (chunk > size - pos)
			chunk = size - pos;
		ret = store_save_write(save, data + pos, chunk);
		pos += chunk;
	}
	buffer_clear(&crlf);
	return ret;
}

/* message_read - the whole file of uid: 1 read, 0 expunged meanwhile,
   -1 another error (already reported) */
static int message_read(struct mailbox *box, uint32_t uid, struct buffer *out)
{
	struct stat st;
	unsigned char *p;
	ssize_t ret;
	int fd, result;

	buffer_reset(out);
	result = mailbox_open_message(box, uid, &fd);
	if (result == STORE_ERR_NOTFOUND)
		return 0;
	if (result != STORE_OK) {
		if (result != STORE_ERR_TEMP)
			violation("open_message %s uid %u: unexpected %s (%d)",
				  mailbox_name(box), uid,
				  store_result_name(result), result);
		return -1;
	}
	if (fstat(fd, &st) < 0 || st.st_size > 64 * 1024 * 1024) {
		violation("open_message %s uid %u: bad fd", mailbox_name(box), uid);
		close(fd);
		return -1;
	}
	p = buffer_reserve(out, (size_t)st.st_size + 1);
	ret = pread(fd, p, (size_t)st.st_size + 1, 0);
	close(fd);
	if (ret < 0) {
		violation("read of %s uid %u: %s", mailbox_name(box), uid,
			  strerror(errno));
		return -1;
	}
	buffer_commit(out, (size_t)ret);
	return 1;
}

/* message_verify - does data hold exactly the message its id names?
   NULL if so, else a static reason; *mid_r gets the id (caller frees) */
static const char *message_verify(const struct buffer *data, char **mid_r)
{
	struct buffer expected;
	const char *reason = NULL;

	*mid_r = message_mid_parse((const char *)data->data, data->used);
	if (*mid_r == NULL)
		return "no torture Message-ID on the first line";
	buffer_init(&expected, 0);
	message_generate(*mid_r, &expected);
	if (expected.used != data->used ||
	    memcmp(expected.data, data->data, data->used) != 0)
		reason = "content differs from what its Message-ID names";
	buffer_clear(&expected);
	return reason;
}

static uint64_t count_lines(const struct buffer *data)
{
	uint64_t n = 0;

	for (size_t i = 0; i < data->used; i++)
		n += data->data[i] == '\n';
	return n;
}

/* ---- the store environment ---------------------------------------------- */

static void drain_tick(struct io_request *req, int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

/* loop_drain - run the loop until the lock client's leftovers are gone */
static void loop_drain(struct ioloop *loop)
{
	struct io_request tick;

	for (int i = 0; i < 400 && ioloop_pending_count(loop) > 0; i++) {
		io_request_init(&tick, drain_tick, loop);
		io_timeout(loop, &tick, 5);
		ioloop_run(loop);
	}
}

static void env_open(void)
{
	struct ioloop_settings loop_set = { .name = "torture" };
	struct lock_client_settings lock_set = {
		.backend = opt.lock_backend, .spool_dir = opt.spool,
	};
	struct store_settings store_set = {
		.spool_dir = opt.spool,
		.node_name = opt.node,
		.lock_timeout_msecs = LOCK_TIMEOUT_MSECS,
		.log_compact_bytes = opt.compact_bytes,
		.log_writer_mark = opt.writer_mark,
	};
	char *error = NULL;

	env.pool = iopool_create(2);
	loop_set.pool = env.pool;
	env.loop = ioloop_create(&loop_set);
	lock_set.pool = env.pool;
	lock_set.dispatch_loop = env.loop;
	env.locks = lock_client_create(&lock_set, &error);
	if (env.locks == NULL)
		log_fatal("%s lock client: %s",
			  settings_lock_backend_name(opt.lock_backend), error);
	/* We get SIGKILLed: a root keeper drops our DLM lockspace
	   reference after that, as the daemon's does. */
	if (lock_client_start_keeper(env.locks, &error) < 0) {
		log_warn("%s", error);
		free(error);
	}
	env.sio = sio_create_sync(env.loop);
	store_set.locks = env.locks;
	env.store = store_create(&store_set);
	if (env.store == NULL)
		log_fatal("store_create(%s) failed", opt.spool);
}

/* env_open_users - one store_user per --users entry (created if asked) */
static int env_open_users(bool create)
{
	for (unsigned int i = 0; i < opt.user_count; i++) {
		const char *error = "";
		int ret = store_user_open(env.store, env.sio, opt.users[i],
					  create ? STORE_USER_CREATE : 0,
					  &env.users[i], &error);

		if (ret != STORE_OK) {
			fprintf(stderr, "torture: user %s: %s (%d)\n",
				opt.users[i], error, ret);
			return -1;
		}
	}
	return 0;
}

static void env_close(void)
{
	for (unsigned int i = 0; i < opt.user_count; i++) {
		for (unsigned int m = 0; m < MAILBOX_COUNT; m++) {
			struct box_state *st = &states[i][m];

			if (st->box != NULL)
				mailbox_close(&st->box);
			for (uint32_t r = 0; r < st->snap_count; r++)
				free(st->snap[r].base);
			MEM_FREE(&st->snap);
		}
		if (env.users[i] != NULL)
			store_user_close(&env.users[i]);
	}
	if (env.store != NULL)
		store_destroy(&env.store);
	sio_destroy(&env.sio);
	lock_client_destroy(&env.locks);
	loop_drain(env.loop);
	ioloop_destroy(&env.loop);
	iopool_destroy(&env.pool);
}

/* result_bad - a store call failed: TEMP is allowed (counted), anything
   else is a violation; always returns -1 */
static int result_bad(struct op_stats *stats, const char *what,
		      const char *where, int ret)
{
	if (ret == STORE_ERR_TEMP) {
		if (stats != NULL)
			stats->temp++;
		return -1;
	}
	violation("%s %s: unexpected result %s (%d)", what, where,
		  store_result_name(ret), ret);
	return -1;
}

/* ---- view checks -------------------------------------------------------- */

/* keyword_mask - the record's keywords as our bits; unknown names are a
   violation (only this program creates keywords) */
static uint32_t keyword_mask(struct box_state *st, const struct mail_record *rec)
{
	uint32_t mask = 0;

	for (unsigned int i = 0; i < STORE_MAX_KEYWORDS; i++) {
		const char *name;
		unsigned int k;

		if ((rec->keywords & (1ULL << i)) == 0)
			continue;
		name = i < mailbox_keyword_count(st->box) ?
			mailbox_keyword_name(st->box, i) : NULL;
		for (k = 0; k < KEYWORD_COUNT; k++) {
			if (name != NULL && strcmp(name, keyword_names[k]) == 0)
				break;
		}
		if (k == KEYWORD_COUNT)
			violation("%s %s uid %u: keyword bit %u is %s",
				  user_name(st->user_idx), st->name, rec->uid, i,
				  name == NULL ? "undefined" : name);
		else
			mask |= 1U << k;
	}
	return mask;
}

static bool snap_has(const struct snap_record *recs, uint32_t count,
		     uint32_t uid)
{
	uint32_t lo = 0, hi = count;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (recs[mid].uid == uid)
			return true;
		if (recs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* view_read - the open view as snapshot records, checking the view alone */
static struct snap_record *view_read(struct box_state *st, uint32_t uidnext,
				     uint64_t hms, bool no_expunge,
				     uint32_t *count_r)
{
	const char *user = user_name(st->user_idx);
	uint32_t count = mailbox_count(st->box), prev_uid = 0;
	struct snap_record *recs = mem_calloc(count + 1, sizeof(*recs));

	for (uint32_t i = 0; i < count; i++) {
		const struct mail_record *rec = mailbox_record(st->box, i);

		if (rec == NULL) {
			violation("%s %s: record %u of %u is NULL", user,
				  st->name, i, count);
			count = i;
			break;
		}
		if (rec->uid <= prev_uid)
			violation("%s %s: UID %u follows %u (not increasing)",
				  user, st->name, rec->uid, prev_uid);
		if (rec->uid >= uidnext)
			violation("%s %s: UID %u >= UIDNEXT %u", user, st->name,
				  rec->uid, uidnext);
		if (rec->modseq > hms || rec->modseq == 0)
			violation("%s %s: UID %u modseq %" PRIu64
				  " not in 1..HIGHESTMODSEQ %" PRIu64, user,
				  st->name, rec->uid, rec->modseq, hms);
		if ((rec->flags & MAIL_EXPUNGED) != 0 && !no_expunge)
			violation("%s %s: UID %u still flagged expunged after a"
				  " full sync", user, st->name, rec->uid);
		prev_uid = rec->uid;
		recs[i].uid = rec->uid;
		recs[i].flags = rec->flags & (MAIL_FLAGS_MASK | MAIL_EXPUNGED);
		recs[i].keywords = keyword_mask(st, rec);
		recs[i].modseq = rec->modseq;
		recs[i].base = mem_strdup(rec->base != NULL ? rec->base : "");
	}
	*count_r = count;
	return recs;
}

/* view_compare_record - one UID in the old and the new view */
static bool view_compare_record(struct box_state *st, const struct snap_record *o,
				const struct snap_record *n)
{
	const char *user = user_name(st->user_idx);
	bool same_state = o->keywords == n->keywords &&
		(o->flags & MAIL_FLAGS_MASK) == (n->flags & MAIL_FLAGS_MASK);

	if (n->modseq < o->modseq)
		violation("%s %s: UID %u modseq went back %" PRIu64 " -> %"
			  PRIu64, user, st->name, n->uid, o->modseq, n->modseq);
	if (!same_state && n->modseq == o->modseq)
		violation("%s %s: UID %u flags/keywords changed at the same "
			  "modseq %" PRIu64, user, st->name, n->uid, n->modseq);
	if (strcmp(o->base, n->base) != 0)
		violation("%s %s: UID %u changed file %s -> %s", user, st->name,
			  n->uid, o->base, n->base);
	return !same_state || n->modseq != o->modseq;
}

/* view_diff - old snapshot against the new view: UIDs, modseqs, and (when
   a sync reported them) the changes */
static void view_diff(struct box_state *st, const struct snap_record *nrecs,
		      uint32_t ncount, const struct mailbox_changes *ch,
		      const struct own_changes *own, bool no_expunge)
{
	const char *user = user_name(st->user_idx);
	const struct snap_record *orecs = st->snap;
	uint32_t o = 0, n = 0, added = 0;
	uint32_t old_max = st->snap_count > 0 ? orecs[st->snap_count - 1].uid : 0;

	while (o < st->snap_count || n < ncount) {
		if (n == ncount || (o < st->snap_count && orecs[o].uid < nrecs[n].uid)) {
			/* gone from the view */
			uint32_t uid = orecs[o++].uid;

			if (no_expunge)
				violation("%s %s: UID %u removed by a NO_EXPUNGE"
					  " sync", user, st->name, uid);
			else if (ch != NULL && !uid_in(ch->expunged_uids,
						       ch->expunged_count, uid) &&
				 (own == NULL || !uid_in(own->uids, own->count, uid)))
				violation("%s %s: UID %u left the view without "
					  "being reported expunged", user,
					  st->name, uid);
		} else if (o == st->snap_count || nrecs[n].uid < orecs[o].uid) {
			/* new in the view */
			uint32_t uid = nrecs[n++].uid;

			added++;
			if (uid < st->snap_uidnext || uid <= old_max)
				violation("%s %s: UID %u appeared although the "
					  "previous view had UIDNEXT %u and max "
					  "UID %u (reused, resurrected or late)",
					  user, st->name, uid, st->snap_uidnext,
					  old_max);
		} else {
			bool changed = view_compare_record(st, &orecs[o], &nrecs[n]);

			if (changed && ch != NULL &&
			    !uid_in(ch->changed_uids, ch->changed_count, nrecs[n].uid) &&
			    (own == NULL || !uid_in(own->uids, own->count, nrecs[n].uid)))
				violation("%s %s: UID %u changed (modseq %" PRIu64
					  " -> %" PRIu64 ") without being reported",
					  user, st->name, nrecs[n].uid,
					  orecs[o].modseq, nrecs[n].modseq);
			o++;
			n++;
		}
	}
	if (ch == NULL)
		return;
	for (size_t i = 0; i < ch->expunged_count; i++) {
		uint32_t uid = ch->expunged_uids[i];

		if ((i > 0 && uid <= ch->expunged_uids[i - 1]) ||
		    snap_has(nrecs, ncount, uid) ||
		    !snap_has(orecs, st->snap_count, uid))
			violation("%s %s: sync reported UID %u expunged, but it "
				  "%s", user, st->name, uid,
				  snap_has(nrecs, ncount, uid) ? "is still in the view" :
				  "was not in it (or the list is unsorted)");
	}
	if ((own == NULL || !own->appended) && ch->new_count != added)
		violation("%s %s: sync reported %u new records, the view got %u",
			  user, st->name, ch->new_count, added);
	if (ch->uidvalidity_changed || ch->deleted)
		violation("%s %s: sync reported %s", user, st->name,
			  ch->deleted ? "the mailbox deleted" :
			  "a new UIDVALIDITY");
}

/* view_check - check the open view (after open or sync) on its own and
   against the previous one, then make it the new snapshot */
static void view_check(struct box_state *st, const struct mailbox_changes *ch,
		       const struct own_changes *own, bool no_expunge)
{
	const char *user = user_name(st->user_idx);
	uint32_t uidvalidity = mailbox_uidvalidity(st->box);
	uint32_t uidnext = mailbox_uidnext(st->box);
	uint64_t hms = mailbox_highestmodseq(st->box);
	struct snap_record *recs;
	uint32_t count;

	if (st->uidvalidity == 0)
		st->uidvalidity = uidvalidity;
	else if (uidvalidity != st->uidvalidity)
		violation("%s %s: UIDVALIDITY changed %u -> %u", user, st->name,
			  st->uidvalidity, uidvalidity);
	if (hms < st->max_hms)
		violation("%s %s: HIGHESTMODSEQ went back %" PRIu64 " -> %"
			  PRIu64, user, st->name, st->max_hms, hms);
	if (uidnext < st->max_uidnext)
		violation("%s %s: UIDNEXT went back %u -> %u", user, st->name,
			  st->max_uidnext, uidnext);
	recs = view_read(st, uidnext, hms, no_expunge, &count);
	if (st->have_snap)
		view_diff(st, recs, count, ch, own, no_expunge);
	for (uint32_t i = 0; i < st->snap_count; i++)
		free(st->snap[i].base);
	free(st->snap);
	st->snap = recs;
	st->snap_count = count;
	st->snap_uidnext = uidnext;
	st->have_snap = true;
	if (hms > st->max_hms)
		st->max_hms = hms;
	if (uidnext > st->max_uidnext)
		st->max_uidnext = uidnext;
	journal("view %s %s %u %u %" PRIu64 " %u", user, st->name, uidvalidity,
		uidnext, hms, count);
}

/* box_sync - sync an open view and check it; closes it on failure */
static int box_sync(struct box_state *st, const struct own_changes *own,
		    struct op_stats *stats)
{
	struct mailbox_changes changes;
	bool no_expunge = own == NULL && percent(10);
	int ret;

	memset(&changes, 0, sizeof(changes));
	ret = mailbox_sync(st->box, no_expunge ? MAILBOX_SYNC_NO_EXPUNGE : 0,
			   &changes);
	if (ret != STORE_OK) {
		mailbox_close(&st->box);
		return result_bad(stats, "mailbox_sync", st->name, ret);
	}
	view_check(st, &changes, own, no_expunge);
	mailbox_changes_free(&changes);
	return 0;
}

/* box_ready - open the mailbox, or sync it if it is open */
static int box_ready(struct box_state *st, struct op_stats *stats)
{
	int ret;

	if (st->box != NULL)
		return box_sync(st, NULL, stats);
	ret = mailbox_open(env.users[st->user_idx], st->name, 0, &st->box);
	if (ret != STORE_OK) {
		st->box = NULL;
		return result_bad(stats, "mailbox_open", st->name, ret);
	}
	view_check(st, NULL, NULL, false);
	return 0;
}

/* cache_check - the message cache (store.h) must hold for uid either
   nothing or the id read from its file, whichever process wrote it,
   through kills, compactions and torn writes; remember it if absent,
   and sometimes write the pending values at once */
static unsigned long cache_lookups, cache_hits;

static void cache_check(struct box_state *st, uint32_t uid, const char *mid)
{
	const void *data;
	size_t size;

	cache_lookups++;
	if (mailbox_cache_lookup(st->box, uid, MAIL_CACHE_ENVELOPE, &data,
				 &size) == 1) {
		cache_hits++;
		if (size != strlen(mid) || memcmp(data, mid, size) != 0)
			violation("%s %s uid %u: the message cache holds "
				  "\"%.*s\", the file is %s",
				  user_name(st->user_idx), st->name, uid,
				  (int)(size > 80 ? 80 : size),
				  (const char *)data, mid);
		return;
	}
	mailbox_cache_add(st->box, uid, MAIL_CACHE_ENVELOPE, mid, strlen(mid));
	if (rng_below(8) == 0 && mailbox_cache_flush(st->box) != STORE_OK)
		violation("%s %s: mailbox_cache_flush failed: %s",
			  user_name(st->user_idx), st->name,
			  store_user_error(env.users[st->user_idx]));
}

/* record_seen - read the id of a message in the view and journal it;
   1 seen, 0 gone meanwhile, -1 error */
static int record_seen(struct box_state *st, const struct snap_record *rec,
		       char **mid_r)
{
	struct buffer data;
	char flags[8], kw[32];
	int ret;

	*mid_r = NULL;
	buffer_init(&data, 0);
	ret = message_read(st->box, rec->uid, &data);
	if (ret > 0) {
		*mid_r = message_mid_parse((const char *)data.data, data.used);
		if (*mid_r == NULL) {
			violation("%s %s uid %u: file has no torture Message-ID",
				  user_name(st->user_idx), st->name, rec->uid);
			ret = -1;
		} else {
			journal("seen %s %s %u %u %s %" PRIu64 " %s %s",
				user_name(st->user_idx), st->name,
				st->uidvalidity, rec->uid, *mid_r, rec->modseq,
				flags_string(rec->flags, flags),
				keywords_string(rec->keywords, kw));
			cache_check(st, rec->uid, *mid_r);
		}
	}
	buffer_clear(&data);
	return ret;
}

/* pick_uids - up to max random live UIDs of the view whose ids could be
   read (and were journaled); their ids in mids_r (caller frees) */
static size_t pick_uids(struct box_state *st, size_t max, uint32_t *uids_r,
			char **mids_r)
{
	size_t count = 0;

	for (size_t tries = 0; tries < max * 2 && count < max; tries++) {
		const struct snap_record *rec;
		char *mid;

		if (st->snap_count == 0)
			break;
		rec = &st->snap[rng_below(st->snap_count)];
		if ((rec->flags & MAIL_EXPUNGED) != 0 ||
		    uid_in(uids_r, count, rec->uid))
			continue;
		if (record_seen(st, rec, &mid) <= 0)
			continue;
		uids_r[count] = rec->uid;
		mids_r[count++] = mid;
	}
	/* ascending, as IMAP clients send sets */
	for (size_t i = 1; i < count; i++) {
		for (size_t j = i; j > 0 && uids_r[j - 1] > uids_r[j]; j--) {
			uint32_t u = uids_r[j];
			char *m = mids_r[j];

			uids_r[j] = uids_r[j - 1];
			mids_r[j] = mids_r[j - 1];
			uids_r[j - 1] = u;
			mids_r[j - 1] = m;
		}
	}
	return count;
}

static void mids_free(char **mids, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(mids[i]);
}

/* ---- operations ---------------------------------------------------------- */

enum op_id {
	OP_DELIVER, OP_DELIVER2, OP_APPEND, OP_STORE, OP_EXPUNGE, OP_COPY,
	OP_MOVE, OP_READ, OP_STATUS, OP_REOPEN, OP_CHURN, OP_COUNT
};
static const char *const op_names[OP_COUNT] = {
	"deliver", "deliver2", "append", "store", "expunge", "copy", "move",
	"read", "status", "reopen", "churn",
};
static const unsigned int op_weights[OP_COUNT] = {
	18, 5, 12, 18, 12, 7, 7, 8, 4, 5, 6,
};

/* Mailboxes that come and go (op_churn), first user only. Not in
   torture_mailboxes: their messages may vanish with them, so
   check-spool.py proves less about them (see its head). */
#define CHURN_PREFIX "Tmp/"
static const char *const churn_mailboxes[] = { "Tmp/A", "Tmp/B" };
static struct op_stats op_stats[OP_COUNT];

static struct box_state *pick_box(void)
{
	return &states[rng_below(opt.user_count)][rng_below(MAILBOX_COUNT)];
}

static void save_options_random(struct store_save_options *opts,
				const char **keywords)
{
	memset(opts, 0, sizeof(*opts));
	if (percent(20))
		opts->flags = percent(50) ? MAIL_SEEN : MAIL_FLAGGED | MAIL_SEEN;
	if (percent(15)) {
		keywords[0] = keyword_names[rng_below(KEYWORD_COUNT)];
		keywords[1] = NULL;
		opts->keywords = keywords;
	}
	if (percent(10))
		opts->internaldate = 1700000000 + rng_below(1000000);
}

/* save_prepare - a finished save holding a new message; NULL on failure */
static struct store_save *save_prepare(struct store_user *user,
				       const struct buffer *msg,
				       struct op_stats *stats)
{
	struct store_save *save;
	int ret;

	save = store_save_begin(user, &ret);
	if (save == NULL) {
		result_bad(stats, "store_save_begin", store_user_name(user), ret);
		return NULL;
	}
	ret = message_write(save, msg);
	if (ret == STORE_OK)
		ret = store_save_finish(save);
	if (ret != STORE_OK) {
		result_bad(stats, "store_save_write/finish",
			   store_user_name(user), ret);
		store_save_free(&save);
		return NULL;
	}
	if (store_save_vsize(save) != msg->used + count_lines(msg))
		violation("save vsize %" PRIu64 ", expected %" PRIu64,
			  store_save_vsize(save), msg->used + count_lines(msg));
	return save;
}

/* op_deliver - LDA/LMTP delivery into one or two (user, mailbox) targets;
   the UID comes with a later sync, so the ack names the message id */
static int op_deliver(unsigned int targets, struct op_stats *stats)
{
	unsigned int from = rng_below(opt.user_count), to[2], box[2];
	struct store_save_options opts;
	const char *keywords[2];
	struct store_save *save;
	struct buffer msg;
	char *mid = mid_next();
	int result = 0;

	buffer_init(&msg, 0);
	message_generate(mid, &msg);
	save_options_random(&opts, keywords);
	save = save_prepare(env.users[from], &msg, stats);
	for (unsigned int t = 0; save != NULL && t < targets; t++) {
		const char *name;
		int ret;

		do {
			to[t] = rng_below(opt.user_count);
			box[t] = percent(70) ? 0 : rng_below(MAILBOX_COUNT);
		} while (t == 1 && to[1] == to[0] && box[1] == box[0]);
		name = torture_mailboxes[box[t]];
		journal("deliver-intent %s %s %s %s", mid, user_name(from),
			user_name(to[t]), name);
		ret = store_save_deliver(save, env.users[to[t]],
					 box[t] == 0 && percent(50) ? NULL : name,
					 &opts);
		if (ret == STORE_OK) {
			journal("deliver-ack %s %s %s", mid, user_name(to[t]), name);
		} else {
			journal("deliver-fail %s %s %s %d", mid,
				user_name(to[t]), name, ret);
			result = result_bad(stats, "store_save_deliver", name, ret);
		}
	}
	if (save != NULL)
		store_save_free(&save);
	else
		result = -1;
	buffer_clear(&msg);
	free(mid);
	return result;
}

/* churn_deliver - a delivery into a mailbox that may vanish any time;
   NOTFOUND is a fine answer */
static int churn_deliver(const char *name, struct op_stats *stats)
{
	struct store_save_options opts;
	const char *keywords[2];
	struct store_save *save;
	struct buffer msg;
	char *mid = mid_next();
	int ret;

	buffer_init(&msg, 0);
	message_generate(mid, &msg);
	save_options_random(&opts, keywords);
	save = save_prepare(env.users[0], &msg, stats);
	ret = save == NULL ? -1 : STORE_OK;
	if (save != NULL) {
		/* Before the call: a message found later must have been
		   meant for a churn mailbox. */
		journal("churn intent %s %s", mid, name);
		ret = store_save_deliver(save, env.users[0], name, &opts);
		journal("churn deliver %s %s %d", mid, name, ret);
		store_save_free(&save);
		if (ret == STORE_ERR_NOTFOUND)
			ret = STORE_OK;
		else if (ret != STORE_OK)
			ret = result_bad(stats, "churn deliver", name, ret);
	}
	buffer_clear(&msg);
	free(mid);
	return ret;
}

/* churn_read - open, read, flag and sync a mailbox that another process
   may delete or rename meanwhile: NOTFOUND at any step is fine, anything
   else but OK or TEMP is not; what is read must be intact */
static int churn_read(const char *name, struct op_stats *stats)
{
	struct mailbox *box;
	struct buffer data;
	const char *reason;
	char *mid = NULL;
	uint32_t uid;
	int ret;

	ret = mailbox_open(env.users[0], name, 0, &box);
	if (ret != STORE_OK)
		return ret == STORE_ERR_NOTFOUND ? 0 :
			result_bad(stats, "churn open", name, ret);
	ret = STORE_OK;
	if (mailbox_count(box) > 0) {
		uid = mailbox_record(box, rng_below(mailbox_count(box)))->uid;
		buffer_init(&data, 0);
		if (message_read(box, uid, &data) > 0 &&
		    (reason = message_verify(&data, &mid)) != NULL)
			violation("churn %s uid %u: %s", name, uid, reason);
		free(mid);
		buffer_clear(&data);
		ret = mailbox_store(box, &uid, 1, MAILBOX_STORE_ADD, MAIL_SEEN,
				    NULL, 0, NULL, NULL);
	}
	if (ret == STORE_OK)
		ret = mailbox_sync(box, 0, NULL);
	mailbox_close(&box);
	if (ret == STORE_OK || ret == STORE_ERR_NOTFOUND)
		return 0;
	return result_bad(stats, "churn read", name, ret);
}

/* op_churn - create, delete and rename (Tmp/A <-> Tmp/B) mailboxes while
   other processes deliver into them and read them: NOTFOUND and EXISTS
   are what the races make of them */
static int op_churn(struct op_stats *stats)
{
	struct store_user *user = env.users[0];
	unsigned int i = rng_below(2);
	const char *a = churn_mailboxes[i], *b = churn_mailboxes[1 - i];
	int ret;

	/* Creates and deliveries outnumber deletes: at the end there are
	   usually churn mailboxes with messages to check. */
	switch (rng_below(10)) {
	case 0:
		return churn_read(a, stats);
	case 1:
	case 2:
		ret = store_mailbox_create(user, a, 0);
		journal("churn create %s %d", a, ret);
		break;
	case 3:
		ret = store_mailbox_delete(user, a);
		journal("churn delete %s %d", a, ret);
		break;
	case 4:
		ret = store_mailbox_rename(user, a, b);
		journal("churn rename %s %s %d", a, b, ret);
		break;
	default:
		return churn_deliver(a, stats);
	}
	if (ret == STORE_OK || ret == STORE_ERR_NOTFOUND ||
	    ret == STORE_ERR_EXISTS)
		return 0;
	return result_bad(stats, "churn", a, ret);
}

/* op_append - APPEND into an open mailbox: the UID is known at the ack */
static int op_append(struct box_state *st, struct op_stats *stats)
{
	const char *user = user_name(st->user_idx);
	struct own_changes own = { .appended = true };
	struct store_save_options opts;
	uint32_t uid = 0, uidvalidity = 0, uidnext_before;
	const char *keywords[2];
	struct store_save *save;
	struct buffer msg;
	char *mid, *seen_mid = NULL;
	int ret;

	if (box_ready(st, stats) < 0)
		return -1;
	mid = mid_next();
	buffer_init(&msg, 0);
	message_generate(mid, &msg);
	save_options_random(&opts, keywords);
	save = save_prepare(env.users[st->user_idx], &msg, stats);
	buffer_clear(&msg);
	if (save == NULL) {
		free(mid);
		return -1;
	}
	uidnext_before = st->snap_uidnext;
	journal("append-intent %s %s %s", mid, user, st->name);
	ret = store_save_append(save, st->box, &opts, &uid, &uidvalidity);
	store_save_free(&save);
	if (ret != STORE_OK) {
		journal("append-fail %s %s %s %d", mid, user, st->name, ret);
		free(mid);
		result_bad(stats, "store_save_append", st->name, ret);
		if (st->box != NULL)
			box_sync(st, &own, NULL);
		return -1;
	}
	journal("append-ack %s %s %s %u %u", mid, user, st->name, uidvalidity, uid);
	if (uidvalidity != st->uidvalidity || uid < uidnext_before)
		violation("%s %s: APPEND got UID %u/UIDVALIDITY %u; the view "
			  "had UIDNEXT %u/UIDVALIDITY %u", user, st->name, uid,
			  uidvalidity, uidnext_before, st->uidvalidity);
	if (box_sync(st, &own, NULL) == 0 && snap_has(st->snap, st->snap_count, uid)) {
		for (uint32_t i = 0; i < st->snap_count; i++) {
			if (st->snap[i].uid == uid &&
			    record_seen(st, &st->snap[i], &seen_mid) > 0 &&
			    strcmp(seen_mid, mid) != 0)
				violation("%s %s: appended %s as UID %u, the UID "
					  "holds %s", user, st->name, mid, uid,
					  seen_mid);
		}
	}
	free(seen_mid);
	free(mid);
	return 0;
}

static const char *const store_mode_names[] = { "add", "remove", "replace" };

/* op_store - STORE flags/keywords on a few UIDs, sometimes UNCHANGEDSINCE */
static int op_store(struct box_state *st, struct op_stats *stats)
{
	const char *user = user_name(st->user_idx);
	uint32_t uids[MAX_PICK], flags = 0, kwmask = 0, *failed = NULL;
	const char *keywords[KEYWORD_COUNT + 1];
	char *mids[MAX_PICK], *list, fl[8], kw[32];
	enum mailbox_store_mode mode = (enum mailbox_store_mode)rng_below(3);
	uint64_t unchangedsince = 0;
	size_t count, kwcount = 0, failed_count = 0;
	struct own_changes own;
	int ret;

	if (box_ready(st, stats) < 0)
		return -1;
	count = pick_uids(st, 1 + rng_below(MAX_PICK), uids, mids);
	if (count == 0)
		return 0;
	flags = (uint32_t)rng_next() & (MAIL_SEEN | MAIL_ANSWERED |
					 MAIL_FLAGGED | MAIL_DRAFT);
	if (percent(15))
		flags |= MAIL_DELETED;
	for (unsigned int k = 0; k < KEYWORD_COUNT; k++) {
		if (percent(20)) {
			keywords[kwcount++] = keyword_names[k];
			kwmask |= 1U << k;
		}
	}
	keywords[kwcount] = NULL;
	if (percent(25)) {
		for (uint32_t i = 0; i < st->snap_count; i++) {
			if (st->snap[i].uid == uids[0])
				unchangedsince = st->snap[i].modseq;
		}
	}
	list = uids_string(uids, count);
	journal("store-intent %s %s %s %s %s %" PRIu64 " %s", user, st->name,
		store_mode_names[mode], flags_string(flags, fl),
		keywords_string(kwmask, kw), unchangedsince, list);
	ret = mailbox_store(st->box, uids, count, mode, flags,
			    kwcount > 0 ? keywords : NULL, unchangedsince,
			    &failed, &failed_count);
	own.uids = uids;
	own.count = count;
	own.appended = false;
	if (ret == STORE_OK) {
		char *failed_list = uids_string(failed, failed_count);

		journal("store-ack %s %s %s", user, st->name, failed_list);
		free(failed_list);
		for (size_t i = 0; i < failed_count; i++) {
			if (!uid_in(uids, count, failed[i]) || unchangedsince == 0)
				violation("%s %s: STORE %s (unchangedsince %"
					  PRIu64 ") failed UID %u", user,
					  st->name, list, unchangedsince,
					  failed[i]);
		}
	} else {
		journal("store-fail %s %s %d", user, st->name, ret);
		result_bad(stats, "mailbox_store", st->name, ret);
	}
	free(failed);
	free(list);
	mids_free(mids, count);
	if (st->box != NULL)
		box_sync(st, &own, NULL);
	return ret == STORE_OK ? 0 : -1;
}

/* op_expunge - by UID, or (half the time) every \Deleted message; for the
   latter the ids of the \Deleted messages in the view are journaled */
static int op_expunge(struct box_state *st, struct op_stats *stats)
{
	const char *user = user_name(st->user_idx);
	uint32_t uids[MAX_EXPUNGE], *expunged = NULL;
	size_t count = 0, expunged_count = 0;
	bool by_uid = percent(50);
	struct own_changes own;
	char *mids[MAX_EXPUNGE], *list;
	int ret;

	if (box_ready(st, stats) < 0)
		return -1;
	if (by_uid) {
		count = pick_uids(st, st->snap_count > LARGE_MAILBOX ?
				  1 + rng_below(MAX_EXPUNGE) : 1 + rng_below(3),
				  uids, mids);
		if (count == 0)
			return 0;
		list = uids_string(uids, count);
	} else {
		for (uint32_t i = 0; i < st->snap_count; i++) {
			char *mid;

			if ((st->snap[i].flags & MAIL_DELETED) != 0 &&
			    record_seen(st, &st->snap[i], &mid) > 0)
				free(mid);
		}
		list = mem_strdup("deleted");
	}
	journal("expunge-intent %s %s %s", user, st->name, list);
	ret = mailbox_expunge(st->box, by_uid ? uids : NULL, count,
			      &expunged, &expunged_count);
	free(list);
	mids_free(mids, count);
	if (ret != STORE_OK) {
		journal("expunge-fail %s %s %d", user, st->name, ret);
		result_bad(stats, "mailbox_expunge", st->name, ret);
		/* it may have happened: let a sync report nothing of it */
		own.uids = by_uid ? uids : NULL;
		own.count = count;
		own.appended = false;
		if (st->box != NULL && !by_uid)
			mailbox_close(&st->box);
		else if (st->box != NULL)
			box_sync(st, &own, NULL);
		return -1;
	}
	list = uids_string(expunged, expunged_count);
	journal("expunge-ack %s %s %s", user, st->name, list);
	for (size_t i = 0; i < expunged_count; i++) {
		if ((by_uid && !uid_in(uids, count, expunged[i])) ||
		    (i > 0 && expunged[i] <= expunged[i - 1]))
			violation("%s %s: EXPUNGE reported %s (unsorted or not"
				  " asked for)", user, st->name, list);
	}
	free(list);
	own.uids = expunged;
	own.count = expunged_count;
	own.appended = false;
	if (box_sync(st, &own, NULL) == 0) {
		for (size_t i = 0; i < expunged_count; i++) {
			if (snap_has(st->snap, st->snap_count, expunged[i]))
				violation("%s %s: UID %u in the view after its"
					  " expunge was acknowledged", user,
					  st->name, expunged[i]);
		}
	}
	free(expunged);
	return 0;
}

/* copy_check_target - read the copies in the target and compare ids */
static void copy_check_target(struct box_state *dst, const uint32_t *src_uids,
			      const uint32_t *dst_uids, size_t count,
			      const uint32_t *picked, char **mids, size_t picked_count)
{
	if (box_ready(dst, NULL) < 0)
		return;
	for (size_t i = 0; i < count; i++) {
		const char *want = NULL;
		char *mid;

		for (size_t p = 0; p < picked_count; p++) {
			if (picked[p] == src_uids[i])
				want = mids[p];
		}
		for (uint32_t r = 0; r < dst->snap_count; r++) {
			if (dst->snap[r].uid != dst_uids[i] ||
			    record_seen(dst, &dst->snap[r], &mid) <= 0)
				continue;
			if (want != NULL && strcmp(want, mid) != 0)
				violation("%s %s: copy of %s became UID %u, which"
					  " holds %s", user_name(dst->user_idx),
					  dst->name, want, dst_uids[i], mid);
			free(mid);
		}
	}
}

/* op_copy - COPY or MOVE a few UIDs to another mailbox of the same user */
static int op_copy(struct box_state *st, bool move, struct op_stats *stats)
{
	const char *user = user_name(st->user_idx);
	struct box_state *dst = &states[st->user_idx][rng_below(MAILBOX_COUNT)];
	uint32_t uids[MAX_PICK], *src_uids = NULL, *dst_uids = NULL;
	uint32_t dst_uidvalidity = 0;
	size_t count, copied = 0;
	struct own_changes own;
	struct buffer pairs;
	char *mids[MAX_PICK], *list;
	int ret;

	if (dst == st)
		dst = &states[st->user_idx][(st - states[st->user_idx] + 1) % MAILBOX_COUNT];
	if (box_ready(st, stats) < 0)
		return -1;
	count = pick_uids(st, 1 + rng_below(4), uids, mids);
	if (count == 0)
		return 0;
	list = uids_string(uids, count);
	journal("copy-intent %s %s %s %d %s", user, st->name, dst->name,
		move ? 1 : 0, list);
	ret = mailbox_copy(st->box, uids, count, dst->name, move,
			   &dst_uidvalidity, &src_uids, &dst_uids, &copied);
	own.uids = uids;
	own.count = count;
	own.appended = false;
	if (ret != STORE_OK) {
		journal("copy-fail %s %s %s %d", user, st->name, dst->name, ret);
		result_bad(stats, "mailbox_copy", st->name, ret);
		if (st->box != NULL)
			box_sync(st, &own, NULL);
		free(list);
		mids_free(mids, count);
		return -1;
	}
	buffer_init(&pairs, 0);
	for (size_t i = 0; i < copied; i++)
		buffer_printf(&pairs, "%s%u:%u", i > 0 ? "," : "", src_uids[i],
			      dst_uids[i]);
	journal("copy-ack %s %s %s %d %u %s", user, st->name, dst->name,
		move ? 1 : 0, dst_uidvalidity,
		copied > 0 ? buffer_cstr(&pairs) : "-");
	buffer_clear(&pairs);
	if (dst->uidvalidity != 0 && dst_uidvalidity != dst->uidvalidity)
		violation("%s: COPY to %s reported UIDVALIDITY %u, known %u",
			  user, dst->name, dst_uidvalidity, dst->uidvalidity);
	for (size_t i = 0; i < copied; i++) {
		if (!uid_in(uids, count, src_uids[i]))
			violation("%s %s: COPY %s reported source UID %u",
				  user, st->name, list, src_uids[i]);
	}
	if (box_sync(st, &own, NULL) == 0 && move) {
		for (size_t i = 0; i < copied; i++) {
			if (snap_has(st->snap, st->snap_count, src_uids[i]))
				violation("%s %s: UID %u in the view after MOVE"
					  " was acknowledged", user, st->name,
					  src_uids[i]);
		}
	}
	copy_check_target(dst, src_uids, dst_uids, copied, uids, mids, count);
	free(src_uids);
	free(dst_uids);
	free(list);
	mids_free(mids, count);
	return 0;
}

/* op_read - read one message in full and check it against its id */
static int op_read(struct box_state *st, struct op_stats *stats)
{
	const struct snap_record *rec;
	struct buffer data;
	const char *reason;
	char *mid = NULL;
	int ret;

	if (box_ready(st, stats) < 0)
		return -1;
	if (st->snap_count == 0)
		return 0;
	rec = &st->snap[rng_below(st->snap_count)];
	buffer_init(&data, 0);
	ret = message_read(st->box, rec->uid, &data);
	if (ret > 0 && (reason = message_verify(&data, &mid)) != NULL)
		violation("%s %s uid %u (%s): %s", user_name(st->user_idx),
			  st->name, rec->uid, mid != NULL ? mid : "?", reason);
	free(mid);
	buffer_clear(&data);
	return ret < 0 ? -1 : 0;
}

/* op_status - STATUS must never be behind what this process has seen */
static int op_status(struct box_state *st, struct op_stats *stats)
{
	const char *user = user_name(st->user_idx);
	struct store_status status;
	int ret;

	ret = store_mailbox_status(env.users[st->user_idx], st->name, &status);
	if (ret != STORE_OK)
		return result_bad(stats, "store_mailbox_status", st->name, ret);
	journal("status %s %s %u %u %" PRIu64 " %u", user, st->name,
		status.uidvalidity, status.uidnext, status.highestmodseq,
		status.messages);
	if ((st->uidvalidity != 0 && status.uidvalidity != st->uidvalidity) ||
	    status.uidnext < st->max_uidnext || status.highestmodseq < st->max_hms)
		violation("%s %s: STATUS UIDVALIDITY %u UIDNEXT %u HMS %" PRIu64
			  " is behind what was seen (%u %u %" PRIu64 ")", user,
			  st->name, status.uidvalidity, status.uidnext,
			  status.highestmodseq, st->uidvalidity,
			  st->max_uidnext, st->max_hms);
	if (status.uidnext > st->max_uidnext)
		st->max_uidnext = status.uidnext;
	if (status.highestmodseq > st->max_hms)
		st->max_hms = status.highestmodseq;
	return 0;
}

/* op_reopen - close (if open) and open again: a fresh SELECT */
static int op_reopen(struct box_state *st, struct op_stats *stats)
{
	if (st->box != NULL)
		mailbox_close(&st->box);
	return box_ready(st, stats);
}

static enum op_id op_pick(void)
{
	unsigned int total = 0, r;

	for (unsigned int i = 0; i < OP_COUNT; i++)
		total += op_weights[i];
	r = rng_below(total);
	for (unsigned int i = 0; i < OP_COUNT; i++) {
		if (r < op_weights[i])
			return (enum op_id)i;
		r -= op_weights[i];
	}
	return OP_DELIVER;
}

static int op_run(enum op_id id)
{
	struct op_stats *stats = &op_stats[id];
	struct box_state *st = pick_box();

	stats->attempts++;
	switch (id) {
	case OP_DELIVER: return op_deliver(1, stats);
	case OP_DELIVER2: return op_deliver(opt.user_count > 1 ? 2 : 1, stats);
	case OP_APPEND: return op_append(st, stats);
	case OP_STORE: return op_store(st, stats);
	case OP_EXPUNGE:
		/* Deliveries favour INBOX: expunge the fullest mailbox half
		   the time, so that no mailbox grows without bound. */
		if (percent(50)) {
			for (unsigned int m = 0; m < MAILBOX_COUNT; m++) {
				struct box_state *other = &states[st->user_idx][m];

				if (other->snap_count > st->snap_count)
					st = other;
			}
		}
		return op_expunge(st, stats);
	case OP_COPY: return op_copy(st, false, stats);
	case OP_MOVE: return op_copy(st, true, stats);
	case OP_READ: return op_read(st, stats);
	case OP_STATUS: return op_status(st, stats);
	case OP_REOPEN: return op_reopen(st, stats);
	case OP_CHURN: return op_churn(stats);
	case OP_COUNT: break;
	}
	log_panic("op_run: bad op %d", id);
}

/* ---- modes ------------------------------------------------------------- */

static void states_init(void)
{
	for (unsigned int u = 0; u < opt.user_count; u++) {
		for (unsigned int m = 0; m < MAILBOX_COUNT; m++) {
			states[u][m].user_idx = u;
			states[u][m].name = torture_mailboxes[m];
		}
	}
}

/* mode_init - create the users and mailboxes; journal their UIDVALIDITY */
static int mode_init(void)
{
	int status = 0;

	if (env_open_users(true) < 0)
		return EXIT_SETUP;
	for (unsigned int u = 0; u < opt.user_count; u++) {
		for (unsigned int m = 0; m < MAILBOX_COUNT; m++) {
			struct box_state *st = &states[u][m];
			int ret = STORE_OK;

			if (m > 0)
				ret = store_mailbox_create(env.users[u], st->name, 0);
			if (ret != STORE_OK && ret != STORE_ERR_EXISTS) {
				fprintf(stderr, "torture: create %s %s: %s (%d)\n",
					opt.users[u], st->name,
					store_user_error(env.users[u]), ret);
				status = EXIT_SETUP;
				continue;
			}
			if (box_ready(st, NULL) < 0) {
				status = EXIT_SETUP;
				continue;
			}
			journal("init %s %s %u %u %" PRIu64, opt.users[u],
				st->name, st->uidvalidity, st->snap_uidnext,
				st->max_hms);
		}
	}
	return status != 0 ? status : violation_count > 0 ? 1 : 0;
}

/* mode_run - random operations until the deadline */
static int mode_run(void)
{
	unsigned long ops = 0;
	struct buffer line;

	if (env_open_users(false) < 0)
		return EXIT_SETUP;
	journal("start %s %ld %" PRIu64, opt.node, (long)getpid(), opt.seed);
	while (now_msecs() < opt.deadline_msecs) {
		enum op_id id = op_pick();

		if (op_run(id) == 0)
			op_stats[id].ok++;
		ops++;
	}
	/* Leave something in the churn mailboxes for check-spool.py. */
	for (unsigned int i = 0; i < N_ELEMENTS(churn_mailboxes); i++)
		(void)churn_deliver(churn_mailboxes[i], &op_stats[OP_CHURN]);
	buffer_init(&line, 0);
	for (unsigned int i = 0; i < OP_COUNT; i++)
		buffer_printf(&line, " %s=%lu/%lu/%lu", op_names[i],
			      op_stats[i].ok, op_stats[i].attempts,
			      op_stats[i].temp);
	buffer_printf(&line, " cache=%lu/%lu", cache_hits, cache_lookups);
	journal("end ops=%lu violations=%lu%s", ops, violation_count,
		buffer_cstr(&line));
	buffer_clear(&line);
	return 0;
}

static void dump_report(const char *mailbox, const char *problem, void *context)
{
	const char **where = context;

	printf("check-problem %s %s %s %s\n", where[0], where[1], mailbox, problem);
}

/* dump_check - store_index_check of one mailbox, problems on stdout */
static void dump_check(const char *phase, unsigned int u, const char *name)
{
	const char *where[2] = { phase, opt.users[u] };
	unsigned int problems = 0;
	int ret;

	ret = store_index_check(env.users[u], name, dump_report, where, &problems);
	printf("check %s %s %s %d %u\n", phase, opt.users[u], name, ret, problems);
}

/* dump_mailbox - the final state of one mailbox, every message verified */
static void dump_mailbox(unsigned int u, const char *name)
{
	struct store_status status;
	struct mailbox *box;
	struct buffer data;
	char fl[8];
	int ret;

	dump_check("pre", u, name);
	ret = mailbox_open(env.users[u], name, 0, &box);
	if (ret != STORE_OK) {
		printf("open-failed %s %s %d\n", opt.users[u], name, ret);
		return;
	}
	printf("mailbox %s %s %u %u %" PRIu64 " %u\n", opt.users[u], name,
	       mailbox_uidvalidity(box), mailbox_uidnext(box),
	       mailbox_highestmodseq(box), mailbox_count(box));
	buffer_init(&data, 0);
	for (uint32_t i = 0; i < mailbox_count(box); i++) {
		const struct mail_record *rec = mailbox_record(box, i);
		const char *reason = NULL;
		char *mid = NULL;

		if (rec == NULL)
			break;
		ret = message_read(box, rec->uid, &data);
		if (ret <= 0)
			reason = "file-unreadable";
		else if ((reason = message_verify(&data, &mid)) != NULL)
			reason = "content-mismatch";
		else if (rec->size != data.used)
			reason = "size-mismatch";
		else if (rec->vsize != data.used + count_lines(&data))
			reason = "vsize-mismatch";
		printf("msg %s %s %u %" PRIu64 " %s %s %s\n", opt.users[u], name,
		       rec->uid, rec->modseq, flags_string(rec->flags, fl),
		       mid != NULL ? mid : "-", reason != NULL ? reason : "ok");
		free(mid);
	}
	buffer_clear(&data);
	mailbox_close(&box);
	ret = store_mailbox_status(env.users[u], name, &status);
	printf("status %s %s %d %u %u %u %" PRIu64 " %u\n", opt.users[u], name,
	       ret, status.messages, status.uidvalidity, status.uidnext,
	       status.highestmodseq, status.pending);
	dump_check("post", u, name);
}

/* dump_churn_mailbox - a churn mailbox, if entry is one: opened first,
   which completes a create that a kill interrupted (a directory without
   metadata is rebuilt, with a log line) */
static void dump_churn_mailbox(unsigned int u, const struct store_list_entry *entry)
{
	struct mailbox *box;

	if (strncmp(entry->name, CHURN_PREFIX, strlen(CHURN_PREFIX)) != 0 ||
	    (entry->attrs & STORE_LIST_NONEXISTENT) != 0)
		return;
	if (mailbox_open(env.users[u], entry->name, 0, &box) == STORE_OK)
		mailbox_close(&box);
	dump_mailbox(u, entry->name);
}

/* mode_dump - the final state for check-spool.py */
static int mode_dump(void)
{
	if (env_open_users(false) < 0)
		return EXIT_SETUP;
	for (unsigned int u = 0; u < opt.user_count; u++) {
		struct store_list_entry *entries = NULL;
		size_t count = 0;
		int ret = store_list(env.users[u], &entries, &count);

		printf("list %s %d", opt.users[u], ret);
		for (size_t i = 0; ret == STORE_OK && i < count; i++)
			printf(" %s", entries[i].name);
		printf("\n");
		for (unsigned int m = 0; m < MAILBOX_COUNT; m++)
			dump_mailbox(u, torture_mailboxes[m]);
		for (size_t i = 0; ret == STORE_OK && i < count; i++)
			dump_churn_mailbox(u, &entries[i]);
		if (ret == STORE_OK)
			store_list_free(entries, count);
	}
	fflush(stdout);
	return 0;
}

/* mode_bench_open - SELECT-equivalent: open+sync, then a re-sync */
static int mode_bench_open(void)
{
	const char *name = opt.mailbox != NULL ? opt.mailbox : "INBOX";
	struct mailbox *box;
	double t0, t1, t2;
	int ret;

	t0 = mono_secs();
	if (env_open_users(false) < 0)
		return EXIT_SETUP;
	ret = mailbox_open(env.users[0], name, 0, &box);
	t1 = mono_secs();
	if (ret != STORE_OK) {
		fprintf(stderr, "torture: open %s: %s\n", name,
			store_user_error(env.users[0]));
		return 1;
	}
	ret = mailbox_sync(box, 0, NULL);
	t2 = mono_secs();
	printf("open_ms=%.1f resync_ms=%.2f messages=%u uidnext=%u\n",
	       (t1 - t0) * 1e3, (t2 - t1) * 1e3, mailbox_count(box),
	       mailbox_uidnext(box));
	mailbox_close(&box);
	return ret == STORE_OK ? 0 : 1;
}

/* read_stdin - the whole of stdin */
static void read_stdin(struct buffer *out)
{
	ssize_t ret;

	for (;;) {
		unsigned char *p = buffer_reserve(out, 65536);

		ret = read(STDIN_FILENO, p, 65536);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0)
			break;
		buffer_commit(out, (size_t)ret);
	}
}

/* mode_bench_deliver - N deliveries, round robin over the users */
static int mode_bench_deliver(void)
{
	const char *name = opt.mailbox;
	struct buffer msg;
	double t0, t1;
	int ret = STORE_OK;

	if (env_open_users(true) < 0)
		return EXIT_SETUP;
	buffer_init(&msg, 0);
	if (opt.bench_stdin)
		read_stdin(&msg);
	else
		message_generate("<bench@torture>", &msg);
	t0 = mono_secs();
	for (unsigned long i = 0; i < opt.bench_count && ret == STORE_OK; i++) {
		struct store_user *user = env.users[i % opt.user_count];
		struct store_save *save = store_save_begin(user, &ret);

		if (save == NULL)
			break;
		ret = store_save_write(save, msg.data, msg.used);
		if (ret == STORE_OK)
			ret = store_save_finish(save);
		if (ret == STORE_OK)
			ret = store_save_deliver(save, user, name, NULL);
		store_save_free(&save);
	}
	t1 = mono_secs();
	buffer_clear(&msg);
	if (ret != STORE_OK) {
		fprintf(stderr, "torture: delivery failed: %s (%d)\n",
			store_result_name(ret), ret);
		return 1;
	}
	if (!opt.bench_stdin || opt.bench_count > 1)
		printf("delivered=%lu secs=%.3f rate=%.1f\n", opt.bench_count,
		       t1 - t0, (double)opt.bench_count / (t1 - t0));
	return 0;
}

/* ---- main --------------------------------------------------------------- */

static void ATTR_NORETURN usage(void)
{
	fprintf(stderr,
		"usage: torture --init|--run|--dump|--bench-open|--bench-deliver N\n"
		"  --spool DIR --users a@x[,b@x...] [--node NAME] [--journal FILE]\n"
		"  [--seconds N | --deadline UNIXTIME] [--seed S] [--compact-bytes N]\n"
		"  [--writer-mark] [--debug]\n"
		"  [--mailbox NAME] [--stdin] [--lock-backend fcntl|dlm]\n");
	exit(EXIT_SETUP);
}

static void parse_users(const char *list)
{
	char *copy = mem_strdup(list), *save = NULL;

	for (char *p = strtok_r(copy, ",", &save); p != NULL;
	     p = strtok_r(NULL, ",", &save)) {
		if (opt.user_count == MAX_USERS)
			log_fatal("too many users (max %d)", MAX_USERS);
		opt.users[opt.user_count++] = mem_strdup(p);
	}
	free(copy);
}

static void parse_options(int argc, char **argv)
{
	static const struct option options[] = {
		{ "init", no_argument, NULL, 'I' },
		{ "run", no_argument, NULL, 'R' },
		{ "dump", no_argument, NULL, 'D' },
		{ "bench-open", no_argument, NULL, 'O' },
		{ "bench-deliver", required_argument, NULL, 'B' },
		{ "spool", required_argument, NULL, 's' },
		{ "users", required_argument, NULL, 'u' },
		{ "node", required_argument, NULL, 'n' },
		{ "journal", required_argument, NULL, 'j' },
		{ "seconds", required_argument, NULL, 't' },
		{ "deadline", required_argument, NULL, 'd' },
		{ "seed", required_argument, NULL, 'S' },
		{ "compact-bytes", required_argument, NULL, 'c' },
		{ "writer-mark", no_argument, NULL, 'W' },
		{ "debug", no_argument, NULL, 'G' },
		{ "mailbox", required_argument, NULL, 'm' },
		{ "stdin", no_argument, NULL, 'i' },
		{ "lock-backend", required_argument, NULL, 'L' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opt.node = "torture";
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'I': opt.mode = MODE_INIT; break;
		case 'R': opt.mode = MODE_RUN; break;
		case 'D': opt.mode = MODE_DUMP; break;
		case 'O': opt.mode = MODE_BENCH_OPEN; break;
		case 'B':
			opt.mode = MODE_BENCH_DELIVER;
			opt.bench_count = strtoul(optarg, NULL, 10);
			break;
		case 's': opt.spool = optarg; break;
		case 'u': parse_users(optarg); break;
		case 'n': opt.node = optarg; break;
		case 'j': opt.journal = optarg; break;
		case 't':
			opt.deadline_msecs = now_msecs() +
				(int64_t)strtoull(optarg, NULL, 10) * 1000;
			break;
		case 'd':
			opt.deadline_msecs = (int64_t)strtoll(optarg, NULL, 10) * 1000;
			break;
		case 'S': opt.seed = strtoull(optarg, NULL, 0); break;
		case 'c': opt.compact_bytes = strtoull(optarg, NULL, 0); break;
		case 'W': opt.writer_mark = true; break;
		case 'G': log_set_level(LOG_LEVEL_DEBUG); break;
		case 'm': opt.mailbox = optarg; break;
		case 'i': opt.bench_stdin = true; break;
		case 'L':
			if (strcmp(optarg, "fcntl") == 0)
				opt.lock_backend = SETTINGS_LOCK_FCNTL;
			else if (strcmp(optarg, "dlm") == 0)
				opt.lock_backend = SETTINGS_LOCK_DLM;
			else
				usage();
			break;
		default: usage();
		}
	}
	if (opt.mode == MODE_NONE || opt.spool == NULL || opt.user_count == 0 ||
	    optind != argc || (opt.mode == MODE_RUN && opt.deadline_msecs == 0))
		usage();
}

int main(int argc, char **argv)
{
	int status = EXIT_SETUP;

	log_open("torture", LOG_TARGET_STDERR);
	log_set_level(LOG_LEVEL_WARNING);
	parse_options(argc, argv);
	rng_state ^= opt.seed * 0x9E3779B97F4A7C15ULL + (uint64_t)getpid();
	if (rng_state == 0)
		rng_state = 1;
	if (opt.journal != NULL) {
		journal_fd = open(opt.journal, O_WRONLY | O_APPEND | O_CREAT |
				  O_CLOEXEC, 0644);
		if (journal_fd < 0)
			log_fatal("open %s: %s", opt.journal, strerror(errno));
	}
	states_init();
	env_open();
	switch (opt.mode) {
	case MODE_INIT: status = mode_init(); break;
	case MODE_RUN: status = mode_run(); break;
	case MODE_DUMP: status = mode_dump(); break;
	case MODE_BENCH_OPEN: status = mode_bench_open(); break;
	case MODE_BENCH_DELIVER: status = mode_bench_deliver(); break;
	case MODE_NONE: break;
	}
	env_close();
	if (journal_fd >= 0)
		close(journal_fd);
	for (unsigned int i = 0; i < opt.user_count; i++)
		free(opt.users[i]);
	return status;
}
