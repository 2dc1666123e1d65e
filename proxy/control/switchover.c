/*
 * switchover.c - moving a running route from one target to the other, and PAUSE.
 *
 * A switch is accepted after its precheck (admin.c); from that moment route->active names
 * the new target, so every new connection goes there. Sessions still on the old target
 * are then moved, each at a boundary where nothing is in flight (Postgres: after a
 * ReadyForQuery 'I'; Redis: no reply owed, not in MULTI/WATCH, not blocked, not
 * monitoring). The sessions themselves know where their protocol stands; this file only
 * decides when to move whom:
 *
 *   atomic (default)  every session that reaches a boundary is held there (its next
 *                     transaction or command waits in our buffer) until ALL sessions of
 *                     the route are quiet; then all move, and each is released as soon as
 *                     it stands on the new target. Nothing reaches the old store after
 *                     anything reached the new one.
 *   GRADUAL           each session moves as soon as it is quiet; no global hold.
 *
 *   deadline          (drain_timeout) sessions that are still not quiet - an open
 *                     transaction, COPY, a blocked command - are closed with the
 *                     "switched; reconnect" error; quiet ones move.
 *
 * PAUSE holds sessions at their boundaries the same way, until RESUME or pause_max.
 *
 * Before anyone is held, each session's new upstream is opened (connect, TLS, auth) while
 * the session keeps working on the old one, so the hold only lasts as long as the
 * in-flight transactions plus the state replay, not a connection setup.
 *
 * A 20 ms check timer runs while a switch is in progress, so a quiet session that sends
 * nothing is still noticed; sessions also poke the switch when they reach a boundary.
 *
 * Everything here runs on the main loop with the worker loops stopped (worker.c), so it
 * may walk and drive sessions of every loop; sessions on workers reach it only through
 * sy_switch_poke, which asks the main loop to step.
 */
#include <stdlib.h>
#include <string.h>
#include "proxy/core/sy.h"

typedef struct sy_switch_s {
    sy_route_t       *route;
    conf_which_t      to;
    int               gradual;
    int               moving_all;     /* atomic: everyone was quiet, moves started */
    int               preparing;      /* new upstreams are being opened; nobody is held yet */
    int               past_deadline;
    uint64_t          started;
    uint64_t          hold_started;   /* when sessions began to be held (preparation done) */
    uint64_t          moved, closed;
    uv_timer_t        deadline;
    uv_timer_t        check;
    int               closing;        /* timers being closed */
    sy_switch_done_cb done;
    void             *ctx;
} sy_switch_t;

static const conf_target_t *active_target(const sy_route_t *r)
{
    return r->active == CONF_EXTERNAL ? &r->conf->external : &r->conf->builtin;
}

/* A session that must move: on this route, not the console, on another target. */
static int must_move(const sy_session_link_t *l, const sy_route_t *r)
{
    return l->route == r && !l->console && l->target != NULL && l->target != active_target(r);
}

int sy_route_should_hold(const sy_session_link_t *l)
{
    if (l->route == NULL || l->console)
        return 0;
    const sy_switch_t *sw = l->route->sw;
    if (l->route->paused)
        return 1;
    if (must_move(l, l->route))
        return sw == NULL || !sw->preparing;   /* old target: stop at the next boundary */
    /* New target (a session opened since the switch began): in atomic mode its first
     * transaction waits until every old session is quiet, so nothing reaches the new store
     * while the old one may still be written to. */
    return sw != NULL && !sw->gradual && !sw->moving_all && !sw->past_deadline;
}

/* Let every held session of r that no longer has to wait carry on. Releasing can close a
 * session (unlinking it), so the walk restarts each time. */
static void release_ready(sy_route_t *r)
{
    for (;;) {
        sy_session_link_t *pick = NULL;
        for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
            if (l->route == r && l->held && !l->moving && !sy_route_should_hold(l)) {
                pick = l;
                break;
            }
        if (pick == NULL)
            return;
        pick->held = 0;
        pick->release(pick);
    }
}

int sy_switch_running(const sy_route_t *r)
{
    return r->sw != NULL;
}

