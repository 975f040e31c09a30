/* redis_store: what the Redis backend offers beyond the store interface (store.h),
 * for the cluster, which shares live sessions between servers through the same Redis
 * (server/cluster/cluster.h). */
#ifndef ZW_REDIS_STORE_H
#define ZW_REDIS_STORE_H

struct redis_link;
struct store;

/* How long an append waits for RedisMinReplicas replicas before it fails. */
#define REDIS_WAIT_TIMEOUT_MS 1000

/* The link of a Redis store (its connections, its primary), for the cluster to use
 * too: one pool, one view of where the primary is. NULL when s is not a Redis store.
 * It lives as long as the store. */
struct redis_link *redis_store_link(struct store *s);

/* Announcing appends: from now on every append the store commits is also published
 * as a REDIS_EV_APPEND event on the document's channel (redis_events.h) — in the same
 * atomic script as the append, so that every server sees a document's appends in
 * commit order; with RedisMinReplicas, once the replicas confirmed it (an append they
 * do not confirm is announced when they do, or never if the primary changed). Call it
 * before the store is used by more than one thread. Returns 0, or -1 when s is not a
 * Redis store. */
int redis_store_announce(struct store *s);

#endif
