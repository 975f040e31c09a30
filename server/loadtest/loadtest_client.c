/* loadtest_client: the Zwibbler protocol as one simulated client speaks it (INIT,
 * catch-up, APPEND relay, ACK/NACK, continuations), the per-client stream
 * accounting (length + CRC-32, gaps, duplicates) and the teacher's change timing. */
#include "loadtest_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "bytes.h"
#include "codec.h"
#include "loadtest_run.h"

/* APPEND v3 header: type, more, generation u32, offset u64. */
#define APPEND3_HDR 14
#define APPEND2_HDR 10

static void fail(struct lt_client *c, const char *why);

/* ---- stream accounting ---- */

/* Adds bytes that belong at document offset off to what the client has. */
static void take_bytes(struct lt_client *c, uint64_t off, const uint8_t *p, size_t n)
{
    struct lt_run *run = c->run;
    if (off > c->len) {
        /* A teacher whose own change is still unACKed may see later appends
         * first: the gap is its own change, committed but not yet confirmed.
         * If the NACK comes instead, the server skipped bytes (counted then). */
        if (c->role == LT_TEACHER && c->pending && !c->applied_early && c->pend_off == c->len &&
            off == c->len + run->opts->change_bytes) {
            c->crc = (uint32_t)crc32(c->crc, c->change, (uInt)run->opts->change_bytes);
            c->len += run->opts->change_bytes;
            c->applied_early = 1;
        } else {
            run->c.gaps++;
            lt_logv(run, "client %d (doc %d): gap: APPEND at %llu, had %llu bytes", c->index,
                    c->doc, (unsigned long long)off, (unsigned long long)c->len);
            c->hole = 1;
            c->len = off;
        }
    }
    if (off < c->len) {
        uint64_t skip = c->len - off < n ? c->len - off : n;
        run->c.duplicates++;
        run->c.duplicate_bytes += skip;
        p += skip;
        n -= (size_t)skip;
    }
    if (n) {
        c->crc = (uint32_t)crc32_z(c->crc, p, n);
        c->len += n;
    }
    if (c->role != LT_CHECKER && c->len > run->docs[c->doc].len) run->docs[c->doc].len = c->len;
}

/* Reads the timestamps of a live change and records screen-to-screen times. */
static void time_change(struct lt_client *c, const uint8_t *p, size_t n, uint64_t now)
{
    struct lt_run *run = c->run;
    size_t cb = run->opts->change_bytes;
    uint64_t rel_now = now - run->t0_us;
    if (n == 0 || n % cb) {
        run->c.untimed++;
        return;
    }
    for (size_t at = 0; at < n; at += cb) {
        uint64_t ms = be_get32(p + at);
        uint16_t us = be_get16(p + at + 4);
        uint32_t sender = be_get32(p + at + 6);
        uint64_t sent = ms * 1000 + us;
        /* Bytes from another run of the tester (or any other writer) carry no
         * time of ours: anything implausible is left out of the figures. */
        if (us >= 1000 || sender >= (uint32_t)run->opts->teachers || sent > rel_now ||
            rel_now - sent > 3600u * 1000000u ||
            (c->role == LT_TEACHER && sender == (uint32_t)c->index)) {
            run->c.untimed++;
            continue;
        }
        uint64_t d = rel_now - sent;
        lt_hist_add(&run->s2s, d);
        struct lt_window *w = &run->win;
        if (w->n == 0 || d < w->min_us) w->min_us = d;
        if (d > w->max_us) w->max_us = d;
        w->n++;
        w->sum_us += d;
    }
}

/* ---- teacher ---- */

static void send_change(struct lt_client *c)
{
    struct lt_run *run = c->run;
    size_t cb = run->opts->change_bytes;
    uint64_t rel = lt_now_us() - run->t0_us;
    be_put32(c->change, (uint32_t)(rel / 1000));
    be_put16(c->change + 4, (uint16_t)(rel % 1000));
    be_put32(c->change + 6, (uint32_t)c->index);
    size_t n = codec_encode_append(run->send_buf, 3, c->len, c->change, cb);
    c->pending = 1;
    c->applied_early = 0;
    c->wait_catchup = 0;
    c->pend_off = c->len;
    c->pend_sent_us = lt_now_us();
    run->pending_appends++;
    run->c.appends_sent++;
    if (lt_ws_send(&run->ws, &c->ws, run->send_buf, n)) fail(c, c->ws.err);
}

