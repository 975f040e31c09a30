/* cluster_internal: what the cluster's files share (cluster.c: relay, membership and
 * heartbeat; cluster_redis.c: connections and scripts; cluster_sub.c: subscriber;
 * cluster_store.c: the announcing store). Not for other modules. */
#ifndef ZW_CLUSTER_INTERNAL_H
#define ZW_CLUSTER_INTERNAL_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "hub.h"
#include "store.h"

#define CL_POOL 8
#define CL_CHANNEL "zwibbler-ch:"          /* + docId: that document's announcements */
#define CL_GLOBAL "zwibbler-cluster"       /* cluster-wide events */

/* Announcement payloads (first byte), numbers big-endian:
 *   'A' offset u64, data                              an append
 *   'B' server u64, client u64, data                  a broadcast
 *   'K' server u64, client u64, version u32, nameLen u32, name, value   a client key
 *   'R' server u64, 0 u64, version u32, nameLen u32, name   a client key removed
 *   'S' server u64, client u64, version u32, name     a session key changed (re-read)
 *   'D' server u64                                    the document was deleted
 * and on CL_GLOBAL: 'J' docId (a document got its first server);
 *   'U' server u64, userLen u32, user, permissions (updateUser). */

enum cl_script { CLS_APPEND, CLS_CKEY_SET, CLS_CKEY_DROP, CLS_MEMBER_ADD, CLS_MEMBER_DEL,
                 CLS_REAP, CLS_COUNT };

struct cl_redis {
    char *host; /* or a Unix socket path */
    int port;
    bool unix_socket;
    char *user, *password;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    redisContext *conns[CL_POOL];
    bool busy[CL_POOL];
    int64_t retry_after_ms; /* after a failed connect, fail fast until then */
    char sha[CLS_COUNT][41];
};

/* A document event for the heartbeat thread (Redis work done off the caller's lock). */
struct cl_event {
    struct cl_event *next;
    char op;      /* 'a' active, 'i' idle, 'd' drop a departed client's keys */
    uint64_t client;
    size_t id_len;
    char id[];
};

struct cluster {
    struct store store; /* the announcing store (cluster_store.c); must stay first */
    struct store *inner;
    const struct config *cfg;
    struct hub *hub;
    struct webhook *webhook;
    uint64_t sid;       /* this server's id, random per start */
    char sid_hex[17];
    int64_t expiration; /* seconds, as the inner store uses them (0: none) */
    int ttl_ms;
    struct cl_redis redis;
    atomic_bool stopping;

    /* heartbeat thread and its queue */
    pthread_t beat;
    bool beat_started;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct cl_event *qhead, *qtail;
    size_t qlen;
    char (*suspects)[17]; /* servers whose liveness key was missing at the last scan */
    size_t nsuspects;

    /* clients of this server that set a client key (their departure must drop them) */
    pthread_mutex_t holders_lock;
    uint64_t *holders;
    size_t nholders, holders_cap;

    /* subscriber thread (cluster_sub.c) */
    pthread_t sub;
    bool sub_started;
    int wake_fd;
    pthread_mutex_t slock;
    struct cl_event *shead, *stail; /* 'a' subscribe, 'i' unsubscribe */
};

/* ---- cluster_redis.c ---- */
int clr_init(struct cl_redis *r, const struct store_config *sc, char *err, size_t err_len);
void clr_free(struct cl_redis *r);
/* A new connection (for the subscriber), authenticated. NULL with a reason. */
redisContext *clr_connect(struct cl_redis *r, char *why, size_t why_len);
/* One command on a pooled connection. NULL when Redis is unreachable (logged); error
 * replies are returned as they are. Free the reply with freeReplyObject. */
redisReply *clr_command(struct cl_redis *r, int argc, const char **argv, const size_t *lens);
/* One of the cluster's scripts (EVALSHA, EVAL when not cached), same contract. */
redisReply *clr_script(struct cl_redis *r, enum cl_script s, int nkeys, int nargs,
                       const char **args, const size_t *lens);

/* ---- cluster_sub.c ---- */
int cluster_sub_start(struct cluster *cl);
void cluster_sub_stop(struct cluster *cl);
/* Queues a subscribe ('a') or unsubscribe ('i') of the document's channel. */
void cluster_sub_queue(struct cluster *cl, char op, const char *id, size_t id_len);

/* ---- cluster_store.c ---- */
void cluster_store_init(struct cluster *cl);

/* ---- cluster.c ---- */
/* "<prefix><id>" in a new buffer; NULL when out of memory. */
char *cl_key(const char *prefix, const void *id, size_t id_len, size_t *out_len);
void cl_put64(uint8_t *p, uint64_t v);
uint64_t cl_get64(const uint8_t *p);
uint32_t cl_get32(const uint8_t *p);
/* The relay's client_keys_get (arg: the cluster). */
int cluster_client_keys(void *arg, const char *id, size_t id_len, hub_key_fn fn, void *fnarg);
/* Frees everything (from the store's close). */
void cluster_free(struct cluster *cl);

#endif
