#ifndef CM_IMAP_CLIENT_H
#define CM_IMAP_CLIENT_H
/*
 * imap-client - one IMAP session, and the API command handlers use.
 *
 * Each session runs as a coroutine (io/coro.h) on its worker's loop: it
 * reads a command, runs its handler, and the handler is straight-line code
 * that may call the store (whose I/O yields inside the coroutine), write
 * output (which yields while the output buffer is full: a slow reader
 * stalls only its own session, and memory stays bounded), and read more
 * input (APPEND's literal, IDLE's DONE).
 *
 * A command's life (imap-client.c):
 *   1. tag and name are read; the table entry is found (imap-commands.h);
 *      state checks (NOT_AUTH/AUTH/SELECTED) done there.
 *   2. unless the command streams (IMAP_CMD_FLAG_STREAM_LITERAL), all its
 *      arguments are read: cmd->args.
 *   3. the handler runs. It sends untagged responses itself and sets the
 *      tagged reply with imap_command_ok/no/bad() (exactly once; a handler
 *      that sets none gets "NO [SERVERBUG]").
 *   4. if a mailbox is selected, imap_sync() runs (EXPUNGE suppressed for
 *      commands flagged IMAP_CMD_FLAG_NO_EXPUNGE unless cmd->uid), so
 *      untagged EXISTS/EXPUNGE/FETCH updates come before the tagged reply.
 *   5. the tagged reply is written.
 *
 * Handlers return 0, or -1 when the session must end (connection gone or
 * a BYE was sent); the tagged reply is then not written.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "imap-parser.h"

struct connection;
struct imap_client;
struct imap_command;
struct mailbox;
struct settings;
struct store;
struct store_user;
struct tls_context;

enum imap_client_state {
	IMAP_STATE_NOT_AUTH,
	IMAP_STATE_AUTH,
	IMAP_STATE_SELECTED,
	IMAP_STATE_LOGOUT,
};

/* ENABLE-d extensions (RFC 5161) and client modes. */
#define IMAP_ENABLED_UTF8	0x01	/* UTF8=ACCEPT */
#define IMAP_ENABLED_CONDSTORE	0x02
#define IMAP_ENABLED_QRESYNC	0x04
#define IMAP_ENABLED_REV2	0x08	/* IMAP4rev2 */

struct imap_client {
	struct connection *conn;	/* owned by the session */
	const struct settings *set;	/* borrowed, valid for the session */
	struct tls_context *tls;	/* borrowed; NULL when no TLS configured */
	struct store *store;		/* borrowed */
	const char *id;			/* session id for log lines */
	char peer_ip[64];		/* client address as text */
	bool trusted;			/* peer on trusted_networks */

	enum imap_client_state state;
	unsigned int enabled;		/* IMAP_ENABLED_* */

	/* AUTH and SELECTED: */
	char *user;			/* owned; canonical address */
	struct store_user *store_user;	/* owned */

	/* SELECTED: */
	struct mailbox *box;		/* owned */
	bool box_readonly;		/* EXAMINE, or no write rights */
	/* Messages the client has been told about (EXISTS count); the view
	   may be ahead only between a sync and its reporting (imap-sync.c
	   keeps these equal after each command). */
	uint32_t exists_reported;
	/* SEARCHRES (RFC 5182): the saved result "$", UIDs ascending. */
	uint32_t *search_saved;		/* owned */
	size_t search_saved_count;
	bool search_saved_valid;
	/* CONDSTORE: HIGHESTMODSEQ reporting is on for this mailbox. */
	bool condstore_active;

	/* Set by commands, used by the session loop. */
	bool idling;			/* inside IDLE (no idle timeout) */
};

struct imap_command {
	struct imap_client *client;	/* borrowed */
	const char *tag;		/* owned by the session */
	const char *name;		/* upper case, without "UID " */
	bool uid;			/* UID FETCH, UID STORE, ... */
	/* All arguments, ending with EOL; NULL for streaming commands. */
	const struct imap_arg *args;
	const struct imap_command_def *def;	/* the table entry */
	/* The tagged reply set by imap_command_ok/no/bad (owned). */
	char *reply;
};

