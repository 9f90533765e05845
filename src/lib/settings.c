/*
 * settings.c - clustermail.conf: the schema of every key, the defaults,
 * value validation, per-node overrides and the cross-checks between keys.
 *
 * Loading builds the effective settings of the selected node (defaults,
 * then global values, then its [node NAME] section), and then builds and
 * checks those of every other node section too, only to throw them away:
 * the file is shared by all nodes, so a mistake in one node's section must
 * stop every node, not only the one it breaks.
 *
 * Path values keep "%n" until all values are merged, because node_name
 * itself may be overridden in a section and %n means the effective name.
 */
#include "lib/lib.h"
#include "buffer.h"
#include "config.h"
#include "settings.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>
#include <unistd.h>

#define SETTINGS_DEFAULT_SPOOL_DIR "/srv/clustermail"
#define SETTINGS_DEFAULT_USERS_FILE SYSCONFDIR "/clustermail/users"
#define SETTINGS_DEFAULT_CONTROL_SOCKET RUNSTATEDIR "/clustermail/%n.sock"
#define SETTINGS_DEFAULT_PID_FILE RUNSTATEDIR "/clustermail/%n.pid"
#define SETTINGS_DEFAULT_MAIL_USER "clustermail"
#define SETTINGS_DEFAULT_TRUSTED_NETWORKS "127.0.0.0/8 ::1"
#define SETTINGS_DEFAULT_SHUTDOWN_TIMEOUT_MSECS (30 * 1000)

#define SETTINGS_DEFAULT_IMAP_APPEND_LIMIT (64ULL * 1024 * 1024)
#define SETTINGS_DEFAULT_IMAP_MAX_LINE_LENGTH (64ULL * 1024)
#define SETTINGS_DEFAULT_IMAP_CLIENT_TIMEOUT_MSECS (30ULL * 60 * 1000)
#define SETTINGS_DEFAULT_IMAP_IDLE_POLL_MSECS 1000
#define SETTINGS_DEFAULT_AUTH_FAILURE_DELAY_MSECS 2000
#define SETTINGS_DEFAULT_AUTH_MAX_FAILURES 10

#define SETTINGS_DEFAULT_SMTP_MAX_MESSAGE_SIZE (50ULL * 1024 * 1024)
#define SETTINGS_DEFAULT_SMTP_MAX_RECIPIENTS 1000
#define SETTINGS_DEFAULT_SMTP_MAX_ERRORS 20
/* RFC 5321 4.5.3.2.7: a server waits at least 5 minutes for a command. */
#define SETTINGS_DEFAULT_SMTP_CLIENT_TIMEOUT_MSECS (5ULL * 60 * 1000)
/* Like Postfix's minimal_backoff_time and maximal_backoff_time. */
#define SETTINGS_DEFAULT_QUEUE_RETRY_INITIAL_MSECS (300ULL * 1000)
#define SETTINGS_DEFAULT_QUEUE_RETRY_MAX_MSECS (4000ULL * 1000)
#define SETTINGS_DEFAULT_QUEUE_LIFETIME_MSECS (5ULL * 86400 * 1000)
#define SETTINGS_DEFAULT_QUEUE_DELAY_WARNING_MSECS (4ULL * 3600 * 1000)
#define SETTINGS_DEFAULT_QUEUE_WORKERS 10
#define SETTINGS_DEFAULT_QUEUE_DESTINATION_CONCURRENCY 5
#define SETTINGS_DEFAULT_QUEUE_SCAN_INTERVAL_MSECS (10ULL * 1000)

#define SETTINGS_WORKERS_MAX 256
#define SETTINGS_SHUTDOWN_TIMEOUT_MAX_MSECS (86400ULL * 1000)
/* POSIX login names are portable up to 32 bytes. */
#define SETTINGS_USER_NAME_MAX 32
#define SETTINGS_DOMAIN_MAX 253
#define SETTINGS_DOMAIN_LABEL_MAX 63

struct settings_service_info {
	const char *key;
	const char *name;
	bool implicit_tls;
};

static const struct settings_service_info settings_services[] = {
	[SETTINGS_SERVICE_IMAP] = { "listen_imap", "imap", false },
	[SETTINGS_SERVICE_IMAPS] = { "listen_imaps", "imaps", true },
	[SETTINGS_SERVICE_POP3] = { "listen_pop3", "pop3", false },
	[SETTINGS_SERVICE_POP3S] = { "listen_pop3s", "pop3s", true },
	[SETTINGS_SERVICE_SMTP] = { "listen_smtp", "smtp", false },
	[SETTINGS_SERVICE_SUBMISSION] = { "listen_submission", "submission", false },
	[SETTINGS_SERVICE_SUBMISSIONS] = { "listen_submissions", "submissions", true },
	[SETTINGS_SERVICE_LMTP] = { "listen_lmtp", "lmtp", false },
};

/* Same order as enum settings_lock_backend for settings_lock_backend_name. */
static const struct config_enum_name settings_lock_backends[] = {
	{ "fcntl", SETTINGS_LOCK_FCNTL },
	{ "dlm", SETTINGS_LOCK_DLM },
	{ "local", SETTINGS_LOCK_LOCAL },
	{ NULL, 0 }
};

/* Same order as enum settings_cluster for settings_cluster_name. */
static const struct config_enum_name settings_clusters[] = {
	{ "auto", SETTINGS_CLUSTER_AUTO },
	{ "corosync", SETTINGS_CLUSTER_COROSYNC },
	{ "none", SETTINGS_CLUSTER_NONE },
	{ "local-test", SETTINGS_CLUSTER_LOCAL_TEST },
	{ NULL, 0 }
};

static const struct config_enum_name settings_queue_tls_names[] = {
	{ "none", SETTINGS_QUEUE_TLS_NONE },
	{ "may", SETTINGS_QUEUE_TLS_MAY },
	{ "encrypt", SETTINGS_QUEUE_TLS_ENCRYPT },
	{ "verify", SETTINGS_QUEUE_TLS_VERIFY },
	{ NULL, 0 }
};

static const struct config_enum_name settings_log_targets[] = {
	{ "stderr", LOG_TARGET_STDERR },
	{ "syslog", LOG_TARGET_SYSLOG },
	{ NULL, 0 }
};

