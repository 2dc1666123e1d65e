/*
 * conf.c - conf_load: from the layers of configuration to one typed, validated conf_t.
 *
 *     built-in defaults (builtin_text below, the same as conf/switchyard.conf)
 *       + config file          conf_file.c; its [listener]/[route] sections, if it has
 *                              any, replace the built-in set; [switchyard] keys override
 *                              one by one
 *       + -o overrides         may create sections
 *       = raw sections ──────▶ build(): type every value, build both targets of each
 *                              route from the merged environment (conf_target.c), check
 *                              everything conf.h promises
 *
 * Errors are detected as early as the information allows and always name where the bad
 * value came from: "FILE:LINE: [route pg] listener: no [listener pgx]", "-o
 * listener.pg.listen: [listener pg] listen: port must be 1..65535", "env REDIS_ENDPOINT:
 * port must be 1..65535". A value is never repeated in a message (it may be a password);
 * names (of sections, keys, variables, databases) may be.
 *
 * Layer: above conf_file, conf_env and conf_target (the hierarchy is drawn in
 * conf_util.h). May include conf/conf_internal.h, which brings conf_util.h, conf_libpq.h
 * and conf.h; nothing below may call back into this file.
 */
#include <ctype.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf_internal.h"

/* The container's layout. conf/switchyard.conf says the same with comments; the unit test
 * checks that the two load to the same configuration. */
static const char builtin_text[] =
    "[switchyard]\n"
    "max_message_size = 256M\n"
    "redis_max_bulk = 512M\n"
    "redis_max_pipeline = 1024\n"
    "connect_timeout = 10\n"
    "drain_timeout = 30\n"
    "pause_max = 60\n"
    "switch_hold_max = 5\n"
    "client_login_timeout = 60\n"
    "client_idle_timeout = 0\n"
    "client_stall_timeout = 60\n"
    "tcp_keepidle = 15\n"
    "tcp_keepintvl = 5\n"
    "tcp_keepcnt = 3\n"
    "tcp_user_timeout = 30\n"
    "pool_size = 20\n"
    "server_idle_timeout = 600\n"
    "server_lifetime = 3600\n"
    "server_check_delay = 30\n"
    "server_release_delay = 30\n"
    "workers = auto\n"
    "metrics_listen = 127.0.0.1:9187\n"
    "log_format = logfmt\n"
    "log_level = info\n"
    "[listener pg]\n"
    "protocol = postgres\n"
    "listen = 127.0.0.1:5432\n"
    "[listener redis-store]\n"
    "protocol = redis\n"
    "listen = 127.0.0.1:6379\n"
    "[listener redis-cache]\n"
    "protocol = redis\n"
    "listen = 127.0.0.1:6380\n"
    "[route pg]\n"
    "listener = pg\n"
    "databases = sourcegraph\n"
    "default = true\n"
    "env_prefix = \"\"\n"
    "builtin = \"host=127.0.0.1 port=5433 sslmode=disable\"\n"
    "[route pg-codeintel]\n"
    "listener = pg\n"
    "databases = sourcegraph-codeintel\n"
    "env_prefix = CODEINTEL_\n"
    "builtin = \"host=127.0.0.1 port=5433 sslmode=disable\"\n"
    "[route pg-codeinsights]\n"
    "listener = pg\n"
    "databases = sourcegraph-codeinsights\n"
    "env_prefix = CODEINSIGHTS_\n"
    "builtin = \"host=127.0.0.1 port=5433 sslmode=disable\"\n"
    "[route redis-store]\n"
    "listener = redis-store\n"
    "builtin = 127.0.0.1:6381\n"
    "external_env = REDIS_STORE_ENDPOINT,REDIS_ENDPOINT\n"
    "[route redis-cache]\n"
    "listener = redis-cache\n"
    "builtin = 127.0.0.1:6382\n"
    "external_env = REDIS_CACHE_ENDPOINT,REDIS_ENDPOINT\n";

/* ---- building ---------------------------------------------------------------------------*/

typedef struct build_s {
    conf_t            *c;
    const conf_raw_t  *raw;
    const conf_menv_t *env;
    char              *err;
    size_t             errlen;
    /* per listener / route: its raw section, for origins in later checks */
    const conf_raw_sec_t **lsec;
    const conf_raw_sec_t **rsec;
    const char          **metrics_origin;
} build_t;

