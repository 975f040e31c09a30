/* test_wsdeflate: unit tests for protocol/wsdeflate.c — negotiation of the
 * Sec-WebSocket-Extensions header (browsers' offers, several offers, window bits,
 * unknown, repeated and malformed parameters, quoting, case), the RFC 7692 §7.2.3
 * examples, streams made by Python's zlib with other settings, round trips,
 * compression bombs (memory stays bounded) and corrupt streams.
 *
 * Compressed inputs are always passed as exactly-sized heap copies, so under
 * AddressSanitizer a read past the payload is a crash. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wsdeflate.h"

#define ANSWER "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

/* ---- Negotiation ---- */

static void expect_accept(const char *header, const char *want)
{
    char resp[WS_DEFLATE_RESPONSE_MAX];
    memset(resp, 'x', sizeof resp);
    int rc = ws_deflate_negotiate(header, resp, sizeof resp);
    if (rc != 1) fail_msg("refused: %s", header);
    assert_string_equal(resp, want);
}

static void expect_refuse(const char *header)
{
    char resp[WS_DEFLATE_RESPONSE_MAX];
    memset(resp, 'x', sizeof resp);
    int rc = ws_deflate_negotiate(header, resp, sizeof resp);
    if (rc != 0) fail_msg("accepted: %s (answer %s)", header, resp);
    assert_string_equal(resp, "");
}

