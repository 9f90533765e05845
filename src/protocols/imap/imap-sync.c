/*
 * imap-sync.c - bring the selected view up to date and tell the client
 * (RFC 9051 7.4 / 7.5.1).
 *
 * mailbox_sync() reads other sessions' and nodes' changes from the
 * change log and picks up deliveries; its change list says what the
 * client has not been told yet. We report, in this order:
 *
 *   1. "* n EXPUNGE" for each expunged message, from the highest old
 *      sequence number down: each response renumbers the messages after
 *      it, and going downwards means no number needs recomputing.
 *      With IMAP_SYNC_NO_EXPUNGE the store keeps expunged records in the
 *      view (flagged MAIL_EXPUNGED) so sequence numbers stay stable.
 *      Once QRESYNC is enabled (RFC 7162 3.2.10), one "* VANISHED
 *      uid-set" replaces them, naming only messages the client was told
 *      exist (each UID in it lowers the client's message count).
 *   2. FLAGS / PERMANENTFLAGS when new keywords appeared.
 *   3. "* n EXISTS" (and "* n RECENT" for IMAP4rev1 clients) when the
 *      count grew.
 *   4. "* n FETCH (UID u FLAGS (...) [MODSEQ (m)])" for each message
 *      another session changed. UID is always included: RFC 9051 lets a
 *      server send any data item in an unsolicited FETCH, and clients
 *      that track messages by UID need it. MODSEQ when CONDSTORE is on
 *      (RFC 7162 3.2).
 *
 * A session's own STORE reports its changes itself; the view still lists
 * them as changed, so STORE syncs through imap_sync_skip_own() which
 * leaves out the messages that carry the STORE's modseq.
 *
 * ENABLE QRESYNC implies CONDSTORE (RFC 7162 3.2.3); the ENABLE handler
 * announces HIGHESTMODSEQ only for CONDSTORE itself, so the first sync
 * after QRESYNC was enabled in the selected state does it.
 *
 * A mailbox deleted (or given a new UIDVALIDITY) under a selected session
 * cannot be resynchronised in IMAP4: we send BYE (RFC 9051 7.1.5 allows
 * it) and end the session.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-sync.h"
#include "imap-util.h"

/* sync_send_vanished - QRESYNC: one VANISHED for the expunged UIDs the
   client knows about */
static int sync_send_vanished(struct imap_client *client,
			      const struct mailbox_changes *changes)
{
	uint32_t *uids = mem_calloc(changes->expunged_count + 1, sizeof(*uids));
	struct buffer buf;
	size_t n = 0;
	int ret = 0;

	for (size_t i = 0; i < changes->expunged_count; i++) {
		if (changes->expunged_seqs[i] <= client->exists_reported)
			uids[n++] = changes->expunged_uids[i];
	}
	if (n > 0) {
		buffer_init(&buf, 0);
		buffer_append_str(&buf, "* VANISHED ");
		imap_seqset_write_uids(&buf, uids, n);
		buffer_append_str(&buf, "\r\n");
		ret = imap_client_write(client, buf.data, buf.used);
		buffer_clear(&buf);
	}
	free(uids);
	client->exists_reported -= (uint32_t)n;
	return ret;
}

/* sync_send_expunges - EXPUNGE responses, highest sequence number first */
static int sync_send_expunges(struct imap_client *client,
			      const struct mailbox_changes *changes)
{
	if ((client->enabled & IMAP_ENABLED_QRESYNC) != 0)
		return sync_send_vanished(client, changes);
	for (size_t i = changes->expunged_count; i > 0; i--) {
		if (imap_client_untagged(client, "%u EXPUNGE",
					 changes->expunged_seqs[i - 1]) < 0)
			return -1;
	}
	if (client->exists_reported >= changes->expunged_count)
		client->exists_reported -= changes->expunged_count;
	else
		client->exists_reported = 0;
	return 0;
}

/* sync_recent_count - messages of the view flagged \Recent */
static uint32_t sync_recent_count(struct mailbox *box)
{
	uint32_t count = mailbox_count(box), recent = 0;

	for (uint32_t i = 0; i < count; i++) {
		if ((mailbox_record(box, i)->flags & MAIL_RECENT) != 0)
			recent++;
	}
	return recent;
}

/* sync_send_exists - EXISTS (and RECENT for rev1) when the count changed */
static int sync_send_exists(struct imap_client *client)
{
	uint32_t count = mailbox_count(client->box);

	if (count <= client->exists_reported) {
		/* Shrinking happens only through EXPUNGE responses; EXISTS
		   may never announce fewer messages (RFC 9051 7.4.1). */
		client->exists_reported = count;
		return 0;
	}
	client->exists_reported = count;
	if (imap_client_untagged(client, "%u EXISTS", count) < 0)
		return -1;
	if ((client->enabled & IMAP_ENABLED_REV2) != 0)
		return 0;
	return imap_client_untagged(client, "%u RECENT",
				    sync_recent_count(client->box));
}

