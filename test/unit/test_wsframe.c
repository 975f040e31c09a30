/* test_wsframe: unit tests for protocol/wsframe.c — the RFC 6455 examples, every rule
 * the reader enforces, the same stream cut at every byte boundary and in random
 * pieces, fragments with control frames between them, length forms and limits, the
 * reader's buffer (none while idle, none for whole frames), close parsing and the
 * server frame encoders.
 *
 * Every piece is fed from an exactly-sized heap copy (see `exact`), so under
 * AddressSanitizer a read past what was given is a crash, not a silent pass. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

/* ---- Building client streams ---- */

struct sb {
    uint8_t *b;
    size_t n, cap;
};

static void sb_put(struct sb *s, const void *p, size_t n)
{
    if (s->n + n > s->cap) {
        s->cap = (s->n + n) * 2;
        s->b = realloc(s->b, s->cap);
        assert_non_null(s->b);
    }
    if (n) memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void sb_u8(struct sb *s, uint8_t v) { sb_put(s, &v, 1); }

enum { LEN_MIN, LEN_16, LEN_64 };

#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

static const uint8_t rfc_key[4] = { 0x37, 0xfa, 0x21, 0x3d };

/* Appends one frame: first byte b0 as given, `len` in the chosen length form (the
 * payload need not be that long: `have` bytes of it are written), masked with key
 * unless key is NULL. */
static void put_frame_raw(struct sb *s, uint8_t b0, const void *payload, uint64_t len, size_t have,
                          const uint8_t *key, int form)
{
    uint8_t mbit = key ? 0x80 : 0;

    sb_u8(s, b0);
    if (form == LEN_MIN && len < 126) {
        sb_u8(s, (uint8_t)(mbit | len));
    } else if (form != LEN_64 && len <= 0xFFFF) {
        sb_u8(s, mbit | 126);
        sb_u8(s, (uint8_t)(len >> 8));
        sb_u8(s, (uint8_t)len);
    } else {
        sb_u8(s, mbit | 127);
        for (int i = 7; i >= 0; i--) sb_u8(s, (uint8_t)(len >> (8 * i)));
    }
    if (key) sb_put(s, key, 4);
    for (size_t i = 0; i < have; i++)
        sb_u8(s, (uint8_t)(((const uint8_t *)payload)[i] ^ (key ? key[i & 3] : 0)));
}

/* A masked frame with its whole payload; keys vary from frame to frame. */
static void put_frame(struct sb *s, uint8_t b0, const void *payload, size_t len)
{
    static uint8_t k = 0;
    uint8_t key[4] = { (uint8_t)(0x9d + k), (uint8_t)(0x13 * k + 1), 0xff, (uint8_t)(k ^ 0x5a) };
    k += 37;
    put_frame_raw(s, b0, payload, len, len, key, LEN_MIN);
}

static void put_str(struct sb *s, uint8_t b0, const char *text)
{
    put_frame(s, b0, text, strlen(text));
}

static void put_close(struct sb *s, uint16_t code, const char *reason)
{
    uint8_t p[125];
    size_t n = strlen(reason);
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, reason, n);
    put_frame(s, FIN | WS_OP_CLOSE, p, n + 2);
}

static uint8_t *exact(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n) memcpy(p, src, n);
    return p;
}

/* ---- Feeding and recording ---- */

struct rec {
    enum ws_event_kind kind;
    bool text, compressed;
    bool own; /* data pointed into the reader's buffer, not the caller's */
    uint16_t code;
    size_t len;
    uint8_t *data;
    const char *why;
};

#define MAX_EV 64
struct run {
    struct rec ev[MAX_EV];
    size_t n;
    bool idle_at_end;
    bool buf_at_end; /* the reader still held a buffer after the last event */
};

static void run_free(struct run *run)
{
    for (size_t i = 0; i < run->n; i++) free(run->ev[i].data);
    run->n = 0;
}

/* Piece sizes: a function of the bytes left. */
typedef size_t (*chunker)(void *state, size_t left);

static size_t chunk_all(void *st, size_t left)
{
    (void)st;
    return left;
}
static size_t chunk_one(void *st, size_t left)
{
    (void)st;
    (void)left;
    return 1;
}

struct split_at {
    size_t first;
    bool done;
};
static size_t chunk_split(void *st, size_t left)
{
    struct split_at *s = st;
    if (s->done) return left;
    s->done = true;
    return s->first;
}

static size_t chunk_random(void *st, size_t left)
{
    uint32_t *seed = st;
    *seed = *seed * 1103515245u + 12345u;
    uint32_t r = *seed >> 8;
    (void)left;
    /* Mostly small pieces, sometimes large ones. */
    return (r & 7) == 0 ? 1 + r % 5000 : 1 + r % 23;
}

/* Feeds `stream` (copied, piece by piece, to exact heap buffers) to a fresh reader and
 * records every event until the first CLOSE or ERROR. Checks the contract on every
 * call: no more consumed than given; NONE only when all of it was consumed; data
 * inside the piece given or the reader's buffer. */
static void feed_stream(const struct ws_reader_limits *lim, const uint8_t *stream, size_t len,
                        chunker next, void *st, struct run *out)
{
    struct ws_reader r;
    size_t off = 0;
    bool ended = false;

    memset(out, 0, sizeof *out);
    ws_reader_init(&r, lim);
    while (off < len && !ended) {
        size_t c = next(st, len - off);
        if (c == 0) c = 1;
        if (c > len - off) c = len - off;
        uint8_t *piece = exact(stream + off, c);
        size_t pos = 0;
        for (;;) {
            struct ws_event ev;
            size_t n = ws_reader_feed(&r, piece + pos, c - pos, &ev);
            assert_true(n <= c - pos);
            pos += n;
            if (ev.kind == WS_EV_NONE) {
                assert_int_equal(pos, c);
                /* Idle connections hold no buffer. */
                if (ws_reader_idle(&r)) assert_null(r.buf);
                break;
            }
            assert_true(out->n < MAX_EV);
            struct rec *e = &out->ev[out->n++];
            e->kind = ev.kind;
            e->text = ev.text;
            e->compressed = ev.compressed;
            e->code = ev.code;
            e->len = ev.len;
            e->why = ev.why;
            if (ev.kind == WS_EV_ERROR) {
                assert_non_null(ev.why);
                ended = true;
                break;
            }
            assert_non_null(ev.data);
            bool in_piece = ev.data >= piece && ev.data + ev.len <= piece + c;
            e->own = r.buf && ev.data >= r.buf && ev.data + ev.len <= r.buf + r.cap;
            assert_true(in_piece || e->own);
            e->data = exact(ev.data, ev.len);
            if (ev.kind == WS_EV_CLOSE) {
                ended = true;
                break;
            }
        }
        free(piece);
        off += c;
    }
    if (!ended) {
        struct ws_event ev;
        assert_int_equal(ws_reader_feed(&r, NULL, 0, &ev), 0);
        assert_int_equal(ev.kind, WS_EV_NONE);
        if (ws_reader_idle(&r)) assert_null(r.buf);
    }
    out->buf_at_end = r.buf != NULL;
    out->idle_at_end = ws_reader_idle(&r);
    ws_reader_free(&r);
    assert_null(r.buf);
}

