/*
 * cmd-index.c - clustermailctl index check|rebuild: compare a user's
 * mailbox metadata (clustermail.index, clustermail.log) with the Maildir
 * files, and rebuild it from them (DESIGN invariant 5: all our metadata
 * can be rebuilt from the Maildir alone).
 *
 * Without MAILBOX both work on every mailbox of the user, one after the
 * other, each under its own mailbox lock; a failure on one mailbox is
 * reported and the others are still done. "check" exits with
 * CTL_EXIT_INCONSISTENT (2) when it found any problem, so that cron jobs
 * and monitoring can tell "damaged" from "could not look" (75, ...).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "ctl.h"
#include "store-setup.h"

#include <stdio.h>

/* What check found: mailbox and problem, pairwise. */
struct cmd_index_report {
	struct str_array checked;	/* mailboxes checked (canonical) */
	struct str_array problems;	/* mailbox, problem, mailbox, ... */
};

static void cmd_index_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] index check USER [MAILBOX]\n"
	      "       clustermailctl [OPTIONS] index rebuild USER [MAILBOX]\n"
	      "\n"
	      "check compares the metadata of MAILBOX (default: every mailbox)\n"
	      "with its Maildir and prints every inconsistency; it exits with 2\n"
	      "when there is any. rebuild recreates the metadata from the\n"
	      "Maildir. See clustermailctl(8).\n", out);
}

/* cmd_index_mailboxes - the mailboxes to work on: the one named, or all
   that exist. Returns an exit code. */
static int cmd_index_mailboxes(struct store_setup *setup, char **args,
			       int count, struct str_array *names)
{
	struct store_list_entry *entries;
	size_t n;
	int ret;

	if (count == 2) {
		str_array_add_owned(names, store_setup_mailbox_name(args[1]));
		return CTL_EXIT_OK;
	}
	if ((ret = store_list(setup->user, &entries, &n)) != STORE_OK)
		return store_setup_error(setup, ret, "cannot list mailboxes");
	for (size_t i = 0; i < n; i++) {
		if ((entries[i].attrs & STORE_LIST_NONEXISTENT) == 0)
			str_array_add(names, entries[i].name);
	}
	store_list_free(entries, n);
	return CTL_EXIT_OK;
}

/* cmd_index_mailbox_error - report a failure on one mailbox */
static int cmd_index_mailbox_error(const struct store_setup *setup,
				   int result, const char *verb,
				   const char *mailbox)
{
	char *what = mem_printf("cannot %s mailbox %s", verb, mailbox);

	result = store_setup_error(setup, result, what);
	free(what);
	return result;
}

/*
 * check
 */

/* cmd_index_problem - store_report_callback_t: collect one problem */
static void cmd_index_problem(const char *mailbox, const char *problem,
			      void *context)
{
	struct cmd_index_report *report = context;

	str_array_add(&report->problems, mailbox);
	str_array_add(&report->problems, problem);
}

/* cmd_index_check_json - {"user":..., "mailboxes":[...], "problems":
   [{"mailbox":..., "problem":...}], "consistent": bool} */
