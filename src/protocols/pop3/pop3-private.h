#ifndef CM_POP3_PRIVATE_H
#define CM_POP3_PRIVATE_H
/*
 * pop3-private - the client struct shared by the session (pop3-session.c:
 * POP3 on top of the line-session engine, linesession.h) and the commands
 * (pop3-commands.c).
 *
 * The maildrop snapshot: at login INBOX is synced once and its records
 * are copied into msgs[]; message number n is msgs[n - 1] for the whole
 * session (RFC 1939: numbers never change inside a session). The view
 * (box) is not synced again, so deliveries during the session stay
 * invisible; a message another session expunged meanwhile is detected
 * when its file cannot be opened (RETR/TOP answer -ERR).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/buffer.h"

struct linesession;
struct mailbox;
struct settings;
struct store;
struct store_user;
struct tls_context;
struct pop3_session;

/* RFC 2449 4: a command line is at most 255 octets including CRLF. */
#define POP3_LINE_MAX 255
/* SASL continuation lines (base64 of a PLAIN response) may be longer. */
#define POP3_SASL_LINE_MAX 2048
/* RFC 1939 3: the autologout timer is at least 10 minutes. */
#define POP3_AUTOLOGOUT_MSECS (10 * 60 * 1000)
/* Invalid commands in a row before the session is closed. */
#define POP3_BAD_COMMANDS_MAX 10

enum pop3_state {
	POP3_STATE_AUTHORIZATION,
	POP3_STATE_TRANSACTION,
	POP3_STATE_DONE,		/* QUIT answered: close */
};

struct pop3_message {
	uint32_t uid;
	uint64_t vsize;			/* RFC822.SIZE: CRLF line ends */
	bool deleted;			/* DELE'd in this session */
};

struct pop3_client {
	struct linesession *ls;		/* the engine; set when run() starts */
	const struct settings *set;	/* borrowed */
	struct tls_context *tls;	/* borrowed; NULL: no TLS configured */
	struct store *store;		/* borrowed; NULL: spool unavailable */
	struct sio *sio;		/* the loop's sio; borrowed */
	const char *id;			/* session id for log lines */
	char peer_ip[64];
	bool trusted;			/* peer on trusted_networks */
	enum pop3_state state;

	char *user_arg;			/* owned; USER's argument */
	char *user;			/* owned; canonical address after login */
	struct store_user *store_user;	/* owned */
	struct mailbox *box;		/* owned; INBOX */
	uint32_t uidvalidity;
	struct pop3_message *msgs;	/* owned snapshot */
	uint32_t msg_count;
};

/* ---- session (pop3-session.c) ----------------------------------------- */
/* Raw output; yields while the output buffer is full. 0, or -1 dead. */
int pop3_client_write(struct pop3_client *client, const void *data,
		      size_t len);
/* Formatted text + CRLF. */
int pop3_client_reply(struct pop3_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Write the line and close the connection; returns -1. */
int pop3_client_close(struct pop3_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Read one line (CRLF or a bare LF stripped, NUL-terminated, owned by
   the session until the next read). Returns 1, 0 when it was longer than
   max octets with its line end (it was discarded), -1 when the session
   ends (connection gone, autologout, drain). */
int pop3_client_read_line(struct pop3_client *client, size_t max,
			  const char **line_r);
/* STLS: begin TLS after the output written so far. 0 or -1. */
int pop3_client_start_tls(struct pop3_client *client);
bool pop3_client_is_tls(const struct pop3_client *client);
/* May the client send a password now (TLS, or a trusted peer)? */
bool pop3_client_login_allowed(const struct pop3_client *client);

/* ---- commands (pop3-commands.c) --------------------------------------- */
/* Run one command line. Returns 1 (done, valid), 0 (done, counted as a
   bad command), -1 (the session ends). */
int pop3_command_run(struct pop3_client *client, const char *line);
/* Release the snapshot, the mailbox and the spool (in the coroutine). */
void pop3_client_cleanup(struct pop3_client *client);

#endif
