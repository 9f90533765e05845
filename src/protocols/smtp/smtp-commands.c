/*
 * smtp-commands.c - the SMTP/LMTP commands except the message data:
 * EHLO/HELO/LHLO, STARTTLS, AUTH, MAIL, RCPT, RSET, NOOP, VRFY, HELP,
 * QUIT, and the dispatch of DATA and BDAT to smtp-deliver.c.
 *
 * Paths (RFC 5321 4.1.2) are parsed strictly: "<" [source route ":"]
 * local-part "@" domain ">" with a dot-string or quoted-string local part
 * and a domain name or address literal; UTF-8 only with SMTPUTF8 (RFC
 * 6531). Parameters (RFC 1869 style KEY[=VALUE]) are only accepted after
 * EHLO/LHLO, and only the ones announced: SIZE, BODY, SMTPUTF8, RET,
 * ENVID, AUTH on MAIL; NOTIFY, ORCPT on RCPT (RFC 3461, xtext decoded).
 *
 * Who may send what (no open relay, ever):
 *   SMTP        recipients must be users of local_domains;
 *   submission  AUTH first (over TLS unless the peer is trusted); the
 *               sender must be the user's own address; any recipient;
 *   LMTP        (trusted networks only) recipients must be users.
 * User lookups and password checks are blocking (users file, crypt) and
 * run on the pool.
 */
#include "lib/lib.h"
#include "lib/base64.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "auth/authdb.h"
#include "maildir/store.h"
#include "queue/queue.h"
#include "protocols/linesession.h"
#include "smtp-private.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Passwords longer than this are refused (libxcrypt's limit is 512). */
#define SMTP_PASSWORD_MAX 511

const char *smtp_address_domain(const char *address)
{
	const char *at = strrchr(address, '@');

	return at != NULL ? at + 1 : "";
}

/* ---- paths and parameters --------------------------------------------- */

static bool smtp_atext(unsigned char c)
{
	return isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

const char *smtp_parse_path(const char **pp, bool allow_null,
			      char **addr_r, bool *utf8_r)
{
	const char *p = *pp, *start, *at;
	bool utf8 = false;
	size_t len;

	*addr_r = NULL;
	*utf8_r = false;
	if (*p != '<')
		return "501 5.5.4 Syntax: address must be in <angle brackets>";
	p++;
	if (*p == '>') {
		if (!allow_null)
			return "501 5.1.3 Empty address";
		*addr_r = mem_strdup("");
		*pp = p + 1;
		return NULL;
	}
	if (*p == '@') {
		/* A source route (RFC 5321 4.1.2, obsolete): ignored. */
		const char *colon = strchr(p, ':');
		const char *close = strchr(p, '>');

		if (colon == NULL || (close != NULL && close < colon))
			return "501 5.1.3 Bad source route";
		p = colon + 1;
	}
	start = p;
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (*p == '\0')
				return "501 5.1.3 Unterminated quoted local part";
			if (*p == '\\') {
				p++;
				if ((unsigned char)*p < 32 || *p == 127)
					return "501 5.1.3 Bad quoted local part";
			} else if ((unsigned char)*p < 32 || *p == 127) {
				return "501 5.1.3 Bad quoted local part";
			}
			if ((unsigned char)*p >= 0x80)
				utf8 = true;
		}
		p++;
	} else {
		bool dot_ok = false;

		for (; *p != '@' && *p != '>'; p++) {
			unsigned char c = (unsigned char)*p;

			if (c == '.') {
				if (!dot_ok)
					return "501 5.1.3 Bad local part";
				dot_ok = false;
			} else if (c >= 0x80) {
				utf8 = true;
				dot_ok = true;
			} else if (smtp_atext(c)) {
				dot_ok = true;
			} else {
				return "501 5.1.3 Bad character in local part";
			}
		}
		if (!dot_ok)
			return "501 5.1.3 Bad local part";
	}
	at = p;
	if (*p == '>') {
		/* Only <postmaster> may come without a domain (RFC 5321 4.5.1). */
		if ((size_t)(p - start) != 10 || strncasecmp(start, "postmaster", 10) != 0)
			return "501 5.1.3 Address needs a domain";
	} else {
		bool label_ok = false;

		if (*p != '@')
			return "501 5.1.3 Bad address";
		p++;
		if (*p == '[') {
			const char *close = strchr(p, ']');

			if (close == NULL || close == p + 1)
				return "501 5.1.3 Bad address literal";
			for (const char *q = p + 1; q < close; q++) {
				if ((unsigned char)*q <= 32 || *q == '[' || *q == '\\' ||
				    (unsigned char)*q >= 127)
					return "501 5.1.3 Bad address literal";
			}
			p = close + 1;
		} else {
			for (; *p != '>'; p++) {
				unsigned char c = (unsigned char)*p;

				if (c == '.') {
					if (!label_ok)
						return "501 5.1.3 Bad domain";
					label_ok = false;
				} else if (c >= 0x80) {
					utf8 = true;
					label_ok = true;
				} else if (isalnum(c) || c == '-') {
					label_ok = true;
				} else if (c == '\0') {
					return "501 5.1.3 Missing '>'";
				} else {
					return "501 5.1.3 Bad character in domain";
				}
			}
			if (!label_ok)
				return "501 5.1.3 Bad domain";
		}
		if (*p != '>')
			return "501 5.1.3 Missing '>'";
	}
	len = (size_t)(p - start);
	if (len > SMTP_PATH_MAX || (size_t)(at - start) > 64 * 4)
		return "501 5.1.3 Address too long";
	*addr_r = mem_strndup(start, len);
	*utf8_r = utf8;
	*pp = p + 1;
	return NULL;
}

