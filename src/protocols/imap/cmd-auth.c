/*
 * cmd-auth.c - commands valid in any state and before login: CAPABILITY,
 * NOOP, LOGOUT, ID, ENABLE, STARTTLS, LOGIN, AUTHENTICATE (PLAIN and LOGIN,
 * with SASL-IR, RFC 4959).
 *
 * A login: the peer must be on TLS or on trusted_networks (else
 * LOGINDISABLED, RFC 9051 6.2.3); an address with too many recent
 * failures is refused ([UNAVAILABLE]) before any check; the password is
 * verified on the blocking pool (authdb_verify: file I/O and crypt never
 * run on the loop); a failure is answered only after auth_failure_delay
 * (a timer, not a sleep), identically for an unknown user and a wrong
 * password. Then the user's spool is opened, created on the first login;
 * an account without any special-use mailbox (new, or created by a
 * delivery before the first login) gets Drafts, Sent, Trash, Junk and
 * Archive. An account that has one keeps what the user chose.
 */
#include "lib/lib.h"
#include "lib/base64.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "io/coro.h"
#include "io/ioloop.h"
#include "auth/authdb.h"
#include "auth/password.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include <stdio.h>
#include <strings.h>

/* SASL responses longer than this are refused (base64 of user+pass). */
#define AUTH_RESPONSE_MAX 8192

/* The special-use mailboxes every new account gets (RFC 6154). */
static const struct {
	const char *name;
	unsigned int special;
} auth_special_mailboxes[] = {
	{ "Drafts", STORE_SPECIAL_DRAFTS },
	{ "Sent", STORE_SPECIAL_SENT },
	{ "Trash", STORE_SPECIAL_TRASH },
	{ "Junk", STORE_SPECIAL_JUNK },
	{ "Archive", STORE_SPECIAL_ARCHIVE },
};

/* ENABLE-able extensions (RFC 5161): name, bit, and whether we support it
   yet. Add a row (and set supported) when a command file implements one. */
static const struct {
	const char *name;
	unsigned int bit;
	bool supported;
} auth_enable_table[] = {
	{ "UTF8=ACCEPT", IMAP_ENABLED_UTF8, true },
	{ "IMAP4rev2", IMAP_ENABLED_REV2, true },
	{ "CONDSTORE", IMAP_ENABLED_CONDSTORE, true },
	{ "QRESYNC", IMAP_ENABLED_QRESYNC, true },
};

int cmd_capability(struct imap_command *cmd)
{
	char caps[2048];

	imap_capability_string(cmd->client, caps, sizeof(caps));
	if (imap_client_untagged(cmd->client, "CAPABILITY %s", caps) < 0)
		return -1;
	imap_command_ok(cmd, "CAPABILITY completed");
	return 0;
}

int cmd_noop(struct imap_command *cmd)
{
	/* The session syncs the selected mailbox after every command. */
	imap_command_ok(cmd, "NOOP completed");
	return 0;
}

int cmd_logout(struct imap_command *cmd)
{
	if (imap_client_untagged(cmd->client, "BYE Logging out") < 0)
		return -1;
	cmd->client->state = IMAP_STATE_LOGOUT;
	imap_command_ok(cmd, "LOGOUT completed");
	return 0;
}

/* id_params_valid - NIL, or a list of at most 30 string/nstring pairs */
static bool id_params_valid(const struct imap_arg *arg)
{
	const struct imap_arg *list;
	const char *str;
	size_t count;

	if (arg->type == IMAP_ARG_NIL)
		return true;
	if (!imap_arg_get_list(arg, &list, &count) || count % 2 != 0 ||
	    count > 60)
		return false;
	for (size_t i = 0; i < count; i++) {
		if (i % 2 == 0 ? !imap_arg_get_string(&list[i], &str) :
		    !imap_arg_get_nstring(&list[i], &str))
			return false;
	}
	return true;
}

