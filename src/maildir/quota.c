/*
 * quota.c - RFC 9208 STORAGE and MESSAGE limits per user.
 *
 * Limits live in "clustermail.quota" in the user root, one "NAME VALUE"
 * line per limit ("storage BYTES", "messages COUNT"); a missing line or
 * file means no limit. Lines we do not know are kept when the limits are
 * changed, so a newer version's settings survive an older node.
 *
 * Usage is not stored: it is the sum of the sizes and message counts of
 * every existing mailbox, computed from their status when needed. A
 * stored counter would have to be updated under the user lock by every
 * delivery and expunge on every node, serializing all of a user's
 * mailboxes on one lock; computing it costs a status per mailbox, and is
 * done only when a limit is actually set.
 *
 * The check is advisory in the usual way: two deliveries on two nodes
 * may both pass it and together overshoot a limit by one message. That
 * is what every Maildir quota does and what RFC 9208 allows ("the server
 * MAY allow the resource usage to exceed the limit temporarily").
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "store-private.h"

#define QUOTA_FILE "clustermail.quota"
#define QUOTA_EXCEEDED_MESSAGE "Quota exceeded (mailbox for user is full)"

struct quota_limits {
	uint64_t storage;	/* bytes; 0 = no limit */
	uint64_t messages;	/* 0 = no limit */
};

/* quota_line_value - if line is "key VALUE", the value part, else NULL */
static const char *quota_line_value(const char *line, const char *key)
{
	size_t len = strlen(key);

	if (strncmp(line, key, len) != 0 || line[len] != ' ')
		return NULL;
	return line + len + 1;
}

static void quota_limits_parse(struct store_user *user, char *data,
			       struct quota_limits *limits_r)
{
	char *line, *next;
	const char *value;
	uint64_t *limit, num;

	for (line = data; line != NULL; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if ((value = quota_line_value(line, "storage")) != NULL)
			limit = &limits_r->storage;
		else if ((value = quota_line_value(line, "messages")) != NULL)
			limit = &limits_r->messages;
		else	/* not ours; store_quota_set() keeps it */
			continue;
		if (str_to_uint64(value, &num) == 0) {
			*limit = num;
			continue;
		}
		/* Ignoring the line lifts that limit: better than refusing
		   every delivery because of a typo, and the log says so. */
		log_id_warn(store_user_name(user), "%s: invalid line: %s",
			    QUOTA_FILE, line);
	}
}

/* quota_limits_read - the limits; none when the file is missing */
static int quota_limits_read(struct store_user *user,
			     struct quota_limits *limits_r)
{
	char *data;
	size_t size;
	int ret;

	memset(limits_r, 0, sizeof(*limits_r));
	ret = store_file_read(user, QUOTA_FILE, &data, &size);
	if (ret == STORE_ERR_NOTFOUND)
		return STORE_OK;
	if (ret < 0)
		return ret;
	quota_limits_parse(user, data, limits_r);
	free(data);
	return STORE_OK;
}

/* quota_usage - bytes and messages in every existing mailbox */
static int quota_usage(struct store_user *user, uint64_t *bytes_r,
		       uint64_t *messages_r)
{
	struct store_list_entry *entries;
	struct store_status status;
	size_t count;
	int ret;

	*bytes_r = *messages_r = 0;
	if ((ret = store_list(user, &entries, &count)) < 0)
		return ret;
	for (size_t i = 0; i < count; i++) {
		if ((entries[i].attrs & STORE_LIST_NONEXISTENT) != 0)
			continue;
		ret = store_mailbox_status(user, entries[i].name, &status);
		if (ret == STORE_ERR_NOTFOUND) {
			/* deleted since the listing: nothing to count */
			ret = STORE_OK;
			continue;
		}
		if (ret < 0)
			break;
		*bytes_r += status.size;
		*messages_r += status.messages;
	}
	store_list_free(entries, count);
	return ret;
}

int store_quota_get(struct store_user *user, struct store_quota *quota_r)
{
	struct quota_limits limits;
	int ret;

	memset(quota_r, 0, sizeof(*quota_r));
	if ((ret = quota_limits_read(user, &limits)) < 0)
		return ret;
	quota_r->storage_limit = limits.storage;
	quota_r->messages_limit = limits.messages;
	return quota_usage(user, &quota_r->storage_used,
			   &quota_r->messages_used);
}

/* quota_exceeds - would used + add go past limit (0 = none)? Written
   without the sum so that it cannot overflow. */
static bool quota_exceeds(uint64_t used, uint64_t add, uint64_t limit)
{
	return limit != 0 && (add > limit || used > limit - add);
}

int store_quota_check(struct store_user *user, uint64_t add_bytes,
		      uint64_t add_messages)
{
	struct quota_limits limits;
	uint64_t bytes, messages;
	int ret;

	if ((ret = quota_limits_read(user, &limits)) < 0)
		return ret;
	if (limits.storage == 0 && limits.messages == 0)
		return STORE_OK;
	if ((ret = quota_usage(user, &bytes, &messages)) < 0)
		return ret;
	if (quota_exceeds(bytes, add_bytes, limits.storage) ||
	    quota_exceeds(messages, add_messages, limits.messages)) {
		return store_set_error(user, STORE_ERR_OVERQUOTA,
				       QUOTA_EXCEEDED_MESSAGE);
	}
	return STORE_OK;
}

/* quota_file_build - the new file: the lines we do not own, kept, then
   our limits */
static char *quota_file_build(const char *old, uint64_t storage_limit,
			      uint64_t messages_limit, size_t *size_r)
{
	struct buffer buf;

	buffer_init(&buf, 0);
	for (const char *line = old, *nl; line != NULL && *line != '\0';
	     line = nl == NULL ? NULL : nl + 1) {
		size_t len;

		nl = strchr(line, '\n');
		len = nl == NULL ? strlen(line) : (size_t)(nl - line);
		if (len == 0 || str_begins_with(line, "storage ") ||
		    str_begins_with(line, "messages "))
			continue;
		buffer_append(&buf, line, len);
		buffer_append_byte(&buf, '\n');
	}
	if (storage_limit != 0)
		buffer_printf(&buf, "storage %llu\n",
			      (unsigned long long)storage_limit);
	if (messages_limit != 0)
		buffer_printf(&buf, "messages %llu\n",
			      (unsigned long long)messages_limit);
	return buffer_export(&buf, size_r);
}

int store_quota_set(struct store_user *user, uint64_t storage_limit,
		    uint64_t messages_limit)
{
	char *old = NULL, *data;
	size_t size;
	int ret;

	if (user->requester != NULL)
		return store_set_error(user, STORE_ERR_NOPERM,
				       "Not allowed for another user's mailboxes");
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
		return ret;
	ret = store_file_read(user, QUOTA_FILE, &old, &size);
	if (ret == STORE_ERR_NOTFOUND) {
		old = NULL;
		ret = STORE_OK;
	}
	if (ret == STORE_OK) {
		data = quota_file_build(old, storage_limit, messages_limit,
					&size);
		ret = store_file_replace(user, QUOTA_FILE, data, size);
		free(data);
	}
	free(old);
	store_user_unlock(user);
	return ret;
}
