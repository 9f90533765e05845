/*
 * test-lib.c - unit tests of the generic library in src/lib: mem, buffer,
 * str, net, json and log. (config and settings have test-config.c.)
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/net.h"
#include "lib/str.h"
#include "unit.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- mem ---- */

START_TEST(test_mem)
{
	char *str;
	unsigned char *zero;

	str = mem_printf("%s-%d-%05.1f", "a", 42, 3.14159);
	ck_assert_str_eq(str, "a-42-003.1");
	MEM_FREE(&str);
	ck_assert_ptr_null(str);

	str = mem_strndup("abcdef", 3);
	ck_assert_str_eq(str, "abc");
	free(str);
	/* len past the end of the string copies only the string. */
	str = mem_strndup("ab", 100);
	ck_assert_str_eq(str, "ab");
	free(str);
	str = mem_strndup("", 0);
	ck_assert_str_eq(str, "");
	free(str);

	ck_assert_ptr_null(mem_strdup(NULL));
	str = mem_dup("x\0y", 3);
	ck_assert_int_eq(memcmp(str, "x\0y", 3), 0);
	free(str);

	zero = mem_calloc(16, 4);
	for (size_t i = 0; i < 64; i++)
		ck_assert_uint_eq(zero[i], 0);
	free(zero);
	free(mem_zalloc(0));
}
END_TEST

/* ---- buffer ---- */

START_TEST(test_buffer_append)
{
	struct buffer *buf = buffer_create(0);

	ck_assert_str_eq(buffer_cstr(buf), "");
	ck_assert_int_eq(buffer_append_str(buf, "hello"), 0);
	ck_assert_int_eq(buffer_append_byte(buf, ' '), 0);
	ck_assert_int_eq(buffer_append(buf, "world!!", 5), 0);
	ck_assert_uint_eq(buf->used, 11);
	ck_assert_str_eq(buffer_cstr(buf), "hello world");
	/* Binary data: a NUL inside, and still a terminator past used. */
	ck_assert_int_eq(buffer_append(buf, "\0z", 2), 0);
	ck_assert_uint_eq(buf->used, 13);
	ck_assert_uint_eq(buf->data[11], '\0');
	ck_assert_uint_eq(buf->data[12], 'z');
	ck_assert_uint_eq(buf->data[13], '\0');
	ck_assert_int_eq(buffer_append(buf, NULL, 0), 0);
	ck_assert_uint_eq(buf->used, 13);
	buffer_destroy(&buf);
	ck_assert_ptr_null(buf);
	buffer_destroy(&buf);
}
END_TEST

START_TEST(test_buffer_limit)
{
	struct buffer buf;

	buffer_init(&buf, 8);
	ck_assert_uint_eq(buffer_room(&buf), 8);
	ck_assert_int_eq(buffer_append_str(&buf, "12345"), 0);
	ck_assert_uint_eq(buffer_room(&buf), 3);
	/* Refused appends add nothing at all. */
	ck_assert_int_eq(buffer_append_str(&buf, "6789"), -1);
	ck_assert_uint_eq(buf.used, 5);
	ck_assert_str_eq(buffer_cstr(&buf), "12345");
	ck_assert_int_eq(buffer_printf(&buf, "%d", 1234), -1);
	ck_assert_str_eq(buffer_cstr(&buf), "12345");
	ck_assert_int_eq(buffer_printf(&buf, "%d", 678), 0);
	ck_assert_str_eq(buffer_cstr(&buf), "12345678");
	ck_assert_uint_eq(buffer_room(&buf), 0);
	ck_assert_int_eq(buffer_append_byte(&buf, 'x'), -1);
	ck_assert_ptr_null(buffer_reserve(&buf, 1));
	ck_assert_int_eq(buffer_append(&buf, "", 0), 0);
	/* The cap bounds the allocation too, not only the content. */
	ck_assert_uint_le(buf.alloc, 9);
	ck_assert_str_eq(buffer_cstr(&buf), "12345678");
	buffer_clear(&buf);
	ck_assert_uint_eq(buf.used, 0);
	ck_assert_str_eq(buffer_cstr(&buf), "");
	ck_assert_int_eq(buffer_append_str(&buf, "again"), 0);
	buffer_clear(&buf);
}
END_TEST

