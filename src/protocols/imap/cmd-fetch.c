/*
 * cmd-fetch.c - FETCH and UID FETCH (RFC 9051 6.4.5 / 7.5.2, RFC 3501
 * rev1 items, RFC 7162 MODSEQ, CHANGEDSINCE and QRESYNC's VANISHED).
 *
 * UID FETCH ... (CHANGEDSINCE m VANISHED) (RFC 7162 3.2.6, QRESYNC
 * enabled) first sends "* VANISHED (EARLIER) uids": the UIDs of the set
 * that the store's expunge history says were expunged after m; when the
 * history does not reach back to m, every UID of the set (up to
 * UIDNEXT-1) not in the view, which may name UIDs never assigned.
 *
 * The item list is parsed first into struct fetch_item (a bad item is a
 * BAD before any output). Then each message is answered on its own: the
 * response is built in a small buffer and written; message text (BODY[],
 * RFC822, sections) is streamed from the file as a literal whose size
 * comes from the view (vsize) or the MIME tree (header_vsize/body_vsize),
 * so neither a huge message nor a huge sequence set is ever held in
 * memory. Only the UID array of the set is (4 bytes a message).
 *
 * Cheap items (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ, RFC 8514
 * SAVEDATE, RFC 8474 EMAILID and THREADID) come from the view and never
 * open the file. ENVELOPE, BODY and BODYSTRUCTURE come
 * from the mailbox cache when present; otherwise from the MIME tree, which
 * is itself cached (imap-fetch.c), and the text is added to the cache.
 *
 * \Seen: non-PEEK body items on a read-write mailbox set \Seen with one
 * mailbox_store() for all the messages that lack it, before any response
 * is written; those messages get FLAGS in their response.
 *
 * Messages expunged by another session but not yet reported
 * (MAIL_EXPUNGED, or a file that vanished) get what the view still has
 * (UID, FLAGS, ...), no body items, and the tagged reply becomes
 * "NO [EXPUNGEISSUED]" (RFC 5530). A file that cannot be read (I/O
 * error, logged) is treated the same way, with "NO [UNAVAILABLE]".
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/store.h"
#include "protocols/mime/mime-part.h"
#include "protocols/mime/imap-bodystructure.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"
#include "imap-fetch.h"

#include <ctype.h>
#include <stdlib.h>
#include <strings.h>

/* Most items in one FETCH (after macro expansion). */
#define FETCH_ITEMS_MAX 100
/* Most header field names in one HEADER.FIELDS list. */
#define FETCH_FIELDS_MAX 100

enum fetch_kind {
	FETCH_UID,
	FETCH_FLAGS,
	FETCH_INTERNALDATE,
	FETCH_RFC822_SIZE,
	FETCH_MODSEQ,
	FETCH_SAVEDATE,		/* RFC 8514 */
	FETCH_EMAILID,		/* RFC 8474 */
	FETCH_THREADID,		/* RFC 8474: always NIL */
	FETCH_ENVELOPE,
	FETCH_BODY,
	FETCH_BODYSTRUCTURE,
	FETCH_SECTION,		/* BODY[...], BODY.PEEK[...], RFC822* */
	FETCH_BINARY,		/* BINARY[...], BINARY.PEEK[...] */
	FETCH_BINARY_SIZE,	/* BINARY.SIZE[...] */
};

enum fetch_section {
	SECTION_ALL,		/* "" or a part number alone */
	SECTION_HEADER,
	SECTION_FIELDS,
	SECTION_FIELDS_NOT,
	SECTION_TEXT,
	SECTION_MIME,
};

struct fetch_item {
	enum fetch_kind kind;
	/* FETCH_SECTION: */
	char *label;			/* owned: "BODY[TEXT]", "RFC822" */
	char *part;			/* owned: "1.2" or "" */
	enum fetch_section section;
	char **fields;			/* owned */
	size_t field_count;
	bool partial;
	uint64_t partial_start, partial_count;
	bool sets_seen;			/* not PEEK */
};

struct fetch_context {
	struct imap_command *cmd;
	struct imap_client *client;
	struct mailbox *box;
	struct fetch_item items[FETCH_ITEMS_MAX];
	size_t item_count;
	uint64_t changedsince;		/* 0 = none */
	bool vanished;			/* VANISHED modifier (QRESYNC) */
	uint32_t *seen_uids;		/* owned: \Seen set by this FETCH */
	size_t seen_count;
	bool expunged_seen;
	bool unknown_cte;		/* a BINARY part had an unknown CTE */
	bool read_failed;		/* a message file could not be read */
	bool first_item;		/* no item written yet */
	struct buffer out;		/* the response being built */
};

/* ---- item parsing ---------------------------------------------------- */

/* item_add - append an item; false when there are too many */
static struct fetch_item *item_add(struct fetch_context *ctx,
				   enum fetch_kind kind)
{
	struct fetch_item *item;

	if (ctx->item_count >= FETCH_ITEMS_MAX)
		return NULL;
	item = &ctx->items[ctx->item_count++];
	memset(item, 0, sizeof(*item));
	item->kind = kind;
	return item;
}