/* ---- tagged replies (set now, written after the post-command sync) ---- */
/* "tag OK text" e.g. imap_command_ok(cmd, "[READ-WRITE] SELECT completed") */
void imap_command_ok(struct imap_command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void imap_command_no(struct imap_command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void imap_command_bad(struct imap_command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* NO with the store's error mapped to a response code: NOTFOUND ->
   [NONEXISTENT] (or [TRYCREATE] when trycreate), EXISTS ->
   [ALREADYEXISTS], OVERQUOTA -> [OVERQUOTA], LIMIT -> [LIMIT], TEMP ->
   [UNAVAILABLE], NOPERM -> [NOPERM], CANNOT -> [CANNOT], CORRUPT ->
   [CORRUPTION], BADNAME -> [CANNOT]; text: store_user_error(). */
void imap_command_store_error(struct imap_command *cmd, int store_result,
			      bool trycreate);

/* ---- output (these yield while the output buffer is full) ------------- */
/* Raw bytes; returns 0, or -1 when the connection is gone. Any size:
   large data is written in pieces as the client reads. */
int imap_client_write(struct imap_client *client, const void *data,
		      size_t len);
/* Formatted text (no CRLF added). */
int imap_client_printf(struct imap_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "* " + formatted text + CRLF. */
int imap_client_untagged(struct imap_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Close the session after writing "* BYE text". Returns -1 (for
   "return imap_client_bye(...)"). */
int imap_client_bye(struct imap_client *client, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- input beyond the pre-parsed arguments ----------------------------- */
/* Streaming commands (IMAP_CMD_FLAG_STREAM_LITERAL): the next top-level
   argument. Returns 1 with *arg_r (an EOL arg at the end of the line),
   0 on a syntax error (the line was skipped; reply BAD), -1 when the
   connection is gone. A literal comes back as IMAP_ARG_LITERAL_STREAM:
   decide, then either imap_command_literal_begin() and read it all, or
   reply NO/BAD (the session discards the rest of the command: the
   client does not send a refused synchronizing literal; a
   non-synchronizing one is read and dropped, or the session ends with
   BYE if it is over the append limit). */
int imap_command_next_arg(struct imap_command *cmd,
			  const struct imap_arg **arg_r);
/* (*arg_r is a copy that stays valid for the next 15 calls; the strings
   and lists it points to live until the command ends.) */
/* Accept the streamed literal: sends "+ OK" for a synchronizing one. */
int imap_command_literal_begin(struct imap_command *cmd);
/* Read up to size bytes of the literal; returns bytes read (0 = all of
   it has been read), -1 when the connection is gone. */
ssize_t imap_command_literal_read(struct imap_command *cmd, void *buf,
				  size_t size);

/* Send "+ text" and read one line (AUTHENTICATE continuation, IDLE's
   DONE). Returns the line without CRLF (owned by the session, valid
   until the next read), or NULL when the connection is gone. In IDLE,
   the wait ends early every poll_msecs (if non-zero) with
   *timed_out_r = true so the caller can sync; it then calls
   imap_client_read_line() again (without sending another "+"). */
const char *imap_client_continue(struct imap_client *client,
				 const char *text);
const char *imap_client_read_line(struct imap_client *client,
				  uint64_t poll_msecs, bool *timed_out_r);

/* ---- session state ----------------------------------------------------- */
/* Close the selected mailbox (no expunge) and return to AUTH. */
void imap_client_unselect(struct imap_client *client);
/* The store error text of the session's user. */
const char *imap_client_store_error(struct imap_client *client);

/* ---- added by the session core ----------------------------------------- */
struct sio;
/* The sio of the session's worker loop (for store_user_open()). */
struct sio *imap_client_sio(struct imap_client *client);
/* The server is draining: long-running commands (IDLE) should end. */
bool imap_client_is_shutting_down(struct imap_client *client);
/* The handler wrote the tagged reply itself (STARTTLS must, before
   TLS starts): the session writes none. */
void imap_command_reply_written(struct imap_command *cmd);
/* STARTTLS: begin TLS once the output written so far has been sent.
   Returns 0, or -1 (no TLS configured, already on, connection gone). */
int imap_client_start_tls(struct imap_client *client);
/* Is the connection TLS (or becoming TLS)? */
bool imap_client_is_tls(const struct imap_client *client);
/* May the client log in now (TLS, or a trusted peer)? (imap-commands.c) */
bool imap_client_login_allowed(const struct imap_client *client);

#endif
