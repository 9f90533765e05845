/*
 * mailbox.c - mailbox views: the UID list, the change log, sync, STORE,
 * EXPUNGE, COPY/MOVE.
 *
 * Files of a mailbox (next to cur/ new/ tmp/):
 *
 *   clustermail.index  a snapshot: header (magic, UIDVALIDITY, UIDNEXT,
 *                      HIGHESTMODSEQ, first recent UID, keyword names, the
 *                      log generation and offset it includes) and one
 *                      record per message (UID, flags, keywords, modseq,
 *                      sizes, dates, base file name), then the expunge
 *                      history (below), with a CRC32 over the whole
 *                      file. Only ever replaced by rename.
 *   clustermail.log    the changes since the snapshot: a header (magic,
 *                      UIDVALIDITY, generation) and records
 *                      [length][type][payload][CRC32], appended and
 *                      fdatasync'ed by the holder of the EX lock.
 *
 * All records in both files are little-endian host order: every node of a
 * cluster must be of one byte order (the index says so in its magic).
 *
 * Locking protocol (DESIGN invariants 2 and 3):
 *   - Every change (UIDs for new/ files, flags, expunges, keywords, claims
 *     of \Recent, compaction) happens under the mailbox lock in EX mode,
 *     after reading the tail of the log, so the writer always appends to
 *     the newest state.
 *   - A reader takes PR, compares the version stamp in the lock value
 *     block (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, log generation and size)
 *     with its view and reads only the log tail it has not seen. An
 *     invalid stamp (DLM recovery, a new fcntl lock file) costs a reopen
 *     and fstat of the log, never a wrong answer: the files are the truth,
 *     the stamp only says whether they changed.
 *   - new/ is read under PR; when it holds files, the reader gives up PR
 *     and takes EX (never a PR->EX conversion, which can deadlock between
 *     two readers) and syncs again before assigning UIDs.
 *   - After taking the lock, the directory is checked to be the one the
 *     view was opened on (same inode): a mailbox deleted or renamed by
 *     another node is noticed before anything is written into it.
 *   - Version stamps pay off for every reader: after an EX holder stored
 *     its stamp and released, the value is valid for everyone (the fcntl
 *     backend only marks it "holder at work" while EX is held), and a
 *     view whose state equals the stamp reads nothing of the log - a sync
 *     then costs the directory check, the new/ check below and the
 *     cache's fstatat.
 *
 * Skipping new/ (open and sync cost). Listing new/ is the expensive part
 * of a sync of a big mailbox: an ext4 directory that once held 100,000
 * deliveries stays megabytes long after it was emptied. So each sync
 * stats new/ first, and skips the listing when this process (the store:
 * any view, any session) listed that very directory (device, inode) and
 * found it empty, and its mtime (with nanoseconds) is unchanged. Adding a
 * file to new/ changes its mtime - but only to the file system's clock
 * tick: a delivery landing in the same tick as the change before our
 * listing would leave the mtime as it was, and be missed until the next
 * change. So "empty" is remembered only from a stat taken when the mtime
 * was already more than NEW_SETTLE_SECS old: any change after that stat
 * gets a later time, whatever the tick. A zero tv_nsec may mean a file
 * system with coarse (whole-second or worse) timestamps: then new/ is
 * always listed. The rule assumes node clocks (and an NFS server's)
 * agree within NEW_SETTLE_SECS, as NTP gives. On NFS a stat may be
 * answered from the attribute cache (acdirmin and up), so there new/ is
 * opened and fstat()ed instead: an open revalidates the attributes
 * (close-to-open consistency). The stat is taken before the listing, so
 * a delivery during the listing is either listed or changes the mtime.
 * A fresh process (clustermailctl, a new daemon) knows nothing yet, so
 * the same fact - "new/ with inode I and mtime T (settled) was listed
 * empty" - is also kept in clustermail.newseen (32 bytes with a CRC),
 * replaced by rename and not fsynced: it is a hint checked against a
 * fresh stat, never trusted alone. It is written by whoever lists new/
 * empty, also under PR - the one file a reader writes. That is safe
 * because it states a fact that stays true (only T changing makes it
 * moot, and then it no longer matches), two writers write equally true
 * facts, and a rename never leaves a half-written file to read.
 *
 * Crash safety (what each step leaves behind):
 *   - Message files enter through new/ (delivery: tmp -> fsync -> link ->
 *     fsync new/). APPEND and COPY link into new/ and then log the UID;
 *     a crash in between leaves a file in new/ that the next sync gives a
 *     UID (the client was not told OK, so nothing acknowledged is lost;
 *     at worst a retried APPEND appears twice).
 *   - UIDs are logged (fdatasync) before the file moves to cur/; a crash
 *     in between leaves new/BASE with a known base, which the next EX sync
 *     moves without a new UID.
 *   - STORE and EXPUNGE log their record first (the commit point), then
 *     rename or unlink files, fsync cur/, and log DONE. A record without
 *     DONE found by an EX holder means its writer died: the renames or
 *     unlinks are redone (they are idempotent). So an expunged message
 *     never comes back, even from a rebuild.
 *   - A torn record at the end of the log (crash while appending) fails
 *     its CRC; readers stop there and the next EX holder truncates it.
 *     Anything else that does not parse means the metadata is damaged:
 *     it is logged and rebuilt from the Maildir (check.c), keeping UIDs
 *     where the old data allows and never lowering UIDNEXT.
 *   - Compaction writes the new index (rename) before the new log
 *     (rename). Between the two, the index names a generation the log
 *     does not have yet; the old log is then fully contained in the index
 *     and is replaced by an empty one of the right generation.
 *
 * Writers that died on NFS. A process killed on an NFS client can leave
 * its last log writes in flight: the client keeps sending them after the
 * process is gone, while the lock (on another file, in SPOOL/.locks/) is
 * released at once. The next EX holder could then append at the offset a
 * late write lands on, and lose an acknowledged record. So on NFS the log
 * is read to its end with O_DIRECT reads (never up to a cached size), and
 * an EX holder sets a mark in the log header (u32 at LOG_WRITER_OFFSET,
 * O_DIRECT, fdatasync'ed) before its first write to that log file and
 * clears it before it releases the lock (store->log_writer_mark: always
 * on NFS; unit tests turn it on elsewhere). An EX holder that finds the mark
 * set knows the previous writer died mid-hold; it completes the pending
 * file work without logging, and compacts before it writes anything:
 * the new log is a new inode, so late writes land in the unlinked old
 * one. Whatever of them had landed before this holder read the log is
 * in its view (a record is acknowledged only after it was read back, so
 * every acknowledged one had). A reader (PR) that finds the mark asks
 * for EX. The local file systems and GFS2/OCFS2 do not need this: a
 * write has either happened or not when a killed process's locks go.
 *
 * Expunge history (QRESYNC, RFC 7162 3.2.5). Compaction drops the log's
 * EXPUNGE records, and with them the modseq at which each UID went. So
 * the view keeps (UID, modseq) of every expunge it applies, and the
 * index carries the newest store_settings.expunge_history_max of them
 * plus a floor: every expunge with a modseq above the floor is listed.
 * A view's history is the index's plus what it read from the log since;
 * mailbox_expunged_since() answers from it, and says "incomplete" when
 * asked about a modseq below the floor (the IMAP side then names every
 * UID it cannot see, which RFC 7162 allows). An index without the
 * section (older format) or a rebuilt one puts the floor at its
 * HIGHESTMODSEQ: nothing earlier is claimed.
 *
 * The message cache (cache.c) rides on these lock sections and nothing
 * else: mailbox_lock() ends every successful locked sync with
 * mailbox_cache_note_locked() (what the cache file holds now), and
 * mailbox_unlock() under EX calls mailbox_cache_write_locked() before
 * the stamp is published (pending adds; compaction of the cache together
 * with the log's). mailbox_cache_flush() uses mailbox_lock_try(), the
 * NOQUEUE variant.
 *
 * Loading a big index (open cost). The file is read with one pread into
 * one buffer, its CRC checked, the record array sized from the header
 * count at once, and the base names copied into one arena block
 * (box->base_arena) instead of one allocation each; records added later
 * (log, deliveries) own their names, so every free of a base goes
 * through view_base_free(), and a reload (new log generation) gives the
 * expunged records it keeps for reporting their own copies before the
 * old arena is freed.
 */
#include "lib/lib.h"
#include "acl.h"
#include "mailbox-private.h"
#include "name.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define INDEX_MAGIC "CMIDX1LE"
#define LOG_MAGIC "CMLOG1LE"
#define LOG_HEADER_SIZE 24	/* magic 8, uidvalidity 4, gen 4, crc 4, writer 4 */
#define LOG_WRITER_OFFSET 20	/* the NFS writer mark, outside the CRC */
#define LOG_RECORD_MAX (64 * 1024 * 1024)

enum log_type {
	LOG_APPEND = 1,
	LOG_FLAGS = 2,
	LOG_EXPUNGE = 3,
	LOG_DONE = 4,
	LOG_KEYWORD = 5,
	LOG_RECENT = 6,
};

#define SYNC_NEED_EX 1
/* new/ must have been unchanged this long before "empty" is remembered. */
#define NEW_SETTLE_SECS 2

/* ---- byte buffers ------------------------------------------------------ */

struct bb {
	uint8_t *data;
	size_t len, alloc;
};

static void bb_put(struct bb *b, const void *data, size_t len)
{
	if (b->len + len > b->alloc) {
		b->alloc = (b->len + len) * 2 + 256;
		b->data = mem_realloc(b->data, b->alloc);
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
}
static void bb_u8(struct bb *b, uint8_t v) { bb_put(b, &v, 1); }
static void bb_u16(struct bb *b, uint16_t v) { bb_put(b, &v, 2); }
static void bb_u32(struct bb *b, uint32_t v) { bb_put(b, &v, 4); }
static void bb_u64(struct bb *b, uint64_t v) { bb_put(b, &v, 8); }
static void bb_str(struct bb *b, const char *s)
{
	size_t len = strlen(s);

	bb_u16(b, (uint16_t)len);
	bb_put(b, s, len);
}

struct rd {
	const uint8_t *p, *end;
	bool bad;
};
static void rd_get(struct rd *r, void *out, size_t len)
{
	if (r->bad || (size_t)(r->end - r->p) < len) {
		r->bad = true;
		memset(out, 0, len);
		return;
	}
	memcpy(out, r->p, len);
	r->p += len;
}
static uint16_t rd_u16(struct rd *r) { uint16_t v; rd_get(r, &v, 2); return v; }
static uint32_t rd_u32(struct rd *r) { uint32_t v; rd_get(r, &v, 4); return v; }
static uint64_t rd_u64(struct rd *r) { uint64_t v; rd_get(r, &v, 8); return v; }
static char *rd_str(struct rd *r)
{
	uint16_t len = rd_u16(r);
	char *s;

	if (r->bad || (size_t)(r->end - r->p) < len) {
		r->bad = true;
		return NULL;
	}
	s = mem_strndup((const char *)r->p, len);
	r->p += len;
	if (strlen(s) != len || len == 0 || strchr(s, '/') != NULL) {
		r->bad = true;
		free(s);
		return NULL;
	}
	return s;
}

static uint32_t crc(const void *data, size_t len)
{
	return (uint32_t)crc32(0, data, (uInt)len);
}

/* ---- file names ------------------------------------------------------- */

void mailbox_file_name(const char *base, uint32_t flags, char *buf,
		       size_t size)
{
	/* Maildir info letters, in ASCII order as the spec wants. */
	snprintf(buf, size, "%s:2,%s%s%s%s%s", base,
		 (flags & MAIL_DRAFT) != 0 ? "D" : "",
		 (flags & MAIL_FLAGGED) != 0 ? "F" : "",
		 (flags & MAIL_ANSWERED) != 0 ? "R" : "",
		 (flags & MAIL_SEEN) != 0 ? "S" : "",
		 (flags & MAIL_DELETED) != 0 ? "T" : "");
}

uint32_t mailbox_name_flags(const char *name)
{
	const char *info = strstr(name, ":2,");
	uint32_t flags = 0;

	if (info == NULL)
		return 0;
	for (info += 3; *info != '\0'; info++) {
		switch (*info) {
		case 'D': flags |= MAIL_DRAFT; break;
		case 'F': flags |= MAIL_FLAGGED; break;
		case 'R': flags |= MAIL_ANSWERED; break;
		case 'S': flags |= MAIL_SEEN; break;
		case 'T': flags |= MAIL_DELETED; break;
		default: break;
		}
	}
	return flags;
}

bool mailbox_base_sizes(const char *base, uint64_t *size_r, uint64_t *vsize_r)
{
	const char *s = strstr(base, ",S="), *w = strstr(base, ",W=");
	char *end;

	if (s == NULL || w == NULL)
		return false;
	*size_r = strtoull(s + 3, &end, 10);
	if (end == s + 3)
		return false;
	*vsize_r = strtoull(w + 3, &end, 10);
	return end != w + 3;
}

/* ---- EMAILID (RFC 8474) ------------------------------------------------------
 * A message's id is a 128-bit hash of the unique part of its base name
 * (before the first ','), or the ",E=" field a copy's name carries. The
 * hash is not cryptographic: its inputs are unique names this server
 * (or a local Maildir tool) chose, not text an attacker picks, and two
 * independent 64-bit mixes make a collision between two of one user's
 * names practically impossible.
 */

/* email_id_hash_mix - final avalanche of a 64-bit state */
static uint64_t email_id_hash_mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* email_id_valid - "M" and 32 lower-case hex digits */
static bool email_id_valid(const char *value, size_t len)
{
	if (len != MAILBOX_EMAIL_ID_SIZE - 1 || value[0] != 'M')
		return false;
	for (size_t i = 1; i < len; i++) {
		if (strchr("0123456789abcdef", value[i]) == NULL)
			return false;
	}
	return true;
}

void mailbox_email_id(const char *base, char id_r[MAILBOX_EMAIL_ID_SIZE])
{
	const char *field = strstr(base, ",E=");
	uint64_t h1 = 0xcbf29ce484222325ULL, h2 = 0x6c62272e07bb0142ULL;
	size_t len;

	if (field != NULL) {
		field += 3;
		len = strcspn(field, ",:");
		if (email_id_valid(field, len)) {
			memcpy(id_r, field, len);
			id_r[len] = '\0';
			return;
		}
	}
	len = strcspn(base, ",:");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)base[i];

		h1 = (h1 ^ c) * 0x100000001b3ULL;
		h2 = (h2 ^ c) * 0x9e3779b97f4a7c15ULL;
		h2 ^= h2 >> 29;
	}
	h1 = email_id_hash_mix(h1 ^ len);
	h2 = email_id_hash_mix(h2 + len);
	snprintf(id_r, MAILBOX_EMAIL_ID_SIZE, "M%016llx%016llx",
		 (unsigned long long)h1, (unsigned long long)h2);
}

