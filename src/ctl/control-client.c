/*
 * control-client.c - one request/reply exchange with clustermaild.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "ctl.h"
#include "control-client.h"

#include <poll.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* Replies are small JSON documents; anything larger is a broken daemon. */
#define CONTROL_REPLY_MAX (1024 * 1024)

/* control_client_now_msecs - monotonic clock */
static uint64_t control_client_now_msecs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* control_client_read_line - read until a newline or the deadline */
static int control_client_read_line(int fd, uint64_t deadline,
				    struct buffer *reply, char **error_r)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t now = control_client_now_msecs();
		unsigned char *dest;
		ssize_t n;

		if (memchr(buffer_cstr(reply), '\n', reply->used) != NULL)
			return CTL_EXIT_OK;
		if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) == 0) {
			*error_r = mem_printf("no reply from the daemon in time");
			return CTL_EXIT_TEMPFAIL;
		}
		dest = buffer_reserve(reply, 4096);
		if (dest == NULL) {
			*error_r = mem_printf("reply from the daemon too large");
			return CTL_EXIT_IOERR;
		}
		n = read(fd, dest, 4096);
		if (n <= 0) {
			*error_r = mem_printf("control socket: %s", n == 0 ?
					      "closed by the daemon" : strerror(errno));
			return CTL_EXIT_IOERR;
		}
		buffer_commit(reply, (size_t)n);
	}
}

/* control_client_connect_error - map a connect() failure to an exit code */
static int control_client_connect_error(const char *socket_path, int err,
					char **error_r)
{
	*error_r = mem_printf("cannot reach clustermaild at %s: %s%s", socket_path,
			      strerror(err),
			      err == ENOENT || err == ECONNREFUSED ?
			      " (is the daemon running for this node?)" : "");
	if (err == EACCES || err == EPERM)
		return CTL_EXIT_NOPERM;
	return err == ENOENT || err == ECONNREFUSED ? CTL_EXIT_UNAVAILABLE :
		CTL_EXIT_IOERR;
}

int control_client_request(const char *socket_path, const char *command,
			   unsigned int timeout_msecs, char **reply_r,
			   char **error_r)
{
	uint64_t deadline = control_client_now_msecs() + timeout_msecs;
	char *request = mem_printf("%s\n", command);
	size_t len = strlen(request);
	struct buffer reply;
	int fd, ret;

	fd = net_connect_unix(socket_path);
	if (fd < 0) {
		free(request);
		return control_client_connect_error(socket_path, errno, error_r);
	}
	if (write(fd, request, len) != (ssize_t)len) {
		*error_r = mem_printf("control socket %s: write: %s", socket_path,
				      strerror(errno));
		free(request);
		close(fd);
		return CTL_EXIT_IOERR;
	}
	free(request);
	buffer_init(&reply, CONTROL_REPLY_MAX);
	ret = control_client_read_line(fd, deadline, &reply, error_r);
	close(fd);
	if (ret != CTL_EXIT_OK) {
		buffer_clear(&reply);
		return ret;
	}
	buffer_truncate(&reply, (size_t)((char *)memchr(reply.data, '\n', reply.used) -
					 (char *)reply.data));
	*reply_r = buffer_export(&reply, NULL);
	return CTL_EXIT_OK;
}

bool control_client_hint(const char *socket_path, const char *command,
			 unsigned int timeout_msecs)
{
	char *reply = NULL, *error = NULL;
	bool ok;

	if (control_client_request(socket_path, command, timeout_msecs, &reply,
				   &error) != CTL_EXIT_OK) {
		free(error);
		return false;
	}
	ok = strstr(reply, "\"error\"") == NULL;
	free(reply);
	return ok;
}

int control_client_json(const char *socket_path, const char *command,
			unsigned int timeout_msecs, json_visit_t *visit,
			void *context, bool print_reply)
{
	char *reply, *error;
	const char *parse_error;
	int ret;

	ret = control_client_request(socket_path, command, timeout_msecs,
				     &reply, &error);
	if (ret != CTL_EXIT_OK) {
		ctl_error("%s", error);
		free(error);
		return ret;
	}
	if (json_parse(reply, visit, context, &parse_error) < 0) {
		ctl_error("malformed reply from the daemon: %s", parse_error);
		free(reply);
		return CTL_EXIT_IOERR;
	}
	if (print_reply)
		printf("%s\n", reply);
	free(reply);
	return CTL_EXIT_OK;
}
