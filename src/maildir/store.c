/*
 * store.c - the store, users, and mailbox management (list, create,
 * delete, rename, status).
 *
 * Why each lock is taken here (DESIGN invariants 2 and 7):
 *   user lock EX   creating the user's spool, creating, deleting and
 *                  renaming mailboxes, and allocating UIDVALIDITY values:
 *                  these change the set of directories under the root, so
 *                  two nodes doing them at once could create a name twice
 *                  or hand out one UIDVALIDITY twice.
 *   user lock PR   listing: a listing never sees half of a rename of a
 *                  folder with children (each child is one rename).
 *   mailbox EX     inside delete and rename, taken after the user lock
 *                  (the only order allowed): a session on another node
 *                  writing the mailbox finishes first, and every later
 *                  writer re-checks, once it holds the mailbox lock, that
 *                  the directory it opened is still the one under that
 *                  name (mailbox.c: mailbox_lock()).
 *
 * What a crash leaves behind:
 *   create    a directory without metadata files: opened as a mailbox, it
 *             is rebuilt from the (empty) Maildir with a log line.
 *   delete    the directory is first renamed into clustermail-trash/ (one
 *             atomic step: the mailbox is gone), then removed; a crash in
 *             between leaves a trash entry, emptied by the next delete or
 *             by `clustermailctl index rebuild`.
 *   rename    each folder directory is renamed with one rename(2); a crash
 *             in the middle of a rename with children leaves some children
 *             under the old parent name. Nothing is lost, and both names
 *             list; renaming again completes it.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/str.h"
#include "acl.h"
#include "store-private.h"
#include "mailbox-private.h"
#include "name.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/random.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#define STORE_FILE_MAX (1024 * 1024)
#define STORE_TRASH_DIR "clustermail-trash"
#define STORE_UIDVALIDITY_FILE "clustermail.uidvalidity"

const char *store_result_name(enum store_result r)
{
	switch (r) {
	case STORE_OK: return "ok";
	case STORE_ERR_NOTFOUND: return "notfound";
	case STORE_ERR_EXISTS: return "exists";
	case STORE_ERR_BADNAME: return "badname";
	case STORE_ERR_OVERQUOTA: return "overquota";
	case STORE_ERR_LIMIT: return "limit";
	case STORE_ERR_TEMP: return "temporary";
	case STORE_ERR_NOPERM: return "noperm";
	case STORE_ERR_CANNOT: return "cannot";
	case STORE_ERR_CORRUPT: return "corrupt";
	}
	return "unknown";
}

/* ---- store ------------------------------------------------------------ */

/* store_path_is_nfs - is path on NFS (whose attribute cache a plain
   stat may answer from)? */
static bool store_path_is_nfs(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && sfs.f_type == 0x6969;
}

/* store_new_slot - the table slot of new/'s (device, inode) */
static struct store_new_seen *store_new_slot(struct store *store,
					     const struct stat *st)
{
	uint64_t h = ((uint64_t)st->st_dev * 0x9E3779B97F4A7C15ull) ^
		(uint64_t)st->st_ino;

	return &store->new_seen[(h * 0x9E3779B97F4A7C15ull >> 32) %
				STORE_NEW_SEEN_SLOTS];
}

/* store_new_seen_empty - listed empty with exactly this mtime? */
bool store_new_seen_empty(struct store *store, const struct stat *st)
{
	struct store_new_seen *slot;
	bool same;

	pthread_mutex_lock(&store->new_seen_lock);
	slot = store_new_slot(store, st);
	same = slot->ino == st->st_ino && slot->dev == st->st_dev &&
		slot->mtime.tv_sec == st->st_mtim.tv_sec &&
		slot->mtime.tv_nsec == st->st_mtim.tv_nsec;
	pthread_mutex_unlock(&store->new_seen_lock);
	return same;
}

/* store_new_note_empty - remember new/ as listed empty */
void store_new_note_empty(struct store *store, const struct stat *st)
{
	struct store_new_seen *slot;

	pthread_mutex_lock(&store->new_seen_lock);
	slot = store_new_slot(store, st);
	slot->dev = st->st_dev;
	slot->ino = st->st_ino;
	slot->mtime = st->st_mtim;
	pthread_mutex_unlock(&store->new_seen_lock);
}

struct store *store_create(const struct store_settings *set)
{
	struct store *store = mem_zalloc(sizeof(*store));
	const char *p;
	size_t n = 0;

	store->spool_dir = mem_strdup(set->spool_dir);
	/* The node name goes into file names: keep it to a safe alphabet
	   (Maildir reserves '/' and ':'). */
	store->node_name = mem_zalloc(strlen(set->node_name) + 1);
	for (p = set->node_name; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		store->node_name[n++] = (c >= 0x21 && c < 0x7f && c != '/' &&
					 c != ':' && c != ',' && c != '.') ?
			(char)c : '_';
	}
	if (n == 0)
		store->node_name[n++] = '_';
	store->locks = set->locks;
	store->lock_timeout_msecs = set->lock_timeout_msecs != 0 ?
		set->lock_timeout_msecs : 30000;
	store->lock_cache_hold_msecs = set->lock_cache_hold_msecs;
	store->tmp_grace_secs = set->tmp_grace_secs != 0 ?
		set->tmp_grace_secs : 36 * 3600;
	store->log_compact_bytes = set->log_compact_bytes != 0 ?
		set->log_compact_bytes : 256 * 1024;
	store->changed = set->changed;
	store->changed_context = set->changed_context;
	store->expunge_history_max = set->expunge_history_max != 0 ?
		set->expunge_history_max : MAILBOX_EXPUNGE_HISTORY_MAX;
	store->spool_fd = -1;
	store->spool_nfs = store_path_is_nfs(store->spool_dir);
	store->log_writer_mark = set->log_writer_mark || store->spool_nfs;
	pthread_mutex_init(&store->new_seen_lock, NULL);
	return store;
}

void store_destroy(struct store **_store)
{
	struct store *store = *_store;

	if (store == NULL)
		return;
	*_store = NULL;
	pthread_mutex_destroy(&store->new_seen_lock);
	free(store->spool_dir);
	free(store->node_name);
	free(store);
}

void store_unique_name(struct store *store, char name_r[STORE_UNIQUE_MAX])
{
	static unsigned int counter;
	struct timeval tv;

	/* time, node, pid and a counter: unique across the cluster as long
	   as node names are (the standard Maildir recipe plus the node). */
	gettimeofday(&tv, NULL);
	snprintf(name_r, STORE_UNIQUE_MAX, "%lld.M%06ldP%dQ%u.%s",
		 (long long)tv.tv_sec, (long)tv.tv_usec, (int)getpid(),
		 __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED),
		 store->node_name);
}

/* ---- errors ----------------------------------------------------------- */

