/*
 * imap-parser.c - the IMAP argument tokenizer.
 *
 * Input is taken as "line parts": the bytes up to a CRLF. A part either
 * ends the command, or ends with a literal announcement ({N}, {N+}, ~{N})
 * whose N data bytes follow, after which the next part continues the same
 * command. Each part is collected whole (bounded by max_line_length for
 * all parts together) and then tokenized at once; the stack of open lists
 * carries over from part to part, so a list may contain literals.
 *
 * Memory: every string and every finished list lives in a per-command
 * arena (freed by imap_parser_reset()). A list's children are collected in
 * a growable array per nesting level and copied into the arena when the
 * list closes, so pointers handed out never move - except the top-level
 * array itself, which grows while a streaming command is read (callers of
 * the streaming API copy the struct; see imap-client.c).
 *
 * Bounds (DESIGN invariant 8): line bytes, literal bytes per literal and
 * per command, nesting depth, and the number of arguments. Every error is
 * reported with a text for the BAD reply; none of them is fatal by itself
 * (the caller decides how to skip the rest of the command).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "imap-parser.h"

#include <stdio.h>
#include <strings.h>

/* All literal bytes kept in memory for one command together. */
#define IMAP_PARSER_LITERAL_TOTAL_MAX (16 * IMAP_LITERAL_MEMORY_MAX)
/* LITERAL-: the largest non-synchronizing literal (RFC 7888). */
#define IMAP_PARSER_LITERAL_MINUS_MAX 4096
#define IMAP_PARSER_ARENA_BLOCK 4096

enum imap_parser_state {
	IMAP_PARSER_STATE_LINE,		/* collecting a line part */
	IMAP_PARSER_STATE_LITERAL_PENDING,	/* announced, not decided */
	IMAP_PARSER_STATE_LITERAL_DATA,	/* reading literal bytes */
	IMAP_PARSER_STATE_STREAM,	/* caller reads the literal */
	IMAP_PARSER_STATE_DONE,
	IMAP_PARSER_STATE_ERROR,
};

struct imap_parser_arena_block {
	struct imap_parser_arena_block *next;
	size_t used, size;
	unsigned char data[];
};

/* One nesting level: the children collected so far. */
struct imap_parser_level {
	struct imap_arg *args;		/* owned (heap), grown as needed */
	size_t count, alloc;
};

struct imap_parser {
	struct imap_parser_settings set;
	enum imap_parser_state state;
	struct buffer line;		/* the current line part */
	size_t line_total;		/* bytes of all parts so far */
	size_t literal_total;		/* literal bytes in memory so far */
	size_t arg_count;		/* all levels together */

	struct imap_parser_level levels[IMAP_LIST_DEPTH_MAX + 1];
	unsigned int depth;		/* 0 = top level */

	/* The announced literal. */
	struct imap_arg literal;
	unsigned char *literal_data;	/* arena; literal.literal_size + 1 */
	size_t literal_read;

	bool complete;			/* the final CRLF was seen */
	/* What of the command is still to come after an error (see
	   imap_parser_error_skip()). */
	bool error_in_line;
	uint64_t error_skip_literal;
	const char *error;
	char error_buf[128];
	struct imap_parser_arena_block *arena;
};

/* ---- accessors -------------------------------------------------------- */

bool imap_arg_get_atom(const struct imap_arg *arg, const char **atom_r)
{
	if (arg->type != IMAP_ARG_ATOM)
		return false;
	*atom_r = arg->str;
	return true;
}

bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r)
{
	if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING &&
	    arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	return true;
}

bool imap_arg_get_string(const struct imap_arg *arg, const char **str_r)
{
	if (arg->type != IMAP_ARG_STRING && arg->type != IMAP_ARG_LITERAL)
		return false;
	*str_r = arg->str;
	return true;
}

bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r)
{
	if (arg->type == IMAP_ARG_NIL) {
		*str_r = NULL;
		return true;
	}
	return imap_arg_get_string(arg, str_r);
}

