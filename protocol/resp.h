/*
 * resp.h - RESP2/RESP3 framing for the Redis data path.
 *
 * Why our own scanner and not hiredis: Debian 12 ships hiredis 0.14, which cannot parse
 * RESP3 (maps, sets, pushes, attributes, doubles, big numbers, verbatim strings, booleans,
 * nulls) and refuses arrays nested more than 7 deep. It also builds a reply object per
 * message, which the relay must not do. This scanner only frames: it never allocates,
 * nests arbitrarily deep in O(1) memory (it counts the values still owed to the current
 * top-level reply instead of keeping a stack), and streams bulk bodies of any size up to
 * a configured maximum by skipping them. hiredis is still used where a Redis *client* is
 * wanted (tests, tools).
 *
 * Pure functions: (state, bytes, len) -> consumed | error. The caller owns the state.
 *
 * Requests (client -> server) are either RESP arrays of bulk strings or inline commands
 * (a line of space-separated words, e.g. "PING\r\n" typed into telnet). The request
 * scanner reports each command once complete, with its first arguments captured
 * (RESP_CAP_ARGS arguments of at most RESP_CAP_LEN bytes each), which is all the session
 * needs to classify it (AUTH, HELLO, SELECT, MULTI, SUBSCRIBE, CLIENT REPLY, ...).
 *
 * Replies (server -> client) are any RESP2/RESP3 value; the reply scanner reports each
 * complete top-level value with its type, and for aggregates the first element (for
 * pub/sub "message"/"subscribe" kinds) and the integer third element (subscription count).
 */
#ifndef SY_RESP_H
#define SY_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RESP_ERR           (-1)
#define RESP_CAP_ARGS      4        /* arguments captured per request */
#define RESP_CAP_LEN       128      /* bytes captured per argument */
#define RESP_INLINE_MAX    (64 * 1024)  /* longest inline command line (as Redis) */
#define RESP_MAX_ARGS      (1024 * 1024) /* most arguments in one request (as Redis) */
#define RESP_LINE_MAX      512      /* longest type line ("*123\r\n", "+OK\r\n" headers for ints) */

/* ---- requests ---------------------------------------------------------------------- */

typedef struct resp_req_s {
    /* configuration */
    uint64_t max_bulk;          /* largest accepted bulk argument; 0 = 512 MiB (as Redis) */

    /* result of the last completed command (valid when resp_req_scan sets *done) */
    int      inline_cmd;        /* 1 if the command was an inline line */
    uint32_t argc;              /* number of arguments, command name included */
    uint32_t ncap;              /* arguments captured: min(argc, RESP_CAP_ARGS); while a
                                 * command is still arriving, the arguments already
                                 * complete, so resp_req_arg_is() works on them early */
    uint32_t arg_len[RESP_CAP_ARGS];   /* real length of each captured argument */
    uint8_t  arg_trunc[RESP_CAP_ARGS]; /* 1 if arg_len > RESP_CAP_LEN (capture truncated) */
    char     arg[RESP_CAP_ARGS][RESP_CAP_LEN + 1]; /* NUL-terminated captured bytes */
    uint64_t cmd_bytes;         /* wire size of the completed command */

    /* private state */
    int      state;
    uint32_t args_left;
    uint32_t cur_arg;
    uint64_t bulk_left;
    uint64_t num;
    int      num_digits;
    int      inline_quote;
    uint32_t inline_len;
    uint64_t bytes_in_cmd;
    int      num_neg;           /* number being parsed: '-' seen */
    int      num_bad;           /* number being parsed: not a valid integer */
    int      line_cr;           /* '\r' seen on the current line */
    int      line_nul;          /* NUL seen: Redis's strchr() cannot see this line end */
    int      line_first;        /* first byte of a bulk header line (must be '$') */
    int      inline_hex;        /* first hex digit of a pending "\xHH" escape */
    int      inline_bad;        /* quote error seen; reported at the line end as Redis does */
    char     err_buf[48];       /* err when it quotes a byte ("expected '$', got 'x'") */

    const char *err;            /* static message after RESP_ERR */
} resp_req_t;