int mailbox_compute_vsize(struct sio *sio, int fd, uint64_t *size_r,
			  uint64_t *vsize_r)
{
	uint8_t buf[65536];
	uint64_t off = 0, bare_lf = 0;
	bool prev_cr = false;
	ssize_t n;

	while ((n = sio_pread(sio, fd, buf, sizeof(buf), off)) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' && !prev_cr)
				bare_lf++;
			prev_cr = buf[i] == '\r';
		}
		off += (uint64_t)n;
	}
	if (n < 0)
		return (int)n;
	*size_r = off;
	*vsize_r = off + bare_lf;
	return 0;
}

/* ---- the view --------------------------------------------------------- */

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : (x > y ? 1 : 0);
}

static int rec_cmp(const void *key, const void *elem)
{
	uint32_t uid = *(const uint32_t *)key;
	const struct mail_record *rec = elem;

	return uid < rec->uid ? -1 : (uid > rec->uid ? 1 : 0);
}

static struct mail_record *view_find(const struct mailbox *box, uint32_t uid)
{
	if (box->count == 0)
		return NULL;
	return bsearch(&uid, box->recs, box->count, sizeof(*box->recs), rec_cmp);
}

static void view_changed(struct mailbox *box, uint32_t uid)
{
	if (box->changed_count == box->changed_alloc) {
		box->changed_alloc = box->changed_alloc * 2 + 16;
		box->changed = mem_realloc(box->changed, box->changed_alloc *
					   sizeof(*box->changed));
	}
	box->changed[box->changed_count++] = uid;
}

static void view_append(struct mailbox *box, const struct mail_record *rec)
{
	if (box->count == box->alloc) {
		box->alloc = box->alloc * 2 + 64;
		box->recs = mem_realloc(box->recs, box->alloc * sizeof(*box->recs));
	}
	box->recs[box->count++] = *rec;
}

/* base_in_arena - is base a name inside arena (size bytes)? */
static inline bool base_in_arena(const char *base, const char *arena,
				 size_t size)
{
	return arena != NULL && base >= arena && base < arena + size;
}

/* view_base_free - free a record's base name unless the arena owns it */
static void view_base_free(struct mailbox *box, const char *base)
{
	if (!base_in_arena(base, box->base_arena, box->base_arena_size))
		free((char *)base);
}

static void view_clear(struct mailbox *box)
{
	for (uint32_t i = 0; i < box->count; i++)
		view_base_free(box, box->recs[i].base);
	box->count = 0;
	free(box->base_arena);
	box->base_arena = NULL;
	box->base_arena_size = 0;
	for (unsigned int i = 0; i < box->kw_count; i++)
		MEM_FREE(&box->keywords[i]);
	box->kw_count = 0;
}

static void pending_free(struct mailbox_pending *p)
{
	for (size_t i = 0; p->bases != NULL && i < p->count; i++)
		free(p->bases[i]);
	free(p->bases);
	free(p->uids);
	free(p->flags);
}

static void pending_clear(struct mailbox *box)
{
	for (size_t i = 0; i < box->pending_count; i++)
		pending_free(&box->pending[i]);
	free(box->pending);
	box->pending = NULL;
	box->pending_count = 0;
}

static void pending_done(struct mailbox *box, uint64_t offset)
{
	for (size_t i = 0; i < box->pending_count; i++) {
		if (box->pending[i].offset == offset) {
			pending_free(&box->pending[i]);
			box->pending[i] = box->pending[--box->pending_count];
			return;
		}
	}
}

static struct mailbox_pending *pending_add(struct mailbox *box)
{
	box->pending = mem_realloc(box->pending, (box->pending_count + 1) *
				   sizeof(*box->pending));
	memset(&box->pending[box->pending_count], 0, sizeof(*box->pending));
	return &box->pending[box->pending_count++];
}

/* ---- expunge history (QRESYNC) --------------------------------------- */

/* exp_hist_add - remember that uid was expunged at modseq */
static void exp_hist_add(struct mailbox *box, uint32_t uid, uint64_t modseq)
{
	if (box->exp_count == box->exp_alloc) {
		box->exp_alloc = box->exp_alloc * 2 + 64;
		box->exp_hist = mem_realloc(box->exp_hist, box->exp_alloc *
					    sizeof(*box->exp_hist));
	}
	box->exp_hist[box->exp_count].uid = uid;
	box->exp_hist[box->exp_count++].modseq = modseq;
}

/* exp_hist_floor - expunges above this modseq are all in the history */
static uint64_t exp_hist_floor(const struct mailbox *box)
{
	return box->exp_floor_known ? box->exp_floor : box->highestmodseq;
}

/* exp_hist_max - how many entries a snapshot keeps */
static size_t exp_hist_max(const struct mailbox *box)
{
	size_t max = box->user != NULL ? box->user->store->expunge_history_max :
		MAILBOX_EXPUNGE_HISTORY_MAX;

	return max < MAILBOX_EXPUNGE_HISTORY_LIMIT ? max :
		MAILBOX_EXPUNGE_HISTORY_LIMIT;
}

/* exp_hist_trim - keep the newest exp_hist_max() entries, raising the
   floor over what is dropped (before a snapshot) */
static void exp_hist_trim(struct mailbox *box)
{
	size_t drop, max = exp_hist_max(box);

	box->exp_floor = exp_hist_floor(box);
	box->exp_floor_known = true;
	if (box->exp_count <= max)
		return;
	drop = box->exp_count - max;
	for (size_t i = 0; i < drop; i++) {
		if (box->exp_hist[i].modseq > box->exp_floor)
			box->exp_floor = box->exp_hist[i].modseq;
	}
	memmove(box->exp_hist, box->exp_hist + drop,
		max * sizeof(*box->exp_hist));
	box->exp_count = max;
}

/* exp_hist_serialize - the index's history section: floor, count, and
   (uid, modseq) pairs */
static void exp_hist_serialize(const struct mailbox *box, struct bb *b)
{
	size_t max = exp_hist_max(box);
	size_t first = box->exp_count > max ? box->exp_count - max : 0;
	uint64_t floor = exp_hist_floor(box);

	for (size_t i = 0; i < first; i++) {
		if (box->exp_hist[i].modseq > floor)
			floor = box->exp_hist[i].modseq;
	}
	bb_u64(b, floor);
	bb_u32(b, (uint32_t)(box->exp_count - first));
	for (size_t i = first; i < box->exp_count; i++) {
		bb_u32(b, box->exp_hist[i].uid);
		bb_u64(b, box->exp_hist[i].modseq);
	}
}

/* exp_hist_parse - the history section of an index; an index without
   one (older format) remembers nothing before its HIGHESTMODSEQ */
static bool exp_hist_parse(struct mailbox *box, struct rd *r)
{
	uint32_t n;

	box->exp_count = 0;
	box->exp_floor_known = true;
	if (r->p == r->end) {
		box->exp_floor = box->highestmodseq;
		return true;
	}
	box->exp_floor = rd_u64(r);
	n = rd_u32(r);
	if (r->bad || n > MAILBOX_EXPUNGE_HISTORY_LIMIT ||
	    (size_t)(r->end - r->p) != (size_t)n * 12 ||
	    box->exp_floor > box->highestmodseq)
		return false;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t uid = rd_u32(r);
		uint64_t modseq = rd_u64(r);

		if (uid == 0 || uid >= box->uidnext || modseq > box->highestmodseq)
			return false;
		exp_hist_add(box, uid, modseq);
	}
	return !r->bad;
}

/* uid32_cmp - qsort order of UIDs */
static int uid32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int mailbox_expunged_since(struct mailbox *box, uint64_t modseq,
			   uint32_t **uids_r, size_t *count_r,
			   bool *complete_r)
{
	uint32_t *uids = mem_calloc(box->exp_count + 1, sizeof(*uids));
	size_t n = 0, j = 0;

	for (size_t i = 0; i < box->exp_count; i++) {
		if (box->exp_hist[i].modseq > modseq)
			uids[n++] = box->exp_hist[i].uid;
	}
	qsort(uids, n, sizeof(*uids), uid32_cmp);
	for (size_t i = 0; i < n; i++) {
		if (j == 0 || uids[i] != uids[j - 1])
			uids[j++] = uids[i];
	}
	*uids_r = uids;
	*count_r = j;
	*complete_r = modseq >= exp_hist_floor(box);
	return STORE_OK;
}

/* ---- log records ------------------------------------------------------ */

/* Apply one log record at offset to the view. Returns false if the
   payload is malformed. */
static bool log_apply(struct mailbox *box, uint8_t type, struct rd *r,
		      uint64_t offset)
{
	struct mail_record rec, *old;
	struct mailbox_pending *p;
	uint64_t modseq;
	uint32_t n;

	switch (type) {
	case LOG_APPEND:
		memset(&rec, 0, sizeof(rec));
		rec.uid = rd_u32(r);
		rec.flags = rd_u32(r) & MAIL_FLAGS_MASK;
		rec.keywords = rd_u64(r);
		rec.modseq = rd_u64(r);
		rec.size = rd_u64(r);
		rec.vsize = rd_u64(r);
		rec.internaldate = (int64_t)rd_u64(r);
		rec.savedate = (int64_t)rd_u64(r);
		rec.base = rd_str(r);
		if (r->bad || rec.uid < box->uidnext || rec.uid == 0) {
			free((char *)rec.base);
			return false;
		}
		view_append(box, &rec);
		box->uidnext = rec.uid + 1;
		if (rec.modseq > box->highestmodseq)
			box->highestmodseq = rec.modseq;
		return true;
	case LOG_FLAGS:
		modseq = rd_u64(r);
		n = rd_u32(r);
		if (r->bad || n > LOG_RECORD_MAX / 16)
			return false;
		p = pending_add(box);
		p->type = LOG_FLAGS;
		p->offset = offset;
		p->uids = mem_calloc(n + 1, sizeof(uint32_t));
		p->flags = mem_calloc(n + 1, sizeof(uint32_t));
		for (uint32_t i = 0; i < n; i++) {
			uint32_t uid = rd_u32(r), flags = rd_u32(r);
			uint64_t kw = rd_u64(r);

			p->uids[p->count] = uid;
			p->flags[p->count++] = flags & MAIL_FLAGS_MASK;
			old = view_find(box, uid);
			if (old == NULL || (old->flags & MAIL_EXPUNGED) != 0)
				continue;
			old->flags = (old->flags & ~MAIL_FLAGS_MASK) |
				(flags & MAIL_FLAGS_MASK);
			old->keywords = kw;
			old->modseq = modseq;
			view_changed(box, uid);
		}
		if (modseq > box->highestmodseq)
			box->highestmodseq = modseq;
		return !r->bad;
	case LOG_EXPUNGE:
		modseq = rd_u64(r);
		n = rd_u32(r);
		if (r->bad || n > LOG_RECORD_MAX / 4)
			return false;
		p = pending_add(box);
		p->type = LOG_EXPUNGE;
		p->offset = offset;
		p->uids = mem_calloc(n + 1, sizeof(uint32_t));
		p->bases = mem_calloc(n + 1, sizeof(char *));
		for (uint32_t i = 0; i < n; i++) {
			uint32_t uid = rd_u32(r);

			old = view_find(box, uid);
			if (old == NULL)
				continue;
			exp_hist_add(box, uid, modseq);
			p->uids[p->count] = uid;
			p->bases[p->count++] = mem_strdup(old->base);
			old->flags |= MAIL_EXPUNGED;
		}
		if (modseq > box->highestmodseq)
			box->highestmodseq = modseq;
		return !r->bad;
	case LOG_DONE:
		pending_done(box, rd_u64(r));
		return !r->bad;
	case LOG_KEYWORD: {
		uint32_t idx = rd_u32(r);
		char *name = rd_str(r);

		if (r->bad || idx != box->kw_count ||
		    idx >= STORE_MAX_KEYWORDS) {
			free(name);
			return false;
		}
		box->keywords[box->kw_count++] = name;
		box->keywords_changed = true;
		return true;
	}
	case LOG_RECENT:
		n = rd_u32(r);
		if (n > box->first_recent_uid)
			box->first_recent_uid = n;
		return !r->bad;
	default:
		return false;
	}
}

/* Read and apply the log from box->log_offset to its end. A record that
   fails its CRC ends the log (torn write): *torn_r says so, and
   box->log_offset stays at its start. Malformed content that passed the
   CRC is corruption: STORE_ERR_CORRUPT. */
/* log_read_nfs - the log from box->log_offset to its end on NFS, where
   fstat() may answer from the attribute cache: O_DIRECT reads until one
   comes back short (the server's end of file). */
static int log_read_nfs(struct mailbox *box, uint8_t **data_r, uint64_t *size_r)
{
	size_t alloc = 64 * 1024, len = 0;
	uint8_t *data = mem_zalloc(alloc);
	ssize_t n;

	for (;;) {
		n = sio_pread(box->user->sio, box->log_fd, data + len,
			      alloc - len, box->log_offset + len);
		if (n < 0) {
			free(data);
			return store_io_error(box->user, "read",
					      MAILBOX_LOG_FILE, (int)n);
		}
		len += (size_t)n;
		if (len < alloc)
			break;
		alloc *= 2;
		data = mem_realloc(data, alloc);
	}
	*data_r = data;
	*size_r = len;
	return STORE_OK;
}