bool imap_arg_get_list(const struct imap_arg *arg,
		       const struct imap_arg **list_r, size_t *count_r)
{
	if (arg->type != IMAP_ARG_LIST)
		return false;
	*list_r = arg->list;
	if (count_r != NULL)
		*count_r = arg->list_count;
	return true;
}

bool imap_arg_atom_equals(const struct imap_arg *arg, const char *name)
{
	return arg->type == IMAP_ARG_ATOM && strcasecmp(arg->str, name) == 0;
}

/* ---- arena ------------------------------------------------------------ */

/* parser_alloc - zeroed memory that lives until the next reset */
static void *parser_alloc(struct imap_parser *parser, size_t size)
{
	struct imap_parser_arena_block *block = parser->arena;
	void *mem;

	size = (size + 15) & ~(size_t)15;
	if (block == NULL || block->size - block->used < size) {
		size_t block_size = size > IMAP_PARSER_ARENA_BLOCK ?
			size : IMAP_PARSER_ARENA_BLOCK;

		block = mem_zalloc(sizeof(*block) + block_size);
		block->size = block_size;
		block->next = parser->arena;
		parser->arena = block;
	}
	mem = block->data + block->used;
	block->used += size;
	memset(mem, 0, size);
	return mem;
}

/* parser_strndup - a NUL-terminated arena copy */
static char *parser_strndup(struct imap_parser *parser, const char *str,
			    size_t len)
{
	char *copy = parser_alloc(parser, len + 1);

	memcpy(copy, str, len);
	copy[len] = '\0';
	return copy;
}

/* ---- life cycle ------------------------------------------------------- */

struct imap_parser *imap_parser_create(const struct imap_parser_settings *set)
{
	struct imap_parser *parser = mem_zalloc(sizeof(*parser));

	parser->set = *set;
	if (parser->set.max_literal_memory == 0)
		parser->set.max_literal_memory = IMAP_LITERAL_MEMORY_MAX;
	if (parser->set.max_line_length == 0)
		parser->set.max_line_length = 64 * 1024;
	buffer_init(&parser->line, 0);
	imap_parser_reset(parser);
	return parser;
}

void imap_parser_destroy(struct imap_parser **_parser)
{
	struct imap_parser *parser = *_parser;

	if (parser == NULL)
		return;
	*_parser = NULL;
	imap_parser_reset(parser);
	for (unsigned int i = 0; i <= IMAP_LIST_DEPTH_MAX; i++)
		free(parser->levels[i].args);
	buffer_clear(&parser->line);
	free(parser);
}

void imap_parser_reset(struct imap_parser *parser)
{
	while (parser->arena != NULL) {
		struct imap_parser_arena_block *next = parser->arena->next;

		free(parser->arena);
		parser->arena = next;
	}
	for (unsigned int i = 0; i <= IMAP_LIST_DEPTH_MAX; i++) {
		parser->levels[i].count = 0;
		/* keep a terminating EOL readable at all times */
		if (parser->levels[i].alloc > 0)
			memset(&parser->levels[i].args[0], 0,
			       sizeof(struct imap_arg));
	}
	/* Do not hold on to a huge line buffer from one long command. */
	if (parser->line.alloc > 16384)
		buffer_clear(&parser->line);
	buffer_reset(&parser->line);
	parser->depth = 0;
	parser->state = IMAP_PARSER_STATE_LINE;
	parser->line_total = 0;
	parser->literal_total = 0;
	parser->arg_count = 0;
	parser->literal_data = NULL;
	parser->literal_read = 0;
	memset(&parser->literal, 0, sizeof(parser->literal));
	parser->complete = false;
	parser->error_in_line = false;
	parser->error_skip_literal = 0;
	parser->error = NULL;
}

/* ---- building the argument tree --------------------------------------- */

/* parser_fail - remember the error; returns false for "return fail()" */
static bool parser_fail(struct imap_parser *parser, const char *error)
{
	parser->error = error;
	parser->state = IMAP_PARSER_STATE_ERROR;
	return false;
}

/* parser_add_arg - a new (zeroed) argument at the current level */
static struct imap_arg *parser_add_arg(struct imap_parser *parser)
{
	struct imap_parser_level *level = &parser->levels[parser->depth];
	struct imap_arg *arg;

