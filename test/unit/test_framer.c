/* test_framer: unit tests for server/core/framer.c — the frames of queued messages as
 * iovecs: plain and split at maxMessageSize, resumed at any framed offset, control
 * frames as they are, and permessage-deflate pieces compressed once per message and
 * shared (the same bytes for every client that asks). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "framer.h"
#include "message.h"
#include "wsdeflate.h"
#include "wsframe.h"

static struct message *text_message(size_t len)
{
    struct message *m = message_new(len);
    assert_non_null(m);
    m->data[0] = 0x05;
    m->data[1] = 0;
    for (size_t i = 2; i < len; i++) m->data[i] = (uint8_t) "abcabcabd shape points "[i % 23];
    return m;
}

/* The bytes of f's iovecs, joined. */
static uint8_t *joined(const struct framer *f, size_t *n)
{
    *n = framer_bytes(f);
    uint8_t *out = malloc(*n ? *n : 1), *p = out;
    for (int i = 0; i < f->niov; i++) {
        memcpy(p, f->iov[i].iov_base, f->iov[i].iov_len);
        p += f->iov[i].iov_len;
    }
    return out;
}

/* Parses server frames (unmasked) back into their payloads, joined, checking RSV1. */
static size_t payloads(const uint8_t *w, size_t n, uint8_t *out, int *frames, int *rsv1)
{
    size_t pos = 0, got = 0;
    *frames = *rsv1 = 0;
    while (pos < n) {
        uint8_t b0 = w[pos], l = w[pos + 1] & 0x7F;
        size_t hl = 2;
        uint64_t len = l;
        if (l == 126) len = (uint64_t)w[pos + 2] << 8 | w[pos + 3], hl = 4;
        if (l == 127) {
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | w[pos + 2 + i];
            hl = 10;
        }
        assert_true(b0 & 0x80); /* FIN */
        if (b0 & 0x40) (*rsv1)++;
        memcpy(out + got, w + pos + hl, len);
        got += len;
        pos += hl + len;
        (*frames)++;
    }
    assert_int_equal(pos, n);
    return got;
}

static void test_plain_message_is_one_frame_over_its_bytes(void **state)
{
    (void)state;
    struct message *m = text_message(300);
    struct framer f;
    struct framer_client fc = { .max_message = 0 };
    assert_int_equal(framer_fill(&f, &m, 0, 1, 0, &fc), 0);
    assert_int_equal(f.nframes, 1);
    assert_ptr_equal(f.iov[1].iov_base, m->data); /* no copy of the message */
    size_t n;
    uint8_t *w = joined(&f, &n);
    assert_int_equal(n, 4 + 300);
    assert_int_equal(w[0], 0x82);
    assert_int_equal(w[1], 126);
    assert_memory_equal(w + 4, m->data, 300);
    free(w);
    message_unref(m);
}

static void test_split_and_resume_at_every_offset(void **state)
{
    (void)state;
    struct message *m = text_message(1000);
    struct framer_client fc = { .max_message = 300 };
    struct framer f;
    assert_int_equal(framer_fill(&f, &m, 0, 1, 0, &fc), 0);
    size_t total;
    uint8_t *all = joined(&f, &total);
    uint8_t body[2000];
    int frames, rsv1;
    size_t got = payloads(all, total, body, &frames, &rsv1);
    assert_int_equal(frames, (int)codec_split_count(1000, 300));
    assert_int_equal(rsv1, 0);
    assert_int_equal(got, 1000 + 2 * (frames - 1)); /* each continuation adds 2 bytes */
    for (size_t off = 0; off < total; off += 7) {   /* what is left after `off` bytes went */
        assert_int_equal(framer_fill(&f, &m, 0, 1, off, &fc), 0);
        size_t n;
        uint8_t *rest = joined(&f, &n);
        assert_int_equal(n, total - off);
        assert_memory_equal(rest, all + off, n);
        free(rest);
        size_t i = 9, o = 9;
        framer_advance(&f, n, &i, &o);
        assert_int_equal(i, 1);
        assert_int_equal(o, 0);
    }
    free(all);
    message_unref(m);
}

