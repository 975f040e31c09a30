/* cluster_sub: the subscriber thread. One Redis connection per server, subscribed to
 * the cluster channel and to the channel of every document this server has clients
 * for. Announcements are handed to the hub in the order Redis sends them, which is the
 * order it committed them. Whenever announcements may have been missed (a new
 * subscription, a reconnect after Redis went away) the document's local members are
 * first caught up from the store and re-sent its keys, so nothing is lost while the
 * subscription was not in place. */
#include "cluster_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "log.h"
#include "webhook.h"

#define NBUCKETS 4096
#define BACKOFF_MAX_MS 2000
#define RETRY_MS 250

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The documents subscribed to, owned by the subscriber thread. */
struct sub_entry {
    struct sub_entry *next;
    bool behind; /* some member could not be caught up yet (store unavailable) */
    size_t len;
    char id[];
};

struct sub_state {
    struct cluster *cl;
    redisContext *ctx;
    bool any_behind;
    struct sub_entry *buckets[NBUCKETS];
};

static size_t bucket(const char *id, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    return h % NBUCKETS;
}

static struct sub_entry **find(struct sub_state *st, const char *id, size_t n)
{
    struct sub_entry **p = &st->buckets[bucket(id, n)];
    while (*p && ((*p)->len != n || memcmp((*p)->id, id, n))) p = &(*p)->next;
    return p;
}

/* Wakes the subscriber (an eventfd counter: it cannot fill up here). */
static void wake(struct cluster *cl)
{
    uint64_t one = 1;
    ssize_t n = write(cl->wake_fd, &one, sizeof one);
    (void)n;
}

void cluster_sub_queue(struct cluster *cl, char op, const char *id, size_t id_len)
{
    struct cl_event *e = malloc(sizeof *e + id_len);
    if (!e) {
        log_error("cluster: out of memory queueing a subscription of %.*s", (int)id_len, id);
        return;
    }
    e->next = NULL;
    e->op = op;
    e->id_len = id_len;
    memcpy(e->id, id, id_len);
    pthread_mutex_lock(&cl->slock);
    if (cl->stail) cl->stail->next = e;
    else cl->shead = e;
    cl->stail = e;
    pthread_mutex_unlock(&cl->slock);
    wake(cl);
}

/* Queues (UN)SUBSCRIBE of one document channel on the connection. */
static int send_sub(struct sub_state *st, const char *cmd, const char *id, size_t n)
{
    size_t clen;
    char *chan = cl_key(CL_CHANNEL, id, n, &clen);
    if (!chan) return -1;
    const char *argv[] = {cmd, chan};
    size_t lens[] = {strlen(cmd), clen};
    int rc = redisAppendCommandArgv(st->ctx, 2, argv, lens) == REDIS_OK ? 0 : -1;
    free(chan);
    return rc;
}

static int flush_out(redisContext *c)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK) return -1;
    return 0;
}

/* Applies the queued (un)subscriptions to the set and, when connected, to Redis. */
static int drain_queue(struct sub_state *st)
{
    struct cluster *cl = st->cl;
    uint64_t v;
    ssize_t got = read(cl->wake_fd, &v, sizeof v); /* resets the counter */
    (void)got;
    pthread_mutex_lock(&cl->slock);
    struct cl_event *e = cl->shead;
    cl->shead = cl->stail = NULL;
    pthread_mutex_unlock(&cl->slock);
    int rc = 0;
    while (e) {
        struct cl_event *next = e->next;
        struct sub_entry **p = find(st, e->id, e->id_len);
        if (e->op == 'a' && !*p) {
            struct sub_entry *s = malloc(sizeof *s + e->id_len);
            if (s) {
                s->next = NULL;
                s->behind = false;
                s->len = e->id_len;
                memcpy(s->id, e->id, e->id_len);
                *p = s;
                if (st->ctx && send_sub(st, "SUBSCRIBE", e->id, e->id_len)) rc = -1;
            }
        } else if (e->op == 'i' && *p) {
            struct sub_entry *s = *p;
            *p = s->next;
            free(s);
            if (st->ctx && send_sub(st, "UNSUBSCRIBE", e->id, e->id_len)) rc = -1;
        }
        free(e);
        e = next;
    }
    if (st->ctx && rc == 0) rc = flush_out(st->ctx);
    return rc;
}

/* ---- announcements ---- */

/* The 'S' announcement's key, re-read from the store. */
struct key_lookup {
    const uint8_t *name;
    size_t name_len;
    struct hub *hub;
    const char *id;
    size_t id_len;
    uint64_t setter;
    uint32_t announced; /* version the announcement carried */
};

