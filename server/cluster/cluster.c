/* cluster: life cycle, the hub relay (broadcasts, client keys, session-key
 * announcements), document membership for the cluster-wide idle webhook, and the
 * heartbeat thread: it renews this server's liveness key, runs the membership
 * updates queued by sessions (off their locks, retried while Redis is away) and
 * removes the client keys of servers whose liveness key expired.
 *
 * Timing: the liveness key lives ClusterKeyTtlMs / 2 and is renewed every
 * ClusterKeyTtlMs / 6; a server is taken for dead after two scans (one per beat) in a
 * row found its key missing. A dead server's keys so go within 5/6 of ClusterKeyTtlMs,
 * and a live one is never taken for dead unless it missed three beats. */
#include "cluster_internal.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "webhook.h"

#define MAX_QUEUE 100000 /* membership events waiting for Redis; beyond, dropped */
#define SERVERS "zwibbler-servers"

/* ---- helpers ---- */

char *cl_key(const char *prefix, const void *id, size_t id_len, size_t *out_len)
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

void cl_put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

uint64_t cl_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

uint32_t cl_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Header of an announcement from a client: type, server, client. */
static void header(uint8_t *h, char type, uint64_t sid, uint64_t cid)
{
    h[0] = (uint8_t)type;
    cl_put64(h + 1, sid);
    cl_put64(h + 9, cid);
}

static void publish(struct cluster *cl, const char *id, size_t id_len, const uint8_t *msg, size_t len)
{
    size_t clen;
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    if (!chan) return;
    const char *argv[] = {"PUBLISH", chan, (const char *)msg};
    size_t lens[] = {7, clen, len};
    redisReply *r = clr_command(&cl->redis, 3, argv, lens);
    if (r) freeReplyObject(r);
    else log_warn("cluster: an announcement on %.*s was lost (Redis unreachable)", (int)id_len, id);
    free(chan);
}

/* ---- the relay ---- */

static void relay_broadcast(void *arg, const char *id, size_t id_len, uint64_t from,
                            const uint8_t *data, size_t len)
{
    struct cluster *cl = arg;
    uint8_t *msg = malloc(17 + len);
    if (!msg) return;
    header(msg, 'B', cl->sid, from);
    if (len) memcpy(msg + 17, data, len);
    publish(cl, id, id_len, msg, 17 + len);
    free(msg);
}

static void holders_add(struct cluster *cl, uint64_t cid)
{
    pthread_mutex_lock(&cl->holders_lock);
    size_t i;
    for (i = 0; i < cl->nholders && cl->holders[i] != cid; i++) continue;
    if (i == cl->nholders) {
        if (cl->nholders == cl->holders_cap) {
            size_t cap = cl->holders_cap ? cl->holders_cap * 2 : 64;
            uint64_t *h = realloc(cl->holders, cap * sizeof *h);
            if (h) cl->holders = h, cl->holders_cap = cap;
        }
        /* Without room it is not recorded; its keys then go when the reaper finds them. */
        if (cl->nholders < cl->holders_cap) cl->holders[cl->nholders++] = cid;
    }
    pthread_mutex_unlock(&cl->holders_lock);
}

/* Removes cid; returns whether it was there. */
static bool holders_take(struct cluster *cl, uint64_t cid)
{
    pthread_mutex_lock(&cl->holders_lock);
    bool found = false;
    for (size_t i = 0; i < cl->nholders; i++)
        if (cl->holders[i] == cid) {
            cl->holders[i] = cl->holders[--cl->nholders];
            found = true;
            break;
        }
    pthread_mutex_unlock(&cl->holders_lock);
    return found;
}

