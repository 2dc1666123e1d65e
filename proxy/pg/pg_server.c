/*
 * pg_server.c - the upstream connection of a Postgres session: host names resolved off the
 * loop (uv_getaddrinfo), libpq parameters built from the target and the client's startup
 * parameters, and one non-blocking libpq attempt per address, each with its own
 * connect_timeout, as libpq's blocking connect does.
 */
#include "proxy/pg/pg_internal.h"

static void pg_connect_step(pg_session_t *s);

/* ---- upstream connect ------------------------------------------------------------- */

static void connect_failed(pg_session_t *s, const char *why)
{
    char cause[900];
    size_t o = 0;
    /* libpq's message may span lines (one per host tried); keep it on one line. */
    for (const char *p = why; *p && o + 3 < sizeof(cause); p++) {
        if (*p == '\n') {
            if (p[1] != '\0') {
                cause[o++] = ';';
                cause[o++] = ' ';
            }
        } else if (*p == '\t') {
            cause[o++] = ' ';
        } else if (*p != '\r') {
            cause[o++] = *p;
        }
    }
    cause[o] = '\0';
    /* The SQLSTATE the server would have given, where libpq's text tells it. */
    const char *state = pgw_errclass_connect(cause);
    pg_close(s, state, "route %s: cannot connect to %s: %s", s->link.route->conf->name, s->slink.target->hostport, cause);
}

static void attempt_failed(pg_session_t *s, const char *why);

static void connect_timeout_cb(uv_timer_t *t)
{
    pg_session_t *s = t->data;
    if (s->state == PGS_CONNECTING && s->natt > 0) {
        char msg[600];
        int i = s->iatt;
        snprintf(msg, sizeof(msg), "connection to server at \"%s\" (%s), port %s failed: timeout expired",
                 s->att_host[i], s->att_addr[i], s->att_port[i][0] ? s->att_port[i] : "5432");
        attempt_failed(s, msg);
    } else if (s->state == PGS_CONNECTING || s->state == PGS_RESOLVING) {
        connect_failed(s, "timeout expired");
    }
}

static void connect_poll_cb(sy_conn_t *c, int status, int events)
{
    pg_session_t *s = c->data;
    if (s->state != PGS_CONNECTING)
        return;
    pg_connect_step(s);
}

/* One PQconnectPoll step. The poll handle is stopped before libpq runs (it may close
 * the socket), and replaced when libpq's socket changes. */
static void pg_connect_step(pg_session_t *s)
{
    pg_watch(s, &s->server, 0, connect_poll_cb);
    PostgresPollingStatusType st = PQconnectPoll(s->pg);
    if (st == PGRES_POLLING_FAILED) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    int fd = PQsocket(s->pg);
    if (fd != s->server.fd) {
        sy_conn_unwatch(&s->server);
        s->server.fd = fd;
    }
    if (st == PGRES_POLLING_OK) {
        pg_relay_begin(s);
        return;
    }
    if (fd < 0) {
        connect_failed(s, "libpq returned no socket");
        return;
    }
    int r = sy_conn_watch(&s->server, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE,
                          connect_poll_cb);
    if (r != 0)
        connect_failed(s, uv_strerror(r));
}


/*
 * Build the upstream parameters for target t: its own keywords, then the client's
 * startup parameters (user/database only when the target leaves them unset; options,
 * application_name, client_encoding and every other parameter as "-c name=value").
 * With `resolved`, host/hostaddr/port come from our off-loop resolution: each host
 * becomes one entry per address, so libpq tries them in order and still verifies
 * against the name. Returns 0, or -1 with the cause in *why.
 */
