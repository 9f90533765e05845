/*
 * cmd-append.c - APPEND (RFC 9051 6.3.12) with MULTIAPPEND (RFC 3502),
 * UIDPLUS APPENDUID (RFC 4315) and APPENDLIMIT (RFC 7889).
 *
 * APPEND streams: the command reads its arguments one at a time
 * (imap_command_next_arg()) so that a message literal goes straight from
 * the socket to a file in tmp/ through a 64 KiB buffer, never into
 * memory as a whole. Everything that can refuse a message is checked
 * before the literal is accepted: the target mailbox (NO [TRYCREATE]),
 * the flags and date, the size against imap_append_limit (NO [TOOBIG]).
 * A refused synchronizing literal is then never sent by the client; the
 * session discards whatever else of the command follows.
 *
 * Durability (DESIGN invariant 1): store_save_finish() fsyncs the file,
 * store_save_append() links it into the mailbox and commits its UID
 * under the mailbox lock; OK is written only after that.
 *
 * MULTIAPPEND is all or nothing: messages are appended one by one as they
 * arrive, and when a later one fails the ones this command already
 * appended are expunged again before the NO (a client that watches the
 * mailbox meanwhile may have seen them come and go; nothing stays).
 *
 * Message content: a NUL byte is not allowed in a message sent as a
 * plain literal (RFC 9051 4.3; only literal8 may carry it), so such a
 * message is refused with NO. A message sent as literal8 (~{N}, BINARY
 * APPEND, RFC 3516 4.4) may hold any octet and is stored as given, with
 * the store's usual line-end handling (CRLF is kept as LF and read back
 * as CRLF); its Content-Transfer-Encoding is not re-encoded (RFC 3516
 * lets the server keep binary parts as they are).
 *
 * RFC 6855's "UTF8 (~{N}...)" form of the message is accepted from any
 * client (RFC 9755 has since dropped it, but a client written for 6855 may
 * still send it) and stored like any other literal8; 8-bit header fields
 * are stored as sent, whether or not UTF8=ACCEPT was enabled (refusing
 * them would lose the mail of clients that never ENABLE).
 *
 * Another user's mailbox ("Other Users/<owner>/...", imap-util.h) is
 * opened in the owner's spool with MAILBOX_OPEN_INSERT: the store wants
 * "i" (not "r") and keeps only the flags the session's rights cover. A
 * MULTIAPPEND rollback there needs "e"; without it the messages already
 * appended stay (logged).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"

#include <stdlib.h>
#include <string.h>

#define APPEND_CHUNK_SIZE (64 * 1024)

struct append_context {
	struct imap_command *cmd;
	struct mailbox *box;		/* the selected view, or tmp_box */
	struct mailbox *tmp_box;	/* owned: a view just for APPEND */
	uint32_t uidvalidity;
	uint32_t *uids;			/* owned: appended so far */
	size_t uid_count;
	unsigned char *chunk;		/* owned: APPEND_CHUNK_SIZE */
};

/* Result of one message. */
enum append_result {
	APPEND_OK,
	APPEND_REPLIED,		/* the tagged reply is set (NO/BAD) */
	APPEND_DEAD,		/* connection gone */
};

/* append_next - the next argument; NULL after replying BAD / when dead */
static const struct imap_arg *append_next(struct append_context *ctx,
					  enum append_result *res_r)
{
	const struct imap_arg *arg;
	int ret = imap_command_next_arg(ctx->cmd, &arg);

	if (ret > 0)
		return arg;
	if (ret < 0) {
		*res_r = APPEND_DEAD;
	} else {
		imap_command_bad(ctx->cmd, "Invalid APPEND arguments");
		*res_r = APPEND_REPLIED;
	}
	return NULL;
}

/* append_open_target - the mailbox view to append to: the selected one,
   or a view of its own (of another user's spool for a shared name; it
   needs "i" only, which the store checks) */
static int append_open_target(struct append_context *ctx, const char *name)
{
	struct imap_client *client = ctx->cmd->client;
	struct imap_mailbox_ref ref;
	int ret;

	if (imap_mailbox_is_selected(client, name)) {
		ctx->box = client->box;
		return STORE_OK;
	}
	if ((ret = imap_mailbox_ref_get(client, name, &ref)) < 0)
		return ret;
	/* Read-only: this view must not claim \Recent from the sessions
	   that have the mailbox selected. */
	ret = mailbox_open(ref.user, ref.name,
			   MAILBOX_OPEN_READONLY | MAILBOX_OPEN_INSERT,
			   &ctx->tmp_box);
	if (ret == STORE_OK && ref.shared) {
		mailbox_take_user(ctx->tmp_box);
		ref.user = NULL;
	}
	imap_mailbox_ref_free(&ref);
	if (ret < 0)
		return ret;
	ctx->box = ctx->tmp_box;
	return STORE_OK;
}

