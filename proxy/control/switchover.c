/*
 * switchover.c - moving a running route from one target to the other, and PAUSE.
 *
 * A switch is accepted after its precheck (admin.c); from that moment route->active names
 * the new target, so every new connection goes there. Sessions still on the old target
 * are then moved, each at a boundary where nothing is in flight (Postgres: after a
 * ReadyForQuery 'I'; Redis: no reply owed, not in MULTI/WATCH, not blocked, not
 * monitoring). The sessions know where their protocol stands; switch_rule.h says what each
 * one does in each phase; this file runs the phases:
 *
 *   PREPARING   every session's new upstream is opened (connect, TLS, auth) while the
 *               session keeps working on the old one, so the hold lasts only as long as
 *               the in-flight transactions plus the state replay
 *   HOLDING     (atomic, the default) each session is held at its next boundary until ALL
 *               sessions of the route are quiet; nothing reaches the new store while the
 *               old one may still be written to
 *   (catch-up)  AFTER CATCHUP only: with every session held, the old target is quiet; the
 *               phase stays HOLDING while catchup.c waits, on the thread pool, until the
 *               new target has applied the old one's position (then MOVING), or gives up
 *               (the route points at the old target again and MOVING releases everyone
 *               there: see "AFTER CATCHUP" below)
 *   MOVING      every quiet session moves; each is released as soon as it stands on the
 *               new target, and sessions opened on the new target meanwhile start
 *   GRADUAL     (GRADUAL mode) each session moves as soon as it is quiet; no global hold
 *   deadline    (drain_timeout) sessions still not quiet - an open transaction, COPY, a
 *               blocked command - are closed with the "switched; reconnect" error
 *   hold budget (switch_hold_max, atomic mode) the same, once HOLDING has lasted that long:
 *               one client that sent half a command and stopped, or one long transaction,
 *               must not hold every well-behaved session of the route for drain_timeout.
 *               The trade-off: a transaction longer than the budget that is open when an
 *               atomic switch begins is cut (GRADUAL waits for it, up to drain_timeout)
 *
 * PAUSE holds sessions at their boundaries the same way, until RESUME or pause_max.
 *
 * Who does what. The control plane (main loop) owns the switch and its phase; it never
 * touches a session. Each phase change is posted to every worker (sy_run_on_all); each
 * worker walks only its own sessions of the route (its list for that route), acts on them
 * on its own loop, and reports back once (PREPARED, QUIET, DONE). The phase moves on when
 * every worker has reported. Sessions that reach a boundary or finish a move poke their
 * own worker, which re-evaluates its list once per loop round; a 20 ms timer per worker
 * and route is the safety net while a switch runs there. So workers move their sessions
 * in parallel, and the hold grows with the sessions per worker, linearly.
 *
 * Sessions read the phase (route->sw_phase, route->sw_mode, route->paused) with atomic
 * loads at their boundaries (sy_route_should_hold).
 */
#include <stdlib.h>
#include <string.h>
#include "proxy/core/sy.h"
#include "proxy/control/switch_rule.h"
#include "proxy/control/catchup.h"

enum { REP_PREPARED = 1, REP_QUIET = 2, REP_DONE = 4 };
enum { OP_PREPARE = 1, OP_STEP, OP_DEADLINE, OP_RELEASE };

/* Owned by the main loop. */
typedef struct sy_switch_s {
    sy_route_t       *route;
    conf_which_t      to;
    int               gradual;
    unsigned          gen;
    sw_phase_t        phase;
    int               past_deadline;
    int               hold_budget;    /* the deadline is switch_hold_max's, not drain_timeout's */
    int               waiting;        /* workers yet to report for this phase */
    unsigned char    *reported;       /* per worker: what it reported this phase */
    uint64_t          started;
    uint64_t          hold_started;   /* when sessions began to be held (preparation done) */
    uint64_t          moving_started; /* when everyone was quiet and the moves began */
    uint64_t          moved, closed;
    uv_timer_t        deadline;
    sy_switch_done_cb done;
    void             *ctx;
    /* AFTER CATCHUP: between HOLDING (all quiet) and MOVING the new target catches up */
    struct cu_box_s  *cu;             /* the options and the result; NULL: a plain switch */
    sy_catchup_job_t *cu_job;         /* the wait, while it runs */
    conf_which_t      from;
    uint64_t          cu_started;
} sy_switch_t;

