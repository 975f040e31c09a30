/* redis_store: the Database=redis backend, on the reference server's own key layout
 * (docs/protocol.md, Storage layouts) so that both servers can share one Redis:
 *
 *   zwibbler:<docId>                  string: the document bytes
 *   zwibbler-keys:<docId>             hash: key name -> {"Version":n,"Name":"…","Value":"…"}
 *   zwibbler-token:{token}:<token>    hash: docID, userID, permissions; TTL at expiry
 *   zwibbler-user:<userId>            set: that user's token hash names
 *
 * Every check-then-write (compare-length-and-append, compare-version key set, token
 * add, ...) is one Lua script: atomic against every other client of the same Redis,
 * in one round trip. Appends from many threads are sent by one appender thread as a
 * pipeline (one round trip, and with appendfsync=always one fsync, for all of them);
 * each keeps its own length check and result. Connections, Sentinels and outages are
 * the link's (redis_link.h).
 *
 * RedisMinReplicas=N: the pipeline ends with WAIT N, and an append is acknowledged
 * only when N replicas have it; otherwise its caller gets STORE_EUNAVAILABLE (the
 * bytes may stay: the client finds them when it catches up). Reads deliver only bytes
 * that N replicas have (read, then WAIT), and a document counts as created only once
 * they have it, so that no client ever holds bytes a failover could take back. The
 * counter zwibbler-wait is incremented before each WAIT so that the WAIT covers
 * whatever was read or written before it on any connection.
 */
#include "redis_store.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "redis_events.h"
#include "redis_keyjson.h"
#include "redis_link.h"
#include "store.h"
#include "store_log.h"

#define MAX_PIPELINE 256
#define SCAN_COUNT "100"
#define RC_PENDING 1 /* an append not answered yet (store codes are <= 0) */
#define WAIT_KEY "zwibbler-wait"
#define MAX_UNCONFIRMED 10000 /* announcements waiting for replicas; beyond, the oldest go */
#define CONFIRM_RETRY_MS 250

/* KEYS: doc, keys hash. ARGV: expected length, data, expiration seconds (0 = none),
 * and to announce the append (cluster): channel, event header. Returns {1, new
 * length}, {0, current length} on mismatch, {-1, 0} when missing. The announcement is
 * published in the same atomic step, so every server sees appends in commit order. */
static const char LUA_APPEND[] =
    "local n = redis.call('STRLEN', KEYS[1])\n"
    "if n == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end\n"
    "if n ~= tonumber(ARGV[1]) then return {0, n} end\n"
    "if #ARGV[2] > 0 then\n"
    "  n = redis.call('APPEND', KEYS[1], ARGV[2])\n"
    "  if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[2]) end\n"
    "end\n"
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
static const char LUA_DELETE[] = "local n = redis.call('DEL', KEYS[1])\n"
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

static struct redis_script scripts[SC_COUNT] = {
    [SC_APPEND] = REDIS_SCRIPT(LUA_APPEND),
    [SC_LENGTH] = REDIS_SCRIPT(LUA_LENGTH),
    [SC_READ] = REDIS_SCRIPT(LUA_READ),
    [SC_DELETE] = REDIS_SCRIPT(LUA_DELETE),
    [SC_KEY_SET] = REDIS_SCRIPT(LUA_KEY_SET),
    [SC_TOKEN_ADD] = REDIS_SCRIPT(LUA_TOKEN_ADD),
    [SC_TOKEN_GET] = REDIS_SCRIPT(LUA_TOKEN_GET),
    [SC_USER_UPDATE] = REDIS_SCRIPT(LUA_USER_UPDATE),
    [SC_USER_CLEAN] = REDIS_SCRIPT(LUA_USER_CLEAN),
};

/* ---- Store state ------------------------------------------------------------------- */

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

/* The announcement of an append committed but not yet confirmed by the replicas
 * (RedisMinReplicas): published once they confirm it, dropped if the link lost its
 * primary meanwhile (the new one may not have the bytes). */
struct rd_unconfirmed {
    struct rd_unconfirmed *next;
    unsigned epoch;
    char *chan;
    size_t chan_len;
    uint8_t *msg;
    size_t msg_len;
};

