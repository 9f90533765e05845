/*
 * cmd-idle.c - IDLE (RFC 2177, RFC 9051 6.3.13).
 *
 * After "+ idling" the session waits for the client's DONE. The wait
 * wakes up every imap_idle_poll_msecs; each wake-up runs imap_sync(),
 * which is cheap when nothing changed (the store compares the mailbox's
 * version stamp) and otherwise sends EXISTS / EXPUNGE / FETCH as they
 * happen, whichever node made the change. In the authenticated state
 * (no mailbox) IDLE only waits for DONE. Any other line ends IDLE with
 * BAD (RFC 2177 leaves it open; the client is confused either way).
 */
#include "lib/lib.h"
#include "lib/settings.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"

#include <strings.h>

/* idle_wait - read lines until DONE; 0 or -1 */
static int idle_wait(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	const char *line;
	bool timed_out;

	for (;;) {
		line = imap_client_read_line(client,
					     client->set->imap_idle_poll_msecs,
					     &timed_out);
		if (timed_out) {
			/* (line is NULL then) */
			if (client->state == IMAP_STATE_SELECTED &&
			    imap_sync(client, 0) < 0)
				return -1;
			continue;
		}
		if (line == NULL)
			return -1;
		if (strcasecmp(line, "DONE") == 0)
			imap_command_ok(cmd, "IDLE terminated");
		else
			imap_command_bad(cmd, "Expected DONE");
		return 0;
	}
}

/* cmd_idle - IDLE until DONE */
int cmd_idle(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	int ret;

	if (!imap_arg_is_eol(&cmd->args[0])) {
		imap_command_bad(cmd, "IDLE takes no arguments");
		return 0;
	}
	if (client->state == IMAP_STATE_SELECTED && imap_sync(client, 0) < 0)
		return -1;
	if (imap_client_printf(client, "+ idling\r\n") < 0)
		return -1;
	client->idling = true;
	ret = idle_wait(cmd);
	client->idling = false;
	return ret;
}
