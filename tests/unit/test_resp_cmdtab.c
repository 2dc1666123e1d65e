/*
 * test_resp_cmdtab.c - the Redis command table (protocol/resp_cmdtab.h).
 *
 * Every row is looked up in upper, lower and mixed case, and so is every prefix and
 * extension of its name; names come from exact-size heap copies, so ASan catches a lookup
 * that reads one byte too far. The flag sets the session relies on are compared with the
 * lists they replaced, and classification is checked on requests fed through the real
 * scanner whole, one byte at a time and split at every offset.
 */
#include "protocol/resp_cmdtab.h"
#include "tests/unit/unit.h"

#include <stdint.h>
#include <stdlib.h>

/* Look name[0..len) up from an exact-size heap copy. */
static resp_cmd_id_t lookup(const char *name, size_t len)
{
    char *copy = malloc(len ? len : 1);
    resp_cmd_id_t id;
    if (!copy)
        abort();
    memcpy(copy, name, len);
    id = resp_cmd_lookup(copy, len);
    free(copy);
    return id;
}

static resp_subcmd_id_t sublookup(resp_cmd_id_t parent, const char *name, size_t len)
{
    char *copy = malloc(len ? len : 1);
    resp_subcmd_id_t id;
    if (!copy)
        abort();
    memcpy(copy, name, len);
    id = resp_subcmd_lookup(parent, copy, len);
    free(copy);
    return id;
}

