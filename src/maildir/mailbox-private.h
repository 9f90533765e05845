#ifndef CM_MAILBOX_PRIVATE_H
#define CM_MAILBOX_PRIVATE_H
/*
 * mailbox-private.h - mailbox views, shared by mailbox.c, save.c and
 * check.c. See mailbox.c for the file formats and the locking protocol.
 */
#include <sys/types.h>
#include <time.h>

#include "store-private.h"

#define MAILBOX_INDEX_FILE "clustermail.index"
#define MAILBOX_LOG_FILE "clustermail.log"
#define MAILBOX_ATTR_FILE "clustermail.mailbox"
#define MAILBOX_CACHE_FILE "clustermail.cache"
#define MAILBOX_NEW_HINT_FILE "clustermail.newseen"

struct mailbox_cache;		/* cache.c */

/* Expunged UIDs a snapshot (index) remembers for QRESYNC, by default
   (store_settings.expunge_history_max); an index never holds more than
   MAILBOX_EXPUNGE_HISTORY_LIMIT. */
#define MAILBOX_EXPUNGE_HISTORY_MAX 8192
#define MAILBOX_EXPUNGE_HISTORY_LIMIT (1024 * 1024)

/* The version stamp (DESIGN invariant 3): exactly the lock value block. */
struct mailbox_stamp {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint32_t log_gen;
	uint32_t reserved;
	uint64_t log_size;
};

/* A FLAGS or EXPUNGE log record whose file work (renames, unlinks) has
   not been confirmed by a DONE record yet. */
struct mailbox_pending {
	uint64_t offset;		/* of the record in the log */
	uint8_t type;
	size_t count;
	uint32_t *uids;
	uint32_t *flags;		/* FLAGS: the new standard flags */
	char **bases;			/* EXPUNGE: the files' base names */
};

/* One entry of the expunge history (QRESYNC): a UID and the modseq of
   the EXPUNGE record that removed it. */
struct mailbox_expunged {
	uint32_t uid;
	uint64_t modseq;
};

struct mailbox {
	struct store_user *user;
	char *name;			/* canonical */
	char *dir;			/* relative to the user root */
	unsigned int open_flags;
	int dir_fd;
	dev_t dev;
	ino_t ino;
	struct lock *lock;
	bool deleted;

	/* State as of log_offset in log generation log_gen. */
	bool loaded;
	int log_fd;
	/* NFS: this EX hold has set the writer mark in log_fd's header
	   (see "Writers that died on NFS" in mailbox.c). */
	bool log_marked;
	uint32_t log_gen;
	uint64_t log_offset;
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t first_recent_uid;
	uint64_t highestmodseq;

	/* The view: sorted by UID; MAIL_EXPUNGED records stay until
	   mailbox_sync() reports them. */
	struct mail_record *recs;
	uint32_t count, alloc;
	/* Base names of the records loaded from the index, in one block
	   (other bases are malloc'ed one by one; see view_base_free()). */
	char *base_arena;
	size_t base_arena_size;
	char *keywords[STORE_MAX_KEYWORDS];
	unsigned int kw_count;

	struct mailbox_pending *pending;
	size_t pending_count;

	/* Expunge history, ascending modseq: every UID expunged with a
	   modseq above exp_floor (the index keeps the newest
	   MAILBOX_EXPUNGE_HISTORY_MAX, the log adds the rest). When
	   exp_floor_known is false (a rebuilt or reset view), the floor is
	   taken to be HIGHESTMODSEQ: nothing earlier is remembered. */
	struct mailbox_expunged *exp_hist;
	size_t exp_count, exp_alloc;
	uint64_t exp_floor;
	bool exp_floor_known;

	/* Not yet reported by mailbox_sync(). */
	uint32_t *changed;
	size_t changed_count, changed_alloc;
	uint32_t reported_count;	/* records reported as existing */
	bool keywords_changed;
	bool uidvalidity_changed;

	unsigned int special_use;
	uint64_t last_tmp_clean;

	/* new/ as last seen empty by a sync (see mailbox_scan_new()). */
	bool new_empty_known;
	struct timespec new_mtime;
	ino_t new_ino;

	struct mailbox_cache *cache;	/* owned; cache.c */
	/* Shared mailboxes: the requester's rights (ACL_RIGHT_*), refreshed
	   at each mailbox_sync(); and whether the view owns its user. */
	unsigned int rights;
	bool owns_user;
	/* The ACL file the rights were read from (inode 0: none/unread). */
	bool acl_known;
	ino_t acl_ino;
	struct timespec acl_mtime;
};

