/* outq: owns each client's send queue (client.h, struct client_send) and its states:
 * the bound on how far behind a client may fall, superseded key updates, draining
 * before a close, and killing a client that cannot keep up. */
#include "outq.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"

#define EXEMPT_BIT ((uintptr_t)1)

static bool slot_exempt(struct message *s) { return ((uintptr_t)s & EXEMPT_BIT) != 0; }

/* Called with c->send.lock held. */
static void drop_queue(struct client_send *s)
{
    for (size_t i = 0; i < s->count; i++)
        message_unref(outq_slot_msg(s->ring[(s->head + i) % s->cap]));
    free(s->ring);
    s->ring = NULL;
    s->head = s->count = s->cap = 0;
    s->queued_bytes = 0;
    s->sent_off = 0;
}

static int ring_grow(struct client_send *s, size_t need)
{
    size_t cap = s->cap ? s->cap : 8;
    while (cap < need) cap *= 2;
    if (cap == s->cap) return 0;
    struct message **ring = malloc(cap * sizeof *ring);
    if (!ring) return -1;
    for (size_t i = 0; i < s->count; i++) ring[i] = s->ring[(s->head + i) % s->cap];
    free(s->ring);
    s->ring = ring;
    s->cap = cap;
    s->head = 0;
    return 0;
}

/* A newer KEY INFORMATION about the same key makes a queued older one pointless. */
static void supersede_key(struct client_send *s, const struct message *m)
{
    /* The first message may be partly on the wire already (sent_off). */
    for (size_t i = s->sent_off ? 1 : 0; i < s->count; i++) {
        struct message **slot = &s->ring[(s->head + i) % s->cap];
        struct message *old = outq_slot_msg(*slot);
        if (old && old->key_name && old->key_name_len == m->key_name_len &&
            !memcmp(old->key_name, m->key_name, m->key_name_len)) {
            s->queued_bytes -= old->len;
            message_unref(old);
            *slot = NULL;
        }
    }
}

/* How far behind the client would be with a message of m_len bytes added: its queued
 * bytes that are not exempt, minus the oldest such message — a client is behind by
 * what waits *after* the message it is being sent, so one message larger than the
 * bound (an append may be up to MaxMessageBytes) does not by itself disconnect a client
 * that keeps up. Memory per client stays within the bound plus one message. */
static size_t lag_bytes(const struct client_send *s, size_t m_len)
{
    size_t exempt = 0, oldest = 0;
    for (size_t i = 0; i < s->count; i++) {
        struct message *slot = s->ring[(s->head + i) % s->cap];
        if (!slot) continue;
        if (slot_exempt(slot))
            exempt += outq_slot_msg(slot)->len;
        else if (!oldest)
            oldest = outq_slot_msg(slot)->len;
    }
    if (!oldest) return 0; /* the new message would be the oldest */
    return s->queued_bytes - exempt - oldest + m_len;
}

/* Called with the lock held: marks c scheduled. Returns true when the caller must wake
 * the loop (with the reference taken here). */
static bool schedule_locked(struct hub_client *c)
{
    if (c->send.scheduled) return false;
    c->send.scheduled = true;
    client_ref(c);
    return true;
}

/* Called with the lock held: the queue is dropped and the loop is to close c. */
static bool kill_locked(struct hub_client *c, uint16_t code)
{
    drop_queue(&c->send);
    c->send.state = OUTQ_DEAD;
    c->send.close_code = code;
    return schedule_locked(c);
}

int outq_push(const struct outq *q, struct hub_client *c, struct message *m, bool exempt)
{
    struct client_send *s = &c->send;
    pthread_mutex_lock(&s->lock);
    if (s->state != OUTQ_OPEN) {
        pthread_mutex_unlock(&s->lock);
        return -1;
    }
    if (m->key_name) supersede_key(s, m);
    /* The exact live count is only needed when the total is already past the bound. */
    size_t lag = 0;
    if (!exempt && s->queued_bytes + m->len > q->bound && (lag = lag_bytes(s, m->len)) > q->bound) {
        bool wake = kill_locked(c, 0);
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add(&q->counters->slow_disconnects, 1);
        client_log(c, LOG_WARN,
                   "send queue %zu bytes passed its bound of %zu; disconnecting slow client", lag,
                   q->bound);
        if (wake) q->wake(q->wake_arg, c);
        return -1;
    }
    if (s->count == s->cap && ring_grow(s, s->count + 1)) {
        bool wake = kill_locked(c, 0);
        pthread_mutex_unlock(&s->lock);
        client_log(c, LOG_ERROR, "out of memory for its send queue; disconnecting");
        if (wake) q->wake(q->wake_arg, c);
        return -1;
    }
    struct message *slot = message_ref(m);
    if (exempt) slot = (struct message *)((uintptr_t)slot | EXEMPT_BIT);
    s->ring[(s->head + s->count) % s->cap] = slot;
    s->count++;
    s->queued_bytes += m->len;
    bool wake = schedule_locked(c);
    pthread_mutex_unlock(&s->lock);
    if (wake) q->wake(q->wake_arg, c);
    return 0;
}

