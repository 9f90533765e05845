/*
 * cmd-status.c - `clustermailctl status`: ask the running daemon of this
 * node how it is; and `clustermailctl reload`: make it re-read its
 * configuration (as SIGHUP does), reporting why when it refuses.
 *
 * The daemon answers in JSON; --json prints that document unchanged, and
 * the human form prints each value on its own "name: value" line.
 */
#include "lib/lib.h"
#include "lib/json.h"
#include "ctl.h"
#include "control-client.h"

#include <stdio.h>

#define STATUS_TIMEOUT_MSECS 10000

struct status_print {
	bool human;		/* print the name: value lines */
	bool error_seen;	/* the daemon answered {"error": ...} */
};

/* status_print_value - one "name: value" line of the human form */
static void status_print_value(const char *path, enum json_type type,
			       const char *value, void *context)
{
	struct status_print *print = context;
	char label[128];

	if (strcmp(path, "error") == 0)
		print->error_seen = true;
	if (!print->human)
		return;
	if (type == JSON_TYPE_BOOL)
		value = strcmp(value, "true") == 0 ? "yes" : "no";
	snprintf(label, sizeof(label), "%s:", path);
	printf("%-24s %s\n", label, value);
}

int cmd_status(struct ctl *ctl, int argc, char **argv)
{
	struct status_print print = { .human = !ctl->json };
	int ret;

	if (argc != 1) {
		ctl_error("usage: clustermailctl status [--json]");
		return CTL_EXIT_USAGE;
	}
	ret = control_client_json(ctl->set->control_socket, "status",
				  STATUS_TIMEOUT_MSECS, status_print_value, &print,
				  ctl->json);
	if (ret != CTL_EXIT_OK)
		return ret;
	return print.error_seen ? CTL_EXIT_FAILURE : CTL_EXIT_OK;
}

/* reload_print_value - "reloaded" / the new generation, or the error */
static void reload_print_value(const char *path, enum json_type type ATTR_UNUSED,
			       const char *value, void *context)
{
	struct status_print *print = context;

	if (strcmp(path, "error") == 0) {
		print->error_seen = true;
		ctl_error("reload refused: %s", value);
	} else if (print->human && strcmp(path, "config_generation") == 0) {
		printf("configuration reloaded (generation %s)\n", value);
	}
}

int cmd_reload(struct ctl *ctl, int argc, char **argv ATTR_UNUSED)
{
	struct status_print print = { .human = !ctl->json };
	int ret;

	if (argc != 1) {
		ctl_error("usage: clustermailctl reload [--json]");
		return CTL_EXIT_USAGE;
	}
	ret = control_client_json(ctl->set->control_socket, "reload",
				  STATUS_TIMEOUT_MSECS, reload_print_value, &print,
				  ctl->json);
	if (ret != CTL_EXIT_OK)
		return ret;
	return print.error_seen ? CTL_EXIT_CONFIG : CTL_EXIT_OK;
}
