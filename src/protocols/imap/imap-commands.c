/*
 * imap-commands.c - the one IMAP command table, and the CAPABILITY list.
 *
 * Flags say in which states a command is valid, whether it has a UID
 * form, whether expunges must be held back while it runs (sequence-number
 * commands, RFC 9051 7.5.1), whether it reads its own arguments, and
 * whether the session syncs the selected mailbox after it. Commands that
 * close or replace the selected mailbox (SELECT, EXAMINE, CLOSE, UNSELECT,
 * LOGOUT) are NO_SYNC: the sync would report on a mailbox the client just
 * left (SELECT sends its own state); NOOP/CHECK/IDLE sync themselves or
 * through the session.
 *
 * Capabilities come from a table too: each entry has a condition
 * (always, before/after login, TLS state). Adding an extension is adding
 * a line here (and its handler).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "imap-client.h"
#include "imap-commands.h"

#include <stdio.h>
#include <strings.h>

#define F_ANY IMAP_CMD_FLAG_ANY_STATE
#define F_NA IMAP_CMD_FLAG_NOT_AUTH
#define F_AS (IMAP_CMD_FLAG_AUTH | IMAP_CMD_FLAG_SELECTED)
#define F_SEL IMAP_CMD_FLAG_SELECTED
#define F_UID IMAP_CMD_FLAG_UID
#define F_NOEXP IMAP_CMD_FLAG_NO_EXPUNGE
#define F_STREAM IMAP_CMD_FLAG_STREAM_LITERAL
#define F_NOSYNC IMAP_CMD_FLAG_NO_SYNC

static const struct imap_command_def imap_commands[] = {
	/* any state */
	{ "CAPABILITY", cmd_capability, F_ANY },
	{ "NOOP", cmd_noop, F_ANY },
	{ "LOGOUT", cmd_logout, F_ANY | F_NOSYNC },
	{ "ID", cmd_id, F_ANY },
	/* not authenticated */
	{ "STARTTLS", cmd_starttls, F_NA },
	{ "LOGIN", cmd_login, F_NA },
	{ "AUTHENTICATE", cmd_authenticate, F_NA },
	/* authenticated */
	{ "ENABLE", cmd_enable, F_AS },
	{ "SELECT", cmd_select, F_AS | F_NOSYNC },
	{ "EXAMINE", cmd_examine, F_AS | F_NOSYNC },
	{ "CREATE", cmd_create, F_AS },
	{ "DELETE", cmd_delete, F_AS },
	{ "RENAME", cmd_rename, F_AS },
	{ "SUBSCRIBE", cmd_subscribe, F_AS },
	{ "UNSUBSCRIBE", cmd_unsubscribe, F_AS },
	{ "LIST", cmd_list, F_AS },
	{ "LSUB", cmd_lsub, F_AS },
	{ "STATUS", cmd_status, F_AS },
	{ "NAMESPACE", cmd_namespace, F_AS },
	{ "APPEND", cmd_append, F_AS | F_STREAM },
	{ "IDLE", cmd_idle, F_AS },
	/* selected */
	{ "CHECK", cmd_check, F_SEL },
	{ "CLOSE", cmd_close, F_SEL | F_NOSYNC },
	{ "UNSELECT", cmd_unselect, F_SEL | F_NOSYNC },
	{ "EXPUNGE", cmd_expunge, F_SEL | F_UID },
	{ "FETCH", cmd_fetch, F_SEL | F_UID | F_NOEXP },
	{ "STORE", cmd_store, F_SEL | F_UID | F_NOEXP },
	{ "SEARCH", cmd_search, F_SEL | F_UID | F_NOEXP },
	{ "COPY", cmd_copy, F_SEL | F_UID },
	{ "MOVE", cmd_move, F_SEL | F_UID },
	{ "SORT", cmd_sort, F_SEL | F_UID | F_NOEXP },
	{ "THREAD", cmd_thread, F_SEL | F_UID | F_NOEXP },
	/* ACL (RFC 4314) and QUOTA (RFC 9208) */
	{ "GETACL", cmd_getacl, F_AS },
	{ "SETACL", cmd_setacl, F_AS },
	{ "DELETEACL", cmd_deleteacl, F_AS },
	{ "LISTRIGHTS", cmd_listrights, F_AS },
	{ "MYRIGHTS", cmd_myrights, F_AS },
	{ "GETQUOTA", cmd_getquota, F_AS },
	{ "GETQUOTAROOT", cmd_getquotaroot, F_AS },
	{ "SETQUOTA", cmd_setquota, F_AS },
	/* COMPRESS (RFC 4978) */
	{ "COMPRESS", cmd_compress, F_AS },
};

const struct imap_command_def *imap_command_find(const char *name, bool uid)
{
	for (size_t i = 0; i < N_ELEMENTS(imap_commands); i++) {
		const struct imap_command_def *def = &imap_commands[i];

		if (strcasecmp(def->name, name) != 0)
			continue;
		if (uid && (def->flags & IMAP_CMD_FLAG_UID) == 0)
			return NULL;
		return def;
	}
	return NULL;
}

/* ---- capabilities ------------------------------------------------------ */

