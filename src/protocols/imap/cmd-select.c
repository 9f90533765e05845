/*
 * cmd-select.c - SELECT and EXAMINE (RFC 9051 6.3.2 / 6.3.3, RFC 3501
 * for the rev1 extras, RFC 7162 for (CONDSTORE) and HIGHESTMODSEQ).
 *
 * Any selected mailbox is closed first ("* OK [CLOSED]"): RFC 9051 says
 * a failed SELECT leaves the session in the authenticated state, so
 * there is no way back to the old mailbox. Then the view is opened (read-only for EXAMINE: it
 * never claims \Recent) and described: FLAGS, PERMANENTFLAGS, EXISTS,
 * RECENT and UNSEEN (rev1 only), LIST with the mailbox's name (rev2
 * only, RFC 9051 6.3.2), UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ
 * (cheap here: the view carries it), RFC 8474 MAILBOXID (one small file
 * read), and the tagged OK says READ-WRITE or
 * READ-ONLY.
 *
 * Another user's mailbox ("Other Users/<owner>/<name>", imap-util.h) is
 * opened through that user's spool with the session user's rights: "r"
 * to select it at all (the store refuses otherwise), and READ-ONLY when
 * none of "s", "w", "t", "e" is granted (RFC 4314 4). The view then owns
 * the other user's store_user.
 *
 * QRESYNC (RFC 7162 3.2.5): "(QRESYNC (uidvalidity modseq [known-uids]
 * [(seq-set uid-set)]))" needs ENABLE QRESYNC first (BAD otherwise).
 * When the UIDVALIDITY matches, the description is followed by
 * "* VANISHED (EARLIER) uids" for messages expunged since modseq and a
 * FETCH (UID FLAGS MODSEQ) for each message changed since then, both
 * limited to known-uids when given. The expunged UIDs come from the
 * store's expunge history; when that no longer reaches back to modseq,
 * every UID of known-uids (default 1:UIDNEXT-1) not in the view is
 * named, which 3.2.5.1 allows (UIDs never assigned may appear). Then
 * the seq-match-data narrows that list (3.2.5.2): while the client's
 * (sequence number, UID) pairs still hold in the view, no UID up to the
 * last matching one can have gone.
 * A UIDVALIDITY mismatch gives a plain SELECT.
 */
#include "lib/lib.h"
#include "maildir/acl.h"
#include "maildir/store.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "imap-sync.h"
#include "imap-util.h"

#include "lib/buffer.h"
#include "lib/str.h"

#include <stdlib.h>

/* The QRESYNC select parameter. */
struct select_qresync {
	bool set;
	uint32_t uidvalidity;
	uint64_t modseq;
	bool have_known;
	struct imap_seqset known;	/* known-uids */
	bool have_match;
	struct imap_seqset match_seqs, match_uids;	/* seq-match-data */
};

/* qr_parse_set - a UID set without "$" (known-uids, seq-match-data) */
static bool qr_parse_set(const struct imap_arg *arg, struct imap_seqset *set)
{
	const char *str, *error;

	if (!imap_arg_get_atom(arg, &str) ||
	    imap_seqset_parse(str, set, &error) < 0)
		return false;
	if (set->saved) {
		imap_seqset_free(set);
		return false;
	}
	return true;
}

/* qr_parse_match - seq-match-data "(known-sequence-set known-uid-set)" */
static bool qr_parse_match(const struct imap_arg *arg,
			   struct select_qresync *qr)
{
	const struct imap_arg *list;
	size_t count;

	if (!imap_arg_get_list(arg, &list, &count) || count != 2 ||
	    !qr_parse_set(&list[0], &qr->match_seqs))
		return false;
	if (!qr_parse_set(&list[1], &qr->match_uids)) {
		imap_seqset_free(&qr->match_seqs);
		return false;
	}
	qr->have_match = true;
	return true;
}

/* qr_parse - "(uidvalidity modseq [known-uids] [seq-match-data])" */
static bool qr_parse(const struct imap_arg *arg, struct select_qresync *qr)
{
	const struct imap_arg *list;
	unsigned int uidvalidity;
	const char *num;
	size_t count, i = 2;

	if (!imap_arg_get_list(arg, &list, &count) || count < 2 || count > 4 ||
	    !imap_arg_get_atom(&list[0], &num) ||
	    str_to_uint(num, &uidvalidity) < 0 || uidvalidity == 0 ||
	    !imap_arg_get_atom(&list[1], &num) ||
	    str_to_uint64(num, &qr->modseq) < 0 ||
	    qr->modseq > INT64_MAX)
		return false;
	qr->uidvalidity = uidvalidity;
	if (i < count && list[i].type != IMAP_ARG_LIST) {
		if (!qr_parse_set(&list[i], &qr->known))
			return false;
		qr->have_known = true;
		i++;
	}
	if (i < count && !qr_parse_match(&list[i++], qr))
		return false;
	qr->set = true;
	return i == count;
}