static const struct config_uint_range settings_workers_range = {
	0, SETTINGS_WORKERS_MAX
};
static const uint64_t settings_lock_cache_hold_max = 10000;
static const uint64_t settings_shutdown_timeout_max =
	SETTINGS_SHUTDOWN_TIMEOUT_MAX_MSECS;
/* context of settings_parse_size: the accepted range in bytes */
struct settings_size_range {
	uint64_t min, max;
};
static const struct settings_size_range settings_append_limit_range = {
	1024, 4ULL * 1024 * 1024 * 1024
};
static const struct settings_size_range settings_line_length_range = {
	1024, 16ULL * 1024 * 1024
};
static const uint64_t settings_client_timeout_max = 7ULL * 86400 * 1000;
static const uint64_t settings_idle_poll_max = 3600ULL * 1000;
static const uint64_t settings_failure_delay_max = 60ULL * 1000;
static const struct config_uint_range settings_max_failures_range = {
	0, 1000000
};
static const struct settings_size_range settings_message_size_range = {
	1024, 4ULL * 1024 * 1024 * 1024
};
static const struct config_uint_range settings_max_recipients_range = {
	100, 100000		/* RFC 5321 4.5.3.1.8: at least 100 */
};
static const struct config_uint_range settings_max_errors_range = { 1, 100000 };
static const uint64_t settings_smtp_timeout_max = 3600ULL * 1000;
static const uint64_t settings_queue_duration_max = 30ULL * 86400 * 1000;
static const struct config_uint_range settings_queue_workers_range = { 1, 1000 };
static const struct config_uint_range settings_queue_concurrency_range = { 1, 1000 };
/* context of settings_parse_path: the path may be empty (unset). */
static const bool settings_path_optional = true;

static char *settings_default_host_name(void);
static config_parse_fn settings_parse_node_name;
static config_parse_fn settings_parse_size;
static config_parse_fn settings_parse_path;
static config_parse_fn settings_parse_lock_backend;
static config_parse_fn settings_parse_listen;
static config_parse_fn settings_parse_domains;
static config_parse_fn settings_parse_mail_user;
static config_parse_fn settings_parse_log_level;
static config_parse_fn settings_parse_networks;
static config_parse_fn settings_parse_hostname;
static config_parse_fn settings_parse_relayhost;
static config_parse_fn settings_parse_cluster_group;

#define SETTINGS_FIELD(field) offsetof(struct settings, field)

/* The schema, in the order the man page documents the keys. */
static const struct config_key settings_keys[] = {
	{ "node_name", settings_parse_node_name, SETTINGS_FIELD(node_name), NULL },
	{ "spool_dir", settings_parse_path, SETTINGS_FIELD(spool_dir), NULL },
	{ "lock_backend", settings_parse_lock_backend,
	  SETTINGS_FIELD(lock_backend), settings_lock_backends },
	{ "lock_cache_hold", config_parse_duration,
	  SETTINGS_FIELD(lock_cache_hold_msecs), &settings_lock_cache_hold_max },
	{ "cluster", config_parse_enum, SETTINGS_FIELD(cluster), settings_clusters },
	{ "cluster_group", settings_parse_cluster_group,
	  SETTINGS_FIELD(cluster_group), NULL },
	{ "listen_imap", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_IMAP]), NULL },
	{ "listen_imaps", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_IMAPS]), NULL },
	{ "listen_pop3", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_POP3]), NULL },
	{ "listen_pop3s", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_POP3S]), NULL },
	{ "listen_smtp", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_SMTP]), NULL },
	{ "listen_submission", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_SUBMISSION]), NULL },
	{ "listen_submissions", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_SUBMISSIONS]), NULL },
	{ "listen_lmtp", settings_parse_listen,
	  SETTINGS_FIELD(listen[SETTINGS_SERVICE_LMTP]), NULL },
	{ "tls_cert", settings_parse_path, SETTINGS_FIELD(tls_cert),
	  &settings_path_optional },
	{ "tls_key", settings_parse_path, SETTINGS_FIELD(tls_key),
	  &settings_path_optional },
	{ "users_file", settings_parse_path, SETTINGS_FIELD(users_file), NULL },
	{ "local_domains", settings_parse_domains,
	  SETTINGS_FIELD(local_domains), NULL },
	{ "control_socket", settings_parse_path,
	  SETTINGS_FIELD(control_socket), NULL },
	{ "pid_file", settings_parse_path, SETTINGS_FIELD(pid_file), NULL },
	{ "metrics_listen", settings_parse_listen,
	  SETTINGS_FIELD(metrics_listen), NULL },
	{ "mail_user", settings_parse_mail_user, SETTINGS_FIELD(mail_user), NULL },
	{ "log_level", settings_parse_log_level, SETTINGS_FIELD(log_level), NULL },
	{ "log_target", config_parse_enum, SETTINGS_FIELD(log_target),
	  settings_log_targets },
	{ "trusted_networks", settings_parse_networks,
	  SETTINGS_FIELD(trusted_networks), NULL },
	{ "workers", config_parse_uint, SETTINGS_FIELD(workers),
	  &settings_workers_range },
	{ "shutdown_timeout", config_parse_duration,
	  SETTINGS_FIELD(shutdown_timeout_msecs), &settings_shutdown_timeout_max },
	{ "imap_append_limit", settings_parse_size,
	  SETTINGS_FIELD(imap_append_limit), &settings_append_limit_range },
	{ "imap_max_line_length", settings_parse_size,
	  SETTINGS_FIELD(imap_max_line_length), &settings_line_length_range },
	{ "imap_client_timeout", config_parse_duration,
	  SETTINGS_FIELD(imap_client_timeout_msecs), &settings_client_timeout_max },
	{ "imap_idle_poll_interval", config_parse_duration,
	  SETTINGS_FIELD(imap_idle_poll_msecs), &settings_idle_poll_max },
	{ "auth_failure_delay", config_parse_duration,
	  SETTINGS_FIELD(auth_failure_delay_msecs), &settings_failure_delay_max },
	{ "auth_max_failures", config_parse_uint,
	  SETTINGS_FIELD(auth_max_failures), &settings_max_failures_range },
	{ "smtp_hostname", settings_parse_hostname,
	  SETTINGS_FIELD(smtp_hostname), NULL },
	{ "smtp_max_message_size", settings_parse_size,
	  SETTINGS_FIELD(smtp_max_message_size), &settings_message_size_range },
	{ "smtp_max_recipients", config_parse_uint,
	  SETTINGS_FIELD(smtp_max_recipients), &settings_max_recipients_range },
	{ "smtp_max_errors", config_parse_uint,
	  SETTINGS_FIELD(smtp_max_errors), &settings_max_errors_range },
	{ "smtp_client_timeout", config_parse_duration,
	  SETTINGS_FIELD(smtp_client_timeout_msecs), &settings_smtp_timeout_max },
	{ "relayhost", settings_parse_relayhost, SETTINGS_FIELD(relayhost), NULL },
	{ "relayhost_user", config_parse_string,
	  SETTINGS_FIELD(relayhost_user), NULL },
	{ "relayhost_password_file", settings_parse_path,
	  SETTINGS_FIELD(relayhost_password_file), &settings_path_optional },
	{ "queue_tls", config_parse_enum, SETTINGS_FIELD(queue_tls),
	  settings_queue_tls_names },
	{ "queue_tls_ca_file", settings_parse_path,
	  SETTINGS_FIELD(queue_tls_ca_file), &settings_path_optional },
	{ "queue_retry_initial", config_parse_duration,
	  SETTINGS_FIELD(queue_retry_initial_msecs), &settings_queue_duration_max },
	{ "queue_retry_max", config_parse_duration,
	  SETTINGS_FIELD(queue_retry_max_msecs), &settings_queue_duration_max },
	{ "queue_lifetime", config_parse_duration,
	  SETTINGS_FIELD(queue_lifetime_msecs), &settings_queue_duration_max },
	{ "queue_delay_warning", config_parse_duration,
	  SETTINGS_FIELD(queue_delay_warning_msecs), &settings_queue_duration_max },
	{ "queue_workers", config_parse_uint, SETTINGS_FIELD(queue_workers),
	  &settings_queue_workers_range },
	{ "queue_destination_concurrency", config_parse_uint,
	  SETTINGS_FIELD(queue_destination_concurrency),
	  &settings_queue_concurrency_range },
	{ "queue_scan_interval", config_parse_duration,
	  SETTINGS_FIELD(queue_scan_interval_msecs), &settings_queue_duration_max },
};

