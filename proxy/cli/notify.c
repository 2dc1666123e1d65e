/*
 * notify.c - sd_notify(3)'s wire protocol by hand, so that switchyard needs no libsystemd:
 *
 *   socket(AF_UNIX, SOCK_DGRAM) ──sendto($NOTIFY_SOCKET, "READY=1\nMAINPID=<pid>")──▶ systemd
 *
 * NOTIFY_SOCKET is a filesystem path, or an abstract socket name written with a leading
 * '@' (the '@' becomes the name's leading NUL byte). The address length then covers only
 * the name's bytes, as for every abstract address. `switchyard run` also uses this to learn
 * that the daemon it started is listening: it hands the daemon a private abstract socket of
 * its own (run.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include "proxy/cli/notify.h"

int sy_notify_send(const char *addr, const char *msg)
{
    struct sockaddr_un sa;
    size_t n = strlen(addr);
    if (n == 0 || n >= sizeof(sa.sun_path) || (addr[0] != '/' && addr[0] != '@'))
        return -EINVAL;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, addr, n);
    if (addr[0] == '@')
        sa.sun_path[0] = '\0';
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (addr[0] == '/'));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int sy_notify_ready(void)
{
    const char *addr = getenv("NOTIFY_SOCKET");
    if (addr == NULL || *addr == '\0')
        return 0;
    char msg[64];
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%d", (int)getpid());
    int rc = sy_notify_send(addr, msg);
    unsetenv("NOTIFY_SOCKET");
    return rc;
}
