/*
 * cmd-queue.c - clustermailctl queue list|show|flush|delete|hold|release|
 * inject: the outbound queue (src/queue/queue.h), read and changed
 * directly on the shared spool, so it works from any node whether or not
 * a daemon runs there.
 *
 * Every change takes the message's claim (its cluster-wide EX lock), the
 * same lock a runner holds while it delivers, so an admin never rewrites
 * an envelope under a delivery in progress: flush skips busy messages
 * (they are being retried anyway), the others wait a bounded time and
 * then give up with EX_TEMPFAIL. "inject" queues a message like
 * "sendmail -f": the runners pick it up at their next scan.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/json.h"
#include "lib/settings.h"
#include "lib/str.h"
#include "maildir/sio.h"
#include "queue/queue.h"
#include "ctl.h"
#include "control-client.h"
#include "store-setup.h"

#include <getopt.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* How long delete/hold/release wait for a delivery in progress. */
#define CMD_QUEUE_WAIT_MSECS 30000
/* How long flush waits per message before skipping it. */
#define CMD_QUEUE_FLUSH_WAIT_MSECS 1000
#define CMD_QUEUE_ADDRESS_MAX 512
#define CMD_QUEUE_READ_CHUNK 65536

struct cmd_queue {
	struct ctl *ctl;		/* borrowed */
	struct store_setup *setup;	/* owned */
	struct queue *queue;		/* owned */
	struct sio *sio;		/* borrowed from setup */
	/* inject */
	const char *from;		/* NULL: --from not given */
	unsigned int notify;
	enum queue_ret ret;
	const char *envid;
	uid_t caller_uid;		/* before the privilege drop */
};

static void cmd_queue_usage(FILE *out)
{
	fputs("usage: clustermailctl [OPTIONS] queue list\n"
	      "       clustermailctl [OPTIONS] queue show ID\n"
	      "       clustermailctl [OPTIONS] queue flush [ID...]\n"
	      "       clustermailctl [OPTIONS] queue delete ID...\n"
	      "       clustermailctl [OPTIONS] queue hold ID...\n"
	      "       clustermailctl [OPTIONS] queue release ID...\n"
	      "       clustermailctl [OPTIONS] queue inject --from SENDER\n"
	      "                [--notify never|success,failure,delay]\n"
	      "                [--ret full|hdrs] [--envid ID] RCPT... < MESSAGE\n"
	      "\n"
	      "--from '' (or '<>') gives the null sender. See clustermailctl(8).\n",
	      out);
}

/* cmd_queue_exit_code - the exit code for a queue_* result */
static int cmd_queue_exit_code(int ret)
{
	switch (ret) {
	case 0:
		return CTL_EXIT_OK;
	case -ENOENT:
		return CTL_EXIT_FAILURE;
	case -EINVAL:
		return CTL_EXIT_DATAERR;
	case -EBADMSG:
		return CTL_EXIT_INCONSISTENT;
	case -EAGAIN:
	case -ETIMEDOUT:
	case -ESTALE:
		return CTL_EXIT_TEMPFAIL;
	case -EACCES:
	case -EPERM:
		return CTL_EXIT_NOPERM;
	case -ENOSPC:
	case -EDQUOT:
		return CTL_EXIT_CANTCREAT;
	default:
		return CTL_EXIT_IOERR;
	}
}

/* cmd_queue_fail - print queue_error() and return the exit code */
static int cmd_queue_fail(int ret)
{
	ctl_error("%s", queue_error());
	return cmd_queue_exit_code(ret);
}

/* cmd_queue_printable - text for a terminal: control bytes as \xNN
   (caller frees) */
static char *cmd_queue_printable(const char *text)
{
	struct buffer out;
	size_t len;

	buffer_init(&out, 0);
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0';
	     p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '\\')
			buffer_printf(&out, "\\x%02x", *p);
		else
			buffer_append_byte(&out, *p);
	}
	return buffer_export(&out, &len);
}

static void cmd_queue_format_time(int64_t secs, char *buf, size_t size)
{
	time_t t = (time_t)secs;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void cmd_queue_count_rcpts(const struct queue_envelope *env,
				  size_t counts_r[3])
{
	counts_r[0] = counts_r[1] = counts_r[2] = 0;
	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (env->rcpts[i].state <= QUEUE_RCPT_FAILED)
			counts_r[env->rcpts[i].state]++;
	}
}

/* ---- list -------------------------------------------------------------- */

struct cmd_queue_list {
	struct cmd_queue *cq;
	struct json_writer w;
	struct store_setup_table table;
	unsigned int count;
};

