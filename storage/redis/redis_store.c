/* redis_store: the Database=redis backend, on the reference server's own key layout
 * (docs/protocol.md, Storage layouts) so that both servers can share one Redis:
 *
 *   zwibbler:<docId>                  string: the document bytes
 *   zwibbler-keys:<docId>             hash: key name -> {"Version":n,"Name":"…","Value":"…"}
 *   zwibbler-token:{token}:<token>    hash: docID, userID, permissions; TTL at expiry
 *   zwibbler-user:<userId>            set: that user's token hash names
 *
 * Every check-then-write (compare-length-and-append, compare-version key set, token
 * add, ...) is one Lua script, run by EVALSHA (EVAL when the server lost its script
 * cache): atomic against every other client of the same Redis, in one round trip.
 * Appends from many threads are sent by one appender thread as a pipeline (one round
 * trip, and with appendfsync=always one fsync, for all of them); each keeps its own
 * length check and result.
 *
 * Connections: a small pool of blocking hiredis contexts. When Redis goes away every
 * call returns STORE_EUNAVAILABLE (the cause logged once); later calls reconnect, with
 * a growing delay between attempts, and all pooled connections are renewed. Opening
 * the store sets SIGPIPE to SIG_IGN when it was left at its default (see open).
 */
#include "redis_store.h"
#include "store.h"
#include "store_log.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define POOL_SIZE 8
#define CONNECT_TIMEOUT_MS 2000
#define COMMAND_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define MAX_PIPELINE 256
#define SCAN_COUNT "100"
#define RC_PENDING 1 /* an append not answered yet (store codes are <= 0) */

/* ---- Lua scripts ----------------------------------------------------------------- */

/* KEYS: doc, keys hash. ARGV: expected length, data, expiration seconds (0 = none).
 * Returns {1, new length}, {0, current length} on mismatch, {-1, 0} when missing. */
static const char LUA_APPEND[] =
    "local n = redis.call('STRLEN', KEYS[1])\n"
    "if n == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end\n"
    "if n ~= tonumber(ARGV[1]) then return {0, n} end\n"
    "if #ARGV[2] > 0 then n = redis.call('APPEND', KEYS[1], ARGV[2]) end\n"
    "local exp = tonumber(ARGV[3])\n"
    "if exp > 0 then redis.call('EXPIRE', KEYS[1], exp) redis.call('EXPIRE', KEYS[2], exp) end\n"
    "return {1, n}\n";

