/*
 * imap-client.c - the IMAP session engine: one coroutine per connection.
 *
 * The coroutine runs the loop "read a command, run it, sync, reply"
 * (imap-client.h). It never blocks the worker's loop: when it needs input
 * it waits (session_wait) until the connection's input callback resumes
 * it; when the output buffer is full it waits for output_drained; a timer
 * bounds every wait (autologout, IDLE polling). Input is read only while
 * the coroutine waits for it: while a command runs, input is paused, so
 * pipelined commands stay in the connection's bounded input buffer and
 * are executed one at a time, in order.
 *
 * Teardown. The connection may die while the coroutine is suspended (peer
 * gone, shutdown abort). The destroyed callback then marks the session
 * dead and, if the coroutine waits in one of our waits, resumes it: every
 * read and write then returns -1 and the handler unwinds. A coroutine
 * suspended elsewhere (store I/O, password check) continues when that
 * completes and meets the same -1 at its next read or write. The session
 * memory is freed only when the coroutine has finished (its done callback
 * ran), the connection is destroyed and no timer is pending - never while
 * a suspended coroutine may still use it.
 *
 * Errors in a command line: the tag and name are read first (from the
 * connection's buffer), the arguments by imap-parser.c. Any syntax error
 * is answered with BAD and the rest of that command is discarded (a
 * non-synchronizing literal is skipped, bounded by imap_append_limit);
 * too many bad commands in a row end the session.
 *
 * Length: this file is longer than the usual 1,200 lines because the
 * waits, the input readers, the command reader and the teardown all work
 * on one private session struct and together form one state machine;
 * splitting them would only move that struct into a header.
 */
#include "lib/lib.h"
#include <stdatomic.h>
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/settings.h"
#include "io/connection.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "maildir/store.h"
#include "imap.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"

#include <stdio.h>
#include <strings.h>

/* Bytes of "tag SP name [SP name]" we look at before giving up. */
#define IMAP_PREFIX_MAX 1024
#define IMAP_TAG_MAX 256
#define IMAP_NAME_MAX 32
/* Invalid commands in a row before the session is closed. */
#define IMAP_BAD_COMMANDS_MAX 20
/* Output queued per connection before writers wait. */
#define IMAP_OUTPUT_LIMIT (256 * 1024)
/* Input buffered per connection (the parser keeps its own copy of a
   long line, bounded by imap_max_line_length). */
#define IMAP_INPUT_LIMIT (64 * 1024)
/* imaps: the TLS handshake must be done within this. */
#define IMAP_TLS_HANDSHAKE_MSECS (60 * 1000)
/* Stream arguments handed out stay valid for this many further calls. */
#define IMAP_STREAM_SLOTS 16

enum session_wait {
	SESSION_WAIT_NONE,
	SESSION_WAIT_INPUT,
	SESSION_WAIT_OUTPUT,
};

struct imap_session;

struct imap_session_command {
	struct imap_command cmd;	/* first */
	char tag[IMAP_TAG_MAX + 1];
	char name[IMAP_NAME_MAX + 1];
	bool reply_written;		/* e.g. STARTTLS wrote its own */
	const char *parse_error;	/* streaming: BAD text, static/parser */
};

struct imap_session {
	struct imap_client client;	/* first: handlers see this */
	struct imap_session_settings set;	/* copied; strings borrowed */
	char id[64];
	struct ioloop *loop;
	struct coro *coro;		/* NULL before start and after done */
	struct imap_parser *parser;	/* owned */
	struct io_request timer;
	uint64_t timer_target;		/* when the pending timer fires */
	uint64_t wait_deadline;		/* 0 = none */
	enum session_wait waiting;
	bool woken_by_timer;
	bool input_paused;
	uint64_t last_input_msecs;

	bool started, coro_done, conn_destroyed, freed;
	bool shutdown;			/* server is draining */
	bool poked;			/* its mailbox changed: IDLE syncs now */
	bool kicked;			/* an admin ended the session */
	bool closing;			/* BYE sent / close requested */
	char *reason;			/* why the connection ended */
	unsigned int bad_in_row;

	struct imap_session_command *cmd;	/* current command */
	/* streaming commands */
	size_t stream_index;
	bool stream_literal_pending;	/* announced, not handed out yet */
	bool stream_literal_given;	/* handed to the handler */
	bool literal_active;		/* begun, being read */
	uint64_t literal_left;
	struct imap_arg stream_slots[IMAP_STREAM_SLOTS];
	unsigned int stream_slot;

	struct buffer line;		/* imap_client_read_line() result */
	struct imap_session *prev, *next;	/* this thread's sessions */
};

static __thread struct imap_session *session_list;
static __thread unsigned int session_count;

/* session_of - the session around a handler's client */
static struct imap_session *session_of(struct imap_client *client)
{
	return CONTAINER_OF(client, struct imap_session, client);
}

/* session_dead - no more reads or writes possible */
static bool session_dead(const struct imap_session *s)
{
	return s->conn_destroyed || s->client.conn == NULL ||
		connection_is_closing(s->client.conn);
}

/* ---- waiting ---------------------------------------------------------- */

static void session_timer_arm(struct imap_session *s, uint64_t deadline);

/* session_wake - a wait ended; run the coroutine on */
static void session_wake(struct imap_session *s, bool timer)
{
	if (s->waiting == SESSION_WAIT_NONE || s->coro == NULL)
		return;
	s->waiting = SESSION_WAIT_NONE;
	s->woken_by_timer = timer;
	coro_resume(s->coro);
}

