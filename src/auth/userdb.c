/*
 * userdb.c - the users file: parsing, lookups, changes and atomic rewrite.
 *
 * The file is held as its list of lines in file order, so that comments,
 * blank lines and the order of entries survive a rewrite. User lines are
 * indexed by an open-addressing hash table (linear probing, at most half
 * full) of line numbers, which makes lookups O(1) and loading 100,000
 * users a matter of milliseconds. A removed user leaves an empty line
 * slot that is skipped when saving; userdbs are short-lived (the daemon
 * reloads the file, clustermailctl makes one change), so the slots are
 * never compacted.
 *
 * Saving follows the usual recipe for replacing a file safely: write a
 * temporary file next to it, fsync it, give it the old file's mode and
 * ownership before its name becomes visible, rename it over the old name
 * and fsync the directory so the rename itself is durable. A crash at any
 * point leaves either the complete old or the complete new file (plus,
 * at worst, a stale temporary file that the next save removes).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "auth/password.h"
#include "auth/userdb.h"

#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define USERDB_READ_CHUNK 65536

struct userdb_line {
	char *comment;			/* owned; comment or blank line */
	struct userdb_user *user;	/* owned; a user entry */
	/* both NULL: a removed user, skipped when saving */
};

struct userdb {
	char *path;			/* owned */
	struct userdb_line *lines;	/* owned, in file order */
	size_t line_count, line_alloc;
	/* Hash table of line index + 1 (0 = empty slot); slot_count is 0 or
	   a power of two. */
	uint32_t *slots;		/* owned */
	size_t slot_count;
	size_t user_count;
};

struct userdb_lock {
	int fd;
};

/* What a rewritten file must look like in the file system. */
struct userdb_file_owner {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	bool is_new;	/* there was no file: owner is a wish, not a must */
};

/*
 * Addresses
 */

