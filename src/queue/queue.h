#ifndef CM_QUEUE_H
#define CM_QUEUE_H
/*
 * queue - the outbound mail queue on the shared spool, one for the whole
 * cluster.
 *
 * A queued message is two files under SPOOL/.queue/:
 *   msg/ID   the message as it will be sent: CRLF line ends, not
 *            dot-stuffed, our Received: header already on top
 *   env/ID   the envelope: sender, DSN parameters (RFC 3461), and per
 *            recipient its state (pending, delivered, failed), last status
 *            and diagnostic; plus attempts, next attempt time, held flag,
 *            delay-warning flag, last error. A small versioned text format,
 *            replaced as a whole (write tmp/, fsync, rename, fsync env/).
 *   tmp/     files being written; active/ID says which node is delivering
 *            ID right now (informational, not fsynced); flush is touched by
 *            "clustermailctl queue flush" so every runner rescans at once.
 * IDs are unique across the cluster (time, node name, pid, counter) and
 * safe as file names and lock names.
 *
 * Enqueueing is durable like a Maildir delivery (DESIGN invariant 1): the
 * content is fsynced, linked into msg/, the envelope fsynced and renamed
 * into env/, both directories fsynced; only then does queue_write_commit()
 * return 0. The envelope's appearance in env/ is the commit point: a
 * msg/ID without env/ID is the leftover of a crash and is removed after a
 * grace period by queue_scan(); an env/ID whose msg/ID is missing is
 * logged and removed with it.
 *
 * Claiming (DESIGN invariant 6): a runner delivers a message only while it
 * holds the EX lock on lock_name_queue(ID), taken with NOQUEUE so that a
 * busy message is simply skipped. The lock dies with its holder (fcntl:
 * the kernel drops OFD locks when a process dies; dlm: after fencing), so
 * another node carries on. After the grant the envelope is read again
 * (the copy seen by the scan may be stale). Per-recipient state is written
 * with queue_claim_update() before the claim is released, so a crash after
 * a delivery at worst repeats the recipients of that one transaction.
 *
 * All I/O goes through a struct sio (sync in clustermailctl and the queue
 * runner threads; loop mode inside SMTP sessions' coroutines). Functions
 * return 0 (or a count) or a negative errno; a one-line reason for the
 * log or the admin is in queue_error(q) afterwards (per thread).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct lock_client;
struct sio;
struct queue;
struct queue_writer;
struct queue_claim;

/* "20261124T155100Z-node1-12345-000001" style; at most this long. */
#define QUEUE_ID_MAX 95

/* DSN NOTIFY (RFC 3461 4.1); 0 = not given (default: FAILURE, and
   DELAY at the runner's discretion). NEVER excludes the others. */
#define QUEUE_NOTIFY_NEVER	0x1
#define QUEUE_NOTIFY_SUCCESS	0x2
#define QUEUE_NOTIFY_FAILURE	0x4
#define QUEUE_NOTIFY_DELAY	0x8

enum queue_ret {
	QUEUE_RET_DEFAULT,	/* not given: like FULL for bounces */
	QUEUE_RET_FULL,
	QUEUE_RET_HDRS,
};

enum queue_rcpt_state {
	QUEUE_RCPT_PENDING,	/* still to deliver (retried) */
	QUEUE_RCPT_DELIVERED,	/* accepted by the next hop or stored locally */
	QUEUE_RCPT_FAILED,	/* permanent failure (or expired); bounced */
};

struct queue_rcpt {
	char *address;		/* forward-path without <>; UTF-8 allowed */
	char *orcpt;		/* ORCPT, decoded, "rfc822;addr", or NULL */
	unsigned int notify;	/* QUEUE_NOTIFY_* */
	enum queue_rcpt_state state;
	bool dsn_sent;		/* a success/failure DSN was queued for it */
	char *status;		/* last enhanced status "4.4.1", or NULL */
	char *diagnostic;	/* last reply "smtp; 450 4.2.0 ...", or NULL */
	char *remote_mta;	/* host that gave the last reply, or NULL */
	int64_t updated;	/* when state/status last changed (unix secs) */
};

struct queue_envelope {
	char id[QUEUE_ID_MAX + 1];
	char *sender;		/* reverse-path without <>; "" = null sender */
	char *envid;		/* ENVID, decoded, or NULL */
	enum queue_ret ret;
	bool smtputf8;		/* SMTPUTF8 was given */
	bool body_8bit;		/* BODY=8BITMIME */
	char *origin_node;	/* node that accepted it */
	char *origin_client;	/* "helo [ip]" or "local", for DSNs and logs */
	int64_t created;	/* arrival (unix secs) */
	uint64_t size;		/* bytes of msg/ID */
	unsigned int attempts;
	int64_t last_attempt;	/* 0 = never */
	int64_t next_attempt;	/* 0 = now */
	bool held;		/* "queue hold": not delivered until released */
	bool delay_warned;	/* the delay DSN was sent */
	char *last_error;	/* one line, or NULL */
	struct queue_rcpt *rcpts;
	size_t rcpt_count;
};

