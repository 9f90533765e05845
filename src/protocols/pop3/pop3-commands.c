/*
 * pop3-commands.c - the POP3 commands (RFC 1939, RFC 2449, RFC 2595,
 * RFC 5034).
 *
 * AUTHORIZATION: CAPA, STLS, USER/PASS, AUTH PLAIN, QUIT. Passwords are
 * refused before TLS from peers outside trusted_networks (and USER/SASL
 * are then not announced in CAPA). The password check runs on the
 * blocking pool (authdb_verify), a failure is answered after
 * auth_failure_delay.
 *
 * TRANSACTION works on the snapshot taken at login (pop3-private.h).
 * Sizes: LIST and STAT give RFC822.SIZE (the message with CRLF line
 * ends), which is exactly what RETR sends before byte-stuffing and
 * before the terminating ".": the count clients such as poplib and
 * fetchmail compare with what they received after un-stuffing. A file
 * that does not end with a line end gets a CRLF added (not counted).
 *
 * UIDL: 16 hex digits, the INBOX UIDVALIDITY and the message's UID
 * (8 each): stable across sessions and nodes, and the same message
 * keeps it whatever IMAP does with its flags.
 *
 * QUIT in TRANSACTION enters UPDATE: the DELE'd messages are expunged
 * with mailbox_expunge() (which takes the mailbox's exclusive lock);
 * "+OK" only after that succeeded, "-ERR [SYS/TEMP]" otherwise (nothing
 * is then removed). A session that ends any other way removes nothing.
 */
#include "lib/lib.h"
#include "lib/base64.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "auth/authdb.h"
#include "maildir/sio.h"
#include "maildir/store.h"
#include "protocols/linesession.h"
#include "pop3-private.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define POP3_PASSWORD_MAX 1024
#define POP3_READ_CHUNK (64 * 1024)
#define POP3_FLUSH_AT (16 * 1024)

struct pop3_command_def {
	const char *name;
	bool in_authorization, in_transaction;
	int (*handler)(struct pop3_client *client, const char *args);
};

/* ---- login -------------------------------------------------------------------- */

/* login_open_store - open (first login: create) the spool, snapshot INBOX */
static int login_open_store(struct pop3_client *client, const char *user)
{
	const char *error = NULL;
	struct store_user *su = NULL;
	int ret;

	ret = store_user_open(client->store, client->sio, user, 0, &su, &error);
	if (ret == STORE_ERR_NOTFOUND)
		ret = store_user_open(client->store, client->sio, user,
				      STORE_USER_CREATE, &su, &error);
	if (ret != STORE_OK) {
		log_id_error(client->id, "user=%s: cannot open the mail spool: %s",
			     user, error != NULL ? error : store_result_name(ret));
		return -1;
	}
	client->store_user = su;
	ret = mailbox_open(su, "INBOX", 0, &client->box);
	if (ret != STORE_OK) {
		log_id_error(client->id, "user=%s: cannot open INBOX: %s",
			     user, store_user_error(su));
		return -1;
	}
	client->uidvalidity = mailbox_uidvalidity(client->box);
	client->msg_count = 0;
	client->msgs = mem_zalloc(sizeof(*client->msgs) *
				  ((size_t)mailbox_count(client->box) + 1));
	for (uint32_t i = 0; i < mailbox_count(client->box); i++) {
		const struct mail_record *rec = mailbox_record(client->box, i);

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		client->msgs[client->msg_count].uid = rec->uid;
		client->msgs[client->msg_count].vsize = rec->vsize;
		client->msg_count++;
	}
	return 0;
}

/* login_failed - the answer to a failed login, after the delay */
static int login_failed(struct pop3_client *client, const char *address,
			const char *mech, const char *reason)
{
	log_id_info(client->id, "login failed: user=%s ip=%s mech=%s: %s",
		    address, client->peer_ip, mech, reason);
	authdb_ip_failed(client->peer_ip);
	if (client->set->auth_failure_delay_msecs > 0 &&
	    linesession_sleep(client->ls, client->set->auth_failure_delay_msecs) < 0)
		return -1;
	return pop3_client_reply(client, "-ERR [AUTH] Authentication failed") < 0 ? -1 : 0;
}

