/*
 * mime-part.c - streaming MIME parser (RFC 5322, 2045, 2046, 2231).
 *
 * Design. The parser works on lines. feed() cuts the input at LF and
 * hands each complete line to parse_line(); a line is kept in a fixed
 * buffer only up to LINE_KEEP bytes (header state) or BODY_KEEP bytes
 * (body state: enough to recognise a boundary), the rest is only counted.
 * So memory is bounded by the line buffer, the field being collected
 * (capped at MIME_MAX_FIELD), the tree itself (capped at MIME_MAX_PARTS)
 * and the stack of open parts (capped at MIME_MAX_DEPTH).
 *
 * The open parts form a stack of frames: the root, then for every open
 * multipart its current child, for every message/rfc822 its encapsulated
 * message. The deepest frame receives the lines. A line "--b" or "--b--"
 * (trailing white space allowed) matching the boundary of any open
 * multipart closes every deeper frame, innermost boundary first (so an
 * outer boundary inside an inner multipart closes the inner one, RFC 2046
 * 5.1.2). The line break before a boundary line belongs to the boundary:
 * a part closed by a boundary ends where the previous line's CRLF/LF
 * starts. At the end of the input every open part ends there.
 *
 * Offsets are physical; virtual sizes count a LF not preceded by CR as
 * two octets. We track the physical and virtual offset of the current
 * line start and the number of LFs seen, which is all the size and line
 * counts need.
 *
 * body_lines counts the lines of the body: the LFs in it, plus one when
 * it does not end in a LF (a last line without line break, which is
 * always the case before a boundary since that LF belongs to it).
 *
 * Memory for the kept header values of the whole tree is capped at
 * MIME_TREE_BUDGET; beyond it only what the structure needs is kept
 * (Content-Type type/subtype/boundary/charset, Content-Transfer-Encoding).
 *
 * Header lines without a colon are ignored; a header without a blank
 * line ends at the end of the part (the body is then empty). NUL bytes
 * are dropped from the kept header values.
 *
 * A multipart without parts (no boundary parameter, or no boundary line)
 * gets one empty text/plain child at its end when the tree is finished,
 * because RFC 9051's body-type-mpart requires at least one body.
 *
 * RFC 2231 parameters: continuations name*0, name*1... are joined. When
 * any section is extended (name*= or name*N*=), the parameter is kept as
 * "name*" with the value in RFC 2231 ext-value form ("charset'lang'%XX")
 * exactly as sent, plain sections percent-encoded, so an IMAP client can
 * decode it; mime_part_param(part, "name") finds it too.
 *
 * The cache serialization of the tree is in mime-serialize.c.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "mime-part.h"
#include "mime-private.h"

#include <ctype.h>
#include <strings.h>

#define LINE_KEEP (MIME_MAX_FIELD + 256)
#define BODY_KEEP 256
#define MAX_BOUNDARY 200
#define MAX_PARAMS 64
/* Header values kept in one tree, all parts together (MIME_MAX_PARTS
   parts with every field at MIME_MAX_FIELD would be about 1 GB). */
#define MIME_TREE_BUDGET (4 * 1024 * 1024)

enum frame_state {
	FRAME_HEADER,
	FRAME_BODY,
};

struct frame {
	struct mime_part *part;		/* borrowed from the tree */
	struct mime_part *last_child;
	enum frame_state state;
	char *boundary;			/* owned; NULL when none */
	bool boundary_closed;		/* "--b--" seen */
	uint64_t header_voffset, body_voffset;
	uint64_t header_lfs, body_lfs;	/* LFs seen before them */
};

struct mime_parser {
	struct mime_part *root;		/* owned until finish */
	struct frame frames[MIME_MAX_DEPTH + 2];
	unsigned int depth;		/* open frames */
	unsigned int part_count;
	size_t kept_bytes;		/* header values stored in the tree */

	/* position of the start of the current line */
	uint64_t offset, voffset, lfs;

	/* the current (incomplete) line */
	unsigned char *line;		/* owned, LINE_KEEP bytes */
	size_t line_kept, line_len;
	bool line_last_cr;		/* last byte seen was CR */

	/* the previous complete line */
	uint64_t prev_term_offset, prev_term_voffset;
	size_t prev_content_len;
	bool prev_had_lf;

	struct buffer field;		/* header field being collected */
	bool field_active;
};

