/*
 * connection.c - buffered stream sockets on an ioloop, with optional TLS
 * and compression.
 *
 * Why one file of 1,300 lines: TLS and compression are layers of the same
 * byte pipeline, and the ownership rules below (kernel-owned buffers, the
 * deferred step, teardown) have to be seen together to be kept; split
 * into files, each layer would need the connection's private state.
 *
 * Ownership. A connection has at most one recv, one send and one timer in
 * flight, each an io_request embedded here. Whatever memory such a request
 * names belongs to the kernel until its completion arrives:
 *
 *   - recv fills recv_buf, a private array inside this struct, never the
 *     protocol's input buffer. The protocol may consume, reset or parse the
 *     input buffer at any moment (from a pool completion, after a resume)
 *     and buffer operations write a terminator at data[used]; a recv aimed
 *     into that buffer would race those writes and a realloc would leave
 *     the kernel writing into freed heap. One memcpy per 16 KiB is a small
 *     price for keeping kernel-owned memory out of anyone else's reach.
 *     The recv length is still bounded by the input buffer's room, so
 *     input_limit holds.
 *   - send reads out_sending, which nothing appends to while the send is
 *     pending. New output goes to out_queue (or tls_plain under TLS); the
 *     buffers are swapped only when out_sending has been fully sent. A
 *     short send simply resubmits the rest of out_sending.
 *   - the timer reads its timespec from the request itself.
 *
 * Teardown. Freeing a connection with a request in flight is the classic
 * io_uring use-after-free: the CQE arrives later and its user_data points
 * at freed memory. So teardown (abort, or the end of a graceful close)
 * moves to CONN_TEARDOWN, cancels all three requests and returns. Each
 * completion handler ends with conn_finish_if_done(), which frees the
 * connection only when nothing is in flight, no deferred step is queued and
 * no user callback is on the stack. The fd is closed at that point, never
 * earlier: an SQE that has not been issued yet resolves its fd number at
 * issue time and could hit a reused descriptor. destroyed() runs last,
 * exactly once, always from the loop and never inside
 * connection_close()/connection_abort(), so callers may touch the
 * connection after either returns and may call them from any callback.
 * If nothing was in flight, a zero timeout provides the completion (and
 * keeps ioloop_pending_count() honest until the connection is gone).
 *
 * Graceful close: stop reading (cancel the recv), send what is queued,
 * send TLS close_notify, shutdown(SHUT_WR), teardown. A close timeout
 * bounds the flush against a peer that stopped reading.
 *
 * Re-entrancy. User callbacks (input, output_drained, tls_established)
 * run with callback_depth raised; the input callback is never re-entered.
 * Work that a call from inside a callback would otherwise do recursively
 * (re-running input after resume, starting TLS) is queued as a deferred
 * step that the loop runs next. After every user callback the code
 * re-checks the state: the callback may have closed the connection.
 *
 * Compression (connection_start_compress()) is a layer between TLS and the
 * protocol; see the essay above its section below.
 *
 * TLS uses OpenSSL with memory BIOs: received ciphertext is written into
 * the rbio, SSL_read() fills the input buffer; plaintext written by the
 * protocol waits in tls_plain and is encrypted with SSL_write() only when
 * the socket is ready for more, so records are large and the amount of
 * ciphertext held here stays bounded. STARTTLS: TLS begins once the
 * plaintext output queued before connection_start_tls() is sent. Input
 * received before that moment cannot be ciphertext (the peer has not seen
 * our "go ahead" yet), so it is discarded, as is unparsed plaintext input
 * still buffered: that closes the command-injection hole of RFC 3207 s.6.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "ioloop.h"
#include "connection.h"
#include "tls.h"
#include "io-private.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <zlib.h>

#define CONN_DEFAULT_INPUT_LIMIT (64 * 1024)
#define CONN_DEFAULT_OUTPUT_LIMIT (1024 * 1024)
#define CONN_DEFAULT_CLOSE_TIMEOUT_MSECS (10 * 1000)
/* Largest single recv; also the ciphertext OpenSSL may hold unread. */
#define CONN_RECV_CHUNK (16 * 1024)
/* Plaintext encrypted per round: 16 full TLS records. */
#define CONN_TLS_ENCRYPT_CHUNK (256 * 1024)
/* Output buffers larger than this are freed when the connection idles. */
#define CONN_IDLE_BUFFER_KEEP (64 * 1024)

/* Uncompressed output deflated per round; each round ends with a sync
   flush, so the peer can always decode everything we sent so far. */
#define CONN_ZLIB_DEFLATE_CHUNK (256 * 1024)

/* Raw deflate streams (no zlib header, RFC 1951) in both directions. */
struct conn_zlib {
	z_stream inflater;
	z_stream deflater;
	/* Compressed input not inflated yet: at most CONN_RECV_CHUNK plus
	   what was pipelined before compression started. */
	struct buffer in;
	struct buffer plain;		/* output not yet deflated */
	size_t plain_off;		/* bytes of plain already deflated */
	bool in_ended;			/* the peer ended its deflate stream */
};

enum conn_state {
	CONN_OPEN,		/* reading and writing */
	CONN_CLOSING,		/* connection_close(): flushing output */
	CONN_TEARDOWN,		/* requests cancelled; waiting for them */
	CONN_DESTROYED,		/* destroyed() is running */
};

enum conn_tls_state {
	CONN_TLS_OFF,
	CONN_TLS_WAIT_FLUSH,	/* started; earlier plaintext still going out */
	CONN_TLS_HANDSHAKE,
	CONN_TLS_ON,
	CONN_TLS_FAILED,	/* fatal TLS error; only queued alerts go out */
};

struct connection {
	char *id;
	struct ioloop *loop;		/* borrowed */
	int fd;				/* owned; closed just before destroyed() */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	struct connection_settings set;	/* set.id points to id */
	struct connection_callbacks callbacks;
	void *context;			/* the caller's */
	struct connection *prev, *next;	/* this thread's connection list */

