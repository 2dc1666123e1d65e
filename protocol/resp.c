/*
 * resp.c - RESP request and reply scanners (why they exist: see resp.h).
 *
 * Both scanners are byte-driven state machines over a caller-owned struct, so a scan
 * stops anywhere (mid-line, mid-bulk, mid-escape) and resumes on the next call:
 *
 *     bytes --> resp_req_scan   --> "command complete: argc, first args, wire size"
 *     bytes --> resp_reply_scan --> "reply complete: type, first element, 3rd integer"
 *
 * Lines (type lines, inline commands) are walked a byte at a time; bulk bodies are
 * skipped with one subtraction per call, copying at most RESP_CAP_LEN bytes of them. The
 * common case, a whole command or a whole simple reply in the buffer, takes a one-pass
 * fast path with the same results (req_fast, reply_fast).
 *
 * Requests are framed exactly as Redis 7 frames them (networking.c,
 * processMultibulkBuffer / processInlineBuffer), because the proxy must see the same
 * command boundaries the server will see; anything else would let a client smuggle a
 * command past the session's bookkeeping. The Redis habits mirrored on purpose:
 *   - a "*"/"$" line ends at the first '\r'; the byte after it is skipped unchecked, and
 *     so are the two bytes after a bulk body;
 *   - an inline line ends at '\n' (a '\r' before it is dropped);
 *   - Redis finds line ends with strchr(), which stops at a NUL byte: after a NUL the
 *     line never ends, and only the length limit ends it (with Redis's error);
 *   - numbers follow string2ll(): no sign but '-', no leading zeros, no "-0";
 *   - "*0" and any negative count are empty commands, consumed and not reported;
 *   - inline arguments are split as sdssplitargs() splits them, quote errors included,
 *     and errors are reported only when the line is complete, as Redis does;
 *   - "expected '$', got 'x'" has '\r'/'\n' replaced by spaces, as addReplyErrorFormat.
 *   - an inline line is refused as Redis refuses it: when a call's input ends without
 *     the line's '\n' and more than RESP_INLINE_MAX bytes of it (a pending '\r'
 *     included) are in; so a longer line whose '\n' comes in the same read is accepted,
 *     and the caller's read size decides, as Redis's does (each call adds at most one
 *     read, so a line never grows past two reads' worth).
 * One limit differs: a count above RESP_MAX_ARGS is rejected (Redis 7 allows INT_MAX);
 * no unauthenticated-size limits.
 *
 * Replies are any RESP2/RESP3 value. Nesting costs no memory: p->pending counts the
 * values still owed to the current top-level value (an aggregate of n replaces its own
 * owed value with n, a map or attribute with 2n; an attribute owes its pairs but is not
 * itself a value). The direct children of a top-level aggregate are found without a
 * stack: child i starts when pending == top_total - i and ends when it drops below.
 * Replies come from a server, so their framing is checked strictly ("\r\n" after bulk
 * bodies, integer syntax, '_' and '#' contents).
 */
#include "protocol/resp.h"

#include <stdio.h>
#include <string.h>

#define RESP_DEFAULT_MAX_BULK (512ull * 1024 * 1024)

/* ---- small helpers ------------------------------------------------------------------ */

/* isspace() of the C locale, without the locale. */
static int resp_is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int resp_hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Strict integer parsing, fed one byte at a time (Redis string2ll / hiredis rules):
 * optional '-', then "0" alone or a digit 1-9 followed by digits, within int64.
 */
static void resp_num_feed(uint64_t *mag, int *digits, int *neg, int *bad, int c)
{
    uint64_t limit, d;

    if (*bad)
        return;
    if (c == '-' && *digits == 0 && !*neg) {
        *neg = 1;
        return;
    }
    if (c < '0' || c > '9' ||
        (*digits > 0 && *mag == 0) ||           /* leading zero */
        (*digits == 0 && c == '0' && *neg)) {   /* "-0" */
        *bad = 1;
        return;
    }
    d = (uint64_t)(c - '0');
    limit = *neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (*mag > (limit - d) / 10) {
        *bad = 1;
        return;
    }
    *mag = *mag * 10 + d;
    (*digits)++;
}

/* 0 and the value, or -1 if what was fed is not a number. */
static int resp_num_get(uint64_t mag, int digits, int neg, int bad, int64_t *out)
{
    if (bad || digits == 0)
        return -1;
    if (neg)
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        *out = (int64_t)mag;
    return 0;
}