/* ---- allocation helpers ---- */

/* part_new - allocate a part with the default content type */
static struct mime_part *part_new(struct mime_part *parent)
{
	struct mime_part *part = mem_zalloc(sizeof(*part));

	part->parent = parent;
	return part;
}

/* params_free - free an array of parameters */
static void params_free(struct mime_param *params, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++) {
		free(params[i].name);
		free(params[i].value);
	}
	free(params);
}

/* part_free_fields - free everything a part owns except its children */
static void part_free_fields(struct mime_part *part)
{
	char **strings[] = {
		&part->type, &part->subtype, &part->id, &part->description,
		&part->encoding, &part->md5, &part->language,
		&part->location, &part->disposition, &part->env_date,
		&part->env_subject, &part->env_from, &part->env_sender,
		&part->env_reply_to, &part->env_to, &part->env_cc,
		&part->env_bcc, &part->env_in_reply_to,
		&part->env_message_id,
	};

	for (size_t i = 0; i < N_ELEMENTS(strings); i++)
		MEM_FREE(strings[i]);
	params_free(part->params, part->param_count);
	params_free(part->disp_params, part->disp_param_count);
	part->params = part->disp_params = NULL;
	part->param_count = part->disp_param_count = 0;
}

/* mime_part_free - free a tree (depth is bounded by MIME_MAX_DEPTH) */
void mime_part_free(struct mime_part **root)
{
	struct mime_part *part = *root, *child, *next;

	if (part == NULL)
		return;
	for (child = part->children; child != NULL; child = next) {
		next = child->next;
		mime_part_free(&child);
	}
	part_free_fields(part);
	free(part);
	*root = NULL;
}

/* ---- header value syntax (RFC 2045 tokens, RFC 5322 CFWS) ---- */

/* is_tspecial - RFC 2045 tspecials */
static bool is_tspecial(unsigned char c)
{
	return c != '\0' && strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

/* is_token_char - a byte of an RFC 2045 token (8-bit tolerated) */
static bool is_token_char(unsigned char c)
{
	return c > ' ' && c != 0x7f && !is_tspecial(c);
}

/* skip_cfws - skip white space and (nested) comments */
static const char *skip_cfws(const char *p)
{
	unsigned int level = 0;

	for (; *p != '\0'; p++) {
		if (level > 0 && *p == '\\' && p[1] != '\0')
			p++;
		else if (*p == '(')
			level++;
		else if (*p == ')' && level > 0)
			level--;
		else if (level == 0 && !isspace((unsigned char)*p))
			break;
	}
	return p;
}

/* read_token - read a token at *p; NULL when there is none */
static char *read_token(const char **p)
{
	const char *start = *p;

	while (is_token_char((unsigned char)**p))
		(*p)++;
	return *p == start ? NULL : mem_strndup(start, *p - start);
}

/* read_quoted - read a quoted string at *p (opening quote included);
   an unterminated string ends at the end of the value */
static char *read_quoted(const char **p)
{
	struct buffer buf;
	const char *s = *p + 1;

	buffer_init(&buf, 0);
	for (; *s != '\0' && *s != '"'; s++) {
		if (*s == '\\' && s[1] != '\0')
			s++;
		buffer_append_byte(&buf, (unsigned char)*s);
	}
	*p = *s == '"' ? s + 1 : s;
	return buffer_export(&buf, NULL);
}

/* read_param_value - token or quoted string; tolerates other bytes
   (such as '=' or '/' in unquoted boundaries) up to ';', a comment or
   white space */
static char *read_param_value(const char **p)
{
	const char *start = *p;

	if (**p == '"')
		return read_quoted(p);
	while (**p != '\0' && **p != ';' && **p != '(' &&
	       !isspace((unsigned char)**p))
		(*p)++;
	return mem_strndup(start, *p - start);
}

/* ---- RFC 2231 parameter joining ---- */

struct raw_param {
	char *name;		/* base name, lower case, owned */
	char *value;		/* owned */
	int section;		/* -1 when the name has no *N */
	bool extended;		/* name ends with '*' */
};

/* raw_param_split - split "name*N*" into base, section and extended */
static void raw_param_split(struct raw_param *rp, char *name)
{
	char *star = strchr(name, '*');
	unsigned int section;

	rp->section = -1;
	rp->extended = false;
	if (star != NULL) {
		char *rest = star + 1;
		size_t len = strlen(rest);

		*star = '\0';
		if (len > 0 && rest[len - 1] == '*') {
			rp->extended = true;
			rest[len - 1] = '\0';
		} else if (len == 0) {
			rp->extended = true;
		}
		if (*rest != '\0' && str_to_uint(rest, &section) == 0 &&
		    section < 1000)
			rp->section = (int)section;
		else if (*rest != '\0')
			rp->extended = false;
	}
	rp->name = str_lcase(name);
}

/* is_attribute_char - RFC 2231 attribute-char */
static bool is_attribute_char(unsigned char c)
{
	return is_token_char(c) && c < 0x80 && c != '*' && c != '\'' &&
		c != '%';
}

/* append_pct_encoded - append value with non attribute-chars as %XX */
static void append_pct_encoded(struct buffer *out, const char *value)
{
	for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
		if (is_attribute_char(*s))
			buffer_append_byte(out, *s);
		else
			buffer_printf(out, "%%%02X", *s);
	}
}