static void test_negotiate_browsers(void **state)
{
    (void)state;
    /* Chrome and Edge, Firefox, Safari, Python's websockets. */
    expect_accept("permessage-deflate; client_max_window_bits", ANSWER);
    expect_accept("permessage-deflate", ANSWER);
    expect_accept("permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                  ANSWER);
    expect_accept("permessage-deflate; server_max_window_bits=15; client_max_window_bits",
                  ANSWER "; server_max_window_bits=15");
}

static void test_negotiate_window_bits(void **state)
{
    (void)state;
    /* client_max_window_bits, with or without a value: accepted, nothing to answer. */
    expect_accept("permessage-deflate; client_max_window_bits=10", ANSWER);
    expect_accept("permessage-deflate; client_max_window_bits=8", ANSWER);
    expect_accept("permessage-deflate; client_max_window_bits=15", ANSWER);
    expect_accept("permessage-deflate; client_max_window_bits=\"12\"", ANSWER);
    expect_refuse("permessage-deflate; client_max_window_bits=16");
    expect_refuse("permessage-deflate; client_max_window_bits=7");
    expect_refuse("permessage-deflate; client_max_window_bits=08");
    expect_refuse("permessage-deflate; client_max_window_bits=0x9");
    expect_refuse("permessage-deflate; client_max_window_bits=");
    expect_refuse("permessage-deflate; client_max_window_bits=\"\"");
    expect_refuse("permessage-deflate; client_max_window_bits=123456789012345");
    /* server_max_window_bits: only 15 can be honoured, and needs a value. */
    expect_accept("permessage-deflate; server_max_window_bits=15",
                  ANSWER "; server_max_window_bits=15");
    expect_accept("permessage-deflate; server_max_window_bits=\"15\"",
                  ANSWER "; server_max_window_bits=15");
    expect_refuse("permessage-deflate; server_max_window_bits=10");
    expect_refuse("permessage-deflate; server_max_window_bits=8");
    expect_refuse("permessage-deflate; server_max_window_bits=14");
    expect_refuse("permessage-deflate; server_max_window_bits");
    expect_refuse("permessage-deflate; server_max_window_bits=16");
    /* A refused offer falls back to the next one. */
    expect_accept("permessage-deflate; server_max_window_bits=10; client_max_window_bits, "
                  "permessage-deflate; client_max_window_bits",
                  ANSWER);
}

static void test_negotiate_params(void **state)
{
    (void)state;
    /* Unknown parameters refuse the offer. */
    expect_refuse("permessage-deflate; foo");
    expect_refuse("permessage-deflate; foo=bar");
    expect_refuse("permessage-deflate; client_max_window_bits; mystery=1");
    /* Repeated ones too. */
    expect_refuse("permessage-deflate; client_no_context_takeover; client_no_context_takeover");
    expect_refuse("permessage-deflate; client_max_window_bits; client_max_window_bits=10");
    expect_refuse("permessage-deflate; server_max_window_bits=15; server_max_window_bits=15");
    /* Values where none belongs. */
    expect_refuse("permessage-deflate; server_no_context_takeover=1");
    expect_refuse("permessage-deflate; client_no_context_takeover=\"\"");
    /* Malformed: empty parameter, trailing semicolon, stray characters. */
    expect_refuse("permessage-deflate;");
    expect_refuse("permessage-deflate; ; client_max_window_bits");
    expect_refuse("permessage-deflate client_max_window_bits");
    expect_refuse("permessage-deflate; =15");
    expect_refuse("permessage-deflate; client_max_window_bits=1 0");
    expect_refuse("permessage-deflate; client_max_window_bits=\"10");
    expect_refuse("permessage-deflate; client_max_window_bits=\"1 0\"");
    expect_refuse("permessage-deflate/2");
    expect_refuse("\"permessage-deflate\"");
}

static void test_negotiate_lists(void **state)
{
    (void)state;
    /* Not offered. */
    expect_refuse(NULL);
    expect_refuse("");
    expect_refuse("   ");
    expect_refuse("x-webkit-deflate-frame");
    expect_refuse("permessage-deflatex");
    expect_refuse("deflate-frame, x-webkit-deflate-frame; no_context_takeover");
    /* Among others, with empty elements, whitespace and tabs. */
    expect_accept("foo, permessage-deflate", ANSWER);
    expect_accept(", ,permessage-deflate,", ANSWER);
    expect_accept("  permessage-deflate ;\tclient_no_context_takeover\t", ANSWER);
    expect_accept("permessage-deflate;client_max_window_bits=9;server_no_context_takeover", ANSWER);
    /* A comma inside another extension's quoted value does not split it, and its
     * escapes are skipped over. */
    expect_accept("foo; bar=\"a, b\", permessage-deflate", ANSWER);
    expect_accept("foo; bar=\"a\\\", permessage-deflate; x\", permessage-deflate", ANSWER);
    expect_refuse("foo; bar=\"a, permessage-deflate");
    /* A malformed element spoils only itself. */
    expect_accept("permessage-deflate; client_max_window_bits=\"1\"0, permessage-deflate", ANSWER);
    expect_accept("permessage-deflate;;, permessage-deflate", ANSWER);
    /* Case does not matter in names. */
    expect_accept("PerMessage-Deflate; Client_Max_Window_Bits", ANSWER);
    expect_accept("PERMESSAGE-DEFLATE; SERVER_MAX_WINDOW_BITS=15",
                  ANSWER "; server_max_window_bits=15");
    /* Escaped characters in a quoted value are unescaped. */
    expect_accept("permessage-deflate; client_max_window_bits=\"1\\5\"", ANSWER);
    expect_refuse("permessage-deflate; client_max_window_bits=\"1\\6\"");
}

static void test_negotiate_struct_and_room(void **state)
{
    (void)state;
    struct ws_deflate_offer o;
    char resp[WS_DEFLATE_RESPONSE_MAX];

    assert_int_equal(ws_deflate_choose("permessage-deflate; client_max_window_bits", &o), 1);
    assert_true(o.accepted);
    assert_int_equal(o.client_max_window_bits, 0);
    assert_int_equal(o.server_max_window_bits, 0);
    assert_int_equal(ws_deflate_choose("foo; server_max_window_bits=15, permessage-deflate; "
                                       "server_max_window_bits=15",
                                       &o),
                     1);
    assert_int_equal(o.server_max_window_bits, 15);
    assert_int_equal(ws_deflate_choose("permessage-deflate; foo", &o), 0);
    assert_false(o.accepted);
    assert_int_equal(ws_deflate_response(&o, resp, sizeof resp), 0);
    assert_string_equal(resp, "");

    /* A response that does not fit is no response. */
    size_t need = strlen(ANSWER) + 1;
    assert_int_equal(ws_deflate_negotiate("permessage-deflate", resp, need - 1), 0);
    assert_string_equal(resp, "");
    assert_int_equal(ws_deflate_negotiate("permessage-deflate", resp, need), 1);
    assert_string_equal(resp, ANSWER);
    assert_int_equal(ws_deflate_negotiate("permessage-deflate", NULL, 0), 0);

    /* The longest answer fits WS_DEFLATE_RESPONSE_MAX. */
    o.accepted = true;
    o.client_max_window_bits = 15;
    o.server_max_window_bits = 15;
    size_t n = ws_deflate_response(&o, resp, sizeof resp);
    assert_int_equal(n, strlen(ANSWER "; server_max_window_bits=15; client_max_window_bits=15"));
    assert_string_equal(resp, ANSWER "; server_max_window_bits=15; client_max_window_bits=15");
}

/* ---- Compression ---- */

static uint8_t *exact(const void *src, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    if (n) memcpy(p, src, n);
    return p;
}

/* Inflates an exactly-sized copy of in. On failure *out must be NULL. */
static int inflate_exact(struct ws_deflate_ctx *z, const void *in, size_t len, size_t max_out,
                         uint8_t **out, size_t *out_len)
{
    uint8_t *p = exact(in, len);
    *out = (uint8_t *)"not touched";
    int rc = ws_inflate_message(z, p, len, max_out, out, out_len);
    free(p);
    if (rc != 0)
        assert_null(*out);
    else
        assert_non_null(*out);
    return rc;
}

static void expect_inflate(struct ws_deflate_ctx *z, const void *in, size_t len, const void *want,
                           size_t want_len)
{
    uint8_t *out;
    size_t n;
    assert_int_equal(inflate_exact(z, in, len, want_len, &out, &n), 0);
    assert_int_equal(n, want_len);
    if (want_len) assert_memory_equal(out, want, want_len);
    free(out);
}

static int inflate_rc(struct ws_deflate_ctx *z, const void *in, size_t len, size_t max_out)
{
    uint8_t *out;
    size_t n;
    int rc = inflate_exact(z, in, len, max_out, &out, &n);
    if (rc == 0) free(out);
    return rc;
}

static void test_rfc_examples(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    assert_non_null(z);
    uint8_t *out;
    size_t n;

    /* §7.2.3.1: "Hello" in one compressed frame. */
    expect_inflate(z, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, "Hello", 5);
    /* And that is exactly what we send for it. */
    assert_int_equal(ws_deflate_message(z, (const uint8_t *)"Hello", 5, &out, &n), 0);
    assert_int_equal(n, 7);
    assert_memory_equal(out, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7);
    free(out);
    /* §7.2.3.2: the second "Hello" of a sender that keeps its window refers back
     * into the first message: without context takeover that is a broken stream. */
    assert_int_equal(inflate_rc(z, "\xf2\x00\x11\x00\x00", 5, 100), WS_INFLATE_CORRUPT);
    /* §7.2.3.3: a stored (uncompressed) block. */
    expect_inflate(z, "\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00", 11, "Hello", 5);
    /* §7.2.3.4: a block with BFINAL set, then the byte that starts an empty stored
     * block; and the final block alone, as some senders do. */
    expect_inflate(z, "\xf3\x48\xcd\xc9\xc9\x07\x00\x00", 8, "Hello", 5);
    expect_inflate(z, "\xf3\x48\xcd\xc9\xc9\x07\x00", 7, "Hello", 5);
    /* §7.2.3.5: two blocks in one message. */
    expect_inflate(z, "\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00", 13, "Hello", 5);
    ws_deflate_ctx_free(z);
}

#define PY_TEXT                                                                                    \
    "{\"a\":\"create\",\"id\":\"n04217\",\"type\":\"PathNode\",\"props\":{\"strokeStyle\":\"#"     \
    "3cb44b\",\"lineWidth\":2,\"commands\":[0,412,233,2,413,235,2,415,236,2,418,236,2,421,239,2,"  \
    "421,241,2,423,244]}}"
static const struct {
    const char *what;
    size_t len;
    const char *data;
} py_vectors[] = {
    { "level 9, a 512-byte window (client_max_window_bits=9)", 139,
      "\xd4\x8e\x4d\x0a\xc3\x20\x10\x85\xef\x32\xdd\xba\x88\x3a\xfd\xf3\x10\x25"
      "\xd0\x45\x17\xa5\x0b\xa3\x42\xa4\x89\x8a\x71\x13\x24\x77\xef\x44\xc8\x21"
      "\xba\x79\x7c\x1f\xf3\x1e\x4c\x05\x0d\x0a\x4c\x76\xba\x38\x60\xe0\x2d\x59"
      "\xe8\x50\xf0\x2b\x59\x59\x93\x23\xef\x75\x19\x1f\xd1\xee\xf7\x94\x63\x5a"
      "\x40\x55\x58\x4a\x8e\x5f\xf7\x2c\xeb\xb4\x37\x4e\xd2\x0c\x88\x03\x15\x26"
      "\x1f\xdc\xcb\xdb\x32\x82\x12\x0c\x4c\x9c\x67\x1d\x2c\x2d\xde\x1d\x43\x2e"
      "\x98\x90\x92\x09\x22\x4a\x79\x6e\x44\x29\x2f\x8d\x6e\x07\x09\x4e\x74\x3f"
      "\x08\x79\x23\x5a\x20\x7e\xb6\xad\xfe\xdb\xc3\x3f\x00" },
    { "level 6, flushed after 100 bytes: two blocks", 149,
      "\x14\xca\x39\x0a\x80\x30\x14\x45\xd1\xbd\x3c\x5b\x0b\x8d\x01\x21\x8b\x10"
      "\xc1\xc2\x3a\xc3\x07\x83\x66\x20\xfe\x46\xb2\x79\x93\xf2\x70\x6f\x85\x86"
      "\x82\x2d\xa4\x99\x30\xc2\xbb\xa6\x38\x49\x31\xaf\x4d\xfc\x65\x6a\xde\x35"
      "\x5f\x5b\x72\xbd\xe7\x92\xf2\x0b\x55\xf1\x72\x49\x37\x1d\xfc\x3d\xfd\x18"
      "\x16\x6b\xa4\x34\x6d\x78\x7c\xa4\xd3\x3b\xbe\xa0\xc4\x08\x9b\x42\xd0\xf1"
      "\x07\x00\x00\xff\xff\x4a\x01\xea\x88\x36\xd0\x31\x31\x34\xd2\x31\x32\x36"
      "\xd6\x31\x02\xb2\x80\xa4\xb1\x29\x98\x05\x24\x8d\xcd\xc0\x2c\x0b\x18\xcb"
      "\xc8\x10\xc8\xb2\x84\xb1\x4c\x0c\xc1\x2c\xa0\x0e\x13\x93\xd8\xda\xda\xea"
      "\xa1\xe6\x60\x00\x00" },
    { "fixed Huffman codes only", 145,
      "\xaa\x56\x4a\x54\xb2\x52\x4a\x2e\x4a\x4d\x2c\x49\x55\xd2\x51\xca\x4c\x01"
      "\xf2\xf2\x0c\x4c\x8c\x0c\xcd\x81\xbc\x92\xca\x82\x54\x20\x3f\x20\xb1\x24"
      "\xc3\x2f\x3f\x05\x24\x5f\x50\x94\x5f\x50\xac\x64\x55\xad\x54\x5c\x52\x94"
      "\x9f\x9d\x1a\x5c\x52\x99\x03\x52\xa1\x6c\x9c\x9c\x64\x62\x92\x04\x54\x90"
      "\x93\x99\x97\x1a\x9e\x99\x52\x92\xa1\x64\x65\xa4\xa3\x94\x9c\x9f\x9b\x9b"
      "\x98\x97\x02\xd4\x11\x6d\xa0\x63\x62\x68\xa4\x63\x64\x6c\xac\x63\x04\x64"
      "\x01\x49\x63\x53\x30\x0b\x48\x1a\x9b\x81\x59\x16\x30\x96\x91\x21\x90\x65"
      "\x09\x63\x99\x18\x82\x59\x40\x1d\x26\x26\xb1\xb5\xb5\xd5\x43\xcd\xc1\x00"
      "\x00" },
    { "Huffman only, no matches", 240,
      "\x04\xc1\x4b\xae\x82\x40\x14\x04\xd0\xbd\x94\xd3\x1a\xd0\x75\x2f\xa8\xbd"
      "\x88\x17\x13\x07\x0e\x8c\x03\x3e\x9d\x40\x44\x20\xd0\x13\x42\xd8\xfb\x3b"
      "\xe7\x40\x8d\x88\x76\x4d\x75\x4e\x20\x86\x0e\x11\x53\xe1\x0a\x57\x10\x79"
      "\x5f\x12\x22\x1e\x75\xee\xff\xe6\x2e\x81\x58\xd6\x79\xd9\x10\x0f\x6c\x79"
      "\x9d\xbf\xe9\x99\xf7\x31\x21\xe2\x62\x6d\xe3\xde\x80\x18\x87\x29\xbd\x86"
      "\x2e\xf7\x88\x22\xda\xf9\xf7\xab\xa7\x6e\x43\x7c\x17\xf4\x20\xca\x8c\xa2"
      "\x07\xa3\xac\xa4\xe8\xa1\xa4\xac\xa2\xe8\xe1\x46\x59\x45\xd1\x15\x28\xbb"
      "\x53\x74\x05\xca\x03\x45\x97\x51\xee\x9f\xf3\x3c\x50\x23\xa2\x5d\x53\x9d"
      "\x13\x88\xa1\x43\xc4\x54\xb8\xc2\x15\x44\xde\x97\x84\x88\x47\x9d\xfb\xbf"
      "\xb9\x4b\x20\x96\x75\x5e\x36\xc4\x03\x5b\x5e\xe7\x6f\x7a\xe6\x7d\x4c\x88"
      "\xb8\x58\xdb\xb8\x37\x20\xc6\x61\x4a\xaf\xa1\xcb\x3d\xa2\x88\x76\xfe\xfd"
      "\xea\xa9\xdb\x10\xdf\x05\x3d\x88\x32\xa3\xe8\xc1\x28\x2b\x29\x7a\x28\x29"
      "\xab\x28\x7a\xb8\x51\x56\x51\x74\x05\xca\xee\x14\x5d\x81\xf2\x40\xd1\x65"
      "\x94\xfb\xe7\x3c\xff\x01" },
    { "a final block (BFINAL=1), nothing after it", 138,
      "\xd5\x8e\x4d\x0a\xc3\x20\x10\x85\xef\x32\xdd\xba\x88\x3a\xfd\xf3\x10\x25"
      "\xd0\x45\x17\xa5\x0b\xa3\x42\xa4\x89\x8a\x71\x13\x24\x77\xef\x44\xc8\x21"
      "\xba\x79\x7c\x1f\xf3\x1e\x4c\x05\x0d\x0a\x4c\x76\xba\x38\x60\xe0\x2d\x59"
      "\xe8\x50\xf0\x2b\x59\x59\x93\x23\xef\x75\x19\x1f\xd1\xee\xf7\x94\x63\x5a"
      "\x40\x55\x58\x4a\x8e\x5f\xf7\x2c\xeb\xb4\x37\x4e\xd2\x0c\x88\x03\x15\x26"
      "\x1f\xdc\xcb\xdb\x32\x82\x12\x0c\x4c\x9c\x67\x1d\x2c\x2d\xde\x1d\x43\x2e"
      "\x98\x90\x92\x09\x22\x4a\x79\x6e\x44\x29\x2f\x8d\x6e\x07\x09\x4e\x74\x3f"
      "\x08\x79\x23\x5a\x20\x7e\xb6\xad\xfe\xdb\xc3\x3f" },
};

static void test_python_vectors(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    const char *text = PY_TEXT PY_TEXT;
    for (size_t i = 0; i < sizeof py_vectors / sizeof py_vectors[0]; i++) {
        uint8_t *out;
        size_t n;
        int rc = inflate_exact(z, py_vectors[i].data, py_vectors[i].len, 4096, &out, &n);
        if (rc != 0) fail_msg("%s: rc %d", py_vectors[i].what, rc);
        assert_int_equal(n, strlen(text));
        assert_memory_equal(out, text, n);
        free(out);
    }
    ws_deflate_ctx_free(z);
}

/* ---- Round trips ---- */

static void fill(uint8_t *p, size_t n, int kind)
{
    uint32_t x = 12345;
    static const char words[] = "{\"a\":\"set\",\"id\":\"n01234\",\"props\":{\"x\":17,\"y\":42}} ";
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = kind == 0   ? 0
               : kind == 1 ? (uint8_t)words[(i + (x >> 28)) % (sizeof words - 1)]
                           : (uint8_t)(x >> 16);
    }
}

