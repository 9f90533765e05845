/*
 * cluster.c - corosync CPG membership and notifications (see cluster.h).
 *
 * One thread owns the CPG handle. It sleeps in poll() on the CPG fd and an
 * eventfd that other threads use to say "a message is queued" or "stop";
 * without a connection it retries every CLUSTER_RETRY_MSECS.
 *
 * Wire format (version 1): the bytes "CM1", a NUL, a one-letter type, a
 * NUL, then the type's fields, each ending with a NUL. Unknown types and
 * malformed messages are ignored (a newer member may send more), and
 * every field is checked for length, so a confused sender cannot hurt a
 * receiver.
 *   S  node-name connections queue-active queue-queued lock-waits
 *      lock-timeouts draining(0/1)           (state)
 *   M  user mailbox                           (mailbox changed; user ""
 *                                              = resynchronise everything)
 *   C  target-node("" = all) command arg      (command)
 * The sender's node name comes from its state message; CPG itself gives
 * the (node id, pid) of every message, and orders a member's messages
 * after the membership change that announced it.
 */
#include "lib/lib.h"
#include "lib/log.h"
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_CPG
#include <corosync/cpg.h>
#endif

#define CLUSTER_RETRY_MSECS 3000
/* Outgoing messages waiting for the thread; past this, pending mailbox
   notifications collapse into one "resynchronise everything". */
#define CLUSTER_QUEUE_MAX 2048
/* Field limits (a mailbox name is at most 1 KiB in the store). */
#define CLUSTER_FIELD_MAX 2048
#define CLUSTER_MESSAGE_MAX 8192
/* Log the same connection error again only after this long. */
#define CLUSTER_ERROR_RELOG_SECS 300

struct cluster_message {
	struct cluster_message *next;
	char type;
	size_t len;
	char data[];
};

static struct {
	bool started;
	struct cluster_settings set;	/* strings point to the two below */
	char *group, *node_name;
	struct cluster_callbacks cb;
	pthread_t thread;
	int event_fd;
	atomic_bool stopping;
	atomic_bool joined;

	/* queue: the outgoing messages */
	pthread_mutex_t queue_lock;
	struct cluster_message *queue_head, *queue_tail;
	unsigned int queue_count;
	bool queue_resync;		/* send "M" "" "" before the rest */

	/* status: what cluster_get_status() copies */
	pthread_mutex_t status_lock;
	struct cluster_member *members;
	unsigned int member_count;
	uint32_t local_nodeid;
	uint64_t joined_since;
	char last_error[160];
	uint64_t sent, received, send_failures, membership_changes;
} cl = {
	.event_fd = -1,
	.queue_lock = PTHREAD_MUTEX_INITIALIZER,
	.status_lock = PTHREAD_MUTEX_INITIALIZER,
};

static uint64_t cluster_wall_secs(void)
{
	return (uint64_t)time(NULL);
}

