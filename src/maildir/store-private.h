#ifndef CM_STORE_PRIVATE_H
#define CM_STORE_PRIVATE_H
/*
 * store-private.h - shared internals of src/maildir. Not for other parts.
 */
#include "lib/lib.h"
#include "store.h"

#include <pthread.h>
#include <sys/stat.h>

/* new/ directories this process listed and found empty (mailbox.c:
   mailbox_scan_new()); a small direct-mapped table. */
#define STORE_NEW_SEEN_SLOTS 512
struct store_new_seen {
	dev_t dev;
	ino_t ino;			/* 0 = free */
	struct timespec mtime;
};

struct store {
	char *spool_dir;
	char *node_name;		/* sanitized for file names */
	struct lock_client *locks;
	uint64_t lock_timeout_msecs;
	uint64_t lock_cache_hold_msecs;	/* 0: no lock caching */
	uint64_t tmp_grace_secs;
	uint64_t log_compact_bytes;
	uint32_t expunge_history_max;	/* see store_settings */
	store_changed_callback_t *changed;	/* see store_settings */
	void *changed_context;
	int spool_fd;			/* O_PATH|O_DIRECTORY */
	bool spool_nfs;			/* attributes may be cached */
	bool log_writer_mark;		/* store_settings; always on NFS */
	pthread_mutex_t new_seen_lock;	/* sessions on several threads */
	struct store_new_seen new_seen[STORE_NEW_SEEN_SLOTS];
};

struct store_user {
	struct store *store;
	struct sio *sio;
	char *name;			/* canonical address */
	char *rel_path;			/* "domain/localpart" */
	char *path;			/* absolute root */
	int root_fd;			/* O_DIRECTORY of the root */
	struct lock *lock;		/* the user lock (class USER) */
	unsigned int lock_depth;	/* nested store_user_lock() calls */
	struct store_status_cache *status_cache;	/* store.c */
	/* Shared mailboxes: the address whose rights are checked (owned;
	   NULL = the owner, who has every right), and the store_user of
	   that requester's session (borrowed, may be NULL) that receives a
	   copy of every error text, so that the session reports it. */
	char *requester;
	struct store_user *error_sink;
	char error[256];
};

/* Unique file names: "<secs>.M<usecs>P<pid>Q<counter>.<node>". */
#define STORE_UNIQUE_MAX 128
void store_unique_name(struct store *store, char name_r[STORE_UNIQUE_MAX]);
/* A new UIDVALIDITY, never handed out before for this user (caller holds
   the user lock EX). */
int store_next_uidvalidity(struct store_user *user, uint32_t *uidvalidity_r);
/* Special-use bits of a mailbox directory (0 if none). */
unsigned int store_mailbox_special_use(struct store_user *user,
				       const char *dir);
void store_status_cache_clear(struct store_user *user);
/* Was the new/ directory with this stat (dev, inode, mtime) listed empty
   by this process? note_empty records it. */
bool store_new_seen_empty(struct store *store, const struct stat *st);
void store_new_note_empty(struct store *store, const struct stat *st);

/* Set the user-visible error and return result (for `return set_error()`).
   Also logs at debug level. */
int store_set_error(struct store_user *user, int result, const char *fmt, ...)
	ATTR_FORMAT(3, 4);
/* Log errno-style failure of op on path (error level) and set a TEMP
   error; returns STORE_ERR_TEMP. err is a -errno value. */
/* Tell the store's listener that user's mailbox changed. */
static inline void store_notify_changed(struct store_user *user,
					const char *mailbox)
{
	if (user->store->changed != NULL)
		user->store->changed(user->name, mailbox,
				     user->store->changed_context);
}
int store_io_error(struct store_user *user, const char *op, const char *path,
		   int err);

/* The user lock: EX for create/delete/rename/subscriptions/quota limits/
   ACL changes, PR for listing. Nested calls are counted (the mode of the
   first call wins; asking EX inside PR panics). Returns STORE_OK or TEMP. */
int store_user_lock(struct store_user *user, enum lock_mode mode);
void store_user_unlock(struct store_user *user);

/* Directory (relative to the user root) of a mailbox by any valid name;
   BADNAME with the error set otherwise. */
int store_mailbox_dir(struct store_user *user, const char *name,
		      char **canonical_r, char **dir_r);

/* Small files (subscriptions, quota, ACL, mailbox attributes): read the
   whole file (NOTFOUND if missing; at most 1 MiB), and replace it
   atomically and durably (tmp file, fsync, rename, directory fsync).
   path is relative to the user root. */
int store_file_read(struct store_user *user, const char *path,
		    char **data_r, size_t *size_r);
int store_file_replace(struct store_user *user, const char *path,
		       const void *data, size_t size);

/* subscriptions.c: the subscribed names (canonical), sorted. */
int store_subscriptions_read(struct store_user *user, char ***names_r,
			     size_t *count_r);
void store_names_free(char **names, size_t count);


/* acl.c: ACL file of a mailbox directory ("clustermail.acl" inside it). */
#define STORE_ACL_FILE "clustermail.acl"

/* acl.c: the requester's effective rights (ACL_RIGHT_* of acl.h) on an
   existing mailbox; every right when the user has no requester.
   NOTFOUND (error set) when the mailbox does not exist. */
int store_rights_get(struct store_user *user, const char *mailbox,
		     unsigned int *rights_r);
/* The same, and OK only when every right in need is there; otherwise
   NOPERM, or NOTFOUND when the requester may not even see the mailbox
   (neither "l" nor "r": RFC 4314 4 - existence is not revealed).
   rights_r (may be NULL) gets the rights in any case but NOTFOUND. */
int store_rights_check(struct store_user *user, const char *mailbox,
		       unsigned int need, unsigned int *rights_r);
/* The refusal store_rights_check() gives for these rights. */
int store_rights_refuse(struct store_user *user, const char *mailbox,
			unsigned int rights);

#endif
