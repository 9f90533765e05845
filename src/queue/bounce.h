#ifndef CM_BOUNCE_H
#define CM_BOUNCE_H
/*
 * bounce - delivery status notifications (RFC 3464 multipart/report,
 * RFC 3461 semantics) for queued messages, queued in turn as new
 * null-sender messages to the original sender.
 *
 * The report has three parts: a short human-readable text/plain
 * explanation; message/delivery-status (Reporting-MTA: dns; smtp_hostname,
 * Original-Envelope-Id, Arrival-Date, and per recipient
 * Original-Recipient, Final-Recipient, Action, Status, Remote-MTA,
 * Diagnostic-Code, Last-Attempt-Date, and Will-Retry-Until for delays);
 * and the original message: message/rfc822 (RET=FULL or no RET) or
 * text/rfc822-headers (RET=HDRS, and always for delay warnings). The
 * returned content is bounded (BOUNCE_RETURN_MAX; past that only the
 * headers). message/global-delivery-status (RFC 6533) is used instead
 * when the original needed SMTPUTF8.
 *
 * A null-sender original never gets a DSN (RFC 3461 6.2 / RFC 5321 6.1).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue;
struct queue_envelope;
struct settings;
struct sio;

#define BOUNCE_RETURN_MAX (1024 * 1024)

enum bounce_kind {
	BOUNCE_FAILED,		/* Action: failed (the FAILED recipients) */
	BOUNCE_DELAYED,		/* Action: delayed (the PENDING ones) */
	BOUNCE_DELIVERED,	/* Action: delivered/relayed (NOTIFY=SUCCESS) */
};

/* Queue one DSN of kind about the recipients of env selected by
   rcpt_selected[i] (same length as env->rcpt_count). content_fd is the
   original (CRLF) for the returned part. Returns 0 when queued (or when
   nothing is due: null sender, no selected recipient), negative errno
   otherwise (retry later). */
int bounce_queue(struct queue *q, struct sio *sio, const struct settings *set,
		 const struct queue_envelope *env, const bool *rcpt_selected,
		 enum bounce_kind kind, int content_fd);

/* Build the DSN message text (CRLF) into *text_r (caller frees), for
   tests and for bounce_queue(). now is the Date: (unix secs). */
int bounce_build(const struct settings *set, const struct queue_envelope *env,
		 const bool *rcpt_selected, enum bounce_kind kind,
		 int content_fd, int64_t now, char **text_r, size_t *len_r);

#endif
