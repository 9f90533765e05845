#ifndef CM_IMAP_FETCH_H
#define CM_IMAP_FETCH_H
/*
 * imap-fetch - reading one message of the selected mailbox for FETCH and
 * SEARCH: its file, its MIME tree (from the mailbox cache or parsed once),
 * raw byte ranges with a memory cap, and streaming a range to the client
 * in IMAP's CRLF view.
 *
 * The CRLF view. Files on the spool have LF line ends (or CRLF, written by
 * other tools). IMAP sizes count every LF not preceded by CR as two
 * octets (mime-part.h "*_vsize"), and data is sent that way: the streamer
 * inserts the CR on the fly, so the literal sizes announced from the
 * record's vsize or the tree's header_vsize/body_vsize match the bytes
 * sent. If a file turns out shorter or longer than announced (changed
 * behind our back), the streamer pads with spaces or clips: the protocol
 * stream never desynchronises.
 *
 * File access uses plain pread() on the fd from mailbox_open_message():
 * store_user's sio is private to src/maildir, so these reads do not go
 * through io_uring (they are short reads of a local or page-cached file;
 * memory per read is IMAP_FETCH_CHUNK).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buffer;
struct imap_client;
struct mailbox;
struct mime_part;

/* Read size of the streamer and of the range reader. */
#define IMAP_FETCH_CHUNK (64 * 1024)
/* Most header bytes read into memory for HEADER.FIELDS and SEARCH. */
#define IMAP_HEADER_MEMORY_MAX (1024 * 1024)

/* One message being fetched or searched; lazily opened. */
struct imap_message {
	struct mailbox *box;		/* borrowed */
	uint32_t uid;
	int fd;				/* -1 until opened; owned */
	struct mime_part *tree;		/* owned; NULL until loaded */
	bool gone;			/* the file was expunged */
	bool failed;			/* I/O error (logged) */
};

void imap_message_init(struct imap_message *msg, struct mailbox *box,
		       uint32_t uid);
/* Close the file and free the tree. */
void imap_message_deinit(struct imap_message *msg);
/* Open the file: 1 ok, 0 expunged (msg->gone), -1 error. */
int imap_message_open(struct imap_message *msg);
/* The MIME tree: from MAIL_CACHE_MIME_TREE, else the file is parsed once
   and the tree added to the cache. Returns it, or NULL when the file is
   gone or unreadable. */
const struct mime_part *imap_message_tree(struct imap_message *msg);
/* Where the top header ends (after its blank line) and its CRLF size,
   found by reading only the header: 1, 0 when it is longer than
   IMAP_HEADER_MEMORY_MAX (use the tree), -1 gone/error. */
int imap_message_header_range(struct imap_message *msg, uint64_t *end_r,
			      uint64_t *vsize_r);
/* Append the raw bytes [start, end) of the file to out, at most max bytes.
   Returns 0, or -1 (gone/error). */
int imap_message_read(struct imap_message *msg, uint64_t start, uint64_t end,
		      size_t max, struct buffer *out);
/* Stream the CRLF view of the file range [start, end) to the client:
   skip the first vskip octets of that view, then send exactly vcount
   octets (padding with spaces if the file ends early). Returns 0, or -1
   when the connection is gone. */
int imap_message_stream(struct imap_message *msg, struct imap_client *client,
			uint64_t start, uint64_t end, uint64_t vskip,
			uint64_t vcount);
/* ---- BINARY (RFC 3516): content-transfer-encoding removed ------------ */

enum imap_cte {
	IMAP_CTE_IDENTITY,	/* absent, 7bit, 8bit, binary */
	IMAP_CTE_BASE64,
	IMAP_CTE_QP,
	IMAP_CTE_UNKNOWN,	/* answer NO [UNKNOWN-CTE] */
};
enum imap_cte imap_cte_parse(const char *encoding);

/* The decoded size of a base64 or quoted-printable body [start, end),
   and whether it contains a NUL (then it must be sent as literal8).
   Returns 0, or -1 when the file is gone or unreadable. */
int imap_message_decoded_size(struct imap_message *msg, enum imap_cte cte,
			      uint64_t start, uint64_t end, uint64_t *size_r,
			      bool *has_nul_r);
/* Whether the stored bytes [start, end) hold a NUL (a part without a
   transfer encoding, e.g. stored from a BINARY APPEND: then BINARY[]
   must be sent as literal8). Returns 0, or -1 when the file is gone or
   unreadable. */
int imap_message_has_nul(struct imap_message *msg, uint64_t start,
			 uint64_t end, bool *has_nul_r);
/* Stream a window of the decoded body, like imap_message_stream(). */
int imap_message_stream_decoded(struct imap_message *msg,
				struct imap_client *client, enum imap_cte cte,
				uint64_t start, uint64_t end, uint64_t vskip,
				uint64_t vcount);

/* LF -> CRLF conversion of data into out; *prev_cr carries the state
   between chunks. */
void imap_crlf_convert(const unsigned char *data, size_t size, bool *prev_cr,
		       struct buffer *out);

#endif
