/*
 * mime-decode.c - transfer encodings, RFC 2047 words, charsets, case
 * folding.
 *
 * Design. A body decoder is a two-stage stream: the transfer decoder
 * (base64 / quoted-printable / identity) keeps its few bytes of state
 * between chunks (a partial base64 quantum, a pending "=" or "=X"), and
 * the charset converter keeps the bytes of an incomplete multibyte
 * character between chunks. So any chunking, down to one byte at a time,
 * gives the same output.
 *
 * Charsets. UTF-8, US-ASCII and unknown charsets go through our own UTF-8
 * validator (US-ASCII text with 8-bit bytes is in practice UTF-8 more
 * often than anything else; invalid sequences become U+FFFD). Others go
 * through iconv, created per decoder (no cache: opening is cheap next to
 * reading a message). Charset names containing '/' are refused so that a
 * message cannot pass iconv options such as //TRANSLIT.
 *
 * Case folding uses towlower_l() with a C.UTF-8 locale created once
 * (pthread_once), so it is thread-safe and independent of the process
 * locale; without that locale we fold ASCII only.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "mime-decode.h"

#include <iconv.h>
#include <locale.h>
#include <pthread.h>
#include <strings.h>
#include <wctype.h>

#define REPLACEMENT "\xef\xbf\xbd"	/* U+FFFD */
#define CARRY_MAX 16

/* ---- output ---- */

/* out_append - append what fits in out's limit, drop the rest */
static void out_append(struct buffer *out, const void *data, size_t len)
{
	size_t room = buffer_room(out);

	(void)buffer_append(out, data, len < room ? len : room);
}

/* ---- UTF-8 ---- */

/* utf8_decode - decode one code point at s; returns its length, 0 when
   invalid, -1 when s is a valid but incomplete prefix */
static int utf8_decode(const unsigned char *s, size_t len, uint32_t *cp_r)
{
	static const uint32_t min_cp[] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint32_t cp;
	int need;

	if (s[0] < 0x80) {
		*cp_r = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		need = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		need = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (int i = 1; i < need; i++) {
		if ((size_t)i >= len)
			return -1;
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min_cp[need] || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*cp_r = cp;
	return need;
}

/* utf8_encode - append one code point */
static void utf8_encode(struct buffer *out, uint32_t cp)
{
	unsigned char b[4];
	size_t n;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | (cp >> 6));
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | (cp >> 12));
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | (cp >> 18));
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		n = 4;
	}
	out_append(out, b, n);
}

/* utf8_validate - copy valid UTF-8, U+FFFD for invalid bytes; returns how
   many trailing bytes form an incomplete sequence (not consumed) unless
   final */
static size_t utf8_validate(const unsigned char *s, size_t len, bool final,
			    struct buffer *out)
{
	size_t i = 0, run = 0;
	uint32_t cp;

	while (i < len) {
		int n = utf8_decode(s + i, len - i, &cp);

		if (n > 0) {
			i += (size_t)n;
			run += (size_t)n;
			continue;
		}
		out_append(out, s + i - run, run);
		run = 0;
		if (n < 0 && !final)
			return len - i;
		out_append(out, REPLACEMENT, 3);
		i++;
	}
	out_append(out, s + i - run, run);
	return 0;
}

/* ---- charset conversion ---- */

struct converter {
	iconv_t cd;		/* (iconv_t)-1: UTF-8 validation */
	unsigned char carry[CARRY_MAX];
	size_t carry_len;
};

/* charset_is_utf8 - charsets we validate instead of converting */
static bool charset_is_utf8(const char *charset)
{
	return charset == NULL || *charset == '\0' ||
		strcasecmp(charset, "utf-8") == 0 ||
		strcasecmp(charset, "utf8") == 0 ||
		strcasecmp(charset, "us-ascii") == 0 ||
		strcasecmp(charset, "ascii") == 0;
}

/* charset_open - iconv to UTF-8, or (iconv_t)-1 */
static iconv_t charset_open(const char *charset)
{
	if (charset_is_utf8(charset) || strchr(charset, '/') != NULL)
		return (iconv_t)-1;
	return iconv_open("UTF-8", charset);
}

/* mime_charset_is_known - can we convert from charset? */
bool mime_charset_is_known(const char *charset)
{
	iconv_t cd;

	if (charset_is_utf8(charset))
		return true;
	if ((cd = charset_open(charset)) == (iconv_t)-1)
		return false;
	iconv_close(cd);
	return true;
}

/* iconv_run - convert in[0..len); returns the bytes of an incomplete
   trailing character left unconverted (0 when final) */
