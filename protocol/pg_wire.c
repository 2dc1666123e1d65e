/*
 * pg_wire.c - PostgreSQL frontend/backend protocol 3.x codec (see pg_wire.h).
 *
 * Three independent parts, all pure functions over caller-owned memory:
 *
 *   startup   pgw_startup_parse() checks one startup-phase packet. It validates the
 *             length field as soon as the bytes that bound it have arrived (a client
 *             declaring 2^31 is rejected after one byte, not buffered), then the code,
 *             then - once the whole packet is there - the name\0value\0...\0 layout.
 *
 *   framing   pgw_scan() is a resumable state machine over a normal-phase stream:
 *
 *                 HEADER (5 bytes: type + int32 length)
 *                    |  length checked against 4..max_len, 'Z' must be 5
 *                    v
 *                 BODY   skipped in O(1) per call; when the type is captured and the
 *                    |   body fits PGW_CAPTURE_MAX, shown where it lies in the
 *                    |   caller's buffer (s->cap), or gathered in s->copy (malloc,
 *                    |   freed by the next call) when it came in pieces
 *                    v
 *                 back to HEADER
 *
 *             State is hdr_have (0..5; 5 means "in the body") plus body_left, so a
 *             split at any byte resumes exactly. One call reports at most one event.
 *             A captured message with an empty body (or a captured 'Z', whose HEADER
 *             waits for the status byte) has no byte left to carry its CAPTURED event:
 *             that event is delivered by the next call, which then consumes 0 bytes
 *             (even with len 0). Callers therefore loop "until a call returns EV_NONE
 *             with no bytes left", never "while the return value is > 0".
 *             Errors are sticky: after PGW_ERR every call returns PGW_ERR again.
 *
 *   builders  pgw_build_*() write one complete message or nothing (return 0), and
 *   readers   pgw_parse_*() check captured bodies without reading past len.
 *
 *   password  pgw_password_parse() frames the client's PasswordMessage the way
 *             pgw_startup_parse() frames a startup packet: type, then length bound,
 *             checked before the rest is waited for.
 */
#include "protocol/pg_wire.h"

#include <stdlib.h>
#include <string.h>

/* Largest message we ever build: the length field is a signed int32 on the wire. */
#define PGW_BUILD_MAX ((size_t)INT32_MAX)

/* pgw_scan_t.capturing values */
enum { CAP_OFF = 0, CAP_ON = 1, CAP_PENDING = 2 };

/* pgw_scan_t.hdr_have when the header is complete and the scanner is in the body */
#define HDR_LEN 5u

#define SCAN_DEFAULT_MAX 0x40000000u   /* 1 GiB, the server's own MaxAllocSize bound */

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint8_t *put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
    return p + 4;
}

/* Copy s[0..n) and its NUL terminator; returns the byte after it. */
static uint8_t *put_cstr(uint8_t *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    p[n] = 0;
    return p + n + 1;
}

/* ---- startup phase ---------------------------------------------------------------- */

static ssize_t startup_fail(pgw_startup_t *out, const char *msg)
{
    out->err = msg;
    return PGW_ERR;
}

/* Parameters of a complete StartupMessage: buf[8..pktlen). */
static ssize_t startup_params(const uint8_t *buf, uint32_t pktlen, pgw_startup_t *out)
{
    const uint8_t *p = buf + 8, *end = buf + pktlen;
    int have_user = 0;

    for (;;) {
        const uint8_t *name_end, *val, *val_end;

        if (p == end)
            return startup_fail(out, "invalid startup packet layout: missing terminator");
        if (*p == 0)
            break;
        name_end = memchr(p, 0, (size_t)(end - p));
        if (name_end == NULL)
            return startup_fail(out, "unterminated parameter name in startup packet");
        val = name_end + 1;
        val_end = memchr(val, 0, (size_t)(end - val));
        if (val_end == NULL)
            return startup_fail(out, "unterminated parameter value in startup packet");
        /* The server keeps the last value of a repeated name, and rejects an empty user. */
        if (strcmp((const char *)p, "user") == 0)
            have_user = *val != 0;
        p = val_end + 1;
    }
    if (p + 1 != end)
        return startup_fail(out, "invalid startup packet layout: expected terminator as last byte");
    if (!have_user)
        return startup_fail(out, "no PostgreSQL user name specified in startup packet");

    out->params = (const char *)buf + 8;
    out->params_len = pktlen - 9;
    return (ssize_t)pktlen;
}

