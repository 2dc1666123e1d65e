/*
 * endpoint.h - Redis endpoint strings, as the container's applications accept them:
 *
 *     host:port
 *     redis://[[user]:password@]host[:port][/db]
 *     rediss://[[user]:password@]host[:port][/db]      (TLS)
 *
 * host may be a name, an IPv4 address or a bracketed IPv6 address ("[::1]:6379").
 * The port defaults to 6379 and must be 1..65535; db defaults to 0 and must be a decimal
 * number 0..2147483647. user and password are percent-decoded. "redis://:pw@h" means
 * password only (AUTH pw); "redis://u:pw@h" means ACL user (AUTH u pw); "redis://u@h"
 * (user without password) is rejected: Redis has no password-less login over AUTH.
 *
 * Pure: no sockets, no allocation. Fields live in the caller's struct.
 */
#ifndef SY_ENDPOINT_H
#define SY_ENDPOINT_H

#include <stdint.h>

#define EP_HOST_MAX 256
#define EP_CRED_MAX 256

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
} sy_endpoint_t;

/*
 * Parse s into *ep. Returns 0, or -1 with a static message in *err such as
 * "missing host", "port must be 1..65535", "db must be a number", "unknown scheme",
 * "bad percent-encoding in password", "unterminated IPv6 address".
 */
int sy_endpoint_parse(const char *s, sy_endpoint_t *ep, const char **err);

/* Format for display with the password masked: "rediss://user:****@host:port/2" or
 * "host:port" for the plain form. Returns the length written (snprintf semantics). */
int sy_endpoint_format_masked(const sy_endpoint_t *ep, char *out, int cap);

/* "host:port" (with brackets for IPv6), for error messages. */
int sy_endpoint_hostport(const sy_endpoint_t *ep, char *out, int cap);

#endif /* SY_ENDPOINT_H */
