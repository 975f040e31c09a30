/* wsdeflate: owns the permessage-deflate negotiation and the per-thread zlib streams
 * that compress and inflate whole messages. */
#include "wsdeflate.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

struct ws_deflate_ctx {
    z_stream def, inf;
};

/* ---- negotiation ---- */

/* Skips spaces and tabs. */
static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* Reads a token (or a quoted string, unquoted) into out. Returns the position after
 * it, or NULL when there is none. */
static const char *read_word(const char *p, char *out, size_t out_len, bool quoted_ok)
{
    size_t n = 0;
    p = skip_ws(p);
    if (quoted_ok && *p == '"') {
        for (p++; *p && *p != '"'; p++) {
            if (*p == '\\' && p[1]) p++;
            if (n + 1 < out_len) out[n++] = *p;
        }
        if (*p != '"') return NULL;
        p++;
    } else {
        while (*p && (isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p))) {
            if (n + 1 < out_len) out[n++] = *p;
            p++;
        }
        if (n == 0) return NULL;
    }
    out[n] = 0;
    return p;
}

/* A window-bits value: 8-15. */
static int window_bits(const char *v)
{
    if (strlen(v) > 2) return -1;
    for (const char *p = v; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    int n = atoi(v);
    return n >= 8 && n <= 15 ? n : -1;
}

/* Reads one offer up to ',' or the end. Returns the position after it (NULL when
 * malformed beyond recovery); *ok says whether it is a permessage-deflate offer we
 * take. */
static const char *read_offer(const char *p, bool *ok)
{
    char name[64], key[64], val[64];
    *ok = false;
    p = read_word(p, name, sizeof name, false);
    if (!p) return NULL;
    bool ours = !strcasecmp(name, "permessage-deflate"), bad = false;
    bool seen_snct = false, seen_cnct = false, seen_smwb = false, seen_cmwb = false;
    for (p = skip_ws(p); *p == ';'; p = skip_ws(p)) {
        p = read_word(p + 1, key, sizeof key, false);
        if (!p) return NULL;
        p = skip_ws(p);
        bool has_val = *p == '=';
        if (has_val) {
            p = read_word(p + 1, val, sizeof val, true);
            if (!p) return NULL;
        }
        if (!ours) continue;
        bool *seen = !strcasecmp(key, "server_no_context_takeover")  ? &seen_snct
                     : !strcasecmp(key, "client_no_context_takeover") ? &seen_cnct
                     : !strcasecmp(key, "server_max_window_bits")     ? &seen_smwb
                     : !strcasecmp(key, "client_max_window_bits")     ? &seen_cmwb
                                                                      : NULL;
        if (!seen || *seen) {
            bad = true; /* unknown or repeated */
            continue;
        }
        *seen = true;
        if (seen == &seen_snct || seen == &seen_cnct) bad |= has_val;
        else if (seen == &seen_smwb) bad |= !has_val || window_bits(val) != 15;
        else bad |= has_val && window_bits(val) < 0;
    }
    if (*p && *p != ',') return NULL;
    *ok = ours && !bad;
    return p;
}

int ws_deflate_negotiate(const char *header, char *resp, size_t resp_len)
{
    if (resp_len) resp[0] = 0;
    const char *p = header;
    while (p && *p) {
        bool ok;
        p = read_offer(p, &ok);
        if (ok) {
            int n = snprintf(resp, resp_len,
                             "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
            return n > 0 && (size_t)n < resp_len ? 1 : (resp_len ? (resp[0] = 0) : 0);
        }
        if (p && *p == ',') p++;
    }
    return 0;
}

/* ---- compression ---- */

struct ws_deflate_ctx *ws_deflate_ctx_new(void)
{
    struct ws_deflate_ctx *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    if (deflateInit2(&z->def, WS_DEFLATE_LEVEL, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    if (inflateInit2(&z->inf, -15) != Z_OK) {
        deflateEnd(&z->def);
        free(z);
        return NULL;
    }
    return z;
}

void ws_deflate_ctx_free(struct ws_deflate_ctx *z)
{
    if (!z) return;
    deflateEnd(&z->def);
    inflateEnd(&z->inf);
    free(z);
}

int ws_deflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, uint8_t **out,
                       size_t *out_len)
{
    /* A sync flush ends with an empty stored block: room for it and its 00 00 ff ff. */
    size_t cap = deflateBound(&z->def, (uLong)len) + 16;
    uint8_t *buf = malloc(cap);
    if (!buf) return -1;
    deflateReset(&z->def);
    z->def.next_in = (Bytef *)in;
    z->def.avail_in = (uInt)len;
    z->def.next_out = buf;
    z->def.avail_out = (uInt)cap;
    int rc = deflate(&z->def, Z_SYNC_FLUSH);
    size_t n = cap - z->def.avail_out;
    if ((rc != Z_OK && rc != Z_BUF_ERROR) || z->def.avail_in != 0 || n < 4) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n - 4; /* the receiver adds 00 00 ff ff back */
    return 0;
}

int ws_inflate_message(struct ws_deflate_ctx *z, const uint8_t *in, size_t len, size_t max_out,
                       uint8_t **out, size_t *out_len)
{
    static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
    size_t cap = len < (1u << 10) ? 4096 : len * 4;
    if (cap > max_out + 1) cap = max_out + 1;
    uint8_t *buf = malloc(cap);
    if (!buf) return -1;
    inflateReset(&z->inf);
    z->inf.next_out = buf;
    z->inf.avail_out = (uInt)cap;
    int result = 0;
    bool ended = false;
    for (int part = 0; part < 2 && !ended; part++) {
        z->inf.next_in = (Bytef *)(part == 0 ? in : tail);
        z->inf.avail_in = (uInt)(part == 0 ? len : sizeof tail);
        while (z->inf.avail_in > 0) {
            if (z->inf.avail_out == 0) {
                size_t used = cap;
                if (used > max_out) {
                    result = WS_INFLATE_TOO_BIG;
                    goto out;
                }
                size_t ncap = cap * 2 > max_out + 1 ? max_out + 1 : cap * 2;
                uint8_t *b = realloc(buf, ncap);
                if (!b) {
                    result = -1;
                    goto out;
                }
                buf = b;
                z->inf.next_out = buf + used;
                z->inf.avail_out = (uInt)(ncap - used);
                cap = ncap;
            }
            int rc = inflate(&z->inf, Z_SYNC_FLUSH);
            if (rc == Z_STREAM_END) {
                /* A final block: nothing of the message may follow it. */
                if (part == 0 && z->inf.avail_in > 0) result = WS_INFLATE_CORRUPT;
                ended = true;
                break;
            }
            if (rc == Z_BUF_ERROR && z->inf.avail_out > 0) break; /* needs more input */
            if (rc != Z_OK && rc != Z_BUF_ERROR) {
                result = rc == Z_MEM_ERROR ? -1 : WS_INFLATE_CORRUPT;
                goto out;
            }
        }
        if (result) goto out;
    }
    size_t n = cap - z->inf.avail_out;
    if (n > max_out) {
        result = WS_INFLATE_TOO_BIG;
        goto out;
    }
    *out = buf;
    *out_len = n;
    return 0;
out:
    free(buf);
    return result;
}
