/*
 * cmd-acl.c - RFC 4314 access control: GETACL, SETACL, DELETEACL,
 * LISTRIGHTS and MYRIGHTS.
 *
 * Who may administer. Only the user's own mailboxes are reachable (shared
 * mailboxes of other users are not, yet), and their owner always holds
 * every right, so these commands work on every mailbox the session can
 * name. The store decides everything else: it refuses to change the
 * owner's own entry (NO [CANNOT]) and reports a missing mailbox (NO
 * [NONEXISTENT]); when shared mailboxes come, the rights checks belong
 * there too, so that clustermailctl and IMAP cannot disagree.
 *
 * Syntax before semantics. RFC 4314 section 3 wants a BAD for an
 * identifier the server cannot prepare, and section 3.1 a BAD for any
 * right it does not know (never silently ignored; that includes the
 * digits RFC 4314 reserves for implementations, which we have none of).
 * Both are checked here with the pure functions of maildir/acl.h before
 * the store is asked, so the store's own BADNAME for them is never what
 * the client sees.
 *
 * Obsolete rights (RFC 4314 2.1.1). The store keeps only the eleven real
 * rights. "c" (= "kx") and "d" (= "et") are accepted on input (acl.c
 * expands them) and added to every ACL, MYRIGHTS and LISTRIGHTS response
 * whenever a member right is present, as that section requires for RFC
 * 2086 clients; newer clients ignore them.
 *
 * LISTRIGHTS for our fixed rights model (section 3.7): the owner's rights
 * cannot change, so for the owner all rights are "required" and none is
 * optional; for anybody else nothing is required and each right can be
 * granted on its own (no tied rights), so every letter is listed as its
 * own optional group. The identifier is echoed in the client's form, as
 * section 3.4 requires.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/acl.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"

#include <stdlib.h>
#include <string.h>

/* acl_mailbox_arg - the store name of a mailbox argument, or NULL after
   replying (BAD for a non-astring, NO [CANNOT] for an unusable name) */
static char *acl_mailbox_arg(struct imap_command *cmd,
			     const struct imap_arg *arg)
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

/* acl_args - exactly count astring arguments into strs_r[]; BAD if not */
static bool acl_args(struct imap_command *cmd, size_t count,
		     const char **strs_r)
{
	size_t i;

	for (i = 0; i < count; i++) {
		if (!imap_arg_get_astring(&cmd->args[i], &strs_r[i]))
			break;
	}
	if (i < count || !imap_arg_is_eol(&cmd->args[count])) {
		imap_command_bad(cmd, "Invalid %s arguments", cmd->name);
		return false;
	}
	return true;
}

/* acl_identifier_check - RFC 4314 3: an identifier we cannot prepare is a
   BAD. Returns false after replying. */
static bool acl_identifier_check(struct imap_command *cmd,
				 const char *identifier)
{
	const char *error;
	char *normalized;

	if (acl_identifier_normalize(identifier, &normalized, &error) < 0) {
		imap_command_bad(cmd, "Invalid identifier: %s", error);
		return false;
	}
	free(normalized);
	return true;
}

/* acl_append_rights - the store's rights letters with the virtual "c" and
   "d" added (RFC 4314 2.1.1), as an astring */
static void acl_append_rights(struct buffer *out, const char *rights)
{
	char str[ACL_RIGHTS_STRING_SIZE];
	const char *error;
	unsigned int mask;

	if (acl_rights_parse(rights, &mask, &error) < 0)
		log_panic("acl: store returned invalid rights '%s'", rights);
	acl_rights_format(mask, ACL_FORMAT_VIRTUAL, str);
	imap_append_astring(out, str, false);
}

/* acl_send - write out (one untagged line without CRLF) and free it;
   0, or -1 when the connection is gone */
static int acl_send(struct imap_client *client, struct buffer *out)
{
	int ret;

	(void)buffer_append_str(out, "\r\n");
	ret = imap_client_write(client, out->data, out->used);
	buffer_clear(out);
	return ret;
}

/* acl_send_acl - "* ACL mailbox identifier rights ..." */
static int acl_send_acl(struct imap_client *client, const char *mailbox,
			const struct store_acl_entry *entries, size_t count)
{
	struct buffer out;

	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* ACL ");
	imap_append_mailbox(&out, client, mailbox);
	for (size_t i = 0; i < count; i++) {
		(void)buffer_append_byte(&out, ' ');
		imap_append_astring(&out, entries[i].identifier, false);
		(void)buffer_append_byte(&out, ' ');
		acl_append_rights(&out, entries[i].rights);
	}
	return acl_send(client, &out);
}

