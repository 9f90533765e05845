/*
 * test-auth.c - unit tests for src/auth: password hashing and
 * verification, address rules, and the users file (load errors, changes,
 * atomic and durable saving, locking, large files).
 *
 * yescrypt and SHA512-CRYPT are slow on purpose, so the tests compute only
 * a handful of new hashes; userdb tests use fixed hash strings.
 */
#include "lib/lib.h"
#include "lib/str.h"
#include "auth/password.h"
#include "auth/userdb.h"
#include "unit.h"

#include <crypt.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* A real yescrypt hash (of "password"); userdb only checks its shape. */
#define HASH_Y "$y$j9T$K5GwIeap1le5MpmdGNTOU/$" \
	"PSa0pErAtxBx6LwxtbjePF0YMPzUp0tfjOVspsA3V56"
#define HASH_6 "$6$saltsalt$" \
	"qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc." \
	"eoxqOmSuNp2xS0ktL3nh/"

static char tmp_dir[64];
static char users_path[128];

/* tmp_setup - a fresh private directory for each test */
static void tmp_setup(void)
{
	strcpy(tmp_dir, "/tmp/test-auth.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
	snprintf(users_path, sizeof(users_path), "%s/users", tmp_dir);
}

/* tmp_teardown - remove the directory and everything in it (flat) */
static void tmp_teardown(void)
{
	unit_remove_dir_contents(tmp_dir);
	(void)rmdir(tmp_dir);
}

static void write_file(const char *path, const char *content, size_t len)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(content, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* write_users - the users file, private like a real one (a world-readable
   file would make userdb_save() warn) */
static void write_users(const char *content)
{
	write_file(users_path, content, strlen(content));
	ck_assert_int_eq(chmod(users_path, 0640), 0);
}

/* read_all - a file's content (caller frees) */
static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *data = mem_zalloc(1 << 20);
	size_t len;

	ck_assert_ptr_nonnull(f);
	len = fread(data, 1, (1 << 20) - 1, f);
	data[len] = '\0';
	fclose(f);
	return data;
}

/* count_dir_entries - entries of tmp_dir besides . and .. */
static unsigned int count_dir_entries(void)
{
	DIR *dir = opendir(tmp_dir);
	struct dirent *d;
	unsigned int count = 0;

	ck_assert_ptr_nonnull(dir);
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			count++;
	}
	closedir(dir);
	return count;
}

/*
 * password
 */

START_TEST(test_scheme_parse)
{
	enum password_scheme scheme;

	ck_assert_int_eq(password_scheme_parse("yescrypt", &scheme), 0);
	ck_assert_int_eq(scheme, PASSWORD_SCHEME_YESCRYPT);
	ck_assert_int_eq(password_scheme_parse("YesCrypt", &scheme), 0);
	ck_assert_int_eq(scheme, PASSWORD_SCHEME_YESCRYPT);
	ck_assert_int_eq(password_scheme_parse("SHA512-CRYPT", &scheme), 0);
	ck_assert_int_eq(scheme, PASSWORD_SCHEME_SHA512_CRYPT);
	ck_assert_int_eq(password_scheme_parse("sha512-crypt", &scheme), 0);
	ck_assert_str_eq(password_scheme_name(scheme), "sha512-crypt");
	ck_assert_int_eq(password_scheme_parse("md5-crypt", &scheme), -1);
	ck_assert_int_eq(password_scheme_parse("", &scheme), -1);
	ck_assert_int_eq(password_scheme_parse("yescrypt ", &scheme), -1);
}
END_TEST