/* join_sections - join the sections of raw[first]'s name (section 0) into
   one value; the other sections used are marked (name freed). */
static char *join_sections(struct raw_param *raw, unsigned int count,
			   unsigned int first, bool *extended_r)
{
	struct buffer buf;
	const char *name = raw[first].name;
	bool extended = false;

	for (unsigned int i = 0; i < count; i++) {
		if (raw[i].name != NULL && strcmp(raw[i].name, name) == 0 &&
		    raw[i].section >= 0 && raw[i].extended)
			extended = true;
	}
	buffer_init(&buf, 0);
	for (int section = 0;; section++) {
		unsigned int i;

		for (i = 0; i < count; i++) {
			if (raw[i].name != NULL && raw[i].section == section &&
			    strcmp(raw[i].name, name) == 0)
				break;
		}
		if (i == count)
			break;
		if (!extended || raw[i].extended)
			buffer_append_str(&buf, raw[i].value);
		else
			append_pct_encoded(&buf, raw[i].value);
		if (i != first)
			MEM_FREE(&raw[i].name);
	}
	*extended_r = extended;
	return buffer_export(&buf, NULL);
}

/* params_add - append a parameter unless the name is already there */
static void params_add(struct mime_param **params, unsigned int *count,
		       char *name, char *value)
{
	for (unsigned int i = 0; i < *count; i++) {
		if (strcmp((*params)[i].name, name) == 0) {
			free(name);
			free(value);
			return;
		}
	}
	*params = mem_realloc(*params, sizeof(**params) * (*count + 1));
	(*params)[*count].name = name;
	(*params)[*count].value = value;
	(*count)++;
}

/* params_build - turn raw parameters into the final list */
static void params_build(struct raw_param *raw, unsigned int count,
			 struct mime_param **params_r, unsigned int *count_r)
{
	for (unsigned int i = 0; i < count; i++) {
		char *name, *value;
		bool extended = raw[i].extended;

		if (raw[i].name == NULL)
			continue;
		if (raw[i].section == 0) {
			value = join_sections(raw, count, i, &extended);
		} else if (raw[i].section > 0) {
			continue;	/* section without a section 0 */
		} else {
			value = mem_strdup(raw[i].value);
		}
		name = extended ? mem_printf("%s*", raw[i].name) :
			mem_strdup(raw[i].name);
		params_add(params_r, count_r, name, value);
	}
	for (unsigned int i = 0; i < count; i++) {
		free(raw[i].name);
		free(raw[i].value);
	}
}

/* parse_params - parse ";name=value" pairs at p */
static void parse_params(const char *p, struct mime_param **params_r,
			 unsigned int *count_r)
{
	struct raw_param raw[MAX_PARAMS];
	unsigned int count = 0;

	while (*p != '\0' && count < MAX_PARAMS) {
		char *name;

		p = skip_cfws(p);
		if (*p != ';') {	/* garbage: skip to the next ';' */
			while (*p != '\0' && *p != ';')
				p++;
			continue;
		}
		p = skip_cfws(p + 1);
		if ((name = read_token(&p)) == NULL)
			continue;
		p = skip_cfws(p);
		if (*p != '=') {
			free(name);
			continue;
		}
		p = skip_cfws(p + 1);
		raw[count].value = read_param_value(&p);
		raw_param_split(&raw[count], name);
		count++;
	}
	params_build(raw, count, params_r, count_r);
}