char *smtp_xtext_decode(const char *in, size_t max)
{
	struct buffer out;

	buffer_init(&out, 0);
	for (const char *p = in; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '+') {
			unsigned int v;

			if (!isxdigit((unsigned char)p[1]) ||
			    !isxdigit((unsigned char)p[2]) ||
			    sscanf(p + 1, "%2x", &v) != 1) {
				buffer_clear(&out);
				return NULL;
			}
			(void)buffer_append_byte(&out, (unsigned char)v);
			p += 2;
		} else if (c < 33 || c > 126 || c == '=') {
			buffer_clear(&out);
			return NULL;
		} else {
			(void)buffer_append_byte(&out, c);
		}
		if (out.used > max) {
			buffer_clear(&out);
			return NULL;
		}
	}
	(void)buffer_append_byte(&out, '\0');
	return (char *)out.data;
}

/* next_param - the next "KEY[=VALUE]" word after spaces; false at end */
static bool next_param(const char **pp, char *key, size_t key_size,
		       const char **value_r, size_t *value_len_r)
{
	const char *p = *pp, *start, *eq;
	size_t klen;

	while (*p == ' ')
		p++;
	if (*p == '\0')
		return false;
	start = p;
	while (*p != ' ' && *p != '\0')
		p++;
	eq = memchr(start, '=', (size_t)(p - start));
	klen = (size_t)((eq != NULL ? eq : p) - start);
	if (klen >= key_size)
		klen = key_size - 1;
	memcpy(key, start, klen);
	key[klen] = '\0';
	*value_r = eq != NULL ? eq + 1 : NULL;
	*value_len_r = eq != NULL ? (size_t)(p - eq - 1) : 0;
	*pp = p;
	return true;
}

/* ---- blocking lookups on the pool -------------------------------------- */

struct smtp_lookup_job {
	const char *users_file, *address;
	int exists;
};

static int smtp_lookup_work(void *arg)
{
	struct smtp_lookup_job *job = arg;

	job->exists = authdb_user_exists(job->users_file, job->address);
	return 0;
}


/* ---- EHLO / HELO / LHLO --------------------------------------------------- */

static bool smtp_tls_offered(const struct smtp_client *client)
{
	return client->kind != SMTP_KIND_LMTP &&
		linesession_tls_context_available(client->ls) &&
		!linesession_is_tls(client->ls);
}

static bool smtp_auth_offered(const struct smtp_client *client)
{
	return client->kind == SMTP_KIND_SUBMISSION && client->auth_user == NULL &&
		(linesession_is_tls(client->ls) || client->trusted);
}

