/*
 * test-name.c - unit tests of src/maildir/name.c (user and mailbox names
 * to spool paths, modified UTF-7) and of the pure ACL functions in
 * src/maildir/acl.h.
 *
 * name.c is the gate between client-supplied names and the file system,
 * so besides vectors these tests check properties over many generated
 * names (a fixed seed keeps them repeatable): whatever is accepted maps
 * to a single safe directory name, and the mapping is a bijection
 * between canonical names and the directory names we accept.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/acl.h"
#include "maildir/name.h"
#include "unit.h"

/* ---- helpers ---- */

static void check_user(const char *user, const char *path,
		       const char *canonical)
{
	const char *error = NULL;
	char *path_r = NULL, *canonical_r = NULL;

	ck_assert_msg(name_user_path(user, &path_r, &canonical_r, &error) ==
		      NAME_OK, "'%s' rejected: %s", user, error);
	ck_assert_str_eq(path_r, path);
	ck_assert_str_eq(canonical_r, canonical);
	free(path_r);
	free(canonical_r);
}

static void check_user_bad(const char *user)
{
	const char *error = NULL;
	char *path = NULL;

	ck_assert_msg(name_user_path(user, &path, NULL, &error) == NAME_BAD,
		      "'%s' accepted as '%s'", user, path);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_null(path);
}

static void check_mailbox(const char *name, const char *canonical,
			  const char *dir)
{
	const char *error = NULL;
	char *canonical_r, *dir_r, *back;

	ck_assert_msg(name_mailbox_canonical(name, &canonical_r, &error) ==
		      NAME_OK, "'%s' rejected: %s", name, error);
	ck_assert_str_eq(canonical_r, canonical);
	ck_assert_msg(name_mailbox_to_dir(name, &dir_r, &error) == NAME_OK,
		      "'%s' has no dir: %s", name, error);
	ck_assert_str_eq(dir_r, dir);
	if (strcmp(dir, ".") != 0) {
		ck_assert_msg(name_dir_to_mailbox(dir_r, &back) == NAME_OK,
			      "dir '%s' not mapped back", dir_r);
		ck_assert_str_eq(back, canonical);
		free(back);
	}
	free(canonical_r);
	free(dir_r);
}

static void check_mailbox_bad(const char *name)
{
	const char *error = NULL;
	char *result = NULL;

	ck_assert_msg(name_mailbox_canonical(name, &result, &error) == NAME_BAD,
		      "'%s' accepted", name);
	ck_assert_ptr_nonnull(error);
	error = NULL;
	ck_assert_msg(name_mailbox_to_dir(name, &result, &error) == NAME_BAD,
		      "'%s' mapped to '%s'", name, result);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_null(result);
}

static void check_dir_bad(const char *dir)
{
	char *name = NULL;

	ck_assert_msg(name_dir_to_mailbox(dir, &name) == NAME_BAD,
		      "dir '%s' accepted as '%s'", dir, name);
	ck_assert_ptr_null(name);
}

static char *repeat(char c, size_t count)
{
	char *str = mem_zalloc(count + 1);

	memset(str, c, count);
	return str;
}

/* ---- users ---- */

START_TEST(test_user_path)
{
	check_user("Local@Example.COM", "example.com/local", "local@example.com");
	check_user("a.b@x.org", "x.org/a.b", "a.b@x.org");
	check_user("a.@x.org", "x.org/a.", "a.@x.org");
	check_user("~@x.org", "x.org/~", "~@x.org");
	check_user("a-b_c+d=e@mail.x-y.org", "mail.x-y.org/a-b_c+d=e",
		   "a-b_c+d=e@mail.x-y.org");
	check_user("x@localhost", "localhost/x", "x@localhost");
	check_user("x@1.2.3.4", "1.2.3.4/x", "x@1.2.3.4");
	/* the exact set of bytes written as they are */
	check_user("az09!#$&'*+=?^_`{|}~-@x", "x/az09!#$&'*+=?^_`{|}~-",
		   "az09!#$&'*+=?^_`{|}~-@x");
	/* everything else is escaped, '%' first so escaping is injective */
	check_user("a%b@x", "x/a%25b", "a%b@x");
	check_user("a%25b@x", "x/a%2525b", "a%25b@x");
	check_user("a\"b(c)d,e:f;g<h>i[j]k\\l@x",
		   "x/a%22b%28c%29d%2Ce%3Af%3Bg%3Ch%3Ei%5Bj%5Dk%5Cl",
		   "a\"b(c)d,e:f;g<h>i[j]k\\l@x");
	/* the last '@' separates the domain */
	check_user("a@b@x.org", "x.org/a%40b", "a@b@x.org");
}
END_TEST

START_TEST(test_user_path_dots)
{
	/* never ".", "..", a hidden name or a doubled dot */
	check_user(".@x", "x/%2E", ".@x");
	check_user("..@x", "x/%2E%2E", "..@x");
	check_user("...@x", "x/%2E%2E%2E", "...@x");
	check_user(".a@x", "x/%2Ea", ".a@x");
	check_user("a..b@x", "x/a.%2Eb", "a..b@x");
	check_user("a...b@x", "x/a.%2E%2Eb", "a...b@x");
	check_user("a.b.c@x", "x/a.b.c", "a.b.c@x");
}
END_TEST

