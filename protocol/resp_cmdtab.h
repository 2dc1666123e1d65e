/*
 * resp_cmdtab.h - the Redis commands switchyard knows, listed once, with what each one does
 * to a connection.
 *
 * twemproxy lists every command once in an X-macro (nc_message.h) and derives its checks
 * from it; Redis 7 keeps flags such as CMD_BLOCKING per command (commands.def). This is
 * the same idea for a proxy that keeps one upstream connection per client: the session
 * asks the table once per request what the command is (an id) and what it touches (flags),
 * and switches on those instead of comparing strings.
 *
 *   captured arguments (resp_req_t) ──▶ resp_cmd_classify ──▶ { id, subcommand id, flags }
 *                                          │ name: one hash probe over RESP_COMMANDS
 *                                          │ subcommand (CLIENT SETNAME, ...): RESP_SUBCOMMANDS
 *                                          └ per-command argument rules (XREAD ... BLOCK)
 *
 * The rows are every command of Redis 7.0 (COMMAND's own list), plus the few 7.2 / 7.4
 * added (WAITAOF, CLIENT NO-TOUCH, CLIENT SETINFO, CLUSTER MYSHARDID, the hash field
 * expiry commands). A command not listed is unknown: forwarded as before, but never judged
 * shareable (a module or a newer server may give it any semantics).
 *
 * Rows are kept sorted by name (bytes, upper case; subcommands by parent, then name), so
 * a reader finds them, and the unit test fails if a row is out of place. Lookup is
 * case-insensitive (ASCII, as Redis), allocates nothing, and costs O(len): one probe of a
 * hash table of both tables, filled once (pthread_once) on the first lookup.
 *
 * Pure apart from that table: no allocation, no I/O.
 */
#ifndef SY_RESP_CMDTAB_H
#define SY_RESP_CMDTAB_H

#include <stddef.h>
#include <stdint.h>
#include "protocol/resp.h"

/*
 * Flags, one bit each (a row may carry several). "Shareable" below means: could run on an
 * upstream connection that other clients also use (a later multiplexing mode), with the
 * same reply and effect as on a connection of its own.
 */
#define RESP_CF_BLOCKING    (1u << 0)   /* may block the connection until another client acts
                                         * (BLPOP, ..., WAIT, WAITAOF); set by classify for
                                         * XREAD / XREADGROUP when a BLOCK argument is seen */
#define RESP_CF_BLOCK_ARG   (1u << 1)   /* blocks only with a BLOCK argument (XREAD, XREADGROUP) */
#define RESP_CF_SUBSCRIBE   (1u << 2)   /* enters pub/sub mode: one reply per channel */
#define RESP_CF_UNSUBSCRIBE (1u << 3)   /* leaves channels: one reply per channel, or per
                                         * subscription held when given none */
#define RESP_CF_PATTERN     (1u << 4)   /* the (UN)SUBSCRIBE works on patterns (P...) */
#define RESP_CF_SHARD       (1u << 5)   /* the (UN)SUBSCRIBE works on shard channels (S...) */
#define RESP_CF_TXN         (1u << 6)   /* MULTI, EXEC, DISCARD, WATCH, UNWATCH */
#define RESP_CF_LOCAL       (1u << 7)   /* switchyard may answer it itself (AUTH; HELLO when
                                         * it carries AUTH): the session holds it whole */
#define RESP_CF_STATE       (1u << 8)   /* changes connection state that a move must replay
                                         * or that pins the connection (SELECT, HELLO, RESET,
                                         * CLIENT SETNAME / TRACKING / REPLY, READONLY, ...) */
#define RESP_CF_CONN        (1u << 9)   /* reads or ends this very connection (QUIT, every
                                         * CLIENT subcommand, ACL WHOAMI): its answer or
                                         * effect belongs to one connection */
#define RESP_CF_SCRIPT      (1u << 10)  /* EVAL / FCALL and their _RO forms: an opaque body
                                         * that runs with this connection's db, user and
                                         * protocol, for as long as it likes */
#define RESP_CF_ADMIN       (1u << 11)  /* Redis's own "admin" flag (CONFIG SET, DEBUG,
                                         * SHUTDOWN, replication): an operator's command */
#define RESP_CF_SUBCMDS     (1u << 12)  /* a container: the second argument names a
                                         * subcommand listed in RESP_SUBCOMMANDS */
#define RESP_CF_UNSURE      (1u << 13)  /* classify only: an argument that decides a flag was
                                         * not captured (XREAD with arguments beyond the
                                         * captured ones and no BLOCK among those seen) */

/* A flag in this mask makes a command unshareable. */
#define RESP_CF_NOSHARE (RESP_CF_BLOCKING | RESP_CF_SUBSCRIBE | RESP_CF_UNSUBSCRIBE | RESP_CF_TXN | \
                         RESP_CF_LOCAL | RESP_CF_STATE | RESP_CF_CONN | RESP_CF_SCRIPT | RESP_CF_ADMIN | \
                         RESP_CF_UNSURE)

