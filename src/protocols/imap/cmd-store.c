/*
 * cmd-store.c - STORE and UID STORE (RFC 9051 6.4.6, RFC 7162 3.1.3
 * UNCHANGEDSINCE / MODIFIED).
 *
 * mailbox_store() changes the flags of all the set's messages under the
 * mailbox lock, giving the changed ones one new modseq. The command then
 * syncs (others' changes first, so that sequence numbers are current)
 * and answers with "* n FETCH (FLAGS (...))" for each message of the set
 * (with UID for UID STORE, MODSEQ when CONDSTORE is on), unless .SILENT
 * (which under CONDSTORE still reports the new MODSEQ, RFC 7162 3.1.3).
 * The view lists our own change as "changed" too; the sync here skips
 * the messages that carry our modseq (imap_sync_skip_own()), so each
 * change is reported once. A plain STORE uses sequence numbers, so its
 * sync keeps expunged messages (no EXPUNGE until a later command).
 *
 * UNCHANGEDSINCE: messages modified after the given modseq are left
 * alone and listed in "OK [MODIFIED set]" (sequence numbers, or UIDs for
 * UID STORE).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdlib.h>
#include <strings.h>

struct store_request {
	uint32_t *uids;			/* owned */
	size_t count;
	enum mailbox_store_mode mode;
	bool silent;
	uint64_t unchangedsince;
	bool conditional;		/* UNCHANGEDSINCE was given */
	uint32_t flags;
	const char **keywords;		/* owned array, NULL-terminated */
};

/* store_parse_modifier - "(UNCHANGEDSINCE n)"; false = bad */
static bool store_parse_modifier(const struct imap_arg *arg, uint64_t *value_r)
{
	const struct imap_arg *list;
	const char *num;
	size_t count;

	if (!imap_arg_get_list(arg, &list, &count) || count != 2 ||
	    !imap_arg_atom_equals(&list[0], "UNCHANGEDSINCE") ||
	    !imap_arg_get_atom(&list[1], &num) ||
	    str_to_uint64(num, value_r) < 0)
		return false;
	return true;
}

/* store_parse_item - "+FLAGS.SILENT" etc.; false = bad */
static bool store_parse_item(const char *item, struct store_request *req)
{
	req->mode = MAILBOX_STORE_REPLACE;
	if (*item == '+' || *item == '-') {
		req->mode = *item == '+' ? MAILBOX_STORE_ADD :
			MAILBOX_STORE_REMOVE;
		item++;
	}
	if (strcasecmp(item, "FLAGS.SILENT") == 0)
		req->silent = true;
	else if (strcasecmp(item, "FLAGS") != 0)
		return false;
	return true;
}

/* store_parse_set - the message set as UIDs; false = replied */
static bool store_parse_set(struct imap_command *cmd, const char *str,
			    struct store_request *req)
{
	struct imap_seqset set;
	const char *error;
	int ret;

	if (imap_seqset_parse(str, &set, &error) < 0) {
		imap_command_bad(cmd, "%s", error);
		return false;
	}
	ret = imap_seqset_to_uids(cmd->client, &set, cmd->uid, &req->uids,
				  &req->count);
	imap_seqset_free(&set);
	if (ret < 0) {
		imap_command_bad(cmd, "Invalid message sequence number");
		return false;
	}
	return true;
}

/* store_parse - all arguments; false = replied */
static bool store_parse(struct imap_command *cmd, struct store_request *req)
{
	const struct imap_arg *args = cmd->args;
	const char *set, *item, *error;
	size_t keyword_count = 0;

	if (!imap_arg_get_atom(&args[0], &set))
		goto bad;
	args++;
	if (args[0].type == IMAP_ARG_LIST) {
		if (!store_parse_modifier(&args[0], &req->unchangedsince))
			goto bad;
		req->conditional = true;
		args++;
	}
	if (!imap_arg_get_atom(&args[0], &item) ||
	    !store_parse_item(item, req) || imap_arg_is_eol(&args[1]) ||
	    !imap_arg_is_eol(&args[2]))
		goto bad;
	if (imap_flags_parse(&args[1], &req->flags, &req->keywords,
			     &keyword_count, &error) < 0) {
		imap_command_bad(cmd, "%s", error);
		return false;
	}
	req->keywords = mem_realloc(req->keywords, (keyword_count + 1) *
				    sizeof(*req->keywords));
	req->keywords[keyword_count] = NULL;
	return store_parse_set(cmd, set, req);
bad:
	imap_command_bad(cmd, "Invalid STORE arguments");
	return false;
}

/* store_own_modseq - the modseq this STORE gave its changes (0: none) */
static uint64_t store_own_modseq(struct mailbox *box, uint64_t before,
				 const struct store_request *req)
{
	uint64_t after = mailbox_highestmodseq(box);

	if (after <= before)
		return 0;
	for (size_t i = 0; i < req->count; i++) {
		const struct mail_record *rec =
			mailbox_lookup_uid(box, req->uids[i], NULL);

		if (rec != NULL && rec->modseq == after)
			return after;
	}
	return 0;
}