static void assert_same_runs(const struct run *a, const struct run *b, const char *what)
{
    if (a->n != b->n) fail_msg("%s: %zu events, want %zu", what, b->n, a->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct rec *x = &a->ev[i], *y = &b->ev[i];
        if (x->kind != y->kind || x->text != y->text || x->compressed != y->compressed ||
            x->code != y->code || x->len != y->len ||
            (x->len && memcmp(x->data, y->data, x->len) != 0))
            fail_msg("%s: event %zu differs (kind %d/%d, len %zu/%zu, code %u/%u)", what, i,
                     x->kind, y->kind, x->len, y->len, x->code, y->code);
    }
    assert_int_equal(a->idle_at_end, b->idle_at_end);
}

/* An event of kind k whose data is the string str. */
static void assert_rec(const struct rec *e, enum ws_event_kind k, const char *str)
{
    assert_int_equal(e->kind, k);
    assert_int_equal(e->len, strlen(str));
    assert_memory_equal(e->data, str, strlen(str));
}

static const struct ws_reader_limits lim_plain = { 1 << 20, false };
static const struct ws_reader_limits lim_deflate = { 1 << 20, true };

/* Feeds the whole stream at once and returns the single event expected from it. */
static struct run one_run(const struct ws_reader_limits *lim, const struct sb *s)
{
    struct run run;
    feed_stream(lim, s->b, s->n, chunk_all, NULL, &run);
    return run;
}

/* ---- RFC 6455 §5.7 examples ---- */

static void test_rfc_examples(void **state)
{
    (void)state;
    /* A single-frame masked text message, "Hello". */
    uint8_t hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    struct ws_reader r;
    struct ws_event ev;
    ws_reader_init(&r, &lim_plain);
    assert_int_equal(ws_reader_feed(&r, hello, sizeof hello, &ev), sizeof hello);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_true(ev.text);
    assert_false(ev.compressed);
    assert_ptr_equal(ev.data, hello + 6); /* zero copy, unmasked in place */
    assert_int_equal(ev.len, 5);
    assert_memory_equal(ev.data, "Hello", 5);
    assert_null(r.buf);
    assert_true(ws_reader_idle(&r));

    /* The masked pong of the same example set. */
    uint8_t pong[] = { 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    assert_int_equal(ws_reader_feed(&r, pong, sizeof pong, &ev), sizeof pong);
    assert_int_equal(ev.kind, WS_EV_PONG);
    assert_memory_equal(ev.data, "Hello", 5);
    assert_null(r.buf);
    ws_reader_free(&r);

    /* Server headers of §5.7: 256 bytes and 64 KiB of binary data. */
    uint8_t h[WS_MAX_HEADER];
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, false, 256), 4);
    assert_memory_equal(h, "\x82\x7e\x01\x00", 4);
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, false, 65536), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    /* The unmasked "Hello" text frame of §5.7 starts 0x81 0x05. */
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, false, 5), 2);
    assert_memory_equal(h, "\x81\x05", 2);
}

/* ---- Server frame encoders ---- */

static void test_frame_header(void **state)
{
    (void)state;
    uint8_t h[WS_MAX_HEADER];
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, false, 0), 2);
    assert_memory_equal(h, "\x82\x00", 2);
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, false, 125), 2);
    assert_memory_equal(h, "\x82\x7d", 2);
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, true, 126), 4);
    assert_memory_equal(h, "\xc2\x7e\x00\x7e", 4);
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, true, 65535), 4);
    assert_memory_equal(h, "\xc1\x7e\xff\xff", 4);
    assert_int_equal(ws_frame_header(h, WS_OP_BINARY, false, 0x0102030405ull), 10);
    assert_memory_equal(h, "\x82\x7f\x00\x00\x00\x01\x02\x03\x04\x05", 10);
    assert_int_equal(ws_frame_header(h, WS_OP_PING, false, 3), 2);
    assert_memory_equal(h, "\x89\x03", 2);
    assert_int_equal(ws_frame_header(h, WS_OP_PONG, false, 0), 2);
    assert_memory_equal(h, "\x8a\x00", 2);
    assert_int_equal(ws_frame_header(h, WS_OP_CLOSE, false, 2), 2);
    assert_memory_equal(h, "\x88\x02", 2);
}

