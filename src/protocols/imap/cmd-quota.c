/*
 * cmd-quota.c - RFC 9208 quota: GETQUOTA, GETQUOTAROOT and SETQUOTA.
 *
 * One quota root per user, named "" (the empty string RFC 9208 examples
 * use): every mailbox of the user lies in it, so GETQUOTAROOT names it
 * for any mailbox name, and GETQUOTA knows no other root (NO
 * [NONEXISTENT]). RFC 9208 4.1.2 says the mailbox of GETQUOTAROOT need
 * not exist (a client may ask which root a mailbox would get before
 * creating it), so only an unusable name is refused there.
 *
 * Resources: STORAGE is reported in units of 1024 octets (RFC 9208 5.1)
 * while the store counts bytes: usage is rounded up and the limit down,
 * so that "usage < limit" on the wire never hides a full quota. MESSAGE
 * is a plain count. A resource without a limit is not listed ("resources
 * not named in the list are not limited"). When neither has a limit no
 * QUOTA response is sent at all: the RFC 9208 grammar requires at least
 * one resource in the list, and an empty "()" breaks strict parsers,
 * while a missing QUOTA response just means "nothing is limited" to
 * every client we know of.
 *
 * SETQUOTA is parsed (a malformed one is a BAD) and then refused with
 * NO [NOPERM]: who may set limits is the server's choice (RFC 9208 4.1.3)
 * and on clustermail it is the administrator, with "clustermailctl quota
 * set". Hence QUOTASET is not advertised.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "maildir/name.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-util.h"

#include <stdlib.h>
#include <string.h>

/* The user's single quota root. */
#define QUOTA_ROOT ""

/* quota_kib_up - bytes in 1024-octet units, rounded up (no overflow) */
static uint64_t quota_kib_up(uint64_t bytes)
{
	return bytes / 1024 + (bytes % 1024 != 0 ? 1 : 0);
}

/* quota_send - "* QUOTA "" (STORAGE used limit MESSAGE used limit)" with
   only the limited resources; nothing when none is limited. 0, or -1
   when the connection is gone. */
static int quota_send(struct imap_client *client,
		      const struct store_quota *quota)
{
	unsigned long long kib_used = quota_kib_up(quota->storage_used);
	unsigned long long kib_limit = quota->storage_limit / 1024;
	struct buffer out;
	const char *sep = "";
	int ret;

	if (quota->storage_limit == 0 && quota->messages_limit == 0)
		return 0;
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* QUOTA ");
	imap_append_string(&out, QUOTA_ROOT, strlen(QUOTA_ROOT), false);
	(void)buffer_append_str(&out, " (");
	if (quota->storage_limit != 0) {
		(void)buffer_printf(&out, "STORAGE %llu %llu", kib_used,
				    kib_limit);
		sep = " ";
	}
	if (quota->messages_limit != 0) {
		(void)buffer_printf(&out, "%sMESSAGE %llu %llu", sep,
				    (unsigned long long)quota->messages_used,
				    (unsigned long long)quota->messages_limit);
	}
	(void)buffer_append_str(&out, ")\r\n");
	ret = imap_client_write(client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* quota_get_send - read the user's quota and send it; 0 after replying
   NO on a store error, -1 when the connection is gone, 1 when sent */
static int quota_get_send(struct imap_command *cmd)
{
	struct store_quota quota;
	int ret;

	ret = store_quota_get(cmd->client->store_user, &quota);
	if (ret < 0) {
		imap_command_store_error(cmd, ret, false);
		return 0;
	}
	return quota_send(cmd->client, &quota) < 0 ? -1 : 1;
}

int cmd_getquota(struct imap_command *cmd)
{
	const char *root;
	int ret;

	if (!imap_arg_get_astring(&cmd->args[0], &root) ||
	    !imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "Invalid GETQUOTA arguments");
		return 0;
	}
	if (strcmp(root, QUOTA_ROOT) != 0) {
		imap_command_no(cmd, "[NONEXISTENT] No such quota root");
		return 0;
	}
	if ((ret = quota_get_send(cmd)) <= 0)
		return ret;
	imap_command_ok(cmd, "GETQUOTA completed");
	return 0;
}

/* quota_name_valid - could the store create a mailbox of this name? (the
   checks it makes first: valid levels, and a directory name for it) */
static bool quota_name_valid(const char *name, const char **error_r)
{
	char *canonical, *dir;
	int ret;

	if (name_mailbox_canonical(name, &canonical, error_r) < 0)
		return false;
	ret = name_mailbox_to_dir(canonical, &dir, error_r);
	free(canonical);
	if (ret < 0)
		return false;
	free(dir);
	return true;
}

/* quota_mailbox_arg - the store name of a mailbox that may not exist yet,
   or NULL after replying (NO [CANNOT] for a name it could never have) */
static char *quota_mailbox_arg(struct imap_command *cmd, const char *arg)
{
	const char *error;
	char *name;

	name = imap_mailbox_from_client(cmd->client, arg, &error);
	if (name == NULL) {
		imap_command_no(cmd, "[CANNOT] %s", error);
		return NULL;
	}
	if (!quota_name_valid(name, &error)) {
		imap_command_no(cmd, "[CANNOT] Invalid mailbox name: %s",
				error);
		free(name);
		return NULL;
	}
	return name;
}

int cmd_getquotaroot(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	struct buffer out;
	const char *arg;
	char *name;
	int ret;

	if (!imap_arg_get_astring(&cmd->args[0], &arg) ||
	    !imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "Invalid GETQUOTAROOT arguments");
		return 0;
	}
	if ((name = quota_mailbox_arg(cmd, arg)) == NULL)
		return 0;
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "* QUOTAROOT ");
	imap_append_mailbox(&out, client, name);
	(void)buffer_append_byte(&out, ' ');
	imap_append_string(&out, QUOTA_ROOT, strlen(QUOTA_ROOT), false);
	(void)buffer_append_str(&out, "\r\n");
	free(name);
	ret = imap_client_write(client, out.data, out.used);
	buffer_clear(&out);
	if (ret < 0)
		return -1;
	if ((ret = quota_get_send(cmd)) <= 0)
		return ret;
	imap_command_ok(cmd, "GETQUOTAROOT completed");
	return 0;
}

/* quota_setlist_valid - "(resource limit ...)" of RFC 9208 SETQUOTA:
   atom / number64 pairs, possibly none */
static bool quota_setlist_valid(const struct imap_arg *arg)
{
	const struct imap_arg *list;
	const char *resource, *limit;
	size_t count;
	uint64_t num;

	if (!imap_arg_get_list(arg, &list, &count) || count % 2 != 0)
		return false;
	for (size_t i = 0; i < count; i += 2) {
		if (!imap_arg_get_atom(&list[i], &resource) ||
		    !imap_arg_get_atom(&list[i + 1], &limit) ||
		    str_to_uint64(limit, &num) < 0)
			return false;
	}
	return true;
}

int cmd_setquota(struct imap_command *cmd)
{
	const char *root;

	if (!imap_arg_get_astring(&cmd->args[0], &root) ||
	    !quota_setlist_valid(&cmd->args[1]) ||
	    !imap_arg_is_eol(&cmd->args[2])) {
		imap_command_bad(cmd, "Invalid SETQUOTA arguments");
		return 0;
	}
	imap_command_no(cmd, "[NOPERM] Quota limits are set by the "
			"administrator");
	return 0;
}