/* login - check the credentials and enter TRANSACTION */
static int login(struct pop3_client *client, const char *address,
		 const char *password, const char *mech)
{
	struct authdb_verify_job job = {
		.users_file = client->set->users_file,
		.address = address,
		.password = password,
	};

	if (authdb_ip_blocked(client->peer_ip, client->set->auth_max_failures)) {
		log_id_info(client->id, "login refused: ip=%s: too many failures",
			    client->peer_ip);
		if (client->set->auth_failure_delay_msecs > 0 &&
		    linesession_sleep(client->ls,
				      client->set->auth_failure_delay_msecs) < 0)
			return -1;
		return pop3_client_reply(client, "-ERR [SYS/TEMP] Too many failed "
					 "logins; try again later") < 0 ? -1 : 0;
	}
	if (password[0] == '\0' || strlen(password) > POP3_PASSWORD_MAX)
		return login_failed(client, address, mech, "unusable password");
	linesession_run_blocking(client->ls, authdb_verify_job, &job);
	if (job.result == AUTHDB_TEMPFAIL) {
		log_id_error(client->id, "login: user=%s ip=%s: %s", address,
			     client->peer_ip, job.reason);
		return pop3_client_reply(client, "-ERR [SYS/TEMP] Authentication "
					 "temporarily unavailable") < 0 ? -1 : 0;
	}
	if (job.result != AUTHDB_OK)
		return login_failed(client, address, mech, job.reason);
	if (client->store == NULL || login_open_store(client, job.user) < 0) {
		free(job.user);
		pop3_client_cleanup(client);
		return pop3_client_reply(client, "-ERR [SYS/TEMP] Mail storage "
					 "temporarily unavailable") < 0 ? -1 : 0;
	}
	log_id_info(client->id, "login: user=%s ip=%s mech=%s%s messages=%u",
		    job.user, client->peer_ip, mech,
		    pop3_client_is_tls(client) ? " tls" : "", client->msg_count);
	client->user = job.user;
	client->state = POP3_STATE_TRANSACTION;
	return pop3_client_reply(client, "+OK Logged in, %u messages",
				 client->msg_count) < 0 ? -1 : 1;
}

/* login_refused_plaintext - no passwords before TLS from untrusted peers */
static int login_refused_plaintext(struct pop3_client *client)
{
	if (pop3_client_login_allowed(client))
		return 0;
	return pop3_client_reply(client, "-ERR [AUTH] Plaintext authentication "
				 "is disabled; use STLS first") < 0 ? -1 : 1;
}

static int cmd_user(struct pop3_client *client, const char *args)
{
	int ret = login_refused_plaintext(client);

	if (ret != 0)
		return ret < 0 ? -1 : 0;
	if (args == NULL || *args == '\0')
		return pop3_client_reply(client, "-ERR USER needs a name") < 0 ? -1 : 0;
	free(client->user_arg);
	client->user_arg = mem_strdup(args);
	return pop3_client_reply(client, "+OK Send PASS") < 0 ? -1 : 1;
}

static int cmd_pass(struct pop3_client *client, const char *args)
{
	char *address;
	int ret = login_refused_plaintext(client);

	if (ret != 0)
		return ret < 0 ? -1 : 0;
	if (client->user_arg == NULL)
		return pop3_client_reply(client, "-ERR USER first") < 0 ? -1 : 0;
	address = client->user_arg;
	client->user_arg = NULL;
	ret = login(client, address, args != NULL ? args : "", "USER");
	free(address);
	return ret < 0 ? -1 : 1;
}

