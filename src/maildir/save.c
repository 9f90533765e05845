/*
 * save.c - saving messages: delivery (LDA, LMTP) and APPEND.
 *
 * The message is written once, into the saving user's tmp/, with line
 * ends converted to LF (Maildir's convention; RFC822.SIZE, the CRLF size,
 * is counted on the way and goes into the file name as ",W=", next to the
 * LF size ",S=", as Dovecot does). store_save_finish() fsyncs it. Each
 * delivery then hard-links it into a target mailbox:
 *
 *   deliver  link tmp/X -> <mailbox>/new/Y, fsync new/. No mailbox lock:
 *            new/ is the lock-free inbox of Maildir, and the next sync
 *            (under EX) gives the file its UID. After the fsync the
 *            message is durable and may be acknowledged (invariant 1).
 *   append   under the mailbox EX lock: link into new/, fsync new/, log
 *            the UID (fdatasync), move to cur/. APPENDUID is known
 *            before the lock is released.
 *
 * A crash leaves at most a file in tmp/ (removed after the grace period
 * by the next EX sync of that mailbox) or a file in new/ that was not
 * acknowledged (it is delivered; a client that retries sees it twice,
 * never zero times).
 */
#include "lib/lib.h"
#include "acl.h"
#include "mailbox-private.h"
#include "name.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

struct store_save {
	struct store_user *user;
	int fd;
	char tmp_path[PATH_MAX];	/* relative to the user root */
	char unique[STORE_UNIQUE_MAX];
	uint64_t size;			/* bytes written (LF) */
	uint64_t lf_count;		/* each LF is CRLF on the wire */
	bool pending_cr;
	bool finished;
	bool failed;
};

struct store_save *store_save_begin(struct store_user *user, int *result_r)
{
	struct store_save *save = mem_zalloc(sizeof(*save));