/* One message entering a mailbox through new/ (save.c, copy). */
struct mailbox_new_file {
	char *base;			/* unique name with ,S= and ,W= */
	uint32_t flags;
	uint64_t keywords;		/* resolved against the mailbox */
	uint64_t size, vsize;
	int64_t internaldate;
	uint32_t uid;			/* assigned */
};

int mailbox_metadata_init(struct store_user *user, const char *dir,
			  uint32_t uidvalidity);
/* 0 if the mailbox dir has our metadata, NOTFOUND if not. */
int mailbox_metadata_exists(struct store_user *user, const char *dir);

/* Lock the mailbox and bring the view up to date (EX: also picks up
   new/). NOTFOUND if the mailbox was deleted or renamed away. */
int mailbox_lock(struct mailbox *box, enum lock_mode mode);
/* The same without waiting: MAILBOX_LOCK_BUSY if another handle holds a
   conflicting lock right now. */
#define MAILBOX_LOCK_BUSY 1
int mailbox_lock_try(struct mailbox *box, enum lock_mode mode);
void mailbox_unlock(struct mailbox *box);
/* Under EX: move files from tmp/BASE to new/BASE and fsync new/. */
int mailbox_files_tmp_to_new(struct mailbox *box,
			     const struct mailbox_new_file *files, size_t count);
/* Under EX: files already linked (durably) into new/ under their base
   names get UIDs, a durable log record, and move to cur/. */
int mailbox_add_files(struct mailbox *box, struct mailbox_new_file *files,
		      size_t count);
/* Keyword names -> bitmask, adding to the table (logged) as needed. EX. */
int mailbox_keywords_resolve(struct mailbox *box, const char *const *names,
			     uint64_t *mask_r);
/* The MAIL_* flags the rights (ACL_RIGHT_*) allow to change: \Seen for
   "s", \Deleted for "t", the others for "w". */
uint32_t mailbox_rights_flags(unsigned int rights);
/* Bring the requester's rights on the view's mailbox up to date (no-op
   for the owner): one stat of the ACL file, a read only when it changed
   (cheap enough for every message a FETCH opens). */
int mailbox_rights_refresh(struct mailbox *box);
/* Maildir file name for a record: "base:2,FRS". */
void mailbox_file_name(const char *base, uint32_t flags, char *buf,
		       size_t size);
/* Parse sizes from a base name; false if absent. */
bool mailbox_base_sizes(const char *base, uint64_t *size_r, uint64_t *vsize_r);
/* Standard flags from a file name's ":2," part. */
uint32_t mailbox_name_flags(const char *name);
/* RFC822.SIZE of a stored (LF or CRLF) file, by reading it. */
int mailbox_compute_vsize(struct sio *sio, int fd, uint64_t *size_r,
			  uint64_t *vsize_r);
/* Write a fresh index + log (generation + 1) from the view. EX. */
int mailbox_write_snapshot(struct mailbox *box);
/* Rebuild from the Maildir. EX held. */
int mailbox_rebuild_locked(struct mailbox *box);
/* Empty the view and forget the loaded state (rebuild). */
void mailbox_view_reset(struct mailbox *box);
/* Append a record (the base is taken over) to the view. */
void mailbox_view_add(struct mailbox *box, const struct mail_record *rec);
/* Open the mailbox view object without syncing (check, rebuild). */
int mailbox_open_raw(struct store_user *user, const char *name,
		     unsigned int flags, struct mailbox **box_r);
/* Load index + log into the view; STORE_ERR_CORRUPT with the reason in
   reason_r when damaged. Lock held. */
int mailbox_load(struct mailbox *box, const char **reason_r);

/* ---- the message cache (cache.c) ----
   Called by mailbox.c only. note_locked: at the end of every locked sync
   (PR or EX), remember the cache file's inode and size. write_locked: EX
   held, before the release: write pending adds; compact the file when
   log_compacted (the change log was just compacted) or when it is mostly
   dead records. free: mailbox_close(). */
void mailbox_cache_note_locked(struct mailbox *box);
void mailbox_cache_write_locked(struct mailbox *box, bool log_compacted);
void mailbox_cache_free(struct mailbox *box);

#endif
