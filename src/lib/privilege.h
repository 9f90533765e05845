#ifndef CM_PRIVILEGE_H
#define CM_PRIVILEGE_H

/* If running as root, switch to mail_user for good (panics if root could
   be regained). Otherwise keep the current user and say so in the log.
   chown_paths (NULL-terminated) are given to mail_user first. Fatal on
   failure (unknown user, setuid failure). */
void privilege_drop(const char *mail_user, const char *const *chown_paths);

#endif