	save->user = user;
	store_unique_name(user->store, save->unique);
	snprintf(save->tmp_path, sizeof(save->tmp_path), "tmp/%s", save->unique);
	save->fd = sio_openat(user->sio, user->root_fd, save->tmp_path,
			      O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (save->fd < 0) {
		*result_r = store_io_error(user, "create", save->tmp_path, save->fd);
		free(save);
		return NULL;
	}
	*result_r = STORE_OK;
	return save;
}

static int save_out(struct store_save *save, const uint8_t *data, size_t len)
{
	ssize_t n;

	if (len == 0)
		return STORE_OK;
	n = sio_pwrite(save->user->sio, save->fd, data, len, save->size);
	if (n < 0) {
		save->failed = true;
		return store_io_error(save->user, "write", save->tmp_path, (int)n);
	}
	save->size += len;
	return STORE_OK;
}

int store_save_write(struct store_save *save, const void *data, size_t size)
{
	const uint8_t *in = data;
	uint8_t out[65536];
	size_t o = 0;
	int ret;

	if (save->failed || save->finished)
		return store_set_error(save->user, STORE_ERR_TEMP,
				       "Internal error occurred; refer to server log");
	for (size_t i = 0; i < size; i++) {
		uint8_t c = in[i];

		if (save->pending_cr) {
			save->pending_cr = false;
			if (c != '\n')
				out[o++] = '\r';	/* a bare CR stays */
		}
		if (c == '\r') {
			save->pending_cr = true;
			continue;
		}
		if (c == '\n')
			save->lf_count++;
		out[o++] = c;
		if (o >= sizeof(out) - 2) {
			if ((ret = save_out(save, out, o)) < 0)
				return ret;
			o = 0;
		}
	}
	return save_out(save, out, o);
}

int store_save_finish(struct store_save *save)
{
	int ret;

	if (save->pending_cr) {
		save->pending_cr = false;
		if ((ret = save_out(save, (const uint8_t *)"\r", 1)) < 0)
			return ret;
	}
	if (save->failed)
		return STORE_ERR_TEMP;
	if ((ret = sio_fsync(save->user->sio, save->fd, false)) < 0) {
		save->failed = true;
		return store_io_error(save->user, "fsync", save->tmp_path, ret);
	}
	save->finished = true;
	return STORE_OK;
}

uint64_t store_save_vsize(const struct store_save *save)
{
	return save->size + save->lf_count;
}

static void save_new_base(struct store_save *save, char *buf, size_t size)
{
	char unique[STORE_UNIQUE_MAX];

	/* Every copy gets its own unique name: two deliveries of one
	   message into one mailbox are two messages. */
	store_unique_name(save->user->store, unique);
	snprintf(buf, size, "%s,S=%llu,W=%llu", unique,
		 (unsigned long long)save->size,
		 (unsigned long long)store_save_vsize(save));
}

/* Put a copy of the saved file at dest (relative to dest_fd): a hard
   link, or a copy where the filesystem refuses links. */
static int save_link(struct store_save *save, int dest_fd, const char *dest)
{
	struct sio *sio = save->user->sio;
	uint8_t buf[65536];
	uint64_t off = 0;
	ssize_t n;
	int ret, src, fd;

	ret = sio_linkat(sio, save->user->root_fd, save->tmp_path, dest_fd, dest);
	if (ret != -EXDEV && ret != -EPERM && ret != -EMLINK && ret != -ENOTSUP)
		return ret;
	src = sio_openat(sio, save->user->root_fd, save->tmp_path, O_RDONLY, 0);
	if (src < 0)
		return src;
	fd = sio_openat(sio, dest_fd, dest, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		(void)sio_close(sio, src);
		return fd;
	}
	while ((n = sio_pread(sio, src, buf, sizeof(buf), off)) > 0) {
		ssize_t w = sio_pwrite(sio, fd, buf, (size_t)n, off);

		if (w < 0) {
			n = w;
			break;
		}
		off += (uint64_t)n;
	}
	ret = n < 0 ? (int)n : sio_fsync(sio, fd, false);
	(void)sio_close(sio, src);
	(void)sio_close(sio, fd);
	if (ret < 0)
		(void)sio_unlinkat(sio, dest_fd, dest, 0);
	return ret;
}

static bool opts_have_keywords(const struct store_save_options *opts)
{
	return opts != NULL && opts->keywords != NULL && opts->keywords[0] != NULL;
}

/* save_new_dir_exists - does the target mailbox directory have new/?
   (An error other than "not there" counts as yes: the link reports it.) */
static bool save_new_dir_exists(struct store_user *target, const char *dir)
{
	char path[PATH_MAX];
	struct stat st;
	int ret;

	snprintf(path, sizeof(path), "%s/new", dir);
	ret = sio_fstatat(target->sio, target->root_fd, path, &st, 0);
	if (ret == -ENOENT || ret == -ENOTDIR)
		return false;
	return ret < 0 || S_ISDIR(st.st_mode);
}

int store_save_deliver(struct store_save *save, struct store_user *target,
		       const char *mailbox,
		       const struct store_save_options *opts)
{
	char *canonical, *dir, base[STORE_UNIQUE_MAX + 64], path[2 * PATH_MAX];
	char fname[PATH_MAX];
	uint32_t flags = opts != NULL ? opts->flags & MAIL_FLAGS_MASK : 0;
	int ret;

	if (!save->finished)
		return store_set_error(target, STORE_ERR_TEMP,
				       "Message was not saved completely");
	if (mailbox == NULL)
		mailbox = "INBOX";
	if ((ret = store_mailbox_dir(target, mailbox, &canonical, &dir)) < 0)
		return ret;
	if ((ret = store_quota_check(target, store_save_vsize(save), 1)) < 0)
		goto out;
	if (opts_have_keywords(opts)) {
		/* Keywords live only in our index: this needs the lock. */
		struct mailbox *box;
		uint32_t uid, uidvalidity;

		if ((ret = mailbox_open_raw(target, mailbox, 0, &box)) < 0)
			goto out;
		ret = store_save_append(save, box, opts, &uid, &uidvalidity);
		mailbox_close(&box);
		goto out;
	}
	if (opts != NULL && opts->internaldate != 0) {
		struct timespec ts[2] = {
			{ .tv_sec = opts->internaldate },
			{ .tv_sec = opts->internaldate },
		};

		/* INTERNALDATE of a file in new/ is its mtime. */
		(void)futimens(save->fd, ts);
	}
	save_new_base(save, base, sizeof(base));
	if (flags != 0)
		mailbox_file_name(base, flags, fname, sizeof(fname));
	else
		snprintf(fname, sizeof(fname), "%s", base);
	/* ENOENT from the link can mean either side: ask the target
	   first, and again after a failure (deleted meanwhile?). */
	if (!save_new_dir_exists(target, dir)) {
		ret = store_set_error(target, STORE_ERR_NOTFOUND,
				      "Mailbox doesn't exist: %s", mailbox);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/new/%s", dir, fname);
	ret = save_link(save, target->root_fd, path);
	if (ret == -ENOENT && !save_new_dir_exists(target, dir)) {
		ret = store_set_error(target, STORE_ERR_NOTFOUND,
				      "Mailbox doesn't exist: %s", mailbox);
		goto out;
	}
	if (ret < 0) {
		ret = store_io_error(target, "link", path, ret);
		goto out;
	}
	snprintf(path, sizeof(path), "%s/new", dir);
	if ((ret = sio_fsync_dir(target->sio, target->root_fd, path)) < 0) {
		/* Not durable, so not delivered: take it back. */
		int err = ret;

		snprintf(path, sizeof(path), "%s/new/%s", dir, fname);
		(void)sio_unlinkat(target->sio, target->root_fd, path, 0);
		ret = store_io_error(target, "fsync", path, err);
		goto out;
	}
	ret = STORE_OK;
	store_notify_changed(target, canonical);
out:
	free(canonical);
	free(dir);
	return ret;
}

int store_save_append(struct store_save *save, struct mailbox *box,
		      const struct store_save_options *opts,
		      uint32_t *uid_r, uint32_t *uidvalidity_r)
{
	struct store_user *user = box->user;
	struct mailbox_new_file file;
	char base[STORE_UNIQUE_MAX + 64], path[PATH_MAX];
	int ret;

	if (!save->finished)
		return store_set_error(user, STORE_ERR_TEMP,
				       "Message was not saved completely");
	/* Shared mailbox: "i", and flags as far as the rights go (RFC
	   4314 4, as for STORE). */
	if ((ret = mailbox_rights_refresh(box)) < 0)
		return ret;
	if ((box->rights & ACL_RIGHT_INSERT) == 0)
		return store_rights_refuse(user, box->name, box->rights);
	if ((ret = store_quota_check(user, store_save_vsize(save), 1)) < 0)
		return ret;
	save_new_base(save, base, sizeof(base));
	memset(&file, 0, sizeof(file));
	file.base = base;
	file.flags = opts != NULL ? opts->flags & MAIL_FLAGS_MASK &
		mailbox_rights_flags(box->rights) : 0;
	file.size = save->size;
	file.vsize = store_save_vsize(save);
	file.internaldate = opts != NULL ? opts->internaldate : 0;

	if ((ret = mailbox_lock(box, LOCK_MODE_EX)) < 0)
		return ret;
	if (opts != NULL && (box->rights & ACL_RIGHT_WRITE) != 0 &&
	    (ret = mailbox_keywords_resolve(box, opts->keywords,
					    &file.keywords)) < 0)
		goto out;
	/* Under EX no sync anywhere can see the file in new/ before its
	   UID is logged. */
	snprintf(path, sizeof(path), "new/%s", base);
	ret = save_link(save, box->dir_fd, path);
	if (ret < 0) {
		ret = store_io_error(user, "link", path, ret);
		goto out;
	}
	if ((ret = sio_fsync_dir(user->sio, box->dir_fd, "new")) < 0) {
		ret = store_io_error(user, "fsync", "new", ret);
		(void)sio_unlinkat(user->sio, box->dir_fd, path, 0);
		goto out;
	}
	ret = mailbox_add_files(box, &file, 1);
	if (ret < 0) {
		(void)sio_unlinkat(user->sio, box->dir_fd, path, 0);
		goto out;
	}
	*uid_r = file.uid;
	*uidvalidity_r = box->uidvalidity;
out:
	mailbox_unlock(box);
	return ret;
}

void store_save_free(struct store_save **_save)
{
	struct store_save *save = *_save;

	if (save == NULL)
		return;
	*_save = NULL;
	(void)sio_close(save->user->sio, save->fd);
	(void)sio_unlinkat(save->user->sio, save->user->root_fd,
			   save->tmp_path, 0);
	free(save);
}
