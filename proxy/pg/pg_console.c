/*
 * pg_console.c - the wire side of the admin console (database "switchyard"): simple Query
 * messages in, result sets out. The commands themselves run on the main loop
 * (proxy/control/admin.c); their output comes back by message to the session's worker.
 */
#include "proxy/pg/pg_internal.h"

/* ---- admin console ------------------------------------------------------------------ */


/* Move console output into the client pipe as space allows, then write it. */
static int admin_flush(pg_session_t *s)
{
    sy_pipe_t *p = &s->s2c;
    if (sy_pipe_feed(p, s->admin_out.data, s->admin_out.len, &s->admin_sent) < 0)
        return -1;
    if (s->admin_sent == s->admin_out.len && !sy_pipe_pending(p)) {
        s->admin_out.len = 0;
        s->admin_sent = 0;
    }
    return 0;
}

static void admin_ready(pg_session_t *s)
{
    uint8_t z[8];
    pgr_append(&s->admin_out, z, pgw_build_ready(z, sizeof(z), 'I'));
}

static void admin_done(pg_session_t *s)
{
    s->admin_busy = 0;
    if (s->state == PGS_ADMIN) {
        admin_ready(s);
        pg_admin_drive(s);
    }
    pg_session_unref(s);
}

/*
 * A console command runs on the main loop (it reads routes and drives switches there);
 * the session stays on its worker. The command carries what the main loop needs (its
 * text, the user) and gets its own output buffer; the result comes back by message to
 * the session's worker, which alone touches the session.
 */
typedef struct admin_cmd_s {
    sy_ctl_t      ctl;        /* first: runs on the main loop */
    sy_msg_t      back;       /* the result, on the session's worker */
    pg_session_t *s;          /* referenced until back runs */
    int           worker;
    char          user[256];
    pgr_buf_t     out;        /* written on the main loop */
    char          sql[];
} admin_cmd_t;

static void admin_cmd_back(sy_msg_t *m)
{
    admin_cmd_t *cmd = (admin_cmd_t *)((char *)m - offsetof(admin_cmd_t, back));
    pg_session_t *s = cmd->s;
    pgr_append(&s->admin_out, cmd->out.data, cmd->out.len);
    if (cmd->out.oom || s->admin_out.oom) {
        pgr_buf_free(&cmd->out);
        free(cmd);
        s->admin_busy = 0;
        pg_close(s, "53200", "switchyard: out of memory");
        pg_session_unref(s);
        return;
    }
    pgr_buf_free(&cmd->out);
    free(cmd);
    admin_done(s);
}

static void admin_cmd_done(void *ctx, pgr_buf_t *out)
{
    admin_cmd_t *cmd = ctx;
    sy_post(cmd->worker, &cmd->back);
}

static void admin_cmd_main(sy_ctl_t *c)
{
    admin_cmd_t *cmd = (admin_cmd_t *)c;
    if (admin_execute(cmd->sql, cmd->user, &cmd->out, admin_cmd_done, cmd))
        admin_cmd_done(cmd, &cmd->out);
}

/* Read and run console commands; one at a time, in order. */
void pg_admin_drive(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    if (admin_flush(s) < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    while (!s->admin_busy && s->admin_out.len == 0) {
        /* Scan what is buffered; a pending CAPTURED event may come with 0 bytes. */
        pgw_event_t ev = PGW_EV_NONE;
        ssize_t n = pgw_scan(&s->cscan, p->buf + p->scanned, p->end - p->scanned, &ev);
        if (n < 0) {
            pg_close(s, "08P01", "protocol violation on the console: %s", s->cscan.err);
            return;
        }
        p->scanned += (uint32_t)n;
        if (ev == PGW_EV_HEADER) {
            uint8_t t = s->cscan.type;
            if (t == 'X') {
                pg_close(s, NULL, NULL);
                return;
            }
            if (t != 'Q' || s->cscan.len - 4 > PGW_CAPTURE_MAX) {
                uint8_t e[512];
                pgr_append(&s->admin_out, e, pgw_build_error(e, sizeof(e), "ERROR", "0A000",
                           t == 'Q' ? "switchyard: console command too long"
                                    : "switchyard: the console speaks the simple query protocol only", NULL));
                if (t == 'Q' || t == 'S')
                    admin_ready(s);
            }
            continue;
        }
        if (ev == PGW_EV_CAPTURED) {
            char sql[PGW_CAPTURE_MAX + 1];
            size_t len = s->cscan.cap_len;
            memcpy(sql, s->cscan.cap, len);
            sql[len] = '\0';
            /* The query text ends at its NUL (also an embedded one), as the server reads it. */
            char q[300];
            sy_info("event=console conn=%llu command=%s", (unsigned long long)s->id, sy_logq(q, sizeof(q), sql));
            admin_cmd_t *cmd = calloc(1, sizeof(*cmd) + len + 1);
            if (cmd == NULL) {
                pg_close(s, "53200", "switchyard: out of memory");
                return;
            }
            memcpy(cmd->sql, sql, len + 1);
            snprintf(cmd->user, sizeof(cmd->user), "%s", s->user ? s->user : "");
            cmd->ctl.fn = admin_cmd_main;
            cmd->back.fn = admin_cmd_back;
            cmd->s = s;
            cmd->worker = sy_loop_index(s->link.loop);
            s->refs++;
            s->admin_busy = 1;
            sy_ctl_post(&cmd->ctl);
            continue;
        }
        /* Nothing to report: need more bytes. */
        if (p->scanned == p->end) {
            p->start = p->fwd = p->scanned = p->end = 0;
            if (sy_pipe_ensure(p) != 0) {
                pg_close(s, "53200", "switchyard: out of memory");
                return;
            }
            ssize_t r = s->client.tp->read(&s->client, p->buf, p->cap);
            if (r == SY_EAGAIN)
                break;
            if (r <= 0) {
                pg_close(s, NULL, NULL);
                return;
            }
            p->end = (uint32_t)r;
        }
    }
    if (admin_flush(s) < 0) {
        pg_close(s, NULL, NULL);
        return;
    }
    int ev = sy_pipe_dst_events(&s->s2c);
    if (!s->admin_busy && s->admin_out.len == 0)
        ev |= s->client.rd_wait;
    else if (s->admin_sent < s->admin_out.len)
        ev |= s->client.wr_wait;
    pg_watch(s, &s->client, ev, pg_client_cb);
}

void pg_admin_begin(pg_session_t *s)
{
    s->link.console = 1;
    static const char *const params[][2] = {
        { "server_version", "15.0 (switchyard " SY_VERSION ")" }, { "server_encoding", "UTF8" },
        { "client_encoding", "UTF8" }, { "DateStyle", "ISO, MDY" }, { "integer_datetimes", "on" },
        { "standard_conforming_strings", "on" }, { "application_name", "switchyard" },
    };
    uint8_t out[1024];
    size_t off = pgw_build_auth_ok(out, sizeof(out));
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        off += pgw_build_parameter_status(out + off, sizeof(out) - off, params[i][0], params[i][1]);
    off += pgw_build_backend_key(out + off, sizeof(out) - off, 0, 0);
    off += pgw_build_ready(out + off, sizeof(out) - off, 'I');
    pg_set_state(s, PGS_ADMIN);
    pgw_scan_capture(&s->cscan, 'Q');
    pgr_append(&s->admin_out, out, off);
    sy_info("event=console_open conn=%llu", (unsigned long long)s->id);
    pg_admin_drive(s);
}
