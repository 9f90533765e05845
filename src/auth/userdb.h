#ifndef CM_AUTH_USERDB_H
#define CM_AUTH_USERDB_H
/*
 * userdb - the users file: who may log in, with which password hash.
 *
 * Format (settings users_file, default /etc/clustermail/users), one entry
 * per line:
 *
 *   # comment
 *   alice@example.com:$y$j9T$...$...
 *   bob@example.com:$6$rounds=50000$...$...:quota=10G note=migrated
 *
 *   ADDRESS ':' HASH [ ':' EXTRA ]
 *
 * ADDRESS is localpart@domain, at most 254 bytes, stored lowercased. The
 * local part (at most 64 bytes) is an RFC 5321 dot-atom: letters, digits,
 * and ! # $ % & ' * + - / = ? ^ _ ` { | } ~, with single dots between
 * atoms; no quoted local parts, and it must not start with '#' (that would
 * read back as a comment). The domain is one or more LDH labels (letters,
 * digits, inner hyphens; 1-63 bytes each) separated by dots.
 *
 * HASH is a strong crypt(3) hash or a locked one ('!' or '*' prefix); see
 * auth/password.h for what is accepted.
 *
 * EXTRA is optional: space-separated key=value words (key: letters,
 * digits, '_', '-', '.'; value: no white space). They are kept verbatim
 * for later features such as quotas; this module only checks their shape.
 *
 * Lines whose first non-blank character is '#', and blank lines, are
 * comments: they are kept verbatim, in place, when the file is rewritten.
 * A trailing "\r" and trailing blanks on an entry line are ignored.
 *
 * Reading needs no lock: the file is only ever replaced by rename(2), so a
 * reader sees either the old or the new version, never a mix. Writers
 * serialise on an OFD lock on "PATH.lock" (userdb_lock()) held across
 * load, modify and save, so concurrent changes never lose an update; OFD
 * locks are released by the kernel if the holder dies, and on NFSv4 and
 * GFS2/OCFS2 they are cluster-wide.
 */
#include <stdbool.h>
#include <stddef.h>

#define USERDB_ADDRESS_MAX 254		/* bytes */
#define USERDB_LOCAL_PART_MAX 64	/* bytes */
#define USERDB_LINE_MAX 8192		/* bytes, without the newline */
#define USERDB_FILE_MAX (512UL * 1024 * 1024)	/* bytes */
/* Mode of a users file this module creates (an existing file keeps its). */
#define USERDB_NEW_FILE_MODE 0640

/* userdb_load() result for a file that could be read but is not valid. */
#define USERDB_MALFORMED (-2)

struct userdb;
struct userdb_lock;

/* One user. All strings belong to the userdb and stay valid until that
   user is changed or removed, or the userdb is freed. */
struct userdb_user {
	const char *address;	/* lowercased */
	const char *hash;
	const char *extra;	/* "key=value ..." verbatim, or NULL */
};

enum userdb_load_flags {
	USERDB_LOAD_DEFAULT = 0,
	/* A missing file is an empty userdb rather than an error (for the
	   first "user add"). */
	USERDB_LOAD_MISSING_OK = 1 << 0,
};

/* Read and validate the users file at path. Returns 0 with *db_r set;
   -1 if the file cannot be read (message "PATH: reason"); or
   USERDB_MALFORMED if it can but a line is invalid (message
   "PATH:LINE: reason": bad address, missing hash, unsupported hash, bad
   extra field, duplicate user, overlong line). On failure *error_r is
   allocated and the caller frees it. */
int userdb_load(const char *path, enum userdb_load_flags flags,
		struct userdb **db_r, char **error_r);
/* Free a userdb; sets *db = NULL. NULL is allowed. */
void userdb_free(struct userdb **db);

/* The path the userdb was loaded from (and is saved to). */
const char *userdb_path(const struct userdb *db);
/* Number of users. */
size_t userdb_count(const struct userdb *db);
/* Find a user by address (letter case does not matter); NULL if there is
   no such user or address is not a valid address. */
const struct userdb_user *userdb_lookup(const struct userdb *db,
					const char *address);
/* All users sorted by address. Returns an allocated array of *count_r
   pointers that the caller frees (not the users it points to); valid
   until the next change to db. */
const struct userdb_user **userdb_list(const struct userdb *db,
				       size_t *count_r);

/* Add a user at the end of the file. address is validated and lowercased;
   hash must be accepted by password_hash_check() (strong or locked);
   extra may be NULL. Returns 1 when added, 0 if the user already exists,
   -1 with *error_r set to a static reason if an argument is invalid. */
int userdb_add(struct userdb *db, const char *address, const char *hash,
	       const char *extra, const char **error_r);
/* Replace a user's hash (extra fields stay). Returns 1 when changed, 0 if
   there is no such user, -1 with *error_r set if hash is not accepted. */
int userdb_set_hash(struct userdb *db, const char *address, const char *hash,
		    const char **error_r);
/* Remove a user. Returns 1 when removed, 0 if there is no such user. */
int userdb_remove(struct userdb *db, const char *address);

/* Write db back to its path atomically and durably: a temporary file
   "PATH.tmp.<pid>" in the same directory is written and fsynced, given the
   old file's mode, owner and group, renamed over PATH, and the directory
   is fsynced. A new file gets USERDB_NEW_FILE_MODE and the primary group
   of group_user when that user exists (the daemon's mail user, so that it
   can read the file after dropping privileges), else the current group.
   PATH must not be a symbolic link. The caller should hold userdb_lock().
   Returns 0, or -1 with an allocated *error_r (caller frees); on failure
   the temporary file is removed and PATH is unchanged, except that a
   failed directory fsync is reported after the rename has happened. */
int userdb_save(struct userdb *db, const char *group_user, char **error_r);

/* Take the exclusive writer lock for the users file at path (an OFD lock
   on "PATH.lock", created with mode 0600 if needed), waiting as long as
   another writer holds it. Returns 0 with *lock_r set, or -1 with an
   allocated *error_r (caller frees). */
int userdb_lock(const char *path, struct userdb_lock **lock_r,
		char **error_r);
/* Release the lock; sets *lock = NULL. NULL is allowed. */
void userdb_unlock(struct userdb_lock **lock);

/* Validate an address (rules above). Returns 0 with *normalized_r set to
   an allocated lowercase copy (caller frees), or -1 with *error_r set to a
   static reason ("missing '@'", ...). */
int userdb_address_normalize(const char *address, char **normalized_r,
			     const char **error_r);

#endif
