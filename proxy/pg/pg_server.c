/*
 * pg_server.c - a Postgres server connection, its own object (pg_server_t): made for a
 * session when it is routed, or ahead of a move; attached to the session it relays for
 * (pg_server_attach), and closed on one path with a reason (pg_server_close).
 *
 * Opening one: host names resolved off the loop (uv_getaddrinfo), libpq parameters built
 * from the target and the client's startup parameters, and one non-blocking libpq attempt
 * per address, each with its own connect_timeout, as libpq's blocking connect does.
 *
 * Its states on the worker's lists (sy_server_set_state): CONNECTING while opened (for a
 * client, or ahead of a move), ACTIVE while its session relays through it, CLOSING once
 * its session closes; a server whose PGconn a thread-pool job is using stays CLOSING,
 * with no client, until the job is done (pg_server_job_done), so nothing frees the
 * connection under the job's feet. A server whose client left clean is reset and kept
 * IDLE for the next one (pg_pool.c).
 */
#include "proxy/pg/pg_internal.h"

static void pg_connect_step(pg_server_t *sv);

/* ---- the object ------------------------------------------------------------------ */

static pg_server_t *server_alloc(pg_session_t *s)
{
    pg_server_t *sv = calloc(1, sizeof(*sv));
    if (sv == NULL)
        return NULL;
    sv->refs = 1;
    sv->born_at = uv_now(s->link.loop);
    sv->link.idle_check = pg_pool_idle_check;
    sy_conn_init(&sv->conn, s->link.loop, -1, sv);
    sv->conn.own_fd = 0;   /* libpq's socket */
    return sv;
}

/* The session's first server, on route r's active target: CONNECTING, attached. */
pg_server_t *pg_server_route(pg_session_t *s, sy_route_t *r)
{
    pg_server_t *sv = server_alloc(s);
    if (sv == NULL)
        return NULL;
    sy_session_route(&s->link, r, &sv->link, pg_server_describe);
    pg_server_attach(s, sv);
    return sv;
}

/* A server for s on target `which` of its route, CONNECTING, linked to s but not
 * attached (a move's next server). */
pg_server_t *pg_server_new(pg_session_t *s, conf_which_t which)
{
    pg_server_t *sv = server_alloc(s);
    if (sv == NULL)
        return NULL;
    sy_server_open(&sv->link, &s->link, which, sy_route_target(s->link.route, which), pg_server_describe);
    return sv;
}

/* Make sv the server s relays to (NULL: none); the one it had is no longer its. */
void pg_server_attach(pg_session_t *s, pg_server_t *sv)
{
    if (s->srv != NULL && s->srv != sv)
        s->srv->link.client = NULL;
    if (s->pre == sv && sv != NULL)
        s->pre = NULL;
    s->srv = sv;
    s->link.server = sv ? &sv->link : NULL;
    if (sv != NULL)
        sv->link.client = &s->link;
    s->c2s.dst = s->s2c.src = sv ? &sv->conn : NULL;
}

static pg_session_t *server_client(const pg_server_t *sv)
{
    return (pg_session_t *)sv->link.client;
}

/* The connect state goes once the server is up (or gone): nothing of it is needed after. */
static void connect_state_free(pg_server_t *sv)
{
    pg_connect_t *cn = sv->cn;
    if (cn == NULL)
        return;
    for (int i = 0; i < cn->nhosts; i++) {
        free(cn->hosts[i]);
        free(cn->addrs[i]);
    }
    free(cn->resolve_err);
    free(cn->pp);
    free(cn->att_buf);
    free(cn->att_errs);
    free(cn);
    sv->cn = NULL;
}

static void server_free(pg_server_t *sv)
{
    connect_state_free(sv);
    free(sv->key);
    free(sv);
    sy_pipe_note_teardown(SY_PIPE_TRIM_SERVER);   /* its PGconn went back to the heap */
}

static void server_unref(pg_server_t *sv)
{
    if (--sv->refs == 0)
        server_free(sv);
}

/* For a holder of a reference of its own (a job that outlives the close). */
void pg_server_unref(pg_server_t *sv)
{
    server_unref(sv);
}