/* auth_plain_response - decode a PLAIN message (RFC 4616) and log in */
static int auth_plain_response(struct pop3_client *client, const char *b64)
{
	struct buffer dec;
	const char *authz, *authc, *pass;
	int ret;

	buffer_init(&dec, 0);
	if (strcmp(b64, "=") != 0 && base64_decode(b64, strlen(b64), &dec) < 0) {
		buffer_clear(&dec);
		return pop3_client_reply(client, "-ERR Invalid base64") < 0 ? -1 : 0;
	}
	(void)buffer_append_byte(&dec, '\0');
	if (sasl_plain_split((char *)dec.data, dec.used - 1, &authz, &authc,
			     &pass) < 0) {
		buffer_clear(&dec);
		return pop3_client_reply(client, "-ERR Invalid PLAIN response") < 0 ? -1 : 0;
	}
	if (*authz != '\0' && strcasecmp(authz, authc) != 0)
		ret = login_failed(client, authc, "PLAIN", "authorization identity differs");
	else
		ret = login(client, authc, pass, "PLAIN") < 0 ? -1 : 1;
	explicit_bzero(dec.data, dec.used);
	buffer_clear(&dec);
	return ret;
}

static int cmd_auth(struct pop3_client *client, const char *args)
{
	char mech[32];
	const char *line;
	int n = 0, ret;

	if (args == NULL || *args == '\0')
		return pop3_client_reply(client, "+OK\r\nPLAIN\r\n.") < 0 ? -1 : 1;
	if (sscanf(args, "%31s%n", mech, &n) != 1)
		return pop3_client_reply(client, "-ERR Syntax error") < 0 ? -1 : 0;
	if (strcasecmp(mech, "PLAIN") != 0)
		return pop3_client_reply(client, "-ERR Unsupported mechanism") < 0 ? -1 : 0;
	ret = login_refused_plaintext(client);
	if (ret != 0)
		return ret < 0 ? -1 : 0;
	/* The response is used before anything else is read, so the
	   engine's line buffer may hold it meanwhile. */
	if (args[n] == ' ')
		return auth_plain_response(client, args + n + 1);
	if (args[n] != '\0')
		return pop3_client_reply(client, "-ERR Syntax error") < 0 ? -1 : 0;
	if (pop3_client_reply(client, "+ ") < 0)
		return -1;
	ret = pop3_client_read_line(client, POP3_SASL_LINE_MAX, &line);
	if (ret < 0)
		return -1;
	if (ret == 0)
		return pop3_client_reply(client, "-ERR Response too long") < 0 ? -1 : 0;
	if (strcmp(line, "*") == 0)
		return pop3_client_reply(client, "-ERR Authentication cancelled") < 0 ? -1 : 1;
	return auth_plain_response(client, line);
}

static int cmd_capa(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	bool login_ok = pop3_client_login_allowed(client);
	bool stls = client->tls != NULL && !pop3_client_is_tls(client) &&
		client->state == POP3_STATE_AUTHORIZATION;

	return pop3_client_reply(client, "+OK Capability list follows\r\n"
		"TOP\r\n%sUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n"
		"%s%sIMPLEMENTATION clustermail\r\nEXPIRE NEVER\r\n"
		"LOGIN-DELAY 0\r\n.",
		login_ok ? "USER\r\n" : "", login_ok ? "SASL PLAIN\r\n" : "",
		stls ? "STLS\r\n" : "") < 0 ? -1 : 1;
}

static int cmd_stls(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	if (client->tls == NULL)
		return pop3_client_reply(client, "-ERR TLS is not available") < 0 ? -1 : 0;
	if (pop3_client_is_tls(client))
		return pop3_client_reply(client, "-ERR TLS is already active") < 0 ? -1 : 0;
	if (pop3_client_reply(client, "+OK Begin TLS negotiation") < 0)
		return -1;
	if (pop3_client_start_tls(client) < 0)
		return pop3_client_close(client, "-ERR Cannot start TLS");
	free(client->user_arg);
	client->user_arg = NULL;
	return 1;
}

/* ---- TRANSACTION ----------------------------------------------------------- */

