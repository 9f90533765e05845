/*
 * main.c - clustermaild: start-up, signals, reload and drain.
 *
 * Start-up order matters and is the same on every start:
 *   1. parse and validate the whole configuration (exit 78 on any error,
 *      before touching anything), load the TLS certificate;
 *   2. unless --foreground, detach; the parent waits until the daemon
 *      says it is ready (or dies) and exits 0 only then, so an init system
 *      or the OCF agent knows the ports are open when start returns;
 *   3. take the pid file lock (one daemon per node), bind every listener,
 *      the metrics endpoint and the control socket - all as root;
 *   4. drop to mail_user, then start the pool, the loops and the workers.
 *
 * Signals are blocked in every thread and read from a signalfd on the
 * main loop: SIGTERM/SIGINT drain (stop accepting, let sessions finish for
 * up to shutdown_timeout, then close the rest), a second one ends at once;
 * SIGHUP reloads the configuration and the TLS certificate.
 */
#include "lib/lib.h"
#include "lib/buffer.h"
#include "lib/net.h"
#include "lib/str.h"
#include "lib/settings.h"
#include "lib/privilege.h"
#include "io/connection.h"
#include "io/ioloop.h"
#include "io/iopool.h"
#include "io/tls.h"
#include "lock/lock.h"
#include "maildir/store.h"
#include "queue/queue.h"
#include "queue/runner.h"
#include "queue/transport.h"
#include "daemon.h"

#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_CONFIG 78		/* EX_CONFIG */
#define MAIN_DRAIN_CHECK_MSECS 50
#define IOPOOL_THREADS 4

struct main_state {
	const char *config_path;
	const char *node_arg;		/* --node, or NULL */
	bool foreground;
	bool check_config;
	char *node_name;		/* fixed at start */
	time_t start_time;
	atomic_bool draining;

	struct iopool *pool;
	struct ioloop *loop;
	/* The mail store: one lock client and one store for the process
	   (the store is immutable and shared by the workers). NULL when the
	   spool or the lock backend was unavailable at start. */
	struct lock_client *locks;
	struct store *store;
	/* The outbound queue on the same spool and lock client, and whether
	   its runner threads run; both set up with the store. */
	struct queue *queue;
	bool runner_started;
	pthread_t runner_stop_thread;
	bool runner_stopping;
	atomic_bool runner_stopped;
	char *store_spool_dir;		/* spool_dir at start (restart-only) */
	int listen_fds[SETTINGS_SERVICE_COUNT];
	int metrics_fd, control_fd, pid_fd, ready_fd;
	char *control_path, *pid_path;

	int signal_fd;
	struct io_request signal_req;
	struct signalfd_siginfo siginfo;
	struct io_request drain_timer;
	uint64_t drain_deadline;
	bool aborted, stopping;
};

static struct main_state main_state = {
	.metrics_fd = -1, .control_fd = -1, .pid_fd = -1, .ready_fd = -1,
	.signal_fd = -1,
};

static pthread_mutex_t main_config_lock = PTHREAD_MUTEX_INITIALIZER;
static struct daemon_config *main_config;	/* current snapshot */

time_t daemon_start_time(void) { return main_state.start_time; }
bool daemon_is_draining(void) { return atomic_load(&main_state.draining); }
const char *daemon_node_name(void) { return main_state.node_name; }
static pthread_mutex_t main_store_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_uintptr_t main_queue_ready;	/* the queue once it exists */
static atomic_uintptr_t main_store_ready;	/* the store once it exists */
static uint64_t main_store_retry_msecs;		/* next retry (under lock) */
static void main_store_setup(const struct settings *set);

struct daemon_config *daemon_config_get(void)
{
	struct daemon_config *config;

	pthread_mutex_lock(&main_config_lock);
	config = main_config;
	atomic_fetch_add(&config->refcount, 1);
	pthread_mutex_unlock(&main_config_lock);
	return config;
}

void daemon_config_put(struct daemon_config **configp)
{
	struct daemon_config *config = *configp;

	*configp = NULL;
	if (config == NULL || atomic_fetch_sub(&config->refcount, 1) != 1)
		return;
	settings_free(&config->set);
	if (config->tls != NULL)
		tls_context_unref(&config->tls);
	free(config);
}

/* main_config_create - a snapshot owning set, with its TLS context loaded;
   NULL with *error_r (caller frees) if the certificate cannot be loaded */
