/* fuzz_wsframe: libFuzzer target for protocol/wsframe.c — arbitrary client bytes into
 * ws_reader_feed, whole and in random pieces, with permessage-deflate on or off and
 * a small message limit. Checks the reader's contract on every call, and that the
 * pieces give exactly the events the whole stream gives.
 *
 * Input layout: byte 0 bit 0 turns deflate on; byte 1 sets max_message (times 4, so
 * 0-1020: large enough for fragments, small enough to hit 1009); byte 2 seeds the
 * piece sizes; the rest is the stream. Each piece is an exactly-sized heap copy. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

/* What is compared between runs: an event without its pointers. */
struct seen {
    enum ws_event_kind kind;
    bool text, compressed;
    uint16_t code;
    size_t len;
    uint64_t hash; /* FNV-1a of the data */
};

struct trace {
    struct seen *ev;
    size_t n, cap;
};

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* The rules every event obeys, whatever the input. */
static void check_event(const struct ws_event *ev, const struct ws_reader *r,
                        const struct ws_reader_limits *lim, const uint8_t *piece, size_t plen)
{
    switch (ev->kind) {
    case WS_EV_MESSAGE:
        CHECK(ev->len <= lim->max_message);
        CHECK(!ev->compressed || lim->deflate);
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
        CHECK(ev->len <= WS_MAX_CONTROL_PAYLOAD);
        CHECK(!ev->text && !ev->compressed);
        break;
    case WS_EV_CLOSE:
        CHECK(ev->len <= WS_MAX_CONTROL_PAYLOAD - 2);
        CHECK(ev->code == WS_CLOSE_NO_STATUS || ws_close_code_valid(ev->code));
        CHECK(ev->code != WS_CLOSE_NO_STATUS || ev->len == 0);
        break;
    case WS_EV_ERROR:
        CHECK(ev->code == WS_CLOSE_PROTOCOL || ev->code == WS_CLOSE_TOO_BIG ||
              ev->code == WS_CLOSE_SERVER_ERROR);
        CHECK(ev->why && ev->why[0]);
        CHECK(r->buf == NULL);
        return;
    default: abort();
    }
    /* Data lies inside the piece given or the reader's own buffer. */
    CHECK(ev->data != NULL);
    bool in_piece = ev->data >= piece && ev->data + ev->len <= piece + plen;
    bool in_own = r->buf && ev->data >= r->buf && ev->data + ev->len <= r->buf + r->cap;
    CHECK(in_piece || in_own);
    if (ev->len) {
        volatile uint8_t sink = ev->data[0] ^ ev->data[ev->len - 1];
        (void)sink;
    }
}

static void record(struct trace *t, const struct ws_event *ev)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->ev = realloc(t->ev, t->cap * sizeof *t->ev);
        CHECK(t->ev);
    }
    struct seen *s = &t->ev[t->n++];
    s->kind = ev->kind;
    s->text = ev->text;
    s->compressed = ev->compressed;
    s->code = ev->code;
    s->len = ev->kind == WS_EV_ERROR ? 0 : ev->len;
    s->hash = ev->kind == WS_EV_ERROR ? 0 : fnv(ev->data, ev->len);
}

/* Feeds d[0..n) in pieces (sizes from *seed; 0 means all at once) and records events
 * up to the first CLOSE or ERROR. */
static void run(const struct ws_reader_limits *lim, const uint8_t *d, size_t n, uint32_t seed,
                struct trace *t)
{
    struct ws_reader r;
    size_t off = 0;
    bool ended = false;

