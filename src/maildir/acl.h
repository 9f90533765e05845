#ifndef CM_ACL_H
#define CM_ACL_H
/*
 * acl - RFC 4314 access control lists: the pure parts.
 *
 * Rights are handled as a bit mask (ACL_RIGHT_*) everywhere inside; the
 * letter strings exist only at the edges (IMAP commands and responses,
 * the ACL file). The store API in store.h (store_acl_get/set/rights)
 * is built on these functions; the IMAP layer uses them directly to
 * check rights letters before calling the store and to format MYRIGHTS
 * and ACL responses with the virtual "c" and "d" rights.
 *
 * Obsolete rights (RFC 4314 2.1.1): we are in the "former group" of that
 * section - "c" means "kx" and "d" means "et". They are accepted on input
 * and, with ACL_FORMAT_VIRTUAL, shown on output when any member right is
 * present, as the RFC requires for MYRIGHTS and ACL responses. They are
 * never stored.
 *
 * Identifiers: "anyone", "authenticated", or a user address; a leading
 * '-' makes an entry negative (its rights are taken away). Identifiers
 * are compared in lower case (user names are canonical lower case, see
 * name_user_path()). "$group" identifiers are not supported: they are
 * accepted and stored, but match nobody.
 *
 * ACL file (one per mailbox, STORE_ACL_FILE): one "identifier<TAB>rights"
 * line per entry, rights in canonical order, no virtual rights.
 */
#include <stdbool.h>
#include <stddef.h>

/* The rights of RFC 4314 section 2.1, bit i = letter i of
   ACL_RIGHTS_LETTERS. */
#define ACL_RIGHT_LOOKUP	0x001	/* l: visible to LIST */
#define ACL_RIGHT_READ		0x002	/* r: SELECT, FETCH, SEARCH, COPY */
#define ACL_RIGHT_SEEN		0x004	/* s: keep \Seen */
#define ACL_RIGHT_WRITE		0x008	/* w: other flags, keywords */
#define ACL_RIGHT_INSERT	0x010	/* i: APPEND, COPY into */
#define ACL_RIGHT_POST		0x020	/* p: submit to the mailbox */
#define ACL_RIGHT_CREATE	0x040	/* k: CREATE children */
#define ACL_RIGHT_DELETE_MAILBOX 0x080	/* x: DELETE, RENAME away */
#define ACL_RIGHT_DELETE_MESSAGES 0x100	/* t: set/clear \Deleted */
#define ACL_RIGHT_EXPUNGE	0x200	/* e: EXPUNGE */
#define ACL_RIGHT_ADMIN		0x400	/* a: SETACL, GETACL, ... */
#define ACL_RIGHTS_ALL		0x7ff

/* The obsolete virtual rights as unions of real ones. */
#define ACL_RIGHTS_VIRTUAL_CREATE \
	(ACL_RIGHT_CREATE | ACL_RIGHT_DELETE_MAILBOX)
#define ACL_RIGHTS_VIRTUAL_DELETE \
	(ACL_RIGHT_EXPUNGE | ACL_RIGHT_DELETE_MESSAGES)

/* The letters in canonical order: bit i of the mask is letter i. */
#define ACL_RIGHTS_LETTERS "lrswipkxtea"

/* Room for every letter, both virtual rights and the NUL (store.h's
   store_acl_rights() buffer has the same size). */
#define ACL_RIGHTS_STRING_SIZE 16

/* Longest identifier accepted (an address is at most 64+1+253). */
#define ACL_IDENTIFIER_MAX 320

/* Parse a plain rights string (letters only, in any order, duplicates
   allowed; "c" and "d" expand). "" is no rights. -1 with a static
   *error_r for an unknown letter (including RFC 4314's reserved digits,
   which we do not implement). */
int acl_rights_parse(const char *str, unsigned int *rights_r,
		     const char **error_r);

/* Write rights as letters in canonical order into str_r. With
   ACL_FORMAT_VIRTUAL, "c" and "d" are appended when any of their members
   is present (for MYRIGHTS and ACL responses). */
#define ACL_FORMAT_VIRTUAL 0x1
void acl_rights_format(unsigned int rights, unsigned int flags,
		       char str_r[ACL_RIGHTS_STRING_SIZE]);

/* SETACL semantics: "+xyz" adds to current, "-xyz" removes from it,
   anything else replaces it. -1 with *error_r for bad letters. */
int acl_rights_modify(unsigned int current, const char *spec,
		      unsigned int *rights_r, const char **error_r);

/* Check an identifier and return it in stored form (lower case) in a new
   allocation. Only printable ASCII without space is accepted, like user
   names (name_user_path()): so never a control character, TAB or newline
   that could break the file format or a response. Also refused: empty
   (also after '-'), longer than ACL_IDENTIFIER_MAX. */
int acl_identifier_normalize(const char *identifier, char **normalized_r,
			     const char **error_r);
/* Does the identifier start with '-'? */
bool acl_identifier_is_negative(const char *identifier);

/* One ACL entry. */
struct acl_rule {
	char *identifier;	/* owned by the rule array; normalized */
	unsigned int rights;	/* ACL_RIGHT_* */
};

/* Effective rights of identifier (an address, or NULL or "anyone" for
   an anonymous user) given the rules of a mailbox owned by owner
   (RFC 4314 2): the owner has every right; otherwise the union of the
   positive entries that apply ("anyone", "authenticated" unless
   anonymous, the identifier itself) minus the union of the negative
   entries that apply. */
unsigned int acl_rights_effective(const struct acl_rule *rules,
				  size_t count, const char *owner,
				  const char *identifier);

/* Parse ACL file contents. Never fails: lines that are not a valid
   identifier, a TAB and valid rights are skipped and counted in
   *bad_lines_r (the caller logs them); a later line for the same
   identifier replaces an earlier one; entries without rights are
   dropped. *rules_r is always allocated (free with acl_rules_free()). */
void acl_rules_parse(const char *data, size_t size,
		     struct acl_rule **rules_r, size_t *count_r,
		     unsigned int *bad_lines_r);
/* File contents for rules (newly allocated, NUL-terminated). */
char *acl_rules_serialize(const struct acl_rule *rules, size_t count,
			  size_t *size_r);
/* Set identifier's rights (normalized identifier expected): replaces an
   existing entry in place, appends a new one, or removes the entry when
   rights is 0. *rules is reallocated as needed. */
void acl_rules_set(struct acl_rule **rules, size_t *count,
		   const char *identifier, unsigned int rights);
/* Rights of exactly this identifier's entry, 0 if there is none. */
unsigned int acl_rules_lookup(const struct acl_rule *rules, size_t count,
			      const char *identifier);
void acl_rules_free(struct acl_rule *rules, size_t count);

#endif
