/*
 * check.c - `index check` and `index rebuild`: the metadata against the
 * Maildir (DESIGN invariant 5).
 *
 * check    takes the mailbox lock PR (so no writer is half-way through)
 *          and compares, without changing anything: every record has its
 *          file in cur/ under the flags the index gives it; every file in
 *          cur/ has a record; UIDs increase and are below UIDNEXT; modseqs
 *          are at most HIGHESTMODSEQ; keywords are in the table; no
 *          interrupted operation is waiting to be completed. Files in new/
 *          that are not known are deliveries waiting for a UID, which is
 *          normal, not a problem.
 *
 * rebuild  takes the lock EX and rebuilds the metadata from the files.
 *          Old data that still loads is used for what the file names
 *          cannot tell: UIDs, modseqs, keywords, and flags (the index
 *          wins over a file name). Files of records that were expunged
 *          (an expunge interrupted before its unlinks) are removed, never
 *          resurrected. When no old data is usable, the mailbox gets a new
 *          UIDVALIDITY above every old one we can still see, so that no
 *          client ever pairs an old UID with a new message.
 *          File renames happen before the new metadata is written: a crash
 *          during a rebuild leaves the old (damaged) metadata, and the next
 *          open rebuilds again.
 */
#include "lib/lib.h"
#include "mailbox-private.h"
#include "name.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct dir_file {
	char *name;		/* full file name */
	char *base;		/* without the ":2," part */
	bool in_new;
	bool used;
};

struct dir_list {
	struct dir_file *files;
	size_t count, alloc;
	bool in_new;
};

static int dir_list_cb(const char *name, unsigned char d_type, void *context)
{
	struct dir_list *list = context;
	const char *colon;
	struct dir_file *f;

	if (name[0] == '.')
		return 0;
	if (list->count == list->alloc) {
		list->alloc = list->alloc * 2 + 64;
		list->files = mem_realloc(list->files,
					  list->alloc * sizeof(*list->files));
	}
	f = &list->files[list->count++];
	memset(f, 0, sizeof(*f));
	f->name = mem_strdup(name);
	colon = strstr(name, ":2,");
	f->base = colon == NULL ? mem_strdup(name) :
		mem_strndup(name, (size_t)(colon - name));
	f->in_new = list->in_new;
	return 0;
}

static int dir_file_cmp(const void *a, const void *b)
{
	const struct dir_file *fa = a, *fb = b;

	return strcmp(fa->base, fb->base);
}

static void dir_list_free(struct dir_list *list)
{
	for (size_t i = 0; i < list->count; i++) {
		free(list->files[i].name);
		free(list->files[i].base);
	}
	free(list->files);
	memset(list, 0, sizeof(*list));
}

static int dir_list_read(struct mailbox *box, struct dir_list *list)
{
	int ret;

	memset(list, 0, sizeof(*list));
	ret = sio_readdir(box->user->sio, box->dir_fd, "cur", dir_list_cb, list);
	if (ret == 0) {
		list->in_new = true;
		ret = sio_readdir(box->user->sio, box->dir_fd, "new",
				  dir_list_cb, list);
	}
	if (ret < 0) {
		dir_list_free(list);
		return store_io_error(box->user, "readdir", box->dir, ret);
	}
	if (list->count > 0)
		qsort(list->files, list->count, sizeof(*list->files), dir_file_cmp);
	return STORE_OK;
}

static struct dir_file *dir_list_find(struct dir_list *list, const char *base)
{
	struct dir_file key = { .base = (char *)base };

	if (list->count == 0)
		return NULL;
	return bsearch(&key, list->files, list->count, sizeof(key), dir_file_cmp);
}

/* ---- check -------------------------------------------------------------- */

struct check_ctx {
	const char *mailbox;
	store_report_callback_t *report;
	void *context;
	unsigned int problems;
};

static void ATTR_FORMAT(2, 3)
problem(struct check_ctx *ctx, const char *fmt, ...)
{
	char buf[512];
	va_list args;

	va_start(args, fmt);
	vsnprintf(buf, sizeof(buf), fmt, args);
	va_end(args);
	ctx->problems++;
	if (ctx->report != NULL)
		ctx->report(ctx->mailbox, buf, ctx->context);
}

static int check_mailbox(struct store_user *user, const char *name,
			 struct check_ctx *ctx)
{
	struct mailbox *box;
	struct dir_list list;
	const char *reason = NULL;
	uint32_t prev_uid = 0;
	char fname[PATH_MAX];
	int ret;

