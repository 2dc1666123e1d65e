/*
 * endpoint.h - Redis endpoint strings, as the container's applications accept them:
 *
 *     host:port
 *     redis://[[user]:password@]host[:port][/db]
 *     rediss://[[user]:password@]host[:port][/db]      (TLS)
 *     redis-sentinel://[[user]:password@]host[:port][,host[:port]...]/master-name[/db]
 *     rediss-sentinel://...                            (TLS to the master, not to sentinels)
 *
 * host may be a name, an IPv4 address or a bracketed IPv6 address ("[::1]:6379").
 * The port defaults to 6379 and must be 1..65535; db defaults to 0 and must be a decimal
 * number 0..2147483647. user and password are percent-decoded. "redis://:pw@h" means
 * password only (AUTH pw); "redis://u:pw@h" means ACL user (AUTH u pw); "redis://u@h"
 * (user without password) is rejected: Redis has no password-less login over AUTH.
 *
 * The sentinel forms name up to EP_SENTINELS_MAX sentinels (port default 26379) and the
 * master's name as the sentinels know it (letters, digits, '-', '.', '_'); the credentials
 * and the db are the master's. host and port are then the master's address, which the
 * parser cannot know: host is "" until the daemon (proxy/control/sentinel.c) fills it in.
 *
 * Pure: no sockets, no allocation. Fields live in the caller's struct.
 */
#ifndef SY_ENDPOINT_H
#define SY_ENDPOINT_H

#include <stdint.h>

#define EP_HOST_MAX 256
#define EP_CRED_MAX 256
#define EP_SENTINELS_MAX 8
#define EP_NAME_MAX 128
#define EP_SENTINEL_PORT 26379

typedef struct sy_ep_addr_s {
    char     host[EP_HOST_MAX];
    uint16_t port;
} sy_ep_addr_t;

typedef struct sy_endpoint_s {
    char     host[EP_HOST_MAX];     /* without brackets for IPv6 */
    uint16_t port;
    int      tls;                   /* rediss:// */
    int      has_user;
    char     user[EP_CRED_MAX];
    int      has_password;
    char     password[EP_CRED_MAX];
    int      db;                    /* 0 when absent */
    int      has_db;
    /* redis-sentinel:// and rediss-sentinel:// */
    int      sentinel;
    int      nsentinels;
    sy_ep_addr_t sentinels[EP_SENTINELS_MAX];
    char     master[EP_NAME_MAX];   /* the master's name at the sentinels */
} sy_endpoint_t;

/*
 * Parse s into *ep. Returns 0, or -1 with a static message in *err such as
 * "missing host", "port must be 1..65535", "db must be a number", "unknown scheme",
 * "bad percent-encoding in password", "unterminated IPv6 address", "missing master name",
 * "too many sentinels (at most 8)".
 */
int sy_endpoint_parse(const char *s, sy_endpoint_t *ep, const char **err);

/* Format for display with the password masked: "rediss://user:****@host:port/2" or
 * "host:port" for the plain form. Returns the length written (snprintf semantics). */
int sy_endpoint_format_masked(const sy_endpoint_t *ep, char *out, int cap);

/* "host:port" (with brackets for IPv6), for error messages. A sentinel endpoint whose master
 * is not known yet prints "sentinel master NAME". */
int sy_endpoint_hostport(const sy_endpoint_t *ep, char *out, int cap);

#endif /* SY_ENDPOINT_H */
