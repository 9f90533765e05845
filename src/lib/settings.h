#ifndef CM_SETTINGS_H
#define CM_SETTINGS_H
/*
 * settings - clustermail's configuration: the keys, their defaults, their
 * validation, and the selection of per-node overrides.
 *
 * The file (default /etc/clustermail/clustermail.conf) is the same on every
 * node. Global "key = value" lines come first; "[node NAME]" sections
 * override keys for the node called NAME. The node a process acts as is the
 * --node argument, or else the host's short name (gethostname up to the
 * first dot). Every section is validated, not only the selected one, so a
 * typo for another node is caught on every node.
 *
 * In path values "%n" expands to the node name and "%%" to "%".
 *
 * This file knows key names but no mail logic; the parser itself is
 * config.c.
 */
#include <stdbool.h>
#include <stdint.h>
#include "log.h"
#include "net.h"
#include "str.h"

#define SETTINGS_DEFAULT_PATH SYSCONFDIR "/clustermail/clustermail.conf"

enum settings_lock_backend {
	SETTINGS_LOCK_FCNTL,	/* default */
	SETTINGS_LOCK_DLM,
	SETTINGS_LOCK_LOCAL,
};

/* Cluster membership and change notifications (cluster). */
enum settings_cluster {
	SETTINGS_CLUSTER_AUTO,		/* default: corosync CPG when it runs */
	SETTINGS_CLUSTER_COROSYNC,	/* CPG expected; warn while it is missing */
	SETTINGS_CLUSTER_NONE,		/* never: poll version stamps only */
	SETTINGS_CLUSTER_LOCAL_TEST,	/* like corosync, and the spool may be a
					   local directory shared by daemons on
					   one host (demos and tests) */
};

/* Protocol listeners, in the order of the listen_* keys. */
/* Outbound TLS (queue_tls). */
enum settings_queue_tls {
	SETTINGS_QUEUE_TLS_NONE,	/* never STARTTLS */
	SETTINGS_QUEUE_TLS_MAY,		/* default: STARTTLS when offered, any cert */
	SETTINGS_QUEUE_TLS_ENCRYPT,	/* STARTTLS required, any cert */
	SETTINGS_QUEUE_TLS_VERIFY,	/* STARTTLS required, cert and name checked */
};

enum settings_service {
	SETTINGS_SERVICE_IMAP,
	SETTINGS_SERVICE_IMAPS,
	SETTINGS_SERVICE_POP3,
	SETTINGS_SERVICE_POP3S,
	SETTINGS_SERVICE_SMTP,
	SETTINGS_SERVICE_SUBMISSION,
	SETTINGS_SERVICE_SUBMISSIONS,
	SETTINGS_SERVICE_LMTP,
	SETTINGS_SERVICE_COUNT
};

struct settings_listen {
	bool enabled;		/* false when the value is empty (the default) */
	char *spec;		/* the value as written, owned; NULL when off */
	struct net_addr addr;	/* parsed spec */
};

struct settings {
	char *node_name;		/* owned; default: the selected node */
	char *spool_dir;		/* owned; default /srv/clustermail */
	enum settings_lock_backend lock_backend;
	/* Minimum hold of a cached mailbox lock; 0 = no caching. */
	uint64_t lock_cache_hold_msecs;	/* default 10ms */
	enum settings_cluster cluster;	/* default auto */
	char *cluster_group;		/* owned; CPG group; default "clustermail" */
	struct settings_listen listen[SETTINGS_SERVICE_COUNT];
	char *tls_cert;			/* owned; NULL when unset */
	char *tls_key;			/* owned; NULL when unset */
	char *users_file;		/* owned; default SYSCONFDIR/clustermail/users */
	struct str_array local_domains;	/* lowercased; default empty */
	char *control_socket;		/* owned; default RUNSTATEDIR/clustermail/%n.sock */
	char *pid_file;			/* owned; default RUNSTATEDIR/clustermail/%n.pid */
	struct settings_listen metrics_listen;	/* default off */
	char *mail_user;		/* owned; default "clustermail" */
	enum log_level log_level;	/* default info */
	enum log_target log_target;	/* log_target = stderr|syslog; default stderr */
	struct net_cidr *trusted_networks;	/* owned array */
	unsigned int trusted_network_count;	/* default: 127.0.0.0/8 ::1 */
	unsigned int workers;		/* worker threads; 0 (default) = CPUs */
	uint64_t shutdown_timeout_msecs; /* SIGTERM drain limit; default 30s */

