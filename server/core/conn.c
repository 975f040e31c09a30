/* conn: owns the event loops, every upgraded connection's socket and TLS session
 * (client.h, struct client_io), the frame-level rules and timeouts, and the writing of
 * send queues. Each connection belongs to one loop, and only that loop's thread reads,
 * writes or closes it; other threads reach it through the loop's ready list. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "mono.h"
#include "codec.h"
#include "framer.h"
#include "message.h"
#include "wsdeflate.h"
#include "wsframe.h"

#define READ_BUF (64u << 10)
#define READS_PER_EVENT 16 /* then other connections get a turn */
#define BATCH_MESSAGES 64  /* one take from a send queue */
#define BATCH_BYTES (256u << 10)
#define BATCHES_PER_TURN 4
#define TLS_SCRATCH (64u << 10) /* bytes handed to one SSL_write */
#define SWEEP_MS 250
#define CLOSE_WAIT_MS 2000 /* after our close frame, for the peer's end */
#define PEER_CLOSE_MS 5000 /* after the peer's close frame, for our queue to drain */
#define MAX_UNANSWERED_PINGS 3
/* Below this a message is not worth compressing (wsdeflate.h has the measurements). */
#define MIN_COMPRESS WS_DEFLATE_MIN_SIZE

struct conn_loop {
    struct conn_layer *L;
    int epfd, evfd;
    pthread_t thread;
    bool started;

    pthread_mutex_t lock;                       /* guards the lists below and `stopping` */
    struct hub_client *ready_head, *ready_tail; /* each holds a reference */
    struct hub_client *adopt_head, *adopt_tail;
    bool stopping;

    /* ---- the loop thread's own ---- */
    struct hub_client *all;   /* every open connection, holding the layer's reference */
    struct hub_client *again; /* TLS connections with decrypted bytes still to read */
    struct hub_client *dead;  /* closed this round; released after it */
    uint8_t *rbuf;
    uint8_t *scratch;
    struct framer framer;
    struct ws_deflate_ctx *z;
    int64_t now, last_sweep;
};

struct conn_layer {
    struct conn_config cfg;
    struct conn_handlers h;
    struct outq outq;
    struct outq_counters counters;
    struct conn_loop *loops;
    int nloops;
    atomic_uint next_loop;
    atomic_uint_fast64_t count;
};

static void flush(struct conn_loop *lp, struct hub_client *c);

/* ---- the ready list: how other threads hand a connection to its loop ---- */

static void loop_signal(struct conn_loop *lp)
{
    uint64_t one = 1;
    while (write(lp->evfd, &one, sizeof one) < 0 && errno == EINTR) {}
}

/* Takes over one reference to c. */
static void loop_post(struct conn_loop *lp, struct hub_client *c, bool resume)
{
    pthread_mutex_lock(&lp->lock);
    if (lp->stopping) {
        pthread_mutex_unlock(&lp->lock);
        client_unref(c);
        return;
    }
    if (resume) c->io.ready_resume = true;
    if (c->io.in_ready) { /* already waiting: one visit does both */
        pthread_mutex_unlock(&lp->lock);
        client_unref(c);
        return;
    }
    c->io.in_ready = true;
    c->io.ready_next = NULL;
    bool was_empty = !lp->ready_head;
    if (lp->ready_tail)
        lp->ready_tail->io.ready_next = c;
    else
        lp->ready_head = c;
    lp->ready_tail = c;
    pthread_mutex_unlock(&lp->lock);
    /* A loop that has a non-empty list is awake or about to look at it. */
    if (was_empty) loop_signal(lp);
}

static void conn_wake(void *arg, struct hub_client *c)
{
    (void)arg;
    loop_post(c->io.loop, c, false);
}

void conn_resume(struct conn_layer *L, struct hub_client *c)
{
    (void)L;
    loop_post(c->io.loop, client_ref(c), true);
}

/* ---- interest and closing ---- */

static void set_interest(struct conn_loop *lp, struct hub_client *c)
{
    uint32_t ev = (c->io.paused ? 0 : EPOLLIN) | (c->io.want_out ? EPOLLOUT : 0);
    if (ev == c->io.events) return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    if (epoll_ctl(lp->epfd, EPOLL_CTL_MOD, c->io.fd, &e) == 0) c->io.events = ev;
}

