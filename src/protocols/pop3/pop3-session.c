/*
 * pop3-session.c - the POP3 session: what makes a line session
 * (linesession.h) speak POP3.
 *
 * The engine does the coroutine, the bounded buffers, the waits and the
 * teardown; this file adds the POP3 rules around it: the greeting, one
 * command line after another (pop3-commands.c) until QUIT, the RFC 2449
 * line limit (255 octets with the CRLF; a bare LF is accepted too), the
 * autologout after POP3_AUTOLOGOUT_MSECS without input (RFC 1939's
 * minimum of 10 minutes, the engine's idle timeout), the drain reply, and
 * a limit on invalid commands in a row.
 *
 * Pipelined commands (RFC 2449 PIPELINING) stay in the engine's input
 * buffer and run in order. On a drain, the command that runs finishes and
 * the session ends before the next one, even one already buffered. A
 * session that ends without QUIT never enters the UPDATE state: a dropped
 * connection deletes nothing.
 *
 * The session struct lives until the engine's freed() callback, which
 * logs the disconnect and hands the reason to the daemon.
 */
#include "lib/lib.h"
#include "lib/net.h"
#include "lib/settings.h"
#include "protocols/linesession.h"
#include "pop3.h"
#include "pop3-private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Output queued per connection before writers wait. */
#define POP3_OUTPUT_LIMIT (256 * 1024)
#define POP3_INPUT_LIMIT (16 * 1024)

#define POP3_SHUTDOWN_REPLY "-ERR [SYS/TEMP] server shutting down"

struct pop3_session {
	struct pop3_client client;	/* first: commands see this */
	struct pop3_session_settings set;	/* copied; strings borrowed */
	char id[64];
	unsigned int bad_in_row;	/* invalid commands in a row */
};

/* This thread's sessions (for the drain and the count). */
static __thread struct linesession_list pop3_sessions;

/* ---- engine wrappers (pop3-private.h) ---------------------------------- */

int pop3_client_write(struct pop3_client *client, const void *data, size_t len)
{
	return linesession_write(client->ls, data, len);
}

int pop3_client_reply(struct pop3_client *client, const char *fmt, ...)
{
	va_list args;
	char *text;
	int ret;

	va_start(args, fmt);
	text = mem_vprintf(fmt, args);
	va_end(args);
	ret = linesession_reply(client->ls, "%s", text);
	free(text);
	return ret;
}

int pop3_client_close(struct pop3_client *client, const char *fmt, ...)
{
	va_list args;
	char *text;

	va_start(args, fmt);
	text = mem_vprintf(fmt, args);
	va_end(args);
	(void)linesession_close(client->ls, "%s", text);
	free(text);
	return -1;
}

int pop3_client_read_line(struct pop3_client *client, size_t max,
			  const char **line_r)
{
	size_t len;
	bool bare_lf;

	/* Our limits count the CRLF (RFC 2449 4), the engine's do not. A
	   bare LF is accepted like CRLF. */
	return linesession_read_line(client->ls, max - 2, true, line_r, &len,
				     &bare_lf);
}

int pop3_client_start_tls(struct pop3_client *client)
{
	/* The engine drops plaintext pipelined behind STLS (RFC 2595 3.1
	   style injection): nothing read before the handshake is used. */
	return linesession_start_tls(client->ls);
}

bool pop3_client_is_tls(const struct pop3_client *client)
{
	return client->ls != NULL && linesession_is_tls(client->ls);
}

bool pop3_client_login_allowed(const struct pop3_client *client)
{
	return client->trusted || pop3_client_is_tls(client);
}

/* ---- the session body ------------------------------------------------------ */