/*
 * The fast paths: the usual request or reply, whole in the buffer with every line in its
 * canonical form, parsed in one pass instead of a byte at a time through the state
 * machine. They give exactly the results the byte-wise scan gives, and return 0 for
 * anything else (an odd line end, a value split across reads, a type they do not take),
 * which the byte-wise scan then takes from its first byte. fuzz_resp feeds every input
 * whole and in chunks and compares: the fast paths against the byte-wise scan.
 */

/* A whole "<integer>\r\n" line at buf[*i..len): '-' and at most 18 digits, no leading zero,
 * no "-0" (so within int64, and what resp_num_feed accepts): its value in *v and *i past
 * the "\r\n"; -1 for anything else, longer numbers included. */
static inline __attribute__((always_inline)) int fast_int_line(const uint8_t *buf, size_t len, size_t *i,
                                                                 int64_t *v)
{
    size_t k = *i, d0;

    /* Most lines are one or two digits ("*3", "$16"): those first, without the loop. */
    if (len - k >= 4 && (unsigned)(buf[k] - '0') <= 9) {
        unsigned a = (unsigned)(buf[k] - '0'), b = (unsigned)(buf[k + 1] - '0');
        if (buf[k + 1] == '\r' && buf[k + 2] == '\n') {
            *v = a;
            *i = k + 3;
            return 0;
        }
        if (a != 0 && b <= 9 && buf[k + 2] == '\r' && buf[k + 3] == '\n') {
            *v = a * 10 + b;
            *i = k + 4;
            return 0;
        }
    }
    int neg = k < len && buf[k] == '-';
    uint64_t mag = 0;

    k += (size_t)neg;
    d0 = k;
    while (k < len && buf[k] >= '0' && buf[k] <= '9' && k - d0 < 18)
        mag = mag * 10 + (uint64_t)(buf[k++] - '0');
    if (k == d0 || (buf[d0] == '0' && (k - d0 > 1 || neg)) || k + 1 >= len || buf[k] != '\r' ||
        buf[k + 1] != '\n')
        return -1;
    *v = neg ? -(int64_t)mag : (int64_t)mag;
    *i = k + 2;
    return 0;
}

/* ---- requests ----------------------------------------------------------------------- */

enum {
    REQ_START = 0,      /* between commands: the next byte picks multibulk or inline */
    REQ_MB_COUNT,       /* "*<count>" line, '*' consumed */
    REQ_BULK_HDR,       /* "$<len>" line of the next argument */
    REQ_BULK_BODY,      /* argument bytes and the two (unchecked) bytes after them */
    REQ_INLINE,         /* an inline command line */
    REQ_ERROR           /* sticky: r->err says why */
};

/* Inline tokenizer states (r->inline_quote), after sdssplitargs(). */
enum {
    IQ_BLANK = 0,       /* between arguments */
    IQ_WORD,            /* in an unquoted argument */
    IQ_DQ,              /* in "double quotes" */
    IQ_DQ_ESC,          /* after '\' in double quotes */
    IQ_DQ_X,            /* after "\x" in double quotes */
    IQ_DQ_XH,           /* after "\x" and one hex digit (r->inline_hex) */
    IQ_SQ,              /* in 'single quotes' */
    IQ_SQ_ESC,          /* after '\' in single quotes */
    IQ_CLOSED           /* right after a closing quote: a space or the line end must follow */
};

void resp_req_init(resp_req_t *r, uint64_t max_bulk)
{
    memset(r, 0, sizeof *r);
    r->max_bulk = max_bulk ? max_bulk : RESP_DEFAULT_MAX_BULK;
    r->state = REQ_START;
}

int resp_req_at_boundary(const resp_req_t *r)
{
    return r->state == REQ_START && r->bytes_in_cmd == 0;
}

int resp_req_arg_is(const resp_req_t *r, uint32_t i, const char *word)
{
    size_t n = strlen(word);

    if (i >= r->ncap || r->arg_trunc[i] || r->arg_len[i] != n)
        return 0;
    for (size_t k = 0; k < n; k++) {
        int a = (unsigned char)r->arg[i][k], b = (unsigned char)word[k];
        if (a >= 'A' && a <= 'Z')
            a += 'a' - 'A';
        if (b >= 'A' && b <= 'Z')
            b += 'a' - 'A';
        if (a != b)
            return 0;
    }
    return 1;
}

static ssize_t req_fail(resp_req_t *r, const char *msg)
{
    r->state = REQ_ERROR;
    r->err = msg;
    return RESP_ERR;
}

