/*
 * notify.h - the systemd readiness protocol without libsystemd (notify.c): one datagram
 * "READY=1" (or any "KEY=VALUE\n..." text) to the AF_UNIX socket named by NOTIFY_SOCKET,
 * a path or, with a leading '@', an abstract name. With NOTIFY_SOCKET unset nothing is
 * sent: that is the fallback outside systemd (and `switchyard --wait-ready` or /readyz is
 * how a script or an orchestrator waits then).
 */
#ifndef SY_NOTIFY_H
#define SY_NOTIFY_H

/* Send msg to the socket `addr` ("/run/x" or "@name"). Returns 0 or a negative errno. */
int sy_notify_send(const char *addr, const char *msg);

/* The daemon is listening: READY=1 and MAINPID to $NOTIFY_SOCKET if set, which is then
 * removed from the environment. Returns 0 (also when unset) or a negative errno. */
int sy_notify_ready(void);

#endif