static void test_round_trips(void **state)
{
    (void)state;
    const size_t sizes[] = { 0, 1, 2, 5, 100, 127, 128, 1000, 65535, 65536, 70001, 1 << 20 };
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    uint8_t *in = malloc(1 << 20);
    assert_non_null(in);
    for (int kind = 0; kind < 3; kind++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t len = sizes[si];
            uint8_t *c, *c2, *out;
            size_t clen, clen2, n;
            fill(in, len, kind);
            assert_int_equal(ws_deflate_message(z, in, len, &c, &clen), 0);
            assert_true(clen > 0);
            if (kind == 0 && len >= 1000) assert_true(clen < len / 50); /* zeros shrink */
            /* A fresh context every time: the same input, the same bytes. */
            assert_int_equal(ws_deflate_message(z, in, len, &c2, &clen2), 0);
            assert_int_equal(clen, clen2);
            assert_memory_equal(c, c2, clen);
            free(c2);
            /* Back again with the limit exactly at the size... */
            assert_int_equal(inflate_exact(z, c, clen, len, &out, &n), 0);
            assert_int_equal(n, len);
            if (len) assert_memory_equal(out, in, len);
            free(out);
            /* ...and one byte under it. */
            if (len) assert_int_equal(inflate_rc(z, c, clen, len - 1), WS_INFLATE_TOO_BIG);
            free(c);
        }
    }
    free(in);
    ws_deflate_ctx_free(z);
}