static void test_close_frame(void **state)
{
    (void)state;
    uint8_t f[WS_MAX_CLOSE_FRAME];
    char longr[300];

    assert_int_equal(ws_close_frame(f, WS_CLOSE_NORMAL, "bye"), 7);
    assert_memory_equal(f,
                        "\x88\x05\x03\xe8"
                        "bye",
                        7);
    assert_int_equal(ws_close_frame(f, WS_CLOSE_TOO_BIG, NULL), 4);
    assert_memory_equal(f, "\x88\x02\x03\xf1", 4);
    assert_int_equal(ws_close_frame(f, WS_CLOSE_PROTOCOL, ""), 4);
    assert_memory_equal(f, "\x88\x02\x03\xea", 4);
    /* 1005 means "no status": an empty close, never 1005 on the wire. */
    assert_int_equal(ws_close_frame(f, WS_CLOSE_NO_STATUS, "ignored"), 2);
    assert_memory_equal(f, "\x88\x00", 2);
    assert_int_equal(ws_close_frame(f, 0, NULL), 2);

    /* Reasons are cut to 123 bytes... */
    memset(longr, 'a', sizeof longr - 1);
    longr[sizeof longr - 1] = 0;
    assert_int_equal(ws_close_frame(f, 4000, longr), 127);
    assert_int_equal(f[1], 125);
    assert_memory_equal(f + 2, "\x0f\xa0", 2);
    assert_int_equal(f[126], 'a');
    longr[123] = 0;
    assert_int_equal(ws_close_frame(f, 4000, longr), 127);
    longr[122] = 0;
    assert_int_equal(ws_close_frame(f, 4000, longr), 126);
    /* ...never inside a UTF-8 sequence: "é" (c3 a9) straddling byte 123 goes whole. */
    memset(longr, 'a', 200);
    longr[200] = 0;
    longr[122] = (char)0xc3;
    longr[123] = (char)0xa9;
    assert_int_equal(ws_close_frame(f, 4000, longr), 4 + 122);
    assert_int_equal(f[1], 124);
    /* A 3-byte character ending exactly at 123 is kept. */
    memset(longr, 'a', 200);
    longr[120] = (char)0xe2;
    longr[121] = (char)0x82;
    longr[122] = (char)0xac;
    assert_int_equal(ws_close_frame(f, 4000, longr), 127);
    assert_memory_equal(f + 4 + 120, "\xe2\x82\xac", 3);
    /* A 4-byte one starting at 121 is dropped whole. */
    longr[120] = 'a';
    longr[121] = (char)0xf0;
    longr[122] = (char)0x9f;
    longr[123] = (char)0x98;
    longr[124] = (char)0x80;
    assert_int_equal(ws_close_frame(f, 4000, longr), 4 + 121);
}

static void test_close_code_valid(void **state)
{
    (void)state;
    const uint16_t good[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                              1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999 };
    const uint16_t bad[] = {
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!ws_close_code_valid(good[i])) fail_msg("%u should be valid", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ws_close_code_valid(bad[i])) fail_msg("%u should be invalid", bad[i]);
}

/* ---- Messages ---- */

static void test_binary_and_text(void **state)
{
    (void)state;
    struct sb s = { 0 };
    /* Text is not validated: invalid UTF-8 comes through as it is. */
    put_frame(&s, FIN | WS_OP_TEXT, "\xff\xfe\xc3", 3);
    put_str(&s, FIN | WS_OP_BINARY, "bin");
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 2);
    assert_rec(&run.ev[0], WS_EV_MESSAGE, "\xff\xfe\xc3");
    assert_true(run.ev[0].text);
    assert_false(run.ev[0].compressed);
    assert_false(run.ev[0].own);
    assert_rec(&run.ev[1], WS_EV_MESSAGE, "bin");
    assert_false(run.ev[1].text);
    assert_false(run.ev[1].own);
    assert_false(run.buf_at_end);
    assert_true(run.idle_at_end);
    run_free(&run);
    free(s.b);
}

/* Payloads of every length around the 7/16/64-bit boundaries, in minimal and
 * non-minimal length forms (the latter are accepted, as most servers do). */
static void test_lengths(void **state)
{
    (void)state;
    const size_t lens[] = { 0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 100003 };
    uint8_t *payload = malloc(100003);
    assert_non_null(payload);
    for (size_t i = 0; i < 100003; i++) payload[i] = (uint8_t)(i * 7 + (i >> 8));
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (int form = LEN_MIN; form <= LEN_64; form++) {
            size_t n = lens[li];
            if (form == LEN_16 && n > 0xFFFF) continue;
            struct sb s = { 0 };
            const uint8_t key[4] = { 1, 2, 3, 0x80 };
            put_frame_raw(&s, FIN | WS_OP_BINARY, payload, n, n, key, form);
            size_t hlen = s.n - n;
            assert_int_equal(hlen, form == LEN_64 || n > 0xFFFF ? 14
                                   : form == LEN_16 || n > 125  ? 8
                                                                : 6);
            uint8_t *p = exact(s.b, s.n);
            struct ws_reader r;
            struct ws_event ev;
            ws_reader_init(&r, &lim_plain);
            assert_int_equal(ws_reader_feed(&r, p, s.n, &ev), s.n);
            assert_int_equal(ev.kind, WS_EV_MESSAGE);
            assert_int_equal(ev.len, n);
            assert_ptr_equal(ev.data, p + hlen);
            if (n) assert_memory_equal(ev.data, payload, n);
            assert_null(r.buf);
            ws_reader_free(&r);
            free(p);
            free(s.b);
        }
    }
    free(payload);
}

/* Unmasking at every phase: payloads of 0..40 bytes fed in pieces starting at every
 * offset (the 8-byte path and the byte tail, from every key position). */
static void test_unmask_phases(void **state)
{
    (void)state;
    uint8_t payload[40];
    for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(0xa5 ^ (i * 29));
    for (size_t n = 0; n <= sizeof payload; n++) {
        struct sb s = { 0 };
        put_frame(&s, FIN | WS_OP_BINARY, payload, n);
        for (size_t cut = 1; cut < s.n; cut++) {
            struct split_at sp = { cut, false };
            struct run run;
            feed_stream(&lim_plain, s.b, s.n, chunk_split, &sp, &run);
            assert_int_equal(run.n, 1);
            assert_int_equal(run.ev[0].len, n);
            if (n) assert_memory_equal(run.ev[0].data, payload, n);
            /* Only a payload cut in pieces is copied; after a cut header it comes whole. */
            assert_int_equal(run.ev[0].own, cut > s.n - n);
            run_free(&run);
        }
        free(s.b);
    }
}

/* Zero-length events still carry a usable pointer. */
static void test_empty_payloads(void **state)
{
    (void)state;
    struct sb s = { 0 };
    put_frame(&s, FIN | WS_OP_BINARY, "", 0);
    put_frame(&s, FIN | WS_OP_PING, "", 0);
    put_frame(&s, WS_OP_TEXT, "", 0);
    put_frame(&s, WS_OP_CONT, "", 0);
    put_frame(&s, FIN | WS_OP_CONT, "", 0);
    put_frame(&s, FIN | WS_OP_CLOSE, "", 0);
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 4);
    assert_rec(&run.ev[0], WS_EV_MESSAGE, "");
    assert_rec(&run.ev[1], WS_EV_PING, "");
    assert_rec(&run.ev[2], WS_EV_MESSAGE, "");
    assert_true(run.ev[2].text);
    assert_rec(&run.ev[3], WS_EV_CLOSE, "");
    assert_int_equal(run.ev[3].code, WS_CLOSE_NO_STATUS);
    run_free(&run);
    free(s.b);
}

