/*
 * str.c - small string helpers.
 */
#include "lib/lib.h"
#include "str.h"

#include <ctype.h>

bool str_begins_with(const char *str, const char *prefix)
{
	return strncmp(str, prefix, strlen(prefix)) == 0;
}

bool str_begins_with_icase(const char *str, const char *prefix)
{
	return strncasecmp(str, prefix, strlen(prefix)) == 0;
}

char *str_trim(char *str)
{
	size_t len;

	while (*str == ' ' || *str == '\t' || *str == '\r' || *str == '\n')
		str++;
	len = strlen(str);
	while (len > 0 && (str[len - 1] == ' ' || str[len - 1] == '\t' ||
			   str[len - 1] == '\r' || str[len - 1] == '\n'))
		str[--len] = '\0';
	return str;
}

char *str_lcase(char *str)
{
	for (char *p = str; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return str;
}

/* str_parse_digits - parse leading digits; *end_r gets the first non-digit */
static int str_parse_digits(const char *str, uint64_t *num_r, const char **end_r)
{
	uint64_t num = 0;
	const char *p = str;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (__builtin_mul_overflow(num, 10, &num) ||
		    __builtin_add_overflow(num, (uint64_t)(*p - '0'), &num))
			return -1;
	}
	*num_r = num;
	*end_r = p;
	return 0;
}

int str_to_uint64(const char *str, uint64_t *num_r)
{
	const char *end;

	if (str_parse_digits(str, num_r, &end) < 0 || *end != '\0')
		return -1;
	return 0;
}

int str_to_uint(const char *str, unsigned int *num_r)
{
	uint64_t num;

	if (str_to_uint64(str, &num) < 0 || num > UINT32_MAX)
		return -1;
	*num_r = (unsigned int)num;
	return 0;
}

/* str_parse_scaled - number followed by a unit from a table */
struct str_unit {
	const char *name;
	uint64_t scale;
};

static int str_parse_scaled(const char *str, const struct str_unit *units,
			    size_t unit_count, uint64_t default_scale,
			    uint64_t *value_r)
{
	uint64_t num, scale = 0;
	const char *end;

	if (str_parse_digits(str, &num, &end) < 0)
		return -1;
	while (*end == ' ')
		end++;
	if (*end == '\0') {
		scale = default_scale;
	} else {
		for (size_t i = 0; i < unit_count; i++) {
			if (strcmp(end, units[i].name) == 0) {
				scale = units[i].scale;
				break;
			}
		}
		if (scale == 0)
			return -1;
	}
	if (__builtin_mul_overflow(num, scale, value_r))
		return -1;
	return 0;
}

int str_parse_size(const char *str, uint64_t *bytes_r)
{
	static const struct str_unit units[] = {
		{ "B", 1 }, { "k", 1024 }, { "K", 1024 }, { "kB", 1024 },
		{ "KB", 1024 }, { "M", 1024 * 1024 }, { "MB", 1024 * 1024 },
		{ "G", 1024ULL * 1024 * 1024 }, { "GB", 1024ULL * 1024 * 1024 },
		{ "T", 1024ULL * 1024 * 1024 * 1024 },
		{ "TB", 1024ULL * 1024 * 1024 * 1024 },
	};
	return str_parse_scaled(str, units, N_ELEMENTS(units), 1, bytes_r);
}

int str_parse_duration_msecs(const char *str, uint64_t *msecs_r)
{
	static const struct str_unit units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "sec", 1000 }, { "secs", 1000 },
		{ "m", 60 * 1000 }, { "min", 60 * 1000 }, { "mins", 60 * 1000 },
		{ "h", 3600 * 1000 }, { "d", 86400 * 1000ULL },
		{ "w", 7 * 86400 * 1000ULL },
	};
	return str_parse_scaled(str, units, N_ELEMENTS(units), 1000, msecs_r);
}

void str_array_init(struct str_array *arr)
{
	memset(arr, 0, sizeof(*arr));
}

void str_array_add_owned(struct str_array *arr, char *str)
{
	if (arr->count + 2 > arr->alloc) {
		arr->alloc = arr->alloc < 8 ? 8 : arr->alloc * 2;
		arr->items = mem_realloc(arr->items, arr->alloc * sizeof(char *));
	}
	arr->items[arr->count++] = str;
	arr->items[arr->count] = NULL;
}

void str_array_add(struct str_array *arr, const char *str)
{
	str_array_add_owned(arr, mem_strdup(str));
}

bool str_array_contains(const struct str_array *arr, const char *str)
{
	for (size_t i = 0; i < arr->count; i++) {
		if (strcmp(arr->items[i], str) == 0)
			return true;
	}
	return false;
}

void str_array_clear(struct str_array *arr)
{
	for (size_t i = 0; i < arr->count; i++)
		free(arr->items[i]);
	free(arr->items);
	str_array_init(arr);
}

void str_split_words(const char *str, struct str_array *arr)
{
	const char *p = str;

	for (;;) {
		size_t len;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		len = strcspn(p, " \t,");
		str_array_add_owned(arr, mem_strndup(p, len));
		p += len;
	}
}
