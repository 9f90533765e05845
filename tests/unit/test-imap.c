/*
 * test-imap.c - the IMAP argument parser and the syntax helpers of
 * imap-util.c (sequence sets, flags, string quoting, dates, mailbox
 * names). The session engine is tested against the real daemon in
 * tests/integration/test_imap_session.py.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "auth/authdb.h"
#include "auth/password.h"
#include "protocols/imap/imap-client.h"
#include "protocols/imap/imap-parser.h"
#include "protocols/imap/imap-util.h"
#include "maildir/store.h"
#include "unit.h"

#include <stdio.h>
#include <stdlib.h>

static struct imap_parser *parser;
static unsigned int literal_prompts;

static void parser_setup(void)
{
	struct imap_parser_settings set = { .max_line_length = 200 };

	parser = imap_parser_create(&set);
	literal_prompts = 0;
}

static void parser_teardown(void)
{
	imap_parser_destroy(&parser);
}

/* feed - the whole input at once, in pieces of chunk bytes (0 = all);
   synchronizing literals are accepted. Returns the final result. */
static enum imap_parser_result feed_chunked(const char *input, size_t len,
					    size_t chunk)
{
	const unsigned char *p = (const unsigned char *)input;
	enum imap_parser_result ret = IMAP_PARSER_MORE;
	size_t pos = 0, avail = 0, consumed;

	imap_parser_reset(parser);
	for (;;) {
		if (chunk == 0)
			avail = len;
		else if (avail < len && ret == IMAP_PARSER_MORE)
			avail = avail + chunk > len ? len : avail + chunk;
		ret = imap_parser_feed(parser, p + pos, avail - pos, false,
				       &consumed);
		pos += consumed;
		if (ret == IMAP_PARSER_LITERAL) {
			literal_prompts++;
			continue;
		}
		if (ret != IMAP_PARSER_MORE || (pos == len && avail == len))
			return ret;
	}
}

static enum imap_parser_result feed(const char *input)
{
	return feed_chunked(input, strlen(input), 0);
}

START_TEST(test_parser_atoms_strings)
{
	const struct imap_arg *args;
	const char *s;

	ck_assert_int_eq(feed("abc \"q \\\"x\\\\ y\" NIL nil 123\r\n"), IMAP_PARSER_DONE);
	args = imap_parser_args(parser);
	ck_assert(imap_arg_get_atom(&args[0], &s));
	ck_assert_str_eq(s, "abc");
	ck_assert(imap_arg_get_string(&args[1], &s));
	ck_assert_str_eq(s, "q \"x\\ y");
	ck_assert_int_eq(args[2].type, IMAP_ARG_NIL);
	ck_assert_int_eq(args[3].type, IMAP_ARG_NIL);
	ck_assert(imap_arg_atom_equals(&args[4], "123"));
	ck_assert(imap_arg_is_eol(&args[5]));
	ck_assert(!imap_arg_get_astring(&args[2], &s));
	ck_assert(imap_arg_get_nstring(&args[2], &s) && s == NULL);
	/* an empty command line */
	ck_assert_int_eq(feed("\r\n"), IMAP_PARSER_DONE);
	ck_assert(imap_arg_is_eol(imap_parser_args(parser)));
}
END_TEST

START_TEST(test_parser_lists)
{
	const struct imap_arg *args, *list, *inner;
	size_t count;

	ck_assert_int_eq(feed("(\\Seen (a b) ()) x\r\n"), IMAP_PARSER_DONE);
	args = imap_parser_args(parser);
	ck_assert(imap_arg_get_list(&args[0], &list, &count));
	ck_assert_uint_eq(count, 3);
	ck_assert(imap_arg_atom_equals(&list[0], "\\SEEN"));
	ck_assert(imap_arg_get_list(&list[1], &inner, &count));
	ck_assert_uint_eq(count, 2);
	ck_assert(imap_arg_atom_equals(&inner[1], "b"));
	ck_assert(imap_arg_is_eol(&inner[2]));
	ck_assert(imap_arg_get_list(&list[2], &inner, &count));
	ck_assert_uint_eq(count, 0);
	ck_assert(imap_arg_is_eol(&inner[0]));
	ck_assert(imap_arg_atom_equals(&args[1], "x"));
}
END_TEST

