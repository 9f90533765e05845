/*
 * bounce.c - delivery status notifications (see bounce.h).
 *
 * A DSN is an ordinary message built in memory and queued like any other,
 * with the null reverse-path so that it can never cause another DSN. The
 * text is built in one buffer: the headers, a human-readable part, the
 * machine-readable report (RFC 3464 fields, one group per recipient) and
 * the returned original (all of it when it fits BOUNCE_RETURN_MAX and the
 * sender did not ask for headers only; otherwise its header block).
 *
 * Everything that comes from the envelope (addresses, diagnostics) is
 * written through bounce_put_value(), which drops CR, LF and other
 * control characters, so that a strange reply from a remote server cannot
 * add header fields or break the MIME structure.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "maildir/sio.h"
#include "queue.h"
#include "bounce.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Reads of the original are done in pieces of this size. */
#define BOUNCE_READ_CHUNK (64 * 1024)
/* The longest diagnostic text kept in the report (one header line). */
#define BOUNCE_DIAGNOSTIC_MAX 900

static atomic_uint bounce_counter;

/* bounce_date - RFC 5322 date-time of t (always UTC) */
static void bounce_date(int64_t t, char out[64])
{
	static const char *const days[] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	time_t tt = (time_t)t;
	struct tm tm;

	/* Spelled out instead of strftime(): the names must not depend on
	   the locale. */
	gmtime_r(&tt, &tm);
	snprintf(out, 64, "%s, %d %s %04d %02d:%02d:%02d +0000",
		 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* bounce_put_value - append text with control characters left out, at
   most max bytes (0 = no limit) */
static void bounce_put_value(struct buffer *out, const char *text, size_t max)
{
	size_t n = 0;

	for (const unsigned char *p = (const unsigned char *)text;
	     *p != '\0' && (max == 0 || n < max); p++, n++) {
		if (*p < 0x20 || *p == 0x7f)
			buffer_append_byte(out, ' ');
		else
			buffer_append_byte(out, *p);
	}
}

/* bounce_is_ascii - no byte above 0x7f */
static bool bounce_is_ascii(const char *text)
{
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
		if (*p >= 0x80)
			return false;
	}
	return true;
}

static const char *bounce_subject(enum bounce_kind kind)
{
	switch (kind) {
	case BOUNCE_FAILED:
		return "Delivery failed: your message was not delivered";
	case BOUNCE_DELAYED:
		return "Delivery delayed: your message is still queued";
	case BOUNCE_DELIVERED:
		return "Delivery report: your message was delivered";
	}
	return "Delivery report";
}

/* bounce_action - the Action: value of one recipient */
static const char *bounce_action(enum bounce_kind kind,
				 const struct queue_rcpt *rcpt)
{
	switch (kind) {
	case BOUNCE_FAILED:
		return "failed";
	case BOUNCE_DELAYED:
		return "delayed";
	case BOUNCE_DELIVERED:
		/* A next hop without DSN support cannot report further:
		   RFC 3464 2.3.3 "relayed". Local deliveries have no
		   remote MTA. */
		return rcpt->remote_mta != NULL ? "relayed" : "delivered";
	}
	return "failed";
}

static const char *bounce_default_status(enum bounce_kind kind)
{
	switch (kind) {
	case BOUNCE_FAILED:
		return "5.0.0";
	case BOUNCE_DELAYED:
		return "4.0.0";
	case BOUNCE_DELIVERED:
		return "2.0.0";
	}
	return "5.0.0";
}

/* bounce_headers - the top-level header block */
static void bounce_headers(struct buffer *out, const struct settings *set,
			   const struct queue_envelope *env,
			   enum bounce_kind kind, const char *boundary,
			   bool global, int64_t now)
{
	char date[64];

	bounce_date(now, date);
	buffer_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
		      set->smtp_hostname);
	buffer_append_str(out, "To: <");
	bounce_put_value(out, env->sender, 0);
	buffer_append_str(out, ">\r\n");
	buffer_printf(out, "Subject: %s\r\n", bounce_subject(kind));
	buffer_printf(out, "Date: %s\r\n", date);
	buffer_printf(out, "Message-ID: <%s.dsn%u.%" PRId64 "@%s>\r\n",
		      env->id, atomic_fetch_add(&bounce_counter, 1) + 1, now,
		      set->smtp_hostname);
	buffer_append_str(out, "Auto-Submitted: auto-replied\r\n");
	buffer_append_str(out, "MIME-Version: 1.0\r\n");
	buffer_printf(out, "Content-Type: multipart/report; report-type=%s;\r\n"
		      "\tboundary=\"%s\"\r\n",
		      global ? "global-delivery-status" : "delivery-status",
		      boundary);
	buffer_printf(out, "Content-Transfer-Encoding: %s\r\n",
		      global || env->body_8bit ? "8bit" : "7bit");
	buffer_append_str(out, "\r\n");
	buffer_append_str(out, "A delivery report in MIME format "
			  "(RFC 3464).\r\n\r\n");
}

