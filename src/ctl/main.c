/*
 * main.c - clustermailctl: the admin command line.
 *
 *   clustermailctl [-c FILE] [--node NAME] [--json] COMMAND [ARGS...]
 *
 * Loads the same configuration file as the daemon (so that it finds the
 * users file, spool and control socket of the chosen node) and dispatches
 * to a command family in cmd-*.c.
 */
#include "lib/lib.h"
#include "lib/settings.h"
#include "ctl.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

struct ctl_command {
	const char *name;
	int (*run)(struct ctl *ctl, int argc, char **argv);
	bool needs_settings;
	const char *summary;
	/* Exit code when the configuration does not load; 0 = CTL_EXIT_CONFIG.
	   An LDA must not bounce mail over a broken config: TEMPFAIL. */
	int config_error_exit;
};

static const struct ctl_command ctl_commands[] = {
	{ "status", cmd_status, true, "show the running daemon's status" },
	{ "reload", cmd_reload, true, "make the daemon re-read its configuration" },
	{ "user", cmd_user, true, "add, delete, list users; set passwords" },
	{ "deliver", cmd_deliver, true, "deliver a message from stdin (LDA)",
	  CTL_EXIT_TEMPFAIL },
	{ "mailbox", cmd_mailbox, true,
	  "list, create, delete, rename mailboxes; status" },
	{ "index", cmd_index, true, "check or rebuild mailbox metadata" },
	{ "quota", cmd_quota, true, "show or set a user's quota" },
	{ "acl", cmd_acl, true, "show, set, delete mailbox ACL entries" },
	{ "queue", cmd_queue, true,
	  "list, show, flush, delete, hold, release, inject queued mail" },
	{ "cluster", cmd_cluster, true,
	  "cluster status: members, pacemaker state, VIPs, load" },
	{ "config", cmd_config, true, "print the effective value of a setting" },
	{ "probe", cmd_probe, true,
	  "deep health check: a lock round trip and a spool write/read" },
};

void ctl_error(const char *fmt, ...)
{
	va_list args;

	fputs("clustermailctl: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
}

/* ctl_usage - print the global usage to out */
static void ctl_usage(FILE *out)
{
	fprintf(out,
		"usage: clustermailctl [-c FILE] [--node NAME] [--json] COMMAND [ARGS]\n"
		"\n"
		"options:\n"
		"  -c, --config FILE  configuration file (default %s)\n"
		"  -n, --node NAME    act as this node (default: the host's short name)\n"
		"  -j, --json         machine-readable output\n"
		"  -h, --help         this text\n"
		"  -V, --version      print the version\n"
		"\ncommands:\n", SETTINGS_DEFAULT_PATH);
	for (size_t i = 0; i < N_ELEMENTS(ctl_commands); i++)
		fprintf(out, "  %-8s %s\n", ctl_commands[i].name,
			ctl_commands[i].summary);
	fprintf(out, "\nSee clustermailctl(8).\n");
}

/* ctl_find_command - look a command up by name */
static const struct ctl_command *ctl_find_command(const char *name)
{
	for (size_t i = 0; i < N_ELEMENTS(ctl_commands); i++) {
		if (strcmp(ctl_commands[i].name, name) == 0)
			return &ctl_commands[i];
	}
	return NULL;
}

/* ctl_parse_options - global options; returns index of the command or -1 */
static int ctl_parse_options(struct ctl *ctl, int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "node", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	/* "+": stop at the command name; its options are its own. */
	while ((opt = getopt_long(argc, argv, "+c:n:jhV", options, NULL)) != -1) {
		switch (opt) {
		case 'c': ctl->config_path = optarg; break;
		case 'n': ctl->node = optarg; break;
		case 'j': ctl->json = true; break;
		case 'h': ctl_usage(stdout); exit(CTL_EXIT_OK);
		case 'V': printf("clustermailctl %s\n", PACKAGE_VERSION); exit(CTL_EXIT_OK);
		default: ctl_usage(stderr); return -1;
		}
	}
	if (optind >= argc) {
		ctl_usage(stderr);
		return -1;
	}
	return optind;
}

/* ctl_strip_json_flag - accept --json after the command too */
static int ctl_strip_json_flag(struct ctl *ctl, int argc, char **argv)
{
	int out = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0)
			ctl->json = true;
		else
			argv[out++] = argv[i];
	}
	argv[out] = NULL;
	return out;
}

int main(int argc, char **argv)
{
	struct ctl ctl = { .config_path = SETTINGS_DEFAULT_PATH };
	const struct ctl_command *command;
	char *error;
	int first, ret;

	log_open("clustermailctl", LOG_TARGET_STDERR);
	log_set_level(LOG_LEVEL_WARNING);
	if ((first = ctl_parse_options(&ctl, argc, argv)) < 0)
		return CTL_EXIT_USAGE;
	command = ctl_find_command(argv[first]);
	if (command == NULL) {
		ctl_error("unknown command '%s' (try --help)", argv[first]);
		return CTL_EXIT_USAGE;
	}
	argc = ctl_strip_json_flag(&ctl, argc - first, argv + first);
	argv += first;
	if (command->needs_settings &&
	    settings_load(ctl.config_path, ctl.node, &ctl.set, &error) < 0) {
		ctl_error("%s", error);
		free(error);
		return command->config_error_exit != 0 ?
			command->config_error_exit : CTL_EXIT_CONFIG;
	}
	ret = command->run(&ctl, argc, argv);
	settings_free(&ctl.set);
	return ret;
}
