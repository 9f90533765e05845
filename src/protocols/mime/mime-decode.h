#ifndef CM_MIME_DECODE_H
#define CM_MIME_DECODE_H
/*
 * mime-decode - turning message text into searchable UTF-8: transfer
 * encodings (base64, quoted-printable), RFC 2047 encoded words in
 * headers, charsets (iconv), and case folding for case-insensitive
 * matching (SEARCH, RFC 9051 6.4.4: i;unicode-casemap style).
 *
 * Nothing here fails on bad input: invalid base64/QP/encoded words are
 * passed through or skipped, unknown charsets are treated as UTF-8 with
 * invalid bytes replaced by U+FFFD.
 */
#include <stdbool.h>
#include <stddef.h>

struct buffer;

/* Body decoder for one part: raw body bytes in (any chunking), UTF-8 out.
   encoding: Content-Transfer-Encoding (NULL = 7bit); charset: the
   Content-Type charset (NULL = us-ascii/UTF-8). Output is appended to out
   (a bounded buffer: output beyond its limit is dropped silently). */
struct mime_decoder;
struct mime_decoder *mime_decoder_create(const char *encoding,
					 const char *charset);
void mime_decoder_feed(struct mime_decoder *dec, const void *data,
		       size_t size, struct buffer *out);
void mime_decoder_finish(struct mime_decoder **dec, struct buffer *out);

/* A header field value -> UTF-8: unfolds, decodes RFC 2047 words (B and
   Q, any charset iconv knows), drops the white space between adjacent
   encoded words. Appends to out. */
void mime_header_decode(const char *value, size_t len, struct buffer *out);

/* Convert text in charset to UTF-8 (appends to out). Returns 0, or -1
   when the charset is unknown (SEARCH then answers NO [BADCHARSET]). */
int mime_charset_to_utf8(const char *charset, const void *data, size_t size,
			 struct buffer *out);
/* Is the charset known? */
bool mime_charset_is_known(const char *charset);

/* Case-fold UTF-8 text for comparison (simple Unicode lower case of every
   code point; invalid bytes become U+FFFD). Appends to out. */
void mime_utf8_casefold(const char *text, size_t len, struct buffer *out);
/* Does haystack contain needle? Both must be case-folded already. */
bool mime_utf8_contains(const char *haystack, size_t haystack_len,
			const char *needle, size_t needle_len);

#endif
