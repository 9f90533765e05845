#ifndef CM_IMAP_SYNC_H
#define CM_IMAP_SYNC_H
/*
 * imap-sync - bring the selected mailbox view up to date and tell the
 * client (RFC 9051 7.5.1 / 7.4): untagged EXPUNGE (highest sequence
 * number first, or VANISHED with QRESYNC), EXISTS, RECENT (rev1 only),
 * FETCH (FLAGS [MODSEQ]) for messages changed by others, FLAGS and
 * PERMANENTFLAGS when new keywords appear.
 *
 * Called by the session after each command in SELECTED state, and by
 * NOOP/CHECK/IDLE. After it, client->exists_reported == the view count.
 */
#include <stdint.h>

struct imap_client;

/* Leave expunged messages in the view (flagged MAIL_EXPUNGED) and send no
   EXPUNGE: while a sequence-number command's response is being built. */
#define IMAP_SYNC_NO_EXPUNGE	0x1

/* Returns 0, or -1 when the session must end (connection gone, or the
   mailbox was deleted/recreated: "* BYE" sent, as RFC 9051 allows). */
int imap_sync(struct imap_client *client, unsigned int flags);

/* Like imap_sync(), but messages whose modseq equals own_modseq (changed
   by the running STORE, which already reported them) get no FETCH. */
int imap_sync_skip_own(struct imap_client *client, unsigned int flags,
		       uint64_t own_modseq);

/* Untagged FLAGS and OK [PERMANENTFLAGS ...] for the selected mailbox
   (SELECT, and when keywords change). Returns 0 or -1. */
int imap_sync_send_flags(struct imap_client *client);

#endif