/* ---- Fragmentation ---- */

static void test_fragments_with_control_frames(void **state)
{
    (void)state;
    struct sb s = { 0 };
    put_str(&s, WS_OP_TEXT, "Hel");
    put_str(&s, FIN | WS_OP_PING, "p1");
    put_str(&s, WS_OP_CONT, "lo ");
    put_str(&s, FIN | WS_OP_PONG, "");
    put_str(&s, WS_OP_CONT, "");
    put_str(&s, FIN | WS_OP_PING, "p2");
    put_str(&s, FIN | WS_OP_CONT, "world");
    put_str(&s, FIN | WS_OP_BINARY, "next");
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 5);
    assert_rec(&run.ev[0], WS_EV_PING, "p1");
    assert_false(run.ev[0].own); /* a control frame whole in buf: zero copy */
    assert_rec(&run.ev[1], WS_EV_PONG, "");
    assert_rec(&run.ev[2], WS_EV_PING, "p2");
    assert_rec(&run.ev[3], WS_EV_MESSAGE, "Hello world");
    assert_true(run.ev[3].text);
    assert_true(run.ev[3].own);
    assert_rec(&run.ev[4], WS_EV_MESSAGE, "next");
    assert_false(run.ev[4].text);
    assert_false(run.ev[4].own);
    assert_true(run.idle_at_end);
    run_free(&run);

    /* The same, one byte at a time: control payloads then go to our buffer, after
     * the fragments, and must not disturb them. */
    feed_stream(&lim_plain, s.b, s.n, chunk_one, NULL, &run);
    assert_int_equal(run.n, 5);
    assert_rec(&run.ev[0], WS_EV_PING, "p1");
    assert_true(run.ev[0].own);
    assert_rec(&run.ev[2], WS_EV_PING, "p2");
    assert_rec(&run.ev[3], WS_EV_MESSAGE, "Hello world");
    run_free(&run);
    free(s.b);
}

static void test_close_between_fragments(void **state)
{
    (void)state;
    struct sb s = { 0 };
    put_str(&s, WS_OP_BINARY, "part");
    put_close(&s, WS_CLOSE_GOING_AWAY, "leaving");
    put_str(&s, FIN | WS_OP_CONT, "never read");
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 1);
    assert_rec(&run.ev[0], WS_EV_CLOSE, "leaving");
    assert_int_equal(run.ev[0].code, WS_CLOSE_GOING_AWAY);
    assert_true(run.idle_at_end);
    run_free(&run);
    free(s.b);
}

static void test_many_small_fragments(void **state)
{
    (void)state;
    struct sb s = { 0 };
    char want[2001];
    for (int i = 0; i < 2000; i++) want[i] = (char)('a' + i % 26);
    want[2000] = 0;
    put_frame(&s, WS_OP_BINARY, want, 1);
    for (int i = 1; i < 1999; i++) put_frame(&s, WS_OP_CONT, want + i, 1);
    put_frame(&s, FIN | WS_OP_CONT, want + 1999, 1);
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 1);
    assert_rec(&run.ev[0], WS_EV_MESSAGE, want);
    run_free(&run);
    free(s.b);
}

/* ---- Pieces: the same events however the stream is cut ---- */

/* A stream with a bit of everything, and the events it must give. */
static void build_mixed(struct sb *s, bool big)
{
    static const uint8_t hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    uint8_t p300[300];
    for (size_t i = 0; i < sizeof p300; i++) p300[i] = (uint8_t)(i ^ (i >> 3));
    sb_put(s, hello, sizeof hello);
    put_str(s, FIN | WS_OP_BINARY, "abc");
    put_str(s, FIN | WS_OP_BINARY, "");
    put_str(s, WS_OP_TEXT, "frag-");
    put_str(s, FIN | WS_OP_PING, "are you there");
    put_str(s, WS_OP_CONT, "ment");
    put_str(s, FIN | WS_OP_PONG, "");
    put_str(s, WS_OP_CONT, "");
    put_str(s, FIN | WS_OP_CONT, "ed");
    put_frame(s, FIN | WS_OP_BINARY, p300, sizeof p300);
    put_frame_raw(s, FIN | WS_OP_BINARY, "12345", 5, 5, rfc_key, LEN_64);
    put_str(s, FIN | RSV1 | WS_OP_BINARY, "squeezed");
    put_str(s, RSV1 | WS_OP_TEXT, "sq1");
    put_str(s, FIN | WS_OP_CONT, "sq2");
    if (big) {
        uint8_t *b = malloc(70000);
        assert_non_null(b);
        for (size_t i = 0; i < 70000; i++) b[i] = (uint8_t)(i * 13 + 5);
        put_frame(s, FIN | WS_OP_BINARY, b, 70000);
        put_frame(s, WS_OP_BINARY, b, 30000);
        put_str(s, FIN | WS_OP_PING, "mid");
        put_frame(s, WS_OP_CONT, b + 30000, 30000);
        put_frame(s, FIN | WS_OP_CONT, b + 60000, 10000);
        free(b);
    }
    put_close(s, 4001, "done");
}

