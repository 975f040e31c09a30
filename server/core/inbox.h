/* inbox: runs each client's inbound messages in order on a small pool of worker
 * threads, so that what a message waits for (a durable commit, a Redis round trip, a
 * large document read) never holds an event loop. One worker at a time per client;
 * a client with too much waiting is paused by its loop until the worker catches up.
 * Thread-safe. */
#ifndef ZW_INBOX_H
#define ZW_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hub_client;
struct inbox;

struct inbox_handlers {
    void *arg;
    /* One whole message, on a worker. */
    void (*message)(void *arg, struct hub_client *c, const uint8_t *data, size_t len);
    /* The connection ended; the last call for c. */
    void (*closed)(void *arg, struct hub_client *c);
    /* c had been paused and has room again (conn_resume). */
    void (*resume)(void *arg, struct hub_client *c);
    void *resume_arg;
};

/* Starts `threads` workers. Returns NULL when memory or threads ran out. */
struct inbox *inbox_start(int threads, size_t pause_bytes, const struct inbox_handlers *h);
/* Runs what is queued (every close included), then stops the workers. */
void inbox_stop(struct inbox *ib);

/* Queues a copy of a message for c. Returns true when c now has more than pause_bytes
 * waiting: its loop should stop reading it until `resume`. */
bool inbox_push(struct inbox *ib, struct hub_client *c, const uint8_t *data, size_t len);
/* Queues the end of c (holding a reference until it has run). */
void inbox_push_close(struct inbox *ib, struct hub_client *c);

#endif
