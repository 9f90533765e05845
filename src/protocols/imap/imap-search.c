/*
 * imap-search.c - the SEARCH program: parsing and matching.
 *
 * The keys are parsed into a tree of struct search_node: AND (a list),
 * OR (two), NOT (one) and leaves. Sequence sets and UID sets are resolved
 * to sorted UID arrays at parse time (both are UID membership then). The
 * tree is reordered once so that cheap leaves are tried first; a message
 * is opened only when a header or body leaf has to answer, and what was
 * read (the header fields, the decoded body text) is kept for the other
 * leaves of the same message and dropped before the next message.
 *
 * Dates: BEFORE/ON/SINCE compare the day of the internal date in the
 * server's local zone (the zone INTERNALDATE is shown in); SENTBEFORE/
 * SENTON/SENTSINCE the day written in the Date: header (its own zone,
 * as RFC 9051 says: time and zone disregarded), falling back to the
 * internal date when there is no parsable Date:. SAVEDBEFORE/SAVEDON/
 * SAVEDSINCE (RFC 8514) compare the day of the save date, local zone,
 * and the internal date for a message whose save date is unknown; every
 * mailbox has save dates, so SAVEDATESUPPORTED is ALL.
 *
 * EMAILID (RFC 8474) compares mailbox_email_id() of the record; THREADID
 * matches nothing, since FETCH THREADID is NIL (no thread ids).
 *
 * The message keys SORT and THREAD share (RFC 5256 base subject, sent
 * date, address keys) are in imap-sortkeys.c, which uses the header
 * reader and the Date: parser of this file.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/store.h"
#include "protocols/mime/mime-part.h"
#include "protocols/mime/mime-decode.h"
#include "imap-client.h"
#include "imap-util.h"
#include "imap-fetch.h"
#include "imap-search.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>

enum search_type {
	SEARCH_AND, SEARCH_OR, SEARCH_NOT,
	SEARCH_ALL,
	SEARCH_FLAGS,		/* set_mask bits set, clear_mask bits clear */
	SEARCH_KEYWORD,		/* keyword index (-1: never set) */
	SEARCH_LARGER, SEARCH_SMALLER,
	SEARCH_BEFORE, SEARCH_ON, SEARCH_SINCE,		/* internal date day */
	SEARCH_SENTBEFORE, SEARCH_SENTON, SEARCH_SENTSINCE,
	SEARCH_SAVEDBEFORE, SEARCH_SAVEDON, SEARCH_SAVEDSINCE,	/* save date */
	SEARCH_EMAILID, SEARCH_THREADID,	/* field: the object id */
	SEARCH_OLDER, SEARCH_YOUNGER,
	SEARCH_UIDS,		/* sequence set or UID set */
	SEARCH_MODSEQ,
	SEARCH_HEADER,		/* field name, needle */
	SEARCH_BODY, SEARCH_TEXT,
};

struct search_node {
	enum search_type type;
	struct search_node **children;	/* owned: AND, OR, NOT */
	size_t child_count;
	uint32_t set_mask, clear_mask;	/* FLAGS */
	int keyword;			/* KEYWORD */
	bool negate;			/* UNKEYWORD */
	uint64_t num;			/* sizes, days, seconds, modseq */
	uint32_t *uids;			/* owned: UIDS */
	size_t uid_count;
	char *field;			/* owned: HEADER field name */
	char *needle;			/* owned: case-folded UTF-8 */
	size_t needle_len;
	int cost;			/* 0 view, 1 header, 2 body (subtree) */
};

struct search_header_field {
	char *name;			/* owned, as in the message */
	char *value;			/* owned: decoded and case-folded */
	size_t value_len;
};

/* What was read of the message being matched. */
struct search_message {
	struct imap_message msg;
	const struct mail_record *rec;
	uint32_t seq;
	bool header_loaded, body_loaded;
	struct search_header_field *fields;	/* owned */
	size_t field_count;
	struct buffer header_text;	/* all fields, decoded, folded */
	struct buffer body_text;	/* decoded, folded */
	int64_t sent_day;		/* INT64_MIN until known */
};

struct imap_search_program {
	struct imap_client *client;	/* borrowed */
	struct mailbox *box;		/* borrowed */
	struct search_node *root;
	const char *charset;		/* borrowed; NULL = UTF-8 */
	bool uses_modseq;
	struct search_message cur;	/* the message being matched */
};

struct search_parser {
	struct imap_search_program *prog;
	const struct imap_arg *args;
	size_t pos;
	int error;			/* enum imap_search_parse_result */
	const char *error_text;
};

/* ---- helpers ----------------------------------------------------------- */

/* node_new - an empty node */
static struct search_node *node_new(enum search_type type)
{
	struct search_node *node = mem_zalloc(sizeof(*node));

	node->type = type;
	return node;
}

/* node_free - free a tree */
static void node_free(struct search_node *node)
{
	if (node == NULL)
		return;
	for (size_t i = 0; i < node->child_count; i++)
		node_free(node->children[i]);
	free(node->children);
	free(node->uids);
	free(node->field);
	free(node->needle);
	free(node);
}