static void cmd_queue_list_json(struct cmd_queue_list *list,
				const struct queue_envelope *env,
				const char *active)
{
	struct json_writer *w = &list->w;
	size_t counts[3];

	cmd_queue_count_rcpts(env, counts);
	json_object_begin(w);
	json_kv_string(w, "id", env->id);
	json_kv_uint(w, "size", env->size);
	json_key(w, "arrival");
	json_int(w, env->created);
	json_kv_string(w, "sender", env->sender);
	json_key(w, "recipients");
	json_object_begin(w);
	json_kv_uint(w, "pending", counts[QUEUE_RCPT_PENDING]);
	json_kv_uint(w, "delivered", counts[QUEUE_RCPT_DELIVERED]);
	json_kv_uint(w, "failed", counts[QUEUE_RCPT_FAILED]);
	json_object_end(w);
	json_kv_uint(w, "attempts", env->attempts);
	json_key(w, "last_attempt");
	json_int(w, env->last_attempt);
	json_key(w, "next_attempt");
	json_int(w, env->next_attempt);
	json_kv_bool(w, "held", env->held);
	json_kv_string(w, "last_error", env->last_error);
	json_kv_string(w, "active_node", active);
	json_object_end(w);
}

static void cmd_queue_list_text(struct cmd_queue_list *list,
				const struct queue_envelope *env,
				const char *active)
{
	struct store_setup_table *t = &list->table;
	char when[32];
	size_t counts[3];
	char *text;

	cmd_queue_count_rcpts(env, counts);
	store_setup_table_add(t, env->id);
	store_setup_table_add_uint(t, env->size);
	cmd_queue_format_time(env->created, when, sizeof(when));
	store_setup_table_add(t, when);
	text = cmd_queue_printable(env->sender[0] == '\0' ? "<>" : env->sender);
	store_setup_table_add(t, text);
	free(text);
	store_setup_table_add_uint(t, counts[QUEUE_RCPT_PENDING]);
	store_setup_table_add_uint(t, counts[QUEUE_RCPT_DELIVERED]);
	store_setup_table_add_uint(t, counts[QUEUE_RCPT_FAILED]);
	store_setup_table_add_uint(t, env->attempts);
	if (env->next_attempt <= (int64_t)time(NULL))
		strcpy(when, "now");
	else
		cmd_queue_format_time(env->next_attempt, when, sizeof(when));
	store_setup_table_add(t, when);
	/* held, active:NODE, both ("held,active:n1"), or queued */
	if (active != NULL)
		text = mem_printf("%sactive:%s", env->held ? "held," : "",
				  active);
	else
		text = mem_strdup(env->held ? "held" : "queued");
	store_setup_table_add(t, text);
	free(text);
	text = cmd_queue_printable(env->last_error != NULL ?
				   env->last_error : "-");
	store_setup_table_add(t, text);
	free(text);
}

/* cmd_queue_list_one - scan callback */
static int cmd_queue_list_one(const struct queue_envelope *env, void *context)
{
	struct cmd_queue_list *list = context;
	char *active = queue_active_node(list->cq->queue, list->cq->sio,
					 env->id);

	if (list->cq->ctl->json)
		cmd_queue_list_json(list, env, active);
	else
		cmd_queue_list_text(list, env, active);
	free(active);
	list->count++;
	return 0;
}

static int cmd_queue_list(struct cmd_queue *cq)
{
	static const char *const header[] = {
		"ID", "SIZE", "ARRIVAL", "SENDER", "PENDING", "DONE",
		"FAILED", "TRIES", "NEXT", "STATE", "LAST-ERROR",
	};
	struct cmd_queue_list list = { .cq = cq };
	struct buffer json;
	int ret;

	buffer_init(&json, 0);
	if (cq->ctl->json) {
		json_init(&list.w, &json);
		json_object_begin(&list.w);
		json_key(&list.w, "messages");
		json_array_begin(&list.w);
	} else {
		store_setup_table_init(&list.table, "lrllrrrrlll");
		for (size_t i = 0; i < N_ELEMENTS(header); i++)
			store_setup_table_add(&list.table, header[i]);
	}
	ret = queue_scan(cq->queue, cq->sio, cmd_queue_list_one, &list);
	if (ret < 0) {
		buffer_clear(&json);
		if (!cq->ctl->json)
			str_array_clear(&list.table.cells);
		return cmd_queue_fail(ret);
	}
	if (cq->ctl->json) {
		json_array_end(&list.w);
		json_object_end(&list.w);
		return store_setup_print_json(&json);
	}
	if (list.count == 0) {
		str_array_clear(&list.table.cells);
		printf("The queue is empty.\n");
		return store_setup_flush();
	}
	return store_setup_table_print(&list.table);
}

