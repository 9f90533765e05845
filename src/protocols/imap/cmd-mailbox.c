/*
 * cmd-mailbox.c - mailbox management: CREATE, DELETE, RENAME, SUBSCRIBE,
 * UNSUBSCRIBE, STATUS and NAMESPACE (RFC 9051 6.3, RFC 6154 CREATE-
 * SPECIAL-USE, RFC 8438 STATUS=SIZE, RFC 7162 HIGHESTMODSEQ, RFC 2342,
 * RFC 8474 MAILBOXID in CREATE's reply and as a STATUS item).
 *
 * Names arrive in the client's encoding (mUTF-7 for rev1, UTF-8 after
 * UTF8=ACCEPT or for rev2) and are converted with
 * imap_mailbox_from_client(); the store validates them (no "..", empty
 * levels or control characters: BADNAME -> NO [CANNOT]) so that no name
 * can reach outside the user's spool.
 *
 * STATUS of the selected mailbox answers from the view, so that it never
 * contradicts what the session has been told (RFC 9051 6.3.11 warns that
 * STATUS on the selected mailbox may be slow or inconsistent otherwise).
 * The STATUS writer is shared with LIST-STATUS in cmd-list.c.
 *
 * Other users' mailboxes (RFC 2342 "other users" namespace, imap-util.h):
 * every command that names a mailbox resolves it with
 * imap_mailbox_ref_get() and calls the store on the owner's spool, which
 * checks the session user's rights (CREATE "k", DELETE "x", RENAME "x"
 * and "k", STATUS "r"; no "l" or "r" looks like NONEXISTENT). RENAME
 * between two users' spools is NO [CANNOT]. SUBSCRIBE of a shared name
 * goes to the session user's own subscriptions (any name may be
 * subscribed, RFC 9051 6.3.7); cmd-list.c marks it.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Shared with cmd-list.c (LIST-STATUS), declared there as well. */

static const struct {
	const char *name;
	unsigned int bit;
} status_items[] = {
	{ "MESSAGES", STATUS_MESSAGES },
	{ "UIDNEXT", STATUS_UIDNEXT },
	{ "UIDVALIDITY", STATUS_UIDVALIDITY },
	{ "UNSEEN", STATUS_UNSEEN },
	{ "RECENT", STATUS_RECENT },
	{ "SIZE", STATUS_SIZE },
	{ "HIGHESTMODSEQ", STATUS_HIGHESTMODSEQ },
	{ "DELETED", STATUS_DELETED },
	{ "MAILBOXID", STATUS_MAILBOXID },
};

/* args_count - top-level arguments before the EOL */
static size_t args_count(const struct imap_arg *args)
{
	size_t n = 0;

	while (!imap_arg_is_eol(&args[n]))
		n++;
	return n;
}

/* mailbox_arg - the store name of args[i], or NULL after replying */
static char *mailbox_arg(struct imap_command *cmd, const struct imap_arg *arg)
{
	const char *name, *error;
	char *box_name;

	if (!imap_arg_get_astring(arg, &name)) {
		imap_command_bad(cmd, "Invalid mailbox name argument");
		return NULL;
	}
	box_name = imap_mailbox_from_client(cmd->client, name, &error);
	if (box_name == NULL)
		imap_command_no(cmd, "[CANNOT] %s", error);
	return box_name;
}

/* mailbox_name_is_dotted - has a level "." or ".."? Such names would be
   stored safely (escaped) but look like path tricks to every client and
   tool: refused for new names. */
static bool mailbox_name_is_dotted(const char *name)
{
	const char *level = name;

	for (;;) {
		const char *end = strchr(level, '/');
		size_t len = end == NULL ? strlen(level) : (size_t)(end - level);

		if ((len == 1 && level[0] == '.') ||
		    (len == 2 && level[0] == '.' && level[1] == '.'))
			return true;
		if (end == NULL)
			return false;
		level = end + 1;
	}
}

/* new_mailbox_arg - mailbox_arg() for a name about to be created */
static char *new_mailbox_arg(struct imap_command *cmd,
			     const struct imap_arg *arg)
{
	char *name = mailbox_arg(cmd, arg);

	if (name != NULL && mailbox_name_is_dotted(name)) {
		imap_command_no(cmd, "[CANNOT] Invalid mailbox name");
		free(name);
		return NULL;
	}
	return name;
}

