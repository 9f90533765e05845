/*
 * name.c - user addresses and mailbox names to spool paths, and IMAP
 * modified UTF-7.
 *
 * This file is the only gate between names that come from the network
 * (RCPT TO, LOGIN, CREATE, SELECT ...) and the file system, so it is
 * written to be strict first and convenient second:
 *
 *   - Every name is validated completely before anything is built from
 *     it; there is no "fix up" path that could turn a bad name into a
 *     different good one.
 *
 *   - Escaping is injective and the escaped forms never contain '/',
 *     never start a path component with '.' (users) and never produce
 *     ".", ".." or an empty component. A mailbox level of "." or ".." is
 *     a valid name like any other (name.h does not forbid it): it becomes
 *     "%2E" / "%2E%2E" and so can never traverse. That is why no other
 *     module may join a mailbox name into a path itself.
 *
 *   - name_dir_to_mailbox() accepts exactly the directory names that
 *     name_mailbox_to_dir() can produce. It decodes and then re-encodes
 *     and compares, so any second spelling (lower-case hex, an escape of
 *     a byte that needs none, ".INBOX", ".inbox.x") is rejected instead
 *     of aliasing an existing mailbox. This gives the round trip
 *     dir_to_mailbox(mailbox_to_dir(x)) == x for canonical x and makes
 *     mailbox_to_dir(dir_to_mailbox(d)) == d for every accepted d.
 *
 *   - UTF-8 is decoded strictly (no overlong forms, no surrogates, nothing
 *     above U+10FFFF), and C0 and C1 control characters are refused: they
 *     would end up in log lines, IMAP responses and directory listings.
 *
 * Modified UTF-7 (RFC 3501 5.1.3) is decoded just as strictly: the
 * encoding of a string is unique, so anything that is not the one
 * minimal encoding (printable ASCII in base64, leftover bits, adjacent
 * base64 runs, unpaired surrogates) is refused rather than normalized.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "name.h"

#include <strings.h>

/* Longest single directory name most file systems accept. */
#define NAME_DIR_MAX 255
/* RFC 5321 4.5.3.1.1 */
#define NAME_LOCAL_PART_MAX 64
#define NAME_DOMAIN_MAX 253
#define NAME_DOMAIN_LABEL_MAX 63

static const char hex_upper[] = "0123456789ABCDEF";

static unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* ---- UTF-8 ---------------------------------------------------------- */

/* utf8_next - decode one code point at s (NUL-terminated). Rejects
   continuation bytes without a lead, truncated sequences (the NUL stops
   the loop because it is not a continuation byte), overlong forms,
   surrogates and anything above U+10FFFF. */
static int utf8_next(const unsigned char *s, uint32_t *cp_r, size_t *len_r)
{
	unsigned char lead = s[0];
	uint32_t cp, min;
	size_t len;

	if (lead < 0x80) {
		*cp_r = lead;
		*len_r = 1;
		return 0;
	}
	if (lead >= 0xc2 && lead <= 0xdf) {
		len = 2; cp = lead & 0x1f; min = 0x80;
	} else if ((lead & 0xf0) == 0xe0) {
		len = 3; cp = lead & 0x0f; min = 0x800;
	} else if (lead >= 0xf0 && lead <= 0xf4) {
		len = 4; cp = lead & 0x07; min = 0x10000;
	} else {
		/* 0x80..0xc1 (continuation, overlong 2-byte lead) and
		   0xf5..0xff (beyond U+10FFFF) */
		return -1;
	}
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*cp_r = cp;
	*len_r = len;
	return 0;
}

static void utf8_append(struct buffer *buf, uint32_t cp)
{
	if (cp < 0x80) {
		buffer_append_byte(buf, cp);
	} else if (cp < 0x800) {
		buffer_append_byte(buf, 0xc0 | (cp >> 6));
		buffer_append_byte(buf, 0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		buffer_append_byte(buf, 0xe0 | (cp >> 12));
		buffer_append_byte(buf, 0x80 | ((cp >> 6) & 0x3f));
		buffer_append_byte(buf, 0x80 | (cp & 0x3f));
	} else {
		buffer_append_byte(buf, 0xf0 | (cp >> 18));
		buffer_append_byte(buf, 0x80 | ((cp >> 12) & 0x3f));
		buffer_append_byte(buf, 0x80 | ((cp >> 6) & 0x3f));
		buffer_append_byte(buf, 0x80 | (cp & 0x3f));
	}
}

/* C0, DEL and C1 (U+0080..U+009F) */
static bool codepoint_is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	/* Lower case is never produced, so it is never accepted. */
	return -1;
}

