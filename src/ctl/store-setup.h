#ifndef CM_CTL_STORE_SETUP_H
#define CM_CTL_STORE_SETUP_H
/*
 * store-setup - the plumbing every spool command of clustermailctl shares
 * (deliver, mailbox, index, quota, acl): from the loaded settings to an
 * open struct store_user, and back.
 *
 * store_setup_open() does, in this order:
 *
 *   1. validate the address and look it up in the users file
 *      (unknown user: 67);
 *   2. become mail_user: started as root, drop privileges for good with
 *      privilege_drop(); started as mail_user, stay; started as anybody
 *      else, refuse - files that person created would belong to the wrong
 *      user, and the daemon could not touch them later;
 *   3. check that spool_dir exists (a missing spool usually means a
 *      cluster file system that is not mounted: never create it);
 *   4. create the blocking pool, the event loop (only used to wait for
 *      locks), the lock client, a synchronous sio and the store, and open
 *      the user's spool.
 *
 * Nothing touches the spool before step 2, so no file on the spool is ever
 * owned by root. The one exception to the order is the dlm lock backend:
 * creating the DLM lockspace needs CAP_SYS_ADMIN, so with lock_backend =
 * dlm the pool, loop and lock client are made before the drop (none of
 * them writes to the spool).
 *
 * Exit codes. Every failure prints one line on stderr and returns a
 * CTL_EXIT_* code. The deliver command is an LDA: for it, everything that
 * is not clearly permanent is CTL_EXIT_TEMPFAIL (75), so that the MTA
 * keeps the message and tries again, where the admin commands report the
 * precise sysexits(3) code (STORE_SETUP_FLAG_LDA).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/str.h"
#include "maildir/store.h"

struct ctl;
struct buffer;
struct json_writer;
struct option;

/* Create the user's spool root and INBOX if missing (deliver, and the
   commands that change something). Without it, a user whose spool does
   not exist yet is an error (exit 1). */
#define STORE_SETUP_FLAG_CREATE	0x1
/* Exit codes for an LDA (see above); missing users file = TEMPFAIL. */
#define STORE_SETUP_FLAG_LDA	0x2

struct store_setup {
	struct ctl *ctl;		/* borrowed */
	unsigned int flags;		/* STORE_SETUP_FLAG_* */
	char *address;			/* owned; normalized (lower case) */
	struct iopool *pool;		/* owned */
	struct ioloop *loop;		/* owned; only for lock waits */
	struct lock_client *locks;	/* owned */
	struct sio *sio;		/* owned */
	struct store *store;		/* owned */
	struct store_user *user;	/* owned */
};

/* Set up for the user at address. Returns CTL_EXIT_OK with *setup_r set,
   or an exit code (the error has been printed) with *setup_r NULL. */
int store_setup_open(struct ctl *ctl, const char *address,
		     unsigned int flags, struct store_setup **setup_r);
/* The spool without a user (the queue commands): steps 2 to 4 above
   except the store; setup->address, store and user stay NULL. Returns
   CTL_EXIT_OK with *setup_r set, or an exit code (printed). */
int store_setup_open_spool(struct ctl *ctl, struct store_setup **setup_r);
/* Close the user, the store, the locks and the loop in the right order;
   sets *setup = NULL. NULL is allowed. */
void store_setup_close(struct store_setup **setup);

/* Print "ADDRESS: what: reason" for a failed store call (reason from
   store_user_error()) and return the exit code for result. what may be
   NULL. */
int store_setup_error(const struct store_setup *setup, int result,
		      const char *what);
/* The exit code for a store result (admin commands; deliver has its own
   table in cmd-deliver.c). */
int store_setup_exit_code(int result);

/* Start the JSON document most listings share: json initialised and
   {"user": ADDRESS, LIST_KEY: [ written; the caller adds the items,
   closes the array and the object, and prints it. */
void store_setup_json_list_begin(const struct store_setup *setup,
				 struct json_writer *w, struct buffer *json,
				 const char *list_key);

/* Flush stdout; an error writing it is CTL_EXIT_IOERR (printed). */
int store_setup_flush(void);
/* Print a finished JSON document and a newline; clears json. */
int store_setup_print_json(struct buffer *json);

/* Announce a completed change: text as one line, or with --json
   {"user": ADDRESS, KEY: VALUE ..., "result": result} where fields is a
   NULL-terminated list of key, value pairs (NULL allowed). */
int store_setup_report(const struct store_setup *setup, const char *result,
		       const char *text, const char *const *fields);
/* The canonical form of a mailbox name for output (caller frees); the
   name as given when it is invalid. */
char *store_setup_mailbox_name(const char *name);

/* ---- aligned text tables ------------------------------------------------ */

struct store_setup_table {
	unsigned int columns;
	const char *align;		/* per column: 'l' or 'r' */
	struct str_array cells;		/* owned; row by row */
};
void store_setup_table_init(struct store_setup_table *table,
			    const char *align);
/* Append the next cell (rows fill left to right). */
void store_setup_table_add(struct store_setup_table *table,
			   const char *cell);
void store_setup_table_add_uint(struct store_setup_table *table,
				uint64_t value);
/* Print with columns padded to their widest cell (two blanks between
   columns, no trailing blanks), free the cells, flush: an exit code. */
int store_setup_table_print(struct store_setup_table *table);

/* ---- command families ----------------------------------------------------
 * "mailbox", "index", "quota" and "acl" are families of subcommands that
 * all take USER first. store_setup_run_family() parses the command line,
 * opens the user's spool and runs the subcommand.
 */

struct store_setup_subcommand {
	const char *name;		/* "create" */
	/* Arguments after the subcommand name, USER included. */
	int min_args, max_args;
	unsigned int setup_flags;	/* STORE_SETUP_FLAG_* */
	/* The options it takes: their getopt values ("sS"); NULL = none. */
	const char *options;
	/* args[0] is USER; count >= min_args. Returns an exit code. */
	int (*run)(struct store_setup *setup, char **args, int count,
		   void *context);
};

struct store_setup_family {
	const char *name;		/* "mailbox" */
	void (*usage)(FILE *out);
	/* Long options of all subcommands (each with a short value in
	   .val), NULL-terminated; NULL if none. --help is added. */
	const struct option *long_options;
	/* Store one parsed option in context; returns an exit code. */
	int (*set_option)(int opt, const char *value, void *context);
	/* Stop at the first argument that is not an option, so that ACL
	   rights such as "-w" stay arguments. */
	bool options_first;
	const struct store_setup_subcommand *subcommands;
	size_t subcommand_count;
};

/* argv[0] is the family's name. Returns an exit code. */
int store_setup_run_family(struct ctl *ctl,
			   const struct store_setup_family *family,
			   int argc, char **argv, void *context);

#endif
