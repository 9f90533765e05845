/*
 * cmd-config.c - `clustermailctl config get KEY`: print the effective
 * value of one setting for this node, after the [node] section and the
 * defaults are applied.
 *
 * Scripts (the OCF agent above all) use it instead of parsing the file
 * themselves, so they see exactly what the daemon will see. Durations
 * print in seconds, listeners as written ("" when off).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "ctl.h"

#include <inttypes.h>
#include <stdio.h>

/* config_listen - a listener's spec, "" when off */
static const char *config_listen(const struct settings_listen *listen)
{
	return listen->enabled ? listen->spec : "";
}

/* config_value - KEY's value; NULL for a key this command does not know.
   buf holds numbers. */
static const char *config_value(const struct settings *set, const char *key,
				char *buf, size_t size)
{
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		if (strcmp(key, settings_service_key(i)) == 0)
			return config_listen(&set->listen[i]);
	}
	if (strcmp(key, "node_name") == 0)
		return set->node_name;
	if (strcmp(key, "spool_dir") == 0)
		return set->spool_dir;
	if (strcmp(key, "lock_backend") == 0)
		return settings_lock_backend_name(set->lock_backend);
	if (strcmp(key, "cluster") == 0)
		return settings_cluster_name(set->cluster);
	if (strcmp(key, "cluster_group") == 0)
		return set->cluster_group;
	if (strcmp(key, "pid_file") == 0)
		return set->pid_file;
	if (strcmp(key, "control_socket") == 0)
		return set->control_socket;
	if (strcmp(key, "mail_user") == 0)
		return set->mail_user;
	if (strcmp(key, "metrics_listen") == 0)
		return config_listen(&set->metrics_listen);
	if (strcmp(key, "users_file") == 0)
		return set->users_file;
	if (strcmp(key, "shutdown_timeout") == 0) {
		snprintf(buf, size, "%" PRIu64, set->shutdown_timeout_msecs / 1000);
		return buf;
	}
	return NULL;
}

static const char *const config_keys[] = {
	"node_name", "spool_dir", "lock_backend", "cluster", "cluster_group",
	"pid_file", "control_socket", "mail_user", "users_file",
	"listen_imap", "listen_imaps", "listen_pop3", "listen_pop3s",
	"listen_smtp", "listen_submission", "listen_submissions",
	"listen_lmtp", "metrics_listen", "shutdown_timeout",
};

int cmd_config(struct ctl *ctl, int argc, char **argv)
{
	char buf[32];
	const char *value;

	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		struct buffer out;
		struct json_writer w;

		buffer_init(&out, 0);
		json_init(&w, &out);
		json_object_begin(&w);
		for (size_t i = 0; i < N_ELEMENTS(config_keys); i++) {
			value = config_value(ctl->set, config_keys[i], buf, sizeof(buf));
			if (ctl->json)
				json_kv_string(&w, config_keys[i], value);
			else
				printf("%s = %s\n", config_keys[i], value);
		}
		json_object_end(&w);
		if (ctl->json)
			printf("%s\n", buffer_cstr(&out));
		buffer_clear(&out);
		return CTL_EXIT_OK;
	}
	if (argc != 3 || strcmp(argv[1], "get") != 0) {
		ctl_error("usage: clustermailctl config get KEY | config list");
		return CTL_EXIT_USAGE;
	}
	value = config_value(ctl->set, argv[2], buf, sizeof(buf));
	if (value == NULL) {
		ctl_error("config: unknown key '%s' (see: clustermailctl config list)",
			  argv[2]);
		return CTL_EXIT_USAGE;
	}
	printf("%s\n", value);
	return CTL_EXIT_OK;
}