/* item_has - is an item of this kind already asked for? */
static bool item_has(const struct fetch_context *ctx, enum fetch_kind kind)
{
	for (size_t i = 0; i < ctx->item_count; i++) {
		if (ctx->items[i].kind == kind)
			return true;
	}
	return false;
}

/* fields_parse - "(From To "X-Y")" into item->fields */
static bool fields_parse(struct fetch_item *item, const char *p)
{
	while (*p == ' ')
		p++;
	if (*p++ != '(')
		return false;
	item->fields = mem_calloc(FETCH_FIELDS_MAX, sizeof(char *));
	for (;;) {
		const char *start;
		while (*p == ' ')
			p++;
		if (*p == ')')
			break;
		if (item->field_count >= FETCH_FIELDS_MAX)
			return false;
		if (*p == '"') {
			start = ++p;
			while (*p != '\0' && *p != '"')
				p++;
			if (*p != '"' || p == start)
				return false;
			item->fields[item->field_count++] =
				mem_strndup(start, (size_t)(p - start));
			p++;
			continue;
		}
		start = p;
		while (*p > ' ' && *p < 127 && *p != ':' && *p != '(' &&
		       *p != ')' && *p != '"')
			p++;
		if (p == start)
			return false;
		item->fields[item->field_count++] =
			mem_strndup(start, (size_t)(p - start));
	}
	return p[1] == '\0' && item->field_count > 0;
}

/* section_suffix - HEADER, HEADER.FIELDS[.NOT] (...), TEXT, MIME */
static bool section_suffix(struct fetch_item *item, const char *p,
			   bool has_part)
{
	if (*p == '\0') {
		item->section = SECTION_ALL;
		return true;
	}
	if (strcasecmp(p, "HEADER") == 0)
		item->section = SECTION_HEADER;
	else if (strcasecmp(p, "TEXT") == 0)
		item->section = SECTION_TEXT;
	else if (strcasecmp(p, "MIME") == 0 && has_part)
		item->section = SECTION_MIME;
	else if (strncasecmp(p, "HEADER.FIELDS.NOT", 17) == 0) {
		item->section = SECTION_FIELDS_NOT;
		return (p[17] == ' ') && fields_parse(item, p + 17);
	} else if (strncasecmp(p, "HEADER.FIELDS", 13) == 0) {
		item->section = SECTION_FIELDS;
		return (p[13] == ' ') && fields_parse(item, p + 13);
	} else
		return false;
	return true;
}

/* section_parse - the text between [ and ] */
static bool section_parse(struct fetch_item *item, const char *spec)
{
	const char *p = spec;

	while (isdigit((unsigned char)*p)) {
		if (*p == '0')
			return false;	/* part numbers are nz-number */
		while (isdigit((unsigned char)*p))
			p++;
		if (p - spec > 200)
			return false;
		if (*p == '.' && isdigit((unsigned char)p[1]))
			p++;
		else
			break;
	}
	item->part = mem_strndup(spec, (size_t)(p - spec));
	if (p != spec) {
		if (*p == '\0')
			return section_suffix(item, p, true);
		if (*p != '.')
			return false;
		p++;
	}
	return section_suffix(item, p, p != spec);
}

/* partial_parse - "<start.count>" */
static bool partial_parse(struct fetch_item *item, const char *p)
{
	char *end;

	if (*p == '\0')
		return true;
	if (*p != '<' || !isdigit((unsigned char)p[1]))
		return false;
	errno = 0;
	item->partial_start = strtoull(p + 1, &end, 10);
	if (*end != '.' || !isdigit((unsigned char)end[1]) || errno != 0)
		return false;
	item->partial_count = strtoull(end + 1, &end, 10);
	if (strcmp(end, ">") != 0 || errno != 0 || item->partial_count == 0)
		return false;
	item->partial = true;
	return true;
}

/* body_section_parse - BODY[...]<..> and BODY.PEEK[...]<..> */
static bool body_section_parse(struct fetch_context *ctx, const char *atom)
{
	bool peek = strncasecmp(atom, "BODY.PEEK[", 10) == 0;
	const char *spec = atom + (peek ? 10 : 5);
	const char *close = strrchr(spec, ']');
	struct fetch_item *item = item_add(ctx, FETCH_SECTION);
	char *inner;
	bool ok;

	if (item == NULL || close == NULL)
		return false;
	inner = mem_strndup(spec, (size_t)(close - spec));
	ok = section_parse(item, inner) && partial_parse(item, close + 1);
	item->label = mem_printf("BODY[%s]", inner);
	free(inner);
	item->sets_seen = !peek;
	return ok;
}

/* binary_parse - BINARY[part]<..>, BINARY.PEEK[part]<..>, BINARY.SIZE[part]
   (RFC 3516: the section is a part number or empty) */
static bool binary_parse(struct fetch_context *ctx, const char *atom)
{
	bool size = strncasecmp(atom, "BINARY.SIZE[", 12) == 0;
	bool peek = strncasecmp(atom, "BINARY.PEEK[", 12) == 0;
	const char *spec = atom + (size || peek ? 12 : 7);
	const char *close = strchr(spec, ']');
	struct fetch_item *item = item_add(ctx, size ? FETCH_BINARY_SIZE :
					   FETCH_BINARY);

	char *inner;
	bool ok;

	if (item == NULL || close == NULL)
		return false;
	inner = mem_strndup(spec, (size_t)(close - spec));
	item->label = mem_printf("%s[%s]", size ? "BINARY.SIZE" : "BINARY",
				 inner);
	item->sets_seen = !size && !peek;
	ok = section_parse(item, inner) && item->section == SECTION_ALL;
	free(inner);
	if (!ok)
		return false;
	return size ? close[1] == '\0' : partial_parse(item, close + 1);
}

