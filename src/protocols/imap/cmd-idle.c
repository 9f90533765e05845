/*
 * cmd-idle.c - IDLE (RFC 2177, RFC 9051 6.3.13).
 *
 * After "+ idling" the session waits for the client's DONE. The wait
 * wakes up when a change notification names its mailbox (a change on
 * this node, or a CPG message from another: imap_sessions_mailbox_changed)
 * and every poll interval (see idle_poll_msecs()); each wake-up runs
 * imap_sync(), which is cheap when nothing changed (the store compares
 * the mailbox's version stamp) and otherwise sends EXISTS / EXPUNGE /
 * FETCH as they happen, whichever node made the change. In the authenticated state
 * (no mailbox) IDLE only waits for DONE. Any other line ends IDLE with
 * BAD (RFC 2177 leaves it open; the client is confused either way).
 */
#include "lib/lib.h"
#include "lib/settings.h"
#include "imap.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"

#include <stdatomic.h>
#include <strings.h>

/* IDLE commands running in this process (all threads). */
static atomic_uint idle_running;

unsigned int imap_idle_sessions_total(void)
{
	return atomic_load(&idle_running);
}

/* idle_poll_msecs - how often IDLE looks at the version stamps itself.
   In the cluster group, changes anywhere wake it (imap.h), and the poll
   is only a safety net for changes no notification told about (another
   process on the spool, a lost message): every 30 s, or the configured
   interval when that is longer. */
static uint64_t idle_poll_msecs(const struct imap_client *client)
{
	uint64_t poll = client->set->imap_idle_poll_msecs;

	if (imap_notifications_active() && poll < IMAP_IDLE_SAFETY_POLL_MSECS)
		poll = IMAP_IDLE_SAFETY_POLL_MSECS;
	return poll;
}

/* idle_wait - read lines until DONE; 0 or -1 */
static int idle_wait(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	const char *line;
	bool timed_out;

	for (;;) {
		line = imap_client_read_line(client, idle_poll_msecs(client),
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
	atomic_fetch_add(&idle_running, 1);
	ret = idle_wait(cmd);
	atomic_fetch_sub(&idle_running, 1);
	client->idling = false;
	return ret;
}