START_TEST(test_hash_yescrypt)
{
	const char *error = NULL;
	char *hash1, *hash2;

	ck_assert_int_eq(password_hash("correct horse", PASSWORD_SCHEME_YESCRYPT,
				       &hash1, &error), 0);
	ck_assert_int_eq(password_hash("correct horse", PASSWORD_SCHEME_YESCRYPT,
				       &hash2, &error), 0);
	ck_assert(str_begins_with(hash1, "$y$"));
	/* random salt: the same password never gives the same hash */
	ck_assert_str_ne(hash1, hash2);
	ck_assert_int_eq(password_verify("correct horse", hash1, &error), 1);
	ck_assert_int_eq(password_verify("correct horse", hash2, &error), 1);
	ck_assert_int_eq(password_verify("correct horsE", hash1, &error), 0);
	ck_assert_int_eq(password_hash_check(hash1, &error), 1);
	ck_assert_str_eq(password_hash_scheme_name(hash1), "yescrypt");
	free(hash1);
	free(hash2);
}
END_TEST

START_TEST(test_hash_sha512)
{
	const char *error = NULL;
	char *hash;

	ck_assert_int_eq(password_hash("pässwörd", PASSWORD_SCHEME_SHA512_CRYPT,
				       &hash, &error), 0);
	ck_assert(str_begins_with(hash, "$6$rounds="));
	ck_assert_int_eq(password_verify("pässwörd", hash, &error), 1);
	ck_assert_int_eq(password_verify("passwort", hash, &error), 0);
	ck_assert_int_eq(password_verify("", hash, &error), 0);
	ck_assert_str_eq(password_hash_scheme_name(hash), "sha512-crypt");
	free(hash);
}
END_TEST

START_TEST(test_hash_bad_input)
{
	char long_password[PASSWORD_MAX_LEN + 2];
	const char *error = NULL;
	char *hash = NULL;

	ck_assert_int_eq(password_hash("", PASSWORD_SCHEME_YESCRYPT, &hash,
				       &error), -1);
	ck_assert_str_eq(error, "empty password");
	memset(long_password, 'x', sizeof(long_password) - 1);
	long_password[sizeof(long_password) - 1] = '\0';
	ck_assert_int_eq(password_hash(long_password, PASSWORD_SCHEME_YESCRYPT,
				       &hash, &error), -1);
	ck_assert_str_eq(error, "password too long");
	ck_assert_ptr_null(hash);
	/* too long to be anyone's password: a mismatch, not an error */
	ck_assert_int_eq(password_verify(long_password, HASH_6, &error), 0);
}
END_TEST

/* Hashes computed here with crypt_r, independently of password.c. */
START_TEST(test_verify_known_hashes)
{
	static const char *const settings[] = {
		"$6$saltsalt$", "$6$rounds=6000$abcdefgh$", "$5$saltsalt$",
		"$2b$04$abcdefghijklmnopqrstuu",
	};
	struct crypt_data *data = mem_zalloc(sizeof(*data));
	const char *error = NULL, *hash;

	for (size_t i = 0; i < N_ELEMENTS(settings); i++) {
		hash = crypt_r("s3cret", settings[i], data);
		ck_assert_ptr_nonnull(hash);
		ck_assert_msg(hash[0] == '$', "crypt_r failed for %s", settings[i]);
		ck_assert_int_eq(password_verify("s3cret", hash, &error), 1);
		ck_assert_int_eq(password_verify("s3cret ", hash, &error), 0);
		ck_assert_int_eq(password_verify("S3cret", hash, &error), 0);
	}
	ck_assert_int_eq(password_verify("password", HASH_Y, &error), 1);
	ck_assert_int_eq(password_verify("Password", HASH_Y, &error), 0);
	free(data);
}
END_TEST

