#ifndef CM_RUNNER_H
#define CM_RUNNER_H
/*
 * runner - each node's queue runner: the threads that take messages from
 * the cluster-wide queue (queue.h) and deliver them.
 *
 * A scanner thread lists the queue every queue_scan_interval (and at once
 * when kicked, or when the flush stamp changes: "clustermailctl queue
 * flush" on any node), picks the messages that are due (next_attempt
 * passed, not held) and hands them to queue_workers delivery threads.
 * A delivery thread claims the message (NOQUEUE: a message another node
 * is delivering is skipped), then, per pending recipient:
 *   - local domain (local_domains): store_save_deliver() into the user's
 *     INBOX (unknown user: failed 5.1.1; over quota: deferred 4.2.2 and
 *     retried until the lifetime ends; store trouble: deferred 4.3.0);
 *   - otherwise transport_deliver(), grouped by domain (or all at once to
 *     the relayhost), at most queue_destination_concurrency transactions
 *     per destination at a time on this node.
 * The envelope is updated (queue_claim_update) after every transaction.
 * Then: all recipients done -> DSNs for failed ones (and NOTIFY=SUCCESS
 * ones) are queued (bounce.h) and the message is removed; some pending ->
 * next_attempt = now + queue_retry_delay_msecs(); past queue_lifetime ->
 * the pending ones fail as expired (4.4.7) and bounce; past
 * queue_delay_warning with no warning sent -> one delay DSN.
 * Null-sender messages never cause a DSN.
 *
 * The runner owns its threads; the daemon starts it after the privilege
 * drop and stops it at drain.
 */
#include <stdbool.h>

struct store;
struct queue;
struct lock_client;
struct daemon_config;

struct runner_settings {
	struct queue *queue;		/* borrowed */
	struct store *store;		/* borrowed; local deliveries */
	struct lock_client *locks;	/* borrowed; the store's and queue's */
	/* Current configuration snapshot (reference taken, caller drops it
	   with put); the runner asks again before every scan so SIGHUP
	   changes (relayhost, retry schedule) apply. */
	const struct settings *(*config_get)(void **ref_r);
	void (*config_put)(void *ref);
};

/* Start the scanner and delivery threads. 0, or -1 (logged). */
int runner_start(const struct runner_settings *set);
/* Scan now (after an enqueue on this node). Any thread; cheap. */
void runner_kick(void);
/* Stop: no new claims; running transactions finish (or time out); joins
   every thread. Safe to call when not started. */
void runner_stop(void);

/* Counters for /metrics. */
struct runner_stats {
	unsigned long long delivered;	/* recipients */
	unsigned long long deferred;	/* recipients, temporary failures */
	unsigned long long bounced;	/* recipients, permanent failures */
	unsigned long long dsn_sent;	/* DSN messages queued */
	unsigned int active;		/* claims held now */
	unsigned int queued;		/* messages seen by the last scan */
};
void runner_get_stats(struct runner_stats *stats_r);

#endif