/* An AFTER CATCHUP switch's options and result, and whom to tell: sw->ctx while it runs. */
typedef struct cu_box_s {
    sy_catchup_opts_t   o;
    sy_catchup_result_t res;
    sy_catchup_done_cb  done;
    void               *ctx;
} cu_box_t;

/* Owned by one worker: its view of one route's switch. */
typedef struct wsw_s {
    sy_route_t *route;
    int         worker;
    unsigned    gen;
    int         active;               /* a switch is running on this route */
    int         preparing;            /* prepares still out (+1 while they are started) */
    int         reported;             /* REP_* sent this switch */
    int         inflight;             /* moves started and not finished (sy_switch_moved):
                                       * a session closed mid-move has left the list, but
                                       * its move still has to be counted */
    uint64_t    moved, closed;
    uv_timer_t  check;                /* deferred re-evaluation and the 20 ms safety net */
    int         check_init;
} wsw_t;

static wsw_t *wsw_all;                /* [worker * nroutes + route] */
static unsigned sw_gen;

static size_t route_index(const sy_route_t *r)
{
    return (size_t)(r - sy_server.routes);
}

static wsw_t *wsw_of(int worker, const sy_route_t *r)
{
    return &wsw_all[(size_t)worker * sy_server.nroutes + route_index(r)];
}

conf_which_t sy_route_active(const sy_route_t *r)
{
    return (conf_which_t)__atomic_load_n(&r->active, __ATOMIC_ACQUIRE);
}

const conf_target_t *sy_route_target(const sy_route_t *r, conf_which_t which)
{
    return which == CONF_EXTERNAL ? &r->conf->external : &r->conf->builtin;
}

/* A session that must move: on this route, not the console, on another target. A target
 * of a configuration RELOAD replaced counts as the same when it reaches the same place the
 * same way (a move that began before the reload lands on the old snapshot's copy). */
static inline int must_move(const sy_session_link_t *l, const sy_route_t *r)
{
    const sy_server_link_t *sv = l->server;
    if (l->route != r || l->console || sv == NULL || sv->target == NULL)
        return 0;
    conf_which_t active = sy_route_active(r);
    const conf_target_t *t = sy_route_target(r, active);
    return sv->target != t && !(sv->which == active && sy_target_equal(sv->target, t));
}

/* The client states a switch acts on: relaying, and stopped at a boundary. */
static const sy_client_state_t acted_on[] = { SY_CLIENT_ACTIVE, SY_CLIENT_HELD };
#define FOR_ACTED_ON(worker, r, l, next) \
    for (size_t st_ = 0; st_ < sizeof(acted_on) / sizeof(acted_on[0]); st_++) \
        for (sy_session_link_t *head_ = sy_worker_sessions_of((worker), (r), acted_on[st_]), \
             *l = head_->next, *next; l != head_ && (next = l->next, 1); l = next)

static int route_mode(const sy_route_t *r)
{
    return SY_LOAD(r->sw_mode) ? SW_MODE_GRADUAL : SW_ATOMIC;
}

int sy_route_should_hold(const sy_session_link_t *l)
{
    if (l->route == NULL || l->console)
        return 0;
    const sy_route_t *r = l->route;
    if (SY_LOAD(r->paused))
        return 1;
    sw_phase_t phase = (sw_phase_t)SY_LOAD(r->sw_phase);
    if (phase == SW_NONE)
        return must_move(l, r);   /* the steady state: the rule of both modes, without the table */
    return sw_stops_at_boundary(route_mode(r), phase, must_move(l, r));
}

int sy_switch_running(const sy_route_t *r)
{
    return r->sw != NULL;
}

/* ---- on the workers ------------------------------------------------------------------ */