START_TEST(test_verify_weak_hashes)
{
	static const char *const weak[] = {
		"abiQ6Ep3EYTHc",			/* traditional DES */
		"$1$abcdefgh$znAnv9M.XU2pRYfmSs46h/",	/* MD5-crypt */
		"_J9..abcdAbCdEfGhIjKl",		/* BSDi */
		"$2a$04$abcdefghijklmnopqrstuu5N6A2fI1Y8m5mHq0tX8SgnqW6W7uF2e",
		"$3$$8846f7eaee8fb117ad06bdd830b7586c",	/* NTHASH */
		"$sha1$40000$abcdefgh$kY8e5dG2ZP9sQmVlxtJg6wqnHkRm",
		"plain-text-password",
		"",
	};
	const char *error;

	for (size_t i = 0; i < N_ELEMENTS(weak); i++) {
		error = NULL;
		ck_assert_int_eq(password_verify("x", weak[i], &error), -1);
		ck_assert_ptr_nonnull(error);
		ck_assert(!password_hash_is_supported(weak[i]));
		ck_assert_str_eq(password_hash_scheme_name(weak[i]),
				 "unsupported");
	}
	ck_assert_int_eq(password_hash_check("$1$abcdefgh$x", &error), -1);
	ck_assert_str_eq(error, "unsupported or disabled hash scheme");
}
END_TEST

START_TEST(test_verify_locked_hashes)
{
	static const char *const locked[] = { "!", "*", "*LK*", "!" HASH_Y,
					      "!!" };
	const char *error;

	for (size_t i = 0; i < N_ELEMENTS(locked); i++) {
		ck_assert_int_eq(password_hash_check(locked[i], &error), 0);
		ck_assert_int_eq(password_verify("password", locked[i], &error), 0);
		ck_assert_str_eq(password_hash_scheme_name(locked[i]), "locked");
	}
	/* locked, but not storable in the users file */
	ck_assert_int_eq(password_hash_check("!a:b", &error), -1);
	ck_assert_int_eq(password_hash_check("* x", &error), -1);
}
END_TEST

START_TEST(test_verify_malformed_hashes)
{
	static const char *const malformed[] = {
		"$6$", "$6$saltonly", "$y$j9T$salt$", "$6$sa:lt$abc",
		"$6$salt$ab cd", "$6$salt$abc\n", "$y$j9T$a$b$c$d",
		"$6$a$b$c$d",
	};
	const char *error;

	for (size_t i = 0; i < N_ELEMENTS(malformed); i++) {
		error = NULL;
		ck_assert_msg(password_hash_check(malformed[i], &error) == -1,
			      "accepted %s", malformed[i]);
		ck_assert_ptr_nonnull(error);
		ck_assert_int_eq(password_verify("x", malformed[i], &error), -1);
	}
	/* well-shaped but with parameters crypt cannot use */
	ck_assert_int_eq(password_hash_check("$y$zzz$abc$def", &error), 1);
	ck_assert_int_eq(password_verify("x", "$y$zzz$abc$def", &error), -1);
	ck_assert_str_eq(error, "malformed hash or hash parameters");
}
END_TEST

/* verify_thread - check HASH_6 a few times (the daemon verifies on a
   thread pool, so concurrent use must be safe) */
static void *verify_thread(void *context)
{
	const char *error;
	intptr_t ok = 1;

	for (int i = 0; i < 4; i++) {
		if (password_verify("password", HASH_6, &error) != 1 ||
		    password_verify("wrong", HASH_6, &error) != 0)
			ok = 0;
	}
	return (void *)ok;
}

START_TEST(test_verify_threads)
{
	pthread_t threads[4];
	void *result;

	for (size_t i = 0; i < N_ELEMENTS(threads); i++)
		ck_assert_int_eq(pthread_create(&threads[i], NULL,
						verify_thread, NULL), 0);
	for (size_t i = 0; i < N_ELEMENTS(threads); i++) {
		ck_assert_int_eq(pthread_join(threads[i], &result), 0);
		ck_assert_ptr_eq(result, (void *)1);
	}
}
END_TEST

/*
 * addresses
 */