#define RESP_CMD_NAME_MAX 24    /* longest name in either table, with room; longer is unknown */

/* X(id, name, flags): every command, sorted by name. */
#define RESP_COMMANDS(X) \
    X(ACL,                  "ACL",                  RESP_CF_SUBCMDS) \
    X(APPEND,               "APPEND",               0) \
    X(ASKING,               "ASKING",               RESP_CF_STATE) \
    X(AUTH,                 "AUTH",                 RESP_CF_LOCAL | RESP_CF_STATE) \
    X(BGREWRITEAOF,         "BGREWRITEAOF",         RESP_CF_ADMIN) \
    X(BGSAVE,               "BGSAVE",               RESP_CF_ADMIN) \
    X(BITCOUNT,             "BITCOUNT",             0) \
    X(BITFIELD,             "BITFIELD",             0) \
    X(BITFIELD_RO,          "BITFIELD_RO",          0) \
    X(BITOP,                "BITOP",                0) \
    X(BITPOS,               "BITPOS",               0) \
    X(BLMOVE,               "BLMOVE",               RESP_CF_BLOCKING) \
    X(BLMPOP,               "BLMPOP",               RESP_CF_BLOCKING) \
    X(BLPOP,                "BLPOP",                RESP_CF_BLOCKING) \
    X(BRPOP,                "BRPOP",                RESP_CF_BLOCKING) \
    X(BRPOPLPUSH,           "BRPOPLPUSH",           RESP_CF_BLOCKING) \
    X(BZMPOP,               "BZMPOP",               RESP_CF_BLOCKING) \
    X(BZPOPMAX,             "BZPOPMAX",             RESP_CF_BLOCKING) \
    X(BZPOPMIN,             "BZPOPMIN",             RESP_CF_BLOCKING) \
    X(CLIENT,               "CLIENT",               RESP_CF_CONN | RESP_CF_SUBCMDS) \
    X(CLUSTER,              "CLUSTER",              RESP_CF_SUBCMDS) \
    X(COMMAND,              "COMMAND",              RESP_CF_SUBCMDS) \
    X(CONFIG,               "CONFIG",               RESP_CF_SUBCMDS) \
    X(COPY,                 "COPY",                 0) \
    X(DBSIZE,               "DBSIZE",               0) \
    X(DEBUG,                "DEBUG",                RESP_CF_ADMIN) \
    X(DECR,                 "DECR",                 0) \
    X(DECRBY,               "DECRBY",               0) \
    X(DEL,                  "DEL",                  0) \
    X(DISCARD,              "DISCARD",              RESP_CF_TXN) \
    X(DUMP,                 "DUMP",                 0) \
    X(ECHO,                 "ECHO",                 0) \
    X(EVAL,                 "EVAL",                 RESP_CF_SCRIPT) \
    X(EVALSHA,              "EVALSHA",              RESP_CF_SCRIPT) \
    X(EVALSHA_RO,           "EVALSHA_RO",           RESP_CF_SCRIPT) \
    X(EVAL_RO,              "EVAL_RO",              RESP_CF_SCRIPT) \
    X(EXEC,                 "EXEC",                 RESP_CF_TXN) \
    X(EXISTS,               "EXISTS",               0) \
    X(EXPIRE,               "EXPIRE",               0) \
    X(EXPIREAT,             "EXPIREAT",             0) \
    X(EXPIRETIME,           "EXPIRETIME",           0) \
    X(FAILOVER,             "FAILOVER",             RESP_CF_ADMIN) \
    X(FCALL,                "FCALL",                RESP_CF_SCRIPT) \
    X(FCALL_RO,             "FCALL_RO",             RESP_CF_SCRIPT) \
    X(FLUSHALL,             "FLUSHALL",             0) \
    X(FLUSHDB,              "FLUSHDB",              0) \
    X(FUNCTION,             "FUNCTION",             RESP_CF_SUBCMDS) \
    X(GEOADD,               "GEOADD",               0) \
    X(GEODIST,              "GEODIST",              0) \
    X(GEOHASH,              "GEOHASH",              0) \
    X(GEOPOS,               "GEOPOS",               0) \
    X(GEORADIUS,            "GEORADIUS",            0) \
    X(GEORADIUSBYMEMBER,    "GEORADIUSBYMEMBER",    0) \
    X(GEORADIUSBYMEMBER_RO, "GEORADIUSBYMEMBER_RO", 0) \
    X(GEORADIUS_RO,         "GEORADIUS_RO",         0) \
    X(GEOSEARCH,            "GEOSEARCH",            0) \
    X(GEOSEARCHSTORE,       "GEOSEARCHSTORE",       0) \
    X(GET,                  "GET",                  0) \
    X(GETBIT,               "GETBIT",               0) \
    X(GETDEL,               "GETDEL",               0) \
    X(GETEX,                "GETEX",                0) \
    X(GETRANGE,             "GETRANGE",             0) \
    X(GETSET,               "GETSET",               0) \
    X(HDEL,                 "HDEL",                 0) \
    X(HELLO,                "HELLO",                RESP_CF_LOCAL | RESP_CF_STATE) \
    X(HEXISTS,              "HEXISTS",              0) \
    X(HEXPIRE,              "HEXPIRE",              0) \
    X(HEXPIREAT,            "HEXPIREAT",            0) \
    X(HEXPIRETIME,          "HEXPIRETIME",          0) \
    X(HGET,                 "HGET",                 0) \
    X(HGETALL,              "HGETALL",              0) \
    X(HINCRBY,              "HINCRBY",              0) \
    X(HINCRBYFLOAT,         "HINCRBYFLOAT",         0) \
    X(HKEYS,                "HKEYS",                0) \
    X(HLEN,                 "HLEN",                 0) \
    X(HMGET,                "HMGET",                0) \
    X(HMSET,                "HMSET",                0) \
    X(HPERSIST,             "HPERSIST",             0) \
    X(HPEXPIRE,             "HPEXPIRE",             0) \
    X(HPEXPIREAT,           "HPEXPIREAT",           0) \
    X(HPEXPIRETIME,         "HPEXPIRETIME",         0) \
    X(HPTTL,                "HPTTL",                0) \
    X(HRANDFIELD,           "HRANDFIELD",           0) \
    X(HSCAN,                "HSCAN",                0) \
    X(HSET,                 "HSET",                 0) \
    X(HSETNX,               "HSETNX",               0) \
    X(HSTRLEN,              "HSTRLEN",              0) \
    X(HTTL,                 "HTTL",                 0) \
    X(HVALS,                "HVALS",                0) \
    X(INCR,                 "INCR",                 0) \
    X(INCRBY,               "INCRBY",               0) \
    X(INCRBYFLOAT,          "INCRBYFLOAT",          0) \
    X(INFO,                 "INFO",                 0) \
    X(KEYS,                 "KEYS",                 0) \
    X(LASTSAVE,             "LASTSAVE",             0) \
    X(LATENCY,              "LATENCY",              RESP_CF_SUBCMDS) \
    X(LCS,                  "LCS",                  0) \
    X(LINDEX,               "LINDEX",               0) \
    X(LINSERT,              "LINSERT",              0) \
    X(LLEN,                 "LLEN",                 0) \
    X(LMOVE,                "LMOVE",                0) \
    X(LMPOP,                "LMPOP",                0) \
    X(LOLWUT,               "LOLWUT",               0) \
    X(LPOP,                 "LPOP",                 0) \
    X(LPOS,                 "LPOS",                 0) \
    X(LPUSH,                "LPUSH",                0) \
    X(LPUSHX,               "LPUSHX",               0) \
    X(LRANGE,               "LRANGE",               0) \
    X(LREM,                 "LREM",                 0) \
    X(LSET,                 "LSET",                 0) \
    X(LTRIM,                "LTRIM",                0) \
    X(MEMORY,               "MEMORY",               RESP_CF_SUBCMDS) \
    X(MGET,                 "MGET",                 0) \
    X(MIGRATE,              "MIGRATE",              0) \
    X(MODULE,               "MODULE",               RESP_CF_SUBCMDS) \
    X(MONITOR,              "MONITOR",              RESP_CF_STATE | RESP_CF_ADMIN) \
    X(MOVE,                 "MOVE",                 0) \
    X(MSET,                 "MSET",                 0) \
    X(MSETNX,               "MSETNX",               0) \
    X(MULTI,                "MULTI",                RESP_CF_TXN) \
    X(OBJECT,               "OBJECT",               RESP_CF_SUBCMDS) \
    X(PERSIST,              "PERSIST",              0) \
    X(PEXPIRE,              "PEXPIRE",              0) \
    X(PEXPIREAT,            "PEXPIREAT",            0) \
    X(PEXPIRETIME,          "PEXPIRETIME",          0) \
    X(PFADD,                "PFADD",                0) \
    X(PFCOUNT,              "PFCOUNT",              0) \
    X(PFDEBUG,              "PFDEBUG",              RESP_CF_ADMIN) \
    X(PFMERGE,              "PFMERGE",              0) \
    X(PFSELFTEST,           "PFSELFTEST",           RESP_CF_ADMIN) \
    X(PING,                 "PING",                 0) \
    X(PSETEX,               "PSETEX",               0) \
    X(PSUBSCRIBE,           "PSUBSCRIBE",           RESP_CF_SUBSCRIBE | RESP_CF_PATTERN) \
    X(PSYNC,                "PSYNC",                RESP_CF_STATE | RESP_CF_ADMIN) \
    X(PTTL,                 "PTTL",                 0) \
    X(PUBLISH,              "PUBLISH",              0) \
    X(PUBSUB,               "PUBSUB",               RESP_CF_SUBCMDS) \
    X(PUNSUBSCRIBE,         "PUNSUBSCRIBE",         RESP_CF_UNSUBSCRIBE | RESP_CF_PATTERN) \
    X(QUIT,                 "QUIT",                 RESP_CF_CONN) \
    X(RANDOMKEY,            "RANDOMKEY",            0) \
    X(READONLY,             "READONLY",             RESP_CF_STATE) \
    X(READWRITE,            "READWRITE",            RESP_CF_STATE) \
    X(RENAME,               "RENAME",               0) \
    X(RENAMENX,             "RENAMENX",             0) \
    X(REPLCONF,             "REPLCONF",             RESP_CF_STATE | RESP_CF_ADMIN) \
    X(REPLICAOF,            "REPLICAOF",            RESP_CF_ADMIN) \
    X(RESET,                "RESET",                RESP_CF_STATE) \
    X(RESTORE,              "RESTORE",              0) \
    X(RESTORE_ASKING,       "RESTORE-ASKING",       0) \
    X(ROLE,                 "ROLE",                 0) \
    X(RPOP,                 "RPOP",                 0) \
    X(RPOPLPUSH,            "RPOPLPUSH",            0) \
    X(RPUSH,                "RPUSH",                0) \
    X(RPUSHX,               "RPUSHX",               0) \
    X(SADD,                 "SADD",                 0) \
    X(SAVE,                 "SAVE",                 RESP_CF_ADMIN) \
    X(SCAN,                 "SCAN",                 0) \
    X(SCARD,                "SCARD",                0) \
    X(SCRIPT,               "SCRIPT",               RESP_CF_SUBCMDS) \
    X(SDIFF,                "SDIFF",                0) \
    X(SDIFFSTORE,           "SDIFFSTORE",           0) \
    X(SELECT,               "SELECT",               RESP_CF_STATE) \
    X(SET,                  "SET",                  0) \
    X(SETBIT,               "SETBIT",               0) \
    X(SETEX,                "SETEX",                0) \
    X(SETNX,                "SETNX",                0) \
    X(SETRANGE,             "SETRANGE",             0) \
    X(SHUTDOWN,             "SHUTDOWN",             RESP_CF_ADMIN) \
    X(SINTER,               "SINTER",               0) \
    X(SINTERCARD,           "SINTERCARD",           0) \
    X(SINTERSTORE,          "SINTERSTORE",          0) \
    X(SISMEMBER,            "SISMEMBER",            0) \
    X(SLAVEOF,              "SLAVEOF",              RESP_CF_ADMIN) \
    X(SLOWLOG,              "SLOWLOG",              RESP_CF_SUBCMDS) \
    X(SMEMBERS,             "SMEMBERS",             0) \
    X(SMISMEMBER,           "SMISMEMBER",           0) \
    X(SMOVE,                "SMOVE",                0) \
    X(SORT,                 "SORT",                 0) \
    X(SORT_RO,              "SORT_RO",              0) \
    X(SPOP,                 "SPOP",                 0) \
    X(SPUBLISH,             "SPUBLISH",             0) \
    X(SRANDMEMBER,          "SRANDMEMBER",          0) \
    X(SREM,                 "SREM",                 0) \
    X(SSCAN,                "SSCAN",                0) \
    X(SSUBSCRIBE,           "SSUBSCRIBE",           RESP_CF_SUBSCRIBE | RESP_CF_SHARD) \
    X(STRLEN,               "STRLEN",               0) \
    X(SUBSCRIBE,            "SUBSCRIBE",            RESP_CF_SUBSCRIBE) \
    X(SUBSTR,               "SUBSTR",               0) \
    X(SUNION,               "SUNION",               0) \
    X(SUNIONSTORE,          "SUNIONSTORE",          0) \
    X(SUNSUBSCRIBE,         "SUNSUBSCRIBE",         RESP_CF_UNSUBSCRIBE | RESP_CF_SHARD) \
    X(SWAPDB,               "SWAPDB",               0) \
    X(SYNC,                 "SYNC",                 RESP_CF_STATE | RESP_CF_ADMIN) \
    X(TIME,                 "TIME",                 0) \
    X(TOUCH,                "TOUCH",                0) \
    X(TTL,                  "TTL",                  0) \
    X(TYPE,                 "TYPE",                 0) \
    X(UNLINK,               "UNLINK",               0) \
    X(UNSUBSCRIBE,          "UNSUBSCRIBE",          RESP_CF_UNSUBSCRIBE) \
    X(UNWATCH,              "UNWATCH",              RESP_CF_TXN) \
    X(WAIT,                 "WAIT",                 RESP_CF_BLOCKING) \
    X(WAITAOF,              "WAITAOF",              RESP_CF_BLOCKING) \
    X(WATCH,                "WATCH",                RESP_CF_TXN) \
    X(XACK,                 "XACK",                 0) \
    X(XADD,                 "XADD",                 0) \
    X(XAUTOCLAIM,           "XAUTOCLAIM",           0) \
    X(XCLAIM,               "XCLAIM",               0) \
    X(XDEL,                 "XDEL",                 0) \
    X(XGROUP,               "XGROUP",               RESP_CF_SUBCMDS) \
    X(XINFO,                "XINFO",                RESP_CF_SUBCMDS) \
    X(XLEN,                 "XLEN",                 0) \
    X(XPENDING,             "XPENDING",             0) \
    X(XRANGE,               "XRANGE",               0) \
    X(XREAD,                "XREAD",                RESP_CF_BLOCK_ARG) \
    X(XREADGROUP,           "XREADGROUP",           RESP_CF_BLOCK_ARG) \
    X(XREVRANGE,            "XREVRANGE",            0) \
    X(XSETID,               "XSETID",               0) \
    X(XTRIM,                "XTRIM",                0) \
    X(ZADD,                 "ZADD",                 0) \
    X(ZCARD,                "ZCARD",                0) \
    X(ZCOUNT,               "ZCOUNT",               0) \
    X(ZDIFF,                "ZDIFF",                0) \
    X(ZDIFFSTORE,           "ZDIFFSTORE",           0) \
    X(ZINCRBY,              "ZINCRBY",              0) \
    X(ZINTER,               "ZINTER",               0) \
    X(ZINTERCARD,           "ZINTERCARD",           0) \
    X(ZINTERSTORE,          "ZINTERSTORE",          0) \
    X(ZLEXCOUNT,            "ZLEXCOUNT",            0) \
    X(ZMPOP,                "ZMPOP",                0) \
    X(ZMSCORE,              "ZMSCORE",              0) \
    X(ZPOPMAX,              "ZPOPMAX",              0) \
    X(ZPOPMIN,              "ZPOPMIN",              0) \
    X(ZRANDMEMBER,          "ZRANDMEMBER",          0) \
    X(ZRANGE,               "ZRANGE",               0) \
    X(ZRANGEBYLEX,          "ZRANGEBYLEX",          0) \
    X(ZRANGEBYSCORE,        "ZRANGEBYSCORE",        0) \
    X(ZRANGESTORE,          "ZRANGESTORE",          0) \
    X(ZRANK,                "ZRANK",                0) \
    X(ZREM,                 "ZREM",                 0) \
    X(ZREMRANGEBYLEX,       "ZREMRANGEBYLEX",       0) \
    X(ZREMRANGEBYRANK,      "ZREMRANGEBYRANK",      0) \
    X(ZREMRANGEBYSCORE,     "ZREMRANGEBYSCORE",     0) \
    X(ZREVRANGE,            "ZREVRANGE",            0) \
    X(ZREVRANGEBYLEX,       "ZREVRANGEBYLEX",       0) \
    X(ZREVRANGEBYSCORE,     "ZREVRANGEBYSCORE",     0) \
    X(ZREVRANK,             "ZREVRANK",             0) \
    X(ZSCAN,                "ZSCAN",                0) \
    X(ZSCORE,               "ZSCORE",               0) \
    X(ZUNION,               "ZUNION",               0) \
    X(ZUNIONSTORE,          "ZUNIONSTORE",          0)