void resp_req_init(resp_req_t *r, uint64_t max_bulk);

/*
 * Consume request bytes from buf[0..len). Returns bytes consumed, stopping right after a
 * command completes (then *done = 1 and the result fields describe it), or RESP_ERR with
 * r->err set ("Protocol error: invalid multibulk length", "invalid bulk length", "too big
 * inline request", "expected '$', got 'x'", "unbalanced quotes in request"), in the words
 * Redis itself uses so clients see familiar errors.
 * Empty inline lines ("\r\n") are skipped silently as Redis does.
 * Inline commands are split on spaces/tabs; arguments in double or single quotes follow
 * Redis's sdssplitargs rules for the captured values.
 * True when between commands (nothing of the next command consumed yet).
 */
ssize_t resp_req_scan(resp_req_t *r, const uint8_t *buf, size_t len, int *done);
int resp_req_at_boundary(const resp_req_t *r);

/* Case-insensitive compare of captured argument i with a NUL-terminated word. */
int resp_req_arg_is(const resp_req_t *r, uint32_t i, const char *word);

/* ---- replies ----------------------------------------------------------------------- */

typedef struct resp_reply_s {
    /* configuration */
    uint64_t max_bulk;          /* largest accepted bulk/verbatim/blob-error; 0 = 512 MiB */

    /* result of the last completed top-level value */
    char     type;              /* '+', '-', ':', '$', '*', '%', '~', '>', '_', ',', '#', '(', '=', '!' */
    int      is_null;           /* $-1 / *-1 / _ */
    int64_t  integer;           /* for ':' */
    int64_t  nelem;             /* for aggregates: element count as declared at top level */
    /* first element of a top-level aggregate, or the line/bulk of a top-level simple value,
     * or the text of an error ('-' or '!'): captured up to RESP_CAP_LEN bytes */
    char     first[RESP_CAP_LEN + 1];
    uint32_t first_len;
    int      has_third_int;     /* top-level aggregate whose third element is an integer */
    int64_t  third_int;         /* ...its value (pub/sub subscription count) */
    uint64_t reply_bytes;       /* wire size of the completed value, attributes included */

    /* private state */
    int      state;
    uint64_t pending;           /* values still owed to the current top-level value */
    uint64_t bulk_left;
    int64_t  num;
    int      neg;
    int      num_digits;
    char     cur_type;
    uint32_t elem_index;        /* index of the element being read within top-level aggregate */
    int      depth1;            /* reading a direct child of the top-level aggregate */
    int      capturing;
    uint32_t line_len;
    uint64_t bytes_in_reply;
    uint64_t num_mag;           /* number being parsed: magnitude */
    int      num_bad;           /* number being parsed: not a valid integer */
    int      line_cr;           /* '\r' seen on the current line */
    int      top_seen;          /* the top-level value's own header (not an attribute) was read */
    uint64_t top_total;         /* elements of the top-level aggregate (2n for a map) */
    char     err_buf[48];       /* err when it quotes a byte */

    const char *err;
} resp_reply_t;

void resp_reply_init(resp_reply_t *p, uint64_t max_bulk);

/*
 * Consume reply bytes. Returns bytes consumed, stopping right after a complete top-level
 * value (*done = 1, result fields set), or RESP_ERR with p->err set.
 * RESP3 attributes ('|') preceding a value are part of that value (they do not complete a
 * reply on their own). RESP3 streamed aggregates ('?' counts) are rejected.
 */
ssize_t resp_reply_scan(resp_reply_t *p, const uint8_t *buf, size_t len, int *done);
int resp_reply_at_boundary(const resp_reply_t *p);

#endif /* SY_RESP_H */
