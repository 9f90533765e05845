/*
 * smtp-deliver.c - the message data of a transaction (DATA or BDAT
 * chunks) and its delivery.
 *
 * The data streams straight to its destinations while it arrives, so
 * memory stays bounded whatever the message size:
 *   - a store save (src/maildir) when there are local recipients, with
 *     Return-Path: and Received: on top; after the data it is delivered
 *     into each recipient's INBOX (hard links) - durable when each
 *     store_save_deliver() returns OK;
 *   - a queue file (src/queue) with Received: on top when there are
 *     remote recipients (submission), and, for SMTP and submission, also
 *     when there are two or more local recipients: a local delivery that
 *     fails after the data is then queued for a retry by the queue runner
 *     instead of being answered for the whole message.
 * Only after every copy is durable (or queued durably) is the 250 sent
 * (DESIGN invariant 1). LMTP answers once per recipient (RFC 2033 4.2).
 *
 * End of data (RFC 5321 4.1.1.4): only CRLF "." CRLF ends DATA. A line
 * ended by a bare LF is taken as a line for storage, but a "." after it
 * does not end the data - the reading that SMTP smuggling relies on
 * cannot happen here. A leading dot is removed from every line (dot
 * stuffing). The size limit is enforced while reading: past
 * smtp_max_message_size nothing more is written, the rest is read and
 * dropped, and the answer is 552 5.3.4; nothing of a refused message
 * stays on the spool.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "io/ioloop.h"
#include "maildir/store.h"
#include "queue/queue.h"
#include "protocols/linesession.h"
#include "smtp-private.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Bytes handed to the writers at a time. */
#define SMTP_DATA_CHUNK (64 * 1024)
/* Past the first smtp_client_timeout, message data must keep arriving at
   this average rate (bytes/s) or the session ends: a client trickling a
   byte now and then cannot hold a session (and its files) forever. */
#define SMTP_DATA_MIN_RATE 1024

/* Result of one recipient after the data. */
struct rcpt_result {
	int code;		/* 250, 451, 552 ... */
	char text[160];		/* "2.0.0 Ok" (enhanced code and text) */
	bool queued;		/* will be retried by the queue runner */
};

struct smtp_data {
	struct store_save *save;	/* local copy; NULL if none */
	struct store_user *save_user;	/* whose spool holds the save */
	struct queue_writer *queue;	/* queue copy; NULL if none */
	uint64_t size;			/* message bytes (after unstuffing) */
	bool too_big;
	int save_error;			/* first store error (STORE_ERR_*) */
	int queue_error;		/* first queue error (-errno) */
	enum smtp_dot_state state;
	struct buffer out;		/* unstuffed bytes not yet written */
	char id[64];			/* for Received: and the log */
	char queue_id[QUEUE_ID_MAX + 1];	/* "" unless something was queued */
};

void smtp_data_free(struct smtp_data **datap)
{
	struct smtp_data *data = *datap;

	if (data == NULL)
		return;
	*datap = NULL;
	if (data->save != NULL)
		store_save_free(&data->save);
	if (data->save_user != NULL)
		store_user_close(&data->save_user);
	if (data->queue != NULL)
		queue_write_abort(&data->queue);
	buffer_clear(&data->out);
	free(data);
}

/* ---- starting: the copies and their headers ------------------------------ */

/* wants_success_dsn - a local recipient asked for NOTIFY=SUCCESS (and
   there is somebody to tell) */
static bool wants_success_dsn(const struct smtp_client *client,
			      const struct smtp_rcpt *rcpt)
{
	return rcpt->user != NULL && client->sender[0] != '\0' &&
		(rcpt->notify & QUEUE_NOTIFY_SUCCESS) != 0;
}

static size_t count_local(const struct smtp_client *client)
{
	size_t n = 0;

	for (size_t i = 0; i < client->rcpt_count; i++)
		n += client->rcpts[i].user != NULL;
	return n;
}

