/*
 * test-mime.c - unit tests of src/protocols/mime: the streaming MIME
 * parser (trees, offsets, sizes, section numbers), BODY/BODYSTRUCTURE and
 * ENVELOPE output, the transfer/charset/RFC 2047 decoders, case folding,
 * and the serialized tree (round trip, fuzzed input).
 *
 * Expected IMAP strings were worked out by hand from the RFC 9051 grammar
 * (7.5.2); sizes count CRLF line ends (a bare LF counts as two octets).
 * Every message is also fed byte by byte and in random chunks, and the
 * tree must not change.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "protocols/mime/mime-part.h"
#include "protocols/mime/mime-decode.h"
#include "protocols/mime/imap-bodystructure.h"
#include "protocols/mime/mime-private.h"
#include "unit.h"

#include <time.h>

/* ---- helpers ---- */

/* parse - parse msg fed in chunks of chunk bytes (0 = in one piece) */
static struct mime_part *parse_chunked(const char *msg, size_t len,
				       size_t chunk)
{
	struct mime_parser *parser = mime_parser_create();

	if (chunk == 0)
		chunk = len == 0 ? 1 : len;
	for (size_t i = 0; i < len; i += chunk)
		mime_parser_feed(parser, msg + i,
				 len - i < chunk ? len - i : chunk);
	return mime_parser_finish(&parser);
}

static struct mime_part *parse(const char *msg)
{
	return parse_chunked(msg, strlen(msg), 0);
}

/* serialized - the tree as serialized bytes (compares whole trees) */
static char *serialized(const struct mime_part *root, size_t *len_r)
{
	struct buffer buf;

	buffer_init(&buf, 0);
	mime_part_serialize(root, &buf);
	return buffer_export(&buf, len_r);
}

/* check_chunking - byte by byte and odd chunk sizes give the same tree */
static void check_chunking(const char *msg, size_t len)
{
	struct mime_part *whole = parse_chunked(msg, len, 0);
	size_t whole_len, other_len;
	char *whole_bytes = serialized(whole, &whole_len);
	const size_t chunks[] = { 1, 2, 3, 7, 64 };

	for (size_t i = 0; i < N_ELEMENTS(chunks); i++) {
		struct mime_part *other = parse_chunked(msg, len, chunks[i]);
		char *other_bytes = serialized(other, &other_len);

		ck_assert_msg(other_len == whole_len &&
			      memcmp(other_bytes, whole_bytes, whole_len) == 0,
			      "chunk size %zu changes the tree", chunks[i]);
		free(other_bytes);
		mime_part_free(&other);
	}
	free(whole_bytes);
	mime_part_free(&whole);
}

/* bodystructure - BODY or BODYSTRUCTURE of msg as a string (owned) */
static char *bodystructure(const char *msg, bool extended, bool utf8)
{
	struct mime_part *root = parse(msg);
	struct buffer buf;

	buffer_init(&buf, 0);
	imap_bodystructure_write(root, extended, utf8, &buf);
	mime_part_free(&root);
	check_chunking(msg, strlen(msg));
	return buffer_export(&buf, NULL);
}

static void check_bs(const char *msg, bool extended, const char *expected)
{
	char *got = bodystructure(msg, extended, false);

	ck_assert_str_eq(got, expected);
	free(got);
}

/* envelope - ENVELOPE of a header (a blank line and body are added) */
static char *envelope(const char *header, bool utf8)
{
	char *msg = mem_printf("%s\n\nbody\n", header);
	struct mime_part *root = parse(msg);
	struct buffer buf;

	buffer_init(&buf, 0);
	imap_envelope_write(root, utf8, &buf);
	mime_part_free(&root);
	free(msg);
	return buffer_export(&buf, NULL);
}

static void check_env(const char *header, const char *expected)
{
	char *got = envelope(header, false);

	ck_assert_str_eq(got, expected);
	free(got);
}

/* check_addr - only the To: list of the ENVELOPE */
static void check_to(const char *to, const char *expected_to)
{
	char *header = mem_printf("To: %s", to);
	char *expected = mem_printf("(NIL NIL NIL NIL NIL %s NIL NIL NIL NIL)",
				    expected_to);

	check_env(header, expected);
	free(header);
	free(expected);
}

/* lf_to_crlf - the same message with CRLF line ends (owned) */
static char *lf_to_crlf(const char *msg)
{
	struct buffer buf;

	buffer_init(&buf, 0);
	for (; *msg != '\0'; msg++) {
		if (*msg == '\n')
			buffer_append_byte(&buf, '\r');
		buffer_append_byte(&buf, (unsigned char)*msg);
	}
	return buffer_export(&buf, NULL);
}

static const struct mime_part *find(const struct mime_part *root,
				    const char *section)
{
	const struct mime_part *part = mime_part_find(root, section);

	ck_assert_msg(part != NULL, "section %s not found", section);
	return part;
}

/* ---- messages ---- */

static const char simple_msg[] =
	"From: Alice <alice@example.com>\n"
	"To: bob@example.org\n"
	"Subject: Hi\n"
	"Date: Mon, 1 Jan 2024 10:00:00 +0000\n"
	"Message-ID: <1@x>\n"
	"\n"
	"Hello\n"
	"World\n";

static const char mixed_msg[] =
	"From: a@b\n"
	"Subject: m\n"
	"MIME-Version: 1.0\n"
	"Content-Type: multipart/mixed; boundary=\"XX\"\n"
	"\n"
	"preamble\n"
	"--XX\n"
	"Content-Type: text/plain; charset=utf-8\n"
	"\n"
	"body text\n"
	"--XX\n"
	"Content-Type: application/pdf; name=\"a.pdf\"\n"
	"Content-Transfer-Encoding: base64\n"
	"Content-Disposition: attachment; filename=\"a.pdf\"\n"
	"\n"
	"QUJD\n"
	"--XX--\n"
	"epilogue\n";

static const char nested_msg[] =
	"Content-Type: multipart/mixed; boundary=outer\n"
	"\n"
	"--outer\n"
	"Content-Type: multipart/alternative; boundary=inner\n"
	"\n"
	"--inner\n"
	"Content-Type: text/plain\n"
	"\n"
	"plain\n"
	"--inner\n"
	"Content-Type: text/html\n"
	"\n"
	"<b>html</b>\n"
	"--inner--\n"
	"\n"
	"--outer\n"
	"Content-Type: message/rfc822\n"
	"\n"
	"From: c@d\n"
	"Subject: inner\n"
	"\n"
	"hi\n"
	"--outer--\n";

static const char digest_msg[] =
	"Content-Type: multipart/digest; boundary=d\n"
	"\n"
	"--d\n"
	"\n"
	"From: x@y\n"
	"Subject: one\n"
	"\n"
	"body1\n"
	"--d\n"
	"Content-Type: text/plain\n"
	"\n"
	"note\n"
	"--d--\n";

/* ---- parser: trees and offsets ---- */

