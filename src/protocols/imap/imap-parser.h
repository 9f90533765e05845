#ifndef CM_IMAP_PARSER_H
#define CM_IMAP_PARSER_H
/*
 * imap-parser - IMAP command arguments (RFC 9051 section 4 and 9).
 *
 * The session reads a command as "tag SP name [SP args] CRLF" where args
 * may contain quoted strings, parenthesised lists, NIL, and literals
 * ({N}, {N+} with LITERAL+/LITERAL-, ~{N} for BINARY). For ordinary
 * commands the session reads the whole argument list into memory (bounded
 * by imap_max_line_length for the line and IMAP_LITERAL_MEMORY_MAX per
 * literal) and hands it to the command as an array of struct imap_arg
 * ending with IMAP_ARG_EOL. Commands that take big literals (APPEND) read
 * their arguments one by one instead and stream the literal
 * (imap_command_next_arg() and imap_command_literal_*() in imap-client.h).
 *
 * Atoms: FETCH items such as BODY.PEEK[HEADER.FIELDS (From To)]<0.100>
 * come back as ONE atom: inside an atom, '[' starts a section that runs to
 * the matching ']' and may contain spaces, parentheses and quoted
 * strings; the atom then continues (e.g. "<0.100>"). The command parses
 * that text itself.
 *
 * All strings are NUL-terminated copies owned by the command (freed when
 * the command ends); len is the exact length (a literal may contain NUL
 * bytes; LITERAL8 may contain anything).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest literal read into memory for ordinary commands (e.g. a SEARCH
   string). Bigger ones get "BAD [TOOBIG]" (or, if non-synchronizing,
   are skipped and then refused). */
#define IMAP_LITERAL_MEMORY_MAX (64 * 1024)
/* Deepest list nesting accepted (BAD beyond). */
#define IMAP_LIST_DEPTH_MAX 32
/* Most arguments (all levels together) in one command. */
#define IMAP_ARGS_MAX 10000

enum imap_arg_type {
	IMAP_ARG_EOL = 0,	/* end of a list or of the arguments */
	IMAP_ARG_NIL,		/* the atom NIL (any case) */
	IMAP_ARG_ATOM,		/* anything else unquoted (incl. numbers, \Seen,
				   sequence sets, BODY[...]<...>) */
	IMAP_ARG_STRING,	/* "quoted" (unescaped) */
	IMAP_ARG_LITERAL,	/* {N} data in memory */
	IMAP_ARG_LIST,		/* ( ... ) */
	/* Only from imap_command_next_arg() for commands with
	   IMAP_CMD_FLAG_STREAM_LITERAL: a literal at the top level whose
	   data has NOT been read yet (literal_size, literal_sync,
	   literal8 tell what it is). */
	IMAP_ARG_LITERAL_STREAM,
};

struct imap_arg {
	enum imap_arg_type type;
	const char *str;		/* ATOM, STRING, LITERAL: NUL-terminated */
	size_t len;			/* ... and its length */
	struct imap_arg *list;		/* LIST: children, ending with EOL */
	size_t list_count;		/* LIST: children before the EOL */
	bool literal8;			/* LITERAL / LITERAL_STREAM: ~{N} */
	bool literal_sync;		/* LITERAL_STREAM: {N} (not {N+}) */
	uint64_t literal_size;		/* LITERAL_STREAM */
};

/* Accessors: each returns true and sets *_r if arg has that shape. */
/* ATOM only. */
bool imap_arg_get_atom(const struct imap_arg *arg, const char **atom_r);
/* astring: ATOM, STRING or LITERAL (not NIL). */
bool imap_arg_get_astring(const struct imap_arg *arg, const char **str_r);
/* string: STRING or LITERAL. */
bool imap_arg_get_string(const struct imap_arg *arg, const char **str_r);
/* nstring: NIL (*str_r = NULL) or string. */
bool imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r);
/* LIST: *list_r = its children (ending with EOL). */
bool imap_arg_get_list(const struct imap_arg *arg,
		       const struct imap_arg **list_r, size_t *count_r);