ssize_t pgw_startup_parse(const uint8_t *buf, size_t len, pgw_startup_t *out)
{
    uint32_t pktlen, code;

    memset(out, 0, sizeof *out);

    if (len < 4) {
        /* The bytes we have already bound the length from below (big-endian): reject
         * a length that is too large now instead of waiting for the rest of it. */
        uint32_t lo = 0;
        for (size_t i = 0; i < 4; i++)
            lo = lo << 8 | (i < len ? buf[i] : 0u);
        if (lo > PGW_STARTUP_MAX)
            return startup_fail(out, "invalid length of startup packet");
        return PGW_NEED_MORE;
    }

    pktlen = get_be32(buf);
    if (pktlen < 8 || pktlen > PGW_STARTUP_MAX)
        return startup_fail(out, "invalid length of startup packet");
    if (len < 8)
        return PGW_NEED_MORE;

    code = get_be32(buf + 4);
    out->code = code;
    switch (code) {
    case PGW_SSL_REQUEST_CODE:
        if (pktlen != 8)
            return startup_fail(out, "invalid length of SSL request");
        out->kind = PGW_STARTUP_SSL;
        return 8;
    case PGW_GSSENC_REQUEST_CODE:
        if (pktlen != 8)
            return startup_fail(out, "invalid length of GSSENC request");
        out->kind = PGW_STARTUP_GSSENC;
        return 8;
    case PGW_CANCEL_REQUEST_CODE:
        if (pktlen != 16)
            return startup_fail(out, "invalid length of cancel request");
        if (len < 16)
            return PGW_NEED_MORE;
        out->kind = PGW_STARTUP_CANCEL;
        out->cancel_pid = get_be32(buf + 8);
        out->cancel_key = get_be32(buf + 12);
        return 16;
    default:
        break;
    }

    if (code >> 16 == 1234)
        return startup_fail(out, "unsupported frontend request code");
    if (code >> 16 != 3)
        return startup_fail(out, "unsupported frontend protocol: only 3.x is supported");
    out->kind = PGW_STARTUP_MESSAGE;
    out->major = 3;
    out->minor = (uint16_t)(code & 0xffffu);
    if (len < pktlen)
        return PGW_NEED_MORE;
    return startup_params(buf, pktlen, out);
}

int pgw_startup_next(const pgw_startup_t *st, size_t *off, const char **name, const char **value)
{
    const char *p, *name_end, *val, *val_end, *end;

    if (st->params == NULL || *off >= st->params_len)
        return 0;
    p = st->params + *off;
    end = st->params + st->params_len;
    name_end = memchr(p, 0, (size_t)(end - p));
    if (name_end == NULL)
        return 0;
    val = name_end + 1;
    val_end = memchr(val, 0, (size_t)(end - val));
    if (val_end == NULL)
        return 0;
    *name = p;
    *value = val;
    *off = (size_t)(val_end + 1 - st->params);
    return 1;
}

/* Returns the LAST occurrence of a repeated name, as the server does. */
const char *pgw_startup_get(const pgw_startup_t *st, const char *name)
{
    const char *n, *v, *found = NULL;
    size_t off = 0;

    while (pgw_startup_next(st, &off, &n, &v))
        if (strcmp(n, name) == 0)
            found = v;
    return found;
}

/* ---- normal phase framing --------------------------------------------------------- */

void pgw_scan_init(pgw_scan_t *s, uint32_t max_len)
{
    memset(s, 0, sizeof *s);
    s->max_len = max_len ? max_len : SCAN_DEFAULT_MAX;
}

void pgw_scan_release(pgw_scan_t *s)
{
    free(s->copy);
    s->copy = NULL;
    s->cap = NULL;
}

void pgw_scan_capture(pgw_scan_t *s, uint8_t type)
{
    s->capture[type >> 3] |= (uint8_t)(1u << (type & 7));
}

static int scan_captures(const pgw_scan_t *s, uint8_t type)
{
    return (s->capture[type >> 3] >> (type & 7)) & 1;
}

void pgw_scan_skip_body(pgw_scan_t *s)
{
    if (s->capturing == CAP_PENDING)
        s->hdr_have = 0;   /* nothing left of it: between messages */
    s->capturing = CAP_OFF;
}

static ssize_t scan_fail(pgw_scan_t *s, const char *msg)
{
    s->err = msg;
    return PGW_ERR;
}

