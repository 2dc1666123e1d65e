/*
 * sentinel.c - follow a Redis master through its sentinels (issue 10 part 3).
 *
 * A Redis target written redis-sentinel://[user:pass@]s1[:p1][,s2...]/<master>[/db]
 * (rediss-sentinel:// for TLS to the master) has no fixed address: the parser leaves the
 * master's host empty (protocol/endpoint.h), and this file fills it in and keeps it current.
 *
 *   startup, RELOAD    sy_sentinel_adopt asks the sentinels, in turn,
 *                      SENTINEL get-master-addr-by-name <master> (blocking, bounded), or
 *                      keeps the address a watcher already follows
 *   watcher thread     one per (route, side) with such a target: connects to a sentinel,
 *                      asks for the master again (it may have changed while nobody
 *                      listened), SUBSCRIBEs to the failover events, and on any failure
 *                      goes on to the next sentinel in the list. It only talks; everything
 *                      it learns is posted to the main loop (sy_ctl_post).
 *   main loop          +try-failover: PAUSE the route (sessions stop at their next
 *                      boundary: writes acknowledged by the old master from then on would
 *                      be lost once it is demoted, so none are sent; the sentinel promotes
 *                      the replica a few of its 100 ms ticks later)
 *                      +switch-master, or a master address that differs after a
 *                      reconnect: a copy of the configuration in force with the new
 *                      address is published like a RELOAD of that target (sy_conf_publish:
 *                      the isolation of the swap, then an atomic switch from the old
 *                      address to the new one, which holds and moves the sessions; shared
 *                      multiplexed upstreams re-attach to the new master's); when the
 *                      switch is done the pause ends
 *                      -failover-abort-*, +failover-end-for-timeout, or SN_HOLD_MS without
 *                      a new master: the pause ends, nothing moved
 *
 * The copy of the configuration is shallow: it shares every string and array with the one
 * it replaces except the routes array and the changed target's display strings, which is
 * safe because a replaced configuration is retired, never freed (reload.c).
 *
 * The credentials of the URL are the master's. A sentinel is asked without AUTH; only if it
 * answers NOAUTH does it get the same credentials. Nothing here logs a password: the log
 * lines name the route, the master's name and addresses.
 *
 * Threads: a watcher owns its sn_watch_t. The main loop asks it to stop (an atomic flag)
 * and forgets it; the thread frees it when it sees the flag. Messages carry the watch's id,
 * and the main loop drops those of a watcher it no longer knows.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <hiredis/hiredis.h>
#include "proxy/core/sy.h"
#include "proxy/control/sentinel.h"

#define SN_ASK_TIMEOUT_MS 1000   /* connect and each reply, per sentinel */
#define SN_HOLD_MS        10000  /* a paused failover that names no new master is let go */
#define SN_PING_MS        3000   /* keepalive on the subscription... */
#define SN_SILENT_MS      10000  /* ...and a sentinel silent this long is given up */
#define SN_RETRY_MS       500    /* after every sentinel of the list failed once */

enum { SN_MASTER = 1, SN_BEGIN, SN_ABORT };

typedef struct sn_watch_s {
    size_t        route;
    conf_which_t  which;
    unsigned      id;
    int           stop;          /* atomic; set by the main loop */
    char          name[128];     /* the route's, for the log */
    sy_endpoint_t ep;            /* the thread's copy (credentials included) */
} sn_watch_t;

/* Main loop only: one per route and side. */
typedef struct sn_slot_s {
    sn_watch_t *watch;           /* NULL: no sentinel target there */
    unsigned    id;
    int         paused;          /* this file paused the route for a failover */
    uv_timer_t  hold;
    int         hold_init;
    char        master[EP_HOST_MAX + 8];   /* the address last followed, "host:port" */
} sn_slot_t;

typedef struct sn_msg_s {
    sy_ctl_t     ctl;
    size_t       route;
    conf_which_t which;
    unsigned     id;
    int          kind;
    char         host[EP_HOST_MAX];
    uint16_t     port;
    char         event[48];
} sn_msg_t;