/* bounce_human - the text/plain part */
static void bounce_human(struct buffer *out, const struct settings *set,
			 const struct queue_envelope *env,
			 const bool *selected, enum bounce_kind kind)
{
	char until[64];

	buffer_append_str(out, "Content-Type: text/plain; charset=utf-8\r\n"
			  "Content-Description: Notification\r\n"
			  "Content-Transfer-Encoding: 8bit\r\n\r\n");
	buffer_printf(out, "Report from the clustermail server %s.\r\n\r\n",
		      set->smtp_hostname);
	switch (kind) {
	case BOUNCE_FAILED:
		buffer_append_str(out, "Your message could not be delivered to "
				  "one or more recipients. It is attached "
				  "below.\r\n");
		break;
	case BOUNCE_DELAYED:
		bounce_date(env->created +
			    (int64_t)(set->queue_lifetime_msecs / 1000), until);
		buffer_printf(out, "Your message has not been delivered yet "
			      "to one or more recipients. Nothing needs to be "
			      "done: delivery will be retried until %s, and "
			      "you will be told if it fails.\r\n", until);
		break;
	case BOUNCE_DELIVERED:
		buffer_append_str(out, "Your message was delivered to the "
				  "recipients below, as you asked.\r\n");
		break;
	}
	buffer_append_str(out, "\r\n");
	for (size_t i = 0; i < env->rcpt_count; i++) {
		const struct queue_rcpt *rcpt = &env->rcpts[i];

		if (!selected[i])
			continue;
		buffer_append_str(out, "<");
		bounce_put_value(out, rcpt->address, 0);
		buffer_append_str(out, ">");
		if (rcpt->diagnostic != NULL) {
			buffer_append_str(out, ": ");
			bounce_put_value(out, rcpt->diagnostic,
					 BOUNCE_DIAGNOSTIC_MAX);
		}
		buffer_append_str(out, "\r\n");
	}
	buffer_append_str(out, "\r\n");
}

/* bounce_put_address_field - "Name: type; address" (RFC 3464 2.3.1/2) */
static void bounce_put_address_field(struct buffer *out, const char *name,
				     const char *address, bool global)
{
	buffer_printf(out, "%s: %s; ", name,
		      global && !bounce_is_ascii(address) ? "utf-8" : "rfc822");
	bounce_put_value(out, address, 0);
	buffer_append_str(out, "\r\n");
}

/* bounce_rcpt_fields - one per-recipient group */
static void bounce_rcpt_fields(struct buffer *out, const struct settings *set,
			       const struct queue_envelope *env,
			       const struct queue_rcpt *rcpt,
			       enum bounce_kind kind, bool global)
{
	const char *diagnostic = rcpt->diagnostic;
	char date[64];
	int64_t last;

	buffer_append_str(out, "\r\n");
	if (rcpt->orcpt != NULL && strchr(rcpt->orcpt, ';') != NULL) {
		buffer_append_str(out, "Original-Recipient: ");
		bounce_put_value(out, rcpt->orcpt, 0);
		buffer_append_str(out, "\r\n");
	}
	bounce_put_address_field(out, "Final-Recipient", rcpt->address, global);
	buffer_printf(out, "Action: %s\r\n", bounce_action(kind, rcpt));
	buffer_append_str(out, "Status: ");
	bounce_put_value(out, rcpt->status != NULL ? rcpt->status :
			 bounce_default_status(kind), 16);
	buffer_append_str(out, "\r\n");
	if (rcpt->remote_mta != NULL) {
		buffer_append_str(out, "Remote-MTA: dns; ");
		bounce_put_value(out, rcpt->remote_mta, 255);
		buffer_append_str(out, "\r\n");
	}
	if (diagnostic != NULL) {
		/* diagnostic-type ";" text: add a type when ours has none */
		buffer_append_str(out, "Diagnostic-Code: ");
		if (strchr(diagnostic, ';') == NULL)
			buffer_append_str(out, "X-Clustermail; ");
		bounce_put_value(out, diagnostic, BOUNCE_DIAGNOSTIC_MAX);
		buffer_append_str(out, "\r\n");
	}
	last = env->last_attempt != 0 ? env->last_attempt : rcpt->updated;
	if (last != 0) {
		bounce_date(last, date);
		buffer_printf(out, "Last-Attempt-Date: %s\r\n", date);
	}
	if (kind == BOUNCE_DELAYED) {
		bounce_date(env->created +
			    (int64_t)(set->queue_lifetime_msecs / 1000), date);
		buffer_printf(out, "Will-Retry-Until: %s\r\n", date);
	}
}

