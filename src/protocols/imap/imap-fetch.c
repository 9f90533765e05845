/*
 * imap-fetch.c - one message's file and MIME tree for FETCH and SEARCH.
 *
 * Everything here is lazy: a FETCH of FLAGS never gets here, a FETCH of
 * BODYSTRUCTURE that hits the cache never opens the file, and the file is
 * parsed at most once per message per command (the tree is kept in the
 * struct imap_message until the command moves on to the next message).
 *
 * Memory: the streamer holds one IMAP_FETCH_CHUNK read buffer and its CRLF
 * conversion (at most twice that); the parser keeps only what mime-part.h
 * bounds. A 50 MB BODY[] therefore costs about 200 KiB per session.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "maildir/sio.h"
#include "protocols/mime/mime-part.h"
#include "imap-client.h"
#include "imap-fetch.h"

#include <strings.h>
#include <unistd.h>

/* imap_message_init - start with nothing opened */
void imap_message_init(struct imap_message *msg, struct mailbox *box,
		       uint32_t uid)
{
	memset(msg, 0, sizeof(*msg));
	msg->box = box;
	msg->uid = uid;
	msg->fd = -1;
}

/* imap_message_deinit - close the file, free the tree */
void imap_message_deinit(struct imap_message *msg)
{
	if (msg->fd >= 0)
		(void)close(msg->fd);
	msg->fd = -1;
	if (msg->tree != NULL)
		mime_part_free(&msg->tree);
}

/* imap_message_open - open the message file once */
int imap_message_open(struct imap_message *msg)
{
	int ret;

	if (msg->fd >= 0)
		return 1;
	if (msg->gone)
		return 0;
	if (msg->failed)
		return -1;
	ret = mailbox_open_message(msg->box, msg->uid, &msg->fd);
	if (ret == STORE_OK)
		return 1;
	msg->fd = -1;
	if (ret == STORE_ERR_NOTFOUND) {
		msg->gone = true;
		return 0;
	}
	msg->failed = true;
	return -1;
}

/* message_pread - read through the session's spool I/O (io_uring in the
   daemon, so a slow disk stalls only this session); bytes read (short
   only at the end of the file) or -1 */
static ssize_t message_pread(struct imap_message *msg, void *buf, size_t size,
			     uint64_t offset)
{
	struct sio *sio = store_user_sio(mailbox_user(msg->box));
	ssize_t n = sio_pread(sio, msg->fd, buf, size, offset);

	if (n < 0) {
		log_error("reading message UID %u in %s failed: %s",
			  msg->uid, mailbox_name(msg->box), strerror((int)-n));
		msg->failed = true;
		return -1;
	}
	return n;
}

/* message_parse - parse the whole file into a MIME tree */
static struct mime_part *message_parse(struct imap_message *msg)
{
	struct mime_parser *parser = mime_parser_create();
	unsigned char *buf = mem_zalloc(IMAP_FETCH_CHUNK);
	uint64_t offset = 0;
	ssize_t n;

	while ((n = message_pread(msg, buf, IMAP_FETCH_CHUNK, offset)) > 0) {
		mime_parser_feed(parser, buf, (size_t)n);
		offset += (uint64_t)n;
		if ((size_t)n < IMAP_FETCH_CHUNK)
			break;
	}
	free(buf);
	if (n < 0) {
		mime_parser_abort(&parser);
		return NULL;
	}
	return mime_parser_finish(&parser);
}

