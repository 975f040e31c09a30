/* loadtest_ws: client WebSocket of the load tester (see the header): HTTP
 * upgrade, frame codec, buffered output and epoll interest, over loadtest_net. */
#include "loadtest_ws.h"

#include "wsdeflate.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HTTP_MAX 16384                /* an upgrade response larger than this is bogus */
#define FRAME_MAX ((uint64_t)1 << 30) /* refuse absurd frames rather than allocate them */
#define SCRATCH_SIZE (256 * 1024)     /* one read() takes many small frames at once */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: cheap masks; WebSocket masking needs no secrecy here. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void set_err(struct lt_ws *ws, const char *fmt, const char *arg)
{
    if (!ws->err[0]) snprintf(ws->err, sizeof ws->err, fmt, arg);
}

/* ---- context ---- */

int lt_ws_ctx_init(struct lt_ws_ctx *ctx, const char *url, int tls_verify, int epfd, char *err,
                   size_t err_len)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->epfd = epfd;
    err[0] = 0;
    if (lt_net_target_init(&ctx->target, url, tls_verify, err, err_len)) return -1;
    ctx->scratch_cap = SCRATCH_SIZE;
    ctx->scratch = malloc(ctx->scratch_cap);
    if (!ctx->scratch) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ctx->rng =
        (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid() << 32 ^ 0x9E3779B97F4A7C15ULL;
    return 0;
}

void lt_ws_ctx_free(struct lt_ws_ctx *ctx)
{
    lt_net_target_free(&ctx->target);
    ws_deflate_ctx_free(ctx->z);
    ctx->z = NULL;
    free(ctx->scratch);
    ctx->scratch = NULL;
}

/* ---- buffers ---- */

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need) n *= 2;
    uint8_t *b = realloc(*buf, n);
    if (!b) return -1;
    *buf = b;
    *cap = n;
    return 0;
}

static int out_append(struct lt_ws *ws, const uint8_t *data, size_t len)
{
    if (ws->out_off && ws->out_off == ws->out_len) ws->out_off = ws->out_len = 0;
    if (reserve(&ws->out, &ws->out_cap, ws->out_len + len)) {
        set_err(ws, "%s", "out of memory");
        return -1;
    }
    memcpy(ws->out + ws->out_len, data, len);
    ws->out_len += len;
    return 0;
}

/* Keeps epoll interest in step with what the connection waits for. */
static void update_interest(struct lt_ws_ctx *ctx, struct lt_ws *ws)
{
    uint32_t want = EPOLLIN;
    if (ws->state == LT_WS_TCP || ws->out_len > ws->out_off || ws->net.wants_write)
        want |= EPOLLOUT;
    if (want == ws->ev || ws->net.fd < 0) return;
    struct epoll_event ev = { .events = want, .data.ptr = ws->tag };
    if (epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, ws->net.fd, &ev) == 0) ws->ev = want;
}

static int flush(struct lt_ws *ws)
{
    while (ws->out_len > ws->out_off) {
        ssize_t w = lt_net_write(&ws->net, ws->out + ws->out_off, ws->out_len - ws->out_off,
                                 ws->err, sizeof ws->err);
        if (w < 0) return -1;
        if (w == 0) break;
        ws->out_off += (size_t)w;
        ws->ctx->wire_out += (size_t)w;
    }
    if (ws->out_off == ws->out_len) {
        ws->out_off = ws->out_len = 0;
        /* A teacher's big catch-up can leave a large buffer behind; give it back. */
        if (ws->out_cap > 65536) {
            free(ws->out);
            ws->out = NULL;
            ws->out_cap = 0;
        }
    }
    return 0;
}

/* ---- frames ---- */

