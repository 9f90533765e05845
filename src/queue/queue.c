/*
 * queue.c - the cluster-wide outbound mail queue on the shared spool:
 * enqueueing, the envelope file format, scanning, claiming, flush.
 *
 * Layout (see queue.h): SPOOL/.queue/{msg,env,tmp,active}/ and the file
 * SPOOL/.queue/flush. The rules that keep it safe with many nodes:
 *
 *   - env/ID appears only after msg/ID is durable (content fsynced, link
 *     into msg/, msg/ fsynced), so every envelope a scan sees has its
 *     content. Removal goes the other way round: env/ID first, then
 *     msg/ID. A crash between the two steps leaves a msg/ID without an
 *     envelope, which is invisible to runners and removed by the scan
 *     once it is older than the grace period (long enough that it can
 *     never be a commit in progress).
 *   - An envelope is never modified in place: it is written whole to
 *     tmp/, fsynced and renamed over env/ID, so a reader sees the old or
 *     the new version, never a mix. Only the holder of the message's EX
 *     lock writes it, so tmp/ID.env cannot collide.
 *   - Each envelope ends with a checksum line; a file cut short by a
 *     crash on a file system without ordered data, or damaged otherwise,
 *     is reported (queue_error) and skipped, never half-parsed.
 *
 * Envelope format, version 1 (one "key=value" per line, LF ends):
 *
 *   clustermail-queue-envelope 1
 *   id=... sender=... [envid=...] ret=default|full|hdrs smtputf8=0|1
 *   body-8bit=0|1 [origin-node=...] [origin-client=...] created=N size=N
 *   attempts=N last-attempt=N next-attempt=N held=0|1 delay-warned=0|1
 *   [last-error=...]
 *   rcpt=ADDRESS            starts a recipient; then for it:
 *   rcpt-notify=N rcpt-state=pending|delivered|failed rcpt-dsn-sent=0|1
 *   rcpt-updated=N [rcpt-orcpt=...] [rcpt-status=...]
 *   [rcpt-diagnostic=...] [rcpt-remote-mta=...]
 *   end=HHHHHHHHHHHHHHHH    FNV-1a 64 of every byte before this line
 *
 * Values are escaped: '%', bytes below 0x20 and 0x7f are written as %XX,
 * everything else (UTF-8 included) as is, so any string round-trips. A
 * key whose value is NULL is simply left out. Unknown keys are ignored
 * (a later version 1 writer may add some); a different version number is
 * refused.
 *
 * Threads: struct queue holds only settings and an atomic counter; every
 * call's state lives in its writer/claim or on the stack, and the error
 * text is thread-local.
 *
 * Size: a little over 1,200 lines because the envelope format (about a
 * third) lives here too; it is the natural piece to move into its own
 * queue-env.c when the build lists one.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "lock/lock.h"
#include "maildir/sio.h"
#include "queue.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_DIR ".queue"
#define QUEUE_ENV_MAGIC "clustermail-queue-envelope"
#define QUEUE_ENV_VERSION 1
/* An envelope bigger than this is damaged (a message with 10,000
   recipients and long diagnostics stays far below). */
#define QUEUE_ENV_MAX_SIZE (16 * 1024 * 1024)
/* Write the message in chunks of this size. */
#define QUEUE_WRITE_CHUNK (64 * 1024)
#define QUEUE_DEFAULT_GRACE_SECS (36 * 3600)
/* Node names are cut to this many bytes inside IDs. */
#define QUEUE_ID_NODE_MAX 48
#define QUEUE_PATH_MAX (QUEUE_ID_MAX + 32)

struct queue {
	char *root;			/* owned; SPOOL/.queue */
	char *node_name;		/* owned; sanitized for IDs */
	struct lock_client *locks;	/* borrowed */
	int root_fd;			/* owned; SPOOL/.queue */
	uint64_t tmp_grace_secs;
	uint64_t id_counter;		/* atomic */
};

struct queue_writer {
	struct queue *q;		/* borrowed */
	struct sio *sio;		/* borrowed */
	int fd;
	char id[QUEUE_ID_MAX + 1];	/* tried first at commit */
	char tmp_path[QUEUE_PATH_MAX];	/* relative to root_fd */
	struct buffer buf;		/* pending bytes, CRLF already */
	uint64_t offset;		/* bytes written to fd */
	bool last_cr;			/* last byte given was CR */
	bool last_lf;			/* last byte stored was LF */
	int error;			/* first write error, or 0 */
};

struct queue_claim {
	struct queue *q;		/* borrowed */
	struct sio *sio;		/* borrowed */
	struct lock *lock;		/* owned, EX held */
	struct queue_envelope *env;	/* owned */
	char id[QUEUE_ID_MAX + 1];
};

static __thread char queue_error_text[512];

/* queue_set_error - remember a reason for queue_error(); returns ret */
static int ATTR_FORMAT(2, 3) queue_set_error(int ret, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(queue_error_text, sizeof(queue_error_text), fmt, args);
	va_end(args);
	return ret;
}

const char *queue_error(void)
{
	return queue_error_text;
}

/* queue_name_char - may c appear in a node name or ID? */
static bool queue_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/* queue_id_is_valid - a name we could have made: safe as a file name */
static bool queue_id_is_valid(const char *id)
{
	size_t len = strlen(id);

	if (len == 0 || len > QUEUE_ID_MAX || id[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!queue_name_char(id[i]))
			return false;
	}
	return true;
}

/* queue_check_id - -EINVAL with a reason for an unusable ID */
static int queue_check_id(const char *id)
{
	if (!queue_id_is_valid(id))
		return queue_set_error(-EINVAL, "invalid queue ID '%.*s'",
				       QUEUE_ID_MAX, id);
	return 0;
}

/* ---- create / destroy ------------------------------------------------- */

