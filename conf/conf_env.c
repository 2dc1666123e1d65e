/*
 * conf_env.c - the environment side of the configuration.
 *
 *   - conf_env_snapshot: the only place switchyard reads the process environment. main
 *     takes the snapshot once, then unsets every libpq variable (conf_libpq_env_names) so
 *     that libpq only ever sees what a target passes explicitly.
 *   - the env file (--env-file): KEY=VALUE lines in the style of the container's
 *     /etc/sourcegraph/env, merged on top of the snapshot (conf__menv_*).
 *
 * Env file syntax, one assignment per line:
 *
 *     # comment                       blank lines and comments are ignored
 *     PGHOST=db.example.org
 *     export PGUSER=sourcegraph       a leading "export " is allowed
 *     PGPASSWORD='p#ss w"rd'          '...' literal, "..." with \" and \\ escapes
 *     PGAPPNAME=switchyard  # note    unquoted: a comment starts at whitespace + '#'
 *
 * Errors name FILE:LINE and, when it could be read, the variable; never the value.
 *
 * Layer: above conf_util (the hierarchy is drawn in conf_util.h). May include
 * conf/conf_internal.h; it uses only conf_util from it (libpq's variable list is
 * conf_libpq.c).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_internal.h"

extern char **environ;

/* ---- process environment snapshot ------------------------------------------------------ */

void conf_env_snapshot(conf_env_t *env)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    env->vars = conf__xrealloc(NULL, (n + 1) * sizeof *env->vars);
    env->n = 0;
    for (char **e = environ; e && *e; e++)
        if (strchr(*e, '='))            /* ignore malformed entries */
            env->vars[env->n++] = conf__strdup(*e);
    env->vars[env->n] = NULL;
}

void conf_env_free(conf_env_t *env)
{
    if (!env)
        return;
    for (size_t i = 0; i < env->n; i++)
        free(env->vars[i]);
    free(env->vars);
    env->vars = NULL;
    env->n = 0;
}

static const char *lookup(char *const *vars, size_t n, const char *key, size_t *idx)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (strncmp(vars[i], key, klen) == 0 && vars[i][klen] == '=') {
            if (idx)
                *idx = i;
            return vars[i] + klen + 1;
        }
    return NULL;
}

const char *conf_env_get(const conf_env_t *env, const char *key)
{
    if (!env || !key || strchr(key, '='))
        return NULL;
    return lookup(env->vars, env->n, key, NULL);
}

/* ---- merged environment ---------------------------------------------------------------- */

void conf__menv_init(conf_menv_t *m, const conf_env_t *env)
{
    size_t n = env ? env->n : 0;
    m->vars = conf__xrealloc(NULL, (n + 1) * sizeof *m->vars);
    m->origin = conf__xrealloc(NULL, (n + 1) * sizeof *m->origin);
    m->n = 0;
    for (size_t i = 0; i < n; i++) {
        m->vars[m->n] = conf__strdup(env->vars[i]);
        m->origin[m->n++] = NULL;
    }
}

void conf__menv_free(conf_menv_t *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->vars[i]);
        free(m->origin[i]);
    }
    free(m->vars);
    free(m->origin);
    memset(m, 0, sizeof *m);
}

const char *conf__menv_get(const conf_menv_t *m, const char *key, const char **origin)
{
    size_t i = 0;
    const char *v = lookup(m->vars, m->n, key, &i);
    if (origin)
        *origin = v ? m->origin[i] : NULL;
    return v;
}

static void menv_set(conf_menv_t *m, const char *key, const char *val, const char *origin)
{
    size_t i;
    char *kv = conf__asprintf("%s=%s", key, val);
    if (lookup(m->vars, m->n, key, &i)) {
        free(m->vars[i]);
        free(m->origin[i]);
    } else {
        m->vars = conf__xrealloc(m->vars, (m->n + 1) * sizeof *m->vars);
        m->origin = conf__xrealloc(m->origin, (m->n + 1) * sizeof *m->origin);
        i = m->n++;
    }
    m->vars[i] = kv;
    m->origin[i] = conf__strdup(origin);
}

int conf__menv_load(conf_menv_t *m, FILE *f, const char *name, char *err, size_t errlen)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    unsigned lineno = 0;
    int rc = 0;

    while ((len = getline(&line, &cap, f)) >= 0) {
        char where[512];
        lineno++;
        snprintf(where, sizeof where, "%s:%u", name, lineno);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if ((size_t)len != strlen(line)) {
            rc = conf__err(err, errlen, "%s: NUL byte in line", where);
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        if (strncmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
            p += 6;
            while (*p == ' ' || *p == '\t')
                p++;
        }
        char *key = p;
        if (isalpha((unsigned char)*p) || *p == '_')
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
        size_t klen = (size_t)(p - key);
        while (*p == ' ' || *p == '\t')
            p++;
        if (klen == 0) {
            rc = conf__err(err, errlen, "%s: expected KEY=VALUE (KEY: letters, digits, '_')",
                           where);
            break;
        }
        if (*p != '=') {
            /* no name in the message: a line without '=' may be a pasted password */
            rc = conf__err(err, errlen, "%s: expected KEY=VALUE", where);
            break;
        }
        key[klen] = '\0';
        p++;
        const char *problem = NULL;
        char *val = conf__parse_value(p, "#", &problem);
        if (!val) {
            rc = conf__err(err, errlen, "%s: %s: %s", where, key, problem);
            break;
        }
        menv_set(m, key, val, where);
        free(val);
    }
    if (rc == 0 && ferror(f))
        rc = conf__err(err, errlen, "%s: read error: %s", name, strerror(errno));
    free(line);
    return rc;
}

int conf__menv_load_file(conf_menv_t *m, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return conf__err(err, errlen, "env file %s: %s", path, strerror(errno));
    int rc = conf__menv_load(m, f, path, err, errlen);
    fclose(f);
    return rc;
}
