/*
 * cache.c - the per-mailbox message cache (API in store.h).
 *
 * What it is for. FETCH BODYSTRUCTURE, ENVELOPE and friends need a parse
 * of the message file. The IMAP code parses once and hands the result to
 * mailbox_cache_add(); any view on any node then finds it with
 * mailbox_cache_lookup() instead of re-reading the message.
 *
 * The file, clustermail.cache (next to clustermail.index):
 *
 *   header   magic "CMCACHE1", version (u32), the mailbox UIDVALIDITY
 *            (u32), 12 reserved bytes, CRC32 of the 28 bytes before it
 *            (32 bytes in all)
 *   records  [uid u32][field u8][len u32][data: len bytes][CRC32 of all
 *            before it in the record], appended
 *
 * Little-endian host order, like the index and the log. A record for a
 * (uid, field) that is already present is never written again by this
 * view; if two views race, the later record wins (the values are equal:
 * a message file never changes).
 *
 * Locking (DESIGN invariant 2). The file is written only by the holder of
 * the mailbox's EX lock, so it needs no lock of its own. It only grows,
 * except that an EX holder may replace it as a whole (tmp/ + rename):
 * compaction, or dropping a damaged file or one of another UIDVALIDITY.
 * So bytes that were in a given inode once stay what they were. Every
 * locked sync (PR or EX) notes the file's inode and size (one fstatat,
 * mailbox_cache_note_locked()); a lookup, which may run at any time
 * between syncs, reads and indexes at most that much of that inode -
 * records that were complete while we held the lock. Bytes appended
 * later, by an EX holder on another node, are read after the next sync.
 * The file is opened lazily, at the first lookup, so a view that never
 * uses the cache pays one fstatat per sync and nothing else.
 *
 * Damage. Every record carries a CRC. A record that fails it, or is cut
 * short, ends the usable part of the file: readers index what came
 * before and ignore the rest; the next EX holder logs the damage once and
 * replaces the file with a fresh one (losing a cache loses nothing). A
 * header that is bad, or names another UIDVALIDITY (the mailbox was
 * rebuilt or recreated), gets the same treatment. No fdatasync: after a
 * crash the file may miss its last records or end in a torn one, which
 * the CRC catches.
 *
 * Memory. Per view, a hash table maps (uid, field) to the record's file
 * offset (16 bytes an entry) - never the data. A lookup preads the
 * record, checks its CRC again, and copies the data into one per-view
 * buffer, which is why the returned pointer lives until the next call
 * that can change the view. The pread takes up to CACHE_WINDOW bytes of
 * indexed records from there into a read-ahead window, so a FETCH or
 * SEARCH that walks the messages in UID order (whose records were mostly
 * added in that order) reads the file in a few large reads instead of
 * two small ones a message; the window goes at the next locked sync.
 * Adds wait in memory (copied; at most CACHE_PENDING_MAX bytes, later
 * adds are dropped) until the view next holds EX: mailbox_unlock() calls
 * mailbox_cache_write_locked(), or mailbox_cache_flush() takes EX without
 * waiting.
 *
 * Compaction. Records of expunged messages (and records superseded by a
 * racing view's duplicate) are dead weight. When the change log is
 * compacted and there is any, or when they are more than half of the
 * file, the EX holder writes a new file with only the live records
 * (tmp/ + rename) and the other views notice the new inode at their next
 * sync and index it afresh.
 */
#include "lib/lib.h"
#include "mailbox-private.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CACHE_MAGIC "CMCACHE1"
#define CACHE_VERSION 1
#define CACHE_HEADER_SIZE 32
#define CACHE_REC_HEAD 9		/* uid 4, field 1, len 4 */
#define CACHE_REC_OVERHEAD (CACHE_REC_HEAD + 4)
#define CACHE_READ_CHUNK (1024 * 1024)
#define CACHE_WINDOW (64 * 1024)
#define CACHE_PENDING_MAX (8 * 1024 * 1024)
/* Offsets are kept in 48 bits; a file never grows past this. */
#define CACHE_FILE_MAX ((uint64_t)1 << 40)
#define CACHE_PENDING_BIT ((uint64_t)1 << 63)
/* Below this many records, dead ones are not worth a rewrite. */
#define CACHE_COMPACT_MIN_RECORDS 64

