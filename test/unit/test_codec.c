/* test_codec: unit tests for protocol/codec.c — every message layout from hand-built
 * bytes, every malformed shape, splitting and reassembly.
 *
 * Decoders are always run on an exactly-sized heap copy of the input (see `exact`),
 * so under AddressSanitizer any read past the message is a crash, not a silent pass. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"

/* ---- Byte builder for hand-made messages ---- */

struct bb {
    uint8_t b[1024];
    size_t n;
};

static void bb_u8(struct bb *m, uint8_t v) { m->b[m->n++] = v; }
static void bb_u16(struct bb *m, uint16_t v)
{
    be_put16(m->b + m->n, v);
    m->n += 2;
}
static void bb_u32(struct bb *m, uint32_t v)
{
    be_put32(m->b + m->n, v);
    m->n += 4;
}
static void bb_u64(struct bb *m, uint64_t v)
{
    be_put64(m->b + m->n, v);
    m->n += 8;
}
static void bb_raw(struct bb *m, const void *p, size_t n)
{
    memcpy(m->b + m->n, p, n);
    m->n += n;
}
static void bb_str(struct bb *m, const char *s) { bb_raw(m, s, strlen(s)); }

/* Heap copy of exactly n bytes so that over-reads hit ASan's redzone. */
static uint8_t *exact(const uint8_t *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n) memcpy(p, src, n);
    return p;
}

#define assert_bytes(ptr, len, str)                                                                \
    do {                                                                                           \
        assert_int_equal((len), strlen(str));                                                      \
        assert_memory_equal((ptr), (str), strlen(str));                                            \
    } while (0)

/* Decoder signatures differ only in the out struct: wrap each to test prefixes
 * and wrong types generically. */
typedef int (*decode_fn)(const uint8_t *msg, size_t len);

static int dec_init(const uint8_t *m, size_t n)
{
    struct codec_init o;
    return codec_decode_init(m, n, &o);
}
static int dec_append(const uint8_t *m, size_t n)
{
    struct codec_append o;
    return codec_decode_append(m, n, &o);
}
static int dec_set_key(const uint8_t *m, size_t n)
{
    struct codec_set_key o;
    return codec_decode_set_key(m, n, &o);
}
static int dec_broadcast(const uint8_t *m, size_t n)
{
    struct codec_broadcast o;
    return codec_decode_broadcast(m, n, &o);
}

static int decode_exact(decode_fn fn, const uint8_t *src, size_t n)
{
    uint8_t *p = exact(src, n);
    int rc = fn(p, n);
    free(p);
    return rc;
}

/* Every prefix shorter than `need` must be CODEC_E_SHORT; every prefix from `need`
 * to the whole message must decode (trailing "rest" fields just get shorter). */
static void check_prefixes(decode_fn fn, const struct bb *m, size_t need)
{
    for (size_t n = 0; n <= m->n; n++) {
        int rc = decode_exact(fn, m->b, n);
        if (n < need) {
            if (rc != CODEC_E_SHORT)
                fail_msg("prefix %zu of %zu: got %d, want CODEC_E_SHORT", n, m->n, rc);
        } else if (rc != CODEC_OK) {
            fail_msg("prefix %zu of %zu: got %d, want CODEC_OK", n, m->n, rc);
        }
    }
}

/* ---- codec_strerror ---- */

static void test_strerror(void **state)
{
    (void)state;
    const int codes[] = { CODEC_OK,     CODEC_E_SHORT,   CODEC_E_VERSION,
                          CODEC_E_TYPE, CODEC_E_TOO_BIG, CODEC_E_SEQUENCE };
    const size_t k = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < k; i++) {
        const char *s = codec_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(s, codec_strerror(codes[j]));
    }
    assert_string_equal(codec_strerror(-99), "unknown codec error");
    assert_string_equal(codec_strerror(7), "unknown codec error");
    assert_string_equal(codec_strerror(CODEC_E_TOO_BIG), "message too big");
}

/* ---- INIT ---- */

static void build_init_v2(struct bb *m, const char *doc, const char *init)
{
    m->n = 0;
    bb_u8(m, 0x01);
    bb_u8(m, 0);
    bb_u16(m, 2);
    bb_u32(m, 0x00010203);
    bb_u8(m, 1);
    bb_u64(m, 0x0102030405060708ull);
    bb_u8(m, (uint8_t)strlen(doc));
    bb_str(m, doc);
    bb_str(m, init);
}

static void build_init_v3(struct bb *m, const char *doc, const char *init)
{
    m->n = 0;
    bb_u8(m, 0x01);
    bb_u8(m, 0);
    bb_u16(m, 3);
    bb_u32(m, 102400);
    bb_u8(m, 2);
    bb_u32(m, 0xDEADBEEF);
    bb_u64(m, 0xFFFFFFFFFFFFFFFEull);
    bb_u32(m, (uint32_t)strlen(doc));
    bb_str(m, doc);
    bb_str(m, init);
}

static void test_init_v2(void **state)
{
    (void)state;
    struct bb m;
    struct codec_init o;
    build_init_v2(&m, "doc-1", "hello");
    assert_int_equal(m.n, 18 + 5 + 5);
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.version, 2);
    assert_int_equal(o.max_message_size, 0x00010203);
    assert_int_equal(o.creation_mode, 1);
    assert_int_equal(o.generation, 0);
    assert_true(o.offset == 0x0102030405060708ull);
    assert_bytes(o.doc_id, o.doc_id_len, "doc-1");
    assert_ptr_equal(o.doc_id, p + 18);
    assert_bytes(o.initial_data, o.initial_data_len, "hello");
    assert_ptr_equal(o.initial_data, p + 23);
    free(p);
}

static void test_init_v3(void **state)
{
    (void)state;
    struct bb m;
    struct codec_init o;
    build_init_v3(&m, "abcdef", "xyz");
    assert_int_equal(m.n, 25 + 6 + 3);
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.version, 3);
    assert_int_equal(o.max_message_size, 102400);
    assert_int_equal(o.creation_mode, 2);
    assert_int_equal(o.generation, 0xDEADBEEF);
    assert_true(o.offset == 0xFFFFFFFFFFFFFFFEull);
    assert_bytes(o.doc_id, o.doc_id_len, "abcdef");
    assert_ptr_equal(o.doc_id, p + 25);
    assert_bytes(o.initial_data, o.initial_data_len, "xyz");
    free(p);
}