	if ((ret = mailbox_open_raw(user, name, MAILBOX_OPEN_READONLY, &box)) < 0)
		return ret;
	ctx->mailbox = box->name;
	ret = sio_lock(user->sio, box->lock, LOCK_MODE_PR, 0,
		       user->store->lock_timeout_msecs);
	if (ret < 0) {
		mailbox_close(&box);
		return store_set_error(user, STORE_ERR_TEMP,
				       "Mailbox is locked; try again later");
	}
	ret = mailbox_load(box, &reason);
	if (ret == STORE_ERR_CORRUPT) {
		problem(ctx, "metadata damaged: %s", reason);
		ret = STORE_OK;
		goto out;
	}
	if (ret < 0)
		goto out;
	if (box->log_offset == UINT64_MAX)
		problem(ctx, "an interrupted compaction was not completed");
	for (size_t i = 0; i < box->pending_count; i++) {
		problem(ctx, "an interrupted %s (log offset %llu) was not completed",
			box->pending[i].type == 2 ? "flag change" : "expunge",
			(unsigned long long)box->pending[i].offset);
	}
	if ((ret = dir_list_read(box, &list)) < 0)
		goto out;
	for (uint32_t i = 0; i < box->count; i++) {
		const struct mail_record *rec = &box->recs[i];
		struct dir_file *f;

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		if (rec->uid <= prev_uid)
			problem(ctx, "UID %u is not above the previous UID %u",
				rec->uid, prev_uid);
		prev_uid = rec->uid;
		if (rec->uid >= box->uidnext)
			problem(ctx, "UID %u is not below UIDNEXT %u", rec->uid,
				box->uidnext);
		if (rec->modseq > box->highestmodseq)
			problem(ctx, "UID %u: modseq %llu above HIGHESTMODSEQ %llu",
				rec->uid, (unsigned long long)rec->modseq,
				(unsigned long long)box->highestmodseq);
		if (box->kw_count < 64 &&
		    (rec->keywords >> box->kw_count) != 0)
			problem(ctx, "UID %u: unknown keyword bits", rec->uid);
		f = dir_list_find(&list, rec->base);
		if (f == NULL) {
			problem(ctx, "UID %u: message file %s is missing",
				rec->uid, rec->base);
			continue;
		}
		f->used = true;
		if (f->in_new) {
			problem(ctx, "UID %u: file is still in new/", rec->uid);
			continue;
		}
		mailbox_file_name(rec->base, rec->flags & MAIL_FLAGS_MASK,
				  fname, sizeof(fname));
		if (strcmp(fname, f->name) != 0)
			problem(ctx, "UID %u: file name %s does not show the "
				"flags of the index (%s)", rec->uid, f->name, fname);
	}
	for (size_t i = 0; i < list.count; i++) {
		if (!list.files[i].used && !list.files[i].in_new)
			problem(ctx, "file cur/%s has no UID", list.files[i].name);
		if (i > 0 && strcmp(list.files[i].base, list.files[i - 1].base) == 0)
			problem(ctx, "two files share the name %s",
				list.files[i].base);
	}
	dir_list_free(&list);
	ret = STORE_OK;
out:
	lock_release(box->lock);
	mailbox_close(&box);
	return ret;
}

int store_index_check(struct store_user *user, const char *mailbox,
		      store_report_callback_t *report, void *context,
		      unsigned int *problems_r)
{
	struct check_ctx ctx = { .report = report, .context = context };
	struct store_list_entry *entries;
	size_t count;
	int ret = STORE_OK;

	if (user->requester != NULL)
		return store_set_error(user, STORE_ERR_NOPERM,
				       "Not allowed for another user's mailboxes");
	if (mailbox != NULL) {
		ret = check_mailbox(user, mailbox, &ctx);
	} else {
		if ((ret = store_list(user, &entries, &count)) < 0)
			return ret;
		for (size_t i = 0; i < count && ret == STORE_OK; i++) {
			if ((entries[i].attrs & STORE_LIST_NONEXISTENT) != 0)
				continue;
			ret = check_mailbox(user, entries[i].name, &ctx);
			if (ret == STORE_ERR_NOTFOUND)
				ret = STORE_OK;	/* deleted meanwhile */
		}
		store_list_free(entries, count);
	}
	if (problems_r != NULL)
		*problems_r = ctx.problems;
	if (ret < 0)
		return ret;
	return ctx.problems > 0 ? STORE_ERR_CORRUPT : STORE_OK;
}

/* ---- rebuild ------------------------------------------------------------- */