/* received_protocol - RFC 3848 / RFC 6531 "with" keyword */
static const char *received_protocol(const struct smtp_client *client,
				     char *buf, size_t size)
{
	bool tls = linesession_is_tls(client->ls);
	bool auth = client->auth_user != NULL;

	snprintf(buf, size, "%s%s%s%s",
		 client->smtputf8 ? "UTF8" : "",
		 client->kind == SMTP_KIND_LMTP ? "LMTP" :
		 client->esmtp || client->smtputf8 ? (client->smtputf8 ? "SMTP" : "ESMTP") :
		 "SMTP",
		 tls ? "S" : "", auth ? "A" : "");
	return buf;
}

/* sanitize - printable ASCII copy of an untrusted word for a header */
static void sanitize(const char *in, char *out, size_t size)
{
	size_t i = 0;

	for (; *in != '\0' && i + 1 < size; in++) {
		unsigned char c = (unsigned char)*in;

		out[i++] = c > 32 && c < 127 && c != '(' && c != ')' ? (char)c : '?';
	}
	out[i] = '\0';
}

/* received_header - our trace header (RFC 5321 4.4) */
static void received_header(struct smtp_client *client, struct smtp_data *data,
			    struct buffer *out)
{
	char helo[260], proto[16], date[64];
	time_t now = time(NULL);
	struct tm tm;

	sanitize(client->helo != NULL ? client->helo : "unknown", helo, sizeof(helo));
	(void)localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	(void)buffer_printf(out, "Received: from %s ([%s])\r\n\tby %s (clustermail)",
			    helo, linesession_peer_ip(client->ls),
			    client->set->smtp_hostname);
	if (linesession_is_tls(client->ls))
		(void)buffer_printf(out, " (using %s with cipher %s)",
				    linesession_tls_version(client->ls),
				    linesession_tls_cipher(client->ls));
	(void)buffer_printf(out, " with %s id %s",
			    received_protocol(client, proto, sizeof(proto)), data->id);
	/* "for" only with one recipient: it would tell each recipient the
	   others (bcc) otherwise. */
	if (client->rcpt_count == 1)
		(void)buffer_printf(out, "\r\n\tfor <%s>", client->rcpts[0].address);
	(void)buffer_printf(out, "; %s\r\n", date);
}

/* data_begin - open the copies this transaction needs */
static struct smtp_data *data_begin(struct smtp_client *client)
{
	struct smtp_data *data = mem_zalloc(sizeof(*data));
	size_t local = count_local(client);
	bool need_queue = local < client->rcpt_count ||
		(client->kind != SMTP_KIND_LMTP && local >= 2 && client->queue != NULL);
	bool want_dsn = false;

	/* NOTIFY=SUCCESS for a local recipient: the queue runner sends the
	   "delivered" DSN from a queue copy whose recipient is already done. */
	for (size_t i = 0; i < client->rcpt_count; i++)
		want_dsn = want_dsn || wants_success_dsn(client, &client->rcpts[i]);
	if (want_dsn && client->queue != NULL)
		need_queue = true;
	struct buffer header;
	int ret;

