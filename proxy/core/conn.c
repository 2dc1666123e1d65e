/*
 * conn.c - a socket, its poll handle and the plain transport.
 *
 * A connection is an fd we (or libpq) own, watched with a uv_poll_t. The poll handle is
 * started only when the wanted event set changes: libuv's uv_poll_start removes and
 * re-adds the fd to epoll every time, two system calls we do not want per message.
 * The handle is heap-allocated and freed in its close callback (libuv's lifetime rule),
 * so a connection can be closed from inside its own callback.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "proxy/core/sy.h"

static ssize_t plain_read(sy_conn_t *c, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->rd_wait = UV_READABLE;
            return SY_EAGAIN;
        }
        return -errno;
    }
}

static ssize_t plain_write(sy_conn_t *c, const void *buf, size_t len)
{
    for (;;) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->wr_wait = UV_WRITABLE;
            return SY_EAGAIN;
        }
        return -errno;
    }
}

const sy_transport_t sy_plain_transport = { plain_read, plain_write, "plain", NULL };

/* A peer the network cut off sends no FIN and no RST: keepalive finds it when the line is
 * silent, TCP_USER_TIMEOUT when data we sent stays unacknowledged (PgBouncer's tcp_keepalive
 * and tcp_user_timeout). Best effort, and only where a network lies between us: a loopback
 * or unix peer is the same kernel, which answers for it. */