/* mailbox_strip_separator - drop trailing '/' (CREATE "a/b/" = "a/b") */
static void mailbox_strip_separator(char *name)
{
	size_t len = strlen(name);

	while (len > 1 && name[len - 1] == '/')
		name[--len] = '\0';
}

/* create_parse_use - RFC 6154 "(USE (\Sent ...))"; -1 = bad */
static int create_parse_use(const struct imap_arg *arg, unsigned int *use_r)
{
	static const struct { const char *name; unsigned int bit; } uses[] = {
		{ "\\Drafts", STORE_SPECIAL_DRAFTS },
		{ "\\Sent", STORE_SPECIAL_SENT },
		{ "\\Trash", STORE_SPECIAL_TRASH },
		{ "\\Junk", STORE_SPECIAL_JUNK },
		{ "\\Archive", STORE_SPECIAL_ARCHIVE },
	};
	const struct imap_arg *list, *flags;
	size_t count, flag_count;

	*use_r = 0;
	if (imap_arg_is_eol(arg))
		return 0;
	if (!imap_arg_get_list(arg, &list, &count) || count != 2 ||
	    !imap_arg_atom_equals(&list[0], "USE") ||
	    !imap_arg_get_list(&list[1], &flags, &flag_count) ||
	    !imap_arg_is_eol(&arg[1]))
		return -1;
	for (size_t i = 0; i < flag_count; i++) {
		size_t j;

		for (j = 0; j < N_ELEMENTS(uses); j++) {
			if (imap_arg_atom_equals(&flags[i], uses[j].name))
				break;
		}
		if (j == N_ELEMENTS(uses))
			return 1;
		*use_r |= uses[j].bit;
	}
	return 0;
}

