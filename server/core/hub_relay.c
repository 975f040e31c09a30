/* hub_relay: the hub's side of cluster mode (hub.h, "Cluster mode"). Session events
 * go to the relay instead of the local fan-out; announcements come back here and are
 * delivered to local members under the document's lock, applying the delivery rule
 * (docs/protocol.md, Delivery) so that each member's bytes stay a prefix of the stored document
 * whatever the timing of joins, reconnects and missed announcements. */
#include "hub_internal.h"

#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "log.h"
#include "message.h"
#include "store.h"
#include "wsframe.h"

void hub_set_relay(struct hub *h, const struct hub_relay *r)
{
    h->relay = *r;
}

/* With d->lock held: sends c the stored bytes [delivered_end, upto) (upto 0: to the
 * end). Returns 0, or -1 when the store is unavailable for now: c then stays behind
 * (it gets nothing newer, so never a hole) until a later catch-up succeeds. A member
 * that cannot be caught up for another reason is disconnected; it reconnects and
 * resumes from its offset. */
static int catch_up(struct hub *h, struct doc *d, struct hub_client *c, uint64_t upto)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    uint64_t total = 0;
    int rc = store_doc_read(h->store, d->id, d->id_len, c->delivered_end, &bytes, &n, &total);
    if (rc == STORE_EUNAVAILABLE) return -1;
    if (rc) {
        log_warn("document %.*s: client %llu: cannot catch up from offset %llu: %s; disconnecting",
                 (int)d->id_len, d->id, (unsigned long long)c->id,
                 (unsigned long long)c->delivered_end, store_strerror(rc));
        outq_kill(h->outq, c, WS_CLOSE_SERVER_ERROR, "cannot catch up from storage");
        return 0;
    }
    if (upto && upto > c->delivered_end && upto - c->delivered_end < n)
        n = (size_t)(upto - c->delivered_end);
    if (n) {
        hub_send(h, c, msg_append(c->version, c->delivered_end, bytes, n), false);
        c->delivered_end += n;
    }
    free(bytes);
    return 0;
}

void hub_append_committed(struct hub *h, struct doc *d, struct hub_client *c, uint64_t offset,
                          const uint8_t *data, size_t len, uint64_t new_len)
{
    /* Cluster: the writer may know the length from a NACK before the announcements of
     * the appends that made it have reached it. Those bytes go first. */
    if (offset > c->delivered_end && catch_up(h, d, c, offset)) {
        /* Committed, but the bytes before it cannot be sent now: an ACK would leave a
         * hole, so the client is told to reconnect and resume instead. */
        outq_kill(h->outq, c, WS_CLOSE_SERVER_ERROR, "storage unavailable while catching up a writer");
        return;
    }
    c->delivered_end = new_len;
    hub_send(h, c, msg_ack(1, new_len), false);
    if (!hub_clustered(h)) hub_fanout_append(h, d, c, offset, data, len);
}

void hub_append_refused(struct hub *h, struct doc *d, struct hub_client *c, uint64_t length)
{
    /* Cluster: the bytes that made the length usually come announced soon, but some
     * never are (their writer's server died before announcing them, or its replicas
     * confirmed them too late to acknowledge); the writer needs them to go on, and to
     * see that an append of its own that failed was stored after all. */
    if (hub_clustered(h) && length > c->delivered_end) catch_up(h, d, c, length);
    hub_send(h, c, msg_ack(0, length), false);
}

void hub_broadcast(struct hub *h, struct doc *d, struct hub_client *c, struct message *m,
                   const uint8_t *data, size_t len)
{
    if (!hub_clustered(h)) {
        pthread_mutex_lock(&d->lock);
        hub_send_others(h, d, c, m);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    h->relay.broadcast(h->relay.arg, d->id, d->id_len, c->id, data, len);
}

int hub_cluster_client_key_set(struct hub *h, struct doc *d, struct hub_client *c,
                               const struct codec_set_key *k)
{
    return h->relay.client_key_set(h->relay.arg, d->id, d->id_len, c->id, k->name, k->name_len,
                                   k->value, k->value_len, k->old_version, k->new_version);
}

void hub_key_accepted(struct hub *h, struct doc *d, struct hub_client *c,
                      const struct codec_set_key *k)
{
    if (!hub_clustered(h)) {
        struct message *m = msg_key_info_one(k->new_version, k->name, k->name_len, k->value, k->value_len);
        hub_send_others(h, d, c, m);
        message_unref(m);
        return;
    }
    /* The others hear of it from the announcement; c must not, whichever way it
     * comes back. */
    hub_keyview_own(d, c->id, k->new_version, k->name, k->name_len, k->value, k->value_len);
    if (k->lifetime != 0) /* client keys were announced by their own write */
        h->relay.session_key_set(h->relay.arg, d->id, d->id_len, c->id, k->name, k->name_len,
                                 k->new_version);
}

int hub_cluster_client_keys(struct hub *h, struct doc *d, hub_key_fn fn, void *arg)
{
    int rc = h->relay.client_keys_get(h->relay.arg, d->id, d->id_len, fn, arg);
    if (rc) log_error("client keys of %.*s: %s", (int)d->id_len, d->id, store_strerror(rc));
    return rc;
}

/* ---- deliveries from the subscription ---- */

int hub_deliver_append(struct hub *h, const char *id, size_t id_len, uint64_t offset,
                       const uint8_t *data, size_t len)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return 0;
    int behind = 0;
    struct message *by_version[2] = {NULL, NULL}; /* encoded once per layout */
    pthread_mutex_lock(&d->lock);
    for (struct hub_client *o = d->clients; o; o = o->doc_next) {
        if (offset > o->delivered_end && catch_up(h, d, o, 0)) { /* missed announcements */
            behind = 1;
            continue;
        }
        if (offset + len <= o->delivered_end) continue; /* already has them */
        if (offset != o->delivered_end) {
            /* A catch-up ended inside this append: only its tail is missing. */
            uint64_t skip = o->delivered_end - offset;
            hub_send(h, o, msg_append(o->version, o->delivered_end, data + skip, len - skip), false);
            o->delivered_end = offset + len;
            continue;
        }
        hub_push_append(h, o, by_version, offset, data, len);
    }
    pthread_mutex_unlock(&d->lock);
    message_unref(by_version[0]);
    message_unref(by_version[1]);
    hub_doc_release(h, d);
    return behind;
}

