/* redis_cluster: the cluster's shared state in Redis and its scripts (redis_cluster.h). */
#include "redis_cluster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_link.h"
#include "store_log.h"

#define SERVERS "zwibbler-servers"
#define CKEYS "zwibbler-ckeys:"
#define MEMBERS "zwibbler-members:"
#define SERVER_DOCS "zwibbler-server-docs:"
#define LIVE "zwibbler-server:"

struct redis_cluster {
    struct redis_link *link;
    uint64_t id;
    char hex[17];
};

/* KEYS: client-keys hash, server-docs set, servers set. ARGV: name, old version, new
 * version, value, server hex, client, channel, event, docId. 1 set, 0 refused.
 * A stored value is "<version>:<server>:<client>:<value>". */
static struct redis_script ckey_set =
    REDIS_SCRIPT("local cur = redis.call('HGET', KEYS[1], ARGV[1])\n"
                 "local old = tonumber(ARGV[2])\n"
                 "if cur then\n"
                 "  if tonumber(string.match(cur, '^(%d+):')) ~= old then return 0 end\n"
                 "elseif old ~= 0 then return 0 end\n"
                 "redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. ':' .. ARGV[5] .. ':' .. ARGV[6] "
                 ".. ':' .. ARGV[4])\n"
                 "redis.call('SADD', KEYS[2], ARGV[9])\n"
                 "redis.call('SADD', KEYS[3], ARGV[5])\n"
                 "redis.call('PUBLISH', ARGV[7], ARGV[8])\n"
                 "return 1\n");

/* Shared by the two removals below: deletes the keys of server ARGV[1] (client
 * ARGV[2], or any when empty) from hash KEYS[1], each with a KEY_REMOVED event on
 * ARGV[3] (header ARGV[4]) carrying version + 1. */
#define LUA_DROP_KEYS                                                                              \
    "local removed = 0\n"                                                                          \
    "local h = redis.call('HGETALL', KEYS[1])\n"                                                   \
    "for i = 1, #h, 2 do\n"                                                                        \
    "  local v, s, c = string.match(h[i + 1], '^(%d+):(%x+):(%d+):')\n"                            \
    "  if s == ARGV[1] and (ARGV[2] == '' or c == ARGV[2]) then\n"                                 \
    "    redis.call('HDEL', KEYS[1], h[i])\n"                                                      \
    "    local nv = (tonumber(v) + 1) % 4294967296\n"                                              \
    "    redis.call('PUBLISH', ARGV[3], ARGV[4] .. struct.pack('>I4I4', nv, #h[i]) .. h[i])\n"     \
    "    removed = removed + 1\n"                                                                  \
    "  end\n"                                                                                      \
    "end\n"

/* A departed client's keys. KEYS: client-keys hash, server-docs set, members set.
 * ARGV 1-4 as above, 5: docId. Returns how many went. When the server has no key
 * left there and is not a member, the document leaves its server-docs set (which
 * exists for the clean-up after a crash, and so must not grow for ever). */
static struct redis_script ckey_drop = REDIS_SCRIPT(
    LUA_DROP_KEYS "for _, v in ipairs(redis.call('HVALS', KEYS[1])) do\n"
                  "  if string.match(v, '^%d+:(%x+):') == ARGV[1] then return removed end\n"
                  "end\n"
                  "if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then redis.call('SREM', "
                  "KEYS[2], ARGV[5]) end\n"
                  "return removed\n");

/* KEYS: members set, server-docs set, servers set. ARGV: server hex, docId, global
 * channel, DOC_ACTIVE event. Returns 1 when this made the document active anywhere. */
static struct redis_script member_add =
    REDIS_SCRIPT("local added = redis.call('SADD', KEYS[1], ARGV[1])\n"
                 "redis.call('SADD', KEYS[2], ARGV[2])\n"
                 "redis.call('SADD', KEYS[3], ARGV[1])\n"
                 "if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then\n"
                 "  redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
                 "  return 1\n"
                 "end\n"
                 "return 0\n");

