/*
 * peer.c - which local user is at the other end of an accepted socket.
 *
 *   unix socket   SO_PEERCRED, as Postgres's `peer` authentication reads it
 *   loopback TCP  the client's own socket is on this host: /proc/net/tcp (or tcp6) lists
 *                 it, with its owner's uid, as the line whose local address is our peer's
 *                 and whose remote address is ours (what an identd answers)
 *
 * The console admits switchyard's own user and root by this without a password; anyone
 * else needs admin_password (pg_startup.c). A socket that cannot be traced gives -1 and is
 * treated as a stranger.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "proxy/core/sy.h"

/* "0100007F:1F90" (IPv4, the kernel's byte order as printed) or 32 hex digits and a port
 * (IPv6) into addr (4 or 16 bytes) and port. 0 ok. */
static int parse_hexaddr(const char *s, size_t alen, uint8_t *addr, unsigned *port)
{
    for (size_t w = 0; w < alen / 4; w++) {
        uint32_t v = 0;
        for (int k = 0; k < 8; k++, s++) {
            int d = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
                  : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 : -1;
            if (d < 0)
                return -1;
            v = v << 4 | (uint32_t)d;
        }
        memcpy(addr + 4 * w, &v, 4);   /* printed as a host-order word of the raw bytes */
    }
    if (*s++ != ':')
        return -1;
    char *end = NULL;
    unsigned long p = strtoul(s, &end, 16);
    if (end == s || p > 65535)
        return -1;
    *port = (unsigned)p;
    return 0;
}

/* The uid owning the socket whose local end is (la, lport) and remote end (ra, rport). */
static int proc_net_uid(const char *file, size_t alen, const uint8_t *la, unsigned lport,
                        const uint8_t *ra, unsigned rport)
{
    FILE *f = fopen(file, "re");
    if (f == NULL)
        return -1;
    char line[512];
    int uid = -1;
    if (fgets(line, sizeof line, f) == NULL) {   /* the header */
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        char loc[64], rem[64];
        unsigned st;
        int u;
        /* sl local rem st tx:rx tr:when retrnsmt uid */
        if (sscanf(line, " %*s %63s %63s %x %*s %*s %*s %d", loc, rem, &st, &u) != 4)
            continue;
        uint8_t a1[16], a2[16];
        unsigned p1, p2;
        if (parse_hexaddr(loc, alen, a1, &p1) != 0 || parse_hexaddr(rem, alen, a2, &p2) != 0)
            continue;
        if (p1 == lport && p2 == rport && memcmp(a1, la, alen) == 0 && memcmp(a2, ra, alen) == 0) {
            uid = u;
            break;
        }
    }
    fclose(f);
    return uid;
}

int sy_peer_uid(int fd)
{
    struct sockaddr_storage peer, self;
    socklen_t pl = sizeof(peer), sl = sizeof(self);
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 || getsockname(fd, (struct sockaddr *)&self, &sl) != 0)
        return -1;
    if (peer.ss_family == AF_UNIX) {
        struct ucred cr;
        socklen_t cl = sizeof(cr);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) != 0)
            return -1;
        return (int)cr.uid;
    }
    if (!sy_is_loopback_peer(fd))
        return -1;
    if (peer.ss_family == AF_INET) {
        const struct sockaddr_in *p = (const struct sockaddr_in *)&peer, *s = (const struct sockaddr_in *)&self;
        return proc_net_uid("/proc/net/tcp", 4, (const uint8_t *)&p->sin_addr, ntohs(p->sin_port),
                            (const uint8_t *)&s->sin_addr, ntohs(s->sin_port));
    }
    if (peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *p = (const struct sockaddr_in6 *)&peer, *s = (const struct sockaddr_in6 *)&self;
        return proc_net_uid("/proc/net/tcp6", 16, (const uint8_t *)&p->sin6_addr, ntohs(p->sin6_port),
                            (const uint8_t *)&s->sin6_addr, ntohs(s->sin6_port));
    }
    return -1;
}

int sy_peer_is_owner(int fd)
{
    int uid = sy_peer_uid(fd);
    return uid >= 0 && (uid == 0 || (uid_t)uid == geteuid());
}

int sy_peer_is_unix(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX;
}
