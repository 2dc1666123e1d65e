/*
 * listener.c - the sockets switchyard accepts on.
 *
 * Each configured listener has a TCP socket and optionally a unix socket (for Postgres a
 * directory holding .s.PGSQL.<port>, as libpq expects). We create the sockets ourselves
 * and accept with accept4 from a uv_poll_t, so accepted fds go straight to sessions,
 * which drive them with their own poll handles (see conn.c).
 *
 * At the fd limit. accept4 fails with EMFILE (or ENFILE) while the client stays in the
 * backlog, so the level-triggered poll would fire again at once: the loop used to spin
 * at full CPU and log every failure. Instead:
 *
 *     EMFILE ─▶ close the reserve fd ─▶ accept one client ─▶ write the protocol's own
 *               "too many clients" error (nothing read) ─▶ close it ─▶ reopen the reserve
 *               (repeated while the backlog has clients, up to REFUSE_BATCH)
 *            ─▶ stop this listener's polls for ACCEPT_PAUSE_MS (a uv timer on the accept
 *               loop), then poll again
 *            ─▶ one event=accept_failed line per ACCEPT_LOG_MS per listener, with the
 *               number of clients refused and of failures folded into it (suppressed=)
 *
 * The reserve is one fd on /dev/null for the whole process, used only on the accept
 * loop. A client refused this way sees what a Postgres server at max_connections or a
 * Redis server at maxclients sends: FATAL 53300 "sorry, too many clients already", or
 * "-ERR max number of clients reached".
 *
 * At max_clients (the listener's sessions, counted as they link and unlink on their
 * workers), a new Redis client gets the same refusal at once, before any session or
 * upstream exists for it; a Postgres client gets it after its startup packet, as the
 * server answers at max_connections (pg_startup.c), still before any upstream. One
 * event=max_clients line per ACCEPT_LOG_MS per listener, with the count refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "proxy/core/sy.h"
#include "protocol/pg_wire.h"
#include "protocol/resp_cmd.h"

#define ACCEPT_PAUSE_MS 100     /* no accept on a listener for this long after EMFILE */
#define ACCEPT_LOG_MS   1000    /* at most one accept_failed line per listener per this */
#define REFUSE_BATCH    256     /* clients refused per failure, at most */

/* A listener's back-off state, on the accept loop (parallel to sy_server.listeners). */
typedef struct lst_backoff_s {
    uv_timer_t     timer;       /* resumes polling; later flushes the pending count */
    sy_listener_t *l;
    int            paused;      /* polls stopped until the timer fires */
    int            logged;      /* an accept_failed line was ever written */
    uint64_t       last_log;    /* uv_now of that line */
    unsigned long  failures;    /* failures since the last line */
    unsigned long  refused;     /* clients refused since the last line */
    int            last_errno;
    unsigned long  full;        /* clients refused at max_clients since the last line */
    int            full_logged;
    uint64_t       full_log;    /* uv_now of that line */
} lst_backoff_t;

static lst_backoff_t *backoffs;
static int reserve_fd = -1;

static void accept_cb(uv_poll_t *h, int status, int events);

static void reserve_open(void)
{
    if (reserve_fd < 0)
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static int listen_tcp(const char *host, int port, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char portstr[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    int r = getaddrinfo(host, portstr, &hints, &res);
    if (r != 0) {
        snprintf(err, errlen, "cannot resolve listen address %s: %s", host, gai_strerror(r));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));   /* accepted sockets inherit it */
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* The socket file appears with the listener's mode and group already on it: it is bound
 * under a temporary name with a umask that lets nobody in, given its group and mode, and
 * then renamed into place. */
static int listen_unix(const char *path, const conf_listener_t *cl, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    char tmp[sizeof(sa.sun_path)];
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    if (snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "unix socket path too long: %.200s", path);
        return -1;
    }
    memcpy(sa.sun_path, tmp, strlen(tmp) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    unlink(tmp);
    mode_t old = umask(0077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    const char *what = "cannot listen on";
    if (rc == 0 && cl->unix_gid >= 0 && chown(tmp, (uid_t)-1, (gid_t)cl->unix_gid) != 0) {
        what = "cannot give the socket its group at";
        rc = -1;
    }
    if (rc == 0 && (chmod(tmp, (mode_t)cl->unix_mode) != 0 || listen(fd, 1024) != 0 || rename(tmp, path) != 0))
        rc = -1;
    if (rc != 0) {
        snprintf(err, errlen, "%s %.200s: %s", what, path, strerror(errno));
        unlink(tmp);
        close(fd);
        return -1;
    }
    return fd;
}

int sy_is_loopback_peer(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return sy_is_loopback_addr(&ss);
}

int sy_is_loopback_addr(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_UNIX)
        return 1;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
        if (IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr))
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            return s6->sin6_addr.s6_addr[12] == 127;
    }
    return 0;
}