START_TEST(test_user_path_bad)
{
	char *str;

	check_user_bad("");
	check_user_bad("nodomain");
	check_user_bad("@x.org");
	check_user_bad("a@");
	check_user_bad("a/b@x.org");
	check_user_bad("../x@x.org");
	check_user_bad("a b@x.org");
	check_user_bad("a\tb@x.org");
	check_user_bad("a\nb@x.org");
	check_user_bad("a\x7f@x.org");
	check_user_bad("\xc3\xa4@x.org");
	check_user_bad("a@.x");
	check_user_bad("a@x.");
	check_user_bad("a@.");
	check_user_bad("a@..");
	check_user_bad("a@x..y");
	check_user_bad("a@-x.org");
	check_user_bad("a@x-.org");
	check_user_bad("a@x.-org");
	check_user_bad("a@x_y.org");
	check_user_bad("a@x/y");
	check_user_bad("a@../x");
	check_user_bad("a@x/../y");
	check_user_bad("a@[1.2.3.4]");
	check_user_bad("a@x org");
	check_user_bad("a@\xc3\xa4.org");

	/* local part: 64 bytes fit, 65 do not */
	str = repeat('a', 65);
	memcpy(str + 63, "@x", 2);
	check_user(str, "x/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		   str);
	free(str);
	str = mem_printf("%s@x", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	check_user_bad(str);
	free(str);
}
END_TEST

START_TEST(test_user_path_domain_length)
{
	char *label63 = repeat('b', 63), *label64 = repeat('b', 64);
	char *str, *path, *domain;

	str = mem_printf("a@%s.org", label63);
	path = mem_printf("%s.org/a", label63);
	check_user(str, path, str);
	free(str);
	free(path);
	str = mem_printf("a@%s.org", label64);
	check_user_bad(str);
	free(str);

	/* 253 bytes: 3 * 63 + 3 dots + 61 */
	domain = mem_printf("%s.%s.%s.%.61s", label63, label63, label63,
			    label63);
	ck_assert_uint_eq(strlen(domain), 253);
	str = mem_printf("a@%s", domain);
	path = mem_printf("%s/a", domain);
	check_user(str, path, str);
	free(str);
	free(path);
	str = mem_printf("a@%sb", domain);
	check_user_bad(str);
	free(str);
	free(domain);
	free(label63);
	free(label64);
}
END_TEST

/* ---- mailbox names ---- */

START_TEST(test_mailbox_inbox)
{
	check_mailbox("INBOX", "INBOX", ".");
	check_mailbox("inbox", "INBOX", ".");
	check_mailbox("InBoX", "INBOX", ".");
	check_mailbox("inbox/Sub", "INBOX/Sub", ".INBOX.Sub");
	check_mailbox("Inbox/a/b", "INBOX/a/b", ".INBOX.a.b");
	/* only the first level is special */
	check_mailbox("inboxes", "inboxes", ".inboxes");
	check_mailbox("Inbox2/x", "Inbox2/x", ".Inbox2.x");
	check_mailbox("a/inbox", "a/inbox", ".a.inbox");

	ck_assert(name_is_inbox("INBOX"));
	ck_assert(name_is_inbox("inbox"));
	ck_assert(name_is_inbox("iNbOx"));
	ck_assert(!name_is_inbox("INBOX/x"));
	ck_assert(!name_is_inbox("INBOXx"));
	ck_assert(!name_is_inbox("INBO"));
	ck_assert(!name_is_inbox(""));
}
END_TEST

START_TEST(test_mailbox_escape)
{
	check_mailbox("Sent", "Sent", ".Sent");
	check_mailbox("Archive/2024", "Archive/2024", ".Archive.2024");
	check_mailbox("a.b", "a.b", ".a%2Eb");
	check_mailbox(".hidden", ".hidden", ".%2Ehidden");
	check_mailbox("...", "...", ".%2E%2E%2E");
	check_mailbox("a./.b", "a./.b", ".a%2E.%2Eb");
	check_mailbox("~", "~", ".%7E");
	check_mailbox("~peter/mail", "~peter/mail", ".%7Epeter.mail");
	check_mailbox("%", "%", ".%25");
	check_mailbox("%2E", "%2E", ".%252E");
	check_mailbox("a\\b", "a\\b", ".a%5Cb");
	check_mailbox("a b", "a b", ".a b");
	check_mailbox(" ", " ", ". ");
	check_mailbox("*", "*", ".*");
	check_mailbox("\"q\"", "\"q\"", ".\"q\"");
	check_mailbox("&AOQ-", "&AOQ-", ".&AOQ-");
	check_mailbox("cur", "cur", ".cur");
	check_mailbox("tmp/new", "tmp/new", ".tmp.new");
	/* UTF-8 is stored raw */
	check_mailbox("\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac",
		      "\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac",
		      ".\xe5\x8f\xb0\xe5\x8c\x97.\xe6\x97\xa5\xe6\x9c\xac");
	check_mailbox("Entw\xc3\xbcrfe", "Entw\xc3\xbcrfe", ".Entw\xc3\xbcrfe");
	check_mailbox("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", ".\xf0\x9f\x98\x80");
	check_mailbox("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf", ".\xf4\x8f\xbf\xbf");
	check_mailbox("\xc2\xa0", "\xc2\xa0", ".\xc2\xa0");
}
END_TEST

START_TEST(test_mailbox_bad_structure)
{
	check_mailbox_bad("");
	check_mailbox_bad("/");
	check_mailbox_bad("//");
	check_mailbox_bad("/a");
	check_mailbox_bad("a/");
	check_mailbox_bad("a//b");
	check_mailbox_bad("INBOX/");
	check_mailbox_bad("../");
	check_mailbox_bad("/..");
	check_mailbox_bad("a/../");
}
END_TEST

START_TEST(test_mailbox_path_tricks)
{
	/* valid names, but escaped so that no level is "." or ".." and no
	   '/' ever reaches the file system */
	check_mailbox(".", ".", ".%2E");
	check_mailbox("..", "..", ".%2E%2E");
	check_mailbox("../x", "../x", ".%2E%2E.x");
	check_mailbox("x/..", "x/..", ".x.%2E%2E");
	check_mailbox("a/../b", "a/../b", ".a.%2E%2E.b");
	check_mailbox("a/./b", "a/./b", ".a.%2E.b");
	check_mailbox("../../../etc/passwd", "../../../etc/passwd",
		      ".%2E%2E.%2E%2E.%2E%2E.etc.passwd");
	check_mailbox("inbox/..", "INBOX/..", ".INBOX.%2E%2E");
	check_mailbox("~/.ssh", "~/.ssh", ".%7E.%2Essh");
	check_mailbox("..\\..\\x", "..\\..\\x", ".%2E%2E%5C%2E%2E%5Cx");
}
END_TEST

START_TEST(test_mailbox_bad_bytes)
{
	/* C0 controls, DEL and C1 controls */
	check_mailbox_bad("a\x01" "b");
	check_mailbox_bad("a\tb");
	check_mailbox_bad("a\nb");
	check_mailbox_bad("a\rb");
	check_mailbox_bad("\x1f");
	check_mailbox_bad("a\x7f");
	check_mailbox_bad("\xc2\x80");
	check_mailbox_bad("a\xc2\x9f" "b");
	/* invalid UTF-8 */
	check_mailbox_bad("\x80");
	check_mailbox_bad("a\xbf");
	check_mailbox_bad("\xc0\xaf");			/* overlong '/' */
	check_mailbox_bad("\xc0\xae\xc0\xae");		/* overlong ".." */
	check_mailbox_bad("\xc1\xbf");
	check_mailbox_bad("\xe0\x80\xaf");
	check_mailbox_bad("\xe0\x9f\xbf");
	check_mailbox_bad("\xf0\x80\x80\xaf");
	check_mailbox_bad("\xf0\x8f\xbf\xbf");
	check_mailbox_bad("\xed\xa0\x80");		/* U+D800 */
	check_mailbox_bad("\xed\xbf\xbf");		/* U+DFFF */
	check_mailbox_bad("\xed\xa0\xbd\xed\xb8\x80");	/* CESU-8 pair */
	check_mailbox_bad("\xf4\x90\x80\x80");		/* U+110000 */
	check_mailbox_bad("\xf5\x80\x80\x80");
	check_mailbox_bad("\xf8\x88\x80\x80\x80");
	check_mailbox_bad("\xfe");
	check_mailbox_bad("\xff");
	check_mailbox_bad("\xe6\x97");			/* truncated */
	check_mailbox_bad("\xe6\x97x");
	check_mailbox_bad("\xe6/\x97");
	check_mailbox_bad("\xf0\x9f\x98");
	check_mailbox_bad("a\xc3");
	check_mailbox_bad("\xc3\xc3\xa4");
}
END_TEST

START_TEST(test_mailbox_limits)
{
	char *str, *dir;
	struct buffer buf;

	/* levels */
	buffer_init(&buf, 0);
	for (int i = 0; i < NAME_MAX_LEVELS; i++)
		buffer_append_str(&buf, i == 0 ? "a" : "/a");
	check_mailbox(buffer_cstr(&buf), buffer_cstr(&buf),
		      ".a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a");
	buffer_append_str(&buf, "/a");
	check_mailbox_bad(buffer_cstr(&buf));
	buffer_clear(&buf);

	/* the directory name: 255 bytes fit, 256 do not */
	str = repeat('a', 254);
	dir = mem_printf(".%s", str);
	check_mailbox(str, str, dir);
	free(str);
	free(dir);
	str = repeat('a', 255);
	check_mailbox_bad(str);
	free(str);
	/* ... counting escapes: 84 '%' are 252 bytes, 85 are 255 */
	str = repeat('%', 84);
	ck_assert_int_eq(name_mailbox_to_dir(str, &dir, &(const char *){NULL}),
			 NAME_OK);
	ck_assert_uint_eq(strlen(dir), 253);
	free(dir);
	free(str);
	str = repeat('%', 85);
	check_mailbox_bad(str);
	free(str);
	str = repeat('.', 85);
	check_mailbox_bad(str);
	free(str);
	/* ... and UTF-8 bytes */
	buffer_init(&buf, 0);
	for (int i = 0; i < 85; i++)
		buffer_append_str(&buf, "\xe6\x97\xa5");
	check_mailbox_bad(buffer_cstr(&buf));
	buffer_truncate(&buf, 84 * 3);
	ck_assert_int_eq(name_mailbox_to_dir(buffer_cstr(&buf), &dir,
					     &(const char *){NULL}), NAME_OK);
	free(dir);
	buffer_clear(&buf);

	/* total length */
	str = repeat('a', NAME_MAILBOX_MAX + 1);
	for (size_t i = 100; i < NAME_MAILBOX_MAX; i += 100)
		str[i] = '/';
	check_mailbox_bad(str);
	free(str);
}
END_TEST

START_TEST(test_dir_to_mailbox_bad)
{
	check_dir_bad("");
	check_dir_bad(".");
	check_dir_bad("..");
	check_dir_bad("...");
	check_dir_bad("cur");
	check_dir_bad("new");
	check_dir_bad("tmp");
	check_dir_bad("Sent");
	check_dir_bad("clustermail.index");
	check_dir_bad("subscriptions");
	/* empty levels */
	check_dir_bad("..a");
	check_dir_bad(".a.");
	check_dir_bad(".a..b");
	/* INBOX is ".", never ".INBOX"; its children are ".INBOX.x" */
	check_dir_bad(".INBOX");
	check_dir_bad(".inbox");
	check_dir_bad(".inbox.x");
	check_dir_bad(".Inbox.x");
	/* only the escapes we write */
	check_dir_bad(".a%2eb");
	check_dir_bad(".a%41b");
	check_dir_bad(".%2F");
	check_dir_bad(".a%2Fb");
	check_dir_bad(".%00");
	check_dir_bad(".%00x");
	check_dir_bad(".%01");
	check_dir_bad(".%");
	check_dir_bad(".a%");
	check_dir_bad(".a%2");
	check_dir_bad(".a%G0");
	check_dir_bad(".a%-1");
	check_dir_bad(".%C3%A4");
	/* bytes that are always escaped, found raw */
	check_dir_bad(".~");
	check_dir_bad(".a\\b");
	check_dir_bad(".a/b");
	/* what names never hold */
	check_dir_bad(".a\x01");
	check_dir_bad(".a\x7f");
	check_dir_bad(".\xc0\xae");
	check_dir_bad(".\xed\xa0\x80");
	check_dir_bad(".\xff");
}
END_TEST

START_TEST(test_mailbox_child)
{
	ck_assert(name_is_child("a/b", "a/b/c"));
	ck_assert(name_is_child("a", "a/b/c"));
	ck_assert(name_is_child("INBOX", "INBOX/x"));
	ck_assert(!name_is_child("a/b", "a/bc"));
	ck_assert(!name_is_child("a/b", "a/b"));
	ck_assert(!name_is_child("a/b", "a/b/"));
	ck_assert(!name_is_child("a/b", "a"));
	ck_assert(!name_is_child("a/b/c", "a/b"));
	ck_assert(!name_is_child("b", "a/b"));
	ck_assert(!name_is_child("", "/a"));
}
END_TEST

/* Deterministic generator (xorshift) for the property tests. */
static uint32_t rand_next(uint32_t *state)
{
	uint32_t x = *state;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *state = x;
}

/* A name from pieces chosen to hit every rule: separators, escaped
   bytes, dots, INBOX spellings, valid and invalid UTF-8, controls. */
static void random_name(uint32_t *state, struct buffer *buf)
{
	static const char *const pieces[] = {
		"a", "B", "/", "/", ".", ".", "..", "%", "%2E", "~", "\\", " ",
		"INBOX", "inbox", "&", "-", "\xc3\xa4", "\xe6\x97\xa5",
		"\xf0\x9f\x98\x80", "\x01", "\x7f", "\xc2\x85", "\xc3",
		"\xa4", "\xed\xa0\x80", "\xc0\xae", "\xf4\x90\x80\x80",
	};
	unsigned int len = rand_next(state) % 8;

	buffer_reset(buf);
	for (unsigned int i = 0; i <= len; i++)
		buffer_append_str(buf, pieces[rand_next(state) % N_ELEMENTS(pieces)]);
}

/* dir names we accept must be ones we would write and must be safe */
static void check_dir_safe(const char *dir)
{
	ck_assert(dir[0] == '.');
	ck_assert_msg(strchr(dir, '/') == NULL, "'/' in dir '%s'", dir);
	ck_assert_msg(strchr(dir, '~') == NULL, "'~' in dir '%s'", dir);
	ck_assert_msg(strchr(dir, '\\') == NULL, "'\\' in dir '%s'", dir);
	/* never "..", and no empty level (which would be a hidden level) */
	ck_assert_msg(strstr(dir, "..") == NULL, "'..' in dir '%s'", dir);
	ck_assert_msg(strlen(dir) <= 255, "dir too long");
	for (const unsigned char *p = (const unsigned char *)dir; *p != '\0'; p++)
		ck_assert_msg(*p >= 0x20 && *p != 0x7f, "control in dir");
}

START_TEST(test_mailbox_roundtrip_random)
{
	uint32_t state = 0x12345678;
	struct buffer buf;
	unsigned int accepted = 0;

	buffer_init(&buf, 0);
	for (int i = 0; i < 200000; i++) {
		const char *error;
		char *canonical, *dir, *back, *dir2;

		random_name(&state, &buf);
		if (name_mailbox_canonical(buffer_cstr(&buf), &canonical,
					   &error) < 0) {
			ck_assert_int_eq(name_mailbox_to_dir(buffer_cstr(&buf),
							     &dir, &error),
					 NAME_BAD);
			continue;
		}
		accepted++;
		ck_assert_int_eq(name_mailbox_to_dir(buffer_cstr(&buf), &dir,
						     &error), NAME_OK);
		/* canonicalizing is idempotent and gives the same dir */
		ck_assert_int_eq(name_mailbox_to_dir(canonical, &dir2, &error),
				 NAME_OK);
		ck_assert_str_eq(dir, dir2);
		free(dir2);
		check_dir_safe(dir);
		if (name_is_inbox(canonical)) {
			ck_assert_str_eq(dir, ".");
		} else {
			ck_assert_msg(name_dir_to_mailbox(dir, &back) == NAME_OK,
				      "dir '%s' of '%s' not mapped back", dir,
				      canonical);
			ck_assert_str_eq(back, canonical);
			free(back);
		}
		free(dir);
		free(canonical);
	}
	buffer_clear(&buf);
	/* the generator must exercise both sides */
	ck_assert_uint_gt(accepted, 20000);
}
END_TEST

START_TEST(test_dir_roundtrip_random)
{
	static const char *const pieces[] = {
		".", ".", "a", "%", "%2E", "%25", "%7E", "%5C", "%2e", "%41",
		"%2F", "%00", "~", "\\", "INBOX", "inbox", "\xc3\xa4", "\xc3",
		"\x01",
	};
	uint32_t state = 0x9abcdef0;
	unsigned int accepted = 0;
	struct buffer buf;

	buffer_init(&buf, 0);
	for (int i = 0; i < 200000; i++) {
		unsigned int len = rand_next(&state) % 6;
		const char *error;
		char *name, *dir;

		buffer_reset(&buf);
		buffer_append_byte(&buf, '.');
		for (unsigned int j = 0; j <= len; j++)
			buffer_append_str(&buf, pieces[rand_next(&state) %
						       N_ELEMENTS(pieces)]);
		if (name_dir_to_mailbox(buffer_cstr(&buf), &name) < 0)
			continue;
		accepted++;
		/* an accepted dir is exactly what we would write */
		ck_assert_int_eq(name_mailbox_to_dir(name, &dir, &error),
				 NAME_OK);
		ck_assert_str_eq(dir, buffer_cstr(&buf));
		check_dir_safe(dir);
		free(dir);
		free(name);
	}
	buffer_clear(&buf);
	ck_assert_uint_gt(accepted, 10000);
}
END_TEST

/* ---- modified UTF-7 ---- */

static void check_mutf7(const char *utf8, const char *mutf7)
{
	char *result;

	ck_assert_msg(name_utf8_to_mutf7(utf8, &result) == NAME_OK,
		      "utf8 '%s' not encoded", utf8);
	ck_assert_str_eq(result, mutf7);
	free(result);
	ck_assert_msg(name_mutf7_to_utf8(mutf7, &result) == NAME_OK,
		      "mutf7 '%s' not decoded", mutf7);
	ck_assert_str_eq(result, utf8);
	free(result);
}

static void check_mutf7_bad(const char *mutf7)
{
	char *result = NULL;

	ck_assert_msg(name_mutf7_to_utf8(mutf7, &result) == NAME_BAD,
		      "'%s' decoded as '%s'", mutf7, result);
	ck_assert_ptr_null(result);
}

START_TEST(test_mutf7_vectors)
{
	/* RFC 3501 5.1.3 */
	check_mutf7("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
		    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
		    "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
	check_mutf7("", "");
	check_mutf7("INBOX", "INBOX");
	check_mutf7(" !\"#$%'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~",
		    " !\"#$%'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~");
	check_mutf7("&", "&-");
	check_mutf7("&&", "&-&-");
	check_mutf7("a&b", "a&-b");
	check_mutf7("\xc3\xa4", "&AOQ-");
	check_mutf7("Entw\xc3\xbcrfe", "Entw&APw-rfe");
	check_mutf7("a\xc3\xa4" "b", "a&AOQ-b");
	/* one run for adjacent characters */
	check_mutf7("\xc3\xa4\xc3\xb6", "&AOQA9g-");
	check_mutf7("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xf0\x9f\x98\x80x",
		    "&ZeVnLIqe2D3eAA-x");
	/* a run, then '&' */
	check_mutf7("\xc3\xa4&", "&AOQ-&-");
	check_mutf7("&\xc3\xa4", "&-&AOQ-");
	/* RFC 2152's example in the modified form */
	check_mutf7("Hi Mom -\xe2\x98\xba-!", "Hi Mom -&Jjo--!");
	/* outside the BMP: a surrogate pair */
	check_mutf7("\xf0\x9f\x98\x80", "&2D3eAA-");
	check_mutf7("\xf4\x8f\xbf\xbf", "&2,,f,w-");
	/* controls cannot represent themselves */
	check_mutf7("\x01", "&AAE-");
	check_mutf7("\x7f", "&AH8-");
	check_mutf7("\xc2\x80", "&AIA-");
	check_mutf7("\xef\xbf\xbf", "&,,8-");
}
END_TEST

START_TEST(test_mutf7_bad)
{
	check_mutf7_bad("&");
	check_mutf7_bad("&Jjo");		/* unterminated */
	check_mutf7_bad("&Jjo!");		/* not base64 */
	check_mutf7_bad("&AOQ");
	check_mutf7_bad("&U/BTFw-");		/* '/' is ',' here */
	check_mutf7_bad("&AOQ=-");		/* no padding */
	check_mutf7_bad("&A-");			/* 6 bits: no character */
	check_mutf7_bad("&AOQA-");		/* 8 leftover bits */
	check_mutf7_bad("&AOR-");		/* non-zero padding bits */
	check_mutf7_bad("&,,,-");
	check_mutf7_bad("&AGE-");		/* 'a' must represent itself */
	check_mutf7_bad("&ACY-");		/* '&' must be "&-" */
	check_mutf7_bad("&ACA-");		/* space */
	check_mutf7_bad("&AH4-");		/* '~' */
	check_mutf7_bad("&AOQAYQ-");		/* 'a' inside a run */
	check_mutf7_bad("&AOQ-&APY-");		/* null shift: one run */
	check_mutf7_bad("&AAA-");		/* U+0000 */
	check_mutf7_bad("&2D0-");		/* lone high surrogate */
	check_mutf7_bad("&2D3YPQ-");		/* high + high */
	check_mutf7_bad("&3gA-");		/* lone low surrogate */
	check_mutf7_bad("&3gDYPQ-");		/* low + high */
	check_mutf7_bad("\xc3\xa4");		/* raw 8-bit */
	check_mutf7_bad("a\tb");		/* raw control */
	check_mutf7_bad("\x7f");
	check_mutf7_bad("&-&");
	check_mutf7_bad("a&");
}
END_TEST

START_TEST(test_mutf7_encode_bad)
{
	char *result = NULL;

	ck_assert_int_eq(name_utf8_to_mutf7("\xff", &result), NAME_BAD);
	ck_assert_int_eq(name_utf8_to_mutf7("a\xc0\xaf", &result), NAME_BAD);
	ck_assert_int_eq(name_utf8_to_mutf7("\xed\xa0\x80", &result), NAME_BAD);
	ck_assert_int_eq(name_utf8_to_mutf7("\xf4\x90\x80\x80", &result),
			 NAME_BAD);
	ck_assert_int_eq(name_utf8_to_mutf7("\xc3\xa4\xe6\x97", &result),
			 NAME_BAD);
	ck_assert_ptr_null(result);
}
END_TEST

START_TEST(test_mutf7_roundtrip_random)
{
	static const uint32_t chars[] = {
		'a', '&', '-', ' ', '~', 0x01, 0x7f, 0xe4, 0xff, 0x100,
		0x65e5, 0xd7ff, 0xe000, 0xfffd, 0xffff, 0x10000, 0x1f600,
		0x10ffff,
	};
	uint32_t state = 42;
	struct buffer buf;

	buffer_init(&buf, 0);
	for (int i = 0; i < 50000; i++) {
		unsigned int len = rand_next(&state) % 10;
		char *mutf7, *back;

		buffer_reset(&buf);
		for (unsigned int j = 0; j < len; j++) {
			uint32_t cp = chars[rand_next(&state) % N_ELEMENTS(chars)];

			if (cp < 0x80) {
				buffer_append_byte(&buf, cp);
			} else if (cp < 0x800) {
				buffer_append_byte(&buf, 0xc0 | (cp >> 6));
				buffer_append_byte(&buf, 0x80 | (cp & 0x3f));
			} else if (cp < 0x10000) {
				buffer_append_byte(&buf, 0xe0 | (cp >> 12));
				buffer_append_byte(&buf, 0x80 | ((cp >> 6) & 0x3f));
				buffer_append_byte(&buf, 0x80 | (cp & 0x3f));
			} else {
				buffer_append_byte(&buf, 0xf0 | (cp >> 18));
				buffer_append_byte(&buf, 0x80 | ((cp >> 12) & 0x3f));
				buffer_append_byte(&buf, 0x80 | ((cp >> 6) & 0x3f));
				buffer_append_byte(&buf, 0x80 | (cp & 0x3f));
			}
		}
		ck_assert_int_eq(name_utf8_to_mutf7(buffer_cstr(&buf), &mutf7),
				 NAME_OK);
		for (const char *p = mutf7; *p != '\0'; p++)
			ck_assert(*p >= 0x20 && *p <= 0x7e);
		ck_assert_int_eq(name_mutf7_to_utf8(mutf7, &back), NAME_OK);
		ck_assert_str_eq(back, buffer_cstr(&buf));
		free(mutf7);
		free(back);
	}
	buffer_clear(&buf);
}
END_TEST

/* ---- ACL rights ---- */

static const char *rights_str(unsigned int rights, unsigned int flags)
{
	static char str[ACL_RIGHTS_STRING_SIZE];

	acl_rights_format(rights, flags, str);
	return str;
}

static unsigned int rights_parse(const char *str)
{
	const char *error = NULL;
	unsigned int rights;

	ck_assert_msg(acl_rights_parse(str, &rights, &error) == 0,
		      "rights '%s' rejected: %s", str, error);
	return rights;
}

START_TEST(test_acl_rights_parse)
{
	const char *error = NULL;
	unsigned int rights = 12345;

	ck_assert_uint_eq(rights_parse("lrswipkxtea"), ACL_RIGHTS_ALL);
	ck_assert_uint_eq(rights_parse("aetxkpiwsrl"), ACL_RIGHTS_ALL);
	ck_assert_uint_eq(rights_parse(""), 0);
	ck_assert_uint_eq(rights_parse("l"), ACL_RIGHT_LOOKUP);
	ck_assert_uint_eq(rights_parse("a"), ACL_RIGHT_ADMIN);
	ck_assert_uint_eq(rights_parse("llrr"), ACL_RIGHT_LOOKUP | ACL_RIGHT_READ);
	/* RFC 4314 2.1.1, the "c = kx, d = et" choice */
	ck_assert_uint_eq(rights_parse("c"),
			  ACL_RIGHT_CREATE | ACL_RIGHT_DELETE_MAILBOX);
	ck_assert_uint_eq(rights_parse("d"),
			  ACL_RIGHT_EXPUNGE | ACL_RIGHT_DELETE_MESSAGES);
	ck_assert_uint_eq(rights_parse("dte"), rights_parse("d"));
	ck_assert_uint_eq(rights_parse("lrswipcda"), ACL_RIGHTS_ALL);

	ck_assert_int_eq(acl_rights_parse("z", &rights, &error), -1);
	ck_assert_ptr_nonnull(error);
	ck_assert_int_eq(acl_rights_parse("lrz", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_parse("L", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_parse("0", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_parse("l r", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_parse("+l", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_parse("l\tr", &rights, &error), -1);
	ck_assert_uint_eq(rights, 12345);
}
END_TEST

START_TEST(test_acl_rights_format)
{
	ck_assert_str_eq(rights_str(ACL_RIGHTS_ALL, 0), "lrswipkxtea");
	ck_assert_str_eq(rights_str(0, 0), "");
	ck_assert_str_eq(rights_str(0, ACL_FORMAT_VIRTUAL), "");
	ck_assert_str_eq(rights_str(rights_parse("arl"), 0), "lra");
	ck_assert_str_eq(rights_str(rights_parse("c"), 0), "kx");
	ck_assert_str_eq(rights_str(rights_parse("d"), 0), "te");
	/* RFC 4314 2.1.1: c and d shown when any member is present */
	ck_assert_str_eq(rights_str(ACL_RIGHTS_ALL, ACL_FORMAT_VIRTUAL),
			 "lrswipkxteacd");
	ck_assert_str_eq(rights_str(rights_parse("lr"), ACL_FORMAT_VIRTUAL),
			 "lr");
	ck_assert_str_eq(rights_str(rights_parse("lrk"), ACL_FORMAT_VIRTUAL),
			 "lrkc");
	ck_assert_str_eq(rights_str(rights_parse("x"), ACL_FORMAT_VIRTUAL),
			 "xc");
	ck_assert_str_eq(rights_str(rights_parse("lrt"), ACL_FORMAT_VIRTUAL),
			 "lrtd");
	ck_assert_str_eq(rights_str(rights_parse("e"), ACL_FORMAT_VIRTUAL),
			 "ed");
	ck_assert_str_eq(rights_str(rights_parse("cd"), ACL_FORMAT_VIRTUAL),
			 "kxtecd");
	/* unknown bits are never printed */
	ck_assert_str_eq(rights_str(0xfffff800 | ACL_RIGHT_LOOKUP, 0), "l");
	ck_assert_uint_le(strlen("lrswipkxteacd") + 1, ACL_RIGHTS_STRING_SIZE);
}
END_TEST

static const char *rights_modify(const char *current, const char *spec)
{
	const char *error = NULL;
	unsigned int rights;

	ck_assert_msg(acl_rights_modify(rights_parse(current), spec, &rights,
					&error) == 0, "'%s' rejected: %s",
		      spec, error);
	return rights_str(rights, 0);
}

START_TEST(test_acl_rights_modify)
{
	const char *error = NULL;
	unsigned int rights = 7;

	ck_assert_str_eq(rights_modify("lr", "+w"), "lrw");
	ck_assert_str_eq(rights_modify("lr", "+lw"), "lrw");
	ck_assert_str_eq(rights_modify("lr", "-r"), "l");
	ck_assert_str_eq(rights_modify("lr", "-rw"), "l");
	ck_assert_str_eq(rights_modify("lr", "-lr"), "");
	ck_assert_str_eq(rights_modify("lr", "+c"), "lrkx");
	ck_assert_str_eq(rights_modify("lrswipkxtea", "-d"), "lrswipkxa");
	ck_assert_str_eq(rights_modify("lrswipkxtea", "-c"), "lrswiptea");
	ck_assert_str_eq(rights_modify("lr", "+"), "lr");
	ck_assert_str_eq(rights_modify("lr", "-"), "lr");
	/* without a sign the rights are replaced */
	ck_assert_str_eq(rights_modify("lr", "w"), "w");
	ck_assert_str_eq(rights_modify("lr", ""), "");
	ck_assert_str_eq(rights_modify("", "ad"), "tea");

	ck_assert_int_eq(acl_rights_modify(0, "+z", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_modify(0, "-z", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_modify(0, "z", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_modify(0, "++l", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_modify(0, "+-l", &rights, &error), -1);
	ck_assert_int_eq(acl_rights_modify(0, "l+", &rights, &error), -1);
	ck_assert_uint_eq(rights, 7);
}
END_TEST

static void check_identifier(const char *identifier, const char *normalized)
{
	const char *error = NULL;
	char *result;

	ck_assert_msg(acl_identifier_normalize(identifier, &result, &error) == 0,
		      "'%s' rejected: %s", identifier, error);
	ck_assert_str_eq(result, normalized);
	free(result);
}

static void check_identifier_bad(const char *identifier)
{
	const char *error = NULL;
	char *result = NULL;

	ck_assert_msg(acl_identifier_normalize(identifier, &result, &error) < 0,
		      "'%s' accepted", identifier);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_null(result);
}

START_TEST(test_acl_identifier)
{
	char *str;

	check_identifier("anyone", "anyone");
	check_identifier("Anyone", "anyone");
	check_identifier("authenticated", "authenticated");
	check_identifier("Fred@Example.COM", "fred@example.com");
	check_identifier("-Bob@x.org", "-bob@x.org");
	check_identifier("--bob@x.org", "--bob@x.org");
	check_identifier("$group", "$group");
	ck_assert(acl_identifier_is_negative("-bob"));
	ck_assert(!acl_identifier_is_negative("bob"));

	check_identifier_bad("");
	check_identifier_bad("-");
	check_identifier_bad("a\tb");
	check_identifier_bad("a\nb");
	check_identifier_bad("a\rb");
	check_identifier_bad("a b");
	check_identifier_bad("a\x01");
	check_identifier_bad("a\x7f");
	check_identifier_bad("\xc3\xa4@x");
	check_identifier_bad("-\t");

	str = repeat('a', ACL_IDENTIFIER_MAX);
	check_identifier(str, str);
	free(str);
	str = repeat('a', ACL_IDENTIFIER_MAX + 1);
	check_identifier_bad(str);
	free(str);
}
END_TEST

static void rules_from(const char *text, struct acl_rule **rules_r,
		       size_t *count_r, unsigned int bad_expected)
{
	unsigned int bad;

	acl_rules_parse(text, strlen(text), rules_r, count_r, &bad);
	ck_assert_uint_eq(bad, bad_expected);
}

static const char *effective(const char *text, const char *identifier)
{
	struct acl_rule *rules;
	size_t count;
	unsigned int rights;

	rules_from(text, &rules, &count, 0);
	rights = acl_rights_effective(rules, count, "owner@x", identifier);
	acl_rules_free(rules, count);
	return rights_str(rights, 0);
}

START_TEST(test_acl_effective)
{
	const char *acl =
		"anyone\tlr\n"
		"authenticated\ti\n"
		"fred@x\tws\n"
		"-fred@x\tr\n"
		"-bad@x\tlrswipkxtea\n"
		"boss@x\tlrswipkxtea\n";

	/* the owner has everything, whatever the ACL says */
	ck_assert_str_eq(effective("", "owner@x"), "lrswipkxtea");
	ck_assert_str_eq(effective("-owner@x\tlrswipkxtea\n-anyone\tl\n",
				   "owner@x"), "lrswipkxtea");
	ck_assert_str_eq(effective("", "OWNER@X"), "lrswipkxtea");
	/* no ACL: nobody else has anything */
	ck_assert_str_eq(effective("", "bob@x"), "");
	ck_assert_str_eq(effective("", NULL), "");

	ck_assert_str_eq(effective(acl, NULL), "lr");
	ck_assert_str_eq(effective(acl, "anyone"), "lr");
	ck_assert_str_eq(effective(acl, "bob@x"), "lri");
	ck_assert_str_eq(effective(acl, "fred@x"), "lswi");
	ck_assert_str_eq(effective(acl, "Fred@X"), "lswi");
	ck_assert_str_eq(effective(acl, "bad@x"), "");
	ck_assert_str_eq(effective(acl, "boss@x"), "lrswipkxtea");
	/* "-anyone" takes rights from everybody but the owner; a negative
	   entry wins wherever it is in the list */
	ck_assert_str_eq(effective("-anyone\tw\nboss@x\tlrw\n", "boss@x"),
			 "lr");
	ck_assert_str_eq(effective("boss@x\tlrw\n-anyone\tw\n", "boss@x"),
			 "lr");
	ck_assert_str_eq(effective("-authenticated\tr\nanyone\tlr\n", NULL),
			 "lr");
	ck_assert_str_eq(effective("-authenticated\tr\nanyone\tlr\n", "b@x"),
			 "l");
	/* the anonymous user is not "authenticated" */
	ck_assert_str_eq(effective("authenticated\tlr\n", NULL), "");
	ck_assert_str_eq(effective("authenticated\tlr\n", "b@x"), "lr");
	/* groups are stored but match nobody */
	ck_assert_str_eq(effective("$staff\tlr\n", "b@x"), "");
	/* another user's entry does not apply */
	ck_assert_str_eq(effective("fred@x\tlr\n", "fred@xx"), "");
	ck_assert_str_eq(effective("fred@x\tlr\n", "fre@x"), "");
}
END_TEST

START_TEST(test_acl_rules_file)
{
	struct acl_rule *rules;
	size_t count, size;
	char *data;

	/* empty */
	rules_from("", &rules, &count, 0);
	ck_assert_ptr_nonnull(rules);
	ck_assert_uint_eq(count, 0);
	data = acl_rules_serialize(rules, count, &size);
	ck_assert_str_eq(data, "");
	ck_assert_uint_eq(size, 0);
	free(data);
	acl_rules_free(rules, count);

	/* normalized on the way in, canonical on the way out; the last
	   line for an identifier wins; empty lines and entries without
	   rights vanish; a missing final newline is fine */
	rules_from("\nAnyone\trl\nfred@x\tc\n\nzero@x\t\ndup@x\tl\ndup@x\tr\n"
		   "-Neg@x\tdl", &rules, &count, 0);
	ck_assert_uint_eq(count, 4);
	data = acl_rules_serialize(rules, count, &size);
	ck_assert_str_eq(data, "anyone\tlr\nfred@x\tkx\ndup@x\tr\n-neg@x\tlte\n");
	ck_assert_uint_eq(size, strlen(data));
	ck_assert_uint_eq(acl_rules_lookup(rules, count, "fred@x"),
			  ACL_RIGHT_CREATE | ACL_RIGHT_DELETE_MAILBOX);
	ck_assert_uint_eq(acl_rules_lookup(rules, count, "nobody@x"), 0);
	acl_rules_free(rules, count);
	/* ... and reading it again gives the same */
	rules_from(data, &rules, &count, 0);
	ck_assert_uint_eq(count, 4);
	free(data);
	data = acl_rules_serialize(rules, count, &size);
	ck_assert_str_eq(data, "anyone\tlr\nfred@x\tkx\ndup@x\tr\n-neg@x\tlte\n");
	free(data);
	acl_rules_free(rules, count);

	/* bad lines are skipped and counted */
	rules_from("no-tab\n"
		   "a b\tlr\n"
		   "\tlr\n"
		   "-\tlr\n"
		   "x@x\tlrz\n"
		   "x@x\tl r\n"
		   "crlf@x\tlr\r\n"
		   "x@x\t+l\n"
		   "ok@x\tl\n"
		   "x@x\tl\tr\n", &rules, &count, 9);
	ck_assert_uint_eq(count, 1);
	ck_assert_str_eq(rules[0].identifier, "ok@x");
	acl_rules_free(rules, count);

	/* an embedded NUL spoils only its own line */
	acl_rules_parse("a@x\tl\0r\nb@x\tr\n", 15, &rules, &count,
			&(unsigned int){0});
	ck_assert_uint_eq(count, 1);
	ck_assert_str_eq(rules[0].identifier, "b@x");
	acl_rules_free(rules, count);
}
END_TEST

START_TEST(test_acl_rules_set)
{
	struct acl_rule *rules;
	size_t count, size;
	char *data;

	rules_from("a@x\tl\nb@x\tr\nc@x\ts\n", &rules, &count, 0);
	/* replace in place */
	acl_rules_set(&rules, &count, "b@x", ACL_RIGHT_WRITE);
	/* append */
	acl_rules_set(&rules, &count, "d@x", ACL_RIGHT_INSERT);
	/* remove from the middle, and something that is not there */
	acl_rules_set(&rules, &count, "a@x", 0);
	acl_rules_set(&rules, &count, "zz@x", 0);
	ck_assert_uint_eq(count, 3);
	data = acl_rules_serialize(rules, count, &size);
	ck_assert_str_eq(data, "b@x\tw\nc@x\ts\nd@x\ti\n");
	free(data);
	/* down to nothing */
	acl_rules_set(&rules, &count, "b@x", 0);
	acl_rules_set(&rules, &count, "d@x", 0);
	acl_rules_set(&rules, &count, "c@x", 0);
	ck_assert_uint_eq(count, 0);
	acl_rules_set(&rules, &count, "e@x", ACL_RIGHTS_ALL);
	ck_assert_uint_eq(count, 1);
	ck_assert_uint_eq(acl_rules_lookup(rules, count, "e@x"), ACL_RIGHTS_ALL);
	acl_rules_free(rules, count);
}
END_TEST

static Suite *name_suite(void)
{
	Suite *s = suite_create("name");
	TCase *tc = tcase_create("users");

	tcase_add_test(tc, test_user_path);
	tcase_add_test(tc, test_user_path_dots);
	tcase_add_test(tc, test_user_path_bad);
	tcase_add_test(tc, test_user_path_domain_length);
	suite_add_tcase(s, tc);

	tc = tcase_create("mailboxes");
	tcase_add_test(tc, test_mailbox_inbox);
	tcase_add_test(tc, test_mailbox_escape);
	tcase_add_test(tc, test_mailbox_bad_structure);
	tcase_add_test(tc, test_mailbox_path_tricks);
	tcase_add_test(tc, test_mailbox_bad_bytes);
	tcase_add_test(tc, test_mailbox_limits);
	tcase_add_test(tc, test_dir_to_mailbox_bad);
	tcase_add_test(tc, test_mailbox_child);
	suite_add_tcase(s, tc);

	tc = tcase_create("properties");
	/* 200,000 names each; generous under ASan */
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mailbox_roundtrip_random);
	tcase_add_test(tc, test_dir_roundtrip_random);
	tcase_add_test(tc, test_mutf7_roundtrip_random);
	suite_add_tcase(s, tc);

	tc = tcase_create("mutf7");
	tcase_add_test(tc, test_mutf7_vectors);
	tcase_add_test(tc, test_mutf7_bad);
	tcase_add_test(tc, test_mutf7_encode_bad);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *acl_suite(void)
{
	Suite *s = suite_create("acl");
	TCase *tc = tcase_create("rights");

	tcase_add_test(tc, test_acl_rights_parse);
	tcase_add_test(tc, test_acl_rights_format);
	tcase_add_test(tc, test_acl_rights_modify);
	tcase_add_test(tc, test_acl_identifier);
	tcase_add_test(tc, test_acl_effective);
	tcase_add_test(tc, test_acl_rules_file);
	tcase_add_test(tc, test_acl_rules_set);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { name_suite(), acl_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