/* ---- show -------------------------------------------------------------- */

static const char *cmd_queue_state_name(enum queue_rcpt_state state)
{
	switch (state) {
	case QUEUE_RCPT_PENDING: return "pending";
	case QUEUE_RCPT_DELIVERED: return "delivered";
	case QUEUE_RCPT_FAILED: return "failed";
	}
	return "unknown";
}

static const char *cmd_queue_ret_name(enum queue_ret ret)
{
	return ret == QUEUE_RET_FULL ? "full" : ret == QUEUE_RET_HDRS ?
		"hdrs" : NULL;
}

/* cmd_queue_notify_text - "success,delay" (static buffer), NULL if 0 */
static const char *cmd_queue_notify_text(unsigned int notify)
{
	static const char *const names[] = { "never", "success", "failure",
					     "delay" };
	static char buf[64];

	if (notify == 0)
		return NULL;
	buf[0] = '\0';
	for (unsigned int i = 0; i < N_ELEMENTS(names); i++) {
		if ((notify & (1U << i)) == 0)
			continue;
		if (buf[0] != '\0')
			strcat(buf, ",");
		strcat(buf, names[i]);
	}
	return buf;
}

static void cmd_queue_json_time(struct json_writer *w, const char *key,
				int64_t secs)
{
	json_key(w, key);
	json_int(w, secs);
}

static void cmd_queue_show_json_rcpt(struct json_writer *w,
				     const struct queue_rcpt *rcpt)
{
	json_object_begin(w);
	json_kv_string(w, "address", rcpt->address);
	json_kv_string(w, "orcpt", rcpt->orcpt);
	json_kv_string(w, "notify", cmd_queue_notify_text(rcpt->notify));
	json_kv_string(w, "state", cmd_queue_state_name(rcpt->state));
	json_kv_bool(w, "dsn_sent", rcpt->dsn_sent);
	json_kv_string(w, "status", rcpt->status);
	json_kv_string(w, "diagnostic", rcpt->diagnostic);
	json_kv_string(w, "remote_mta", rcpt->remote_mta);
	cmd_queue_json_time(w, "updated", rcpt->updated);
	json_object_end(w);
}

static int cmd_queue_show_json(const struct queue_envelope *env,
			       const char *active)
{
	struct json_writer w;
	struct buffer json;

	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_kv_string(&w, "id", env->id);
	json_kv_string(&w, "sender", env->sender);
	json_kv_string(&w, "envid", env->envid);
	json_kv_string(&w, "ret", cmd_queue_ret_name(env->ret));
	json_kv_bool(&w, "smtputf8", env->smtputf8);
	json_kv_bool(&w, "body_8bit", env->body_8bit);
	json_kv_string(&w, "origin_node", env->origin_node);
	json_kv_string(&w, "origin_client", env->origin_client);
	cmd_queue_json_time(&w, "arrival", env->created);
	json_kv_uint(&w, "size", env->size);
	json_kv_uint(&w, "attempts", env->attempts);
	cmd_queue_json_time(&w, "last_attempt", env->last_attempt);
	cmd_queue_json_time(&w, "next_attempt", env->next_attempt);
	json_kv_bool(&w, "held", env->held);
	json_kv_bool(&w, "delay_warned", env->delay_warned);
	json_kv_string(&w, "last_error", env->last_error);
	json_kv_string(&w, "active_node", active);
	json_key(&w, "recipients");
	json_array_begin(&w);
	for (size_t i = 0; i < env->rcpt_count; i++)
		cmd_queue_show_json_rcpt(&w, &env->rcpts[i]);
	json_array_end(&w);
	json_object_end(&w);
	return store_setup_print_json(&json);
}

/* cmd_queue_show_line - "  key: value" when value is not NULL */
static void cmd_queue_show_line(const char *indent, const char *key,
				const char *value)
{
	char *text;

	if (value == NULL)
		return;
	text = cmd_queue_printable(value);
	printf("%s%-14s %s\n", indent, key, text);
	free(text);
}

static void cmd_queue_show_time(const char *indent, const char *key,
				int64_t secs, const char *zero)
{
	char when[32];

	if (secs == 0) {
		cmd_queue_show_line(indent, key, zero);
		return;
	}
	cmd_queue_format_time(secs, when, sizeof(when));
	cmd_queue_show_line(indent, key, when);
}