/* Where one (uid, field) value is: a record offset in the file, or
   CACHE_PENDING_BIT | index into pending. uid 0 = free slot. */
struct cache_entry {
	uint32_t uid;
	uint8_t field;
	uint64_t where;
};

struct cache_pending {
	uint32_t uid;
	uint8_t field;
	uint32_t size;
	uint8_t *data;			/* owned */
};

struct mailbox_cache {
	uint32_t uidvalidity;		/* of the table and the adds */

	/* What the last locked sync saw. */
	bool seen_exists;
	dev_t seen_dev;
	ino_t seen_ino;
	uint64_t seen_size;

	/* The file as indexed. */
	int fd;				/* -1 when not open */
	dev_t dev;
	ino_t ino;
	uint64_t read_offset;		/* indexed up to here */
	uint32_t file_records;		/* records indexed (with duplicates) */
	const char *damage;		/* why the rest is unusable, or NULL */
	bool damage_logged;

	struct cache_entry *table;	/* open addressing, power of 2 */
	size_t table_size, table_used;

	struct cache_pending *pending;
	size_t pending_count, pending_alloc, pending_bytes;

	uint8_t *buf;			/* the last lookup's data */
	size_t buf_alloc;

	/* Read-ahead: file bytes [win_start, win_start + win_len), all of
	   them indexed records (stable bytes); dropped at every sync. */
	uint8_t *win;
	uint64_t win_start;
	size_t win_len;
};

/* cache_crc - CRC32 of data, continuing sum */
static uint32_t cache_crc(uint32_t sum, const void *data, size_t len)
{
	return (uint32_t)crc32(sum, data, (uInt)len);
}

/* A growing byte buffer for framing records. */
struct cache_buf {
	uint8_t *data;
	size_t len, alloc;
};