/* select_parse_params - the optional "(CONDSTORE QRESYNC (...))" list;
   false = BAD */
static bool select_parse_params(const struct imap_arg *arg, bool *condstore_r,
				struct select_qresync *qr)
{
	const struct imap_arg *list;
	size_t count;

	*condstore_r = false;
	if (imap_arg_is_eol(arg))
		return true;
	if (!imap_arg_get_list(arg, &list, &count) || !imap_arg_is_eol(&arg[1]))
		return false;
	for (size_t i = 0; i < count; i++) {
		if (imap_arg_atom_equals(&list[i], "CONDSTORE")) {
			*condstore_r = true;
		} else if (imap_arg_atom_equals(&list[i], "QRESYNC") &&
			   !qr->set && i + 1 < count) {
			if (!qr_parse(&list[++i], qr))
				return false;
		} else {
			return false;
		}
	}
	return true;
}

/* A cursor over the numbers of a sorted set. */
struct qr_cursor {
	const struct imap_seqset *set;
	size_t range;
	uint32_t next;
};

/* qr_cursor_next - the next number of the set; false at its end */
static bool qr_cursor_next(struct qr_cursor *c, uint32_t *num_r)
{
	while (c->range < c->set->count) {
		const struct imap_seq_range *r = &c->set->ranges[c->range];

		if (c->next < r->first)
			c->next = r->first;
		if (c->next <= r->last && c->next != 0) {
			*num_r = c->next++;
			return true;
		}
		c->range++;
		c->next = 0;
	}
	return false;
}

/* qr_match_floor - the highest UID up to which the client's
   (sequence number, UID) pairs all still hold: nothing at or below it
   was expunged (RFC 7162 3.2.5.2). 0 when none holds. */
static uint32_t qr_match_floor(struct mailbox *box,
			       const struct select_qresync *qr)
{
	struct qr_cursor seqs = { .set = &qr->match_seqs };
	struct qr_cursor uids = { .set = &qr->match_uids };
	uint32_t seq, uid, floor = 0, count = mailbox_count(box);

	if (!qr->have_match)
		return 0;
	/* At most count + 1 steps: a sequence number past the view ends it. */
	while (qr_cursor_next(&seqs, &seq) && qr_cursor_next(&uids, &uid)) {
		if (seq > count || mailbox_record(box, seq - 1)->uid != uid)
			break;
		floor = uid;
	}
	return floor;
}

/* qr_vanished_all - history too short: every known UID not in the view
   (above what the seq-match-data vouches for) */
static void qr_vanished_all(struct buffer *buf, struct mailbox *box,
			    const struct select_qresync *qr)
{
	uint32_t top = mailbox_uidnext(box) - 1;
	uint32_t floor = qr_match_floor(box, qr);

	if (floor >= top)
		return;
	if (!qr->have_known) {
		imap_seqset_append_missing(buf, box, floor + 1, top);
		return;
	}
	for (size_t i = 0; i < qr->known.count; i++) {
		uint32_t first = qr->known.ranges[i].first;
		uint32_t last = qr->known.ranges[i].last;

		if (first > top)
			break;
		if (last <= floor)
			continue;
		imap_seqset_append_missing(buf, box, first > floor ? first : floor + 1,
				 last < top ? last : top);
	}
}

/* qr_send_vanished - "* VANISHED (EARLIER) uids" when there are any */
static int qr_send_vanished(struct imap_client *client,
			    const struct select_qresync *qr)
{
	struct buffer buf;
	uint32_t *uids;
	size_t count;
	bool complete;
	int ret = 0;

	buffer_init(&buf, 0);
	(void)mailbox_expunged_since(client->box, qr->modseq, &uids, &count,
				     &complete);
	if (!complete) {
		qr_vanished_all(&buf, client->box, qr);
	} else {
		for (size_t i = 0; i < count; i++) {
			if ((qr->have_known &&
			     !imap_seqset_contains(&qr->known, uids[i])) ||
			    mailbox_lookup_uid(client->box, uids[i], NULL) != NULL)
				continue;
			imap_seqset_append_range(&buf, uids[i], uids[i]);
		}
	}
	free(uids);
	if (buf.used > 0)
		ret = imap_client_printf(client, "* VANISHED (EARLIER) %.*s\r\n",
					 (int)buf.used, (const char *)buf.data);
	buffer_clear(&buf);
	return ret;
}

