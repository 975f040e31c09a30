/* hub: owns the table of live documents (sharded by id, one mutex per shard), their
 * member lists and client keys, the fan-out of appends in commit order, and the hub's
 * counters. Per-client queues are outq's. */
#include "hub_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "log.h"
#include "message.h"
#include "store.h"
#include "wsframe.h"

#define SHARD_COUNT 64

struct shard {
    pthread_mutex_t lock;
    struct doc **buckets;
    size_t nbuckets, count;
};

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

/* ---- catch-up ---- */

/* Smaller documents are read again for each joiner: cheap, and nothing is held. */
#define CATCH_UP_SHARED_MIN (64u << 10)

struct message *hub_catch_up(struct hub *h, struct doc *d, int version, uint64_t start,
                             uint64_t length, uint64_t *end, int *rc)
{
    int v = version == 2 ? 0 : 1;
    *rc = STORE_OK;
    if (start == 0 && d->catch_up[v] && d->catch_up_len == length) {
        *end = length;
        return message_ref(d->catch_up[v]);
    }
    uint8_t *bytes = NULL;
    size_t n = 0;
    if (start < length) {
        uint64_t total;
        *rc = store_doc_read(h->store, d->id, d->id_len, start, &bytes, &n, &total);
        if (*rc) return NULL;
    }
    struct message *m = msg_append(version, start, bytes, n);
    free(bytes);
    if (!m) {
        *rc = STORE_ENOMEM;
        return NULL;
    }
    *end = start + n;
    if (start == 0 && n >= CATCH_UP_SHARED_MIN && *end == length) {
        if (d->catch_up_len != length)
            for (int i = 0; i < 2; i++) {
                message_unref(d->catch_up[i]);
                d->catch_up[i] = NULL;
            }
        message_unref(d->catch_up[v]);
        d->catch_up[v] = message_ref(m);
        d->catch_up_len = length;
    }
    return m;
}

/* ---- sending ---- */

int hub_send(struct hub *h, struct hub_client *c, struct message *m, bool exempt)
{
    if (!m) {
        outq_kill(h->outq, c, WS_CLOSE_SERVER_ERROR, "out of memory encoding a message");
        return -1;
    }
    int rc = outq_push(h->outq, c, m, exempt);
    message_unref(m);
    return rc;
}

void hub_send_error_and_close(struct hub *h, struct hub_client *c, uint16_t code, const char *text)
{
    /* What the client sent before this is not run (deleteDocument, updateUser). */
    atomic_store(&c->closing, true);
    hub_send(h, c, msg_error(code, text), true);
    outq_close_after_drain(h->outq, c, WS_CLOSE_NORMAL);
}

void hub_send_others(struct hub *h, struct doc *d, struct hub_client *except, struct message *m)
{
    if (!m) return;
    for (struct hub_client *o = d->clients; o; o = o->doc_next)
        if (o != except) outq_push(h->outq, o, m, false);
}

void hub_push_append(struct hub *h, struct hub_client *o, struct message *by_version[2],
                     uint64_t offset, const uint8_t *data, size_t len)
{
    int v = o->version == 2 ? 0 : 1;
    if (!by_version[v]) by_version[v] = msg_append(o->version, offset, data, len);
    if (by_version[v]) outq_push(h->outq, o, by_version[v], false);
    else outq_kill(h->outq, o, WS_CLOSE_SERVER_ERROR, "out of memory encoding an append");
    o->delivered_end = offset + len;
}

void hub_fanout_append(struct hub *h, struct doc *d, struct hub_client *writer,
                       uint64_t offset, const uint8_t *data, size_t len)
{
    struct message *by_version[2] = {NULL, NULL};
    for (struct hub_client *o = d->clients; o; o = o->doc_next) {
        if (o == writer) continue;
        if (offset < o->delivered_end) continue; /* already has these bytes (§3.7) */
        if (offset > o->delivered_end)
            log_error("document %.*s: client %llu would miss bytes %llu-%llu; ordering bug",
                      (int)d->id_len, d->id, (unsigned long long)o->id,
                      (unsigned long long)o->delivered_end, (unsigned long long)offset);
        hub_push_append(h, o, by_version, offset, data, len);
    }
    message_unref(by_version[0]);
    message_unref(by_version[1]);
}

/* ---- the document table ---- */