/* imap_message_tree - the MIME tree, cached or parsed */
const struct mime_part *imap_message_tree(struct imap_message *msg)
{
	const void *data;
	size_t size;
	struct buffer out;

	if (msg->tree != NULL)
		return msg->tree;
	if (mailbox_cache_lookup(msg->box, msg->uid, MAIL_CACHE_MIME_TREE,
				 &data, &size) > 0) {
		msg->tree = mime_part_deserialize(data, size);
		if (msg->tree != NULL)
			return msg->tree;
	}
	if (imap_message_open(msg) <= 0)
		return NULL;
	msg->tree = message_parse(msg);
	if (msg->tree == NULL)
		return NULL;
	/* unlimited: a capped buffer could silently drop a middle piece */
	buffer_init(&out, 0);
	mime_part_serialize(msg->tree, &out);
	if (out.used > 0 && out.used <= MAIL_CACHE_VALUE_MAX)
		mailbox_cache_add(msg->box, msg->uid, MAIL_CACHE_MIME_TREE,
				  out.data, out.used);
	buffer_clear(&out);
	return msg->tree;
}

/* imap_message_read - raw bytes of a range, capped */
int imap_message_read(struct imap_message *msg, uint64_t start, uint64_t end,
		      size_t max, struct buffer *out)
{
	size_t want;
	unsigned char *dest;
	ssize_t n;

	if (imap_message_open(msg) <= 0)
		return -1;
	if (end <= start)
		return 0;
	want = end - start > max ? max : (size_t)(end - start);
	dest = buffer_reserve(out, want);
	if (dest == NULL)
		return -1;
	n = message_pread(msg, dest, want, start);
	if (n < 0)
		return -1;
	buffer_commit(out, (size_t)n);
	return 0;
}

/* The top header's end, found byte by byte. */
struct header_scan {
	uint64_t pos, vsize;	/* bytes seen, and their CRLF size */
	bool line_start;	/* nothing yet on this line */
	bool blank_cr;		/* this line so far is only "\r" */
	bool prev_cr;
};

/* header_scan_feed - true at the blank line (pos is just after it) */
static bool header_scan_feed(struct header_scan *hs, const unsigned char *data,
			     size_t size)
{
	for (size_t i = 0; i < size; i++) {
		unsigned char c = data[i];

		hs->pos++;
		hs->vsize += c == '\n' && !hs->prev_cr ? 2 : 1;
		hs->prev_cr = c == '\r';
		if (c == '\n') {
			if (hs->line_start || hs->blank_cr)
				return true;
			hs->line_start = true;
			hs->blank_cr = false;
		} else {
			hs->blank_cr = hs->line_start && c == '\r';
			hs->line_start = false;
		}
	}
	return false;
}

/* imap_message_header_range - the top header's extent, reading only it */
int imap_message_header_range(struct imap_message *msg, uint64_t *end_r,
			      uint64_t *vsize_r)
{
	struct header_scan hs = { 0, 0, true, false, false };
	unsigned char *buf;
	ssize_t n = 0;
	int ret = 0;

	if (imap_message_open(msg) <= 0)
		return -1;
	buf = mem_zalloc(IMAP_FETCH_CHUNK);
	while (hs.pos < IMAP_HEADER_MEMORY_MAX) {
		uint64_t offset = hs.pos;
		n = message_pread(msg, buf, IMAP_FETCH_CHUNK, offset);
		if (n <= 0) {
			/* no blank line: the whole file is header */
			ret = n < 0 ? -1 : 1;
			break;
		}
		if (header_scan_feed(&hs, buf, (size_t)n)) {
			ret = 1;
			break;
		}
	}
	free(buf);
	*end_r = hs.pos;
	*vsize_r = hs.vsize;
	return ret;
}

/* imap_crlf_convert - append data with bare LFs turned into CRLF */
void imap_crlf_convert(const unsigned char *data, size_t size, bool *prev_cr,
		       struct buffer *out)
{
	size_t i, run = 0;

	for (i = 0; i < size; i++) {
		if (data[i] == '\n' && !*prev_cr) {
			(void)buffer_append(out, data + run, i - run);
			(void)buffer_append(out, "\r", 1);
			run = i;
		}
		*prev_cr = data[i] == '\r';
	}
	(void)buffer_append(out, data + run, size - run);
}

/* stream_state - progress of one streamed range in the CRLF view */
struct stream_state {
	uint64_t vpos;		/* CRLF-view octets produced so far */
	uint64_t vskip, vend;	/* send [vskip, vend) */
	uint64_t sent;
};