/* node_add_child - append a child */
static void node_add_child(struct search_node *node, struct search_node *child)
{
	node->children = mem_realloc(node->children, (node->child_count + 1) *
				     sizeof(*node->children));
	node->children[node->child_count++] = child;
}

/* days_from_civil - day number of a proleptic Gregorian date */
static int64_t days_from_civil(int64_t y, unsigned int m, unsigned int d)
{
	int64_t era;
	unsigned int yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned int)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* local_day - day number of a time in the server's zone */
static int64_t local_day(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (localtime_r(&tt, &tm) == NULL)
		return t / 86400;
	return days_from_civil(tm.tm_year + 1900LL, (unsigned int)tm.tm_mon + 1,
			       (unsigned int)tm.tm_mday);
}

/* month_number - "Jan" -> 1; 0 if not a month */
static unsigned int month_number(const char *p)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";

	for (unsigned int i = 0; i < 12; i++) {
		if (strncasecmp(p, months + i * 3, 3) == 0)
			return i + 1;
	}
	return 0;
}

/* imap_search_date_day - day number of a Date: value; false if unparsable */
bool imap_search_date_day(const char *p, int64_t *day_r)
{
	unsigned long d, y;
	unsigned int m;
	char *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (isalpha((unsigned char)*p)) {	/* day-of-week "Mon," */
		while (isalpha((unsigned char)*p))
			p++;
		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
	}
	d = strtoul(p, &end, 10);
	if (end == p || d < 1 || d > 31)
		return false;
	p = end;
	while (*p == ' ' || *p == '\t' || *p == '-')
		p++;
	m = month_number(p);
	if (m == 0)
		return false;
	p += 3;
	while (isalpha((unsigned char)*p) || *p == ' ' || *p == '\t' ||
	       *p == '-')
		p++;
	y = strtoul(p, &end, 10);
	if (end == p)
		return false;
	if (end - p <= 2)
		y += y < 50 ? 2000 : 1900;	/* RFC 5322 4.3 */
	else if (end - p == 3)
		y += 1900;
	*day_r = days_from_civil((int64_t)y, m, (unsigned int)d);
	return true;
}

/* ---- parsing ------------------------------------------------------------ */

static struct search_node *parse_key(struct search_parser *p,
				     unsigned int depth);

/* parser_fail - record a syntax error; returns NULL */
static struct search_node *parser_fail(struct search_parser *p, int error,
				       const char *text)
{
	if (p->error == 0) {
		p->error = error;
		p->error_text = text;
	}
	return NULL;
}

/* next_arg - the next argument, NULL at EOL */
static const struct imap_arg *next_arg(struct search_parser *p)
{
	const struct imap_arg *arg = &p->args[p->pos];

	if (imap_arg_is_eol(arg))
		return NULL;
	p->pos++;
	return arg;
}

/* next_astring - an astring argument */
static const char *next_astring(struct search_parser *p, size_t *len_r)
{
	const struct imap_arg *arg = next_arg(p);
	const char *str;

	if (arg == NULL || !imap_arg_get_astring(arg, &str))
		return NULL;
	*len_r = arg->len;
	return str;
}

/* needle_set - convert a search string to case-folded UTF-8 */
static bool needle_set(struct search_parser *p, struct search_node *node,
		       const char *str, size_t len)
{
	struct buffer utf8, folded;
	const char *cs = p->prog->charset;

	buffer_init(&utf8, 0);
	if (cs == NULL || strcasecmp(cs, "UTF-8") == 0 ||
	    strcasecmp(cs, "US-ASCII") == 0)
		(void)buffer_append(&utf8, str, len);
	else if (mime_charset_to_utf8(cs, str, len, &utf8) < 0) {
		buffer_clear(&utf8);
		(void)parser_fail(p, IMAP_SEARCH_PARSE_BADCHARSET,
				  "Unknown charset");
		return false;
	}
	buffer_init(&folded, 0);
	mime_utf8_casefold((const char *)buffer_cstr(&utf8), utf8.used,
			   &folded);
	buffer_clear(&utf8);
	node->needle = buffer_export(&folded, &node->needle_len);
	return true;
}

/* parse_string_key - BODY/TEXT/SUBJECT/FROM/... "string" */
static struct search_node *parse_string_key(struct search_parser *p,
					    enum search_type type,
					    const char *field)
{
	struct search_node *node;
	const char *str, *name = field;
	size_t len;

	if (type == SEARCH_HEADER && name == NULL) {
		name = next_astring(p, &len);
		if (name == NULL || len == 0)
			return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
					   "HEADER needs a field name");
	}
	str = next_astring(p, &len);
	if (str == NULL)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Missing search string");
	node = node_new(type);
	if (name != NULL)
		node->field = mem_strdup(name);
	if (!needle_set(p, node, str, len)) {
		node_free(node);
		return NULL;
	}
	return node;
}

/* parse_number_key - LARGER/SMALLER/OLDER/YOUNGER/MODSEQ n */
static struct search_node *parse_number_key(struct search_parser *p,
					    enum search_type type)
{
	const struct imap_arg *arg = next_arg(p);
	struct search_node *node;
	const char *atom;
	uint64_t num;

