#ifndef CM_IMAP_H
#define CM_IMAP_H
/*
 * imap - the IMAP service as clustermaild sees it: start a session on an
 * accepted socket, and end them all when the server drains.
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

struct imap_session_settings {
	const char *id;			/* session id for logs; copied */
	const struct settings *set;	/* borrowed for the session's life */
	struct tls_context *tls;	/* borrowed; NULL: no TLS configured */
	bool implicit_tls;		/* imaps: handshake before the greeting */
	/* The process's store; NULL when the spool is unavailable (logins
	   then get "NO [UNAVAILABLE]"). Borrowed. */
	struct store *store;
	struct sio *sio;		/* the worker loop's sio; borrowed */
	/* Called once when the session is gone (after the connection
	   closed), with the disconnect reason: release what was borrowed. */
	void (*ended)(void *context, const char *reason);
	void *context;
};

/* Take over fd and run an IMAP session on loop (this thread's loop). */
void imap_session_start(struct ioloop *loop, int fd,
			const struct sockaddr *peer, socklen_t peer_len,
			const struct imap_session_settings *set);
/* Server drain: every session of this thread ends with "* BYE Server
   shutting down" when it is between commands (at once if idle, IDLE
   included; after the running command otherwise). */
void imap_sessions_shutdown(void);
/* user's mailbox changed (on any node): this thread's sessions in IDLE on
   it sync now instead of at their next poll. user "" = every IDLE
   session syncs (notifications may have been lost). */
void imap_sessions_mailbox_changed(const char *user, const char *mailbox);
/* End this thread's sessions of user (canonical address) with BYE, each
   when it is between commands; returns how many there were. */
unsigned int imap_sessions_kick_user(const char *user);
/* IDLE commands running now in this process (any thread). */
unsigned int imap_idle_sessions_total(void);
/* Is the daemon told about every change in the cluster (it is in the CPG
   group)? Then IDLE polls only as a safety net, every
   IMAP_IDLE_SAFETY_POLL_MSECS. The daemon sets this (any thread). */
#define IMAP_IDLE_SAFETY_POLL_MSECS 30000
void imap_set_notifications_active(bool active);
bool imap_notifications_active(void);
/* Sessions of this thread not yet freed. */
unsigned int imap_session_count(void);

#endif