static void check_mixed(const struct run *run, bool big)
{
    size_t i = 0;
    assert_int_equal(run->n, big ? 14 : 11);
    assert_rec(&run->ev[i], WS_EV_MESSAGE, "Hello");
    assert_true(run->ev[i++].text);
    assert_rec(&run->ev[i++], WS_EV_MESSAGE, "abc");
    assert_rec(&run->ev[i++], WS_EV_MESSAGE, "");
    assert_rec(&run->ev[i++], WS_EV_PING, "are you there");
    assert_rec(&run->ev[i++], WS_EV_PONG, "");
    assert_rec(&run->ev[i], WS_EV_MESSAGE, "frag-mented");
    assert_true(run->ev[i++].text);
    assert_int_equal(run->ev[i].len, 300);
    assert_int_equal(run->ev[i].data[299], (uint8_t)(299 ^ (299 >> 3)));
    assert_false(run->ev[i++].compressed);
    assert_rec(&run->ev[i++], WS_EV_MESSAGE, "12345");
    assert_rec(&run->ev[i], WS_EV_MESSAGE, "squeezed");
    assert_true(run->ev[i].compressed);
    assert_false(run->ev[i++].text);
    assert_rec(&run->ev[i], WS_EV_MESSAGE, "sq1sq2");
    assert_true(run->ev[i].compressed);
    assert_true(run->ev[i++].text);
    if (big) {
        assert_int_equal(run->ev[i].len, 70000);
        assert_int_equal(run->ev[i++].data[69999], (uint8_t)(69999 * 13 + 5));
        assert_rec(&run->ev[i++], WS_EV_PING, "mid");
        assert_int_equal(run->ev[i].kind, WS_EV_MESSAGE);
        assert_int_equal(run->ev[i].len, 70000);
        for (size_t k = 0; k < 70000; k++)
            if (run->ev[i].data[k] != (uint8_t)(k * 13 + 5))
                fail_msg("fragmented big message differs at %zu", k);
        i++;
    }
    assert_rec(&run->ev[i], WS_EV_CLOSE, "done");
    assert_int_equal(run->ev[i].code, 4001);
}

static void test_split_every_boundary(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct run whole, run;
    build_mixed(&s, false);
    feed_stream(&lim_deflate, s.b, s.n, chunk_all, NULL, &whole);
    check_mixed(&whole, false);
    for (size_t cut = 1; cut < s.n; cut++) {
        struct split_at sp = { cut, false };
        feed_stream(&lim_deflate, s.b, s.n, chunk_split, &sp, &run);
        assert_same_runs(&whole, &run, "split");
        run_free(&run);
    }
    feed_stream(&lim_deflate, s.b, s.n, chunk_one, NULL, &run);
    assert_same_runs(&whole, &run, "one byte at a time");
    run_free(&run);
    run_free(&whole);
    free(s.b);
}

static void test_random_pieces(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct run whole, run;
    build_mixed(&s, true);
    feed_stream(&lim_deflate, s.b, s.n, chunk_all, NULL, &whole);
    check_mixed(&whole, true);
    feed_stream(&lim_deflate, s.b, s.n, chunk_one, NULL, &run);
    assert_same_runs(&whole, &run, "one byte at a time");
    run_free(&run);
    for (uint32_t seed = 1; seed <= 40; seed++) {
        uint32_t st = seed;
        feed_stream(&lim_deflate, s.b, s.n, chunk_random, &st, &run);
        assert_same_runs(&whole, &run, "random pieces");
        run_free(&run);
    }
    run_free(&whole);
    free(s.b);
}

/* ---- Rules: each a protocol error ---- */

/* The stream must give exactly one event, an ERROR with `code`; also when fed one
 * byte at a time. */
static void expect_error(const struct ws_reader_limits *lim, const struct sb *s, uint16_t code,
                         const char *what)
{
    struct run run;
    feed_stream(lim, s->b, s->n, chunk_all, NULL, &run);
    if (run.n != 1 || run.ev[0].kind != WS_EV_ERROR || run.ev[0].code != code)
        fail_msg("%s: want ERROR %u, got %zu events (first kind %d code %u)", what, code, run.n,
                 run.n ? (int)run.ev[0].kind : -1, run.n ? run.ev[0].code : 0);
    assert_true(strlen(run.ev[0].why) > 0);
    assert_true(run.idle_at_end);
    assert_false(run.buf_at_end);
    run_free(&run);
    feed_stream(lim, s->b, s->n, chunk_one, NULL, &run);
    if (run.n != 1 || run.ev[0].kind != WS_EV_ERROR || run.ev[0].code != code)
        fail_msg("%s (byte by byte): want ERROR %u", what, code);
    run_free(&run);
}

static void test_rule_unmasked(void **state)
{
    (void)state;
    struct sb s = { 0 };
    put_frame_raw(&s, FIN | WS_OP_BINARY, "abc", 3, 3, NULL, LEN_MIN);
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "unmasked binary");
    s.n = 0;
    put_frame_raw(&s, FIN | WS_OP_PING, "", 0, 0, NULL, LEN_MIN);
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "unmasked ping");
    /* Refused from the first two bytes, before a mask could arrive. */
    struct ws_reader r;
    struct ws_event ev;
    uint8_t two[2] = { FIN | WS_OP_BINARY, 0x05 };
    ws_reader_init(&r, &lim_plain);
    ws_reader_feed(&r, two, 2, &ev);
    assert_int_equal(ev.kind, WS_EV_ERROR);
    assert_string_equal(ev.why, "unmasked client frame");
    ws_reader_free(&r);
    free(s.b);
}

static void test_rule_reserved_bits(void **state)
{
    (void)state;
    struct sb s = { 0 };
    const struct {
        uint8_t b0;
        const struct ws_reader_limits *lim;
        const char *what;
    } bad[] = {
        { FIN | RSV2 | WS_OP_BINARY, &lim_deflate, "RSV2" },
        { FIN | RSV3 | WS_OP_BINARY, &lim_deflate, "RSV3" },
        { FIN | RSV1 | RSV2 | WS_OP_TEXT, &lim_deflate, "RSV1+RSV2" },
        { FIN | RSV1 | WS_OP_BINARY, &lim_plain, "RSV1 without deflate" },
        { FIN | RSV1 | WS_OP_PING, &lim_deflate, "RSV1 on ping" },
        { FIN | RSV1 | WS_OP_CLOSE, &lim_deflate, "RSV1 on close" },
        { FIN | RSV3 | WS_OP_PONG, &lim_plain, "RSV3 on pong" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s.n = 0;
        put_str(&s, bad[i].b0, "x");
        expect_error(bad[i].lim, &s, WS_CLOSE_PROTOCOL, bad[i].what);
    }
    /* RSV1 on a continuation frame, even with deflate. */
    s.n = 0;
    put_str(&s, RSV1 | WS_OP_BINARY, "a");
    put_str(&s, FIN | RSV1 | WS_OP_CONT, "b");
    expect_error(&lim_deflate, &s, WS_CLOSE_PROTOCOL, "RSV1 on continuation");
    /* ...and the first frame alone is fine. */
    s.n = 0;
    put_str(&s, RSV1 | WS_OP_BINARY, "a");
    put_str(&s, FIN | WS_OP_CONT, "b");
    struct run run = one_run(&lim_deflate, &s);
    assert_int_equal(run.n, 1);
    assert_rec(&run.ev[0], WS_EV_MESSAGE, "ab");
    assert_true(run.ev[0].compressed);
    run_free(&run);
    free(s.b);
}

static void test_rule_opcodes(void **state)
{
    (void)state;
    struct sb s = { 0 };
    for (uint8_t op = 3; op <= 15; op++) {
        if (op == WS_OP_CLOSE || op == WS_OP_PING || op == WS_OP_PONG) continue;
        s.n = 0;
        put_str(&s, FIN | op, "");
        expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "unknown opcode");
    }
    free(s.b);
}