int pg_build_params(pg_session_t *s, const conf_target_t *t, int resolved, pg_params_t *pp,
                           const char **why)
{
    const conf_kv_t *kv = &t->pg;
    const char **keys = pp->keys, **vals = pp->vals;
    size_t n = 0;
    char *options = pp->options, *hostlist = pp->hostlist, *addrlist = pp->addrlist, *portlist = pp->portlist;
    const char *client_appname = NULL, *client_encoding = NULL;
    int have_user = 0, have_db = 0;

    options[0] = hostlist[0] = addrlist[0] = portlist[0] = '\0';
    /* Client parameters: user/database are mapped; the rest go upstream. */
    size_t off = 0;
    const char *name, *value;
    while (pgw_startup_next(&s->st, &off, &name, &value)) {
        if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0 || strncmp(name, "_pq_.", 5) == 0)
            continue;
        if (strcmp(name, "application_name") == 0)
            client_appname = value;
        else if (strcmp(name, "client_encoding") == 0)
            client_encoding = value;
        else if (strcmp(name, "options") == 0)
            ;   /* appended below, after the target's own */
        else if (pgw_options_add(options, sizeof(pp->options), name, value) != 0) {
            *why = "the startup parameters do not fit libpq's options";
            return -1;
        }
    }
    const char *target_opts = conf_kv_get(kv, "options");
    const char *client_opts = pgw_startup_get(&s->st, "options");
    snprintf(pp->alloptions, sizeof(pp->alloptions), "%s%s%s%s%s", target_opts ? target_opts : "",
             target_opts && (client_opts || options[0]) ? " " : "", client_opts ? client_opts : "",
             client_opts && options[0] ? " " : "", options);

    /* Expanded host lists, when we resolved names. */
    const char *ports = conf_kv_get(kv, "port");
    int nports = 0;
    const char *portv[PG_MAX_HOSTS];
    int use_lists = resolved && s->nhosts > 0 && conf_kv_get(kv, "hostaddr") == NULL;
    if (use_lists) {
        snprintf(pp->portbuf, sizeof(pp->portbuf), "%s", ports ? ports : "");
        for (char *save = NULL, *tk = ports ? strtok_r(pp->portbuf, ",", &save) : NULL; tk && nports < PG_MAX_HOSTS;
             tk = strtok_r(NULL, ",", &save))
            portv[nports++] = tk;
        for (int i = 0; i < s->nhosts; i++) {
            const char *port = nports == 0 ? "" : nports == 1 ? portv[0] : i < nports ? portv[i] : "";
            const char *a = s->addrs[i];
            if (a == NULL)
                continue;   /* resolution failed: libpq would skip it too */
            const char *p = a;
            do {
                const char *comma = strchr(p, ',');
                size_t alen = comma ? (size_t)(comma - p) : strlen(p);
                size_t hl = strlen(hostlist), al = strlen(addrlist), pl = strlen(portlist);
                const char *sep = hl || al || pl ? "," : "";
                snprintf(hostlist + hl, sizeof(pp->hostlist) - hl, "%s%s", sep, s->hosts[i]);
                snprintf(addrlist + al, sizeof(pp->addrlist) - al, "%s%.*s", sep, (int)alen, p);
                snprintf(portlist + pl, sizeof(pp->portlist) - pl, "%s%s", sep, port);
                p = comma ? comma + 1 : NULL;
            } while (p);
        }
        if (hostlist[0] == '\0' && addrlist[0] == '\0') {
            *why = s->resolve_err ? s->resolve_err : "could not resolve any host";
            return -1;
        }
    }

    for (size_t i = 0; i < kv->n && n < 50; i++) {
        const char *k = kv->keys[i];
        if (strcmp(k, "options") == 0 || strcmp(k, "application_name") == 0 ||
            strcmp(k, "client_encoding") == 0)
            continue;
        if (use_lists && (strcmp(k, "host") == 0 || strcmp(k, "port") == 0))
            continue;
        if (strcmp(k, "user") == 0)
            have_user = 1;
        if (strcmp(k, "dbname") == 0)
            have_db = 1;
        keys[n] = k;
        vals[n] = kv->vals[i];
        n++;
    }
    if (use_lists) {
        keys[n] = "host", vals[n++] = hostlist;
        keys[n] = "hostaddr", vals[n++] = addrlist;
        if (nports > 0)
            keys[n] = "port", vals[n++] = portlist;
    }
    /* user/dbname the target leaves unset are the client's; with a service, libpq takes
     * them from the service file (then its own defaults), exactly as psql would. */
    int service = conf_kv_get(kv, "service") != NULL;
    if (!have_user && !service)
        keys[n] = "user", vals[n++] = s->user;
    if (!have_db && !service)
        keys[n] = "dbname", vals[n++] = s->database;
    if (pp->alloptions[0])
        keys[n] = "options", vals[n++] = pp->alloptions;
    const char *appname = client_appname ? client_appname : conf_kv_get(kv, "application_name");
    if (appname)
        keys[n] = "application_name", vals[n++] = appname;
    const char *enc = client_encoding ? client_encoding : conf_kv_get(kv, "client_encoding");
    if (enc)
        keys[n] = "client_encoding", vals[n++] = enc;
    keys[n] = NULL;
    vals[n] = NULL;
    return 0;
}