typedef struct report_s {
    sy_ctl_t  ctl;
    sy_route_t *route;
    unsigned  gen;
    int       worker, kind;
    uint64_t  moved, closed;
} report_t;

static void sw_report_main(sy_ctl_t *c);

static void wsw_report(wsw_t *w, int kind)
{
    if (w->reported & kind)
        return;
    w->reported |= kind;
    report_t *rep = calloc(1, sizeof(*rep));
    if (rep == NULL) {
        sy_err("event=switch_report_lost route=%s reason=out_of_memory", w->route->conf->name);
        return;
    }
    rep->ctl.fn = sw_report_main;
    rep->route = w->route;
    rep->gen = w->gen;
    rep->worker = w->worker;
    rep->kind = kind;
    rep->moved = w->moved;
    rep->closed = w->closed;
    sy_ctl_post(&rep->ctl);
}

/* Let every held session of this worker's list that no longer has to wait carry on.
 * Releasing can close a session (unlinking it): the walk keeps the next one first, and a
 * release never closes another session. */
static void release_ready(int worker, sy_route_t *r)
{
    sy_session_link_t *head = sy_worker_sessions_of(worker, r, SY_CLIENT_HELD);
    for (sy_session_link_t *l = head->next, *next; l != head; l = next) {
        next = l->next;
        if (!sy_route_should_hold(l)) {
            sy_session_set_state(l, SY_CLIENT_ACTIVE);
            l->release(l);
        }
    }
}

/* Walk this worker's sessions of the route and do what the phase asks. */
static void wsw_eval(wsw_t *w)
{
    sy_route_t *r = w->route;
    if (!w->active)
        return;
    sw_phase_t phase = (sw_phase_t)SY_LOAD(r->sw_phase);
    int mode = route_mode(r);
    int left = 0, unquiet = 0;

    if (phase == SW_PREPARING) {
        if (w->preparing == 0)
            wsw_report(w, REP_PREPARED);
        return;
    }
    if (phase == SW_MOVING || phase == SW_GRADUAL)
        release_ready(w->worker, r);   /* sessions already on the new target may start */
    /* Sessions already moving are counted by inflight. One whose move finishes at once
     * goes back to the end of a list walked here, on its new target: skipped. */
    FOR_ACTED_ON(w->worker, r, l, next) {
        if (!must_move(l, r))
            continue;
        left++;
        int quiet = l->quiet(l);
        if (!quiet)
            unquiet++;
        if (sw_act(mode, phase, SW_SIDE_OLD, quiet, 0) == SW_MOVE) {
            left--;
            l->moved_from = l->state;
            sy_session_set_state(l, SY_CLIENT_MOVING);
            l->in_move = 1;
            w->inflight++;
            l->move(l);   /* may finish (or close the session) at once */
        }
    }
    if (phase == SW_HOLDING && unquiet == 0)
        wsw_report(w, REP_QUIET);
    if ((phase == SW_MOVING || phase == SW_GRADUAL) && left == 0 && w->inflight == 0)
        wsw_report(w, REP_DONE);   /* swapped-out upstreams close at the release */
}

static void wsw_check_cb(uv_timer_t *t)
{
    wsw_eval(t->data);
}

static void wsw_schedule(wsw_t *w)
{
    if (!w->check_init) {
        uv_timer_init(sy_worker_loop(w->worker), &w->check);
        w->check.data = w;
        w->check_init = 1;
    }
    uv_timer_start(&w->check, wsw_check_cb, 0, 20);
}

typedef struct op_s {
    sy_route_t *route;
    unsigned    gen;
    int         op;
    char        why[200];
    /* OP_RELEASE of a finished switch: its result, given once every worker has released
     * its sessions and closed the old upstreams (so when SWITCH answers, the old store no
     * longer sees them) */
    sy_switch_done_cb done;
    void       *done_ctx;
    uint64_t    moved, closed;
    double      ms;
} op_t;

static int post_op_then(sy_route_t *r, unsigned gen, int op, const char *why, const sy_switch_t *sw);

static int post_op(sy_route_t *r, unsigned gen, int op, const char *why)
{
    return post_op_then(r, gen, op, why, NULL);
}

