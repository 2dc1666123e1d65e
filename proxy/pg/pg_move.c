/*
 * pg_move.c - switchover for a Postgres session: its new upstream opened ahead (prepare),
 * the move itself (state query on the old upstream, connect, replay on the new one, on the
 * thread pool), and the hooks switchover.c drives.
 */
#include "proxy/pg/pg_internal.h"

/* ---- switchover: moving a session to another target ------------------------------ */

/*
 * With the session quiet (ReadyForQuery 'I', nothing in flight), the old upstream is
 * idle exactly as libpq left it when we adopted it, so libpq can use it again. On the
 * thread pool:
 *   1. ask the old session what cannot move (temporary tables, advisory locks, WITH HOLD
 *      cursors) and what must (SET values, prepared statements, LISTEN channels);
 *   2. connect to the new target with the client's original startup parameters;
 *   3. replay the settings, the prepared statements (same names: a driver's statement
 *      cache keeps working) and the LISTENs.
 * Back on the loop the new server is attached, the old one closed ("moved"), and the client is
 * told about ParameterStatus values that changed, and given any notification that
 * arrived on the old session meanwhile. None of this traffic reaches the client.
 *
 * The job uses two server objects, both marked as in a job's use (pg_server_t.job): the
 * session's server (from) and its next one (to, s->pre: on the CONNECTING list meanwhile,
 * for SHOW SERVERS and a RELOAD's retarget). On the pool thread it touches only their
 * PGconns, copied into the job (old, conn). A session closed meanwhile closes both, and
 * the close waits for the job: move_done finishes them (pg_server_job_done).
 */
typedef struct pg_move_s {
    uv_work_t     req;
    pg_session_t *s;
    pg_server_t  *from, *to;
    PGconn       *old, *conn; /* from->pg; to's connection (NULL: the job opens it) */
    pg_params_t   pp;
    int           ok;
    char          err[512];
    pgr_buf_t     notifies;   /* NotificationResponse messages for the client */
    uint64_t      started;
} pg_move_t;