/* parse_content_type - "type/subtype; params" into the part; garbage or
   a missing subtype leaves the default (no type) */
static void parse_content_type(struct mime_part *part, const char *value)
{
	const char *p = skip_cfws(value);
	char *type, *subtype;

	if ((type = read_token(&p)) == NULL)
		return;
	p = skip_cfws(p);
	if (*p != '/') {
		free(type);
		return;
	}
	p = skip_cfws(p + 1);
	if ((subtype = read_token(&p)) == NULL) {
		free(type);
		return;
	}
	part->type = type;
	part->subtype = subtype;
	parse_params(p, &part->params, &part->param_count);
}

/* parse_disposition - "attachment; filename=x" */
static void parse_disposition(struct mime_part *part, const char *value)
{
	const char *p = skip_cfws(value);
	char *disposition = read_token(&p);

	if (disposition == NULL)
		return;
	part->disposition = disposition;
	parse_params(p, &part->disp_params, &part->disp_param_count);
}

/* parse_single_token - Content-Transfer-Encoding: one token */
static char *parse_single_token(const char *value)
{
	const char *p = skip_cfws(value);

	return read_token(&p);
}

/* ---- header fields ---- */

/* set_once - keep the first occurrence of a field */
static void set_once(char **dest, const char *value)
{
	if (*dest == NULL)
		*dest = mem_strdup(value);
}

/* envelope_field - the envelope member for a field name, or NULL */
static char **envelope_field(struct mime_part *part, const char *name)
{
	static const struct {
		const char *name;
		size_t offset;
	} fields[] = {
		{ "date", offsetof(struct mime_part, env_date) },
		{ "subject", offsetof(struct mime_part, env_subject) },
		{ "from", offsetof(struct mime_part, env_from) },
		{ "sender", offsetof(struct mime_part, env_sender) },
		{ "reply-to", offsetof(struct mime_part, env_reply_to) },
		{ "to", offsetof(struct mime_part, env_to) },
		{ "cc", offsetof(struct mime_part, env_cc) },
		{ "bcc", offsetof(struct mime_part, env_bcc) },
		{ "in-reply-to", offsetof(struct mime_part, env_in_reply_to) },
		{ "message-id", offsetof(struct mime_part, env_message_id) },
	};

	for (size_t i = 0; i < N_ELEMENTS(fields); i++) {
		if (strcasecmp(name, fields[i].name) == 0)
			return (char **)(void *)((char *)part +
						 fields[i].offset);
	}
	return NULL;
}

/* header_field - store one complete, unfolded field; false when the
   field is not one the tree keeps */
static bool header_field(struct mime_part *part, const char *name,
			 const char *value)
{
	char **env;

	if (strcasecmp(name, "content-type") == 0) {
		if (part->type == NULL)
			parse_content_type(part, value);
	} else if (strcasecmp(name, "content-transfer-encoding") == 0) {
		if (part->encoding == NULL)
			part->encoding = parse_single_token(value);
	} else if (strcasecmp(name, "content-disposition") == 0) {
		if (part->disposition == NULL)
			parse_disposition(part, value);
	} else if (strcasecmp(name, "content-id") == 0) {
		set_once(&part->id, value);
	} else if (strcasecmp(name, "content-description") == 0) {
		set_once(&part->description, value);
	} else if (strcasecmp(name, "content-md5") == 0) {
		set_once(&part->md5, value);
	} else if (strcasecmp(name, "content-language") == 0) {
		set_once(&part->language, value);
	} else if (strcasecmp(name, "content-location") == 0) {
		set_once(&part->location, value);
	} else if (part->has_envelope &&
		   (env = envelope_field(part, name)) != NULL) {
		set_once(env, value);
	} else {
		return false;
	}
	return true;
}

/* params_prune - over the tree budget: keep only the parameters the
   structure needs (boundary, charset) */
static void params_prune(struct mime_part *part)
{
	unsigned int kept = 0;

	for (unsigned int i = 0; i < part->param_count; i++) {
		struct mime_param *param = &part->params[i];

		if (strcmp(param->name, "boundary") == 0 ||
		    strcmp(param->name, "charset") == 0) {
			part->params[kept++] = *param;
			continue;
		}
		free(param->name);
		free(param->value);
	}
	part->param_count = kept;
}

