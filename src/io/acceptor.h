#ifndef CM_ACCEPTOR_H
#define CM_ACCEPTOR_H
/*
 * acceptor - keep an accept pending on a listening socket.
 *
 * Each accepted socket is handed to the callback; the accept is then
 * re-armed. Running out of file descriptors (EMFILE/ENFILE) or memory
 * pauses accepting briefly instead of spinning; errors that concern one
 * client (ECONNABORTED ...) are skipped.
 *
 * acceptor_stop() cancels the pending accept; the acceptor frees itself
 * once the kernel has given the request back, then calls the stopped
 * callback. The listening socket is borrowed and never closed here.
 */
#include <sys/socket.h>

struct acceptor;
struct ioloop;

/* fd: a connected socket (SOCK_NONBLOCK | SOCK_CLOEXEC), now owned by the
   callback. */
typedef void acceptor_callback_t(void *context, int fd,
				 const struct sockaddr *peer,
				 socklen_t peer_len);

/* Start accepting on listen_fd. name is used in log lines (copied). */
struct acceptor *acceptor_create(struct ioloop *loop, int listen_fd,
				 const char *name,
				 acceptor_callback_t *callback, void *context);
/* Stop; stopped(context) runs (on the loop) once nothing is pending any
   more; may be NULL. Sets *acceptor = NULL. */
void acceptor_stop(struct acceptor **acceptor,
		   void (*stopped)(void *context));

#endif
