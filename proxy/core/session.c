/*
 * session.c - where client and server connections are: one list per worker, route and
 * state (see sy.h), as PgBouncer's pools keep their sockets on state lists.
 *
 *   lists[worker][1 + route index]   clients by sy_client_state_t, servers by
 *                                    sy_server_state_t, with their lengths
 *   lists[worker][0]                 clients not routed yet, and console sessions
 *
 * A connection changes state by moving to another list (sy_session_set_state,
 * sy_server_set_state): O(1), on its own worker, no lock. The lengths are atomics so the
 * control plane and the metrics tick can read gauges without walking anything.
 */
#include <stdint.h>
#include <stdlib.h>
#include "proxy/core/sy.h"

const char *const sy_client_state_names[SY_CLIENT_NSTATES] = { "active", "held", "moving", "closing" };
const char *const sy_server_state_names[SY_SERVER_NSTATES] = { "connecting", "active", "idle", "closing" };

typedef struct lists_s {
    sy_session_link_t clients[SY_CLIENT_NSTATES];   /* list heads */
    sy_server_link_t  servers[SY_SERVER_NSTATES];
    uint32_t          nclients[SY_CLIENT_NSTATES];  /* atomic */
    uint32_t          nservers[SY_SERVER_NSTATES];  /* atomic */
} lists_t;

static lists_t  *lists;       /* [worker * per_worker + slot] */
static size_t    per_worker;  /* 1 + number of routes */
static uint64_t *totals;      /* clients per worker (atomic) */

int sy_lists_init(int n)
{
    per_worker = 1 + sy_server.nroutes;
    lists = calloc((size_t)n * per_worker, sizeof(*lists));
    totals = calloc((size_t)n, sizeof(*totals));
    if (lists == NULL || totals == NULL)
        return -1;
    for (size_t i = 0; i < (size_t)n * per_worker; i++) {
        for (int k = 0; k < SY_CLIENT_NSTATES; k++)
            lists[i].clients[k].next = lists[i].clients[k].prev = &lists[i].clients[k];
        for (int k = 0; k < SY_SERVER_NSTATES; k++)
            lists[i].servers[k].next = lists[i].servers[k].prev = &lists[i].servers[k];
    }
    return 0;
}

static lists_t *lists_of(int worker, const sy_route_t *r)
{
    size_t slot = r ? 1 + (size_t)(r - sy_server.routes) : 0;
    return &lists[(size_t)worker * per_worker + (slot < per_worker ? slot : 0)];
}

static int worker_of(const uv_loop_t *loop)
{
    return sy_loop_index(loop);
}

/* The same doubly linked list for both kinds: prev and next come first in each. */
#define LIST_INSERT(head, x) do { (x)->next = (head); (x)->prev = (head)->prev; \
        (head)->prev->next = (x); (head)->prev = (x); } while (0)
#define LIST_REMOVE(x) do { (x)->prev->next = (x)->next; (x)->next->prev = (x)->prev; \
        (x)->next = (x)->prev = NULL; } while (0)

/* A connection remembers the lists it is on, so that whoever changes its route before
 * telling us (sy_session_set_route) cannot make us count it off the wrong one. */
static void client_insert(sy_session_link_t *l)
{
    lists_t *ls = lists_of(worker_of(l->loop), l->route);
    l->on = ls;
    LIST_INSERT(&ls->clients[l->state], l);
    SY_STAT_ADD(ls->nclients[l->state], 1);
}

static void client_remove(sy_session_link_t *l)
{
    lists_t *ls = l->on;
    LIST_REMOVE(l);
    SY_STAT_SUB(ls->nclients[l->state], 1);
}

void sy_session_link(sy_session_link_t *l)
{
    l->state = SY_CLIENT_ACTIVE;
    client_insert(l);
    SY_STAT_ADD(totals[worker_of(l->loop)], 1);
    if (l->listener != NULL)
        SY_STAT_ADD(l->listener->nclients, 1);
}

void sy_session_unlink(sy_session_link_t *l)
{
    if (l->next == NULL)
        return;
    sy_session_set_pinned(l, 0);
    client_remove(l);
    SY_STAT_SUB(totals[worker_of(l->loop)], 1);
    if (l->listener != NULL)
        SY_STAT_SUB(l->listener->nclients, 1);
}

void sy_session_set_route(sy_session_link_t *l, sy_route_t *r)
{
    if (l->next != NULL)
        client_remove(l);
    l->route = r;
    client_insert(l);
}

void sy_session_set_state(sy_session_link_t *l, sy_client_state_t st)
{
    if (l->state == st)
        return;
    if (l->next == NULL) {
        l->state = st;
        return;
    }
    client_remove(l);
    l->state = st;
    client_insert(l);
}

