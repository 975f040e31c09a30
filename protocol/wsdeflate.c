/* wsdeflate: owns permessage-deflate (RFC 7692): the Sec-WebSocket-Extensions
 * negotiation and per-message compression and decompression with zlib, without
 * context takeover. All zlib memory goes through the context, which counts it. */
#define ZLIB_CONST
#include "wsdeflate.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- Negotiation ---- */

static bool is_tchar(char ch)
{
    unsigned char c = (unsigned char)ch;

    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool same_name(const char *s, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n && name[i]; i++) {
        char a = s[i], b = name[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a - 'A' + 'a');
        if (a != b) return false;
    }
    return i == n && name[i] == 0;
}

/* One comma-separated element of the header: [p, end). */
struct cursor {
    const char *p, *end;
};

static void skip_ows(struct cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t')) c->p++;
}

static size_t take_token(struct cursor *c, const char **start)
{
    *start = c->p;
    while (c->p < c->end && is_tchar(*c->p)) c->p++;
    return (size_t)(c->p - *start);
}

/* A parameter value: a token, or a quoted-string that after unescaping is a token
 * (RFC 6455 §9.1). Keeps up to vmax-1 characters in v; *vlen is the full length, so
 * a value too long for v is still seen as too long. False when malformed. */
static bool take_value(struct cursor *c, char *v, size_t vmax, size_t *vlen)
{
    size_t n = 0;
    char ch;

    if (c->p < c->end && *c->p == '"') {
        c->p++;
        for (;;) {
            if (c->p == c->end) return false;
            ch = *c->p++;
            if (ch == '"') break;
            if (ch == '\\') {
                if (c->p == c->end) return false;
                ch = *c->p++;
            }
            if (!is_tchar(ch)) return false;
            if (n + 1 < vmax) v[n] = ch;
            n++;
        }
    } else {
        while (c->p < c->end && is_tchar(*c->p)) {
            if (n + 1 < vmax) v[n] = *c->p;
            n++;
            c->p++;
        }
    }
    v[n < vmax ? n : vmax - 1] = 0;
    *vlen = n;
    return n > 0;
}

/* A window size: 8..15 written without leading zeros (RFC 7692 §7.1.2). */
static int window_bits(const char *v, size_t n)
{
    if (n == 1 && v[0] >= '8' && v[0] <= '9') return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + v[1] - '0';
    return 0;
}

enum { P_SERVER_NCT, P_CLIENT_NCT, P_SERVER_BITS, P_CLIENT_BITS, P_COUNT };

/* Judges one element. True when it is an acceptable permessage-deflate offer. */
static bool judge_offer(struct cursor *c, struct ws_deflate_offer *o)
{
    static const char *const names[P_COUNT] = { "server_no_context_takeover",
                                                "client_no_context_takeover",
                                                "server_max_window_bits",
                                                "client_max_window_bits" };
    bool seen[P_COUNT] = { false };
    const char *s;
    size_t n, vlen = 0;
    char v[8];

    memset(o, 0, sizeof *o);
    skip_ows(c);
    n = take_token(c, &s);
    if (!same_name(s, n, "permessage-deflate")) return false;
    for (;;) {
        bool has_value = false;
        int p;

        skip_ows(c);
        if (c->p == c->end) break;
        if (*c->p != ';') return false;
        c->p++;
        skip_ows(c);
        n = take_token(c, &s);
        skip_ows(c);
        if (c->p < c->end && *c->p == '=') {
            c->p++;
            skip_ows(c);
            if (!take_value(c, v, sizeof v, &vlen)) return false;
            has_value = true;
        }
        for (p = 0; p < P_COUNT && !same_name(s, n, names[p]); p++)
            ;
        if (p == P_COUNT || seen[p]) return false; /* unknown (or no name at all), or repeated */
        seen[p] = true;
        switch (p) {
        case P_SERVER_NCT:
        case P_CLIENT_NCT:
            if (has_value) return false;
            break;
        case P_SERVER_BITS:
            /* The client's inflater has a window of 2^value; our one compressed
             * copy per message is made with 2^15 and cannot shrink for one client. */
            if (!has_value || window_bits(v, vlen) < WS_DEFLATE_WINDOW_BITS) return false;
            o->server_max_window_bits = WS_DEFLATE_WINDOW_BITS;
            break;
        case P_CLIENT_BITS:
            /* A value (or none) only tells what the client can do; our inflater
             * takes any window, so there is nothing to answer. */
            if (has_value && !window_bits(v, vlen)) return false;
            break;
        }
    }
    o->accepted = true;
    return true;
}

