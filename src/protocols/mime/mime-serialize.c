/*
 * mime-serialize.c - the parsed MIME tree as bytes for the mailbox cache
 * (MAIL_CACHE_MIME_TREE), and back.
 *
 * Format: a version byte (MIME_SERIALIZE_VERSION), the parts in preorder
 * (numbers as unsigned LEB128, strings as length+1 then the bytes, 0 for
 * NULL), then a CRC-32 of everything before it. Reading back checks the
 * CRC, every length against what is left, and each part's offsets and
 * type (part_is_sane): a cache file that another node half wrote, or
 * that a disk garbled, gives NULL and the caller parses the message
 * again. It never crashes on any input (test-mime fuzzes it).
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "mime-part.h"
#include "mime-private.h"

#include <string.h>

/* mime_crc32 - CRC-32 (IEEE, reflected) */
uint32_t mime_crc32(const void *data, size_t size)
{
	const unsigned char *p = data;
	uint32_t crc = 0xffffffffU;

	for (size_t i = 0; i < size; i++) {
		crc ^= p[i];
		for (int bit = 0; bit < 8; bit++)
			crc = (crc >> 1) ^ (0xedb88320U & (0U - (crc & 1)));
	}
	return ~crc;
}

/* put_varint - unsigned LEB128 */
static void put_varint(struct buffer *out, uint64_t num)
{
	while (num >= 0x80) {
		buffer_append_byte(out, (unsigned char)(num | 0x80));
		num >>= 7;
	}
	buffer_append_byte(out, (unsigned char)num);
}

/* put_string - length + 1 then bytes; 0 for NULL */
static void put_string(struct buffer *out, const char *str)
{
	if (str == NULL) {
		put_varint(out, 0);
		return;
	}
	put_varint(out, strlen(str) + 1);
	buffer_append_str(out, str);
}

/* put_params - count then name/value pairs */
static void put_params(struct buffer *out, const struct mime_param *params,
		       unsigned int count)
{
	put_varint(out, count);
	for (unsigned int i = 0; i < count; i++) {
		put_string(out, params[i].name);
		put_string(out, params[i].value);
	}
}

/* serialize_part - one part and its subtree, preorder */
static void serialize_part(const struct mime_part *part, struct buffer *out)
{
	const char *strings[] = {
		part->type, part->subtype, part->id, part->description,
		part->encoding, part->md5, part->language, part->location,
		part->disposition, part->env_date, part->env_subject,
		part->env_from, part->env_sender, part->env_reply_to,
		part->env_to, part->env_cc, part->env_bcc,
		part->env_in_reply_to, part->env_message_id,
	};
	const uint64_t nums[] = {
		part->header_offset, part->body_offset, part->end_offset,
		part->header_vsize, part->body_vsize, part->header_lines,
		part->body_lines,
	};

	buffer_append_byte(out, (unsigned char)((part->has_envelope ? 1 : 0) |
						(part->multipart ? 2 : 0) |
						(part->message ? 4 : 0)));
	for (size_t i = 0; i < N_ELEMENTS(nums); i++)
		put_varint(out, nums[i]);
	for (size_t i = 0; i < N_ELEMENTS(strings); i++)
		put_string(out, strings[i]);
	put_params(out, part->params, part->param_count);
	put_params(out, part->disp_params, part->disp_param_count);
	put_varint(out, part->child_count);
	for (const struct mime_part *child = part->children; child != NULL;
	     child = child->next)
		serialize_part(child, out);
}

/* mime_part_serialize - the tree as bytes */
void mime_part_serialize(const struct mime_part *root, struct buffer *out)
{
	size_t start = out->used;
	uint32_t crc;

	buffer_append_byte(out, MIME_SERIALIZE_VERSION);
	serialize_part(root, out);
	crc = mime_crc32(out->data + start, out->used - start);
	for (int i = 0; i < 4; i++)
		buffer_append_byte(out, (unsigned char)(crc >> (8 * i)));
}

struct reader {
	const unsigned char *p, *end;
	unsigned int parts;
	bool failed;
};

/* get_varint - read a LEB128 number */
static uint64_t get_varint(struct reader *r)
{
	uint64_t num = 0;

	for (unsigned int shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->end)
			break;
		num |= (uint64_t)(*r->p & 0x7f) << shift;
		if ((*r->p++ & 0x80) == 0)
			return num;
	}
	r->failed = true;
	return 0;
}

