/*
 * smtp-session.c - an SMTP, submission or LMTP session: the greeting, the
 * command loop and the error budget, on top of the line session engine
 * (protocols/linesession.h).
 *
 * The loop reads one command line at a time (bounded by SMTP_LINE_MAX)
 * and runs it; replies go out as they are made. Pipelined commands wait
 * in the connection's bounded input buffer, so a client that floods
 * commands without reading the replies fills that buffer and our output
 * limit, then waits; it never grows our memory.
 *
 * Refused commands count against smtp_max_errors; at the limit the
 * session ends with 421 (RFC 5321 4.3.2 allows closing after 421).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "protocols/linesession.h"
#include "smtp.h"
#include "smtp-private.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define SMTP_INPUT_LIMIT (64 * 1024)
#define SMTP_OUTPUT_LIMIT (128 * 1024)

struct smtp_session {
	struct smtp_client client;
	struct smtp_session_settings set;	/* strings borrowed */
	char timeout_reply[300];
	char shutdown_reply[300];
};

static __thread struct linesession_list smtp_sessions;

int smtp_reply(struct smtp_client *client, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = linesession_vreply(client->ls, fmt, args);
	va_end(args);
	return ret;
}

int smtp_reply_error(struct smtp_client *client, const char *fmt, ...)
{
	va_list args;
	int ret;

	va_start(args, fmt);
	ret = linesession_vreply(client->ls, fmt, args);
	va_end(args);
	if (ret < 0)
		return -1;
	if (++client->errors >= client->set->smtp_max_errors) {
		log_id_info(client->id, "too many errors (%u)", client->errors);
		return linesession_close(client->ls, "421 4.7.0 %s Too many errors; "
					 "closing connection",
					 client->set->smtp_hostname);
	}
	return 0;
}

void smtp_transaction_reset(struct smtp_client *client)
{
	for (size_t i = 0; i < client->rcpt_count; i++) {
		free(client->rcpts[i].address);
		free(client->rcpts[i].user);
		free(client->rcpts[i].orcpt);
	}
	free(client->rcpts);
	client->rcpts = NULL;
	client->rcpt_count = client->rcpt_alloc = 0;
	MEM_FREE(&client->sender);
	MEM_FREE(&client->envid);
	smtp_data_free(&client->data);
	client->in_mail = false;
	client->declared_size = 0;
	client->body = SMTP_BODY_7BIT;
	client->smtputf8 = false;
	client->ret = 0;
	client->bdat_failed = false;
}

/* session_greet - the 220 banner, or a refusal */
static int session_greet(struct smtp_client *client)
{
	const char *host = client->set->smtp_hostname;

	if (client->kind == SMTP_KIND_LMTP && !client->trusted) {
		log_id_info(client->id, "LMTP refused: %s is not on trusted_networks",
			    linesession_peer_ip(client->ls));
		return linesession_close(client->ls, "554 5.7.1 %s LMTP is only for "
					 "trusted networks", host);
	}
	return smtp_reply(client, "220 %s %s clustermail", host,
			  client->kind == SMTP_KIND_LMTP ? "LMTP" : "ESMTP");
}

/* session_run - the coroutine body: greet, then one command after another */
static void session_run(struct linesession *ls, void *context)
{
	struct smtp_session *s = context;
	struct smtp_client *client = &s->client;

	client->ls = ls;
	client->id = linesession_id(ls);
	if (session_greet(client) < 0)
		goto out;
	while (!client->quit) {
		const char *line;
		size_t len;
		bool bare_lf;
		int ret;

		ret = linesession_read_line(ls, SMTP_LINE_MAX, true, &line, &len,
					    &bare_lf);
		if (ret < 0)
			break;
		if (ret == 0) {
			if (smtp_reply_error(client, "500 5.5.2 Line too long") < 0)
				break;
			continue;
		}
		if (memchr(line, '\0', len) != NULL) {
			if (smtp_reply_error(client, "500 5.5.2 NUL in command") < 0)
				break;
			continue;
		}
		if (smtp_command_run(client, line, len) < 0)
			break;
	}
out:
	smtp_transaction_reset(client);
}

/* session_freed - the engine is done with the session */
static void session_freed(void *context, const char *reason)
{
	struct smtp_session *s = context;

	log_id_info(s->client.id != NULL ? s->client.id : s->set.id,
		    "disconnected%s%s: %s",
		    s->client.auth_user != NULL ? " user=" : "",
		    s->client.auth_user != NULL ? s->client.auth_user : "", reason);
	if (s->set.ended != NULL)
		s->set.ended(s->set.context, reason);
	free(s->client.helo);
	free(s->client.auth_user);
	free(s);
}

void smtp_session_start(struct ioloop *loop, int fd, const struct sockaddr *peer,
			socklen_t peer_len, const struct smtp_session_settings *set)
{
	struct smtp_session *s = mem_zalloc(sizeof(*s));
	struct linesession_settings ls_set = {
		.id = set->id,
		.list = &smtp_sessions,
		.tls = set->tls,
		.implicit_tls = set->implicit_tls,
		.input_limit = SMTP_INPUT_LIMIT,
		.output_limit = SMTP_OUTPUT_LIMIT,
		.idle_timeout_msecs = set->set->smtp_client_timeout_msecs,
		.run = session_run,
		.freed = session_freed,
		.context = s,
	};

	s->set = *set;
	snprintf(s->timeout_reply, sizeof(s->timeout_reply),
		 "421 4.4.2 %s Error: timeout exceeded", set->set->smtp_hostname);
	snprintf(s->shutdown_reply, sizeof(s->shutdown_reply),
		 "421 4.3.2 %s Service shutting down, try again later",
		 set->set->smtp_hostname);
	ls_set.timeout_reply = s->timeout_reply;
	ls_set.shutdown_reply = s->shutdown_reply;
	s->client.kind = set->kind;
	s->client.set = set->set;
	s->client.store = set->store;
	s->client.sio = set->sio;
	s->client.queue = set->queue;
	s->client.queued = set->queued;
	s->client.implicit_tls = set->implicit_tls;
	s->client.trusted = peer != NULL && settings_is_trusted(set->set, peer);
	linesession_start(loop, fd, peer, peer_len, &ls_set);
}

void smtp_sessions_shutdown(void)
{
	linesession_shutdown_all(&smtp_sessions);
}

/* session_of_user - linesession_end_matching()'s test: authenticated
   (submission) as user */
static bool session_of_user(void *context, const void *arg)
{
	const struct smtp_session *s = context;

	return s->client.auth_user != NULL &&
		strcmp(s->client.auth_user, arg) == 0;
}

unsigned int smtp_sessions_kick_user(const char *user)
{
	unsigned int count;

	count = linesession_end_matching(&smtp_sessions, session_of_user, user,
					 "421 4.7.0 Session ended by the "
					 "administrator");
	if (count > 0)
		log_info("smtp: ending %u authenticated session%s of %s "
			 "(administrator)", count, count == 1 ? "" : "s", user);
	return count;
}

unsigned int smtp_session_count(void)
{
	return smtp_sessions.count;
}