static void append_escaped(struct buffer *buf, unsigned char c)
{
	buffer_append_byte(buf, '%');
	buffer_append_byte(buf, hex_upper[c >> 4]);
	buffer_append_byte(buf, hex_upper[c & 0x0f]);
}

/* ---- users ---------------------------------------------------------- */

/* Bytes of a (lower-cased) local part that are written as they are. '.'
   is handled by the caller: raw unless leading or doubled. */
static bool local_byte_is_plain(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr("!#$&'*+=?^_`{|}~-", c) != NULL);
}

static int domain_validate(const char *domain, const char **error_r)
{
	size_t len = strlen(domain), label_len = 0;
	unsigned char prev = '.';

	if (len == 0 || len > NAME_DOMAIN_MAX) {
		*error_r = "Invalid domain length";
		return NAME_BAD;
	}
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = domain[i];

		if (c == '.' || c == '\0') {
			if (label_len == 0) {
				*error_r = "Empty domain label";
				return NAME_BAD;
			}
			if (prev == '-') {
				*error_r = "Domain label ends with '-'";
				return NAME_BAD;
			}
			label_len = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-') {
			if (c == '-' && label_len == 0) {
				*error_r = "Domain label starts with '-'";
				return NAME_BAD;
			}
			if (++label_len > NAME_DOMAIN_LABEL_MAX) {
				*error_r = "Domain label too long";
				return NAME_BAD;
			}
		} else {
			*error_r = "Invalid character in domain";
			return NAME_BAD;
		}
		prev = c;
	}
	return NAME_OK;
}

static int local_part_validate(const char *local, size_t len,
			       const char **error_r)
{
	if (len == 0 || len > NAME_LOCAL_PART_MAX) {
		*error_r = "Invalid local part length";
		return NAME_BAD;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = local[i];

		/* printable ASCII except '/'; no space, so that the name
		   stays one word in protocol lines and config files */
		if (c <= 0x20 || c >= 0x7f || c == '/') {
			*error_r = "Invalid character in local part";
			return NAME_BAD;
		}
	}
	return NAME_OK;
}

/* name_user_path - "Local@Example.COM" -> "example.com/local" */
int name_user_path(const char *user, char **path_r, char **canonical_r,
		   const char **error_r)
{
	const char *at = strrchr(user, '@');
	struct buffer buf;
	size_t local_len;

	if (at == NULL) {
		*error_r = "User name has no domain";
		return NAME_BAD;
	}
	/* The last '@' separates: a domain never contains one, a quoted
	   local part might (it is escaped below). */
	local_len = at - user;
	if (local_part_validate(user, local_len, error_r) < 0 ||
	    domain_validate(at + 1, error_r) < 0)
		return NAME_BAD;

	buffer_init(&buf, 0);
	for (const char *p = at + 1; *p != '\0'; p++)
		buffer_append_byte(&buf, ascii_lower(*p));
	buffer_append_byte(&buf, '/');
	for (size_t i = 0; i < local_len; i++) {
		unsigned char c = ascii_lower(user[i]);

		if (c == '.' && i > 0 && user[i - 1] != '.')
			buffer_append_byte(&buf, c);
		else if (local_byte_is_plain(c))
			buffer_append_byte(&buf, c);
		else
			append_escaped(&buf, c);
	}
	*path_r = buffer_export(&buf, NULL);
	if (canonical_r != NULL)
		*canonical_r = str_lcase(mem_strdup(user));
	return NAME_OK;
}

/* ---- mailbox names -------------------------------------------------- */