/* Start connection attempt s->iatt (or the only one, when libpq handles the list). */
static void pg_attempt_start(pg_session_t *s)
{
    const char *keys[64], *vals[64];
    size_t n = 0;
    for (; s->pp->keys[n] != NULL && n < 63; n++) {
        keys[n] = s->pp->keys[n];
        vals[n] = s->pp->vals[n];
        if (s->natt > 0) {
            if (strcmp(keys[n], "host") == 0)
                vals[n] = s->att_host[s->iatt];
            else if (strcmp(keys[n], "hostaddr") == 0)
                vals[n] = s->att_addr[s->iatt];
            else if (strcmp(keys[n], "port") == 0)
                vals[n] = s->att_port[s->iatt];
        }
    }
    keys[n] = vals[n] = NULL;
    uv_timer_start(&s->timer, connect_timeout_cb, s->timeout_ms, 0);
    s->pg = PQconnectStartParams(keys, vals, 0);
    if (s->pg == NULL) {
        connect_failed(s, "out of memory");
        return;
    }
    SY_STAT_ADD(s->link.route->upstreams, 1);
    if (PQstatus(s->pg) == CONNECTION_BAD) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    s->server.fd = PQsocket(s->pg);
    s->server.own_fd = 0;
    s->server.data = s;
    if (s->server.fd < 0) {
        attempt_failed(s, PQerrorMessage(s->pg));
        return;
    }
    /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    int r = sy_conn_watch(&s->server, UV_WRITABLE, connect_poll_cb);
    if (r != 0)
        attempt_failed(s, uv_strerror(r));
}

/* An attempt failed: remember why, and try the next host, or give up with every cause. */
static void attempt_failed(pg_session_t *s, const char *why)
{
    size_t have = s->att_errs ? strlen(s->att_errs) : 0, add = strlen(why);
    char *e = realloc(s->att_errs, have + add + 2);
    if (e != NULL) {
        memcpy(e + have, why, add + 1);
        if (add == 0 || why[add - 1] != '\n')
            strcat(e, "\n");
        s->att_errs = e;
    }
    sy_conn_unwatch(&s->server);
    if (s->pg != NULL) {
        PQfinish(s->pg);
        s->pg = NULL;
        SY_STAT_SUB(s->link.route->upstreams, 1);
    }
    s->server.fd = -1;
    if (s->natt > 0 && ++s->iatt < s->natt) {
        pg_attempt_start(s);
        return;
    }
    connect_failed(s, s->att_errs ? s->att_errs : why);
}