/* userdb_is_atext - RFC 5322 atext (the characters of a dot-atom atom) */
static bool userdb_is_atext(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') ||
		(c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* userdb_check_local_part - a dot-atom of at most 64 bytes */
static int userdb_check_local_part(const char *local, size_t len,
				   const char **error_r)
{
	if (len == 0)
		*error_r = "empty local part";
	else if (len > USERDB_LOCAL_PART_MAX)
		*error_r = "local part longer than 64 bytes";
	else if (local[0] == '#')
		*error_r = "local part must not start with '#'";
	else if (local[0] == '.' || local[len - 1] == '.')
		*error_r = "local part must not start or end with '.'";
	else {
		for (size_t i = 0; i < len; i++) {
			if (local[i] == '.' && local[i + 1] == '.') {
				*error_r = "local part contains '..'";
				return -1;
			}
			if (local[i] != '.' && !userdb_is_atext(local[i])) {
				*error_r = "invalid character in local part";
				return -1;
			}
		}
		return 0;
	}
	return -1;
}

/* userdb_check_label - one LDH label of len bytes */
static int userdb_check_label(const char *label, size_t len,
			      const char **error_r)
{
	if (len == 0) {
		*error_r = "empty label in domain";
		return -1;
	}
	if (len > 63) {
		*error_r = "domain label longer than 63 bytes";
		return -1;
	}
	if (label[0] == '-' || label[len - 1] == '-') {
		*error_r = "domain label starts or ends with '-'";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		char c = label[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-')) {
			*error_r = "invalid character in domain";
			return -1;
		}
	}
	return 0;
}

/* userdb_check_domain - dot-separated LDH labels */
static int userdb_check_domain(const char *domain, const char **error_r)
{
	const char *label = domain;
	size_t len;

	for (;;) {
		len = strcspn(label, ".");
		if (userdb_check_label(label, len, error_r) < 0)
			return -1;
		if (label[len] == '\0')
			return 0;
		label += len + 1;
	}
}

/* userdb_check_address - the address rules of userdb.h, letter case aside */
static int userdb_check_address(const char *address, const char **error_r)
{
	size_t len = strnlen(address, USERDB_ADDRESS_MAX + 1);
	const char *at;

	if (len == 0) {
		*error_r = "empty address";
		return -1;
	}
	if (len > USERDB_ADDRESS_MAX) {
		*error_r = "address longer than 254 bytes";
		return -1;
	}
	if ((at = strchr(address, '@')) == NULL) {
		*error_r = "missing '@' (expected localpart@domain)";
		return -1;
	}
	if (strchr(at + 1, '@') != NULL) {
		*error_r = "more than one '@'";
		return -1;
	}
	if (userdb_check_local_part(address, (size_t)(at - address),
				    error_r) < 0)
		return -1;
	return userdb_check_domain(at + 1, error_r);
}

int userdb_address_normalize(const char *address, char **normalized_r,
			     const char **error_r)
{
	if (userdb_check_address(address, error_r) < 0)
		return -1;
	*normalized_r = str_lcase(mem_strdup(address));
	return 0;
}

/* userdb_is_key_char - may c appear in the key of an extra field? */
static bool userdb_is_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* userdb_check_extra - space-separated key=value words */
static int userdb_check_extra(const char *extra, const char **error_r)
{
	const char *p = extra, *key;

	while (*p != '\0') {
		if (*p == ' ' || *p == '\t') {
			p++;
			continue;
		}
		for (key = p; userdb_is_key_char(*p); p++) ;
		if (p == key || *p != '=') {
			*error_r = "extra field is not key=value";
			return -1;
		}
		for (; *p != '\0' && *p != ' ' && *p != '\t'; p++) {
			if ((unsigned char)*p < 0x20 || *p == 0x7f) {
				*error_r = "control character in extra field";
				return -1;
			}
		}
	}
	return 0;
}

/* userdb_check_hash - a hash we are willing to store (strong or locked) */
static int userdb_check_hash(const char *hash, const char **error_r)
{
	if (hash[0] == '\0') {
		*error_r = "missing password hash";
		return -1;
	}
	return password_hash_check(hash, error_r) < 0 ? -1 : 0;
}

/*
 * Users and lines
 */

/* userdb_user_new - one allocation holding the struct and its strings */
static struct userdb_user *userdb_user_new(const char *address,
					   const char *hash,
					   const char *extra)
{
	size_t address_size = strlen(address) + 1, hash_size = strlen(hash) + 1;
	size_t extra_size = extra == NULL ? 0 : strlen(extra) + 1;
	struct userdb_user *user;
	char *p;

	user = mem_zalloc(sizeof(*user) + address_size + hash_size + extra_size);
	p = (char *)(user + 1);
	user->address = memcpy(p, address, address_size);
	user->hash = memcpy(p + address_size, hash, hash_size);
	if (extra != NULL)
		user->extra = memcpy(p + address_size + hash_size, extra,
				     extra_size);
	return user;
}

/* userdb_append_line - add a line at the end; returns its index */
static size_t userdb_append_line(struct userdb *db, char *comment,
				 struct userdb_user *user)
{
	if (db->line_count == db->line_alloc) {
		/* The hash table stores line indexes as uint32_t. */
		if (db->line_alloc >= UINT32_MAX / 2)
			log_fatal("userdb: %s: too many lines", db->path);
		db->line_alloc = db->line_alloc == 0 ? 64 : db->line_alloc * 2;
		db->lines = mem_realloc(db->lines,
					db->line_alloc * sizeof(*db->lines));
	}
	db->lines[db->line_count].comment = comment;
	db->lines[db->line_count].user = user;
	return db->line_count++;
}

/*
 * Hash table
 */

/* userdb_hash_address - FNV-1a; the file is trusted, so no need for a
   keyed hash against deliberate collisions */
static uint64_t userdb_hash_address(const char *address)
{
	uint64_t hash = 0xcbf29ce484222325ULL;

	for (const unsigned char *p = (const unsigned char *)address;
	     *p != '\0'; p++)
		hash = (hash ^ *p) * 0x100000001b3ULL;
	return hash;
}

/* userdb_slot_address - the address of the user a full slot refers to */
static const char *userdb_slot_address(const struct userdb *db, size_t slot)
{
	return db->lines[db->slots[slot] - 1].user->address;
}

/* userdb_probe - the slot holding address, or the empty slot where it
   would go (slot_count must be non-zero) */
static size_t userdb_probe(const struct userdb *db, const char *address)
{
	size_t mask = db->slot_count - 1;
	size_t slot = userdb_hash_address(address) & mask;

	while (db->slots[slot] != 0 &&
	       strcmp(userdb_slot_address(db, slot), address) != 0)
		slot = (slot + 1) & mask;
	return slot;
}

/* userdb_table_grow - double the table (at least 64 slots) and rehash */
static void userdb_table_grow(struct userdb *db)
{
	uint32_t *old_slots = db->slots;
	size_t old_count = db->slot_count;

	db->slot_count = old_count == 0 ? 64 : old_count * 2;
	db->slots = mem_calloc(db->slot_count, sizeof(*db->slots));
	for (size_t i = 0; i < old_count; i++) {
		if (old_slots[i] == 0)
			continue;
		db->slots[userdb_probe(db, db->lines[old_slots[i] - 1]
				       .user->address)] = old_slots[i];
	}
	free(old_slots);
}

/* userdb_table_delete - empty a slot, moving later entries of its probe
   run back so that every remaining entry stays reachable from its home
   slot (deletion without tombstones) */
static void userdb_table_delete(struct userdb *db, size_t hole)
{
	size_t mask = db->slot_count - 1, slot = hole, home;

	for (;;) {
		slot = (slot + 1) & mask;
		if (db->slots[slot] == 0)
			break;
		home = userdb_hash_address(userdb_slot_address(db, slot)) & mask;
		/* The entry may move into the hole only if its home is not
		   cyclically between the hole and its current slot. */
		if (((slot - home) & mask) >= ((slot - hole) & mask)) {
			db->slots[hole] = db->slots[slot];
			hole = slot;
		}
	}
	db->slots[hole] = 0;
}

/* userdb_insert - add user (owned by the caller until this succeeds) as a
   new line; returns 0, or the 1-based line number of the existing user
   with the same address (user is then not taken) */
static size_t userdb_insert(struct userdb *db, struct userdb_user *user)
{
	size_t slot;

	if ((db->user_count + 1) * 2 > db->slot_count)
		userdb_table_grow(db);
	slot = userdb_probe(db, user->address);
	if (db->slots[slot] != 0)
		return db->slots[slot];
	db->slots[slot] = (uint32_t)(userdb_append_line(db, NULL, user) + 1);
	db->user_count++;
	return 0;
}

/* userdb_find_slot - the table slot of address (any letter case); false
   if there is no such user */
static bool userdb_find_slot(const struct userdb *db, const char *address,
			     size_t *slot_r)
{
	char lower[USERDB_ADDRESS_MAX + 1];
	size_t len = strnlen(address, sizeof(lower));

	if (len == sizeof(lower) || db->slot_count == 0)
		return false;
	memcpy(lower, address, len + 1);
	str_lcase(lower);
	*slot_r = userdb_probe(db, lower);
	return db->slots[*slot_r] != 0;
}

/*
 * Loading
 */

/* userdb_read_fd - read fd to the end into buf (bounded by its limit) */
static int userdb_read_fd(int fd, const char *path, struct buffer *buf,
			  char **error_r)
{
	unsigned char *dest;
	size_t room;
	ssize_t ret;

	for (;;) {
		if ((room = buffer_room(buf)) == 0) {
			*error_r = mem_printf("%s: file larger than %lu bytes",
					      path, USERDB_FILE_MAX);
			return -1;
		}
		dest = buffer_reserve(buf, room < USERDB_READ_CHUNK ? room :
				      USERDB_READ_CHUNK);
		ret = read(fd, dest, room < USERDB_READ_CHUNK ? room :
			   USERDB_READ_CHUNK);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			*error_r = mem_printf("%s: read failed: %m", path);
			return -1;
		}
		if (ret == 0)
			return 0;
		buffer_commit(buf, (size_t)ret);
	}
}

/* userdb_read_file - the whole file into buf; a missing file is an
   empty one when missing_ok */
static int userdb_read_file(const char *path, bool missing_ok,
			    struct buffer *buf, char **error_r)
{
	struct stat st;
	int fd, ret;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		if (errno == ENOENT && missing_ok)
			return 0;
		*error_r = mem_printf("%s: cannot open: %m", path);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = mem_printf("%s: fstat failed: %m", path);
		ret = -1;
	} else if (!S_ISREG(st.st_mode)) {
		*error_r = mem_printf("%s: not a regular file", path);
		ret = -1;
	} else {
		ret = userdb_read_fd(fd, path, buf, error_r);
	}
	(void)close(fd);
	return ret;
}