/* stream_emit - send the part of a converted chunk inside the window */
static int stream_emit(struct imap_client *client, struct stream_state *st,
		       const struct buffer *conv)
{
	uint64_t from = st->vpos, to = st->vpos + conv->used;
	uint64_t lo = from > st->vskip ? from : st->vskip;
	uint64_t hi = to < st->vend ? to : st->vend;

	st->vpos = to;
	if (hi <= lo)
		return 0;
	st->sent += hi - lo;
	return imap_client_write(client, conv->data + (lo - from),
				 (size_t)(hi - lo));
}

/* stream_pad - fill up with spaces when the file ended early */
static int stream_pad(struct imap_client *client, uint64_t count)
{
	static const char spaces[256] = { [0 ... 255] = ' ' };

	while (count > 0) {
		size_t n = count > sizeof(spaces) ? sizeof(spaces) :
			(size_t)count;
		if (imap_client_write(client, spaces, n) < 0)
			return -1;
		count -= n;
	}
	return 0;
}

/* stream_prev_cr - is the byte before start a CR? */
static bool stream_prev_cr(struct imap_message *msg, uint64_t start)
{
	unsigned char c;

	if (start == 0 || msg->fd < 0)
		return false;
	return message_pread(msg, &c, 1, start - 1) == 1 && c == '\r';
}

/* imap_message_stream - send a window of the CRLF view of a range */
int imap_message_stream(struct imap_message *msg, struct imap_client *client,
			uint64_t start, uint64_t end, uint64_t vskip,
			uint64_t vcount)
{
	struct stream_state st = { 0, vskip, vskip + vcount, 0 };
	unsigned char *buf;
	struct buffer conv;
	bool prev_cr;
	int ret = 0;

	if (vcount == 0)
		return 0;
	if (imap_message_open(msg) <= 0)
		return stream_pad(client, vcount);
	prev_cr = stream_prev_cr(msg, start);
	buf = mem_zalloc(IMAP_FETCH_CHUNK);
	buffer_init(&conv, 0);
	while (start < end && st.vpos < st.vend && ret == 0) {
		size_t want = end - start > IMAP_FETCH_CHUNK ?
			IMAP_FETCH_CHUNK : (size_t)(end - start);
		ssize_t n = message_pread(msg, buf, want, start);
		if (n <= 0)
			break;
		start += (uint64_t)n;
		buffer_reset(&conv);
		imap_crlf_convert(buf, (size_t)n, &prev_cr, &conv);
		ret = stream_emit(client, &st, &conv);
	}
	buffer_clear(&conv);
	free(buf);
	if (ret == 0 && st.sent < vcount) {
		log_warn("message UID %u in %s is shorter than its size; "
			 "padded %llu octets", msg->uid, mailbox_name(msg->box),
			 (unsigned long long)(vcount - st.sent));
		ret = stream_pad(client, vcount - st.sent);
	}
	return ret;
}

/* ---- BINARY: removing the content-transfer-encoding ---------------------- */

int imap_message_has_nul(struct imap_message *msg, uint64_t start,
			 uint64_t end, bool *has_nul_r)
{
	unsigned char *buf;
	int ret = 0;

	*has_nul_r = false;
	if (imap_message_open(msg) <= 0)
		return -1;
	buf = mem_zalloc(IMAP_FETCH_CHUNK);
	while (start < end && !*has_nul_r) {
		size_t want = end - start > IMAP_FETCH_CHUNK ?
			IMAP_FETCH_CHUNK : (size_t)(end - start);
		ssize_t n = message_pread(msg, buf, want, start);

		if (n < 0)
			ret = -1;
		if (n <= 0)
			break;
		start += (uint64_t)n;
		*has_nul_r = memchr(buf, '\0', (size_t)n) != NULL;
	}
	free(buf);
	return ret;
}

