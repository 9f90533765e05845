#ifndef CM_STORE_H
#define CM_STORE_H
/*
 * store - the mailbox store: Maildir++ on a shared spool, safe when many
 * nodes read and write the same mailboxes at once.
 *
 * Layout (DESIGN "Maildir stays Maildir"):
 *   SPOOL/<domain>/<localpart>/          the user's Maildir++ root = INBOX
 *       cur/ new/ tmp/                   INBOX messages
 *       .Sent/ .Archive.2024/            folders (mailbox "Archive/2024")
 *       clustermail.index                per mailbox: snapshot of the UID list
 *       clustermail.log                  per mailbox: append-only change log
 *       clustermail.cache                per mailbox: message cache (cache.c)
 *       clustermail.newseen              per mailbox: "new/ was empty" hint
 *       clustermail.acl                  per mailbox: RFC 4314 ACL, if any
 *       clustermail.mailbox              per mailbox: special-use, MAILBOXID
 *       subscriptions, clustermail.quota, clustermail.uidvalidity  (user root)
 *   SPOOL/.locks/                        fcntl lock files
 *
 * Mailbox names in this API are UTF-8 with '/' as the hierarchy separator;
 * "INBOX" (any case) is the root. name.h maps them to directory names.
 *
 * Context. A struct store_user is one user's spool seen by one session on
 * one thread (with its sio: synchronous in clustermailctl, coroutines on
 * an ioloop in clustermaild). It is not thread-safe; open one per session.
 *
 * Errors. Functions return STORE_OK (0) or a negative enum store_result;
 * store_user_error() then holds a one-line, user-presentable reason (the
 * details, with paths and errno, have been logged). STORE_ERR_TEMP means
 * "try again later" (lock timeout, I/O error, full disk, stale NFS handle
 * after retries): nothing was changed or the change was rolled back.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lock/lock.h"
#include "maildir/sio.h"

struct store;
struct store_user;
struct mailbox;
struct store_save;

enum store_result {
	STORE_OK = 0,
	STORE_ERR_NOTFOUND = -1,	/* no such mailbox (or user spool) */
	STORE_ERR_EXISTS = -2,		/* mailbox already exists */
	STORE_ERR_BADNAME = -3,		/* invalid mailbox or user name */
	STORE_ERR_OVERQUOTA = -4,	/* RFC 9208 limit reached */
	STORE_ERR_LIMIT = -5,		/* too large / too many (keywords...) */
	STORE_ERR_TEMP = -6,		/* temporary failure, retry later */
	STORE_ERR_NOPERM = -7,		/* ACL forbids it */
	STORE_ERR_CANNOT = -8,		/* not allowed (delete INBOX, rename
					   into own child, ...) */
	STORE_ERR_CORRUPT = -9,		/* index check found inconsistencies */
};
const char *store_result_name(enum store_result r);

/* ---- the store (one per process) ------------------------------------- */

/* user's mailbox (canonical names) changed: a record was committed to
   its log, or a message was delivered into it. Runs on the thread that
   made the change, while it may hold the mailbox lock: be quick. */
typedef void store_changed_callback_t(const char *user, const char *mailbox,
				      void *context);

struct store_settings {
	const char *spool_dir;		/* absolute */
	const char *node_name;		/* goes into unique file names */
	struct lock_client *locks;	/* borrowed */
	uint64_t lock_timeout_msecs;	/* 0 = 30 s */
	/* Keep mailbox locks between commands (lock_release_cached(): dlm,
	   local; sessions on a loop that keeps running) with this minimum
	   hold when another node wants one; 0 = release at once. */
	uint64_t lock_cache_hold_msecs;
	/* Mark the change log while an EX holder writes it, so that the
	   next writer notices one that died mid-hold and moves to a new log
	   (mailbox.c, "Writers that died on NFS"). Always on for a spool on
	   NFS; settable for tests of that path on other file systems. */
	bool log_writer_mark;
	/* Files in tmp/ older than this are removed by sync; 0 = 36 h. */
	uint64_t tmp_grace_secs;
	/* Compact the change log when it grows past this; 0 = 256 KiB. */
	uint64_t log_compact_bytes;
	/* Expunged UIDs (with their modseqs) each mailbox's index keeps for
	   QRESYNC across compactions; 0 = 8192. */
	uint32_t expunge_history_max;
	/* Told about every change (IDLE wake-ups, cluster notifications);
	   NULL = nobody listens. */
	store_changed_callback_t *changed;
	void *changed_context;
};
struct store *store_create(const struct store_settings *set);
void store_destroy(struct store **store);