/* userdb_parse_entry - parse a user line (modified in place) and add the
   user; on failure *reason_r is allocated */
static int userdb_parse_entry(struct userdb *db, char *line, char **reason_r)
{
	struct userdb_user *user;
	char *hash, *extra;
	const char *error;
	size_t first;

	if ((hash = strchr(line, ':')) == NULL) {
		*reason_r = mem_strdup("missing ':' and password hash after the address");
		return -1;
	}
	*hash++ = '\0';
	if (userdb_check_address(line, &error) < 0) {
		*reason_r = mem_printf("invalid address: %s", error);
		return -1;
	}
	str_lcase(line);
	if ((extra = strchr(hash, ':')) != NULL) {
		*extra++ = '\0';
		extra += strspn(extra, " \t");
		if (*extra == '\0')
			extra = NULL;
	}
	if (userdb_check_hash(hash, &error) < 0 ||
	    (extra != NULL && userdb_check_extra(extra, &error) < 0)) {
		*reason_r = mem_printf("user %s: %s", line, error);
		return -1;
	}
	user = userdb_user_new(line, hash, extra);
	if ((first = userdb_insert(db, user)) != 0) {
		*reason_r = mem_printf("duplicate user %s (first on line %zu)",
				       line, first);
		free(user);
		return -1;
	}
	return 0;
}

