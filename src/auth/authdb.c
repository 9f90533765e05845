/*
 * authdb.c - users file cache, password check and failure counting.
 *
 * One mutex guards the cached userdb and the failure table. The password
 * computation runs outside it (crypt takes tens of milliseconds and the
 * pool has several threads): the stored hash is copied out under the
 * lock first.
 */
#include "lib/lib.h"
#include "lib/str.h"
#include "auth/authdb.h"
#include "auth/password.h"
#include "auth/userdb.h"

#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

struct authdb_failure {
	char ip[64];
	time_t window_start;
	unsigned int count;
};

static pthread_mutex_t authdb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct userdb *authdb_users;		/* owned; NULL = not loaded */
static char *authdb_path;			/* owned */
static struct stat authdb_stat;			/* of the loaded file */
static char *authdb_dummy_hash;			/* owned */
static struct authdb_failure authdb_failures[AUTHDB_FAILURE_TABLE_SIZE];

/* authdb_same_file - is the loaded userdb still the file at path? */
static bool authdb_same_file(const char *path, const struct stat *st)
{
	return authdb_users != NULL && authdb_path != NULL &&
		strcmp(authdb_path, path) == 0 &&
		st->st_ino == authdb_stat.st_ino &&
		st->st_dev == authdb_stat.st_dev &&
		st->st_size == authdb_stat.st_size &&
		st->st_mtim.tv_sec == authdb_stat.st_mtim.tv_sec &&
		st->st_mtim.tv_nsec == authdb_stat.st_mtim.tv_nsec;
}

/* authdb_refresh - (re)load the users file if it changed; lock held */
static int authdb_refresh(const char *path)
{
	struct userdb *db;
	struct stat st;
	char *error;

	if (stat(path, &st) < 0) {
		log_error("users file %s: %s", path, strerror(errno));
		return -1;
	}
	if (authdb_same_file(path, &st))
		return 0;
	if (userdb_load(path, USERDB_LOAD_DEFAULT, &db, &error) < 0) {
		/* keep serving the old version if we have one */
		log_error("%s", error);
		free(error);
		return authdb_users != NULL &&
			strcmp(authdb_path, path) == 0 ? 0 : -1;
	}
	userdb_free(&authdb_users);
	free(authdb_path);
	authdb_users = db;
	authdb_path = mem_strdup(path);
	authdb_stat = st;
	log_info("users file %s loaded: %zu users", path, userdb_count(db));
	return 0;
}

/* authdb_dummy - a hash no password matches (same scheme and cost as new
   hashes), for unknown users; lock held */
static const char *authdb_dummy(void)
{
	const char *error;

	if (authdb_dummy_hash == NULL &&
	    password_hash("clustermail-unknown-user", PASSWORD_SCHEME_DEFAULT,
			  &authdb_dummy_hash, &error) < 0) {
		log_error("cannot make the dummy password hash: %s", error);
		return NULL;
	}
	return authdb_dummy_hash;
}

/* authdb_lookup - copy the user's hash (or the dummy) under the lock */
static enum authdb_result authdb_lookup(const char *users_file,
					const char *address, char **hash_r,
					char **user_r)
{
	const struct userdb_user *user;
	const char *dummy;

	*hash_r = NULL;
	*user_r = NULL;
	pthread_mutex_lock(&authdb_lock);
	if (authdb_refresh(users_file) < 0) {
		pthread_mutex_unlock(&authdb_lock);
		return AUTHDB_TEMPFAIL;
	}
	user = userdb_lookup(authdb_users, address);
	if (user != NULL) {
		*hash_r = mem_strdup(user->hash);
		*user_r = mem_strdup(user->address);
	} else if ((dummy = authdb_dummy()) != NULL) {
		*hash_r = mem_strdup(dummy);
	}
	pthread_mutex_unlock(&authdb_lock);
	return *hash_r != NULL ? AUTHDB_OK : AUTHDB_TEMPFAIL;
}