static struct shard *shard_of(struct hub *h, uint64_t hash)
{
    return &h->shards[hash % SHARD_COUNT];
}

static int shard_grow(struct shard *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : 64;
    struct doc **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct doc *d = s->buckets[i];
        while (d) {
            struct doc *next = d->shard_next;
            size_t k = (d->hash / SHARD_COUNT) % n;
            d->shard_next = b[k];
            b[k] = d;
            d = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return 0;
}

static struct doc **shard_slot(struct shard *s, uint64_t hash, const char *id, size_t id_len)
{
    if (!s->nbuckets) return NULL;
    struct doc **p = &s->buckets[(hash / SHARD_COUNT) % s->nbuckets];
    for (; *p; p = &(*p)->shard_next)
        if ((*p)->hash == hash && (*p)->id_len == id_len && !memcmp((*p)->id, id, id_len)) return p;
    return p;
}

struct doc *hub_doc_find(struct hub *h, const char *id, size_t id_len)
{
    uint64_t hash = hash_bytes(id, id_len);
    struct shard *s = shard_of(h, hash);
    pthread_mutex_lock(&s->lock);
    struct doc **p = shard_slot(s, hash, id, id_len);
    struct doc *d = p ? *p : NULL;
    if (d) d->refs++;
    pthread_mutex_unlock(&s->lock);
    return d;
}

struct doc *hub_doc_acquire(struct hub *h, const char *id, size_t id_len)
{
    uint64_t hash = hash_bytes(id, id_len);
    struct shard *s = shard_of(h, hash);
    pthread_mutex_lock(&s->lock);
    if (s->count >= s->nbuckets && shard_grow(s)) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    struct doc **p = shard_slot(s, hash, id, id_len);
    struct doc *d = *p;
    if (!d) {
        d = calloc(1, sizeof *d);
        char *copy = malloc(id_len + 1);
        if (!d || !copy) {
            free(d);
            free(copy);
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        memcpy(copy, id, id_len);
        copy[id_len] = 0;
        d->id = copy;
        d->id_len = id_len;
        d->hash = hash;
        pthread_mutex_init(&d->lock, NULL);
        *p = d;
        s->count++;
        atomic_fetch_add(&h->documents, 1);
    }
    d->refs++;
    pthread_mutex_unlock(&s->lock);
    return d;
}

void hub_doc_release(struct hub *h, struct doc *d)
{
    struct shard *s = shard_of(h, d->hash);
    pthread_mutex_lock(&s->lock);
    if (--d->refs > 0) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    struct doc **p = shard_slot(s, d->hash, d->id, d->id_len);
    *p = d->shard_next;
    s->count--;
    pthread_mutex_unlock(&s->lock);
    atomic_fetch_sub(&h->documents, 1);
    /* No reference left means no member and so no client key either. */
    free(d->keys);
    hub_keyview_free(d);
    message_unref(d->catch_up[0]);
    message_unref(d->catch_up[1]);
    pthread_mutex_destroy(&d->lock);
    free(d->id);
    free(d);
}

/* ---- membership ---- */

void hub_doc_join(struct hub *h, struct doc *d, struct hub_client *c, uint64_t delivered_end)
{
    c->doc = d;
    c->delivered_end = delivered_end;
    c->doc_prev = NULL;
    c->doc_next = d->clients;
    if (d->clients) d->clients->doc_prev = c;
    d->clients = c;
    if (++d->nclients == 1 && h->listener.doc_active)
        h->listener.doc_active(h->listener.arg, d->id, d->id_len);
}

static void free_key(struct client_key *k)
{
    free(k->name);
    free(k->value);
}

void hub_doc_leave(struct hub *h, struct hub_client *c)
{
    struct doc *d = c->doc;
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    if (c->doc_prev) c->doc_prev->doc_next = c->doc_next;
    else d->clients = c->doc_next;
    if (c->doc_next) c->doc_next->doc_prev = c->doc_prev;
    c->doc_prev = c->doc_next = NULL;
    d->nclients--;
    /* Its client keys go, announced as empty with version + 1 (docs/protocol.md, Keys). */
    size_t kept = 0;
    for (size_t i = 0; i < d->nkeys; i++) {
        struct client_key *k = &d->keys[i];
        if (k->owner != c) {
            d->keys[kept++] = *k;
            continue;
        }
        struct message *m = msg_key_info_one(k->version + 1, k->name, k->name_len, NULL, 0);
        hub_send_others(h, d, NULL, m);
        message_unref(m);
        free_key(k);
    }
    d->nkeys = kept;
    bool idle = d->nclients == 0;
    if (idle && h->listener.doc_idle) h->listener.doc_idle(h->listener.arg, d->id, d->id_len);
    pthread_mutex_unlock(&d->lock);
    /* Cluster mode: its client keys live in the shared store, not in d->keys. */
    if (hub_clustered(h)) h->relay.client_left(h->relay.arg, d->id, d->id_len, c->id);
    c->doc = NULL;
    hub_doc_release(h, d);
}

/* ---- management ---- */

/* Every live document with a reference, so they can be visited without the shard
 * locks. Returns the count; *out is malloc'd. */
static size_t all_docs(struct hub *h, struct doc ***out)
{
    size_t n = 0, cap = 0;
    struct doc **list = NULL;
    for (int i = 0; i < SHARD_COUNT; i++) {
        struct shard *s = &h->shards[i];
        pthread_mutex_lock(&s->lock);
        for (size_t b = 0; b < s->nbuckets; b++)
            for (struct doc *d = s->buckets[b]; d; d = d->shard_next) {
                if (n == cap) {
                    size_t ncap = cap ? cap * 2 : 64;
                    struct doc **nl = realloc(list, ncap * sizeof *nl);
                    if (!nl) continue;
                    list = nl;
                    cap = ncap;
                }
                d->refs++;
                list[n++] = d;
            }
        pthread_mutex_unlock(&s->lock);
    }
    *out = list;
    return n;
}

int hub_close_document(struct hub *h, const char *id, size_t id_len, uint16_t code, const char *text)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return 0;
    int n = 0;
    pthread_mutex_lock(&d->lock);
    for (struct hub_client *c = d->clients; c; c = c->doc_next, n++)
        hub_send_error_and_close(h, c, code, text);
    pthread_mutex_unlock(&d->lock);
    hub_doc_release(h, d);
    return n;
}

int hub_update_user(struct hub *h, const char *user, size_t user_len, const char *perms)
{
    struct doc **docs;
    size_t n = all_docs(h, &docs);
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        struct doc *d = docs[i];
        pthread_mutex_lock(&d->lock);
        for (struct hub_client *c = d->clients; c; c = c->doc_next) {
            if (!c->auth.user_id || strlen(c->auth.user_id) != user_len ||
                memcmp(c->auth.user_id, user, user_len) || !*c->auth.user_id)
                continue;
            snprintf(c->auth.permissions, sizeof c->auth.permissions, "%s", perms);
            changed++;
            if (!auth_can(&c->auth, 'r')) hub_send_error_and_close(h, c, CODEC_ERR_ACCESS_DENIED, "access denied");
        }
        pthread_mutex_unlock(&d->lock);
        hub_doc_release(h, d);
    }
    free(docs);
    return changed;
}

