/*
 * password.c - password hashing and verification on top of libxcrypt.
 *
 * Only the reentrant libxcrypt calls are used: crypt_gensalt_ra() (fresh
 * salt from the kernel's entropy, returned in malloc'd memory) and
 * crypt_rn() with a work area we allocate per call. That keeps every
 * function here safe to run on several threads at once.
 *
 * Classifying a stored hash is done by its prefix against a whitelist of
 * strong schemes, not by libxcrypt's crypt_checksalt() alone: Debian's
 * libxcrypt reports SHA256-CRYPT as "legacy" although it is still an
 * acceptable scheme, and reports "$2a$" bcrypt as fine although its
 * historical 8-bit bug makes its meaning ambiguous. We still ask
 * crypt_checksalt() whether the library can parse the setting at all.
 */
#include "lib/lib.h"
#include "lib/str.h"
#include "auth/password.h"

#include <crypt.h>
#include <strings.h>

/* SHA512-CRYPT rounds for new hashes. The historical default (5000) is
   cheap for attackers with GPUs; 50000 costs about as much time as
   yescrypt's default cost on a current CPU (around 10 ms). */
#define PASSWORD_SHA512_ROUNDS 50000UL

_Static_assert(PASSWORD_MAX_LEN < CRYPT_MAX_PASSPHRASE_SIZE,
	       "PASSWORD_MAX_LEN exceeds what libxcrypt accepts");

struct password_scheme_info {
	const char *name;
	const char *prefix;
	unsigned long cost;	/* crypt_gensalt count; 0 = library default */
};

static const struct password_scheme_info password_schemes[] = {
	[PASSWORD_SCHEME_YESCRYPT] = { "yescrypt", "$y$", 0 },
	[PASSWORD_SCHEME_SHA512_CRYPT] = { "sha512-crypt", "$6$",
					   PASSWORD_SHA512_ROUNDS },
};

/* Strong schemes accepted for verification, with the number of '$' in a
   complete hash (prefix included); 0 means "3 or 4", for SHA-crypt's
   optional "rounds=N$" field. */
struct password_verify_info {
	const char *prefix;
	const char *name;
	unsigned int dollars;	/* '$' count of a full hash; 0 = 3 or 4 */
};

static const struct password_verify_info password_verify_schemes[] = {
	{ "$y$", "yescrypt", 4 },
	{ "$gy$", "gost-yescrypt", 4 },
	{ "$7$", "scrypt", 3 },
	{ "$2b$", "bcrypt", 3 },
	{ "$2y$", "bcrypt", 3 },
	{ "$6$", "sha512-crypt", 0 },
	{ "$5$", "sha256-crypt", 0 },
};

int password_scheme_parse(const char *name, enum password_scheme *scheme_r)
{
	for (size_t i = 0; i < N_ELEMENTS(password_schemes); i++) {
		if (strcasecmp(name, password_schemes[i].name) == 0) {
			*scheme_r = (enum password_scheme)i;
			return 0;
		}
	}
	return -1;
}

const char *password_scheme_name(enum password_scheme scheme)
{
	if ((size_t)scheme >= N_ELEMENTS(password_schemes))
		log_panic("password: invalid scheme %d", (int)scheme);
	return password_schemes[scheme].name;
}

/* password_find_scheme - the whitelisted strong scheme of hash, or NULL */
static const struct password_verify_info *
password_find_scheme(const char *hash)
{
	for (size_t i = 0; i < N_ELEMENTS(password_verify_schemes); i++) {
		if (str_begins_with(hash, password_verify_schemes[i].prefix))
			return &password_verify_schemes[i];
	}
	return NULL;
}

/* password_is_hash_char - may c appear in a strong hash? (crypt's base64
   alphabet, '$' separators and SHA-crypt's "rounds=") */
static bool password_is_hash_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '.' || c == '/' || c == '$' ||
		c == '=';
}

/* password_check_storable - any hash we keep, locked ones included, must
   fit in the users file: printable ASCII, no ':' and no white space */
static int password_check_storable(const char *hash, const char **error_r)
{
	for (const char *p = hash; *p != '\0'; p++) {
		if (*p <= ' ' || *p > '~' || *p == ':') {
			*error_r = "malformed hash (invalid character)";
			return -1;
		}
	}
	return 0;
}

/* password_check_shape - charset, length and number of '$' fields of a
   strong hash; the final field (the hash proper) must not be empty */
