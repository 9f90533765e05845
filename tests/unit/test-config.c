/*
 * test-config.c - unit tests of the configuration parser (config.c) and
 * of clustermail's settings (settings.c).
 *
 * Files go into one mkdtemp() directory per test case, emptied before each
 * test and removed afterwards, so tests are independent in forked and in
 * CK_FORK=no mode alike. Error messages are asserted word for word: they
 * are the interface an administrator sees, which makes this file long.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/config.h"
#include "lib/settings.h"
#include "unit.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char test_dir[64];
static char test_path[128];
/* Error message of the last failing load; freed by the fixture. */
static char *test_error;

/* remove_dir_contents - unlink every entry of test_dir */
static void remove_dir_contents(void)
{
	unit_remove_dir_contents(test_dir);
}

/* The directory is made and removed by unchecked fixtures, which run in
   the parent process, so it goes away even when a forked test fails. */
static void dir_setup(void)
{
	snprintf(test_dir, sizeof(test_dir), "/tmp/cm-test-config.XXXXXX");
	if (mkdtemp(test_dir) == NULL) {
		perror("mkdtemp");
		exit(EXIT_FAILURE);
	}
	snprintf(test_path, sizeof(test_path), "%s/clustermail.conf", test_dir);
}

static void dir_teardown(void)
{
	remove_dir_contents();
	(void)rmdir(test_dir);
}

static void setup(void)
{
	remove_dir_contents();
	test_error = NULL;
}

static void teardown(void)
{
	MEM_FREE(&test_error);
}

