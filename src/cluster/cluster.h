#ifndef CM_CLUSTER_H
#define CM_CLUSTER_H
/*
 * cluster - membership and change notifications over corosync CPG.
 *
 * Every clustermaild joins the CPG group `cluster_group' (default
 * "clustermail"). A member is one daemon: (corosync node id, pid); several
 * daemons on one host (the demo, tests) are several members of one
 * corosync node. Members multicast:
 *
 *   state    their node name and a few figures (sessions, queue work,
 *            lock waits), at join and every CLUSTER_STATE_INTERVAL, so
 *            that any node can show the whole cluster;
 *   changed  "USER's MAILBOX changed": receivers wake their IDLE sessions
 *            on it (a network round trip instead of a poll interval);
 *   command  a cluster-wide admin command (queue flush, kick a user) for
 *            every node or one named node.
 *
 * CPG runs on a thread of its own: libcpg's calls are synchronous IPC to
 * corosync and must not stall an event loop when corosync is slow or
 * stopped. When corosync is not running (or restarts, or the group
 * splits) the thread keeps trying to (re)join every few seconds; meanwhile
 * nothing is multicast and IDLE falls back to polling version stamps,
 * which is always correct, only slower. Nothing here is needed for
 * correctness: a lost notification costs latency, never data.
 *
 * The callbacks run on the cluster thread: they must be quick and hand
 * the work to an event loop (ioloop_post).
 */
#include <stdbool.h>
#include <stdint.h>

#include "lib/settings.h"

#define CLUSTER_STATE_INTERVAL_MSECS 5000
#define CLUSTER_NODE_NAME_MAX 63

/* A member's figures, as it last announced them. */
struct cluster_node_state {
	uint32_t connections;		/* protocol sessions open */
	uint32_t queue_active;		/* outbound deliveries running */
	uint32_t queue_queued;		/* messages its last queue scan saw */
	uint64_t lock_waits;		/* grants that had to wait, ever */
	uint64_t lock_timeouts;
	bool draining;
};

struct cluster_member {
	uint32_t nodeid;		/* corosync node id */
	uint32_t pid;
	char name[CLUSTER_NODE_NAME_MAX + 1];	/* "" until its first state */
	bool self;
	uint64_t joined_at;		/* wall clock, seconds */
	uint64_t state_at;		/* wall clock of its last state, 0 = none */
	struct cluster_node_state state;
};

struct cluster_callbacks {
	/* Another member changed a mailbox (user "" = anything may have
	   changed: resynchronise everything). */
	void (*mailbox_changed)(const char *user, const char *mailbox,
				void *context);
	/* Members joined or left (also when this daemon (re)joined or lost
	   the group): messages may have been missed. */
	void (*membership_changed)(unsigned int joined, unsigned int left,
				   void *context);
	/* A cluster-wide command addressed to this node (or to all). */
	void (*command)(const char *from_node, const char *command,
			const char *arg, void *context);
	/* Fill in this node's figures for the next state message. */
	void (*get_state)(struct cluster_node_state *state_r, void *context);
	void *context;
};

struct cluster_settings {
	enum settings_cluster mode;	/* NONE: cluster_start() does nothing */
	const char *group;		/* CPG group name */
	const char *node_name;
};

/* Start the cluster thread (it joins in the background). Returns 0, or
   -1 when mode is corosync/local-test and this build has no CPG support
   (with a message in *error_r, caller frees). */
int cluster_start(const struct cluster_settings *set,
		  const struct cluster_callbacks *callbacks, char **error_r);
/* Leave the group and join the thread. */
void cluster_stop(void);

/* Any thread: tell the other members that user's mailbox changed
   (dropped when not joined). Cheap: queued, coalesced and sent by the
   cluster thread. */
void cluster_mailbox_changed(const char *user, const char *mailbox);
/* Any thread: send command (with arg, may be "") to node_name, or to
   every node when node_name is NULL. Returns 0 when queued, -1 when this
   daemon is not in the group. */
int cluster_send_command(const char *node_name, const char *command,
			 const char *arg);

/* Any thread: is this daemon in the group right now? */
bool cluster_is_joined(void);

struct cluster_status {
	enum settings_cluster mode;
	bool supported;			/* built with libcpg */
	bool joined;
	char group[128];
	char last_error[160];		/* why not joined, "" if none */
	uint32_t local_nodeid;
	uint64_t joined_since;		/* wall clock, 0 when not joined */
	uint64_t messages_sent, messages_received, send_failures;
	uint64_t membership_changes;
	struct cluster_member *members;	/* owned array (free()) */
	unsigned int member_count;
};
/* Any thread: a copy of the current view; free members with free(). */
void cluster_get_status(struct cluster_status *status_r);

#endif
