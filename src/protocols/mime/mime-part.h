#ifndef CM_MIME_PART_H
#define CM_MIME_PART_H
/*
 * mime-part - a streaming MIME parser (RFC 2045/2046/5322) that turns a
 * message into a tree of parts with byte offsets.
 *
 * The message is fed in chunks as it is read from the file; memory stays
 * bounded whatever the message size (only the header fields the tree
 * keeps are stored, each capped). Malformed input never fails: like other
 * servers we produce a best-effort tree (missing boundaries end at the end
 * of the enclosing part, bad Content-Type is text/plain, nesting beyond
 * MIME_MAX_DEPTH and parts beyond MIME_MAX_PARTS are treated as opaque
 * body text).
 *
 * Offsets. Message files on the spool have LF line ends (the store
 * converts CRLF on save; files written by other tools may still have
 * CRLF). Every offset here is a PHYSICAL offset in the file. Every *_vsize
 * is the size IMAP reports, where each LF not preceded by CR counts as
 * CRLF (two octets). BODY[] output converts on the fly the same way.
 *
 * A part: header starts at header_offset, the body at body_offset (after
 * the blank line), and the part ends at end_offset. For a multipart, its
 * children are the parts between the boundaries (the preamble and
 * epilogue belong to no child). For message/rfc822 (and message/global),
 * the single child is the encapsulated message: its header is the body of
 * this part.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buffer;

#define MIME_MAX_DEPTH 50	/* nested multiparts / messages */
#define MIME_MAX_PARTS 5000	/* parts in one message */
/* Longest header field value kept (longer ones are cut at this size). */
#define MIME_MAX_FIELD 8192

struct mime_param {
	char *name;		/* lower case */
	char *value;		/* unquoted; RFC 2231 continuations joined,
				   the charset/language prefix kept as sent */
};

struct mime_part {
	struct mime_part *parent, *children, *next;	/* tree (owned) */
	unsigned int child_count;

	uint64_t header_offset, body_offset, end_offset;	/* physical */
	uint64_t header_vsize;		/* incl. the blank line */
	uint64_t body_vsize;
	uint64_t header_lines, body_lines;

	/* Content-Type, case as sent; defaults "text"/"plain" (or
	   "message"/"rfc822" inside multipart/digest). */
	char *type, *subtype;
	struct mime_param *params;	/* Content-Type parameters */
	unsigned int param_count;
	char *id, *description, *encoding;	/* NULL when absent */
	char *md5, *language, *location;	/* NULL when absent */
	char *disposition;			/* NULL when absent */
	struct mime_param *disp_params;
	unsigned int disp_param_count;

	/* The header fields ENVELOPE needs, unfolded, raw (not decoded):
	   only for the top part and message/rfc822 children. */
	char *env_date, *env_subject, *env_from, *env_sender, *env_reply_to,
		*env_to, *env_cc, *env_bcc, *env_in_reply_to, *env_message_id;
	bool has_envelope;

	bool multipart;			/* type is multipart/... */
	bool message;			/* message/rfc822 or message/global */
};

struct mime_parser;

struct mime_parser *mime_parser_create(void);
/* Feed the next chunk of the message (any size, any boundaries). */
void mime_parser_feed(struct mime_parser *parser, const void *data,
		      size_t size);
/* End of the message: returns the tree (caller frees with
   mime_part_free()) and destroys the parser. */
struct mime_part *mime_parser_finish(struct mime_parser **parser);
void mime_parser_abort(struct mime_parser **parser);

void mime_part_free(struct mime_part **root);

/* Find a part by IMAP section number "1.2.3" (RFC 9051 6.4.5: for a
   non-multipart message, part 1 is the body itself; for message/rfc822,
   the numbers continue inside the encapsulated message's body). NULL if
   there is no such part. "" returns the root. */
const struct mime_part *mime_part_find(const struct mime_part *root,
				       const char *section);
/* Content-Type parameter by name (case-insensitive), NULL if absent. An
   RFC 2231 extended parameter is stored as "name*" with its value in
   ext-value form (charset'language'%XX...); looking up "name" finds it
   when there is no plain "name". */
const char *mime_part_param(const struct mime_part *part, const char *name);

/* The tree as bytes for the mailbox cache, and back. Deserialize returns
   NULL on any damage (the caller reparses). */
void mime_part_serialize(const struct mime_part *root, struct buffer *out);
struct mime_part *mime_part_deserialize(const void *data, size_t size);

#endif