static void op_each(void *ctx, int worker)
{
    op_t *o = ctx;
    sy_route_t *r = o->route;
    wsw_t *w = wsw_of(worker, r);

    switch (o->op) {
    case OP_PREPARE:
        w->gen = o->gen;
        w->active = 1;
        w->reported = 0;
        w->moved = w->closed = 0;
        w->inflight = 0;
        w->preparing = 1;   /* until every prepare below has started */
        FOR_ACTED_ON(worker, r, l, next) {
            if (must_move(l, r) && l->prepare != NULL && !l->preparing) {
                l->preparing = 1;
                w->preparing++;
                l->prepare(l);   /* may finish at once: sy_switch_prepared */
            }
        }
        w->preparing--;
        sy_servers_check_idle(worker, r);   /* the old target's idle servers (pools) go */
        wsw_schedule(w);
        break;
    case OP_STEP:
        if (w->gen != o->gen)
            break;
        wsw_eval(w);
        wsw_schedule(w);
        break;
    case OP_DEADLINE: {
        if (w->gen != o->gen)
            break;
        uint64_t kicked = 0;
        FOR_ACTED_ON(worker, r, l, next) {
            if (must_move(l, r) && !l->quiet(l)) {
                kicked++;
                w->closed++;
                SY_STAT_ADD(r->closed_at_deadline, 1);
                l->kick(l, o->why);   /* unlinks it */
            }
        }
        if (kicked > 0)
            sy_warn("event=switch_deadline route=%s worker=%d closed=%llu", r->conf->name, worker,
                    (unsigned long long)kicked);
        wsw_eval(w);
        wsw_schedule(w);
        break;
    }
    case OP_RELEASE:
        if (o->gen == 0 || w->gen == o->gen) {
            if (o->gen != 0) {
                w->active = 0;
                if (w->check_init)
                    uv_timer_stop(&w->check);
                FOR_ACTED_ON(worker, r, l, next) {
                    if (l->unprepare != NULL)
                        l->unprepare(l);
                }
            }
            release_ready(worker, r);
            wsw_eval(w);
        }
        sy_servers_check_idle(worker, r);   /* ...and any that went idle during the switch */
        sy_close_pending();
        break;
    }
}

static void op_done(void *ctx)
{
    op_t *o = ctx;
    if (o->done)
        o->done(o->done_ctx, o->moved, o->closed, o->ms);
    free(o);
}

static int post_op_then(sy_route_t *r, unsigned gen, int op, const char *why, const sy_switch_t *sw)
{
    op_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return -1;
    o->route = r;
    o->gen = gen;
    o->op = op;
    if (why)
        snprintf(o->why, sizeof(o->why), "%s", why);
    if (sw != NULL) {
        o->done = sw->done;
        o->done_ctx = sw->ctx;
        o->moved = sw->moved;
        o->closed = sw->closed;
        o->ms = (double)(uv_now(sy_server.loop) - sw->started);
    }
    if (sy_run_on_all(op_each, op_done, o) != 0) {
        free(o);
        return -1;
    }
    return 0;
}

void sy_switch_poke(sy_route_t *r)
{
    /* No switch (the steady state, every transaction's end): nothing to look at. Between a
     * switch's end and its release a worker is still active, but in SW_NONE its step does
     * nothing (wsw_eval). */
    if (r == NULL || SY_LOAD(r->sw_phase) == SW_NONE)
        return;
    int worker = sy_worker_self();
    if (worker < 0 || wsw_all == NULL)
        return;
    wsw_t *w = wsw_of(worker, r);
    if (w->active)
        wsw_schedule(w);
}

void sy_switch_moved(sy_session_link_t *l, int ok)
{
    sy_route_t *r = l->route;
    if (r == NULL || !l->in_move)
        return;
    l->in_move = 0;
    if (l->state == SY_CLIENT_MOVING)
        sy_session_set_state(l, SY_CLIENT_ACTIVE);
    wsw_t *w = wsw_of(sy_loop_index(l->loop), r);
    if (w->inflight > 0)
        w->inflight--;
    if (ok) {
        SY_STAT_ADD(r->moved, 1);
        w->moved++;
    } else {
        w->closed++;
    }
    sy_switch_poke(r);
}