static void req_line_reset(resp_req_t *r)
{
    r->num = 0;
    r->num_digits = 0;
    r->num_neg = 0;
    r->num_bad = 0;
    r->line_cr = 0;
    r->line_nul = 0;
    r->line_first = -1;
    r->inline_len = 0;
}

/* The first byte of a command: forget the previous command's result. */
static void req_begin(resp_req_t *r)
{
    r->inline_cmd = 0;
    r->argc = 0;
    r->ncap = 0;
    r->cur_arg = 0;
    r->args_left = 0;
    r->cmd_bytes = 0;
    for (int i = 0; i < RESP_CAP_ARGS; i++) {
        r->arg_len[i] = 0;
        r->arg_trunc[i] = 0;
        r->arg[i][0] = '\0';
    }
    req_line_reset(r);
    r->inline_quote = IQ_BLANK;
    r->inline_hex = 0;
    r->inline_bad = 0;
}

static void req_complete(resp_req_t *r, int *done)
{
    r->ncap = r->argc < RESP_CAP_ARGS ? r->argc : RESP_CAP_ARGS;
    r->cmd_bytes = r->bytes_in_cmd;
    r->bytes_in_cmd = 0;
    r->state = REQ_START;
    *done = 1;
}

/* An empty command ("*0", "*-3", a blank inline line): consumed, never reported. */
static void req_skip(resp_req_t *r)
{
    r->bytes_in_cmd = 0;
    r->state = REQ_START;
}

/* Append one byte to the current inline argument's capture. */
static void inline_put(resp_req_t *r, int c)
{
    uint32_t i = r->cur_arg, n;

    if (i >= RESP_CAP_ARGS)
        return;
    n = r->arg_len[i];
    if (n < RESP_CAP_LEN) {
        r->arg[i][n] = (char)c;
        r->arg[i][n + 1] = '\0';
    } else {
        r->arg_trunc[i] = 1;
    }
    if (n < UINT32_MAX)
        r->arg_len[i] = n + 1;
}

/* One more byte of an inline line (saturating: the limit is checked per call). */
static void inline_count(resp_req_t *r)
{
    if (r->inline_len < UINT32_MAX)
        r->inline_len++;
}

/* One byte of an inline line (never the terminating '\n') through sdssplitargs(). */
static void inline_feed(resp_req_t *r, int c)
{
    if (r->inline_bad)
        return;
    for (;;) {
        switch (r->inline_quote) {
        case IQ_BLANK:
            if (resp_is_space(c))
                return;
            r->cur_arg = r->argc++;
            r->ncap = r->cur_arg < RESP_CAP_ARGS ? r->cur_arg : RESP_CAP_ARGS;  /* done ones */
            r->inline_quote = IQ_WORD;
            continue;                   /* c is the argument's first byte */
        case IQ_WORD:
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
                r->inline_quote = IQ_BLANK;
            else if (c == '"')
                r->inline_quote = IQ_DQ;
            else if (c == '\'')
                r->inline_quote = IQ_SQ;
            else
                inline_put(r, c);
            return;
        case IQ_DQ:
            if (c == '\\')
                r->inline_quote = IQ_DQ_ESC;
            else if (c == '"')
                r->inline_quote = IQ_CLOSED;
            else
                inline_put(r, c);
            return;
        case IQ_DQ_ESC:
            r->inline_quote = IQ_DQ;
            switch (c) {
            case 'x': r->inline_quote = IQ_DQ_X; return;
            case 'n': inline_put(r, '\n'); return;
            case 'r': inline_put(r, '\r'); return;
            case 't': inline_put(r, '\t'); return;
            case 'b': inline_put(r, '\b'); return;
            case 'a': inline_put(r, '\a'); return;
            default:  inline_put(r, c); return;
            }
        case IQ_DQ_X:
            if (resp_hex_val(c) >= 0) {
                r->inline_hex = c;
                r->inline_quote = IQ_DQ_XH;
                return;
            }
            inline_put(r, 'x');         /* "\x" not followed by two hex digits: 'x' */
            r->inline_quote = IQ_DQ;
            continue;
        case IQ_DQ_XH:
            if (resp_hex_val(c) >= 0) {
                inline_put(r, resp_hex_val(r->inline_hex) * 16 + resp_hex_val(c));
                r->inline_quote = IQ_DQ;
                return;
            }
            inline_put(r, 'x');
            inline_put(r, r->inline_hex);
            r->inline_quote = IQ_DQ;
            continue;
        case IQ_SQ:
            if (c == '\\')
                r->inline_quote = IQ_SQ_ESC;
            else if (c == '\'')
                r->inline_quote = IQ_CLOSED;
            else
                inline_put(r, c);
            return;
        case IQ_SQ_ESC:
            r->inline_quote = IQ_SQ;
            if (c == '\'') {
                inline_put(r, '\'');
                return;
            }
            inline_put(r, '\\');
            continue;
        case IQ_CLOSED:
            if (resp_is_space(c))
                r->inline_quote = IQ_BLANK;
            else
                r->inline_bad = 1;      /* closing quote must be followed by a space */
            return;
        default:
            r->inline_bad = 1;
            return;
        }
    }
}