static void sw_timers_closed(uv_handle_t *h)
{
    sy_switch_t *sw = h->data;
    if (--sw->closing == 0)
        free(sw);
}

static void sw_finish(sy_switch_t *sw)
{
    sy_route_t *r = sw->route;
    double ms = (double)(uv_now(sy_server.loop) - sw->started);
    r->sw = NULL;
    r->last_switch_ms = ms;
    double hold = sw->hold_started ? (double)(uv_now(sy_server.loop) - sw->hold_started) : 0;
    r->last_hold_ms = hold;
    sy_info("event=switch_done route=%s to=%s moved=%llu closed=%llu duration_ms=%.0f hold_ms=%.0f", r->conf->name,
            sw->to == CONF_EXTERNAL ? "external" : "builtin", (unsigned long long)sw->moved,
            (unsigned long long)sw->closed, ms, hold);
    release_ready(r);
    if (sw->done)
        sw->done(sw->ctx, sw->moved, sw->closed, ms);
    uv_timer_stop(&sw->deadline);
    uv_timer_stop(&sw->check);
    sw->closing = 2;
    uv_close((uv_handle_t *)&sw->deadline, sw_timers_closed);
    uv_close((uv_handle_t *)&sw->check, sw_timers_closed);
}

/* Decide who moves now; finish when nobody is left on the old target. */
static void sw_step(sy_switch_t *sw)
{
    sy_route_t *r = sw->route;
    int left = 0, all_quiet = 1, moving = 0;

    if (sw->preparing) {
        int busy = 0;
        for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
            if (must_move(l, r) && l->preparing)
                busy++;
        if (busy > 0 && !sw->past_deadline)
            return;
        sw->preparing = 0;
        sw->hold_started = uv_now(sy_server.loop);
        sy_debug("event=switch_prepared route=%s ms=%llu", r->conf->name,
                 (unsigned long long)(sw->hold_started - sw->started));
    }
    for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next) {
        if (!must_move(l, r))
            continue;
        left++;
        if (l->moving) {
            moving++;
            continue;
        }
        if (!l->quiet(l))
            all_quiet = 0;
    }
    if (left == 0) {
        sw_finish(sw);
        return;
    }
    if (!sw->gradual && !sw->moving_all && !all_quiet && !sw->past_deadline)
        return;   /* atomic: hold until everyone is quiet */
    if (!sw->gradual && !sw->moving_all) {
        sw->moving_all = 1;
        release_ready(r);   /* sessions already on the new target may start now */
        if (r->sw != sw)
            return;
    }
    /* Start every quiet session's move. A move can complete (or close the session)
     * synchronously, so restart the walk after each one. */
    for (;;) {
        sy_session_link_t *pick = NULL;
        for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
            if (must_move(l, r) && !l->moving && l->quiet(l)) {
                pick = l;
                break;
            }
        if (pick == NULL)
            break;
        pick->moving = 1;
        pick->move(pick);
        if (r->sw != sw)
            return;   /* finished inside */
    }
    (void)moving;
}

/* Sessions on worker loops only flag the route; the main loop steps the switch (see
 * worker.c). On the main loop (the world stopped) the step runs at once. */
void sy_switch_poke(sy_route_t *r)
{
    if (r == NULL || r->sw == NULL)
        return;
    if (!sy_on_main()) {
        __atomic_store_n(&r->poke, 1, __ATOMIC_RELEASE);
        sy_ctl_wake();
        return;
    }
    sw_step(r->sw);
}

void sy_switch_moved(sy_session_link_t *l, int ok)
{
    sy_route_t *r = l->route;
    l->moving = 0;
    if (r == NULL)
        return;
    sy_switch_t *sw = r->sw;
    if (ok) {
        SY_STAT_ADD(r->moved, 1);
        if (sw)
            SY_STAT_ADD(sw->moved, 1);
    } else if (sw) {
        SY_STAT_ADD(sw->closed, 1);
    }
    sy_switch_poke(r);
}

void sy_switch_prepared(sy_session_link_t *l)
{
    l->preparing = 0;
    sy_switch_poke(l->route);
}