	buffer_init(&data->out, 0);
	client->transactions++;
	snprintf(data->id, sizeof(data->id), "%s.%u", client->id, client->transactions);
	buffer_init(&header, 0);
	received_header(client, data, &header);
	if (local > 0) {
		const char *first = NULL;

		for (size_t i = 0; i < client->rcpt_count && first == NULL; i++)
			first = client->rcpts[i].user;
		ret = store_user_open(client->store, client->sio, first,
				      STORE_USER_CREATE, &data->save_user, NULL);
		if (ret == STORE_OK &&
		    (data->save = store_save_begin(data->save_user, &ret)) != NULL) {
			char *rp = mem_printf("Return-Path: <%s>\r\n", client->sender);

			if (store_save_write(data->save, rp, strlen(rp)) < 0 ||
			    store_save_write(data->save, header.data, header.used) < 0)
				data->save_error = STORE_ERR_TEMP;
			free(rp);
		} else {
			log_id_error(client->id, "cannot save for <%s>: %s", first,
				     data->save_user != NULL ?
				     store_user_error(data->save_user) :
				     store_result_name(ret));
			data->save_error = ret != STORE_OK ? ret : STORE_ERR_TEMP;
		}
	}
	if (need_queue && client->queue != NULL) {
		ret = queue_write_begin(client->queue, client->sio, &data->queue);
		if (ret == 0)
			ret = queue_write(data->queue, header.data, header.used);
		if (ret < 0) {
			log_id_error(client->id, "cannot queue: %s", queue_error());
			data->queue_error = ret;
		}
	} else if (need_queue) {
		data->queue_error = -EAGAIN;
	}
	buffer_clear(&header);
	return data;
}

/* data_flush - hand the unstuffed bytes to the copies */
static void data_flush(struct smtp_client *client, struct smtp_data *data)
{
	if (data->out.used == 0)
		return;
	data->size += data->out.used;
	if (data->size > client->set->smtp_max_message_size)
		data->too_big = true;
	if (!data->too_big) {
		if (data->save != NULL && data->save_error == 0 &&
		    store_save_write(data->save, data->out.data, data->out.used) < 0)
			data->save_error = STORE_ERR_TEMP;
		if (data->queue != NULL && data->queue_error == 0) {
			int ret = queue_write(data->queue, data->out.data, data->out.used);

			if (ret < 0)
				data->queue_error = ret;
		}
	}
	buffer_reset(&data->out);
}

/* ---- DATA: dot-stuffed text ending in CRLF.CRLF --------------------------- */

size_t smtp_dot_decode(enum smtp_dot_state *state, struct buffer *out,
		       const unsigned char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len && *state != DATA_END; i++) {
		unsigned char c = p[i];

		switch (*state) {
		case DATA_LINE_START_CRLF:
			if (c == '.') {
				*state = DATA_DOT;
				continue;
			}
			break;
		case DATA_LINE_START_LF:
			if (c == '.') {	/* stuffing after a bare LF: drop */
				*state = DATA_MID;
				continue;
			}
			break;
		case DATA_DOT:
			if (c == '\r') {
				*state = DATA_DOT_CR;
				continue;
			}
			break;	/* the dot was stuffing: dropped */
		case DATA_DOT_CR:
			if (c == '\n') {
				*state = DATA_END;
				continue;
			}
			(void)buffer_append_byte(out, '\r');
			*state = DATA_MID;
			break;
		case DATA_CR:
			if (c == '\n') {
				(void)buffer_append(out, "\r\n", 2);
				*state = DATA_LINE_START_CRLF;
				continue;
			}
			(void)buffer_append_byte(out, '\r');
			*state = DATA_MID;
			break;
		case DATA_MID:
		case DATA_END:
			break;
		}
		/* c is an ordinary byte of a line in DATA_MID terms */
		if (c == '\r') {
			*state = DATA_CR;
		} else if (c == '\n') {
			(void)buffer_append_byte(out, '\n');
			*state = DATA_LINE_START_LF;
		} else {
			(void)buffer_append_byte(out, c);
			*state = DATA_MID;
		}
	}
	return i;
}

/* ---- delivery after the data --------------------------------------------------- */

