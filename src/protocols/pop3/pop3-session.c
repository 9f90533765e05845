/*
 * pop3-session.c - the POP3 session engine: one coroutine per connection.
 *
 * The same shape as the IMAP engine, much smaller: the coroutine greets,
 * then reads one line and runs it (pop3-commands.c), in a loop. It never
 * blocks the worker's loop: when it needs input it waits until the
 * connection's input callback resumes it; when the output buffer is full
 * (RETR of a large message to a slow reader) it waits for output_drained,
 * so memory per session stays bounded by the connection's output limit.
 * Input is read only while the coroutine waits for it: pipelined commands
 * (RFC 2449 PIPELINING) stay in the bounded input buffer and run in order.
 *
 * A timer bounds every wait: autologout after POP3_AUTOLOGOUT_MSECS
 * without input (RFC 1939's minimum of 10 minutes), and a writer that
 * cannot send for that long. A line longer than POP3_LINE_MAX is
 * discarded up to its LF and answered -ERR.
 *
 * Teardown: when the connection dies while the coroutine is suspended,
 * the destroyed callback marks the session dead and resumes a coroutine
 * that waits in one of our waits; every read and write then fails and it
 * unwinds without entering the UPDATE state (a dropped connection deletes
 * nothing). The memory is freed only when the coroutine is done, the
 * connection destroyed and no timer pending.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/settings.h"
#include "io/connection.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "pop3.h"
#include "pop3-private.h"

#include <stdio.h>
#include <string.h>

/* Output queued per connection before writers wait. */
#define POP3_OUTPUT_LIMIT (256 * 1024)
#define POP3_INPUT_LIMIT (16 * 1024)
/* pop3s: the TLS handshake must be done within this. */
#define POP3_TLS_HANDSHAKE_MSECS (60 * 1000)
/* A too-long line: at most this much is discarded before closing. */
#define POP3_DISCARD_MAX (64 * 1024)

enum session_wait {
	SESSION_WAIT_NONE,
	SESSION_WAIT_INPUT,
	SESSION_WAIT_OUTPUT,
};

struct pop3_session {
	struct pop3_client client;	/* first: commands see this */
	struct pop3_session_settings set;	/* copied; strings borrowed */
	char id[64];
	struct ioloop *loop;
	struct coro *coro;		/* NULL before start and after done */
	struct io_request timer;
	uint64_t timer_target;
	uint64_t wait_deadline;		/* 0 = none */
	enum session_wait waiting;
	bool woken_by_timer;
	bool input_paused;
	uint64_t last_input_msecs;

	bool started, coro_done, conn_destroyed, freed;
	bool shutdown;			/* server is draining */
	bool closing;
	char *reason;			/* owned; why the connection ended */
	unsigned int bad_in_row;
	struct buffer line;		/* the last line read */
	struct pop3_session *prev, *next;
};

static __thread struct pop3_session *session_list;
static __thread unsigned int session_count;

/* session_of - the session around a client */
static struct pop3_session *session_of(struct pop3_client *client)
{
	return CONTAINER_OF(client, struct pop3_session, client);
}

/* session_dead - no more reads or writes possible */
static bool session_dead(const struct pop3_session *s)
{
	return s->conn_destroyed || s->client.conn == NULL ||
		connection_is_closing(s->client.conn);
}

/* ---- waiting ------------------------------------------------------------ */

static void session_timer_arm(struct pop3_session *s, uint64_t deadline);
static void session_free_if_done(struct pop3_session *s);

/* session_wake - a wait ended; run the coroutine on */
static void session_wake(struct pop3_session *s, bool timer)
{
	if (s->waiting == SESSION_WAIT_NONE || s->coro == NULL)
		return;
	s->waiting = SESSION_WAIT_NONE;
	s->woken_by_timer = timer;
	coro_resume(s->coro);
}

/* session_timer_done - a wait's deadline (or a cancelled timer) */
static void session_timer_done(struct io_request *req, int result ATTR_UNUSED)
{
	struct pop3_session *s = req->context;
	uint64_t now = ioloop_now_msecs();

	if (s->conn_destroyed) {
		session_free_if_done(s);
		return;
	}
	if (!s->started) {
		if (now >= s->wait_deadline)
			connection_abort(s->client.conn, "TLS handshake timeout");
		else
			session_timer_arm(s, s->wait_deadline);
		return;
	}
	if (s->waiting == SESSION_WAIT_NONE || s->wait_deadline == 0)
		return;
	if (now >= s->wait_deadline)
		session_wake(s, true);
	else
		session_timer_arm(s, s->wait_deadline);
}

