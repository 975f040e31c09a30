/* cluster_redis: the cluster's own Redis connections (a small blocking pool) and its
 * Lua scripts. Each script is one atomic step that both changes state and PUBLISHes
 * the change, so no server can see one without the other. Key layout: cluster.h. */
#include "cluster_internal.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "log.h"
#include "redis_store.h"

#define CONNECT_TIMEOUT_MS 2000
#define COMMAND_TIMEOUT_MS 5000
#define RETRY_MS 250

/* KEYS: doc, keys hash. ARGV: expected length, data, expiration, channel, header.
 * As the Redis store's append ({1, new length} / {0, length} / {-1, 0}), plus the
 * announcement of what was committed. */
static const char LUA_APPEND[] =
    "local n = redis.call('STRLEN', KEYS[1])\n"
    "if n == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end\n"
    "if n ~= tonumber(ARGV[1]) then return {0, n} end\n"
    "if #ARGV[2] > 0 then\n"
    "  n = redis.call('APPEND', KEYS[1], ARGV[2])\n"
    "  redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[2])\n"
    "end\n"
    "local exp = tonumber(ARGV[3])\n"
    "if exp > 0 then redis.call('EXPIRE', KEYS[1], exp) redis.call('EXPIRE', KEYS[2], exp) end\n"
    "return {1, n}\n";

/* KEYS: client-keys hash, server-docs set, servers set. ARGV: name, old version, new
 * version, value, server hex, client, channel, announcement, docId. 1 set, 0 refused.
 * A stored value is "<version>:<server>:<client>:<value>". */