/* KEYS: members set, server-docs set, client-keys hash. ARGV: server hex, docId.
 * Returns 1 when this left the document with no server at all (idle). */
static struct redis_script member_del =
    REDIS_SCRIPT("local was = redis.call('SREM', KEYS[1], ARGV[1])\n"
                 "local keep = false\n" /* still owns keys there: the reaper must find them */
                 "for _, v in ipairs(redis.call('HVALS', KEYS[3])) do\n"
                 "  if string.match(v, '^%d+:(%x+):') == ARGV[1] then keep = true break end\n"
                 "end\n"
                 "if not keep then redis.call('SREM', KEYS[2], ARGV[2]) end\n"
                 "if was == 1 and redis.call('SCARD', KEYS[1]) == 0 then return 1 end\n"
                 "return 0\n");

/* A dead server's share of one document. KEYS: client-keys hash, members set,
 * server-docs set of the dead server, its liveness key. ARGV: dead server hex, ''
 * (any client), channel, header, docId. Returns {-1, 0} when the server is alive after
 * all, else {keys removed, 1 when the document is now idle everywhere}. Atomic, so
 * when several servers reap at once, exactly one announces each removal. */
static struct redis_script reap_doc =
    REDIS_SCRIPT("if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0} end\n" LUA_DROP_KEYS
                 "local was = redis.call('SREM', KEYS[2], ARGV[1])\n"
                 "redis.call('SREM', KEYS[3], ARGV[5])\n"
                 "local idle = 0\n"
                 "if was == 1 and redis.call('SCARD', KEYS[2]) == 0 then idle = 1 end\n"
                 "return {removed, idle}\n");

struct redis_cluster *redis_cluster_new(struct redis_link *l, uint64_t server_id)
{
    struct redis_cluster *rc = calloc(1, sizeof *rc);
    if (!rc) return NULL;
    rc->link = l;
    rc->id = server_id;
    snprintf(rc->hex, sizeof rc->hex, "%016" PRIx64, server_id);
    return rc;
}

void redis_cluster_free(struct redis_cluster *rc) { free(rc); }

const char *redis_cluster_server(const struct redis_cluster *rc) { return rc->hex; }

/* Up to four key names built for one call, freed together. */
struct names {
    char *k[4];
    size_t len[4];
    int n;
    bool failed;
};

static const char *name_of(struct names *n, const char *prefix, const void *id, size_t id_len)
{
    int i = n->n++;
    n->k[i] = redis_key(prefix, id, id_len, &n->len[i]);
    if (!n->k[i]) n->failed = true;
    return n->k[i];
}

static void names_free(struct names *n)
{
    for (int i = 0; i < n->n; i++) free(n->k[i]);
}

/* Runs a script whose reply is an integer. */
static int eval_int(struct redis_cluster *rc, struct redis_script *s, int nkeys, int nargs,
                    const char *const *args, const size_t *lens, long long *out, const char *what)
{
    redisReply *r;
    int err = redis_link_eval(rc->link, s, nkeys, nargs, args, lens, &r, what);
    if (err) return err;
    if (r->type == REDIS_REPLY_INTEGER)
        *out = r->integer;
    else
        err = STORE_EIO, store_log_error(redis_link_log(rc->link),
                                         "cluster: %s: unexpected reply type %d", what, r->type);
    freeReplyObject(r);
    return err;
}

int redis_cluster_publish(struct redis_cluster *rc, const struct redis_event *ev)
{
    struct redis_event e = *ev;
    e.server = rc->id;
    size_t mlen, clen;
    uint8_t *msg = redis_event_encode(&e, &mlen);
    char *chan = redis_event_channel(e.kind == REDIS_EV_USER ? NULL : e.doc, e.doc_len, &clen);
    int err = STORE_ENOMEM;
    if (msg && chan) {
        const char *argv[] = { "PUBLISH", chan, (const char *)msg };
        size_t lens[] = { 7, clen, mlen };
        redisReply *r;
        err = redis_link_call(rc->link, 3, argv, lens, &r, "publish");
        if (!err) freeReplyObject(r);
    }
    free(msg);
    free(chan);
    return err;
}