/* With d->lock held: queues m for every member but client id `except`. */
static void send_all_but(struct hub *h, struct doc *d, uint64_t except, struct message *m)
{
    if (!m) return;
    for (struct hub_client *o = d->clients; o; o = o->doc_next)
        if (o->id != except) outq_push(h->outq, o, m, false);
}

void hub_deliver_broadcast(struct hub *h, const char *id, size_t id_len, uint64_t except,
                           const uint8_t *data, size_t len)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return;
    struct message *m = message_new(codec_broadcast_size(len));
    if (m) codec_encode_broadcast(m->data, data, len);
    pthread_mutex_lock(&d->lock);
    send_all_but(h, d, except, m);
    pthread_mutex_unlock(&d->lock);
    message_unref(m);
    hub_doc_release(h, d);
}

void hub_deliver_key(struct hub *h, const char *id, size_t id_len, uint64_t setter,
                     uint32_t version, const uint8_t *name, size_t name_len,
                     const uint8_t *value, size_t value_len)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    hub_keyview_changed(h, d, setter, version, name, name_len, value, value_len);
    pthread_mutex_unlock(&d->lock);
    hub_doc_release(h, d);
}

void hub_deliver_key_removed(struct hub *h, const char *id, size_t id_len, uint32_t version,
                             const uint8_t *name, size_t name_len)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return;
    pthread_mutex_lock(&d->lock);
    hub_keyview_removed(h, d, version, name, name_len);
    pthread_mutex_unlock(&d->lock);
    hub_doc_release(h, d);
}

int hub_sync_keys(struct hub *h, const char *id, size_t id_len, hub_keys_reader read, void *arg)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return 0;
    pthread_mutex_lock(&d->lock);
    int rc = hub_keyview_sync(h, d, read, arg) ? -1 : 0;
    pthread_mutex_unlock(&d->lock);
    hub_doc_release(h, d);
    return rc;
}

/* One read from the lowest member's end serves every member: after a reconnect they
 * are usually all at the same place. */
int hub_catch_up_document(struct hub *h, const char *id, size_t id_len)
{
    struct doc *d = hub_doc_find(h, id, id_len);
    if (!d) return 0;
    pthread_mutex_lock(&d->lock);
    int rc = d->clients != NULL;
    uint64_t from = UINT64_MAX;
    for (struct hub_client *o = d->clients; o; o = o->doc_next)
        if (o->delivered_end < from) from = o->delivered_end;
    uint8_t *bytes = NULL;
    size_t n = 0;
    int err = rc ? store_doc_read(h->store, d->id, d->id_len, from, &bytes, &n, NULL) : STORE_OK;
    for (struct hub_client *o = d->clients; o; o = o->doc_next) {
        if (err) {
            if (catch_up(h, d, o, 0)) rc = -1; /* decides, per member, what to do */
            continue;
        }
        uint64_t end = from + n;
        if (o->delivered_end > end) {
            /* It holds bytes the store no longer has (a failover to a replica that had
             * not got them, without RedisMinReplicas): it cannot be put right in
             * place; its reconnect is refused and it reloads. */
            log_warn("document %.*s: client %llu has %llu bytes, the store %llu; disconnecting",
                     (int)d->id_len, d->id, (unsigned long long)o->id,
                     (unsigned long long)o->delivered_end, (unsigned long long)end);
            outq_kill(h->outq, o, WS_CLOSE_SERVER_ERROR, "ahead of the stored document");
            continue;
        }
        if (o->delivered_end == end) continue;
        size_t skip = (size_t)(o->delivered_end - from);
        hub_send(h, o, msg_append(o->version, o->delivered_end, bytes + skip, n - skip), false);
        o->delivered_end = end;
    }
    pthread_mutex_unlock(&d->lock);
    free(bytes);
    hub_doc_release(h, d);
    return rc;
}