static void test_empty(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    uint8_t *out;
    size_t n = 99;
    /* An empty message compresses to the single 0x00 of RFC 7692 §7.2.3.6. */
    assert_int_equal(ws_deflate_message(z, (const uint8_t *)"", 0, &out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0], 0x00);
    free(out);
    expect_inflate(z, "\x00", 1, "", 0);
    /* An empty payload is taken as an empty message; even with max_out 0. */
    n = 99;
    assert_int_equal(inflate_exact(z, "", 0, 0, &out, &n), 0);
    assert_int_equal(n, 0);
    free(out);
    assert_int_equal(inflate_rc(z, "\x00", 1, 0), 0);
    assert_int_equal(inflate_rc(z, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 0), WS_INFLATE_TOO_BIG);
    assert_int_equal(inflate_rc(z, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 4), WS_INFLATE_TOO_BIG);
    assert_int_equal(inflate_rc(z, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 5), 0);
    /* The same with a final block, which ends the stream in the call that passes the
     * limit (a fuzzer's find). */
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00", 7, 0), WS_INFLATE_TOO_BIG);
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00", 7, 4), WS_INFLATE_TOO_BIG);
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00", 7, 5), 0);
    assert_int_equal(inflate_rc(z, "\xf3\x01\x00\x00", 4, 0), WS_INFLATE_TOO_BIG);
    ws_deflate_ctx_free(z);
}