/* session_timer_arm - make sure the timer fires by deadline */
static void session_timer_arm(struct pop3_session *s, uint64_t deadline)
{
	uint64_t now = ioloop_now_msecs();

	if (io_request_is_pending(&s->timer)) {
		if (s->timer_target > deadline)
			io_cancel(s->loop, &s->timer);
		return;
	}
	s->timer_target = deadline;
	io_timeout(s->loop, &s->timer, deadline > now ? deadline - now : 0);
}

/* session_wait - suspend until progress, the deadline or the end of the
   connection. Returns 1, 0 on timeout, -1 dead. */
static int session_wait(struct pop3_session *s, enum session_wait kind,
			uint64_t deadline)
{
	if (session_dead(s))
		return -1;
	if (kind == SESSION_WAIT_INPUT && s->input_paused) {
		s->input_paused = false;
		connection_resume_input(s->client.conn);
	}
	s->waiting = kind;
	s->woken_by_timer = false;
	s->wait_deadline = deadline;
	if (deadline != 0)
		session_timer_arm(s, deadline);
	while (s->waiting != SESSION_WAIT_NONE && !s->conn_destroyed)
		coro_yield();
	s->waiting = SESSION_WAIT_NONE;
	s->wait_deadline = 0;
	if (session_dead(s))
		return -1;
	return s->woken_by_timer ? 0 : 1;
}

/* session_pause_input - stop reading while a command runs */
static void session_pause_input(struct pop3_session *s)
{
	if (!s->input_paused && !session_dead(s)) {
		s->input_paused = true;
		connection_pause_input(s->client.conn);
	}
}

/* session_wait_input - wait for input; close on autologout or drain */
static int session_wait_input(struct pop3_session *s)
{
	uint64_t deadline = s->last_input_msecs + POP3_AUTOLOGOUT_MSECS;
	int ret;

	if (s->shutdown)
		return pop3_client_close(&s->client, "-ERR [SYS/TEMP] server shutting down");
	ret = session_wait(s, SESSION_WAIT_INPUT, deadline);
	if (ret == 0) {
		if (ioloop_now_msecs() < deadline)
			return 1;
		log_id_info(s->id, "autologout after %u ms without input",
			    (unsigned int)POP3_AUTOLOGOUT_MSECS);
		return pop3_client_close(&s->client, "-ERR autologout; idle for too long");
	}
	return ret;
}

/* ---- output ------------------------------------------------------------- */