/* write_file - write len bytes of text to path */
static void write_file(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* load_ok - write text as the config file and load it for node */
static struct settings *load_ok(const char *text, const char *node)
{
	struct settings *set = NULL;
	char *error = NULL;

	write_file(test_path, text, strlen(text));
	if (settings_load(test_path, node, &set, &error) < 0)
		ck_abort_msg("settings_load failed: %s", error);
	ck_assert_ptr_nonnull(set);
	return set;
}

/* load_fail - like load_ok, but the load must fail; returns the message
   with the temp dir path replaced by "FILE" for easy comparison */
static const char *load_fail(const char *text, const char *node)
{
	struct settings *set = NULL;
	char *error = NULL;

	write_file(test_path, text, strlen(text));
	if (settings_load(test_path, node, &set, &error) == 0) {
		settings_free(&set);
		ck_abort_msg("settings_load accepted:\n%s", text);
	}
	ck_assert_ptr_null(set);
	ck_assert_ptr_nonnull(error);
	MEM_FREE(&test_error);
	if (str_begins_with(error, test_path)) {
		test_error = mem_printf("FILE%s", error + strlen(test_path));
		free(error);
	} else {
		test_error = error;
	}
	return test_error;
}

#define ck_assert_load_error(text, node, expected) \
	ck_assert_str_eq(load_fail(text, node), expected)

/* ---- the generic parser, with a small schema of its own ---- */

struct demo {
	char *name;
	char *path;
	int color;
	unsigned int count;
	uint64_t wait_msecs;
};

static const struct config_enum_name demo_colors[] = {
	{ "red", 1 }, { "green", 2 }, { "blue", 3 }, { NULL, 0 }
};
static const struct config_uint_range demo_count_range = { 1, 10 };
static const uint64_t demo_wait_max = 60 * 1000;

static const struct config_key demo_keys[] = {
	{ "name", config_parse_string, offsetof(struct demo, name), NULL },
	{ "path", config_parse_string, offsetof(struct demo, path), NULL },
	{ "color", config_parse_enum, offsetof(struct demo, color), demo_colors },
	{ "count", config_parse_uint, offsetof(struct demo, count),
	  &demo_count_range },
	{ "wait", config_parse_duration, offsetof(struct demo, wait_msecs),
	  &demo_wait_max },
};

static void demo_free(struct demo *demo)
{
	free(demo->name);
	free(demo->path);
	memset(demo, 0, sizeof(*demo));
}

/* demo_parse - parse text; NULL on success, else the error (owned by the
   fixture) */
static const char *demo_parse(const char *text, size_t len,
			      struct config_file **file_r)
{
	char *error = NULL;

	*file_r = NULL;
	if (config_file_parse("t.conf", text, len, demo_keys,
			      N_ELEMENTS(demo_keys), file_r, &error) == 0) {
		ck_assert_ptr_nonnull(*file_r);
		return NULL;
	}
	ck_assert_ptr_null(*file_r);
	ck_assert_ptr_nonnull(error);
	MEM_FREE(&test_error);
	test_error = error;
	return error;
}

/* demo_error - the parse error of text, which must fail */
static const char *demo_error(const char *text)
{
	struct config_file *file;
	const char *error = demo_parse(text, strlen(text), &file);

	if (error == NULL) {
		config_file_free(&file);
		ck_abort_msg("parser accepted:\n%s", text);
	}
	return error;
}

/* demo_apply - parse (must succeed) and apply for node into demo */
static const char *demo_apply(const char *text, const char *node,
			      struct demo *demo)
{
	struct config_file *file;
	char *error = NULL;
	const char *parse_error = demo_parse(text, strlen(text), &file);

	if (parse_error != NULL)
		ck_abort_msg("parse failed: %s", parse_error);
	memset(demo, 0, sizeof(*demo));
	if (config_file_apply(file, node, demo, &error) < 0) {
		MEM_FREE(&test_error);
		test_error = error;
	}
	config_file_free(&file);
	return error;
}

START_TEST(test_parser_syntax)
{
	struct demo demo;
	const char *text =
		"\xef\xbb\xbf# comment\n"
		"   # indented comment\n"
		"\n"
		"\t  \n"
		"name = plain value   # inline comment\n"
		"path=a#b\r\n"
		"  color\t=\tgreen\t# tab before the comment\n"
		"count = 7\n"
		"wait = \"1m\"  # quoted\n";

	ck_assert_ptr_null(demo_apply(text, NULL, &demo));
	ck_assert_str_eq(demo.name, "plain value");
	ck_assert_str_eq(demo.path, "a#b");
	ck_assert_int_eq(demo.color, 2);
	ck_assert_uint_eq(demo.count, 7);
	ck_assert_uint_eq(demo.wait_msecs, 60000);
	demo_free(&demo);
}
END_TEST

START_TEST(test_parser_quoting)
{
	struct demo demo;

	ck_assert_ptr_null(demo_apply(
		"name = \"  has # hash and \\\"quotes\\\" and \\\\ \"\n"
		"path = \"\"\n", NULL, &demo));
	ck_assert_str_eq(demo.name, "  has # hash and \"quotes\" and \\ ");
	ck_assert_ptr_null(demo.path);	/* "" means unset for strings */
	demo_free(&demo);

	ck_assert_ptr_null(demo_apply("name =\npath = x\n", NULL, &demo));
	ck_assert_ptr_null(demo.name);
	ck_assert_str_eq(demo.path, "x");
	demo_free(&demo);

	/* A quote inside a bare value is an ordinary character. */
	ck_assert_ptr_null(demo_apply("name = say \"hi\"\n", NULL, &demo));
	ck_assert_str_eq(demo.name, "say \"hi\"");
	demo_free(&demo);
}
END_TEST

START_TEST(test_parser_syntax_errors)
{
	ck_assert_str_eq(demo_error("name = a\nname\n"),
			 "t.conf:2: missing '=' after 'name'");
	ck_assert_str_eq(demo_error("na:me = x\n"), "t.conf:1: invalid character "
			 "in key after 'na' (keys are letters, digits and '_')");
	ck_assert_str_eq(demo_error("= value\n"),
			 "t.conf:1: expected 'key = value'");
	ck_assert_str_eq(demo_error("name = \"open\n"),
			 "t.conf:1: unterminated quoted value");
	ck_assert_str_eq(demo_error("name = \"a\\nb\"\n"),
			 "t.conf:1: invalid escape in quoted value "
			 "(only \\\" and \\\\ are allowed)");
	ck_assert_str_eq(demo_error("name = \"a\" b\n"),
			 "t.conf:1: unexpected text after the closing quote");
	ck_assert_str_eq(demo_error("\n\nname = a\x01z\n"),
			 "t.conf:3: control character 0x01 in line");
	ck_assert_str_eq(demo_error("name = a\rb\n"),
			 "t.conf:1: control character 0x0d in line");
	ck_assert_str_eq(demo_error("name = \"é\" x\n"),
			 "t.conf:1: unexpected text after the closing quote");
}
END_TEST

START_TEST(test_parser_nul_byte)
{
	struct config_file *file;
	static const char text[] = "name = a\nna\0me = b\n";

	ck_assert_str_eq(demo_parse(text, sizeof(text) - 1, &file),
			 "t.conf:2: NUL byte in line");
}
END_TEST

START_TEST(test_parser_sections)
{
	struct config_file *file;
	struct demo demo;
	const char *text =
		"name = global\ncount = 1\n"
		"[node a]\nname = for-a   # override\n"
		"[ node  b.example-1_x ]  # spaces are fine\ncount = 2\n";

	ck_assert_ptr_null(demo_parse(text, strlen(text), &file));
	ck_assert_uint_eq(config_file_node_count(file), 2);
	ck_assert_str_eq(config_file_node_name(file, 0), "a");
	ck_assert_str_eq(config_file_node_name(file, 1), "b.example-1_x");
	ck_assert(config_file_has_node(file, "a"));
	ck_assert(!config_file_has_node(file, "c"));
	ck_assert(!config_file_has_node(file, NULL));
	ck_assert_uint_eq(config_file_key_line(file, "a", "name"), 4);
	ck_assert_uint_eq(config_file_key_line(file, "b.example-1_x", "name"), 1);
	ck_assert_uint_eq(config_file_key_line(file, NULL, "count"), 2);
	ck_assert_uint_eq(config_file_key_line(file, "b.example-1_x", "count"), 6);
	ck_assert_uint_eq(config_file_key_line(file, "a", "path"), 0);
	ck_assert_str_eq(config_file_path(file), "t.conf");
	config_file_free(&file);
	ck_assert_ptr_null(file);

	ck_assert_ptr_null(demo_apply(text, "a", &demo));
	ck_assert_str_eq(demo.name, "for-a");
	ck_assert_uint_eq(demo.count, 1);
	demo_free(&demo);
	ck_assert_ptr_null(demo_apply(text, "b.example-1_x", &demo));
	ck_assert_str_eq(demo.name, "global");
	ck_assert_uint_eq(demo.count, 2);
	demo_free(&demo);
	ck_assert_ptr_null(demo_apply(text, "nosuchnode", &demo));
	ck_assert_str_eq(demo.name, "global");
	demo_free(&demo);
}
END_TEST

START_TEST(test_parser_section_errors)
{
	ck_assert_str_eq(demo_error("[global]\n"), "t.conf:1: unknown section "
			 "header (the only section is '[node NAME]')");
	ck_assert_str_eq(demo_error("[nodes a]\n"), "t.conf:1: unknown section "
			 "header (the only section is '[node NAME]')");
	ck_assert_str_eq(demo_error("[node a/b]\n"), "t.conf:1: invalid "
			 "character '/' in node name (allowed: letters, digits, "
			 "'-', '_', '.')");
	ck_assert_str_eq(demo_error("[node caf\xc3\xa9]\n"), "t.conf:1: invalid "
			 "byte 0xc3 in node name (allowed: letters, digits, "
			 "'-', '_', '.')");
	ck_assert_str_eq(demo_error("[node a b]\n"),
			 "t.conf:1: unexpected text after node name");
	ck_assert_str_eq(demo_error("[node a\n"),
			 "t.conf:1: missing ']' in section header");
	ck_assert_str_eq(demo_error("[node a] x\n"),
			 "t.conf:1: unexpected text after ']'");
	ck_assert_str_eq(demo_error("[node]\n"), "t.conf:1: invalid node name '' "
			 "(1-64 letters, digits, '-', '_', '.'; starting with a "
			 "letter or digit)");
	ck_assert_str_eq(demo_error("[node .hidden]\n"), "t.conf:1: invalid node "
			 "name '.hidden' (1-64 letters, digits, '-', '_', '.'; "
			 "starting with a letter or digit)");
	ck_assert_str_eq(demo_error("[node a]\n[node b]\n\n[node a]\n"),
			 "t.conf:4: section [node a] already started at line 1");
}
END_TEST

START_TEST(test_parser_unknown_and_duplicate_keys)
{
	ck_assert_str_eq(demo_error("nmae = x\n"),
			 "t.conf:1: unknown key 'nmae' (did you mean 'name'?)");
	ck_assert_str_eq(demo_error("\nCOLOR = red\n"),
			 "t.conf:2: unknown key 'COLOR' (did you mean 'color'?)");
	ck_assert_str_eq(demo_error("zebra = x\n"), "t.conf:1: unknown key 'zebra'");
	ck_assert_str_eq(demo_error("colours = x\n"),
			 "t.conf:1: unknown key 'colours' (did you mean 'color'?)");
	/* Three edits away is too far for a suggestion. */
	ck_assert_str_eq(demo_error("colorful = x\n"),
			 "t.conf:1: unknown key 'colorful'");
	ck_assert_str_eq(demo_error("name = a\ncount = 1\n# x\nname = b\n"),
			 "t.conf:4: duplicate key 'name' (already set at line 1 "
			 "in this section)");
	ck_assert_str_eq(demo_error("[node a]\nname = a\n[node b]\nname = b\n"
				    "[node a]\n"),
			 "t.conf:5: section [node a] already started at line 1");
	ck_assert_str_eq(demo_error("[node a]\nname = a\nname = b\n"),
			 "t.conf:3: duplicate key 'name' (already set at line 2 "
			 "in this section)");
}
END_TEST

START_TEST(test_parser_limits)
{
	struct config_file *file;
	size_t len = CONFIG_LINE_MAX + 1;
	char *text = mem_zalloc(CONFIG_FILE_MAX + 2);

	/* A line of exactly CONFIG_LINE_MAX bytes is fine, one more is not. */
	memcpy(text, "name = ", 7);
	memset(text + 7, 'x', CONFIG_LINE_MAX - 7);
	ck_assert_ptr_null(demo_parse(text, CONFIG_LINE_MAX, &file));
	config_file_free(&file);
	memcpy(text, "# one\n", 6);
	memset(text + 6, 'x', len);
	ck_assert_str_eq(demo_parse(text, 6 + len, &file),
			 "t.conf:2: line too long (more than 8192 bytes)");

	memset(text, '\n', CONFIG_FILE_MAX + 1);
	ck_assert_ptr_null(demo_parse(text, CONFIG_FILE_MAX, &file));
	config_file_free(&file);
	ck_assert_str_eq(demo_parse(text, CONFIG_FILE_MAX + 1, &file),
			 "t.conf: file too large (more than 1048576 bytes)");
	free(text);
}
END_TEST

START_TEST(test_parser_value_errors)
{
	struct demo demo;

	ck_assert_str_eq(demo_apply("color = purple\n", NULL, &demo),
			 "t.conf:1: color: 'purple' is not one of red, green, blue");
	demo_free(&demo);
	ck_assert_str_eq(demo_apply("count = 11\n", NULL, &demo),
			 "t.conf:1: count: 11 is out of range 1..10");
	demo_free(&demo);
	ck_assert_str_eq(demo_apply("count = -1\n", NULL, &demo),
			 "t.conf:1: count: '-1' is not a non-negative integer");
	demo_free(&demo);
	ck_assert_str_eq(demo_apply("[node a]\ncount = 99999999999\n", "a", &demo),
			 "t.conf:2: count: '99999999999' is not a non-negative integer");
	demo_free(&demo);
	ck_assert_str_eq(demo_apply("wait = soon\n", NULL, &demo),
			 "t.conf:1: wait: 'soon' is not a duration (a number with "
			 "a unit: ms, s, m, h, d, w; e.g. 30s)");
	demo_free(&demo);
	ck_assert_str_eq(demo_apply("wait = 2m\n", NULL, &demo),
			 "t.conf:1: wait: '2m' is longer than the maximum 60s");
	demo_free(&demo);
	/* Only the selected node's section is applied. */
	ck_assert_ptr_null(demo_apply("[node a]\ncount = 0\n", "b", &demo));
	demo_free(&demo);
}
END_TEST

START_TEST(test_parser_read_file)
{
	struct config_file *file = NULL;
	char *error = NULL;
	char *text;

	ck_assert_int_eq(config_file_read(test_path, demo_keys,
					  N_ELEMENTS(demo_keys), &file, &error), -1);
	ck_assert_ptr_null(file);
	ck_assert_ptr_nonnull(strstr(error, test_path));
	ck_assert_ptr_nonnull(strstr(error, strerror(ENOENT)));
	MEM_FREE(&error);

	ck_assert_int_eq(config_file_read(test_dir, demo_keys,
					  N_ELEMENTS(demo_keys), &file, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "not a regular file"));
	MEM_FREE(&error);

	/* Larger than the cap on disk: refused without reading it all. */
	text = mem_zalloc(3 * CONFIG_FILE_MAX);
	memset(text, '\n', 3 * CONFIG_FILE_MAX);
	write_file(test_path, text, 3 * CONFIG_FILE_MAX);
	free(text);
	ck_assert_int_eq(config_file_read(test_path, demo_keys,
					  N_ELEMENTS(demo_keys), &file, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "file too large"));
	MEM_FREE(&error);

	write_file(test_path, "name = ok", 9);
	ck_assert_int_eq(config_file_read(test_path, demo_keys,
					  N_ELEMENTS(demo_keys), &file, &error), 0);
	ck_assert_uint_eq(config_file_key_line(file, NULL, "name"), 1);
	config_file_free(&file);
	config_file_free(&file);	/* NULL is fine */
}
END_TEST

START_TEST(test_parser_node_names)
{
	char long_name[CONFIG_NODE_NAME_MAX + 2];

	ck_assert(config_node_name_is_valid("n1"));
	ck_assert(config_node_name_is_valid("Mail-1.example_x"));
	ck_assert(config_node_name_is_valid("9"));
	ck_assert(!config_node_name_is_valid(""));
	ck_assert(!config_node_name_is_valid("-n"));
	ck_assert(!config_node_name_is_valid(".."));
	ck_assert(!config_node_name_is_valid("a b"));
	ck_assert(!config_node_name_is_valid("a/b"));
	ck_assert(!config_node_name_is_valid("a%n"));
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[CONFIG_NODE_NAME_MAX] = '\0';
	ck_assert(config_node_name_is_valid(long_name));
	long_name[CONFIG_NODE_NAME_MAX] = 'a';
	long_name[CONFIG_NODE_NAME_MAX + 1] = '\0';
	ck_assert(!config_node_name_is_valid(long_name));
}
END_TEST

/* ---- clustermail settings ---- */

START_TEST(test_settings_defaults)
{
	struct settings *set = load_ok("", "n1");

	ck_assert_str_eq(set->node_name, "n1");
	ck_assert_str_eq(set->spool_dir, "/srv/clustermail");
	ck_assert_int_eq(set->lock_backend, SETTINGS_LOCK_FCNTL);
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		ck_assert(!set->listen[i].enabled);
		ck_assert_ptr_null(set->listen[i].spec);
	}
	ck_assert(!set->metrics_listen.enabled);
	ck_assert_ptr_null(set->tls_cert);
	ck_assert_ptr_null(set->tls_key);
	ck_assert_str_eq(set->users_file, SYSCONFDIR "/clustermail/users");
	ck_assert_uint_eq(set->local_domains.count, 0);
	ck_assert_str_eq(set->control_socket, RUNSTATEDIR "/clustermail/n1.sock");
	ck_assert_str_eq(set->pid_file, RUNSTATEDIR "/clustermail/n1.pid");
	ck_assert_str_eq(set->mail_user, "clustermail");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_INFO);
	ck_assert_int_eq(set->log_target, LOG_TARGET_STDERR);
	ck_assert_uint_eq(set->trusted_network_count, 2);
	ck_assert_int_eq(set->trusted_networks[0].family, AF_INET);
	ck_assert_uint_eq(set->trusted_networks[0].prefix, 8);
	ck_assert_int_eq(set->trusted_networks[1].family, AF_INET6);
	ck_assert_uint_eq(set->trusted_networks[1].prefix, 128);
	ck_assert_uint_eq(set->workers, 0);
	ck_assert_uint_eq(set->shutdown_timeout_msecs, 30000);
	settings_free(&set);
	ck_assert_ptr_null(set);
	settings_free(&set);

	/* Comments and blank lines alone are an empty file too. */
	set = load_ok("# nothing\n\n   \n", "n1");
	ck_assert_str_eq(set->spool_dir, "/srv/clustermail");
	settings_free(&set);
}
END_TEST