/* Ends the connection now: socket closed, queue dropped, the session told. */
static void close_now(struct conn_loop *lp, struct hub_client *c, const char *why)
{
    if (c->io.state == CONN_CLOSED) return;
    if (why) client_log(c, LOG_INFO, "connection closed: %s", why);
    epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->io.fd, NULL);
    if (c->io.ssl) SSL_free(c->io.ssl);
    c->io.ssl = NULL;
    close(c->io.fd);
    c->io.state = CONN_CLOSED;
    if (c->io.all_prev)
        c->io.all_prev->io.all_next = c->io.all_next;
    else
        lp->all = c->io.all_next;
    if (c->io.all_next) c->io.all_next->io.all_prev = c->io.all_prev;
    ws_reader_free(&c->io.reader);
    free(c->io.tls_retry);
    c->io.tls_retry = NULL;
    outq_closed(c);
    atomic_fetch_sub(&lp->L->count, 1);
    lp->L->h.closed(lp->L->h.arg, c);
    c->io.all_next = lp->dead; /* the layer's reference goes after this round */
    lp->dead = c;
}

/* Writes a control frame outside the queue (the queue is done): best effort, since
 * the connection is ending either way. */
static void write_direct(struct hub_client *c, const uint8_t *p, size_t n)
{
    if (c->io.ssl) {
        ERR_clear_error();
        SSL_write(c->io.ssl, p, (int)n);
    } else {
        while (send(c->io.fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
    }
}

/* Sends our close frame (code 1005: one without a status) unless a frame is half
 * written, then waits a little for the peer to end the TCP connection. */
static void start_closing(struct conn_loop *lp, struct hub_client *c, uint16_t code)
{
    if (code && !c->io.partial && !c->io.tls_retry) {
        uint8_t f[127];
        write_direct(c, f, ws_close_frame(f, code, NULL));
    }
    if (c->io.ssl) {
        ERR_clear_error();
        SSL_shutdown(c->io.ssl);
    }
    shutdown(c->io.fd, SHUT_WR);
    c->io.state = CONN_CLOSING;
    c->io.close_deadline_ms = lp->now + CLOSE_WAIT_MS;
    c->io.want_out = false;
    c->io.paused = false;
    set_interest(lp, c);
}

/* ---- writing ---- */

/* Sends what the socket takes now. Returns the bytes sent, or -1 on failure;
 * *blocked tells whether the socket filled up. */
static ssize_t send_plain(int fd, struct iovec *iov, int cnt, bool *blocked)
{
    size_t sent = 0;
    while (cnt > 0) {
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)cnt };
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *blocked = true;
                return (ssize_t)sent;
            }
            return -1;
        }
        sent += (size_t)w;
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
    return (ssize_t)sent;
}

/* One SSL_write loop over p[0..n). A write that OpenSSL must be given again (WANT_*)
 * keeps its bytes in c->io.tls_retry, so the queue may move on: they count as sent.
 * Returns the bytes consumed, or -1 on failure. */
static ssize_t send_tls(struct hub_client *c, const uint8_t *p, size_t n, bool *blocked)
{
    size_t done = 0;
    while (done < n) {
        ERR_clear_error();
        int w = SSL_write(c->io.ssl, p + done, (int)(n - done));
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        int e = SSL_get_error(c->io.ssl, w);
        if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) return -1;
        c->io.tls_retry = malloc(n - done);
        if (!c->io.tls_retry) return -1;
        memcpy(c->io.tls_retry, p + done, n - done);
        c->io.tls_retry_len = n - done;
        *blocked = true;
        return (ssize_t)n;
    }
    return (ssize_t)done;
}

/* Finishes a TLS write OpenSSL asked for again. Returns 0 when done, 1 when still
 * blocked, -1 on failure. */
static int finish_tls_retry(struct hub_client *c)
{
    uint8_t *p = c->io.tls_retry;
    size_t n = c->io.tls_retry_len;
    c->io.tls_retry = NULL;
    bool blocked = false;
    ssize_t w = send_tls(c, p, n, &blocked);
    free(p);
    if (w < 0) return -1;
    return blocked ? 1 : 0;
}