static uint64_t cluster_mono_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cluster_wake - tell the thread to look at its queue (or stop) */
static void cluster_wake(void)
{
	uint64_t one = 1;

	if (cl.event_fd >= 0 && write(cl.event_fd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN)
		log_error("cluster: eventfd write: %s", strerror(errno));
}

/* ---- building and queueing messages ----------------------------------- */

/* cluster_message_new - type and fields (NULL-terminated list) */
static struct cluster_message *cluster_message_new(char type,
						   const char *const *fields)
{
	struct cluster_message *msg;
	size_t len = 6, pos;

	for (size_t i = 0; fields[i] != NULL; i++)
		len += strlen(fields[i]) + 1;
	if (len > CLUSTER_MESSAGE_MAX)
		return NULL;
	msg = mem_zalloc(sizeof(*msg) + len);
	msg->type = type;
	msg->len = len;
	memcpy(msg->data, "CM1\0", 4);
	msg->data[4] = type;
	msg->data[5] = '\0';
	pos = 6;
	for (size_t i = 0; fields[i] != NULL; i++) {
		size_t n = strlen(fields[i]) + 1;

		memcpy(msg->data + pos, fields[i], n);
		pos += n;
	}
	return msg;
}

/* cluster_queue_push - append msg unless an equal mailbox notification is
   already waiting; false when the queue is full (msg is freed) */
static bool cluster_queue_push(struct cluster_message *msg)
{
	bool queued = true;

	pthread_mutex_lock(&cl.queue_lock);
	if (msg->type == 'M') {
		for (struct cluster_message *m = cl.queue_head; m != NULL; m = m->next) {
			if (m->type == 'M' && m->len == msg->len &&
			    memcmp(m->data, msg->data, msg->len) == 0) {
				free(msg);
				pthread_mutex_unlock(&cl.queue_lock);
				return true;
			}
		}
	}
	if (cl.queue_count >= CLUSTER_QUEUE_MAX) {
		if (msg->type == 'M') {
			/* Too many to tell apart: everyone resyncs once. */
			struct cluster_message **p = &cl.queue_head;

			cl.queue_tail = NULL;
			while (*p != NULL) {
				struct cluster_message *m = *p;

				if (m->type == 'M') {
					*p = m->next;
					free(m);
					cl.queue_count--;
				} else {
					cl.queue_tail = m;
					p = &m->next;
				}
			}
			cl.queue_resync = true;
		} else {
			queued = false;
		}
		free(msg);
	} else {
		if (cl.queue_tail != NULL)
			cl.queue_tail->next = msg;
		else
			cl.queue_head = msg;
		cl.queue_tail = msg;
		cl.queue_count++;
	}
	pthread_mutex_unlock(&cl.queue_lock);
	cluster_wake();
	return queued;
}

/* cluster_queue_clear - drop everything queued (not joined) */
static void cluster_queue_clear(void)
{
	pthread_mutex_lock(&cl.queue_lock);
	while (cl.queue_head != NULL) {
		struct cluster_message *m = cl.queue_head;

		cl.queue_head = m->next;
		free(m);
	}
	cl.queue_tail = NULL;
	cl.queue_count = 0;
	cl.queue_resync = false;
	pthread_mutex_unlock(&cl.queue_lock);
}

void cluster_mailbox_changed(const char *user, const char *mailbox)
{
	const char *fields[] = { user, mailbox, NULL };
	struct cluster_message *msg;

	if (!atomic_load(&cl.joined))
		return;
	/* Alone in the group: nobody to tell. */
	pthread_mutex_lock(&cl.status_lock);
	if (cl.member_count <= 1) {
		pthread_mutex_unlock(&cl.status_lock);
		return;
	}
	pthread_mutex_unlock(&cl.status_lock);
	if ((msg = cluster_message_new('M', fields)) != NULL)
		(void)cluster_queue_push(msg);
}

int cluster_send_command(const char *node_name, const char *command,
			 const char *arg)
{
	const char *fields[] = { node_name != NULL ? node_name : "", command,
				 arg != NULL ? arg : "", NULL };
	struct cluster_message *msg;

	if (!atomic_load(&cl.joined))
		return -1;
	if ((msg = cluster_message_new('C', fields)) == NULL)
		return -1;
	return cluster_queue_push(msg) ? 0 : -1;
}

bool cluster_is_joined(void)
{
	return atomic_load(&cl.joined);
}

/* cluster_queue_state - our state message, sent by the thread */
static void cluster_queue_state(void)
{
	struct cluster_node_state st = { 0 };
	char conns[16], active[16], queued[16], waits[24], timeouts[24];
	const char *fields[] = { cl.set.node_name, conns, active, queued, waits,
				 timeouts, NULL, NULL };
	struct cluster_message *msg;

	if (cl.cb.get_state != NULL)
		cl.cb.get_state(&st, cl.cb.context);
	snprintf(conns, sizeof(conns), "%" PRIu32, st.connections);
	snprintf(active, sizeof(active), "%" PRIu32, st.queue_active);
	snprintf(queued, sizeof(queued), "%" PRIu32, st.queue_queued);
	snprintf(waits, sizeof(waits), "%" PRIu64, st.lock_waits);
	snprintf(timeouts, sizeof(timeouts), "%" PRIu64, st.lock_timeouts);
	fields[6] = st.draining ? "1" : "0";
	if ((msg = cluster_message_new('S', fields)) != NULL)
		(void)cluster_queue_push(msg);
}

/* ---- status ----------------------------------------------------------- */

void cluster_get_status(struct cluster_status *status_r)
{
	memset(status_r, 0, sizeof(*status_r));
	status_r->mode = cl.set.mode;
#ifdef HAVE_CPG
	status_r->supported = true;
#endif
	pthread_mutex_lock(&cl.status_lock);
	status_r->joined = atomic_load(&cl.joined);
	snprintf(status_r->group, sizeof(status_r->group), "%s",
		 cl.set.group != NULL ? cl.set.group : "");
	snprintf(status_r->last_error, sizeof(status_r->last_error), "%s",
		 cl.last_error);
	status_r->local_nodeid = cl.local_nodeid;
	status_r->joined_since = cl.joined_since;
	status_r->messages_sent = cl.sent;
	status_r->messages_received = cl.received;
	status_r->send_failures = cl.send_failures;
	status_r->membership_changes = cl.membership_changes;
	if (cl.member_count > 0) {
		status_r->members = mem_calloc(cl.member_count,
					       sizeof(*status_r->members));
		memcpy(status_r->members, cl.members,
		       cl.member_count * sizeof(*cl.members));
		status_r->member_count = cl.member_count;
	}
	pthread_mutex_unlock(&cl.status_lock);
}

#ifdef HAVE_CPG

/* ---- the CPG side (cluster thread only) ------------------------------- */

static cpg_handle_t cluster_handle;
static bool cluster_connected;
static int cluster_cpg_fd = -1;
static uint64_t cluster_next_state;	/* monotonic msecs; 0 = now */
static uint64_t cluster_error_logged_at;
static char cluster_error_logged[160];

static const char *cluster_cs_error(cs_error_t err)
{
	switch (err) {
	case CS_OK: return "ok";
	case CS_ERR_LIBRARY: return "corosync is not running";
	case CS_ERR_ACCESS: return "corosync refused access (see uidgid in corosync.conf(5))";
	case CS_ERR_TRY_AGAIN: return "corosync is busy";
	case CS_ERR_EXIST: return "already a member of the group";
	case CS_ERR_BAD_HANDLE: return "connection to corosync lost";
	case CS_ERR_NOT_EXIST: return "not a member of the group";
	case CS_ERR_TIMEOUT: return "corosync did not answer";
	case CS_ERR_NO_MEMORY: return "corosync is out of memory";
	default: break;
	}
	return "corosync error";
}

/* cluster_set_error - remember (and log, not too often) why we are out */
static void cluster_set_error(const char *fmt, ...)
{
	char text[160];
	va_list args;
	uint64_t now = cluster_wall_secs();
	bool quiet;

	va_start(args, fmt);
	vsnprintf(text, sizeof(text), fmt, args);
	va_end(args);
	pthread_mutex_lock(&cl.status_lock);
	snprintf(cl.last_error, sizeof(cl.last_error), "%s", text);
	pthread_mutex_unlock(&cl.status_lock);
	/* cluster = auto without corosync is the normal single-node case:
	   said once. */
	quiet = cl.set.mode == SETTINGS_CLUSTER_AUTO;
	if (strcmp(text, cluster_error_logged) == 0 &&
	    (quiet || now < cluster_error_logged_at + CLUSTER_ERROR_RELOG_SECS))
		return;
	snprintf(cluster_error_logged, sizeof(cluster_error_logged), "%s", text);
	cluster_error_logged_at = now;
	if (quiet)
		log_info("cluster: %s; IDLE polls version stamps meanwhile", text);
	else
		log_warn("cluster: %s; IDLE polls version stamps meanwhile, "
			    "retrying every %u s", text, CLUSTER_RETRY_MSECS / 1000);
}

/* cluster_find - index of (nodeid, pid) among the members, or -1 */
static int cluster_find(uint32_t nodeid, uint32_t pid)
{
	for (unsigned int i = 0; i < cl.member_count; i++) {
		if (cl.members[i].nodeid == nodeid && cl.members[i].pid == pid)
			return (int)i;
	}
	return -1;
}

/* cluster_member_label - "name (corosync node N, pid P)" for logs, or
   without the name while it is not known (name may be NULL) */
static void cluster_member_label(const char *name, uint32_t nodeid,
				 uint32_t pid, char *buf, size_t size)
{
	if (name != NULL && name[0] != '\0')
		snprintf(buf, size, "%s (corosync node %" PRIu32 ", pid %" PRIu32 ")",
			 name, nodeid, pid);
	else
		snprintf(buf, size, "corosync node %" PRIu32 " pid %" PRIu32,
			 nodeid, pid);
}

static const char *cluster_reason(uint32_t reason)
{
	switch (reason) {
	case CPG_REASON_JOIN: return "joined";
	case CPG_REASON_LEAVE: return "left";
	case CPG_REASON_NODEDOWN: return "node down";
	case CPG_REASON_NODEUP: return "node up";
	case CPG_REASON_PROCDOWN: return "process died";
	default: break;
	}
	return "changed";
}

/* cluster_fields - split a message into at most max fields; returns the
   count, or -1 when malformed */
static int cluster_fields(const char *data, size_t len, const char **fields,
			  int max)
{
	size_t pos = 0;
	int n = 0;

	while (pos < len) {
		const char *nul = memchr(data + pos, '\0', len - pos);

		if (nul == NULL || n == max)
			return -1;
		if ((size_t)(nul - (data + pos)) > CLUSTER_FIELD_MAX)
			return -1;
		fields[n++] = data + pos;
		pos = (size_t)(nul - data) + 1;
	}
	return n;
}

static uint64_t cluster_number(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' ? 0 : (uint64_t)v;
}

static void cluster_deliver(cpg_handle_t handle ATTR_UNUSED,
			    const struct cpg_name *group ATTR_UNUSED,
			    uint32_t nodeid, uint32_t pid, void *data,
			    size_t len)
{
	const char *f[10];
	bool self = nodeid == cl.local_nodeid && pid == (uint32_t)getpid();
	int n;

	if (len < 6 || memcmp(data, "CM1\0", 4) != 0 ||
	    (n = cluster_fields((const char *)data + 4, len - 4, f, 10)) < 1 ||
	    strlen(f[0]) != 1)
		return;		/* not ours, or a future version */
	pthread_mutex_lock(&cl.status_lock);
	cl.received++;
	pthread_mutex_unlock(&cl.status_lock);
	switch (f[0][0]) {
	case 'S': {
		int i;

		if (n < 8)
			return;
		pthread_mutex_lock(&cl.status_lock);
		if ((i = cluster_find(nodeid, pid)) >= 0) {
			struct cluster_member *m = &cl.members[i];
			bool first = m->name[0] == '\0';

			snprintf(m->name, sizeof(m->name), "%s", f[1]);
			m->state.connections = (uint32_t)cluster_number(f[2]);
			m->state.queue_active = (uint32_t)cluster_number(f[3]);
			m->state.queue_queued = (uint32_t)cluster_number(f[4]);
			m->state.lock_waits = cluster_number(f[5]);
			m->state.lock_timeouts = cluster_number(f[6]);
			m->state.draining = strcmp(f[7], "1") == 0;
			m->state_at = cluster_wall_secs();
			if (first && !self) {
				char label[160];

				cluster_member_label(NULL, m->nodeid, m->pid, label,
						     sizeof(label));
				log_info("cluster: member %s is node %s", label, m->name);
			}
		}
		pthread_mutex_unlock(&cl.status_lock);
		break;
	}
	case 'M':
		if (n < 3 || self)
			return;
		if (cl.cb.mailbox_changed != NULL)
			cl.cb.mailbox_changed(f[1], f[2], cl.cb.context);
		break;
	case 'C': {
		char from[CLUSTER_NODE_NAME_MAX + 1] = "";
		int i;

		if (n < 4 || self)
			return;
		if (f[1][0] != '\0' && strcmp(f[1], cl.set.node_name) != 0)
			return;
		pthread_mutex_lock(&cl.status_lock);
		if ((i = cluster_find(nodeid, pid)) >= 0)
			snprintf(from, sizeof(from), "%s", cl.members[i].name);
		pthread_mutex_unlock(&cl.status_lock);
		if (cl.cb.command != NULL)
			cl.cb.command(from, f[2], f[3], cl.cb.context);
		break;
	}
	default:
		break;
	}
}

static void cluster_confchg(cpg_handle_t handle ATTR_UNUSED,
			    const struct cpg_name *group ATTR_UNUSED,
			    const struct cpg_address *members, size_t member_count,
			    const struct cpg_address *left, size_t left_count,
			    const struct cpg_address *joined, size_t joined_count)
{
	struct cluster_member *next = mem_calloc(member_count + 1, sizeof(*next));
	uint32_t mypid = (uint32_t)getpid();
	bool self_joined = false, self_present = false;
	char label[160];

	pthread_mutex_lock(&cl.status_lock);
	for (size_t i = 0; i < left_count; i++) {
		int old = cluster_find(left[i].nodeid, left[i].pid);

		cluster_member_label(old >= 0 ? cl.members[old].name : NULL,
				     left[i].nodeid, left[i].pid, label,
				     sizeof(label));
		log_info("cluster: member %s left the group (%s)", label,
			 cluster_reason(left[i].reason));
	}
	for (size_t i = 0; i < member_count; i++) {
		int old = cluster_find(members[i].nodeid, members[i].pid);

		if (old >= 0) {
			next[i] = cl.members[old];
		} else {
			next[i].nodeid = members[i].nodeid;
			next[i].pid = members[i].pid;
			next[i].joined_at = cluster_wall_secs();
		}
		next[i].self = members[i].nodeid == cl.local_nodeid &&
			members[i].pid == mypid;
		if (next[i].self) {
			self_present = true;
			snprintf(next[i].name, sizeof(next[i].name), "%s",
				 cl.set.node_name);
		}
	}
	for (size_t i = 0; i < joined_count; i++) {
		if (joined[i].nodeid == cl.local_nodeid && joined[i].pid == mypid) {
			self_joined = true;
			continue;
		}
		cluster_member_label(NULL, joined[i].nodeid, joined[i].pid,
				     label, sizeof(label));
		log_info("cluster: %s joined the group", label);
	}
	free(cl.members);
	cl.members = next;
	cl.member_count = (unsigned int)member_count;
	cl.membership_changes++;
	if (self_joined || (self_present && !atomic_load(&cl.joined))) {
		cl.joined_since = cluster_wall_secs();
		cl.last_error[0] = '\0';
	}
	pthread_mutex_unlock(&cl.status_lock);

	if (self_joined) {
		log_info("cluster: joined CPG group %s as corosync node %" PRIu32
			 " (%zu member%s)", cl.set.group, cl.local_nodeid,
			 member_count, member_count == 1 ? "" : "s");
		cluster_error_logged[0] = '\0';
	}
	atomic_store(&cl.joined, self_present);
	/* Newcomers learn everyone's name and figures at once. */
	if (joined_count > 0)
		cluster_next_state = 0;
	if (cl.cb.membership_changed != NULL)
		cl.cb.membership_changed((unsigned int)joined_count,
					 (unsigned int)left_count, cl.cb.context);
}

/* cluster_disconnect - drop the handle; members and queue forgotten */
static void cluster_disconnect(bool leave)
{
	bool was_joined = atomic_load(&cl.joined);
	unsigned int count;

	if (!cluster_connected)
		return;
	if (leave) {
		struct cpg_name name;

		name.length = (uint32_t)strlen(cl.set.group);
		memcpy(name.value, cl.set.group, name.length);
		(void)cpg_leave(cluster_handle, &name);
	}
	(void)cpg_finalize(cluster_handle);
	cluster_connected = false;
	cluster_cpg_fd = -1;
	atomic_store(&cl.joined, false);
	cluster_queue_clear();
	pthread_mutex_lock(&cl.status_lock);
	count = cl.member_count;
	free(cl.members);
	cl.members = NULL;
	cl.member_count = 0;
	cl.joined_since = 0;
	pthread_mutex_unlock(&cl.status_lock);
	if (was_joined && !leave && cl.cb.membership_changed != NULL)
		cl.cb.membership_changed(0, count, cl.cb.context);
}

/* cluster_connect - initialize and join; false on failure (error set) */
static bool cluster_connect(void)
{
	cpg_model_v1_data_t model = {
		.model = CPG_MODEL_V1,
		.cpg_deliver_fn = cluster_deliver,
		.cpg_confchg_fn = cluster_confchg,
	};
	struct cpg_name name;
	unsigned int nodeid;
	cs_error_t err;

	err = cpg_model_initialize(&cluster_handle, CPG_MODEL_V1,
				   (cpg_model_data_t *)&model, NULL);
	if (err != CS_OK) {
		cluster_set_error("cannot connect to corosync: %s",
				  cluster_cs_error(err));
		return false;
	}
	cluster_connected = true;
	if ((err = cpg_local_get(cluster_handle, &nodeid)) != CS_OK) {
		cluster_set_error("cannot get the local node id: %s",
				  cluster_cs_error(err));
		cluster_disconnect(false);
		return false;
	}
	pthread_mutex_lock(&cl.status_lock);
	cl.local_nodeid = nodeid;
	pthread_mutex_unlock(&cl.status_lock);
	name.length = (uint32_t)strlen(cl.set.group);
	memcpy(name.value, cl.set.group, name.length);
	for (int tries = 0; ; tries++) {
		err = cpg_join(cluster_handle, &name);
		if (err != CS_ERR_TRY_AGAIN || tries >= 20 ||
		    atomic_load(&cl.stopping))
			break;
		usleep(100 * 1000);
	}
	if (err != CS_OK) {
		cluster_set_error("cannot join CPG group %s: %s", cl.set.group,
				  cluster_cs_error(err));
		cluster_disconnect(false);
		return false;
	}
	if ((err = cpg_fd_get(cluster_handle, &cluster_cpg_fd)) != CS_OK) {
		cluster_set_error("no CPG fd: %s", cluster_cs_error(err));
		cluster_disconnect(false);
		return false;
	}
	cluster_next_state = 0;
	return true;
}

/* cluster_flush - send what is queued; false when the connection broke */
static bool cluster_flush(bool *busy_r)
{
	*busy_r = false;
	for (;;) {
		struct cluster_message *msg;
		struct iovec iov;
		cs_error_t err;
		bool resync;

		pthread_mutex_lock(&cl.queue_lock);
		resync = cl.queue_resync;
		cl.queue_resync = false;
		msg = resync ? NULL : cl.queue_head;
		if (msg != NULL) {
			cl.queue_head = msg->next;
			if (cl.queue_head == NULL)
				cl.queue_tail = NULL;
			cl.queue_count--;
		}
		pthread_mutex_unlock(&cl.queue_lock);
		if (resync) {
			const char *fields[] = { "", "", NULL };

			msg = cluster_message_new('M', fields);
		}
		if (msg == NULL)
			return true;
		if (!atomic_load(&cl.joined)) {
			free(msg);
			continue;
		}
		iov.iov_base = msg->data;
		iov.iov_len = msg->len;
		err = cpg_mcast_joined(cluster_handle, CPG_TYPE_AGREED, &iov, 1);
		if (err == CS_ERR_TRY_AGAIN) {
			/* Flow control: put it back and try shortly. */
			pthread_mutex_lock(&cl.queue_lock);
			msg->next = cl.queue_head;
			cl.queue_head = msg;
			if (cl.queue_tail == NULL)
				cl.queue_tail = msg;
			cl.queue_count++;
			pthread_mutex_unlock(&cl.queue_lock);
			*busy_r = true;
			return true;
		}
		free(msg);
		pthread_mutex_lock(&cl.status_lock);
		if (err == CS_OK)
			cl.sent++;
		else
			cl.send_failures++;
		pthread_mutex_unlock(&cl.status_lock);
		if (err != CS_OK) {
			cluster_set_error("multicast failed: %s", cluster_cs_error(err));
			return false;
		}
	}
}

static void *cluster_main(void *context ATTR_UNUSED)
{
	while (!atomic_load(&cl.stopping)) {
		struct pollfd fds[2];
		uint64_t now = cluster_mono_msecs();
		int timeout;
		bool busy = false;

		fds[0].fd = cl.event_fd;
		fds[0].events = POLLIN;
		if (!cluster_connected && !cluster_connect()) {
			(void)poll(fds, 1, CLUSTER_RETRY_MSECS);
			if (fds[0].revents & POLLIN) {
				uint64_t v;

				(void)read(cl.event_fd, &v, sizeof(v));
				cluster_queue_clear();
			}
			continue;
		}
		if (atomic_load(&cl.joined) && now >= cluster_next_state) {
			cluster_queue_state();
			cluster_next_state = now + CLUSTER_STATE_INTERVAL_MSECS;
		}
		if (!cluster_flush(&busy)) {
			cluster_disconnect(false);
			continue;
		}
		fds[1].fd = cluster_cpg_fd;
		fds[1].events = POLLIN;
		timeout = busy ? 20 : (int)(cluster_next_state > now ?
					   cluster_next_state - now : 0);
		if (!atomic_load(&cl.joined) && !busy)
			timeout = 1000;
		if (poll(fds, 2, timeout) < 0 && errno != EINTR) {
			log_error("cluster: poll: %s", strerror(errno));
			sleep(1);
			continue;
		}
		if (fds[0].revents & POLLIN) {
			uint64_t v;

			(void)read(cl.event_fd, &v, sizeof(v));
		}
		if (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) {
			cs_error_t err = cpg_dispatch(cluster_handle, CS_DISPATCH_ALL);

			if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
				cluster_set_error("lost the connection to corosync: %s",
						  cluster_cs_error(err));
				cluster_disconnect(false);
			}
		}
	}
	cluster_disconnect(true);
	return NULL;
}

