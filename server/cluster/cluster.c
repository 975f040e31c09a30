/* cluster: life cycle, the hub relay (broadcasts, client keys, session-key events) and
 * the hub listener (cluster.h). */
#include "cluster.h"

#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cluster_members.h"
#include "cluster_store.h"
#include "cluster_sub.h"
#include "config.h"
#include "hub.h"
#include "log.h"
#include "redis_cluster.h"
#include "redis_store.h"
#include "webhook.h"

struct cluster {
    struct cluster_store store;
    struct store *inner;
    struct redis_link *link;
    struct redis_cluster *rc;
    uint64_t sid; /* this server's id, random per start */
    int ttl_ms;
    struct hub *hub;
    struct webhook *webhook;
    struct cluster_members *members;
    struct cluster_sub *sub;

    /* clients of this server that set a client key (their departure must drop them) */
    pthread_mutex_t holders_lock;
    uint64_t *holders;
    size_t nholders, holders_cap;
};

/* ---- the relay ---- */

static void relay_broadcast(void *arg, const char *id, size_t id_len, uint64_t from,
                            const uint8_t *data, size_t len)
{
    struct cluster *cl = arg;
    struct redis_event ev = { .kind = REDIS_EV_BROADCAST,
                              .doc = id,
                              .doc_len = id_len,
                              .client = from,
                              .data = data,
                              .data_len = len };
    if (redis_cluster_publish(cl->rc, &ev))
        log_warn("cluster: a broadcast on %.*s was lost (Redis unreachable)", (int)id_len, id);
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
    bool accepted = false;
    holders_add(cl, from); /* before: a departure racing the write still drops it */
    redis_cluster_client_key_set(cl->rc, id, id_len, from, name, name_len, value, value_len,
                                 old_version, new_version, &accepted);
    return accepted;
}

static void relay_session_key_set(void *arg, const char *id, size_t id_len, uint64_t from,
                                  const uint8_t *name, size_t name_len, uint32_t version)
{
    struct cluster *cl = arg;
    struct redis_event ev = { .kind = REDIS_EV_SESSION_KEY,
                              .doc = id,
                              .doc_len = id_len,
                              .client = from,
                              .version = version,
                              .name = name,
                              .name_len = name_len };
    if (redis_cluster_publish(cl->rc, &ev))
        log_warn("cluster: a session key change on %.*s was not announced (Redis unreachable)",
                 (int)id_len, id);
}

static void relay_client_left(void *arg, const char *id, size_t id_len, uint64_t from)
{
    struct cluster *cl = arg;
    if (!holders_take(cl, from)) return; /* never set a client key: nothing to drop */
    if (redis_cluster_client_keys_drop(cl->rc, id, id_len, from) == STORE_EUNAVAILABLE)
        cluster_members_drop_later(cl->members, id, id_len, from);
}

static int relay_client_keys(void *arg, const char *id, size_t id_len, hub_key_fn fn, void *fnarg)
{
    struct cluster *cl = arg;
    return redis_cluster_client_keys(cl->rc, id, id_len, fn, fnarg);
}

/* ---- the hub listener ---- */

static void on_doc_active(void *arg, const char *id, size_t id_len)
{
    struct cluster *cl = arg;
    if (cl->webhook) {
        webhook_doc_active(cl->webhook, id, id_len);
        cluster_members_active(cl->members, id, id_len);
    }
    cluster_sub_watch(cl->sub, id, id_len, true);
}

static void on_doc_idle(void *arg, const char *id, size_t id_len)
{
    struct cluster *cl = arg;
    if (cl->webhook) cluster_members_idle(cl->members, id, id_len);
    cluster_sub_watch(cl->sub, id, id_len, false);
}

void cluster_listener(struct cluster *cl, struct webhook *w, struct hub_listener *out)
{
    cl->webhook = w;
    out->doc_active = on_doc_active;
    out->doc_idle = on_doc_idle;
    out->arg = cl;
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

struct cluster *cluster_start(const struct config *cfg, struct store *inner, char *err,
                              size_t err_len)
{
    struct redis_link *link = redis_store_link(inner);
    if (!link) {
        snprintf(err, err_len, "cluster mode needs the Redis store");
        return NULL;
    }
    struct cluster *cl = calloc(1, sizeof *cl);
    if (!cl) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cl->holders_lock, NULL);
    cl->inner = inner;
    cl->link = link;
    cl->sid = random_id();
    cl->ttl_ms = cfg->cluster_key_ttl_ms;
    if (!(cl->rc = redis_cluster_new(link, cl->sid))) {
        snprintf(err, err_len, "out of memory");
        cluster_free(cl);
        return NULL;
    }
    cluster_store_init(&cl->store, inner, cl->rc);
    redis_store_announce(inner);
    log_info("cluster: server id %s; sharing sessions through Redis", redis_cluster_server(cl->rc));
    return cl;
}

struct store *cluster_store(struct cluster *cl) { return &cl->store.base; }

int cluster_run(struct cluster *cl, struct hub *h)
{
    cl->hub = h;
    struct hub_relay relay = {
        .arg = cl,
        .broadcast = relay_broadcast,
        .client_key_set = relay_client_key_set,
        .session_key_set = relay_session_key_set,
        .client_left = relay_client_left,
        .client_keys_get = relay_client_keys,
    };
    hub_set_relay(h, &relay);
    struct cluster_sub_config sc = { .link = cl->link,
                                     .rc = cl->rc,
                                     .hub = h,
                                     .store = cl->inner,
                                     .webhook = cl->webhook,
                                     .server = cl->sid };
    if (!(cl->members = cluster_members_start(cl->rc, cl->webhook, cl->ttl_ms))) return -1;
    if (!(cl->sub = cluster_sub_start(&sc))) return -1;
    return 0;
}

void cluster_stop(struct cluster *cl)
{
    if (!cl) return;
    cluster_sub_stop(cl->sub);
    cl->sub = NULL;
    cluster_members_stop(cl->members); /* runs the last departures */
    cl->members = NULL;
    /* Withdraw: whatever keys remain are removed by the others at once. */
    if (cl->rc) redis_cluster_withdraw(cl->rc);
}

void cluster_free(struct cluster *cl)
{
    if (!cl) return;
    redis_cluster_free(cl->rc);
    free(cl->holders);
    pthread_mutex_destroy(&cl->holders_lock);
    free(cl);
}