/* Bytes of a mailbox level that a directory name never holds raw: '.'
   separates Maildir++ levels, '%' starts an escape, '~' and '\\' are
   kept out for the benefit of shells and other tools reading the spool.
   ('/' is the hierarchy separator and never part of a level.) */
static bool mailbox_byte_is_escaped(unsigned char c)
{
	return c == '.' || c == '%' || c == '~' || c == '\\';
}

/* Is the first level of name "INBOX" in any case? Then it is the INBOX
   itself or one of its children. */
static bool mailbox_first_level_is_inbox(const char *name)
{
	return strncasecmp(name, "INBOX", 5) == 0 &&
		(name[5] == '\0' || name[5] == '/');
}

/* mailbox_validate - apply every rule of name.h to a mailbox name,
   including the length of the directory name it would map to */
static int mailbox_validate(const char *name, const char **error_r)
{
	const unsigned char *p = (const unsigned char *)name;
	const unsigned char *level = p;
	size_t levels = 1, dir_len = 1;

	if (*name == '\0') {
		*error_r = "Mailbox name is empty";
		return NAME_BAD;
	}
	if (strlen(name) > NAME_MAILBOX_MAX) {
		*error_r = "Mailbox name is too long";
		return NAME_BAD;
	}
	for (;;) {
		uint32_t cp;
		size_t len;

		if (*p == '/' || *p == '\0') {
			if (p == level) {
				*error_r = "Mailbox name has an empty level";
				return NAME_BAD;
			}
			if (*p == '\0')
				break;
			if (++levels > NAME_MAX_LEVELS) {
				*error_r = "Mailbox name has too many levels";
				return NAME_BAD;
			}
			dir_len++;
			level = ++p;
			continue;
		}
		if (utf8_next(p, &cp, &len) < 0) {
			*error_r = "Mailbox name is not valid UTF-8";
			return NAME_BAD;
		}
		if (codepoint_is_control(cp)) {
			*error_r = "Mailbox name contains a control character";
			return NAME_BAD;
		}
		dir_len += len == 1 && mailbox_byte_is_escaped(cp) ? 3 : len;
		p += len;
	}
	if (dir_len > NAME_DIR_MAX && !name_is_inbox(name)) {
		*error_r = "Mailbox name is too long for the file system";
		return NAME_BAD;
	}
	return NAME_OK;
}

bool name_is_inbox(const char *name)
{
	return strcasecmp(name, "INBOX") == 0;
}

/* name_mailbox_canonical - validate; "inbox/x" -> "INBOX/x" */
int name_mailbox_canonical(const char *name, char **canonical_r,
			   const char **error_r)
{
	char *canonical;

	if (mailbox_validate(name, error_r) < 0)
		return NAME_BAD;
	canonical = mem_strdup(name);
	if (mailbox_first_level_is_inbox(canonical))
		memcpy(canonical, "INBOX", 5);
	*canonical_r = canonical;
	return NAME_OK;
}

/* name_mailbox_to_dir - "Archive/2024" -> ".Archive.2024", INBOX -> "." */
int name_mailbox_to_dir(const char *name, char **dir_r, const char **error_r)
{
	const char *p = name;
	struct buffer buf;

	if (mailbox_validate(name, error_r) < 0)
		return NAME_BAD;
	if (name_is_inbox(name)) {
		*dir_r = mem_strdup(".");
		return NAME_OK;
	}
	buffer_init(&buf, 0);
	buffer_append_byte(&buf, '.');
	if (mailbox_first_level_is_inbox(name)) {
		buffer_append_str(&buf, "INBOX");
		p += 5;
	}
	for (; *p != '\0'; p++) {
		unsigned char c = *p;

		if (c == '/')
			buffer_append_byte(&buf, '.');
		else if (mailbox_byte_is_escaped(c))
			append_escaped(&buf, c);
		else
			buffer_append_byte(&buf, c);
	}
	*dir_r = buffer_export(&buf, NULL);
	return NAME_OK;
}

/* name_dir_to_mailbox - ".Archive.2024" -> "Archive/2024". Decodes, then
   encodes the result again and insists on getting dir back, so only the
   one spelling we create is ever accepted. */