/* Who is being checked, for cross-check error messages. */
struct settings_check {
	const struct config_file *file;
	const char *node;	/* the node whose effective settings these are */
	bool other_node;	/* not the selected node: name it in errors */
};

/* settings_field - the field of set that key describes */
static void *settings_field(const struct config_key *key, void *set)
{
	return (char *)set + key->offset;
}

/* settings_parse_node_name - same rules as a [node NAME] header */
static int settings_parse_node_name(const struct config_key *key,
				    const char *value, void *set,
				    char **error_r)
{
	char **field = settings_field(key, set);

	if (!config_node_name_is_valid(value)) {
		*error_r = mem_printf("'%s' is not a valid node name (1-%d letters, "
				      "digits, '-', '_', '.'; starting with a letter "
				      "or digit)", value, CONFIG_NODE_NAME_MAX);
		return -1;
	}
	free(*field);
	*field = mem_strdup(value);
	return 0;
}

/* settings_check_escapes - only %n and %% may appear in a path */
static int settings_check_escapes(const char *value, char **error_r)
{
	for (const char *p = strchr(value, '%'); p != NULL; p = strchr(p, '%')) {
		if (p[1] == 'n' || p[1] == '%') {
			p += 2;
			continue;
		}
		*error_r = p[1] == '\0' ?
			mem_printf("'%s' ends with a lone '%%' (write %%%% for '%%')",
				   value) :
			mem_printf("'%s': '%%%c' is not valid (%%n is the node name, "
				   "%%%% is '%%')", value, p[1]);
		return -1;
	}
	return 0;
}

/* settings_parse_path - an absolute path, possibly with %n; the raw value
   is stored and expanded by settings_expand_paths() after merging */
static int settings_parse_path(const struct config_key *key, const char *value,
			       void *set, char **error_r)
{
	char **field = settings_field(key, set);

	if (value[0] == '\0' && key->context != NULL) {
		MEM_FREE(field);
		return 0;
	}
	if (value[0] != '/') {
		*error_r = value[0] == '\0' ?
			mem_printf("must not be empty (an absolute path is needed)") :
			mem_printf("'%s' is not an absolute path", value);
		return -1;
	}
	if (settings_check_escapes(value, error_r) < 0)
		return -1;
	free(*field);
	*field = mem_strdup(value);
	return 0;
}

/* settings_parse_lock_backend - an enum, but dlm only in a build with it */
static int settings_parse_lock_backend(const struct config_key *key,
				       const char *value, void *set,
				       char **error_r)
{
	if (config_parse_enum(key, value, set, error_r) < 0)
		return -1;
#ifndef HAVE_DLM
	if (strcmp(value, "dlm") == 0) {
		*error_r = mem_printf("'dlm' is not available: this build lacks "
				      "libdlm (rebuild with --with-dlm)");
		return -1;
	}
#endif
	return 0;
}

/* settings_parse_listen - "ADDR:PORT", or empty for off */
static int settings_parse_listen(const struct config_key *key,
				 const char *value, void *set, char **error_r)
{
	struct settings_listen *listen = settings_field(key, set);
	struct net_addr addr;
	const char *error;

	if (value[0] != '\0' && net_parse_hostport(value, &addr, &error) < 0) {
		*error_r = mem_strdup(error);
		return -1;
	}
	free(listen->spec);
	memset(listen, 0, sizeof(*listen));
	if (value[0] != '\0') {
		listen->enabled = true;
		listen->spec = mem_strdup(value);
		listen->addr = addr;
	}
	return 0;
}

/* settings_domain_is_valid - labels of letters, digits and inner hyphens */
static bool settings_domain_is_valid(const char *domain)
{
	size_t label_len = 0, len = strlen(domain);

	if (len == 0 || len > SETTINGS_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i <= len; i++) {
		char c = domain[i];

		if (c == '.' || c == '\0') {
			if (label_len == 0 || label_len > SETTINGS_DOMAIN_LABEL_MAX ||
			    domain[i - 1] == '-')
				return false;
			label_len = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			   (c == '-' && label_len > 0)) {
			label_len++;
		} else {
			return false;
		}
	}
	return true;
}