static const char settings_all_keys[] =
	"spool_dir = /var/spool/cm\n"
#ifdef HAVE_DLM
	"lock_backend = dlm\n"
#else
	"lock_backend = local\n"
#endif
	"listen_imap = 127.0.0.1:143\n"
	"listen_imaps = 127.0.0.1:993\n"
	"listen_pop3 = [::1]:110\n"
	"listen_pop3s = *:995\n"
	"listen_smtp = 127.0.0.1:25\n"
	"listen_submission = 127.0.0.1:587\n"
	"listen_submissions = 127.0.0.1:465\n"
	"listen_lmtp = 127.0.0.1:24\n"
	"tls_cert = /etc/cm/%n.crt\n"
	"tls_key = /etc/cm/%n.key\n"
	"users_file = /etc/cm/users\n"
	"local_domains = Example.COM, mail.example.org example.com\n"
	"control_socket = /run/cm/ctl-%n.sock\n"
	"pid_file = /run/cm/%n.pid\n"
	"metrics_listen = 127.0.0.1:9100\n"
	"mail_user = vmail\n"
	"log_level = debug\n"
	"log_target = syslog\n"
	"trusted_networks = 10.0.0.0/8, 192.0.2.7 2001:db8::/32\n"
	"workers = 4\n"
	"shutdown_timeout = 2m\n"
	"[node n1]\n"
	"node_name = first\n";