START_TEST(test_parser_literals)
{
	const struct imap_arg *args, *list;
	const char input[] = "a {5}\r\nhe\0lo (b {3+}\r\nxyz) ~{2}\r\n\x01\x02\r\n";

	ck_assert_int_eq(feed_chunked(input, sizeof(input) - 1, 0), IMAP_PARSER_DONE);
	ck_assert_uint_eq(literal_prompts, 2);	/* {5} and ~{2}, not {3+} */
	args = imap_parser_args(parser);
	ck_assert_int_eq(args[1].type, IMAP_ARG_LITERAL);
	ck_assert_uint_eq(args[1].len, 5);
	ck_assert(memcmp(args[1].str, "he\0lo", 5) == 0);
	ck_assert(imap_arg_get_list(&args[2], &list, NULL));
	ck_assert_int_eq(list[1].type, IMAP_ARG_LITERAL);
	ck_assert_str_eq(list[1].str, "xyz");
	ck_assert(args[3].literal8);
	ck_assert_uint_eq(args[3].len, 2);
	ck_assert(imap_arg_is_eol(&args[4]));
	/* byte by byte gives the same */
	ck_assert_int_eq(feed_chunked(input, sizeof(input) - 1, 1), IMAP_PARSER_DONE);
	args = imap_parser_args(parser);
	ck_assert(memcmp(args[1].str, "he\0lo", 5) == 0);
	ck_assert_str_eq(imap_parser_args(parser)[2].list[1].str, "xyz");
}
END_TEST

START_TEST(test_parser_section_atom)
{
	const struct imap_arg *args;

	ck_assert_int_eq(feed("1 (BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.10> UID)\r\n"),
			 IMAP_PARSER_DONE);
	args = imap_parser_args(parser);
	ck_assert_uint_eq(args[1].list_count, 2);
	ck_assert_str_eq(args[1].list[0].str,
			 "BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.10>");
	ck_assert_str_eq(args[1].list[1].str, "UID");
}
END_TEST

static void assert_error(const char *input, const char *error_part)
{
	ck_assert_int_eq(feed(input), IMAP_PARSER_ERROR);
	ck_assert_msg(strstr(imap_parser_error(parser, NULL), error_part) != NULL,
		      "%s: got '%s'", input, imap_parser_error(parser, NULL));
}

START_TEST(test_parser_errors)
{
	char deep[200], *p = deep;
	bool in_line;
	uint64_t skip;

	assert_error("a \"abc\r\n", "Unterminated");
	assert_error("a \"a\\b\"\r\n", "escape");
	assert_error("a (b\r\n", "Unterminated list");
	assert_error("a b)\r\n", "')'");
	assert_error("a {x}\r\n", "iteral");
	assert_error("a {}\r\n", "iteral");
	assert_error("a {99999999999999999999}\r\n", "iteral");
	assert_error("a {3} b\r\n", "end the line");
	assert_error("a \xc3\xa4\r\n", "8-bit");
	assert_error("a b[c\r\n", "'['");
	for (int i = 0; i < IMAP_LIST_DEPTH_MAX + 2; i++)
		*p++ = '(';
	strcpy(p, "\r\n");
	assert_error(deep, "deeply");
	/* too many arguments (with a longer line allowed) */
	{
		struct imap_parser_settings set = { .max_line_length = 100000 };
		struct imap_parser *big = imap_parser_create(&set);
		size_t n = IMAP_ARGS_MAX + 1, consumed;
		char *line = malloc(n * 2 + 3);

		for (size_t i = 0; i < n; i++)
			memcpy(line + i * 2, "a ", 2);
		memcpy(line + n * 2, "\r\n", 3);
		ck_assert_int_eq(imap_parser_feed(big, (const unsigned char *)line,
						  strlen(line), false, &consumed),
				 IMAP_PARSER_ERROR);
		ck_assert_str_eq(imap_parser_error(big, NULL), "Too many arguments");
		free(line);
		imap_parser_destroy(&big);
	}
	/* too long: 200 bytes max; the rest of the line is the caller's */
	memset(deep, 'a', sizeof(deep) - 1);
	deep[sizeof(deep) - 1] = '\0';
	ck_assert_int_eq(feed_chunked(deep, strlen(deep), 50), IMAP_PARSER_MORE);
	{
		char longer[400];

		memset(longer, 'a', sizeof(longer) - 3);
		memcpy(longer + sizeof(longer) - 3, "\r\n", 3);
		assert_error(longer, "too long");
		ck_assert(imap_parser_error_skip(parser, &in_line, &skip));
		ck_assert(in_line);
	}
	/* too big for memory; a non-synchronizing one must be skipped */
	assert_error("a {100000}\r\n", "TOOBIG");
	ck_assert(!imap_parser_error_skip(parser, &in_line, &skip));
	assert_error("a {100000+}\r\n", "TOOBIG");
	ck_assert(imap_parser_error_skip(parser, &in_line, &skip));
	ck_assert_uint_eq(skip, 100000);
	/* an error earlier in a part that announces a literal */
	assert_error("a \"x\\q\" {7+}\r\n", "escape");
	ck_assert(imap_parser_error_skip(parser, &in_line, &skip));
	ck_assert_uint_eq(skip, 7);
}
END_TEST