	if (arg == NULL || !imap_arg_get_atom(arg, &atom) ||
	    str_to_uint64(atom, &num) < 0)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD, "Invalid number");
	if ((type == SEARCH_OLDER || type == SEARCH_YOUNGER) && num == 0)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Invalid interval");
	node = node_new(type);
	node->num = num;
	return node;
}

/* parse_date_key - BEFORE/ON/SINCE/SENT* date */
static struct search_node *parse_date_key(struct search_parser *p,
					  enum search_type type)
{
	const char *str;
	struct search_node *node;
	int64_t t;
	size_t len;

	str = next_astring(p, &len);
	if (str == NULL || !imap_date_parse(str, &t))
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD, "Invalid date");
	node = node_new(type);
	node->num = (uint64_t)(t >= 0 ? t / 86400 : (t - 86399) / 86400);
	return node;
}

/* parse_objectid_key - EMAILID/THREADID objectid (RFC 8474: 1*255 of
   ALPHA, DIGIT, "_" and "-") */
static struct search_node *parse_objectid_key(struct search_parser *p,
					      enum search_type type)
{
	struct search_node *node;
	const char *str;
	size_t len;

	str = next_astring(p, &len);
	if (str == NULL || len == 0 || len > 255 || strlen(str) != len)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD, "Invalid object id");
	for (size_t i = 0; i < len; i++) {
		if (!isalnum((unsigned char)str[i]) && str[i] != '_' &&
		    str[i] != '-')
			return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
					   "Invalid object id");
	}
	node = node_new(type);
	node->field = mem_strdup(str);
	return node;
}

/* parse_modseq_key - MODSEQ ["entry" type] n (RFC 7162) */
static struct search_node *parse_modseq_key(struct search_parser *p)
{
	const struct imap_arg *arg = &p->args[p->pos];

	if (arg->type == IMAP_ARG_STRING || arg->type == IMAP_ARG_LITERAL) {
		const struct imap_arg *type = &p->args[p->pos + 1];
		if (!imap_arg_atom_equals(type, "priv") &&
		    !imap_arg_atom_equals(type, "shared") &&
		    !imap_arg_atom_equals(type, "all"))
			return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
					   "Invalid MODSEQ entry type");
		p->pos += 2;
	}
	p->prog->uses_modseq = true;
	return parse_number_key(p, SEARCH_MODSEQ);
}

/* parse_keyword_key - KEYWORD / UNKEYWORD flag */
static struct search_node *parse_keyword_key(struct search_parser *p,
					     bool negate)
{
	const struct imap_arg *arg = next_arg(p);
	struct search_node *node;
	const char *atom;
	unsigned int count = mailbox_keyword_count(p->prog->box);

	if (arg == NULL || !imap_arg_get_atom(arg, &atom))
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Invalid keyword");
	node = node_new(SEARCH_KEYWORD);
	node->negate = negate;
	node->keyword = -1;
	for (unsigned int i = 0; i < count; i++) {
		if (strcasecmp(mailbox_keyword_name(p->prog->box, i),
			       atom) == 0)
			node->keyword = (int)i;
	}
	return node;
}

/* parse_set_key - a sequence set, or UID set */
static struct search_node *parse_set_key(struct search_parser *p,
					 const char *atom, bool uid)
{
	struct imap_seqset set;
	struct search_node *node;
	const char *error;
	int ret = 0;

	if (imap_seqset_parse(atom, &set, &error) < 0)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD, error);
	node = node_new(SEARCH_UIDS);
	if (mailbox_count(p->prog->box) > 0 || set.saved)
		ret = imap_seqset_to_uids(p->prog->client, &set, uid,
					  &node->uids, &node->uid_count);
	imap_seqset_free(&set);
	if (ret < 0) {
		node_free(node);
		return parser_fail(p, IMAP_SEARCH_PARSE_BADSEQ,
				   "Invalid message sequence number");
	}
	return node;
}

/* parse_list - keys up to the end of a list (or of the arguments) */
static struct search_node *parse_list(struct search_parser *p,
				      const struct imap_arg *list,
				      unsigned int depth)
{
	const struct imap_arg *saved_args = p->args;
	size_t saved_pos = p->pos;
	struct search_node *node = node_new(SEARCH_AND), *child;

	p->args = list;
	p->pos = 0;
	while (!imap_arg_is_eol(&p->args[p->pos])) {
		child = parse_key(p, depth + 1);
		if (child == NULL) {
			node_free(node);
			node = NULL;
			break;
		}
		node_add_child(node, child);
	}
	if (node != NULL && node->child_count == 0) {
		node_free(node);
		node = parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Empty search key list");
	}
	p->args = saved_args;
	p->pos = saved_pos;
	return node;
}

/* parse_logic_key - NOT key, OR key key */
static struct search_node *parse_logic_key(struct search_parser *p,
					   enum search_type type,
					   unsigned int depth)
{
	struct search_node *node = node_new(type), *child;
	size_t n = type == SEARCH_OR ? 2 : 1;

	for (size_t i = 0; i < n; i++) {
		child = parse_key(p, depth + 1);
		if (child == NULL) {
			node_free(node);
			return NULL;
		}
		node_add_child(node, child);
	}
	return node;
}

