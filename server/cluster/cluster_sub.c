/* cluster_sub: the subscriber thread (cluster_sub.h). It owns the set of documents
 * subscribed to; sessions ask for changes through a queue and an eventfd. */
#include "cluster_sub.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mono.h"
#include "hub.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_link.h"
#include "redis_sub.h"
#include "store.h"
#include "webhook.h"

#define NBUCKETS 4096
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 1000
#define RETRY_MS 250

/* A requested (un)subscription. */
struct watch {
    struct watch *next;
    bool on;
    size_t len;
    char doc[];
};

/* A document subscribed to. */
struct entry {
    struct entry *next;
    bool behind; /* some member could not be caught up yet (store unavailable) */
    size_t len;
    char doc[];
};

struct cluster_sub {
    struct cluster_sub_config cfg;
    pthread_t thread;
    atomic_bool stopping;
    int wake_fd;
    pthread_mutex_t lock; /* the queue */
    struct watch *head, *tail;

    /* the thread's own */
    struct redis_sub *conn;
    bool any_behind;
    struct entry *buckets[NBUCKETS];
};

static size_t bucket(const char *doc, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)doc[i]) * 1099511628211ull;
    return h % NBUCKETS;
}

static struct entry **find(struct cluster_sub *s, const char *doc, size_t n)
{
    struct entry **p = &s->buckets[bucket(doc, n)];
    while (*p && ((*p)->len != n || memcmp((*p)->doc, doc, n))) p = &(*p)->next;
    return p;
}

/* Wakes the thread (an eventfd counter: it cannot fill up here). */
static void wake(struct cluster_sub *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->wake_fd, &one, sizeof one);
    (void)n;
}

void cluster_sub_watch(struct cluster_sub *s, const char *doc, size_t len, bool on)
{
    struct watch *w = malloc(sizeof *w + len);
    if (!w) {
        log_error("cluster: out of memory queueing a subscription of %.*s", (int)len, doc);
        return;
    }
    w->next = NULL;
    w->on = on;
    w->len = len;
    memcpy(w->doc, doc, len);
    pthread_mutex_lock(&s->lock);
    if (s->tail)
        s->tail->next = w;
    else
        s->head = w;
    s->tail = w;
    pthread_mutex_unlock(&s->lock);
    wake(s);
}

/* Applies the queued (un)subscriptions to the set and, when connected, to Redis.
 * Returns 0, or -1 when the connection failed. */
static int drain_queue(struct cluster_sub *s)
{
    uint64_t v;
    ssize_t got = read(s->wake_fd, &v, sizeof v); /* resets the counter */
    (void)got;
    pthread_mutex_lock(&s->lock);
    struct watch *w = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->lock);
    int rc = 0;
    while (w) {
        struct watch *next = w->next;
        struct entry **p = find(s, w->doc, w->len);
        if (w->on && !*p) {
            struct entry *e = malloc(sizeof *e + w->len);
            if (e) {
                e->next = NULL;
                e->behind = false;
                e->len = w->len;
                memcpy(e->doc, w->doc, w->len);
                *p = e;
                if (s->conn && redis_sub_watch(s->conn, w->doc, w->len, true)) rc = -1;
            }
        } else if (!w->on && *p) {
            struct entry *e = *p;
            *p = e->next;
            free(e);
            if (s->conn && redis_sub_watch(s->conn, w->doc, w->len, false)) rc = -1;
        }
        free(w);
        w = next;
    }
    if (s->conn && rc == 0) rc = redis_sub_flush(s->conn);
    return rc;
}

/* ---- catching up ---- */

/* A document whose members are behind is retried until they are caught up. */
static void mark_behind(struct cluster_sub *s, const char *doc, size_t n)
{
    struct entry *e = *find(s, doc, n);
    if (e) e->behind = s->any_behind = true;
}

struct keys_source {
    struct cluster_sub *s;
    const char *doc;
    size_t len;
};