START_TEST(test_address_valid)
{
	static const char *const valid[][2] = {
		{ "Alice@Example.COM", "alice@example.com" },
		{ "a.b+tag@sub.example.org", "a.b+tag@sub.example.org" },
		{ "!$%&'*+-/=?^_`{|}~#@x.y", "!$%&'*+-/=?^_`{|}~#@x.y" },
		{ "root@localhost", "root@localhost" },
		{ "x@xn--bcher-kva.example", "x@xn--bcher-kva.example" },
		{ "1@2-3.4", "1@2-3.4" },
	};
	const char *error;
	char *normalized;

	for (size_t i = 0; i < N_ELEMENTS(valid); i++) {
		ck_assert_msg(userdb_address_normalize(valid[i][0], &normalized,
						       &error) == 0,
			      "%s refused", valid[i][0]);
		ck_assert_str_eq(normalized, valid[i][1]);
		free(normalized);
	}
}
END_TEST

START_TEST(test_address_invalid)
{
	static const char *const invalid[] = {
		"", "alice", "@example.com", "alice@", "a..b@x.com",
		".a@x.com", "a.@x.com", "#a@x.com", "a@b@c.com", "a b@x.com",
		"\"a\"@x.com", "a@-x.com", "a@x-.com", "a@x..com", "a@x.com.",
		"a@x_y.com", "a@[127.0.0.1]", "a:b@x.com", "a@x.com:",
		"\xc3\xa4@x.com", "a@\xc3\xa4.com", "a\n@x.com", "a@.x.com",
	};
	char buf[400], *normalized = NULL;
	const char *error;

	for (size_t i = 0; i < N_ELEMENTS(invalid); i++) {
		error = NULL;
		ck_assert_msg(userdb_address_normalize(invalid[i], &normalized,
						       &error) == -1,
			      "accepted '%s'", invalid[i]);
		ck_assert_ptr_nonnull(error);
	}
	/* length limits: local part 64, label 63, whole address 254 */
	memset(buf, 'a', 64);
	strcpy(buf + 64, "@x.com");
	ck_assert_int_eq(userdb_address_normalize(buf, &normalized, &error), 0);
	free(normalized);
	memset(buf, 'a', 65);
	strcpy(buf + 65, "@x.com");
	ck_assert_int_eq(userdb_address_normalize(buf, &normalized, &error), -1);
	strcpy(buf, "a@");
	memset(buf + 2, 'b', 64);
	strcpy(buf + 66, ".com");
	ck_assert_int_eq(userdb_address_normalize(buf, &normalized, &error), -1);
	strcpy(buf, "a@");
	for (int i = 0; i < 63; i++)	/* 2 + 63 * 4 = 254 bytes */
		memcpy(buf + 2 + i * 4, "bbb.", 4);
	buf[2 + 63 * 4 - 1] = 'c';
	buf[2 + 63 * 4] = '\0';
	ck_assert_uint_eq(strlen(buf), 254);
	ck_assert_int_eq(userdb_address_normalize(buf, &normalized, &error), 0);
	free(normalized);
	strcat(buf, "c");
	ck_assert_int_eq(userdb_address_normalize(buf, &normalized, &error), -1);
	ck_assert_str_eq(error, "address longer than 254 bytes");
}
END_TEST

/*
 * users file
 */

/* assert_load_error - loading content fails with "PATH:expected" */
static void assert_load_error(const char *content, size_t len,
			      const char *expected)
{
	struct userdb *db = NULL;
	char *error = NULL, *want;

	write_file(users_path, content, len);
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error), USERDB_MALFORMED);
	ck_assert_ptr_null(db);
	want = mem_printf("%s:%s", users_path, expected);
	ck_assert_str_eq(error, want);
	free(want);
	free(error);
}