void outq_close_after_drain(const struct outq *q, struct hub_client *c, uint16_t code)
{
    pthread_mutex_lock(&c->send.lock);
    bool wake = false;
    if (c->send.state == OUTQ_OPEN) {
        c->send.state = OUTQ_DRAINING;
        c->send.close_code = code;
        wake = schedule_locked(c);
    }
    pthread_mutex_unlock(&c->send.lock);
    if (wake) q->wake(q->wake_arg, c);
}

void outq_kill(const struct outq *q, struct hub_client *c, uint16_t code, const char *why)
{
    pthread_mutex_lock(&c->send.lock);
    bool first = c->send.state != OUTQ_DEAD, wake = false;
    if (first) wake = kill_locked(c, code);
    pthread_mutex_unlock(&c->send.lock);
    if (first) client_log(c, LOG_INFO, "disconnected: %s", why);
    if (wake) q->wake(q->wake_arg, c);
}

void outq_take(struct hub_client *c, struct message **slots, size_t max, size_t max_bytes,
               struct outq_batch *b)
{
    struct client_send *s = &c->send;
    size_t bytes = 0;
    b->msgs = slots;
    b->n = 0;
    pthread_mutex_lock(&s->lock);
    b->sent_off = s->sent_off;
    s->sent_off = 0;
    while (s->count && b->n < max && bytes < max_bytes) {
        struct message *slot = s->ring[s->head];
        s->head = (s->head + 1) % s->cap;
        s->count--;
        if (!slot) continue;
        s->queued_bytes -= outq_slot_msg(slot)->len;
        bytes += outq_slot_msg(slot)->len;
        slots[b->n++] = slot;
    }
    b->state = s->state;
    b->close_code = s->close_code;
    /* Nothing left after this batch and nothing to close: a later push wakes the loop
     * again (while this batch is being written, if it comes that soon). */
    b->drained = s->count == 0;
    if (b->drained && s->state == OUTQ_OPEN) s->scheduled = false;
    pthread_mutex_unlock(&s->lock);
}

int outq_give_back(const struct outq *q, struct hub_client *c, struct outq_batch *b, size_t done,
                   size_t sent_off)
{
    (void)q;
    struct client_send *s = &c->send;
    size_t n = b->n - done;
    pthread_mutex_lock(&s->lock);
    if (s->state == OUTQ_DEAD) {
        pthread_mutex_unlock(&s->lock);
        for (size_t i = done; i < b->n; i++) message_unref(outq_slot_msg(b->msgs[i]));
        return 0;
    }
    if (ring_grow(s, s->count + n)) {
        for (size_t i = done; i < b->n; i++) message_unref(outq_slot_msg(b->msgs[i]));
        kill_locked(c, 0);
        s->scheduled = true; /* the loop holding c carries out the kill itself */
        pthread_mutex_unlock(&s->lock);
        client_log(c, LOG_ERROR, "out of memory for its send queue; disconnecting");
        return -1;
    }
    for (size_t i = b->n; i-- > done;) {
        s->head = (s->head + s->cap - 1) % s->cap;
        s->ring[s->head] = b->msgs[i];
        s->count++;
        s->queued_bytes += outq_slot_msg(b->msgs[i])->len;
    }
    s->sent_off = n ? sent_off : 0;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void outq_release(const struct outq *q, struct outq_batch *b, size_t done)
{
    size_t bytes = 0;
    for (size_t i = 0; i < done; i++) {
        bytes += outq_slot_msg(b->msgs[i])->len;
        message_unref(outq_slot_msg(b->msgs[i]));
    }
    atomic_fetch_add_explicit(&q->counters->messages_out, done, memory_order_relaxed);
    atomic_fetch_add_explicit(&q->counters->bytes_out, bytes, memory_order_relaxed);
}

void outq_closed(struct hub_client *c)
{
    pthread_mutex_lock(&c->send.lock);
    drop_queue(&c->send);
    c->send.state = OUTQ_DEAD;
    pthread_mutex_unlock(&c->send.lock);
}

enum outq_state outq_state(struct hub_client *c)
{
    pthread_mutex_lock(&c->send.lock);
    enum outq_state st = c->send.state;
    pthread_mutex_unlock(&c->send.lock);
    return st;
}