/* "ORIGIN: [listener pg] KEY: " prefix helper */
#define KV_ERR(b, s, kv, ...) kv_err((b), (s), (kv), __VA_ARGS__)

__attribute__((format(printf, 4, 5)))
static int kv_err(build_t *b, const conf_raw_sec_t *s, const conf_raw_kv_t *kv,
                  const char *fmt, ...)
{
    char lbl[100];
    va_list ap;
    va_start(ap, fmt);
    conf__sec_label(s, lbl, sizeof lbl);
    int rc = conf__vkey_err(b->err, b->errlen, kv ? kv->origin : s->origin, lbl,
                            kv ? kv->key : NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static int build_switchyard(build_t *b, const conf_raw_sec_t *s)
{
    conf_t *c = b->c;
    for (size_t i = 0; i < s->nkv; i++) {
        const conf_raw_kv_t *kv = &s->kv[i];
        const char *k = kv->key, *v = kv->val, *pr;
        uint64_t n = 0;
        struct { const char *key; int sizes; uint64_t min, max; const char *range; } nums[] = {
            { "max_message_size", 1, 1024, 0x7fffffff, "1k..2147483647 bytes" },
            { "redis_max_bulk", 1, 1, INT64_MAX, "1..9223372036854775807 bytes" },
            { "redis_max_pipeline", 0, 1, 1048576, "1..1048576" },
            { "connect_timeout", 0, 1, 3600, "1..3600 seconds" },
            { "drain_timeout", 0, 0, 86400, "0..86400 seconds" },
            { "pause_max", 0, 1, 86400, "1..86400 seconds" },
            { "switch_hold_max", 0, 0, 86400, "0..86400 seconds (0: drain_timeout alone)" },
            { "client_login_timeout", 0, 1, 86400, "1..86400 seconds" },
            { "client_idle_timeout", 0, 0, 31536000, "0..31536000 seconds (0: never)" },
            { "client_stall_timeout", 0, 0, 86400, "0..86400 seconds (0: never)" },
            { "tcp_keepidle", 0, 0, 32767, "0..32767 seconds (0: no keepalive)" },
            { "tcp_keepintvl", 0, 1, 32767, "1..32767 seconds" },
            { "tcp_keepcnt", 0, 1, 127, "1..127" },
            { "tcp_user_timeout", 0, 0, 86400, "0..86400 seconds (0: the system's)" },
            { "pool_size", 0, 0, 100000, "0..100000 (0: keep no idle server)" },
            { "server_idle_timeout", 0, 0, 31536000, "0..31536000 seconds (0: never)" },
            { "server_lifetime", 0, 0, 31536000, "0..31536000 seconds (0: never)" },
            { "server_check_delay", 0, 0, 31536000, "0..31536000 seconds (0: check every reuse)" },
            { "server_release_delay", 0, 0, 31536000, "0..31536000 seconds (0: never release)" },
            { "reconnect_window", 0, 0, 86400, "0..86400 seconds (0: off)" },
        };
        size_t j;
        for (j = 0; j < sizeof nums / sizeof nums[0]; j++)
            if (strcmp(k, nums[j].key) == 0)
                break;
        if (j < sizeof nums / sizeof nums[0]) {
            if ((pr = conf__parse_uint(v, nums[j].sizes, &n)) != NULL)
                return KV_ERR(b, s, kv, "%s", pr);
            if (n < nums[j].min || n > nums[j].max)
                return KV_ERR(b, s, kv, "must be %s", nums[j].range);
            switch (j) {
            case 0: c->max_message_size = (uint32_t)n; break;
            case 1: c->redis_max_bulk = n; break;
            case 2: c->redis_max_pipeline = (uint32_t)n; break;
            case 3: c->connect_timeout = (int)n; break;
            case 4: c->drain_timeout = (int)n; break;
            case 5: c->pause_max = (int)n; break;
            case 6: c->switch_hold_max = (int)n; break;
            case 7: c->client_login_timeout = (int)n; break;
            case 8: c->client_idle_timeout = (int)n; break;
            case 9: c->client_stall_timeout = (int)n; break;
            case 10: c->tcp_keepidle = (int)n; break;
            case 11: c->tcp_keepintvl = (int)n; break;
            case 12: c->tcp_keepcnt = (int)n; break;
            case 13: c->tcp_user_timeout = (int)n; break;
            case 14: c->pool_size = (int)n; break;
            case 15: c->server_idle_timeout = (int)n; break;
            case 16: c->server_lifetime = (int)n; break;
            case 17: c->server_check_delay = (int)n; break;
            case 18: c->server_release_delay = (int)n; break;
            default: c->reconnect_window = (int)n; break;
            }
        } else if (strcmp(k, "admin_password") == 0) {
            free(c->admin_password);
            c->admin_password = conf__nonempty_dup(v);
        } else if (strcmp(k, "metrics_listen") == 0) {
            free(c->metrics_listen);
            c->metrics_listen = NULL;
            *b->metrics_origin = kv->origin;
            if (*v && strcmp(v, "off") != 0) {
                char *h = NULL;
                int p;
                if ((pr = conf__parse_hostport(v, &h, &p)) != NULL)
                    return KV_ERR(b, s, kv, "%s (or off)", pr);
                free(h);
                c->metrics_listen = conf__strdup(v);
            }
        } else if (strcmp(k, "log_format") == 0) {
            if (strcmp(v, "logfmt") == 0)
                c->log_format = CONF_LOG_LOGFMT;
            else if (strcmp(v, "json") == 0)
                c->log_format = CONF_LOG_JSON;
            else
                return KV_ERR(b, s, kv, "must be logfmt or json");
        } else if (strcmp(k, "workers") == 0) {
            if (strcmp(v, "auto") == 0) {
                c->workers = 0;
            } else {
                if ((pr = conf__parse_uint(v, 0, &n)) != NULL || n < 1 || n > 64)
                    return KV_ERR(b, s, kv, "must be auto or 1..64");
                c->workers = (int)n;
            }
        } else if (strcmp(k, "log_level") == 0) {
            static const char *const lv[] = { "error", "warn", "info", "debug", NULL };
            int l;
            for (l = 0; lv[l] && strcmp(lv[l], v) != 0; l++)
                ;
            if (!lv[l])
                return KV_ERR(b, s, kv, "must be error, warn, info or debug");
            c->log_level = l;
        } else {
            return KV_ERR(b, s, kv, "unknown key");         /* conf_file.c checks this */
        }
    }
    return 0;
}

static int build_listener(build_t *b, const conf_raw_sec_t *s, conf_listener_t *l)
{
    const conf_raw_kv_t *kv;
    const char *pr;

    l->name = conf__strdup(s->name);
    if (!(kv = conf__raw_get(s, "protocol")))
        return KV_ERR(b, s, NULL, "protocol: missing (postgres or redis)");
    if (strcmp(kv->val, "postgres") == 0 || strcmp(kv->val, "postgresql") == 0 ||
        strcmp(kv->val, "pg") == 0)
        l->proto = CONF_PROTO_PG;
    else if (strcmp(kv->val, "redis") == 0)
        l->proto = CONF_PROTO_REDIS;
    else
        return KV_ERR(b, s, kv, "must be postgres or redis");

    if ((kv = conf__raw_get(s, "listen")) && kv->val[0]) {
        if ((pr = conf__parse_hostport(kv->val, &l->host, &l->port)) != NULL)
            return KV_ERR(b, s, kv, "%s", pr);
    } else {
        l->port = l->proto == CONF_PROTO_PG ? 5432 : 0;  /* pg: names the unix socket */
    }
    if ((kv = conf__raw_get(s, "unix_socket")) && kv->val[0]) {
        size_t max = 107 - (l->proto == CONF_PROTO_PG ? strlen("/.s.PGSQL.65535") : 0);
        if (strlen(kv->val) > max)
            return KV_ERR(b, s, kv, "longer than %zu bytes (the limit of a unix socket "
                          "address)", max);
        l->unix_path = conf__strdup(kv->val);
    }
    l->unix_mode = 0770;
    l->unix_gid = -1;
    l->max_clients = 10000;
    if ((kv = conf__raw_get(s, "unix_socket_mode"))) {
        char *end = NULL;
        long m = strtol(kv->val, &end, 8);
        if (kv->val[0] < '0' || kv->val[0] > '7' || end == NULL || *end != '\0' || m < 0 || m > 0777)
            return KV_ERR(b, s, kv, "must be octal permission bits, 0000..0777 (as chmod takes them)");
        l->unix_mode = (int)m;
    }
    if ((kv = conf__raw_get(s, "unix_socket_group")) && kv->val[0]) {
        uint64_t n;
        if (conf__parse_uint(kv->val, 0, &n) == NULL && n < 0x7fffffff) {
            l->unix_gid = (int)n;
        } else {
            struct group *g = getgrnam(kv->val);
            if (g == NULL)
                return KV_ERR(b, s, kv, "no such group");
            l->unix_gid = (int)g->gr_gid;
        }
        l->unix_group = conf__strdup(kv->val);
    }
    if ((kv = conf__raw_get(s, "max_clients"))) {
        if ((pr = conf__parse_uint(kv->val, 0, &l->max_clients)) != NULL)
            return KV_ERR(b, s, kv, "%s", pr);
        if (l->max_clients < 1 || l->max_clients > 1000000)
            return KV_ERR(b, s, kv, "must be 1..1000000");
    }
    if ((kv = conf__raw_get(s, "tls_cert")))
        l->tls_cert = conf__nonempty_dup(kv->val);
    if ((kv = conf__raw_get(s, "tls_key")))
        l->tls_key = conf__nonempty_dup(kv->val);
    if ((kv = conf__raw_get(s, "auth_password")))
        l->auth_password = conf__nonempty_dup(kv->val);

    if (!l->host && !l->unix_path)
        return KV_ERR(b, s, conf__raw_get(s, "listen"),
                      "no listen address and no unix_socket: the listener would accept nothing");
    if (l->host && !conf__is_loopback(l->host) && !l->auth_password)
        return KV_ERR(b, s, conf__raw_get(s, "listen"),
                      "%s is not a loopback address: set auth_password, switchyard attaches "
                      "real credentials upstream and must not be open to the network", l->host);
    if (!l->tls_cert != !l->tls_key)
        return KV_ERR(b, s, conf__raw_get(s, l->tls_cert ? "tls_cert" : "tls_key"),
                      "tls_cert and tls_key go together");
    return 0;
}

static int same_addr(const char *h1, int p1, const char *h2, int p2)
{
    return h1 && h2 && p1 == p2 && strcasecmp(h1, h2) == 0;
}

/* Listen addresses and socket paths must not collide with each other or metrics. */
static int check_addresses(build_t *b)
{
    conf_t *c = b->c;
    char *mh = NULL;
    int mp = 0;
    if (c->metrics_listen)
        conf__parse_hostport(c->metrics_listen, &mh, &mp);
    int rc = 0;
    for (size_t i = 0; i < c->nlisteners && rc == 0; i++) {
        const conf_listener_t *l = &c->listeners[i];
        const conf_raw_sec_t *s = b->lsec[i];
        for (size_t j = 0; j < i && rc == 0; j++) {
            const conf_listener_t *o = &c->listeners[j];
            if (same_addr(l->host, l->port, o->host, o->port))
                rc = KV_ERR(b, s, conf__raw_get(s, "listen"), "same address as [listener %s]",
                            o->name);
            else if (l->unix_path && o->unix_path && strcmp(l->unix_path, o->unix_path) == 0 &&
                     (l->proto == CONF_PROTO_REDIS || o->proto == CONF_PROTO_REDIS ||
                      l->port == o->port))
                rc = KV_ERR(b, s, conf__raw_get(s, "unix_socket"),
                            "same socket as [listener %s]", o->name);
        }
        if (rc == 0 && same_addr(l->host, l->port, mh, mp))
            rc = conf__err(b->err, b->errlen, "%s: [switchyard] metrics_listen: same address "
                           "as [listener %s]", *b->metrics_origin, l->name);
    }
    free(mh);
    return rc;
}

/* Keys that only make sense for one protocol. */
static int check_proto_keys(build_t *b, const conf_raw_sec_t *s, const conf_listener_t *l)
{
    static const char *const pg_only[] = { "databases", "default", "env_prefix", "pool", NULL };
    static const char *const redis_only[] = {
        "external_env", "client_password", "builtin_tls_ca_file", "builtin_tls_cert",
        "builtin_tls_key", "external_tls_ca_file", "external_tls_cert", "external_tls_key",
        "tls_insecure_skip_verify_i_know", "multiplex", "redis_guard_config", NULL
    };
    const char *const *bad = l->proto == CONF_PROTO_PG ? redis_only : pg_only;
    for (; *bad; bad++) {
        const conf_raw_kv_t *kv = conf__raw_get(s, *bad);
        if (!kv)
            continue;
        if (l->proto == CONF_PROTO_PG)
            return KV_ERR(b, s, kv, "only for redis routes; [listener %s] is postgres (%s)",
                          l->name, strstr(*bad, "tls") ? "Postgres TLS goes in builtin as "
                          "sslmode/sslrootcert/sslcert/sslkey, or in PGSSL* variables"
                          : "clients of a postgres listener authenticate with its auth_password");
        return KV_ERR(b, s, kv, "only for postgres routes; [listener %s] is redis", l->name);
    }
    return 0;
}

static int build_route(build_t *b, size_t ri)
{
    conf_t *c = b->c;
    const conf_raw_sec_t *s = b->rsec[ri];
    conf_route_t *r = &c->routes[ri];
    const conf_raw_kv_t *kv;
    const char *pr;
    int rc;

    r->name = conf__strdup(s->name);
    if (!(kv = conf__raw_get(s, "listener")))
        return KV_ERR(b, s, NULL, "listener: missing (the name of a [listener] section)");
    const conf_listener_t *l = conf_listener(c, kv->val);
    if (!l)
        return KV_ERR(b, s, kv, "no [listener %s]", kv->val);
    r->listener = conf__strdup(l->name);
    r->proto = l->proto;
    if ((rc = check_proto_keys(b, s, l)) != 0)
        return rc;

    if ((kv = conf__raw_get(s, "default")) && (pr = conf__parse_bool(kv->val, &r->is_default)))
        return KV_ERR(b, s, kv, "%s", pr);
    if ((kv = conf__raw_get(s, "databases"))) {
        size_t n = 0;
        const char *p = kv->val;
        r->databases = conf__xrealloc(NULL, sizeof *r->databases);
        r->databases[0] = NULL;
        for (;;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            while (len && isspace((unsigned char)*p))
                p++, len--;
            while (len && isspace((unsigned char)p[len - 1]))
                len--;
            if (len == 0 && (e || n || *kv->val))
                return KV_ERR(b, s, kv, "empty database name in the list");
            if (len) {
                char *db = strndup(p, len);
                if (!db)
                    abort();
                for (size_t i = 0; i < n; i++)
                    if (strcmp(r->databases[i], db) == 0) {
                        rc = KV_ERR(b, s, kv, "%s is listed twice", db);
                        free(db);
                        return rc;
                    }
                r->databases = conf__xrealloc(r->databases, (n + 2) * sizeof *r->databases);
                r->databases[n++] = db;
                r->databases[n] = NULL;
            }
            if (!e)
                break;
            p = e + 1;
        }
    }
    if (r->proto == CONF_PROTO_PG && !r->is_default && (!r->databases || !r->databases[0]))
        return KV_ERR(b, s, conf__raw_get(s, "databases"),
                      "a postgres route needs databases, or default = true");

    r->env_prefix = conf__strdup("");
    if ((kv = conf__raw_get(s, "env_prefix"))) {
        if (!conf__env_name_ok(kv->val, strlen(kv->val), 1, 0))
            return KV_ERR(b, s, kv, "must be letters, digits and '_', like CODEINTEL_");
        free(r->env_prefix);
        r->env_prefix = conf__strdup(kv->val);
    }
    if ((kv = conf__raw_get(s, "external_env")) && kv->val[0]) {
        const char *p = kv->val;
        for (;;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            while (len && isspace((unsigned char)*p))
                p++, len--;
            while (len && isspace((unsigned char)p[len - 1]))
                len--;
            if (!conf__env_name_ok(p, len, 0, 0))
                return KV_ERR(b, s, kv, "must be a comma-separated list of environment "
                              "variable names");
            if (!e)
                break;
            p = e + 1;
        }
        r->external_env = conf__strdup(kv->val);
    }
    if ((kv = conf__raw_get(s, "client_password")))
        r->client_password = conf__nonempty_dup(kv->val);
    r->pool = CONF_POOL_DEFAULT;
    if ((kv = conf__raw_get(s, "pool")) && (pr = conf__parse_bool(kv->val, &r->pool)))
        return KV_ERR(b, s, kv, "%s", pr);
    if (r->proto == CONF_PROTO_REDIS && !r->client_password)
        r->client_password = conf__strdup(l->auth_password);
    r->multiplex = CONF_MULTIPLEX_DEFAULT;
    if ((kv = conf__raw_get(s, "multiplex")) && (pr = conf__parse_bool(kv->val, &r->multiplex)))
        return KV_ERR(b, s, kv, "%s", pr);
    r->guard_config = 1;
    if ((kv = conf__raw_get(s, "redis_guard_config")) && (pr = conf__parse_bool(kv->val, &r->guard_config)))
        return KV_ERR(b, s, kv, "%s", pr);

    /* targets */
    conf_tctx_t x = { .route = r->name, .env = b->env };
    char *ext_why = NULL;
    if ((kv = conf__raw_get(s, "builtin")) && kv->val[0]) {
        rc = r->proto == CONF_PROTO_PG
           ? conf__pg_builtin(&r->builtin, &x, kv->val, kv->origin, b->err, b->errlen)
           : conf__redis_builtin(&r->builtin, &x, kv->val, kv->origin, b->err, b->errlen);
        if (rc)
            return rc;
    }
    rc = r->proto == CONF_PROTO_PG
       ? conf__pg_external(&r->external, &x, r->env_prefix, &ext_why, b->err, b->errlen)
       : conf__redis_external(&r->external, &x, r->external_env, &ext_why, b->err, b->errlen);
    if (rc) {
        free(ext_why);
        return rc;
    }
    if (r->proto == CONF_PROTO_REDIS) {
        static const char *const tk[2][3] = {
            { "builtin_tls_ca_file", "builtin_tls_cert", "builtin_tls_key" },
            { "external_tls_ca_file", "external_tls_cert", "external_tls_key" },
        };
        for (int w = 0; w < 2; w++) {
            conf_target_t *t = w ? &r->external : &r->builtin;
            const conf_raw_kv_t *ca = conf__raw_get(s, tk[w][0]);
            const conf_raw_kv_t *ce = conf__raw_get(s, tk[w][1]);
            const conf_raw_kv_t *ke = conf__raw_get(s, tk[w][2]);
            t->tls_ca_file = conf__nonempty_dup(ca ? ca->val : NULL);
            t->tls_cert = conf__nonempty_dup(ce ? ce->val : NULL);
            t->tls_key = conf__nonempty_dup(ke ? ke->val : NULL);
            if (!t->tls_cert != !t->tls_key) {
                free(ext_why);
                return KV_ERR(b, s, t->tls_cert ? ce : ke, "%s and %s go together", tk[w][1],
                              tk[w][2]);
            }
        }
        if ((kv = conf__raw_get(s, "tls_insecure_skip_verify_i_know")) &&
            (pr = conf__parse_bool(kv->val, &r->external.tls_insecure_skip_verify))) {
            free(ext_why);
            return KV_ERR(b, s, kv, "%s", pr);
        }
    }

    /* which target is active, and why */
    const char *mode = "auto";
    const conf_raw_kv_t *akv = conf__raw_get(s, "active");
    if (akv)
        mode = akv->val;
    rc = 0;
    if (strcmp(mode, "auto") == 0 || mode[0] == '\0') {
        if (r->external.defined) {
            r->active = CONF_EXTERNAL;
            r->active_reason = ext_why;
            ext_why = NULL;
        } else if (r->builtin.defined) {
            r->active = CONF_BUILTIN;
            r->active_reason = ext_why;
            ext_why = NULL;
        } else {
            rc = KV_ERR(b, s, NULL, "no target: builtin is not set and %s", ext_why);
        }
    } else if (strcmp(mode, "builtin") == 0) {
        if (!r->builtin.defined)
            rc = KV_ERR(b, s, akv, "builtin, but builtin is not set");
        r->active = CONF_BUILTIN;
        r->active_reason = conf__asprintf("active = builtin in the configuration (%s)",
                                          akv->origin);
    } else if (strcmp(mode, "external") == 0) {
        if (!r->external.defined)
            rc = KV_ERR(b, s, akv, "external, but %s", ext_why);
        r->active = CONF_EXTERNAL;
        r->active_reason = conf__asprintf("active = external in the configuration (%s); %s",
                                          akv->origin, ext_why);
    } else {
        rc = KV_ERR(b, s, akv, "must be auto, builtin or external");
    }
    free(ext_why);
    if (rc)
        return rc;

    /* against the routes before this one */
    for (size_t j = 0; j < ri; j++) {
        const conf_route_t *o = &c->routes[j];
        if (strcmp(o->listener, r->listener) != 0)
            continue;
        if (r->proto == CONF_PROTO_REDIS)
            return KV_ERR(b, s, conf__raw_get(s, "listener"), "[listener %s] already serves "
                          "[route %s]; a redis listener serves exactly one route", l->name,
                          o->name);
        if (r->is_default && o->is_default)
            return KV_ERR(b, s, conf__raw_get(s, "default"), "[listener %s] already has a "
                          "default route, [route %s]", l->name, o->name);
        for (char **d = r->databases; d && *d; d++)
            for (char **e = o->databases; e && *e; e++)
                if (strcmp(*d, *e) == 0)
                    return KV_ERR(b, s, conf__raw_get(s, "databases"), "database %s is "
                                  "already served by [route %s] on [listener %s]", *d,
                                  o->name, l->name);
    }
    return 0;
}

static void defaults(conf_t *c)
{
    c->max_message_size = 256u << 20;
    c->redis_max_bulk = 512ull << 20;
    c->redis_max_pipeline = 1024;
    c->connect_timeout = 10;
    c->drain_timeout = 30;
    c->pause_max = 60;
    c->switch_hold_max = 5;
    c->client_login_timeout = 60;
    c->client_idle_timeout = 0;
    c->client_stall_timeout = 60;
    c->tcp_keepidle = 15;
    c->tcp_keepintvl = 5;
    c->tcp_keepcnt = 3;
    c->tcp_user_timeout = 30;
    c->pool_size = 20;
    c->server_idle_timeout = 600;
    c->server_lifetime = 3600;
    c->server_check_delay = 30;
    c->server_release_delay = 30;
    c->reconnect_window = 30;
    c->log_format = CONF_LOG_LOGFMT;
    c->log_level = 2;
}

static int build(build_t *b)
{
    conf_t *c = b->c;
    const conf_raw_t *raw = b->raw;
    const char *metrics_origin = "built-in defaults";
    size_t nl = 0, nr = 0;
    int rc = 0;

    defaults(c);
    b->metrics_origin = &metrics_origin;
    for (size_t i = 0; i < raw->nsec; i++) {
        if (raw->sec[i].type == CONF_SEC_LISTENER)
            nl++;
        else if (raw->sec[i].type == CONF_SEC_ROUTE)
            nr++;
    }
    c->listeners = conf__xrealloc(NULL, nl * sizeof *c->listeners);
    c->routes = conf__xrealloc(NULL, nr * sizeof *c->routes);
    b->lsec = conf__xrealloc(NULL, nl * sizeof *b->lsec);
    b->rsec = conf__xrealloc(NULL, nr * sizeof *b->rsec);
    memset(c->listeners, 0, nl * sizeof *c->listeners);
    memset(c->routes, 0, nr * sizeof *c->routes);

    for (size_t i = 0; i < raw->nsec && rc == 0; i++)
        if (raw->sec[i].type == CONF_SEC_SWITCHYARD)
            rc = build_switchyard(b, &raw->sec[i]);
    for (size_t i = 0; i < raw->nsec && rc == 0; i++) {
        if (raw->sec[i].type != CONF_SEC_LISTENER)
            continue;
        b->lsec[c->nlisteners] = &raw->sec[i];
        rc = build_listener(b, &raw->sec[i], &c->listeners[c->nlisteners++]);
    }
    if (rc == 0)
        rc = check_addresses(b);
    for (size_t i = 0; i < raw->nsec && rc == 0; i++) {
        if (raw->sec[i].type != CONF_SEC_ROUTE)
            continue;
        b->rsec[c->nroutes] = &raw->sec[i];
        rc = build_route(b, c->nroutes++);
    }
    for (size_t i = 0; i < c->nlisteners && rc == 0; i++) {
        size_t used = 0;
        for (size_t j = 0; j < c->nroutes; j++)
            used += strcmp(c->routes[j].listener, c->listeners[i].name) == 0;
        if (!used)
            rc = KV_ERR(b, b->lsec[i], NULL, "no route uses this listener");
    }
    if (rc == 0 && c->nlisteners == 0)
        rc = conf__err(b->err, b->errlen, "%s: no [listener] and no [route] sections",
                       c->config_path ? c->config_path : "configuration");
    free(b->lsec);
    free(b->rsec);
    return rc;
}

int conf_load(conf_t *c, const conf_args_t *args, const conf_env_t *env, char *err,
              size_t errlen)
{
    conf_raw_t raw = { 0 }, file = { 0 };
    conf_menv_t menv = { 0 };
    int rc;

    memset(c, 0, sizeof *c);
    if (err && errlen)
        err[0] = '\0';
    c->config_path = args ? conf__strdup(args->config_path) : NULL;
    c->env_file = args ? conf__strdup(args->env_file) : NULL;

    FILE *f = fmemopen((void *)builtin_text, sizeof builtin_text - 1, "r");
    if (!f)
        abort();
    rc = conf__raw_parse(&raw, f, "built-in defaults", 0, err, errlen);
    fclose(f);
    if (rc == 0 && c->config_path) {
        rc = conf__raw_parse_path(&file, c->config_path, err, errlen);
        if (rc == 0)
            conf__raw_merge(&raw, &file);
    }
    for (size_t i = 0; rc == 0 && args && i < args->noverrides; i++)
        rc = conf__raw_override(&raw, args->overrides[i], err, errlen);

    conf__menv_init(&menv, env);
    if (rc == 0 && c->env_file)
        rc = conf__menv_load_file(&menv, c->env_file, err, errlen);

    if (rc == 0) {
        build_t b = { .c = c, .raw = &raw, .env = &menv, .err = err, .errlen = errlen };
        rc = build(&b);
    }
    conf__raw_free(&raw);
    conf__raw_free(&file);
    conf__menv_free(&menv);
    if (rc)
        conf_free(c);
    return rc;
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void conf_free(conf_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nlisteners; i++) {
        conf_listener_t *l = &c->listeners[i];
        free(l->name);
        free(l->host);
        free(l->unix_path);
        free(l->unix_group);
        free(l->tls_cert);
        free(l->tls_key);
        free_secret(l->auth_password);
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        conf_route_t *r = &c->routes[i];
        free(r->name);
        free(r->listener);
        for (char **d = r->databases; d && *d; d++)
            free(*d);
        free(r->databases);
        free(r->env_prefix);
        free(r->external_env);
        free_secret(r->client_password);
        free(r->active_reason);
        conf__target_free(&r->builtin);
        conf__target_free(&r->external);
    }
    free(c->listeners);
    free(c->routes);
    free_secret(c->admin_password);
    free(c->metrics_listen);
    free(c->config_path);
    free(c->env_file);
    memset(c, 0, sizeof *c);
}

const conf_listener_t *conf_listener(const conf_t *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->nlisteners; i++)
        if (strcmp(c->listeners[i].name, name) == 0)
            return &c->listeners[i];
    return NULL;
}

const conf_route_t *conf_route(const conf_t *c, const char *name)
{
    for (size_t i = 0; c && name && i < c->nroutes; i++)
        if (strcmp(c->routes[i].name, name) == 0)
            return &c->routes[i];
    return NULL;
}

const conf_route_t *conf_route_for_database(const conf_t *c, const char *listener,
                                            const char *db)
{
    const conf_route_t *def = NULL;
    for (size_t i = 0; c && listener && i < c->nroutes; i++) {
        const conf_route_t *r = &c->routes[i];
        if (strcmp(r->listener, listener) != 0)
            continue;
        if (r->proto == CONF_PROTO_REDIS)
            return r;
        for (char **d = r->databases; db && d && *d; d++)
            if (strcmp(*d, db) == 0)
                return r;
        if (r->is_default)
            def = r;
    }
    return def;
}
