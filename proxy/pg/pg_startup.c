/*
 * pg_startup.c - a Postgres client's first packets: SSLRequest / GSSENCRequest, TLS with
 * the client, the StartupMessage or CancelRequest, the password where a listener asks for
 * one, and routing by database to a target (or to the console).
 */
#include "proxy/pg/pg_internal.h"

/* ---- client startup ------------------------------------------------------------------ */

static int write_small(pg_session_t *s, const void *bytes, size_t len)
{
    /* Used only for the one-byte SSL answers on a fresh socket. */
    ssize_t n = s->client.tp->write(&s->client, bytes, len);
    return n == (ssize_t)len ? 0 : -1;
}

static void pg_route_and_connect(pg_session_t *s);

static void handle_startup(pg_session_t *s, size_t plen)
{
    sy_pipe_t *p = &s->c2s;
    switch (s->st.kind) {
    case PGW_STARTUP_SSL:
    case PGW_STARTUP_GSSENC: {
        int *seen = s->st.kind == PGW_STARTUP_SSL ? &s->ssl_answered : &s->gss_answered;
        if (*seen || s->client.ssl != NULL) {
            pg_close(s, "08P01", "unexpected %s after the encryption negotiation",
                     s->st.kind == PGW_STARTUP_SSL ? "SSLRequest" : "GSSENCRequest");
            return;
        }
        if (p->end > plen) {
            /* CVE-2021-23222: bytes sent before our answer could be injected by a
             * man in the middle; the server refuses them, and so do we. */
            pg_close(s, "08P01", "received unencrypted data after SSL request");
            return;
        }
        *seen = 1;
        p->start = p->fwd = p->scanned = p->end = 0;
        int tls = s->st.kind == PGW_STARTUP_SSL && s->listener->tls_ctx != NULL;
        if (write_small(s, tls ? "S" : "N", 1) != 0) {
            pg_close(s, NULL, NULL);
            return;
        }
        if (tls) {
            if (sy_tls_attach(&s->client, s->listener->tls_ctx, 1, NULL) != 0) {
                pg_close(s, NULL, NULL);
                return;
            }
            pg_set_state(s, PGS_CLIENT_TLS);
        }
        return;
    }
    case PGW_STARTUP_CANCEL:
        pg_cancel_request(s->st.cancel_pid, s->st.cancel_key);
        pg_close(s, NULL, NULL);
        return;
    case PGW_STARTUP_MESSAGE:
        break;
    }

    /* Keep our own copy: the pipe buffer is reused by the relay. */
    s->startup = malloc(plen);
    if (s->startup == NULL) {
        pg_close(s, "53200", "out of memory");
        return;
    }
    memcpy(s->startup, p->buf, plen);
    pgw_startup_t st;
    pgw_startup_parse(s->startup, plen, &st);
    s->st = st;
    memmove(p->buf, p->buf + plen, p->end - plen);
    p->end -= (uint32_t)plen;
    p->start = p->fwd = p->scanned = 0;

    s->user = pgw_startup_get(&s->st, "user");
    s->database = pgw_startup_get(&s->st, "database");
    if (s->database == NULL || s->database[0] == '\0')
        s->database = s->user;

    /* Newer minor versions and _pq_. options: tell the client what we speak. */
    const char *unknown[32];
    size_t nunknown = 0, off = 0;
    const char *name, *value;
    while (pgw_startup_next(&s->st, &off, &name, &value))
        if (strncmp(name, "_pq_.", 5) == 0 && nunknown < 32)
            unknown[nunknown++] = name;
    if (s->st.minor > 0 || nunknown > 0) {
        uint8_t out[2048];
        /* The server sends its newest full version here (PG_PROTOCOL_LATEST), and so do we. */
        size_t len = pgw_build_negotiate(out, sizeof(out), PGW_PROTO_3_0, unknown, nunknown);
        if (len == 0 || sy_pipe_inject(&s->s2c, out, len) != 0 || sy_pipe_flush(&s->s2c) < 0) {
            pg_close(s, NULL, NULL);
            return;
        }
    }
    if (pgw_startup_get(&s->st, "replication") != NULL) {
        pg_close(s, "08P01", "replication connections are not supported");
        return;
    }
    pg_route_and_connect(s);
}

/* Queue one authentication message for the client and write what can be written. */
static void pg_auth_send(pg_session_t *s, const uint8_t *msg, size_t len)
{
    sy_pipe_inject(&s->s2c, msg, len);
    sy_pipe_flush(&s->s2c);
    pg_watch(s, &s->client, UV_READABLE | sy_pipe_dst_events(&s->s2c), pg_client_cb);
}

