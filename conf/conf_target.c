/*
 * conf_target.c - the two targets of a route, from the config file (built-in) or the
 * merged environment (external), for both protocols.
 *
 *   Postgres built-in   conninfo string ─ PQconninfoParse ─▶ keyword/value list
 *   Postgres external   <prefix>PG* variables, prefix stripped, libpq's meaning
 *                       (PQconninfoParse("") gives libpq's keyword <-> variable table);
 *                       <prefix>PGDATESTYLE/PGTZ/PGGEQO become "-c name=value" in options
 *   Redis built-in      endpoint string ─ sy_endpoint_parse
 *   Redis external      first set variable of the route's external_env list
 *
 * Each target also gets its display string (passwords as ****) and its host:port string
 * for error messages. What libpq would reject later at connect time (a bad sslmode, a port
 * that is not a number, host and port lists of different lengths) is rejected here already,
 * so that a bad environment stops startup with a message naming the variable.
 *
 * Empty variables count as unset: libpq ignores empty keyword values passed to
 * PQconnectStartParams, and "PGHOST=" in an env file is how an operator unsets a variable
 * the process environment has.
 *
 * Layer: above conf_libpq and conf_env (the hierarchy is drawn in conf_util.h). May
 * include libpq, protocol/endpoint.h (through conf.h) and conf/conf_internal.h: it reads
 * the merged environment (conf__menv_get) and libpq's registry (conf__pg_options), never
 * the raw INI model or conf.c.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libpq-fe.h>

#include "conf/conf_internal.h"

/* Debian's libpq default socket directory (DEFAULT_PGSOCKET_DIR is not exported). */
#define PG_DEFAULT_SOCKET_DIR "/var/run/postgresql"
#define PG_DEFAULT_PORT       "5432"

/* ---- keyword/value lists --------------------------------------------------------------- */

void conf__kv_add(conf_kv_t *kv, const char *key, const char *val)
{
    kv->keys = conf__xrealloc(kv->keys, (kv->n + 2) * sizeof *kv->keys);
    kv->vals = conf__xrealloc(kv->vals, (kv->n + 2) * sizeof *kv->vals);
    kv->keys[kv->n] = conf__strdup(key);
    kv->vals[kv->n] = conf__strdup(val);
    kv->n++;
    kv->keys[kv->n] = NULL;
    kv->vals[kv->n] = NULL;
}

void conf__kv_free(conf_kv_t *kv)
{
    for (size_t i = 0; i < kv->n; i++) {
        free(kv->keys[i]);
        if (kv->vals[i]) {
            /* may hold a password: do not leave it in freed memory */
            explicit_bzero(kv->vals[i], strlen(kv->vals[i]));
            free(kv->vals[i]);
        }
    }
    free(kv->keys);
    free(kv->vals);
    memset(kv, 0, sizeof *kv);
}

const char *conf_kv_get(const conf_kv_t *kv, const char *key)
{
    if (!kv || !key)
        return NULL;
    for (size_t i = 0; i < kv->n; i++)
        if (strcmp(kv->keys[i], key) == 0)
            return kv->vals[i];
    return NULL;
}

void conf__target_free(conf_target_t *t)
{
    conf__kv_free(&t->pg);
    explicit_bzero(&t->redis, sizeof t->redis);
    free(t->source);
    free(t->tls_ca_file);
    free(t->tls_cert);
    free(t->tls_key);
    free(t->display);
    free(t->hostport);
    memset(t, 0, sizeof *t);
}

/* ---- growing string -------------------------------------------------------------------- */

typedef struct sbuf_s {
    char  *p;
    size_t len, cap;
} sbuf_t;

static void sb_putn(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = conf__xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_putn(b, s, strlen(s));
}

static char *sb_take(sbuf_t *b)
{
    if (!b->p)
        return conf__strdup("");
    return b->p;
}

/* ---- Postgres: display and checks ------------------------------------------------------ */