/* qr_send_changes - FETCH (UID FLAGS MODSEQ) for messages changed since
   the client's modseq */
static int qr_send_changes(struct imap_client *client,
			   const struct select_qresync *qr)
{
	struct mailbox *box = client->box;
	uint32_t count = mailbox_count(box);
	struct buffer buf;
	int ret = 0;

	buffer_init(&buf, 0);
	for (uint32_t i = 0; i < count && ret == 0; i++) {
		const struct mail_record *rec = mailbox_record(box, i);

		if (rec->modseq <= qr->modseq ||
		    (qr->have_known && !imap_seqset_contains(&qr->known, rec->uid)))
			continue;
		buf.used = 0;
		buffer_printf(&buf, "* %u FETCH (UID %u FLAGS (", i + 1,
			      rec->uid);
		imap_flags_write(&buf, box,
				 imap_client_visible_flags(client, rec->flags),
				 rec->keywords);
		buffer_printf(&buf, ") MODSEQ (%llu))\r\n",
			      (unsigned long long)rec->modseq);
		ret = imap_client_write(client, buf.data, buf.used);
	}
	buffer_clear(&buf);
	return ret;
}

/* select_qresync - the QRESYNC part of a SELECT reply */
static int select_qresync(struct imap_client *client,
			  const struct select_qresync *qr)
{
	if (!qr->set || qr->uidvalidity != mailbox_uidvalidity(client->box))
		return 0;
	if (qr_send_vanished(client, qr) < 0)
		return -1;
	return qr_send_changes(client, qr);
}

/* select_first_unseen - sequence number of the first message without \Seen */
static uint32_t select_first_unseen(struct mailbox *box)
{
	uint32_t count = mailbox_count(box);

	for (uint32_t i = 0; i < count; i++) {
		if ((mailbox_record(box, i)->flags & MAIL_SEEN) == 0)
			return i + 1;
	}
	return 0;
}

/* select_send_mailbox_id - "OK [MAILBOXID (id)]" (RFC 8474); left out
   when the store cannot tell the id (logged there) */
static int select_send_mailbox_id(struct imap_client *client)
{
	char id[STORE_MAILBOX_ID_SIZE];

	if (store_mailbox_id(mailbox_user(client->box),
			     mailbox_name(client->box), id) != STORE_OK)
		return 0;
	return imap_client_untagged(client, "OK [MAILBOXID (%s)] Ok", id);
}

/* select_describe - the untagged responses for a freshly opened view */
static int select_describe(struct imap_client *client)
{
	struct mailbox *box = client->box;
	uint32_t count = mailbox_count(box), recent = 0, unseen;
	bool rev1 = (client->enabled & IMAP_ENABLED_REV2) == 0;

	if (imap_sync_send_flags(client) < 0 ||
	    imap_client_untagged(client, "%u EXISTS", count) < 0)
		return -1;
	for (uint32_t i = 0; i < count; i++) {
		if ((mailbox_record(box, i)->flags & MAIL_RECENT) != 0)
			recent++;
	}
	if (rev1 && imap_client_untagged(client, "%u RECENT", recent) < 0)
		return -1;
	unseen = select_first_unseen(box);
	if (rev1 && unseen != 0 &&
	    imap_client_untagged(client, "OK [UNSEEN %u] First unseen.",
				 unseen) < 0)
		return -1;
	if (imap_client_untagged(client, "OK [UIDVALIDITY %u] UIDs valid",
				 mailbox_uidvalidity(box)) < 0 ||
	    imap_client_untagged(client, "OK [UIDNEXT %u] Predicted next UID",
				 mailbox_uidnext(box)) < 0 ||
	    imap_client_untagged(client, "OK [HIGHESTMODSEQ %llu] Highest",
				 (unsigned long long)mailbox_highestmodseq(box)) < 0)
		return -1;
	return select_send_mailbox_id(client);
}

/* select_send_list - IMAP4rev2 (RFC 9051 6.3.2): a LIST response gives
   the selected mailbox's name as the server spells it (INBOX in upper
   case, UTF-8); no attributes, the client asks LIST for those */
static int select_send_list(struct imap_client *client, const char *name)
{
	struct buffer buf;
	int ret;

	if ((client->enabled & IMAP_ENABLED_REV2) == 0)
		return 0;
	buffer_init(&buf, 0);
	(void)buffer_append_str(&buf, "LIST () \"/\" ");
	imap_append_mailbox(&buf, client, name);
	ret = imap_client_untagged(client, "%s", buffer_cstr(&buf));
	buffer_clear(&buf);
	return ret;
}

/* select_forget_changes - a fresh view has nothing to report yet; let
   the store drop what it noted while opening (keyword table loaded...) */