struct rd_store {
    struct store base;
    struct redis_link *link;
    int64_t expiration;
    struct store_log log;
    int min_replicas;
    int wait_timeout_ms;
    bool announce; /* cluster mode: appends are published (redis_store_announce) */

    pthread_mutex_t qlock;
    pthread_cond_t qcond, donecond;
    struct rd_append *head, *tail;
    bool stopping;
    pthread_t appender;
    bool appender_started;

    /* appender thread only */
    struct rd_unconfirmed *unconfirmed, *unconfirmed_tail;
    size_t nunconfirmed;
};

static const struct store_methods rd_methods;

/* ---- Calls ------------------------------------------------------------------------ */

static int call_script(struct rd_store *rd, int script, int nkeys, const char **args,
                       const size_t *lens, int nargs, redisReply **out, const char *what)
{
    return redis_link_eval(rd->link, &scripts[script], nkeys, nargs, args, lens, out, what);
}

static int call_argv(struct rd_store *rd, int argc, const char **argv, const size_t *lens,
                     redisReply **out, const char *what)
{
    return redis_link_call(rd->link, argc, argv, lens, out, what);
}

/* Appends INCR WAIT_KEY and WAIT to c: the WAIT then covers everything before. */
static int append_wait(struct rd_store *rd, struct redis_conn *c)
{
    char n[16], t[16];
    snprintf(n, sizeof n, "%d", rd->min_replicas);
    snprintf(t, sizeof t, "%d", rd->wait_timeout_ms);
    const char *incr[] = { "INCR", WAIT_KEY };
    size_t il[] = { 4, strlen(WAIT_KEY) };
    const char *wait[] = { "WAIT", n, t };
    size_t wl[] = { 4, strlen(n), strlen(t) };
    if (redisAppendCommandArgv(c->ctx, 2, incr, il) != REDIS_OK) return -1;
    return redisAppendCommandArgv(c->ctx, 3, wait, wl) == REDIS_OK ? 0 : -1;
}

/* Reads the replies of append_wait. Returns 1 when the replicas confirmed, 0 when
 * not (logged), -1 when the connection failed. */
static int read_wait(struct rd_store *rd, struct redis_conn *c, const char *what)
{
    redisReply *r[2] = { NULL, NULL };
    for (int i = 0; i < 2; i++)
        if (redisGetReply(c->ctx, (void **)&r[i]) != REDIS_OK || !r[i]) {
            if (r[0]) freeReplyObject(r[0]);
            return -1;
        }
    long long got = r[1]->type == REDIS_REPLY_INTEGER ? r[1]->integer : -1;
    /* e.g. -READONLY: the primary moved, which the link must hear of */
    if (r[0]->type == REDIS_REPLY_ERROR) redis_link_reply_error(rd->link, r[0], "INCR " WAIT_KEY);
    if (r[1]->type == REDIS_REPLY_ERROR) redis_link_reply_error(rd->link, r[1], "WAIT");
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    if (got >= rd->min_replicas) return 1;
    if (got >= 0)
        store_log_error(&rd->log,
                        "redis: %s: %lld of %d replicas confirmed within %d ms; not acknowledged",
                        what, got, rd->min_replicas, rd->wait_timeout_ms);
    return 0;
}

#define SC_NONE (-1) /* call_replicated: args are a plain command */

/* A call whose result must be on min_replicas replicas (reads and creations with
 * RedisMinReplicas): script `script` (SC_NONE: the command in args), then WAIT, in
 * one round trip. Same contract as call_script; when the replicas do not confirm,
 * STORE_EUNAVAILABLE. */
