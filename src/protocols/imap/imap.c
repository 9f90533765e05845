/*
 * imap.c - the IMAP service entry points (imap.h).
 *
 * The session engine itself is imap-client.c, which implements
 * imap_session_start(), imap_sessions_shutdown() and imap_session_count()
 * next to the private session struct they need; this file only holds
 * what does not depend on a session.
 */
#include "lib/lib.h"
#include "imap.h"
