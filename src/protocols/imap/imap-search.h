#ifndef CM_IMAP_SEARCH_H
#define CM_IMAP_SEARCH_H
/*
 * imap-search - the SEARCH program (RFC 9051 6.4.4, RFC 5032 OLDER/YOUNGER,
 * RFC 7162 MODSEQ, RFC 5182 "$"): parsed into a tree once, then matched
 * against each message of the selected view.
 *
 * Matching is cheap first: flags, sizes, internal dates, UIDs and sequence
 * numbers come from the view; the message file is opened only when a
 * header or body criterion still decides (the children of an AND and the
 * two sides of an OR are ordered by cost). Header criteria compare the
 * RFC 2047-decoded, case-folded field value (address fields as the whole
 * decoded field text); BODY looks at the decoded text of every "text"
 * leaf part (inside message/rfc822 too); TEXT at the decoded header and
 * that body text.
 *
 * Memory per message searched: the header (at most IMAP_HEADER_MEMORY_MAX
 * bytes read) and the decoded body text, capped at IMAP_SEARCH_BODY_MAX
 * bytes per part and per message (text beyond it is not searched). Only
 * the current message's data is kept; results are 4 bytes a match.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imap-parser.h"

struct imap_client;
struct mail_record;
struct imap_search_program;

/* Decoded body text searched per part, and per message. */
#define IMAP_SEARCH_BODY_MAX (16 * 1024 * 1024)
/* Deepest nesting of NOT / OR / parentheses. */
#define IMAP_SEARCH_DEPTH_MAX 64

enum imap_search_parse_result {
	IMAP_SEARCH_PARSE_OK = 0,
	IMAP_SEARCH_PARSE_BAD = -1,		/* syntax: reply BAD */
	IMAP_SEARCH_PARSE_BADCHARSET = -2,	/* NO [BADCHARSET ...] */
	IMAP_SEARCH_PARSE_BADSEQ = -3,		/* BAD, invalid sequence */
};

/* Parse the search keys args (up to EOL) for the selected mailbox of
   client. charset: the CHARSET argument (NULL = UTF-8); strings are
   converted from it. On error *error_r is a static reason. */
int imap_search_parse(struct imap_client *client, const struct imap_arg *args,
		      const char *charset,
		      struct imap_search_program **program_r,
		      const char **error_r);
void imap_search_free(struct imap_search_program **program);
/* Does the message (record of the view, seq = its sequence number)
   match? Opens and reads the file only if needed. */
bool imap_search_match(struct imap_search_program *program,
		       const struct mail_record *rec, uint32_t seq);
/* Did the program use MODSEQ (RFC 7162: then the results carry the
   highest modseq)? */
bool imap_search_uses_modseq(const struct imap_search_program *program);
/* Is charset one SEARCH accepts? */
bool imap_search_charset_ok(const char *charset);
/* SORT and THREAD: "charset search-key..." at args, parsed for cmd's
   client. true with *program_r, or false after a BAD or NO [BADCHARSET]
   reply to cmd. */
struct imap_command;
bool imap_search_parse_charset_keys(struct imap_command *cmd,
				    const struct imap_arg *args,
				    struct imap_search_program **program_r);

/* ---- message keys shared by SORT and THREAD (RFC 5256) ---------------
 * The header fields sort and thread keys are made of, read per message
 * (from the cached MIME tree when the mailbox cache has it and References
 * is not wanted, else from the header block of the file, never the body).
 */
struct mailbox;

enum imap_search_field {
	IMAP_SEARCH_FIELD_DATE,
	IMAP_SEARCH_FIELD_SUBJECT,
	IMAP_SEARCH_FIELD_FROM,
	IMAP_SEARCH_FIELD_TO,
	IMAP_SEARCH_FIELD_CC,
	IMAP_SEARCH_FIELD_MESSAGE_ID,
	IMAP_SEARCH_FIELD_IN_REPLY_TO,
	IMAP_SEARCH_FIELD_REFERENCES,
	IMAP_SEARCH_FIELD_COUNT
};

/* The first occurrence of each field, unfolded and raw (not decoded);
   NULL when absent. Owned; free with imap_search_fields_free(). */
struct imap_search_fields {
	char *value[IMAP_SEARCH_FIELD_COUNT];
};

/* Read the fields of message uid of box. Returns 1, 0 when the message
   is gone (all fields NULL), -1 on I/O error (all NULL, logged).
   need_references: References is wanted (forces reading the file). */
int imap_search_fields_read(struct mailbox *box, uint32_t uid,
			  bool need_references, struct imap_search_fields *f);
void imap_search_fields_free(struct imap_search_fields *f);

/* RFC 5256 2.1 base subject of a raw Subject value (NULL = ""): RFC 2047
   decoded, white space collapsed, "Re:", "Fwd:", "[blob]", "(fwd)" and
   "[fwd: ...]" removed, then upper-cased in ASCII (i;ascii-casemap), so
   that keys compare with strcmp(). *reply_r (may be NULL): something
   marking a reply or forward was removed. Caller frees. */
char *imap_search_base_subject(const char *subject, bool *reply_r);
/* RFC 5322 Date value -> seconds since the epoch (UTC); false if it does
   not parse (RFC 5256: then the internal date is the sent date). */
bool imap_search_date_parse(const char *value, int64_t *time_r);
/* The first address of an address field (NULL = none): its addr-mailbox
   (local part, RFC 5256 FROM/TO/CC), and its RFC 5957 display name (the
   decoded phrase, or "mailbox@host" without one). Both ASCII upper-cased
   for comparison, "" when absent. Caller frees both. */
void imap_search_address_keys(const char *field, char **mailbox_r,
			    char **display_r);

/* Shared with imap-sortkeys.c. */
struct buffer;
struct imap_message;
/* The raw header block of the message (up to the blank line; bounded). */
void imap_search_header_read(struct imap_message *msg, struct buffer *raw);
/* Day number (days since the epoch) of a Date: value; false if it does
   not parse. */
bool imap_search_date_day(const char *value, int64_t *day_r);

#endif