	enum conn_state state;
	char *reason;			/* owned; the first close/abort reason */
	unsigned int callback_depth;	/* user callbacks on the stack */

	/* Input */
	struct buffer input;		/* plaintext; limit = input_limit */
	bool input_paused;
	bool input_new;			/* data the input callback has not seen */
	bool in_input;
	bool read_eof;
	uint64_t last_activity_msecs;
	struct io_request recv_req;

	/* Output */
	struct buffer out_queue;	/* plaintext to send as is (no TLS) */
	struct buffer out_sending;	/* kernel-owned while send_req pending */
	size_t out_sent;		/* bytes of out_sending already sent */
	bool drained_wanted;		/* written since output_drained ran */
	struct io_request send_req;

	/* Idle and close timer */
	struct io_request timer_req;
	uint64_t timer_deadline;
	uint64_t close_deadline;

	/* Deferred step, run by the loop soon (see the essay above) */
	struct ioloop_post_item deferred;
	bool deferred_queued;

	/* TLS */
	enum conn_tls_state tls_state;
	struct tls_context *tls;	/* a reference */
	SSL *ssl;			/* owns rbio and wbio */
	BIO *rbio, *wbio;
	struct buffer tls_plain;	/* plaintext not yet encrypted */
	size_t tls_plain_off;		/* bytes of tls_plain already encrypted */
	bool tls_established;
	bool tls_shutdown_sent;
	char *fail_reason;		/* owned; close reason once deferred
					   (a TLS or decompression failure) */

	/* Compression (connection_start_compress()); NULL until started */
	struct conn_zlib *zlib;		/* owned */

	/* Kernel-owned while recv_req is pending. */
	unsigned char recv_buf[CONN_RECV_CHUNK];
};

static __thread struct connection *conn_list;
static __thread unsigned int conn_live_count;

static void conn_flush(struct connection *conn);
static void conn_input_run(struct connection *conn);
static void conn_tls_process(struct connection *conn);
static void conn_zlib_free(struct connection *conn);

/*
 * Small helpers
 */

static bool conn_output_is_idle(const struct connection *conn)
{
	return !conn->send_req.pending && conn->out_queue.used == 0 &&
		conn->out_sent == conn->out_sending.used;
}

static size_t conn_tls_plain_pending(const struct connection *conn)
{
	return conn->tls_plain.used - conn->tls_plain_off;
}

/* conn_set_reason - remember why we close; the first reason wins */
static void conn_set_reason(struct connection *conn, const char *reason)
{
	if (conn->reason == NULL)
		conn->reason = mem_strdup(reason != NULL ? reason : "closed");
}

/* conn_schedule_deferred - have conn_deferred_run() called by the loop */
static void conn_schedule_deferred(struct connection *conn)
{
	if (conn->deferred_queued)
		return;
	conn->deferred_queued = true;
	ioloop_post_item(conn->loop, &conn->deferred);
}

/* conn_shrink - free a large, empty buffer of an idle connection */
static void conn_shrink(struct buffer *buf)
{
	if (buf->used == 0 && buf->alloc > CONN_IDLE_BUFFER_KEEP)
		buffer_clear(buf);
}

/*
 * Teardown
 */

/* conn_destroy - close, tell the owner, free; nothing may be in flight */
static void conn_destroy(struct connection *conn)
{
	conn->state = CONN_DESTROYED;
	SSL_free(conn->ssl);
	conn->ssl = NULL;
	tls_context_unref(&conn->tls);
	if (close(conn->fd) < 0)
		log_id_warn(conn->id, "close() failed: %s", strerror(errno));
	conn->fd = -1;

	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		conn_list = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	conn_live_count--;

	conn->callback_depth++;
	if (conn->callbacks.destroyed != NULL)
		conn->callbacks.destroyed(conn, conn->reason);
	buffer_clear(&conn->input);
	buffer_clear(&conn->out_queue);
	buffer_clear(&conn->out_sending);
	buffer_clear(&conn->tls_plain);
	conn_zlib_free(conn);
	free(conn->fail_reason);
	free(conn->reason);
	free(conn->id);
	free(conn);
}

/* conn_finish_if_done - free once nothing can call back into conn */
static void conn_finish_if_done(struct connection *conn)
{
	if (conn->state != CONN_TEARDOWN || conn->callback_depth > 0 ||
	    conn->deferred_queued || conn->recv_req.pending ||
	    conn->send_req.pending || conn->timer_req.pending)
		return;
	conn_destroy(conn);
}

/* conn_teardown - cancel everything; completions finish the job */
static void conn_teardown(struct connection *conn)
{
	conn->state = CONN_TEARDOWN;
	io_cancel(conn->loop, &conn->recv_req);
	io_cancel(conn->loop, &conn->send_req);
	io_cancel(conn->loop, &conn->timer_req);
	if (!conn->recv_req.pending && !conn->send_req.pending &&
	    !conn->timer_req.pending)
		io_timeout(conn->loop, &conn->timer_req, 0);
}

/* conn_close_finish - output flushed: FIN, then teardown */
static void conn_close_finish(struct connection *conn)
{
	if (shutdown(conn->fd, SHUT_WR) < 0 && errno != ENOTCONN)
		log_id_debug(conn->id, "shutdown() failed: %s", strerror(errno));
	conn_teardown(conn);
}

/* conn_fail - abort after a socket error, with a readable reason */
static void conn_fail(struct connection *conn, const char *op, int err)
{
	char *reason;

	if (err == ECONNRESET) {
		connection_abort(conn, "connection reset by peer");
	} else if (err == EPIPE) {
		connection_abort(conn, "closed by peer");
	} else {
		reason = mem_printf("%s failed: %s", op, strerror(err));
		connection_abort(conn, reason);
		free(reason);
	}
}

/*
 * Timer: idle timeout while open, close timeout while closing. It is
 * re-armed lazily: activity only updates last_activity_msecs, and an
 * expiring timer re-arms itself for the remainder.
 */

