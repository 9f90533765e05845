/*
 * test-smtp.c - the SMTP engine's pure parts: path parsing (RFC 5321
 * 4.1.2), xtext (RFC 3461), the DATA decoder (dot-stuffing and the end of
 * data, fed byte by byte and in one piece), and base64/SASL PLAIN.
 * The protocol itself is tested end to end in tests/integration/test_smtp.py.
 */
#include "lib/lib.h"
#include "lib/base64.h"
#include "lib/buffer.h"
#include "protocols/smtp/smtp-private.h"
#include "unit.h"

/* path_ok - parse and compare, checking where parsing stopped */
static void path_ok(const char *in, bool allow_null, const char *want,
		    bool want_utf8, const char *rest)
{
	const char *p = in, *error;
	char *addr = NULL;
	bool utf8 = false;

	error = smtp_parse_path(&p, allow_null, &addr, &utf8);
	ck_assert_msg(error == NULL, "%s: %s", in, error);
	ck_assert_str_eq(addr, want);
	ck_assert_int_eq(utf8, want_utf8);
	ck_assert_str_eq(p, rest);
	free(addr);
}

static void path_bad(const char *in, bool allow_null)
{
	const char *p = in;
	char *addr = NULL;
	bool utf8;

	ck_assert_msg(smtp_parse_path(&p, allow_null, &addr, &utf8) != NULL,
		      "accepted %s", in);
	ck_assert_ptr_null(addr);
}

START_TEST(test_paths)
{
	path_ok("<a@example.com>", false, "a@example.com", false, "");
	path_ok("<a.b+c@sub.example.com> SIZE=1", false, "a.b+c@sub.example.com",
		false, " SIZE=1");
	path_ok("<>", true, "", false, "");
	path_ok("<\"a b\"@example.com>", false, "\"a b\"@example.com", false, "");
	path_ok("<\"a\\\"b\"@example.com>", false, "\"a\\\"b\"@example.com", false, "");
	path_ok("<@relay.example,@b.example:u@example.com>", false, "u@example.com",
		false, "");
	path_ok("<u@[192.0.2.1]>", false, "u@[192.0.2.1]", false, "");
	path_ok("<u@[IPv6:2001:db8::1]>", false, "u@[IPv6:2001:db8::1]", false, "");
	path_ok("<PostMaster>", false, "PostMaster", false, "");
	path_ok("<\xc3\xbc@b\xc3\xbc.example>", false, "\xc3\xbc@b\xc3\xbc.example",
		true, "");
	path_bad("<>", false);
	path_bad("a@example.com", false);
	path_bad("<a@example.com", false);
	path_bad("<a@@example.com>", false);
	path_bad("<.a@example.com>", false);
	path_bad("<a.@example.com>", false);
	path_bad("<a..b@example.com>", false);
	path_bad("<a@example..com>", false);
	path_bad("<a@example.com.>", false);
	path_bad("<a@exam_ple.com>", false);
	path_bad("<a b@example.com>", false);
	path_bad("<a@>", false);
	path_bad("<user>", false);
	path_bad("<\"unterminated@example.com>", false);
	path_bad("<\"ctl\x01\"@example.com>", false);
	path_bad("<a@[]>", false);
	path_bad("<a@[1.2.3.4>", false);
	path_bad("<@relay.example>", false);
}
END_TEST