/* A "*<count>" line is complete. 0, or RESP_ERR. */
static int req_count_done(resp_req_t *r)
{
    int64_t n;

    if (resp_num_get(r->num, r->num_digits, r->num_neg, r->num_bad, &n) != 0 ||
        n > RESP_MAX_ARGS) {
        req_fail(r, "Protocol error: invalid multibulk length");
        return RESP_ERR;
    }
    if (n <= 0) {
        req_skip(r);
        return 0;
    }
    r->argc = (uint32_t)n;
    r->args_left = (uint32_t)n;
    r->cur_arg = 0;
    req_line_reset(r);
    r->state = REQ_BULK_HDR;
    return 0;
}

/* A "$<len>" line is complete. 0, or RESP_ERR. */
static int req_bulk_hdr_done(resp_req_t *r)
{
    int64_t n;

    if (r->line_first != '$') {
        int c = r->line_first;
        if (c == '\r' || c == '\n')
            c = ' ';
        snprintf(r->err_buf, sizeof r->err_buf, "Protocol error: expected '$', got '%c'", c);
        req_fail(r, r->err_buf);
        return RESP_ERR;
    }
    if (resp_num_get(r->num, r->num_digits, r->num_neg, r->num_bad, &n) != 0 ||
        n < 0 || (uint64_t)n > r->max_bulk) {
        req_fail(r, "Protocol error: invalid bulk length");
        return RESP_ERR;
    }
    r->num = (uint64_t)n;               /* from here on: the argument's length */
    r->bulk_left = (uint64_t)n + 2;
    if (r->cur_arg < RESP_CAP_ARGS) {
        r->arg_len[r->cur_arg] = (uint64_t)n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        r->arg_trunc[r->cur_arg] = (uint64_t)n > RESP_CAP_LEN;
        r->arg[r->cur_arg][0] = '\0';
    }
    r->state = REQ_BULK_BODY;
    return 0;
}

/* Fast path: "*<n>\r\n" and n times "$<len>\r\n<bytes>" and two bytes, whole in buf[0..len).
 * Bytes consumed, the command reported as the byte-wise scan reports it; or 0. */
static size_t req_fast(resp_req_t *r, const uint8_t *buf, size_t len, int *done)
{
    size_t i = 1;
    int64_t argc, n;

    if (fast_int_line(buf, len, &i, &argc) != 0 || argc <= 0 || argc > RESP_MAX_ARGS)
        return 0;
    req_begin(r);                       /* on a 0 return the byte-wise scan begins again */
    for (uint32_t a = 0; a < (uint32_t)argc; a++) {
        if (i >= len || buf[i] != '$')
            return 0;
        i++;
        if (fast_int_line(buf, len, &i, &n) != 0 || n < 0 || (uint64_t)n > r->max_bulk ||
            (uint64_t)n + 2 > len - i)
            return 0;
        if (a < RESP_CAP_ARGS) {
            size_t cap = n < RESP_CAP_LEN ? (size_t)n : RESP_CAP_LEN;
            r->arg_len[a] = (uint64_t)n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
            r->arg_trunc[a] = n > RESP_CAP_LEN;
            memcpy(r->arg[a], buf + i, cap);
            r->arg[a][cap] = '\0';
        }
        i += (size_t)n + 2;
    }
    r->argc = (uint32_t)argc;
    r->bytes_in_cmd = i;
    req_complete(r, done);
    return i;
}

