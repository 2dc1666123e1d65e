/*
 * conf_file.c - the INI reader: config file text and -o overrides into the raw model
 * (sections of key/value strings with their origins, see conf_internal.h).
 *
 *     [switchyard]                   one per file
 *     key = value                    ; comment    # comment
 *     [listener NAME]
 *     [route NAME]
 *
 * Only the syntax and the key names are checked here: an unknown section or key, a key
 * outside a section, a section or key given twice in one file. Values are typed and
 * checked by conf.c, which can still name the line thanks to each value's origin.
 * Messages never repeat a value (it may be a password).
 *
 * Layer: above conf_util (the hierarchy is drawn in conf_util.h). May include
 * conf/conf_internal.h; it uses only conf_util from it, and nothing here reads the
 * environment or libpq.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_internal.h"

static const char *const switchyard_keys[] = {
    "max_message_size", "redis_max_bulk", "redis_max_pipeline", "connect_timeout",
    "drain_timeout", "pause_max", "switch_hold_max", "client_login_timeout", "client_idle_timeout",
    "client_stall_timeout", "tcp_keepidle", "tcp_keepintvl", "tcp_keepcnt", "tcp_user_timeout",
    "pool_size", "server_idle_timeout", "server_lifetime", "server_check_delay",
    "server_release_delay", "reconnect_window", "workers", "admin_password", "metrics_listen",
    "log_format", "log_level", NULL
};
static const char *const listener_keys[] = {
    "protocol", "listen", "unix_socket", "unix_socket_mode", "unix_socket_group", "tls_cert", "tls_key",
    "auth_password", "max_clients", NULL
};
static const char *const route_keys[] = {
    "listener", "databases", "default", "env_prefix", "external_env", "client_password",
    "builtin", "builtin_tls_ca_file", "builtin_tls_cert", "builtin_tls_key",
    "external_tls_ca_file", "external_tls_cert", "external_tls_key",
    "tls_insecure_skip_verify_i_know", "active", "pool", "multiplex", "redis_guard_config", NULL
};

static int key_known(conf_sec_type_t type, const char *key)
{
    const char *const *k = type == CONF_SEC_SWITCHYARD ? switchyard_keys
                         : type == CONF_SEC_LISTENER   ? listener_keys : route_keys;
    for (; *k; k++)
        if (strcmp(*k, key) == 0)
            return 1;
    return 0;
}

const char *conf__sec_label(const conf_raw_sec_t *s, char *buf, size_t len)
{
    if (s->type == CONF_SEC_SWITCHYARD)
        snprintf(buf, len, "[switchyard]");
    else
        snprintf(buf, len, "[%s %s]", s->type == CONF_SEC_LISTENER ? "listener" : "route",
                 s->name);
    return buf;
}

/* Names of listeners and routes: they appear in -o keys, logs and metrics labels. */
static int name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
            return 0;
    return 1;
}

static conf_raw_sec_t *find_sec(conf_raw_t *raw, conf_sec_type_t type, const char *name)
{
    for (size_t i = 0; i < raw->nsec; i++) {
        conf_raw_sec_t *s = &raw->sec[i];
        if (s->type != type)
            continue;
        if (type == CONF_SEC_SWITCHYARD || strcmp(s->name, name) == 0)
            return s;
    }
    return NULL;
}

static conf_raw_sec_t *add_sec(conf_raw_t *raw, conf_sec_type_t type, const char *name,
                               const char *origin)
{
    raw->sec = conf__xrealloc(raw->sec, (raw->nsec + 1) * sizeof *raw->sec);
    conf_raw_sec_t *s = &raw->sec[raw->nsec++];
    memset(s, 0, sizeof *s);
    s->type = type;
    s->name = conf__strdup(name);
    s->origin = conf__strdup(origin);
    return s;
}