START_TEST(test_settings_every_key)
{
	struct settings *set = load_ok(settings_all_keys, "n1");
	char addr[NET_ADDR_STRLEN];

	ck_assert_str_eq(set->node_name, "first");
	ck_assert_str_eq(set->spool_dir, "/var/spool/cm");
#ifdef HAVE_DLM
	ck_assert_int_eq(set->lock_backend, SETTINGS_LOCK_DLM);
#else
	ck_assert_int_eq(set->lock_backend, SETTINGS_LOCK_LOCAL);
#endif
	for (unsigned int i = 0; i < SETTINGS_SERVICE_COUNT; i++)
		ck_assert(set->listen[i].enabled);
	ck_assert_str_eq(set->listen[SETTINGS_SERVICE_IMAP].spec, "127.0.0.1:143");
	ck_assert_str_eq(net_addr_str((struct sockaddr *)
				      &set->listen[SETTINGS_SERVICE_POP3].addr.ss,
				      addr), "[::1]:110");
	ck_assert_str_eq(net_addr_str((struct sockaddr *)
				      &set->listen[SETTINGS_SERVICE_POP3S].addr.ss,
				      addr), "0.0.0.0:995");
	ck_assert_uint_eq(net_addr_port((struct sockaddr *)
					&set->listen[SETTINGS_SERVICE_LMTP].addr.ss), 24);
	/* %n is the effective node name, after the override. */
	ck_assert_str_eq(set->tls_cert, "/etc/cm/first.crt");
	ck_assert_str_eq(set->tls_key, "/etc/cm/first.key");
	ck_assert_str_eq(set->users_file, "/etc/cm/users");
	ck_assert_uint_eq(set->local_domains.count, 2);
	ck_assert_str_eq(set->local_domains.items[0], "example.com");
	ck_assert_str_eq(set->local_domains.items[1], "mail.example.org");
	ck_assert_str_eq(set->control_socket, "/run/cm/ctl-first.sock");
	ck_assert_str_eq(set->pid_file, "/run/cm/first.pid");
	ck_assert(set->metrics_listen.enabled);
	ck_assert_str_eq(set->metrics_listen.spec, "127.0.0.1:9100");
	ck_assert_str_eq(set->mail_user, "vmail");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_DEBUG);
	ck_assert_int_eq(set->log_target, LOG_TARGET_SYSLOG);
	ck_assert_uint_eq(set->trusted_network_count, 3);
	ck_assert_uint_eq(set->trusted_networks[2].prefix, 32);
	ck_assert_uint_eq(set->workers, 4);
	ck_assert_uint_eq(set->shutdown_timeout_msecs, 120000);
	settings_free(&set);
}
END_TEST

static const char settings_cluster[] =
	"spool_dir = /srv/cm\n"
	"listen_imap = 127.0.0.1:143\n"
	"log_level = notice\n"
	"[node n1]\n"
	"listen_imap = 127.0.0.11:143\n"
	"[node n2]\n"
	"listen_imap = 127.0.0.12:143\n"
	"log_level = debug\n"
	"trusted_networks =\n";