#endif /* HAVE_CPG */

int cluster_start(const struct cluster_settings *set,
		  const struct cluster_callbacks *callbacks, char **error_r)
{
	int ret;

	cl.set.mode = set->mode;
	if (set->mode == SETTINGS_CLUSTER_NONE)
		return 0;
#ifndef HAVE_CPG
	if (set->mode == SETTINGS_CLUSTER_AUTO)
		return 0;
	(void)callbacks;
	(void)ret;
	*error_r = mem_printf("cluster = %s, but this clustermaild was built "
			      "without corosync CPG support (libcpg)",
			      settings_cluster_name(set->mode));
	return -1;
#else
	cl.group = mem_strdup(set->group);
	cl.node_name = mem_strdup(set->node_name);
	cl.set.group = cl.group;
	cl.set.node_name = cl.node_name;
	cl.cb = *callbacks;
	cl.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cl.event_fd < 0) {
		*error_r = mem_printf("eventfd: %s", strerror(errno));
		return -1;
	}
	atomic_store(&cl.stopping, false);
	ret = pthread_create(&cl.thread, NULL, cluster_main, NULL);
	if (ret != 0) {
		*error_r = mem_printf("cannot start the cluster thread: %s",
				      strerror(ret));
		(void)close(cl.event_fd);
		cl.event_fd = -1;
		return -1;
	}
	cl.started = true;
	return 0;
#endif
}

void cluster_stop(void)
{
	struct timespec deadline;

	if (!cl.started)
		return;
	atomic_store(&cl.stopping, true);
	cluster_wake();
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 3;
	if (pthread_timedjoin_np(cl.thread, NULL, &deadline) != 0) {
		/* Stuck in a call to a corosync that does not answer: the
		   process is exiting, leave the thread behind. */
		log_warn("cluster: corosync does not answer; not leaving the "
			    "CPG group cleanly");
		(void)pthread_detach(cl.thread);
		cl.started = false;
		return;
	}
	cl.started = false;
	cluster_queue_clear();
	(void)close(cl.event_fd);
	cl.event_fd = -1;
	free(cl.members);
	cl.members = NULL;
	cl.member_count = 0;
	cl.set.group = NULL;
	cl.set.node_name = NULL;
	MEM_FREE(&cl.group);
	MEM_FREE(&cl.node_name);
}