/* X(parent, id, name, flags): subcommands of the containers above, sorted by parent, then name. */
#define RESP_SUBCOMMANDS(X) \
    X(ACL,      CAT,                   "CAT",                   0) \
    X(ACL,      DELUSER,               "DELUSER",               RESP_CF_ADMIN) \
    X(ACL,      DRYRUN,                "DRYRUN",                RESP_CF_ADMIN) \
    X(ACL,      GENPASS,               "GENPASS",               0) \
    X(ACL,      GETUSER,               "GETUSER",               RESP_CF_ADMIN) \
    X(ACL,      HELP,                  "HELP",                  0) \
    X(ACL,      LIST,                  "LIST",                  RESP_CF_ADMIN) \
    X(ACL,      LOAD,                  "LOAD",                  RESP_CF_ADMIN) \
    X(ACL,      LOG,                   "LOG",                   RESP_CF_ADMIN) \
    X(ACL,      SAVE,                  "SAVE",                  RESP_CF_ADMIN) \
    X(ACL,      SETUSER,               "SETUSER",               RESP_CF_ADMIN) \
    X(ACL,      USERS,                 "USERS",                 RESP_CF_ADMIN) \
    X(ACL,      WHOAMI,                "WHOAMI",                RESP_CF_CONN) \
    X(CLIENT,   CACHING,               "CACHING",               RESP_CF_STATE) \
    X(CLIENT,   GETNAME,               "GETNAME",               RESP_CF_CONN) \
    X(CLIENT,   GETREDIR,              "GETREDIR",              RESP_CF_CONN) \
    X(CLIENT,   HELP,                  "HELP",                  0) \
    X(CLIENT,   ID,                    "ID",                    RESP_CF_CONN) \
    X(CLIENT,   INFO,                  "INFO",                  RESP_CF_CONN) \
    X(CLIENT,   KILL,                  "KILL",                  RESP_CF_ADMIN) \
    X(CLIENT,   LIST,                  "LIST",                  RESP_CF_ADMIN) \
    X(CLIENT,   NO_EVICT,              "NO-EVICT",              RESP_CF_STATE | RESP_CF_ADMIN) \
    X(CLIENT,   NO_TOUCH,              "NO-TOUCH",              RESP_CF_STATE) \
    X(CLIENT,   PAUSE,                 "PAUSE",                 RESP_CF_ADMIN) \
    X(CLIENT,   REPLY,                 "REPLY",                 RESP_CF_STATE) \
    X(CLIENT,   SETINFO,               "SETINFO",               RESP_CF_STATE) \
    X(CLIENT,   SETNAME,               "SETNAME",               RESP_CF_STATE) \
    X(CLIENT,   TRACKING,              "TRACKING",              RESP_CF_STATE) \
    X(CLIENT,   TRACKINGINFO,          "TRACKINGINFO",          RESP_CF_CONN) \
    X(CLIENT,   UNBLOCK,               "UNBLOCK",               RESP_CF_ADMIN) \
    X(CLIENT,   UNPAUSE,               "UNPAUSE",               RESP_CF_ADMIN) \
    X(CLUSTER,  ADDSLOTS,              "ADDSLOTS",              RESP_CF_ADMIN) \
    X(CLUSTER,  ADDSLOTSRANGE,         "ADDSLOTSRANGE",         RESP_CF_ADMIN) \
    X(CLUSTER,  BUMPEPOCH,             "BUMPEPOCH",             RESP_CF_ADMIN) \
    X(CLUSTER,  COUNT_FAILURE_REPORTS, "COUNT-FAILURE-REPORTS", RESP_CF_ADMIN) \
    X(CLUSTER,  COUNTKEYSINSLOT,       "COUNTKEYSINSLOT",       0) \
    X(CLUSTER,  DELSLOTS,              "DELSLOTS",              RESP_CF_ADMIN) \
    X(CLUSTER,  DELSLOTSRANGE,         "DELSLOTSRANGE",         RESP_CF_ADMIN) \
    X(CLUSTER,  FAILOVER,              "FAILOVER",              RESP_CF_ADMIN) \
    X(CLUSTER,  FLUSHSLOTS,            "FLUSHSLOTS",            RESP_CF_ADMIN) \
    X(CLUSTER,  FORGET,                "FORGET",                RESP_CF_ADMIN) \
    X(CLUSTER,  GETKEYSINSLOT,         "GETKEYSINSLOT",         0) \
    X(CLUSTER,  HELP,                  "HELP",                  0) \
    X(CLUSTER,  INFO,                  "INFO",                  0) \
    X(CLUSTER,  KEYSLOT,               "KEYSLOT",               0) \
    X(CLUSTER,  LINKS,                 "LINKS",                 0) \
    X(CLUSTER,  MEET,                  "MEET",                  RESP_CF_ADMIN) \
    X(CLUSTER,  MYID,                  "MYID",                  0) \
    X(CLUSTER,  MYSHARDID,             "MYSHARDID",             0) \
    X(CLUSTER,  NODES,                 "NODES",                 0) \
    X(CLUSTER,  REPLICAS,              "REPLICAS",              RESP_CF_ADMIN) \
    X(CLUSTER,  REPLICATE,             "REPLICATE",             RESP_CF_ADMIN) \
    X(CLUSTER,  RESET,                 "RESET",                 RESP_CF_ADMIN) \
    X(CLUSTER,  SAVECONFIG,            "SAVECONFIG",            RESP_CF_ADMIN) \
    X(CLUSTER,  SET_CONFIG_EPOCH,      "SET-CONFIG-EPOCH",      RESP_CF_ADMIN) \
    X(CLUSTER,  SETSLOT,               "SETSLOT",               RESP_CF_ADMIN) \
    X(CLUSTER,  SHARDS,                "SHARDS",                0) \
    X(CLUSTER,  SLAVES,                "SLAVES",                RESP_CF_ADMIN) \
    X(CLUSTER,  SLOTS,                 "SLOTS",                 0) \
    X(COMMAND,  COUNT,                 "COUNT",                 0) \
    X(COMMAND,  DOCS,                  "DOCS",                  0) \
    X(COMMAND,  GETKEYS,               "GETKEYS",               0) \
    X(COMMAND,  GETKEYSANDFLAGS,       "GETKEYSANDFLAGS",       0) \
    X(COMMAND,  HELP,                  "HELP",                  0) \
    X(COMMAND,  INFO,                  "INFO",                  0) \
    X(COMMAND,  LIST,                  "LIST",                  0) \
    X(CONFIG,   GET,                   "GET",                   RESP_CF_ADMIN) \
    X(CONFIG,   HELP,                  "HELP",                  0) \
    X(CONFIG,   RESETSTAT,             "RESETSTAT",             RESP_CF_ADMIN) \
    X(CONFIG,   REWRITE,               "REWRITE",               RESP_CF_ADMIN) \
    X(CONFIG,   SET,                   "SET",                   RESP_CF_ADMIN) \
    X(FUNCTION, DELETE,                "DELETE",                0) \
    X(FUNCTION, DUMP,                  "DUMP",                  0) \
    X(FUNCTION, FLUSH,                 "FLUSH",                 0) \
    X(FUNCTION, HELP,                  "HELP",                  0) \
    X(FUNCTION, KILL,                  "KILL",                  0) \
    X(FUNCTION, LIST,                  "LIST",                  0) \
    X(FUNCTION, LOAD,                  "LOAD",                  0) \
    X(FUNCTION, RESTORE,               "RESTORE",               0) \
    X(FUNCTION, STATS,                 "STATS",                 0) \
    X(LATENCY,  DOCTOR,                "DOCTOR",                RESP_CF_ADMIN) \
    X(LATENCY,  GRAPH,                 "GRAPH",                 RESP_CF_ADMIN) \
    X(LATENCY,  HELP,                  "HELP",                  0) \
    X(LATENCY,  HISTOGRAM,             "HISTOGRAM",             RESP_CF_ADMIN) \
    X(LATENCY,  HISTORY,               "HISTORY",               RESP_CF_ADMIN) \
    X(LATENCY,  LATEST,                "LATEST",                RESP_CF_ADMIN) \
    X(LATENCY,  RESET,                 "RESET",                 RESP_CF_ADMIN) \
    X(MEMORY,   DOCTOR,                "DOCTOR",                0) \
    X(MEMORY,   HELP,                  "HELP",                  0) \
    X(MEMORY,   MALLOC_STATS,          "MALLOC-STATS",          0) \
    X(MEMORY,   PURGE,                 "PURGE",                 0) \
    X(MEMORY,   STATS,                 "STATS",                 0) \
    X(MEMORY,   USAGE,                 "USAGE",                 0) \
    X(MODULE,   HELP,                  "HELP",                  0) \
    X(MODULE,   LIST,                  "LIST",                  RESP_CF_ADMIN) \
    X(MODULE,   LOAD,                  "LOAD",                  RESP_CF_ADMIN) \
    X(MODULE,   LOADEX,                "LOADEX",                RESP_CF_ADMIN) \
    X(MODULE,   UNLOAD,                "UNLOAD",                RESP_CF_ADMIN) \
    X(OBJECT,   ENCODING,              "ENCODING",              0) \
    X(OBJECT,   FREQ,                  "FREQ",                  0) \
    X(OBJECT,   HELP,                  "HELP",                  0) \
    X(OBJECT,   IDLETIME,              "IDLETIME",              0) \
    X(OBJECT,   REFCOUNT,              "REFCOUNT",              0) \
    X(PUBSUB,   CHANNELS,              "CHANNELS",              0) \
    X(PUBSUB,   HELP,                  "HELP",                  0) \
    X(PUBSUB,   NUMPAT,                "NUMPAT",                0) \
    X(PUBSUB,   NUMSUB,                "NUMSUB",                0) \
    X(PUBSUB,   SHARDCHANNELS,         "SHARDCHANNELS",         0) \
    X(PUBSUB,   SHARDNUMSUB,           "SHARDNUMSUB",           0) \
    X(SCRIPT,   DEBUG,                 "DEBUG",                 RESP_CF_STATE) \
    X(SCRIPT,   EXISTS,                "EXISTS",                0) \
    X(SCRIPT,   FLUSH,                 "FLUSH",                 0) \
    X(SCRIPT,   HELP,                  "HELP",                  0) \
    X(SCRIPT,   KILL,                  "KILL",                  0) \
    X(SCRIPT,   LOAD,                  "LOAD",                  0) \
    X(SLOWLOG,  GET,                   "GET",                   RESP_CF_ADMIN) \
    X(SLOWLOG,  HELP,                  "HELP",                  0) \
    X(SLOWLOG,  LEN,                   "LEN",                   RESP_CF_ADMIN) \
    X(SLOWLOG,  RESET,                 "RESET",                 RESP_CF_ADMIN) \
    X(XGROUP,   CREATE,                "CREATE",                0) \
    X(XGROUP,   CREATECONSUMER,        "CREATECONSUMER",        0) \
    X(XGROUP,   DELCONSUMER,           "DELCONSUMER",           0) \
    X(XGROUP,   DESTROY,               "DESTROY",               0) \
    X(XGROUP,   HELP,                  "HELP",                  0) \
    X(XGROUP,   SETID,                 "SETID",                 0) \
    X(XINFO,    CONSUMERS,             "CONSUMERS",             0) \
    X(XINFO,    GROUPS,                "GROUPS",                0) \
    X(XINFO,    HELP,                  "HELP",                  0) \
    X(XINFO,    STREAM,                "STREAM",                0)