START_TEST(test_simple_offsets)
{
	struct mime_part *root = parse(simple_msg);
	size_t body = (size_t)(strstr(simple_msg, "\n\n") + 2 - simple_msg);

	ck_assert_uint_eq(root->header_offset, 0);
	ck_assert_uint_eq(root->body_offset, body);
	ck_assert_uint_eq(root->end_offset, strlen(simple_msg));
	ck_assert_uint_eq(root->header_vsize, body + 6);	/* 6 LFs */
	ck_assert_uint_eq(root->header_lines, 6);
	ck_assert_uint_eq(root->body_vsize, 14);
	ck_assert_uint_eq(root->body_lines, 2);
	ck_assert_str_eq(root->type, "text");
	ck_assert_str_eq(root->subtype, "plain");
	ck_assert(!root->multipart && !root->message && root->has_envelope);
	ck_assert_ptr_null(root->children);
	ck_assert_str_eq(root->env_subject, "Hi");
	ck_assert_str_eq(root->env_from, "Alice <alice@example.com>");
	ck_assert_ptr_eq(mime_part_find(root, "1"), root);
	ck_assert_ptr_null(mime_part_find(root, "2"));
	ck_assert_ptr_null(mime_part_find(root, "1.1"));
	ck_assert_ptr_null(mime_part_find(root, "0"));
	ck_assert_ptr_null(mime_part_find(root, "01"));
	ck_assert_ptr_null(mime_part_find(root, "1.x"));
	mime_part_free(&root);
	ck_assert_ptr_null(root);
}
END_TEST

START_TEST(test_mixed_offsets)
{
	struct mime_part *root = parse(mixed_msg);
	const struct mime_part *p1, *p2;
	const char *b1 = strstr(mixed_msg, "body text");
	const char *q = strstr(mixed_msg, "QUJD");

	ck_assert(root->multipart);
	ck_assert_uint_eq(root->child_count, 2);
	ck_assert_str_eq(mime_part_param(root, "BOUNDARY"), "XX");
	p1 = find(root, "1");
	p2 = find(root, "2");
	ck_assert_ptr_eq(p1->next, p2);
	ck_assert_ptr_eq(p1->parent, root);
	ck_assert_uint_eq(p1->header_offset,
			  strstr(mixed_msg, "Content-Type: text/plain") -
			  mixed_msg);
	ck_assert_uint_eq(p1->body_offset, b1 - mixed_msg);
	/* the LF before "--XX" belongs to the boundary */
	ck_assert_uint_eq(p1->end_offset, b1 + 9 - mixed_msg);
	ck_assert_uint_eq(p1->body_vsize, 9);
	ck_assert_uint_eq(p1->body_lines, 1);
	ck_assert_str_eq(mime_part_param(p1, "charset"), "utf-8");
	ck_assert_uint_eq(p2->body_offset, q - mixed_msg);
	ck_assert_uint_eq(p2->end_offset, q + 4 - mixed_msg);
	ck_assert_str_eq(p2->encoding, "base64");
	ck_assert_str_eq(p2->disposition, "attachment");
	ck_assert_uint_eq(p2->disp_param_count, 1);
	ck_assert_str_eq(p2->disp_params[0].name, "filename");
	ck_assert_str_eq(p2->disp_params[0].value, "a.pdf");
	ck_assert(!p1->has_envelope);
	ck_assert_ptr_null(p1->env_subject);
	ck_assert_ptr_null(mime_part_find(root, "3"));
	ck_assert_uint_eq(root->end_offset, strlen(mixed_msg));
	mime_part_free(&root);
}
END_TEST

START_TEST(test_nested_and_rfc822)
{
	struct mime_part *root = parse(nested_msg);
	const struct mime_part *alt = find(root, "1"), *msg = find(root, "2");
	const struct mime_part *inner = find(root, "2.1");

	ck_assert(alt->multipart);
	ck_assert_str_eq(alt->subtype, "alternative");
	ck_assert_uint_eq(alt->child_count, 2);
	ck_assert_str_eq(find(root, "1.1")->subtype, "plain");
	ck_assert_str_eq(find(root, "1.2")->subtype, "html");
	ck_assert_uint_eq(find(root, "1.2")->body_vsize, 11);
	ck_assert(msg->message);
	ck_assert_uint_eq(msg->child_count, 1);
	ck_assert_ptr_eq(inner, msg->children);
	ck_assert(inner->has_envelope);
	ck_assert_str_eq(inner->env_subject, "inner");
	ck_assert_uint_eq(inner->header_offset, msg->body_offset);
	ck_assert_uint_eq(inner->end_offset, msg->end_offset);
	ck_assert_uint_eq(msg->body_vsize, 31);
	ck_assert_uint_eq(msg->body_lines, 4);
	ck_assert_uint_eq(inner->header_vsize, 29);
	ck_assert_uint_eq(inner->body_vsize, 2);
	ck_assert_ptr_null(mime_part_find(root, "2.2"));
	ck_assert_ptr_null(mime_part_find(root, "1.3"));
	ck_assert_ptr_null(mime_part_find(root, "2.1.1.1"));
	ck_assert_ptr_eq(mime_part_find(root, ""), root);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_rfc822_multipart_numbering)
{
	/* a message/rfc822 whose message is multipart: 1.2 is its 2nd part */
	static const char msg[] =
		"Content-Type: message/rfc822\n\n"
		"Subject: enc\n"
		"Content-Type: multipart/mixed; boundary=z\n\n"
		"--z\n\none\n--z\n\ntwo\n--z--\n";
	struct mime_part *root = parse(msg);
	const struct mime_part *two = find(root, "1.2");

	ck_assert(root->message);
	ck_assert_ptr_eq(find(root, "1"), root);
	ck_assert_uint_eq(two->body_offset, strstr(msg, "two") - msg);
	ck_assert_uint_eq(two->body_vsize, 3);
	ck_assert_ptr_null(mime_part_find(root, "1.3"));
	mime_part_free(&root);
}
END_TEST

START_TEST(test_digest_default_type)
{
	struct mime_part *root = parse(digest_msg);
	const struct mime_part *p1 = find(root, "1");

	ck_assert_str_eq(p1->type, "message");
	ck_assert_str_eq(p1->subtype, "rfc822");
	ck_assert(p1->message && !p1->has_envelope);
	ck_assert_str_eq(find(root, "1.1")->env_subject, "one");
	ck_assert_str_eq(find(root, "2")->type, "text");
	mime_part_free(&root);
}
END_TEST