/* flags_key - the flag criteria; NULL if name is not one */
static struct search_node *flags_key(const char *name)
{
	static const struct {
		const char *name;
		uint32_t set, clear;
	} map[] = {
		{ "ANSWERED", MAIL_ANSWERED, 0 }, { "DELETED", MAIL_DELETED, 0 },
		{ "DRAFT", MAIL_DRAFT, 0 }, { "FLAGGED", MAIL_FLAGGED, 0 },
		{ "SEEN", MAIL_SEEN, 0 }, { "RECENT", MAIL_RECENT, 0 },
		{ "NEW", MAIL_RECENT, MAIL_SEEN }, { "OLD", 0, MAIL_RECENT },
		{ "UNANSWERED", 0, MAIL_ANSWERED },
		{ "UNDELETED", 0, MAIL_DELETED }, { "UNDRAFT", 0, MAIL_DRAFT },
		{ "UNFLAGGED", 0, MAIL_FLAGGED }, { "UNSEEN", 0, MAIL_SEEN },
	};
	struct search_node *node;

	for (size_t i = 0; i < N_ELEMENTS(map); i++) {
		if (strcasecmp(name, map[i].name) != 0)
			continue;
		node = node_new(SEARCH_FLAGS);
		node->set_mask = map[i].set;
		node->clear_mask = map[i].clear;
		return node;
	}
	return NULL;
}

/* typed_key - keys with one typed argument; NULL + no error if unknown */
static struct search_node *typed_key(struct search_parser *p, const char *name,
				     bool *known_r)
{
	static const struct {
		const char *name;
		enum search_type type;
		char kind;	/* s: string, h: header field, n: number,
				   d: date, o: object id */
		const char *field;
	} map[] = {
		{ "BCC", SEARCH_HEADER, 'h', "Bcc" },
		{ "CC", SEARCH_HEADER, 'h', "Cc" },
		{ "FROM", SEARCH_HEADER, 'h', "From" },
		{ "TO", SEARCH_HEADER, 'h', "To" },
		{ "SUBJECT", SEARCH_HEADER, 'h', "Subject" },
		{ "HEADER", SEARCH_HEADER, 'h', NULL },
		{ "BODY", SEARCH_BODY, 's', NULL },
		{ "TEXT", SEARCH_TEXT, 's', NULL },
		{ "LARGER", SEARCH_LARGER, 'n', NULL },
		{ "SMALLER", SEARCH_SMALLER, 'n', NULL },
		{ "OLDER", SEARCH_OLDER, 'n', NULL },
		{ "YOUNGER", SEARCH_YOUNGER, 'n', NULL },
		{ "BEFORE", SEARCH_BEFORE, 'd', NULL },
		{ "ON", SEARCH_ON, 'd', NULL },
		{ "SINCE", SEARCH_SINCE, 'd', NULL },
		{ "SENTBEFORE", SEARCH_SENTBEFORE, 'd', NULL },
		{ "SENTON", SEARCH_SENTON, 'd', NULL },
		{ "SENTSINCE", SEARCH_SENTSINCE, 'd', NULL },
		{ "SAVEDBEFORE", SEARCH_SAVEDBEFORE, 'd', NULL },
		{ "SAVEDON", SEARCH_SAVEDON, 'd', NULL },
		{ "SAVEDSINCE", SEARCH_SAVEDSINCE, 'd', NULL },
		{ "EMAILID", SEARCH_EMAILID, 'o', NULL },
		{ "THREADID", SEARCH_THREADID, 'o', NULL },
	};

	*known_r = true;
	for (size_t i = 0; i < N_ELEMENTS(map); i++) {
		if (strcasecmp(name, map[i].name) != 0)
			continue;
		switch (map[i].kind) {
		case 'n':
			return parse_number_key(p, map[i].type);
		case 'd':
			return parse_date_key(p, map[i].type);
		case 'o':
			return parse_objectid_key(p, map[i].type);
		default:
			return parse_string_key(p, map[i].type, map[i].field);
		}
	}
	*known_r = false;
	return NULL;
}

/* parse_atom_key - a key that starts with an atom */
static struct search_node *parse_atom_key(struct search_parser *p,
					  const char *atom, unsigned int depth)
{
	struct search_node *node;
	const struct imap_arg *arg;
	const char *set;
	bool known;

	if (isdigit((unsigned char)atom[0]) || atom[0] == '*' ||
	    atom[0] == '$')
		return parse_set_key(p, atom, false);
	if (strcasecmp(atom, "ALL") == 0 ||
	    strcasecmp(atom, "SAVEDATESUPPORTED") == 0)
		return node_new(SEARCH_ALL);
	/* RFC 9051 has no \Recent: RECENT, NEW and OLD are rev1 keys */
	if ((p->prog->client->enabled & IMAP_ENABLED_REV2) != 0 &&
	    (strcasecmp(atom, "RECENT") == 0 || strcasecmp(atom, "NEW") == 0 ||
	     strcasecmp(atom, "OLD") == 0))
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "No \\Recent in IMAP4rev2");
	if ((node = flags_key(atom)) != NULL)
		return node;
	if (strcasecmp(atom, "NOT") == 0)
		return parse_logic_key(p, SEARCH_NOT, depth);
	if (strcasecmp(atom, "OR") == 0)
		return parse_logic_key(p, SEARCH_OR, depth);
	if (strcasecmp(atom, "KEYWORD") == 0 ||
	    strcasecmp(atom, "UNKEYWORD") == 0)
		return parse_keyword_key(p, atom[0] == 'U' || atom[0] == 'u');
	if (strcasecmp(atom, "MODSEQ") == 0)
		return parse_modseq_key(p);
	if (strcasecmp(atom, "UID") == 0) {
		arg = next_arg(p);
		if (arg == NULL || !imap_arg_get_atom(arg, &set))
			return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
					   "Invalid UID set");
		return parse_set_key(p, set, true);
	}
	node = typed_key(p, atom, &known);
	if (!known)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Unknown search key");
	return node;
}

