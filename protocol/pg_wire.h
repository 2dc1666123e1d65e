/*
 * pg_wire.h - PostgreSQL frontend/backend protocol 3.0 codec.
 *
 * Pure functions over byte ranges: no sockets, no libuv, no globals. The caller owns
 * every state struct, so a parse resumes exactly where the previous read stopped, and
 * the same functions are fed by the event loop, the unit tests and the fuzzer.
 *
 * Two framings exist on the wire:
 *
 *   startup phase (client -> server, no type byte)
 *       int32 length (includes itself) | int32 code | payload
 *       code = 196608 (3.0) StartupMessage, 80877103 SSLRequest,
 *              80877104 GSSENCRequest, 80877102 CancelRequest
 *
 *   normal phase (both directions)
 *       byte type | int32 length (includes itself, not the type) | body
 *
 * pgw_scan_* frames a normal-phase stream without copying bodies: it reports each
 * message header, optionally shows the bodies of small messages of chosen types (where
 * they lie in the caller's buffer; gathered only when they came in pieces), and skips
 * everything else, so a 100 MB COPY costs nothing but the header checks.
 *
 * Error convention: functions return bytes consumed (>= 0) or PGW_ERR; on PGW_ERR the
 * state's `err` holds a static message. PGW_NEED_MORE (0 consumed) is only returned by
 * pgw_startup_parse, which needs the whole packet at once.
 */
#ifndef SY_PG_WIRE_H
#define SY_PG_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PGW_PROTO_3_0            196608u   /* (3 << 16) | 0 */
#define PGW_SSL_REQUEST_CODE     80877103u
#define PGW_GSSENC_REQUEST_CODE  80877104u
#define PGW_CANCEL_REQUEST_CODE  80877102u

#define PGW_STARTUP_MAX          10000u    /* same cap as the server (MAX_STARTUP_PACKET_LENGTH) */
#define PGW_ERR                  (-1)
#define PGW_NEED_MORE            0

/* ---- startup phase ---------------------------------------------------------------- */

typedef enum {
    PGW_STARTUP_MESSAGE = 1,   /* protocol 3.x StartupMessage */
    PGW_STARTUP_SSL,           /* SSLRequest */
    PGW_STARTUP_GSSENC,        /* GSSENCRequest */
    PGW_STARTUP_CANCEL         /* CancelRequest */
} pgw_startup_kind_t;

typedef struct pgw_startup_s {
    pgw_startup_kind_t kind;
    uint32_t    code;          /* raw protocol/request code */
    uint16_t    major, minor;  /* for STARTUP_MESSAGE */
    /* STARTUP_MESSAGE: name\0value\0 ... (without the final \0), points into caller's buffer */
    const char *params;
    size_t      params_len;
    /* CANCEL */
    uint32_t    cancel_pid;
    uint32_t    cancel_key;
    const char *err;           /* static message when PGW_ERR is returned */
} pgw_startup_t;

/*
 * Parse one startup-phase packet from buf[0..len).
 * Returns the packet's full length when complete, PGW_NEED_MORE when more bytes are
 * needed (never more than PGW_STARTUP_MAX in total), PGW_ERR on malformed input
 * (length < 8 or > PGW_STARTUP_MAX, unknown code, major version != 3, a parameter
 * without terminator, missing final terminator, missing "user", a CancelRequest of the
 * wrong length...). out->err names the problem. out->params points into buf.
 */
ssize_t pgw_startup_parse(const uint8_t *buf, size_t len, pgw_startup_t *out);

/*
 * Iterate parameters of a parsed StartupMessage. *off starts at 0.
 * Returns 1 and sets *name and *value (NUL-terminated, pointing into the buffer), or 0 at end.
 */
int pgw_startup_next(const pgw_startup_t *st, size_t *off, const char **name, const char **value);

/* Find one parameter by exact name; NULL when absent. */
const char *pgw_startup_get(const pgw_startup_t *st, const char *name);

/* ---- normal phase framing --------------------------------------------------------- */

#define PGW_CAPTURE_MAX 1024u      /* largest body pgw_scan captures */

typedef enum {
    PGW_EV_NONE = 0,     /* bytes consumed, nothing to report (body bytes skipped) */
    PGW_EV_HEADER,       /* a message header was completed: type, len (and status for 'Z') */
    PGW_EV_CAPTURED      /* a captured message is complete: body in s->cap[0..cap_len) */
} pgw_event_t;

typedef struct pgw_scan_s {
    /* configuration, set by the caller before the first pgw_scan call */
    uint32_t max_len;            /* largest accepted message length field (includes itself) */
    uint8_t  capture[256 / 8];   /* bitmap of message types whose bodies to capture */

    /* state: private to pg_wire.c */
    uint8_t  hdr[5];
    uint8_t  hdr_have;
    uint8_t  capturing;
    uint32_t body_left;          /* body bytes of the current message not yet consumed */
    uint8_t *copy;               /* a captured body that arrived in pieces, gathered (malloc) */

    /* results of the last event */
    uint8_t  type;               /* message type of the current/last message */
    uint32_t len;                /* its length field (body length + 4) */
    uint8_t  status;             /* for 'Z' (ReadyForQuery): 'I', 'T' or 'E' */
    const uint8_t *cap;          /* CAPTURED: the body, cap_len bytes (see pgw_scan) */
    uint32_t cap_len;

    const char *err;             /* static message after PGW_ERR */
} pgw_scan_t;

/* Initialise a scanner; max_len 0 means 1 GiB. No types captured. On a scanner that was
 * used, pgw_scan_release it first. */
void pgw_scan_init(pgw_scan_t *s, uint32_t max_len);

/* Free what the scanner holds (a body being gathered); it may then be initialised again.
 * A zeroed scanner holds nothing. */