/* Writes the framer's iovecs. */
static ssize_t send_frames(struct conn_loop *lp, struct hub_client *c, bool *blocked)
{
    struct framer *f = &lp->framer;
    if (!c->io.ssl) return send_plain(c->io.fd, f->iov, f->niov, blocked);
    size_t total = 0;
    int k = 0;
    while (k < f->niov && !*blocked) { /* OpenSSL takes one buffer: gather a scratchful */
        size_t n = 0;
        while (k < f->niov && n + f->iov[k].iov_len <= TLS_SCRATCH) {
            memcpy(lp->scratch + n, f->iov[k].iov_base, f->iov[k].iov_len);
            n += f->iov[k++].iov_len;
        }
        const uint8_t *p = lp->scratch;
        if (n == 0) { /* one iovec larger than the scratch buffer: straight from it */
            p = f->iov[k].iov_base;
            n = f->iov[k++].iov_len;
        }
        ssize_t w = send_tls(c, p, n, blocked);
        if (w < 0) return -1;
        total += (size_t)w;
        if ((size_t)w < n) break;
    }
    return (ssize_t)total;
}

/* Writes batch b. Returns 0 when all of it went, 1 when the socket filled up (the rest
 * is back in the queue), -1 on failure. */
static int write_batch(struct conn_loop *lp, struct hub_client *c, struct outq_batch *b)
{
    const struct outq *q = &lp->L->outq;
    struct framer_client fc = { .max_message =
                                    atomic_load_explicit(&c->max_message, memory_order_relaxed),
                                .z = c->io.deflate ? lp->z : NULL,
                                .min_compress = MIN_COMPRESS };
    size_t i = 0, off = b->sent_off;
    bool blocked = false;
    int rc = 0;
    while (i < b->n && !blocked) {
        if (framer_fill(&lp->framer, b->msgs, i, b->n, off, &fc)) {
            rc = -1;
            break;
        }
        ssize_t w = send_frames(lp, c, &blocked);
        if (w < 0) {
            rc = -1;
            break;
        }
        framer_advance(&lp->framer, (size_t)w, &i, &off);
    }
    if (i > b->n) i = b->n;
    outq_release(q, b, i);
    if (rc < 0) {
        for (size_t k = i; k < b->n; k++) message_unref(outq_slot_msg(b->msgs[k]));
        return -1;
    }
    if (i < b->n || blocked) {
        c->io.partial = off != 0;
        if (outq_give_back(q, c, b, i, off)) return -1;
        return 1;
    }
    c->io.partial = false;
    return 0;
}

/* Writes what c has queued, until its socket is full or a few batches have gone. */
static void flush(struct conn_loop *lp, struct hub_client *c)
{
    if (c->io.state != CONN_OPEN) return;
    if (c->io.want_out) { /* parked: the socket's room will call us, unless it is over */
        if (outq_state(c) == OUTQ_DEAD) close_now(lp, c, NULL);
        return;
    }
    if (c->io.tls_retry) {
        int rc = finish_tls_retry(c);
        if (rc < 0) {
            close_now(lp, c, "TLS write failed");
            return;
        }
        if (rc > 0) {
            c->io.want_out = true;
            set_interest(lp, c);
            return;
        }
    }
    struct message *slots[BATCH_MESSAGES];
    for (int turn = 0; turn < BATCHES_PER_TURN; turn++) {
        struct outq_batch b;
        outq_take(c, slots, BATCH_MESSAGES, BATCH_BYTES, &b);
        if (b.state == OUTQ_DEAD) {
            outq_release(&lp->L->outq, &b, 0);
            if (b.close_code)
                start_closing(lp, c, b.close_code);
            else
                close_now(lp, c, NULL);
            return;
        }
        if (b.n == 0) {
            if (b.state == OUTQ_DRAINING) start_closing(lp, c, b.close_code);
            return;
        }
        int rc = write_batch(lp, c, &b);
        if (rc < 0) {
            close_now(lp, c, "write failed");
            return;
        }
        if (rc > 0) {
            c->io.want_out = true;
            set_interest(lp, c);
            return;
        }
        if (b.drained && b.state == OUTQ_OPEN) return; /* a push wakes us again */
    }
    loop_post(lp, client_ref(c), false); /* more queued: after the others */
}

/* ---- reading ---- */

static void push_control(struct conn_loop *lp, struct hub_client *c, enum ws_opcode op,
                         const uint8_t *payload, size_t len)
{
    struct message *m = message_new(10 + len);
    if (!m) return;
    size_t hl = ws_frame_header(m->data, op, false, len);
    if (len) memcpy(m->data + hl, payload, len);
    m->len = hl + len;
    m->raw_frame = true;
    outq_push(&lp->L->outq, c, m, true);
    message_unref(m);
}