static int queue_frame(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint8_t op, const uint8_t *data,
                       size_t len)
{
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        hdr[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(len >> 8);
        hdr[h++] = (uint8_t)len;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) hdr[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t m = (uint32_t)rng_next(&ctx->rng);
    uint8_t mask[4] = { (uint8_t)(m >> 24), (uint8_t)(m >> 16), (uint8_t)(m >> 8), (uint8_t)m };
    memcpy(hdr + h, mask, 4);
    h += 4;
    if (ws->out_off && ws->out_off == ws->out_len) ws->out_off = ws->out_len = 0;
    if (reserve(&ws->out, &ws->out_cap, ws->out_len + h + len)) {
        set_err(ws, "%s", "out of memory");
        return -1;
    }
    uint8_t *dst = ws->out + ws->out_len;
    memcpy(dst, hdr, h);
    dst += h;
    for (size_t i = 0; i < len; i++) dst[i] = data[i] ^ mask[i & 3];
    ws->out_len += h + len;
    return 0;
}

int lt_ws_send(struct lt_ws_ctx *ctx, struct lt_ws *ws, const uint8_t *data, size_t len)
{
    if (ws->state != LT_WS_OPEN) {
        set_err(ws, "%s", "send on a connection that is not open");
        return -1;
    }
    if (queue_frame(ctx, ws, 0x2, data, len) || flush(ws)) return -1;
    update_interest(ctx, ws);
    return 0;
}

int lt_ws_ctx_offer_compression(struct lt_ws_ctx *ctx)
{
    ctx->z = ws_deflate_ctx_new();
    ctx->compression = ctx->z != NULL;
    return ctx->z ? 0 : -1;
}

/* Delivers one complete message by opcode, inflated first when it came compressed.
 * Returns 0, or -1 to stop. */
static int deliver(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint8_t op, int rsv1, const uint8_t *p,
                   size_t n, const struct lt_ws_cb *cb, void *user)
{
    if (op != 0x2) return 0; /* text messages are not part of the protocol: ignored */
    if (!rsv1) return cb->on_message(user, p, n);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (ws_inflate_message(ctx->z, p, n, FRAME_MAX, &plain, &plain_len)) {
        set_err(ws, "%s", "a compressed message does not inflate");
        return -1;
    }
    int r = cb->on_message(user, plain, plain_len);
    free(plain);
    return r;
}

/* Parses every complete frame in buf. Returns bytes consumed, or -1 to stop. */
static ssize_t parse_frames(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint8_t *buf, size_t len,
                            const struct lt_ws_cb *cb, void *user)
{
    size_t pos = 0;
    while (len - pos >= 2) {
        uint8_t *f = buf + pos;
        size_t avail = len - pos;
        int fin = f[0] & 0x80, masked = f[1] & 0x80;
        uint8_t op = f[0] & 0x0F;
        uint64_t plen = f[1] & 0x7F;
        size_t hl = 2;
        int rsv1 = (f[0] & 0x40) != 0;
        if ((f[0] & 0x30) || (rsv1 && (!ws->deflate || (f[0] & 0x0F) == 0 || (f[0] & 0x08)))) {
            set_err(ws, "%s", "frame with reserved bits set that no extension allows");
            return -1;
        }
        if (plen == 126) {
            if (avail < 4) break;
            plen = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | f[2 + i];
            hl = 10;
        }
        if (plen > FRAME_MAX) {
            set_err(ws, "%s", "frame larger than 1 GiB");
            return -1;
        }
        size_t mask_at = hl;
        if (masked) hl += 4;
        if (avail < hl + plen) break;
        uint8_t *payload = f + hl;
        if (masked) /* servers must not mask, but tolerating it costs nothing */
            for (uint64_t i = 0; i < plen; i++) payload[i] ^= f[mask_at + (i & 3)];
        pos += hl + (size_t)plen;

        if (op >= 0x8) { /* control frames: never fragmented */
            if (op == 0x8) {
                ws->server_closed = 1;
                char why[64] = "no status";
                if (plen >= 2)
                    snprintf(why, sizeof why, "status %u",
                             (unsigned)(payload[0] << 8 | payload[1]));
                set_err(ws, "closed by the server (%s)", why);
                return -1;
            }
            if (op == 0x9 && (queue_frame(ctx, ws, 0xA, payload, (size_t)plen) || flush(ws)))
                return -1;
            continue;
        }
        if (op == 0x0) {
            if (!ws->frag_open) {
                set_err(ws, "%s", "continuation frame without a start");
                return -1;
            }
            if (reserve(&ws->frag, &ws->frag_cap, ws->frag_len + plen)) {
                set_err(ws, "%s", "out of memory");
                return -1;
            }
            memcpy(ws->frag + ws->frag_len, payload, (size_t)plen);
            ws->frag_len += (size_t)plen;
            if (fin) {
                ws->frag_open = 0;
                int r =
                    deliver(ctx, ws, ws->frag_op, ws->frag_rsv1, ws->frag, ws->frag_len, cb, user);
                ws->frag_len = 0;
                if (r) return -1;
            }
            continue;
        }
        if (ws->frag_open) {
            set_err(ws, "%s", "new message inside a fragmented one");
            return -1;
        }
        if (fin) {
            if (deliver(ctx, ws, op, rsv1, payload, (size_t)plen, cb, user)) return -1;
        } else {
            ws->frag_open = 1;
            ws->frag_op = op;
            ws->frag_rsv1 = rsv1;
            if (reserve(&ws->frag, &ws->frag_cap, plen)) {
                set_err(ws, "%s", "out of memory");
                return -1;
            }
            memcpy(ws->frag, payload, (size_t)plen);
            ws->frag_len = (size_t)plen;
        }
    }
    return (ssize_t)pos;
}

/* ---- handshake ---- */

static void b64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int send_upgrade(struct lt_ws_ctx *ctx, struct lt_ws *ws)
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(&ctx->rng);
        memcpy(raw + i, &r, 8);
    }
    char key[32];
    b64(raw, 16, key);
    char cat[128];
    snprintf(cat, sizeof cat, "%s%s", key, WS_GUID);
    unsigned char sha[EVP_MAX_MD_SIZE];
    unsigned shalen = 0;
    if (!EVP_Digest(cat, strlen(cat), sha, &shalen, EVP_sha1(), NULL)) {
        set_err(ws, "%s", "SHA-1 unavailable");
        return -1;
    }
    b64(sha, shalen, ws->accept);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nUser-Agent: zwibbler-loadtest\r\n%s\r\n",
                     ctx->target.path, ctx->target.host_hdr, key,
                     ctx->compression ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                        "client_no_context_takeover; server_no_context_takeover\r\n"
                                      : "");
    ws->state = LT_WS_HTTP;
    return out_append(ws, (const uint8_t *)req, (size_t)n) || flush(ws) ? -1 : 0;
}