/* message_arg - parse a message number; NULL + -ERR sent when invalid */
static struct pop3_message *message_arg(struct pop3_client *client,
					const char *arg, int *ret_r)
{
	char *end;
	unsigned long n;

	*ret_r = 0;
	errno = 0;
	if (arg == NULL || *arg < '0' || *arg > '9' ||
	    (n = strtoul(arg, &end, 10), errno != 0) ||
	    (*end != '\0' && *end != ' ')) {
		*ret_r = pop3_client_reply(client, "-ERR Invalid message number") < 0 ? -1 : 0;
		return NULL;
	}
	if (n == 0 || n > client->msg_count) {
		*ret_r = pop3_client_reply(client, "-ERR No such message") < 0 ? -1 : 1;
		return NULL;
	}
	if (client->msgs[n - 1].deleted) {
		*ret_r = pop3_client_reply(client, "-ERR Message %lu is deleted", n) < 0 ? -1 : 1;
		return NULL;
	}
	return &client->msgs[n - 1];
}

static int cmd_stat(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	uint64_t total = 0;
	uint32_t count = 0;

	for (uint32_t i = 0; i < client->msg_count; i++) {
		if (!client->msgs[i].deleted) {
			count++;
			total += client->msgs[i].vsize;
		}
	}
	return pop3_client_reply(client, "+OK %u %llu", count,
				 (unsigned long long)total) < 0 ? -1 : 1;
}

/* list_or_uidl - LIST and UIDL share their shape */
static int list_or_uidl(struct pop3_client *client, const char *args, bool uidl)
{
	struct buffer out;
	int ret;

	if (args != NULL) {
		struct pop3_message *msg = message_arg(client, args, &ret);

		if (msg == NULL)
			return ret;
		if (uidl)
			return pop3_client_reply(client, "+OK %u %08x%08x",
						 (unsigned int)(msg - client->msgs + 1),
						 client->uidvalidity, msg->uid) < 0 ? -1 : 1;
		return pop3_client_reply(client, "+OK %u %llu",
					 (unsigned int)(msg - client->msgs + 1),
					 (unsigned long long)msg->vsize) < 0 ? -1 : 1;
	}
	buffer_init(&out, 0);
	(void)buffer_append_str(&out, "+OK\r\n");
	ret = 0;
	for (uint32_t i = 0; i < client->msg_count && ret == 0; i++) {
		if (client->msgs[i].deleted)
			continue;
		if (uidl)
			(void)buffer_printf(&out, "%u %08x%08x\r\n", i + 1,
					    client->uidvalidity, client->msgs[i].uid);
		else
			(void)buffer_printf(&out, "%u %llu\r\n", i + 1,
					    (unsigned long long)client->msgs[i].vsize);
		if (out.used >= POP3_FLUSH_AT) {
			ret = pop3_client_write(client, out.data, out.used);
			buffer_reset(&out);
		}
	}
	(void)buffer_append_str(&out, ".\r\n");
	if (ret == 0)
		ret = pop3_client_write(client, out.data, out.used);
	buffer_clear(&out);
	return ret < 0 ? -1 : 1;
}

static int cmd_list(struct pop3_client *client, const char *args)
{
	return list_or_uidl(client, args, false);
}

static int cmd_uidl(struct pop3_client *client, const char *args)
{
	return list_or_uidl(client, args, true);
}

/* Streaming state: CRLF conversion, byte-stuffing, TOP's line limit. */
struct stream_state {
	bool prev_cr, line_start, in_body, done;
	size_t line_len;		/* octets of the line, without CR */
	long body_lines, max_body_lines;	/* -1: no limit */
};

/* stream_feed - convert a chunk of the file into out */
static void stream_feed(struct stream_state *st, const unsigned char *data,
			size_t size, struct buffer *out)
{
	for (size_t i = 0; i < size && !st->done; i++) {
		unsigned char c = data[i];

		if (st->line_start && c == '.')
			(void)buffer_append_byte(out, '.');
		st->line_start = false;
		if (c == '\n' && !st->prev_cr)
			(void)buffer_append_byte(out, '\r');
		(void)buffer_append_byte(out, c);
		st->prev_cr = c == '\r';
		if (c != '\n') {
			if (c != '\r')
				st->line_len++;
			continue;
		}
		st->line_start = true;
		if (st->in_body)
			st->body_lines++;
		else if (st->line_len == 0)
			st->in_body = true;
		st->line_len = 0;
		if (st->in_body && st->max_body_lines >= 0 &&
		    st->body_lines >= st->max_body_lines)
			st->done = true;
	}
}

