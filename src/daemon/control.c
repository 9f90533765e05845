/*
 * control.c - the unix control socket that clustermailctl and the OCF
 * agent talk to.
 *
 * Protocol: the client sends one command per line ("status", "reload",
 * "ping", "probe", "cluster", "queue-flush", "kick USER", "changed USER
 * MAILBOX", "help"); the daemon answers each with exactly one line of
 * JSON, in the order of the commands.
 * A failed command answers {"error":"..."}. Several commands may be sent on
 * one connection. Access control is the socket file's mode (0660, owned by
 * mail_user): whoever may open it is an administrator.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/str.h"
#include "io/acceptor.h"
#include "io/connection.h"
#include "io/ioloop.h"
#include "cluster/cluster.h"
#include "daemon.h"

#include <stdio.h>
#include <unistd.h>

#define CONTROL_LINE_MAX 1024

struct control_client {
	struct connection *conn;	/* NULL once destroyed */
	/* The current line was too long: drop input up to its newline. */
	bool skip_line;
	/* A command answering later ("probe") is running: the next lines
	   wait, so that replies keep the order of the commands. */
	bool busy;
};

static struct ioloop *control_loop;
static struct acceptor *control_acceptor;
static unsigned int control_client_seq;

/* control_status - the "status" reply */
static void control_status(struct json_writer *w)
{
	struct daemon_config *config = daemon_config_get();
	time_t started = daemon_start_time();

	json_object_begin(w);
	json_kv_string(w, "node", daemon_node_name());
	json_kv_string(w, "version", PACKAGE_VERSION);
	json_kv_uint(w, "pid", (uint64_t)getpid());
	json_kv_uint(w, "started", (uint64_t)started);
	json_kv_uint(w, "uptime_seconds", (uint64_t)(time(NULL) - started));
	json_kv_bool(w, "draining", daemon_is_draining());
	json_kv_uint(w, "config_generation", config->generation);
	json_kv_string(w, "spool_dir", config->set->spool_dir);
	json_kv_string(w, "lock_backend",
		       settings_lock_backend_name(config->set->lock_backend));
	json_kv_uint(w, "workers", workers_running());
	json_kv_uint(w, "connections_total", metrics_connections_total_current());
	json_key(w, "connections");
	json_object_begin(w);
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		json_kv_uint(w, settings_service_name((enum settings_service)i),
			     metrics_connections_current((enum settings_service)i));
	}
	json_object_end(w);
	json_key(w, "listeners");
	json_object_begin(w);
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		const struct settings_listen *listen = &config->set->listen[i];

		if (listen->enabled)
			json_kv_string(w, settings_service_name((enum settings_service)i),
				       listen->spec);
	}
	json_object_end(w);
	json_object_end(w);
	daemon_config_put(&config);
}

/* control_error - {"error": message} */
static void control_error(struct json_writer *w, const char *message)
{
	json_object_begin(w);
	json_kv_string(w, "error", message);
	json_object_end(w);
}

/* control_reload - the "reload" reply (same as SIGHUP) */
static void control_reload(struct json_writer *w)
{
	char *error = NULL;
	uint64_t generation;

	if (daemon_reload(&generation, &error) < 0) {
		control_error(w, error);
		free(error);
		return;
	}
	json_object_begin(w);
	json_kv_bool(w, "reloaded", true);
	json_kv_uint(w, "config_generation", generation);
	json_object_end(w);
}

static void control_input(struct connection *conn);

/* control_probe_done - the answer to "probe", sent when it is known */
static void control_probe_done(const char *error, uint64_t lock_msecs,
			       uint64_t spool_msecs, void *context)
{
	struct control_client *client = context;
	struct buffer out;
	struct json_writer w;

	if (client->conn == NULL) {
		/* The client went away meanwhile. */
		free(client);
		return;
	}
	buffer_init(&out, 0);
	json_init(&w, &out);
	json_object_begin(&w);
	if (error != NULL) {
		json_kv_string(&w, "error", error);
	} else {
		json_kv_bool(&w, "ok", true);
		json_kv_uint(&w, "lock_msecs", lock_msecs);
		json_kv_uint(&w, "spool_msecs", spool_msecs);
	}
	json_object_end(&w);
	buffer_append_byte(&out, '\n');
	client->busy = false;
	if (connection_write(client->conn, out.data, out.used) < 0)
		connection_abort(client->conn, "control reply too large");
	buffer_clear(&out);
	/* Commands that arrived meanwhile. */
	if (client->conn != NULL && connection_input(client->conn)->used > 0)
		control_input(client->conn);
}

