#ifndef CM_CTL_H
#define CM_CTL_H
/*
 * ctl.h - shared state and command table of clustermailctl.
 *
 * Each command family lives in cmd-NAME.c and exports one function
 * cmd_NAME(). Commands print human-readable text by default and one JSON
 * document with --json. Exit codes follow sysexits(3) so scripts and the
 * OCF agent can tell failures apart.
 */
#include <stdbool.h>
#include "lib/settings.h"

#define CTL_EXIT_OK		0
#define CTL_EXIT_FAILURE	1	/* the operation was refused or failed */
#define CTL_EXIT_INCONSISTENT	2	/* index check found inconsistencies */
#define CTL_EXIT_USAGE		64	/* EX_USAGE: bad command line */
#define CTL_EXIT_DATAERR	65	/* EX_DATAERR: bad input data */
#define CTL_EXIT_NOUSER		67	/* EX_NOUSER: no such user */
#define CTL_EXIT_UNAVAILABLE	69	/* EX_UNAVAILABLE: daemon not running */
#define CTL_EXIT_SOFTWARE	70	/* EX_SOFTWARE: internal error */
#define CTL_EXIT_OSERR		71	/* EX_OSERR */
#define CTL_EXIT_CANTCREAT	73	/* EX_CANTCREAT: cannot write a file */
#define CTL_EXIT_IOERR		74	/* EX_IOERR */
#define CTL_EXIT_TEMPFAIL	75	/* EX_TEMPFAIL */
#define CTL_EXIT_NOPERM		77	/* EX_NOPERM */
#define CTL_EXIT_CONFIG		78	/* EX_CONFIG: bad configuration */

struct ctl {
	const char *config_path;	/* -c, or the default path */
	const char *node;		/* --node, or NULL for the host's */
	bool json;			/* --json */
	struct settings *set;		/* loaded settings (owned by main.c) */
};

/* Print "clustermailctl: ..." to stderr. */
void ctl_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Command families. argv[0] is the command name ("user"). Return an exit
   code from the list above. */
int cmd_status(struct ctl *ctl, int argc, char **argv);
int cmd_reload(struct ctl *ctl, int argc, char **argv);
int cmd_user(struct ctl *ctl, int argc, char **argv);
/* The spool commands (see store-setup.h). */
int cmd_deliver(struct ctl *ctl, int argc, char **argv);
int cmd_mailbox(struct ctl *ctl, int argc, char **argv);
int cmd_index(struct ctl *ctl, int argc, char **argv);
int cmd_quota(struct ctl *ctl, int argc, char **argv);
int cmd_acl(struct ctl *ctl, int argc, char **argv);
/* The outbound queue on the shared spool (cmd-queue.c). */
int cmd_queue(struct ctl *ctl, int argc, char **argv);
/* Effective settings for scripts (cmd-config.c). */
int cmd_config(struct ctl *ctl, int argc, char **argv);
/* The cluster as this node sees it: CPG + pacemaker (cmd-cluster.c). */
int cmd_cluster(struct ctl *ctl, int argc, char **argv);
/* Deep health check through the daemon (cmd-probe.c). */
int cmd_probe(struct ctl *ctl, int argc, char **argv);

#endif