void sy_session_set_pinned(sy_session_link_t *l, int pinned)
{
    pinned = pinned != 0;
    if (l->pinned == pinned)
        return;
    l->pinned = pinned;
    if (l->route != NULL) {
        if (pinned)
            SY_STAT_ADD(l->route->pinned, 1);
        else
            SY_STAT_SUB(l->route->pinned, 1);
    }
}

void sy_session_route(sy_session_link_t *l, sy_route_t *r, sy_server_link_t *sv,
                      void (*describe)(const sy_server_link_t *sv, char cols[][128]))
{
    sy_session_set_route(l, r);
    conf_which_t which = sy_route_active(r);
    sy_server_open(sv, l, which, sy_route_target(r, which), describe);
    l->server = sv;
}

void sy_server_open(sy_server_link_t *sv, sy_session_link_t *client, conf_which_t which,
                    const conf_target_t *t, void (*describe)(const sy_server_link_t *sv, char cols[][128]))
{
    sv->loop = client->loop;
    sv->route = client->route;
    sv->which = which;
    sv->target = t;
    sv->state = SY_SERVER_CONNECTING;
    sv->client = client;
    sv->describe = describe;
    sy_server_link(sv);
}

void sy_session_relaying(sy_session_link_t *l)
{
    if (l->server != NULL)
        sy_server_set_state(l->server, SY_SERVER_ACTIVE);
}

void sy_session_closing(sy_session_link_t *l)
{
    sy_session_set_state(l, SY_CLIENT_CLOSING);
    if (l->server != NULL)
        sy_server_set_state(l->server, SY_SERVER_CLOSING);
}

void sy_server_link(sy_server_link_t *s)
{
    lists_t *ls = lists_of(worker_of(s->loop), s->route);
    s->on = ls;
    LIST_INSERT(&ls->servers[s->state], s);
    SY_STAT_ADD(ls->nservers[s->state], 1);
}

void sy_server_unlink(sy_server_link_t *s)
{
    if (s->next == NULL)
        return;
    lists_t *ls = s->on;
    LIST_REMOVE(s);
    SY_STAT_SUB(ls->nservers[s->state], 1);
}

void sy_server_set_state(sy_server_link_t *s, sy_server_state_t st)
{
    if (s->state == st)
        return;
    if (s->next == NULL) {
        s->state = st;
        return;
    }
    sy_server_unlink(s);
    s->state = st;
    sy_server_link(s);
}

sy_session_link_t *sy_worker_sessions_of(int worker, const sy_route_t *r, sy_client_state_t st)
{
    return &lists_of(worker, r)->clients[st];
}

sy_server_link_t *sy_worker_servers_of(int worker, const sy_route_t *r, sy_server_state_t st)
{
    return &lists_of(worker, r)->servers[st];
}

uint32_t sy_worker_clients_in(int worker, const sy_route_t *r, sy_client_state_t st)
{
    return SY_LOAD(lists_of(worker, r)->nclients[st]);
}

uint32_t sy_worker_servers_in(int worker, const sy_route_t *r, sy_server_state_t st)
{
    return SY_LOAD(lists_of(worker, r)->nservers[st]);
}

uint64_t sy_worker_sessions(int worker)
{
    return SY_LOAD(totals[worker]);
}

/* An idle_check may close its server (it leaves the list) but no other. */
static void check_idle(lists_t *ls, uint64_t now)
{
    sy_server_link_t *head = &ls->servers[SY_SERVER_IDLE];
    for (sy_server_link_t *s = head->next, *next; s != head; s = next) {
        next = s->next;
        if (s->idle_check != NULL)
            s->idle_check(s, now);
    }
}

void sy_servers_check_idle(int worker, const sy_route_t *r)
{
    check_idle(lists_of(worker, r), uv_now(sy_worker_loop(worker)));
}

void sy_sweep(int worker, uint64_t now)
{
    /* A tick may close its session (it moves to CLOSING, a list not walked here) but no
     * other: the walk keeps the next one first. */
    for (size_t slot = 0; slot < per_worker; slot++) {
        lists_t *ls = &lists[(size_t)worker * per_worker + slot];
        static const sy_client_state_t walked[] = { SY_CLIENT_ACTIVE, SY_CLIENT_HELD };
        for (size_t k = 0; k < sizeof(walked) / sizeof(walked[0]); k++) {
            sy_session_link_t *head = &ls->clients[walked[k]];
            for (sy_session_link_t *l = head->next, *next; l != head; l = next) {
                next = l->next;
                if (l->tick != NULL)
                    l->tick(l, now);
            }
        }
        check_idle(ls, now);
    }
    sy_pipe_sweep();   /* after a burst of closed sessions, memory goes back */
}

int sy_client_stalled(const sy_pipe_t *c2s, int mid_message, uint64_t active_at, uint64_t now)
{
    uint64_t stall = (uint64_t)sy_conf()->client_stall_timeout * 1000;
    return stall > 0 && mid_message && c2s->reading && !c2s->full && now - active_at >= stall;
}