START_TEST(test_userdb_load_errors)
{
	static const struct {
		const char *content;
		const char *error;
	} cases[] = {
		{ "ok@example.com:" HASH_Y "\nbad user@example.com:" HASH_Y "\n",
		  "2: invalid address: invalid character in local part" },
		{ "# comment\n\nalice@example.com\n",
		  "3: missing ':' and password hash after the address" },
		{ "alice@example.com:\n",
		  "1: user alice@example.com: missing password hash" },
		{ "alice@example.com: " HASH_Y "\n",
		  "1: user alice@example.com: malformed hash (invalid character)" },
		{ "Alice@example.com:$1$abcdefgh$znAnv9M.XU2pRYfmSs46h/\n",
		  "1: user alice@example.com: unsupported or disabled hash scheme" },
		{ "a@example.com:" HASH_Y "\nb@example.com:" HASH_6 "\n"
		  "A@Example.com:" HASH_Y "\n",
		  "3: duplicate user a@example.com (first on line 1)" },
		{ "a@example.com:" HASH_Y ":quota\n",
		  "1: user a@example.com: extra field is not key=value" },
		{ "a@example.com:" HASH_Y ":quota=1G =x\n",
		  "1: user a@example.com: extra field is not key=value" },
		{ "\n\n\nnoat:" HASH_Y "\n",
		  "4: invalid address: missing '@' (expected localpart@domain)" },
	};

	for (size_t i = 0; i < N_ELEMENTS(cases); i++)
		assert_load_error(cases[i].content, strlen(cases[i].content),
				  cases[i].error);
	assert_load_error("a@example.com:" HASH_Y "\nb@x\0y:" HASH_Y "\n",
			  sizeof("a@example.com:" HASH_Y "\nb@x\0y:" HASH_Y "\n") - 1,
			  "2: NUL byte in line");
}
END_TEST

START_TEST(test_userdb_load_long_line)
{
	size_t len = USERDB_LINE_MAX + 10;
	char *content = mem_zalloc(len + 32);
	char *expected;

	strcpy(content, "# fine\n#");
	memset(content + 8, 'x', len);
	strcpy(content + 8 + len, "\n");
	expected = mem_printf("2: line longer than %d bytes", USERDB_LINE_MAX);
	assert_load_error(content, strlen(content), expected);
	free(expected);
	free(content);
}
END_TEST

START_TEST(test_userdb_load_missing)
{
	struct userdb *db = NULL;
	char *error = NULL;

	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "cannot open"));
	ck_assert(str_begins_with(error, users_path));
	free(error);
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_MISSING_OK, &db,
				     &error), 0);
	ck_assert_uint_eq(userdb_count(db), 0);
	ck_assert_str_eq(userdb_path(db), users_path);
	ck_assert_ptr_null(userdb_lookup(db, "a@example.com"));
	userdb_free(&db);
	ck_assert_ptr_null(db);
	/* a directory is not a users file */
	ck_assert_int_eq(userdb_load(tmp_dir, USERDB_LOAD_MISSING_OK, &db,
				     &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "not a regular file"));
	free(error);
}
END_TEST