/* The last header byte arrived: check it and enter the body. */
static void scan_header_done(pgw_scan_t *s, pgw_event_t *ev)
{
    s->type = s->hdr[0];
    s->body_left = s->len - 4;
    s->cap = s->hdr;        /* an empty body: any valid pointer */
    s->cap_len = 0;
    s->capturing = (scan_captures(s, s->type) && s->body_left <= PGW_CAPTURE_MAX) ? CAP_ON : CAP_OFF;

    if (s->type == 'Z')
        return;             /* HEADER waits for the status byte */
    *ev = PGW_EV_HEADER;
    if (s->body_left == 0) {
        if (s->capturing)
            s->capturing = CAP_PENDING;
        else
            s->hdr_have = 0;
    }
}

/* Body bytes buf[0..n) of a captured message: seen in place when they are all of it,
 * else gathered in s->copy. Returns 0, or PGW_ERR when the copy cannot be allocated. */
static ssize_t scan_capture_body(pgw_scan_t *s, const uint8_t *buf, size_t n)
{
    if (s->copy == NULL && s->cap_len == 0 && n == s->body_left) {
        s->cap = buf;
        s->cap_len = (uint32_t)n;
        return 0;
    }
    if (s->copy == NULL) {
        s->copy = malloc(s->len - 4);
        if (s->copy == NULL)
            return scan_fail(s, "out of memory gathering a message");
    }
    memcpy(s->copy + s->cap_len, buf, n);
    s->cap_len += (uint32_t)n;
    s->cap = s->copy;
    return 0;
}

ssize_t pgw_scan(pgw_scan_t *s, const uint8_t *buf, size_t len, pgw_event_t *ev)
{
    size_t n;

    *ev = PGW_EV_NONE;
    if (s->err != NULL)
        return PGW_ERR;
    if (s->copy != NULL && s->capturing != CAP_ON) {
        /* the gathered body was reported by the previous call */
        free(s->copy);
        s->copy = NULL;
        s->cap = NULL;
    }

    if (s->capturing == CAP_PENDING) {
        s->capturing = CAP_OFF;
        s->hdr_have = 0;
        *ev = PGW_EV_CAPTURED;
        return 0;
    }
    if (len == 0)
        return 0;

    if (s->hdr_have == HDR_LEN) {
        /* in the body (body_left > 0 here) */
        if (s->type == 'Z') {
            uint8_t st = buf[0];
            if (st != 'I' && st != 'T' && st != 'E')
                return scan_fail(s, "invalid transaction status in ReadyForQuery");
            s->status = st;
            s->body_left = 0;
            if (s->capturing) {
                s->cap = &s->status;
                s->cap_len = 1;
                s->capturing = CAP_PENDING;
            } else {
                s->hdr_have = 0;
            }
            *ev = PGW_EV_HEADER;
            return 1;
        }
        n = len < s->body_left ? len : s->body_left;
        if (s->capturing && scan_capture_body(s, buf, n) != 0)
            return PGW_ERR;
        s->body_left -= (uint32_t)n;
        if (s->body_left == 0) {
            if (s->capturing) {
                s->capturing = CAP_OFF;
                *ev = PGW_EV_CAPTURED;
            }
            s->hdr_have = 0;
        }
        return (ssize_t)n;
    }

    /* in the header */
    n = HDR_LEN - s->hdr_have;
    if (n > len)
        n = len;
    memcpy(s->hdr + s->hdr_have, buf, n);
    s->hdr_have = (uint8_t)(s->hdr_have + n);
    if (s->hdr_have < HDR_LEN)
        return (ssize_t)n;

    s->type = s->hdr[0];
    s->len = get_be32(s->hdr + 1);
    if (s->len < 4)
        return scan_fail(s, "invalid message length");
    if (s->len > s->max_len)
        return scan_fail(s, "message length exceeds the configured maximum");
    if (s->type == 'Z' && s->len != 5)
        return scan_fail(s, "invalid ReadyForQuery message length");
    scan_header_done(s, ev);
    return (ssize_t)n;
}

/* ---- builders --------------------------------------------------------------------- */

/* Type byte and length field of a message of `total` bytes (type included). */
static uint8_t *put_head(uint8_t *out, uint8_t type, size_t total)
{
    out[0] = type;
    return put_be32(out + 1, (uint32_t)(total - 1));
}

static int fits(size_t total, size_t cap)
{
    return total <= cap && total <= PGW_BUILD_MAX;
}

/* Authentication request 'R' with a code and no data (Ok = 0, CleartextPassword = 3). */
static size_t build_auth(uint8_t *out, size_t cap, uint32_t code)
{
    if (!fits(9, cap))
        return 0;
    put_be32(put_head(out, 'R', 9), code);
    return 9;
}