static const char LUA_CKEY_SET[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local old = tonumber(ARGV[2])\n"
    "if cur then\n"
    "  if tonumber(string.match(cur, '^(%d+):')) ~= old then return 0 end\n"
    "elseif old ~= 0 then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ':' .. ARGV[5] .. ':' .. ARGV[6] .. ':' .. ARGV[4])\n"
    "redis.call('SADD', KEYS[2], ARGV[9])\n"
    "redis.call('SADD', KEYS[3], ARGV[5])\n"
    "redis.call('PUBLISH', ARGV[7], ARGV[8])\n"
    "return 1\n";

/* Shared by the two removals below: deletes the keys of server ARGV[1] (client
 * ARGV[2], or any when empty) from hash KEYS[1], announcing each as empty with
 * version + 1 on ARGV[3] (header ARGV[4]). */
#define LUA_DROP_KEYS                                                                     \
    "local removed = 0\n"                                                                 \
    "local h = redis.call('HGETALL', KEYS[1])\n"                                          \
    "for i = 1, #h, 2 do\n"                                                               \
    "  local v, s, c = string.match(h[i + 1], '^(%d+):(%x+):(%d+):')\n"                   \
    "  if s == ARGV[1] and (ARGV[2] == '' or c == ARGV[2]) then\n"                        \
    "    redis.call('HDEL', KEYS[1], h[i])\n"                                             \
    "    local nv = (tonumber(v) + 1) % 4294967296\n"                                     \
    "    redis.call('PUBLISH', ARGV[3], ARGV[4] .. struct.pack('>I4I4', nv, #h[i]) .. h[i])\n" \
    "    removed = removed + 1\n"                                                         \
    "  end\n"                                                                             \
    "end\n"

/* A departed client's keys. KEYS: client-keys hash, server-docs set, members set.
 * ARGV 1-4 as above, 5: docId. Returns how many went. When the server has no key
 * left there and is not a member, the document leaves its server-docs set (which
 * exists for the clean-up after a crash, and so must not grow for ever). */
static const char LUA_CKEY_DROP[] =
    LUA_DROP_KEYS
    "for _, v in ipairs(redis.call('HVALS', KEYS[1])) do\n"
    "  if string.match(v, '^%d+:(%x+):') == ARGV[1] then return removed end\n"
    "end\n"
    "if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[5]) end\n"
    "return removed\n";

/* KEYS: members set, server-docs set, servers set. ARGV: server hex, docId, global
 * channel, 'J' announcement. Returns 1 when this made the document active anywhere. */
static const char LUA_MEMBER_ADD[] =
    "local added = redis.call('SADD', KEYS[1], ARGV[1])\n"
    "redis.call('SADD', KEYS[2], ARGV[2])\n"
    "redis.call('SADD', KEYS[3], ARGV[1])\n"
    "if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then\n"
    "  redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "  return 1\n"
    "end\n"
    "return 0\n";

/* KEYS: members set, server-docs set, client-keys hash. ARGV: server hex, docId.
 * Returns 1 when this left the document with no server at all (idle). */
static const char LUA_MEMBER_DEL[] =
    "local was = redis.call('SREM', KEYS[1], ARGV[1])\n"
    "local keep = false\n" /* still owns keys there: the reaper must find them */
    "for _, v in ipairs(redis.call('HVALS', KEYS[3])) do\n"
    "  if string.match(v, '^%d+:(%x+):') == ARGV[1] then keep = true break end\n"
    "end\n"
    "if not keep then redis.call('SREM', KEYS[2], ARGV[2]) end\n"
    "if was == 1 and redis.call('SCARD', KEYS[1]) == 0 then return 1 end\n"
    "return 0\n";

/* A dead server's share of one document. KEYS: client-keys hash, members set,
 * server-docs set of the dead server, its liveness key. ARGV: dead server hex, ''
 * (any client), channel, header, docId. Returns {-1, 0} when the server is alive after
 * all, else {keys removed, 1 when the document is now idle everywhere}. Atomic, so
 * when several servers reap at once, exactly one announces each removal. */
static const char LUA_REAP[] =
    "if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0} end\n"
    LUA_DROP_KEYS
    "local was = redis.call('SREM', KEYS[2], ARGV[1])\n"
    "redis.call('SREM', KEYS[3], ARGV[5])\n"
    "local idle = 0\n"
    "if was == 1 and redis.call('SCARD', KEYS[2]) == 0 then idle = 1 end\n"
    "return {removed, idle}\n";

static const char *const SCRIPTS[CLS_COUNT] = {
    [CLS_APPEND] = LUA_APPEND,         [CLS_CKEY_SET] = LUA_CKEY_SET,
    [CLS_CKEY_DROP] = LUA_CKEY_DROP,   [CLS_MEMBER_ADD] = LUA_MEMBER_ADD,
    [CLS_MEMBER_DEL] = LUA_MEMBER_DEL, [CLS_REAP] = LUA_REAP,
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(int ms) { return (struct timeval){ms / 1000, (ms % 1000) * 1000}; }

int clr_init(struct cl_redis *r, const struct store_config *sc, char *err, size_t err_len)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    if (redis_parse_server(sc->server, &r->host, &r->port, &r->unix_socket)) {
        snprintf(err, err_len, "cluster: bad Redis address '%s'", sc->server ? sc->server : "");
        return -1;
    }
    r->user = sc->user && *sc->user ? strdup(sc->user) : NULL;
    r->password = sc->password && *sc->password ? strdup(sc->password) : NULL;
    for (int i = 0; i < CLS_COUNT; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)SCRIPTS[i], strlen(SCRIPTS[i]), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++) sprintf(r->sha[i] + 2 * j, "%02x", md[j]);
    }
    char why[160];
    redisContext *c = clr_connect(r, why, sizeof why);
    if (!c) {
        snprintf(err, err_len, "cluster: cannot connect to Redis: %s", why);
        return -1;
    }
    r->conns[0] = c;
    return 0;
}

void clr_free(struct cl_redis *r)
{
    for (int i = 0; i < CL_POOL; i++)
        if (r->conns[i]) redisFree(r->conns[i]);
    free(r->host);
    free(r->user);
    free(r->password);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
}