/* A message over MaxMessageBytes: the client is told why before the 1009 close, so
 * an application does not just see a disconnect and resend the same change. `size`
 * is what was announced (0: unknown, e.g. while inflating). */
static void refuse_too_big(struct conn_loop *lp, struct hub_client *c, const char *what,
                           uint64_t size)
{
    size_t limit = lp->L->cfg.max_message;
    if (size)
        client_log(c, LOG_WARN, "%s: %llu bytes, over the limit of %zu bytes; closing", what,
                   (unsigned long long)size, limit);
    else
        client_log(c, LOG_WARN, "%s is over the limit of %zu bytes; closing", what, limit);
    char text[128];
    snprintf(text, sizeof text, "message larger than the server's limit of %zu bytes", limit);
    struct message *m = msg_error(CODEC_ERR_UNSPECIFIED, text);
    if (m) outq_push(&lp->L->outq, c, m, true);
    message_unref(m);
    outq_close_after_drain(&lp->L->outq, c, WS_CLOSE_TOO_BIG);
}

static void deliver(struct conn_loop *lp, struct hub_client *c, struct ws_event *ev)
{
    const struct conn_layer *L = lp->L;
    uint8_t *inflated = NULL;
    const uint8_t *data = ev->data;
    size_t len = ev->len;
    if (ev->compressed) {
        int rc = ws_inflate_message(lp->z, ev->data, ev->len, L->cfg.max_message, &inflated, &len);
        if (rc == WS_INFLATE_TOO_BIG) {
            refuse_too_big(lp, c, "inflated message", 0);
            return;
        }
        if (rc) {
            outq_kill(&L->outq, c,
                      rc == WS_INFLATE_CORRUPT ? WS_CLOSE_BAD_DATA : WS_CLOSE_SERVER_ERROR,
                      rc == WS_INFLATE_CORRUPT ? "corrupt compressed message"
                                               : "out of memory inflating");
            return;
        }
        data = inflated;
    }
    if (L->h.message(L->h.arg, c, data, len)) {
        c->io.paused = true;
        set_interest(lp, c);
    }
    free(inflated);
}

static void on_event(struct conn_loop *lp, struct hub_client *c, struct ws_event *ev)
{
    const struct outq *q = &lp->L->outq;
    switch (ev->kind) {
    case WS_EV_MESSAGE: deliver(lp, c, ev); break;
    case WS_EV_PING: push_control(lp, c, WS_OP_PONG, ev->data, ev->len); break;
    case WS_EV_PONG: break;
    case WS_EV_CLOSE:
        /* Echoed once what is queued has gone; the peer waits for it. */
        outq_close_after_drain(q, c, ev->code);
        c->io.close_deadline_ms = lp->now + PEER_CLOSE_MS;
        break;
    case WS_EV_ERROR:
        if (ev->code == WS_CLOSE_TOO_BIG) {
            refuse_too_big(lp, c, ev->why, ev->size);
            break;
        }
        client_log(c, LOG_WARN, "WebSocket protocol error: %s; closing with %u", ev->why, ev->code);
        outq_kill(q, c, ev->code, ev->why);
        break;
    case WS_EV_NONE: break;
    }
}

static void parse(struct conn_loop *lp, struct hub_client *c, uint8_t *buf, size_t n)
{
    size_t off = 0;
    while (off < n && c->io.state == CONN_OPEN) {
        struct ws_event ev;
        size_t used = ws_reader_feed(&c->io.reader, buf + off, n - off, &ev);
        off += used;
        if (ev.kind == WS_EV_NONE) break; /* all consumed, or the reader is done */
        on_event(lp, c, &ev);
    }
    if (ws_reader_idle(&c->io.reader))
        c->io.frame_start_ms = 0;
    else if (!c->io.frame_start_ms)
        c->io.frame_start_ms = lp->now;
}