int store_set_error(struct store_user *user, int result, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(user->error, sizeof(user->error), fmt, args);
	va_end(args);
	log_debug("store %s: %s", user->name, user->error);
	if (user->error_sink != NULL)
		memcpy(user->error_sink->error, user->error, sizeof(user->error));
	return result;
}

int store_io_error(struct store_user *user, const char *op, const char *path,
		   int err)
{
	if (err == -ENOSPC || err == -EDQUOT) {
		log_error("store %s: %s %s: %s", user->name, op, path,
			  strerror(-err));
		return store_set_error(user, STORE_ERR_TEMP,
				       "Not enough disk space");
	}
	log_error("store %s: %s %s/%s: %s", user->name, op, user->path, path,
		  strerror(-err));
	return store_set_error(user, STORE_ERR_TEMP,
			       "Internal error occurred; refer to server log");
}

/* ---- users ------------------------------------------------------------ */

static int store_user_mkdirs(struct store_user *user)
{
	struct sio *sio = user->sio;
	char *domain = mem_strdup(user->rel_path);
	char *slash = strchr(domain, '/');
	int ret;

	*slash = '\0';
	ret = sio_mkdirat(sio, user->store->spool_fd, domain, 0700);
	if (ret < 0 && ret != -EEXIST) {
		free(domain);
		return store_io_error(user, "mkdir", user->rel_path, ret);
	}
	if (ret == 0)
		(void)sio_fsync_dir(sio, user->store->spool_fd, ".");
	ret = sio_mkdirat(sio, user->store->spool_fd, user->rel_path, 0700);
	if (ret < 0 && ret != -EEXIST) {
		free(domain);
		return store_io_error(user, "mkdir", user->rel_path, ret);
	}
	if (ret == 0)
		(void)sio_fsync_dir(sio, user->store->spool_fd, domain);
	free(domain);
	return STORE_OK;
}

/* ---- mailbox attributes ---------------------------------------------------
 * clustermail.mailbox holds one "key value" line per attribute:
 * "special-use N" (STORE_SPECIAL_* bits) and "mailbox-id ID" (RFC 8474
 * MAILBOXID). A rewrite keeps lines it does not know. Written only
 * under the user lock EX (create, or the first store_mailbox_id() of an
 * older mailbox), always by atomic replace.
 */

/* attr_find - the value of key's line in data (up to the line end) */
static bool attr_find(const char *data, const char *key, const char **value_r,
		      size_t *len_r)
{
	size_t key_len = strlen(key);

	for (const char *line = data; *line != '\0'; ) {
		size_t len = strcspn(line, "\n");

		if (len > key_len && strncmp(line, key, key_len) == 0 &&
		    line[key_len] == ' ') {
			*value_r = line + key_len + 1;
			*len_r = len - key_len - 1;
			return true;
		}
		line += len;
		if (*line == '\n')
			line++;
	}
	return false;
}

/* mailbox_id_valid - "F" and 32 lower-case hex digits */
static bool mailbox_id_valid(const char *value, size_t len)
{
	if (len != STORE_MAILBOX_ID_SIZE - 1 || value[0] != 'F')
		return false;
	for (size_t i = 1; i < len; i++) {
		if (strchr("0123456789abcdef", value[i]) == NULL)
			return false;
	}
	return true;
}

/* mailbox_id_generate - a new MAILBOXID from 128 random bits */
static int mailbox_id_generate(struct store_user *user,
			       char id_r[STORE_MAILBOX_ID_SIZE])
{
	unsigned char bytes[16];

	if (getrandom(bytes, sizeof(bytes), 0) != (ssize_t)sizeof(bytes)) {
		log_error("store %s: getrandom: %s", user->name, strerror(errno));
		return store_set_error(user, STORE_ERR_TEMP,
				       "Internal error occurred; refer to server log");
	}
	id_r[0] = 'F';
	for (size_t i = 0; i < sizeof(bytes); i++)
		snprintf(id_r + 1 + 2 * i, 3, "%02x", bytes[i]);
	return STORE_OK;
}

/* store_mailbox_attrs_create - the attribute file of a new mailbox */
static int store_mailbox_attrs_create(struct store_user *user, const char *dir,
				      unsigned int special_use)
{
	char path[PATH_MAX], id[STORE_MAILBOX_ID_SIZE], data[128];
	int ret, len = 0;

	if ((ret = mailbox_id_generate(user, id)) < 0)
		return ret;
	if (special_use != 0)
		len = snprintf(data, sizeof(data), "special-use %u\n",
			       special_use & STORE_SPECIAL_MASK);
	len += snprintf(data + len, sizeof(data) - (size_t)len,
			"mailbox-id %s\n", id);
	snprintf(path, sizeof(path), "%s/%s", dir, MAILBOX_ATTR_FILE);
	return store_file_replace(user, path, data, (size_t)len);
}

/* store_mailbox_id_read - the id in dir's attribute file; NOTFOUND when
   the file or a valid id is missing (a damaged one is logged) */
static int store_mailbox_id_read(struct store_user *user, const char *dir,
				 char id_r[STORE_MAILBOX_ID_SIZE])
{
	char path[PATH_MAX], *data;
	const char *value;
	size_t size, len;
	int ret;

	snprintf(path, sizeof(path), "%s/%s", dir, MAILBOX_ATTR_FILE);
	if ((ret = store_file_read(user, path, &data, &size)) < 0)
		return ret;
	ret = STORE_ERR_NOTFOUND;
	if (attr_find(data, "mailbox-id", &value, &len)) {
		if (mailbox_id_valid(value, len)) {
			memcpy(id_r, value, len);
			id_r[len] = '\0';
			ret = STORE_OK;
		} else {
			log_warn("store %s: %s: damaged mailbox-id, "
				 "replacing it", user->name, path);
		}
	}
	free(data);
	return ret;
}

/* store_mailbox_id_add - give an older mailbox (or one whose id was
   damaged) its id: the attribute file with its other lines kept and a
   new mailbox-id line. User lock EX held, the id checked missing under
   it. */
static int store_mailbox_id_add(struct store_user *user, const char *dir,
				char id_r[STORE_MAILBOX_ID_SIZE])
{
	char path[PATH_MAX], *data = NULL;
	struct buffer buf;
	size_t size = 0;
	int ret;

	snprintf(path, sizeof(path), "%s/%s", dir, MAILBOX_ATTR_FILE);
	ret = store_file_read(user, path, &data, &size);
	if (ret < 0 && ret != STORE_ERR_NOTFOUND)
		return ret;
	if ((ret = mailbox_id_generate(user, id_r)) < 0) {
		free(data);
		return ret;
	}
	buffer_init(&buf, 0);
	for (const char *line = data; line != NULL && *line != '\0'; ) {
		size_t len = strcspn(line, "\n");

		if (strncmp(line, "mailbox-id ", 11) != 0) {
			buffer_append(&buf, line, len);
			buffer_append_str(&buf, "\n");
		}
		line += len;
		if (*line == '\n')
			line++;
	}
	buffer_printf(&buf, "mailbox-id %s\n", id_r);
	ret = store_file_replace(user, path, buf.data, buf.used);
	if (ret == STORE_OK)
		log_info("store %s: mailbox %s got MAILBOXID %s", user->name,
			 dir, id_r);
	buffer_clear(&buf);
	free(data);
	return ret;
}