static int deliver_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint32_t version)
{
    struct key_lookup *k = arg;
    if (name_len != k->name_len || memcmp(name, k->name, name_len)) return 0;
    /* The setter knows its own value; a newer one it must get. */
    uint64_t setter = version == k->announced ? k->setter : 0;
    hub_deliver_key(k->hub, k->id, k->id_len, setter, version, name, name_len, value, value_len);
    return 1;
}

/* A document whose members are behind is retried until they are caught up. */
static void mark_behind(struct sub_state *st, const char *id, size_t n)
{
    struct sub_entry *e = *find(st, id, n);
    if (e) e->behind = st->any_behind = true;
}

struct keys_source {
    struct cluster *cl;
    const char *id;
    size_t id_len;
};

/* hub_keys_reader: the document's client keys, then its session keys. */
static int read_keys(void *arg, hub_key_fn add, void *add_arg)
{
    struct keys_source *src = arg;
    int rc = cluster_client_keys(src->cl, src->id, src->id_len, add, add_arg);
    if (rc == STORE_OK) rc = store_keys_get(src->cl->inner, src->id, src->id_len, add, add_arg);
    return rc;
}

/* Members may have missed announcements: bytes from the store, then the keys that
 * changed meanwhile. Returns -1 when that must be tried again later. */
static int resync(struct cluster *cl, const char *id, size_t n)
{
    int rc = hub_catch_up_document(cl->hub, id, n);
    if (rc <= 0) return rc;
    struct keys_source src = {cl, id, n};
    return hub_sync_keys(cl->hub, id, n, read_keys, &src);
}

static void retry_behind(struct sub_state *st)
{
    st->any_behind = false;
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct sub_entry *e = st->buckets[b]; e; e = e->next)
            if (e->behind) {
                e->behind = resync(st->cl, e->id, e->len) < 0;
                if (e->behind) st->any_behind = true;
            }
}

static void on_doc_message(struct sub_state *st, const char *id, size_t n, const uint8_t *p, size_t len)
{
    struct cluster *cl = st->cl;
    if (len < 1) return;
    uint8_t type = p[0];
    if (type == 'A' && len >= 9) {
        if (hub_deliver_append(cl->hub, id, n, cl_get64(p + 1), p + 9, len - 9)) mark_behind(st, id, n);
        return;
    }
    if (type == 'D' && len >= 9) {
        if (cl_get64(p + 1) != cl->sid) hub_close_document(cl->hub, id, n, 1, "does not exist");
        return;
    }
    if (len < 17) goto bad;
    uint64_t sid = cl_get64(p + 1), cid = cl_get64(p + 9);
    uint64_t except = sid == cl->sid ? cid : 0;
    if (type == 'B') {
        hub_deliver_broadcast(cl->hub, id, n, except, p + 17, len - 17);
    } else if ((type == 'K' || type == 'R') && len >= 25) {
        uint32_t version = cl_get32(p + 17), name_len = cl_get32(p + 21);
        if (name_len > len - 25) goto bad;
        if (type == 'K')
            hub_deliver_key(cl->hub, id, n, except, version, p + 25, name_len, p + 25 + name_len,
                            len - 25 - name_len);
        else
            hub_deliver_key_removed(cl->hub, id, n, version, p + 25, name_len);
    } else if (type == 'S' && len >= 21) {
        /* Re-read, so that two setters' announcements crossing cannot leave anyone
         * with the older value. */
        struct key_lookup k = {.name = p + 21, .name_len = len - 21, .hub = cl->hub, .id = id,
                               .id_len = n, .setter = except,
                               .announced = cl_get32(p + 17)};
        int rc = store_keys_get(cl->inner, id, n, deliver_key, &k);
        if (rc) log_warn("cluster: session key of %.*s: %s", (int)n, id, store_strerror(rc));
    } else {
        goto bad;
    }
    return;
bad:
    log_warn("cluster: malformed announcement (type 0x%02x, %zu bytes) on %.*s", type, len, (int)n, id);
}

/* 'U' server u64, userLen u32, user, permissions: updateUser on another server. */
static void on_user_update(struct cluster *cl, const uint8_t *p, size_t len)
{
    uint32_t ulen = cl_get32(p + 9);
    if (ulen > len - 13 || len - 13 - ulen >= 8) {
        log_warn("cluster: malformed user update announcement");
        return;
    }
    char perms[8];
    memcpy(perms, p + 13 + ulen, len - 13 - ulen);
    perms[len - 13 - ulen] = 0;
    hub_update_user(cl->hub, (const char *)p + 13, ulen, perms);
}

