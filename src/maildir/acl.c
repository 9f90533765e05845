/*
 * acl.c - RFC 4314 rights: parsing, formatting, effective rights, and the
 * per-mailbox ACL file behind store_acl_get/set/rights.
 *
 * Storage. Each mailbox directory may hold STORE_ACL_FILE with one
 * "identifier<TAB>rights" line per entry. No file means the default ACL:
 * the owner has every right and nobody else has any. The owner's rights
 * are never stored - RFC 4314 lets a server keep the owner's rights fixed,
 * and doing so means a careless SETACL cannot lock the owner out of their
 * own mailbox; store_acl_get() shows the owner's entry first, synthesized.
 *
 * Concurrency. A change is a read-modify-write of the file, so it runs
 * under the user lock held exclusively (as create/delete/rename do, so a
 * mailbox cannot vanish between our existence check and our write).
 * Readers take no lock: store_file_replace() swaps in a complete new file
 * with rename(), so a reader on any node sees either the old or the new
 * ACL, never a mix. Checking rights is frequent (every SELECT), so not
 * paying a cluster lock round trip for it matters.
 *
 * A damaged file (bad lines) is not fatal: bad lines are skipped with a
 * warning and disappear at the next change. Skipping can only remove
 * rights that a line would have granted - or the rights a negative line
 * would have taken away, which is why the warning is logged at all.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "acl.h"
#include "name.h"
#include "store-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ---- rights ------------------------------------------------------------ */

static int acl_letter_rights(char letter, unsigned int *rights_r)
{
	const char *pos;

	switch (letter) {
	case 'c':
		*rights_r = ACL_RIGHTS_VIRTUAL_CREATE;
		return 0;
	case 'd':
		*rights_r = ACL_RIGHTS_VIRTUAL_DELETE;
		return 0;
	case '\0':
		return -1;
	}
	if ((pos = strchr(ACL_RIGHTS_LETTERS, letter)) == NULL)
		return -1;
	*rights_r = 1u << (pos - ACL_RIGHTS_LETTERS);
	return 0;
}

int acl_rights_parse(const char *str, unsigned int *rights_r,
		     const char **error_r)
{
	unsigned int rights = 0, bit;

	for (const char *p = str; *p != '\0'; p++) {
		if (acl_letter_rights(*p, &bit) < 0) {
			*error_r = "Unknown right in rights list";
			return -1;
		}
		rights |= bit;
	}
	*rights_r = rights;
	return 0;
}

void acl_rights_format(unsigned int rights, unsigned int flags,
		       char str_r[ACL_RIGHTS_STRING_SIZE])
{
	size_t len = 0;

	for (size_t i = 0; ACL_RIGHTS_LETTERS[i] != '\0'; i++) {
		if ((rights & (1u << i)) != 0)
			str_r[len++] = ACL_RIGHTS_LETTERS[i];
	}
	if ((flags & ACL_FORMAT_VIRTUAL) != 0) {
		if ((rights & ACL_RIGHTS_VIRTUAL_CREATE) != 0)
			str_r[len++] = 'c';
		if ((rights & ACL_RIGHTS_VIRTUAL_DELETE) != 0)
			str_r[len++] = 'd';
	}
	str_r[len] = '\0';
}

int acl_rights_modify(unsigned int current, const char *spec,
		      unsigned int *rights_r, const char **error_r)
{
	unsigned int rights;

	if (spec[0] == '+' || spec[0] == '-') {
		if (acl_rights_parse(spec + 1, &rights, error_r) < 0)
			return -1;
		*rights_r = spec[0] == '+' ? current | rights :
			current & ~rights;
		return 0;
	}
	return acl_rights_parse(spec, rights_r, error_r);
}

/* ---- identifiers ------------------------------------------------------- */

int acl_identifier_normalize(const char *identifier, char **normalized_r,
			     const char **error_r)
{
	const char *name = identifier;
	size_t len = strlen(identifier);

	if (*name == '-')
		name++;
	if (*name == '\0') {
		*error_r = "Empty identifier";
		return -1;
	}
	if (len > ACL_IDENTIFIER_MAX) {
		*error_r = "Identifier is too long";
		return -1;
	}
	for (const char *p = identifier; *p != '\0'; p++) {
		unsigned char c = *p;

		if (c <= 0x20 || c >= 0x7f) {
			*error_r = "Invalid character in identifier";
			return -1;
		}
	}
	*normalized_r = str_lcase(mem_strdup(identifier));
	return 0;
}