/* KEYS: doc, keys hash. ARGV: expiration. Returns the length, -1 when missing. */
static const char LUA_LENGTH[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    "local exp = tonumber(ARGV[1])\n"
    "if exp > 0 then redis.call('EXPIRE', KEYS[1], exp) redis.call('EXPIRE', KEYS[2], exp) end\n"
    "return redis.call('STRLEN', KEYS[1])\n";

/* KEYS: doc, keys hash. ARGV: offset, expiration. Returns {length, bytes from offset},
 * {-1} when missing, {-2, length} when offset > length. */
static const char LUA_READ[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    "local n = redis.call('STRLEN', KEYS[1])\n"
    "local off = tonumber(ARGV[1])\n"
    "local exp = tonumber(ARGV[2])\n"
    "if exp > 0 then redis.call('EXPIRE', KEYS[1], exp) redis.call('EXPIRE', KEYS[2], exp) end\n"
    "if off > n then return {-2, n} end\n"
    "if off == n then return {n, ''} end\n"
    "return {n, redis.call('GETRANGE', KEYS[1], off, -1)}\n";

/* KEYS: doc, keys hash. Returns 1 when the document existed. */
static const char LUA_DELETE[] =
    "local n = redis.call('DEL', KEYS[1])\n"
    "redis.call('DEL', KEYS[2])\n"
    "return n\n";

/* KEYS: keys hash. ARGV: name, old version, new JSON, expiration. 1 set, 0 mismatch.
 * The stored version is read from the JSON, as the reference writes it. */
static const char LUA_KEY_SET[] =
    "local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "local old = tonumber(ARGV[2])\n"
    "if cur then\n"
    "  local ok, obj = pcall(cjson.decode, cur)\n"
    "  if not ok or type(obj) ~= 'table' then return redis.error_reply('ERR bad key JSON') end\n"
    "  local v = obj.Version or obj.version or 0\n"
    "  if tonumber(v) ~= old then return 0 end\n"
    "elseif old ~= 0 then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])\n"
    "local exp = tonumber(ARGV[4])\n"
    "if exp > 0 then redis.call('EXPIRE', KEYS[1], exp) end\n"
    "return 1\n";

/* KEYS: token hash, user set. ARGV: docID, userID, permissions, expiry (Unix s).
 * 1 added, 0 exists. A token hash exists only until its TTL: an expired one is gone.
 * A token already expired is deleted by EXPIREAT at once, and not listed. */
static const char LUA_TOKEN_ADD[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'userID', ARGV[2], 'docID', ARGV[1], 'permissions', ARGV[3])\n"
    "redis.call('EXPIREAT', KEYS[1], ARGV[4])\n"
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SADD', KEYS[2], KEYS[1]) end\n"
    "return 1\n";

/* KEYS: token hash. Returns nil, or {fields, pttl, server seconds, server micros}:
 * expiry is computed on the server's clock, which is the one that applies the TTL. */
static const char LUA_TOKEN_GET[] =
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "if #h == 0 then return false end\n"
    "local t = redis.call('TIME')\n"
    "return {h, redis.call('PTTL', KEYS[1]), tonumber(t[1]), tonumber(t[2])}\n";

/* KEYS: user set. ARGV: permissions, user id. Sets them on every live token of the
 * user. A set may still name a token that expired and was added again for another
 * user: the token's own userID decides. */
static const char LUA_USER_UPDATE[] =
    "local n = 0\n"
    "for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('HGET', t, 'userID') == ARGV[2] then\n"
    "    redis.call('HSET', t, 'permissions', ARGV[1]) n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS: user set. Drops expired tokens from it (Redis deletes the set when empty). */
static const char LUA_USER_CLEAN[] =
    "local n = 0\n"
    "for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('EXISTS', t) == 0 then redis.call('SREM', KEYS[1], t) n = n + 1 end\n"
    "end\n"
    "return n\n";

enum {
    SC_APPEND,
    SC_LENGTH,
    SC_READ,
    SC_DELETE,
    SC_KEY_SET,
    SC_TOKEN_ADD,
    SC_TOKEN_GET,
    SC_USER_UPDATE,
    SC_USER_CLEAN,
    SC_COUNT
};

static const char *const SCRIPTS[SC_COUNT] = {
    [SC_APPEND] = LUA_APPEND,         [SC_LENGTH] = LUA_LENGTH,
    [SC_READ] = LUA_READ,             [SC_DELETE] = LUA_DELETE,
    [SC_KEY_SET] = LUA_KEY_SET,       [SC_TOKEN_ADD] = LUA_TOKEN_ADD,
    [SC_TOKEN_GET] = LUA_TOKEN_GET,   [SC_USER_UPDATE] = LUA_USER_UPDATE,
    [SC_USER_CLEAN] = LUA_USER_CLEAN,
};

/* ---- Store state ------------------------------------------------------------------- */

struct rd_conn {
    redisContext *ctx; /* NULL: not connected */
    unsigned gen;      /* health generation it was made in; older ones are renewed */
};

/* A queued append, waiting in its caller's stack frame. */
struct rd_append {
    struct rd_append *next;
    const char *id;
    size_t id_len;
    uint64_t expected;
    const uint8_t *data;
    size_t len;
    uint64_t new_len;
    int rc;
    bool done;
};

struct rd_store {
    struct store base;
    char *host; /* or a Unix socket path when unix is set */
    int port;
    bool unix;
    char *user, *password;
    int64_t expiration;
    struct store_log log;

    pthread_mutex_t lock; /* pool, health, scripts */
    pthread_cond_t pool_cond;
    struct rd_conn conns[POOL_SIZE];
    int free_conns[POOL_SIZE];
    int nfree;

    bool down;             /* the last attempt failed */
    unsigned gen;          /* bumped at each loss: connections of older gens are dropped */
    int64_t next_try_ms;   /* while down, no connect attempt before this */
    int backoff_ms;
    char sha[SC_COUNT][41]; /* "" until loaded */

    pthread_mutex_t qlock;
    pthread_cond_t qcond, donecond;
    struct rd_append *head, *tail;
    bool stopping;
    pthread_t appender;
    bool appender_started;
};

static const struct store_methods rd_methods;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_tv(int ms) { return (struct timeval){ms / 1000, (ms % 1000) * 1000}; }

/* "<prefix><id>" in a new buffer; NULL when out of memory. */
static char *make_key(const char *prefix, const void *id, size_t id_len, size_t *out_len)
{
    size_t plen = strlen(prefix);
    char *k = malloc(plen + id_len + 1);
    if (!k) return NULL;
    memcpy(k, prefix, plen);
    if (id_len) memcpy(k + plen, id, id_len);
    k[plen + id_len] = 0;
    *out_len = plen + id_len;
    return k;
}

/* ---- Connections ----------------------------------------------------------------- */

/* Records that Redis is unreachable. Logs only at the transition so that an outage
 * does not flood the log. */
static void mark_down(struct rd_store *rd, const char *why)
{
    pthread_mutex_lock(&rd->lock);
    if (!rd->down) {
        store_log_error(&rd->log, "redis: %s: unavailable (%s); will reconnect", rd->host, why);
        rd->down = true;
        rd->gen++;
        rd->backoff_ms = BACKOFF_MIN_MS;
        rd->next_try_ms = now_ms(); /* the first retry may be immediate */
    } else {
        rd->next_try_ms = now_ms() + rd->backoff_ms;
        rd->backoff_ms = rd->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rd->backoff_ms * 2;
    }
    pthread_mutex_unlock(&rd->lock);
}

/* Drops a connection whose state is unknown after an I/O or protocol failure. */
static void conn_lost(struct rd_store *rd, struct rd_conn *c)
{
    char why[160];
    snprintf(why, sizeof why, "%s", c->ctx && c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
    if (c->ctx) redisFree(c->ctx);
    c->ctx = NULL;
    mark_down(rd, why);
}

/* Maps an error reply to a store code. Redis being busy, loading or read-only is a
 * passing state; anything else is a real failure. */
static int reply_error(struct rd_store *rd, const redisReply *r, const char *what)
{
    static const char *const transient[] = {"LOADING", "BUSY", "READONLY", "MASTERDOWN",
                                            "TRYAGAIN", "CLUSTERDOWN", "NOAUTH"};
    store_log_error(&rd->log, "redis: %s: %.*s", what, (int)r->len, r->str);
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++)
        if (r->len >= strlen(transient[i]) && !strncmp(r->str, transient[i], strlen(transient[i])))
            return STORE_EUNAVAILABLE;
    return STORE_EIO;
}

/* Loads every script once (the SHA1s never change). Called on a fresh connection.
 * Returns 0, or -1 when the connection failed. */
static int load_scripts(struct rd_store *rd, redisContext *ctx)
{
    pthread_mutex_lock(&rd->lock);
    bool loaded = rd->sha[SC_COUNT - 1][0] != 0;
    pthread_mutex_unlock(&rd->lock);
    if (loaded) return 0;
    for (int i = 0; i < SC_COUNT; i++) {
        redisReply *r = redisCommand(ctx, "SCRIPT LOAD %s", SCRIPTS[i]);
        if (!r) return -1;
        if (r->type == REDIS_REPLY_STRING && r->len == 40) {
            pthread_mutex_lock(&rd->lock);
            memcpy(rd->sha[i], r->str, 40);
            rd->sha[i][40] = 0;
            pthread_mutex_unlock(&rd->lock);
        } else if (r->type == REDIS_REPLY_ERROR) {
            store_log_warn(&rd->log, "redis: SCRIPT LOAD: %.*s (using EVAL)", (int)r->len, r->str);
        }
        freeReplyObject(r);
    }
    return 0;
}

/* Connects, authenticates and loads the scripts. Returns NULL with a reason. */
static redisContext *connect_ctx(struct rd_store *rd, char *why, size_t why_len)
{
    redisContext *ctx = rd->unix ? redisConnectUnixWithTimeout(rd->host, ms_tv(CONNECT_TIMEOUT_MS))
                                 : redisConnectWithTimeout(rd->host, rd->port,
                                                           ms_tv(CONNECT_TIMEOUT_MS));
    redisReply *r = NULL;
    if (!ctx) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    if (ctx->err) goto ioerr;
    /* A hung server must not hang our threads forever: a call that times out fails
     * and its connection is dropped. */
    if (redisSetTimeout(ctx, ms_tv(COMMAND_TIMEOUT_MS)) != REDIS_OK) goto ioerr;
    redisEnableKeepAlive(ctx);
    if (rd->password && *rd->password) {
        if (rd->user && *rd->user)
            r = redisCommand(ctx, "AUTH %s %s", rd->user, rd->password);
        else
            r = redisCommand(ctx, "AUTH %s", rd->password);
        if (!r) goto ioerr;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "AUTH: %.*s", (int)r->len, r->str);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    /* PING proves the session is usable (e.g. that no password was needed). */
    if (!(r = redisCommand(ctx, "PING"))) goto ioerr;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, why_len, "%.*s", (int)r->len, r->str);
        goto fail;
    }
    freeReplyObject(r);
    r = NULL;
    if (load_scripts(rd, ctx) != 0) goto ioerr;
    return ctx;
ioerr:
    snprintf(why, why_len, "%s", ctx->errstr[0] ? ctx->errstr : "connection failed");
fail:
    if (r) freeReplyObject(r);
    redisFree(ctx);
    return NULL;
}

