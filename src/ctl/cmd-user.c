/*
 * cmd-user.c - clustermailctl user add|passwd|del|list: manage the users
 * file.
 *
 * Every change runs under the users file's writer lock, from load to
 * save, so concurrent invocations (on this node or, with a cluster-aware
 * file system, on another) never lose each other's updates. Passwords are
 * read and hashed before the lock is taken: nobody should wait for the
 * lock while someone types, and hashing is deliberately slow. Because of
 * that, the preconditions (user exists / does not exist) are checked once
 * before asking for a password, to spare the typing, and again under the
 * lock, where the answer counts.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/str.h"
#include "auth/password.h"
#include "auth/userdb.h"
#include "ctl.h"
#include "control-client.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <termios.h>
#include <unistd.h>

/* Options of the user subcommands, as bits of cmd_user_subcommand.allowed */
#define CMD_USER_OPT_PASSWORD_STDIN	(1U << 0)
#define CMD_USER_OPT_SCHEME		(1U << 1)
#define CMD_USER_OPT_HASH		(1U << 2)
#define CMD_USER_OPT_FORCE		(1U << 3)

struct cmd_user_options {
	char *address;			/* owned; validated, lowercased */
	const char *hash;		/* --hash; borrowed from argv */
	enum password_scheme scheme;	/* --scheme */
	bool scheme_set;
	bool password_stdin;
	bool force;
};

enum cmd_user_change {
	CMD_USER_CHANGE_ADD,
	CMD_USER_CHANGE_PASSWD,
	CMD_USER_CHANGE_DEL,
};

struct cmd_user_subcommand {
	const char *name;
	int (*run)(struct ctl *ctl, const struct cmd_user_options *opts);
	unsigned int allowed;		/* CMD_USER_OPT_* bits */
	bool takes_address;
};

/* The signal that interrupted a password prompt, or 0. */
static volatile sig_atomic_t cmd_user_caught_signal;

/* cmd_user_usage - the user command's usage text */
static void cmd_user_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] user add ADDRESS [--password-stdin]\n"
	      "                        [--scheme SCHEME] [--hash HASH] [--force]\n"
	      "       clustermailctl [OPTIONS] user passwd ADDRESS [--password-stdin]\n"
	      "                        [--scheme SCHEME] [--hash HASH]\n"
	      "       clustermailctl [OPTIONS] user del ADDRESS\n"
	      "       clustermailctl [OPTIONS] user kick ADDRESS\n"
	      "       clustermailctl [OPTIONS] user list\n"
	      "\n"
	      "SCHEME is yescrypt (the default) or sha512-crypt. Without\n"
	      "--password-stdin or --hash, the password is asked for twice on the\n"
	      "terminal. See clustermailctl(8).\n", out);
}

/* cmd_user_flush - push out stdout; a failed write is an error to report */
static int cmd_user_flush(void)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		ctl_error("cannot write to standard output: %m");
		return CTL_EXIT_IOERR;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_print_json - print a finished JSON document and a newline */
static int cmd_user_print_json(struct buffer *json)
{
	buffer_append_byte(json, '\n');
	fwrite(json->data, 1, json->used, stdout);
	buffer_clear(json);
	return cmd_user_flush();
}

/* cmd_user_report - announce a completed change */
static int cmd_user_report(const struct ctl *ctl, const char *address,
			   const char *result, const char *text)
{
	struct json_writer w;
	struct buffer json;

	if (!ctl->json) {
		printf("%s\n", text);
		return cmd_user_flush();
	}
	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_kv_string(&w, "address", address);
	json_kv_string(&w, "result", result);
	json_object_end(&w);
	return cmd_user_print_json(&json);
}

/*
 * Reading passwords
 */

/* cmd_user_read_line - read from fd up to a newline or EOF into buf, one
   byte at a time so that nothing after the line is consumed and no copy
   of the password stays behind in a stdio buffer. Returns the length
   (without the newline), -1 on a read error or signal, -2 if the line is
   longer than max. */
