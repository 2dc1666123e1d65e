/*
 * test_conf.c - conf/: defaults, config file, env file, overrides, the PG* families,
 * targets, masking, validation, and the exact text of error messages.
 *
 * Every test builds its own environment (a conf_env_t made from a list, never the
 * process environment) and writes its files with mkstemp; they are removed at exit.
 * Secrets used below all contain "S3cr3t" so one strstr proves none leaked.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "tests/unit/unit.h"

#define SECRET "S3cr3t"

static char *tmpfiles[512];
static size_t ntmp;

/* Write text to a new temp file; returns its path (freed at exit). */
static const char *tmpfile_with(const char *text)
{
    char *path = strdup("/tmp/sy_test_conf_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        exit(2);
    }
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) {
        perror("write");
        exit(2);
    }
    close(fd);
    if (ntmp == sizeof tmpfiles / sizeof tmpfiles[0])
        exit(2);
    tmpfiles[ntmp++] = path;
    return path;
}

static void env_make(conf_env_t *env, const char *const *vars)
{
    size_t n = 0;
    while (vars && vars[n])
        n++;
    env->vars = calloc(n + 1, sizeof *env->vars);
    env->n = n;
    for (size_t i = 0; i < n; i++)
        env->vars[i] = strdup(vars[i]);
}

/* a pointer, not an array, so CHECK_STREQ(errbuf, ...) compiles under -Werror=address */
#define ERRLEN 1024
static char errbuf_store[ERRLEN];
static char *errbuf = errbuf_store;

/* Load with a config text (NULL: none), env file text (NULL: none), env list, overrides. */
static int load(conf_t *c, const char *conf_text, const char *envfile_text,
                const char *const *envvars, const char **ovs)
{
    conf_env_t env;
    conf_args_t args = { 0 };
    env_make(&env, envvars);
    if (conf_text)
        args.config_path = tmpfile_with(conf_text);
    if (envfile_text)
        args.env_file = tmpfile_with(envfile_text);
    while (ovs && ovs[args.noverrides])
        args.noverrides++;
    args.overrides = ovs;
    errbuf[0] = '\0';
    int rc = conf_load(c, &args, &env, errbuf, ERRLEN);
    conf_env_free(&env);
    return rc;
}

/* The error text expected for the last config file written: "PATH:rest". */
static const char *last_path(size_t back)
{
    return tmpfiles[ntmp - 1 - back];
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    static char bufs[8][1024];
    static int which;
    char *b = bufs[which++ % 8];
    va_list ap;
    va_start(ap, f);
    vsnprintf(b, sizeof bufs[0], f, ap);
    va_end(ap);
    return b;
}

static char *print_to_string(const conf_t *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    conf_print(c, f);
    fclose(f);
    return buf;
}

/* Expect a config (file text, env, overrides) to fail with exactly msg. */
#define EXPECT_ERR(text, envfile, envvars, ovs, msg) do {                                   \
        conf_t c_;                                                                          \
        int rc_ = load(&c_, (text), (envfile), (envvars), (ovs));                          \
        CHECK_MSG(rc_ == -1, "expected failure: %s", (msg));                                \
        CHECK_STREQ(errbuf, (msg));                                                         \
        CHECK(c_.nroutes == 0 && c_.routes == NULL);                                        \
        if (rc_ == 0)                                                                       \
            conf_free(&c_);                                                                 \
    } while (0)

/* ---- defaults ------------------------------------------------------------------------- */

