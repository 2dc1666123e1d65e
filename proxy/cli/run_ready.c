/*
 * run_ready.c - readiness, as `switchyard run` and `switchyard --wait-ready` see it from
 * outside the daemon.
 *
 * run: the daemon's READY=1 says every listener is bound (run.c waits for it); a listener
 * counts as ready when a connection to each of its addresses is accepted: TCP at the
 * address COMMAND is given (run_env_listener_host: a wildcard means loopback), and the
 * Unix socket (for Postgres, DIR/.s.PGSQL.PORT). Each attempt gives up after
 * RUN_PROBE_MS.
 *
 * `--wait-ready [--timeout S]` asks GET /readyz on metrics_listen until it answers 200:
 * 0 ready, 1 not ready within S seconds (default 30; the last reason on stderr), 2 bad
 * usage or metrics_listen off.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include "conf/conf.h"
#include "proxy/cli/run.h"
#include "proxy/cli/run_env.h"
#include "proxy/cli/run_ready.h"

#define RUN_PROBE_MS        500     /* one connect attempt to a listener */

/* ---- every listener accepts ------------------------------------------------------------ */

/* Connect within timeout_ms; returns the fd (blocking again) or -1. */
static int connect_addr(const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, sa, len) != 0) {
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int err = 0;
        socklen_t el = sizeof(err);
        if (errno != EINPROGRESS || poll(&p, 1, timeout_ms) != 1 ||
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
            close(fd);
            return -1;
        }
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static int connect_tcp(const char *host, int port, int timeout_ms)
{
    struct addrinfo hints, *res = NULL;
    char ps[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_addr(ai->ai_addr, ai->ai_addrlen, timeout_ms);
    freeaddrinfo(res);
    return fd;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    return connect_addr((struct sockaddr *)&sa, sizeof(sa), RUN_PROBE_MS);
}

/* 1 when every address of the listener accepts a connection. */
static int listener_accepts(const conf_listener_t *l)
{
    const char *host = run_env_listener_host(l);
    if (host != NULL) {
        int fd = connect_tcp(host, l->port, RUN_PROBE_MS);
        if (fd < 0)
            return 0;
        close(fd);
    }
    if (l->unix_path && *l->unix_path) {
        char path[512];
        if (l->proto == CONF_PROTO_PG)
            snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", l->unix_path, l->port);
        else
            snprintf(path, sizeof(path), "%s", l->unix_path);
        int fd = connect_unix(path);
        if (fd < 0)
            return 0;
        close(fd);
    }
    return 1;
}

int run_ready_listeners(const conf_t *c)
{
    size_t ok = 0;
    while (ok < c->nlisteners && listener_accepts(&c->listeners[ok]))
        ok++;
    return ok == c->nlisteners;
}

/* ---- --wait-ready ------------------------------------------------------------------- */

/* GET /readyz once: 1 ready, 0 not (reason in why). */
static int readyz_once(const char *host, int port, char *why, size_t whylen)
{
    int fd = connect_tcp(host, port, 1000);
    if (fd < 0) {
        snprintf(why, whylen, "cannot connect to %s:%d: %s", host, port, strerror(errno ? errno : ECONNREFUSED));
        return 0;
    }
    struct timeval tv = { 2, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    static const char req[] = "GET /readyz HTTP/1.0\r\nHost: switchyard\r\n\r\n";
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    if (send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
        snprintf(why, whylen, "cannot send to %s:%d", host, port);
        close(fd);
        return 0;
    }
    while (len < sizeof(buf) - 1 && (n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    int ok = len >= 12 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 8, " 200", 4) == 0;
    if (!ok) {
        const char *body = strstr(buf, "\r\n\r\n");
        const char *text = body ? body + 4 : (len ? buf : "no answer");
        size_t tl = strcspn(text, "\r\n");    /* the first reason is enough */
        snprintf(why, whylen, "%.*s", (int)(tl < whylen ? tl : whylen - 1), text);
    }
    return ok;
}

int run_ready_wait(const conf_t *c, double timeout)
{
    const char *addr = c->metrics_listen;
    if (addr == NULL || *addr == '\0' || strcmp(addr, "off") == 0) {
        fprintf(stderr, "switchyard: --wait-ready asks /readyz on metrics_listen, which is off\n");
        return RUN_USAGE;
    }
    char host[256];
    const char *colon = strrchr(addr, ':');
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    const char *hs = addr;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    if (colon == NULL || hl == 0 || hl >= sizeof(host)) {
        fprintf(stderr, "switchyard: metrics_listen: bad address %s\n", addr);
        return RUN_USAGE;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    conf_listener_t l = { .host = host };
    const char *h = run_env_listener_host(&l);
    double deadline = run_ready_now() + timeout;
    char why[512] = "no answer";
    for (;;) {
        if (readyz_once(h, atoi(colon + 1), why, sizeof(why)))
            return 0;
        if (run_ready_now() > deadline) {
            fprintf(stderr, "switchyard: not ready after %gs: %s\n", timeout, why);
            return RUN_NOT_READY;
        }
        usleep(200 * 1000);
    }
}

double run_ready_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