static void timer_close_cb(uv_handle_t *h)
{
    server_unref(h->data);
}

/* Finish its PGconn (Terminate, libpq's TLS and socket) and take it off the count. */
static void server_finish(pg_server_t *sv)
{
    sy_conn_close(&sv->conn);   /* the poll handle; fd and TLS are libpq's */
    if (sv->pg != NULL) {
        PQsetnonblocking(sv->pg, 1);   /* a job may have left it blocking: never block the loop */
        PQfinish(sv->pg);
        sv->pg = NULL;
    }
    if (sv->counted) {
        SY_STAT_SUB(sv->link.route->upstreams, 1);
        sv->counted = 0;
    }
}

/*
 * The one close of a server connection: off its session, off the lists, its PGconn
 * finished, freed once the last reference goes. A job using the PGconn on the thread
 * pool gets it instead: the server waits CLOSING, with no client, for pg_server_job_done.
 */
void pg_server_close(pg_server_t *sv, const char *reason)
{
    if (sv == NULL)
        return;
    pg_session_t *s = server_client(sv);
    if (s != NULL) {
        if (s->srv == sv)
            pg_server_attach(s, NULL);
        if (s->pre == sv)
            s->pre = NULL;
        sv->link.client = NULL;
    }
    if (sv->timer_on) {
        uv_timer_stop(&sv->timer);
        sv->timer_on = 0;
        uv_close((uv_handle_t *)&sv->timer, timer_close_cb);   /* its ref goes in the callback */
    }
    sy_conn_unwatch(&sv->conn);
    pg_pool_forget(sv);
    if (sv->job) {
        if (!sv->closed)
            sy_debug("event=server_handoff upstream=%s reason=%s", sv->link.target ? sv->link.target->hostport : "",
                     reason);
        sv->closed = 1;
        sv->reason = reason;
        sy_server_set_state(&sv->link, SY_SERVER_CLOSING);
        return;
    }
    sy_server_unlink(&sv->link);
    server_finish(sv);
    sy_debug("event=server_close upstream=%s backend_pid=%u reason=%s",
             sv->link.target ? sv->link.target->hostport : "", sv->be_pid, reason);
    server_unref(sv);
}

/* The job using sv's PGconn is done with it. Returns 1 when sv was closed meanwhile and
 * is now gone (the job finished it), 0 when it lives on. */
int pg_server_job_done(pg_server_t *sv)
{
    sv->job = 0;
    if (!sv->closed)
        return 0;
    pg_server_close(sv, sv->reason);
    return 1;
}

/* Take over sv's connected PGconn: non-blocking from now on, its socket and TLS session
 * watched by us (libpq keeps owning them), its backend pid. Returns 0, or -1 when the
 * TLS session cannot be had. */
int pg_server_adopt(pg_server_t *sv)
{
    PQsetnonblocking(sv->pg, 1);   /* PQfinish must never block the loop */
    int fd = PQsocket(sv->pg);
    if (fd != sv->conn.fd) {   /* opened on the thread pool: not watched yet */
        sy_conn_close(&sv->conn);
        sy_conn_init(&sv->conn, sv->link.loop, fd, sv);
        sv->conn.own_fd = 0;
    }
    sv->be_pid = (uint32_t)PQbackendPID(sv->pg);
    /* Socket options stay with the socket: a server taken from the pool has them (a
     * getpeername per reuse less, pgbench -C, 2026-12-03). */
    if (!sv->adopted)
        sy_sock_keepalive(fd);
    sv->adopted = 1;
    /* The attempts are over: their state (21 KB with the parameters) is not kept for the
     * session's life. */
    connect_state_free(sv);
    if (sv->timer_on)
        uv_timer_stop(&sv->timer);   /* connected: the connect timeout is over */
    if (PQsslInUse(sv->pg)) {
        SSL *ssl = PQsslStruct(sv->pg, "OpenSSL");
        if (ssl == NULL)
            return -1;
        sy_tls_adopt(&sv->conn, ssl);
    }
    return 0;
}