static void test_init_empty_fields(void **state)
{
    (void)state;
    struct bb m;
    struct codec_init o;

    build_init_v2(&m, "", "");
    assert_int_equal(m.n, 18);
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.doc_id_len, 0);
    assert_int_equal(o.initial_data_len, 0);
    free(p);

    build_init_v3(&m, "", "");
    assert_int_equal(m.n, 25);
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.doc_id_len, 0);
    assert_int_equal(o.initial_data_len, 0);
    free(p);

    /* docIdLength 0 with initial data: everything after is initialData. */
    build_init_v3(&m, "", "data");
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.doc_id_len, 0);
    assert_bytes(o.initial_data, o.initial_data_len, "data");
    free(p);
}

static void test_init_doc_id_length_past_end(void **state)
{
    (void)state;
    struct bb m;

    /* v2: docIdLength is byte 17. */
    build_init_v2(&m, "abc", "");
    m.b[17] = 4;
    assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_SHORT);
    m.b[17] = 0xFF;
    assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_SHORT);
    m.b[17] = 3;
    assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_OK);

    /* A 255-byte id that exactly fits is fine. */
    m.n = 17;
    bb_u8(&m, 0xFF);
    for (int i = 0; i < 255; i++) bb_u8(&m, 'a');
    struct codec_init o;
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.doc_id_len, 255);
    assert_int_equal(o.initial_data_len, 0);
    free(p);

    /* v3: docIdLength is bytes 21..24. */
    const uint32_t bad[] = {
        4, 5, 1000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        build_init_v3(&m, "abc", "");
        be_put32(m.b + 21, bad[i]);
        assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_SHORT);
    }
    /* Longer than the id alone but within initial data: the id eats into it. */
    build_init_v3(&m, "abc", "defg");
    be_put32(m.b + 21, 7);
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_bytes(o.doc_id, o.doc_id_len, "abcdefg");
    assert_int_equal(o.initial_data_len, 0);
    free(p);
}

static void test_init_version(void **state)
{
    (void)state;
    struct bb m;
    struct codec_init o;

    /* Anything but 00 02 is read with the v3 layout, then the version judged. */
    const uint16_t bad[] = { 0, 1, 4, 0x0102, 0x0200, 0x0203, 0xFFFF };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        build_init_v3(&m, "doc", "");
        be_put16(m.b + 2, bad[i]);
        assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_VERSION);
    }

    /* A v2 message claiming version 3 is read with the v3 layout; its bytes are too
     * few for it here. */
    build_init_v2(&m, "", "");
    be_put16(m.b + 2, 3);
    assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_SHORT);

    /* Bytes 2-3 == 00 02 select the v2 layout even if the body was built as v3:
     * the v2 offset is then bytes 9-16 and docIdLength byte 17 (0xFF, past the end). */
    build_init_v3(&m, "doc", "");
    be_put16(m.b + 2, 2);
    assert_int_equal(decode_exact(dec_init, m.b, m.n), CODEC_E_SHORT);
    m.b[17] = (uint8_t)(m.n - 18);
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_init(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.version, 2);
    assert_int_equal(o.generation, 0);
    assert_true(o.offset == 0xDEADBEEFFFFFFFFFull);
    assert_int_equal(o.doc_id_len, m.n - 18);
    assert_int_equal(o.initial_data_len, 0);
    free(p);
}

static void test_init_prefixes(void **state)
{
    (void)state;
    struct bb m;
    build_init_v2(&m, "document", "initial");
    check_prefixes(dec_init, &m, 18 + 8);
    build_init_v3(&m, "document", "initial");
    check_prefixes(dec_init, &m, 25 + 8);
    build_init_v2(&m, "", "");
    check_prefixes(dec_init, &m, 18);
    build_init_v3(&m, "", "");
    check_prefixes(dec_init, &m, 25);
}

static void test_init_prefix_initial_data_shrinks(void **state)
{
    (void)state;
    struct bb m;
    struct codec_init o;
    build_init_v3(&m, "d", "12345");
    for (size_t cut = 0; cut <= 5; cut++) {
        size_t n = m.n - cut;
        uint8_t *p = exact(m.b, n);
        assert_int_equal(codec_decode_init(p, n, &o), CODEC_OK);
        assert_int_equal(o.initial_data_len, 5 - cut);
        assert_memory_equal(o.initial_data, "12345", 5 - cut);
        free(p);
    }
}

/* ---- Wrong types ---- */

static void test_wrong_type(void **state)
{
    (void)state;
    struct {
        decode_fn fn;
        uint8_t ok1, ok2;
    } d[] = {
        { dec_init, 0x01, 0x01 },
        { dec_append, 0x02, 0x05 },
        { dec_set_key, 0x03, 0x03 },
        { dec_broadcast, 0x04, 0x04 },
    };
    uint8_t msg[64];
    memset(msg, 0, sizeof msg);
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        for (unsigned t = 0; t < 256; t++) {
            if (t == d[i].ok1 || t == d[i].ok2) continue;
            msg[0] = (uint8_t)t;
            assert_int_equal(decode_exact(d[i].fn, msg, sizeof msg), CODEC_E_TYPE);
            /* Too short for a header wins over the type. */
            assert_int_equal(decode_exact(d[i].fn, msg, 1), CODEC_E_SHORT);
        }
        assert_int_equal(decode_exact(d[i].fn, msg, 0), CODEC_E_SHORT);
    }
}

/* ---- APPEND ---- */

static void test_append_v2(void **state)
{
    (void)state;
    struct bb m = { .n = 0 };
    struct codec_append o;
    bb_u8(&m, 0x02);
    bb_u8(&m, 0);
    bb_u64(&m, 0x1122334455667788ull);
    bb_str(&m, "payload");
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_append(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.generation, 0);
    assert_true(o.offset == 0x1122334455667788ull);
    assert_bytes(o.data, o.data_len, "payload");
    assert_ptr_equal(o.data, p + 10);
    free(p);
    check_prefixes(dec_append, &m, 10);
}

