/*
 * mem.c - allocation that succeeds or terminates.
 */
#include "lib/lib.h"

#include <stdio.h>
#include <stdlib.h>

/* mem_out_of_memory - log and exit; never returns */
static void ATTR_NORETURN mem_out_of_memory(size_t size)
{
	log_fatal("out of memory allocating %zu bytes", size);
}

void *mem_zalloc(size_t size)
{
	void *ptr = calloc(1, size == 0 ? 1 : size);

	if (unlikely(ptr == NULL))
		mem_out_of_memory(size);
	return ptr;
}

void *mem_calloc(size_t nmemb, size_t size)
{
	size_t total;

	if (__builtin_mul_overflow(nmemb, size, &total))
		log_panic("mem_calloc: %zu * %zu overflows", nmemb, size);
	return mem_zalloc(total);
}

void *mem_realloc(void *ptr, size_t size)
{
	void *new_ptr = realloc(ptr, size == 0 ? 1 : size);

	if (unlikely(new_ptr == NULL))
		mem_out_of_memory(size);
	return new_ptr;
}

char *mem_strdup(const char *str)
{
	if (str == NULL)
		return NULL;
	return mem_dup(str, strlen(str) + 1);
}

char *mem_strndup(const char *str, size_t len)
{
	size_t n = strnlen(str, len);
	char *copy = mem_realloc(NULL, n + 1);

	memcpy(copy, str, n);
	copy[n] = '\0';
	return copy;
}

void *mem_dup(const void *data, size_t len)
{
	void *copy = mem_realloc(NULL, len);

	if (len > 0)
		memcpy(copy, data, len);
	return copy;
}

char *mem_vprintf(const char *fmt, va_list args)
{
	va_list copy;
	int len;
	char *out;

	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		log_panic("mem_vprintf: bad format '%s'", fmt);
	out = mem_realloc(NULL, (size_t)len + 1);
	vsnprintf(out, (size_t)len + 1, fmt, args);
	return out;
}

char *mem_printf(const char *fmt, ...)
{
	va_list args;
	char *out;

	va_start(args, fmt);
	out = mem_vprintf(fmt, args);
	va_end(args);
	return out;
}