/* rfc822_add - the rev1 items RFC822, RFC822.HEADER, RFC822.TEXT */
static bool rfc822_add(struct fetch_context *ctx, const char *label,
		       enum fetch_section section, bool sets_seen)
{
	struct fetch_item *item = item_add(ctx, FETCH_SECTION);

	if (item == NULL)
		return false;
	item->label = mem_strdup(label);
	item->part = mem_strdup("");
	item->section = section;
	item->sets_seen = sets_seen;
	return true;
}

/* simple_kind - item names without arguments */
static int simple_kind(const char *name, enum fetch_kind *kind_r)
{
	static const struct { const char *name; enum fetch_kind kind; } map[] = {
		{ "UID", FETCH_UID }, { "FLAGS", FETCH_FLAGS },
		{ "INTERNALDATE", FETCH_INTERNALDATE },
		{ "RFC822.SIZE", FETCH_RFC822_SIZE },
		{ "MODSEQ", FETCH_MODSEQ }, { "ENVELOPE", FETCH_ENVELOPE },
		{ "BODY", FETCH_BODY },
		{ "BODYSTRUCTURE", FETCH_BODYSTRUCTURE },
		{ "SAVEDATE", FETCH_SAVEDATE }, { "EMAILID", FETCH_EMAILID },
		{ "THREADID", FETCH_THREADID },
	};
	for (size_t i = 0; i < N_ELEMENTS(map); i++) {
		if (strcasecmp(name, map[i].name) == 0) {
			*kind_r = map[i].kind;
			return 1;
		}
	}
	return 0;
}

/* item_parse - one item atom (not a macro) */
static bool item_parse(struct fetch_context *ctx, const char *atom)
{
	enum fetch_kind kind;

	if (simple_kind(atom, &kind) > 0)
		return item_has(ctx, kind) || item_add(ctx, kind) != NULL;
	if (strcasecmp(atom, "RFC822") == 0)
		return rfc822_add(ctx, "RFC822", SECTION_ALL, true);
	if (strcasecmp(atom, "RFC822.HEADER") == 0)
		return rfc822_add(ctx, "RFC822.HEADER", SECTION_HEADER, false);
	if (strcasecmp(atom, "RFC822.TEXT") == 0)
		return rfc822_add(ctx, "RFC822.TEXT", SECTION_TEXT, true);
	if (strncasecmp(atom, "BODY[", 5) == 0 ||
	    strncasecmp(atom, "BODY.PEEK[", 10) == 0)
		return body_section_parse(ctx, atom);
	if (strncasecmp(atom, "BINARY[", 7) == 0 ||
	    strncasecmp(atom, "BINARY.PEEK[", 12) == 0 ||
	    strncasecmp(atom, "BINARY.SIZE[", 12) == 0)
		return binary_parse(ctx, atom);
	return false;
}

/* macro_parse - ALL, FAST, FULL; 0 if atom is not a macro */
static int macro_parse(struct fetch_context *ctx, const char *atom)
{
	bool full = strcasecmp(atom, "FULL") == 0;
	bool all = full || strcasecmp(atom, "ALL") == 0;

	if (!all && strcasecmp(atom, "FAST") != 0)
		return 0;
	(void)item_parse(ctx, "FLAGS");
	(void)item_parse(ctx, "INTERNALDATE");
	(void)item_parse(ctx, "RFC822.SIZE");
	if (all)
		(void)item_parse(ctx, "ENVELOPE");
	if (full)
		(void)item_parse(ctx, "BODY");
	return 1;
}

/* items_parse - the item argument: a macro, an item, or a list */
static bool items_parse(struct fetch_context *ctx, const struct imap_arg *arg,
			const char **bad_r)
{
	const struct imap_arg *list;
	const char *atom;
	size_t count;

	if (imap_arg_get_atom(arg, &atom)) {
		*bad_r = atom;
		return macro_parse(ctx, atom) > 0 || item_parse(ctx, atom);
	}
	if (!imap_arg_get_list(arg, &list, &count) || count == 0) {
		*bad_r = "(missing)";
		return false;
	}
	for (size_t i = 0; i < count; i++) {
		if (!imap_arg_get_atom(&list[i], &atom)) {
			*bad_r = "(not an atom)";
			return false;
		}
		*bad_r = atom;
		if (!item_parse(ctx, atom))
			return false;
	}
	return true;
}

/* modifiers_parse - "(CHANGEDSINCE n [VANISHED])" in any order (RFC
   7162); VANISHED only in UID FETCH with QRESYNC enabled */