/* Checks a complete response head; returns 0 when it accepts the upgrade. */
static int check_response(struct lt_ws *ws, char *head)
{
    char *line_end = strstr(head, "\r\n");
    *line_end = 0;
    int status = 0;
    if (sscanf(head, "HTTP/%*d.%*d %d", &status) != 1 || status != 101) {
        set_err(ws, "upgrade refused: %.100s", head);
        return -1;
    }
    int accepted = 0;
    for (char *line = line_end + 2; *line;) {
        char *next = strstr(line, "\r\n");
        *next = 0;
        if (!strncasecmp(line, "Sec-WebSocket-Extensions:", 25) &&
            strstr(line, "permessage-deflate"))
            ws->deflate = 1;
        if (!strncasecmp(line, "Sec-WebSocket-Accept:", 21)) {
            char *v = line + 21;
            while (*v == ' ' || *v == '\t') v++;
            size_t vl = strlen(v);
            while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t')) v[--vl] = 0;
            if (strcmp(v, ws->accept)) {
                set_err(ws, "%s", "wrong Sec-WebSocket-Accept in the upgrade response");
                return -1;
            }
            accepted = 1;
        }
        line = next + 2;
    }
    if (accepted) return 0;
    set_err(ws, "%s", "no Sec-WebSocket-Accept in the upgrade response");
    return -1;
}

/* Drives the TLS handshake; once done, sends the upgrade request. */
static int tls_step(struct lt_ws_ctx *ctx, struct lt_ws *ws)
{
    int r = lt_net_tls_step(&ws->net, ws->err, sizeof ws->err);
    if (r < 0) return -1;
    return r == 1 ? send_upgrade(ctx, ws) : 0;
}

/* The TCP connect finished: start TLS, or go straight to the upgrade. */
static int tcp_done(struct lt_ws_ctx *ctx, struct lt_ws *ws)
{
    if (lt_net_connected(&ws->net, ws->err, sizeof ws->err)) return -1;
    if (!ctx->target.tls) return send_upgrade(ctx, ws);
    if (lt_net_tls_begin(&ctx->target, &ws->net, ws->err, sizeof ws->err)) return -1;
    ws->state = LT_WS_TLS;
    return tls_step(ctx, ws);
}

void lt_ws_init(struct lt_ws *ws)
{
    memset(ws, 0, sizeof *ws);
    ws->net.fd = -1;
}

