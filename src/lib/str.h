#ifndef CM_STR_H
#define CM_STR_H
/*
 * str - small string helpers: strict number/size/duration parsing,
 * trimming, and a growable array of owned strings.
 *
 * Parsers return 0 on success and -1 on any malformed input (including
 * trailing garbage, signs, overflow); they never accept partial input.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does str begin with prefix? */
bool str_begins_with(const char *str, const char *prefix);
/* Case-insensitive (ASCII) variant. */
bool str_begins_with_icase(const char *str, const char *prefix);
/* Trim ASCII white space in place; returns the first non-space char. */
char *str_trim(char *str);
/* Lowercase ASCII letters in place; returns str. */
char *str_lcase(char *str);

/* Decimal unsigned integer, digits only. */
int str_to_uint64(const char *str, uint64_t *num_r);
int str_to_uint(const char *str, unsigned int *num_r);
/* Size with optional suffix: B, k/K (1024), M, G, T. "10M" = 10485760. */
int str_parse_size(const char *str, uint64_t *bytes_r);
/* Duration with a unit: ms, s, m, h, d, w ("30s", "15m", "5d"); a bare
   number means seconds. Result in milliseconds. */
int str_parse_duration_msecs(const char *str, uint64_t *msecs_r);

/* Growable array of owned, NUL-terminated strings; items[count] == NULL. */
struct str_array {
	char **items;		/* owned, each item owned */
	size_t count;
	size_t alloc;
};
void str_array_init(struct str_array *arr);
/* Append a copy of str. */
void str_array_add(struct str_array *arr, const char *str);
/* Append str itself; the array takes ownership. */
void str_array_add_owned(struct str_array *arr, char *str);
bool str_array_contains(const struct str_array *arr, const char *str);
/* Free every item and the array storage; arr stays usable (empty). */
void str_array_clear(struct str_array *arr);
/* Split on white space and commas, skipping empty words; appends to arr. */
void str_split_words(const char *str, struct str_array *arr);

#endif