START_TEST(test_buffer_reserve_consume)
{
	struct buffer buf;
	unsigned char *dest;

	buffer_init(&buf, 100);
	dest = buffer_reserve(&buf, 10);
	ck_assert_ptr_nonnull(dest);
	memcpy(dest, "abcdef", 6);
	buffer_commit(&buf, 6);
	ck_assert_str_eq(buffer_cstr(&buf), "abcdef");
	ck_assert_ptr_null(buffer_reserve(&buf, 95));
	ck_assert_ptr_nonnull(buffer_reserve(&buf, 94));
	buffer_commit(&buf, 0);
	ck_assert_uint_eq(buf.used, 6);

	buffer_consume(&buf, 2);
	ck_assert_str_eq(buffer_cstr(&buf), "cdef");
	buffer_consume(&buf, 0);
	ck_assert_str_eq(buffer_cstr(&buf), "cdef");
	buffer_truncate(&buf, 3);
	ck_assert_str_eq(buffer_cstr(&buf), "cde");
	buffer_consume(&buf, 3);
	ck_assert_uint_eq(buf.used, 0);
	ck_assert_str_eq(buffer_cstr(&buf), "");
	ck_assert_int_eq(buffer_append_str(&buf, "xy"), 0);
	buffer_reset(&buf);
	ck_assert_str_eq(buffer_cstr(&buf), "");
	ck_assert_ptr_nonnull(buf.data);	/* reset keeps the allocation */
	buffer_clear(&buf);
	/* Empty, never-allocated buffers are fine to consume and reset. */
	buffer_consume(&buf, 0);
	buffer_reset(&buf);
}
END_TEST

START_TEST(test_buffer_export_import)
{
	struct buffer buf;
	size_t len = 99;
	char *data, *own;

	buffer_init(&buf, 0);
	data = buffer_export(&buf, &len);
	ck_assert_ptr_nonnull(data);
	ck_assert_uint_eq(len, 0);
	ck_assert_str_eq(data, "");
	free(data);

	buffer_append_str(&buf, "payload");
	data = buffer_export(&buf, &len);
	ck_assert_uint_eq(len, 7);
	ck_assert_str_eq(data, "payload");
	/* The buffer gave the bytes away and is empty but usable. */
	ck_assert_ptr_null(buf.data);
	ck_assert_uint_eq(buf.used, 0);
	ck_assert_int_eq(buffer_append_str(&buf, "more"), 0);
	ck_assert_str_eq(buffer_cstr(&buf), "more");
	free(data);

	own = mem_zalloc(16);
	memcpy(own, "imported", 8);
	buffer_import(&buf, own, 8, 16);
	ck_assert_ptr_eq(buf.data, own);
	ck_assert_str_eq(buffer_cstr(&buf), "imported");
	ck_assert_int_eq(buffer_append_str(&buf, "+grow+beyond+sixteen"), 0);
	ck_assert_str_eq(buffer_cstr(&buf), "imported+grow+beyond+sixteen");
	buffer_clear(&buf);	/* frees the imported (and regrown) bytes */
}
END_TEST

START_TEST(test_buffer_growth)
{
	struct buffer buf;
	char expected[16];

	buffer_init(&buf, 0);
	for (unsigned int i = 0; i < 10000; i++)
		ck_assert_int_eq(buffer_printf(&buf, "%04u,", i % 10000), 0);
	ck_assert_uint_eq(buf.used, 50000);
	ck_assert_uint_gt(buf.alloc, buf.used);
	snprintf(expected, sizeof(expected), "%04u,", 9999);
	ck_assert_str_eq(buffer_cstr(&buf) + 49995, expected);
	ck_assert_uint_eq(strlen(buffer_cstr(&buf)), 50000);
	buffer_clear(&buf);
}
END_TEST

