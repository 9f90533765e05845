/*
 * cmd-deliver.c - `clustermailctl deliver ADDRESS < message`: the local
 * delivery agent (LDA), for Postfix's mailbox_command or a pipe(8)
 * transport, procmail-style scripts, and tests.
 *
 * The contract with the MTA is the exit status (sysexits(3)): 0 only
 * after store_save_deliver() said the message is durable on the spool
 * (file and directory fsynced: DESIGN invariant 1); 67 unknown user,
 * 77 over quota, 65 unacceptable message - all permanent, the MTA
 * bounces; and 75 for everything else, so that the MTA keeps the message
 * and tries again. When in doubt we say 75: a deferred message costs a
 * retry, a bounced one may be lost to the user.
 *
 * The message comes on stdin with LF or CRLF line ends. A first line
 * "From sender date" (the mbox separator Postfix writes for
 * mailbox_command) is not part of the message and is dropped; it cannot
 * be a header, since a header name ends with ':'.
 *
 * --mailbox NAME delivers into a folder, as dovecot-lda -m does: when the
 * folder does not exist or its name is invalid, the message goes to INBOX
 * instead (a typo in a filter rule must not bounce mail); --create makes
 * the folder (and subscribes it) first.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/str.h"
#include "ctl.h"
#include "control-client.h"
#include "store-setup.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <strings.h>
#include <unistd.h>

/* Read stdin in chunks of this size. */
#define CMD_DELIVER_CHUNK_SIZE (64 * 1024)
/* Larger input is refused for good (65). MTAs have their own, smaller
   limit (Postfix: message_size_limit, 10 MB by default); this one only
   keeps a runaway producer from filling the spool. */
#define CMD_DELIVER_MAX_SIZE (64ULL * 1024 * 1024)

struct cmd_deliver_options {
	const char *address;		/* borrowed from argv */
	const char *mailbox;		/* borrowed; NULL = INBOX */
	bool create;			/* --create */
	uint32_t flags;			/* MAIL_* */
	struct str_array keywords;	/* owned */
};

/* Reading the message: skipping an mbox "From " line, then copying. */
enum cmd_deliver_state {
	CMD_DELIVER_STATE_START,	/* fewer than 5 bytes seen yet */
	CMD_DELIVER_STATE_FROM_LINE,	/* inside the "From " line */
	CMD_DELIVER_STATE_MESSAGE,
};

struct cmd_deliver_input {
	struct store_save *save;	/* borrowed */
	enum cmd_deliver_state state;
	char start[5];			/* the first bytes, while START */
	size_t start_len;
	uint64_t size;			/* message bytes given to the store */
	int result;			/* STORE_OK or the failed write's */
};

static void cmd_deliver_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] deliver ADDRESS [--mailbox NAME]\n"
	      "                        [--create] [--flags FLAGS] [--from SENDER]\n"
	      "                        < MESSAGE\n"
	      "\n"
	      "Delivers the message on standard input into ADDRESS's INBOX, or\n"
	      "into mailbox NAME (INBOX if NAME does not exist, unless --create).\n"
	      "FLAGS are IMAP flags and keywords, e.g. '\\Seen $Label1'.\n"
	      "Exit status: 0 delivered, 67 unknown user, 77 over quota,\n"
	      "65 message refused, 75 temporary failure (try again).\n"
	      "See clustermailctl(8).\n", out);
}

/*
 * Flags
 */

static const struct {
	const char *name;
	uint32_t flag;
} cmd_deliver_system_flags[] = {
	{ "\\Seen", MAIL_SEEN },
	{ "\\Answered", MAIL_ANSWERED },
	{ "\\Flagged", MAIL_FLAGGED },
	{ "\\Deleted", MAIL_DELETED },
	{ "\\Draft", MAIL_DRAFT },
};

/* cmd_deliver_is_atom - may word be an IMAP keyword (RFC 9051 atom)? */
static bool cmd_deliver_is_atom(const char *word)
{
	for (const char *p = word; *p != '\0'; p++) {
		if (*p <= 0x20 || *p >= 0x7f || strchr("(){%*\"\\]", *p) != NULL)
			return false;
	}
	return word[0] != '\0';
}