/* userdb_parse_line - one line of len bytes, NUL-terminated in place */
static int userdb_parse_line(struct userdb *db, char *line, size_t len,
			     char **reason_r)
{
	if (len > USERDB_LINE_MAX) {
		*reason_r = mem_printf("line longer than %d bytes",
				       USERDB_LINE_MAX);
		return -1;
	}
	if (strlen(line) != len) {
		*reason_r = mem_strdup("NUL byte in line");
		return -1;
	}
	if (line[strspn(line, " \t\r")] == '\0' ||
	    line[strspn(line, " \t")] == '#') {
		userdb_append_line(db, mem_strndup(line, len), NULL);
		return 0;
	}
	/* Entry lines: ignore trailing blanks and a CR from a CRLF file. */
	while (len > 0 && strchr(" \t\r", line[len - 1]) != NULL)
		line[--len] = '\0';
	return userdb_parse_entry(db, line, reason_r);
}

/* userdb_parse - split text (len bytes, NUL-terminated) into lines */
static int userdb_parse(struct userdb *db, char *text, size_t len,
			char **error_r)
{
	char *line = text, *end = text + len, *newline;
	size_t lineno = 0, line_len;
	char *reason;

	while (line < end) {
		lineno++;
		newline = memchr(line, '\n', (size_t)(end - line));
		line_len = (size_t)((newline == NULL ? end : newline) - line);
		line[line_len] = '\0';
		if (userdb_parse_line(db, line, line_len, &reason) < 0) {
			*error_r = mem_printf("%s:%zu: %s", db->path, lineno,
					      reason);
			free(reason);
			return -1;
		}
		line += line_len + 1;
	}
	return 0;
}

