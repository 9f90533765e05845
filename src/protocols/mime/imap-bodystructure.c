/*
 * imap-bodystructure.c - BODY and BODYSTRUCTURE (RFC 9051 7.5.2) from a
 * mime_part tree.
 *
 * Field order, single part:
 *   (type subtype params id description encoding size
 *    [lines]                       text/...
 *    [envelope body lines]         message/rfc822, message/global
 *    [md5 disposition language location])   BODYSTRUCTURE only
 * multipart:
 *   (part part ... subtype [params disposition language location])
 *
 * Choices (all legal per the grammar, and what common servers do):
 * - type and subtype are sent in the case of the message; a missing or
 *   invalid Content-Type gives "text" "plain" in lower case;
 * - a text part without a charset parameter gets ("charset" "us-ascii")
 *   first in its parameter list (the RFC 2045 default made explicit);
 * - a missing Content-Transfer-Encoding is "7bit";
 * - parameter names are lower case (the parser folds them);
 * - a message/rfc822 part whose content was not parsed (beyond
 *   MIME_MAX_DEPTH) gets an empty envelope and an empty text/plain body,
 *   so that the response stays well-formed;
 * - Content-Language is split at commas: one tag is a string, several
 *   are a list.
 * Size is the part's body_vsize (CRLF octets), lines its body_lines.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "mime-part.h"
#include "mime-private.h"
#include "imap-bodystructure.h"

#include <ctype.h>
#include <strings.h>

#define EMPTY_ENVELOPE "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
#define EMPTY_BODY "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL " \
	"\"7bit\" 0 0"

/* utf8_sequence_ok - is there a well-formed UTF-8 sequence of n bytes
   at s (lead byte checked by the caller)? */
static bool utf8_sequence_ok(const unsigned char *s, size_t left, size_t n)
{
	if (n > left)
		return false;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return false;
	}
	return true;
}

/* can_quote - may these bytes be sent as a quoted string? 8-bit bytes
   only with utf8 and only as UTF-8 sequences (RFC 9051 QUOTED-CHAR) */
static bool can_quote(const unsigned char *s, size_t len, bool utf8)
{
	if (len > 1024)
		return false;
	for (size_t i = 0; i < len; i++) {
		size_t n = s[i] >= 0xf0 && s[i] <= 0xf4 ? 4 :
			s[i] >= 0xe0 ? 3 : s[i] >= 0xc2 ? 2 : 1;

		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			return false;
		if (s[i] < 0x80)
			continue;
		if (!utf8 || n == 1 || s[i] > 0xf4 ||
		    !utf8_sequence_ok(s + i, len - i, n))
			return false;
		i += n - 1;
	}
	return true;
}

/* imap_write_nstring_len - quoted string, literal, or NIL */
void imap_write_nstring_len(struct buffer *out, const char *str, size_t len,
			    bool utf8)
{
	const unsigned char *s = (const unsigned char *)str;

	if (str == NULL) {
		buffer_append_str(out, "NIL");
		return;
	}
	if (!can_quote(s, len, utf8)) {
		buffer_printf(out, "{%zu}\r\n", len);
		buffer_append(out, s, len);
		return;
	}
	buffer_append_byte(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '"' || s[i] == '\\')
			buffer_append_byte(out, '\\');
		buffer_append_byte(out, s[i]);
	}
	buffer_append_byte(out, '"');
}

/* imap_write_nstring - NUL-terminated variant */
void imap_write_nstring(struct buffer *out, const char *str, bool utf8)
{
	imap_write_nstring_len(out, str, str == NULL ? 0 : strlen(str), utf8);
}

/* is_text - is the part text/...? */
static bool is_text(const struct mime_part *part)
{
	return strcasecmp(part->type, "text") == 0;
}

/* write_params - ("name" "value" ...) or NIL; text parts always carry a
   charset */
static void write_params(struct buffer *out, const struct mime_param *params,
			 unsigned int count, bool add_charset, bool utf8)
{
	if (count == 0 && !add_charset) {
		buffer_append_str(out, "NIL");
		return;
	}
	buffer_append_byte(out, '(');
	if (add_charset)
		buffer_append_str(out, "\"charset\" \"us-ascii\"");
	for (unsigned int i = 0; i < count; i++) {
		if (i > 0 || add_charset)
			buffer_append_byte(out, ' ');
		imap_write_nstring(out, params[i].name, utf8);
		buffer_append_byte(out, ' ');
		imap_write_nstring(out, params[i].value, utf8);
	}
	buffer_append_byte(out, ')');
}