bool acl_identifier_is_negative(const char *identifier)
{
	return identifier[0] == '-';
}

/* acl_identifier_applies - does the (positive part of an) entry's
   identifier cover this user? */
static bool acl_identifier_applies(const char *entry, const char *identifier)
{
	if (strcmp(entry, "anyone") == 0)
		return true;
	if (identifier == NULL)
		return false;
	return strcmp(entry, "authenticated") == 0 ||
		strcasecmp(entry, identifier) == 0;
}

unsigned int acl_rights_effective(const struct acl_rule *rules,
				  size_t count, const char *owner,
				  const char *identifier)
{
	unsigned int granted = 0, denied = 0;

	if (identifier != NULL && strcmp(identifier, "anyone") == 0)
		identifier = NULL;
	if (identifier != NULL && owner != NULL &&
	    strcasecmp(identifier, owner) == 0)
		return ACL_RIGHTS_ALL;
	/* RFC 4314 2: negative rights win regardless of the order of the
	   entries, so collect both sides first. */
	for (size_t i = 0; i < count; i++) {
		const char *entry = rules[i].identifier;

		if (acl_identifier_is_negative(entry)) {
			if (acl_identifier_applies(entry + 1, identifier))
				denied |= rules[i].rights;
		} else if (acl_identifier_applies(entry, identifier)) {
			granted |= rules[i].rights;
		}
	}
	return granted & ~denied;
}

/* ---- rule arrays and the file format ------------------------------------ */

static ssize_t acl_rules_find(const struct acl_rule *rules, size_t count,
			      const char *identifier)
{
	for (size_t i = 0; i < count; i++) {
		if (strcmp(rules[i].identifier, identifier) == 0)
			return (ssize_t)i;
	}
	return -1;
}

unsigned int acl_rules_lookup(const struct acl_rule *rules, size_t count,
			      const char *identifier)
{
	ssize_t i = acl_rules_find(rules, count, identifier);

	return i < 0 ? 0 : rules[i].rights;
}

void acl_rules_set(struct acl_rule **rules, size_t *count,
		   const char *identifier, unsigned int rights)
{
	ssize_t i = acl_rules_find(*rules, *count, identifier);

	if (i >= 0 && rights != 0) {
		(*rules)[i].rights = rights;
	} else if (i >= 0) {
		free((*rules)[i].identifier);
		memmove(*rules + i, *rules + i + 1,
			(*count - (size_t)i - 1) * sizeof(**rules));
		(*count)--;
	} else if (rights != 0) {
		*rules = mem_realloc(*rules, (*count + 1) * sizeof(**rules));
		(*rules)[*count].identifier = mem_strdup(identifier);
		(*rules)[*count].rights = rights;
		(*count)++;
	}
}

/* acl_line_parse - one "identifier<TAB>rights" line (without newline) */
static int acl_line_parse(const char *line, size_t len, char **identifier_r,
			  unsigned int *rights_r)
{
	const char *tab = memchr(line, '\t', len), *error;
	char *identifier, *rights_str;
	int ret;

	/* a NUL would silently shorten the strings below */
	if (tab == NULL || memchr(line, '\0', len) != NULL)
		return -1;
	identifier = mem_strndup(line, tab - line);
	rights_str = mem_strndup(tab + 1, len - (tab + 1 - line));
	ret = acl_identifier_normalize(identifier, identifier_r, &error);
	/* We write only canonical letters, but accept "c" and "d" from a
	   hand-edited file as on the wire. */
	if (ret == 0 && acl_rights_parse(rights_str, rights_r, &error) < 0) {
		free(*identifier_r);
		ret = -1;
	}
	free(identifier);
	free(rights_str);
	return ret;
}

void acl_rules_parse(const char *data, size_t size,
		     struct acl_rule **rules_r, size_t *count_r,
		     unsigned int *bad_lines_r)
{
	struct acl_rule *rules = mem_zalloc(sizeof(*rules));
	size_t count = 0;
	unsigned int bad = 0;
	const char *p = data, *end = data + size;

	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t len = (nl == NULL ? end : nl) - p;
		char *identifier;
		unsigned int rights;

		if (len == 0) {
			/* empty lines are harmless */
		} else if (acl_line_parse(p, len, &identifier, &rights) < 0) {
			bad++;
		} else {
			acl_rules_set(&rules, &count, identifier, rights);
			free(identifier);
		}
		p += len + 1;
	}
	*rules_r = rules;
	*count_r = count;
	*bad_lines_r = bad;
}