/* Arms the next change after a completed one, per --delay-ms. */
static void schedule_change(struct lt_client *c)
{
    struct lt_run *run = c->run;
    if (run->phase != LT_PHASE_RUN || c->stopped) return;
    double mean_us = run->opts->delay_ms * 1000.0;
    if (mean_us <= 0) {
        send_change(c);
        return;
    }
    /* Uniform over [0, 2 * mean]: averages the mean like the reference's random
     * pauses, without the long tail an exponential would add. */
    uint64_t due = lt_now_us() + 1 + (uint64_t)(lt_random(run) * 2 * mean_us);
    if (lt_timer_set(run, c, due)) fail(c, "out of memory");
}

static void end_pending(struct lt_client *c)
{
    if (c->pending) {
        c->pending = 0;
        c->run->pending_appends--;
    }
}

static void on_ack(struct lt_client *c, const uint8_t *m, size_t n)
{
    struct lt_run *run = c->run;
    if (n < CODEC_ACK_SIZE) {
        fail(c, "short ACK message");
        return;
    }
    uint16_t ack = be_get16(m + 2);
    uint64_t length = be_get64(m + 4);
    if (c->role != LT_TEACHER || !c->pending) {
        run->c.ack_mismatches++;
        lt_logv(run, "client %d: ACK %u with no APPEND outstanding", c->index, ack);
        return;
    }
    uint64_t now = lt_now_us();
    size_t cb = run->opts->change_bytes;
    end_pending(c);
    if (ack == 1) {
        run->c.acks++;
        lt_hist_add(&run->ack_rtt, now - c->pend_sent_us);
        if (!c->applied_early) {
            if (c->len != c->pend_off) {
                /* Someone else's bytes arrived at our offset, yet ours was
                 * accepted there: the stream and the document disagree. */
                run->c.ack_mismatches++;
                c->hole = 1;
            } else {
                take_bytes(c, c->pend_off, c->change, cb);
            }
        }
        if (length != c->pend_off + cb) {
            run->c.ack_mismatches++;
            lt_logv(run, "teacher %d: ACK length %llu, expected %llu", c->index,
                    (unsigned long long)length, (unsigned long long)(c->pend_off + cb));
        }
        if (length > run->docs[c->doc].len) run->docs[c->doc].len = length;
        schedule_change(c);
    } else if (ack == 0) {
        run->c.nacks++;
        lt_logv(run, "teacher %d: NACK at %llu, document has %llu", c->index,
                (unsigned long long)c->pend_off, (unsigned long long)length);
        if (c->applied_early) {
            run->c.ack_mismatches++; /* the gap we took for our change was a hole */
            c->hole = 1;
        }
        if (length > run->docs[c->doc].len) run->docs[c->doc].len = length;
        if (run->phase != LT_PHASE_RUN) return;
        /* Retry as soon as the catch-up APPENDs bring us to the reported length. */
        c->nack_len = length;
        if (c->len >= length)
            send_change(c);
        else
            c->wait_catchup = 1;
    } else {
        run->c.readonly_acks++;
        c->stopped = 1;
        lt_logv(run, "teacher %d: write refused (ACK %u): no more changes", c->index, ack);
    }
}

/* ---- incoming messages ---- */

static void caught_up(struct lt_client *c)
{
    struct lt_run *run = c->run;
    c->got_first = 1;
    c->state = LT_C_LIVE;
    run->connecting--;
    if (c->role == LT_CHECKER) {
        struct lt_doc *d = &run->docs[c->doc];
        d->check = c->hole ? -1 : 1;
        d->check_len = c->len;
        d->check_crc = c->crc;
        run->checks_open--;
        lt_client_close(c);
        return;
    }
    run->live++;
    run->c.connected++;
    lt_logv(run, "%s %d connected to %s at %llu bytes",
            c->role == LT_TEACHER ? "teacher" : "student", c->index, run->docs[c->doc].id,
            (unsigned long long)c->len);
    if (c->role == LT_TEACHER && run->phase == LT_PHASE_RUN) {
        /* The first change comes after a random pause too, so that teachers
         * connected together do not write together. */
        double mean_us = run->opts->delay_ms * 1000.0;
        if (lt_timer_set(run, c, lt_now_us() + 1 + (uint64_t)(lt_random(run) * 2 * mean_us)))
            fail(c, "out of memory");
    }
}

/* After any bytes arrived: a NACKed teacher may now be able to retry. */
static void after_bytes(struct lt_client *c)
{
    if (c->wait_catchup && c->len >= c->nack_len && c->run->phase == LT_PHASE_RUN &&
        c->state == LT_C_LIVE)
        send_change(c);
}