/* The listener's refusal, as its protocol's servers word it, into out. */
static size_t refusal(const sy_listener_t *l, uint8_t *out, size_t cap)
{
    if (l->conf->proto == CONF_PROTO_PG)
        return pgw_build_error(out, cap, "FATAL", "53300", "sorry, too many clients already", NULL);
    return resp_build_error(out, cap, "ERR max number of clients reached");
}

/* Answer an accepted client with the refusal, nothing read, and close it. */
void sy_listener_refuse(const sy_listener_t *l, int fd)
{
    uint8_t msg[256], scratch[512];
    size_t len = refusal(l, msg, sizeof msg);
    (void)!send(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_WR);
    /* what already came (a startup packet) would turn the close into a RST that can
     * destroy the refusal before the client reads it */
    while (recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0)
        ;
    close(fd);
}

/* At the fd limit: accept the waiting clients one at a time on the reserve's slot, answer
 * each with the refusal and close it. Returns how many were refused. */
static unsigned long refuse_clients(const sy_listener_t *l, int lfd)
{
    unsigned long n = 0;

    while (n < REFUSE_BATCH && reserve_fd >= 0) {
        close(reserve_fd);
        reserve_fd = -1;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            sy_listener_refuse(l, fd);
            n++;
        }
        reserve_open();                 /* may fail if another thread took the slot */
        if (fd < 0)
            break;
    }
    return n;
}

static void backoff_log(lst_backoff_t *b, uint64_t now)
{
    sy_warn("event=accept_failed listener=%s error=\"%s\" refused=%lu suppressed=%lu paused_ms=%d",
            b->l->conf->name, strerror(b->last_errno), b->refused,
            b->failures ? b->failures - 1 : 0, ACCEPT_PAUSE_MS);
    b->logged = 1;
    b->last_log = now;
    b->failures = 0;
    b->refused = 0;
}

static void backoff_timer_cb(uv_timer_t *t)
{
    lst_backoff_t *b = t->data;
    sy_listener_t *l = b->l;
    uint64_t now = uv_now(t->loop);

    if (b->paused && !SY_LOAD(sy_server.stopping)) {
        for (int k = 0; k < l->nfd; k++)
            if (l->fd[k] >= 0)
                uv_poll_start(&l->poll[k], UV_READABLE, accept_cb);
    }
    b->paused = 0;
    reserve_open();
    if (b->failures == 0)
        return;
    if (now - b->last_log >= ACCEPT_LOG_MS)
        backoff_log(b, now);
    else
        uv_timer_start(&b->timer, backoff_timer_cb, b->last_log + ACCEPT_LOG_MS - now, 0);
}

/* accept4 failed with err (not EAGAIN): refuse what waits if it is the fd limit, stop
 * accepting on l for ACCEPT_PAUSE_MS, and count it for the next accept_failed line. */
static void accept_backoff(sy_listener_t *l, int lfd, int err)
{
    lst_backoff_t *b = &backoffs[l - sy_server.listeners];
    uint64_t now = uv_now(b->timer.loop);

    b->refused += (err == EMFILE || err == ENFILE) ? refuse_clients(l, lfd) : 0;
    b->failures++;
    b->last_errno = err;
    for (int k = 0; k < l->nfd; k++)
        uv_poll_stop(&l->poll[k]);
    b->paused = 1;
    uv_timer_start(&b->timer, backoff_timer_cb, ACCEPT_PAUSE_MS, 0);
    if (!b->logged || now - b->last_log >= ACCEPT_LOG_MS)
        backoff_log(b, now);
}

/* A client was refused at max_clients: one event=max_clients line per ACCEPT_LOG_MS per
 * listener with the count refused. Any thread. */
void sy_listener_refused(sy_listener_t *l)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    lst_backoff_t *b = &backoffs[l - sy_server.listeners];
    uint64_t now = uv_hrtime() / 1000000;
    pthread_mutex_lock(&mu);
    b->full++;
    if (!b->full_logged || now - b->full_log >= ACCEPT_LOG_MS) {
        sy_warn("event=max_clients listener=%s max_clients=%llu refused=%lu", l->conf->name,
                (unsigned long long)l->conf->max_clients, b->full);
        b->full_logged = 1;
        b->full_log = now;
        b->full = 0;
    }
    pthread_mutex_unlock(&mu);
}

/* Linux gives an accepted socket the listening socket's TCP_NODELAY (listen_tcp sets it):
 * the first accepted socket of each listener is asked, and only if the kernel did not
 * pass it on is it set on each one, a system call per connection. */