START_TEST(test_userdb_round_trip)
{
	static const char original[] =
		"# clustermail users\n"
		"\n"
		"Alice@Example.com:" HASH_Y "\n"
		"  # indented comment\n"
		"bob@example.com:" HASH_6 ":quota=10G note=x:y\n"
		"carol@example.com:!\r\n"
		"\t\n"
		"dave@example.org:" HASH_Y "  \n"
		"# the end";
	static const char expected[] =
		"# clustermail users\n"
		"\n"
		"alice@example.com:" HASH_6 "\n"
		"  # indented comment\n"
		"bob@example.com:" HASH_6 ":quota=10G note=x:y\n"
		"\t\n"
		"dave@example.org:" HASH_Y "\n"
		"# the end\n"
		"erin@example.com:" HASH_Y ":quota=1M\n";
	const struct userdb_user *user;
	struct userdb *db;
	const char *error;
	char *error_str, *content;

	write_users(original);
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error_str), 0);
	ck_assert_uint_eq(userdb_count(db), 4);
	user = userdb_lookup(db, "ALICE@example.COM");
	ck_assert_ptr_nonnull(user);
	ck_assert_str_eq(user->address, "alice@example.com");
	ck_assert_ptr_null(user->extra);
	user = userdb_lookup(db, "bob@example.com");
	ck_assert_str_eq(user->hash, HASH_6);
	ck_assert_str_eq(user->extra, "quota=10G note=x:y");
	ck_assert_str_eq(userdb_lookup(db, "carol@example.com")->hash, "!");
	ck_assert_str_eq(userdb_lookup(db, "dave@example.org")->hash, HASH_Y);

	ck_assert_int_eq(userdb_add(db, "Erin@Example.com", HASH_Y, "quota=1M",
				    &error), 1);
	ck_assert_int_eq(userdb_add(db, "ERIN@example.com", HASH_6, NULL,
				    &error), 0);
	ck_assert_int_eq(userdb_set_hash(db, "alice@example.com", HASH_6,
					 &error), 1);
	ck_assert_int_eq(userdb_remove(db, "Carol@Example.com"), 1);
	ck_assert_int_eq(userdb_remove(db, "carol@example.com"), 0);
	ck_assert_uint_eq(userdb_count(db), 4);
	ck_assert_int_eq(userdb_save(db, NULL, &error_str), 0);
	userdb_free(&db);

	content = read_all(users_path);
	ck_assert_str_eq(content, expected);
	free(content);
	/* what was saved loads again */
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error_str), 0);
	ck_assert_uint_eq(userdb_count(db), 4);
	ck_assert_str_eq(userdb_lookup(db, "erin@example.com")->extra,
			 "quota=1M");
	userdb_free(&db);
}
END_TEST

START_TEST(test_userdb_change_errors)
{
	struct userdb *db;
	const char *error;
	char *error_str;

	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_MISSING_OK, &db,
				     &error_str), 0);
	ck_assert_int_eq(userdb_add(db, "no-at-sign", HASH_Y, NULL, &error), -1);
	ck_assert_int_eq(userdb_add(db, "a@example.com", "$1$ab$cd", NULL,
				    &error), -1);
	ck_assert_str_eq(error, "unsupported or disabled hash scheme");
	ck_assert_int_eq(userdb_add(db, "a@example.com", "", NULL, &error), -1);
	ck_assert_int_eq(userdb_add(db, "a@example.com", HASH_Y, "x=1\ny=2",
				    &error), -1);
	ck_assert_int_eq(userdb_add(db, "a@example.com", HASH_Y, "novalue",
				    &error), -1);
	ck_assert_uint_eq(userdb_count(db), 0);
	ck_assert_int_eq(userdb_add(db, "a@example.com", HASH_Y, NULL, &error), 1);
	ck_assert_int_eq(userdb_set_hash(db, "b@example.com", HASH_Y, &error), 0);
	ck_assert_int_eq(userdb_set_hash(db, "a@example.com", "x", &error), -1);
	ck_assert_str_eq(userdb_lookup(db, "a@example.com")->hash, HASH_Y);
	ck_assert_int_eq(userdb_remove(db, "b@example.com"), 0);
	ck_assert_ptr_null(userdb_lookup(db, "not an address at all"));
	userdb_free(&db);
}
END_TEST

START_TEST(test_userdb_list_sorted)
{
	const struct userdb_user **users;
	struct userdb *db;
	size_t count;
	char *error;

	write_users("c@example.com:" HASH_Y "\n# x\nA@example.com:" HASH_Y
		    "\nb@example.com:!\n");
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error), 0);
	ck_assert_int_eq(userdb_remove(db, "b@example.com"), 1);
	users = userdb_list(db, &count);
	ck_assert_uint_eq(count, 2);
	ck_assert_str_eq(users[0]->address, "a@example.com");
	ck_assert_str_eq(users[1]->address, "c@example.com");
	free(users);
	userdb_free(&db);
}
END_TEST

/* Many adds and removes in a mixed order: every remaining user must stay
   reachable in the hash table after the deletions shift entries. */