static void test_control_frames_go_as_they_are(void **state)
{
    (void)state;
    struct message *m = message_new(4);
    assert_non_null(m);
    m->len = ws_close_frame(m->data, 1000, NULL);
    m->raw_frame = true;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    struct framer_client fc = { .max_message = 3, .z = z, .min_compress = 0 };
    struct framer f;
    assert_int_equal(framer_fill(&f, &m, 0, 1, 0, &fc), 0);
    size_t n;
    uint8_t *w = joined(&f, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(w, "\x88\x02\x03\xe8", 4);
    free(w);
    ws_deflate_ctx_free(z);
    message_unref(m);
}

static void test_compressed_once_and_shared(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z1 = ws_deflate_ctx_new(), *z2 = ws_deflate_ctx_new();
    struct message *m = text_message(20000);
    struct framer_client a = { .max_message = 0, .z = z1, .min_compress = WS_DEFLATE_MIN_SIZE };
    struct framer_client b = { .max_message = 0, .z = z2, .min_compress = WS_DEFLATE_MIN_SIZE };
    struct framer fa, fb;
    assert_int_equal(framer_fill(&fa, &m, 0, 1, 0, &a), 0);
    assert_int_equal(framer_fill(&fb, &m, 0, 1, 0, &b), 0);
    /* Two loops, one compression: both point into the same shared variant. */
    assert_non_null(atomic_load(&m->variants));
    assert_null(atomic_load(&m->variants)->next);
    assert_ptr_equal(fa.iov[1].iov_base, fb.iov[1].iov_base);
    size_t n;
    uint8_t *w = joined(&fa, &n);
    assert_true(n < 20000 / 3);
    uint8_t body[40000];
    int frames, rsv1;
    size_t got = payloads(w, n, body, &frames, &rsv1);
    assert_int_equal(frames, 1);
    assert_int_equal(rsv1, 1);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(ws_inflate_message(z2, body, got, 1 << 20, &plain, &plain_len), 0);
    assert_int_equal(plain_len, 20000);
    assert_memory_equal(plain, m->data, 20000);
    free(plain);
    /* Another split size is another variant, built once too. */
    struct framer_client c = { .max_message = 4096, .z = z1, .min_compress = WS_DEFLATE_MIN_SIZE };
    assert_int_equal(framer_fill(&fa, &m, 0, 1, 0, &c), 0);
    assert_int_equal(framer_fill(&fb, &m, 0, 1, 0, &c), 0);
    assert_non_null(atomic_load(&m->variants)->next);
    assert_ptr_equal(fa.iov[1].iov_base, fb.iov[1].iov_base);
    free(w);
    message_unref(m);
    ws_deflate_ctx_free(z1);
    ws_deflate_ctx_free(z2);
}

static void test_small_or_incompressible_goes_plain(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    struct framer_client fc = { .max_message = 0, .z = z, .min_compress = WS_DEFLATE_MIN_SIZE };
    struct message *small = text_message(WS_DEFLATE_MIN_SIZE - 1);
    struct framer f;
    assert_int_equal(framer_fill(&f, &small, 0, 1, 0, &fc), 0);
    assert_int_equal(f.hdr[0][0], 0x82); /* RSV1 clear */
    assert_null(atomic_load(&small->variants));
    struct message *noise = message_new(4096);
    uint32_t x = 12345;
    for (size_t i = 0; i < 4096; i++)
        noise->data[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    assert_int_equal(framer_fill(&f, &noise, 0, 1, 0, &fc), 0);
    assert_int_equal(f.hdr[0][0], 0x82); /* not smaller compressed: sent as it is */
    size_t n;
    uint8_t *w = joined(&f, &n);
    assert_memory_equal(w + 4, noise->data, 4096);
    free(w);
    message_unref(small);
    message_unref(noise);
    ws_deflate_ctx_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_message_is_one_frame_over_its_bytes),
        cmocka_unit_test(test_split_and_resume_at_every_offset),
        cmocka_unit_test(test_control_frames_go_as_they_are),
        cmocka_unit_test(test_compressed_once_and_shared),
        cmocka_unit_test(test_small_or_incompressible_goes_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