/* cache_buf_put - append len bytes */
static void cache_buf_put(struct cache_buf *b, const void *data, size_t len)
{
	if (len == 0)
		return;
	if (b->len + len > b->alloc) {
		b->alloc = (b->len + len) * 2 + 256;
		b->data = mem_realloc(b->data, b->alloc);
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

/* ---- the table ---------------------------------------------------------- */

/* cache_slot - the slot of (uid, field), or the free slot it would take */
static struct cache_entry *cache_slot(struct mailbox_cache *c, uint32_t uid,
				      uint8_t field)
{
	size_t mask = c->table_size - 1;
	size_t i = ((size_t)uid * 16 + field) * 0x9E3779B1u & mask;

	while (c->table[i].uid != 0 &&
	       (c->table[i].uid != uid || c->table[i].field != field))
		i = (i + 1) & mask;
	return &c->table[i];
}

/* cache_table_grow - double the table (or create it) */
static void cache_table_grow(struct mailbox_cache *c)
{
	struct cache_entry *old = c->table;
	size_t old_size = c->table_size;

	c->table_size = old_size == 0 ? 256 : old_size * 2;
	c->table = mem_calloc(c->table_size, sizeof(*c->table));
	for (size_t i = 0; i < old_size; i++) {
		if (old[i].uid != 0)
			*cache_slot(c, old[i].uid, old[i].field) = old[i];
	}
	free(old);
}

/* cache_find - the entry of (uid, field), or NULL */
static struct cache_entry *cache_find(struct mailbox_cache *c, uint32_t uid,
				      uint8_t field)
{
	struct cache_entry *e;

	if (c->table_size == 0)
		return NULL;
	e = cache_slot(c, uid, field);
	return e->uid == 0 ? NULL : e;
}

/* cache_set - point (uid, field) at where (replacing an older entry) */
static void cache_set(struct mailbox_cache *c, uint32_t uid, uint8_t field,
		      uint64_t where)
{
	struct cache_entry *e;

	if ((c->table_used + 1) * 4 > c->table_size * 3)
		cache_table_grow(c);
	e = cache_slot(c, uid, field);
	if (e->uid == 0)
		c->table_used++;
	e->uid = uid;
	e->field = field;
	e->where = where;
}

/* cache_pending_clear - drop every pending add */
static void cache_pending_clear(struct mailbox_cache *c)
{
	for (size_t i = 0; i < c->pending_count; i++)
		free(c->pending[i].data);
	c->pending_count = 0;
	c->pending_bytes = 0;
}

/* cache_window_drop - forget the read-ahead window */
static void cache_window_drop(struct mailbox_cache *c)
{
	free(c->win);
	c->win = NULL;
	c->win_len = 0;
}

/* cache_forget_file - close the file and drop its entries (pending adds
   stay) */
static void cache_forget_file(struct mailbox *box, struct mailbox_cache *c)
{
	if (c->fd >= 0)
		(void)sio_close(box->user->sio, c->fd);
	c->fd = -1;
	cache_window_drop(c);
	c->read_offset = 0;
	c->file_records = 0;
	c->damage = NULL;
	c->damage_logged = false;
	memset(c->table, 0, c->table_size * sizeof(*c->table));
	c->table_used = 0;
	for (size_t i = 0; i < c->pending_count; i++)
		cache_set(c, c->pending[i].uid, c->pending[i].field,
			  CACHE_PENDING_BIT | i);
}

/* cache_get - the view's cache state, created on first use, reset when
   the view's UIDVALIDITY changed */
static struct mailbox_cache *cache_get(struct mailbox *box)
{
	struct mailbox_cache *c = box->cache;

	if (c == NULL) {
		c = box->cache = mem_zalloc(sizeof(*c));
		c->fd = -1;
		c->uidvalidity = box->uidvalidity;
	}
	if (c->uidvalidity != box->uidvalidity) {
		cache_pending_clear(c);
		cache_forget_file(box, c);
		c->uidvalidity = box->uidvalidity;
	}
	return c;
}

/* mailbox_cache_free - the view is closing */
void mailbox_cache_free(struct mailbox *box)
{
	struct mailbox_cache *c = box->cache;

	if (c == NULL)
		return;
	box->cache = NULL;
	cache_pending_clear(c);
	if (c->fd >= 0)
		(void)sio_close(box->user->sio, c->fd);
	free(c->pending);
	free(c->table);
	free(c->buf);
	free(c->win);
	free(c);
}

/* ---- reading ------------------------------------------------------------- */

/* cache_open_flags - O_DIRECT on NFS: other nodes append to the file we
   keep open, and the client's cached pages of it would not show that
   (the lock is on another file, so taking it does not revalidate them) */
static int cache_open_flags(const struct mailbox *box)
{
	return O_RDWR | (box->user->store->spool_nfs ? O_DIRECT : 0);
}

/* cache_damaged - the usable part of the file ends at read_offset */
static void cache_damaged(struct mailbox_cache *c, const char *why)
{
	if (c->damage == NULL)
		c->damage = why;
}

/* cache_read_header - check the header at offset 0 */
static int cache_read_header(struct mailbox *box, struct mailbox_cache *c)
{
	uint8_t hdr[CACHE_HEADER_SIZE];
	uint32_t sum, version, uidvalidity;
	ssize_t n;

	n = sio_pread(box->user->sio, c->fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return (int)n;
	memcpy(&sum, hdr + 28, 4);
	memcpy(&version, hdr + 8, 4);
	memcpy(&uidvalidity, hdr + 12, 4);
	if (n != CACHE_HEADER_SIZE || memcmp(hdr, CACHE_MAGIC, 8) != 0 ||
	    sum != cache_crc(0, hdr, 28) || version != CACHE_VERSION)
		cache_damaged(c, "bad header");
	else if (uidvalidity != c->uidvalidity)
		cache_damaged(c, "from another UIDVALIDITY");
	else
		c->read_offset = CACHE_HEADER_SIZE;
	return 0;
}

/* cache_parse - index the complete records in buf (file bytes from
   offset); returns the bytes consumed. Stops at a record that does not
   fit in buf; *need_r is then its size (0 if buf ended mid-header). */
static size_t cache_parse(struct mailbox_cache *c, const uint8_t *buf,
			  size_t size, uint64_t offset, size_t *need_r)
{
	size_t pos = 0;

	*need_r = 0;
	while (size - pos >= CACHE_REC_HEAD) {
		uint32_t uid, len, sum;
		uint8_t field = buf[pos + 4];

		memcpy(&uid, buf + pos, 4);
		memcpy(&len, buf + pos + 5, 4);
		if (uid == 0 || field == 0 || field >= MAIL_CACHE_FIELD_COUNT ||
		    len > MAIL_CACHE_VALUE_MAX) {
			cache_damaged(c, "malformed record");
			break;
		}
		if (size - pos < (size_t)len + CACHE_REC_OVERHEAD) {
			*need_r = (size_t)len + CACHE_REC_OVERHEAD;
			break;
		}
		memcpy(&sum, buf + pos + CACHE_REC_HEAD + len, 4);
		if (sum != cache_crc(0, buf + pos, CACHE_REC_HEAD + (size_t)len)) {
			cache_damaged(c, "checksum mismatch");
			break;
		}
		cache_set(c, uid, field, offset + pos);
		c->file_records++;
		pos += (size_t)len + CACHE_REC_OVERHEAD;
	}
	return pos;
}

/* cache_read_to - index the records between read_offset and limit */
static int cache_read_to(struct mailbox *box, struct mailbox_cache *c,
			 uint64_t limit)
{
	size_t alloc = CACHE_READ_CHUNK, need;
	uint8_t *buf = NULL;
	int ret = 0;

	if (c->read_offset == 0 && (ret = cache_read_header(box, c)) < 0)
		return ret;
	while (c->damage == NULL && c->read_offset < limit) {
		uint64_t left = limit - c->read_offset;
		size_t want = left < alloc ? (size_t)left : alloc;
		size_t used;
		ssize_t n;

		if (buf == NULL)
			buf = mem_zalloc(alloc);
		n = sio_pread(box->user->sio, c->fd, buf, want, c->read_offset);
		if (n < 0) {
			ret = (int)n;
			break;
		}
		used = cache_parse(c, buf, (size_t)n, c->read_offset, &need);
		c->read_offset += used;
		if (c->damage != NULL || used > 0)
			continue;
		/* Nothing fit: the record is bigger than buf, or the file
		   ends inside it (a torn write). */
		if ((size_t)n < want || need == 0 ||
		    c->read_offset + need > limit) {
			cache_damaged(c, "truncated record");
			break;
		}
		alloc = need;
		free(buf);
		buf = NULL;
	}
	free(buf);
	return ret;
}

/* cache_catch_up - index what the last locked sync saw. Returns 0 or a
   -errno (logged by the caller). */
static int cache_catch_up(struct mailbox *box, struct mailbox_cache *c)
{
	struct stat st;
	int ret;

	if (!c->seen_exists) {
		if (c->fd >= 0)
			cache_forget_file(box, c);
		return 0;
	}
	if (c->fd >= 0 && (c->dev != c->seen_dev || c->ino != c->seen_ino))
		cache_forget_file(box, c);
	if (c->fd < 0) {
		c->fd = sio_openat(box->user->sio, box->dir_fd,
				   MAILBOX_CACHE_FILE, cache_open_flags(box), 0);
		if (c->fd == -ENOENT) {
			c->fd = -1;
			return 0;
		}
		if (c->fd < 0 || (ret = sio_fstat(box->user->sio, c->fd, &st)) < 0) {
			ret = c->fd < 0 ? c->fd : ret;
			cache_forget_file(box, c);
			return ret;
		}
		c->dev = st.st_dev;
		c->ino = st.st_ino;
		if (c->dev != c->seen_dev || c->ino != c->seen_ino) {
			/* Replaced since our sync: wait for the next one. */
			cache_forget_file(box, c);
			return 0;
		}
	}
	return cache_read_to(box, c, c->seen_size);
}

/* cache_stat - stat the file by name; on NFS by opening it, for the
   attributes of the file that is there now, not of one another node has
   replaced since */
static int cache_stat(struct mailbox *box, struct stat *st_r)
{
	if (!box->user->store->spool_nfs)
		return sio_fstatat(box->user->sio, box->dir_fd,
				   MAILBOX_CACHE_FILE, st_r, 0);
	return sio_fstatat_open(box->user->sio, box->dir_fd,
				MAILBOX_CACHE_FILE, 0, st_r);
}

/* mailbox_cache_note_locked - remember what the file holds now (lock
   held: these records are complete) */
void mailbox_cache_note_locked(struct mailbox *box)
{
	struct mailbox_cache *c = cache_get(box);
	struct stat st;
	int ret;

	cache_window_drop(c);
	ret = cache_stat(box, &st);
	c->seen_exists = ret == 0 && S_ISREG(st.st_mode);
	if (ret < 0 && ret != -ENOENT)
		log_warn("store %s: mailbox %s: stat %s: %s", box->user->name,
			 box->name, MAILBOX_CACHE_FILE, strerror(-ret));
	if (c->seen_exists) {
		c->seen_dev = st.st_dev;
		c->seen_ino = st.st_ino;
		c->seen_size = (uint64_t)st.st_size;
	}
}

/* cache_window - size bytes of the file at where from the read-ahead
   window, reading a new one from where if they are not in it; NULL when
   they cannot be (more than a window, past the indexed part, an error) */
static const uint8_t *cache_window(struct mailbox *box,
				   struct mailbox_cache *c, uint64_t where,
				   size_t size)
{
	uint64_t avail;
	ssize_t n;

	if (c->win != NULL && where >= c->win_start &&
	    where + size <= c->win_start + c->win_len)
		return c->win + (where - c->win_start);
	if (where >= c->read_offset || size > CACHE_WINDOW)
		return NULL;
	avail = c->read_offset - where;
	if (c->win == NULL)
		c->win = mem_realloc(NULL, CACHE_WINDOW);
	n = sio_pread(box->user->sio, c->fd, c->win,
		      avail < CACHE_WINDOW ? (size_t)avail : CACHE_WINDOW, where);
	c->win_start = where;
	c->win_len = n > 0 ? (size_t)n : 0;
	return c->win_len >= size ? c->win : NULL;
}

/* cache_read_record - read and check the record at offset; its data
   into c->buf. */
static bool cache_read_record(struct mailbox *box, struct mailbox_cache *c,
			      const struct cache_entry *e, size_t *size_r)
{
	const uint8_t *win;
	uint8_t head[CACHE_REC_HEAD];
	uint32_t uid, len, sum, want;
	ssize_t n;

	win = cache_window(box, c, e->where, CACHE_REC_HEAD);
	if (win != NULL)
		memcpy(head, win, CACHE_REC_HEAD);
	else if (sio_pread(box->user->sio, c->fd, head, sizeof(head),
			   e->where) != CACHE_REC_HEAD)
		return false;
	memcpy(&uid, head, 4);
	memcpy(&len, head + 5, 4);
	if (uid != e->uid || head[4] != e->field || len > MAIL_CACHE_VALUE_MAX)
		return false;
	if (c->buf_alloc < (size_t)len + 4) {
		c->buf_alloc = (size_t)len + 4;
		c->buf = mem_realloc(c->buf, c->buf_alloc);
	}
	win = cache_window(box, c, e->where, CACHE_REC_HEAD + (size_t)len + 4);
	if (win != NULL) {
		memcpy(c->buf, win + CACHE_REC_HEAD, (size_t)len + 4);
	} else {
		n = sio_pread(box->user->sio, c->fd, c->buf, (size_t)len + 4,
			      e->where + CACHE_REC_HEAD);
		if (n != (ssize_t)len + 4)
			return false;
	}
	memcpy(&want, c->buf + len, 4);
	sum = cache_crc(cache_crc(0, head, sizeof(head)), c->buf, len);
	*size_r = len;
	return sum == want;
}

/* mailbox_cache_lookup - pending adds first, then the file */
int mailbox_cache_lookup(struct mailbox *box, uint32_t uid,
			 enum mail_cache_field field, const void **data_r,
			 size_t *size_r)
{
	struct mailbox_cache *c = box->cache;
	struct cache_entry *e;
	int ret;

	if (c == NULL || field <= 0 || field >= MAIL_CACHE_FIELD_COUNT ||
	    c->uidvalidity != box->uidvalidity)
		return 0;
	if ((ret = cache_catch_up(box, c)) < 0) {
		log_warn("store %s: mailbox %s: reading %s: %s", box->user->name,
			 box->name, MAILBOX_CACHE_FILE, strerror(-ret));
		return 0;
	}
	if ((e = cache_find(c, uid, (uint8_t)field)) == NULL)
		return 0;
	if ((e->where & CACHE_PENDING_BIT) != 0) {
		uint64_t i = e->where & ~CACHE_PENDING_BIT;
		const struct cache_pending *p = &c->pending[i];

		/* An add for a message expunged before it was written
		   leaves an entry behind; the slot may be reused. */
		if (i >= c->pending_count || p->uid != uid || p->field != field)
			return 0;
		if (c->buf_alloc < (size_t)p->size + 1) {
			c->buf_alloc = (size_t)p->size + 1;
			c->buf = mem_realloc(c->buf, c->buf_alloc);
		}
		memcpy(c->buf, p->data, p->size);
		*size_r = p->size;
	} else if (c->fd < 0 || !cache_read_record(box, c, e, size_r)) {
		/* Changed under us (it must not) or unreadable: forget it. */
		cache_damaged(c, "record does not read back");
		return 0;
	}
	*data_r = c->buf;
	return 1;
}

/* mailbox_cache_add - keep a copy until the next EX section */
void mailbox_cache_add(struct mailbox *box, uint32_t uid,
		       enum mail_cache_field field, const void *data,
		       size_t size)
{
	const struct mail_record *rec = mailbox_lookup_uid(box, uid, NULL);
	struct mailbox_cache *c;
	struct cache_pending *p;

	if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0 || field <= 0 ||
	    field >= MAIL_CACHE_FIELD_COUNT || size > MAIL_CACHE_VALUE_MAX)
		return;
	c = cache_get(box);
	if (cache_find(c, uid, (uint8_t)field) != NULL ||
	    c->pending_bytes + size > CACHE_PENDING_MAX)
		return;
	if (c->pending_count == c->pending_alloc) {
		c->pending_alloc = c->pending_alloc * 2 + 16;
		c->pending = mem_realloc(c->pending,
					 c->pending_alloc * sizeof(*c->pending));
	}
	p = &c->pending[c->pending_count];
	p->uid = uid;
	p->field = (uint8_t)field;
	p->size = (uint32_t)size;
	p->data = mem_zalloc(size + 1);
	if (size > 0)
		memcpy(p->data, data, size);
	c->pending_bytes += size;
	cache_set(c, uid, (uint8_t)field, CACHE_PENDING_BIT | c->pending_count);
	c->pending_count++;
}

/* ---- writing (EX held) ----------------------------------------------------- */

/* cache_uid_live - is uid a message of the view (not expunged)? */
static bool cache_uid_live(struct mailbox *box, uint32_t uid)
{
	const struct mail_record *rec = mailbox_lookup_uid(box, uid, NULL);

	return rec != NULL && (rec->flags & MAIL_EXPUNGED) == 0;
}

/* cache_frame - append one framed record to b */
static void cache_frame(struct cache_buf *b, uint32_t uid, uint8_t field,
			const void *data, uint32_t len)
{
	size_t start = b->len;
	uint32_t sum;

	cache_buf_put(b, &uid, 4);
	cache_buf_put(b, &field, 1);
	cache_buf_put(b, &len, 4);
	cache_buf_put(b, data, len);
	sum = cache_crc(0, b->data + start, b->len - start);
	cache_buf_put(b, &sum, 4);
}

/* cache_frame_pending - frame the live pending adds; entries are pointed
   at their future offsets from base */
static void cache_frame_pending(struct mailbox *box, struct mailbox_cache *c,
				struct cache_buf *b, uint64_t base)
{
	for (size_t i = 0; i < c->pending_count; i++) {
		struct cache_pending *p = &c->pending[i];

		if (!cache_uid_live(box, p->uid))
			continue;
		cache_set(c, p->uid, p->field, base + b->len);
		cache_frame(b, p->uid, p->field, p->data, p->size);
		c->file_records++;
	}
}

/* cache_after_write - the adds are written (or lost with a failed
   write, after which the file is indexed afresh) */
static void cache_after_write(struct mailbox *box, struct mailbox_cache *c,
			      bool ok)
{
	cache_pending_clear(c);
	if (!ok)
		cache_forget_file(box, c);
}

/* cache_header - the file header for the view's UIDVALIDITY */
static void cache_header(struct mailbox_cache *c, struct cache_buf *b)
{
	uint32_t version = CACHE_VERSION, sum;
	uint8_t reserved[12] = { 0 };

	cache_buf_put(b, CACHE_MAGIC, 8);
	cache_buf_put(b, &version, 4);
	cache_buf_put(b, &c->uidvalidity, 4);
	cache_buf_put(b, reserved, sizeof(reserved));
	sum = cache_crc(0, b->data, 28);
	cache_buf_put(b, &sum, 4);
}

/* cache_copy_live - for a rewrite: copy the live records of the old file
   into b (offsets from 0 of the new file) */
static int cache_copy_live(struct mailbox *box, struct mailbox_cache *c,
			   struct cache_buf *b)
{
	struct cache_entry *old = c->table;
	size_t old_size = c->table_size;
	int ret = 0;

	c->table = NULL;
	c->table_size = c->table_used = 0;
	c->file_records = 0;
	for (size_t i = 0; i < old_size; i++) {
		struct cache_entry *e = &old[i];
		size_t len;

		if (e->uid == 0 || (e->where & CACHE_PENDING_BIT) != 0 ||
		    !cache_uid_live(box, e->uid))
			continue;
		if (!cache_read_record(box, c, e, &len)) {
			ret = -EIO;
			break;
		}
		cache_set(c, e->uid, e->field, b->len);
		cache_frame(b, e->uid, e->field, c->buf, (uint32_t)len);
		c->file_records++;
	}
	free(old);
	/* The pending adds need their entries back. */
	for (size_t i = 0; i < c->pending_count; i++)
		cache_set(c, c->pending[i].uid, c->pending[i].field,
			  CACHE_PENDING_BIT | i);
	return ret;
}

/* cache_rewrite - replace the file: header, the live records of the old
   one if keep, the pending adds. tmp/ + rename; no fsync (a cache). */
static int cache_rewrite(struct mailbox *box, struct mailbox_cache *c,
			 bool keep)
{
	struct sio *sio = box->user->sio;
	char tmp[STORE_UNIQUE_MAX + 16], unique[STORE_UNIQUE_MAX];
	struct cache_buf b = { 0 };
	struct stat st;
	ssize_t n;
	int fd, ret = 0;

	cache_header(c, &b);
	if (keep)
		ret = cache_copy_live(box, c, &b);
	else
		cache_forget_file(box, c);
	if (ret < 0) {
		free(b.data);
		return ret;
	}
	cache_frame_pending(box, c, &b, 0);
	store_unique_name(box->user->store, unique);
	snprintf(tmp, sizeof(tmp), "tmp/%s", unique);
	fd = sio_openat(sio, box->dir_fd, tmp,
			cache_open_flags(box) | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		free(b.data);
		return fd;
	}
	n = sio_pwrite(sio, fd, b.data, b.len, 0);
	ret = n < 0 ? (int)n : sio_fstat(sio, fd, &st);
	if (ret >= 0)
		ret = sio_renameat(sio, box->dir_fd, tmp, box->dir_fd,
				   MAILBOX_CACHE_FILE, 0);
	if (ret < 0) {
		(void)sio_unlinkat(sio, box->dir_fd, tmp, 0);
		(void)sio_close(sio, fd);
		free(b.data);
		return ret;
	}
	if (c->fd >= 0)
		(void)sio_close(sio, c->fd);
	cache_window_drop(c);
	c->fd = fd;
	c->dev = c->seen_dev = st.st_dev;
	c->ino = c->seen_ino = st.st_ino;
	c->read_offset = c->seen_size = b.len;
	c->seen_exists = true;
	c->damage = NULL;
	c->damage_logged = false;
	free(b.data);
	return 0;
}

/* cache_append - write the pending adds at the end of the file */
static int cache_append(struct mailbox *box, struct mailbox_cache *c)
{
	struct cache_buf b = { 0 };
	ssize_t n;

	cache_frame_pending(box, c, &b, c->read_offset);
	if (b.len == 0)
		return 0;
	n = sio_pwrite(box->user->sio, c->fd, b.data, b.len, c->read_offset);
	free(b.data);
	if (n < 0)
		return (int)n;
	c->read_offset += b.len;
	c->seen_size = c->read_offset;
	return 0;
}

/* cache_dead_records - records in the file that no lookup needs:
   expunged messages' and superseded duplicates */
static uint32_t cache_dead_records(struct mailbox *box, struct mailbox_cache *c)
{
	uint32_t live = 0;

	for (size_t i = 0; i < c->table_size; i++) {
		const struct cache_entry *e = &c->table[i];

		if (e->uid != 0 && (e->where & CACHE_PENDING_BIT) == 0 &&
		    cache_uid_live(box, e->uid))
			live++;
	}
	return c->file_records > live ? c->file_records - live : 0;
}

/* cache_log_drop - say once why a file is being replaced */
static void cache_log_drop(struct mailbox *box, struct mailbox_cache *c)
{
	if (c->damage_logged)
		return;
	c->damage_logged = true;
	log_warn("store %s: mailbox %s: %s is damaged or stale (%s at offset "
		 "%llu); dropping it", box->user->name, box->name,
		 MAILBOX_CACHE_FILE, c->damage,
		 (unsigned long long)c->read_offset);
}

/* cache_write - bring the file up to date; returns 0 or -errno */
static int cache_write(struct mailbox *box, struct mailbox_cache *c,
		       bool log_compacted, bool expunges)
{
	uint32_t dead;
	int ret;

	if ((ret = cache_catch_up(box, c)) < 0)
		return ret;
	if (c->damage != NULL) {
		cache_log_drop(box, c);
		return cache_rewrite(box, c, false);
	}
	if (c->fd < 0)
		return c->pending_count == 0 ? 0 : cache_rewrite(box, c, false);
	if (c->read_offset + c->pending_bytes +
	    c->pending_count * CACHE_REC_OVERHEAD > CACHE_FILE_MAX)
		return cache_rewrite(box, c, false);
	if ((ret = cache_append(box, c)) < 0)
		return ret;
	if (c->file_records < CACHE_COMPACT_MIN_RECORDS ||
	    !(log_compacted || expunges))
		return 0;
	dead = cache_dead_records(box, c);
	if ((log_compacted && dead > 0) || dead * 2 > c->file_records)
		return cache_rewrite(box, c, true);
	return 0;
}

/* mailbox_cache_write_locked - EX held, about to be released */
void mailbox_cache_write_locked(struct mailbox *box, bool log_compacted)
{
	struct mailbox_cache *c = box->cache;
	bool expunges = false;
	int ret;

	if (c == NULL || (c->fd < 0 && !c->seen_exists && c->pending_count == 0))
		return;
	c = cache_get(box);
	for (uint32_t i = 0; i < box->count && !expunges; i++)
		expunges = (box->recs[i].flags & MAIL_EXPUNGED) != 0;
	/* A view that never read the file opens it only to compact it
	   along with the log (rare); dead records of expunges are counted
	   by views that have it open anyway. */
	if (c->pending_count == 0 &&
	    !(c->seen_exists && (log_compacted || (expunges && c->fd >= 0))))
		return;
	ret = cache_write(box, c, log_compacted, expunges);
	if (ret < 0)
		log_warn("store %s: mailbox %s: writing %s: %s",
			 box->user->name, box->name, MAILBOX_CACHE_FILE,
			 strerror(-ret));
	cache_after_write(box, c, ret >= 0);
}

/* cache_flush - write the adds now: if EX is free (wait false), or
   waiting for it */
static int cache_flush(struct mailbox *box, bool wait)
{
	int ret;

	if (box->cache == NULL || box->cache->pending_count == 0)
		return STORE_OK;
	ret = wait ? mailbox_lock(box, LOCK_MODE_EX) :
		mailbox_lock_try(box, LOCK_MODE_EX);
	if (ret == MAILBOX_LOCK_BUSY)
		return STORE_OK;
	if (ret < 0)
		return ret;
	mailbox_unlock(box);
	return STORE_OK;
}

int mailbox_cache_flush(struct mailbox *box)
{
	return cache_flush(box, false);
}

int mailbox_cache_flush_wait(struct mailbox *box)
{
	return cache_flush(box, true);
}
