/*
 * metrics.c - Prometheus metrics, /healthz and /readyz on a small loopback HTTP server, and
 * the health probes behind route->healthy.
 *
 * HTTP (not the data path, so a plain uv_tcp_t): one request per connection, answered
 * with Connection: close. The request head goes through protocol/http_req one read at a
 * time and is never buffered; the response is built whole (header and body in one
 * allocation that the connection owns until it is freed) and written once.
 *
 *   accept ─▶ READING ──head complete──▶ WRITING ──sent, FIN──▶ LINGER ──EOF──▶ CLOSING ─▶ freed
 *               │  malformed or > 8 KiB: 400      │ write error     │ 5 s timer  (both handles'
 *               │  2 s without a whole head: 408   └─────────────────┴──────────▶  close callbacks)
 *               └─ client gone, or evicted ───────────────────────────────────▶
 *
 * LINGER keeps reading (and discarding) after the response until the client closes, so
 * that unread request bytes never turn our close into a reset that eats the response.
 *
 * Staying up under half-sent requests (slowloris): the endpoint is what a liveness probe
 * asks, and a probe that fails restarts the container. A probe sends its whole request in
 * one packet, so a head gets 2 s, not more. At most MX_CONNS_MAX connections are open;
 * when a new one would go over, the oldest connection still waiting for its request head
 * is closed to make room (haproxy and nginx do the same for idle keep-alives), so a flood
 * of incomplete requests delays a complete one by nothing. Only when every open
 * connection is already being answered is the newcomer itself refused.
 *
 *   GET /metrics   text format 0.0.4, one family after another, each with HELP and TYPE
 *   GET /healthz   liveness: 200 "ok" while the process serves (this loop answers)
 *   GET /readyz    readiness: 200 "ok" when every route's last probe of its active target
 *                  succeeded, else 503 with "route <name>: <host:port>: <cause>" per
 *                  failing route (orchestrators stop sending traffic, not restart us)
 *   HEAD           as GET without the body; other methods 405; other paths 404
 *
 * The health probes behind /readyz (route->healthy) are in probe.c. They run even when
 * metrics_listen is off: SHOW ROUTES reports health too.
 */
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netdb.h>
#include "proxy/core/sy.h"
#include "proxy/control/admin.h"
#include "proxy/control/metrics.h"
#include "proxy/control/probe.h"
#include "protocol/http_req.h"

#define MX_REQUEST_MS       2000    /* a whole request head must arrive within this */
#define MX_RESPONSE_MS      5000    /* writing the response and lingering after it */
#define MX_CONNS_MAX        512     /* open HTTP connections (see "Staying up" above) */
#define MX_BACKLOG          511

#define PROM_CONTENT_TYPE   "text/plain; version=0.0.4; charset=utf-8"
#define TEXT_CONTENT_TYPE   "text/plain; charset=utf-8"

/* ---- a growable text buffer --------------------------------------------------------- */

typedef struct mx_buf_s {
    char  *p;
    size_t len, cap;
    int    oom;     /* sticky: an allocation failed, the content is incomplete */
} mx_buf_t;

static void buf_printf(mx_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(mx_buf_t *b, const char *fmt, ...)
{
    while (!b->oom) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void buf_label_value(mx_buf_t *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *s);
    }
}

