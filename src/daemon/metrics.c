/*
 * metrics.c - process-wide counters and their Prometheus text exposition.
 *
 * Counters are plain atomics updated from any thread; formatting reads
 * them without a lock (a scrape may see counters from slightly different
 * instants, which Prometheus tolerates).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "io/ioloop.h"
#include "lock/lock.h"
#include "queue/runner.h"
#include "maildir/sio.h"
#include "cluster/cluster.h"
#include "daemon.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <time.h>

static atomic_uint_fast64_t metrics_conn_total[SETTINGS_SERVICE_COUNT];
static atomic_uint metrics_conn_current[SETTINGS_SERVICE_COUNT];
static atomic_uint_fast64_t metrics_tls_failures[SETTINGS_SERVICE_COUNT];
static atomic_uint_fast64_t metrics_accept_errors;
static atomic_uint_fast64_t metrics_control_requests;
static atomic_uint_fast64_t metrics_http_requests;

void metrics_connection_opened(enum settings_service service)
{
	atomic_fetch_add(&metrics_conn_total[service], 1);
	atomic_fetch_add(&metrics_conn_current[service], 1);
}

void metrics_connection_closed(enum settings_service service)
{
	atomic_fetch_sub(&metrics_conn_current[service], 1);
}

void metrics_tls_handshake_failed(enum settings_service service)
{
	atomic_fetch_add(&metrics_tls_failures[service], 1);
}

void metrics_accept_error(void)
{
	atomic_fetch_add(&metrics_accept_errors, 1);
}

void metrics_control_request(void)
{
	atomic_fetch_add(&metrics_control_requests, 1);
}

void metrics_http_request(void)
{
	atomic_fetch_add(&metrics_http_requests, 1);
}

unsigned int metrics_connections_current(enum settings_service service)
{
	return atomic_load(&metrics_conn_current[service]);
}

unsigned int metrics_connections_total_current(void)
{
	unsigned int total = 0;

	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++)
		total += atomic_load(&metrics_conn_current[i]);
	return total;
}

/* metrics_header - the HELP and TYPE lines of one metric family */
static void metrics_header(struct buffer *out, const char *name,
			   const char *type, const char *help)
{
	buffer_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* metrics_per_service - one family with a service label per protocol */
static void metrics_per_service(struct buffer *out, const char *name,
				const char *type, const char *help,
				uint64_t (*value)(int service))
{
	metrics_header(out, name, type, help);
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		buffer_printf(out, "%s{service=\"%s\"} %" PRIu64 "\n", name,
			      settings_service_name((enum settings_service)i),
			      value(i));
	}
}

static uint64_t metrics_value_conn_total(int service)
{
	return atomic_load(&metrics_conn_total[service]);
}

static uint64_t metrics_value_conn_current(int service)
{
	return atomic_load(&metrics_conn_current[service]);
}

static uint64_t metrics_value_tls_failures(int service)
{
	return atomic_load(&metrics_tls_failures[service]);
}

/* metrics_scalar - one family with a single unlabelled sample */
static void metrics_scalar(struct buffer *out, const char *name,
			   const char *type, const char *help, uint64_t value)
{
	metrics_header(out, name, type, help);
	buffer_printf(out, "%s %" PRIu64 "\n", name, value);
}

/* metrics_lock_waits - how long granted lock requests took, immediate
   grants included (buckets cumulative, as Prometheus wants them) */
static void metrics_lock_waits(struct buffer *out, const struct lock_stats *st)
{
	uint64_t cumulative = 0;

	metrics_header(out, "clustermail_lock_wait_seconds", "histogram",
		       "Time from lock request to grant.");
	for (unsigned int i = 0; i < LOCK_WAIT_BUCKETS; i++) {
		uint64_t limit = lock_wait_bucket_limit(i);

		cumulative += st->wait_buckets[i];
		if (limit == UINT64_MAX)
			buffer_printf(out, "clustermail_lock_wait_seconds_bucket"
				      "{le=\"+Inf\"} %" PRIu64 "\n", cumulative);
		else
			buffer_printf(out, "clustermail_lock_wait_seconds_bucket"
				      "{le=\"%" PRIu64 ".%03" PRIu64 "\"} %"
				      PRIu64 "\n", limit / 1000, limit % 1000,
				      cumulative);
	}
	buffer_printf(out, "clustermail_lock_wait_seconds_sum %" PRIu64
		      ".%03" PRIu64 "\n", st->wait_msecs_total / 1000,
		      st->wait_msecs_total % 1000);
	buffer_printf(out, "clustermail_lock_wait_seconds_count %" PRIu64 "\n",
		      st->grants);
}

