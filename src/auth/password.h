#ifndef CM_AUTH_PASSWORD_H
#define CM_AUTH_PASSWORD_H
/*
 * password - hashing and verifying passwords with libxcrypt.
 *
 * New hashes use one of two schemes: yescrypt ("$y$", the default, at
 * libxcrypt's default cost) or SHA512-CRYPT ("$6$", for interoperability
 * with older systems). Verification accepts every strong scheme libxcrypt
 * implements, so hashes migrated from other servers keep working:
 *
 *   $y$   yescrypt            $gy$  gost-yescrypt     $7$   scrypt
 *   $2b$  bcrypt              $2y$  bcrypt            $6$   SHA512-CRYPT
 *   $5$   SHA256-CRYPT
 *
 * Weak or legacy schemes (traditional DES, BSDi "_", "$1$" MD5, "$3$" NTHASH,
 * "$md5", "$sha1$", "$2a$" and "$2x$" bcrypt with their 8-bit ambiguity) and
 * the empty string never verify: they are an error, so that an old hash
 * left behind by a migration is noticed and rehashed rather than silently
 * accepted or silently refused.
 *
 * A hash starting with '!' or '*' (e.g. "!", "*", "!$y$...") is a locked
 * account, as in shadow(5): it is valid in the users file, never matches
 * any password, and is not an error.
 *
 * All functions are thread-safe (crypt_rn with a private work area, no
 * static buffers), so the daemon may verify on its blocking-call pool.
 * Plaintext copies made here are wiped before their memory is released.
 */
#include <stdbool.h>

/* Longest password accepted, in bytes: libxcrypt refuses passphrases of
   CRYPT_MAX_PASSPHRASE_SIZE (512) bytes or more, NUL included. The bound
   also matters on its own: SHA-crypt's cost grows with the password
   length, so an unbounded length would let anyone who can try a login
   burn CPU. */
#define PASSWORD_MAX_LEN 511

enum password_scheme {
	PASSWORD_SCHEME_YESCRYPT,	/* "$y$" */
	PASSWORD_SCHEME_SHA512_CRYPT,	/* "$6$" */
};

#define PASSWORD_SCHEME_DEFAULT PASSWORD_SCHEME_YESCRYPT

/* Parse a scheme name for new hashes: "yescrypt" or "sha512-crypt", in any
   letter case. Returns 0, or -1 for an unknown name. */
int password_scheme_parse(const char *name, enum password_scheme *scheme_r);
/* The canonical (lowercase) name of a scheme. */
const char *password_scheme_name(enum password_scheme scheme);

/* Hash plain (1..PASSWORD_MAX_LEN bytes) with a fresh random salt.
   Returns 0 with *hash_r allocated (caller frees), or -1 with *error_r set
   to a static message (empty password, too long, no entropy, ...). */
int password_hash(const char *plain, enum password_scheme scheme,
		  char **hash_r, const char **error_r);

/* Check plain against a stored hash. Returns 1 on a match, 0 on a mismatch
   (also for a locked hash and for a password longer than
   PASSWORD_MAX_LEN, which no stored hash can come from), or -1 with
   *error_r set to a static message when the hash is weak, unknown or
   malformed, or the computation failed. The comparison of the computed and
   stored hash takes the same time wherever they differ. */
int password_verify(const char *plain, const char *hash,
		    const char **error_r);

/* Classify a stored hash without computing anything (cheap enough to run
   on every line of a large users file). Returns 1 for a strong hash
   password_verify() can check, 0 for a locked hash ('!' or '*' prefix), or
   -1 with *error_r set to a static message for anything else. Every hash
   this accepts consists of printable ASCII without ':' or white space, so
   it can be stored in the users file as is. */
int password_hash_check(const char *hash, const char **error_r);

/* Is hash a strong hash that password_verify() can check?
   (password_hash_check() == 1) */
bool password_hash_is_supported(const char *hash);

/* A short name for the scheme of a stored hash, for listings: "yescrypt",
   "gost-yescrypt", "scrypt", "bcrypt", "sha512-crypt", "sha256-crypt",
   "locked", or "unsupported". */
const char *password_hash_scheme_name(const char *hash);

#endif