	/* IMAP (doc/clustermail.conf.5 "IMAP") */
	uint64_t imap_append_limit;	/* bytes per message (APPENDLIMIT); default 64M */
	uint64_t imap_max_line_length;	/* bytes of one command line; default 64k */
	uint64_t imap_client_timeout_msecs; /* idle client (autologout); default 30m */
	uint64_t imap_idle_poll_msecs;	/* IDLE version-stamp poll; default 1s */
	/* Logins (every protocol) */
	uint64_t auth_failure_delay_msecs; /* answer to a failed login; default 2s */
	unsigned int auth_max_failures;	/* per client IP per 10 minutes; default 10,
					   0 = no limit */

	/* SMTP, submission, LMTP (doc/clustermail.conf.5 "SMTP") */
	char *smtp_hostname;		/* owned; banner, EHLO, Received:, HELO out,
					   DSN Reporting-MTA; default: the host's
					   name (gethostname), lowercased */
	uint64_t smtp_max_message_size;	/* bytes (SIZE); default 50M */
	unsigned int smtp_max_recipients; /* per message; default 1000 */
	unsigned int smtp_max_errors;	/* refused commands per session; default 20 */
	uint64_t smtp_client_timeout_msecs; /* wait for a command/data; default 5m */

	/* Outbound queue (doc/clustermail.conf.5 "QUEUE") */
	char *relayhost;		/* owned; as written; NULL = MX delivery */
	char *relayhost_host;		/* owned; host name or IP literal, no [] */
	unsigned int relayhost_port;	/* default 25 */
	bool relayhost_mx;		/* "host" (no []) with a name: MX lookup */
	char *relayhost_user;		/* owned; NULL = no AUTH to the relayhost */
	char *relayhost_password_file;	/* owned; the password (first line) */
	enum settings_queue_tls queue_tls;	/* default may */
	char *queue_tls_ca_file;	/* owned; NULL = the system's CA store */
	uint64_t queue_retry_initial_msecs;	/* first retry; default 5m */
	uint64_t queue_retry_max_msecs;	/* backoff cap; default 4000s */
	uint64_t queue_lifetime_msecs;	/* then bounce; default 5d */
	uint64_t queue_delay_warning_msecs; /* delay DSN after; default 4h, 0 = off */
	unsigned int queue_workers;	/* deliveries at once per node; default 10 */
	unsigned int queue_destination_concurrency; /* per destination per node; 5 */
	uint64_t queue_scan_interval_msecs; /* queue rescan; default 10s */
};

/* Load and validate path for the given node (NULL = host short name).
   Returns 0 with *set_r filled (free with settings_free), or -1 with a
   message "FILE:LINE: reason" (or "FILE: reason") in *error_r, which the
   caller frees. Unknown keys, bad values, duplicate keys in one section,
   and inconsistent combinations (e.g. listen_imaps without tls_cert and
   tls_key) are all errors. */
int settings_load(const char *path, const char *node,
		  struct settings **set_r, char **error_r);
void settings_free(struct settings **set);

/* Key name of a service's listener ("listen_imap") and its short
   protocol name ("imap"). */
const char *settings_service_key(enum settings_service service);
const char *settings_service_name(enum settings_service service);
/* Is the service implicit TLS (imaps, pop3s, submissions)? */
bool settings_service_is_implicit_tls(enum settings_service service);
/* Is domain (any case) one of local_domains? */
bool settings_is_local_domain(const struct settings *set, const char *domain);
const char *settings_lock_backend_name(enum settings_lock_backend backend);
const char *settings_cluster_name(enum settings_cluster cluster);
/* Is the peer on a trusted network (plaintext auth allowed)? */
bool settings_is_trusted(const struct settings *set,
			 const struct sockaddr *peer);
/* The host's short name (owned by the caller). */
char *settings_default_node_name(void);

/* For SIGHUP: names (comma-separated, caller frees) of keys that differ
   between old and new but only take effect at restart (listeners,
   spool_dir, node_name, lock_backend, lock_cache_hold, mail_user, control_socket,
   pid_file, metrics_listen, workers, queue_workers); NULL if none. */
char *settings_restart_only_changes(const struct settings *old_set,
				    const struct settings *new_set);

#endif