/* "k=v k2='v 2' password=****", conninfo quoting where needed. */
static char *pg_display(const conf_kv_t *kv)
{
    sbuf_t b = { 0 };
    for (size_t i = 0; i < kv->n; i++) {
        const char *v = kv->vals[i];
        if (i)
            sb_puts(&b, " ");
        sb_puts(&b, kv->keys[i]);
        sb_puts(&b, "=");
        if (conf__pg_secret(kv->keys[i])) {
            sb_puts(&b, "****");
            continue;
        }
        int quote = *v == '\0';
        for (const char *c = v; *c; c++)
            if (isspace((unsigned char)*c) || *c == '\'' || *c == '\\')
                quote = 1;
        if (!quote) {
            sb_puts(&b, v);
            continue;
        }
        sb_puts(&b, "'");
        for (const char *c = v; *c; c++) {
            if (*c == '\'' || *c == '\\')
                sb_puts(&b, "\\");
            sb_putn(&b, c, 1);
        }
        sb_puts(&b, "'");
    }
    return sb_take(&b);
}

/* Split a comma list into at most cap entries (as libpq does: empty entries allowed).
 * Returns the count (may exceed cap; entries beyond cap are not stored). */
static size_t split_commas(const char *s, const char **start, size_t *len, size_t cap)
{
    size_t n = 0;
    for (;;) {
        const char *c = strchr(s, ',');
        size_t l = c ? (size_t)(c - s) : strlen(s);
        if (n < cap) {
            start[n] = s;
            len[n] = l;
        }
        n++;
        if (!c)
            return n;
        s = c + 1;
    }
}

static int one_of(const char *v, const char *const *set)
{
    for (; *set; set++)
        if (strcmp(v, *set) == 0)
            return 1;
    return 0;
}

static void join_set(char *out, size_t len, const char *const *set)
{
    out[0] = '\0';
    for (size_t i = 0; set[i]; i++) {
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%s%s", i ? ", " : "", set[i]);
    }
}

#define PG_MAX_HOSTS 64

/*
 * Check a Postgres keyword list the way libpq will at connect time, and build its
 * host:port string. Returns 0 with *hostport malloc'd, or -1 with *bad_kw the keyword at
 * fault and problem filled ("port must be 1..65535").
 */