static void cmd_queue_show_rcpt(const struct queue_rcpt *rcpt)
{
	cmd_queue_show_line("", "recipient:", rcpt->address);
	cmd_queue_show_line("  ", "state:", cmd_queue_state_name(rcpt->state));
	cmd_queue_show_line("  ", "orcpt:", rcpt->orcpt);
	cmd_queue_show_line("  ", "notify:", cmd_queue_notify_text(rcpt->notify));
	cmd_queue_show_line("  ", "status:", rcpt->status);
	cmd_queue_show_line("  ", "diagnostic:", rcpt->diagnostic);
	cmd_queue_show_line("  ", "remote-mta:", rcpt->remote_mta);
	if (rcpt->dsn_sent)
		cmd_queue_show_line("  ", "dsn-sent:", "yes");
	if (rcpt->updated != 0)
		cmd_queue_show_time("  ", "updated:", rcpt->updated, NULL);
}

static int cmd_queue_show_text(const struct queue_envelope *env,
			       const char *active)
{
	char num[32];

	cmd_queue_show_line("", "id:", env->id);
	cmd_queue_show_line("", "sender:", env->sender[0] == '\0' ? "<>" :
			    env->sender);
	cmd_queue_show_line("", "envid:", env->envid);
	cmd_queue_show_line("", "ret:", cmd_queue_ret_name(env->ret));
	if (env->smtputf8)
		cmd_queue_show_line("", "smtputf8:", "yes");
	if (env->body_8bit)
		cmd_queue_show_line("", "body:", "8bitmime");
	cmd_queue_show_line("", "origin-node:", env->origin_node);
	cmd_queue_show_line("", "origin-client:", env->origin_client);
	cmd_queue_show_time("", "arrival:", env->created, "unknown");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)env->size);
	cmd_queue_show_line("", "size:", num);
	snprintf(num, sizeof(num), "%u", env->attempts);
	cmd_queue_show_line("", "attempts:", num);
	cmd_queue_show_time("", "last-attempt:", env->last_attempt, "never");
	cmd_queue_show_time("", "next-attempt:",
			    env->next_attempt <= (int64_t)time(NULL) ? 0 :
			    env->next_attempt, "now");
	cmd_queue_show_line("", "held:", env->held ? "yes" : "no");
	if (env->delay_warned)
		cmd_queue_show_line("", "delay-warned:", "yes");
	cmd_queue_show_line("", "last-error:", env->last_error);
	cmd_queue_show_line("", "active-node:", active);
	for (size_t i = 0; i < env->rcpt_count; i++)
		cmd_queue_show_rcpt(&env->rcpts[i]);
	return store_setup_flush();
}

static int cmd_queue_show(struct cmd_queue *cq, char **ids, int count)
{
	struct queue_envelope *env;
	char *active;
	int ret;

	(void)count;
	ret = queue_read(cq->queue, cq->sio, ids[0], &env);
	if (ret < 0)
		return cmd_queue_fail(ret);
	active = queue_active_node(cq->queue, cq->sio, env->id);
	ret = cq->ctl->json ? cmd_queue_show_json(env, active) :
		cmd_queue_show_text(env, active);
	free(active);
	queue_envelope_free(&env);
	return ret;
}

/* ---- changes: flush, delete, hold, release ------------------------------ */

enum cmd_queue_change {
	CMD_QUEUE_FLUSH,
	CMD_QUEUE_DELETE,
	CMD_QUEUE_HOLD,
	CMD_QUEUE_RELEASE,
};

static const char *const cmd_queue_change_results[] = {
	[CMD_QUEUE_FLUSH] = "flushed",
	[CMD_QUEUE_DELETE] = "deleted",
	[CMD_QUEUE_HOLD] = "held",
	[CMD_QUEUE_RELEASE] = "released",
};

/* cmd_queue_change_one - claim id, change it; returns a queue result */
static int cmd_queue_change_one(struct cmd_queue *cq, const char *id,
				enum cmd_queue_change change)
{
	uint64_t wait = change == CMD_QUEUE_FLUSH ? CMD_QUEUE_FLUSH_WAIT_MSECS :
		CMD_QUEUE_WAIT_MSECS;
	struct queue_envelope *env;
	struct queue_claim *claim;
	int ret;