	if (parser->arg_count >= IMAP_ARGS_MAX) {
		parser_fail(parser, "Too many arguments");
		return NULL;
	}
	/* +2: the new one and a terminating EOL */
	if (level->count + 2 > level->alloc) {
		size_t alloc = level->alloc < 8 ? 8 : level->alloc * 2;

		level->args = mem_realloc(level->args, alloc * sizeof(*arg));
		level->alloc = alloc;
	}
	parser->arg_count++;
	arg = &level->args[level->count++];
	memset(arg, 0, 2 * sizeof(*arg));	/* the arg and the EOL after it */
	return arg;
}

/* parser_list_open - '(' : one level deeper */
static bool parser_list_open(struct imap_parser *parser)
{
	if (parser->depth >= IMAP_LIST_DEPTH_MAX)
		return parser_fail(parser, "Lists nested too deeply");
	if (parser->arg_count >= IMAP_ARGS_MAX)
		return parser_fail(parser, "Too many arguments");
	parser->depth++;
	parser->levels[parser->depth].count = 0;
	return true;
}

/* parser_list_close - move the finished list into the arena */
static bool parser_list_close(struct imap_parser *parser)
{
	struct imap_parser_level *level;
	struct imap_arg *children, *arg;
	size_t count;

	if (parser->depth == 0)
		return parser_fail(parser, "Unexpected ')'");
	level = &parser->levels[parser->depth];
	count = level->count;
	children = parser_alloc(parser, (count + 1) * sizeof(*children));
	if (count > 0)
		memcpy(children, level->args, count * sizeof(*children));
	level->count = 0;
	parser->depth--;
	arg = parser_add_arg(parser);
	if (arg == NULL)
		return false;
	arg->type = IMAP_ARG_LIST;
	arg->list = children;
	arg->list_count = count;
	return true;
}

/* ---- tokenizer -------------------------------------------------------- */

static bool is_atom_end(unsigned char c)
{
	return c == ' ' || c == '(' || c == ')';
}

/* parser_quoted - "..." starting at p[0] == '"'; returns bytes used or 0 */
static size_t parser_quoted(struct imap_parser *parser, const unsigned char *p,
			    size_t len)
{
	struct imap_arg *arg;
	char *out = parser_alloc(parser, len);
	size_t i, n = 0;

	for (i = 1; i < len; i++) {
		if (p[i] == '"')
			break;
		if (p[i] == '\0') {
			parser_fail(parser, "NUL in quoted string");
			return 0;
		}
		if (p[i] == '\\') {
			if (i + 1 >= len || (p[i + 1] != '"' && p[i + 1] != '\\')) {
				parser_fail(parser, "Invalid escape in quoted string");
				return 0;
			}
			i++;
		}
		out[n++] = (char)p[i];
	}
	if (i >= len) {
		parser_fail(parser, "Unterminated quoted string");
		return 0;
	}
	out[n] = '\0';
	arg = parser_add_arg(parser);
	if (arg == NULL)
		return 0;
	arg->type = IMAP_ARG_STRING;
	arg->str = out;
	arg->len = n;
	return i + 1;
}

/* parser_section_end - skip a [...] section inside an atom (it may hold
   spaces, lists and quoted strings); returns the index after ']' or 0 */
static size_t parser_section_end(const unsigned char *p, size_t len, size_t i)
{
	unsigned int nesting = 0;
	bool quoted = false;

	for (i++; i < len; i++) {
		if (quoted) {
			if (p[i] == '\\' && i + 1 < len)
				i++;
			else if (p[i] == '"')
				quoted = false;
			continue;
		}
		if (p[i] == '"')
			quoted = true;
		else if (p[i] == '[')
			nesting++;
		else if (p[i] == ']') {
			if (nesting == 0)
				return i + 1;
			nesting--;
		}
	}
	return 0;
}

