#ifndef CM_CONFIG_H
#define CM_CONFIG_H
/*
 * config - a schema-driven parser for "key = value" configuration files
 * with "[node NAME]" override sections. It knows the syntax, nothing about
 * what the keys mean: a caller (settings.c for clustermail.conf) passes a
 * table of struct config_key and an object the values are parsed into.
 *
 * Syntax, line by line:
 *
 *   # a comment (leading white space allowed)
 *   key = value            # an inline comment starts with space/tab + '#'
 *   key = "quoted # value"  # \" and \\ are the only escapes in quotes
 *   key =                  (an empty value; what it means is the key's
 *                           business, usually "off" or "none")
 *   [node NAME]            NAME: letters, digits, '-', '_', '.', starting
 *                           with a letter or digit, at most 64 bytes
 *
 * Keys before the first section header are global; keys after a header
 * belong to that node's section and override the global value for that
 * node only. Lines are at most CONFIG_LINE_MAX bytes, files at most
 * CONFIG_FILE_MAX bytes; control characters other than tab are refused.
 *
 * Reading is two steps so that a syntax error is reported before any value
 * is interpreted: config_file_read() checks syntax, key names (an unknown
 * key gets a "did you mean" suggestion) and duplicates; config_file_apply()
 * then runs each key's parse function. Every error message has the form
 * "FILE:LINE: reason" (or "FILE: reason" when no line is involved) and is
 * allocated; the caller frees it.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_LINE_MAX 8192			/* bytes, without the newline */
#define CONFIG_FILE_MAX (1024 * 1024)		/* bytes */
#define CONFIG_NODE_NAME_MAX 64			/* bytes */

struct config_key;
struct config_file;

/* Parse value (already unquoted; "" for an empty value) for key and store
   the result in the object dest passed to config_file_apply(), usually at
   key->offset. A later value for the same key replaces an earlier one, so
   the function must free what it replaces. Returns 0, or -1 with
   *error_r set to an allocated reason without file, line or key name
   ("'foo' is not one of dlm, fcntl, local"). */
typedef int config_parse_fn(const struct config_key *key, const char *value,
			    void *dest, char **error_r);

/* One key of a schema. Tables are arrays of these, usually static const. */
struct config_key {
	const char *name;	/* lowercase: letters, digits, '_' */
	config_parse_fn *parse;
	size_t offset;		/* where in dest the value lives */
	const void *context;	/* extra data for parse, e.g. a name table */
};

/* context of config_parse_enum: a table ending with { NULL, 0 }. The field
   at offset is an enum (stored as int). */
struct config_enum_name {
	const char *name;
	int value;
};

/* context of config_parse_uint: inclusive bounds. Field: unsigned int. */
struct config_uint_range {
	unsigned int min, max;
};

/* Generic parse functions for the common field types. */
/* char * field (owned, freed on replacement); "" stores NULL. */
int config_parse_string(const struct config_key *key, const char *value,
			void *dest, char **error_r);
/* enum field; context is a struct config_enum_name table. */
int config_parse_enum(const struct config_key *key, const char *value,
		      void *dest, char **error_r);
/* unsigned int field; context is a struct config_uint_range (NULL: any). */
int config_parse_uint(const struct config_key *key, const char *value,
		      void *dest, char **error_r);
/* uint64_t field in milliseconds (str_parse_duration_msecs syntax);
   context is NULL or a uint64_t maximum in milliseconds. */
int config_parse_duration(const struct config_key *key, const char *value,
			  void *dest, char **error_r);

/* Read and syntax-check path against the schema keys[0..key_count-1].
   Returns 0 with *file_r set (free with config_file_free), or -1 with
   *error_r set. A missing or unreadable file is an error naming the path
   and the reason (strerror). */
int config_file_read(const char *path, const struct config_key *keys,
		     size_t key_count, struct config_file **file_r,
		     char **error_r);
/* Like config_file_read(), but parse text[0..len-1]; name is used as FILE
   in error messages. */
int config_file_parse(const char *name, const char *text, size_t len,
		      const struct config_key *keys, size_t key_count,
		      struct config_file **file_r, char **error_r);
void config_file_free(struct config_file **file);

/* The file's name as given to config_file_read() (borrowed). */
const char *config_file_path(const struct config_file *file);
/* The [node NAME] sections, in file order: how many, and the name of
   number idx (borrowed). */
size_t config_file_node_count(const struct config_file *file);
const char *config_file_node_name(const struct config_file *file, size_t idx);
/* Does the file have a section for node? */
bool config_file_has_node(const struct config_file *file, const char *node);

/* Run the parse function of every global key into dest, then those of
   node's section (if node is non-NULL and has one), so that section values
   override global ones. Stops at the first failure: returns -1 with
   *error_r = "FILE:LINE: key: reason". Returns 0 on success. */
int config_file_apply(const struct config_file *file, const char *node,
		      void *dest, char **error_r);
/* Line that gives key its value for node: the node's section if it sets
   key, else the global part; 0 if neither does (a default). node NULL
   looks at the global part only. */
unsigned int config_file_key_line(const struct config_file *file,
				  const char *node, const char *key);

/* Is name a valid node name (charset and length as for [node NAME])? */
bool config_node_name_is_valid(const char *name);

#endif