static bool modifiers_parse(struct fetch_context *ctx,
			    const struct imap_arg *arg)
{
	const struct imap_arg *list;
	const char *num;
	size_t count;

	if (imap_arg_is_eol(arg))
		return true;
	if (!imap_arg_get_list(arg, &list, &count) ||
	    !imap_arg_is_eol(&arg[1]) || count == 0)
		return false;
	for (size_t i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&list[i], "VANISHED") &&
		    !ctx->vanished) {
			ctx->vanished = true;
		} else if (imap_arg_atom_equals(&list[i], "CHANGEDSINCE") &&
			   ctx->changedsince == 0 && i + 1 < count) {
			if (!imap_arg_get_atom(&list[++i], &num) ||
			    str_to_uint64(num, &ctx->changedsince) < 0 ||
			    ctx->changedsince == 0)
				return false;
		} else {
			return false;
		}
	}
	if (ctx->changedsince == 0)
		return false;
	if (ctx->vanished && (!ctx->cmd->uid ||
	    (ctx->client->enabled & IMAP_ENABLED_QRESYNC) == 0))
		return false;
	if (!item_has(ctx, FETCH_MODSEQ))
		(void)item_add(ctx, FETCH_MODSEQ);
	return true;
}

/* vanished_send - "* VANISHED (EARLIER) uids" for the UID set */
static int vanished_send(struct fetch_context *ctx,
			 const struct imap_seqset *set)
{
	uint32_t *uids, top = mailbox_uidnext(ctx->box) - 1;
	struct buffer out;
	size_t count;
	bool complete;
	int ret = 0;

	if (set->saved)
		return 0;
	buffer_init(&out, 0);
	(void)mailbox_expunged_since(ctx->box, ctx->changedsince, &uids,
				     &count, &complete);
	for (size_t i = 0; complete && i < count; i++) {
		if (imap_seqset_contains(set, uids[i]) &&
		    mailbox_lookup_uid(ctx->box, uids[i], NULL) == NULL)
			imap_seqset_append_range(&out, uids[i], uids[i]);
	}
	for (size_t i = 0; !complete && i < set->count; i++) {
		if (set->ranges[i].first > top)
			break;
		imap_seqset_append_missing(&out, ctx->box, set->ranges[i].first,
				set->ranges[i].last < top ?
				set->ranges[i].last : top);
	}
	free(uids);
	if (out.used > 0)
		ret = imap_client_printf(ctx->client,
					 "* VANISHED (EARLIER) %.*s\r\n",
					 (int)out.used, (const char *)out.data);
	buffer_clear(&out);
	return ret;
}

/* items_free - free what the items own */
static void items_free(struct fetch_context *ctx)
{
	for (size_t i = 0; i < ctx->item_count; i++) {
		struct fetch_item *item = &ctx->items[i];
		for (size_t j = 0; j < item->field_count; j++)
			free(item->fields[j]);
		free(item->fields);
		free(item->label);
		free(item->part);
	}
	ctx->item_count = 0;
}

/* ---- \Seen ------------------------------------------------------------ */

/* uid_cmp - bsearch/qsort comparison of UIDs */
static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* seen_set - add \Seen to the messages that lack it (one store call) */
static void seen_set(struct fetch_context *ctx, const uint32_t *uids,
		     size_t count)
{
	bool wanted = false;

	for (size_t i = 0; i < ctx->item_count; i++)
		wanted = wanted || ctx->items[i].sets_seen;
	if (!wanted || ctx->client->box_readonly)
		return;
	ctx->seen_uids = mem_calloc(count + 1, sizeof(uint32_t));
	for (size_t i = 0; i < count; i++) {
		const struct mail_record *rec =
			mailbox_lookup_uid(ctx->box, uids[i], NULL);
		if (rec != NULL &&
		    (rec->flags & (MAIL_SEEN | MAIL_EXPUNGED)) == 0 &&
		    (ctx->changedsince == 0 || rec->modseq > ctx->changedsince))
			ctx->seen_uids[ctx->seen_count++] = uids[i];
	}
	if (ctx->seen_count == 0)
		return;
	if (mailbox_store(ctx->box, ctx->seen_uids, ctx->seen_count,
			  MAILBOX_STORE_ADD, MAIL_SEEN, NULL, 0, NULL,
			  NULL) < 0) {
		log_id_warn(ctx->client->id, "FETCH could not set \\Seen: %s",
			    imap_client_store_error(ctx->client));
		ctx->seen_count = 0;
	}
}

/* seen_changed - did this FETCH set \Seen on uid? */
static bool seen_changed(const struct fetch_context *ctx, uint32_t uid)
{
	return ctx->seen_count > 0 &&
		bsearch(&uid, ctx->seen_uids, ctx->seen_count,
			sizeof(uint32_t), uid_cmp) != NULL;
}

/* ---- writing one message ----------------------------------------------- */

/* out_flush - write the response built so far */
static int out_flush(struct fetch_context *ctx)
{
	int ret = imap_client_write(ctx->client, ctx->out.data, ctx->out.used);

	buffer_reset(&ctx->out);
	return ret;
}

/* item_sep - a space between items */
static void item_sep(struct fetch_context *ctx)
{
	if (!ctx->first_item)
		(void)buffer_append(&ctx->out, " ", 1);
	ctx->first_item = false;
}