/* log_read_sized - the same where fstat() is exact (local, GFS2, OCFS2);
   *data_r NULL: nothing new */
static int log_read_sized(struct mailbox *box, uint8_t **data_r,
			  uint64_t *size_r)
{
	struct sio *sio = box->user->sio;
	struct stat st;
	uint64_t size;
	uint8_t *data;
	ssize_t n;
	int ret;

	*data_r = NULL;
	*size_r = 0;
	if ((ret = sio_fstat(sio, box->log_fd, &st)) < 0)
		return store_io_error(box->user, "fstat", MAILBOX_LOG_FILE, ret);
	if ((uint64_t)st.st_size <= box->log_offset) {
		if ((uint64_t)st.st_size < box->log_offset)
			return STORE_ERR_CORRUPT;	/* shrank: replaced */
		return STORE_OK;
	}
	size = (uint64_t)st.st_size - box->log_offset;
	data = mem_zalloc(size);
	n = sio_pread(sio, box->log_fd, data, size, box->log_offset);
	if (n < 0) {
		free(data);
		return store_io_error(box->user, "read", MAILBOX_LOG_FILE, (int)n);
	}
	*data_r = data;
	*size_r = (uint64_t)n;
	return STORE_OK;
}

static int log_read_tail(struct mailbox *box, bool *torn_r)
{
	uint8_t *data = NULL;
	uint64_t size = 0, pos = 0;
	int ret;

	*torn_r = false;
	ret = box->user->store->spool_nfs ? log_read_nfs(box, &data, &size) :
		log_read_sized(box, &data, &size);
	if (ret < 0 || data == NULL)
		return ret;
	while (pos < size) {
		uint32_t len, sum;
		uint8_t type;
		struct rd r;

		if (size - pos < 9) {
			*torn_r = true;
			break;
		}
		memcpy(&len, data + pos, 4);
		if (len > LOG_RECORD_MAX || size - pos < (uint64_t)len + 9) {
			*torn_r = true;
			break;
		}
		memcpy(&sum, data + pos + 5 + len, 4);
		if (sum != crc(data + pos, 5 + (size_t)len)) {
			/* Only the last record can be torn by a crash; a bad
			   one with more after it is damage. */
			if (pos + len + 9 < size) {
				free(data);
				return STORE_ERR_CORRUPT;
			}
			*torn_r = true;
			break;
		}
		type = data[pos + 4];
		r.p = data + pos + 5;
		r.end = r.p + len;
		r.bad = false;
		if (!log_apply(box, type, &r, box->log_offset + pos)) {
			free(data);
			return STORE_ERR_CORRUPT;
		}
		pos += (uint64_t)len + 9;
	}
	free(data);
	box->log_offset += pos;
	return STORE_OK;
}

static void log_record(struct bb *b, uint8_t type, const struct bb *payload)
{
	size_t start = b->len;
	uint32_t len = (uint32_t)payload->len;

	bb_u32(b, len);
	bb_u8(b, type);
	bb_put(b, payload->data, payload->len);
	bb_u32(b, crc(b->data + start, b->len - start));
}

/* log_set_writer - write the NFS writer mark of box->log_fd (1 set,
   0 clear); see "Writers that died on NFS" at the top */
static int log_set_writer(struct mailbox *box, uint32_t mark)
{
	struct sio *sio = box->user->sio;
	ssize_t n;
	int ret;

	n = sio_pwrite(sio, box->log_fd, &mark, sizeof(mark), LOG_WRITER_OFFSET);
	if (n >= 0 && (size_t)n != sizeof(mark))
		n = -EIO;
	ret = n < 0 ? (int)n : sio_fsync(sio, box->log_fd, true);
	if (ret < 0)
		return store_io_error(box->user, "write", MAILBOX_LOG_FILE, ret);
	return STORE_OK;
}

/* log_mark_writer - before an EX holder's first write to this log file */
static int log_mark_writer(struct mailbox *box)
{
	int ret;

	if (!box->user->store->log_writer_mark || box->log_marked)
		return STORE_OK;
	if ((ret = log_set_writer(box, 1)) == STORE_OK)
		box->log_marked = true;
	return ret;
}

/* mailbox_clear_writer - before an EX holder that wrote lets the lock
   go. A failure only costs the next holder a needless compaction. */
static void mailbox_clear_writer(struct mailbox *box)
{
	if (!box->log_marked)
		return;
	box->log_marked = false;
	if (box->log_fd >= 0)
		(void)log_set_writer(box, 0);
}

/* Append records (already framed) durably; they are applied to the view
   by reading them back, so the view and the file can never disagree. */
static int log_write(struct mailbox *box, const struct bb *b)
{
	struct sio *sio = box->user->sio;
	bool torn;
	ssize_t n;
	int ret;

	if ((ret = log_mark_writer(box)) < 0)
		return ret;
	log_debug("store %s: mailbox %s: log write of %zu bytes at %llu in "
		  "generation %u (type %u, UIDNEXT %u)", box->user->name,
		  box->name, b->len, (unsigned long long)box->log_offset,
		  box->log_gen, b->data[4], box->uidnext);
	n = sio_pwrite(sio, box->log_fd, b->data, b->len, box->log_offset);
	if (n < 0) {
		/* A short write would leave a torn record: cut it off. */
		(void)sio_ftruncate(sio, box->log_fd, box->log_offset);
		return store_io_error(box->user, "write", MAILBOX_LOG_FILE, (int)n);
	}
	if ((ret = sio_fsync(sio, box->log_fd, true)) < 0) {
		(void)sio_ftruncate(sio, box->log_fd, box->log_offset);
		return store_io_error(box->user, "fsync", MAILBOX_LOG_FILE, ret);
	}
	/* Listeners hear of the change once: a DONE record (after the file
	   work of a change already announced) changes nothing they see.
	   The frame is u32 length, u8 type, ... */
	if (b->data[4] != LOG_DONE)
		store_notify_changed(box->user, box->name);
	ret = log_read_tail(box, &torn);
	if (ret == STORE_OK && torn)
		ret = STORE_ERR_CORRUPT;
	if (ret == STORE_ERR_CORRUPT) {
		log_error("store %s: %s/%s: record just written does not read back",
			  box->user->name, box->dir, MAILBOX_LOG_FILE);
		return store_set_error(box->user, STORE_ERR_TEMP,
				       "Internal error occurred; refer to server log");
	}
	return ret;
}

static int log_write1(struct mailbox *box, uint8_t type, const struct bb *payload)
{
	struct bb b = { 0 };
	int ret;

	log_record(&b, type, payload);
	ret = log_write(box, &b);
	free(b.data);
	return ret;
}

static int log_done(struct mailbox *box, uint64_t offset)
{
	struct bb p = { 0 };
	int ret;

	bb_u64(&p, offset);
	ret = log_write1(box, LOG_DONE, &p);
	free(p.data);
	return ret;
}

static void log_header(struct bb *b, uint32_t uidvalidity, uint32_t gen)
{
	bb_put(b, LOG_MAGIC, 8);
	bb_u32(b, uidvalidity);
	bb_u32(b, gen);
	bb_u32(b, crc(b->data, 16));
	bb_u32(b, 0);
}

/* ---- index snapshots ---------------------------------------------------- */

static void index_serialize(const struct mailbox *box, uint32_t gen,
			    struct bb *b)
{
	uint32_t live = 0;

	for (uint32_t i = 0; i < box->count; i++) {
		if ((box->recs[i].flags & MAIL_EXPUNGED) == 0)
			live++;
	}
	bb_put(b, INDEX_MAGIC, 8);
	bb_u32(b, box->uidvalidity);
	bb_u32(b, box->uidnext);
	bb_u64(b, box->highestmodseq);
	bb_u32(b, gen);
	bb_u32(b, box->first_recent_uid);
	bb_u64(b, LOG_HEADER_SIZE);
	bb_u32(b, live);
	bb_u32(b, box->kw_count);
	for (unsigned int i = 0; i < box->kw_count; i++)
		bb_str(b, box->keywords[i]);
	for (uint32_t i = 0; i < box->count; i++) {
		const struct mail_record *rec = &box->recs[i];

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		bb_u32(b, rec->uid);
		bb_u32(b, rec->flags & MAIL_FLAGS_MASK);
		bb_u64(b, rec->keywords);
		bb_u64(b, rec->modseq);
		bb_u64(b, rec->size);
		bb_u64(b, rec->vsize);
		bb_u64(b, (uint64_t)rec->internaldate);
		bb_u64(b, (uint64_t)rec->savedate);
		bb_str(b, rec->base);
	}
	exp_hist_serialize(box, b);
	bb_u32(b, crc(b->data, b->len));
}

/* rd_str_arena - like rd_str(), but the copy goes to *arena (advanced) */
static const char *rd_str_arena(struct rd *r, char **arena)
{
	uint16_t len = rd_u16(r);
	char *s = *arena;

	if (r->bad || (size_t)(r->end - r->p) < len || len == 0 ||
	    memchr(r->p, '\0', len) != NULL || memchr(r->p, '/', len) != NULL) {
		r->bad = true;
		return NULL;
	}
	memcpy(s, r->p, len);
	s[len] = '\0';
	r->p += len;
	*arena += len + 1;
	return s;
}

/* Parse an index into the (empty) view. */
static bool index_parse(struct mailbox *box, const uint8_t *data, size_t size,
			uint64_t *log_offset_r, const char **reason_r)
{
	struct rd r = { .p = data, .end = data + size };
	uint32_t sum, count, kw_count, prev_uid = 0;
	char magic[8], *arena;

	if (size < 8 + 4 || memcmp(data, INDEX_MAGIC, 8) != 0) {
		*reason_r = "bad magic";
		return false;
	}
	memcpy(&sum, data + size - 4, 4);
	if (sum != crc(data, size - 4)) {
		*reason_r = "checksum mismatch";
		return false;
	}
	r.end = data + size - 4;
	rd_get(&r, magic, 8);
	box->uidvalidity = rd_u32(&r);
	box->uidnext = rd_u32(&r);
	box->highestmodseq = rd_u64(&r);
	box->log_gen = rd_u32(&r);
	box->first_recent_uid = rd_u32(&r);
	*log_offset_r = rd_u64(&r);
	count = rd_u32(&r);
	kw_count = rd_u32(&r);
	if (r.bad || kw_count > STORE_MAX_KEYWORDS || box->uidvalidity == 0 ||
	    box->uidnext == 0) {
		*reason_r = "bad header";
		return false;
	}
	for (uint32_t i = 0; i < kw_count; i++) {
		box->keywords[i] = rd_str(&r);
		if (r.bad) {
			*reason_r = "bad keyword";
			return false;
		}
		box->kw_count++;
	}
	/* Names take at most the file's bytes (each has a 2-byte length
	   where the copy has a NUL). */
	if (count > size / 16) {
		*reason_r = "bad header";
		return false;
	}
	if (box->alloc < count) {
		box->alloc = count + 64;
		box->recs = mem_realloc(box->recs, box->alloc * sizeof(*box->recs));
	}
	box->base_arena = mem_realloc(NULL, size);
	box->base_arena_size = size;
	arena = box->base_arena;
	for (uint32_t i = 0; i < count; i++) {
		struct mail_record rec = { 0 };

		rec.uid = rd_u32(&r);
		rec.flags = rd_u32(&r) & MAIL_FLAGS_MASK;
		rec.keywords = rd_u64(&r);
		rec.modseq = rd_u64(&r);
		rec.size = rd_u64(&r);
		rec.vsize = rd_u64(&r);
		rec.internaldate = (int64_t)rd_u64(&r);
		rec.savedate = (int64_t)rd_u64(&r);
		rec.base = rd_str_arena(&r, &arena);
		if (r.bad || rec.uid <= prev_uid || rec.uid >= box->uidnext) {
			*reason_r = "bad message record";
			return false;
		}
		prev_uid = rec.uid;
		view_append(box, &rec);
	}
	if (!exp_hist_parse(box, &r)) {
		*reason_r = "bad expunge history";
		return false;
	}
	if (r.p != r.end) {
		*reason_r = "trailing data";
		return false;
	}
	return true;
}

/* ---- metadata files ----------------------------------------------------- */

static int write_file_atomic(struct store_user *user, int dir_fd,
			     const char *name, const struct bb *b)
{
	char tmp[STORE_UNIQUE_MAX + 16], unique[STORE_UNIQUE_MAX];
	struct sio *sio = user->sio;
	ssize_t n;
	int fd, ret;

	store_unique_name(user->store, unique);
	snprintf(tmp, sizeof(tmp), "tmp/%s", unique);
	fd = sio_openat(sio, dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return store_io_error(user, "create", tmp, fd);
	n = sio_pwrite(sio, fd, b->data, b->len, 0);
	ret = n < 0 ? (int)n : sio_fsync(sio, fd, false);
	(void)sio_close(sio, fd);
	if (ret == 0)
		ret = sio_renameat(sio, dir_fd, tmp, dir_fd, name, 0);
	if (ret < 0) {
		(void)sio_unlinkat(sio, dir_fd, tmp, 0);
		return store_io_error(user, "write", name, ret);
	}
	return STORE_OK;
}

int mailbox_metadata_init(struct store_user *user, const char *dir,
			  uint32_t uidvalidity)
{
	struct mailbox box;
	struct bb b = { 0 };
	int dir_fd, ret;

	dir_fd = sio_openat(user->sio, user->root_fd, dir,
			    O_RDONLY | O_DIRECTORY, 0);
	if (dir_fd < 0)
		return store_io_error(user, "open", dir, dir_fd);
	memset(&box, 0, sizeof(box));
	box.uidvalidity = uidvalidity;
	box.uidnext = 1;
	box.first_recent_uid = 1;
	box.highestmodseq = 1;
	/* The log first, the index last: a reader that finds the index
	   finds the log too (INBOX's index says "created", see
	   store_user_open()), never an index without its log, which it
	   would take for damage and rebuild under the creator's feet. */
	log_header(&b, uidvalidity, 1);
	ret = write_file_atomic(user, dir_fd, MAILBOX_LOG_FILE, &b);
	if (ret == STORE_OK) {
		b.len = 0;
		index_serialize(&box, 1, &b);
		ret = write_file_atomic(user, dir_fd, MAILBOX_INDEX_FILE, &b);
	}
	if (ret == STORE_OK && (ret = sio_fsync(user->sio, dir_fd, false)) < 0)
		ret = store_io_error(user, "fsync", dir, ret);
	free(b.data);
	(void)sio_close(user->sio, dir_fd);
	return ret;
}

int mailbox_metadata_exists(struct store_user *user, const char *dir)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, MAILBOX_INDEX_FILE);
	return sio_fstatat(user->sio, user->root_fd, path, &st, 0) == 0 ?
		STORE_OK : STORE_ERR_NOTFOUND;
}