/* Takes a pooled connection, connected. STORE_EUNAVAILABLE while Redis is down and
 * the next attempt is not due yet, or when the attempt fails. */
static int conn_get(struct rd_store *rd, struct rd_conn **out)
{
    pthread_mutex_lock(&rd->lock);
    while (rd->nfree == 0) pthread_cond_wait(&rd->pool_cond, &rd->lock);
    struct rd_conn *c = &rd->conns[rd->free_conns[--rd->nfree]];
    bool stale = c->ctx && c->gen != rd->gen;
    bool wait = rd->down && now_ms() < rd->next_try_ms;
    pthread_mutex_unlock(&rd->lock);

    if (stale) { /* made before the last outage: its socket is probably dead */
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    if (!c->ctx) {
        if (wait) goto unavailable;
        char why[160];
        redisContext *ctx = connect_ctx(rd, why, sizeof why);
        if (!ctx) {
            mark_down(rd, why);
            goto unavailable;
        }
        pthread_mutex_lock(&rd->lock);
        if (rd->down) store_log_info(&rd->log, "redis: %s: connected again", rd->host);
        rd->down = false;
        rd->backoff_ms = BACKOFF_MIN_MS;
        c->ctx = ctx;
        c->gen = rd->gen;
        pthread_mutex_unlock(&rd->lock);
    }
    *out = c;
    return STORE_OK;
unavailable:
    pthread_mutex_lock(&rd->lock);
    rd->free_conns[rd->nfree++] = (int)(c - rd->conns);
    pthread_cond_signal(&rd->pool_cond);
    pthread_mutex_unlock(&rd->lock);
    return STORE_EUNAVAILABLE;
}

static void conn_put(struct rd_store *rd, struct rd_conn *c)
{
    pthread_mutex_lock(&rd->lock);
    rd->free_conns[rd->nfree++] = (int)(c - rd->conns);
    pthread_cond_signal(&rd->pool_cond);
    pthread_mutex_unlock(&rd->lock);
}

/* ---- Commands ------------------------------------------------------------------- */

#define MAX_ARGS 8

/* Fills argv for EVALSHA (or EVAL when the SHA is unknown or evalsha is false). */
static int script_argv(struct rd_store *rd, int script, bool evalsha, int nkeys,
                       const char **args, const size_t *lens, int nargs, const char **argv,
                       size_t *argvlen, char *sha, char *nk)
{
    pthread_mutex_lock(&rd->lock);
    memcpy(sha, rd->sha[script], 41);
    pthread_mutex_unlock(&rd->lock);
    int argc = 0;
    if (evalsha && sha[0]) {
        argv[argc] = "EVALSHA", argvlen[argc++] = 7;
        argv[argc] = sha, argvlen[argc++] = 40;
    } else {
        argv[argc] = "EVAL", argvlen[argc++] = 4;
        argv[argc] = SCRIPTS[script], argvlen[argc++] = strlen(SCRIPTS[script]);
    }
    snprintf(nk, 8, "%d", nkeys);
    argv[argc] = nk, argvlen[argc++] = strlen(nk);
    for (int i = 0; i < nargs; i++) argv[argc] = args[i], argvlen[argc++] = lens[i];
    return argc;
}

static bool is_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && !strncmp(r->str, "NOSCRIPT", 8);
}

/* Runs one script on c. Returns the reply (free it), or NULL when the connection
 * failed (it is then dropped). */
static redisReply *run_script(struct rd_store *rd, struct rd_conn *c, int script, int nkeys,
                              const char **args, const size_t *lens, int nargs)
{
    const char *argv[MAX_ARGS + 3];
    size_t argvlen[MAX_ARGS + 3];
    char sha[41], nk[8];
    int argc = script_argv(rd, script, true, nkeys, args, lens, nargs, argv, argvlen, sha, nk);
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, argvlen);
    if (is_noscript(r)) { /* the server's script cache was flushed (restart, failover) */
        freeReplyObject(r);
        argc = script_argv(rd, script, false, nkeys, args, lens, nargs, argv, argvlen, sha, nk);
        r = redisCommandArgv(c->ctx, argc, argv, argvlen);
    }
    if (!r) conn_lost(rd, c);
    return r;
}

/* Takes a connection, runs a script, gives the connection back. Returns STORE_OK
 * with *out set (free it), or an error (logged). */
static int call_script(struct rd_store *rd, int script, int nkeys, const char **args,
                       const size_t *lens, int nargs, redisReply **out, const char *what)
{
    struct rd_conn *c;
    int rc = conn_get(rd, &c);
    if (rc != STORE_OK) return rc;
    redisReply *r = run_script(rd, c, script, nkeys, args, lens, nargs);
    conn_put(rd, c);
    if (!r) return STORE_EUNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rd, r, what);
        freeReplyObject(r);
        return rc;
    }
    *out = r;
    return STORE_OK;
}

/* Plain command, same contract as call_script. */
static int call_argv(struct rd_store *rd, int argc, const char **argv, const size_t *lens,
                     redisReply **out, const char *what)
{
    struct rd_conn *c;
    int rc = conn_get(rd, &c);
    if (rc != STORE_OK) return rc;
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, lens);
    if (!r) conn_lost(rd, c);
    conn_put(rd, c);
    if (!r) return STORE_EUNAVAILABLE;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rd, r, what);
        freeReplyObject(r);
        return rc;
    }
    *out = r;
    return STORE_OK;
}

static bool int_elem(const redisReply *r, size_t i, long long *v)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements <= i || r->element[i]->type != REDIS_REPLY_INTEGER)
        return false;
    *v = r->element[i]->integer;
    return true;
}

static int bad_reply(struct rd_store *rd, redisReply *r, const char *what)
{
    store_log_error(&rd->log, "redis: %s: unexpected reply type %d", what, r ? r->type : -1);
    if (r) freeReplyObject(r);
    return STORE_EIO;
}

/* ---- Key JSON ------------------------------------------------------------------- */