int userdb_load(const char *path, enum userdb_load_flags flags,
		struct userdb **db_r, char **error_r)
{
	struct buffer buf;
	struct userdb *db;
	char *text;
	size_t len;
	int ret;

	/* One byte over the maximum, so that a file of exactly
	   USERDB_FILE_MAX bytes can still read its EOF. */
	buffer_init(&buf, USERDB_FILE_MAX + 1);
	if (userdb_read_file(path, (flags & USERDB_LOAD_MISSING_OK) != 0,
			     &buf, error_r) < 0) {
		buffer_clear(&buf);
		return -1;
	}
	text = buffer_export(&buf, &len);
	db = mem_zalloc(sizeof(*db));
	db->path = mem_strdup(path);
	ret = userdb_parse(db, text, len, error_r);
	free(text);
	if (ret < 0) {
		userdb_free(&db);
		return USERDB_MALFORMED;
	}
	*db_r = db;
	return 0;
}

void userdb_free(struct userdb **dbp)
{
	struct userdb *db = *dbp;

	if (db == NULL)
		return;
	for (size_t i = 0; i < db->line_count; i++) {
		free(db->lines[i].comment);
		free(db->lines[i].user);
	}
	free(db->lines);
	free(db->slots);
	free(db->path);
	free(db);
	*dbp = NULL;
}

/*
 * Queries and changes
 */

const char *userdb_path(const struct userdb *db)
{
	return db->path;
}

size_t userdb_count(const struct userdb *db)
{
	return db->user_count;
}

const struct userdb_user *userdb_lookup(const struct userdb *db,
					const char *address)
{
	size_t slot;

	if (!userdb_find_slot(db, address, &slot))
		return NULL;
	return db->lines[db->slots[slot] - 1].user;
}

/* userdb_user_cmp - qsort order of userdb_list(): by address */
static int userdb_user_cmp(const void *a, const void *b)
{
	const struct userdb_user *const *ua = a, *const *ub = b;

	return strcmp((*ua)->address, (*ub)->address);
}

const struct userdb_user **userdb_list(const struct userdb *db,
				       size_t *count_r)
{
	const struct userdb_user **users;
	size_t count = 0;

	users = mem_calloc(db->user_count + 1, sizeof(*users));
	for (size_t i = 0; i < db->line_count; i++) {
		if (db->lines[i].user != NULL)
			users[count++] = db->lines[i].user;
	}
	qsort(users, count, sizeof(*users), userdb_user_cmp);
	*count_r = count;
	return users;
}

int userdb_add(struct userdb *db, const char *address, const char *hash,
	       const char *extra, const char **error_r)
{
	struct userdb_user *user;
	char *normalized;

	if (userdb_check_hash(hash, error_r) < 0 ||
	    (extra != NULL && userdb_check_extra(extra, error_r) < 0) ||
	    userdb_address_normalize(address, &normalized, error_r) < 0)
		return -1;
	user = userdb_user_new(normalized, hash, extra);
	free(normalized);
	if (userdb_insert(db, user) != 0) {
		free(user);
		return 0;
	}
	return 1;
}

int userdb_set_hash(struct userdb *db, const char *address, const char *hash,
		    const char **error_r)
{
	struct userdb_line *line;
	struct userdb_user *old;
	size_t slot;

	if (!userdb_find_slot(db, address, &slot))
		return 0;
	if (userdb_check_hash(hash, error_r) < 0)
		return -1;
	line = &db->lines[db->slots[slot] - 1];
	old = line->user;
	line->user = userdb_user_new(old->address, hash, old->extra);
	free(old);
	return 1;
}