/* log_open_flags - how the change log is opened: on NFS with O_DIRECT,
   so that its reads and writes bypass the client's page cache. Our locks
   live on other files (SPOOL/.locks/), so taking one does not make the
   NFS client revalidate the log's cached pages, and a reader could see
   another node's appends only partly (a torn record, a false alarm of
   damage). O_DIRECT on NFS has no alignment rules. */
static int log_open_flags(const struct mailbox *box)
{
	return O_RDWR | (box->user->store->spool_nfs ? O_DIRECT : 0);
}

/* log_names_fresh_nfs - on NFS, before the metadata files are opened by
   name under a new lock: close our descriptor of the log (noting which
   file it was in *dev_r, *ino_r if not NULL; 0 if none) and make the
   client ask the server for the directory's attributes, so that it
   drops names it cached under it if another node changed them. Without this an open by
   name could return the log that another node had replaced by a
   compaction while the index was already the new one (seen in the lab:
   a node then compacted from the stale log, and the other node's newer
   records were gone). */
static void log_names_fresh_nfs(struct mailbox *box, dev_t *dev_r,
				ino_t *ino_r)
{
	struct sio *sio = box->user->sio;
	struct stat st;

	if (dev_r != NULL) {
		*dev_r = 0;
		*ino_r = 0;
	}
	if (box->log_fd >= 0) {
		if (dev_r != NULL && sio_fstat(sio, box->log_fd, &st) == 0) {
			*dev_r = st.st_dev;
			*ino_r = st.st_ino;
		}
		(void)sio_close(sio, box->log_fd);
		box->log_fd = -1;
	}
	(void)sio_fstat_fresh(sio, box->dir_fd, &st);
}

/* log_fd_is - is fd (just opened by name) the file box->log_fd is open
   on? False too when the old one is gone (ESTALE on NFS). */