enum cap_when {
	CAP_ALWAYS,
	CAP_LOGIN_ALLOWED,	/* AUTH=...: login possible now */
	CAP_LOGIN_DISABLED,	/* LOGINDISABLED */
	CAP_STARTTLS,		/* TLS configured, not on, not logged in */
	CAP_APPENDLIMIT,	/* value from the settings */
};

struct imap_capability {
	const char *name;
	enum cap_when when;
};

static const struct imap_capability imap_capabilities[] = {
	{ "IMAP4rev1", CAP_ALWAYS },
	/* RFC 9051; ENABLE IMAP4rev2 switches the session (cmd-auth.c) */
	{ "IMAP4rev2", CAP_ALWAYS },
	{ "STARTTLS", CAP_STARTTLS },
	{ "LOGINDISABLED", CAP_LOGIN_DISABLED },
	{ "AUTH=PLAIN", CAP_LOGIN_ALLOWED },
	{ "AUTH=LOGIN", CAP_LOGIN_ALLOWED },
	{ "SASL-IR", CAP_ALWAYS },
	/* LITERAL+ includes LITERAL- (RFC 7888), which IMAP4rev2 needs:
	   RFC 7888 lets a server announce only one of the two */
	{ "LITERAL+", CAP_ALWAYS },
	/* RFC 3516: FETCH BINARY and APPEND of literal8 */
	{ "BINARY", CAP_ALWAYS },
	{ "ID", CAP_ALWAYS },
	{ "ENABLE", CAP_ALWAYS },
	{ "IDLE", CAP_ALWAYS },
	{ "NAMESPACE", CAP_ALWAYS },
	{ "UIDPLUS", CAP_ALWAYS },
	{ "MOVE", CAP_ALWAYS },
	{ "UNSELECT", CAP_ALWAYS },
	{ "CHILDREN", CAP_ALWAYS },
	{ "ESEARCH", CAP_ALWAYS },
	{ "SEARCHRES", CAP_ALWAYS },
	{ "WITHIN", CAP_ALWAYS },
	{ "CONDSTORE", CAP_ALWAYS },
	{ "QRESYNC", CAP_ALWAYS },
	{ "COMPRESS=DEFLATE", CAP_ALWAYS },
	{ "SORT", CAP_ALWAYS },
	{ "SORT=DISPLAY", CAP_ALWAYS },
	{ "THREAD=ORDEREDSUBJECT", CAP_ALWAYS },
	{ "THREAD=REFERENCES", CAP_ALWAYS },
	{ "LIST-EXTENDED", CAP_ALWAYS },
	{ "LIST-STATUS", CAP_ALWAYS },
	{ "SPECIAL-USE", CAP_ALWAYS },
	{ "STATUS=SIZE", CAP_ALWAYS },
	{ "APPENDLIMIT", CAP_APPENDLIMIT },
	{ "UTF8=ACCEPT", CAP_ALWAYS },
	/* RFC 4314; RIGHTS= lists the rights beyond RFC 2086's */
	{ "ACL", CAP_ALWAYS },
	{ "RIGHTS=texk", CAP_ALWAYS },
	/* RFC 9208; no QUOTASET: SETQUOTA is always refused */
	{ "QUOTA", CAP_ALWAYS },
	{ "QUOTA=RES-STORAGE", CAP_ALWAYS },
	{ "QUOTA=RES-MESSAGE", CAP_ALWAYS },
	/* RFC 8514 and RFC 8474 */
	{ "SAVEDATE", CAP_ALWAYS },
	{ "OBJECTID", CAP_ALWAYS },
};

bool imap_client_login_allowed(const struct imap_client *client)
{
	return client->trusted || imap_client_is_tls(client);
}

/* capability_wanted - does this capability apply to the session now? */
static bool capability_wanted(const struct imap_client *client,
			      enum cap_when when)
{
	bool not_auth = client->state == IMAP_STATE_NOT_AUTH;

	switch (when) {
	case CAP_ALWAYS:
	case CAP_APPENDLIMIT:
		return true;
	case CAP_LOGIN_ALLOWED:
		return not_auth && imap_client_login_allowed(client);
	case CAP_LOGIN_DISABLED:
		return not_auth && !imap_client_login_allowed(client);
	case CAP_STARTTLS:
		return not_auth && client->tls != NULL &&
			!imap_client_is_tls(client);
	}
	return false;
}

void imap_capability_string(const struct imap_client *client, char *buf,
			    size_t size)
{
	struct buffer out;

	buffer_init(&out, 0);
	for (size_t i = 0; i < N_ELEMENTS(imap_capabilities); i++) {
		const struct imap_capability *cap = &imap_capabilities[i];

		if (!capability_wanted(client, cap->when))
			continue;
		if (out.used > 0)
			(void)buffer_append_byte(&out, ' ');
		if (cap->when == CAP_APPENDLIMIT)
			(void)buffer_printf(&out, "%s=%llu", cap->name,
					    (unsigned long long)client->set->imap_append_limit);
		else
			(void)buffer_append_str(&out, cap->name);
	}
	snprintf(buf, size, "%s", buffer_cstr(&out));
	buffer_clear(&out);
}