/* get_string - read a string written by put_string (no NUL inside) */
static char *get_string(struct reader *r)
{
	uint64_t len = get_varint(r);
	char *str;

	if (r->failed || len == 0)
		return NULL;
	len--;
	if (len > (uint64_t)(r->end - r->p) ||
	    memchr(r->p, '\0', len) != NULL) {
		r->failed = true;
		return NULL;
	}
	str = mem_strndup((const char *)r->p, len);
	r->p += len;
	return str;
}

/* get_params - read a parameter list */
static void get_params(struct reader *r, struct mime_param **params_r,
		       unsigned int *count_r)
{
	uint64_t count = get_varint(r);

	if (r->failed || count > (uint64_t)(r->end - r->p) / 2 ||
	    count > 10000) {
		r->failed = true;
		return;
	}
	*params_r = mem_calloc(count == 0 ? 1 : count, sizeof(**params_r));
	*count_r = (unsigned int)count;
	for (unsigned int i = 0; i < count; i++) {
		(*params_r)[i].name = get_string(r);
		(*params_r)[i].value = get_string(r);
		if ((*params_r)[i].name == NULL || (*params_r)[i].value == NULL)
			r->failed = true;
	}
}

/* part_is_sane - offsets in order, a type present */
static bool part_is_sane(const struct mime_part *part)
{
	return part->type != NULL && part->subtype != NULL &&
		part->header_offset <= part->body_offset &&
		part->body_offset <= part->end_offset &&
		(part->parent == NULL ||
		 (part->header_offset >= part->parent->body_offset &&
		  part->end_offset <= part->parent->end_offset));
}

/* deserialize_part - read one part and its subtree */
static struct mime_part *deserialize_part(struct reader *r,
					  struct mime_part *parent,
					  unsigned int depth)
{
	struct mime_part *part = mem_zalloc(sizeof(*part));
	struct mime_part **tail = &part->children;
	char **strings[] = {
		&part->type, &part->subtype, &part->id, &part->description,
		&part->encoding, &part->md5, &part->language,
		&part->location, &part->disposition, &part->env_date,
		&part->env_subject, &part->env_from, &part->env_sender,
		&part->env_reply_to, &part->env_to, &part->env_cc,
		&part->env_bcc, &part->env_in_reply_to,
		&part->env_message_id,
	};
	uint64_t *nums[] = {
		&part->header_offset, &part->body_offset, &part->end_offset,
		&part->header_vsize, &part->body_vsize, &part->header_lines,
		&part->body_lines,
	};
	uint64_t children;
	unsigned char flags;

	part->parent = parent;
	if (r->p >= r->end || depth > MIME_MAX_DEPTH + 1 ||
	    ++r->parts > MIME_MAX_PARTS * 2) {
		r->failed = true;
		return part;
	}
	flags = *r->p++;
	part->has_envelope = (flags & 1) != 0;
	part->multipart = (flags & 2) != 0;
	part->message = (flags & 4) != 0;
	if (flags > 7)
		r->failed = true;
	for (size_t i = 0; i < N_ELEMENTS(nums) && !r->failed; i++)
		*nums[i] = get_varint(r);
	for (size_t i = 0; i < N_ELEMENTS(strings) && !r->failed; i++)
		*strings[i] = get_string(r);
	if (!r->failed)
		get_params(r, &part->params, &part->param_count);
	if (!r->failed)
		get_params(r, &part->disp_params, &part->disp_param_count);
	children = r->failed ? 0 : get_varint(r);
	if (r->failed || !part_is_sane(part) ||
	    children > (uint64_t)(r->end - r->p)) {
		r->failed = true;
		return part;
	}
	for (uint64_t i = 0; i < children && !r->failed; i++) {
		*tail = deserialize_part(r, part, depth + 1);
		tail = &(*tail)->next;
		part->child_count++;
	}
	return part;
}

/* mime_part_deserialize - bytes back to a tree; NULL on any damage */
struct mime_part *mime_part_deserialize(const void *data, size_t size)
{
	const unsigned char *bytes = data;
	struct reader r;
	struct mime_part *root;
	uint32_t crc = 0;

	if (size < 6 || bytes[0] != MIME_SERIALIZE_VERSION)
		return NULL;
	for (int i = 0; i < 4; i++)
		crc |= (uint32_t)bytes[size - 4 + i] << (8 * i);
	if (crc != mime_crc32(bytes, size - 4))
		return NULL;
	memset(&r, 0, sizeof(r));
	r.p = bytes + 1;
	r.end = bytes + size - 4;
	root = deserialize_part(&r, NULL, 0);
	if (r.failed || r.p != r.end)
		mime_part_free(&root);
	return root;
}
