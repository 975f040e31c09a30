/* conn: the connection layer. Once CivetWeb has upgraded a connection to WebSocket,
 * its socket (and TLS session) is handed here and owned by one of a few epoll loops
 * for the rest of its life: the loop reads and checks frames (wsframe), inflates
 * compressed messages, answers pings and closes, enforces the read, INIT and ping
 * timeouts, hands whole messages up, and writes the client's send queue (outq) with
 * non-blocking sendmsg or SSL_write. No thread per connection. Thread-safe. */
#ifndef ZW_CONN_H
#define ZW_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "outq.h"

struct conn_layer;
struct hub_client;

struct conn_config {
    int loops;               /* event-loop threads */
    size_t max_message;      /* largest inbound WebSocket message (MaxMessageBytes) */
    int init_timeout_ms;     /* the session must have accepted INIT by then */
    int read_timeout_ms;     /* a started frame must arrive within this, +1 s per 16 KiB */
    int ping_interval_ms;    /* a ping after this much silence; 3 unanswered end it */
    size_t send_queue_bytes; /* outq bound */
};

/* What the layer calls, on the connection's loop thread. */
struct conn_handlers {
    void *arg;
    /* A new connection; before any message. */
    void (*opened)(void *arg, struct hub_client *c);
    /* One whole inbound message (text frames are read as binary), valid during the
     * call only. Returns true when the client has enough waiting: the loop stops
     * reading it until conn_resume. */
    bool (*message)(void *arg, struct hub_client *c, const uint8_t *data, size_t len);
    /* The connection has ended (socket closed); nothing follows. */
    void (*closed)(void *arg, struct hub_client *c);
    /* Whether the session accepted INIT (for InitTimeoutMs). */
    bool (*joined)(void *arg, const struct hub_client *c);
};

/* Starts the loops. Returns NULL with a reason in err. */
struct conn_layer *conn_layer_start(const struct conn_config *cfg, const struct conn_handlers *h,
                                    char *err, size_t err_len);
/* Closes every connection (close frame 1001, going away), then stops the loops. The
 * layer stays readable (counters, the outq) until conn_layer_free. */
void conn_layer_stop(struct conn_layer *L);
void conn_layer_free(struct conn_layer *L);

/* The send-queue policy whose writer this layer is (hub.c pushes into it). */
const struct outq *conn_layer_outq(const struct conn_layer *L);

/* A connection CivetWeb has upgraded. */
struct conn_adoption {
    int fd;
    void *ssl;            /* SSL *, or NULL */
    const uint8_t *early; /* bytes CivetWeb read past the HTTP request */
    size_t early_len;
    const char *addr; /* peer address, for logs */
    bool deflate;     /* permessage-deflate was negotiated */
};
/* Takes over fd and ssl (closed and freed here from now on, also on failure).
 * Returns 0, or -1 when the layer is stopping or memory ran out. */
int conn_adopt(struct conn_layer *L, const struct conn_adoption *a);

/* Open connections. */
uint64_t conn_count(const struct conn_layer *L);

/* Starts reading c again after `message` asked to pause. Any thread. */
void conn_resume(struct conn_layer *L, struct hub_client *c);

#endif