int pop3_client_write(struct pop3_client *client, const void *data, size_t len)
{
	struct pop3_session *s = session_of(client);
	const unsigned char *p = data;

	while (len > 0) {
		size_t room, n;
		int ret;

		if (session_dead(s))
			return -1;
		room = connection_output_room(client->conn);
		if (room == 0) {
			ret = session_wait(s, SESSION_WAIT_OUTPUT,
					   ioloop_now_msecs() + POP3_AUTOLOGOUT_MSECS);
			if (ret < 0)
				return -1;
			if (ret == 0) {
				connection_abort(client->conn, "output timeout");
				return -1;
			}
			continue;
		}
		n = room < len ? room : len;
		if (connection_write(client->conn, p, n) < 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

int pop3_client_reply(struct pop3_client *client, const char *fmt, ...)
{
	struct buffer out;
	va_list args;
	int ret;

	buffer_init(&out, 0);
	va_start(args, fmt);
	(void)buffer_vprintf(&out, fmt, args);
	va_end(args);
	(void)buffer_append_str(&out, "\r\n");
	ret = pop3_client_write(client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

int pop3_client_close(struct pop3_client *client, const char *fmt, ...)
{
	struct pop3_session *s = session_of(client);
	va_list args;
	char *text, *line;

	if (s->closing || session_dead(s))
		return -1;
	s->closing = true;
	va_start(args, fmt);
	text = mem_vprintf(fmt, args);
	va_end(args);
	/* Written directly: the last words must not wait for a slow reader. */
	line = mem_printf("%s\r\n", text);
	(void)connection_write_str(client->conn, line);
	if (s->reason == NULL)
		s->reason = mem_strdup(text);
	free(line);
	free(text);
	connection_close(client->conn, s->reason);
	return -1;
}

/* ---- input -------------------------------------------------------------- */

/* session_find_lf - index of the LF in the input buffer, or -1 */
static ssize_t session_find_lf(struct pop3_session *s)
{
	struct buffer *in = connection_input(s->client.conn);
	const unsigned char *lf;

	if (in->used == 0)
		return -1;
	lf = memchr(in->data, '\n', in->used);
	return lf == NULL ? -1 : (ssize_t)(lf - in->data);
}

/* session_discard_line - drop input through the next LF (bounded) */
static int session_discard_line(struct pop3_session *s)
{
	size_t dropped = 0;

	for (;;) {
		struct buffer *in;
		ssize_t lf;

		if (session_dead(s))
			return -1;
		in = connection_input(s->client.conn);
		lf = session_find_lf(s);
		if (lf >= 0) {
			buffer_consume(in, (size_t)lf + 1);
			return 0;
		}
		dropped += in->used;
		buffer_reset(in);
		if (dropped > POP3_DISCARD_MAX)
			return pop3_client_close(&s->client, "-ERR line too long");
		if (session_wait_input(s) < 0)
			return -1;
	}
}

int pop3_client_read_line(struct pop3_client *client, size_t max,
			  const char **line_r)
{
	struct pop3_session *s = session_of(client);
	struct buffer *in;
	ssize_t lf;
	size_t len;

	for (;;) {
		if (session_dead(s))
			return -1;
		in = connection_input(client->conn);
		lf = session_find_lf(s);
		if (lf >= 0 || in->used > max)
			break;
		if (session_wait_input(s) < 0)
			return -1;
	}
	if (lf < 0 || (size_t)lf + 1 > max)
		return session_discard_line(s) < 0 ? -1 : 0;
	len = (size_t)lf;
	if (len > 0 && in->data[len - 1] == '\r')
		len--;
	buffer_reset(&s->line);
	(void)buffer_append(&s->line, in->data, len);
	(void)buffer_append_byte(&s->line, '\0');
	buffer_consume(in, (size_t)lf + 1);
	*line_r = (const char *)s->line.data;
	return 1;
}

/* ---- TLS and login policy ------------------------------------------------ */

int pop3_client_start_tls(struct pop3_client *client)
{
	if (session_dead(session_of(client)) || client->tls == NULL)
		return -1;
	/* Plaintext pipelined behind STLS could be injected (RFC 2595 3.1
	   style attack): nothing read before the handshake is used. */
	buffer_reset(connection_input(client->conn));
	return connection_start_tls(client->conn, client->tls, NULL);
}

bool pop3_client_is_tls(const struct pop3_client *client)
{
	return client->conn != NULL && connection_is_tls(client->conn);
}

bool pop3_client_login_allowed(const struct pop3_client *client)
{
	return client->trusted || pop3_client_is_tls(client);
}

/* ---- the coroutine --------------------------------------------------------- */

/* session_command - read one line and run it; 0, or -1 to end */
static int session_command(struct pop3_session *s)
{
	const char *line;
	int ret;

	if (s->shutdown)
		return pop3_client_close(&s->client, "-ERR [SYS/TEMP] server shutting down");
	ret = pop3_client_read_line(&s->client, POP3_LINE_MAX, &line);
	if (ret < 0)
		return -1;
	session_pause_input(s);
	if (ret == 0) {
		if (pop3_client_reply(&s->client, "-ERR line too long (%u octets at most)",
				      (unsigned int)POP3_LINE_MAX) < 0)
			return -1;
	} else {
		/* The line lives in s->line: commands that read more input
		   (AUTH) copy what they need first. */
		ret = pop3_command_run(&s->client, line);
		if (ret < 0)
			return -1;
	}
	s->last_input_msecs = ioloop_now_msecs();
	s->bad_in_row = ret > 0 ? 0 : s->bad_in_row + 1;
	if (s->bad_in_row >= POP3_BAD_COMMANDS_MAX)
		return pop3_client_close(&s->client, "-ERR too many invalid commands");
	return 0;
}

/* session_main - greet, then one command after another */
static void session_main(void *context)
{
	struct pop3_session *s = context;

	if (s->shutdown)
		(void)pop3_client_close(&s->client, "-ERR [SYS/TEMP] server shutting down");
	else if (pop3_client_reply(&s->client, "+OK clustermail ready") == 0) {
		while (!session_dead(s) && s->client.state != POP3_STATE_DONE) {
			if (session_command(s) < 0)
				break;
		}
	}
	pop3_client_cleanup(&s->client);
	if (!s->conn_destroyed)
		connection_close(s->client.conn, s->client.state == POP3_STATE_DONE ?
				 "logged out" : s->reason != NULL ? s->reason :
				 "session ended");
}

/* session_coro_done - the coroutine finished (runs from the loop) */
static void session_coro_done(void *context)
{
	struct pop3_session *s = context;

	s->coro = NULL;
	s->coro_done = true;
	session_free_if_done(s);
}

/* session_start - run the coroutine (after the handshake for pop3s) */
static void session_start(struct pop3_session *s)
{
	if (s->started)
		return;
	s->started = true;
	s->wait_deadline = 0;
	s->coro = coro_start(s->loop, 0, session_main, s, session_coro_done);
}

/* ---- connection callbacks ---------------------------------------------------- */

static void session_input(struct connection *conn)
{
	struct pop3_session *s = connection_context(conn);

	s->last_input_msecs = ioloop_now_msecs();
	if (s->waiting == SESSION_WAIT_INPUT) {
		session_wake(s, false);
		return;
	}
	s->input_paused = true;
	connection_pause_input(conn);
}

/* session_output_drained - room again for a waiting writer */
static void session_output_drained(struct connection *conn)
{
	struct pop3_session *s = connection_context(conn);

	if (s->waiting == SESSION_WAIT_OUTPUT)
		session_wake(s, false);
}

/* session_tls_established - pop3s: greet once TLS is up */
static void session_tls_established(struct connection *conn)
{
	struct pop3_session *s = connection_context(conn);

	log_id_debug(s->id, "TLS established: %s %s",
		     connection_tls_version(conn), connection_tls_cipher(conn));
	if (!s->started)
		session_start(s);
}

/* session_destroyed - the connection is gone: unwind the coroutine */
static void session_destroyed(struct connection *conn, const char *reason)
{
	struct pop3_session *s = connection_context(conn);

	s->conn_destroyed = true;
	s->client.conn = NULL;
	if (s->reason == NULL)
		s->reason = mem_strdup(reason);
	if (io_request_is_pending(&s->timer))
		io_cancel(s->loop, &s->timer);
	if (s->waiting != SESSION_WAIT_NONE && s->coro != NULL) {
		s->waiting = SESSION_WAIT_NONE;
		coro_resume(s->coro);
	}
	if (!s->started)
		s->coro_done = true;
	session_free_if_done(s);
}

static const struct connection_callbacks session_callbacks = {
	.input = session_input,
	.output_drained = session_output_drained,
	.tls_established = session_tls_established,
	.destroyed = session_destroyed,
};

/* session_free_if_done - free once coroutine, connection and timer end */
static void session_free_if_done(struct pop3_session *s)
{
	if (s->freed || !s->coro_done || !s->conn_destroyed ||
	    io_request_is_pending(&s->timer))
		return;
	s->freed = true;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		session_list = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	session_count--;
	log_id_info(s->id, "disconnected%s%s: %s",
		    s->client.user != NULL ? " user=" : "",
		    s->client.user != NULL ? s->client.user : "",
		    s->reason != NULL ? s->reason : "closed");
	if (s->set.ended != NULL)
		s->set.ended(s->set.context, s->reason != NULL ? s->reason : "closed");
	buffer_clear(&s->line);
	free(s->client.user_arg);
	free(s->client.user);
	free(s->reason);
	free(s);
}

/* ---- entry points (pop3.h) ---------------------------------------------------- */

void pop3_session_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
			socklen_t peer_len, const struct pop3_session_settings *set)
{
	struct pop3_session *s = mem_zalloc(sizeof(*s));
	struct connection_settings conn_set = {
		.id = set->id,
		.input_limit = POP3_INPUT_LIMIT,
		.output_limit = POP3_OUTPUT_LIMIT,
		.close_timeout_msecs = 10 * 1000,
	};
	char addr[NET_ADDR_STRLEN];

	s->set = *set;
	snprintf(s->id, sizeof(s->id), "%s", set->id);
	s->loop = loop;
	s->client.set = set->set;
	s->client.tls = set->tls;
	s->client.store = set->store;
	s->client.sio = set->sio;
	s->client.id = s->id;
	s->client.state = POP3_STATE_AUTHORIZATION;
	buffer_init(&s->line, 0);
	io_request_init(&s->timer, session_timer_done, s);
	s->last_input_msecs = ioloop_now_msecs();
	snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "unknown");
	if (peer != NULL) {
		net_ip_str(peer, addr);
		snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "%s", addr);
		s->client.trusted = settings_is_trusted(set->set, peer);
	}
	s->next = session_list;
	if (session_list != NULL)
		session_list->prev = s;
	session_list = s;
	session_count++;
	s->client.conn = connection_create(loop, fd, peer, peer_len, &conn_set,
					   &session_callbacks, s);
	if (set->implicit_tls) {
		if (set->tls == NULL ||
		    connection_start_tls(s->client.conn, set->tls, NULL) < 0) {
			connection_abort(s->client.conn, "cannot start TLS");
			return;
		}
		s->wait_deadline = ioloop_now_msecs() + POP3_TLS_HANDSHAKE_MSECS;
		session_timer_arm(s, s->wait_deadline);
		return;
	}
	session_start(s);
}

void pop3_sessions_shutdown(void)
{
	for (struct pop3_session *s = session_list; s != NULL; s = s->next) {
		s->shutdown = true;
		if (s->conn_destroyed)
			continue;
		if (!s->started) {
			connection_close(s->client.conn, "server shutting down");
			continue;
		}
		/* Waiting for a command: end now (session_wait_input says
		   why). A running command finishes first. */
		if (s->waiting == SESSION_WAIT_INPUT)
			session_wake(s, false);
	}
}

unsigned int pop3_session_count(void)
{
	return session_count;
}