static struct daemon_config *main_config_create(struct settings *set,
						char **error_r)
{
	struct daemon_config *config;
	struct tls_context *tls = NULL;
	const char *error;

	if (set->tls_cert != NULL) {
		tls = tls_context_create_server(set->tls_cert, set->tls_key, &error);
		if (tls == NULL) {
			*error_r = mem_printf("tls_cert %s / tls_key %s: %s",
					      set->tls_cert, set->tls_key, error);
			return NULL;
		}
	}
	config = mem_zalloc(sizeof(*config));
	atomic_init(&config->refcount, 1);
	config->set = set;
	config->tls = tls;
	return config;
}

/* main_config_swap - make config current; drops our ref to the old one */
static void main_config_swap(struct daemon_config *config)
{
	struct daemon_config *old;

	pthread_mutex_lock(&main_config_lock);
	old = main_config;
	config->generation = old == NULL ? 1 : old->generation + 1;
	main_config = config;
	pthread_mutex_unlock(&main_config_lock);
	daemon_config_put(&old);
}

int daemon_reload(uint64_t *generation_r, char **error_r)
{
	struct settings *set;
	struct daemon_config *config, *old;
	char *error, *restart_keys;

	/* The same node selection as at start (--node or the host name), not
	   node_name: a file may set node_name to something else. */
	if (settings_load(main_state.config_path, main_state.node_arg, &set,
			  &error) < 0) {
		*error_r = mem_printf("reload failed, keeping the running "
				      "configuration: %s", error);
		free(error);
		return -1;
	}
	config = main_config_create(set, &error);
	if (config == NULL) {
		*error_r = mem_printf("reload failed, keeping the running "
				      "configuration: %s", error);
		free(error);
		settings_free(&set);
		return -1;
	}
	old = daemon_config_get();
	restart_keys = settings_restart_only_changes(old->set, set);
	if (restart_keys != NULL) {
		log_warn("reload: %s changed; this takes effect only at restart",
			 restart_keys);
		free(restart_keys);
	}
	daemon_config_put(&old);
	log_set_level(set->log_level);
	main_config_swap(config);
	*generation_r = config->generation;
	log_info("configuration reloaded (generation %llu)%s",
		 (unsigned long long)config->generation,
		 config->tls != NULL ? ", TLS certificate reloaded" : "");
	return 0;
}

/* main_usage - print usage to out */
static void main_usage(FILE *out)
{
	fprintf(out,
		"usage: clustermaild [-c FILE] [--foreground] [--node NAME]\n"
		"       clustermaild [-c FILE] [--node NAME] --check-config\n"
		"       clustermaild --version\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -f, --foreground    do not detach; log to stderr\n"
		"  -n, --node NAME     act as this node (default: the host's short name)\n"
		"  -t, --check-config  validate the configuration and TLS files, then exit\n"
		"  -V, --version       print the version and exit\n"
		"\nSee clustermaild(8) and clustermail.conf(5).\n",
		SETTINGS_DEFAULT_PATH);
}

/* main_parse_args - command line; exits on --help/--version/bad usage */
static void main_parse_args(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "node", required_argument, NULL, 'n' },
		{ "check-config", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;

	main_state.config_path = SETTINGS_DEFAULT_PATH;
	while ((opt = getopt_long(argc, argv, "c:fn:tVh", options, NULL)) != -1) {
		switch (opt) {
		case 'c': main_state.config_path = optarg; break;
		case 'f': main_state.foreground = true; break;
		case 'n': main_state.node_arg = optarg; break;
		case 't': main_state.check_config = true; break;
		case 'V': printf("clustermaild %s\n", PACKAGE_VERSION); exit(0);
		case 'h': main_usage(stdout); exit(0);
		default: main_usage(stderr); exit(64);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "clustermaild: unexpected argument '%s'\n", argv[optind]);
		main_usage(stderr);
		exit(64);
	}
}

/* main_load_config - settings and TLS; exit 78 with the reason on error */
static void main_load_config(void)
{
	struct settings *set;
	struct daemon_config *config;
	char *error;

	if (settings_load(main_state.config_path, main_state.node_arg, &set,
			  &error) < 0) {
		fprintf(stderr, "clustermaild: %s\n", error);
		free(error);
		exit(EXIT_CONFIG);
	}
	config = main_config_create(set, &error);
	if (config == NULL) {
		fprintf(stderr, "clustermaild: %s\n", error);
		free(error);
		settings_free(&set);
		exit(EXIT_CONFIG);
	}
	main_state.node_name = mem_strdup(set->node_name);
	main_config_swap(config);
}

