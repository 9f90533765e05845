#ifndef CM_IMAP_COMMANDS_H
#define CM_IMAP_COMMANDS_H
/*
 * imap-commands - the one table of IMAP commands (imap-commands.c).
 *
 * Each command family lives in its own cmd-*.c. A handler runs inside the
 * session coroutine (see imap-client.h for its contract) and returns 0,
 * or -1 to end the session.
 */
#include <stdbool.h>

struct imap_command;

typedef int imap_command_handler_t(struct imap_command *cmd);

/* Valid in which states (at least one). */
#define IMAP_CMD_FLAG_NOT_AUTH		0x0001
#define IMAP_CMD_FLAG_AUTH		0x0002
#define IMAP_CMD_FLAG_SELECTED		0x0004
#define IMAP_CMD_FLAG_ANY_STATE	\
	(IMAP_CMD_FLAG_NOT_AUTH | IMAP_CMD_FLAG_AUTH | IMAP_CMD_FLAG_SELECTED)
/* Has a "UID <name>" form. */
#define IMAP_CMD_FLAG_UID		0x0010
/* Uses sequence numbers: no EXPUNGE may be sent while it runs, nor in
   the sync that follows it, unless it is the UID form (RFC 9051 7.5.1:
   FETCH, STORE, SEARCH). */
#define IMAP_CMD_FLAG_NO_EXPUNGE	0x0020
/* Reads its own arguments (APPEND: literals streamed to disk). */
#define IMAP_CMD_FLAG_STREAM_LITERAL	0x0040
/* Do not sync the selected mailbox after the command. */
#define IMAP_CMD_FLAG_NO_SYNC		0x0080

struct imap_command_def {
	const char *name;		/* upper case */
	imap_command_handler_t *handler;
	unsigned int flags;		/* IMAP_CMD_FLAG_* */
};

/* Look up a command name (case-insensitive); uid: the "UID x" form.
   NULL if unknown (or no UID form). */
const struct imap_command_def *imap_command_find(const char *name, bool uid);

/* cmd-auth.c (core): any state / not authenticated */
imap_command_handler_t cmd_capability, cmd_noop, cmd_logout, cmd_starttls,
	cmd_login, cmd_authenticate, cmd_id, cmd_enable;
/* cmd-select.c */
imap_command_handler_t cmd_select, cmd_examine;
/* cmd-mailbox.c */
imap_command_handler_t cmd_create, cmd_delete, cmd_rename, cmd_subscribe,
	cmd_unsubscribe, cmd_status, cmd_namespace;
/* cmd-list.c */
imap_command_handler_t cmd_list, cmd_lsub;
/* cmd-append.c */
imap_command_handler_t cmd_append;
/* cmd-expunge.c */
imap_command_handler_t cmd_check, cmd_close, cmd_unselect, cmd_expunge;
/* cmd-copy.c */
imap_command_handler_t cmd_copy, cmd_move;
/* cmd-store.c */
imap_command_handler_t cmd_store;
/* cmd-idle.c */
imap_command_handler_t cmd_idle;
/* cmd-fetch.c */
imap_command_handler_t cmd_fetch;
/* cmd-search.c */
imap_command_handler_t cmd_search;
/* cmd-sort.c (SORT, RFC 5256) and cmd-thread.c (THREAD, RFC 5256) */
imap_command_handler_t cmd_sort, cmd_thread;
/* cmd-acl.c (RFC 4314) */
imap_command_handler_t cmd_getacl, cmd_setacl, cmd_deleteacl, cmd_listrights,
	cmd_myrights;
/* cmd-quota.c (RFC 9208) */
imap_command_handler_t cmd_getquota, cmd_getquotaroot, cmd_setquota;
/* cmd-compress.c (COMPRESS=DEFLATE, RFC 4978) */
imap_command_handler_t cmd_compress;

/* The CAPABILITY list (without "CAPABILITY"), for the greeting, the
   CAPABILITY command and the OK after LOGIN; depends on the session
   (STARTTLS/LOGINDISABLED before TLS, AUTH= mechanisms...). Written into
   buf (at least 1024 bytes). */
struct imap_client;
void imap_capability_string(const struct imap_client *client, char *buf,
			    size_t size);

/* cmd-mailbox.c, shared with cmd-list.c (LIST-STATUS): STATUS items. */
#define STATUS_MESSAGES		0x01
#define STATUS_UIDNEXT		0x02
#define STATUS_UIDVALIDITY	0x04
#define STATUS_UNSEEN		0x08
#define STATUS_RECENT		0x10
#define STATUS_SIZE		0x20
#define STATUS_HIGHESTMODSEQ	0x40
#define STATUS_DELETED		0x80
#define STATUS_MAILBOXID	0x100	/* RFC 8474: not a number */
struct imap_arg;
/* Parse "(MESSAGES UNSEEN ...)" into STATUS_* bits; 0, or -1 = BAD. */
int cmd_status_parse_items(const struct imap_arg *arg, unsigned int *items_r);
/* Send "* STATUS name (...)"; 0, or -1 when the connection is gone. */
int cmd_status_send(struct imap_client *client, const char *name,
		    unsigned int items);

#endif