int cmd_getacl(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	struct imap_mailbox_ref ref;
	struct store_acl_entry *entries;
	size_t count;
	const char *arg;
	char *name;
	int ret;

	if (!acl_args(cmd, 1, &arg) ||
	    (name = acl_mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	if ((ret = imap_mailbox_ref_get(client, name, &ref)) == STORE_OK) {
		ret = store_acl_get(ref.user, ref.name, &entries, &count);
		imap_mailbox_ref_free(&ref);
	}
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		free(name);
		return 0;
	}
	ret = acl_send_acl(client, name, entries, count);
	store_acl_free(entries, count);
	free(name);
	if (ret < 0)
		return -1;
	imap_command_ok(cmd, "GETACL completed");
	return 0;
}

/* acl_set - SETACL (rights != NULL) and DELETEACL (rights NULL) once the
   arguments are parsed */
static int acl_set(struct imap_command *cmd, const char *identifier,
		   const char *rights)
{
	struct imap_mailbox_ref ref;
	const char *error;
	unsigned int mask;
	char *name;
	int ret;

	if (!acl_identifier_check(cmd, identifier))
		return 0;
	if (rights != NULL && acl_rights_modify(0, rights, &mask, &error) < 0) {
		/* RFC 4314 3.1: unknown rights are a BAD, never ignored */
		imap_command_bad(cmd, "Invalid rights: %s", error);
		return 0;
	}
	if ((name = acl_mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	if ((ret = imap_mailbox_ref_get(cmd->client, name, &ref)) == STORE_OK) {
		ret = store_acl_set(ref.user, ref.name, identifier,
				    rights != NULL ? rights : "");
		imap_mailbox_ref_free(&ref);
	}
	if (ret < 0)
		imap_command_store_error(cmd, ret, false);
	else
		imap_command_ok(cmd, "%s completed", cmd->name);
	free(name);
	return 0;
}

int cmd_setacl(struct imap_command *cmd)
{
	const char *args[3];

	if (!acl_args(cmd, 3, args))
		return 0;
	return acl_set(cmd, args[1], args[2]);
}

int cmd_deleteacl(struct imap_command *cmd)
{
	const char *args[2];

	if (!acl_args(cmd, 2, args))
		return 0;
	return acl_set(cmd, args[1], NULL);
}

/* acl_is_owner - does identifier (or its negative form, when negative)
   name the mailbox owner? */
static bool acl_is_owner(struct store_user *owner, const char *identifier,
			 bool *negative_r)
{
	const char *error;
	char *normalized;
	bool is_owner;

	if (acl_identifier_normalize(identifier, &normalized, &error) < 0)
		return false;
	*negative_r = acl_identifier_is_negative(normalized);
	is_owner = strcmp(normalized + (*negative_r ? 1 : 0),
			  store_user_name(owner)) == 0;
	free(normalized);
	return is_owner;
}

/* acl_append_listrights - the rights part of a LISTRIGHTS response */
static void acl_append_listrights(struct buffer *out,
				  struct store_user *owner,
				  const char *identifier)
{
	char all[ACL_RIGHTS_STRING_SIZE];
	bool negative = false;

	acl_rights_format(ACL_RIGHTS_ALL, ACL_FORMAT_VIRTUAL, all);
	if (acl_is_owner(owner, identifier, &negative)) {
		/* Fixed: the owner is granted everything, and nothing can
		   be taken away (a negative entry for the owner can hold no
		   rights at all). */
		(void)buffer_printf(out, " %s", negative ? "\"\"" : all);
		return;
	}
	(void)buffer_append_str(out, " \"\"");
	for (const char *p = all; *p != '\0'; p++)
		(void)buffer_printf(out, " %c", *p);
}

int cmd_listrights(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	char rights[ACL_RIGHTS_STRING_SIZE];
	struct imap_mailbox_ref ref;
	struct buffer out;
	const char *args[2];
	char *name;
	int ret;

	if (!acl_args(cmd, 2, args) || !acl_identifier_check(cmd, args[1]) ||
	    (name = acl_mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	/* the mailbox must exist, and for another user's mailbox we must
	   hold "a" there (the store checks it) */
	if ((ret = imap_mailbox_ref_get(client, name, &ref)) == STORE_OK)
		ret = store_acl_rights(ref.user, ref.name, client->user, rights);
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		imap_mailbox_ref_free(&ref);
		free(name);
		return 0;
	}
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* LISTRIGHTS ");
	imap_append_mailbox(&out, client, name);
	(void)buffer_append_byte(&out, ' ');
	imap_append_astring(&out, args[1], false);
	acl_append_listrights(&out, ref.user, args[1]);
	imap_mailbox_ref_free(&ref);
	free(name);
	if (acl_send(client, &out) < 0)
		return -1;
	imap_command_ok(cmd, "LISTRIGHTS completed");
	return 0;
}

int cmd_myrights(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	char rights[ACL_RIGHTS_STRING_SIZE];
	struct imap_mailbox_ref ref;
	struct buffer out;
	const char *arg;
	char *name;
	int ret;

	if (!acl_args(cmd, 1, &arg) ||
	    (name = acl_mailbox_arg(cmd, &cmd->args[0])) == NULL)
		return 0;
	if ((ret = imap_mailbox_ref_get(client, name, &ref)) == STORE_OK) {
		/* own mailbox: store_acl_rights also checks it exists;
		   another user's: what that user's ACL grants us */
		ret = ref.shared ?
			store_acl_myrights(ref.user, ref.name, rights) :
			store_acl_rights(ref.user, ref.name, client->user,
					 rights);
		imap_mailbox_ref_free(&ref);
	}
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		free(name);
		return 0;
	}
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* MYRIGHTS ");
	imap_append_mailbox(&out, client, name);
	(void)buffer_append_byte(&out, ' ');
	acl_append_rights(&out, rights);
	free(name);
	if (acl_send(client, &out) < 0)
		return -1;
	imap_command_ok(cmd, "MYRIGHTS completed");
	return 0;
}