/* write_disposition - ("attachment" (params)) or NIL */
static void write_disposition(struct buffer *out,
			      const struct mime_part *part, bool utf8)
{
	if (part->disposition == NULL) {
		buffer_append_str(out, "NIL");
		return;
	}
	buffer_append_byte(out, '(');
	imap_write_nstring(out, part->disposition, utf8);
	buffer_append_byte(out, ' ');
	write_params(out, part->disp_params, part->disp_param_count, false,
		     utf8);
	buffer_append_byte(out, ')');
}

/* write_language - NIL, "tag" or ("tag" "tag") from Content-Language */
static void write_language(struct buffer *out, const char *value, bool utf8)
{
	const char *tags[16];
	size_t lens[16], count = 0;
	const char *p = value;

	while (p != NULL && *p != '\0' && count < N_ELEMENTS(tags)) {
		size_t len;

		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		len = strcspn(p, ", \t");
		if (len > 0) {
			tags[count] = p;
			lens[count++] = len;
		}
		p += len;
	}
	if (count == 0) {
		buffer_append_str(out, "NIL");
		return;
	}
	if (count > 1)
		buffer_append_byte(out, '(');
	for (size_t i = 0; i < count; i++) {
		if (i > 0)
			buffer_append_byte(out, ' ');
		imap_write_nstring_len(out, tags[i], lens[i], utf8);
	}
	if (count > 1)
		buffer_append_byte(out, ')');
}

/* write_extension_tail - disposition, language, location */
static void write_extension_tail(struct buffer *out,
				 const struct mime_part *part, bool utf8)
{
	buffer_append_byte(out, ' ');
	write_disposition(out, part, utf8);
	buffer_append_byte(out, ' ');
	write_language(out, part->language, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->location, utf8);
}

static void write_part(const struct mime_part *part, bool extended,
		       bool utf8, struct buffer *out);

/* write_multipart - (parts subtype [ext]) */
static void write_multipart(const struct mime_part *part, bool extended,
			    bool utf8, struct buffer *out)
{
	buffer_append_byte(out, '(');
	for (const struct mime_part *child = part->children; child != NULL;
	     child = child->next)
		write_part(child, extended, utf8, out);
	if (part->children == NULL) {
		buffer_append_str(out, EMPTY_BODY);
		buffer_append_str(out, extended ? " NIL NIL NIL NIL)" : ")");
	}
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->subtype, utf8);
	if (extended) {
		buffer_append_byte(out, ' ');
		write_params(out, part->params, part->param_count, false,
			     utf8);
		write_extension_tail(out, part, utf8);
	}
	buffer_append_byte(out, ')');
}

/* write_message_body - envelope, body and lines of message/rfc822 */
static void write_message_body(const struct mime_part *part, bool extended,
			       bool utf8, struct buffer *out)
{
	buffer_append_byte(out, ' ');
	if (part->children == NULL) {
		buffer_append_str(out, EMPTY_ENVELOPE " " EMPTY_BODY);
		buffer_append_str(out, extended ? " NIL NIL NIL NIL)" : ")");
	} else {
		imap_envelope_write(part->children, utf8, out);
		buffer_append_byte(out, ' ');
		write_part(part->children, extended, utf8, out);
	}
	buffer_printf(out, " %llu", (unsigned long long)part->body_lines);
}

/* write_single - one non-multipart part */
static void write_single(const struct mime_part *part, bool extended,
			 bool utf8, struct buffer *out)
{
	buffer_append_byte(out, '(');
	imap_write_nstring(out, part->type, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->subtype, utf8);
	buffer_append_byte(out, ' ');
	write_params(out, part->params, part->param_count,
		     is_text(part) && mime_part_param(part, "charset") == NULL,
		     utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->id, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->description, utf8);
	buffer_append_byte(out, ' ');
	imap_write_nstring(out, part->encoding != NULL ? part->encoding :
			   "7bit", utf8);
	buffer_printf(out, " %llu", (unsigned long long)part->body_vsize);
	if (part->message)
		write_message_body(part, extended, utf8, out);
	else if (is_text(part))
		buffer_printf(out, " %llu",
			      (unsigned long long)part->body_lines);
	if (extended) {
		buffer_append_byte(out, ' ');
		imap_write_nstring(out, part->md5, utf8);
		write_extension_tail(out, part, utf8);
	}
	buffer_append_byte(out, ')');
}

/* write_part - dispatch on multipart */
static void write_part(const struct mime_part *part, bool extended,
		       bool utf8, struct buffer *out)
{
	if (part->multipart)
		write_multipart(part, extended, utf8, out);
	else
		write_single(part, extended, utf8, out);
}

/* imap_bodystructure_write - BODY (extended=false) or BODYSTRUCTURE */
void imap_bodystructure_write(const struct mime_part *root, bool extended,
			      bool utf8, struct buffer *out)
{
	write_part(root, extended, utf8, out);
}