/* main_detach - fork into the background; the parent exits once the child
   reports ready (status 0) or dies (status 1) */
static void main_detach(void)
{
	int ready_pipe[2];
	pid_t pid;
	char byte;

	if (pipe2(ready_pipe, O_CLOEXEC) < 0)
		log_fatal("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		log_fatal("fork: %s", strerror(errno));
	if (pid > 0) {
		close(ready_pipe[1]);
		/* EOF without a byte: the daemon died during start-up and has
		   already said why on stderr. */
		exit(read(ready_pipe[0], &byte, 1) == 1 ? 0 : 1);
	}
	close(ready_pipe[0]);
	if (setsid() < 0)
		log_fatal("setsid: %s", strerror(errno));
	/* Fork again so that we can never reacquire a controlling tty. */
	pid = fork();
	if (pid < 0)
		log_fatal("fork: %s", strerror(errno));
	if (pid > 0)
		_exit(0);
	main_state.ready_fd = ready_pipe[1];
}

/* main_notify_ready - tell the waiting parent; detach stdio */
static void main_notify_ready(const struct settings *set)
{
	int null_fd;

	if (main_state.ready_fd < 0)
		return;
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd >= 0) {
		(void)dup2(null_fd, STDIN_FILENO);
		(void)dup2(null_fd, STDOUT_FILENO);
		/* Nobody reads our stderr once detached: use syslog. */
		if (set->log_target == LOG_TARGET_STDERR)
			log_open("clustermaild", LOG_TARGET_SYSLOG);
		(void)dup2(null_fd, STDERR_FILENO);
		close(null_fd);
	}
	if (write(main_state.ready_fd, "", 1) != 1)
		log_warn("cannot tell the parent process that we are ready");
	close(main_state.ready_fd);
	main_state.ready_fd = -1;
}

/* main_make_parent_dir - create the directory holding path if missing;
   returns 1 if created, 0 if it existed */
static int main_make_parent_dir(const char *path)
{
	char *copy = mem_strdup(path);
	const char *dir = dirname(copy);
	int ret = 0;

	if (mkdir(dir, 0755) == 0)
		ret = 1;
	else if (errno != EEXIST)
		log_fatal("mkdir %s: %s", dir, strerror(errno));
	free(copy);
	return ret;
}

/* main_lock_pid_file - one daemon per node: an OFD lock on the pid file */
static void main_lock_pid_file(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char text[32];
	int fd, len;

	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		log_fatal("pid file %s: %s", path, strerror(errno));
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		ssize_t n = read(fd, text, sizeof(text) - 1);

		text[n > 0 ? n : 0] = '\0';
		log_fatal("another clustermaild is running for node %s (pid file "
			  "%s: pid %s)", main_state.node_name, path, str_trim(text));
	}
	len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, text, (size_t)len, 0) != len)
		log_fatal("pid file %s: write: %s", path, strerror(errno));
	main_state.pid_fd = fd;		/* keep open: it holds the lock */
	main_state.pid_path = mem_strdup(path);
}

/* main_bind - every listener, the metrics endpoint, the control socket */
static void main_bind(const struct settings *set)
{
	const char *error;

	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		main_state.listen_fds[i] = -1;
		if (!set->listen[i].enabled)
			continue;
		main_state.listen_fds[i] = net_listen_tcp(&set->listen[i].addr, 512, &error);
		if (main_state.listen_fds[i] < 0)
			log_fatal("%s: %s", settings_service_key((enum settings_service)i), error);
	}
	if (set->metrics_listen.enabled) {
		main_state.metrics_fd = net_listen_tcp(&set->metrics_listen.addr, 64, &error);
		if (main_state.metrics_fd < 0)
			log_fatal("metrics_listen: %s", error);
	}
	main_state.control_fd = net_listen_unix(set->control_socket, 0660, 64, &error);
	if (main_state.control_fd < 0)
		log_fatal("control_socket: %s", error);
	main_state.control_path = mem_strdup(set->control_socket);
}