static conf_raw_kv_t *find_kv(conf_raw_sec_t *s, const char *key)
{
    for (size_t i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return &s->kv[i];
    return NULL;
}

const conf_raw_kv_t *conf__raw_get(const conf_raw_sec_t *s, const char *key)
{
    return find_kv((conf_raw_sec_t *)s, key);
}

/* Set key: replaces an existing value (taking ownership of val and origin). */
static void set_kv(conf_raw_sec_t *s, const char *key, char *val, char *origin)
{
    conf_raw_kv_t *kv = find_kv(s, key);
    if (kv) {
        free(kv->val);
        free(kv->origin);
    } else {
        s->kv = conf__xrealloc(s->kv, (s->nkv + 1) * sizeof *s->kv);
        kv = &s->kv[s->nkv++];
        kv->key = conf__strdup(key);
    }
    kv->val = val;
    kv->origin = origin;
}

static void sec_free(conf_raw_sec_t *s)
{
    for (size_t i = 0; i < s->nkv; i++) {
        free(s->kv[i].key);
        free(s->kv[i].val);
        free(s->kv[i].origin);
    }
    free(s->kv);
    free(s->name);
    free(s->origin);
    memset(s, 0, sizeof *s);
}

void conf__raw_free(conf_raw_t *raw)
{
    for (size_t i = 0; i < raw->nsec; i++)
        sec_free(&raw->sec[i]);
    free(raw->sec);
    raw->sec = NULL;
    raw->nsec = 0;
}

/* The line number part of an origin "FILE:LINE" (for "first at line N"). */
static const char *origin_line(const char *origin)
{
    const char *c = strrchr(origin, ':');
    return c ? c + 1 : origin;
}

static int only_comment(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';' || *p == '#';
}

/* One "[type name]" header. */
static int parse_header(conf_raw_t *raw, conf_raw_sec_t **cur, char *p, const char *where,
                        const char *origin, char *err, size_t errlen)
{
    char *close = strchr(p, ']');
    if (!close || !only_comment(close + 1))
        return conf__err(err, errlen, "%s: malformed section header (expected [switchyard], "
                         "[listener NAME] or [route NAME])", where);
    *close = '\0';
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    char *type = p;
    while (*p && *p != ' ' && *p != '\t')
        p++;
    size_t tlen = (size_t)(p - type);
    while (*p == ' ' || *p == '\t')
        p++;
    char *name = p;
    size_t nlen = strlen(name);
    while (nlen && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
        name[--nlen] = '\0';

    conf_sec_type_t st;
    if (tlen == 10 && strncmp(type, "switchyard", 10) == 0)
        st = CONF_SEC_SWITCHYARD;
    else if (tlen == 8 && strncmp(type, "listener", 8) == 0)
        st = CONF_SEC_LISTENER;
    else if (tlen == 5 && strncmp(type, "route", 5) == 0)
        st = CONF_SEC_ROUTE;
    else
        return conf__err(err, errlen, "%s: unknown section [%.*s] (expected [switchyard], "
                         "[listener NAME] or [route NAME])", where, (int)tlen, type);

    if (st == CONF_SEC_SWITCHYARD && nlen)
        return conf__err(err, errlen, "%s: [switchyard] takes no name", where);
    if (st != CONF_SEC_SWITCHYARD && nlen == 0)
        return conf__err(err, errlen, "%s: [%.*s] needs a name, e.g. [%.*s pg]", where,
                         (int)tlen, type, (int)tlen, type);
    if (st != CONF_SEC_SWITCHYARD && !name_ok(name, nlen))
        return conf__err(err, errlen, "%s: [%.*s %s]: a name is 1..64 letters, digits, '_' "
                         "or '-'", where, (int)tlen, type, name);

    conf_raw_sec_t *s = find_sec(raw, st, nlen ? name : NULL);
    if (s) {
        char lbl[100];
        return conf__err(err, errlen, "%s: %s: section given twice (first at line %s)", where,
                         conf__sec_label(s, lbl, sizeof lbl), origin_line(s->origin));
    }
    *cur = add_sec(raw, st, nlen ? name : NULL, origin);
    return 0;
}

int conf__raw_parse(conf_raw_t *raw, FILE *f, const char *name, int record_lines,
                    char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    conf_raw_sec_t *cur = NULL;
    int rc = 0;

    while ((len = getline(&line, &cap, f)) >= 0) {
        char where[512];
        lineno++;
        snprintf(where, sizeof where, "%s:%u", name, lineno);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == ';' || *p == '#')
            continue;
        if ((size_t)len != strlen(line)) {
            rc = conf__err(err, errlen, "%s: NUL byte in line", where);
            break;
        }
        if (*p == '[') {
            if ((rc = parse_header(raw, &cur, p, where, record_lines ? where : name, err,
                                   errlen)) != 0)
                break;
            /* parse_header may have moved raw->sec */
            cur = &raw->sec[raw->nsec - 1];
            continue;
        }

        char *key = p;
        while (isalnum((unsigned char)*p) || *p == '_')
            *p = (char)tolower((unsigned char)*p), p++;
        size_t klen = (size_t)(p - key);
        while (*p == ' ' || *p == '\t')
            p++;
        if (klen == 0 || *p != '=') {
            rc = conf__err(err, errlen, "%s: expected key = value%s", where,
                           cur ? "" : " inside a section");
            break;
        }
        key[klen] = '\0';   /* overwrites whitespace or the '=' (already looked at) */
        p++;
        if (!cur) {
            rc = conf__err(err, errlen, "%s: %s: key outside a section (add [switchyard], "
                           "[listener NAME] or [route NAME] above it)", where, key);
            break;
        }
        char lbl[100];
        conf__sec_label(cur, lbl, sizeof lbl);
        if (!key_known(cur->type, key)) {
            rc = conf__key_err(err, errlen, where, lbl, key, "unknown key");
            break;
        }
        conf_raw_kv_t *dup = find_kv(cur, key);
        if (dup) {
            rc = conf__key_err(err, errlen, where, lbl, key, "given twice (first at line %s)",
                               origin_line(dup->origin));
            break;
        }
        const char *problem = NULL;
        char *val = conf__parse_value(p, ";#", &problem);
        if (!val) {
            rc = conf__key_err(err, errlen, where, lbl, key, "%s", problem);
            break;
        }
        set_kv(cur, key, val, conf__strdup(record_lines ? where : name));
    }
    if (rc == 0 && ferror(f))
        rc = conf__err(err, errlen, "%s: read error: %s", name, strerror(errno));
    free(line);
    if (rc)
        conf__raw_free(raw);
    return rc;
}

int conf__raw_parse_path(conf_raw_t *raw, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return conf__err(err, errlen, "config file %s: %s", path, strerror(errno));
    int rc = conf__raw_parse(raw, f, path, 1, err, errlen);
    fclose(f);
    return rc;
}

void conf__raw_merge(conf_raw_t *base, conf_raw_t *file)
{
    int replaces = 0;
    for (size_t i = 0; i < file->nsec; i++)
        if (file->sec[i].type != CONF_SEC_SWITCHYARD)
            replaces = 1;

    if (replaces) {
        size_t keep = 0;
        for (size_t i = 0; i < base->nsec; i++) {
            if (base->sec[i].type == CONF_SEC_SWITCHYARD)
                base->sec[keep++] = base->sec[i];
            else
                sec_free(&base->sec[i]);
        }
        base->nsec = keep;
    }
    for (size_t i = 0; i < file->nsec; i++) {
        conf_raw_sec_t *fs = &file->sec[i];
        conf_raw_sec_t *bs = fs->type == CONF_SEC_SWITCHYARD
                           ? find_sec(base, CONF_SEC_SWITCHYARD, NULL) : NULL;
        if (!bs) {
            /* move the whole section */
            base->sec = conf__xrealloc(base->sec, (base->nsec + 1) * sizeof *base->sec);
            base->sec[base->nsec++] = *fs;
            memset(fs, 0, sizeof *fs);
            continue;
        }
        for (size_t k = 0; k < fs->nkv; k++) {
            set_kv(bs, fs->kv[k].key, fs->kv[k].val, fs->kv[k].origin);
            fs->kv[k].val = fs->kv[k].origin = NULL;
        }
        sec_free(fs);
    }
    conf__raw_free(file);
}

int conf__raw_override(conf_raw_t *raw, const char *ov, char *err, size_t errlen)
{
    const char *eq = strchr(ov, '=');
    size_t lhs = eq ? (size_t)(eq - ov) : strlen(ov);
    char where[300];
    snprintf(where, sizeof where, "-o %.*s", (int)(lhs > 200 ? 200 : lhs), ov);
    if (!eq)
        return conf__err(err, errlen, "%s: expected SECTION.KEY=VALUE (switchyard.KEY=VALUE, "
                         "listener.NAME.KEY=VALUE or route.NAME.KEY=VALUE)", where);

    char *left = strndup(ov, lhs);
    if (!left)
        abort();
    conf_sec_type_t st = 0;
    char *name = NULL, *key = NULL;
    char *dot = strchr(left, '.');
    char *last = strrchr(left, '.');
    if (dot) {
        *dot = '\0';
        if (strcmp(left, "switchyard") == 0 && dot == last) {
            st = CONF_SEC_SWITCHYARD;
            key = dot + 1;
        } else if ((strcmp(left, "listener") == 0 || strcmp(left, "route") == 0) && last != dot) {
            st = left[0] == 'l' ? CONF_SEC_LISTENER : CONF_SEC_ROUTE;
            *last = '\0';
            name = dot + 1;
            key = last + 1;
        }
    }
    int rc = 0;
    if (!st || !*key) {
        rc = conf__err(err, errlen, "%s: expected SECTION.KEY=VALUE (switchyard.KEY=VALUE, "
                       "listener.NAME.KEY=VALUE or route.NAME.KEY=VALUE)", where);
        goto out;
    }
    if (name && !name_ok(name, strlen(name))) {
        rc = conf__err(err, errlen, "%s: a %s name is 1..64 letters, digits, '_' or '-'", where,
                       st == CONF_SEC_LISTENER ? "listener" : "route");
        goto out;
    }
    conf_raw_sec_t tmp = { .type = st, .name = name };
    char lbl[100];
    conf__sec_label(&tmp, lbl, sizeof lbl);
    if (!key_known(st, key)) {
        rc = conf__key_err(err, errlen, where, lbl, key, "unknown key");
        goto out;
    }
    conf_raw_sec_t *s = find_sec(raw, st, name);
    if (!s)
        s = add_sec(raw, st, name, where);
    set_kv(s, key, conf__strdup(eq + 1), conf__strdup(where));
out:
    free(left);
    return rc;
}
