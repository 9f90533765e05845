/*
 * store-setup.c - from clustermailctl's settings to an open store_user,
 * as mail_user, and back (see store-setup.h for the order of the steps
 * and why).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/privilege.h"
#include "auth/userdb.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "ctl.h"
#include "store-setup.h"

#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* The pool only runs fcntl lock waits: one thread is plenty. */
#define STORE_SETUP_POOL_THREADS 1
/* Draining the loop at close: at most this many ticks of this length.
   Only cancelled timers of destroyed lock handles can be left, and they
   complete within one iteration. */
#define STORE_SETUP_DRAIN_TICKS 100
#define STORE_SETUP_TICK_MSECS 10

/* store_setup_fail_code - code for a failure that is permanent for the
   admin commands but must keep the message queued for an LDA */
static int store_setup_fail_code(const struct store_setup *setup, int code)
{
	return (setup->flags & STORE_SETUP_FLAG_LDA) != 0 ?
		CTL_EXIT_TEMPFAIL : code;
}

/* store_setup_find_user - validate the address, look it up in the users
   file */
static int store_setup_find_user(struct store_setup *setup,
				 const char *address)
{
	const char *users_file = setup->ctl->set->users_file;
	bool lda = (setup->flags & STORE_SETUP_FLAG_LDA) != 0;
	const char *reason;
	struct userdb *db;
	char *error;
	bool found;
	int ret;

	if (userdb_address_normalize(address, &setup->address, &reason) < 0) {
		ctl_error("invalid address '%s': %s", address, reason);
		return lda ? CTL_EXIT_NOUSER : CTL_EXIT_DATAERR;
	}
	/* For an LDA a missing users file is an outage (an unmounted file
	   system), not a reason to bounce mail as "unknown user". */
	ret = userdb_load(users_file, lda ? USERDB_LOAD_DEFAULT :
			  USERDB_LOAD_MISSING_OK, &db, &error);
	if (ret < 0) {
		ctl_error("%s", error);
		free(error);
		return store_setup_fail_code(setup, ret == USERDB_MALFORMED ?
					     CTL_EXIT_CONFIG : CTL_EXIT_IOERR);
	}
	found = userdb_lookup(db, setup->address) != NULL;
	userdb_free(&db);
	if (!found) {
		ctl_error("no such user: %s", setup->address);
		return CTL_EXIT_NOUSER;
	}
	return CTL_EXIT_OK;
}

/* store_setup_become_mail_user - root: drop to mail_user for good;
   mail_user: stay; anybody else: refuse */
static int store_setup_become_mail_user(struct store_setup *setup)
{
	const char *mail_user = setup->ctl->set->mail_user;
	struct passwd *pw;

	/* privilege_drop() looks the user up too, but exits with 78 when it
	   is unknown; an LDA must exit with 75 instead. */
	errno = 0;
	pw = getpwnam(mail_user);
	if (pw == NULL || pw->pw_uid == 0) {
		ctl_error("mail_user %s: %s", mail_user,
			  pw != NULL ? "must not be root" :
			  errno != 0 ? strerror(errno) : "no such user");
		return store_setup_fail_code(setup, CTL_EXIT_CONFIG);
	}
	if (geteuid() == 0) {
		privilege_drop(mail_user, NULL);
		return CTL_EXIT_OK;
	}
	if (geteuid() != pw->pw_uid) {
		ctl_error("spool commands must run as root or as mail_user %s "
			  "(uid %ld), not as uid %ld", mail_user,
			  (long)pw->pw_uid, (long)geteuid());
		return store_setup_fail_code(setup, CTL_EXIT_NOPERM);
	}
	return CTL_EXIT_OK;
}

/* store_setup_check_spool - the spool must exist and be a directory we
   can reach; we never create it (see store-setup.h) */
static int store_setup_check_spool(const struct store_setup *setup)
{
	const char *spool_dir = setup->ctl->set->spool_dir;
	struct stat st;

	if (stat(spool_dir, &st) < 0) {
		ctl_error("spool_dir %s: %s%s", spool_dir, strerror(errno),
			  errno == ENOENT ? " (is its file system mounted?)" : "");
		return CTL_EXIT_TEMPFAIL;
	}
	if (!S_ISDIR(st.st_mode)) {
		ctl_error("spool_dir %s: not a directory", spool_dir);
		return store_setup_fail_code(setup, CTL_EXIT_CONFIG);
	}
	return CTL_EXIT_OK;
}