/* bounce_report - the message/delivery-status part */
static void bounce_report(struct buffer *out, const struct settings *set,
			  const struct queue_envelope *env,
			  const bool *selected, enum bounce_kind kind,
			  bool global)
{
	char date[64];

	buffer_printf(out, "Content-Type: message/%s\r\n"
		      "Content-Description: Delivery report\r\n",
		      global ? "global-delivery-status" : "delivery-status");
	if (global)
		buffer_append_str(out, "Content-Transfer-Encoding: 8bit\r\n");
	buffer_append_str(out, "\r\n");
	buffer_printf(out, "Reporting-MTA: dns; %s\r\n", set->smtp_hostname);
	buffer_append_str(out, "X-Clustermail-Queue-ID: ");
	bounce_put_value(out, env->id, 0);
	buffer_append_str(out, "\r\n");
	if (env->envid != NULL) {
		buffer_append_str(out, "Original-Envelope-Id: ");
		bounce_put_value(out, env->envid, 100);
		buffer_append_str(out, "\r\n");
	}
	if (env->created != 0) {
		bounce_date(env->created, date);
		buffer_printf(out, "Arrival-Date: %s\r\n", date);
	}
	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (selected[i])
			bounce_rcpt_fields(out, set, env, &env->rcpts[i], kind,
					   global);
	}
	buffer_append_str(out, "\r\n");
}

/* bounce_read_original - up to max bytes of the original into out;
   *complete_r says whether that was all of it */
