/*
 * transport.c - the outbound SMTP client used by the queue runner: route a
 * message (relayhost, MX records, or the domain's own addresses), open a
 * blocking session with a deadline on every step, and record one result
 * per recipient (see transport.h for the contract).
 *
 * Why one file of this size: the route (DNS), the connection (poll-based
 * I/O with optional TLS) and the SMTP dialogue share one small failure
 * model, and splitting them would mean exporting it. The parts are in that
 * order below.
 *
 * Failure model. Every attempt at one address ends in one of two ways:
 *  - "try the next address": no connection, a greeting or EHLO refusal,
 *    TLS trouble, MAIL FROM refused with 4xx, or the connection lost before
 *    the final dot was sent. Nothing was delivered, so another MX may take
 *    the message. The failure is remembered (a temporary one wins over a
 *    permanent one, since some other host might still say yes later) and
 *    given to every recipient still pending when no address is left.
 *  - "final": once MAIL FROM is accepted, the recipients' answers are
 *    what they are; and once the final dot has been sent, a lost
 *    connection must not lead to a second copy via another MX, so it is a
 *    temporary failure for this attempt.
 * Recipients answered 4xx/5xx at RCPT keep that answer even when the
 * session later fails; accepted recipients only become OK with the reply
 * to the final dot.
 *
 * Memory: replies are read into a bounded buffer (TRANSPORT_LINE_MAX per
 * line, TRANSPORT_REPLY_MAX per reply), DNS answers into one 64 KiB
 * buffer, the body is streamed in TRANSPORT_CHUNK pieces. Reply text that
 * goes into a diagnostic is sanitized (printable ASCII only) and capped.
 *
 * Writes through OpenSSL use write(2), which raises SIGPIPE on a closed
 * connection; the daemon (and the test driver) ignore SIGPIPE.
 */
#include "lib/lib.h"
#include "lib/base64.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "io/tls.h"
#include "queue.h"
#include "transport.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <resolv.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* RFC 5321 4.5.3.2 timeouts, and our connect limit. */
#define TRANSPORT_CONNECT_MSECS (30 * 1000)
#define TRANSPORT_REPLY_MSECS (5 * 60 * 1000)
#define TRANSPORT_DATA_END_MSECS (10 * 60 * 1000)
#define TRANSPORT_QUIT_MSECS (10 * 1000)
/* RFC 5321 4.5.3.1.5 allows 512 octets; we take some slack. */
#define TRANSPORT_LINE_MAX 2048
#define TRANSPORT_REPLY_MAX (16 * 1024)
#define TRANSPORT_REPLY_LINES_MAX 100
/* Reply text copied into a diagnostic. */
#define TRANSPORT_DIAG_TEXT_MAX 400
#define TRANSPORT_MX_MAX 32
/* Connection attempts per delivery (Postfix's limit is similar). */
#define TRANSPORT_ATTEMPTS_MAX 10
/* RCPT commands sent before their replies are read (PIPELINING). */
#define TRANSPORT_PIPELINE_BATCH 100
#define TRANSPORT_CHUNK (64 * 1024)
#define TRANSPORT_PASSWORD_MAX 1024

enum smtp_ext {
	SMTP_EXT_STARTTLS = 1 << 0,
	SMTP_EXT_SIZE = 1 << 1,
	SMTP_EXT_8BITMIME = 1 << 2,
	SMTP_EXT_SMTPUTF8 = 1 << 3,
	SMTP_EXT_DSN = 1 << 4,
	SMTP_EXT_PIPELINING = 1 << 5,
	SMTP_EXT_AUTH = 1 << 6,
	SMTP_EXT_AUTH_PLAIN = 1 << 7,
	SMTP_EXT_AUTH_LOGIN = 1 << 8,
};

/* One server reply. */
struct smtp_reply {
	unsigned int code;	/* 200..599 */
	char status[16];	/* enhanced status of the first line, or "" */
	struct buffer text;	/* each line's text after "NNN-", '\n'-ended */
};

/* One connection to one address. */
struct smtp_conn {
	int fd;
	SSL *ssl;			/* owned; NULL before STARTTLS */
	const char *log_id;		/* borrowed */
	const char *host;		/* borrowed: the name dialled (or the IP) */
	char ip[NET_ADDR_STRLEN];
	char where[NET_ADDR_STRLEN + NS_MAXDNAME + 8]; /* "host[ip]:port" */
	bool loopback;
	struct buffer in;		/* received, not yet parsed */
	struct buffer out;		/* commands not yet sent */
	char error[256];		/* the reason of the last I/O failure */
	unsigned int ext;		/* SMTP_EXT_* from the last EHLO */
	uint64_t size_max;		/* SIZE value, 0 = none given */
};

/* One MX host (or the implicit one). */
struct mx_host {
	char name[NS_MAXDNAME];
	unsigned int preference;
	uint32_t random;
};

/* What a call of transport_deliver() is doing. */
struct delivery {
	const struct settings *set;
	const struct transport_message *msg;
	struct transport_rcpt *rcpts;	/* borrowed */
	size_t count;
	bool *accepted;			/* owned: RCPT got 2xx this session */
	const char *log_id;
	bool to_relayhost;
	bool done;			/* every pending rcpt got its answer */
	bool tls_failed_plain_retry;	/* queue_tls=may: retry in clear */
	unsigned int attempts;
	struct tls_context *tls;	/* owned; made at the first STARTTLS */
	char *password;			/* owned, wiped on free */
	/* The remembered "try the next address" failure. */
	enum transport_result fail_result;
	char fail_status[16];
	char *fail_diagnostic;		/* owned */
	char *fail_mta;			/* owned */
};

/* ---- small helpers ----------------------------------------------------- */

static int64_t transport_now_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool transport_is_ascii(const char *str)
{
	for (; *str != '\0'; str++) {
		if ((unsigned char)*str >= 0x80)
			return false;
	}
	return true;
}

/* transport_address_is_safe - no control characters, no angle brackets or
   spaces that would break out of "<...>" on the command line */
static bool transport_address_is_safe(const char *addr)
{
	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>')
			return false;
	}
	return strlen(addr) <= 1000;
}

/* transport_sanitize_append - printable ASCII of text[0..len) to out, other
   bytes as '?', at most max bytes in all */
static void transport_sanitize_append(struct buffer *out, const char *text,
				      size_t len, size_t max)
{
	for (size_t i = 0; i < len && out->used < max; i++) {
		unsigned char ch = (unsigned char)text[i];

		if (ch == '\n' || ch == '\t')
			ch = ' ';
		else if (ch < 0x20 || ch >= 0x7f)
			ch = '?';
		(void)buffer_append_byte(out, ch);
	}
}

/* xtext_append - RFC 3461 4: bytes outside "!".."~", '+' and '=' as +HH */
static void xtext_append(struct buffer *out, const char *str)
{
	for (const unsigned char *p = (const unsigned char *)str; *p != '\0'; p++) {
		if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
			(void)buffer_printf(out, "+%02X", *p);
		else
			(void)buffer_append_byte(out, *p);
	}
}

static enum transport_result transport_result_of_code(unsigned int code)
{
	switch (code / 100) {
	case 2:
		return TRANSPORT_OK;
	case 5:
		return TRANSPORT_PERM;
	default:
		return TRANSPORT_TEMP;
	}
}

static const char *transport_result_name(enum transport_result result)
{
	switch (result) {
	case TRANSPORT_OK:
		return "sent";
	case TRANSPORT_TEMP:
		return "deferred";
	case TRANSPORT_PERM:
		return "bounced";
	case TRANSPORT_PENDING:
		break;
	}
	return "pending";
}

