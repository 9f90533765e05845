#ifndef CM_SMTP_H
#define CM_SMTP_H
/*
 * smtp - one SMTP engine for three services, as clustermaild sees it:
 *   SMTP        inbound mail for local_domains (RFC 5321), port 25
 *   submission  mail from authenticated users (RFC 6409; RFC 8314 for
 *               the implicit-TLS port): AUTH required, the envelope
 *               sender must be the user's own address, local recipients
 *               are delivered at once, the rest is queued for relay
 *   LMTP        delivery from an MTA (RFC 2033): one reply per recipient
 *
 * Sessions live on the worker loop (thread) that accepted them; the
 * functions below act on the calling thread's sessions only.
 */
#include <stdbool.h>
#include <sys/socket.h>

struct ioloop;
struct queue;
struct settings;
struct sio;
struct store;
struct tls_context;

enum smtp_kind {
	SMTP_KIND_SMTP,
	SMTP_KIND_SUBMISSION,
	SMTP_KIND_LMTP,
};

struct smtp_session_settings {
	const char *id;			/* session id for logs; copied */
	enum smtp_kind kind;
	const struct settings *set;	/* borrowed for the session's life */
	struct tls_context *tls;	/* borrowed; NULL: no TLS configured */
	bool implicit_tls;		/* submissions: TLS before the greeting */
	struct store *store;		/* borrowed; NULL: spool unavailable */
	struct sio *sio;		/* the worker loop's sio; borrowed */
	struct queue *queue;		/* borrowed; NULL: no outbound queue */
	/* Wake the queue runner after a message was queued (may be NULL). */
	void (*queued)(void);
	/* Called once when the session is gone, with the disconnect reason. */
	void (*ended)(void *context, const char *reason);
	void *context;
};

/* Take over fd and run a session on loop (this thread's loop). */
void smtp_session_start(struct ioloop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			const struct smtp_session_settings *set);
/* Server drain: sessions waiting for a command get "421 4.3.2" and end;
   a transaction in progress finishes first. */
void smtp_sessions_shutdown(void);
/* Sessions of this thread not yet freed. */
unsigned int smtp_session_count(void);
/* End this thread's sessions authenticated as user (submission) at their
   next command, with a 421. Returns how many. */
unsigned int smtp_sessions_kick_user(const char *user);

#endif