	ret = queue_claim(cq->queue, cq->sio, id, wait, &claim);
	if (ret < 0)
		return ret;
	env = queue_claim_envelope(claim);
	switch (change) {
	case CMD_QUEUE_DELETE:
		return queue_claim_remove(&claim);
	case CMD_QUEUE_FLUSH:
		env->next_attempt = 0;
		break;
	case CMD_QUEUE_HOLD:
		env->held = true;
		break;
	case CMD_QUEUE_RELEASE:
		env->held = false;
		break;
	}
	ret = queue_claim_update(claim);
	queue_claim_release(&claim);
	return ret;
}

/* cmd_queue_change_report - one message's outcome; the first failure's
   exit code is kept in *exit_r */
static void cmd_queue_change_report(struct cmd_queue *cq, struct json_writer *w,
				    const char *id, enum cmd_queue_change change,
				    int ret, int *exit_r)
{
	const char *result = cmd_queue_change_results[change];
	bool busy = ret == -EAGAIN || ret == -ETIMEDOUT;
	bool skipped = busy && change == CMD_QUEUE_FLUSH;

	if (ret < 0 && !skipped) {
		if (busy)
			ctl_error("%s: still being delivered after %u s; try "
				  "again later", id, CMD_QUEUE_WAIT_MSECS / 1000);
		else
			ctl_error("%s", queue_error());
		if (ret == -EBADMSG && change == CMD_QUEUE_DELETE)
			ctl_error("%s: a damaged envelope is not touched; look "
				  "at it, then remove .queue/env/%s and "
				  ".queue/msg/%s on the spool by hand", id, id, id);
		if (*exit_r == CTL_EXIT_OK)
			*exit_r = cmd_queue_exit_code(ret);
	}
	if (ret < 0)
		result = skipped ? "busy" : ret == -ENOENT ? "not found" :
			busy ? "busy" : "error";
	if (cq->ctl->json) {
		json_object_begin(w);
		json_kv_string(w, "id", id);
		json_kv_string(w, "result", result);
		if (ret < 0 && !skipped)
			json_kv_string(w, "error", queue_error());
		json_object_end(w);
	} else if (ret == 0) {
		printf("%s: %s\n", id, result);
	} else if (skipped) {
		printf("%s: being delivered now, skipped\n", id);
	}
}

/* cmd_queue_collect_due - scan callback for flush: IDs not due now */
static int cmd_queue_collect_due(const struct queue_envelope *env,
				 void *context)
{
	if (env->next_attempt != 0)
		str_array_add(context, env->id);
	return 0;
}

static int cmd_queue_change(struct cmd_queue *cq, char **ids, int count,
			    enum cmd_queue_change change)
{
	struct str_array all;
	struct json_writer w;
	struct buffer json;
	int exit_code = CTL_EXIT_OK, ret;

	str_array_init(&all);
	if (change == CMD_QUEUE_FLUSH && count == 0) {
		ret = queue_scan(cq->queue, cq->sio, cmd_queue_collect_due, &all);
		if (ret < 0) {
			str_array_clear(&all);
			return cmd_queue_fail(ret);
		}
		ids = all.items;
		count = (int)all.count;
	}
	buffer_init(&json, 0);
	json_init(&w, &json);
	json_object_begin(&w);
	json_key(&w, "messages");
	json_array_begin(&w);
	for (int i = 0; i < count; i++) {
		ret = cmd_queue_change_one(cq, ids[i], change);
		cmd_queue_change_report(cq, &w, ids[i], change, ret, &exit_code);
	}
	json_array_end(&w);
	if (change == CMD_QUEUE_FLUSH) {
		/* Even when nothing needed rewriting: wake every runner. */
		ret = queue_flush_touch(cq->queue, cq->sio);
		if (ret < 0 && exit_code == CTL_EXIT_OK)
			exit_code = cmd_queue_fail(ret);
		/* And through the daemon (and the cluster group) at once,
		   instead of at each runner's next scan. */
		if (ret == 0)
			(void)control_client_hint(cq->ctl->set->control_socket,
						  "queue-flush", 2000);
		if (!cq->ctl->json && ret == 0)
			printf("Runners on every node will retry the due "
			       "messages now.\n");
	}
	json_object_end(&w);
	str_array_clear(&all);
	if (cq->ctl->json)
		ret = store_setup_print_json(&json);
	else
		ret = store_setup_flush();
	buffer_clear(&json);
	return exit_code != CTL_EXIT_OK ? exit_code : ret;
}

/* ---- inject ------------------------------------------------------------ */

/* cmd_queue_address - check an address given on the command line; strips
   <>. Returns a copy, or NULL (printed). */