static int pg_check(const conf_kv_t *kv, char **hostport, const char **bad_kw,
                    char *problem, size_t plen)
{
    static const char *const sslmodes[] = { "disable", "allow", "prefer", "require",
                                            "verify-ca", "verify-full", NULL };
    static const char *const three[] = { "disable", "prefer", "require", NULL };
    static const char *const tsa[] = { "any", "read-write", "read-only", "primary", "standby",
                                       "prefer-standby", NULL };
    static const struct { const char *kw; const char *const *set; } enums[] = {
        { "sslmode", sslmodes }, { "channel_binding", three }, { "gssencmode", three },
        { "target_session_attrs", tsa },
    };
    char set[200];

    *hostport = NULL;
    for (size_t i = 0; i < sizeof enums / sizeof enums[0]; i++) {
        const char *v = conf_kv_get(kv, enums[i].kw);
        if (v && !one_of(v, enums[i].set)) {
            join_set(set, sizeof set, enums[i].set);
            *bad_kw = enums[i].kw;
            snprintf(problem, plen, "%s must be one of %s", enums[i].kw, set);
            return -1;
        }
    }
    const char *ct = conf_kv_get(kv, "connect_timeout");
    if (ct) {
        char *end;
        errno = 0;
        long t = strtol(ct, &end, 10);
        while (isspace((unsigned char)*end))
            end++;
        if (end == ct || *end || errno || t < 0 || t > 86400) {
            *bad_kw = "connect_timeout";
            snprintf(problem, plen, "connect_timeout must be a number of seconds 0..86400");
            return -1;
        }
    }

    const char *host = conf_kv_get(kv, "host");
    const char *addr = conf_kv_get(kv, "hostaddr");
    const char *port = conf_kv_get(kv, "port");
    const char *service = conf_kv_get(kv, "service");
    const char *hs[PG_MAX_HOSTS], *as[PG_MAX_HOSTS], *ps[PG_MAX_HOSTS];
    size_t hl[PG_MAX_HOSTS], al[PG_MAX_HOSTS], pl[PG_MAX_HOSTS];
    size_t nh = host ? split_commas(host, hs, hl, PG_MAX_HOSTS) : 0;
    size_t na = addr ? split_commas(addr, as, al, PG_MAX_HOSTS) : 0;
    size_t np = port ? split_commas(port, ps, pl, PG_MAX_HOSTS) : 0;

    if (nh > PG_MAX_HOSTS || na > PG_MAX_HOSTS || np > PG_MAX_HOSTS) {
        *bad_kw = nh > PG_MAX_HOSTS ? "host" : na > PG_MAX_HOSTS ? "hostaddr" : "port";
        snprintf(problem, plen, "%s lists more than %d entries", *bad_kw, PG_MAX_HOSTS);
        return -1;
    }
    if (nh && na && nh != na) {
        *bad_kw = "hostaddr";
        snprintf(problem, plen, "hostaddr has %zu entries but host has %zu", na, nh);
        return -1;
    }
    size_t n = nh ? nh : na;
    for (size_t i = 0; i < na; i++) {
        char a[64];
        unsigned char buf[sizeof(struct in6_addr)];
        if (al[i] == 0)
            continue;
        if (al[i] >= sizeof a) {
            *bad_kw = "hostaddr";
            snprintf(problem, plen, "hostaddr must be numeric IP addresses");
            return -1;
        }
        memcpy(a, as[i], al[i]);
        a[al[i]] = '\0';
        if (inet_pton(AF_INET, a, buf) != 1 && inet_pton(AF_INET6, a, buf) != 1) {
            *bad_kw = "hostaddr";
            snprintf(problem, plen, "hostaddr must be numeric IP addresses");
            return -1;
        }
    }
    for (size_t i = 0; i < np; i++) {
        long p = 0;
        size_t j;
        if (pl[i] == 0)
            continue;                                   /* empty: the default */
        for (j = 0; j < pl[i] && isdigit((unsigned char)ps[i][j]) && p <= 65535; j++)
            p = p * 10 + (ps[i][j] - '0');
        if (j != pl[i] || p < 1 || p > 65535) {
            *bad_kw = "port";
            snprintf(problem, plen, "port must be 1..65535");
            return -1;
        }
    }
    if (n == 0 && service) {
        *hostport = conf__asprintf("service=%s", service);
        return 0;
    }
    if (n == 0)
        n = 1;                                          /* the default host */
    if (np > 1 && np != n) {
        *bad_kw = "port";
        snprintf(problem, plen, "port lists %zu ports for %zu hosts", np, n);
        return -1;
    }

    sbuf_t b = { 0 };
    for (size_t i = 0; i < n; i++) {
        const char *name = PG_DEFAULT_SOCKET_DIR;
        size_t nlen = strlen(name);
        if (i < na && al[i]) {
            name = as[i];
            nlen = al[i];
        } else if (i < nh && hl[i]) {
            name = hs[i];
            nlen = hl[i];
        }
        const char *pp = PG_DEFAULT_PORT;
        size_t ppl = strlen(pp);
        size_t pi = np == 1 ? 0 : i;
        if (pi < np && pl[pi]) {
            pp = ps[pi];
            ppl = pl[pi];
        }
        if (i)
            sb_puts(&b, ",");
        int v6 = memchr(name, ':', nlen) != NULL;
        if (v6)
            sb_puts(&b, "[");
        sb_putn(&b, name, nlen);
        sb_puts(&b, v6 ? "]:" : ":");
        sb_putn(&b, pp, ppl);
    }
    *hostport = sb_take(&b);
    return 0;
}

/* Make libpq's conninfo error message safe to show: it may quote part of the string,
 * which may be the password. Quoted parts are dropped, except the option name in
 * 'invalid connection option "x"'. */
static void sanitize_pq_error(const char *msg, char *out, size_t len)
{
    int keep = strncmp(msg, "invalid connection option", 25) == 0;
    size_t o = 0;
    int inq = 0;
    for (const char *c = msg; *c && o + 4 < len; c++) {
        if (*c == '\n')
            break;
        if (*c == '"' && !keep) {
            if (!inq) {
                memcpy(out + o, "\"...\"", 5);
                o += 5;
                if (o + 4 >= len)
                    break;
            }
            inq = !inq;
            continue;
        }
        if (!inq)
            out[o++] = *c;
    }
    out[o] = '\0';
}

