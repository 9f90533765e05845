/*
 * linesession.c - the coroutine engine under line-based protocol sessions
 * (see linesession.h for the contract).
 *
 * State per session: the connection, the coroutine, one timer, and what
 * the coroutine waits for (input, output room, a sleep, a pool job). The
 * connection callbacks only wake the coroutine; all protocol work happens
 * inside it. Input is paused whenever the coroutine is not waiting for it,
 * so a client that pipelines faster than we answer fills only the bounded
 * input buffer.
 *
 * Teardown: the destroyed callback marks the session dead and resumes a
 * waiting coroutine, which sees every read and write fail and unwinds.
 * The memory is freed when the coroutine is done, the connection destroyed
 * and the timer idle (session_free_if_done), in whichever order those
 * happen.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "io/connection.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "linesession.h"

#include <stdio.h>
#include <string.h>

/* Implicit TLS: the handshake must be done within this. */
#define LINESESSION_TLS_HANDSHAKE_MSECS (60 * 1000)
/* An overlong line: at most this much is discarded before closing. */
#define LINESESSION_DISCARD_MAX (1024 * 1024)

enum session_wait {
	SESSION_WAIT_NONE,
	SESSION_WAIT_INPUT,
	SESSION_WAIT_OUTPUT,
	SESSION_WAIT_SLEEP,
	SESSION_WAIT_JOB,
};

struct linesession {
	struct linesession_settings set;	/* strings borrowed but id */
	char id[64];
	char peer_ip[NET_ADDR_STRLEN];
	struct ioloop *loop;
	struct connection *conn;	/* NULL once destroyed */
	struct coro *coro;		/* NULL before start and after done */
	struct io_request timer;
	uint64_t timer_target;
	uint64_t wait_deadline;		/* 0 = none */
	enum session_wait waiting;
	bool woken_by_timer;
	bool input_paused;

	struct io_request job;		/* linesession_run_blocking() */
	bool job_pending;

	bool started, coro_done, conn_destroyed, freed;
	bool shutdown, closing;
	const char *end_reply;		/* static; NULL: set.shutdown_reply */
	uint64_t input_deadline;	/* 0, or when the input being read must be
					   complete (linesession_set_input_deadline) */
	uint64_t line_deadline;		/* while read_line waits for one line */
	char *reason;			/* owned; why the connection ended */
	struct buffer line;		/* the last line or data read */
	struct linesession *prev, *next;
};

static bool session_dead(const struct linesession *s)
{
	return s->conn_destroyed || s->conn == NULL ||
		connection_is_closing(s->conn);
}

/* ---- waiting ------------------------------------------------------------ */

static void session_timer_arm(struct linesession *s, uint64_t deadline);
static void session_free_if_done(struct linesession *s);

/* session_wake - a wait ended; run the coroutine on */
static void session_wake(struct linesession *s, bool timer)
{
	if (s->waiting == SESSION_WAIT_NONE || s->coro == NULL)
		return;
	s->waiting = SESSION_WAIT_NONE;
	s->woken_by_timer = timer;
	coro_resume(s->coro);
}

