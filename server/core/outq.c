/* outq: owns the ready list, the sender threads, the parked-client epoll set and the
 * rules for when a client is too slow to keep. */
#include "outq.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "civetweb.h"
#include "client.h"
#include "codec.h"
#include "log.h"
#include "message.h"

/* One sender hands at most this much of a client's queue to CivetWeb before letting
 * the next client have a turn. */
#define BATCH_MESSAGES 64
#define BATCH_BYTES (256u << 10)

void client_unref(struct hub_client *c);

struct outq {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct hub_client *ready_head, *ready_tail;
    bool stopping;
    size_t bound;
    struct outq_counters *counters;
    int epfd;
    void (*tick)(void *);
    void *tick_arg;
    int nthreads;
    pthread_t *threads;
    pthread_t watcher;
};

/* Ring entries carry the exemption flag in the low pointer bit, keeping the ring a
 * plain array of pointers. */
#define EXEMPT_BIT ((uintptr_t)1)
static struct message *slot_msg(struct message *s)
{
    return (struct message *)((uintptr_t)s & ~EXEMPT_BIT);
}
static bool slot_exempt(struct message *s) { return ((uintptr_t)s & EXEMPT_BIT) != 0; }

static void ready_push(struct outq *q, struct hub_client *c)
{
    pthread_mutex_lock(&q->lock);
    c->ready_next = NULL;
    /* Only an empty list can have every sender asleep; a sender that takes work
     * from a longer one wakes the next (sender_main). Fan-out to thousands of
     * clients so costs a few wake-ups, not one each. */
    bool was_empty = !q->ready_head;
    if (q->ready_tail) q->ready_tail->ready_next = c;
    else q->ready_head = c;
    q->ready_tail = c;
    if (was_empty) pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->lock);
}

/* Called with c->lock held. */
static void drop_queue(struct hub_client *c)
{
    for (size_t i = 0; i < c->count; i++) message_unref(slot_msg(c->ring[(c->head + i) % c->cap]));
    c->head = c->count = 0;
    c->queued_bytes = 0;
    c->sent_off = 0;
}

/* Called with c->lock held; the conn is still valid because `closed` is false. */
static void shut_down(struct hub_client *c)
{
    if (!c->closed) shutdown(c->fd, SHUT_RDWR);
}

static int ring_grow(struct hub_client *c)
{
    size_t cap = c->cap ? c->cap * 2 : 8;
    struct message **ring = malloc(cap * sizeof *ring);
    if (!ring) return -1;
    for (size_t i = 0; i < c->count; i++) ring[i] = c->ring[(c->head + i) % c->cap];
    free(c->ring);
    c->ring = ring;
    c->cap = cap;
    c->head = 0;
    return 0;
}

/* A newer KEY INFORMATION about the same key makes a queued older one pointless. */
static void supersede_key(struct hub_client *c, const struct message *m)
{
    /* The first message may be partly on the wire already (sent_off). */
    for (size_t i = c->sent_off ? 1 : 0; i < c->count; i++) {
        struct message **slot = &c->ring[(c->head + i) % c->cap];
        struct message *old = slot_msg(*slot);
        if (old && old->key_name && old->key_name_len == m->key_name_len &&
            !memcmp(old->key_name, m->key_name, m->key_name_len)) {
            c->queued_bytes -= old->len;
            message_unref(old);
            *slot = NULL;
        }
    }
}

/* How far behind the client would be with a message of m_len bytes added: its
 * queued bytes that are not exempt, minus the oldest such message — a client is
 * behind by what waits *after* the message it is being sent, so one message larger
 * than the bound (an append may be up to MaxMessageBytes) does not by itself
 * disconnect a client that keeps up. Memory per client stays within the bound plus
 * one message. */
static size_t lag_bytes(const struct hub_client *c, size_t m_len)
{
    size_t exempt = 0, oldest = 0;
    for (size_t i = 0; i < c->count; i++) {
        struct message *s = c->ring[(c->head + i) % c->cap];
        if (!s) continue;
        if (slot_exempt(s)) exempt += slot_msg(s)->len;
        else if (!oldest) oldest = slot_msg(s)->len;
    }
    if (!oldest) return 0; /* the new message would be the oldest */
    return c->queued_bytes - exempt - oldest + m_len;
}