/* The client proves it knows auth_password (or admin_password) with SCRAM-SHA-256, as a
 * server with password_encryption = scram-sha-256 asks: the secret never crosses the wire. */
static void pg_ask_password(pg_session_t *s)
{
    uint8_t ask[32];
    s->scram = calloc(1, sizeof(*s->scram));
    if (s->scram == NULL) {
        pg_close(s, "53200", "out of memory");
        return;
    }
    pg_set_state(s, PGS_AUTH);
    pg_auth_send(s, ask, pg_scram_build_sasl(ask, sizeof(ask)));
}

static void pg_route_and_connect(pg_session_t *s)
{
    /* max_clients, as Postgres answers at max_connections: after the startup packet, so a
     * client that asked for TLS first reads it as an error, and before any upstream. The
     * session counts itself. */
    if (SY_LOAD(s->listener->nclients) > s->listener->conf->max_clients) {
        sy_listener_refused(s->listener);
        pg_close(s, "53300", "sorry, too many clients already");
        return;
    }
    if (strcmp(s->database, SY_ADMIN_DATABASE) == 0) {
        /* Who may use the console: switchyard's own user and root on a unix socket without
         * a password (peer, as Postgres's peer method); without admin_password, also over
         * loopback TCP (the uid that owns the client's socket); everyone else needs
         * admin_password, local or not. */
        s->admin = 1;
        int unix_peer = s->trusted && sy_peer_is_unix(s->client.fd);
        int owner = s->trusted && sy_peer_is_owner(s->client.fd);
        const char *pw = sy_conf()->admin_password;
        if (owner && (pw == NULL || unix_peer)) {
            pg_admin_begin(s);
            return;
        }
        if (pw == NULL) {
            pg_close(s, "28000", "the console is open to switchyard's own user and root on this host only "
                     "(set admin_password for others)");
            return;
        }
        pg_ask_password(s);
        return;
    }
    s->link.route = sy_route_for_database(s->listener, s->database);
    if (s->link.route == NULL) {
        pg_close(s, "3D000", "no route for database \"%s\" on listener %s", s->database,
                 s->listener->conf->name);
        return;
    }
    SY_STAT_ADD(s->link.route->clients, 1);
    pg_server_t *sv = pg_server_route(s, s->link.route);
    if (sv == NULL) {
        pg_close(s, "53200", "route %s: out of memory", s->link.route->conf->name);
        return;
    }
    if (!sv->link.target->defined) {
        pg_close(s, "08001", "route %s: the %s target is not configured", s->link.route->conf->name,
                 sv->link.which == CONF_EXTERNAL ? "external" : "builtin");
        return;
    }
    if (!s->trusted && s->listener->conf->auth_password != NULL) {
        pg_ask_password(s);
        return;
    }
    if (!s->trusted) {
        pg_close(s, "28000", "connections from non-loopback addresses need auth_password on listener %s",
                 s->listener->conf->name);
        return;
    }
    char q1[256], q2[256];
    sy_info("event=connect conn=%llu route=%s database=%s user=%s target=%s", (unsigned long long)s->id,
            s->link.route->conf->name, sy_logq(q1, sizeof(q1), s->database), sy_logq(q2, sizeof(q2), s->user),
            sv->link.which == CONF_EXTERNAL ? "external" : "builtin");
    pg_upstream_begin(s);
}

static void auth_failed_cb(uv_timer_t *t)
{
    pg_session_t *s = t->data;
    pg_close(s, "28P01", "password authentication failed for user \"%s\"", s->user);
}

/* A wrong password: said after the back-off (sy_auth_failed), reading nothing meanwhile. */
static void pg_auth_failed(pg_session_t *s)
{
    uint64_t ms = sy_auth_failed(uv_now(s->link.loop));
    char q[256];
    sy_info("event=auth_failed conn=%llu listener=%s user=%s console=%d delay_ms=%llu", (unsigned long long)s->id,
            s->listener->conf->name, sy_logq(q, sizeof(q), s->user), s->admin, (unsigned long long)ms);
    s->c2s.reading = 0;
    pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
    pg_timer_start(s, auth_failed_cb, ms);
}

/*
 * The target has no password for the client's user and its server asked for one (libpq:
 * PQconnectionNeedsPassword): ask the client for its own, as the server would, and connect
 * again with it. Only where a password may travel in clear: loopback, the unix socket, or
 * the client's TLS. Asked once; a wrong one then gets the server's 28P01. Returns 1 when
 * asked (sv is closed), 0 to fail as before.
 */