/* ---- users ------------------------------------------------------------ */

#define STORE_USER_CREATE 0x1	/* create the spool root and INBOX if missing */

/* user is "localpart@domain" (case-folded to lower case). Returns
   STORE_ERR_NOTFOUND when the spool does not exist and CREATE was not
   given, STORE_ERR_BADNAME for an unusable address, STORE_ERR_TEMP when
   the spool cannot be read or created. On any error *user_r is NULL and
   *error_r (if error_r is not NULL) is a static reason. */
int store_user_open(struct store *store, struct sio *sio, const char *user,
		    unsigned int flags, struct store_user **user_r,
		    const char **error_r);
void store_user_close(struct store_user **user);
const char *store_user_error(const struct store_user *user);
const char *store_user_name(const struct store_user *user);
/* Absolute path of the user's Maildir++ root. */
const char *store_user_path(const struct store_user *user);
/* The spool I/O of this user's session (borrowed): read message files
   with sio_pread() so that the reads go through the session's loop. */
struct sio *store_user_sio(const struct store_user *user);

/* ---- mailbox list and management (user lock) ------------------------- */

/* Mailbox attributes in listings (RFC 9051 / RFC 6154 names). */
#define STORE_LIST_NONEXISTENT	0x0001	/* only a parent of others */
#define STORE_LIST_HAS_CHILDREN	0x0002
#define STORE_LIST_SUBSCRIBED	0x0004
#define STORE_SPECIAL_DRAFTS	0x0100
#define STORE_SPECIAL_SENT	0x0200
#define STORE_SPECIAL_TRASH	0x0400
#define STORE_SPECIAL_JUNK	0x0800
#define STORE_SPECIAL_ARCHIVE	0x1000
#define STORE_SPECIAL_MASK	0x1f00

struct store_list_entry {
	char *name;		/* UTF-8, '/' separated; "INBOX" first */
	unsigned int attrs;	/* STORE_LIST_* | STORE_SPECIAL_* */
};
/* Every mailbox, every parent that exists only as a prefix of another
   (NONEXISTENT), and every subscribed name that no longer exists
   (NONEXISTENT|SUBSCRIBED); sorted by name with INBOX first. */
int store_list(struct store_user *user, struct store_list_entry **entries_r,
	       size_t *count_r);
void store_list_free(struct store_list_entry *entries, size_t count);

int store_mailbox_create(struct store_user *user, const char *name,
			 unsigned int special_use);
/* Deletes the mailbox and its messages; children stay (the name then
   lists as NONEXISTENT). INBOX cannot be deleted (CANNOT). */
int store_mailbox_delete(struct store_user *user, const char *name);
/* Renames a mailbox and all its children. Renaming INBOX moves its
   messages into the new mailbox and leaves INBOX empty (RFC 9051). */
int store_mailbox_rename(struct store_user *user, const char *old_name,
			 const char *new_name);
int store_subscribe(struct store_user *user, const char *name, bool subscribe);
int store_mailbox_exists(struct store_user *user, const char *name);
/* Canonical form of a name ("inbox/x" -> "INBOX/x"); BADNAME if invalid. */
int store_name_normalize(const char *name, char **canonical_r);