/* cmd_deliver_add_flag - one word of --flags */
static int cmd_deliver_add_flag(struct cmd_deliver_options *opts,
				const char *word)
{
	if (word[0] == '\\') {
		for (size_t i = 0; i < N_ELEMENTS(cmd_deliver_system_flags); i++) {
			if (strcasecmp(word, cmd_deliver_system_flags[i].name) != 0)
				continue;
			opts->flags |= cmd_deliver_system_flags[i].flag;
			return CTL_EXIT_OK;
		}
		ctl_error("deliver: unknown flag '%s' (use \\Seen, \\Answered, "
			  "\\Flagged, \\Deleted, \\Draft or a keyword)", word);
		return CTL_EXIT_USAGE;
	}
	if (!cmd_deliver_is_atom(word)) {
		ctl_error("deliver: invalid keyword '%s'", word);
		return CTL_EXIT_USAGE;
	}
	for (size_t i = 0; i < opts->keywords.count; i++) {
		if (strcasecmp(opts->keywords.items[i], word) == 0)
			return CTL_EXIT_OK;
	}
	str_array_add(&opts->keywords, word);
	return CTL_EXIT_OK;
}

/* cmd_deliver_parse_flags - a --flags value: words separated by blanks
   or commas */
static int cmd_deliver_parse_flags(struct cmd_deliver_options *opts,
				   const char *value)
{
	struct str_array words;
	int ret = CTL_EXIT_OK;

	str_array_init(&words);
	str_split_words(value, &words);
	for (size_t i = 0; i < words.count && ret == CTL_EXIT_OK; i++)
		ret = cmd_deliver_add_flag(opts, words.items[i]);
	str_array_clear(&words);
	return ret;
}

/*
 * Reading the message
 */

/* cmd_deliver_feed - hand message bytes to the store, within the cap */
static int cmd_deliver_feed(struct cmd_deliver_input *in, const char *data,
			    size_t size)
{
	if (size == 0)
		return CTL_EXIT_OK;
	if (in->size + size > CMD_DELIVER_MAX_SIZE) {
		ctl_error("deliver: message larger than %llu MiB refused",
			  (unsigned long long)(CMD_DELIVER_MAX_SIZE >> 20));
		return CTL_EXIT_DATAERR;
	}
	in->size += size;
	in->result = store_save_write(in->save, data, size);
	return in->result == STORE_OK ? CTL_EXIT_OK : CTL_EXIT_TEMPFAIL;
}

/* cmd_deliver_input_chunk - one chunk of stdin through the state machine
   that drops a leading "From " line */
static int cmd_deliver_input_chunk(struct cmd_deliver_input *in,
				   const char *data, size_t size)
{
	const char *nl;
	size_t take;
	int ret;

	if (in->state == CMD_DELIVER_STATE_START) {
		take = sizeof(in->start) - in->start_len;
		if (take > size)
			take = size;
		memcpy(in->start + in->start_len, data, take);
		in->start_len += take;
		data += take;
		size -= take;
		if (in->start_len < sizeof(in->start))
			return CTL_EXIT_OK;
		if (memcmp(in->start, "From ", 5) == 0) {
			in->state = CMD_DELIVER_STATE_FROM_LINE;
		} else {
			in->state = CMD_DELIVER_STATE_MESSAGE;
			ret = cmd_deliver_feed(in, in->start, in->start_len);
			if (ret != CTL_EXIT_OK)
				return ret;
		}
	}
	if (in->state == CMD_DELIVER_STATE_FROM_LINE) {
		if ((nl = memchr(data, '\n', size)) == NULL)
			return CTL_EXIT_OK;
		in->state = CMD_DELIVER_STATE_MESSAGE;
		size -= (size_t)(nl + 1 - data);
		data = nl + 1;
	}
	return cmd_deliver_feed(in, data, size);
}

/* cmd_deliver_read_message - stdin into the save; returns an exit code */
static int cmd_deliver_read_message(struct cmd_deliver_input *in)
{
	char *buf = mem_zalloc(CMD_DELIVER_CHUNK_SIZE);
	int ret = CTL_EXIT_OK;
	ssize_t n;

	while (ret == CTL_EXIT_OK) {
		n = read(STDIN_FILENO, buf, CMD_DELIVER_CHUNK_SIZE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ctl_error("deliver: cannot read the message from "
				  "standard input: %m");
			ret = CTL_EXIT_TEMPFAIL;
		} else if (n == 0) {
			break;
		} else {
			ret = cmd_deliver_input_chunk(in, buf, (size_t)n);
		}
	}
	free(buf);
	/* Fewer than 5 bytes in all: they are the message. */
	if (ret == CTL_EXIT_OK && in->state == CMD_DELIVER_STATE_START)
		ret = cmd_deliver_feed(in, in->start, in->start_len);
	if (ret == CTL_EXIT_OK && in->size == 0) {
		ctl_error("deliver: empty message refused");
		ret = CTL_EXIT_DATAERR;
	}
	return ret;
}