redisContext *clr_connect(struct cl_redis *r, char *why, size_t why_len)
{
    redisContext *c = r->unix_socket ? redisConnectUnixWithTimeout(r->host, ms_tv(CONNECT_TIMEOUT_MS))
                                     : redisConnectWithTimeout(r->host, r->port, ms_tv(CONNECT_TIMEOUT_MS));
    if (!c) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    redisReply *rep = NULL;
    if (c->err) goto fail;
    /* A hung Redis must not hang a session thread for ever. */
    if (redisSetTimeout(c, ms_tv(COMMAND_TIMEOUT_MS)) != REDIS_OK) goto fail;
    redisEnableKeepAlive(c);
    if (r->password) {
        rep = r->user ? redisCommand(c, "AUTH %s %s", r->user, r->password)
                      : redisCommand(c, "AUTH %s", r->password);
        if (!rep) goto fail;
        if (rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "AUTH: %.*s", (int)rep->len, rep->str);
            freeReplyObject(rep);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    return c;
fail:
    snprintf(why, why_len, "%s", c->errstr[0] ? c->errstr : "connection failed");
    redisFree(c);
    return NULL;
}

/* Takes a pool slot, connected. Returns its index, or -1 when Redis is unreachable. */
static int slot_get(struct cl_redis *r)
{
    pthread_mutex_lock(&r->lock);
    int i;
    for (;;) {
        for (i = 0; i < CL_POOL && r->busy[i]; i++) continue;
        if (i < CL_POOL) break;
        pthread_cond_wait(&r->cond, &r->lock);
    }
    r->busy[i] = true;
    bool wait = !r->conns[i] && now_ms() < r->retry_after_ms;
    pthread_mutex_unlock(&r->lock);
    if (r->conns[i]) return i;
    char why[160];
    redisContext *c = wait ? NULL : clr_connect(r, why, sizeof why);
    pthread_mutex_lock(&r->lock);
    if (c) {
        r->conns[i] = c;
    } else {
        if (!wait) {
            log_warn("cluster: Redis %s: %s", r->host, why);
            r->retry_after_ms = now_ms() + RETRY_MS;
        }
        r->busy[i] = false;
        pthread_cond_signal(&r->cond);
        i = -1;
    }
    pthread_mutex_unlock(&r->lock);
    return i;
}

/* Gives the slot back; a connection that failed is dropped (its state is unknown). */
static void slot_put(struct cl_redis *r, int i, bool failed)
{
    pthread_mutex_lock(&r->lock);
    if (failed) {
        log_warn("cluster: Redis %s: %s", r->host, r->conns[i]->errstr[0] ? r->conns[i]->errstr : "connection lost");
        redisFree(r->conns[i]);
        r->conns[i] = NULL;
    }
    r->busy[i] = false;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

redisReply *clr_command(struct cl_redis *r, int argc, const char **argv, const size_t *lens)
{
    int i = slot_get(r);
    if (i < 0) return NULL;
    redisReply *rep = redisCommandArgv(r->conns[i], argc, argv, lens);
    slot_put(r, i, rep == NULL);
    return rep;
}

#define MAX_SCRIPT_ARGS 12

redisReply *clr_script(struct cl_redis *r, enum cl_script s, int nkeys, int nargs,
                       const char **args, const size_t *lens)
{
    const char *argv[MAX_SCRIPT_ARGS + 3];
    size_t argl[MAX_SCRIPT_ARGS + 3];
    char nk[8];
    if (nargs > MAX_SCRIPT_ARGS) return NULL;
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[0] = "EVALSHA", argl[0] = 7;
    argv[1] = r->sha[s], argl[1] = 40;
    argv[2] = nk, argl[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) argv[3 + i] = args[i], argl[3 + i] = lens[i];
    redisReply *rep = clr_command(r, nargs + 3, argv, argl);
    if (rep && rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8)) {
        /* Redis lost its script cache (restart): EVAL loads it again. */
        freeReplyObject(rep);
        argv[0] = "EVAL", argl[0] = 4;
        argv[1] = SCRIPTS[s], argl[1] = strlen(SCRIPTS[s]);
        rep = clr_command(r, nargs + 3, argv, argl);
    }
    return rep;
}