static int relay_client_key_set(void *arg, const char *id, size_t id_len, uint64_t from,
                                const uint8_t *name, size_t name_len, const uint8_t *value,
                                size_t value_len, uint32_t old_version, uint32_t new_version)
{
    struct cluster *cl = arg;
    size_t hlen, dlen, clen;
    char *hash = cl_key("zwibbler-ckeys:", id, id_len, &hlen);
    char *docs = cl_key("zwibbler-server-docs:", cl->sid_hex, 16, &dlen);
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    size_t mlen = 25 + name_len + value_len;
    uint8_t *msg = malloc(mlen);
    int accepted = 0;
    if (!hash || !docs || !chan || !msg) goto out;
    header(msg, 'K', cl->sid, from);
    put32(msg + 17, new_version);
    put32(msg + 21, (uint32_t)name_len);
    memcpy(msg + 25, name, name_len);
    if (value_len) memcpy(msg + 25 + name_len, value, value_len);
    char oldv[16], newv[16], cid[24];
    snprintf(oldv, sizeof oldv, "%" PRIu32, old_version);
    snprintf(newv, sizeof newv, "%" PRIu32, new_version);
    snprintf(cid, sizeof cid, "%" PRIu64, from);
    const char *args[] = {hash, docs, SERVERS, (const char *)name, oldv, newv,
                          value_len ? (const char *)value : "", cl->sid_hex, cid, chan,
                          (const char *)msg, id};
    size_t lens[] = {hlen, dlen, strlen(SERVERS), name_len, strlen(oldv), strlen(newv),
                     value_len, 16, strlen(cid), clen, mlen, id_len};
    holders_add(cl, from); /* before: a departure racing the write still drops it */
    redisReply *r = clr_script(&cl->redis, CLS_CKEY_SET, 3, 12, args, lens);
    if (r && r->type == REDIS_REPLY_INTEGER) accepted = r->integer == 1;
    else if (r) log_error("cluster: client key: %.*s", (int)r->len, r->str ? r->str : "");
    if (r) freeReplyObject(r);
out:
    free(hash);
    free(docs);
    free(chan);
    free(msg);
    return accepted;
}

static void relay_session_key_set(void *arg, const char *id, size_t id_len, uint64_t from,
                                  const uint8_t *name, size_t name_len, uint32_t version)
{
    struct cluster *cl = arg;
    uint8_t *msg = malloc(21 + name_len);
    if (!msg) return;
    header(msg, 'S', cl->sid, from);
    put32(msg + 17, version);
    memcpy(msg + 21, name, name_len);
    publish(cl, id, id_len, msg, 21 + name_len);
    free(msg);
}

/* Drops a departed client's keys. Returns 0, or -1 when Redis was unreachable. */
static int drop_client_keys(struct cluster *cl, const char *id, size_t id_len, uint64_t cid)
{
    size_t hlen, clen, dlen, mlen;
    char *hash = cl_key("zwibbler-ckeys:", id, id_len, &hlen);
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    char *docs = cl_key("zwibbler-server-docs:", cl->sid_hex, 16, &dlen);
    char *members = cl_key("zwibbler-members:", id, id_len, &mlen);
    int rc = 0;
    if (hash && chan && docs && members) {
        uint8_t hdr[17];
        header(hdr, 'R', cl->sid, 0);
        char cids[24];
        snprintf(cids, sizeof cids, "%" PRIu64, cid);
        const char *args[] = {hash, docs, members, cl->sid_hex, cids, chan, (const char *)hdr, id};
        size_t lens[] = {hlen, dlen, mlen, 16, strlen(cids), clen, sizeof hdr, id_len};
        redisReply *r = clr_script(&cl->redis, CLS_CKEY_DROP, 3, 8, args, lens);
        if (!r) rc = -1;
        else freeReplyObject(r);
    }
    free(hash);
    free(chan);
    free(docs);
    free(members);
    return rc;
}

static void queue_event(struct cluster *cl, char op, const char *id, size_t id_len, uint64_t cid);

static void relay_client_left(void *arg, const char *id, size_t id_len, uint64_t from)
{
    struct cluster *cl = arg;
    if (!holders_take(cl, from)) return; /* never set a client key: nothing to drop */
    if (drop_client_keys(cl, id, id_len, from)) queue_event(cl, 'd', id, id_len, from);
}

int cluster_client_keys(void *arg, const char *id, size_t id_len, hub_key_fn fn, void *fnarg)
{
    struct cluster *cl = arg;
    size_t hlen;
    char *hash = cl_key("zwibbler-ckeys:", id, id_len, &hlen);
    if (!hash) return STORE_ENOMEM;
    const char *argv[] = {"HGETALL", hash};
    size_t lens[] = {7, hlen};
    redisReply *r = clr_command(&cl->redis, 2, argv, lens);
    free(hash);
    if (!r) return STORE_EUNAVAILABLE;
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
        if (fn(fnarg, (const uint8_t *)f->str, f->len, (const uint8_t *)p,
               (size_t)(v->str + v->len - p), (uint32_t)version))
            break;
    }
    freeReplyObject(r);
    return STORE_OK;
}

/* ---- membership (idle webhook) and the heartbeat thread ---- */