START_TEST(test_missing_close_boundary)
{
	static const char msg[] =
		"Content-Type: multipart/mixed; boundary=b\n\n"
		"--b\n\nfirst\n--b\n\nsecond\n";
	struct mime_part *root = parse(msg);
	const struct mime_part *p2 = find(root, "2");

	ck_assert_uint_eq(root->child_count, 2);
	ck_assert_uint_eq(find(root, "1")->body_vsize, 5);
	ck_assert_uint_eq(find(root, "1")->header_vsize, 2);
	ck_assert_uint_eq(p2->end_offset, strlen(msg));
	ck_assert_uint_eq(p2->body_vsize, 8);
	ck_assert_uint_eq(p2->body_lines, 1);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_boundary_whitespace_and_prefix)
{
	static const char msg[] =
		"Content-Type: multipart/mixed; boundary=b\n\n"
		"--bb not a boundary\n"
		"--b  \t\n\none\n--bx\n--b \n\ntwo\n--b-- \t\nepilogue\n--b\n";
	struct mime_part *root = parse(msg);

	ck_assert_uint_eq(root->child_count, 2);
	ck_assert_uint_eq(find(root, "1")->body_vsize, 9);	/* one\r\n--bx */
	ck_assert_uint_eq(find(root, "1")->body_lines, 2);
	ck_assert_uint_eq(find(root, "2")->body_vsize, 3);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_outer_boundary_closes_inner)
{
	static const char msg[] =
		"Content-Type: multipart/mixed; boundary=o\n\n"
		"--o\nContent-Type: multipart/mixed; boundary=i\n\n"
		"--i\n\ninner text\n"
		"--o\n\nlast\n--o--\n";
	struct mime_part *root = parse(msg);

	ck_assert_uint_eq(root->child_count, 2);
	ck_assert_uint_eq(find(root, "1")->child_count, 1);
	ck_assert_uint_eq(find(root, "1.1")->body_vsize, 10);
	ck_assert_uint_eq(find(root, "1.1")->end_offset,
			  strstr(msg, "inner text") + 10 - msg);
	ck_assert_uint_eq(find(root, "1")->end_offset,
			  find(root, "1.1")->end_offset);
	ck_assert_uint_eq(find(root, "2")->body_vsize, 4);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_outer_boundary_in_inner_preamble)
{
	static const char msg[] =
		"Content-Type: multipart/mixed; boundary=o\n\n"
		"--o\nContent-Type: multipart/mixed; boundary=i\n\n"
		"inner preamble\n"
		"--o\n\nsecond\n--o--\n";
	struct mime_part *root = parse(msg);

	ck_assert_uint_eq(root->child_count, 2);
	/* the inner multipart got no part: one empty text/plain */
	ck_assert_uint_eq(find(root, "1")->child_count, 1);
	ck_assert_uint_eq(find(root, "1.1")->body_vsize, 0);
	ck_assert_uint_eq(find(root, "1")->body_vsize, 14);
	ck_assert_uint_eq(find(root, "2")->body_vsize, 6);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_part_header_closed_by_boundary)
{
	static const char msg[] =
		"Content-Type: multipart/mixed; boundary=b\n\n"
		"--b\nContent-Type: text/html\n--b\n--b--\n";
	struct mime_part *root = parse(msg);
	const struct mime_part *p1 = find(root, "1"), *p2 = find(root, "2");

	ck_assert_uint_eq(root->child_count, 2);
	ck_assert_str_eq(p1->subtype, "html");
	ck_assert_uint_eq(p1->header_offset, strstr(msg, "Content-Type: text/h") -
			  msg);
	ck_assert_uint_eq(p1->body_offset, strstr(msg, "html\n--b") + 4 - msg);
	ck_assert_uint_eq(p1->body_vsize, 0);
	ck_assert_uint_eq(p1->header_vsize, 23);
	/* part 2 is empty: its header starts and ends before "--b--" */
	ck_assert_uint_eq(p2->body_vsize, 0);
	ck_assert_uint_eq(p2->header_vsize, 0);
	ck_assert_str_eq(p2->subtype, "plain");
	mime_part_free(&root);
}
END_TEST

START_TEST(test_no_header_body_separator)
{
	static const char msg[] = "Subject: x\nFrom: a@b\nnot a field\n";
	struct mime_part *root = parse(msg);

	ck_assert_uint_eq(root->body_offset, strlen(msg));
	ck_assert_uint_eq(root->end_offset, strlen(msg));
	ck_assert_uint_eq(root->header_vsize, strlen(msg) + 3);
	ck_assert_uint_eq(root->body_vsize, 0);
	ck_assert_str_eq(root->env_subject, "x");
	mime_part_free(&root);
	root = parse("");
	ck_assert_uint_eq(root->end_offset, 0);
	ck_assert_str_eq(root->type, "text");
	mime_part_free(&root);
	/* body without a final line break */
	root = parse("Subject: y\n\nabc");
	ck_assert_uint_eq(root->body_vsize, 3);
	ck_assert_uint_eq(root->body_lines, 1);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_header_oddities)
{
	static const char msg[] =
		"Subject: folded\n\tline\n  two\n"
		"no colon here\n"
		"X-Nul: a\0b\n"
		"X-8bit: \xc3\xa4\n"
		"Content-Type : text/html (comment (nested)) ;\n"
		"  charset = \"iso-8859-1\" ; (c) format=flowed\n"
		"Content-Type: image/gif\n"
		"\n"
		"body";
	size_t len = sizeof(msg) - 1;
	struct mime_part *root = parse_chunked(msg, len, 0);

	ck_assert_str_eq(root->env_subject, "folded\tline  two");
	ck_assert_str_eq(root->type, "text");
	ck_assert_str_eq(root->subtype, "html");
	ck_assert_str_eq(mime_part_param(root, "charset"), "iso-8859-1");
	ck_assert_str_eq(mime_part_param(root, "format"), "flowed");
	ck_assert_uint_eq(root->body_offset, len - 4);
	mime_part_free(&root);
	root = parse("Content-Type: multipart/mixed; boundary=----=_Part_1/x"
		     "(c);charset=us-ascii(c)\n\n");
	ck_assert_str_eq(mime_part_param(root, "boundary"), "----=_Part_1/x");
	ck_assert_str_eq(mime_part_param(root, "charset"), "us-ascii");
	mime_part_free(&root);
	check_chunking(msg, len);
}
END_TEST

START_TEST(test_long_lines)
{
	struct buffer buf;
	struct mime_part *root;

	buffer_init(&buf, 0);
	buffer_append_str(&buf, "Subject: ");
	for (int i = 0; i < 20000; i++)
		buffer_append_byte(&buf, 'a' + i % 26);
	buffer_append_str(&buf, "\nContent-Type: text/x-long\n\n");
	for (int i = 0; i < 100000; i++)
		buffer_append_byte(&buf, 'b');
	buffer_append_str(&buf, "\n");
	root = parse_chunked((const char *)buf.data, buf.used, 4096);
	ck_assert_uint_eq(strlen(root->env_subject), MIME_MAX_FIELD);
	ck_assert_str_eq(root->subtype, "x-long");
	ck_assert_uint_eq(root->body_vsize, 100002);
	ck_assert_uint_eq(root->end_offset, buf.used);
	mime_part_free(&root);
	buffer_clear(&buf);
}
END_TEST