/* Go's encoding/json string escaping: ", \, control characters, <, >, & and U+2028/9
 * escaped. Go would replace invalid UTF-8 with U+FFFD; we keep such bytes as they are
 * so that a value round-trips through our own server unchanged. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

static char *json_string(char *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (l == 3 && s[i] == 0xe2 && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9)) {
                memcpy(o, s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
                o += 6;
            } else if (l) {
                memcpy(o, s + i, l);
                o += l;
            } else {
                *o++ = (char)c;
                l = 1;
            }
            i += l;
            continue;
        }
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\', *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\', *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\', *o++ = 't';
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
        i++;
    }
    *o++ = '"';
    return o;
}

/* {"Version":n,"Name":"…","Value":"…"}, as the reference's json.Marshal(Key). */
static char *key_json(uint32_t version, const uint8_t *name, size_t name_len,
                      const uint8_t *value, size_t value_len, size_t *out_len)
{
    char *buf = malloc(64 + 6 * (name_len + value_len));
    if (!buf) return NULL;
    char *o = buf + sprintf(buf, "{\"Version\":%" PRIu32 ",\"Name\":", version);
    o = json_string(o, name, name_len);
    memcpy(o, ",\"Value\":", 9);
    o = json_string(o + 9, value, value_len);
    *o++ = '}';
    *o = 0;
    *out_len = (size_t)(o - buf);
    return buf;
}

/* A small JSON reader for the key objects: cJSON cannot return strings holding NUL,
 * which a key value may. Field names match case-insensitively, as Go's decoder does. */
struct jr {
    const char *p, *end;
};

static void jr_ws(struct jr *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool jr_hex4(struct jr *j, uint32_t *v)
{
    if (j->end - j->p < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(j->p[i]);
        if (h < 0) return false;
        *v = *v << 4 | (uint32_t)h;
    }
    j->p += 4;
    return true;
}

static char *put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | cp >> 12);
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | cp >> 18);
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* Reads a string at j->p (the opening quote). With out non-NULL, the decoded bytes go
 * there (the caller sized it: decoded is never longer than encoded). */
static bool jr_string(struct jr *j, char *out, size_t *out_len)
{
    if (j->p >= j->end || *j->p != '"') return false;
    j->p++;
    char *o = out;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') {
            if (o) *o++ = c;
            continue;
        }
        if (j->p >= j->end) return false;
        c = *j->p++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            if (o) *o++ = map[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') return false;
        uint32_t cp, lo;
        if (!jr_hex4(j, &cp)) return false;
        if (cp >= 0xd800 && cp <= 0xdbff && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u') {
            struct jr save = *j;
            j->p += 2;
            if (jr_hex4(j, &lo) && lo >= 0xdc00 && lo <= 0xdfff)
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            else
                *j = save, cp = 0xfffd;
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd; /* lone surrogate, as Go decodes it */
        }
        if (o) o = put_utf8(o, cp);
    }
    if (j->p >= j->end) return false;
    j->p++;
    if (out_len) *out_len = o ? (size_t)(o - out) : 0;
    return true;
}

static bool jr_skip(struct jr *j, int depth);

static bool jr_skip_container(struct jr *j, int depth, char close)
{
    j->p++;
    jr_ws(j);
    if (j->p < j->end && *j->p == close) return j->p++, true;
    for (;;) {
        if (close == '}') {
            jr_ws(j);
            if (!jr_string(j, NULL, NULL)) return false;
            jr_ws(j);
            if (j->p >= j->end || *j->p++ != ':') return false;
        }
        if (!jr_skip(j, depth + 1)) return false;
        jr_ws(j);
        if (j->p >= j->end) return false;
        char c = *j->p++;
        if (c == close) return true;
        if (c != ',') return false;
    }
}

static bool jr_skip(struct jr *j, int depth)
{
    jr_ws(j);
    if (j->p >= j->end || depth > 32) return false;
    char c = *j->p;
    if (c == '"') return jr_string(j, NULL, NULL);
    if (c == '{') return jr_skip_container(j, depth, '}');
    if (c == '[') return jr_skip_container(j, depth, ']');
    const char *start = j->p;
    while (j->p < j->end && (strchr("+-.eE", *j->p) || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z')))
        j->p++;
    return j->p > start;
}

/* Parses a stored key. On success *value is malloc'd (free it). */
static bool parse_key_json(const char *s, size_t n, uint32_t *version, char **value, size_t *value_len)
{
    struct jr j = {s, s + n};
    char *val = NULL;
    size_t vlen = 0;
    long long ver = 0;
    jr_ws(&j);
    if (j.p >= j.end || *j.p++ != '{') return false;
    jr_ws(&j);
    if (j.p < j.end && *j.p == '}') goto done;
    for (;;) {
        jr_ws(&j);
        const char *kstart = j.p + 1;
        if (!jr_string(&j, NULL, NULL)) goto fail;
        size_t klen = (size_t)(j.p - kstart - 1);
        jr_ws(&j);
        if (j.p >= j.end || *j.p++ != ':') goto fail;
        jr_ws(&j);
        if (klen == 7 && !strncasecmp(kstart, "Version", 7) && j.p < j.end && *j.p != '"' &&
            *j.p != 'n') {
            char *endp;
            char num[32];
            size_t l = 0;
            while (j.p + l < j.end && l < sizeof num - 1 && strchr("+-.eE0123456789", j.p[l])) l++;
            memcpy(num, j.p, l);
            num[l] = 0;
            ver = (long long)strtod(num, &endp);
            if (endp == num) goto fail;
            j.p += l;
        } else if (klen == 5 && !strncasecmp(kstart, "Value", 5) && j.p < j.end && *j.p == '"') {
            free(val);
            if (!(val = malloc((size_t)(j.end - j.p) + 1))) goto fail;
            if (!jr_string(&j, val, &vlen)) goto fail;
        } else if (!jr_skip(&j, 0)) {
            goto fail;
        }
        jr_ws(&j);
        if (j.p >= j.end) goto fail;
        char c = *j.p++;
        if (c == '}') break;
        if (c != ',') goto fail;
    }
done:
    if (!val && !(val = malloc(1))) return false;
    *version = (uint32_t)ver;
    *value = val;
    *value_len = vlen;
    return true;
fail:
    free(val);
    return false;
}

/* ---- Appender: pipelined compare-and-append ------------------------------------ */

static void run_appends(struct rd_store *rd, struct rd_append *batch)
{
    struct rd_append *ops[MAX_PIPELINE];
    char *keys[MAX_PIPELINE][2];
    size_t klen[MAX_PIPELINE][2];
    char explen[MAX_PIPELINE][24];
    char expstr[24];
    size_t n = 0;
    struct rd_conn *c = NULL;
    snprintf(expstr, sizeof expstr, "%" PRId64, rd->expiration > 0 ? rd->expiration : 0);

    for (struct rd_append *a = batch; a && n < MAX_PIPELINE; a = a->next) {
        ops[n] = a;
        keys[n][0] = make_key("zwibbler:", a->id, a->id_len, &klen[n][0]);
        keys[n][1] = make_key("zwibbler-keys:", a->id, a->id_len, &klen[n][1]);
        snprintf(explen[n], sizeof explen[n], "%" PRIu64, a->expected);
        a->rc = keys[n][0] && keys[n][1] ? RC_PENDING : STORE_ENOMEM;
        n++;
    }
    int rc = conn_get(rd, &c);
    if (rc != STORE_OK) goto done;

    /* Send every append first, then read every reply: one round trip for all. Redis
     * runs them in this order, each checking its own expected length. */
    bool evalsha = true;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t sent = 0;
        bool noscript = false;
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->rc != RC_PENDING) continue; /* answered, or no memory */
            const char *args[5] = {keys[i][0], keys[i][1], explen[i],
                                   ops[i]->len ? (const char *)ops[i]->data : "", expstr};
            size_t lens[5] = {klen[i][0], klen[i][1], strlen(explen[i]), ops[i]->len, strlen(expstr)};
            const char *argv[MAX_ARGS + 3];
            size_t argvlen[MAX_ARGS + 3];
            char sha[41], nk[8];
            int argc = script_argv(rd, SC_APPEND, evalsha, 2, args, lens, 5, argv, argvlen, sha, nk);
            if (redisAppendCommandArgv(c->ctx, argc, argv, argvlen) != REDIS_OK) goto lost;
            sent++;
        }
        for (size_t i = 0; i < n && sent; i++) {
            if (ops[i]->rc != RC_PENDING) continue;
            redisReply *r = NULL;
            if (redisGetReply(c->ctx, (void **)&r) != REDIS_OK || !r) goto lost;
            sent--;
            long long status, len;
            if (is_noscript(r)) {
                noscript = true; /* not run: stays pending for the EVAL round */
            } else if (r->type == REDIS_REPLY_ERROR) {
                ops[i]->rc = reply_error(rd, r, "append");
            } else if (int_elem(r, 0, &status) && int_elem(r, 1, &len)) {
                ops[i]->new_len = (uint64_t)len;
                ops[i]->rc = status == 1 ? STORE_OK : status == 0 ? STORE_EMISMATCH : STORE_ENOTFOUND;
            } else {
                ops[i]->rc = STORE_EIO;
                store_log_error(&rd->log, "redis: append: unexpected reply type %d", r->type);
            }
            freeReplyObject(r);
        }
        if (!noscript) break;
        evalsha = false;
    }
    conn_put(rd, c);
    goto done;