void sy_switch_prepared(sy_session_link_t *l)
{
    if (!l->preparing)
        return;
    l->preparing = 0;
    if (l->route == NULL)
        return;
    wsw_t *w = wsw_of(sy_loop_index(l->loop), l->route);
    if (w->preparing > 0 && --w->preparing == 0)
        sy_switch_poke(l->route);
}

/* ---- on the main loop ------------------------------------------------------------------ */

static void sw_timer_closed(uv_handle_t *h)
{
    sy_switch_t *sw = h->data;
    free(sw->reported);
    free(sw);
}

static void sw_enter(sy_switch_t *sw, sw_phase_t phase)
{
    sy_route_t *r = sw->route;
    sw->phase = phase;
    sw->waiting = sy_nworkers();
    memset(sw->reported, 0, (size_t)sy_nworkers());
    SY_STORE(r->sw_phase, (int)phase);
    if (post_op(r, sw->gen, OP_STEP, NULL) != 0)
        sy_err("event=switch_post_failed route=%s reason=out_of_memory", r->conf->name);
}

static void sw_finish(sy_switch_t *sw)
{
    sy_route_t *r = sw->route;
    double ms = (double)(uv_now(sy_server.loop) - sw->started);
    double hold = sw->hold_started ? (double)(uv_now(sy_server.loop) - sw->hold_started) : 0;
    r->sw = NULL;
    r->last_switch_ms = ms;
    r->last_hold_ms = hold;
    SY_STORE(r->sw_phase, (int)SW_NONE);
    uint64_t now = uv_now(sy_server.loop);
    uint64_t prep = (sw->hold_started ? sw->hold_started : now) - sw->started;
    uint64_t quiet = sw->moving_started && sw->hold_started ? sw->moving_started - sw->hold_started : 0;
    uint64_t moving = sw->moving_started ? now - sw->moving_started : 0;
    sy_info("event=switch_done route=%s to=%s moved=%llu closed=%llu duration_ms=%.0f hold_ms=%.0f prepare_ms=%llu "
            "quiet_ms=%llu move_ms=%llu", r->conf->name, sw->to == CONF_EXTERNAL ? "external" : "builtin",
            (unsigned long long)sw->moved, (unsigned long long)sw->closed, ms, hold, (unsigned long long)prep,
            (unsigned long long)quiet, (unsigned long long)moving);
    if (sw->cu != NULL)
        sw->cu->res.hold_ms = hold;
    if (post_op_then(r, sw->gen, OP_RELEASE, NULL, sw) != 0 && sw->done)
        sw->done(sw->ctx, sw->moved, sw->closed, ms);   /* out of memory: answer now */
    uv_timer_stop(&sw->deadline);
    uv_close((uv_handle_t *)&sw->deadline, sw_timer_closed);
}

static void sw_deadline_cb(uv_timer_t *t);

/* Atomic switches hold for switch_hold_max at most: the deadline comes sooner when the
 * budget ends before drain_timeout does. */
static void sw_arm_hold_budget(sy_switch_t *sw)
{
    uint64_t budget = (uint64_t)sy_conf()->switch_hold_max * 1000;
    uint64_t drain_end = sw->started + (uint64_t)sy_conf()->drain_timeout * 1000;
    uint64_t now = uv_now(sy_server.loop);
    if (sw->gradual || budget == 0 || now + budget >= drain_end)
        return;
    sw->hold_budget = 1;
    uv_timer_start(&sw->deadline, sw_deadline_cb, budget, 0);
}

static void cu_begin(sy_switch_t *sw);