static size_t iconv_run(iconv_t cd, const unsigned char *in, size_t len,
			bool final, struct buffer *out)
{
	char outbuf[1024], *inp = (char *)(uintptr_t)in, *outp;
	size_t inleft = len, outleft;

	while (inleft > 0) {
		size_t ret;

		outp = outbuf;
		outleft = sizeof(outbuf);
		ret = iconv(cd, &inp, &inleft, &outp, &outleft);
		out_append(out, outbuf, sizeof(outbuf) - outleft);
		if (ret != (size_t)-1 || errno == E2BIG)
			continue;
		if (errno == EINVAL && !final && inleft < CARRY_MAX)
			return inleft;
		out_append(out, REPLACEMENT, 3);
		inp++;
		inleft--;
		iconv(cd, NULL, NULL, NULL, NULL);
	}
	if (final) {
		outp = outbuf;
		outleft = sizeof(outbuf);
		iconv(cd, NULL, NULL, &outp, &outleft);
		out_append(out, outbuf, sizeof(outbuf) - outleft);
	}
	return 0;
}

/* convert_chunk - convert bytes, carrying an incomplete character */
static size_t convert_chunk(struct converter *conv, const unsigned char *in,
			    size_t len, bool final, struct buffer *out)
{
	if (conv->cd == (iconv_t)-1)
		return utf8_validate(in, len, final, out);
	return iconv_run(conv->cd, in, len, final, out);
}

/* convert_feed - feed bytes through the converter */
static void convert_feed(struct converter *conv, const unsigned char *in,
			 size_t len, bool final, struct buffer *out)
{
	size_t left;

	/* first complete the carried character with a few new bytes */
	while (conv->carry_len > 0 && len > 0) {
		conv->carry[conv->carry_len++] = *in++;
		len--;
		left = convert_chunk(conv, conv->carry, conv->carry_len,
				     false, out);
		if (left == 0) {
			conv->carry_len = 0;
		} else {
			memmove(conv->carry,
				conv->carry + conv->carry_len - left, left);
			conv->carry_len = left;
			if (left == CARRY_MAX)
				conv->carry_len = 0;
		}
	}
	if (conv->carry_len > 0 && final) {
		(void)convert_chunk(conv, conv->carry, conv->carry_len,
				    true, out);
		conv->carry_len = 0;
	}
	if (len == 0)
		return;
	left = convert_chunk(conv, in, len, final, out);
	memcpy(conv->carry, in + len - left, left);
	conv->carry_len = left;
}

/* mime_charset_to_utf8 - convert text in charset to UTF-8 */
int mime_charset_to_utf8(const char *charset, const void *data, size_t size,
			 struct buffer *out)
{
	struct converter conv = { .carry_len = 0 };

	if (!mime_charset_is_known(charset))
		return -1;
	conv.cd = charset_open(charset);
	convert_feed(&conv, data, size, true, out);
	if (conv.cd != (iconv_t)-1)
		iconv_close(conv.cd);
	return 0;
}

/* ---- transfer encodings ---- */

enum transfer {
	TRANSFER_IDENTITY,
	TRANSFER_BASE64,
	TRANSFER_QP,
};

struct mime_decoder {
	enum transfer transfer;
	struct converter conv;
	/* base64 */
	uint32_t bits;
	unsigned int nbits;
	bool b64_done;
	/* quoted-printable: 0 normal, 1 after '=', 2 after "=X", 3 "=\r" */
	int qp_state;
	unsigned char qp_hex;
};

/* base64_value - value of a base64 character, -1 for others */
static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* base64_step - decode bytes into out (whitespace, garbage ignored;
   '=' ends the data) */
static void base64_step(struct mime_decoder *dec, const unsigned char *in,
			size_t len, struct buffer *out)
{
	for (size_t i = 0; i < len && !dec->b64_done; i++) {
		int v = base64_value(in[i]);

		if (in[i] == '=') {
			dec->b64_done = true;
		} else if (v >= 0) {
			dec->bits = (dec->bits << 6) | (uint32_t)v;
			dec->nbits += 6;
			if (dec->nbits >= 8) {
				dec->nbits -= 8;
				buffer_append_byte(out, (unsigned char)
						   (dec->bits >> dec->nbits));
			}
		}
	}
}