void pg_server_describe(const sy_server_link_t *l, char cols[][128])
{
    const pg_server_t *sv = (const pg_server_t *)l;
    const pg_session_t *s = server_client(sv);
    cols[0][0] = '\0';
    if (s != NULL)
        snprintf(cols[0], 128, "%llu", (unsigned long long)s->id);
    snprintf(cols[1], 128, "postgres");
    snprintf(cols[2], 128, "%s", l->target ? l->target->hostport : "");
    /* The session's state while it relays through this one; the server's own otherwise. */
    snprintf(cols[3], 128, "%s", sv->pool_op == PG_POOL_RESET ? "resetting"
                                 : sv->pool_op == PG_POOL_CHECK ? "checking"
                                 : sv->pool_op == PG_POOL_PIN   ? "release_check"
                                 : s && s->srv == sv ? pg_state_names[s->state] : sy_server_state_names[l->state]);
}

/* ---- upstream connect ------------------------------------------------------------- */

static void connect_failed(pg_server_t *sv, const char *why)
{
    pg_session_t *s = server_client(sv);
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
    if (sv->needs_password && pg_ask_upstream_password(s, sv))
        return;
    /* The SQLSTATE the server would have given, where libpq's text tells it. */
    const char *state = pgw_errclass_connect(cause);
    if (pg_connect_retry(s, state, cause))
        return;   /* reconnect_window: the target may be back in a moment */
    pg_close(s, state, "route %s: cannot connect to %s: %s", s->link.route->conf->name, sv->link.target->hostport, cause);
}

static void attempt_failed(pg_server_t *sv, const char *why);

static void connect_timeout_cb(uv_timer_t *t)
{
    pg_server_t *sv = t->data;
    pg_session_t *s = server_client(sv);
    if (s == NULL)
        return;
    pg_connect_t *cn = sv->cn;
    if (s->state == PGS_CONNECTING && cn != NULL && cn->natt > 0) {
        char msg[600];
        int i = cn->iatt;
        snprintf(msg, sizeof(msg), "connection to server at \"%s\" (%s), port %s failed: timeout expired",
                 cn->att_host[i], cn->att_addr[i], cn->att_port[i][0] ? cn->att_port[i] : "5432");
        attempt_failed(sv, msg);
    } else if (s->state == PGS_CONNECTING || s->state == PGS_RESOLVING) {
        connect_failed(sv, "timeout expired");
    }
}

static void connect_poll_cb(sy_conn_t *c, int status, int events)
{
    pg_server_t *sv = c->data;
    pg_session_t *s = server_client(sv);
    if (s == NULL || s->state != PGS_CONNECTING)
        return;
    pg_connect_step(sv);
}

/* One PQconnectPoll step. The poll handle is stopped before libpq runs (it may close
 * the socket), and replaced when libpq's socket changes. */
static void pg_connect_step(pg_server_t *sv)
{
    pg_session_t *s = server_client(sv);
    sv->refs++;   /* a failed watch closes the session, and sv with it */
    pg_watch(s, &sv->conn, 0, connect_poll_cb);
    int gone = sv->link.client == NULL;
    server_unref(sv);
    if (gone)
        return;
    PostgresPollingStatusType st = PQconnectPoll(sv->pg);
    if (st == PGRES_POLLING_FAILED) {
        attempt_failed(sv, PQerrorMessage(sv->pg));
        return;
    }
    int fd = PQsocket(sv->pg);
    if (fd != sv->conn.fd) {
        sy_conn_unwatch(&sv->conn);
        sv->conn.fd = fd;
    }
    if (st == PGRES_POLLING_OK) {
        pg_relay_begin(s);
        return;
    }
    if (fd < 0) {
        connect_failed(sv, "libpq returned no socket");
        return;
    }
    int r = sy_conn_watch(&sv->conn, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE,
                          connect_poll_cb);
    if (r != 0)
        connect_failed(sv, uv_strerror(r));
}