typedef enum {
    RESP_CMD_UNKNOWN = 0,
#define RESP_CMD_ENUM(id, name, flags) RESP_CMD_##id,
    RESP_COMMANDS(RESP_CMD_ENUM)
#undef RESP_CMD_ENUM
    RESP_CMD_COUNT
} resp_cmd_id_t;

typedef enum {
    RESP_SUBCMD_NONE = 0,       /* no subcommand captured, or not one of the parent's */
#define RESP_SUBCMD_ENUM(parent, id, name, flags) RESP_SUBCMD_##parent##_##id,
    RESP_SUBCOMMANDS(RESP_SUBCMD_ENUM)
#undef RESP_SUBCMD_ENUM
    RESP_SUBCMD_COUNT
} resp_subcmd_id_t;

/* What one request is, as far as switchyard cares. */
typedef struct resp_cmd_s {
    resp_cmd_id_t    id;        /* RESP_CMD_UNKNOWN if not listed */
    resp_subcmd_id_t sub;       /* for containers (RESP_CF_SUBCMDS), else RESP_SUBCMD_NONE */
    uint32_t         flags;     /* the command's flags | the subcommand's | what the
                                 * arguments decided (RESP_CF_BLOCKING, RESP_CF_UNSURE) */
} resp_cmd_t;

