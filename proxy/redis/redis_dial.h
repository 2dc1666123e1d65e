/*
 * redis_dial.h - blocking Redis connections for the thread pool (redis_dial.c): the SWITCH
 * precheck, health probes, and switchover, which opens a session's new upstream and
 * replays its state before the session adopts the socket. Never call from the loop.
 */
#ifndef SY_REDIS_DIAL_H
#define SY_REDIS_DIAL_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "conf/conf.h"

/* Connect to t (TLS when rediss://), AUTH and SELECT as the endpoint says. On success
 * *fd and *ssl (NULL without TLS) are a ready session with blocking I/O and timeouts of
 * connect_timeout. Returns 0, or -1 with the cause in err. */
int  sy_redis_dial(const conf_target_t *t, int *fd, SSL **ssl, char *err, size_t errlen);
/* Send req and read n replies; an error reply fails with its text. Returns 0 or -1. */
int  sy_redis_roundtrip(int fd, SSL *ssl, const uint8_t *req, size_t len, int n, char *err, size_t errlen);
/* Close a dialed session. */
void sy_redis_hangup(int fd, SSL *ssl);

#endif