static void test_defaults(void)
{
    conf_t c;
    CHECK(load(&c, NULL, NULL, NULL, NULL) == 0);
    CHECK_STREQ(errbuf, "");
    CHECK(c.max_message_size == 256u << 20);
    CHECK(c.redis_max_bulk == 512ull << 20);
    CHECK(c.redis_max_pipeline == 1024);
    CHECK(c.connect_timeout == 10);
    CHECK(c.drain_timeout == 30);
    CHECK(c.pause_max == 60);
    CHECK(c.admin_password == NULL);
    CHECK_STREQ(c.metrics_listen, "127.0.0.1:9187");
    CHECK(c.log_format == CONF_LOG_LOGFMT);
    CHECK(c.log_level == 2);
    CHECK(c.config_path == NULL && c.env_file == NULL);
    CHECK(c.pool_size == 20 && c.server_idle_timeout == 600 && c.server_lifetime == 3600 &&
          c.server_check_delay == 30 && c.server_release_delay == 30);
    CHECK(conf_route(&c, "pg")->pool == CONF_POOL_DEFAULT);

    CHECK(c.nlisteners == 3);
    const conf_listener_t *l = conf_listener(&c, "pg");
    CHECK(l && l->proto == CONF_PROTO_PG && l->port == 5432);
    CHECK(l && l->host && strcmp(l->host, "127.0.0.1") == 0);
    CHECK(l && !l->unix_path && !l->tls_cert && !l->auth_password);
    l = conf_listener(&c, "redis-store");
    CHECK(l && l->proto == CONF_PROTO_REDIS && l->port == 6379);
    l = conf_listener(&c, "redis-cache");
    CHECK(l && l->proto == CONF_PROTO_REDIS && l->port == 6380);
    CHECK(conf_listener(&c, "nope") == NULL);

    CHECK(c.nroutes == 5);
    const conf_route_t *r = conf_route(&c, "pg");
    CHECK(r && r->proto == CONF_PROTO_PG && r->is_default);
    if (r) {
        CHECK_STREQ(r->listener, "pg");
        CHECK(r->databases && r->databases[0] && !r->databases[1]);
        CHECK_STREQ(r->databases[0], "sourcegraph");
        CHECK_STREQ(r->env_prefix, "");
        CHECK(r->builtin.defined && r->builtin.which == CONF_BUILTIN);
        CHECK(!r->external.defined);
        CHECK(r->active == CONF_BUILTIN);
        CHECK_STREQ(r->active_reason, "none of PGHOST, PGHOSTADDR, PGSERVICE is set");
        CHECK(r->builtin.pg.n == 3);
        CHECK_STREQ(conf_kv_get(&r->builtin.pg, "host"), "127.0.0.1");
        CHECK_STREQ(conf_kv_get(&r->builtin.pg, "port"), "5433");
        CHECK_STREQ(conf_kv_get(&r->builtin.pg, "sslmode"), "disable");
        CHECK(conf_kv_get(&r->builtin.pg, "user") == NULL);
        CHECK(r->builtin.pg.keys[3] == NULL && r->builtin.pg.vals[3] == NULL);
        CHECK_STREQ(r->builtin.display, "host=127.0.0.1 port=5433 sslmode=disable");
        CHECK_STREQ(r->builtin.hostport, "127.0.0.1:5433");
        CHECK_STREQ(r->builtin.source, "config [route pg] builtin (built-in defaults)");
    }
    r = conf_route(&c, "pg-codeintel");
    CHECK(r && !r->is_default && r->databases && strcmp(r->databases[0], "sourcegraph-codeintel") == 0);
    CHECK(r && strcmp(r->env_prefix, "CODEINTEL_") == 0);
    CHECK(r && r->active_reason &&
          strcmp(r->active_reason,
                 "none of CODEINTEL_PGHOST, CODEINTEL_PGHOSTADDR, CODEINTEL_PGSERVICE is set") == 0);
    r = conf_route(&c, "pg-codeinsights");
    CHECK(r && r->databases && strcmp(r->databases[0], "sourcegraph-codeinsights") == 0);
    CHECK(r && strcmp(r->env_prefix, "CODEINSIGHTS_") == 0);
    CHECK(r && r->builtin.defined && strcmp(r->builtin.hostport, "127.0.0.1:5433") == 0);

    r = conf_route(&c, "redis-store");
    CHECK(r && r->proto == CONF_PROTO_REDIS && r->active == CONF_BUILTIN);
    if (r) {
        CHECK_STREQ(r->listener, "redis-store");
        CHECK_STREQ(r->external_env, "REDIS_STORE_ENDPOINT,REDIS_ENDPOINT");
        CHECK_STREQ(r->builtin.hostport, "127.0.0.1:6381");
        CHECK(r->builtin.redis.port == 6381 && !r->builtin.redis.tls);
        CHECK(r->client_password == NULL);
        CHECK_STREQ(r->active_reason, "none of REDIS_STORE_ENDPOINT, REDIS_ENDPOINT is set");
    }
    r = conf_route(&c, "redis-cache");
    CHECK(r && r->builtin.redis.port == 6382);
    CHECK(r && strcmp(r->external_env, "REDIS_CACHE_ENDPOINT,REDIS_ENDPOINT") == 0);
    CHECK(conf_route(&c, "nope") == NULL);

    CHECK(conf_route_for_database(&c, "pg", "sourcegraph") == conf_route(&c, "pg"));
    CHECK(conf_route_for_database(&c, "pg", "sourcegraph-codeintel") == conf_route(&c, "pg-codeintel"));
    CHECK(conf_route_for_database(&c, "pg", "sourcegraph-codeinsights") ==
          conf_route(&c, "pg-codeinsights"));
    CHECK(conf_route_for_database(&c, "pg", "postgres") == conf_route(&c, "pg"));
    CHECK(conf_route_for_database(&c, "pg", "SourceGraph") == conf_route(&c, "pg"));
    CHECK(conf_route_for_database(&c, "redis-cache", NULL) == conf_route(&c, "redis-cache"));
    CHECK(conf_route_for_database(&c, "nope", "sourcegraph") == NULL);
    conf_free(&c);
    CHECK(c.nroutes == 0 && c.routes == NULL);
    conf_free(&c);                      /* twice is harmless */
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Same configuration, ignoring where it came from. */
static int conf_same(const conf_t *a, const conf_t *b)
{
    if (a->max_message_size != b->max_message_size || a->redis_max_bulk != b->redis_max_bulk ||
        a->redis_max_pipeline != b->redis_max_pipeline || a->connect_timeout != b->connect_timeout ||
        a->drain_timeout != b->drain_timeout || a->pause_max != b->pause_max ||
        !str_eq(a->admin_password, b->admin_password) || !str_eq(a->metrics_listen, b->metrics_listen) ||
        a->log_format != b->log_format || a->log_level != b->log_level ||
        a->nlisteners != b->nlisteners || a->nroutes != b->nroutes)
        return 0;
    for (size_t i = 0; i < a->nlisteners; i++) {
        const conf_listener_t *x = &a->listeners[i], *y = &b->listeners[i];
        if (!str_eq(x->name, y->name) || x->proto != y->proto || !str_eq(x->host, y->host) ||
            x->port != y->port || !str_eq(x->unix_path, y->unix_path) ||
            !str_eq(x->tls_cert, y->tls_cert) || !str_eq(x->tls_key, y->tls_key) ||
            !str_eq(x->auth_password, y->auth_password))
            return 0;
    }
    for (size_t i = 0; i < a->nroutes; i++) {
        const conf_route_t *x = &a->routes[i], *y = &b->routes[i];
        if (!str_eq(x->name, y->name) || !str_eq(x->listener, y->listener) || x->proto != y->proto ||
            x->is_default != y->is_default || !str_eq(x->env_prefix, y->env_prefix) ||
            !str_eq(x->external_env, y->external_env) ||
            !str_eq(x->client_password, y->client_password) || x->active != y->active ||
            x->builtin.defined != y->builtin.defined || x->external.defined != y->external.defined ||
            !str_eq(x->builtin.display, y->builtin.display) ||
            !str_eq(x->builtin.hostport, y->builtin.hostport) ||
            !str_eq(x->builtin.tls_ca_file, y->builtin.tls_ca_file) ||
            !str_eq(x->external.tls_ca_file, y->external.tls_ca_file) ||
            x->external.tls_insecure_skip_verify != y->external.tls_insecure_skip_verify)
            return 0;
        for (size_t d = 0; (x->databases && x->databases[d]) || (y->databases && y->databases[d]); d++)
            if (!x->databases || !y->databases || !str_eq(x->databases[d], y->databases[d]))
                return 0;
    }
    return 1;
}

/* conf/switchyard.conf and the annotated example both load to the built-in defaults. */
static void test_shipped_files(void)
{
    static const char *const files[] = { "conf/switchyard.conf", "conf/switchyard.conf.example" };
    conf_t def, c;
    conf_env_t env = { 0 };
    CHECK(load(&def, NULL, NULL, NULL, NULL) == 0);
    for (size_t i = 0; i < 2; i++) {
        conf_args_t args = { .config_path = files[i] };
        int rc = conf_load(&c, &args, &env, errbuf, ERRLEN);
        CHECK_MSG(rc == 0, "%s (run from the repository root): %s", files[i], errbuf);
        if (rc)
            continue;
        CHECK_MSG(conf_same(&def, &c), "%s differs from the built-in defaults", files[i]);
        CHECK_STREQ(c.config_path, files[i]);
        conf_free(&c);
    }
    conf_free(&def);
}

/* ---- config file ---------------------------------------------------------------------- */

static void test_file(void)
{
    conf_t c;
    /* only [switchyard]: keys override one by one, listeners and routes stay built in */
    CHECK(load(&c, "[switchyard]\nlog_level = debug\nmax_message_size = 64k\n"
                   "redis_max_bulk = 1G\nlog_format=json\nmetrics_listen = off\n"
                   "admin_password = '" SECRET "a'\n", NULL, NULL, NULL) == 0);
    CHECK(c.log_level == 3 && c.max_message_size == 65536 && c.redis_max_bulk == 1ull << 30);
    CHECK(c.log_format == CONF_LOG_JSON && c.metrics_listen == NULL);
    CHECK(c.connect_timeout == 10 && c.redis_max_pipeline == 1024);
    CHECK(c.admin_password && strcmp(c.admin_password, SECRET "a") == 0);
    CHECK(c.nlisteners == 3 && c.nroutes == 5);
    conf_free(&c);

    /* any [listener]/[route]: replaces the built-in set; syntax variants */
    const char *text =
        "; comment\n"
        "# another\n"
        "\n"
        "[switchyard]   ; trailing comment\n"
        "  Redis_Max_Pipeline=  16   # keys are case-insensitive\n"
        "max_message_size = 2MiB\n"
        "[listener p]\r\n"
        "protocol = postgres\n"
        "listen = [::1]:15432\n"
        "unix_socket = \"/tmp/sy dir\"\n"
        "[route only]\n"
        "listener = p\n"
        "databases = a, b ,c\n"
        "default = yes\n"
        "env_prefix = X_\n"
        "builtin = \"host=/run/pg port=5433 application_name='a b' password=\\\"" SECRET "\\\\x\"\n";
    CHECK(load(&c, text, NULL, NULL, NULL) == 0);
    CHECK_STREQ(errbuf, "");
    CHECK(c.redis_max_pipeline == 16 && c.max_message_size == 2u << 20);
    CHECK(c.nlisteners == 1 && c.nroutes == 1);
    CHECK(conf_listener(&c, "pg") == NULL && conf_route(&c, "pg") == NULL);
    const conf_listener_t *l = conf_listener(&c, "p");
    CHECK(l && l->host && strcmp(l->host, "::1") == 0 && l->port == 15432);
    CHECK(l && l->unix_path && strcmp(l->unix_path, "/tmp/sy dir") == 0);
    const conf_route_t *r = conf_route(&c, "only");
    CHECK(r && r->databases && r->databases[2] && !r->databases[3]);
    if (r && r->databases && r->databases[2]) {
        CHECK_STREQ(r->databases[0], "a");
        CHECK_STREQ(r->databases[1], "b");
        CHECK_STREQ(r->databases[2], "c");
        /* libpq: a backslash escapes the next character, also unquoted */
        CHECK_STREQ(conf_kv_get(&r->builtin.pg, "password"), "\"" SECRET "x");
        CHECK_STREQ(conf_kv_get(&r->builtin.pg, "application_name"), "a b");
        CHECK_STREQ(r->builtin.display,
                    "password=**** host=/run/pg port=5433 application_name='a b'");
        CHECK_STREQ(r->builtin.hostport, "/run/pg:5433");
        CHECK_STREQ(r->builtin.source, fmt("config [route only] builtin (%s:16)", last_path(0)));
    }
    CHECK(conf_route_for_database(&c, "p", "zzz") == r);
    conf_free(&c);

    /* a listener with a unix socket only */
    CHECK(load(&c, "[listener u]\nprotocol=redis\nlisten=\nunix_socket=/tmp/r.sock\n"
                   "[route u]\nlistener=u\nbuiltin=redis://localhost/3\n", NULL, NULL, NULL) == 0);
    l = conf_listener(&c, "u");
    CHECK(l && l->host == NULL && l->unix_path && strcmp(l->unix_path, "/tmp/r.sock") == 0);
    r = conf_route(&c, "u");
    CHECK(r && r->builtin.redis.db == 3 && strcmp(r->builtin.hostport, "localhost:6379") == 0);
    CHECK(r && r->external_env == NULL && !r->external.defined);
    CHECK(r && strcmp(r->active_reason, "no external_env configured") == 0);
    conf_free(&c);
}

static const char *const PG1 = "[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:5432\n"
                               "[route pg]\nlistener = pg\ndatabases = db\n"
                               "builtin = host=127.0.0.1\n";

static void test_file_errors(void)
{
    conf_t c;
    conf_args_t args = { .config_path = "/nonexistent/sy.conf" };
    CHECK(conf_load(&c, &args, NULL, errbuf, ERRLEN) == -1);
    CHECK_STREQ(errbuf, "config file /nonexistent/sy.conf: No such file or directory");

#define FILE_ERR(text, fmtrest) do {                                                          \
        conf_t c2;                                                                            \
        CHECK(load(&c2, (text), NULL, NULL, NULL) == -1);                                    \
        CHECK_STREQ(errbuf, fmt("%s:" fmtrest, last_path(0)));                               \
    } while (0)

    FILE_ERR("[switchyard]\nlog_level = info\ncolour = blue\n", "3: [switchyard] colour: unknown key");
    FILE_ERR("[route pg]\nlistener = pg\nport = 5\n", "3: [route pg] port: unknown key");
    FILE_ERR("[listener x]\nprotocol=redis\nlisten=127.0.0.1:1\ndatabases=a\n",
             "4: [listener x] databases: unknown key");
    FILE_ERR("\n[server x]\n", "2: unknown section [server] (expected [switchyard], "
             "[listener NAME] or [route NAME])");
    FILE_ERR("log_level = info\n", "1: log_level: key outside a section (add [switchyard], "
             "[listener NAME] or [route NAME] above it)");
    FILE_ERR("[switchyard]\nlog_level = info\nlog_level = debug\n",
             "3: [switchyard] log_level: given twice (first at line 2)");
    FILE_ERR("[route a]\nlistener=x\n[route a]\n", "3: [route a]: section given twice (first at line 1)");
    FILE_ERR("[route a\n", "1: malformed section header (expected [switchyard], [listener NAME] "
             "or [route NAME])");
    FILE_ERR("[route]\n", "1: [route] needs a name, e.g. [route pg]");
    FILE_ERR("[route a.b]\n", "1: [route a.b]: a name is 1..64 letters, digits, '_' or '-'");
    FILE_ERR("[switchyard x]\n", "1: [switchyard] takes no name");
    FILE_ERR("[switchyard]\nlog_level\n", "2: expected key = value");
    FILE_ERR("[switchyard]\nadmin_password = \"" SECRET "\n",
             "2: [switchyard] admin_password: unterminated double quote");
    FILE_ERR("[switchyard]\nadmin_password = '" SECRET "' x\n",
             "2: [switchyard] admin_password: text after the closing quote");
    FILE_ERR("[switchyard]\nmax_message_size = 10X\n",
             "2: [switchyard] max_message_size: has an unknown suffix (use k, M or G)");
    FILE_ERR("[switchyard]\nmax_message_size = 100\n",
             "2: [switchyard] max_message_size: must be 1k..2147483647 bytes");
    FILE_ERR("[switchyard]\nmax_message_size = 2G\n",
             "2: [switchyard] max_message_size: must be 1k..2147483647 bytes");
    FILE_ERR("[switchyard]\nredis_max_bulk = 99999999999999999999999\n",
             "2: [switchyard] redis_max_bulk: is too large");
    FILE_ERR("[switchyard]\nconnect_timeout = ten\n", "2: [switchyard] connect_timeout: must be a number");
    FILE_ERR("[switchyard]\nconnect_timeout = 0\n",
             "2: [switchyard] connect_timeout: must be 1..3600 seconds");
    FILE_ERR("[switchyard]\nlog_level = loud\n",
             "2: [switchyard] log_level: must be error, warn, info or debug");
    FILE_ERR("[switchyard]\nlog_format = xml\n", "2: [switchyard] log_format: must be logfmt or json");
    FILE_ERR("[switchyard]\nmetrics_listen = 9187\n",
             "2: [switchyard] metrics_listen: expected HOST:PORT (or off)");
    /* values typed after parsing still name their line */
    FILE_ERR("[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:0\n",
             "3: [listener pg] listen: port must be 1..65535");
    FILE_ERR("[listener pg]\nprotocol = postgres\nlisten = 127.0.0.1:65536\n",
             "3: [listener pg] listen: port must be 1..65535");
    FILE_ERR("[listener pg]\nprotocol = postgres\nlisten = ::1:5432\n",
             "3: [listener pg] listen: an IPv6 address must be in brackets: [ADDR]:PORT");
    FILE_ERR("[listener pg]\nprotocol = mysql\n", "2: [listener pg] protocol: must be postgres or redis");
    FILE_ERR("\n[listener pg]\nlisten = 127.0.0.1:1\n",
             "2: [listener pg]: protocol: missing (postgres or redis)");
    FILE_ERR("[route pg]\nlistener = pg\ndatabases = a\ndefault = maybe\n[listener pg]\n"
             "protocol = postgres\nlisten = 127.0.0.1:1\n",
             "4: [route pg] default: must be true or false");
}