static int password_check_shape(const char *hash,
				const struct password_verify_info *info,
				const char **error_r)
{
	unsigned int dollars = 0;
	size_t len = 0;

	for (const char *p = hash; *p != '\0'; p++, len++) {
		if (!password_is_hash_char(*p)) {
			*error_r = "malformed hash (invalid character)";
			return -1;
		}
		if (*p == '$')
			dollars++;
	}
	if (len >= CRYPT_OUTPUT_SIZE) {
		*error_r = "malformed hash (too long)";
		return -1;
	}
	if ((info->dollars != 0 && dollars != info->dollars) ||
	    (info->dollars == 0 && dollars != 3 && dollars != 4) ||
	    hash[len - 1] == '$') {
		*error_r = "malformed hash (wrong number of fields)";
		return -1;
	}
	return 0;
}

int password_hash_check(const char *hash, const char **error_r)
{
	const struct password_verify_info *info;
	int status;

	if (hash[0] == '!' || hash[0] == '*')
		return password_check_storable(hash, error_r) < 0 ? -1 : 0;
	if ((info = password_find_scheme(hash)) == NULL) {
		/* Blanks or control characters are more likely a typo than
		   an unknown scheme; say so. */
		if (hash[0] == '\0')
			*error_r = "empty hash";
		else if (password_check_storable(hash, error_r) == 0)
			*error_r = "unsupported or disabled hash scheme";
		return -1;
	}
	if (password_check_shape(hash, info, error_r) < 0)
		return -1;
	/* LEGACY is fine here: the whitelist above already decided what is
	   strong enough; we only need the library to implement it. */
	status = crypt_checksalt(hash);
	if (status != CRYPT_SALT_OK && status != CRYPT_SALT_METHOD_LEGACY) {
		*error_r = "unsupported or disabled hash scheme";
		return -1;
	}
	return 1;
}

bool password_hash_is_supported(const char *hash)
{
	const char *error;

	return password_hash_check(hash, &error) == 1;
}

const char *password_hash_scheme_name(const char *hash)
{
	const char *error;

	switch (password_hash_check(hash, &error)) {
	case 1:
		return password_find_scheme(hash)->name;
	case 0:
		return "locked";
	default:
		return "unsupported";
	}
}

/* password_crypt - run crypt_rn() in a private work area; returns the
   result copied into the heap, or NULL with *error_r set. The work area
   holds intermediate state derived from the password, so it is wiped. */
static char *password_crypt(const char *plain, const char *setting,
			    const char **error_r)
{
	struct crypt_data *data = mem_zalloc(sizeof(*data));
	const char *result;
	char *copy = NULL;

	result = crypt_rn(plain, setting, data, sizeof(*data));
	/* Failures are NULL, or a string starting with '*' on builds that
	   emulate the old "failure token" behaviour. */
	if (result == NULL || result[0] == '*') {
		*error_r = errno == ENOMEM ? "out of memory while hashing" :
			"malformed hash or hash parameters";
	} else {
		copy = mem_strdup(result);
	}
	explicit_bzero(data, sizeof(*data));
	free(data);
	return copy;
}

int password_hash(const char *plain, enum password_scheme scheme,
		  char **hash_r, const char **error_r)
{
	const struct password_scheme_info *info;
	char *setting, *hash;
	size_t len = strnlen(plain, PASSWORD_MAX_LEN + 1);

	if (len == 0) {
		*error_r = "empty password";
		return -1;
	}
	if (len > PASSWORD_MAX_LEN) {
		*error_r = "password too long";
		return -1;
	}
	if ((size_t)scheme >= N_ELEMENTS(password_schemes))
		log_panic("password: invalid scheme %d", (int)scheme);
	info = &password_schemes[scheme];
	/* NULL random bytes: libxcrypt reads the salt from getrandom(). */
	setting = crypt_gensalt_ra(info->prefix, info->cost, NULL, 0);
	if (setting == NULL) {
		*error_r = "cannot generate a salt (no entropy source?)";
		return -1;
	}
	hash = password_crypt(plain, setting, error_r);
	free(setting);
	if (hash == NULL)
		return -1;
	*hash_r = hash;
	return 0;
}

/* password_equal - compare two strings of equal length in time that does
   not depend on where they differ. Lengths are not secret: a hash's length
   follows from its scheme, which is visible in the hash itself. */
static bool password_equal(const char *a, const char *b)
{
	size_t len = strlen(a);
	volatile unsigned char diff = 0;

	if (len != strlen(b))
		return false;
	for (size_t i = 0; i < len; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

int password_verify(const char *plain, const char *hash,
		    const char **error_r)
{
	char *computed;
	bool match;
	int status;

	if ((status = password_hash_check(hash, error_r)) <= 0)
		return status;
	if (strnlen(plain, PASSWORD_MAX_LEN + 1) > PASSWORD_MAX_LEN)
		return 0;
	if ((computed = password_crypt(plain, hash, error_r)) == NULL)
		return -1;
	match = password_equal(computed, hash);
	explicit_bzero(computed, strlen(computed));
	free(computed);
	return match ? 1 : 0;
}