/* settings_parse_hostname - one domain name, lowercased */
static int settings_parse_hostname(const struct config_key *key,
				   const char *value, void *set, char **error_r)
{
	char **field = settings_field(key, set);
	char *name = str_lcase(mem_strdup(value));

	if (!settings_domain_is_valid(name)) {
		*error_r = mem_printf("'%s' is not a host name", value);
		free(name);
		return -1;
	}
	free(*field);
	*field = name;
	return 0;
}

/* settings_parse_cluster_group - a CPG group name: 1..127 bytes of
   letters, digits, '-', '_' and '.' (corosync allows 128 with the NUL) */
static int settings_parse_cluster_group(const struct config_key *key,
					const char *value, void *set,
					char **error_r)
{
	char **field = settings_field(key, set);
	size_t len = strlen(value);

	if (len == 0 || len > 127 ||
	    strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789-_.") != len) {
		*error_r = mem_printf("'%s' is not a group name (1 to 127 letters, "
				      "digits, '-', '_' or '.')", value);
		return -1;
	}
	free(*field);
	*field = mem_strdup(value);
	return 0;
}

/* settings_parse_relayhost - "HOST", "HOST:PORT", "[HOST]" or
   "[HOST]:PORT" (brackets: no MX lookup, as in Postfix); IPv6 literals
   only in brackets; empty = off */
static int settings_parse_relayhost(const struct config_key *key ATTR_UNUSED,
				    const char *value, void *setp,
				    char **error_r)
{
	struct settings *set = setp;
	const char *host = value, *end, *port_str = NULL;
	bool bracket = value[0] == '[';
	unsigned int port = 25;
	char *host_copy;

	if (value[0] == '\0') {
		MEM_FREE(&set->relayhost);
		MEM_FREE(&set->relayhost_host);
		set->relayhost_port = 0;
		set->relayhost_mx = false;
		return 0;
	}
	if (bracket) {
		host = value + 1;
		if ((end = strchr(host, ']')) == NULL) {
			*error_r = mem_printf("'%s': missing ']'", value);
			return -1;
		}
		if (end[1] == ':')
			port_str = end + 2;
		else if (end[1] != '\0') {
			*error_r = mem_printf("'%s': expected ':PORT' after ']'", value);
			return -1;
		}
	} else {
		end = strchr(host, ':');
		if (end != NULL) {
			port_str = end + 1;
			if (strchr(port_str, ':') != NULL) {
				*error_r = mem_printf("'%s': write IPv6 addresses "
						      "as [ADDRESS]:PORT", value);
				return -1;
			}
		} else {
			end = host + strlen(host);
		}
	}
	if (port_str != NULL) {
		char *p;
		unsigned long n = strtoul(port_str, &p, 10);

		if (port_str[0] < '0' || port_str[0] > '9' || *p != '\0' ||
		    n == 0 || n > 65535) {
			*error_r = mem_printf("'%s': '%s' is not a port (1-65535)",
					      value, port_str);
			return -1;
		}
		port = (unsigned int)n;
	}
	host_copy = str_lcase(mem_strndup(host, (size_t)(end - host)));
	{
		struct in6_addr a6;
		struct in_addr a4;
		bool is_ip = inet_pton(AF_INET, host_copy, &a4) == 1 ||
			inet_pton(AF_INET6, host_copy, &a6) == 1;

		if (!is_ip && !settings_domain_is_valid(host_copy)) {
			*error_r = mem_printf("'%s': '%s' is not a host name or "
					      "IP address", value, host_copy);
			free(host_copy);
			return -1;
		}
		set->relayhost_mx = !bracket && !is_ip;
	}
	free(set->relayhost);
	free(set->relayhost_host);
	set->relayhost = mem_strdup(value);
	set->relayhost_host = host_copy;
	set->relayhost_port = port;
	return 0;
}

/* settings_parse_domains - a list of domain names, lowercased, duplicates
   dropped; empty means none */
static int settings_parse_domains(const struct config_key *key,
				  const char *value, void *set, char **error_r)
{
	struct str_array *field = settings_field(key, set);
	struct str_array words, domains;

	str_array_init(&words);
	str_array_init(&domains);
	str_split_words(value, &words);
	for (size_t i = 0; i < words.count; i++) {
		char *domain = str_lcase(words.items[i]);

		if (!settings_domain_is_valid(domain)) {
			*error_r = mem_printf("'%s' is not a domain name", domain);
			str_array_clear(&words);
			str_array_clear(&domains);
			return -1;
		}
		if (!str_array_contains(&domains, domain))
			str_array_add(&domains, domain);
	}
	str_array_clear(&words);
	str_array_clear(field);
	*field = domains;
	return 0;
}

/* settings_parse_mail_user - a portable login name other than root */
static int settings_parse_mail_user(const struct config_key *key,
				    const char *value, void *set,
				    char **error_r)
{
	char **field = settings_field(key, set);
	size_t len = strlen(value);

	if (len == 0 || len > SETTINGS_USER_NAME_MAX || value[0] == '-' ||
	    strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789._-") != len) {
		*error_r = mem_printf("'%s' is not a valid user name (1-%d letters, "
				      "digits, '.', '_', '-')", value,
				      SETTINGS_USER_NAME_MAX);
		return -1;
	}
	/* Protocol work runs as this user: root would undo the privilege drop. */
	if (strcmp(value, "root") == 0) {
		*error_r = mem_printf("must not be root (the daemon drops its "
				      "privileges to this user)");
		return -1;
	}
	free(*field);
	*field = mem_strdup(value);
	return 0;
}

/* settings_parse_size - a byte count with an optional K/M/G suffix */
static int settings_parse_size(const struct config_key *key, const char *value,
			       void *set, char **error_r)
{
	const struct settings_size_range *range = key->context;
	uint64_t *field = settings_field(key, set);
	uint64_t bytes;

	if (str_parse_size(value, &bytes) < 0) {
		*error_r = mem_printf("'%s' is not a size (e.g. 64k, 10M, 1G)",
				      value);
		return -1;
	}
	if (range != NULL && (bytes < range->min || bytes > range->max)) {
		*error_r = mem_printf("%s is out of range (%llu to %llu bytes)",
				      value, (unsigned long long)range->min,
				      (unsigned long long)range->max);
		return -1;
	}
	*field = bytes;
	return 0;
}

