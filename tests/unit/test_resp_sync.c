/*
 * test_resp_sync.c - the SYNC / PSYNC reply framer (protocol/resp_sync.c) on byte vectors.
 *
 * Every vector is fed whole, one byte at a time, and split in two at every offset; each
 * way must give the same summary: the events with the stream offset after each, then the
 * final state and how many bytes were consumed (the command stream, or the replies after a
 * refusal, start there), or the exact error. Each chunk sits at the end of an exact-size
 * heap buffer, so ASan catches a read past it.
 */
#include "protocol/resp_sync.h"
#include "tests/unit/unit.h"

#include <stdlib.h>

static const char *const ev_names[] = { "-", "reply", "header", "done" };
static const char *const st_names[] = { "reply", "bulk", "eof", "stream", "refused" };

/* Feed v[0..n) in chunks: split 0 whole, -1 a byte at a time, else [0..split) then the rest. */
static void summary(int psync, const uint8_t *v, size_t n, long split, char *out, size_t cap)
{
    resp_sync_t s;
    resp_sync_init(&s, psync);
    size_t pos = 0, o = 0;
    out[0] = '\0';
    while (pos < n) {
        size_t clen = split == 0 ? n - pos : split < 0 ? 1 : (pos < (size_t)split ? (size_t)split - pos : n - pos);
        uint8_t *chunk = malloc(clen ? clen : 1);
        memcpy(chunk, v + pos, clen);
        size_t off = 0;
        while (off < clen) {
            int ev;
            ssize_t r = resp_sync_scan(&s, chunk + off, clen - off, &ev);
            if (r < 0) {
                snprintf(out + o, cap - o, "E:%s", s.err);
                free(chunk);
                return;
            }
            off += (size_t)r;
            if (ev != RESP_SYNC_EV_NONE)
                o += (size_t)snprintf(out + o, cap - o, "%s@%zu ", ev_names[ev], pos + off);
            if (s.state == RESP_SYNC_STREAM || s.state == RESP_SYNC_REFUSED)
                break;
            if (r == 0 && ev == RESP_SYNC_EV_NONE)
                break;
        }
        pos += off;
        free(chunk);
        if (s.state == RESP_SYNC_STREAM || s.state == RESP_SYNC_REFUSED)
            break;
        if (off < clen)
            break;
    }
    snprintf(out + o, cap - o, "%s:%zu%s", st_names[s.state], pos,
             resp_sync_at_boundary(&s) ? "" : " mid");
}

static void check_vec(int psync, const char *v, size_t n, const char *want)
{
    char whole[512], other[512];
    summary(psync, (const uint8_t *)v, n, 0, whole, sizeof whole);
    CHECK_MSG(strcmp(whole, want) == 0, "got \"%s\", want \"%s\"", whole, want);
    summary(psync, (const uint8_t *)v, n, -1, other, sizeof other);
    CHECK_MSG(strcmp(other, want) == 0, "byte at a time: got \"%s\", want \"%s\"", other, want);
    for (size_t k = 1; k < n; k++) {
        summary(psync, (const uint8_t *)v, n, (long)k, other, sizeof other);
        CHECK_MSG(strcmp(other, want) == 0, "split at %zu: got \"%s\", want \"%s\"", k, other, want);
    }
}

#define VEC(psync, lit, want) check_vec((psync), (lit), sizeof(lit) - 1, (want))
#define MARK "0123456789abcdef0123456789abcdef01234567"

