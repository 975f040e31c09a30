/* fuzz_codec: libFuzzer target for protocol/codec.c — every decoder on arbitrary
 * bytes, continuation reassembly fed arbitrary pieces, and the split/reassemble and
 * encode/decode round trips (which must give back exactly what went in).
 *
 * Input layout: byte 0 selects nothing (all paths run on every input); byte 1 picks a
 * split size, byte 2 a reassembly limit; the rest is the data. For reassembly the data
 * is cut into pieces whose lengths come from the data itself (one length byte, then
 * that many bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static void decoders(const uint8_t *d, size_t n)
{
    struct codec_init in;
    if (codec_decode_init(d, n, &in) == CODEC_OK) {
        CHECK(in.version == 2 || in.version == 3);
        CHECK(in.doc_id_len <= n && in.initial_data_len <= n);
        if (in.doc_id_len) CHECK(in.doc_id >= d && in.doc_id + in.doc_id_len <= d + n);
        if (in.initial_data_len)
            CHECK(in.initial_data >= d && in.initial_data + in.initial_data_len == d + n);
    }
    struct codec_append a;
    if (codec_decode_append(d, n, &a) == CODEC_OK && a.data_len)
        CHECK(a.data >= d && a.data + a.data_len == d + n);
    struct codec_set_key k;
    if (codec_decode_set_key(d, n, &k) == CODEC_OK) {
        if (k.name_len) CHECK(k.name >= d && k.name + k.name_len <= d + n);
        if (k.value_len) CHECK(k.value >= d && k.value + k.value_len <= d + n);
    }
    struct codec_broadcast b;
    if (codec_decode_broadcast(d, n, &b) == CODEC_OK && b.data_len)
        CHECK(b.data >= d && b.data + b.data_len <= d + n);
}

/* Arbitrary pieces into a reassembler: whatever it returns is within the limit, and
 * errors are sticky-free (the next message starts clean). */
static void reassembly(const uint8_t *d, size_t n, size_t limit)
{
    struct codec_reasm r;
    codec_reasm_init(&r, limit);
    size_t pos = 0;
    while (pos < n) {
        size_t len = d[pos++];
        if (len > n - pos) len = n - pos;
        const uint8_t *msg;
        size_t msg_len;
        int rc = codec_reasm_feed(&r, d + pos, len, &msg, &msg_len);
        CHECK(rc == 0 || rc == 1 || rc < 0);
        if (rc == 1) {
            CHECK(msg_len >= 2);
            CHECK(limit == 0 || msg_len <= limit);
            CHECK(msg[1] == 0 || msg == d + pos); /* complete alone, or reassembled */
            volatile uint8_t sink = msg[msg_len - 1];
            (void)sink;
        }
        pos += len;
    }
    codec_reasm_free(&r);
}

/* Split a message for a client, then reassemble it as a server would: the same
 * logical message (with byte 1 = 0) must come out, and no piece may exceed max. */
static void split_round_trip(const uint8_t *d, size_t n, uint32_t max)
{
    if (n < 2 || d[0] == CODEC_CONTINUATION) return;
    size_t count = codec_split_count(n, max);
    CHECK(count >= 1);
    size_t eff = max == 0 ? CODEC_DEFAULT_MAX_MESSAGE : (max < 3 ? 3 : max);
    struct codec_reasm r;
    codec_reasm_init(&r, 0);
    uint8_t *piece = malloc(eff);
    CHECK(piece);
    int done = 0;
    for (size_t i = 0; i < count; i++) {
        struct codec_piece p;
        codec_split_piece(d, n, max, i, &p);
        CHECK(2 + p.body_len <= eff);
        CHECK(p.hdr[1] == (i + 1 < count));
        memcpy(piece, p.hdr, 2);
        if (p.body_len) memcpy(piece + 2, p.body, p.body_len);
        const uint8_t *msg;
        size_t msg_len;
        int rc = codec_reasm_feed(&r, piece, 2 + p.body_len, &msg, &msg_len);
        if (i + 1 < count) {
            CHECK(rc == 0);
        } else {
            CHECK(rc == 1);
            CHECK(msg_len == n && msg[0] == d[0] && msg[1] == 0);
            CHECK(memcmp(msg + 2, d + 2, n - 2) == 0);
            done = 1;
        }
    }
    CHECK(done);
    free(piece);
    codec_reasm_free(&r);
}

/* Encoders give what the decoders (or the layout) read back. */
static void encode_round_trip(const uint8_t *d, size_t n)
{
    uint64_t off = n >= 8 ? be_get64(d) : n;
    for (int version = 2; version <= 3; version++) {
        uint8_t *buf = malloc(codec_append_size(version, n));
        CHECK(buf);
        size_t len = codec_encode_append(buf, version, off, d, n);
        CHECK(len == codec_append_size(version, n));
        struct codec_append a;
        CHECK(codec_decode_append(buf, len, &a) == CODEC_OK);
        CHECK(a.offset == off && a.data_len == n && (n == 0 || !memcmp(a.data, d, n)));
        free(buf);
    }
    uint8_t *buf = malloc(codec_broadcast_size(n));
    CHECK(buf);
    size_t len = codec_encode_broadcast(buf, d, n);
    struct codec_broadcast b;
    CHECK(codec_decode_broadcast(buf, len, &b) == CODEC_OK);
    CHECK(b.data_len == n && (n == 0 || !memcmp(b.data, d, n)));
    free(buf);
    size_t half = n / 2;
    buf = malloc(CODEC_KEY_INFO_HEADER + codec_key_info_entry_size(half, n - half));
    CHECK(buf);
    len = codec_key_info_begin(buf);
    len += codec_key_info_add(buf + len, (uint32_t)off, d, half, d + half, n - half);
    CHECK(len == CODEC_KEY_INFO_HEADER + codec_key_info_entry_size(half, n - half));
    CHECK(be_get32(buf + 6) == half && be_get32(buf + 10 + half) == n - half);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) {
        decoders(data, size);
        return 0;
    }
    uint32_t max = data[1] < 3 ? data[1] : (uint32_t)data[1] * 7;
    size_t limit = data[2] == 0 ? 0 : (size_t)data[2] * 16;
    const uint8_t *d = data + 3;
    size_t n = size - 3;
    decoders(d, n);
    reassembly(d, n, limit);
    split_round_trip(d, n, max);
    encode_round_trip(d, n);
    (void)codec_strerror((int)(int8_t)data[0]);
    return 0;
}