/* append_copy_literal - literal -> save file (*has_nul_r: it had NUL
   bytes, which only a binary literal8 may store; *store_ret_r: a write
   error). The literal is always read to its end. Returns 0, or -1 when
   the connection is gone. */
static int append_copy_literal(struct append_context *ctx,
			       struct store_save *save, bool binary,
			       bool *has_nul_r, int *store_ret_r)
{
	ssize_t n;

	*has_nul_r = false;
	*store_ret_r = STORE_OK;
	while ((n = imap_command_literal_read(ctx->cmd, ctx->chunk,
					      APPEND_CHUNK_SIZE)) > 0) {
		if (memchr(ctx->chunk, '\0', (size_t)n) != NULL)
			*has_nul_r = true;
		if (*store_ret_r == STORE_OK && (!*has_nul_r || binary))
			*store_ret_r = store_save_write(save, ctx->chunk,
							(size_t)n);
	}
	return n < 0 ? -1 : 0;
}

/* append_save - read the accepted literal and append it; literal8:
   it was sent as ~{N} and may carry NUL bytes */
static enum append_result append_save(struct append_context *ctx,
				      const struct store_save_options *opts,
				      bool literal8)
{
	struct imap_client *client = ctx->cmd->client;
	struct store_save *save;
	uint32_t uid, uidvalidity;
	bool has_nul;
	int ret, store_ret;

	save = store_save_begin(client->store_user, &store_ret);
	if (save == NULL) {
		/* Before accepting the literal: the client sends nothing. */
		imap_command_store_error(ctx->cmd, store_ret, false);
		return APPEND_REPLIED;
	}
	if (imap_command_literal_begin(ctx->cmd) < 0 ||
	    append_copy_literal(ctx, save, literal8, &has_nul, &ret) < 0) {
		store_save_free(&save);
		return APPEND_DEAD;
	}
	if (has_nul && !literal8) {
		store_save_free(&save);
		imap_command_no(ctx->cmd, "Message contains NUL characters");
		return APPEND_REPLIED;
	}
	if (ret == STORE_OK)
		ret = store_save_finish(save);
	if (ret == STORE_OK)
		ret = store_save_append(save, ctx->box, opts, &uid, &uidvalidity);
	store_save_free(&save);
	if (ret < 0) {
		imap_command_store_error(ctx->cmd, ret, false);
		return APPEND_REPLIED;
	}
	ctx->uidvalidity = uidvalidity;
	ctx->uids = mem_realloc(ctx->uids, (ctx->uid_count + 1) *
				sizeof(*ctx->uids));
	ctx->uids[ctx->uid_count++] = uid;
	return APPEND_OK;
}

/* append_check_literal - size checks before accepting the literal */
static bool append_check_literal(struct append_context *ctx,
				 const struct imap_arg *arg)
{
	uint64_t limit = ctx->cmd->client->set->imap_append_limit;

	if (arg->type != IMAP_ARG_LITERAL_STREAM) {
		imap_command_bad(ctx->cmd, "APPEND expects a message literal");
		return false;
	}
	if (arg->literal_size == 0) {
		imap_command_no(ctx->cmd, "Empty message refused");
		return false;
	}
	if (limit != 0 && arg->literal_size > limit) {
		imap_command_no(ctx->cmd, "[TOOBIG] Message larger than the "
				"APPENDLIMIT %llu", (unsigned long long)limit);
		return false;
	}
	return true;
}