static void no_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Types below FirstNormalObjectId are Postgres's own, the same on every server; others
 * (enums, domains, composites, extensions' types) have the OIDs of the server that made
 * them, and a copy made by pg_dump or logical replication numbers them differently. */
#define PG_FIRST_NORMAL_OID 16384u

static int has_user_types(const char *oids)
{
    const char *perr;
    size_t len = strlen(oids);
    ssize_t n = pgw_parse_oid_array(oids, len, NULL, PGW_OID_ARRAY_MAX, &perr);
    Oid *t = n > 0 ? malloc((size_t)n * sizeof(*t)) : NULL;
    int user = 0;
    if (t != NULL && pgw_parse_oid_array(oids, len, t, (size_t)n, &perr) == n)
        for (ssize_t i = 0; i < n && !user; i++)
            user = t[i] >= PG_FIRST_NORMAL_OID;
    free(t);
    return user;
}

/* The parameter types of a protocol-level prepared statement, as OIDs of the new server:
 * the old server's where they are all built in, else its qualified type names ("{...}",
 * from the state query) resolved by name here. Returns the OID array's text (malloc'd),
 * or NULL with m->err set. */
static char *new_param_types(pg_move_t *m, const char *oids, const char *names)
{
    if (!has_user_types(oids))
        return strdup(oids);
    const char *params[1] = { names };
    PGresult *r = PQexecParams(m->conn,
                               "SELECT pg_catalog.array_agg(n::pg_catalog.regtype::pg_catalog.oid ORDER BY o)::pg_catalog.text"
                               " FROM pg_catalog.unnest($1::pg_catalog.text[]) WITH ORDINALITY AS u(n, o)",
                               1, NULL, params, NULL, NULL, 0);
    char *out = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    else
        snprintf(m->err, sizeof(m->err), "cannot find the parameter types %s on the new server: %s", names,
                 PQresultErrorMessage(r));
    PQclear(r);
    return out;
}

/* Replay settings, prepared statements and LISTENs on the new session in one round trip
 * (libpq pipeline mode), after resolving user-defined parameter types by name. Returns 0,
 * or -1 with the first failure in m->err. */
static int move_replay_pipeline(pg_move_t *m, PGresult *settings, PGresult *prepared, PGresult *listens,
                                char **ptypes);

static int move_replay(pg_move_t *m, PGresult *settings, PGresult *prepared, PGresult *listens)
{
    int ok = 1, np = PQntuples(prepared);
    if (PQntuples(settings) + np + PQntuples(listens) == 0)
        return 0;
    char **ptypes = np > 0 ? calloc((size_t)np, sizeof(*ptypes)) : NULL;
    if (np > 0 && ptypes == NULL) {
        snprintf(m->err, sizeof(m->err), "out of memory");
        return -1;
    }
    for (int i = 0; i < np; i++) {
        if (strcmp(PQgetvalue(prepared, i, 2), "t") == 0)
            continue;   /* PREPARE text: its types are resolved by name anyway */
        if ((ptypes[i] = new_param_types(m, PQgetvalue(prepared, i, 3), PQgetvalue(prepared, i, 4))) == NULL) {
            ok = 0;
            break;
        }
    }
    if (ok)
        ok = move_replay_pipeline(m, settings, prepared, listens, ptypes) == 0;
    for (int i = 0; i < np; i++)
        free(ptypes[i]);
    free(ptypes);
    return ok ? 0 : -1;
}

static int move_replay_pipeline(pg_move_t *m, PGresult *settings, PGresult *prepared, PGresult *listens,
                                char **ptypes)
{
    PGconn *c = m->conn;
    int sent = 0, ok = 1;
    char what[160] = "";
    if (!PQenterPipelineMode(c)) {
        snprintf(m->err, sizeof(m->err), "cannot enter pipeline mode: %s", PQerrorMessage(c));
        return -1;
    }
    for (int i = 0; i < PQntuples(settings); i++) {
        const char *params[2] = { PQgetvalue(settings, i, 0), PQgetvalue(settings, i, 1) };
        sent += PQsendQueryParams(c, "SELECT pg_catalog.set_config($1, $2, false)", 2, NULL, params, NULL, NULL, 0);
    }
    for (int i = 0; i < PQntuples(prepared); i++) {
        const char *name = PQgetvalue(prepared, i, 0), *stmt = PQgetvalue(prepared, i, 1);
        if (strcmp(PQgetvalue(prepared, i, 2), "t") == 0) {
            /* The PREPARE statement as the client wrote it, picked out of the query string
             * it came in (which may hold other statements that must not run again). */
            size_t at, n;
            if (pg_sql_find_prepare(stmt, strlen(stmt), name, &at, &n) != 0) {
                snprintf(m->err, sizeof(m->err), "cannot find the PREPARE of %s in its query", name);
                PQexitPipelineMode(c);
                return -1;
            }
            char *one = strndup(stmt + at, n);
            sent += one ? PQsendQueryParams(c, one, 0, NULL, NULL, NULL, NULL, 0) : 0;
            free(one);
        } else {
            const char *p = ptypes[i], *perr;   /* "{23,25}", the new server's OIDs */
            size_t plen = strlen(p);
            ssize_t nt = pgw_parse_oid_array(p, plen, NULL, PGW_OID_ARRAY_MAX, &perr);
            Oid *types = nt > 0 ? malloc((size_t)nt * sizeof(*types)) : NULL;
            if (nt > 0 && types != NULL)
                nt = pgw_parse_oid_array(p, plen, types, (size_t)nt, &perr);
            if (nt < 0 || (nt > 0 && types == NULL)) {
                snprintf(m->err, sizeof(m->err), "cannot read the parameter types of %s: %s", name,
                         nt < 0 ? perr : "out of memory");
                free(types);
                PQexitPipelineMode(c);
                return -1;
            }
            sent += PQsendPrepare(c, name, stmt, (int)nt, types);
            free(types);
        }
    }
    for (int i = 0; i < PQntuples(listens); i++) {
        const char *ch = PQgetvalue(listens, i, 0);
        char *id = PQescapeIdentifier(c, ch, strlen(ch));
        char sql[600];
        snprintf(sql, sizeof(sql), "LISTEN %s", id ? id : "\"\"");
        PQfreemem(id);
        sent += PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    }
    if (!PQpipelineSync(c)) {
        snprintf(m->err, sizeof(m->err), "cannot send the replay: %s", PQerrorMessage(c));
        return -1;
    }
    for (int i = 0; i < sent; i++) {
        PGresult *r = PQgetResult(c);
        ExecStatusType st = PQresultStatus(r);
        if (ok && st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            ok = 0;
            int ns = PQntuples(settings), np = PQntuples(prepared);
            if (i < ns)
                snprintf(what, sizeof(what), "setting %s", PQgetvalue(settings, i, 0));
            else if (i < ns + np)
                snprintf(what, sizeof(what), "prepared statement %s", PQgetvalue(prepared, i - ns, 0));
            else
                snprintf(what, sizeof(what), "LISTEN %s", PQgetvalue(listens, i - ns - np, 0));
            snprintf(m->err, sizeof(m->err), "cannot restore %s: %s", what,
                     r ? PQresultErrorMessage(r) : PQerrorMessage(c));
        }
        PQclear(r);
        PQclear(PQgetResult(c));   /* the NULL that ends each command's results */
    }
    PGresult *sync = PQgetResult(c);
    if (PQresultStatus(sync) != PGRES_PIPELINE_SYNC && ok) {
        ok = 0;
        snprintf(m->err, sizeof(m->err), "replay did not end with a sync: %s", PQerrorMessage(c));
    }
    PQclear(sync);
    PQexitPipelineMode(c);
    return ok ? 0 : -1;
}

/* The session's state on `old` (idle, as libpq left it), blocking, on the thread pool: what
 * cannot move (temporary tables, advisory locks, WITH HOLD cursors) and what must, in one
 * round trip. Returns 0 with out[] = settings, prepared statements, LISTENs (the caller
 * clears them), or -1 with the cause in err (out[] cleared). */
int pg_state_read(PGconn *old, PGresult *out[3], char *err, size_t errlen)
{
    PGresult *r = NULL;
    out[0] = out[1] = out[2] = NULL;
    PQsetnonblocking(old, 0);
    PQsetNoticeProcessor(old, no_notice, NULL);
    if (!PQsendQuery(old,
                     "SELECT (SELECT count(*) FROM pg_catalog.pg_class WHERE relpersistence = 't'"
                     " AND relnamespace = pg_catalog.pg_my_temp_schema()),"
                     " (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'"
                     " AND pid = pg_catalog.pg_backend_pid()),"
                     " (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable);"
                     "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session';"
                     "SELECT name, statement, from_sql, parameter_types::pg_catalog.oid[]::text,"
                     " (SELECT pg_catalog.array_agg(pg_catalog.format('%I.%I', tn.nspname, ty.typname) ORDER BY u.o)"
                     " FROM pg_catalog.unnest(parameter_types) WITH ORDINALITY AS u(t, o)"
                     " JOIN pg_catalog.pg_type ty ON ty.oid = u.t"
                     " JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace)::text"
                     " FROM pg_catalog.pg_prepared_statements ORDER BY prepare_time;"
                     "SELECT pg_catalog.pg_listening_channels()")) {
        snprintf(err, errlen, "%s", PQerrorMessage(old));
        return -1;
    }
    PGresult **slots[4] = { &r, &out[0], &out[1], &out[2] };
    int nres = 0, bad = 0;
    PGresult *res;
    while ((res = PQgetResult(old)) != NULL) {
        if (PQresultStatus(res) != PGRES_TUPLES_OK || nres >= 4) {
            if (!bad)
                snprintf(err, errlen, "%s", PQresultErrorMessage(res));
            bad = 1;
            PQclear(res);
            continue;
        }
        *slots[nres++] = res;
    }
    if (!bad && nres != 4)
        snprintf(err, errlen, "unexpected answer to the state query");
    else if (!bad && atoi(PQgetvalue(r, 0, 0)) > 0)
        snprintf(err, errlen, "the session holds temporary tables");
    else if (!bad && atoi(PQgetvalue(r, 0, 1)) > 0)
        snprintf(err, errlen, "the session holds advisory locks");
    else if (!bad && atoi(PQgetvalue(r, 0, 2)) > 0)
        snprintf(err, errlen, "the session has WITH HOLD cursors");
    else if (!bad) {
        PQclear(r);
        return 0;
    }
    PQclear(r);
    for (int i = 0; i < 3; i++) {
        PQclear(out[i]);
        out[i] = NULL;
    }
    return -1;
}

void pg_notifies_take(PGconn *c, pgr_buf_t *out)
{
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
        pgr_notification(out, (uint32_t)n->be_pid, n->relname, n->extra);
        PQfreemem(n);
    }
}