int cmd_id(struct imap_command *cmd)
{
	/* ID ( "key" "value" ... ) or ID NIL: we log nothing of it */
	if (!id_params_valid(&cmd->args[0]) || !imap_arg_is_eol(&cmd->args[1])) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (imap_client_untagged(cmd->client, "ID (\"name\" \"clustermail\" "
				 "\"version\" \"%s\")", PACKAGE_VERSION) < 0)
		return -1;
	imap_command_ok(cmd, "ID completed");
	return 0;
}

int cmd_enable(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;
	struct buffer enabled;
	const char *name;
	int ret = 0;

	if (imap_arg_is_eol(&cmd->args[0])) {
		imap_command_bad(cmd, "Missing capability");
		return 0;
	}
	buffer_init(&enabled, 0);
	for (const struct imap_arg *arg = cmd->args; !imap_arg_is_eol(arg); arg++) {
		if (!imap_arg_get_atom(arg, &name)) {
			imap_command_bad(cmd, "Invalid arguments");
			buffer_clear(&enabled);
			return 0;
		}
		for (size_t i = 0; i < N_ELEMENTS(auth_enable_table); i++) {
			if (!auth_enable_table[i].supported ||
			    strcasecmp(auth_enable_table[i].name, name) != 0 ||
			    (client->enabled & auth_enable_table[i].bit) != 0)
				continue;
			client->enabled |= auth_enable_table[i].bit;
			(void)buffer_printf(&enabled, " %s", auth_enable_table[i].name);
		}
	}
	ret = imap_client_untagged(client, "ENABLED%s", buffer_cstr(&enabled));
	buffer_clear(&enabled);
	if (ret < 0)
		return -1;
	/* RFC 7162 3.1: CONDSTORE enabled with a mailbox selected starts the
	   MODSEQ reporting now, announced with the current HIGHESTMODSEQ. */
	if ((client->enabled & IMAP_ENABLED_CONDSTORE) != 0 &&
	    client->state == IMAP_STATE_SELECTED && !client->condstore_active) {
		client->condstore_active = true;
		if (imap_client_untagged(client, "OK [HIGHESTMODSEQ %llu] Highest",
					 (unsigned long long)
					 mailbox_highestmodseq(client->box)) < 0)
			return -1;
	}
	imap_command_ok(cmd, "ENABLE completed");
	return 0;
}

int cmd_starttls(struct imap_command *cmd)
{
	struct imap_client *client = cmd->client;

	if (!imap_arg_is_eol(&cmd->args[0])) {
		imap_command_bad(cmd, "STARTTLS takes no arguments");
		return 0;
	}
	if (client->tls == NULL) {
		imap_command_no(cmd, "[CANNOT] TLS is not configured");
		return 0;
	}
	if (imap_client_is_tls(client)) {
		imap_command_bad(cmd, "TLS is already active");
		return 0;
	}
	/* The OK must go out in plaintext, before TLS starts. */
	if (imap_client_printf(client, "%s OK Begin TLS negotiation now\r\n",
			       cmd->tag) < 0)
		return -1;
	imap_command_reply_written(cmd);
	if (imap_client_start_tls(client) < 0)
		return imap_client_bye(client, "Cannot start TLS");
	return 0;
}

/* ---- the login itself ------------------------------------------------------ */

/* A wait of the session coroutine: a pool job or a delay. */
struct auth_job {
	struct io_request req;
	struct coro *coro;
	bool done;
};

/* auth_job_done - back on the loop: continue the session */
static void auth_job_done(struct io_request *req, int result ATTR_UNUSED)
{
	struct auth_job *job = req->context;

	job->done = true;
	coro_resume(job->coro);
}

/* auth_wait - run work(arg) on the pool (work != NULL) or sleep msecs
   on the loop, from the session coroutine */
