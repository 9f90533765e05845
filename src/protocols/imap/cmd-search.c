/*
 * cmd-search.c - SEARCH and UID SEARCH (RFC 9051 6.4.4 / 7.3.4), with
 * ESEARCH result options (RFC 4731: RETURN (MIN MAX ALL COUNT)), SEARCHRES
 * (RFC 5182: RETURN (SAVE) and "$") and CONDSTORE's MODSEQ (RFC 7162).
 *
 * The program is parsed by imap-search.c; here the view is walked in
 * sequence order, each message matched, and the results (UIDs or sequence
 * numbers: 4 bytes a message) collected and written. Messages already
 * expunged by another session but not yet reported are left out: their
 * data is gone.
 *
 * A failed SEARCH with SAVE leaves "$" empty (RFC 5182 2.1).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"
#include "imap-search.h"

#include <stdlib.h>
#include <strings.h>

#define RETURN_MIN	0x01
#define RETURN_MAX	0x02
#define RETURN_ALL	0x04
#define RETURN_COUNT	0x08
#define RETURN_SAVE	0x10

struct search_context {
	struct imap_command *cmd;
	struct imap_client *client;
	bool esearch;			/* RETURN given */
	unsigned int ret_opts;		/* RETURN_* */
	const char *charset;		/* borrowed; NULL = UTF-8 */
	const struct imap_arg *keys;	/* borrowed */
	uint32_t *results;		/* owned: numbers to report */
	uint32_t *result_uids;		/* owned: UIDs (for SAVE) */
	size_t result_count;
	uint64_t highest_modseq;
};

/* return_parse - "RETURN (opts)" */
static bool return_parse(struct search_context *ctx, const struct imap_arg *arg)
{
	static const struct { const char *name; unsigned int bit; } map[] = {
		{ "MIN", RETURN_MIN }, { "MAX", RETURN_MAX },
		{ "ALL", RETURN_ALL }, { "COUNT", RETURN_COUNT },
		{ "SAVE", RETURN_SAVE },
	};
	const struct imap_arg *list;
	size_t count, j;

	if (!imap_arg_get_list(arg, &list, &count))
		return false;
	ctx->esearch = true;
	for (size_t i = 0; i < count; i++) {
		for (j = 0; j < N_ELEMENTS(map); j++) {
			if (imap_arg_atom_equals(&list[i], map[j].name))
				break;
		}
		if (j == N_ELEMENTS(map))
			return false;
		ctx->ret_opts |= map[j].bit;
	}
	if (ctx->ret_opts == 0)
		ctx->ret_opts = RETURN_ALL;
	return true;
}

/* args_parse - RETURN and CHARSET before the keys; false after a reply */
static bool args_parse(struct search_context *ctx)
{
	const struct imap_arg *args = ctx->cmd->args;

	if (imap_arg_atom_equals(&args[0], "RETURN")) {
		if (!return_parse(ctx, &args[1])) {
			imap_command_bad(ctx->cmd, "Invalid RETURN options");
			return false;
		}
		args += 2;
	}
	if (imap_arg_atom_equals(&args[0], "CHARSET")) {
		if (!imap_arg_get_astring(&args[1], &ctx->charset)) {
			imap_command_bad(ctx->cmd, "Missing charset");
			return false;
		}
		if (!imap_search_charset_ok(ctx->charset)) {
			imap_command_no(ctx->cmd,
					"[BADCHARSET (UTF-8 US-ASCII)] "
					"Unsupported charset");
			return false;
		}
		args += 2;
	}
	if (imap_arg_is_eol(&args[0])) {
		imap_command_bad(ctx->cmd, "Missing search keys");
		return false;
	}
	ctx->keys = args;
	return true;
}

/* search_run - match every message of the view */
static void search_run(struct search_context *ctx,
		       struct imap_search_program *prog)
{
	struct mailbox *box = ctx->client->box;
	uint32_t count = mailbox_count(box);

	ctx->results = mem_calloc(count + 1, sizeof(uint32_t));
	ctx->result_uids = mem_calloc(count + 1, sizeof(uint32_t));
	for (uint32_t i = 0; i < count && i < mailbox_count(box); i++) {
		const struct mail_record *rec = mailbox_record(box, i);
		struct mail_record copy;

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		copy = *rec;
		if (!imap_search_match(prog, &copy, i + 1))
			continue;
		ctx->results[ctx->result_count] = ctx->cmd->uid ? copy.uid : i + 1;
		ctx->result_uids[ctx->result_count++] = copy.uid;
		if (copy.modseq > ctx->highest_modseq)
			ctx->highest_modseq = copy.modseq;
	}
}

/* save_result - SEARCHRES: remember the UIDs (only MIN/MAX if only those
   were asked for besides SAVE) */
static void save_result(struct search_context *ctx)
{
	struct imap_client *client = ctx->client;
	size_t n = ctx->result_count;

	free(client->search_saved);
	client->search_saved = NULL;
	client->search_saved_count = 0;
	client->search_saved_valid = true;
	if (n == 0)
		return;
	client->search_saved = mem_calloc(n, sizeof(uint32_t));
	if ((ctx->ret_opts & (RETURN_ALL | RETURN_COUNT)) == 0 &&
	    (ctx->ret_opts & (RETURN_MIN | RETURN_MAX)) != 0) {
		if ((ctx->ret_opts & RETURN_MIN) != 0)
			client->search_saved[client->search_saved_count++] =
				ctx->result_uids[0];
		if ((ctx->ret_opts & RETURN_MAX) != 0 &&
		    (client->search_saved_count == 0 || n > 1))
			client->search_saved[client->search_saved_count++] =
				ctx->result_uids[n - 1];
		return;
	}
	memcpy(client->search_saved, ctx->result_uids, n * sizeof(uint32_t));
	client->search_saved_count = n;
}

