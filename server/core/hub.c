/* hub: owns the table of live documents (sharded by id, one mutex per shard), their
 * member lists and client keys, the fan-out of appends in commit order, and the hub's
 * counters. Per-client queues are outq's. */
#include "hub_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "config.h"
#include "log.h"
#include "message.h"

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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- encoders ---- */

struct message *msg_append(int version, uint64_t offset, const uint8_t *data, size_t len)
{
    struct message *m = message_new(codec_append_size(version, len));
    if (m) codec_encode_append(m->data, version, offset, data, len);
    return m;
}

struct message *msg_ack(uint16_t ack, uint64_t length)
{
    struct message *m = message_new(CODEC_ACK_SIZE);
    if (m) codec_encode_ack(m->data, ack, length);
    return m;
}

struct message *msg_error(uint16_t code, const char *text)
{
    size_t n = strlen(text);
    struct message *m = message_new(codec_error_size(n));
    if (m) codec_encode_error(m->data, code, text, n);
    return m;
}

struct message *msg_set_key_ack(uint16_t ack, uint16_t request_id)
{
    struct message *m = message_new(CODEC_SET_KEY_ACK_SIZE);
    if (m) codec_encode_set_key_ack(m->data, ack, request_id);
    return m;
}

struct message *msg_key_info_one(uint32_t version, const uint8_t *name, size_t name_len,
                                 const uint8_t *value, size_t value_len)
{
    struct message *m = message_new(CODEC_KEY_INFO_HEADER + codec_key_info_entry_size(name_len, value_len));
    if (!m) return NULL;
    size_t n = codec_key_info_begin(m->data);
    codec_key_info_add(m->data + n, version, name, name_len, value, value_len);
    /* The entry is version u32, nameLength u32, name: point at the name inside. */
    m->key_name = m->data + n + 8;
    m->key_name_len = name_len;
    return m;
}

/* ---- sending ---- */

int hub_send(struct hub *h, struct hub_client *c, struct message *m, bool exempt)
{
    if (!m) {
        outq_kill(h->outq, c, "out of memory encoding a message");
        return -1;
    }
    int rc = outq_push(h->outq, c, m, exempt);
    message_unref(m);
    return rc;
}

void hub_send_error_and_close(struct hub *h, struct hub_client *c, uint16_t code, const char *text)
{
    hub_send(h, c, msg_error(code, text), true);
    outq_close_after_drain(h->outq, c);
}

void hub_send_others(struct hub *h, struct doc *d, struct hub_client *except, struct message *m)
{
    if (!m) return;
    for (struct hub_client *o = d->clients; o; o = o->doc_next)
        if (o != except) outq_push(h->outq, o, m, false);
}

void hub_fanout_append(struct hub *h, struct doc *d, struct hub_client *writer,
                       uint64_t offset, const uint8_t *data, size_t len)
{
    /* Encoded at most once per protocol version (invariant 6). */
    struct message *by_version[2] = {NULL, NULL};
    for (struct hub_client *o = d->clients; o; o = o->doc_next) {
        if (o == writer) continue;
        if (offset < o->delivered_end) continue; /* already has these bytes (§3.7) */
        if (offset > o->delivered_end)
            log_error("document %.*s: client %llu would miss bytes %llu-%llu; ordering bug",
                      (int)d->id_len, d->id, (unsigned long long)o->id,
                      (unsigned long long)o->delivered_end, (unsigned long long)offset);
        o->delivered_end = offset + len;
        int v = o->version == 2 ? 0 : 1;
        if (!by_version[v]) by_version[v] = msg_append(o->version, offset, data, len);
        if (by_version[v]) outq_push(h->outq, o, by_version[v], false);
        else outq_kill(h->outq, o, "out of memory encoding an append");
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
    /* Its client keys go, announced as empty with version + 1 (PROTOCOL §4). */
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

/* ---- pending INIT ---- */

void hub_pending_add(struct hub *h, struct hub_client *c)
{
    pthread_mutex_lock(&h->pending_lock);
    c->pending_init = true;
    c->pend_prev = NULL;
    c->pend_next = h->pending;
    if (h->pending) h->pending->pend_prev = c;
    h->pending = c;
    pthread_mutex_unlock(&h->pending_lock);
}

void hub_pending_remove(struct hub *h, struct hub_client *c)
{
    pthread_mutex_lock(&h->pending_lock);
    if (c->pending_init) {
        if (c->pend_prev) c->pend_prev->pend_next = c->pend_next;
        else h->pending = c->pend_next;
        if (c->pend_next) c->pend_next->pend_prev = c->pend_prev;
        c->pending_init = false;
    }
    pthread_mutex_unlock(&h->pending_lock);
}

/* Runs on the watcher thread: connections that never sent INIT are closed. New
 * clients are added at the head, so the oldest are at the tail. */
static void hub_tick(void *arg)
{
    struct hub *h = arg;
    int64_t limit = now_ms() - h->cfg->init_timeout_ms;
    pthread_mutex_lock(&h->pending_lock);
    for (struct hub_client *c = h->pending; c; c = c->pend_next)
        if (c->connected_ms < limit) outq_kill(h->outq, c, "no INIT within the time allowed");
    pthread_mutex_unlock(&h->pending_lock);
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
    out->bytes_out = atomic_load(&h->out.bytes_out);
    out->messages_out = atomic_load(&h->out.messages_out);
    out->slow_disconnects = atomic_load(&h->out.slow_disconnects);
}

/* ---- life cycle ---- */

struct hub *hub_create(const struct config *cfg, struct store *store, const struct hub_listener *listener)
{
    struct hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->cfg = cfg;
    h->store = store;
    if (listener) h->listener = *listener;
    pthread_mutex_init(&h->pending_lock, NULL);
    h->shards = calloc(SHARD_COUNT, sizeof *h->shards);
    if (!h->shards) goto fail;
    for (int i = 0; i < SHARD_COUNT; i++) pthread_mutex_init(&h->shards[i].lock, NULL);
    h->outq = outq_start(cfg->sender_threads, cfg->send_queue_bytes, &h->out, hub_tick, h);
    if (!h->outq) goto fail;
    return h;
fail:
    free(h->shards);
    free(h);
    return NULL;
}

void hub_destroy(struct hub *h)
{
    if (!h) return;
    outq_stop(h->outq);
    for (int i = 0; i < SHARD_COUNT; i++) {
        free(h->shards[i].buckets);
        pthread_mutex_destroy(&h->shards[i].lock);
    }
    free(h->shards);
    pthread_mutex_destroy(&h->pending_lock);
    free(h);
}
