/* outq: per-client bounded send queues and the sender threads that drain them into
 * CivetWeb (one slow client harms no one). A client whose socket has no room is parked in an
 * epoll set instead of blocking a sender; a client whose queue passes its bound is
 * disconnected. Thread-safe. */
#ifndef ZW_OUTQ_H
#define ZW_OUTQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hub_client;
struct message;
struct outq;

struct outq_counters {
    atomic_uint_fast64_t bytes_out, messages_out, slow_disconnects;
};

/* Starts `threads` senders and the watcher. `tick` (may be NULL) runs on the watcher
 * about every 250 ms. Returns NULL on failure. */
struct outq *outq_start(int threads, size_t bound, struct outq_counters *counters,
                        void (*tick)(void *arg), void *tick_arg);
/* Stops the threads. Clients must have been closed first. */
void outq_stop(struct outq *q);

/* Queues one more reference to m for c. `exempt` messages (a catch-up) do not count
 * against the bound. Returns 0, or -1 when the client is gone or was disconnected for
 * passing its bound (then logged). */
int outq_push(struct outq *q, struct hub_client *c, struct message *m, bool exempt);

/* Sends the close frame and shuts the connection down once its queue has drained. */
void outq_close_after_drain(struct outq *q, struct hub_client *c);

/* Shuts the connection down now, dropping what is queued. `why` goes to the log. */
void outq_kill(struct outq *q, struct hub_client *c, const char *why);

/* From the close handler: after this returns no thread touches c->conn again. */
void outq_client_closed(struct outq *q, struct hub_client *c);

#endif
