/*
 * tls.c - every OpenSSL call of the daemon: contexts, handshakes and the TLS transport.
 *
 * The TLS transport reads and writes through an SSL object over the connection's
 * non-blocking fd. It serves three cases the same way: client-side TLS that we
 * terminate, Redis upstream TLS that we start, and the Postgres upstream TLS session
 * that libpq negotiated and we adopt after PQconnectPoll says OK (its BIO is libpq's
 * and reads the same fd; the PGconn stays alive until the session ends).
 *
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets the relay compact its buffer between a
 * write that would block and its retry; ENABLE_PARTIAL_WRITE lets a large write return
 * after each record, like send() does.
 */
#include <errno.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include "proxy/core/sy.h"

static int tls_fail(sy_conn_t *c, int r, int *want)
{
    int e = SSL_get_error(c->ssl, r);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *want = UV_READABLE;
        return SY_EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = UV_WRITABLE;
        return SY_EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL: {
        unsigned long le = ERR_get_error();
        if (le != 0) {
            c->tls_err = ERR_reason_error_string(le);
            ERR_clear_error();
            return -EPROTO;
        }
        if (errno == 0 || errno == EAGAIN)
            return 0;   /* EOF without close_notify: treat as EOF */
        return -errno;
    }
    default: {
        unsigned long le = ERR_get_error();
        c->tls_err = le ? ERR_reason_error_string(le) : "TLS error";
        ERR_clear_error();
        return -EPROTO;
    }
    }
}

static ssize_t tls_read(sy_conn_t *c, void *buf, size_t len)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    return tls_fail(c, n, &c->rd_wait);
}

static ssize_t tls_write(sy_conn_t *c, const void *buf, size_t len)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int r = tls_fail(c, n, &c->wr_wait);
    return r == 0 ? -EPIPE : r;
}

/* Input the TLS session holds (decrypted or not) that no socket event will announce. */
static int tls_has_pending(sy_conn_t *c)
{
    return c->ssl != NULL && SSL_has_pending(c->ssl);
}

const sy_transport_t sy_tls_transport = { tls_read, tls_write, "tls", tls_has_pending };

int sy_tls_init(void)
{
    /* No atexit cleanup: a thread-pool probe or move may still be inside libpq/OpenSSL
     * when the process exits, and tearing OpenSSL down under it crashes. */
    return OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL) == 1 ? 0 : -1;
}

static void err_text(char *err, size_t errlen, const char *what)
{
    unsigned long le = ERR_get_error();
    snprintf(err, errlen, "%s: %s", what, le ? ERR_reason_error_string(le) : "unknown error");
    ERR_clear_error();
}

SSL_CTX *sy_tls_server_ctx(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        err_text(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        err_text(err, errlen, "cannot load tls_cert");
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        err_text(err, errlen, "cannot load tls_key");
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        err_text(err, errlen, "tls_key does not match tls_cert");
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *sy_tls_client_ctx(const char *ca_file, const char *cert, const char *key,
                           int insecure, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        err_text(err, errlen, "SSL_CTX_new");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            err_text(err, errlen, "cannot load the CA file");
            goto fail;
        }
    }
    if (cert != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
            err_text(err, errlen, "cannot load the client certificate");
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1) {
            err_text(err, errlen, "cannot load the client key");
            goto fail;
        }
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void tls_modes(SSL *ssl)
{
    SSL_set_mode(ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
}

int sy_tls_attach(sy_conn_t *c, SSL_CTX *ctx, int server, const char *host)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return -1;
    if (SSL_set_fd(ssl, c->fd) != 1) {
        SSL_free(ssl);
        return -1;
    }
    tls_modes(ssl);
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (host != NULL && host[0] != '\0') {
            struct in6_addr a6;
            struct in_addr a4;
            int is_ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
            if (!is_ip)
                SSL_set_tlsext_host_name(ssl, host);
            X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
            X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1
                      : X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1) {
                SSL_free(ssl);
                return -1;
            }
        }
    }
    c->ssl = ssl;
    c->ssl_owned = 1;
    c->tp = &sy_tls_transport;
    return 0;
}

void sy_tls_adopt(sy_conn_t *c, SSL *ssl)
{
    tls_modes(ssl);
    c->ssl = ssl;
    c->ssl_owned = 0;
    c->tp = &sy_tls_transport;
}

int sy_tls_handshake(sy_conn_t *c)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        c->rd_wait = UV_READABLE;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->rd_wait = UV_WRITABLE;
        return 0;
    }
    unsigned long le = ERR_get_error();
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        /* One loop thread: a static buffer is enough for the message of the moment. */
        static char verr[256];
        snprintf(verr, sizeof(verr), "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        c->tls_err = verr;
    }
    else if (le != 0)
        c->tls_err = ERR_reason_error_string(le);
    else
        c->tls_err = "connection closed during the TLS handshake";
    ERR_clear_error();
    return -1;
}

int sy_tls_pending(sy_conn_t *c)
{
    return c->ssl ? SSL_pending(c->ssl) : 0;
}


int sy_secret_equal(const char *want, const void *got, size_t len)
{
    /* Compare len bytes of both whatever the lengths (nothing to learn from an early
     * exit); the length itself is not a secret worth hiding. */
    size_t wl = strlen(want);
    int same = CRYPTO_memcmp(wl >= len ? want : got, got, len) == 0;
    return same && wl == len;
}
