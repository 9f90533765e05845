/*
 * transport-driver.c - runs one transport_deliver() call from the command
 * line, for tests/integration/test_transport.py: the settings come from a
 * real clustermail.conf (settings_load), the message from a file (CRLF,
 * not dot-stuffed, as in the queue), and each recipient's result is
 * printed as one JSON object per line, followed by {"accepted": N}.
 *
 *   transport-driver [--domain D] [--envid X] [--ret full|hdrs]
 *       [--smtputf8] [--8bit] [--notify never|LIST] [--orcpt]
 *       [--node NAME] CONFIG MESSAGE SENDER RCPT...
 *
 * LIST is a comma-separated subset of success,failure,delay; --orcpt gives
 * every recipient ORCPT=rfc822;ADDRESS. The domain defaults to the first
 * recipient's. Log lines go to stderr.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "queue/queue.h"
#include "queue/transport.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned int driver_parse_notify(const char *value)
{
	struct str_array words;
	unsigned int notify = 0;

	str_array_init(&words);
	str_split_words(value, &words);
	for (size_t i = 0; i < words.count; i++) {
		if (strcasecmp(words.items[i], "never") == 0)
			notify |= QUEUE_NOTIFY_NEVER;
		else if (strcasecmp(words.items[i], "success") == 0)
			notify |= QUEUE_NOTIFY_SUCCESS;
		else if (strcasecmp(words.items[i], "failure") == 0)
			notify |= QUEUE_NOTIFY_FAILURE;
		else if (strcasecmp(words.items[i], "delay") == 0)
			notify |= QUEUE_NOTIFY_DELAY;
		else
			log_fatal_status(64, "unknown NOTIFY word %s",
					 words.items[i]);
	}
	str_array_clear(&words);
	return notify;
}

static const char *driver_result_name(enum transport_result result)
{
	switch (result) {
	case TRANSPORT_OK:
		return "ok";
	case TRANSPORT_TEMP:
		return "temp";
	case TRANSPORT_PERM:
		return "perm";
	case TRANSPORT_PENDING:
		break;
	}
	return "pending";
}

static void driver_print(const struct transport_rcpt *rcpt)
{
	struct buffer out;
	struct json_writer w;

	buffer_init(&out, 0);
	json_init(&w, &out);
	json_object_begin(&w);
	json_kv_string(&w, "rcpt", rcpt->address);
	json_kv_string(&w, "result", driver_result_name(rcpt->result));
	json_kv_string(&w, "status", rcpt->status);
	json_kv_string(&w, "diagnostic", rcpt->diagnostic);
	json_kv_string(&w, "remote_mta", rcpt->remote_mta);
	json_kv_bool(&w, "dsn_relayed", rcpt->dsn_relayed);
	json_object_end(&w);
	printf("%s\n", buffer_cstr(&out));
	buffer_clear(&out);
}

int main(int argc, char **argv)
{
	struct transport_message msg;
	struct transport_rcpt *rcpts;
	struct settings *set;
	const char *domain = NULL, *node = NULL;
	unsigned int notify = 0, accepted;
	bool orcpt = false;
	char *error, **orcpts;
	struct stat st;
	size_t count;
	int argi = 1;

	memset(&msg, 0, sizeof(msg));
	(void)signal(SIGPIPE, SIG_IGN);
	log_open("transport-driver", LOG_TARGET_STDERR);
	for (; argi < argc && str_begins_with(argv[argi], "--"); argi++) {
		const char *opt = argv[argi];
		const char *value = argi + 1 < argc ? argv[argi + 1] : NULL;

		if (strcmp(opt, "--smtputf8") == 0) {
			msg.smtputf8 = true;
			continue;
		}
		if (strcmp(opt, "--8bit") == 0) {
			msg.body_8bit = true;
			continue;
		}
		if (strcmp(opt, "--orcpt") == 0) {
			orcpt = true;
			continue;
		}
		if (value == NULL)
			log_fatal_status(64, "%s needs a value", opt);
		argi++;
		if (strcmp(opt, "--domain") == 0)
			domain = value;
		else if (strcmp(opt, "--envid") == 0)
			msg.envid = value;
		else if (strcmp(opt, "--node") == 0)
			node = value;
		else if (strcmp(opt, "--notify") == 0)
			notify = driver_parse_notify(value);
		else if (strcmp(opt, "--ret") == 0)
			msg.ret = strcasecmp(value, "hdrs") == 0 ?
				QUEUE_RET_HDRS : QUEUE_RET_FULL;
		else
			log_fatal_status(64, "unknown option %s", opt);
	}
	if (argc - argi < 4)
		log_fatal_status(64, "usage: transport-driver [options] CONFIG "
				 "MESSAGE SENDER RCPT...");
	if (settings_load(argv[argi], node, &set, &error) < 0)
		log_fatal_status(78, "%s", error);
	log_set_level(set->log_level);
	msg.content_fd = open(argv[argi + 1], O_RDONLY | O_CLOEXEC);
	if (msg.content_fd < 0 || fstat(msg.content_fd, &st) < 0)
		log_fatal("%s: %s", argv[argi + 1], strerror(errno));
	msg.size = (uint64_t)st.st_size;
	msg.sender = argv[argi + 2];
	count = (size_t)(argc - argi - 3);
	rcpts = mem_calloc(count, sizeof(*rcpts));
	orcpts = mem_calloc(count, sizeof(*orcpts));
	for (size_t i = 0; i < count; i++) {
		rcpts[i].address = argv[argi + 3 + (int)i];
		rcpts[i].notify = notify;
		if (orcpt) {
			orcpts[i] = mem_printf("rfc822;%s", rcpts[i].address);
			rcpts[i].orcpt = orcpts[i];
		}
	}
	if (domain == NULL) {
		const char *at = strrchr(rcpts[0].address, '@');

		domain = at != NULL ? at + 1 : "";
	}

	accepted = transport_deliver(set, domain, &msg, rcpts, count);
	for (size_t i = 0; i < count; i++)
		driver_print(&rcpts[i]);
	printf("{\"accepted\": %u}\n", accepted);

	transport_rcpts_clear(rcpts, count);
	for (size_t i = 0; i < count; i++)
		free(orcpts[i]);
	free(orcpts);
	free(rcpts);
	(void)close(msg.content_fd);
	settings_free(&set);
	return 0;
}