/* parse_key - one search key */
static struct search_node *parse_key(struct search_parser *p,
				     unsigned int depth)
{
	const struct imap_arg *arg = next_arg(p), *list;
	const char *atom;
	size_t count;

	if (depth > IMAP_SEARCH_DEPTH_MAX)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Search program nested too deeply");
	if (arg == NULL)
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Missing search key");
	if (imap_arg_get_list(arg, &list, &count))
		return parse_list(p, list, depth);
	if (!imap_arg_get_atom(arg, &atom))
		return parser_fail(p, IMAP_SEARCH_PARSE_BAD,
				   "Invalid search key");
	return parse_atom_key(p, atom, depth);
}

/* node_leaf_cost - 0 view only, 1 header, 2 body */
static int node_leaf_cost(const struct search_node *node)
{
	switch (node->type) {
	case SEARCH_HEADER:
	case SEARCH_SENTBEFORE:
	case SEARCH_SENTON:
	case SEARCH_SENTSINCE:
		return 1;
	case SEARCH_BODY:
	case SEARCH_TEXT:
		return 2;
	default:
		return 0;
	}
}

/* node_order - compute costs bottom-up and put cheap children first
   (stable insertion sort: keys are only 0..2, so it stays linear-ish) */
static void node_order(struct search_node *node)
{
	node->cost = node_leaf_cost(node);
	for (size_t i = 0; i < node->child_count; i++) {
		node_order(node->children[i]);
		if (node->children[i]->cost > node->cost)
			node->cost = node->children[i]->cost;
	}
	if (node->type != SEARCH_AND && node->type != SEARCH_OR)
		return;
	for (size_t i = 1; i < node->child_count; i++) {
		struct search_node *c = node->children[i];
		size_t j = i;
		while (j > 0 && node->children[j - 1]->cost > c->cost) {
			node->children[j] = node->children[j - 1];
			j--;
		}
		node->children[j] = c;
	}
}

/* imap_search_charset_ok - UTF-8, US-ASCII or a charset iconv knows */
bool imap_search_charset_ok(const char *charset)
{
	return strcasecmp(charset, "UTF-8") == 0 ||
		strcasecmp(charset, "US-ASCII") == 0 ||
		mime_charset_is_known(charset);
}

bool imap_search_parse_charset_keys(struct imap_command *cmd,
				    const struct imap_arg *args,
				    struct imap_search_program **program_r)
{
	const char *charset, *error;
	int ret;

	if (!imap_arg_get_astring(&args[0], &charset)) {
		imap_command_bad(cmd, "Missing charset");
		return false;
	}
	if (!imap_search_charset_ok(charset)) {
		imap_command_no(cmd, "[BADCHARSET (UTF-8 US-ASCII)] "
				"Unsupported charset");
		return false;
	}
	if (imap_arg_is_eol(&args[1])) {
		imap_command_bad(cmd, "Missing search keys");
		return false;
	}
	ret = imap_search_parse(cmd->client, &args[1], charset, program_r, &error);
	if (ret == IMAP_SEARCH_PARSE_OK)
		return true;
	if (ret == IMAP_SEARCH_PARSE_BADCHARSET)
		imap_command_no(cmd, "[BADCHARSET (UTF-8 US-ASCII)] %s", error);
	else
		imap_command_bad(cmd, "%s", error);
	return false;
}

/* imap_search_parse - the whole program */
int imap_search_parse(struct imap_client *client, const struct imap_arg *args,
		      const char *charset,
		      struct imap_search_program **program_r,
		      const char **error_r)
{
	struct imap_search_program *prog = mem_zalloc(sizeof(*prog));
	struct search_parser p = { prog, args, 0, 0, NULL };

	prog->client = client;
	prog->box = client->box;
	prog->charset = charset;
	prog->cur.sent_day = INT64_MIN;
	prog->root = parse_list(&p, args, 0);
	if (prog->root == NULL) {
		*error_r = p.error_text != NULL ? p.error_text : "Bad search";
		imap_search_free(&prog);
		*program_r = NULL;
		return p.error != 0 ? p.error : IMAP_SEARCH_PARSE_BAD;
	}
	node_order(prog->root);
	*program_r = prog;
	return IMAP_SEARCH_PARSE_OK;
}