int redis_cluster_client_key_set(struct redis_cluster *rc, const char *doc, size_t doc_len,
                                 uint64_t client, const uint8_t *name, size_t name_len,
                                 const uint8_t *value, size_t value_len, uint32_t old_version,
                                 uint32_t new_version, bool *accepted)
{
    struct names n = { 0 };
    const char *hash = name_of(&n, CKEYS, doc, doc_len);
    const char *docs = name_of(&n, SERVER_DOCS, rc->hex, 16);
    size_t clen, mlen;
    char *chan = redis_event_channel(doc, doc_len, &clen);
    struct redis_event ev = { .kind = REDIS_EV_CLIENT_KEY,
                              .server = rc->id,
                              .client = client,
                              .version = new_version,
                              .name = name,
                              .name_len = name_len,
                              .data = value,
                              .data_len = value_len };
    uint8_t *msg = redis_event_encode(&ev, &mlen);
    int err = STORE_ENOMEM;
    *accepted = false;
    if (!n.failed && chan && msg) {
        char oldv[16], newv[16], cid[24];
        snprintf(oldv, sizeof oldv, "%" PRIu32, old_version);
        snprintf(newv, sizeof newv, "%" PRIu32, new_version);
        snprintf(cid, sizeof cid, "%" PRIu64, client);
        const char *args[] = { hash,
                               docs,
                               SERVERS,
                               (const char *)name,
                               oldv,
                               newv,
                               value_len ? (const char *)value : "",
                               rc->hex,
                               cid,
                               chan,
                               (const char *)msg,
                               doc };
        size_t lens[] = { n.len[0],  n.len[1],     strlen(SERVERS),
                          name_len,  strlen(oldv), strlen(newv),
                          value_len, 16,           strlen(cid),
                          clen,      mlen,         doc_len };
        long long v = 0;
        err = eval_int(rc, &ckey_set, 3, 12, args, lens, &v, "client key");
        *accepted = !err && v == 1;
    }
    names_free(&n);
    free(chan);
    free(msg);
    return err;
}

int redis_cluster_client_keys_drop(struct redis_cluster *rc, const char *doc, size_t doc_len,
                                   uint64_t client)
{
    struct names n = { 0 };
    const char *hash = name_of(&n, CKEYS, doc, doc_len);
    const char *docs = name_of(&n, SERVER_DOCS, rc->hex, 16);
    const char *members = name_of(&n, MEMBERS, doc, doc_len);
    size_t clen, hlen;
    char *chan = redis_event_channel(doc, doc_len, &clen);
    struct redis_event ev = { .kind = REDIS_EV_KEY_REMOVED, .server = rc->id };
    uint8_t *hdr = redis_event_encode(&ev, &hlen);
    int err = STORE_ENOMEM;
    if (!n.failed && chan && hdr) {
        char cid[24];
        snprintf(cid, sizeof cid, "%" PRIu64, client);
        const char *args[] = { hash, docs, members, rc->hex, cid, chan, (const char *)hdr, doc };
        size_t lens[] = { n.len[0], n.len[1], n.len[2], 16, strlen(cid), clen, hlen, doc_len };
        long long removed;
        err = eval_int(rc, &ckey_drop, 3, 8, args, lens, &removed, "client keys drop");
    }
    names_free(&n);
    free(chan);
    free(hdr);
    return err;
}