/* store_setup_start_locks - pool, loop and lock client */
static int store_setup_start_locks(struct store_setup *setup)
{
	const struct settings *set = setup->ctl->set;
	struct ioloop_settings loop_set = { .name = "ctl" };
	struct lock_client_settings lock_set = {
		.backend = set->lock_backend,
		.spool_dir = set->spool_dir,
	};
	char *error;

	setup->pool = iopool_create(STORE_SETUP_POOL_THREADS);
	loop_set.pool = setup->pool;
	setup->loop = ioloop_create(&loop_set);
	lock_set.dispatch_loop = setup->loop;
	lock_set.pool = setup->pool;
	setup->locks = lock_client_create(&lock_set, &error);
	if (setup->locks == NULL) {
		/* The message names the backend already. */
		ctl_error("%s", error);
		free(error);
		return CTL_EXIT_TEMPFAIL;
	}
	return CTL_EXIT_OK;
}

/* store_setup_open_user - the store and the user's spool */
static int store_setup_open_user(struct store_setup *setup)
{
	const struct settings *set = setup->ctl->set;
	struct store_settings store_set = {
		.spool_dir = set->spool_dir,
		.node_name = set->node_name,
		.locks = setup->locks,
	};
	bool lda = (setup->flags & STORE_SETUP_FLAG_LDA) != 0;
	const char *reason = NULL;
	unsigned int flags = 0;
	int ret;

	setup->sio = sio_create_sync(setup->loop);
	setup->store = store_create(&store_set);
	if (setup->store == NULL) {
		ctl_error("cannot open the mail store in %s", set->spool_dir);
		return CTL_EXIT_TEMPFAIL;
	}
	if ((setup->flags & STORE_SETUP_FLAG_CREATE) != 0)
		flags |= STORE_USER_CREATE;
	ret = store_user_open(setup->store, setup->sio, setup->address, flags,
			      &setup->user, &reason);
	if (ret == STORE_OK)
		return CTL_EXIT_OK;
	if (reason == NULL)
		reason = store_result_name(ret);
	switch (ret) {
	case STORE_ERR_NOTFOUND:
		ctl_error("%s has no mail spool yet (nothing was delivered "
			  "to it)", setup->address);
		return store_setup_fail_code(setup, CTL_EXIT_FAILURE);
	case STORE_ERR_BADNAME:
		ctl_error("%s: unusable as a mail spool name: %s",
			  setup->address, reason);
		return lda ? CTL_EXIT_NOUSER : CTL_EXIT_DATAERR;
	default:
		ctl_error("%s: cannot open the mail spool: %s",
			  setup->address, reason);
		return store_setup_fail_code(setup,
					     store_setup_exit_code(ret));
	}
}

int store_setup_open(struct ctl *ctl, const char *address,
		     unsigned int flags, struct store_setup **setup_r)
{
	struct store_setup *setup = mem_zalloc(sizeof(*setup));
	bool dlm = ctl->set->lock_backend == SETTINGS_LOCK_DLM;
	int ret;

	setup->ctl = ctl;
	setup->flags = flags;
	*setup_r = NULL;
	ret = store_setup_find_user(setup, address);
	/* Creating a DLM lockspace needs root; nothing here writes to the
	   spool. Every other backend starts after the drop: fcntl creates
	   SPOOL/.locks. */
	if (ret == CTL_EXIT_OK && dlm)
		ret = store_setup_start_locks(setup);
	if (ret == CTL_EXIT_OK)
		ret = store_setup_become_mail_user(setup);
	if (ret == CTL_EXIT_OK)
		ret = store_setup_check_spool(setup);
	if (ret == CTL_EXIT_OK && !dlm)
		ret = store_setup_start_locks(setup);
	if (ret == CTL_EXIT_OK)
		ret = store_setup_open_user(setup);
	if (ret != CTL_EXIT_OK) {
		store_setup_close(&setup);
		return ret;
	}
	*setup_r = setup;
	return CTL_EXIT_OK;
}