static void test_append_v3(void **state)
{
    (void)state;
    struct bb m = { .n = 0 };
    struct codec_append o;
    bb_u8(&m, 0x05);
    bb_u8(&m, 0);
    bb_u32(&m, 0xCAFEBABE);
    bb_u64(&m, 42);
    bb_str(&m, "p");
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_append(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.generation, 0xCAFEBABE);
    assert_true(o.offset == 42);
    assert_bytes(o.data, o.data_len, "p");
    assert_ptr_equal(o.data, p + 14);
    free(p);
    check_prefixes(dec_append, &m, 14);

    /* Empty data is valid. */
    m.n = 14;
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_append(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.data_len, 0);
    free(p);

    /* The more byte does not affect decoding. */
    m.b[1] = 1;
    assert_int_equal(decode_exact(dec_append, m.b, m.n), CODEC_OK);
}

/* ---- SET KEY ---- */

static void build_set_key(struct bb *m, const char *name, const char *value)
{
    m->n = 0;
    bb_u8(m, 0x03);
    bb_u8(m, 0);
    bb_u16(m, 0xBEEF);
    bb_u8(m, 7);
    bb_u32(m, 0x01020304);
    bb_u32(m, 0xF1F2F3F4);
    bb_u32(m, (uint32_t)strlen(name));
    bb_str(m, name);
    bb_u32(m, (uint32_t)strlen(value));
    bb_str(m, value);
}

static void test_set_key(void **state)
{
    (void)state;
    struct bb m;
    struct codec_set_key o;
    build_set_key(&m, "admin:lock", "value!");
    assert_int_equal(m.n, 17 + 10 + 4 + 6);
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_set_key(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.request_id, 0xBEEF);
    assert_int_equal(o.lifetime, 7);
    assert_int_equal(o.old_version, 0x01020304);
    assert_int_equal(o.new_version, 0xF1F2F3F4);
    assert_bytes(o.name, o.name_len, "admin:lock");
    assert_ptr_equal(o.name, p + 17);
    assert_bytes(o.value, o.value_len, "value!");
    assert_ptr_equal(o.value, p + 17 + 10 + 4);
    free(p);

    build_set_key(&m, "", "");
    assert_int_equal(m.n, 21);
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_set_key(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.name_len, 0);
    assert_int_equal(o.value_len, 0);
    free(p);
}

static void test_set_key_trailing_ignored(void **state)
{
    (void)state;
    struct bb m;
    struct codec_set_key o;
    build_set_key(&m, "k", "v");
    bb_str(&m, "junk");
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_set_key(p, m.n, &o), CODEC_OK);
    assert_bytes(o.value, o.value_len, "v");
    free(p);
}

static void test_set_key_lengths_past_end(void **state)
{
    (void)state;
    struct bb m;
    const uint32_t bad[] = { 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFC, 0xFFFFFFFF };

    /* nameLength at 13; for "name"/"val" valueLength at 21. */
    build_set_key(&m, "name", "val");
    be_put32(m.b + 13, 5 + 4 + 3); /* one more than all that follows */
    assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_E_SHORT);
    /* nameLength that swallows the valueLength field entirely, leaving <4 bytes. */
    be_put32(m.b + 13, 4 + 2);
    assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_E_SHORT);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        be_put32(m.b + 13, bad[i]);
        assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_E_SHORT);
    }

    build_set_key(&m, "name", "val");
    be_put32(m.b + 21, 4);
    assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_E_SHORT);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        be_put32(m.b + 21, bad[i]);
        assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_E_SHORT);
    }
    be_put32(m.b + 21, 3);
    assert_int_equal(decode_exact(dec_set_key, m.b, m.n), CODEC_OK);
    /* Shorter valueLength than the rest: trailing ignored, still OK. */
    be_put32(m.b + 21, 1);
    struct codec_set_key o;
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_set_key(p, m.n, &o), CODEC_OK);
    assert_bytes(o.value, o.value_len, "v");
    free(p);
}

static void test_set_key_prefixes(void **state)
{
    (void)state;
    struct bb m;
    /* No "rest" field: every prefix short of the full message is malformed. */
    build_set_key(&m, "name", "value");
    check_prefixes(dec_set_key, &m, m.n);
    build_set_key(&m, "", "");
    check_prefixes(dec_set_key, &m, m.n);
}

/* ---- BROADCAST ---- */

static void build_broadcast(struct bb *m, uint32_t data_len, const char *data)
{
    m->n = 0;
    bb_u8(m, 0x04);
    bb_u8(m, 0);
    bb_u32(m, data_len);
    bb_str(m, data);
}

static void test_broadcast(void **state)
{
    (void)state;
    struct bb m;
    struct codec_broadcast o;

    build_broadcast(&m, 5, "hello");
    uint8_t *p = exact(m.b, m.n);
    assert_int_equal(codec_decode_broadcast(p, m.n, &o), CODEC_OK);
    assert_bytes(o.data, o.data_len, "hello");
    assert_ptr_equal(o.data, p + 6);
    free(p);

    /* dataLength shorter than the rest: only dataLength bytes. */
    build_broadcast(&m, 3, "hello");
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_broadcast(p, m.n, &o), CODEC_OK);
    assert_bytes(o.data, o.data_len, "hel");
    free(p);

    build_broadcast(&m, 0, "hello");
    p = exact(m.b, m.n);
    assert_int_equal(codec_decode_broadcast(p, m.n, &o), CODEC_OK);
    assert_int_equal(o.data_len, 0);
    free(p);

    build_broadcast(&m, 0, "");
    assert_int_equal(decode_exact(dec_broadcast, m.b, m.n), CODEC_OK);

    const uint32_t bad[] = { 6, 7, 100, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFA, 0xFFFFFFFF };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        build_broadcast(&m, bad[i], "hello");
        assert_int_equal(decode_exact(dec_broadcast, m.b, m.n), CODEC_E_SHORT);
    }
}

static void test_broadcast_prefixes(void **state)
{
    (void)state;
    struct bb m;
    build_broadcast(&m, 9, "broadcast");
    check_prefixes(dec_broadcast, &m, m.n);
}

/* ---- Encoders ---- */