/* conn_timer_arm - start the timer for the current state, if needed */
static void conn_timer_arm(struct connection *conn)
{
	uint64_t deadline, now;

	if (conn->timer_req.pending)
		return;
	if (conn->state == CONN_OPEN && conn->set.idle_timeout_msecs > 0)
		deadline = conn->last_activity_msecs + conn->set.idle_timeout_msecs;
	else if (conn->state == CONN_CLOSING)
		deadline = conn->close_deadline;
	else
		return;
	now = ioloop_now_msecs();
	conn->timer_deadline = deadline;
	io_timeout(conn->loop, &conn->timer_req, deadline > now ? deadline - now : 0);
}

/* conn_idle_check - close if the peer has been quiet long enough */
static void conn_idle_check(struct connection *conn)
{
	uint64_t now = ioloop_now_msecs();

	if (conn->set.idle_timeout_msecs == 0)
		return;
	/* A paused connection waits for us, not for the peer. */
	if (conn->input_paused)
		conn->last_activity_msecs = now;
	else if (now - conn->last_activity_msecs >= conn->set.idle_timeout_msecs)
		connection_close(conn, "idle timeout");
}

/* conn_close_timeout_check - give up flushing once the deadline passed */
static void conn_close_timeout_check(struct connection *conn)
{
	if (ioloop_now_msecs() < conn->close_deadline)
		return;
	log_id_warn(conn->id, "close timed out with %zu bytes unsent",
		    connection_output_pending(conn));
	connection_abort(conn, "close timeout");
}

/* conn_timer_done - timer completion: idle or close deadline reached */
static void conn_timer_done(struct io_request *req, int result)
{
	struct connection *conn = req->context;

	if (result != -ETIME && result != -ECANCELED && result != 0)
		log_id_warn(conn->id, "timer failed: %s", strerror(-result));
	if (conn->state == CONN_OPEN)
		conn_idle_check(conn);
	else if (conn->state == CONN_CLOSING)
		conn_close_timeout_check(conn);
	conn_timer_arm(conn);
	conn_finish_if_done(conn);
}

/*
 * Compression (raw deflate both ways, as IMAP COMPRESS=DEFLATE wants).
 * It sits between TLS and the protocol: received bytes are decrypted
 * into zlib->in and inflated into the input buffer; protocol output
 * queues in zlib->plain and is deflated just before it is encrypted or
 * sent. Inflating stops when the input buffer is full and reading stops
 * when zlib->in holds a chunk, so a small "decompression bomb" from the
 * peer never grows memory past input_limit.
 */

/* conn_plain_pending - output bytes not yet compressed or encrypted */
static size_t conn_plain_pending(const struct connection *conn)
{
	size_t pending = conn_tls_plain_pending(conn);

	if (conn->zlib != NULL)
		pending += conn->zlib->plain.used - conn->zlib->plain_off;
	return pending;
}

/* conn_zlib_fail - bad compressed input: the deferred step closes */
static void conn_zlib_fail(struct connection *conn, const char *detail)
{
	if (conn->fail_reason != NULL)
		return;
	conn->fail_reason = mem_printf("corrupt compressed input: %s", detail);
	log_id_warn(conn->id, "%s", conn->fail_reason);
	conn_schedule_deferred(conn);
}

/* conn_zlib_inflate_once - one inflate() into room bytes of input;
   returns false when no more progress is possible now */
static bool conn_zlib_inflate_once(struct connection *conn, size_t room)
{
	struct conn_zlib *z = conn->zlib;
	unsigned char *dest = buffer_reserve(&conn->input, room);
	size_t consumed, produced;
	int ret;

	z->inflater.next_in = z->in.data;
	z->inflater.avail_in = (uInt)z->in.used;
	z->inflater.next_out = dest;
	z->inflater.avail_out = (uInt)room;
	ret = inflate(&z->inflater, Z_SYNC_FLUSH);
	consumed = z->in.used - z->inflater.avail_in;
	produced = room - z->inflater.avail_out;
	buffer_consume(&z->in, consumed);
	buffer_commit(&conn->input, produced);
	if (produced > 0)
		conn->input_new = true;
	if (ret == Z_STREAM_END) {
		/* The peer finished its stream: nothing may follow. */
		z->in_ended = true;
		conn->read_eof = true;
		return false;
	}
	if (ret != Z_OK && ret != Z_BUF_ERROR) {
		conn_zlib_fail(conn, z->inflater.msg != NULL ?
			       z->inflater.msg : "inflate error");
		return false;
	}
	return consumed > 0 || produced > 0;
}

/* conn_zlib_inflate - decompress zlib->in while the input buffer has room */
static void conn_zlib_inflate(struct connection *conn)
{
	struct conn_zlib *z = conn->zlib;
	size_t room;

	while (conn->state == CONN_OPEN && conn->fail_reason == NULL &&
	       !z->in_ended && (room = buffer_room(&conn->input)) > 0) {
		if (room > CONN_RECV_CHUNK)
			room = CONN_RECV_CHUNK;
		if (!conn_zlib_inflate_once(conn, room))
			break;
	}
	if (z->in_ended && z->in.used > 0) {
		log_id_warn(conn->id, "discarding %zu bytes received after "
			    "the end of the compressed stream", z->in.used);
		buffer_reset(&z->in);
	}
}

/* conn_zlib_in_room - compressed bytes we may read now */
static size_t conn_zlib_in_room(const struct connection *conn)
{
	size_t used = conn->zlib->in.used;

	return used < CONN_RECV_CHUNK ? CONN_RECV_CHUNK - used : 0;
}

/* conn_zlib_deflate - compress one round of queued output into dest,
   ending with a sync flush */
