/* cluster_store: the store a clustered server uses. It is the Redis store (whose
 * appends announce themselves, redis_store.h), except that deleting a document and
 * updating a user are also announced, so that every server acts on them. */
#ifndef ZW_CLUSTER_STORE_H
#define ZW_CLUSTER_STORE_H

#include "store.h"

struct redis_cluster;

struct cluster_store {
    struct store base;
    struct store *inner;
    struct redis_cluster *rc;
};

/* Makes cs a store over `inner`. Closing it closes `inner`; cs itself belongs to the
 * caller. */
void cluster_store_init(struct cluster_store *cs, struct store *inner, struct redis_cluster *rc);

#endif