bool imap_search_uses_modseq(const struct imap_search_program *program)
{
	return program->uses_modseq;
}

/* ---- the message's text ----------------------------------------------- */

/* message_reset - forget what was read of the previous message */
static void message_reset(struct search_message *m)
{
	imap_message_deinit(&m->msg);
	for (size_t i = 0; i < m->field_count; i++) {
		free(m->fields[i].name);
		free(m->fields[i].value);
	}
	free(m->fields);
	m->fields = NULL;
	m->field_count = 0;
	buffer_clear(&m->header_text);
	buffer_clear(&m->body_text);
	m->header_loaded = m->body_loaded = false;
	m->sent_day = INT64_MIN;
}

/* The first read of a header: most headers fit, and little of the body
   is read with them (SORT/THREAD read thousands of headers). */
#define HEADER_FIRST_READ (16 * 1024)

/* imap_search_header_read - the raw header of the message (up to the blank line) */
void imap_search_header_read(struct imap_message *msg, struct buffer *raw)
{
	uint64_t offset = 0;
	const char *end;

	while (raw->used < IMAP_HEADER_MEMORY_MAX) {
		size_t before = raw->used;
		size_t chunk = before == 0 ? HEADER_FIRST_READ :
			IMAP_FETCH_CHUNK;
		if (imap_message_read(msg, offset, offset + chunk, chunk,
				      raw) < 0 ||
		    raw->used == before)
			break;
		offset += raw->used - before;
		end = strstr(buffer_cstr(raw), "\n\n");
		if (end == NULL)
			end = strstr(buffer_cstr(raw), "\n\r\n");
		if (end != NULL) {
			buffer_truncate(raw, (size_t)(end - (const char *)raw->data) + 1);
			break;
		}
	}
}

/* search_field_store - remember one field whose value is already decoded and
   case-folded (value is taken over) */
static void search_field_store(struct search_message *m, const char *name,
			size_t name_len, char *value, size_t value_len)
{
	struct search_header_field *f;

	m->fields = mem_realloc(m->fields, (m->field_count + 1) *
				sizeof(*m->fields));
	f = &m->fields[m->field_count++];
	f->name = mem_strndup(name, name_len);
	f->value = value;
	f->value_len = value_len;
	for (size_t i = 0; i < name_len; i++)	/* names are ASCII */
		(void)buffer_append_byte(&m->header_text, (unsigned char)
					 tolower((unsigned char)f->name[i]));
	(void)buffer_append(&m->header_text, ": ", 2);
	(void)buffer_append(&m->header_text, f->value, f->value_len);
	(void)buffer_append(&m->header_text, "\n", 1);
}

/* field_add - one unfolded field: decode, fold, remember */
static void field_add(struct search_message *m, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	struct buffer dec, fold;
	size_t name_len, value_len;
	char *value;

	if (colon == NULL)
		return;
	name_len = (size_t)(colon - line);
	while (name_len > 0 && (line[name_len - 1] == ' ' ||
				line[name_len - 1] == '\t'))
		name_len--;
	buffer_init(&dec, 0);
	mime_header_decode(colon + 1, len - (size_t)(colon + 1 - line), &dec);
	buffer_init(&fold, 0);
	mime_utf8_casefold(buffer_cstr(&dec), dec.used, &fold);
	buffer_clear(&dec);
	value = buffer_export(&fold, &value_len);
	search_field_store(m, line, name_len, value, value_len);
}

/*
 * The decoded header goes into the mailbox cache (MAIL_CACHE_SEARCH_HEADER)
 * so that the next SEARCH on header criteria - on any node - does not
 * open the message file again. Format: for each field, a 4-byte name
 * length, the name, a 4-byte value length, the value (host byte order,
 * like the rest of the cache). Headers whose decoded form is larger than
 * SEARCH_HEADER_CACHE_MAX are not cached (they are rare, and read again).
 */
#define SEARCH_HEADER_CACHE_MAX (64 * 1024)

/* cache_get_chunk - one length-prefixed piece; false when malformed */
static bool cache_get_chunk(const unsigned char **p, const unsigned char *end,
			    const char **data_r, size_t *len_r)
{
	uint32_t len;

	if ((size_t)(end - *p) < sizeof(len))
		return false;
	memcpy(&len, *p, sizeof(len));
	*p += sizeof(len);
	if ((size_t)(end - *p) < len)
		return false;
	*data_r = (const char *)*p;
	*len_r = len;
	*p += len;
	return true;
}

/* header_from_cache - the fields from the cache; false if not there */
static bool header_from_cache(struct search_message *m)
{
	const unsigned char *p, *end;
	const void *data;
	size_t size;

	if (mailbox_cache_lookup(m->msg.box, m->msg.uid,
				 MAIL_CACHE_SEARCH_HEADER, &data, &size) <= 0)
		return false;
	p = data;
	end = p + size;
	while (p < end) {
		const char *name, *value;
		size_t name_len, value_len;

		if (!cache_get_chunk(&p, end, &name, &name_len) ||
		    !cache_get_chunk(&p, end, &value, &value_len)) {
			/* damaged: forget what was taken, read the file */
			log_warn("search: bad cached header of UID %u in %s",
				 m->msg.uid, mailbox_name(m->msg.box));
			for (size_t i = 0; i < m->field_count; i++) {
				free(m->fields[i].name);
				free(m->fields[i].value);
			}
			m->field_count = 0;
			buffer_reset(&m->header_text);
			return false;
		}
		search_field_store(m, name, name_len, mem_strndup(value, value_len),
			    value_len);
	}
	return true;
}

