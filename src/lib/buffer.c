/*
 * buffer.c - auto-growing, binary-safe byte buffer with an optional cap.
 */
#include "lib/lib.h"
#include "buffer.h"

#include <stdio.h>
#include <stdint.h>

void buffer_init(struct buffer *buf, size_t limit)
{
	memset(buf, 0, sizeof(*buf));
	buf->limit = limit;
}

struct buffer *buffer_create(size_t limit)
{
	struct buffer *buf = mem_zalloc(sizeof(*buf));

	buf->limit = limit;
	return buf;
}

void buffer_destroy(struct buffer **bufp)
{
	struct buffer *buf = *bufp;

	if (buf == NULL)
		return;
	free(buf->data);
	free(buf);
	*bufp = NULL;
}

void buffer_clear(struct buffer *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->used = buf->alloc = 0;
}

size_t buffer_room(const struct buffer *buf)
{
	if (buf->limit == 0)
		return SIZE_MAX - buf->used - 1;
	return buf->used >= buf->limit ? 0 : buf->limit - buf->used;
}

/* buffer_grow - ensure room for len more bytes plus the terminator */
static void buffer_grow(struct buffer *buf, size_t len)
{
	size_t need = buf->used + len + 1;
	size_t new_alloc;

	if (need <= buf->alloc)
		return;
	new_alloc = buf->alloc < 64 ? 64 : buf->alloc;
	while (new_alloc < need) {
		/* A huge request must end in mem_realloc's out-of-memory
		   exit, not loop forever on a doubling that wrapped to 0. */
		if (new_alloc > SIZE_MAX / 2) {
			new_alloc = need;
			break;
		}
		new_alloc *= 2;
	}
	/* Never allocate far past the cap: it is what bounds memory. */
	if (buf->limit != 0 && new_alloc > buf->limit + 1)
		new_alloc = need > buf->limit + 1 ? need : buf->limit + 1;
	buf->data = mem_realloc(buf->data, new_alloc);
	buf->alloc = new_alloc;
}

unsigned char *buffer_reserve(struct buffer *buf, size_t len)
{
	if (len > buffer_room(buf))
		return NULL;
	buffer_grow(buf, len);
	return buf->data + buf->used;
}

void buffer_commit(struct buffer *buf, size_t len)
{
	if (buf->used + len + 1 > buf->alloc)
		log_panic("buffer_commit: %zu bytes past the reserved space", len);
	buf->used += len;
	buf->data[buf->used] = '\0';
}

int buffer_append(struct buffer *buf, const void *data, size_t len)
{
	unsigned char *dest = buffer_reserve(buf, len);

	if (dest == NULL)
		return -1;
	if (len > 0)
		memcpy(dest, data, len);
	buffer_commit(buf, len);
	return 0;
}

int buffer_append_str(struct buffer *buf, const char *str)
{
	return buffer_append(buf, str, strlen(str));
}

int buffer_append_byte(struct buffer *buf, unsigned char byte)
{
	return buffer_append(buf, &byte, 1);
}

int buffer_vprintf(struct buffer *buf, const char *fmt, va_list args)
{
	va_list copy;
	unsigned char *dest;
	int len;

	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		log_panic("buffer_vprintf: bad format '%s'", fmt);
	dest = buffer_reserve(buf, (size_t)len);
	if (dest == NULL)
		return -1;
	vsnprintf((char *)dest, (size_t)len + 1, fmt, args);
	buffer_commit(buf, (size_t)len);
	return 0;
}

int buffer_printf(struct buffer *buf, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = buffer_vprintf(buf, fmt, args);
	va_end(args);
	return ret;
}

void buffer_consume(struct buffer *buf, size_t len)
{
	if (len > buf->used)
		log_panic("buffer_consume: %zu > %zu used", len, buf->used);
	if (len == 0)
		return;
	memmove(buf->data, buf->data + len, buf->used - len);
	buf->used -= len;
	buf->data[buf->used] = '\0';
}

void buffer_truncate(struct buffer *buf, size_t len)
{
	if (len > buf->used)
		log_panic("buffer_truncate: %zu > %zu used", len, buf->used);
	buf->used = len;
	if (buf->data != NULL)
		buf->data[len] = '\0';
}

void buffer_reset(struct buffer *buf)
{
	buffer_truncate(buf, 0);
}

const char *buffer_cstr(const struct buffer *buf)
{
	return buf->data == NULL ? "" : (const char *)buf->data;
}

char *buffer_export(struct buffer *buf, size_t *len_r)
{
	char *data;

	if (buf->data == NULL)
		buffer_grow(buf, 0);
	data = (char *)buf->data;
	data[buf->used] = '\0';
	if (len_r != NULL)
		*len_r = buf->used;
	buf->data = NULL;
	buf->used = buf->alloc = 0;
	return data;
}

void buffer_import(struct buffer *buf, void *data, size_t len, size_t alloc)
{
	if (alloc <= len)
		log_panic("buffer_import: alloc %zu must exceed len %zu", alloc, len);
	free(buf->data);
	buf->data = data;
	buf->used = len;
	buf->alloc = alloc;
	buf->data[len] = '\0';
}
