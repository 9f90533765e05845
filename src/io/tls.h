#ifndef CM_TLS_H
#define CM_TLS_H
/*
 * tls - OpenSSL 3 contexts for connections.
 *
 * A tls_context wraps an SSL_CTX and is reference counted, so that SIGHUP
 * can load a new certificate and swap it in for new connections while
 * existing connections keep the one they started with.
 *
 * Defaults: TLS 1.2 minimum, OpenSSL's default cipher list, no compression,
 * no renegotiation, session tickets on.
 */
#include <stdbool.h>

struct tls_context;
typedef struct ssl_ctx_st SSL_CTX;

/* Server context from PEM files (the key may be in cert_file when
   key_file is NULL). The key must match the certificate. Returns NULL with
   a reason in *error_r (valid until the next tls_* call in this thread). */
struct tls_context *tls_context_create_server(const char *cert_file,
					      const char *key_file,
					      const char **error_r);
/* Client context. ca_file NULL = the system's default CA store; verify
   false = accept any certificate (opportunistic STARTTLS, tests). */
struct tls_context *tls_context_create_client(const char *ca_file,
					      bool verify,
					      const char **error_r);
void tls_context_ref(struct tls_context *tls);
/* Drop a reference; frees on the last one; sets *tls = NULL. */
void tls_context_unref(struct tls_context **tls);
bool tls_context_is_server(const struct tls_context *tls);
/* The SSL_CTX inside (borrowed). */
SSL_CTX *tls_context_ssl_ctx(const struct tls_context *tls);

#endif