START_TEST(test_settings_node_override)
{
	struct settings *set = load_ok(settings_cluster, "n2");

	ck_assert_str_eq(set->node_name, "n2");
	ck_assert_str_eq(set->listen[SETTINGS_SERVICE_IMAP].spec, "127.0.0.12:143");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_DEBUG);
	ck_assert_uint_eq(set->trusted_network_count, 0);
	ck_assert_str_eq(set->spool_dir, "/srv/cm");
	ck_assert_str_eq(set->control_socket, RUNSTATEDIR "/clustermail/n2.sock");
	settings_free(&set);

	set = load_ok(settings_cluster, "n1");
	ck_assert_str_eq(set->listen[SETTINGS_SERVICE_IMAP].spec, "127.0.0.11:143");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_NOTICE);
	ck_assert_uint_eq(set->trusted_network_count, 2);
	settings_free(&set);

	/* A node without a section gets the global values. */
	set = load_ok(settings_cluster, "n3");
	ck_assert_str_eq(set->listen[SETTINGS_SERVICE_IMAP].spec, "127.0.0.1:143");
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_other_node_checked)
{
	/* A bad value in another node's section stops this node too. */
	ck_assert_load_error("[node n1]\nworkers = 2\n[node n2]\nworkers = 999\n",
			     "n1", "FILE:4: workers: 999 is out of range 0..256");
	/* So does an inconsistent combination that only node n2 has. */
	ck_assert_load_error("[node n1]\nworkers = 2\n"
			     "[node n2]\nlisten_imaps = 127.0.0.1:993\n", "n1",
			     "FILE:4: listen_imaps needs tls_cert and tls_key "
			     "(in the settings of node n2)");
	ck_assert_load_error("listen_imap = 127.0.0.1:143\n[node n2]\n"
			     "listen_pop3 = 127.0.0.1:143\n", "n1",
			     "FILE:3: listen_pop3 = 127.0.0.1:143 conflicts with "
			     "listen_imap = 127.0.0.1:143 (same address and port) "
			     "(in the settings of node n2)");
}
END_TEST

START_TEST(test_settings_unknown_key)
{
	ck_assert_load_error("spool_dir = /srv\nlisten_imp = 127.0.0.1:143\n", "n1",
			     "FILE:2: unknown key 'listen_imp' (did you mean "
			     "'listen_imap'?)");
	ck_assert_load_error("[node n1]\nsmtp_banner = hi\n", "n1",
			     "FILE:2: unknown key 'smtp_banner'");
	ck_assert_load_error("spool_dir /srv\n", "n1",
			     "FILE:1: missing '=' after 'spool_dir'");
}
END_TEST

START_TEST(test_settings_duplicate_key)
{
	ck_assert_load_error("workers = 1\nlog_level = info\nworkers = 2\n", "n1",
			     "FILE:3: duplicate key 'workers' (already set at line "
			     "1 in this section)");
	/* The same key globally and in a section is an override, not a
	   duplicate. */
	struct settings *set = load_ok("workers = 1\n[node n1]\nworkers = 2\n", "n1");

	ck_assert_uint_eq(set->workers, 2);
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_bad_values)
{
	ck_assert_load_error("\nlock_backend = foo\n", "n1",
			     "FILE:2: lock_backend: 'foo' is not one of fcntl, dlm, local");
	ck_assert_load_error("listen_imap = localhost:143\n", "n1",
			     "FILE:1: listen_imap: 'localhost:143': 'localhost' is not "
			     "an IPv4 address (host names are not accepted)");
	ck_assert_load_error("listen_lmtp = 127.0.0.1:0\n", "n1",
			     "FILE:1: listen_lmtp: '127.0.0.1:0': port must be 1-65535");
	ck_assert_load_error("metrics_listen = 9100\n", "n1",
			     "FILE:1: metrics_listen: '9100': expected ADDR:PORT "
			     "(IPv6 as [ADDR]:PORT)");
	ck_assert_load_error("workers = 257\n", "n1",
			     "FILE:1: workers: 257 is out of range 0..256");
	ck_assert_load_error("workers = four\n", "n1",
			     "FILE:1: workers: 'four' is not a non-negative integer");
	ck_assert_load_error("shutdown_timeout = 5 parsecs\n", "n1",
			     "FILE:1: shutdown_timeout: '5 parsecs' is not a duration "
			     "(a number with a unit: ms, s, m, h, d, w; e.g. 30s)");
	ck_assert_load_error("shutdown_timeout = 2d\n", "n1",
			     "FILE:1: shutdown_timeout: '2d' is longer than the "
			     "maximum 86400s");
	ck_assert_load_error("log_level = loud\n", "n1",
			     "FILE:1: log_level: 'loud' is not one of debug, info, "
			     "notice, warning, error");
	ck_assert_load_error("log_target = file\n", "n1",
			     "FILE:1: log_target: 'file' is not one of stderr, syslog");
	ck_assert_load_error("trusted_networks = 10.0.0.0/8 10.0.0.0/33\n", "n1",
			     "FILE:1: trusted_networks: '10.0.0.0/33': prefix length "
			     "must be 0-32");
	ck_assert_load_error("trusted_networks = intranet\n", "n1",
			     "FILE:1: trusted_networks: 'intranet': 'intranet' is not "
			     "an IP address");
	ck_assert_load_error("local_domains = example.com bad_domain.com\n", "n1",
			     "FILE:1: local_domains: 'bad_domain.com' is not a domain name");
	ck_assert_load_error("local_domains = -x.com\n", "n1",
			     "FILE:1: local_domains: '-x.com' is not a domain name");
	ck_assert_load_error("local_domains = a..b\n", "n1",
			     "FILE:1: local_domains: 'a..b' is not a domain name");
	ck_assert_load_error("mail_user = root\n", "n1",
			     "FILE:1: mail_user: must not be root (the daemon drops "
			     "its privileges to this user)");
	ck_assert_load_error("mail_user = a:b\n", "n1",
			     "FILE:1: mail_user: 'a:b' is not a valid user name (1-32 "
			     "letters, digits, '.', '_', '-')");
	ck_assert_load_error("mail_user =\n", "n1",
			     "FILE:1: mail_user: '' is not a valid user name (1-32 "
			     "letters, digits, '.', '_', '-')");
	ck_assert_load_error("[node n1]\nnode_name = a/b\n", "n1",
			     "FILE:2: node_name: 'a/b' is not a valid node name (1-64 "
			     "letters, digits, '-', '_', '.'; starting with a letter "
			     "or digit)");
	ck_assert_load_error("spool_dir =\n", "n1",
			     "FILE:1: spool_dir: must not be empty (an absolute path "
			     "is needed)");
	ck_assert_load_error("pid_file = /run/%h.pid\n", "n1",
			     "FILE:1: pid_file: '/run/%h.pid': '%h' is not valid (%n "
			     "is the node name, %% is '%')");
	ck_assert_load_error("users_file = /etc/users%\n", "n1",
			     "FILE:1: users_file: '/etc/users%' ends with a lone '%' "
			     "(write %% for '%')");
}
END_TEST