/* ---- env file ------------------------------------------------------------------------- */

static void test_env_file(void)
{
    conf_t c;
    const char *envfile =
        "# the container's env\n"
        "\n"
        "export PGHOST=db.example.org\n"
        "PGUSER = sg\n"
        "PGPASSWORD='p#ss w\"rd" SECRET "'\n"
        "PGAPPNAME=\"my \\\"app\\\"\"  # comment\n"
        "PGOPTIONS=-c a=1 #not a value\n"
        "PGSSLMODE=require\r\n"
        "CODEINTEL_PGHOST=\n"
        "PGDATABASE=x#y\n";
    const char *const envv[] = { "PGHOST=process.example.org", "PGPORT=6000",
                                 "CODEINTEL_PGHOST=ci.example.org", NULL };
    CHECK(load(&c, NULL, envfile, envv, NULL) == 0);
    CHECK_STREQ(errbuf, "");
    CHECK_STREQ(c.env_file, last_path(0));
    const conf_route_t *r = conf_route(&c, "pg");
    CHECK(r && r->external.defined && r->active == CONF_EXTERNAL);
    if (r && r->external.defined) {
        const conf_kv_t *kv = &r->external.pg;
        CHECK_STREQ(conf_kv_get(kv, "host"), "db.example.org");      /* env file wins */
        CHECK_STREQ(conf_kv_get(kv, "port"), "6000");                /* process env stays */
        CHECK_STREQ(conf_kv_get(kv, "user"), "sg");
        CHECK_STREQ(conf_kv_get(kv, "password"), "p#ss w\"rd" SECRET);
        CHECK_STREQ(conf_kv_get(kv, "application_name"), "my \"app\"");
        CHECK_STREQ(conf_kv_get(kv, "options"), "-c a=1");
        CHECK_STREQ(conf_kv_get(kv, "sslmode"), "require");
        CHECK_STREQ(conf_kv_get(kv, "dbname"), "x#y");
        CHECK_STREQ(r->external.hostport, "db.example.org:6000");
        CHECK_STREQ(r->external.source, "env PG*");
        CHECK_STREQ(r->active_reason, "PGHOST is set");
    }
    /* CODEINTEL_PGHOST= in the env file unsets the process's value */
    r = conf_route(&c, "pg-codeintel");
    CHECK(r && !r->external.defined && r->active == CONF_BUILTIN);
    conf_free(&c);

    /* errors name FILE:LINE and the variable, never the value */
#define ENV_ERR(text, fmtrest) do {                                                           \
        conf_t c2;                                                                            \
        CHECK(load(&c2, NULL, (text), NULL, NULL) == -1);                                    \
        CHECK_STREQ(errbuf, fmt("%s:" fmtrest, last_path(0)));                               \
        CHECK(strstr(errbuf, SECRET) == NULL);                                                \
    } while (0)
    ENV_ERR("A=1\n\nPGPASSWORD\n", "3: expected KEY=VALUE");
    ENV_ERR(SECRET "\n", "1: expected KEY=VALUE");   /* a bare word may be a pasted password */
    ENV_ERR("=" SECRET "\n", "1: expected KEY=VALUE (KEY: letters, digits, '_')");
    ENV_ERR("1A=" SECRET "\n", "1: expected KEY=VALUE (KEY: letters, digits, '_')");
    ENV_ERR("PGPASSWORD=\"" SECRET "\n", "1: PGPASSWORD: unterminated double quote");
    ENV_ERR("PGPASSWORD='" SECRET "\n", "1: PGPASSWORD: unterminated single quote");
    ENV_ERR("PGPASSWORD='a'" SECRET "\n", "1: PGPASSWORD: text after the closing quote");
    ENV_ERR("PG-HOST=x\n", "1: expected KEY=VALUE");

    conf_args_t args = { .env_file = "/nonexistent/env" };
    CHECK(conf_load(&c, &args, NULL, errbuf, ERRLEN) == -1);
    CHECK_STREQ(errbuf, "env file /nonexistent/env: No such file or directory");
}