static void session_free_if_done(struct imap_session *s);

/* session_timer_done - a wait's deadline (or a cancelled earlier timer) */
static void session_timer_done(struct io_request *req, int result ATTR_UNUSED)
{
	struct imap_session *s = req->context;
	uint64_t now = ioloop_now_msecs();

	if (s->conn_destroyed) {
		session_free_if_done(s);
		return;
	}
	if (!s->started) {
		/* imaps: the TLS handshake did not finish in time */
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
static void session_timer_arm(struct imap_session *s, uint64_t deadline)
{
	uint64_t now = ioloop_now_msecs();

	if (io_request_is_pending(&s->timer)) {
		/* A later one is re-armed from its (cancelled) completion. */
		if (s->timer_target > deadline)
			io_cancel(s->loop, &s->timer);
		return;
	}
	s->timer_target = deadline;
	io_timeout(s->loop, &s->timer, deadline > now ? deadline - now : 0);
}

/* session_wait - suspend until input/output progress, the deadline (0 =
   none) or the end of the connection. Returns 1, 0 on timeout, -1 dead. */
static int session_wait(struct imap_session *s, enum session_wait kind,
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
static void session_pause_input(struct imap_session *s)
{
	if (!s->input_paused && !session_dead(s)) {
		s->input_paused = true;
		connection_pause_input(s->client.conn);
	}
}

/* session_autologout_deadline - when a client that sends nothing is cut */
static uint64_t session_autologout_deadline(const struct imap_session *s)
{
	uint64_t timeout = s->client.set->imap_client_timeout_msecs;

	return timeout == 0 ? 0 : s->last_input_msecs + timeout;
}

/* session_wait_input - wait for more input; BYE on autologout */
static int session_wait_input(struct imap_session *s)
{
	int ret = session_wait(s, SESSION_WAIT_INPUT,
			       session_autologout_deadline(s));

	if (ret == 0) {
		if (ioloop_now_msecs() < session_autologout_deadline(s))
			return 1;	/* woken early (re-armed timer) */
		log_id_info(s->id, "autologout after %llu ms without input",
			    (unsigned long long)s->client.set->imap_client_timeout_msecs);
		return imap_client_bye(&s->client, "Autologout; idle for too long");
	}
	return ret;
}

/* ---- output ----------------------------------------------------------- */

int imap_client_write(struct imap_client *client, const void *data, size_t len)
{
	struct imap_session *s = session_of(client);
	const unsigned char *p = data;
	uint64_t timeout = client->set->imap_client_timeout_msecs;

	while (len > 0) {
		size_t room, n;
		int ret;

		if (session_dead(s))
			return -1;
		room = connection_output_room(client->conn);
		if (room == 0) {
			ret = session_wait(s, SESSION_WAIT_OUTPUT, timeout == 0 ? 0 :
					   ioloop_now_msecs() + timeout);
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

/* session_vprintf - prefix + formatted text + suffix, written */
static int session_vprintf(struct imap_client *client, const char *prefix,
			   const char *fmt, va_list args, const char *suffix)
	ATTR_FORMAT(3, 0);
static int session_vprintf(struct imap_client *client, const char *prefix,
			   const char *fmt, va_list args, const char *suffix)
{
	struct buffer out;
	int ret;

	buffer_init(&out, 0);
	(void)buffer_append_str(&out, prefix);
	(void)buffer_vprintf(&out, fmt, args);
	(void)buffer_append_str(&out, suffix);
	ret = imap_client_write(client, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

int imap_client_printf(struct imap_client *client, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = session_vprintf(client, "", fmt, args, "");
	va_end(args);
	return ret;
}

int imap_client_untagged(struct imap_client *client, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = session_vprintf(client, "* ", fmt, args, "\r\n");
	va_end(args);
	return ret;
}

int imap_client_bye(struct imap_client *client, const char *fmt, ...)
{
	struct imap_session *s = session_of(client);
	va_list args;

	if (s->closing || session_dead(s))
		return -1;
	s->closing = true;
	va_start(args, fmt);
	/* Written directly: a BYE must not wait for a slow reader. */
	{
		char *text = mem_vprintf(fmt, args);
		char *line = mem_printf("* BYE %s\r\n", text);

		(void)connection_write_str(client->conn, line);
		if (s->reason == NULL)
			s->reason = mem_printf("BYE %s", text);
		free(line);
		free(text);
	}
	va_end(args);
	connection_close(client->conn, s->reason);
	return -1;
}

/* ---- tagged replies ----------------------------------------------------- */

static void command_set_reply(struct imap_command *cmd, const char *status,
			      const char *fmt, va_list args) ATTR_FORMAT(3, 0);
static void command_set_reply(struct imap_command *cmd, const char *status,
			      const char *fmt, va_list args)
{
	char *text = mem_vprintf(fmt, args);

	free(cmd->reply);
	cmd->reply = mem_printf("%s %s", status, text);
	free(text);
}

void imap_command_ok(struct imap_command *cmd, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	command_set_reply(cmd, "OK", fmt, args);
	va_end(args);
}

void imap_command_no(struct imap_command *cmd, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	command_set_reply(cmd, "NO", fmt, args);
	va_end(args);
}

void imap_command_bad(struct imap_command *cmd, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	command_set_reply(cmd, "BAD", fmt, args);
	va_end(args);
}

/* store_error_code - the response code for a store result */
static const char *store_error_code(int result, bool trycreate)
{
	switch (result) {
	case STORE_ERR_NOTFOUND:
		return trycreate ? "TRYCREATE" : "NONEXISTENT";
	case STORE_ERR_EXISTS:
		return "ALREADYEXISTS";
	case STORE_ERR_OVERQUOTA:
		return "OVERQUOTA";
	case STORE_ERR_LIMIT:
		return "LIMIT";
	case STORE_ERR_TEMP:
		return "UNAVAILABLE";
	case STORE_ERR_NOPERM:
		return "NOPERM";
	case STORE_ERR_CORRUPT:
		return "CORRUPTION";
	case STORE_ERR_CANNOT:
	case STORE_ERR_BADNAME:
	default:
		return "CANNOT";
	}
}

void imap_command_store_error(struct imap_command *cmd, int store_result,
			      bool trycreate)
{
	imap_command_no(cmd, "[%s] %s", store_error_code(store_result, trycreate),
			imap_client_store_error(cmd->client));
}

void imap_command_reply_written(struct imap_command *cmd)
{
	struct imap_session_command *scmd =
		CONTAINER_OF(cmd, struct imap_session_command, cmd);

	scmd->reply_written = true;
}

/* ---- session state -------------------------------------------------------- */

void imap_client_unselect(struct imap_client *client)
{
	if (client->box != NULL)
		mailbox_close(&client->box);
	MEM_FREE(&client->search_saved);
	client->search_saved_count = 0;
	client->search_saved_valid = false;
	client->condstore_active = false;
	client->exists_reported = 0;
	client->box_readonly = false;
	if (client->state == IMAP_STATE_SELECTED)
		client->state = IMAP_STATE_AUTH;
}

const char *imap_client_store_error(struct imap_client *client)
{
	if (client->store_user == NULL)
		return "Internal error";
	return store_user_error(client->store_user);
}

struct sio *imap_client_sio(struct imap_client *client)
{
	return session_of(client)->set.sio;
}

bool imap_client_is_shutting_down(struct imap_client *client)
{
	return session_of(client)->shutdown;
}

int imap_client_start_tls(struct imap_client *client)
{
	if (session_dead(session_of(client)) || client->tls == NULL)
		return -1;
	/* Pipelined plaintext behind STARTTLS could be an injected command
	   (RFC 9051 11.1): nothing read before the handshake is used. */
	buffer_reset(connection_input(client->conn));
	return connection_start_tls(client->conn, client->tls, NULL);
}

bool imap_client_is_tls(const struct imap_client *client)
{
	return client->conn != NULL && connection_is_tls(client->conn);
}

/* ---- input: lines --------------------------------------------------------- */

/* session_find_lf - index of the LF in the input buffer, or -1 */
static ssize_t session_find_lf(struct imap_session *s)
{
	struct buffer *in = connection_input(s->client.conn);
	const unsigned char *lf;

	if (in->used == 0)
		return -1;
	lf = memchr(in->data, '\n', in->used);
	return lf == NULL ? -1 : (ssize_t)(lf - in->data);
}

/* session_discard_line - drop input up to and including the next LF,
   remembering the line's tail (to see a literal announcement). Returns
   1, or -1 (dead, or no LF within the limit: BYE). */
static int session_discard_line(struct imap_session *s, unsigned char *tail,
				size_t *tail_len)
{
	uint64_t limit = s->client.set->imap_max_line_length * 4 + 65536;
	uint64_t discarded = 0;

	*tail_len = 0;
	for (;;) {
		struct buffer *in;
		ssize_t lf;
		size_t take;

		if (session_dead(s))
			return -1;
		in = connection_input(s->client.conn);
		lf = session_find_lf(s);
		take = lf >= 0 ? (size_t)lf + 1 : in->used;
		/* keep the last 32 bytes of the line */
		for (size_t i = 0; i < take; i++) {
			if (*tail_len == 32) {
				memmove(tail, tail + 1, 31);
				*tail_len = 31;
			}
			tail[(*tail_len)++] = in->data[i];
		}
		buffer_consume(in, take);
		discarded += take;
		if (lf >= 0)
			return 1;
		if (discarded > limit) {
			return imap_client_bye(&s->client,
					       "Line too long; closing");
		}
		if (session_wait_input(s) < 0)
			return -1;
	}
}

/* session_skip_bytes - drop size bytes of input (a refused literal) */
static int session_skip_bytes(struct imap_session *s, uint64_t size)
{
	while (size > 0) {
		struct buffer *in;
		size_t take;

		if (session_dead(s))
			return -1;
		in = connection_input(s->client.conn);
		take = in->used < size ? in->used : (size_t)size;
		buffer_consume(in, take);
		size -= take;
		if (size > 0 && session_wait_input(s) < 0)
			return -1;
	}
	return 0;
}

/* session_discard_command - skip the rest of a command the client is
   still sending: a non-synchronizing literal of literal_size bytes, then
   (or if in_line) lines, as long as each ends with another
   non-synchronizing literal. Returns 0, or -1 (session ends). */
static int session_discard_command(struct imap_session *s, bool in_line,
				   uint64_t literal_size)
{
	uint64_t limit = s->client.set->imap_append_limit;
	unsigned char tail[32];
	size_t tail_len;
	bool sync;

	if (limit < IMAP_LITERAL_MEMORY_MAX)
		limit = IMAP_LITERAL_MEMORY_MAX;
	for (;;) {
		if (literal_size > 0) {
			if (literal_size > limit) {
				return imap_client_bye(&s->client,
					"[TOOBIG] Literal too large to skip");
			}
			if (session_skip_bytes(s, literal_size) < 0)
				return -1;
			literal_size = 0;
			in_line = true;
		}
		if (!in_line)
			return 0;
		if (session_discard_line(s, tail, &tail_len) < 0)
			return -1;
		while (tail_len > 0 && (tail[tail_len - 1] == '\n' ||
					tail[tail_len - 1] == '\r'))
			tail_len--;
		if (!imap_parser_tail_literal(tail, tail_len, &literal_size,
					      &sync) || sync)
			return 0;
		in_line = false;
	}
}

const char *imap_client_read_line(struct imap_client *client,
				  uint64_t poll_msecs, bool *timed_out_r)
{
	struct imap_session *s = session_of(client);
	uint64_t max = client->set->imap_max_line_length;
	uint64_t poll_deadline = poll_msecs == 0 ? 0 :
		ioloop_now_msecs() + poll_msecs;

	if (timed_out_r != NULL)
		*timed_out_r = false;
	for (;;) {
		struct buffer *in;
		ssize_t lf;
		uint64_t deadline;
		int ret;

		if (session_dead(s))
			return NULL;
		if (s->shutdown) {
			(void)imap_client_bye(client, "Server shutting down");
			return NULL;
		}
		in = connection_input(client->conn);
		lf = session_find_lf(s);
		if (lf >= 0) {
			size_t len = (size_t)lf;

			if (len > 0 && in->data[len - 1] == '\r')
				len--;
			buffer_reset(&s->line);
			(void)buffer_append(&s->line, in->data, len);
			buffer_consume(in, (size_t)lf + 1);
			return buffer_cstr(&s->line);
		}
		if (in->used > max || in->used >= IMAP_INPUT_LIMIT / 2) {
			(void)imap_client_bye(client, "Line too long");
			return NULL;
		}
		if (s->kicked) {
			(void)imap_client_bye(client, "Session ended by the administrator");
			return NULL;
		}
		if (poll_deadline != 0 && s->poked) {
			/* Woken by a change notification: sync now. */
			s->poked = false;
			session_pause_input(s);
			if (timed_out_r != NULL)
				*timed_out_r = true;
			return NULL;
		}
		deadline = session_autologout_deadline(s);
		if (poll_deadline != 0 && (deadline == 0 || poll_deadline < deadline))
			deadline = poll_deadline;
		ret = session_wait(s, SESSION_WAIT_INPUT, deadline);
		if (ret < 0)
			return NULL;
		if (s->poked || s->kicked)
			continue;
		if (ret == 0 && poll_deadline != 0 &&
		    ioloop_now_msecs() >= poll_deadline &&
		    ioloop_now_msecs() < session_autologout_deadline(s)) {
			session_pause_input(s);
			if (timed_out_r != NULL)
				*timed_out_r = true;
			return NULL;
		}
		if (ret == 0 && ioloop_now_msecs() >= session_autologout_deadline(s)) {
			(void)imap_client_bye(client, "Autologout; idle for too long");
			return NULL;
		}
	}
}

const char *imap_client_continue(struct imap_client *client, const char *text)
{
	if (imap_client_printf(client, "+ %s\r\n", text) < 0)
		return NULL;
	return imap_client_read_line(client, 0, NULL);
}

/* ---- input: command arguments --------------------------------------------- */

/* session_parse - feed the parser until it has something to report */
static enum imap_parser_result session_parse(struct imap_session *s,
					     bool stream, bool *dead_r)
{
	*dead_r = false;
	for (;;) {
		enum imap_parser_result ret;
		struct buffer *in;
		size_t consumed;

		if (session_dead(s)) {
			*dead_r = true;
			return IMAP_PARSER_ERROR;
		}
		in = connection_input(s->client.conn);
		ret = imap_parser_feed(s->parser, in->data, in->used, stream,
				       &consumed);
		buffer_consume(in, consumed);
		switch (ret) {
		case IMAP_PARSER_MORE:
			if (session_wait_input(s) < 0) {
				*dead_r = true;
				return IMAP_PARSER_ERROR;
			}
			continue;
		case IMAP_PARSER_LITERAL:
			if (imap_client_write(&s->client, "+ OK\r\n", 6) < 0) {
				*dead_r = true;
				return IMAP_PARSER_ERROR;
			}
			continue;
		case IMAP_PARSER_DONE:
		case IMAP_PARSER_STREAM:
		case IMAP_PARSER_ERROR:
			return ret;
		}
	}
}

/* session_parse_error_skip - after a parser error, drop what is left of
   the command. Returns 0 or -1. */
static int session_parse_error_skip(struct imap_session *s)
{
	uint64_t literal;
	bool in_line;

	if (!imap_parser_error_skip(s->parser, &in_line, &literal))
		return 0;
	return session_discard_command(s, in_line, literal);
}

int imap_command_next_arg(struct imap_command *cmd,
			  const struct imap_arg **arg_r)
{
	static const struct imap_arg eol = { .type = IMAP_ARG_EOL };
	struct imap_session *s = session_of(cmd->client);
	struct imap_session_command *scmd = s->cmd;
	struct imap_arg *slot;
	bool dead;

	for (;;) {
		if (scmd->parse_error != NULL || s->literal_active)
			return 0;
		if (s->stream_index < imap_parser_arg_count(s->parser)) {
			slot = &s->stream_slots[s->stream_slot++ % IMAP_STREAM_SLOTS];
			*slot = imap_parser_args(s->parser)[s->stream_index++];
			*arg_r = slot;
			return 1;
		}
		if (imap_parser_is_complete(s->parser)) {
			*arg_r = &eol;
			return 1;
		}
		if (s->stream_literal_pending) {
			/* the arguments before it went out first */
			slot = &s->stream_slots[s->stream_slot++ % IMAP_STREAM_SLOTS];
			*slot = *imap_parser_literal(s->parser);
			s->stream_literal_pending = false;
			s->stream_literal_given = true;
			*arg_r = slot;
			return 1;
		}
		if (s->stream_literal_given)
			return 0;	/* the literal was not read */
		switch (session_parse(s, true, &dead)) {
		case IMAP_PARSER_STREAM:
			s->stream_literal_pending = true;
			continue;
		case IMAP_PARSER_DONE:
			continue;
		default:
			if (dead)
				return -1;
			scmd->parse_error = imap_parser_error(s->parser, NULL);
			return session_parse_error_skip(s) < 0 ? -1 : 0;
		}
	}
}

int imap_command_literal_begin(struct imap_command *cmd)
{
	struct imap_session *s = session_of(cmd->client);
	const struct imap_arg *lit = imap_parser_literal(s->parser);

	if (!s->stream_literal_given || s->literal_active)
		log_panic("%s: imap_command_literal_begin without a literal", s->id);
	s->literal_active = true;
	s->literal_left = lit->literal_size;
	if (lit->literal_sync && imap_client_write(cmd->client, "+ OK\r\n", 6) < 0)
		return -1;
	return 0;
}

/* session_literal_finished - the streamed literal was read completely */
static void session_literal_finished(struct imap_session *s)
{
	s->literal_active = false;
	s->stream_literal_given = false;
	imap_parser_literal_done(s->parser);
}

ssize_t imap_command_literal_read(struct imap_command *cmd, void *buf,
				  size_t size)
{
	struct imap_session *s = session_of(cmd->client);

	if (!s->literal_active)
		return 0;
	for (;;) {
		struct buffer *in;
		size_t take;

		if (session_dead(s))
			return -1;
		if (s->literal_left == 0) {
			session_literal_finished(s);
			return 0;
		}
		in = connection_input(cmd->client->conn);
		if (in->used == 0) {
			if (session_wait_input(s) < 0)
				return -1;
			continue;
		}
		take = in->used < size ? in->used : size;
		if (take > s->literal_left)
			take = (size_t)s->literal_left;
		memcpy(buf, in->data, take);
		buffer_consume(in, take);
		s->literal_left -= take;
		if (s->literal_left == 0)
			session_literal_finished(s);
		return (ssize_t)take;
	}
}

/* session_stream_cleanup - a streaming handler returned: drop the rest
   of its command. Returns 0 or -1. */
static int session_stream_cleanup(struct imap_session *s)
{
	const struct imap_arg *lit = imap_parser_literal(s->parser);
	bool dead;

	if (s->cmd->parse_error != NULL)
		return 0;	/* already skipped */
	if (s->literal_active) {
		/* handler gave up in the middle of the data */
		if (session_skip_bytes(s, s->literal_left) < 0)
			return -1;
		session_literal_finished(s);
	} else if (s->stream_literal_given || s->stream_literal_pending) {
		s->stream_literal_given = false;
		s->stream_literal_pending = false;
		if (lit->literal_sync)
			return 0;	/* refused: the client sends no data */
		return session_discard_command(s, false, lit->literal_size);
	}
	/* the rest of the command */
	while (!imap_parser_is_complete(s->parser)) {
		switch (session_parse(s, false, &dead)) {
		case IMAP_PARSER_DONE:
			continue;
		default:
			if (dead)
				return -1;
			return session_parse_error_skip(s);
		}
	}
	return 0;
}

/* ---- reading a command ---------------------------------------------------- */

static bool is_tag_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("(){%*\"\\+", c) == NULL;
}

/* is_name_char - letters, digits and the few others in command names */
static bool is_name_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* session_word - copy a word at p[*pos] (ends at SP, CR, LF or the end) */
static bool session_word(const unsigned char *p, size_t len, size_t *pos,
			 char *out, size_t max, bool (*valid)(unsigned char))
{
	size_t n = 0;

	while (*pos < len && p[*pos] != ' ' && p[*pos] != '\r' &&
	       p[*pos] != '\n') {
		if (n >= max || !valid(p[*pos]))
			return false;
		out[n++] = (char)p[(*pos)++];
	}
	out[n] = '\0';
	return n > 0;
}

enum prefix_result {
	PREFIX_OK,
	PREFIX_EMPTY,		/* an empty line: ignored */
	PREFIX_BAD_TAG,		/* "* BAD" */
	PREFIX_BAD_NAME,	/* "tag BAD" */
	PREFIX_DEAD,
	PREFIX_SHUTDOWN,	/* draining and no command pending */
};

/* session_read_prefix - read "tag SP name [SP name2]"; consumes it and
   the space after it (the parser gets the rest, including CRLF) */
static enum prefix_result session_read_prefix(struct imap_session *s,
					      char *name2, bool *has_name2)
{
	struct imap_session_command *scmd = s->cmd;
	struct buffer *in;
	const unsigned char *p;
	size_t len, pos = 0;

	for (;;) {
		if (session_dead(s))
			return PREFIX_DEAD;
		in = connection_input(s->client.conn);
		if (session_find_lf(s) >= 0 || in->used >= IMAP_PREFIX_MAX)
			break;
		if ((s->shutdown || s->kicked) && in->used == 0)
			return PREFIX_SHUTDOWN;
		if (session_wait_input(s) < 0)
			return PREFIX_DEAD;
	}
	p = in->data;
	len = in->used < IMAP_PREFIX_MAX ? in->used : IMAP_PREFIX_MAX;
	if (p[0] == '\n' || (len >= 2 && p[0] == '\r' && p[1] == '\n')) {
		buffer_consume(in, p[0] == '\n' ? 1 : 2);
		return PREFIX_EMPTY;
	}
	*has_name2 = false;
	if (!session_word(p, len, &pos, scmd->tag, IMAP_TAG_MAX, is_tag_char) ||
	    pos >= len)
		return PREFIX_BAD_TAG;
	if (p[pos] != ' ')
		return PREFIX_BAD_NAME;	/* "tag" alone: tag BAD */
	pos++;
	if (!session_word(p, len, &pos, scmd->name, IMAP_NAME_MAX, is_name_char))
		return PREFIX_BAD_NAME;
	if (strcasecmp(scmd->name, "UID") == 0 && pos < len && p[pos] == ' ') {
		pos++;
		if (!session_word(p, len, &pos, name2, IMAP_NAME_MAX, is_name_char))
			return PREFIX_BAD_NAME;
		*has_name2 = true;
	}
	if (pos < len && p[pos] == ' ')
		pos++;
	buffer_consume(in, pos);
	return PREFIX_OK;
}

/* session_write_reply - the tagged reply after the command */
static int session_write_reply(struct imap_session *s)
{
	struct imap_session_command *scmd = s->cmd;
	struct imap_command *cmd = &scmd->cmd;
	int ret;

	if (scmd->reply_written)
		return 0;
	if (scmd->parse_error != NULL) {
		/* streaming command with a syntax error */
		imap_command_bad(cmd, "%s", scmd->parse_error);
	}
	if (cmd->reply == NULL) {
		log_id_error(s->id, "%s set no reply", scmd->name);
		cmd->reply = mem_strdup("NO [SERVERBUG] Internal error");
	}
	if (str_begins_with(cmd->reply, "BAD"))
		s->bad_in_row++;
	else
		s->bad_in_row = 0;
	ret = imap_client_printf(&s->client, "%s %s\r\n", scmd->tag, cmd->reply);
	if (ret == 0 && s->bad_in_row >= IMAP_BAD_COMMANDS_MAX)
		return imap_client_bye(&s->client, "Too many invalid commands");
	return ret;
}

/* session_bad_and_skip - refuse the command before running it */
static int session_bad_and_skip(struct imap_session *s, const char *text,
				bool skip_line)
{
	imap_command_bad(&s->cmd->cmd, "%s", text);
	if (skip_line && session_discard_command(s, true, 0) < 0)
		return -1;
	return session_write_reply(s);
}

/* session_state_error - is the command allowed in this state? */
static const char *session_state_error(const struct imap_session *s,
				       const struct imap_command_def *def)
{
	unsigned int need;

	switch (s->client.state) {
	case IMAP_STATE_NOT_AUTH:
		need = IMAP_CMD_FLAG_NOT_AUTH;
		break;
	case IMAP_STATE_AUTH:
		need = IMAP_CMD_FLAG_AUTH;
		break;
	case IMAP_STATE_SELECTED:
		need = IMAP_CMD_FLAG_SELECTED;
		break;
	default:
		return "Logging out";
	}
	if ((def->flags & need) != 0)
		return NULL;
	if (s->client.state == IMAP_STATE_NOT_AUTH)
		return "Not authenticated";
	if ((def->flags & IMAP_CMD_FLAG_SELECTED) != 0 &&
	    s->client.state == IMAP_STATE_AUTH)
		return "No mailbox selected";
	return "Command not allowed in this state";
}

/* session_run - run a parsed command: handler, sync, reply */
static int session_run(struct imap_session *s)
{
	struct imap_command *cmd = &s->cmd->cmd;
	const struct imap_command_def *def = cmd->def;
	bool stream = (def->flags & IMAP_CMD_FLAG_STREAM_LITERAL) != 0;
	int ret;

	session_pause_input(s);
	ret = def->handler(cmd);
	if (ret < 0)
		return -1;
	if (stream && session_stream_cleanup(s) < 0)
		return -1;
	if (s->client.state == IMAP_STATE_SELECTED &&
	    (def->flags & IMAP_CMD_FLAG_NO_SYNC) == 0) {
		unsigned int flags = (def->flags & IMAP_CMD_FLAG_NO_EXPUNGE) != 0 &&
			!cmd->uid ? IMAP_SYNC_NO_EXPUNGE : 0;

		if (imap_sync(&s->client, flags) < 0)
			return -1;
	}
	/* A long command (a big FETCH to a slow reader) is activity too:
	   autologout counts from its end. */
	s->last_input_msecs = ioloop_now_msecs();
	return session_write_reply(s);
}

/* session_command_find - the table entry for the prefix */
static const struct imap_command_def *
session_command_find(struct imap_session *s, const char *name2, bool has_name2)
{
	struct imap_session_command *scmd = s->cmd;
	const struct imap_command_def *def;

	if (strcasecmp(scmd->name, "UID") == 0) {
		if (!has_name2)
			return NULL;
		def = imap_command_find(name2, true);
		scmd->cmd.uid = true;
	} else {
		def = imap_command_find(scmd->name, false);
	}
	if (def != NULL)
		scmd->cmd.name = def->name;
	return def;
}

/* session_command - read and execute one command. Returns 0, or -1 when
   the session ends. */
static int session_command(struct imap_session *s)
{
	struct imap_session_command *scmd = s->cmd;
	const struct imap_command_def *def;
	char name2[IMAP_NAME_MAX + 1];
	const char *error;
	bool has_name2, dead;

	switch (session_read_prefix(s, name2, &has_name2)) {
	case PREFIX_OK:
		break;
	case PREFIX_EMPTY:
		return 0;
	case PREFIX_DEAD:
		return -1;
	case PREFIX_SHUTDOWN:
		return imap_client_bye(&s->client, s->shutdown ?
				       "Server shutting down" :
				       "Session ended by the administrator");
	case PREFIX_BAD_TAG:
		if (session_discard_command(s, true, 0) < 0 ||
		    imap_client_untagged(&s->client, "BAD Invalid tag or missing command") < 0)
			return -1;
		if (++s->bad_in_row >= IMAP_BAD_COMMANDS_MAX)
			return imap_client_bye(&s->client, "Too many invalid commands");
		return 0;
	case PREFIX_BAD_NAME:
		return session_bad_and_skip(s, "Invalid command name", true);
	}
	def = session_command_find(s, name2, has_name2);
	if (def == NULL)
		return session_bad_and_skip(s, "Unknown command", true);
	scmd->cmd.def = def;
	error = session_state_error(s, def);
	if (error != NULL)
		return session_bad_and_skip(s, error, true);
	if ((def->flags & IMAP_CMD_FLAG_STREAM_LITERAL) != 0)
		return session_run(s);
	switch (session_parse(s, false, &dead)) {
	case IMAP_PARSER_DONE:
		break;
	default:
		if (dead)
			return -1;
		imap_command_bad(&scmd->cmd, "%s", imap_parser_error(s->parser, NULL));
		if (session_parse_error_skip(s) < 0)
			return -1;
		return session_write_reply(s);
	}
	scmd->cmd.args = imap_parser_args(s->parser);
	return session_run(s);
}

/* session_command_reset - a fresh command struct and parser */
static void session_command_reset(struct imap_session *s)
{
	struct imap_session_command *scmd = s->cmd;

	free(scmd->cmd.reply);
	memset(scmd, 0, sizeof(*scmd));
	scmd->cmd.client = &s->client;
	scmd->cmd.tag = scmd->tag;
	scmd->cmd.name = scmd->name;
	imap_parser_reset(s->parser);
	s->stream_index = 0;
	s->stream_literal_pending = false;
	s->stream_literal_given = false;
	s->literal_active = false;
	s->literal_left = 0;
}

/* ---- the session coroutine ------------------------------------------------ */

static int session_greet(struct imap_session *s)
{
	char caps[2048];

	if (s->shutdown)
		return imap_client_bye(&s->client, "Server shutting down");
	imap_capability_string(&s->client, caps, sizeof(caps));
	return imap_client_printf(&s->client, "* OK [CAPABILITY %s] clustermail ready\r\n",
				  caps);
}

/* session_cleanup - release the store objects (may do I/O: in the
   coroutine) */
static void session_cleanup(struct imap_session *s)
{
	/* Parses this session added to the message cache and could not
	   write yet (the lock was busy each time) would be lost with the
	   view; not when shutting down, which must not wait for locks. */
	if (s->client.box != NULL && !s->shutdown)
		(void)mailbox_cache_flush_wait(s->client.box);
	imap_client_unselect(&s->client);
	if (s->client.store_user != NULL)
		store_user_close(&s->client.store_user);
}

/* session_main - the coroutine: greet, then one command after another */
static void session_main(void *context)
{
	struct imap_session *s = context;

	if (session_greet(s) == 0) {
		while (!session_dead(s)) {
			if (s->shutdown) {
				(void)imap_client_bye(&s->client, "Server shutting down");
				break;
			}
			if (s->kicked) {
				(void)imap_client_bye(&s->client,
						      "Session ended by the administrator");
				break;
			}
			session_command_reset(s);
			if (session_command(s) < 0)
				break;
			if (s->client.state == IMAP_STATE_LOGOUT)
				break;
		}
	}
	session_command_reset(s);
	session_cleanup(s);
	if (!s->conn_destroyed)
		connection_close(s->client.conn, s->client.state == IMAP_STATE_LOGOUT ?
				 "logged out" : s->reason != NULL ? s->reason :
				 "session ended");
}

/* session_coro_done - the coroutine finished (runs from the loop) */
static void session_coro_done(void *context)
{
	struct imap_session *s = context;

	s->coro = NULL;
	s->coro_done = true;
	session_free_if_done(s);
}

/* session_start - run the coroutine (after the TLS handshake for imaps) */
static void session_start(struct imap_session *s)
{
	if (s->started)
		return;
	s->started = true;
	s->wait_deadline = 0;
	s->coro = coro_start(s->loop, 0, session_main, s, session_coro_done);
}

/* ---- connection callbacks ------------------------------------------------- */

static void session_input(struct connection *conn)
{
	struct imap_session *s = connection_context(conn);

	s->last_input_msecs = ioloop_now_msecs();
	if (s->waiting == SESSION_WAIT_INPUT) {
		session_wake(s, false);
		return;
	}
	/* Nobody reads now: keep the rest in the kernel's buffers. */
	s->input_paused = true;
	connection_pause_input(conn);
}

/* session_output_drained - room again for a waiting writer */
static void session_output_drained(struct connection *conn)
{
	struct imap_session *s = connection_context(conn);

	if (s->waiting == SESSION_WAIT_OUTPUT)
		session_wake(s, false);
}

/* session_tls_established - imaps: greet once TLS is up */
static void session_tls_established(struct connection *conn)
{
	struct imap_session *s = connection_context(conn);

	log_id_debug(s->id, "TLS established: %s %s",
		     connection_tls_version(conn), connection_tls_cipher(conn));
	if (!s->started)
		session_start(s);
}

/* session_destroyed - the connection is gone: unwind the coroutine */
static void session_destroyed(struct connection *conn ATTR_UNUSED,
			      const char *reason)
{
	struct imap_session *s = connection_context(conn);

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

/* session_free_if_done - free once coroutine, connection and timer
   are all finished */
static void session_free_if_done(struct imap_session *s)
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
	imap_parser_destroy(&s->parser);
	buffer_clear(&s->line);
	free(s->cmd->cmd.reply);
	free(s->cmd);
	free(s->client.user);
	free(s->reason);
	free(s);
}

/* ---- public entry points (imap.h) ----------------------------------------- */

void imap_session_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
			socklen_t peer_len, const struct imap_session_settings *set)
{
	struct imap_session *s = mem_zalloc(sizeof(*s));
	struct imap_parser_settings parser_set = {
		.max_line_length = (size_t)set->set->imap_max_line_length,
	};
	struct connection_settings conn_set = {
		.id = set->id,
		.input_limit = IMAP_INPUT_LIMIT,
		.output_limit = IMAP_OUTPUT_LIMIT,
		.close_timeout_msecs = 10 * 1000,
	};
	char addr[NET_ADDR_STRLEN];

	s->set = *set;
	snprintf(s->id, sizeof(s->id), "%s", set->id);
	s->loop = loop;
	s->client.set = set->set;
	s->client.tls = set->tls;
	s->client.store = set->store;
	s->client.id = s->id;
	s->client.state = IMAP_STATE_NOT_AUTH;
	s->parser = imap_parser_create(&parser_set);
	s->cmd = mem_zalloc(sizeof(*s->cmd));
	buffer_init(&s->line, 0);
	io_request_init(&s->timer, session_timer_done, s);
	s->last_input_msecs = ioloop_now_msecs();
	if (peer != NULL) {
		net_ip_str(peer, addr);
		snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "%s", addr);
		s->client.trusted = settings_is_trusted(set->set, peer);
	} else {
		snprintf(s->client.peer_ip, sizeof(s->client.peer_ip), "unknown");
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
		s->wait_deadline = ioloop_now_msecs() + IMAP_TLS_HANDSHAKE_MSECS;
		session_timer_arm(s, s->wait_deadline);
		return;
	}
	session_start(s);
}

void imap_sessions_shutdown(void)
{
	for (struct imap_session *s = session_list; s != NULL; s = s->next) {
		s->shutdown = true;
		if (s->conn_destroyed)
			continue;
		if (!s->started) {
			connection_close(s->client.conn, "server shutting down");
			continue;
		}
		/* Between commands (or in IDLE): end now. A running command
		   finishes first and the loop then says BYE. */
		if (s->waiting == SESSION_WAIT_INPUT)
			session_wake(s, false);
	}
}

static atomic_bool imap_notify_active;

void imap_set_notifications_active(bool active)
{
	atomic_store(&imap_notify_active, active);
}

bool imap_notifications_active(void)
{
	return atomic_load(&imap_notify_active);
}

void imap_sessions_mailbox_changed(const char *user, const char *mailbox)
{
	for (struct imap_session *s = session_list; s != NULL; s = s->next) {
		struct imap_client *client = &s->client;

		if (s->conn_destroyed || !client->idling ||
		    client->state != IMAP_STATE_SELECTED || client->box == NULL)
			continue;
		if (user[0] != '\0' &&
		    (strcmp(store_user_name(mailbox_user(client->box)), user) != 0 ||
		     strcmp(mailbox_name(client->box), mailbox) != 0))
			continue;
		s->poked = true;
		if (s->waiting == SESSION_WAIT_INPUT)
			session_wake(s, false);
	}
}

unsigned int imap_sessions_kick_user(const char *user)
{
	unsigned int count = 0;

	for (struct imap_session *s = session_list; s != NULL; s = s->next) {
		if (s->conn_destroyed || s->client.user == NULL ||
		    strcmp(s->client.user, user) != 0)
			continue;
		log_id_info(s->id, "session of %s ended by the administrator", user);
		s->kicked = true;
		count++;
		if (s->waiting == SESSION_WAIT_INPUT)
			session_wake(s, false);
	}
	return count;
}

unsigned int imap_session_count(void)
{
	return session_count;
}
