/*
 * resp_cmdtab.c - see resp_cmdtab.h. The two X-macro tables become two const arrays whose
 * index is the id minus one (the enum is generated from the same rows in the same order).
 * Lookup folds the name to upper case into a small stack buffer, after checking its
 * length, and hashes it on the way: one probe of an open-addressed table, filled once from
 * both arrays, finds the row (a name longer than any row never gets copied). It runs once
 * per command on the Redis relay path, where a binary search's eight compares showed.
 */
#include <pthread.h>
#include <string.h>
#include "protocol/resp_cmdtab.h"

typedef struct cmd_row_s {
    const char *name;
    uint8_t     len;
    uint32_t    flags;
} cmd_row_t;

typedef struct subcmd_row_s {
    resp_cmd_id_t parent;
    const char   *name;
    uint8_t       len;
    uint32_t      flags;
} subcmd_row_t;

static const cmd_row_t cmd_rows[] = {
#define CMD_ROW(id, name, flags) { name, (uint8_t)(sizeof(name) - 1), flags },
    RESP_COMMANDS(CMD_ROW)
#undef CMD_ROW
};

static const subcmd_row_t subcmd_rows[] = {
#define SUBCMD_ROW(parent, id, name, flags) { RESP_CMD_##parent, name, (uint8_t)(sizeof(name) - 1), flags },
    RESP_SUBCOMMANDS(SUBCMD_ROW)
#undef SUBCMD_ROW
};

#define NCMD    (sizeof(cmd_rows) / sizeof(cmd_rows[0]))
#define NSUBCMD (sizeof(subcmd_rows) / sizeof(subcmd_rows[0]))

_Static_assert(NCMD + 1 == RESP_CMD_COUNT, "one row per command id");
_Static_assert(NSUBCMD + 1 == RESP_SUBCMD_COUNT, "one row per subcommand id");

/* Every name fits RESP_CMD_NAME_MAX (checked at compile time, row by row). */
#define CMD_FITS(id, name, flags) _Static_assert(sizeof(name) - 1 <= RESP_CMD_NAME_MAX, name " too long");
#define SUBCMD_FITS(parent, id, name, flags) CMD_FITS(id, name, flags)
RESP_COMMANDS(CMD_FITS)
RESP_SUBCOMMANDS(SUBCMD_FITS)
#undef CMD_FITS
#undef SUBCMD_FITS

/* Upper-case name[0..len) into up. Returns 0, or -1 when it cannot be a listed name. */
static int fold_name(const char *name, size_t len, char up[RESP_CMD_NAME_MAX])
{
    if (name == NULL || len == 0 || len > RESP_CMD_NAME_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        up[i] = (c >= 'a' && c <= 'z') ? (char)(c - ('a' - 'A')) : c;
    }
    return 0;
}

/* ---- lookup ---------------------------------------------------------------------------- */

/* Slots of the table: a power of two, at least twice the rows, so probes stay short. */
#define NSLOT 1024
_Static_assert(NSLOT >= 2 * (NCMD + NSUBCMD) && (NSLOT & (NSLOT - 1)) == 0, "room in the hash table");

/* 0: empty; 1..NCMD: command row - 1 (the id); NCMD + 1..: subcommand row - 1 (the id). */
static uint16_t slots[NSLOT];
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;

/* FNV-1a of parent's id and name[0..len), name already upper case. */
static uint32_t name_hash(uint32_t parent, const char *name, size_t len)
{
    uint32_t h = 2166136261u ^ parent;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h;
}

static void slot_put(uint32_t h, uint16_t v)
{
    uint32_t i = h & (NSLOT - 1);
    while (slots[i] != 0)
        i = (i + 1) & (NSLOT - 1);
    slots[i] = v;
}

static void slots_fill(void)
{
    for (size_t i = 0; i < NCMD; i++)
        slot_put(name_hash(0, cmd_rows[i].name, cmd_rows[i].len), (uint16_t)(i + 1));
    for (size_t i = 0; i < NSUBCMD; i++)
        slot_put(name_hash((uint32_t)subcmd_rows[i].parent, subcmd_rows[i].name, subcmd_rows[i].len),
                 (uint16_t)(NCMD + i + 1));
}

/* The slot value for (parent, name[0..len)) in any letter case (parent 0: a command), or 0
 * when no row has it: len 0, longer than any row, or any byte no name has. */
static size_t slot_find(uint32_t parent, const char *name, size_t len)
{
    char up[RESP_CMD_NAME_MAX];
    if (fold_name(name, len, up) != 0)
        return 0;
    pthread_once(&slots_once, slots_fill);
    for (uint32_t i = name_hash(parent, up, len) & (NSLOT - 1); slots[i] != 0; i = (i + 1) & (NSLOT - 1)) {
        size_t v = slots[i];
        const char *rname;
        size_t rlen;
        uint32_t rparent;
        if (v <= NCMD) {
            rname = cmd_rows[v - 1].name, rlen = cmd_rows[v - 1].len, rparent = 0;
        } else {
            const subcmd_row_t *row = &subcmd_rows[v - NCMD - 1];
            rname = row->name, rlen = row->len, rparent = (uint32_t)row->parent;
        }
        if (rparent == parent && rlen == len && memcmp(rname, up, len) == 0)
            return v;
    }
    return 0;
}