/* cmd_create - CREATE name [(USE (special-use))] */
int cmd_create(struct imap_command *cmd)
{
	struct imap_mailbox_ref ref;
	char id[STORE_MAILBOX_ID_SIZE] = "";
	unsigned int use;
	char *name;
	int ret;

	ret = args_count(cmd->args) == 0 ? -1 :
		create_parse_use(&cmd->args[1], &use);
	if (ret < 0) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (ret > 0) {
		imap_command_no(cmd, "[USEATTR] Unsupported special-use attribute");
		return 0;
	}
	if ((name = new_mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	mailbox_strip_separator(name);
	if ((ret = imap_mailbox_ref_get(cmd->client, name, &ref)) == STORE_OK) {
		ret = store_mailbox_create(ref.user, ref.name, use);
		/* RFC 8474: the new mailbox's id, when it can be told */
		if (ret == STORE_OK &&
		    store_mailbox_id(ref.user, ref.name, id) != STORE_OK)
			id[0] = '\0';
		imap_mailbox_ref_free(&ref);
	}
	if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else if (id[0] != '\0')
		imap_command_ok(cmd, "[MAILBOXID (%s)] CREATE completed", id);
	else
		imap_command_ok(cmd, "CREATE completed");
	free(name);
	return 0;
}

/* mailbox_is_selected - does name (store form) name the selected mailbox? */
static bool mailbox_is_selected(struct imap_client *client, const char *name)
{
	return imap_mailbox_is_selected(client, name);
}

/* mailbox_close_selected - before DELETE/RENAME of the selected mailbox:
   its view would only end in BYE at the next sync, so return to the
   authenticated state and say so (RFC 7162 [CLOSED]) */
static int mailbox_close_selected(struct imap_client *client)
{
	imap_client_unselect(client);
	return imap_client_untagged(client, "OK [CLOSED] Mailbox closed");
}

/* cmd_delete - DELETE name (never INBOX) */
int cmd_delete(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	struct imap_mailbox_ref ref;
	char *name;
	int ret;

	if (args_count(cmd->args) != 1) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if ((name = mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	if (strcasecmp(name, "INBOX") == 0) {
		imap_command_no(cmd, "[CANNOT] INBOX can't be deleted");
		free(name);
		return 0;
	}
	if (mailbox_is_selected(client, name) &&
	    mailbox_close_selected(client) < 0) {
		free(name);
		return -1;
	}
	if ((ret = imap_mailbox_ref_get(client, name, &ref)) == STORE_OK) {
		ret = store_mailbox_delete(ref.user, ref.name);
		imap_mailbox_ref_free(&ref);
	}
	if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else
		imap_command_ok(cmd, "DELETE completed");
	free(name);
	return 0;
}

/* rename_run - RENAME within one user's spool (own or shared): a store
   result, or 1 when the names are in two users' spools */
static int rename_run(struct imap_client *client, const char *old_name,
		      const char *new_name)
{
	struct imap_mailbox_ref old_ref, new_ref;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, old_name, &old_ref)) < 0)
		return ret;
	if ((ret = imap_mailbox_ref_get(client, new_name, &new_ref)) < 0) {
		imap_mailbox_ref_free(&old_ref);
		return ret;
	}
	if (old_ref.shared != new_ref.shared ||
	    strcmp(store_user_name(old_ref.user),
		   store_user_name(new_ref.user)) != 0) {
		imap_mailbox_ref_free(&old_ref);
		imap_mailbox_ref_free(&new_ref);
		return 1;
	}
	ret = store_mailbox_rename(old_ref.user, old_ref.name, new_ref.name);
	imap_mailbox_ref_free(&old_ref);
	imap_mailbox_ref_free(&new_ref);
	return ret;
}

/* cmd_rename - RENAME old new (children follow) */
int cmd_rename(struct imap_command *cmd)
{
	char *old_name, *new_name;
	int ret;

	if (args_count(cmd->args) != 2) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if ((old_name = mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	if ((new_name = new_mailbox_arg(cmd, &cmd->args[1])) == NULL) {
		free(old_name);
		return 0;
	}
	mailbox_strip_separator(new_name);
	if (strcasecmp(old_name, "INBOX") != 0 &&
	    mailbox_is_selected(cmd->client, old_name) &&
	    mailbox_close_selected(cmd->client) < 0) {
		free(old_name);
		free(new_name);
		return -1;
	}
	ret = rename_run(cmd->client, old_name, new_name);
	if (ret > 0)
		imap_command_no(cmd, "[CANNOT] Can't move a mailbox to "
				"another user");
	else if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else
		imap_command_ok(cmd, "RENAME completed");
	free(old_name);
	free(new_name);
	return 0;
}

/* subscribe - SUBSCRIBE (true) / UNSUBSCRIBE (false) */
static int subscribe(struct imap_command *cmd, bool set)
{
	char *name;
	int ret;

	if (args_count(cmd->args) != 1) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if ((name = mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	mailbox_strip_separator(name);
	ret = store_subscribe(cmd->client->store_user, name, set);
	if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else
		imap_command_ok(cmd, "%s completed",
				set ? "SUBSCRIBE" : "UNSUBSCRIBE");
	free(name);
	return 0;
}

/* cmd_subscribe - SUBSCRIBE name */
int cmd_subscribe(struct imap_command *cmd)
{
	return subscribe(cmd, true);
}

/* cmd_unsubscribe - UNSUBSCRIBE name */
int cmd_unsubscribe(struct imap_command *cmd)
{
	return subscribe(cmd, false);
}

/* cmd_status_parse_items - "(MESSAGES UNSEEN ...)"; 0, or -1 = bad */
int cmd_status_parse_items(const struct imap_arg *arg, unsigned int *items_r)
{
	const struct imap_arg *list;
	size_t count;

	*items_r = 0;
	if (!imap_arg_get_list(arg, &list, &count) || count == 0)
		return -1;
	for (size_t i = 0; i < count; i++) {
		size_t j;

		for (j = 0; j < N_ELEMENTS(status_items); j++) {
			if (imap_arg_atom_equals(&list[i], status_items[j].name))
				break;
		}
		if (j == N_ELEMENTS(status_items))
			return -1;
		*items_r |= status_items[j].bit;
	}
	return 0;
}

/* status_value - the number for one STATUS item */
static uint64_t status_value(const struct store_status *st, unsigned int bit)
{
	switch (bit) {
	case STATUS_MESSAGES: return st->messages;
	case STATUS_UIDNEXT: return st->uidnext;
	case STATUS_UIDVALIDITY: return st->uidvalidity;
	case STATUS_UNSEEN: return st->unseen;
	case STATUS_RECENT: return st->recent;
	case STATUS_SIZE: return st->size;
	case STATUS_HIGHESTMODSEQ: return st->highestmodseq;
	default: return st->deleted;
	}
}

/* status_get - the status of a mailbox that is not selected (own or
   shared: needs "r") */
static int status_get(struct imap_client *client, const char *name,
		      struct store_status *st_r)
{
	struct imap_mailbox_ref ref;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, name, &ref)) < 0)
		return ret;
	ret = store_mailbox_status(ref.user, ref.name, st_r);
	imap_mailbox_ref_free(&ref);
	return ret;
}

/* status_mailbox_id - the MAILBOXID of a mailbox that is not selected */
static int status_mailbox_id(struct imap_client *client, const char *name,
			     char id_r[STORE_MAILBOX_ID_SIZE])
{
	struct imap_mailbox_ref ref;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, name, &ref)) < 0)
		return ret;
	ret = store_mailbox_id(ref.user, ref.name, id_r);
	imap_mailbox_ref_free(&ref);
	return ret;
}

