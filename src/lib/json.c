/*
 * json.c - a small JSON writer.
 */
#include "lib/lib.h"
#include "buffer.h"
#include "json.h"

#include <inttypes.h>
#include <stdio.h>

void json_init(struct json_writer *w, struct buffer *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

/* json_value_start - comma between values, nothing after a key */
static void json_value_start(struct json_writer *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->depth > 0 && w->need_comma[w->depth - 1])
		buffer_append_byte(w->out, ',');
	if (w->depth > 0)
		w->need_comma[w->depth - 1] = true;
}

static void json_open(struct json_writer *w, char c)
{
	json_value_start(w);
	if (w->depth >= JSON_MAX_DEPTH)
		log_panic("json: nesting deeper than %d", JSON_MAX_DEPTH);
	buffer_append_byte(w->out, (unsigned char)c);
	w->need_comma[w->depth++] = false;
}

static void json_close(struct json_writer *w, char c)
{
	if (w->depth == 0)
		log_panic("json: close without open");
	w->depth--;
	buffer_append_byte(w->out, (unsigned char)c);
}

void json_object_begin(struct json_writer *w) { json_open(w, '{'); }
void json_object_end(struct json_writer *w) { json_close(w, '}'); }
void json_array_begin(struct json_writer *w) { json_open(w, '['); }
void json_array_end(struct json_writer *w) { json_close(w, ']'); }

/* json_utf8_len - length of a valid UTF-8 sequence at p, or 0 */
static size_t json_utf8_len(const unsigned char *p)
{
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		return (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (p[0] >= 0xe0 && p[0] <= 0xef) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f))
			return 0;
		return 3;
	}
	if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 ||
		    (p[3] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f))
			return 0;
		return 4;
	}
	return 0;
}

static void json_append_escaped(struct buffer *out, const char *str)
{
	const unsigned char *p = (const unsigned char *)str;

	buffer_append_byte(out, '"');
	while (*p != '\0') {
		if (*p == '"' || *p == '\\') {
			buffer_append_byte(out, '\\');
			buffer_append_byte(out, *p++);
		} else if (*p == '\n') {
			buffer_append_str(out, "\\n");
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			buffer_printf(out, "\\u%04x", *p++);
		} else if (*p < 0x80) {
			buffer_append_byte(out, *p++);
		} else {
			size_t len = json_utf8_len(p);

			if (len == 0) {
				buffer_append_str(out, "\\ufffd");
				p++;
			} else {
				buffer_append(out, p, len);
				p += len;
			}
		}
	}
	buffer_append_byte(out, '"');
}

void json_key(struct json_writer *w, const char *key)
{
	json_value_start(w);
	json_append_escaped(w->out, key);
	buffer_append_byte(w->out, ':');
	w->after_key = true;
}

void json_string(struct json_writer *w, const char *value)
{
	if (value == NULL) {
		json_null(w);
		return;
	}
	json_value_start(w);
	json_append_escaped(w->out, value);
}

void json_int(struct json_writer *w, int64_t value)
{
	json_value_start(w);
	buffer_printf(w->out, "%" PRId64, value);
}

void json_uint(struct json_writer *w, uint64_t value)
{
	json_value_start(w);
	buffer_printf(w->out, "%" PRIu64, value);
}

void json_bool(struct json_writer *w, bool value)
{
	json_value_start(w);
	buffer_append_str(w->out, value ? "true" : "false");
}

void json_null(struct json_writer *w)
{
	json_value_start(w);
	buffer_append_str(w->out, "null");
}

void json_kv_string(struct json_writer *w, const char *key, const char *value)
{
	json_key(w, key);
	json_string(w, value);
}

void json_kv_uint(struct json_writer *w, const char *key, uint64_t value)
{
	json_key(w, key);
	json_uint(w, value);
}

void json_kv_bool(struct json_writer *w, const char *key, bool value)
{
	json_key(w, key);
	json_bool(w, value);
}

/* --- reading: a recursive-descent parser that flattens to paths --- */

struct json_reader {
	const char *p;
	json_visit_t *visit;
	void *context;
	struct buffer path;		/* current dotted path */
	struct buffer value;		/* decoded scalar */
	unsigned int depth;
	const char *error;
};

static int json_read_value(struct json_reader *r);

static void json_skip_space(struct json_reader *r)
{
	while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
		r->p++;
}

static int json_fail(struct json_reader *r, const char *error)
{
	if (r->error == NULL)
		r->error = error;
	return -1;
}