/* append_one - [flags] [date-time] literal, starting at arg */
static enum append_result append_one(struct append_context *ctx,
				     const struct imap_arg *arg)
{
	struct store_save_options opts = { 0 };
	const char **keywords = NULL, *error, *date;
	size_t keyword_count = 0;
	enum append_result res = APPEND_REPLIED;
	bool utf8 = false;

	if (arg->type == IMAP_ARG_LIST) {
		if (imap_flags_parse(arg, &opts.flags, &keywords,
				     &keyword_count, &error) < 0) {
			imap_command_bad(ctx->cmd, "%s", error);
			goto out;
		}
		if ((arg = append_next(ctx, &res)) == NULL)
			goto out;
	}
	if (arg->type == IMAP_ARG_STRING) {
		(void)imap_arg_get_string(arg, &date);
		if (!imap_date_time_parse(date, &opts.internaldate)) {
			imap_command_bad(ctx->cmd, "Invalid date-time");
			goto out;
		}
		if ((arg = append_next(ctx, &res)) == NULL)
			goto out;
	}
	if (imap_arg_atom_equals(arg, "UTF8")) {
		/* RFC 6855 "UTF8 (literal8)": the message is a literal8,
		   then the list closes (reported empty by the parser). */
		utf8 = true;
		if ((arg = append_next(ctx, &res)) == NULL)
			goto out;
		if (arg->type != IMAP_ARG_LITERAL_STREAM || !arg->literal8) {
			imap_command_bad(ctx->cmd, "UTF8 expects (~{size} message)");
			goto out;
		}
	}
	if (!append_check_literal(ctx, arg))
		goto out;
	if (keywords != NULL) {
		keywords = mem_realloc(keywords, (keyword_count + 1) *
				       sizeof(*keywords));
		keywords[keyword_count] = NULL;
		opts.keywords = keywords;
	}
	res = append_save(ctx, &opts, arg->literal8);
	if (res == APPEND_OK && utf8) {
		const struct imap_arg *close = append_next(ctx, &res);

		if (close == NULL) {
			res = res == APPEND_DEAD ? APPEND_DEAD : APPEND_REPLIED;
		} else if (close->type != IMAP_ARG_LIST || close->list_count != 0) {
			imap_command_bad(ctx->cmd, "UTF8 expects (~{size} message)");
			res = APPEND_REPLIED;
		}
	}
out:
	free(keywords);
	return res;
}

/* append_reply_ok - "OK [APPENDUID v uids]" */
static void append_reply_ok(struct append_context *ctx)
{
	struct buffer buf;

	buffer_init(&buf, 0);
	imap_seqset_write_uids(&buf, ctx->uids, ctx->uid_count);
	imap_command_ok(ctx->cmd, "[APPENDUID %u %s] APPEND completed",
			ctx->uidvalidity, buffer_cstr(&buf));
	buffer_clear(&buf);
}

/* append_rollback - MULTIAPPEND failed: remove what this command added */
static void append_rollback(struct append_context *ctx)
{
	if (ctx->uid_count == 0)
		return;
	if (mailbox_expunge(ctx->box, ctx->uids, ctx->uid_count,
			    NULL, NULL) < 0)
		log_error("imap %s: APPEND: could not remove %zu partially "
			  "appended messages from %s", ctx->cmd->client->id,
			  ctx->uid_count, mailbox_name(ctx->box));
}

/* append_messages - every message of the command */
static enum append_result append_messages(struct append_context *ctx)
{
	enum append_result res = APPEND_REPLIED;
	const struct imap_arg *arg;

	while ((arg = append_next(ctx, &res)) != NULL) {
		if (imap_arg_is_eol(arg)) {
			if (ctx->uid_count == 0) {
				imap_command_bad(ctx->cmd, "Missing message");
				return APPEND_REPLIED;
			}
			append_reply_ok(ctx);
			return APPEND_OK;
		}
		res = append_one(ctx, arg);
		if (res != APPEND_OK)
			return res;
	}
	return res;
}

/* cmd_append - APPEND mailbox message... (streamed) */
int cmd_append(struct imap_command *cmd)
{
	struct append_context ctx = { .cmd = cmd };
	enum append_result res = APPEND_REPLIED;
	const struct imap_arg *arg;
	const char *name, *error;
	char *box_name = NULL;
	int ret;

	if ((arg = append_next(&ctx, &res)) == NULL)
		return res == APPEND_DEAD ? -1 : 0;
	if (!imap_arg_get_astring(arg, &name)) {
		imap_command_bad(cmd, "Invalid mailbox name");
		return 0;
	}
	if ((box_name = imap_mailbox_from_client(cmd->client, name,
						 &error)) == NULL) {
		imap_command_no(cmd, "[CANNOT] %s", error);
		return 0;
	}
	ret = append_open_target(&ctx, box_name);
	free(box_name);
	if (ret < 0) {
		imap_command_store_error(cmd, ret, true);
		return 0;
	}
	ctx.chunk = mem_realloc(NULL, APPEND_CHUNK_SIZE);
	res = append_messages(&ctx);
	if (res != APPEND_OK)
		append_rollback(&ctx);
	free(ctx.chunk);
	free(ctx.uids);
	if (ctx.tmp_box != NULL)
		mailbox_close(&ctx.tmp_box);
	return res == APPEND_DEAD ? -1 : 0;
}