/* name in lower case (0), mixed case starting lower (1) or starting upper (2). */
static void recase(char *out, const char *name, int how)
{
    size_t i;
    for (i = 0; name[i]; i++) {
        char c = name[i];
        int lower = how == 0 || (how == 1 && i % 2 == 0) || (how == 2 && i % 2 == 1);
        out[i] = (lower && c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    out[i] = '\0';
}

static int strictly_before(const char *a, const char *b)
{
    return strcmp(a, b) < 0;   /* names are upper-case ASCII: strcmp orders them as lookup does */
}

static void test_rows(void)
{
    char buf[RESP_CMD_NAME_MAX + 2];

    CHECK(resp_cmd_name(RESP_CMD_UNKNOWN) == NULL && resp_cmd_flags(RESP_CMD_UNKNOWN) == 0);
    CHECK(resp_cmd_name(RESP_CMD_COUNT) == NULL && resp_cmd_flags(RESP_CMD_COUNT) == 0);
    CHECK(resp_subcmd_name(RESP_SUBCMD_NONE) == NULL && resp_subcmd_name(RESP_SUBCMD_COUNT) == NULL);
    CHECK(resp_subcmd_parent(RESP_SUBCMD_NONE) == RESP_CMD_UNKNOWN);
    CHECK(RESP_CMD_COUNT > 240);   /* all of Redis 7.0's commands, and a few newer */

    for (int id = 1; id < RESP_CMD_COUNT; id++) {
        const char *name = resp_cmd_name((resp_cmd_id_t)id);
        size_t len = name ? strlen(name) : 0;
        CHECK_MSG(name != NULL && len > 0 && len <= RESP_CMD_NAME_MAX, "row %d", id);
        if (!name)
            continue;
        if (id > 1)
            CHECK_MSG(strictly_before(resp_cmd_name((resp_cmd_id_t)(id - 1)), name),
                      "%s is out of order", name);
        CHECK_MSG(lookup(name, len) == (resp_cmd_id_t)id, "%s", name);
        for (int how = 0; how < 3; how++) {
            recase(buf, name, how);
            CHECK_MSG(lookup(buf, len) == (resp_cmd_id_t)id, "%s", buf);
        }
        /* A prefix or an extension is never this row, and is some row only by its name. */
        for (size_t k = 1; k < len; k++) {
            resp_cmd_id_t p = lookup(name, k);
            CHECK_MSG(p == RESP_CMD_UNKNOWN ||
                      (strlen(resp_cmd_name(p)) == k && memcmp(resp_cmd_name(p), name, k) == 0),
                      "prefix %.*s of %s", (int)k, name, name);
        }
        if (len < RESP_CMD_NAME_MAX) {
            memcpy(buf, name, len);
            buf[len] = 'X';
            CHECK_MSG(lookup(buf, len + 1) == RESP_CMD_UNKNOWN ||
                      strncmp(resp_cmd_name(lookup(buf, len + 1)), buf, len + 1) == 0, "%sX", name);
            buf[len] = '\0';
            CHECK_MSG(lookup(buf, len + 1) == RESP_CMD_UNKNOWN, "%s followed by NUL", name);
        }
        /* The subcommand column is present exactly on containers. */
        if (resp_cmd_flags((resp_cmd_id_t)id) & RESP_CF_SUBCMDS) {
            int n = 0;
            for (int s = 1; s < RESP_SUBCMD_COUNT; s++)
                n += resp_subcmd_parent((resp_subcmd_id_t)s) == (resp_cmd_id_t)id;
            CHECK_MSG(n > 0, "container %s has no subcommands", name);
        }
    }

    for (int s = 1; s < RESP_SUBCMD_COUNT; s++) {
        resp_subcmd_id_t sub = (resp_subcmd_id_t)s;
        resp_cmd_id_t parent = resp_subcmd_parent(sub);
        const char *name = resp_subcmd_name(sub);
        size_t len = name ? strlen(name) : 0;
        CHECK_MSG(name != NULL && len > 0 && len <= RESP_CMD_NAME_MAX, "subcommand row %d", s);
        CHECK_MSG(resp_cmd_flags(parent) & RESP_CF_SUBCMDS, "parent of %s", name ? name : "?");
        if (!name)
            continue;
        if (s > 1) {
            resp_subcmd_id_t prev = (resp_subcmd_id_t)(s - 1);
            CHECK_MSG(resp_subcmd_parent(prev) < parent ||
                      (resp_subcmd_parent(prev) == parent && strictly_before(resp_subcmd_name(prev), name)),
                      "%s %s is out of order", resp_cmd_name(parent), name);
        }
        for (int how = 0; how < 3; how++) {
            recase(buf, name, how);
            CHECK_MSG(sublookup(parent, buf, len) == sub, "%s %s", resp_cmd_name(parent), buf);
        }
        CHECK_MSG(sublookup(parent, name, len - 1) == RESP_SUBCMD_NONE ||
                  strlen(resp_subcmd_name(sublookup(parent, name, len - 1))) == len - 1, "prefix of %s", name);
        CHECK(sublookup(RESP_CMD_GET, name, len) == RESP_SUBCMD_NONE);   /* not a container */
        CHECK(sublookup(RESP_CMD_UNKNOWN, name, len) == RESP_SUBCMD_NONE);
        CHECK(sublookup(RESP_CMD_COUNT, name, len) == RESP_SUBCMD_NONE);
    }
}

static void test_odd_names(void)
{
    char big[1000];

    CHECK(lookup("", 0) == RESP_CMD_UNKNOWN);
    CHECK(resp_cmd_lookup(NULL, 0) == RESP_CMD_UNKNOWN);
    CHECK(lookup("FOO", 3) == RESP_CMD_UNKNOWN);
    CHECK(lookup("A", 1) == RESP_CMD_UNKNOWN);
    CHECK(lookup("ZZZZZZ", 6) == RESP_CMD_UNKNOWN);   /* after the last row */
    CHECK(lookup("AAA", 3) == RESP_CMD_UNKNOWN);      /* before the first */
    CHECK(lookup("GE", 2) == RESP_CMD_UNKNOWN);
    CHECK(lookup("GET", 3) == RESP_CMD_GET);
    CHECK(lookup("GETD", 4) == RESP_CMD_UNKNOWN);
    CHECK(lookup("GETDEL", 6) == RESP_CMD_GETDEL);
    CHECK(lookup("SUBSCRIBE", 9) == RESP_CMD_SUBSCRIBE && lookup("UBSCRIBE", 8) == RESP_CMD_UNKNOWN);
    CHECK(lookup("restore-asking", 14) == RESP_CMD_RESTORE_ASKING);
    CHECK(lookup("RESTORE_ASKING", 14) == RESP_CMD_UNKNOWN);   /* '-' and '_' are not folded */
    CHECK(lookup("BITFIELD-RO", 11) == RESP_CMD_UNKNOWN);
    CHECK(lookup("georadiusbymember_ro", 20) == RESP_CMD_GEORADIUSBYMEMBER_RO);
    /* Only ASCII letters fold: '@' is not '`', and bytes above 0x7f are nobody's. */
    CHECK(lookup("G\x45T", 3) == RESP_CMD_GET && lookup("G\x65T", 3) == RESP_CMD_GET);
    CHECK(lookup("G\xc5T", 3) == RESP_CMD_UNKNOWN && lookup("G\xe5T", 3) == RESP_CMD_UNKNOWN);
    CHECK(lookup("@ET", 3) == RESP_CMD_UNKNOWN && lookup("`ET", 3) == RESP_CMD_UNKNOWN);
    /* Embedded NULs: the length counts, a NUL is a byte like any other. */
    CHECK(lookup("GET\0", 4) == RESP_CMD_UNKNOWN);
    CHECK(lookup("G\0T", 3) == RESP_CMD_UNKNOWN);
    CHECK(lookup("\0GET", 4) == RESP_CMD_UNKNOWN);
    CHECK(lookup("GET\0X", 3) == RESP_CMD_GET);   /* bytes after len are not read */
    /* Too long: never copied, never found. */
    memset(big, 'A', sizeof big);
    CHECK(lookup(big, RESP_CMD_NAME_MAX) == RESP_CMD_UNKNOWN);
    CHECK(lookup(big, RESP_CMD_NAME_MAX + 1) == RESP_CMD_UNKNOWN);
    CHECK(lookup(big, sizeof big) == RESP_CMD_UNKNOWN);
    memcpy(big, "GET", 3);
    CHECK(lookup(big, sizeof big) == RESP_CMD_UNKNOWN);
    CHECK(sublookup(RESP_CMD_CLIENT, big, sizeof big) == RESP_SUBCMD_NONE);

    CHECK(sublookup(RESP_CMD_CLIENT, "setname", 7) == RESP_SUBCMD_CLIENT_SETNAME);
    CHECK(sublookup(RESP_CMD_CLIENT, "No-Evict", 8) == RESP_SUBCMD_CLIENT_NO_EVICT);
    CHECK(sublookup(RESP_CMD_CLIENT, "NO_EVICT", 8) == RESP_SUBCMD_NONE);
    CHECK(sublookup(RESP_CMD_CLIENT, "SETNAM", 6) == RESP_SUBCMD_NONE);
    CHECK(sublookup(RESP_CMD_CLIENT, "SETNAMES", 8) == RESP_SUBCMD_NONE);
    CHECK(sublookup(RESP_CMD_CLIENT, "SETNAME\0", 8) == RESP_SUBCMD_NONE);
    CHECK(sublookup(RESP_CMD_CLIENT, "", 0) == RESP_SUBCMD_NONE);
    CHECK(sublookup(RESP_CMD_CONFIG, "SETNAME", 7) == RESP_SUBCMD_NONE);   /* another parent's */
    CHECK(sublookup(RESP_CMD_CONFIG, "set", 3) == RESP_SUBCMD_CONFIG_SET);
    CHECK(sublookup(RESP_CMD_CLUSTER, "reset", 5) == RESP_SUBCMD_CLUSTER_RESET);
    CHECK(sublookup(RESP_CMD_LATENCY, "reset", 5) == RESP_SUBCMD_LATENCY_RESET);
    CHECK(sublookup(RESP_CMD_ACL, "whoami", 6) == RESP_SUBCMD_ACL_WHOAMI);
    CHECK(sublookup(RESP_CMD_XINFO, "STREAM", 6) == RESP_SUBCMD_XINFO_STREAM);
}

/* The sets of names with a flag, as a string "A B C" in table order. */
static void names_with(uint32_t flag, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (int id = 1; id < RESP_CMD_COUNT; id++)
        if (resp_cmd_flags((resp_cmd_id_t)id) & flag)
            o += (size_t)snprintf(out + o, cap - o, "%s%s", o ? " " : "", resp_cmd_name((resp_cmd_id_t)id));
}

static void test_flag_sets(void)
{
    static const struct { uint32_t flag; const char *names; } sets[] = {
        { RESP_CF_BLOCKING, "BLMOVE BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN WAIT WAITAOF" },
        { RESP_CF_BLOCK_ARG, "XREAD XREADGROUP" },
        { RESP_CF_SUBSCRIBE, "PSUBSCRIBE SSUBSCRIBE SUBSCRIBE" },
        { RESP_CF_UNSUBSCRIBE, "PUNSUBSCRIBE SUNSUBSCRIBE UNSUBSCRIBE" },
        { RESP_CF_PATTERN, "PSUBSCRIBE PUNSUBSCRIBE" },
        { RESP_CF_SHARD, "SSUBSCRIBE SUNSUBSCRIBE" },
        { RESP_CF_TXN, "DISCARD EXEC MULTI UNWATCH WATCH" },
        { RESP_CF_LOCAL, "AUTH HELLO" },
        { RESP_CF_SCRIPT, "EVAL EVALSHA EVALSHA_RO EVAL_RO FCALL FCALL_RO" },
        { RESP_CF_STATE, "ASKING AUTH HELLO MONITOR PSYNC READONLY READWRITE REPLCONF RESET SELECT SYNC" },
        { RESP_CF_CONN, "CLIENT QUIT" },
        { RESP_CF_SUBCMDS, "ACL CLIENT CLUSTER COMMAND CONFIG FUNCTION LATENCY MEMORY MODULE OBJECT PUBSUB "
                           "SCRIPT SLOWLOG XGROUP XINFO" },
        { RESP_CF_UNSURE, "" },   /* decided by the arguments, never a row's */
    };
    char buf[1024];
    const char *got = buf;

    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        names_with(sets[i].flag, buf, sizeof buf);
        CHECK_STREQ(got, sets[i].names);
    }
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CLIENT_SETNAME) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CLIENT_TRACKING) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CLIENT_REPLY) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CLIENT_NO_EVICT) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CLIENT_NO_TOUCH) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_SCRIPT_DEBUG) & RESP_CF_STATE);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_ACL_WHOAMI) & RESP_CF_CONN);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_CONFIG_SET) & RESP_CF_ADMIN);
    CHECK(resp_subcmd_flags(RESP_SUBCMD_OBJECT_ENCODING) == 0);
    CHECK(resp_cmd_flags(RESP_CMD_DEBUG) & RESP_CF_ADMIN);
    CHECK(resp_cmd_flags(RESP_CMD_GET) == 0 && resp_cmd_flags(RESP_CMD_PUBLISH) == 0);
}