/* session_command - read one line and run it; 0, or -1 to end */
static int session_command(struct pop3_session *s)
{
	struct pop3_client *client = &s->client;
	const char *line;
	int ret;

	/* Drain: between commands, even with more already pipelined. */
	if (linesession_shutting_down(client->ls))
		return linesession_close(client->ls, "%s",
					 linesession_end_reply(client->ls));
	ret = pop3_client_read_line(client, POP3_LINE_MAX, &line);
	if (ret < 0)
		return -1;
	if (ret == 0) {
		if (pop3_client_reply(client, "-ERR line too long (%u octets at most)",
				      (unsigned int)POP3_LINE_MAX) < 0)
			return -1;
	} else {
		/* The line lives in the engine until the next read: commands
		   that read more input (AUTH) copy what they need first. */
		ret = pop3_command_run(client, line);
		if (ret < 0)
			return -1;
	}
	s->bad_in_row = ret > 0 ? 0 : s->bad_in_row + 1;
	if (s->bad_in_row >= POP3_BAD_COMMANDS_MAX)
		return pop3_client_close(client, "-ERR too many invalid commands");
	return 0;
}

/* session_run - the engine's run(): greet, then one command after another */
static void session_run(struct linesession *ls, void *context)
{
	struct pop3_session *s = context;

	s->client.ls = ls;
	if (pop3_client_reply(&s->client, "+OK clustermail ready") == 0) {
		while (s->client.state != POP3_STATE_DONE) {
			if (session_command(s) < 0)
				break;
		}
	}
	pop3_client_cleanup(&s->client);
}

/* session_freed - the engine's freed(): log, tell the daemon, free */
static void session_freed(void *context, const char *reason)
{
	struct pop3_session *s = context;

	/* After QUIT run() returns and the engine closes with its generic
	   reason; say what happened instead. */
	if (s->client.state == POP3_STATE_DONE && strcmp(reason, "session ended") == 0)
		reason = "logged out";
	log_id_info(s->id, "disconnected%s%s: %s",
		    s->client.user != NULL ? " user=" : "",
		    s->client.user != NULL ? s->client.user : "", reason);
	if (s->set.ended != NULL)
		s->set.ended(s->set.context, reason);
	free(s->client.user_arg);
	free(s->client.user);
	free(s);
}

/* ---- entry points (pop3.h) ---------------------------------------------------- */

void pop3_session_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
			socklen_t peer_len, const struct pop3_session_settings *set)
{
	struct pop3_session *s = mem_zalloc(sizeof(*s));
	struct linesession_settings ls_set = {
		.id = set->id,
		.list = &pop3_sessions,
		.tls = set->tls,
		.implicit_tls = set->implicit_tls,
		.input_limit = POP3_INPUT_LIMIT,
		.output_limit = POP3_OUTPUT_LIMIT,
		.idle_timeout_msecs = POP3_AUTOLOGOUT_MSECS,
		.timeout_reply = "-ERR autologout; idle for too long",
		.shutdown_reply = POP3_SHUTDOWN_REPLY,
		.run = session_run,
		.freed = session_freed,
		.context = s,
	};
	char addr[NET_ADDR_STRLEN];

	s->set = *set;
	snprintf(s->id, sizeof(s->id), "%s", set->id);
	s->client.set = set->set;
	s->client.tls = set->tls;
	s->client.store = set->store;
	s->client.sio = set->sio;
	s->client.id = s->id;
	s->client.state = POP3_STATE_AUTHORIZATION;
	snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "unknown");
	if (peer != NULL) {
		net_ip_str(peer, addr);
		snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "%s", addr);
		s->client.trusted = settings_is_trusted(set->set, peer);
	}
	linesession_start(loop, fd, peer, peer_len, &ls_set);
}

void pop3_sessions_shutdown(void)
{
	/* Sessions waiting for a command end at once (the engine writes
	   the shutdown reply); a running command finishes first. */
	linesession_shutdown_all(&pop3_sessions);
}

/* session_of_user - linesession_end_matching()'s test */
static bool session_of_user(void *context, const void *arg)
{
	const struct pop3_session *s = context;

	return s->client.user != NULL && strcmp(s->client.user, arg) == 0;
}

unsigned int pop3_sessions_kick_user(const char *user)
{
	unsigned int count;

	count = linesession_end_matching(&pop3_sessions, session_of_user, user,
					 "-ERR [SYS/TEMP] Session ended by the "
					 "administrator");
	if (count > 0)
		log_info("pop3: ending %u session%s of %s (administrator)",
			 count, count == 1 ? "" : "s", user);
	return count;
}

unsigned int pop3_session_count(void)
{
	return pop3_sessions.count;
}