enum authdb_result authdb_verify(const char *users_file, const char *address,
				 const char *password, char **user_r,
				 const char **reason_r)
{
	char *hash, *user;
	const char *error;
	int ret;

	*user_r = NULL;
	*reason_r = "unknown user";
	if (authdb_lookup(users_file, address, &hash, &user) < 0) {
		*reason_r = "users file unavailable";
		return AUTHDB_TEMPFAIL;
	}
	ret = password_verify(password, hash, &error);
	free(hash);
	if (user == NULL)
		return AUTHDB_FAILED;	/* after the dummy check, on purpose */
	if (ret < 0) {
		*reason_r = error;
		free(user);
		return AUTHDB_FAILED;
	}
	if (ret == 0) {
		*reason_r = "wrong password";
		free(user);
		return AUTHDB_FAILED;
	}
	*reason_r = "ok";
	*user_r = user;
	return AUTHDB_OK;
}

int authdb_verify_job(void *arg)
{
	struct authdb_verify_job *job = arg;

	job->result = authdb_verify(job->users_file, job->address,
				    job->password, &job->user, &job->reason);
	return 0;
}

int authdb_user_exists(const char *users_file, const char *address)
{
	char *lower = str_lcase(mem_strdup(address));
	int ret;

	pthread_mutex_lock(&authdb_lock);
	if (authdb_refresh(users_file) < 0)
		ret = -1;
	else
		ret = userdb_lookup(authdb_users, lower) != NULL ? 1 : 0;
	pthread_mutex_unlock(&authdb_lock);
	free(lower);
	return ret;
}

/* authdb_failure_find - the entry of ip, or NULL; lock held */
static struct authdb_failure *authdb_failure_find(const char *ip, time_t now)
{
	for (size_t i = 0; i < AUTHDB_FAILURE_TABLE_SIZE; i++) {
		struct authdb_failure *f = &authdb_failures[i];

		if (f->count == 0 || strcmp(f->ip, ip) != 0)
			continue;
		if (now - f->window_start >= AUTHDB_FAILURE_WINDOW_SECS) {
			f->count = 0;
			return NULL;
		}
		return f;
	}
	return NULL;
}

bool authdb_ip_blocked(const char *ip, unsigned int max_failures)
{
	struct authdb_failure *f;
	bool blocked;

	if (max_failures == 0)
		return false;
	pthread_mutex_lock(&authdb_lock);
	f = authdb_failure_find(ip, time(NULL));
	blocked = f != NULL && f->count >= max_failures;
	pthread_mutex_unlock(&authdb_lock);
	return blocked;
}

void authdb_ip_failed(const char *ip)
{
	time_t now = time(NULL);
	struct authdb_failure *f, *slot = NULL;

	pthread_mutex_lock(&authdb_lock);
	f = authdb_failure_find(ip, now);
	if (f == NULL) {
		/* a free or expired entry, else the oldest one */
		for (size_t i = 0; i < AUTHDB_FAILURE_TABLE_SIZE; i++) {
			struct authdb_failure *e = &authdb_failures[i];

			if (e->count == 0 ||
			    now - e->window_start >= AUTHDB_FAILURE_WINDOW_SECS) {
				slot = e;
				break;
			}
			if (slot == NULL || e->window_start < slot->window_start)
				slot = e;
		}
		f = slot;
		snprintf(f->ip, sizeof(f->ip), "%s", ip);
		f->window_start = now;
		f->count = 0;
	}
	f->count++;
	pthread_mutex_unlock(&authdb_lock);
}

void authdb_reset(void)
{
	pthread_mutex_lock(&authdb_lock);
	userdb_free(&authdb_users);
	MEM_FREE(&authdb_path);
	MEM_FREE(&authdb_dummy_hash);
	memset(authdb_failures, 0, sizeof(authdb_failures));
	pthread_mutex_unlock(&authdb_lock);
}