lost:
    /* Replies not read are unknown: those appends may or may not have been applied;
     * their callers get STORE_EUNAVAILABLE (never an ACK). */
    conn_lost(rd, c);
    conn_put(rd, c);
done:
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->rc == RC_PENDING) ops[i]->rc = STORE_EUNAVAILABLE;
        free(keys[i][0]);
        free(keys[i][1]);
    }
}

static void *appender_main(void *arg)
{
    struct rd_store *rd = arg;
    pthread_mutex_lock(&rd->qlock);
    for (;;) {
        while (!rd->head && !rd->stopping) pthread_cond_wait(&rd->qcond, &rd->qlock);
        if (!rd->head) break;
        /* Take at most MAX_PIPELINE; the rest waits for the next round. */
        struct rd_append *batch = rd->head, *last = batch;
        for (int i = 1; i < MAX_PIPELINE && last->next; i++) last = last->next;
        rd->head = last->next;
        if (!rd->head) rd->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&rd->qlock);

        run_appends(rd, batch);

        pthread_mutex_lock(&rd->qlock);
        for (struct rd_append *a = batch; a; a = a->next) a->done = true;
        pthread_cond_broadcast(&rd->donecond);
    }
    pthread_mutex_unlock(&rd->qlock);
    return NULL;
}

/* ---- Methods ------------------------------------------------------------------- */

static void rd_close(struct store *s)
{
    struct rd_store *rd = (struct rd_store *)s;
    if (rd->appender_started) {
        pthread_mutex_lock(&rd->qlock);
        rd->stopping = true;
        pthread_cond_signal(&rd->qcond);
        pthread_mutex_unlock(&rd->qlock);
        pthread_join(rd->appender, NULL);
    }
    for (int i = 0; i < POOL_SIZE; i++)
        if (rd->conns[i].ctx) redisFree(rd->conns[i].ctx);
    pthread_mutex_destroy(&rd->lock);
    pthread_cond_destroy(&rd->pool_cond);
    pthread_mutex_destroy(&rd->qlock);
    pthread_cond_destroy(&rd->qcond);
    pthread_cond_destroy(&rd->donecond);
    free(rd->host);
    free(rd->user);
    free(rd->password);
    free(rd);
}

static int rd_ping(struct store *s)
{
    struct rd_store *rd = (struct rd_store *)s;
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    redisReply *r;
    int rc = call_argv(rd, 1, argv, lens, &r, "ping");
    if (rc != STORE_OK) return rc;
    bool ok = r->type == REDIS_REPLY_STATUS && r->len == 4 && !memcmp(r->str, "PONG", 4);
    freeReplyObject(r);
    return ok ? STORE_OK : STORE_EIO;
}

static int rd_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data,
                         size_t len)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t klen;
    char *key = make_key("zwibbler:", id, id_len, &klen);
    if (!key) return STORE_ENOMEM;
    char exp[24];
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    /* SET NX: created only when missing, in one atomic command. */
    const char *argv[] = {"SET", key, len ? (const char *)data : "", "NX", "EX", exp};
    size_t lens[] = {3, klen, len, 2, 2, strlen(exp)};
    redisReply *r;
    int rc = call_argv(rd, rd->expiration > 0 ? 6 : 4, argv, lens, &r, "create");
    free(key);
    if (rc != STORE_OK) return rc;
    if (r->type == REDIS_REPLY_STATUS) rc = STORE_OK;
    else if (r->type == REDIS_REPLY_NIL) rc = STORE_EEXISTS;
    else return bad_reply(rd, r, "create");
    freeReplyObject(r);
    return rc;
}

/* The document's two key names, as script arguments. */
struct doc_keys {
    char *doc, *keys;
    size_t doc_len, keys_len;
};

static int doc_keys_make(struct doc_keys *k, const char *id, size_t id_len)
{
    k->doc = make_key("zwibbler:", id, id_len, &k->doc_len);
    k->keys = make_key("zwibbler-keys:", id, id_len, &k->keys_len);
    return k->doc && k->keys ? STORE_OK : STORE_ENOMEM;
}

static void doc_keys_free(struct doc_keys *k)
{
    free(k->doc);
    free(k->keys);
}