START_TEST(test_userdb_many_changes)
{
	struct userdb *db;
	const char *error;
	char *error_str, address[64];

	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_MISSING_OK, &db,
				     &error_str), 0);
	for (int i = 0; i < 3000; i++) {
		snprintf(address, sizeof(address), "user%d@example.com", i);
		ck_assert_int_eq(userdb_add(db, address, HASH_Y, NULL, &error), 1);
	}
	for (int i = 2999; i >= 0; i -= 3) {
		snprintf(address, sizeof(address), "user%d@example.com", i);
		ck_assert_int_eq(userdb_remove(db, address), 1);
	}
	for (int i = 0; i < 3000; i += 3) {
		snprintf(address, sizeof(address), "user%d@example.com", i);
		ck_assert_int_eq(userdb_remove(db, address), 1);
	}
	ck_assert_uint_eq(userdb_count(db), 1000);
	for (int i = 0; i < 3000; i++) {
		snprintf(address, sizeof(address), "user%d@example.com", i);
		ck_assert_msg((userdb_lookup(db, address) != NULL) ==
			      (i % 3 == 1), "wrong lookup result for %s", address);
	}
	userdb_free(&db);
}
END_TEST

/* save_one - load (missing ok), add one user, save */
static void save_one(const char *address, const char *group_user)
{
	struct userdb *db;
	const char *error;
	char *error_str = NULL;

	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_MISSING_OK, &db,
				     &error_str), 0);
	ck_assert_int_eq(userdb_add(db, address, HASH_Y, NULL, &error), 1);
	ck_assert_msg(userdb_save(db, group_user, &error_str) == 0, "%s",
		      error_str);
	userdb_free(&db);
}

