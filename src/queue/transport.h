#ifndef CM_TRANSPORT_H
#define CM_TRANSPORT_H
/*
 * transport - the outbound SMTP client: hand one message to the next hop
 * for a set of recipients that share a destination (one domain, or all of
 * them through the relayhost), and say what happened to each recipient.
 *
 * BLOCKING: it runs on a queue runner thread (never on an event loop),
 * with a timeout on every connect, read and write (RFC 5321 4.5.3.2
 * values: 5 min for replies, 10 min for the end of data; connect 30 s).
 *
 * Route: relayhost when set (a bracketed or IP relayhost is used as is;
 * "host" gets an MX lookup like a domain); otherwise the domain's MX
 * records (libresolv, res_nquery; lowest preference first, equal ones in
 * random order), or its A/AAAA when it has no MX (RFC 5321 5.1); a
 * "null MX" (RFC 7505: one MX ".") fails permanently (5.1.10). Each MX
 * host is tried in turn, each of its addresses in turn, until one takes
 * the transaction or gives a permanent answer; when the domain itself
 * does not exist (NXDOMAIN) the recipients fail permanently (5.1.2),
 * other DNS trouble is temporary (4.4.3).
 *
 * Session: EHLO smtp_hostname (HELO when EHLO is refused), STARTTLS per
 * queue_tls (may: when offered, certificate not checked; encrypt: required;
 * verify: required and the certificate checked against the host name with
 * queue_tls_ca_file or the system store), EHLO again, AUTH PLAIN (or
 * LOGIN) to the relayhost when relayhost_user is set - only over TLS or to
 * a loopback address -, MAIL FROM with SIZE, BODY=8BITMIME, SMTPUTF8,
 * RET/ENVID when the server offers those extensions, RCPT TO with
 * NOTIFY/ORCPT when it offers DSN, PIPELINING of the RCPTs when offered,
 * DATA with dot-stuffing, QUIT. A message that needs SMTPUTF8 (a UTF-8
 * address) and a server without it: permanent failure 5.6.7 (RFC 6531).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct settings;

enum transport_result {
	TRANSPORT_PENDING = 0,	/* not attempted (filled in by transport) */
	TRANSPORT_OK = 2,	/* 2xx: accepted by the next hop */
	TRANSPORT_TEMP = 4,	/* 4xx or no connection: retry later */
	TRANSPORT_PERM = 5,	/* 5xx: bounce */
};

struct transport_rcpt {
	/* in */
	const char *address;	/* without <> */
	const char *orcpt;	/* "rfc822;addr" or NULL */
	unsigned int notify;	/* QUEUE_NOTIFY_* */
	/* out */
	enum transport_result result;
	char status[16];	/* enhanced code "2.0.0", "4.4.1", "5.1.1" */
	char *diagnostic;	/* owned: "smtp; 550 5.1.1 no such user" or a
				   local explanation ("x-clustermail; ...") */
	char *remote_mta;	/* owned: host name or IP that answered, or NULL */
	bool dsn_relayed;	/* the next hop did not offer DSN (so a
				   NOTIFY=SUCCESS gets "relayed") */
};

struct transport_message {
	const char *sender;	/* "" = null sender */
	const char *envid;	/* NULL if none */
	int ret;		/* enum queue_ret */
	bool smtputf8;
	bool body_8bit;
	uint64_t size;
	int content_fd;		/* msg file: CRLF, not dot-stuffed; read with
				   pread from offset 0 (the fd is not moved) */
	const char *log_id;	/* queue id for log lines; NULL = the
				   destination */
};

/* Deliver msg to rcpts[0..count-1], all of them in domain (ignored when a
   relayhost is set). Every rcpt gets a result other than PENDING. The
   relayhost password is read from set->relayhost_password_file at each
   call (so a changed file needs no restart). The out fields of rcpts
   must be zero or left by an earlier call (their strings are replaced,
   not leaked). The process must ignore SIGPIPE (OpenSSL writes with
   write(2)). Returns the number of recipients accepted. */
unsigned int transport_deliver(const struct settings *set, const char *domain,
			       const struct transport_message *msg,
			       struct transport_rcpt *rcpts, size_t count);
/* Server shutdown past its deadline: every transaction in progress, in
   any thread, ends at its next wait as a temporary failure (4.4.2, so
   the message is retried, possibly by another node). Irreversible. */
void transport_abort_all(void);

/* Free the out strings of rcpts. */
void transport_rcpts_clear(struct transport_rcpt *rcpts, size_t count);

#endif