static void test_encode_append(void **state)
{
    (void)state;
    uint8_t out[64];
    static const uint8_t v2[] = { 0x02, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 'a', 'b' };
    static const uint8_t v3[] = { 0x05, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 'a', 'b' };

    assert_int_equal(codec_append_size(2, 2), sizeof v2);
    memset(out, 0xAA, sizeof out);
    assert_int_equal(codec_encode_append(out, 2, 0x100, (const uint8_t *)"ab", 2), sizeof v2);
    assert_memory_equal(out, v2, sizeof v2);
    assert_int_equal(out[sizeof v2], 0xAA); /* nothing written past the end */

    assert_int_equal(codec_append_size(3, 2), sizeof v3);
    memset(out, 0xAA, sizeof out);
    assert_int_equal(codec_encode_append(out, 3, 0x8000000000000001ull, (const uint8_t *)"ab", 2),
                     sizeof v3);
    assert_memory_equal(out, v3, sizeof v3);
    assert_int_equal(out[sizeof v3], 0xAA);

    /* Empty data, NULL pointer allowed. */
    assert_int_equal(codec_append_size(2, 0), 10);
    assert_int_equal(codec_encode_append(out, 2, 7, NULL, 0), 10);
    assert_int_equal(codec_append_size(3, 0), 14);
    assert_int_equal(codec_encode_append(out, 3, 7, NULL, 0), 14);

    /* Round trip through the decoder for both versions. */
    for (int ver = 2; ver <= 3; ver++) {
        struct codec_append o;
        size_t n = codec_encode_append(out, ver, 123456789012345ull, (const uint8_t *)"xyz", 3);
        uint8_t *p = exact(out, n);
        assert_int_equal(codec_decode_append(p, n, &o), CODEC_OK);
        assert_int_equal(p[0], ver == 2 ? CODEC_APPEND_V2 : CODEC_APPEND_V3);
        assert_int_equal(o.generation, 0);
        assert_true(o.offset == 123456789012345ull);
        assert_bytes(o.data, o.data_len, "xyz");
        free(p);
    }
}

static void test_encode_broadcast(void **state)
{
    (void)state;
    uint8_t out[32];
    static const uint8_t want[] = { 0x04, 0, 0, 0, 0, 3, 'a', 'b', 'c' };
    assert_int_equal(codec_broadcast_size(3), sizeof want);
    assert_int_equal(codec_encode_broadcast(out, (const uint8_t *)"abc", 3), sizeof want);
    assert_memory_equal(out, want, sizeof want);

    struct codec_broadcast o;
    uint8_t *p = exact(out, sizeof want);
    assert_int_equal(codec_decode_broadcast(p, sizeof want, &o), CODEC_OK);
    assert_bytes(o.data, o.data_len, "abc");
    free(p);

    assert_int_equal(codec_broadcast_size(0), 6);
    assert_int_equal(codec_encode_broadcast(out, NULL, 0), 6);
    assert_memory_equal(out, "\x04\0\0\0\0\0", 6);
}

static void test_encode_error(void **state)
{
    (void)state;
    uint8_t out[32];
    static const uint8_t want[] = { 0x80, 0,   0,   3,   'i', 'n', 'v', 'a', 'l',
                                    'i',  'd', ' ', 'o', 'f', 'f', 's', 'e', 't' };
    assert_int_equal(codec_error_size(14), sizeof want);
    assert_int_equal(codec_encode_error(out, CODEC_ERR_INVALID_OFFSET, "invalid offset", 14),
                     sizeof want);
    assert_memory_equal(out, want, sizeof want);

    assert_int_equal(codec_error_size(0), 4);
    assert_int_equal(codec_encode_error(out, 0x1234, NULL, 0), 4);
    assert_memory_equal(out, "\x80\0\x12\x34", 4);
}