/* write_cached_text - ENVELOPE/BODY/BODYSTRUCTURE from cache or tree */
static bool write_cached_text(struct fetch_context *ctx,
			      struct imap_message *msg, enum fetch_kind kind)
{
	enum mail_cache_field field = kind == FETCH_ENVELOPE ?
		MAIL_CACHE_ENVELOPE : kind == FETCH_BODY ?
		MAIL_CACHE_BODY : MAIL_CACHE_BODYSTRUCTURE;
	bool utf8 = (ctx->client->enabled & IMAP_ENABLED_UTF8) != 0;
	const struct mime_part *root;
	const void *data;
	size_t size, before;

	if (mailbox_cache_lookup(ctx->box, msg->uid, field, &data, &size) > 0) {
		(void)buffer_append(&ctx->out, data, size);
		return true;
	}
	root = imap_message_tree(msg);
	if (root == NULL)
		return false;
	before = ctx->out.used;
	if (kind == FETCH_ENVELOPE)
		imap_envelope_write(root, utf8, &ctx->out);
	else
		imap_bodystructure_write(root, kind == FETCH_BODYSTRUCTURE,
					 utf8, &ctx->out);
	if (!utf8)
		mailbox_cache_add(ctx->box, msg->uid, field,
				  ctx->out.data + before, ctx->out.used - before);
	return true;
}

/* header_line_wanted - is this header line's field in the list? */
static bool header_line_wanted(const struct fetch_item *item,
			       const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	size_t name_len;
	bool listed = false;

	if (colon == NULL)
		return false;
	name_len = (size_t)(colon - line);
	while (name_len > 0 && (line[name_len - 1] == ' ' ||
				line[name_len - 1] == '\t'))
		name_len--;
	for (size_t i = 0; i < item->field_count && !listed; i++) {
		listed = strlen(item->fields[i]) == name_len &&
			strncasecmp(item->fields[i], line, name_len) == 0;
	}
	return item->section == SECTION_FIELDS ? listed : !listed;
}

/* header_filter - the header lines of the list (continuations kept) and
   the blank line, CRLF, into out */
static void header_filter(const struct fetch_item *item,
			  const struct buffer *raw, struct buffer *out)
{
	const char *p = (const char *)raw->data, *end = p + raw->used;
	bool keep = false, prev_cr = false;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *next = nl == NULL ? end : nl + 1;
		size_t len = (size_t)(next - p);

		if (*p == '\n' || (*p == '\r' && len > 1 && p[1] == '\n'))
			break;	/* the blank line */
		if (*p != ' ' && *p != '\t')
			keep = header_line_wanted(item, p, len);
		if (keep) {
			imap_crlf_convert((const unsigned char *)p, len,
					  &prev_cr, out);
			if (nl == NULL)
				(void)buffer_append(out, "\r\n", 2);
		}
		p = next;
	}
	(void)buffer_append(out, "\r\n", 2);
}

/* Where a section's text is: a file range with its CRLF size, or
   (HEADER.FIELDS) text in mem. */
struct section_data {
	uint64_t start, end, vsize;
	bool in_memory;
	struct buffer mem;
};
static int section_fields(struct fetch_context *ctx, struct imap_message *msg,
			  const struct fetch_item *item,
			  struct section_data *sd);

/* section_message - the message a HEADER/TEXT section applies to */
static const struct mime_part *section_message(const struct mime_part *part,
					       bool is_root)
{
	if (is_root)
		return part;
	if (part->message && part->children != NULL)
		return part->children;
	return NULL;
}

/* section_root_header - BODY[HEADER] and HEADER.FIELDS of the message
   itself need only its header: no parse of a big body (clients fetch the
   headers of every message when they open a mailbox) */
static int section_root_header(struct fetch_context *ctx,
			       struct imap_message *msg,
			       const struct fetch_item *item,
			       struct section_data *sd)
{
	const struct mime_part *root;
	int ret = imap_message_header_range(msg, &sd->end, &sd->vsize);

	if (ret < 0)
		return -1;
	if (ret == 0) {
		/* a huge header: the tree knows where it ends */
		root = imap_message_tree(msg);
		if (root == NULL)
			return -1;
		sd->end = root->body_offset;
		sd->vsize = root->header_vsize;
	}
	sd->start = 0;
	if (item->section == SECTION_HEADER)
		return 1;
	return section_fields(ctx, msg, item, sd);
}

/* section_resolve - find the bytes of a BODY[...] item: 1, 0 for an
   empty result, -1 when the message is gone */
static int section_resolve(struct fetch_context *ctx, struct imap_message *msg,
			   const struct fetch_item *item,
			   const struct mail_record *rec,
			   struct section_data *sd)
{
	const struct mime_part *root, *part, *m;
	bool is_root = item->part[0] == '\0';

