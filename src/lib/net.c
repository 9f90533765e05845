/*
 * net.c - socket addresses, CIDR matching, listening sockets.
 */
#include "lib/lib.h"
#include "net.h"
#include "str.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static __thread char net_error_buf[256];

/* net_error - format an error into the thread-local buffer */
static const char *net_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *net_error(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(net_error_buf, sizeof(net_error_buf), fmt, args);
	va_end(args);
	return net_error_buf;
}

int net_parse_hostport(const char *spec, struct net_addr *addr_r,
		       const char **error_r)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *port_str;
	unsigned int port;
	size_t host_len;

	memset(addr_r, 0, sizeof(*addr_r));
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');

		if (end == NULL || end[1] != ':') {
			*error_r = net_error("'%s': expected [IPv6]:PORT", spec);
			return -1;
		}
		host_len = (size_t)(end - spec - 1);
		if (host_len == 0 || host_len >= sizeof(host)) {
			*error_r = net_error("'%s': bad IPv6 address", spec);
			return -1;
		}
		memcpy(host, spec + 1, host_len);
		host[host_len] = '\0';
		port_str = end + 2;
	} else {
		const char *colon = strrchr(spec, ':');

		if (colon == NULL || strchr(spec, ':') != colon) {
			*error_r = net_error("'%s': expected ADDR:PORT (IPv6 as [ADDR]:PORT)", spec);
			return -1;
		}
		host_len = (size_t)(colon - spec);
		if (host_len == 0 || host_len >= sizeof(host)) {
			*error_r = net_error("'%s': missing or bad address", spec);
			return -1;
		}
		memcpy(host, spec, host_len);
		host[host_len] = '\0';
		port_str = colon + 1;
	}
	if (str_to_uint(port_str, &port) < 0 || port == 0 || port > 65535) {
		*error_r = net_error("'%s': port must be 1-65535", spec);
		return -1;
	}
	if (spec[0] != '[') {
		struct sockaddr_in *sin = (struct sockaddr_in *)&addr_r->ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (strcmp(host, "*") == 0) {
			sin->sin_addr.s_addr = htonl(INADDR_ANY);
		} else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
			*error_r = net_error("'%s': '%s' is not an IPv4 address "
					     "(host names are not accepted)", spec, host);
			return -1;
		}
		addr_r->len = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&addr_r->ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
			*error_r = net_error("'%s': '%s' is not an IPv6 address", spec, host);
			return -1;
		}
		addr_r->len = sizeof(*sin6);
	}
	return 0;
}

/* net_format_ip - the IP part of sa into out (INET6_ADDRSTRLEN bytes) */
static void net_format_ip(const struct sockaddr *sa, char *out, size_t size)
{
	const void *ip = NULL;

	if (sa->sa_family == AF_INET)
		ip = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		ip = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	else if (sa->sa_family == AF_UNIX) {
		snprintf(out, size, "unix");
		return;
	}
	if (ip == NULL || inet_ntop(sa->sa_family, ip, out, (socklen_t)size) == NULL)
		snprintf(out, size, "?");
}

const char *net_ip_str(const struct sockaddr *sa, char out[NET_ADDR_STRLEN])
{
	net_format_ip(sa, out, NET_ADDR_STRLEN);
	return out;
}

uint16_t net_addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

const char *net_addr_str(const struct sockaddr *sa, char out[NET_ADDR_STRLEN])
{
	char ip[INET6_ADDRSTRLEN];

	net_format_ip(sa, ip, sizeof(ip));
	if (sa->sa_family == AF_INET6)
		snprintf(out, NET_ADDR_STRLEN, "[%s]:%u", ip, net_addr_port(sa));
	else if (sa->sa_family == AF_INET)
		snprintf(out, NET_ADDR_STRLEN, "%s:%u", ip, net_addr_port(sa));
	else
		snprintf(out, NET_ADDR_STRLEN, "%s", ip);
	return out;
}

