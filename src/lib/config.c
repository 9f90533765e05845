/*
 * config.c - schema-driven parser for "key = value" files with [node NAME]
 * sections.
 *
 * The whole file is read into memory (it is capped at CONFIG_FILE_MAX) and
 * split into sections of entries. Entries keep the raw, unquoted value and
 * the line number, so values are interpreted later by config_file_apply()
 * and every error can still point at its line. Nothing here knows what a
 * key means: that is the schema's parse functions' job.
 */
#include "lib/lib.h"
#include "buffer.h"
#include "config.h"
#include "str.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Keys longer than this get no "did you mean" suggestion: the edit
   distance is computed with a row of this many cells. */
#define CONFIG_SUGGEST_KEY_MAX 64
#define CONFIG_SUGGEST_DISTANCE 2

struct config_entry {
	const struct config_key *key;	/* borrowed from the schema */
	char *value;			/* owned, unquoted */
	unsigned int line;
};

struct config_section {
	char *name;			/* owned; NULL for the global part */
	unsigned int line;		/* of the header; 0 for the global part */
	struct config_entry *entries;	/* owned array */
	size_t count, alloc;
};

struct config_file {
	char *path;			/* owned */
	const struct config_key *keys;	/* borrowed schema */
	size_t key_count;
	struct config_section *sections; /* owned; [0] is the global part */
	size_t count, alloc;
};

/* config_error - allocate "FILE:LINE: reason" */
static char *config_error(const struct config_file *file, unsigned int line,
			  const char *fmt, ...) ATTR_FORMAT(3, 4);
static char *config_error(const struct config_file *file, unsigned int line,
			  const char *fmt, ...)
{
	va_list args;
	char *reason, *msg;

	va_start(args, fmt);
	reason = mem_vprintf(fmt, args);
	va_end(args);
	msg = mem_printf("%s:%u: %s", file->path, line, reason);
	free(reason);
	return msg;
}

/* config_is_space - the white space of the syntax (newlines are gone) */
static bool config_is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* config_is_name_char - characters of key and node names */
static bool config_is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

bool config_node_name_is_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > CONFIG_NODE_NAME_MAX)
		return false;
	/* Node names end up in file names via %n: no leading '.' or '-'. */
	if (!((name[0] >= 'a' && name[0] <= 'z') ||
	      (name[0] >= 'A' && name[0] <= 'Z') ||
	      (name[0] >= '0' && name[0] <= '9')))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!config_is_name_char(name[i]))
			return false;
	}
	return true;
}

/* config_section_add - start a new section (name NULL = global) */
static struct config_section *
config_section_add(struct config_file *file, const char *name,
		   unsigned int line)
{
	struct config_section *section;

	if (file->count == file->alloc) {
		file->alloc = file->alloc == 0 ? 4 : file->alloc * 2;
		file->sections = mem_realloc(file->sections,
					     file->alloc * sizeof(*section));
	}
	section = &file->sections[file->count++];
	memset(section, 0, sizeof(*section));
	section->name = mem_strdup(name);
	section->line = line;
	return section;
}

/* config_section_find - the section for node (NULL = global), or NULL */
static const struct config_section *
config_section_find(const struct config_file *file, const char *node)
{
	if (node == NULL)
		return &file->sections[0];
	for (size_t i = 1; i < file->count; i++) {
		if (strcmp(file->sections[i].name, node) == 0)
			return &file->sections[i];
	}
	return NULL;
}

/* config_entry_find - the entry for key in section, or NULL */
static const struct config_entry *
config_entry_find(const struct config_section *section, const char *key)
{
	for (size_t i = 0; i < section->count; i++) {
		if (strcmp(section->entries[i].key->name, key) == 0)
			return &section->entries[i];
	}
	return NULL;
}

/* config_lower - ASCII lowercase of one character */
static char config_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* config_edit_distance - Levenshtein distance, ASCII case-insensitive;
   both strings at most CONFIG_SUGGEST_KEY_MAX bytes */