/* control_cluster - the "cluster" reply: this daemon's view of the group */
static void control_cluster(struct json_writer *w)
{
	struct cluster_status st;

	cluster_get_status(&st);
	json_object_begin(w);
	json_kv_string(w, "node", daemon_node_name());
	json_kv_string(w, "mode", settings_cluster_name(st.mode));
	json_kv_bool(w, "supported", st.supported);
	json_kv_bool(w, "joined", st.joined);
	json_kv_string(w, "group", st.group);
	json_kv_string(w, "last_error", st.last_error);
	json_kv_uint(w, "local_nodeid", st.local_nodeid);
	json_kv_uint(w, "joined_since", st.joined_since);
	json_kv_uint(w, "messages_sent", st.messages_sent);
	json_kv_uint(w, "messages_received", st.messages_received);
	json_kv_uint(w, "send_failures", st.send_failures);
	json_kv_uint(w, "membership_changes", st.membership_changes);
	json_key(w, "members");
	json_array_begin(w);
	for (unsigned int i = 0; i < st.member_count; i++) {
		const struct cluster_member *m = &st.members[i];

		json_object_begin(w);
		json_kv_string(w, "name", m->name);
		json_kv_uint(w, "nodeid", m->nodeid);
		json_kv_uint(w, "pid", m->pid);
		json_kv_bool(w, "self", m->self);
		json_kv_uint(w, "joined_at", m->joined_at);
		json_kv_uint(w, "state_at", m->state_at);
		json_kv_uint(w, "connections", m->state.connections);
		json_kv_uint(w, "queue_active", m->state.queue_active);
		json_kv_uint(w, "queue_queued", m->state.queue_queued);
		json_kv_uint(w, "lock_waits", m->state.lock_waits);
		json_kv_uint(w, "lock_timeouts", m->state.lock_timeouts);
		json_kv_bool(w, "draining", m->state.draining);
		json_object_end(w);
	}
	json_array_end(w);
	json_object_end(w);
	free(st.members);
}

/* control_arg - "NAME ARG": ARG when line starts with NAME and a space */
static const char *control_arg(const char *line, const char *name)
{
	size_t len = strlen(name);

	if (strncmp(line, name, len) != 0 || line[len] != ' ')
		return NULL;
	line += len;
	while (*line == ' ')
		line++;
	return *line == '\0' ? NULL : line;
}

/* control_execute - run one command line, reply into out (or later, with
   client->busy set) */
static void control_execute(struct control_client *client, const char *line,
			    struct buffer *out)
{
	struct json_writer w;
	const char *arg;