int name_dir_to_mailbox(const char *dir, char **name_r)
{
	const char *error;
	struct buffer buf;
	char *name, *again;
	int ret;

	if (dir[0] != '.' || dir[1] == '\0')
		return NAME_BAD;
	buffer_init(&buf, 0);
	for (const char *p = dir + 1; *p != '\0'; p++) {
		if (*p == '.') {
			buffer_append_byte(&buf, '/');
		} else if (*p == '%') {
			int hi = hex_value(p[1]);
			int lo = hi < 0 ? -1 : hex_value(p[2]);

			if (lo < 0 || (hi == 0 && lo == 0)) {
				buffer_clear(&buf);
				return NAME_BAD;
			}
			buffer_append_byte(&buf, hi << 4 | lo);
			p += 2;
		} else {
			buffer_append_byte(&buf, *p);
		}
	}
	name = buffer_export(&buf, NULL);
	if (name_mailbox_to_dir(name, &again, &error) < 0) {
		free(name);
		return NAME_BAD;
	}
	ret = strcmp(again, dir) == 0 ? NAME_OK : NAME_BAD;
	free(again);
	if (ret == NAME_OK)
		*name_r = name;
	else
		free(name);
	return ret;
}

/* name_is_child - "a/b/c" is a child of "a/b", "a/bc" is not. Both names
   are canonical, so a byte comparison is enough. */
bool name_is_child(const char *parent, const char *child)
{
	size_t len = strlen(parent);

	return len > 0 && strncmp(child, parent, len) == 0 &&
		child[len] == '/' && child[len + 1] != '\0';
}

/* ---- modified UTF-7 (RFC 3501 5.1.3) ---------------------------------- */

/* Modified BASE64: RFC 4648 with ',' instead of '/', no padding. */
static const char mutf7_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int mutf7_value(unsigned char c)
{
	const char *pos;

	if (c == '\0' || (pos = strchr(mutf7_alphabet, c)) == NULL)
		return -1;
	return pos - mutf7_alphabet;
}

/* Characters that stand for themselves ('&' too, as "&-"). */
static bool mutf7_is_direct(uint32_t cp)
{
	return cp >= 0x20 && cp <= 0x7e;
}

/* Decoder state of one base64 run. */
struct mutf7_decoder {
	struct buffer *out;
	uint32_t bits;		/* bits not yet used (nbits of them) */
	unsigned int nbits;
	uint32_t high;		/* a high surrogate waiting for its pair */
	unsigned int units;	/* UTF-16 units decoded */
};

/* mutf7_take_unit - one UTF-16 unit, written out as UTF-8 */
static int mutf7_take_unit(struct mutf7_decoder *dec, uint32_t unit)
{
	dec->units++;
	if (dec->high != 0) {
		if (unit < 0xdc00 || unit > 0xdfff)
			return -1;	/* high surrogate alone */
		utf8_append(dec->out, 0x10000 + ((dec->high - 0xd800) << 10) +
			    (unit - 0xdc00));
		dec->high = 0;
	} else if (unit >= 0xd800 && unit <= 0xdbff) {
		dec->high = unit;
	} else if (unit >= 0xdc00 && unit <= 0xdfff) {
		return -1;	/* low surrogate alone */
	} else if (unit == 0 || mutf7_is_direct(unit)) {
		/* NUL cannot be in a C string; printable ASCII must
		   represent itself (RFC 3501) */
		return -1;
	} else {
		utf8_append(dec->out, unit);
	}
	return 0;
}

/* mutf7_decode_run - decode "xxxx-" (after the '&') into UTF-8.
   *pp is left after the '-'. */
static int mutf7_decode_run(const unsigned char **pp, struct buffer *out)
{
	struct mutf7_decoder dec = { .out = out };
	const unsigned char *p = *pp;
	int value;

	for (; *p != '-'; p++) {
		if ((value = mutf7_value(*p)) < 0)
			return -1;	/* also the end of the string */
		dec.bits = (dec.bits << 6) | value;
		dec.nbits += 6;
		if (dec.nbits < 16)
			continue;
		dec.nbits -= 16;
		if (mutf7_take_unit(&dec, dec.bits >> dec.nbits) < 0)
			return -1;
		dec.bits &= (1u << dec.nbits) - 1;
	}
	/* Anything left over must be fewer than 6 zero bits: a longer tail
	   or non-zero padding is not the minimal encoding. */
	if (dec.high != 0 || dec.units == 0 || dec.nbits >= 6 || dec.bits != 0)
		return -1;
	*pp = p + 1;
	return 0;
}