static void queue_event(struct cluster *cl, char op, const char *id, size_t id_len, uint64_t cid)
{
    struct cl_event *e = malloc(sizeof *e + id_len);
    if (!e) return;
    e->next = NULL;
    e->op = op;
    e->client = cid;
    e->id_len = id_len;
    memcpy(e->id, id, id_len);
    pthread_mutex_lock(&cl->qlock);
    if (cl->qlen >= MAX_QUEUE) {
        pthread_mutex_unlock(&cl->qlock);
        log_error("cluster: %d membership updates waiting for Redis; dropping one for %.*s",
                  MAX_QUEUE, (int)id_len, id);
        free(e);
        return;
    }
    if (cl->qtail) cl->qtail->next = e;
    else cl->qhead = e;
    cl->qtail = e;
    cl->qlen++;
    pthread_cond_signal(&cl->qcond);
    pthread_mutex_unlock(&cl->qlock);
}

static void on_doc_active(void *arg, const char *id, size_t id_len)
{
    struct cluster *cl = arg;
    if (cl->webhook) {
        webhook_doc_active(cl->webhook, id, id_len);
        queue_event(cl, 'a', id, id_len, 0);
    }
    cluster_sub_queue(cl, 'a', id, id_len);
}

static void on_doc_idle(void *arg, const char *id, size_t id_len)
{
    struct cluster *cl = arg;
    if (cl->webhook) queue_event(cl, 'i', id, id_len, 0);
    cluster_sub_queue(cl, 'i', id, id_len);
}

void cluster_listener(struct cluster *cl, struct webhook *w, struct hub_listener *out)
{
    cl->webhook = w;
    out->doc_active = on_doc_active;
    out->doc_idle = on_doc_idle;
    out->arg = cl;
}

/* Runs one queued event. Returns 0, or -1 when Redis was unreachable (retry). */
static int run_event(struct cluster *cl, struct cl_event *e)
{
    if (e->op == 'd') return drop_client_keys(cl, e->id, e->id_len, e->client);
    size_t mlen, dlen, hlen;
    char *members = cl_key("zwibbler-members:", e->id, e->id_len, &mlen);
    char *docs = cl_key("zwibbler-server-docs:", cl->sid_hex, 16, &dlen);
    char *hash = cl_key("zwibbler-ckeys:", e->id, e->id_len, &hlen);
    uint8_t *j = malloc(1 + e->id_len);
    int rc = 0;
    redisReply *r = NULL;
    if (!members || !docs || !hash || !j) goto out;
    if (e->op == 'a') {
        j[0] = 'J';
        memcpy(j + 1, e->id, e->id_len);
        const char *args[] = {members, docs, SERVERS, cl->sid_hex, e->id, CL_GLOBAL, (const char *)j};
        size_t lens[] = {mlen, dlen, strlen(SERVERS), 16, e->id_len, strlen(CL_GLOBAL), 1 + e->id_len};
        r = clr_script(&cl->redis, CLS_MEMBER_ADD, 3, 7, args, lens);
    } else {
        const char *args[] = {members, docs, hash, cl->sid_hex, e->id};
        size_t lens[] = {mlen, dlen, hlen, 16, e->id_len};
        r = clr_script(&cl->redis, CLS_MEMBER_DEL, 3, 5, args, lens);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
            webhook_doc_idle(cl->webhook, e->id, e->id_len);
    }
    if (!r) rc = -1;
    else if (r->type == REDIS_REPLY_ERROR) log_error("cluster: membership: %.*s", (int)r->len, r->str);
out:
    if (r) freeReplyObject(r);
    free(members);
    free(docs);
    free(hash);
    free(j);
    return rc;
}

/* Runs the queue in order; stops at the first that must wait for Redis. */
static void run_queue(struct cluster *cl)
{
    for (;;) {
        pthread_mutex_lock(&cl->qlock);
        struct cl_event *e = cl->qhead;
        pthread_mutex_unlock(&cl->qlock);
        if (!e || run_event(cl, e)) return;
        pthread_mutex_lock(&cl->qlock);
        cl->qhead = e->next;
        if (!cl->qhead) cl->qtail = NULL;
        cl->qlen--;
        pthread_mutex_unlock(&cl->qlock);
        free(e);
    }
}

static void heartbeat(struct cluster *cl)
{
    size_t klen;
    char *key = cl_key("zwibbler-server:", cl->sid_hex, 16, &klen);
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", cl->ttl_ms / 2);
    if (!key) return;
    const char *argv[] = {"SET", key, "1", "PX", ttl};
    size_t lens[] = {3, klen, 1, 2, strlen(ttl)};
    redisReply *r = clr_command(&cl->redis, 5, argv, lens);
    if (r) freeReplyObject(r);
    const char *sadd[] = {"SADD", SERVERS, cl->sid_hex};
    size_t slens[] = {4, strlen(SERVERS), 16};
    if ((r = clr_command(&cl->redis, 3, sadd, slens))) freeReplyObject(r);
    free(key);
}