/* The end of the element starting at p: the next comma outside a quoted string, or
 * the end of the header. */
static const char *element_end(const char *p)
{
    bool quoted = false;

    for (; *p; p++) {
        if (quoted && *p == '\\' && p[1])
            p++;
        else if (*p == '"')
            quoted = !quoted;
        else if (*p == ',' && !quoted)
            break;
    }
    return p;
}

int ws_deflate_choose(const char *header, struct ws_deflate_offer *offer)
{
    const char *p = header;

    memset(offer, 0, sizeof *offer);
    if (!header) return 0;
    for (;;) {
        const char *end = element_end(p);
        struct cursor c = { p, end };
        if (judge_offer(&c, offer)) return 1;
        if (!*end) break;
        p = end + 1;
    }
    memset(offer, 0, sizeof *offer);
    return 0;
}

size_t ws_deflate_response(const struct ws_deflate_offer *offer, char *resp, size_t resp_len)
{
    char server_bits[32] = "", client_bits[32] = "";
    int n;

    if (resp_len > 0) resp[0] = 0;
    if (!offer->accepted) return 0;
    if (offer->server_max_window_bits)
        snprintf(server_bits, sizeof server_bits, "; server_max_window_bits=%d",
                 offer->server_max_window_bits);
    if (offer->client_max_window_bits)
        snprintf(client_bits, sizeof client_bits, "; client_max_window_bits=%d",
                 offer->client_max_window_bits);
    n = snprintf(resp, resp_len,
                 "permessage-deflate; server_no_context_takeover; client_no_context_takeover%s%s",
                 server_bits, client_bits);
    if (n < 0 || (size_t)n >= resp_len) {
        if (resp_len > 0) resp[0] = 0;
        return 0;
    }
    return (size_t)n;
}

int ws_deflate_negotiate(const char *header, char *resp, size_t resp_len)
{
    struct ws_deflate_offer offer;

    if (resp_len > 0) resp[0] = 0;
    if (!ws_deflate_choose(header, &offer)) return 0;
    return ws_deflate_response(&offer, resp, resp_len) > 0;
}

/* ---- Per-thread context ---- */

struct ws_deflate_ctx {
    z_stream def, inf;
    bool def_ready, inf_ready;
    size_t held, peak; /* bytes allocated through the context now, and at most */
};

static void count(struct ws_deflate_ctx *z, size_t more, size_t less)
{
    z->held = z->held + more - less;
    if (z->held > z->peak) z->peak = z->held;
}

/* zlib's allocations, each behind a header that remembers its size (zfree is not
 * told). The header is max_align_t wide so what follows stays aligned. */
static void *z_alloc(void *opaque, unsigned items, unsigned size)
{
    size_t n;
    max_align_t *p;

    if (size != 0 && items > (SIZE_MAX - sizeof *p) / size) return NULL;
    n = (size_t)items * size;
    p = malloc(sizeof *p + n);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    count(opaque, n, 0);
    return p + 1;
}

static void z_free(void *opaque, void *ptr)
{
    max_align_t *p = (max_align_t *)ptr - 1;
    size_t n;

    memcpy(&n, p, sizeof n);
    count(opaque, 0, n);
    free(p);
}

struct ws_deflate_ctx *ws_deflate_ctx_new(void) { return calloc(1, sizeof(struct ws_deflate_ctx)); }