static int call_replicated(struct rd_store *rd, int script, int nkeys, const char **args,
                           const size_t *lens, int nargs, redisReply **out, const char *what)
{
    if (rd->min_replicas <= 0)
        return script == SC_NONE ? call_argv(rd, nargs, args, lens, out, what)
                                 : call_script(rd, script, nkeys, args, lens, nargs, out, what);
    struct redis_conn *c;
    int rc = redis_link_get(rd->link, &c);
    if (rc) return rc;
    redisReply *r = NULL;
    int confirmed = -1;
    for (int eval = 0; eval < 2; eval++) {
        int sent =
            script == SC_NONE
                ? (redisAppendCommandArgv(c->ctx, nargs, args, lens) == REDIS_OK ? 0 : -1)
                : redis_conn_append_script(c, &scripts[script], eval, nkeys, nargs, args, lens);
        if (sent || append_wait(rd, c) || redisGetReply(c->ctx, (void **)&r) != REDIS_OK || !r)
            goto lost;
        confirmed = read_wait(rd, c, what);
        if (confirmed < 0) goto lost;
        if (!redis_reply_noscript(r)) break;
        freeReplyObject(r);
        r = NULL;
    }
    redis_link_put(rd->link, c, false);
    if (r->type == REDIS_REPLY_ERROR) {
        rc = redis_link_reply_error(rd->link, r, what);
        freeReplyObject(r);
        return rc;
    }
    if (!confirmed) {
        freeReplyObject(r);
        return STORE_EUNAVAILABLE;
    }
    *out = r;
    return STORE_OK;
lost:
    if (r) freeReplyObject(r);
    redis_link_put(rd->link, c, true);
    return STORE_EUNAVAILABLE;
}

static bool int_elem(const redisReply *r, size_t i, long long *v)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements <= i ||
        r->element[i]->type != REDIS_REPLY_INTEGER)
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

/* ---- Announcements waiting for the replicas (appender thread only) --------------- */

static void unconfirmed_free(struct rd_unconfirmed *u)
{
    free(u->chan);
    free(u->msg);
    free(u);
}

static void unconfirmed_add(struct rd_store *rd, unsigned epoch, const char *id, size_t id_len,
                            uint64_t offset, const uint8_t *data, size_t len)
{
    struct rd_unconfirmed *u = calloc(1, sizeof *u);
    struct redis_event ev = { .kind = REDIS_EV_APPEND, .offset = offset };
    size_t hlen;
    uint8_t *hdr = u ? redis_event_encode(&ev, &hlen) : NULL;
    if (u) u->chan = redis_event_channel(id, id_len, &u->chan_len);
    if (u && hdr) u->msg = malloc(hlen + len);
    if (!u || !hdr || !u->chan || !u->msg) {
        /* The others find these bytes when they next catch up. */
        store_log_error(&rd->log, "redis: out of memory keeping an announcement for the replicas");
        free(hdr);
        if (u) unconfirmed_free(u);
        return;
    }
    memcpy(u->msg, hdr, hlen);
    if (len) memcpy(u->msg + hlen, data, len);
    u->msg_len = hlen + len;
    u->epoch = epoch;
    free(hdr);
    if (rd->unconfirmed_tail)
        rd->unconfirmed_tail->next = u;
    else
        rd->unconfirmed = u;
    rd->unconfirmed_tail = u;
    if (++rd->nunconfirmed > MAX_UNCONFIRMED) {
        struct rd_unconfirmed *old = rd->unconfirmed;
        rd->unconfirmed = old->next;
        rd->nunconfirmed--;
        unconfirmed_free(old);
    }
}

/* Appends a PUBLISH of every unconfirmed announcement made on c's primary (the
 * replicas just confirmed them) and forgets them all. Returns how many were sent. */
static size_t publish_unconfirmed(struct rd_store *rd, struct redis_conn *c)
{
    size_t sent = 0, dropped = 0;
    while (rd->unconfirmed) {
        struct rd_unconfirmed *u = rd->unconfirmed;
        rd->unconfirmed = u->next;
        if (u->epoch == c->epoch) {
            const char *argv[] = { "PUBLISH", u->chan, (const char *)u->msg };
            size_t lens[] = { 7, u->chan_len, u->msg_len };
            if (redisAppendCommandArgv(c->ctx, 3, argv, lens) == REDIS_OK) sent++;
        } else {
            dropped++;
        }
        unconfirmed_free(u);
    }
    rd->unconfirmed_tail = NULL;
    rd->nunconfirmed = 0;
    if (dropped)
        store_log_warn(&rd->log,
                       "redis: %zu unconfirmed append(s) not announced: the primary changed since",
                       dropped);
    return sent;
}