static void conn_zlib_deflate(struct connection *conn, struct buffer *dest)
{
	struct conn_zlib *z = conn->zlib;
	size_t len = z->plain.used - z->plain_off;
	unsigned char *out;

	if (len == 0)
		return;
	if (len > CONN_ZLIB_DEFLATE_CHUNK)
		len = CONN_ZLIB_DEFLATE_CHUNK;
	z->deflater.next_in = z->plain.data + z->plain_off;
	z->deflater.avail_in = (uInt)len;
	do {
		if ((out = buffer_reserve(dest, CONN_RECV_CHUNK)) == NULL)
			log_panic("%s: unlimited output buffer refused data",
				  conn->id);
		z->deflater.next_out = out;
		z->deflater.avail_out = CONN_RECV_CHUNK;
		if (deflate(&z->deflater, Z_SYNC_FLUSH) == Z_STREAM_ERROR)
			log_panic("%s: deflate state is broken", conn->id);
		buffer_commit(dest, CONN_RECV_CHUNK - z->deflater.avail_out);
	} while (z->deflater.avail_out == 0);
	z->plain_off += len;
	if (z->plain_off == z->plain.used) {
		buffer_reset(&z->plain);
		z->plain_off = 0;
		conn_shrink(&z->plain);
	} else if (z->plain_off > z->plain.used / 2) {
		buffer_consume(&z->plain, z->plain_off);
		z->plain_off = 0;
	}
}

/* conn_zlib_free - release the streams and buffers */
static void conn_zlib_free(struct connection *conn)
{
	struct conn_zlib *z = conn->zlib;

	if (z == NULL)
		return;
	(void)inflateEnd(&z->inflater);
	(void)deflateEnd(&z->deflater);
	buffer_clear(&z->in);
	buffer_clear(&z->plain);
	free(z);
	conn->zlib = NULL;
}

/*
 * TLS
 */

/* conn_tls_fail - mark TLS broken; the deferred step closes with reason */
static void conn_tls_fail(struct connection *conn, const char *what)
{
	/* The verify result is recorded even when nobody asked for
	   verification; it only explains a failure when it was enforced. */
	bool verifying = (SSL_get_verify_mode(conn->ssl) & SSL_VERIFY_PEER) != 0;
	long verify = SSL_get_verify_result(conn->ssl);
	const char *detail;

	if (verifying && verify != X509_V_OK) {
		detail = X509_verify_cert_error_string(verify);
		ERR_clear_error();
	} else {
		detail = tls_error_string("protocol error");
	}
	conn->tls_state = CONN_TLS_FAILED;
	if (conn->fail_reason == NULL)
		conn->fail_reason = mem_printf("%s: %s", what, detail);
	/* Closing here could re-enter conn_flush(); let the loop do it. */
	conn_schedule_deferred(conn);
}

/* conn_tls_feed - hand received ciphertext to OpenSSL */
static void conn_tls_feed(struct connection *conn, const unsigned char *data,
			  size_t len)
{
	if (BIO_write(conn->rbio, data, (int)len) != (int)len)
		log_fatal("%s: out of memory buffering TLS input", conn->id);
	conn_tls_process(conn);
}

/* conn_tls_handshake - advance the handshake */
static void conn_tls_handshake(struct connection *conn)
{
	int ret, err;

	ERR_clear_error();
	ret = SSL_do_handshake(conn->ssl);
	if (ret == 1) {
		conn->tls_state = CONN_TLS_ON;
		conn->tls_established = true;
		log_id_debug(conn->id, "TLS established: %s %s",
			     SSL_get_version(conn->ssl),
			     SSL_get_cipher_name(conn->ssl));
		if (conn->callbacks.tls_established != NULL) {
			conn->callback_depth++;
			conn->callbacks.tls_established(conn);
			conn->callback_depth--;
		}
		return;
	}
	err = SSL_get_error(conn->ssl, ret);
	if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
		conn_tls_fail(conn, "TLS handshake failed");
}

/* conn_tls_read_target - where decrypted bytes go, and how many fit */
static struct buffer *conn_tls_read_target(struct connection *conn,
					   size_t *room_r)
{
	if (conn->zlib != NULL) {
		/* Inflate what we hold first: it may make room. */
		conn_zlib_inflate(conn);
		*room_r = conn_zlib_in_room(conn);
		return &conn->zlib->in;
	}
	*room_r = buffer_room(&conn->input);
	if (*room_r > CONN_RECV_CHUNK)
		*room_r = CONN_RECV_CHUNK;
	return &conn->input;
}

/* conn_tls_read - decrypt into the input buffer (or, when compressed,
   into zlib->in) while it has room */
static void conn_tls_read(struct connection *conn)
{
	struct buffer *target;
	size_t room;
	int ret, err;

	while (conn->state == CONN_OPEN && conn->tls_state == CONN_TLS_ON &&
	       conn->fail_reason == NULL &&
	       (target = conn_tls_read_target(conn, &room)) != NULL &&
	       room > 0) {
		unsigned char *dest = buffer_reserve(target, room);

		ERR_clear_error();
		ret = SSL_read(conn->ssl, dest, (int)room);
		if (ret > 0) {
			buffer_commit(target, (size_t)ret);
			if (target == &conn->input)
				conn->input_new = true;
			continue;
		}
		err = SSL_get_error(conn->ssl, ret);
		if (err == SSL_ERROR_ZERO_RETURN)
			conn->read_eof = true;	/* close_notify */
		else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
			conn_tls_fail(conn, "TLS error");
		break;
	}
}

/* conn_tls_process - run OpenSSL on new input, send what it produced */
static void conn_tls_process(struct connection *conn)
{
	if (conn->tls_state == CONN_TLS_HANDSHAKE)
		conn_tls_handshake(conn);
	if (conn->tls_state == CONN_TLS_ON)
		conn_tls_read(conn);
	conn_flush(conn);
}