int name_mutf7_to_utf8(const char *mutf7, char **utf8_r)
{
	const unsigned char *p = (const unsigned char *)mutf7;
	bool after_run = false;
	struct buffer out;

	buffer_init(&out, 0);
	while (*p != '\0') {
		if (*p < 0x20 || *p > 0x7e)
			goto bad;
		if (*p != '&') {
			buffer_append_byte(&out, *p++);
			after_run = false;
		} else if (p[1] == '-') {
			buffer_append_byte(&out, '&');
			p += 2;
			after_run = false;
		} else {
			/* "-&" straight after a run is a null shift, which
			   RFC 3501 forbids: the two runs should be one. */
			if (after_run)
				goto bad;
			p++;
			if (mutf7_decode_run(&p, &out) < 0)
				goto bad;
			after_run = true;
		}
	}
	*utf8_r = buffer_export(&out, NULL);
	return NAME_OK;
bad:
	buffer_clear(&out);
	return NAME_BAD;
}

/* the base64 digit of the low 6 bits */
static unsigned char mutf7_digit(uint32_t bits)
{
	return mutf7_alphabet[bits & 0x3f];
}

/* Encoder state of one base64 run: bits not yet written. */
struct mutf7_encoder {
	struct buffer *out;
	uint32_t bits;
	unsigned int nbits;	/* < 6 between units */
};

static void mutf7_put_unit(struct mutf7_encoder *enc, uint32_t unit)
{
	enc->bits = (enc->bits << 16) | unit;
	enc->nbits += 16;
	while (enc->nbits >= 6) {
		enc->nbits -= 6;
		buffer_append_byte(enc->out,
				   mutf7_digit(enc->bits >> enc->nbits));
	}
	enc->bits &= (1u << enc->nbits) - 1;
}

/* UTF-16: a surrogate pair above the BMP */
static void mutf7_put_codepoint(struct mutf7_encoder *enc, uint32_t cp)
{
	if (cp < 0x10000) {
		mutf7_put_unit(enc, cp);
	} else {
		cp -= 0x10000;
		mutf7_put_unit(enc, 0xd800 + (cp >> 10));
		mutf7_put_unit(enc, 0xdc00 + (cp & 0x3ff));
	}
}

/* mutf7_encode_run - encode code points from *pp up to the next direct
   character as one base64 run "&...-". */
static int mutf7_encode_run(const unsigned char **pp, struct buffer *out)
{
	struct mutf7_encoder enc = { .out = out };
	const unsigned char *p = *pp;
	uint32_t cp;
	size_t len;

	buffer_append_byte(out, '&');
	while (*p != '\0') {
		if (utf8_next(p, &cp, &len) < 0)
			return -1;
		if (mutf7_is_direct(cp))
			break;
		mutf7_put_codepoint(&enc, cp);
		p += len;
	}
	/* the last bits, padded with zeros to a whole base64 digit */
	if (enc.nbits > 0)
		buffer_append_byte(out,
				   mutf7_digit(enc.bits << (6 - enc.nbits)));
	buffer_append_byte(out, '-');
	*pp = p;
	return 0;
}

int name_utf8_to_mutf7(const char *utf8, char **mutf7_r)
{
	const unsigned char *p = (const unsigned char *)utf8;
	struct buffer out;

	buffer_init(&out, 0);
	while (*p != '\0') {
		if (*p == '&') {
			buffer_append_str(&out, "&-");
			p++;
		} else if (mutf7_is_direct(*p)) {
			buffer_append_byte(&out, *p++);
		} else if (mutf7_encode_run(&p, &out) < 0) {
			buffer_clear(&out);
			return NAME_BAD;
		}
	}
	*mutf7_r = buffer_export(&out, NULL);
	return NAME_OK;
}
