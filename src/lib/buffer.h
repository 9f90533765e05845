#ifndef CM_BUFFER_H
#define CM_BUFFER_H
/*
 * buffer - auto-growing, binary-safe byte buffer with an optional size cap.
 *
 * The buffer owns data. data is always NUL-terminated just past `used`
 * (the terminator is not counted), so text can be read with buffer_cstr().
 * A non-zero limit bounds `used`: an append that would exceed it fails with
 * -1 and appends nothing. This is how per-connection memory stays bounded
 * (DESIGN invariant 8): callers turn -1 into a protocol error.
 *
 * Ownership moves out with buffer_export() (caller frees the bytes) and in
 * with buffer_import() (the buffer frees them later).
 */
#include <stddef.h>
#include <stdarg.h>

struct buffer {
	unsigned char *data;	/* owned by the buffer; NULL until first use */
	size_t used;		/* bytes of content */
	size_t alloc;		/* bytes allocated (> used when data != NULL) */
	size_t limit;		/* max content bytes; 0 = unlimited */
};

/* Initialise an embedded buffer; no allocation until first append. */
void buffer_init(struct buffer *buf, size_t limit);
/* Allocate a buffer. */
struct buffer *buffer_create(size_t limit);
/* Free an allocated buffer and its data; sets *buf = NULL. */
void buffer_destroy(struct buffer **buf);
/* Free the data of an embedded buffer; it stays usable (empty). */
void buffer_clear(struct buffer *buf);

/* Append bytes. Returns 0, or -1 if the limit would be exceeded. */
int buffer_append(struct buffer *buf, const void *data, size_t len);
int buffer_append_str(struct buffer *buf, const char *str);
int buffer_append_byte(struct buffer *buf, unsigned char byte);
int buffer_printf(struct buffer *buf, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int buffer_vprintf(struct buffer *buf, const char *fmt, va_list args)
	__attribute__((format(printf, 2, 0)));

/* Make room for len more bytes and return where to write them, or NULL if
   the limit does not allow len more. Follow with buffer_commit(). This lets
   recv()/read() fill the buffer directly. */
unsigned char *buffer_reserve(struct buffer *buf, size_t len);
/* Count len bytes written into the space returned by buffer_reserve(). */
void buffer_commit(struct buffer *buf, size_t len);
/* Bytes that may still be appended before the limit (SIZE_MAX if none). */
size_t buffer_room(const struct buffer *buf);

/* Drop the first len bytes (len <= used). */
void buffer_consume(struct buffer *buf, size_t len);
/* Keep only the first len bytes (len <= used). */
void buffer_truncate(struct buffer *buf, size_t len);
/* Empty the buffer, keeping its allocation. */
void buffer_reset(struct buffer *buf);

/* Content as a NUL-terminated string (never NULL; "" when empty). */
const char *buffer_cstr(const struct buffer *buf);

/* Take the content out: caller owns the returned bytes (NUL-terminated,
   never NULL), *len_r gets the length; the buffer is left empty. */
char *buffer_export(struct buffer *buf, size_t *len_r);
/* Replace the content with data (allocated with mem_*, alloc bytes,
   len used, alloc > len); the buffer now owns it. */
void buffer_import(struct buffer *buf, void *data, size_t len, size_t alloc);

#endif