static int queue_mkdir(const char *path)
{
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

struct queue *queue_create(const struct queue_settings *set, char **error_r)
{
	static const char *const subdirs[] = { "msg", "env", "tmp", "active" };
	struct queue *q;
	char *path;
	int ret;

	q = mem_zalloc(sizeof(*q));
	q->root = mem_printf("%s/%s", set->spool_dir, QUEUE_DIR);
	q->locks = set->locks;
	q->tmp_grace_secs = set->tmp_grace_secs != 0 ? set->tmp_grace_secs :
		QUEUE_DEFAULT_GRACE_SECS;
	q->node_name = mem_strndup(set->node_name != NULL ? set->node_name :
				   "node", QUEUE_ID_NODE_MAX);
	for (char *p = q->node_name; *p != '\0'; p++) {
		if (!queue_name_char(*p))
			*p = '_';
	}
	if (q->node_name[0] == '\0' || q->node_name[0] == '.') {
		free(q->node_name);
		q->node_name = mem_strdup("node");
	}
	q->root_fd = -1;
	/* No sio here: this runs once at startup, before any loop. */
	ret = queue_mkdir(q->root);
	for (size_t i = 0; ret == 0 && i < N_ELEMENTS(subdirs); i++) {
		path = mem_printf("%s/%s", q->root, subdirs[i]);
		ret = queue_mkdir(path);
		free(path);
	}
	if (ret == 0) {
		q->root_fd = open(q->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (q->root_fd < 0)
			ret = -errno;
	}
	if (ret < 0) {
		*error_r = mem_printf("queue %s: %s", q->root, strerror(-ret));
		queue_destroy(&q);
		return NULL;
	}
	return q;
}

void queue_destroy(struct queue **_q)
{
	struct queue *q = *_q;

	if (q == NULL)
		return;
	*_q = NULL;
	if (q->root_fd >= 0)
		close(q->root_fd);
	free(q->root);
	free(q->node_name);
	free(q);
}

/* queue_new_id - 20261124T155100Z-node1-12345-000001 */
static void queue_new_id(struct queue *q, char id_r[QUEUE_ID_MAX + 1])
{
	uint64_t counter = __atomic_add_fetch(&q->id_counter, 1,
					      __ATOMIC_RELAXED);
	time_t now = time(NULL);
	struct tm tm;
	char stamp[32];

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(id_r, QUEUE_ID_MAX + 1, "%s-%s-%ld-%06" PRIu64, stamp,
		 q->node_name, (long)getpid(), counter);
}

/* ---- envelopes in memory ---------------------------------------------- */

static void queue_rcpt_free_fields(struct queue_rcpt *rcpt)
{
	free(rcpt->address);
	free(rcpt->orcpt);
	free(rcpt->status);
	free(rcpt->diagnostic);
	free(rcpt->remote_mta);
}

void queue_envelope_free(struct queue_envelope **_env)
{
	struct queue_envelope *env = *_env;

	if (env == NULL)
		return;
	*_env = NULL;
	for (size_t i = 0; i < env->rcpt_count; i++)
		queue_rcpt_free_fields(&env->rcpts[i]);
	free(env->rcpts);
	free(env->sender);
	free(env->envid);
	free(env->origin_node);
	free(env->origin_client);
	free(env->last_error);
	free(env);
}

struct queue_envelope *queue_envelope_dup(const struct queue_envelope *env)
{
	struct queue_envelope *copy = mem_zalloc(sizeof(*copy));

	*copy = *env;
	copy->sender = mem_strdup(env->sender);
	copy->envid = mem_strdup(env->envid);
	copy->origin_node = mem_strdup(env->origin_node);
	copy->origin_client = mem_strdup(env->origin_client);
	copy->last_error = mem_strdup(env->last_error);
	copy->rcpts = mem_calloc(env->rcpt_count + 1, sizeof(*copy->rcpts));
	for (size_t i = 0; i < env->rcpt_count; i++) {
		const struct queue_rcpt *src = &env->rcpts[i];
		struct queue_rcpt *dst = &copy->rcpts[i];

		*dst = *src;
		dst->address = mem_strdup(src->address);
		dst->orcpt = mem_strdup(src->orcpt);
		dst->status = mem_strdup(src->status);
		dst->diagnostic = mem_strdup(src->diagnostic);
		dst->remote_mta = mem_strdup(src->remote_mta);
	}
	return copy;
}

size_t queue_envelope_pending(const struct queue_envelope *env)
{
	size_t count = 0;

	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (env->rcpts[i].state == QUEUE_RCPT_PENDING)
			count++;
	}
	return count;
}

/* ---- envelope file format --------------------------------------------- */

static uint64_t queue_fnv1a(const unsigned char *data, size_t size)
{
	uint64_t hash = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++) {
		hash ^= data[i];
		hash *= 0x100000001b3ULL;
	}
	return hash;
}

/* queue_env_put - one "key=value" line, value escaped; NULL: no line */
static void queue_env_put(struct buffer *out, const char *key,
			  const char *value)
{
	static const char hex[] = "0123456789ABCDEF";

	if (value == NULL)
		return;
	buffer_append_str(out, key);
	buffer_append_byte(out, '=');
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0';
	     p++) {
		if (*p < 0x20 || *p == 0x7f || *p == '%') {
			buffer_append_byte(out, '%');
			buffer_append_byte(out, (unsigned char)hex[*p >> 4]);
			buffer_append_byte(out, (unsigned char)hex[*p & 15]);
		} else {
			buffer_append_byte(out, *p);
		}
	}
	buffer_append_byte(out, '\n');
}

static void queue_env_put_num(struct buffer *out, const char *key,
			      int64_t value)
{
	buffer_printf(out, "%s=%" PRId64 "\n", key, value);
}

static const char *const queue_state_names[] = {
	[QUEUE_RCPT_PENDING] = "pending",
	[QUEUE_RCPT_DELIVERED] = "delivered",
	[QUEUE_RCPT_FAILED] = "failed",
};
static const char *const queue_ret_names[] = {
	[QUEUE_RET_DEFAULT] = "default",
	[QUEUE_RET_FULL] = "full",
	[QUEUE_RET_HDRS] = "hdrs",
};