/* ---- Bombs ---- */

static void test_bomb(void **state)
{
    (void)state;
    const size_t big = 10u << 20, limit = 1u << 20;
    struct ws_deflate_ctx *zc = ws_deflate_ctx_new(), *z = ws_deflate_ctx_new();
    uint8_t *zeros = calloc(1, big), *c, *out;
    size_t clen, n;
    assert_non_null(zeros);
    assert_int_equal(ws_deflate_message(zc, zeros, big, &c, &clen), 0);
    assert_true(clen < 64 * 1024); /* 10 MB of zeros: about 45 KB at level 1 */

    /* 1 MB allowed: refused, and never more than the limit (plus one byte) of output
     * buffer besides zlib's own state (an inflate window of 32 KB and ~7 KB). */
    assert_int_equal(inflate_rc(z, c, clen, limit), WS_INFLATE_TOO_BIG);
    size_t peak = ws_deflate_ctx_peak(z);
    print_message("bomb: %zu compressed bytes, peak %zu bytes for a %zu limit\n", clen, peak,
                  limit);
    assert_true(peak > limit);
    if (peak > limit + 1 + 48 * 1024)
        fail_msg("inflating a bomb held %zu bytes for a %zu-byte limit", peak, limit);
    /* One byte short of the whole: refused too; the whole: fine. */
    assert_int_equal(inflate_rc(z, c, clen, big - 1), WS_INFLATE_TOO_BIG);
    assert_int_equal(inflate_exact(z, c, clen, big, &out, &n), 0);
    assert_int_equal(n, big);
    assert_memory_equal(out, zeros, big);
    free(out);
    free(c);

    /* A smaller bomb (1 MB of zeros: about 1 KB) against a 64 KB limit. */
    ws_deflate_ctx_free(z);
    z = ws_deflate_ctx_new();
    assert_int_equal(ws_deflate_message(zc, zeros, limit, &c, &clen), 0);
    assert_int_equal(inflate_rc(z, c, clen, 64 * 1024), WS_INFLATE_TOO_BIG);
    assert_true(ws_deflate_ctx_peak(z) <= 64 * 1024 + 1 + 48 * 1024);
    free(c);
    free(zeros);
    ws_deflate_ctx_free(z);
    ws_deflate_ctx_free(zc);
}

