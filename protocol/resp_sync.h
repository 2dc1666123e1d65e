/*
 * resp_sync.h - what a Redis master sends after SYNC or PSYNC, up to the command stream.
 *
 * A replica (a real redis-server, `redis-cli --rdb`, `redis-cli --replica`) asks for the
 * data with SYNC or PSYNC on an ordinary client connection. What comes back is not a RESP
 * reply, so the reply scanner cannot frame it:
 *
 *   "\n"*                         keepalives while the master prepares the snapshot
 *   "+FULLRESYNC <id> <off>\r\n"  PSYNC only (SYNC gets no such line); or "+CONTINUE
 *                                 [<id>]\r\n" (partial resync: the stream follows at once);
 *                                 or "-ERR ..." (refused: an ordinary error reply)
 *   "\n"*
 *   "$<len>\r\n" <len bytes>      the RDB from disk, with NO trailing CRLF; or
 *   "$EOF:<40 bytes>\r\n" ... <the same 40 bytes>   the diskless form, ended by its mark
 *   then the replication stream: RESP commands (the master's writes, PING, REPLCONF GETACK)
 *
 * resp_sync_scan frames that prefix and stops where the command stream begins (state
 * RESP_SYNC_STREAM) or where the master refused (RESP_SYNC_REFUSED, after the error line);
 * the stream itself is requests, for resp_req_scan. Like the other scanners: pure,
 * resumable at any byte, no allocation; lengths are checked before they are trusted.
 */
#ifndef SY_RESP_SYNC_H
#define SY_RESP_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RESP_SYNC_MARK     40            /* the diskless end mark (CONFIG_RUN_ID_SIZE) */
#define RESP_SYNC_LINE_CAP 128           /* bytes of a reply line kept (line[]) */
#define RESP_SYNC_LINE_MAX (64 * 1024)   /* longest reply line accepted */

typedef enum {
    RESP_SYNC_REPLY = 0,   /* before or inside a line: keepalives, the reply, the header */
    RESP_SYNC_BULK,        /* inside "$<len>" payload bytes */
    RESP_SYNC_EOF,         /* inside a "$EOF:<mark>" payload */
    RESP_SYNC_STREAM,      /* done: what follows is the command stream */
    RESP_SYNC_REFUSED      /* done: the master answered with an error line */
} resp_sync_state_t;

/* Events resp_sync_scan stops after (*ev). */
enum {
    RESP_SYNC_EV_NONE = 0,
    RESP_SYNC_EV_REPLY,    /* the command's own reply is complete: "+FULLRESYNC"/"+CONTINUE"
                            * (PSYNC), the payload header (SYNC), or the error line */
    RESP_SYNC_EV_HEADER,   /* a payload header after "+FULLRESYNC" */
    RESP_SYNC_EV_DONE      /* the payload ended (or "+CONTINUE"): the stream begins */
};

typedef struct resp_sync_s {
    int      state;        /* resp_sync_state_t */
    int      psync;        /* PSYNC: a "+" line comes first; SYNC: the payload does */
    int      replied;      /* EV_REPLY reported */
    int      in_line;      /* inside a line (its first byte seen) */
    int      line_cr;
    uint32_t line_len;     /* bytes of the current line so far */
    char     line[RESP_SYNC_LINE_CAP + 1];   /* the last line, NUL-terminated, truncated */
    uint64_t bulk_left;    /* RESP_SYNC_BULK: payload bytes still to come */
    uint64_t payload;      /* payload bytes seen */
    uint8_t  mark[RESP_SYNC_MARK];
    uint8_t  tail[RESP_SYNC_MARK];   /* RESP_SYNC_EOF: the last bytes seen, to find a mark
                                      * split across reads */
    uint32_t tail_len;
    const char *err;       /* static message after an error return */
} resp_sync_t;

/* psync: 1 for PSYNC, 0 for SYNC. */
void resp_sync_init(resp_sync_t *s, int psync);

/*
 * Consume bytes of what follows SYNC/PSYNC. Returns bytes consumed (stopping right after
 * an event, *ev says which), or -1 with s->err ("unexpected reply to PSYNC", "invalid
 * payload length", ...). In the done states it consumes nothing: the rest belongs to
 * the command stream (or, after REFUSED, to the replies of later commands).
 */
ssize_t resp_sync_scan(resp_sync_t *s, const uint8_t *buf, size_t len, int *ev);

/* True between items: not inside a line nor a payload. */
int resp_sync_at_boundary(const resp_sync_t *s);

#endif