/* Reads n replies of PUBLISH. Returns 0, or -1 when the connection failed. */
static int read_publishes(struct redis_conn *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c->ctx, (void **)&r) != REDIS_OK || !r) return -1;
        freeReplyObject(r);
    }
    return 0;
}

/* With nothing else to do: asks the replicas again about the unconfirmed appends. */
static void confirm_unconfirmed(struct rd_store *rd)
{
    struct redis_conn *c;
    if (redis_link_get(rd->link, &c)) return;
    int ok = append_wait(rd, c) ? -1 : read_wait(rd, c, "earlier appends");
    if (ok == 1) {
        size_t n = publish_unconfirmed(rd, c);
        if (read_publishes(c, n)) ok = -1;
    }
    redis_link_put(rd->link, c, ok < 0);
}

/* ---- Appender: pipelined compare-and-append ------------------------------------ */

static void run_appends(struct rd_store *rd, struct rd_append *batch)
{
    struct rd_append *ops[MAX_PIPELINE];
    char *keys[MAX_PIPELINE][2], *chans[MAX_PIPELINE];
    size_t klen[MAX_PIPELINE][2], clen[MAX_PIPELINE];
    uint8_t hdrs[MAX_PIPELINE][9];
    char explen[MAX_PIPELINE][24];
    char expstr[24];
    size_t n = 0;
    struct redis_conn *c = NULL;
    /* Without replicas to wait for, the script itself announces; with, the
     * announcement waits for their confirmation. */
    bool in_script = rd->announce && rd->min_replicas <= 0;
    snprintf(expstr, sizeof expstr, "%" PRId64, rd->expiration > 0 ? rd->expiration : 0);

    for (struct rd_append *a = batch; a && n < MAX_PIPELINE; a = a->next) {
        ops[n] = a;
        keys[n][0] = redis_key("zwibbler:", a->id, a->id_len, &klen[n][0]);
        keys[n][1] = redis_key("zwibbler-keys:", a->id, a->id_len, &klen[n][1]);
        chans[n] = in_script ? redis_event_channel(a->id, a->id_len, &clen[n]) : NULL;
        hdrs[n][0] = REDIS_EV_APPEND;
        be_put64(hdrs[n] + 1, a->expected);
        snprintf(explen[n], sizeof explen[n], "%" PRIu64, a->expected);
        a->rc = keys[n][0] && keys[n][1] && (chans[n] || !in_script) ? RC_PENDING : STORE_ENOMEM;
        n++;
    }
    /* With replicas to wait for: 1 once they confirmed, 0 when they did not, -1 while
     * not known (then nothing is acknowledged). */
    int confirmed = rd->min_replicas > 0 ? -1 : 1;
    int rc = redis_link_get(rd->link, &c);
    if (rc != STORE_OK) goto done;

    /* Send every append first, then read every reply: one round trip for all. Redis
     * runs them in this order, each checking its own expected length. */
    for (int eval = 0; eval < 2; eval++) {
        size_t sent = 0;
        bool noscript = false;
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->rc != RC_PENDING) continue; /* answered, or no memory */
            const char *args[7] = { keys[i][0],
                                    keys[i][1],
                                    explen[i],
                                    ops[i]->len ? (const char *)ops[i]->data : "",
                                    expstr,
                                    chans[i],
                                    (const char *)hdrs[i] };
            size_t lens[7] = { klen[i][0],     klen[i][1], strlen(explen[i]), ops[i]->len,
                               strlen(expstr), clen[i],    sizeof hdrs[i] };
            if (redis_conn_append_script(c, &scripts[SC_APPEND], eval, 2, in_script ? 7 : 5, args,
                                         lens))
                goto lost;
            sent++;
        }
        if (rd->min_replicas > 0 && append_wait(rd, c)) goto lost;
        for (size_t i = 0; i < n && sent; i++) {
            if (ops[i]->rc != RC_PENDING) continue;
            redisReply *r = NULL;
            if (redisGetReply(c->ctx, (void **)&r) != REDIS_OK || !r) goto lost;
            sent--;
            long long status, len;
            if (redis_reply_noscript(r)) {
                noscript = true; /* not run: stays pending for the EVAL round */
            } else if (r->type == REDIS_REPLY_ERROR) {
                ops[i]->rc = redis_link_reply_error(rd->link, r, "append");
            } else if (int_elem(r, 0, &status) && int_elem(r, 1, &len)) {
                ops[i]->new_len = (uint64_t)len;
                ops[i]->rc = status == 1   ? STORE_OK
                             : status == 0 ? STORE_EMISMATCH
                                           : STORE_ENOTFOUND;
            } else {
                ops[i]->rc = STORE_EIO;
                store_log_error(&rd->log, "redis: append: unexpected reply type %d", r->type);
            }
            freeReplyObject(r);
        }
        if (rd->min_replicas > 0 && (confirmed = read_wait(rd, c, "append")) < 0) goto lost;
        if (!noscript) break;
    }
    if (rd->min_replicas > 0) {
        /* The bytes are announced once the replicas have them: now, or later. */
        for (size_t i = 0; i < n; i++) {
            if (ops[i]->rc != STORE_OK || !rd->announce || !ops[i]->len) continue;
            unconfirmed_add(rd, c->epoch, ops[i]->id, ops[i]->id_len, ops[i]->expected,
                            ops[i]->data, ops[i]->len);
        }
        size_t pubs = confirmed == 1 ? publish_unconfirmed(rd, c) : 0;
        if (read_publishes(c, pubs)) goto lost; /* the appends stand; the others catch up */
    }
    redis_link_put(rd->link, c, false);
    goto done;
