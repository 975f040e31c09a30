/* redis_link: the one way the program talks to Redis. Both the Redis store and the
 * cluster go through a link: it finds the primary (DbServer, or the Sentinels), keeps
 * a pool of authenticated blocking connections to it, runs Lua scripts (EVALSHA, EVAL
 * when Redis lost its script cache), classifies error replies, rides out outages and
 * follows failovers.
 *
 * Timeouts: connecting gives up after REDIS_CONNECT_TIMEOUT_MS, every command after
 * REDIS_COMMAND_TIMEOUT_MS; a connection that timed out or failed is dropped (its
 * state is unknown). Nothing waits on Redis for ever.
 *
 * Outages: after a failure every call returns STORE_EUNAVAILABLE at once until the
 * next attempt is due (50 ms, doubling up to 250 ms: the cluster's heartbeat must not
 * miss a beat for long after an outage); the attempt renews every pooled
 * connection. With Sentinels, each attempt first asks them where the primary is now,
 * and a connection is used only once ROLE says it reached a primary; a -READONLY or
 * -MASTERDOWN reply counts as a failure (the primary moved), and a +switch-master
 * announcement from a Sentinel moves the link at once.
 *
 * Thread safety: every function may be called from any thread. */
#ifndef ZW_REDIS_LINK_H
#define ZW_REDIS_LINK_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define REDIS_CONNECT_TIMEOUT_MS 2000
#define REDIS_COMMAND_TIMEOUT_MS 5000
#define REDIS_MAX_SCRIPT_ARGS 16

struct redis_link_config {
    const char *server;            /* "host:port", "[v6]:port", "host", or a Unix socket path
                             ("/..." or "unix:/..."); NULL or "": localhost:6379.
                             Not used with Sentinels. */
    const char *user;              /* AUTH user (Redis 6 ACL), or NULL */
    const char *password;          /* AUTH password, or NULL: no AUTH */
    const char *sentinels;         /* "host:port,host:port,..." or NULL: no Sentinel */
    const char *master_name;       /* the primary's name at the Sentinels */
    const char *sentinel_password; /* AUTH at the Sentinels, or NULL */
    const char *log_name;          /* prefix of log lines, e.g. "redis" */
    struct store_log log;          /* where log lines go (store.h) */
};

struct redis_link;

/* A Lua script. Declare with REDIS_SCRIPT(src); its SHA1 is computed on first use. */
struct redis_script {
    const char *src;
    char sha[41];
};
#define REDIS_SCRIPT(source)                                                                       \
    {                                                                                              \
        .src = (source), .sha = ""                                                                 \
    }

/* Splits a DbServer value (see redis_link_config.server). On success *host is
 * malloc'd. Returns 0, or -1 for a malformed address or port. */
int redis_parse_server(const char *server, char **host, int *port, bool *unix_socket);

/* Opens a link and makes one connection, so that a wrong address, password or
 * Sentinel set is a start-up error: NULL with a reason in err (naming RedisSentinels
 * or RedisMasterName when those are at fault). */
struct redis_link *redis_link_open(const struct redis_link_config *cfg, char *err, size_t err_len);
void redis_link_close(struct redis_link *l);

/* The link's log (its configuration's), for its users' lines. */
const struct store_log *redis_link_log(const struct redis_link *l);

/* "host:port" of the primary as last found (for log lines). */
const char *redis_link_where(struct redis_link *l, char *buf, size_t len);

/* Bumped whenever the link lost its primary (a failed connection, a failover). A
 * long-lived connection made in an older epoch may be talking to a server that is no
 * longer the primary: drop it and make a new one. */
unsigned redis_link_epoch(struct redis_link *l);

/* ---- pooled connections ---- */

struct redis_conn {
    redisContext *ctx; /* NULL: not connected */
    unsigned epoch;
};

/* Takes a pooled connection to the primary (waits while all are in use). STORE_OK
 * with *out, or STORE_EUNAVAILABLE while Redis cannot be reached. */
int redis_link_get(struct redis_link *l, struct redis_conn **out);
/* Gives it back. `failed`: the connection failed (I/O error, timeout, protocol error):
 * it is dropped and the link goes down until the next attempt. */
void redis_link_put(struct redis_link *l, struct redis_conn *c, bool failed);

/* Appends an EVALSHA of s (EVAL with `eval`) to c's output, for a pipeline. Returns
 * 0, or -1 when out of memory (the connection is then unusable: put it back failed). */
int redis_conn_append_script(struct redis_conn *c, struct redis_script *s, bool eval, int nkeys,
                             int nargs, const char *const *args, const size_t *lens);
/* True for the reply that says Redis does not have the script: send it with EVAL. */
bool redis_reply_noscript(const redisReply *r);

/* Maps an error reply to a store code and logs it ("what: reply"): a busy, loading,
 * replica-less (min-replicas-to-write), read-only or primary-less Redis is
 * STORE_EUNAVAILABLE (for the last two the link also looks for the primary again),
 * anything else STORE_EIO. */
int redis_link_reply_error(struct redis_link *l, const redisReply *r, const char *what);

/* ---- one-call helpers, on a pooled connection ---- */

/* One command. STORE_OK with *out (free it with freeReplyObject), the code of an
 * error reply (logged), or STORE_EUNAVAILABLE when Redis is unreachable or the
 * connection failed (then it is unknown whether a write was applied). */
int redis_link_call(struct redis_link *l, int argc, const char *const *argv, const size_t *lens,
                    redisReply **out, const char *what);
/* One script, same contract. At most REDIS_MAX_SCRIPT_ARGS args (keys first). */
int redis_link_eval(struct redis_link *l, struct redis_script *s, int nkeys, int nargs,
                    const char *const *args, const size_t *lens, redisReply **out,
                    const char *what);

/* ---- dedicated connections (subscribers) ---- */

/* A new connection to the primary, authenticated, with the command timeout. NULL with
 * a reason in why. The caller owns it (redisFree). */
redisContext *redis_link_connect(struct redis_link *l, char *why, size_t why_len);

/* "<prefix><id>" in a new NUL-terminated buffer; NULL when out of memory. */
char *redis_key(const char *prefix, const void *id, size_t id_len, size_t *out_len);

#endif