/* field_store - store a field within the tree budget: beyond it only
   Content-Type (pruned) and Content-Transfer-Encoding are kept */
static void field_store(struct mime_parser *parser, struct mime_part *part,
			const char *name, const char *value)
{
	bool structural = strcasecmp(name, "content-type") == 0 ||
		strcasecmp(name, "content-transfer-encoding") == 0;

	if (parser->kept_bytes >= MIME_TREE_BUDGET && !structural)
		return;
	if (header_field(part, name, value))
		parser->kept_bytes += strlen(value) + 1;
	if (parser->kept_bytes >= MIME_TREE_BUDGET)
		params_prune(part);
}

/* is_wsp - SP or HT */
static bool is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* field_flush - parse the collected field "Name: value" */
static void field_flush(struct mime_parser *parser, struct mime_part *part)
{
	char *text, *colon, *value, *end;

	if (!parser->field_active)
		return;
	parser->field_active = false;
	text = (char *)parser->field.data;
	if (text == NULL || (colon = strchr(text, ':')) == NULL) {
		buffer_reset(&parser->field);
		return;
	}
	for (end = colon; end > text && is_wsp((unsigned char)end[-1]); end--)
		;
	*end = '\0';
	value = colon + 1;
	while (is_wsp((unsigned char)*value))
		value++;
	if (strlen(value) > MIME_MAX_FIELD)
		value[MIME_MAX_FIELD] = '\0';
	end = value + strlen(value);
	while (end > value && isspace((unsigned char)end[-1]))
		*--end = '\0';
	if (*text != '\0')
		field_store(parser, part, text, value);
	buffer_reset(&parser->field);
}

/* field_append - add line content to the field, without NULs, CR, LF */
static void field_append(struct mime_parser *parser, const unsigned char *s,
			 size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			continue;
		if (parser->field.used >= LINE_KEEP)
			break;
		buffer_append_byte(&parser->field, s[i]);
	}
}

/* header_line - a non-empty header line: new field or continuation */
static void header_line(struct mime_parser *parser, struct mime_part *part,
			const unsigned char *line, size_t len)
{
	if (is_wsp(line[0])) {
		if (parser->field_active)
			field_append(parser, line, len);
		return;
	}
	field_flush(parser, part);
	if (memchr(line, ':', len) == NULL)
		return;		/* not a field: ignored */
	parser->field_active = true;
	field_append(parser, line, len);
}

/* ---- the frame stack ---- */

/* parser_push_child - create a child of frame's part, push its frame */
static void parser_push_child(struct mime_parser *parser, uint64_t offset,
			      uint64_t voffset, bool envelope)
{
	struct frame *parent = &parser->frames[parser->depth - 1];
	struct mime_part *child = part_new(parent->part);
	struct frame *frame = &parser->frames[parser->depth++];

	child->header_offset = offset;
	child->has_envelope = envelope;
	if (parent->last_child == NULL)
		parent->part->children = child;
	else
		parent->last_child->next = child;
	parent->last_child = child;
	parent->part->child_count++;
	parser->part_count++;

	memset(frame, 0, sizeof(*frame));
	frame->part = child;
	frame->state = FRAME_HEADER;
	frame->header_voffset = voffset;
	frame->header_lfs = parser->lfs;
}

/* is_digest - is the part multipart/digest? */
static bool is_digest(const struct mime_part *part)
{
	return part != NULL && part->multipart &&
		strcasecmp(part->subtype, "digest") == 0;
}

/* part_set_defaults - the content type when none (valid) was given */
static void part_set_defaults(struct mime_part *part)
{
	if (part->type == NULL) {
		bool digest = is_digest(part->parent);

		part->type = mem_strdup(digest ? "message" : "text");
		part->subtype = mem_strdup(digest ? "rfc822" : "plain");
	}
	part->multipart = strcasecmp(part->type, "multipart") == 0;
	part->message = strcasecmp(part->type, "message") == 0 &&
		(strcasecmp(part->subtype, "rfc822") == 0 ||
		 strcasecmp(part->subtype, "global") == 0);
}

/* can_add_child - below the depth and part limits? */
static bool can_add_child(const struct mime_parser *parser)
{
	return parser->depth <= MIME_MAX_DEPTH &&
		parser->part_count < MIME_MAX_PARTS;
}

