/* cluster_members: this server's bookkeeping in the cluster's Redis, on one thread:
 * its liveness key (renewed every ClusterKeyTtlMs / 6, living ClusterKeyTtlMs / 2),
 * which documents it has clients of (for the idle webhook, which fires once
 * cluster-wide), the client keys of departed clients when Redis was away at the time,
 * and the removal of what dead servers left. Work comes in a queue, so that sessions
 * never wait on Redis for it; while Redis is away the queue waits and is retried. */
#ifndef ZW_CLUSTER_MEMBERS_H
#define ZW_CLUSTER_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

struct cluster_members;
struct redis_cluster;
struct webhook;

/* Renews the liveness key once (so that this server is alive before its first client
 * can own a key), then starts the thread. w may be NULL (no idle webhook). NULL when
 * the thread could not be started. */
struct cluster_members *cluster_members_start(struct redis_cluster *rc, struct webhook *w,
                                              int ttl_ms);
/* Stops the thread after one last run of the queue (the last departures) and frees.
 * NULL is accepted. */
void cluster_members_stop(struct cluster_members *m);

/* The first / last local client of a document came / left (idle webhook). */
void cluster_members_active(struct cluster_members *m, const char *doc, size_t len);
void cluster_members_idle(struct cluster_members *m, const char *doc, size_t len);
/* A departed client's keys could not be removed (Redis away): retried until done. */
void cluster_members_drop_later(struct cluster_members *m, const char *doc, size_t len,
                                uint64_t client);

#endif