int outq_push(struct outq *q, struct hub_client *c, struct message *m, bool exempt)
{
    pthread_mutex_lock(&c->lock);
    if (c->closed || c->killed) {
        pthread_mutex_unlock(&c->lock);
        return -1;
    }
    if (m->key_name) supersede_key(c, m);
    /* The exact live count is only needed when the total is already past the bound. */
    size_t lag = 0;
    if (!exempt && c->queued_bytes + m->len > q->bound && (lag = lag_bytes(c, m->len)) > q->bound) {
        c->killed = true;
        drop_queue(c);
        shut_down(c);
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add(&q->counters->slow_disconnects, 1);
        log_warn("client %llu (%s): send queue %zu bytes passed its bound of %zu; disconnecting slow client",
                 (unsigned long long)c->id, c->addr, lag, q->bound);
        return -1;
    }
    if (c->count == c->cap && ring_grow(c)) {
        pthread_mutex_unlock(&c->lock);
        outq_kill(q, c, "out of memory for its send queue");
        return -1;
    }
    struct message *slot = message_ref(m);
    if (exempt) slot = (struct message *)((uintptr_t)slot | EXEMPT_BIT);
    c->ring[(c->head + c->count) % c->cap] = slot;
    c->count++;
    c->queued_bytes += m->len;
    bool schedule = !c->scheduled;
    if (schedule) {
        c->scheduled = true;
        atomic_fetch_add(&c->refs, 1);
    }
    pthread_mutex_unlock(&c->lock);
    if (schedule) ready_push(q, c);
    return 0;
}