/* is_encoded - base64/quoted-printable body (a message/rfc822 so encoded
   is not parsed: its text is not a message until decoded) */
static bool is_encoded(const struct mime_part *part)
{
	return part->encoding != NULL &&
		(strcasecmp(part->encoding, "base64") == 0 ||
		 strcasecmp(part->encoding, "quoted-printable") == 0);
}

/* header_end - the header of the deepest part ended; the body starts at
   offset/voffset */
static void header_end(struct mime_parser *parser, uint64_t offset,
		       uint64_t voffset)
{
	struct frame *frame = &parser->frames[parser->depth - 1];
	struct mime_part *part = frame->part;
	const char *boundary;

	field_flush(parser, part);
	part->body_offset = offset;
	part->header_vsize = voffset - frame->header_voffset;
	part->header_lines = parser->lfs - frame->header_lfs;
	frame->body_voffset = voffset;
	frame->body_lfs = parser->lfs;
	frame->state = FRAME_BODY;
	part_set_defaults(part);

	if (part->multipart) {
		boundary = mime_part_param(part, "boundary");
		if (boundary != NULL && *boundary != '\0' &&
		    strlen(boundary) <= MAX_BOUNDARY &&
		    parser->depth <= MIME_MAX_DEPTH)
			frame->boundary = mem_strdup(boundary);
	} else if (part->message && !is_encoded(part) &&
		   can_add_child(parser)) {
		parser_push_child(parser, offset, voffset, true);
	}
}

struct close_point {
	uint64_t offset, voffset, lfs;
	bool last_line_open;	/* the body ends inside a non-empty line */
};

/* frame_close - the deepest frame's part ends at the close point */
static void frame_close(struct mime_parser *parser,
			const struct close_point *at)
{
	struct frame *frame = &parser->frames[--parser->depth];
	struct mime_part *part = frame->part;
	uint64_t end = at->offset, vend = at->voffset;

	if (frame->state == FRAME_HEADER) {
		field_flush(parser, part);
		if (end < part->header_offset) {
			end = part->header_offset;
			vend = frame->header_voffset;
		}
		part->body_offset = end;
		part->header_vsize = vend - frame->header_voffset;
		part->header_lines = at->lfs > frame->header_lfs ?
			at->lfs - frame->header_lfs : 0;
		frame->body_voffset = vend;
		frame->body_lfs = at->lfs;
		part_set_defaults(part);
	}
	if (end <= part->body_offset) {
		part->end_offset = part->body_offset;
		part->body_vsize = 0;
		part->body_lines = 0;
	} else {
		part->end_offset = end;
		part->body_vsize = vend - frame->body_voffset;
		part->body_lines = at->lfs - frame->body_lfs +
			(at->last_line_open ? 1 : 0);
	}
	MEM_FREE(&frame->boundary);
}

/* ---- lines ---- */

/* boundary_match - does the line (content without line break) match the
   boundary? Sets *close_r for "--b--". */
static bool boundary_match(const char *boundary, const unsigned char *line,
			   size_t len, bool *close_r)
{
	size_t blen = strlen(boundary), i;

	if (len < blen + 2 || memcmp(line + 2, boundary, blen) != 0)
		return false;
	i = blen + 2;
	*close_r = len >= i + 2 && line[i] == '-' && line[i + 1] == '-';
	if (*close_r)
		i += 2;
	for (; i < len; i++) {
		if (!is_wsp(line[i]) && line[i] != '\r')
			return false;
	}
	return true;
}

/* find_boundary - index of the innermost open frame whose boundary the
   line matches, or -1 */
static int find_boundary(const struct mime_parser *parser,
			 const unsigned char *line, size_t len, bool *close_r)
{
	if (len < 2 || line[0] != '-' || line[1] != '-')
		return -1;
	for (int i = (int)parser->depth - 1; i >= 0; i--) {
		const struct frame *frame = &parser->frames[i];

		if (frame->boundary != NULL && !frame->boundary_closed &&
		    boundary_match(frame->boundary, line, len, close_r))
			return i;
	}
	return -1;
}

/* boundary_line - a boundary of frame index k: close the deeper frames,
   then start the next child or the epilogue */