int store_setup_open_spool(struct ctl *ctl, struct store_setup **setup_r)
{
	struct store_setup *setup = mem_zalloc(sizeof(*setup));
	bool dlm = ctl->set->lock_backend == SETTINGS_LOCK_DLM;
	int ret = CTL_EXIT_OK;

	setup->ctl = ctl;
	*setup_r = NULL;
	/* The same order as store_setup_open(), for the same reasons. */
	if (dlm)
		ret = store_setup_start_locks(setup);
	if (ret == CTL_EXIT_OK)
		ret = store_setup_become_mail_user(setup);
	if (ret == CTL_EXIT_OK)
		ret = store_setup_check_spool(setup);
	if (ret == CTL_EXIT_OK && !dlm)
		ret = store_setup_start_locks(setup);
	if (ret != CTL_EXIT_OK) {
		store_setup_close(&setup);
		return ret;
	}
	setup->sio = sio_create_sync(setup->loop);
	*setup_r = setup;
	return CTL_EXIT_OK;
}

/* store_setup_tick_done - end of one slice of store_setup_drain() */
static void store_setup_tick_done(struct io_request *req,
				  int result ATTR_UNUSED)
{
	ioloop_stop(req->context);
}

/* store_setup_drain - run the loop until no request is pending on it (a
   destroyed lock handle may leave a cancelled timer for one iteration).
   Returns false if some are still pending after the time limit. */
static bool store_setup_drain(struct ioloop *loop)
{
	struct io_request tick;

	for (unsigned int i = 0; i < STORE_SETUP_DRAIN_TICKS &&
	     ioloop_pending_count(loop) > 0; i++) {
		io_request_init(&tick, store_setup_tick_done, loop);
		io_timeout(loop, &tick, STORE_SETUP_TICK_MSECS);
		/* Something else may stop the loop first: our tick must have
		   completed before its storage goes away. */
		while (io_request_is_pending(&tick))
			ioloop_run(loop);
	}
	return ioloop_pending_count(loop) == 0;
}

void store_setup_close(struct store_setup **_setup)
{
	struct store_setup *setup = *_setup;

	if (setup == NULL)
		return;
	*_setup = NULL;
	if (setup->user != NULL)
		store_user_close(&setup->user);
	if (setup->store != NULL)
		store_destroy(&setup->store);
	if (setup->sio != NULL)
		sio_destroy(&setup->sio);
	/* Every lock handle is gone with the user and the store. */
	if (setup->locks != NULL)
		lock_client_destroy(&setup->locks);
	if (setup->loop != NULL) {
		if (store_setup_drain(setup->loop)) {
			ioloop_destroy(&setup->loop);
		} else {
			/* Destroying would panic; the process exits anyway. */
			log_warn("%u I/O requests still pending at exit",
				 ioloop_pending_count(setup->loop));
			setup->loop = NULL;
			setup->pool = NULL;
		}
	}
	if (setup->pool != NULL)
		iopool_destroy(&setup->pool);
	free(setup->address);
	free(setup);
}

int store_setup_exit_code(int result)
{
	switch (result) {
	case STORE_OK:
		return CTL_EXIT_OK;
	case STORE_ERR_NOTFOUND:
	case STORE_ERR_EXISTS:
	case STORE_ERR_OVERQUOTA:
	case STORE_ERR_LIMIT:
	case STORE_ERR_CANNOT:
		return CTL_EXIT_FAILURE;
	case STORE_ERR_BADNAME:
		return CTL_EXIT_DATAERR;
	case STORE_ERR_TEMP:
		return CTL_EXIT_TEMPFAIL;
	case STORE_ERR_NOPERM:
		return CTL_EXIT_NOPERM;
	case STORE_ERR_CORRUPT:
		return CTL_EXIT_INCONSISTENT;
	default:
		return CTL_EXIT_SOFTWARE;
	}
}

int store_setup_error(const struct store_setup *setup, int result,
		      const char *what)
{
	const char *reason = store_user_error(setup->user);

	if (reason == NULL || reason[0] == '\0')
		reason = store_result_name(result);
	if (what != NULL)
		ctl_error("%s: %s: %s", setup->address, what, reason);
	else
		ctl_error("%s: %s", setup->address, reason);
	return store_setup_exit_code(result);
}