static void sw_report_main(sy_ctl_t *c)
{
    report_t *rep = (report_t *)c;
    sy_switch_t *sw = rep->route->sw;
    int want = 0;
    if (sw != NULL && sw->gen == rep->gen) {
        want = sw->phase == SW_PREPARING ? REP_PREPARED : sw->phase == SW_HOLDING ? REP_QUIET : REP_DONE;
        if (rep->kind == REP_DONE) {
            sw->moved += rep->moved;
            sw->closed += rep->closed;
        }
    }
    if (want != 0 && rep->kind == want && !(sw->reported[rep->worker] & want)) {
        sw->reported[rep->worker] |= (unsigned char)want;
        if (--sw->waiting == 0) {
            if (sw->phase == SW_PREPARING) {
                sw->hold_started = uv_now(sy_server.loop);
                sy_debug("event=switch_prepared route=%s ms=%llu", sw->route->conf->name,
                         (unsigned long long)(sw->hold_started - sw->started));
                if (sw->gradual)
                    sw->moving_started = sw->hold_started;
                sw_arm_hold_budget(sw);
                sw_enter(sw, sw->gradual ? SW_GRADUAL : SW_HOLDING);
            } else if (sw->phase == SW_HOLDING && sw->cu != NULL) {
                cu_begin(sw);   /* the old target is quiet; MOVING follows in cu_end */
            } else if (sw->phase == SW_HOLDING) {
                sw->moving_started = uv_now(sy_server.loop);
                sw_enter(sw, SW_MOVING);
            } else {
                sw_finish(sw);
            }
        }
    }
    free(rep);
}

static void sw_deadline_cb(uv_timer_t *t)
{
    sy_switch_t *sw = t->data;
    sy_route_t *r = sw->route;
    char why[200];
    snprintf(why, sizeof(why), "route %s switched to %s; reconnect", r->conf->name,
             sw->to == CONF_EXTERNAL ? "external" : "builtin");
    sy_warn("event=switch_deadline route=%s phase=%d reason=%s", r->conf->name, (int)sw->phase,
            sw->hold_budget ? "switch_hold_max" : "drain_timeout");
    sw->past_deadline = 1;
    if (sw->cu != NULL && (sw->phase == SW_PREPARING || sw->phase == SW_HOLDING)) {
        /* AFTER CATCHUP: the stalled sessions are closed, the others stay held; the wait
         * for the new target begins once the old one is quiet (workers that reported
         * QUIET in HOLDING stay counted). */
        if (sw->hold_started == 0)
            sw->hold_started = uv_now(sy_server.loop);
        if (sw->phase == SW_PREPARING) {
            sw->phase = SW_HOLDING;
            sw->waiting = sy_nworkers();
            memset(sw->reported, 0, (size_t)sy_nworkers());
            SY_STORE(r->sw_phase, (int)sw->phase);
        }
    } else if (sw->phase == SW_PREPARING || sw->phase == SW_HOLDING) {
        if (sw->hold_started == 0)
            sw->hold_started = uv_now(sy_server.loop);
        sw->phase = sw->gradual ? SW_GRADUAL : SW_MOVING;
        sw->moving_started = uv_now(sy_server.loop);
        sw->waiting = sy_nworkers();
        memset(sw->reported, 0, (size_t)sy_nworkers());
        SY_STORE(r->sw_phase, (int)sw->phase);
    }
    /* Quiet sessions move; the others are closed. Workers that reported DONE have no
     * session left on the old target. */
    if (post_op(r, sw->gen, OP_DEADLINE, why) != 0)
        sy_err("event=switch_post_failed route=%s reason=out_of_memory", r->conf->name);
}

int sy_switch_init(char *err, size_t errlen)
{
    int nw = sy_nworkers();
    wsw_all = calloc((size_t)nw * (sy_server.nroutes ? sy_server.nroutes : 1), sizeof(wsw_t));
    if (wsw_all == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int w = 0; w < nw; w++)
        for (size_t i = 0; i < sy_server.nroutes; i++) {
            wsw_all[(size_t)w * sy_server.nroutes + i].route = &sy_server.routes[i];
            wsw_all[(size_t)w * sy_server.nroutes + i].worker = w;
        }
    return 0;
}

