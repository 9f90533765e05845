/*
 * http.c - the metrics endpoint: GET /metrics (Prometheus text format
 * 0.0.4) and GET /health, on the main loop.
 *
 * Deliberately minimal HTTP/1.x: one request per connection, answered with
 * "Connection: close". Requests are bounded (8 KiB of headers) and must
 * arrive within a few seconds, so a scraper that misbehaves cannot hold
 * memory or sockets for long.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "io/acceptor.h"
#include "io/connection.h"
#include "io/ioloop.h"
#include "daemon.h"

#include <stdio.h>

#define HTTP_REQUEST_MAX 8192
#define HTTP_TIMEOUT_MSECS 10000

static struct ioloop *http_loop;
static struct acceptor *http_acceptor;
static unsigned int http_client_seq;

/* http_respond - write a whole response and close */
static void http_respond(struct connection *conn, int status,
			 const char *reason, const char *content_type,
			 const struct buffer *body, bool head_only)
{
	struct buffer out;

	buffer_init(&out, 0);
	buffer_printf(&out, "HTTP/1.1 %d %s\r\n"
		      "Content-Type: %s\r\n"
		      "Content-Length: %zu\r\n"
		      "Cache-Control: no-store\r\n"
		      "Connection: close\r\n\r\n",
		      status, reason, content_type, body->used);
	if (!head_only)
		buffer_append(&out, body->data, body->used);
	if (connection_write(conn, out.data, out.used) < 0)
		connection_abort(conn, "response larger than the output limit");
	else
		connection_close(conn, "response sent");
	buffer_clear(&out);
}

/* http_respond_text - a short text/plain response */
static void http_respond_text(struct connection *conn, int status,
			      const char *reason, const char *text,
			      bool head_only)
{
	struct buffer body;

	buffer_init(&body, 0);
	buffer_append_str(&body, text);
	http_respond(conn, status, reason, "text/plain; charset=utf-8", &body,
		     head_only);
	buffer_clear(&body);
}

/* http_route - answer a parsed request line */
static void http_route(struct connection *conn, const char *method,
		       char *path)
{
	bool head_only = strcmp(method, "HEAD") == 0;
	char *query = strchr(path, '?');

	if (query != NULL)
		*query = '\0';
	if (!head_only && strcmp(method, "GET") != 0) {
		http_respond_text(conn, 405, "Method Not Allowed",
				  "only GET and HEAD are supported\n", false);
	} else if (strcmp(path, "/metrics") == 0) {
		struct buffer body;

		buffer_init(&body, 0);
		metrics_format(&body);
		http_respond(conn, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
			     &body, head_only);
		buffer_clear(&body);
	} else if (strcmp(path, "/health") == 0) {
		if (daemon_is_draining())
			http_respond_text(conn, 503, "Service Unavailable",
					  "draining\n", head_only);
		else
			http_respond_text(conn, 200, "OK", "ok\n", head_only);
	} else {
		http_respond_text(conn, 404, "Not Found",
				  "try /metrics or /health\n", head_only);
	}
}

/* http_parse_request_line - "METHOD SP PATH SP HTTP/1.x"; 0 or -1 */
static int http_parse_request_line(char *line, char **method_r, char **path_r)
{
	char *sp1 = strchr(line, ' '), *sp2;

	if (sp1 == NULL)
		return -1;
	*sp1 = '\0';
	sp2 = strchr(sp1 + 1, ' ');
	if (sp2 == NULL || !str_begins_with(sp2 + 1, "HTTP/1."))
		return -1;
	*sp2 = '\0';
	*method_r = line;
	*path_r = sp1 + 1;
	return **path_r == '/' ? 0 : -1;
}

static void http_input(struct connection *conn)
{
	struct buffer *input = connection_input(conn);
	const char *text = buffer_cstr(input);
	char *line, *method, *path;

	if (connection_is_closing(conn)) {
		buffer_reset(input);
		return;
	}
	if (memchr(input->data, '\0', input->used) != NULL) {
		http_respond_text(conn, 400, "Bad Request", "bad request\n", false);
		return;
	}
	if (strstr(text, "\r\n\r\n") == NULL && strstr(text, "\n\n") == NULL) {
		if (input->used >= HTTP_REQUEST_MAX)
			http_respond_text(conn, 431, "Request Header Fields Too Large",
					  "request too large\n", false);
		return;
	}
	metrics_http_request();
	line = mem_strndup(text, strcspn(text, "\r\n"));
	buffer_reset(input);
	if (http_parse_request_line(line, &method, &path) < 0)
		http_respond_text(conn, 400, "Bad Request", "bad request\n", false);
	else
		http_route(conn, method, path);
	free(line);
}

static void http_destroyed(struct connection *conn, const char *reason)
{
	log_id_debug(connection_id(conn), "http client gone: %s", reason);
}

static const struct connection_callbacks http_callbacks = {
	.input = http_input,
	.destroyed = http_destroyed,
};

static void http_accepted(void *context, int fd, const struct sockaddr *peer,
			  socklen_t peer_len)
{
	struct connection_settings set = {
		.input_limit = HTTP_REQUEST_MAX,
		.idle_timeout_msecs = HTTP_TIMEOUT_MSECS,
		.close_timeout_msecs = HTTP_TIMEOUT_MSECS,
	};
	char id[32];

	snprintf(id, sizeof(id), "http-%u", ++http_client_seq);
	set.id = id;
	(void)connection_create(http_loop, fd, peer, peer_len, &set,
				&http_callbacks, NULL);
}

void http_start(struct ioloop *loop, int listen_fd)
{
	http_loop = loop;
	http_acceptor = acceptor_create(loop, listen_fd, "metrics endpoint",
					http_accepted, NULL);
}

void http_stop(void)
{
	acceptor_stop(&http_acceptor, NULL);
}