/* main_close_listeners - release the ports (once nobody accepts on them) */
static void main_close_listeners(void)
{
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		if (main_state.listen_fds[i] >= 0) {
			close(main_state.listen_fds[i]);
			main_state.listen_fds[i] = -1;
		}
	}
}

static void main_close_store(void);

/* main_runner_stop_thread - runner_stop() joins threads that may be in
   the middle of an SMTP transaction: not on the main loop, which must
   keep serving lock dispatches and signals meanwhile */
static void *main_runner_stop_main(void *context ATTR_UNUSED)
{
	runner_stop();
	atomic_store(&main_state.runner_stopped, true);
	return NULL;
}

/* main_runner_stop_begin - at drain: no new deliveries (main loop) */
static void main_runner_stop_begin(void)
{
	int ret;

	pthread_mutex_lock(&main_store_lock);
	if (!main_state.runner_started || main_state.runner_stopping) {
		pthread_mutex_unlock(&main_store_lock);
		return;
	}
	main_state.runner_stopping = true;
	pthread_mutex_unlock(&main_store_lock);
	ret = pthread_create(&main_state.runner_stop_thread, NULL,
			     main_runner_stop_main, NULL);
	if (ret != 0) {
		log_warn("queue runner: stop thread: %s; stopping inline",
			 strerror(ret));
		runner_stop();
		atomic_store(&main_state.runner_stopped, true);
		main_state.runner_stopping = false;
	}
}

/* main_runner_stop_done - the runner is gone (or never ran) */
static bool main_runner_stop_done(void)
{
	if (!main_state.runner_started)
		return true;
	if (!atomic_load(&main_state.runner_stopped))
		return false;
	if (main_state.runner_stopping) {
		pthread_join(main_state.runner_stop_thread, NULL);
		main_state.runner_stopping = false;
	}
	return true;
}

/* main_drain_check - drive the shutdown to its end, one step per tick */
static void main_drain_check(struct io_request *req, int result)
{
	if (workers_accepting() == 0)
		main_close_listeners();
	if (!main_state.aborted &&
	    (workers_running() > 0 || !main_runner_stop_done()) &&
	    ioloop_now_msecs() >= main_state.drain_deadline) {
		log_warn("shutdown_timeout reached: closing %u remaining connections",
			 metrics_connections_total_current());
		workers_abort();
		/* Outbound transactions end too; their mail stays queued. */
		transport_abort_all();
		main_state.aborted = true;
	}
	if (workers_running() == 0 && !main_state.stopping &&
	    main_runner_stop_done()) {
		/* Workers are gone: now stop the main loop's own services
		   (the cluster thread first: it posts to the workers). */
		notify_stop();
		workers_join();
		main_close_store();
		main_state.stopping = true;
		control_stop();
		http_stop();
		connection_abort_all("server shutting down");
		if (io_request_is_pending(&main_state.signal_req))
			io_cancel(main_state.loop, &main_state.signal_req);
	}
	if (main_state.stopping && ioloop_pending_count(main_state.loop) == 0) {
		ioloop_stop(main_state.loop);
		return;
	}
	io_timeout(main_state.loop, &main_state.drain_timer, MAIN_DRAIN_CHECK_MSECS);
}

/* main_drain - SIGTERM/SIGINT: stop accepting, let sessions finish */
static void main_drain(int signo)
{
	struct daemon_config *config;

	if (atomic_load(&main_state.draining)) {
		if (!main_state.aborted) {
			log_notice("%s again: closing all connections now", strsignal(signo));
			workers_abort();
			main_state.aborted = true;
		}
		return;
	}
	config = daemon_config_get();
	main_state.drain_deadline = ioloop_now_msecs() +
		config->set->shutdown_timeout_msecs;
	log_info("%s: draining %u connections (up to %llu ms)", strsignal(signo),
		 metrics_connections_total_current(),
		 (unsigned long long)config->set->shutdown_timeout_msecs);
	daemon_config_put(&config);
	atomic_store(&main_state.draining, true);
	workers_drain();
	main_runner_stop_begin();
	io_timeout(main_state.loop, &main_state.drain_timer, 0);
}

static void main_signal_read(void);