static void on_reply(struct sub_state *st, redisReply *r)
{
    struct cluster *cl = st->cl;
    if (r->type != REDIS_REPLY_ARRAY) return;
    if (r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    const char *ch = r->element[1]->str;
    size_t chlen = r->element[1]->len, plen = strlen(CL_CHANNEL);
    bool doc = chlen >= plen && !memcmp(ch, CL_CHANNEL, plen);
    if (!strcmp(kind, "subscribe")) {
        if (doc && resync(cl, ch + plen, chlen - plen) < 0) mark_behind(st, ch + plen, chlen - plen);
    } else if (!strcmp(kind, "message") && r->element[2]->type == REDIS_REPLY_STRING) {
        const uint8_t *p = (const uint8_t *)r->element[2]->str;
        size_t len = r->element[2]->len;
        if (doc) on_doc_message(st, ch + plen, chlen - plen, p, len);
        else if (len > 1 && p[0] == 'J' && cl->webhook)
            webhook_doc_active(cl->webhook, (const char *)p + 1, len - 1);
        else if (len >= 13 && p[0] == 'U' && cl_get64(p + 1) != cl->sid)
            on_user_update(cl, p, len);
    }
}

/* Connects and subscribes to everything in the set. */
static int connect_all(struct sub_state *st)
{
    char why[160];
    st->ctx = clr_connect(&st->cl->redis, why, sizeof why);
    if (!st->ctx) {
        log_warn("cluster: subscriber: %s", why);
        return -1;
    }
    const char *argv[] = {"SUBSCRIBE", CL_GLOBAL};
    size_t lens[] = {9, strlen(CL_GLOBAL)};
    if (redisAppendCommandArgv(st->ctx, 2, argv, lens) != REDIS_OK) return -1;
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct sub_entry *s = st->buckets[b]; s; s = s->next)
            if (send_sub(st, "SUBSCRIBE", s->id, s->len)) return -1;
    return flush_out(st->ctx);
}

static void *sub_main(void *arg)
{
    struct sub_state *st = calloc(1, sizeof *st);
    struct cluster *cl = arg;
    if (!st) {
        log_error("cluster: subscriber: out of memory");
        return NULL;
    }
    st->cl = cl;
    int backoff = 100;
    int64_t next_retry = 0;
    bool was_down = false;
    while (!atomic_load(&cl->stopping)) {
        if (!st->ctx) {
            drain_queue(st); /* keep the set current while disconnected */
            if (connect_all(st)) {
                if (st->ctx) redisFree(st->ctx);
                st->ctx = NULL;
                was_down = true;
                poll(&(struct pollfd){.fd = cl->wake_fd, .events = POLLIN}, 1, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            if (was_down) log_info("cluster: subscriber connected again; catching clients up");
            was_down = false;
            backoff = 100;
        }
        struct pollfd fds[2] = {{.fd = st->ctx->fd, .events = POLLIN}, {.fd = cl->wake_fd, .events = POLLIN}};
        int n = poll(fds, 2, st->any_behind ? RETRY_MS : 1000);
        if (n < 0 && errno != EINTR) break;
        bool failed = false;
        if (fds[1].revents & POLLIN) failed = drain_queue(st) != 0;
        if (!failed && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            if (redisBufferRead(st->ctx) != REDIS_OK) failed = true;
            void *reply;
            while (!failed) {
                if (redisGetReplyFromReader(st->ctx, &reply) != REDIS_OK) failed = true;
                else if (!reply) break;
                else {
                    on_reply(st, reply);
                    freeReplyObject(reply);
                }
            }
        }
        if (!failed && st->any_behind && now_ms() >= next_retry) {
            retry_behind(st);
            next_retry = now_ms() + RETRY_MS;
        }
        if (failed) {
            log_warn("cluster: subscriber lost Redis (%s); reconnecting",
                     st->ctx->errstr[0] ? st->ctx->errstr : "error");
            redisFree(st->ctx);
            st->ctx = NULL;
            was_down = true;
        }
    }
    if (st->ctx) redisFree(st->ctx);
    for (size_t b = 0; b < NBUCKETS; b++)
        while (st->buckets[b]) {
            struct sub_entry *s = st->buckets[b];
            st->buckets[b] = s->next;
            free(s);
        }
    free(st);
    return NULL;
}

int cluster_sub_start(struct cluster *cl)
{
    cl->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cl->wake_fd < 0) return -1;
    if (pthread_create(&cl->sub, NULL, sub_main, cl)) return -1;
    cl->sub_started = true;
    return 0;
}

void cluster_sub_stop(struct cluster *cl)
{
    if (cl->sub_started) {
        wake(cl);
        pthread_join(cl->sub, NULL);
        cl->sub_started = false;
    }
    if (cl->wake_fd >= 0) close(cl->wake_fd);
    cl->wake_fd = -1;
    while (cl->shead) {
        struct cl_event *e = cl->shead;
        cl->shead = e->next;
        free(e);
    }
    cl->stail = NULL;
}
