#ifndef CM_NAME_H
#define CM_NAME_H
/*
 * name - mapping user addresses and mailbox names to spool paths.
 *
 * Nothing that reaches the file system comes from a client unescaped:
 * these functions are the only place where a name becomes a path, and
 * every other module goes through them.
 *
 * Users: "Local@Example.COM" -> "example.com/local" (relative to the
 * spool). The address is folded to lower case; the domain must be a
 * plausible DNS name (labels of [a-z0-9-], no empty label, not starting
 * or ending with '-', at most 253 bytes); the local part (1..64 bytes of
 * printable ASCII except '/') has every byte outside [a-z0-9!#$&'*+=?^_`{|}~-]
 * and a leading or doubled '.' escaped as "%XX", so it is never ".",
 * "..", empty, or a hidden name.
 *
 * Mailboxes: UTF-8, '/' as hierarchy separator. "INBOX" (any case) is the
 * user root and maps to "."; everything else maps to a Maildir++ folder
 * directory "." + levels joined by '.', each level escaped: '.', '/', '%',
 * '~', '\\' and bytes below 0x20 or 0x7f cannot appear raw; '.', '%',
 * '~' and '\\' are written "%XX". A name is invalid (NAME_BAD) when it is
 * empty, longer than NAME_MAILBOX_MAX bytes, has an empty level (leading,
 * trailing or doubled '/'), more than NAME_MAX_LEVELS levels, a control
 * character, invalid UTF-8 (overlong forms and surrogates included), or
 * a directory name longer than 255 bytes. "INBOX/x" is a child of INBOX
 * and maps to ".INBOX.x" (case of the INBOX prefix normalized).
 */
#include <stdbool.h>
#include <stddef.h>

#define NAME_MAILBOX_MAX 1000
#define NAME_MAX_LEVELS 32

enum name_result {
	NAME_OK = 0,
	NAME_BAD = -1,
};

/* "user@domain" -> newly allocated "domain/localpart" (escaped), and the
   normalized address (lower case) if canonical_r is not NULL. *error_r is
   a static reason on NAME_BAD. */
int name_user_path(const char *user, char **path_r, char **canonical_r,
		   const char **error_r);

/* Validate and canonicalize a mailbox name (INBOX prefix upper-cased). */
int name_mailbox_canonical(const char *name, char **canonical_r,
			   const char **error_r);
/* Canonical mailbox name -> directory name relative to the user root:
   "." for INBOX, ".Sent", ".Archive.2024". Newly allocated. */
int name_mailbox_to_dir(const char *name, char **dir_r, const char **error_r);
/* Directory name (as found under the user root) -> mailbox name; NAME_BAD
   for anything that is not a folder directory we could have made
   ("cur", "tmp", ".", "..", names without the leading '.', bad escapes). */
int name_dir_to_mailbox(const char *dir, char **name_r);
/* Is child a strict descendant of parent ("a/b/c" of "a/b")? */
bool name_is_child(const char *parent, const char *child);
bool name_is_inbox(const char *name);

/* IMAP modified UTF-7 (RFC 3501 5.1.3) <-> UTF-8, for IMAP4rev1 clients
   that do not ENABLE UTF8=ACCEPT. NAME_BAD on malformed input. */
int name_mutf7_to_utf8(const char *mutf7, char **utf8_r);
int name_utf8_to_mutf7(const char *utf8, char **mutf7_r);

#endif