/* main_signal - a signal arrived through the signalfd */
static void main_signal(struct io_request *req, int result)
{
	char *error = NULL;
	uint64_t generation;

	if (result == -ECANCELED || main_state.stopping)
		return;
	if (result != (int)sizeof(main_state.siginfo)) {
		log_error("signalfd read: %s", result < 0 ? strerror(-result) : "short read");
	} else if (main_state.siginfo.ssi_signo == SIGHUP) {
		if (daemon_reload(&generation, &error) < 0) {
			log_error("SIGHUP: %s", error);
			free(error);
		}
	} else {
		main_drain((int)main_state.siginfo.ssi_signo);
	}
	main_signal_read();
}

static void main_signal_read(void)
{
	io_read(main_state.loop, &main_state.signal_req, main_state.signal_fd,
		&main_state.siginfo, sizeof(main_state.siginfo), 0);
}

/* main_block_signals - route our signals to a signalfd, before any thread
   starts (threads inherit the mask) */
static void main_block_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		log_fatal("pthread_sigmask failed");
	main_state.signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (main_state.signal_fd < 0)
		log_fatal("signalfd: %s", strerror(errno));
}

/* main_log_started - one line that says what this daemon serves */
static void main_log_started(const struct settings *set, unsigned int workers)
{
	struct buffer listeners;

	buffer_init(&listeners, 0);
	for (int i = 0; i < SETTINGS_SERVICE_COUNT; i++) {
		if (set->listen[i].enabled)
			buffer_printf(&listeners, " %s=%s",
				      settings_service_name((enum settings_service)i),
				      set->listen[i].spec);
	}
	if (set->metrics_listen.enabled)
		buffer_printf(&listeners, " metrics=%s", set->metrics_listen.spec);
	log_info("clustermaild %s started: node %s, %u workers, lock backend %s,"
		 " spool %s, listening:%s", PACKAGE_VERSION, set->node_name, workers,
		 settings_lock_backend_name(set->lock_backend), set->spool_dir,
		 listeners.used > 0 ? buffer_cstr(&listeners) : " (no protocol listeners)");
	buffer_clear(&listeners);
}

/* main_create_loop - signals, the blocking pool and the main loop */
static void main_create_loop(void)
{
	struct ioloop_settings loop_set = { .name = "main" };

	main_block_signals();
	main_state.pool = iopool_create(IOPOOL_THREADS);
	loop_set.pool = main_state.pool;
	main_state.loop = ioloop_create(&loop_set);
}

/* main_spool_usable - the spool must exist: we never create it (an
   unmounted cluster file system must not be replaced by an empty local
   directory) */
static bool main_spool_usable(const struct settings *set)
{
	/* Said once at error level; the retries (one a second at most,
	   under main_store_lock) only at debug level. */
	static bool warned;
	struct stat st;

	if (stat(set->spool_dir, &st) < 0) {
		log_msg(warned ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR, NULL,
			"spool_dir %s: %s%s; IMAP logins fail until it is "
			"available", set->spool_dir, strerror(errno),
			errno == ENOENT ? " (is its file system mounted?)" : "");
		warned = true;
		return false;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("spool_dir %s: not a directory", set->spool_dir);
		return false;
	}
	return true;
}

/* main_start_locks - the lock client (dlm: as root, before the drop;
   fcntl: after it, so that SPOOL/.locks belongs to mail_user) */
static void main_start_locks(const struct settings *set)
{
	struct lock_client_settings lock_set = {
		.backend = set->lock_backend,
		.spool_dir = set->spool_dir,
		.dispatch_loop = main_state.loop,
		.pool = main_state.pool,
	};
	char *error;

	if (set->lock_backend == SETTINGS_LOCK_FCNTL && !main_spool_usable(set))
		return;
	main_state.locks = lock_client_create(&lock_set, &error);
	if (main_state.locks == NULL) {
		log_error("%s; IMAP logins fail until it is available", error);
		free(error);
	}
}

/* main_start_lock_keeper - the DLM lockspace outlives us unless a root
   process releases it after we exit (lock_client_start_keeper()) */
static void main_start_lock_keeper(void)
{
	char *error;

	if (main_state.locks == NULL)
		return;
	if (lock_client_start_keeper(main_state.locks, &error) < 0) {
		log_warn("%s; the lockspace stays after this daemon stops "
			 "(dlm_tool leave removes it)", error);
		free(error);
	}
}