int userdb_remove(struct userdb *db, const char *address)
{
	struct userdb_line *line;
	size_t slot;

	if (!userdb_find_slot(db, address, &slot))
		return 0;
	line = &db->lines[db->slots[slot] - 1];
	userdb_table_delete(db, slot);
	free(line->user);
	line->user = NULL;
	db->user_count--;
	return 1;
}

/*
 * Saving
 */

/* userdb_format - the file content */
static void userdb_format(const struct userdb *db, struct buffer *out)
{
	const struct userdb_user *user;

	for (size_t i = 0; i < db->line_count; i++) {
		if (db->lines[i].comment != NULL) {
			buffer_printf(out, "%s\n", db->lines[i].comment);
			continue;
		}
		if ((user = db->lines[i].user) == NULL)
			continue;
		buffer_printf(out, "%s:%s%s%s\n", user->address, user->hash,
			      user->extra == NULL ? "" : ":",
			      user->extra == NULL ? "" : user->extra);
	}
}

/* userdb_user_group - primary group of the user called name, or the
   current group when there is no such user */
static gid_t userdb_user_group(const char *name)
{
	struct passwd pw, *result = NULL;
	char buf[16384];

	if (name == NULL || name[0] == '\0' ||
	    getpwnam_r(name, &pw, buf, sizeof(buf), &result) != 0 ||
	    result == NULL)
		return getegid();
	return pw.pw_gid;
}

/* userdb_target_owner - the mode, owner and group the file must keep */
static int userdb_target_owner(const char *path, const char *group_user,
			       struct userdb_file_owner *owner_r,
			       char **error_r)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno != ENOENT) {
			*error_r = mem_printf("%s: cannot stat: %m", path);
			return -1;
		}
		owner_r->mode = USERDB_NEW_FILE_MODE;
		owner_r->uid = geteuid();
		owner_r->gid = userdb_user_group(group_user);
		owner_r->is_new = true;
		return 0;
	}
	if (S_ISLNK(st.st_mode) || !S_ISREG(st.st_mode)) {
		*error_r = mem_printf("%s: %s; users_file must name the file "
				      "itself", path, S_ISLNK(st.st_mode) ?
				      "is a symbolic link" :
				      "not a regular file");
		return -1;
	}
	if ((st.st_mode & S_IROTH) != 0)
		log_warn("%s is readable by every local user; consider "
			 "chmod o-rwx", path);
	owner_r->mode = st.st_mode & 07777;
	owner_r->uid = st.st_uid;
	owner_r->gid = st.st_gid;
	owner_r->is_new = false;
	return 0;
}

/* userdb_set_owner - give the temporary file its final owner and mode
   (owner first: chown may clear set-id bits that chmod then restores) */
static int userdb_set_owner(int fd, const char *path,
			    const struct userdb_file_owner *owner,
			    char **error_r)
{
	struct stat st;

	if (fstat(fd, &st) < 0) {
		*error_r = mem_printf("%s: fstat of new file failed: %m", path);
		return -1;
	}
	if ((st.st_uid != owner->uid || st.st_gid != owner->gid) &&
	    fchown(fd, owner->uid, owner->gid) < 0) {
		if (!owner->is_new) {
			*error_r = mem_printf("%s: cannot keep owner %lu and "
				"group %lu: %m (run as root or as the file's "
				"owner)", path, (unsigned long)owner->uid,
				(unsigned long)owner->gid);
			return -1;
		}
		log_warn("%s: cannot give the new file to group %lu: %m; the "
			 "daemon may be unable to read it", path,
			 (unsigned long)owner->gid);
	}
	if (fchmod(fd, owner->mode) < 0) {
		*error_r = mem_printf("%s: fchmod failed: %m", path);
		return -1;
	}
	return 0;
}

/* userdb_write_all - write everything, retrying short writes */
static int userdb_write_all(int fd, const unsigned char *data, size_t len)
{
	ssize_t ret;

	while (len > 0) {
		ret = write(fd, data, len);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			if (ret == 0)
				errno = ENOSPC;
			return -1;
		}
		data += ret;
		len -= (size_t)ret;
	}
	return 0;
}