static void test_encode_acks(void **state)
{
    (void)state;
    uint8_t out[16];
    static const uint8_t ack[] = { 0x81, 0, 0, 1, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 };
    memset(out, 0xAA, sizeof out);
    assert_int_equal(codec_encode_ack(out, 1, 0x0102030405060708ull), CODEC_ACK_SIZE);
    assert_int_equal(sizeof ack, CODEC_ACK_SIZE);
    assert_memory_equal(out, ack, sizeof ack);
    assert_int_equal(out[CODEC_ACK_SIZE], 0xAA);

    static const uint8_t nack[] = { 0x81, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    assert_int_equal(codec_encode_ack(out, 0, 0), CODEC_ACK_SIZE);
    assert_memory_equal(out, nack, sizeof nack);

    static const uint8_t ska[] = { 0x83, 0, 0, 1, 0xBE, 0xEF };
    memset(out, 0xAA, sizeof out);
    assert_int_equal(codec_encode_set_key_ack(out, 1, 0xBEEF), CODEC_SET_KEY_ACK_SIZE);
    assert_int_equal(sizeof ska, CODEC_SET_KEY_ACK_SIZE);
    assert_memory_equal(out, ska, sizeof ska);
    assert_int_equal(out[CODEC_SET_KEY_ACK_SIZE], 0xAA);
}

static void test_encode_key_info(void **state)
{
    (void)state;
    uint8_t out[64];
    static const uint8_t want[] = {
        0x82, 0,   0,   0,    0,    5,    0,    0, 0, 2, 'k', '1', 0, 0, 0, 3,
        'a',  'b', 'c', 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1,   'n', 0, 0, 0, 0,
    };
    size_t n = codec_key_info_begin(out);
    assert_int_equal(n, CODEC_KEY_INFO_HEADER);
    assert_int_equal(codec_key_info_entry_size(2, 3), 12 + 5);
    n += codec_key_info_add(out + n, 5, (const uint8_t *)"k1", 2, (const uint8_t *)"abc", 3);
    assert_int_equal(n, 2 + 17);
    assert_int_equal(codec_key_info_entry_size(1, 0), 13);
    n += codec_key_info_add(out + n, 0xFFFFFFFF, (const uint8_t *)"n", 1, NULL, 0);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(out, want, sizeof want);

    /* An empty KEY INFORMATION is just the header. */
    assert_int_equal(codec_key_info_begin(out), 2);
    assert_memory_equal(out, "\x82\0", 2);
}

static void test_encode_sizes_saturate(void **state)
{
    (void)state;
    assert_true(codec_append_size(2, SIZE_MAX) == SIZE_MAX);
    assert_true(codec_append_size(3, SIZE_MAX - 13) == SIZE_MAX);
    assert_true(codec_append_size(3, SIZE_MAX - 14) == SIZE_MAX);
    assert_true(codec_append_size(3, SIZE_MAX - 15) == SIZE_MAX - 1);
    assert_true(codec_broadcast_size(SIZE_MAX - 5) == SIZE_MAX);
    assert_true(codec_error_size(SIZE_MAX) == SIZE_MAX);
    assert_true(codec_key_info_entry_size(SIZE_MAX / 2, SIZE_MAX / 2) == SIZE_MAX);
    assert_true(codec_key_info_entry_size(SIZE_MAX, 0) == SIZE_MAX);
    assert_true(codec_key_info_entry_size(0, SIZE_MAX - 11) == SIZE_MAX);
}

/* ---- Splitting ---- */

static size_t eff_max(uint32_t max)
{
    return max == 0 ? CODEC_DEFAULT_MAX_MESSAGE : max < 3 ? 3 : max;
}

/* Builds a message of len bytes: type 0x04, more 0, then a recognisable pattern. */
static uint8_t *pattern_msg(size_t len)
{
    uint8_t *m = malloc(len ? len : 1);
    assert_non_null(m);
    for (size_t i = 0; i < len; i++) m[i] = (uint8_t)(i * 7 + 3);
    if (len > 0) m[0] = CODEC_BROADCAST;
    if (len > 1) m[1] = 0;
    return m;
}

/* Splits msg, checks every piece's shape, feeds the pieces (each as its own
 * exactly-sized WebSocket message) through a reassembler and checks the result is
 * byte-identical to msg. */
static void split_and_reassemble(const uint8_t *msg, size_t len, uint32_t max,
                                 struct codec_reasm *r)
{
    size_t m = eff_max(max);
    size_t count = codec_split_count(len, max);
    size_t want_count = len <= m ? 1 : 1 + (len - m + (m - 3)) / (m - 2);
    size_t total = 0;
    const uint8_t *got = NULL;
    size_t got_len = 0;

    if (count != want_count)
        fail_msg("len %zu max %u: count %zu, want %zu", len, max, count, want_count);
    for (size_t i = 0; i < count; i++) {
        struct codec_piece pc;
        int last = i + 1 == count;
        codec_split_piece(msg, len, max, i, &pc);
        size_t wire = 2 + pc.body_len;
        assert_true(wire <= m);
        if (i == 0) {
            assert_int_equal(pc.hdr[0], msg[0]);
            assert_ptr_equal(pc.body, msg + 2);
            if (!last) assert_int_equal(wire, m);
        } else {
            assert_int_equal(pc.hdr[0], CODEC_CONTINUATION);
            assert_true(pc.body_len >= 1);
            if (!last) assert_int_equal(pc.body_len, m - 2);
        }
        assert_int_equal(pc.hdr[1], last ? 0 : 1);
        assert_ptr_equal(pc.body, msg + 2 + total);
        total += pc.body_len;

        uint8_t *ws = malloc(wire);
        assert_non_null(ws);
        memcpy(ws, pc.hdr, 2);
        if (pc.body_len) memcpy(ws + 2, pc.body, pc.body_len);
        int rc = codec_reasm_feed(r, ws, wire, &got, &got_len);
        if (last) {
            assert_int_equal(rc, 1);
            if (count == 1) assert_ptr_equal(got, ws); /* zero copy */
            assert_int_equal(got_len, len);
            assert_memory_equal(got, msg, len);
        } else {
            assert_int_equal(rc, 0);
        }
        free(ws);
    }
    assert_int_equal(total + 2, len);
}

static void test_split_counts(void **state)
{
    (void)state;
    /* Hand-computed: max 4 -> first 4 bytes, then 2 per continuation. */
    assert_int_equal(codec_split_count(4, 4), 1);
    assert_int_equal(codec_split_count(5, 4), 2);
    assert_int_equal(codec_split_count(6, 4), 2);
    assert_int_equal(codec_split_count(7, 4), 3);
    assert_int_equal(codec_split_count(10, 4), 4);
    /* max 0 -> 102400. */
    assert_int_equal(codec_split_count(2, 0), 1);
    assert_int_equal(codec_split_count(102400, 0), 1);
    assert_int_equal(codec_split_count(102401, 0), 2);
    assert_int_equal(codec_split_count(102400 + 102398, 0), 2);
    assert_int_equal(codec_split_count(102400 + 102398 + 1, 0), 3);
    /* max 1 and 2 behave as 3: one payload byte per continuation. */
    for (uint32_t mx = 1; mx <= 3; mx++) {
        assert_int_equal(codec_split_count(3, mx), 1);
        assert_int_equal(codec_split_count(4, mx), 2);
        assert_int_equal(codec_split_count(10, mx), 8);
    }
    /* Not a message: nothing to send. */
    assert_int_equal(codec_split_count(0, 0), 0);
    assert_int_equal(codec_split_count(1, 100), 0);
    /* Huge lengths do not overflow. */
    assert_true(codec_split_count(SIZE_MAX, 0xFFFFFFFF) >= 1);
    assert_true(codec_split_count(SIZE_MAX, 3) == SIZE_MAX - 2);
    assert_true(codec_split_count(SIZE_MAX, 4) == 1 + (SIZE_MAX - 4) / 2 + 1);
}

static void test_split_pieces_exact(void **state)
{
    (void)state;
    const uint8_t msg[] = { 0x82, 0, 'a', 'b', 'c', 'd', 'e', 'f', 'g' };
    struct codec_piece pc;

    /* max 5: [82 01 a b c] [FF 01 d e f] [FF 00 g] */
    assert_int_equal(codec_split_count(sizeof msg, 5), 3);
    codec_split_piece(msg, sizeof msg, 5, 0, &pc);
    assert_int_equal(pc.hdr[0], 0x82);
    assert_int_equal(pc.hdr[1], 1);
    assert_bytes(pc.body, pc.body_len, "abc");
    codec_split_piece(msg, sizeof msg, 5, 1, &pc);
    assert_int_equal(pc.hdr[0], 0xFF);
    assert_int_equal(pc.hdr[1], 1);
    assert_bytes(pc.body, pc.body_len, "def");
    codec_split_piece(msg, sizeof msg, 5, 2, &pc);
    assert_int_equal(pc.hdr[0], 0xFF);
    assert_int_equal(pc.hdr[1], 0);
    assert_bytes(pc.body, pc.body_len, "g");

    /* Fits: one piece with byte 1 = 0 even if the source had it set. */
    const uint8_t msg2[] = { 0x04, 1, 'x' };
    assert_int_equal(codec_split_count(sizeof msg2, 0), 1);
    codec_split_piece(msg2, sizeof msg2, 0, 0, &pc);
    assert_int_equal(pc.hdr[0], 0x04);
    assert_int_equal(pc.hdr[1], 0);
    assert_bytes(pc.body, pc.body_len, "x");

    /* Exactly-2-byte message: header only. */
    codec_split_piece(msg2, 2, 0, 0, &pc);
    assert_int_equal(pc.hdr[0], 0x04);
    assert_int_equal(pc.hdr[1], 0);
    assert_int_equal(pc.body_len, 0);

    /* Index out of range: empty, no read. */
    codec_split_piece(msg, sizeof msg, 5, 3, &pc);
    assert_int_equal(pc.body_len, 0);
    assert_null(pc.body);
    codec_split_piece(msg, 1, 5, 0, &pc);
    assert_int_equal(pc.body_len, 0);
    assert_null(pc.body);
}

static void test_split_reassemble_many(void **state)
{
    (void)state;
    const uint32_t maxes[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 17, 100, 255, 256, 1000, 4096 };
    struct codec_reasm r;
    codec_reasm_init(&r, 0);
    for (size_t mi = 0; mi < sizeof maxes / sizeof maxes[0]; mi++) {
        for (size_t len = 2; len <= 300; len++) {
            uint8_t *msg = pattern_msg(len);
            split_and_reassemble(msg, len, maxes[mi], &r);
            free(msg);
        }
    }
    codec_reasm_free(&r);
}

static void test_split_reassemble_large(void **state)
{
    (void)state;
    const size_t lens[] = { 102399, 102400, 102401, 204798, 204799, 204800, 250000, 1000003 };
    const uint32_t maxes[] = { 0, 3, 4096, 102400, 65536, 0xFFFFFFFF };
    struct codec_reasm r;
    codec_reasm_init(&r, 2000000);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint8_t *msg = pattern_msg(lens[li]);
        for (size_t mi = 0; mi < sizeof maxes / sizeof maxes[0]; mi++) {
            /* max 3 means one byte per continuation: keep that case small. */
            if (maxes[mi] == 3 && lens[li] > 110000) continue;
            split_and_reassemble(msg, lens[li], maxes[mi], &r);
        }
        free(msg);
    }
    codec_reasm_free(&r);
}