int sy_switch_start(sy_route_t *r, conf_which_t to, int gradual, sy_switch_done_cb done, void *ctx)
{
    if (r->sw != NULL)
        return -1;
    sy_switch_t *sw = calloc(1, sizeof(*sw));
    unsigned char *rep = calloc((size_t)sy_nworkers(), 1);
    if (sw == NULL || rep == NULL) {
        free(sw);
        free(rep);
        return -1;
    }
    sw->reported = rep;
    sw->route = r;
    sw->to = to;
    sw->gradual = gradual;
    sw->done = done;
    sw->ctx = ctx;
    sw->gen = ++sw_gen;
    sw->started = uv_now(sy_server.loop);
    sw->phase = SW_PREPARING;
    sw->waiting = sy_nworkers();
    r->switches++;
    r->sw = sw;
    SY_STORE(r->sw_mode, gradual ? 1 : 0);
    SY_STORE(r->sw_phase, (int)SW_PREPARING);
    SY_STORE(r->active, to);
    uv_timer_init(sy_server.loop, &sw->deadline);
    sw->deadline.data = sw;
    uv_timer_start(&sw->deadline, sw_deadline_cb, (uint64_t)sy_conf()->drain_timeout * 1000, 0);
    sy_info("event=switch_begin route=%s to=%s mode=%s", r->conf->name, to == CONF_EXTERNAL ? "external" : "builtin",
            gradual ? "gradual" : "atomic");
    /* Open every session's new upstream first, on each worker. */
    if (post_op(r, sw->gen, OP_PREPARE, NULL) != 0)
        sy_err("event=switch_post_failed route=%s reason=out_of_memory", r->conf->name);
    return 0;
}

/* ---- AFTER CATCHUP ------------------------------------------------------------------- */

/*
 * An AFTER CATCHUP switch is an atomic switch with one step more: when every session of the
 * route is held (the old target is quiet), the catch-up job (catchup.c) runs on the thread
 * pool, and only then do the sessions move. The hold budget (switch_hold_max) and
 * drain_timeout bound the way to quiet, as for any atomic switch: sessions that do not
 * reach a boundary are closed then. The wait that follows is the catch-up's own, bounded
 * by TIMEOUT: the sessions held during it are at their boundaries, not stalled, so the
 * deadline timer is stopped for it and serves as the job's safety net instead (TIMEOUT +
 * CU_GRACE_MS: a control connection that hangs). If the new target does not catch up,
 * nothing moves: the route points at the old target again, the sessions held there are
 * released, and sessions opened on the new target meanwhile (held at their first
 * boundary, nothing sent yet) move back.
 */
#define CU_GRACE_MS 3000

static void cu_box_done(void *ctx, uint64_t moved, uint64_t closed, double ms)
{
    cu_box_t *b = ctx;
    b->res.moved = moved;
    b->res.closed = closed;
    b->res.ms = ms;
    b->done(b->ctx, &b->res);
    free(b);
}

static void cu_end(void *arg, const sy_catchup_result_t *res)
{
    sy_switch_t *sw = arg;
    sy_route_t *r = sw->route;
    uint64_t now = uv_now(sy_server.loop);
    char q[800];
    sw->cu_job = NULL;
    sw->cu->res = *res;
    sw->cu->res.wait_ms = (double)(now - sw->cu_started);
    uv_timer_stop(&sw->deadline);
    if (res->ok) {
        sy_info("event=switch_caught_up route=%s to=%s how=%s position=%s wait_ms=%.0f promoted=%s", r->conf->name,
                sw->to == CONF_EXTERNAL ? "external" : "builtin", res->how, res->position, sw->cu->res.wait_ms,
                sy_logq(q, sizeof(q), res->promoted));
    } else {
        sy_warn("event=switch_refused route=%s to=%s reason=catchup behind=%lld wait_ms=%.0f error=%s",
                r->conf->name, sw->to == CONF_EXTERNAL ? "external" : "builtin", (long long)res->behind,
                sw->cu->res.wait_ms, sy_logq(q, sizeof(q), res->err));
        sw->to = sw->from;
        SY_STORE(r->active, sw->from);
    }
    sw->moving_started = now;
    sw->hold_budget = 0;
    uv_timer_start(&sw->deadline, sw_deadline_cb, (uint64_t)sy_conf()->drain_timeout * 1000, 0);
    sw_enter(sw, SW_MOVING);
}