/* ---- classification of scanned requests --------------------------------------------- */

typedef struct {
    resp_cmd_t cmd;
    int        shareable;
    int        n;           /* completed commands */
    int        bad;         /* the scanner failed */
} seen_t;

/* Feed wire[0..len) in pieces of at most step bytes (0: at split, then the rest). */
static seen_t feed(const char *wire, size_t len, size_t step, size_t split)
{
    seen_t s = { { RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0 }, 0, 0, 0 };
    resp_req_t r;
    size_t pos = 0;

    resp_req_init(&r, 0);
    while (pos < len && !s.bad) {
        size_t clen = step ? step : (pos < split ? split - pos : len - pos), off = 0;
        uint8_t *chunk;
        if (clen > len - pos)
            clen = len - pos;
        chunk = malloc(clen);
        if (!chunk)
            abort();
        memcpy(chunk, wire + pos, clen);
        while (off < clen) {
            int done = 0;
            ssize_t rc = resp_req_scan(&r, chunk + off, clen - off, &done);
            if (rc < 0) {
                s.bad = 1;
                break;
            }
            off += (size_t)rc;
            if (done && r.argc > 0) {
                s.cmd = resp_cmd_classify(&r);
                s.shareable = resp_cmd_is_shareable(&s.cmd);
                s.n++;
            }
        }
        free(chunk);
        pos += clen;
    }
    return s;
}