/* metrics_store - cluster locks and spool I/O of the mailbox store */
static void metrics_store(struct buffer *out)
{
	struct lock_stats locks;
	struct sio_stats sio;

	lock_get_stats(&locks);
	sio_get_stats(&sio);
	metrics_scalar(out, "clustermail_lock_grants_total", "counter",
		       "Cluster lock acquisitions and conversions granted.",
		       locks.grants);
	metrics_scalar(out, "clustermail_lock_contended_total", "counter",
		       "Lock grants that had to wait for another holder.",
		       locks.waits);
	metrics_lock_waits(out, &locks);
	metrics_scalar(out, "clustermail_lock_busy_total", "counter",
		       "Try-locks refused because the resource was busy.",
		       locks.busy);
	metrics_scalar(out, "clustermail_lock_timeouts_total", "counter",
		       "Lock requests that timed out.", locks.timeouts);
	metrics_scalar(out, "clustermail_lock_blocking_callbacks_total",
		       "counter", "Times another holder asked for a lock we held.",
		       locks.blocking_callbacks);
	metrics_scalar(out, "clustermail_lock_cache_hits_total", "counter",
		       "Mailbox locks taken from the lock cache (no backend "
		       "request).", locks.cache_hits);
	metrics_scalar(out, "clustermail_lock_cache_drops_total", "counter",
		       "Cached mailbox locks given up for another holder.",
		       locks.cache_drops);
	metrics_scalar(out, "clustermail_lock_errors_total", "counter",
		       "Lock backend failures.", locks.errors);
	metrics_scalar(out, "clustermail_spool_uring_ops_total", "counter",
		       "Spool calls carried out through io_uring.", sio.uring_ops);
	metrics_scalar(out, "clustermail_spool_pool_ops_total", "counter",
		       "Spool calls run on the blocking pool (directory listings).",
		       sio.pool_ops);
	metrics_scalar(out, "clustermail_spool_sync_ops_total", "counter",
		       "Spool calls made as plain system calls.", sio.sync_ops);
}

/* metrics_queue - this node's queue runner */
static void metrics_queue(struct buffer *out)
{
	struct runner_stats st;

	runner_get_stats(&st);
	metrics_scalar(out, "clustermail_queue_delivered_total", "counter",
		       "Queued recipients delivered (local or next hop) by this node.",
		       st.delivered);
	metrics_scalar(out, "clustermail_queue_deferred_total", "counter",
		       "Delivery attempts of queued recipients that failed temporarily.",
		       st.deferred);
	metrics_scalar(out, "clustermail_queue_bounced_total", "counter",
		       "Queued recipients that failed permanently or expired.",
		       st.bounced);
	metrics_scalar(out, "clustermail_queue_dsn_total", "counter",
		       "Delivery status notifications queued by this node.",
		       st.dsn_sent);
	metrics_scalar(out, "clustermail_queue_active", "gauge",
		       "Queued messages this node is delivering now.", st.active);
	metrics_scalar(out, "clustermail_queue_messages", "gauge",
		       "Messages in the cluster-wide queue at the last scan.",
		       st.queued);
}

/* metrics_cluster - the CPG group (cluster.h) */
static void metrics_cluster(struct buffer *out)
{
	struct cluster_status st;

	cluster_get_status(&st);
	metrics_scalar(out, "clustermail_cluster_joined", "gauge",
		       "1 while this daemon is a member of the corosync CPG group.",
		       st.joined ? 1 : 0);
	metrics_scalar(out, "clustermail_cluster_members", "gauge",
		       "Daemons in the CPG group, this one included.",
		       st.member_count);
	metrics_scalar(out, "clustermail_cluster_membership_changes_total",
		       "counter", "CPG membership changes seen.",
		       st.membership_changes);
	metrics_scalar(out, "clustermail_cluster_messages_sent_total", "counter",
		       "Notifications and state messages multicast.",
		       st.messages_sent);
	metrics_scalar(out, "clustermail_cluster_messages_received_total",
		       "counter", "Messages received from the CPG group.",
		       st.messages_received);
	free(st.members);
}

void metrics_format(struct buffer *out)
{
	struct ioloop_stats io;
	time_t now = time(NULL);

	ioloop_get_stats(&io);
	metrics_header(out, "clustermail_build_info", "gauge",
		       "Build and node information (always 1).");
	buffer_printf(out, "clustermail_build_info{version=\"%s\",node=\"%s\"} 1\n",
		      PACKAGE_VERSION, daemon_node_name());
	metrics_scalar(out, "clustermail_start_time_seconds", "gauge",
		       "Unix time the daemon started.",
		       (uint64_t)daemon_start_time());
	metrics_scalar(out, "clustermail_uptime_seconds", "gauge",
		       "Seconds since the daemon started.",
		       (uint64_t)(now - daemon_start_time()));
	metrics_scalar(out, "clustermail_draining", "gauge",
		       "1 while the daemon drains before stopping.",
		       daemon_is_draining() ? 1 : 0);
	metrics_per_service(out, "clustermail_connections", "gauge",
			    "Open client connections.", metrics_value_conn_current);
	metrics_per_service(out, "clustermail_connections_total", "counter",
			    "Client connections accepted.", metrics_value_conn_total);
	metrics_per_service(out, "clustermail_tls_handshake_failures_total",
			    "counter", "TLS handshakes that failed.",
			    metrics_value_tls_failures);
	metrics_scalar(out, "clustermail_accept_errors_total", "counter",
		       "Errors accepting connections.",
		       atomic_load(&metrics_accept_errors));
	metrics_scalar(out, "clustermail_control_requests_total", "counter",
		       "Requests on the control socket.",
		       atomic_load(&metrics_control_requests));
	metrics_scalar(out, "clustermail_http_requests_total", "counter",
		       "Requests on the metrics/health endpoint.",
		       atomic_load(&metrics_http_requests));
	metrics_scalar(out, "clustermail_io_submitted_total", "counter",
		       "Operations submitted to io_uring.", io.submitted);
	metrics_scalar(out, "clustermail_io_completed_total", "counter",
		       "I/O operations completed.", io.completed);
	metrics_scalar(out, "clustermail_io_fallbacks_total", "counter",
		       "Operations run on the blocking pool because io_uring lacked them.",
		       io.fallbacks);
	metrics_scalar(out, "clustermail_io_blocking_jobs_total", "counter",
		       "Blocking calls run on the pool.", io.blocking_jobs);
	metrics_store(out);
	metrics_queue(out);
	metrics_cluster(out);
}