/* settings_parse_log_level - log.h's names, listed in the error */
static int settings_parse_log_level(const struct config_key *key,
				    const char *value, void *set,
				    char **error_r)
{
	enum log_level level;

	if (log_level_parse(value, &level) < 0) {
		*error_r = mem_printf("'%s' is not one of debug, info, notice, "
				      "warning, error", value);
		return -1;
	}
	*(enum log_level *)settings_field(key, set) = level;
	return 0;
}

/* settings_networks_parse - parse a CIDR list into a new array */
static int settings_networks_parse(const char *value, struct net_cidr **cidrs_r,
				   unsigned int *count_r, char **error_r)
{
	struct str_array words;
	struct net_cidr *cidrs;
	const char *error;

	str_array_init(&words);
	str_split_words(value, &words);
	cidrs = words.count == 0 ? NULL : mem_calloc(words.count, sizeof(*cidrs));
	for (size_t i = 0; i < words.count; i++) {
		if (net_cidr_parse(words.items[i], &cidrs[i], &error) < 0) {
			*error_r = mem_strdup(error);
			free(cidrs);
			str_array_clear(&words);
			return -1;
		}
	}
	/* The file is at most 1 MiB, so the count fits easily. */
	*count_r = (unsigned int)words.count;
	*cidrs_r = cidrs;
	str_array_clear(&words);
	return 0;
}

/* settings_parse_networks - trusted_networks; empty means none */
static int settings_parse_networks(const struct config_key *key,
				   const char *value, void *set_ptr,
				   char **error_r)
{
	struct settings *set = set_ptr;
	struct net_cidr *cidrs;
	unsigned int count;

	if (settings_networks_parse(value, &cidrs, &count, error_r) < 0)
		return -1;
	free(set->trusted_networks);
	set->trusted_networks = cidrs;
	set->trusted_network_count = count;
	return 0;
}

/* settings_create_defaults - the settings before any file value */
static struct settings *settings_create_defaults(const char *node)
{
	struct settings *set = mem_zalloc(sizeof(*set));
	char *error = NULL;

	set->node_name = mem_strdup(node);
	set->spool_dir = mem_strdup(SETTINGS_DEFAULT_SPOOL_DIR);
	set->lock_backend = SETTINGS_LOCK_FCNTL;
	set->cluster = SETTINGS_CLUSTER_AUTO;
	set->cluster_group = mem_strdup("clustermail");
	set->users_file = mem_strdup(SETTINGS_DEFAULT_USERS_FILE);
	str_array_init(&set->local_domains);
	set->control_socket = mem_strdup(SETTINGS_DEFAULT_CONTROL_SOCKET);
	set->pid_file = mem_strdup(SETTINGS_DEFAULT_PID_FILE);
	set->mail_user = mem_strdup(SETTINGS_DEFAULT_MAIL_USER);
	set->log_level = LOG_LEVEL_INFO;
	set->log_target = LOG_TARGET_STDERR;
	if (settings_networks_parse(SETTINGS_DEFAULT_TRUSTED_NETWORKS,
				    &set->trusted_networks,
				    &set->trusted_network_count, &error) < 0)
		log_panic("default trusted_networks: %s", error);
	set->workers = 0;
	set->shutdown_timeout_msecs = SETTINGS_DEFAULT_SHUTDOWN_TIMEOUT_MSECS;
	set->lock_cache_hold_msecs = 10;
	set->imap_append_limit = SETTINGS_DEFAULT_IMAP_APPEND_LIMIT;
	set->imap_max_line_length = SETTINGS_DEFAULT_IMAP_MAX_LINE_LENGTH;
	set->imap_client_timeout_msecs = SETTINGS_DEFAULT_IMAP_CLIENT_TIMEOUT_MSECS;
	set->imap_idle_poll_msecs = SETTINGS_DEFAULT_IMAP_IDLE_POLL_MSECS;
	set->auth_failure_delay_msecs = SETTINGS_DEFAULT_AUTH_FAILURE_DELAY_MSECS;
	set->auth_max_failures = SETTINGS_DEFAULT_AUTH_MAX_FAILURES;
	set->smtp_hostname = settings_default_host_name();
	set->smtp_max_message_size = SETTINGS_DEFAULT_SMTP_MAX_MESSAGE_SIZE;
	set->smtp_max_recipients = SETTINGS_DEFAULT_SMTP_MAX_RECIPIENTS;
	set->smtp_max_errors = SETTINGS_DEFAULT_SMTP_MAX_ERRORS;
	set->smtp_client_timeout_msecs = SETTINGS_DEFAULT_SMTP_CLIENT_TIMEOUT_MSECS;
	set->queue_tls = SETTINGS_QUEUE_TLS_MAY;
	set->queue_retry_initial_msecs = SETTINGS_DEFAULT_QUEUE_RETRY_INITIAL_MSECS;
	set->queue_retry_max_msecs = SETTINGS_DEFAULT_QUEUE_RETRY_MAX_MSECS;
	set->queue_lifetime_msecs = SETTINGS_DEFAULT_QUEUE_LIFETIME_MSECS;
	set->queue_delay_warning_msecs = SETTINGS_DEFAULT_QUEUE_DELAY_WARNING_MSECS;
	set->queue_workers = SETTINGS_DEFAULT_QUEUE_WORKERS;
	set->queue_destination_concurrency =
		SETTINGS_DEFAULT_QUEUE_DESTINATION_CONCURRENCY;
	set->queue_scan_interval_msecs = SETTINGS_DEFAULT_QUEUE_SCAN_INTERVAL_MSECS;
	return set;
}

/* settings_listen_free - free a listener's spec and mark it off */
static void settings_listen_free(struct settings_listen *listen)
{
	free(listen->spec);
	memset(listen, 0, sizeof(*listen));
}