static void sw_check_cb(uv_timer_t *t)
{
    sw_step(t->data);
}

static void sw_deadline_cb(uv_timer_t *t)
{
    sy_switch_t *sw = t->data;
    sy_route_t *r = sw->route;
    char why[200];
    snprintf(why, sizeof(why), "route %s switched to %s; reconnect", r->conf->name,
             sw->to == CONF_EXTERNAL ? "external" : "builtin");
    sw->past_deadline = 1;
    uint64_t before = r->closed_at_deadline;
    /* Quiet sessions still move; the others are closed. */
    for (;;) {
        sy_session_link_t *pick = NULL;
        for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
            if (must_move(l, r) && !l->moving && !l->quiet(l)) {
                pick = l;
                break;
            }
        if (pick == NULL)
            break;
        r->closed_at_deadline++;
        sw->closed++;
        pick->kick(pick, why);   /* unlinks it */
    }
    sy_warn("event=switch_deadline route=%s closed=%llu", r->conf->name,
            (unsigned long long)(r->closed_at_deadline - before));
    if (r->sw == sw)
        sw_step(sw);
}

int sy_switch_start(sy_route_t *r, conf_which_t to, int gradual, sy_switch_done_cb done, void *ctx)
{
    if (r->sw != NULL)
        return -1;
    sy_switch_t *sw = calloc(1, sizeof(*sw));
    if (sw == NULL)
        return -1;
    sw->route = r;
    sw->to = to;
    sw->gradual = gradual;
    sw->done = done;
    sw->ctx = ctx;
    sw->started = uv_now(sy_server.loop);
    r->active = to;
    r->switches++;
    r->sw = sw;
    uv_timer_init(sy_server.loop, &sw->deadline);
    uv_timer_init(sy_server.loop, &sw->check);
    sw->deadline.data = sw;
    sw->check.data = sw;
    uv_timer_start(&sw->deadline, sw_deadline_cb, (uint64_t)sy_server.conf.drain_timeout * 1000, 0);
    uv_timer_start(&sw->check, sw_check_cb, 20, 20);
    sy_info("event=switch_begin route=%s to=%s mode=%s", r->conf->name, to == CONF_EXTERNAL ? "external" : "builtin",
            gradual ? "gradual" : "atomic");
    /* Open every session's new upstream first; prepare may finish synchronously. */
    sw->preparing = 1;
    for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
        if (must_move(l, r) && l->prepare != NULL)
            l->preparing = 1;
    for (;;) {
        sy_session_link_t *pick = NULL;
        for (sy_session_link_t *l = sy_sessions.next; l != &sy_sessions; l = l->next)
            if (must_move(l, r) && l->preparing == 1) {
                pick = l;
                break;
            }
        if (pick == NULL)
            break;
        pick->preparing = 2;   /* started */
        pick->prepare(pick);
        if (r->sw != sw)
            return 0;
    }
    sw_step(sw);
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
    sy_warn("event=pause_expired route=%s after_s=%d", r->conf->name, sy_server.conf.pause_max);
    sy_route_resume(r, "pause_max");
}

int sy_route_pause(sy_route_t *r)
{
    if (r->paused)
        return 0;
    r->paused = 1;
    r->pause_timer = malloc(sizeof(uv_timer_t));
    if (r->pause_timer != NULL) {
        uv_timer_init(sy_server.loop, r->pause_timer);
        r->pause_timer->data = r;
        uv_timer_start(r->pause_timer, pause_expired, (uint64_t)sy_server.conf.pause_max * 1000, 0);
    }
    sy_info("event=pause route=%s max_s=%d", r->conf->name, sy_server.conf.pause_max);
    return 0;
}

void sy_route_resume(sy_route_t *r, const char *why)
{
    if (!r->paused)
        return;
    r->paused = 0;
    if (r->pause_timer != NULL) {
        uv_timer_stop(r->pause_timer);
        uv_close((uv_handle_t *)r->pause_timer, pause_timer_closed);
        r->pause_timer = NULL;
    }
    sy_info("event=resume route=%s reason=%s", r->conf->name, why);
    release_ready(r);
    sy_switch_poke(r);
}
