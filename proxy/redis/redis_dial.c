/*
 * redis_dial.c - see redis_dial.h. Replies are framed by the same scanner as the data
 * path (protocol/resp.h), so RESP3 answers (HELLO 3 maps, push confirmations) count right.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <openssl/x509v3.h>
#include "proxy/core/sy.h"
#include "proxy/redis/redis_dial.h"
#include "protocol/resp.h"
#include "protocol/resp_cmd.h"

int sy_redis_roundtrip(int fd, SSL *ssl, const uint8_t *req, size_t len, int n, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < len) {
        ssize_t k = ssl ? SSL_write(ssl, req + off, (int)(len - off)) : send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (k <= 0) {
            snprintf(err, errlen, "write failed");
            return -1;
        }
        off += (size_t)k;
    }
    resp_reply_t rp;
    resp_reply_init(&rp, 1 << 20);
    uint8_t buf[4096];
    while (n > 0) {
        ssize_t k = ssl ? SSL_read(ssl, buf, sizeof(buf)) : recv(fd, buf, sizeof(buf), 0);
        if (k <= 0) {
            snprintf(err, errlen, "connection closed or timed out");
            return -1;
        }
        size_t pos = 0;
        while (pos < (size_t)k && n > 0) {
            int done = 0;
            ssize_t r = resp_reply_scan(&rp, buf + pos, (size_t)k - pos, &done);
            if (r < 0) {
                snprintf(err, errlen, "%s", rp.err);
                return -1;
            }
            pos += (size_t)r;
            if (done) {
                if (rp.type == '-' || rp.type == '!') {
                    snprintf(err, errlen, "%s", rp.first);
                    return -1;
                }
                n--;
            }
        }
    }
    return 0;
}

void sy_redis_hangup(int fd, SSL *ssl)
{
    if (ssl)
        SSL_free(ssl);
    if (fd >= 0)
        close(fd);
}

int sy_redis_dial(const conf_target_t *t, int *fd_out, SSL **ssl_out, char *err, size_t errlen)
{
    const sy_endpoint_t *ep = &t->redis;
    struct addrinfo hints, *res = NULL;
    char port[8];
    int fd = -1;
    SSL *ssl = NULL;
    if (ep->host[0] == '\0') {          /* redis-sentinel://: no sentinel has named the master yet */
        snprintf(err, errlen, "no sentinel answered");
        return -1;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%u", ep->port);
    int r = getaddrinfo(ep->host, port, &hints, &res);
    if (r != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", ep->host, gai_strerror(r));
        return -1;
    }
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        struct timeval tv = { sy_conf()->connect_timeout, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -1;
    if (ep->tls) {
        SSL_CTX *ctx = sy_tls_client_ctx(t->tls_ca_file, t->tls_cert, t->tls_key, t->tls_insecure_skip_verify,
                                         err, errlen);
        if (ctx == NULL)
            goto fail;
        ssl = SSL_new(ctx);
        SSL_CTX_free(ctx);   /* the SSL keeps its own reference */
        if (ssl == NULL) {
            snprintf(err, errlen, "SSL_new failed");
            goto fail;
        }
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, ep->host);
        if (!t->tls_insecure_skip_verify)
            SSL_set1_host(ssl, ep->host);
        if (SSL_connect(ssl) != 1) {
            long vr = SSL_get_verify_result(ssl);
            snprintf(err, errlen, "TLS handshake failed: %s%s",
                     vr != X509_V_OK ? "certificate verify failed: " : "",
                     vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "handshake error");
            goto fail;
        }
    }
    uint8_t req[1200];
    size_t len = 0;
    int n = 0;
    resp_arg_t a[3];
    char db[16];
    if (ep->has_password) {
        int k = 0;
        a[k++] = (resp_arg_t){ "AUTH", 4 };
        if (ep->has_user)
            a[k++] = (resp_arg_t){ ep->user, strlen(ep->user) };
        a[k++] = (resp_arg_t){ ep->password, strlen(ep->password) };
        len += resp_cmd_build(req + len, sizeof(req) - len, k, a);
        n++;
    }
    if (ep->db) {
        snprintf(db, sizeof(db), "%d", ep->db);
        a[0] = (resp_arg_t){ "SELECT", 6 };
        a[1] = (resp_arg_t){ db, strlen(db) };
        len += resp_cmd_build(req + len, sizeof(req) - len, 2, a);
        n++;
    }
    if (n > 0) {
        r = sy_redis_roundtrip(fd, ssl, req, len, n, err, errlen);
        memset(req, 0, sizeof(req));
        if (r != 0)
            goto fail;
    }
    *fd_out = fd;
    *ssl_out = ssl;
    return 0;
fail:
    sy_redis_hangup(fd, ssl);
    return -1;
}
