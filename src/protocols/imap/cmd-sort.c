/*
 * cmd-sort.c - SORT and UID SORT (RFC 5256 section 3), with the RFC 5957
 * DISPLAYFROM / DISPLAYTO keys.
 *
 *   SORT (REVERSE DATE SUBJECT) UTF-8 <search keys>
 *
 * The search keys are parsed and matched by imap-search.c exactly as for
 * SEARCH (same errors: BAD for syntax, NO [BADCHARSET] for an unknown
 * charset). For each match a small entry holds only the keys asked for:
 * numbers (arrival, size, sent date) and strings cut at 1 KiB (base
 * subject, address keys), so memory is bounded by the number of matches,
 * not by message sizes. The header fields come from the cached MIME tree
 * when the mailbox cache has it, else from the header block of the file
 * (imap_search_fields_read()). The entries are then sorted with qsort_r()
 * by the criteria in order; equal entries keep sequence order (RFC 5256:
 * ties are broken by sequence number, REVERSE does not apply to that).
 *
 * Strings compare with i;ascii-casemap (the keys are stored upper-cased).
 * A message expunged by another session before we read its header sorts
 * with empty keys and its internal date; it is still reported, since it
 * is still in this session's view.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"
#include "imap-search.h"

#include <stdlib.h>
#include <string.h>

enum sort_key {
	SORT_ARRIVAL, SORT_CC, SORT_DATE, SORT_FROM, SORT_SIZE, SORT_SUBJECT,
	SORT_TO, SORT_DISPLAYFROM, SORT_DISPLAYTO,
};

/* Most criteria in one SORT (each key makes sense once). */
#define SORT_CRITERIA_MAX 16

struct sort_criterion {
	enum sort_key key;
	bool reverse;
};

/* Per matching message: only the keys asked for are set. */
struct sort_entry {
	uint32_t seq, uid;
	int64_t arrival, date;
	uint64_t size;
	char *subject, *from, *to, *cc;		/* owned; upper-cased */
	char *display_from, *display_to;	/* owned; upper-cased */
};

struct sort_context {
	struct imap_command *cmd;
	struct imap_client *client;
	struct sort_criterion criteria[SORT_CRITERIA_MAX];
	size_t criteria_count;
	struct sort_entry *entries;		/* owned */
	size_t entry_count;
};

/* sort_key_parse - a key name -> key; false if unknown */
static bool sort_key_parse(const struct imap_arg *arg, enum sort_key *key_r)
{
	static const char *const names[] = {
		"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO",
		"DISPLAYFROM", "DISPLAYTO",
	};

	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		if (imap_arg_atom_equals(arg, names[i])) {
			*key_r = (enum sort_key)i;
			return true;
		}
	}
	return false;
}

/* criteria_parse - "(REVERSE DATE SUBJECT)"; false if invalid */
static bool criteria_parse(struct sort_context *ctx, const struct imap_arg *arg)
{
	const struct imap_arg *list;
	size_t count;
	bool reverse = false;

	if (!imap_arg_get_list(arg, &list, &count) || count == 0)
		return false;
	for (size_t i = 0; i < count; i++) {
		struct sort_criterion *c;

		if (imap_arg_atom_equals(&list[i], "REVERSE") && !reverse) {
			reverse = true;
			continue;
		}
		if (ctx->criteria_count == SORT_CRITERIA_MAX)
			return false;
		c = &ctx->criteria[ctx->criteria_count];
		if (!sort_key_parse(&list[i], &c->key))
			return false;
		c->reverse = reverse;
		ctx->criteria_count++;
		reverse = false;
	}
	return !reverse;	/* REVERSE must be followed by a key */
}

/* sort_wants - does any criterion use key? */
static bool sort_wants(const struct sort_context *ctx, enum sort_key key)
{
	for (size_t i = 0; i < ctx->criteria_count; i++) {
		if (ctx->criteria[i].key == key)
			return true;
	}
	return false;
}

/* entry_address_keys - FROM/TO/CC and DISPLAY* keys of one field */
static void entry_address_keys(const char *field, bool want_mailbox,
			       bool want_display, char **mailbox_r,
			       char **display_r)
{
	char *mailbox, *display;

	if (!want_mailbox && !want_display)
		return;
	imap_search_address_keys(field, &mailbox, &display);
	if (want_mailbox)
		*mailbox_r = mailbox;
	else
		free(mailbox);
	if (want_display)
		*display_r = display;
	else
		free(display);
}

/* entry_fill - read the header keys of one entry */
static void entry_fill(struct sort_context *ctx, struct sort_entry *e)
{
	struct imap_search_fields f;
	const char *v;

	(void)imap_search_fields_read(ctx->client->box, e->uid, false, &f);
	e->date = e->arrival;
	if (sort_wants(ctx, SORT_DATE))
		(void)imap_search_date_parse(f.value[IMAP_SEARCH_FIELD_DATE],
					     &e->date);
	if (sort_wants(ctx, SORT_SUBJECT))
		e->subject = imap_search_base_subject(
			f.value[IMAP_SEARCH_FIELD_SUBJECT], NULL);
	v = f.value[IMAP_SEARCH_FIELD_FROM];
	entry_address_keys(v, sort_wants(ctx, SORT_FROM),
			   sort_wants(ctx, SORT_DISPLAYFROM), &e->from,
			   &e->display_from);
	v = f.value[IMAP_SEARCH_FIELD_TO];
	entry_address_keys(v, sort_wants(ctx, SORT_TO),
			   sort_wants(ctx, SORT_DISPLAYTO), &e->to,
			   &e->display_to);
	if (sort_wants(ctx, SORT_CC)) {
		char *unused = NULL;
		entry_address_keys(f.value[IMAP_SEARCH_FIELD_CC], true, false,
				   &e->cc, &unused);
	}
	imap_search_fields_free(&f);
}