int conf__pg_builtin(conf_target_t *t, const conf_tctx_t *x, const char *conninfo,
                     const char *origin, char *err, size_t errlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    if (!opts) {
        char safe[300];
        sanitize_pq_error(perr ? perr : "out of memory", safe, sizeof safe);
        PQfreemem(perr);
        return conf__err(err, errlen, "%s: [route %s] builtin: not a valid libpq conninfo "
                         "string: %s", origin, x->route, safe);
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val && o->val[0])
            conf__kv_add(&t->pg, o->keyword, o->val);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (o->val)
            explicit_bzero(o->val, strlen(o->val));
    PQconninfoFree(opts);

    const char *bad_kw = NULL;
    char problem[300];
    if (pg_check(&t->pg, &t->hostport, &bad_kw, problem, sizeof problem) != 0)
        return conf__err(err, errlen, "%s: [route %s] builtin: %s", origin, x->route, problem);
    t->defined = 1;
    t->which = CONF_BUILTIN;
    t->source = conf__asprintf("config [route %s] builtin (%s)", x->route, origin);
    t->display = pg_display(&t->pg);
    return 0;
}

/* " (set in ENVFILE:LINE)" or "" */
static const char *env_where(const conf_menv_t *m, const char *var, char *buf, size_t len)
{
    const char *origin = NULL;
    conf__menv_get(m, var, &origin);
    if (origin)
        snprintf(buf, len, " (set in %s)", origin);
    else
        buf[0] = '\0';
    return buf;
}

static const char *env_nonempty(const conf_menv_t *m, const char *var)
{
    const char *v = conf__menv_get(m, var, NULL);
    return v && *v ? v : NULL;
}

/* Append " -c name=value" with libpq's options escaping (backslash before whitespace and
 * backslash, as pg_split_opts reads it). */
static void add_dash_c(sbuf_t *b, const char *name, const char *v)
{
    if (b->len)
        sb_puts(b, " ");
    sb_puts(b, "-c ");
    sb_puts(b, name);
    sb_puts(b, "=");
    for (const char *c = v; *c; c++) {
        if (isspace((unsigned char)*c) || *c == '\\')
            sb_puts(b, "\\");
        sb_putn(b, c, 1);
    }
}

int conf__pg_external(conf_target_t *t, const conf_tctx_t *x, const char *prefix,
                      char **why, char *err, size_t errlen)
{
    static const char *const triggers[] = { "PGHOST", "PGHOSTADDR", "PGSERVICE" };
    char var[300], wbuf[300];
    sbuf_t set = { 0 };
    size_t nset = 0;

    *why = NULL;
    for (size_t i = 0; i < 3; i++) {
        snprintf(var, sizeof var, "%s%s", prefix, triggers[i]);
        if (env_nonempty(x->env, var)) {
            if (nset)
                sb_puts(&set, " and ");
            sb_puts(&set, var);
            nset++;
        }
    }
    if (!nset) {
        *why = conf__asprintf("none of %sPGHOST, %sPGHOSTADDR, %sPGSERVICE is set",
                              prefix, prefix, prefix);
        return 0;
    }
    sb_puts(&set, nset == 1 ? " is set" : " are set");
    *why = sb_take(&set);

    /* libpq 15 reads PGSERVICEFILE and PGSYSCONFDIR only from the process environment,
     * for every connection: a per-family or env-file value would be silently ignored. */
    snprintf(var, sizeof var, "%sPGSERVICE", prefix);
    if (env_nonempty(x->env, var)) {
        static const char *const pw[] = { "PGSERVICEFILE", "PGSYSCONFDIR" };
        for (size_t i = 0; i < 2; i++) {
            const char *origin = NULL;
            snprintf(var, sizeof var, "%s%s", prefix, pw[i]);
            const char *v = conf__menv_get(x->env, var, &origin);
            if (v && *v && (*prefix || origin))
                return conf__err(err, errlen, "env %s%s: libpq reads %s only from the process "
                                 "environment, for all routes; set %s there instead",
                                 var, env_where(x->env, var, wbuf, sizeof wbuf), pw[i], pw[i]);
        }
    }

    size_t nopt;
    const conf_pgopt_t *opts = conf__pg_options(&nopt);
    for (size_t i = 0; i < nopt; i++) {
        if (!opts[i].envvar)
            continue;
        snprintf(var, sizeof var, "%s%s", prefix, opts[i].envvar);
        const char *v = env_nonempty(x->env, var);
        if (strcmp(opts[i].keyword, "options") != 0) {
            if (v)
                conf__kv_add(&t->pg, opts[i].keyword, v);
            continue;
        }
        /* options: PGOPTIONS, then what libpq would send for PGDATESTYLE/PGTZ/PGGEQO */
        static const struct { const char *env, *guc; } eo[] = {
            { "PGDATESTYLE", "datestyle" }, { "PGTZ", "timezone" }, { "PGGEQO", "geqo" },
        };
        sbuf_t o = { 0 };
        if (v)
            sb_puts(&o, v);
        for (size_t k = 0; k < sizeof eo / sizeof eo[0]; k++) {
            char ev[300];
            snprintf(ev, sizeof ev, "%s%s", prefix, eo[k].env);
            const char *ov = env_nonempty(x->env, ev);
            if (ov && strcasecmp(ov, "default") != 0)      /* libpq skips "default" too */
                add_dash_c(&o, eo[k].guc, ov);
        }
        if (o.len)
            conf__kv_add(&t->pg, "options", o.p);
        free(o.p);
    }

    const char *bad_kw = NULL;
    char problem[300];
    if (pg_check(&t->pg, &t->hostport, &bad_kw, problem, sizeof problem) != 0) {
        const char *ev = "?";
        for (size_t i = 0; i < nopt; i++)
            if (strcmp(opts[i].keyword, bad_kw) == 0 && opts[i].envvar)
                ev = opts[i].envvar;
        snprintf(var, sizeof var, "%s%s", prefix, ev);
        return conf__err(err, errlen, "env %s: %s%s", var, problem,
                         env_where(x->env, var, wbuf, sizeof wbuf));
    }
    t->defined = 1;
    t->which = CONF_EXTERNAL;
    t->source = conf__asprintf("env %sPG*", prefix);
    t->display = pg_display(&t->pg);
    return 0;
}