int main(void)
{
    /* PSYNC, disk payload: keepalives before and after the reply, no CRLF after it */
    VEC(1, "\n\n+FULLRESYNC 8de1787ba490483314a4d30f1c628bc5025eb761 0\r\n\n\n$5\r\nREDIS*1\r\n$4\r\nPING\r\n",
        "reply@58 header@64 done@69 stream:69");
    /* SYNC: no +FULLRESYNC; the header is the reply */
    VEC(0, "\n$3\r\nabc*1\r\n", "reply@5 done@8 stream:8");
    /* "\r\n" is a keepalive too */
    VEC(0, "\r\n\r\n$1\r\nx", "reply@8 done@9 stream:9");
    /* diskless: ended by its mark, stream right after it (SYNC of redis-cli --replica) */
    VEC(1, "+FULLRESYNC x 1\r\n$EOF:" MARK "\r\nREDIS0011 " "0123456789" MARK "*1\r\n$4\r\nPING\r\n",
        "reply@17 header@64 done@124 stream:124");
    /* a mark's prefix inside the payload does not end it */
    VEC(0, "$EOF:" MARK "\r\n" "0123456789abcdef0123" "xx" MARK,
        "reply@47 done@109 stream:109");
    /* an empty disk payload */
    VEC(0, "$0\r\n*1\r\n", "reply@4 stream:4");
    /* partial resync: the stream follows the reply at once */
    VEC(1, "+CONTINUE 8de1787ba490483314a4d30f1c628bc5025eb761\r\n*1\r\n$4\r\nPING\r\n", "reply@52 stream:52");
    VEC(1, "+CONTINUE\r\n", "reply@11 stream:11");
    /* refused: an ordinary error reply; what follows is left for the reply scanner */
    VEC(1, "-NOMASTERLINK Can't SYNC while not connected with my master\r\n+OK\r\n", "reply@61 refused:61");
    VEC(0, "\n-ERR Replica can't interact\r\n:1\r\n", "reply@30 refused:30");
    /* incomplete: where it stands */
    VEC(1, "\n\n+FULLRESYNC x 1\r\n$10\r\nREDIS", "reply@19 header@24 bulk:29 mid");
    VEC(1, "+FULLRES", "reply:8 mid");
    VEC(0, "$EOF:" MARK "\r\nabc", "reply@47 eof:50 mid");

    /* malformed */
    VEC(1, "$5\r\nREDIS", "E:unexpected reply to PSYNC");
    VEC(1, ":1\r\n", "E:unexpected reply to PSYNC");
    VEC(0, "*1\r\n", "E:unexpected reply to SYNC");
    VEC(0, "+OK\r\n", "E:unexpected reply to SYNC");
    VEC(1, "+FULLRESYNC x 0\r\n+FULLRESYNC x 0\r\n", "reply@17 E:unexpected reply to PSYNC");
    VEC(0, "$abc\r\n", "E:invalid replication payload header");
    VEC(0, "$-1\r\n", "E:invalid replication payload header");
    VEC(0, "$\r\n", "E:invalid replication payload header");
    VEC(0, "$1234567890123456789\r\n", "E:invalid replication payload header");
    VEC(0, "$EOF:short\r\n", "E:invalid replication payload header");
    VEC(1, "+FULLRESYNC x 0\r\n-ERR late\r\n", "reply@17 E:unexpected reply to PSYNC");

    /* a line longer than any reply: an error, not unbounded buffering */
    {
        size_t n = RESP_SYNC_LINE_MAX + 10;
        char *v = malloc(n);
        memset(v, 'a', n);
        v[0] = '-';
        char out[256];
        summary(0, (const uint8_t *)v, n, 0, out, sizeof out);
        CHECK(strcmp(out, "E:replication reply line too long") == 0);
        free(v);
    }
    /* a long error line is fine (kept truncated) */
    {
        char v[400];
        memset(v, 'e', sizeof v);
        v[0] = '-';
        v[398] = '\r';
        v[399] = '\n';
        resp_sync_t s;
        int ev;
        resp_sync_init(&s, 1);
        CHECK(resp_sync_scan(&s, (const uint8_t *)v, sizeof v, &ev) == (ssize_t)sizeof v);
        CHECK(ev == RESP_SYNC_EV_REPLY && s.state == RESP_SYNC_REFUSED);
        CHECK(strlen(s.line) == RESP_SYNC_LINE_CAP);
    }
    /* a large disk payload streams through without being held */
    {
        resp_sync_t s;
        int ev;
        static uint8_t big[1 << 16];
        resp_sync_init(&s, 0);
        CHECK(resp_sync_scan(&s, (const uint8_t *)"$200000\r\n", 9, &ev) == 9 && ev == RESP_SYNC_EV_REPLY);
        size_t total = 0;
        while (s.state == RESP_SYNC_BULK) {
            ssize_t r = resp_sync_scan(&s, big, sizeof big, &ev);
            CHECK(r > 0);
            if (r <= 0)
                break;
            total += (size_t)r;
        }
        CHECK(total == 200000 && s.payload == 200000 && ev == RESP_SYNC_EV_DONE);
    }
    return unit_done("test_resp_sync");
}