/* Removes what a dead server left in one document. */
static void reap_doc(struct cluster *cl, const char *dead, const char *id, size_t id_len)
{
    size_t hlen, mlen, dlen, llen, clen;
    char *hash = cl_key("zwibbler-ckeys:", id, id_len, &hlen);
    char *members = cl_key("zwibbler-members:", id, id_len, &mlen);
    char *docs = cl_key("zwibbler-server-docs:", dead, 16, &dlen);
    char *live = cl_key("zwibbler-server:", dead, 16, &llen);
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    if (hash && members && docs && live && chan) {
        uint8_t hdr[17];
        header(hdr, 'R', strtoull(dead, NULL, 16), 0);
        const char *args[] = {hash, members, docs, live, dead, "", chan, (const char *)hdr, id};
        size_t lens[] = {hlen, mlen, dlen, llen, 16, 0, clen, sizeof hdr, id_len};
        redisReply *r = clr_script(&cl->redis, CLS_REAP, 4, 9, args, lens);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            long long removed = r->element[0]->integer, idle = r->element[1]->integer;
            if (removed > 0)
                log_info("cluster: server %s is gone: removed its %lld client key(s) of %.*s", dead,
                         removed, (int)id_len, id);
            if (idle == 1 && cl->webhook) webhook_doc_idle(cl->webhook, id, id_len);
        }
        if (r) freeReplyObject(r);
    }
    free(hash);
    free(members);
    free(docs);
    free(live);
    free(chan);
}

static bool suspected(const struct cluster *cl, const char *sid)
{
    for (size_t i = 0; i < cl->nsuspects; i++)
        if (!memcmp(cl->suspects[i], sid, 16)) return true;
    return false;
}

/* Finds servers whose liveness key expired and removes what they left. A server is
 * taken for dead only when its key is missing in two scans in a row: after Redis
 * itself was away longer than the key's life, every server's key is gone until its
 * next beat, and live servers must not lose their clients' keys for that. */
static void reap(struct cluster *cl)
{
    const char *argv[] = {"SMEMBERS", SERVERS};
    size_t lens[] = {8, strlen(SERVERS)};
    char (*missing)[17] = NULL;
    size_t nmissing = 0;
    redisReply *r = clr_command(&cl->redis, 2, argv, lens);
    if (!r || r->type != REDIS_REPLY_ARRAY) goto out;
    missing = calloc(r->elements ? r->elements : 1, sizeof *missing);
    if (!missing) goto out;
    for (size_t i = 0; i < r->elements && !atomic_load(&cl->stopping); i++) {
        redisReply *s = r->element[i];
        if (s->type != REDIS_REPLY_STRING || s->len != 16 || !memcmp(s->str, cl->sid_hex, 16)) continue;
        size_t llen, dlen;
        char *live = cl_key("zwibbler-server:", s->str, 16, &llen);
        char *docs = cl_key("zwibbler-server-docs:", s->str, 16, &dlen);
        redisReply *e = NULL, *d = NULL;
        if (live && docs) {
            const char *ea[] = {"EXISTS", live};
            size_t el[] = {6, llen};
            e = clr_command(&cl->redis, 2, ea, el);
        }
        bool gone = e && e->type == REDIS_REPLY_INTEGER && e->integer == 0;
        if (gone) memcpy(missing[nmissing++], s->str, 16);
        if (gone && suspected(cl, s->str)) {
            const char *da[] = {"SMEMBERS", docs};
            size_t dl[] = {8, dlen};
            d = clr_command(&cl->redis, 2, da, dl);
            if (d && d->type == REDIS_REPLY_ARRAY) {
                for (size_t k = 0; k < d->elements; k++)
                    if (d->element[k]->type == REDIS_REPLY_STRING)
                        reap_doc(cl, s->str, d->element[k]->str, d->element[k]->len);
                if (d->elements == 0) { /* nothing left: forget the server */
                    const char *sa[] = {"SREM", SERVERS, s->str};
                    size_t sl[] = {4, strlen(SERVERS), 16};
                    redisReply *x = clr_command(&cl->redis, 3, sa, sl);
                    if (x) freeReplyObject(x);
                }
            }
        }
        if (e) freeReplyObject(e);
        if (d) freeReplyObject(d);
        free(live);
        free(docs);
    }
out:
    if (r) freeReplyObject(r);
    if (missing) { /* a failed scan keeps the previous suspects */
        free(cl->suspects);
        cl->suspects = missing;
        cl->nsuspects = nmissing;
    }
}

