/*
 * cmd-acl.c - clustermailctl acl get|set|delete: the RFC 4314 access
 * control list of one mailbox.
 *
 * RIGHTS are RFC 4314 letters ("lrswipkxtea"), optionally starting with
 * '+' or '-' to add or remove letters (SETACL semantics). Because "-w" or
 * a negative identifier "-bob@example.com" look like options, option
 * parsing stops at the first argument (store_setup_family.options_first).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "ctl.h"
#include "store-setup.h"

#include <stdio.h>

static void cmd_acl_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] acl get USER MAILBOX\n"
	      "       clustermailctl [OPTIONS] acl set USER MAILBOX IDENTIFIER\n"
	      "                        RIGHTS\n"
	      "       clustermailctl [OPTIONS] acl delete USER MAILBOX IDENTIFIER\n"
	      "\n"
	      "IDENTIFIER is anyone, authenticated, an address, or -ADDRESS for\n"
	      "negative rights. RIGHTS are RFC 4314 letters (lrswipkxtea); a\n"
	      "leading + or - adds or removes letters. See clustermailctl(8).\n",
	      out);
}

/* cmd_acl_read - the mailbox's ACL, or an exit code (printed) */
static int cmd_acl_read(const struct store_setup *setup, const char *mailbox,
			struct store_acl_entry **entries_r, size_t *count_r)
{
	char *what;
	int ret;

	ret = store_acl_get(setup->user, mailbox, entries_r, count_r);
	if (ret == STORE_OK)
		return CTL_EXIT_OK;
	what = mem_printf("cannot read the ACL of mailbox %s", mailbox);
	ret = store_setup_error(setup, ret, what);
	free(what);
	return ret;
}

/* cmd_acl_get_json - {"user":..., "mailbox":..., "acl":[{"identifier":
   ..., "rights":...}]} */
static int cmd_acl_get_json(const struct store_setup *setup,
			    const char *mailbox,
			    const struct store_acl_entry *entries, size_t count)
{
	struct json_writer w;
	struct buffer json;

	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_kv_string(&w, "user", setup->address);
	json_kv_string(&w, "mailbox", mailbox);
	json_key(&w, "acl");
	json_array_begin(&w);
	for (size_t i = 0; i < count; i++) {
		json_object_begin(&w);
		json_kv_string(&w, "identifier", entries[i].identifier);
		json_kv_string(&w, "rights", entries[i].rights);
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

static int cmd_acl_get(struct store_setup *setup, char **args, int count,
		       void *context)
{
	struct store_setup_table table;
	struct store_acl_entry *entries;
	char *mailbox;
	size_t n;
	int ret;

	if ((ret = cmd_acl_read(setup, args[1], &entries, &n)) != CTL_EXIT_OK)
		return ret;
	mailbox = store_setup_mailbox_name(args[1]);
	if (setup->ctl->json) {
		ret = cmd_acl_get_json(setup, mailbox, entries, n);
	} else {
		store_setup_table_init(&table, "ll");
		for (size_t i = 0; i < n; i++) {
			store_setup_table_add(&table, entries[i].identifier);
			store_setup_table_add(&table, entries[i].rights);
		}
		ret = store_setup_table_print(&table);
	}
	free(mailbox);
	store_acl_free(entries, n);
	return ret;
}

/* cmd_acl_rights_of - identifier's rights in the ACL as it is now
   (caller frees; "" when it has no entry) */
static int cmd_acl_rights_of(const struct store_setup *setup,
			     const char *mailbox, const char *identifier,
			     char **rights_r)
{
	struct store_acl_entry *entries;
	size_t n;
	int ret;

	if ((ret = cmd_acl_read(setup, mailbox, &entries, &n)) != CTL_EXIT_OK)
		return ret;
	*rights_r = NULL;
	for (size_t i = 0; i < n && *rights_r == NULL; i++) {
		if (strcmp(entries[i].identifier, identifier) == 0)
			*rights_r = mem_strdup(entries[i].rights);
	}
	if (*rights_r == NULL)
		*rights_r = mem_strdup("");
	store_acl_free(entries, n);
	return CTL_EXIT_OK;
}

/* cmd_acl_change - set (rights != NULL) or delete an entry and report */
static int cmd_acl_change(struct store_setup *setup, const char *mailbox_arg,
			  const char *identifier, const char *rights)
{
	char *mailbox, *now = NULL, *text, *what;
	const char *fields[7];
	int ret;

	ret = store_acl_set(setup->user, mailbox_arg, identifier, rights);
	if (ret != STORE_OK) {
		what = mem_printf("cannot change the ACL of mailbox %s",
				  mailbox_arg);
		ret = store_setup_error(setup, ret, what);
		free(what);
		return ret;
	}
	/* With "+x"/"-x" the result is not what was given: read it back. */
	if (rights != NULL) {
		ret = cmd_acl_rights_of(setup, mailbox_arg, identifier, &now);
		if (ret != CTL_EXIT_OK)
			return ret;
	}
	mailbox = store_setup_mailbox_name(mailbox_arg);
	if (rights == NULL) {
		text = mem_printf("ACL entry of %s on mailbox %s of %s deleted",
				  identifier, mailbox, setup->address);
	} else {
		text = mem_printf("%s has rights \"%s\" on mailbox %s of %s",
				  identifier, now, mailbox, setup->address);
	}
	fields[0] = "mailbox";
	fields[1] = mailbox;
	fields[2] = "identifier";
	fields[3] = identifier;
	fields[4] = now != NULL ? "rights" : NULL;
	fields[5] = now;
	fields[6] = NULL;
	ret = store_setup_report(setup, rights == NULL ? "deleted" : "set",
				 text, fields);
	free(text);
	free(mailbox);
	free(now);
	return ret;
}

static int cmd_acl_set(struct store_setup *setup, char **args, int count,
		       void *context)
{
	return cmd_acl_change(setup, args[1], args[2], args[3]);
}

static int cmd_acl_delete(struct store_setup *setup, char **args, int count,
			  void *context)
{
	return cmd_acl_change(setup, args[1], args[2], NULL);
}

static const struct store_setup_subcommand cmd_acl_subcommands[] = {
	{ "get", 2, 2, 0, NULL, cmd_acl_get },
	{ "set", 4, 4, 0, NULL, cmd_acl_set },
	{ "delete", 3, 3, 0, NULL, cmd_acl_delete },
};

static const struct store_setup_family cmd_acl_family = {
	.name = "acl",
	.usage = cmd_acl_usage,
	.options_first = true,
	.subcommands = cmd_acl_subcommands,
	.subcommand_count = N_ELEMENTS(cmd_acl_subcommands),
};

int cmd_acl(struct ctl *ctl, int argc, char **argv)
{
	return store_setup_run_family(ctl, &cmd_acl_family, argc, argv, NULL);
}