char *acl_rules_serialize(const struct acl_rule *rules, size_t count,
			  size_t *size_r)
{
	struct buffer buf;
	char rights[ACL_RIGHTS_STRING_SIZE];

	buffer_init(&buf, 0);
	for (size_t i = 0; i < count; i++) {
		acl_rights_format(rules[i].rights, 0, rights);
		buffer_printf(&buf, "%s\t%s\n", rules[i].identifier, rights);
	}
	return buffer_export(&buf, size_r);
}

void acl_rules_free(struct acl_rule *rules, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(rules[i].identifier);
	free(rules);
}

/* ---- the store API ----------------------------------------------------- */

/* acl_file_path - the ACL file of an existing mailbox, relative to the
   user root. NOTFOUND (error set) when the mailbox does not exist. */
static int acl_file_path(struct store_user *user, const char *mailbox,
			 char **path_r)
{
	char *canonical, *dir;
	int ret;

	if ((ret = store_mailbox_dir(user, mailbox, &canonical, &dir)) < 0)
		return ret;
	ret = store_mailbox_exists(user, canonical);
	if (ret == STORE_OK) {
		*path_r = strcmp(dir, ".") == 0 ?
			mem_strdup(STORE_ACL_FILE) :
			mem_printf("%s/%s", dir, STORE_ACL_FILE);
	}
	free(canonical);
	free(dir);
	return ret;
}

/* acl_file_read - the rules in the file at path; none when it is missing */
static int acl_file_read(struct store_user *user, const char *path,
			 struct acl_rule **rules_r, size_t *count_r)
{
	unsigned int bad_lines;
	char *data;
	size_t size;
	int ret;

	ret = store_file_read(user, path, &data, &size);
	if (ret == STORE_ERR_NOTFOUND) {
		data = mem_strdup("");
		size = 0;
	} else if (ret < 0) {
		return ret;
	}
	acl_rules_parse(data, size, rules_r, count_r, &bad_lines);
	if (bad_lines > 0) {
		log_id_warn(store_user_name(user),
			    "%s: ignored %u invalid line(s)", path, bad_lines);
	}
	free(data);
	return STORE_OK;
}

static int acl_read(struct store_user *user, const char *mailbox,
		    struct acl_rule **rules_r, size_t *count_r)
{
	char *path;
	int ret;

	if ((ret = acl_file_path(user, mailbox, &path)) < 0)
		return ret;
	ret = acl_file_read(user, path, rules_r, count_r);
	free(path);
	return ret;
}

int store_acl_get(struct store_user *user, const char *mailbox,
		  struct store_acl_entry **entries_r, size_t *count_r)
{
	const char *owner = store_user_name(user);
	char rights[ACL_RIGHTS_STRING_SIZE];
	struct store_acl_entry *entries;
	struct acl_rule *rules;
	size_t count, n = 0;
	int ret;

	if ((ret = store_rights_check(user, mailbox, ACL_RIGHT_ADMIN,
				      NULL)) < 0 ||
	    (ret = acl_read(user, mailbox, &rules, &count)) < 0)
		return ret;
	entries = mem_calloc(count + 1, sizeof(*entries));
	acl_rights_format(ACL_RIGHTS_ALL, 0, rights);
	entries[n].identifier = mem_strdup(owner);
	entries[n++].rights = mem_strdup(rights);
	for (size_t i = 0; i < count; i++) {
		/* never stored by us, but a hand-edited file might */
		if (strcmp(rules[i].identifier, owner) == 0)
			continue;
		acl_rights_format(rules[i].rights, 0, rights);
		entries[n].identifier = rules[i].identifier;
		entries[n++].rights = mem_strdup(rights);
		rules[i].identifier = NULL;	/* moved */
	}
	acl_rules_free(rules, count);
	*entries_r = entries;
	*count_r = n;
	return STORE_OK;
}

void store_acl_free(struct store_acl_entry *entries, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		free(entries[i].identifier);
		free(entries[i].rights);
	}
	free(entries);
}

static bool shared_identifier_noted(const char *identifier);
static int shared_note(struct store_user *user, const char *identifier);