/* One line of text for /readyz: control characters become spaces. */
static void buf_text(mx_buf_t *b, const char *s)
{
    for (; s && *s; s++)
        buf_printf(b, "%c", (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s);
}

static struct {
    uv_tcp_t     server;
    int          server_on;
    int          stopping;
    struct mx_conn_s *conns;    /* live HTTP connections, doubly linked, newest first */
    struct mx_conn_s *oldest;   /* ...and the other end */
    int          nconns;
    int          closing;       /* of those, closing: counted until their close callbacks */
    uint64_t     evicted;       /* connections closed to make room for a newer one */
    uint64_t     next_id;
} mx;

static const conf_target_t *route_target(const sy_route_t *r, conf_which_t w)
{
    return w == CONF_EXTERNAL ? &r->conf->external : &r->conf->builtin;
}

static const char *target_hostport(const sy_route_t *r, conf_which_t w)
{
    const conf_target_t *t = route_target(r, w);
    return t->defined && t->hostport ? t->hostport : "(none)";
}

/* ---- /metrics and /readyz ----------------------------------------------------------- */

static const char *proto_name(const sy_route_t *r)
{
    return r->conf->proto == CONF_PROTO_PG ? "postgres" : "redis";
}

static void family(mx_buf_t *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{route="..",protocol=".."[,key="val"]} ` - the value follows. */
static void series(mx_buf_t *b, const char *name, const sy_route_t *r, const char *key, const char *val)
{
    buf_printf(b, "%s{route=\"", name);
    buf_label_value(b, r->conf->name);
    buf_printf(b, "\",protocol=\"%s\"", proto_name(r));
    if (key) {
        buf_printf(b, ",%s=\"", key);
        buf_label_value(b, val);
        buf_printf(b, "\"");
    }
    buf_printf(b, "} ");
}

static void u64_sample(mx_buf_t *b, const char *name, const sy_route_t *r, const char *key, const char *val,
                       uint64_t v)
{
    series(b, name, r, key, val);
    buf_printf(b, "%llu\n", (unsigned long long)v);
}

/* The per-route families, in the order they are written. Most have one series per
 * route read by `get`; the others have their own kind. */
typedef enum { RF_PLAIN = 0, RF_ACTIVE, RF_BYTES, RF_ERRORS, RF_SECONDS } route_family_kind_t;

typedef struct route_family_s {
    const char          *name, *type, *help;
    route_family_kind_t  kind;
    uint64_t           (*get)(const sy_route_t *r);
} route_family_t;

static uint64_t get_clients(const sy_route_t *r) { return SY_LOAD(r->clients); }
static uint64_t get_upstreams(const sy_route_t *r) { return SY_LOAD(r->upstreams); }
static uint64_t get_transactions(const sy_route_t *r) { return sy_route_transactions(r); }
static uint64_t get_switches(const sy_route_t *r) { return r->switches; }
static uint64_t get_deadline(const sy_route_t *r) { return SY_LOAD(r->closed_at_deadline); }
static uint64_t get_moved(const sy_route_t *r) { return SY_LOAD(r->moved); }
static uint64_t get_paused(const sy_route_t *r) { return SY_LOAD(r->paused) != 0; }
static uint64_t get_healthy(const sy_route_t *r) { return r->healthy == 1; }

static const route_family_t route_families[] = {
    { "switchyard_route_active_target", "gauge", "1 for the target the route sends new sessions to.",
      RF_ACTIVE, NULL },
    { "switchyard_route_clients", "gauge", "Client sessions open on the route.", RF_PLAIN, get_clients },
    { "switchyard_route_upstream_sessions", "gauge", "Upstream sessions open for the route.", RF_PLAIN,
      get_upstreams },
    { "switchyard_route_transactions_total", "counter",
      "Postgres transactions (ReadyForQuery relayed) or Redis commands (replies relayed).", RF_PLAIN,
      get_transactions },
    { "switchyard_route_bytes_total", "counter",
      "Bytes relayed: in = client to upstream, out = upstream to client (counted when sessions end).",
      RF_BYTES, NULL },
    { "switchyard_route_errors_total", "counter",
      "Errors sent to clients, by kind: connect (upstream unreachable or rejected us), lost (upstream "
      "died under a session), protocol (malformed bytes), other.", RF_ERRORS, NULL },
    { "switchyard_route_switches_total", "counter", "Switches of the route between its targets.", RF_PLAIN,
      get_switches },
    { "switchyard_route_last_switch_duration_seconds", "gauge",
      "How long the last switch of the route took (0 before the first).", RF_SECONDS, NULL },
    { "switchyard_route_sessions_closed_at_deadline_total", "counter",
      "Sessions closed because they could not move before the switchover or shutdown deadline.", RF_PLAIN,
      get_deadline },
    { "switchyard_route_sessions_moved_total", "counter", "Sessions moved to the other target by switchovers.",
      RF_PLAIN, get_moved },
    { "switchyard_route_paused", "gauge", "1 while the route is paused.", RF_PLAIN, get_paused },
    { "switchyard_route_healthy", "gauge",
      "1 when the last health probe of the active target succeeded (0 until the first probe).", RF_PLAIN,
      get_healthy },
};

static void route_samples(mx_buf_t *b, const route_family_t *f, const sy_route_t *r)
{
    uint64_t known;
    switch (f->kind) {
    case RF_PLAIN:
        u64_sample(b, f->name, r, NULL, NULL, f->get(r));
        break;
    case RF_ACTIVE:
        u64_sample(b, f->name, r, "target", "builtin", r->active == CONF_BUILTIN);
        u64_sample(b, f->name, r, "target", "external", r->active == CONF_EXTERNAL);
        break;
    case RF_BYTES:
        u64_sample(b, f->name, r, "direction", "in", SY_LOAD(r->bytes_in));
        u64_sample(b, f->name, r, "direction", "out", SY_LOAD(r->bytes_out));
        break;
    case RF_ERRORS:
    {
        uint64_t ec = SY_LOAD(r->err_connect), el = SY_LOAD(r->err_lost), ep = SY_LOAD(r->err_protocol);
        uint64_t all = SY_LOAD(r->nerrors);
        known = ec + el + ep;
        u64_sample(b, f->name, r, "kind", "connect", ec);
        u64_sample(b, f->name, r, "kind", "lost", el);
        u64_sample(b, f->name, r, "kind", "protocol", ep);
        u64_sample(b, f->name, r, "kind", "other", all > known ? all - known : 0);
    }
        break;
    case RF_SECONDS:
        series(b, f->name, r, NULL, NULL);
        buf_printf(b, "%.6f\n", r->last_switch_ms > 0 ? r->last_switch_ms / 1000.0 : 0.0);
        break;
    }
}

static void render_metrics(mx_buf_t *b)
{
    family(b, "switchyard_build_info", "gauge", "switchyard build; the value is always 1.");
    buf_printf(b, "switchyard_build_info{version=\"%s\"} 1\n", SY_VERSION);
    family(b, "switchyard_clients", "gauge", "Client connections open, on every listener.");
    buf_printf(b, "switchyard_clients %llu\n", (unsigned long long)SY_LOAD(sy_server.nclients));
    /* Sessions per worker loop: each worker counts its own (atomic), nobody stops. */
    family(b, "switchyard_worker_clients", "gauge", "Client connections open on each worker thread.");
    for (int w = 0; w < sy_nworkers(); w++)
        buf_printf(b, "switchyard_worker_clients{worker=\"%d\"} %llu\n", w,
                   (unsigned long long)sy_worker_sessions(w));
    for (size_t f = 0; f < sizeof(route_families) / sizeof(route_families[0]); f++) {
        family(b, route_families[f].name, route_families[f].type, route_families[f].help);
        for (size_t i = 0; i < sy_server.nroutes; i++)
            route_samples(b, &route_families[f], &sy_server.routes[i]);
    }
    /* Client and server connections by state: the lengths of the workers' lists. */
    family(b, "switchyard_route_client_states", "gauge", "Client connections of the route in each state.");
    for (size_t i = 0; i < sy_server.nroutes; i++)
        for (int st = 0; st < SY_CLIENT_NSTATES; st++) {
            uint64_t n = 0;
            for (int w = 0; w < sy_nworkers(); w++)
                n += sy_worker_clients_in(w, &sy_server.routes[i], (sy_client_state_t)st);
            u64_sample(b, "switchyard_route_client_states", &sy_server.routes[i], "state", sy_client_state_names[st], n);
        }
    family(b, "switchyard_route_server_states", "gauge", "Server connections of the route in each state.");
    for (size_t i = 0; i < sy_server.nroutes; i++)
        for (int st = 0; st < SY_SERVER_NSTATES; st++) {
            uint64_t n = 0;
            for (int w = 0; w < sy_nworkers(); w++)
                n += sy_worker_servers_in(w, &sy_server.routes[i], (sy_server_state_t)st);
            u64_sample(b, "switchyard_route_server_states", &sy_server.routes[i], "state", sy_server_state_names[st], n);
        }
    /* Postgres session pooling (pg_pool.c). */
    family(b, "switchyard_route_pool_idle_servers", "gauge", "Server connections kept idle for reuse.");
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        uint64_t n = 0;
        for (int w = 0; w < sy_nworkers(); w++)
            n += sy_worker_servers_in(w, &sy_server.routes[i], SY_SERVER_IDLE);
        u64_sample(b, "switchyard_route_pool_idle_servers", &sy_server.routes[i], NULL, NULL, n);
    }
    family(b, "switchyard_route_pool_reuses_total", "counter", "Clients given an idle server instead of a new one.");
    for (size_t i = 0; i < sy_server.nroutes; i++)
        u64_sample(b, "switchyard_route_pool_reuses_total", &sy_server.routes[i], NULL, NULL,
                   SY_LOAD(sy_server.routes[i].pool_reuses));
    family(b, "switchyard_route_pool_resets_total", "counter", "Server connections reset (DISCARD ALL) and kept idle.");
    for (size_t i = 0; i < sy_server.nroutes; i++)
        u64_sample(b, "switchyard_route_pool_resets_total", &sy_server.routes[i], NULL, NULL,
                   SY_LOAD(sy_server.routes[i].pool_resets));
    static const struct { const char *name, *help; size_t off; } rel[] = {
        { "switchyard_route_pool_releases_total", "Idle clients that gave their server connection back (server_release_delay).",
          offsetof(sy_route_t, pool_releases) },
        { "switchyard_route_pool_retakes_total", "Released clients that took a server connection again for their next message.",
          offsetof(sy_route_t, pool_retakes) },
        { "switchyard_route_pool_pins_total", "Idle clients kept on their server because the server holds session state.",
          offsetof(sy_route_t, pool_pins) },
    };
    for (size_t k = 0; k < sizeof(rel) / sizeof(rel[0]); k++) {
        family(b, rel[k].name, "counter", rel[k].help);
        for (size_t i = 0; i < sy_server.nroutes; i++)
            u64_sample(b, rel[k].name, &sy_server.routes[i], NULL, NULL,
                       SY_LOAD(*(uint64_t *)((char *)&sy_server.routes[i] + rel[k].off)));
    }
    family(b, "switchyard_route_reconnects_total", "counter",
           "Idle sessions reconnected, their state replayed, after their upstream closed (reconnect_window).");
    for (size_t i = 0; i < sy_server.nroutes; i++)
        u64_sample(b, "switchyard_route_reconnects_total", &sy_server.routes[i], NULL, NULL,
                   SY_LOAD(sy_server.routes[i].reconnects));
    family(b, "switchyard_http_evicted_total", "counter",
           "Metrics connections closed before their request head arrived, to make room for a newer one.");
    buf_printf(b, "switchyard_http_evicted_total %llu\n", (unsigned long long)mx.evicted);
}

/* /readyz. Returns the HTTP status: 200 when every route is healthy, else 503. */
static int render_readyz(mx_buf_t *b)
{
    int bad = 0;
    for (size_t i = 0; i < sy_server.nroutes; i++) {
        const sy_route_t *r = &sy_server.routes[i];
        if (r->healthy == 1)
            continue;
        bad++;
        /* The probed target's address: the active one, except for the moment after a
         * switch before its first probe, when the cause is still the old target's. */
        buf_printf(b, "route %s: %s: ", r->conf->name, target_hostport(r, sy_probe_target(i)));
        buf_text(b, r->health_err[0] ? r->health_err : "unhealthy");
        buf_printf(b, "\n");
    }
    if (bad == 0)
        buf_printf(b, "ok\n");
    return bad ? 503 : 200;
}

/* ---- HTTP connections --------------------------------------------------------------- */

typedef enum {
    MX_READING = 0,   /* reading the request head; the request timer runs */
    MX_WRITING,       /* the response is being written; reads stopped */
    MX_LINGER,        /* response sent and FIN queued; reading and discarding until EOF */
    MX_CLOSING        /* handles closing; freed when both close callbacks ran */
} mx_conn_state_t;

typedef struct mx_conn_s {
    uv_tcp_t          tcp;
    uv_timer_t        timer;
    uv_write_t        wreq;
    uv_shutdown_t     sreq;
    mx_conn_state_t   state;
    int               open_handles;   /* close callbacks still to come */
    uint64_t          id;
    http_req_t        req;
    char             *resp;           /* header and body, owned until the connection is freed */
    struct mx_conn_s *prev, *next;
    char              rbuf[4096];
} mx_conn_t;

static const char *state_name(mx_conn_state_t s)
{
    static const char *const names[] = { "reading", "writing", "linger", "closing" };
    return (unsigned)s < 4 ? names[s] : "?";
}

/* The one place a connection changes state; an impossible move is a bug. */
static void conn_set_state(mx_conn_t *c, mx_conn_state_t to)
{
    int ok;
    switch (c->state) {
    case MX_READING: ok = to == MX_WRITING || to == MX_CLOSING; break;
    case MX_WRITING: ok = to == MX_LINGER || to == MX_CLOSING; break;
    case MX_LINGER:  ok = to == MX_CLOSING; break;
    default:         ok = 0; break;
    }
    if (!ok) {
        sy_err("event=bug where=metrics conn=m%llu from=%s to=%s", (unsigned long long)c->id,
               state_name(c->state), state_name(to));
        abort();
    }
    c->state = to;
}

static void conn_free_cb(uv_handle_t *h)
{
    mx_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    mx.closing--;
    if (c->prev)
        c->prev->next = c->next;
    else
        mx.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        mx.oldest = c->prev;
    mx.nconns--;
    free(c->resp);
    free(c);
}

static void conn_close(mx_conn_t *c)
{
    if (c->state == MX_CLOSING)
        return;
    conn_set_state(c, MX_CLOSING);
    mx.closing++;
    uv_close((uv_handle_t *)&c->tcp, conn_free_cb);
    uv_close((uv_handle_t *)&c->timer, conn_free_cb);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mx_conn_t *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void timer_cb(uv_timer_t *t);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    mx_conn_t *c = req->data;
    if (status < 0 && c->state != MX_CLOSING)
        conn_close(c);
}

static void write_cb(uv_write_t *req, int status)
{
    mx_conn_t *c = req->data;
    if (c->state == MX_CLOSING)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_set_state(c, MX_LINGER);
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shutdown_cb) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_close(c);
}

/* Send one whole response and close after it. extra: more header lines ("Allow: ...\r\n"). */
static void respond(mx_conn_t *c, int status, const char *reason, const char *ctype, const char *extra,
                    const char *body, size_t blen, int head_only)
{
    char hdr[512];
    int hn = snprintf(hdr, sizeof(hdr),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%sCache-Control: no-store\r\n"
                      "Connection: close\r\n\r\n", status, reason, ctype, blen, extra ? extra : "");
    size_t send_body = head_only ? 0 : blen;
    uv_read_stop((uv_stream_t *)&c->tcp);
    sy_debug("event=http conn=m%llu method=%s status=%d bytes=%zu", (unsigned long long)c->id,
             c->req.done ? c->req.method : "-", status, blen);
    if (hn < 0 || (size_t)hn >= sizeof(hdr) || (c->resp = malloc((size_t)hn + send_body)) == NULL) {
        conn_close(c);
        return;
    }
    memcpy(c->resp, hdr, (size_t)hn);
    if (send_body)
        memcpy(c->resp + hn, body, send_body);
    conn_set_state(c, MX_WRITING);
    uv_timer_start(&c->timer, timer_cb, MX_RESPONSE_MS, 0);
    uv_buf_t wb = uv_buf_init(c->resp, (unsigned)((size_t)hn + send_body));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &wb, 1, write_cb) != 0)
        conn_close(c);
}

static void respond_text(mx_conn_t *c, int status, const char *reason, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void respond_text(mx_conn_t *c, int status, const char *reason, const char *extra, const char *fmt, ...)
{
    char body[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(body))
        n = sizeof(body) - 1;
    respond(c, status, reason, TEXT_CONTENT_TYPE, extra, body, (size_t)n, 0);
}

static void handle_request(mx_conn_t *c)
{
    http_req_uri_t uri;
    int is_metrics = 0, is_healthz = 0, is_readyz = 0;
    if (http_req_split_target(c->req.target, &uri) == 0) {
        is_metrics = http_req_path_is(&uri, "/metrics");
        is_healthz = http_req_path_is(&uri, "/healthz");
        is_readyz = http_req_path_is(&uri, "/readyz");
    }
    int is_head = strcmp(c->req.method, "HEAD") == 0;

    if (!is_metrics && !is_healthz && !is_readyz) {
        respond_text(c, 404, "Not Found", NULL, "not found; try /metrics, /healthz or /readyz\n");
        return;
    }
    if (!is_head && strcmp(c->req.method, "GET") != 0) {
        respond_text(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "method not allowed\n");
        return;
    }
    mx_buf_t b = { NULL, 0, 0, 0 };
    int status = 200;
    if (is_metrics)
        render_metrics(&b);
    else if (is_readyz)
        status = render_readyz(&b);
    else
        buf_printf(&b, "ok\n");    /* liveness: we are answering */
    if (b.oom)
        respond_text(c, 500, "Internal Server Error", NULL, "out of memory\n");
    else
        respond(c, status, status == 200 ? "OK" : "Service Unavailable",
                is_metrics ? PROM_CONTENT_TYPE : TEXT_CONTENT_TYPE, NULL, b.p ? b.p : "", b.len, is_head);
    free(b.p);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mx_conn_t *c = s->data;
    if (nread == 0)
        return;
    switch (c->state) {
    case MX_READING:
        if (nread < 0) {        /* the client left before a whole request */
            conn_close(c);
            return;
        }
        if (http_req_parse(&c->req, (const uint8_t *)buf->base, (size_t)nread) == HTTP_REQ_ERR)
            respond_text(c, 400, "Bad Request", NULL, "bad request: %s\n", c->req.err);
        else if (c->req.done)
            handle_request(c);
        return;
    case MX_LINGER:
        if (nread < 0)
            conn_close(c);
        return;
    default:
        return;
    }
}

static void timer_cb(uv_timer_t *t)
{
    mx_conn_t *c = t->data;
    if (c->state == MX_READING && c->req.head_bytes > 0)
        respond_text(c, 408, "Request Timeout", NULL, "request timeout\n");
    else
        conn_close(c);
}

/* Close the oldest connection (other than c) still waiting for its request head.
 * 1 when one was closed. */
static int evict_oldest_reader(const mx_conn_t *c)
{
    for (mx_conn_t *o = mx.oldest; o != NULL; o = o->prev) {
        if (o != c && o->state == MX_READING) {
            mx.evicted++;
            sy_warn("event=metrics_evict conn=m%llu head_bytes=%zu open=%d evicted=%llu", (unsigned long long)o->id,
                    (size_t)o->req.head_bytes, mx.nconns, (unsigned long long)mx.evicted);
            conn_close(o);
            return 1;
        }
    }
    return 0;
}

static void accept_cb(uv_stream_t *server, int status)
{
    if (status < 0) {
        sy_warn("event=metrics_accept_error error=%s", uv_strerror(status));
        return;
    }
    mx_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        sy_warn("event=metrics_accept_error error=\"out of memory\"");
        return;
    }
    c->id = ++mx.next_id;
    c->state = MX_READING;
    c->open_handles = 2;
    uv_tcp_init(sy_server.loop, &c->tcp);
    uv_timer_init(sy_server.loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->next = mx.conns;
    if (mx.conns)
        mx.conns->prev = c;
    else
        mx.oldest = c;
    mx.conns = c;
    mx.nconns++;
    http_req_init(&c->req, HTTP_REQ_HEAD_MAX);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    if (mx.nconns - mx.closing > MX_CONNS_MAX && !evict_oldest_reader(c)) {
        sy_warn("event=metrics_busy conn=m%llu open=%d", (unsigned long long)c->id, mx.nconns - 1);
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, timer_cb, MX_REQUEST_MS, 0);
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_close(c);
}

/* Split "host:port" / "[v6]:port" (conf has validated the form) and listen on it. */
static int server_start(const char *addr, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    const char *hs = addr;
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    if (colon == NULL || hl == 0 || hl >= sizeof(host)) {
        snprintf(err, errlen, "metrics_listen: bad address %s", addr);
        return -1;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int r = getaddrinfo(host, colon + 1, &hints, &res);   /* at startup, before the loop runs */
    if (r != 0) {
        snprintf(err, errlen, "cannot resolve %s for metrics: %s", addr, gai_strerror(r));
        return -1;
    }
    uv_tcp_init(sy_server.loop, &mx.server);
    mx.server_on = 1;
    int rc = uv_tcp_bind(&mx.server, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&mx.server, MX_BACKLOG, accept_cb);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s for metrics: %s", addr, uv_strerror(rc));
        uv_close((uv_handle_t *)&mx.server, NULL);
        mx.server_on = 0;
        return -1;
    }
    sy_info("event=metrics_listen addr=%s", addr);
    return 0;
}

/* ---- start / stop ------------------------------------------------------------------- */

int sy_metrics_start(char *err, size_t errlen)
{
    const char *addr = sy_conf()->metrics_listen;
    if (addr && *addr && strcmp(addr, "off") != 0 && server_start(addr, err, errlen) != 0)
        return -1;
    return sy_probes_start(err, errlen);
}

void sy_metrics_stop(void)
{
    if (mx.stopping)
        return;
    mx.stopping = 1;
    if (mx.server_on) {
        uv_close((uv_handle_t *)&mx.server, NULL);
        mx.server_on = 0;
    }
    for (mx_conn_t *c = mx.conns; c; c = c->next)
        conn_close(c);
    sy_probes_stop();
}
