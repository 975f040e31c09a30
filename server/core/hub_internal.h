/* hub_internal: what the hub shares with the session logic (session.c): live
 * documents, membership and fan-out. Not for other modules. */
#ifndef ZW_HUB_INTERNAL_H
#define ZW_HUB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "client.h"
#include "hub.h"
#include "outq.h"

struct message;
struct hub_keyview;

/* A client key (docs/protocol.md, Keys: lifetime 0): lives as long as its owner is connected. */
struct client_key {
    uint8_t *name;
    size_t name_len;
    uint8_t *value;
    size_t value_len;
    uint32_t version;
    struct hub_client *owner;
};

struct doc {
    char *id;
    size_t id_len;
    uint64_t hash;
    int refs;              /* under the shard lock */
    struct doc *shard_next;

    /* Held across commit and fan-out, so every client sees commit order. */
    pthread_mutex_t lock;
    struct hub_client *clients;
    int nclients;
    struct client_key *keys;
    size_t nkeys, keys_cap;
    struct hub_keyview *kview; /* cluster mode: the keys as the members know them */

    /* The last whole-document catch-up (offset 0) per protocol layout, while the
     * document is still that long: joiners share it (hub_catch_up). */
    struct message *catch_up[2];
    uint64_t catch_up_len;
};

struct hub {
    const struct config *cfg;
    struct store *store;
    struct hub_listener listener;
    const struct outq *outq; /* the connection layer's send queues */
    atomic_uint_fast64_t connections, documents;
    atomic_uint_fast64_t appends_accepted, appends_rejected, bytes_in;

    struct shard *shards;

    struct hub_relay relay; /* cluster mode when relay.arg is set (hub_relay.c) */
};

/* Finds or creates the live document, with one reference. NULL when out of memory. */
struct doc *hub_doc_acquire(struct hub *h, const char *id, size_t id_len);
/* Finds the live document if there is one (with a reference), else NULL. */
struct doc *hub_doc_find(struct hub *h, const char *id, size_t id_len);
void hub_doc_release(struct hub *h, struct doc *d);

/* With d->lock held: adds c as a member whose bytes end at delivered_end. */
void hub_doc_join(struct hub *h, struct doc *d, struct hub_client *c, uint64_t delivered_end);
/* Takes d->lock itself: removes c, its client keys (announced to the others). */
void hub_doc_leave(struct hub *h, struct hub_client *c);

/* With d->lock held: queues APPEND(offset, data) for member o, encoded at most once
 * per protocol layout across one fan-out (by_version starts {NULL, NULL}; the caller
 * drops both references after it), and moves o's delivered end past it. */
void hub_push_append(struct hub *h, struct hub_client *o, struct message *by_version[2],
                     uint64_t offset, const uint8_t *data, size_t len);
/* With d->lock held: relays an accepted append to every member but `writer`, in the
 * layout of each member's protocol version, applying the delivery rule. */
void hub_fanout_append(struct hub *h, struct doc *d, struct hub_client *writer,
                       uint64_t offset, const uint8_t *data, size_t len);
/* With d->lock held: queues m for every member but `except`. */
void hub_send_others(struct hub *h, struct doc *d, struct hub_client *except, struct message *m);

/* With d->lock held: the APPEND that catches a joiner of protocol `version` up from
 * `start` to `length`, the document's length now; *end gets where its bytes end. A
 * whole-document catch-up of a large document is kept with the live document and
 * shared by the joiners that follow until it grows: read (and compressed, for clients
 * with permessage-deflate) once, not once per joiner. Returns the message with a
 * reference, or NULL with a STORE_E* code in *rc (STORE_ENOMEM when memory ran out). */
struct message *hub_catch_up(struct hub *h, struct doc *d, int version, uint64_t start,
                             uint64_t length, uint64_t *end, int *rc);

/* Queues m for c, taking over the caller's reference (exempt: not counted against
 * the bound). A NULL m (failed encoding) disconnects c. */
int hub_send(struct hub *h, struct hub_client *c, struct message *m, bool exempt);
/* Queues ERROR and closes c once it has been sent. */
void hub_send_error_and_close(struct hub *h, struct hub_client *c, uint16_t code, const char *text);

/* ---- Session hooks that differ in cluster mode (hub_relay.c) ---- */
struct codec_set_key;
static inline bool hub_clustered(const struct hub *h) { return h->relay.arg != NULL; }
/* With d->lock held, after c's append [offset, new_len) was committed: ACK to c (first
 * catching c up on bytes committed before it that it has not been sent), then fan-out
 * (single server) or nothing (cluster: the subscription delivers it). */
void hub_append_committed(struct hub *h, struct doc *d, struct hub_client *c, uint64_t offset,
                          const uint8_t *data, size_t len, uint64_t new_len);
/* With d->lock held, after c's append was refused because the document is `length`
 * long: NACK to c (in cluster mode first sending it what it lacks of those bytes). */
void hub_append_refused(struct hub *h, struct doc *d, struct hub_client *c, uint64_t length);
/* BROADCAST m (data: its payload) from c to the document's other clients. */
void hub_broadcast(struct hub *h, struct doc *d, struct hub_client *c, struct message *m,
                   const uint8_t *data, size_t len);
/* With d->lock held: a client key write in cluster mode. 1 accepted, 0 rejected. */
int hub_cluster_client_key_set(struct hub *h, struct doc *d, struct hub_client *c,
                               const struct codec_set_key *k);
/* With d->lock held: an accepted key write, announced to the document's other clients. */
void hub_key_accepted(struct hub *h, struct doc *d, struct hub_client *c,
                      const struct codec_set_key *k);
/* Cluster mode: calls fn for every client key of d. Returns 0, or a STORE_E* code
 * (logged) when Redis could not be asked. */
int hub_cluster_client_keys(struct hub *h, struct doc *d, hub_key_fn fn, void *arg);

/* ---- Cluster mode: the document's key view (hub_keyview.c), all with d->lock held ---- */
/* Local client `client`'s write of a key was accepted: when it comes back (announced,
 * or in a snapshot) it is not sent to that client. */
void hub_keyview_own(struct doc *d, uint64_t client, uint32_t version, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len);
/* A key changed (set by hub client `setter`, 0: unknown or elsewhere): every member
 * but the setter gets it, unless they all have it already. */
void hub_keyview_changed(struct hub *h, struct doc *d, uint64_t setter, uint32_t version,
                         const uint8_t *name, size_t name_len, const uint8_t *value,
                         size_t value_len);
/* A key was removed: members that know it get it empty with `version`. */
void hub_keyview_removed(struct hub *h, struct doc *d, uint32_t version, const uint8_t *name,
                         size_t name_len);
/* Reads every stored key through `read` (see hub_sync_keys): members get what
 * changed, and the removal of what is gone. Returns read's result (-1 also when out
 * of memory); on failure nothing changed. */
int hub_keyview_sync(struct hub *h, struct doc *d, hub_keys_reader read, void *arg);
/* Calls fn for every key the members know (a joiner's KEY INFORMATION); returns 1 when
 * fn stopped early. */
int hub_keyview_each(struct doc *d, hub_key_fn fn, void *arg);
void hub_keyview_free(struct doc *d);

#endif