static void queue_env_format_rcpt(const struct queue_rcpt *rcpt,
				  struct buffer *out)
{
	queue_env_put(out, "rcpt", rcpt->address != NULL ? rcpt->address : "");
	queue_env_put_num(out, "rcpt-notify", rcpt->notify);
	queue_env_put(out, "rcpt-state",
		      queue_state_names[rcpt->state <= QUEUE_RCPT_FAILED ?
					rcpt->state : QUEUE_RCPT_PENDING]);
	queue_env_put_num(out, "rcpt-dsn-sent", rcpt->dsn_sent);
	queue_env_put_num(out, "rcpt-updated", rcpt->updated);
	queue_env_put(out, "rcpt-orcpt", rcpt->orcpt);
	queue_env_put(out, "rcpt-status", rcpt->status);
	queue_env_put(out, "rcpt-diagnostic", rcpt->diagnostic);
	queue_env_put(out, "rcpt-remote-mta", rcpt->remote_mta);
}

/* queue_env_format - the whole file into out */
static void queue_env_format(const struct queue_envelope *env,
			     struct buffer *out)
{
	buffer_printf(out, "%s %d\n", QUEUE_ENV_MAGIC, QUEUE_ENV_VERSION);
	queue_env_put(out, "id", env->id);
	queue_env_put(out, "sender", env->sender != NULL ? env->sender : "");
	queue_env_put(out, "envid", env->envid);
	queue_env_put(out, "ret", queue_ret_names[env->ret <= QUEUE_RET_HDRS ?
						 env->ret : QUEUE_RET_DEFAULT]);
	queue_env_put_num(out, "smtputf8", env->smtputf8);
	queue_env_put_num(out, "body-8bit", env->body_8bit);
	queue_env_put(out, "origin-node", env->origin_node);
	queue_env_put(out, "origin-client", env->origin_client);
	queue_env_put_num(out, "created", env->created);
	queue_env_put_num(out, "size", (int64_t)env->size);
	queue_env_put_num(out, "attempts", env->attempts);
	queue_env_put_num(out, "last-attempt", env->last_attempt);
	queue_env_put_num(out, "next-attempt", env->next_attempt);
	queue_env_put_num(out, "held", env->held);
	queue_env_put_num(out, "delay-warned", env->delay_warned);
	queue_env_put(out, "last-error", env->last_error);
	for (size_t i = 0; i < env->rcpt_count; i++)
		queue_env_format_rcpt(&env->rcpts[i], out);
	buffer_printf(out, "end=%016" PRIx64 "\n",
		      queue_fnv1a(out->data, out->used));
}

static int queue_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* queue_env_unescape - value [p, end) decoded; NULL if malformed (a bad
   escape or an escaped NUL) */
static char *queue_env_unescape(const char *p, const char *end)
{
	char *out = mem_zalloc((size_t)(end - p) + 1), *o = out;
	int hi, lo;

	while (p < end) {
		if (*p != '%') {
			*o++ = *p++;
			continue;
		}
		if (end - p < 3 || (hi = queue_hex_digit(p[1])) < 0 ||
		    (lo = queue_hex_digit(p[2])) < 0 || (hi | lo) == 0) {
			free(out);
			return NULL;
		}
		*o++ = (char)(hi << 4 | lo);
		p += 3;
	}
	return out;
}

static int queue_env_num(const char *value, int64_t *num_r)
{
	uint64_t num;

	if (value[0] == '-') {
		if (str_to_uint64(value + 1, &num) < 0 || num > INT64_MAX)
			return -1;
		*num_r = -(int64_t)num;
		return 0;
	}
	if (str_to_uint64(value, &num) < 0 || num > INT64_MAX)
		return -1;
	*num_r = (int64_t)num;
	return 0;
}

static int queue_env_name(const char *const *names, size_t count,
			  const char *value)
{
	for (size_t i = 0; i < count; i++) {
		if (strcmp(names[i], value) == 0)
			return (int)i;
	}
	return -1;
}

/* queue_env_set_string - key among keys[]: store *value there (taken
   over, *value = NULL); false if key is not in keys */
static bool queue_env_set_string(const char *const *keys, char **const *fields,
				 size_t count, const char *key, char **value)
{
	for (size_t i = 0; i < count; i++) {
		if (strcmp(key, keys[i]) == 0) {
			free(*fields[i]);
			*fields[i] = *value;
			*value = NULL;
			return true;
		}
	}
	return false;
}

/* queue_env_rcpt_field - a rcpt-* key (without the prefix) */
static int queue_env_rcpt_field(struct queue_rcpt *rcpt, const char *key,
				char **value)
{
	static const char *const keys[] = {
		"orcpt", "status", "diagnostic", "remote-mta"
	};
	char **const fields[] = { &rcpt->orcpt, &rcpt->status,
				  &rcpt->diagnostic, &rcpt->remote_mta };
	int64_t num;
	int idx;

	if (queue_env_set_string(keys, fields, N_ELEMENTS(keys), key, value))
		return 0;
	if (strcmp(key, "state") == 0) {
		idx = queue_env_name(queue_state_names,
				     N_ELEMENTS(queue_state_names), *value);
		if (idx < 0)
			return -1;
		rcpt->state = (enum queue_rcpt_state)idx;
		return 0;
	}
	if (strcmp(key, "notify") != 0 && strcmp(key, "dsn-sent") != 0 &&
	    strcmp(key, "updated") != 0)
		return 0;	/* unknown: from a later writer */
	if (queue_env_num(*value, &num) < 0)
		return -1;
	if (strcmp(key, "notify") == 0)
		rcpt->notify = (unsigned int)num;
	else if (strcmp(key, "dsn-sent") == 0)
		rcpt->dsn_sent = num != 0;
	else
		rcpt->updated = num;
	return 0;
}

static const char *const queue_env_num_keys[] = {
	"smtputf8", "body-8bit", "created", "size", "attempts",
	"last-attempt", "next-attempt", "held", "delay-warned",
};