int lt_ws_connect(struct lt_ws_ctx *ctx, struct lt_ws *ws, void *tag)
{
    ws->ctx = ctx;
    ws->tag = tag;
    ws->state = LT_WS_TCP;
    if (lt_net_connect(&ctx->target, &ws->net, ws->err, sizeof ws->err)) return -1;
    ws->ev = EPOLLIN | EPOLLOUT;
    struct epoll_event ev = { .events = ws->ev, .data.ptr = tag };
    if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, ws->net.fd, &ev)) {
        set_err(ws, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Consumes input in `in` (HTTP head then frames). Returns 0 or -1. */
static int consume(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint8_t *buf, size_t len,
                   const struct lt_ws_cb *cb, void *user, size_t *used)
{
    *used = 0;
    if (ws->state == LT_WS_HTTP) {
        uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > HTTP_MAX) {
                set_err(ws, "%s", "upgrade response too large");
                return -1;
            }
            return 0;
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char *head = malloc(head_len + 1);
        if (!head) {
            set_err(ws, "%s", "out of memory");
            return -1;
        }
        memcpy(head, buf, head_len);
        head[head_len] = 0;
        int rc = check_response(ws, head);
        free(head);
        if (rc) return -1;
        ws->state = LT_WS_OPEN;
        *used = head_len;
        cb->on_open(user);
        if (ws->state != LT_WS_OPEN || ws->err[0]) return -1;
    }
    if (ws->state == LT_WS_OPEN) {
        ssize_t n = parse_frames(ctx, ws, buf + *used, len - *used, cb, user);
        if (n < 0) return -1;
        *used += (size_t)n;
    }
    return 0;
}

static int do_read(struct lt_ws_ctx *ctx, struct lt_ws *ws, const struct lt_ws_cb *cb, void *user)
{
    for (;;) {
        ssize_t n = lt_net_read(&ws->net, ctx->scratch, ctx->scratch_cap, ws->err, sizeof ws->err);
        if (n < 0) {
            ws->server_closed = ws->net.eof;
            return -1;
        }
        if (n == 0) return 0;
        ctx->wire_in += (size_t)n;
        size_t used;
        if (ws->in_len == 0) {
            /* Common case: whole frames straight from the shared buffer. */
            if (consume(ctx, ws, ctx->scratch, (size_t)n, cb, user, &used)) return -1;
            if (used < (size_t)n) {
                if (reserve(&ws->in, &ws->in_cap, (size_t)n - used)) {
                    set_err(ws, "%s", "out of memory");
                    return -1;
                }
                memcpy(ws->in, ctx->scratch + used, (size_t)n - used);
                ws->in_len = (size_t)n - used;
            }
        } else {
            if (reserve(&ws->in, &ws->in_cap, ws->in_len + (size_t)n)) {
                set_err(ws, "%s", "out of memory");
                return -1;
            }
            memcpy(ws->in + ws->in_len, ctx->scratch, (size_t)n);
            ws->in_len += (size_t)n;
            if (consume(ctx, ws, ws->in, ws->in_len, cb, user, &used)) return -1;
            memmove(ws->in, ws->in + used, ws->in_len - used);
            ws->in_len -= used;
            if (ws->in_len == 0 && ws->in_cap > 65536) {
                free(ws->in);
                ws->in = NULL;
                ws->in_cap = 0;
            }
        }
        /* Plain sockets are level-triggered: one read per wake-up is enough and
         * saves the EAGAIN call. TLS may hold decrypted bytes epoll cannot see,
         * so it reads on until OpenSSL wants more from the socket. */
        if (!ws->net.ssl) return 0;
    }
}

int lt_ws_handle(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint32_t events,
                 const struct lt_ws_cb *cb, void *user)
{
    if (ws->state == LT_WS_TCP) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return 0;
        if (tcp_done(ctx, ws)) goto fail;
    } else if (ws->state == LT_WS_TLS) {
        if (tls_step(ctx, ws)) goto fail;
    }
    if (ws->state >= LT_WS_HTTP && ws->state <= LT_WS_OPEN) {
        if (flush(ws)) goto fail;
        if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) || ws->net.ssl) {
            if (do_read(ctx, ws, cb, user)) goto fail;
            if (flush(ws)) /* pongs and replies queued while reading */
                goto fail;
        }
    }
    update_interest(ctx, ws);
    return 0;
fail:
    ws->state = LT_WS_ENDED;
    return -1;
}

void lt_ws_close(struct lt_ws_ctx *ctx, struct lt_ws *ws)
{
    if (ws->net.fd >= 0) {
        if (ws->state == LT_WS_OPEN && !ws->server_closed) {
            /* Best effort: a polite close (1000) if the socket takes it now. */
            ws->out_off = ws->out_len = 0;
            static const uint8_t normal[2] = { 0x03, 0xE8 };
            if (queue_frame(ctx, ws, 0x8, normal, 2) == 0) (void)flush(ws);
        }
        epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, ws->net.fd, NULL);
    }
    lt_net_close(&ws->net);
    ws->state = LT_WS_ENDED;
    free(ws->in);
    free(ws->out);
    free(ws->frag);
    ws->in = ws->out = ws->frag = NULL;
    ws->in_len = ws->in_cap = ws->out_len = ws->out_off = ws->out_cap = 0;
    ws->frag_len = ws->frag_cap = 0;
}
