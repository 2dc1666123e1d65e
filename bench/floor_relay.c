/*
 * floor_relay.c - the cheapest TCP relay this machine can run: a yardstick for the
 * benches, not a proxy. It copies bytes between each accepted client and a connection it
 * opens to the upstream, and reads nothing of what it copies, so the CPU it spends per
 * transaction is what any proxy spends in the kernel (TCP, wakeups) plus a few hundred
 * instructions. A proxy's CPU above this row is its own work: parsing, bookkeeping, its
 * event library.
 *
 *   floor_relay epoll|uring LISTEN_PORT UPSTREAM_PORT      (both on 127.0.0.1)
 *
 *   epoll  epoll_wait, then recv and send per readable socket: what switchyard, pgbouncer
 *          and haproxy do
 *   uring  io_uring (built only where liburing is): a multishot accept, a multishot recv
 *          per socket into a provided-buffer ring, each received buffer sent to the peer;
 *          one io_uring_enter per wakeup submits every send and waits for what comes next.
 *          DEFER_TASKRUN and SINGLE_ISSUER, as recommended for one thread per ring.
 *
 * Single thread; a blocking connect per client (loopback). For request/response loads: in
 * epoll mode a send that would block waits for the peer to read (poll), which a real proxy
 * must not do; nothing in pgbench -S or redis-benchmark comes near it. A pair is closed when
 * either side closes or fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#if __has_include(<liburing.h>)
#include <liburing.h>
#define HAVE_URING 1
#endif

#define MAXFD 65536
#define BUFSZ 16384

static int peer[MAXFD];        /* fd -> the other side of its pair, or -1 */
static uint16_t gen[MAXFD];    /* bumped when an fd number starts a new pair (io_uring tags) */

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = loopback(port);
    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 511) != 0)
        die("listen");
    return fd;
}

/* Pair client fd c with a new upstream connection; -1 (c closed) when that fails. */
static int pair_open(int c, int up_port, int nonblock)
{
    int u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = loopback(up_port);
    if (u < 0 || u >= MAXFD || c >= MAXFD || connect(u, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (u >= 0)
            close(u);
        close(c);
        return -1;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (nonblock)
        fcntl(u, F_SETFL, O_NONBLOCK);
    peer[c] = u;
    peer[u] = c;
    gen[c]++;
    gen[u]++;
    return u;
}

/* io_uring: submits what is queued. An SQE names its fd by number, resolved when it is
 * submitted: a send queued for fd, submitted after fd was closed and its number reused by
 * the next accept, would go to the new connection. */
static void (*before_close)(void);

/* Close fd's pair. shutdown first, so that a read still pending on either (io_uring) ends. */
static void pair_close(int fd)
{
    int p = peer[fd];
    if (p < 0)
        return;
    if (before_close != NULL)
        before_close();
    shutdown(fd, SHUT_RDWR);
    shutdown(p, SHUT_RDWR);
    close(fd);
    close(p);
    peer[fd] = peer[p] = -1;
}

/* ---- epoll ---------------------------------------------------------------------------- */

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = { .fd = fd, .events = POLLOUT };
            poll(&pf, 1, -1);
            continue;
        }
        if (w < 0 && errno != EINTR)
            return -1;
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        }
    }
    return 0;
}

static void run_epoll(int lfd, int up_port)
{
    static char buf[BUFSZ];
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, evs[256];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0)
        die("epoll");
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), u;
                if (c < 0 || (u = pair_open(c, up_port, 1)) < 0)
                    continue;
                ev.data.fd = c;
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                ev.data.fd = u;
                epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
                continue;
            }
            if (peer[fd] < 0)
                continue;   /* closed earlier in this batch */
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0 || send_all(peer[fd], buf, (size_t)r) != 0)
                pair_close(fd);   /* close() takes both out of the epoll set */
        }
    }
}

/* ---- io_uring ------------------------------------------------------------------------- */
#ifdef HAVE_URING
#define NBUF 4096   /* provided buffers, a power of two */
#define BGID 1
enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static uint32_t sent[NBUF], filled[NBUF];   /* per buffer: bytes sent so far, bytes held */

/* A completion's tag: op, buffer, the fd and its generation, so that one for an fd number
 * since closed and reused is known as stale. */
static uint64_t tag(int op, int fd, int bid)
{
    return (uint64_t)op << 60 | (uint64_t)bid << 48 | (uint64_t)gen[fd] << 32 | (uint32_t)fd;
}