/* hub_keys_reader: the document's client keys, then its session keys. */
static int read_keys(void *arg, hub_key_fn add, void *add_arg)
{
    struct keys_source *src = arg;
    int rc = redis_cluster_client_keys(src->s->cfg.rc, src->doc, src->len, add, add_arg);
    if (rc == STORE_OK) rc = store_keys_get(src->s->cfg.store, src->doc, src->len, add, add_arg);
    return rc;
}

/* Members may have missed events: bytes from the store, then the keys that changed
 * meanwhile. Returns -1 when that must be tried again later. */
static int resync(struct cluster_sub *s, const char *doc, size_t n)
{
    int rc = hub_catch_up_document(s->cfg.hub, doc, n);
    if (rc <= 0) return rc;
    struct keys_source src = { s, doc, n };
    return hub_sync_keys(s->cfg.hub, doc, n, read_keys, &src);
}

static void retry_behind(struct cluster_sub *s)
{
    s->any_behind = false;
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct entry *e = s->buckets[b]; e; e = e->next)
            if (e->behind) {
                e->behind = resync(s, e->doc, e->len) < 0;
                if (e->behind) s->any_behind = true;
            }
}

/* ---- events ---- */

/* The SESSION_KEY event's key, re-read from the store. */
struct key_lookup {
    struct hub *hub;
    const struct redis_event *ev;
    uint64_t setter;
};

static int deliver_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint32_t version)
{
    struct key_lookup *k = arg;
    const struct redis_event *ev = k->ev;
    if (name_len != ev->name_len || memcmp(name, ev->name, name_len)) return 0;
    /* The setter knows its own value; a newer one it must get. */
    uint64_t setter = version == ev->version ? k->setter : 0;
    hub_deliver_key(k->hub, ev->doc, ev->doc_len, setter, version, name, name_len, value,
                    value_len);
    return 1;
}

static void on_subscribed(void *arg, const char *doc, size_t len)
{
    struct cluster_sub *s = arg;
    if (resync(s, doc, len) < 0) mark_behind(s, doc, len);
}

static void on_event(void *arg, const struct redis_event *ev)
{
    struct cluster_sub *s = arg;
    struct hub *h = s->cfg.hub;
    /* this server's client that made it, if it was made here */
    uint64_t own = ev->server == s->cfg.server ? ev->client : 0;
    switch (ev->kind) {
    case REDIS_EV_APPEND:
        if (hub_deliver_append(h, ev->doc, ev->doc_len, ev->offset, ev->data, ev->data_len))
            mark_behind(s, ev->doc, ev->doc_len);
        break;
    case REDIS_EV_BROADCAST:
        hub_deliver_broadcast(h, ev->doc, ev->doc_len, own, ev->data, ev->data_len);
        break;
    case REDIS_EV_CLIENT_KEY:
        hub_deliver_key(h, ev->doc, ev->doc_len, own, ev->version, ev->name, ev->name_len, ev->data,
                        ev->data_len);
        break;
    case REDIS_EV_KEY_REMOVED:
        hub_deliver_key_removed(h, ev->doc, ev->doc_len, ev->version, ev->name, ev->name_len);
        break;
    case REDIS_EV_SESSION_KEY: {
        /* Re-read, so that two setters' events crossing cannot leave anyone with the
         * older value. */
        struct key_lookup k = { h, ev, own };
        int rc = store_keys_get(s->cfg.store, ev->doc, ev->doc_len, deliver_key, &k);
        if (rc)
            log_warn("cluster: session key of %.*s: %s", (int)ev->doc_len, ev->doc,
                     store_strerror(rc));
        break;
    }
    case REDIS_EV_DELETED:
        if (ev->server != s->cfg.server)
            hub_close_document(h, ev->doc, ev->doc_len, 1, "does not exist");
        break;
    case REDIS_EV_DOC_ACTIVE:
        if (s->cfg.webhook) webhook_doc_active(s->cfg.webhook, ev->doc, ev->doc_len);
        break;
    case REDIS_EV_USER:
        if (ev->server != s->cfg.server) {
            char perms[8];
            if (ev->data_len >= sizeof perms) {
                log_warn("cluster: malformed user update event");
                break;
            }
            memcpy(perms, ev->data, ev->data_len);
            perms[ev->data_len] = 0;
            hub_update_user(h, (const char *)ev->name, ev->name_len, perms);
        }
        break;
    }
}

