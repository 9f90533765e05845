/*
 * cmd-probe.c - `clustermailctl probe`: the deep health check of the OCF
 * agent's monitor depth 20, run by the daemon itself so that it tests the
 * daemon's own lock client and its own view of the spool: an exclusive
 * lock taken and released on a per-node probe resource, and a file
 * written, fsynced, read back and removed on the spool.
 *
 * Exit 0 when both worked, 1 (with the reason) when one failed, 69 when
 * the daemon is not running.
 */
#include "lib/lib.h"
#include "lib/json.h"
#include "ctl.h"
#include "control-client.h"

#include <stdio.h>

/* The daemon gives the lock 10 s and the file 10 s. */
#define PROBE_TIMEOUT_MSECS 30000

struct probe_print {
	bool human;
	char *error;		/* the daemon's "error" value */
};

static void probe_print_value(const char *path, enum json_type type ATTR_UNUSED,
			      const char *value, void *context)
{
	struct probe_print *print = context;

	if (strcmp(path, "error") == 0 && print->error == NULL)
		print->error = mem_strdup(value);
	else if (print->human)
		printf("%-16s %s\n", path, value);
}

int cmd_probe(struct ctl *ctl, int argc, char **argv ATTR_UNUSED)
{
	struct probe_print print = { .human = !ctl->json };
	int ret;

	if (argc != 1) {
		ctl_error("usage: clustermailctl probe [--json]");
		return CTL_EXIT_USAGE;
	}
	ret = control_client_json(ctl->set->control_socket, "probe",
				  PROBE_TIMEOUT_MSECS, probe_print_value, &print,
				  ctl->json);
	if (ret != CTL_EXIT_OK) {
		free(print.error);
		return ret;
	}
	if (print.error != NULL) {
		ctl_error("probe failed: %s", print.error);
		free(print.error);
		return CTL_EXIT_FAILURE;
	}
	return CTL_EXIT_OK;
}