static int rd_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    struct rd_store *rd = (struct rd_store *)s;
    struct doc_keys k;
    char exp[24];
    redisReply *r = NULL;
    int rc = doc_keys_make(&k, id, id_len);
    if (rc != STORE_OK) goto done;
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    const char *args[] = {k.doc, k.keys, exp};
    size_t lens[] = {k.doc_len, k.keys_len, strlen(exp)};
    if ((rc = call_script(rd, SC_LENGTH, 2, args, lens, 3, &r, "length")) != STORE_OK) goto done;
    if (r->type != REDIS_REPLY_INTEGER) {
        rc = bad_reply(rd, r, "length");
        r = NULL;
        goto done;
    }
    if (r->integer < 0) rc = STORE_ENOTFOUND;
    else *len = (uint64_t)r->integer;
done:
    if (r) freeReplyObject(r);
    doc_keys_free(&k);
    return rc;
}

static int rd_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                       uint8_t **data, size_t *len, uint64_t *total)
{
    struct rd_store *rd = (struct rd_store *)s;
    struct doc_keys k;
    char exp[24], off[24];
    redisReply *r = NULL;
    long long n;
    *data = NULL;
    *len = 0;
    int rc = doc_keys_make(&k, id, id_len);
    if (rc != STORE_OK) goto done;
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    snprintf(off, sizeof off, "%" PRIu64, offset);
    const char *args[] = {k.doc, k.keys, off, exp};
    size_t lens[] = {k.doc_len, k.keys_len, strlen(off), strlen(exp)};
    if ((rc = call_script(rd, SC_READ, 2, args, lens, 4, &r, "read")) != STORE_OK) goto done;
    if (!int_elem(r, 0, &n)) goto bad;
    if (n == -1) {
        rc = STORE_ENOTFOUND;
        goto done;
    }
    if (n == -2) {
        if (int_elem(r, 1, &n) && total) *total = (uint64_t)n;
        rc = STORE_ERANGE;
        goto done;
    }
    if (n < 0 || r->elements < 2 || r->element[1]->type != REDIS_REPLY_STRING) goto bad;
    if (total) *total = (uint64_t)n;
    redisReply *b = r->element[1];
    if (b->len) {
        /* hiredis owns b->str; copying is the price of a malloc'd result. */
        if (!(*data = malloc(b->len))) {
            rc = STORE_ENOMEM;
            goto done;
        }
        memcpy(*data, b->str, b->len);
        *len = b->len;
    }
    goto done;
bad:
    rc = bad_reply(rd, r, "read");
    r = NULL;
done:
    if (r) freeReplyObject(r);
    doc_keys_free(&k);
    return rc;
}

static int rd_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected_len,
                         const uint8_t *data, size_t len, uint64_t *new_len)
{
    struct rd_store *rd = (struct rd_store *)s;
    struct rd_append a = {.id = id, .id_len = id_len, .expected = expected_len,
                          .data = data, .len = len};
    pthread_mutex_lock(&rd->qlock);
    if (rd->tail) rd->tail->next = &a;
    else rd->head = &a;
    rd->tail = &a;
    pthread_cond_signal(&rd->qcond);
    while (!a.done) pthread_cond_wait(&rd->donecond, &rd->qlock);
    pthread_mutex_unlock(&rd->qlock);
    if (new_len && (a.rc == STORE_OK || a.rc == STORE_EMISMATCH)) *new_len = a.new_len;
    return a.rc;
}

static int rd_doc_delete(struct store *s, const char *id, size_t id_len)
{
    struct rd_store *rd = (struct rd_store *)s;
    struct doc_keys k;
    redisReply *r = NULL;
    int rc = doc_keys_make(&k, id, id_len);
    if (rc != STORE_OK) goto done;
    const char *args[] = {k.doc, k.keys};
    size_t lens[] = {k.doc_len, k.keys_len};
    if ((rc = call_script(rd, SC_DELETE, 2, args, lens, 2, &r, "delete")) != STORE_OK) goto done;
    if (r->type != REDIS_REPLY_INTEGER) {
        rc = bad_reply(rd, r, "delete");
        r = NULL;
        goto done;
    }
    rc = r->integer > 0 ? STORE_OK : STORE_ENOTFOUND;
done:
    if (r) freeReplyObject(r);
    doc_keys_free(&k);
    return rc;
}

static int rd_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                      size_t name_len, const uint8_t *value, size_t value_len,
                      uint32_t old_version, uint32_t new_version)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t hlen, jlen;
    char *hash = make_key("zwibbler-keys:", id, id_len, &hlen);
    char *json = key_json(new_version, name, name_len, value, value_len, &jlen);
    char old[16], exp[24];
    redisReply *r = NULL;
    int rc = STORE_ENOMEM;
    if (!hash || !json) goto done;
    snprintf(old, sizeof old, "%" PRIu32, old_version);
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    const char *args[] = {hash, name_len ? (const char *)name : "", old, json, exp};
    size_t lens[] = {hlen, name_len, strlen(old), jlen, strlen(exp)};
    if ((rc = call_script(rd, SC_KEY_SET, 1, args, lens, 5, &r, "key set")) != STORE_OK) goto done;
    if (r->type != REDIS_REPLY_INTEGER) {
        rc = bad_reply(rd, r, "key set");
        r = NULL;
        goto done;
    }
    rc = r->integer == 1 ? STORE_OK : STORE_EMISMATCH;
done:
    if (r) freeReplyObject(r);
    free(hash);
    free(json);
    return rc;
}

static int rd_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t hlen;
    char *hash = make_key("zwibbler-keys:", id, id_len, &hlen);
    if (!hash) return STORE_ENOMEM;
    const char *argv[] = {"HGETALL", hash};
    size_t lens[] = {7, hlen};
    redisReply *r;
    int rc = call_argv(rd, 2, argv, lens, &r, "keys");
    free(hash);
    if (rc != STORE_OK) return rc;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2) return bad_reply(rd, r, "keys");
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        uint32_t version;
        char *value;
        size_t value_len;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            !parse_key_json(v->str, v->len, &version, &value, &value_len)) {
            /* One unreadable key must not make the document unusable. */
            store_log_warn(&rd->log, "redis: keys: skipping a malformed key of a document");
            continue;
        }
        int stop = fn(arg, (const uint8_t *)f->str, f->len, (const uint8_t *)value, value_len, version);
        free(value);
        if (stop) break;
    }
    freeReplyObject(r);
    return STORE_OK;
}

