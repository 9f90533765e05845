#ifndef CM_LINESESSION_H
#define CM_LINESESSION_H
/*
 * linesession - the engine under a line-based protocol session (SMTP,
 * submission, LMTP): one coroutine per connection that reads lines and
 * raw data and writes replies as straight-line code, without ever
 * blocking the worker's loop.
 *
 * The protocol supplies run(): it is started in a coroutine once the
 * connection is ready (after the TLS handshake for implicit TLS), greets,
 * and loops over commands until it returns. The engine:
 *   - reads only while the coroutine waits for input, so pipelined
 *     commands stay in the bounded input buffer and run in order;
 *   - makes writers wait while the output buffer is full (memory per
 *     session is bounded by input_limit + output_limit);
 *   - bounds every wait with idle_timeout_msecs: when it passes, the
 *     session ends with timeout_reply (the line is written first);
 *   - on a server drain, a session waiting for a command ends with
 *     shutdown_reply; a running command finishes first;
 *   - when the connection dies, every later read and write fails and
 *     run() unwinds; the memory goes once the coroutine has ended, the
 *     connection is destroyed and no timer is pending, then freed() runs.
 *
 * Sessions are kept in a per-thread list (struct linesession_list) that
 * the protocol owns, for its drain and its count.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ioloop;
struct linesession;
struct tls_context;

struct linesession_list {
	struct linesession *head;
	unsigned int count;
};

struct linesession_settings {
	const char *id;			/* copied */
	struct linesession_list *list;	/* this thread's list; borrowed */
	struct tls_context *tls;	/* borrowed; NULL: no TLS */
	bool implicit_tls;		/* handshake before run() */
	size_t input_limit;		/* bytes buffered from the client */
	size_t output_limit;		/* bytes queued to it before writers wait */
	uint64_t idle_timeout_msecs;	/* any wait for the client */
	const char *timeout_reply;	/* last line on idle timeout (no CRLF) */
	const char *shutdown_reply;	/* last line on drain (no CRLF) */
	/* The session's body, in its coroutine. */
	void (*run)(struct linesession *ls, void *context);
	/* Last call, once everything is gone, with why the connection ended. */
	void (*freed)(void *context, const char *reason);
	void *context;
};

/* End the sessions of list (this thread's) for which match(context, arg)
   is true, as a drain ends them - at their next wait for a command, at
   once if they wait for one now - with reply (static, no CRLF) as their
   last line. Returns how many were told. */
unsigned int linesession_end_matching(struct linesession_list *list,
				      bool (*match)(void *context, const void *arg),
				      const void *arg, const char *reply);

/* Take over fd (accepted from peer) on this thread's loop. */
void linesession_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
		       socklen_t peer_len, const struct linesession_settings *set);

/* Output. Each returns 0, or -1 when the session is dead. */
int linesession_write(struct linesession *ls, const void *data, size_t len);
/* fmt + CRLF */
int linesession_reply(struct linesession *ls, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int linesession_vreply(struct linesession *ls, const char *fmt, va_list args)
	__attribute__((format(printf, 2, 0)));
/* Write fmt + CRLF without waiting and close; returns -1. */
int linesession_close(struct linesession *ls, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Read one line ending in LF. Returns 1 with *line_r (NUL-terminated,
   valid until the next read) and *len_r (without the line end; a CR
   before the LF is removed and *bare_lf_r tells whether it was missing);
   0 when the line was longer than max bytes (it was discarded, up to a
   bound, after which the session is closed); -1 when the session ends
   (dead, idle timeout, drain when drain_ok). */
int linesession_read_line(struct linesession *ls, size_t max, bool drain_ok,
			  const char **line_r, size_t *len_r, bool *bare_lf_r);
/* Raw input: at most max bytes (at least 1), waiting when none is
   buffered. *data_r is valid until the next read. 1, or -1 dead. */
int linesession_read_some(struct linesession *ls, size_t max,
			  const unsigned char **data_r, size_t *len_r);
/* Raw input without copying: waits until some is buffered, then
   data_r and len_r show all of it (valid until the next call into the
   session); linesession_consume() drops what was used. 1, or -1 dead. */
int linesession_peek(struct linesession *ls, const unsigned char **data_r,
		     size_t *len_r);
void linesession_consume(struct linesession *ls, size_t len);
/* Input waits end at the absolute time deadline (ioloop_now_msecs()
   clock) at the latest, with the timeout reply; 0 removes it. A line
   read with linesession_read_line() must be complete within
   idle_timeout_msecs of the call anyway. */
void linesession_set_input_deadline(struct linesession *ls, uint64_t deadline);
/* Bytes already buffered (pipelined input). */
size_t linesession_input_pending(struct linesession *ls);

/* Begin TLS after what was written so far; buffered plaintext input is
   dropped (no command injection). 0 or -1. */
int linesession_start_tls(struct linesession *ls);
bool linesession_is_tls(const struct linesession *ls);
/* Is a TLS context configured (STARTTLS possible)? */
bool linesession_tls_context_available(const struct linesession *ls);
/* TLS protocol and cipher, for Received: headers ("" without TLS). */
const char *linesession_tls_version(const struct linesession *ls);
const char *linesession_tls_cipher(const struct linesession *ls);

const char *linesession_id(const struct linesession *ls);
const char *linesession_peer_ip(const struct linesession *ls);
/* The peer address as accepted (NULL if unknown). */
const struct sockaddr *linesession_peer(const struct linesession *ls);
/* The last line of a session that is being ended (drain or
   linesession_end_matching()). */
const char *linesession_end_reply(const struct linesession *ls);
bool linesession_shutting_down(const struct linesession *ls);

/* From run(): sleep msecs (yielding). -1 if the session died meanwhile. */
int linesession_sleep(struct linesession *ls, uint64_t msecs);
/* From run(): run work(arg) on the blocking pool and wait for it. */
void linesession_run_blocking(struct linesession *ls, int (*work)(void *arg),
			      void *arg);

/* Drain: end every session of list (see above). */
void linesession_shutdown_all(struct linesession_list *list);

#endif