/*
 * Delivering
 */

/* cmd_deliver_wake - tell this node's daemon (if it runs) that the
   mailbox changed, so that IDLE clients here and, through the cluster
   group, everywhere see the message at once instead of at their next
   poll. The message is delivered either way: this is only a hint. */
static void cmd_deliver_wake(struct ctl *ctl, struct store_setup *setup,
			     const char *mailbox)
{
	char *canonical = NULL, *command;

	if (mailbox != NULL && store_name_normalize(mailbox, &canonical) != STORE_OK)
		return;
	command = mem_printf("changed %s %s", store_user_name(setup->user),
			     canonical != NULL ? canonical : "INBOX");
	(void)control_client_hint(ctl->set->control_socket, command, 1000);
	free(command);
	free(canonical);
}

/* cmd_deliver_exit_code - an LDA's exit code for a store result: only
   what is certainly permanent bounces */
static int cmd_deliver_exit_code(int result)
{
	switch (result) {
	case STORE_OK:
		return CTL_EXIT_OK;
	case STORE_ERR_OVERQUOTA:
	case STORE_ERR_NOPERM:
		return CTL_EXIT_NOPERM;
	case STORE_ERR_LIMIT:
		return CTL_EXIT_DATAERR;
	default:
		return CTL_EXIT_TEMPFAIL;
	}
}

/* cmd_deliver_fail - print the store's reason; returns the exit code */
static int cmd_deliver_fail(const struct store_setup *setup, int result,
			    const char *what)
{
	const char *reason = store_user_error(setup->user);

	if (reason == NULL || reason[0] == '\0')
		reason = store_result_name(result);
	ctl_error("deliver to %s: %s: %s", setup->address, what, reason);
	return cmd_deliver_exit_code(result);
}

/* cmd_deliver_create_mailbox - --create: make the folder if missing.
   Returns a store result; EXISTS and BADNAME count as success here (the
   message then goes to the folder, or to INBOX). */
static int cmd_deliver_create_mailbox(struct store_setup *setup,
				      const char *mailbox)
{
	int ret = store_mailbox_create(setup->user, mailbox, 0);

	if (ret == STORE_OK &&
	    store_subscribe(setup->user, mailbox, true) != STORE_OK) {
		/* The mail still gets delivered; only the flag is missing. */
		ctl_error("deliver to %s: cannot subscribe mailbox %s: %s",
			  setup->address, mailbox, store_user_error(setup->user));
	}
	if (ret == STORE_ERR_TEMP)
		return ret;
	return STORE_OK;
}

/* cmd_deliver_store - deliver the finished save into the mailbox, or
   INBOX as the fallback; *mailbox_r says where it went (NULL = INBOX) */
static int cmd_deliver_store(struct store_setup *setup,
			     struct store_save *save,
			     const struct cmd_deliver_options *opts,
			     const char **mailbox_r)
{
	struct store_save_options save_opts = {
		.flags = opts->flags,
		.keywords = opts->keywords.count > 0 ?
			(const char *const *)opts->keywords.items : NULL,
	};
	const char *mailbox = opts->mailbox;
	int ret;

	if (mailbox != NULL && opts->create &&
	    (ret = cmd_deliver_create_mailbox(setup, mailbox)) != STORE_OK)
		return cmd_deliver_fail(setup, ret, "cannot create mailbox");
	ret = store_save_deliver(save, setup->user, mailbox, &save_opts);
	if (ret == STORE_ERR_LIMIT && save_opts.keywords != NULL) {
		/* The keyword table is full: the message matters more. */
		ctl_error("deliver to %s: %s; delivering without keywords",
			  setup->address, store_user_error(setup->user));
		save_opts.keywords = NULL;
		ret = store_save_deliver(save, setup->user, mailbox, &save_opts);
	}
	if (mailbox != NULL &&
	    (ret == STORE_ERR_NOTFOUND || ret == STORE_ERR_BADNAME)) {
		ctl_error("deliver to %s: %s; delivering to INBOX",
			  setup->address, store_user_error(setup->user));
		mailbox = NULL;
		ret = store_save_deliver(save, setup->user, NULL, &save_opts);
	}
	if (ret != STORE_OK)
		return cmd_deliver_fail(setup, ret, "cannot deliver");
	*mailbox_r = mailbox;
	return CTL_EXIT_OK;
}

/* cmd_deliver_report - --json: where the message went. The message is
   delivered already: a failure to print must not make the MTA deliver it
   a second time, so it is reported but does not change the exit code. */