void hub_get_stats(struct hub *h, struct hub_stats *out)
{
    out->connections = atomic_load(&h->connections);
    out->documents = atomic_load(&h->documents);
    out->appends_accepted = atomic_load(&h->appends_accepted);
    out->appends_rejected = atomic_load(&h->appends_rejected);
    out->bytes_in = atomic_load(&h->bytes_in);
    out->bytes_out = atomic_load(&h->outq->counters->bytes_out);
    out->messages_out = atomic_load(&h->outq->counters->messages_out);
    out->slow_disconnects = atomic_load(&h->outq->counters->slow_disconnects);
}

/* ---- life cycle ---- */

struct hub *hub_create(const struct config *cfg, struct store *store, const struct outq *outq,
                       const struct hub_listener *listener)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->cfg = cfg;
    h->store = store;
    h->outq = outq;
    if (listener) h->listener = *listener;
    h->shards = calloc(SHARD_COUNT, sizeof *h->shards);
    if (!h->shards) goto fail;
    for (int i = 0; i < SHARD_COUNT; i++) pthread_mutex_init(&h->shards[i].lock, NULL);
    return h;
fail:
    free(h->shards);
    free(h);
    return NULL;
}

void hub_destroy(struct hub *h)
{
    if (!h) return;
    for (int i = 0; i < SHARD_COUNT; i++) {
        free(h->shards[i].buckets);
        pthread_mutex_destroy(&h->shards[i].lock);
    }
    free(h->shards);
    free(h);
}