/* acl_update - the read-modify-write of store_acl_set(), user lock held */
static int acl_update(struct store_user *user, const char *mailbox,
		      const char *identifier, const char *spec)
{
	struct acl_rule *rules;
	unsigned int old_rights, new_rights;
	const char *error;
	char *path, *data;
	size_t count, size;
	int ret;

	if ((ret = acl_file_path(user, mailbox, &path)) < 0)
		return ret;
	if ((ret = acl_file_read(user, path, &rules, &count)) < 0) {
		free(path);
		return ret;
	}
	old_rights = acl_rules_lookup(rules, count, identifier);
	if (spec == NULL || spec[0] == '\0') {
		new_rights = 0;
	} else if (acl_rights_modify(old_rights, spec, &new_rights,
				     &error) < 0) {
		/* checked by the caller already */
		log_panic("acl: rights '%s' became invalid", spec);
	}
	/* Entries never hold 0 rights, so "no change" is exactly this. */
	if (new_rights != old_rights) {
		acl_rules_set(&rules, &count, identifier, new_rights);
		data = acl_rules_serialize(rules, count, &size);
		ret = store_file_replace(user, path, data, size);
		free(data);
		/* A failed note is logged and does not undo the grant: the
		   mailbox is then only missing from the grantee's LIST. */
		if (ret == STORE_OK && new_rights != 0 &&
		    !acl_identifier_is_negative(identifier) &&
		    shared_identifier_noted(identifier))
			(void)shared_note(user, identifier);
	}
	acl_rules_free(rules, count);
	free(path);
	return ret;
}

int store_acl_set(struct store_user *user, const char *mailbox,
		  const char *identifier, const char *rights)
{
	const char *owner = store_user_name(user), *error;
	unsigned int parsed;
	char *normalized;
	int ret;

	if (acl_identifier_normalize(identifier, &normalized, &error) < 0) {
		return store_set_error(user, STORE_ERR_BADNAME,
				       "Invalid identifier: %s", error);
	}
	if (rights != NULL && rights[0] != '\0' &&
	    acl_rights_modify(0, rights, &parsed, &error) < 0) {
		free(normalized);
		return store_set_error(user, STORE_ERR_BADNAME,
				       "Invalid rights: %s", error);
	}
	if (strcmp(normalized + acl_identifier_is_negative(normalized),
		   owner) == 0) {
		free(normalized);
		return store_set_error(user, STORE_ERR_CANNOT,
				       "The owner's rights cannot be changed");
	}
	if ((ret = store_rights_check(user, mailbox, ACL_RIGHT_ADMIN,
				      NULL)) < 0) {
		free(normalized);
		return ret;
	}
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) == STORE_OK) {
		ret = acl_update(user, mailbox, normalized, rights);
		store_user_unlock(user);
	}
	free(normalized);
	return ret;
}

int store_acl_rights(struct store_user *user, const char *mailbox,
		     const char *identifier, char rights_r[16])
{
	struct acl_rule *rules;
	size_t count;
	int ret;

	/* Anybody's rights but one's own (store_acl_myrights()) are the
	   administrator's business (RFC 4314 LISTRIGHTS needs "a"). */
	if (user->requester != NULL &&
	    strcasecmp(identifier, user->requester) != 0 &&
	    (ret = store_rights_check(user, mailbox, ACL_RIGHT_ADMIN,
				      NULL)) < 0)
		return ret;
	if ((ret = acl_read(user, mailbox, &rules, &count)) < 0)
		return ret;
	acl_rights_format(acl_rights_effective(rules, count,
					       store_user_name(user),
					       identifier), 0, rights_r);
	acl_rules_free(rules, count);
	return STORE_OK;
}

/* ---- rights of the requester (shared mailboxes) -------------------------
 * A store_user opened for another user's session (store_user_open_shared()
 * or store_user_set_requester()) carries the requester's address; every
 * operation of store.h that reads or changes a mailbox then asks for the
 * rights it needs here. The ACL file is read each time (no lock, see the
 * top): a revoked right takes effect for the next operation on any node.
 */

int store_rights_get(struct store_user *user, const char *mailbox,
		     unsigned int *rights_r)
{
	struct acl_rule *rules;
	size_t count;
	int ret;

	if (user->requester == NULL) {
		*rights_r = ACL_RIGHTS_ALL;
		return STORE_OK;
	}
	if ((ret = acl_read(user, mailbox, &rules, &count)) < 0)
		return ret;
	*rights_r = acl_rights_effective(rules, count, store_user_name(user),
					 user->requester);
	acl_rules_free(rules, count);
	return STORE_OK;
}