void settings_free(struct settings **setp)
{
	struct settings *set = *setp;

	if (set == NULL)
		return;
	free(set->node_name);
	free(set->spool_dir);
	free(set->cluster_group);
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++)
		settings_listen_free(&set->listen[i]);
	free(set->tls_cert);
	free(set->tls_key);
	free(set->users_file);
	str_array_clear(&set->local_domains);
	free(set->control_socket);
	free(set->pid_file);
	settings_listen_free(&set->metrics_listen);
	free(set->mail_user);
	free(set->trusted_networks);
	free(set->smtp_hostname);
	free(set->relayhost);
	free(set->relayhost_host);
	free(set->relayhost_user);
	free(set->relayhost_password_file);
	free(set->queue_tls_ca_file);
	free(set);
	*setp = NULL;
}

/* settings_error - "FILE:LINE: reason" with the line that set key for the
   node being checked, or "FILE: reason" if key has its default */
static char *settings_error(const struct settings_check *check,
			    const char *key, const char *fmt, ...)
	ATTR_FORMAT(3, 4);
static char *settings_error(const struct settings_check *check,
			    const char *key, const char *fmt, ...)
{
	const char *path = config_file_path(check->file);
	unsigned int line = key == NULL ? 0 :
		config_file_key_line(check->file, check->node, key);
	char *reason, *msg, location[32] = "";
	va_list args;

	va_start(args, fmt);
	reason = mem_vprintf(fmt, args);
	va_end(args);
	if (line > 0)
		snprintf(location, sizeof(location), ":%u", line);
	msg = mem_printf("%s%s: %s%s%s%s", path, location, reason,
			 check->other_node ? " (in the settings of node " : "",
			 check->other_node ? check->node : "",
			 check->other_node ? ")" : "");
	free(reason);
	return msg;
}

/* settings_expand - raw with %n replaced by node and %% by % (the escapes
   were checked when the value was parsed) */
static char *settings_expand(const char *raw, const char *node)
{
	struct buffer out;

	buffer_init(&out, 0);
	for (const char *p = raw; *p != '\0'; p++) {
		if (p[0] == '%' && p[1] == 'n') {
			buffer_append_str(&out, node);
			p++;
		} else if (p[0] == '%' && p[1] == '%') {
			buffer_append_byte(&out, '%');
			p++;
		} else {
			buffer_append_byte(&out, (unsigned char)*p);
		}
	}
	return buffer_export(&out, NULL);
}

/* settings_expand_path - expand one path field in place and bound it */
static int settings_expand_path(const struct settings_check *check,
				struct settings *set, const char *key,
				char **field, size_t max_len, char **error_r)
{
	char *expanded;

	if (*field == NULL)
		return 0;
	expanded = settings_expand(*field, set->node_name);
	free(*field);
	*field = expanded;
	if (strlen(expanded) > max_len) {
		*error_r = settings_error(check, key, "%s: '%s' is longer than %zu "
					  "bytes", key, expanded, max_len);
		return -1;
	}
	return 0;
}

/* settings_expand_paths - %n in every path key */
static int settings_expand_paths(const struct settings_check *check,
				 struct settings *set, char **error_r)
{
	/* A unix socket path must fit sun_path with its terminating NUL. */
	const size_t socket_max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;

	if (settings_expand_path(check, set, "spool_dir", &set->spool_dir,
				 PATH_MAX - 1, error_r) < 0 ||
	    settings_expand_path(check, set, "tls_cert", &set->tls_cert,
				 PATH_MAX - 1, error_r) < 0 ||
	    settings_expand_path(check, set, "tls_key", &set->tls_key,
				 PATH_MAX - 1, error_r) < 0 ||
	    settings_expand_path(check, set, "users_file", &set->users_file,
				 PATH_MAX - 1, error_r) < 0 ||
	    settings_expand_path(check, set, "control_socket",
				 &set->control_socket, socket_max, error_r) < 0 ||
	    settings_expand_path(check, set, "pid_file", &set->pid_file,
				 PATH_MAX - 1, error_r) < 0)
		return -1;
	return 0;
}

/* settings_check_tls - certificate and key come together, and implicit
   TLS listeners need them */
static int settings_check_tls(const struct settings_check *check,
			      const struct settings *set, char **error_r)
{
	if (set->tls_cert != NULL && set->tls_key == NULL) {
		*error_r = settings_error(check, "tls_cert",
					  "tls_cert is set but tls_key is not");
		return -1;
	}
	if (set->tls_key != NULL && set->tls_cert == NULL) {
		*error_r = settings_error(check, "tls_key",
					  "tls_key is set but tls_cert is not");
		return -1;
	}
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		if (!set->listen[i].enabled || !settings_services[i].implicit_tls ||
		    set->tls_cert != NULL)
			continue;
		*error_r = settings_error(check, settings_services[i].key,
					  "%s needs tls_cert and tls_key",
					  settings_services[i].key);
		return -1;
	}
	return 0;
}

/* settings_addr_is_any - is addr the wildcard address of its family? */
static bool settings_addr_is_any(const struct net_addr *addr)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&addr->ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&addr->ss;

	if (addr->ss.ss_family == AF_INET)
		return sin->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
}

/* settings_addr_ip_equal - same family and IP (ports not compared) */
static bool settings_addr_ip_equal(const struct net_addr *a,
				   const struct net_addr *b)
{
	const struct sockaddr_in *sin_a = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in *sin_b = (const struct sockaddr_in *)&b->ss;
	const struct sockaddr_in6 *sin6_a = (const struct sockaddr_in6 *)&a->ss;
	const struct sockaddr_in6 *sin6_b = (const struct sockaddr_in6 *)&b->ss;

	if (a->ss.ss_family != b->ss.ss_family)
		return false;
	if (a->ss.ss_family == AF_INET)
		return sin_a->sin_addr.s_addr == sin_b->sin_addr.s_addr;
	return IN6_ARE_ADDR_EQUAL(&sin6_a->sin6_addr, &sin6_b->sin6_addr);
}

/* settings_listen_conflict - would both listeners fail to bind together?
   A wildcard address collides with any address of its family on the same
   port (IPv6 sockets are V6ONLY, so the families never collide). */
