#ifndef CM_JSON_H
#define CM_JSON_H
/*
 * json - a small JSON writer (output only) for --json and the control
 * socket. Strings are escaped per RFC 8259; invalid UTF-8 bytes are
 * replaced with U+FFFD so the output is always valid JSON.
 *
 *   struct json_writer w; json_init(&w, &buf);
 *   json_object_begin(&w); json_key(&w, "node"); json_string(&w, "n1");
 *   json_object_end(&w);
 */
#include <stdbool.h>
#include <stdint.h>

struct buffer;

#define JSON_MAX_DEPTH 32

struct json_writer {
	struct buffer *out;		/* borrowed */
	unsigned int depth;
	bool need_comma[JSON_MAX_DEPTH];
	bool after_key;
};

void json_init(struct json_writer *w, struct buffer *out);
void json_object_begin(struct json_writer *w);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w);
void json_array_end(struct json_writer *w);
void json_key(struct json_writer *w, const char *key);
void json_string(struct json_writer *w, const char *value); /* NULL -> null */
void json_int(struct json_writer *w, int64_t value);
void json_uint(struct json_writer *w, uint64_t value);
void json_bool(struct json_writer *w, bool value);
void json_null(struct json_writer *w);

/* Shorthands for "key": value inside an object. */
void json_kv_string(struct json_writer *w, const char *key, const char *value);
void json_kv_uint(struct json_writer *w, const char *key, uint64_t value);
void json_kv_bool(struct json_writer *w, const char *key, bool value);

/* --- reading --- */

enum json_type {
	JSON_TYPE_STRING,
	JSON_TYPE_NUMBER,
	JSON_TYPE_BOOL,
	JSON_TYPE_NULL,
};

/* Called for every scalar in document order. path names it with dots and
   array indexes ("connections.imap", "users.0.address"); value is the
   decoded string, or the literal text for numbers, true/false and null.
   Both are only valid during the call. */
typedef void json_visit_t(const char *path, enum json_type type,
			  const char *value, void *context);

/* Parse a whole JSON document (RFC 8259; nesting up to JSON_MAX_DEPTH) and
   visit its scalars. Returns 0, or -1 with a reason in *error_r (static
   text) if the document is malformed; scalars before the error may
   already have been visited. */
int json_parse(const char *text, json_visit_t *visit, void *context,
	       const char **error_r);

#endif