/* parser_atom - an atom (with [sections]) at p; returns bytes used or 0 */
static size_t parser_atom(struct imap_parser *parser, const unsigned char *p,
			  size_t len)
{
	struct imap_arg *arg;
	size_t i = 0;

	while (i < len && !is_atom_end(p[i])) {
		if (p[i] == '[') {
			size_t end = parser_section_end(p, len, i);

			if (end == 0) {
				parser_fail(parser, "Unterminated '['");
				return 0;
			}
			i = end;
			continue;
		}
		if (p[i] < 0x20 || p[i] == 0x7f) {
			parser_fail(parser, "Control character in atom");
			return 0;
		}
		if (p[i] >= 0x80) {
			parser_fail(parser, "8-bit character in atom");
			return 0;
		}
		if (p[i] == '"' || p[i] == '{') {
			parser_fail(parser, "Invalid character in atom");
			return 0;
		}
		i++;
	}
	arg = parser_add_arg(parser);
	if (arg == NULL)
		return 0;
	arg->str = parser_strndup(parser, (const char *)p, i);
	arg->len = i;
	arg->type = (i == 3 && strncasecmp((const char *)p, "NIL", 3) == 0) ?
		IMAP_ARG_NIL : IMAP_ARG_ATOM;
	return i;
}

/* parser_literal_marker - {N}, {N+}, ~{N} at p, which must end the part;
   returns true and fills parser->literal */
static bool parser_literal_marker(struct imap_parser *parser,
				  const unsigned char *p, size_t len)
{
	struct imap_arg *lit = &parser->literal;
	uint64_t size = 0;
	size_t i = 0, digits = 0;

	memset(lit, 0, sizeof(*lit));
	if (p[0] == '~') {
		lit->literal8 = true;
		i++;
		if (i >= len || p[i] != '{')
			return parser_fail(parser, "Invalid literal");
	}
	for (i++; i < len && p[i] >= '0' && p[i] <= '9'; i++, digits++) {
		if (size > (UINT64_MAX - 9) / 10)
			return parser_fail(parser, "Literal size too large");
		size = size * 10 + (uint64_t)(p[i] - '0');
	}
	lit->literal_sync = true;
	if (i < len && p[i] == '+') {
		lit->literal_sync = false;
		i++;
	}
	if (digits == 0 || digits > 19 || i >= len || p[i] != '}')
		return parser_fail(parser, "Invalid literal size");
	if (i + 1 != len)
		return parser_fail(parser, "Literal must end the line");
	lit->literal_size = size;
	lit->type = IMAP_ARG_LITERAL_STREAM;
	parser->state = IMAP_PARSER_STATE_LITERAL_PENDING;
	return true;
}

/* parser_tokenize - tokenize one complete line part (without CRLF) */
static bool parser_tokenize(struct imap_parser *parser, const unsigned char *p,
			    size_t len)
{
	size_t i = 0, used;

	while (i < len) {
		switch (p[i]) {
		case ' ':
			i++;
			continue;
		case '(':
			if (!parser_list_open(parser))
				return false;
			i++;
			continue;
		case ')':
			if (!parser_list_close(parser))
				return false;
			i++;
			continue;
		case '"':
			used = parser_quoted(parser, p + i, len - i);
			break;
		case '{':
		case '~':
			return parser_literal_marker(parser, p + i, len - i);
		default:
			used = parser_atom(parser, p + i, len - i);
			break;
		}
		if (used == 0)
			return false;
		i += used;
		/* Arguments are separated by spaces (or list brackets). */
		if (i < len && p[i] != ' ' && p[i] != ')' && p[i] != '(')
			return parser_fail(parser, "Missing space between arguments");
	}
	if (parser->depth > 0)
		return parser_fail(parser, "Unterminated list");
	parser->complete = true;
	parser->state = IMAP_PARSER_STATE_DONE;
	return true;
}

/* ---- feeding ---------------------------------------------------------- */

/* parser_in_utf8_item - the literal is the first thing in a list that
   follows a top-level atom UTF8: APPEND's "UTF8 (literal8)" of RFC 6855,
   whose message is streamed like a top-level one (the list then closes
   empty) */