START_TEST(test_settings_domains_and_networks)
{
	struct settings *set = load_ok(
		"local_domains = localhost, A-B.example.COM\n"
		"trusted_networks = \"\"\n", "n1");

	ck_assert_uint_eq(set->local_domains.count, 2);
	ck_assert_str_eq(set->local_domains.items[0], "localhost");
	ck_assert_str_eq(set->local_domains.items[1], "a-b.example.com");
	ck_assert_uint_eq(set->trusted_network_count, 0);
	ck_assert_ptr_null(set->trusted_networks);
	settings_free(&set);

	/* A section replaces the global list rather than adding to it. */
	set = load_ok("local_domains = a.example\n[node n1]\n"
		      "local_domains = b.example\n", "n1");
	ck_assert_uint_eq(set->local_domains.count, 1);
	ck_assert_str_eq(set->local_domains.items[0], "b.example");
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_quotes_and_comments)
{
	struct settings *set = load_ok(
		"spool_dir = \"/srv/mail # not a comment \"\n"
		"users_file = /etc/cm/users   # the user list\n"
		"mail_user=\"vmail\"# right after the quote\n"
		"   log_level = warning\t# tab\n", "n1");

	ck_assert_str_eq(set->spool_dir, "/srv/mail # not a comment ");
	ck_assert_str_eq(set->users_file, "/etc/cm/users");
	ck_assert_str_eq(set->mail_user, "vmail");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_WARNING);
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_expansion)
{
	struct settings *set = load_ok(
		"spool_dir = /srv/%n/100%%/%n\n"
		"pid_file = /run/%%n\n", "mx-1");

	ck_assert_str_eq(set->spool_dir, "/srv/mx-1/100%/mx-1");
	ck_assert_str_eq(set->pid_file, "/run/%n");
	settings_free(&set);

	ck_assert_load_error("spool_dir = srv/%n\n", "n1",
			     "FILE:1: spool_dir: 'srv/%n' is not an absolute path");
	ck_assert_load_error("[node n1]\ntls_key = key.pem\n", "n1",
			     "FILE:2: tls_key: 'key.pem' is not an absolute path");
	/* A unix socket path must fit sun_path (108 bytes with the NUL). */
	char name[101], *text, *expected;

	memset(name, 'a', 100);
	name[100] = '\0';
	text = mem_printf("control_socket = /%%n/%s.sock\n", name);
	expected = mem_printf("FILE:1: control_socket: '/node1/%s.sock' is "
			      "longer than 107 bytes", name);
	ck_assert_load_error(text, "node1", expected);
	free(text);
	free(expected);
	/* "/n/" + 99 bytes + ".sock" = 107 bytes: fits. */
	name[99] = '\0';
	text = mem_printf("control_socket = /%%n/%s.sock\n", name);
	set = load_ok(text, "n");
	ck_assert_uint_eq(strlen(set->control_socket), 107);
	settings_free(&set);
	free(text);
}
END_TEST

START_TEST(test_settings_tls)
{
	struct settings *set;

	ck_assert_load_error("listen_imap = 127.0.0.1:143\n"
			     "listen_submissions = 127.0.0.1:465\n", "n1",
			     "FILE:2: listen_submissions needs tls_cert and tls_key");
	ck_assert_load_error("listen_pop3s = 127.0.0.1:995\ntls_cert = /c\n", "n1",
			     "FILE:2: tls_cert is set but tls_key is not");
	ck_assert_load_error("tls_key = /k\n", "n1",
			     "FILE:1: tls_key is set but tls_cert is not");
	/* A node section can take TLS away again: then its listener fails. */
	ck_assert_load_error("listen_imaps = 127.0.0.1:993\ntls_cert = /c\n"
			     "tls_key = /k\n[node n1]\ntls_cert =\ntls_key =\n", "n1",
			     "FILE:1: listen_imaps needs tls_cert and tls_key");
	/* STARTTLS listeners do not need a certificate. */
	set = load_ok("listen_imap = 127.0.0.1:143\nlisten_smtp = 127.0.0.1:25\n",
		      "n1");
	ck_assert_ptr_null(set->tls_cert);
	settings_free(&set);
	/* The files are not opened by settings: they need not exist. */
	set = load_ok("listen_imaps = 127.0.0.1:993\ntls_cert = /nonexistent/c\n"
		      "tls_key = /nonexistent/k\n", "n1");
	ck_assert_str_eq(set->tls_cert, "/nonexistent/c");
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_listener_conflicts)
{
	struct settings *set;

	ck_assert_load_error("listen_imap = 127.0.0.1:143\n"
			     "listen_lmtp = 127.0.0.1:143\n", "n1",
			     "FILE:2: listen_lmtp = 127.0.0.1:143 conflicts with "
			     "listen_imap = 127.0.0.1:143 (same address and port)");
	ck_assert_load_error("listen_smtp = *:25\n"
			     "metrics_listen = 127.0.0.1:25\n", "n1",
			     "FILE:2: metrics_listen = 127.0.0.1:25 conflicts with "
			     "listen_smtp = *:25 (same address and port)");
	ck_assert_load_error("listen_pop3 = [::1]:110\n"
			     "[node n1]\nlisten_imap = [::]:110\n", "n1",
			     "FILE:3: listen_imap = [::]:110 conflicts with "
			     "listen_pop3 = [::1]:110 (same address and port)");
	/* Different families or ports, or different addresses, coexist. */
	set = load_ok("listen_imap = *:143\nlisten_pop3 = [::]:143\n"
		      "listen_smtp = 127.0.0.1:25\nlisten_lmtp = 127.0.0.2:25\n"
		      "metrics_listen = 127.0.0.1:26\n", "n1");
	settings_free(&set);
	/* A listener switched off in a section no longer conflicts. */
	set = load_ok("listen_imap = 127.0.0.1:143\n[node n1]\nlisten_imap =\n"
		      "listen_pop3 = 127.0.0.1:143\n", "n1");
	ck_assert(!set->listen[SETTINGS_SERVICE_IMAP].enabled);
	ck_assert_ptr_null(set->listen[SETTINGS_SERVICE_IMAP].spec);
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_lock_backend)
{
	struct settings *set = load_ok("lock_backend = local\n", "n1");

	ck_assert_int_eq(set->lock_backend, SETTINGS_LOCK_LOCAL);
	settings_free(&set);
#ifdef HAVE_DLM
	set = load_ok("lock_backend = dlm\n", "n1");
	ck_assert_int_eq(set->lock_backend, SETTINGS_LOCK_DLM);
	settings_free(&set);
#else
	ck_assert_load_error("lock_backend = dlm\n", "n1",
			     "FILE:1: lock_backend: 'dlm' is not available: this "
			     "build lacks libdlm (rebuild with --with-dlm)");
#endif
	ck_assert_str_eq(settings_lock_backend_name(SETTINGS_LOCK_FCNTL), "fcntl");
	ck_assert_str_eq(settings_lock_backend_name(SETTINGS_LOCK_DLM), "dlm");
	ck_assert_str_eq(settings_lock_backend_name(SETTINGS_LOCK_LOCAL), "local");
}
END_TEST