static bool log_fd_is(struct mailbox *box, int fd)
{
	struct stat a, b;

	if (sio_fstat(box->user->sio, fd, &a) < 0 ||
	    sio_fstat(box->user->sio, box->log_fd, &b) < 0)
		return false;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

int mailbox_write_snapshot(struct mailbox *box)
{
	struct sio *sio = box->user->sio;
	uint32_t gen = box->log_gen + 1;
	struct bb b = { 0 };
	int fd, ret;

	/* Index first: see "Compaction" at the top. */
	exp_hist_trim(box);
	index_serialize(box, gen, &b);
	ret = write_file_atomic(box->user, box->dir_fd, MAILBOX_INDEX_FILE, &b);
	if (ret == STORE_OK) {
		b.len = 0;
		log_header(&b, box->uidvalidity, gen);
		ret = write_file_atomic(box->user, box->dir_fd,
					MAILBOX_LOG_FILE, &b);
	}
	free(b.data);
	if (ret < 0)
		return ret;
	if ((ret = sio_fsync(sio, box->dir_fd, false)) < 0)
		return store_io_error(box->user, "fsync", box->dir, ret);
	fd = sio_openat(sio, box->dir_fd, MAILBOX_LOG_FILE, log_open_flags(box), 0);
	if (fd < 0)
		return store_io_error(box->user, "open", MAILBOX_LOG_FILE, fd);
	if (box->log_fd >= 0)
		(void)sio_close(sio, box->log_fd);
	box->log_fd = fd;
	box->log_marked = false;
	box->log_gen = gen;
	box->log_offset = LOG_HEADER_SIZE;
	log_debug("store %s: mailbox %s: wrote log generation %u "
		  "(UIDNEXT %u, HIGHESTMODSEQ %llu)", box->user->name,
		  box->name, gen, box->uidnext,
		  (unsigned long long)box->highestmodseq);
	return STORE_OK;
}

/* Read the log header of an open log fd. */
static int log_read_header(struct mailbox *box, int fd, uint32_t *uidvalidity_r,
			   uint32_t *gen_r, uint32_t *writer_r)
{
	uint8_t hdr[LOG_HEADER_SIZE];
	uint32_t sum;
	ssize_t n;

	n = sio_pread(box->user->sio, fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return store_io_error(box->user, "read", MAILBOX_LOG_FILE, (int)n);
	if (n != LOG_HEADER_SIZE || memcmp(hdr, LOG_MAGIC, 8) != 0)
		return STORE_ERR_CORRUPT;
	memcpy(&sum, hdr + 16, 4);
	if (sum != crc(hdr, 16))
		return STORE_ERR_CORRUPT;
	memcpy(uidvalidity_r, hdr + 8, 4);
	memcpy(gen_r, hdr + 12, 4);
	memcpy(writer_r, hdr + LOG_WRITER_OFFSET, 4);
	return STORE_OK;
}

static void view_reset_state(struct mailbox *box)
{
	view_clear(box);
	pending_clear(box);
	box->exp_count = 0;
	box->exp_floor = 0;
	box->exp_floor_known = false;
	box->loaded = false;
	box->uidvalidity = box->uidnext = box->first_recent_uid = 0;
	box->highestmodseq = 0;
	box->log_gen = 0;
	box->log_offset = 0;
}

int mailbox_load(struct mailbox *box, const char **reason_r)
{
	struct sio *sio = box->user->sio;
	uint32_t log_uidvalidity, log_gen, log_writer;
	uint64_t log_offset;
	struct stat st;
	uint8_t *data;
	ssize_t n;
	bool torn;
	int fd, ret;

	view_reset_state(box);
	if (box->user->store->spool_nfs)
		log_names_fresh_nfs(box, NULL, NULL);
	fd = sio_openat(sio, box->dir_fd, MAILBOX_INDEX_FILE, O_RDONLY, 0);
	if (fd < 0) {
		if (fd != -ENOENT)
			return store_io_error(box->user, "open", MAILBOX_INDEX_FILE, fd);
		*reason_r = "index file missing";
		return STORE_ERR_CORRUPT;
	}
	ret = sio_fstat(sio, fd, &st);
	if (ret < 0) {
		(void)sio_close(sio, fd);
		return store_io_error(box->user, "fstat", MAILBOX_INDEX_FILE, ret);
	}
	/* One read of the whole file; not zeroed (it is all overwritten). */
	data = mem_realloc(NULL, (size_t)st.st_size + 1);
	n = sio_pread(sio, fd, data, (size_t)st.st_size, 0);
	(void)sio_close(sio, fd);
	if (n < 0) {
		free(data);
		return store_io_error(box->user, "read", MAILBOX_INDEX_FILE, (int)n);
	}
	if (!index_parse(box, data, (size_t)n, &log_offset, reason_r)) {
		free(data);
		view_reset_state(box);
		return STORE_ERR_CORRUPT;
	}
	free(data);

	if (box->log_fd >= 0)
		(void)sio_close(sio, box->log_fd);
	box->log_fd = sio_openat(sio, box->dir_fd, MAILBOX_LOG_FILE, log_open_flags(box), 0);
	if (box->log_fd == -ENOENT) {
		*reason_r = "log file missing";
		view_reset_state(box);
		return STORE_ERR_CORRUPT;
	}
	if (box->log_fd < 0) {
		ret = box->log_fd;
		box->log_fd = -1;
		return store_io_error(box->user, "open", MAILBOX_LOG_FILE, ret);
	}
	box->log_marked = false;
	ret = log_read_header(box, box->log_fd, &log_uidvalidity, &log_gen,
			      &log_writer);
	if (ret == STORE_ERR_CORRUPT) {
		*reason_r = "bad log header";
		view_reset_state(box);
		return ret;
	}
	if (ret < 0)
		return ret;
	if (log_uidvalidity != box->uidvalidity) {
		*reason_r = "log and index disagree on UIDVALIDITY";
		view_reset_state(box);
		return STORE_ERR_CORRUPT;
	}
	if (log_gen + 1 == box->log_gen) {
		/* A compaction died between its two renames: the index holds
		   everything; the log is stale and gets replaced by the next
		   EX holder (mailbox_sync_locked()). Read nothing from it. */
		box->log_offset = UINT64_MAX;
		box->loaded = true;
		return STORE_OK;
	}
	if (log_gen != box->log_gen || log_offset < LOG_HEADER_SIZE) {
		*reason_r = "log generation does not match the index";
		view_reset_state(box);
		return STORE_ERR_CORRUPT;
	}
	box->log_offset = log_offset;
	ret = log_read_tail(box, &torn);
	if (ret == STORE_ERR_CORRUPT) {
		*reason_r = "malformed log record";
		view_reset_state(box);
		return ret;
	}
	if (ret < 0)
		return ret;
	box->loaded = true;
	log_debug("store %s: mailbox %s: loaded log generation %u to %llu%s "
		  "(UIDNEXT %u, HIGHESTMODSEQ %llu)", box->user->name,
		  box->name, box->log_gen, (unsigned long long)box->log_offset,
		  torn ? " (torn)" : "", box->uidnext,
		  (unsigned long long)box->highestmodseq);
	return STORE_OK;
}

void mailbox_view_reset(struct mailbox *box)
{
	view_reset_state(box);
}

void mailbox_view_add(struct mailbox *box, const struct mail_record *rec)
{
	view_append(box, rec);
}

/* ---- open / close --------------------------------------------------------- */

int mailbox_open_raw(struct store_user *user, const char *name,
		     unsigned int flags, struct mailbox **box_r)
{
	char *canonical, *dir, lock_name[LOCK_NAME_MAX + 1];
	struct mailbox *box;
	struct stat st;
	int fd, ret;

	if ((ret = store_mailbox_dir(user, name, &canonical, &dir)) < 0)
		return ret;
	fd = sio_openat(user->sio, user->root_fd, dir, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0 || sio_fstat(user->sio, fd, &st) < 0 ||
	    sio_fstatat(user->sio, fd, "cur", &st, 0) < 0 ||
	    sio_fstat(user->sio, fd, &st) < 0) {
		if (fd >= 0)
			(void)sio_close(user->sio, fd);
		free(dir);
		ret = (fd < 0 && fd != -ENOENT && fd != -ENOTDIR) ?
			store_io_error(user, "open", name, fd) :
			store_set_error(user, STORE_ERR_NOTFOUND,
					"Mailbox doesn't exist: %s", canonical);
		free(canonical);
		return ret;
	}
	box = mem_zalloc(sizeof(*box));
	box->user = user;
	box->name = canonical;
	box->dir = dir;
	box->open_flags = flags;
	box->dir_fd = fd;
	box->dev = st.st_dev;
	box->ino = st.st_ino;
	box->log_fd = -1;
	lock_name_mailbox(user->name, canonical, lock_name);
	box->lock = lock_create(user->store->locks, lock_name,
				LOCK_CLASS_MAILBOX);
	box->special_use = store_mailbox_special_use(user, dir);
	box->rights = ACL_RIGHTS_ALL;
	*box_r = box;
	return STORE_OK;
}

uint32_t mailbox_rights_flags(unsigned int rights)
{
	uint32_t flags = 0;

	if ((rights & ACL_RIGHT_SEEN) != 0)
		flags |= MAIL_SEEN;
	if ((rights & ACL_RIGHT_DELETE_MESSAGES) != 0)
		flags |= MAIL_DELETED;
	if ((rights & ACL_RIGHT_WRITE) != 0)
		flags |= MAIL_ANSWERED | MAIL_FLAGGED | MAIL_DRAFT;
	return flags;
}

int mailbox_rights_refresh(struct mailbox *box)
{
	struct stat st;
	int ret;

	if (box->user->requester == NULL)
		return STORE_OK;
	/* The ACL file is replaced with rename(): a change is a new inode
	   (and mtime). */
	ret = sio_fstatat(box->user->sio, box->dir_fd, STORE_ACL_FILE, &st, 0);
	if (ret == -ENOENT)
		memset(&st, 0, sizeof(st));
	else if (ret < 0)
		return store_io_error(box->user, "stat", STORE_ACL_FILE, ret);
	if (box->acl_known && st.st_ino == box->acl_ino &&
	    st.st_mtim.tv_sec == box->acl_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == box->acl_mtime.tv_nsec)
		return STORE_OK;
	if ((ret = store_rights_get(box->user, box->name, &box->rights)) < 0)
		return ret;
	box->acl_known = true;
	box->acl_ino = st.st_ino;
	box->acl_mtime = st.st_mtim;
	return STORE_OK;
}

unsigned int mailbox_rights(const struct mailbox *box)
{
	return box->rights;
}

void mailbox_take_user(struct mailbox *box)
{
	box->owns_user = true;
}

int mailbox_open(struct store_user *user, const char *name,
		 unsigned int flags, struct mailbox **box_r)
{
	struct mailbox *box;
	int ret;

	*box_r = NULL;
	if (user->requester != NULL &&
	    (ret = store_rights_check(user, name,
				      (flags & MAILBOX_OPEN_INSERT) != 0 ?
				      ACL_RIGHT_INSERT : ACL_RIGHT_READ,
				      NULL)) < 0)
		return ret;
	if ((ret = mailbox_open_raw(user, name, flags, &box)) < 0)
		return ret;
	if ((ret = mailbox_sync(box, 0, NULL)) < 0) {
		mailbox_close(&box);
		return ret;
	}
	*box_r = box;
	return STORE_OK;
}

void mailbox_close(struct mailbox **_box)
{
	struct mailbox *box = *_box;

	if (box == NULL)
		return;
	*_box = NULL;
	mailbox_cache_free(box);
	view_clear(box);
	pending_clear(box);
	free(box->recs);
	free(box->exp_hist);
	free(box->changed);
	if (box->lock != NULL)
		lock_destroy(&box->lock);
	if (box->log_fd >= 0)
		(void)sio_close(box->user->sio, box->log_fd);
	(void)sio_close(box->user->sio, box->dir_fd);
	if (box->owns_user)
		store_user_close(&box->user);
	free(box->name);
	free(box->dir);
	free(box);
}

const char *mailbox_name(const struct mailbox *box) { return box->name; }
struct store_user *mailbox_user(const struct mailbox *box) { return box->user; }
uint32_t mailbox_count(const struct mailbox *box) { return box->count; }
uint32_t mailbox_uidvalidity(const struct mailbox *box) { return box->uidvalidity; }
uint32_t mailbox_uidnext(const struct mailbox *box) { return box->uidnext; }
uint64_t mailbox_highestmodseq(const struct mailbox *box) { return box->highestmodseq; }
unsigned int mailbox_keyword_count(const struct mailbox *box) { return box->kw_count; }

const char *mailbox_keyword_name(const struct mailbox *box, unsigned int i)
{
	return i < box->kw_count ? box->keywords[i] : NULL;
}

const struct mail_record *mailbox_record(const struct mailbox *box,
					 uint32_t seq_index)
{
	return seq_index < box->count ? &box->recs[seq_index] : NULL;
}

const struct mail_record *mailbox_lookup_uid(const struct mailbox *box,
					     uint32_t uid, uint32_t *index_r)
{
	struct mail_record *rec = view_find(box, uid);

	if (rec != NULL && index_r != NULL)
		*index_r = (uint32_t)(rec - box->recs);
	return rec;
}

void mailbox_get_status(const struct mailbox *box, struct store_status *r)
{
	memset(r, 0, sizeof(*r));
	for (uint32_t i = 0; i < box->count; i++) {
		const struct mail_record *rec = &box->recs[i];

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		r->messages++;
		if ((rec->flags & MAIL_SEEN) == 0)
			r->unseen++;
		if ((rec->flags & MAIL_DELETED) != 0)
			r->deleted++;
		if (rec->uid >= box->first_recent_uid)
			r->recent++;
		r->size += rec->vsize;
	}
	r->uidvalidity = box->uidvalidity;
	r->uidnext = box->uidnext;
	r->highestmodseq = box->highestmodseq;
	r->special_use = box->special_use;
}

/* ---- locking and sync ------------------------------------------------------ */

static void stamp_from_view(const struct mailbox *box, struct mailbox_stamp *s)
{
	memset(s, 0, sizeof(*s));
	s->uidvalidity = box->uidvalidity;
	s->uidnext = box->uidnext;
	s->highestmodseq = box->highestmodseq;
	s->log_gen = box->log_gen;
	s->log_size = box->log_offset;
}

static void stamp_publish(struct mailbox *box)
{
	struct mailbox_stamp s;
	uint8_t value[LOCK_VALUE_SIZE];

	_Static_assert(sizeof(s) == LOCK_VALUE_SIZE, "stamp must fill the LVB");
	stamp_from_view(box, &s);
	memcpy(value, &s, sizeof(value));
	lock_value_set(box->lock, value);
}

/* Does the stamp say our view is current? */
static bool stamp_matches(const struct mailbox *box)
{
	struct mailbox_stamp s, mine;

	if (!box->loaded || !lock_value_is_valid(box->lock))
		return false;
	memcpy(&s, lock_value(box->lock), sizeof(s));
	if (s.uidvalidity == 0)
		return false;
	stamp_from_view(box, &mine);
	return memcmp(&s, &mine, sizeof(s)) == 0;
}

/* The directory is still the one we opened (not deleted/renamed away)? */
static int mailbox_check_dir(struct mailbox *box)
{
	struct stat st;
	int ret;

	ret = sio_fstatat(box->user->sio, box->user->root_fd, box->dir, &st, 0);
	if (ret == -ENOENT || ret == -ENOTDIR ||
	    (ret == 0 && (st.st_dev != box->dev || st.st_ino != box->ino))) {
		box->deleted = true;
		return store_set_error(box->user, STORE_ERR_NOTFOUND,
				       "Mailbox was deleted or renamed: %s",
				       box->name);
	}
	if (ret < 0)
		return store_io_error(box->user, "stat", box->dir, ret);
	return STORE_OK;
}

/* The log on disk changed generation (compaction or rebuild by another
   node): reload and fold the difference into the view as changes. */
/* old_records_free - free the records of a replaced view (their names
   may be in the replaced arena) */
static void old_records_free(struct mail_record *old, uint32_t count,
			     char *arena, size_t arena_size)
{
	for (uint32_t k = 0; k < count; k++) {
		if (!base_in_arena(old[k].base, arena, arena_size))
			free((char *)old[k].base);
	}
	free(old);
	free(arena);
}

static int mailbox_reload(struct mailbox *box, const char **reason_r)
{
	struct mail_record *old = box->recs;
	uint32_t old_count = box->count, old_uidvalidity = box->uidvalidity;
	uint64_t old_modseq = box->highestmodseq;
	char *old_arena = box->base_arena;
	size_t old_arena_size = box->base_arena_size;
	uint32_t i = 0, j = 0;
	bool was_loaded = box->loaded;
	int ret;

	box->recs = NULL;
	box->count = box->alloc = 0;
	box->base_arena = NULL;
	box->base_arena_size = 0;
	ret = mailbox_load(box, reason_r);
	if (ret < 0 || !was_loaded) {
		old_records_free(old, old_count, old_arena, old_arena_size);
		return ret;
	}
	if (box->uidvalidity != old_uidvalidity) {
		box->uidvalidity_changed = true;
		old_records_free(old, old_count, old_arena, old_arena_size);
		return STORE_OK;
	}
	/* Merge: records gone from the new state are expunged; keep them in
	   the view (flagged) until reported, at their sequence positions.
	   Those keep a name of their own: the old arena goes. */
	{
		uint32_t merged_alloc = old_count + box->count + 1;
		struct mail_record *merged = mem_calloc(merged_alloc,
							sizeof(*merged));
		uint32_t n = 0;

		while (i < old_count || j < box->count) {
			if (j >= box->count ||
			    (i < old_count && old[i].uid < box->recs[j].uid)) {
				merged[n] = old[i++];
				if (base_in_arena(merged[n].base, old_arena,
						  old_arena_size))
					merged[n].base = mem_strdup(merged[n].base);
				merged[n++].flags |= MAIL_EXPUNGED;
			} else if (i >= old_count || box->recs[j].uid < old[i].uid) {
				merged[n++] = box->recs[j++];
			} else {
				struct mail_record *nr = &box->recs[j++];

				if ((old[i].flags & MAIL_EXPUNGED) != 0)
					nr->flags |= MAIL_EXPUNGED;
				else if (nr->modseq > old_modseq)
					view_changed(box, nr->uid);
				nr->flags |= old[i].flags & MAIL_RECENT;
				merged[n++] = *nr;
				if (!base_in_arena(old[i].base, old_arena,
						   old_arena_size))
					free((char *)old[i].base);
				i++;
			}
		}
		free(old);
		free(old_arena);
		free(box->recs);
		box->recs = merged;
		box->count = n;
		box->alloc = merged_alloc;
	}
	return STORE_OK;
}

/* Redo the file work of records whose writer died (EX held). */
static int mailbox_finish_pending(struct mailbox *box, bool recovering,
				  bool write_done);
static int mailbox_scan_new(struct mailbox *box, bool ex);
static void mailbox_clean_tmp(struct mailbox *box);

/* mailbox_writer_died - the log's writer mark is set: its last writer
   died holding EX on NFS, and late writes of it may still land. Do the
   pending file work without logging it, then move to a new log file
   (see "Writers that died on NFS" at the top). */
static int mailbox_writer_died(struct mailbox *box)
{
	int ret;

	log_warn("store %s: mailbox %s: the last writer of the change log "
		 "died; starting a new log", box->user->name, box->name);
	if ((ret = mailbox_finish_pending(box, true, false)) < 0)
		return ret;
	return mailbox_write_snapshot(box);
}

static int mailbox_repair(struct mailbox *box, const char *reason)
{
	log_warn("store %s: mailbox %s: metadata damaged (%s); rebuilding "
		 "from the Maildir", box->user->name, box->name, reason);
	return mailbox_rebuild_locked(box);
}

/* Bring the view up to date under the lock held in mode. Returns
   SYNC_NEED_EX when only an EX holder can finish (new/ has files, a
   writer died, the metadata needs repair). */
static int mailbox_sync_locked(struct mailbox *box, enum lock_mode mode)
{
	struct sio *sio = box->user->sio;
	const char *reason = NULL;
	bool ex = mode == LOCK_MODE_EX, torn = false;
	uint32_t writer = 0;
	int ret;

	/* With writer marks (NFS) the header is read every time. */
	if (box->user->store->log_writer_mark || !stamp_matches(box)) {
		bool nfs = box->user->store->spool_nfs, same;
		uint32_t uidvalidity, gen;
		dev_t old_dev = 0;
		ino_t old_ino = 0;
		struct stat st;
		int fd;

		if (nfs)
			log_names_fresh_nfs(box, &old_dev, &old_ino);
		fd = sio_openat(sio, box->dir_fd, MAILBOX_LOG_FILE, log_open_flags(box), 0);
		if (fd == -ENOENT) {
			ret = STORE_ERR_CORRUPT;
			reason = "log file missing";
		} else if (fd < 0) {
			return store_io_error(box->user, "open", MAILBOX_LOG_FILE, fd);
		} else {
			ret = log_read_header(box, fd, &uidvalidity, &gen,
					      &writer);
			if (ret == STORE_ERR_CORRUPT)
				reason = "bad log header";
		}
		same = ret == STORE_OK && box->loaded && gen == box->log_gen &&
			uidvalidity == box->uidvalidity &&
			(!nfs ? log_fd_is(box, fd) :
			 old_ino != 0 && sio_fstat(sio, fd, &st) == 0 &&
			 st.st_dev == old_dev && st.st_ino == old_ino);
		if (same) {
			/* Same log: keep one descriptor of it (on NFS the new
			   one; ours was closed) and read the tail. */
			if (nfs)
				box->log_fd = fd;
			else
				(void)sio_close(sio, fd);
			if (box->log_offset != UINT64_MAX) {
				ret = log_read_tail(box, &torn);
				if (ret == STORE_ERR_CORRUPT)
					reason = "malformed log record";
			}
		} else if (ret == STORE_OK) {
			(void)sio_close(sio, fd);
			ret = mailbox_reload(box, &reason);
		} else if (fd >= 0) {
			(void)sio_close(sio, fd);
		}
		if (ret == STORE_ERR_CORRUPT) {
			if (!ex)
				return SYNC_NEED_EX;
			if ((ret = mailbox_repair(box, reason)) < 0)
				return ret;
			torn = false;
			writer = 0;	/* a new log */
		} else if (ret < 0) {
			return ret;
		}
	}
	if (writer != 0) {
		if (!ex)
			return SYNC_NEED_EX;
		if ((ret = mailbox_writer_died(box)) < 0)
			return ret;
		torn = false;
	}
	if (box->log_offset == UINT64_MAX || torn || box->pending_count > 0) {
		if (!ex)
			return SYNC_NEED_EX;
		if (box->log_offset == UINT64_MAX) {
			/* Finish the interrupted compaction. */
			if ((ret = mailbox_write_snapshot(box)) < 0)
				return ret;
		}
		if (torn) {
			log_warn("store %s: mailbox %s: cutting a torn record "
				 "off the change log at %llu", box->user->name,
				 box->name, (unsigned long long)box->log_offset);
			if ((ret = log_mark_writer(box)) < 0)
				return ret;
			ret = sio_ftruncate(sio, box->log_fd, box->log_offset);
			if (ret < 0)
				return store_io_error(box->user, "truncate",
						      MAILBOX_LOG_FILE, ret);
		}
		if ((ret = mailbox_finish_pending(box, true, true)) < 0)
			return ret;
	}
	ret = mailbox_scan_new(box, ex);
	if (ret != STORE_OK)
		return ret;
	if (ex) {
		/* \Recent belongs to the first session that sees a message. */
		if ((box->open_flags & MAILBOX_OPEN_READONLY) == 0 &&
		    box->first_recent_uid < box->uidnext) {
			struct bb p = { 0 };
			uint32_t first = box->first_recent_uid;

			bb_u32(&p, box->uidnext);
			ret = log_write1(box, LOG_RECENT, &p);
			free(p.data);
			if (ret < 0)
				return ret;
			for (uint32_t i = 0; i < box->count; i++) {
				if (box->recs[i].uid >= first)
					box->recs[i].flags |= MAIL_RECENT;
			}
		}
		mailbox_clean_tmp(box);
	} else if ((box->open_flags & MAILBOX_OPEN_READONLY) == 0 &&
		   box->first_recent_uid < box->uidnext) {
		return SYNC_NEED_EX;
	}
	return STORE_OK;
}

/* mailbox_lock_flags - lock and sync; flags are LOCK_FLAG_* (NOQUEUE:
   MAILBOX_LOCK_BUSY instead of waiting) */
static int mailbox_lock_flags(struct mailbox *box, enum lock_mode mode,
			      unsigned int flags)
{
	int ret;

	if (box->deleted)
		return store_set_error(box->user, STORE_ERR_NOTFOUND,
				       "Mailbox was deleted or renamed: %s",
				       box->name);
	for (;;) {
		ret = sio_lock(box->user->sio, box->lock, mode, flags,
			       box->user->store->lock_timeout_msecs);
		if (ret == -EAGAIN && (flags & LOCK_FLAG_NOQUEUE) != 0)
			return MAILBOX_LOCK_BUSY;
		if (ret < 0) {
			log_warn("store %s: mailbox %s lock: %s", box->user->name,
				 box->name, strerror(-ret));
			return store_set_error(box->user, STORE_ERR_TEMP,
					       "Mailbox is locked; try again later");
		}
		if ((ret = mailbox_check_dir(box)) < 0) {
			lock_release(box->lock);
			return ret;
		}
		ret = mailbox_sync_locked(box, mode);
		if (ret == SYNC_NEED_EX && mode == LOCK_MODE_PR) {
			lock_release(box->lock);
			mode = LOCK_MODE_EX;
			continue;
		}
		if (ret < 0) {
			if (mode == LOCK_MODE_EX && box->loaded)
				stamp_publish(box);
			mailbox_clear_writer(box);
			lock_release(box->lock);
			return ret;
		}
		mailbox_cache_note_locked(box);
		return STORE_OK;
	}
}

/* mailbox_lock - lock in mode (waiting) and bring the view up to date */
int mailbox_lock(struct mailbox *box, enum lock_mode mode)
{
	return mailbox_lock_flags(box, mode, 0);
}

/* mailbox_lock_try - the same, or MAILBOX_LOCK_BUSY instead of waiting */
int mailbox_lock_try(struct mailbox *box, enum lock_mode mode)
{
	return mailbox_lock_flags(box, mode, LOCK_FLAG_NOQUEUE);
}

void mailbox_unlock(struct mailbox *box)
{
	if (lock_get_mode(box->lock) == LOCK_MODE_EX) {
		bool compacted = false;

		if (box->log_offset >= box->user->store->log_compact_bytes &&
		    box->log_offset != UINT64_MAX) {
			int ret = mailbox_write_snapshot(box);

			if (ret < 0)
				log_warn("store %s: mailbox %s: compaction failed",
					 box->user->name, box->name);
			compacted = ret == STORE_OK;
		}
		mailbox_cache_write_locked(box, compacted);
		stamp_publish(box);
		mailbox_clear_writer(box);
	}
	/* Keep the lock for the session's next command where that is safe:
	   a blocking callback ends the caching when another node or session
	   wants the mailbox, and it is served by the session's loop, so only
	   sessions on a running loop (async sio) may cache. */
	if (box->user->store->lock_cache_hold_msecs != 0 &&
	    sio_is_async(box->user->sio))
		lock_release_cached(box->lock,
				    box->user->store->lock_cache_hold_msecs);
	else
		lock_release(box->lock);
}

int mailbox_sync(struct mailbox *box, unsigned int flags,
		 struct mailbox_changes *changes_r)
{
	uint32_t *expunged = NULL, *seqs = NULL;
	size_t expunged_count = 0;
	uint32_t n = 0;
	int ret;

	if (changes_r != NULL)
		memset(changes_r, 0, sizeof(*changes_r));
	/* A failure here (mailbox gone) is found by the lock below. */
	(void)mailbox_rights_refresh(box);
	ret = mailbox_lock(box, LOCK_MODE_PR);
	if (ret == STORE_ERR_NOTFOUND && changes_r != NULL)
		changes_r->deleted = true;
	if (ret < 0)
		return ret;
	mailbox_unlock(box);

	if ((flags & MAILBOX_SYNC_NO_EXPUNGE) == 0) {
		uint32_t reported = 0;

		for (uint32_t i = 0; i < box->count; i++) {
			struct mail_record *rec = &box->recs[i];

			if ((rec->flags & MAIL_EXPUNGED) == 0) {
				if (i < box->reported_count)
					reported++;
				if (n != i)
					box->recs[n] = *rec;
				n++;
				continue;
			}
			if (i < box->reported_count) {
				/* The client knew it: report it, with its
				   sequence number before this sync. */
				expunged = mem_realloc(expunged,
					(expunged_count + 1) * sizeof(*expunged));
				seqs = mem_realloc(seqs,
					(expunged_count + 1) * sizeof(*seqs));
				expunged[expunged_count] = rec->uid;
				seqs[expunged_count++] = i + 1;
			}
			view_base_free(box, rec->base);
		}
		box->count = n;
		box->reported_count = reported;
	}
	if (changes_r != NULL) {
		changes_r->expunged_uids = expunged;
		changes_r->expunged_seqs = seqs;
		changes_r->expunged_count = expunged_count;
		changes_r->new_count = box->count > box->reported_count ?
			box->count - box->reported_count : 0;
		changes_r->keywords_changed = box->keywords_changed;
		changes_r->uidvalidity_changed = box->uidvalidity_changed;
		/* Only changes of records the client knows about, once each. */
		if (box->changed_count > 0)
			qsort(box->changed, box->changed_count, sizeof(uint32_t),
			      uid_cmp);
		for (size_t i = 0; i < box->changed_count; i++) {
			uint32_t idx;

			if (i > 0 && box->changed[i] == box->changed[i - 1])
				continue;
			if (mailbox_lookup_uid(box, box->changed[i], &idx) != NULL &&
			    idx < box->reported_count) {
				changes_r->changed_uids = mem_realloc(
					changes_r->changed_uids,
					(changes_r->changed_count + 1) * sizeof(uint32_t));
				changes_r->changed_uids[changes_r->changed_count++] =
					box->changed[i];
			}
		}
		box->keywords_changed = false;
		box->uidvalidity_changed = false;
	} else {
		free(expunged);
		free(seqs);
	}
	box->changed_count = 0;
	box->reported_count = box->count;
	return STORE_OK;
}

void mailbox_changes_free(struct mailbox_changes *changes)
{
	free(changes->expunged_uids);
	free(changes->expunged_seqs);
	free(changes->changed_uids);
	memset(changes, 0, sizeof(*changes));
}

/* ---- new/ ------------------------------------------------------------------ */

struct new_scan {
	struct mailbox *box;
	char **names;
	size_t count, alloc;
};

static int new_scan_cb(const char *name, unsigned char d_type, void *context)
{
	struct new_scan *scan = context;

	if (name[0] == '.')
		return 0;
	if (scan->count == scan->alloc) {
		scan->alloc = scan->alloc * 2 + 16;
		scan->names = mem_realloc(scan->names,
					  scan->alloc * sizeof(char *));
	}
	scan->names[scan->count++] = mem_strdup(name);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Find a record by base name, newest first (files in new/ with a known
   base are recent APPENDs or COPYs whose move to cur/ was cut short). */
static struct mail_record *view_find_base(struct mailbox *box, const char *base)
{
	for (uint32_t i = box->count; i > 0; i--) {
		if (strcmp(box->recs[i - 1].base, base) == 0)
			return &box->recs[i - 1];
	}
	return NULL;
}

/* Move new/name to cur/ under the record's flags. */
static void mailbox_new_to_cur(struct mailbox *box, const char *name,
			       const struct mail_record *rec)
{
	char src[PATH_MAX + 8], dest[PATH_MAX + 8], fname[PATH_MAX];
	int ret;

	mailbox_file_name(rec->base, rec->flags, fname, sizeof(fname));
	snprintf(src, sizeof(src), "new/%s", name);
	snprintf(dest, sizeof(dest), "cur/%s", fname);
	ret = sio_renameat(box->user->sio, box->dir_fd, src, box->dir_fd, dest, 0);
	if (ret < 0 && ret != -ENOENT)
		log_warn("store %s: mailbox %s: rename %s: %s", box->user->name,
			 box->name, src, strerror(-ret));
}

/* mailbox_dir_revalidate - on NFS, make the client revalidate subdir;
   nothing to do elsewhere */
static void mailbox_dir_revalidate(struct mailbox *box, const char *subdir)
{
	struct stat st;

	if (box->user->store->spool_nfs)
		(void)sio_fstatat_open(box->user->sio, box->dir_fd, subdir,
				       O_DIRECTORY, &st);
}

/* mailbox_new_stat - stat new/ with fresh attributes (on NFS an open
   revalidates them, where a stat may be answered from the cache) */
static int mailbox_new_stat(struct mailbox *box, struct stat *st_r)
{
	if (!box->user->store->spool_nfs)
		return sio_fstatat(box->user->sio, box->dir_fd, "new", st_r, 0);
	return sio_fstatat_open(box->user->sio, box->dir_fd, "new",
				O_DIRECTORY, st_r);
}

/* mailbox_new_settled - was new/'s last change long enough ago that any
   later change must give it another mtime? (See "Skipping new/".) */
static bool mailbox_new_settled(const struct stat *st)
{
	struct timespec now;

	if (st->st_mtim.tv_nsec == 0)
		return false;	/* maybe a file system with coarse times */
	clock_gettime(CLOCK_REALTIME, &now);
	return st->st_mtim.tv_sec + NEW_SETTLE_SECS < now.tv_sec;
}

#define NEW_HINT_MAGIC "CMNEW1LE"
#define NEW_HINT_SIZE 32	/* magic 8, inode 8, mtime 8 + 4, crc 4 */

/* new_hint_encode - the hint record for new/'s stat */
static void new_hint_encode(const struct stat *st, uint8_t buf[NEW_HINT_SIZE])
{
	uint64_t ino = (uint64_t)st->st_ino;
	int64_t sec = (int64_t)st->st_mtim.tv_sec;
	uint32_t nsec = (uint32_t)st->st_mtim.tv_nsec, sum;

	memcpy(buf, NEW_HINT_MAGIC, 8);
	memcpy(buf + 8, &ino, 8);
	memcpy(buf + 16, &sec, 8);
	memcpy(buf + 24, &nsec, 4);
	sum = crc(buf, 28);
	memcpy(buf + 28, &sum, 4);
}

/* new_hint_matches - does clustermail.newseen say new/ was found empty
   with exactly this inode and mtime? (Device numbers differ between NFS
   clients; inode numbers do not.) */
static bool new_hint_matches(struct mailbox *box, const struct stat *st)
{
	uint8_t want[NEW_HINT_SIZE], have[NEW_HINT_SIZE];
	ssize_t n;
	int fd;

	fd = sio_openat(box->user->sio, box->dir_fd, MAILBOX_NEW_HINT_FILE,
			O_RDONLY, 0);
	if (fd < 0)
		return false;
	n = sio_pread(box->user->sio, fd, have, sizeof(have), 0);
	(void)sio_close(box->user->sio, fd);
	new_hint_encode(st, want);
	return n == NEW_HINT_SIZE && memcmp(have, want, sizeof(want)) == 0;
}

/* new_hint_write - remember for every process that new/ was empty. A
   failure costs the next process one listing: it is only logged at
   debug level, and the user's error is left alone. */
static void new_hint_write(struct mailbox *box, const struct stat *st)
{
	struct sio *sio = box->user->sio;
	char tmp[STORE_UNIQUE_MAX + 16], unique[STORE_UNIQUE_MAX];
	uint8_t buf[NEW_HINT_SIZE];
	ssize_t n;
	int fd, ret;

	new_hint_encode(st, buf);
	store_unique_name(box->user->store, unique);
	snprintf(tmp, sizeof(tmp), "tmp/%s", unique);
	fd = sio_openat(sio, box->dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		ret = fd;
	} else {
		n = sio_pwrite(sio, fd, buf, sizeof(buf), 0);
		(void)sio_close(sio, fd);
		ret = n < 0 ? (int)n : sio_renameat(sio, box->dir_fd, tmp,
						    box->dir_fd,
						    MAILBOX_NEW_HINT_FILE, 0);
		if (ret < 0)
			(void)sio_unlinkat(sio, box->dir_fd, tmp, 0);
	}
	if (ret < 0)
		log_debug("store %s: mailbox %s: writing %s: %s",
			  box->user->name, box->name, MAILBOX_NEW_HINT_FILE,
			  strerror(-ret));
}

static int mailbox_scan_new(struct mailbox *box, bool ex)
{
	struct new_scan scan = { .box = box };
	struct mailbox_new_file *files;
	struct store *store = box->user->store;
	struct stat new_st;
	bool settled;
	size_t nfiles = 0;
	int ret;

	/* Stat before listing: a delivery after the stat changes the mtime
	   we remember. */
	settled = mailbox_new_stat(box, &new_st) == 0 &&
		mailbox_new_settled(&new_st);
	if (settled && store_new_seen_empty(store, &new_st))
		return STORE_OK;
	if (settled && new_hint_matches(box, &new_st)) {
		store_new_note_empty(store, &new_st);
		return STORE_OK;
	}
	ret = sio_readdir(box->user->sio, box->dir_fd, "new", new_scan_cb, &scan);
	if (ret < 0)
		return store_io_error(box->user, "readdir", "new", ret);
	if (scan.count == 0) {
		if (settled) {
			store_new_note_empty(store, &new_st);
			new_hint_write(box, &new_st);
		}
		return STORE_OK;
	}
	if (!ex) {
		for (size_t i = 0; i < scan.count; i++)
			free(scan.names[i]);
		free(scan.names);
		return SYNC_NEED_EX;
	}
	/* Delivery order is roughly name order (names start with the time). */
	qsort(scan.names, scan.count, sizeof(char *), name_cmp);
	files = mem_calloc(scan.count, sizeof(*files));
	for (size_t i = 0; i < scan.count; i++) {
		char *name = scan.names[i], *colon = strstr(name, ":2,");
		char *base = colon == NULL ? mem_strdup(name) :
			mem_strndup(name, (size_t)(colon - name));
		struct mail_record *known = view_find_base(box, base);
		char path[PATH_MAX];
		struct stat st;
		int fd;

		if (known != NULL) {
			mailbox_new_to_cur(box, name, known);
			free(base);
			continue;
		}
		snprintf(path, sizeof(path), "new/%s", name);
		fd = sio_openat(box->user->sio, box->dir_fd, path, O_RDONLY, 0);
		if (fd < 0 || sio_fstat(box->user->sio, fd, &st) < 0 ||
		    !S_ISREG(st.st_mode)) {
			if (fd >= 0)
				(void)sio_close(box->user->sio, fd);
			free(base);
			continue;	/* gone meanwhile, or not a file */
		}
		files[nfiles].size = (uint64_t)st.st_size;
		if (!mailbox_base_sizes(base, &files[nfiles].size,
					&files[nfiles].vsize) ||
		    files[nfiles].size != (uint64_t)st.st_size) {
			/* Delivered by another tool: measure it. */
			if (mailbox_compute_vsize(box->user->sio, fd,
						  &files[nfiles].size,
						  &files[nfiles].vsize) < 0) {
				(void)sio_close(box->user->sio, fd);
				free(base);
				continue;
			}
		}
		(void)sio_close(box->user->sio, fd);
		if (colon != NULL) {
			/* Rename to the name without info first, so that the
			   common path below works on base names. */
			char plain[PATH_MAX];

			snprintf(plain, sizeof(plain), "new/%s", base);
			if (sio_renameat(box->user->sio, box->dir_fd, path,
					 box->dir_fd, plain, 0) < 0) {
				free(base);
				continue;
			}
		}
		files[nfiles].base = base;
		files[nfiles].flags = mailbox_name_flags(name);
		files[nfiles].internaldate = st.st_mtime;
		nfiles++;
	}
	ret = nfiles == 0 ? STORE_OK : mailbox_add_files(box, files, nfiles);
	for (size_t i = 0; i < nfiles; i++)
		free(files[i].base);
	free(files);
	for (size_t i = 0; i < scan.count; i++)
		free(scan.names[i]);
	free(scan.names);
	return ret;
}

int mailbox_files_tmp_to_new(struct mailbox *box,
			     const struct mailbox_new_file *files, size_t count)
{
	char src[PATH_MAX], dst[PATH_MAX];
	int ret;

	for (size_t i = 0; i < count; i++) {
		snprintf(src, sizeof(src), "tmp/%s", files[i].base);
		snprintf(dst, sizeof(dst), "new/%s", files[i].base);
		ret = sio_renameat(box->user->sio, box->dir_fd, src, box->dir_fd,
				   dst, 0);
		if (ret < 0)
			return store_io_error(box->user, "rename", src, ret);
	}
	if ((ret = sio_fsync_dir(box->user->sio, box->dir_fd, "new")) < 0)
		return store_io_error(box->user, "fsync", "new", ret);
	return STORE_OK;
}

int mailbox_add_files(struct mailbox *box, struct mailbox_new_file *files,
		      size_t count)
{
	struct bb b = { 0 }, p = { 0 };
	uint64_t modseq = box->highestmodseq + 1;
	uint32_t uid = box->uidnext, first_index = box->count;
	int64_t now = (int64_t)time(NULL);
	int ret;

	for (size_t i = 0; i < count; i++) {
		files[i].uid = uid++;
		p.len = 0;
		bb_u32(&p, files[i].uid);
		bb_u32(&p, files[i].flags & MAIL_FLAGS_MASK);
		bb_u64(&p, files[i].keywords);
		bb_u64(&p, modseq);
		bb_u64(&p, files[i].size);
		bb_u64(&p, files[i].vsize);
		bb_u64(&p, (uint64_t)(files[i].internaldate != 0 ?
				      files[i].internaldate : now));
		bb_u64(&p, (uint64_t)now);
		bb_str(&p, files[i].base);
		log_record(&b, LOG_APPEND, &p);
	}
	ret = log_write(box, &b);
	free(b.data);
	free(p.data);
	if (ret < 0)
		return ret;
	/* The UIDs are durable; now move the files where Maildir readers
	   expect them. A crash here is repaired by the next EX sync. */
	for (uint32_t i = first_index; i < box->count; i++)
		mailbox_new_to_cur(box, box->recs[i].base, &box->recs[i]);
	return STORE_OK;
}

/* ---- tmp/ cleanup ------------------------------------------------------------ */

struct tmp_clean {
	struct mailbox *box;
	time_t cutoff;
};

static int tmp_clean_cb(const char *name, unsigned char d_type, void *context)
{
	struct tmp_clean *ctx = context;
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "tmp/%s", name);
	if (sio_fstatat(ctx->box->user->sio, ctx->box->dir_fd, path, &st,
			AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode) && st.st_ctime < ctx->cutoff) {
		/* ctime, not mtime: a delivery sets the mtime of its tmp file
		   to the INTERNALDATE, which may be long ago. */
		log_info("store %s: mailbox %s: removing stale %s",
			 ctx->box->user->name, ctx->box->name, path);
		(void)sio_unlinkat(ctx->box->user->sio, ctx->box->dir_fd, path, 0);
	}
	return 0;
}

static void mailbox_clean_tmp(struct mailbox *box)
{
	uint64_t now = (uint64_t)time(NULL);
	struct tmp_clean ctx = { .box = box };

	/* Files left in tmp/ by a crash; a grace period, because a delivery
	   on another node may be writing one right now. */
	if (box->last_tmp_clean != 0 && now - box->last_tmp_clean < 3600)
		return;
	box->last_tmp_clean = now;
	ctx.cutoff = (time_t)(now - box->user->store->tmp_grace_secs);
	(void)sio_readdir(box->user->sio, box->dir_fd, "tmp", tmp_clean_cb, &ctx);
}

/* ---- finding message files ------------------------------------------------------ */

struct base_scan {
	const char *base;
	size_t base_len;
	char *found;
};

static int base_scan_cb(const char *name, unsigned char d_type, void *context)
{
	struct base_scan *scan = context;

	if (strncmp(name, scan->base, scan->base_len) == 0 &&
	    (name[scan->base_len] == '\0' || name[scan->base_len] == ':')) {
		scan->found = mem_strdup(name);
		return 1;
	}
	return 0;
}

/* Path (relative to the mailbox dir) of the file with this base: the
   name our flags predict, else new/, else a scan of cur/ (another tool
   renamed it). NOTFOUND if none. */
static int mailbox_find_file(struct mailbox *box, const char *base,
			     uint32_t flags, char *path, size_t size)
{
	struct sio *sio = box->user->sio;
	struct base_scan scan = { .base = base, .base_len = strlen(base) };
	char fname[PATH_MAX - 8];
	struct stat st;
	int ret;

	mailbox_file_name(base, flags, fname, sizeof(fname));
	snprintf(path, size, "cur/%s", fname);
	if (sio_fstatat(sio, box->dir_fd, path, &st, 0) == 0)
		return STORE_OK;
	snprintf(path, size, "new/%s", base);
	if (sio_fstatat(sio, box->dir_fd, path, &st, 0) == 0)
		return STORE_OK;
	ret = sio_readdir(sio, box->dir_fd, "cur", base_scan_cb, &scan);
	if (ret < 0 && ret != 1)
		return store_io_error(box->user, "readdir", "cur", ret);
	if (scan.found == NULL)
		return STORE_ERR_NOTFOUND;
	snprintf(path, size, "cur/%s", scan.found);
	free(scan.found);
	return STORE_OK;
}

int mailbox_open_message(struct mailbox *box, uint32_t uid, int *fd_r)
{
	const struct mail_record *rec = mailbox_lookup_uid(box, uid, NULL);
	char path[PATH_MAX];
	int ret, fd;

	if ((ret = mailbox_rights_refresh(box)) < 0)
		return ret;
	if ((box->rights & ACL_RIGHT_READ) == 0)
		return store_rights_refuse(box->user, box->name, box->rights);
	if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0)
		return store_set_error(box->user, STORE_ERR_NOTFOUND,
				       "Message was expunged");
	for (int attempt = 0; attempt < 3; attempt++) {
		ret = mailbox_find_file(box, rec->base, rec->flags, path,
					sizeof(path));
		if (ret < 0)
			break;
		fd = sio_openat(box->user->sio, box->dir_fd, path, O_RDONLY, 0);
		if (fd >= 0) {
			*fd_r = fd;
			return STORE_OK;
		}
		if (fd != -ENOENT && fd != -ESTALE)
			return store_io_error(box->user, "open", path, fd);
		/* Renamed between lookup and open (a flag change on another
		   node): look again. */
	}
	return store_set_error(box->user, STORE_ERR_NOTFOUND,
			       "Message was expunged");
}

/* ---- pending file work ------------------------------------------------------------ */

static int mailbox_rename_to_flags(struct mailbox *box, const char *base,
				   uint32_t flags)
{
	char cur[PATH_MAX + 8], want[PATH_MAX + 8], fname[PATH_MAX];
	int ret;

	mailbox_file_name(base, flags, fname, sizeof(fname));
	snprintf(want, sizeof(want), "cur/%s", fname);
	for (int attempt = 0; attempt < 3; attempt++) {
		ret = mailbox_find_file(box, base, flags, cur, sizeof(cur));
		if (ret == STORE_ERR_NOTFOUND ||
		    (ret == STORE_OK && strcmp(cur, want) == 0))
			return STORE_OK;
		if (ret < 0)
			return ret;
		ret = sio_renameat(box->user->sio, box->dir_fd, cur,
				   box->dir_fd, want, 0);
		if (ret == 0)
			return STORE_OK;
		if (ret != -ENOENT && ret != -ESTALE)
			return store_io_error(box->user, "rename", cur, ret);
		/* The name we found is gone: expunged, or renamed by a
		   writer before us. On NFS it may also have been a stale
		   entry of the client's cache; opening cur/ revalidates
		   the directory, so that the next lookup asks the server. */
		mailbox_dir_revalidate(box, "cur");
	}
	log_warn("store %s: mailbox %s: %s keeps changing its name; its "
		 "flags stay in the log", box->user->name, box->name, base);
	return STORE_OK;
}

static int mailbox_unlink_base(struct mailbox *box, const char *base)
{
	char path[PATH_MAX];
	int ret;

	for (;;) {
		ret = mailbox_find_file(box, base, 0, path, sizeof(path));
		if (ret == STORE_ERR_NOTFOUND)
			return STORE_OK;
		if (ret < 0)
			return ret;
		ret = sio_unlinkat(box->user->sio, box->dir_fd, path, 0);
		if (ret < 0 && ret != -ENOENT)
			return store_io_error(box->user, "unlink", path, ret);
	}
}

/* mailbox_finish_pending - do the file work of logged records (EX):
   our own EXPUNGE's, or, recovering, those of a writer that died */
/* mailbox_finish_pending - do the file work of the records without
   DONE; write_done false: only forget them afterwards (the log is about
   to be replaced by a snapshot) */
static int mailbox_finish_pending(struct mailbox *box, bool recovering,
				  bool write_done)
{
	int ret;

	/* Our lookups below must see the names other nodes gave the files,
	   not the NFS client's memory of them. */
	if (box->pending_count > 0)
		mailbox_dir_revalidate(box, "cur");
	while (box->pending_count > 0) {
		struct mailbox_pending *p = &box->pending[0];
		uint64_t offset = p->offset;

		if (recovering)
			log_info("store %s: mailbox %s: completing an "
				 "interrupted %s", box->user->name, box->name,
				 p->type == LOG_FLAGS ? "flag change" : "expunge");
		for (size_t i = 0; i < p->count; i++) {
			if (p->type == LOG_FLAGS) {
				struct mail_record *rec = view_find(box, p->uids[i]);

				if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0)
					continue;
				ret = mailbox_rename_to_flags(box, rec->base,
							      rec->flags & MAIL_FLAGS_MASK);
			} else {
				ret = mailbox_unlink_base(box, p->bases[i]);
			}
			if (ret < 0)
				return ret;
		}
		if ((ret = sio_fsync_dir(box->user->sio, box->dir_fd, "cur")) < 0)
			return store_io_error(box->user, "fsync", "cur", ret);
		/* log_done() reads the DONE back, which removes the entry. */
		if (!write_done)
			pending_done(box, offset);
		else if ((ret = log_done(box, offset)) < 0)
			return ret;
	}
	return STORE_OK;
}