	json_init(&w, out);
	metrics_control_request();
	if (strcmp(line, "probe") == 0) {
		client->busy = true;
		probe_start(control_loop, control_probe_done, client);
		return;
	}
	if ((arg = control_arg(line, "changed")) != NULL) {
		/* "changed USER MAILBOX": clustermailctl delivered into it. */
		const char *space = strchr(arg, ' ');
		char *user = space == NULL ? NULL : mem_strndup(arg, (size_t)(space - arg));

		if (user == NULL || space[1] == '\0') {
			control_error(&w, "usage: changed USER MAILBOX");
		} else {
			notify_mailbox_changed(user, space + 1, NULL);
			json_object_begin(&w);
			json_kv_bool(&w, "ok", true);
			json_object_end(&w);
		}
		free(user);
	} else if ((arg = control_arg(line, "kick")) != NULL) {
		bool told = notify_kick_user(arg);

		log_info("control: ending the sessions of %s%s", arg,
			 told ? " on every node" : "");
		json_object_begin(&w);
		json_kv_bool(&w, "ok", true);
		json_kv_bool(&w, "cluster", told);
		json_object_end(&w);
	} else if (strcmp(line, "queue-flush") == 0) {
		bool told = notify_queue_flush();

		json_object_begin(&w);
		json_kv_bool(&w, "ok", true);
		json_kv_bool(&w, "cluster", told);
		json_object_end(&w);
	} else if (strcmp(line, "cluster") == 0) {
		control_cluster(&w);
	} else if (strcmp(line, "status") == 0) {
		control_status(&w);
	} else if (strcmp(line, "ping") == 0) {
		json_object_begin(&w);
		json_kv_bool(&w, "pong", true);
		json_object_end(&w);
	} else if (strcmp(line, "reload") == 0) {
		control_reload(&w);
	} else if (strcmp(line, "help") == 0) {
		json_object_begin(&w);
		json_key(&w, "commands");
		json_array_begin(&w);
		json_string(&w, "status");
		json_string(&w, "reload");
		json_string(&w, "ping");
		json_string(&w, "probe");
		json_string(&w, "cluster");
		json_string(&w, "queue-flush");
		json_string(&w, "kick USER");
		json_string(&w, "changed USER MAILBOX");
		json_string(&w, "help");
		json_array_end(&w);
		json_object_end(&w);
	} else {
		char message[128];

		snprintf(message, sizeof(message), "unknown command '%.64s'", line);
		control_error(&w, message);
	}
	buffer_append_byte(out, '\n');
}

/* control_skip_long_line - drop input up to the end of an over-long line;
   returns true once the next line starts */
static bool control_skip_long_line(struct buffer *input)
{
	char *newline = memchr(input->data, '\n', input->used);

	if (newline == NULL) {
		buffer_reset(input);
		return false;
	}
	buffer_consume(input, (size_t)(newline - (char *)input->data) + 1);
	return true;
}

static void control_input(struct connection *conn)
{
	struct control_client *client = connection_context(conn);
	struct buffer *input = connection_input(conn);
	struct buffer reply;
	char *newline;

	buffer_init(&reply, 0);
	while (!client->busy) {
		if (client->skip_line) {
			if (!control_skip_long_line(input))
				break;
			client->skip_line = false;
		}
		newline = memchr(input->data, '\n', input->used);
		if (newline != NULL) {
			size_t len = (size_t)(newline - (char *)input->data);
			char *line = mem_strndup((const char *)input->data, len);

			buffer_consume(input, len + 1);
			control_execute(client, str_trim(line), &reply);
			free(line);
		} else if (input->used >= CONTROL_LINE_MAX) {
			/* Answer once, then skip the rest of that line: the
			   client stays usable and we never buffer more than
			   one line. */
			buffer_append_str(&reply, "{\"error\":\"line too long\"}\n");
			client->skip_line = true;
		} else {
			break;
		}
	}
	if (reply.used > 0 && connection_write(conn, reply.data, reply.used) < 0)
		connection_abort(conn, "control reply too large for a slow reader");
	buffer_clear(&reply);
}

static void control_destroyed(struct connection *conn, const char *reason)
{
	struct control_client *client = connection_context(conn);

	log_id_debug(connection_id(conn), "control client gone: %s", reason);
	client->conn = NULL;
	if (!client->busy)
		free(client);
}

static const struct connection_callbacks control_callbacks = {
	.input = control_input,
	.destroyed = control_destroyed,
};

static void control_accepted(void *context, int fd, const struct sockaddr *peer,
			     socklen_t peer_len)
{
	struct connection_settings set = {
		.input_limit = CONTROL_LINE_MAX + 1,
		.idle_timeout_msecs = 60 * 1000,
	};
	struct control_client *client;
	char id[32];

	snprintf(id, sizeof(id), "control-%u", ++control_client_seq);
	set.id = id;
	client = mem_zalloc(sizeof(*client));
	client->conn = connection_create(control_loop, fd, NULL, 0, &set,
					 &control_callbacks, client);
}

void control_start(struct ioloop *loop, int listen_fd)
{
	control_loop = loop;
	control_acceptor = acceptor_create(loop, listen_fd, "control socket",
					   control_accepted, NULL);
}

void control_stop(void)
{
	acceptor_stop(&control_acceptor, NULL);
}
