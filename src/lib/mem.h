#ifndef CM_MEM_H
#define CM_MEM_H
/*
 * mem - allocation that succeeds or terminates.
 *
 * Every function here either returns usable memory or logs a fatal error
 * and exits (out of memory is a broken environment, not a condition callers
 * can handle). None of them ever returns NULL, so callers never check.
 */
#include <stddef.h>

/* Allocate size bytes, zero-filled. size 0 is allowed. */
void *mem_zalloc(size_t size);
/* Allocate nmemb * size bytes, zero-filled; overflow of the product is fatal. */
void *mem_calloc(size_t nmemb, size_t size);
/* Resize ptr (may be NULL); new bytes are not initialised. */
void *mem_realloc(void *ptr, size_t size);
/* Duplicate a NUL-terminated string; NULL stays NULL. */
char *mem_strdup(const char *str);
/* Duplicate at most len bytes of str and NUL-terminate. */
char *mem_strndup(const char *str, size_t len);
/* Duplicate len bytes of binary data. */
void *mem_dup(const void *data, size_t len);
/* printf into a fresh allocation. */
char *mem_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *mem_vprintf(const char *fmt, va_list args) __attribute__((format(printf, 1, 0)));

/* Free *ptr and set it to NULL (the _destroy(&p) convention). */
#define MEM_FREE(pptr) do { free(*(pptr)); *(pptr) = NULL; } while (0)

#include <stdlib.h>
#include <stdarg.h>
#endif