/*
 * Build the upstream parameters for target t: its own keywords, then the client's
 * startup parameters (user/database only when the target leaves them unset; options,
 * application_name, client_encoding and every other parameter as "-c name=value").
 * With `resolved` (a server whose names were resolved), host/hostaddr/port come from that: each host
 * becomes one entry per address, so libpq tries them in order and still verifies
 * against the name. Returns 0, or -1 with the cause in *why.
 */
int pg_build_params(const pg_session_t *s, const pg_server_t *resolved, const conf_target_t *t, pg_params_t *pp,
                    const char **why)
{
    const pg_server_t *sv = resolved;
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
    const pg_connect_t *cn = sv != NULL ? sv->cn : NULL;
    int use_lists = cn != NULL && cn->nhosts > 0 && conf_kv_get(kv, "hostaddr") == NULL;
    if (use_lists) {
        snprintf(pp->portbuf, sizeof(pp->portbuf), "%s", ports ? ports : "");
        for (char *save = NULL, *tk = ports ? strtok_r(pp->portbuf, ",", &save) : NULL; tk && nports < PG_MAX_HOSTS;
             tk = strtok_r(NULL, ",", &save))
            portv[nports++] = tk;
        for (int i = 0; i < cn->nhosts; i++) {
            const char *port = nports == 0 ? "" : nports == 1 ? portv[0] : i < nports ? portv[i] : "";
            const char *a = cn->addrs[i];
            if (a == NULL)
                continue;   /* resolution failed: libpq would skip it too */
            const char *p = a;
            do {
                const char *comma = strchr(p, ',');
                size_t alen = comma ? (size_t)(comma - p) : strlen(p);
                size_t hl = strlen(hostlist), al = strlen(addrlist), pl = strlen(portlist);
                const char *sep = hl || al || pl ? "," : "";
                snprintf(hostlist + hl, sizeof(pp->hostlist) - hl, "%s%s", sep, cn->hosts[i]);
                snprintf(addrlist + al, sizeof(pp->addrlist) - al, "%s%.*s", sep, (int)alen, p);
                snprintf(portlist + pl, sizeof(pp->portlist) - pl, "%s%s", sep, port);
                p = comma ? comma + 1 : NULL;
            } while (p);
        }
        if (hostlist[0] == '\0' && addrlist[0] == '\0') {
            *why = cn->resolve_err ? cn->resolve_err : "could not resolve any host";
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
    /* The target's tcp_user_timeout, else ours: libpq sets it on its socket as we do
     * (sy_sock_keepalive), and PQgetCancel copies it, so a cancel sent to a server the
     * network cut off gives up after it, instead of holding a thread of the pool through
     * the kernel's SYN retries (about two minutes). */
    if (conf_kv_get(kv, "tcp_user_timeout") == NULL && sy_conf()->tcp_user_timeout > 0) {
        snprintf(pp->user_timeout, sizeof(pp->user_timeout), "%d", sy_conf()->tcp_user_timeout * 1000);
        keys[n] = "tcp_user_timeout", vals[n++] = pp->user_timeout;
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
    if (s->client_password != NULL && conf_kv_get(kv, "password") == NULL)
        keys[n] = "password", vals[n++] = s->client_password;
    const char *enc = client_encoding ? client_encoding : conf_kv_get(kv, "client_encoding");
    if (enc)
        keys[n] = "client_encoding", vals[n++] = enc;
    keys[n] = NULL;
    vals[n] = NULL;
    return 0;
}

/* Start connection attempt sv->iatt (or the only one, when libpq handles the list). */
static void pg_attempt_start(pg_server_t *sv)
{
    const char *keys[64], *vals[64];
    pg_connect_t *cn = sv->cn;
    size_t n = 0;
    for (; cn->pp->keys[n] != NULL && n < 63; n++) {
        keys[n] = cn->pp->keys[n];
        vals[n] = cn->pp->vals[n];
        if (cn->natt > 0) {
            if (strcmp(keys[n], "host") == 0)
                vals[n] = cn->att_host[cn->iatt];
            else if (strcmp(keys[n], "hostaddr") == 0)
                vals[n] = cn->att_addr[cn->iatt];
            else if (strcmp(keys[n], "port") == 0)
                vals[n] = cn->att_port[cn->iatt];
        }
    }
    keys[n] = vals[n] = NULL;
    uv_timer_start(&sv->timer, connect_timeout_cb, sv->timeout_ms, 0);
    sv->pg = PQconnectStartParams(keys, vals, 0);
    if (sv->pg == NULL) {
        connect_failed(sv, "out of memory");
        return;
    }
    SY_STAT_ADD(sv->link.route->upstreams, 1);
    sv->counted = 1;
    if (PQstatus(sv->pg) == CONNECTION_BAD) {
        attempt_failed(sv, PQerrorMessage(sv->pg));
        return;
    }
    sv->conn.fd = PQsocket(sv->pg);
    sv->conn.own_fd = 0;
    if (sv->conn.fd < 0) {
        attempt_failed(sv, PQerrorMessage(sv->pg));
        return;
    }
    /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    int r = sy_conn_watch(&sv->conn, UV_WRITABLE, connect_poll_cb);
    if (r != 0)
        attempt_failed(sv, uv_strerror(r));
}

/* An attempt failed: remember why, and try the next host, or give up with every cause. */
static void attempt_failed(pg_server_t *sv, const char *why)
{
    pg_connect_t *cn = sv->cn;
    if (sv->pg != NULL && PQconnectionNeedsPassword(sv->pg))
        sv->needs_password = 1;
    size_t have = cn->att_errs ? strlen(cn->att_errs) : 0, add = strlen(why);
    char *e = realloc(cn->att_errs, have + add + 2);
    if (e != NULL) {
        memcpy(e + have, why, add + 1);
        if (add == 0 || why[add - 1] != '\n')
            strcat(e, "\n");
        cn->att_errs = e;
    }
    server_finish(sv);
    sv->conn.fd = -1;
    if (cn->natt > 0 && ++cn->iatt < cn->natt) {
        pg_attempt_start(sv);
        return;
    }
    connect_failed(sv, cn->att_errs ? cn->att_errs : why);
}

static void pg_connect_start(pg_server_t *sv)
{
    pg_session_t *s = server_client(sv);
    pg_connect_t *cn = sv->cn;
    const char *why = "out of memory";
    cn->pp = malloc(sizeof(*cn->pp));
    if (cn->pp == NULL || pg_build_params(s, sv, sv->link.target, cn->pp, &why) != 0) {
        connect_failed(sv, why);
        return;
    }
    /* With several resolved host addresses, make one attempt per address. */
    const char *hl = NULL, *al = NULL, *pl = NULL;
    for (size_t i = 0; cn->pp->keys[i]; i++) {
        if (cn->pp->vals[i] == cn->pp->hostlist)
            hl = cn->pp->hostlist;
        else if (cn->pp->vals[i] == cn->pp->addrlist)
            al = cn->pp->addrlist;
        else if (cn->pp->vals[i] == cn->pp->portlist)
            pl = cn->pp->portlist;
    }
    if (hl != NULL && al != NULL && strchr(al, ',') != NULL) {
        size_t hlen = strlen(hl) + 1, alen = strlen(al) + 1, plen = pl ? strlen(pl) + 1 : 1;
        cn->att_buf = malloc(hlen + alen + plen);
        if (cn->att_buf == NULL) {
            connect_failed(sv, why);
            return;
        }
        char *h = cn->att_buf, *a = h + hlen, *p = a + alen;
        memcpy(h, hl, hlen);
        memcpy(a, al, alen);
        memcpy(p, pl ? pl : "", plen);
        int nh = 0, na = 0, np = 0;
        for (char *x = h; x && nh < PG_MAX_HOSTS; nh++) {
            cn->att_host[nh] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = a; x && na < PG_MAX_HOSTS; na++) {
            cn->att_addr[na] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        for (char *x = p; x && np < PG_MAX_HOSTS; np++) {
            cn->att_port[np] = x;
            x = strchr(x, ',');
            if (x)
                *x++ = '\0';
        }
        cn->natt = nh < na ? nh : na;
        for (int i = 0; i < cn->natt; i++)
            if (i >= np)
                cn->att_port[i] = np == 1 ? cn->att_port[0] : (char *)"";
    }
    pg_set_state(s, PGS_CONNECTING);
    cn->iatt = 0;
    pg_attempt_start(sv);
}

static void resolve_next(pg_server_t *sv);

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    pg_server_t *sv = req->data;
    pg_session_t *s = server_client(sv);
    if (s == NULL || s->state != PGS_RESOLVING) {   /* closed meanwhile */
        uv_freeaddrinfo(res);
        server_unref(sv);
        return;
    }
    pg_connect_t *cn = sv->cn;
    int i = cn->ihost;
    if (status != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "could not translate host name \"%s\" to address: %s", cn->hosts[i],
                 uv_strerror(status));
        free(cn->resolve_err);
        cn->resolve_err = strdup(msg);
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
        cn->addrs[i] = strdup(list);
    }
    uv_freeaddrinfo(res);
    cn->ihost++;
    resolve_next(sv);
    server_unref(sv);
}

static void resolve_next(pg_server_t *sv)
{
    pg_connect_t *cn = sv->cn;
    while (cn->ihost < cn->nhosts) {
        const char *h = cn->hosts[cn->ihost];
        unsigned char tmp[16];
        if (h[0] == '\0' || h[0] == '/' || h[0] == '@') {
            cn->addrs[cn->ihost] = strdup("");       /* unix socket: nothing to resolve */
        } else if (inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1) {
            cn->addrs[cn->ihost] = strdup(h);
        } else {
            struct addrinfo hints;
            memset(&hints, 0, sizeof(hints));
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            cn->gai.data = sv;
            sv->refs++;
            int r = uv_getaddrinfo(sv->link.loop, &cn->gai, gai_cb, h, NULL, &hints);
            if (r == 0)
                return;
            sv->refs--;
            cn->addrs[cn->ihost] = NULL;
        }
        cn->ihost++;
    }
    pg_connect_start(sv);
}

/* The session's upstream: an idle server of its pool (pg_pool.c), else a new one. */
void pg_upstream_begin(pg_session_t *s)
{
    if (!pg_pool_take(s))
        pg_upstream_connect(s);
}

/* Resolve the target's host names on the thread pool (libpq's own getaddrinfo would
 * block the loop), then connect. Targets with hostaddr need no resolution. */
void pg_upstream_connect(pg_session_t *s)
{
    pg_server_t *sv = s->srv;
    const conf_kv_t *kv = &sv->link.target->pg;
    const char *host = conf_kv_get(kv, "host");
    int timeout = s->link.route ? sy_conf()->connect_timeout : 10;
    const char *ct = conf_kv_get(kv, "connect_timeout");
    if (ct != NULL && atoi(ct) > 0)
        timeout = atoi(ct) < 2 ? 2 : atoi(ct);   /* libpq treats 1 as 2 */

    connect_state_free(sv);   /* from an earlier attempt on sv, if any */
    sv->adopted = 0;          /* a new socket */
    pg_connect_t *cn = sv->cn = calloc(1, sizeof(*cn));
    if (cn == NULL) {
        connect_failed(sv, "out of memory");
        return;
    }
    pg_set_state(s, PGS_RESOLVING);
    uv_timer_init(sv->link.loop, &sv->timer);
    sv->timer.data = sv;
    sv->refs++;
    sv->timer_on = 1;
    sv->timeout_ms = (uint64_t)timeout * 1000;
    uv_timer_start(&sv->timer, connect_timeout_cb, sv->timeout_ms, 0);

    s->c2s.reading = 0;   /* hold anything the client pipelines until upstream is ready */
    if (host != NULL && conf_kv_get(kv, "hostaddr") == NULL) {
        char *copy = strdup(host);
        char *save = NULL;
        /* keep empty entries: "a,,b" means a default host in libpq */
        char *p = copy;
        while (p != NULL && cn->nhosts < PG_MAX_HOSTS) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            cn->hosts[cn->nhosts++] = strdup(p);
            p = comma ? comma + 1 : NULL;
        }
        (void)save;
        free(copy);
    }
    cn->ihost = 0;
    resolve_next(sv);
}