static void result_set(struct rcpt_result *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void result_set(struct rcpt_result *r, int code, const char *fmt, ...)
{
	va_list args;

	r->code = code;
	va_start(args, fmt);
	vsnprintf(r->text, sizeof(r->text), fmt, args);
	va_end(args);
}

/* store_failure - a store error as a reply */
static void store_failure(struct rcpt_result *r, int err)
{
	switch (err) {
	case STORE_ERR_OVERQUOTA:
		result_set(r, 552, "5.2.2 Mailbox full");
		break;
	case STORE_ERR_LIMIT:
		result_set(r, 552, "5.3.4 Message too big for the mailbox");
		break;
	default:
		result_set(r, 451, "4.3.0 Temporary local delivery failure");
		break;
	}
}

/* deliver_local - store the save into each local recipient's INBOX */
static void deliver_local(struct smtp_client *client, struct smtp_data *data,
			  struct rcpt_result *results)
{
	struct store_save_options opts = { .flags = 0 };

	if (data->save != NULL && data->save_error == 0 &&
	    store_save_finish(data->save) < 0)
		data->save_error = STORE_ERR_TEMP;
	for (size_t i = 0; i < client->rcpt_count; i++) {
		const struct smtp_rcpt *rcpt = &client->rcpts[i];
		struct store_user *target = NULL;
		size_t dup;
		int ret;

		if (rcpt->user == NULL)
			continue;
		for (dup = 0; dup < i; dup++) {
			if (client->rcpts[dup].user != NULL &&
			    strcmp(client->rcpts[dup].user, rcpt->user) == 0)
				break;
		}
		if (dup < i) {	/* the same mailbox twice: one copy */
			results[i] = results[dup];
			continue;
		}
		if (data->save == NULL || data->save_error != 0) {
			store_failure(&results[i], data->save_error);
			continue;
		}
		/* The spool that holds the save is open already (the first
		   local recipient: usually the only one). */
		if (strcmp(store_user_name(data->save_user), rcpt->user) == 0) {
			target = data->save_user;
			ret = STORE_OK;
		} else {
			ret = store_user_open(client->store, client->sio, rcpt->user,
					      STORE_USER_CREATE, &target, NULL);
		}
		if (ret == STORE_OK)
			ret = store_save_deliver(data->save, target, NULL, &opts);
		if (ret == STORE_OK) {
			result_set(&results[i], 250, "2.0.0 <%s> Ok: delivered as %s",
				   rcpt->address, data->id);
			log_id_info(client->id, "%s: from=<%s> to=<%s> size=%llu "
				    "status=delivered", data->id, client->sender,
				    rcpt->user, (unsigned long long)data->size);
		} else {
			log_id_error(client->id, "%s: from=<%s> to=<%s> delivery "
				     "failed: %s", data->id, client->sender, rcpt->user,
				     target != NULL ? store_user_error(target) :
				     store_result_name(ret));
			store_failure(&results[i], ret);
		}
		if (target != NULL && target != data->save_user)
			store_user_close(&target);
	}
}

/* deliver_queue - queue the remote recipients and the local ones that
   failed; 0, or -1 when the queue copy could not be made */
static int deliver_queue(struct smtp_client *client, struct smtp_data *data,
			 struct rcpt_result *results)
{
	struct queue_envelope env;
	struct queue_rcpt *rcpts;
	size_t n = 0, pending = 0;
	char origin[320];
	int ret;

	if (data->queue == NULL)
		return data->queue_error != 0 ? -1 : 0;
	rcpts = mem_zalloc(sizeof(*rcpts) * (client->rcpt_count + 1));
	for (size_t i = 0; i < client->rcpt_count; i++) {
		const struct smtp_rcpt *rcpt = &client->rcpts[i];

		if (rcpt->user != NULL && results[i].code / 100 == 2) {
			bool dup = false;

			for (size_t j = 0; j < i && !dup; j++)
				dup = client->rcpts[j].user != NULL &&
					strcmp(client->rcpts[j].user, rcpt->user) == 0;
			if (dup || !wants_success_dsn(client, rcpt))
				continue;
			/* Done already; queued only for its DSN. */
			rcpts[n].state = QUEUE_RCPT_DELIVERED;
			rcpts[n].status = (char *)"2.0.0";
			rcpts[n].diagnostic = (char *)"smtp; 250 2.0.0 delivered to the mailbox";
			rcpts[n].updated = time(NULL);
		} else {
			rcpts[n].state = QUEUE_RCPT_PENDING;
			pending++;
		}
		rcpts[n].address = rcpt->address;
		rcpts[n].orcpt = rcpt->orcpt;
		rcpts[n].notify = rcpt->notify;
		n++;
	}
	if (n == 0 || data->queue_error != 0) {
		free(rcpts);
		queue_write_abort(&data->queue);
		/* Without the queue only the DSN is lost, not the mail. */
		return pending == 0 ? 0 : -1;
	}
	memset(&env, 0, sizeof(env));
	env.sender = client->sender;
	env.envid = client->envid;
	env.ret = (enum queue_ret)client->ret;
	env.smtputf8 = client->smtputf8;
	env.body_8bit = client->body == SMTP_BODY_8BITMIME;
	env.origin_node = client->set->node_name;
	snprintf(origin, sizeof(origin), "%s [%s]",
		 client->helo != NULL ? client->helo : "unknown",
		 linesession_peer_ip(client->ls));
	env.origin_client = origin;
	env.rcpts = rcpts;
	env.rcpt_count = n;
	ret = queue_write_commit(&data->queue, &env);
	free(rcpts);
	if (ret < 0) {
		log_id_error(client->id, "%s: cannot queue: %s", data->id, queue_error());
		return -1;
	}
	log_id_info(client->id, "%s: from=<%s> queued as %s (%zu recipients)",
		    data->id, client->sender, env.id, n);
	if (pending > 0)
		snprintf(data->queue_id, sizeof(data->queue_id), "%s", env.id);
	for (size_t i = 0; i < client->rcpt_count; i++) {
		if (client->rcpts[i].user != NULL && results[i].code / 100 == 2)
			continue;
		result_set(&results[i], 250, "2.0.0 <%s> Ok: queued as %s",
			   client->rcpts[i].address, env.id);
		results[i].queued = true;
	}
	if (client->queued != NULL)
		client->queued();
	return 0;
}

/* data_finish - deliver, then answer (one reply, or one per recipient) */
static int data_finish(struct smtp_client *client)
{
	struct smtp_data *data = client->data;
	struct rcpt_result *results;
	int ret = 0;

	data_flush(client, data);
	results = mem_zalloc(sizeof(*results) * client->rcpt_count);
	if (data->too_big) {
		for (size_t i = 0; i < client->rcpt_count; i++)
			result_set(&results[i], 552, "5.3.4 Message size exceeds "
				   "fixed maximum message size");
		log_id_info(client->id, "%s: from=<%s> refused: size over %llu",
			    data->id, client->sender,
			    (unsigned long long)client->set->smtp_max_message_size);
	} else {
		deliver_local(client, data, results);
		if (deliver_queue(client, data, results) < 0) {
			for (size_t i = 0; i < client->rcpt_count; i++) {
				if (client->rcpts[i].user == NULL ||
				    results[i].code / 100 != 2)
					result_set(&results[i], 451, "4.3.0 Queue "
						   "temporarily unavailable");
			}
		}
	}
	if (client->kind == SMTP_KIND_LMTP) {
		for (size_t i = 0; i < client->rcpt_count && ret == 0; i++)
			ret = smtp_reply(client, "%d %s", results[i].code, results[i].text);
	} else {
		/* One answer for all: success when every recipient is stored
		   or queued; otherwise the first failure (a message with some
		   recipients done and others failing cannot happen without the
		   queue: see data_begin). */
		size_t fail = client->rcpt_count;

		for (size_t i = 0; i < client->rcpt_count; i++) {
			if (results[i].code / 100 != 2) {
				fail = i;
				break;
			}
		}
		if (fail == client->rcpt_count && data->queue_id[0] != '\0')
			ret = smtp_reply(client, "250 2.0.0 Ok: queued as %s",
					 data->queue_id);
		else if (fail == client->rcpt_count)
			ret = smtp_reply(client, "250 2.0.0 Ok: delivered as %s", data->id);
		else
			ret = smtp_reply(client, "%d %s", results[fail].code,
					 results[fail].text);
	}
	free(results);
	smtp_transaction_reset(client);
	return ret;
}

/* data_deadline - when the data must be complete, given what came so far */
static uint64_t data_deadline(const struct smtp_client *client, uint64_t start,
			      uint64_t received)
{
	return start + client->set->smtp_client_timeout_msecs +
		received * 1000 / SMTP_DATA_MIN_RATE;
}

int smtp_data_run(struct smtp_client *client)
{
	struct smtp_data *data;
	uint64_t start, received = 0;

	if (smtp_reply(client, "354 End data with <CR><LF>.<CR><LF>") < 0)
		return -1;
	data = client->data = data_begin(client);
	start = ioloop_now_msecs();
	while (data->state != DATA_END) {
		const unsigned char *p;
		size_t len, used;

		linesession_set_input_deadline(client->ls, data_deadline(client, start,
									 received));
		if (linesession_peek(client->ls, &p, &len) < 0)
			return -1;
		/* Bytes after the end stay buffered: pipelined commands. */
		used = smtp_dot_decode(&data->state, &data->out, p, len);
		linesession_consume(client->ls, used);
		received += used;
		if (data->out.used >= SMTP_DATA_CHUNK || data->state == DATA_END)
			data_flush(client, data);
	}
	linesession_set_input_deadline(client->ls, 0);
	return data_finish(client);
}

/* ---- BDAT (RFC 3030) ------------------------------------------------------------ */

/* bdat_skip - read and drop size bytes */
static int bdat_skip(struct smtp_client *client, uint64_t size)
{
	uint64_t start = ioloop_now_msecs(), left = size;

	while (left > 0) {
		const unsigned char *p;
		size_t len;

		linesession_set_input_deadline(client->ls, data_deadline(client, start,
									 size - left));
		if (linesession_read_some(client->ls, left < SMTP_DATA_CHUNK ?
					  (size_t)left : SMTP_DATA_CHUNK, &p, &len) < 0)
			return -1;
		left -= len;
	}
	linesession_set_input_deadline(client->ls, 0);
	return 0;
}

int smtp_bdat_run(struct smtp_client *client, uint64_t size, bool last)
{
	struct smtp_data *data;
	uint64_t left = size, start;

	if (!client->in_mail || client->rcpt_count == 0 || client->bdat_failed) {
		const char *error = !client->in_mail ? "503 5.5.1 Need MAIL command" :
			client->bdat_failed ? "503 5.5.1 Earlier BDAT failed; send RSET" :
			client->kind == SMTP_KIND_LMTP ? "503 5.5.1 No valid recipients" :
			"554 5.5.1 No valid recipients";

		/* The chunk follows the command whatever we answer. */
		if (bdat_skip(client, size) < 0)
			return -1;
		if (client->in_mail)
			client->bdat_failed = !last;
		if (last)
			smtp_transaction_reset(client);
		return smtp_reply_error(client, "%s", error);
	}
	if (client->data == NULL)
		client->data = data_begin(client);
	data = client->data;
	start = ioloop_now_msecs();
	while (left > 0) {
		const unsigned char *p;
		size_t len;

		linesession_set_input_deadline(client->ls, data_deadline(client, start,
									 size - left));
		if (linesession_read_some(client->ls, left < SMTP_DATA_CHUNK ?
					  (size_t)left : SMTP_DATA_CHUNK, &p, &len) < 0)
			return -1;
		left -= len;
		(void)buffer_append(&data->out, p, len);
		data_flush(client, data);
	}
	linesession_set_input_deadline(client->ls, 0);
	if (!last)
		return smtp_reply(client, "250 2.0.0 %llu octets received",
				  (unsigned long long)size);
	return data_finish(client);
}
