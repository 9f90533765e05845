#ifndef CM_AUTH_AUTHDB_H
#define CM_AUTH_AUTHDB_H
/*
 * authdb - the login check shared by IMAP, POP3 and SMTP AUTH.
 *
 * Process-wide and thread-safe. It keeps the users file loaded and
 * reloads it when the file changes (its inode, size or mtime; one stat
 * per login), and it counts failed logins per client IP in a bounded
 * table (a 10-minute window) so that a protocol can refuse an address
 * that keeps guessing.
 *
 * authdb_verify() is BLOCKING (file I/O and crypt, which is slow on
 * purpose): the daemon runs it on its blocking pool, never on a loop
 * thread. The failure delay (auth_failure_delay) is the caller's job, as
 * a timer on its loop.
 *
 * An unknown user and a wrong password give the same result and take the
 * same time: for an unknown user the password is checked against a dummy
 * hash of the default scheme.
 */
#include <stdbool.h>
#include <stdint.h>

/* Window over which failures per IP are counted. */
#define AUTHDB_FAILURE_WINDOW_SECS 600
/* Addresses tracked at once (the oldest entry is dropped when full). */
#define AUTHDB_FAILURE_TABLE_SIZE 4096

enum authdb_result {
	AUTHDB_TEMPFAIL = -1,	/* users file unreadable/malformed: log says why */
	AUTHDB_FAILED = 0,	/* unknown user, wrong password, locked */
	AUTHDB_OK = 1,
};

/* Check address/password against users_file. On AUTHDB_OK *user_r is the
   canonical (lowercase) address (caller frees). *reason_r gets a static
   text for the log (never shown to the client). */
enum authdb_result authdb_verify(const char *users_file, const char *address,
				 const char *password, char **user_r,
				 const char **reason_r);

/* authdb_verify() packaged for a blocking pool (ioloop_run_blocking(),
   linesession_run_blocking()): fill the inputs, run authdb_verify_job()
   there with the job as its argument, read the results on the loop. */
struct authdb_verify_job {
	const char *users_file, *address, *password;	/* in */
	enum authdb_result result;			/* out */
	char *user;		/* out: canonical address on OK (caller frees) */
	const char *reason;	/* out: static text for the log */
};
int authdb_verify_job(void *job);

/* Is address (any case) a user of users_file? 1 yes, 0 no, -1 the file
   is unavailable (logged). BLOCKING like authdb_verify(). For mail
   delivery (SMTP RCPT, LMTP, the queue runner), not for logins. */
int authdb_user_exists(const char *users_file, const char *address);
/* Has ip failed max_failures times within the window? (0 = no limit) */
bool authdb_ip_blocked(const char *ip, unsigned int max_failures);
/* Count one failed login from ip. */
void authdb_ip_failed(const char *ip);
/* Forget every counter and the loaded users file (tests, shutdown). */
void authdb_reset(void);

#endif
