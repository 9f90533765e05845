#ifndef CM_SMTP_PRIVATE_H
#define CM_SMTP_PRIVATE_H
/*
 * smtp-private - the session state shared by the parts of the SMTP
 * engine: smtp-session.c (start, the command loop, error counting),
 * smtp-commands.c (every command but DATA/BDAT) and smtp-deliver.c
 * (message data: reading, the Received: header, delivery into the store
 * and the queue, the replies after the data).
 *
 * A transaction is MAIL, then RCPTs, then DATA or BDAT chunks. Each
 * accepted recipient is either local (a user of the users file: stored
 * directly) or remote (submission only: queued).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smtp.h"

struct buffer;
struct linesession;
struct smtp_data;

/* RFC 5321 4.5.3.1.4 says 512 octets for a command line; extensions
   (SMTPUTF8 addresses, DSN parameters, AUTH responses) need more. */
#define SMTP_LINE_MAX 4096
/* An address (RFC 5321 4.5.3.1.3: path up to 256 octets). */
#define SMTP_PATH_MAX 256
/* ENVID and ORCPT (RFC 3461: 100 and 500 characters, decoded). */
#define SMTP_ENVID_MAX 100
#define SMTP_ORCPT_MAX 500
/* AUTH: bytes of a decoded response. */
#define SMTP_AUTH_MAX 2048

enum smtp_body {
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
};

struct smtp_rcpt {
	char *address;		/* as given, without <> */
	char *user;		/* local: the users-file address; NULL remote */
	char *orcpt;		/* ORCPT as "type;decoded", or NULL */
	unsigned int notify;	/* QUEUE_NOTIFY_* */
};

struct smtp_client {
	struct linesession *ls;
	enum smtp_kind kind;
	const struct settings *set;	/* borrowed */
	struct store *store;		/* borrowed; NULL: spool unavailable */
	struct sio *sio;		/* borrowed */
	struct queue *queue;		/* borrowed; NULL: none */
	void (*queued)(void);
	const char *id;			/* session id for logs */
	bool trusted;			/* peer on trusted_networks */
	bool implicit_tls;

	char *helo;			/* owned; NULL before EHLO/HELO/LHLO */
	bool esmtp;			/* EHLO or LHLO */
	char *auth_user;		/* owned; canonical address after AUTH */
	unsigned int errors;		/* refused commands so far */
	unsigned int transactions;	/* for the Received: id */
	bool quit;

	/* The transaction. */
	bool in_mail;
	char *sender;			/* owned; "" = null sender */
	uint64_t declared_size;		/* SIZE=, 0 if not given */
	enum smtp_body body;
	bool smtputf8;
	int ret;			/* enum queue_ret */
	char *envid;			/* owned; decoded, or NULL */
	struct smtp_rcpt *rcpts;	/* owned */
	size_t rcpt_count, rcpt_alloc;
	struct smtp_data *data;		/* BDAT in progress; owned */
	bool bdat_failed;		/* a BDAT chunk failed: refuse the rest */
};

/* ---- smtp-session.c ----------------------------------------------------- */
/* "NNN text" + CRLF; a multi-line reply writes "NNN-" lines itself. */
int smtp_reply(struct smtp_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A refused command: the reply, then the error count (closing with 421
   when smtp_max_errors is reached). 0, or -1 when the session ends. */
int smtp_reply_error(struct smtp_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Forget the transaction (RSET, after DATA, EHLO). */
void smtp_transaction_reset(struct smtp_client *client);

/* ---- smtp-commands.c ---------------------------------------------------- */
/* Run one command line. 0 done, -1 the session ends. */
int smtp_command_run(struct smtp_client *client, const char *line, size_t len);

/* ---- smtp-deliver.c ----------------------------------------------------- */
/* DATA: read the message, deliver, reply. 0, or -1 the session ends. */
int smtp_data_run(struct smtp_client *client);
/* BDAT size [LAST]: read the chunk, deliver after LAST. */
int smtp_bdat_run(struct smtp_client *client, uint64_t size, bool last);
/* Drop a BDAT transaction in progress. */
void smtp_data_free(struct smtp_data **data);

/* The DATA decoder: removes dot-stuffing and finds the end of the data
   (only CRLF "." CRLF, see smtp-deliver.c). Start in DATA_LINE_START_CRLF;
   appends the message bytes to out and returns how many input bytes it
   used (fewer than len only once it reached DATA_END). */
enum smtp_dot_state {
	DATA_LINE_START_CRLF,	/* after CRLF (or at the start) */
	DATA_LINE_START_LF,	/* after a bare LF */
	DATA_DOT,		/* "." at a CRLF line start */
	DATA_DOT_CR,		/* ".\r" at a CRLF line start */
	DATA_MID,
	DATA_CR,		/* a CR, waiting for its LF */
	DATA_END,
};
size_t smtp_dot_decode(enum smtp_dot_state *state, struct buffer *out,
		       const unsigned char *data, size_t len);

/* ---- helpers (smtp-commands.c) ---------------------------------------- */
/* "user@domain" -> the domain part (after the last '@'), or "" */
const char *smtp_address_domain(const char *address);
/* Parse "<path>" at *pp (RFC 5321 4.1.2; <> only when allow_null;
   <postmaster> alone allowed). NULL with *addr_r (owned; without the
   brackets and any source route), *utf8_r and *pp after the '>', or the
   error reply ("501 5.1.3 ..."). */
const char *smtp_parse_path(const char **pp, bool allow_null, char **addr_r,
			    bool *utf8_r);
/* RFC 3461 xtext ("+XX" escapes); NULL when malformed or longer than max
   bytes decoded. */
char *smtp_xtext_decode(const char *in, size_t max);

#endif
