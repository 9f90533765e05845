/*
 * subscriptions.c - the user's subscribed mailbox names (IMAP SUBSCRIBE,
 * LSUB, LIST (SUBSCRIBED)).
 *
 * One file, "subscriptions" in the user root, holds one canonical name
 * per line, UTF-8, '/' as separator, sorted - like Dovecot's and
 * Courier's, so the spool stays readable by other tools. Names need not
 * exist (RFC 9051 6.3.7: a server must not refuse to subscribe to a
 * nonexistent mailbox, and deleting a mailbox leaves its subscription),
 * so this file is independent of the mailbox directories.
 *
 * Changes are a read-modify-write of the whole file under the user lock
 * held exclusively, swapped in atomically by store_file_replace(); reads
 * take no lock because they always see a whole file (old or new).
 *
 * Reading is forgiving: lines that are not valid names (a hand edit, a
 * foreign tool) are skipped with a warning, non-canonical spellings are
 * canonicalized and duplicates dropped. The next change rewrites the
 * file clean.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "name.h"
#include "store-private.h"

#define SUBSCRIPTIONS_FILE "subscriptions"

static int subscriptions_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* subscriptions_sort_unique - sort arr and drop duplicates */
static void subscriptions_sort_unique(struct str_array *arr)
{
	size_t out = 0;

	if (arr->count == 0)
		return;
	qsort(arr->items, arr->count, sizeof(*arr->items), subscriptions_cmp);
	for (size_t i = 1; i < arr->count; i++) {
		if (strcmp(arr->items[i], arr->items[out]) == 0)
			free(arr->items[i]);
		else
			arr->items[++out] = arr->items[i];
	}
	arr->count = out + 1;
	arr->items[arr->count] = NULL;
}

static void subscriptions_parse(struct store_user *user, char *data,
				struct str_array *names)
{
	unsigned int bad = 0;
	const char *error;
	char *line, *next, *canonical;

	for (line = data; line != NULL; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (*line == '\0')
			continue;
		if (name_mailbox_canonical(line, &canonical, &error) < 0)
			bad++;
		else
			str_array_add_owned(names, canonical);
	}
	if (bad > 0) {
		log_id_warn(store_user_name(user),
			    "%s: ignored %u invalid line(s)",
			    SUBSCRIPTIONS_FILE, bad);
	}
	subscriptions_sort_unique(names);
}

/* subscriptions_read - into names (initialized); empty when no file */
static int subscriptions_read(struct store_user *user, struct str_array *names)
{
	char *data;
	size_t size;
	int ret;

	ret = store_file_read(user, SUBSCRIPTIONS_FILE, &data, &size);
	if (ret == STORE_ERR_NOTFOUND)
		return STORE_OK;
	if (ret < 0)
		return ret;
	/* store_file_read() NUL-terminates; a NUL inside just ends the
	   data early, which loses nothing a valid file could hold */
	subscriptions_parse(user, data, names);
	free(data);
	return STORE_OK;
}

int store_subscriptions_read(struct store_user *user, char ***names_r,
			     size_t *count_r)
{
	struct str_array names;
	int ret;

	str_array_init(&names);
	if ((ret = subscriptions_read(user, &names)) < 0) {
		str_array_clear(&names);
		return ret;
	}
	/* Always an allocated, NULL-terminated array, even when empty, so
	   that callers can bsearch() or iterate without a special case. */
	if (names.items == NULL)
		*names_r = mem_calloc(1, sizeof(char *));
	else
		*names_r = names.items;
	*count_r = names.count;
	return STORE_OK;
}

void store_names_free(char **names, size_t count)
{
	if (names == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

/* subscriptions_write - replace the file with names (sorted, unique) */
static int subscriptions_write(struct store_user *user,
			       const struct str_array *names)
{
	struct buffer buf;
	char *data;
	size_t size;
	int ret;

	buffer_init(&buf, 0);
	for (size_t i = 0; i < names->count; i++) {
		buffer_append_str(&buf, names->items[i]);
		buffer_append_byte(&buf, '\n');
	}
	data = buffer_export(&buf, &size);
	ret = store_file_replace(user, SUBSCRIPTIONS_FILE, data, size);
	free(data);
	return ret;
}

/* subscriptions_change - the read-modify-write, user lock held */
static int subscriptions_change(struct store_user *user, const char *name,
				bool subscribe)
{
	struct str_array names;
	bool changed = false;
	int ret;

	str_array_init(&names);
	if ((ret = subscriptions_read(user, &names)) < 0)
		return ret;
	if (subscribe && !str_array_contains(&names, name)) {
		str_array_add(&names, name);
		subscriptions_sort_unique(&names);
		changed = true;
	} else if (!subscribe) {
		for (size_t i = 0; i < names.count; i++) {
			if (strcmp(names.items[i], name) != 0)
				continue;
			free(names.items[i]);
			memmove(names.items + i, names.items + i + 1,
				(names.count - i) * sizeof(*names.items));
			names.count--;
			changed = true;
			break;
		}
	}
	/* Unsubscribing a name that is not subscribed is not an error:
	   the end state is what the client asked for. */
	if (changed)
		ret = subscriptions_write(user, &names);
	str_array_clear(&names);
	return ret;
}

int store_subscribe(struct store_user *user, const char *name, bool subscribe)
{
	const char *error;
	char *canonical;
	int ret;

	if (user->requester != NULL)
		return store_set_error(user, STORE_ERR_NOPERM,
				       "Not allowed for another user's mailboxes");
	if (name_mailbox_canonical(name, &canonical, &error) < 0) {
		return store_set_error(user, STORE_ERR_BADNAME,
				       "Invalid mailbox name: %s", error);
	}
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) == STORE_OK) {
		ret = subscriptions_change(user, canonical, subscribe);
		store_user_unlock(user);
	}
	free(canonical);
	return ret;
}