	if (is_root && item->section == SECTION_ALL) {
		sd->start = 0;
		sd->end = UINT64_MAX;
		sd->vsize = rec->vsize;
		return imap_message_open(msg) > 0 ? 1 : -1;
	}
	if (is_root && msg->tree == NULL && (item->section == SECTION_HEADER ||
					     item->section == SECTION_FIELDS ||
					     item->section == SECTION_FIELDS_NOT))
		return section_root_header(ctx, msg, item, sd);
	root = imap_message_tree(msg);
	if (root == NULL)
		return -1;
	part = is_root ? root : mime_part_find(root, item->part);
	if (part == NULL)
		return 0;
	if (item->section == SECTION_ALL) {
		sd->start = part->body_offset;
		sd->end = part->end_offset;
		sd->vsize = part->body_vsize;
		return 1;
	}
	if (item->section == SECTION_MIME) {
		sd->start = part->header_offset;
		sd->end = part->body_offset;
		sd->vsize = part->header_vsize;
		return 1;
	}
	m = section_message(part, is_root);
	if (m == NULL)
		return 0;
	if (item->section == SECTION_TEXT) {
		sd->start = m->body_offset;
		sd->end = m->end_offset;
		sd->vsize = m->body_vsize;
		return 1;
	}
	sd->start = m->header_offset;
	sd->end = m->body_offset;
	sd->vsize = m->header_vsize;
	if (item->section == SECTION_HEADER)
		return 1;
	return section_fields(ctx, msg, item, sd);
}

/* section_fields - HEADER.FIELDS(.NOT): filter the header in memory */
static int section_fields(struct fetch_context *ctx, struct imap_message *msg,
			  const struct fetch_item *item,
			  struct section_data *sd)
{
	struct buffer raw;

	buffer_init(&raw, 0);
	if (imap_message_read(msg, sd->start, sd->end, IMAP_HEADER_MEMORY_MAX,
			      &raw) < 0) {
		buffer_clear(&raw);
		return -1;
	}
	header_filter(item, &raw, &sd->mem);
	buffer_clear(&raw);
	sd->in_memory = true;
	sd->vsize = sd->mem.used;
	return 1;
}

/* write_section - "BODY[...]<n> {size}\r\n" and the data */
static int write_section(struct fetch_context *ctx, struct imap_message *msg,
			 const struct fetch_item *item,
			 const struct mail_record *rec)
{
	struct section_data sd;
	uint64_t skip = 0, count;
	int ret;

	memset(&sd, 0, sizeof(sd));
	buffer_init(&sd.mem, 0);
	ret = section_resolve(ctx, msg, item, rec, &sd);
	if (ret < 0) {
		buffer_clear(&sd.mem);
		return 0;	/* gone: the item is left out */
	}
	if (ret == 0)
		sd.vsize = 0;
	count = sd.vsize;
	if (item->partial) {
		skip = item->partial_start < sd.vsize ?
			item->partial_start : sd.vsize;
		count = sd.vsize - skip < item->partial_count ?
			sd.vsize - skip : item->partial_count;
	}
	item_sep(ctx);
	(void)buffer_append_str(&ctx->out, item->label);
	if (item->partial)
		(void)buffer_printf(&ctx->out, "<%llu>",
				    (unsigned long long)item->partial_start);
	(void)buffer_printf(&ctx->out, " {%llu}\r\n", (unsigned long long)count);
	if (sd.in_memory || ret == 0) {
		if (count > 0)
			(void)buffer_append(&ctx->out, sd.mem.data + skip,
					    (size_t)count);
		buffer_clear(&sd.mem);
		return 0;
	}
	buffer_clear(&sd.mem);
	if (out_flush(ctx) < 0)
		return -1;
	return imap_message_stream(msg, ctx->client, sd.start, sd.end, skip,
				   count);
}

/* write_view_item - items from the view; false if not such an item */
static bool write_view_item(struct fetch_context *ctx,
			    const struct fetch_item *item,
			    const struct mail_record *rec, bool add_flags)
{
	switch (item->kind) {
	case FETCH_UID:
		item_sep(ctx);
		(void)buffer_printf(&ctx->out, "UID %u", rec->uid);
		return true;
	case FETCH_FLAGS:
		if (add_flags)
			return true;	/* written by write_flags() */
		item_sep(ctx);
		(void)buffer_append_str(&ctx->out, "FLAGS (");
		imap_flags_write(&ctx->out, ctx->box,
				 imap_client_visible_flags(ctx->client,
							   rec->flags),
				 rec->keywords);
		(void)buffer_append_str(&ctx->out, ")");
		return true;
	case FETCH_INTERNALDATE:
		item_sep(ctx);
		(void)buffer_append_str(&ctx->out, "INTERNALDATE ");
		imap_date_time_write(&ctx->out, rec->internaldate);
		return true;
	case FETCH_RFC822_SIZE:
		item_sep(ctx);
		(void)buffer_printf(&ctx->out, "RFC822.SIZE %llu",
				    (unsigned long long)rec->vsize);
		return true;
	case FETCH_MODSEQ:
		item_sep(ctx);
		(void)buffer_printf(&ctx->out, "MODSEQ (%llu)",
				    (unsigned long long)rec->modseq);
		return true;
	case FETCH_SAVEDATE:
		/* 0: saved before save dates were kept */
		item_sep(ctx);
		(void)buffer_append_str(&ctx->out, "SAVEDATE ");
		if (rec->savedate == 0)
			(void)buffer_append_str(&ctx->out, "NIL");
		else
			imap_date_time_write(&ctx->out, rec->savedate);
		return true;
	case FETCH_EMAILID: {
		char id[MAILBOX_EMAIL_ID_SIZE];

		mailbox_email_id(rec->base, id);
		item_sep(ctx);
		(void)buffer_printf(&ctx->out, "EMAILID (%s)", id);
		return true;
	}
	case FETCH_THREADID:
		item_sep(ctx);
		(void)buffer_append_str(&ctx->out, "THREADID NIL");
		return true;
	default:
		return false;
	}
}