/* Reads once. Returns the bytes read, 0 when there is nothing now, -1 at the end. */
static ssize_t read_some(struct hub_client *c, uint8_t *buf, size_t cap)
{
    if (c->io.ssl) {
        ERR_clear_error();
        int r = SSL_read(c->io.ssl, buf, (int)cap);
        if (r > 0) return r;
        int e = SSL_get_error(c->io.ssl, r);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    for (;;) {
        ssize_t r = recv(c->io.fd, buf, cap, 0);
        if (r > 0) return r;
        if (r == 0) return -1;
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

static void on_readable(struct conn_loop *lp, struct hub_client *c)
{
    for (int i = 0; i < READS_PER_EVENT; i++) {
        if (c->io.state == CONN_CLOSED || c->io.paused) return;
        ssize_t n = read_some(c, lp->rbuf, READ_BUF);
        if (n == 0) return;
        if (n < 0) {
            close_now(lp, c, c->io.state == CONN_CLOSING ? NULL : "the peer went away");
            return;
        }
        c->io.last_rx_ms = lp->now;
        c->io.unanswered_pings = 0;
        if (c->io.state == CONN_OPEN) parse(lp, c, lp->rbuf, (size_t)n);
        if (!c->io.ssl && (size_t)n < READ_BUF) return; /* the socket is empty */
    }
    /* A TLS session may hold decrypted bytes no epoll event will announce. */
    if (c->io.ssl && c->io.state != CONN_CLOSED && SSL_pending(c->io.ssl) > 0 && !c->io.in_again) {
        c->io.in_again = true;
        c->io.again_next = lp->again;
        lp->again = client_ref(c);
    }
}

/* ---- timers ---- */

static void sweep(struct conn_loop *lp)
{
    const struct conn_layer *L = lp->L;
    const struct outq *q = &L->outq;
    int64_t now = lp->now;
    for (struct hub_client *c = lp->all, *next; c; c = next) {
        next = c->io.all_next;
        if (c->io.close_deadline_ms && now >= c->io.close_deadline_ms) {
            close_now(lp, c,
                      c->io.state == CONN_CLOSING ? NULL : "the close handshake did not finish");
            continue;
        }
        if (c->io.state != CONN_OPEN) continue;
        if (L->cfg.init_timeout_ms > 0 && now - c->io.connected_ms >= L->cfg.init_timeout_ms &&
            !L->h.joined(L->h.arg, c)) {
            outq_kill(q, c, WS_CLOSE_POLICY, "no INIT within the time allowed");
            continue;
        }
        if (c->io.frame_start_ms && L->cfg.read_timeout_ms > 0) {
            /* Slow but honest links get a large frame through: 1 s more per 16 KiB. */
            uint64_t expected, got;
            ws_reader_progress(&c->io.reader, &expected, &got);
            if (now - c->io.frame_start_ms >= L->cfg.read_timeout_ms + (int64_t)(expected / 16)) {
                char why[128];
                if (expected)
                    snprintf(why, sizeof why,
                             "frame of %llu bytes not complete in time (%llu received)",
                             (unsigned long long)expected, (unsigned long long)got);
                else
                    snprintf(why, sizeof why, "frame header not complete in time");
                outq_kill(q, c, WS_CLOSE_POLICY, why);
                continue;
            }
        }
        if (L->cfg.ping_interval_ms > 0 && now - c->io.last_rx_ms >= L->cfg.ping_interval_ms &&
            now - c->io.last_ping_ms >= L->cfg.ping_interval_ms) {
            if (c->io.unanswered_pings >= MAX_UNANSWERED_PINGS) {
                close_now(lp, c, "no answer to pings");
                continue;
            }
            c->io.unanswered_pings++;
            c->io.last_ping_ms = now;
            push_control(lp, c, WS_OP_PING, NULL, 0);
        }
    }
}

/* ---- the loop ---- */

static void open_adopted(struct conn_loop *lp, struct hub_client *c)
{
    const struct conn_layer *L = lp->L;
    c->io.connected_ms = c->io.last_rx_ms = c->io.last_ping_ms = lp->now;
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
    c->io.events = EPOLLIN;
    c->io.all_prev = NULL;
    c->io.all_next = lp->all;
    if (lp->all) lp->all->io.all_prev = c;
    lp->all = c;
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, c->io.fd, &e)) {
        L->h.opened(L->h.arg, c);
        close_now(lp, c, "cannot watch the socket");
        return;
    }
    L->h.opened(L->h.arg, c);
    if (c->io.early) { /* what CivetWeb read past the upgrade request */
        parse(lp, c, c->io.early, c->io.early_len);
        free(c->io.early);
        c->io.early = NULL;
    }
    on_readable(lp, c); /* TLS may already hold records */
}

static void take_lists(struct conn_loop *lp, struct hub_client **ready, struct hub_client **adopt)
{
    pthread_mutex_lock(&lp->lock);
    *ready = lp->ready_head;
    *adopt = lp->adopt_head;
    lp->ready_head = lp->ready_tail = NULL;
    lp->adopt_head = lp->adopt_tail = NULL;
    for (struct hub_client *c = *ready; c; c = c->io.ready_next) {
        c->io.in_ready = false;
        c->io.resume_now = c->io.ready_resume;
        c->io.ready_resume = false;
    }
    pthread_mutex_unlock(&lp->lock);
}

static void run_lists(struct conn_loop *lp)
{
    struct hub_client *ready, *adopt;
    take_lists(lp, &ready, &adopt);
    for (struct hub_client *c = adopt, *next; c; c = next) {
        next = c->io.ready_next;
        open_adopted(lp, c);
    }
    for (struct hub_client *c = ready, *next; c; c = next) {
        next = c->io.ready_next;
        if (c->io.resume_now && c->io.state == CONN_OPEN) {
            c->io.paused = false;
            set_interest(lp, c);
            on_readable(lp, c);
        }
        flush(lp, c);
        client_unref(c);
    }
    struct hub_client *again = lp->again;
    lp->again = NULL;
    for (struct hub_client *c = again, *next; c; c = next) {
        next = c->io.again_next;
        c->io.in_again = false;
        on_readable(lp, c);
        client_unref(c);
    }
}

static void release_dead(struct conn_loop *lp)
{
    for (struct hub_client *c = lp->dead, *next; c; c = next) {
        next = c->io.all_next;
        client_unref(c);
    }
    lp->dead = NULL;
}

static void shut_all(struct conn_loop *lp)
{
    while (lp->all) {
        struct hub_client *c = lp->all;
        if (c->io.state == CONN_OPEN && !c->io.partial && !c->io.tls_retry) {
            uint8_t f[127];
            write_direct(c, f, ws_close_frame(f, WS_CLOSE_GOING_AWAY, "server shutting down"));
        }
        close_now(lp, c, NULL);
    }
    struct hub_client *ready, *adopt;
    pthread_mutex_lock(&lp->lock);
    lp->stopping = true;
    pthread_mutex_unlock(&lp->lock);
    take_lists(lp, &ready, &adopt);
    for (struct hub_client *c = adopt, *next; c; c = next) {
        next = c->io.ready_next;
        lp->L->h.opened(lp->L->h.arg, c);
        c->io.all_prev = c->io.all_next = NULL;
        lp->all = c;
        close_now(lp, c, NULL);
        free(c->io.early);
    }
    for (struct hub_client *c = ready, *next; c; c = next) {
        next = c->io.ready_next;
        client_unref(c);
    }
    for (struct hub_client *c = lp->again, *next; c; c = next) {
        next = c->io.again_next;
        client_unref(c);
    }
    lp->again = NULL;
    release_dead(lp);
}

static void *loop_main(void *arg)
{
    struct conn_loop *lp = arg;
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(lp->epfd, events, 256, lp->again ? 0 : SWEEP_MS);
        lp->now = mono_ms();
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == lp) { /* the ready list */
                uint64_t v;
                while (read(lp->evfd, &v, sizeof v) < 0 && errno == EINTR) {}
                continue;
            }
            struct hub_client *c = events[i].data.ptr;
            if (c->io.state == CONN_CLOSED) continue;
            uint32_t e = events[i].events;
            if (e & EPOLLOUT && c->io.want_out) {
                c->io.want_out = false;
                set_interest(lp, c);
                flush(lp, c);
            }
            if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(lp, c);
        }
        pthread_mutex_lock(&lp->lock);
        bool stop = lp->stopping;
        pthread_mutex_unlock(&lp->lock);
        if (stop) break;
        run_lists(lp);
        if (lp->now - lp->last_sweep >= SWEEP_MS) {
            lp->last_sweep = lp->now;
            sweep(lp);
        }
        release_dead(lp);
    }
    shut_all(lp);
    return NULL;
}