/* ---- keywords -------------------------------------------------------------------- */

static bool keyword_valid(const char *name)
{
	/* RFC 9051 flag-keyword = atom; no backslash (system flags). */
	if (*name == '\0' || strlen(name) > 200)
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
		if (*p <= 0x20 || *p >= 0x7f || strchr("(){%*\"\\]", *p) != NULL)
			return false;
	}
	return true;
}

int mailbox_keywords_resolve(struct mailbox *box, const char *const *names,
			     uint64_t *mask_r)
{
	uint64_t mask = 0;
	int ret;

	for (; names != NULL && *names != NULL; names++) {
		unsigned int i;

		if (!keyword_valid(*names))
			return store_set_error(box->user, STORE_ERR_BADNAME,
					       "Invalid keyword");
		for (i = 0; i < box->kw_count; i++) {
			if (strcasecmp(box->keywords[i], *names) == 0)
				break;
		}
		if (i == box->kw_count) {
			struct bb p = { 0 };

			if (box->kw_count >= STORE_MAX_KEYWORDS)
				return store_set_error(box->user, STORE_ERR_LIMIT,
						       "Too many keywords in this mailbox");
			bb_u32(&p, box->kw_count);
			bb_str(&p, *names);
			ret = log_write1(box, LOG_KEYWORD, &p);
			free(p.data);
			if (ret < 0)
				return ret;
		}
		mask |= (uint64_t)1 << i;
	}
	*mask_r = mask;
	return STORE_OK;
}