/* queue_env_set_num - numeric field i of queue_env_num_keys */
static void queue_env_set_num(struct queue_envelope *env, size_t i,
			      int64_t num)
{
	switch (i) {
	case 0: env->smtputf8 = num != 0; break;
	case 1: env->body_8bit = num != 0; break;
	case 2: env->created = num; break;
	case 3: env->size = (uint64_t)num; break;
	case 4: env->attempts = (unsigned int)num; break;
	case 5: env->last_attempt = num; break;
	case 6: env->next_attempt = num; break;
	case 7: env->held = num != 0; break;
	default: env->delay_warned = num != 0; break;
	}
}

/* queue_env_field - one key of the envelope */
static int queue_env_field(struct queue_envelope *env, const char *key,
			   char **value)
{
	static const char *const keys[] = {
		"sender", "envid", "origin-node", "origin-client", "last-error"
	};
	char **const fields[] = { &env->sender, &env->envid, &env->origin_node,
				  &env->origin_client, &env->last_error };
	int64_t num;
	int idx;

	if (queue_env_set_string(keys, fields, N_ELEMENTS(keys), key, value))
		return 0;
	if (strcmp(key, "id") == 0) {
		if (!queue_id_is_valid(*value))
			return -1;
		strcpy(env->id, *value);
		return 0;
	}
	if (strcmp(key, "ret") == 0) {
		idx = queue_env_name(queue_ret_names,
				     N_ELEMENTS(queue_ret_names), *value);
		if (idx < 0)
			return -1;
		env->ret = (enum queue_ret)idx;
		return 0;
	}
	for (size_t i = 0; i < N_ELEMENTS(queue_env_num_keys); i++) {
		if (strcmp(key, queue_env_num_keys[i]) != 0)
			continue;
		if (queue_env_num(*value, &num) < 0)
			return -1;
		queue_env_set_num(env, i, num);
		return 0;
	}
	return 0;	/* unknown: from a later writer */
}

/* queue_env_add_rcpt - a new recipient with address (taken over) */
static void queue_env_add_rcpt(struct queue_envelope *env, char *address,
			       size_t *alloc)
{
	if (env->rcpt_count == *alloc) {
		*alloc = *alloc == 0 ? 4 : *alloc * 2;
		env->rcpts = mem_realloc(env->rcpts,
					 *alloc * sizeof(*env->rcpts));
	}
	memset(&env->rcpts[env->rcpt_count], 0, sizeof(*env->rcpts));
	env->rcpts[env->rcpt_count++].address = address;
}

/* queue_env_parse_lines - the key=value lines in [p, end) */
static int queue_env_parse_lines(struct queue_envelope *env, const char *p,
				 const char *end)
{
	size_t alloc = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eq = memchr(p, '=', (size_t)(nl - p));
		char key[32], *value;
		int ret = 0;

		if (eq == NULL || (size_t)(eq - p) >= sizeof(key))
			return -1;
		memcpy(key, p, (size_t)(eq - p));
		key[eq - p] = '\0';
		if ((value = queue_env_unescape(eq + 1, nl)) == NULL)
			return -1;
		if (strcmp(key, "rcpt") == 0) {
			queue_env_add_rcpt(env, value, &alloc);
			value = NULL;
		} else if (strncmp(key, "rcpt-", 5) == 0) {
			ret = env->rcpt_count == 0 ? -1 :
				queue_env_rcpt_field(&env->rcpts[env->rcpt_count - 1],
						     key + 5, &value);
		} else {
			ret = queue_env_field(env, key, &value);
		}
		free(value);
		if (ret < 0)
			return -1;
		p = nl + 1;
	}
	return 0;
}

/* queue_env_check_frame - magic line first, "end=" checksum line last;
   returns the start of the last line, or NULL with a reason */
static const char *queue_env_check_frame(const char *data, size_t size,
					 const char **reason_r)
{
	const char *end = data + size, *first_nl, *last;
	char magic[64], sum[17];

	if (size == 0 || data[size - 1] != '\n' ||
	    memchr(data, '\0', size) != NULL) {
		*reason_r = size == 0 ? "empty file" :
			"truncated (no final line end)";
		return NULL;
	}
	first_nl = memchr(data, '\n', size);
	snprintf(magic, sizeof(magic), "%s %d\n", QUEUE_ENV_MAGIC,
		 QUEUE_ENV_VERSION);
	if ((size_t)(first_nl + 1 - data) != strlen(magic) ||
	    memcmp(data, magic, strlen(magic)) != 0) {
		*reason_r = strncmp(data, QUEUE_ENV_MAGIC " ",
				    strlen(QUEUE_ENV_MAGIC) + 1) == 0 ?
			"unsupported format version" : "not a queue envelope";
		return NULL;
	}
	for (last = end - 1; last > data && last[-1] != '\n'; last--)
		;
	if (last <= first_nl || end - last != 4 + 16 + 1 ||
	    memcmp(last, "end=", 4) != 0) {
		*reason_r = "truncated (no end line)";
		return NULL;
	}
	memcpy(sum, last + 4, 16);
	sum[16] = '\0';
	if (queue_fnv1a((const unsigned char *)data, (size_t)(last - data)) !=
	    strtoull(sum, NULL, 16)) {
		*reason_r = "checksum mismatch";
		return NULL;
	}
	return last;
}

/* queue_env_parse - data (size bytes) into an envelope; NULL and a
   reason when the file is damaged */
static struct queue_envelope *queue_env_parse(const char *data, size_t size,
					      const char **reason_r)
{
	struct queue_envelope *env;
	const char *last;

	if ((last = queue_env_check_frame(data, size, reason_r)) == NULL)
		return NULL;
	env = mem_zalloc(sizeof(*env));
	if (queue_env_parse_lines(env, strchr(data, '\n') + 1, last) < 0) {
		*reason_r = "malformed line";
		queue_envelope_free(&env);
		return NULL;
	}
	if (env->id[0] == '\0' || env->sender == NULL || env->rcpt_count == 0) {
		*reason_r = "id, sender or recipients missing";
		queue_envelope_free(&env);
		return NULL;
	}
	return env;
}

