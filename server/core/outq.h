/* outq: each client's bounded send queue and the rules for when a client is too slow
 * to keep (one slow client harms no one). Producers (sessions, fan-out under a
 * document's lock, the cluster relay) push from any thread; the connection's event
 * loop takes batches to write. The states are in client.h. Thread-safe. */
#ifndef ZW_OUTQ_H
#define ZW_OUTQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client.h"

struct message;

struct outq_counters {
    atomic_uint_fast64_t bytes_out, messages_out, slow_disconnects;
};

/* Called (without locks held) when a client has something for its loop to do: a queue
 * that became non-empty, a close to carry out. The callee takes over one reference. */
typedef void (*outq_wake_fn)(void *arg, struct hub_client *c);

struct outq {
    size_t bound; /* bytes a client may fall behind by */
    struct outq_counters *counters;
    outq_wake_fn wake;
    void *wake_arg;
};

/* Queues one more reference to m for c. `exempt` messages (a catch-up, an ERROR before
 * closing, control frames) do not count against the bound. Returns 0, or -1 when the
 * client takes no more (closing, gone, or just disconnected for passing its bound,
 * which is logged). */
int outq_push(const struct outq *q, struct hub_client *c, struct message *m, bool exempt);

/* Stops taking messages; once what is queued has been written, the connection ends
 * with a close frame carrying `code` (1000: normal). */
void outq_close_after_drain(const struct outq *q, struct hub_client *c, uint16_t code);

/* Drops what is queued and ends the connection now, with a close frame carrying
 * `code` when it is not 0. `why` goes to the log. */
void outq_kill(const struct outq *q, struct hub_client *c, uint16_t code, const char *why);

/* ---- the writer's side (the connection's loop thread) ---- */

/* What the writer is to do after a batch. */
struct outq_batch {
    struct message **msgs; /* slots as queued (see outq_slot_msg) */
    size_t n;
    size_t sent_off;       /* framed bytes of msgs[0] already written */
    enum outq_state state; /* DRAINING with n == 0: close now; DEAD: close, drop all */
    uint16_t close_code;
    bool drained;          /* the queue was left empty (and, when OPEN, unscheduled) */
};

/* Takes up to `max` messages (about max_bytes) from the head of c's queue. When that
 * leaves the queue empty the client is no longer scheduled (a later push wakes it
 * again). */
void outq_take(struct hub_client *c, struct message **slots, size_t max, size_t max_bytes,
               struct outq_batch *b);
/* Puts back msgs[done..n) of a batch that the socket did not take, the first with
 * `sent_off` framed bytes already written. Returns 0, or -1 when memory ran out (the
 * client is then killed). */
int outq_give_back(const struct outq *q, struct hub_client *c, struct outq_batch *b, size_t done,
                   size_t sent_off);
/* Counts a written batch's first `done` messages and drops the writer's references. */
void outq_release(const struct outq *q, struct outq_batch *b, size_t done);
/* The queue's state now. */
enum outq_state outq_state(struct hub_client *c);
/* The connection is gone: drops the queue; nothing is taken from here on. */
void outq_closed(struct hub_client *c);

/* The message in a queue slot (slots carry the exemption in their low bit). */
static inline struct message *outq_slot_msg(struct message *slot)
{
    return (struct message *)((uintptr_t)slot & ~(uintptr_t)1);
}

#endif