/* ---- STORE ------------------------------------------------------------------------- */

int mailbox_store(struct mailbox *box, const uint32_t *uids, size_t count,
		  enum mailbox_store_mode mode, uint32_t flags,
		  const char *const *keywords, uint64_t unchangedsince,
		  uint32_t **failed_uids_r, size_t *failed_count_r)
{
	struct bb p = { 0 };
	uint32_t *failed = NULL, n = 0, *rename_uids;
	size_t failed_count = 0, rename_count = 0;
	uint64_t kw_mask = 0, modseq, offset;
	uint32_t allowed;
	bool kw_allowed;
	int ret;

	if (failed_uids_r != NULL) {
		*failed_uids_r = NULL;
		*failed_count_r = 0;
	}
	if ((ret = mailbox_rights_refresh(box)) < 0)
		return ret;
	/* RFC 4314 4: changes the rights do not cover are left out
	   silently (so FETCH's implicit \Seen without "s" changes nothing). */
	allowed = mailbox_rights_flags(box->rights);
	kw_allowed = (box->rights & ACL_RIGHT_WRITE) != 0;
	flags &= MAIL_FLAGS_MASK & allowed;
	if ((ret = mailbox_lock(box, LOCK_MODE_EX)) < 0)
		return ret;
	if (kw_allowed &&
	    (ret = mailbox_keywords_resolve(box, keywords, &kw_mask)) < 0)
		goto out;
	modseq = box->highestmodseq + 1;
	bb_u64(&p, modseq);
	bb_u32(&p, 0);		/* count, patched below */
	rename_uids = mem_calloc(count + 1, sizeof(*rename_uids));
	for (size_t i = 0; i < count; i++) {
		struct mail_record *rec = view_find(box, uids[i]);
		uint32_t nf;
		uint64_t nk;

		if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		if (unchangedsince != 0 && rec->modseq > unchangedsince) {
			failed = mem_realloc(failed, (failed_count + 1) *
					     sizeof(*failed));
			failed[failed_count++] = rec->uid;
			continue;
		}
		switch (mode) {
		case MAILBOX_STORE_ADD:
			nf = (rec->flags & MAIL_FLAGS_MASK) | flags;
			nk = rec->keywords | kw_mask;
			break;
		case MAILBOX_STORE_REMOVE:
			nf = (rec->flags & MAIL_FLAGS_MASK) & ~flags;
			nk = rec->keywords & ~kw_mask;
			break;
		default:
			nf = flags | (rec->flags & MAIL_FLAGS_MASK & ~allowed);
			nk = kw_allowed ? kw_mask : rec->keywords;
			break;
		}
		if (nf == (rec->flags & MAIL_FLAGS_MASK) && nk == rec->keywords &&
		    unchangedsince == 0)
			continue;
		if (nf != (rec->flags & MAIL_FLAGS_MASK))
			rename_uids[rename_count++] = rec->uid;
		bb_u32(&p, rec->uid);
		bb_u32(&p, nf);
		bb_u64(&p, nk);
		n++;
	}
	ret = STORE_OK;
	if (n > 0) {
		memcpy(p.data + 8, &n, 4);
		offset = box->log_offset;
		/* The commit point: the flags are changed once this record is
		   durable. The file names follow. */
		ret = log_write1(box, LOG_FLAGS, &p);
		if (ret == STORE_OK) {
			for (size_t i = 0; i < rename_count && ret == STORE_OK; i++) {
				struct mail_record *rec = view_find(box, rename_uids[i]);

				if (rec != NULL)
					ret = mailbox_rename_to_flags(box, rec->base,
						rec->flags & MAIL_FLAGS_MASK);
			}
			if (ret == STORE_OK && rename_count > 0 &&
			    (ret = sio_fsync_dir(box->user->sio, box->dir_fd, "cur")) < 0)
				ret = store_io_error(box->user, "fsync", "cur", ret);
			if (ret == STORE_OK)
				ret = log_done(box, offset);
		}
	}
	free(rename_uids);
out:
	free(p.data);
	mailbox_unlock(box);
	if (failed_uids_r != NULL) {
		*failed_uids_r = failed;
		*failed_count_r = failed_count;
	} else {
		free(failed);
	}
	return ret;
}