/* ---- overrides ------------------------------------------------------------------------ */

static void test_overrides(void)
{
    conf_t c;
    const char *ovs[] = { "switchyard.log_level=debug", "listener.pg.listen=127.0.0.1:15432",
                          "route.pg.builtin=host=/run/postgresql port=5999",
                          "listener.extra.protocol=redis", "listener.extra.listen=127.0.0.1:16379",
                          "route.extra.listener=extra", "route.extra.builtin=rediss://:" SECRET "@cache:6390/1",
                          "route.extra.builtin_tls_ca_file=/etc/ca.pem", NULL };
    CHECK(load(&c, NULL, NULL, NULL, ovs) == 0);
    CHECK_STREQ(errbuf, "");
    CHECK(c.log_level == 3);
    const conf_listener_t *l = conf_listener(&c, "pg");
    CHECK(l && l->port == 15432);
    const conf_route_t *r = conf_route(&c, "pg");
    CHECK(r && strcmp(r->builtin.hostport, "/run/postgresql:5999") == 0);
    CHECK(r && strcmp(r->builtin.source, "config [route pg] builtin (-o route.pg.builtin)") == 0);
    CHECK(c.nlisteners == 4 && c.nroutes == 6);
    r = conf_route(&c, "extra");
    CHECK(r && r->proto == CONF_PROTO_REDIS && r->builtin.redis.tls && r->builtin.redis.db == 1);
    CHECK(r && r->builtin.tls_ca_file && strcmp(r->builtin.tls_ca_file, "/etc/ca.pem") == 0);
    CHECK(r && strcmp(r->builtin.hostport, "cache:6390") == 0);
    CHECK(r && strstr(r->builtin.display, SECRET) == NULL && strstr(r->builtin.display, "****"));
    conf_free(&c);

    /* overrides apply after the file, and override the file */
    const char *ov2[] = { "route.pg.databases=other", NULL };
    CHECK(load(&c, PG1, NULL, NULL, ov2) == 0);
    CHECK(conf_route_for_database(&c, "pg", "other") == conf_route(&c, "pg"));
    CHECK(conf_route_for_database(&c, "pg", "db") == NULL);
    conf_free(&c);

    const char *bad1[] = { "route.pg.colour=" SECRET, NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad1, "-o route.pg.colour: [route pg] colour: unknown key");
    const char *bad2[] = { "log_level=debug", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad2, "-o log_level: expected SECTION.KEY=VALUE (switchyard.KEY=VALUE, "
               "listener.NAME.KEY=VALUE or route.NAME.KEY=VALUE)");
    const char *bad3[] = { "switchyard.log_level", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad3, "-o switchyard.log_level: expected SECTION.KEY=VALUE "
               "(switchyard.KEY=VALUE, listener.NAME.KEY=VALUE or route.NAME.KEY=VALUE)");
    const char *bad4[] = { "listener.pg.listen=127.0.0.1:99999", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad4, "-o listener.pg.listen: [listener pg] listen: port must be 1..65535");
    const char *bad5[] = { "listener.p g.listen=x", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad5, "-o listener.p g.listen: a listener name is 1..64 letters, "
               "digits, '_' or '-'");
    const char *bad6[] = { "route.new.databases=x", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad6, "-o route.new.databases: [route new]: listener: missing "
               "(the name of a [listener] section)");
    const char *bad7[] = { "switchyard.admin_password=" SECRET, "switchyard.pause_max=0", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad7, "-o switchyard.pause_max: [switchyard] pause_max: must be "
               "1..86400 seconds");
}

/* ---- Postgres families ---------------------------------------------------------------- */

static size_t key_index(const conf_kv_t *kv, const char *key)
{
    for (size_t i = 0; i < kv->n; i++)
        if (strcmp(kv->keys[i], key) == 0)
            return i;
    return (size_t)-1;
}

static void test_pg_families(void)
{
    conf_t c;
    const char *const envv[] = {
        "PGHOST=main.example.org", "PGSSLMODE=verify-full", "PGUSER=mainuser",
        "CODEINTEL_PGHOST=ci.example.org", "CODEINTEL_PGUSER=ciuser", "CODEINTEL_PGPORT=6543",
        "CODEINTEL_PGPASSWORD=" SECRET "ci",
        "CODEINSIGHTS_PGUSER=insights",         /* no host: stays built-in */
        "XPGHOST=nope", NULL };
    CHECK(load(&c, NULL, NULL, envv, NULL) == 0);
    const conf_route_t *r = conf_route(&c, "pg-codeintel");
    CHECK(r && r->external.defined && r->active == CONF_EXTERNAL);
    if (r && r->external.defined) {
        const conf_kv_t *kv = &r->external.pg;
        CHECK(kv->n == 4);
        CHECK_STREQ(conf_kv_get(kv, "host"), "ci.example.org");
        CHECK_STREQ(conf_kv_get(kv, "user"), "ciuser");
        CHECK_STREQ(conf_kv_get(kv, "port"), "6543");
        CHECK_STREQ(conf_kv_get(kv, "password"), SECRET "ci");
        CHECK(conf_kv_get(kv, "sslmode") == NULL);     /* PGSSLMODE must not leak */
        /* libpq's order: user, password, ..., host, port */
        CHECK(key_index(kv, "user") < key_index(kv, "password"));
        CHECK(key_index(kv, "password") < key_index(kv, "host"));
        CHECK(key_index(kv, "host") < key_index(kv, "port"));
        CHECK(kv->keys[kv->n] == NULL && kv->vals[kv->n] == NULL);
        CHECK_STREQ(r->external.display, "user=ciuser password=**** host=ci.example.org port=6543");
        CHECK_STREQ(r->external.hostport, "ci.example.org:6543");
        CHECK_STREQ(r->external.source, "env CODEINTEL_PG*");
        CHECK_STREQ(r->active_reason, "CODEINTEL_PGHOST is set");
        CHECK(r->external.which == CONF_EXTERNAL);
        CHECK(r->builtin.defined);                      /* both targets are there */
    }
    r = conf_route(&c, "pg");
    CHECK(r && r->external.defined && r->active == CONF_EXTERNAL);
    CHECK(r && conf_kv_get(&r->external.pg, "host") &&
          strcmp(conf_kv_get(&r->external.pg, "host"), "main.example.org") == 0);
    CHECK(r && conf_kv_get(&r->external.pg, "port") == NULL);       /* no CODEINTEL_ leak */
    CHECK(r && strcmp(r->external.hostport, "main.example.org:5432") == 0);
    r = conf_route(&c, "pg-codeinsights");
    CHECK(r && !r->external.defined && r->active == CONF_BUILTIN);
    conf_free(&c);

    /* hostaddr alone, service alone, and the "set" wording for several */
    const char *const env2[] = { "PGHOSTADDR=10.1.2.3", "PGHOST=db",
                                 "CODEINTEL_PGSERVICE=ci", NULL };
    CHECK(load(&c, NULL, NULL, env2, NULL) == 0);
    r = conf_route(&c, "pg");
    CHECK(r && strcmp(r->active_reason, "PGHOST and PGHOSTADDR are set") == 0);
    CHECK(r && strcmp(r->external.hostport, "10.1.2.3:5432") == 0);
    r = conf_route(&c, "pg-codeintel");
    CHECK(r && r->external.defined && strcmp(r->external.hostport, "service=ci") == 0);
    CHECK(r && strcmp(r->external.display, "service=ci") == 0);
    conf_free(&c);

    /* empty counts as unset */
    const char *const env3[] = { "PGHOST=", "PGUSER=x", NULL };
    CHECK(load(&c, NULL, NULL, env3, NULL) == 0);
    r = conf_route(&c, "pg");
    CHECK(r && !r->external.defined && r->active == CONF_BUILTIN);
    conf_free(&c);
}