/* "*N\r\n$len\r\narg\r\n..." from words separated by single spaces. */
static size_t multibulk(const char *words, char *out, size_t cap)
{
    const char *w[32];
    size_t wl[32], n = 0, o;
    for (const char *p = words; *p && n < 32;) {
        const char *e = strchr(p, ' ');
        w[n] = p;
        wl[n] = e ? (size_t)(e - p) : strlen(p);
        n++;
        p = e ? e + 1 : p + strlen(p);
    }
    o = (size_t)snprintf(out, cap, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, cap - o, "$%zu\r\n%.*s\r\n", wl[i], (int)wl[i], w[i]);
    return o;
}

static void expect(const char *label, const char *wire, size_t len, resp_cmd_id_t id, resp_subcmd_id_t sub,
                   uint32_t flags, int shareable)
{
    seen_t whole = feed(wire, len, 0, len);
    CHECK_MSG(!whole.bad && whole.n == 1, "%s: scanned %d commands", label, whole.n);
    CHECK_MSG(whole.cmd.id == id, "%s: id %d, want %d", label, whole.cmd.id, id);
    CHECK_MSG(whole.cmd.sub == sub, "%s: sub %d, want %d", label, whole.cmd.sub, sub);
    CHECK_MSG(whole.cmd.flags == flags, "%s: flags %#x, want %#x", label, whole.cmd.flags, flags);
    CHECK_MSG(whole.shareable == shareable, "%s: shareable %d", label, whole.shareable);
    for (size_t k = 0; k <= len; k++) {
        seen_t one = feed(wire, len, k == len ? 1 : 0, k);
        CHECK_MSG(one.n == 1 && one.cmd.id == id && one.cmd.sub == sub && one.cmd.flags == flags &&
                  one.shareable == shareable, "%s: differs when fed %s %zu", label,
                  k == len ? "one byte at a time" : "split at", k);
    }
}

/* A literal's bytes, embedded NULs included. */
#define EXPECT_LIT(label, lit, ...) expect(label, lit, sizeof(lit) - 1, __VA_ARGS__)

/* The same command as a RESP array and as an inline line. */
static void expect_words(const char *words, resp_cmd_id_t id, resp_subcmd_id_t sub, uint32_t flags,
                         int shareable)
{
    char wire[1024];
    size_t n = multibulk(words, wire, sizeof wire);
    expect(words, wire, n, id, sub, flags, shareable);
    n = (size_t)snprintf(wire, sizeof wire, "%s\r\n", words);
    expect(words, wire, n, id, sub, flags, shareable);
}

