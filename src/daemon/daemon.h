#ifndef CM_DAEMON_H
#define CM_DAEMON_H
/*
 * daemon.h - clustermaild's parts and how they meet.
 *
 * Threads:
 *   main      one ioloop: signals (signalfd), the control socket, the
 *             metrics/health HTTP endpoint, reload and drain coordination.
 *   worker-N  one ioloop each: accepts on every protocol listener and runs
 *             the sessions it accepted until they end.
 *   pool      blocking calls (iopool), completing back into either loop.
 *
 * Configuration is shared as a reference-counted snapshot (struct
 * daemon_config): a session takes a reference when it starts and keeps
 * seeing the same settings and TLS certificate until it ends, while SIGHUP
 * swaps in a new snapshot for sessions that start later.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "lib/settings.h"

struct connection;
struct ioloop;
struct iopool;
struct tls_context;

/* One immutable configuration snapshot. */
struct daemon_config {
	atomic_uint refcount;
	struct settings *set;		/* owned */
	struct tls_context *tls;	/* owned reference; NULL without TLS */
	uint64_t generation;		/* 1 at start, +1 per successful reload */
};

/* Take a reference to the current snapshot (any thread). */
struct daemon_config *daemon_config_get(void);
/* Drop a reference; sets *config = NULL. */
void daemon_config_put(struct daemon_config **config);

/* --- metrics.c: process-wide counters (atomics; any thread) --- */
void metrics_connection_opened(enum settings_service service);
void metrics_connection_closed(enum settings_service service);
void metrics_tls_handshake_failed(enum settings_service service);
void metrics_accept_error(void);
void metrics_control_request(void);
void metrics_http_request(void);
unsigned int metrics_connections_current(enum settings_service service);
unsigned int metrics_connections_total_current(void);
/* Append the Prometheus text exposition of every metric to out. */
struct buffer;
void metrics_format(struct buffer *out);

/* --- worker.c: worker threads --- */
/* Start count workers, each accepting on the given listener fds
   (fds[service] = -1 when the service is off). */
void workers_start(unsigned int count, const int listen_fds[SETTINGS_SERVICE_COUNT],
		   struct iopool *pool);
/* Ask every worker to stop accepting and to finish its sessions; when a
   worker has no session left it exits. Thread-safe. */
void workers_drain(void);
/* Run fn(context) on the thread of every worker still running (any
   thread); ref(context) is called before each post, so that the last
   fn can free a shared context. */
void workers_post_each(void (*fn)(void *context), void *context,
		       void (*ref)(void *context));
/* Close every remaining session at once (drain timeout). */
void workers_abort(void);
/* Number of workers with accepts still pending (0 once every worker has
   stopped accepting: the listening sockets may then be closed). */
unsigned int workers_accepting(void);
/* Number of workers still running (their threads not yet finished). */
unsigned int workers_running(void);
/* Join the finished workers and free them; call after workers_running()
   reached 0. */
void workers_join(void);
/* The calling worker thread's sio (loop mode, for the store). */
struct sio;
struct sio *worker_sio(void);

/* --- listener.c: what a worker does with an accepted socket --- */
/* Start a session for fd accepted on service's listener. */
void listener_session_start(struct ioloop *loop, enum settings_service service,
			    int fd, const struct sockaddr *peer,
			    socklen_t peer_len);
/* A new session id for logs ("imap-000001c8"); returns out. */
const char *listener_session_id(enum settings_service service, char out[32]);

/* --- control.c: the unix control socket (main loop) --- */
/* Start serving on the already listening unix socket fd. */
void control_start(struct ioloop *loop, int listen_fd);
void control_stop(void);

/* --- notify.c: change notifications and the cluster group --- */
/* Join the CPG group per the settings (after the privilege drop); a
   missing corosync is not an error (see cluster.h). -1 with a message
   (caller frees) when the settings ask for what this build lacks. */
int notify_start(const struct settings *set, char **error_r);
void notify_stop(void);
/* user's mailbox changed on this node (the store's callback; also the
   control command "changed" from clustermailctl deliver): wake the IDLE
   sessions here and tell the other members. Any thread. */
void notify_mailbox_changed(const char *user, const char *mailbox,
			    void *context);
/* Cluster-wide admin commands: act here, then tell every other member
   (when in the group: returns true). Any thread. */
bool notify_queue_flush(void);
bool notify_kick_user(const char *user);

/* --- probe.c: the deep health check (control command "probe") --- */
/* error is NULL when the lock round trip and the spool write/read both
   worked; the timings are in milliseconds. */
typedef void probe_done_t(const char *error, uint64_t lock_msecs,
			  uint64_t spool_msecs, void *context);
/* Main loop only; done runs exactly once, on loop, never inside this
   call. */
void probe_start(struct ioloop *loop, probe_done_t *done, void *context);

/* --- http.c: /metrics and /health (main loop) --- */
void http_start(struct ioloop *loop, int listen_fd);
void http_stop(void);

/* --- main.c: daemon-wide state queried by the parts above --- */
time_t daemon_start_time(void);
/* Reload the configuration file (SIGHUP does the same). Returns 0 with
   the new generation, or -1 with a message (caller frees); on failure the
   running configuration stays. Main loop only. */
int daemon_reload(uint64_t *generation_r, char **error_r);
bool daemon_is_draining(void);
const char *daemon_node_name(void);
/* The process's mail store (shared by every thread; immutable), or NULL
   when the spool was unavailable at start (logins then fail with
   [UNAVAILABLE] and the log says why). */
struct store;
struct store *daemon_store(void);
/* The cluster-wide outbound queue (main.c), or NULL when unavailable
   (submission then refuses remote recipients with 451). */
struct queue;
struct queue *daemon_queue(void);
/* The process's lock client, or NULL while the store is unavailable. */
struct lock_client;
struct lock_client *daemon_lock_client(void);

#endif