static void auth_wait(struct auth_job *job, int (*work)(void *arg), void *arg,
		      uint64_t msecs)
{
	struct ioloop *loop = coro_get_loop(coro_current());

	job->coro = coro_current();
	job->done = false;
	io_request_init(&job->req, auth_job_done, job);
	if (work != NULL)
		ioloop_run_blocking(loop, &job->req, work, arg);
	else
		io_timeout(loop, &job->req, msecs);
	while (!job->done)
		coro_yield();
}

/* auth_has_special_use - does the account have any special-use
   mailbox yet? (A spool created by a delivery before the first login has
   only INBOX.) */
static bool auth_has_special_use(struct store_user *su)
{
	struct store_list_entry *entries;
	size_t count;
	bool found = false;

	if (store_list(su, &entries, &count) != STORE_OK)
		return true;	/* don't guess; the error is logged */
	for (size_t i = 0; i < count && !found; i++)
		found = (entries[i].attrs & STORE_SPECIAL_MASK) != 0;
	store_list_free(entries, count);
	return found;
}

/* auth_create_special_use - Drafts, Sent, Trash, Junk, Archive */
static void auth_create_special_use(struct imap_client *client,
				    struct store_user *su, const char *user)
{
	for (size_t i = 0; i < N_ELEMENTS(auth_special_mailboxes); i++) {
		int ret = store_mailbox_create(su, auth_special_mailboxes[i].name,
					       auth_special_mailboxes[i].special);

		if (ret != STORE_OK && ret != STORE_ERR_EXISTS)
			log_id_warn(client->id, "user=%s: cannot create %s: %s",
				    user, auth_special_mailboxes[i].name,
				    store_user_error(su));
	}
	log_id_info(client->id, "user=%s: special-use mailboxes created", user);
}

/* auth_open_store - open (and on the first login create) the spool, with
   the special-use mailboxes when the account has none yet */
static int auth_open_store(struct imap_command *cmd, const char *user)
{
	struct imap_client *client = cmd->client;
	struct store_user *su = NULL;
	const char *error = NULL;
	bool created = false;
	int ret;

	ret = store_user_open(client->store, imap_client_sio(client), user, 0,
			      &su, &error);
	if (ret == STORE_ERR_NOTFOUND) {
		ret = store_user_open(client->store, imap_client_sio(client), user,
				      STORE_USER_CREATE, &su, &error);
		created = ret == STORE_OK;
	}
	if (ret != STORE_OK) {
		log_id_error(client->id, "user=%s: cannot open the mail spool: %s",
			     user, error != NULL ? error : store_result_name(ret));
		return -1;
	}
	if (created || !auth_has_special_use(su))
		auth_create_special_use(client, su, user);
	client->store_user = su;
	return 0;
}

/* auth_failed - the answer to a failed login, after the delay */
static int auth_failed(struct imap_command *cmd, const char *address,
		       const char *mech, const char *reason)
{
	struct imap_client *client = cmd->client;
	struct auth_job delay = { .done = false };

	log_id_info(client->id, "login failed: user=%s ip=%s mech=%s: %s",
		    address, client->peer_ip, mech, reason);
	authdb_ip_failed(client->peer_ip);
	if (client->set->auth_failure_delay_msecs > 0)
		auth_wait(&delay, NULL, NULL, client->set->auth_failure_delay_msecs);
	imap_command_no(cmd, "[AUTHENTICATIONFAILED] Authentication failed");
	return 0;
}