/* write_flags - FLAGS for a message whose \Seen this FETCH set */
static void write_flags(struct fetch_context *ctx,
			const struct mail_record *rec)
{
	item_sep(ctx);
	(void)buffer_append_str(&ctx->out, "FLAGS (");
	imap_flags_write(&ctx->out, ctx->box,
			 imap_client_visible_flags(ctx->client, rec->flags),
			 rec->keywords);
	(void)buffer_append_str(&ctx->out, ")");
}

/* binary_source - the bytes BINARY[part] is made of: 1 with the range
   and CTE, 0 for a part that does not exist, -1 when gone */
static int binary_source(struct imap_message *msg,
			 const struct fetch_item *item,
			 const struct mail_record *rec,
			 struct section_data *sd, enum imap_cte *cte_r)
{
	const struct mime_part *root, *part;

	*cte_r = IMAP_CTE_IDENTITY;
	if (item->part[0] == '\0') {
		/* the whole message: nothing to decode at the top */
		sd->start = 0;
		sd->end = UINT64_MAX;
		sd->vsize = rec->vsize;
		return imap_message_open(msg) > 0 ? 1 : -1;
	}
	root = imap_message_tree(msg);
	if (root == NULL)
		return -1;
	part = mime_part_find(root, item->part);
	if (part == NULL)
		return 0;
	sd->start = part->body_offset;
	sd->end = part->end_offset;
	sd->vsize = part->body_vsize;
	if (!part->multipart && !part->message)
		*cte_r = imap_cte_parse(part->encoding);
	return 1;
}

/* write_binary - BINARY[part]<partial> and BINARY.SIZE[part] (RFC 3516);
   -1 when the connection is gone */
static int write_binary(struct fetch_context *ctx, struct imap_message *msg,
			const struct fetch_item *item,
			const struct mail_record *rec)
{
	struct section_data sd;
	enum imap_cte cte;
	uint64_t size, skip = 0, count;
	bool has_nul = false;
	int ret;

	memset(&sd, 0, sizeof(sd));
	ret = binary_source(msg, item, rec, &sd, &cte);
	if (ret < 0)
		return 0;
	if (cte == IMAP_CTE_UNKNOWN) {
		ctx->unknown_cte = true;
		return 0;
	}
	size = ret == 0 ? 0 : sd.vsize;
	if (ret > 0 && cte != IMAP_CTE_IDENTITY &&
	    imap_message_decoded_size(msg, cte, sd.start, sd.end, &size,
				      &has_nul) < 0)
		return 0;
	/* identity: NUL bytes come only from a BINARY APPEND (literal8) */
	if (ret > 0 && cte == IMAP_CTE_IDENTITY &&
	    item->kind == FETCH_BINARY &&
	    imap_message_has_nul(msg, sd.start, sd.end, &has_nul) < 0)
		return 0;
	item_sep(ctx);
	if (item->kind == FETCH_BINARY_SIZE) {
		(void)buffer_printf(&ctx->out, "%s %llu", item->label,
				    (unsigned long long)size);
		return 0;
	}
	count = size;
	if (item->partial) {
		skip = item->partial_start < size ? item->partial_start : size;
		count = size - skip < item->partial_count ?
			size - skip : item->partial_count;
	}
	/* RFC 9051 ABNF: the response carries no <offset> for BINARY */
	(void)buffer_printf(&ctx->out, "%s %s{%llu}\r\n", item->label,
			    has_nul ? "~" : "", (unsigned long long)count);
	if (out_flush(ctx) < 0)
		return -1;
	if (ret == 0)
		return 0;
	if (cte == IMAP_CTE_IDENTITY)
		return imap_message_stream(msg, ctx->client, sd.start, sd.end,
					   skip, count);
	return imap_message_stream_decoded(msg, ctx->client, cte, sd.start,
					   sd.end, skip, count);
}

/* write_file_item - items that need the message; -1 connection gone */
static int write_file_item(struct fetch_context *ctx, struct imap_message *msg,
			   const struct fetch_item *item,
			   const struct mail_record *rec)
{
	static const char *const names[] = {
		[FETCH_ENVELOPE] = "ENVELOPE ", [FETCH_BODY] = "BODY ",
		[FETCH_BODYSTRUCTURE] = "BODYSTRUCTURE ",
	};
	size_t mark = ctx->out.used;
	bool first = ctx->first_item;

	if (msg->gone)
		return 0;
	if (item->kind == FETCH_SECTION)
		return write_section(ctx, msg, item, rec);
	if (item->kind == FETCH_BINARY || item->kind == FETCH_BINARY_SIZE)
		return write_binary(ctx, msg, item, rec);
	item_sep(ctx);
	(void)buffer_append_str(&ctx->out, names[item->kind]);
	if (!write_cached_text(ctx, msg, item->kind)) {
		buffer_truncate(&ctx->out, mark);
		ctx->first_item = first;
	}
	return 0;
}

