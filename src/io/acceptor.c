/*
 * acceptor.c - keep an accept pending on a listening socket.
 */
#include "lib/lib.h"
#include "ioloop.h"
#include "acceptor.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* How long to pause when the process is out of descriptors or memory. */
#define ACCEPTOR_RETRY_MSECS 200

struct acceptor {
	struct ioloop *loop;		/* borrowed */
	int listen_fd;			/* borrowed */
	char *name;
	acceptor_callback_t *callback;
	void *context;
	void (*stopped)(void *context);
	bool stopping;
	struct io_request accept_req;
	struct io_request retry_timer;
	struct sockaddr_storage peer;
	socklen_t peer_len;
};

/* acceptor_arm - submit the next accept */
static void acceptor_arm(struct acceptor *acc)
{
	acc->peer_len = sizeof(acc->peer);
	io_accept(acc->loop, &acc->accept_req, acc->listen_fd,
		  (struct sockaddr *)&acc->peer, &acc->peer_len);
}

/* acceptor_finish - free once the kernel no longer holds a request */
static void acceptor_finish(struct acceptor *acc)
{
	if (io_request_is_pending(&acc->accept_req) ||
	    io_request_is_pending(&acc->retry_timer))
		return;
	if (acc->stopped != NULL)
		acc->stopped(acc->context);
	free(acc->name);
	free(acc);
}

/* acceptor_set_nodelay - mail protocols are request/response: a reply
   often goes out in more than one send (untagged lines, then the tagged
   one), and with Nagle's algorithm the second send waits for the
   client's delayed ACK (about 40 ms on Linux) - a 40 ms stall per
   command. Output is already batched in the connection's buffer, so
   small segments are not a concern. */
static void acceptor_set_nodelay(int fd, const struct sockaddr *peer)
{
	int on = 1;

	if (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)
		return;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0)
		log_debug("setsockopt(TCP_NODELAY): %s", strerror(errno));
}

static void acceptor_accepted(struct io_request *req, int result)
{
	struct acceptor *acc = req->context;

	if (result >= 0) {
		if (acc->stopping) {
			/* Raced with the cancel: nobody wants it now. */
			(void)close(result);
		} else {
			acceptor_set_nodelay(result,
					     (struct sockaddr *)&acc->peer);
			acc->callback(acc->context, result,
				      (struct sockaddr *)&acc->peer, acc->peer_len);
		}
	} else if (result == -EMFILE || result == -ENFILE ||
		   result == -ENOBUFS || result == -ENOMEM) {
		if (!acc->stopping) {
			log_warn("%s: accept: %s; pausing %d ms", acc->name,
				 strerror(-result), ACCEPTOR_RETRY_MSECS);
			io_timeout(acc->loop, &acc->retry_timer, ACCEPTOR_RETRY_MSECS);
			return;
		}
	} else if (result != -ECANCELED) {
		/* ECONNABORTED, EPROTO ...: one client gave up. */
		log_debug("%s: accept: %s", acc->name, strerror(-result));
	}
	if (acc->stopping)
		acceptor_finish(acc);
	else if (!io_request_is_pending(&acc->retry_timer))
		acceptor_arm(acc);
}

static void acceptor_retry(struct io_request *req, int result)
{
	struct acceptor *acc = req->context;

	if (acc->stopping)
		acceptor_finish(acc);
	else
		acceptor_arm(acc);
}

struct acceptor *acceptor_create(struct ioloop *loop, int listen_fd,
				 const char *name,
				 acceptor_callback_t *callback, void *context)
{
	struct acceptor *acc = mem_zalloc(sizeof(*acc));

	acc->loop = loop;
	acc->listen_fd = listen_fd;
	acc->name = mem_strdup(name);
	acc->callback = callback;
	acc->context = context;
	io_request_init(&acc->accept_req, acceptor_accepted, acc);
	io_request_init(&acc->retry_timer, acceptor_retry, acc);
	acceptor_arm(acc);
	return acc;
}

void acceptor_stop(struct acceptor **accp, void (*stopped)(void *context))
{
	struct acceptor *acc = *accp;

	*accp = NULL;
	if (acc == NULL)
		return;
	acc->stopping = true;
	acc->stopped = stopped;
	if (io_request_is_pending(&acc->accept_req))
		io_cancel(acc->loop, &acc->accept_req);
	if (io_request_is_pending(&acc->retry_timer))
		io_cancel(acc->loop, &acc->retry_timer);
	/* Nothing pending at all (cannot normally happen): finish now,
	   from the loop, so stopped() never runs inside our caller. */
	if (!io_request_is_pending(&acc->accept_req) &&
	    !io_request_is_pending(&acc->retry_timer))
		io_timeout(acc->loop, &acc->retry_timer, 0);
}