static int rd_token_add(struct store *s, const char *token, size_t token_len,
                        const struct store_token *t)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t tlen, ulen;
    const char *user = t->user_id ? t->user_id : "";
    char *thash = make_key("zwibbler-token:{token}:", token, token_len, &tlen);
    char *uset = make_key("zwibbler-user:", user, strlen(user), &ulen);
    char exp[24];
    redisReply *r = NULL;
    int rc = STORE_ENOMEM;
    if (!thash || !uset) goto done;
    snprintf(exp, sizeof exp, "%" PRId64, t->expires);
    const char *args[] = {thash, uset, t->doc_id ? t->doc_id : "", user, t->permissions, exp};
    size_t lens[] = {tlen, ulen, t->doc_id_len, strlen(user),
                     strnlen(t->permissions, sizeof t->permissions), strlen(exp)};
    if ((rc = call_script(rd, SC_TOKEN_ADD, 2, args, lens, 6, &r, "token add")) != STORE_OK)
        goto done;
    if (r->type != REDIS_REPLY_INTEGER) {
        rc = bad_reply(rd, r, "token add");
        r = NULL;
        goto done;
    }
    rc = r->integer == 1 ? STORE_OK : STORE_EEXISTS;
done:
    if (r) freeReplyObject(r);
    free(thash);
    free(uset);
    return rc;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *o = malloc(n + 1);
    if (!o) return NULL;
    if (n) memcpy(o, p, n);
    o[n] = 0;
    return o;
}

static int rd_token_get(struct store *s, const char *token, size_t token_len,
                        struct store_token *out)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t tlen;
    memset(out, 0, sizeof *out);
    char *thash = make_key("zwibbler-token:{token}:", token, token_len, &tlen);
    if (!thash) return STORE_ENOMEM;
    const char *args[] = {thash};
    size_t lens[] = {tlen};
    redisReply *r;
    int rc = call_script(rd, SC_TOKEN_GET, 1, args, lens, 1, &r, "token get");
    free(thash);
    if (rc != STORE_OK) return rc;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return STORE_ENOTFOUND;
    }
    long long pttl, sec, usec;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 4 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        !int_elem(r, 1, &pttl) || !int_elem(r, 2, &sec) || !int_elem(r, 3, &usec))
        return bad_reply(rd, r, "token get");
    if (pttl == -2) { /* expired between the two commands: cannot happen in a script */
        freeReplyObject(r);
        return STORE_ENOTFOUND;
    }
    /* No TTL (a hand-made hash): it never expires. Otherwise the TTL was set with
     * EXPIREAT whole seconds; rounding restores them exactly. */
    out->expires = pttl < 0 ? INT64_MAX : (int64_t)((sec * 1000 + usec / 1000 + pttl + 500) / 1000);
    redisReply *h = r->element[0];
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        if (f->len == 5 && !memcmp(f->str, "docID", 5)) {
            free(out->doc_id);
            out->doc_id = dup_bytes(v->str, v->len);
            out->doc_id_len = v->len;
        } else if (f->len == 6 && !memcmp(f->str, "userID", 6)) {
            free(out->user_id);
            out->user_id = dup_bytes(v->str, v->len);
        } else if (f->len == 11 && !memcmp(f->str, "permissions", 11)) {
            size_t n = v->len < sizeof out->permissions - 1 ? v->len : sizeof out->permissions - 1;
            memcpy(out->permissions, v->str, n);
            out->permissions[n] = 0;
        }
    }
    freeReplyObject(r);
    if (!out->doc_id) out->doc_id = dup_bytes("", 0), out->doc_id_len = 0;
    if (!out->user_id) out->user_id = dup_bytes("", 0);
    if (!out->doc_id || !out->user_id) {
        free(out->doc_id);
        free(out->user_id);
        memset(out, 0, sizeof *out);
        return STORE_ENOMEM;
    }
    return STORE_OK;
}

static int rd_user_update(struct store *s, const char *user_id, size_t user_len,
                          const char *permissions)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t ulen;
    char *uset = make_key("zwibbler-user:", user_id, user_len, &ulen);
    if (!uset) return STORE_ENOMEM;
    const char *perm = permissions ? permissions : "";
    const char *args[] = {uset, perm, user_len ? user_id : ""};
    size_t lens[] = {ulen, strlen(perm), user_len};
    redisReply *r;
    int rc = call_script(rd, SC_USER_UPDATE, 1, args, lens, 3, &r, "update user");
    free(uset);
    if (rc == STORE_OK) freeReplyObject(r);
    return rc;
}

/* Redis expires documents and tokens itself (TTL). What is left is the reference's
 * daily chore: user sets keep names of tokens that expired. Each SCAN step and each
 * set's clean-up is its own short call, so nothing else waits behind the sweep. */
static int rd_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    struct rd_store *rd = (struct rd_store *)s;
    (void)now;
    (void)max_idle;
    if (removed) *removed = 0;
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", "zwibbler-user:*", "COUNT", SCAN_COUNT};
        size_t lens[] = {4, strlen(cursor), 5, 15, 5, strlen(SCAN_COUNT)};
        redisReply *r;
        int rc = call_argv(rd, 6, argv, lens, &r, "sweep scan");
        if (rc != STORE_OK) return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[0]->len >= sizeof cursor)
            return bad_reply(rd, r, "sweep scan");
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = 0;
        redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements && rc == STORE_OK; i++) {
            if (keys->element[i]->type != REDIS_REPLY_STRING) continue;
            const char *args[] = {keys->element[i]->str};
            size_t alens[] = {keys->element[i]->len};
            redisReply *cr;
            rc = call_script(rd, SC_USER_CLEAN, 1, args, alens, 1, &cr, "sweep user");
            if (rc == STORE_OK) freeReplyObject(cr);
        }
        freeReplyObject(r);
        if (rc != STORE_OK) return rc;
    } while (strcmp(cursor, "0") != 0);
    return STORE_OK;
}

/* ---- Enumeration (doc_list, token_list) ----------------------------------------- */

/* Calls fn with the part after `prefix` of every key SCAN finds matching prefix + "*".
 * Each SCAN step's reply is released (and its connection given back) before the
 * callbacks run, so they may call the store. SCAN reports every key present for the
 * whole scan at least once, and may repeat one while Redis resizes its table. */