/* userdb_write_tmp - create tmp_path with content, owner and mode, and
   fsync it */
static int userdb_write_tmp(const char *tmp_path, const char *path,
			    const struct buffer *content,
			    const struct userdb_file_owner *owner,
			    char **error_r)
{
	int fd;

	/* A leftover from a writer that died with our pid; the caller holds
	   the lock, so nobody else is using this name. */
	(void)unlink(tmp_path);
	fd = open(tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
		  O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0) {
		*error_r = mem_printf("%s: cannot create: %m", tmp_path);
		return -1;
	}
	if (userdb_set_owner(fd, path, owner, error_r) < 0) {
		(void)close(fd);
		return -1;
	}
	if (userdb_write_all(fd, content->data, content->used) < 0 ||
	    fsync(fd) < 0) {
		*error_r = mem_printf("%s: write failed: %m", tmp_path);
		(void)close(fd);
		return -1;
	}
	if (close(fd) < 0) {
		*error_r = mem_printf("%s: close failed: %m", tmp_path);
		return -1;
	}
	return 0;
}

/* userdb_fsync_dir - make a rename in path's directory durable */
static int userdb_fsync_dir(const char *path, char **error_r)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, ret = 0;

	dir = slash == NULL ? mem_strdup(".") : slash == path ?
		mem_strdup("/") : mem_strndup(path, (size_t)(slash - path));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		*error_r = mem_printf("%s: cannot fsync directory: %m", dir);
		ret = -1;
	}
	if (fd >= 0)
		(void)close(fd);
	free(dir);
	return ret;
}

int userdb_save(struct userdb *db, const char *group_user, char **error_r)
{
	struct userdb_file_owner owner;
	struct buffer content;
	char *tmp_path;
	int ret = -1;

	if (userdb_target_owner(db->path, group_user, &owner, error_r) < 0)
		return -1;
	buffer_init(&content, 0);
	userdb_format(db, &content);
	tmp_path = mem_printf("%s.tmp.%ld", db->path, (long)getpid());
	if (userdb_write_tmp(tmp_path, db->path, &content, &owner,
			     error_r) < 0) {
		(void)unlink(tmp_path);
	} else if (rename(tmp_path, db->path) < 0) {
		*error_r = mem_printf("%s: cannot rename %s over it: %m",
				      db->path, tmp_path);
		(void)unlink(tmp_path);
	} else {
		ret = userdb_fsync_dir(db->path, error_r);
	}
	buffer_clear(&content);
	free(tmp_path);
	return ret;
}

/*
 * Writer lock
 */

int userdb_lock(const char *path, struct userdb_lock **lock_r,
		char **error_r)
{
	/* l_pid must be 0 for OFD locks; l_len 0 covers the whole file. */
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char *lock_path = mem_printf("%s.lock", path);
	int fd;

	fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
		  O_NOCTTY, 0600);
	if (fd < 0) {
		*error_r = mem_printf("%s: cannot open lock file: %m",
				      lock_path);
		free(lock_path);
		return -1;
	}
	while (fcntl(fd, F_OFD_SETLKW, &fl) < 0) {
		if (errno == EINTR)
			continue;
		*error_r = mem_printf("%s: cannot lock: %m", lock_path);
		(void)close(fd);
		free(lock_path);
		return -1;
	}
	free(lock_path);
	*lock_r = mem_zalloc(sizeof(**lock_r));
	(*lock_r)->fd = fd;
	return 0;
}

void userdb_unlock(struct userdb_lock **lockp)
{
	struct userdb_lock *lock = *lockp;

	if (lock == NULL)
		return;
	/* Closing the only descriptor of the open file description releases
	   the OFD lock. The lock file stays: removing it would let a waiter
	   lock a name that a newcomer then recreates. */
	(void)close(lock->fd);
	free(lock);
	*lockp = NULL;
}