static size_t config_edit_distance(const char *a, const char *b)
{
	size_t row[CONFIG_SUGGEST_KEY_MAX + 1];
	size_t a_len = strlen(a), b_len = strlen(b);

	for (size_t j = 0; j <= b_len; j++)
		row[j] = j;
	for (size_t i = 1; i <= a_len; i++) {
		size_t diagonal = row[0];

		row[0] = i;
		for (size_t j = 1; j <= b_len; j++) {
			size_t above = row[j];
			size_t cost = config_lower(a[i - 1]) ==
				config_lower(b[j - 1]) ? 0 : 1;
			size_t best = diagonal + cost;

			if (above + 1 < best)
				best = above + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diagonal = above;
		}
	}
	return row[b_len];
}

/* config_suggest_key - the closest schema key within the suggestion
   distance, or NULL */
static const char *config_suggest_key(const struct config_file *file,
				      const char *name)
{
	const char *best = NULL;
	size_t best_distance = CONFIG_SUGGEST_DISTANCE + 1;

	if (strlen(name) > CONFIG_SUGGEST_KEY_MAX)
		return NULL;
	for (size_t i = 0; i < file->key_count; i++) {
		const char *candidate = file->keys[i].name;
		size_t distance;

		if (strlen(candidate) > CONFIG_SUGGEST_KEY_MAX)
			continue;
		distance = config_edit_distance(name, candidate);
		if (distance < best_distance) {
			best = candidate;
			best_distance = distance;
		}
	}
	return best;
}

/* config_lookup_key - the schema entry for name, or NULL */
static const struct config_key *
config_lookup_key(const struct config_file *file, const char *name)
{
	for (size_t i = 0; i < file->key_count; i++) {
		if (strcmp(file->keys[i].name, name) == 0)
			return &file->keys[i];
	}
	return NULL;
}

/* config_add_entry - record key = value in the current section; refuses
   unknown keys and keys the section already set */
static int config_add_entry(struct config_file *file, const char *name,
			    char *value, unsigned int line, char **error_r)
{
	struct config_section *section = &file->sections[file->count - 1];
	const struct config_key *key = config_lookup_key(file, name);
	const struct config_entry *previous;
	const char *suggestion;

	if (key == NULL) {
		suggestion = config_suggest_key(file, name);
		*error_r = suggestion == NULL ?
			config_error(file, line, "unknown key '%s'", name) :
			config_error(file, line, "unknown key '%s' (did you mean '%s'?)",
				     name, suggestion);
		free(value);
		return -1;
	}
	previous = config_entry_find(section, name);
	if (previous != NULL) {
		*error_r = config_error(file, line, "duplicate key '%s' "
					"(already set at line %u in this section)",
					name, previous->line);
		free(value);
		return -1;
	}
	if (section->count == section->alloc) {
		section->alloc = section->alloc == 0 ? 16 : section->alloc * 2;
		section->entries = mem_realloc(section->entries,
			section->alloc * sizeof(*section->entries));
	}
	section->entries[section->count++] = (struct config_entry){
		.key = key, .value = value, .line = line };
	return 0;
}

/* config_add_section - start the section of a node name from a header */
static int config_add_section(struct config_file *file, const char *name,
			      size_t len, unsigned int line, char **error_r)
{
	const struct config_section *previous;
	char *node = mem_strndup(name, len);
	int ret = -1;

	previous = config_section_find(file, node);
	if (!config_node_name_is_valid(node)) {
		*error_r = config_error(file, line, "invalid node name '%s' (1-%d "
					"letters, digits, '-', '_', '.'; starting with "
					"a letter or digit)", node, CONFIG_NODE_NAME_MAX);
	} else if (previous != NULL) {
		*error_r = config_error(file, line, "section [node %s] already "
					"started at line %u", node, previous->line);
	} else {
		config_section_add(file, node, line);
		ret = 0;
	}
	free(node);
	return ret;
}

/* config_parse_header - "[node NAME]" (p points at '['); a comment may
   follow the closing bracket */