/* main_open_store - the process's store on the spool */
static void main_open_store(const struct settings *set)
{
	struct store_settings store_set = {
		.spool_dir = set->spool_dir,
		.node_name = set->node_name,
		.locks = main_state.locks,
		.lock_cache_hold_msecs = set->lock_cache_hold_msecs,
		.changed = notify_mailbox_changed,
	};

	if (main_state.locks == NULL || !main_spool_usable(set))
		return;
	main_state.store = store_create(&store_set);
	if (main_state.store == NULL)
		log_error("cannot open the mail store in %s", set->spool_dir);
}

/* main_runner_config_get - the runner's view of daemon_config_get() */
static const struct settings *main_runner_config_get(void **ref_r)
{
	struct daemon_config *config = daemon_config_get();

	*ref_r = config;
	return config->set;
}

static void main_runner_config_put(void *ref)
{
	struct daemon_config *config = ref;

	daemon_config_put(&config);
}

/* main_open_queue - the outbound queue on the store's spool and its
   runner (store lock held; after the privilege drop: the queue's
   directories belong to mail_user) */
static void main_open_queue(const struct settings *set)
{
	struct queue_settings queue_set = {
		.spool_dir = set->spool_dir,
		.node_name = set->node_name,
		.locks = main_state.locks,
	};
	struct runner_settings runner_set = {
		.store = main_state.store,
		.locks = main_state.locks,
		.config_get = main_runner_config_get,
		.config_put = main_runner_config_put,
	};
	char *error;

	if (main_state.store == NULL || main_state.queue != NULL ||
	    daemon_is_draining())
		return;
	main_state.queue = queue_create(&queue_set, &error);
	if (main_state.queue == NULL) {
		log_error("outbound queue: %s; remote recipients are refused "
			  "until a restart", error);
		free(error);
		return;
	}
	runner_set.queue = main_state.queue;
	if (runner_start(&runner_set) == 0)
		main_state.runner_started = true;
	atomic_store(&main_queue_ready, (uintptr_t)main_state.queue);
}

/* main_store_setup - locks (unless dlm, done as root), store and queue;
   the store is published for daemon_store(), the queue for
   daemon_queue() */
static void main_store_setup(const struct settings *set)
{
	if (main_state.locks == NULL && set->lock_backend != SETTINGS_LOCK_DLM)
		main_start_locks(set);
	main_open_store(set);
	if (main_state.store != NULL)
		atomic_store(&main_store_ready, (uintptr_t)main_state.store);
	main_open_queue(set);
}

struct queue *daemon_queue(void)
{
	struct queue *queue = (struct queue *)atomic_load(&main_queue_ready);

	if (queue != NULL || daemon_is_draining())
		return queue;
	/* Same late start as the store (the spool was not mounted). */
	if (daemon_store() == NULL)
		return NULL;
	return (struct queue *)atomic_load(&main_queue_ready);
}

struct lock_client *daemon_lock_client(void)
{
	/* Set before the store is published and kept until it is gone. */
	return daemon_store() == NULL ? NULL : main_state.locks;
}

struct store *daemon_store(void)
{
	struct store *store = (struct store *)atomic_load(&main_store_ready);
	struct daemon_config *config;

	if (store != NULL || daemon_is_draining())
		return store;
	/* The spool was missing at start (file system not mounted yet):
	   try again, at most once per second, as logins come in. */
	pthread_mutex_lock(&main_store_lock);
	if (main_state.store == NULL && !main_state.stopping &&
	    ioloop_now_msecs() >= main_store_retry_msecs) {
		main_store_retry_msecs = ioloop_now_msecs() + 1000;
		config = daemon_config_get();
		main_store_setup(config->set);
		daemon_config_put(&config);
		if (main_state.store != NULL)
			log_info("mail store in %s is available now",
				 main_state.store_spool_dir);
	}
	store = main_state.store;
	pthread_mutex_unlock(&main_store_lock);
	return store;
}

/* main_close_store - after the workers are gone (main loop thread) */
static void main_close_store(void)
{
	pthread_mutex_lock(&main_store_lock);
	atomic_store(&main_store_ready, (uintptr_t)0);
	atomic_store(&main_queue_ready, (uintptr_t)0);
	pthread_mutex_unlock(&main_store_lock);
	/* The runner was stopped by the drain (main_runner_stop_done()). */
	if (main_state.queue != NULL)
		queue_destroy(&main_state.queue);
	if (main_state.store != NULL)
		store_destroy(&main_state.store);
	if (main_state.locks != NULL)
		lock_client_destroy(&main_state.locks);
}