/* entries_collect - match every message of the view, fill the keys */
static void entries_collect(struct sort_context *ctx,
			    struct imap_search_program *prog)
{
	struct mailbox *box = ctx->client->box;
	uint32_t count = mailbox_count(box);
	bool need_header = sort_wants(ctx, SORT_DATE) ||
		sort_wants(ctx, SORT_SUBJECT) || sort_wants(ctx, SORT_FROM) ||
		sort_wants(ctx, SORT_TO) || sort_wants(ctx, SORT_CC) ||
		sort_wants(ctx, SORT_DISPLAYFROM) ||
		sort_wants(ctx, SORT_DISPLAYTO);

	ctx->entries = mem_calloc(count + 1, sizeof(*ctx->entries));
	for (uint32_t i = 0; i < count && i < mailbox_count(box); i++) {
		const struct mail_record *rec = mailbox_record(box, i);
		struct mail_record copy;
		struct sort_entry *e;

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		copy = *rec;
		if (!imap_search_match(prog, &copy, i + 1))
			continue;
		e = &ctx->entries[ctx->entry_count++];
		e->seq = i + 1;
		e->uid = copy.uid;
		e->arrival = copy.internaldate;
		e->date = copy.internaldate;
		e->size = copy.vsize;
		if (need_header)
			entry_fill(ctx, e);
	}
}

/* cmp_num - three-way compare of two numbers */
static int cmp_num(int64_t a, int64_t b)
{
	return a < b ? -1 : a > b ? 1 : 0;
}

/* cmp_str - three-way compare of two keys (NULL = "") */
static int cmp_str(const char *a, const char *b)
{
	return strcmp(a == NULL ? "" : a, b == NULL ? "" : b);
}

/* criterion_compare - one key of two entries */
static int criterion_compare(enum sort_key key, const struct sort_entry *a,
			     const struct sort_entry *b)
{
	switch (key) {
	case SORT_ARRIVAL: return cmp_num(a->arrival, b->arrival);
	case SORT_DATE: return cmp_num(a->date, b->date);
	case SORT_SIZE: return a->size < b->size ? -1 : a->size > b->size;
	case SORT_SUBJECT: return cmp_str(a->subject, b->subject);
	case SORT_FROM: return cmp_str(a->from, b->from);
	case SORT_TO: return cmp_str(a->to, b->to);
	case SORT_CC: return cmp_str(a->cc, b->cc);
	case SORT_DISPLAYFROM:
		return cmp_str(a->display_from, b->display_from);
	case SORT_DISPLAYTO: return cmp_str(a->display_to, b->display_to);
	}
	return 0;
}

/* entry_compare - qsort_r() comparator: criteria in order, then seq */
static int entry_compare(const void *pa, const void *pb, void *context)
{
	const struct sort_context *ctx = context;
	const struct sort_entry *a = pa, *b = pb;

	for (size_t i = 0; i < ctx->criteria_count; i++) {
		int ret = criterion_compare(ctx->criteria[i].key, a, b);
		if (ret != 0)
			return ctx->criteria[i].reverse ? -ret : ret;
	}
	return cmp_num(a->seq, b->seq);
}

/* write_sort - "* SORT 2 3 1", in pieces */
static int write_sort(struct sort_context *ctx)
{
	struct buffer out;
	int ret = 0;

	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* SORT");
	for (size_t i = 0; i < ctx->entry_count && ret == 0; i++) {
		const struct sort_entry *e = &ctx->entries[i];
		(void)buffer_printf(&out, " %u",
				    ctx->cmd->uid ? e->uid : e->seq);
		if (out.used > 8192) {
			ret = imap_client_write(ctx->client, out.data,
						out.used);
			buffer_reset(&out);
		}
	}
	(void)buffer_append_str(&out, "\r\n");
	if (ret == 0)
		ret = imap_client_write(ctx->client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* sort_args_parse - criteria, charset and the search program; false after
   a BAD/NO reply */
static bool sort_args_parse(struct sort_context *ctx,
			    struct imap_search_program **prog_r)
{
	const struct imap_arg *args = ctx->cmd->args;

	if (!criteria_parse(ctx, &args[0])) {
		imap_command_bad(ctx->cmd, "Invalid sort criteria");
		return false;
	}
	return imap_search_parse_charset_keys(ctx->cmd, &args[1], prog_r);
}

/* entries_free - free the entries and their keys */
static void entries_free(struct sort_context *ctx)
{
	for (size_t i = 0; i < ctx->entry_count; i++) {
		struct sort_entry *e = &ctx->entries[i];
		free(e->subject);
		free(e->from);
		free(e->to);
		free(e->cc);
		free(e->display_from);
		free(e->display_to);
	}
	free(ctx->entries);
	ctx->entries = NULL;
}

/* cmd_sort - SORT / UID SORT */
int cmd_sort(struct imap_command *cmd)
{
	struct sort_context ctx;
	struct imap_search_program *prog = NULL;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.cmd = cmd;
	ctx.client = cmd->client;
	if (!sort_args_parse(&ctx, &prog))
		return 0;
	entries_collect(&ctx, prog);
	imap_search_free(&prog);
	(void)mailbox_cache_flush(ctx.client->box);
	qsort_r(ctx.entries, ctx.entry_count, sizeof(*ctx.entries),
		entry_compare, &ctx);
	ret = write_sort(&ctx);
	entries_free(&ctx);
	if (ret < 0)
		return -1;
	imap_command_ok(cmd, "SORT completed");
	return 0;
}