/* Replay st[] (from pg_state_read) on a new, idle session; blocking. 0, or -1 with err. */
static int state_replay(pg_move_t *m, PGresult *const st[3])
{
    PQsetNoticeProcessor(m->conn, no_notice, NULL);
    if (move_replay(m, st[0], st[1], st[2]) != 0)
        return -1;
    if (PQtransactionStatus(m->conn) != PQTRANS_IDLE) {
        snprintf(m->err, sizeof(m->err), "the new session is not idle");
        return -1;
    }
    return 0;
}

int pg_state_replay(PGconn *conn, PGresult *const st[3], char *err, size_t errlen)
{
    pg_move_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    m->conn = conn;
    int r = state_replay(m, st);
    snprintf(err, errlen, "%s", m->err);
    free(m);
    return r;
}

static void move_work(uv_work_t *req)
{
    pg_move_t *m = req->data;
    PGresult *st[3] = { NULL, NULL, NULL };
    if (pg_state_read(m->old, st, m->err, sizeof(m->err)) != 0)
        goto out;
    pg_notifies_take(m->old, &m->notifies);
    if (m->conn == NULL)
        m->conn = PQconnectdbParams(m->pp.keys, m->pp.vals, 0);
    if (PQstatus(m->conn) != CONNECTION_OK) {
        snprintf(m->err, sizeof(m->err), "cannot connect: %s", PQerrorMessage(m->conn));
        goto out;
    }
    if (state_replay(m, st) != 0)
        goto out;
    pg_notifies_take(m->old, &m->notifies);
    pg_notifies_take(m->conn, &m->notifies);
    m->ok = 1;
out:
    for (int i = 0; i < 3; i++)
        PQclear(st[i]);
    for (char *p = m->err; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    size_t el = strlen(m->err);
    while (el > 0 && m->err[el - 1] == ' ')
        m->err[--el] = '\0';
}

void pg_release(pg_session_t *s)
{
    if (s->state != PGS_RELAY)
        return;
    sy_session_set_state(&s->link, SY_CLIENT_ACTIVE);
    s->refs++;
    int r = sy_pipe_resume(s, &s->c2s);
    if (r == SY_PUMP_DST_ERR)
        pg_upstream_lost(s, s->c2s.err);
    else if (r == SY_PUMP_OK && s->state == PGS_RELAY)
        pg_relay_drive(s, &s->client, 0);
    pg_session_unref(s);
}

static void move_done(uv_work_t *req, int status)
{
    pg_move_t *m = req->data;
    pg_session_t *s = m->s;
    pg_server_t *to = m->to;
    char q[600];

    to->pg = m->conn;
    int gone = pg_server_job_done(m->from);
    gone |= pg_server_job_done(to);
    if (gone || s->state != PGS_MOVING) {
        /* The session was closed while we worked (a shutdown's kick): its servers were
         * left to us, and are closed now. */
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    if (!m->ok) {
        const char *side = to->link.which == CONF_EXTERNAL ? "external" : "builtin";
        pg_server_close(to, "move failed");
        sy_warn("event=move_failed conn=%llu route=%s error=%s", (unsigned long long)s->id, s->link.route->conf->name,
                sy_logq(q, sizeof(q), m->err));
        pg_close(s, "57P01", "route %s switched to %s; reconnect (%s)", s->link.route->conf->name, side, m->err);
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    int sw = pg_swap_in(s, to, &m->notifies, "moved");
    if (sw == -1) {
        pg_server_close(to, "move failed");
        pg_close(s, "57P01", "route %s switched; reconnect (cannot take over the TLS session)",
                 s->link.route->conf->name);
    }
    if (sw != 0) {
        sy_switch_moved(&s->link, 0);
        goto out;
    }
    sy_info("event=moved conn=%llu route=%s target=%s upstream=%s backend_pid=%u ms=%llu", (unsigned long long)s->id,
            s->link.route->conf->name, to->link.which == CONF_EXTERNAL ? "external" : "builtin",
            to->link.target->hostport, to->be_pid, (unsigned long long)(uv_now(s->link.loop) - m->started));
    s->refs++;
    if (!sy_route_should_hold(&s->link)) {
        pg_release(s);
    } else {
        sy_session_set_state(&s->link, SY_CLIENT_HELD);   /* paused meanwhile: RESUME releases it */
        pg_update_polls(s);
    }
    sy_switch_moved(&s->link, 1);   /* moved, even if releasing it found its client gone */
    pg_session_unref(s);
out:
    pgr_buf_free(&m->notifies);
    free(m);
    pg_session_unref(s);
}

/*
 * Put `to` (connected on the thread pool, its PGconn set) in place of the session's server,
 * which is closed with old_reason: the client is told what ParameterStatus values changed,
 * and given `notifies`, before anything more from the new server. The session is RELAY
 * after it. Returns 0; -1 when to's TLS session cannot be had (nothing changed: the caller
 * closes both); -2 when the session closed (out of memory, or its client is gone).
 */
int pg_swap_in(pg_session_t *s, pg_server_t *to, const pgr_buf_t *notifies, const char *old_reason)
{
    if (pg_server_adopt(to) != 0)
        return -1;
    pg_server_t *from = s->srv;
    pg_server_attach(s, to);
    pg_server_close(from, old_reason);
    if (!to->counted) {   /* a pooled one (a released session's re-take) already is */
        SY_STAT_ADD(s->link.route->upstreams, 1);
        to->counted = 1;
    }
    pg_sscan_reset(s);
    /* Queued whole, however large, and fed to the client as it reads (pg_extra_drain). */
    for (const char *const *p = pg_reported_params; *p; p++) {
        const char *v = PQparameterStatus(to->pg, *p);
        const char *seen = pg_param_get(s, *p);
        if (v != NULL && (seen == NULL || strcmp(seen, v) != 0)) {
            pgr_parameter_status(&s->s2c_extra, *p, v);
            pg_param_seen(s, *p, v);
        }
    }
    pgr_append(&s->s2c_extra, notifies->data, notifies->len);
    pg_set_state(s, PGS_RELAY);
    if (s->s2c_extra.oom) {
        pg_close(s, "53200", "route %s: out of memory after a move", s->link.route->conf->name);
        return -2;
    }
    if (pg_extra_drain(s) < 0) {
        pg_close(s, NULL, NULL);   /* the client is gone */
        return -2;
    }
    return 0;
}

int pg_link_quiet(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    return s->state == PGS_RELAY && pg_idle(s) && s->c2s.start == s->c2s.fwd;
}

/* The server a move goes to: the one opened ahead (s->pre) when it is on the target and
 * connected, or a new one the job opens itself. NULL when out of memory. */
static pg_server_t *move_target(pg_session_t *s, conf_which_t which)
{
    const conf_target_t *t = sy_route_target(s->link.route, which);
    pg_server_t *pre = s->pre;
    if (pre != NULL && (pre->job || pre->link.target != t || PQstatus(pre->pg) != CONNECTION_OK))
        pg_server_close(pre, "not the move's target");
    if (s->pre == NULL)
        s->pre = pg_server_new(s, which);
    return s->pre;
}

void pg_link_move(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    sy_route_t *r = s->link.route;
    conf_which_t which = sy_route_active(r);
    pg_move_t *m = s->custom_set ? NULL : calloc(1, sizeof(*m));
    pg_server_t *to = m ? move_target(s, which) : NULL;
    const char *why = s->custom_set ? PG_CUSTOM_WHY : "out of memory";
    if (to == NULL || pg_build_params(s, NULL, to->link.target, &m->pp, &why) != 0) {
        free(m);
        pg_close(s, "57P01", "route %s switched; reconnect (%s)", r->conf->name, why);
        sy_switch_moved(l, 0);
        return;
    }
    m->req.data = m;
    m->s = s;
    m->from = s->srv;
    m->to = to;
    m->old = s->srv->pg;
    m->conn = to->pg;      /* opened while the session was still working, or NULL */
    to->pg = NULL;         /* the job's until move_done */
    m->started = uv_now(s->link.loop);
    m->from->job = to->job = 1;   /* from here on, a close hands them to the job */
    pg_set_state(s, PGS_MOVING);
    s->c2s.reading = 0;
    sy_conn_unwatch(&s->srv->conn);   /* libpq owns the socket until we take the new one */
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
    s->refs++;
    if (uv_queue_work(s->link.loop, &m->req, move_work, move_done) != 0) {
        s->refs--;
        to->pg = m->conn;
        pg_server_job_done(m->from);   /* each finishes a close that came meanwhile */
        pg_server_job_done(to);
        free(m);
        if (s->state == PGS_MOVING) {
            pg_set_state(s, PGS_RELAY);
            pg_close(s, "57P01", "route %s switched; reconnect", r->conf->name);
        }
        sy_switch_moved(l, 0);
    }
}

/* Prepare: the session's next server is opened on the thread pool while the session
 * keeps working; it waits on the CONNECTING list (s->pre) for the move. */
typedef struct pg_prep_s {
    uv_work_t     req;
    pg_session_t *s;
    pg_server_t  *sv;
    pg_params_t   pp;
    PGconn       *conn;
} pg_prep_t;

static void prep_work(uv_work_t *req)
{
    pg_prep_t *w = req->data;
    w->conn = PQconnectdbParams(w->pp.keys, w->pp.vals, 0);
}

static void prep_done(uv_work_t *req, int status)
{
    pg_prep_t *w = req->data;
    pg_session_t *s = w->s;
    pg_server_t *sv = w->sv;
    sv->pg = w->conn;
    if (!pg_server_job_done(sv) && PQstatus(sv->pg) != CONNECTION_OK) {
        char q[600];
        sy_warn("event=preconnect_failed conn=%llu route=%s error=%s", (unsigned long long)s->id,
                s->link.route->conf->name, sy_logq(q, sizeof(q), PQerrorMessage(sv->pg)));
        pg_server_close(sv, "preconnect failed");
    }
    sy_switch_prepared(&s->link);
    free(w);
    pg_session_unref(s);
}

void pg_link_unprepare(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    sy_route_t *r = s->link.route;
    if (s->pre != NULL && s->state == PGS_RELAY && !s->pre->job &&
        s->pre->link.target != sy_route_target(r, sy_route_active(r)))
        pg_server_close(s->pre, "the switch did not move it");
}

void pg_link_prepare(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    sy_route_t *r = s->link.route;
    conf_which_t which = sy_route_active(r);
    const char *why;
    pg_server_close(s->pre, "replaced");
    pg_prep_t *w = calloc(1, sizeof(*w));
    pg_server_t *sv = w ? pg_server_new(s, which) : NULL;
    if (sv == NULL || pg_build_params(s, NULL, sv->link.target, &w->pp, &why) != 0) {
        pg_server_close(sv, "cannot prepare");
        free(w);
        sy_switch_prepared(l);   /* the move will connect itself */
        return;
    }
    s->pre = sv;
    w->req.data = w;
    w->s = s;
    w->sv = sv;
    s->refs++;
    sv->job = 1;
    if (uv_queue_work(s->link.loop, &w->req, prep_work, prep_done) != 0) {
        s->refs--;
        sv->job = 0;
        pg_server_close(sv, "cannot prepare");
        free(w);
        sy_switch_prepared(l);
    }
}

void pg_link_kick(sy_session_link_t *l, const char *why)
{
    pg_session_t *s = (pg_session_t *)l;
    pg_close(s, "57P01", "%s", why);
}

void pg_link_release(sy_session_link_t *l)
{
    pg_session_t *s = (pg_session_t *)l;
    if (s->state == PGS_RELEASED)
        pg_release_wake(s);   /* held with no server: it takes one now */
    else
        pg_release(s);
}