START_TEST(test_content_type_defaults)
{
	static const char *const bad[] = {
		"Content-Type: ///\n\nx", "Content-Type: text\n\nx",
		"Content-Type: \n\nx", "Content-Type: text/\n\nx",
		"Content-Type: ;charset=utf-8\n\nx",
	};

	for (size_t i = 0; i < N_ELEMENTS(bad); i++) {
		struct mime_part *root = parse(bad[i]);

		ck_assert_str_eq(root->type, "text");
		ck_assert_str_eq(root->subtype, "plain");
		ck_assert_uint_eq(root->param_count, 0);
		mime_part_free(&root);
	}
}
END_TEST

START_TEST(test_rfc2231_params)
{
	static const char msg[] =
		"Content-Type: application/x-stuff;\n"
		" title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
		" title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
		" title*2=\"isn't it!\"; name*1=\"c\"; name*0=\"a b\"\n"
		"Content-Disposition: attachment; filename*=utf-8''%C3%A4.txt\n"
		"\n";
	struct mime_part *root = parse(msg);

	ck_assert_str_eq(mime_part_param(root, "title"),
			 "us-ascii'en'This%20is%20even%20more%20"
			 "%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!");
	ck_assert_str_eq(root->params[0].name, "title*");
	ck_assert_str_eq(mime_part_param(root, "name"), "a bc");
	ck_assert_str_eq(root->disp_params[0].name, "filename*");
	ck_assert_str_eq(root->disp_params[0].value, "utf-8''%C3%A4.txt");
	mime_part_free(&root);
}
END_TEST

START_TEST(test_empty_multipart)
{
	struct mime_part *root =
		parse("Content-Type: multipart/mixed; boundary=b\n\n--b--\n");

	ck_assert_uint_eq(root->child_count, 1);
	ck_assert_str_eq(find(root, "1")->type, "text");
	ck_assert_uint_eq(find(root, "1")->body_vsize, 0);
	mime_part_free(&root);
	root = parse("Content-Type: multipart/mixed\n\nno boundary\n");
	ck_assert_uint_eq(root->child_count, 1);
	mime_part_free(&root);
}
END_TEST

START_TEST(test_crlf_and_lf_same_vsizes)
{
	const char *msgs[] = { simple_msg, mixed_msg, nested_msg, digest_msg };

	for (size_t i = 0; i < N_ELEMENTS(msgs); i++) {
		char *crlf = lf_to_crlf(msgs[i]);
		struct mime_part *a = parse(msgs[i]), *b = parse(crlf);
		const struct mime_part *pa = a, *pb = b;
		char *bs_a = bodystructure(msgs[i], true, false);
		char *bs_b = bodystructure(crlf, true, false);

		ck_assert_str_eq(bs_a, bs_b);
		ck_assert_uint_eq(b->end_offset, strlen(crlf));
		ck_assert_uint_eq(a->header_vsize + a->body_vsize,
				  strlen(crlf));
		/* walk both trees in preorder */
		while (pa != NULL && pb != NULL) {
			ck_assert_uint_eq(pa->header_vsize, pb->header_vsize);
			ck_assert_uint_eq(pa->body_vsize, pb->body_vsize);
			ck_assert_uint_eq(pa->body_lines, pb->body_lines);
			ck_assert_uint_eq(pb->body_vsize,
					  pb->end_offset - pb->body_offset);
			if (pa->children != NULL) {
				pa = pa->children;
				pb = pb->children;
				continue;
			}
			while (pa != NULL && pa->next == NULL) {
				pa = pa->parent;
				pb = pb->parent;
			}
			if (pa != NULL) {
				pa = pa->next;
				pb = pb->next;
			}
		}
		ck_assert(pa == NULL && pb == NULL);
		free(bs_a);
		free(bs_b);
		free(crlf);
		mime_part_free(&a);
		mime_part_free(&b);
	}
}
END_TEST

START_TEST(test_byte_by_byte)
{
	const char *msgs[] = { simple_msg, mixed_msg, nested_msg, digest_msg };

	for (size_t i = 0; i < N_ELEMENTS(msgs); i++) {
		char *crlf = lf_to_crlf(msgs[i]);

		check_chunking(msgs[i], strlen(msgs[i]));
		check_chunking(crlf, strlen(crlf));
		free(crlf);
	}
}
END_TEST

/* tree_depth - deepest level of a tree */
static unsigned int tree_depth(const struct mime_part *part)
{
	unsigned int max = 0;

	for (const struct mime_part *c = part->children; c; c = c->next) {
		unsigned int d = tree_depth(c);

		max = d > max ? d : max;
	}
	return max + 1;
}

/* tree_count - parts in a tree */
static unsigned int tree_count(const struct mime_part *part)
{
	unsigned int count = 1;

	for (const struct mime_part *c = part->children; c; c = c->next)
		count += tree_count(c);
	return count;
}

START_TEST(test_nesting_bomb)
{
	struct buffer buf;
	struct mime_part *root;
	clock_t start = clock();

	buffer_init(&buf, 0);
	for (int i = 0; i < 1000; i++)
		buffer_printf(&buf, "Content-Type: multipart/mixed; "
			      "boundary=b%d\n\n--b%d\n", i, i);
	buffer_append_str(&buf, "x\n");
	root = parse_chunked((const char *)buf.data, buf.used, 1000);
	ck_assert_uint_le(tree_depth(root), MIME_MAX_DEPTH + 2);
	ck_assert_uint_ge(tree_depth(root), MIME_MAX_DEPTH);
	mime_part_free(&root);
	buffer_reset(&buf);
	for (int i = 0; i < 1000; i++)
		buffer_append_str(&buf, "Content-Type: message/rfc822\n\n");
	root = parse_chunked((const char *)buf.data, buf.used, 1);
	ck_assert_uint_le(tree_depth(root), MIME_MAX_DEPTH + 2);
	buffer_clear(&buf);
	buffer_init(&buf, 0);
	imap_bodystructure_write(root, true, false, &buf);
	ck_assert_uint_gt(buf.used, 0);
	mime_part_free(&root);
	buffer_clear(&buf);
	ck_assert_msg((clock() - start) / CLOCKS_PER_SEC < 5, "too slow");
}
END_TEST

START_TEST(test_many_parts)
{
	struct buffer buf;
	struct mime_part *root;
	clock_t start = clock();

	buffer_init(&buf, 0);
	buffer_append_str(&buf, "Content-Type: multipart/mixed; "
			  "boundary=b\n\n");
	for (int i = 0; i < 100000; i++)
		buffer_append_str(&buf, "--b\n\nx\n");
	buffer_append_str(&buf, "--b--\n");
	root = parse_chunked((const char *)buf.data, buf.used, 65536);
	ck_assert_uint_eq(tree_count(root), MIME_MAX_PARTS);
	ck_assert_uint_eq(root->child_count, MIME_MAX_PARTS - 1);
	ck_assert_uint_eq(root->end_offset, buf.used);
	ck_assert_ptr_nonnull(mime_part_find(root, "4999"));
	ck_assert_ptr_null(mime_part_find(root, "5000"));
	mime_part_free(&root);
	buffer_clear(&buf);
	ck_assert_msg((clock() - start) / CLOCKS_PER_SEC < 5, "too slow");
}
END_TEST