int store_setup_flush(void)
{
	if (fflush(stdout) == EOF || ferror(stdout)) {
		ctl_error("cannot write to standard output: %m");
		return CTL_EXIT_IOERR;
	}
	return CTL_EXIT_OK;
}

void store_setup_json_list_begin(const struct store_setup *setup,
				 struct json_writer *w, struct buffer *json,
				 const char *list_key)
{
	buffer_init(json, 0);
	json_init(w, json);
	json_object_begin(w);
	json_kv_string(w, "user", setup->address);
	json_key(w, list_key);
	json_array_begin(w);
}

int store_setup_print_json(struct buffer *json)
{
	buffer_append_byte(json, '\n');
	fwrite(json->data, 1, json->used, stdout);
	buffer_clear(json);
	return store_setup_flush();
}

int store_setup_report(const struct store_setup *setup, const char *result,
		       const char *text, const char *const *fields)
{
	struct json_writer w;
	struct buffer json;

	if (!setup->ctl->json) {
		printf("%s\n", text);
		return store_setup_flush();
	}
	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_kv_string(&w, "user", setup->address);
	for (; fields != NULL && fields[0] != NULL; fields += 2)
		json_kv_string(&w, fields[0], fields[1]);
	json_kv_string(&w, "result", result);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

char *store_setup_mailbox_name(const char *name)
{
	char *canonical;

	if (store_name_normalize(name, &canonical) != STORE_OK)
		return mem_strdup(name);
	return canonical;
}

/*
 * Tables
 */

void store_setup_table_init(struct store_setup_table *table,
			    const char *align)
{
	table->columns = (unsigned int)strlen(align);
	table->align = align;
	str_array_init(&table->cells);
}

void store_setup_table_add(struct store_setup_table *table, const char *cell)
{
	str_array_add(&table->cells, cell);
}

void store_setup_table_add_uint(struct store_setup_table *table,
				uint64_t value)
{
	str_array_add_owned(&table->cells,
			    mem_printf("%llu", (unsigned long long)value));
}

/* store_setup_text_width - columns a UTF-8 string takes on a terminal
   (one per code point: good enough for names in a table) */
static size_t store_setup_text_width(const char *text)
{
	size_t width = 0;

	for (const char *p = text; *p != '\0'; p++) {
		if (((unsigned char)*p & 0xc0) != 0x80)
			width++;
	}
	return width;
}

/* store_setup_table_row - one row of table into line */
static void store_setup_table_row(const struct store_setup_table *table,
				  const size_t *widths, size_t first,
				  struct buffer *line)
{
	const char *cell;
	size_t pad, len;

	buffer_reset(line);
	for (unsigned int col = 0; col < table->columns; col++) {
		cell = table->cells.items[first + col];
		pad = widths[col] - store_setup_text_width(cell);
		if (col > 0)
			buffer_append_str(line, "  ");
		if (table->align[col] == 'r') {
			for (size_t i = 0; i < pad; i++)
				buffer_append_byte(line, ' ');
		}
		buffer_append_str(line, cell);
		if (table->align[col] != 'r') {
			for (size_t i = 0; i < pad; i++)
				buffer_append_byte(line, ' ');
		}
	}
	len = line->used;
	while (len > 0 && line->data[len - 1] == ' ')
		len--;
	buffer_truncate(line, len);
	buffer_append_byte(line, '\n');
}

int store_setup_table_print(struct store_setup_table *table)
{
	size_t *widths = mem_calloc(table->columns, sizeof(*widths));
	size_t count = table->cells.count, width;
	struct buffer line;

	if (count % table->columns != 0)
		log_panic("store_setup_table_print: incomplete row");
	for (size_t i = 0; i < count; i++) {
		width = store_setup_text_width(table->cells.items[i]);
		if (width > widths[i % table->columns])
			widths[i % table->columns] = width;
	}
	buffer_init(&line, 0);
	for (size_t i = 0; i < count; i += table->columns) {
		store_setup_table_row(table, widths, i, &line);
		fwrite(line.data, 1, line.used, stdout);
	}
	buffer_clear(&line);
	free(widths);
	str_array_clear(&table->cells);
	return store_setup_flush();
}

/*
 * Command families
 */

/* store_setup_find_subcommand - a subcommand of family by name */
static const struct store_setup_subcommand *
store_setup_find_subcommand(const struct store_setup_family *family,
			    const char *name)
{
	for (size_t i = 0; i < family->subcommand_count; i++) {
		if (strcmp(family->subcommands[i].name, name) == 0)
			return &family->subcommands[i];
	}
	return NULL;
}

/* store_setup_long_options - family's options and --help (caller frees) */
static struct option *
store_setup_long_options(const struct store_setup_family *family)
{
	size_t count = 0;
	struct option *options;

	while (family->long_options != NULL &&
	       family->long_options[count].name != NULL)
		count++;
	options = mem_calloc(count + 2, sizeof(*options));
	if (count > 0)
		memcpy(options, family->long_options, count * sizeof(*options));
	options[count].name = "help";
	options[count].has_arg = no_argument;
	options[count].val = 'h';
	return options;
}

/* store_setup_parse_options - the subcommand's options (argv[0] is its
   name); *help_r for --help. Returns an exit code. */
static int store_setup_parse_options(const struct store_setup_family *family,
				     const struct store_setup_subcommand *sub,
				     int argc, char **argv, void *context,
				     bool *help_r)
{
	struct option *options = store_setup_long_options(family);
	int opt, ret = CTL_EXIT_OK;

	optind = 0;	/* glibc: start over, main.c already used getopt */
	opterr = 0;	/* our own messages name the command */
	while (ret == CTL_EXIT_OK &&
	       (opt = getopt_long(argc, argv, family->options_first ? "+:h" : ":h",
				  options, NULL)) != -1) {
		if (opt == 'h') {
			*help_r = true;
			break;
		}
		if (opt == '?' || opt == ':') {
			ctl_error("%s %s: %s '%s'", family->name, sub->name,
				  opt == '?' ? "unknown option" :
				  "missing argument for", argv[optind - 1]);
			ret = CTL_EXIT_USAGE;
		} else if (sub->options == NULL ||
			   strchr(sub->options, opt) == NULL) {
			ctl_error("%s %s: option '%s' does not apply here",
				  family->name, sub->name, argv[optind - 1]);
			ret = CTL_EXIT_USAGE;
		} else {
			ret = family->set_option(opt, optarg, context);
		}
	}
	free(options);
	return ret;
}

/* store_setup_run_subcommand - parse, open the spool, run */
static int store_setup_run_subcommand(struct ctl *ctl,
				      const struct store_setup_family *family,
				      const struct store_setup_subcommand *sub,
				      int argc, char **argv, void *context)
{
	struct store_setup *setup;
	bool help = false;
	int ret, count;

	ret = store_setup_parse_options(family, sub, argc, argv, context, &help);
	if (ret != CTL_EXIT_OK)
		return ret;
	if (help) {
		family->usage(stdout);
		return store_setup_flush();
	}
	count = argc - optind;
	if (count < sub->min_args || count > sub->max_args) {
		ctl_error("%s %s: wrong number of arguments", family->name,
			  sub->name);
		family->usage(stderr);
		return CTL_EXIT_USAGE;
	}
	ret = store_setup_open(ctl, argv[optind], sub->setup_flags, &setup);
	if (ret != CTL_EXIT_OK)
		return ret;
	ret = sub->run(setup, argv + optind, count, context);
	store_setup_close(&setup);
	return ret;
}

int store_setup_run_family(struct ctl *ctl,
			   const struct store_setup_family *family,
			   int argc, char **argv, void *context)
{
	const struct store_setup_subcommand *sub;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
			  strcmp(argv[1], "-h") == 0 ||
			  strcmp(argv[1], "help") == 0)) {
		family->usage(stdout);
		return store_setup_flush();
	}
	sub = argc < 2 ? NULL : store_setup_find_subcommand(family, argv[1]);
	if (sub == NULL) {
		if (argc >= 2)
			ctl_error("%s: unknown subcommand '%s'", family->name,
				  argv[1]);
		family->usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (ctl->set == NULL)
		log_panic("%s: settings not loaded", family->name);
	return store_setup_run_subcommand(ctl, family, sub, argc - 1, argv + 1,
					  context);
}
