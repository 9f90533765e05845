/*
 * cmd-select.c - SELECT and EXAMINE (RFC 9051 6.3.2 / 6.3.3, RFC 3501
 * for the rev1 extras, RFC 7162 for (CONDSTORE) and HIGHESTMODSEQ).
 *
 * Any selected mailbox is closed first ("* OK [CLOSED]"): RFC 9051 says
 * a failed SELECT leaves the session in the authenticated state, so
 * there is no way back to the old mailbox. Then the view is opened (read-only for EXAMINE: it
 * never claims \Recent) and described: FLAGS, PERMANENTFLAGS, EXISTS,
 * RECENT and UNSEEN (rev1 only), UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ
 * (cheap here: the view carries it), and the tagged OK says READ-WRITE or
 * READ-ONLY.
 *
 * Another user's mailbox ("Other Users/<owner>/<name>", imap-util.h) is
 * opened through that user's spool with the session user's rights: "r"
 * to select it at all (the store refuses otherwise), and READ-ONLY when
 * none of "s", "w", "t", "e" is granted (RFC 4314 4). The view then owns
 * the other user's store_user.
 */
#include "lib/lib.h"
#include "maildir/acl.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdlib.h>

/* select_parse_params - the optional "(CONDSTORE)" list; false = BAD */
static bool select_parse_params(const struct imap_arg *arg, bool *condstore_r)
{
	const struct imap_arg *list;
	size_t count;

	*condstore_r = false;
	if (imap_arg_is_eol(arg))
		return true;
	if (!imap_arg_get_list(arg, &list, &count) || !imap_arg_is_eol(&arg[1]))
		return false;
	for (size_t i = 0; i < count; i++) {
		if (!imap_arg_atom_equals(&list[i], "CONDSTORE"))
			return false;
		*condstore_r = true;
	}
	return true;
}

/* select_first_unseen - sequence number of the first message without \Seen */
static uint32_t select_first_unseen(struct mailbox *box)
{
	uint32_t count = mailbox_count(box);

	for (uint32_t i = 0; i < count; i++) {
		if ((mailbox_record(box, i)->flags & MAIL_SEEN) == 0)
			return i + 1;
	}
	return 0;
}

/* select_describe - the untagged responses for a freshly opened view */
static int select_describe(struct imap_client *client)
{
	struct mailbox *box = client->box;
	uint32_t count = mailbox_count(box), recent = 0, unseen;
	bool rev1 = (client->enabled & IMAP_ENABLED_REV2) == 0;

	if (imap_sync_send_flags(client) < 0 ||
	    imap_client_untagged(client, "%u EXISTS", count) < 0)
		return -1;
	for (uint32_t i = 0; i < count; i++) {
		if ((mailbox_record(box, i)->flags & MAIL_RECENT) != 0)
			recent++;
	}
	if (rev1 && imap_client_untagged(client, "%u RECENT", recent) < 0)
		return -1;
	unseen = select_first_unseen(box);
	if (rev1 && unseen != 0 &&
	    imap_client_untagged(client, "OK [UNSEEN %u] First unseen.",
				 unseen) < 0)
		return -1;
	if (imap_client_untagged(client, "OK [UIDVALIDITY %u] UIDs valid",
				 mailbox_uidvalidity(box)) < 0 ||
	    imap_client_untagged(client, "OK [UIDNEXT %u] Predicted next UID",
				 mailbox_uidnext(box)) < 0 ||
	    imap_client_untagged(client, "OK [HIGHESTMODSEQ %llu] Highest",
				 (unsigned long long)mailbox_highestmodseq(box)) < 0)
		return -1;
	return 0;
}

/* select_forget_changes - a fresh view has nothing to report yet; let
   the store drop what it noted while opening (keyword table loaded...) */
static void select_forget_changes(struct mailbox *box)
{
	struct mailbox_changes changes;

	if (mailbox_sync(box, 0, &changes) == STORE_OK)
		mailbox_changes_free(&changes);
}

/* The rights that make a selected mailbox read-write. */
#define SELECT_WRITE_RIGHTS (ACL_RIGHT_SEEN | ACL_RIGHT_WRITE | \
			     ACL_RIGHT_DELETE_MESSAGES | ACL_RIGHT_EXPUNGE)

/* select_open_view - open the view of box_name (own or shared) into
   client->box; a shared view owns the other user's store_user */
static int select_open_view(struct imap_client *client, const char *box_name,
			    bool readonly)
{
	struct imap_mailbox_ref ref;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, box_name, &ref)) < 0)
		return ret;
	ret = mailbox_open(ref.user, ref.name,
			   readonly ? MAILBOX_OPEN_READONLY : 0, &client->box);
	if (ret == STORE_OK && ref.shared) {
		mailbox_take_user(client->box);
		ref.user = NULL;
	}
	imap_mailbox_ref_free(&ref);
	return ret;
}

/* select_open - SELECT (readonly false) or EXAMINE (true) */
static int select_open(struct imap_command *cmd, bool readonly)
{
	struct imap_client *client = cmd->client;
	const char *name, *error;
	char *box_name;
	bool condstore;
	int ret;

	if (!imap_arg_get_astring(&cmd->args[0], &name) ||
	    !select_parse_params(&cmd->args[1], &condstore)) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (client->box != NULL) {
		/* RFC 9051 7.1 / RFC 7162 3.2.11: say where one view ends
		   and the next begins (rev1 clients ignore the code). */
		imap_client_unselect(client);
		if (imap_client_untagged(client, "OK [CLOSED] Previous "
					 "mailbox closed.") < 0)
			return -1;
	}
	box_name = imap_mailbox_from_client(client, name, &error);
	if (box_name == NULL) {
		imap_command_no(cmd, "[CANNOT] %s", error);
		return 0;
	}
	ret = select_open_view(client, box_name, readonly);
	free(box_name);
	if (ret < 0) {
		client->box = NULL;
		imap_command_store_error(cmd, ret, false);
		return 0;
	}
	select_forget_changes(client->box);
	client->state = IMAP_STATE_SELECTED;
	/* RFC 4314 4: READ-ONLY when no right would let the session change
	   anything in the mailbox. */
	if ((mailbox_rights(client->box) & SELECT_WRITE_RIGHTS) == 0)
		readonly = true;
	client->box_readonly = readonly;
	client->condstore_active =
		condstore || (client->enabled & IMAP_ENABLED_CONDSTORE) != 0;
	client->exists_reported = mailbox_count(client->box);
	if (select_describe(client) < 0)
		return -1;
	imap_command_ok(cmd, "[%s] %s completed", readonly ? "READ-ONLY" :
			"READ-WRITE", readonly ? "EXAMINE" : "SELECT");
	return 0;
}

/* cmd_select - SELECT mailbox [(CONDSTORE)] */
int cmd_select(struct imap_command *cmd)
{
	return select_open(cmd, false);
}

/* cmd_examine - EXAMINE mailbox: a read-only SELECT */
int cmd_examine(struct imap_command *cmd)
{
	return select_open(cmd, true);
}