/* ---- BODY / BODYSTRUCTURE ---- */

#define TEXT_US "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" "

START_TEST(test_bs_simple)
{
	check_bs(simple_msg, true, TEXT_US "14 2 NIL NIL NIL NIL)");
	check_bs(simple_msg, false, TEXT_US "14 2)");
	check_bs("Subject: x\nFrom: a@b\n", true, TEXT_US "0 0 NIL NIL NIL NIL)");
}
END_TEST

START_TEST(test_bs_mixed)
{
	const char *expected =
		"((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" "
		"9 1 NIL NIL NIL NIL)"
		"(\"application\" \"pdf\" (\"name\" \"a.pdf\") NIL NIL "
		"\"base64\" 4 NIL (\"attachment\" (\"filename\" \"a.pdf\")) "
		"NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)";

	check_bs(mixed_msg, true, expected);
	check_bs(mixed_msg, false,
		 "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL "
		 "\"7bit\" 9 1)(\"application\" \"pdf\" (\"name\" \"a.pdf\") "
		 "NIL NIL \"base64\" 4) \"mixed\")");
}
END_TEST

START_TEST(test_bs_nested_rfc822)
{
	check_bs(nested_msg, true,
		 "(((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL "
		 "\"7bit\" 5 1 NIL NIL NIL NIL)"
		 "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL "
		 "\"7bit\" 11 1 NIL NIL NIL NIL) \"alternative\" "
		 "(\"boundary\" \"inner\") NIL NIL NIL)"
		 "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 31 "
		 "(NIL \"inner\" ((NIL NIL \"c\" \"d\")) ((NIL NIL \"c\" \"d\")) "
		 "((NIL NIL \"c\" \"d\")) NIL NIL NIL NIL NIL) "
		 TEXT_US "2 1 NIL NIL NIL NIL) 4 NIL NIL NIL NIL) "
		 "\"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)");
}
END_TEST

START_TEST(test_bs_digest)
{
	check_bs(digest_msg, false,
		 "((\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 32 "
		 "(NIL \"one\" ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) "
		 "((NIL NIL \"x\" \"y\")) NIL NIL NIL NIL NIL) "
		 TEXT_US "5 1) 4)" TEXT_US "4 1) \"digest\")");
}
END_TEST

START_TEST(test_bs_empty_multipart)
{
	check_bs("Content-Type: multipart/mixed; boundary=b\n\n--b--\n", true,
		 "(" TEXT_US "0 0 NIL NIL NIL NIL) \"mixed\" "
		 "(\"boundary\" \"b\") NIL NIL NIL)");
}
END_TEST

START_TEST(test_bs_extension_fields)
{
	check_bs("Content-Type: Text/HTML; Charset=\"x\\\"y\"\n"
		 "Content-ID: <id@x>\n"
		 "Content-Description: a \"quoted\" \\ desc\n"
		 "Content-Transfer-Encoding: Quoted-Printable\n"
		 "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
		 "Content-Disposition: inline\n"
		 "Content-Language: en, de\n"
		 "Content-Location: http://x/y\n\nab\n", true,
		 "(\"Text\" \"HTML\" (\"charset\" \"x\\\"y\") \"<id@x>\" "
		 "\"a \\\"quoted\\\" \\\\ desc\" \"Quoted-Printable\" 4 1 "
		 "\"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"inline\" NIL) "
		 "(\"en\" \"de\") \"http://x/y\")");
	check_bs("Content-Type: image/png\nContent-Language: fr\n"
		 "Content-Description: caf\xc3\xa9\n\nab", true,
		 "(\"image\" \"png\" NIL NIL {5}\r\ncaf\xc3\xa9 \"7bit\" 2 NIL "
		 "NIL \"fr\" NIL)");
}
END_TEST

START_TEST(test_bs_message_variants)
{
	/* message/global is parsed like message/rfc822 (RFC 9051) */
	check_bs("Content-Type: message/global\n\nSubject: s\n\nb\n", false,
		 "(\"message\" \"global\" NIL NIL NIL \"7bit\" 17 "
		 "(NIL \"s\" NIL NIL NIL NIL NIL NIL NIL NIL) "
		 TEXT_US "3 1) 3)");
	/* base64 message/rfc822 is not parsed: empty envelope and body */
	check_bs("Content-Type: message/rfc822\n"
		 "Content-Transfer-Encoding: base64\n\nU3ViamVjdDogeA==\n",
		 false,
		 "(\"message\" \"rfc822\" NIL NIL NIL \"base64\" 18 "
		 "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) "
		 TEXT_US "0 0) 1)");
}
END_TEST

START_TEST(test_bs_utf8_quoted)
{
	char *got = bodystructure("Content-Type: image/png\n"
				  "Content-Description: caf\xc3\xa9\n\nab",
				  false, true);

	ck_assert_str_eq(got, "(\"image\" \"png\" NIL NIL \"caf\xc3\xa9\" "
			 "\"7bit\" 2)");
	free(got);
	/* invalid UTF-8 is a literal even with UTF8=ACCEPT */
	got = bodystructure("Content-Type: image/png\n"
			    "Content-Description: caf\xe9\n\nab", false, true);
	ck_assert_str_eq(got, "(\"image\" \"png\" NIL NIL {4}\r\ncaf\xe9 "
			 "\"7bit\" 2)");
	free(got);
}
END_TEST

/* ---- ENVELOPE ---- */

START_TEST(test_env_simple)
{
	char *got = envelope(simple_msg, false);

	ck_assert_str_eq(got,
		"(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"Hi\" "
		"((\"Alice\" NIL \"alice\" \"example.com\")) "
		"((\"Alice\" NIL \"alice\" \"example.com\")) "
		"((\"Alice\" NIL \"alice\" \"example.com\")) "
		"((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL \"<1@x>\")");
	free(got);
	check_env("Subject: x", "(NIL \"x\" NIL NIL NIL NIL NIL NIL NIL NIL)");
	check_env("From: a@b\nSender: s@t\nReply-To: r@u\nCc: c@d\n"
		  "Bcc: e@f\nIn-Reply-To: <p@q>",
		  "(NIL NIL ((NIL NIL \"a\" \"b\")) ((NIL NIL \"s\" \"t\")) "
		  "((NIL NIL \"r\" \"u\")) NIL ((NIL NIL \"c\" \"d\")) "
		  "((NIL NIL \"e\" \"f\")) \"<p@q>\" NIL)");
	/* an empty Sender: defaults to From like an absent one */
	check_env("From: a@b\nSender:  \nReply-To:",
		  "(NIL NIL ((NIL NIL \"a\" \"b\")) ((NIL NIL \"a\" \"b\")) "
		  "((NIL NIL \"a\" \"b\")) NIL NIL NIL NIL NIL)");
	/* first occurrence wins; empty Subject is the empty string */
	check_env("Subject:\nSubject: second",
		  "(NIL \"\" NIL NIL NIL NIL NIL NIL NIL NIL)");
}
END_TEST