static sn_slot_t *slots;         /* [route * 2 + which] */
static unsigned   next_id;

static sn_slot_t *slot_of(size_t route, conf_which_t which)
{
    return &slots[route * 2 + (which == CONF_EXTERNAL ? 1 : 0)];
}

static conf_target_t *target_of(conf_route_t *r, conf_which_t which)
{
    return which == CONF_EXTERNAL ? &r->external : &r->builtin;
}

static int is_sentinel(const conf_route_t *r, const conf_target_t *t)
{
    return r->proto == CONF_PROTO_REDIS && t->defined && t->redis.sentinel;
}

/* Same sentinels, master name and credentials: the same master to follow. */
static int same_watch(const sy_endpoint_t *a, const sy_endpoint_t *b)
{
    if (a->nsentinels != b->nsentinels || strcmp(a->master, b->master) != 0 || a->tls != b->tls ||
        strcmp(a->user, b->user) != 0 || strcmp(a->password, b->password) != 0)
        return 0;
    for (int i = 0; i < a->nsentinels; i++)
        if (strcmp(a->sentinels[i].host, b->sentinels[i].host) != 0 || a->sentinels[i].port != b->sentinels[i].port)
            return 0;
    return 1;
}

/* ---- talking to one sentinel (any thread) ------------------------------------------- */

