/* redis_cluster: the state that servers sharing one Redis keep there (cluster mode),
 * and the atomic steps that change it. Each step that others must hear of is one Lua
 * script that both changes state and publishes the event (redis_events.h), so no
 * server can see one without the other.
 *
 *   zwibbler-ckeys:<docId>         hash: client keys, name -> "<version>:<server>:<client>:<value>"
 *   zwibbler-members:<docId>       set: servers with clients of the document
 *   zwibbler-server-docs:<server>  set: documents where the server has members or keys
 *   zwibbler-server:<server>       string with a TTL: the server is alive
 *   zwibbler-servers               set: servers that may have left something behind
 *
 * Server ids are 16 hex digits. Every call returns a STORE_* code (store.h); on
 * STORE_EUNAVAILABLE it is unknown whether a write was applied. Thread-safe. */
#ifndef ZW_REDIS_CLUSTER_H
#define ZW_REDIS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "redis_events.h"
#include "store.h"

struct redis_link;
struct redis_cluster;

/* The state of server `server_id` (never 0) over link l (not owned). NULL when out of
 * memory. */
struct redis_cluster *redis_cluster_new(struct redis_link *l, uint64_t server_id);
void redis_cluster_free(struct redis_cluster *rc);
/* This server's id as 16 hex digits. */
const char *redis_cluster_server(const struct redis_cluster *rc);

/* Publishes a BROADCAST, SESSION_KEY, DELETED (ev->doc: its channel) or USER
 * (cluster-wide) event; ev->server is filled in. */
int redis_cluster_publish(struct redis_cluster *rc, const struct redis_event *ev);

/* Compare-version-and-set of a client key, now owned by `client` of this server, and
 * its CLIENT_KEY event. *accepted: whether the version matched. */
int redis_cluster_client_key_set(struct redis_cluster *rc, const char *doc, size_t doc_len,
                                 uint64_t client, const uint8_t *name, size_t name_len,
                                 const uint8_t *value, size_t value_len, uint32_t old_version,
                                 uint32_t new_version, bool *accepted);
/* Removes the client keys `client` of this server owns in the document, each with a
 * KEY_REMOVED event (version + 1). */
int redis_cluster_client_keys_drop(struct redis_cluster *rc, const char *doc, size_t doc_len,
                                   uint64_t client);
/* Calls fn for every client key of the document. */
int redis_cluster_client_keys(struct redis_cluster *rc, const char *doc, size_t doc_len,
                              store_key_fn fn, void *arg);

/* This server has clients of the document now; when it is the first server to, a
 * DOC_ACTIVE event goes out. */
int redis_cluster_member_add(struct redis_cluster *rc, const char *doc, size_t doc_len);
/* This server's last client of the document left. *idle: no server has clients of it
 * any more (this call made it so). */
int redis_cluster_member_del(struct redis_cluster *rc, const char *doc, size_t doc_len, bool *idle);

/* Renews this server's liveness key for ttl_ms. */
int redis_cluster_heartbeat(struct redis_cluster *rc, int ttl_ms);
/* Removes this server's liveness key (the others reap what it left at once). */
int redis_cluster_withdraw(struct redis_cluster *rc);
/* Calls fn for every other server whose liveness key is missing. */
int redis_cluster_missing_servers(struct redis_cluster *rc,
                                  void (*fn)(void *arg, const char *server), void *arg);
/* What a dead server left: for each document of it, removes its client keys
 * (KEY_REMOVED events) and its membership, calling left(arg, doc, len, removed, idle)
 * (idle: no server has clients of the document any more); a server with nothing left
 * is forgotten. A server whose liveness key came back is left alone. */
int redis_cluster_reap(struct redis_cluster *rc, const char *server,
                       void (*left)(void *arg, const char *doc, size_t len, long long removed,
                                    bool idle),
                       void *arg);

#endif