/* store_uid_failed - is uid in the (ascending) UNCHANGEDSINCE failures? */
static bool store_uid_failed(uint32_t uid, const uint32_t *failed,
			     size_t count)
{
	size_t lo = 0, hi = count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (failed[mid] == uid)
			return true;
		if (failed[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/* store_write_fetch - one STORE FETCH response into buf. With .SILENT
   under CONDSTORE only the new MODSEQ goes out (RFC 7162 3.1.3). */
static void store_write_fetch(struct imap_command *cmd, struct buffer *buf,
			      const struct mail_record *rec, uint32_t seq,
			      bool silent)
{
	struct imap_client *client = cmd->client;
	const char *sep = "";

	buffer_printf(buf, "* %u FETCH (", seq);
	/* RFC 7162 3.1: under CONDSTORE every FETCH response carries UID */
	if (cmd->uid || client->condstore_active) {
		buffer_printf(buf, "UID %u", rec->uid);
		sep = " ";
	}
	if (!silent) {
		buffer_printf(buf, "%sFLAGS (", sep);
		imap_flags_write(buf, client->box,
				 imap_client_visible_flags(client, rec->flags),
				 rec->keywords);
		buffer_append_str(buf, ")");
		sep = " ";
	}
	if (client->condstore_active)
		buffer_printf(buf, "%sMODSEQ (%llu)", sep,
			      (unsigned long long)rec->modseq);
	buffer_append_str(buf, ")\r\n");
}

/* store_send_fetch - "* n FETCH (...)" for each message of the set that
   the STORE did not skip (UNCHANGEDSINCE failures get none); with
   .SILENT only under CONDSTORE, for the messages it changed */
static int store_send_fetch(struct imap_command *cmd,
			    const struct store_request *req,
			    const uint32_t *failed, size_t failed_count,
			    uint64_t own_modseq)
{
	struct imap_client *client = cmd->client;
	struct buffer buf;
	int ret = 0;

	if (req->silent && (!client->condstore_active || own_modseq == 0))
		return 0;
	buffer_init(&buf, 0);
	for (size_t i = 0; i < req->count && ret == 0; i++) {
		const struct mail_record *rec;
		uint32_t idx;

		rec = mailbox_lookup_uid(client->box, req->uids[i], &idx);
		if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0 ||
		    store_uid_failed(rec->uid, failed, failed_count) ||
		    (req->silent && rec->modseq != own_modseq))
			continue;
		buffer_reset(&buf);
		store_write_fetch(cmd, &buf, rec, idx + 1, req->silent);
		ret = imap_client_write(client, buf.data, buf.used);
	}
	buffer_clear(&buf);
	return ret;
}

/* store_reply_modified - "OK [MODIFIED set]" for UNCHANGEDSINCE failures */
static void store_reply_modified(struct imap_command *cmd,
				 uint32_t *failed, size_t count)
{
	struct buffer buf;

	if (!cmd->uid) {
		/* Sequence numbers, ascending like the UIDs. */
		for (size_t i = 0; i < count; i++) {
			uint32_t idx = 0;

			(void)mailbox_lookup_uid(cmd->client->box, failed[i], &idx);
			failed[i] = idx + 1;
		}
	}
	buffer_init(&buf, 0);
	imap_seqset_write_uids(&buf, failed, count);
	imap_command_ok(cmd, "[MODIFIED %s] Conditional STORE failed",
			buffer_cstr(&buf));
	buffer_clear(&buf);
}

/* store_run - apply and report a parsed request */
static int store_run(struct imap_command *cmd, struct store_request *req)
{
	struct imap_client *client = cmd->client;
	uint64_t before = mailbox_highestmodseq(client->box), own_modseq;
	uint32_t *failed = NULL;
	size_t failed_count = 0;
	int ret;

	ret = mailbox_store(client->box, req->uids, req->count, req->mode,
			    req->flags, req->keywords, req->unchangedsince,
			    &failed, &failed_count);
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		return 0;
	}
	own_modseq = store_own_modseq(client->box, before, req);
	if (imap_sync_skip_own(client, cmd->uid ? 0 : IMAP_SYNC_NO_EXPUNGE,
			       own_modseq) < 0 ||
	    store_send_fetch(cmd, req, failed, failed_count, own_modseq) < 0) {
		free(failed);
		return -1;
	}
	if (failed_count > 0)
		store_reply_modified(cmd, failed, failed_count);
	else
		imap_command_ok(cmd, "STORE completed");
	free(failed);
	return 0;
}

/* cmd_store - STORE / UID STORE set [(mods)] item flags */
int cmd_store(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	struct store_request req = { 0 };
	int ret = 0;

	if (store_parse(cmd, &req)) {
		if (req.conditional)
			client->condstore_active = true;
		if (client->box_readonly)
			imap_command_no(cmd, "[READ-ONLY] Mailbox is read-only");
		else if (req.count == 0)
			imap_command_ok(cmd, "STORE completed, no messages");
		else if (req.conditional && req.unchangedsince == 0) {
			/* RFC 7162 3.1.3: UNCHANGEDSINCE 0 fails for every
			   message (flags always exist, every modseq is >= 1);
			   the store API reads 0 as "no condition" */
			store_reply_modified(cmd, req.uids, req.count);
		} else
			ret = store_run(cmd, &req);
	}
	free(req.uids);
	free(req.keywords);
	return ret;
}