/* ATOM equal to name, ignoring ASCII case. */
bool imap_arg_atom_equals(const struct imap_arg *arg, const char *name);
static inline bool imap_arg_is_eol(const struct imap_arg *arg)
{
	return arg->type == IMAP_ARG_EOL;
}

/* ---- the tokenizer (used by imap-client.c; unit-tested alone) --------- */

struct imap_parser;

struct imap_parser_settings {
	size_t max_line_length;		/* bytes of the line parts together */
	size_t max_literal_memory;	/* 0 = IMAP_LITERAL_MEMORY_MAX */
	bool literal_minus;		/* LITERAL-: {N+} only up to 4096 */
};

enum imap_parser_result {
	IMAP_PARSER_DONE,	/* a complete argument list is ready */
	IMAP_PARSER_MORE,	/* needs more input (consumed what it could) */
	/* A synchronizing literal of literal_size bytes was announced: the
	   caller sends "+ OK" (or refuses) and feeds the data. */
	IMAP_PARSER_LITERAL,
	/* A top-level literal of a STREAM command: the caller reads the
	   data itself, then calls imap_parser_literal_done(). */
	IMAP_PARSER_STREAM,
	IMAP_PARSER_ERROR,	/* error text from imap_parser_error() */
};

struct imap_parser *imap_parser_create(const struct imap_parser_settings *set);
void imap_parser_destroy(struct imap_parser **parser);
/* Forget everything (start of a new command). */
void imap_parser_reset(struct imap_parser *parser);
/* Feed input: consumes from data[0..size) and sets *consumed_r. With
   stream = true, top-level literals are not read but reported as
   IMAP_PARSER_STREAM, and parsing stops after each top-level argument
   (DONE with one more argument available). So is the literal of an
   APPEND "UTF8 (literal8)" item (RFC 6855): the atom UTF8 comes first,
   then the literal, then the list, which closes empty. */
enum imap_parser_result imap_parser_feed(struct imap_parser *parser,
					 const unsigned char *data, size_t size,
					 bool stream, size_t *consumed_r);
/* The arguments parsed so far (after DONE: the whole list, ending EOL). */
const struct imap_arg *imap_parser_args(const struct imap_parser *parser);
/* After IMAP_PARSER_LITERAL / IMAP_PARSER_STREAM: the literal. */
const struct imap_arg *imap_parser_literal(const struct imap_parser *parser);
/* After a STREAM literal's data was consumed by the caller. */
void imap_parser_literal_done(struct imap_parser *parser);
/* Why the last feed returned ERROR (static or parser-owned text);
   *fatal_r: the input can't be resynchronised (close the connection). */
const char *imap_parser_error(const struct imap_parser *parser,
			      bool *fatal_r);

/* Added by the session core: */
/* Top-level arguments parsed so far (streaming commands read them one by
   one as they become available). */
size_t imap_parser_arg_count(const struct imap_parser *parser);
/* The final CRLF of the command has been parsed. */
bool imap_parser_is_complete(const struct imap_parser *parser);
/* After ERROR: what of the command the client still sends and the caller
   must discard. Returns false when nothing; else *literal_size_r bytes
   of a non-synchronizing literal come first (0 = none), then (or when
   *in_line_r) the rest of a line, whose end may announce more literals
   (see imap_parser_tail_literal()). */
bool imap_parser_error_skip(const struct imap_parser *parser,
			    bool *in_line_r, uint64_t *literal_size_r);
/* Does the line part p[0..len) (without CRLF) end with a literal
   announcement? Sets its size and whether it is synchronizing. */
bool imap_parser_tail_literal(const unsigned char *p, size_t len,
			      uint64_t *size_r, bool *sync_r);

#endif
