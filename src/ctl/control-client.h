#ifndef CM_CONTROL_CLIENT_H
#define CM_CONTROL_CLIENT_H

#include <stdbool.h>
/*
 * control-client - one request/reply exchange with a running clustermaild
 * over its control socket (see src/daemon/control.c for the protocol:
 * a command line in, one line of JSON out).
 */

/* Send command (no newline) to the daemon listening at socket_path and
   read its one-line JSON reply (without the newline; caller frees).
   Returns a CTL_EXIT_* code: OK; UNAVAILABLE when no daemon listens;
   NOPERM when the socket may not be opened; TEMPFAIL on timeout; IOERR on
   a broken exchange. On failure *error_r gets a message (caller frees). */
int control_client_request(const char *socket_path, const char *command,
			   unsigned int timeout_msecs, char **reply_r,
			   char **error_r);

/* A request whose JSON reply is visited scalar by scalar (json.h), and
   printed as it came when print_reply is set (--json). Failures are
   reported with ctl_error(); returns a CTL_EXIT_* code (IOERR for a
   malformed reply). */
#include "lib/json.h"
int control_client_json(const char *socket_path, const char *command,
			unsigned int timeout_msecs, json_visit_t *visit,
			void *context, bool print_reply);

/* Best effort, for hints the daemon can live without (a wake-up after a
   delivery, a queue flush): send command, wait at most timeout_msecs,
   ignore every failure. Returns true when the daemon answered without an
   error. */
bool control_client_hint(const char *socket_path, const char *command,
			 unsigned int timeout_msecs);

#endif