int redis_cluster_client_keys(struct redis_cluster *rc, const char *doc, size_t doc_len,
                              store_key_fn fn, void *arg)
{
    size_t hlen;
    char *hash = redis_key(CKEYS, doc, doc_len, &hlen);
    if (!hash) return STORE_ENOMEM;
    const char *argv[] = { "HGETALL", hash };
    size_t lens[] = { 7, hlen };
    redisReply *r;
    int err = redis_link_call(rc->link, 2, argv, lens, &r, "client keys");
    free(hash);
    if (err) return err;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_EIO;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        /* "<version>:<server>:<client>:<value>" */
        char *end;
        unsigned long version = strtoul(v->str, &end, 10);
        const char *p = end;
        int colons = 0;
        while (p < v->str + v->len && colons < 3) colons += *p++ == ':';
        if (colons < 3) continue;
        if (fn(arg, (const uint8_t *)f->str, f->len, (const uint8_t *)p,
               (size_t)(v->str + v->len - p), (uint32_t)version))
            break;
    }
    freeReplyObject(r);
    return STORE_OK;
}

int redis_cluster_member_add(struct redis_cluster *rc, const char *doc, size_t doc_len)
{
    struct names n = { 0 };
    const char *members = name_of(&n, MEMBERS, doc, doc_len);
    const char *docs = name_of(&n, SERVER_DOCS, rc->hex, 16);
    struct redis_event ev = { .kind = REDIS_EV_DOC_ACTIVE, .doc = doc, .doc_len = doc_len };
    size_t jlen;
    uint8_t *j = redis_event_encode(&ev, &jlen);
    int err = STORE_ENOMEM;
    if (!n.failed && j) {
        const char *args[] = { members,         docs,           SERVERS, rc->hex, doc,
                               REDIS_EV_GLOBAL, (const char *)j };
        size_t lens[] = { n.len[0], n.len[1], strlen(SERVERS), 16, doc_len, strlen(REDIS_EV_GLOBAL),
                          jlen };
        long long first;
        err = eval_int(rc, &member_add, 3, 7, args, lens, &first, "membership");
    }
    names_free(&n);
    free(j);
    return err;
}

int redis_cluster_member_del(struct redis_cluster *rc, const char *doc, size_t doc_len, bool *idle)
{
    struct names n = { 0 };
    const char *members = name_of(&n, MEMBERS, doc, doc_len);
    const char *docs = name_of(&n, SERVER_DOCS, rc->hex, 16);
    const char *hash = name_of(&n, CKEYS, doc, doc_len);
    int err = STORE_ENOMEM;
    *idle = false;
    if (!n.failed) {
        const char *args[] = { members, docs, hash, rc->hex, doc };
        size_t lens[] = { n.len[0], n.len[1], n.len[2], 16, doc_len };
        long long v = 0;
        err = eval_int(rc, &member_del, 3, 5, args, lens, &v, "membership");
        *idle = !err && v == 1;
    }
    names_free(&n);
    return err;
}

int redis_cluster_heartbeat(struct redis_cluster *rc, int ttl_ms)
{
    size_t klen;
    char *key = redis_key(LIVE, rc->hex, 16, &klen);
    if (!key) return STORE_ENOMEM;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    const char *argv[] = { "SET", key, "1", "PX", ttl };
    size_t lens[] = { 3, klen, 1, 2, strlen(ttl) };
    redisReply *r;
    int err = redis_link_call(rc->link, 5, argv, lens, &r, "heartbeat");
    free(key);
    if (err) return err;
    freeReplyObject(r);
    const char *sadd[] = { "SADD", SERVERS, rc->hex };
    size_t slens[] = { 4, strlen(SERVERS), 16 };
    err = redis_link_call(rc->link, 3, sadd, slens, &r, "heartbeat");
    if (!err) freeReplyObject(r);
    return err;
}

int redis_cluster_withdraw(struct redis_cluster *rc)
{
    size_t klen;
    char *key = redis_key(LIVE, rc->hex, 16, &klen);
    if (!key) return STORE_ENOMEM;
    const char *argv[] = { "DEL", key };
    size_t lens[] = { 3, klen };
    redisReply *r;
    int err = redis_link_call(rc->link, 2, argv, lens, &r, "withdraw");
    free(key);
    if (!err) freeReplyObject(r);
    return err;
}