/* ---- small file helpers ------------------------------------------------ */

/* queue_read_file - the whole file at path (relative to the queue root),
   at most max bytes, NUL-terminated; caller frees */
static int queue_read_file(struct queue *q, struct sio *sio, const char *path,
			   size_t max, char **data_r, size_t *size_r)
{
	struct stat st;
	char *data;
	ssize_t n;
	int fd, ret;

	fd = sio_openat(sio, q->root_fd, path, O_RDONLY, 0);
	if (fd < 0)
		return fd;
	if ((ret = sio_fstat(sio, fd, &st)) < 0) {
		sio_close(sio, fd);
		return ret;
	}
	if ((uint64_t)st.st_size > max) {
		sio_close(sio, fd);
		return -EFBIG;
	}
	data = mem_zalloc((size_t)st.st_size + 1);
	n = sio_pread(sio, fd, data, (size_t)st.st_size, 0);
	sio_close(sio, fd);
	if (n < 0) {
		free(data);
		return (int)n;
	}
	data[n] = '\0';
	*data_r = data;
	*size_r = (size_t)n;
	return 0;
}

/* queue_write_file_durably - data to tmp_path, fsync, rename to path,
   fsync path's directory */
static int queue_write_file_durably(struct queue *q, struct sio *sio,
				    const char *tmp_path, const char *path,
				    const char *dir, const void *data,
				    size_t size)
{
	ssize_t n;
	int fd, ret;

	fd = sio_openat(sio, q->root_fd, tmp_path,
			O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return queue_set_error(fd, "create %s/%s: %s", q->root,
				       tmp_path, strerror(-fd));
	n = sio_pwrite(sio, fd, data, size, 0);
	ret = n < 0 ? (int)n : sio_fsync(sio, fd, false);
	sio_close(sio, fd);
	if (ret == 0)
		ret = sio_renameat(sio, q->root_fd, tmp_path, q->root_fd, path, 0);
	if (ret < 0) {
		(void)sio_unlinkat(sio, q->root_fd, tmp_path, 0);
		return queue_set_error(ret, "write %s/%s: %s", q->root, path,
				       strerror(-ret));
	}
	if ((ret = sio_fsync_dir(sio, q->root_fd, dir)) < 0)
		return queue_set_error(ret, "fsync %s/%s: %s", q->root, dir,
				       strerror(-ret));
	return 0;
}

/* queue_env_write - env durably into env/ID (tmp/ID.env, rename) */
static int queue_env_write(struct queue *q, struct sio *sio,
			   const struct queue_envelope *env)
{
	char tmp_path[QUEUE_PATH_MAX], path[QUEUE_PATH_MAX];
	struct buffer out;
	int ret;

	buffer_init(&out, 0);
	queue_env_format(env, &out);
	snprintf(tmp_path, sizeof(tmp_path), "tmp/%s.env", env->id);
	snprintf(path, sizeof(path), "env/%s", env->id);
	ret = queue_write_file_durably(q, sio, tmp_path, path, "env",
				       out.data, out.used);
	buffer_clear(&out);
	return ret;
}

/* ---- enqueueing -------------------------------------------------------- */

int queue_write_begin(struct queue *q, struct sio *sio,
		      struct queue_writer **writer_r)
{
	struct queue_writer *w = mem_zalloc(sizeof(*w));

	w->q = q;
	w->sio = sio;
	queue_new_id(q, w->id);
	snprintf(w->tmp_path, sizeof(w->tmp_path), "tmp/%s.msg", w->id);
	w->fd = sio_openat(sio, q->root_fd, w->tmp_path,
			   O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (w->fd < 0) {
		int ret = queue_set_error(w->fd, "create %s/%s: %s", q->root,
					  w->tmp_path, strerror(-w->fd));
		free(w);
		*writer_r = NULL;
		return ret;
	}
	buffer_init(&w->buf, 0);
	*writer_r = w;
	return 0;
}

/* queue_writer_flush - the buffered bytes to the file */
static int queue_writer_flush(struct queue_writer *w)
{
	ssize_t n;

	if (w->error != 0 || w->buf.used == 0)
		return w->error;
	n = sio_pwrite(w->sio, w->fd, w->buf.data, w->buf.used, w->offset);
	if (n < 0) {
		w->error = queue_set_error((int)n, "write %s/%s: %s", w->q->root,
					   w->tmp_path, strerror((int)-n));
		return w->error;
	}
	w->offset += w->buf.used;
	buffer_reset(&w->buf);
	return 0;
}

int queue_write(struct queue_writer *w, const void *data, size_t size)
{
	const unsigned char *p = data;

	if (w->error != 0)
		return w->error;
	for (size_t i = 0; i < size; i++) {
		/* A bare LF becomes CRLF; CRLF stays as it is. */
		if (p[i] == '\n' && !w->last_cr)
			buffer_append_byte(&w->buf, '\r');
		buffer_append_byte(&w->buf, p[i]);
		w->last_cr = p[i] == '\r';
		w->last_lf = p[i] == '\n';
		if (w->buf.used >= QUEUE_WRITE_CHUNK &&
		    queue_writer_flush(w) < 0)
			return w->error;
	}
	return 0;
}

/* queue_writer_free - close and remove the temporary file, free */
static void queue_writer_free(struct queue_writer *w)
{
	if (w->fd >= 0)
		sio_close(w->sio, w->fd);
	(void)sio_unlinkat(w->sio, w->q->root_fd, w->tmp_path, 0);
	buffer_clear(&w->buf);
	free(w);
}

void queue_write_abort(struct queue_writer **_w)
{
	struct queue_writer *w = *_w;

	if (w == NULL)
		return;
	*_w = NULL;
	queue_writer_free(w);
}

/* queue_env_check_new - what queue_write_commit() accepts */
static int queue_env_check_new(const struct queue_envelope *env)
{
	if (env->rcpt_count == 0)
		return queue_set_error(-EINVAL, "queue: no recipients");
	for (size_t i = 0; i < env->rcpt_count; i++) {
		if (env->rcpts[i].address == NULL ||
		    env->rcpts[i].state == QUEUE_RCPT_FAILED)
			return queue_set_error(-EINVAL, "queue: recipient %zu "
					       "has no address or is failed", i);
	}
	return 0;
}

/* queue_writer_finish_content - last bytes out, final CRLF, fsync */
static int queue_writer_finish_content(struct queue_writer *w)
{
	int ret;

	/* A message must end with a line end (bare CR: complete it). */
	if (w->offset + w->buf.used > 0 && !w->last_lf) {
		if (!w->last_cr)
			buffer_append_byte(&w->buf, '\r');
		buffer_append_byte(&w->buf, '\n');
	}
	if ((ret = queue_writer_flush(w)) < 0)
		return ret;
	if ((ret = sio_fsync(w->sio, w->fd, false)) < 0)
		return queue_set_error(ret, "fsync %s/%s: %s", w->q->root,
				       w->tmp_path, strerror(-ret));
	ret = sio_close(w->sio, w->fd);
	w->fd = -1;
	if (ret < 0)
		return queue_set_error(ret, "close %s/%s: %s", w->q->root,
				       w->tmp_path, strerror(-ret));
	return 0;
}

/* queue_writer_link - link the content into msg/ under a fresh ID */
static int queue_writer_link(struct queue_writer *w,
			     char id_r[QUEUE_ID_MAX + 1])
{
	char path[QUEUE_PATH_MAX];
	int ret = -EEXIST;

	/* The ID of the temporary name is unique already; another one
	   only if msg/ has it anyway (a clock stepped back). */
	for (unsigned int i = 0; i < 10 && ret == -EEXIST; i++) {
		if (i == 0)
			memcpy(id_r, w->id, QUEUE_ID_MAX + 1);
		else
			queue_new_id(w->q, id_r);
		snprintf(path, sizeof(path), "msg/%s", id_r);
		ret = sio_linkat(w->sio, w->q->root_fd, w->tmp_path,
				 w->q->root_fd, path);
	}
	if (ret < 0)
		return queue_set_error(ret, "link %s/%s: %s", w->q->root,
				       path, strerror(-ret));
	if ((ret = sio_fsync_dir(w->sio, w->q->root_fd, "msg")) < 0) {
		(void)sio_unlinkat(w->sio, w->q->root_fd, path, 0);
		return queue_set_error(ret, "fsync %s/msg: %s", w->q->root,
				       strerror(-ret));
	}
	return 0;
}

int queue_write_commit(struct queue_writer **_w, struct queue_envelope *env)
{
	struct queue_writer *w = *_w;
	char id[QUEUE_ID_MAX + 1], path[QUEUE_PATH_MAX];
	int ret;

	*_w = NULL;
	if ((ret = queue_env_check_new(env)) < 0 ||
	    (ret = queue_writer_finish_content(w)) < 0 ||
	    (ret = queue_writer_link(w, id)) < 0) {
		queue_writer_free(w);
		return ret;
	}
	memcpy(env->id, id, sizeof(env->id));
	if (env->created == 0)
		env->created = (int64_t)time(NULL);
	if (env->size == 0)
		env->size = w->offset;
	/* The commit point: env/ID appears. */
	ret = queue_env_write(w->q, w->sio, env);
	if (ret < 0) {
		/* Remove both: nothing may be left behind (env/ID may
		   exist if only the directory fsync failed). */
		snprintf(path, sizeof(path), "env/%s", id);
		(void)sio_unlinkat(w->sio, w->q->root_fd, path, 0);
		snprintf(path, sizeof(path), "msg/%s", id);
		(void)sio_unlinkat(w->sio, w->q->root_fd, path, 0);
		env->id[0] = '\0';
	}
	queue_writer_free(w);
	return ret;
}

/* ---- reading and scanning ---------------------------------------------- */

int queue_read(struct queue *q, struct sio *sio, const char *id,
	       struct queue_envelope **env_r)
{
	char path[QUEUE_PATH_MAX], *data;
	const char *reason = "unknown";
	size_t size;
	int ret;

	*env_r = NULL;
	if ((ret = queue_check_id(id)) < 0)
		return ret;
	snprintf(path, sizeof(path), "env/%s", id);
	ret = queue_read_file(q, sio, path, QUEUE_ENV_MAX_SIZE, &data, &size);
	if (ret == -ENOENT)
		return queue_set_error(ret, "%s: no such message in the queue",
				       id);
	if (ret == -EFBIG)
		return queue_set_error(-EBADMSG, "%s/%s: envelope too large",
				       q->root, path);
	if (ret < 0)
		return queue_set_error(ret, "read %s/%s: %s", q->root, path,
				       strerror(-ret));
	*env_r = queue_env_parse(data, size, &reason);
	free(data);
	if (*env_r == NULL)
		return queue_set_error(-EBADMSG, "%s/%s: damaged envelope: %s",
				       q->root, path, reason);
	if (strcmp((*env_r)->id, id) != 0) {
		queue_envelope_free(env_r);
		return queue_set_error(-EBADMSG, "%s/%s: envelope of another "
				       "message", q->root, path);
	}
	return 0;
}

/* queue_collect_name - sio_readdir callback: every non-dot name */
static int queue_collect_name(const char *name,
			      unsigned char d_type ATTR_UNUSED, void *context)
{
	if (name[0] != '.')
		str_array_add(context, name);
	return 0;
}

static int queue_cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* queue_list_dir - the names in dir, sorted */
static int queue_list_dir(struct queue *q, struct sio *sio, const char *dir,
			  struct str_array *names)
{
	int ret;

	str_array_init(names);
	ret = sio_readdir(sio, q->root_fd, dir, queue_collect_name, names);
	if (ret < 0) {
		str_array_clear(names);
		return queue_set_error(ret, "list %s/%s: %s", q->root, dir,
				       strerror(-ret));
	}
	if (names->count > 1)
		qsort(names->items, names->count, sizeof(char *), queue_cmp_str);
	return 0;
}

static bool queue_names_contain(const struct str_array *names,
				const char *name)
{
	return names->count > 0 &&
		bsearch(&name, names->items, names->count, sizeof(char *),
			queue_cmp_str) != NULL;
}

/* queue_remove_if_old - unlink dir/name when older than the grace period */
static void queue_remove_if_old(struct queue *q, struct sio *sio,
				const char *dir, const char *name, time_t now)
{
	char path[QUEUE_PATH_MAX + 256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (sio_fstatat(sio, q->root_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	/* Young either way: another node's clock may be ahead of ours, and
	   its file from a moment ago then has a time in our future. */
	if ((uint64_t)llabs((long long)now - (long long)st.st_mtime) <
	    q->tmp_grace_secs)
		return;
	if (sio_unlinkat(sio, q->root_fd, path, 0) == 0)
		log_id_info(name, "queue: removed leftover %s/%s", q->root, path);
}

/* queue_clean_leftovers - msg/ files without an envelope, old tmp/ and
   active/ files (see the top of the file) */
static void queue_clean_leftovers(struct queue *q, struct sio *sio,
				  const struct str_array *envs)
{
	static const char *const dirs[] = { "msg", "tmp", "active" };
	time_t now = time(NULL);
	struct str_array names;

	for (size_t d = 0; d < N_ELEMENTS(dirs); d++) {
		if (queue_list_dir(q, sio, dirs[d], &names) < 0) {
			log_warn("%s", queue_error());
			continue;
		}
		for (size_t i = 0; i < names.count; i++) {
			/* tmp/ names never match an ID */
			if (queue_names_contain(envs, names.items[i]))
				continue;
			queue_remove_if_old(q, sio, dirs[d], names.items[i], now);
		}
		str_array_clear(&names);
	}
}

/* queue_drop_orphan_env - env/ID whose msg/ID is gone: remove under the
   claim (the envelope might be in the middle of its own removal) */
static void queue_drop_orphan_env(struct queue *q, struct sio *sio,
				  const char *id)
{
	struct queue_claim *claim;
	char path[QUEUE_PATH_MAX];
	struct stat st;

	if (queue_claim(q, sio, id, 0, &claim) < 0)
		return;
	snprintf(path, sizeof(path), "msg/%s", id);
	if (sio_fstatat(sio, q->root_fd, path, &st, 0) == -ENOENT) {
		log_id_error(id, "queue: %s/env/%s has no message file; "
			     "removing the envelope", q->root, id);
		(void)queue_claim_remove(&claim);
	} else {
		queue_claim_release(&claim);
	}
}

/* queue_scan_one - read one envelope and hand it to cb */
static int queue_scan_one(struct queue *q, struct sio *sio, const char *id,
			  const struct str_array *msgs,
			  queue_scan_callback_t *cb, void *context)
{
	struct queue_envelope *env;
	int ret;

	if (!queue_id_is_valid(id))
		return 0;
	if (!queue_names_contain(msgs, id)) {
		queue_drop_orphan_env(q, sio, id);
		return 0;
	}
	ret = queue_read(q, sio, id, &env);
	if (ret == -ENOENT)
		return 0;	/* delivered or deleted meanwhile */
	if (ret < 0) {
		log_id_error(id, "%s", queue_error());
		return 0;
	}
	ret = cb(env, context);
	queue_envelope_free(&env);
	return ret;
}

int queue_scan(struct queue *q, struct sio *sio, queue_scan_callback_t *cb,
	       void *context)
{
	struct str_array envs, msgs;
	int ret = 0;

	if ((ret = queue_list_dir(q, sio, "env", &envs)) < 0)
		return ret;
	/* Listed after env/: a message committed in between has its msg/
	   file already, so it is never taken for an orphan. */
	if ((ret = queue_list_dir(q, sio, "msg", &msgs)) < 0) {
		str_array_clear(&envs);
		return ret;
	}
	for (size_t i = 0; i < envs.count && ret == 0; i++)
		ret = queue_scan_one(q, sio, envs.items[i], &msgs, cb, context);
	if (ret == 0)
		queue_clean_leftovers(q, sio, &envs);
	str_array_clear(&msgs);
	str_array_clear(&envs);
	return ret;
}

/* ---- claiming ---------------------------------------------------------- */

/* queue_active_write - active/ID with our node name (informational) */
static void queue_active_write(struct queue *q, struct sio *sio,
			       const char *id)
{
	char path[QUEUE_PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "active/%s", id);
	fd = sio_openat(sio, q->root_fd, path, O_WRONLY | O_CREAT | O_TRUNC,
			0600);
	if (fd < 0)
		return;
	(void)sio_pwrite(sio, fd, q->node_name, strlen(q->node_name), 0);
	sio_close(sio, fd);
}

static struct lock *queue_lock_create(struct queue *q, const char *id)
{
	char name[LOCK_NAME_MAX + 1];

	lock_name_queue(id, name);
	return lock_create(q->locks, name, LOCK_CLASS_QUEUE);
}

int queue_claim(struct queue *q, struct sio *sio, const char *id,
		uint64_t timeout_msecs, struct queue_claim **claim_r)
{
	struct queue_claim *claim;
	struct lock *lock;
	int ret;

	*claim_r = NULL;
	if ((ret = queue_check_id(id)) < 0)
		return ret;
	lock = queue_lock_create(q, id);
	ret = sio_lock(sio, lock, LOCK_MODE_EX,
		       timeout_msecs == 0 ? LOCK_FLAG_NOQUEUE : 0,
		       timeout_msecs);
	if (ret < 0) {
		lock_destroy(&lock);
		if (ret == -EAGAIN || ret == -ETIMEDOUT)
			return queue_set_error(ret, "%s: being delivered or "
					       "changed by another process", id);
		return queue_set_error(ret, "%s: lock: %s", id, strerror(-ret));
	}
	claim = mem_zalloc(sizeof(*claim));
	claim->q = q;
	claim->sio = sio;
	claim->lock = lock;
	strcpy(claim->id, id);
	if ((ret = queue_read(q, sio, id, &claim->env)) < 0) {
		lock_destroy(&claim->lock);
		free(claim);
		return ret;
	}
	queue_active_write(q, sio, id);
	*claim_r = claim;
	return 0;
}

struct queue_envelope *queue_claim_envelope(struct queue_claim *claim)
{
	return claim->env;
}

int queue_claim_open_content(struct queue_claim *claim, int *fd_r)
{
	char path[QUEUE_PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "msg/%s", claim->id);
	fd = sio_openat(claim->sio, claim->q->root_fd, path, O_RDONLY, 0);
	if (fd < 0)
		return queue_set_error(fd, "open %s/%s: %s", claim->q->root,
				       path, strerror(-fd));
	*fd_r = fd;
	return 0;
}

int queue_claim_update(struct queue_claim *claim)
{
	/* The caller must not rename the message. */
	memcpy(claim->env->id, claim->id, sizeof(claim->env->id));
	return queue_env_write(claim->q, claim->sio, claim->env);
}

/* queue_claim_free - remove active/ID, release, free */
static void queue_claim_free(struct queue_claim *claim)
{
	char path[QUEUE_PATH_MAX];

	snprintf(path, sizeof(path), "active/%s", claim->id);
	(void)sio_unlinkat(claim->sio, claim->q->root_fd, path, 0);
	lock_destroy(&claim->lock);
	queue_envelope_free(&claim->env);
	free(claim);
}

int queue_claim_remove(struct queue_claim **_claim)
{
	struct queue_claim *claim = *_claim;
	struct queue *q = claim->q;
	char path[QUEUE_PATH_MAX];
	int ret;

	*_claim = NULL;
	snprintf(path, sizeof(path), "env/%s", claim->id);
	ret = sio_unlinkat(claim->sio, q->root_fd, path, 0);
	if (ret == 0 || ret == -ENOENT)
		ret = sio_fsync_dir(claim->sio, q->root_fd, "env");
	if (ret < 0) {
		ret = queue_set_error(ret, "remove %s/%s: %s", q->root, path,
				      strerror(-ret));
	} else {
		/* Without its envelope the content is invisible already;
		   a failure here leaves a leftover for the scan. */
		snprintf(path, sizeof(path), "msg/%s", claim->id);
		if (sio_unlinkat(claim->sio, q->root_fd, path, 0) == 0)
			(void)sio_fsync_dir(claim->sio, q->root_fd, "msg");
	}
	queue_claim_free(claim);
	return ret;
}

void queue_claim_release(struct queue_claim **_claim)
{
	struct queue_claim *claim = *_claim;

	if (claim == NULL)
		return;
	*_claim = NULL;
	queue_claim_free(claim);
}

char *queue_active_node(struct queue *q, struct sio *sio, const char *id)
{
	char path[QUEUE_PATH_MAX], *data = NULL;
	struct lock *lock;
	size_t size;
	int ret;

	if (!queue_id_is_valid(id))
		return NULL;
	/* No active/ID: nobody is at it (the file is written before any
	   delivery starts); otherwise the lock says whether it is stale. */
	snprintf(path, sizeof(path), "active/%s", id);
	if (queue_read_file(q, sio, path, 256, &data, &size) < 0)
		return NULL;
	lock = queue_lock_create(q, id);
	ret = sio_lock(sio, lock, LOCK_MODE_EX, LOCK_FLAG_NOQUEUE, 0);
	lock_destroy(&lock);
	if (ret != -EAGAIN) {
		free(data);
		return NULL;
	}
	for (char *p = data; *p != '\0'; p++) {
		if (!queue_name_char(*p))
			*p = '?';
	}
	if (data[0] == '\0') {
		free(data);
		data = mem_strdup("unknown");
	}
	return data;
}

/* ---- flush and retry --------------------------------------------------- */

int queue_flush_touch(struct queue *q, struct sio *sio)
{
	char stamp[128];
	struct timespec ts;
	int fd, len;
	ssize_t n;

	/* Writing changes the mtime, which is what runners watch. */
	clock_gettime(CLOCK_REALTIME, &ts);
	len = snprintf(stamp, sizeof(stamp), "%lld.%09ld %s\n",
		       (long long)ts.tv_sec, ts.tv_nsec, q->node_name);
	fd = sio_openat(sio, q->root_fd, "flush", O_WRONLY | O_CREAT, 0600);
	if (fd < 0)
		return queue_set_error(fd, "open %s/flush: %s", q->root,
				       strerror(-fd));
	n = sio_pwrite(sio, fd, stamp, (size_t)len, 0);
	if (n >= 0)
		n = sio_ftruncate(sio, fd, (uint64_t)len);
	sio_close(sio, fd);
	if (n < 0)
		return queue_set_error((int)n, "write %s/flush: %s", q->root,
				       strerror((int)-n));
	return 0;
}

uint64_t queue_flush_stamp(struct queue *q, struct sio *sio)
{
	struct stat st;

	if (sio_fstatat(sio, q->root_fd, "flush", &st, 0) < 0)
		return 0;
	return (uint64_t)st.st_mtim.tv_sec * 1000000000ULL +
		(uint64_t)st.st_mtim.tv_nsec;
}

uint64_t queue_retry_delay_msecs(unsigned int attempts, uint64_t initial_msecs,
				 uint64_t max_msecs)
{
	uint64_t delay = initial_msecs;

	for (unsigned int i = 1; i < attempts && delay < max_msecs; i++) {
		if (delay > UINT64_MAX / 2) {
			delay = UINT64_MAX;
			break;
		}
		delay *= 2;
	}
	return delay < max_msecs ? delay : max_msecs;
}
