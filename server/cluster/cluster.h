/* cluster: several zwibbler servers sharing live sessions through one Redis
 * (Database=redis, Cluster=true, the default with Redis). Any client may connect to
 * any server; a document still behaves as one session:
 *
 *  - Appends: the Redis store announces what it commits on the document's channel
 *    (redis_store.h). Every server (the writer's included) delivers a document's
 *    appends to its clients from that stream, in Redis commit order; a member that is
 *    behind (missed events, a new subscription, a reconnect, a failover) is first
 *    caught up from the stored document.
 *  - Broadcasts, session-key and client-key changes go through the same channel.
 *  - Client keys live in Redis, each tagged with its owner's server; a server renews
 *    its liveness key and the others remove the keys of a server whose liveness key
 *    expired, announcing them empty with version + 1, once, within ClusterKeyTtlMs.
 *  - deleteDocument and updateUser reach the clients of every server.
 *  - A server subscribes only to documents it has clients for.
 *  - The idle webhook fires once per document, from the server whose departure left
 *    it with no server; a first joiner anywhere cancels it.
 * Everything said to Redis, and the layout there, is storage/redis/'s
 * (redis_cluster.h, redis_events.h, redis_sub.h); this room decides when.
 *
 * The files of this room, and who calls whom (never upwards, never in a circle):
 *
 *   cluster.c          life cycle, the hub relay, the hub listener
 *     -> cluster_sub, cluster_members, cluster_store, hub, redis_cluster, redis_store
 *   cluster_sub.c      subscriber thread: events to the hub, catching members up
 *     -> hub, redis_sub, redis_cluster, store, webhook
 *   cluster_members.c  heartbeat, membership (idle webhook), reaping dead servers
 *     -> redis_cluster, webhook
 *   cluster_store.c    the store wrapper that announces deletions and user updates
 *     -> store, redis_cluster
 *
 * Life cycle (zwibbler.c): cluster_start after the store is open; use cluster_store()
 * as the store from then on; cluster_listener() for hub_create; cluster_run() once
 * the hub exists; cluster_stop() after the HTTP server stopped and before
 * hub_destroy; store_close() on cluster_store() closes the Redis store; then
 * cluster_free().
 */
#ifndef ZW_CLUSTER_H
#define ZW_CLUSTER_H

#include <stddef.h>

struct cluster;
struct config;
struct hub;
struct hub_listener;
struct store;
struct webhook;

/* Prepares cluster mode over the open Redis store `inner`, which from now on announces
 * its appends. Returns NULL with a reason in err when `inner` is not a Redis store or
 * out of memory; the caller still owns `inner` then. */
struct cluster *cluster_start(const struct config *cfg, struct store *inner, char *err,
                              size_t err_len);

/* The store the rest of the server uses: `inner`, with deletions and user updates
 * announced to every server. Closing it closes `inner`. */
struct store *cluster_store(struct cluster *cl);

/* Hub listener: subscribes to a document on its first local client, unsubscribes
 * after its last, and drives the idle webhook `w` (may be NULL) cluster-wide. */
void cluster_listener(struct cluster *cl, struct webhook *w, struct hub_listener *out);

/* Puts the hub in cluster mode and starts the subscriber and heartbeat threads.
 * Returns 0, or -1 when a thread could not be started. */
int cluster_run(struct cluster *cl, struct hub *h);

/* Stops the threads and withdraws this server (its liveness key). NULL is accepted. */
void cluster_stop(struct cluster *cl);

/* Frees what is left, after store_close(cluster_store(cl)). NULL is accepted. */
void cluster_free(struct cluster *cl);

#endif
