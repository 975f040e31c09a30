/* client: one WebSocket connection's state, shared by the session logic (its own
 * worker thread), the hub (fan-out under a document's lock) and the sender threads.
 * Internal to server/; the locking rules are written beside each field group. */
#ifndef ZW_CLIENT_H
#define ZW_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "codec.h"

struct hub;
struct doc;
struct message;
struct mg_connection;

struct hub_client {
    struct hub *hub;
    struct mg_connection *conn; /* never touched once `closed` is set */
    int fd;
    bool tls;          /* only CivetWeb can write to a TLS connection */
    uint64_t id;       /* for log lines */
    char addr[48];     /* peer address, for log lines */
    atomic_int refs;   /* the connection holds one; a scheduled sender holds one */

    /* ---- send side, under `lock` ---- */
    pthread_mutex_t lock;
    pthread_cond_t idle;    /* signalled when `writing` drops */
    struct message **ring;  /* FIFO of queued messages; NULL slots were superseded */
    size_t head, count, cap;
    size_t queued_bytes;
    size_t sent_off;  /* framed bytes of the first queued message already sent */
    bool scheduled;   /* in the ready list, parked, or being written */
    bool parked;      /* waiting in the watcher's epoll for room to write */
    bool writing;     /* a sender is inside mg_websocket_write */
    bool closed;      /* the close handler has run (or is running) */
    bool killed;      /* shut down by us; further messages are dropped */
    bool close_after; /* shut down once the queue has drained (after an ERROR) */

    /* ---- session state, owned by the worker thread ---- */
    int version;          /* protocol 2 or 3; 0 until INIT */
    uint32_t max_message; /* split size for this client */
    struct auth_result auth; /* permissions are also written by updateUser, under doc lock */
    struct codec_reasm reasm;
    uint8_t *frag;        /* WebSocket-level fragments of the message being received */
    size_t frag_len, frag_cap;
    bool frag_open;
    int64_t connected_ms;

    /* ---- membership, under the document's lock ---- */
    struct doc *doc;        /* set at join */
    uint64_t delivered_end; /* end of the last range delivered (docs/protocol.md, Delivery) */
    struct hub_client *doc_prev, *doc_next;

    /* ---- under the hub's pending-INIT lock ---- */
    struct hub_client *pend_prev, *pend_next;
    bool pending_init;

    struct hub_client *ready_next; /* under the sender pool's lock */
};

#endif