/* UIDVALIDITY values visible in damaged files, to stay above them. */
static uint32_t rebuild_old_uidvalidity(struct mailbox *box)
{
	static const char *const files[] = { MAILBOX_INDEX_FILE, MAILBOX_LOG_FILE };
	uint32_t best = 0, v;
	uint8_t hdr[12];

	for (size_t i = 0; i < N_ELEMENTS(files); i++) {
		int fd = sio_openat(box->user->sio, box->dir_fd, files[i],
				    O_RDONLY, 0);

		if (fd < 0)
			continue;
		if (sio_pread(box->user->sio, fd, hdr, sizeof(hdr), 0) ==
		    (ssize_t)sizeof(hdr)) {
			memcpy(&v, hdr + 8, 4);
			if (v > best)
				best = v;
		}
		(void)sio_close(box->user->sio, fd);
	}
	if (lock_value_is_valid(box->lock)) {
		struct mailbox_stamp s;

		memcpy(&s, lock_value(box->lock), sizeof(s));
		if (s.uidvalidity > best)
			best = s.uidvalidity;
	}
	return best;
}

static int rec_uid_cmp(const void *a, const void *b)
{
	const struct mail_record *ra = a, *rb = b;

	return ra->uid < rb->uid ? -1 : (ra->uid > rb->uid ? 1 : 0);
}

