/*
 * notify.c - where change notifications and cluster events go.
 *
 * A change to a mailbox (store callback, any thread) wakes the IDLE
 * sessions on it in this process - posted to every worker loop, but only
 * when some session is in IDLE at all, so that a busy node without IDLE
 * clients pays nothing - and goes to the other members of the CPG group
 * (cluster.c), whose own notify.c does the same with it there.
 *
 * From the group: membership changes make the queue runner rescan at once
 * (a member that left may have left claimed mail behind: its claims go
 * with its locks) and every IDLE session resync (notifications may have
 * been lost while the group was split); commands "queue-flush" and
 * "kick-user" act like their local versions.
 */
#include "lib/lib.h"
#include "lock/lock.h"
#include "cluster/cluster.h"
#include "queue/runner.h"
#include "protocols/imap/imap.h"
#include "protocols/pop3/pop3.h"
#include "protocols/smtp/smtp.h"
#include "daemon.h"

#include <stdatomic.h>

struct notify_note {
	atomic_uint refs;
	char *user;
	char *mailbox;		/* unused for kicks */
};

static struct notify_note *notify_note_new(const char *user, const char *mailbox)
{
	struct notify_note *note = mem_zalloc(sizeof(*note));

	atomic_init(&note->refs, 1);
	note->user = mem_strdup(user);
	note->mailbox = mem_strdup(mailbox != NULL ? mailbox : "");
	return note;
}

static void notify_note_ref(void *context)
{
	struct notify_note *note = context;

	atomic_fetch_add(&note->refs, 1);
}

static void notify_note_unref(struct notify_note *note)
{
	if (atomic_fetch_sub(&note->refs, 1) != 1)
		return;
	free(note->user);
	free(note->mailbox);
	free(note);
}

/* notify_wake_run - on a worker thread */
static void notify_wake_run(void *context)
{
	struct notify_note *note = context;

	imap_sessions_mailbox_changed(note->user, note->mailbox);
	notify_note_unref(note);
}

/* notify_local - wake this process's IDLE sessions on user's mailbox */
static void notify_local(const char *user, const char *mailbox)
{
	struct notify_note *note;

	if (imap_idle_sessions_total() == 0)
		return;
	note = notify_note_new(user, mailbox);
	workers_post_each(notify_wake_run, note, notify_note_ref);
	notify_note_unref(note);
}

void notify_mailbox_changed(const char *user, const char *mailbox,
			    void *context ATTR_UNUSED)
{
	notify_local(user, mailbox);
	cluster_mailbox_changed(user, mailbox);
}

static void notify_kick_run(void *context)
{
	struct notify_note *note = context;

	(void)imap_sessions_kick_user(note->user);
	(void)pop3_sessions_kick_user(note->user);
	(void)smtp_sessions_kick_user(note->user);
	notify_note_unref(note);
}

static void notify_kick_local(const char *user)
{
	struct notify_note *note = notify_note_new(user, NULL);

	workers_post_each(notify_kick_run, note, notify_note_ref);
	notify_note_unref(note);
}

bool notify_queue_flush(void)
{
	runner_kick();
	return cluster_send_command(NULL, "queue-flush", "") == 0;
}

bool notify_kick_user(const char *user)
{
	notify_kick_local(user);
	return cluster_send_command(NULL, "kick-user", user) == 0;
}

/* ---- callbacks from the cluster thread ---------------------------------- */

static void notify_cluster_changed(const char *user, const char *mailbox,
				   void *context ATTR_UNUSED)
{
	notify_local(user, mailbox);
}

static void notify_cluster_membership(unsigned int joined ATTR_UNUSED,
				      unsigned int left,
				      void *context ATTR_UNUSED)
{
	imap_set_notifications_active(cluster_is_joined());
	if (left > 0)
		runner_kick();
	notify_local("", "");
}

static void notify_cluster_command(const char *from_node, const char *command,
				   const char *arg, void *context ATTR_UNUSED)
{
	if (strcmp(command, "queue-flush") == 0) {
		log_info("cluster: queue flush asked by node %s",
			 from_node[0] != '\0' ? from_node : "?");
		runner_kick();
	} else if (strcmp(command, "kick-user") == 0 && arg[0] != '\0') {
		log_info("cluster: ending the sessions of %s, asked by node %s",
			 arg, from_node[0] != '\0' ? from_node : "?");
		notify_kick_local(arg);
	} else {
		log_debug("cluster: ignoring unknown command '%s' from node %s",
			  command, from_node);
	}
}

static void notify_cluster_state(struct cluster_node_state *state_r,
				 void *context ATTR_UNUSED)
{
	struct runner_stats runner;
	struct lock_stats locks;

	runner_get_stats(&runner);
	lock_get_stats(&locks);
	state_r->connections = metrics_connections_total_current();
	state_r->queue_active = runner.active;
	state_r->queue_queued = runner.queued;
	state_r->lock_waits = locks.waits;
	state_r->lock_timeouts = locks.timeouts;
	state_r->draining = daemon_is_draining();
}

int notify_start(const struct settings *set, char **error_r)
{
	struct cluster_settings cluster_set = {
		.mode = set->cluster,
		.group = set->cluster_group,
		.node_name = set->node_name,
	};
	struct cluster_callbacks callbacks = {
		.mailbox_changed = notify_cluster_changed,
		.membership_changed = notify_cluster_membership,
		.command = notify_cluster_command,
		.get_state = notify_cluster_state,
	};

	return cluster_start(&cluster_set, &callbacks, error_r);
}

void notify_stop(void)
{
	imap_set_notifications_active(false);
	cluster_stop();
}