void ws_deflate_ctx_free(struct ws_deflate_ctx *z)
{
    if (!z) return;
    if (z->def_ready) deflateEnd(&z->def);
    if (z->inf_ready) inflateEnd(&z->inf);
    free(z);
}

size_t ws_deflate_ctx_peak(const struct ws_deflate_ctx *z) { return z->peak; }

static void stream_setup(struct ws_deflate_ctx *z, z_stream *s)
{
    memset(s, 0, sizeof *s);
    s->zalloc = z_alloc;
    s->zfree = z_free;
    s->opaque = z;
}

/* An output buffer under construction, counted in the context while it is ours. */
struct outbuf {
    uint8_t *p;
    size_t cap, used;
};

static bool out_resize(struct ws_deflate_ctx *z, struct outbuf *o, size_t cap)
{
    uint8_t *p = realloc(o->p, cap);

    if (!p) return false;
    count(z, cap, o->cap);
    o->p = p;
    o->cap = cap;
    return true;
}

static void out_discard(struct ws_deflate_ctx *z, struct outbuf *o)
{
    count(z, 0, o->cap);
    free(o->p);
    o->p = NULL;
    o->cap = o->used = 0;
}

/* Hands the buffer to the caller, trimmed when much of it is unused: compressed
 * messages may wait in many clients' queues. */
static void out_give(struct ws_deflate_ctx *z, struct outbuf *o, uint8_t **out, size_t *out_len)
{
    size_t want = o->used ? o->used : 1;

    if (o->cap - want > 256) out_resize(z, o, want); /* keeps the larger buffer if this fails */
    count(z, 0, o->cap);
    *out = o->p;
    *out_len = o->used;
}

/* zlib counts in unsigned int; larger spans go in pieces. */
static unsigned piece(size_t n) { return n > UINT_MAX ? UINT_MAX : (unsigned)n; }