/* One complete logical message. */
static void handle_message(struct lt_client *c, const uint8_t *m, size_t n)
{
    struct lt_run *run = c->run;
    switch (m[0]) {
    case CODEC_APPEND_V2:
    case CODEC_APPEND_V3: {
        struct codec_append a;
        if (codec_decode_append(m, n, &a)) {
            fail(c, "malformed APPEND");
            return;
        }
        int first = !c->got_first;
        take_bytes(c, a.offset, a.data, a.data_len);
        if (first) {
            caught_up(c);
            return;
        }
        run->c.deliveries++;
        run->c.delivered_bytes += a.data_len;
        if (c->role != LT_CHECKER) time_change(c, a.data, a.data_len, lt_now_us());
        after_bytes(c);
        return;
    }
    case CODEC_ACK: on_ack(c, m, n); return;
    case CODEC_ERROR: {
        run->c.server_errors++;
        char why[160];
        unsigned code = n >= 4 ? be_get16(m + 2) : 0;
        int tl = n > 4 ? (int)(n - 4 > 100 ? 100 : n - 4) : 0;
        snprintf(why, sizeof why, "server ERROR %u: %.*s", code, tl,
                 n > 4 ? (const char *)m + 4 : "");
        fail(c, why);
        return;
    }
    default: return; /* KEY INFORMATION, BROADCAST, SET KEY ACK: not ours to check */
    }
}

/* The connection is still ours to read: not failed, closed or reset for a retry
 * by what the message just handled did. */
static int still_on(const struct lt_client *c)
{
    return c->state == LT_C_CONNECTING || c->state == LT_C_LIVE;
}

/* One WebSocket message: a whole logical message, the first piece of a split one, or a continuation
 * (docs/protocol.md, Framing and continuations). Split APPENDs are hashed piece by piece, so a 20
 * MB catch-up never needs 20 MB of memory. */
static int on_message(void *user, const uint8_t *m, size_t n)
{
    struct lt_client *c = user;
    struct lt_run *run = c->run;
    if (n < 2) {
        fail(c, "message shorter than 2 bytes");
        return -1;
    }
    if (m[0] == CODEC_CONTINUATION) {
        if (c->in_append) {
            take_bytes(c, c->app_off, m + 2, n - 2);
            c->app_off += n - 2;
            if (c->got_first) run->c.delivered_bytes += n - 2;
            if (m[1] == 0) {
                c->in_append = 0;
                if (!c->got_first) {
                    caught_up(c);
                } else {
                    run->c.deliveries++;
                    run->c.untimed++; /* split changes are not ours */
                    after_bytes(c);
                }
            }
        } else if (c->in_other) {
            const uint8_t *msg;
            size_t len;
            int r = codec_reasm_feed(c->reasm, m, n, &msg, &len);
            if (r < 0) {
                fail(c, codec_strerror(r));
            } else if (r == 1) {
                c->in_other = 0;
                handle_message(c, msg, len);
            }
        } else {
            fail(c, "continuation without a start");
        }
        return still_on(c) ? 0 : -1;
    }
    if (c->in_append || c->in_other) {
        fail(c, "new message before the previous one ended");
        return -1;
    }
    if (m[1] == 0) {
        handle_message(c, m, n);
    } else if (m[0] == CODEC_APPEND_V3 || m[0] == CODEC_APPEND_V2) {
        size_t hl = m[0] == CODEC_APPEND_V3 ? APPEND3_HDR : APPEND2_HDR;
        if (n < hl) {
            fail(c, "split APPEND shorter than its header");
            return -1;
        }
        uint64_t off = be_get64(m + hl - 8);
        c->in_append = 1;
        take_bytes(c, off, m + hl, n - hl);
        c->app_off = off + (n - hl);
        if (c->got_first) run->c.delivered_bytes += n - hl;
    } else {
        if (!c->reasm) {
            c->reasm = malloc(sizeof *c->reasm);
            if (!c->reasm) {
                fail(c, "out of memory");
                return -1;
            }
            codec_reasm_init(c->reasm, 64u << 20);
        }
        const uint8_t *msg;
        size_t len;
        int r = codec_reasm_feed(c->reasm, m, n, &msg, &len);
        if (r < 0)
            fail(c, codec_strerror(r));
        else if (r == 0)
            c->in_other = 1;
        else
            handle_message(c, msg, len);
    }
    return still_on(c) ? 0 : -1;
}

/* Upgrade done: INIT, protocol 3 (docs/protocol.md, Messages), from offset 0 so that the
 * client's bytes are the whole document, which the data check compares. */
static void on_open(void *user)
{
    struct lt_client *c = user;
    struct lt_run *run = c->run;
    const char *id = run->docs[c->doc].id;
    size_t idl = strlen(id);
    uint8_t *b = run->send_buf, *p = b;
    *p++ = CODEC_INIT;
    *p++ = 0;
    be_put16(p, 3), p += 2;
    be_put32(p, 0), p += 4; /* maxMessageSize: the server's default split */
    *p++ = 0;               /* creationMode: open or create */
    be_put32(p, 0), p += 4; /* generation */
    be_put64(p, 0), p += 8; /* offset */
    be_put32(p, (uint32_t)idl), p += 4;
    memcpy(p, id, idl), p += idl;
    if (lt_ws_send(&run->ws, &c->ws, b, (size_t)(p - b))) fail(c, c->ws.err);
}