/* json_append_utf8 - encode a code point */
static void json_append_utf8(struct buffer *out, uint32_t cp)
{
	if (cp < 0x80) {
		buffer_append_byte(out, (unsigned char)cp);
	} else if (cp < 0x800) {
		buffer_append_byte(out, (unsigned char)(0xc0 | (cp >> 6)));
		buffer_append_byte(out, (unsigned char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		buffer_append_byte(out, (unsigned char)(0xe0 | (cp >> 12)));
		buffer_append_byte(out, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		buffer_append_byte(out, (unsigned char)(0x80 | (cp & 0x3f)));
	} else {
		buffer_append_byte(out, (unsigned char)(0xf0 | (cp >> 18)));
		buffer_append_byte(out, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
		buffer_append_byte(out, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		buffer_append_byte(out, (unsigned char)(0x80 | (cp & 0x3f)));
	}
}

/* json_read_hex4 - four hex digits of a \\u escape */
static int json_read_hex4(struct json_reader *r, uint32_t *cp_r)
{
	uint32_t cp = 0;

	for (int i = 0; i < 4; i++) {
		char c = *r->p++;

		cp <<= 4;
		if (c >= '0' && c <= '9') cp |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f') cp |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F') cp |= (uint32_t)(c - 'A' + 10);
		else return json_fail(r, "bad \\u escape");
	}
	*cp_r = cp;
	return 0;
}

/* json_read_escape - one backslash escape (r->p after the backslash) */
static int json_read_escape(struct json_reader *r, struct buffer *out)
{
	static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
	const char *pos = *r->p == '\0' ? NULL : strchr(from, *r->p);
	uint32_t cp, low;

	if (pos != NULL) {
		buffer_append_byte(out, (unsigned char)to[pos - from]);
		r->p++;
		return 0;
	}
	if (*r->p++ != 'u' || json_read_hex4(r, &cp) < 0)
		return json_fail(r, "bad escape in string");
	if (cp >= 0xd800 && cp <= 0xdbff) {
		if (r->p[0] != '\\' || r->p[1] != 'u')
			return json_fail(r, "lone surrogate in string");
		r->p += 2;
		if (json_read_hex4(r, &low) < 0 || low < 0xdc00 || low > 0xdfff)
			return json_fail(r, "bad surrogate pair in string");
		cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
	} else if (cp >= 0xdc00 && cp <= 0xdfff) {
		return json_fail(r, "lone surrogate in string");
	}
	json_append_utf8(out, cp);
	return 0;
}

/* json_read_string - a string at r->p (on the quote) into out */
static int json_read_string(struct json_reader *r, struct buffer *out)
{
	buffer_reset(out);
	r->p++;
	for (;;) {
		unsigned char c = (unsigned char)*r->p;

		if (c == '"') {
			r->p++;
			return 0;
		}
		if (c == '\0' || c < 0x20)
			return json_fail(r, "unterminated string or control character");
		if (c == '\\') {
			r->p++;
			if (json_read_escape(r, out) < 0)
				return -1;
			continue;
		}
		buffer_append_byte(out, c);
		r->p++;
	}
}

/* json_read_literal - a number, true, false or null */
static int json_read_literal(struct json_reader *r)
{
	const char *start = r->p;
	enum json_type type;

	if (strncmp(r->p, "true", 4) == 0 || strncmp(r->p, "false", 5) == 0) {
		type = JSON_TYPE_BOOL;
		r->p += *r->p == 't' ? 4 : 5;
	} else if (strncmp(r->p, "null", 4) == 0) {
		type = JSON_TYPE_NULL;
		r->p += 4;
	} else {
		type = JSON_TYPE_NUMBER;
		if (*r->p == '-')
			r->p++;
		if (*r->p < '0' || *r->p > '9')
			return json_fail(r, "unexpected character");
		r->p += strspn(r->p, "0123456789.eE+-");
	}
	buffer_reset(&r->value);
	buffer_append(&r->value, start, (size_t)(r->p - start));
	r->visit(buffer_cstr(&r->path), type, buffer_cstr(&r->value), r->context);
	return 0;
}

/* json_read_member - the path component for a member or element, then
   its value, then the path restored */
static int json_read_member(struct json_reader *r, const char *name)
{
	size_t saved = r->path.used;
	int ret;

	if (saved > 0)
		buffer_append_byte(&r->path, '.');
	buffer_append_str(&r->path, name);
	ret = json_read_value(r);
	buffer_truncate(&r->path, saved);
	return ret;
}

static int json_read_object(struct json_reader *r)
{
	struct buffer key;
	int ret = 0;

	buffer_init(&key, 0);
	r->p++;
	json_skip_space(r);
	if (*r->p == '}') {
		r->p++;
		return 0;
	}
	for (;;) {
		json_skip_space(r);
		if (*r->p != '"' || json_read_string(r, &key) < 0) {
			ret = json_fail(r, "expected a member name");
			break;
		}
		json_skip_space(r);
		if (*r->p++ != ':') {
			ret = json_fail(r, "expected ':'");
			break;
		}
		if ((ret = json_read_member(r, buffer_cstr(&key))) < 0)
			break;
		json_skip_space(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p++ != '}')
			ret = json_fail(r, "expected ',' or '}'");
		break;
	}
	buffer_clear(&key);
	return ret;
}

static int json_read_array(struct json_reader *r)
{
	char index[24];

	r->p++;
	json_skip_space(r);
	if (*r->p == ']') {
		r->p++;
		return 0;
	}
	for (unsigned int i = 0;; i++) {
		snprintf(index, sizeof(index), "%u", i);
		if (json_read_member(r, index) < 0)
			return -1;
		json_skip_space(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		if (*r->p++ != ']')
			return json_fail(r, "expected ',' or ']'");
		return 0;
	}
}

static int json_read_value(struct json_reader *r)
{
	int ret;

	json_skip_space(r);
	if (*r->p == '"') {
		if (json_read_string(r, &r->value) < 0)
			return -1;
		r->visit(buffer_cstr(&r->path), JSON_TYPE_STRING,
			 buffer_cstr(&r->value), r->context);
		return 0;
	}
	if (*r->p != '{' && *r->p != '[')
		return json_read_literal(r);
	if (++r->depth > JSON_MAX_DEPTH)
		return json_fail(r, "nested too deeply");
	ret = *r->p == '{' ? json_read_object(r) : json_read_array(r);
	r->depth--;
	return ret;
}

int json_parse(const char *text, json_visit_t *visit, void *context,
	       const char **error_r)
{
	struct json_reader r = { .p = text, .visit = visit, .context = context };
	int ret;

	buffer_init(&r.path, 0);
	buffer_init(&r.value, 0);
	ret = json_read_value(&r);
	if (ret == 0) {
		json_skip_space(&r);
		if (*r.p != '\0')
			ret = json_fail(&r, "trailing characters after the document");
	}
	buffer_clear(&r.path);
	buffer_clear(&r.value);
	if (ret < 0)
		*error_r = r.error;
	return ret;
}