void sy_sock_keepalive_remote(int fd)
{
    const conf_t *c = sy_conf();
    if (c->tcp_keepidle > 0) {
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &c->tcp_keepidle, sizeof(c->tcp_keepidle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &c->tcp_keepintvl, sizeof(c->tcp_keepintvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &c->tcp_keepcnt, sizeof(c->tcp_keepcnt));
    }
    if (c->tcp_user_timeout > 0) {
        unsigned int ms = (unsigned int)c->tcp_user_timeout * 1000u;
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
    }
}

void sy_sock_keepalive(int fd)
{
    if (!sy_is_loopback_peer(fd))
        sy_sock_keepalive_remote(fd);
}

void sy_conn_init(sy_conn_t *c, uv_loop_t *loop, int fd, void *data)
{
    memset(c, 0, sizeof(*c));
    c->loop = loop;
    c->fd = fd;
    c->tp = &sy_plain_transport;
    c->own_fd = 1;
    c->rd_wait = UV_READABLE;
    c->wr_wait = UV_WRITABLE;
    c->data = data;
}

void sy_conn_init_accepted(sy_conn_t *c, uv_loop_t *loop, int fd, void *data)
{
    sy_conn_init(c, loop, fd, data);
    c->accepted = 1;
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
    sy_conn_t *c = h->data;
    if (status < 0 && c != NULL)
        c->events = 0;   /* libuv stopped the handle on POLLERR: the next watch restarts it */
    if (c != NULL && c->cb != NULL)
        c->cb(c, status, events);
}

static void free_handle_cb(uv_handle_t *h)
{
    free(h);
}

/*
 * Spare poll handles. A client that leaves takes its poll handle with it, and the next
 * accept nearly always returns the fd number just closed; uv_poll_init costs three system
 * calls (an epoll_ctl ADD and DEL to check the fd, and FIONBIO again). So a handle whose fd
 * we close right after stopping it (sy_conn_close of our own plain socket) is kept, stopped,
 * by fd number, on its loop's thread, and the next connection with that number on that
 * loop starts it instead of making one. Once stopped, a handle is only a number to libuv:
 * it is not among the loop's watchers, so it stands in no other handle's way on that fd.
 * At most SPARE_FDS of them per worker (fd numbers below that), about 150 KB.
 */
#define SPARE_FDS 1024
static __thread uv_poll_t **spare;   /* [SPARE_FDS], made on first use */

/* For c, accepted non-blocking (uv_poll_init would make it so; a spare does not): the
 * spare handle of its fd number, if this loop keeps one. */
static uv_poll_t *spare_take(sy_conn_t *c)
{
    int fd = c->fd;
    if (!c->accepted || spare == NULL || fd < 0 || fd >= SPARE_FDS || spare[fd] == NULL ||
        spare[fd]->loop != c->loop)
        return NULL;
    uv_poll_t *h = spare[fd];
    spare[fd] = NULL;
    return h;
}

/* Keep c's handle for the next connection with its fd number: 1, or 0 when it cannot. */
static int spare_keep(sy_conn_t *c)
{
    if (c->fd < 0 || c->fd >= SPARE_FDS || !c->own_fd || c->ssl != NULL)
        return 0;
    if (spare == NULL && (spare = calloc(SPARE_FDS, sizeof(*spare))) == NULL)
        return 0;
    if (spare[c->fd] != NULL)
        return 0;
    uv_poll_stop(c->poll);   /* and out of epoll, before the close below */
    c->poll->data = NULL;
    spare[c->fd] = c->poll;
    c->poll = NULL;
    c->events = 0;
    return 1;
}

int sy_conn_rewatch(sy_conn_t *c, int events, sy_conn_cb cb)
{
    int r;
    c->cb = cb;
    if (c->poll == NULL && (c->poll = spare_take(c)) != NULL) {
        c->poll->data = c;
        c->events = 0;
    } else if (c->poll == NULL) {
        c->poll = malloc(sizeof(*c->poll));
        if (c->poll == NULL)
            return UV_ENOMEM;
        r = uv_poll_init(c->loop, c->poll, c->fd);
        if (r != 0) {
            free(c->poll);
            c->poll = NULL;
            return r;
        }
        c->poll->data = c;
        c->events = 0;
    }
    if (events == c->events)
        return 0;
    c->events = events;
    if (events == 0)
        return uv_poll_stop(c->poll);
    return uv_poll_start(c->poll, events, conn_poll_cb);
}

void sy_conn_watch_failed(int rc, uint64_t conn_id)
{
    sy_err("event=watch_failed conn=%llu error=%s", (unsigned long long)conn_id, uv_strerror(rc));
}

void sy_conn_unwatch(sy_conn_t *c)
{
    if (c->poll == NULL)
        return;
    /* uv_close stops the handle, and takes the fd out of epoll, at once: a uv_poll_stop
     * first would make that an epoll_ctl that fails, per connection. */
    c->poll->data = NULL;
    uv_close((uv_handle_t *)c->poll, free_handle_cb);
    c->poll = NULL;
    c->events = 0;
}

void sy_conn_close(sy_conn_t *c)
{
    if (c->poll == NULL || !spare_keep(c))
        sy_conn_unwatch(c);
    if (c->ssl != NULL && c->ssl_owned) {
        SSL_free(c->ssl);
    }
    c->ssl = NULL;
    if (c->fd >= 0 && c->own_fd)
        close(c->fd);
    c->fd = -1;
}

int sy_conn_linger(sy_conn_t *c, size_t *budget, int first)
{
    uint8_t junk[16384];
    if (c->fd < 0)
        return 1;
    if (first && shutdown(c->fd, SHUT_WR) != 0)
        return 1;   /* not connected any more: nothing to wait for */
    while (*budget > 0) {
        ssize_t n = recv(c->fd, junk, *budget < sizeof(junk) ? *budget : sizeof(junk), 0);
        if (n > 0) {
            *budget -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return 1;   /* the peer closed, or failed */
    }
    return 1;
}

void sy_conn_close_later(sy_conn_t *c)
{
    if (c->ssl != NULL || !c->own_fd || c->fd < 0) {
        sy_conn_close(c);
        return;
    }
    sy_conn_unwatch(c);   /* out of epoll now; only the close waits */
    sy_close_later(c->fd);
    c->fd = -1;
}

uv_poll_t *sy_poll_new(uv_loop_t *loop, int fd)
{
    uv_poll_t *p = malloc(sizeof(*p));
    if (p == NULL)
        return NULL;
    if (uv_poll_init(loop, p, fd) != 0) {
        free(p);
        return NULL;
    }
    p->data = NULL;
    return p;
}

void sy_poll_free(uv_poll_t *p)
{
    if (p != NULL)
        uv_close((uv_handle_t *)p, free_handle_cb);
}

void sy_conn_adopt_poll(sy_conn_t *c, uv_poll_t *p)
{
    c->poll = p;
    p->data = c;
    c->events = 0;
}