static int scan_prefix(struct rd_store *rd, const char *prefix,
                       int (*fn)(struct rd_store *rd, const char *id, size_t id_len, void *arg),
                       void *arg)
{
    char cursor[32] = "0", pattern[64];
    snprintf(pattern, sizeof pattern, "%s*", prefix);
    size_t plen = strlen(prefix);
    int rc = STORE_OK;
    bool stop = false;
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT};
        size_t lens[] = {4, strlen(cursor), 5, strlen(pattern), 5, strlen(SCAN_COUNT)};
        redisReply *r;
        rc = call_argv(rd, 6, argv, lens, &r, "list scan");
        if (rc != STORE_OK) return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[0]->len >= sizeof cursor)
            return bad_reply(rd, r, "list scan");
        memcpy(cursor, r->element[0]->str, r->element[0]->len);
        cursor[r->element[0]->len] = 0;
        /* Detach the keys from the reply: hiredis frees a reply as a whole. */
        redisReply *keys = r->element[1];
        size_t n = keys->elements;
        char **names = calloc(n ? n : 1, sizeof *names);
        size_t *name_lens = calloc(n ? n : 1, sizeof *name_lens);
        size_t m = 0;
        if (!names || !name_lens) rc = STORE_ENOMEM;
        for (size_t i = 0; rc == STORE_OK && i < n; i++) {
            redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len < plen) continue;
            if (!(names[m] = dup_bytes(k->str + plen, k->len - plen))) rc = STORE_ENOMEM;
            else name_lens[m++] = k->len - plen;
        }
        freeReplyObject(r);
        for (size_t i = 0; rc == STORE_OK && i < m && !stop; i++) {
            int f = fn(rd, names[i], name_lens[i], arg);
            if (f < 0) rc = f;
            else stop = f > 0;
        }
        for (size_t i = 0; i < m; i++) free(names[i]);
        free(names);
        free(name_lens);
    } while (rc == STORE_OK && !stop && strcmp(cursor, "0") != 0);
    return rc;
}

struct rd_list_arg {
    store_doc_fn doc_fn;
    store_token_fn token_fn;
    void *arg;
};

/* Scan callbacks: > 0 stops, < 0 is a store error. */
static int list_one_doc(struct rd_store *rd, const char *id, size_t id_len, void *arg)
{
    (void)rd;
    struct rd_list_arg *a = arg;
    return a->doc_fn(a->arg, id, id_len) ? 1 : 0;
}

static int list_one_token(struct rd_store *rd, const char *token, size_t token_len, void *arg)
{
    struct rd_list_arg *a = arg;
    struct store_token t;
    int rc = rd_token_get(&rd->base, token, token_len, &t);
    if (rc == STORE_ENOTFOUND) return 0; /* expired since the scan saw it */
    if (rc != STORE_OK) return rc;
    int stop = a->token_fn(a->arg, token, token_len, &t);
    store_token_clear(&t);
    return stop ? 1 : 0;
}

static int rd_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    struct rd_list_arg a = {.doc_fn = fn, .arg = arg};
    return scan_prefix((struct rd_store *)s, "zwibbler:", list_one_doc, &a);
}

static int rd_token_list(struct store *s, store_token_fn fn, void *arg)
{
    struct rd_list_arg a = {.token_fn = fn, .arg = arg};
    return scan_prefix((struct rd_store *)s, "zwibbler-token:{token}:", list_one_token, &a);
}

static const struct store_methods rd_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "redis",
    .close = rd_close,
    .ping = rd_ping,
    .doc_create = rd_doc_create,
    .doc_length = rd_doc_length,
    .doc_read = rd_doc_read,
    .doc_append = rd_doc_append,
    .doc_delete = rd_doc_delete,
    .key_set = rd_key_set,
    .keys_get = rd_keys_get,
    .token_add = rd_token_add,
    .token_get = rd_token_get,
    .user_update = rd_user_update,
    .sweep = rd_sweep,
    .doc_list = rd_doc_list,
    .token_list = rd_token_list,
};

int redis_parse_server(const char *server, char **host_out, int *port, bool *unix_socket)
{
    if (!server || !*server) server = "localhost:6379";
    *port = 6379;
    *unix_socket = !strncmp(server, "unix:", 5) || server[0] == '/';
    if (*unix_socket) {
        *host_out = strdup(server[0] == '/' ? server : server + 5);
        return *host_out ? 0 : -1;
    }
    const char *host = server, *colon;
    size_t hlen;
    if (server[0] == '[') {
        const char *close = strchr(server, ']');
        if (!close) return -1;
        host = server + 1;
        hlen = (size_t)(close - host);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] && !colon) return -1;
    } else {
        colon = strrchr(server, ':');
        hlen = colon ? (size_t)(colon - server) : strlen(server);
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535) return -1;
        *port = (int)p;
    }
    *host_out = dup_bytes(host, hlen);
    return *host_out ? 0 : -1;
}

/* Connects to cfg->server (default localhost:6379), authenticates with cfg->password
 * (and cfg->user, for Redis 6 ACL users) and loads the scripts. Fails when Redis
 * cannot be reached at open, so that a wrong address is a start-up error; later
 * outages are ridden out. Returns NULL with a reason in err. */
struct store *store_redis_open(const struct store_config *cfg, char *err, size_t err_len)
{
    struct rd_store *rd = calloc(1, sizeof *rd);
    if (!rd) {
        snprintf(err, err_len, "redis: out of memory");
        return NULL;
    }
    rd->base.methods = &rd_methods;
    rd->log = cfg->log;
    pthread_mutex_init(&rd->lock, NULL);
    pthread_cond_init(&rd->pool_cond, NULL);
    pthread_mutex_init(&rd->qlock, NULL);
    pthread_cond_init(&rd->qcond, NULL);
    pthread_cond_init(&rd->donecond, NULL);
    for (int i = 0; i < POOL_SIZE; i++) rd->free_conns[rd->nfree++] = POOL_SIZE - 1 - i;
    rd->backoff_ms = BACKOFF_MIN_MS;
    rd->expiration = cfg->expiration > 0 ? cfg->expiration : 0;
    if (redis_parse_server(cfg->server, &rd->host, &rd->port, &rd->unix) != 0) {
        snprintf(err, err_len, "redis: bad server address '%s' (want host:port)", cfg->server);
        goto fail;
    }
    if ((cfg->user && !(rd->user = strdup(cfg->user))) ||
        (cfg->password && !(rd->password = strdup(cfg->password)))) {
        snprintf(err, err_len, "redis: out of memory");
        goto fail;
    }
    /* hiredis writes with write(): a Redis that went away would kill the process with
     * SIGPIPE instead of giving us EPIPE. Servers ignore it anyway; make sure. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGPIPE, &sa, NULL);
    }
    char why[160];
    redisContext *ctx = connect_ctx(rd, why, sizeof why);
    if (!ctx) {
        if (rd->unix) snprintf(err, err_len, "redis: cannot connect to %s: %s", rd->host, why);
        else snprintf(err, err_len, "redis: cannot connect to %s:%d: %s", rd->host, rd->port, why);
        goto fail;
    }
    rd->conns[rd->free_conns[rd->nfree - 1]].ctx = ctx;
    if (pthread_create(&rd->appender, NULL, appender_main, rd) != 0) {
        snprintf(err, err_len, "redis: cannot start appender thread");
        goto fail;
    }
    rd->appender_started = true;
    return &rd->base;
fail:
    rd_close(&rd->base);
    return NULL;
}