/* RFC 8474 MAILBOXID: "F" and 32 hex digits from 128 random bits, made
   when the mailbox is created and kept in its clustermail.mailbox, so
   it stays with the mailbox across renames and a mailbox created again
   under an old name gets a new one. A mailbox made before ids existed
   gets its id at the first call, under the user lock EX (the lock that
   creates, renames and deletes hold), so two nodes never give it two.
   A requester needs to see the mailbox ("l" or "r"). */
#define STORE_MAILBOX_ID_SIZE 34	/* with the NUL */
int store_mailbox_id(struct store_user *user, const char *name,
		     char id_r[STORE_MAILBOX_ID_SIZE]);

/* ---- status ------------------------------------------------------------ */

struct store_status {
	uint32_t messages;
	uint32_t unseen;		/* messages without \Seen */
	uint32_t recent;		/* uid >= first_recent_uid */
	uint32_t deleted;		/* messages with \Deleted */
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint64_t highestmodseq;
	uint64_t size;			/* sum of RFC822.SIZE (STATUS SIZE) */
	uint32_t pending;		/* files in new/ not yet given a UID */
	unsigned int special_use;	/* STORE_SPECIAL_* */
};
/* Counts include pending deliveries in new/ (they are picked up first,
   which takes the mailbox lock exclusively when there are any). */
int store_mailbox_status(struct store_user *user, const char *name,
			 struct store_status *status_r);

/* ---- quota (RFC 9208: STORAGE in bytes here, MESSAGE) ---------------- */

struct store_quota {
	uint64_t storage_used, storage_limit;	/* bytes; limit 0 = none */
	uint64_t messages_used, messages_limit;	/* limit 0 = none */
};
int store_quota_get(struct store_user *user, struct store_quota *quota_r);
int store_quota_set(struct store_user *user, uint64_t storage_limit,
		    uint64_t messages_limit);
/* Would adding bytes/messages exceed the limits? OK or OVERQUOTA (error
   set). Cheap without limits: reads the limits file and, only when a
   limit is set, the usage. */
int store_quota_check(struct store_user *user, uint64_t add_bytes,
		      uint64_t add_messages);

/* ---- ACL (RFC 4314) --------------------------------------------------- */

/* Rights as a string of RFC 4314 letters "lrswipkxtea"; identifiers are
   "anyone", "authenticated", an address, or "-address" (negative). The
   owner always has every right. */
struct store_acl_entry {
	char *identifier;
	char *rights;
};
int store_acl_get(struct store_user *user, const char *mailbox,
		  struct store_acl_entry **entries_r, size_t *count_r);
void store_acl_free(struct store_acl_entry *entries, size_t count);
/* rights "" or NULL deletes the identifier's entry. Rights may start with
   '+' or '-' to add or remove letters (SETACL semantics). */
int store_acl_set(struct store_user *user, const char *mailbox,
		  const char *identifier, const char *rights);
/* The effective rights of identifier (an address) on the mailbox. */
int store_acl_rights(struct store_user *user, const char *mailbox,
		     const char *identifier, char rights_r[16]);

