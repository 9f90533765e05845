#ifndef CM_MIME_PRIVATE_H
#define CM_MIME_PRIVATE_H
/*
 * mime-private - internals shared by the files of src/protocols/mime:
 * the IMAP string writer (used by BODYSTRUCTURE and ENVELOPE) and the
 * checksum of the serialized tree (exposed so that tests can damage the
 * payload behind a valid checksum and reach the structural checks).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buffer;

/* Serialized tree: version byte, payload, CRC-32 (little endian) of
   everything before it. */
#define MIME_SERIALIZE_VERSION 1

/* mime_crc32 - CRC-32 (IEEE) of data */
uint32_t mime_crc32(const void *data, size_t size);

/* Write str as an IMAP string: quoted when possible, otherwise a literal
   {n}\r\n...; NULL writes NIL. 8-bit bytes force a literal unless utf8. */
void imap_write_nstring(struct buffer *out, const char *str, bool utf8);
void imap_write_nstring_len(struct buffer *out, const char *str, size_t len,
			    bool utf8);

#endif