/* Encoder -> split -> reassemble -> decoder, the whole server->client->server path. */
static void test_encode_split_decode(void **state)
{
    (void)state;
    const uint32_t maxes[] = { 0, 3, 7, 20, 64 };
    struct codec_reasm r;
    codec_reasm_init(&r, 0);
    uint8_t data[200], out[300];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(255 - i);
    for (size_t mi = 0; mi < sizeof maxes / sizeof maxes[0]; mi++) {
        for (size_t dl = 0; dl <= sizeof data; dl += 13) {
            size_t n = codec_encode_append(out, 3, dl * 1000, data, dl);
            split_and_reassemble(out, n, maxes[mi], &r);
            struct codec_append a;
            assert_int_equal(codec_decode_append(out, n, &a), CODEC_OK);
            assert_true(a.offset == dl * 1000);
            assert_int_equal(a.data_len, dl);
            assert_memory_equal(a.data, data, dl);

            n = codec_encode_broadcast(out, data, dl);
            split_and_reassemble(out, n, maxes[mi], &r);
            struct codec_broadcast b;
            assert_int_equal(codec_decode_broadcast(out, n, &b), CODEC_OK);
            assert_int_equal(b.data_len, dl);
        }
    }
    codec_reasm_free(&r);
}

/* ---- Reassembly ---- */

static void test_reasm_single_zero_copy(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg = NULL;
    size_t n = 0;
    const uint8_t m[] = { 0x04, 0, 0, 0, 0, 1, 'x' };
    codec_reasm_init(&r, 0);
    assert_int_equal(codec_reasm_feed(&r, m, sizeof m, &msg, &n), 1);
    assert_ptr_equal(msg, m);
    assert_int_equal(n, sizeof m);
    assert_null(r.buf); /* nothing allocated for a whole message */
    /* Header-only message is complete too. */
    assert_int_equal(codec_reasm_feed(&r, m, 2, &msg, &n), 1);
    assert_int_equal(n, 2);
    codec_reasm_free(&r);
}

static void test_reasm_split(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg = NULL;
    size_t n = 0;
    const uint8_t a[] = { 0x03, 1, 'a', 'b' };
    const uint8_t b[] = { 0xFF, 1, 'c' };
    const uint8_t c[] = { 0xFF, 1 };
    const uint8_t d[] = { 0xFF, 0, 'd', 'e' };
    codec_reasm_init(&r, 0);
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    assert_int_equal(r.open, 1);
    assert_int_equal(codec_reasm_feed(&r, b, sizeof b, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, c, sizeof c, &msg, &n), 0); /* empty continuation */
    assert_int_equal(codec_reasm_feed(&r, d, sizeof d, &msg, &n), 1);
    assert_ptr_equal(msg, r.buf);
    assert_int_equal(n, 7);
    assert_memory_equal(msg, "\x03\0abcde", 7);
    assert_int_equal(r.open, 0);

    /* The next message starts fresh, reusing the buffer. */
    uint8_t *kept = r.buf;
    const uint8_t e[] = { 0x04, 1, 'z' };
    const uint8_t f[] = { 0xFF, 0 };
    assert_int_equal(codec_reasm_feed(&r, e, sizeof e, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, f, sizeof f, &msg, &n), 1);
    assert_int_equal(n, 3);
    assert_memory_equal(msg, "\x04\0z", 3);
    assert_ptr_equal(r.buf, kept);

    /* After a buffered message, a whole one is zero copy and leaves no state. */
    const uint8_t g[] = { 0x02, 0, 1, 2, 3 };
    assert_int_equal(codec_reasm_feed(&r, g, sizeof g, &msg, &n), 1);
    assert_ptr_equal(msg, g);
    assert_int_equal(n, sizeof g);
    assert_int_equal(r.len, 0);
    codec_reasm_free(&r);
    assert_null(r.buf);
    assert_int_equal(r.cap, 0);
}