static const struct lt_ws_cb callbacks = { on_open, on_message };

/* ---- lifecycle ---- */

static void release(struct lt_client *c)
{
    struct lt_run *run = c->run;
    lt_ws_close(&run->ws, &c->ws);
    if (c->reasm) {
        codec_reasm_free(c->reasm);
        free(c->reasm);
        c->reasm = NULL;
    }
    c->in_append = c->in_other = 0;
    c->due_us = 0;
    end_pending(c);
    c->wait_catchup = 0;
}

static void fail(struct lt_client *c, const char *why)
{
    struct lt_run *run = c->run;
    if (c->state == LT_C_FAILED || c->state == LT_C_CLOSED) return;
    const char *who = c->role == LT_TEACHER   ? "teacher"
                      : c->role == LT_STUDENT ? "student"
                                              : "checker";
    if (c->state == LT_C_LIVE) {
        run->live--;
        run->c.dropped++;
        lt_logv(run, "%s %d lost its connection: %s", who, c->index, why);
    } else {
        if (c->state == LT_C_CONNECTING) run->connecting--;
        if (c->role == LT_CHECKER) {
            run->checks_open--;
            if (++c->attempts < LT_CHECK_ATTEMPTS) {
                lt_logv(run, "checker %d: %s; trying again", c->index, why);
                release(c);
                c->state = LT_C_IDLE;
                c->hole = c->got_first = 0;
                c->len = 0;
                c->crc = 0;
                if (lt_timer_set(run, c, lt_now_us() + LT_CHECK_RETRY_US) == 0) return;
            }
            run->docs[c->doc].check = -1;
        } else {
            run->c.connect_errors++;
        }
        lt_logv(run, "%s %d could not connect: %s", who, c->index, why);
    }
    /* The first failures are shown even without --verbose: they explain a bad run. */
    if (!run->opts->verbose && run->failures_shown++ < 5)
        fprintf(stderr, "loadtest: %s %d (%s): %s\n", who, c->index, run->docs[c->doc].id, why);
    c->state = LT_C_FAILED;
    release(c);
}

int lt_client_setup(struct lt_client *c, struct lt_run *run, enum lt_role role, int index, int doc)
{
    memset(c, 0, sizeof *c);
    lt_ws_init(&c->ws);
    c->run = run;
    c->role = (uint8_t)role;
    c->index = index;
    c->doc = doc;
    c->state = LT_C_IDLE;
    if (role == LT_TEACHER) {
        size_t cb = run->opts->change_bytes;
        c->change = malloc(cb);
        if (!c->change) return -1;
        /* Filler after the 10 timed bytes: readable in a dump, varies by sender. */
        for (size_t i = LT_CHANGE_MIN; i < cb; i++)
            c->change[i] = (uint8_t)('a' + (index + i) % 26);
    }
    return 0;
}

void lt_client_start(struct lt_client *c)
{
    struct lt_run *run = c->run;
    lt_ws_init(&c->ws); /* a retried checker starts from a clean connection */
    c->state = LT_C_CONNECTING;
    run->connecting++;
    if (c->role == LT_CHECKER) run->checks_open++;
    if (lt_ws_connect(&run->ws, &c->ws, c)) fail(c, c->ws.err);
}

void lt_client_event(struct lt_client *c, uint32_t events)
{
    if (c->state != LT_C_CONNECTING && c->state != LT_C_LIVE) return;
    if (lt_ws_handle(&c->run->ws, &c->ws, events, &callbacks, c) && still_on(c))
        fail(c, c->ws.err[0] ? c->ws.err : "connection ended");
}

void lt_client_timer(struct lt_client *c)
{
    if (c->state == LT_C_IDLE) {
        lt_client_start(c);
    } else if (c->state == LT_C_LIVE && c->role == LT_TEACHER && !c->pending && !c->wait_catchup &&
               c->run->phase == LT_PHASE_RUN) {
        send_change(c);
    }
}

void lt_client_quiesce(struct lt_client *c)
{
    c->due_us = 0;
    c->wait_catchup = 0;
}

void lt_client_close(struct lt_client *c)
{
    if (c->state == LT_C_CONNECTING) c->run->connecting--;
    if (c->state == LT_C_LIVE && c->role != LT_CHECKER) c->run->live--;
    if (c->state == LT_C_CONNECTING || c->state == LT_C_LIVE) c->state = LT_C_CLOSED;
    release(c);
    free(c->change);
    c->change = NULL;
}