int store_rights_refuse(struct store_user *user, const char *mailbox,
			unsigned int rights)
{
	/* RFC 4314 4: without "l" the mailbox's existence is not revealed;
	   the answer is the one a missing mailbox gets. */
	if ((rights & (ACL_RIGHT_LOOKUP | ACL_RIGHT_READ)) == 0) {
		return store_set_error(user, STORE_ERR_NOTFOUND,
				       "Mailbox doesn't exist: %s", mailbox);
	}
	return store_set_error(user, STORE_ERR_NOPERM,
			       "Permission denied on %s", mailbox);
}

int store_rights_check(struct store_user *user, const char *mailbox,
		       unsigned int need, unsigned int *rights_r)
{
	unsigned int rights;
	int ret;

	if ((ret = store_rights_get(user, mailbox, &rights)) < 0)
		return ret;
	if (rights_r != NULL)
		*rights_r = rights;
	if ((rights & need) != need)
		return store_rights_refuse(user, mailbox, rights);
	return STORE_OK;
}

int store_mailbox_myrights(struct store_user *user, const char *mailbox,
			   unsigned int *rights_r)
{
	int ret;

	if ((ret = store_rights_get(user, mailbox, rights_r)) < 0)
		return ret;
	if (*rights_r == 0)
		return store_rights_refuse(user, mailbox, 0);
	return STORE_OK;
}

int store_acl_myrights(struct store_user *user, const char *mailbox,
		       char rights_r[16])
{
	unsigned int rights;
	int ret;

	if ((ret = store_mailbox_myrights(user, mailbox, &rights)) < 0)
		return ret;
	acl_rights_format(rights, 0, rights_r);
	return STORE_OK;
}

/* ---- the shared registry -------------------------------------------------
 * Which users have granted a given identifier any right? Scanning every
 * user's ACL files at each LIST would cost O(users x mailboxes) reads and
 * could not be bounded, so store_acl_set() notes each grant in a small
 * spool-wide registry: SPOOL/.shared/<identifier> (identifier escaped,
 * see shared_file_name()) holds one owner address per line. It is only
 * a hint: the rights themselves are always read from the owner's ACL
 * files, so a stale line (rights revoked, user removed) costs one
 * store_user_open() at LIST and shows nothing. A grant appends a line
 * (O_APPEND, one short write: atomic on local filesystems, GFS2 and
 * OCFS2) unless the owner is listed already; two nodes racing may write
 * the same owner twice, which readers merge. Lines are never removed
 * (revocations are rare and harmless here); the file is bounded by the
 * number of distinct owners that ever granted this identifier a right.
 */
#define SHARED_DIR ".shared"
#define SHARED_FILE_MAX (1024 * 1024)
#define SHARED_OWNERS_MAX 10000

/* shared_file_name - ".shared/<identifier>" with every byte outside
   [a-z0-9@._+-] (and a leading '.') written as %XX */
static char *shared_file_name(const char *identifier)
{
	struct buffer buf;
	char *path;

	buffer_init(&buf, 0);
	buffer_append_str(&buf, SHARED_DIR "/");
	for (const char *p = identifier; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '@' || c == '_' || c == '+' || c == '-' ||
		    (c == '.' && p != identifier))
			buffer_append_byte(&buf, c);
		else
			buffer_printf(&buf, "%%%02X", c);
	}
	path = mem_strdup(buffer_cstr(&buf));
	buffer_clear(&buf);
	return path;
}

/* shared_read - the registry file of identifier (NUL-terminated); an
   empty string when it is missing */
static int shared_read(struct store_user *user, const char *identifier,
		       char **data_r)
{
	struct store *store = user->store;
	char *path = shared_file_name(identifier);
	struct stat st;
	ssize_t n;
	int fd, ret = STORE_OK;

	*data_r = NULL;
	fd = sio_openat(user->sio, store->spool_fd, path, O_RDONLY, 0);
	if (fd == -ENOENT) {
		*data_r = mem_strdup("");
	} else if (fd < 0) {
		ret = store_io_error(user, "open", path, fd);
	} else if ((ret = sio_fstat(user->sio, fd, &st)) < 0) {
		ret = store_io_error(user, "fstat", path, ret);
	} else {
		size_t size = st.st_size > SHARED_FILE_MAX ? SHARED_FILE_MAX :
			(size_t)st.st_size;

		*data_r = mem_zalloc(size + 1);
		n = sio_pread(user->sio, fd, *data_r, size, 0);
		if (n < 0) {
			ret = store_io_error(user, "read", path, (int)n);
			MEM_FREE(data_r);
		} else {
			(*data_r)[n] = '\0';
		}
	}
	if (fd >= 0)
		(void)sio_close(user->sio, fd);
	free(path);
	return ret;
}