/* fetch_one - the untagged FETCH response of one message */
static int fetch_one(struct fetch_context *ctx, uint32_t uid)
{
	uint32_t index;
	const struct mail_record *found = mailbox_lookup_uid(ctx->box, uid,
							     &index);
	const struct mail_record *rec;
	struct mail_record copy;
	struct imap_message msg;
	bool add_flags;
	int ret = 0;

	if (found == NULL)
		return 0;
	/* the cache adds below may move the view's records: keep a copy */
	copy = *found;
	rec = &copy;
	if (ctx->changedsince != 0 && rec->modseq <= ctx->changedsince)
		return 0;
	add_flags = seen_changed(ctx, uid);
	imap_message_init(&msg, ctx->box, uid);
	msg.gone = (rec->flags & MAIL_EXPUNGED) != 0;
	buffer_reset(&ctx->out);
	(void)buffer_printf(&ctx->out, "* %u FETCH (", index + 1);
	ctx->first_item = true;
	if (add_flags)
		write_flags(ctx, rec);
	if (add_flags && ctx->client->condstore_active &&
	    !item_has(ctx, FETCH_MODSEQ)) {
		/* RFC 7162 3.2: a flag change is reported with its modseq */
		item_sep(ctx);
		(void)buffer_printf(&ctx->out, "MODSEQ (%llu)",
				    (unsigned long long)rec->modseq);
	}
	for (size_t i = 0; i < ctx->item_count && ret == 0; i++) {
		if (!write_view_item(ctx, &ctx->items[i], rec, add_flags))
			ret = write_file_item(ctx, &msg, &ctx->items[i], rec);
	}
	if (msg.gone)
		ctx->expunged_seen = true;
	if (msg.failed)
		ctx->read_failed = true;
	imap_message_deinit(&msg);
	if (ret < 0)
		return -1;
	(void)buffer_append_str(&ctx->out, ")\r\n");
	return out_flush(ctx);
}

/* fetch_prepare - parse the arguments; false after replying BAD */
static bool fetch_prepare(struct fetch_context *ctx, struct imap_seqset *set)
{
	struct imap_command *cmd = ctx->cmd;
	const char *str, *error, *bad = "";

	if (!imap_arg_get_atom(&cmd->args[0], &str) ||
	    imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "Missing arguments");
		return false;
	}
	if (imap_seqset_parse(str, set, &error) < 0) {
		imap_command_bad(cmd, "Invalid sequence set: %s", error);
		return false;
	}
	if (cmd->uid)
		(void)item_add(ctx, FETCH_UID);
	if (!items_parse(ctx, &cmd->args[1], &bad)) {
		imap_command_bad(cmd, "Invalid fetch item %.100s", bad);
		return false;
	}
	if (!modifiers_parse(ctx, &cmd->args[2])) {
		imap_command_bad(cmd, "Invalid fetch modifiers");
		return false;
	}
	return true;
}

/* fetch_run - answer every message of the set */
static int fetch_run(struct fetch_context *ctx, const struct imap_seqset *set)
{
	uint32_t *uids = NULL;
	size_t count = 0;
	int ret = 0;

	if (imap_seqset_to_uids(ctx->client, set, ctx->cmd->uid, &uids,
				&count) < 0) {
		imap_command_bad(ctx->cmd, "Invalid message sequence number");
		return 0;
	}
	if (item_has(ctx, FETCH_MODSEQ))
		ctx->client->condstore_active = true;
	if (ctx->vanished && vanished_send(ctx, set) < 0) {
		free(uids);
		return -1;
	}
	seen_set(ctx, uids, count);
	for (size_t i = 0; i < count && ret == 0; i++)
		ret = fetch_one(ctx, uids[i]);
	free(uids);
	(void)mailbox_cache_flush(ctx->box);
	if (ret < 0)
		return -1;
	if (ctx->unknown_cte)
		imap_command_no(ctx->cmd, "[UNKNOWN-CTE] Unknown "
				"Content-Transfer-Encoding: use BODY[]");
	else if (ctx->expunged_seen)
		imap_command_no(ctx->cmd,
				"[EXPUNGEISSUED] Some messages were expunged");
	else if (ctx->read_failed)
		imap_command_no(ctx->cmd,
				"[UNAVAILABLE] Some messages could not be read");
	else
		imap_command_ok(ctx->cmd, "FETCH completed");
	return 0;
}

/* cmd_fetch - FETCH / UID FETCH */
int cmd_fetch(struct imap_command *cmd)
{
	struct fetch_context *ctx = mem_zalloc(sizeof(*ctx));
	struct imap_seqset set;
	int ret = 0;

	memset(&set, 0, sizeof(set));
	ctx->cmd = cmd;
	ctx->client = cmd->client;
	ctx->box = cmd->client->box;
	buffer_init(&ctx->out, 0);
	if (fetch_prepare(ctx, &set))
		ret = fetch_run(ctx, &set);
	imap_seqset_free(&set);
	items_free(ctx);
	buffer_clear(&ctx->out);
	free(ctx->seen_uids);
	free(ctx);
	return ret;
}