static bool parser_in_utf8_item(const struct imap_parser *parser)
{
	const struct imap_parser_level *top = &parser->levels[0];
	const struct imap_arg *last;

	if (parser->depth != 1 || parser->levels[1].count != 0 || top->count == 0)
		return false;
	last = &top->args[top->count - 1];
	return last->type == IMAP_ARG_ATOM && strcasecmp(last->str, "UTF8") == 0;
}

/* parser_literal_decide - what to do with the announced literal */
static enum imap_parser_result parser_literal_decide(struct imap_parser *parser,
						     bool stream)
{
	struct imap_arg *lit = &parser->literal;

	if (stream && (parser->depth == 0 || parser_in_utf8_item(parser))) {
		parser->state = IMAP_PARSER_STATE_STREAM;
		return IMAP_PARSER_STREAM;
	}
	if (lit->literal_size > parser->set.max_literal_memory ||
	    parser->literal_total + lit->literal_size >
	    IMAP_PARSER_LITERAL_TOTAL_MAX ||
	    (!lit->literal_sync && parser->set.literal_minus &&
	     lit->literal_size > IMAP_PARSER_LITERAL_MINUS_MAX)) {
		parser_fail(parser, "[TOOBIG] Literal too large");
		if (!lit->literal_sync)
			parser->error_skip_literal = lit->literal_size;
		return IMAP_PARSER_ERROR;
	}
	parser->literal_data = parser_alloc(parser, lit->literal_size + 1);
	parser->literal_read = 0;
	parser->literal_total += lit->literal_size;
	parser->state = IMAP_PARSER_STATE_LITERAL_DATA;
	return lit->literal_sync ? IMAP_PARSER_LITERAL : IMAP_PARSER_MORE;
}

/* parser_literal_finish - the literal's data is complete: add the arg */
static bool parser_literal_finish(struct imap_parser *parser)
{
	struct imap_arg *arg = parser_add_arg(parser);

	if (arg == NULL) {
		/* the command goes on after the literal */
		parser->error_in_line = true;
		return false;
	}
	arg->type = IMAP_ARG_LITERAL;
	arg->literal8 = parser->literal.literal8;
	arg->str = (const char *)parser->literal_data;
	arg->len = parser->literal.literal_size;
	parser->literal_data = NULL;
	parser->state = IMAP_PARSER_STATE_LINE;
	return true;
}

/* parser_error_tail - an error in a part that announced a literal: a
   non-synchronizing one follows anyway and must be skipped */
static void parser_error_tail(struct imap_parser *parser,
			      const unsigned char *p, size_t len)
{
	uint64_t size;
	bool sync;

	if (imap_parser_tail_literal(p, len, &size, &sync) && !sync)
		parser->error_skip_literal = size;
}

/* parser_feed_line - collect a line part; tokenize it once complete.
   Returns bytes consumed; *done_r when the part was tokenized. */
static size_t parser_feed_line(struct imap_parser *parser,
			       const unsigned char *data, size_t size,
			       bool *done_r)
{
	const unsigned char *lf = memchr(data, '\n', size);
	size_t take = lf != NULL ? (size_t)(lf - data) + 1 : size;
	size_t part_len;

	*done_r = false;
	if (parser->line_total + take > parser->set.max_line_length + 2) {
		parser_fail(parser, "Line too long");
		parser->error_in_line = true;
		return 0;
	}
	parser->line_total += take;
	(void)buffer_append(&parser->line, data, take);
	if (lf == NULL)
		return take;
	part_len = parser->line.used - 1;
	if (part_len > 0 && parser->line.data[part_len - 1] == '\r')
		part_len--;
	if (memchr(parser->line.data, '\0', part_len) != NULL) {
		parser_fail(parser, "NUL in command line");
		parser_error_tail(parser, parser->line.data, part_len);
		buffer_reset(&parser->line);
		return take;
	}
	*done_r = true;
	if (!parser_tokenize(parser, parser->line.data, part_len) &&
	    parser->state == IMAP_PARSER_STATE_ERROR) {
		parser_error_tail(parser, parser->line.data, part_len);
	}
	buffer_reset(&parser->line);
	return take;
}

