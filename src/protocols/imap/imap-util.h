#ifndef CM_IMAP_UTIL_H
#define CM_IMAP_UTIL_H
/*
 * imap-util - small IMAP syntax helpers shared by the command files:
 * sequence sets, flag lists, string quoting, date-times.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "imap-parser.h"

struct buffer;
struct imap_client;
struct mailbox;

/* ---- sequence sets (RFC 9051 "sequence-set", RFC 5182 "$") ----------- */

struct imap_seq_range {
	uint32_t first, last;		/* first <= last; '*' = UINT32_MAX */
};
struct imap_seqset {
	struct imap_seq_range *ranges;	/* owned; sorted, merged */
	size_t count;
	bool saved;			/* it was "$" (SEARCHRES) */
};
/* Parse "1,3:5,7:*" (also "$"). Returns 0, or -1 with a static reason
   (a bad set is a BAD). Zero is never valid. */
int imap_seqset_parse(const char *str, struct imap_seqset *set_r,
		      const char **error_r);
void imap_seqset_free(struct imap_seqset *set);
/* The UIDs of the selected view that the set names, ascending, without
   duplicates (caller frees *uids_r). uid = false: sequence numbers,
   where '*' is the last message and a number past the end is an error
   (returns -1: reply "BAD Invalid message sequence number"; RFC 9051:
   a sequence number beyond EXISTS is invalid). uid = true: UIDs,
   where '*' is the highest UID in use (so "UID FETCH 5:*" with highest
   UID 3 means 3:5) and UIDs not in the view are ignored. "$" resolves
   to client->search_saved (ignoring UIDs no longer in the view).
   Messages flagged MAIL_EXPUNGED stay addressable (they still have
   sequence numbers until EXPUNGE is reported). */
int imap_seqset_to_uids(struct imap_client *client,
			const struct imap_seqset *set, bool uid,
			uint32_t **uids_r, size_t *count_r);
/* Write a sorted UID array as a compact set ("1:3,7") into out. */
void imap_seqset_write_uids(struct buffer *out, const uint32_t *uids,
			    size_t count);
/* Append "a" or "a:b" to a set being written in out (with a ',' when out
   already holds something). */
void imap_seqset_append_range(struct buffer *out, uint32_t a, uint32_t b);
/* Is num in the set (its ranges sorted and merged)? */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t num);
/* Append, as ranges, the UIDs of first..last that the view of box does
   not have (QRESYNC and FETCH VANISHED (EARLIER) report those). */
struct mailbox;
void imap_seqset_append_missing(struct buffer *out, struct mailbox *box,
				uint32_t first, uint32_t last);

/* ---- flags --------------------------------------------------------- */
/* Parse a flag list (or a single flag atom) into MAIL_* bits and keyword
   names (pointers into args; caller frees only the array). \Recent is
   refused (BAD), unknown \System flags are refused, keywords must be
   atoms. Returns 0, or -1 with a static reason. */
int imap_flags_parse(const struct imap_arg *arg, uint32_t *flags_r,
		     const char ***keywords_r, size_t *keyword_count_r,
		     const char **error_r);
/* "\Seen \Flagged kw1" (no parentheses) for a record of the view. */
void imap_flags_write(struct buffer *out, struct mailbox *box,
		      uint32_t flags, uint64_t keywords);
/* The flags of a record as this session may see them: without \Recent
   after ENABLE IMAP4rev2 (RFC 9051 has no such flag). */
uint32_t imap_client_visible_flags(const struct imap_client *client,
				   uint32_t flags);
/* STATUS items (STATUS_* bits) the session may ask for: no RECENT after
   ENABLE IMAP4rev2. */
bool imap_status_items_allowed(const struct imap_client *client,
			       unsigned int items);

/* ---- strings ------------------------------------------------------- */
/* Append str as an IMAP string: quoted when it can be ("..." with \" and
   \\ escaped), a literal {N}\r\n... when it contains CR, LF, NUL or
   8-bit bytes (utf8: 8-bit UTF-8 may stay quoted, RFC 9051/6855). */
void imap_append_string(struct buffer *out, const char *str, size_t len,
			bool utf8);
/* NIL for NULL, else imap_append_string(). */
void imap_append_nstring(struct buffer *out, const char *str, bool utf8);
/* An astring: the atom itself when it is a valid atom, else a string. */
void imap_append_astring(struct buffer *out, const char *str, bool utf8);
/* A mailbox name for LIST/STATUS/...: UTF-8 for UTF8=ACCEPT and rev2
   clients, modified UTF-7 for rev1 (client->enabled decides). */
void imap_append_mailbox(struct buffer *out, const struct imap_client *client,
			 const char *name);
/* A mailbox argument from the client to the store's UTF-8 name (mUTF-7
   decoded unless UTF8=ACCEPT/rev2; "INBOX" any case). Returns an
   allocated name, or NULL with a static reason (reply NO [CANNOT] or
   BAD). */
char *imap_mailbox_from_client(const struct imap_client *client,
			       const char *name, const char **error_r);

/* ---- shared mailboxes (RFC 2342 "other users" namespace) -------------
 * User B's mailbox "Projects/X" is "Other Users/b@example.com/Projects/X"
 * to everybody else, B's INBOX ".../b@example.com/INBOX"; "Other Users"
 * and "Other Users/b@example.com" are containers (\NonExistent in LIST,
 * NO [NONEXISTENT] when named in a command). The store checks the
 * session user's rights (store.h "shared mailboxes"). */
#define IMAP_SHARED_PREFIX "Other Users"
/* A mailbox named by the client, resolved to the spool it lives in. */
struct imap_mailbox_ref {
	/* The session's own user (borrowed) or, when shared, the owner's
	   store_user opened for this session (owned: free the ref, or hand
	   it to a view with mailbox_take_user() and set it to NULL). */
	struct store_user *user;
	char *name;			/* owned; the name in user's spool */
	bool shared;
};
/* name is a store-form name (imap_mailbox_from_client()). Returns
   STORE_OK, or a store error with the text in the session's user (an
   unknown or invalid owner and the containers are NOTFOUND, like a
   missing mailbox). */
int imap_mailbox_ref_get(struct imap_client *client, const char *name,
			 struct imap_mailbox_ref *ref_r);
void imap_mailbox_ref_free(struct imap_mailbox_ref *ref);
/* Is name (store form) under the shared prefix ("Other Users" or below)? */
bool imap_mailbox_is_shared_name(const char *name);
/* The store-form name the client knows a view by (prefixed for another
   user's mailbox). Caller frees. */
char *imap_mailbox_client_name(const struct imap_client *client,
			       const struct mailbox *box);
/* Does name (store form, any INBOX case) name the selected mailbox? */
bool imap_mailbox_is_selected(const struct imap_client *client,
			      const char *name);

/* ---- dates ---------------------------------------------------------- */
/* date-time "17-Jul-1996 02:44:25 -0700" -> seconds since the epoch. */
bool imap_date_time_parse(const char *str, int64_t *time_r);
/* date "1-Feb-1994" (SEARCH) -> midnight of that day, in UTC. */
bool imap_date_parse(const char *str, int64_t *time_r);
/* INTERNALDATE text (quoted) for time t, in the server's local zone. */
void imap_date_time_write(struct buffer *out, int64_t t);

#endif