size_t pgw_build_auth_ok(uint8_t *out, size_t cap)
{
    return build_auth(out, cap, 0);
}

size_t pgw_build_auth_cleartext(uint8_t *out, size_t cap)
{
    return build_auth(out, cap, 3);
}

size_t pgw_build_parameter_status(uint8_t *out, size_t cap, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    size_t total;
    uint8_t *p;

    if (nl > PGW_BUILD_MAX || vl > PGW_BUILD_MAX)
        return 0;
    total = 5 + nl + 1 + vl + 1;
    if (!fits(total, cap))
        return 0;
    p = put_head(out, 'S', total);
    p = put_cstr(p, name, nl);
    put_cstr(p, value, vl);
    return total;
}

size_t pgw_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    if (!fits(13, cap))
        return 0;
    put_be32(put_be32(put_head(out, 'K', 13), pid), key);
    return 13;
}

/* Returns 0 for a status other than 'I', 'T' or 'E': never put a malformed 'Z' on the wire. */
size_t pgw_build_ready(uint8_t *out, size_t cap, uint8_t status)
{
    if (status != 'I' && status != 'T' && status != 'E')
        return 0;
    if (!fits(6, cap))
        return 0;
    put_head(out, 'Z', 6)[0] = status;
    return 6;
}

/* Largest prefix of s[0..n) that is at most room bytes and ends on a UTF-8 boundary. */
static size_t utf8_cut(const char *s, size_t n, size_t room)
{
    if (n <= room)
        return n;
    n = room;
    while (n > 0 && ((uint8_t)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* NULL severity/sqlstate/message default to "ERROR", "XX000" and "". Severity and sqlstate
 * are never truncated: if they do not fit with empty texts, nothing is written. */
size_t pgw_build_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                       const char *message, const char *detail)
{
    size_t sl, cl, ml, dl, fixed, room, mt, dt, total;
    uint8_t *p;

    if (severity == NULL)
        severity = "ERROR";
    if (sqlstate == NULL)
        sqlstate = "XX000";
    if (message == NULL)
        message = "";
    sl = strlen(severity);
    cl = strlen(sqlstate);
    ml = strlen(message);
    dl = detail ? strlen(detail) : 0;
    if (cap > PGW_BUILD_MAX)
        cap = PGW_BUILD_MAX;
    /* type + length, S and V, C, M (empty), D (empty) if any, final terminator;
     * summed in 64 bits so it cannot wrap with a 32-bit size_t */
    {
        uint64_t f = 5 + 2 * ((uint64_t)sl + 2) + ((uint64_t)cl + 2) + 2 + (detail ? 2 : 0) + 1;
        if (f > cap)
            return 0;
        fixed = (size_t)f;
    }
    room = cap - fixed;
    /* The message has priority; the detail gets what is left only if the message fits
     * whole (never a cut message followed by a scrap of detail). */
    mt = utf8_cut(message, ml, room);
    room -= mt;
    dt = (detail && mt == ml) ? utf8_cut(detail, dl, room) : 0;
    total = fixed + mt + dt;

    p = put_head(out, 'E', total);
    *p++ = 'S';
    p = put_cstr(p, severity, sl);
    *p++ = 'V';
    p = put_cstr(p, severity, sl);
    *p++ = 'C';
    p = put_cstr(p, sqlstate, cl);
    *p++ = 'M';
    p = put_cstr(p, message, mt);
    if (detail) {
        *p++ = 'D';
        p = put_cstr(p, detail, dt);
    }
    *p = 0;
    return total;
}

size_t pgw_build_negotiate(uint8_t *out, size_t cap, uint32_t newest_minor,
                           const char *const *opts, size_t n)
{
    size_t total = 13;
    uint8_t *p;

    if (n > INT32_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(opts[i]);
        if (l >= PGW_BUILD_MAX - total)
            return 0;
        total += l + 1;
    }
    if (!fits(total, cap))
        return 0;
    p = put_head(out, 'v', total);
    p = put_be32(p, newest_minor);
    p = put_be32(p, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        p = put_cstr(p, opts[i], strlen(opts[i]));
    return total;
}

size_t pgw_build_query(uint8_t *out, size_t cap, const char *sql)
{
    size_t sl = strlen(sql), total;

    if (sl >= PGW_BUILD_MAX - 5)
        return 0;
    total = 5 + sl + 1;
    if (!fits(total, cap))
        return 0;
    put_cstr(put_head(out, 'Q', total), sql, sl);
    return total;
}

size_t pgw_build_terminate(uint8_t *out, size_t cap)
{
    if (!fits(5, cap))
        return 0;
    put_head(out, 'X', 5);
    return 5;
}

size_t pgw_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key)
{
    uint8_t *p;

    if (!fits(16, cap))
        return 0;
    p = put_be32(out, 16);
    p = put_be32(p, PGW_CANCEL_REQUEST_CODE);
    p = put_be32(p, pid);
    put_be32(p, key);
    return 16;
}

size_t pgw_notification_size(const char *channel, const char *payload)
{
    size_t cl = strlen(channel), pl = strlen(payload);

    /* type, length, pid, two terminators: 11 bytes besides the texts */
    if (cl > PGW_BUILD_MAX - 11 || pl > PGW_BUILD_MAX - 11 - cl)
        return 0;
    return 11 + cl + pl;
}

size_t pgw_build_notification(uint8_t *out, size_t cap, uint32_t pid, const char *channel,
                              const char *payload)
{
    size_t total = pgw_notification_size(channel, payload);
    uint8_t *p;

    if (total == 0 || !fits(total, cap))
        return 0;
    p = put_be32(put_head(out, 'A', total), pid);
    p = put_cstr(p, channel, strlen(channel));
    put_cstr(p, payload, strlen(payload));
    return total;
}

/* ---- PasswordMessage -------------------------------------------------------------- */

static ssize_t password_fail(pgw_password_t *out, const char *msg)
{
    out->err = msg;
    return PGW_ERR;
}

ssize_t pgw_password_parse(const uint8_t *buf, size_t len, uint32_t max_len, pgw_password_t *out)
{
    uint32_t msglen, lo = 0;
    const uint8_t *body, *nul;

    memset(out, 0, sizeof *out);
    if (len == 0)
        return PGW_NEED_MORE;
    if (buf[0] != 'p')
        return password_fail(out, "expected a password message");
    /* The length bytes we have bound it from below (big-endian): reject early. */
    for (size_t i = 1; i < 5; i++)
        lo = lo << 8 | (i < len ? buf[i] : 0u);
    if (lo > max_len || lo > INT32_MAX)
        return password_fail(out, "invalid password message length");
    if (len < 5)
        return PGW_NEED_MORE;
    msglen = lo;
    if (msglen < 5)
        return password_fail(out, "invalid password message length");
    if (len - 1 < msglen)
        return PGW_NEED_MORE;

    body = buf + 5;
    nul = memchr(body, 0, msglen - 4);
    if (nul == NULL || nul + 1 != body + (msglen - 4)) {
        out->err = "invalid password packet size";
        return (ssize_t)msglen + 1;
    }
    out->password = (const char *)body;
    out->len = (size_t)(nul - body);
    return (ssize_t)msglen + 1;
}

/* ---- readers for captured bodies --------------------------------------------------- */

/* Fields absent from the body are left NULL. Unknown field codes are skipped. The body
 * must end exactly with the terminating zero byte. */
int pgw_parse_error(const uint8_t *body, size_t len, pgw_error_fields_t *out)
{
    size_t pos = 0;
    const char *sev_s = NULL, *sev_v = NULL;

    memset(out, 0, sizeof *out);
    for (;;) {
        uint8_t code;
        const uint8_t *val, *nul;

        if (pos >= len)
            return PGW_ERR;                 /* no terminating zero byte */
        code = body[pos++];
        if (code == 0)
            break;
        val = body + pos;
        nul = memchr(val, 0, len - pos);
        if (nul == NULL)
            return PGW_ERR;                 /* field not NUL-terminated */
        switch (code) {
        case 'S': sev_s = (const char *)val; break;
        case 'V': sev_v = (const char *)val; break;
        case 'C': out->sqlstate = (const char *)val; break;
        case 'M': out->message = (const char *)val; break;
        case 'D': out->detail = (const char *)val; break;
        default: break;
        }
        pos = (size_t)(nul - body) + 1;
    }
    if (pos != len)
        return PGW_ERR;                     /* bytes after the terminator */
    out->severity = sev_v ? sev_v : sev_s;
    return 0;
}

int pgw_parse_parameter_status(const uint8_t *body, size_t len, const char **name, const char **value)
{
    const uint8_t *name_end, *val, *val_end;

    name_end = memchr(body, 0, len);
    if (name_end == NULL)
        return PGW_ERR;
    val = name_end + 1;
    val_end = memchr(val, 0, len - (size_t)(val - body));
    if (val_end == NULL || val_end + 1 != body + len)
        return PGW_ERR;
    *name = (const char *)body;
    *value = (const char *)val;
    return 0;
}
