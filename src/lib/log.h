#ifndef CM_LOG_H
#define CM_LOG_H
/*
 * log - one line per event, to stderr or syslog.
 *
 * Every line carries a level and, where the event concerns a session,
 * queue item or mailbox, that id in brackets:
 *
 *   2026-11-24T09:10:11.123Z clustermaild[123]: info: [imap-7f3a] login ok
 *
 * Three kinds of trouble (Postfix's habit):
 *   log_panic  - a broken invariant, i.e. a bug: logs and abort()s (core dump)
 *   log_fatal  - a broken environment (no memory, unreadable config, cannot
 *                bind): logs and exits with a status that says why
 *   log_error / log_warn - recoverable: the caller returns -1 and goes on
 *
 * Thread-safe: each line is written with a single write(2).
 */
#include <stdarg.h>
#include <stdbool.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_NOTICE,
	LOG_LEVEL_WARNING,
	LOG_LEVEL_ERROR,
	LOG_LEVEL_FATAL,
	LOG_LEVEL_PANIC,
};

enum log_target {
	LOG_TARGET_STDERR,
	LOG_TARGET_SYSLOG,
};

/* Exit status of log_fatal(): EX_OSERR from sysexits.h. */
#define LOG_FATAL_STATUS 71

/* Set the program name and where lines go (default: stderr, "clustermail"). */
void log_open(const char *ident, enum log_target target);
/* Lines below level are dropped (default: info). */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
bool log_level_enabled(enum log_level level);
/* Parse "debug", "info", "notice", "warning" (or "warn"), "error".
   Returns 0, or -1 for an unknown name. */
int log_level_parse(const char *name, enum log_level *level_r);
const char *log_level_name(enum log_level level);

/* Log one line. id may be NULL for process-wide events. */
void log_msg(enum log_level level, const char *id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, const char *id, const char *fmt,
	      va_list args) __attribute__((format(printf, 3, 0)));

#define log_debug(...)   log_msg(LOG_LEVEL_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LEVEL_INFO, NULL, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_LEVEL_NOTICE, NULL, __VA_ARGS__)
#define log_warn(...)    log_msg(LOG_LEVEL_WARNING, NULL, __VA_ARGS__)
#define log_error(...)   log_msg(LOG_LEVEL_ERROR, NULL, __VA_ARGS__)

#define log_id_debug(id, ...)  log_msg(LOG_LEVEL_DEBUG, (id), __VA_ARGS__)
#define log_id_info(id, ...)   log_msg(LOG_LEVEL_INFO, (id), __VA_ARGS__)
#define log_id_warn(id, ...)   log_msg(LOG_LEVEL_WARNING, (id), __VA_ARGS__)
#define log_id_error(id, ...)  log_msg(LOG_LEVEL_ERROR, (id), __VA_ARGS__)

/* Environment failure: log and exit(LOG_FATAL_STATUS). */
void log_fatal(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
/* Environment failure with a chosen exit status (e.g. 78 = EX_CONFIG). */
void log_fatal_status(int status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));
/* Bug: log and abort(). */
void log_panic(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

#endif