static bool settings_listen_conflict(const struct settings_listen *a,
				     const struct settings_listen *b)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->addr.ss;
	const struct sockaddr *sb = (const struct sockaddr *)&b->addr.ss;

	if (!a->enabled || !b->enabled ||
	    a->addr.ss.ss_family != b->addr.ss.ss_family ||
	    net_addr_port(sa) != net_addr_port(sb))
		return false;
	return settings_addr_ip_equal(&a->addr, &b->addr) ||
		settings_addr_is_any(&a->addr) || settings_addr_is_any(&b->addr);
}

/* settings_report_conflict - blame the listener set later in the file,
   which is the one the admin most likely just added */
static void settings_report_conflict(const struct settings_check *check,
				     const char *key_a,
				     const struct settings_listen *a,
				     const char *key_b,
				     const struct settings_listen *b,
				     char **error_r)
{
	if (config_file_key_line(check->file, check->node, key_a) <
	    config_file_key_line(check->file, check->node, key_b)) {
		const char *key_swap = key_a;
		const struct settings_listen *swap = a;

		key_a = key_b;
		a = b;
		key_b = key_swap;
		b = swap;
	}
	*error_r = settings_error(check, key_a, "%s = %s conflicts with %s = %s "
				  "(same address and port)", key_a, a->spec,
				  key_b, b->spec);
}

/* settings_check_listeners - no two listeners on one address and port */
static int settings_check_listeners(const struct settings_check *check,
				    const struct settings *set, char **error_r)
{
	const struct settings_listen *listens[SETTINGS_SERVICE_COUNT + 1];
	const char *keys[SETTINGS_SERVICE_COUNT + 1];

	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		listens[i] = &set->listen[i];
		keys[i] = settings_services[i].key;
	}
	listens[SETTINGS_SERVICE_COUNT] = &set->metrics_listen;
	keys[SETTINGS_SERVICE_COUNT] = "metrics_listen";
	for (unsigned int i = 1; i < N_ELEMENTS(listens); i++) {
		for (unsigned int j = 0; j < i; j++) {
			if (!settings_listen_conflict(listens[i], listens[j]))
				continue;
			settings_report_conflict(check, keys[i], listens[i],
						 keys[j], listens[j], error_r);
			return -1;
		}
	}
	return 0;
}

/* settings_check_queue - relay credentials come together, the retry
   schedule makes sense */
static int settings_check_queue(const struct settings_check *check,
				const struct settings *set, char **error_r)
{
	if ((set->relayhost_user == NULL) != (set->relayhost_password_file == NULL)) {
		*error_r = settings_error(check, set->relayhost_user == NULL ?
					  "relayhost_password_file" : "relayhost_user",
					  "relayhost_user and relayhost_password_file "
					  "must be set together");
		return -1;
	}
	if (set->relayhost_user != NULL && set->relayhost == NULL) {
		*error_r = settings_error(check, "relayhost_user",
					  "relayhost_user needs a relayhost");
		return -1;
	}
	if (set->queue_retry_initial_msecs < 1000) {
		*error_r = settings_error(check, "queue_retry_initial",
					  "must be at least 1s");
		return -1;
	}
	if (set->queue_retry_max_msecs < set->queue_retry_initial_msecs) {
		*error_r = settings_error(check, "queue_retry_max",
					  "must not be less than queue_retry_initial");
		return -1;
	}
	if (set->queue_lifetime_msecs < 60 * 1000) {
		*error_r = settings_error(check, "queue_lifetime",
					  "must be at least 1m");
		return -1;
	}
	if (set->queue_scan_interval_msecs < 100) {
		*error_r = settings_error(check, "queue_scan_interval",
					  "must be at least 100ms");
		return -1;
	}
	return 0;
}

/* settings_build - the effective settings of one node, fully checked */
static int settings_build(const struct config_file *file, const char *node,
			  bool other_node, struct settings **set_r,
			  char **error_r)
{
	struct settings *set = settings_create_defaults(node);
	struct settings_check check = {
		.file = file, .node = node, .other_node = other_node
	};

	if (config_file_apply(file, node, set, error_r) < 0 ||
	    settings_expand_paths(&check, set, error_r) < 0 ||
	    settings_check_tls(&check, set, error_r) < 0 ||
	    settings_check_listeners(&check, set, error_r) < 0 ||
	    settings_check_queue(&check, set, error_r) < 0) {
		settings_free(&set);
		return -1;
	}
	*set_r = set;
	return 0;
}

/* settings_check_node - the selected node name must be usable */
static int settings_check_node(const struct config_file *file,
			       const char *node, char **error_r)
{
	if (config_node_name_is_valid(node))
		return 0;
	*error_r = mem_printf("%s: node name '%s' is not valid (1-%d letters, "
			      "digits, '-', '_', '.'; starting with a letter or "
			      "digit); give one with --node",
			      config_file_path(file), node, CONFIG_NODE_NAME_MAX);
	return -1;
}

/* settings_check_unique_name - node names keep file names unique across
   the cluster, so two nodes must not end up with the same node_name (as
   with a global node_name in a file with several node sections).
   names holds pairs: node, effective node_name. */
static int settings_check_unique_name(const struct config_file *file,
				      const struct str_array *names,
				      const char *node, const char *node_name,
				      char **error_r)
{
	struct settings_check check = {
		.file = file, .node = node, .other_node = false
	};

	for (size_t i = 0; i + 1 < names->count; i += 2) {
		if (strcmp(names->items[i + 1], node_name) != 0)
			continue;
		*error_r = settings_error(&check, "node_name", "nodes %s and %s "
					  "would both be named '%s' (node names "
					  "must be unique in the cluster)",
					  names->items[i], node, node_name);
		return -1;
	}
	return 0;
}

/* settings_check_other_nodes - build and check every node section other
   than the selected node's */
static int settings_check_other_nodes(const struct config_file *file,
				      const struct settings *set,
				      const char *node, char **error_r)
{
	struct str_array names;
	struct settings *other;
	int ret = 0;

	str_array_init(&names);
	str_array_add(&names, node);
	str_array_add(&names, set->node_name);
	for (size_t i = 0; i < config_file_node_count(file) && ret == 0; i++) {
		const char *name = config_file_node_name(file, i);

		if (strcmp(name, node) == 0)
			continue;
		if (settings_build(file, name, true, &other, error_r) < 0)
			ret = -1;
		else {
			ret = settings_check_unique_name(file, &names, name,
							 other->node_name, error_r);
			str_array_add(&names, name);
			str_array_add(&names, other->node_name);
			settings_free(&other);
		}
	}
	str_array_clear(&names);
	return ret;
}