void outq_close_after_drain(struct outq *q, struct hub_client *c)
{
    pthread_mutex_lock(&c->lock);
    bool now = false;
    if (!c->closed && !c->killed) {
        c->close_after = true;
        now = !c->scheduled;
        if (now) {
            c->scheduled = true;
            atomic_fetch_add(&c->refs, 1);
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (now) ready_push(q, c);
}

void outq_kill(struct outq *q, struct hub_client *c, const char *why)
{
    (void)q;
    pthread_mutex_lock(&c->lock);
    bool first = !c->closed && !c->killed;
    if (first) {
        c->killed = true;
        drop_queue(c);
        shut_down(c);
    }
    pthread_mutex_unlock(&c->lock);
    if (first) log_info("client %llu (%s): disconnected: %s", (unsigned long long)c->id, c->addr, why);
}

void outq_client_closed(struct outq *q, struct hub_client *c)
{
    pthread_mutex_lock(&c->lock);
    c->closed = true;
    bool release = false;
    if (c->parked) {
        epoll_ctl(q->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        c->parked = false;
        c->scheduled = false;
        release = true;
    }
    if (c->writing) shutdown(c->fd, SHUT_RDWR); /* unblock a sender stuck on this peer */
    while (c->writing) pthread_cond_wait(&c->idle, &c->lock);
    drop_queue(c);
    pthread_mutex_unlock(&c->lock);
    if (release) client_unref(c);
}

/* Writes one logical message through CivetWeb, split at the client's maxMessageSize
 * (docs/protocol.md, Framing and continuations). Used for TLS connections, whose bytes only CivetWeb can encrypt.
 * Returns 0, or -1 when the connection failed. */
static int write_message_tls(struct hub_client *c, const struct message *m, uint8_t **scratch,
                             size_t *scratch_cap)
{
    size_t pieces = codec_split_count(m->len, c->max_message);
    if (pieces <= 1)
        return mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_BINARY, (const char *)m->data, m->len) > 0 ? 0 : -1;
    for (size_t i = 0; i < pieces; i++) {
        struct codec_piece p;
        codec_split_piece(m->data, m->len, c->max_message, i, &p);
        size_t n = 2 + p.body_len;
        if (n > *scratch_cap) {
            uint8_t *b = realloc(*scratch, n);
            if (!b) return -1;
            *scratch = b;
            *scratch_cap = n;
        }
        memcpy(*scratch, p.hdr, 2);
        memcpy(*scratch + 2, p.body, p.body_len);
        if (mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_BINARY, (const char *)*scratch, n) <= 0) return -1;
    }
    return 0;
}

/* ---- plain connections: we frame the batch ourselves ----
 * One sendmsg for a whole batch instead of CivetWeb's two writes per message, and
 * never a wait: what the socket does not take stays queued, the client is parked,
 * and c->sent_off remembers how much of the queue's first message (in its framed
 * form) is already out. The frames are written under CivetWeb's connection lock,
 * which its own ping, pong and close frames also take, so frames never interleave. */

#define FRAMES_PER_CALL 128

/* The part of one message that an iovec range covers, in framed bytes. */
struct segment {
    size_t msg, start, end;
    bool last; /* end is the end of the message */
};

struct framer {
    struct iovec iov[FRAMES_PER_CALL * 3];
    uint8_t hdr[FRAMES_PER_CALL][12]; /* WebSocket header (≤ 10) + piece header (2) */
    struct segment seg[FRAMES_PER_CALL];
    int niov, nframes, nseg;
};

static size_t ws_header(uint8_t *h, size_t payload)
{
    h[0] = 0x80 | MG_WEBSOCKET_OPCODE_BINARY;
    if (payload < 126) {
        h[1] = (uint8_t)payload;
        return 2;
    }
    if (payload <= 0xFFFF) {
        h[1] = 126;
        codec_put16(h + 2, (uint16_t)payload);
        return 4;
    }
    h[1] = 127;
    codec_put64(h + 2, payload);
    return 10;
}

static void add_iov(struct framer *f, const uint8_t *p, size_t len, size_t skip)
{
    if (skip < len) f->iov[f->niov++] = (struct iovec){.iov_base = (void *)(p + skip), .iov_len = len - skip};
}

/* Adds iovecs for message m's framed bytes from `skip` on (split at the client's
 * maxMessageSize, docs/protocol.md, Framing and continuations), as many pieces as the framer holds. Returns the
 * framed offset reached; *total gets the framed size. */
static size_t add_frames(struct framer *f, const struct message *m, uint32_t max, size_t skip,
                         size_t *total)
{
    size_t pieces = codec_split_count(m->len, max), pos = 0, reached = skip;
    bool split = pieces > 1;
    for (size_t k = 0; k < pieces; k++) {
        struct codec_piece p;
        const uint8_t *body = m->data;
        size_t body_len = m->len;
        if (split) {
            codec_split_piece(m->data, m->len, max, k, &p);
            body = p.body;
            body_len = p.body_len;
        }
        uint8_t h[12];
        size_t hl = ws_header(h, body_len + (split ? 2 : 0));
        if (split) memcpy(h + hl, p.hdr, 2), hl += 2;
        size_t end = pos + hl + body_len;
        if (end > skip && f->nframes < FRAMES_PER_CALL) {
            size_t from = skip > pos ? skip - pos : 0;
            uint8_t *dst = f->hdr[f->nframes++];
            memcpy(dst, h, hl);
            add_iov(f, dst, hl, from);
            add_iov(f, body, body_len, from > hl ? from - hl : 0);
            reached = end;
        }
        pos = end;
    }
    *total = pos;
    return reached;
}

/* Sends what the socket takes now. Returns 0 when all went, 1 when the socket is
 * full, -1 on failure; *sent counts the bytes that went either way. */
static int send_now(int fd, struct iovec *iov, int cnt, size_t *sent)
{
    *sent = 0;
    while (cnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
        }
        *sent += (size_t)w;
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Writes batch[0..n) starting *off framed bytes into batch[0]. Returns 0 when all of
 * it went, 1 when the socket filled up, -1 when the connection failed. *done gets the
 * number of messages sent in full, and *off how much of batch[*done] went. */
static int write_batch_plain(struct hub_client *c, struct message **batch, size_t n,
                             struct framer *f, size_t *done, size_t *sent_off)
{
    size_t i = 0, off = *sent_off;
    int rc = 0;
    mg_lock_connection(c->conn);
    while (i < n && rc == 0) {
        f->niov = f->nframes = f->nseg = 0;
        for (size_t j = i, o = off; j < n && f->nframes < FRAMES_PER_CALL;) {
            size_t total, reached = add_frames(f, slot_msg(batch[j]), c->max_message, o, &total);
            f->seg[f->nseg++] = (struct segment){.msg = j, .start = o, .end = reached, .last = reached == total};
            if (reached < total) break; /* the framer is full inside this message */
            j++;
            o = 0;
        }
        size_t sent;
        rc = send_now(c->fd, f->iov, f->niov, &sent);
        for (int k = 0; k < f->nseg; k++) { /* advance (i, off) by what went */
            struct segment *g = &f->seg[k];
            size_t len = g->end - g->start;
            if (sent < len) {
                i = g->msg;
                off = g->start + sent;
                break;
            }
            sent -= len;
            i = g->last ? g->msg + 1 : g->msg;
            off = g->last ? 0 : g->end;
        }
    }
    mg_unlock_connection(c->conn);
    *done = i;
    *sent_off = i < n ? off : 0;
    return rc;
}

static bool has_room(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT);
}

/* A sender thread's reusable buffers. */
struct sender_buffers {
    uint8_t *scratch;
    size_t scratch_cap;
    struct framer framer;
};

/* Called with c->lock held: waits in the watcher's epoll set for room. Returns false
 * when the client could not be parked. */
static bool park(struct outq *q, struct hub_client *c)
{
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT, .data.ptr = c};
    if (epoll_ctl(q->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0 ||
        (errno == EEXIST && epoll_ctl(q->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)) {
        c->parked = true;
        return true;
    }
    return false;
}

/* Called with c->lock held: puts an unsent batch back at the front of the queue. */
static int unshift_batch(struct hub_client *c, struct message **batch, size_t n)
{
    while (c->count + n > c->cap)
        if (ring_grow(c)) return -1;
    for (size_t i = n; i-- > 0;) {
        c->head = (c->head + c->cap - 1) % c->cap;
        c->ring[c->head] = batch[i];
        c->count++;
        c->queued_bytes += slot_msg(batch[i])->len;
    }
    return 0;
}

static void serve_client(struct outq *q, struct hub_client *c, struct sender_buffers *w)
{
    struct message *batch[BATCH_MESSAGES]; /* ring slots, exemption bit included */
    size_t n = 0, bytes = 0;

    pthread_mutex_lock(&c->lock);
    if (c->closed || c->killed) {
        c->scheduled = false;
        pthread_mutex_unlock(&c->lock);
        client_unref(c);
        return;
    }
    /* Plain connections find out by trying (one system call instead of two); a TLS
     * write goes through CivetWeb and cannot stop halfway, so there we ask first, and
     * a write that still blocks is bounded by WriteTimeoutMs (CivetWeb's
     * request_timeout_ms). */
    if (c->tls && c->count && !has_room(c->fd) && park(q, c)) {
        pthread_mutex_unlock(&c->lock);
        return;
    }
    while (c->count && n < BATCH_MESSAGES && bytes < BATCH_BYTES) {
        struct message *slot = c->ring[c->head];
        c->head = (c->head + 1) % c->cap;
        c->count--;
        if (!slot) continue;
        c->queued_bytes -= slot_msg(slot)->len;
        bytes += slot_msg(slot)->len;
        batch[n++] = slot;
    }
    bool closing = c->close_after && c->count == 0;
    size_t sent_off = c->sent_off; /* under the lock: a kill resets it */
    c->sent_off = 0;
    c->writing = true;
    pthread_mutex_unlock(&c->lock);

    int rc = 0;
    size_t done = n;
    if (c->tls) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = write_message_tls(c, slot_msg(batch[i]), &w->scratch, &w->scratch_cap);
    } else {
        rc = write_batch_plain(c, batch, n, &w->framer, &done, &sent_off);
    }
    if (rc == 1) { /* the socket is full: the rest goes back, and we wait for room */
        size_t sent_bytes = 0;
        for (size_t i = 0; i < done; i++) {
            sent_bytes += slot_msg(batch[i])->len;
            message_unref(slot_msg(batch[i]));
        }
        atomic_fetch_add_explicit(&q->counters->messages_out, done, memory_order_relaxed);
        atomic_fetch_add_explicit(&q->counters->bytes_out, sent_bytes, memory_order_relaxed);
        pthread_mutex_lock(&c->lock);
        c->writing = false;
        pthread_cond_broadcast(&c->idle);
        bool parked = !c->closed && !c->killed && unshift_batch(c, batch + done, n - done) == 0 &&
                      park(q, c);
        if (parked) c->sent_off = sent_off;
        if (!parked && !c->closed && !c->killed) {
            c->killed = true;
            drop_queue(c);
            shutdown(c->fd, SHUT_RDWR);
            log_warn("client %llu (%s): cannot wait for room to write; disconnecting",
                     (unsigned long long)c->id, c->addr);
        }
        if (!parked) {
            c->scheduled = false;
            for (size_t i = done; i < n; i++) message_unref(slot_msg(batch[i]));
        }
        pthread_mutex_unlock(&c->lock);
        if (!parked) client_unref(c);
        return;
    }
    bool failed = rc != 0;
    if (!failed) {
        atomic_fetch_add_explicit(&q->counters->messages_out, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&q->counters->bytes_out, bytes, memory_order_relaxed);
    }
    for (size_t i = 0; i < n; i++) message_unref(slot_msg(batch[i]));
    if (closing && !failed) {
        static const char normal_close[2] = {0x03, (char)0xE8}; /* 1000 */
        mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, normal_close, 2);
    }

    pthread_mutex_lock(&c->lock);
    c->writing = false;
    pthread_cond_broadcast(&c->idle);
    if ((failed || closing) && !c->closed && !c->killed) {
        c->killed = true;
        drop_queue(c);
        shutdown(c->fd, SHUT_RDWR);
    }
    bool again = c->count && !c->closed && !c->killed;
    if (!again) c->scheduled = false;
    pthread_mutex_unlock(&c->lock);
    if (again) ready_push(q, c);
    else client_unref(c);
}