/* Requests given as words, each sent as a RESP array and as an inline line. */
static const struct {
    const char      *words;
    resp_cmd_id_t    id;
    resp_subcmd_id_t sub;
    uint32_t         flags;
    int              shareable;
} classify_vectors[] = {
#define XR  RESP_CF_BLOCK_ARG                   /* XREAD's own flag */
#define CLI (RESP_CF_CONN | RESP_CF_SUBCMDS)    /* every CLIENT subcommand's */
    { "get k", RESP_CMD_GET, RESP_SUBCMD_NONE, 0, 1 },
    { "Set k v", RESP_CMD_SET, RESP_SUBCMD_NONE, 0, 1 },
    { "PING", RESP_CMD_PING, RESP_SUBCMD_NONE, 0, 1 },
    { "publish ch hello", RESP_CMD_PUBLISH, RESP_SUBCMD_NONE, 0, 1 },
    { "foo bar", RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0 },
    { "getx k", RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0 },
    /* The XREAD / XREADGROUP rule: BLOCK among the captured arguments. */
    { "XREAD COUNT 1 BLOCK 0 STREAMS s 0", RESP_CMD_XREAD, RESP_SUBCMD_NONE, XR | RESP_CF_BLOCKING, 0 },
    { "xread block 0 streams s 0", RESP_CMD_XREAD, RESP_SUBCMD_NONE, XR | RESP_CF_BLOCKING, 0 },
    { "xread streams s 0", RESP_CMD_XREAD, RESP_SUBCMD_NONE, XR, 1 },   /* all 4 seen */
    /* a key named block counts, as it always has */
    { "xread streams s block", RESP_CMD_XREAD, RESP_SUBCMD_NONE, XR | RESP_CF_BLOCKING, 0 },
    { "XREAD COUNT 1 STREAMS s 0", RESP_CMD_XREAD, RESP_SUBCMD_NONE, XR | RESP_CF_UNSURE, 0 },
    /* BLOCK is beyond the captured arguments: not seen, so unsure */
    { "XREADGROUP GROUP g c BLOCK 0 STREAMS s >", RESP_CMD_XREADGROUP, RESP_SUBCMD_NONE, XR | RESP_CF_UNSURE, 0 },
    { "XREADGROUP GROUP g block", RESP_CMD_XREADGROUP, RESP_SUBCMD_NONE, XR | RESP_CF_BLOCKING, 0 },
    { "BLOCK", RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0 },
    { "get BLOCK", RESP_CMD_GET, RESP_SUBCMD_NONE, 0, 1 },   /* the rule is XREAD's only */
    { "XRANGE s - + COUNT 1", RESP_CMD_XRANGE, RESP_SUBCMD_NONE, 0, 1 },
    { "blpop q 0", RESP_CMD_BLPOP, RESP_SUBCMD_NONE, RESP_CF_BLOCKING, 0 },
    { "WAIT 1 0", RESP_CMD_WAIT, RESP_SUBCMD_NONE, RESP_CF_BLOCKING, 0 },
    { "waitaof 1 0 0", RESP_CMD_WAITAOF, RESP_SUBCMD_NONE, RESP_CF_BLOCKING, 0 },
    /* Pub/sub kinds. */
    { "subscribe a b", RESP_CMD_SUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_SUBSCRIBE, 0 },
    { "PSUBSCRIBE a*", RESP_CMD_PSUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_SUBSCRIBE | RESP_CF_PATTERN, 0 },
    { "ssubscribe a", RESP_CMD_SSUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_SUBSCRIBE | RESP_CF_SHARD, 0 },
    { "Unsubscribe", RESP_CMD_UNSUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_UNSUBSCRIBE, 0 },
    { "punsubscribe x", RESP_CMD_PUNSUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_UNSUBSCRIBE | RESP_CF_PATTERN, 0 },
    { "SUNSUBSCRIBE", RESP_CMD_SUNSUBSCRIBE, RESP_SUBCMD_NONE, RESP_CF_UNSUBSCRIBE | RESP_CF_SHARD, 0 },
    /* Subcommands: flags of both rows. */
    { "client setname app", RESP_CMD_CLIENT, RESP_SUBCMD_CLIENT_SETNAME, CLI | RESP_CF_STATE, 0 },
    { "CLIENT REPLY OFF", RESP_CMD_CLIENT, RESP_SUBCMD_CLIENT_REPLY, CLI | RESP_CF_STATE, 0 },
    { "Client Tracking on", RESP_CMD_CLIENT, RESP_SUBCMD_CLIENT_TRACKING, CLI | RESP_CF_STATE, 0 },
    { "client id", RESP_CMD_CLIENT, RESP_SUBCMD_CLIENT_ID, CLI, 0 },
    { "client", RESP_CMD_CLIENT, RESP_SUBCMD_NONE, CLI, 0 },
    { "client bogus", RESP_CMD_CLIENT, RESP_SUBCMD_NONE, CLI, 0 },
    { "object encoding k", RESP_CMD_OBJECT, RESP_SUBCMD_OBJECT_ENCODING, RESP_CF_SUBCMDS, 1 },
    { "memory", RESP_CMD_MEMORY, RESP_SUBCMD_NONE, RESP_CF_SUBCMDS, 0 },
    { "memory bogus", RESP_CMD_MEMORY, RESP_SUBCMD_NONE, RESP_CF_SUBCMDS, 0 },
    { "script load x", RESP_CMD_SCRIPT, RESP_SUBCMD_SCRIPT_LOAD, RESP_CF_SUBCMDS, 1 },
    { "script debug yes", RESP_CMD_SCRIPT, RESP_SUBCMD_SCRIPT_DEBUG, RESP_CF_SUBCMDS | RESP_CF_STATE, 0 },
    { "config get maxmemory", RESP_CMD_CONFIG, RESP_SUBCMD_CONFIG_GET, RESP_CF_SUBCMDS | RESP_CF_ADMIN, 0 },
    { "acl whoami", RESP_CMD_ACL, RESP_SUBCMD_ACL_WHOAMI, RESP_CF_SUBCMDS | RESP_CF_CONN, 0 },
    { "acl cat", RESP_CMD_ACL, RESP_SUBCMD_ACL_CAT, RESP_CF_SUBCMDS, 1 },
    { "get setname", RESP_CMD_GET, RESP_SUBCMD_NONE, 0, 1 },   /* not a container */
    /* Not shareable, each for its own reason. */
    { "multi", RESP_CMD_MULTI, RESP_SUBCMD_NONE, RESP_CF_TXN, 0 },
    { "WATCH k", RESP_CMD_WATCH, RESP_SUBCMD_NONE, RESP_CF_TXN, 0 },
    { "select 1", RESP_CMD_SELECT, RESP_SUBCMD_NONE, RESP_CF_STATE, 0 },
    { "auth pw", RESP_CMD_AUTH, RESP_SUBCMD_NONE, RESP_CF_LOCAL | RESP_CF_STATE, 0 },
    { "hello 3", RESP_CMD_HELLO, RESP_SUBCMD_NONE, RESP_CF_LOCAL | RESP_CF_STATE, 0 },
    { "reset", RESP_CMD_RESET, RESP_SUBCMD_NONE, RESP_CF_STATE, 0 },
    { "readonly", RESP_CMD_READONLY, RESP_SUBCMD_NONE, RESP_CF_STATE, 0 },
    { "monitor", RESP_CMD_MONITOR, RESP_SUBCMD_NONE, RESP_CF_STATE | RESP_CF_ADMIN, 0 },
    { "quit", RESP_CMD_QUIT, RESP_SUBCMD_NONE, RESP_CF_CONN, 0 },
    { "eval x 0", RESP_CMD_EVAL, RESP_SUBCMD_NONE, RESP_CF_SCRIPT, 0 },
    { "fcall_ro f 0", RESP_CMD_FCALL_RO, RESP_SUBCMD_NONE, RESP_CF_SCRIPT, 0 },
    { "debug sleep 1", RESP_CMD_DEBUG, RESP_SUBCMD_NONE, RESP_CF_ADMIN, 0 },
    { "psync ? -1", RESP_CMD_PSYNC, RESP_SUBCMD_NONE, RESP_CF_STATE | RESP_CF_ADMIN, 0 },
#undef XR
#undef CLI
};