lost:
    /* Replies not read are unknown: those appends may or may not have been applied;
     * their callers get STORE_EUNAVAILABLE (never an ACK). */
    redis_link_put(rd->link, c, true);
done:
    for (size_t i = 0; i < n; i++) {
        /* Committed, but not known to be on the replicas: a failover could take it
         * back, so no ACK. */
        if (ops[i]->rc == STORE_OK && confirmed != 1) ops[i]->rc = STORE_EUNAVAILABLE;
        if (ops[i]->rc == RC_PENDING) ops[i]->rc = STORE_EUNAVAILABLE;
        free(keys[i][0]);
        free(keys[i][1]);
        free(chans[i]);
    }
}

static void *appender_main(void *arg)
{
    struct rd_store *rd = arg;
    pthread_mutex_lock(&rd->qlock);
    for (;;) {
        while (!rd->head && !rd->stopping) {
            if (!rd->unconfirmed) {
                pthread_cond_wait(&rd->qcond, &rd->qlock);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += CONFIRM_RETRY_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            if (pthread_cond_timedwait(&rd->qcond, &rd->qlock, &ts) && !rd->head && !rd->stopping) {
                pthread_mutex_unlock(&rd->qlock);
                confirm_unconfirmed(rd);
                pthread_mutex_lock(&rd->qlock);
            }
        }
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
    while (rd->unconfirmed) {
        struct rd_unconfirmed *u = rd->unconfirmed;
        rd->unconfirmed = u->next;
        unconfirmed_free(u);
    }
    redis_link_close(rd->link);
    pthread_mutex_destroy(&rd->qlock);
    pthread_cond_destroy(&rd->qcond);
    pthread_cond_destroy(&rd->donecond);
    free(rd);
}

static int rd_ping(struct store *s)
{
    struct rd_store *rd = (struct rd_store *)s;
    const char *argv[] = { "PING" };
    size_t lens[] = { 4 };
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
    char *key = redis_key("zwibbler:", id, id_len, &klen);
    if (!key) return STORE_ENOMEM;
    char exp[24];
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    /* SET NX: created only when missing, in one atomic command. */
    const char *argv[] = { "SET", key, len ? (const char *)data : "", "NX", "EX", exp };
    size_t lens[] = { 3, klen, len, 2, 2, strlen(exp) };
    redisReply *r;
    int rc = call_replicated(rd, SC_NONE, 0, argv, lens, rd->expiration > 0 ? 6 : 4, &r, "create");
    free(key);
    if (rc != STORE_OK) return rc;
    if (r->type == REDIS_REPLY_STATUS)
        rc = STORE_OK;
    else if (r->type == REDIS_REPLY_NIL)
        rc = STORE_EEXISTS;
    else
        return bad_reply(rd, r, "create");
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
    k->doc = redis_key("zwibbler:", id, id_len, &k->doc_len);
    k->keys = redis_key("zwibbler-keys:", id, id_len, &k->keys_len);
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
    const char *args[] = { k.doc, k.keys, exp };
    size_t lens[] = { k.doc_len, k.keys_len, strlen(exp) };
    if ((rc = call_script(rd, SC_LENGTH, 2, args, lens, 3, &r, "length")) != STORE_OK) goto done;
    if (r->type != REDIS_REPLY_INTEGER) {
        rc = bad_reply(rd, r, "length");
        r = NULL;
        goto done;
    }
    if (r->integer < 0)
        rc = STORE_ENOTFOUND;
    else
        *len = (uint64_t)r->integer;
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
    const char *args[] = { k.doc, k.keys, off, exp };
    size_t lens[] = { k.doc_len, k.keys_len, strlen(off), strlen(exp) };
    if ((rc = call_replicated(rd, SC_READ, 2, args, lens, 4, &r, "read")) != STORE_OK) goto done;
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
    struct rd_append a = {
        .id = id, .id_len = id_len, .expected = expected_len, .data = data, .len = len
    };
    pthread_mutex_lock(&rd->qlock);
    if (rd->tail)
        rd->tail->next = &a;
    else
        rd->head = &a;
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
    const char *args[] = { k.doc, k.keys };
    size_t lens[] = { k.doc_len, k.keys_len };
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
                      size_t name_len, const uint8_t *value, size_t value_len, uint32_t old_version,
                      uint32_t new_version)
{
    struct rd_store *rd = (struct rd_store *)s;
    size_t hlen, jlen;
    char *hash = redis_key("zwibbler-keys:", id, id_len, &hlen);
    char *json = redis_key_json(new_version, name, name_len, value, value_len, &jlen);
    char old[16], exp[24];
    redisReply *r = NULL;
    int rc = STORE_ENOMEM;
    if (!hash || !json) goto done;
    snprintf(old, sizeof old, "%" PRIu32, old_version);
    snprintf(exp, sizeof exp, "%" PRId64, rd->expiration);
    const char *args[] = { hash, name_len ? (const char *)name : "", old, json, exp };
    size_t lens[] = { hlen, name_len, strlen(old), jlen, strlen(exp) };
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
    char *hash = redis_key("zwibbler-keys:", id, id_len, &hlen);
    if (!hash) return STORE_ENOMEM;
    const char *argv[] = { "HGETALL", hash };
    size_t lens[] = { 7, hlen };
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
            !redis_key_parse(v->str, v->len, &version, &value, &value_len)) {
            /* One unreadable key must not make the document unusable. */
            store_log_warn(&rd->log, "redis: keys: skipping a malformed key of a document");
            continue;
        }
        int stop =
            fn(arg, (const uint8_t *)f->str, f->len, (const uint8_t *)value, value_len, version);
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
    char *thash = redis_key("zwibbler-token:{token}:", token, token_len, &tlen);
    char *uset = redis_key("zwibbler-user:", user, strlen(user), &ulen);
    char exp[24];
    redisReply *r = NULL;
    int rc = STORE_ENOMEM;
    if (!thash || !uset) goto done;
    snprintf(exp, sizeof exp, "%" PRId64, t->expires);
    const char *args[] = { thash, uset, t->doc_id ? t->doc_id : "", user, t->permissions, exp };
    size_t lens[] = { tlen,
                      ulen,
                      t->doc_id_len,
                      strlen(user),
                      strnlen(t->permissions, sizeof t->permissions),
                      strlen(exp) };
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
    char *thash = redis_key("zwibbler-token:{token}:", token, token_len, &tlen);
    if (!thash) return STORE_ENOMEM;
    const char *args[] = { thash };
    size_t lens[] = { tlen };
    redisReply *r;
    int rc = call_script(rd, SC_TOKEN_GET, 1, args, lens, 1, &r, "token get");
    free(thash);
    if (rc != STORE_OK) return rc;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return STORE_ENOTFOUND;
    }
    long long pttl, sec, usec;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 4 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || !int_elem(r, 1, &pttl) ||
        !int_elem(r, 2, &sec) || !int_elem(r, 3, &usec))
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
    char *uset = redis_key("zwibbler-user:", user_id, user_len, &ulen);
    if (!uset) return STORE_ENOMEM;
    const char *perm = permissions ? permissions : "";
    const char *args[] = { uset, perm, user_len ? user_id : "" };
    size_t lens[] = { ulen, strlen(perm), user_len };
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
        const char *argv[] = { "SCAN", cursor, "MATCH", "zwibbler-user:*", "COUNT", SCAN_COUNT };
        size_t lens[] = { 4, strlen(cursor), 5, 15, 5, strlen(SCAN_COUNT) };
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
            const char *args[] = { keys->element[i]->str };
            size_t alens[] = { keys->element[i]->len };
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
        const char *argv[] = { "SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT };
        size_t lens[] = { 4, strlen(cursor), 5, strlen(pattern), 5, strlen(SCAN_COUNT) };
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
            if (!(names[m] = dup_bytes(k->str + plen, k->len - plen)))
                rc = STORE_ENOMEM;
            else
                name_lens[m++] = k->len - plen;
        }
        freeReplyObject(r);
        for (size_t i = 0; rc == STORE_OK && i < m && !stop; i++) {
            int f = fn(rd, names[i], name_lens[i], arg);
            if (f < 0)
                rc = f;
            else
                stop = f > 0;
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
    struct rd_list_arg a = { .doc_fn = fn, .arg = arg };
    return scan_prefix((struct rd_store *)s, "zwibbler:", list_one_doc, &a);
}