static void cmd_deliver_report(const struct store_setup *setup,
			       const char *mailbox, uint64_t vsize)
{
	struct json_writer w;
	struct buffer json;
	char *canonical = NULL;

	if (mailbox != NULL && store_name_normalize(mailbox, &canonical) != STORE_OK)
		canonical = NULL;
	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_kv_string(&w, "user", setup->address);
	json_kv_string(&w, "mailbox", canonical != NULL ? canonical :
		       mailbox != NULL ? mailbox : "INBOX");
	json_kv_uint(&w, "size", vsize);
	json_object_end(&w);
	(void)store_setup_print_json(&json);
	free(canonical);
}

/* cmd_deliver_run - read, save and deliver one message */
static int cmd_deliver_run(struct ctl *ctl,
			   const struct cmd_deliver_options *opts)
{
	struct cmd_deliver_input in = { .result = STORE_OK };
	struct store_setup *setup;
	struct store_save *save;
	const char *mailbox = NULL;
	int ret, result;

	/* A reader of --json output that went away must not kill us between
	   the delivery and the exit status: the MTA would deliver again. */
	(void)signal(SIGPIPE, SIG_IGN);
	ret = store_setup_open(ctl, opts->address,
			       STORE_SETUP_FLAG_CREATE | STORE_SETUP_FLAG_LDA,
			       &setup);
	if (ret != CTL_EXIT_OK)
		return ret;
	if ((save = store_save_begin(setup->user, &result)) == NULL) {
		ret = cmd_deliver_fail(setup, result, "cannot save");
		store_setup_close(&setup);
		return ret;
	}
	in.save = save;
	ret = cmd_deliver_read_message(&in);
	if (in.result != STORE_OK)
		ret = cmd_deliver_fail(setup, in.result, "cannot save");
	if (ret == CTL_EXIT_OK &&
	    (result = store_save_finish(save)) != STORE_OK)
		ret = cmd_deliver_fail(setup, result, "cannot save");
	if (ret == CTL_EXIT_OK)
		ret = cmd_deliver_store(setup, save, opts, &mailbox);
	if (ret == CTL_EXIT_OK)
		cmd_deliver_wake(ctl, setup, mailbox);
	if (ret == CTL_EXIT_OK && ctl->json)
		cmd_deliver_report(setup, mailbox, store_save_vsize(save));
	store_save_free(&save);
	store_setup_close(&setup);
	return ret;
}

/*
 * Command line
 */

static const struct option cmd_deliver_long_options[] = {
	{ "mailbox", required_argument, NULL, 'm' },
	{ "create", no_argument, NULL, 'C' },
	{ "flags", required_argument, NULL, 'F' },
	{ "from", required_argument, NULL, 'f' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* cmd_deliver_parse - options and ADDRESS; *help_r for --help */
static int cmd_deliver_parse(int argc, char **argv,
			     struct cmd_deliver_options *opts, bool *help_r)
{
	int opt, ret;

	optind = 0;	/* glibc: start over, main.c already used getopt */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":m:f:h", cmd_deliver_long_options,
				  NULL)) != -1) {
		switch (opt) {
		case 'h':
			*help_r = true;
			return CTL_EXIT_OK;
		case 'm':
			opts->mailbox = optarg;
			break;
		case 'C':
			opts->create = true;
			break;
		case 'F':
			ret = cmd_deliver_parse_flags(opts, optarg);
			if (ret != CTL_EXIT_OK)
				return ret;
			break;
		case 'f':
			/* The envelope sender: accepted for compatibility with
			   other LDAs; the MTA already wrote Return-Path:. */
			break;
		default:
			ctl_error("deliver: %s '%s'", opt == ':' ?
				  "missing argument for" : "unknown option",
				  argv[optind - 1]);
			return CTL_EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		ctl_error("deliver: expected one ADDRESS argument");
		cmd_deliver_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	opts->address = argv[optind];
	return CTL_EXIT_OK;
}

int cmd_deliver(struct ctl *ctl, int argc, char **argv)
{
	struct cmd_deliver_options opts;
	bool help = false;
	int ret;

	if (ctl->set == NULL)
		log_panic("cmd_deliver: settings not loaded");
	memset(&opts, 0, sizeof(opts));
	str_array_init(&opts.keywords);
	ret = cmd_deliver_parse(argc, argv, &opts, &help);
	if (ret == CTL_EXIT_OK && help) {
		cmd_deliver_usage(stdout);
		ret = store_setup_flush();
	} else if (ret == CTL_EXIT_OK) {
		ret = cmd_deliver_run(ctl, &opts);
	}
	str_array_clear(&opts.keywords);
	return ret;
}
