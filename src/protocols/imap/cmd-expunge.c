/*
 * cmd-expunge.c - CHECK, CLOSE, UNSELECT and EXPUNGE / UID EXPUNGE
 * (RFC 9051 6.4.1-6.4.3, RFC 3691 UNSELECT, RFC 4315 UID EXPUNGE).
 *
 * EXPUNGE only commits the removal (mailbox_expunge() marks the records
 * of the view as expunged); the untagged "* n EXPUNGE" responses come
 * from imap_sync(), which walks the expunged sequence numbers from the
 * highest down so that no renumbering has to be computed. The same sync
 * also reports messages other sessions expunged meanwhile, in one
 * consistent sequence.
 *
 * Once QRESYNC is enabled, imap_sync() reports "* VANISHED uids" instead
 * of EXPUNGEs, and the tagged OK carries [HIGHESTMODSEQ] (RFC 7162
 * 3.2.7).
 *
 * CLOSE expunges silently (RFC 9051 6.4.1: no untagged EXPUNGE) when the
 * mailbox is read-write, then returns to the authenticated state;
 * UNSELECT does the same without expunging. In another user's mailbox
 * EXPUNGE needs the "e" right (the store answers NO [NOPERM]) and CLOSE
 * without it expunges nothing, silently (RFC 4314 4).
 */
#include "lib/lib.h"
#include "maildir/acl.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdlib.h>

/* cmd_check - CHECK: a sync point, like NOOP */
int cmd_check(struct imap_command *cmd)
{
	if (imap_sync(cmd->client, 0) < 0)
		return -1;
	imap_command_ok(cmd, "CHECK completed");
	return 0;
}

/* cmd_close - CLOSE: silent expunge (read-write), unselect */
int cmd_close(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	int ret = STORE_OK;

	/* RFC 4314 4: CLOSE without the expunge right expunges nothing,
	   and does not fail for it. */
	if (!client->box_readonly &&
	    (mailbox_rights(client->box) & ACL_RIGHT_EXPUNGE) != 0)
		ret = mailbox_expunge(client->box, NULL, 0, NULL, NULL);
	imap_client_unselect(client);
	if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else
		imap_command_ok(cmd, "CLOSE completed");
	return 0;
}

/* cmd_unselect - UNSELECT: unselect without expunging */
int cmd_unselect(struct imap_command *cmd)
{
	if (!imap_arg_is_eol(&cmd->args[0])) {
		imap_command_bad(cmd, "UNSELECT takes no arguments");
		return 0;
	}
	imap_client_unselect(cmd->client);
	imap_command_ok(cmd, "UNSELECT completed");
	return 0;
}

/* expunge_keep_deleted - keep only the UIDs flagged \Deleted (RFC 4315) */
static void expunge_keep_deleted(struct mailbox *box, uint32_t *uids,
				 size_t *count)
{
	size_t n = 0;

	for (size_t i = 0; i < *count; i++) {
		const struct mail_record *rec = mailbox_lookup_uid(box, uids[i],
								   NULL);

		if (rec != NULL && (rec->flags & MAIL_DELETED) != 0)
			uids[n++] = uids[i];
	}
	*count = n;
}

/* expunge_uid_set - UID EXPUNGE: the UIDs of the set; false = replied */
static bool expunge_uid_set(struct imap_command *cmd, uint32_t **uids_r,
			    size_t *count_r)
{
	struct imap_seqset set;
	const char *str, *error;
	int ret;

	if (!imap_arg_get_atom(&cmd->args[0], &str) ||
	    !imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "UID EXPUNGE needs a UID set");
		return false;
	}
	if (imap_seqset_parse(str, &set, &error) < 0) {
		imap_command_bad(cmd, "%s", error);
		return false;
	}
	ret = imap_seqset_to_uids(cmd->client, &set, true, uids_r, count_r);
	imap_seqset_free(&set);
	if (ret < 0) {
		imap_command_bad(cmd, "Invalid UID set");
		return false;
	}
	expunge_keep_deleted(cmd->client->box, *uids_r, count_r);
	return true;
}

/* cmd_expunge - EXPUNGE and UID EXPUNGE set */
int cmd_expunge(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	uint32_t *uids = NULL;
	size_t count = 0;
	int ret;

	if (client->box_readonly) {
		imap_command_no(cmd, "[READ-ONLY] Mailbox is read-only");
		return 0;
	}
	if (cmd->uid) {
		if (!expunge_uid_set(cmd, &uids, &count))
			return 0;
		ret = count == 0 ? STORE_OK :
			mailbox_expunge(client->box, uids, count, NULL, NULL);
	} else {
		if (!imap_arg_is_eol(&cmd->args[0])) {
			imap_command_bad(cmd, "EXPUNGE takes no arguments");
			return 0;
		}
		ret = mailbox_expunge(client->box, NULL, 0, NULL, NULL);
	}
	free(uids);
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		return 0;
	}
	if (imap_sync(client, 0) < 0)
		return -1;
	/* RFC 7162 3.2.7: with QRESYNC the client learns the modseq the
	   expunge reached from the tagged reply. */
	if ((client->enabled & IMAP_ENABLED_QRESYNC) != 0)
		imap_command_ok(cmd, "[HIGHESTMODSEQ %llu] EXPUNGE completed",
				(unsigned long long)
				mailbox_highestmodseq(client->box));
	else
		imap_command_ok(cmd, "EXPUNGE completed");
	return 0;
}
