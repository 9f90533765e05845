#ifndef CM_POP3_H
#define CM_POP3_H
/*
 * pop3 - the POP3 service (RFC 1939, RFC 2449 CAPA and response codes,
 * RFC 2595 STLS, RFC 5034 SASL PLAIN) as clustermaild sees it: start a
 * session on an accepted socket, and end them all when the server drains.
 *
 * Sessions live on the worker loop (thread) that accepted them; the
 * functions below act on the calling thread's sessions only.
 */
#include <stdbool.h>
#include <sys/socket.h>

struct ioloop;
struct settings;
struct sio;
struct store;
struct tls_context;

struct pop3_session_settings {
	const char *id;			/* session id for logs; copied */
	const struct settings *set;	/* borrowed for the session's life */
	struct tls_context *tls;	/* borrowed; NULL: no TLS configured */
	bool implicit_tls;		/* pop3s: handshake before the greeting */
	/* The process's store; NULL when the spool is unavailable (logins
	   then get "-ERR [SYS/TEMP]"). Borrowed. */
	struct store *store;
	struct sio *sio;		/* the worker loop's sio; borrowed */
	/* Called once when the session is gone, with the disconnect reason. */
	void (*ended)(void *context, const char *reason);
	void *context;
};

/* Take over fd and run a POP3 session on loop (this thread's loop). */
void pop3_session_start(struct ioloop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			const struct pop3_session_settings *set);
/* Server drain: every session of this thread ends with "-ERR [SYS/TEMP]
   server shutting down" between commands (at once if it waits for a
   command, after the running one otherwise). Deletions marked with DELE
   are not applied (no UPDATE state without QUIT, RFC 1939 6). */
void pop3_sessions_shutdown(void);
/* Sessions of this thread not yet freed. */
unsigned int pop3_session_count(void);
/* End this thread's sessions logged in as user (canonical address) at
   their next command, "-ERR [SYS/TEMP]" and no UPDATE state (messages
   marked deleted stay). Returns how many. */
unsigned int pop3_sessions_kick_user(const char *user);

#endif