/* write_search - "* SEARCH 1 3 5 [(MODSEQ n)]", in pieces */
static int write_search(struct search_context *ctx, bool modseq)
{
	struct buffer out;
	int ret = 0;

	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* SEARCH");
	for (size_t i = 0; i < ctx->result_count && ret == 0; i++) {
		(void)buffer_printf(&out, " %u", ctx->results[i]);
		if (out.used > 8192) {
			ret = imap_client_write(ctx->client, out.data, out.used);
			buffer_reset(&out);
		}
	}
	if (modseq && ctx->result_count > 0)
		(void)buffer_printf(&out, " (MODSEQ %llu)",
				    (unsigned long long)ctx->highest_modseq);
	(void)buffer_append_str(&out, "\r\n");
	if (ret == 0)
		ret = imap_client_write(ctx->client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* write_esearch - "* ESEARCH (TAG "t") [UID] MIN .. MAX .. ALL .. COUNT .." */
static int write_esearch(struct search_context *ctx, bool modseq)
{
	size_t n = ctx->result_count;
	unsigned int opts = ctx->ret_opts;
	struct buffer out;
	int ret;

	if (opts == RETURN_SAVE)
		return 0;	/* RFC 5182 2.1: no ESEARCH for SAVE alone */
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* ESEARCH (TAG ");
	imap_append_string(&out, ctx->cmd->tag, strlen(ctx->cmd->tag), false);
	(void)buffer_append_str(&out, ctx->cmd->uid ? ") UID" : ")");
	if (n > 0 && (opts & RETURN_MIN) != 0)
		(void)buffer_printf(&out, " MIN %u", ctx->results[0]);
	if (n > 0 && (opts & RETURN_MAX) != 0)
		(void)buffer_printf(&out, " MAX %u", ctx->results[n - 1]);
	if (n > 0 && (opts & RETURN_ALL) != 0) {
		(void)buffer_append_str(&out, " ALL ");
		imap_seqset_write_uids(&out, ctx->results, n);
	}
	if ((opts & RETURN_COUNT) != 0)
		(void)buffer_printf(&out, " COUNT %zu", n);
	if (modseq && n > 0)
		(void)buffer_printf(&out, " MODSEQ %llu",
				    (unsigned long long)ctx->highest_modseq);
	(void)buffer_append_str(&out, "\r\n");
	ret = imap_client_write(ctx->client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* search_parse_reply - parse the program; false after a BAD/NO reply */
static bool search_parse_reply(struct search_context *ctx,
			       struct imap_search_program **prog_r)
{
	const char *error;
	int ret = imap_search_parse(ctx->client, ctx->keys, ctx->charset,
				    prog_r, &error);

	if (ret == IMAP_SEARCH_PARSE_OK)
		return true;
	if (ret == IMAP_SEARCH_PARSE_BADCHARSET)
		imap_command_no(ctx->cmd, "[BADCHARSET (UTF-8 US-ASCII)] %s",
				error);
	else
		imap_command_bad(ctx->cmd, "%s", error);
	return false;
}

/* search_execute - parse, match, reply; returns -1 if the session ends */
static int search_execute(struct search_context *ctx)
{
	struct imap_search_program *prog = NULL;
	bool modseq;
	int ret;

	if (!args_parse(ctx) || !search_parse_reply(ctx, &prog))
		return 0;
	if (!ctx->esearch && (ctx->client->enabled & IMAP_ENABLED_REV2) != 0) {
		/* RFC 9051 6.4.4: IMAP4rev2 has only ESEARCH; no RETURN
		   means RETURN (ALL) */
		ctx->esearch = true;
		ctx->ret_opts = RETURN_ALL;
	}
	modseq = imap_search_uses_modseq(prog);
	if (modseq)
		ctx->client->condstore_active = true;
	search_run(ctx, prog);
	imap_search_free(&prog);
	(void)mailbox_cache_flush(ctx->client->box);
	if ((ctx->ret_opts & RETURN_SAVE) != 0)
		save_result(ctx);
	ret = ctx->esearch ? write_esearch(ctx, modseq) :
		write_search(ctx, modseq);
	if (ret < 0)
		return -1;
	imap_command_ok(ctx->cmd, "SEARCH completed");
	return 0;
}

/* cmd_search - SEARCH / UID SEARCH */
int cmd_search(struct imap_command *cmd)
{
	struct search_context ctx;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	ctx.cmd = cmd;
	ctx.client = cmd->client;
	ret = search_execute(&ctx);
	if (ret == 0 && (ctx.ret_opts & RETURN_SAVE) != 0 &&
	    ctx.results == NULL) {
		/* failed before matching: "$" becomes empty */
		ctx.result_count = 0;
		save_result(&ctx);
	}
	free(ctx.results);
	free(ctx.result_uids);
	return ret;
}
