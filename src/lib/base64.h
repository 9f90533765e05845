#ifndef CM_BASE64_H
#define CM_BASE64_H
/*
 * base64 - RFC 4648 base64 (the standard alphabet, with padding) for SASL
 * exchanges, and the SASL PLAIN message (RFC 4616) split into its parts.
 */
#include <stddef.h>

struct buffer;

/* Strict decode of in[0..len) (no white space, correct padding) appended
   to out. 0, or -1 on bad input. */
int base64_decode(const char *in, size_t len, struct buffer *out);
/* Encode data[0..len) appended to out. */
void base64_encode(const void *data, size_t len, struct buffer *out);

/* Split a decoded PLAIN message "authzid NUL authcid NUL password" in
   place (msg must have room for a terminating NUL at msg[len]). 0 with
   the three pointers set (authzid may be ""), -1 when malformed (missing
   parts, an empty authcid or password, or a NUL inside the password). */
int sasl_plain_split(char *msg, size_t len, const char **authzid_r,
		     const char **authcid_r, const char **password_r);

#endif