/* message_stream - send a message (or its top) after "+OK", dot-stuffed,
   ending with ".", reading the file in chunks through the loop */
static int message_stream(struct pop3_client *client, int fd,
			  long max_body_lines)
{
	struct sio *sio = store_user_sio(client->store_user);
	struct stream_state st = { .line_start = true,
				   .max_body_lines = max_body_lines };
	unsigned char *buf = mem_zalloc(POP3_READ_CHUNK);
	struct buffer out;
	uint64_t offset = 0;
	int ret = 0;

	buffer_init(&out, 0);
	while (ret == 0 && !st.done) {
		ssize_t n = sio_pread(sio, fd, buf, POP3_READ_CHUNK, offset);

		if (n < 0) {
			log_id_error(client->id, "reading a message failed: %s",
				     strerror((int)-n));
			ret = -1;
			break;
		}
		if (n == 0)
			break;
		offset += (uint64_t)n;
		buffer_reset(&out);
		stream_feed(&st, buf, (size_t)n, &out);
		ret = pop3_client_write(client, out.data, out.used);
	}
	free(buf);
	buffer_clear(&out);
	if (ret < 0)
		return -1;
	/* A message that does not end with a line end still ends the
	   multi-line response on a line of its own. */
	return pop3_client_write(client, st.line_start ? ".\r\n" : "\r\n.\r\n",
				 st.line_start ? 3 : 5) < 0 ? -1 : 1;
}

/* retr_or_top - RETR n, TOP n lines */
static int retr_or_top(struct pop3_client *client, struct pop3_message *msg,
		       long max_body_lines)
{
	int fd = -1;
	int ret = mailbox_open_message(client->box, msg->uid, &fd);

	if (ret == STORE_ERR_NOTFOUND)
		return pop3_client_reply(client, "-ERR Message was removed by "
					 "another session") < 0 ? -1 : 1;
	if (ret != STORE_OK)
		return pop3_client_reply(client, "-ERR [SYS/TEMP] Cannot read "
					 "the message") < 0 ? -1 : 1;
	if (max_body_lines < 0)
		ret = pop3_client_reply(client, "+OK %llu octets",
					(unsigned long long)msg->vsize);
	else
		ret = pop3_client_reply(client, "+OK Top of message follows");
	if (ret == 0)
		ret = message_stream(client, fd, max_body_lines);
	(void)close(fd);
	if (ret < 0)
		return pop3_client_close(client, "-ERR [SYS/TEMP] Reading the "
					 "message failed");
	return 1;
}

static int cmd_retr(struct pop3_client *client, const char *args)
{
	int ret;
	struct pop3_message *msg = message_arg(client, args, &ret);

	if (msg == NULL)
		return ret;
	if (strchr(args, ' ') != NULL)
		return pop3_client_reply(client, "-ERR Syntax error") < 0 ? -1 : 0;
	return retr_or_top(client, msg, -1);
}

static int cmd_top(struct pop3_client *client, const char *args)
{
	const char *lines_arg;
	char *end;
	long lines;
	int ret;
	struct pop3_message *msg = message_arg(client, args, &ret);

	if (msg == NULL)
		return ret;
	lines_arg = strchr(args, ' ');
	if (lines_arg == NULL || lines_arg[1] < '0' || lines_arg[1] > '9')
		return pop3_client_reply(client, "-ERR Syntax: TOP msg lines") < 0 ? -1 : 0;
	errno = 0;
	lines = strtol(lines_arg + 1, &end, 10);
	if (errno != 0 || *end != '\0')
		return pop3_client_reply(client, "-ERR Invalid line count") < 0 ? -1 : 0;
	return retr_or_top(client, msg, lines);
}

static int cmd_dele(struct pop3_client *client, const char *args)
{
	int ret;
	struct pop3_message *msg = message_arg(client, args, &ret);

	if (msg == NULL)
		return ret;
	msg->deleted = true;
	return pop3_client_reply(client, "+OK Message %u deleted",
				 (unsigned int)(msg - client->msgs + 1)) < 0 ? -1 : 1;
}