static void test_rule_control_frames(void **state)
{
    (void)state;
    struct sb s = { 0 };
    uint8_t p[126];
    memset(p, 'p', sizeof p);
    /* Not final. */
    put_str(&s, WS_OP_PING, "x");
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "fragmented ping");
    s.n = 0;
    put_close(&s, 1000, "");
    s.b[0] &= (uint8_t)~FIN;
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "fragmented close");
    /* Longer than 125, in the 16-bit form (the only way to say 126). */
    s.n = 0;
    put_frame(&s, FIN | WS_OP_PING, p, 126);
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "126-byte ping");
    s.n = 0;
    put_frame_raw(&s, FIN | WS_OP_PONG, p, 5, 5, rfc_key, LEN_64);
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "pong with a 64-bit length");
    /* 125 is fine. */
    s.n = 0;
    put_frame(&s, FIN | WS_OP_PING, p, 125);
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 1);
    assert_int_equal(run.ev[0].kind, WS_EV_PING);
    assert_int_equal(run.ev[0].len, 125);
    run_free(&run);
    free(s.b);
}

static void test_rule_sequence(void **state)
{
    (void)state;
    struct sb s = { 0 };
    put_str(&s, FIN | WS_OP_CONT, "x");
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "continuation first");
    s.n = 0;
    put_str(&s, WS_OP_CONT, "x");
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "non-final continuation first");
    s.n = 0;
    put_str(&s, FIN | WS_OP_BINARY, "done");
    put_str(&s, FIN | WS_OP_CONT, "x");
    struct run run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 2);
    assert_int_equal(run.ev[1].kind, WS_EV_ERROR);
    assert_string_equal(run.ev[1].why, "continuation without a message");
    run_free(&run);
    s.n = 0;
    put_str(&s, WS_OP_TEXT, "a");
    put_str(&s, FIN | WS_OP_BINARY, "b");
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "data frame inside a message");
    s.n = 0;
    put_str(&s, WS_OP_TEXT, "a");
    put_str(&s, FIN | WS_OP_PING, "p");
    put_str(&s, WS_OP_TEXT, "b");
    run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 2);
    assert_int_equal(run.ev[0].kind, WS_EV_PING);
    assert_int_equal(run.ev[1].kind, WS_EV_ERROR);
    assert_int_equal(run.ev[1].code, WS_CLOSE_PROTOCOL);
    run_free(&run);
    free(s.b);
}

static void test_rule_64bit_top_bit(void **state)
{
    (void)state;
    struct sb s = { 0 };
    const struct ws_reader_limits huge = { SIZE_MAX, false };
    put_frame_raw(&s, FIN | WS_OP_BINARY, "", 0x8000000000000000ull, 0, rfc_key, LEN_64);
    expect_error(&huge, &s, WS_CLOSE_PROTOCOL, "top bit");
    s.n = 0;
    put_frame_raw(&s, FIN | WS_OP_BINARY, "", 0xFFFFFFFFFFFFFFFFull, 0, rfc_key, LEN_64);
    expect_error(&huge, &s, WS_CLOSE_PROTOCOL, "all ones");
    free(s.b);
}

/* ---- Limits ---- */

static void test_limit_single_frame(void **state)
{
    (void)state;
    const struct ws_reader_limits lim = { 1000, false };
    uint8_t p[1001];
    memset(p, 'x', sizeof p);
    struct sb s = { 0 };
    put_frame(&s, FIN | WS_OP_BINARY, p, 1000);
    struct run run = one_run(&lim, &s);
    assert_int_equal(run.n, 1);
    assert_int_equal(run.ev[0].kind, WS_EV_MESSAGE);
    assert_int_equal(run.ev[0].len, 1000);
    run_free(&run);
    s.n = 0;
    put_frame(&s, FIN | WS_OP_BINARY, p, 1001);
    expect_error(&lim, &s, WS_CLOSE_TOO_BIG, "limit + 1");

    /* Refused from the header alone, before any payload, nothing allocated. */
    struct ws_reader r;
    struct ws_event ev;
    uint8_t *hdr = exact(s.b, 8);
    ws_reader_init(&r, &lim);
    assert_int_equal(ws_reader_feed(&r, hdr, 8, &ev), 8);
    assert_int_equal(ev.kind, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_TOO_BIG);
    assert_null(r.buf);
    /* Nothing more is consumed. */
    assert_int_equal(ws_reader_feed(&r, hdr, 8, &ev), 0);
    assert_int_equal(ev.kind, WS_EV_NONE);
    ws_reader_free(&r);
    free(hdr);

    /* A 2^62-byte frame header with a 1 MB limit costs nothing either. */
    s.n = 0;
    put_frame_raw(&s, FIN | WS_OP_BINARY, "", 1ull << 62, 0, rfc_key, LEN_64);
    expect_error(&lim_plain, &s, WS_CLOSE_TOO_BIG, "2^62");

    /* max_message 0: only empty messages. */
    const struct ws_reader_limits zero = { 0, false };
    s.n = 0;
    put_str(&s, FIN | WS_OP_BINARY, "");
    put_str(&s, FIN | WS_OP_PING, "control frames are not messages");
    put_str(&s, FIN | WS_OP_BINARY, "x");
    run = one_run(&zero, &s);
    assert_int_equal(run.n, 3);
    assert_int_equal(run.ev[0].kind, WS_EV_MESSAGE);
    assert_int_equal(run.ev[1].kind, WS_EV_PING);
    assert_int_equal(run.ev[2].kind, WS_EV_ERROR);
    assert_int_equal(run.ev[2].code, WS_CLOSE_TOO_BIG);
    run_free(&run);
    free(s.b);
}