/* ---- shared mailboxes (RFC 4314 rights enforced by the store) --------
 * A session of user A works on user B's mailboxes through a store_user of
 * B that carries A as its "requester". Every call on that store_user
 * then checks A's effective rights (the ACL of each mailbox: "anyone",
 * "authenticated", A's own entry, minus negative entries), reading the
 * ACL file each time so that a revoked right counts from the next call:
 *   store_list              only mailboxes where A has "l" (parents that
 *                           exist only as a prefix are added as usual);
 *                           no subscriptions (they are B's)
 *   mailbox_open            "r" ("i" with MAILBOX_OPEN_INSERT)
 *   store_mailbox_status    "r"
 *   mailbox_open_message    "r" (a stat of the ACL file per call)
 *   mailbox_store           \Seen needs "s", \Deleted "t", other flags
 *                           and keywords "w"; changes without the right
 *                           are silently left out (RFC 4314 4: so the
 *                           implicit \Seen of FETCH never fails)
 *   mailbox_expunge         "e"
 *   mailbox_copy[_to]       "r" on the source ("t" and "e" for a move),
 *                           "i" on the target; flags as for STORE
 *   store_save_append       "i"; flags as for STORE
 *   store_mailbox_create    "k" on the nearest existing parent (INBOX
 *                           for a top-level name)
 *   store_mailbox_delete    "x"; rename: "x" on the old name and "k"
 *                           for the new one
 *   store_acl_get/set       "a"; store_acl_rights "a" unless asking for
 *                           the requester itself
 *   store_subscribe, store_quota_set, store_index_*   NOPERM
 * A refusal is STORE_ERR_NOPERM, or STORE_ERR_NOTFOUND with the very text
 * a missing mailbox gets when A has neither "l" nor "r" on it (RFC 4314
 * 4: the mailbox's existence is not revealed). \Seen is one flag per
 * message, shared by everybody who may set it (no per-user \Seen).
 * Lock order is unchanged: operations on B's mailboxes take B's user and
 * mailbox locks; a copy between A and B holds only one mailbox lock at a
 * time.
 */

/* Open owner's spool (never created) for the session of requester, with
   the requester's sio and requester's name as requester identity; error
   texts are copied to requester. A bad or unknown owner is NOTFOUND
   "Mailbox doesn't exist" (set on requester): user names do not leak.
   The result must be closed before requester. */
int store_user_open_shared(struct store_user *requester, const char *owner,
			   struct store_user **owner_r);
/* Check rights for requester (an address; NULL = the owner again) on
   every following call (clustermailctl and tests; IMAP uses the call
   above). */
void store_user_set_requester(struct store_user *user, const char *requester);
/* NULL when the user works on its own spool. */
const char *store_user_requester(const struct store_user *user);
/* The requester's rights on a mailbox as ACL_RIGHT_* bits (maildir/acl.h;
   every right for the owner). NOTFOUND when the mailbox does not exist
   or the requester has no right at all on it (RFC 4314 MYRIGHTS). */
int store_mailbox_myrights(struct store_user *user, const char *mailbox,
			   unsigned int *rights_r);
/* The same as letters (no virtual rights), for MYRIGHTS. */
int store_acl_myrights(struct store_user *user, const char *mailbox,
		       char rights_r[16]);
/* The owners (canonical addresses, sorted, without user itself) that
   have granted user, "authenticated" or "anyone" some right on some
   mailbox: candidates for "Other Users" in LIST. A hint kept by
   store_acl_set() in SPOOL/.shared/ (see acl.c); the rights themselves
   must still be checked (store_list() through store_user_open_shared()
   does). At most 10000 owners. */
int store_shared_owners(struct store_user *user, char ***owners_r,
			size_t *count_r);
void store_shared_owners_free(char **owners, size_t count);

/* ---- messages ----------------------------------------------------------- */

#define MAIL_SEEN	0x01
#define MAIL_ANSWERED	0x02
#define MAIL_FLAGGED	0x04
#define MAIL_DELETED	0x08
#define MAIL_DRAFT	0x10
#define MAIL_FLAGS_MASK	0x1f
/* View-only bits (never stored). */
#define MAIL_RECENT	0x40
#define MAIL_EXPUNGED	0x80	/* expunged, kept in the view until reported */

/* Keywords per mailbox (each mailbox has a table of at most this many). */
#define STORE_MAX_KEYWORDS 64

struct mail_record {
	uint32_t uid;
	uint32_t flags;			/* MAIL_* */
	uint64_t keywords;		/* bit i = mailbox_keyword_name(i) */
	uint64_t modseq;
	uint64_t size;			/* bytes in the file (LF line ends) */
	uint64_t vsize;			/* RFC822.SIZE (CRLF line ends) */
	int64_t internaldate;		/* seconds since the epoch */
	int64_t savedate;		/* when this copy was stored */
	const char *base;		/* unique file name, no ":2," part */
};

