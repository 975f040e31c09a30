/* cluster_sub: the subscriber thread. It listens to the cluster-wide channel and to
 * the channel of every document this server has clients of, and hands the events to
 * the hub in the order Redis sends them, which is the order it committed them.
 * Whenever events may have been missed (a new subscription, a lost connection, a
 * failover) the document's local members are first caught up from the store — bytes,
 * then the keys that changed — before anything newer is delivered. */
#ifndef ZW_CLUSTER_SUB_H
#define ZW_CLUSTER_SUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cluster_sub;
struct hub;
struct redis_cluster;
struct redis_link;
struct store;
struct webhook;

struct cluster_sub_config {
    struct redis_link *link;
    struct redis_cluster *rc; /* client keys, for catching up */
    struct hub *hub;
    struct store *store;     /* session keys and bytes, for catching up */
    struct webhook *webhook; /* may be NULL */
    uint64_t server;         /* this server's id: its own DELETED/USER events are skipped */
};

/* Starts the thread (it connects by itself, and again whenever it must). NULL when
 * it could not be started. */
struct cluster_sub *cluster_sub_start(const struct cluster_sub_config *cfg);
/* Stops the thread and frees. NULL is accepted. */
void cluster_sub_stop(struct cluster_sub *s);

/* Subscribes to (on) or unsubscribes from a document's channel, soon. */
void cluster_sub_watch(struct cluster_sub *s, const char *doc, size_t len, bool on);

#endif