/* conn_tls_begin - switch to TLS now that earlier output is on the wire */
static void conn_tls_begin(struct connection *conn)
{
	if (conn->input.used > 0) {
		log_id_warn(conn->id, "discarding %zu bytes of plaintext input "
			    "received before TLS started", conn->input.used);
		buffer_reset(&conn->input);
	}
	conn->input_new = false;
	conn->tls_state = CONN_TLS_HANDSHAKE;
	if (tls_context_is_server(conn->tls))
		SSL_set_accept_state(conn->ssl);
	else
		SSL_set_connect_state(conn->ssl);
}

/* conn_tls_set_peer_name - SNI and, when verifying, the name to check */
static int conn_tls_set_peer_name(struct connection *conn, SSL *ssl,
				  const char *name)
{
	unsigned char addr[sizeof(struct in6_addr)];
	bool is_ip = inet_pton(AF_INET, name, addr) == 1 ||
		inet_pton(AF_INET6, name, addr) == 1;
	int verify = SSL_CTX_get_verify_mode(SSL_get_SSL_CTX(ssl));

	/* RFC 6066 3: SNI carries host names, never address literals. */
	if (!is_ip && SSL_set_tlsext_host_name(ssl, name) != 1)
		return -1;
	if ((verify & SSL_VERIFY_PEER) == 0)
		return 0;
	if (is_ip)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
	return SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

/* conn_tls_new_ssl - an SSL on two memory BIOs, or NULL (logged) */
static SSL *conn_tls_new_ssl(struct connection *conn, struct tls_context *tls,
			     const char *server_name)
{
	SSL *ssl;
	BIO *rbio, *wbio;

	ERR_clear_error();
	ssl = SSL_new(tls_context_ssl_ctx(tls));
	rbio = BIO_new(BIO_s_mem());
	wbio = BIO_new(BIO_s_mem());
	if (ssl == NULL || rbio == NULL || wbio == NULL) {
		log_id_error(conn->id, "cannot create TLS session: %s",
			     tls_error_string("out of memory"));
		SSL_free(ssl);
		BIO_free(rbio);
		BIO_free(wbio);
		return NULL;
	}
	/* An empty memory BIO must read as "no data yet", not as EOF. */
	BIO_set_mem_eof_return(rbio, -1);
	BIO_set_mem_eof_return(wbio, -1);
	SSL_set_bio(ssl, rbio, wbio);
	if (!tls_context_is_server(tls) && server_name != NULL &&
	    conn_tls_set_peer_name(conn, ssl, server_name) < 0) {
		log_id_error(conn->id, "cannot set TLS server name %s: %s",
			     server_name, tls_error_string("invalid name"));
		SSL_free(ssl);
		return NULL;
	}
	conn->rbio = rbio;
	conn->wbio = wbio;
	return ssl;
}

/* conn_tls_encrypt - turn queued plaintext into records in the wbio */
static void conn_tls_encrypt(struct connection *conn)
{
	size_t len = conn_tls_plain_pending(conn);
	int ret;

	if (len == 0)
		return;
	if (len > CONN_TLS_ENCRYPT_CHUNK)
		len = CONN_TLS_ENCRYPT_CHUNK;
	ERR_clear_error();
	ret = SSL_write(conn->ssl, conn->tls_plain.data + conn->tls_plain_off,
			(int)len);
	if (ret <= 0) {
		conn_tls_fail(conn, "TLS error");
		return;
	}
	conn->tls_plain_off += (size_t)ret;
	if (conn->tls_plain_off == conn->tls_plain.used) {
		buffer_reset(&conn->tls_plain);
		conn->tls_plain_off = 0;
		conn_shrink(&conn->tls_plain);
	} else if (conn->tls_plain_off > conn->tls_plain.used / 2) {
		/* Compact now and then instead of after every record. */
		buffer_consume(&conn->tls_plain, conn->tls_plain_off);
		conn->tls_plain_off = 0;
	}
}

/* conn_tls_drain_wbio - move OpenSSL's output into out_sending */
static void conn_tls_drain_wbio(struct connection *conn)
{
	size_t len = BIO_ctrl_pending(conn->wbio);
	unsigned char *dest;

	if (len == 0)
		return;
	dest = buffer_reserve(&conn->out_sending, len);
	if (dest == NULL || BIO_read(conn->wbio, dest, (int)len) != (int)len)
		log_panic("%s: cannot move %zu bytes of TLS output", conn->id, len);
	buffer_commit(&conn->out_sending, len);
}

/*
 * Output
 */

/* conn_next_output - refill out_sending once it has been sent entirely */
static void conn_next_output(struct connection *conn)
{
	buffer_reset(&conn->out_sending);
	conn->out_sent = 0;
	if (conn->out_queue.used > 0) {
		struct buffer tmp = conn->out_sending;

		conn->out_sending = conn->out_queue;
		conn->out_queue = tmp;
		return;
	}
	conn_shrink(&conn->out_sending);
	conn_shrink(&conn->out_queue);
	if (conn->zlib != NULL && conn->ssl == NULL) {
		conn_zlib_deflate(conn, &conn->out_sending);
		return;
	}
	if (conn->ssl == NULL || conn->tls_state == CONN_TLS_WAIT_FLUSH)
		return;
	if (conn->tls_state == CONN_TLS_ON) {
		/* Compressed bytes follow what is already in tls_plain
		   (e.g. the reply that started compression). */
		if (conn->zlib != NULL && conn_tls_plain_pending(conn) == 0)
			conn_zlib_deflate(conn, &conn->tls_plain);
		conn_tls_encrypt(conn);
	}
	/* close_notify goes after the last application data (and not at
	   all if encrypting just failed). */
	if (conn->tls_state == CONN_TLS_ON && conn->state == CONN_CLOSING &&
	    !conn->tls_shutdown_sent && conn_plain_pending(conn) == 0) {
		ERR_clear_error();
		(void)SSL_shutdown(conn->ssl);
		ERR_clear_error();
		conn->tls_shutdown_sent = true;
	}
	conn_tls_drain_wbio(conn);
}

/* conn_flush - send more unless a send is already in flight */
static void conn_flush(struct connection *conn)
{
	size_t len;

	if (conn->send_req.pending || conn->state >= CONN_TEARDOWN)
		return;
	if (conn->out_sent == conn->out_sending.used)
		conn_next_output(conn);
	len = conn->out_sending.used - conn->out_sent;
	if (len > 0)
		io_send(conn->loop, &conn->send_req, conn->fd,
			conn->out_sending.data + conn->out_sent, len);
}

/* conn_output_idle - everything sendable is sent: close, TLS or notify */
static void conn_output_idle(struct connection *conn)
{
	if (conn->state == CONN_CLOSING) {
		conn_close_finish(conn);
		return;
	}
	if (conn->state != CONN_OPEN)
		return;
	if (conn->tls_state == CONN_TLS_WAIT_FLUSH) {
		conn_schedule_deferred(conn);
		return;
	}
	if (conn_plain_pending(conn) > 0 || !conn->drained_wanted)
		return;
	conn->drained_wanted = false;
	if (conn->callbacks.output_drained != NULL) {
		conn->callback_depth++;
		conn->callbacks.output_drained(conn);
		conn->callback_depth--;
	}
}

/* conn_send_done - send completion: account, send more, or notice idle */
static void conn_send_done(struct io_request *req, int result)
{
	struct connection *conn = req->context;

	if (conn->state == CONN_OPEN || conn->state == CONN_CLOSING) {
		if (result < 0) {
			conn_fail(conn, "send", -result);
		} else if (result == 0) {
			connection_abort(conn, "send failed: no progress");
		} else {
			conn->out_sent += (size_t)result;
			conn->last_activity_msecs = ioloop_now_msecs();
			conn_flush(conn);
			if (!conn->send_req.pending)
				conn_output_idle(conn);
		}
	}
	conn_finish_if_done(conn);
}

/* conn_output_buffer - where len more plaintext bytes go, or NULL */
static struct buffer *conn_output_buffer(struct connection *conn, size_t len)
{
	if (conn->state != CONN_OPEN || len > connection_output_room(conn))
		return NULL;
	if (conn->zlib != NULL && conn->tls_state != CONN_TLS_FAILED)
		return &conn->zlib->plain;
	switch (conn->tls_state) {
	case CONN_TLS_OFF:
		return &conn->out_queue;
	case CONN_TLS_WAIT_FLUSH:
	case CONN_TLS_HANDSHAKE:
	case CONN_TLS_ON:
		return &conn->tls_plain;
	case CONN_TLS_FAILED:
		break;
	}
	return NULL;
}

/*
 * Input
 */

/* conn_update_recv - keep one recv in flight while input is wanted */
static void conn_update_recv(struct connection *conn)
{
	size_t len = CONN_RECV_CHUNK;

	if (conn->state != CONN_OPEN || conn->recv_req.pending ||
	    conn->read_eof || conn->input_paused || conn->fail_reason != NULL)
		return;
	switch (conn->tls_state) {
	case CONN_TLS_OFF:
		/* Never take more than the input buffer can hold (or,
		   compressed, than zlib->in may hold). */
		if (conn->zlib != NULL) {
			len = conn_zlib_in_room(conn);
			conn_shrink(&conn->zlib->in);
		} else if (buffer_room(&conn->input) < len)
			len = buffer_room(&conn->input);
		conn_shrink(&conn->input);
		break;
	case CONN_TLS_HANDSHAKE:
	case CONN_TLS_ON:
		/* Ciphertext OpenSSL could not decrypt yet (input full)
		   stays bounded: stop reading until it has been used. */
		if (BIO_ctrl_pending(conn->rbio) >= CONN_RECV_CHUNK)
			len = 0;
		break;
	case CONN_TLS_WAIT_FLUSH:	/* conn_tls_begin() decides */
	case CONN_TLS_FAILED:
		len = 0;
		break;
	}
	if (len > 0)
		io_recv(conn->loop, &conn->recv_req, conn->fd, conn->recv_buf, len);
}

/* conn_take_input - route received bytes by the TLS state */
static void conn_take_input(struct connection *conn, size_t len)
{
	switch (conn->tls_state) {
	case CONN_TLS_OFF:
		if (conn->zlib != NULL) {
			if (buffer_append(&conn->zlib->in, conn->recv_buf, len) < 0)
				log_panic("%s: unlimited buffer refused data",
					  conn->id);
			conn_zlib_inflate(conn);
			return;
		}
		if (buffer_append(&conn->input, conn->recv_buf, len) < 0)
			connection_close(conn, "input limit exceeded");
		else
			conn->input_new = true;
		return;
	case CONN_TLS_WAIT_FLUSH:
		if (!conn_output_is_idle(conn)) {
			/* Sent before the peer could have seen our reply:
			   not TLS, so an injection attempt or garbage. */
			log_id_warn(conn->id, "discarding %zu bytes of input "
				    "received while starting TLS", len);
			return;
		}
		conn_tls_begin(conn);
		conn_tls_feed(conn, conn->recv_buf, len);
		return;
	case CONN_TLS_HANDSHAKE:
	case CONN_TLS_ON:
		conn_tls_feed(conn, conn->recv_buf, len);
		return;
	case CONN_TLS_FAILED:
		return;
	}
}

/* conn_recv_done - recv completion: route bytes, run input, read on */
static void conn_recv_done(struct io_request *req, int result)
{
	struct connection *conn = req->context;

	if (conn->state == CONN_OPEN) {
		if (result < 0) {
			if (result != -ECANCELED)
				conn_fail(conn, "recv", -result);
		} else {
			if (result == 0)
				conn->read_eof = true;
			else {
				conn->last_activity_msecs = ioloop_now_msecs();
				conn_take_input(conn, (size_t)result);
			}
			conn_input_run(conn);
		}
	}
	conn_finish_if_done(conn);
}

/* conn_input_deliverable - may the input callback run now? */
static bool conn_input_deliverable(const struct connection *conn)
{
	return conn->state == CONN_OPEN && !conn->input_paused &&
		conn->input_new && conn->input.used > 0 &&
		(conn->tls_state == CONN_TLS_OFF || conn->tls_state == CONN_TLS_ON);
}

/* conn_input_end_checks - after delivery: full buffer or EOF closes */
static void conn_input_end_checks(struct connection *conn)
{
	bool usable = conn->tls_state == CONN_TLS_OFF ||
		conn->tls_state == CONN_TLS_ON;

	/* A TLS failure is about to close with its own, better reason. */
	if (conn->state != CONN_OPEN || conn->input_paused ||
	    conn->fail_reason != NULL)
		return;
	if (usable && conn->input.used > 0 && buffer_room(&conn->input) == 0) {
		/* The protocol saw a full buffer and could not use it. */
		connection_close(conn, "input limit exceeded");
	} else if (conn->read_eof) {
		connection_close(conn, conn->tls_state == CONN_TLS_HANDSHAKE ?
				 "TLS handshake failed: connection closed by peer" :
				 "closed by peer");
	}
}

/* conn_input_run - give new input to the protocol, then keep reading */
static void conn_input_run(struct connection *conn)
{
	if (conn->in_input)
		return;
	for (;;) {
		/* Room the protocol made (or a resume) may let OpenSSL hand
		   over plaintext it holds; nothing else would ask for it
		   once the rbio is full and reading has stopped. */
		if (conn->state == CONN_OPEN && conn->tls_state == CONN_TLS_ON)
			conn_tls_process(conn);
		else if (conn->state == CONN_OPEN && conn->zlib != NULL)
			conn_zlib_inflate(conn);
		if (!conn_input_deliverable(conn))
			break;
		conn->input_new = false;
		conn->in_input = true;
		conn->callback_depth++;
		conn->callbacks.input(conn);
		conn->callback_depth--;
		conn->in_input = false;
	}
	conn_input_end_checks(conn);
	conn_update_recv(conn);
}

/* conn_deferred_run - the loop's next-iteration step (see the essay) */
static void conn_deferred_run(void *context)
{
	struct connection *conn = context;

	conn->deferred_queued = false;
	if (conn->state == CONN_OPEN && conn->fail_reason != NULL) {
		connection_close(conn, conn->fail_reason);
	} else if (conn->state == CONN_OPEN) {
		if (conn->tls_state == CONN_TLS_WAIT_FLUSH &&
		    conn_output_is_idle(conn)) {
			conn_tls_begin(conn);
			conn_tls_process(conn);
		}
		conn_input_run(conn);
	}
	conn_finish_if_done(conn);
}

/*
 * Public API
 */

struct connection *connection_create(struct ioloop *loop, int fd,
				     const struct sockaddr *peer,
				     socklen_t peer_len,
				     const struct connection_settings *set,
				     const struct connection_callbacks *callbacks,
				     void *context)
{
	struct connection *conn;

	if (callbacks->input == NULL)
		log_panic("connection_create: the input callback is required");
	conn = mem_zalloc(sizeof(*conn));
	conn->id = mem_strdup(set->id != NULL ? set->id : "conn");
	conn->loop = loop;
	conn->fd = fd;
	conn->peer.ss_family = AF_UNSPEC;
	if (peer != NULL && peer_len > 0) {
		conn->peer_len = peer_len < sizeof(conn->peer) ? peer_len :
			sizeof(conn->peer);
		memcpy(&conn->peer, peer, conn->peer_len);
	}
	conn->set = *set;
	conn->set.id = conn->id;
	if (conn->set.input_limit == 0)
		conn->set.input_limit = CONN_DEFAULT_INPUT_LIMIT;
	if (conn->set.output_limit == 0)
		conn->set.output_limit = CONN_DEFAULT_OUTPUT_LIMIT;
	if (conn->set.close_timeout_msecs == 0)
		conn->set.close_timeout_msecs = CONN_DEFAULT_CLOSE_TIMEOUT_MSECS;
	conn->callbacks = *callbacks;
	conn->context = context;

	buffer_init(&conn->input, conn->set.input_limit);
	buffer_init(&conn->out_queue, 0);
	buffer_init(&conn->out_sending, 0);
	buffer_init(&conn->tls_plain, 0);
	io_request_init(&conn->recv_req, conn_recv_done, conn);
	io_request_init(&conn->send_req, conn_send_done, conn);
	io_request_init(&conn->timer_req, conn_timer_done, conn);
	conn->deferred.fn = conn_deferred_run;
	conn->deferred.context = conn;
	conn->last_activity_msecs = ioloop_now_msecs();

	conn->next = conn_list;
	if (conn_list != NULL)
		conn_list->prev = conn;
	conn_list = conn;
	conn_live_count++;

	conn_update_recv(conn);
	conn_timer_arm(conn);
	return conn;
}

void *connection_context(const struct connection *conn)
{
	return conn->context;
}

const char *connection_id(const struct connection *conn)
{
	return conn->id;
}

struct ioloop *connection_loop(const struct connection *conn)
{
	return conn->loop;
}

const struct sockaddr *connection_peer(const struct connection *conn)
{
	return (const struct sockaddr *)&conn->peer;
}

int connection_fd(const struct connection *conn)
{
	return conn->fd;
}

struct buffer *connection_input(struct connection *conn)
{
	return &conn->input;
}

int connection_write(struct connection *conn, const void *data, size_t len)
{
	struct buffer *dest;

	if (len == 0)
		return conn->state == CONN_OPEN ? 0 : -1;
	if ((dest = conn_output_buffer(conn, len)) == NULL)
		return -1;
	if (buffer_append(dest, data, len) < 0)
		log_panic("%s: unlimited output buffer refused data", conn->id);
	conn->drained_wanted = true;
	conn_flush(conn);
	return 0;
}

int connection_write_str(struct connection *conn, const char *str)
{
	return connection_write(conn, str, strlen(str));
}

int connection_printf(struct connection *conn, const char *fmt, ...)
{
	struct buffer *dest;
	va_list args, copy;
	int len;

	va_start(args, fmt);
	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		log_panic("%s: connection_printf: bad format '%s'", conn->id, fmt);
	dest = conn_output_buffer(conn, (size_t)len);
	if (dest != NULL && buffer_vprintf(dest, fmt, args) < 0)
		log_panic("%s: unlimited output buffer refused data", conn->id);
	va_end(args);
	if (dest == NULL)
		return -1;
	conn->drained_wanted = true;
	conn_flush(conn);
	return 0;
}

size_t connection_output_pending(const struct connection *conn)
{
	size_t pending = conn->out_sending.used - conn->out_sent +
		conn->out_queue.used + conn_plain_pending(conn);

	if (conn->wbio != NULL)
		pending += BIO_ctrl_pending(conn->wbio);
	return pending;
}

size_t connection_output_room(const struct connection *conn)
{
	size_t pending = connection_output_pending(conn);

	if (conn->state != CONN_OPEN || pending >= conn->set.output_limit)
		return 0;
	return conn->set.output_limit - pending;
}

void connection_pause_input(struct connection *conn)
{
	conn->input_paused = true;
}

void connection_resume_input(struct connection *conn)
{
	if (!conn->input_paused)
		return;
	conn->input_paused = false;
	if (conn->input.used > 0)
		conn->input_new = true;
	/* Never call the input callback from here: we may be inside it. */
	if (conn->state == CONN_OPEN)
		conn_schedule_deferred(conn);
}

int connection_start_tls(struct connection *conn, struct tls_context *tls,
			 const char *server_name)
{
	if (conn->tls_state != CONN_TLS_OFF || conn->state != CONN_OPEN ||
	    conn->zlib != NULL)
		return -1;
	conn->ssl = conn_tls_new_ssl(conn, tls, server_name);
	if (conn->ssl == NULL)
		return -1;
	tls_context_ref(tls);
	conn->tls = tls;
	conn->tls_state = CONN_TLS_WAIT_FLUSH;
	/* The switch itself happens in the deferred step (or when the send
	   of the "go ahead" completes): the caller may be in the middle of
	   parsing the input that this discards. */
	if (conn_output_is_idle(conn))
		conn_schedule_deferred(conn);
	return 0;
}

bool connection_is_tls(const struct connection *conn)
{
	return conn->tls_state != CONN_TLS_OFF;
}

const char *connection_tls_version(const struct connection *conn)
{
	return conn->tls_established ? SSL_get_version(conn->ssl) : NULL;
}

const char *connection_tls_cipher(const struct connection *conn)
{
	return conn->tls_established ? SSL_get_cipher_name(conn->ssl) : NULL;
}

/* conn_zlib_new - both streams ready, or NULL (logged) */
static struct conn_zlib *conn_zlib_new(struct connection *conn)
{
	struct conn_zlib *z = mem_zalloc(sizeof(*z));

	/* Negative windowBits: raw deflate, no zlib header or checksum. */
	if (inflateInit2(&z->inflater, -MAX_WBITS) != Z_OK) {
		log_id_error(conn->id, "cannot start decompression: %s",
			     z->inflater.msg != NULL ? z->inflater.msg : "zlib error");
		free(z);
		return NULL;
	}
	if (deflateInit2(&z->deflater, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
			 -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
		log_id_error(conn->id, "cannot start compression: %s",
			     z->deflater.msg != NULL ? z->deflater.msg : "zlib error");
		(void)inflateEnd(&z->inflater);
		free(z);
		return NULL;
	}
	buffer_init(&z->in, 0);
	buffer_init(&z->plain, 0);
	return z;
}

int connection_start_compress(struct connection *conn)
{
	if (conn->zlib != NULL || conn->state != CONN_OPEN ||
	    (conn->tls_state != CONN_TLS_OFF && conn->tls_state != CONN_TLS_ON))
		return -1;
	if ((conn->zlib = conn_zlib_new(conn)) == NULL)
		return -1;
	/* The peer compresses everything after the command that started
	   this, so unparsed input is compressed data. */
	if (conn->input.used > 0) {
		if (buffer_append(&conn->zlib->in, conn->input.data,
				  conn->input.used) < 0)
			log_panic("%s: unlimited buffer refused data", conn->id);
		buffer_reset(&conn->input);
		conn->input_new = false;
		/* Inflating it may call the input callback: not from here. */
		conn_schedule_deferred(conn);
	}
	return 0;
}

bool connection_is_compressed(const struct connection *conn)
{
	return conn->zlib != NULL;
}

void connection_close(struct connection *conn, const char *reason)
{
	if (conn->state != CONN_OPEN)
		return;
	conn_set_reason(conn, reason);
	conn->state = CONN_CLOSING;
	io_cancel(conn->loop, &conn->recv_req);
	conn->close_deadline = ioloop_now_msecs() + conn->set.close_timeout_msecs;
	/* An idle timer due later than the close deadline is replaced; its
	   completion re-arms for the close deadline. */
	if (conn->timer_req.pending && conn->timer_deadline > conn->close_deadline)
		io_cancel(conn->loop, &conn->timer_req);
	conn_timer_arm(conn);
	conn_flush(conn);
	if (!conn->send_req.pending)
		conn_close_finish(conn);
}

void connection_abort(struct connection *conn, const char *reason)
{
	if (conn->state >= CONN_TEARDOWN)
		return;
	conn_set_reason(conn, reason);
	conn_teardown(conn);
}

bool connection_is_closing(const struct connection *conn)
{
	return conn->state != CONN_OPEN;
}

unsigned int connection_count(void)
{
	return conn_live_count;
}

void connection_abort_all(const char *reason)
{
	struct connection *conn, *next;

	/* Aborting never frees synchronously, but take next first anyway. */
	for (conn = conn_list; conn != NULL; conn = next) {
		next = conn->next;
		connection_abort(conn, reason);
	}
}