static int config_parse_header(struct config_file *file, const char *p,
			       unsigned int line, char **error_r)
{
	const char *word, *name, *name_end;

	for (p++; config_is_space(*p); p++) ;
	for (word = p; config_is_name_char(*p); p++) ;
	if (p - word != 4 || strncmp(word, "node", 4) != 0) {
		*error_r = config_error(file, line, "unknown section header "
					"(the only section is '[node NAME]')");
		return -1;
	}
	for (; config_is_space(*p); p++) ;
	for (name = p; config_is_name_char(*p); p++) ;
	for (name_end = p; config_is_space(*p); p++) ;
	if (*p == '\0') {
		*error_r = config_error(file, line, "missing ']' in section header");
		return -1;
	}
	if (*p != ']') {
		/* Bytes outside ASCII are shown as numbers, not half a
		   UTF-8 sequence. */
		*error_r = p != name_end ?
			config_error(file, line, "unexpected text after node name") :
			(unsigned char)*p < 0x80 ?
			config_error(file, line, "invalid character '%c' in node name "
				     "(allowed: letters, digits, '-', '_', '.')", *p) :
			config_error(file, line, "invalid byte 0x%02x in node name "
				     "(allowed: letters, digits, '-', '_', '.')",
				     (unsigned char)*p);
		return -1;
	}
	for (p++; config_is_space(*p); p++) ;
	if (*p != '\0' && *p != '#') {
		*error_r = config_error(file, line, "unexpected text after ']'");
		return -1;
	}
	return config_add_section(file, name, (size_t)(name_end - name),
				  line, error_r);
}

/* config_parse_quoted - the value after an opening quote at p; only
   white space and a comment may follow the closing quote */
static int config_parse_quoted(const struct config_file *file, const char *p,
			       unsigned int line, char **value_r,
			       char **error_r)
{
	struct buffer value;

	buffer_init(&value, 0);
	for (p++; *p != '"'; p++) {
		if (*p == '\0') {
			*error_r = config_error(file, line, "unterminated quoted value");
			buffer_clear(&value);
			return -1;
		}
		if (*p == '\\') {
			p++;
			if (*p != '"' && *p != '\\') {
				*error_r = config_error(file, line, "invalid escape "
							"in quoted value (only \\\" "
							"and \\\\ are allowed)");
				buffer_clear(&value);
				return -1;
			}
		}
		buffer_append_byte(&value, (unsigned char)*p);
	}
	for (p++; config_is_space(*p); p++) ;
	if (*p != '\0' && *p != '#') {
		*error_r = config_error(file, line, "unexpected text after the "
					"closing quote");
		buffer_clear(&value);
		return -1;
	}
	*value_r = buffer_export(&value, NULL);
	return 0;
}

/* config_parse_bare - an unquoted value: up to an inline comment (white
   space followed by '#'), trailing white space removed */
static char *config_parse_bare(const char *p)
{
	size_t len = 0;

	while (p[len] != '\0') {
		if (config_is_space(p[len]) && p[len + 1] == '#')
			break;
		len++;
	}
	while (len > 0 && config_is_space(p[len - 1]))
		len--;
	return mem_strndup(p, len);
}

/* config_parse_assignment - "key = value" starting at p */
static int config_parse_assignment(struct config_file *file, const char *p,
				   unsigned int line, char **error_r)
{
	const char *name = p;
	char *key, *value;
	int ret;

	while (config_is_name_char(*p))
		p++;
	if (p == name) {
		*error_r = config_error(file, line, "expected 'key = value'");
		return -1;
	}
	key = mem_strndup(name, (size_t)(p - name));
	if (*p != '=' && *p != '\0' && !config_is_space(*p)) {
		*error_r = config_error(file, line, "invalid character in key "
					"after '%s' (keys are letters, digits and '_')",
					key);
		free(key);
		return -1;
	}
	for (; config_is_space(*p); p++) ;
	if (*p != '=') {
		*error_r = config_error(file, line, "missing '=' after '%s'", key);
		free(key);
		return -1;
	}
	for (p++; config_is_space(*p); p++) ;
	if (*p == '"') {
		if (config_parse_quoted(file, p, line, &value, error_r) < 0) {
			free(key);
			return -1;
		}
	} else {
		value = config_parse_bare(p);
	}
	ret = config_add_entry(file, key, value, line, error_r);
	free(key);
	return ret;
}

/* config_check_chars - refuse control characters (they would end up in
   paths and log lines); tab is white space */
static int config_check_chars(const struct config_file *file,
			      const char *line, size_t len,
			      unsigned int line_num, char **error_r)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			*error_r = c == '\0' ?
				config_error(file, line_num, "NUL byte in line") :
				config_error(file, line_num, "control character "
					     "0x%02x in line", c);
			return -1;
		}
	}
	return 0;
}