/* hex_value - value of a hex digit, -1 for others */
static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* qp_byte - one byte through the quoted-printable state machine */
static void qp_byte(struct mime_decoder *dec, unsigned char c,
		    struct buffer *out)
{
	switch (dec->qp_state) {
	case 1:
		dec->qp_state = 0;
		if (hex_value(c) >= 0) {
			dec->qp_hex = c;
			dec->qp_state = 2;
		} else if (c == '\r') {
			dec->qp_state = 3;
		} else if (c != '\n') {		/* invalid: pass through */
			buffer_append_byte(out, '=');
			qp_byte(dec, c, out);
		}
		return;
	case 2:
		dec->qp_state = 0;
		if (hex_value(c) >= 0) {
			buffer_append_byte(out, (unsigned char)
					   (hex_value(dec->qp_hex) * 16 +
					    hex_value(c)));
			return;
		}
		buffer_append_byte(out, '=');
		buffer_append_byte(out, dec->qp_hex);
		qp_byte(dec, c, out);
		return;
	case 3:
		dec->qp_state = 0;
		if (c != '\n')
			qp_byte(dec, c, out);
		return;
	default:
		if (c == '=')
			dec->qp_state = 1;
		else
			buffer_append_byte(out, c);
	}
}

/* qp_finish - flush an incomplete escape at the end */
static void qp_finish(struct mime_decoder *dec, struct buffer *out)
{
	if (dec->qp_state == 1 || dec->qp_state == 2)
		buffer_append_byte(out, '=');
	if (dec->qp_state == 2)
		buffer_append_byte(out, dec->qp_hex);
	dec->qp_state = 0;
}

/* mime_decoder_create - a decoder for one part's body */
struct mime_decoder *mime_decoder_create(const char *encoding,
					 const char *charset)
{
	struct mime_decoder *dec = mem_zalloc(sizeof(*dec));

	if (encoding != NULL && strcasecmp(encoding, "base64") == 0)
		dec->transfer = TRANSFER_BASE64;
	else if (encoding != NULL &&
		 strcasecmp(encoding, "quoted-printable") == 0)
		dec->transfer = TRANSFER_QP;
	dec->conv.cd = charset_open(charset);
	return dec;
}

/* mime_decoder_feed - decode the next raw chunk */
void mime_decoder_feed(struct mime_decoder *dec, const void *data,
		       size_t size, struct buffer *out)
{
	const unsigned char *in = data;
	struct buffer tmp;

	if (dec->transfer == TRANSFER_IDENTITY) {
		convert_feed(&dec->conv, in, size, false, out);
		return;
	}
	buffer_init(&tmp, 0);
	if (dec->transfer == TRANSFER_BASE64) {
		base64_step(dec, in, size, &tmp);
	} else {
		for (size_t i = 0; i < size; i++)
			qp_byte(dec, in[i], &tmp);
	}
	convert_feed(&dec->conv, tmp.data, tmp.used, false, out);
	buffer_clear(&tmp);
}

/* mime_decoder_finish - flush and free the decoder */
void mime_decoder_finish(struct mime_decoder **_dec, struct buffer *out)
{
	struct mime_decoder *dec = *_dec;
	struct buffer tmp;

	if (dec == NULL)
		return;
	buffer_init(&tmp, 0);
	if (dec->transfer == TRANSFER_QP)
		qp_finish(dec, &tmp);
	convert_feed(&dec->conv, tmp.data, tmp.used, true, out);
	buffer_clear(&tmp);
	if (dec->conv.cd != (iconv_t)-1)
		iconv_close(dec->conv.cd);
	free(dec);
	*_dec = NULL;
}

/* ---- RFC 2047 ---- */

struct encoded_word {
	char charset[64];
	char encoding;		/* 'B' or 'Q' */
	const char *text;
	size_t text_len;
	size_t total_len;	/* "=?...?=" */
};

/* encoded_word_parse - is there an encoded word at s? */
static bool encoded_word_parse(const char *s, size_t len,
			       struct encoded_word *ew)
{
	const char *p = s + 2, *end = s + len, *q, *close;
	size_t clen;

	if (len < 8 || s[0] != '=' || s[1] != '?')
		return false;
	q = memchr(p, '?', end - p);
	if (q == NULL || (clen = q - p) == 0 || clen >= sizeof(ew->charset) ||
	    end - q < 5 || q[2] != '?')
		return false;
	ew->encoding = (char)(q[1] & ~0x20);
	if (ew->encoding != 'B' && ew->encoding != 'Q')
		return false;
	memcpy(ew->charset, p, clen);
	ew->charset[clen] = '\0';
	ew->charset[strcspn(ew->charset, "*")] = '\0';	/* RFC 2231 lang */
	ew->text = q + 3;
	for (close = ew->text; close + 1 < end; close++) {
		if (close[0] == '?' && close[1] == '=')
			break;
		if (close[0] == ' ' || close[0] == '\t')
			return false;
	}
	if (close + 1 >= end)
		return false;
	ew->text_len = close - ew->text;
	ew->total_len = close + 2 - s;
	return true;
}