/* RFC 8474 EMAILID of a message: "M" and 32 hex digits, a hash of the
   unique part of its base name. mailbox_copy() gives each copy a new
   base name that carries the source's id as ",E=<id>", which then wins
   over the hash: copies and moves keep the id, and two messages saved
   or delivered separately have different ones. */
#define MAILBOX_EMAIL_ID_SIZE 34	/* with the NUL */
void mailbox_email_id(const char *base, char id_r[MAILBOX_EMAIL_ID_SIZE]);

/* ---- saving: delivery and APPEND ----------------------------------------
 * store_save_begin() opens a file in tmp/; store_save_write() copies
 * message data into it (CRLF or LF line ends, stored as LF);
 * store_save_finish() fsyncs it. Then deliver it into any number of
 * mailboxes (same or other users: hard links where possible) and free it.
 */
struct store_save *store_save_begin(struct store_user *user, int *result_r);
int store_save_write(struct store_save *save, const void *data, size_t size);
int store_save_finish(struct store_save *save);
/* Size of the saved message (after finish): RFC822.SIZE. */
uint64_t store_save_vsize(const struct store_save *save);

struct store_save_options {
	uint32_t flags;			/* MAIL_FLAGS_MASK bits */
	const char *const *keywords;	/* NULL-terminated, may be NULL */
	int64_t internaldate;		/* 0 = now */
};
/* Delivery (LDA, LMTP): into mailbox's new/, durable (file and directory
   fsynced) when this returns OK; the UID is assigned by the next sync.
   Checks target's quota first (OVERQUOTA). mailbox NULL = INBOX.
   target may be another user than the one that began the save. */
int store_save_deliver(struct store_save *save, struct store_user *target,
		       const char *mailbox,
		       const struct store_save_options *opts);
/* APPEND: under the mailbox's exclusive lock, assigns the UID now.
   uid_r and uidvalidity_r for UIDPLUS. */
int store_save_append(struct store_save *save, struct mailbox *box,
		      const struct store_save_options *opts,
		      uint32_t *uid_r, uint32_t *uidvalidity_r);
/* Removes the tmp file; *save = NULL. */
void store_save_free(struct store_save **save);

/* ---- mailbox views --------------------------------------------------- */

#define MAILBOX_OPEN_READONLY	0x1	/* EXAMINE: never claims \Recent */
/* Opened to APPEND to it: a shared mailbox then needs "i", not "r"
   (reading messages through such a view is refused). */
#define MAILBOX_OPEN_INSERT	0x2

/* Opens and syncs a view. NOTFOUND if the mailbox does not exist. */
int mailbox_open(struct store_user *user, const char *name,
		 unsigned int flags, struct mailbox **box_r);
void mailbox_close(struct mailbox **box);
/* The view takes over its store_user: mailbox_close() closes it too
   (a shared mailbox selected by another user's session). */
void mailbox_take_user(struct mailbox *box);
/* The requester's rights on the view's mailbox as of its last sync
   (ACL_RIGHT_* of maildir/acl.h; every right for the owner). */
unsigned int mailbox_rights(const struct mailbox *box);
const char *mailbox_name(const struct mailbox *box);
struct store_user *mailbox_user(const struct mailbox *box);

/* The view: records sorted by UID; index i is sequence number i + 1.
   Pointers stay valid until the next mailbox_sync() or modifying call. */
uint32_t mailbox_count(const struct mailbox *box);
const struct mail_record *mailbox_record(const struct mailbox *box,
					 uint32_t seq_index);
/* Binary search; NULL if the UID is not in the view. */
const struct mail_record *mailbox_lookup_uid(const struct mailbox *box,
					     uint32_t uid, uint32_t *index_r);