static void boundary_line(struct mime_parser *parser, unsigned int k,
			  bool close, uint64_t next_offset,
			  uint64_t next_voffset)
{
	struct close_point at = {
		.offset = parser->prev_term_offset,
		.voffset = parser->prev_term_voffset,
		.lfs = parser->lfs > 0 ? parser->lfs - 1 : 0,
		.last_line_open = parser->prev_content_len > 0,
	};

	if (!parser->prev_had_lf) {	/* boundary on the very first line */
		at.offset = parser->offset;
		at.voffset = parser->voffset;
		at.lfs = parser->lfs;
		at.last_line_open = false;
	}
	while (parser->depth > k + 1)
		frame_close(parser, &at);
	if (close) {
		parser->frames[k].boundary_closed = true;
		return;
	}
	if (can_add_child(parser)) {
		parser->lfs++;	/* the child starts after this line's LF */
		parser_push_child(parser, next_offset, next_voffset, false);
		parser->lfs--;
	}
}

/* parse_line - one line: content is line[0..kept) of content_len bytes
   (without the line break), term_len bytes of line break follow */
static void parse_line(struct mime_parser *parser, size_t content_len,
		       size_t term_len, bool has_lf)
{
	struct frame *frame = &parser->frames[parser->depth - 1];
	size_t kept = parser->line_kept < content_len ?
		parser->line_kept : content_len;
	uint64_t vlen = content_len + (has_lf ? 2 : term_len);
	uint64_t next_offset = parser->offset + content_len + term_len;
	uint64_t next_voffset = parser->voffset + vlen;
	bool close;
	int k;

	k = kept == content_len ?
		find_boundary(parser, parser->line, content_len, &close) : -1;
	if (k >= 0) {
		boundary_line(parser, (unsigned int)k, close, next_offset,
			      next_voffset);
	} else if (frame->state == FRAME_HEADER) {
		if (content_len == 0 && has_lf) {
			parser->lfs++;
			header_end(parser, next_offset, next_voffset);
			parser->lfs--;
		} else if (kept > 0) {
			header_line(parser, frame->part, parser->line, kept);
		}
	}
	parser->prev_term_offset = parser->offset + content_len;
	parser->prev_term_voffset = parser->voffset + content_len;
	parser->prev_content_len = content_len;
	parser->prev_had_lf = has_lf;
	parser->offset = next_offset;
	parser->voffset = next_voffset;
	if (has_lf)
		parser->lfs++;
}

/* line_end - the current line is complete (has_lf) or the input ended */
static void line_end(struct mime_parser *parser, bool has_lf)
{
	size_t content_len = parser->line_len, term_len = 0;

	if (has_lf) {
		term_len = 1;
		if (parser->line_last_cr && content_len > 0) {
			content_len--;
			term_len++;
		}
	}
	parser->line_kept = parser->line_kept < content_len ?
		parser->line_kept : content_len;
	parse_line(parser, content_len, term_len, has_lf);
	parser->line_len = parser->line_kept = 0;
	parser->line_last_cr = false;
}

/* line_keep_limit - how much of a line the current state needs */
static size_t line_keep_limit(const struct mime_parser *parser)
{
	return parser->frames[parser->depth - 1].state == FRAME_HEADER ?
		LINE_KEEP : BODY_KEEP;
}

/* line_add - append bytes (no LF) to the current line */
static void line_add(struct mime_parser *parser, const unsigned char *data,
		     size_t size)
{
	size_t limit = line_keep_limit(parser);

	if (size == 0)
		return;
	if (parser->line_kept < limit) {
		size_t n = limit - parser->line_kept;

		n = n < size ? n : size;
		memcpy(parser->line + parser->line_kept, data, n);
		parser->line_kept += n;
	}
	parser->line_len += size;
	parser->line_last_cr = data[size - 1] == '\r';
}

/* mime_parser_create - a parser for one message */
struct mime_parser *mime_parser_create(void)
{
	struct mime_parser *parser = mem_zalloc(sizeof(*parser));

	parser->root = part_new(NULL);
	parser->root->has_envelope = true;
	parser->part_count = 1;
	parser->line = mem_zalloc(LINE_KEEP);
	buffer_init(&parser->field, 0);
	parser->depth = 1;
	parser->frames[0].part = parser->root;
	parser->frames[0].state = FRAME_HEADER;
	return parser;
}