ssize_t resp_req_scan(resp_req_t *r, const uint8_t *buf, size_t len, int *done)
{
    size_t i = 0;

    *done = 0;
    if (r->state == REQ_ERROR)
        return RESP_ERR;

    while (i < len) {
        switch (r->state) {
        case REQ_START: {
            size_t fast = buf[i] == '*' ? req_fast(r, buf + i, len - i, done) : 0;
            if (fast > 0)
                return (ssize_t)(i + fast);
            req_begin(r);
            if (buf[i] == '*') {
                i++;
                r->bytes_in_cmd = 1;
                r->inline_len = 1;      /* Redis counts the '*' in the line limit */
                r->state = REQ_MB_COUNT;
            } else {
                r->state = REQ_INLINE;
            }
            break;
        }

        case REQ_MB_COUNT:
        case REQ_BULK_HDR: {
            int c = buf[i++];
            r->bytes_in_cmd++;
            if (r->line_cr) {           /* the byte after '\r', whatever it is */
                int rc = r->state == REQ_MB_COUNT ? req_count_done(r) : req_bulk_hdr_done(r);
                if (rc != 0)
                    return RESP_ERR;
                break;
            }
            if (r->state == REQ_BULK_HDR && r->line_first < 0)
                r->line_first = c;
            if (c == '\r' && !r->line_nul) {
                r->line_cr = 1;
                break;
            }
            if (++r->inline_len > RESP_INLINE_MAX)
                return req_fail(r, r->state == REQ_MB_COUNT
                                       ? "Protocol error: too big mbulk count string"
                                       : "Protocol error: too big bulk count string");
            if (c == '\0')
                r->line_nul = 1;
            if (r->state == REQ_MB_COUNT || r->inline_len > 1)  /* not the '$' itself */
                resp_num_feed(&r->num, &r->num_digits, &r->num_neg, &r->num_bad, c);
            break;
        }

        case REQ_BULK_BODY: {
            size_t avail = len - i;
            size_t take = r->bulk_left < avail ? (size_t)r->bulk_left : avail;
            if (r->cur_arg < RESP_CAP_ARGS) {
                uint64_t pos = r->num + 2 - r->bulk_left;   /* offset in the argument */
                uint64_t cap = r->num < RESP_CAP_LEN ? r->num : RESP_CAP_LEN;
                if (pos < cap) {
                    size_t n = cap - pos < take ? (size_t)(cap - pos) : take;
                    memcpy(r->arg[r->cur_arg] + pos, buf + i, n);
                    r->arg[r->cur_arg][pos + n] = '\0';
                }
            }
            i += take;
            r->bulk_left -= take;
            r->bytes_in_cmd += take;
            if (r->bulk_left == 0) {
                r->cur_arg++;
                r->ncap = r->cur_arg < RESP_CAP_ARGS ? r->cur_arg : RESP_CAP_ARGS;
                if (--r->args_left == 0) {
                    req_complete(r, done);
                    return (ssize_t)i;
                }
                req_line_reset(r);
                r->state = REQ_BULK_HDR;
            }
            break;
        }

        case REQ_INLINE: {
            int c = buf[i++];
            r->bytes_in_cmd++;
            if (c == '\n' && !r->line_nul) {    /* a '\r' before it is not part of the line */
                if (r->inline_bad || (r->inline_quote != IQ_BLANK &&
                                      r->inline_quote != IQ_WORD &&
                                      r->inline_quote != IQ_CLOSED))
                    return req_fail(r, "Protocol error: unbalanced quotes in request");
                if (r->argc == 0) {
                    req_skip(r);
                    break;
                }
                r->inline_cmd = 1;
                req_complete(r, done);
                return (ssize_t)i;
            }
            /* Line bytes count toward the limit, checked when the input runs out. */
            if (r->line_cr) {           /* the previous '\r' was not the line end */
                r->line_cr = 0;
                inline_count(r);
                inline_feed(r, '\r');
            }
            if (c == '\r') {
                r->line_cr = 1;
                break;
            }
            inline_count(r);
            if (c == '\0')
                r->line_nul = 1;
            inline_feed(r, c);
            break;
        }

        default:
            return req_fail(r, "Protocol error: scanner state corrupted");
        }
    }
    /* Redis's own test, made when a read ends without the line's '\n': more than
     * RESP_INLINE_MAX bytes buffered (a '\r' not yet known to end the line included). */
    if (r->state == REQ_INLINE && (uint64_t)r->inline_len + (uint64_t)r->line_cr > RESP_INLINE_MAX)
        return req_fail(r, "Protocol error: too big inline request");
    return (ssize_t)i;
}

/* ---- replies ------------------------------------------------------------------------ */

enum {
    RP_TYPE = 0,        /* expecting a type byte */
    RP_LINE,            /* the rest of a type line, up to "\r\n" */
    RP_BULK,            /* bulk body ($, =, !) */
    RP_BULK_CR,         /* the '\r' after a bulk body */
    RP_BULK_LF,         /* the '\n' after a bulk body */
    RP_ERROR            /* sticky: p->err says why */
};