/* Streaming decoder state for base64 and quoted-printable. */
struct cte_decoder {
	enum imap_cte cte;
	uint32_t bits;		/* base64: pending bits */
	unsigned int nbits;
	bool b64_done;		/* base64: '=' seen */
	int qp_state;		/* 0 text, 1 after '=', 2 one hex digit seen,
				   3 soft line break (skip to LF) */
	unsigned char qp_hex;
	char ws[256];		/* QP: white space not yet known to be
				   followed by text (trailing WSP is dropped) */
	size_t ws_len;
};

/* imap_cte_parse - Content-Transfer-Encoding value -> enum */
enum imap_cte imap_cte_parse(const char *encoding)
{
	if (encoding == NULL || strcasecmp(encoding, "7bit") == 0 ||
	    strcasecmp(encoding, "8bit") == 0 ||
	    strcasecmp(encoding, "binary") == 0)
		return IMAP_CTE_IDENTITY;
	if (strcasecmp(encoding, "base64") == 0)
		return IMAP_CTE_BASE64;
	if (strcasecmp(encoding, "quoted-printable") == 0)
		return IMAP_CTE_QP;
	return IMAP_CTE_UNKNOWN;
}

/* base64_value - sextet of a base64 character, -1 for others */
static int base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* base64_feed - decode; characters outside the alphabet are skipped */
static void base64_feed(struct cte_decoder *dec, const unsigned char *data,
			size_t size, struct buffer *out)
{
	for (size_t i = 0; i < size && !dec->b64_done; i++) {
		int v = base64_value(data[i]);
		if (data[i] == '=') {
			dec->b64_done = true;
			break;
		}
		if (v < 0)
			continue;
		dec->bits = (dec->bits << 6) | (uint32_t)v;
		dec->nbits += 6;
		if (dec->nbits >= 8) {
			dec->nbits -= 8;
			(void)buffer_append_byte(out, (unsigned char)
						 (dec->bits >> dec->nbits));
		}
	}
}

/* hex_value - 0..15, or -1 */
static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* qp_flush_ws - white space turned out to be followed by text */
static void qp_flush_ws(struct cte_decoder *dec, struct buffer *out)
{
	(void)buffer_append(out, dec->ws, dec->ws_len);
	dec->ws_len = 0;
}

/* qp_text - one character in the text state */
static void qp_text(struct cte_decoder *dec, unsigned char c,
		    struct buffer *out)
{
	if (c == '=') {
		dec->qp_state = 1;
	} else if (c == ' ' || c == '\t') {
		if (dec->ws_len == sizeof(dec->ws))
			qp_flush_ws(dec, out);
		dec->ws[dec->ws_len++] = (char)c;
	} else if (c == '\n') {
		dec->ws_len = 0;	/* transport padding (RFC 2045 6.7) */
		(void)buffer_append(out, "\r\n", 2);
	} else if (c != '\r') {
		qp_flush_ws(dec, out);
		(void)buffer_append_byte(out, c);
	}
}

/* qp_escape - a character after '=' */
static void qp_escape(struct cte_decoder *dec, unsigned char c,
		      struct buffer *out)
{
	int v = hex_value(c);

	qp_flush_ws(dec, out);
	if (dec->qp_state == 1 && v >= 0) {
		dec->qp_hex = (unsigned char)v;
		dec->qp_state = 2;
	} else if (dec->qp_state == 2 && v >= 0) {
		(void)buffer_append_byte(out, (unsigned char)
					 ((dec->qp_hex << 4) | v));
		dec->qp_state = 0;
	} else if (dec->qp_state == 1 && (c == '\r' || c == ' ' ||
					  c == '\t' || c == '\n')) {
		dec->qp_state = c == '\n' ? 0 : 3;	/* soft line break */
	} else {
		/* not an escape: keep the text as it was */
		(void)buffer_append_byte(out, '=');
		if (dec->qp_state == 2)
			(void)buffer_append_byte(out, "0123456789ABCDEF"
						 [dec->qp_hex]);
		dec->qp_state = 0;
		qp_text(dec, c, out);
	}
}