static void test_reasm_more_nonzero(void **state)
{
    (void)state;
    /* Any non-zero more byte means "more follows". */
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    const uint8_t a[] = { 0x04, 2, 'a' };
    const uint8_t b[] = { 0xFF, 0x80, 'b' };
    const uint8_t c[] = { 0xFF, 0, 'c' };
    codec_reasm_init(&r, 0);
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, b, sizeof b, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, c, sizeof c, &msg, &n), 1);
    assert_memory_equal(msg, "\x04\0abc", 5);
    codec_reasm_free(&r);
}

static void test_reasm_short(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    const uint8_t one[] = { 0x04 };
    codec_reasm_init(&r, 0);
    assert_int_equal(codec_reasm_feed(&r, one, 0, &msg, &n), CODEC_E_SHORT);
    assert_int_equal(codec_reasm_feed(&r, one, 1, &msg, &n), CODEC_E_SHORT);
    const uint8_t ff[] = { 0xFF };
    assert_int_equal(codec_reasm_feed(&r, ff, 1, &msg, &n), CODEC_E_SHORT);

    /* Also while a message is open; the partial message is dropped. */
    const uint8_t a[] = { 0x04, 1, 'a' };
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, ff, 1, &msg, &n), CODEC_E_SHORT);
    assert_int_equal(r.open, 0);
    const uint8_t c[] = { 0xFF, 0, 'c' };
    assert_int_equal(codec_reasm_feed(&r, c, sizeof c, &msg, &n), CODEC_E_SEQUENCE);
    codec_reasm_free(&r);
}

static void test_reasm_sequence(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    const uint8_t cont_last[] = { 0xFF, 0, 'x' };
    const uint8_t cont_more[] = { 0xFF, 1, 'x' };
    const uint8_t start[] = { 0x04, 1, 'a' };
    const uint8_t whole[] = { 0x04, 0, 'b' };
    codec_reasm_init(&r, 0);

    /* Continuation without a start, either more value. */
    assert_int_equal(codec_reasm_feed(&r, cont_last, sizeof cont_last, &msg, &n), CODEC_E_SEQUENCE);
    assert_int_equal(codec_reasm_feed(&r, cont_more, sizeof cont_more, &msg, &n), CODEC_E_SEQUENCE);
    assert_int_equal(codec_reasm_feed(&r, cont_last, 2, &msg, &n), CODEC_E_SEQUENCE);

    /* A new start while one is open. */
    assert_int_equal(codec_reasm_feed(&r, start, sizeof start, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, start, sizeof start, &msg, &n), CODEC_E_SEQUENCE);
    assert_int_equal(r.open, 0);

    /* A whole message while one is open. */
    assert_int_equal(codec_reasm_feed(&r, start, sizeof start, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, whole, sizeof whole, &msg, &n), CODEC_E_SEQUENCE);

    /* Continuation right after a completed message. */
    assert_int_equal(codec_reasm_feed(&r, start, sizeof start, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, cont_last, sizeof cont_last, &msg, &n), 1);
    assert_int_equal(codec_reasm_feed(&r, cont_last, sizeof cont_last, &msg, &n), CODEC_E_SEQUENCE);

    /* After an error the reassembler is usable again. */
    assert_int_equal(codec_reasm_feed(&r, whole, sizeof whole, &msg, &n), 1);
    assert_ptr_equal(msg, whole);
    codec_reasm_free(&r);
}

static void test_reasm_limit(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    uint8_t big[16];
    memset(big, 'q', sizeof big);
    big[0] = 0x04;

    codec_reasm_init(&r, 10);
    big[1] = 0;
    assert_int_equal(codec_reasm_feed(&r, big, 10, &msg, &n), 1);
    assert_int_equal(codec_reasm_feed(&r, big, 11, &msg, &n), CODEC_E_TOO_BIG);
    big[1] = 1;
    assert_int_equal(codec_reasm_feed(&r, big, 11, &msg, &n), CODEC_E_TOO_BIG);
    assert_int_equal(r.open, 0);

    /* Split: 6 + 4 = 10 fits exactly, one more byte does not. */
    const uint8_t c4[] = { 0xFF, 0, 'a', 'b', 'c', 'd' };
    const uint8_t c5[] = { 0xFF, 0, 'a', 'b', 'c', 'd', 'e' };
    assert_int_equal(codec_reasm_feed(&r, big, 6, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, c4, sizeof c4, &msg, &n), 1);
    assert_int_equal(n, 10);
    assert_true(r.cap <= 10); /* growth is capped at the limit */
    assert_int_equal(codec_reasm_feed(&r, big, 6, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, c5, sizeof c5, &msg, &n), CODEC_E_TOO_BIG);
    assert_int_equal(r.open, 0);
    /* Many small continuations crossing the limit. */
    const uint8_t c1[] = { 0xFF, 1, 'z' };
    assert_int_equal(codec_reasm_feed(&r, big, 6, &msg, &n), 0);
    for (int i = 0; i < 4; i++) assert_int_equal(codec_reasm_feed(&r, c1, sizeof c1, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, c1, sizeof c1, &msg, &n), CODEC_E_TOO_BIG);
    codec_reasm_free(&r);

    /* Limit smaller than any message. */
    codec_reasm_init(&r, 1);
    big[1] = 0;
    assert_int_equal(codec_reasm_feed(&r, big, 2, &msg, &n), CODEC_E_TOO_BIG);
    codec_reasm_free(&r);

    /* Limit 0 means none. */
    codec_reasm_init(&r, 0);
    uint8_t *huge = pattern_msg(3 << 20);
    huge[1] = 0;
    assert_int_equal(codec_reasm_feed(&r, huge, 3 << 20, &msg, &n), 1);
    assert_int_equal(n, 3 << 20);
    free(huge);
    codec_reasm_free(&r);
}

static void test_reasm_size_overflow(void **state)
{
    (void)state;
    /* Fake an open message whose length is near SIZE_MAX: appending must be refused
     * before any arithmetic wraps or allocation happens. */
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    const uint8_t c[] = { 0xFF, 1, 'a', 'b' };
    codec_reasm_init(&r, 0);
    r.buf = malloc(16);
    assert_non_null(r.buf);
    r.cap = 16;
    r.open = 1;
    r.len = SIZE_MAX - 1;
    assert_int_equal(codec_reasm_feed(&r, c, sizeof c, &msg, &n), CODEC_E_TOO_BIG);
    assert_int_equal(r.open, 0);
    assert_int_equal(r.len, 0);

    /* With a limit, lengths between the limit and SIZE_MAX are refused too. */
    r.limit = 1000;
    r.open = 1;
    r.len = 999;
    assert_int_equal(codec_reasm_feed(&r, c, sizeof c, &msg, &n), CODEC_E_TOO_BIG);
    codec_reasm_free(&r);
}