static void select_forget_changes(struct mailbox *box)
{
	struct mailbox_changes changes;

	if (mailbox_sync(box, 0, &changes) == STORE_OK)
		mailbox_changes_free(&changes);
}

/* The rights that make a selected mailbox read-write. */
#define SELECT_WRITE_RIGHTS (ACL_RIGHT_SEEN | ACL_RIGHT_WRITE | \
			     ACL_RIGHT_DELETE_MESSAGES | ACL_RIGHT_EXPUNGE)

/* select_open_view - open the view of box_name (own or shared) into
   client->box; a shared view owns the other user's store_user */
static int select_open_view(struct imap_client *client, const char *box_name,
			    bool readonly)
{
	struct imap_mailbox_ref ref;
	int ret;

	if ((ret = imap_mailbox_ref_get(client, box_name, &ref)) < 0)
		return ret;
	ret = mailbox_open(ref.user, ref.name,
			   readonly ? MAILBOX_OPEN_READONLY : 0, &client->box);
	if (ret == STORE_OK && ref.shared) {
		mailbox_take_user(client->box);
		ref.user = NULL;
	}
	imap_mailbox_ref_free(&ref);
	return ret;
}

static int select_open_qr(struct imap_command *cmd, bool readonly,
			  struct select_qresync *qr);

/* select_open - SELECT (readonly false) or EXAMINE (true) */
static int select_open(struct imap_command *cmd, bool readonly)
{
	struct select_qresync qr;
	int ret;

	memset(&qr, 0, sizeof(qr));
	ret = select_open_qr(cmd, readonly, &qr);
	if (qr.have_known)
		imap_seqset_free(&qr.known);
	if (qr.have_match) {
		imap_seqset_free(&qr.match_seqs);
		imap_seqset_free(&qr.match_uids);
	}
	return ret;
}

/* select_open_qr - select_open() with the QRESYNC parameter's storage */
static int select_open_qr(struct imap_command *cmd, bool readonly,
			  struct select_qresync *qr)
{
	struct imap_client *client = cmd->client;
	const char *name, *error;
	char *box_name;
	bool condstore;
	int ret;

	if (!imap_arg_get_astring(&cmd->args[0], &name) ||
	    !select_parse_params(&cmd->args[1], &condstore, qr)) {
		imap_command_bad(cmd, "Invalid arguments");
		return 0;
	}
	if (qr->set && (client->enabled & IMAP_ENABLED_QRESYNC) == 0) {
		/* RFC 7162 3.2.5 */
		imap_command_bad(cmd, "QRESYNC parameter needs ENABLE QRESYNC");
		return 0;
	}
	if (client->box != NULL) {
		/* RFC 9051 7.1 / RFC 7162 3.2.11: say where one view ends
		   and the next begins (rev1 clients ignore the code). */
		imap_client_unselect(client);
		if (imap_client_untagged(client, "OK [CLOSED] Previous "
					 "mailbox closed.") < 0)
			return -1;
	}
	box_name = imap_mailbox_from_client(client, name, &error);
	if (box_name == NULL) {
		imap_command_no(cmd, "[CANNOT] %s", error);
		return 0;
	}
	ret = select_open_view(client, box_name, readonly);
	if (ret < 0) {
		free(box_name);
		client->box = NULL;
		imap_command_store_error(cmd, ret, false);
		return 0;
	}
	select_forget_changes(client->box);
	client->state = IMAP_STATE_SELECTED;
	/* RFC 4314 4: READ-ONLY when no right would let the session change
	   anything in the mailbox. */
	if ((mailbox_rights(client->box) & SELECT_WRITE_RIGHTS) == 0)
		readonly = true;
	client->box_readonly = readonly;
	client->condstore_active = condstore ||
		(client->enabled & (IMAP_ENABLED_CONDSTORE |
				    IMAP_ENABLED_QRESYNC)) != 0;
	client->exists_reported = mailbox_count(client->box);
	ret = select_describe(client) < 0 ||
		select_send_list(client, box_name) < 0 ? -1 : 0;
	free(box_name);
	if (ret < 0 || select_qresync(client, qr) < 0)
		return -1;
	imap_command_ok(cmd, "[%s] %s completed", readonly ? "READ-ONLY" :
			"READ-WRITE", readonly ? "EXAMINE" : "SELECT");
	return 0;
}

/* cmd_select - SELECT mailbox [(CONDSTORE)] */
int cmd_select(struct imap_command *cmd)
{
	return select_open(cmd, false);
}

/* cmd_examine - EXAMINE mailbox: a read-only SELECT */
int cmd_examine(struct imap_command *cmd)
{
	return select_open(cmd, true);
}