/* ---- EXPUNGE ------------------------------------------------------------------------- */

int mailbox_expunge(struct mailbox *box, const uint32_t *uids, size_t count,
		    uint32_t **expunged_r, size_t *expunged_count_r)
{
	struct bb p = { 0 };
	uint32_t *list = NULL, n = 0;
	int ret;

	if (expunged_r != NULL) {
		*expunged_r = NULL;
		*expunged_count_r = 0;
	}
	if ((ret = mailbox_rights_refresh(box)) < 0)
		return ret;
	if ((box->rights & ACL_RIGHT_EXPUNGE) == 0)
		return store_rights_refuse(box->user, box->name, box->rights);
	if ((ret = mailbox_lock(box, LOCK_MODE_EX)) < 0)
		return ret;
	if (uids == NULL) {
		list = mem_calloc(box->count + 1, sizeof(*list));
		for (uint32_t i = 0; i < box->count; i++) {
			if ((box->recs[i].flags & (MAIL_DELETED | MAIL_EXPUNGED)) ==
			    MAIL_DELETED)
				list[n++] = box->recs[i].uid;
		}
	} else {
		list = mem_calloc(count + 1, sizeof(*list));
		for (size_t i = 0; i < count; i++) {
			struct mail_record *rec = view_find(box, uids[i]);

			if (rec != NULL && (rec->flags & MAIL_EXPUNGED) == 0)
				list[n++] = uids[i];
		}
		qsort(list, n, sizeof(*list), uid_cmp);
		/* Drop duplicates. */
		for (uint32_t i = 1, j = 1; i < n; i++) {
			if (list[i] != list[j - 1])
				list[j++] = list[i];
			if (i == n - 1)
				n = j;
		}
	}
	if (n > 0) {
		bb_u64(&p, box->highestmodseq + 1);
		bb_u32(&p, n);
		for (uint32_t i = 0; i < n; i++)
			bb_u32(&p, list[i]);
		/* Commit point; then the files go (see the top). Reading the
		   record back marks the records expunged and remembers their
		   base names in box->pending. */
		ret = log_write1(box, LOG_EXPUNGE, &p);
		if (ret == STORE_OK)
			ret = mailbox_finish_pending(box, false, true);
	}
	free(p.data);
	mailbox_unlock(box);
	if (ret == STORE_OK && expunged_r != NULL) {
		*expunged_r = list;
		*expunged_count_r = n;
	} else {
		free(list);
	}
	return ret;
}

/* ---- COPY / MOVE ------------------------------------------------------------------------ */

int mailbox_copy(struct mailbox *box, const uint32_t *uids, size_t count,
		 const char *dest_name, bool move,
		 uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r,
		 uint32_t **dest_uids_r, size_t *copied_count_r)
{
	return mailbox_copy_to(box, uids, count, box->user, dest_name, move,
			       dest_uidvalidity_r, src_uids_r, dest_uids_r,
			       copied_count_r);
}

/* copy_rights - the source's rights for a copy or move and the target's
   "i"; the target's rights in *dest_rights_r */
static int copy_rights(struct mailbox *box, struct store_user *dest_user,
		       const char *dest_name, bool move,
		       unsigned int *dest_rights_r)
{
	unsigned int need = ACL_RIGHT_READ;
	int ret;

	if (move)
		need |= ACL_RIGHT_DELETE_MESSAGES | ACL_RIGHT_EXPUNGE;
	if ((ret = mailbox_rights_refresh(box)) < 0)
		return ret;
	if ((box->rights & need) != need)
		return store_rights_refuse(box->user, box->name, box->rights);
	if ((ret = store_rights_check(dest_user, dest_name, ACL_RIGHT_INSERT,
				      dest_rights_r)) < 0 &&
	    ret == STORE_ERR_NOTFOUND)
		store_set_error(box->user, ret,
				"[TRYCREATE] Mailbox doesn't exist: %s",
				dest_name);
	else if (ret < 0)
		store_set_error(box->user, ret, "%s",
				store_user_error(dest_user));
	return ret;
}

int mailbox_copy_to(struct mailbox *box, const uint32_t *uids, size_t count,
		    struct store_user *dest_user, const char *dest_name,
		    bool move, uint32_t *dest_uidvalidity_r,
		    uint32_t **src_uids_r, uint32_t **dest_uids_r,
		    size_t *copied_count_r)
{
	struct store_user *user = box->user;
	unsigned int dest_rights = ACL_RIGHTS_ALL;
	uint32_t dest_flags;
	struct mailbox *dest;
	struct mailbox_new_file *files;
	uint32_t *src_uids;
	const char **kw_names;
	size_t n = 0;
	int ret;

	if (src_uids_r != NULL)
		*src_uids_r = NULL;
	if (dest_uids_r != NULL)
		*dest_uids_r = NULL;
	if (copied_count_r != NULL)
		*copied_count_r = 0;
	if ((ret = copy_rights(box, dest_user, dest_name, move,
			       &dest_rights)) < 0)
		return ret;
	dest_flags = mailbox_rights_flags(dest_rights);
	if ((ret = mailbox_open_raw(dest_user, dest_name, 0, &dest)) < 0) {
		if (dest_user != user)
			store_set_error(user, ret, "%s",
					store_user_error(dest_user));
		if (ret == STORE_ERR_NOTFOUND)
			store_set_error(user, ret, "[TRYCREATE] Mailbox doesn't exist: %s",
					dest_name);
		return ret;
	}
	if (dest_user == user && strcmp(dest->name, box->name) == 0 && move) {
		mailbox_close(&dest);
		return store_set_error(user, STORE_ERR_CANNOT,
				       "Can't move messages into the same mailbox");
	}
	files = mem_calloc(count + 1, sizeof(*files));
	src_uids = mem_calloc(count + 1, sizeof(*src_uids));
	kw_names = mem_calloc(STORE_MAX_KEYWORDS + 1, sizeof(char *));

	/* Link every source file into the target's tmp/ under a new unique
	   name (hard links: one copy on disk), without any target lock, as
	   a delivery would. A source expunged meanwhile is skipped. Under
	   the target's EX lock the links then move to new/ (durably) and get
	   their UIDs: had they gone to new/ first, a sync on any node could
	   take them for deliveries and drop their flags. */
	ret = STORE_OK;
	for (size_t i = 0; i < count && ret == STORE_OK; i++) {
		const struct mail_record *rec = mailbox_lookup_uid(box, uids[i], NULL);
		char src[PATH_MAX], dst[PATH_MAX], unique[STORE_UNIQUE_MAX];
		char email_id[MAILBOX_EMAIL_ID_SIZE];
		int lret;

		if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		if (mailbox_find_file(box, rec->base, rec->flags, src,
				      sizeof(src)) != STORE_OK)
			continue;
		/* The copy carries the source's EMAILID in its name. */
		store_unique_name(user->store, unique);
		mailbox_email_id(rec->base, email_id);
		files[n].base = mem_printf("%s,E=%s,S=%llu,W=%llu", unique,
					   email_id,
					   (unsigned long long)rec->size,
					   (unsigned long long)rec->vsize);
		snprintf(dst, sizeof(dst), "tmp/%s", files[n].base);
		lret = sio_linkat(user->sio, box->dir_fd, src, dest->dir_fd, dst);
		if (lret == -ENOENT) {
			free(files[n].base);
			continue;
		}
		if (lret < 0) {
			ret = store_io_error(user, "link", dst, lret);
			free(files[n].base);
			break;
		}
		/* Flags the target's rights do not cover are dropped (RFC
		   4314 4, as for STORE). */
		files[n].flags = rec->flags & MAIL_FLAGS_MASK & dest_flags;
		files[n].keywords = (dest_rights & ACL_RIGHT_WRITE) != 0 ?
			rec->keywords : 0;
		files[n].size = rec->size;
		files[n].vsize = rec->vsize;
		files[n].internaldate = rec->internaldate;
		src_uids[n] = rec->uid;
		n++;
	}
	if (ret == STORE_OK && n > 0 &&
	    (ret = mailbox_lock(dest, LOCK_MODE_EX)) == STORE_OK) {
		/* Keywords travel by name: the target has its own table. */
		for (size_t i = 0; i < n && ret == STORE_OK; i++) {
			size_t k = 0;

			for (unsigned int b = 0; b < box->kw_count; b++) {
				if ((files[i].keywords & ((uint64_t)1 << b)) != 0)
					kw_names[k++] = box->keywords[b];
			}
			kw_names[k] = NULL;
			ret = mailbox_keywords_resolve(dest, kw_names,
						       &files[i].keywords);
		}
		if (ret == STORE_OK)
			ret = mailbox_files_tmp_to_new(dest, files, n);
		if (ret == STORE_OK)
			ret = mailbox_add_files(dest, files, n);
		mailbox_unlock(dest);
	}
	if (ret < 0) {
		/* Not acknowledged: remove the links so that they do not turn
		   into deliveries. */
		for (size_t i = 0; i < n; i++) {
			char dst[PATH_MAX];

			snprintf(dst, sizeof(dst), "tmp/%s", files[i].base);
			(void)sio_unlinkat(user->sio, dest->dir_fd, dst, 0);
			snprintf(dst, sizeof(dst), "new/%s", files[i].base);
			(void)sio_unlinkat(user->sio, dest->dir_fd, dst, 0);
		}
	}
	if (ret == STORE_OK && move && n > 0)
		ret = mailbox_expunge(box, src_uids, n, NULL, NULL);
	if (dest_uidvalidity_r != NULL)
		*dest_uidvalidity_r = dest->uidvalidity;
	if (ret == STORE_OK) {
		if (dest_uids_r != NULL) {
			*dest_uids_r = mem_calloc(n + 1, sizeof(uint32_t));
			for (size_t i = 0; i < n; i++)
				(*dest_uids_r)[i] = files[i].uid;
		}
		if (src_uids_r != NULL) {
			*src_uids_r = src_uids;
			src_uids = NULL;
		}
		if (copied_count_r != NULL)
			*copied_count_r = n;
	}
	for (size_t i = 0; i < n; i++)
		free(files[i].base);
	free(files);
	free(src_uids);
	free(kw_names);
	mailbox_close(&dest);
	return ret;
}