/* ---- the layer ---- */

int conn_adopt(struct conn_layer *L, const struct conn_adoption *a)
{
    struct hub_client *c = client_new(a->addr, a->ssl != NULL);
    uint8_t *early = a->early_len ? malloc(a->early_len) : NULL;
    if (!c || (a->early_len && !early)) goto fail;
    if (early) memcpy(early, a->early, a->early_len);
    int fl = fcntl(a->fd, F_GETFL);
    if (fl < 0 || fcntl(a->fd, F_SETFL, fl | O_NONBLOCK) < 0) goto fail;
    if (a->ssl)
        SSL_set_mode(a->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    struct conn_loop *lp = &L->loops[atomic_fetch_add(&L->next_loop, 1) % (unsigned)L->nloops];
    c->io.loop = lp;
    c->io.fd = a->fd;
    c->io.ssl = a->ssl;
    c->io.deflate = a->deflate;
    c->io.early = early;
    c->io.early_len = a->early_len;
    struct ws_reader_limits lim = { .max_message = L->cfg.max_message, .deflate = a->deflate };
    ws_reader_init(&c->io.reader, &lim);
    pthread_mutex_lock(&lp->lock);
    if (lp->stopping) {
        pthread_mutex_unlock(&lp->lock);
        c->io.ssl = NULL;
        c->io.early = NULL;
        ws_reader_free(&c->io.reader);
        goto fail;
    }
    atomic_fetch_add(&L->count, 1);
    c->io.ready_next = NULL;
    bool was_empty = !lp->adopt_head;
    if (lp->adopt_tail)
        lp->adopt_tail->io.ready_next = c;
    else
        lp->adopt_head = c;
    lp->adopt_tail = c;
    pthread_mutex_unlock(&lp->lock);
    if (was_empty) loop_signal(lp);
    return 0;
fail:
    free(early);
    client_unref(c);
    if (a->ssl) SSL_free(a->ssl);
    close(a->fd);
    return -1;
}

uint64_t conn_count(const struct conn_layer *L) { return atomic_load(&L->count); }

const struct outq *conn_layer_outq(const struct conn_layer *L) { return &L->outq; }

static int loop_init(struct conn_loop *lp, struct conn_layer *L)
{
    lp->L = L;
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&lp->lock, NULL);
    lp->rbuf = malloc(READ_BUF);
    lp->scratch = malloc(TLS_SCRATCH);
    lp->z = ws_deflate_ctx_new();
    lp->now = lp->last_sweep = mono_ms();
    if (lp->epfd < 0 || lp->evfd < 0 || !lp->rbuf || !lp->scratch || !lp->z) return -1;
    struct epoll_event e = { .events = EPOLLIN, .data.ptr = lp };
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &e)) return -1;
    if (pthread_create(&lp->thread, NULL, loop_main, lp)) return -1;
    lp->started = true;
    return 0;
}