void mailbox_get_status(const struct mailbox *box, struct store_status *r);
uint32_t mailbox_uidvalidity(const struct mailbox *box);
uint32_t mailbox_uidnext(const struct mailbox *box);
uint64_t mailbox_highestmodseq(const struct mailbox *box);
unsigned int mailbox_keyword_count(const struct mailbox *box);
const char *mailbox_keyword_name(const struct mailbox *box, unsigned int i);

/* What a sync changed in the view, for untagged responses. */
struct mailbox_changes {
	uint32_t *expunged_uids;	/* removed from the view, ascending */
	uint32_t *expunged_seqs;	/* their sequence numbers before the
					   sync (send EXPUNGE from the last) */
	size_t expunged_count;
	uint32_t *changed_uids;		/* flags/keywords/modseq changed */
	size_t changed_count;
	uint32_t new_count;		/* records appended to the view */
	bool keywords_changed;		/* new keyword names */
	bool uidvalidity_changed;	/* the mailbox was recreated/rebuilt
					   with a new UIDVALIDITY: reselect */
	bool deleted;			/* the mailbox is gone */
};
void mailbox_changes_free(struct mailbox_changes *changes);

/* Keep expunged records in the view (flagged MAIL_EXPUNGED) instead of
   removing them: for sync points where EXPUNGE may not be sent. */
#define MAILBOX_SYNC_NO_EXPUNGE 0x1
/* Bring the view up to date: other nodes' changes (read from the tail of
   the change log) and new deliveries (new/ -> cur/, UIDs assigned).
   changes_r may be NULL. */
int mailbox_sync(struct mailbox *box, unsigned int flags,
		 struct mailbox_changes *changes_r);

enum mailbox_store_mode {
	MAILBOX_STORE_ADD,
	MAILBOX_STORE_REMOVE,
	MAILBOX_STORE_REPLACE,
};
/* STORE flags/keywords on the given UIDs (UIDs not in the mailbox are
   skipped). unchangedsince 0 = unconditional; otherwise messages whose
   modseq is higher are left alone and listed in failed_uids_r (CONDSTORE).
   Changed records get one new modseq. Creates keywords as needed (LIMIT
   when the table is full). */
int mailbox_store(struct mailbox *box, const uint32_t *uids, size_t count,
		  enum mailbox_store_mode mode, uint32_t flags,
		  const char *const *keywords, uint64_t unchangedsince,
		  uint32_t **failed_uids_r, size_t *failed_count_r);
/* Expunge the given UIDs, or (uids NULL) every message with \Deleted.
   The expunged UIDs (ascending) are returned if expunged_r is not NULL
   (caller frees). */
int mailbox_expunge(struct mailbox *box, const uint32_t *uids, size_t count,
		    uint32_t **expunged_r, size_t *expunged_count_r);
/* QRESYNC (RFC 7162 3.2.5): the UIDs (ascending, unique; caller frees)
   that EXPUNGE records with a modseq above modseq removed, as far as
   the view's expunge history (the newest few thousand in the index, plus
   the change log) knows them. *complete_r is false when the history no
   longer reaches back to modseq (older expunges were compacted away):
   then the caller must treat every UID it cannot see in the view as
   possibly expunged. Reflects the view as of its last sync. */
int mailbox_expunged_since(struct mailbox *box, uint64_t modseq,
			   uint32_t **uids_r, size_t *count_r,
			   bool *complete_r);
/* COPY/MOVE to another mailbox of the same user. UIDs not in the view
   are skipped. For UIDPLUS: src_uids_r/dest_uids_r (same order, caller
   frees), and the target's UIDVALIDITY. Flags, keywords and internal date
   are kept; each copy gets a new UID and modseq in the target. MOVE
   expunges the sources after the copies are durable. */
int mailbox_copy(struct mailbox *box, const uint32_t *uids, size_t count,
		 const char *dest_name, bool move,
		 uint32_t *dest_uidvalidity_r, uint32_t **src_uids_r,
		 uint32_t **dest_uids_r, size_t *copied_count_r);