static void *sender_main(void *arg)
{
    struct outq *q = arg;
    struct sender_buffers *w = calloc(1, sizeof *w);
    if (!w) {
        log_error("sender thread: out of memory");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&q->lock);
        while (!q->ready_head && !q->stopping) pthread_cond_wait(&q->wake, &q->lock);
        struct hub_client *c = q->ready_head;
        if (!c) {
            pthread_mutex_unlock(&q->lock);
            break;
        }
        q->ready_head = c->ready_next;
        if (!q->ready_head) q->ready_tail = NULL;
        else pthread_cond_signal(&q->wake);
        pthread_mutex_unlock(&q->lock);
        serve_client(q, c, w);
    }
    free(w->scratch);
    free(w);
    return NULL;
}

static void *watcher_main(void *arg)
{
    struct outq *q = arg;
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(q->epfd, events, 64, 250);
        pthread_mutex_lock(&q->lock);
        bool stop = q->stopping;
        pthread_mutex_unlock(&q->lock);
        if (stop) break;
        for (int i = 0; i < n; i++) {
            struct hub_client *c = events[i].data.ptr;
            pthread_mutex_lock(&c->lock);
            bool wake = c->parked;
            if (wake) {
                c->parked = false;
                epoll_ctl(q->epfd, EPOLL_CTL_DEL, c->fd, NULL);
            }
            pthread_mutex_unlock(&c->lock);
            if (wake) ready_push(q, c);
        }
        if (q->tick) q->tick(q->tick_arg);
    }
    return NULL;
}

struct outq *outq_start(int threads, size_t bound, struct outq_counters *counters,
                        void (*tick)(void *arg), void *tick_arg)
{
    struct outq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    q->bound = bound;
    q->counters = counters;
    q->tick = tick;
    q->tick_arg = tick_arg;
    q->epfd = epoll_create1(EPOLL_CLOEXEC);
    q->threads = calloc((size_t)threads, sizeof *q->threads);
    if (q->epfd < 0 || !q->threads) goto fail;
    for (; q->nthreads < threads; q->nthreads++)
        if (pthread_create(&q->threads[q->nthreads], NULL, sender_main, q)) goto fail;
    if (pthread_create(&q->watcher, NULL, watcher_main, q)) goto fail;
    return q;
fail:
    log_error("cannot start sender threads: %s", strerror(errno));
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++) pthread_join(q->threads[i], NULL);
    if (q->epfd >= 0) close(q->epfd);
    free(q->threads);
    free(q);
    return NULL;
}

void outq_stop(struct outq *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->lock);
    for (int i = 0; i < q->nthreads; i++) pthread_join(q->threads[i], NULL);
    pthread_join(q->watcher, NULL);
    close(q->epfd);
    free(q->threads);
    pthread_cond_destroy(&q->wake);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