START_TEST(test_settings_node_names)
{
	struct settings *set;
	char *name;

	/* A global node_name would give several nodes one name. */
	ck_assert_load_error("node_name = x\n[node n1]\n[node n2]\n", "n1",
			     "FILE:1: nodes n1 and n2 would both be named 'x' (node "
			     "names must be unique in the cluster)");
	ck_assert_load_error("[node n1]\nnode_name = x\n[node n2]\n"
			     "[node n3]\nnode_name = x\n", "n2",
			     "FILE:5: nodes n1 and n3 would both be named 'x' (node "
			     "names must be unique in the cluster)");
	ck_assert_load_error("[node n1]\n[node n2]\nnode_name = n1\n", "n1",
			     "FILE:3: nodes n1 and n2 would both be named 'n1' (node "
			     "names must be unique in the cluster)");
	/* ... but it is fine when only one node is involved. */
	set = load_ok("node_name = x\n[node n2]\nworkers = 2\n", "n2");
	ck_assert_str_eq(set->node_name, "x");
	ck_assert_uint_eq(set->workers, 2);
	settings_free(&set);
	ck_assert_load_error("", "bad name", "FILE: node name 'bad name' is not "
			     "valid (1-64 letters, digits, '-', '_', '.'; starting "
			     "with a letter or digit); give one with --node");
	/* Without sections a global node_name is a single node's name. */
	set = load_ok("node_name = solo\npid_file = /run/%n.pid\n", "n1");
	ck_assert_str_eq(set->node_name, "solo");
	ck_assert_str_eq(set->pid_file, "/run/solo.pid");
	settings_free(&set);

	name = settings_default_node_name();
	ck_assert_ptr_nonnull(name);
	ck_assert_uint_gt(strlen(name), 0);
	ck_assert_ptr_null(strchr(name, '.'));
	free(name);
}
END_TEST

START_TEST(test_settings_missing_file)
{
	struct settings *set = NULL;
	char *error = NULL;

	ck_assert_int_eq(settings_load(test_path, "n1", &set, &error), -1);
	ck_assert_ptr_null(set);
	ck_assert_ptr_nonnull(strstr(error, test_path));
	ck_assert_ptr_nonnull(strstr(error, strerror(ENOENT)));
	free(error);
}
END_TEST

START_TEST(test_settings_long_line)
{
	char *text = mem_zalloc(CONFIG_LINE_MAX + 64);

	memcpy(text, "workers = 1\n# ", 14);
	memset(text + 14, 'x', CONFIG_LINE_MAX);
	strcat(text, "\n");
	ck_assert_load_error(text, "n1", "FILE:2: line too long (more than "
			     "8192 bytes)");
	free(text);
}
END_TEST

START_TEST(test_settings_services)
{
	ck_assert_str_eq(settings_service_key(SETTINGS_SERVICE_IMAP), "listen_imap");
	ck_assert_str_eq(settings_service_name(SETTINGS_SERVICE_SUBMISSIONS),
			 "submissions");
	ck_assert_str_eq(settings_service_key(SETTINGS_SERVICE_LMTP), "listen_lmtp");
	ck_assert(settings_service_is_implicit_tls(SETTINGS_SERVICE_IMAPS));
	ck_assert(settings_service_is_implicit_tls(SETTINGS_SERVICE_POP3S));
	ck_assert(settings_service_is_implicit_tls(SETTINGS_SERVICE_SUBMISSIONS));
	ck_assert(!settings_service_is_implicit_tls(SETTINGS_SERVICE_SUBMISSION));
	ck_assert(!settings_service_is_implicit_tls(SETTINGS_SERVICE_SMTP));
}
END_TEST

/* trusted4 / trusted6 - is the IP on one of set's trusted networks? */
static bool trusted4(const struct settings *set, const char *ip)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
	return settings_is_trusted(set, (struct sockaddr *)&sin);
}

static bool trusted6(const struct settings *set, const char *ip)
{
	struct sockaddr_in6 sin6;

	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
	return settings_is_trusted(set, (struct sockaddr *)&sin6);
}

START_TEST(test_settings_trusted)
{
	struct settings *set = load_ok("", "n1");

	ck_assert(trusted4(set, "127.0.0.1"));
	ck_assert(trusted4(set, "127.255.0.9"));
	ck_assert(!trusted4(set, "128.0.0.1"));
	ck_assert(trusted6(set, "::1"));
	ck_assert(!trusted6(set, "::2"));
	ck_assert(trusted6(set, "::ffff:127.0.0.1"));
	ck_assert(!trusted6(set, "::ffff:10.0.0.1"));
	settings_free(&set);

	set = load_ok("trusted_networks = 192.0.2.0/24 2001:db8::/32\n", "n1");
	ck_assert(trusted4(set, "192.0.2.200"));
	ck_assert(!trusted4(set, "127.0.0.1"));
	ck_assert(trusted6(set, "2001:db8:1::5"));
	ck_assert(trusted6(set, "::ffff:192.0.2.1"));
	ck_assert(!trusted6(set, "2001:db9::1"));
	settings_free(&set);

	set = load_ok("trusted_networks =\n", "n1");
	ck_assert(!trusted4(set, "127.0.0.1"));
	ck_assert(!trusted6(set, "::1"));
	settings_free(&set);
}
END_TEST