int mailbox_rebuild_locked(struct mailbox *box)
{
	struct store_user *user = box->user;
	struct sio *sio = user->sio;
	struct dir_list list;
	const char *reason = NULL;
	struct mail_record *recs = NULL;
	size_t rec_count = 0;
	uint32_t uidnext, uidvalidity, kw_count = 0, old_gen;
	uint64_t modseq;
	char *keywords[STORE_MAX_KEYWORDS];
	bool have_old;
	int ret;

	have_old = mailbox_load(box, &reason) == STORE_OK;
	if (have_old && box->log_offset == UINT64_MAX)
		box->log_offset = 0;
	if ((ret = dir_list_read(box, &list)) < 0)
		return ret;
	if (have_old) {
		/* Finish interrupted expunges: those files must go. */
		for (size_t i = 0; i < box->pending_count; i++) {
			struct mailbox_pending *p = &box->pending[i];

			for (size_t j = 0; p->bases != NULL && j < p->count; j++) {
				struct dir_file *f = dir_list_find(&list, p->bases[j]);
				char path[PATH_MAX];

				if (f == NULL)
					continue;
				snprintf(path, sizeof(path), "%s/%s",
					 f->in_new ? "new" : "cur", f->name);
				(void)sio_unlinkat(sio, box->dir_fd, path, 0);
				f->used = true;	/* gone: not a new message */
			}
		}
		uidvalidity = box->uidvalidity;
		uidnext = box->uidnext;
		modseq = box->highestmodseq + 1;
		old_gen = box->log_gen;
		kw_count = box->kw_count;
		for (unsigned int i = 0; i < kw_count; i++) {
			keywords[i] = box->keywords[i];
			box->keywords[i] = NULL;
		}
	} else {
		uint32_t old = rebuild_old_uidvalidity(box);

		uidvalidity = (uint32_t)time(NULL);
		if (uidvalidity <= old)
			uidvalidity = old + 1;
		uidnext = 1;
		modseq = 1;
		old_gen = 0;
	}

	/* Known files keep their record (flags from the index). */
	recs = mem_calloc(list.count + 1, sizeof(*recs));
	for (uint32_t i = 0; have_old && i < box->count; i++) {
		struct mail_record *rec = &box->recs[i];
		struct dir_file *f;
		char fname[PATH_MAX], src[PATH_MAX + 8], dst[PATH_MAX + 8];

		if ((rec->flags & MAIL_EXPUNGED) != 0)
			continue;
		f = dir_list_find(&list, rec->base);
		if (f == NULL || f->used)
			continue;	/* file gone: the message is gone */
		f->used = true;
		mailbox_file_name(rec->base, rec->flags & MAIL_FLAGS_MASK,
				  fname, sizeof(fname));
		if (f->in_new || strcmp(f->name, fname) != 0) {
			snprintf(src, sizeof(src), "%s/%s",
				 f->in_new ? "new" : "cur", f->name);
			snprintf(dst, sizeof(dst), "cur/%s", fname);
			ret = sio_renameat(sio, box->dir_fd, src, box->dir_fd, dst, 0);
			if (ret < 0 && ret != -ENOENT)
				log_warn("store %s: rebuild %s: rename %s: %s",
					 user->name, box->name, src, strerror(-ret));
		}
		recs[rec_count] = *rec;
		recs[rec_count].flags &= MAIL_FLAGS_MASK;
		recs[rec_count].base = mem_strdup(rec->base);
		rec_count++;
	}
	/* Unknown files are new messages, in name (≈ delivery) order. */
	for (size_t i = 0; i < list.count; i++) {
		struct dir_file *f = &list.files[i];
		struct mail_record *rec;
		char fname[PATH_MAX], src[PATH_MAX + 8], dst[PATH_MAX + 8];
		struct stat st;
		int fd;

		if (f->used)
			continue;
		f->used = true;
		snprintf(src, sizeof(src), "%s/%s", f->in_new ? "new" : "cur",
			 f->name);
		fd = sio_openat(sio, box->dir_fd, src, O_RDONLY, 0);
		if (fd < 0)
			continue;
		if (sio_fstat(sio, fd, &st) < 0 || !S_ISREG(st.st_mode)) {
			(void)sio_close(sio, fd);
			continue;
		}
		rec = &recs[rec_count];
		memset(rec, 0, sizeof(*rec));
		if (!mailbox_base_sizes(f->base, &rec->size, &rec->vsize) ||
		    rec->size != (uint64_t)st.st_size) {
			if (mailbox_compute_vsize(sio, fd, &rec->size,
						  &rec->vsize) < 0) {
				(void)sio_close(sio, fd);
				continue;
			}
		}
		(void)sio_close(sio, fd);
		rec->uid = uidnext++;
		rec->flags = mailbox_name_flags(f->name);
		rec->modseq = modseq;
		rec->internaldate = st.st_mtime;
		rec->savedate = st.st_mtime;
		rec->base = mem_strdup(f->base);
		mailbox_file_name(f->base, rec->flags, fname, sizeof(fname));
		snprintf(dst, sizeof(dst), "cur/%s", fname);
		if (strcmp(src, dst) != 0) {
			ret = sio_renameat(sio, box->dir_fd, src, box->dir_fd, dst, 0);
			if (ret < 0 && ret != -ENOENT)
				log_warn("store %s: rebuild %s: rename %s: %s",
					 user->name, box->name, src, strerror(-ret));
		}
		rec_count++;
	}
	dir_list_free(&list);
	if ((ret = sio_fsync_dir(sio, box->dir_fd, "cur")) < 0) {
		for (size_t i = 0; i < rec_count; i++)
			free((char *)recs[i].base);
		free(recs);
		for (unsigned int i = 0; i < kw_count; i++)
			free(keywords[i]);
		return store_io_error(user, "fsync", "cur", ret);
	}

	qsort(recs, rec_count, sizeof(*recs), rec_uid_cmp);
	mailbox_view_reset(box);
	for (size_t i = 0; i < rec_count; i++)
		mailbox_view_add(box, &recs[i]);
	free(recs);
	for (unsigned int i = 0; i < kw_count; i++)
		box->keywords[i] = keywords[i];
	box->kw_count = kw_count;
	box->uidvalidity = uidvalidity;
	box->uidnext = uidnext;
	box->first_recent_uid = have_old ? uidnext : 1;
	box->highestmodseq = modseq;
	box->log_gen = old_gen;
	if ((ret = mailbox_write_snapshot(box)) < 0)
		return ret;
	box->loaded = true;
	box->reported_count = 0;
	box->uidvalidity_changed = !have_old;
	log_info("store %s: mailbox %s rebuilt: %zu messages, UIDVALIDITY %u%s",
		 user->name, box->name, rec_count, uidvalidity,
		 have_old ? " (kept)" : " (new)");
	return STORE_OK;
}

int store_index_rebuild(struct store_user *user, const char *mailbox)
{
	struct mailbox *box;
	int ret;

	if (user->requester != NULL)
		return store_set_error(user, STORE_ERR_NOPERM,
				       "Not allowed for another user's mailboxes");
	if ((ret = mailbox_open_raw(user, mailbox, 0, &box)) < 0)
		return ret;
	ret = sio_lock(user->sio, box->lock, LOCK_MODE_EX, 0,
		       user->store->lock_timeout_msecs);
	if (ret < 0) {
		mailbox_close(&box);
		return store_set_error(user, STORE_ERR_TEMP,
				       "Mailbox is locked; try again later");
	}
	ret = mailbox_rebuild_locked(box);
	mailbox_unlock(box);
	mailbox_close(&box);
	return ret;
}