/* Per-thread state stays modest. */
static void test_context_memory(void **state)
{
    (void)state;
    struct ws_deflate_ctx *zc = ws_deflate_ctx_new(), *zi = ws_deflate_ctx_new();
    uint8_t *c, *out;
    size_t clen, n;
    assert_int_equal(ws_deflate_ctx_peak(zc), 0); /* nothing until first use */
    assert_int_equal(ws_deflate_message(zc, (const uint8_t *)PY_TEXT, strlen(PY_TEXT), &c, &clen),
                     0);
    size_t dpeak = ws_deflate_ctx_peak(zc);
    assert_true(dpeak > 128 * 1024 && dpeak < 256 * 1024);
    assert_int_equal(inflate_exact(zi, c, clen, 4096, &out, &n), 0);
    size_t ipeak = ws_deflate_ctx_peak(zi);
    print_message("context state: deflate %zu bytes, inflate %zu bytes\n", dpeak, ipeak);
    assert_true(ipeak > 32 * 1024 && ipeak < 48 * 1024);
    free(out);
    free(c);
    /* Many messages later, no growth. */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(
            ws_deflate_message(zc, (const uint8_t *)PY_TEXT, strlen(PY_TEXT), &c, &clen), 0);
        assert_int_equal(inflate_exact(zi, c, clen, 4096, &out, &n), 0);
        free(out);
        free(c);
    }
    assert_int_equal(ws_deflate_ctx_peak(zc), dpeak);
    assert_int_equal(ws_deflate_ctx_peak(zi), ipeak);
    ws_deflate_ctx_free(zc);
    ws_deflate_ctx_free(zi);
    ws_deflate_ctx_free(NULL);
}