/* ---- str ---- */

START_TEST(test_str_numbers)
{
	uint64_t num;
	unsigned int unum;

	ck_assert_int_eq(str_to_uint64("0", &num), 0);
	ck_assert_uint_eq(num, 0);
	ck_assert_int_eq(str_to_uint64("18446744073709551615", &num), 0);
	ck_assert_uint_eq(num, UINT64_MAX);
	ck_assert_int_eq(str_to_uint64("18446744073709551616", &num), -1);
	ck_assert_int_eq(str_to_uint64("99999999999999999999999", &num), -1);
	ck_assert_int_eq(str_to_uint64("", &num), -1);
	ck_assert_int_eq(str_to_uint64("12a", &num), -1);
	ck_assert_int_eq(str_to_uint64("-1", &num), -1);
	ck_assert_int_eq(str_to_uint64("+1", &num), -1);
	ck_assert_int_eq(str_to_uint64(" 1", &num), -1);
	ck_assert_int_eq(str_to_uint64("0x10", &num), -1);
	ck_assert_int_eq(str_to_uint("4294967295", &unum), 0);
	ck_assert_uint_eq(unum, 4294967295U);
	ck_assert_int_eq(str_to_uint("4294967296", &unum), -1);
}
END_TEST

START_TEST(test_str_size)
{
	uint64_t bytes;

	ck_assert_int_eq(str_parse_size("0", &bytes), 0);
	ck_assert_uint_eq(bytes, 0);
	ck_assert_int_eq(str_parse_size("512", &bytes), 0);
	ck_assert_uint_eq(bytes, 512);
	ck_assert_int_eq(str_parse_size("512B", &bytes), 0);
	ck_assert_uint_eq(bytes, 512);
	ck_assert_int_eq(str_parse_size("3k", &bytes), 0);
	ck_assert_uint_eq(bytes, 3072);
	ck_assert_int_eq(str_parse_size("3K", &bytes), 0);
	ck_assert_uint_eq(bytes, 3072);
	ck_assert_int_eq(str_parse_size("10M", &bytes), 0);
	ck_assert_uint_eq(bytes, 10485760);
	ck_assert_int_eq(str_parse_size("2G", &bytes), 0);
	ck_assert_uint_eq(bytes, 2ULL << 30);
	ck_assert_int_eq(str_parse_size("1T", &bytes), 0);
	ck_assert_uint_eq(bytes, 1ULL << 40);
	ck_assert_int_eq(str_parse_size("16777215T", &bytes), 0);
	ck_assert_int_eq(str_parse_size("16777216T", &bytes), -1);	/* 2^64 */
	ck_assert_int_eq(str_parse_size("", &bytes), -1);
	ck_assert_int_eq(str_parse_size("M", &bytes), -1);
	ck_assert_int_eq(str_parse_size("10X", &bytes), -1);
	ck_assert_int_eq(str_parse_size("1.5M", &bytes), -1);
	ck_assert_int_eq(str_parse_size("-1", &bytes), -1);
	ck_assert_int_eq(str_parse_size("10Mb", &bytes), -1);
}
END_TEST

