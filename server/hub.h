/* hub: live documents and their clients. Owns the document table (sharded by id
 * under separate mutexes), each client's bounded send queue, the sender threads that
 * drain those queues to CivetWeb, and the ordering of fan-out (DESIGN.md invariant 1).
 * Thread-safe throughout. */
#ifndef ZW_HUB_H
#define ZW_HUB_H

#include <stddef.h>
#include <stdint.h>

struct mg_connection;
struct store;
struct config;
struct hub;
struct hub_client;

/* Notified when a document's last local client leaves / a first one joins. */
struct hub_listener {
    void (*doc_idle)(void *arg, const char *id, size_t id_len);
    void (*doc_active)(void *arg, const char *id, size_t id_len);
    void *arg;
};

struct hub *hub_create(const struct config *cfg, struct store *store,
                       const struct hub_listener *listener);
/* Closes every client and stops the sender threads. */
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

#endif
