/*
 * resp_cmdtab.c - see resp_cmdtab.h. The two X-macro tables become two const arrays whose
 * index is the id minus one (the enum is generated from the same rows in the same order).
 * Lookup folds the name to upper case into a small stack buffer, after checking its
 * length, then binary-searches the rows: a name longer than any row never gets copied.
 */
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

/* Order of (a, alen) against a row name: bytes first, then the shorter is smaller. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* What a lookup searches for: a folded name, under a parent for subcommands. */
typedef struct search_key_s {
    resp_cmd_id_t parent;
    const char   *up;
    size_t        len;
} search_key_t;

static int cmd_row_cmp(const search_key_t *k, size_t i)
{
    return name_cmp(k->up, k->len, cmd_rows[i].name, cmd_rows[i].len);
}

static int subcmd_row_cmp(const search_key_t *k, size_t i)
{
    const subcmd_row_t *row = &subcmd_rows[i];
    if (k->parent != row->parent)
        return k->parent < row->parent ? -1 : 1;
    return name_cmp(k->up, k->len, row->name, row->len);
}

/* Binary search of rows [0, n) ordered by cmp. Returns the row index + 1 (the id), or 0. */
static size_t row_search(const search_key_t *k, size_t n, int (*cmp)(const search_key_t *, size_t))
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp(k, mid);
        if (c == 0)
            return mid + 1;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

resp_cmd_id_t resp_cmd_lookup(const char *name, size_t len)
{
    char up[RESP_CMD_NAME_MAX];
    search_key_t k = { RESP_CMD_UNKNOWN, up, len };

    if (fold_name(name, len, up) != 0)
        return RESP_CMD_UNKNOWN;
    return (resp_cmd_id_t)row_search(&k, NCMD, cmd_row_cmp);
}

resp_subcmd_id_t resp_subcmd_lookup(resp_cmd_id_t parent, const char *name, size_t len)
{
    char up[RESP_CMD_NAME_MAX];
    search_key_t k = { parent, up, len };

    if (!(resp_cmd_flags(parent) & RESP_CF_SUBCMDS) || fold_name(name, len, up) != 0)
        return RESP_SUBCMD_NONE;
    return (resp_subcmd_id_t)row_search(&k, NSUBCMD, subcmd_row_cmp);
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
