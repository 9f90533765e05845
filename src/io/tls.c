/*
 * tls.c - reference-counted OpenSSL 3 contexts for connections.
 *
 * A context is built once (at start and on SIGHUP) and shared by every
 * connection that starts TLS while it is current; each connection holds a
 * reference so that a reload never pulls a certificate out from under a
 * session. The SSL objects themselves live in connection.c.
 *
 * Error strings are built in thread-local buffers: several worker threads
 * may report TLS failures at the same time.
 */
#include "lib/lib.h"
#include "tls.h"
#include "io-private.h"

#include <stdatomic.h>
#include <stdio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define TLS_ERROR_MAX 512

struct tls_context {
	SSL_CTX *ssl_ctx;		/* owned */
	bool server;
	atomic_uint refcount;
};

static __thread char tls_reason_buf[TLS_ERROR_MAX];
static __thread char tls_message_buf[TLS_ERROR_MAX];

const char *tls_error_string(const char *fallback)
{
	const char *data = NULL;
	int flags = 0;
	unsigned long code;

	/* The oldest error is the root cause; later ones are the calls
	   that failed because of it. */
	code = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
	if (code == 0) {
		snprintf(tls_reason_buf, sizeof(tls_reason_buf), "%s", fallback);
		return tls_reason_buf;
	}
	ERR_error_string_n(code, tls_reason_buf, sizeof(tls_reason_buf));
	if ((flags & ERR_TXT_STRING) != 0 && data != NULL && data[0] != '\0') {
		size_t len = strlen(tls_reason_buf);

		snprintf(tls_reason_buf + len, sizeof(tls_reason_buf) - len,
			 " (%s)", data);
	}
	ERR_clear_error();
	return tls_reason_buf;
}

/* tls_fail - format *error_r from the OpenSSL error queue */
static void ATTR_FORMAT(2, 3)
tls_fail(const char **error_r, const char *fmt, ...)
{
	char what[TLS_ERROR_MAX / 2];
	va_list args;

	va_start(args, fmt);
	vsnprintf(what, sizeof(what), fmt, args);
	va_end(args);
	snprintf(tls_message_buf, sizeof(tls_message_buf), "%s: %s", what,
		 tls_error_string("unknown OpenSSL error"));
	*error_r = tls_message_buf;
}

/* tls_context_new - an SSL_CTX with our defaults, or NULL */
static struct tls_context *
tls_context_new(bool server, const char **error_r)
{
	struct tls_context *tls;
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (ctx == NULL) {
		tls_fail(error_r, "SSL_CTX_new failed");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		tls_fail(error_r, "cannot set minimum TLS version");
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Compression invites CRIME-style attacks; renegotiation is a DoS
	   lever and a source of historic bugs. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
			    SSL_OP_NO_RENEGOTIATION);
	/* Idle connections (IMAP IDLE) should not each pin 2 x 16 KiB of
	   record buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

	tls = mem_zalloc(sizeof(*tls));
	tls->ssl_ctx = ctx;
	tls->server = server;
	atomic_init(&tls->refcount, 1);
	return tls;
}

struct tls_context *tls_context_create_server(const char *cert_file,
					      const char *key_file,
					      const char **error_r)
{
	struct tls_context *tls = tls_context_new(true, error_r);
	const char *key_path = key_file != NULL ? key_file : cert_file;

	if (tls == NULL)
		return NULL;
	if (SSL_CTX_use_certificate_chain_file(tls->ssl_ctx, cert_file) != 1) {
		tls_fail(error_r, "cannot load certificate chain from %s",
			 cert_file);
	} else if (SSL_CTX_use_PrivateKey_file(tls->ssl_ctx, key_path,
					       SSL_FILETYPE_PEM) != 1) {
		tls_fail(error_r, "cannot load private key from %s", key_path);
	} else if (SSL_CTX_check_private_key(tls->ssl_ctx) != 1) {
		tls_fail(error_r, "private key %s does not match certificate %s",
			 key_path, cert_file);
	} else {
		return tls;
	}
	tls_context_unref(&tls);
	return NULL;
}

struct tls_context *tls_context_create_client(const char *ca_file,
					      bool verify,
					      const char **error_r)
{
	struct tls_context *tls = tls_context_new(false, error_r);
	int ret;

	if (tls == NULL)
		return NULL;
	if (ca_file != NULL)
		ret = SSL_CTX_load_verify_locations(tls->ssl_ctx, ca_file, NULL);
	else
		ret = SSL_CTX_set_default_verify_paths(tls->ssl_ctx);
	if (ret != 1 && (verify || ca_file != NULL)) {
		tls_fail(error_r, "cannot load CA certificates from %s",
			 ca_file != NULL ? ca_file : "the system store");
		tls_context_unref(&tls);
		return NULL;
	}
	ERR_clear_error();
	/* Hostname checks are added per connection (SSL_set1_host), since
	   only the connection knows which name it dialled. */
	SSL_CTX_set_verify(tls->ssl_ctx, verify ? SSL_VERIFY_PEER :
			   SSL_VERIFY_NONE, NULL);
	return tls;
}

void tls_context_ref(struct tls_context *tls)
{
	if (atomic_fetch_add(&tls->refcount, 1) == 0)
		log_panic("tls_context_ref: context already freed");
}

void tls_context_unref(struct tls_context **_tls)
{
	struct tls_context *tls = *_tls;
	unsigned int old;

	if (tls == NULL)
		return;
	*_tls = NULL;
	old = atomic_fetch_sub(&tls->refcount, 1);
	if (old == 0)
		log_panic("tls_context_unref: reference count underflow");
	if (old > 1)
		return;
	SSL_CTX_free(tls->ssl_ctx);
	free(tls);
}

bool tls_context_is_server(const struct tls_context *tls)
{
	return tls->server;
}

SSL_CTX *tls_context_ssl_ctx(const struct tls_context *tls)
{
	return tls->ssl_ctx;
}