START_TEST(test_parser_stream)
{
	const char input[] = "INBOX (\\Seen) {11}\r\n";
	enum imap_parser_result ret;
	size_t consumed;

	imap_parser_reset(parser);
	ret = imap_parser_feed(parser, (const unsigned char *)input,
			       strlen(input), true, &consumed);
	ck_assert_int_eq(ret, IMAP_PARSER_STREAM);
	ck_assert_uint_eq(consumed, strlen(input));
	ck_assert_uint_eq(imap_parser_arg_count(parser), 2);
	ck_assert_uint_eq(imap_parser_literal(parser)->literal_size, 11);
	ck_assert(imap_parser_literal(parser)->literal_sync);
	/* the caller read the 11 bytes itself */
	imap_parser_literal_done(parser);
	ret = imap_parser_feed(parser, (const unsigned char *)"\r\n", 2, true,
			       &consumed);
	ck_assert_int_eq(ret, IMAP_PARSER_DONE);
	ck_assert(imap_parser_is_complete(parser));
}
END_TEST

START_TEST(test_tail_literal)
{
	uint64_t size;
	bool sync;

	ck_assert(imap_parser_tail_literal((const unsigned char *)"a {12}", 6,
					   &size, &sync));
	ck_assert_uint_eq(size, 12);
	ck_assert(sync);
	ck_assert(imap_parser_tail_literal((const unsigned char *)"~{3+}", 5,
					   &size, &sync));
	ck_assert(!sync);
	ck_assert(!imap_parser_tail_literal((const unsigned char *)"a {}", 4,
					    &size, &sync));
	ck_assert(!imap_parser_tail_literal((const unsigned char *)"a }", 3,
					    &size, &sync));
}
END_TEST

/* ---- sequence sets ------------------------------------------------------ */

static char *seqset_text(const char *str)
{
	struct imap_seqset set;
	struct buffer out;
	const char *error;

	if (imap_seqset_parse(str, &set, &error) < 0)
		return mem_strdup("ERROR");
	buffer_init(&out, 0);
	for (size_t i = 0; i < set.count; i++) {
		if (i > 0)
			buffer_append_byte(&out, ',');
		buffer_printf(&out, "%u-%u", set.ranges[i].first, set.ranges[i].last);
	}
	if (set.saved)
		buffer_append_str(&out, "$");
	imap_seqset_free(&set);
	return buffer_export(&out, NULL);
}

static void assert_seqset(const char *in, const char *expected)
{
	char *got = seqset_text(in);

	ck_assert_msg(strcmp(got, expected) == 0, "%s: got %s, want %s", in, got,
		      expected);
	free(got);
}