static char *cmd_queue_address(const char *what, const char *address,
			       bool null_ok)
{
	size_t len = strlen(address);

	if (len >= 2 && address[0] == '<' && address[len - 1] == '>') {
		address++;
		len -= 2;
	}
	if (len == 0 && null_ok)
		return mem_strdup("");
	if (len == 0 || len > CMD_QUEUE_ADDRESS_MAX ||
	    memchr(address, '@', len) == NULL) {
		ctl_error("queue inject: invalid %s '%s' (want local@domain)",
			  what, address);
		return NULL;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)address[i];

		if (c < 0x20 || c == 0x7f || c == '<' || c == '>') {
			ctl_error("queue inject: invalid character in %s", what);
			return NULL;
		}
	}
	return mem_strndup(address, len);
}

static bool cmd_queue_is_ascii(const char *text)
{
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0';
	     p++) {
		if (*p >= 0x80)
			return false;
	}
	return true;
}

/* cmd_queue_inject_envelope - the envelope from the options; NULL when
   something is invalid (printed) */
static struct queue_envelope *cmd_queue_inject_envelope(struct cmd_queue *cq,
							char **rcpts, int count)
{
	struct queue_envelope *env = mem_zalloc(sizeof(*env));

	env->sender = cmd_queue_address("sender", cq->from, true);
	env->rcpts = mem_calloc((size_t)count, sizeof(*env->rcpts));
	if (env->sender == NULL) {
		queue_envelope_free(&env);
		return NULL;
	}
	env->smtputf8 = !cmd_queue_is_ascii(env->sender);
	for (int i = 0; i < count; i++) {
		char *address = cmd_queue_address("recipient", rcpts[i], false);

		if (address == NULL) {
			queue_envelope_free(&env);
			return NULL;
		}
		env->rcpts[env->rcpt_count].address = address;
		env->rcpts[env->rcpt_count].notify = cq->notify;
		env->rcpt_count++;
		if (!cmd_queue_is_ascii(address))
			env->smtputf8 = true;
	}
	env->envid = mem_strdup(cq->envid);
	env->ret = cq->ret;
	env->origin_node = mem_strdup(cq->ctl->set->node_name);
	env->origin_client = mem_strdup("local");
	return env;
}

/* cmd_queue_received - our trace header (RFC 5321 4.4) */
static char *cmd_queue_received(struct cmd_queue *cq)
{
	const struct settings *set = cq->ctl->set;
	time_t now = time(NULL);
	char date[64];
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	return mem_printf("Received: by %s (clustermail) with local\r\n"
			  "\t(clustermailctl queue inject, uid %ld);\r\n"
			  "\t%s\r\n",
			  set->smtp_hostname != NULL ? set->smtp_hostname :
			  set->node_name, (long)cq->caller_uid, date);
}

/* cmd_queue_inject_copy - stdin into the writer; *eight_bit_r when a
   byte above 127 was seen. Returns an exit code (printed). */
static int cmd_queue_inject_copy(struct cmd_queue *cq, struct queue_writer *w,
				 bool *eight_bit_r)
{
	uint64_t limit = cq->ctl->set->smtp_max_message_size, total = 0;
	char *buf = mem_zalloc(CMD_QUEUE_READ_CHUNK);
	int exit_code = CTL_EXIT_OK;
	ssize_t n;

	while ((n = read(STDIN_FILENO, buf, CMD_QUEUE_READ_CHUNK)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ctl_error("queue inject: reading the message: %m");
			exit_code = CTL_EXIT_IOERR;
			break;
		}
		total += (uint64_t)n;
		if (limit != 0 && total > limit) {
			ctl_error("queue inject: the message is larger than "
				  "smtp_max_message_size (%llu bytes)",
				  (unsigned long long)limit);
			exit_code = CTL_EXIT_DATAERR;
			break;
		}
		for (ssize_t i = 0; i < n && !*eight_bit_r; i++)
			*eight_bit_r = (unsigned char)buf[i] >= 0x80;
		if (queue_write(w, buf, (size_t)n) < 0) {
			exit_code = cmd_queue_fail(-EIO);
			break;
		}
	}
	free(buf);
	return exit_code;
}