int net_cidr_parse(const char *spec, struct net_cidr *cidr_r,
		   const char **error_r)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(spec, '/');
	size_t host_len = slash != NULL ? (size_t)(slash - spec) : strlen(spec);
	unsigned int max_prefix;

	memset(cidr_r, 0, sizeof(*cidr_r));
	if (host_len == 0 || host_len >= sizeof(host)) {
		*error_r = net_error("'%s': not an IP network", spec);
		return -1;
	}
	memcpy(host, spec, host_len);
	host[host_len] = '\0';
	if (inet_pton(AF_INET, host, cidr_r->addr) == 1) {
		cidr_r->family = AF_INET;
		max_prefix = 32;
	} else if (inet_pton(AF_INET6, host, cidr_r->addr) == 1) {
		cidr_r->family = AF_INET6;
		max_prefix = 128;
	} else {
		*error_r = net_error("'%s': '%s' is not an IP address", spec, host);
		return -1;
	}
	cidr_r->prefix = max_prefix;
	if (slash != NULL &&
	    (str_to_uint(slash + 1, &cidr_r->prefix) < 0 ||
	     cidr_r->prefix > max_prefix)) {
		*error_r = net_error("'%s': prefix length must be 0-%u", spec, max_prefix);
		return -1;
	}
	/* Clear host bits so matching is a plain prefix compare. */
	for (unsigned int bit = cidr_r->prefix; bit < max_prefix; bit++)
		cidr_r->addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
	return 0;
}

/* net_prefix_equal - compare the first prefix bits of two addresses */
static bool net_prefix_equal(const uint8_t *a, const uint8_t *b,
			     unsigned int prefix)
{
	unsigned int bytes = prefix / 8, bits = prefix % 8;

	if (memcmp(a, b, bytes) != 0)
		return false;
	if (bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - bits));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool net_cidr_match(const struct net_cidr *cidr, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		if (cidr->family != AF_INET)
			return false;
		return net_prefix_equal(cidr->addr,
					(const uint8_t *)&sin->sin_addr,
					cidr->prefix);
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *ip = sin6->sin6_addr.s6_addr;

		if (cidr->family == AF_INET6)
			return net_prefix_equal(cidr->addr, ip, cidr->prefix);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			return net_prefix_equal(cidr->addr, ip + 12, cidr->prefix);
	}
	return false;
}

/* 100 ms apart: 10 s for a port held by a process just killed. */
#define NET_BIND_RETRIES 100

int net_listen_tcp(const struct net_addr *addr, int backlog,
		   const char **error_r)
{
	char name[NET_ADDR_STRLEN];
	int fd, ret, one = 1;

	fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = net_error("socket(): %s", strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr->ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	/* A daemon that was just killed (a crash, SIGKILL from a cluster
	   manager) may still hold its listeners for a moment: io_uring
	   tears down a dead process's ring, and drops the files its
	   pending accepts hold, asynchronously after the process is gone -
	   seconds on a loaded or slow machine. Wait for that instead of
	   failing the restart, saying so once. */
	for (int tries = 0; ; tries++) {
		struct timespec pause = { 0, 100 * 1000 * 1000 };

		ret = bind(fd, (const struct sockaddr *)&addr->ss, addr->len);
		if (ret == 0 || errno != EADDRINUSE || tries >= NET_BIND_RETRIES)
			break;
		if (tries == 10)
			log_info("%s is still in use; waiting up to %d s for it",
				 net_addr_str((const struct sockaddr *)&addr->ss, name),
				 NET_BIND_RETRIES / 10);
		(void)nanosleep(&pause, NULL);
	}
	if (ret < 0 || listen(fd, backlog) < 0) {
		*error_r = net_error("listen on %s: %s",
				     net_addr_str((const struct sockaddr *)&addr->ss, name),
				     strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int net_listen_unix(const char *path, unsigned int mode, int backlog,
		    const char **error_r)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		*error_r = net_error("unix socket path too long: %s", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	/* Remove a stale socket left by a crash, but never a regular file. */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			*error_r = net_error("%s exists and is not a socket", path);
			return -1;
		}
		fd = net_connect_unix(path);
		if (fd >= 0) {
			close(fd);
			*error_r = net_error("%s: another daemon is already listening", path);
			return -1;
		}
		(void)unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = net_error("socket(AF_UNIX): %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, mode) < 0 || listen(fd, backlog) < 0) {
		*error_r = net_error("listen on %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int net_connect_unix(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}