static void test_reasm_releases_large_buffer(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    size_t big = (2u << 20) + 5;
    uint8_t *m = pattern_msg(big);
    codec_reasm_init(&r, 0);

    /* Send as first half with more=1, then a final continuation. */
    size_t half = big / 2;
    m[1] = 1;
    assert_int_equal(codec_reasm_feed(&r, m, half, &msg, &n), 0);
    uint8_t *rest = malloc(big - half + 2);
    assert_non_null(rest);
    rest[0] = 0xFF;
    rest[1] = 0;
    memcpy(rest + 2, m + half, big - half);
    assert_int_equal(codec_reasm_feed(&r, rest, big - half + 2, &msg, &n), 1);
    assert_int_equal(n, big);
    m[1] = 0;
    assert_memory_equal(msg, m, big);
    assert_true(r.cap >= big);

    /* The next feed releases the large buffer. */
    const uint8_t small[] = { 0x04, 0, 'x' };
    assert_int_equal(codec_reasm_feed(&r, small, sizeof small, &msg, &n), 1);
    assert_null(r.buf);
    assert_int_equal(r.cap, 0);

    /* A small buffer is kept across messages. */
    const uint8_t a[] = { 0x04, 1, 'a' };
    const uint8_t b[] = { 0xFF, 0, 'b' };
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, b, sizeof b, &msg, &n), 1);
    assert_non_null(r.buf);
    size_t cap = r.cap;
    assert_int_equal(codec_reasm_feed(&r, small, sizeof small, &msg, &n), 1);
    assert_non_null(r.buf);
    assert_int_equal(r.cap, cap);

    free(rest);
    free(m);
    codec_reasm_free(&r);
}

static void test_reasm_free_reuse(void **state)
{
    (void)state;
    struct codec_reasm r;
    const uint8_t *msg;
    size_t n;
    const uint8_t a[] = { 0x04, 1, 'a' };
    const uint8_t b[] = { 0xFF, 0, 'b' };
    codec_reasm_init(&r, 50);
    assert_int_equal(r.limit, 50);
    assert_null(r.buf);
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    codec_reasm_free(&r); /* mid-message */
    assert_null(r.buf);
    assert_int_equal(r.open, 0);
    assert_int_equal(r.limit, 50);
    assert_int_equal(codec_reasm_feed(&r, b, sizeof b, &msg, &n), CODEC_E_SEQUENCE);
    assert_int_equal(codec_reasm_feed(&r, a, sizeof a, &msg, &n), 0);
    assert_int_equal(codec_reasm_feed(&r, b, sizeof b, &msg, &n), 1);
    assert_memory_equal(msg, "\x04\0ab", 4);
    codec_reasm_free(&r);
    codec_reasm_free(&r); /* idempotent */
}

/* Reassembled client messages decode like whole ones: INIT split at every point. */
static void test_reasm_then_decode_init(void **state)
{
    (void)state;
    struct bb m;
    build_init_v3(&m, "some-document", "initial-contents");
    for (size_t cut = 2; cut < m.n; cut++) {
        struct codec_reasm r;
        const uint8_t *msg;
        size_t n;
        uint8_t first[sizeof m.b], second[sizeof m.b];
        memcpy(first, m.b, cut);
        first[1] = 1;
        second[0] = 0xFF;
        second[1] = 0;
        memcpy(second + 2, m.b + cut, m.n - cut);
        codec_reasm_init(&r, 0);
        assert_int_equal(codec_reasm_feed(&r, first, cut, &msg, &n), 0);
        assert_int_equal(codec_reasm_feed(&r, second, m.n - cut + 2, &msg, &n), 1);
        assert_int_equal(n, m.n);
        struct codec_init o;
        assert_int_equal(codec_decode_init(msg, n, &o), CODEC_OK);
        assert_bytes(o.doc_id, o.doc_id_len, "some-document");
        assert_bytes(o.initial_data, o.initial_data_len, "initial-contents");
        codec_reasm_free(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_init_v2),
        cmocka_unit_test(test_init_v3),
        cmocka_unit_test(test_init_empty_fields),
        cmocka_unit_test(test_init_doc_id_length_past_end),
        cmocka_unit_test(test_init_version),
        cmocka_unit_test(test_init_prefixes),
        cmocka_unit_test(test_init_prefix_initial_data_shrinks),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_append_v2),
        cmocka_unit_test(test_append_v3),
        cmocka_unit_test(test_set_key),
        cmocka_unit_test(test_set_key_trailing_ignored),
        cmocka_unit_test(test_set_key_lengths_past_end),
        cmocka_unit_test(test_set_key_prefixes),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_broadcast_prefixes),
        cmocka_unit_test(test_encode_append),
        cmocka_unit_test(test_encode_broadcast),
        cmocka_unit_test(test_encode_error),
        cmocka_unit_test(test_encode_acks),
        cmocka_unit_test(test_encode_key_info),
        cmocka_unit_test(test_encode_sizes_saturate),
        cmocka_unit_test(test_split_counts),
        cmocka_unit_test(test_split_pieces_exact),
        cmocka_unit_test(test_split_reassemble_many),
        cmocka_unit_test(test_split_reassemble_large),
        cmocka_unit_test(test_encode_split_decode),
        cmocka_unit_test(test_reasm_single_zero_copy),
        cmocka_unit_test(test_reasm_split),
        cmocka_unit_test(test_reasm_more_nonzero),
        cmocka_unit_test(test_reasm_short),
        cmocka_unit_test(test_reasm_sequence),
        cmocka_unit_test(test_reasm_limit),
        cmocka_unit_test(test_reasm_size_overflow),
        cmocka_unit_test(test_reasm_releases_large_buffer),
        cmocka_unit_test(test_reasm_free_reuse),
        cmocka_unit_test(test_reasm_then_decode_init),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