/* auth_login - check the credentials and enter the AUTH state */
static int auth_login(struct imap_command *cmd, const char *address,
		      const char *password, const char *mech)
{
	struct imap_client *client = cmd->client;
	struct authdb_verify_job job = {
		.users_file = client->set->users_file,
		.address = address,
		.password = password,
	};
	struct auth_job wait = { .done = false };
	char caps[2048];

	if (authdb_ip_blocked(client->peer_ip, client->set->auth_max_failures)) {
		log_id_info(client->id, "login refused: ip=%s: too many failures",
			    client->peer_ip);
		if (client->set->auth_failure_delay_msecs > 0)
			auth_wait(&wait, NULL, NULL,
				  client->set->auth_failure_delay_msecs);
		imap_command_no(cmd, "[UNAVAILABLE] Too many failed logins; "
				"try again later");
		return 0;
	}
	if (strlen(password) > PASSWORD_MAX_LEN || password[0] == '\0')
		return auth_failed(cmd, address, mech, "unusable password");
	auth_wait(&wait, authdb_verify_job, &job, 0);
	if (job.result == AUTHDB_TEMPFAIL) {
		log_id_error(client->id, "login: user=%s ip=%s: %s", address,
			     client->peer_ip, job.reason);
		imap_command_no(cmd, "[UNAVAILABLE] Authentication temporarily "
				"unavailable");
		return 0;
	}
	if (job.result != AUTHDB_OK)
		return auth_failed(cmd, address, mech, job.reason);
	if (client->store == NULL || auth_open_store(cmd, job.user) < 0) {
		free(job.user);
		imap_command_no(cmd, "[UNAVAILABLE] Mail storage temporarily "
				"unavailable");
		return 0;
	}
	log_id_info(client->id, "login: user=%s ip=%s mech=%s%s", job.user,
		    client->peer_ip, mech, imap_client_is_tls(client) ? " tls" : "");
	client->user = job.user;
	client->state = IMAP_STATE_AUTH;
	imap_capability_string(client, caps, sizeof(caps));
	imap_command_ok(cmd, "[CAPABILITY %s] Logged in", caps);
	return 0;
}

/* auth_allowed - LOGINDISABLED: refuse before TLS from untrusted peers */
static bool auth_allowed(struct imap_command *cmd)
{
	if (imap_client_login_allowed(cmd->client))
		return true;
	imap_command_no(cmd, "[PRIVACYREQUIRED] Plaintext login is disabled; "
			"use STARTTLS first");
	return false;
}

int cmd_login(struct imap_command *cmd)
{
	const char *user, *password;

	if (!imap_arg_get_astring(&cmd->args[0], &user) ||
	    !imap_arg_get_astring(&cmd->args[1], &password) ||
	    !imap_arg_is_eol(&cmd->args[2])) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (!auth_allowed(cmd))
		return 0;
	return auth_login(cmd, user, password, "LOGIN");
}

/* ---- AUTHENTICATE ---------------------------------------------------------- */

enum auth_step {
	AUTH_STEP_OK,		/* decoded into *out */
	AUTH_STEP_CANCEL,	/* "*" */
	AUTH_STEP_BAD,		/* invalid base64 */
	AUTH_STEP_GONE,		/* connection gone */
};

/* auth_response - one client response: the initial one (SASL-IR) or a
   continuation read after "+ challenge" */
static enum auth_step auth_response(struct imap_command *cmd,
				    const char *initial, const char *challenge,
				    struct buffer *out)
{
	const char *line = initial;
	struct buffer b64;
	size_t len;

	buffer_reset(out);
	if (line == NULL) {
		buffer_init(&b64, 0);
		base64_encode(challenge, strlen(challenge), &b64);
		line = imap_client_continue(cmd->client, buffer_cstr(&b64));
		buffer_clear(&b64);
		if (line == NULL)
			return AUTH_STEP_GONE;
	}
	if (strcmp(line, "*") == 0)
		return AUTH_STEP_CANCEL;
	if (strcmp(line, "=") == 0)
		return AUTH_STEP_OK;	/* empty initial response */
	len = strlen(line);
	if (len > AUTH_RESPONSE_MAX || base64_decode(line, len, out) < 0)
		return AUTH_STEP_BAD;
	return AUTH_STEP_OK;
}