/* The id of command name[0..len) in any letter case, or RESP_CMD_UNKNOWN (also for len 0,
 * len > RESP_CMD_NAME_MAX, or any byte no name has, NUL included). */
resp_cmd_id_t resp_cmd_lookup(const char *name, size_t len);

/* The id of subcommand name[0..len) of parent, or RESP_SUBCMD_NONE. */
resp_subcmd_id_t resp_subcmd_lookup(resp_cmd_id_t parent, const char *name, size_t len);

/* A row's flags and upper-case name; 0 and NULL for UNKNOWN / NONE / out of range. */
uint32_t    resp_cmd_flags(resp_cmd_id_t id);
const char *resp_cmd_name(resp_cmd_id_t id);
uint32_t    resp_subcmd_flags(resp_subcmd_id_t sub);
const char *resp_subcmd_name(resp_subcmd_id_t sub);
resp_cmd_id_t resp_subcmd_parent(resp_subcmd_id_t sub);

/*
 * Classify the request whose arguments r has captured: argument 0 names the command,
 * argument 1 a container's subcommand, and per-command rules read the rest (XREAD and
 * XREADGROUP block when any captured argument after the name is BLOCK). Works on a
 * command still arriving too, with the arguments complete so far (r->ncap); nothing
 * captured, or a truncated name, is UNKNOWN.
 */