START_TEST(test_settings_restart_changes)
{
	struct settings *old_set, *new_set;
	char *changes;

	old_set = load_ok("listen_imap = 127.0.0.1:143\nlog_level = info\n", "n1");
	new_set = load_ok("listen_imap = 127.0.0.1:0143\nlog_level = debug\n"
			  "trusted_networks =\nlocal_domains = example.com\n"
			  "shutdown_timeout = 5s\n", "n1");
	/* Same address written differently, and reloadable keys: nothing. */
	ck_assert_ptr_null(settings_restart_only_changes(old_set, new_set));
	settings_free(&new_set);

	new_set = load_ok("listen_imap = 127.0.0.1:144\nlisten_lmtp = 127.0.0.1:24\n"
			  "spool_dir = /srv/x\nlock_backend = local\n"
			  "control_socket = /run/x.sock\npid_file = /run/x.pid\n"
			  "metrics_listen = 127.0.0.1:9100\nmail_user = vmail\n"
			  "workers = 3\n", "n2");
	changes = settings_restart_only_changes(old_set, new_set);
	ck_assert_str_eq(changes, "node_name, spool_dir, lock_backend, listen_imap, "
			 "listen_lmtp, control_socket, pid_file, metrics_listen, "
			 "mail_user, workers");
	free(changes);
	changes = settings_restart_only_changes(new_set, new_set);
	ck_assert_ptr_null(changes);
	settings_free(&old_set);
	settings_free(&new_set);
}
END_TEST

/* example_path - doc/clustermail.conf.example in the source tree */
static char *example_path(void)
{
	const char *srcdir = getenv("top_srcdir");
	const char *file = __FILE__;
	const char *suffix = strstr(file, "tests/unit/test-config.c");

	if (srcdir != NULL)
		return mem_printf("%s/doc/clustermail.conf.example", srcdir);
	/* Run by hand: find the source tree from this file's name. */
	if (suffix == NULL)
		return mem_strdup("doc/clustermail.conf.example");
	return mem_printf("%.*sdoc/clustermail.conf.example",
			  (int)(suffix - file), file);
}

/* example_cluster_variant - the example with its single-node listeners
   removed and the commented three-node block switched on, as its text
   tells the reader to do */
static char *example_cluster_variant(const char *text)
{
	struct buffer out;
	const char *block = strstr(text, "# --- A three-node cluster");

	ck_assert_ptr_nonnull(block);
	buffer_init(&out, 0);
	for (const char *line = text; *line != '\0'; ) {
		size_t len = strcspn(line, "\n");
		bool in_block = line >= block;
		bool drop = !in_block && (str_begins_with(line, "listen_") ||
					  str_begins_with(line, "metrics_listen"));
		bool uncomment = in_block && line[0] == '#' &&
			(line[1] == '[' || (line[1] >= 'a' && line[1] <= 'z'));

		/* Dropped lines stay as empty lines: line numbers do not move. */
		if (!drop)
			buffer_append(&out, line + uncomment, len - uncomment);
		buffer_append_byte(&out, '\n');
		line += len + (line[len] == '\n' ? 1 : 0);
	}
	return buffer_export(&out, NULL);
}

START_TEST(test_settings_example_file)
{
	char *path = example_path();
	struct settings *set = NULL;
	char *error = NULL, *text, *variant;
	size_t len;
	FILE *f;

	if (settings_load(path, "mail1", &set, &error) < 0)
		ck_abort_msg("%s", error);
	ck_assert(set->listen[SETTINGS_SERVICE_IMAPS].enabled);
	ck_assert_str_eq(set->tls_cert, "/etc/clustermail/tls/mail1.crt");
	ck_assert_uint_eq(set->local_domains.count, 2);
	settings_free(&set);

	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	text = mem_zalloc(CONFIG_FILE_MAX + 1);
	len = fread(text, 1, CONFIG_FILE_MAX, f);
	fclose(f);
	text[len] = '\0';
	variant = example_cluster_variant(text);
	set = load_ok(variant, "n2");
	ck_assert_str_eq(set->listen[SETTINGS_SERVICE_IMAP].spec, "127.0.0.12:143");
	ck_assert(!set->listen[SETTINGS_SERVICE_SMTP].enabled);
	ck_assert_str_eq(set->tls_key, "/etc/clustermail/tls/n2.key");
	ck_assert_str_eq(set->control_socket, RUNSTATEDIR "/clustermail/n2.sock");
	settings_free(&set);
	set = load_ok(variant, "n3");
	ck_assert_int_eq(set->log_level, LOG_LEVEL_DEBUG);
	settings_free(&set);
	free(variant);
	free(text);
	free(path);
}
END_TEST

static Suite *parser_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parser");

	tcase_add_unchecked_fixture(tc, dir_setup, dir_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parser_syntax);
	tcase_add_test(tc, test_parser_quoting);
	tcase_add_test(tc, test_parser_syntax_errors);
	tcase_add_test(tc, test_parser_nul_byte);
	tcase_add_test(tc, test_parser_sections);
	tcase_add_test(tc, test_parser_section_errors);
	tcase_add_test(tc, test_parser_unknown_and_duplicate_keys);
	tcase_add_test(tc, test_parser_limits);
	tcase_add_test(tc, test_parser_value_errors);
	tcase_add_test(tc, test_parser_read_file);
	tcase_add_test(tc, test_parser_node_names);
	suite_add_tcase(s, tc);
	return s;
}

static Suite *settings_suite(void)
{
	Suite *s = suite_create("settings");
	TCase *tc = tcase_create("settings");

	tcase_add_unchecked_fixture(tc, dir_setup, dir_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_settings_defaults);
	tcase_add_test(tc, test_settings_every_key);
	tcase_add_test(tc, test_settings_node_override);
	tcase_add_test(tc, test_settings_other_node_checked);
	tcase_add_test(tc, test_settings_unknown_key);
	tcase_add_test(tc, test_settings_duplicate_key);
	tcase_add_test(tc, test_settings_bad_values);
	tcase_add_test(tc, test_settings_domains_and_networks);
	tcase_add_test(tc, test_settings_quotes_and_comments);
	tcase_add_test(tc, test_settings_expansion);
	tcase_add_test(tc, test_settings_tls);
	tcase_add_test(tc, test_settings_listener_conflicts);
	tcase_add_test(tc, test_settings_lock_backend);
	tcase_add_test(tc, test_settings_node_names);
	tcase_add_test(tc, test_settings_missing_file);
	tcase_add_test(tc, test_settings_long_line);
	tcase_add_test(tc, test_settings_services);
	tcase_add_test(tc, test_settings_trusted);
	tcase_add_test(tc, test_settings_restart_changes);
	tcase_add_test(tc, test_settings_example_file);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { parser_suite(), settings_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