/* ---- recipients' results ----------------------------------------------- */

/* rcpt_set - give one recipient its result (the out strings are replaced) */
static void rcpt_set(struct transport_rcpt *rcpt, enum transport_result result,
		     const char *status, const char *diagnostic,
		     const char *remote_mta)
{
	rcpt->result = result;
	snprintf(rcpt->status, sizeof(rcpt->status), "%s", status);
	free(rcpt->diagnostic);
	rcpt->diagnostic = mem_strdup(diagnostic);
	free(rcpt->remote_mta);
	rcpt->remote_mta = mem_strdup(remote_mta);
}

/* delivery_fail_pending - the same result for every pending recipient */
static void delivery_fail_pending(struct delivery *d,
				  enum transport_result result,
				  const char *status, const char *diagnostic,
				  const char *remote_mta)
{
	for (size_t i = 0; i < d->count; i++) {
		if (d->rcpts[i].result == TRANSPORT_PENDING)
			rcpt_set(&d->rcpts[i], result, status, diagnostic,
				 remote_mta);
	}
}

static size_t delivery_pending_count(const struct delivery *d)
{
	size_t n = 0;

	for (size_t i = 0; i < d->count; i++) {
		if (d->rcpts[i].result == TRANSPORT_PENDING)
			n++;
	}
	return n;
}

/* delivery_remember - keep a "try the next address" failure; a temporary
   one is not replaced by a permanent one */
static void ATTR_FORMAT(5, 6)
delivery_remember(struct delivery *d, enum transport_result result,
		  const char *status, const char *remote_mta,
		  const char *fmt, ...)
{
	va_list args;

	if (d->fail_result == TRANSPORT_TEMP && result == TRANSPORT_PERM)
		return;
	d->fail_result = result;
	snprintf(d->fail_status, sizeof(d->fail_status), "%s", status);
	free(d->fail_diagnostic);
	va_start(args, fmt);
	d->fail_diagnostic = mem_vprintf(fmt, args);
	va_end(args);
	free(d->fail_mta);
	d->fail_mta = mem_strdup(remote_mta);
	log_id_info(d->log_id, "%s (%s)", d->fail_diagnostic, d->fail_status);
}

/* ---- DNS --------------------------------------------------------------- */

enum dns_result {
	DNS_FOUND,		/* MX hosts returned */
	DNS_NO_RECORDS,		/* the name exists, no MX */
	DNS_NULL_MX,		/* RFC 7505 */
	DNS_NOT_FOUND,		/* NXDOMAIN */
	DNS_TEMP_FAIL,
};

static int mx_host_cmp(const void *a, const void *b)
{
	const struct mx_host *x = a, *y = b;

	if (x->preference != y->preference)
		return x->preference < y->preference ? -1 : 1;
	return x->random < y->random ? -1 : x->random > y->random;
}

static uint32_t dns_random(void)
{
	uint32_t value;

	if (getrandom(&value, sizeof(value), GRND_NONBLOCK) != sizeof(value))
		value = (uint32_t)transport_now_msecs() * 2654435761u;
	return value;
}

/* dns_parse_mx - the MX records of an answer into hosts[] */
static enum dns_result dns_parse_mx(const unsigned char *answer, int len,
				    struct mx_host *hosts, size_t *count_r)
{
	ns_msg msg;
	ns_rr rr;
	size_t count = 0;
	bool null_mx = false;

	if (ns_initparse(answer, len, &msg) < 0)
		return DNS_TEMP_FAIL;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		struct mx_host *host = &hosts[count];

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			return DNS_TEMP_FAIL;
		if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in)
			continue;
		if (ns_rr_rdlen(rr) < 3)
			return DNS_TEMP_FAIL;
		if (dn_expand(ns_msg_base(msg), ns_msg_end(msg),
			      ns_rr_rdata(rr) + 2, host->name,
			      sizeof(host->name)) < 0)
			return DNS_TEMP_FAIL;
		if (host->name[0] == '\0') {
			/* "." - a null MX */
			null_mx = true;
			continue;
		}
		if (count == TRANSPORT_MX_MAX)
			continue;
		host->preference = ns_get16(ns_rr_rdata(rr));
		host->random = dns_random();
		str_lcase(host->name);
		count++;
	}
	*count_r = count;
	if (count == 0)
		return null_mx ? DNS_NULL_MX : DNS_NO_RECORDS;
	qsort(hosts, count, sizeof(hosts[0]), mx_host_cmp);
	return DNS_FOUND;
}

/* dns_lookup_mx - MX hosts of domain, lowest preference first (equal ones
   shuffled); hosts has room for TRANSPORT_MX_MAX. Thread-safe: a resolver
   state of its own per call. */
static enum dns_result dns_lookup_mx(const char *domain, struct mx_host *hosts,
				     size_t *count_r)
{
	struct __res_state state;
	unsigned char *answer;
	enum dns_result result;
	int len;

	*count_r = 0;
	memset(&state, 0, sizeof(state));
	if (res_ninit(&state) < 0)
		return DNS_TEMP_FAIL;
	answer = mem_zalloc(NS_MAXMSG);
	len = res_nquery(&state, domain, ns_c_in, ns_t_mx, answer, NS_MAXMSG);
	if (len < 0) {
		switch (state.res_h_errno) {
		case HOST_NOT_FOUND:
			result = DNS_NOT_FOUND;
			break;
		case NO_DATA:
			result = DNS_NO_RECORDS;
			break;
		default:
			result = DNS_TEMP_FAIL;
			break;
		}
	} else {
		result = dns_parse_mx(answer, len, hosts, count_r);
	}
	res_nclose(&state);
	free(answer);
	return result;
}

/* ---- connection I/O ---------------------------------------------------- */

/* Set by transport_abort_all(): every wait ends at once. */
static atomic_bool transport_aborting;

void transport_abort_all(void)
{
	atomic_store(&transport_aborting, true);
}

/* Waits are cut into slices this long to notice an abort. */
#define TRANSPORT_ABORT_CHECK_MSECS 200

/* conn_wait - poll for events until deadline; 0 or
   -ETIMEDOUT/-ECANCELED/-errno */
static int conn_wait(struct smtp_conn *c, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - transport_now_msecs();
		struct pollfd pfd = { .fd = c->fd, .events = events };
		int ret;

		if (atomic_load(&transport_aborting))
			return -ECANCELED;
		if (left <= 0)
			return -ETIMEDOUT;
		if (left > TRANSPORT_ABORT_CHECK_MSECS)
			left = TRANSPORT_ABORT_CHECK_MSECS;
		ret = poll(&pfd, 1, (int)left);
		if (ret > 0)
			return 0;	/* errors show up in the next call */
		if (ret < 0 && errno != EINTR)
			return -errno;
	}
}

static int conn_fail_errno(struct smtp_conn *c, int err)
{
	snprintf(c->error, sizeof(c->error), "%s",
		 err == ETIMEDOUT ? "timed out" : strerror(err));
	return -1;
}

/* conn_fail_tls - c->error from the oldest OpenSSL error */
static int conn_fail_tls(struct smtp_conn *c, const char *what)
{
	char reason[200];
	unsigned long code = ERR_get_error();

	if (code == 0)
		snprintf(reason, sizeof(reason), "unknown error");
	else
		ERR_error_string_n(code, reason, sizeof(reason));
	ERR_clear_error();
	snprintf(c->error, sizeof(c->error), "%s: %s", what, reason);
	return -1;
}

/* conn_ssl_wait - after an SSL call failed with ret: wait for the socket
   when OpenSSL asks for it (0), else describe the failure (-1) */