static int cmd_queue_inject(struct cmd_queue *cq, char **rcpts, int count)
{
	struct queue_envelope *env;
	struct queue_writer *w;
	bool eight_bit = false;
	char *received;
	int ret;

	if ((env = cmd_queue_inject_envelope(cq, rcpts, count)) == NULL)
		return CTL_EXIT_USAGE;
	if ((ret = queue_write_begin(cq->queue, cq->sio, &w)) < 0) {
		queue_envelope_free(&env);
		return cmd_queue_fail(ret);
	}
	received = cmd_queue_received(cq);
	ret = queue_write(w, received, strlen(received));
	free(received);
	ret = ret < 0 ? cmd_queue_fail(ret) :
		cmd_queue_inject_copy(cq, w, &eight_bit);
	if (ret != CTL_EXIT_OK) {
		queue_write_abort(&w);
		queue_envelope_free(&env);
		return ret;
	}
	env->body_8bit = eight_bit;
	if ((ret = queue_write_commit(&w, env)) < 0) {
		queue_envelope_free(&env);
		return cmd_queue_fail(ret);
	}
	if (cq->ctl->json) {
		struct json_writer jw;
		struct buffer json;

		buffer_init(&json, 0);
		json_init(&jw, &json);
		json_object_begin(&jw);
		json_kv_string(&jw, "id", env->id);
		json_object_end(&jw);
		ret = store_setup_print_json(&json);
	} else {
		printf("%s\n", env->id);
		ret = store_setup_flush();
	}
	queue_envelope_free(&env);
	return ret;
}

/* ---- command line ------------------------------------------------------ */

/* cmd_queue_parse_notify - "never" or a list of success/failure/delay */
static int cmd_queue_parse_notify(const char *value, unsigned int *notify_r)
{
	static const char *const names[] = { "never", "success", "failure",
					     "delay" };
	struct str_array words;
	unsigned int notify = 0;
	size_t i;

	str_array_init(&words);
	str_split_words(value, &words);
	for (size_t w = 0; w < words.count; w++) {
		for (i = 0; i < N_ELEMENTS(names); i++) {
			if (strcasecmp(words.items[w], names[i]) == 0)
				break;
		}
		if (i == N_ELEMENTS(names)) {
			str_array_clear(&words);
			return -1;
		}
		notify |= 1U << i;
	}
	str_array_clear(&words);
	if (notify == 0 || ((notify & QUEUE_NOTIFY_NEVER) != 0 &&
			    notify != QUEUE_NOTIFY_NEVER))
		return -1;
	*notify_r = notify;
	return 0;
}

static bool cmd_queue_xtext_ok(const char *value)
{
	size_t len = strlen(value);

	if (len == 0 || len > 100)
		return false;
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)value[i] < 0x21 ||
		    (unsigned char)value[i] > 0x7e)
			return false;
	}
	return true;
}