/* header_to_cache - remember the fields for the next search */
static void header_to_cache(struct search_message *m)
{
	struct buffer out;
	bool fits = true;

	buffer_init(&out, SEARCH_HEADER_CACHE_MAX);
	for (size_t i = 0; i < m->field_count && fits; i++) {
		uint32_t name_len = (uint32_t)strlen(m->fields[i].name);
		uint32_t value_len = (uint32_t)m->fields[i].value_len;

		fits = buffer_append(&out, &name_len, sizeof(name_len)) == 0 &&
			buffer_append(&out, m->fields[i].name, name_len) == 0 &&
			buffer_append(&out, &value_len, sizeof(value_len)) == 0 &&
			buffer_append(&out, m->fields[i].value, value_len) == 0;
	}
	if (fits && out.used > 0)
		mailbox_cache_add(m->msg.box, m->msg.uid,
				  MAIL_CACHE_SEARCH_HEADER, out.data, out.used);
	buffer_clear(&out);
}

/* header_load - split the header into fields (continuations joined) */
static void header_load(struct search_message *m)
{
	struct buffer raw;
	const char *p, *end, *field = NULL;

	if (m->header_loaded)
		return;
	m->header_loaded = true;
	if (header_from_cache(m))
		return;
	buffer_init(&raw, 0);
	imap_search_header_read(&m->msg, &raw);
	p = (const char *)buffer_cstr(&raw);
	end = p + raw.used;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *next = nl == NULL ? end : nl + 1;
		if (*p != ' ' && *p != '\t') {
			if (field != NULL)
				field_add(m, field, (size_t)(p - field));
			field = p;
		}
		p = next;
	}
	if (field != NULL)
		field_add(m, field, (size_t)(end - field));
	buffer_clear(&raw);
	if (!m->msg.gone && !m->msg.failed)
		header_to_cache(m);
}

/* part_is_text - a leaf whose body BODY searches */
static bool part_is_text(const struct mime_part *part)
{
	return !part->multipart && !part->message &&
		(part->type == NULL || strcasecmp(part->type, "text") == 0);
}

/* part_decode - decoded, case-folded text of one part into body_text */
static void part_decode(struct search_message *m, const struct mime_part *part)
{
	struct mime_decoder *dec = mime_decoder_create(part->encoding,
		mime_part_param(part, "charset"));
	struct buffer raw, text;
	uint64_t offset = part->body_offset;

	buffer_init(&raw, 0);
	buffer_init(&text, IMAP_SEARCH_BODY_MAX);
	while (offset < part->end_offset && text.used < IMAP_SEARCH_BODY_MAX) {
		buffer_reset(&raw);
		if (imap_message_read(&m->msg, offset, part->end_offset,
				      IMAP_FETCH_CHUNK, &raw) < 0 ||
		    raw.used == 0)
			break;
		offset += raw.used;
		mime_decoder_feed(dec, raw.data, raw.used, &text);
	}
	mime_decoder_finish(&dec, &text);
	buffer_clear(&raw);
	if (m->body_text.used + text.used < IMAP_SEARCH_BODY_MAX) {
		mime_utf8_casefold(buffer_cstr(&text), text.used,
				   &m->body_text);
		(void)buffer_append(&m->body_text, "\n", 1);
	}
	buffer_clear(&text);
}

/* parts_decode - every text part of the tree, depth first */
static void parts_decode(struct search_message *m, const struct mime_part *part)
{
	if (part_is_text(part)) {
		part_decode(m, part);
		return;
	}
	for (const struct mime_part *c = part->children; c != NULL; c = c->next)
		parts_decode(m, c);
}

/* body_load - the decoded body text, once per message */
static void body_load(struct search_message *m)
{
	const struct mime_part *root;

	if (m->body_loaded)
		return;
	m->body_loaded = true;
	buffer_init(&m->body_text, IMAP_SEARCH_BODY_MAX + 2);
	root = imap_message_tree(&m->msg);
	if (root != NULL)
		parts_decode(m, root);
}

/* sent_day - the day of the Date: header (internal date as fallback) */
static int64_t sent_day(struct search_message *m)
{
	struct buffer raw;

	if (m->sent_day != INT64_MIN)
		return m->sent_day;
	buffer_init(&raw, 0);
	imap_search_header_read(&m->msg, &raw);
	m->sent_day = local_day(m->rec->internaldate);
	for (const char *p = buffer_cstr(&raw); p != NULL && *p != '\0';) {
		if (strncasecmp(p, "Date:", 5) == 0) {
			int64_t day;
			if (imap_search_date_day(p + 5, &day))
				m->sent_day = day;
			break;
		}
		p = strchr(p, '\n');
		p = p == NULL ? NULL : p + 1;
	}
	buffer_clear(&raw);
	return m->sent_day;
}