/* The last command name looked up on this thread, byte for byte as it came: a pipeline
 * mostly repeats one, and comparing its bytes costs a fraction of folding and hashing. */
static __thread struct {
    size_t        len;          /* 0: empty */
    resp_cmd_id_t id;
    char          name[RESP_CMD_NAME_MAX];
} last_cmd;

resp_cmd_id_t resp_cmd_lookup(const char *name, size_t len)
{
    if (len != 0 && len == last_cmd.len && memcmp(name, last_cmd.name, len) == 0)
        return last_cmd.id;
    resp_cmd_id_t id = (resp_cmd_id_t)slot_find(0, name, len);
    if (len != 0 && len <= RESP_CMD_NAME_MAX) {
        memcpy(last_cmd.name, name, len);
        last_cmd.len = len;
        last_cmd.id = id;
    }
    return id;
}

resp_subcmd_id_t resp_subcmd_lookup(resp_cmd_id_t parent, const char *name, size_t len)
{
    if (!(resp_cmd_flags(parent) & RESP_CF_SUBCMDS))
        return RESP_SUBCMD_NONE;
    size_t v = slot_find((uint32_t)parent, name, len);
    return v > NCMD ? (resp_subcmd_id_t)(v - NCMD) : RESP_SUBCMD_NONE;
}

uint32_t resp_cmd_flags(resp_cmd_id_t id)
{
    return id > RESP_CMD_UNKNOWN && id < RESP_CMD_COUNT ? cmd_rows[id - 1].flags : 0;
}

const char *resp_cmd_name(resp_cmd_id_t id)
{
    return id > RESP_CMD_UNKNOWN && id < RESP_CMD_COUNT ? cmd_rows[id - 1].name : NULL;
}

uint32_t resp_subcmd_flags(resp_subcmd_id_t sub)
{
    return sub > RESP_SUBCMD_NONE && sub < RESP_SUBCMD_COUNT ? subcmd_rows[sub - 1].flags : 0;
}

const char *resp_subcmd_name(resp_subcmd_id_t sub)
{
    return sub > RESP_SUBCMD_NONE && sub < RESP_SUBCMD_COUNT ? subcmd_rows[sub - 1].name : NULL;
}

resp_cmd_id_t resp_subcmd_parent(resp_subcmd_id_t sub)
{
    return sub > RESP_SUBCMD_NONE && sub < RESP_SUBCMD_COUNT ? subcmd_rows[sub - 1].parent
                                                              : RESP_CMD_UNKNOWN;
}

/* Captured argument i as (ptr, len), or len 0 when not captured whole. */
static size_t req_arg(const resp_req_t *r, uint32_t i, const char **ptr)
{
    if (i >= r->ncap || i >= RESP_CAP_ARGS || r->arg_trunc[i]) {
        *ptr = NULL;
        return 0;
    }
    *ptr = r->arg[i];
    return r->arg_len[i];
}

resp_cmd_t resp_cmd_classify(const resp_req_t *r)
{
    resp_cmd_t c = { RESP_CMD_UNKNOWN, RESP_SUBCMD_NONE, 0 };
    const char *p;
    size_t n = req_arg(r, 0, &p);

    c.id = resp_cmd_lookup(p, n);
    c.flags = resp_cmd_flags(c.id);
    if (c.flags & RESP_CF_SUBCMDS) {
        n = req_arg(r, 1, &p);
        c.sub = resp_subcmd_lookup(c.id, p, n);
        c.flags |= resp_subcmd_flags(c.sub);
    }
    if (c.flags & RESP_CF_BLOCK_ARG) {
        /* XREAD [COUNT n] [BLOCK ms] STREAMS ...: a BLOCK among the captured arguments
         * blocks (a key named "block" counts too, as it always has here). */
        for (uint32_t i = 1; i < r->ncap && i < RESP_CAP_ARGS; i++)
            if (resp_req_arg_is(r, i, "BLOCK"))
                c.flags |= RESP_CF_BLOCKING;
        if (!(c.flags & RESP_CF_BLOCKING) && r->argc > r->ncap)
            c.flags |= RESP_CF_UNSURE;
    }
    return c;
}

int resp_cmd_is_shareable(const resp_cmd_t *c)
{
    if (c->id == RESP_CMD_UNKNOWN || (c->flags & RESP_CF_NOSHARE))
        return 0;
    if ((c->flags & RESP_CF_SUBCMDS) && c->sub == RESP_SUBCMD_NONE)
        return 0;   /* a container without a known subcommand: no way to tell */
    return 1;
}

/* A captured argument that is a plain decimal db number (what SELECT accepts), or -1. */
static int req_db_arg(const resp_req_t *r, uint32_t i)
{
    const char *p;
    size_t n = req_arg(r, i, &p);
    int v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t k = 0; k < n; k++) {
        if (p[k] < '0' || p[k] > '9')
            return -1;
        v = v * 10 + (p[k] - '0');
    }
    return v;
}

int resp_cmd_pins(const resp_cmd_t *c, const resp_req_t *r, int shared_db)
{
    if (c->id == RESP_CMD_AUTH)
        return 0;
    if (c->id == RESP_CMD_SELECT)
        return !(r->argc == 2 && req_db_arg(r, 1) == shared_db);
    return !resp_cmd_is_shareable(c);
}