static void test_limit_fragments(void **state)
{
    (void)state;
    const struct ws_reader_limits lim = { 1000, true };
    uint8_t p[1000];
    memset(p, 'y', sizeof p);
    struct sb s = { 0 };
    /* 400 + 125 (a ping between, not counted) + 600 = exactly the limit. */
    put_frame(&s, RSV1 | WS_OP_BINARY, p, 400);
    put_frame(&s, FIN | WS_OP_PING, p, 125);
    put_frame(&s, WS_OP_CONT, p, 0);
    put_frame(&s, FIN | WS_OP_CONT, p, 600);
    struct run run = one_run(&lim, &s);
    assert_int_equal(run.n, 2);
    assert_int_equal(run.ev[1].kind, WS_EV_MESSAGE);
    assert_int_equal(run.ev[1].len, 1000);
    assert_true(run.ev[1].compressed);
    run_free(&run);

    /* One more byte in the last fragment: refused from its header, with the 400
     * bytes received before counted. */
    s.n = 0;
    put_frame(&s, WS_OP_BINARY, p, 400);
    size_t first = s.n;
    put_frame(&s, FIN | WS_OP_CONT, p, 601);
    expect_error(&lim, &s, WS_CLOSE_TOO_BIG, "fragments over the limit");
    struct ws_reader r;
    struct ws_event ev;
    uint8_t *part = exact(s.b, first + 8); /* first frame and the second's header */
    ws_reader_init(&r, &lim);
    assert_int_equal(ws_reader_feed(&r, part, first + 8, &ev), first + 8);
    assert_int_equal(ev.kind, WS_EV_ERROR);
    assert_int_equal(ev.code, WS_CLOSE_TOO_BIG);
    assert_string_equal(ev.why, "message too big");
    assert_null(r.buf);
    ws_reader_free(&r);
    free(part);
    free(s.b);
}

/* ---- The reader's buffer ---- */

static void test_buffer_lifetime(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct ws_reader r;
    struct ws_event ev;
    uint8_t payload[200];
    memset(payload, 'z', sizeof payload);
    put_frame(&s, FIN | WS_OP_BINARY, payload, sizeof payload); /* 8-byte header */
    uint8_t *p = exact(s.b, s.n);

    ws_reader_init(&r, &lim_plain);
    assert_true(ws_reader_idle(&r));
    /* Half a header: not idle, nothing allocated. */
    assert_int_equal(ws_reader_feed(&r, p, 3, &ev), 3);
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_false(ws_reader_idle(&r));
    assert_null(r.buf);
    /* The rest of the header and part of the payload: the frame's size is reserved. */
    assert_int_equal(ws_reader_feed(&r, p + 3, 50, &ev), 50);
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_false(ws_reader_idle(&r));
    assert_non_null(r.buf);
    assert_int_equal(r.cap, 200);
    /* The rest: delivered from our buffer, still valid after the call... */
    assert_int_equal(ws_reader_feed(&r, p + 53, s.n - 53, &ev), s.n - 53);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_ptr_equal(ev.data, r.buf);
    assert_memory_equal(ev.data, payload, 200);
    assert_true(ws_reader_idle(&r));
    /* ...until the next call, which drops it (a call with nothing does only that). */
    assert_int_equal(ws_reader_feed(&r, NULL, 0, &ev), 0);
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_null(r.buf);
    assert_true(ws_reader_idle(&r));
    free(p);

    /* A ping in pieces, no message open: from our buffer, dropped by the next call. */
    s.n = 0;
    put_str(&s, FIN | WS_OP_PING, "ping!");
    p = exact(s.b, s.n);
    assert_int_equal(ws_reader_feed(&r, p, 8, &ev), 8); /* header and 2 bytes */
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_int_equal(ws_reader_feed(&r, p + 8, s.n - 8, &ev), s.n - 8);
    assert_int_equal(ev.kind, WS_EV_PING);
    assert_ptr_equal(ev.data, r.buf);
    assert_memory_equal(ev.data, "ping!", 5);
    assert_int_equal(ws_reader_feed(&r, NULL, 0, &ev), 0);
    assert_null(r.buf);
    free(p);

    /* An open fragmented message: not idle, even between frames. */
    s.n = 0;
    put_str(&s, WS_OP_BINARY, "a");
    put_str(&s, FIN | WS_OP_PING, "");
    p = exact(s.b, s.n);
    assert_int_equal(ws_reader_feed(&r, p, s.n, &ev), s.n);
    assert_int_equal(ev.kind, WS_EV_PING);
    assert_false(ws_reader_idle(&r));
    assert_non_null(r.buf);
    /* Freed mid-message: no leak, and usable again. */
    ws_reader_free(&r);
    assert_null(r.buf);
    assert_true(ws_reader_idle(&r));
    free(p);

    /* After a whole frame nothing is allocated at any point. */
    s.n = 0;
    put_str(&s, FIN | WS_OP_BINARY, "whole");
    p = exact(s.b, s.n);
    assert_int_equal(ws_reader_feed(&r, p, s.n, &ev), s.n);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_null(r.buf);
    free(p);
    ws_reader_free(&r);
    free(s.b);
}

/* A message whose header is split but whose payload then arrives whole is still
 * delivered without a copy. */
static void test_zero_copy_after_split_header(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct ws_reader r;
    struct ws_event ev;
    put_str(&s, FIN | WS_OP_BINARY, "payload");
    uint8_t *a = exact(s.b, 4), *b = exact(s.b + 4, s.n - 4);
    ws_reader_init(&r, &lim_plain);
    assert_int_equal(ws_reader_feed(&r, a, 4, &ev), 4);
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_int_equal(ws_reader_feed(&r, b, s.n - 4, &ev), s.n - 4);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_ptr_equal(ev.data, b + 2);
    assert_memory_equal(ev.data, "payload", 7);
    assert_null(r.buf);
    ws_reader_free(&r);
    free(a);
    free(b);
    free(s.b);
}