/* mime_parser_feed - feed the next chunk */
void mime_parser_feed(struct mime_parser *parser, const void *data,
		      size_t size)
{
	const unsigned char *p = data, *end = p + size, *lf;

	while (p < end) {
		lf = memchr(p, '\n', end - p);
		if (lf == NULL) {
			line_add(parser, p, end - p);
			break;
		}
		line_add(parser, p, lf - p);
		line_end(parser, true);
		p = lf + 1;
	}
}

/* add_empty_children - give every multipart without parts one empty
   text/plain child at its end */
static void add_empty_children(struct mime_part *part)
{
	for (struct mime_part *child = part->children; child != NULL;
	     child = child->next)
		add_empty_children(child);
	if (part->multipart && part->children == NULL) {
		struct mime_part *child = part_new(part);

		child->header_offset = child->body_offset =
			child->end_offset = part->end_offset;
		part_set_defaults(child);
		part->children = child;
		part->child_count = 1;
	}
}

/* parser_free - free the parser (not the tree) */
static void parser_free(struct mime_parser *parser)
{
	for (unsigned int i = 0; i < parser->depth; i++)
		MEM_FREE(&parser->frames[i].boundary);
	buffer_clear(&parser->field);
	free(parser->line);
	free(parser);
}

/* mime_parser_finish - end of input: close everything, return the tree */
struct mime_part *mime_parser_finish(struct mime_parser **_parser)
{
	struct mime_parser *parser = *_parser;
	struct mime_part *root = parser->root;
	struct close_point at;

	if (parser->line_len > 0)
		line_end(parser, false);
	at.offset = parser->offset;
	at.voffset = parser->voffset;
	at.lfs = parser->lfs;
	at.last_line_open = !parser->prev_had_lf && parser->prev_content_len > 0;
	while (parser->depth > 0)
		frame_close(parser, &at);
	add_empty_children(root);
	parser->root = NULL;
	parser_free(parser);
	*_parser = NULL;
	return root;
}

/* mime_parser_abort - drop the parser and its partial tree */
void mime_parser_abort(struct mime_parser **_parser)
{
	struct mime_parser *parser = *_parser;

	if (parser == NULL)
		return;
	mime_part_free(&parser->root);
	parser_free(parser);
	*_parser = NULL;
}

/* ---- lookups ---- */

/* mime_part_param - Content-Type parameter by name; an RFC 2231 extended
   parameter is found by its plain name too */
const char *mime_part_param(const struct mime_part *part, const char *name)
{
	size_t len = strlen(name);

	for (unsigned int i = 0; i < part->param_count; i++) {
		if (strcasecmp(part->params[i].name, name) == 0)
			return part->params[i].value;
	}
	for (unsigned int i = 0; i < part->param_count; i++) {
		const char *pname = part->params[i].name;

		if (strncasecmp(pname, name, len) == 0 &&
		    strcmp(pname + len, "*") == 0)
			return part->params[i].value;
	}
	return NULL;
}

/* section_next - parse one nz-number of a section; -1 on bad syntax */
static int section_next(const char **p, unsigned int *num_r)
{
	unsigned int num = 0;
	const char *s = *p;

	if (*s < '1' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (num > 100000)
			return -1;
		num = num * 10 + (unsigned int)(*s - '0');
	}
	if (*s == '.')
		s++;
	else if (*s != '\0')
		return -1;
	*p = s;
	*num_r = num;
	return 0;
}

/* mime_part_find - part by IMAP section number ("" is the root). In a
   message (the root, or the message inside message/rfc822) that is not
   multipart, "1" is the message's own body. */
const struct mime_part *mime_part_find(const struct mime_part *root,
				       const char *section)
{
	const struct mime_part *part = root;
	bool in_message = true;
	unsigned int num;

	if (*section == '\0')
		return root;
	while (*section != '\0') {
		if (section_next(&section, &num) < 0)
			return NULL;
		if (part->multipart) {
			for (part = part->children; part != NULL && num > 1;
			     num--)
				part = part->next;
			if (part == NULL)
				return NULL;
		} else if (!in_message || num != 1) {
			return NULL;
		}
		in_message = false;
		if (*section == '\0' || part->multipart)
			continue;
		if (!part->message || part->children == NULL)
			return NULL;
		part = part->children;
		in_message = true;
	}
	return part;
}