START_TEST(test_env_groups)
{
	check_to("A Group: a@b.c, \"Smith, J\" <j@x.y>;, d@e",
		 "((NIL NIL \"A Group\" NIL)(NIL NIL \"a\" \"b.c\")"
		 "(\"Smith, J\" NIL \"j\" \"x.y\")(NIL NIL NIL NIL)"
		 "(NIL NIL \"d\" \"e\"))");
	check_to("undisclosed-recipients:;",
		 "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))");
	check_to("g: a@b", "((NIL NIL \"g\" NIL)(NIL NIL \"a\" \"b\")"
		 "(NIL NIL NIL NIL))");
}
END_TEST

START_TEST(test_env_odd_addresses)
{
	check_to("<@a.com,@b.com:user@c.com>",
		 "((NIL \"@a.com,@b.com\" \"user\" \"c.com\"))");
	check_to("user@x.com (Real Name)", "((NIL NIL \"user\" \"x.com\"))");
	check_to("John (the man) Smith <js@x>",
		 "((\"John Smith\" NIL \"js\" \"x\"))");
	check_to("root", "((NIL NIL \"root\" \"\"))");
	check_to("Hello World", "((NIL NIL \"Hello World\" \"\"))");
	check_to("=?utf-8?q?J=C3=B6rg?= <j@x>",
		 "((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\"))");
	check_to("\"A \\\"q\\\" B\" <a@b>, , x.y@z",
		 "((\"A \\\"q\\\" B\" NIL \"a\" \"b\")(NIL NIL \"x.y\" \"z\"))");
	check_to("Dr. J. Doe <d@e>", "((\"Dr. J. Doe\" NIL \"d\" \"e\"))");
	check_to("@@@", "((NIL NIL \"\" \"@@\"))");
	check_to("Name <a@b> trailing junk", "((\"Name\" NIL \"a\" \"b\"))");
	check_to("a@b (unclosed comment", "((NIL NIL \"a\" \"b\"))");
	check_to("\"unclosed <a@b>", "((NIL NIL \"unclosed <a@b>\" \"\"))");
	check_to("", "NIL");
	check_to("  ", "NIL");
	check_to("<<<>>", "((NIL NIL \"<<\" \"\"))");
}
END_TEST

START_TEST(test_env_8bit)
{
	char *got;

	check_env("Subject: Gr\xc3\xbc\xc3\x9f" "e",
		  "(NIL {7}\r\nGr\xc3\xbc\xc3\x9f" "e NIL NIL NIL NIL NIL NIL "
		  "NIL NIL)");
	got = envelope("Subject: Gr\xc3\xbc\xc3\x9f" "e", true);
	ck_assert_str_eq(got, "(NIL \"Gr\xc3\xbc\xc3\x9f" "e\" NIL NIL NIL NIL "
			 "NIL NIL NIL NIL)");
	free(got);
}
END_TEST

/* ---- decoding ---- */

/* decode - run a body decoder fed in chunks of chunk bytes */
static char *decode(const char *encoding, const char *charset,
		    const char *in, size_t len, size_t chunk)
{
	struct mime_decoder *dec = mime_decoder_create(encoding, charset);
	struct buffer out;

	buffer_init(&out, 0);
	for (size_t i = 0; i < len; i += chunk)
		mime_decoder_feed(dec, in + i, len - i < chunk ? len - i : chunk,
				  &out);
	mime_decoder_finish(&dec, &out);
	ck_assert_ptr_null(dec);
	return buffer_export(&out, NULL);
}

static void check_decode(const char *encoding, const char *charset,
			 const char *in, const char *expected)
{
	size_t len = strlen(in);
	const size_t chunks[] = { 1, 2, 3, 5, 1000 };

	for (size_t i = 0; i < N_ELEMENTS(chunks); i++) {
		char *got = decode(encoding, charset, in, len, chunks[i]);

		ck_assert_msg(strcmp(got, expected) == 0,
			      "%s/%s chunk %zu: got '%s'", encoding, charset,
			      chunks[i], got);
		free(got);
	}
}

START_TEST(test_decode_base64)
{
	check_decode("base64", NULL, "SGVsbG8sIFdvcmxkIQ==", "Hello, World!");
	check_decode("BASE64", NULL, "SGVs\nbG8s*IFdv cmxk\r\nIQ==garbage",
		     "Hello, World!");
	check_decode("base64", "utf-8",
		     "R3LDvMOfZSBhdXMgS8O2bG4sIMO8bsOvY8O2ZMOp",
		     "Gr\xc3\xbc\xc3\x9f" "e aus K\xc3\xb6ln, \xc3\xbcn\xc3\xaf"
		     "c\xc3\xb6" "d\xc3\xa9");
	check_decode("base64", NULL, "", "");
}
END_TEST

START_TEST(test_decode_qp)
{
	check_decode("quoted-printable", NULL, "a=3Db=\nc=\r\nd =XY=4",
		     "a=bcd =XY=4");
	check_decode("quoted-printable", "iso-8859-1", "caf=E9 =\n\xe9t\xe9",
		     "caf\xc3\xa9 \xc3\xa9t\xc3\xa9");
	check_decode("quoted-printable", "utf-8", "=E2=82=AC=", "\xe2\x82\xac=");
	check_decode("7bit", "utf-8", "ok \xff end", "ok \xef\xbf\xbd end");
	check_decode(NULL, "x-unknown", "\xe2\x82\xac", "\xe2\x82\xac");
	check_decode("8bit", "windows-1252", "\x80", "\xe2\x82\xac");
	check_decode("8bit", "iso-2022-jp", "\x1b$B$F$9$H\x1b(B!",
		     "\xe3\x81\xa6\xe3\x81\x99\xe3\x81\xa8!");
	check_decode("base64", "gb2312", "xOO6ww==", "\xe4\xbd\xa0\xe5\xa5\xbd");
	check_decode("8bit", "koi8-r", "\xf0\xd2\xc9", "\xd0\x9f\xd1\x80\xd0\xb8");
}
END_TEST

START_TEST(test_decoder_bounded_output)
{
	struct mime_decoder *dec = mime_decoder_create(NULL, NULL);
	struct buffer out;

	buffer_init(&out, 10);
	mime_decoder_feed(dec, "0123456789abcdef", 16, &out);
	mime_decoder_finish(&dec, &out);
	ck_assert_uint_eq(out.used, 10);
	ck_assert_str_eq(buffer_cstr(&out), "0123456789");
	buffer_clear(&out);
}
END_TEST