static void nodelay(sy_listener_t *l, int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    if (l->nodelay == SY_NODELAY_UNKNOWN)
        l->nodelay = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on ? SY_NODELAY_INHERITED
                                                                                   : SY_NODELAY_SET;
    if (l->nodelay == SY_NODELAY_SET) {
        on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
}

static void accept_cb(uv_poll_t *h, int status, int events)
{
    sy_listener_t *l = h->data;
    int lfd = -1;
    for (int i = 0; i < l->nfd; i++)
        if (&l->poll[i] == h)
            lfd = l->fd[i];
    if (status < 0 || lfd < 0)
        return;
    for (int n = 0; n < 64; n++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                accept_backoff(l, lfd, errno);
            return;
        }
        if (SY_LOAD(sy_server.stopping)) {
            close(fd);
            continue;
        }
        /* Redis has no startup to wait for: over max_clients is refused here. Postgres
         * answers after the startup packet (pg_startup.c), as the server does. */
        if (l->conf->proto == CONF_PROTO_REDIS && SY_LOAD(l->nclients) >= l->conf->max_clients) {
            sy_listener_refuse(l, fd);
            sy_listener_refused(l);
            continue;
        }
        if (peer.ss_family != AF_UNIX)
            nodelay(l, fd);
        int trusted = sy_is_loopback_addr(&peer);
        if (!trusted)
            sy_sock_keepalive_remote(fd);
        sy_dispatch(l, fd, trusted);
    }
}

int sy_listeners_start(char *err, size_t errlen)
{
    const conf_t *c = sy_conf();
    sy_server.nlisteners = c->nlisteners;
    sy_server.listeners = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(sy_listener_t));
    backoffs = calloc(c->nlisteners ? c->nlisteners : 1, sizeof(lst_backoff_t));
    if (sy_server.listeners == NULL || backoffs == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    reserve_open();
    if (reserve_fd < 0) {
        snprintf(err, errlen, "cannot open /dev/null for the reserve fd: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < c->nlisteners; i++) {
        sy_listener_t *l = &sy_server.listeners[i];
        const conf_listener_t *cl = &c->listeners[i];
        char lerr[512];
        l->conf = cl;
        if (cl->tls_cert && cl->tls_cert[0]) {
            l->tls_ctx = sy_tls_server_ctx(cl->tls_cert, cl->tls_key ? cl->tls_key : cl->tls_cert,
                                           lerr, sizeof(lerr));
            if (l->tls_ctx == NULL) {
                snprintf(err, errlen, "[listener %s] %.400s", cl->name, lerr);
                return -1;
            }
        }
        if (cl->host && cl->host[0]) {
            int fd = listen_tcp(cl->host, cl->port, lerr, sizeof(lerr));
            if (fd < 0) {
                snprintf(err, errlen, "[listener %s] %.400s", cl->name, lerr);
                return -1;
            }
            l->fd[l->nfd++] = fd;
        }
        if (cl->unix_path && cl->unix_path[0]) {
            char path[512];
            if (cl->proto == CONF_PROTO_PG)
                snprintf(path, sizeof(path), "%s/.s.PGSQL.%d", cl->unix_path, cl->port ? cl->port : 5432);
            else
                snprintf(path, sizeof(path), "%s", cl->unix_path);
            int fd = listen_unix(path, cl, lerr, sizeof(lerr));
            if (fd < 0) {
                snprintf(err, errlen, "[listener %s] %.400s", cl->name, lerr);
                return -1;
            }
            l->fd[l->nfd++] = fd;
        }
        backoffs[i].l = l;
        uv_timer_init(sy_accept_loop(), &backoffs[i].timer);
        backoffs[i].timer.data = &backoffs[i];
        for (int k = 0; k < l->nfd; k++) {
            uv_poll_init(sy_accept_loop(), &l->poll[k], l->fd[k]);
            l->poll[k].data = l;
            uv_poll_start(&l->poll[k], UV_READABLE, accept_cb);
        }
        sy_info("event=listen listener=%s protocol=%s address=%s:%d%s%s", cl->name,
                cl->proto == CONF_PROTO_PG ? "postgres" : "redis", cl->host ? cl->host : "",
                cl->port, cl->unix_path ? " unix=" : "", cl->unix_path ? cl->unix_path : "");
    }
    return 0;
}

/* The listeners' poll handles live on the accept loop: they are closed there. */
static void listeners_stop_cb(sy_msg_t *m)
{
    for (size_t i = 0; i < sy_server.nlisteners; i++) {
        sy_listener_t *l = &sy_server.listeners[i];
        for (int k = 0; k < l->nfd; k++) {
            if (l->fd[k] < 0)
                continue;
            uv_poll_stop(&l->poll[k]);
            uv_close((uv_handle_t *)&l->poll[k], NULL);
            close(l->fd[k]);
            l->fd[k] = -1;
        }
    }
}

void sy_listeners_stop(void)
{
    static sy_msg_t stop = { NULL, listeners_stop_cb };
    sy_post(sy_loop_index(sy_accept_loop()), &stop);
}