/* cmd_status_send - "* STATUS name (...)"; 0, -1 = connection gone,
   or a negative store result (> -100) when the status is unavailable */
int cmd_status_send(struct imap_client *client, const char *name,
		    unsigned int items)
{
	char id[STORE_MAILBOX_ID_SIZE];
	struct store_status st;
	struct buffer buf;
	const char *sep = "";
	int ret;

	if (mailbox_is_selected(client, name)) {
		/* Report news first, so that the numbers match what the
		   client has been told. */
		if (imap_sync(client, 0) < 0)
			return -1;
		mailbox_get_status(client->box, &st);
		if ((items & STATUS_MAILBOXID) != 0 &&
		    (ret = store_mailbox_id(mailbox_user(client->box),
					    mailbox_name(client->box), id)) < 0)
			return ret - 100;
	} else if ((ret = status_get(client, name, &st)) < 0 ||
		   ((items & STATUS_MAILBOXID) != 0 &&
		    (ret = status_mailbox_id(client, name, id)) < 0)) {
		return ret - 100;
	}
	buffer_init(&buf, 0);
	buffer_append_str(&buf, "* STATUS ");
	imap_append_mailbox(&buf, client, name);
	buffer_append_str(&buf, " (");
	for (size_t i = 0; i < N_ELEMENTS(status_items); i++) {
		if ((items & status_items[i].bit) == 0)
			continue;
		if (status_items[i].bit == STATUS_MAILBOXID)
			buffer_printf(&buf, "%s%s (%s)", sep,
				      status_items[i].name, id);
		else
			buffer_printf(&buf, "%s%s %llu", sep,
				      status_items[i].name,
				      (unsigned long long)status_value(&st,
						status_items[i].bit));
		sep = " ";
	}
	buffer_append_str(&buf, ")\r\n");
	ret = imap_client_write(client, buf.data, buf.used);
	buffer_clear(&buf);
	return ret;
}

/* cmd_status - STATUS name (items) */
int cmd_status(struct imap_command *cmd)
{
	unsigned int items;
	char *name;
	int ret;

	if (args_count(cmd->args) != 2 ||
	    cmd_status_parse_items(&cmd->args[1], &items) < 0) {
		imap_command_bad(cmd, "Invalid STATUS arguments");
		return 0;
	}
	if (!imap_status_items_allowed(cmd->client, items)) {
		imap_command_bad(cmd, "STATUS RECENT does not exist in "
				 "IMAP4rev2");
		return 0;
	}
	if ((name = mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	ret = cmd_status_send(cmd->client, name, items);
	free(name);
	if (ret == -1)
		return -1;
	if (ret < 0)
		imap_command_store_error(cmd, ret + 100, false);
	else
		imap_command_ok(cmd, "STATUS completed");
	return 0;
}

/* cmd_namespace - NAMESPACE: personal "" and other users' mailboxes
   under IMAP_SHARED_PREFIX (RFC 2342), no shared namespace */
int cmd_namespace(struct imap_command *cmd)
{
	if (!imap_arg_is_eol(&cmd->args[0])) {
		imap_command_bad(cmd, "NAMESPACE takes no arguments");
		return 0;
	}
	if (imap_client_untagged(cmd->client, "NAMESPACE ((\"\" \"/\")) "
				 "((\"" IMAP_SHARED_PREFIX "/\" \"/\")) NIL") < 0)
		return -1;
	imap_command_ok(cmd, "NAMESPACE completed");
	return 0;
}
