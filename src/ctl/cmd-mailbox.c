/*
 * cmd-mailbox.c - clustermailctl mailbox list|create|delete|rename|status:
 * a user's mailboxes on the spool, as mail_user (store-setup.h).
 *
 * Everything goes through the store API and so takes the same cluster
 * locks as the daemon: these commands are safe while clustermaild runs on
 * this or any other node (with lock_backend fcntl or dlm).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "ctl.h"
#include "store-setup.h"

#include <getopt.h>
#include <stdio.h>
#include <strings.h>

struct cmd_mailbox_options {
	unsigned int special_use;	/* --special-use: STORE_SPECIAL_* */
	bool subscribe;			/* --subscribe */
	bool unsubscribe;		/* --unsubscribe */
};

/* RFC 6154 special-use attributes. */
static const struct {
	const char *name;
	unsigned int flag;
} cmd_mailbox_special_uses[] = {
	{ "\\Drafts", STORE_SPECIAL_DRAFTS },
	{ "\\Sent", STORE_SPECIAL_SENT },
	{ "\\Trash", STORE_SPECIAL_TRASH },
	{ "\\Junk", STORE_SPECIAL_JUNK },
	{ "\\Archive", STORE_SPECIAL_ARCHIVE },
};

static void cmd_mailbox_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] mailbox list USER\n"
	      "       clustermailctl [OPTIONS] mailbox status USER [NAME]\n"
	      "       clustermailctl [OPTIONS] mailbox create USER NAME\n"
	      "                        [--special-use USE] [--subscribe]\n"
	      "       clustermailctl [OPTIONS] mailbox delete USER NAME\n"
	      "                        [--unsubscribe]\n"
	      "       clustermailctl [OPTIONS] mailbox rename USER OLD NEW\n"
	      "\n"
	      "NAME is UTF-8 with '/' between levels (\"Archive/2024\"); INBOX is\n"
	      "the user's inbox. USE is one of \\Drafts, \\Sent, \\Trash, \\Junk,\n"
	      "\\Archive. See clustermailctl(8).\n", out);
}

/* cmd_mailbox_special_use_name - "\Sent" for a STORE_SPECIAL_* bit set
   (the first one), or NULL */
static const char *cmd_mailbox_special_use_name(unsigned int attrs)
{
	for (size_t i = 0; i < N_ELEMENTS(cmd_mailbox_special_uses); i++) {
		if ((attrs & cmd_mailbox_special_uses[i].flag) != 0)
			return cmd_mailbox_special_uses[i].name;
	}
	return NULL;
}

/* cmd_mailbox_parse_special_use - "\Sent" or "sent", any case */
static int cmd_mailbox_parse_special_use(const char *value,
					 unsigned int *flag_r)
{
	const char *name;

	for (size_t i = 0; i < N_ELEMENTS(cmd_mailbox_special_uses); i++) {
		name = cmd_mailbox_special_uses[i].name;
		if (strcasecmp(value, name) == 0 ||
		    strcasecmp(value, name + 1) == 0) {
			*flag_r = cmd_mailbox_special_uses[i].flag;
			return CTL_EXIT_OK;
		}
	}
	ctl_error("mailbox create: unknown special use '%s' (use \\Drafts, "
		  "\\Sent, \\Trash, \\Junk or \\Archive)", value);
	return CTL_EXIT_USAGE;
}

/* cmd_mailbox_fail - report a failed operation on a mailbox */
static int cmd_mailbox_fail(const struct store_setup *setup, int result,
			    const char *verb, const char *name)
{
	char *what = mem_printf("cannot %s mailbox %s", verb, name);

	result = store_setup_error(setup, result, what);
	free(what);
	return result;
}

/*
 * list
 */

/* The words for listing attributes, in output order. */
static const struct {
	const char *word;
	unsigned int flag;
} cmd_mailbox_attr_words[] = {
	{ "nonexistent", STORE_LIST_NONEXISTENT },
	{ "children", STORE_LIST_HAS_CHILDREN },
	{ "subscribed", STORE_LIST_SUBSCRIBED },
};