/* encoded_word_decode - the bytes of the word (not yet converted) */
static void encoded_word_decode(const struct encoded_word *ew,
				struct buffer *bytes)
{
	const unsigned char *t = (const unsigned char *)ew->text;

	if (ew->encoding == 'B') {
		struct mime_decoder dec = { .transfer = TRANSFER_BASE64 };

		base64_step(&dec, t, ew->text_len, bytes);
		return;
	}
	for (size_t i = 0; i < ew->text_len; i++) {
		if (t[i] == '_') {
			buffer_append_byte(bytes, ' ');
		} else if (t[i] == '=' && i + 2 < ew->text_len &&
			   hex_value(t[i + 1]) >= 0 &&
			   hex_value(t[i + 2]) >= 0) {
			buffer_append_byte(bytes, (unsigned char)
					   (hex_value(t[i + 1]) * 16 +
					    hex_value(t[i + 2])));
			i += 2;
		} else {
			buffer_append_byte(bytes, t[i]);
		}
	}
}

struct header_decode {
	struct buffer *out;
	struct buffer pending;		/* bytes of adjacent words */
	char charset[64];		/* their charset */
};

/* pending_flush - convert the collected encoded-word bytes */
static void pending_flush(struct header_decode *hd)
{
	struct converter conv = { .carry_len = 0 };

	if (hd->pending.used == 0)
		return;
	conv.cd = charset_open(hd->charset);
	convert_feed(&conv, hd->pending.data, hd->pending.used, true,
		     hd->out);
	if (conv.cd != (iconv_t)-1)
		iconv_close(conv.cd);
	buffer_reset(&hd->pending);
}

/* text_append - plain header text (unfolded), validated as UTF-8 */
static void text_append(struct header_decode *hd, const char *s, size_t len)
{
	struct buffer unfolded;

	pending_flush(hd);
	buffer_init(&unfolded, 0);
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '\r' && s[i] != '\n')
			buffer_append_byte(&unfolded, (unsigned char)s[i]);
	}
	(void)utf8_validate(unfolded.data, unfolded.used, true, hd->out);
	buffer_clear(&unfolded);
}

/* only_space - is s[0..len) only white space (incl. line breaks)? */
static bool only_space(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return false;
	}
	return true;
}

/* mime_header_decode - header value to UTF-8 */
void mime_header_decode(const char *value, size_t len, struct buffer *out)
{
	struct header_decode hd = { .out = out };
	size_t text_start = 0, i = 0;
	bool after_word = false;
	struct encoded_word ew;

	buffer_init(&hd.pending, 0);
	while (i < len) {
		if (value[i] != '=' ||
		    !encoded_word_parse(value + i, len - i, &ew)) {
			i++;
			continue;
		}
		if (!after_word || !only_space(value + text_start,
					       i - text_start))
			text_append(&hd, value + text_start, i - text_start);
		if (strcasecmp(ew.charset, hd.charset) != 0) {
			pending_flush(&hd);
			memcpy(hd.charset, ew.charset, sizeof(hd.charset));
		}
		encoded_word_decode(&ew, &hd.pending);
		i += ew.total_len;
		text_start = i;
		after_word = true;
	}
	text_append(&hd, value + text_start, len - text_start);
	buffer_clear(&hd.pending);
}

/* ---- case folding ---- */

static pthread_once_t casefold_once = PTHREAD_ONCE_INIT;
static locale_t casefold_locale = (locale_t)0;

/* casefold_init - create the C.UTF-8 locale once */
static void casefold_init(void)
{
	casefold_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* fold_code_point - simple lower case of one code point */
static uint32_t fold_code_point(uint32_t cp)
{
	if (cp < 0x80)
		return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
	if (casefold_locale == (locale_t)0)
		return cp;
	return (uint32_t)towlower_l((wint_t)cp, casefold_locale);
}

/* mime_utf8_casefold - fold text for comparison */
void mime_utf8_casefold(const char *text, size_t len, struct buffer *out)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0;
	uint32_t cp;

	pthread_once(&casefold_once, casefold_init);
	while (i < len) {
		int n = utf8_decode(s + i, len - i, &cp);

		if (n <= 0) {
			out_append(out, REPLACEMENT, 3);
			i++;
			continue;
		}
		utf8_encode(out, fold_code_point(cp));
		i += (size_t)n;
	}
}

/* mime_utf8_contains - substring test on folded text */
bool mime_utf8_contains(const char *haystack, size_t haystack_len,
			const char *needle, size_t needle_len)
{
	if (needle_len == 0)
		return true;
	return memmem(haystack, haystack_len, needle, needle_len) != NULL;
}
