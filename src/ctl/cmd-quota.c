/*
 * cmd-quota.c - clustermailctl quota get|set: a user's RFC 9208 limits
 * (STORAGE in bytes, MESSAGE in messages) and usage.
 *
 * "set" changes only the limits it is given: it reads the current ones
 * first and writes both back. The store keeps them in one small file that
 * is replaced atomically under the user lock; two admins setting
 * different limits of one user at the same moment may still undo each
 * other's change (last writer wins), which is acceptable for an admin
 * command.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/str.h"
#include "ctl.h"
#include "store-setup.h"

#include <getopt.h>
#include <stdio.h>
#include <strings.h>

struct cmd_quota_options {
	bool storage_set, messages_set;
	uint64_t storage;		/* bytes; 0 = no limit */
	uint64_t messages;		/* 0 = no limit */
};

static void cmd_quota_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] quota get USER\n"
	      "       clustermailctl [OPTIONS] quota set USER [--storage SIZE]\n"
	      "                        [--messages COUNT]\n"
	      "\n"
	      "SIZE is bytes with an optional suffix k, M, G or T (1024-based).\n"
	      "0, \"none\" or \"unlimited\" removes a limit; a limit not given\n"
	      "stays as it is. See clustermailctl(8).\n", out);
}

/* cmd_quota_is_unlimited - "none", "unlimited" (0 is parsed as usual) */
static bool cmd_quota_is_unlimited(const char *value)
{
	return strcasecmp(value, "none") == 0 ||
		strcasecmp(value, "unlimited") == 0;
}

static int cmd_quota_set_option(int opt, const char *value, void *context)
{
	struct cmd_quota_options *opts = context;

	if (opt == 's') {
		opts->storage_set = true;
		if (cmd_quota_is_unlimited(value))
			opts->storage = 0;
		else if (str_parse_size(value, &opts->storage) < 0) {
			ctl_error("quota set: invalid --storage '%s' (a size "
				  "such as 500M or 2G, or none)", value);
			return CTL_EXIT_USAGE;
		}
	} else if (opt == 'm') {
		opts->messages_set = true;
		if (cmd_quota_is_unlimited(value))
			opts->messages = 0;
		else if (str_to_uint64(value, &opts->messages) < 0) {
			ctl_error("quota set: invalid --messages '%s' (a number, "
				  "or none)", value);
			return CTL_EXIT_USAGE;
		}
	}
	return CTL_EXIT_OK;
}

/* cmd_quota_json_resource - "name": {"used": N, "limit": N or null} */
static void cmd_quota_json_resource(struct json_writer *w, const char *name,
				    uint64_t used, uint64_t limit)
{
	json_key(w, name);
	json_object_begin(w);
	json_kv_uint(w, "used", used);
	json_key(w, "limit");
	if (limit == 0)
		json_null(w);
	else
		json_uint(w, limit);
	json_object_end(w);
}

/* cmd_quota_print - the quota as a table or JSON */
static int cmd_quota_print(const struct store_setup *setup,
			   const struct store_quota *quota)
{
	struct store_setup_table table;
	struct json_writer w;
	struct buffer json;

	if (setup->ctl->json) {
		buffer_init(&json, 0);
		json_init(&w, &json);
		json_object_begin(&w);
		json_kv_string(&w, "user", setup->address);
		cmd_quota_json_resource(&w, "storage", quota->storage_used,
					quota->storage_limit);
		cmd_quota_json_resource(&w, "messages", quota->messages_used,
					quota->messages_limit);
		json_object_end(&w);
		return store_setup_print_json(&json);
	}
	store_setup_table_init(&table, "lrr");
	store_setup_table_add(&table, "RESOURCE");
	store_setup_table_add(&table, "USED");
	store_setup_table_add(&table, "LIMIT");
	store_setup_table_add(&table, "storage");
	store_setup_table_add_uint(&table, quota->storage_used);
	if (quota->storage_limit == 0)
		store_setup_table_add(&table, "none");
	else
		store_setup_table_add_uint(&table, quota->storage_limit);
	store_setup_table_add(&table, "messages");
	store_setup_table_add_uint(&table, quota->messages_used);
	if (quota->messages_limit == 0)
		store_setup_table_add(&table, "none");
	else
		store_setup_table_add_uint(&table, quota->messages_limit);
	return store_setup_table_print(&table);
}

static int cmd_quota_get(struct store_setup *setup, char **args, int count,
			 void *context)
{
	struct store_quota quota;
	int ret;

	if ((ret = store_quota_get(setup->user, &quota)) != STORE_OK)
		return store_setup_error(setup, ret, "cannot read the quota");
	return cmd_quota_print(setup, &quota);
}

static int cmd_quota_set(struct store_setup *setup, char **args, int count,
			 void *context)
{
	const struct cmd_quota_options *opts = context;
	struct store_quota quota;
	int ret;

	if (!opts->storage_set && !opts->messages_set) {
		ctl_error("quota set: give --storage, --messages or both");
		cmd_quota_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if ((ret = store_quota_get(setup->user, &quota)) != STORE_OK)
		return store_setup_error(setup, ret, "cannot read the quota");
	if (opts->storage_set)
		quota.storage_limit = opts->storage;
	if (opts->messages_set)
		quota.messages_limit = opts->messages;
	ret = store_quota_set(setup->user, quota.storage_limit,
			      quota.messages_limit);
	if (ret != STORE_OK)
		return store_setup_error(setup, ret, "cannot set the quota");
	/* Show what is in force now, usage included. */
	return cmd_quota_get(setup, args, count, context);
}

static const struct option cmd_quota_long_options[] = {
	{ "storage", required_argument, NULL, 's' },
	{ "messages", required_argument, NULL, 'm' },
	{ NULL, 0, NULL, 0 },
};

static const struct store_setup_subcommand cmd_quota_subcommands[] = {
	{ "get", 1, 1, 0, NULL, cmd_quota_get },
	{ "set", 1, 1, STORE_SETUP_FLAG_CREATE, "sm", cmd_quota_set },
};

static const struct store_setup_family cmd_quota_family = {
	.name = "quota",
	.usage = cmd_quota_usage,
	.long_options = cmd_quota_long_options,
	.set_option = cmd_quota_set_option,
	.subcommands = cmd_quota_subcommands,
	.subcommand_count = N_ELEMENTS(cmd_quota_subcommands),
};

int cmd_quota(struct ctl *ctl, int argc, char **argv)
{
	struct cmd_quota_options opts;

	memset(&opts, 0, sizeof(opts));
	return store_setup_run_family(ctl, &cmd_quota_family, argc, argv,
				      &opts);
}