/* main_start - everything between detaching and serving */
static void main_start(void)
{
	struct daemon_config *config = daemon_config_get();
	const struct settings *set = config->set;
	bool dlm = set->lock_backend == SETTINGS_LOCK_DLM;

	main_state.store_spool_dir = mem_strdup(set->spool_dir);
	const char *chown_paths[4] = { NULL };
	char *run_dir = NULL;
	unsigned int workers = set->workers;
	int n = 0;

	/* A run directory we create belongs to mail_user, so that the daemon
	   can remove its socket and pid file when it stops. */
	if (main_make_parent_dir(set->control_socket) > 0) {
		char *copy = mem_strdup(set->control_socket);

		run_dir = mem_strdup(dirname(copy));
		chown_paths[n++] = run_dir;
		free(copy);
	}
	(void)main_make_parent_dir(set->pid_file);
	main_lock_pid_file(set->pid_file);
	main_bind(set);
	chown_paths[n++] = set->control_socket;
	chown_paths[n++] = set->pid_file;
	/* Creating a DLM lockspace needs root; everything else runs as
	   mail_user (the loops too, when possible). */
	if (dlm) {
		main_create_loop();
		main_start_locks(set);
		main_start_lock_keeper();
	}
	privilege_drop(set->mail_user, chown_paths);
	free(run_dir);
	if (!dlm)
		main_create_loop();
	pthread_mutex_lock(&main_store_lock);
	main_store_setup(set);
	pthread_mutex_unlock(&main_store_lock);
	io_request_init(&main_state.signal_req, main_signal, NULL);
	io_request_init(&main_state.drain_timer, main_drain_check, NULL);
	main_signal_read();
	if (workers == 0)
		workers = (unsigned int)sysconf(_SC_NPROCESSORS_ONLN);
	workers_start(workers == 0 ? 1 : workers, main_state.listen_fds,
		      main_state.pool);
	{
		char *error = NULL;

		if (notify_start(set, &error) < 0)
			log_fatal("%s", error);
	}
	control_start(main_state.loop, main_state.control_fd);
	if (main_state.metrics_fd >= 0)
		http_start(main_state.loop, main_state.metrics_fd);
	main_log_started(set, workers);
	main_notify_ready(set);
	daemon_config_put(&config);
}

/* main_cleanup - after the main loop ended */
static void main_cleanup(void)
{
	main_close_listeners();
	if (main_state.metrics_fd >= 0)
		close(main_state.metrics_fd);
	close(main_state.control_fd);
	if (unlink(main_state.control_path) < 0 && errno != ENOENT)
		log_warn("unlink %s: %s", main_state.control_path, strerror(errno));
	if (unlink(main_state.pid_path) < 0 && errno != ENOENT)
		log_warn("unlink %s: %s", main_state.pid_path, strerror(errno));
	close(main_state.pid_fd);
	close(main_state.signal_fd);
	ioloop_destroy(&main_state.loop);
	iopool_destroy(&main_state.pool);
	pthread_mutex_lock(&main_config_lock);
	daemon_config_put(&main_config);
	pthread_mutex_unlock(&main_config_lock);
	free(main_state.control_path);
	free(main_state.pid_path);
	free(main_state.store_spool_dir);
	free(main_state.node_name);
}

int main(int argc, char **argv)
{
	log_open("clustermaild", LOG_TARGET_STDERR);
	main_parse_args(argc, argv);
	main_load_config();
	if (main_state.check_config) {
		printf("clustermaild: configuration %s is valid (node %s)\n",
		       main_state.config_path, main_state.node_name);
		pthread_mutex_lock(&main_config_lock);
		daemon_config_put(&main_config);
		pthread_mutex_unlock(&main_config_lock);
		free(main_state.node_name);
		return 0;
	}
	log_set_level(main_config->set->log_level);
	if (main_config->set->log_target == LOG_TARGET_SYSLOG)
		log_open("clustermaild", LOG_TARGET_SYSLOG);
	main_state.start_time = time(NULL);
	if (!main_state.foreground)
		main_detach();
	main_start();
	ioloop_run(main_state.loop);
	main_cleanup();
	log_info("clustermaild stopped");
	return 0;
}