static void check_header(const char *in, const char *expected)
{
	struct buffer out;

	buffer_init(&out, 0);
	mime_header_decode(in, strlen(in), &out);
	ck_assert_str_eq(buffer_cstr(&out), expected);
	buffer_clear(&out);
}

START_TEST(test_rfc2047)
{
	check_header("=?utf-8?q?a_b?= =?utf-8?q?c?=", "a bc");
	check_header("=?UTF-8?B?w6k=?=", "\xc3\xa9");
	check_header("=?utf-8?B?4oI=?=\r\n =?utf-8?B?rA==?=", "\xe2\x82\xac");
	check_header("=?iso-8859-1?q?caf=E9?= au lait", "caf\xc3\xa9 au lait");
	check_header("a =?utf-8?q?b?= c", "a b c");
	check_header("=?x-unknown?q?caf=C3=A9?=", "caf\xc3\xa9");
	check_header("=?x-unknown?q?=FF?=", "\xef\xbf\xbd");
	check_header("=?iso-2022-jp?B?GyRCJEYkOSRIGyhC?=",
		     "\xe3\x81\xa6\xe3\x81\x99\xe3\x81\xa8");
	check_header("=?utf-8*en?q?x?=", "x");
	check_header("=?utf-8?x?bad?= =?broken", "=?utf-8?x?bad?= =?broken");
	check_header("plain\r\n folded", "plain folded");
	check_header("=?iso-8859-1?q?a?= =?utf-8?q?b?=", "ab");
}
END_TEST

START_TEST(test_charsets)
{
	static const char *const known[] = {
		"utf-8", "UTF8", "latin1", "us-ascii", "iso-8859-1",
		"windows-1252", "koi8-r", "gb2312", "iso-2022-jp", NULL,
	};
	struct buffer out;

	for (size_t i = 0; i < N_ELEMENTS(known); i++)
		ck_assert_msg(mime_charset_is_known(known[i]), "%s", known[i]);
	ck_assert(!mime_charset_is_known("x-bogus"));
	ck_assert(!mime_charset_is_known("utf-8//TRANSLIT"));
	ck_assert(!mime_charset_is_known("latin1//IGNORE"));
	buffer_init(&out, 0);
	ck_assert_int_eq(mime_charset_to_utf8("x-bogus", "a", 1, &out), -1);
	ck_assert_uint_eq(out.used, 0);
	ck_assert_int_eq(mime_charset_to_utf8("latin1", "\xc4", 1, &out), 0);
	ck_assert_str_eq(buffer_cstr(&out), "\xc3\x84");
	buffer_reset(&out);
	ck_assert_int_eq(mime_charset_to_utf8("gb2312", "\xc4\xe3", 2, &out),
			 0);
	ck_assert_str_eq(buffer_cstr(&out), "\xe4\xbd\xa0");
	buffer_reset(&out);
	/* truncated multibyte character at the end */
	ck_assert_int_eq(mime_charset_to_utf8("utf-8", "a\xe2\x82", 3, &out),
			 0);
	ck_assert_str_eq(buffer_cstr(&out), "a\xef\xbf\xbd\xef\xbf\xbd");
	buffer_clear(&out);
}
END_TEST

static void check_fold(const char *in, const char *expected)
{
	struct buffer out;

	buffer_init(&out, 0);
	mime_utf8_casefold(in, strlen(in), &out);
	ck_assert_str_eq(buffer_cstr(&out), expected);
	buffer_clear(&out);
}