/* ---- matching ------------------------------------------------------------ */

/* text_contains - needle in case-folded text (empty needle matches) */
static bool text_contains(const char *text, size_t len,
			  const struct search_node *node)
{
	return node->needle_len == 0 ||
		mime_utf8_contains(text, len, node->needle, node->needle_len);
}

/* match_header - any field of that name containing the needle */
static bool match_header(struct search_message *m,
			 const struct search_node *node)
{
	header_load(m);
	for (size_t i = 0; i < m->field_count; i++) {
		if (strcasecmp(m->fields[i].name, node->field) == 0 &&
		    text_contains(m->fields[i].value, m->fields[i].value_len,
				  node))
			return true;
	}
	return false;
}

/* match_date - BEFORE/ON/SINCE and the SENT* forms */
static bool match_date(struct search_message *m, const struct search_node *node)
{
	bool sent = node->type == SEARCH_SENTBEFORE ||
		node->type == SEARCH_SENTON || node->type == SEARCH_SENTSINCE;
	bool saved = node->type == SEARCH_SAVEDBEFORE ||
		node->type == SEARCH_SAVEDON || node->type == SEARCH_SAVEDSINCE;
	int64_t day = sent ? sent_day(m) :
		local_day(saved && m->rec->savedate != 0 ?
			  m->rec->savedate : m->rec->internaldate);
	int64_t want = (int64_t)node->num;

	switch (node->type) {
	case SEARCH_BEFORE: case SEARCH_SENTBEFORE: case SEARCH_SAVEDBEFORE:
		return day < want;
	case SEARCH_ON: case SEARCH_SENTON: case SEARCH_SAVEDON:
		return day == want;
	default:
		return day >= want;
	}
}

static bool node_match(struct search_message *m,
		       const struct search_node *node);

/* match_children - AND / OR / NOT */
static bool match_children(struct search_message *m,
			   const struct search_node *node)
{
	switch (node->type) {
	case SEARCH_AND:
		for (size_t i = 0; i < node->child_count; i++) {
			if (!node_match(m, node->children[i]))
				return false;
		}
		return true;
	case SEARCH_OR:
		return node_match(m, node->children[0]) ||
			node_match(m, node->children[1]);
	default:
		return !node_match(m, node->children[0]);
	}
}

/* uid_cmp - bsearch comparison */
static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* node_match - one node against the current message */
static bool node_match(struct search_message *m, const struct search_node *node)
{
	const struct mail_record *rec = m->rec;
	int64_t age = (int64_t)time(NULL) - rec->internaldate;

	switch (node->type) {
	case SEARCH_AND: case SEARCH_OR: case SEARCH_NOT:
		return match_children(m, node);
	case SEARCH_ALL:
		return true;
	case SEARCH_FLAGS:
		return (rec->flags & node->set_mask) == node->set_mask &&
			(rec->flags & node->clear_mask) == 0;
	case SEARCH_KEYWORD:
		return (node->keyword >= 0 &&
			(rec->keywords & (1ULL << node->keyword)) != 0) !=
			node->negate;
	case SEARCH_LARGER:
		return rec->vsize > node->num;
	case SEARCH_SMALLER:
		return rec->vsize < node->num;
	case SEARCH_OLDER:
		return age >= (int64_t)node->num;
	case SEARCH_YOUNGER:
		return age <= (int64_t)node->num;
	case SEARCH_UIDS:
		return node->uid_count > 0 &&
			bsearch(&rec->uid, node->uids, node->uid_count,
				sizeof(uint32_t), uid_cmp) != NULL;
	case SEARCH_MODSEQ:
		return rec->modseq >= node->num;
	case SEARCH_EMAILID: {
		char id[MAILBOX_EMAIL_ID_SIZE];

		mailbox_email_id(rec->base, id);
		return strcmp(id, node->field) == 0;
	}
	case SEARCH_THREADID:
		return false;
	case SEARCH_HEADER:
		return match_header(m, node);
	case SEARCH_BODY:
		body_load(m);
		return text_contains((const char *)buffer_cstr(&m->body_text),
				     m->body_text.used, node);
	case SEARCH_TEXT:
		header_load(m);
		if (text_contains(buffer_cstr(&m->header_text),
				  m->header_text.used, node))
			return true;
		body_load(m);
		return text_contains(buffer_cstr(&m->body_text),
				     m->body_text.used, node);
	default:
		return match_date(m, node);
	}
}

/* imap_search_match - does this message match the program? */
bool imap_search_match(struct imap_search_program *program,
		       const struct mail_record *rec, uint32_t seq)
{
	struct search_message *m = &program->cur;
	bool ret;

	imap_message_init(&m->msg, program->box, rec->uid);
	m->rec = rec;
	m->seq = seq;
	ret = node_match(m, program->root);
	message_reset(m);
	return ret;
}

/* imap_search_free - free the program */
void imap_search_free(struct imap_search_program **program)
{
	struct imap_search_program *prog = *program;

	if (prog == NULL)
		return;
	message_reset(&prog->cur);
	node_free(prog->root);
	free(prog);
	*program = NULL;
}