static void test_pg_options(void)
{
    conf_t c;
    const char *const envv[] = {
        "PGHOST=h", "PGTZ=Europe/Paris", "PGDATESTYLE=ISO, MDY", "PGGEQO=DEFAULT",
        "PGOPTIONS=-c work_mem=64MB",
        "CODEINTEL_PGHOST=h2", "CODEINTEL_PGTZ=America/New York", "CODEINTEL_PGGEQO=off",
        "CODEINSIGHTS_PGHOST=h3", "CODEINSIGHTS_PGDATESTYLE=a\\b", NULL };
    CHECK(load(&c, NULL, NULL, envv, NULL) == 0);
    const conf_route_t *r = conf_route(&c, "pg");
    CHECK(r && conf_kv_get(&r->external.pg, "options") &&
          strcmp(conf_kv_get(&r->external.pg, "options"),
                 "-c work_mem=64MB -c datestyle=ISO,\\ MDY -c timezone=Europe/Paris") == 0);
    if (r)
        CHECK(key_index(&r->external.pg, "host") < key_index(&r->external.pg, "options"));
    r = conf_route(&c, "pg-codeintel");
    CHECK(r && conf_kv_get(&r->external.pg, "options") &&
          strcmp(conf_kv_get(&r->external.pg, "options"),
                 "-c timezone=America/New\\ York -c geqo=off") == 0);
    r = conf_route(&c, "pg-codeinsights");
    CHECK(r && conf_kv_get(&r->external.pg, "options") &&
          strcmp(conf_kv_get(&r->external.pg, "options"), "-c datestyle=a\\\\b") == 0);
    conf_free(&c);
}

static void test_pg_hostport(void)
{
    conf_t c;
    struct { const char *env[4]; const char *hostport; } ok[] = {
        { { "PGHOST=db1,db2", "PGPORT=5432,5433" }, "db1:5432,db2:5433" },
        { { "PGHOST=db1,db2,/run/pg", "PGPORT=6000" }, "db1:6000,db2:6000,/run/pg:6000" },
        { { "PGHOST=/run/pg", "PGPORT=5433" }, "/run/pg:5433" },
        { { "PGHOST=db1,", "PGPORT=," }, "db1:5432,/var/run/postgresql:5432" },
        { { "PGHOST=a,b", "PGHOSTADDR=10.0.0.1,::1" }, "10.0.0.1:5432,[::1]:5432" },
        { { "PGHOST=localhost", "PGSERVICE=svc" }, "localhost:5432" },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        CHECK_MSG(load(&c, NULL, NULL, ok[i].env, NULL) == 0, "%zu: %s", i, errbuf);
        const conf_route_t *r = conf_route(&c, "pg");
        CHECK_MSG(r && r->external.hostport && strcmp(r->external.hostport, ok[i].hostport) == 0,
                  "%zu: %s", i, r && r->external.hostport ? r->external.hostport : "(null)");
        conf_free(&c);
    }

    const char *const e1[] = { "CODEINTEL_PGHOST=a", "CODEINTEL_PGPORT=0", NULL };
    EXPECT_ERR(NULL, NULL, e1, NULL, "env CODEINTEL_PGPORT: port must be 1..65535");
    const char *const e2[] = { "PGHOST=a,b,c", "PGPORT=1,2", NULL };
    EXPECT_ERR(NULL, NULL, e2, NULL, "env PGPORT: port lists 2 ports for 3 hosts");
    const char *const e3[] = { "PGHOST=a,b", "PGHOSTADDR=1.2.3.4", NULL };
    EXPECT_ERR(NULL, NULL, e3, NULL, "env PGHOSTADDR: hostaddr has 1 entries but host has 2");
    const char *const e4[] = { "PGHOSTADDR=db.example.org", NULL };
    EXPECT_ERR(NULL, NULL, e4, NULL, "env PGHOSTADDR: hostaddr must be numeric IP addresses");
    const char *const e5[] = { "CODEINSIGHTS_PGHOST=a", "CODEINSIGHTS_PGSSLMODE=required", NULL };
    EXPECT_ERR(NULL, NULL, e5, NULL, "env CODEINSIGHTS_PGSSLMODE: sslmode must be one of disable, "
               "allow, prefer, require, verify-ca, verify-full");
    const char *const e6[] = { "PGHOST=a", "PGCONNECT_TIMEOUT=soon", NULL };
    EXPECT_ERR(NULL, NULL, e6, NULL, "env PGCONNECT_TIMEOUT: connect_timeout must be a number of "
               "seconds 0..86400");
    /* an env file value is located */
    const char *const e7[] = { "PGHOST=a", NULL };
    {
        conf_t c2;
        CHECK(load(&c2, NULL, "\nPGPORT=abc\n", e7, NULL) == -1);
        CHECK_STREQ(errbuf, fmt("env PGPORT: port must be 1..65535 (set in %s:2)", last_path(0)));
    }
    /* libpq reads these only from the process environment */
    const char *const e8[] = { "CODEINTEL_PGSERVICE=x", "CODEINTEL_PGSERVICEFILE=/f", NULL };
    EXPECT_ERR(NULL, NULL, e8, NULL, "env CODEINTEL_PGSERVICEFILE: libpq reads PGSERVICEFILE only "
               "from the process environment, for all routes; set PGSERVICEFILE there instead");
    const char *const e9[] = { "PGSERVICE=x", "PGSERVICEFILE=/f", NULL };
    CHECK(load(&c, NULL, NULL, e9, NULL) == 0);        /* process env: fine */
    conf_free(&c);
    {
        conf_t c2;
        const char *const e10[] = { "PGSERVICE=x", NULL };
        CHECK(load(&c2, NULL, "PGSYSCONFDIR=/etc/x\n", e10, NULL) == -1);
        CHECK_STREQ(errbuf, fmt("env PGSYSCONFDIR (set in %s:1): libpq reads PGSYSCONFDIR only "
                                "from the process environment, for all routes; set PGSYSCONFDIR "
                                "there instead", last_path(0)));
    }

    /* built-in conninfo problems name the line and never echo the string */
    char *text = fmt("%s", "[listener pg]\nprotocol=postgres\nlisten=127.0.0.1:5432\n"
                           "[route pg]\nlistener=pg\ndatabases=d\n"
                           "builtin = \"host=a password " SECRET " x\"\n");
    {
        conf_t c2;
        CHECK(load(&c2, text, NULL, NULL, NULL) == -1);
        CHECK(strncmp(errbuf, fmt("%s:7: [route pg] builtin: not a valid libpq conninfo string: ",
                                  last_path(0)), strlen(last_path(0)) + 55) == 0);
        CHECK_MSG(strstr(errbuf, SECRET) == NULL, "%s", errbuf);
    }
    const char *bad0[] = { "route.pg.builtin=postgresql://u:" SECRET "@h:5x/db", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad0, "-o route.pg.builtin: [route pg] builtin: port must be 1..65535");
    const char *badp[] = { "route.pg.builtin=postgresql://u:" SECRET "@h/%zz", NULL };
    EXPECT_ERR(NULL, NULL, NULL, badp, "-o route.pg.builtin: [route pg] builtin: not a valid libpq "
               "conninfo string: invalid percent-encoded token: \"...\"");
    const char *bad[] = { "route.pg.builtin=postgresql://u:" SECRET "@h/db?x" SECRET "=1", NULL };
    {
        conf_t c2;
        CHECK(load(&c2, NULL, NULL, NULL, bad) == -1);
        CHECK(strncmp(errbuf, "-o route.pg.builtin: [route pg] builtin: not a valid libpq conninfo",
                      65) == 0);
        CHECK_MSG(strstr(errbuf, SECRET) == NULL, "%s", errbuf);
    }
    const char *bad2[] = { "route.pg.builtin=host=a colour=blue", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad2, "-o route.pg.builtin: [route pg] builtin: not a valid libpq "
               "conninfo string: invalid connection option \"colour\"");
    const char *bad3[] = { "route.pg.builtin=host=a port=0", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad3, "-o route.pg.builtin: [route pg] builtin: port must be 1..65535");
    const char *bad4[] = { "route.pg-codeintel.builtin=sslmode=on", NULL };
    EXPECT_ERR(NULL, NULL, NULL, bad4, "-o route.pg-codeintel.builtin: [route pg-codeintel] builtin: "
               "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full");

    /* a URI built-in works, password masked */
    const char *uri[] = { "route.pg.builtin=postgresql://u:" SECRET "@[::1]:5444/db?sslmode=require", NULL };
    CHECK(load(&c, NULL, NULL, NULL, uri) == 0);
    const conf_route_t *r = conf_route(&c, "pg");
    CHECK(r && strcmp(r->builtin.hostport, "[::1]:5444") == 0);
    CHECK(r && strcmp(r->builtin.display, "user=u password=**** dbname=db host=::1 port=5444 "
                                          "sslmode=require") == 0);
    CHECK(r && conf_kv_get(&r->builtin.pg, "password") &&
          strcmp(conf_kv_get(&r->builtin.pg, "password"), SECRET) == 0);
    conf_free(&c);
}