/* One event per call: the caller's loop sees every frame of a batch. */
static void test_one_event_per_call(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct ws_reader r;
    struct ws_event ev;
    put_str(&s, FIN | WS_OP_BINARY, "one");
    size_t first = s.n;
    put_str(&s, FIN | WS_OP_PING, "two");
    put_str(&s, FIN | WS_OP_TEXT, "three");
    uint8_t *p = exact(s.b, s.n);
    ws_reader_init(&r, &lim_plain);
    assert_int_equal(ws_reader_feed(&r, p, s.n, &ev), first);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_memory_equal(ev.data, "one", 3);
    size_t pos = first;
    pos += ws_reader_feed(&r, p + pos, s.n - pos, &ev);
    assert_int_equal(ev.kind, WS_EV_PING);
    pos += ws_reader_feed(&r, p + pos, s.n - pos, &ev);
    assert_int_equal(ev.kind, WS_EV_MESSAGE);
    assert_true(ev.text);
    assert_int_equal(pos, s.n);
    assert_int_equal(ws_reader_feed(&r, p + pos, 0, &ev), 0);
    assert_int_equal(ev.kind, WS_EV_NONE);
    ws_reader_free(&r);
    free(p);
    free(s.b);
}

/* ---- Close ---- */

static void test_close_parsing(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct run run;

    put_close(&s, 1000, "bye");
    run = one_run(&lim_plain, &s);
    assert_int_equal(run.n, 1);
    assert_rec(&run.ev[0], WS_EV_CLOSE, "bye");
    assert_int_equal(run.ev[0].code, 1000);
    run_free(&run);

    s.n = 0;
    put_close(&s, 4999, "");
    run = one_run(&lim_plain, &s);
    assert_rec(&run.ev[0], WS_EV_CLOSE, "");
    assert_int_equal(run.ev[0].code, 4999);
    run_free(&run);

    /* A 123-byte reason, in pieces (so from our buffer). */
    char reason[124];
    memset(reason, 'r', 123);
    reason[123] = 0;
    s.n = 0;
    put_close(&s, 1001, reason);
    feed_stream(&lim_plain, s.b, s.n, chunk_one, NULL, &run);
    assert_rec(&run.ev[0], WS_EV_CLOSE, reason);
    assert_true(run.ev[0].own);
    assert_int_equal(run.ev[0].code, 1001);
    assert_true(run.idle_at_end);
    run_free(&run);

    /* No payload: 1005. */
    s.n = 0;
    put_frame(&s, FIN | WS_OP_CLOSE, "", 0);
    run = one_run(&lim_plain, &s);
    assert_rec(&run.ev[0], WS_EV_CLOSE, "");
    assert_int_equal(run.ev[0].code, WS_CLOSE_NO_STATUS);
    run_free(&run);

    /* One byte: an error. */
    s.n = 0;
    put_frame(&s, FIN | WS_OP_CLOSE, "\x03", 1);
    expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "1-byte close");

    /* Codes that may not be sent. */
    const uint16_t bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s.n = 0;
        put_close(&s, bad[i], "x");
        expect_error(&lim_plain, &s, WS_CLOSE_PROTOCOL, "invalid close code");
    }
    /* Registered ones may. */
    const uint16_t good[] = { 1002, 1003, 1007, 1011, 1012, 1014, 3000 };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        s.n = 0;
        put_close(&s, good[i], "");
        run = one_run(&lim_plain, &s);
        assert_int_equal(run.ev[0].kind, WS_EV_CLOSE);
        assert_int_equal(run.ev[0].code, good[i]);
        run_free(&run);
    }
    free(s.b);
}

/* After CLOSE or ERROR nothing more is consumed, and the buffer goes. */
static void test_terminal_states(void **state)
{
    (void)state;
    struct sb s = { 0 };
    struct ws_reader r;
    struct ws_event ev;
    put_str(&s, WS_OP_BINARY, "frag");
    put_close(&s, 1000, "");
    put_str(&s, FIN | WS_OP_BINARY, "after");
    uint8_t *p = exact(s.b, s.n);
    ws_reader_init(&r, &lim_plain);
    size_t n = ws_reader_feed(&r, p, s.n, &ev);
    assert_int_equal(ev.kind, WS_EV_CLOSE);
    assert_true(n < s.n);
    assert_int_equal(ws_reader_feed(&r, p + n, s.n - n, &ev), 0);
    assert_int_equal(ev.kind, WS_EV_NONE);
    assert_null(r.buf);
    assert_true(ws_reader_idle(&r));
    ws_reader_free(&r);
    free(p);

    s.n = 0;
    put_str(&s, WS_OP_BINARY, "frag");
    put_str(&s, FIN | RSV2 | WS_OP_PING, "");
    put_str(&s, FIN | WS_OP_BINARY, "after");
    p = exact(s.b, s.n);
    ws_reader_init(&r, &lim_plain);
    n = ws_reader_feed(&r, p, s.n, &ev);
    assert_int_equal(ev.kind, WS_EV_ERROR);
    assert_null(r.buf); /* freed at once: an error carries no data */
    assert_int_equal(ws_reader_feed(&r, p + n, s.n - n, &ev), 0);
    assert_int_equal(ev.kind, WS_EV_NONE);
    ws_reader_free(&r);
    free(p);
    free(s.b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_examples),
        cmocka_unit_test(test_frame_header),
        cmocka_unit_test(test_close_frame),
        cmocka_unit_test(test_close_code_valid),
        cmocka_unit_test(test_binary_and_text),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_unmask_phases),
        cmocka_unit_test(test_empty_payloads),
        cmocka_unit_test(test_fragments_with_control_frames),
        cmocka_unit_test(test_close_between_fragments),
        cmocka_unit_test(test_many_small_fragments),
        cmocka_unit_test(test_split_every_boundary),
        cmocka_unit_test(test_random_pieces),
        cmocka_unit_test(test_rule_unmasked),
        cmocka_unit_test(test_rule_reserved_bits),
        cmocka_unit_test(test_rule_opcodes),
        cmocka_unit_test(test_rule_control_frames),
        cmocka_unit_test(test_rule_sequence),
        cmocka_unit_test(test_rule_64bit_top_bit),
        cmocka_unit_test(test_limit_single_frame),
        cmocka_unit_test(test_limit_fragments),
        cmocka_unit_test(test_buffer_lifetime),
        cmocka_unit_test(test_zero_copy_after_split_header),
        cmocka_unit_test(test_one_event_per_call),
        cmocka_unit_test(test_close_parsing),
        cmocka_unit_test(test_terminal_states),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
