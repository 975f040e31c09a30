/* framer: turns a client's queued messages into WebSocket frames, as iovecs over the
 * messages' own bytes: each protocol message split at the client's maxMessageSize,
 * compressed (permessage-deflate) once per message and split size, and shared by every
 * client that negotiated it; control frames written as they are. Loop thread only. */
#ifndef ZW_FRAMER_H
#define ZW_FRAMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct message;
struct ws_deflate_ctx;

#define FRAMER_MAX_FRAMES 128

/* The part of one message an iovec range covers, in framed bytes. */
struct framer_segment {
    size_t msg, start, end;
    bool last; /* end is the end of the message */
};

struct framer {
    struct iovec iov[FRAMER_MAX_FRAMES * 3];
    uint8_t hdr[FRAMER_MAX_FRAMES][12]; /* WebSocket header (<= 10) + piece header (2) */
    struct framer_segment seg[FRAMER_MAX_FRAMES];
    int niov, nframes, nseg;
};

/* How one client is framed. `z` is the loop's deflate state, used only the first time
 * a message is compressed for a split size (NULL: the client did not negotiate it). */
struct framer_client {
    uint32_t max_message;
    struct ws_deflate_ctx *z;
    size_t min_compress; /* smaller messages go out uncompressed */
};

/* Fills f with the frames of slots[i..n) (queue slots), starting `off` framed bytes
 * into slots[i], as many frames as f holds. Returns -1 when memory ran out. */
int framer_fill(struct framer *f, struct message *const *slots, size_t i, size_t n, size_t off,
                const struct framer_client *fc);

/* After `sent` bytes of f's iovecs were written: the message index and framed offset
 * reached. */
void framer_advance(const struct framer *f, size_t sent, size_t *i, size_t *off);

/* Total framed bytes in f. */
size_t framer_bytes(const struct framer *f);

#endif