static void loop_free(struct conn_loop *lp)
{
    if (lp->epfd >= 0) close(lp->epfd);
    if (lp->evfd >= 0) close(lp->evfd);
    free(lp->rbuf);
    free(lp->scratch);
    ws_deflate_ctx_free(lp->z);
    pthread_mutex_destroy(&lp->lock);
}

struct conn_layer *conn_layer_start(const struct conn_config *cfg, const struct conn_handlers *h,
                                    char *err, size_t err_len)
{
    struct conn_layer *L = calloc(1, sizeof *L);
    if (!L) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    L->cfg = *cfg;
    L->h = *h;
    L->outq = (struct outq){
        .bound = cfg->send_queue_bytes, .counters = &L->counters, .wake = conn_wake, .wake_arg = L
    };
    L->nloops = cfg->loops > 0 ? cfg->loops : 1;
    L->loops = calloc((size_t)L->nloops, sizeof *L->loops);
    if (!L->loops) {
        free(L);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    for (int i = 0; i < L->nloops; i++) L->loops[i].epfd = L->loops[i].evfd = -1;
    for (int i = 0; i < L->nloops; i++)
        if (loop_init(&L->loops[i], L)) {
            snprintf(err, err_len, "cannot start the connection loops: %s", strerror(errno));
            conn_layer_stop(L);
            conn_layer_free(L);
            return NULL;
        }
    return L;
}

void conn_layer_stop(struct conn_layer *L)
{
    if (!L) return;
    for (int i = 0; i < L->nloops; i++) {
        struct conn_loop *lp = &L->loops[i];
        pthread_mutex_lock(&lp->lock);
        lp->stopping = true;
        pthread_mutex_unlock(&lp->lock);
        if (lp->evfd >= 0) loop_signal(lp);
    }
    for (int i = 0; i < L->nloops; i++)
        if (L->loops[i].started) {
            pthread_join(L->loops[i].thread, NULL);
            L->loops[i].started = false;
        }
}

void conn_layer_free(struct conn_layer *L)
{
    if (!L) return;
    for (int i = 0; i < L->nloops; i++) loop_free(&L->loops[i]);
    free(L->loops);
    free(L);
}
