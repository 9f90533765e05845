/*
 * listener.c - what happens to a freshly accepted client socket.
 *
 * Every protocol listener hands its sockets here. IMAP and IMAPS start an
 * IMAP session (protocols/imap/imap.h), POP3 and POP3S a POP3 session
 * (protocols/pop3/pop3.h), SMTP, submission, submissions and LMTP an
 * SMTP session (protocols/smtp/smtp.h); each holds a reference to the
 * configuration snapshot for its whole life.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/str.h"
#include "io/connection.h"
#include "io/ioloop.h"
#include "protocols/imap/imap.h"
#include "protocols/pop3/pop3.h"
#include "protocols/smtp/smtp.h"
#include "queue/runner.h"
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


/* listener_engine_ended - the protocol session is gone */
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

/* listener_smtp_start - hand the socket to the SMTP engine */
static void listener_smtp_start(struct ioloop *loop,
				struct listener_session *session, int fd,
				const struct sockaddr *peer, socklen_t peer_len)
{
	struct smtp_session_settings smtp_set = {
		.id = session->id,
		.kind = session->service == SETTINGS_SERVICE_LMTP ? SMTP_KIND_LMTP :
			session->service == SETTINGS_SERVICE_SMTP ? SMTP_KIND_SMTP :
			SMTP_KIND_SUBMISSION,
		.set = session->config->set,
		.tls = session->config->tls,
		.implicit_tls = settings_service_is_implicit_tls(session->service),
		.store = daemon_store(),
		.sio = worker_sio(),
		.queue = daemon_queue(),
		.queued = runner_kick,
		.ended = listener_engine_ended,
		.context = session,
	};

	smtp_session_start(loop, fd, peer, peer_len, &smtp_set);
}

void listener_session_start(struct ioloop *loop, enum settings_service service,
			    int fd, const struct sockaddr *peer,
			    socklen_t peer_len)
{
	struct listener_session *session = mem_zalloc(sizeof(*session));
	char addr[NET_ADDR_STRLEN];

	session->service = service;
	session->config = daemon_config_get();
	listener_session_id(service, session->id);
	metrics_connection_opened(service);
	log_id_info(session->id, "connect from %s",
		    peer != NULL ? net_addr_str(peer, addr) : "unknown");
	switch (service) {
	case SETTINGS_SERVICE_IMAP:
	case SETTINGS_SERVICE_IMAPS:
		listener_imap_start(loop, session, fd, peer, peer_len);
		return;
	case SETTINGS_SERVICE_POP3:
	case SETTINGS_SERVICE_POP3S:
		listener_pop3_start(loop, session, fd, peer, peer_len);
		return;
	case SETTINGS_SERVICE_SMTP:
	case SETTINGS_SERVICE_SUBMISSION:
	case SETTINGS_SERVICE_SUBMISSIONS:
	case SETTINGS_SERVICE_LMTP:
		listener_smtp_start(loop, session, fd, peer, peer_len);
		return;
	case SETTINGS_SERVICE_COUNT:
		break;
	}
	log_panic("listener_session_start: bad service %d", (int)service);
}
