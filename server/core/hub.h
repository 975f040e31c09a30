/* hub: live documents and their clients. Owns the document table (sharded by id
 * under separate mutexes), membership, client keys and the ordering of fan-out: a
 * document's appends reach every client in commit order. Thread-safe throughout. */
#ifndef ZW_HUB_H
#define ZW_HUB_H

#include <stddef.h>
#include <stdint.h>

struct mg_connection;
struct store;
struct config;
struct outq;
struct hub;
struct hub_client;

/* Notified when a document's last local client leaves / a first one joins. */
struct hub_listener {
    void (*doc_idle)(void *arg, const char *id, size_t id_len);
    void (*doc_active)(void *arg, const char *id, size_t id_len);
    void *arg;
};

/* A hub whose clients' messages go into `outq` (the connection layer's). */
struct hub *hub_create(const struct config *cfg, struct store *store, const struct outq *outq,
                       const struct hub_listener *listener);
/* Frees the hub; every client must have left. */
void hub_destroy(struct hub *h);

/* Sends ERROR `code` with `text` to every client of the document, then closes them
 * (management API deleteDocument). Returns the number of clients closed. */
int hub_close_document(struct hub *h, const char *id, size_t id_len, uint16_t code,
                       const char *text);

/* Gives every live connection of the user the new permissions; a connection that
 * loses 'r' gets ERROR 4 and is closed (management API updateUser). */
int hub_update_user(struct hub *h, const char *user, size_t user_len, const char *perms);

/* Counters for health and metrics. */
struct hub_stats {
    uint64_t connections, documents;
    uint64_t appends_accepted, appends_rejected;
    uint64_t bytes_in, bytes_out, messages_out, slow_disconnects;
};
void hub_get_stats(struct hub *h, struct hub_stats *out);

/* ---- Cluster mode (cluster.c; implemented in hub_relay.c) ----
 * With a relay set, the hub stops fanning a document's appends, broadcasts and key
 * changes out itself: the relay publishes them to every server sharing the store (this
 * one included), and each server hands them back through hub_deliver_*() in the order
 * the store committed them. Client ids in these calls are hub client ids (never 0;
 * 0 means "no client"). */
typedef int (*hub_key_fn)(void *arg, const uint8_t *name, size_t name_len,
                          const uint8_t *value, size_t value_len, uint32_t version);
struct hub_relay {
    void *arg;
    /* Publishes BROADCAST data sent by local client `from`. */
    void (*broadcast)(void *arg, const char *id, size_t id_len, uint64_t from,
                      const uint8_t *data, size_t len);
    /* Compare-version-and-set of a client key (lifetime 0) now owned by `from`,
     * published when accepted. Returns 1 accepted, 0 rejected (or unavailable). */
    int (*client_key_set)(void *arg, const char *id, size_t id_len, uint64_t from,
                          const uint8_t *name, size_t name_len, const uint8_t *value,
                          size_t value_len, uint32_t old_version, uint32_t new_version);
    /* A session key (stored) was just set by `from`: announce it. */
    void (*session_key_set)(void *arg, const char *id, size_t id_len, uint64_t from,
                            const uint8_t *name, size_t name_len, uint32_t version);
    /* Local client `from` left the document: its client keys go (announced). */
    void (*client_left)(void *arg, const char *id, size_t id_len, uint64_t from);
    /* Calls fn for every client key of the document as stored now (which kind of key
     * holds a name). Returns 0 or a STORE_E* code. */
    int (*client_keys_get)(void *arg, const char *id, size_t id_len, hub_key_fn fn, void *fnarg);
};

/* Switches the hub to cluster mode; call before any client connects. */
void hub_set_relay(struct hub *h, const struct hub_relay *r);

/* An announced append: each local member gets the bytes it lacks, in order (a member
 * that is behind is first caught up from the store; one that has them is skipped).
 * Returns 1 when a member could not be caught up because the store is unavailable:
 * it stays behind (never with a hole); call hub_catch_up_document later. */
int hub_deliver_append(struct hub *h, const char *id, size_t id_len, uint64_t offset,
                       const uint8_t *data, size_t len);
/* An announced broadcast, to every local member but client `except`. */
void hub_deliver_broadcast(struct hub *h, const char *id, size_t id_len, uint64_t except,
                           const uint8_t *data, size_t len);
/* An announced key change made by local client `setter` (0: by a client of another
 * server, or not known): every local member but the setter gets it, unless they all
 * have it already (it came in a snapshot first). */
void hub_deliver_key(struct hub *h, const char *id, size_t id_len, uint64_t setter,
                     uint32_t version, const uint8_t *name, size_t name_len,
                     const uint8_t *value, size_t value_len);
/* An announced removal (a client key whose owner left): members that know the key get
 * it empty with `version`. */
void hub_deliver_key_removed(struct hub *h, const char *id, size_t id_len, uint32_t version,
                             const uint8_t *name, size_t name_len);
/* Catches every local member up from the store (after announcements may have been
 * missed: a new subscription, a reconnect). Returns 0 when the document has no local
 * member, 1 when all are caught up, -1 when some could not be (store unavailable:
 * call it again later). */
int hub_catch_up_document(struct hub *h, const char *id, size_t id_len);
/* Reads every key of a document, calling add once per key: its client keys first,
 * then its session keys (a name held by both is settled as for a joiner). Returns 0,
 * or non-zero when the store could not be read. */
typedef int (*hub_keys_reader)(void *arg, hub_key_fn add, void *add_arg);
/* Brings the local members' keys up to date after announcements may have been missed:
 * `read` is called under the document's lock, after the subscription was in place.
 * Members get the changes they missed and nothing they have; a setter never its own
 * write. (A joiner is sent the keys this server's members know; until a document's
 * first snapshot, only what was announced since.) Returns 0, or -1 when read failed
 * (try again later). */
int hub_sync_keys(struct hub *h, const char *id, size_t id_len, hub_keys_reader read, void *arg);

#endif