static void pg_connect_start(pg_session_t *s)
{
    const char *why = "out of memory";
    s->pp = malloc(sizeof(*s->pp));
    if (s->pp == NULL || pg_build_params(s, s->slink.target, 1, s->pp, &why) != 0) {
        connect_failed(s, why);
        return;
    }
    /* With several resolved host addresses, make one attempt per address. */
    const char *hl = NULL, *al = NULL, *pl = NULL;
    for (size_t i = 0; s->pp->keys[i]; i++) {
        if (s->pp->vals[i] == s->pp->hostlist)
            hl = s->pp->hostlist;
        else if (s->pp->vals[i] == s->pp->addrlist)
            al = s->pp->addrlist;
        else if (s->pp->vals[i] == s->pp->portlist)
            pl = s->pp->portlist;
    }
    if (hl != NULL && al != NULL && strchr(al, ',') != NULL) {
        size_t hlen = strlen(hl) + 1, alen = strlen(al) + 1, plen = pl ? strlen(pl) + 1 : 1;
        s->att_buf = malloc(hlen + alen + plen);
        if (s->att_buf == NULL) {
            connect_failed(s, why);
            return;
        }
        char *h = s->att_buf, *a = h + hlen, *p = a + alen;
        memcpy(h, hl, hlen);
        memcpy(a, al, alen);
        memcpy(p, pl ? pl : "", plen);
        int nh = 0, na = 0, np = 0;
        for (char *x = h; x && nh < PG_MAX_HOSTS; nh++) {
            s->att_host[nh] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = a; x && na < PG_MAX_HOSTS; na++) {
            s->att_addr[na] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = p; x && np < PG_MAX_HOSTS; np++) {
            s->att_port[np] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        s->natt = nh < na ? nh : na;
        for (int i = 0; i < s->natt; i++)
            if (i >= np)
                s->att_port[i] = np == 1 ? s->att_port[0] : (char *)"";
    }
    pg_set_state(s, PGS_CONNECTING);
    s->iatt = 0;
    pg_attempt_start(s);
}

static void resolve_next(pg_session_t *s);

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_session_t *s = req->data;
    if (s->state != PGS_RESOLVING) {
        uv_freeaddrinfo(res);
        pg_session_unref(s);
        return;
    }
    int i = s->ihost;
    if (status != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "could not translate host name \"%s\" to address: %s", s->hosts[i],
                 uv_strerror(status));
        free(s->resolve_err);
        s->resolve_err = strdup(msg);
    } else {
        char list[2048] = "";
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            char ip[INET6_ADDRSTRLEN];
            if (a->ai_family == AF_INET)
                uv_ip4_name((struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
            else if (a->ai_family == AF_INET6)
                uv_ip6_name((struct sockaddr_in6 *)a->ai_addr, ip, sizeof(ip));
            else
                continue;
            if (strstr(list, ip) != NULL)
                continue;
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, "%s%s", l ? "," : "", ip);
        }
        s->addrs[i] = strdup(list);
    }
    uv_freeaddrinfo(res);
    s->ihost++;
    resolve_next(s);
    pg_session_unref(s);
}

static void resolve_next(pg_session_t *s)
{
    while (s->ihost < s->nhosts) {
        const char *h = s->hosts[s->ihost];
        unsigned char tmp[16];
        if (h[0] == '\0' || h[0] == '/' || h[0] == '@') {
            s->addrs[s->ihost] = strdup("");       /* unix socket: nothing to resolve */
        } else if (inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1) {
            s->addrs[s->ihost] = strdup(h);
        } else {
            struct addrinfo hints;
            memset(&hints, 0, sizeof(hints));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            s->gai.data = s;
            s->refs++;
            int r = uv_getaddrinfo(s->link.loop, &s->gai, gai_cb, h, NULL, &hints);
            if (r == 0)
                return;
            s->refs--;
            s->addrs[s->ihost] = NULL;
        }
        s->ihost++;
    }
    pg_connect_start(s);
}

/* Resolve the target's host names on the thread pool (libpq's own getaddrinfo would
 * block the loop), then connect. Targets with hostaddr need no resolution. */
void pg_upstream_begin(pg_session_t *s)
{
    const conf_kv_t *kv = &s->slink.target->pg;
    const char *host = conf_kv_get(kv, "host");
    int timeout = s->link.route ? sy_conf()->connect_timeout : 10;
    const char *ct = conf_kv_get(kv, "connect_timeout");
    if (ct != NULL && atoi(ct) > 0)
        timeout = atoi(ct) < 2 ? 2 : atoi(ct);   /* libpq treats 1 as 2 */

    pg_set_state(s, PGS_RESOLVING);
    uv_timer_init(s->link.loop, &s->timer);
    s->timer.data = s;
    s->refs++;
    s->timer_on = 1;
    s->timeout_ms = (uint64_t)timeout * 1000;
    uv_timer_start(&s->timer, connect_timeout_cb, s->timeout_ms, 0);

    s->c2s.reading = 0;   /* hold anything the client pipelines until upstream is ready */
    if (host != NULL && conf_kv_get(kv, "hostaddr") == NULL) {
        char *copy = strdup(host);
        char *save = NULL;
        /* keep empty entries: "a,,b" means a default host in libpq */
        char *p = copy;
        while (p != NULL && s->nhosts < PG_MAX_HOSTS) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            s->hosts[s->nhosts++] = strdup(p);
            p = comma ? comma + 1 : NULL;
        }
        (void)save;
        free(copy);
    }
    s->ihost = 0;
    resolve_next(s);
}