static int bounce_read_original(int fd, struct buffer *out, size_t max,
				bool *complete_r)
{
	uint64_t offset = 0;
	unsigned char *dest;
	ssize_t n;

	*complete_r = false;
	while (offset < max) {
		size_t want = max - offset < BOUNCE_READ_CHUNK ?
			max - offset : BOUNCE_READ_CHUNK;

		dest = buffer_reserve(out, want);
		do {
			n = pread(fd, dest, want, (off_t)offset);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
		buffer_commit(out, (size_t)n);
		if (n == 0) {
			*complete_r = true;
			return 0;
		}
		offset += (uint64_t)n;
	}
	/* Exactly max bytes: complete only if nothing follows. */
	unsigned char probe;

	do {
		n = pread(fd, &probe, 1, (off_t)offset);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	*complete_r = n == 0;
	return 0;
}

/* bounce_header_end - length of the header block (without the empty
   line), or the whole text when it has no body */
static size_t bounce_header_end(const unsigned char *data, size_t size)
{
	for (size_t i = 0; i + 1 < size; i++) {
		if (data[i] != '\n')
			continue;
		if (data[i + 1] == '\n')
			return i + 1;
		if (data[i + 1] == '\r' && i + 2 < size && data[i + 2] == '\n')
			return i + 1;
	}
	return size;
}

/* bounce_original - the returned message (or its headers) */
static int bounce_original(struct buffer *out, const struct queue_envelope *env,
			   enum bounce_kind kind, int content_fd, bool global)
{
	bool headers_only = kind == BOUNCE_DELAYED || env->ret == QUEUE_RET_HDRS;
	struct buffer original;
	bool complete;
	size_t len;
	int ret;

	buffer_init(&original, 0);
	ret = bounce_read_original(content_fd, &original, BOUNCE_RETURN_MAX,
				   &complete);
	if (ret < 0) {
		buffer_clear(&original);
		return ret;
	}
	if (!complete)
		headers_only = true;
	len = headers_only ? bounce_header_end(original.data, original.used) :
		original.used;
	if (headers_only)
		buffer_printf(out, "Content-Type: %s\r\n",
			      global ? "message/global-headers" :
			      "text/rfc822-headers");
	else
		buffer_printf(out, "Content-Type: %s\r\n",
			      global ? "message/global" : "message/rfc822");
	buffer_printf(out, "Content-Description: %s\r\n",
		      headers_only ? "Headers of the original message" :
		      "Original message");
	if (global || env->body_8bit)
		buffer_append_str(out, "Content-Transfer-Encoding: 8bit\r\n");
	buffer_append_str(out, "\r\n");
	buffer_append(out, original.data, len);
	/* The boundary must start on a line of its own. */
	if (len > 0 && original.data[len - 1] != '\n')
		buffer_append_str(out, "\r\n");
	buffer_clear(&original);
	return 0;
}

int bounce_build(const struct settings *set, const struct queue_envelope *env,
		 const bool *rcpt_selected, enum bounce_kind kind,
		 int content_fd, int64_t now, char **text_r, size_t *len_r)
{
	bool global = env->smtputf8;
	char boundary[QUEUE_ID_MAX + 64];
	struct buffer out;
	int ret;

	*text_r = NULL;
	*len_r = 0;
	/* The id is unique in the cluster, the counter in the process: no
	   line of the original can be the same by accident unless it
	   quotes a DSN of ours about the very same message. */
	snprintf(boundary, sizeof(boundary), "=_cmdsn_%s_%" PRId64 "_%u",
		 env->id, now, atomic_fetch_add(&bounce_counter, 1) + 1);
	buffer_init(&out, 0);
	bounce_headers(&out, set, env, kind, boundary, global, now);
	buffer_printf(&out, "--%s\r\n", boundary);
	bounce_human(&out, set, env, rcpt_selected, kind);
	buffer_printf(&out, "--%s\r\n", boundary);
	bounce_report(&out, set, env, rcpt_selected, kind, global);
	if (content_fd >= 0) {
		buffer_printf(&out, "--%s\r\n", boundary);
		if ((ret = bounce_original(&out, env, kind, content_fd,
					   global)) < 0) {
			buffer_clear(&out);
			return ret;
		}
	}
	buffer_printf(&out, "--%s--\r\n", boundary);
	*text_r = buffer_export(&out, len_r);
	return 0;
}

/* bounce_wanted - does this recipient get a DSN of this kind? */
static bool bounce_wanted(const struct queue_rcpt *rcpt, enum bounce_kind kind)
{
	if ((rcpt->notify & QUEUE_NOTIFY_NEVER) != 0)
		return false;
	switch (kind) {
	case BOUNCE_FAILED:
		/* No NOTIFY given means FAILURE (RFC 3461 4.1). */
		return rcpt->notify == 0 ||
			(rcpt->notify & QUEUE_NOTIFY_FAILURE) != 0;
	case BOUNCE_DELAYED:
		/* Not given: at our discretion; we do send delay warnings. */
		return rcpt->notify == 0 ||
			(rcpt->notify & QUEUE_NOTIFY_DELAY) != 0;
	case BOUNCE_DELIVERED:
		return (rcpt->notify & QUEUE_NOTIFY_SUCCESS) != 0;
	}
	return false;
}

int bounce_queue(struct queue *q, struct sio *sio, const struct settings *set,
		 const struct queue_envelope *env, const bool *rcpt_selected,
		 enum bounce_kind kind, int content_fd)
{
	struct queue_envelope dsn;
	struct queue_rcpt rcpt;
	struct queue_writer *writer;
	bool *selected;
	bool any = false;
	char *text;
	size_t len;
	int ret;

	/* RFC 3461 6.2: never a DSN about a DSN (or other null-sender mail). */
	if (env->sender == NULL || env->sender[0] == '\0')
		return 0;
	selected = mem_calloc(env->rcpt_count == 0 ? 1 : env->rcpt_count,
			      sizeof(*selected));
	for (size_t i = 0; i < env->rcpt_count; i++) {
		selected[i] = rcpt_selected[i] &&
			bounce_wanted(&env->rcpts[i], kind);
		any = any || selected[i];
	}
	if (!any) {
		free(selected);
		return 0;
	}
	ret = bounce_build(set, env, selected, kind, content_fd,
			   (int64_t)time(NULL), &text, &len);
	free(selected);
	if (ret < 0)
		return ret;
	if ((ret = queue_write_begin(q, sio, &writer)) < 0) {
		free(text);
		return ret;
	}
	if ((ret = queue_write(writer, text, len)) < 0) {
		queue_write_abort(&writer);
		free(text);
		return ret;
	}
	free(text);

	memset(&rcpt, 0, sizeof(rcpt));
	rcpt.address = env->sender;		/* borrowed for the commit */
	rcpt.notify = QUEUE_NOTIFY_NEVER;
	rcpt.state = QUEUE_RCPT_PENDING;
	memset(&dsn, 0, sizeof(dsn));
	dsn.sender = (char *)"";
	dsn.ret = QUEUE_RET_DEFAULT;
	dsn.smtputf8 = env->smtputf8;
	dsn.body_8bit = env->body_8bit || env->smtputf8;
	dsn.origin_node = set->node_name;
	dsn.origin_client = (char *)"bounce";
	dsn.rcpts = &rcpt;
	dsn.rcpt_count = 1;
	ret = queue_write_commit(&writer, &dsn);
	if (ret == 0)
		log_id_info(env->id, "sender %s notification: %s",
			    kind == BOUNCE_FAILED ? "non-delivery" :
			    kind == BOUNCE_DELAYED ? "delay" : "delivery",
			    dsn.id);
	return ret;
}