int redis_cluster_missing_servers(struct redis_cluster *rc,
                                  void (*fn)(void *arg, const char *server), void *arg)
{
    const char *argv[] = { "SMEMBERS", SERVERS };
    size_t lens[] = { 8, strlen(SERVERS) };
    redisReply *r;
    int err = redis_link_call(rc->link, 2, argv, lens, &r, "servers");
    if (err) return err;
    if (r->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(r);
        return STORE_EIO;
    }
    for (size_t i = 0; i < r->elements && !err; i++) {
        redisReply *s = r->element[i];
        if (s->type != REDIS_REPLY_STRING || s->len != 16 || !memcmp(s->str, rc->hex, 16)) continue;
        size_t llen;
        char *live = redis_key(LIVE, s->str, 16, &llen);
        if (!live) {
            err = STORE_ENOMEM;
            break;
        }
        const char *ea[] = { "EXISTS", live };
        size_t el[] = { 6, llen };
        redisReply *e;
        err = redis_link_call(rc->link, 2, ea, el, &e, "servers");
        free(live);
        if (err) break;
        if (e->type == REDIS_REPLY_INTEGER && e->integer == 0) fn(arg, s->str);
        freeReplyObject(e);
    }
    freeReplyObject(r);
    return err;
}

int redis_cluster_reap(struct redis_cluster *rc, const char *server,
                       void (*left)(void *arg, const char *doc, size_t len, long long removed,
                                    bool idle),
                       void *arg)
{
    size_t dlen, llen, hlen;
    char *docs = redis_key(SERVER_DOCS, server, 16, &dlen);
    char *live = redis_key(LIVE, server, 16, &llen);
    struct redis_event ev = { .kind = REDIS_EV_KEY_REMOVED, .server = strtoull(server, NULL, 16) };
    uint8_t *hdr = redis_event_encode(&ev, &hlen);
    redisReply *d = NULL;
    int err = STORE_ENOMEM;
    if (!docs || !live || !hdr) goto out;
    const char *da[] = { "SMEMBERS", docs };
    size_t dl[] = { 8, dlen };
    if ((err = redis_link_call(rc->link, 2, da, dl, &d, "reap"))) goto out;
    if (d->type != REDIS_REPLY_ARRAY) {
        err = STORE_EIO;
        goto out;
    }
    for (size_t k = 0; k < d->elements && !err; k++) {
        redisReply *e = d->element[k];
        if (e->type != REDIS_REPLY_STRING) continue;
        struct names n = { 0 };
        const char *hash = name_of(&n, CKEYS, e->str, e->len);
        const char *members = name_of(&n, MEMBERS, e->str, e->len);
        size_t clen;
        char *chan = redis_event_channel(e->str, e->len, &clen);
        redisReply *r = NULL;
        err = STORE_ENOMEM;
        if (!n.failed && chan) {
            const char *args[] = { hash, members,           docs,  live, server, "",
                                   chan, (const char *)hdr, e->str };
            size_t lens[] = { n.len[0], n.len[1], dlen, llen, 16, 0, clen, hlen, e->len };
            err = redis_link_eval(rc->link, &reap_doc, 4, 9, args, lens, &r, "reap");
        }
        if (!err && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_INTEGER &&
            r->element[1]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0)
            left(arg, e->str, e->len, r->element[0]->integer, r->element[1]->integer == 1);
        if (r) freeReplyObject(r);
        names_free(&n);
        free(chan);
    }
    if (!err && d->elements == 0) { /* nothing left: forget the server */
        const char *sa[] = { "SREM", SERVERS, server };
        size_t sl[] = { 4, strlen(SERVERS), 16 };
        redisReply *x;
        if (!(err = redis_link_call(rc->link, 3, sa, sl, &x, "reap"))) freeReplyObject(x);
    }
out:
    if (d) freeReplyObject(d);
    free(docs);
    free(live);
    free(hdr);
    return err;
}