START_TEST(test_userdb_save_new_file)
{
	struct passwd *pw = getpwuid(geteuid());
	struct stat st;

	save_one("a@example.com", "no-such-user-for-clustermail-tests");
	ck_assert_int_eq(stat(users_path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, USERDB_NEW_FILE_MODE);
	ck_assert_uint_eq(st.st_gid, getegid());
	ck_assert_uint_eq(st.st_uid, geteuid());
	/* nothing else is left behind: no temporary file */
	ck_assert_uint_eq(count_dir_entries(), 1);
	ck_assert_int_eq(unlink(users_path), 0);

	/* an existing group user: the new file gets that user's group */
	ck_assert_ptr_nonnull(pw);
	save_one("a@example.com", pw->pw_name);
	ck_assert_int_eq(stat(users_path, &st), 0);
	ck_assert_uint_eq(st.st_gid, pw->pw_gid);
}
END_TEST

START_TEST(test_userdb_save_keeps_mode)
{
	struct stat st;
	char *stale;

	write_users("# mode test\n");
	ck_assert_int_eq(chmod(users_path, 0600), 0);
	save_one("a@example.com", NULL);
	ck_assert_int_eq(stat(users_path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_int_eq(chmod(users_path, 0660), 0);
	/* a stale temporary file with our pid is replaced, then gone */
	stale = mem_printf("%s.tmp.%ld", users_path, (long)getpid());
	write_file(stale, "junk", 4);
	save_one("b@example.com", NULL);
	ck_assert_int_eq(stat(users_path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	ck_assert_int_eq(access(stale, F_OK), -1);
	ck_assert_uint_eq(count_dir_entries(), 1);
	free(stale);
}
END_TEST

START_TEST(test_userdb_save_errors)
{
	struct userdb *db;
	char *error = NULL, *target, *content;

	/* a symlink is refused, and what it points to stays as it was */
	target = mem_printf("%s/real-users", tmp_dir);
	write_file(target, "# real\n", 7);
	ck_assert_int_eq(symlink(target, users_path), 0);
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error), 0);
	ck_assert_int_eq(userdb_save(db, NULL, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "symbolic link"));
	free(error);
	userdb_free(&db);
	content = read_all(target);
	ck_assert_str_eq(content, "# real\n");
	free(content);
	ck_assert_uint_eq(count_dir_entries(), 2);
	free(target);

	/* a missing directory: an error, and no file appears */
	ck_assert_int_eq(unlink(users_path), 0);
	snprintf(users_path, sizeof(users_path), "%s/nodir/users", tmp_dir);
	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_MISSING_OK, &db,
				     &error), 0);
	ck_assert_int_eq(userdb_save(db, NULL, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "cannot create"));
	free(error);
	userdb_free(&db);
	ck_assert_uint_eq(count_dir_entries(), 1);
}
END_TEST

START_TEST(test_userdb_lock)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	struct userdb_lock *lock = NULL;
	char *error = NULL, *lock_path;
	struct stat st;
	int fd;

	ck_assert_int_eq(userdb_lock(users_path, &lock, &error), 0);
	lock_path = mem_printf("%s.lock", users_path);
	ck_assert_int_eq(stat(lock_path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	/* another open file description of the lock file cannot lock it */
	fd = open(lock_path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), -1);
	ck_assert(errno == EAGAIN || errno == EACCES);
	userdb_unlock(&lock);
	ck_assert_ptr_null(lock);
	userdb_unlock(&lock);
	ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
	close(fd);
	free(lock_path);

	/* a lock in a directory that does not exist */
	ck_assert_int_eq(userdb_lock("/nonexistent-dir/users", &lock, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "cannot open lock file"));
	free(error);
}
END_TEST

START_TEST(test_userdb_large)
{
	const struct userdb_user *user;
	struct userdb *db;
	char *error = NULL;
	FILE *f;

	/* 100,000 users from one precomputed hash: loading must work (how
	   fast is a benchmark's business, not a unit test's) */
	f = fopen(users_path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("# generated\n", f);
	for (int i = 0; i < 100000; i++)
		fprintf(f, "user%d@example.com:%s\n", i, HASH_Y);
	ck_assert_int_eq(fclose(f), 0);

	ck_assert_int_eq(userdb_load(users_path, USERDB_LOAD_DEFAULT, &db,
				     &error), 0);
	ck_assert_uint_eq(userdb_count(db), 100000);
	user = userdb_lookup(db, "user99999@example.com");
	ck_assert_ptr_nonnull(user);
	ck_assert_str_eq(user->hash, HASH_Y);
	ck_assert_ptr_nonnull(userdb_lookup(db, "USER0@example.com"));
	ck_assert_ptr_null(userdb_lookup(db, "user100000@example.com"));
	userdb_free(&db);
}
END_TEST

static Suite *password_suite(void)
{
	Suite *s = suite_create("password");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_scheme_parse);
	tcase_add_test(tc, test_hash_yescrypt);
	tcase_add_test(tc, test_hash_sha512);
	tcase_add_test(tc, test_hash_bad_input);
	tcase_add_test(tc, test_verify_known_hashes);
	tcase_add_test(tc, test_verify_weak_hashes);
	tcase_add_test(tc, test_verify_locked_hashes);
	tcase_add_test(tc, test_verify_malformed_hashes);
	tcase_add_test(tc, test_verify_threads);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *userdb_suite(void)
{
	Suite *s = suite_create("userdb");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
	tcase_add_test(tc, test_address_valid);
	tcase_add_test(tc, test_address_invalid);
	tcase_add_test(tc, test_userdb_load_errors);
	tcase_add_test(tc, test_userdb_load_long_line);
	tcase_add_test(tc, test_userdb_load_missing);
	tcase_add_test(tc, test_userdb_round_trip);
	tcase_add_test(tc, test_userdb_change_errors);
	tcase_add_test(tc, test_userdb_list_sorted);
	tcase_add_test(tc, test_userdb_many_changes);
	tcase_add_test(tc, test_userdb_save_new_file);
	tcase_add_test(tc, test_userdb_save_keeps_mode);
	tcase_add_test(tc, test_userdb_save_errors);
	tcase_add_test(tc, test_userdb_lock);
	tcase_add_test(tc, test_userdb_large);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { password_suite(), userdb_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
