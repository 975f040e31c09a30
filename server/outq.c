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
    int write_timeout_ms;
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
    for (size_t i = 0; i < c->count; i++) {
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
    if (!exempt && c->queued_bytes + m->len > q->bound && lag_bytes(c, m->len) > q->bound) {
        size_t queued = c->queued_bytes;
        c->killed = true;
        drop_queue(c);
        shut_down(c);
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add(&q->counters->slow_disconnects, 1);
        log_warn("client %llu (%s): send queue %zu bytes passed its bound of %zu; disconnecting slow client",
                 (unsigned long long)c->id, c->addr, queued + m->len, q->bound);
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
 * (PROTOCOL §1.1). Used for TLS connections, whose bytes only CivetWeb can encrypt.
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
 * One sendmsg for a whole batch instead of CivetWeb's two writes per message. The
 * frames are written under CivetWeb's connection lock, which its own ping, pong and
 * close frames also take, so frames never interleave. */

#define FRAMES_PER_CALL 128

struct framer {
    struct iovec iov[FRAMES_PER_CALL * 3];
    uint8_t hdr[FRAMES_PER_CALL][12]; /* WebSocket header (≤ 10) + piece header (2) */
    int niov, nframes;
    bool sent_any; /* once part of the batch is out, the rest must follow */
};

/* Sends everything in iov, waiting for room up to timeout_ms at a time. With
 * `decline`, a socket that takes nothing at all on the first try is left alone and
 * 1 is returned, so the sender can park the client instead of waiting on it. */
static int send_all(int fd, struct iovec *iov, int cnt, int timeout_ms, bool decline)
{
    while (cnt > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            if (decline) return 1;
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int r = poll(&p, 1, timeout_ms);
            if (r <= 0 || (p.revents & (POLLERR | POLLHUP))) return -1;
            continue;
        }
        decline = false;
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

/* Returns 0, -1 on failure, or 1 when nothing of the batch could be sent yet. */
static int framer_flush(struct framer *f, int fd, int timeout_ms)
{
    int rc = f->niov ? send_all(fd, f->iov, f->niov, timeout_ms, !f->sent_any) : 0;
    if (rc == 0) f->sent_any = true;
    f->niov = f->nframes = 0;
    return rc;
}

/* Adds one binary frame: optional 2-byte piece header, then body. */
static int framer_add(struct framer *f, int fd, int timeout_ms, const uint8_t *piece_hdr,
                      const uint8_t *body, size_t body_len)
{
    if (f->nframes == FRAMES_PER_CALL) {
        int rc = framer_flush(f, fd, timeout_ms);
        if (rc) return rc;
    }
    uint8_t *h = f->hdr[f->nframes++];
    size_t payload = body_len + (piece_hdr ? 2 : 0), hl;
    h[0] = 0x80 | MG_WEBSOCKET_OPCODE_BINARY;
    if (payload < 126) {
        h[1] = (uint8_t)payload;
        hl = 2;
    } else if (payload <= 0xFFFF) {
        h[1] = 126;
        codec_put16(h + 2, (uint16_t)payload);
        hl = 4;
    } else {
        h[1] = 127;
        codec_put64(h + 2, payload);
        hl = 10;
    }
    if (piece_hdr) {
        memcpy(h + hl, piece_hdr, 2);
        hl += 2;
    }
    f->iov[f->niov++] = (struct iovec){.iov_base = h, .iov_len = hl};
    if (body_len) f->iov[f->niov++] = (struct iovec){.iov_base = (void *)body, .iov_len = body_len};
    return 0;
}

/* Returns 0, -1 when the connection failed, or 1 when its socket had no room for
 * any of it (nothing was sent). */
static int write_batch_plain(struct outq *q, struct hub_client *c, struct message **batch, size_t n,
                             struct framer *f, bool may_decline)
{
    int rc = 0;
    f->niov = f->nframes = 0;
    f->sent_any = !may_decline;
    mg_lock_connection(c->conn);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct message *m = slot_msg(batch[i]);
        size_t pieces = codec_split_count(m->len, c->max_message);
        if (pieces <= 1) {
            rc = framer_add(f, c->fd, q->write_timeout_ms, NULL, m->data, m->len);
            continue;
        }
        for (size_t k = 0; k < pieces && rc == 0; k++) {
            struct codec_piece p;
            codec_split_piece(m->data, m->len, c->max_message, k, &p);
            rc = framer_add(f, c->fd, q->write_timeout_ms, p.hdr, p.body, p.body_len);
        }
    }
    if (rc == 0) rc = framer_flush(f, c->fd, q->write_timeout_ms);
    mg_unlock_connection(c->conn);
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
     * write cannot be taken back, so there we ask first. If parking fails, the write
     * blocks instead, bounded by the write timeout, rather than losing the client. */
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
    c->writing = true;
    pthread_mutex_unlock(&c->lock);

    int rc = 0;
    if (c->tls) {
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = write_message_tls(c, slot_msg(batch[i]), &w->scratch, &w->scratch_cap);
    } else {
        rc = write_batch_plain(q, c, batch, n, &w->framer, true);
    }
    if (rc == 1) { /* no room at all: back to the queue, and wait for room */
        pthread_mutex_lock(&c->lock);
        bool gone = c->closed || c->killed, parked = false;
        if (!gone && park(q, c)) {
            parked = unshift_batch(c, batch, n) == 0;
            if (!parked) { /* keep the batch and write it the slow way */
                epoll_ctl(q->epfd, EPOLL_CTL_DEL, c->fd, NULL);
                c->parked = false;
            }
        }
        if (parked) {
            c->writing = false;
            pthread_cond_broadcast(&c->idle);
            pthread_mutex_unlock(&c->lock);
            return;
        }
        pthread_mutex_unlock(&c->lock);
        rc = gone ? -1 : write_batch_plain(q, c, batch, n, &w->framer, false);
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

struct outq *outq_start(int threads, size_t bound, int write_timeout_ms, struct outq_counters *counters,
                        void (*tick)(void *arg), void *tick_arg)
{
    struct outq *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    q->bound = bound;
    q->write_timeout_ms = write_timeout_ms;
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