/* parser_feed_literal - copy literal data */
static size_t parser_feed_literal(struct imap_parser *parser,
				  const unsigned char *data, size_t size)
{
	uint64_t left = parser->literal.literal_size - parser->literal_read;
	size_t take = left < size ? (size_t)left : size;

	memcpy(parser->literal_data + parser->literal_read, data, take);
	parser->literal_read += take;
	if (parser->literal_read == parser->literal.literal_size)
		(void)parser_literal_finish(parser);
	return take;
}

enum imap_parser_result imap_parser_feed(struct imap_parser *parser,
					 const unsigned char *data, size_t size,
					 bool stream, size_t *consumed_r)
{
	size_t pos = 0;
	bool part_done;

	*consumed_r = 0;
	for (;;) {
		switch (parser->state) {
		case IMAP_PARSER_STATE_DONE:
			*consumed_r = pos;
			return IMAP_PARSER_DONE;
		case IMAP_PARSER_STATE_ERROR:
			*consumed_r = pos;
			return IMAP_PARSER_ERROR;
		case IMAP_PARSER_STATE_STREAM:
			if (stream) {
				*consumed_r = pos;
				return IMAP_PARSER_STREAM;
			}
			parser->state = IMAP_PARSER_STATE_LITERAL_PENDING;
			/* fall through */
		case IMAP_PARSER_STATE_LITERAL_PENDING: {
			enum imap_parser_result ret =
				parser_literal_decide(parser, stream);

			if (ret != IMAP_PARSER_MORE) {
				*consumed_r = pos;
				return ret;
			}
			continue;
		}
		case IMAP_PARSER_STATE_LITERAL_DATA:
			if (parser->literal_read == parser->literal.literal_size) {
				(void)parser_literal_finish(parser);
				continue;
			}
			if (pos == size)
				break;
			pos += parser_feed_literal(parser, data + pos, size - pos);
			continue;
		case IMAP_PARSER_STATE_LINE:
			if (pos == size)
				break;
			pos += parser_feed_line(parser, data + pos, size - pos,
						&part_done);
			continue;
		}
		break;
	}
	*consumed_r = pos;
	return IMAP_PARSER_MORE;
}

const struct imap_arg *imap_parser_args(const struct imap_parser *parser)
{
	static const struct imap_arg eol = { .type = IMAP_ARG_EOL };

	if (parser->levels[0].alloc == 0)
		return &eol;
	return parser->levels[0].args;
}

size_t imap_parser_arg_count(const struct imap_parser *parser)
{
	return parser->levels[0].count;
}

bool imap_parser_is_complete(const struct imap_parser *parser)
{
	return parser->complete;
}

const struct imap_arg *imap_parser_literal(const struct imap_parser *parser)
{
	return &parser->literal;
}

void imap_parser_literal_done(struct imap_parser *parser)
{
	if (parser->state == IMAP_PARSER_STATE_STREAM)
		parser->state = IMAP_PARSER_STATE_LINE;
}

const char *imap_parser_error(const struct imap_parser *parser, bool *fatal_r)
{
	if (fatal_r != NULL)
		*fatal_r = false;
	return parser->error != NULL ? parser->error : "Syntax error";
}

bool imap_parser_error_skip(const struct imap_parser *parser,
			    bool *in_line_r, uint64_t *literal_size_r)
{
	*in_line_r = parser->error_in_line;
	*literal_size_r = parser->error_skip_literal;
	return parser->error_in_line || parser->error_skip_literal > 0;
}

bool imap_parser_tail_literal(const unsigned char *p, size_t len,
			      uint64_t *size_r, bool *sync_r)
{
	size_t i = len;
	uint64_t size = 0, mult = 1;
	unsigned int digits = 0;

	if (i == 0 || p[--i] != '}' || i == 0)
		return false;
	*sync_r = true;
	if (p[i - 1] == '+') {
		*sync_r = false;
		i--;
	}
	while (i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9') {
		if (++digits > 19)
			return false;
		size += (uint64_t)(p[i - 1] - '0') * mult;
		mult *= 10;
		i--;
	}
	if (digits == 0 || i == 0 || p[i - 1] != '{')
		return false;
	*size_r = size;
	return true;
}