/* shared_has_line - is line (without the newline) in data? */
static bool shared_has_line(const char *data, const char *line)
{
	size_t len = strlen(line);

	for (const char *p = data; *p != '\0'; ) {
		const char *end = strchr(p, '\n');
		size_t n = end == NULL ? strlen(p) : (size_t)(end - p);

		if (n == len && memcmp(p, line, len) == 0)
			return true;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return false;
}

/* shared_note - remember that user granted identifier some right */
static int shared_note(struct store_user *user, const char *identifier)
{
	struct store *store = user->store;
	char *data, *path, *line;
	ssize_t n;
	int fd, ret;

	if ((ret = shared_read(user, identifier, &data)) < 0)
		return ret;
	if (shared_has_line(data, user->name)) {
		free(data);
		return STORE_OK;
	}
	free(data);
	ret = sio_mkdirat(user->sio, store->spool_fd, SHARED_DIR, 0700);
	if (ret < 0 && ret != -EEXIST)
		return store_io_error(user, "mkdir", SHARED_DIR, ret);
	path = shared_file_name(identifier);
	fd = sio_openat(user->sio, store->spool_fd, path,
			O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd < 0) {
		ret = store_io_error(user, "open", path, fd);
		free(path);
		return ret;
	}
	line = mem_printf("%s\n", user->name);
	n = sio_pwrite(user->sio, fd, line, strlen(line), 0);
	ret = n == (ssize_t)strlen(line) ? STORE_OK :
		store_io_error(user, "write", path, n < 0 ? (int)n : -EIO);
	if (ret == STORE_OK && (n = sio_fsync(user->sio, fd, true)) < 0)
		ret = store_io_error(user, "fsync", path, (int)n);
	(void)sio_close(user->sio, fd);
	free(line);
	free(path);
	return ret;
}

/* shared_identifier_noted - is this an identifier the registry tracks? */
static bool shared_identifier_noted(const char *identifier)
{
	char *path, *canonical;
	const char *error;

	if (strcmp(identifier, "anyone") == 0 ||
	    strcmp(identifier, "authenticated") == 0)
		return true;
	if (name_user_path(identifier, &path, &canonical, &error) < 0)
		return false;
	free(path);
	free(canonical);
	return true;
}

/* shared_owners_add - the valid owner lines of data (other than self)
   into the list, up to SHARED_OWNERS_MAX; duplicates are removed later */
static void shared_owners_add(const char *data, const char *self,
			      char ***owners, size_t *count)
{
	const char *p = data;

	while (*p != '\0' && *count < SHARED_OWNERS_MAX) {
		const char *end = strchr(p, '\n');
		size_t n = end == NULL ? strlen(p) : (size_t)(end - p);
		char *line = mem_strndup(p, n), *path, *canonical;
		const char *error;

		if (name_user_path(line, &path, &canonical, &error) == 0) {
			free(path);
			if (strcmp(canonical, self) == 0) {
				free(canonical);
			} else {
				*owners = mem_realloc(*owners, (*count + 1) *
						      sizeof(char *));
				(*owners)[(*count)++] = canonical;
			}
		}
		free(line);
		if (end == NULL)
			break;
		p = end + 1;
	}
}

static int shared_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* shared_owners_unique - sort and drop duplicates */
static void shared_owners_unique(char **owners, size_t *count)
{
	size_t n = 0;

	if (*count == 0)
		return;
	qsort(owners, *count, sizeof(*owners), shared_name_cmp);
	for (size_t i = 0; i < *count; i++) {
		if (n > 0 && strcmp(owners[n - 1], owners[i]) == 0)
			free(owners[i]);
		else
			owners[n++] = owners[i];
	}
	*count = n;
}

int store_shared_owners(struct store_user *user, char ***owners_r,
			size_t *count_r)
{
	const char *ids[] = { user->name, "authenticated", "anyone" };
	char **owners = NULL, *data;
	size_t count = 0;
	int ret;

	for (size_t i = 0; i < N_ELEMENTS(ids); i++) {
		if ((ret = shared_read(user, ids[i], &data)) < 0) {
			store_names_free(owners, count);
			return ret;
		}
		shared_owners_add(data, user->name, &owners, &count);
		free(data);
	}
	shared_owners_unique(owners, &count);
	*owners_r = owners;
	*count_r = count;
	return STORE_OK;
}

void store_shared_owners_free(char **owners, size_t count)
{
	store_names_free(owners, count);
}