static int cmd_ehlo(struct smtp_client *client, const char *verb,
		    const char *args, bool esmtp)
{
	const char *host = client->set->smtp_hostname;
	struct buffer out;
	int ret;

	if ((client->kind == SMTP_KIND_LMTP) != (strcasecmp(verb, "LHLO") == 0))
		return smtp_reply_error(client, client->kind == SMTP_KIND_LMTP ?
					"500 5.5.1 This is LMTP: use LHLO" :
					"500 5.5.1 Unknown command (LHLO is for LMTP)");
	if (*args == '\0' || strchr(args, ' ') != NULL || strlen(args) > 255)
		return smtp_reply_error(client, "501 5.5.4 Syntax: %s hostname", verb);
	smtp_transaction_reset(client);
	free(client->helo);
	client->helo = mem_strdup(args);
	client->esmtp = esmtp;
	if (!esmtp)
		return smtp_reply(client, "250 %s", host);
	buffer_init(&out, 0);
	(void)buffer_printf(&out, "250-%s\r\n", host);
	(void)buffer_append_str(&out, "250-PIPELINING\r\n");
	(void)buffer_printf(&out, "250-SIZE %llu\r\n",
			    (unsigned long long)client->set->smtp_max_message_size);
	(void)buffer_append_str(&out, "250-ENHANCEDSTATUSCODES\r\n");
	(void)buffer_append_str(&out, "250-8BITMIME\r\n");
	(void)buffer_append_str(&out, "250-SMTPUTF8\r\n");
	(void)buffer_append_str(&out, "250-CHUNKING\r\n");
	if (smtp_tls_offered(client))
		(void)buffer_append_str(&out, "250-STARTTLS\r\n");
	if (smtp_auth_offered(client))
		(void)buffer_append_str(&out, "250-AUTH PLAIN LOGIN\r\n");
	(void)buffer_append_str(&out, "250 DSN\r\n");
	ret = linesession_write(client->ls, out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* ---- STARTTLS ----------------------------------------------------------------- */

static int cmd_starttls(struct smtp_client *client, const char *args)
{
	if (*args != '\0')
		return smtp_reply_error(client, "501 5.5.4 Syntax: STARTTLS");
	if (client->kind == SMTP_KIND_LMTP ||
	    !linesession_tls_context_available(client->ls))
		return smtp_reply_error(client, "454 4.7.0 TLS not available");
	if (linesession_is_tls(client->ls))
		return smtp_reply_error(client, "503 5.5.1 TLS already active");
	if (smtp_reply(client, "220 2.0.0 Ready to start TLS") < 0 ||
	    linesession_start_tls(client->ls) < 0)
		return -1;
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	smtp_transaction_reset(client);
	MEM_FREE(&client->helo);
	client->esmtp = false;
	return 0;
}

/* ---- AUTH (RFC 4954) ------------------------------------------------------------ */

/* auth_read_response - one SASL response line, base64-decoded into out.
   1 ok, 0 answered already (cancel or bad base64), -1 session ends. */
static int auth_read_response(struct smtp_client *client, const char *challenge,
			      struct buffer *out)
{
	const char *line;
	size_t len;
	bool bare_lf;
	int ret;

	if (smtp_reply(client, "334 %s", challenge) < 0)
		return -1;
	ret = linesession_read_line(client->ls, SMTP_LINE_MAX, false, &line, &len,
				    &bare_lf);
	if (ret < 0)
		return -1;
	if (ret == 0)
		return smtp_reply_error(client, "500 5.5.6 Authentication response "
					"too long") < 0 ? -1 : 0;
	if (len == 1 && line[0] == '*')
		return smtp_reply_error(client, "501 5.7.0 Authentication cancelled")
			< 0 ? -1 : 0;
	if (base64_decode(line, len, out) < 0 || out->used > SMTP_AUTH_MAX)
		return smtp_reply_error(client, "501 5.5.2 Invalid base64 data")
			< 0 ? -1 : 0;
	return 1;
}

/* auth_login - check the credentials; replies in every case */
static int auth_login(struct smtp_client *client, const char *address,
		      const char *password, const char *mech)
{
	struct authdb_verify_job job = {
		.users_file = client->set->users_file,
		.address = address,
		.password = password,
	};
	const char *ip = linesession_peer_ip(client->ls);

	if (password[0] == '\0' || strlen(password) > SMTP_PASSWORD_MAX ||
	    strlen(address) > 254) {
		job.result = AUTHDB_FAILED;
		job.reason = "unusable user name or password";
	} else {
		linesession_run_blocking(client->ls, authdb_verify_job, &job);
	}
	if (job.result == AUTHDB_TEMPFAIL) {
		log_id_error(client->id, "auth: user=%s ip=%s: %s", address, ip,
			     job.reason);
		return smtp_reply(client, "454 4.7.0 Temporary authentication failure");
	}
	if (job.result != AUTHDB_OK) {
		log_id_info(client->id, "auth failed: user=%s ip=%s mech=%s: %s",
			    address, ip, mech, job.reason);
		authdb_ip_failed(ip);
		if (client->set->auth_failure_delay_msecs > 0 &&
		    linesession_sleep(client->ls,
				      client->set->auth_failure_delay_msecs) < 0)
			return -1;
		return smtp_reply_error(client, "535 5.7.8 Authentication credentials "
					"invalid");
	}
	log_id_info(client->id, "login: user=%s ip=%s mech=%s%s", job.user, ip, mech,
		    linesession_is_tls(client->ls) ? " tls" : "");
	client->auth_user = job.user;
	return smtp_reply(client, "235 2.7.0 Authentication successful");
}

static int auth_plain(struct smtp_client *client, const char *initial)
{
	struct buffer dec;
	const char *authz, *authc, *pass;
	int ret;

	buffer_init(&dec, 0);
	if (initial != NULL) {
		if (strcmp(initial, "=") != 0 &&
		    (base64_decode(initial, strlen(initial), &dec) < 0 ||
		     dec.used > SMTP_AUTH_MAX)) {
			buffer_clear(&dec);
			return smtp_reply_error(client, "501 5.5.2 Invalid base64 data");
		}
	} else if ((ret = auth_read_response(client, "", &dec)) <= 0) {
		buffer_clear(&dec);
		return ret;
	}
	(void)buffer_append_byte(&dec, '\0');
	if (sasl_plain_split((char *)dec.data, dec.used - 1, &authz, &authc,
			     &pass) < 0) {
		buffer_clear(&dec);
		return smtp_reply_error(client, "501 5.5.2 Invalid PLAIN response");
	}
	if (*authz != '\0' && strcasecmp(authz, authc) != 0) {
		buffer_clear(&dec);
		return smtp_reply_error(client, "535 5.7.8 Authorization identity "
					"must be the user");
	}
	ret = auth_login(client, authc, pass, "PLAIN");
	explicit_bzero(dec.data, dec.used);
	buffer_clear(&dec);
	return ret;
}

static int auth_login_mech(struct smtp_client *client, const char *initial)
{
	struct buffer user, pass;
	int ret;

	buffer_init(&user, 0);
	buffer_init(&pass, 0);
	if (initial != NULL) {
		if (base64_decode(initial, strlen(initial), &user) < 0 ||
		    user.used > 254) {
			ret = smtp_reply_error(client, "501 5.5.2 Invalid base64 data");
			goto out;
		}
	} else if ((ret = auth_read_response(client, "VXNlcm5hbWU6", &user)) <= 0) {
		goto out;
	}
	if ((ret = auth_read_response(client, "UGFzc3dvcmQ6", &pass)) <= 0)
		goto out;
	(void)buffer_append_byte(&user, '\0');
	(void)buffer_append_byte(&pass, '\0');
	if (strlen((const char *)user.data) != user.used - 1 ||
	    strlen((const char *)pass.data) != pass.used - 1) {
		ret = smtp_reply_error(client, "501 5.5.2 NUL in credentials");
		goto out;
	}
	ret = auth_login(client, (const char *)user.data, (const char *)pass.data,
			 "LOGIN");
out:
	if (pass.data != NULL)
		explicit_bzero(pass.data, pass.used);
	buffer_clear(&user);
	buffer_clear(&pass);
	return ret;
}

static int cmd_auth(struct smtp_client *client, const char *args)
{
	char mech[32];
	const char *initial = NULL, *sp;
	size_t mlen;

	if (client->kind != SMTP_KIND_SUBMISSION)
		return smtp_reply_error(client, "503 5.5.1 AUTH not available here "
					"(use the submission port)");
	if (!client->esmtp)
		return smtp_reply_error(client, "503 5.5.1 Send EHLO first");
	if (client->auth_user != NULL)
		return smtp_reply_error(client, "503 5.5.1 Already authenticated");
	if (client->in_mail)
		return smtp_reply_error(client, "503 5.5.1 AUTH not allowed during "
					"a mail transaction");
	if (!linesession_is_tls(client->ls) && !client->trusted)
		return smtp_reply_error(client, "538 5.7.11 Encryption required for "
					"requested authentication mechanism");
	if (authdb_ip_blocked(linesession_peer_ip(client->ls),
			      client->set->auth_max_failures)) {
		log_id_info(client->id, "auth refused: ip=%s: too many failures",
			    linesession_peer_ip(client->ls));
		return smtp_reply_error(client, "454 4.7.0 Too many failed "
					"authentications; try again later");
	}
	sp = strchr(args, ' ');
	mlen = sp != NULL ? (size_t)(sp - args) : strlen(args);
	if (mlen == 0 || mlen >= sizeof(mech))
		return smtp_reply_error(client, "501 5.5.4 Syntax: AUTH mechanism "
					"[initial-response]");
	memcpy(mech, args, mlen);
	mech[mlen] = '\0';
	if (sp != NULL) {
		initial = sp + 1;
		if (*initial == '\0' || strchr(initial, ' ') != NULL)
			return smtp_reply_error(client, "501 5.5.4 Syntax: AUTH "
						"mechanism [initial-response]");
	}
	if (strcasecmp(mech, "PLAIN") == 0)
		return auth_plain(client, initial);
	if (strcasecmp(mech, "LOGIN") == 0)
		return auth_login_mech(client, initial);
	return smtp_reply_error(client, "504 5.5.4 Unrecognized authentication type");
}

/* ---- MAIL ---------------------------------------------------------------------- */

/* mail_param - one MAIL parameter; NULL or the error reply */
static const char *mail_param(struct smtp_client *client, const char *key,
			      const char *value, size_t vlen)
{
	char v[128];

	if (value != NULL && vlen < sizeof(v)) {
		memcpy(v, value, vlen);
		v[vlen] = '\0';
	} else {
		v[0] = '\0';
	}
	if (strcasecmp(key, "SIZE") == 0) {
		if (value == NULL || str_to_uint64(v, &client->declared_size) < 0)
			return "501 5.5.4 Bad SIZE value";
		if (client->declared_size > client->set->smtp_max_message_size)
			return "552 5.3.4 Message size exceeds fixed maximum message size";
		return NULL;
	}
	if (strcasecmp(key, "BODY") == 0) {
		if (value != NULL && strcasecmp(v, "7BIT") == 0)
			client->body = SMTP_BODY_7BIT;
		else if (value != NULL && strcasecmp(v, "8BITMIME") == 0)
			client->body = SMTP_BODY_8BITMIME;
		else
			return "501 5.5.4 Unsupported BODY type";
		return NULL;
	}
	if (strcasecmp(key, "SMTPUTF8") == 0) {
		if (value != NULL)
			return "501 5.5.4 SMTPUTF8 takes no value";
		client->smtputf8 = true;
		return NULL;
	}
	if (strcasecmp(key, "RET") == 0) {
		if (value != NULL && strcasecmp(v, "FULL") == 0)
			client->ret = QUEUE_RET_FULL;
		else if (value != NULL && strcasecmp(v, "HDRS") == 0)
			client->ret = QUEUE_RET_HDRS;
		else
			return "501 5.5.4 Bad RET value";
		return NULL;
	}
	if (strcasecmp(key, "ENVID") == 0) {
		char *raw, *decoded;

		if (value == NULL || client->envid != NULL)
			return "501 5.5.4 Bad ENVID";
		raw = mem_strndup(value, vlen);
		decoded = smtp_xtext_decode(raw, SMTP_ENVID_MAX);
		free(raw);
		if (decoded == NULL || decoded[0] == '\0') {
			free(decoded);
			return "501 5.5.4 Bad ENVID value";
		}
		client->envid = decoded;
		return NULL;
	}
	if (strcasecmp(key, "AUTH") == 0) {
		/* RFC 4954 5: the original submitter; we only relay for our
		   own users, so it is accepted and not passed on. */
		return value == NULL ? "501 5.5.4 Bad AUTH parameter" : NULL;
	}
	return "555 5.5.4 Unsupported MAIL parameter";
}

static int cmd_mail(struct smtp_client *client, const char *args)
{
	const char *p = args, *error, *value;
	char key[32], *sender;
	size_t vlen;
	bool utf8;

	if (client->helo == NULL)
		return smtp_reply_error(client, "503 5.5.1 Send %s first",
					client->kind == SMTP_KIND_LMTP ? "LHLO" : "EHLO/HELO");
	if (client->in_mail)
		return smtp_reply_error(client, "503 5.5.1 Nested MAIL command");
	if (client->kind == SMTP_KIND_SUBMISSION && client->auth_user == NULL)
		return smtp_reply_error(client, "530 5.7.0 Authentication required");
	if (linesession_shutting_down(client->ls))
		return linesession_close(client->ls, "%s",
					 linesession_end_reply(client->ls));
	if (strncasecmp(p, "FROM:", 5) != 0)
		return smtp_reply_error(client, "501 5.5.4 Syntax: MAIL FROM:<address>");
	p += 5;
	while (*p == ' ')
		p++;
	if ((error = smtp_parse_path(&p, true, &sender, &utf8)) != NULL)
		return smtp_reply_error(client, "%s", error);
	if (*p != '\0' && *p != ' ') {
		free(sender);
		return smtp_reply_error(client, "501 5.5.4 Syntax: MAIL FROM:<address>");
	}
	client->in_mail = true;
	client->sender = sender;
	while (next_param(&p, key, sizeof(key), &value, &vlen)) {
		if (!client->esmtp)
			error = "555 5.5.4 Parameters need EHLO";
		else
			error = mail_param(client, key, value, vlen);
		if (error != NULL) {
			smtp_transaction_reset(client);
			return smtp_reply_error(client, "%s", error);
		}
	}
	if (utf8 && !client->smtputf8) {
		smtp_transaction_reset(client);
		return smtp_reply_error(client, "553 5.6.7 Non-ASCII address needs "
					"SMTPUTF8");
	}
	if (client->kind == SMTP_KIND_SUBMISSION &&
	    strcasecmp(sender, client->auth_user) != 0) {
		log_id_info(client->id, "sender <%s> refused for user=%s", sender,
			    client->auth_user);
		smtp_transaction_reset(client);
		return smtp_reply_error(client, "553 5.7.1 Sender address not owned "
					"by user %s", client->auth_user);
	}
	return smtp_reply(client, "250 2.1.0 Ok");
}

/* ---- RCPT ---------------------------------------------------------------------- */

static const char *rcpt_param(struct smtp_client *client, struct smtp_rcpt *rcpt,
			      const char *key, const char *value, size_t vlen)
{
	if (strcasecmp(key, "NOTIFY") == 0) {
		const char *p = value, *end = value + vlen;

		if (value == NULL || vlen == 0 || rcpt->notify != 0)
			return "501 5.5.4 Bad NOTIFY";
		while (p < end) {
			const char *comma = memchr(p, ',', (size_t)(end - p));
			size_t n = (size_t)((comma != NULL ? comma : end) - p);

			if (n == 5 && strncasecmp(p, "NEVER", 5) == 0)
				rcpt->notify |= QUEUE_NOTIFY_NEVER;
			else if (n == 7 && strncasecmp(p, "SUCCESS", 7) == 0)
				rcpt->notify |= QUEUE_NOTIFY_SUCCESS;
			else if (n == 7 && strncasecmp(p, "FAILURE", 7) == 0)
				rcpt->notify |= QUEUE_NOTIFY_FAILURE;
			else if (n == 5 && strncasecmp(p, "DELAY", 5) == 0)
				rcpt->notify |= QUEUE_NOTIFY_DELAY;
			else
				return "501 5.5.4 Bad NOTIFY value";
			p += n + (comma != NULL ? 1 : 0);
		}
		if ((rcpt->notify & QUEUE_NOTIFY_NEVER) != 0 &&
		    rcpt->notify != QUEUE_NOTIFY_NEVER)
			return "501 5.5.4 NOTIFY=NEVER cannot be combined";
		return NULL;
	}
	if (strcasecmp(key, "ORCPT") == 0) {
		const char *semi;
		char *raw, *decoded;

		if (value == NULL || rcpt->orcpt != NULL ||
		    (semi = memchr(value, ';', vlen)) == NULL || semi == value)
			return "501 5.5.4 Bad ORCPT";
		raw = mem_strndup(semi + 1, vlen - (size_t)(semi + 1 - value));
		decoded = smtp_xtext_decode(raw, SMTP_ORCPT_MAX);
		free(raw);
		if (decoded == NULL) {
			return "501 5.5.4 Bad ORCPT value";
		}
		rcpt->orcpt = mem_printf("%.*s;%s", (int)(semi - value), value, decoded);
		free(decoded);
		return NULL;
	}
	(void)client;
	return "555 5.5.4 Unsupported RCPT parameter";
}

/* rcpt_quota_full - would one more message of the declared size pass a
   quota limit of the local user? */
static int rcpt_quota_full(struct smtp_client *client, const char *user,
			   bool *full_r)
{
	struct store_user *su = NULL;
	int ret;

	*full_r = false;
	ret = store_user_open(client->store, client->sio, user, 0, &su, NULL);
	if (ret == STORE_ERR_NOTFOUND)
		return 0;	/* no spool yet: nothing used */
	if (ret != STORE_OK)
		return -1;
	ret = store_quota_check(su, client->declared_size, 1);
	store_user_close(&su);
	if (ret == STORE_ERR_OVERQUOTA) {
		*full_r = true;
		return 0;
	}
	return ret == STORE_OK ? 0 : -1;
}

/* rcpt_check - may rcpt be accepted? 1 yes (rcpt->user set for a local
   user, NULL for a remote recipient), 0 refused (replied), -1 the
   session ends */
static int rcpt_check(struct smtp_client *client, struct smtp_rcpt *rcpt)
{
	const char *addr = rcpt->address;
	const char *domain = smtp_address_domain(addr);
	struct smtp_lookup_job job = { .users_file = client->set->users_file };
	char *lookup;
	bool local, full;

	if (strchr(addr, '@') == NULL) {
		/* <postmaster>: the first local domain's postmaster. */
		if (client->set->local_domains.count == 0)
			return smtp_reply_error(client, "550 5.1.1 <%s>: no postmaster "
						"here", addr);
		lookup = mem_printf("postmaster@%s", client->set->local_domains.items[0]);
		local = true;
	} else {
		lookup = str_lcase(mem_strdup(addr));
		local = client->kind == SMTP_KIND_LMTP ||
			settings_is_local_domain(client->set, domain);
	}
	if (!local) {
		free(lookup);
		if (client->kind != SMTP_KIND_SUBMISSION)
			return smtp_reply_error(client, "550 5.1.1 <%s>: Relay access "
						"denied", addr);
		if (client->queue == NULL)
			return smtp_reply_error(client, "451 4.3.0 <%s>: Outbound queue "
						"unavailable", addr);
		return 1;
	}
	if (client->store == NULL) {
		free(lookup);
		return smtp_reply_error(client, "451 4.3.0 <%s>: Mail storage "
					"temporarily unavailable", addr);
	}
	job.address = lookup;
	linesession_run_blocking(client->ls, smtp_lookup_work, &job);
	if (job.exists < 0) {
		free(lookup);
		return smtp_reply_error(client, "451 4.3.0 <%s>: User lookup "
					"temporarily unavailable", addr);
	}
	if (job.exists == 0) {
		free(lookup);
		return smtp_reply_error(client, "550 5.1.1 <%s>: User unknown", addr);
	}
	if (rcpt_quota_full(client, lookup, &full) < 0) {
		free(lookup);
		return smtp_reply_error(client, "451 4.3.0 <%s>: Mail storage "
					"temporarily unavailable", addr);
	}
	if (full) {
		free(lookup);
		return smtp_reply_error(client, "452 4.2.2 <%s>: Mailbox full", addr);
	}
	rcpt->user = lookup;
	return 1;
}

static int cmd_rcpt(struct smtp_client *client, const char *args)
{
	struct smtp_rcpt rcpt = { .address = NULL };
	const char *p = args, *error, *value;
	char key[32];
	size_t vlen;
	bool utf8;
	int ret;

	if (!client->in_mail)
		return smtp_reply_error(client, "503 5.5.1 Need MAIL before RCPT");
	if (client->data != NULL)
		return smtp_reply_error(client, "503 5.5.1 RCPT not allowed after BDAT");
	if (client->rcpt_count >= client->set->smtp_max_recipients)
		return smtp_reply_error(client, "452 4.5.3 Too many recipients");
	if (strncasecmp(p, "TO:", 3) != 0)
		return smtp_reply_error(client, "501 5.5.4 Syntax: RCPT TO:<address>");
	p += 3;
	while (*p == ' ')
		p++;
	if ((error = smtp_parse_path(&p, false, &rcpt.address, &utf8)) != NULL)
		return smtp_reply_error(client, "%s", error);
	error = NULL;
	if (*p != '\0' && *p != ' ')
		error = "501 5.5.4 Syntax: RCPT TO:<address>";
	while (error == NULL && next_param(&p, key, sizeof(key), &value, &vlen)) {
		if (!client->esmtp)
			error = "555 5.5.4 Parameters need EHLO";
		else
			error = rcpt_param(client, &rcpt, key, value, vlen);
	}
	if (error == NULL && utf8 && !client->smtputf8)
		error = "553 5.6.7 Non-ASCII address needs SMTPUTF8";
	if (error != NULL) {
		ret = smtp_reply_error(client, "%s", error);
		goto fail;
	}
	ret = rcpt_check(client, &rcpt);
	if (ret <= 0)
		goto fail;
	if (client->rcpt_count == client->rcpt_alloc) {
		client->rcpt_alloc = client->rcpt_alloc == 0 ? 8 : client->rcpt_alloc * 2;
		client->rcpts = mem_realloc(client->rcpts, client->rcpt_alloc *
					    sizeof(*client->rcpts));
	}
	client->rcpts[client->rcpt_count++] = rcpt;
	return smtp_reply(client, "250 2.1.5 Ok");
fail:
	free(rcpt.address);
	free(rcpt.user);
	free(rcpt.orcpt);
	return ret < 0 ? -1 : 0;
}

/* ---- the rest ---------------------------------------------------------------- */

static int cmd_data(struct smtp_client *client, const char *args)
{
	if (*args != '\0')
		return smtp_reply_error(client, "501 5.5.4 Syntax: DATA");
	if (!client->in_mail)
		return smtp_reply_error(client, "503 5.5.1 Need MAIL command");
	if (client->data != NULL || client->bdat_failed)
		return smtp_reply_error(client, "503 5.5.1 DATA not allowed after BDAT");
	if (client->rcpt_count == 0)	/* RFC 2033 4.2 wants 503 for LMTP */
		return smtp_reply_error(client, client->kind == SMTP_KIND_LMTP ?
					"503 5.5.1 No valid recipients" :
					"554 5.5.1 No valid recipients");
	return smtp_data_run(client);
}

static int cmd_bdat(struct smtp_client *client, const char *args)
{
	const char *sp = strchr(args, ' ');
	char num[24];
	uint64_t size;
	bool last = false;
	size_t nlen = sp != NULL ? (size_t)(sp - args) : strlen(args);

	if (nlen == 0 || nlen >= sizeof(num))
		return linesession_close(client->ls, "501 5.5.4 Syntax: BDAT size [LAST]");
	memcpy(num, args, nlen);
	num[nlen] = '\0';
	if (str_to_uint64(num, &size) < 0)
		return linesession_close(client->ls, "501 5.5.4 Syntax: BDAT size [LAST]");
	if (sp != NULL) {
		if (strcasecmp(sp + 1, "LAST") != 0)
			return linesession_close(client->ls, "501 5.5.4 Syntax: BDAT "
						 "size [LAST]");
		last = true;
	}
	/* The chunk follows whatever we answer: smtp_bdat_run() reads it
	   even when the transaction cannot go on. */
	return smtp_bdat_run(client, size, last);
}

static int cmd_rset(struct smtp_client *client, const char *args)
{
	if (*args != '\0')
		return smtp_reply_error(client, "501 5.5.4 Syntax: RSET");
	smtp_transaction_reset(client);
	return smtp_reply(client, "250 2.0.0 Ok");
}

static int cmd_noop(struct smtp_client *client, const char *args ATTR_UNUSED)
{
	return smtp_reply(client, "250 2.0.0 Ok");
}

static int cmd_quit(struct smtp_client *client, const char *args ATTR_UNUSED)
{
	client->quit = true;
	(void)smtp_reply(client, "221 2.0.0 %s Bye", client->set->smtp_hostname);
	return -1;
}

static int cmd_vrfy(struct smtp_client *client, const char *args)
{
	if (*args == '\0')
		return smtp_reply_error(client, "501 5.5.4 Syntax: VRFY address");
	/* RFC 5321 3.5.3: we do not disclose users. */
	return smtp_reply(client, "252 2.5.0 Cannot VRFY user, but will accept "
			  "message and attempt delivery");
}

static int cmd_help(struct smtp_client *client, const char *args ATTR_UNUSED)
{
	return smtp_reply(client, "214 2.0.0 Commands: %s MAIL RCPT DATA BDAT RSET "
			  "NOOP QUIT VRFY HELP%s%s",
			  client->kind == SMTP_KIND_LMTP ? "LHLO" : "EHLO HELO",
			  client->kind != SMTP_KIND_LMTP ? " STARTTLS" : "",
			  client->kind == SMTP_KIND_SUBMISSION ? " AUTH" : "");
}

int smtp_command_run(struct smtp_client *client, const char *line, size_t len)
{
	char verb[16];
	const char *args;
	size_t vlen = strcspn(line, " ");

	if (len == 0 || vlen >= sizeof(verb))
		return smtp_reply_error(client, "500 5.5.2 Syntax error, command "
					"unrecognized");
	memcpy(verb, line, vlen);
	verb[vlen] = '\0';
	args = line[vlen] == ' ' ? line + vlen + 1 : line + vlen;
	if (strcasecmp(verb, "EHLO") == 0 || strcasecmp(verb, "LHLO") == 0)
		return cmd_ehlo(client, verb, args, true);
	if (strcasecmp(verb, "HELO") == 0)
		return cmd_ehlo(client, verb, args, false);
	if (strcasecmp(verb, "MAIL") == 0)
		return cmd_mail(client, args);
	if (strcasecmp(verb, "RCPT") == 0)
		return cmd_rcpt(client, args);
	if (strcasecmp(verb, "DATA") == 0)
		return cmd_data(client, args);
	if (strcasecmp(verb, "BDAT") == 0)
		return cmd_bdat(client, args);
	if (strcasecmp(verb, "RSET") == 0)
		return cmd_rset(client, args);
	if (strcasecmp(verb, "NOOP") == 0)
		return cmd_noop(client, args);
	if (strcasecmp(verb, "QUIT") == 0)
		return cmd_quit(client, args);
	if (strcasecmp(verb, "STARTTLS") == 0)
		return cmd_starttls(client, args);
	if (strcasecmp(verb, "AUTH") == 0)
		return cmd_auth(client, args);
	if (strcasecmp(verb, "VRFY") == 0)
		return cmd_vrfy(client, args);
	if (strcasecmp(verb, "HELP") == 0)
		return cmd_help(client, args);
	/* A web browser or other protocol talking to us: end it at once. */
	if (strcmp(verb, "GET") == 0 || strcmp(verb, "POST") == 0 ||
	    strcmp(verb, "CONNECT") == 0)
		return linesession_close(client->ls, "221 2.7.0 This is an SMTP "
					 "server, not a web server; goodbye");
	return smtp_reply_error(client, "500 5.5.2 Syntax error, command "
				"unrecognized");
}