START_TEST(test_seqset_parse)
{
	assert_seqset("1", "1-1");
	assert_seqset("5:3", "3-5");
	assert_seqset("1,3:5,4:7,9", "1-1,3-7,9-9");
	assert_seqset("2,1", "1-2");
	assert_seqset("4:*", "4-4294967295");
	assert_seqset("*", "4294967295-4294967295");
	assert_seqset("$", "$");
	assert_seqset("4294967295", "4294967295-4294967295");
	assert_seqset("0", "ERROR");
	assert_seqset("1:", "ERROR");
	assert_seqset("a", "ERROR");
	assert_seqset("", "ERROR");
	assert_seqset("1,", "ERROR");
	assert_seqset("1:0", "ERROR");
	assert_seqset("4294967296", "ERROR");
	assert_seqset("01", "ERROR");
}
END_TEST

START_TEST(test_seqset_write)
{
	const uint32_t uids[] = { 1, 2, 3, 7, 9, 10 };
	struct buffer out;

	buffer_init(&out, 0);
	imap_seqset_write_uids(&out, uids, N_ELEMENTS(uids));
	ck_assert_str_eq(buffer_cstr(&out), "1:3,7,9:10");
	buffer_reset(&out);
	imap_seqset_write_uids(&out, uids, 0);
	ck_assert_str_eq(buffer_cstr(&out), "");
	buffer_clear(&out);
}
END_TEST

/* ---- flags ------------------------------------------------------------------ */

START_TEST(test_flags)
{
	const char **keywords;
	const char *error;
	uint32_t flags;
	size_t count;

	ck_assert_int_eq(feed("(\\seen \\Deleted $Junk work \\DRAFT work)\r\n"),
			 IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), 0);
	ck_assert_uint_eq(flags, MAIL_SEEN | MAIL_DELETED | MAIL_DRAFT);
	ck_assert_uint_eq(count, 2);
	ck_assert_str_eq(keywords[0], "$Junk");
	ck_assert_str_eq(keywords[1], "work");
	free(keywords);
	/* a single atom */
	ck_assert_int_eq(feed("\\Flagged\r\n"), IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), 0);
	ck_assert_uint_eq(flags, MAIL_FLAGGED);
	free(keywords);
	/* refused */
	ck_assert_int_eq(feed("(\\Recent)\r\n"), IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), -1);
	ck_assert_int_eq(feed("(\\Bogus)\r\n"), IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), -1);
	ck_assert_int_eq(feed("(\"quoted\")\r\n"), IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), -1);
	ck_assert_int_eq(feed("(a]b)\r\n"), IMAP_PARSER_DONE);
	ck_assert_int_eq(imap_flags_parse(imap_parser_args(parser), &flags,
					  &keywords, &count, &error), -1);
	/* writing */
	{
		struct buffer out;

		buffer_init(&out, 0);
		imap_flags_write(&out, NULL, MAIL_SEEN | MAIL_FLAGGED | MAIL_RECENT, 0);
		ck_assert_str_eq(buffer_cstr(&out), "\\Seen \\Flagged \\Recent");
		buffer_clear(&out);
	}
}
END_TEST

/* ---- strings -------------------------------------------------------------- */

static void assert_string_len(const char *in, size_t len, bool utf8,
			      const char *expected, size_t expected_len)
{
	struct buffer out;

	buffer_init(&out, 0);
	imap_append_string(&out, in, len, utf8);
	ck_assert_uint_eq(out.used, expected_len);
	ck_assert_msg(memcmp(out.data, expected, out.used) == 0, "got %s",
		      buffer_cstr(&out));
	buffer_clear(&out);
}

static void assert_string(const char *in, size_t len, bool utf8,
			  const char *expected)
{
	assert_string_len(in, len, utf8, expected, strlen(expected));
}