resp_cmd_t resp_cmd_classify(const resp_req_t *r);

/*
 * May this command run on an upstream connection shared with other clients? Only a known
 * command (and, for a container, a known subcommand) with no flag in RESP_CF_NOSHARE:
 * plain reads and writes, PUBLISH, PING, INFO, SCRIPT LOAD, OBJECT ENCODING, ... Anything
 * that blocks, subscribes, belongs to a transaction, changes or reads the connection's
 * own state, runs a script, or is an operator's command is not.
 */
int resp_cmd_is_shareable(const resp_cmd_t *c);

/*
 * Does this command pin a multiplexed client (one whose commands go to an upstream shared
 * with other clients) to an upstream of its own, before it is sent? The table above is the
 * answer: every command that is not shareable pins, with two exceptions read from the
 * request r:
 *   - AUTH: switchyard answers it itself; nothing reaches the upstream;
 *   - SELECT of the db the shared upstream already uses (shared_db): a no-op there.
 * So SELECT of another db, MULTI/WATCH, blocking commands (BLPOP, XREAD BLOCK, WAIT),
 * (P|S)SUBSCRIBE, MONITOR, CLIENT anything (SETNAME, TRACKING, REPLY, ID, LIST, ...),
 * HELLO, SYNC/PSYNC, scripts, operators' commands and every unknown command pin.
 */
int resp_cmd_pins(const resp_cmd_t *c, const resp_req_t *r, int shared_db);

#endif /* SY_RESP_CMDTAB_H */
