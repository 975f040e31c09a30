/* fuzz_wsinflate: libFuzzer target for protocol/wsdeflate.c — arbitrary bytes as a
 * compressed message into ws_inflate_message with a small max_out, and arbitrary
 * bytes as a Sec-WebSocket-Extensions header into ws_deflate_negotiate.
 *
 * Input layout: byte 0 sets max_out (times 64: 0-16320 bytes); the rest is the
 * payload (an exactly-sized heap copy). Whatever inflates must stay under max_out,
 * and compressing it again must give it back. The contexts live across runs, as a
 * thread's do, so reuse after every kind of failure is exercised too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsdeflate.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

/* zlib's inflate state and window (~40 KB) besides the output buffer. */
#define STATE_MAX (48u * 1024)

static struct ws_deflate_ctx *inf_ctx, *def_ctx;

static void negotiate(const uint8_t *d, size_t n)
{
    char *header = malloc(n + 1), resp[WS_DEFLATE_RESPONSE_MAX];
    CHECK(header);
    memcpy(header, d, n);
    header[n] = 0;
    int rc = ws_deflate_negotiate(header, resp, sizeof resp);
    CHECK(rc == 0 || rc == 1);
    CHECK(rc == 1 ? strncmp(resp, "permessage-deflate; ", 20) == 0 : resp[0] == 0);
    struct ws_deflate_offer o;
    CHECK(ws_deflate_choose(header, &o) == rc);
    CHECK(o.accepted == (rc == 1));
    CHECK(o.server_max_window_bits == 0 || o.server_max_window_bits == 15);
    free(header);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!inf_ctx) {
        inf_ctx = ws_deflate_ctx_new();
        def_ctx = ws_deflate_ctx_new();
        CHECK(inf_ctx && def_ctx);
    }
    if (size < 1) return 0;
    size_t max_out = (size_t)data[0] * 64;
    size_t n = size - 1;
    uint8_t *in = malloc(n ? n : 1), *out = (uint8_t *)"untouched", *c, *back;
    size_t out_len = 0, clen, blen;
    CHECK(in);
    memcpy(in, data + 1, n);

    int rc = ws_inflate_message(inf_ctx, in, n, max_out, &out, &out_len);
    CHECK(rc == 0 || rc == WS_INFLATE_TOO_BIG || rc == WS_INFLATE_CORRUPT);
    CHECK(ws_deflate_ctx_peak(inf_ctx) <= 255u * 64 + 1 + STATE_MAX);
    if (rc == 0) {
        CHECK(out != NULL && out_len <= max_out);
        if (out_len) {
            volatile uint8_t sink = out[0] ^ out[out_len - 1];
            (void)sink;
        }
        /* A round trip through our own compressor gives the same bytes back. */
        CHECK(ws_deflate_message(def_ctx, out, out_len, &c, &clen) == 0);
        CHECK(ws_inflate_message(inf_ctx, c, clen, out_len, &back, &blen) == 0);
        CHECK(blen == out_len && (out_len == 0 || memcmp(back, out, out_len) == 0));
        free(back);
        free(c);
        free(out);
    } else {
        CHECK(out == NULL);
    }
    free(in);

    negotiate(data + 1, n);
    return 0;
}