START_TEST(test_strings)
{
	struct buffer out;

	assert_string("abc", 3, false, "\"abc\"");
	assert_string("a\"b\\c", 5, false, "\"a\\\"b\\\\c\"");
	assert_string("a\r\nb", 4, false, "{4}\r\na\r\nb");
	assert_string_len("a\0b", 3, false, "{3}\r\na\0b", 8);
	assert_string("\xc3\xa4", 2, false, "{2}\r\n\xc3\xa4");
	assert_string("\xc3\xa4", 2, true, "\"\xc3\xa4\"");
	assert_string("\xc3(", 2, true, "{2}\r\n\xc3(");	/* invalid UTF-8 */
	assert_string("", 0, false, "\"\"");
	buffer_init(&out, 0);
	imap_append_astring(&out, "Sent", false);
	(void)buffer_append_byte(&out, ' ');
	imap_append_astring(&out, "My Folder", false);
	(void)buffer_append_byte(&out, ' ');
	imap_append_astring(&out, "NIL", false);
	(void)buffer_append_byte(&out, ' ');
	imap_append_nstring(&out, NULL, false);
	ck_assert_str_eq(buffer_cstr(&out), "Sent \"My Folder\" \"NIL\" NIL");
	buffer_clear(&out);
}
END_TEST

START_TEST(test_mailbox_names)
{
	struct imap_client client = { .enabled = 0 };
	const char *error;
	struct buffer out;
	char *name;

	name = imap_mailbox_from_client(&client, "inbox", &error);
	ck_assert_str_eq(name, "INBOX");
	free(name);
	name = imap_mailbox_from_client(&client, "Entw&APw-rfe", &error);
	ck_assert_str_eq(name, "Entw\xc3\xbcrfe");
	free(name);
	ck_assert_ptr_null(imap_mailbox_from_client(&client, "Entw\xc3\xbcrfe", &error));
	ck_assert_ptr_null(imap_mailbox_from_client(&client, "a&Jjo", &error));
	buffer_init(&out, 0);
	imap_append_mailbox(&out, &client, "Entw\xc3\xbcrfe");
	ck_assert_str_eq(buffer_cstr(&out), "\"Entw&APw-rfe\"");
	buffer_reset(&out);
	client.enabled = IMAP_ENABLED_UTF8;
	name = imap_mailbox_from_client(&client, "Entw\xc3\xbcrfe", &error);
	ck_assert_str_eq(name, "Entw\xc3\xbcrfe");
	free(name);
	imap_append_mailbox(&out, &client, "Entw\xc3\xbcrfe");
	ck_assert_str_eq(buffer_cstr(&out), "\"Entw\xc3\xbcrfe\"");
	buffer_clear(&out);
}
END_TEST

/* ---- dates ------------------------------------------------------------------ */

START_TEST(test_dates)
{
	int64_t t;
	struct buffer out;

	ck_assert(imap_date_time_parse("17-Jul-1996 02:44:25 -0700", &t));
	ck_assert_int_eq(t, 837596665);
	ck_assert(imap_date_time_parse(" 7-Jul-1996 02:44:25 +0000", &t));
	ck_assert_int_eq(t, 836707465);
	ck_assert(!imap_date_time_parse("17-Jul-1996 02:44:25", &t));
	ck_assert(!imap_date_time_parse("17-Foo-1996 02:44:25 +0000", &t));
	ck_assert(!imap_date_time_parse("31-Feb-1996 02:44:25 +0000", &t));
	ck_assert(!imap_date_time_parse("17-Jul-1996 25:44:25 +0000", &t));
	ck_assert(imap_date_parse("1-Feb-1994", &t));
	ck_assert_int_eq(t, 760060800);
	ck_assert(imap_date_parse("01-feb-1994", &t));
	ck_assert(!imap_date_parse("1-Feb-94", &t));
	ck_assert(!imap_date_parse("1-Feb-1994x", &t));
	setenv("TZ", "UTC", 1);
	tzset();
	buffer_init(&out, 0);
	imap_date_time_write(&out, 837596665);
	ck_assert_str_eq(buffer_cstr(&out), "\"17-Jul-1996 09:44:25 +0000\"");
	buffer_clear(&out);
}
END_TEST