static void test_classify(void)
{
    char wire[512];
    size_t n;

    for (size_t i = 0; i < sizeof classify_vectors / sizeof classify_vectors[0]; i++)
        expect_words(classify_vectors[i].words, classify_vectors[i].id, classify_vectors[i].sub,
                     classify_vectors[i].flags, classify_vectors[i].shareable);

    /* A name the capture truncated, an empty name, a NUL in the name. */
    n = (size_t)snprintf(wire, sizeof wire, "*1\r\n$200\r\n%0200d\r\n", 0);
    expect("long name", wire, n, RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0);
    EXPECT_LIT("empty name", "*1\r\n$0\r\n\r\n", RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0);
    EXPECT_LIT("NUL in name", "*2\r\n$4\r\nGET\0\r\n$1\r\nk\r\n", RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0, 0);
    EXPECT_LIT("NUL in subcommand", "*2\r\n$6\r\nCLIENT\r\n$3\r\nID\0\r\n", RESP_CMD_CLIENT, RESP_SUBCMD_NONE,
               RESP_CF_CONN | RESP_CF_SUBCMDS, 0);
    n = (size_t)snprintf(wire, sizeof wire, "*2\r\n$6\r\nCLIENT\r\n$130\r\nSETNAME%0123d\r\n", 0);
    expect("long subcommand", wire, n, RESP_CMD_CLIENT, RESP_SUBCMD_NONE, RESP_CF_CONN | RESP_CF_SUBCMDS, 0);
    EXPECT_LIT("quoted inline", "\"cLiEnT\" 'setname' x\r\n", RESP_CMD_CLIENT, RESP_SUBCMD_CLIENT_SETNAME,
               RESP_CF_CONN | RESP_CF_SUBCMDS | RESP_CF_STATE, 0);
}

