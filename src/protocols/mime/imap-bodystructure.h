#ifndef CM_IMAP_BODYSTRUCTURE_H
#define CM_IMAP_BODYSTRUCTURE_H
/*
 * imap-bodystructure - the IMAP forms of a parsed message (RFC 9051 7.5.2):
 * BODY, BODYSTRUCTURE and ENVELOPE, written from a mime_part tree.
 *
 * The output is the exact IMAP syntax (parenthesised lists, NIL, quoted
 * strings, literals for values that cannot be quoted), ready to follow
 * "BODYSTRUCTURE " in a FETCH response. Header values are sent as they
 * are in the message (RFC 2047 words are not decoded, as RFC 9051
 * requires); 8-bit bytes are sent as literals unless utf8 is true.
 */
#include <stdbool.h>

struct buffer;
struct mime_part;

/* extended = true: BODYSTRUCTURE (with MD5, disposition, language,
   location); false: BODY. */
void imap_bodystructure_write(const struct mime_part *root, bool extended,
			      bool utf8, struct buffer *out);
/* ENVELOPE of a part with has_envelope (the top part, or the child of a
   message/rfc822 part). Addresses are parsed per RFC 5322 (groups become
   the (NIL NIL "group" NIL) ... (NIL NIL NIL NIL) form; unparsable ones
   are kept as best as possible, never dropped silently). Sender and
   Reply-To default to From. */
void imap_envelope_write(const struct mime_part *part, bool utf8,
			 struct buffer *out);

#endif