static ssize_t cmd_user_read_line(int fd, char *buf, size_t max)
{
	size_t len = 0;
	ssize_t ret;
	char c;

	for (;;) {
		ret = read(fd, &c, 1);
		if (ret < 0 && errno == EINTR && cmd_user_caught_signal == 0)
			continue;
		if (ret < 0)
			return -1;
		if (ret == 0 || c == '\n')
			break;
		if (len == max)
			return -2;
		buf[len++] = c;
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* cmd_user_check_password - the outcome of reading a password line */
static int cmd_user_check_password(ssize_t len, const char *password)
{
	if (len == -1) {
		ctl_error("cannot read the password: %m");
		return CTL_EXIT_IOERR;
	}
	if (len == -2 || len > PASSWORD_MAX_LEN) {
		ctl_error("password longer than %d bytes", PASSWORD_MAX_LEN);
		return CTL_EXIT_DATAERR;
	}
	if (len == 0) {
		ctl_error("empty password");
		return CTL_EXIT_DATAERR;
	}
	if (strlen(password) != (size_t)len) {
		ctl_error("password contains a NUL byte");
		return CTL_EXIT_DATAERR;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_read_stdin - --password-stdin: the first line of stdin; a CR
   before the newline (a file written on Windows) is not part of it */
static int cmd_user_read_stdin(char *buf, size_t size)
{
	ssize_t len = cmd_user_read_line(STDIN_FILENO, buf, size - 1);

	if (len > 0 && buf[len - 1] == '\r')
		buf[--len] = '\0';
	return cmd_user_check_password(len, buf);
}

static void cmd_user_signal_handler(int signo)
{
	cmd_user_caught_signal = signo;
}

/* The signals that must not leave the terminal without echo. */
static const int cmd_user_prompt_signals[] = {
	SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP,
};

/* cmd_user_catch_signals - install handlers that only record the signal
   (saving the old ones in saved), or restore the saved ones. Without
   SA_RESTART, read() then fails with EINTR and the prompt can put the
   terminal back before the signal takes its usual effect. */
static void cmd_user_catch_signals(struct sigaction *saved, bool restore)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cmd_user_signal_handler;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < N_ELEMENTS(cmd_user_prompt_signals); i++) {
		if (restore)
			(void)sigaction(cmd_user_prompt_signals[i], &saved[i], NULL);
		else
			(void)sigaction(cmd_user_prompt_signals[i], &sa, &saved[i]);
	}
}

/* cmd_user_prompt - ask for a line on the terminal without echoing it */
static int cmd_user_prompt(const char *prompt, char *buf, size_t size)
{
	struct sigaction saved[N_ELEMENTS(cmd_user_prompt_signals)];
	struct termios old, noecho;
	ssize_t len;
	int signo;

	if (tcgetattr(STDIN_FILENO, &old) < 0) {
		ctl_error("cannot read the terminal settings: %m");
		return CTL_EXIT_IOERR;
	}
	noecho = old;
	/* ECHONL still echoes the Enter, so the cursor moves on. */
	noecho.c_lflag = (noecho.c_lflag & ~(tcflag_t)ECHO) | ECHONL;
	cmd_user_caught_signal = 0;
	cmd_user_catch_signals(saved, false);
	/* Echo off (flushing type-ahead) before the prompt shows: what is
	   typed after the prompt must never be thrown away. */
	(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
	fprintf(stderr, "%s", prompt);
	fflush(stderr);
	len = cmd_user_read_line(STDIN_FILENO, buf, size - 1);
	(void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	cmd_user_catch_signals(saved, true);
	if ((signo = cmd_user_caught_signal) != 0) {
		explicit_bzero(buf, size);
		fputc('\n', stderr);
		/* Die of the signal as if we never caught it (if its old
		   disposition says so); otherwise report the interruption. */
		(void)raise(signo);
		ctl_error("password prompt interrupted");
		return CTL_EXIT_TEMPFAIL;
	}
	return cmd_user_check_password(len, buf);
}

/* cmd_user_read_tty - ask twice on the terminal; both must match */
static int cmd_user_read_tty(char *buf, size_t size)
{
	char again[PASSWORD_MAX_LEN + 2];
	int ret;

	if ((ret = cmd_user_prompt("Password: ", buf, size)) != CTL_EXIT_OK)
		return ret;
	ret = cmd_user_prompt("Retype password: ", again, sizeof(again));
	if (ret == CTL_EXIT_OK && strcmp(buf, again) != 0) {
		ctl_error("passwords do not match");
		ret = CTL_EXIT_DATAERR;
	}
	explicit_bzero(again, sizeof(again));
	return ret;
}

/* cmd_user_get_hash - the hash to store: --hash as given, or a new hash
   of a password read from stdin or the terminal */
static int cmd_user_get_hash(const struct cmd_user_options *opts,
			     char **hash_r)
{
	char password[PASSWORD_MAX_LEN + 2];
	const char *error;
	int ret;

	if (opts->hash != NULL) {
		if (password_hash_check(opts->hash, &error) < 0) {
			ctl_error("--hash: %s", error);
			return CTL_EXIT_DATAERR;
		}
		*hash_r = mem_strdup(opts->hash);
		return CTL_EXIT_OK;
	}
	if (opts->password_stdin) {
		ret = cmd_user_read_stdin(password, sizeof(password));
	} else if (isatty(STDIN_FILENO)) {
		ret = cmd_user_read_tty(password, sizeof(password));
	} else {
		ctl_error("no password: standard input is not a terminal; "
			  "use --password-stdin to read it from there");
		return CTL_EXIT_USAGE;
	}
	if (ret == CTL_EXIT_OK &&
	    password_hash(password, opts->scheme, hash_r, &error) < 0) {
		ctl_error("cannot hash the password: %s", error);
		ret = CTL_EXIT_OSERR;
	}
	explicit_bzero(password, sizeof(password));
	return ret;
}

/*
 * The users file
 */

/* cmd_user_load - load the users file; returns an exit code */
static int cmd_user_load(const struct ctl *ctl, struct userdb **db_r)
{
	char *error;
	int ret;

	ret = userdb_load(ctl->set->users_file, USERDB_LOAD_MISSING_OK, db_r,
			  &error);
	if (ret == 0)
		return CTL_EXIT_OK;
	ctl_error("%s", error);
	free(error);
	return ret == USERDB_MALFORMED ? CTL_EXIT_CONFIG : CTL_EXIT_IOERR;
}

/* cmd_user_precheck - fail before asking for a password if the change
   cannot succeed as things stand (checked again under the lock) */
static int cmd_user_precheck(const struct ctl *ctl,
			     enum cmd_user_change change, const char *address)
{
	struct userdb *db;
	bool exists;
	int ret;

	if ((ret = cmd_user_load(ctl, &db)) != CTL_EXIT_OK)
		return ret;
	exists = userdb_lookup(db, address) != NULL;
	userdb_free(&db);
	if (change == CMD_USER_CHANGE_ADD && exists) {
		ctl_error("user %s already exists", address);
		return CTL_EXIT_FAILURE;
	}
	if (change != CMD_USER_CHANGE_ADD && !exists) {
		ctl_error("no such user: %s", address);
		return CTL_EXIT_NOUSER;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_apply - make the change in a loaded userdb */
static int cmd_user_apply(struct userdb *db, enum cmd_user_change change,
			  const char *address, const char *hash)
{
	const char *error = "invalid argument";
	int ret;

	switch (change) {
	case CMD_USER_CHANGE_ADD:
		if ((ret = userdb_add(db, address, hash, NULL, &error)) == 0) {
			ctl_error("user %s already exists", address);
			return CTL_EXIT_FAILURE;
		}
		break;
	case CMD_USER_CHANGE_PASSWD:
		ret = userdb_set_hash(db, address, hash, &error);
		break;
	case CMD_USER_CHANGE_DEL:
		ret = userdb_remove(db, address);
		break;
	default:
		log_panic("cmd_user_apply: bad change %d", (int)change);
	}
	if (ret == 0) {
		ctl_error("no such user: %s", address);
		return CTL_EXIT_NOUSER;
	}
	if (ret < 0) {
		ctl_error("%s: %s", address, error);
		return CTL_EXIT_DATAERR;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_modify - lock the users file, load it, change it, save it */
static int cmd_user_modify(const struct ctl *ctl, enum cmd_user_change change,
			   const char *address, const char *hash)
{
	struct userdb_lock *lock;
	struct userdb *db = NULL;
	char *error;
	int ret;

	if (userdb_lock(ctl->set->users_file, &lock, &error) < 0) {
		ctl_error("%s", error);
		free(error);
		return CTL_EXIT_CANTCREAT;
	}
	ret = cmd_user_load(ctl, &db);
	if (ret == CTL_EXIT_OK)
		ret = cmd_user_apply(db, change, address, hash);
	if (ret == CTL_EXIT_OK &&
	    userdb_save(db, ctl->set->mail_user, &error) < 0) {
		ctl_error("%s", error);
		free(error);
		ret = CTL_EXIT_CANTCREAT;
	}
	userdb_free(&db);
	userdb_unlock(&lock);
	return ret;
}

/*
 * Subcommands
 */

/* cmd_user_check_domain - refuse an address outside local_domains */
static int cmd_user_check_domain(const struct ctl *ctl, const char *address)
{
	const char *domain = strchr(address, '@') + 1;

	if (ctl->set->local_domains.count == 0 ||
	    str_array_contains(&ctl->set->local_domains, domain))
		return CTL_EXIT_OK;
	ctl_error("domain %s is not in local_domains; use --force to add "
		  "%s anyway", domain, address);
	return CTL_EXIT_DATAERR;
}

/* cmd_user_set_password - add or passwd: get the hash, then change */
static int cmd_user_set_password(struct ctl *ctl,
				 const struct cmd_user_options *opts,
				 enum cmd_user_change change)
{
	char *hash = NULL;
	int ret;

	/* Only worth it when a human may be about to type a password. */
	if (opts->hash == NULL &&
	    (ret = cmd_user_precheck(ctl, change, opts->address)) != CTL_EXIT_OK)
		return ret;
	if ((ret = cmd_user_get_hash(opts, &hash)) != CTL_EXIT_OK)
		return ret;
	ret = cmd_user_modify(ctl, change, opts->address, hash);
	free(hash);
	return ret;
}

static int cmd_user_add(struct ctl *ctl, const struct cmd_user_options *opts)
{
	char *text;
	int ret;

	if (!opts->force &&
	    (ret = cmd_user_check_domain(ctl, opts->address)) != CTL_EXIT_OK)
		return ret;
	ret = cmd_user_set_password(ctl, opts, CMD_USER_CHANGE_ADD);
	if (ret != CTL_EXIT_OK)
		return ret;
	text = mem_printf("user %s added", opts->address);
	ret = cmd_user_report(ctl, opts->address, "added", text);
	free(text);
	return ret;
}

static int cmd_user_passwd(struct ctl *ctl, const struct cmd_user_options *opts)
{
	char *text;
	int ret;

	ret = cmd_user_set_password(ctl, opts, CMD_USER_CHANGE_PASSWD);
	if (ret != CTL_EXIT_OK)
		return ret;
	text = mem_printf("password of user %s changed", opts->address);
	ret = cmd_user_report(ctl, opts->address, "password-changed", text);
	free(text);
	return ret;
}

static int cmd_user_del(struct ctl *ctl, const struct cmd_user_options *opts)
{
	char *text;
	int ret;

	ret = cmd_user_modify(ctl, CMD_USER_CHANGE_DEL, opts->address, NULL);
	if (ret != CTL_EXIT_OK)
		return ret;
	text = mem_printf("user %s deleted", opts->address);
	ret = cmd_user_report(ctl, opts->address, "deleted", text);
	free(text);
	return ret;
}

/* cmd_user_list_json - {"users":[{"address":..., "scheme":...}, ...]} */
static int cmd_user_list_json(const struct userdb_user **users, size_t count)
{
	struct json_writer w;
	struct buffer json;

	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_key(&w, "users");
	json_array_begin(&w);
	for (size_t i = 0; i < count; i++) {
		json_object_begin(&w);
		json_kv_string(&w, "address", users[i]->address);
		json_kv_string(&w, "scheme",
			       password_hash_scheme_name(users[i]->hash));
		json_object_end(&w);
	}
	json_array_end(&w);
	json_object_end(&w);
	return cmd_user_print_json(&json);
}

/* cmd_user_list_text - one user per line: address and hash scheme */
static int cmd_user_list_text(const struct userdb_user **users, size_t count)
{
	int width = 0, len;

	for (size_t i = 0; i < count; i++) {
		len = (int)strlen(users[i]->address);
		if (len > width)
			width = len;
	}
	for (size_t i = 0; i < count; i++)
		printf("%-*s  %s\n", width, users[i]->address,
		       password_hash_scheme_name(users[i]->hash));
	return cmd_user_flush();
}

static int cmd_user_list(struct ctl *ctl, const struct cmd_user_options *opts)
{
	const struct userdb_user **users;
	struct userdb *db;
	size_t count;
	int ret;

	/* No lock: the file is only replaced by rename, so this reads one
	   complete version of it. */
	if ((ret = cmd_user_load(ctl, &db)) != CTL_EXIT_OK)
		return ret;
	users = userdb_list(db, &count);
	ret = ctl->json ? cmd_user_list_json(users, count) :
		cmd_user_list_text(users, count);
	free(users);
	userdb_free(&db);
	return ret;
}

/* cmd_user_kick - end the user's sessions on every node (through this
   node's daemon, which tells the others over the cluster group) */
static int cmd_user_kick(struct ctl *ctl, const struct cmd_user_options *opts)
{
	char *command, *reply, *error, *text, *address;
	bool cluster;
	int ret;

	address = str_lcase(mem_strdup(opts->address));
	command = mem_printf("kick %s", address);
	ret = control_client_request(ctl->set->control_socket, command, 10000,
				     &reply, &error);
	free(command);
	if (ret != CTL_EXIT_OK) {
		ctl_error("%s", error);
		free(error);
		free(address);
		return ret;
	}
	cluster = strstr(reply, "\"cluster\":true") != NULL;
	free(reply);
	text = mem_printf("sessions of %s ended on %s", address,
			  cluster ? "every node" :
			  "this node (not in a cluster group: other nodes were not told)");
	ret = cmd_user_report(ctl, address, cluster ? "kicked" : "kicked-locally", text);
	free(text);
	free(address);
	return ret;
}

static const struct cmd_user_subcommand cmd_user_subcommands[] = {
	{ "add", cmd_user_add, CMD_USER_OPT_PASSWORD_STDIN |
	  CMD_USER_OPT_SCHEME | CMD_USER_OPT_HASH | CMD_USER_OPT_FORCE, true },
	{ "passwd", cmd_user_passwd, CMD_USER_OPT_PASSWORD_STDIN |
	  CMD_USER_OPT_SCHEME | CMD_USER_OPT_HASH, true },
	{ "del", cmd_user_del, 0, true },
	{ "kick", cmd_user_kick, 0, true },
	{ "list", cmd_user_list, 0, false },
};

/*
 * Command line
 */

static const struct option cmd_user_long_options[] = {
	{ "password-stdin", no_argument, NULL, 'p' },
	{ "scheme", required_argument, NULL, 's' },
	{ "hash", required_argument, NULL, 'H' },
	{ "force", no_argument, NULL, 'f' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* cmd_user_option_bit - the CMD_USER_OPT_* bit of a getopt value */
static unsigned int cmd_user_option_bit(int opt)
{
	switch (opt) {
	case 'p': return CMD_USER_OPT_PASSWORD_STDIN;
	case 's': return CMD_USER_OPT_SCHEME;
	case 'H': return CMD_USER_OPT_HASH;
	case 'f': return CMD_USER_OPT_FORCE;
	default: return 0;
	}
}

/* cmd_user_set_option - store one parsed option */
static int cmd_user_set_option(int opt, struct cmd_user_options *opts)
{
	switch (opt) {
	case 'p':
		opts->password_stdin = true;
		break;
	case 's':
		if (password_scheme_parse(optarg, &opts->scheme) < 0) {
			ctl_error("unknown scheme '%s' (use yescrypt or "
				  "sha512-crypt)", optarg);
			return CTL_EXIT_USAGE;
		}
		opts->scheme_set = true;
		break;
	case 'H':
		opts->hash = optarg;
		break;
	case 'f':
		opts->force = true;
		break;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_parse_options - the options of a subcommand; argv[0] is the
   subcommand's name. Returns an exit code; *help_r is set for --help. */
static int cmd_user_parse_options(const struct cmd_user_subcommand *sub,
				  int argc, char **argv,
				  struct cmd_user_options *opts, bool *help_r)
{
	int opt, ret;

	optind = 0;	/* glibc: start over, main.c already used getopt */
	opterr = 0;	/* our own messages name the command */
	while ((opt = getopt_long(argc, argv, ":h", cmd_user_long_options,
				  NULL)) != -1) {
		if (opt == 'h') {
			*help_r = true;
			return CTL_EXIT_OK;
		}
		if (opt == '?' || opt == ':') {
			ctl_error("user %s: %s '%s'", sub->name, opt == '?' ?
				  "unknown option" : "missing argument for",
				  argv[optind - 1]);
			return CTL_EXIT_USAGE;
		}
		if ((sub->allowed & cmd_user_option_bit(opt)) == 0) {
			ctl_error("user %s: option '%s' does not apply here",
				  sub->name, argv[optind - 1]);
			return CTL_EXIT_USAGE;
		}
		if ((ret = cmd_user_set_option(opt, opts)) != CTL_EXIT_OK)
			return ret;
	}
	if (opts->hash != NULL && (opts->password_stdin || opts->scheme_set)) {
		ctl_error("user %s: --hash cannot be combined with "
			  "--password-stdin or --scheme", sub->name);
		return CTL_EXIT_USAGE;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_parse - options and the ADDRESS argument of a subcommand */
static int cmd_user_parse(const struct cmd_user_subcommand *sub,
			  int argc, char **argv,
			  struct cmd_user_options *opts, bool *help_r)
{
	const char *error;
	int ret, want = sub->takes_address ? 1 : 0;

	ret = cmd_user_parse_options(sub, argc, argv, opts, help_r);
	if (ret != CTL_EXIT_OK || *help_r)
		return ret;
	if (argc - optind != want) {
		ctl_error("user %s: expected %s", sub->name,
			  want == 1 ? "one ADDRESS argument" : "no arguments");
		cmd_user_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (want == 1 &&
	    userdb_address_normalize(argv[optind], &opts->address, &error) < 0) {
		ctl_error("invalid address '%s': %s", argv[optind], error);
		return CTL_EXIT_DATAERR;
	}
	return CTL_EXIT_OK;
}

/* cmd_user_find - a subcommand by name */
static const struct cmd_user_subcommand *cmd_user_find(const char *name)
{
	for (size_t i = 0; i < N_ELEMENTS(cmd_user_subcommands); i++) {
		if (strcmp(cmd_user_subcommands[i].name, name) == 0)
			return &cmd_user_subcommands[i];
	}
	return NULL;
}

int cmd_user(struct ctl *ctl, int argc, char **argv)
{
	const struct cmd_user_subcommand *sub;
	struct cmd_user_options opts;
	bool help = false;
	int ret;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
			  strcmp(argv[1], "-h") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		cmd_user_usage(stdout);
		return cmd_user_flush();
	}
	if (argc < 2 || (sub = cmd_user_find(argv[1])) == NULL) {
		if (argc >= 2)
			ctl_error("user: unknown subcommand '%s'", argv[1]);
		cmd_user_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (ctl->set == NULL)
		log_panic("cmd_user: settings not loaded");
	memset(&opts, 0, sizeof(opts));
	opts.scheme = PASSWORD_SCHEME_DEFAULT;
	ret = cmd_user_parse(sub, argc - 1, argv + 1, &opts, &help);
	if (ret == CTL_EXIT_OK && help) {
		cmd_user_usage(stdout);
		ret = cmd_user_flush();
	} else if (ret == CTL_EXIT_OK) {
		ret = sub->run(ctl, &opts);
	}
	free(opts.address);
	return ret;
}