/* ---- Corrupt streams ---- */

static void test_corrupt(void **state)
{
    (void)state;
    struct ws_deflate_ctx *z = ws_deflate_ctx_new();
    /* Reserved block type (BTYPE 11). */
    assert_int_equal(inflate_rc(z, "\xff\xff\xff\xff", 4, 100), WS_INFLATE_CORRUPT);
    assert_int_equal(inflate_rc(z, "\x06", 1, 100), WS_INFLATE_CORRUPT);
    /* Cut inside a block: the tail cannot close it. */
    assert_int_equal(inflate_rc(z, "\xf2\x48\xcd", 3, 100), WS_INFLATE_CORRUPT);
    assert_int_equal(inflate_rc(z, "\xf2\x48\xcd\xc9\xc9\x07", 6, 100), WS_INFLATE_CORRUPT);
    assert_int_equal(inflate_rc(z, "\x00\x05\x00\xfa\xff\x48\x65", 7, 100), WS_INFLATE_CORRUPT);
    /* A stored block whose NLEN is not the complement of LEN. */
    assert_int_equal(inflate_rc(z, "\x00\x05\x00\x00\x00\x48\x65\x6c\x6c\x6f\x00", 11, 100),
                     WS_INFLATE_CORRUPT);
    /* After a final block, anything but one 0x00 byte. */
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00\x01", 8, 100), WS_INFLATE_CORRUPT);
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00\x00\x00", 9, 100),
                     WS_INFLATE_CORRUPT);
    assert_int_equal(inflate_rc(z, "\xf3\x48\xcd\xc9\xc9\x07\x00garbage", 14, 100),
                     WS_INFLATE_CORRUPT);
    /* A final block that only our tail completes. */
    assert_int_equal(inflate_rc(z, "\x01", 1, 100), WS_INFLATE_CORRUPT);
    /* The context is fine after all that. */
    expect_inflate(z, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, "Hello", 5);

    /* Random bytes never crash, leak or pass the limit. */
    uint8_t junk[300];
    uint32_t x = 7;
    int ok = 0, corrupt = 0;
    for (int round = 0; round < 3000; round++) {
        size_t len = 1 + round % sizeof junk;
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            junk[i] = (uint8_t)(x >> 16);
        }
        uint8_t *out;
        size_t n;
        int rc = inflate_exact(z, junk, len, 1000, &out, &n);
        assert_true(rc == 0 || rc == WS_INFLATE_TOO_BIG || rc == WS_INFLATE_CORRUPT);
        if (rc == 0) {
            assert_true(n <= 1000);
            free(out);
            ok++;
        }
        corrupt += rc == WS_INFLATE_CORRUPT;
    }
    assert_true(corrupt > 2500); /* random bytes are almost never a stream */
    (void)ok;
    ws_deflate_ctx_free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiate_browsers),
        cmocka_unit_test(test_negotiate_window_bits),
        cmocka_unit_test(test_negotiate_params),
        cmocka_unit_test(test_negotiate_lists),
        cmocka_unit_test(test_negotiate_struct_and_room),
        cmocka_unit_test(test_rfc_examples),
        cmocka_unit_test(test_python_vectors),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_context_memory),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