static int cmd_noop(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	return pop3_client_reply(client, "+OK") < 0 ? -1 : 1;
}

static int cmd_rset(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	for (uint32_t i = 0; i < client->msg_count; i++)
		client->msgs[i].deleted = false;
	return pop3_client_reply(client, "+OK %u messages", client->msg_count) < 0 ? -1 : 1;
}

/* update_state - QUIT in TRANSACTION: expunge what was DELE'd */
static int update_state(struct pop3_client *client)
{
	uint32_t *uids = mem_zalloc(sizeof(*uids) * ((size_t)client->msg_count + 1));
	size_t count = 0;
	int ret = STORE_OK;

	for (uint32_t i = 0; i < client->msg_count; i++) {
		if (client->msgs[i].deleted)
			uids[count++] = client->msgs[i].uid;
	}
	if (count > 0)
		ret = mailbox_expunge(client->box, uids, count, NULL, NULL);
	free(uids);
	client->state = POP3_STATE_DONE;
	if (ret != STORE_OK) {
		log_id_error(client->id, "user=%s: expunge at QUIT failed: %s",
			     client->user, store_user_error(client->store_user));
		return pop3_client_close(client, "-ERR [SYS/TEMP] Cannot remove "
					 "the deleted messages; they are kept");
	}
	log_id_info(client->id, "user=%s: QUIT, %zu messages deleted",
		    client->user, count);
	return pop3_client_reply(client, "+OK clustermail signing off (%zu "
				 "messages deleted)", count) < 0 ? -1 : 1;
}

static int cmd_quit(struct pop3_client *client, const char *args ATTR_UNUSED)
{
	if (client->state == POP3_STATE_TRANSACTION)
		return update_state(client);
	client->state = POP3_STATE_DONE;
	return pop3_client_reply(client, "+OK clustermail signing off") < 0 ? -1 : 1;
}

/* ---- dispatch ----------------------------------------------------------------- */

static const struct pop3_command_def pop3_commands[] = {
	{ "CAPA", true, true, cmd_capa },
	{ "QUIT", true, true, cmd_quit },
	{ "USER", true, false, cmd_user },
	{ "PASS", true, false, cmd_pass },
	{ "AUTH", true, false, cmd_auth },
	{ "STLS", true, false, cmd_stls },
	{ "STAT", false, true, cmd_stat },
	{ "LIST", false, true, cmd_list },
	{ "UIDL", false, true, cmd_uidl },
	{ "RETR", false, true, cmd_retr },
	{ "TOP", false, true, cmd_top },
	{ "DELE", false, true, cmd_dele },
	{ "NOOP", false, true, cmd_noop },
	{ "RSET", false, true, cmd_rset },
};

int pop3_command_run(struct pop3_client *client, const char *line)
{
	char name[8];
	size_t len = strcspn(line, " ");
	const char *args = line[len] == ' ' ? line + len + 1 : NULL;

	if (len == 0 || len >= sizeof(name))
		return pop3_client_reply(client, "-ERR Unknown command") < 0 ? -1 : 0;
	memcpy(name, line, len);
	name[len] = '\0';
	for (size_t i = 0; i < N_ELEMENTS(pop3_commands); i++) {
		const struct pop3_command_def *def = &pop3_commands[i];
		bool allowed = client->state == POP3_STATE_AUTHORIZATION ?
			def->in_authorization : def->in_transaction;

		if (strcasecmp(def->name, name) != 0)
			continue;
		if (!allowed)
			return pop3_client_reply(client, "-ERR %s is not allowed in "
						 "this state", def->name) < 0 ? -1 : 0;
		return def->handler(client, args);
	}
	return pop3_client_reply(client, "-ERR Unknown command") < 0 ? -1 : 0;
}

void pop3_client_cleanup(struct pop3_client *client)
{
	MEM_FREE(&client->msgs);
	client->msg_count = 0;
	if (client->box != NULL)
		mailbox_close(&client->box);
	if (client->store_user != NULL)
		store_user_close(&client->store_user);
}