/* While a command is still arriving, classify sees the arguments complete so far. */
static void test_partial(void)
{
    static const char wire[] = "*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n";
    resp_req_t r;
    resp_cmd_t c;
    int done = 0;

    resp_req_init(&r, 0);
    CHECK(resp_cmd_classify(&r).id == RESP_CMD_UNKNOWN);   /* nothing captured */
    CHECK(resp_req_scan(&r, (const uint8_t *)wire, 14, &done) == 14 && !done && r.ncap == 0);
    CHECK(resp_cmd_classify(&r).id == RESP_CMD_UNKNOWN);   /* "CLIENT" without its CRLF */
    CHECK(resp_req_scan(&r, (const uint8_t *)wire + 14, 2, &done) == 2 && !done && r.ncap == 1);
    c = resp_cmd_classify(&r);
    CHECK(c.id == RESP_CMD_CLIENT && c.sub == RESP_SUBCMD_NONE);
    CHECK(resp_req_scan(&r, (const uint8_t *)wire + 16, 11, &done) == 11 && !done && r.ncap == 2);
    c = resp_cmd_classify(&r);
    CHECK(c.id == RESP_CMD_CLIENT && c.sub == RESP_SUBCMD_CLIENT_REPLY);
    CHECK(resp_req_scan(&r, (const uint8_t *)wire + 27, sizeof wire - 1 - 27, &done) ==
          (ssize_t)(sizeof wire - 1 - 27) && done);
    c = resp_cmd_classify(&r);
    CHECK(c.id == RESP_CMD_CLIENT && c.sub == RESP_SUBCMD_CLIENT_REPLY && !resp_cmd_is_shareable(&c));
}


/* ---- which commands pin a multiplexed client ---------------------------------------- */

/* Does words (one command), fed in pieces of step bytes (0: whole), pin at shared_db? */
static int pins_of(const char *wire, size_t len, size_t step, int shared_db)
{
    resp_req_t r;
    size_t pos = 0;
    int pins = -1;
    resp_req_init(&r, 0);
    while (pos < len) {
        int done = 0;
        size_t n = step && len - pos > step ? step : len - pos;
        ssize_t rc = resp_req_scan(&r, (const uint8_t *)wire + pos, n, &done);
        if (rc < 0)
            return -2;
        pos += (size_t)rc;
        if (done) {
            resp_cmd_t c = resp_cmd_classify(&r);
            pins = resp_cmd_pins(&c, &r, shared_db);
        }
    }
    return pins;
}

static const struct {
    const char *words;
    int         shared_db;
    int         pins;
} pin_vectors[] = {
    /* shared: plain reads and writes, and what the shared upstream answers alike */
    { "GET k", 0, 0 }, { "SET k v", 0, 0 }, { "MGET a b c", 0, 0 }, { "INCR n", 0, 0 },
    { "DEL k", 0, 0 }, { "PING", 0, 0 }, { "ECHO hi", 0, 0 }, { "PUBLISH ch m", 0, 0 },
    { "EXPIRE k 10", 0, 0 }, { "HSET h f v", 0, 0 }, { "ZADD z 1 m", 0, 0 }, { "XADD s * f v", 0, 0 },
    { "XREAD STREAMS s 0", 0, 0 }, { "INFO", 0, 0 }, { "DBSIZE", 0, 0 }, { "TYPE k", 0, 0 },
    { "SCAN 0", 0, 0 }, { "OBJECT ENCODING k", 0, 0 }, { "get k", 0, 0 },
    /* AUTH is answered by switchyard; SELECT of the shared db changes nothing */
    { "AUTH pw", 0, 0 }, { "AUTH user pw", 0, 0 }, { "SELECT 0", 0, 0 }, { "SELECT 3", 3, 0 },
    /* SELECT of another db, or one we cannot read */
    { "SELECT 1", 0, 1 }, { "SELECT 0", 2, 1 }, { "SELECT x", 0, 1 }, { "SELECT -1", 0, 1 },
    { "SELECT 1 2", 1, 1 }, { "SELECT", 0, 1 }, { "SELECT 9999999999", 0, 1 },
    /* transactions */
    { "MULTI", 0, 1 }, { "EXEC", 0, 1 }, { "DISCARD", 0, 1 }, { "WATCH k", 0, 1 }, { "UNWATCH", 0, 1 },
    /* blocking */
    { "BLPOP l 0", 0, 1 }, { "BRPOP l 0", 0, 1 }, { "BLMOVE a b LEFT RIGHT 0", 0, 1 },
    { "BZPOPMIN z 0", 0, 1 }, { "XREAD BLOCK 0 STREAMS s $", 0, 1 },
    { "XREADGROUP GROUP g c BLOCK 0 STREAMS s >", 0, 1 }, { "WAIT 1 0", 0, 1 }, { "WAITAOF 1 0 0", 0, 1 },
    { "XREAD COUNT 10 STREAMS s1 s2 0 0", 0, 1 },   /* arguments beyond the captured: unsure */
    /* pub/sub, monitor */
    { "SUBSCRIBE ch", 0, 1 }, { "PSUBSCRIBE p*", 0, 1 }, { "SSUBSCRIBE ch", 0, 1 },
    { "UNSUBSCRIBE", 0, 1 }, { "MONITOR", 0, 1 },
    /* the connection's own state, or what reveals it */
    { "CLIENT SETNAME n", 0, 1 }, { "CLIENT TRACKING ON", 0, 1 }, { "CLIENT REPLY OFF", 0, 1 },
    { "CLIENT NO-EVICT ON", 0, 1 }, { "CLIENT NO-TOUCH ON", 0, 1 }, { "CLIENT ID", 0, 1 },
    { "CLIENT INFO", 0, 1 }, { "CLIENT LIST", 0, 1 }, { "CLIENT GETNAME", 0, 1 }, { "CLIENT KILL ID 5", 0, 1 },
    { "CLIENT SETINFO lib-name x", 0, 1 }, { "CLIENT", 0, 1 }, { "CLIENT BOGUS", 0, 1 },
    { "HELLO", 0, 1 }, { "HELLO 3", 0, 1 }, { "HELLO 2", 0, 1 }, { "RESET", 0, 1 }, { "READONLY", 0, 1 },
    { "ASKING", 0, 1 }, { "QUIT", 0, 1 }, { "ACL WHOAMI", 0, 1 },
    /* replication, scripts, operators' commands */
    { "SYNC", 0, 1 }, { "PSYNC ? -1", 0, 1 }, { "REPLCONF listening-port 1", 0, 1 },
    { "EVAL return 1 0", 0, 1 }, { "EVALSHA abc 0", 0, 1 }, { "EVAL_RO return 1 0", 0, 1 },
    { "FCALL f 0", 0, 1 }, { "FCALL_RO f 0", 0, 1 }, { "SCRIPT DEBUG YES", 0, 1 },
    { "CONFIG SET timeout 0", 0, 1 }, { "DEBUG SLEEP 0", 0, 1 }, { "SHUTDOWN", 0, 1 },
    /* unknown: a module or a newer server may give it any semantics */
    { "NOSUCHCOMMAND", 0, 1 }, { "MYMODULE.CMD a", 0, 1 },
};