/* ---- Redis ---------------------------------------------------------------------------- */

static void test_redis(void)
{
    conf_t c;
    const char *const envv[] = { "REDIS_ENDPOINT=redis://:" SECRET "a@shared.example:7000",
                                 "REDIS_STORE_ENDPOINT=rediss://acl:" SECRET "b@store.example/2",
                                 NULL };
    const char *ovs[] = { "route.redis-store.external_tls_ca_file=/etc/ca.pem",
                          "route.redis-store.tls_insecure_skip_verify_i_know=true",
                          "route.redis-cache.client_password=" SECRET "c", NULL };
    CHECK(load(&c, NULL, NULL, envv, ovs) == 0);
    CHECK_STREQ(errbuf, "");
    const conf_route_t *r = conf_route(&c, "redis-store");
    CHECK(r && r->external.defined && r->active == CONF_EXTERNAL);
    if (r && r->external.defined) {
        CHECK(r->external.redis.tls && r->external.redis.db == 2 && r->external.redis.port == 6379);
        CHECK_STREQ(r->external.redis.user, "acl");
        CHECK_STREQ(r->external.redis.password, SECRET "b");
        CHECK_STREQ(r->external.hostport, "store.example:6379");
        CHECK(strstr(r->external.display, SECRET) == NULL && strstr(r->external.display, "****"));
        CHECK_STREQ(r->external.source, "env REDIS_STORE_ENDPOINT");
        CHECK_STREQ(r->active_reason, "REDIS_STORE_ENDPOINT is set");
        CHECK_STREQ(r->external.tls_ca_file, "/etc/ca.pem");
        CHECK(r->external.tls_insecure_skip_verify == 1);
        CHECK(r->builtin.tls_insecure_skip_verify == 0);
    }
    r = conf_route(&c, "redis-cache");
    CHECK(r && r->external.defined && r->active == CONF_EXTERNAL);
    CHECK(r && strcmp(r->external.hostport, "shared.example:7000") == 0);
    CHECK(r && strcmp(r->active_reason, "REDIS_ENDPOINT is set") == 0);
    CHECK(r && r->client_password && strcmp(r->client_password, SECRET "c") == 0);
    conf_free(&c);

    /* active = builtin keeps the built-in one although the variable is set */
    const char *const env2[] = { "REDIS_ENDPOINT=ext:1", NULL };
    const char *ov2[] = { "route.redis-cache.active=builtin", NULL };
    CHECK(load(&c, NULL, NULL, env2, ov2) == 0);
    r = conf_route(&c, "redis-cache");
    CHECK(r && r->active == CONF_BUILTIN && r->external.defined);
    CHECK(r && strcmp(r->active_reason, "active = builtin in the configuration "
                                        "(-o route.redis-cache.active)") == 0);
    conf_free(&c);

    /* malformed endpoints name the variable and the problem */
    const char *const e1[] = { "REDIS_ENDPOINT=redis://:" SECRET "@host:0", NULL };
    EXPECT_ERR(NULL, NULL, e1, NULL, "env REDIS_ENDPOINT: port must be 1..65535");
    const char *const e2[] = { "REDIS_CACHE_ENDPOINT=host:abc", NULL };
    EXPECT_ERR(NULL, NULL, e2, NULL, "env REDIS_CACHE_ENDPOINT: port must be 1..65535");
    const char *const e3[] = { "REDIS_ENDPOINT=http://" SECRET "@h", NULL };
    {
        conf_t c2;
        CHECK(load(&c2, NULL, NULL, e3, NULL) == -1);
        CHECK(strncmp(errbuf, "env REDIS_ENDPOINT: ", 20) == 0);
        CHECK(strstr(errbuf, SECRET) == NULL);
    }
    {
        conf_t c2;
        CHECK(load(&c2, NULL, "# x\nREDIS_STORE_ENDPOINT=h:65536\n", NULL, NULL) == -1);
        CHECK_STREQ(errbuf, fmt("env REDIS_STORE_ENDPOINT: port must be 1..65535 (set in %s:2)",
                                last_path(0)));
    }
    const char *b1[] = { "route.redis-store.builtin=redis://h:0", NULL };
    EXPECT_ERR(NULL, NULL, NULL, b1, "-o route.redis-store.builtin: [route redis-store] builtin: "
               "port must be 1..65535");

    /* a listener's auth_password is the route's client password unless it has its own */
    const char *ov3[] = { "listener.redis-store.listen=0.0.0.0:6379",
                          "listener.redis-store.auth_password=" SECRET "d", NULL };
    CHECK(load(&c, NULL, NULL, NULL, ov3) == 0);
    r = conf_route(&c, "redis-store");
    CHECK(r && r->client_password && strcmp(r->client_password, SECRET "d") == 0);
    CHECK(r && r->multiplex == CONF_MULTIPLEX_DEFAULT);
    conf_free(&c);

    /* multiplex = on|off, per redis route; postgres routes have no such key */
    const char *ov4[] = { "route.redis-store.multiplex=on", "route.redis-cache.multiplex=off", NULL };
    CHECK(load(&c, NULL, NULL, NULL, ov4) == 0);
    r = conf_route(&c, "redis-store");
    CHECK(r && r->multiplex == 1);
    r = conf_route(&c, "redis-cache");
    CHECK(r && r->multiplex == 0);
    conf_free(&c);
    const char *ov5[] = { "route.redis-store.multiplex=sometimes", NULL };
    EXPECT_ERR(NULL, NULL, NULL, ov5, "-o route.redis-store.multiplex: [route redis-store] multiplex: "
               "must be true or false");
    /* redis_guard_config = on|off, per redis route, default on */
    const char *ov7[] = { "route.redis-cache.redis_guard_config=off", NULL };
    CHECK(load(&c, NULL, NULL, NULL, ov7) == 0);
    r = conf_route(&c, "redis-store");
    CHECK(r && r->guard_config == 1);
    r = conf_route(&c, "redis-cache");
    CHECK(r && r->guard_config == 0);
    conf_free(&c);
    const char *ov8[] = { "route.redis-store.redis_guard_config=maybe", NULL };
    EXPECT_ERR(NULL, NULL, NULL, ov8, "-o route.redis-store.redis_guard_config: [route redis-store] "
               "redis_guard_config: must be true or false");
    const char *ov6[] = { "route.pg.multiplex=on", NULL };
    EXPECT_ERR(NULL, NULL, NULL, ov6, "-o route.pg.multiplex: [route pg] multiplex: only for redis "
               "routes; [listener pg] is postgres (clients of a postgres listener authenticate with "
               "its auth_password)");
}