/* cmd_queue_parse_inject - inject's options; returns an exit code */
static int cmd_queue_parse_inject(struct cmd_queue *cq, int argc, char **argv)
{
	static const struct option options[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "notify", required_argument, NULL, 'N' },
		{ "ret", required_argument, NULL, 'R' },
		{ "envid", required_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	while ((opt = getopt_long(argc, argv, ":f:", options, NULL)) != -1) {
		switch (opt) {
		case 'f':
			cq->from = optarg;
			break;
		case 'N':
			if (cmd_queue_parse_notify(optarg, &cq->notify) < 0) {
				ctl_error("queue inject: invalid --notify '%s' "
					  "(never, or success,failure,delay)",
					  optarg);
				return CTL_EXIT_USAGE;
			}
			break;
		case 'R':
			if (strcasecmp(optarg, "full") == 0)
				cq->ret = QUEUE_RET_FULL;
			else if (strcasecmp(optarg, "hdrs") == 0)
				cq->ret = QUEUE_RET_HDRS;
			else {
				ctl_error("queue inject: invalid --ret '%s' "
					  "(full or hdrs)", optarg);
				return CTL_EXIT_USAGE;
			}
			break;
		case 'V':
			if (!cmd_queue_xtext_ok(optarg)) {
				ctl_error("queue inject: invalid --envid");
				return CTL_EXIT_USAGE;
			}
			cq->envid = optarg;
			break;
		default:
			ctl_error("queue inject: %s '%s'", opt == ':' ?
				  "missing argument for" : "unknown option",
				  argv[optind - 1]);
			return CTL_EXIT_USAGE;
		}
	}
	if (cq->from == NULL) {
		ctl_error("queue inject: --from SENDER is required");
		return CTL_EXIT_USAGE;
	}
	if (optind >= argc) {
		ctl_error("queue inject: no recipients");
		return CTL_EXIT_USAGE;
	}
	return CTL_EXIT_OK;
}

struct cmd_queue_subcommand {
	const char *name;
	int min_args, max_args;		/* after the name */
};

static const struct cmd_queue_subcommand cmd_queue_subcommands[] = {
	{ "list", 0, 0 }, { "show", 1, 1 }, { "flush", 0, INT32_MAX },
	{ "delete", 1, INT32_MAX }, { "hold", 1, INT32_MAX },
	{ "release", 1, INT32_MAX }, { "inject", 1, INT32_MAX },
};

/* cmd_queue_check_args - subcommand known, argument count right, no
   stray options; *first_r is the index of the first argument */
static int cmd_queue_check_args(struct cmd_queue *cq, int argc, char **argv,
				int *first_r)
{
	const struct cmd_queue_subcommand *sub = NULL;
	int count, ret;

	for (size_t i = 0; i < N_ELEMENTS(cmd_queue_subcommands); i++) {
		if (strcmp(argv[1], cmd_queue_subcommands[i].name) == 0)
			sub = &cmd_queue_subcommands[i];
	}
	if (sub == NULL) {
		ctl_error("queue: unknown subcommand '%s'", argv[1]);
		cmd_queue_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	optind = 0;	/* glibc: start over, main.c already used getopt */
	opterr = 0;
	if (strcmp(sub->name, "inject") == 0) {
		if ((ret = cmd_queue_parse_inject(cq, argc - 1, argv + 1)) != 0)
			return ret;
		*first_r = optind + 1;
		return CTL_EXIT_OK;
	}
	/* No options here; "--" ends them, anything else starting with
	   '-' is a mistake (IDs never start with '-'). */
	*first_r = 2;
	if (argc > 2 && strcmp(argv[2], "--") == 0)
		(*first_r)++;
	else {
		for (int i = 2; i < argc; i++) {
			if (argv[i][0] == '-') {
				ctl_error("queue %s: unknown option '%s'",
					  sub->name, argv[i]);
				return CTL_EXIT_USAGE;
			}
		}
	}
	count = argc - *first_r;
	if (count < sub->min_args || count > sub->max_args) {
		ctl_error("queue %s: wrong number of arguments", sub->name);
		cmd_queue_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	return CTL_EXIT_OK;
}

/* cmd_queue_open - the spool as mail_user, and the queue on it */
static int cmd_queue_open(struct cmd_queue *cq)
{
	const struct settings *set = cq->ctl->set;
	struct queue_settings qs = {
		.spool_dir = set->spool_dir,
		.node_name = set->node_name,
	};
	char *error;
	int ret;

	ret = store_setup_open_spool(cq->ctl, &cq->setup);
	if (ret != CTL_EXIT_OK)
		return ret;
	cq->sio = cq->setup->sio;
	qs.locks = cq->setup->locks;
	cq->queue = queue_create(&qs, &error);
	if (cq->queue == NULL) {
		ctl_error("%s", error);
		free(error);
		return CTL_EXIT_TEMPFAIL;
	}
	return CTL_EXIT_OK;
}

static int cmd_queue_run(struct cmd_queue *cq, const char *name, char **args,
			 int count)
{
	if (strcmp(name, "list") == 0)
		return cmd_queue_list(cq);
	if (strcmp(name, "show") == 0)
		return cmd_queue_show(cq, args, count);
	if (strcmp(name, "flush") == 0)
		return cmd_queue_change(cq, args, count, CMD_QUEUE_FLUSH);
	if (strcmp(name, "delete") == 0)
		return cmd_queue_change(cq, args, count, CMD_QUEUE_DELETE);
	if (strcmp(name, "hold") == 0)
		return cmd_queue_change(cq, args, count, CMD_QUEUE_HOLD);
	if (strcmp(name, "release") == 0)
		return cmd_queue_change(cq, args, count, CMD_QUEUE_RELEASE);
	return cmd_queue_inject(cq, args, count);
}

int cmd_queue(struct ctl *ctl, int argc, char **argv)
{
	struct cmd_queue cq = { .ctl = ctl, .caller_uid = getuid() };
	int first, ret;

	if (argc < 2) {
		cmd_queue_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		cmd_queue_usage(stdout);
		return store_setup_flush();
	}
	ret = cmd_queue_check_args(&cq, argc, argv, &first);
	if (ret == CTL_EXIT_OK)
		ret = cmd_queue_open(&cq);
	if (ret == CTL_EXIT_OK)
		ret = cmd_queue_run(&cq, argv[1], argv + first, argc - first);
	queue_destroy(&cq.queue);
	store_setup_close(&cq.setup);
	return ret;
}