/* ---- authdb (the login check the IMAP core uses) ------------------------- */

static void write_users(const char *path, const char *line)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(line, f);
	fclose(f);
}

START_TEST(test_authdb)
{
	char dir[] = "/tmp/test-imap-authdb-XXXXXX", path[128], line[512];
	const char *error, *reason;
	char *hash, *user;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/users", dir);
	ck_assert_int_eq(password_hash("secret", PASSWORD_SCHEME_SHA512_CRYPT,
				       &hash, &error), 0);
	snprintf(line, sizeof(line), "Alice@Example.com:%s\n", hash);
	write_users(path, line);
	authdb_reset();
	ck_assert_int_eq(authdb_verify(path, "alice@EXAMPLE.com", "secret", &user,
				       &reason), AUTHDB_OK);
	ck_assert_str_eq(user, "alice@example.com");
	free(user);
	ck_assert_int_eq(authdb_verify(path, "alice@example.com", "wrong", &user,
				       &reason), AUTHDB_FAILED);
	ck_assert_ptr_null(user);
	ck_assert_int_eq(authdb_verify(path, "nobody@example.com", "secret", &user,
				       &reason), AUTHDB_FAILED);
	ck_assert_int_eq(authdb_verify(path, "not an address", "secret", &user,
				       &reason), AUTHDB_FAILED);
	/* the file changes: reloaded (another size) */
	snprintf(line, sizeof(line), "# comment\nbob@example.com:%s\n", hash);
	write_users(path, line);
	ck_assert_int_eq(authdb_verify(path, "alice@example.com", "secret", &user,
				       &reason), AUTHDB_FAILED);
	ck_assert_int_eq(authdb_verify(path, "bob@example.com", "secret", &user,
				       &reason), AUTHDB_OK);
	free(user);
	/* a missing file is a temporary failure */
	ck_assert_int_eq(authdb_verify("/nonexistent/users", "bob@example.com",
				       "secret", &user, &reason), AUTHDB_TEMPFAIL);
	/* failures per address */
	ck_assert(!authdb_ip_blocked("192.0.2.1", 2));
	authdb_ip_failed("192.0.2.1");
	ck_assert(!authdb_ip_blocked("192.0.2.1", 2));
	authdb_ip_failed("192.0.2.1");
	ck_assert(authdb_ip_blocked("192.0.2.1", 2));
	ck_assert(!authdb_ip_blocked("192.0.2.1", 0));	/* no limit */
	ck_assert(!authdb_ip_blocked("192.0.2.2", 2));
	/* a full table drops the oldest entries, never fails */
	for (unsigned int i = 0; i < AUTHDB_FAILURE_TABLE_SIZE + 10; i++) {
		char ip[32];

		snprintf(ip, sizeof(ip), "10.0.%u.%u", i / 256, i % 256);
		authdb_ip_failed(ip);
	}
	authdb_reset();
	ck_assert(!authdb_ip_blocked("192.0.2.1", 2));
	free(hash);
	unlink(path);
	rmdir(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("imap");
	TCase *tc = tcase_create("parser");

	tcase_add_checked_fixture(tc, parser_setup, parser_teardown);
	tcase_add_test(tc, test_parser_atoms_strings);
	tcase_add_test(tc, test_parser_lists);
	tcase_add_test(tc, test_parser_literals);
	tcase_add_test(tc, test_parser_section_atom);
	tcase_add_test(tc, test_parser_errors);
	tcase_add_test(tc, test_parser_stream);
	tcase_add_test(tc, test_tail_literal);
	suite_add_tcase(s, tc);
	tc = tcase_create("util");
	tcase_add_checked_fixture(tc, parser_setup, parser_teardown);
	tcase_add_test(tc, test_seqset_parse);
	tcase_add_test(tc, test_seqset_write);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_strings);
	tcase_add_test(tc, test_mailbox_names);
	tcase_add_test(tc, test_dates);
	suite_add_tcase(s, tc);
	tc = tcase_create("authdb");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_authdb);
	suite_add_tcase(s, tc);
	return unit_run(&s, 1);
}