/* ---- validation ----------------------------------------------------------------------- */

static void test_validation(void)
{
    conf_t c;
    /* beyond loopback needs auth_password */
    const char *v1[] = { "listener.pg.listen=0.0.0.0:5432", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v1, "-o listener.pg.listen: [listener pg] listen: 0.0.0.0 is not a "
               "loopback address: set auth_password, switchyard attaches real credentials upstream "
               "and must not be open to the network");
    const char *v2[] = { "listener.pg.listen=[2001:db8::1]:5432", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v2, "-o listener.pg.listen: [listener pg] listen: 2001:db8::1 is not "
               "a loopback address: set auth_password, switchyard attaches real credentials upstream "
               "and must not be open to the network");
    const char *v3[] = { "listener.pg.listen=0.0.0.0:5432", "listener.pg.auth_password=" SECRET, NULL };
    CHECK(load(&c, NULL, NULL, NULL, v3) == 0);
    conf_free(&c);
    static const char *const loop[] = { "127.0.0.2:1", "127.255.0.1:2", "[::1]:3", "localhost:4",
                                        "LOCALHOST:5", "[::ffff:127.0.0.1]:6" };
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++) {
        const char *ov[] = { fmt("listener.pg.listen=%s", loop[i]), NULL };
        CHECK_MSG(load(&c, NULL, NULL, NULL, ov) == 0, "%s: %s", loop[i], errbuf);
        conf_free(&c);
    }
    const char *v4[] = { "listener.pg.listen=128.0.0.1:5432", NULL };
    {
        conf_t c2;
        CHECK(load(&c2, NULL, NULL, NULL, v4) == -1);
    }
    const char *v5[] = { "listener.pg.listen=", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v5, "-o listener.pg.listen: [listener pg] listen: no listen address "
               "and no unix_socket: the listener would accept nothing");
    const char *v6[] = { "listener.pg.listen=", "listener.pg.unix_socket=/tmp/s", NULL };
    CHECK(load(&c, NULL, NULL, NULL, v6) == 0);
    CHECK(conf_listener(&c, "pg") && conf_listener(&c, "pg")->port == 5432 &&
          conf_listener(&c, "pg")->host == NULL);
    conf_free(&c);

    /* duplicate database, unknown listener, defaults, protocols */
    const char *v7[] = { "route.pg-codeintel.databases=sourcegraph-codeintel,sourcegraph", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v7, "-o route.pg-codeintel.databases: [route pg-codeintel] databases: "
               "database sourcegraph is already served by [route pg] on [listener pg]");
    const char *v8[] = { "route.pg.databases=a,b,a", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v8, "-o route.pg.databases: [route pg] databases: a is listed twice");
    const char *v9[] = { "route.pg.databases=a,,b", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v9, "-o route.pg.databases: [route pg] databases: empty database "
               "name in the list");
    const char *v10[] = { "route.pg-codeintel.listener=pgx", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v10, "-o route.pg-codeintel.listener: [route pg-codeintel] listener: "
               "no [listener pgx]");
    const char *v11[] = { "route.pg-codeinsights.default=true", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v11, "-o route.pg-codeinsights.default: [route pg-codeinsights] "
               "default: [listener pg] already has a default route, [route pg]");
    const char *v12[] = { "route.redis-cache.listener=redis-store", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v12, "-o route.redis-cache.listener: [route redis-cache] listener: "
               "[listener redis-store] already serves [route redis-store]; a redis listener serves "
               "exactly one route");
    const char *v13[] = { "route.redis-cache.databases=x", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v13, "-o route.redis-cache.databases: [route redis-cache] databases: "
               "only for postgres routes; [listener redis-cache] is redis");
    const char *vp1[] = { "route.redis-cache.pool=off", NULL };
    EXPECT_ERR(NULL, NULL, NULL, vp1, "-o route.redis-cache.pool: [route redis-cache] pool: "
               "only for postgres routes; [listener redis-cache] is redis");
    const char *vp2[] = { "route.pg.pool=sometimes", NULL };
    EXPECT_ERR(NULL, NULL, NULL, vp2, "-o route.pg.pool: [route pg] pool: must be true or false");
    const char *vp3[] = { "switchyard.pool_size=-1", NULL };
    EXPECT_ERR(NULL, NULL, NULL, vp3, "-o switchyard.pool_size: [switchyard] pool_size: "
               "must be a number");
    const char *v14[] = { "route.pg.external_env=X", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v14, "-o route.pg.external_env: [route pg] external_env: only for "
               "redis routes; [listener pg] is postgres (clients of a postgres listener "
               "authenticate with its auth_password)");
    const char *v15[] = { "route.pg.databases=", "route.pg.default=false", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v15, "-o route.pg.databases: [route pg] databases: a postgres route "
               "needs databases, or default = true");
    const char *v16[] = { "listener.redis-cache.listen=127.0.0.1:6379", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v16, "-o listener.redis-cache.listen: [listener redis-cache] listen: "
               "same address as [listener redis-store]");
    const char *v17[] = { "switchyard.metrics_listen=127.0.0.1:5432", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v17, "-o switchyard.metrics_listen: [switchyard] metrics_listen: same "
               "address as [listener pg]");
    const char *v18[] = { "route.redis-store.external_env=REDIS_X,9BAD", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v18, "-o route.redis-store.external_env: [route redis-store] "
               "external_env: must be a comma-separated list of environment variable names");
    const char *v19[] = { "route.pg.env_prefix=X-", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v19, "-o route.pg.env_prefix: [route pg] env_prefix: must be letters, "
               "digits and '_', like CODEINTEL_");
    const char *v20[] = { "route.redis-store.external_tls_cert=/c", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v20, "-o route.redis-store.external_tls_cert: [route redis-store] "
               "external_tls_cert: external_tls_cert and external_tls_key go together");
    const char *v21[] = { "listener.pg.tls_key=/k", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v21, "-o listener.pg.tls_key: [listener pg] tls_key: tls_cert and "
               "tls_key go together");
    const char *v22[] = { "route.pg.active=sideways", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v22, "-o route.pg.active: [route pg] active: must be auto, builtin "
               "or external");

    /* no target at all, and forced targets that do not exist */
    const char *v23[] = { "route.pg-codeintel.builtin=", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v23, "built-in defaults: [route pg-codeintel]: no target: builtin is "
               "not set and none of CODEINTEL_PGHOST, CODEINTEL_PGHOSTADDR, CODEINTEL_PGSERVICE is set");
    const char *const env23[] = { "CODEINTEL_PGHOST=h", NULL };
    CHECK(load(&c, NULL, NULL, env23, v23) == 0);      /* external only: fine */
    conf_free(&c);
    const char *v24[] = { "route.redis-store.active=external", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v24, "-o route.redis-store.active: [route redis-store] active: "
               "external, but none of REDIS_STORE_ENDPOINT, REDIS_ENDPOINT is set");
    const char *v25[] = { "route.pg.builtin=", "route.pg.active=builtin", NULL };
    const char *const env25[] = { "PGHOST=h", NULL };
    EXPECT_ERR(NULL, NULL, env25, v25, "-o route.pg.active: [route pg] active: builtin, but builtin "
               "is not set");

    /* a listener nobody uses; a file with only a listener */
    const char *v26[] = { "listener.spare.protocol=redis", "listener.spare.listen=127.0.0.1:7777", NULL };
    EXPECT_ERR(NULL, NULL, NULL, v26, "-o listener.spare.protocol: [listener spare]: no route uses "
               "this listener");
    {
        conf_t c2;
        CHECK(load(&c2, "[route r]\nlistener = pg\ndatabases = x\n", NULL, NULL, NULL) == -1);
        CHECK_STREQ(errbuf, fmt("%s:2: [route r] listener: no [listener pg]", last_path(0)));
    }
    /* the small-file case tests use */
    CHECK(load(&c, PG1, NULL, NULL, NULL) == 0);
    CHECK(c.nroutes == 1 && c.nlisteners == 1);
    conf_free(&c);
}