static int conn_ssl_wait(struct smtp_conn *c, int ret, int64_t deadline)
{
	int err = SSL_get_error(c->ssl, ret), wait_ret;

	switch (err) {
	case SSL_ERROR_WANT_READ:
		wait_ret = conn_wait(c, POLLIN, deadline);
		break;
	case SSL_ERROR_WANT_WRITE:
		wait_ret = conn_wait(c, POLLOUT, deadline);
		break;
	case SSL_ERROR_ZERO_RETURN:
		snprintf(c->error, sizeof(c->error), "connection closed");
		return -1;
	case SSL_ERROR_SYSCALL:
		if (errno != 0)
			return conn_fail_errno(c, errno);
		snprintf(c->error, sizeof(c->error), "connection closed");
		return -1;
	default:
		return conn_fail_tls(c, "TLS");
	}
	return wait_ret < 0 ? conn_fail_errno(c, -wait_ret) : 0;
}

/* conn_read - some bytes into buf; >0, or -1 with c->error (EOF too) */
static ssize_t conn_read(struct smtp_conn *c, void *buf, size_t size,
			 int64_t deadline)
{
	for (;;) {
		if (c->ssl != NULL) {
			size_t n;
			int ret;

			ERR_clear_error();
			errno = 0;
			ret = SSL_read_ex(c->ssl, buf, size, &n);
			if (ret == 1)
				return (ssize_t)n;
			if (conn_ssl_wait(c, ret, deadline) < 0)
				return -1;
			continue;
		}
		ssize_t n = recv(c->fd, buf, size, 0);

		if (n > 0)
			return n;
		if (n == 0) {
			snprintf(c->error, sizeof(c->error), "connection closed");
			return -1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return conn_fail_errno(c, errno);
		int ret = conn_wait(c, POLLIN, deadline);

		if (ret < 0)
			return conn_fail_errno(c, -ret);
	}
}

/* conn_write_all - all of data[0..len); 0 or -1 with c->error */
static int conn_write_all(struct smtp_conn *c, const void *data, size_t len,
			  int64_t deadline)
{
	const unsigned char *p = data;

	while (len > 0) {
		size_t n = 0;

		if (c->ssl != NULL) {
			int ret;

			ERR_clear_error();
			errno = 0;
			ret = SSL_write_ex(c->ssl, p, len, &n);
			if (ret != 1) {
				if (conn_ssl_wait(c, ret, deadline) < 0)
					return -1;
				continue;
			}
		} else {
			ssize_t sent = send(c->fd, p, len, MSG_NOSIGNAL);

			if (sent < 0) {
				if (errno == EINTR)
					continue;
				if (errno != EAGAIN && errno != EWOULDBLOCK)
					return conn_fail_errno(c, errno);
				int ret = conn_wait(c, POLLOUT, deadline);

				if (ret < 0)
					return conn_fail_errno(c, -ret);
				continue;
			}
			n = (size_t)sent;
		}
		p += n;
		len -= n;
	}
	return 0;
}

/* conn_flush - send what is in c->out */
static int conn_flush(struct smtp_conn *c, int64_t timeout_msecs)
{
	int ret = conn_write_all(c, c->out.data, c->out.used,
				 transport_now_msecs() + timeout_msecs);

	buffer_reset(&c->out);
	return ret;
}

/* conn_read_line - the next line (without CRLF) in *line_r, valid until
   the next read; -1 with c->error */
static int conn_read_line(struct smtp_conn *c, int64_t deadline,
			  const char **line_r, size_t *len_r)
{
	for (;;) {
		unsigned char *nl = c->in.used == 0 ? NULL :
			memchr(c->in.data, '\n', c->in.used);

		if (nl != NULL) {
			size_t len = (size_t)(nl - c->in.data);

			*line_r = (const char *)c->in.data;
			*len_r = len > 0 && nl[-1] == '\r' ? len - 1 : len;
			return 0;
		}
		if (c->in.used >= TRANSPORT_LINE_MAX) {
			snprintf(c->error, sizeof(c->error),
				 "reply line longer than %d bytes",
				 TRANSPORT_LINE_MAX);
			return -1;
		}
		size_t room = TRANSPORT_LINE_MAX - c->in.used;
		unsigned char *space = buffer_reserve(&c->in, room);
		ssize_t n;

		if (space == NULL)
			log_panic("transport: input buffer limit too small");
		n = conn_read(c, space, room, deadline);
		if (n < 0)
			return -1;
		buffer_commit(&c->in, (size_t)n);
	}
}

/* conn_consume_line - drop the line returned by conn_read_line() */
static void conn_consume_line(struct smtp_conn *c)
{
	unsigned char *nl = memchr(c->in.data, '\n', c->in.used);

	buffer_consume(&c->in, (size_t)(nl - c->in.data) + 1);
}

/* reply_parse_status - an RFC 3463 code "c.sss.ddd" at the start of text,
   of the same class as the reply code; its length, or 0 */
static size_t reply_parse_status(const char *text, size_t len,
				 unsigned int code, char status[16])
{
	size_t i = 0, digits;

	if (len < 5 || text[0] != (char)('0' + code / 100) || text[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		for (digits = 0; i < len && text[i] >= '0' && text[i] <= '9' &&
		     digits < 4; i++)
			digits++;
		if (digits == 0 || digits > 3)
			return 0;
		if (part == 0) {
			if (i >= len || text[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && text[i] != ' ')
		return 0;
	memcpy(status, text, i);
	status[i] = '\0';
	return i;
}

/* conn_read_reply - one (multi-line) reply; -1 with c->error */
static int conn_read_reply(struct smtp_conn *c, int64_t timeout_msecs,
			   struct smtp_reply *reply)
{
	int64_t deadline = transport_now_msecs() + timeout_msecs;
	unsigned int lines = 0;
	const char *line;
	size_t len;

	buffer_reset(&reply->text);
	reply->code = 0;
	reply->status[0] = '\0';
	for (;;) {
		unsigned int code;
		bool last;

		if (conn_read_line(c, deadline, &line, &len) < 0)
			return -1;
		if (len < 3 || line[0] < '1' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' ||
		    line[2] < '0' || line[2] > '9' ||
		    (len > 3 && line[3] != ' ' && line[3] != '-')) {
			snprintf(c->error, sizeof(c->error), "malformed reply");
			return -1;
		}
		code = (unsigned int)(line[0] - '0') * 100 +
			(unsigned int)(line[1] - '0') * 10 +
			(unsigned int)(line[2] - '0');
		if (lines > 0 && code != reply->code) {
			snprintf(c->error, sizeof(c->error),
				 "reply code changed within a reply");
			return -1;
		}
		reply->code = code;
		last = len == 3 || line[3] == ' ';
		if (len > 4 && buffer_append(&reply->text, line + 4, len - 4) < 0)
			goto too_long;
		if (buffer_append_byte(&reply->text, '\n') < 0)
			goto too_long;
		conn_consume_line(c);
		if (++lines > TRANSPORT_REPLY_LINES_MAX)
			goto too_long;
		if (last)
			break;
	}
	(void)reply_parse_status((const char *)reply->text.data,
				 reply->text.used, reply->code, reply->status);
	return 0;
too_long:
	snprintf(c->error, sizeof(c->error), "reply too long");
	return -1;
}

/* reply_diagnostic - "smtp; 550 5.1.1 text" (sanitized, capped; caller
   frees) */
static char *reply_diagnostic(const struct smtp_reply *reply)
{
	struct buffer out;
	size_t len = reply->text.used;
	char *str;

	while (len > 0 && (reply->text.data[len - 1] == '\n' ||
			   reply->text.data[len - 1] == ' '))
		len--;
	buffer_init(&out, 0);
	buffer_printf(&out, "smtp; %u", reply->code);
	if (len > 0) {
		(void)buffer_append_byte(&out, ' ');
		transport_sanitize_append(&out, (const char *)reply->text.data,
					  len, out.used + TRANSPORT_DIAG_TEXT_MAX);
	}
	str = buffer_export(&out, NULL);
	return str;
}

/* reply_status - the enhanced status, or one made from the reply code */
static void reply_status(const struct smtp_reply *reply, char status[16])
{
	if (reply->status[0] != '\0')
		memcpy(status, reply->status, sizeof(reply->status));
	else if (reply->code / 100 == 2 || reply->code / 100 == 5)
		snprintf(status, 16, "%u.0.0", reply->code / 100);
	else if (reply->code / 100 == 4)
		snprintf(status, 16, "4.0.0");
	else
		snprintf(status, 16, "4.5.0");	/* unexpected code */
}

/* ---- one session ------------------------------------------------------- */

/* session_lost - the connection broke or the server spoke gibberish */
static void session_lost(struct delivery *d, struct smtp_conn *c,
			 const char *doing)
{
	delivery_remember(d, TRANSPORT_TEMP, "4.4.2", c->host,
			  "x-clustermail; lost connection with %s while %s: %s",
			  c->where, doing, c->error);
}

/* session_refused - a reply that ends this attempt (try the next address) */
static void session_refused(struct delivery *d, struct smtp_conn *c,
			    const struct smtp_reply *reply)
{
	char status[16];
	char *diag = reply_diagnostic(reply);

	reply_status(reply, status);
	delivery_remember(d, transport_result_of_code(reply->code), status,
			  c->host, "%s", diag);
	free(diag);
}

/* session_refused_greeting - a server that does not want to talk to us;
   even a 5xx here is about this host (a busy or listed client), not the
   message, so it is a temporary failure (Postfix's smtp_skip_5xx_greeting) */
static void session_refused_greeting(struct delivery *d, struct smtp_conn *c,
				     const struct smtp_reply *reply)
{
	char status[16];
	char *diag = reply_diagnostic(reply);

	reply_status(reply, status);
	status[0] = '4';
	delivery_remember(d, TRANSPORT_TEMP, status, c->host, "%s", diag);
	free(diag);
}

/* session_command - send one command and read its reply; -1 (already
   remembered as lost) when that fails */
static int session_command(struct delivery *d, struct smtp_conn *c,
			   struct smtp_reply *reply, const char *doing,
			   const char *fmt, ...) ATTR_FORMAT(5, 6);
static int session_command(struct delivery *d, struct smtp_conn *c,
			   struct smtp_reply *reply, const char *doing,
			   const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	(void)buffer_vprintf(&c->out, fmt, args);
	va_end(args);
	(void)buffer_append_str(&c->out, "\r\n");
	if (conn_flush(c, TRANSPORT_REPLY_MSECS) < 0 ||
	    conn_read_reply(c, TRANSPORT_REPLY_MSECS, reply) < 0) {
		session_lost(d, c, doing);
		return -1;
	}
	return 0;
}

/* session_parse_ehlo - the extensions of an EHLO reply */
static void session_parse_ehlo(struct smtp_conn *c,
			       const struct smtp_reply *reply)
{
	const char *text = buffer_cstr(&reply->text);
	const char *line = strchr(text, '\n');	/* skip the greeting line */

	c->ext = 0;
	c->size_max = 0;
	while (line != NULL && line[1] != '\0') {
		const char *start = line + 1, *end = strchr(start, '\n');
		char word[64];
		size_t len = (size_t)(end - start), wlen = 0;

		while (wlen < len && start[wlen] != ' ' && wlen < sizeof(word) - 1) {
			word[wlen] = start[wlen];
			wlen++;
		}
		word[wlen] = '\0';
		str_lcase(word);
		if (strcmp(word, "starttls") == 0)
			c->ext |= SMTP_EXT_STARTTLS;
		else if (strcmp(word, "8bitmime") == 0)
			c->ext |= SMTP_EXT_8BITMIME;
		else if (strcmp(word, "smtputf8") == 0)
			c->ext |= SMTP_EXT_SMTPUTF8;
		else if (strcmp(word, "dsn") == 0)
			c->ext |= SMTP_EXT_DSN;
		else if (strcmp(word, "pipelining") == 0)
			c->ext |= SMTP_EXT_PIPELINING;
		else if (strcmp(word, "size") == 0) {
			char num[32];
			size_t nlen = len > wlen + 1 ? len - wlen - 1 : 0;

			c->ext |= SMTP_EXT_SIZE;
			if (nlen > 0 && nlen < sizeof(num)) {
				memcpy(num, start + wlen + 1, nlen);
				num[nlen] = '\0';
				if (str_to_uint64(str_trim(num), &c->size_max) < 0)
					c->size_max = 0;
			}
		} else if (strcmp(word, "auth") == 0) {
			char *mechs = mem_strndup(start + wlen, len - wlen);
			struct str_array arr;

			c->ext |= SMTP_EXT_AUTH;
			str_array_init(&arr);
			str_split_words(str_lcase(mechs), &arr);
			if (str_array_contains(&arr, "plain"))
				c->ext |= SMTP_EXT_AUTH_PLAIN;
			if (str_array_contains(&arr, "login"))
				c->ext |= SMTP_EXT_AUTH_LOGIN;
			str_array_clear(&arr);
			free(mechs);
		}
		line = end;
	}
}

/* session_hello - EHLO (HELO when EHLO is refused with 5xx); 0 or -1
   (remembered) */
static int session_hello(struct delivery *d, struct smtp_conn *c,
			 struct smtp_reply *reply)
{
	const char *name = d->set->smtp_hostname;

	if (session_command(d, c, reply, "sending EHLO", "EHLO %s", name) < 0)
		return -1;
	if (reply->code / 100 == 2) {
		session_parse_ehlo(c, reply);
		return 0;
	}
	if (reply->code / 100 != 5) {
		session_refused(d, c, reply);
		return -1;
	}
	c->ext = 0;
	if (session_command(d, c, reply, "sending HELO", "HELO %s", name) < 0)
		return -1;
	if (reply->code / 100 != 2) {
		session_refused(d, c, reply);
		return -1;
	}
	return 0;
}

/* session_tls_handshake - TLS on the connection (after "220"); 0 or -1
   with c->error */
static int session_tls_handshake(struct delivery *d, struct smtp_conn *c)
{
	bool verify = d->set->queue_tls == SETTINGS_QUEUE_TLS_VERIFY;
	int64_t deadline = transport_now_msecs() + TRANSPORT_REPLY_MSECS;
	struct in6_addr ip6;
	bool is_ip;
	const char *error;
	int ret;

	if (d->tls == NULL) {
		d->tls = tls_context_create_client(d->set->queue_tls_ca_file,
						   verify, &error);
		if (d->tls == NULL) {
			snprintf(c->error, sizeof(c->error), "%s", error);
			return -1;
		}
	}
	ERR_clear_error();
	c->ssl = SSL_new(tls_context_ssl_ctx(d->tls));
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		return conn_fail_tls(c, "TLS setup");
	}
	is_ip = inet_pton(AF_INET6, c->host, &ip6) == 1 ||
		inet_pton(AF_INET, c->host, &ip6) == 1;
	if (!is_ip)
		(void)SSL_set_tlsext_host_name(c->ssl, c->host);
	if (verify) {
		ret = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(
				SSL_get0_param(c->ssl), c->host) :
			SSL_set1_host(c->ssl, c->host);
		if (ret != 1) {
			snprintf(c->error, sizeof(c->error),
				 "cannot check the name %s", c->host);
			return -1;
		}
		SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		ret = SSL_connect(c->ssl);
		if (ret == 1)
			break;
		if (verify && SSL_get_verify_result(c->ssl) != X509_V_OK) {
			snprintf(c->error, sizeof(c->error),
				 "certificate verification failed: %s",
				 X509_verify_cert_error_string(
					 SSL_get_verify_result(c->ssl)));
			return -1;
		}
		if (conn_ssl_wait(c, ret, deadline) < 0)
			return -1;
	}
	log_id_debug(d->log_id, "TLS with %s: %s %s", c->where,
		     SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	return 0;
}

/* session_starttls - STARTTLS per queue_tls, then EHLO again; 0 or -1
   (remembered) */
static int session_starttls(struct delivery *d, struct smtp_conn *c,
			    struct smtp_reply *reply)
{
	enum settings_queue_tls mode = d->set->queue_tls;
	bool required = mode == SETTINGS_QUEUE_TLS_ENCRYPT ||
		mode == SETTINGS_QUEUE_TLS_VERIFY;
	char *diag;

	if (mode == SETTINGS_QUEUE_TLS_NONE || d->tls_failed_plain_retry)
		return 0;
	if ((c->ext & SMTP_EXT_STARTTLS) == 0) {
		if (!required)
			return 0;
		delivery_remember(d, TRANSPORT_TEMP, "4.7.4", c->host,
				  "x-clustermail; TLS is required, but %s does "
				  "not offer STARTTLS", c->where);
		return -1;
	}
	if (session_command(d, c, reply, "sending STARTTLS", "STARTTLS") < 0)
		return -1;
	if (reply->code != 220) {
		if (!required) {
			log_id_info(d->log_id, "%s refused STARTTLS (%u); "
				    "going on without TLS", c->where,
				    reply->code);
			return 0;
		}
		/* Required TLS refused: retry later, never bounce. */
		diag = reply_diagnostic(reply);
		delivery_remember(d, TRANSPORT_TEMP, "4.7.4", c->host,
				  "%s (STARTTLS refused, TLS is required)", diag);
		free(diag);
		return -1;
	}
	/* Bytes after the 220 were sent before TLS and must not be taken
	   as replies from inside it (response injection). */
	if (c->in.used > 0) {
		snprintf(c->error, sizeof(c->error),
			 "data after the STARTTLS reply");
		session_lost(d, c, "starting TLS");
		return -1;
	}
	if (session_tls_handshake(d, c) < 0) {
		if (!required)
			d->tls_failed_plain_retry = true;
		delivery_remember(d, TRANSPORT_TEMP, required &&
				  mode == SETTINGS_QUEUE_TLS_VERIFY ?
				  "4.7.5" : "4.7.0", c->host,
				  "x-clustermail; TLS with %s failed: %s",
				  c->where, c->error);
		return -1;
	}
	return session_hello(d, c, reply);
}

/* delivery_password - the relayhost password (first line of the file) */
static int delivery_password(struct delivery *d, const char **password_r)
{
	char buf[TRANSPORT_PASSWORD_MAX + 1];
	const char *path = d->set->relayhost_password_file;
	ssize_t n;
	int fd;

	if (d->password == NULL) {
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			log_id_error(d->log_id, "open(%s) failed: %s", path,
				     strerror(errno));
			return -1;
		}
		do {
			n = read(fd, buf, sizeof(buf) - 1);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			log_id_error(d->log_id, "read(%s) failed: %s", path,
				     strerror(errno));
		(void)close(fd);
		if (n < 0)
			return -1;
		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		if (buf[0] == '\0') {
			log_id_error(d->log_id, "%s: no password on its first "
				     "line", path);
			return -1;
		}
		d->password = mem_strdup(buf);
		explicit_bzero(buf, sizeof(buf));
	}
	*password_r = d->password;
	return 0;
}

/* session_auth_send - one AUTH exchange step carrying a secret: the
   command line is wiped from memory once sent */
static int session_auth_send(struct delivery *d, struct smtp_conn *c,
			     struct smtp_reply *reply, const char *prefix,
			     const void *secret, size_t secret_len)
{
	int ret;

	(void)buffer_append_str(&c->out, prefix);
	base64_encode(secret, secret_len, &c->out);
	(void)buffer_append_str(&c->out, "\r\n");
	ret = conn_write_all(c, c->out.data, c->out.used,
			     transport_now_msecs() + TRANSPORT_REPLY_MSECS);
	explicit_bzero(c->out.data, c->out.used);
	buffer_reset(&c->out);
	if (ret < 0 || conn_read_reply(c, TRANSPORT_REPLY_MSECS, reply) < 0) {
		session_lost(d, c, "authenticating");
		return -1;
	}
	return 0;
}

/* session_auth - AUTH PLAIN (or LOGIN) to the relayhost; 0 or -1
   (remembered) */
static int session_auth(struct delivery *d, struct smtp_conn *c,
			struct smtp_reply *reply)
{
	const char *user = d->set->relayhost_user, *password;
	int ret;

	if (!d->to_relayhost || user == NULL)
		return 0;
	if (c->ssl == NULL && !c->loopback) {
		delivery_remember(d, TRANSPORT_TEMP, "4.7.0", c->host,
				  "x-clustermail; not sending the relayhost "
				  "password to %s without TLS", c->where);
		return -1;
	}
	if ((c->ext & SMTP_EXT_AUTH) == 0) {
		log_id_warn(d->log_id, "%s does not offer AUTH; sending "
			    "without authentication", c->where);
		return 0;
	}
	if (delivery_password(d, &password) < 0) {
		delivery_remember(d, TRANSPORT_TEMP, "4.3.5", NULL,
				  "x-clustermail; cannot read "
				  "relayhost_password_file %s",
				  d->set->relayhost_password_file);
		d->done = true;
		return -1;
	}
	if ((c->ext & SMTP_EXT_AUTH_PLAIN) != 0 ||
	    (c->ext & SMTP_EXT_AUTH_LOGIN) == 0) {
		size_t ulen = strlen(user), plen = strlen(password);
		char *msg = mem_zalloc(ulen + plen + 2);

		memcpy(msg + 1, user, ulen);
		memcpy(msg + ulen + 2, password, plen);
		ret = session_auth_send(d, c, reply, "AUTH PLAIN ", msg,
					ulen + plen + 2);
		explicit_bzero(msg, ulen + plen + 2);
		free(msg);
	} else {
		ret = session_command(d, c, reply, "authenticating",
				      "AUTH LOGIN");
		if (ret == 0 && reply->code == 334)
			ret = session_auth_send(d, c, reply, "", user,
						strlen(user));
		if (ret == 0 && reply->code == 334)
			ret = session_auth_send(d, c, reply, "", password,
						strlen(password));
	}
	if (ret < 0)
		return -1;
	if (reply->code != 235) {
		char *diag = reply_diagnostic(reply);

		/* Wrong credentials are our configuration, not the
		   recipients' fault: never a bounce. */
		delivery_remember(d, TRANSPORT_TEMP, "4.7.0", c->host,
				  "%s (authentication as %s failed)", diag,
				  user);
		free(diag);
		return -1;
	}
	log_id_debug(d->log_id, "authenticated to %s as %s", c->where, user);
	return 0;
}

/* session_check_message - what this server cannot take at all: permanent
   answers (5.6.7 SMTPUTF8, 5.3.4 SIZE) given here; -1 when nothing is
   left to send */
static int session_check_message(struct delivery *d, struct smtp_conn *c)
{
	const struct transport_message *msg = d->msg;
	bool utf8 = (c->ext & SMTP_EXT_SMTPUTF8) != 0;
	char *diag;

	if (c->size_max > 0 && msg->size > c->size_max) {
		diag = mem_printf("x-clustermail; message size %llu exceeds "
				  "the limit of %s (%llu)",
				  (unsigned long long)msg->size, c->where,
				  (unsigned long long)c->size_max);
		delivery_fail_pending(d, TRANSPORT_PERM, "5.3.4", diag, c->host);
		free(diag);
	} else if (!utf8 && !transport_is_ascii(msg->sender)) {
		diag = mem_printf("x-clustermail; %s does not support SMTPUTF8 "
				  "needed for the sender address", c->where);
		delivery_fail_pending(d, TRANSPORT_PERM, "5.6.7", diag, c->host);
		free(diag);
	} else if (!utf8) {
		diag = mem_printf("x-clustermail; %s does not support SMTPUTF8 "
				  "needed for this recipient address", c->where);
		for (size_t i = 0; i < d->count; i++) {
			if (d->rcpts[i].result == TRANSPORT_PENDING &&
			    !transport_is_ascii(d->rcpts[i].address))
				rcpt_set(&d->rcpts[i], TRANSPORT_PERM, "5.6.7",
					 diag, c->host);
		}
		free(diag);
	}
	return delivery_pending_count(d) == 0 ? -1 : 0;
}

/* session_append_mail - MAIL FROM with its parameters, into c->out */
static void session_append_mail(struct delivery *d, struct smtp_conn *c)
{
	const struct transport_message *msg = d->msg;

	(void)buffer_printf(&c->out, "MAIL FROM:<%s>", msg->sender);
	if ((c->ext & SMTP_EXT_SIZE) != 0)
		(void)buffer_printf(&c->out, " SIZE=%llu",
				    (unsigned long long)msg->size);
	if (msg->body_8bit && (c->ext & SMTP_EXT_8BITMIME) != 0)
		(void)buffer_append_str(&c->out, " BODY=8BITMIME");
	if ((c->ext & SMTP_EXT_SMTPUTF8) != 0 &&
	    (msg->smtputf8 || !transport_is_ascii(msg->sender)))
		(void)buffer_append_str(&c->out, " SMTPUTF8");
	if ((c->ext & SMTP_EXT_DSN) != 0) {
		if (msg->ret == QUEUE_RET_FULL)
			(void)buffer_append_str(&c->out, " RET=FULL");
		else if (msg->ret == QUEUE_RET_HDRS)
			(void)buffer_append_str(&c->out, " RET=HDRS");
		if (msg->envid != NULL) {
			(void)buffer_append_str(&c->out, " ENVID=");
			xtext_append(&c->out, msg->envid);
		}
	}
	(void)buffer_append_str(&c->out, "\r\n");
}

/* session_append_rcpt - RCPT TO with NOTIFY/ORCPT, into c->out */
static void session_append_rcpt(struct smtp_conn *c,
				const struct transport_rcpt *rcpt)
{
	(void)buffer_printf(&c->out, "RCPT TO:<%s>", rcpt->address);
	if ((c->ext & SMTP_EXT_DSN) != 0 && rcpt->notify != 0) {
		if ((rcpt->notify & QUEUE_NOTIFY_NEVER) != 0) {
			(void)buffer_append_str(&c->out, " NOTIFY=NEVER");
		} else {
			const char *sep = " NOTIFY=";

			if ((rcpt->notify & QUEUE_NOTIFY_SUCCESS) != 0) {
				(void)buffer_printf(&c->out, "%sSUCCESS", sep);
				sep = ",";
			}
			if ((rcpt->notify & QUEUE_NOTIFY_FAILURE) != 0) {
				(void)buffer_printf(&c->out, "%sFAILURE", sep);
				sep = ",";
			}
			if ((rcpt->notify & QUEUE_NOTIFY_DELAY) != 0)
				(void)buffer_printf(&c->out, "%sDELAY", sep);
		}
	}
	if ((c->ext & SMTP_EXT_DSN) != 0 && rcpt->orcpt != NULL) {
		const char *semi = strchr(rcpt->orcpt, ';');
		size_t tlen = semi == NULL ? 0 : (size_t)(semi - rcpt->orcpt);
		bool type_ok = tlen > 0 && tlen < 32;

		for (size_t i = 0; type_ok && i < tlen; i++) {
			char ch = rcpt->orcpt[i];

			type_ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
				(ch >= '0' && ch <= '9') || ch == '-';
		}
		if (type_ok) {
			(void)buffer_printf(&c->out, " ORCPT=%.*s;", (int)tlen,
					    rcpt->orcpt);
			xtext_append(&c->out, semi + 1);
		}
	}
	(void)buffer_append_str(&c->out, "\r\n");
}

/* session_rcpt_reply - record one RCPT reply for rcpt index i */
static void session_rcpt_reply(struct delivery *d, struct smtp_conn *c,
			       size_t i, const struct smtp_reply *reply)
{
	char status[16];
	char *diag;

	if (reply->code / 100 == 2) {
		d->accepted[i] = true;
		return;
	}
	reply_status(reply, status);
	diag = reply_diagnostic(reply);
	rcpt_set(&d->rcpts[i], transport_result_of_code(reply->code), status,
		 diag, c->host);
	free(diag);
}

/* session_envelope - MAIL FROM and the RCPTs (pipelined in batches when
   offered). 0 when at least one recipient was accepted, -1 otherwise
   (answers recorded or the failure remembered). */
static int session_envelope(struct delivery *d, struct smtp_conn *c,
			    struct smtp_reply *reply)
{
	bool pipelining = (c->ext & SMTP_EXT_PIPELINING) != 0;
	size_t batch = pipelining ? TRANSPORT_PIPELINE_BATCH : 1;
	size_t next = 0, accepted = 0;
	bool mail_read = false;

	session_append_mail(d, c);
	while (next < d->count || !mail_read) {
		size_t sent[TRANSPORT_PIPELINE_BATCH], nsent = 0;

		if (mail_read || pipelining) {
			for (; next < d->count && nsent < batch; next++) {
				if (d->rcpts[next].result != TRANSPORT_PENDING)
					continue;
				session_append_rcpt(c, &d->rcpts[next]);
				sent[nsent++] = next;
			}
		}
		if (conn_flush(c, TRANSPORT_REPLY_MSECS) < 0) {
			session_lost(d, c, "sending the envelope");
			return -1;
		}
		if (!mail_read) {
			if (conn_read_reply(c, TRANSPORT_REPLY_MSECS, reply) < 0) {
				session_lost(d, c, "sending MAIL FROM");
				return -1;
			}
			mail_read = true;
			if (reply->code / 100 == 5) {
				char status[16];
				char *diag = reply_diagnostic(reply);

				reply_status(reply, status);
				delivery_fail_pending(d, TRANSPORT_PERM, status,
						      diag, c->host);
				free(diag);
				d->done = true;
				return -1;
			}
			if (reply->code / 100 != 2) {
				session_refused(d, c, reply);
				return -1;
			}
		}
		for (size_t j = 0; j < nsent; j++) {
			if (conn_read_reply(c, TRANSPORT_REPLY_MSECS, reply) < 0) {
				session_lost(d, c, "sending RCPT TO");
				return -1;
			}
			session_rcpt_reply(d, c, sent[j], reply);
			if (d->accepted[sent[j]])
				accepted++;
		}
	}
	if (accepted == 0) {
		/* every recipient got its answer */
		d->done = true;
		return -1;
	}
	return 0;
}

/* session_send_body - the message, dot-stuffed, then "."; 0 or -1 with
   c->error (*read_error_r set when the local file was the problem) */
static int session_send_body(struct delivery *d, struct smtp_conn *c,
			     bool *read_error_r)
{
	unsigned char *chunk = mem_zalloc(TRANSPORT_CHUNK);
	bool line_start = true;
	off_t offset = 0;
	int ret = 0;

	*read_error_r = false;
	for (;;) {
		ssize_t n = pread(d->msg->content_fd, chunk, TRANSPORT_CHUNK,
				  offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*read_error_r = true;
			ret = conn_fail_errno(c, errno);
			break;
		}
		if (n == 0)
			break;
		offset += n;
		for (ssize_t i = 0; i < n; ) {
			unsigned char *nl = memchr(chunk + i, '\n', (size_t)(n - i));
			size_t end = nl == NULL ? (size_t)n : (size_t)(nl - chunk) + 1;

			if (line_start && chunk[i] == '.')
				(void)buffer_append_byte(&c->out, '.');
			(void)buffer_append(&c->out, chunk + i, end - (size_t)i);
			line_start = nl != NULL;
			i = (ssize_t)end;
		}
		if (c->out.used >= TRANSPORT_CHUNK &&
		    (ret = conn_flush(c, TRANSPORT_REPLY_MSECS)) < 0)
			break;
	}
	free(chunk);
	if (ret < 0)
		return -1;
	if (!line_start)
		(void)buffer_append_str(&c->out, "\r\n");
	(void)buffer_append_str(&c->out, ".\r\n");
	return conn_flush(c, TRANSPORT_REPLY_MSECS);
}

/* session_finish - give the accepted recipients the reply to the dot (or
   to DATA) */
static void session_finish(struct delivery *d, struct smtp_conn *c,
			   const struct smtp_reply *reply)
{
	enum transport_result result = transport_result_of_code(reply->code);
	bool dsn = (c->ext & SMTP_EXT_DSN) != 0;
	char status[16];
	char *diag = reply_diagnostic(reply);

	reply_status(reply, status);
	for (size_t i = 0; i < d->count; i++) {
		if (!d->accepted[i])
			continue;
		rcpt_set(&d->rcpts[i], result, status, diag, c->host);
		d->rcpts[i].dsn_relayed = result == TRANSPORT_OK && !dsn;
	}
	free(diag);
	d->done = true;
}

/* session_data - DATA, the body, the final reply */
static void session_data(struct delivery *d, struct smtp_conn *c,
			 struct smtp_reply *reply)
{
	bool read_error;
	char *diag;

	if (session_command(d, c, reply, "sending DATA", "DATA") < 0)
		return;
	if (reply->code != 354) {
		session_finish(d, c, reply);
		return;
	}
	if (session_send_body(d, c, &read_error) < 0) {
		if (!read_error) {
			session_lost(d, c, "sending the message");
			return;
		}
		/* Closing without the dot makes the server drop it. */
		diag = mem_printf("x-clustermail; cannot read the queued "
				  "message: %s", c->error);
		for (size_t i = 0; i < d->count; i++) {
			if (d->accepted[i])
				rcpt_set(&d->rcpts[i], TRANSPORT_TEMP, "4.3.0",
					 diag, NULL);
		}
		free(diag);
		d->done = true;
		return;
	}
	if (conn_read_reply(c, TRANSPORT_DATA_END_MSECS, reply) < 0) {
		/* The dot was sent: the server may have the message. Trying
		   another MX now could deliver it twice. */
		diag = mem_printf("x-clustermail; lost connection with %s "
				  "after the end of data: %s", c->where,
				  c->error);
		for (size_t i = 0; i < d->count; i++) {
			if (d->accepted[i])
				rcpt_set(&d->rcpts[i], TRANSPORT_TEMP, "4.4.2",
					 diag, c->host);
		}
		free(diag);
		d->done = true;
		return;
	}
	session_finish(d, c, reply);
}

/* session_run - one SMTP session on a connected socket */
static void session_run(struct delivery *d, struct smtp_conn *c)
{
	struct smtp_reply reply;

	buffer_init(&reply.text, TRANSPORT_REPLY_MAX);
	memset(d->accepted, 0, d->count * sizeof(d->accepted[0]));
	if (conn_read_reply(c, TRANSPORT_REPLY_MSECS, &reply) < 0) {
		session_lost(d, c, "receiving the greeting");
		goto out;
	}
	if (reply.code != 220) {
		session_refused_greeting(d, c, &reply);
		goto quit;
	}
	if (session_hello(d, c, &reply) < 0 ||
	    session_starttls(d, c, &reply) < 0 ||
	    session_auth(d, c, &reply) < 0)
		goto quit;
	if (session_check_message(d, c) < 0) {
		d->done = true;
		goto quit;
	}
	if (session_envelope(d, c, &reply) < 0)
		goto quit;
	session_data(d, c, &reply);
quit:
	/* Best effort; the answer changes nothing. */
	(void)buffer_append_str(&c->out, "QUIT\r\n");
	if (conn_flush(c, TRANSPORT_QUIT_MSECS) == 0)
		(void)conn_read_reply(c, TRANSPORT_QUIT_MSECS, &reply);
out:
	buffer_clear(&reply.text);
}

/* ---- connecting -------------------------------------------------------- */

static bool transport_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;

		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;
		const uint8_t *b = sin6->sin6_addr.s6_addr;

		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
			(IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && b[12] == 127);
	}
	return false;
}

/* conn_connect - a non-blocking TCP connection within the connect
   timeout; 0 or -1 with c->error */
static int conn_connect(struct smtp_conn *c, const struct addrinfo *ai)
{
	int64_t deadline = transport_now_msecs() + TRANSPORT_CONNECT_MSECS;
	socklen_t len = sizeof(int);
	int err = 0, ret;

	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0);
	if (c->fd < 0)
		return conn_fail_errno(c, errno);
	if (connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return conn_fail_errno(c, errno);
	if ((ret = conn_wait(c, POLLOUT, deadline)) < 0)
		return conn_fail_errno(c, -ret);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return conn_fail_errno(c, errno);
	return err == 0 ? 0 : conn_fail_errno(c, err);
}

static void conn_close(struct smtp_conn *c)
{
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		(void)close(c->fd);
	c->fd = -1;
	buffer_clear(&c->in);
	buffer_clear(&c->out);
}

/* delivery_try_address - connect to one address and run a session (again
   in clear when opportunistic TLS failed on the way) */
static void delivery_try_address(struct delivery *d, const char *host,
				 const struct addrinfo *ai)
{
	struct smtp_conn c;

	for (;;) {
		bool retry_plain;

		memset(&c, 0, sizeof(c));
		c.fd = -1;
		c.log_id = d->log_id;
		c.host = host;
		c.loopback = transport_is_loopback(ai->ai_addr);
		buffer_init(&c.in, TRANSPORT_LINE_MAX);
		buffer_init(&c.out, 0);
		net_ip_str(ai->ai_addr, c.ip);
		snprintf(c.where, sizeof(c.where), "%s[%s]:%u", host, c.ip,
			 net_addr_port(ai->ai_addr));
		d->attempts++;
		if (conn_connect(&c, ai) < 0) {
			delivery_remember(d, TRANSPORT_TEMP, "4.4.1", host,
					  "x-clustermail; connect to %s: %s",
					  c.where, c.error);
			conn_close(&c);
			return;
		}
		log_id_debug(d->log_id, "connected to %s", c.where);
		retry_plain = !d->tls_failed_plain_retry;
		session_run(d, &c);
		conn_close(&c);
		retry_plain = retry_plain && d->tls_failed_plain_retry &&
			!d->done && d->attempts < TRANSPORT_ATTEMPTS_MAX;
		if (!retry_plain)
			break;
		log_id_info(d->log_id, "retrying %s without TLS", c.where);
	}
}

/* delivery_try_host - every address of host in turn (a name without
   addresses is a remembered failure) */
static void delivery_try_host(struct delivery *d, const char *host,
			      unsigned int port, bool implicit_mx)
{
	struct addrinfo hints, *res, *ai;
	char service[16];
	int ret;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%u", port);
	ret = getaddrinfo(host, service, &hints, &res);
	if (ret != 0) {
		bool gone = ret == EAI_NONAME
#ifdef EAI_NODATA
			|| ret == EAI_NODATA
#endif
			;
		/* A domain that exists but has neither MX nor address
		   cannot receive mail; a broken MX or relayhost name is an
		   administrator's problem to fix: retry. */
		delivery_remember(d, gone && implicit_mx && !d->to_relayhost ?
				  TRANSPORT_PERM : TRANSPORT_TEMP,
				  gone && implicit_mx && !d->to_relayhost ?
				  "5.4.4" : "4.4.3", NULL,
				  "x-clustermail; cannot find an address for "
				  "%s: %s", host, gai_strerror(ret));
		return;
	}
	for (ai = res; ai != NULL && !d->done; ai = ai->ai_next) {
		if (d->attempts >= TRANSPORT_ATTEMPTS_MAX)
			break;
		delivery_try_address(d, host, ai);
	}
	freeaddrinfo(res);
}

/* delivery_route - the MX hosts (or the implicit one) of name, tried in
   turn */
static void delivery_route(struct delivery *d, const char *name,
			   unsigned int port, bool use_mx)
{
	struct mx_host *hosts = mem_calloc(TRANSPORT_MX_MAX, sizeof(*hosts));
	size_t count = 0;
	enum dns_result result = use_mx ? dns_lookup_mx(name, hosts, &count) :
		DNS_NO_RECORDS;
	char *diag;

	switch (result) {
	case DNS_FOUND:
		for (size_t i = 0; i < count && !d->done; i++) {
			log_id_debug(d->log_id, "%s: MX %u %s", name,
				     hosts[i].preference, hosts[i].name);
			delivery_try_host(d, hosts[i].name, port, false);
		}
		break;
	case DNS_NO_RECORDS:
		delivery_try_host(d, name, port, true);
		break;
	case DNS_NULL_MX:
		if (d->to_relayhost) {
			delivery_remember(d, TRANSPORT_TEMP, "4.4.3", NULL,
					  "x-clustermail; relayhost %s has a "
					  "null MX", name);
			break;
		}
		diag = mem_printf("x-clustermail; %s does not accept mail "
				  "(null MX)", name);
		delivery_fail_pending(d, TRANSPORT_PERM, "5.1.10", diag, NULL);
		free(diag);
		d->done = true;
		break;
	case DNS_NOT_FOUND:
		if (d->to_relayhost) {
			delivery_remember(d, TRANSPORT_TEMP, "4.4.3", NULL,
					  "x-clustermail; relayhost %s: no such "
					  "domain", name);
			break;
		}
		diag = mem_printf("x-clustermail; domain %s does not exist",
				  name);
		delivery_fail_pending(d, TRANSPORT_PERM, "5.1.2", diag, NULL);
		free(diag);
		d->done = true;
		break;
	case DNS_TEMP_FAIL:
		delivery_remember(d, TRANSPORT_TEMP, "4.4.3", NULL,
				  "x-clustermail; MX lookup for %s failed "
				  "temporarily", name);
		break;
	}
	free(hosts);
}

/* ---- the API ----------------------------------------------------------- */

/* delivery_check_addresses - addresses we cannot put on a command line */
static void delivery_check_addresses(struct delivery *d)
{
	if (!transport_address_is_safe(d->msg->sender)) {
		delivery_fail_pending(d, TRANSPORT_PERM, "5.1.7",
				      "x-clustermail; invalid sender address",
				      NULL);
		d->done = true;
		return;
	}
	for (size_t i = 0; i < d->count; i++) {
		if (d->rcpts[i].address[0] == '\0' ||
		    !transport_address_is_safe(d->rcpts[i].address))
			rcpt_set(&d->rcpts[i], TRANSPORT_PERM, "5.1.3",
				 "x-clustermail; invalid recipient address",
				 NULL);
	}
	if (delivery_pending_count(d) == 0)
		d->done = true;
}

static void delivery_log_results(const struct delivery *d)
{
	for (size_t i = 0; i < d->count; i++) {
		const struct transport_rcpt *r = &d->rcpts[i];

		/* The runner logs the result line; this one is for debugging. */
		log_id_debug(d->log_id, "to=<%s> relay=%s status=%s %s (%s)",
			    r->address, r->remote_mta != NULL ?
			    r->remote_mta : "none", r->status,
			    transport_result_name(r->result),
			    r->diagnostic != NULL ? r->diagnostic : "");
	}
}

unsigned int transport_deliver(const struct settings *set, const char *domain,
			       const struct transport_message *msg,
			       struct transport_rcpt *rcpts, size_t count)
{
	struct delivery d;
	unsigned int accepted = 0;

	memset(&d, 0, sizeof(d));
	d.set = set;
	d.msg = msg;
	d.rcpts = rcpts;
	d.count = count;
	d.to_relayhost = set->relayhost != NULL;
	d.log_id = msg->log_id != NULL ? msg->log_id :
		d.to_relayhost ? set->relayhost : domain;
	d.accepted = mem_calloc(count == 0 ? 1 : count, sizeof(bool));
	for (size_t i = 0; i < count; i++) {
		rcpts[i].result = TRANSPORT_PENDING;
		rcpts[i].dsn_relayed = false;
	}

	delivery_check_addresses(&d);
	if (!d.done && d.to_relayhost)
		delivery_route(&d, set->relayhost_host, set->relayhost_port,
			       set->relayhost_mx);
	else if (!d.done)
		delivery_route(&d, domain, 25, true);
	if (d.fail_result == TRANSPORT_PENDING && delivery_pending_count(&d) > 0)
		delivery_remember(&d, TRANSPORT_TEMP, "4.4.3", NULL,
				  "x-clustermail; no address to deliver to "
				  "for %s", d.to_relayhost ? set->relayhost :
				  domain);
	delivery_fail_pending(&d, d.fail_result, d.fail_status,
			      d.fail_diagnostic, d.fail_mta);
	delivery_log_results(&d);

	for (size_t i = 0; i < count; i++) {
		if (rcpts[i].result == TRANSPORT_OK)
			accepted++;
	}
	tls_context_unref(&d.tls);
	if (d.password != NULL) {
		explicit_bzero(d.password, strlen(d.password));
		free(d.password);
	}
	free(d.fail_diagnostic);
	free(d.fail_mta);
	free(d.accepted);
	return accepted;
}

void transport_rcpts_clear(struct transport_rcpt *rcpts, size_t count)
{
	for (size_t i = 0; i < count; i++) {
		MEM_FREE(&rcpts[i].diagnostic);
		MEM_FREE(&rcpts[i].remote_mta);
	}
}
