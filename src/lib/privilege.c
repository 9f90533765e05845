/*
 * privilege.c - drop root for good, once, early.
 *
 * Used by clustermaild and by clustermailctl (which does spool work as
 * mail_user, as an LDA would).
 *
 * The daemon binds its ports, opens the control socket and pid file and
 * reads the TLS key as root, then becomes mail_user before it serves a
 * single client. There is no way back: after setuid() we check that
 * setuid(0) fails, and panic if it does not (a kernel or libc that let us
 * regain root would make every later bug a root compromise).
 */
#include "lib/lib.h"
#include "privilege.h"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

/* privilege_lookup - mail_user's uid and gid; fatal if unknown */
static void privilege_lookup(const char *user, uid_t *uid_r, gid_t *gid_r)
{
	struct passwd *pw;

	errno = 0;
	pw = getpwnam(user);
	if (pw == NULL) {
		if (errno != 0)
			log_fatal("mail_user %s: cannot look up: %s", user, strerror(errno));
		log_fatal_status(78, "mail_user %s: no such user (create it, e.g. "
				 "'useradd --system --no-create-home %s')", user, user);
	}
	if (pw->pw_uid == 0)
		log_fatal_status(78, "mail_user %s: must not be root", user);
	*uid_r = pw->pw_uid;
	*gid_r = pw->pw_gid;
}

void privilege_drop(const char *mail_user, const char *const *chown_paths)
{
	uid_t uid;
	gid_t gid;

	if (geteuid() != 0) {
		log_info("running as uid %ld (not root): mail_user '%s' not used",
			 (long)geteuid(), mail_user);
		return;
	}
	privilege_lookup(mail_user, &uid, &gid);
	for (; chown_paths != NULL && *chown_paths != NULL; chown_paths++) {
		if (chown(*chown_paths, uid, gid) < 0)
			log_warn("chown %s to %s: %s", *chown_paths, mail_user,
				 strerror(errno));
	}
	/* Groups first: after setuid() we could no longer change them. */
	if (initgroups(mail_user, gid) < 0)
		log_fatal("initgroups(%s): %s", mail_user, strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		log_fatal("setresgid(%ld): %s", (long)gid, strerror(errno));
	if (setresuid(uid, uid, uid) < 0)
		log_fatal("setresuid(%ld): %s", (long)uid, strerror(errno));
	if (setuid(0) == 0 || seteuid(0) == 0)
		log_panic("privileges could be regained after dropping to %s", mail_user);
	/* Changing uid made us non-dumpable. A panic must leave a core dump
	   to debug, and a process of mail_user's may be inspected by
	   mail_user anyway, so turn dumping back on (ASan's leak checker
	   needs it too). */
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0)
		log_warn("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
	log_info("dropped privileges to %s (uid %ld, gid %ld)", mail_user,
		 (long)uid, (long)gid);
}