static int rd_token_list(struct store *s, store_token_fn fn, void *arg)
{
    struct rd_list_arg a = { .token_fn = fn, .arg = arg };
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

struct redis_link *redis_store_link(struct store *s)
{
    if (!s || s->methods != &rd_methods) return NULL;
    return ((struct rd_store *)s)->link;
}

int redis_store_announce(struct store *s)
{
    if (!s || s->methods != &rd_methods) return -1;
    struct rd_store *rd = (struct rd_store *)s;
    pthread_mutex_lock(&rd->qlock); /* the appender reads it under this lock's cover */
    rd->announce = true;
    pthread_mutex_unlock(&rd->qlock);
    return 0;
}

/* Connects (through the Sentinels when configured), authenticates and checks the
 * primary. Fails when Redis cannot be reached at open, so that a wrong address is a
 * start-up error; later outages are ridden out. Returns NULL with a reason in err. */
struct store *store_redis_open(const struct store_config *cfg, char *err, size_t err_len)
{
    struct rd_store *rd = calloc(1, sizeof *rd);
    if (!rd) {
        snprintf(err, err_len, "redis: out of memory");
        return NULL;
    }
    rd->base.methods = &rd_methods;
    pthread_mutex_init(&rd->qlock, NULL);
    pthread_cond_init(&rd->qcond, NULL);
    pthread_cond_init(&rd->donecond, NULL);
    rd->expiration = cfg->expiration > 0 ? cfg->expiration : 0;
    rd->log = cfg->log;
    rd->min_replicas = cfg->redis_min_replicas > 0 ? cfg->redis_min_replicas : 0;
    rd->wait_timeout_ms = REDIS_WAIT_TIMEOUT_MS;
    struct redis_link_config lc = {
        .server = cfg->server,
        .user = cfg->user,
        .password = cfg->password,
        .sentinels = cfg->redis_sentinels,
        .master_name = cfg->redis_master_name,
        .sentinel_password = cfg->redis_sentinel_password,
        .log_name = "redis",
        .log = cfg->log,
    };
    char why[700];
    if (!(rd->link = redis_link_open(&lc, why, sizeof why))) {
        snprintf(err, err_len, "redis: %s", why);
        goto fail;
    }
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