static void *beat_main(void *arg)
{
    struct cluster *cl = arg;
    int period = cl->ttl_ms / 6 > 100 ? cl->ttl_ms / 6 : 100;
    int64_t next = 0;
    pthread_mutex_lock(&cl->qlock);
    while (!atomic_load(&cl->stopping)) {
        pthread_mutex_unlock(&cl->qlock);
        run_queue(cl);
        if (now_ms() >= next) {
            heartbeat(cl);
            reap(cl);
            next = now_ms() + period;
        }
        pthread_mutex_lock(&cl->qlock);
        if (atomic_load(&cl->stopping)) break;
        /* Wake for new events, or at the next beat; queued events that wait for
         * Redis are retried then. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait = cl->qhead ? 250 : next - now_ms();
        if (wait < 10) wait = 10;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&cl->qcond, &cl->qlock, &ts);
    }
    pthread_mutex_unlock(&cl->qlock);
    run_queue(cl); /* last departures, once */
    return NULL;
}

/* ---- life cycle ---- */

static uint64_t random_id(void)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != sizeof v) v = 0;
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v ^= (uint64_t)ts.tv_nsec << 20 ^ (uint64_t)ts.tv_sec ^ (uint64_t)getpid() << 40;
    return v | 1ull << 63; /* 16 hex digits, never 0 */
}

struct cluster *cluster_start(const struct config *cfg, const struct store_config *sc,
                              struct store *inner, char *err, size_t err_len)
{
    struct cluster *cl = calloc(1, sizeof *cl);
    if (!cl) {
        snprintf(err, err_len, "cluster: out of memory");
        return NULL;
    }
    cluster_store_init(cl);
    cl->inner = inner;
    cl->cfg = cfg;
    cl->sid = random_id();
    snprintf(cl->sid_hex, sizeof cl->sid_hex, "%016" PRIx64, cl->sid);
    cl->expiration = sc->expiration > 0 ? sc->expiration : 0;
    cl->ttl_ms = cfg->cluster_key_ttl_ms;
    cl->wake_fd = -1;
    pthread_mutex_init(&cl->qlock, NULL);
    pthread_cond_init(&cl->qcond, NULL);
    pthread_mutex_init(&cl->holders_lock, NULL);
    pthread_mutex_init(&cl->slock, NULL);
    if (clr_init(&cl->redis, sc, err, err_len)) {
        cl->inner = NULL; /* the caller still owns it */
        cluster_free(cl);
        return NULL;
    }
    log_info("cluster: server id %s; sharing sessions through Redis", cl->sid_hex);
    return cl;
}

struct store *cluster_store(struct cluster *cl) { return &cl->store; }

int cluster_run(struct cluster *cl, struct hub *h)
{
    cl->hub = h;
    struct hub_relay relay = {
        .arg = cl,
        .broadcast = relay_broadcast,
        .client_key_set = relay_client_key_set,
        .session_key_set = relay_session_key_set,
        .client_left = relay_client_left,
    };
    hub_set_relay(h, &relay);
    heartbeat(cl); /* alive before the first client can own a key */
    if (cluster_sub_start(cl)) return -1;
    if (pthread_create(&cl->beat, NULL, beat_main, cl)) return -1;
    cl->beat_started = true;
    return 0;
}

void cluster_stop(struct cluster *cl)
{
    if (!cl) return;
    atomic_store(&cl->stopping, true);
    cluster_sub_stop(cl);
    if (cl->beat_started) {
        pthread_mutex_lock(&cl->qlock);
        pthread_cond_signal(&cl->qcond);
        pthread_mutex_unlock(&cl->qlock);
        pthread_join(cl->beat, NULL);
        cl->beat_started = false;
    }
    /* Withdraw: whatever keys remain are removed by the others at once. */
    size_t klen;
    char *key = cl_key("zwibbler-server:", cl->sid_hex, 16, &klen);
    if (key) {
        const char *argv[] = {"DEL", key};
        size_t lens[] = {3, klen};
        redisReply *r = clr_command(&cl->redis, 2, argv, lens);
        if (r) freeReplyObject(r);
        free(key);
    }
}

void cluster_free(struct cluster *cl)
{
    if (!cl) return;
    while (cl->qhead) {
        struct cl_event *e = cl->qhead;
        cl->qhead = e->next;
        free(e);
    }
    clr_free(&cl->redis);
    free(cl->holders);
    free(cl->suspects);
    pthread_mutex_destroy(&cl->qlock);
    pthread_cond_destroy(&cl->qcond);
    pthread_mutex_destroy(&cl->holders_lock);
    pthread_mutex_destroy(&cl->slock);
    free(cl);
}