static int cmd_index_check_json(const struct store_setup *setup,
				const struct cmd_index_report *report)
{
	struct json_writer w;
	struct buffer json;

	store_setup_json_list_begin(setup, &w, &json, "mailboxes");
	for (size_t i = 0; i < report->checked.count; i++)
		json_string(&w, report->checked.items[i]);
	json_array_end(&w);
	json_key(&w, "problems");
	json_array_begin(&w);
	for (size_t i = 0; i + 1 < report->problems.count; i += 2) {
		json_object_begin(&w);
		json_kv_string(&w, "mailbox", report->problems.items[i]);
		json_kv_string(&w, "problem", report->problems.items[i + 1]);
		json_object_end(&w);
	}
	json_array_end(&w);
	json_kv_bool(&w, "consistent", report->problems.count == 0);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

/* cmd_index_check_text - "MAILBOX: problem" lines and a summary line */
static int cmd_index_check_text(const struct store_setup *setup,
				const struct cmd_index_report *report)
{
	size_t problems = report->problems.count / 2;

	for (size_t i = 0; i + 1 < report->problems.count; i += 2)
		printf("%s: %s\n", report->problems.items[i],
		       report->problems.items[i + 1]);
	printf("%s: %zu mailbox%s checked, ", setup->address,
	       report->checked.count, report->checked.count == 1 ? "" : "es");
	if (problems == 0)
		printf("no problems\n");
	else
		printf("%zu problem%s\n", problems, problems == 1 ? "" : "s");
	return store_setup_flush();
}

static int cmd_index_check(struct store_setup *setup, char **args, int count,
			   void *context)
{
	struct cmd_index_report report;
	struct str_array names;
	unsigned int problems;
	int ret, result, code, failed = CTL_EXIT_OK;

	str_array_init(&names);
	str_array_init(&report.checked);
	str_array_init(&report.problems);
	ret = cmd_index_mailboxes(setup, args, count, &names);
	for (size_t i = 0; i < names.count && ret == CTL_EXIT_OK; i++) {
		result = store_index_check(setup->user, names.items[i],
					   cmd_index_problem, &report, &problems);
		if (result == STORE_OK || result == STORE_ERR_CORRUPT) {
			str_array_add(&report.checked, names.items[i]);
			continue;
		}
		code = cmd_index_mailbox_error(setup, result, "check",
					       names.items[i]);
		if (failed == CTL_EXIT_OK)
			failed = code;
	}
	if (ret == CTL_EXIT_OK) {
		ret = setup->ctl->json ? cmd_index_check_json(setup, &report) :
			cmd_index_check_text(setup, &report);
	}
	/* Could not look everywhere: that says more than what was seen. */
	if (ret == CTL_EXIT_OK && failed != CTL_EXIT_OK)
		ret = failed;
	if (ret == CTL_EXIT_OK && report.problems.count > 0)
		ret = CTL_EXIT_INCONSISTENT;
	str_array_clear(&names);
	str_array_clear(&report.checked);
	str_array_clear(&report.problems);
	return ret;
}

/*
 * rebuild
 */

/* cmd_index_rebuild_report - "MAILBOX: rebuilt" lines, or {"user":...,
   "rebuilt":[...]} */
static int cmd_index_rebuild_report(const struct store_setup *setup,
				    const struct str_array *rebuilt)
{
	struct json_writer w;
	struct buffer json;

	if (!setup->ctl->json) {
		for (size_t i = 0; i < rebuilt->count; i++)
			printf("mailbox %s of %s rebuilt\n", rebuilt->items[i],
			       setup->address);
		return store_setup_flush();
	}
	store_setup_json_list_begin(setup, &w, &json, "rebuilt");
	for (size_t i = 0; i < rebuilt->count; i++)
		json_string(&w, rebuilt->items[i]);
	json_array_end(&w);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

static int cmd_index_rebuild(struct store_setup *setup, char **args,
			     int count, void *context)
{
	struct str_array names, rebuilt;
	int ret, result, code, failed = CTL_EXIT_OK;

	str_array_init(&names);
	str_array_init(&rebuilt);
	ret = cmd_index_mailboxes(setup, args, count, &names);
	for (size_t i = 0; i < names.count && ret == CTL_EXIT_OK; i++) {
		result = store_index_rebuild(setup->user, names.items[i]);
		if (result == STORE_OK) {
			str_array_add(&rebuilt, names.items[i]);
			continue;
		}
		code = cmd_index_mailbox_error(setup, result, "rebuild",
					       names.items[i]);
		if (failed == CTL_EXIT_OK)
			failed = code;
	}
	if (ret == CTL_EXIT_OK)
		ret = cmd_index_rebuild_report(setup, &rebuilt);
	if (ret == CTL_EXIT_OK)
		ret = failed;
	str_array_clear(&names);
	str_array_clear(&rebuilt);
	return ret;
}

/*
 * Command line
 */

static const struct store_setup_subcommand cmd_index_subcommands[] = {
	{ "check", 1, 2, 0, NULL, cmd_index_check },
	{ "rebuild", 1, 2, 0, NULL, cmd_index_rebuild },
};

static const struct store_setup_family cmd_index_family = {
	.name = "index",
	.usage = cmd_index_usage,
	.subcommands = cmd_index_subcommands,
	.subcommand_count = N_ELEMENTS(cmd_index_subcommands),
};

int cmd_index(struct ctl *ctl, int argc, char **argv)
{
	return store_setup_run_family(ctl, &cmd_index_family, argc, argv, NULL);
}