START_TEST(test_path_length)
{
	char buf[600];

	snprintf(buf, sizeof(buf), "<%s@example.com>",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	path_bad(buf, false);
}
END_TEST

START_TEST(test_xtext)
{
	char *s;

	s = smtp_xtext_decode("abc+2Bdef+3D", 100);
	ck_assert_str_eq(s, "abc+def=");
	free(s);
	ck_assert_ptr_null(smtp_xtext_decode("a+zz", 100));
	ck_assert_ptr_null(smtp_xtext_decode("a+2", 100));
	ck_assert_ptr_null(smtp_xtext_decode("a=b", 100));
	ck_assert_ptr_null(smtp_xtext_decode("a b", 100));
	ck_assert_ptr_null(smtp_xtext_decode("abcdef", 3));
}
END_TEST

/* decode - run the DATA decoder over in, whole or byte by byte */
static char *decode(const char *in, bool bytewise, size_t *used_r, bool *end_r)
{
	enum smtp_dot_state state = DATA_LINE_START_CRLF;
	struct buffer out;
	size_t len = strlen(in), used = 0;

	buffer_init(&out, 0);
	if (bytewise) {
		while (used < len && state != DATA_END)
			used += smtp_dot_decode(&state, &out,
						(const unsigned char *)in + used, 1);
	} else {
		used = smtp_dot_decode(&state, &out, (const unsigned char *)in, len);
	}
	(void)buffer_append_byte(&out, '\0');
	*used_r = used;
	*end_r = state == DATA_END;
	return (char *)out.data;
}

static void decode_check(const char *in, const char *want, bool want_end,
			 size_t want_used)
{
	for (int bytewise = 0; bytewise <= 1; bytewise++) {
		size_t used;
		bool end;
		char *out = decode(in, bytewise != 0, &used, &end);

		ck_assert_msg(strcmp(out, want) == 0, "%s -> [%s] want [%s]",
			      in, out, want);
		ck_assert_int_eq(end, want_end);
		ck_assert_uint_eq(used, want_used);
		free(out);
	}
}

START_TEST(test_dot_decoder)
{
	const char *m;

	decode_check("a\r\n.\r\n", "a\r\n", true, 6);
	decode_check(".\r\n", "", true, 3);
	m = "a\r\n.\r\nQUIT\r\n";
	decode_check(m, "a\r\n", true, 6);
	decode_check("..x\r\n.\r\n", ".x\r\n", true, 8);
	decode_check("a\r\n..\r\n.\r\n", "a\r\n.\r\n", true, 10);
	/* Not the end: a dot line after a bare LF, or ended by a bare LF. */
	decode_check("a\n.\r\nb\r\n.\r\n", "a\n\r\nb\r\n", true, 11);
	decode_check("a\r\n.\nb\r\n.\r\n", "a\r\n\nb\r\n", true, 11);
	decode_check("a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n", true, 11);
	/* A bare CR stays; CR CR LF keeps one CR and the line end. */
	decode_check("a\rb\r\r\n.\r\n", "a\rb\r\r\n", true, 9);
	/* Unfinished. */
	decode_check("abc\r\n.", "abc\r\n", false, 6);
}
END_TEST

START_TEST(test_base64_and_plain)
{
	struct buffer b;
	const char *authz, *authc, *pass;
	char msg[32];

	buffer_init(&b, 0);
	ck_assert_int_eq(base64_decode("AGFsaWNlAHNlY3JldA==", 20, &b), 0);
	ck_assert_uint_eq(b.used, 13);
	memcpy(msg, b.data, b.used);
	ck_assert_int_eq(sasl_plain_split(msg, b.used, &authz, &authc, &pass), 0);
	ck_assert_str_eq(authz, "");
	ck_assert_str_eq(authc, "alice");
	ck_assert_str_eq(pass, "secret");
	buffer_reset(&b);
	base64_encode("\0alice\0secret", 13, &b);
	ck_assert_int_eq((int)b.used, 20);
	ck_assert_int_eq(memcmp(b.data, "AGFsaWNlAHNlY3JldA==", 20), 0);
	buffer_reset(&b);
	ck_assert_int_eq(base64_decode("AGFsa", 5, &b), -1);
	ck_assert_int_eq(base64_decode("AG=a", 4, &b), -1);
	ck_assert_int_eq(base64_decode("A*==", 4, &b), -1);
	memcpy(msg, "\0alice\0", 7);
	ck_assert_int_eq(sasl_plain_split(msg, 7, &authz, &authc, &pass), -1);
	memcpy(msg, "\0\0pw", 4);
	ck_assert_int_eq(sasl_plain_split(msg, 4, &authz, &authc, &pass), -1);
	memcpy(msg, "alice", 5);
	ck_assert_int_eq(sasl_plain_split(msg, 5, &authz, &authc, &pass), -1);
	memcpy(msg, "\0a\0p\0w", 6);
	ck_assert_int_eq(sasl_plain_split(msg, 6, &authz, &authc, &pass), -1);
	buffer_clear(&b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("smtp");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, test_paths);
	tcase_add_test(tc, test_path_length);
	tcase_add_test(tc, test_xtext);
	tcase_add_test(tc, test_dot_decoder);
	tcase_add_test(tc, test_base64_and_plain);
	suite_add_tcase(s, tc);
	return unit_run(&s, 1);
}