struct queue_settings {
	const char *spool_dir;		/* absolute */
	const char *node_name;		/* goes into IDs */
	struct lock_client *locks;	/* borrowed */
	/* Leftover msg/ and tmp/ files older than this are removed by
	   queue_scan(); 0 = 36 h. */
	uint64_t tmp_grace_secs;
};

/* Creates SPOOL/.queue and its directories when missing (mode 0700).
   NULL with *error_r (caller frees) when that fails. */
struct queue *queue_create(const struct queue_settings *set, char **error_r);
void queue_destroy(struct queue **q);
/* The last failure's reason on this thread (static or thread-local). */
const char *queue_error(void);

void queue_envelope_free(struct queue_envelope **env);
/* Deep copy. */
struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env);
/* Recipients still PENDING. */
size_t queue_envelope_pending(const struct queue_envelope *env);

/* ---- enqueueing -------------------------------------------------------- */

/* Open a new file in tmp/. */
int queue_write_begin(struct queue *q, struct sio *sio,
		      struct queue_writer **writer_r);
/* Message bytes (CRLF line ends expected; a bare LF is written as CRLF).
   Buffered; a write error is reported here or at commit. */
int queue_write(struct queue_writer *w, const void *data, size_t size);
/* Make it durable and visible: env's id is set here (the caller leaves it
   empty), created/size filled when 0. Every recipient must be PENDING or
   DELIVERED (a message whose local recipients were stored directly may
   carry them as DELIVERED, for NOTIFY=SUCCESS), else -EINVAL. Content
   that does not end in a line end gets a final CRLF. Frees the writer.
   On failure nothing is left behind. */
int queue_write_commit(struct queue_writer **w, struct queue_envelope *env);
void queue_write_abort(struct queue_writer **w);

/* ---- scanning and claiming --------------------------------------------- */

/* Call cb for every message (reads each env file; unreadable ones are
   logged and skipped). Stops and returns cb's value if non-zero. Also
   removes crash leftovers older than the grace period. */
typedef int queue_scan_callback_t(const struct queue_envelope *env,
				  void *context);
int queue_scan(struct queue *q, struct sio *sio, queue_scan_callback_t *cb,
	       void *context);
/* One message's envelope (-ENOENT when gone, -EINVAL for a string that
   cannot be a queue ID, -EBADMSG for a damaged or unknown-version
   envelope file). */
int queue_read(struct queue *q, struct sio *sio, const char *id,
	       struct queue_envelope **env_r);

/* EX lock on the message, then the envelope re-read. timeout_msecs 0:
   NOQUEUE (-EAGAIN when another holder has it); otherwise wait at most
   that long (-ETIMEDOUT). -ENOENT when the message is gone. Writes
   active/ID with this node's name. */
int queue_claim(struct queue *q, struct sio *sio, const char *id,
		uint64_t timeout_msecs, struct queue_claim **claim_r);
/* The claimed envelope: the caller may change it, then update. */
struct queue_envelope *queue_claim_envelope(struct queue_claim *claim);
/* Open msg/ID read-only; the caller closes it (sio_close). */
int queue_claim_open_content(struct queue_claim *claim, int *fd_r);
/* Write the envelope durably (still claimed). */
int queue_claim_update(struct queue_claim *claim);
/* Delete the message (env first, then msg; durable), release, free. */
int queue_claim_remove(struct queue_claim **claim);
/* Release the lock (removing active/ID) and free; no write. */
void queue_claim_release(struct queue_claim **claim);

/* Who is delivering id right now: a node name (caller frees) when the
   message's lock is busy, NULL when nobody is. */
char *queue_active_node(struct queue *q, struct sio *sio, const char *id);

/* ---- flush ------------------------------------------------------------- */

/* Touch SPOOL/.queue/flush: every runner in the cluster rescans and
   retries what is due now. queue_flush_stamp() is its mtime (ns), 0 if
   it was never touched; runners poll it. */
int queue_flush_touch(struct queue *q, struct sio *sio);
uint64_t queue_flush_stamp(struct queue *q, struct sio *sio);

/* Next retry delay after attempt number attempts (1 = the first attempt
   failed): initial * 2^(attempts-1), capped at max. */
uint64_t queue_retry_delay_msecs(unsigned int attempts, uint64_t initial_msecs,
				 uint64_t max_msecs);

#endif