static int store_remove_tree(struct store_user *user, int parent_fd,
			     const char *path);

/* Fill dir with a Maildir: cur/ new/ tmp/, the folder marker, the
   attributes, a new UIDVALIDITY and our metadata. */
static int store_maildir_fill(struct store_user *user, const char *dir,
			      bool inbox, unsigned int special_use)
{
	static const char *const subdirs[] = { "cur", "new", "tmp" };
	struct sio *sio = user->sio;
	uint32_t uidvalidity;
	char path[PATH_MAX];
	int ret, fd;

	for (size_t i = 0; i < N_ELEMENTS(subdirs); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
		ret = sio_mkdirat(sio, user->root_fd, path, 0700);
		if (ret < 0 && ret != -EEXIST)
			return store_io_error(user, "mkdir", path, ret);
	}
	if (!inbox) {
		/* Maildir++ marks folders with an empty maildirfolder file. */
		snprintf(path, sizeof(path), "%s/maildirfolder", dir);
		fd = sio_openat(sio, user->root_fd, path,
				O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			(void)sio_close(sio, fd);
	}
	if ((ret = store_mailbox_attrs_create(user, dir, special_use)) < 0)
		return ret;
	if ((ret = store_next_uidvalidity(user, &uidvalidity)) < 0)
		return ret;
	if ((ret = mailbox_metadata_init(user, dir, uidvalidity)) < 0)
		return ret;
	if ((ret = sio_fsync_dir(sio, user->root_fd, dir)) < 0)
		return store_io_error(user, "fsync", dir, ret);
	return STORE_OK;
}

/* Create a Maildir (cur/ new/ tmp/ and our metadata) in dir, which must
   not exist yet. Caller holds the user lock EX.

   A folder is built complete under the trash directory and then renamed
   into place, so that no node ever sees it half made: other nodes open
   folders without the user lock, and one that found the folder before
   its metadata would take it for a damaged one and rebuild it; the
   creator's metadata written after that would drop what the other node
   recorded meanwhile. A creation cut short leaves its work in the trash,
   which the next delete empties. INBOX (the user's own directory) is
   filled in place: its index, written last, says that it is complete,
   and store_user_open() checks that under the user lock. */
static int store_maildir_create(struct store_user *user, const char *dir,
				unsigned int special_use)
{
	struct sio *sio = user->sio;
	char unique[STORE_UNIQUE_MAX], build[PATH_MAX];
	int ret;

	if (strcmp(dir, ".") == 0)
		return store_maildir_fill(user, dir, true, 0);

	ret = sio_mkdirat(sio, user->root_fd, STORE_TRASH_DIR, 0700);
	if (ret < 0 && ret != -EEXIST)
		return store_io_error(user, "mkdir", STORE_TRASH_DIR, ret);
	store_unique_name(user->store, unique);
	snprintf(build, sizeof(build), "%s/new-%s", STORE_TRASH_DIR, unique);
	ret = sio_mkdirat(sio, user->root_fd, build, 0700);
	if (ret < 0)
		return store_io_error(user, "mkdir", build, ret);
	if ((ret = store_maildir_fill(user, build, false, special_use)) < 0) {
		(void)store_remove_tree(user, user->root_fd, build);
		return ret;
	}
	/* The caller found dir missing under the user lock, which every
	   create, delete and rename holds. */
	ret = sio_renameat(sio, user->root_fd, build, user->root_fd, dir, 0);
	if (ret < 0) {
		(void)store_remove_tree(user, user->root_fd, build);
		if (ret == -EEXIST || ret == -ENOTEMPTY)
			return store_set_error(user, STORE_ERR_EXISTS,
					       "Mailbox already exists");
		return store_io_error(user, "rename", dir, ret);
	}
	/* The folder exists once its directory entry is durable. */
	if ((ret = sio_fsync_dir(sio, user->root_fd, ".")) < 0)
		return store_io_error(user, "fsync", ".", ret);
	return STORE_OK;
}

int store_user_open(struct store *store, struct sio *sio, const char *name,
		    unsigned int flags, struct store_user **user_r,
		    const char **error_r)
{
	struct store_user *user;
	char *rel_path, *canonical, lock_name[LOCK_NAME_MAX + 1];
	const char *error;
	int fd, ret;

	*user_r = NULL;
	if (name_user_path(name, &rel_path, &canonical, &error) < 0) {
		if (error_r != NULL)
			*error_r = error;
		return STORE_ERR_BADNAME;
	}
	if (store->spool_fd < 0) {
		store->spool_fd = open(store->spool_dir,
				       O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (store->spool_fd < 0) {
			log_error("store: open %s: %m", store->spool_dir);
			free(rel_path);
			free(canonical);
			if (error_r != NULL)
				*error_r = "Mail spool is not accessible";
			return STORE_ERR_TEMP;
		}
	}
	user = mem_zalloc(sizeof(*user));
	user->store = store;
	user->sio = sio;
	user->name = canonical;
	user->rel_path = rel_path;
	user->path = mem_printf("%s/%s", store->spool_dir, rel_path);
	user->root_fd = -1;
	lock_name_user(canonical, lock_name);
	user->lock = lock_create(store->locks, lock_name, LOCK_CLASS_USER);

	fd = sio_openat(sio, store->spool_fd, rel_path,
			O_RDONLY | O_DIRECTORY, 0);
	if (fd >= 0)
		user->root_fd = fd;
	else if (fd != -ENOENT) {
		ret = store_io_error(user, "open", rel_path, fd);
		goto fail;
	} else if ((flags & STORE_USER_CREATE) == 0) {
		ret = STORE_ERR_NOTFOUND;
		store_set_error(user, ret, "No mail spool for this user");
		goto fail;
	}
	/* Create the spool, or complete one whose creation was cut short:
	   INBOX's metadata is written last, so its presence says "done".
	   Checked again under the lock: another node may be creating it
	   right now. */
	if ((flags & STORE_USER_CREATE) != 0 &&
	    (user->root_fd < 0 || mailbox_metadata_exists(user, ".") < 0)) {
		if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
			goto fail;
		ret = STORE_OK;
		if (user->root_fd < 0) {
			ret = store_user_mkdirs(user);
			if (ret == STORE_OK) {
				fd = sio_openat(sio, store->spool_fd, rel_path,
						O_RDONLY | O_DIRECTORY, 0);
				if (fd >= 0)
					user->root_fd = fd;
				else
					ret = store_io_error(user, "open", rel_path, fd);
			}
		}
		if (ret == STORE_OK && mailbox_metadata_exists(user, ".") < 0) {
			ret = store_maildir_create(user, ".", 0);
			if (ret == STORE_OK)
				log_info("store: created the spool of %s", user->name);
		}
		store_user_unlock(user);
		if (ret < 0)
			goto fail;
	}
	*user_r = user;
	return STORE_OK;
fail:
	if (error_r != NULL) {
		*error_r = ret == STORE_ERR_NOTFOUND ?
			"No mail spool for this user" :
			"Mail spool is not accessible";
	}
	store_user_close(&user);
	return ret;
}

void store_user_close(struct store_user **_user)
{
	struct store_user *user = *_user;

	if (user == NULL)
		return;
	*_user = NULL;
	store_status_cache_clear(user);
	if (user->lock != NULL)
		lock_destroy(&user->lock);
	if (user->root_fd >= 0)
		(void)close(user->root_fd);
	free(user->name);
	free(user->rel_path);
	free(user->path);
	free(user->requester);
	free(user);
}

int store_user_open_shared(struct store_user *requester, const char *owner,
			   struct store_user **owner_r)
{
	struct store_user *user;
	const char *error;
	int ret;

	*owner_r = NULL;
	ret = store_user_open(requester->store, requester->sio, owner, 0,
			      &user, &error);
	if (ret == STORE_ERR_NOTFOUND || ret == STORE_ERR_BADNAME) {
		return store_set_error(requester, STORE_ERR_NOTFOUND,
				       "Mailbox doesn't exist");
	}
	if (ret < 0)
		return store_set_error(requester, ret, "%s", error);
	store_user_set_requester(user, requester->name);
	user->error_sink = requester;
	*owner_r = user;
	return STORE_OK;
}

void store_user_set_requester(struct store_user *user, const char *requester)
{
	MEM_FREE(&user->requester);
	store_status_cache_clear(user);
	if (requester != NULL && strcasecmp(requester, user->name) != 0)
		user->requester = str_lcase(mem_strdup(requester));
}

const char *store_user_requester(const struct store_user *user)
{
	return user->requester;
}

const char *store_user_error(const struct store_user *user)
{
	return user->error[0] != '\0' ? user->error : "Unknown error";
}

const char *store_user_name(const struct store_user *user)
{
	return user->name;
}

const char *store_user_path(const struct store_user *user)
{
	return user->path;
}

struct sio *store_user_sio(const struct store_user *user)
{
	return user->sio;
}

int store_user_lock(struct store_user *user, enum lock_mode mode)
{
	int ret;

	if (user->lock_depth > 0) {
		if (mode == LOCK_MODE_EX &&
		    lock_get_mode(user->lock) != LOCK_MODE_EX)
			log_panic("store: user lock EX requested inside PR");
		user->lock_depth++;
		return STORE_OK;
	}
	ret = sio_lock(user->sio, user->lock, mode, 0,
		       user->store->lock_timeout_msecs);
	if (ret < 0) {
		log_warn("store %s: user lock: %s", user->name, strerror(-ret));
		return store_set_error(user, STORE_ERR_TEMP,
				       "Mailbox list is locked; try again later");
	}
	user->lock_depth = 1;
	return STORE_OK;
}

void store_user_unlock(struct store_user *user)
{
	if (user->lock_depth == 0)
		log_panic("store: user lock released while not held");
	if (--user->lock_depth == 0)
		lock_release(user->lock);
}

int store_next_uidvalidity(struct store_user *user, uint32_t *uidvalidity_r)
{
	char *data = NULL, buf[32];
	size_t size;
	uint64_t last = 0, next;
	int ret, len;

	/* Caller holds the user lock EX. A UIDVALIDITY must never repeat
	   for a name, even after delete + create in the same second. */
	ret = store_file_read(user, STORE_UIDVALIDITY_FILE, &data, &size);
	if (ret == STORE_OK) {
		if (str_to_uint64(str_trim(data), &last) < 0)
			last = 0;
		free(data);
	} else if (ret != STORE_ERR_NOTFOUND) {
		return ret;
	}
	next = (uint64_t)time(NULL);
	if (next <= last)
		next = last + 1;
	if (next > UINT32_MAX)
		next = 1 + (next % UINT32_MAX);
	len = snprintf(buf, sizeof(buf), "%llu\n", (unsigned long long)next);
	if ((ret = store_file_replace(user, STORE_UIDVALIDITY_FILE, buf,
				      (size_t)len)) < 0)
		return ret;
	*uidvalidity_r = (uint32_t)next;
	return STORE_OK;
}

/* ---- names -------------------------------------------------------------- */

int store_name_normalize(const char *name, char **canonical_r)
{
	const char *error;

	return name_mailbox_canonical(name, canonical_r, &error) < 0 ?
		STORE_ERR_BADNAME : STORE_OK;
}

int store_mailbox_dir(struct store_user *user, const char *name,
		      char **canonical_r, char **dir_r)
{
	const char *error;
	char *canonical, *dir;

	if (name_mailbox_canonical(name, &canonical, &error) < 0)
		return store_set_error(user, STORE_ERR_BADNAME,
				       "Invalid mailbox name: %s", error);
	if (name_mailbox_to_dir(canonical, &dir, &error) < 0) {
		free(canonical);
		return store_set_error(user, STORE_ERR_BADNAME,
				       "Invalid mailbox name: %s", error);
	}
	if (canonical_r != NULL)
		*canonical_r = canonical;
	else
		free(canonical);
	*dir_r = dir;
	return STORE_OK;
}

static int store_dir_exists(struct store_user *user, const char *dir)
{
	char path[PATH_MAX];
	struct stat st;
	int ret;

	snprintf(path, sizeof(path), "%s/cur", dir);
	ret = sio_fstatat(user->sio, user->root_fd, path, &st, 0);
	if (ret == -ENOENT || ret == -ENOTDIR)
		return STORE_ERR_NOTFOUND;
	if (ret < 0)
		return store_io_error(user, "stat", path, ret);
	return STORE_OK;
}

int store_mailbox_exists(struct store_user *user, const char *name)
{
	char *dir;
	int ret;

	if ((ret = store_mailbox_dir(user, name, NULL, &dir)) < 0)
		return ret;
	ret = store_dir_exists(user, dir);
	if (ret == STORE_ERR_NOTFOUND)
		store_set_error(user, ret, "Mailbox doesn't exist: %s", name);
	free(dir);
	return ret;
}

/* ---- small files --------------------------------------------------------- */

int store_file_read(struct store_user *user, const char *path,
		    char **data_r, size_t *size_r)
{
	struct stat st;
	char *data;
	ssize_t n;
	int fd, ret;

	fd = sio_openat(user->sio, user->root_fd, path, O_RDONLY, 0);
	if (fd == -ENOENT)
		return STORE_ERR_NOTFOUND;
	if (fd < 0)
		return store_io_error(user, "open", path, fd);
	if ((ret = sio_fstat(user->sio, fd, &st)) < 0) {
		(void)sio_close(user->sio, fd);
		return store_io_error(user, "fstat", path, ret);
	}
	if (st.st_size > STORE_FILE_MAX) {
		(void)sio_close(user->sio, fd);
		log_error("store %s: %s is too large (%lld bytes)", user->name,
			  path, (long long)st.st_size);
		return store_set_error(user, STORE_ERR_TEMP,
				       "Internal error occurred; refer to server log");
	}
	data = mem_zalloc((size_t)st.st_size + 1);
	n = sio_pread(user->sio, fd, data, (size_t)st.st_size, 0);
	(void)sio_close(user->sio, fd);
	if (n < 0) {
		free(data);
		return store_io_error(user, "read", path, (int)n);
	}
	data[n] = '\0';
	*data_r = data;
	*size_r = (size_t)n;
	return STORE_OK;
}

int store_file_replace(struct store_user *user, const char *path,
		       const void *data, size_t size)
{
	char tmp_path[PATH_MAX + STORE_UNIQUE_MAX + 8], unique[STORE_UNIQUE_MAX];
	char dir[PATH_MAX];
	const char *slash;
	ssize_t n;
	int fd, ret;

	store_unique_name(user->store, unique);
	slash = strrchr(path, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	snprintf(tmp_path, sizeof(tmp_path), "%s/.tmp.%s", dir, unique);
	fd = sio_openat(user->sio, user->root_fd, tmp_path,
			O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		return store_io_error(user, "create", tmp_path, fd);
	n = sio_pwrite(user->sio, fd, data, size, 0);
	ret = n < 0 ? (int)n : sio_fsync(user->sio, fd, false);
	(void)sio_close(user->sio, fd);
	if (ret == 0)
		ret = sio_renameat(user->sio, user->root_fd, tmp_path,
				   user->root_fd, path, 0);
	if (ret < 0) {
		(void)sio_unlinkat(user->sio, user->root_fd, tmp_path, 0);
		return store_io_error(user, "write", path, ret);
	}
	if ((ret = sio_fsync_dir(user->sio, user->root_fd, dir)) < 0)
		return store_io_error(user, "fsync", dir, ret);
	return STORE_OK;
}

/* ---- list ------------------------------------------------------------------ */

struct list_ctx {
	struct store_list_entry *entries;
	size_t count, alloc;
};

static struct store_list_entry *list_add(struct list_ctx *ctx,
					 const char *name, unsigned int attrs)
{
	struct store_list_entry *e;

	if (ctx->count == ctx->alloc) {
		ctx->alloc = ctx->alloc == 0 ? 16 : ctx->alloc * 2;
		ctx->entries = mem_realloc(ctx->entries,
					   ctx->alloc * sizeof(*ctx->entries));
	}
	e = &ctx->entries[ctx->count++];
	e->name = mem_strdup(name);
	e->attrs = attrs;
	return e;
}

static int list_dir_cb(const char *name, unsigned char d_type, void *context)
{
	struct list_ctx *ctx = context;
	char *mailbox;

	if (name[0] != '.' || (d_type != DT_DIR && d_type != DT_UNKNOWN))
		return 0;
	if (name_dir_to_mailbox(name, &mailbox) < 0)
		return 0;
	list_add(ctx, mailbox, 0);
	free(mailbox);
	return 0;
}

static int list_cmp(const void *a, const void *b)
{
	const struct store_list_entry *ea = a, *eb = b;
	bool ia = strcmp(ea->name, "INBOX") == 0;
	bool ib = strcmp(eb->name, "INBOX") == 0;

	if (ia != ib)
		return ia ? -1 : 1;
	return strcmp(ea->name, eb->name);
}

/* list_find_in - binary search in the first count (sorted) entries */
static struct store_list_entry *
list_find_in(struct store_list_entry *entries, size_t count, const char *name)
{
	struct store_list_entry key = { .name = (char *)name };

	return bsearch(&key, entries, count, sizeof(key), list_cmp);
}

/* list_sort_unique - sort once, and merge entries of one name: a real
   mailbox (no NONEXISTENT) wins over a mere parent or subscription */
static void list_sort_unique(struct list_ctx *ctx)
{
	size_t n = 0;

	qsort(ctx->entries, ctx->count, sizeof(*ctx->entries), list_cmp);
	for (size_t i = 0; i < ctx->count; i++) {
		struct store_list_entry *e = &ctx->entries[i];

		if (n > 0 && list_cmp(&ctx->entries[n - 1], e) == 0) {
			struct store_list_entry *keep = &ctx->entries[n - 1];
			bool real = (keep->attrs & STORE_LIST_NONEXISTENT) == 0 ||
				(e->attrs & STORE_LIST_NONEXISTENT) == 0;

			keep->attrs |= e->attrs;
			if (real)
				keep->attrs &= ~(unsigned int)STORE_LIST_NONEXISTENT;
			free(e->name);
			continue;
		}
		ctx->entries[n++] = *e;
	}
	ctx->count = n;
}

unsigned int store_mailbox_special_use(struct store_user *user,
				       const char *dir)
{
	char path[PATH_MAX], *data;
	const char *value;
	unsigned int special = 0;
	size_t size, len;

	snprintf(path, sizeof(path), "%s/%s", dir, MAILBOX_ATTR_FILE);
	if (store_file_read(user, path, &data, &size) != STORE_OK)
		return 0;
	if (!attr_find(data, "special-use", &value, &len) ||
	    sscanf(value, "%u", &special) != 1)
		special = 0;
	free(data);
	return special & STORE_SPECIAL_MASK;
}

int store_mailbox_id(struct store_user *user, const char *name,
		     char id_r[STORE_MAILBOX_ID_SIZE])
{
	char *canonical, *dir;
	unsigned int rights;
	int ret;

	if ((ret = store_mailbox_dir(user, name, &canonical, &dir)) < 0)
		return ret;
	if (user->requester != NULL) {
		/* Whoever sees the mailbox may know its id. */
		if ((ret = store_rights_get(user, canonical, &rights)) < 0)
			goto out;
		if ((rights & (ACL_RIGHT_LOOKUP | ACL_RIGHT_READ)) == 0) {
			ret = store_rights_refuse(user, canonical, rights);
			goto out;
		}
	}
	ret = store_mailbox_id_read(user, dir, id_r);
	if (ret != STORE_ERR_NOTFOUND)
		goto out;
	/* Older than MAILBOXID (or not there): look again under the lock
	   that every writer of ids holds. */
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
		goto out;
	if ((ret = store_dir_exists(user, dir)) == STORE_ERR_NOTFOUND) {
		store_set_error(user, ret, "Mailbox doesn't exist: %s",
				canonical);
	} else if (ret == STORE_OK &&
		   (ret = store_mailbox_id_read(user, dir, id_r)) ==
		   STORE_ERR_NOTFOUND) {
		ret = store_mailbox_id_add(user, dir, id_r);
	}
	store_user_unlock(user);
out:
	free(canonical);
	free(dir);
	return ret;
}

/* list_drop_invisible - a requester sees only the mailboxes on which
   it has the lookup right (INBOX included) */
static void list_drop_invisible(struct store_user *user, struct list_ctx *ctx)
{
	for (size_t i = 0; i < ctx->count; ) {
		unsigned int rights;

		if (store_rights_get(user, ctx->entries[i].name, &rights) == 0 &&
		    (rights & ACL_RIGHT_LOOKUP) != 0) {
			i++;
			continue;
		}
		free(ctx->entries[i].name);
		ctx->entries[i] = ctx->entries[--ctx->count];
	}
}

/* list_internal - store_list(); filtered: as the requester sees it */
static int list_internal(struct store_user *user, bool filtered,
			 struct store_list_entry **entries_r, size_t *count_r);

int store_list(struct store_user *user, struct store_list_entry **entries_r,
	       size_t *count_r)
{
	return list_internal(user, user->requester != NULL, entries_r, count_r);
}

static int list_internal(struct store_user *user, bool filtered,
			 struct store_list_entry **entries_r, size_t *count_r)
{
	struct list_ctx ctx = { 0 };
	char **subs = NULL;
	size_t sub_count = 0, real_count;
	int ret;

	if ((ret = store_user_lock(user, LOCK_MODE_PR)) < 0)
		return ret;
	list_add(&ctx, "INBOX", 0);
	ret = sio_readdir(user->sio, user->root_fd, ".", list_dir_cb, &ctx);
	if (ret < 0) {
		store_user_unlock(user);
		store_list_free(ctx.entries, ctx.count);
		return store_io_error(user, "readdir", ".", ret);
	}
	/* Drop directories that are not (or no longer) Maildirs. */
	for (size_t i = 1; i < ctx.count; ) {
		char *dir;

		if (store_mailbox_dir(user, ctx.entries[i].name, NULL, &dir) == 0 &&
		    store_dir_exists(user, dir) == STORE_OK) {
			ctx.entries[i].attrs |= store_mailbox_special_use(user, dir);
			free(dir);
			i++;
			continue;
		}
		free(dir);
		free(ctx.entries[i].name);
		ctx.entries[i] = ctx.entries[--ctx.count];
	}
	if (filtered) {
		/* The owner's subscriptions are the owner's business. */
		list_drop_invisible(user, &ctx);
		ret = STORE_OK;
	} else {
		ret = store_subscriptions_read(user, &subs, &sub_count);
	}
	store_user_unlock(user);
	if (ret < 0 && ret != STORE_ERR_NOTFOUND) {
		store_list_free(ctx.entries, ctx.count);
		return ret;
	}
	qsort(ctx.entries, ctx.count, sizeof(*ctx.entries), list_cmp);

	/* Parents that exist only as a prefix of another name: all added,
	   then one sort, then duplicates merged (a real entry wins). */
	real_count = ctx.count;
	for (size_t i = 0; i < real_count; i++) {
		char *parent = mem_strdup(ctx.entries[i].name), *slash;

		while ((slash = strrchr(parent, '/')) != NULL) {
			*slash = '\0';
			list_add(&ctx, parent, STORE_LIST_NONEXISTENT);
		}
		free(parent);
	}
	list_sort_unique(&ctx);
	/* Subscribed names: mark the listed ones; add the others at the end
	   (pointers into the array die with the next list_add()). */
	real_count = ctx.count;
	for (size_t i = 0; i < sub_count; i++) {
		struct store_list_entry *e = list_find_in(ctx.entries, real_count,
							  subs[i]);

		if (e != NULL)
			e->attrs |= STORE_LIST_SUBSCRIBED;
	}
	for (size_t i = 0; i < sub_count; i++) {
		if (list_find_in(ctx.entries, real_count, subs[i]) == NULL)
			list_add(&ctx, subs[i], STORE_LIST_NONEXISTENT |
				 STORE_LIST_SUBSCRIBED);
	}
	list_sort_unique(&ctx);
	store_names_free(subs, sub_count);
	for (size_t i = 0; i < ctx.count; i++) {
		size_t len = strlen(ctx.entries[i].name);

		if (i + 1 < ctx.count &&
		    strncmp(ctx.entries[i + 1].name, ctx.entries[i].name, len) == 0 &&
		    ctx.entries[i + 1].name[len] == '/')
			ctx.entries[i].attrs |= STORE_LIST_HAS_CHILDREN;
	}
	/* "INBOX/x" sorts after "INBOX" only with the INBOX-first rule;
	   children of INBOX are found by a scan instead. */
	for (size_t i = 1; i < ctx.count && name_is_inbox(ctx.entries[0].name);
	     i++) {
		if (name_is_child("INBOX", ctx.entries[i].name))
			ctx.entries[0].attrs |= STORE_LIST_HAS_CHILDREN;
	}
	*entries_r = ctx.entries;
	*count_r = ctx.count;
	return STORE_OK;
}

void store_list_free(struct store_list_entry *entries, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(entries[i].name);
	free(entries);
}

/* ---- create / delete / rename --------------------------------------------- */

/* store_create_allowed - may the requester create canonical? RFC 4314
   4: "k" on the parent; the nearest existing ancestor counts, and INBOX
   for a top-level name. An existing name answers as for a lookup, so
   that CREATE cannot probe for hidden mailboxes. */
static int store_create_allowed(struct store_user *user, const char *canonical)
{
	unsigned int rights;
	char *parent, *slash;
	int ret;

	if (user->requester == NULL)
		return STORE_OK;
	parent = mem_strdup(canonical);
	for (;;) {
		if ((slash = strrchr(parent, '/')) == NULL) {
			free(parent);
			parent = mem_strdup("INBOX");
			break;
		}
		*slash = '\0';
		if (store_mailbox_exists(user, parent) == STORE_OK)
			break;
	}
	/* The refusal names the mailbox asked for, not its parent. */
	ret = store_rights_get(user, parent, &rights);
	if (ret == STORE_OK && (rights & ACL_RIGHT_CREATE) == 0)
		ret = store_rights_refuse(user, canonical, rights);
	free(parent);
	return ret;
}

int store_mailbox_create(struct store_user *user, const char *name,
			 unsigned int special_use)
{
	char *canonical, *dir;
	int ret;

	if ((ret = store_mailbox_dir(user, name, &canonical, &dir)) < 0)
		return ret;
	if ((ret = store_create_allowed(user, canonical)) < 0)
		goto out;
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
		goto out;
	ret = store_dir_exists(user, dir);
	if (ret == STORE_OK) {
		ret = store_set_error(user, STORE_ERR_EXISTS,
				      "Mailbox already exists");
	} else if (ret == STORE_ERR_NOTFOUND) {
		ret = store_maildir_create(user, dir, special_use);
		if (ret == STORE_OK)
			log_info("store %s: created mailbox %s", user->name,
				 canonical);
	}
	store_user_unlock(user);
out:
	free(canonical);
	free(dir);
	return ret;
}

static int store_remove_tree(struct store_user *user, int parent_fd,
			     const char *path);

struct rm_ctx {
	struct store_user *user;
	int fd;
	int ret;
};

static int rm_cb(const char *name, unsigned char d_type, void *context)
{
	struct rm_ctx *ctx = context;
	int ret;

	ret = sio_unlinkat(ctx->user->sio, ctx->fd, name, 0);
	if (ret == -EISDIR || ret == -EPERM)
		ret = store_remove_tree(ctx->user, ctx->fd, name);
	if (ret < 0 && ret != -ENOENT)
		ctx->ret = ret;
	return 0;
}

static int store_remove_tree(struct store_user *user, int parent_fd,
			     const char *path)
{
	struct rm_ctx ctx = { .user = user, .ret = 0 };
	int ret;

	ctx.fd = sio_openat(user->sio, parent_fd, path,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (ctx.fd < 0)
		return ctx.fd == -ENOENT ? 0 : ctx.fd;
	ret = sio_readdir(user->sio, ctx.fd, ".", rm_cb, &ctx);
	(void)sio_close(user->sio, ctx.fd);
	if (ret < 0)
		return ret;
	if (ctx.ret < 0)
		return ctx.ret;
	ret = sio_unlinkat(user->sio, parent_fd, path, AT_REMOVEDIR);
	return ret == -ENOENT ? 0 : ret;
}

/* Empty the trash left by deletes (ours, or by a crash). */
static void store_trash_empty(struct store_user *user)
{
	int ret = store_remove_tree(user, user->root_fd, STORE_TRASH_DIR);

	if (ret < 0)
		log_warn("store %s: cannot empty %s: %s", user->name,
			 STORE_TRASH_DIR, strerror(-ret));
}

/* Take the mailbox lock of name EX (caller holds the user lock EX). */
static int store_mailbox_lock_ex(struct store_user *user, const char *name,
				 struct lock **lock_r)
{
	char lock_name[LOCK_NAME_MAX + 1];
	struct lock *lock;
	int ret;

	lock_name_mailbox(user->name, name, lock_name);
	lock = lock_create(user->store->locks, lock_name, LOCK_CLASS_MAILBOX);
	ret = sio_lock(user->sio, lock, LOCK_MODE_EX, 0,
		       user->store->lock_timeout_msecs);
	if (ret < 0) {
		lock_destroy(&lock);
		log_warn("store %s: mailbox lock %s: %s", user->name, name,
			 strerror(-ret));
		return store_set_error(user, STORE_ERR_TEMP,
				       "Mailbox is locked; try again later");
	}
	*lock_r = lock;
	return STORE_OK;
}

int store_mailbox_delete(struct store_user *user, const char *name)
{
	char *canonical, *dir, unique[STORE_UNIQUE_MAX], trash[PATH_MAX];
	struct lock *lock = NULL;
	int ret;

	if ((ret = store_mailbox_dir(user, name, &canonical, &dir)) < 0)
		return ret;
	if (name_is_inbox(canonical)) {
		ret = store_set_error(user, STORE_ERR_CANNOT,
				      "INBOX can't be deleted");
		goto out;
	}
	if (user->requester != NULL &&
	    (ret = store_rights_check(user, canonical,
				      ACL_RIGHT_DELETE_MAILBOX, NULL)) < 0)
		goto out;
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
		goto out;
	if ((ret = store_dir_exists(user, dir)) < 0) {
		if (ret == STORE_ERR_NOTFOUND)
			store_set_error(user, ret, "Mailbox doesn't exist: %s",
					canonical);
		goto unlock;
	}
	if ((ret = store_mailbox_lock_ex(user, canonical, &lock)) < 0)
		goto unlock;
	ret = sio_mkdirat(user->sio, user->root_fd, STORE_TRASH_DIR, 0700);
	if (ret < 0 && ret != -EEXIST) {
		ret = store_io_error(user, "mkdir", STORE_TRASH_DIR, ret);
		goto unlock;
	}
	store_unique_name(user->store, unique);
	snprintf(trash, sizeof(trash), "%s/%s", STORE_TRASH_DIR, unique);
	/* One rename makes the mailbox disappear atomically for every node;
	   removing its files can then take as long as it takes. */
	ret = sio_renameat(user->sio, user->root_fd, dir, user->root_fd, trash, 0);
	if (ret < 0) {
		ret = store_io_error(user, "rename", dir, ret);
		goto unlock;
	}
	if ((ret = sio_fsync_dir(user->sio, user->root_fd, ".")) < 0) {
		ret = store_io_error(user, "fsync", ".", ret);
		goto unlock;
	}
	lock_destroy(&lock);
	store_status_cache_clear(user);
	store_trash_empty(user);
	log_info("store %s: deleted mailbox %s", user->name, canonical);
	ret = STORE_OK;
unlock:
	if (lock != NULL)
		lock_destroy(&lock);
	store_user_unlock(user);
out:
	free(canonical);
	free(dir);
	return ret;
}

static int store_rename_one(struct store_user *user, const char *old_name,
			    const char *new_name)
{
	char *old_dir = NULL, *new_dir = NULL;
	struct lock *lock = NULL;
	int ret;

	if ((ret = store_mailbox_dir(user, old_name, NULL, &old_dir)) < 0 ||
	    (ret = store_mailbox_dir(user, new_name, NULL, &new_dir)) < 0)
		goto out;
	if ((ret = store_mailbox_lock_ex(user, old_name, &lock)) < 0)
		goto out;
	ret = sio_renameat(user->sio, user->root_fd, old_dir, user->root_fd,
			   new_dir, RENAME_NOREPLACE);
	if (ret == -EINVAL) {
		/* NFS has no RENAME_NOREPLACE. The user lock, which every
		   create, delete and rename holds, keeps new_dir from
		   appearing between this look and the rename. */
		struct stat st;

		ret = sio_fstatat(user->sio, user->root_fd, new_dir, &st,
				  AT_SYMLINK_NOFOLLOW);
		if (ret == 0)
			ret = -EEXIST;
		else if (ret == -ENOENT)
			ret = sio_renameat(user->sio, user->root_fd, old_dir,
					   user->root_fd, new_dir, 0);
	}
	if (ret == -EEXIST || ret == -ENOTEMPTY)
		ret = store_set_error(user, STORE_ERR_EXISTS,
				      "Mailbox already exists: %s", new_name);
	else if (ret < 0)
		ret = store_io_error(user, "rename", old_dir, ret);
	lock_destroy(&lock);
out:
	free(old_dir);
	free(new_dir);
	return ret;
}

static int store_rename_inbox(struct store_user *user, const char *new_name)
{
	struct mailbox *box;
	uint32_t *uids;
	size_t count;
	int ret;

	/* RFC 9051 6.3.6: renaming INBOX moves its messages to a new
	   mailbox and leaves INBOX empty. */
	if ((ret = store_mailbox_create(user, new_name, 0)) < 0)
		return ret;
	if ((ret = mailbox_open(user, "INBOX", MAILBOX_OPEN_READONLY, &box)) < 0)
		return ret;
	count = mailbox_count(box);
	uids = mem_calloc(count + 1, sizeof(*uids));
	for (size_t i = 0; i < count; i++)
		uids[i] = mailbox_record(box, (uint32_t)i)->uid;
	ret = mailbox_copy(box, uids, count, new_name, true, NULL, NULL,
			   NULL, NULL);
	free(uids);
	mailbox_close(&box);
	return ret;
}

int store_mailbox_rename(struct store_user *user, const char *old_name,
			 const char *new_name)
{
	char *old_c = NULL, *new_c = NULL, *old_dir = NULL, *new_dir = NULL;
	struct store_list_entry *entries = NULL;
	size_t count = 0;
	int ret;

	if ((ret = store_mailbox_dir(user, old_name, &old_c, &old_dir)) < 0 ||
	    (ret = store_mailbox_dir(user, new_name, &new_c, &new_dir)) < 0)
		goto out;
	if (strcmp(old_c, new_c) == 0) {
		ret = store_set_error(user, STORE_ERR_EXISTS,
				      "Mailbox already exists: %s", new_c);
		goto out;
	}
	if (name_is_child(old_c, new_c)) {
		ret = store_set_error(user, STORE_ERR_CANNOT,
				      "Can't rename a mailbox into its own child");
		goto out;
	}
	if (name_is_inbox(new_c)) {
		ret = store_set_error(user, STORE_ERR_EXISTS,
				      "Mailbox already exists: INBOX");
		goto out;
	}
	if (user->requester != NULL &&
	    ((ret = store_rights_check(user, old_c, ACL_RIGHT_DELETE_MAILBOX,
				       NULL)) < 0 ||
	     (ret = store_create_allowed(user, new_c)) < 0))
		goto out;
	if ((ret = store_user_lock(user, LOCK_MODE_EX)) < 0)
		goto out;
	if (name_is_inbox(old_c)) {
		ret = store_rename_inbox(user, new_c);
		store_user_unlock(user);
		goto out;
	}
	if ((ret = store_dir_exists(user, old_dir)) < 0) {
		if (ret == STORE_ERR_NOTFOUND)
			store_set_error(user, ret, "Mailbox doesn't exist: %s",
					old_c);
		goto unlock;
	}
	if ((ret = store_dir_exists(user, new_dir)) != STORE_ERR_NOTFOUND) {
		if (ret == STORE_OK)
			ret = store_set_error(user, STORE_ERR_EXISTS,
					      "Mailbox already exists: %s", new_c);
		goto unlock;
	}
	if ((ret = list_internal(user, false, &entries, &count)) < 0)
		goto unlock;
	/* Children first would leave an orphaned parent on a crash; the
	   parent first leaves children under the old name, which still
	   list and can be renamed again. */
	if ((ret = store_rename_one(user, old_c, new_c)) < 0)
		goto unlock;
	for (size_t i = 0; i < count; i++) {
		char *child_new;

		if ((entries[i].attrs & STORE_LIST_NONEXISTENT) != 0 ||
		    !name_is_child(old_c, entries[i].name))
			continue;
		child_new = mem_printf("%s%s", new_c,
				       entries[i].name + strlen(old_c));
		ret = store_rename_one(user, entries[i].name, child_new);
		free(child_new);
		if (ret < 0)
			goto unlock;
	}
	if ((ret = sio_fsync_dir(user->sio, user->root_fd, ".")) < 0)
		ret = store_io_error(user, "fsync", ".", ret);
	else
		log_info("store %s: renamed mailbox %s to %s", user->name,
			 old_c, new_c);
unlock:
	store_status_cache_clear(user);
	store_user_unlock(user);
out:
	if (entries != NULL)
		store_list_free(entries, count);
	free(old_c);
	free(new_c);
	free(old_dir);
	free(new_dir);
	return ret;
}

/* ---- status ---------------------------------------------------------------- */

/* Views kept open for STATUS and quota: after the first status of a
   mailbox, the next one costs a stamp comparison and a look at new/. */
#define STATUS_CACHE_MAX 8

struct store_status_cache {
	struct mailbox *views[STATUS_CACHE_MAX];
	unsigned int next;
};

void store_status_cache_clear(struct store_user *user)
{
	struct store_status_cache *cache = user->status_cache;

	if (cache == NULL)
		return;
	for (unsigned int i = 0; i < STATUS_CACHE_MAX; i++) {
		if (cache->views[i] != NULL)
			mailbox_close(&cache->views[i]);
	}
	free(cache);
	user->status_cache = NULL;
}

int store_mailbox_status(struct store_user *user, const char *name,
			 struct store_status *status_r)
{
	struct store_status_cache *cache = user->status_cache;
	struct mailbox *box = NULL;
	char *canonical;
	int ret;

	if ((ret = store_name_normalize(name, &canonical)) < 0)
		return store_set_error(user, ret, "Invalid mailbox name");
	if (user->requester != NULL &&
	    (ret = store_rights_check(user, canonical, ACL_RIGHT_READ,
				      NULL)) < 0) {
		free(canonical);
		return ret;
	}
	if (cache == NULL)
		cache = user->status_cache = mem_zalloc(sizeof(*cache));
	for (unsigned int i = 0; i < STATUS_CACHE_MAX; i++) {
		if (cache->views[i] != NULL &&
		    strcmp(mailbox_name(cache->views[i]), canonical) == 0) {
			box = cache->views[i];
			ret = mailbox_sync(box, 0, NULL);
			if (ret < 0) {
				mailbox_close(&cache->views[i]);
				box = NULL;
				if (ret != STORE_ERR_NOTFOUND)
					goto out;
			}
			break;
		}
	}
	if (box == NULL) {
		ret = mailbox_open(user, canonical, MAILBOX_OPEN_READONLY, &box);
		if (ret < 0)
			goto out;
		if (cache->views[cache->next] != NULL)
			mailbox_close(&cache->views[cache->next]);
		cache->views[cache->next] = box;
		cache->next = (cache->next + 1) % STATUS_CACHE_MAX;
	}
	mailbox_get_status(box, status_r);
	ret = STORE_OK;
out:
	free(canonical);
	return ret;
}