/* cmd_mailbox_list_json - {"user":..., "mailboxes":[{"name":...,
   "attributes":[...], "special_use":...}]} */
static int cmd_mailbox_list_json(const struct store_setup *setup,
				 const struct store_list_entry *entries,
				 size_t count)
{
	struct json_writer w;
	struct buffer json;

	store_setup_json_list_begin(setup, &w, &json, "mailboxes");
	for (size_t i = 0; i < count; i++) {
		json_object_begin(&w);
		json_kv_string(&w, "name", entries[i].name);
		json_key(&w, "attributes");
		json_array_begin(&w);
		for (size_t j = 0; j < N_ELEMENTS(cmd_mailbox_attr_words); j++) {
			if ((entries[i].attrs & cmd_mailbox_attr_words[j].flag) != 0)
				json_string(&w, cmd_mailbox_attr_words[j].word);
		}
		json_array_end(&w);
		json_kv_string(&w, "special_use",
			       cmd_mailbox_special_use_name(entries[i].attrs));
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

/* cmd_mailbox_attr_text - the attribute words and special use of a
   listing entry, separated by blanks, into out */
static void cmd_mailbox_attr_text(unsigned int attrs, struct buffer *out)
{
	const char *special = cmd_mailbox_special_use_name(attrs);

	buffer_reset(out);
	for (size_t i = 0; i < N_ELEMENTS(cmd_mailbox_attr_words); i++) {
		if ((attrs & cmd_mailbox_attr_words[i].flag) == 0)
			continue;
		if (out->used > 0)
			buffer_append_byte(out, ' ');
		buffer_append_str(out, cmd_mailbox_attr_words[i].word);
	}
	if (special != NULL) {
		if (out->used > 0)
			buffer_append_byte(out, ' ');
		buffer_append_str(out, special);
	}
}

/* cmd_mailbox_list_text - one mailbox per line: name, attribute words,
   special use */
static int cmd_mailbox_list_text(const struct store_list_entry *entries,
				 size_t count)
{
	struct store_setup_table table;
	struct buffer attrs;

	store_setup_table_init(&table, "ll");
	buffer_init(&attrs, 0);
	for (size_t i = 0; i < count; i++) {
		cmd_mailbox_attr_text(entries[i].attrs, &attrs);
		store_setup_table_add(&table, entries[i].name);
		store_setup_table_add(&table, buffer_cstr(&attrs));
	}
	buffer_clear(&attrs);
	return store_setup_table_print(&table);
}

static int cmd_mailbox_list(struct store_setup *setup, char **args, int count,
			    void *context)
{
	struct store_list_entry *entries;
	size_t n;
	int ret;

	if ((ret = store_list(setup->user, &entries, &n)) != STORE_OK)
		return store_setup_error(setup, ret, "cannot list mailboxes");
	ret = setup->ctl->json ? cmd_mailbox_list_json(setup, entries, n) :
		cmd_mailbox_list_text(entries, n);
	store_list_free(entries, n);
	return ret;
}

/*
 * status
 */

struct cmd_mailbox_status {
	char *name;			/* owned; canonical */
	struct store_status status;
};

/* cmd_mailbox_status_json - {"user":..., "mailboxes":[{...}]} */
static int cmd_mailbox_status_json(const struct store_setup *setup,
				   const struct cmd_mailbox_status *rows,
				   size_t count)
{
	struct json_writer w;
	struct buffer json;

	store_setup_json_list_begin(setup, &w, &json, "mailboxes");
	for (size_t i = 0; i < count; i++) {
		const struct store_status *st = &rows[i].status;

		json_object_begin(&w);
		json_kv_string(&w, "name", rows[i].name);
		json_kv_uint(&w, "messages", st->messages);
		json_kv_uint(&w, "unseen", st->unseen);
		json_kv_uint(&w, "deleted", st->deleted);
		json_kv_uint(&w, "uidvalidity", st->uidvalidity);
		json_kv_uint(&w, "uidnext", st->uidnext);
		json_kv_uint(&w, "highestmodseq", st->highestmodseq);
		json_kv_uint(&w, "size", st->size);
		json_kv_string(&w, "special_use",
			       cmd_mailbox_special_use_name(st->special_use));
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

/* cmd_mailbox_status_text - a table with a header line */
static int cmd_mailbox_status_text(const struct cmd_mailbox_status *rows,
				   size_t count)
{
	static const char *const header[] = {
		"MAILBOX", "MESSAGES", "UNSEEN", "DELETED", "UIDVALIDITY",
		"UIDNEXT", "HIGHESTMODSEQ", "SIZE",
	};
	struct store_setup_table table;

	store_setup_table_init(&table, "lrrrrrrr");
	for (size_t i = 0; i < N_ELEMENTS(header); i++)
		store_setup_table_add(&table, header[i]);
	for (size_t i = 0; i < count; i++) {
		const struct store_status *st = &rows[i].status;

		store_setup_table_add(&table, rows[i].name);
		store_setup_table_add_uint(&table, st->messages);
		store_setup_table_add_uint(&table, st->unseen);
		store_setup_table_add_uint(&table, st->deleted);
		store_setup_table_add_uint(&table, st->uidvalidity);
		store_setup_table_add_uint(&table, st->uidnext);
		store_setup_table_add_uint(&table, st->highestmodseq);
		store_setup_table_add_uint(&table, st->size);
	}
	return store_setup_table_print(&table);
}

/* cmd_mailbox_status_all - the status of every existing mailbox; one
   deleted meanwhile is left out */
static int cmd_mailbox_status_all(struct store_setup *setup,
				  struct cmd_mailbox_status **rows_r,
				  size_t *count_r)
{
	struct store_list_entry *entries;
	struct cmd_mailbox_status *rows;
	size_t n, count = 0;
	int result, ret = CTL_EXIT_OK;

	*rows_r = NULL;
	*count_r = 0;
	if ((result = store_list(setup->user, &entries, &n)) != STORE_OK)
		return store_setup_error(setup, result, "cannot list mailboxes");
	rows = mem_calloc(n + 1, sizeof(*rows));
	for (size_t i = 0; i < n && ret == CTL_EXIT_OK; i++) {
		if ((entries[i].attrs & STORE_LIST_NONEXISTENT) != 0)
			continue;
		result = store_mailbox_status(setup->user, entries[i].name,
					      &rows[count].status);
		if (result == STORE_OK)
			rows[count++].name = mem_strdup(entries[i].name);
		else if (result != STORE_ERR_NOTFOUND)
			ret = cmd_mailbox_fail(setup, result, "get the status of",
					       entries[i].name);
	}
	store_list_free(entries, n);
	*rows_r = rows;
	*count_r = count;
	return ret;
}

static int cmd_mailbox_status(struct store_setup *setup, char **args,
			      int count, void *context)
{
	struct cmd_mailbox_status *rows = NULL;
	size_t n = 0;
	int ret;

	if (count == 2) {
		rows = mem_zalloc(sizeof(*rows));
		ret = store_mailbox_status(setup->user, args[1], &rows[0].status);
		if (ret == STORE_OK) {
			rows[0].name = store_setup_mailbox_name(args[1]);
			n = 1;
		} else {
			ret = cmd_mailbox_fail(setup, ret, "get the status of",
					       args[1]);
		}
	} else {
		ret = cmd_mailbox_status_all(setup, &rows, &n);
	}
	if (ret == CTL_EXIT_OK) {
		ret = setup->ctl->json ? cmd_mailbox_status_json(setup, rows, n) :
			cmd_mailbox_status_text(rows, n);
	}
	for (size_t i = 0; i < n; i++)
		free(rows[i].name);
	free(rows);
	return ret;
}

/*
 * create, delete, rename
 */

/* cmd_mailbox_done - report a change of mailbox name */
static int cmd_mailbox_done(const struct store_setup *setup, const char *name,
			    const char *result)
{
	char *canonical = store_setup_mailbox_name(name);
	char *text = mem_printf("mailbox %s of %s %s", canonical,
				setup->address, result);
	const char *fields[] = { "mailbox", canonical, NULL };
	int ret = store_setup_report(setup, result, text, fields);

	free(text);
	free(canonical);
	return ret;
}

static int cmd_mailbox_create(struct store_setup *setup, char **args,
			      int count, void *context)
{
	const struct cmd_mailbox_options *opts = context;
	int ret;

	ret = store_mailbox_create(setup->user, args[1], opts->special_use);
	if (ret != STORE_OK)
		return cmd_mailbox_fail(setup, ret, "create", args[1]);
	if (opts->subscribe &&
	    (ret = store_subscribe(setup->user, args[1], true)) != STORE_OK)
		return cmd_mailbox_fail(setup, ret, "subscribe", args[1]);
	return cmd_mailbox_done(setup, args[1], "created");
}

static int cmd_mailbox_delete(struct store_setup *setup, char **args,
			      int count, void *context)
{
	const struct cmd_mailbox_options *opts = context;
	int ret;

	ret = store_mailbox_delete(setup->user, args[1]);
	if (ret != STORE_OK)
		return cmd_mailbox_fail(setup, ret, "delete", args[1]);
	if (opts->unsubscribe &&
	    (ret = store_subscribe(setup->user, args[1], false)) != STORE_OK)
		return cmd_mailbox_fail(setup, ret, "unsubscribe", args[1]);
	return cmd_mailbox_done(setup, args[1], "deleted");
}

static int cmd_mailbox_rename(struct store_setup *setup, char **args,
			      int count, void *context)
{
	char *old_name, *new_name, *text, *what;
	const char *fields[5];
	int ret;

	ret = store_mailbox_rename(setup->user, args[1], args[2]);
	if (ret != STORE_OK) {
		what = mem_printf("cannot rename mailbox %s to %s", args[1],
				  args[2]);
		ret = store_setup_error(setup, ret, what);
		free(what);
		return ret;
	}
	old_name = store_setup_mailbox_name(args[1]);
	new_name = store_setup_mailbox_name(args[2]);
	text = mem_printf("mailbox %s of %s renamed to %s", old_name,
			  setup->address, new_name);
	fields[0] = "mailbox";
	fields[1] = new_name;
	fields[2] = "old_mailbox";
	fields[3] = old_name;
	fields[4] = NULL;
	ret = store_setup_report(setup, "renamed", text, fields);
	free(text);
	free(old_name);
	free(new_name);
	return ret;
}

/*
 * Command line
 */

static const struct option cmd_mailbox_long_options[] = {
	{ "special-use", required_argument, NULL, 'u' },
	{ "subscribe", no_argument, NULL, 's' },
	{ "unsubscribe", no_argument, NULL, 'S' },
	{ NULL, 0, NULL, 0 },
};

static int cmd_mailbox_set_option(int opt, const char *value, void *context)
{
	struct cmd_mailbox_options *opts = context;

	switch (opt) {
	case 'u':
		return cmd_mailbox_parse_special_use(value, &opts->special_use);
	case 's':
		opts->subscribe = true;
		break;
	case 'S':
		opts->unsubscribe = true;
		break;
	}
	return CTL_EXIT_OK;
}

static const struct store_setup_subcommand cmd_mailbox_subcommands[] = {
	{ "list", 1, 1, 0, NULL, cmd_mailbox_list },
	{ "status", 1, 2, 0, NULL, cmd_mailbox_status },
	{ "create", 2, 2, STORE_SETUP_FLAG_CREATE, "us", cmd_mailbox_create },
	{ "delete", 2, 2, 0, "S", cmd_mailbox_delete },
	{ "rename", 3, 3, 0, NULL, cmd_mailbox_rename },
};

static const struct store_setup_family cmd_mailbox_family = {
	.name = "mailbox",
	.usage = cmd_mailbox_usage,
	.long_options = cmd_mailbox_long_options,
	.set_option = cmd_mailbox_set_option,
	.subcommands = cmd_mailbox_subcommands,
	.subcommand_count = N_ELEMENTS(cmd_mailbox_subcommands),
};

int cmd_mailbox(struct ctl *ctl, int argc, char **argv)
{
	struct cmd_mailbox_options opts;

	memset(&opts, 0, sizeof(opts));
	return store_setup_run_family(ctl, &cmd_mailbox_family, argc, argv,
				      &opts);
}
