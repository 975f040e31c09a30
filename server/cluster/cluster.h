/* cluster: several zwibbler servers sharing live sessions through one Redis
 * (Database=redis, Cluster=true, the default with Redis). Any client may connect to
 * any server; a document still behaves as one session:
 *
 *  - Appends: the compare-and-append script also PUBLISHes what it committed, on the
 *    document's channel `zwibbler-ch:<docId>`, in the same atomic step. Every server
 *    (the writer's included) delivers a document's appends to its clients from that
 *    stream, in Redis commit order; a member that is behind (missed announcements, a
 *    new subscription, a reconnect) is first caught up from the stored document.
 *  - Broadcasts, session-key and client-key changes go through the same channel.
 *  - Client keys live in the hash `zwibbler-ckeys:<docId>`, each tagged with its
 *    owner's server id; a server renews `zwibbler-server:<id>` and the others remove
 *    the keys of a server whose liveness key expired, announcing them empty with
 *    version + 1, once (one Lua script), within ClusterKeyTtlMs.
 *  - deleteDocument and updateUser reach the clients of every server.
 *  - A server subscribes only to documents it has clients for.
 *  - The idle webhook fires once per document, from the server whose departure left
 *    the set `zwibbler-members:<docId>` empty; a first joiner anywhere cancels it.
 *
 * Life cycle (main.c): cluster_start after the store is open; use cluster_store() as
 * the store from then on; cluster_listener() for hub_create; cluster_run() once the
 * hub exists; cluster_stop() after the HTTP server stopped and before hub_destroy.
 * store_close() on cluster_store() closes the inner store and frees the cluster.
 */
#ifndef ZW_CLUSTER_H
#define ZW_CLUSTER_H

#include <stddef.h>

struct cluster;
struct config;
struct hub;
struct hub_listener;
struct store;
struct store_config;
struct webhook;

/* Prepares cluster mode over the open Redis store `inner` (sc: the settings it was
 * opened with). Returns NULL with a reason in err when Redis cannot be reached. */
struct cluster *cluster_start(const struct config *cfg, const struct store_config *sc,
                              struct store *inner, char *err, size_t err_len);

/* The store the rest of the server uses: `inner`, whose appends and deletions are
 * announced to every server. */
struct store *cluster_store(struct cluster *cl);

/* Hub listener: subscribes to a document on its first local client, unsubscribes
 * after its last, and drives the idle webhook `w` (may be NULL) cluster-wide. */
void cluster_listener(struct cluster *cl, struct webhook *w, struct hub_listener *out);

/* Puts the hub in cluster mode and starts the subscriber and heartbeat threads.
 * Returns 0, or -1 when a thread could not be started. */
int cluster_run(struct cluster *cl, struct hub *h);

/* Stops the threads and withdraws this server (its liveness key). NULL is accepted. */
void cluster_stop(struct cluster *cl);

#endif