/* auth_step_reply - the tagged reply for a step that did not succeed */
static int auth_step_reply(struct imap_command *cmd, enum auth_step step)
{
	switch (step) {
	case AUTH_STEP_CANCEL:
		imap_command_bad(cmd, "Authentication cancelled");
		return 0;
	case AUTH_STEP_BAD:
		imap_command_bad(cmd, "Invalid base64 data");
		return 0;
	case AUTH_STEP_GONE:
		return -1;
	case AUTH_STEP_OK:
		break;
	}
	return 0;
}

/* auth_plain - RFC 4616: authzid NUL authcid NUL passwd */
static int auth_plain(struct imap_command *cmd, const char *initial)
{
	struct buffer resp;
	enum auth_step step;
	const char *authz, *authc, *pass, *end;
	int ret;

	buffer_init(&resp, 0);
	step = auth_response(cmd, initial, "", &resp);
	if (step != AUTH_STEP_OK) {
		buffer_clear(&resp);
		return auth_step_reply(cmd, step);
	}
	if (resp.used == 0) {
		buffer_clear(&resp);
		imap_command_bad(cmd, "Invalid PLAIN response");
		return 0;
	}
	authz = (const char *)resp.data;
	end = authz + resp.used;
	authc = memchr(authz, '\0', resp.used);
	pass = authc != NULL ? memchr(authc + 1, '\0', (size_t)(end - authc - 1)) : NULL;
	if (pass == NULL || memchr(pass + 1, '\0', (size_t)(end - pass - 1)) != NULL) {
		if (resp.data != NULL)
			explicit_bzero(resp.data, resp.used);
		buffer_clear(&resp);
		imap_command_bad(cmd, "Invalid PLAIN response");
		return 0;
	}
	authc++;
	pass++;
	if (authz[0] != '\0' && strcasecmp(authz, authc) != 0) {
		ret = auth_failed(cmd, authc, "PLAIN", "authorization identity differs");
	} else {
		ret = auth_login(cmd, authc, pass, "PLAIN");
	}
	if (resp.data != NULL)
		explicit_bzero(resp.data, resp.used);
	buffer_clear(&resp);
	return ret;
}

/* auth_mech_login - the LOGIN mechanism: "Username:", "Password:" */
static int auth_mech_login(struct imap_command *cmd, const char *initial)
{
	struct buffer user, pass;
	enum auth_step step;
	int ret;

	buffer_init(&user, 0);
	buffer_init(&pass, 0);
	step = auth_response(cmd, initial, "Username:", &user);
	if (step == AUTH_STEP_OK)
		step = auth_response(cmd, NULL, "Password:", &pass);
	if (step != AUTH_STEP_OK) {
		ret = auth_step_reply(cmd, step);
	} else if ((user.used > 0 && memchr(user.data, '\0', user.used) != NULL) ||
		   (pass.used > 0 && memchr(pass.data, '\0', pass.used) != NULL)) {
		imap_command_bad(cmd, "Invalid LOGIN response");
		ret = 0;
	} else {
		ret = auth_login(cmd, buffer_cstr(&user), buffer_cstr(&pass), "LOGIN");
	}
	if (pass.data != NULL)
		explicit_bzero(pass.data, pass.used);
	buffer_clear(&user);
	buffer_clear(&pass);
	return ret;
}

int cmd_authenticate(struct imap_command *cmd)
{
	const char *mech, *initial = NULL;

	if (!imap_arg_get_atom(&cmd->args[0], &mech) ||
	    (!imap_arg_is_eol(&cmd->args[1]) &&
	     (!imap_arg_get_atom(&cmd->args[1], &initial) ||
	      !imap_arg_is_eol(&cmd->args[2])))) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (!auth_allowed(cmd))
		return 0;
	if (strcasecmp(mech, "PLAIN") == 0)
		return auth_plain(cmd, initial);
	if (strcasecmp(mech, "LOGIN") == 0)
		return auth_mech_login(cmd, initial);
	imap_command_no(cmd, "[CANNOT] Unsupported authentication mechanism");
	return 0;
}