int pg_ask_upstream_password(pg_session_t *s, pg_server_t *sv)
{
    if (s->client_password != NULL || s->admin || (!s->trusted && s->client.ssl == NULL))
        return 0;
    uint8_t ask[16];
    /* The next server, on the same target, waits attached (unconnected) for the password. */
    pg_server_t *next = pg_server_new(s, sv->link.which);
    if (next == NULL)
        return 0;
    sy_info("event=password_asked conn=%llu route=%s upstream=%s", (unsigned long long)s->id, s->link.route->conf->name,
            sv->link.target->hostport);
    pg_server_close(sv, "the server wants the client's password");
    pg_server_attach(s, next);
    pg_set_state(s, PGS_AUTH);
    s->c2s.reading = 1;
    pg_auth_send(s, ask, pgw_build_auth_cleartext(ask, sizeof(ask)));
    return 1;
}

/* The client's own password (cleartext, asked by pg_ask_upstream_password; NULL: the
 * message was not one string, or no memory): connect again with it. */
static void pg_take_upstream_password(pg_session_t *s, char *password, const char *err)
{
    if (password == NULL) {
        pg_close(s, err ? "08P01" : "53200", "%s", err ? err : "out of memory");
        return;
    }
    s->client_password = password;
    pg_upstream_connect(s);
}

/* One SASL message of the client's (SASLInitialResponse, then SASLResponse), for
 * listeners with auth_password and the console with admin_password; or the client's own
 * password for its server (pg_ask_upstream_password). */
void pg_handle_password(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    pgw_password_t pw;
    if (!p->reading)
        return;   /* a failed attempt waits out its back-off */
    ssize_t r = pgw_password_parse(p->buf, p->end, PGW_PASSWORD_MAX, &pw);
    if (r == PGW_ERR) {
        pg_close(s, "08P01", "expected %s response, got message type %d", s->scram == NULL ? "password" : "SASL",
                 p->end > 0 ? p->buf[0] : 0);
        return;
    }
    if (r == PGW_NEED_MORE)
        return;
    if (s->scram == NULL) {   /* asked by pg_ask_upstream_password */
        uint32_t len = (uint32_t)r;
        char *password = pw.password ? strdup(pw.password) : NULL;
        const char *err = pw.password ? NULL : pw.err;
        OPENSSL_cleanse(p->buf, len);
        memmove(p->buf, p->buf + len, p->end - len);
        p->end -= len;
        pg_take_upstream_password(s, password, err);
        return;
    }
    const char *secret = s->admin ? sy_conf()->admin_password : s->listener->conf->auth_password;
    pg_scram_verifier_t v;
    char nonce[PG_SCRAM_NONCE_LEN + 1], reply[PG_SCRAM_MSG_MAX + 256];
    size_t rlen = 0;
    int rc = PG_SCRAM_MALFORMED, step = s->scram->step;
    if (secret == NULL || sy_scram_verifier(secret, &v) != 0 || sy_scram_nonce(nonce) != 0)
        s->scram->err = "cannot derive the SCRAM verifier";
    else if (step == 0)
        rc = pg_scram_first(s->scram, &v, p->buf + 5, (size_t)r - 5, nonce, reply, sizeof(reply), &rlen);
    else
        rc = pg_scram_final(s->scram, &v, p->buf + 5, (size_t)r - 5, reply, sizeof(reply), &rlen);
    OPENSSL_cleanse(&v, sizeof(v));
    uint32_t len = (uint32_t)r;
    memset(p->buf, 0, len);
    memmove(p->buf, p->buf + len, p->end - len);
    p->end -= len;
    if (rc == PG_SCRAM_WRONG) {
        pg_auth_failed(s);
        return;
    }
    if (rc != PG_SCRAM_OK) {
        pg_close(s, "08P01", "%s", s->scram->err ? s->scram->err : "malformed SCRAM message");
        return;
    }
    uint8_t msg[sizeof(reply) + 16];
    if (step == 0) {
        pg_auth_send(s, msg, pg_scram_build_continue(msg, sizeof(msg), reply, rlen));
        return;
    }
    pg_auth_send(s, msg, pg_scram_build_final(msg, sizeof(msg), reply, rlen));
    free(s->scram);
    s->scram = NULL;
    if (s->admin)
        pg_admin_begin(s);
    else
        pg_upstream_begin(s);
}