static void test_pins(void)
{
    char wire[512], line[512];
    for (size_t i = 0; i < sizeof pin_vectors / sizeof pin_vectors[0]; i++) {
        const char *w = pin_vectors[i].words;
        int db = pin_vectors[i].shared_db, want = pin_vectors[i].pins;
        size_t n = multibulk(w, wire, sizeof wire);
        size_t ln = (size_t)snprintf(line, sizeof line, "%s\r\n", w);
        for (size_t step = 0; step <= 3; step++) {
            int got = pins_of(wire, n, step, db), got_inline = pins_of(line, ln, step, db);
            CHECK_MSG(got == want, "%s (db %d, step %zu): pins %d", w, db, step, got);
            CHECK_MSG(got_inline == want, "inline %s (db %d, step %zu): pins %d", w, db, step, got_inline);
        }
    }
}

/* resp_cmd_lookup remembers the last name it was given, byte for byte: a repeat, a name
 * of the same length that differs in one byte or in case, and one too long to remember
 * must each get their own answer. */
static void test_repeats(void)
{
    static const struct { const char *name; resp_cmd_id_t id; } seq[] = {
        { "GET", RESP_CMD_GET },   { "GET", RESP_CMD_GET },     { "SET", RESP_CMD_SET },
        { "GET", RESP_CMD_GET },   { "GEX", RESP_CMD_UNKNOWN }, { "GEX", RESP_CMD_UNKNOWN },
        { "get", RESP_CMD_GET },   { "gEt", RESP_CMD_GET },     { "GETDEL", RESP_CMD_GETDEL },
        { "GETDE", RESP_CMD_UNKNOWN }, { "GET", RESP_CMD_GET },
        { "GEORADIUSBYMEMBER_RO_AND_THEN_SOME", RESP_CMD_UNKNOWN }, { "GET", RESP_CMD_GET },
        { "SUBSCRIBE", RESP_CMD_SUBSCRIBE }, { "SUBSCRIBX", RESP_CMD_UNKNOWN }, { "SUBSCRIBE", RESP_CMD_SUBSCRIBE },
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++)
        CHECK_MSG(lookup(seq[i].name, strlen(seq[i].name)) == seq[i].id, "lookup %zu: %s", i, seq[i].name);
    CHECK(lookup("GET", 3) == RESP_CMD_GET && lookup("", 0) == RESP_CMD_UNKNOWN && lookup("GET", 0) == RESP_CMD_UNKNOWN);
    CHECK(lookup("GET", 3) == RESP_CMD_GET && lookup("GET\0", 4) == RESP_CMD_UNKNOWN && lookup("GET", 3) == RESP_CMD_GET);
}

int main(void)
{
    test_rows();
    test_repeats();
    test_odd_names();
    test_flag_sets();
    test_classify();
    test_partial();
    test_pins();
    return unit_done("resp_cmdtab");
}
