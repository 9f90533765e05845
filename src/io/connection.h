#ifndef CM_CONNECTION_H
#define CM_CONNECTION_H
/*
 * connection - a buffered stream socket on an ioloop, optionally TLS.
 *
 * What protocol code sees: bytes arrive in connection_input() (a bounded
 * buffer) and the input callback runs; the protocol parses what it can and
 * consumes it with buffer_consume(). Replies go through connection_write(),
 * which queues them (bounded) and sends them, handling short sends.
 *
 * Memory bounds (DESIGN invariant 8):
 *   - input_limit caps unparsed input. When the buffer is full, reading
 *     stops; if the input callback then consumes nothing and does not pause
 *     input, the connection is closed with reason "input limit exceeded"
 *     (the protocol should have answered a too-long line itself).
 *   - output_limit caps queued output: connection_write() returns -1 when
 *     it would be exceeded. Protocols producing bulk output (FETCH) write
 *     while connection_output_room() allows and continue from the
 *     output_drained callback.
 *   - idle_timeout closes a connection that sent nothing for that long.
 *
 * TLS: connection_start_tls() makes the connection TLS (server or client
 * side, per the context). For STARTTLS the protocol writes its "go ahead"
 * reply first; TLS begins once that reply is sent. Any plaintext input
 * already buffered when TLS starts is discarded (it could be a command
 * injected before the handshake).
 *
 * Teardown follows the io_uring rule: cancel pending operations, wait for
 * their completions, send TLS close_notify, shutdown, close, then call the
 * destroyed callback (the last callback; the connection is freed when it
 * returns).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct buffer;
struct connection;
struct ioloop;
struct tls_context;

struct connection_settings {
	/* Session id for log lines (e.g. "imap-00c1"); copied. */
	const char *id;
	/* Max unparsed input bytes; 0 = 64 KiB. */
	size_t input_limit;
	/* Max queued output bytes; 0 = 1 MiB. */
	size_t output_limit;
	/* Close after this long without input; 0 = never. Output progress
	   (a slow client downloading a large FETCH) also counts as activity,
	   and a connection whose input is paused never idles out. */
	uint64_t idle_timeout_msecs;
	/* How long connection_close() may spend flushing output; 0 = 10 s. */
	uint64_t close_timeout_msecs;
};

struct connection_callbacks {
	/* New input is in connection_input(). Required. */
	void (*input)(struct connection *conn);
	/* All queued output has been sent (optional). */
	void (*output_drained)(struct connection *conn);
	/* TLS handshake finished (optional). */
	void (*tls_established)(struct connection *conn);
	/* The connection is closed and about to be freed: the last callback.
	   reason: "closed by peer", "idle timeout", "input limit exceeded",
	   "TLS handshake failed: ...", or the reason given to close/abort
	   (the first one wins). It always runs from the loop, never inside
	   connection_close()/connection_abort(). */
	void (*destroyed)(struct connection *conn, const char *reason);
};

/* Take over fd (a connected, non-blocking stream socket) and start
   reading. peer may be NULL (unix sockets). */
struct connection *connection_create(struct ioloop *loop, int fd,
				     const struct sockaddr *peer,
				     socklen_t peer_len,
				     const struct connection_settings *set,
				     const struct connection_callbacks *callbacks,
				     void *context);

void *connection_context(const struct connection *conn);
const char *connection_id(const struct connection *conn);
struct ioloop *connection_loop(const struct connection *conn);
/* Peer address; AF_UNSPEC when not known. */
const struct sockaddr *connection_peer(const struct connection *conn);
int connection_fd(const struct connection *conn);

/* Unparsed input (borrowed; consume with buffer_consume()). */
struct buffer *connection_input(struct connection *conn);
/* Queue output. Returns 0, or -1 (nothing queued) if output_limit would
   be exceeded or the connection is closing. */
int connection_write(struct connection *conn, const void *data, size_t len);
int connection_write_str(struct connection *conn, const char *str);
int connection_printf(struct connection *conn, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Bytes that connection_write() would still accept. */
size_t connection_output_room(const struct connection *conn);
/* Bytes queued and not yet sent. */
size_t connection_output_pending(const struct connection *conn);

/* Stop / resume reading (flow control; input callbacks stop too). */
void connection_pause_input(struct connection *conn);
void connection_resume_input(struct connection *conn);

/* Become TLS as described above. server_name: SNI for client contexts
   (NULL for server contexts). Returns 0, or -1 if TLS is already on,
   the connection is closing, or OpenSSL cannot create the session. */
int connection_start_tls(struct connection *conn, struct tls_context *tls,
			 const char *server_name);
bool connection_is_tls(const struct connection *conn);
/* Negotiated protocol version and cipher ("TLSv1.3",
   "TLS_AES_256_GCM_SHA384"), or NULL before the handshake is done. */
const char *connection_tls_version(const struct connection *conn);
const char *connection_tls_cipher(const struct connection *conn);

/* Compress both directions with raw deflate (RFC 1951, no zlib header;
   what IMAP COMPRESS=DEFLATE, RFC 4978, uses). Layering: under TLS when
   both are on (received bytes are decrypted, then inflated; output is
   deflated, then encrypted). Call it after queueing the reply that
   announces compression (that reply goes out uncompressed, everything
   written later compressed) and after consuming the command that asked
   for it: input still unparsed at that moment was sent after the command,
   so it is treated as compressed data. Each burst of output ends with a
   sync flush so the peer can decode complete responses at once.
   Inflated input is bounded by input_limit like any input (a small
   compressed "bomb" cannot grow memory); corrupt compressed input closes
   the connection with reason "corrupt compressed input: ..." (logged).
   Costs about 300 KiB of zlib state per connection.
   Returns 0, or -1 if compression is already on, TLS is starting, the
   connection is closing, or zlib cannot allocate its state. STARTTLS
   after compression is refused (connection_start_tls() returns -1). */
int connection_start_compress(struct connection *conn);
bool connection_is_compressed(const struct connection *conn);

/* Graceful close: stop reading, send what is queued (up to the close
   timeout), then tear down. Safe to call more than once. */
void connection_close(struct connection *conn, const char *reason);
/* Immediate close: drop queued output, tear down. */
void connection_abort(struct connection *conn, const char *reason);
bool connection_is_closing(const struct connection *conn);

/* Number of live connections on this thread (for metrics/tests). */
unsigned int connection_count(void);
/* connection_abort() every live connection of this thread (shutdown). */
void connection_abort_all(const char *reason);

#endif
