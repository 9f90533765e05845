#ifndef CM_NET_H
#define CM_NET_H
/*
 * net - socket addresses: parse "ADDR:PORT" listen specs, print addresses,
 * match CIDR networks, open listening sockets.
 *
 * Error strings returned through error_r point to thread-local storage that
 * stays valid until the next net_* call in the same thread.
 */
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* "[ffff:...:255.255.255.255]:65535" plus NUL fits. */
#define NET_ADDR_STRLEN 64

struct net_addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

struct net_cidr {
	int family;		/* AF_INET or AF_INET6 */
	uint8_t addr[16];	/* network address, host bits cleared */
	unsigned int prefix;	/* 0..32 or 0..128 */
};

/* Parse "127.0.0.1:143", "[::1]:143", "*:143" (all IPv4) or "[::]:143".
   Host names are not accepted: listeners must not depend on DNS. */
int net_parse_hostport(const char *spec, struct net_addr *addr_r,
		       const char **error_r);
/* Format as "127.0.0.1:143" / "[::1]:143". Returns out. */
const char *net_addr_str(const struct sockaddr *sa, char out[NET_ADDR_STRLEN]);
/* Format the IP only ("127.0.0.1", "::1"). Returns out. */
const char *net_ip_str(const struct sockaddr *sa, char out[NET_ADDR_STRLEN]);
uint16_t net_addr_port(const struct sockaddr *sa);

/* Parse "10.0.0.0/8", "::1", "192.0.2.7" (a host is /32 or /128). */
int net_cidr_parse(const char *spec, struct net_cidr *cidr_r,
		   const char **error_r);
/* Is the address inside the network? IPv4-mapped IPv6 addresses
   (::ffff:a.b.c.d) match IPv4 networks. */
bool net_cidr_match(const struct net_cidr *cidr, const struct sockaddr *sa);

/* Create a listening TCP socket (SO_REUSEADDR, non-blocking, close-on-exec,
   IPV6_V6ONLY for IPv6). An address in use is tried again for about 5 s
   (a process killed a moment ago may still hold it). Returns fd, or -1
   with error_r set. */
int net_listen_tcp(const struct net_addr *addr, int backlog,
		   const char **error_r);
/* Create a listening unix stream socket at path (removing a stale socket
   file first) with the given mode. Returns fd, or -1 with error_r set. */
int net_listen_unix(const char *path, unsigned int mode, int backlog,
		    const char **error_r);
/* Connect a blocking unix stream socket. Returns fd or -1 (errno set). */
int net_connect_unix(const char *path);

#endif
