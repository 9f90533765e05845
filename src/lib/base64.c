/*
 * base64.c - RFC 4648 base64 and the RFC 4616 PLAIN message layout.
 */
#include "lib/lib.h"
#include "buffer.h"
#include "base64.h"

#include <string.h>

static const char base64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_decode(const char *in, size_t len, struct buffer *out)
{
	uint32_t acc = 0;
	unsigned int bits = 0, pad = 0;

	if (len % 4 != 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		const char *pos;

		if (in[i] == '=') {
			if (i + 2 < len)
				return -1;
			pad++;
			continue;
		}
		if (pad > 0 || in[i] == '\0' ||
		    (pos = strchr(base64_alphabet, in[i])) == NULL)
			return -1;
		acc = (acc << 6) | (uint32_t)(pos - base64_alphabet);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			(void)buffer_append_byte(out, (unsigned char)(acc >> bits));
		}
	}
	return 0;
}

void base64_encode(const void *data, size_t len, struct buffer *out)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		char quad[4];

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		quad[0] = base64_alphabet[(v >> 18) & 63];
		quad[1] = base64_alphabet[(v >> 12) & 63];
		quad[2] = i + 1 < len ? base64_alphabet[(v >> 6) & 63] : '=';
		quad[3] = i + 2 < len ? base64_alphabet[v & 63] : '=';
		(void)buffer_append(out, quad, sizeof(quad));
	}
}

int sasl_plain_split(char *msg, size_t len, const char **authzid_r,
		     const char **authcid_r, const char **password_r)
{
	char *nul1, *nul2;

	msg[len] = '\0';
	nul1 = memchr(msg, '\0', len);
	if (nul1 == NULL)
		return -1;
	nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg));
	if (nul2 == NULL || nul2 == nul1 + 1 || nul2 + 1 >= msg + len)
		return -1;
	if (memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - msg)) != NULL)
		return -1;
	*authzid_r = msg;
	*authcid_r = nul1 + 1;
	*password_r = nul2 + 1;
	return 0;
}