static struct io_uring_sqe *sqe(void)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&ring);
    if (s == NULL) {
        io_uring_submit(&ring);
        s = io_uring_get_sqe(&ring);
    }
    if (s == NULL)
        die("io_uring_get_sqe");
    return s;
}

static void arm_accept(int lfd)
{
    struct io_uring_sqe *s = sqe();
    io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, tag(OP_ACCEPT, lfd, 0));
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *s = sqe();
    io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = BGID;
    io_uring_sqe_set_data64(s, tag(OP_RECV, fd, 0));
}

static void buf_put(int bid)
{
    io_uring_buf_ring_add(br, bufs + (size_t)bid * BUFSZ, BUFSZ, (unsigned short)bid,
                          io_uring_buf_ring_mask(NBUF), 0);
    io_uring_buf_ring_advance(br, 1);
}

static void send_rest(int fd, int bid)
{
    struct io_uring_sqe *s = sqe();
    io_uring_prep_send(s, fd, bufs + (size_t)bid * BUFSZ + sent[bid], filled[bid] - sent[bid], MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(OP_SEND, fd, bid));
}

static void submit_queued(void)
{
    io_uring_submit(&ring);
}

static void run_uring(int lfd, int up_port)
{
    struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN };
    int rc = io_uring_queue_init_params(4096, &ring, &p);
    if (rc < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-rc));
        exit(1);
    }
    /* liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring: map and register by hand */
    br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    bufs = malloc((size_t)NBUF * BUFSZ);
    if (br == MAP_FAILED || bufs == NULL)
        die("buffers");
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = NBUF, .bgid = BGID };
    if ((rc = io_uring_register_buf_ring(&ring, &reg, 0)) != 0) {
        fprintf(stderr, "io_uring_register_buf_ring: %s\n", strerror(-rc));
        exit(1);
    }
    for (int i = 0; i < NBUF; i++)
        buf_put(i);
    before_close = submit_queued;
    arm_accept(lfd);
    for (;;) {
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_submit_and_wait(&ring, 1);
        io_uring_for_each_cqe(&ring, head, cqe) {
            uint64_t t = cqe->user_data;
            int op = (int)(t >> 60), fd = (int)(uint32_t)t, bid = (int)((t >> 48) & 0xfff), res = cqe->res;
            int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
            int stale = op != OP_ACCEPT && (peer[fd] < 0 || (uint16_t)(t >> 32) != gen[fd]);
            seen++;
            if (stale) {   /* its pair is gone: give back the buffer it held, if any */
                if (op == OP_SEND)
                    buf_put(bid);
                else if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER))
                    buf_put((int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
                continue;
            }
            if (op == OP_ACCEPT) {
                int u;
                if (res >= 0 && (u = pair_open(res, up_port, 0)) >= 0) {
                    arm_recv(res);
                    arm_recv(u);
                }
                if (!more)
                    arm_accept(lfd);
            } else if (op == OP_RECV) {
                if (res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
                    int b = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                    sent[b] = 0;
                    filled[b] = (uint32_t)res;
                    send_rest(peer[fd], b);
                    if (!more)
                        arm_recv(fd);
                } else if (res == -ENOBUFS) {
                    arm_recv(fd);   /* every buffer is in flight; sends give them back */
                } else if (!more) {
                    pair_close(fd);
                }
            } else if (res <= 0) {   /* OP_SEND */
                buf_put(bid);
                pair_close(fd);
            } else if ((sent[bid] += (uint32_t)res) < filled[bid]) {
                send_rest(fd, bid);
            } else {
                buf_put(bid);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}
#endif

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: floor_relay epoll|uring LISTEN_PORT UPSTREAM_PORT\n");
        return 2;
    }
    for (int i = 0; i < MAXFD; i++)
        peer[i] = -1;
    int lfd = listen_on(atoi(argv[2])), up = atoi(argv[3]);
    if (strcmp(argv[1], "epoll") == 0) {
        fcntl(lfd, F_SETFL, O_NONBLOCK);
        run_epoll(lfd, up);
    }
#ifdef HAVE_URING
    if (strcmp(argv[1], "uring") == 0)
        run_uring(lfd, up);
#endif
    fprintf(stderr, "floor_relay: no mode %s in this build\n", argv[1]);
    return 2;
}
