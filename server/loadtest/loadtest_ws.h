/* loadtest_ws: the load tester's minimal client side of WebSocket (RFC 6455) over
 * loadtest_net's non-blocking TCP or TLS: HTTP upgrade with the Sec-WebSocket-Accept check,
 * masked binary frames out, frames in (7/16/64-bit lengths, fragmentation),
 * ping -> pong, close. Everything runs on the caller's epoll loop, one thread; no
 * function blocks. Not a general client: binary messages only, no extensions. */
#ifndef ZW_LOADTEST_WS_H
#define ZW_LOADTEST_WS_H

#include <stddef.h>
#include <stdint.h>

#include "loadtest_net.h"

/* What all connections to one URL share. */
struct lt_ws_ctx {
    struct lt_net_target target;
    int epfd;
    uint8_t *scratch; /* receive buffer shared by all connections (one thread) */
    size_t scratch_cap;
    uint64_t rng;               /* masks and keys: unpredictability is not needed here */
    int compression;            /* offer permessage-deflate */
    struct ws_deflate_ctx *z;   /* inflates what the server compressed (one thread) */
    uint64_t wire_in, wire_out; /* bytes read and written, all connections (TLS: clear) */
};

enum lt_ws_state { LT_WS_IDLE, LT_WS_TCP, LT_WS_TLS, LT_WS_HTTP, LT_WS_OPEN, LT_WS_ENDED };

struct lt_ws {
    struct lt_net_conn net;
    struct lt_ws_ctx *ctx; /* set by lt_ws_connect */
    enum lt_ws_state state;
    uint32_t ev; /* epoll interest registered now */
    void *tag;   /* epoll data pointer */
    uint8_t *in; /* unparsed input: a partial frame or HTTP response */
    size_t in_len, in_cap;
    uint8_t *out; /* unsent output */
    size_t out_off, out_len, out_cap;
    uint8_t *frag; /* a fragmented message being collected */
    size_t frag_len, frag_cap;
    int frag_open;
    uint8_t frag_op;
    int frag_rsv1;     /* the fragmented message is compressed */
    int deflate;       /* the server took permessage-deflate */
    int server_closed; /* the server sent a close frame or ended the stream */
    char accept[32];   /* the Sec-WebSocket-Accept we expect */
    char err[128];     /* why the connection ended */
};

struct lt_ws_cb {
    /* The upgrade completed; messages may be sent from here on. */
    void (*on_open)(void *user);
    /* One complete binary message; data is valid only during the call. Returns 0
     * to go on, -1 to stop reading (the caller then closes the connection). */
    int (*on_message)(void *user, const uint8_t *data, size_t len);
};

/* Parses URL (ws:// or wss://), resolves it once and prepares TLS. Returns 0, or -1
 * with a message in err. */
int lt_ws_ctx_init(struct lt_ws_ctx *ctx, const char *url, int tls_verify, int epfd, char *err,
                   size_t err_len);
void lt_ws_ctx_free(struct lt_ws_ctx *ctx);
/* Offers permessage-deflate on every connection from now on. Returns -1 when memory
 * ran out. */
int lt_ws_ctx_offer_compression(struct lt_ws_ctx *ctx);

void lt_ws_init(struct lt_ws *ws);
/* Starts a non-blocking connect registered on ctx->epfd with data pointer tag.
 * Returns 0, or -1 with ws->err set (the caller still calls lt_ws_close). */
int lt_ws_connect(struct lt_ws_ctx *ctx, struct lt_ws *ws, void *tag);
/* Does all I/O possible after epoll reported events for ws, calling cb. Returns 0
 * while the connection lives, -1 once it ended (ws->err says why; server_closed
 * tells an orderly close by the server from a failure). */
int lt_ws_handle(struct lt_ws_ctx *ctx, struct lt_ws *ws, uint32_t events,
                 const struct lt_ws_cb *cb, void *user);
/* Queues one masked binary message and tries to write it now. Valid once open.
 * Returns 0, or -1 when the connection failed (ws->err set). */
int lt_ws_send(struct lt_ws_ctx *ctx, struct lt_ws *ws, const uint8_t *data, size_t len);
/* Sends a close frame when possible, then releases the socket and buffers. Safe
 * on a connection in any state, and twice. */
void lt_ws_close(struct lt_ws_ctx *ctx, struct lt_ws *ws);

#endif