static redisContext *sn_connect(const sy_ep_addr_t *a)
{
    struct timeval tv = { SN_ASK_TIMEOUT_MS / 1000, (SN_ASK_TIMEOUT_MS % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(a->host, a->port, tv);
    if (c != NULL && c->err == 0 && redisSetTimeout(c, tv) == REDIS_OK)
        return c;
    if (c != NULL)
        redisFree(c);
    return NULL;
}

/* A command; a sentinel that answers NOAUTH gets the URL's credentials once, then the
 * command again. The reply is the caller's. */
static redisReply *sn_command(redisContext *c, const sy_endpoint_t *ep, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_ERROR || strncmp(r->str, "NOAUTH", 6) != 0 || !ep->has_password)
        return r;
    freeReplyObject(r);
    const char *auth[3] = { "AUTH", ep->user, ep->password };
    redisReply *a = ep->has_user ? redisCommandArgv(c, 3, auth, NULL)
                                 : redisCommandArgv(c, 2, (const char *[]){ "AUTH", ep->password }, NULL);
    if (a == NULL)
        return NULL;
    freeReplyObject(a);
    return redisCommandArgv(c, argc, argv, NULL);
}

/* SENTINEL get-master-addr-by-name. 0 and host/port, or -1 with why. */
static int sn_ask(redisContext *c, const sy_endpoint_t *ep, char *host, uint16_t *port, char *why, size_t wlen)
{
    const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", ep->master };
    redisReply *r = sn_command(c, ep, 3, argv);
    int rc = -1;
    if (r == NULL) {
        snprintf(why, wlen, "%s", c->err ? c->errstr : "no reply");
    } else if (r->type == REDIS_REPLY_NIL) {
        snprintf(why, wlen, "the sentinel knows no master of that name");
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, wlen, "%.200s", r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING || r->element[0]->len == 0 ||
               r->element[0]->len >= EP_HOST_MAX) {
        snprintf(why, wlen, "unexpected reply to SENTINEL get-master-addr-by-name");
    } else {
        char *end = NULL;
        long p = strtol(r->element[1]->str, &end, 10);
        if (end == r->element[1]->str || *end != '\0' || p < 1 || p > 65535) {
            snprintf(why, wlen, "the sentinel named a bad port");
        } else {
            memcpy(host, r->element[0]->str, r->element[0]->len);
            host[r->element[0]->len] = '\0';
            *port = (uint16_t)p;
            rc = 0;
        }
    }
    if (r != NULL)
        freeReplyObject(r);
    return rc;
}

/* ---- the main loop's side ------------------------------------------------------------ */

static void sn_release(sn_slot_t *s, sy_route_t *r, const char *why)
{
    if (s->hold_init)
        uv_timer_stop(&s->hold);
    if (!s->paused)
        return;
    s->paused = 0;
    sy_route_resume(r, why);
}

static void sn_hold_expired(uv_timer_t *t)
{
    sn_slot_t *s = t->data;
    size_t i = (size_t)(s - slots) / 2;
    sy_warn("event=sentinel_hold_expired route=%s after_ms=%d", sy_server.routes[i].conf->name, SN_HOLD_MS);
    sn_release(s, &sy_server.routes[i], "sentinel_hold_expired");
}

static void sn_switch_done(void *ctx, uint64_t moved, uint64_t closed, double ms)
{
    sn_slot_t *s = ctx;
    size_t i = (size_t)(s - slots) / 2;
    sy_info("event=sentinel_switch_done route=%s moved=%llu closed=%llu ms=%.1f", sy_server.routes[i].conf->name,
            (unsigned long long)moved, (unsigned long long)closed, ms);
    sn_release(s, &sy_server.routes[i], "sentinel_switch_done");
}

/* "redis-sentinel://...:26379/m (master 10.0.0.2:6379)" and "10.0.0.2:6379". */
static void sn_strings(conf_target_t *t, char **display, char **hostport)
{
    char ep[EP_HOST_MAX * (EP_SENTINELS_MAX + 1) + 3 * EP_CRED_MAX], hp[EP_HOST_MAX + 24];
    sy_endpoint_format_masked(&t->redis, ep, (int)sizeof(ep));
    sy_endpoint_hostport(&t->redis, hp, (int)sizeof(hp));
    size_t n = strlen(ep) + strlen(hp) + 16;
    *display = malloc(n);
    if (*display != NULL)
        snprintf(*display, n, t->redis.host[0] ? "%s (master %s)" : "%s (%s unknown)", ep, hp);
    *hostport = strdup(hp);
}

/* The configuration in force with one target's master at host:port: shallow (see top). */
static conf_t *conf_with_master(size_t ri, conf_which_t which, const char *host, uint16_t port)
{
    const conf_t *cur = sy_conf();
    conf_t *c = malloc(sizeof(*c));
    conf_route_t *routes = malloc(cur->nroutes * sizeof(*routes));
    if (c == NULL || routes == NULL) {
        free(c);
        free(routes);
        return NULL;
    }
    *c = *cur;
    memcpy(routes, cur->routes, cur->nroutes * sizeof(*routes));
    c->routes = routes;
    conf_target_t *t = target_of(&routes[ri], which);
    snprintf(t->redis.host, sizeof(t->redis.host), "%s", host);
    t->redis.port = port;
    sn_strings(t, &t->display, &t->hostport);
    if (t->display == NULL || t->hostport == NULL) {
        free(t->display);
        free(t->hostport);
        free(routes);
        free(c);
        return NULL;
    }
    return c;
}

static void sn_new_master(sn_slot_t *s, size_t ri, conf_which_t which, const sn_msg_t *m)
{
    sy_route_t *r = &sy_server.routes[ri];
    const conf_target_t *t = sy_route_target(r, which);
    char q[600];
    if (strcmp(t->redis.host, m->host) == 0 && t->redis.port == m->port)
        return;                         /* the master we follow already */
    snprintf(s->master, sizeof(s->master), "%s:%u", m->host, (unsigned)m->port);
    sy_info("event=sentinel_master route=%s side=%s master=%s was=%s via=%s", r->conf->name,
            which == CONF_EXTERNAL ? "external" : "builtin", sy_logq(q, sizeof(q), s->master),
            t->redis.host[0] ? t->hostport : "unknown", m->event);
    conf_t *c = conf_with_master(ri, which, m->host, m->port);
    int moving = c != NULL ? sy_conf_publish(c, "sentinel", sn_switch_done, s) : -1;
    if (moving < 0) {
        sy_err("event=sentinel_master_failed route=%s reason=out_of_memory", r->conf->name);
        free(c != NULL ? c->routes : NULL);
        free(c);
        sn_release(s, r, "sentinel_failed");
    } else if (moving == 0) {
        sn_release(s, r, "sentinel_no_switch");   /* the other side, or a switch running */
    }
}

static void sn_msg_main(sy_ctl_t *ctl)
{
    sn_msg_t *m = (sn_msg_t *)ctl;
    sn_slot_t *s = slots != NULL && m->route < sy_server.nroutes ? slot_of(m->route, m->which) : NULL;
    if (s == NULL || s->watch == NULL || s->id != m->id) {
        free(m);                        /* a stopped watcher's last words */
        return;
    }
    sy_route_t *r = &sy_server.routes[m->route];
    switch (m->kind) {
    case SN_MASTER:
        sn_new_master(s, m->route, m->which, m);
        break;
    case SN_BEGIN:
        if (s->paused || SY_LOAD(r->paused) || r->sw != NULL || sy_route_active(r) != m->which)
            break;
        sy_info("event=sentinel_failover_begin route=%s master_name=%s", r->conf->name, s->watch->ep.master);
        sy_route_pause(r);
        s->paused = 1;
        if (!s->hold_init) {
            uv_timer_init(sy_server.loop, &s->hold);
            s->hold.data = s;
            s->hold_init = 1;
        }
        uv_timer_start(&s->hold, sn_hold_expired, SN_HOLD_MS, 0);
        break;
    case SN_ABORT:
        sy_info("event=sentinel_failover_abort route=%s event_name=%s", r->conf->name, m->event);
        sn_release(s, r, "sentinel_failover_abort");
        break;
    }
    free(m);
}

/* ---- the watcher thread -------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int stopping(sn_watch_t *w)
{
    return __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
}

static void sn_post(sn_watch_t *w, int kind, const char *host, uint16_t port, const char *event)
{
    sn_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return;
    m->ctl.fn = sn_msg_main;
    m->route = w->route;
    m->which = w->which;
    m->id = w->id;
    m->kind = kind;
    if (host != NULL)
        snprintf(m->host, sizeof(m->host), "%s", host);
    m->port = port;
    snprintf(m->event, sizeof(m->event), "%s", event);
    sy_ctl_post(&m->ctl);
}

static const char *const sn_channels[] = {
    "+switch-master", "+try-failover", "-failover-abort-not-elected", "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout", "-failover-abort-master-is-back", "+failover-end-for-timeout",
};
#define SN_NCHANNELS (sizeof(sn_channels) / sizeof(sn_channels[0]))

/* A message on one of sn_channels: ["message", channel, payload]. */
static void sn_event(sn_watch_t *w, const char *channel, const char *payload)
{
    char tok[5][EP_HOST_MAX];
    int n = 0;
    const char *p = payload;
    while (n < 5 && *p) {
        size_t len = strcspn(p, " ");
        if (len > 0 && len < EP_HOST_MAX) {
            memcpy(tok[n], p, len);
            tok[n++][len] = '\0';
        } else if (len >= EP_HOST_MAX) {
            return;
        }
        p += len;
        p += strspn(p, " ");
    }
    if (strcmp(channel, "+switch-master") == 0) {
        /* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
        long port = n == 5 ? strtol(tok[4], NULL, 10) : 0;
        if (n == 5 && strcmp(tok[0], w->ep.master) == 0 && port >= 1 && port <= 65535)
            sn_post(w, SN_MASTER, tok[3], (uint16_t)port, channel);
        return;
    }
    /* "master <name> <ip> <port> ..." */
    if (n < 2 || strcmp(tok[0], "master") != 0 || strcmp(tok[1], w->ep.master) != 0)
        return;
    sn_post(w, strcmp(channel, "+try-failover") == 0 ? SN_BEGIN : SN_ABORT, NULL, 0, channel);
}

/* Follow the subscription until it fails or the watch stops. */
static void sn_listen(sn_watch_t *w, redisContext *c)
{
    uint64_t last_rx = now_ms(), last_ping = last_rx;
    while (!stopping(w)) {
        void *rep = NULL;
        if (redisGetReplyFromReader(c, &rep) != REDIS_OK)
            return;
        if (rep != NULL) {
            redisReply *r = rep;
            last_rx = now_ms();
            if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
                strcmp(r->element[0]->str, "message") == 0 && r->element[1]->type == REDIS_REPLY_STRING &&
                r->element[2]->type == REDIS_REPLY_STRING)
                sn_event(w, r->element[1]->str, r->element[2]->str);
            freeReplyObject(r);
            continue;
        }
        uint64_t now = now_ms();
        if (now - last_rx > SN_SILENT_MS)
            return;
        if (now - last_ping > SN_PING_MS) {
            int done = 0;
            last_ping = now;
            if (redisAppendCommand(c, "PING") != REDIS_OK)
                return;
            while (!done)
                if (redisBufferWrite(c, &done) != REDIS_OK)
                    return;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int pr = poll(&pfd, 1, 200);
        if (pr < 0 && errno != EINTR)
            return;
        if (pr > 0 && redisBufferRead(c) != REDIS_OK)
            return;
    }
}

static void sn_nap(sn_watch_t *w, int ms)
{
    for (int t = 0; t < ms && !stopping(w); t += 50) {
        struct timespec ts = { 0, 50 * 1000000L };
        nanosleep(&ts, NULL);
    }
}

static void *sn_thread(void *arg)
{
    sn_watch_t *w = arg;
    int i = 0, failed = 0, lost_logged = 0;
    char why[256], host[EP_HOST_MAX];
    uint16_t port = 0;
    while (!stopping(w)) {
        const sy_ep_addr_t *a = &w->ep.sentinels[i];
        redisContext *c = sn_connect(a);
        int ok = c != NULL && sn_ask(c, &w->ep, host, &port, why, sizeof(why)) == 0;
        if (ok) {
            const char *argv[1 + SN_NCHANNELS];
            argv[0] = "SUBSCRIBE";
            for (size_t k = 0; k < SN_NCHANNELS; k++)
                argv[1 + k] = sn_channels[k];
            redisReply *r = sn_command(c, &w->ep, 1 + (int)SN_NCHANNELS, argv);
            ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
            if (r != NULL)
                freeReplyObject(r);
        }
        if (ok) {
            sy_info("event=sentinel_watch route=%s master_name=%s sentinel=%s:%u master=%s:%u",
                    w->name, w->ep.master, a->host, (unsigned)a->port, host,
                    (unsigned)port);
            sn_post(w, SN_MASTER, host, port, "get-master-addr-by-name");
            failed = lost_logged = 0;
            sn_listen(w, c);
            if (!stopping(w))
                sy_warn("event=sentinel_lost route=%s sentinel=%s:%u", w->name,
                        a->host, (unsigned)a->port);
        } else if (!lost_logged) {
            sy_warn("event=sentinel_unreachable route=%s sentinel=%s:%u error=\"%s\"",
                    w->name, a->host, (unsigned)a->port,
                    c == NULL ? "cannot connect" : why);
        }
        if (c != NULL)
            redisFree(c);
        i = (i + 1) % w->ep.nsentinels;
        if (!ok && ++failed >= w->ep.nsentinels) {
            lost_logged = 1;            /* said once per round of failures */
            failed = 0;
            sn_nap(w, SN_RETRY_MS);
        }
    }
    explicit_bzero(&w->ep, sizeof(w->ep));
    free(w);
    return NULL;
}

/* ---- startup, reload ----------------------------------------------------------------- */

void sy_sentinel_adopt(conf_t *c)
{
    for (size_t ri = 0; ri < c->nroutes; ri++)
        for (int k = 0; k < 2; k++) {
            conf_which_t which = k ? CONF_EXTERNAL : CONF_BUILTIN;
            conf_target_t *t = target_of(&c->routes[ri], which);
            if (!is_sentinel(&c->routes[ri], t))
                continue;
            const sn_slot_t *s = slots != NULL && ri < sy_server.nroutes ? slot_of(ri, which) : NULL;
            const conf_target_t *cur = s != NULL && s->watch != NULL ? sy_route_target(&sy_server.routes[ri], which)
                                                                   : NULL;
            if (cur != NULL && cur->redis.host[0] && same_watch(&cur->redis, &t->redis)) {
                memcpy(t->redis.host, cur->redis.host, sizeof(t->redis.host));
                t->redis.port = cur->redis.port;
            } else {
                char why[256] = "";
                for (int i = 0; i < t->redis.nsentinels && !t->redis.host[0]; i++) {
                    redisContext *rc = sn_connect(&t->redis.sentinels[i]);
                    if (rc == NULL || sn_ask(rc, &t->redis, t->redis.host, &t->redis.port, why, sizeof(why)) != 0) {
                        t->redis.host[0] = '\0';
                        t->redis.port = 0;
                        sy_warn("event=sentinel_unreachable route=%s sentinel=%s:%u error=\"%s\"",
                                c->routes[ri].name, t->redis.sentinels[i].host, (unsigned)t->redis.sentinels[i].port,
                                rc == NULL ? "cannot connect" : why);
                    }
                    if (rc != NULL)
                        redisFree(rc);
                }
            }
            char *d = NULL, *h = NULL;
            sn_strings(t, &d, &h);
            if (d != NULL && h != NULL) {
                free(t->display);
                free(t->hostport);
                t->display = d;
                t->hostport = h;
            } else {
                free(d);
                free(h);
            }
        }
}

void sy_sentinel_sync(void)
{
    if (slots == NULL) {
        slots = calloc(sy_server.nroutes ? sy_server.nroutes * 2 : 2, sizeof(*slots));
        if (slots == NULL) {
            sy_err("event=sentinel_failed reason=out_of_memory");
            return;
        }
    }
    for (size_t ri = 0; ri < sy_server.nroutes; ri++)
        for (int k = 0; k < 2; k++) {
            conf_which_t which = k ? CONF_EXTERNAL : CONF_BUILTIN;
            sn_slot_t *s = slot_of(ri, which);
            const conf_route_t *rc = sy_server.routes[ri].conf;
            const conf_target_t *t = which == CONF_EXTERNAL ? &rc->external : &rc->builtin;
            int want = is_sentinel(rc, t);
            if (s->watch != NULL && want && same_watch(&s->watch->ep, &t->redis))
                continue;
            if (s->watch != NULL) {
                __atomic_store_n(&s->watch->stop, 1, __ATOMIC_RELEASE);   /* the thread frees it */
                s->watch = NULL;
                sn_release(s, &sy_server.routes[ri], "sentinel_changed");
            }
            if (!want)
                continue;
            sn_watch_t *w = calloc(1, sizeof(*w));
            pthread_t th;
            pthread_attr_t attr;
            if (w == NULL) {
                sy_err("event=sentinel_failed route=%s reason=out_of_memory", rc->name);
                continue;
            }
            w->route = ri;
            w->which = which;
            w->id = ++next_id;
            snprintf(w->name, sizeof(w->name), "%s", rc->name);
            w->ep = t->redis;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&th, &attr, sn_thread, w) != 0) {
                sy_err("event=sentinel_failed route=%s reason=thread", rc->name);
                explicit_bzero(w, sizeof(*w));
                free(w);
            } else {
                s->watch = w;
                s->id = w->id;
            }
            pthread_attr_destroy(&attr);
        }
}