/* session_timer_done - a deadline passed (or a cancelled timer) */
static void session_timer_done(struct io_request *req, int result ATTR_UNUSED)
{
	struct linesession *s = req->context;
	uint64_t now = ioloop_now_msecs();

	if (s->conn_destroyed) {
		session_free_if_done(s);
		return;
	}
	if (!s->started) {
		if (now >= s->wait_deadline)
			connection_abort(s->conn, "TLS handshake timeout");
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

static void session_timer_arm(struct linesession *s, uint64_t deadline)
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

/* session_wait - suspend until woken, the deadline, or the end of the
   connection. 1 woken, 0 deadline, -1 dead. */
static int session_wait(struct linesession *s, enum session_wait kind,
			uint64_t deadline)
{
	if (session_dead(s))
		return -1;
	if (kind == SESSION_WAIT_INPUT && s->input_paused) {
		s->input_paused = false;
		connection_resume_input(s->conn);
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

static void session_pause_input(struct linesession *s)
{
	if (!s->input_paused && !session_dead(s)) {
		s->input_paused = true;
		connection_pause_input(s->conn);
	}
}

/* session_wait_input - wait for more input; -1 ends the session (dead,
   timeout, drain when drain_ok) */
static int session_wait_input(struct linesession *s, bool drain_ok)
{
	uint64_t deadline = ioloop_now_msecs() + s->set.idle_timeout_msecs;
	int ret;

	if (s->shutdown && drain_ok)
		return linesession_close(s, "%s", linesession_end_reply(s));
	/* A client that trickles bytes must still finish a line (or its
	   data) in time: the per-wait timeout alone would let it hold the
	   session forever. */
	if (s->line_deadline != 0 && s->line_deadline < deadline)
		deadline = s->line_deadline;
	if (s->input_deadline != 0 && s->input_deadline < deadline)
		deadline = s->input_deadline;
	ret = session_wait(s, SESSION_WAIT_INPUT, deadline);
	if (ret == 0) {
		log_id_info(s->id, "timeout: no (complete) input within %llu ms",
			    (unsigned long long)s->set.idle_timeout_msecs);
		return linesession_close(s, "%s", s->set.timeout_reply);
	}
	if (ret > 0 && s->shutdown && drain_ok)
		return linesession_close(s, "%s", linesession_end_reply(s));
	return ret;
}

/* ---- output ------------------------------------------------------------- */

int linesession_write(struct linesession *s, const void *data, size_t len)
{
	const unsigned char *p = data;

	while (len > 0) {
		size_t room, n;
		int ret;

		if (session_dead(s))
			return -1;
		room = connection_output_room(s->conn);
		if (room == 0) {
			ret = session_wait(s, SESSION_WAIT_OUTPUT, ioloop_now_msecs() +
					   s->set.idle_timeout_msecs);
			if (ret < 0)
				return -1;
			if (ret == 0) {
				connection_abort(s->conn, "output timeout");
				return -1;
			}
			continue;
		}
		n = room < len ? room : len;
		if (connection_write(s->conn, p, n) < 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

int linesession_vreply(struct linesession *s, const char *fmt, va_list args)
{
	struct buffer out;
	int ret;

	buffer_init(&out, 0);
	(void)buffer_vprintf(&out, fmt, args);
	(void)buffer_append_str(&out, "\r\n");
	ret = linesession_write(s, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

int linesession_reply(struct linesession *s, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = linesession_vreply(s, fmt, args);
	va_end(args);
	return ret;
}

int linesession_close(struct linesession *s, const char *fmt, ...)
{
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
	(void)connection_write_str(s->conn, line);
	if (s->reason == NULL)
		s->reason = mem_strdup(text);
	free(line);
	free(text);
	connection_close(s->conn, s->reason);
	return -1;
}

/* ---- input -------------------------------------------------------------- */

static ssize_t session_find_lf(struct linesession *s)
{
	struct buffer *in = connection_input(s->conn);
	const unsigned char *lf;

	if (in->used == 0)
		return -1;
	lf = memchr(in->data, '\n', in->used);
	return lf == NULL ? -1 : (ssize_t)(lf - in->data);
}

/* session_discard_line - drop input through the next LF (bounded) */
static int session_discard_line(struct linesession *s, bool drain_ok)
{
	size_t dropped = 0;

	for (;;) {
		struct buffer *in;
		ssize_t lf;

		if (session_dead(s))
			return -1;
		in = connection_input(s->conn);
		lf = session_find_lf(s);
		if (lf >= 0) {
			buffer_consume(in, (size_t)lf + 1);
			return 0;
		}
		dropped += in->used;
		buffer_reset(in);
		if (dropped > LINESESSION_DISCARD_MAX)
			return linesession_close(s, "%s", s->set.timeout_reply);
		if (session_wait_input(s, drain_ok) < 0)
			return -1;
	}
}

int linesession_read_line(struct linesession *s, size_t max, bool drain_ok,
			  const char **line_r, size_t *len_r, bool *bare_lf_r)
{
	struct buffer *in = NULL;
	ssize_t lf = -1;
	size_t len;
	int ret;

	s->line_deadline = ioloop_now_msecs() + s->set.idle_timeout_msecs;
	for (;;) {
		if (session_dead(s))
			break;
		in = connection_input(s->conn);
		lf = session_find_lf(s);
		if (lf >= 0 || in->used > max + 2)
			break;
		if (in->used > 0 && s->shutdown && drain_ok)
			drain_ok = false;	/* a command is arriving: let it */
		if (session_wait_input(s, drain_ok) < 0)
			break;
	}
	s->line_deadline = 0;
	if (session_dead(s))
		return -1;
	if (lf < 0 || (size_t)lf + 1 > max + 2) {
		ret = session_discard_line(s, drain_ok);
		return ret < 0 ? -1 : 0;
	}
	len = (size_t)lf;
	*bare_lf_r = !(len > 0 && in->data[len - 1] == '\r');
	if (!*bare_lf_r)
		len--;
	buffer_reset(&s->line);
	(void)buffer_append(&s->line, in->data, len);
	(void)buffer_append_byte(&s->line, '\0');
	buffer_consume(in, (size_t)lf + 1);
	session_pause_input(s);
	*line_r = (const char *)s->line.data;
	*len_r = len;
	return 1;
}

int linesession_read_some(struct linesession *s, size_t max,
			  const unsigned char **data_r, size_t *len_r)
{
	struct buffer *in;
	size_t n;

	for (;;) {
		if (session_dead(s))
			return -1;
		in = connection_input(s->conn);
		if (in->used > 0)
			break;
		if (session_wait_input(s, false) < 0)
			return -1;
	}
	n = in->used < max ? in->used : max;
	buffer_reset(&s->line);
	(void)buffer_append(&s->line, in->data, n);
	buffer_consume(in, n);
	session_pause_input(s);
	*data_r = s->line.data;
	*len_r = n;
	return 1;
}

int linesession_peek(struct linesession *s, const unsigned char **data_r,
		     size_t *len_r)
{
	struct buffer *in;

	for (;;) {
		if (session_dead(s))
			return -1;
		in = connection_input(s->conn);
		if (in->used > 0)
			break;
		if (session_wait_input(s, false) < 0)
			return -1;
	}
	*data_r = in->data;
	*len_r = in->used;
	return 1;
}

void linesession_consume(struct linesession *s, size_t len)
{
	if (session_dead(s))
		return;
	buffer_consume(connection_input(s->conn), len);
	session_pause_input(s);
}

void linesession_set_input_deadline(struct linesession *s, uint64_t deadline)
{
	s->input_deadline = deadline;
}

size_t linesession_input_pending(struct linesession *s)
{
	return session_dead(s) ? 0 : connection_input(s->conn)->used;
}

/* ---- TLS and accessors --------------------------------------------------- */

int linesession_start_tls(struct linesession *s)
{
	if (session_dead(s) || s->set.tls == NULL)
		return -1;
	buffer_reset(connection_input(s->conn));
	return connection_start_tls(s->conn, s->set.tls, NULL);
}

bool linesession_is_tls(const struct linesession *s)
{
	return s->conn != NULL && connection_is_tls(s->conn);
}

bool linesession_tls_context_available(const struct linesession *s)
{
	return s->set.tls != NULL;
}

const char *linesession_tls_version(const struct linesession *s)
{
	return linesession_is_tls(s) ? connection_tls_version(s->conn) : "";
}

const char *linesession_tls_cipher(const struct linesession *s)
{
	return linesession_is_tls(s) ? connection_tls_cipher(s->conn) : "";
}

const char *linesession_id(const struct linesession *s) { return s->id; }
const char *linesession_peer_ip(const struct linesession *s) { return s->peer_ip; }

const struct sockaddr *linesession_peer(const struct linesession *s)
{
	return s->conn != NULL ? connection_peer(s->conn) : NULL;
}

const char *linesession_end_reply(const struct linesession *s)
{
	return s->end_reply != NULL ? s->end_reply : s->set.shutdown_reply;
}

bool linesession_shutting_down(const struct linesession *s)
{
	return s->shutdown;
}

int linesession_sleep(struct linesession *s, uint64_t msecs)
{
	int ret = session_wait(s, SESSION_WAIT_SLEEP, ioloop_now_msecs() + msecs);

	return ret < 0 ? -1 : 0;
}

static void session_job_done(struct io_request *req, int result ATTR_UNUSED)
{
	struct linesession *s = req->context;

	s->job_pending = false;
	if (s->waiting == SESSION_WAIT_JOB)
		session_wake(s, false);
	else
		session_free_if_done(s);
}

void linesession_run_blocking(struct linesession *s, int (*work)(void *arg),
			      void *arg)
{
	/* The job runs to its end even if the connection dies meanwhile:
	   arg lives on the coroutine's stack, so we wait for it regardless. */
	s->job_pending = true;
	ioloop_run_blocking(s->loop, &s->job, work, arg);
	while (s->job_pending) {
		s->waiting = SESSION_WAIT_JOB;
		coro_yield();
	}
	s->waiting = SESSION_WAIT_NONE;
}

/* ---- the coroutine and connection callbacks -------------------------------- */

static void session_main(void *context)
{
	struct linesession *s = context;

	if (s->shutdown)
		(void)linesession_close(s, "%s", linesession_end_reply(s));
	else
		s->set.run(s, s->set.context);
	if (!s->conn_destroyed)
		connection_close(s->conn, s->reason != NULL ? s->reason :
				 "session ended");
}

static void session_coro_done(void *context)
{
	struct linesession *s = context;

	s->coro = NULL;
	s->coro_done = true;
	session_free_if_done(s);
}

static void session_start(struct linesession *s)
{
	if (s->started)
		return;
	s->started = true;
	s->wait_deadline = 0;
	s->coro = coro_start(s->loop, 0, session_main, s, session_coro_done);
}

static void session_input(struct connection *conn)
{
	struct linesession *s = connection_context(conn);

	if (s->waiting == SESSION_WAIT_INPUT) {
		session_wake(s, false);
		return;
	}
	s->input_paused = true;
	connection_pause_input(conn);
}

static void session_output_drained(struct connection *conn)
{
	struct linesession *s = connection_context(conn);

	if (s->waiting == SESSION_WAIT_OUTPUT)
		session_wake(s, false);
}

static void session_tls_established(struct connection *conn)
{
	struct linesession *s = connection_context(conn);

	log_id_debug(s->id, "TLS established: %s %s",
		     connection_tls_version(conn), connection_tls_cipher(conn));
	if (!s->started)
		session_start(s);
}

static void session_destroyed(struct connection *conn, const char *reason)
{
	struct linesession *s = connection_context(conn);

	s->conn_destroyed = true;
	s->conn = NULL;
	if (s->reason == NULL)
		s->reason = mem_strdup(reason);
	if (io_request_is_pending(&s->timer))
		io_cancel(s->loop, &s->timer);
	if (s->waiting != SESSION_WAIT_NONE && s->waiting != SESSION_WAIT_JOB &&
	    s->coro != NULL) {
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

static void session_free_if_done(struct linesession *s)
{
	struct linesession_list *list = s->set.list;

	if (s->freed || !s->coro_done || !s->conn_destroyed || s->job_pending ||
	    io_request_is_pending(&s->timer))
		return;
	s->freed = true;
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		list->head = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	list->count--;
	if (s->set.freed != NULL)
		s->set.freed(s->set.context, s->reason != NULL ? s->reason : "closed");
	buffer_clear(&s->line);
	free(s->reason);
	free(s);
}

void linesession_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
		       socklen_t peer_len, const struct linesession_settings *set)
{
	struct linesession *s = mem_zalloc(sizeof(*s));
	struct connection_settings conn_set = {
		.id = set->id,
		.input_limit = set->input_limit,
		.output_limit = set->output_limit,
		.close_timeout_msecs = 10 * 1000,
	};

	s->set = *set;
	snprintf(s->id, sizeof(s->id), "%s", set->id);
	s->set.id = s->id;
	s->loop = loop;
	buffer_init(&s->line, 0);
	io_request_init(&s->timer, session_timer_done, s);
	io_request_init(&s->job, session_job_done, s);
	snprintf(s->peer_ip, sizeof(s->peer_ip), "unknown");
	if (peer != NULL)
		net_ip_str(peer, s->peer_ip);
	s->next = set->list->head;
	if (set->list->head != NULL)
		set->list->head->prev = s;
	set->list->head = s;
	set->list->count++;
	s->conn = connection_create(loop, fd, peer, peer_len, &conn_set,
				    &session_callbacks, s);
	if (set->implicit_tls) {
		if (set->tls == NULL ||
		    connection_start_tls(s->conn, set->tls, NULL) < 0) {
			connection_abort(s->conn, "cannot start TLS");
			return;
		}
		s->wait_deadline = ioloop_now_msecs() + LINESESSION_TLS_HANDSHAKE_MSECS;
		session_timer_arm(s, s->wait_deadline);
		return;
	}
	session_start(s);
}

/* session_end - end s like a drain does */
static void session_end(struct linesession *s, const char *why)
{
	s->shutdown = true;
	if (s->conn_destroyed)
		return;
	if (!s->started) {
		connection_close(s->conn, why);
		return;
	}
	if (s->waiting == SESSION_WAIT_INPUT)
		session_wake(s, false);
}

void linesession_shutdown_all(struct linesession_list *list)
{
	for (struct linesession *s = list->head; s != NULL; s = s->next)
		session_end(s, "server shutting down");
}

unsigned int linesession_end_matching(struct linesession_list *list,
				      bool (*match)(void *context, const void *arg),
				      const void *arg, const char *reply)
{
	unsigned int count = 0;

	for (struct linesession *s = list->head; s != NULL; s = s->next) {
		if (s->shutdown || s->conn_destroyed ||
		    !match(s->set.context, arg))
			continue;
		if (s->end_reply == NULL)
			s->end_reply = reply;
		session_end(s, "ended by the administrator");
		count++;
	}
	return count;
}