/* ---- the thread ---- */

/* Connects and subscribes to everything in the set; the confirmations catch each
 * document up. Returns 0, or -1 (logged) to try again later. */
static int connect_all(struct cluster_sub *s)
{
    char why[300];
    if (!(s->conn = redis_sub_open(s->cfg.link, why, sizeof why))) {
        log_warn("cluster: subscriber: %s", why);
        return -1;
    }
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct entry *e = s->buckets[b]; e; e = e->next)
            if (redis_sub_watch(s->conn, e->doc, e->len, true)) return -1;
    return redis_sub_flush(s->conn);
}

static void disconnect(struct cluster_sub *s)
{
    redis_sub_close(s->conn);
    s->conn = NULL;
}

static void *sub_main(void *arg)
{
    struct cluster_sub *s = arg;
    const struct redis_sub_handler handler = { .subscribed = on_subscribed,
                                               .event = on_event,
                                               .arg = s };
    int backoff = BACKOFF_MIN_MS;
    int64_t next_retry = 0;
    bool was_down = false;
    while (!atomic_load(&s->stopping)) {
        if (!s->conn) {
            drain_queue(s); /* keep the set current while disconnected */
            if (connect_all(s)) {
                if (s->conn) disconnect(s);
                was_down = true;
                poll(&(struct pollfd){ .fd = s->wake_fd, .events = POLLIN }, 1, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            if (was_down) log_info("cluster: subscriber connected again; catching clients up");
            was_down = false;
            backoff = BACKOFF_MIN_MS;
        }
        struct pollfd fds[2] = { { .fd = redis_sub_fd(s->conn), .events = POLLIN },
                                 { .fd = s->wake_fd, .events = POLLIN } };
        int n = poll(fds, 2, s->any_behind ? RETRY_MS : 500);
        if (n < 0 && errno != EINTR) break;
        bool failed = false;
        if (fds[1].revents & POLLIN) failed = drain_queue(s) != 0;
        if (!failed && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
            failed = redis_sub_read(s->conn, &handler) != 0;
        if (!failed && s->any_behind && mono_ms() >= next_retry) {
            retry_behind(s);
            next_retry = mono_ms() + RETRY_MS;
        }
        if (failed) {
            log_warn("cluster: subscriber lost Redis (%s); reconnecting", redis_sub_error(s->conn));
            disconnect(s);
            was_down = true;
        } else if (redis_sub_stale(s->conn)) {
            /* The link lost its primary (an outage, a failover): this connection may
             * be to a server that is no longer it. */
            log_info("cluster: the primary changed; subscribing again");
            disconnect(s);
            was_down = true;
        }
    }
    if (s->conn) disconnect(s);
    return NULL;
}

struct cluster_sub *cluster_sub_start(const struct cluster_sub_config *cfg)
{
    struct cluster_sub *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->wake_fd < 0 || pthread_create(&s->thread, NULL, sub_main, s)) {
        if (s->wake_fd >= 0) close(s->wake_fd);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    return s;
}

void cluster_sub_stop(struct cluster_sub *s)
{
    if (!s) return;
    atomic_store(&s->stopping, true);
    wake(s);
    pthread_join(s->thread, NULL);
    close(s->wake_fd);
    while (s->head) {
        struct watch *w = s->head;
        s->head = w->next;
        free(w);
    }
    for (size_t b = 0; b < NBUCKETS; b++)
        while (s->buckets[b]) {
            struct entry *e = s->buckets[b];
            s->buckets[b] = e->next;
            free(e);
        }
    pthread_mutex_destroy(&s->lock);
    free(s);
}