void pgw_scan_release(pgw_scan_t *s);

/* Capture bodies (<= PGW_CAPTURE_MAX) of messages of this type. 'Z' status is always reported. */
void pgw_scan_capture(pgw_scan_t *s, uint8_t type);

/* Right after the HEADER event of a message of a captured type: do not capture this one
 * (its body is skipped; no CAPTURED event follows). */
void pgw_scan_skip_body(pgw_scan_t *s);

/*
 * Consume bytes from buf[0..len). Stops right after an event so the caller can act
 * on it (e.g. decide where to cut the stream). Returns bytes consumed (may be less than
 * len; call again with the rest) and sets *ev, or PGW_ERR with s->err set (length
 * field < 4 or > max_len, ReadyForQuery with a bad status or length; "out of memory"
 * when a body in pieces cannot be gathered).
 * For 'Z' the HEADER event is delayed until the status byte has been read.
 * A captured message reports HEADER first, then CAPTURED when its body is complete.
 * A captured body is not copied when the call that completes it holds all of it: s->cap
 * then points into that call's buf. Only a body that arrived in pieces is gathered, in
 * memory the scanner allocates then and frees at its next call. Either way s->cap is
 * valid until the next pgw_scan call, or until the caller changes buf.
 */
ssize_t pgw_scan(pgw_scan_t *s, const uint8_t *buf, size_t len, pgw_event_t *ev);

/* True when the scanner stands between two messages. */
static inline int pgw_scan_at_boundary(const pgw_scan_t *s)
{
    return s->err == NULL && s->hdr_have == 0;
}

/* ---- builders ----------------------------------------------------------------------
 * Each writes one complete message to out[0..cap) and returns its size, or 0 if it
 * does not fit (callers size buffers so that it does).
 */
size_t pgw_build_auth_ok(uint8_t *out, size_t cap);
/* AuthenticationCleartextPassword ('R', length 8, code 3): ask the client for its password. */
size_t pgw_build_auth_cleartext(uint8_t *out, size_t cap);
size_t pgw_build_parameter_status(uint8_t *out, size_t cap, const char *name, const char *value);
size_t pgw_build_backend_key(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);
size_t pgw_build_ready(uint8_t *out, size_t cap, uint8_t status);
/* ErrorResponse with fields S, V (severity), C (sqlstate), M (message), and D (detail) if non-NULL.
 * Over-long texts are truncated (at a UTF-8 boundary) so the result fits. */
size_t pgw_build_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
                       const char *message, const char *detail);
/* NegotiateProtocolVersion: newest minor supported and the unrecognised option names
 * (n of them, NUL-terminated strings). */
size_t pgw_build_negotiate(uint8_t *out, size_t cap, uint32_t newest_minor,
                           const char *const *opts, size_t n);
/* Simple Query 'Q'. */
size_t pgw_build_query(uint8_t *out, size_t cap, const char *sql);
/* Terminate 'X'. */
size_t pgw_build_terminate(uint8_t *out, size_t cap);
/* CancelRequest (16 bytes, startup framing). */
size_t pgw_build_cancel(uint8_t *out, size_t cap, uint32_t pid, uint32_t key);
/* NotificationResponse 'A': the notifying backend's pid, the channel and the payload.
 * pgw_notification_size() is the size it takes, or 0 when it would exceed the int32
 * length field (the builder then writes nothing, whatever cap). */
size_t pgw_notification_size(const char *channel, const char *payload);
size_t pgw_build_notification(uint8_t *out, size_t cap, uint32_t pid, const char *channel,
                              const char *payload);

/* ---- PasswordMessage (client -> server, answering AuthenticationCleartextPassword) -- */

#define PGW_PASSWORD_MAX 1024u     /* largest length field switchyard accepts for it */

typedef struct pgw_password_s {
    const char *password;      /* NUL-terminated, points into the caller's buffer; NULL
                                  when the body is not exactly one string */
    size_t      len;           /* strlen(password) */
    const char *err;           /* static message after PGW_ERR, or for a bad body */
} pgw_password_t;

/*
 * Parse one PasswordMessage ('p' | int32 length | password\0) from buf[0..len).
 * Nothing is buffered on trust: the type byte is checked as soon as it is there, and the
 * length field (5..max_len) as soon as the bytes that bound it are, so a client that
 * declares 2^31 is turned away after two bytes.
 * Returns the message's full size (type byte included) once all of it is in buf,
 * PGW_NEED_MORE before, or PGW_ERR with out->err ("expected a password message",
 * "invalid password message length"). A complete message whose body is not exactly one
 * NUL-terminated string still returns its size (the framing is sound, the caller may
 * consume it), with out->password NULL and out->err "invalid password packet size"
 * (the server's own words): what to answer is the caller's choice.
 */
ssize_t pgw_password_parse(const uint8_t *buf, size_t len, uint32_t max_len, pgw_password_t *out);

/* ---- readers for captured bodies --------------------------------------------------- */

typedef struct pgw_error_fields_s {
    const char *severity;   /* 'V' if present else 'S' */
    const char *sqlstate;   /* 'C' */
    const char *message;    /* 'M' */
    const char *detail;     /* 'D' */
} pgw_error_fields_t;

/* Parse an ErrorResponse/NoticeResponse body (without type and length). The body must be
 * NUL-terminated field by field as on the wire; pointers point into it. Returns 0 or PGW_ERR. */
int pgw_parse_error(const uint8_t *body, size_t len, pgw_error_fields_t *out);

/* Parse a ParameterStatus body: name\0value\0. Returns 0 or PGW_ERR. */
int pgw_parse_parameter_status(const uint8_t *body, size_t len, const char **name, const char **value);

#endif /* SY_PG_WIRE_H */
