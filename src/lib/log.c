/*
 * log.c - one line per event, to stderr or syslog.
 */
#include "lib/lib.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Longest line we write; longer messages are cut with "..." (a log line
   must never be able to grow without bound from client input). */
#define LOG_LINE_MAX 4096

static const char *log_ident = "clustermail";
static enum log_target log_target = LOG_TARGET_STDERR;
static atomic_int log_min_level = LOG_LEVEL_INFO;

static const char *const log_level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_NOTICE] = "notice",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_FATAL] = "fatal",
	[LOG_LEVEL_PANIC] = "panic",
};

static const int log_syslog_priorities[] = {
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_NOTICE] = LOG_NOTICE,
	[LOG_LEVEL_WARNING] = LOG_WARNING,
	[LOG_LEVEL_ERROR] = LOG_ERR,
	[LOG_LEVEL_FATAL] = LOG_CRIT,
	[LOG_LEVEL_PANIC] = LOG_ALERT,
};

void log_open(const char *ident, enum log_target target)
{
	log_ident = ident;
	log_target = target;
	if (target == LOG_TARGET_SYSLOG)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_min_level, (int)level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&log_min_level);
}

bool log_level_enabled(enum log_level level)
{
	return (int)level >= atomic_load(&log_min_level);
}

int log_level_parse(const char *name, enum log_level *level_r)
{
	if (strcmp(name, "warn") == 0) {
		*level_r = LOG_LEVEL_WARNING;
		return 0;
	}
	for (int i = LOG_LEVEL_DEBUG; i <= LOG_LEVEL_ERROR; i++) {
		if (strcmp(name, log_level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *log_level_name(enum log_level level)
{
	if ((unsigned int)level >= N_ELEMENTS(log_level_names))
		return "unknown";
	return log_level_names[level];
}

/* log_format_time - ISO 8601 UTC with milliseconds */
static void log_format_time(char *out, size_t size)
{
	struct timespec now;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000) % 1000);
}

/* log_sanitize - replace control characters so one event stays one line */
static void log_sanitize(char *text)
{
	for (unsigned char *p = (unsigned char *)text; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
}

void log_vmsg(enum log_level level, const char *id, const char *fmt,
	      va_list args)
{
	char message[LOG_LINE_MAX], line[LOG_LINE_MAX + 256], stamp[64];
	char id_buf[128];
	int len;

	if (!log_level_enabled(level) && level < LOG_LEVEL_FATAL)
		return;
	len = vsnprintf(message, sizeof(message), fmt, args);
	if (len >= (int)sizeof(message))
		memcpy(message + sizeof(message) - 4, "...", 4);
	log_sanitize(message);
	if (id != NULL) {
		snprintf(id_buf, sizeof(id_buf), "%s", id);
		log_sanitize(id_buf);
		id = id_buf;
	}

	if (log_target == LOG_TARGET_SYSLOG) {
		syslog(log_syslog_priorities[level], "%s: %s%s%s%s",
		       log_level_names[level], id != NULL ? "[" : "",
		       id != NULL ? id : "", id != NULL ? "] " : "", message);
		return;
	}
	log_format_time(stamp, sizeof(stamp));
	len = snprintf(line, sizeof(line), "%s %s[%ld]: %s: %s%s%s%s\n",
		       stamp, log_ident, (long)getpid(), log_level_names[level],
		       id != NULL ? "[" : "", id != NULL ? id : "",
		       id != NULL ? "] " : "", message);
	if (len >= (int)sizeof(line)) {
		len = (int)sizeof(line) - 1;
		line[len - 1] = '\n';
	}
	/* One write per line keeps lines from different threads whole. */
	if (write(STDERR_FILENO, line, (size_t)len) < 0) {
		/* Nowhere left to report this. */
	}
}

void log_msg(enum log_level level, const char *id, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	log_vmsg(level, id, fmt, args);
	va_end(args);
}

void log_fatal_status(int status, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	log_vmsg(LOG_LEVEL_FATAL, NULL, fmt, args);
	va_end(args);
	exit(status);
}

void log_fatal(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	log_vmsg(LOG_LEVEL_FATAL, NULL, fmt, args);
	va_end(args);
	exit(LOG_FATAL_STATUS);
}

void log_panic(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	log_vmsg(LOG_LEVEL_PANIC, NULL, fmt, args);
	va_end(args);
	abort();
}