/* Where the value whose header is being read sits in the top-level value. */
enum {
    ROLE_TOP,           /* it is the top-level value */
    ROLE_CHILD,         /* a direct child of the top-level aggregate, index p->elem_index */
    ROLE_NESTED         /* deeper, or inside an attribute */
};

void resp_reply_init(resp_reply_t *p, uint64_t max_bulk)
{
    memset(p, 0, sizeof *p);
    p->max_bulk = max_bulk ? max_bulk : RESP_DEFAULT_MAX_BULK;
    p->state = RP_TYPE;
    p->pending = 1;
}

int resp_reply_at_boundary(const resp_reply_t *p)
{
    return p->state == RP_TYPE && p->bytes_in_reply == 0;
}

static ssize_t reply_fail(resp_reply_t *p, const char *msg)
{
    p->state = RP_ERROR;
    p->err = msg;
    return RESP_ERR;
}

static int reply_role(const resp_reply_t *p)
{
    /* Attribute pairs are always read while pending is above these marks. */
    if (!p->top_seen)
        return p->pending == 1 ? ROLE_TOP : ROLE_NESTED;
    if (p->depth1 && p->elem_index < p->top_total &&
        p->pending == p->top_total - p->elem_index)
        return ROLE_CHILD;
    return ROLE_NESTED;
}

/* One value is complete. 1 when that completes the top-level value. */
static int reply_value_done(resp_reply_t *p)
{
    p->pending--;
    p->capturing = 0;
    if (p->top_seen && !p->depth1 && p->elem_index < p->top_total &&
        p->pending == p->top_total - p->elem_index - 1) {
        p->elem_index++;                /* a direct child ended: the next one may start */
        p->depth1 = 1;
    }
    return p->pending == 0;
}

static void reply_capture(resp_reply_t *p, const uint8_t *s, size_t n)
{
    if (p->first_len >= RESP_CAP_LEN)
        return;
    if (n > RESP_CAP_LEN - p->first_len)
        n = RESP_CAP_LEN - p->first_len;
    memcpy(p->first + p->first_len, s, n);
    p->first_len += (uint32_t)n;
    p->first[p->first_len] = '\0';
}

static int reply_is_count_type(int t)
{
    return t == '$' || t == '=' || t == '!' || t == '*' || t == '%' || t == '~' ||
           t == '>' || t == '|' || t == ':';
}

/* A type byte. 0, or RESP_ERR. */
static int reply_type_byte(resp_reply_t *p, int c)
{
    int role;

    switch (c) {
    case '+': case '-': case ':': case ',': case '(': case '#': case '_':
    case '$': case '=': case '!':
    case '*': case '%': case '~': case '>': case '|':
        break;
    default:
        if (c > 0x20 && c < 0x7f)
            snprintf(p->err_buf, sizeof p->err_buf, "Protocol error: invalid reply type '%c'", c);
        else
            snprintf(p->err_buf, sizeof p->err_buf, "Protocol error: invalid reply type 0x%02x", c);
        reply_fail(p, p->err_buf);
        return RESP_ERR;
    }
    role = reply_role(p);
    p->cur_type = (char)c;
    p->line_len = 0;
    p->line_cr = 0;
    p->num = 0;
    p->num_mag = 0;
    p->num_digits = 0;
    p->neg = 0;
    p->num_bad = 0;
    /* Line values are captured as they stream; bulk bodies from their header's end. */
    p->capturing = (role == ROLE_TOP || (role == ROLE_CHILD && p->elem_index == 0)) &&
                   (c == '+' || c == '-' || c == ':' || c == ',' || c == '(' || c == '#');
    p->state = RP_LINE;
    return 0;
}

/* One byte of a type line's text. 0, or RESP_ERR. */
static int reply_line_byte(resp_reply_t *p, uint8_t c)
{
    int t = p->cur_type;

    p->line_len++;
    if (reply_is_count_type(t)) {
        if (p->line_len > RESP_LINE_MAX) {
            reply_fail(p, "Protocol error: too long count line");
            return RESP_ERR;
        }
        if (c == '?' && p->line_len == 1 && t != ':') {
            reply_fail(p, "Protocol error: streamed RESP3 values are not supported");
            return RESP_ERR;
        }
        resp_num_feed(&p->num_mag, &p->num_digits, &p->neg, &p->num_bad, c);
    } else if (t == '_') {
        reply_fail(p, "Protocol error: invalid null");
        return RESP_ERR;
    } else if (t == '#') {
        if (p->line_len > 1 || (c != 't' && c != 'f')) {
            reply_fail(p, "Protocol error: invalid boolean");
            return RESP_ERR;
        }
        p->num = c == 't';
    }
    if (p->capturing)
        reply_capture(p, &c, 1);
    return 0;
}