/* qp_feed - decode quoted-printable; hard line breaks become CRLF */
static void qp_feed(struct cte_decoder *dec, const unsigned char *data,
		    size_t size, struct buffer *out)
{
	for (size_t i = 0; i < size; i++) {
		unsigned char c = data[i];
		if (dec->qp_state == 0)
			qp_text(dec, c, out);
		else if (dec->qp_state == 3) {
			if (c == '\n')
				dec->qp_state = 0;
			else if (c != '\r' && c != ' ' && c != '\t') {
				dec->qp_state = 0;
				qp_text(dec, c, out);
			}
		} else
			qp_escape(dec, c, out);
	}
}

/* cte_finish - what is still pending at the end of the body */
static void cte_finish(struct cte_decoder *dec, struct buffer *out)
{
	if (dec->cte == IMAP_CTE_QP && dec->qp_state == 1)
		(void)buffer_append_byte(out, '=');
	dec->ws_len = 0;	/* trailing white space of the last line */
}

/* decode_pass - read the body once, decoding; each decoded chunk goes to
   emit (or is only counted when client is NULL) */
static int decode_pass(struct imap_message *msg, struct imap_client *client,
		       enum imap_cte cte, uint64_t start, uint64_t end,
		       struct stream_state *st, bool *has_nul_r)
{
	struct cte_decoder dec = { .cte = cte };
	unsigned char *buf;
	struct buffer conv;
	int ret = 0;

	if (imap_message_open(msg) <= 0)
		return -1;
	buf = mem_zalloc(IMAP_FETCH_CHUNK);
	buffer_init(&conv, 0);
	for (bool last = false; !last && ret == 0;) {
		size_t want = end - start > IMAP_FETCH_CHUNK ?
			IMAP_FETCH_CHUNK : (size_t)(end - start);
		ssize_t n = want == 0 ? 0 : message_pread(msg, buf, want, start);
		if (n < 0) {
			ret = -1;
			break;
		}
		start += (uint64_t)n;
		last = n == 0 || start >= end;
		buffer_reset(&conv);
		if (cte == IMAP_CTE_BASE64)
			base64_feed(&dec, buf, (size_t)n, &conv);
		else
			qp_feed(&dec, buf, (size_t)n, &conv);
		if (last)
			cte_finish(&dec, &conv);
		if (has_nul_r != NULL && memchr(conv.data == NULL ? "" :
						(const char *)conv.data, '\0',
						conv.used) != NULL)
			*has_nul_r = true;
		if (client != NULL)
			ret = stream_emit(client, st, &conv);
		else
			st->vpos += conv.used;
		if (client != NULL && st->vpos >= st->vend)
			break;
	}
	buffer_clear(&conv);
	free(buf);
	return ret;
}

/* imap_message_decoded_size - first pass: size and NUL check */
int imap_message_decoded_size(struct imap_message *msg, enum imap_cte cte,
			      uint64_t start, uint64_t end, uint64_t *size_r,
			      bool *has_nul_r)
{
	struct stream_state st = { 0, 0, 0, 0 };

	*has_nul_r = false;
	if (decode_pass(msg, NULL, cte, start, end, &st, has_nul_r) < 0)
		return -1;
	*size_r = st.vpos;
	return 0;
}

/* imap_message_stream_decoded - second pass: send the window */
int imap_message_stream_decoded(struct imap_message *msg,
				struct imap_client *client, enum imap_cte cte,
				uint64_t start, uint64_t end, uint64_t vskip,
				uint64_t vcount)
{
	struct stream_state st = { 0, vskip, vskip + vcount, 0 };

	if (vcount == 0)
		return 0;
	if (decode_pass(msg, client, cte, start, end, &st, NULL) < 0 &&
	    !msg->gone && !msg->failed)
		return -1;
	if (st.sent < vcount)
		return stream_pad(client, vcount - st.sent);
	return 0;
}
