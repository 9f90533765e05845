/*
 * cmd-copy.c - COPY, MOVE, UID COPY, UID MOVE (RFC 9051 6.4.7 / 6.4.8,
 * RFC 6851 MOVE, RFC 4315 COPYUID).
 *
 * The store does the work (mailbox_copy(): hard links into the target's
 * tmp/, then UIDs under the target's lock; MOVE expunges the sources
 * only once the copies are durable). Here: the set is resolved to UIDs
 * (a sequence number beyond EXISTS is a BAD), and the answer is built:
 * COPY says "OK [COPYUID v src dst]"; MOVE sends the COPYUID in an
 * untagged OK first, then the untagged EXPUNGEs of the moved messages
 * (through imap_sync(), highest sequence number first), then a plain
 * tagged OK (RFC 6851 4.3). With QRESYNC enabled the expunges are one
 * "* VANISHED uids" (imap_sync()) and the tagged OK carries
 * [HIGHESTMODSEQ], as for EXPUNGE. A set that matches nothing is a
 * success.
 *
 * Either side may be another user's mailbox (imap-util.h): the store
 * checks "r" on the source ("t" and "e" too for MOVE) and "i" on the
 * target, and drops the flags the target's rights do not cover.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdlib.h>

struct copy_result {
	uint32_t uidvalidity;
	uint32_t *src_uids, *dest_uids;	/* owned */
	size_t count;
};

/* copy_parse - the set and the target name; false = replied */
static bool copy_parse(struct imap_command *cmd, uint32_t **uids_r,
		       size_t *count_r, char **dest_r)
{
	struct imap_seqset set;
	const char *str, *name, *error;
	int ret;

	if (!imap_arg_get_atom(&cmd->args[0], &str) ||
	    !imap_arg_get_astring(&cmd->args[1], &name) ||
	    !imap_arg_is_eol(&cmd->args[2])) {
		imap_command_bad(cmd, "Invalid arguments");
		return false;
	}
	if (imap_seqset_parse(str, &set, &error) < 0) {
		imap_command_bad(cmd, "%s", error);
		return false;
	}
	ret = imap_seqset_to_uids(cmd->client, &set, cmd->uid, uids_r, count_r);
	imap_seqset_free(&set);
	if (ret < 0) {
		imap_command_bad(cmd, "Invalid message sequence number");
		return false;
	}
	*dest_r = imap_mailbox_from_client(cmd->client, name, &error);
	if (*dest_r == NULL) {
		free(*uids_r);
		imap_command_no(cmd, "[CANNOT] %s", error);
		return false;
	}
	return true;
}

/* copy_uid_code - "COPYUID v src dst" into buf */
static void copy_uid_code(struct buffer *buf, const struct copy_result *r)
{
	buffer_printf(buf, "COPYUID %u ", r->uidvalidity);
	imap_seqset_write_uids(buf, r->src_uids, r->count);
	buffer_append_byte(buf, ' ');
	imap_seqset_write_uids(buf, r->dest_uids, r->count);
}

/* copy_reply - the responses after a successful copy or move */
static int copy_reply(struct imap_command *cmd, const struct copy_result *r,
		      bool move)
{
	struct buffer code;
	int ret = 0;

	if (r->count == 0) {
		imap_command_ok(cmd, "%s completed, no messages",
				move ? "MOVE" : "COPY");
		return 0;
	}
	buffer_init(&code, 0);
	copy_uid_code(&code, r);
	if (!move) {
		imap_command_ok(cmd, "[%s] COPY completed", buffer_cstr(&code));
	} else {
		ret = imap_client_untagged(cmd->client, "OK [%s] Moved",
					   buffer_cstr(&code));
		if (ret == 0)
			ret = imap_sync(cmd->client, 0);
		if ((cmd->client->enabled & IMAP_ENABLED_QRESYNC) != 0 &&
		    cmd->client->box != NULL)
			imap_command_ok(cmd, "[HIGHESTMODSEQ %llu] MOVE completed",
					(unsigned long long)
					mailbox_highestmodseq(cmd->client->box));
		else
			imap_command_ok(cmd, "MOVE completed");
	}
	buffer_clear(&code);
	return ret;
}

/* copy_run - copy or move into dest (own or another user's mailbox);
   an empty set only checks that the target exists (and, when shared,
   that the session may see it) */
static int copy_run(struct imap_client *client, const uint32_t *uids,
		    size_t count, const char *dest, bool move,
		    struct copy_result *r)
{
	struct imap_mailbox_ref ref;
	unsigned int rights;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, dest, &ref)) < 0)
		return ret;
	if (count > 0) {
		ret = mailbox_copy_to(client->box, uids, count, ref.user,
				      ref.name, move, &r->uidvalidity,
				      &r->src_uids, &r->dest_uids, &r->count);
	} else if (ref.shared) {
		ret = store_mailbox_myrights(ref.user, ref.name, &rights);
	} else {
		ret = store_mailbox_exists(ref.user, ref.name);
	}
	imap_mailbox_ref_free(&ref);
	return ret;
}

/* copy_command - COPY (move false) or MOVE */
static int copy_command(struct imap_command *cmd, bool move)
{
	struct imap_client *client = cmd->client;
	struct copy_result r = { 0 };
	uint32_t *uids = NULL;
	size_t count = 0;
	char *dest;
	int ret;

	if (move && client->box_readonly) {
		imap_command_no(cmd, "[READ-ONLY] Mailbox is read-only");
		return 0;
	}
	if (!copy_parse(cmd, &uids, &count, &dest))
		return 0;
	ret = copy_run(client, uids, count, dest, move, &r);
	free(uids);
	free(dest);
	if (ret == STORE_ERR_NOTFOUND) {
		imap_command_no(cmd, "[TRYCREATE] Mailbox doesn't exist");
		ret = 0;
	} else if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		ret = 0;
	} else {
		/* -1 here: the connection is gone. */
		ret = copy_reply(cmd, &r, move);
	}
	free(r.src_uids);
	free(r.dest_uids);
	return ret;
}

/* cmd_copy - COPY / UID COPY set mailbox */
int cmd_copy(struct imap_command *cmd)
{
	return copy_command(cmd, false);
}

/* cmd_move - MOVE / UID MOVE set mailbox */
int cmd_move(struct imap_command *cmd)
{
	return copy_command(cmd, true);
}