    ws_reader_init(&r, lim);
    while (off < n && !ended) {
        size_t c = n - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t want = (seed >> 16) % 17 == 0 ? 1 + (seed >> 8) % 300 : 1 + (seed >> 16) % 9;
            if (want < c) c = want;
        }
        uint8_t *piece = malloc(c);
        CHECK(piece);
        memcpy(piece, d + off, c);
        size_t pos = 0;
        for (;;) {
            struct ws_event ev;
            size_t used = ws_reader_feed(&r, piece + pos, c - pos, &ev);
            CHECK(used <= c - pos);
            pos += used;
            if (ev.kind == WS_EV_NONE) {
                CHECK(pos == c);
                CHECK(!ws_reader_idle(&r) || r.buf == NULL);
                break;
            }
            check_event(&ev, &r, lim, piece, c);
            record(t, &ev);
            if (ev.kind == WS_EV_CLOSE || ev.kind == WS_EV_ERROR) {
                ended = true;
                /* Nothing more is consumed, and the buffer goes. */
                CHECK(ws_reader_feed(&r, piece + pos, c - pos, &ev) == 0);
                CHECK(ev.kind == WS_EV_NONE && r.buf == NULL && ws_reader_idle(&r));
                break;
            }
        }
        free(piece);
        off += c;
    }
    ws_reader_free(&r);
    CHECK(r.buf == NULL);
}

static void same(const struct trace *a, const struct trace *b)
{
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct seen *x = &a->ev[i], *y = &b->ev[i];
        CHECK(x->kind == y->kind && x->text == y->text && x->compressed == y->compressed);
        CHECK(x->code == y->code && x->len == y->len && x->hash == y->hash);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    struct ws_reader_limits lim = { (size_t)data[1] * 4, (data[0] & 1) != 0 };
    uint32_t seed = data[2] | 0x100u;
    const uint8_t *d = data + 3;
    size_t n = size - 3;
    struct trace whole = { 0 }, pieces = { 0 }, bytes = { 0 };

    run(&lim, d, n, 0, &whole);
    run(&lim, d, n, seed, &pieces);
    same(&whole, &pieces);
    if (n <= 4096) {
        /* One byte at a time: every header and payload split everywhere. */
        struct ws_reader r;
        ws_reader_init(&r, &lim);
        for (size_t i = 0; i < n; i++) {
            uint8_t b = d[i];
            struct ws_event ev;
            size_t used = ws_reader_feed(&r, &b, 1, &ev);
            if (used == 0 && ev.kind == WS_EV_NONE) break; /* after CLOSE or ERROR */
            if (ev.kind != WS_EV_NONE) {
                check_event(&ev, &r, &lim, &b, 1);
                record(&bytes, &ev);
            }
        }
        ws_reader_free(&r);
        same(&whole, &bytes);
    }
    free(whole.ev);
    free(pieces.ev);
    free(bytes.ev);

    /* The encoders, on lengths and codes from the input. */
    uint8_t h[WS_MAX_HEADER], f[WS_MAX_CLOSE_FRAME];
    uint64_t len = n >= 8 ? ((uint64_t)d[0] << 56 | (uint64_t)d[1] << 48 | (uint64_t)d[2] << 40 |
                             (uint64_t)d[3] << 32 | (uint64_t)d[4] << 24 | (uint64_t)d[5] << 16 |
                             (uint64_t)d[6] << 8 | d[7]) >>
                                (d[0] & 63)
                          : n;
    size_t hl = ws_frame_header(h, WS_OP_BINARY, data[0] & 2, len);
    CHECK(hl == (len < 126 ? 2u : len <= 0xFFFF ? 4u : 10u));
    char reason[200];
    size_t rl = n < sizeof reason - 1 ? n : sizeof reason - 1;
    memcpy(reason, d, rl);
    reason[rl] = 0;
    uint16_t code = n >= 2 ? (uint16_t)(d[0] << 8 | d[1]) : WS_CLOSE_NORMAL;
    size_t fl = ws_close_frame(f, code, reason);
    CHECK(fl >= 2 && fl <= WS_MAX_CLOSE_FRAME && f[0] == 0x88 && f[1] == fl - 2);
    CHECK(fl == 2 || fl - 4 <= strlen(reason));
    return 0;
}