START_TEST(test_casefold)
{
	struct buffer hay, needle;

	check_fold("Hello WORLD", "hello world");
	check_fold("\xc3\x84\xc3\x96\xc3\x9c", "\xc3\xa4\xc3\xb6\xc3\xbc");
	check_fold("\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2",
		   "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
	check_fold("\xce\x91\xce\x92\xce\x93", "\xce\xb1\xce\xb2\xce\xb3");
	check_fold("a\xff" "b\xc3", "a\xef\xbf\xbd" "b\xef\xbf\xbd");
	check_fold("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	buffer_init(&hay, 0);
	buffer_init(&needle, 0);
	mime_utf8_casefold("Gr\xc3\x9c\xc3\x9f aus K\xc3\x96LN", 16, &hay);
	mime_utf8_casefold("k\xc3\xb6ln", 5, &needle);
	ck_assert(mime_utf8_contains((char *)hay.data, hay.used,
				     (char *)needle.data, needle.used));
	ck_assert(mime_utf8_contains((char *)hay.data, hay.used, "", 0));
	ck_assert(!mime_utf8_contains((char *)hay.data, hay.used, "berlin", 6));
	buffer_clear(&hay);
	buffer_clear(&needle);
}
END_TEST

/* ---- serialization ---- */

START_TEST(test_serialize_roundtrip)
{
	const char *msgs[] = { simple_msg, mixed_msg, nested_msg, digest_msg };

	for (size_t i = 0; i < N_ELEMENTS(msgs); i++) {
		struct mime_part *root = parse(msgs[i]), *back;
		size_t len, len2;
		char *bytes = serialized(root, &len), *bytes2;
		struct buffer a, b;

		back = mime_part_deserialize(bytes, len);
		ck_assert_ptr_nonnull(back);
		bytes2 = serialized(back, &len2);
		ck_assert(len == len2 && memcmp(bytes, bytes2, len) == 0);
		buffer_init(&a, 0);
		buffer_init(&b, 0);
		imap_bodystructure_write(root, true, false, &a);
		imap_bodystructure_write(back, true, false, &b);
		ck_assert_str_eq(buffer_cstr(&a), buffer_cstr(&b));
		buffer_clear(&a);
		buffer_clear(&b);
		free(bytes);
		free(bytes2);
		mime_part_free(&root);
		mime_part_free(&back);
	}
}
END_TEST

START_TEST(test_deserialize_fuzz)
{
	struct mime_part *root = parse(nested_msg), *back;
	size_t len;
	char *bytes = serialized(root, &len);
	unsigned char *copy = mem_dup(bytes, len);
	unsigned int seed = 12345;

	/* every truncation, every single-byte change: NULL */
	for (size_t i = 0; i < len; i++)
		ck_assert_ptr_null(mime_part_deserialize(bytes, i));
	for (size_t i = 0; i < len; i++) {
		copy[i] ^= 0x5a;
		ck_assert_ptr_null(mime_part_deserialize(copy, len));
		copy[i] ^= 0x5a;
	}
	ck_assert_ptr_null(mime_part_deserialize(NULL, 0));
	/* damage behind a valid checksum: reaches the structure checks */
	for (int round = 0; round < 20000; round++) {
		uint32_t crc;

		memcpy(copy, bytes, len);
		for (int flips = 1 + rand_r(&seed) % 4; flips > 0; flips--)
			copy[1 + rand_r(&seed) % (len - 5)] =
				(unsigned char)rand_r(&seed);
		crc = mime_crc32(copy, len - 4);
		for (int k = 0; k < 4; k++)
			copy[len - 4 + k] = (unsigned char)(crc >> (8 * k));
		back = mime_part_deserialize(copy, len);
		if (back != NULL) {
			struct buffer out;

			buffer_init(&out, 0);
			imap_bodystructure_write(back, true, false, &out);
			buffer_clear(&out);
			mime_part_free(&back);
		}
	}
	free(copy);
	free(bytes);
	mime_part_free(&root);
}
END_TEST

/* tree_value_bytes - bytes of kept header values in a tree */
static size_t tree_value_bytes(const struct mime_part *part)
{
	const char *values[] = { part->description, part->id, part->md5,
				 part->language, part->location };
	size_t total = 0;

	for (size_t i = 0; i < N_ELEMENTS(values); i++)
		total += values[i] == NULL ? 0 : strlen(values[i]);
	for (unsigned int i = 0; i < part->param_count; i++)
		total += strlen(part->params[i].value);
	for (const struct mime_part *c = part->children; c; c = c->next)
		total += tree_value_bytes(c);
	return total;
}

START_TEST(test_kept_values_bounded)
{
	struct buffer buf;
	struct mime_part *root;
	const struct mime_part *last;
	char big[8001];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buffer_init(&buf, 0);
	buffer_append_str(&buf, "Content-Type: multipart/mixed; "
			  "boundary=b\n\n");
	for (int i = 0; i < 2000; i++)
		buffer_printf(&buf, "--b\nContent-Description: %s\n"
			      "Content-Type: text/plain; name=%.4000s; "
			      "charset=utf-8\n\nx\n", big, big);
	buffer_append_str(&buf, "--b--\n");
	root = parse_chunked((const char *)buf.data, buf.used, 65536);
	ck_assert_uint_eq(root->child_count, 2000);
	ck_assert_uint_le(tree_value_bytes(root), 4 * 1024 * 1024 + 20000);
	ck_assert_uint_gt(tree_value_bytes(root), 3 * 1024 * 1024);
	last = find(root, "2000");
	ck_assert_str_eq(last->subtype, "plain");
	ck_assert_str_eq(mime_part_param(last, "charset"), "utf-8");
	ck_assert_ptr_null(mime_part_param(last, "name"));
	ck_assert_ptr_null(last->description);
	ck_assert_ptr_nonnull(find(root, "1")->description);
	mime_part_free(&root);
	buffer_clear(&buf);
}
END_TEST

START_TEST(test_parser_abort_and_random_input)
{
	struct mime_parser *parser = mime_parser_create();
	unsigned int seed = 7;
	char data[4096];

	mime_parser_feed(parser, mixed_msg, 100);
	mime_parser_abort(&parser);
	ck_assert_ptr_null(parser);
	for (int round = 0; round < 200; round++) {
		static const char *const pieces[] = {
			"\n", "\r\n", "--b\n", "--b--\n", "--c\n",
			"Content-Type: multipart/mixed; boundary=b\n",
			"Content-Type: multipart/digest; boundary=c\n",
			"Content-Type: message/rfc822\n", "x", " ", ":",
			"From: a\n", "\0",
		};
		size_t used = 0;
		struct mime_part *root;
		struct buffer out;

		while (used < sizeof(data) - 64) {
			const char *p = pieces[rand_r(&seed) %
					       N_ELEMENTS(pieces)];
			size_t plen = *p == '\0' ? 1 : strlen(p);

			memcpy(data + used, p, plen);
			used += plen;
		}
		root = parse_chunked(data, used, 1 + rand_r(&seed) % 50);
		ck_assert_uint_eq(root->end_offset, used);
		buffer_init(&out, 0);
		imap_bodystructure_write(root, true, false, &out);
		imap_envelope_write(root, false, &out);
		buffer_clear(&out);
		mime_part_free(&root);
		check_chunking(data, used);
	}
}
END_TEST

int main(void)
{
	Suite *parser = suite_create("mime-parser");
	Suite *imap = suite_create("imap-bodystructure");
	Suite *decode_suite = suite_create("mime-decode");
	Suite *ser = suite_create("mime-serialize");
	TCase *tc;

	tc = tcase_create("trees");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_simple_offsets);
	tcase_add_test(tc, test_mixed_offsets);
	tcase_add_test(tc, test_nested_and_rfc822);
	tcase_add_test(tc, test_rfc822_multipart_numbering);
	tcase_add_test(tc, test_digest_default_type);
	tcase_add_test(tc, test_missing_close_boundary);
	tcase_add_test(tc, test_boundary_whitespace_and_prefix);
	tcase_add_test(tc, test_outer_boundary_closes_inner);
	tcase_add_test(tc, test_outer_boundary_in_inner_preamble);
	tcase_add_test(tc, test_part_header_closed_by_boundary);
	tcase_add_test(tc, test_no_header_body_separator);
	tcase_add_test(tc, test_header_oddities);
	tcase_add_test(tc, test_long_lines);
	tcase_add_test(tc, test_content_type_defaults);
	tcase_add_test(tc, test_rfc2231_params);
	tcase_add_test(tc, test_empty_multipart);
	tcase_add_test(tc, test_crlf_and_lf_same_vsizes);
	tcase_add_test(tc, test_byte_by_byte);
	tcase_add_test(tc, test_nesting_bomb);
	tcase_add_test(tc, test_many_parts);
	tcase_add_test(tc, test_kept_values_bounded);
	tcase_add_test(tc, test_parser_abort_and_random_input);
	suite_add_tcase(parser, tc);

	tc = tcase_create("imap");
	tcase_add_test(tc, test_bs_simple);
	tcase_add_test(tc, test_bs_mixed);
	tcase_add_test(tc, test_bs_nested_rfc822);
	tcase_add_test(tc, test_bs_digest);
	tcase_add_test(tc, test_bs_empty_multipart);
	tcase_add_test(tc, test_bs_extension_fields);
	tcase_add_test(tc, test_bs_message_variants);
	tcase_add_test(tc, test_bs_utf8_quoted);
	tcase_add_test(tc, test_env_simple);
	tcase_add_test(tc, test_env_groups);
	tcase_add_test(tc, test_env_odd_addresses);
	tcase_add_test(tc, test_env_8bit);
	suite_add_tcase(imap, tc);

	tc = tcase_create("decode");
	tcase_add_test(tc, test_decode_base64);
	tcase_add_test(tc, test_decode_qp);
	tcase_add_test(tc, test_decoder_bounded_output);
	tcase_add_test(tc, test_rfc2047);
	tcase_add_test(tc, test_charsets);
	tcase_add_test(tc, test_casefold);
	suite_add_tcase(decode_suite, tc);

	tc = tcase_create("serialize");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_serialize_roundtrip);
	tcase_add_test(tc, test_deserialize_fuzz);
	suite_add_tcase(ser, tc);

	Suite *suites[] = { parser, imap, decode_suite, ser };

	return unit_run(suites, N_ELEMENTS(suites));
}