/* A type line is complete ("\r\n" consumed). 1 if the top-level value is complete,
 * 0 if not, RESP_ERR. */
static int reply_line_end(resp_reply_t *p)
{
    int t = p->cur_type, role = reply_role(p);
    int64_t v = 0;

    if (reply_is_count_type(t) &&
        resp_num_get(p->num_mag, p->num_digits, p->neg, p->num_bad, &v) != 0) {
        reply_fail(p, t == ':' ? "Protocol error: invalid integer"
                      : (t == '$' || t == '=' || t == '!') ? "Protocol error: invalid bulk length"
                      : "Protocol error: invalid multibulk length");
        return RESP_ERR;
    }
    p->state = RP_TYPE;

    if (t == '|') {                     /* pairs owed, but not itself a value */
        if (v < 0 || (uint64_t)v * 2 > UINT64_MAX - p->pending) {
            reply_fail(p, "Protocol error: invalid multibulk length");
            return RESP_ERR;
        }
        p->pending += (uint64_t)v * 2;
        return 0;
    }

    if (role == ROLE_TOP) {
        p->type = (char)t;
        p->top_seen = 1;
    } else if (role == ROLE_CHILD) {
        p->depth1 = 0;                  /* inside child elem_index until it completes */
    }

    switch (t) {
    case '#':
        if (p->line_len != 1) {
            reply_fail(p, "Protocol error: invalid boolean");
            return RESP_ERR;
        }
        if (role == ROLE_TOP)
            p->integer = p->num;
        return reply_value_done(p);
    case '_':
        if (role == ROLE_TOP)
            p->is_null = 1;
        return reply_value_done(p);
    case ':':
        if (role == ROLE_TOP)
            p->integer = v;
        if (role == ROLE_CHILD && p->elem_index == 2) {
            p->has_third_int = 1;
            p->third_int = v;
        }
        return reply_value_done(p);
    case '$': case '=': case '!':
        if (v < -1 || (v >= 0 && (uint64_t)v > p->max_bulk)) {
            reply_fail(p, "Protocol error: invalid bulk length");
            return RESP_ERR;
        }
        if (v == -1) {
            if (role == ROLE_TOP)
                p->is_null = 1;
            return reply_value_done(p);
        }
        p->bulk_left = (uint64_t)v;
        p->capturing = role == ROLE_TOP || (role == ROLE_CHILD && p->elem_index == 0);
        p->state = v == 0 ? RP_BULK_CR : RP_BULK;
        return 0;
    case '*': case '%': case '~': case '>': {
        uint64_t total;
        if (v < -1) {
            reply_fail(p, "Protocol error: invalid multibulk length");
            return RESP_ERR;
        }
        total = v == -1 ? 0 : (uint64_t)v * (t == '%' ? 2 : 1);
        if (role == ROLE_TOP) {
            p->nelem = v;
            p->is_null = v == -1;
            p->top_total = total;
            p->elem_index = 0;
            p->depth1 = total > 0;
        }
        if (total == 0)
            return reply_value_done(p);
        if (total - 1 > UINT64_MAX - p->pending) {
            reply_fail(p, "Protocol error: invalid multibulk length");
            return RESP_ERR;
        }
        p->pending += total - 1;
        return 0;
    }
    default:                            /* '+', '-', ',', '(' */
        return reply_value_done(p);
    }
}

/* The first byte of a top-level value: forget the previous one's result. */
static void reply_begin(resp_reply_t *p)
{
    p->type = 0;
    p->is_null = 0;
    p->integer = 0;
    p->nelem = 0;
    p->first[0] = '\0';
    p->first_len = 0;
    p->has_third_int = 0;
    p->third_int = 0;
    p->pending = 1;
    p->top_seen = 0;
    p->top_total = 0;
    p->elem_index = 0;
    p->depth1 = 0;
    p->capturing = 0;
}

static void reply_complete(resp_reply_t *p, int *done)
{
    p->reply_bytes = p->bytes_in_reply;
    p->bytes_in_reply = 0;
    p->pending = 1;
    p->top_seen = 0;
    p->depth1 = 0;
    p->capturing = 0;
    p->state = RP_TYPE;
    *done = 1;
}