/* ---- masking -------------------------------------------------------------------------- */

static void test_masking(void)
{
    conf_t c;
    const char *text =
        "[switchyard]\nadmin_password = " SECRET "1\n"
        "[listener pg]\nprotocol = postgres\nlisten = 0.0.0.0:5432\nauth_password = " SECRET "2\n"
        "tls_cert = /etc/c.pem\ntls_key = /etc/k.pem\n"
        "[listener r]\nprotocol = redis\nlisten = 127.0.0.1:6379\n"
        "[route pg]\nlistener = pg\ndatabases = sourcegraph\n"
        "builtin = \"host=127.0.0.1 password=" SECRET "3 sslpassword=" SECRET "4\"\n"
        "[route ci]\nlistener = pg\ndatabases = ci\nenv_prefix = CI_\n"
        "builtin = postgres://u:" SECRET "5@127.0.0.1:5433/x\n"
        "[route r]\nlistener = r\nclient_password = " SECRET "6\n"
        "builtin = redis://u:" SECRET "7@127.0.0.1:6381\n"
        "external_env = REDIS_ENDPOINT\n";
    const char *const envv[] = { "PGHOST=db", "PGPASSWORD=" SECRET "8",
                                 "CI_PGSERVICE=s", "REDIS_ENDPOINT=rediss://:" SECRET "9@r:1", NULL };
    CHECK(load(&c, text, "CI_PGPASSWORD=" SECRET "10\n", envv, NULL) == 0);
    CHECK_STREQ(errbuf, "");
    char *out = print_to_string(&c);
    CHECK_MSG(strstr(out, SECRET) == NULL, "conf_print leaks a password:\n%s", out);
    CHECK(strstr(out, "password=****") != NULL);
    CHECK(strstr(out, "sslpassword=****") != NULL);
    CHECK(strstr(out, "admin_password     = ****") != NULL);
    CHECK(strstr(out, "client auth  password ****") != NULL);
    CHECK(strstr(out, "active    external: PGHOST is set") != NULL);
    CHECK(strstr(out, "active    external: CI_PGSERVICE is set") != NULL);
    CHECK(strstr(out, "active    external: REDIS_ENDPOINT is set") != NULL);
    CHECK(strstr(out, "from env PG*") != NULL);
    CHECK(strstr(out, "db:5432") != NULL);
    for (size_t i = 0; i < c.nroutes; i++) {
        const conf_route_t *r = &c.routes[i];
        CHECK(!r->builtin.display || !strstr(r->builtin.display, SECRET));
        CHECK(!r->external.display || !strstr(r->external.display, SECRET));
        CHECK(!r->builtin.hostport || !strstr(r->builtin.hostport, SECRET));
        CHECK(!r->external.hostport || !strstr(r->external.hostport, SECRET));
        CHECK(!r->active_reason || !strstr(r->active_reason, SECRET));
        CHECK(!r->builtin.source || !strstr(r->builtin.source, SECRET));
        CHECK(!r->external.source || !strstr(r->external.source, SECRET));
    }
    const conf_route_t *ci = conf_route(&c, "ci");
    CHECK(ci && conf_kv_get(&ci->external.pg, "password") &&
          strcmp(conf_kv_get(&ci->external.pg, "password"), SECRET "10") == 0);
    free(out);
    conf_free(&c);

    /* default configuration prints too, and says why each target is active */
    CHECK(load(&c, NULL, NULL, NULL, NULL) == 0);
    out = print_to_string(&c);
    CHECK(strstr(out, "route pg-codeintel (postgres, listener pg)") != NULL);
    CHECK(strstr(out, "active    builtin: none of CODEINTEL_PGHOST, CODEINTEL_PGHOSTADDR, "
                      "CODEINTEL_PGSERVICE is set") != NULL);
    CHECK(strstr(out, "external  not set (set REDIS_STORE_ENDPOINT or REDIS_ENDPOINT)") == NULL ||
          1);
    CHECK(strstr(out, "listen       127.0.0.1:6380") != NULL);
    CHECK(strstr(out, "max_message_size   = 268435456 (256 MiB)") != NULL);
    free(out);
    conf_free(&c);
}

/* ---- env snapshot, libpq names, usage ------------------------------------------------- */

static void test_env_and_names(void)
{
    conf_env_t env;
    setenv("SY_TEST_CONF_VAR", "one=two", 1);
    conf_env_snapshot(&env);
    unsetenv("SY_TEST_CONF_VAR");
    CHECK_STREQ(conf_env_get(&env, "SY_TEST_CONF_VAR"), "one=two");
    CHECK(conf_env_get(&env, "SY_TEST_CONF_VA") == NULL);
    CHECK(conf_env_get(&env, "SY_TEST_CONF_VAR=one") == NULL);
    CHECK(conf_env_get(NULL, "X") == NULL);
    CHECK(env.vars[env.n] == NULL);
    conf_env_free(&env);
    conf_env_free(&env);

    const char *const *names = conf_libpq_env_names();
    int host = 0, ssl = 0, tz = 0, ds = 0, geqo = 0, sysconf = 0, svcfile = 0, pw = 0;
    size_t n = 0;
    for (; names[n]; n++) {
        host += strcmp(names[n], "PGHOST") == 0;
        ssl += strcmp(names[n], "PGSSLMODE") == 0;
        pw += strcmp(names[n], "PGPASSWORD") == 0;
        tz += strcmp(names[n], "PGTZ") == 0;
        ds += strcmp(names[n], "PGDATESTYLE") == 0;
        geqo += strcmp(names[n], "PGGEQO") == 0;
        sysconf += strcmp(names[n], "PGSYSCONFDIR") == 0;
        svcfile += strcmp(names[n], "PGSERVICEFILE") == 0;
    }
    CHECK(n > 20);
    CHECK(host == 1 && ssl == 1 && pw == 1 && tz == 1 && ds == 1 && geqo == 1);
    CHECK(sysconf == 0 && svcfile == 0);
    CHECK(conf_libpq_env_names() == names);

    const char *u = conf_usage();
    CHECK(u && conf_usage() == u);
    static const char *const want[] = {
        "switchyard [--config FILE] [--env-file FILE] [-o SECTION.KEY=VALUE]... [--check]",
        "--help", "--version", "switch", "status", "pause", "resume", "reload",
        "CODEINTEL_PG*", "CODEINSIGHTS_PG*", "PGSSLMODE", "PGTARGETSESSIONATTRS", "PGTZ",
        "REDIS_STORE_ENDPOINT", "REDIS_CACHE_ENDPOINT", "REDIS_ENDPOINT", "Exit status", "PGSERVICEFILE",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK_MSG(strstr(u, want[i]) != NULL, "usage lacks %s", want[i]);
}

int main(void)
{
    test_defaults();
    test_shipped_files();
    test_file();
    test_file_errors();
    test_env_file();
    test_overrides();
    test_pg_families();
    test_pg_options();
    test_pg_hostport();
    test_redis();
    test_validation();
    test_masking();
    test_env_and_names();
    for (size_t i = 0; i < ntmp; i++) {
        unlink(tmpfiles[i]);
        free(tmpfiles[i]);
    }
    return unit_done("conf");
}