/* settings_load_file - the selected node's settings, after checking every
   other node's too */
static int settings_load_file(const struct config_file *file, const char *node,
			      struct settings **set_r, char **error_r)
{
	struct settings *set;

	if (settings_check_node(file, node, error_r) < 0 ||
	    settings_build(file, node, false, &set, error_r) < 0)
		return -1;
	if (settings_check_other_nodes(file, set, node, error_r) < 0) {
		settings_free(&set);
		return -1;
	}
	*set_r = set;
	return 0;
}

int settings_load(const char *path, const char *node,
		  struct settings **set_r, char **error_r)
{
	struct config_file *file;
	char *node_name;
	int ret;

	if (config_file_read(path, settings_keys, N_ELEMENTS(settings_keys),
			     &file, error_r) < 0)
		return -1;
	node_name = node != NULL ? mem_strdup(node) : settings_default_node_name();
	ret = settings_load_file(file, node_name, set_r, error_r);
	free(node_name);
	config_file_free(&file);
	return ret;
}

/* settings_service_info - the table entry of service; a bad value is a bug */
static const struct settings_service_info *
settings_service_info(enum settings_service service)
{
	if ((unsigned int)service >= SETTINGS_SERVICE_COUNT)
		log_panic("settings: invalid service %d", (int)service);
	return &settings_services[service];
}

const char *settings_service_key(enum settings_service service)
{
	return settings_service_info(service)->key;
}

const char *settings_service_name(enum settings_service service)
{
	return settings_service_info(service)->name;
}

bool settings_service_is_implicit_tls(enum settings_service service)
{
	return settings_service_info(service)->implicit_tls;
}

const char *settings_cluster_name(enum settings_cluster cluster)
{
	for (size_t i = 0; settings_clusters[i].name != NULL; i++) {
		if (settings_clusters[i].value == (int)cluster)
			return settings_clusters[i].name;
	}
	return "unknown";
}

const char *settings_lock_backend_name(enum settings_lock_backend backend)
{
	for (size_t i = 0; settings_lock_backends[i].name != NULL; i++) {
		if (settings_lock_backends[i].value == (int)backend)
			return settings_lock_backends[i].name;
	}
	return "unknown";
}

bool settings_is_trusted(const struct settings *set,
			 const struct sockaddr *peer)
{
	for (unsigned int i = 0; i < set->trusted_network_count; i++) {
		if (net_cidr_match(&set->trusted_networks[i], peer))
			return true;
	}
	return false;
}

/* settings_default_host_name - the host's whole name, lowercased */
static char *settings_default_host_name(void)
{
	char name[HOST_NAME_MAX + 1];

	if (gethostname(name, sizeof(name)) < 0)
		return mem_strdup("localhost");
	name[sizeof(name) - 1] = '\0';
	str_lcase(name);
	return mem_strdup(settings_domain_is_valid(name) ? name : "localhost");
}

bool settings_is_local_domain(const struct settings *set, const char *domain)
{
	for (size_t i = 0; i < set->local_domains.count; i++) {
		if (strcasecmp(set->local_domains.items[i], domain) == 0)
			return true;
	}
	return false;
}

char *settings_default_node_name(void)
{
	char name[HOST_NAME_MAX + 1];

	if (gethostname(name, sizeof(name)) < 0)
		return mem_strdup("localhost");
	/* gethostname() may truncate without terminating. */
	name[sizeof(name) - 1] = '\0';
	name[strcspn(name, ".")] = '\0';
	return mem_strdup(name[0] != '\0' ? name : "localhost");
}

/* settings_str_differs - NULL-safe string inequality */
static bool settings_str_differs(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

/* settings_listen_differs - on/off or the parsed address changed */
static bool settings_listen_differs(const struct settings_listen *a,
				    const struct settings_listen *b)
{
	if (a->enabled != b->enabled)
		return true;
	return a->enabled && (a->addr.len != b->addr.len ||
			      memcmp(&a->addr.ss, &b->addr.ss, a->addr.len) != 0);
}

/* settings_note_change - append key to the comma-separated list */
static void settings_note_change(struct buffer *list, bool changed,
				 const char *key)
{
	if (changed)
		buffer_printf(list, "%s%s", list->used > 0 ? ", " : "", key);
}

char *settings_restart_only_changes(const struct settings *old_set,
				    const struct settings *new_set)
{
	struct buffer list;

	buffer_init(&list, 0);
	settings_note_change(&list, settings_str_differs(old_set->node_name,
							 new_set->node_name), "node_name");
	settings_note_change(&list, settings_str_differs(old_set->spool_dir,
							 new_set->spool_dir), "spool_dir");
	settings_note_change(&list, old_set->lock_backend != new_set->lock_backend,
			     "lock_backend");
	settings_note_change(&list, old_set->lock_cache_hold_msecs !=
			     new_set->lock_cache_hold_msecs, "lock_cache_hold");
	settings_note_change(&list, old_set->cluster != new_set->cluster, "cluster");
	settings_note_change(&list, settings_str_differs(old_set->cluster_group,
							 new_set->cluster_group),
			     "cluster_group");
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++)
		settings_note_change(&list, settings_listen_differs(&old_set->listen[i],
								    &new_set->listen[i]),
				     settings_services[i].key);
	settings_note_change(&list, settings_str_differs(old_set->control_socket,
							 new_set->control_socket),
			     "control_socket");
	settings_note_change(&list, settings_str_differs(old_set->pid_file,
							 new_set->pid_file), "pid_file");
	settings_note_change(&list, settings_listen_differs(&old_set->metrics_listen,
							    &new_set->metrics_listen),
			     "metrics_listen");
	settings_note_change(&list, settings_str_differs(old_set->mail_user,
							 new_set->mail_user), "mail_user");
	settings_note_change(&list, old_set->workers != new_set->workers, "workers");
	settings_note_change(&list, old_set->queue_workers != new_set->queue_workers,
			     "queue_workers");
	if (list.used == 0)
		return NULL;
	return buffer_export(&list, NULL);
}