static void cu_safety_cb(uv_timer_t *t)
{
    sy_switch_t *sw = t->data;
    sy_catchup_result_t res;
    memset(&res, 0, sizeof(res));
    res.behind = -1;
    snprintf(res.err, sizeof(res.err), "no answer from the control connections within %d s",
             sw->cu->o.timeout_s + CU_GRACE_MS / 1000);
    sy_catchup_abandon(sw->cu_job);
    cu_end(sw, &res);
}

static void cu_begin(sy_switch_t *sw)
{
    sy_route_t *r = sw->route;
    sw->cu_started = uv_now(sy_server.loop);
    uv_timer_stop(&sw->deadline);
    sy_info("event=switch_catchup route=%s to=%s timeout_s=%d promote=%d held_ms=%llu", r->conf->name,
            sw->to == CONF_EXTERNAL ? "external" : "builtin", sw->cu->o.timeout_s, sw->cu->o.promote,
            (unsigned long long)(sw->cu_started - sw->hold_started));
    sw->cu_job = sy_catchup_start(r->conf, sw->from, sw->to, &sw->cu->o, cu_end, sw);
    if (sw->cu_job == NULL) {
        sy_catchup_result_t res;
        memset(&res, 0, sizeof(res));
        res.behind = -1;
        snprintf(res.err, sizeof(res.err), "cannot start the catch-up wait (out of memory)");
        cu_end(sw, &res);
        return;
    }
    uv_timer_start(&sw->deadline, cu_safety_cb, (uint64_t)sw->cu->o.timeout_s * 1000 + CU_GRACE_MS, 0);
}

int sy_switch_start_after_catchup(sy_route_t *r, conf_which_t to, const sy_catchup_opts_t *o,
                                  sy_catchup_done_cb done, void *ctx)
{
    conf_which_t from = sy_route_active(r);
    cu_box_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return -1;
    b->o = *o;
    b->done = done;
    b->ctx = ctx;
    b->res.behind = -1;
    if (sy_switch_start(r, to, 0, cu_box_done, b) != 0) {
        free(b);
        return -1;
    }
    sy_switch_t *sw = r->sw;   /* its first reports come from the workers later */
    sw->cu = b;
    sw->from = from;
    return 0;
}

/* ---- PAUSE / RESUME ------------------------------------------------------------------ */

static void pause_timer_closed(uv_handle_t *h)
{
    free(h);
}

static void pause_expired(uv_timer_t *t)
{
    sy_route_t *r = t->data;
    sy_warn("event=pause_expired route=%s after_s=%d", r->conf->name, sy_conf()->pause_max);
    sy_route_resume(r, "pause_max");
}

int sy_route_pause(sy_route_t *r)
{
    if (SY_LOAD(r->paused))
        return 0;
    SY_STORE(r->paused, 1);   /* sessions stop at their next boundary by themselves */
    r->pause_timer = malloc(sizeof(uv_timer_t));
    if (r->pause_timer != NULL) {
        uv_timer_init(sy_server.loop, r->pause_timer);
        r->pause_timer->data = r;
        uv_timer_start(r->pause_timer, pause_expired, (uint64_t)sy_conf()->pause_max * 1000, 0);
    }
    sy_info("event=pause route=%s max_s=%d", r->conf->name, sy_conf()->pause_max);
    return 0;
}

void sy_route_resume(sy_route_t *r, const char *why)
{
    if (!SY_LOAD(r->paused))
        return;
    SY_STORE(r->paused, 0);
    if (r->pause_timer != NULL) {
        uv_timer_stop(r->pause_timer);
        uv_close((uv_handle_t *)r->pause_timer, pause_timer_closed);
        r->pause_timer = NULL;
    }
    sy_info("event=resume route=%s reason=%s", r->conf->name, why);
    /* Each worker releases its held sessions (and steps a running switch). */
    if (post_op(r, 0, OP_RELEASE, NULL) != 0)
        sy_err("event=resume_post_failed route=%s reason=out_of_memory", r->conf->name);
}