/* sync_send_fetch - one unsolicited FETCH for a changed message */
static int sync_send_fetch(struct imap_client *client, uint32_t uid,
			   uint64_t own_modseq)
{
	const struct mail_record *rec;
	struct buffer buf;
	uint32_t idx;
	int ret;

	rec = mailbox_lookup_uid(client->box, uid, &idx);
	if (rec == NULL || (rec->flags & MAIL_EXPUNGED) != 0 ||
	    idx >= client->exists_reported)
		return 0;
	if (own_modseq != 0 && rec->modseq == own_modseq)
		return 0;
	buffer_init(&buf, 0);
	buffer_printf(&buf, "* %u FETCH (UID %u FLAGS (", idx + 1, uid);
	imap_flags_write(&buf, client->box,
			 imap_client_visible_flags(client, rec->flags),
			 rec->keywords);
	buffer_append_str(&buf, ")");
	if (client->condstore_active)
		buffer_printf(&buf, " MODSEQ (%llu)",
			      (unsigned long long)rec->modseq);
	buffer_append_str(&buf, ")\r\n");
	ret = imap_client_write(client, buf.data, buf.used);
	buffer_clear(&buf);
	return ret;
}

/* sync_qresync_condstore - QRESYNC enabled while selected: start the
   MODSEQ reporting it implies */
static int sync_qresync_condstore(struct imap_client *client)
{
	if ((client->enabled & IMAP_ENABLED_QRESYNC) == 0 ||
	    client->condstore_active)
		return 0;
	client->condstore_active = true;
	return imap_client_untagged(client, "OK [HIGHESTMODSEQ %llu] Highest",
				    (unsigned long long)
				    mailbox_highestmodseq(client->box));
}

/* sync_report - send what a mailbox_sync() changed */
static int sync_report(struct imap_client *client,
		       const struct mailbox_changes *changes,
		       uint64_t own_modseq)
{
	if (sync_qresync_condstore(client) < 0)
		return -1;
	if (sync_send_expunges(client, changes) < 0)
		return -1;
	if (changes->keywords_changed && imap_sync_send_flags(client) < 0)
		return -1;
	if (sync_send_exists(client) < 0)
		return -1;
	for (size_t i = 0; i < changes->changed_count; i++) {
		if (sync_send_fetch(client, changes->changed_uids[i],
				    own_modseq) < 0)
			return -1;
	}
	return 0;
}

/* imap_sync_skip_own - imap_sync() leaving out one modseq's changes */
int imap_sync_skip_own(struct imap_client *client, unsigned int flags,
		       uint64_t own_modseq)
{
	struct mailbox_changes changes;
	int ret;

	if (client->box == NULL)
		return 0;
	ret = mailbox_sync(client->box, (flags & IMAP_SYNC_NO_EXPUNGE) != 0 ?
			   MAILBOX_SYNC_NO_EXPUNGE : 0, &changes);
	if (ret < 0 && !changes.deleted) {
		/* Temporary trouble (lock timeout, I/O): the view is
		   unchanged; report it next time. */
		log_warn("imap %s: sync of %s failed: %s", client->id,
			 mailbox_name(client->box),
			 imap_client_store_error(client));
		return 0;
	}
	if (changes.deleted || changes.uidvalidity_changed) {
		bool deleted = changes.deleted;

		mailbox_changes_free(&changes);
		return imap_client_bye(client, "Selected mailbox was %s",
				       deleted ? "deleted" :
				       "recreated, select it again");
	}
	ret = sync_report(client, &changes, own_modseq);
	mailbox_changes_free(&changes);
	return ret;
}

/* imap_sync - sync the view and report (imap-sync.h) */
int imap_sync(struct imap_client *client, unsigned int flags)
{
	return imap_sync_skip_own(client, flags, 0);
}

/* sync_write_keywords - " kw1 kw2" for every keyword of the mailbox */
static void sync_write_keywords(struct buffer *buf, struct mailbox *box)
{
	unsigned int count = mailbox_keyword_count(box);

	for (unsigned int i = 0; i < count; i++) {
		buffer_append_byte(buf, ' ');
		buffer_append_str(buf, mailbox_keyword_name(box, i));
	}
}

/* imap_sync_send_flags - FLAGS and PERMANENTFLAGS */
int imap_sync_send_flags(struct imap_client *client)
{
	struct buffer buf;
	int ret;

	if (client->box == NULL)
		return 0;
	buffer_init(&buf, 0);
	buffer_append_str(&buf, "* FLAGS (\\Answered \\Flagged \\Deleted "
			  "\\Seen \\Draft");
	sync_write_keywords(&buf, client->box);
	buffer_append_str(&buf, ")\r\n* OK [PERMANENTFLAGS (");
	if (!client->box_readonly) {
		buffer_append_str(&buf, "\\Answered \\Flagged \\Deleted "
				  "\\Seen \\Draft");
		sync_write_keywords(&buf, client->box);
		if (mailbox_keyword_count(client->box) < STORE_MAX_KEYWORDS)
			buffer_append_str(&buf, " \\*");
	}
	buffer_append_str(&buf, ")] Flags permitted.\r\n");
	ret = imap_client_write(client, buf.data, buf.used);
	buffer_clear(&buf);
	return ret;
}