/* mailbox_copy() into a mailbox of dest_user (which may be another user
   than the source's, e.g. a shared mailbox): hard links, so both spools
   must be on one filesystem. Errors are set on the source's user. */
int mailbox_copy_to(struct mailbox *box, const uint32_t *uids, size_t count,
		    struct store_user *dest_user, const char *dest_name,
		    bool move, uint32_t *dest_uidvalidity_r,
		    uint32_t **src_uids_r, uint32_t **dest_uids_r,
		    size_t *copied_count_r);

/* Open a message file for reading (O_RDONLY). Finds it even when another
   tool renamed it; NOTFOUND when it was expunged meanwhile. */
int mailbox_open_message(struct mailbox *box, uint32_t uid, int *fd_r);

/* ---- the message cache ------------------------------------------------
 * Derived data per message that IMAP needs fast (the parsed MIME tree,
 * BODYSTRUCTURE, ENVELOPE ...), kept in the mailbox's clustermail.cache
 * so that a FETCH of it does not re-read and re-parse the message file.
 * A field number names what the bytes are; the store does not interpret
 * them. A lookup sees what this view added and what any node had written
 * when the view last synced. Adds are kept in memory and written to the
 * file the next time this view holds the mailbox lock exclusively (a
 * sync that picks up deliveries, STORE, EXPUNGE, APPEND, COPY) or at
 * mailbox_cache_flush(). The cache is only a cache: a damaged file, or
 * one from an older UIDVALIDITY, is dropped (logged once) and rebuilt on
 * demand; losing it loses nothing.
 */
enum mail_cache_field {
	MAIL_CACHE_MIME_TREE = 1,	/* mime_part_serialize() */
	MAIL_CACHE_BODYSTRUCTURE = 2,	/* IMAP text */
	MAIL_CACHE_BODY = 3,		/* IMAP text */
	MAIL_CACHE_ENVELOPE = 4,	/* IMAP text */
	MAIL_CACHE_SEARCH_HEADER = 5,	/* SEARCH: decoded, case-folded fields */
	MAIL_CACHE_FIELD_COUNT = 16,	/* field numbers are below this */
};
/* Largest value stored (bigger adds are ignored). */
#define MAIL_CACHE_VALUE_MAX (256 * 1024)
/* 1 with *data_r / *size_r (valid until the next mailbox_sync() or
   modifying call on box), 0 if not cached. */
int mailbox_cache_lookup(struct mailbox *box, uint32_t uid,
			 enum mail_cache_field field, const void **data_r,
			 size_t *size_r);
/* Remember a value (copied). UIDs not in the view are ignored. */
void mailbox_cache_add(struct mailbox *box, uint32_t uid,
		       enum mail_cache_field field, const void *data,
		       size_t size);
/* Write pending adds if the exclusive lock is free right now (never
   waits). Returns STORE_OK (also when it was busy: the adds stay pending)
   or an error. */
int mailbox_cache_flush(struct mailbox *box);
/* The same, waiting for the lock if there is anything to write: for a
   view about to be closed, whose adds would otherwise be lost. */
int mailbox_cache_flush_wait(struct mailbox *box);

/* ---- check and rebuild (clustermailctl index) -------------------------- */

/* Compare the metadata with the Maildir. Each problem found is reported
   through report (one line) and counted. Returns OK when there is none,
   STORE_ERR_CORRUPT when there is any, another error if it could not
   check. Takes the mailbox lock shared. */
typedef void store_report_callback_t(const char *mailbox, const char *problem,
				     void *context);
int store_index_check(struct store_user *user, const char *mailbox,
		      store_report_callback_t *report, void *context,
		      unsigned int *problems_r);
/* Rebuild the metadata of one mailbox from its Maildir (exclusive lock):
   UIDs, flags and modseqs are kept where the old data allows, otherwise
   a new UIDVALIDITY is chosen. */
int store_index_rebuild(struct store_user *user, const char *mailbox);

#endif
