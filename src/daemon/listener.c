/*
 * listener.c - what happens to a freshly accepted client socket.
 *
 * Every protocol listener hands its sockets here. IMAP and IMAPS start an
 * IMAP session (protocols/imap/imap.h), POP3 and POP3S a POP3 session
 * (protocols/pop3/pop3.h); each holds a reference to the configuration
 * snapshot for its whole life. Protocols that are not built yet get a
 * polite, protocol-correct refusal and the connection is closed: an
 * SMTP/LMTP 421 (a temporary code, so that a
 * sending MTA keeps the mail and retries instead of bouncing it). Implicit-TLS
 * listeners complete the TLS handshake first, so a client sees the refusal
 * inside TLS as it would a real greeting.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/str.h"
#include "io/connection.h"
#include "io/ioloop.h"
#include "protocols/imap/imap.h"
#include "protocols/pop3/pop3.h"
#include "daemon.h"

#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

struct listener_session {
	enum settings_service service;
	struct daemon_config *config;	/* reference held for the session */
	char id[32];
};

static atomic_uint_fast32_t listener_session_counter;
const char *listener_session_id(enum settings_service service, char out[32])
{
	uint32_t n = (uint32_t)atomic_fetch_add(&listener_session_counter, 1) + 1;

	snprintf(out, 32, "%s-%08x", settings_service_name(service), n);
	return out;
}

/* listener_refusal - the "not implemented" greeting of a service */
static const char *listener_refusal(enum settings_service service)
{
	switch (service) {
	case SETTINGS_SERVICE_LMTP:
		return "421 4.3.2 clustermail: the LMTP service is not implemented yet\r\n";
	case SETTINGS_SERVICE_SMTP:
	case SETTINGS_SERVICE_SUBMISSION:
	case SETTINGS_SERVICE_SUBMISSIONS:
		return "421 4.3.2 clustermail: the SMTP service is not implemented yet\r\n";
	case SETTINGS_SERVICE_IMAP:	/* served: listener_imap_start() */
	case SETTINGS_SERVICE_IMAPS:
	case SETTINGS_SERVICE_POP3:	/* served: listener_pop3_start() */
	case SETTINGS_SERVICE_POP3S:
	case SETTINGS_SERVICE_COUNT:
		break;
	}
	log_panic("listener_refusal: bad service %d", (int)service);
}

/* listener_refuse - send the refusal and close */
static void listener_refuse(struct connection *conn)
{
	struct listener_session *session = connection_context(conn);

	(void)connection_write_str(conn, listener_refusal(session->service));
	connection_close(conn, "service not implemented");
}

static void listener_input(struct connection *conn)
{
	/* Nothing is read from a refused client; drop what it sent. */
	buffer_reset(connection_input(conn));
}

static void listener_tls_established(struct connection *conn)
{
	listener_refuse(conn);
}

static void listener_destroyed(struct connection *conn, const char *reason)
{
	struct listener_session *session = connection_context(conn);

	if (str_begins_with(reason, "TLS handshake failed"))
		metrics_tls_handshake_failed(session->service);
	log_id_debug(session->id, "disconnected: %s", reason);
	metrics_connection_closed(session->service);
	daemon_config_put(&session->config);
	free(session);
}

static const struct connection_callbacks listener_callbacks = {
	.input = listener_input,
	.tls_established = listener_tls_established,
	.destroyed = listener_destroyed,
};

/* listener_engine_ended - the IMAP or POP3 session is gone */
static void listener_engine_ended(void *context, const char *reason)
{
	struct listener_session *session = context;

	if (str_begins_with(reason, "TLS handshake failed"))
		metrics_tls_handshake_failed(session->service);
	metrics_connection_closed(session->service);
	daemon_config_put(&session->config);
	free(session);
}

/* listener_imap_start - hand the socket to the IMAP engine */
static void listener_imap_start(struct ioloop *loop,
				struct listener_session *session, int fd,
				const struct sockaddr *peer, socklen_t peer_len)
{
	struct imap_session_settings imap_set = {
		.id = session->id,
		.set = session->config->set,
		.tls = session->config->tls,
		.implicit_tls = settings_service_is_implicit_tls(session->service),
		.store = daemon_store(),
		.sio = worker_sio(),
		.ended = listener_engine_ended,
		.context = session,
	};

	imap_session_start(loop, fd, peer, peer_len, &imap_set);
}

/* listener_pop3_start - hand the socket to the POP3 engine */
static void listener_pop3_start(struct ioloop *loop,
				struct listener_session *session, int fd,
				const struct sockaddr *peer, socklen_t peer_len)
{
	struct pop3_session_settings pop3_set = {
		.id = session->id,
		.set = session->config->set,
		.tls = session->config->tls,
		.implicit_tls = settings_service_is_implicit_tls(session->service),
		.store = daemon_store(),
		.sio = worker_sio(),
		.ended = listener_engine_ended,
		.context = session,
	};

	pop3_session_start(loop, fd, peer, peer_len, &pop3_set);
}

void listener_session_start(struct ioloop *loop, enum settings_service service,
			    int fd, const struct sockaddr *peer,
			    socklen_t peer_len)
{
	struct listener_session *session = mem_zalloc(sizeof(*session));
	struct connection_settings conn_set = {
		.idle_timeout_msecs = 60 * 1000,
		.close_timeout_msecs = 10 * 1000,
	};
	struct connection *conn;
	char addr[NET_ADDR_STRLEN];

	session->service = service;
	session->config = daemon_config_get();
	listener_session_id(service, session->id);
	conn_set.id = session->id;
	metrics_connection_opened(service);
	log_id_info(session->id, "connect from %s",
		    peer != NULL ? net_addr_str(peer, addr) : "unknown");
	if (service == SETTINGS_SERVICE_IMAP || service == SETTINGS_SERVICE_IMAPS) {
		listener_imap_start(loop, session, fd, peer, peer_len);
		return;
	}
	if (service == SETTINGS_SERVICE_POP3 || service == SETTINGS_SERVICE_POP3S) {
		listener_pop3_start(loop, session, fd, peer, peer_len);
		return;
	}
	conn = connection_create(loop, fd, peer, peer_len, &conn_set,
				 &listener_callbacks, session);
	if (!settings_service_is_implicit_tls(service)) {
		listener_refuse(conn);
		return;
	}
	/* settings_load() refuses implicit TLS listeners without a
	   certificate, and main.c refuses to start without loading it. */
	if (session->config->tls == NULL)
		log_panic("%s: implicit TLS listener without a TLS context", session->id);
	(void)connection_start_tls(conn, session->config->tls, NULL);
}