static void client_startup_read(pg_session_t *s)
{
    sy_pipe_t *p = &s->c2s;
    if (s->state == PGS_AUTH && !p->reading)
        return;   /* waiting out a failed attempt's back-off */
    for (;;) {
        if (s->state == PGS_STARTUP && p->end > 0) {
            pgw_startup_t st;
            ssize_t r = pgw_startup_parse(p->buf, p->end, &st);
            if (r < 0) {
                /* As the postmaster: a bad length is logged and the connection closed
                 * without a reply (ProcessStartupPacket's COMMERROR); a bad layout gets
                 * FATAL 08P01. */
                if (st.err != NULL && strncmp(st.err, "invalid length", 14) == 0) {
                    sy_info("event=startup_invalid conn=%llu reason=\"%s\"", (unsigned long long)s->id, st.err);
                    pg_close(s, NULL, NULL);
                } else if (st.err != NULL && strncmp(st.err, "unsupported frontend", 20) == 0) {
                    pg_close(s, "0A000", "%s", st.err);   /* Postgres: FEATURE_NOT_SUPPORTED */
                } else {
                    pg_close(s, "08P01", "invalid startup packet: %s", st.err ? st.err : "malformed");
                }
                return;
            }
            if (r > 0) {
                s->st = st;
                handle_startup(s, (size_t)r);
                if (s->state == PGS_STARTUP && p->end > 0)
                    continue;   /* e.g. nothing, but keep parsing what is buffered */
                if (s->state != PGS_STARTUP)
                    break;
                if (st.kind == PGW_STARTUP_SSL || st.kind == PGW_STARTUP_GSSENC)
                    break;   /* answered: the client reads it before it sends more (a read
                              * now finds nothing, once per pgbench -C connection) */
            }
        }
        if (s->state == PGS_AUTH) {
            pg_handle_password(s);
            if (s->state != PGS_AUTH)
                break;
        }
        if (s->state != PGS_STARTUP && s->state != PGS_AUTH)
            break;
        if (sy_pipe_ensure(p) != 0) {
            pg_close(s, "53200", "switchyard: out of memory");
            return;
        }
        uint32_t space = sy_pipe_space(p);
        if (space == 0) {
            pg_close(s, "08P01", "startup packet too long");
            return;
        }
        ssize_t n = s->client.tp->read(&s->client, p->buf + p->end, space);
        if (n == SY_EAGAIN)
            break;
        if (n <= 0) {
            pg_close(s, NULL, NULL);   /* client left during startup */
            return;
        }
        p->end += (uint32_t)n;
    }
    if (s->state == PGS_STARTUP || s->state == PGS_AUTH)
        pg_watch(s, &s->client, s->client.rd_wait, pg_client_cb);
    else if (s->state == PGS_CLIENT_TLS)
        pg_watch(s, &s->client, UV_READABLE, pg_client_cb);
}

static void client_tls_step(pg_session_t *s)
{
    int r = sy_tls_handshake(&s->client);
    if (r < 0) {
        sy_info("event=client_tls_failed conn=%llu error=\"%s\"", (unsigned long long)s->id,
                s->client.tls_err ? s->client.tls_err : "");
        pg_close(s, NULL, NULL);
        return;
    }
    if (r == 0) {
        pg_watch(s, &s->client, s->client.rd_wait, pg_client_cb);
        return;
    }
    pg_set_state(s, PGS_STARTUP);
    s->client.rd_wait = UV_READABLE;
    client_startup_read(s);
}

void pg_client_cb(sy_conn_t *c, int status, int events)
{
    pg_session_t *s = c->data;
    s->refs++;   /* the session may close inside; free it only after we return */
    switch (s->state) {
    case PGS_STARTUP:
    case PGS_AUTH:
        client_startup_read(s);
        break;
    case PGS_CLIENT_TLS:
        client_tls_step(s);
        break;
    case PGS_RELAY:
        pg_relay_drive(s, c, events);
        break;
    case PGS_ADMIN:
        pg_admin_drive(s);
        break;
    case PGS_CLOSING:
        pg_closing_drive(s);
        break;
    case PGS_RESOLVING:
    case PGS_CONNECTING: {
        /* Not reading while we connect; a hang-up shows as an event we must not spin on. */
        pg_watch(s, &s->client, 0, pg_client_cb);
        break;
    }
    case PGS_RELEASED:
        pg_release_wake(s);
        break;
    case PGS_MOVING:
    case PGS_SAVING:
    case PGS_RECONNECTING:
        if (sy_pipe_flush(&s->s2c) < 0)
            pg_close(s, NULL, NULL);   /* the move finishes and finds the session closing */
        else
            pg_watch(s, &s->client, sy_pipe_dst_events(&s->s2c), pg_client_cb);
        break;
    default:
        break;
    }
    pg_session_unref(s);
}