/* config_parse_line - one line without its newline (and CR) */
static int config_parse_line(struct config_file *file, const char *line,
			     size_t len, unsigned int line_num, char **error_r)
{
	char *copy;
	const char *p;
	int ret = 0;

	if (len > CONFIG_LINE_MAX) {
		*error_r = config_error(file, line_num, "line too long "
					"(more than %d bytes)", CONFIG_LINE_MAX);
		return -1;
	}
	if (config_check_chars(file, line, len, line_num, error_r) < 0)
		return -1;
	copy = mem_strndup(line, len);
	for (p = copy; config_is_space(*p); p++) ;
	if (*p == '[')
		ret = config_parse_header(file, p, line_num, error_r);
	else if (*p != '\0' && *p != '#')
		ret = config_parse_assignment(file, p, line_num, error_r);
	free(copy);
	return ret;
}

/* config_parse_lines - split text into lines and parse each */
static int config_parse_lines(struct config_file *file, const char *text,
			      size_t len, char **error_r)
{
	unsigned int line_num = 0;
	size_t pos = 0;

	/* An editor's UTF-8 byte order mark is not part of the first key. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		pos = 3;
	while (pos < len) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t line_len = nl != NULL ? (size_t)(nl - line) : len - pos;

		pos += line_len + (nl != NULL ? 1 : 0);
		line_num++;
		if (line_len > 0 && line[line_len - 1] == '\r')
			line_len--;
		if (config_parse_line(file, line, line_len, line_num, error_r) < 0)
			return -1;
	}
	return 0;
}

int config_file_parse(const char *name, const char *text, size_t len,
		      const struct config_key *keys, size_t key_count,
		      struct config_file **file_r, char **error_r)
{
	struct config_file *file = mem_zalloc(sizeof(*file));

	file->path = mem_strdup(name);
	file->keys = keys;
	file->key_count = key_count;
	config_section_add(file, NULL, 0);
	if (len > CONFIG_FILE_MAX) {
		*error_r = mem_printf("%s: file too large (more than %d bytes)",
				      name, CONFIG_FILE_MAX);
		config_file_free(&file);
		return -1;
	}
	if (config_parse_lines(file, text, len, error_r) < 0) {
		config_file_free(&file);
		return -1;
	}
	*file_r = file;
	return 0;
}

/* config_read_fd - read at most CONFIG_FILE_MAX + 1 bytes into out, so
   that an oversized file is detected without reading all of it */
static int config_read_fd(int fd, struct buffer *out)
{
	for (;;) {
		unsigned char *dest = buffer_reserve(out, 65536);
		ssize_t ret;

		if (dest == NULL)
			return 0;	/* at the cap: the parser reports the size */
		ret = read(fd, dest, 65536);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -1;
		if (ret == 0)
			return 0;
		buffer_commit(out, (size_t)ret);
	}
}

int config_file_read(const char *path, const struct config_key *keys,
		     size_t key_count, struct config_file **file_r,
		     char **error_r)
{
	struct buffer text;
	struct stat st;
	int fd, ret;

	/* O_NONBLOCK: opening a FIFO by mistake must not hang the daemon. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		*error_r = mem_printf("%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*error_r = mem_printf("%s: fstat: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = mem_printf("%s: not a regular file", path);
		close(fd);
		return -1;
	}
	/* Cap + 65536 so a file just past the cap still reads past it. */
	buffer_init(&text, CONFIG_FILE_MAX + 65536);
	if (config_read_fd(fd, &text) < 0) {
		*error_r = mem_printf("%s: read: %s", path, strerror(errno));
		buffer_clear(&text);
		close(fd);
		return -1;
	}
	close(fd);
	ret = config_file_parse(path, buffer_cstr(&text), text.used, keys,
				key_count, file_r, error_r);
	buffer_clear(&text);
	return ret;
}

void config_file_free(struct config_file **filep)
{
	struct config_file *file = *filep;

	if (file == NULL)
		return;
	for (size_t i = 0; i < file->count; i++) {
		struct config_section *section = &file->sections[i];

		for (size_t j = 0; j < section->count; j++)
			free(section->entries[j].value);
		free(section->entries);
		free(section->name);
	}
	free(file->sections);
	free(file->path);
	free(file);
	*filep = NULL;
}

const char *config_file_path(const struct config_file *file)
{
	return file->path;
}

size_t config_file_node_count(const struct config_file *file)
{
	return file->count - 1;
}

const char *config_file_node_name(const struct config_file *file, size_t idx)
{
	if (idx + 1 >= file->count)
		log_panic("config_file_node_name: index %zu out of range", idx);
	return file->sections[idx + 1].name;
}

bool config_file_has_node(const struct config_file *file, const char *node)
{
	return node != NULL && config_section_find(file, node) != NULL;
}

/* config_section_apply - run the parse function of every entry */
static int config_section_apply(const struct config_file *file,
				const struct config_section *section,
				void *dest, char **error_r)
{
	for (size_t i = 0; i < section->count; i++) {
		const struct config_entry *entry = &section->entries[i];
		char *reason = NULL;

		if (entry->key->parse(entry->key, entry->value, dest, &reason) < 0) {
			*error_r = config_error(file, entry->line, "%s: %s",
						entry->key->name,
						reason != NULL ? reason : "invalid value");
			free(reason);
			return -1;
		}
	}
	return 0;
}

int config_file_apply(const struct config_file *file, const char *node,
		      void *dest, char **error_r)
{
	const struct config_section *section;

	if (config_section_apply(file, &file->sections[0], dest, error_r) < 0)
		return -1;
	section = node == NULL ? NULL : config_section_find(file, node);
	if (section != NULL &&
	    config_section_apply(file, section, dest, error_r) < 0)
		return -1;
	return 0;
}

unsigned int config_file_key_line(const struct config_file *file,
				  const char *node, const char *key)
{
	const struct config_section *section;
	const struct config_entry *entry;

	section = node == NULL ? NULL : config_section_find(file, node);
	if (section != NULL && (entry = config_entry_find(section, key)) != NULL)
		return entry->line;
	entry = config_entry_find(&file->sections[0], key);
	return entry != NULL ? entry->line : 0;
}

/* config_field - the field of dest at key->offset */
static void *config_field(const struct config_key *key, void *dest)
{
	return (char *)dest + key->offset;
}

int config_parse_string(const struct config_key *key, const char *value,
			void *dest, char **error_r)
{
	char **field = config_field(key, dest);

	free(*field);
	*field = value[0] == '\0' ? NULL : mem_strdup(value);
	return 0;
}

/* config_enum_names - "a, b, c" for an error message */
static char *config_enum_names(const struct config_enum_name *names)
{
	struct buffer list;

	buffer_init(&list, 0);
	for (size_t i = 0; names[i].name != NULL; i++)
		buffer_printf(&list, "%s%s", i == 0 ? "" : ", ", names[i].name);
	return buffer_export(&list, NULL);
}

int config_parse_enum(const struct config_key *key, const char *value,
		      void *dest, char **error_r)
{
	const struct config_enum_name *names = key->context;
	char *list;

	for (size_t i = 0; names[i].name != NULL; i++) {
		if (strcmp(names[i].name, value) == 0) {
			*(int *)config_field(key, dest) = names[i].value;
			return 0;
		}
	}
	list = config_enum_names(names);
	*error_r = mem_printf("'%s' is not one of %s", value, list);
	free(list);
	return -1;
}

int config_parse_uint(const struct config_key *key, const char *value,
		      void *dest, char **error_r)
{
	const struct config_uint_range *range = key->context;
	unsigned int num;

	if (str_to_uint(value, &num) < 0) {
		*error_r = mem_printf("'%s' is not a non-negative integer", value);
		return -1;
	}
	if (range != NULL && (num < range->min || num > range->max)) {
		*error_r = mem_printf("%u is out of range %u..%u", num,
				      range->min, range->max);
		return -1;
	}
	*(unsigned int *)config_field(key, dest) = num;
	return 0;
}

int config_parse_duration(const struct config_key *key, const char *value,
			  void *dest, char **error_r)
{
	const uint64_t *max_msecs = key->context;
	uint64_t msecs;

	if (str_parse_duration_msecs(value, &msecs) < 0) {
		*error_r = mem_printf("'%s' is not a duration (a number with a "
				      "unit: ms, s, m, h, d, w; e.g. 30s)", value);
		return -1;
	}
	if (max_msecs != NULL && msecs > *max_msecs) {
		*error_r = mem_printf("'%s' is longer than the maximum %" PRIu64 "s",
				      value, *max_msecs / 1000);
		return -1;
	}
	*(uint64_t *)config_field(key, dest) = msecs;
	return 0;
}