/* ---- Redis ----------------------------------------------------------------------------- */

static void redis_strings(conf_target_t *t)
{
    char buf[EP_HOST_MAX + EP_CRED_MAX * 2 + 64];
    sy_endpoint_format_masked(&t->redis, buf, (int)sizeof buf);
    t->display = conf__strdup(buf);
    sy_endpoint_hostport(&t->redis, buf, (int)sizeof buf);
    t->hostport = conf__strdup(buf);
}

int conf__redis_builtin(conf_target_t *t, const conf_tctx_t *x, const char *endpoint,
                        const char *origin, char *err, size_t errlen)
{
    const char *problem = NULL;
    if (sy_endpoint_parse(endpoint, &t->redis, &problem) != 0)
        return conf__err(err, errlen, "%s: [route %s] builtin: %s", origin, x->route,
                         problem ? problem : "not a Redis endpoint");
    t->defined = 1;
    t->which = CONF_BUILTIN;
    t->source = conf__asprintf("config [route %s] builtin (%s)", x->route, origin);
    redis_strings(t);
    return 0;
}

int conf__redis_external(conf_target_t *t, const conf_tctx_t *x, const char *names,
                         char **why, char *err, size_t errlen)
{
    char var[300], wbuf[300];
    *why = NULL;
    if (!names || !*names) {
        *why = conf__strdup("no external_env configured");
        return 0;
    }
    const char *p = names;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        while (l && isspace((unsigned char)*p))
            p++, l--;
        while (l && isspace((unsigned char)p[l - 1]))
            l--;
        snprintf(var, sizeof var, "%.*s", (int)(l < 200 ? l : 200), p);
        const char *v = l ? env_nonempty(x->env, var) : NULL;
        if (v) {
            const char *problem = NULL;
            if (sy_endpoint_parse(v, &t->redis, &problem) != 0)
                return conf__err(err, errlen, "env %s: %s%s", var,
                                 problem ? problem : "not a Redis endpoint",
                                 env_where(x->env, var, wbuf, sizeof wbuf));
            *why = conf__asprintf("%s is set", var);
            t->defined = 1;
            t->which = CONF_EXTERNAL;
            t->source = conf__asprintf("env %s", var);
            redis_strings(t);
            return 0;
        }
        if (!c)
            break;
        p = c + 1;
    }
    /* "REDIS_ENDPOINT is not set" / "none of A, B is set" */
    sbuf_t b = { 0 };
    int several = strchr(names, ',') != NULL;
    if (several)
        sb_puts(&b, "none of ");
    for (const char *q = names; *q; q++)
        if (!isspace((unsigned char)*q))
            sb_putn(&b, *q == ',' ? ", " : q, *q == ',' ? 2 : 1);
    sb_puts(&b, several ? " is set" : " is not set");
    *why = sb_take(&b);
    return 0;
}
