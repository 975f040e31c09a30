/* cluster_members: the membership queue, heartbeat and reaper thread
 * (cluster_members.h).
 *
 * Timing: a server is taken for dead after two scans (one per beat) in a row found
 * its liveness key missing. A dead server's keys so go within 5/6 of ClusterKeyTtlMs,
 * and a live one is never taken for dead unless it missed three beats — nor because
 * Redis itself was away longer than the key lives (then every key is missing until
 * the next beat, but not for two scans). */
#include "cluster_members.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mono.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_link.h"
#include "webhook.h"

#define MAX_QUEUE 100000 /* work waiting for Redis; beyond, dropped */

enum member_op {
    OP_ACTIVE, /* this server has clients of the document now */
    OP_IDLE,   /* ... no more */
    OP_DROP,   /* remove a departed client's keys */
};

struct member_work {
    struct member_work *next;
    enum member_op op;
    uint64_t client;
    size_t doc_len;
    char doc[];
};

struct cluster_members {
    struct redis_cluster *rc;
    struct webhook *webhook;
    int ttl_ms;
    pthread_t thread;
    atomic_bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct member_work *head, *tail;
    size_t len;
    char (*suspects)[17]; /* servers whose liveness key was missing at the last scan */
    size_t nsuspects;
};

static void queue(struct cluster_members *m, enum member_op op, const char *doc, size_t len,
                  uint64_t client)
{
    struct member_work *w = malloc(sizeof *w + len);
    if (!w) return;
    w->next = NULL;
    w->op = op;
    w->client = client;
    w->doc_len = len;
    memcpy(w->doc, doc, len);
    pthread_mutex_lock(&m->lock);
    if (m->len >= MAX_QUEUE) {
        pthread_mutex_unlock(&m->lock);
        log_error("cluster: %d membership updates waiting for Redis; dropping one for %.*s",
                  MAX_QUEUE, (int)len, doc);
        free(w);
        return;
    }
    if (m->tail)
        m->tail->next = w;
    else
        m->head = w;
    m->tail = w;
    m->len++;
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

void cluster_members_active(struct cluster_members *m, const char *doc, size_t len)
{
    queue(m, OP_ACTIVE, doc, len, 0);
}

void cluster_members_idle(struct cluster_members *m, const char *doc, size_t len)
{
    queue(m, OP_IDLE, doc, len, 0);
}

void cluster_members_drop_later(struct cluster_members *m, const char *doc, size_t len,
                                uint64_t client)
{
    queue(m, OP_DROP, doc, len, client);
}

/* Runs one piece of work. Returns 0, or -1 when Redis was unreachable (retry). */
static int run(struct cluster_members *m, struct member_work *w)
{
    int err = STORE_OK;
    bool idle = false;
    switch (w->op) {
    case OP_DROP: err = redis_cluster_client_keys_drop(m->rc, w->doc, w->doc_len, w->client); break;
    case OP_ACTIVE: err = redis_cluster_member_add(m->rc, w->doc, w->doc_len); break;
    case OP_IDLE:
        err = redis_cluster_member_del(m->rc, w->doc, w->doc_len, &idle);
        if (idle && m->webhook) webhook_doc_idle(m->webhook, w->doc, w->doc_len);
        break;
    }
    return err == STORE_EUNAVAILABLE ? -1 : 0; /* other failures are logged, not retried */
}

/* Runs the queue in order; stops at the first that must wait for Redis. */
static void run_queue(struct cluster_members *m)
{
    for (;;) {
        pthread_mutex_lock(&m->lock);
        struct member_work *w = m->head;
        pthread_mutex_unlock(&m->lock);
        if (!w || run(m, w)) return;
        pthread_mutex_lock(&m->lock);
        m->head = w->next;
        if (!m->head) m->tail = NULL;
        m->len--;
        pthread_mutex_unlock(&m->lock);
        free(w);
    }
}

/* ---- the reaper ---- */

struct scan {
    char (*missing)[17];
    size_t n, cap;
    bool failed;
};

static void add_missing(void *arg, const char *server)
{
    struct scan *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        char(*nm)[17] = realloc(s->missing, cap * sizeof *nm);
        if (!nm) {
            s->failed = true;
            return;
        }
        s->missing = nm;
        s->cap = cap;
    }
    memcpy(s->missing[s->n], server, 16);
    s->missing[s->n++][16] = 0;
}

struct reap_ctx {
    struct cluster_members *m;
    const char *server;
};

static void reaped(void *arg, const char *doc, size_t len, long long removed, bool idle)
{
    struct reap_ctx *r = arg;
    if (removed > 0)
        log_info("cluster: server %s is gone: removed its %lld client key(s) of %.*s", r->server,
                 removed, (int)len, doc);
    if (idle && r->m->webhook) webhook_doc_idle(r->m->webhook, doc, len);
}

static bool suspected(const struct cluster_members *m, const char *server)
{
    for (size_t i = 0; i < m->nsuspects; i++)
        if (!memcmp(m->suspects[i], server, 16)) return true;
    return false;
}

/* Removes what servers whose liveness key stayed missing for two scans left. */
static void reap(struct cluster_members *m)
{
    struct scan s = { 0 };
    if (redis_cluster_missing_servers(m->rc, add_missing, &s) || s.failed) {
        free(s.missing); /* a failed scan keeps the previous suspects */
        return;
    }
    for (size_t i = 0; i < s.n && !atomic_load(&m->stopping); i++) {
        if (!suspected(m, s.missing[i])) continue;
        struct reap_ctx r = { m, s.missing[i] };
        redis_cluster_reap(m->rc, s.missing[i], reaped, &r);
    }
    free(m->suspects);
    m->suspects = s.missing;
    m->nsuspects = s.n;
}

static void *members_main(void *arg)
{
    struct cluster_members *m = arg;
    int period = m->ttl_ms / 6 > 100 ? m->ttl_ms / 6 : 100;
    int64_t next = 0;
    pthread_mutex_lock(&m->lock);
    while (!atomic_load(&m->stopping)) {
        pthread_mutex_unlock(&m->lock);
        run_queue(m);
        if (mono_ms() >= next) {
            redis_cluster_heartbeat(m->rc, m->ttl_ms / 2);
            reap(m);
            next = mono_ms() + period;
        }
        pthread_mutex_lock(&m->lock);
        if (atomic_load(&m->stopping)) break;
        /* Wake for new work, or at the next beat; work that waits for Redis is
         * retried then. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait = m->head ? 250 : next - mono_ms();
        if (wait < 10) wait = 10;
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&m->cond, &m->lock, &ts);
    }
    pthread_mutex_unlock(&m->lock);
    run_queue(m); /* last departures, once */
    return NULL;
}

struct cluster_members *cluster_members_start(struct redis_cluster *rc, struct webhook *w,
                                              int ttl_ms)
{
    struct cluster_members *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->rc = rc;
    m->webhook = w;
    m->ttl_ms = ttl_ms;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->cond, NULL);
    redis_cluster_heartbeat(rc, ttl_ms / 2); /* alive before the first client can own a key */
    if (pthread_create(&m->thread, NULL, members_main, m)) {
        pthread_mutex_destroy(&m->lock);
        pthread_cond_destroy(&m->cond);
        free(m);
        return NULL;
    }
    return m;
}

void cluster_members_stop(struct cluster_members *m)
{
    if (!m) return;
    atomic_store(&m->stopping, true);
    pthread_mutex_lock(&m->lock);
    pthread_cond_signal(&m->cond);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    while (m->head) {
        struct member_work *w = m->head;
        m->head = w->next;
        free(w);
    }
    free(m->suspects);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->cond);
    free(m);
}