/* Fast path: a top-level "+<text>\r\n", "-<text>\r\n", ":<integer>\r\n", "$-1\r\n" or
 * "$<len>\r\n<bytes>\r\n", whole in buf[0..len). Bytes consumed, the reply reported as the
 * byte-wise scan reports it; or 0. */
static size_t reply_fast(resp_reply_t *p, const uint8_t *buf, size_t len, int *done)
{
    int t = buf[0];
    size_t i = 1;
    int64_t v = 0;

    if (t == '+' || t == '-') {
        const uint8_t *cr = buf + 1, *end = buf + len;
        while ((cr = memchr(cr, '\r', (size_t)(end - cr))) != NULL && cr + 1 < end && cr[1] != '\n')
            cr++;                       /* a lone '\r' is text */
        if (cr == NULL || cr + 1 >= end)
            return 0;
        reply_begin(p);
        reply_capture(p, buf + 1, (size_t)(cr - buf) - 1);
        i = (size_t)(cr - buf) + 2;
    } else if (t == ':') {
        if (fast_int_line(buf, len, &i, &v) != 0)
            return 0;
        reply_begin(p);
        reply_capture(p, buf + 1, i - 3);
        p->integer = v;
    } else if (t == '$') {
        if (fast_int_line(buf, len, &i, &v) != 0 || v < -1 || (v >= 0 && (uint64_t)v > p->max_bulk))
            return 0;
        if (v >= 0 && ((uint64_t)v + 2 > len - i || buf[i + (size_t)v] != '\r' || buf[i + (size_t)v + 1] != '\n'))
            return 0;
        reply_begin(p);
        if (v == -1) {
            p->is_null = 1;
        } else {
            reply_capture(p, buf + i, (size_t)v);
            i += (size_t)v + 2;
        }
    } else {
        return 0;
    }
    p->type = (char)t;
    p->bytes_in_reply = i;
    reply_complete(p, done);
    return i;
}

ssize_t resp_reply_scan(resp_reply_t *p, const uint8_t *buf, size_t len, int *done)
{
    size_t i = 0;
    int rc;

    *done = 0;
    if (p->state == RP_ERROR)
        return RESP_ERR;

    while (i < len) {
        switch (p->state) {
        case RP_TYPE:
            if (p->bytes_in_reply == 0) {
                size_t fast = reply_fast(p, buf + i, len - i, done);
                if (fast > 0)
                    return (ssize_t)(i + fast);
                reply_begin(p);
            }
            p->bytes_in_reply++;
            if (reply_type_byte(p, buf[i++]) != 0)
                return RESP_ERR;
            break;

        case RP_LINE: {
            uint8_t c = buf[i++];
            p->bytes_in_reply++;
            if (p->line_cr) {
                p->line_cr = 0;
                if (c == '\n') {
                    rc = reply_line_end(p);
                    if (rc < 0)
                        return RESP_ERR;
                    if (rc == 1) {
                        reply_complete(p, done);
                        return (ssize_t)i;
                    }
                    break;
                }
                if (reply_line_byte(p, '\r') != 0)  /* a lone '\r' is text */
                    return RESP_ERR;
            }
            if (c == '\r')
                p->line_cr = 1;
            else if (reply_line_byte(p, c) != 0)
                return RESP_ERR;
            break;
        }

        case RP_BULK: {
            size_t avail = len - i;
            size_t take = p->bulk_left < avail ? (size_t)p->bulk_left : avail;
            if (p->capturing)
                reply_capture(p, buf + i, take);
            i += take;
            p->bulk_left -= take;
            p->bytes_in_reply += take;
            if (p->bulk_left == 0)
                p->state = RP_BULK_CR;
            break;
        }

        case RP_BULK_CR:
        case RP_BULK_LF: {
            uint8_t want = p->state == RP_BULK_CR ? '\r' : '\n';
            p->bytes_in_reply++;
            if (buf[i++] != want)
                return reply_fail(p, "Protocol error: bulk not terminated by CRLF");
            if (want == '\r') {
                p->state = RP_BULK_LF;
                break;
            }
            p->state = RP_TYPE;
            if (reply_value_done(p)) {
                reply_complete(p, done);
                return (ssize_t)i;
            }
            break;
        }

        default:
            return reply_fail(p, "Protocol error: scanner state corrupted");
        }
    }
    return (ssize_t)i;
}