int ws_deflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, uint8_t **out,
                       size_t *out_len)
{
    z_stream *s = &z->def;
    struct outbuf o = { NULL, 0, 0 };
    size_t done = 0;

    *out = NULL;
    *out_len = 0;
    if (!z->def_ready) {
        stream_setup(z, s);
        if (deflateInit2(s, WS_DEFLATE_LEVEL, Z_DEFLATED, -WS_DEFLATE_WINDOW_BITS,
                         WS_DEFLATE_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
            return -1;
        z->def_ready = true;
    } else if (deflateReset(s) != Z_OK) {
        return -1;
    }
    /* deflateBound covers a finished stream; the flush's empty stored block and a
     * partial byte need a few more. Rarely too small, and then grown below. */
    if (!out_resize(z, &o, (size_t)deflateBound(s, (uLong)len) + 16)) return -1;

    for (;;) {
        unsigned in_n = piece(len - done), out_n = piece(o.cap - o.used);
        bool last = in_n == len - done;
        s->next_in = in + done;
        s->avail_in = in_n;
        s->next_out = o.p + o.used;
        s->avail_out = out_n;
        int rc = deflate(s, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
        done += in_n - s->avail_in;
        o.used += out_n - s->avail_out;
        if (rc != Z_OK && rc != Z_BUF_ERROR) goto fail;
        /* With all input given, the flush is complete once room is left over. */
        if (last && s->avail_in == 0 && s->avail_out != 0) break;
        if (o.used == o.cap && !out_resize(z, &o, o.cap > SIZE_MAX / 2 ? SIZE_MAX : o.cap * 2))
            goto fail;
    }
    /* RFC 7692 §7.2.1: the flush ends in 00 00 ff ff, which the receiver restores. */
    if (o.used < 4 || memcmp(o.p + o.used - 4, "\0\0\xff\xff", 4) != 0) goto fail;
    o.used -= 4;
    out_give(z, &o, out, out_len);
    return 0;
fail:
    out_discard(z, &o);
    return -1;
}

/* The input of one inflate: the payload, then the 4-byte tail the sender removed. */
struct inflate_input {
    const uint8_t *p;
    size_t left; /* of the current part, not yet handed to zlib */
    int part;    /* 0 payload, 1 tail */
};

static const uint8_t deflate_tail[4] = { 0x00, 0x00, 0xff, 0xff };

/* Hands zlib the next piece of input once it has used up the last. */
static void inflate_refill(struct inflate_input *in, z_stream *s)
{
    if (s->avail_in != 0) return;
    if (in->left == 0 && in->part == 0) {
        in->p = deflate_tail;
        in->left = sizeof deflate_tail;
        in->part = 1;
    }
    s->next_in = in->p;
    s->avail_in = piece(in->left);
    in->p += s->avail_in;
    in->left -= s->avail_in;
}

/* After a final block (RFC 7692 §7.2.3.4) the payload may hold one more byte, 0x00,
 * which with the tail would make an empty stored block; anything else, or a final
 * block that needed the tail, is not a message. */
static bool final_block_ok(const struct inflate_input *in, const z_stream *s,
                           const uint8_t *payload, size_t len)
{
    size_t rest;

    if (in->part != 0) return s->avail_in == sizeof deflate_tail;
    rest = s->avail_in + in->left;
    return rest == 0 || (rest == 1 && payload[len - 1] == 0x00);
}

int ws_inflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, size_t max_out,
                       uint8_t **out, size_t *out_len)
{
    z_stream *s = &z->inf;
    struct outbuf o = { NULL, 0, 0 };
    struct inflate_input src = { in, len, 0 };
    /* One byte past the limit tells "exactly max_out" from "more". */
    size_t limit = max_out == SIZE_MAX ? SIZE_MAX : max_out + 1;
    size_t first = len > SIZE_MAX / 4 ? SIZE_MAX : len * 4;
    int rc = WS_INFLATE_CORRUPT;

    *out = NULL;
    *out_len = 0;
    if (!z->inf_ready) {
        stream_setup(z, s);
        if (inflateInit2(s, -MAX_WBITS) != Z_OK) return -1;
        z->inf_ready = true;
    } else if (inflateReset(s) != Z_OK) {
        return -1;
    }
    if (len == 0) {
        /* An empty payload is an empty message, see the header. */
        if (!out_resize(z, &o, 1)) return -1;
        goto done;
    }
    s->avail_in = 0;
    if (first < 1024) first = 1024;
    if (!out_resize(z, &o, first < limit ? first : limit)) return -1;

    for (;;) {
        inflate_refill(&src, s);
        /* Full, but below the limit (checked after every call): grow towards it. */
        if (o.used == o.cap && !out_resize(z, &o, o.cap > limit / 2 ? limit : o.cap * 2)) {
            rc = -1;
            goto fail;
        }
        unsigned out_n = piece(o.cap - o.used);
        s->next_out = o.p + o.used;
        s->avail_out = out_n;
        int zr = inflate(s, Z_SYNC_FLUSH);
        o.used += out_n - s->avail_out;
        if (o.used > max_out) {
            /* The byte past the limit: stop, even if this call also ended the stream. */
            rc = WS_INFLATE_TOO_BIG;
            goto fail;
        }
        if (zr == Z_STREAM_END) {
            if (!final_block_ok(&src, s, in, len)) goto fail;
            goto done;
        }
        if (zr == Z_MEM_ERROR) {
            rc = -1;
            goto fail;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) goto fail; /* Z_DATA_ERROR: a bad stream */
        /* Payload and tail used up, with output room left: zlib wrote all it could. */
        if (s->avail_in == 0 && src.part == 1 && src.left == 0 && s->avail_out != 0) break;
        if (zr == Z_BUF_ERROR && s->avail_in != 0 && s->avail_out != 0)
            goto fail; /* no progress possible: cannot happen, but never loop */
    }
    /* The tail must have closed a block, leaving the stream between blocks rather
     * than inside one that was cut short. */
    if (!(s->data_type & 128)) goto fail;
done:
    out_give(z, &o, out, out_len);
    return 0;
fail:
    out_discard(z, &o);
    return rc;
}
