/* wsframe: WebSocket frames (RFC 6455) as the server sees them — a reader that turns a
 * client's bytes into whole messages, pings, pongs and closes while enforcing every
 * rule a server must fail the connection for, and the encoders of server frames.
 * Pure functions over byte buffers: no sockets, no threads, no globals. */
#ifndef ZW_WSFRAME_H
#define ZW_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
    WS_OP_CONT = 0,
    WS_OP_TEXT = 1,
    WS_OP_BINARY = 2,
    WS_OP_CLOSE = 8,
    WS_OP_PING = 9,
    WS_OP_PONG = 10,
};

/* Close status codes (RFC 6455, section 7.4.1). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never sent in a frame: a close without a status */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_SERVER_ERROR = 1011,
};

struct ws_reader_limits {
    size_t max_message; /* largest message, all its frames together, as received */
    bool deflate;       /* permessage-deflate negotiated: RSV1 allowed on a first frame */
};

enum ws_event_kind { WS_EV_NONE, WS_EV_MESSAGE, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE, WS_EV_ERROR };

struct ws_event {
    enum ws_event_kind kind;
    bool text;       /* MESSAGE: sent as text (the server reads it as binary) */
    bool compressed; /* MESSAGE: RSV1 was set on its first frame */
    uint8_t *data;   /* MESSAGE, PING, PONG: the payload, unmasked; CLOSE: the reason */
    size_t len;
    uint16_t code;   /* CLOSE: the peer's status (1005 when none); ERROR: the code to send */
    const char *why; /* ERROR: what was wrong, for the log (static text); with 1009,
                        what was too big: "frame" or "fragmented message" */
    uint64_t size;   /* ERROR 1009: the size announced (frame, or message so far) */
};

/* The reader's state: a frame header in progress, and a buffer only while a frame
 * arrives in pieces or a fragmented message is being assembled. */
struct ws_reader {
    struct ws_reader_limits lim;
    uint8_t hdr[14];
    uint8_t hdr_len;        /* bytes of the current header received */
    bool in_frame;          /* the header is complete; payload_got < payload_len */
    uint8_t opcode, fin, rsv1;
    uint8_t mask[4];
    uint64_t payload_len, payload_got;
    uint8_t ctl[125];       /* a control frame's payload arriving in pieces */
    uint8_t *msg;           /* the data message being assembled */
    size_t msg_len, msg_cap;
    bool msg_open;          /* a data message has begun and not finished */
    bool msg_text, msg_compressed;
    bool done;              /* after a CLOSE or ERROR nothing more is read */
};

void ws_reader_init(struct ws_reader *r, const struct ws_reader_limits *lim);
/* Frees the reader's buffer (the reader may be initialised again). */
void ws_reader_free(struct ws_reader *r);

/* Consumes bytes of buf[0..len) (writable: payloads are unmasked in place) and stops
 * after at most one event. Returns the number of bytes consumed; *ev is WS_EV_NONE
 * when all of them were consumed without completing an event, or when the reader is
 * done (after CLOSE or ERROR it consumes nothing more). Event data points into buf
 * when a whole unfragmented frame lay there (no copy), otherwise into the reader's
 * buffer; either is valid until the next call. The reader's buffer is freed as soon
 * as its message has been delivered, so an idle connection holds none. */
size_t ws_reader_feed(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_event *ev);

/* Whether no frame and no message is partly received. */
bool ws_reader_idle(const struct ws_reader *r);

/* For the read deadline of a frame in progress: its announced payload size (0 while
 * the header itself is incomplete) and the bytes of it received. */
void ws_reader_progress(const struct ws_reader *r, uint64_t *expected, uint64_t *received);

/* A server frame header (FIN set, unmasked) for a payload of len bytes. Returns its
 * length: 2, 4 or 10. */
size_t ws_frame_header(uint8_t out[10], enum ws_opcode op, bool rsv1, uint64_t len);

/* A whole close frame with `code` and `reason` (cut to fit 125 bytes). Returns its
 * length. */
size_t ws_close_frame(uint8_t out[127], uint16_t code, const char *reason);

/* Whether an endpoint may send `code` in a close frame (RFC 6455, section 7.4). */
bool ws_close_code_valid(uint16_t code);

#endif