START_TEST(test_str_duration)
{
	uint64_t msecs;

	ck_assert_int_eq(str_parse_duration_msecs("250ms", &msecs), 0);
	ck_assert_uint_eq(msecs, 250);
	ck_assert_int_eq(str_parse_duration_msecs("30s", &msecs), 0);
	ck_assert_uint_eq(msecs, 30000);
	ck_assert_int_eq(str_parse_duration_msecs("30", &msecs), 0);
	ck_assert_uint_eq(msecs, 30000);	/* a bare number is seconds */
	ck_assert_int_eq(str_parse_duration_msecs("15m", &msecs), 0);
	ck_assert_uint_eq(msecs, 15 * 60000);
	ck_assert_int_eq(str_parse_duration_msecs("2h", &msecs), 0);
	ck_assert_uint_eq(msecs, 2 * 3600000);
	ck_assert_int_eq(str_parse_duration_msecs("5d", &msecs), 0);
	ck_assert_uint_eq(msecs, 5ULL * 86400000);
	ck_assert_int_eq(str_parse_duration_msecs("1w", &msecs), 0);
	ck_assert_uint_eq(msecs, 7ULL * 86400000);
	ck_assert_int_eq(str_parse_duration_msecs("0s", &msecs), 0);
	ck_assert_uint_eq(msecs, 0);
	ck_assert_int_eq(str_parse_duration_msecs("", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("s", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("10y", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("1.5s", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("-1s", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("10 seconds", &msecs), -1);
	ck_assert_int_eq(str_parse_duration_msecs("18446744073709551615w",
						   &msecs), -1);
}
END_TEST

START_TEST(test_str_words_and_trim)
{
	struct str_array arr;
	char text[] = " \t hello world \r\n";
	char upper[] = "MiXeD-123";
	char spaces[] = "   ";

	str_array_init(&arr);
	str_split_words(" a, b,,c\td  ,", &arr);
	ck_assert_uint_eq(arr.count, 4);
	ck_assert_str_eq(arr.items[0], "a");
	ck_assert_str_eq(arr.items[1], "b");
	ck_assert_str_eq(arr.items[2], "c");
	ck_assert_str_eq(arr.items[3], "d");
	ck_assert_ptr_null(arr.items[4]);
	str_array_clear(&arr);
	str_split_words(" , \t", &arr);
	ck_assert_uint_eq(arr.count, 0);
	str_array_clear(&arr);

	ck_assert_str_eq(str_trim(text), "hello world");
	ck_assert_str_eq(str_trim(spaces), "");
	ck_assert_str_eq(str_lcase(upper), "mixed-123");
	ck_assert(str_begins_with("listen_imap", "listen_"));
	ck_assert(!str_begins_with("listen", "listen_"));
	ck_assert(str_begins_with("x", ""));
	ck_assert(str_begins_with_icase("AUTH PLAIN", "auth "));
	ck_assert(!str_begins_with_icase("AUTHX", "auth "));
}
END_TEST

START_TEST(test_str_array)
{
	struct str_array arr;
	char name[16];

	str_array_init(&arr);
	ck_assert(!str_array_contains(&arr, "x"));
	for (unsigned int i = 0; i < 100; i++) {
		snprintf(name, sizeof(name), "item%u", i);
		if (i % 2 == 0)
			str_array_add(&arr, name);
		else
			str_array_add_owned(&arr, mem_strdup(name));
		ck_assert_ptr_null(arr.items[arr.count]);
	}
	ck_assert_uint_eq(arr.count, 100);
	ck_assert_str_eq(arr.items[57], "item57");
	ck_assert(str_array_contains(&arr, "item99"));
	ck_assert(!str_array_contains(&arr, "item100"));
	str_array_clear(&arr);
	ck_assert_uint_eq(arr.count, 0);
	ck_assert_ptr_null(arr.items);
	str_array_add(&arr, "after clear");
	ck_assert_uint_eq(arr.count, 1);
	str_array_clear(&arr);
}
END_TEST

/* ---- net ---- */

/* hostport_str - parse spec (must succeed) and format it back */
static const char *hostport_str(const char *spec, char out[NET_ADDR_STRLEN])
{
	struct net_addr addr;
	const char *error = NULL;

	if (net_parse_hostport(spec, &addr, &error) < 0)
		ck_abort_msg("net_parse_hostport(%s): %s", spec, error);
	return net_addr_str((struct sockaddr *)&addr.ss, out);
}

/* hostport_error - parse spec, which must fail; returns the error */
static const char *hostport_error(const char *spec)
{
	struct net_addr addr;
	const char *error = NULL;

	if (net_parse_hostport(spec, &addr, &error) == 0)
		ck_abort_msg("net_parse_hostport accepted '%s'", spec);
	ck_assert_ptr_nonnull(error);
	return error;
}

START_TEST(test_net_hostport)
{
	char out[NET_ADDR_STRLEN];
	struct net_addr addr;
	const char *error;

	ck_assert_str_eq(hostport_str("127.0.0.1:143", out), "127.0.0.1:143");
	ck_assert_str_eq(hostport_str("*:25", out), "0.0.0.0:25");
	ck_assert_str_eq(hostport_str("[::1]:993", out), "[::1]:993");
	ck_assert_str_eq(hostport_str("[::]:1", out), "[::]:1");
	ck_assert_str_eq(hostport_str("[2001:DB8::A]:65535", out),
			 "[2001:db8::a]:65535");
	ck_assert_str_eq(hostport_str("[::ffff:192.0.2.1]:110", out),
			 "[::ffff:192.0.2.1]:110");

	ck_assert_int_eq(net_parse_hostport("192.0.2.9:587", &addr, &error), 0);
	ck_assert_uint_eq(addr.len, sizeof(struct sockaddr_in));
	ck_assert_uint_eq(net_addr_port((struct sockaddr *)&addr.ss), 587);
	ck_assert_str_eq(net_ip_str((struct sockaddr *)&addr.ss, out), "192.0.2.9");
	ck_assert_int_eq(net_parse_hostport("[fe80::1]:24", &addr, &error), 0);
	ck_assert_uint_eq(addr.len, sizeof(struct sockaddr_in6));
	ck_assert_str_eq(net_ip_str((struct sockaddr *)&addr.ss, out), "fe80::1");

	ck_assert_str_eq(hostport_error("mail.example.com:25"),
			 "'mail.example.com:25': 'mail.example.com' is not an IPv4 "
			 "address (host names are not accepted)");
	ck_assert_str_eq(hostport_error("127.0.0.1:0"),
			 "'127.0.0.1:0': port must be 1-65535");
	ck_assert_str_eq(hostport_error("127.0.0.1:65536"),
			 "'127.0.0.1:65536': port must be 1-65535");
	ck_assert_str_eq(hostport_error("127.0.0.1"),
			 "'127.0.0.1': expected ADDR:PORT (IPv6 as [ADDR]:PORT)");
	ck_assert_str_eq(hostport_error("::1:143"),
			 "'::1:143': expected ADDR:PORT (IPv6 as [ADDR]:PORT)");
	ck_assert_str_eq(hostport_error("[::1]143"),
			 "'[::1]143': expected [IPv6]:PORT");
	ck_assert_str_eq(hostport_error("[]:143"), "'[]:143': bad IPv6 address");
	ck_assert_str_eq(hostport_error(":143"), "':143': missing or bad address");
	ck_assert_str_eq(hostport_error("[127.0.0.1]:143"),
			 "'[127.0.0.1]:143': '127.0.0.1' is not an IPv6 address");
	hostport_error("127.0.0.1:");
	hostport_error("127.0.0.1:http");
	hostport_error("127.0.0.1:-1");
	hostport_error("127.0.0.1:99999999999999999999");
	hostport_error("256.0.0.1:25");
	hostport_error("");
	hostport_error("[::1");
}
END_TEST

/* cidr_matches - does the network spec contain the address ip? */
static bool cidr_matches(const char *spec, const char *ip)
{
	struct net_cidr cidr;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const char *error = NULL;

	if (net_cidr_parse(spec, &cidr, &error) < 0)
		ck_abort_msg("net_cidr_parse(%s): %s", spec, error);
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	sin.sin_family = AF_INET;
	sin6.sin6_family = AF_INET6;
	if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1)
		return net_cidr_match(&cidr, (struct sockaddr *)&sin);
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
	return net_cidr_match(&cidr, (struct sockaddr *)&sin6);
}

START_TEST(test_net_cidr)
{
	struct net_cidr cidr;
	const char *error;
	struct sockaddr_un unix_peer = { .sun_family = AF_UNIX, .sun_path = "x" };

	ck_assert(cidr_matches("10.0.0.0/8", "10.255.1.2"));
	ck_assert(!cidr_matches("10.0.0.0/8", "11.0.0.0"));
	ck_assert(cidr_matches("0.0.0.0/0", "203.0.113.5"));
	ck_assert(!cidr_matches("0.0.0.0/0", "2001:db8::1"));
	ck_assert(cidr_matches("::/0", "2001:db8::1"));
	ck_assert(cidr_matches("192.0.2.7/32", "192.0.2.7"));
	ck_assert(!cidr_matches("192.0.2.7/32", "192.0.2.6"));
	ck_assert(cidr_matches("192.0.2.7", "192.0.2.7"));
	ck_assert(!cidr_matches("192.0.2.7", "192.0.2.8"));
	/* /13: 10.8.0.0 - 10.15.255.255 */
	ck_assert(cidr_matches("10.8.0.0/13", "10.8.0.0"));
	ck_assert(cidr_matches("10.8.0.0/13", "10.15.255.255"));
	ck_assert(!cidr_matches("10.8.0.0/13", "10.16.0.0"));
	ck_assert(!cidr_matches("10.8.0.0/13", "10.7.255.255"));
	/* Host bits in the spec are cleared, not an error. */
	ck_assert(cidr_matches("10.9.9.9/13", "10.12.0.1"));
	ck_assert_int_eq(net_cidr_parse("10.9.9.9/13", &cidr, &error), 0);
	ck_assert_uint_eq(cidr.addr[1], 8);
	ck_assert_uint_eq(cidr.addr[2], 0);
	ck_assert(cidr_matches("2001:db8::/33", "2001:db8:7fff::1"));
	ck_assert(!cidr_matches("2001:db8::/33", "2001:db8:8000::1"));
	ck_assert(cidr_matches("::1", "::1"));
	ck_assert(!cidr_matches("::1", "::2"));
	/* IPv4-mapped IPv6 peers match IPv4 networks. */
	ck_assert(cidr_matches("127.0.0.0/8", "::ffff:127.1.2.3"));
	ck_assert(!cidr_matches("127.0.0.0/8", "::ffff:128.0.0.1"));
	ck_assert(!cidr_matches("127.0.0.0/8", "::127.0.0.1"));
	/* A unix socket peer is on no network. */
	ck_assert_int_eq(net_cidr_parse("0.0.0.0/0", &cidr, &error), 0);
	ck_assert(!net_cidr_match(&cidr, (struct sockaddr *)&unix_peer));

	ck_assert_int_eq(net_cidr_parse("10.0.0.0/33", &cidr, &error), -1);
	ck_assert_str_eq(error, "'10.0.0.0/33': prefix length must be 0-32");
	ck_assert_int_eq(net_cidr_parse("::/129", &cidr, &error), -1);
	ck_assert_str_eq(error, "'::/129': prefix length must be 0-128");
	ck_assert_int_eq(net_cidr_parse("/8", &cidr, &error), -1);
	ck_assert_int_eq(net_cidr_parse("10.0.0.0/", &cidr, &error), -1);
	ck_assert_int_eq(net_cidr_parse("10.0.0.0/8x", &cidr, &error), -1);
	ck_assert_int_eq(net_cidr_parse("10.0.0/8", &cidr, &error), -1);
	ck_assert_int_eq(net_cidr_parse("example.com/8", &cidr, &error), -1);
	ck_assert_str_eq(error, "'example.com/8': 'example.com' is not an IP address");
	ck_assert_int_eq(net_cidr_parse("", &cidr, &error), -1);
}
END_TEST

/* ---- json ---- */

/* json_of - a single JSON string value for text */
static char *json_of(const char *text)
{
	struct buffer out;
	struct json_writer w;

	buffer_init(&out, 0);
	json_init(&w, &out);
	json_string(&w, text);
	return buffer_export(&out, NULL);
}

#define ck_assert_json_string(text, expected) do { \
		char *json_ = json_of(text); \
		ck_assert_str_eq(json_, expected); \
		free(json_); \
	} while (0)

START_TEST(test_json_escaping)
{
	ck_assert_json_string("plain", "\"plain\"");
	ck_assert_json_string("", "\"\"");
	ck_assert_json_string("say \"hi\" \\o/", "\"say \\\"hi\\\" \\\\o/\"");
	ck_assert_json_string("a\nb\tc\rd\x01\x1f\x7f",
			      "\"a\\nb\\u0009c\\u000dd\\u0001\\u001f\\u007f\"");
	/* Valid UTF-8 passes through unchanged. */
	ck_assert_json_string("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
			      "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\"");
	/* Invalid UTF-8 becomes U+FFFD, one per bad byte. */
	ck_assert_json_string("a\xff" "b", "\"a\\ufffdb\"");
	ck_assert_json_string("end\xc3", "\"end\\ufffd\"");
	ck_assert_json_string("\xc0\x80", "\"\\ufffd\\ufffd\"");	/* overlong */
	ck_assert_json_string("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
	ck_assert_json_string("\xf4\x90\x80\x80",		/* > U+10FFFF */
			      "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
	ck_assert_json_string("\xe2\x82", "\"\\ufffd\\ufffd\"");
}
END_TEST

START_TEST(test_json_structure)
{
	struct buffer out;
	struct json_writer w;

	buffer_init(&out, 0);
	json_init(&w, &out);
	json_object_begin(&w);
	json_kv_string(&w, "node", "n1");
	json_kv_uint(&w, "uptime", 18446744073709551615ULL);
	json_kv_bool(&w, "ok", true);
	json_key(&w, "list");
	json_array_begin(&w);
	json_int(&w, -5);
	json_null(&w);
	json_string(&w, NULL);
	json_object_begin(&w);
	json_object_end(&w);
	json_array_begin(&w);
	json_array_end(&w);
	json_object_begin(&w);
	json_kv_bool(&w, "x", false);
	json_key(&w, "quote\"key");
	json_uint(&w, 0);
	json_object_end(&w);
	json_array_end(&w);
	json_kv_string(&w, "last", "end");
	json_object_end(&w);
	ck_assert_str_eq(buffer_cstr(&out),
			 "{\"node\":\"n1\",\"uptime\":18446744073709551615,"
			 "\"ok\":true,\"list\":[-5,null,null,{},[],"
			 "{\"x\":false,\"quote\\\"key\":0}],\"last\":\"end\"}");
	ck_assert_uint_eq(w.depth, 0);
	buffer_clear(&out);
}
END_TEST

/* ---- log ---- */

START_TEST(test_log_levels)
{
	enum log_level level;

	ck_assert_int_eq(log_level_parse("debug", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_DEBUG);
	ck_assert_int_eq(log_level_parse("info", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_INFO);
	ck_assert_int_eq(log_level_parse("notice", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_NOTICE);
	ck_assert_int_eq(log_level_parse("warning", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_WARNING);
	ck_assert_int_eq(log_level_parse("warn", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_WARNING);
	ck_assert_int_eq(log_level_parse("error", &level), 0);
	ck_assert_int_eq(level, LOG_LEVEL_ERROR);
	/* fatal and panic are not thresholds one can configure. */
	ck_assert_int_eq(log_level_parse("fatal", &level), -1);
	ck_assert_int_eq(log_level_parse("panic", &level), -1);
	ck_assert_int_eq(log_level_parse("INFO", &level), -1);
	ck_assert_int_eq(log_level_parse("", &level), -1);
	ck_assert_str_eq(log_level_name(LOG_LEVEL_NOTICE), "notice");
	ck_assert_str_eq(log_level_name(LOG_LEVEL_PANIC), "panic");
	ck_assert_str_eq(log_level_name((enum log_level)99), "unknown");
}
END_TEST

/* capture_log - run a logging step with stderr sent to a temp file and
   return what was written (caller frees) */
static char *capture_log(void (*step)(void))
{
	char path[] = "/tmp/cm-test-log.XXXXXX";
	char *text = mem_zalloc(16384);
	int fd = mkstemp(path), saved;
	ssize_t len;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(unlink(path), 0);
	saved = dup(STDERR_FILENO);
	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
	step();
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	len = pread(fd, text, 16383, 0);
	close(fd);
	ck_assert_int_ge(len, 0);
	return text;
}

static void log_step_message(void)
{
	log_open("test-lib", LOG_TARGET_STDERR);
	log_set_level(LOG_LEVEL_INFO);
	log_msg(LOG_LEVEL_WARNING, "imap-7f3a", "bad\nline\x01\x1b[31m %d", 5);
}

static void log_step_filtered(void)
{
	log_set_level(LOG_LEVEL_WARNING);
	log_info("dropped");
	log_debug("dropped too");
	log_error("kept");
	log_set_level(LOG_LEVEL_INFO);
}

static void log_step_long(void)
{
	char *huge = mem_zalloc(20000);

	memset(huge, 'x', 19999);
	log_info("%s\n", huge);
	free(huge);
}

START_TEST(test_log_line_format)
{
	char *text = capture_log(log_step_message);
	char *expected = mem_printf(" test-lib[%ld]: warning: [imap-7f3a] "
				    "bad?line??[31m 5\n", (long)getpid());

	/* "YYYY-MM-DDTHH:MM:SS.mmmZ" then the rest. */
	ck_assert_uint_gt(strlen(text), 24);
	ck_assert_int_eq(text[4], '-');
	ck_assert_int_eq(text[10], 'T');
	ck_assert_int_eq(text[23], 'Z');
	ck_assert_str_eq(text + 24, expected);
	ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1);
	free(expected);
	free(text);

	text = capture_log(log_step_filtered);
	ck_assert_ptr_null(strstr(text, "dropped"));
	ck_assert_ptr_nonnull(strstr(text, "error: kept\n"));
	ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1);
	free(text);
	ck_assert(log_level_enabled(LOG_LEVEL_INFO));
	ck_assert(!log_level_enabled(LOG_LEVEL_DEBUG));
	ck_assert_int_eq(log_get_level(), LOG_LEVEL_INFO);

	/* An over-long message is cut, marked, and still one line. */
	text = capture_log(log_step_long);
	ck_assert_ptr_nonnull(strstr(text, "xxx...\n"));
	ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1);
	ck_assert_uint_lt(strlen(text), 4096 + 256);
	free(text);
}
END_TEST

static Suite *lib_suite(void)
{
	Suite *s = suite_create("lib");
	TCase *tc;

	tc = tcase_create("mem");
	tcase_add_test(tc, test_mem);
	suite_add_tcase(s, tc);

	tc = tcase_create("buffer");
	tcase_add_test(tc, test_buffer_append);
	tcase_add_test(tc, test_buffer_limit);
	tcase_add_test(tc, test_buffer_reserve_consume);
	tcase_add_test(tc, test_buffer_export_import);
	tcase_add_test(tc, test_buffer_growth);
	suite_add_tcase(s, tc);

	tc = tcase_create("str");
	tcase_add_test(tc, test_str_numbers);
	tcase_add_test(tc, test_str_size);
	tcase_add_test(tc, test_str_duration);
	tcase_add_test(tc, test_str_words_and_trim);
	tcase_add_test(tc, test_str_array);
	suite_add_tcase(s, tc);

	tc = tcase_create("net");
	tcase_add_test(tc, test_net_hostport);
	tcase_add_test(tc, test_net_cidr);
	suite_add_tcase(s, tc);

	tc = tcase_create("json");
	tcase_add_test(tc, test_json_escaping);
	tcase_add_test(tc, test_json_structure);
	suite_add_tcase(s, tc);

	tc = tcase_create("log");
	tcase_add_test(tc, test_log_levels);
	tcase_add_test(tc, test_log_line_format);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	Suite *suites[] = { lib_suite() };

	return unit_run(suites, N_ELEMENTS(suites));
}
