/* wsframe: RFC 6455 framing for the server side, as pure functions over bytes.
 *
 * A reader turns the bytes a client sends into events (messages, pings, pongs, a
 * close, or the protocol error that ends the connection); two encoders build the
 * frames the server sends. Nothing here touches sockets, threads or clocks, and
 * there is no global state: one struct ws_reader per connection.
 *
 * Text messages are delivered like binary ones (ev.text tells them apart): UTF-8 is
 * not validated, as the reference server treats text as bytes. permessage-deflate
 * payloads are delivered compressed (ev.compressed); inflating them is the caller's
 * job (wsdeflate.h), bounded there by its own output limit.
 */
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

/* Close status codes (RFC 6455 §7.4.1) the server sends or reports. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* reported when a close frame has no code; never sent */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_SERVER_ERROR = 1011,
};

/* Control frames carry at most this many payload bytes (RFC 6455 §5.5). */
#define WS_MAX_CONTROL_PAYLOAD 125u
/* Longest server frame header: 2 bytes, then a 64-bit length (servers never mask). */
#define WS_MAX_HEADER 10u
/* Longest close frame: a 2-byte header and a 125-byte payload. */
#define WS_MAX_CLOSE_FRAME 127u

struct ws_reader_limits {
    /* Largest message accepted: all its fragments together, counted as received
     * (compressed bytes when permessage-deflate is on). 0 accepts only empty
     * messages; there is no "unlimited" value (SIZE_MAX comes closest). */
    size_t max_message;
    /* permessage-deflate was negotiated: RSV1 is allowed on the first frame of a
     * data message (and means "compressed"). */
    bool deflate;
};

enum ws_event_kind {
    WS_EV_NONE,    /* every byte given was consumed without completing an event */
    WS_EV_MESSAGE, /* a whole data message (all fragments joined) */
    WS_EV_PING,
    WS_EV_PONG,
    WS_EV_CLOSE, /* the peer's close frame: answer it and close */
    WS_EV_ERROR, /* the peer broke the protocol: send a close with `code`, then close */
};

struct ws_event {
    enum ws_event_kind kind;
    bool text;       /* MESSAGE: the first frame was TEXT (payload not validated) */
    bool compressed; /* MESSAGE: RSV1 was set on the message's first frame */
    /* MESSAGE/PING/PONG: the payload, unmasked; CLOSE: the reason text (not
     * NUL-terminated, not validated). Never NULL when kind is not NONE/ERROR, even
     * when len is 0. Points into the caller's buffer or the reader's own: valid
     * until the next ws_reader_feed or ws_reader_free on this reader. */
    uint8_t *data;
    size_t len;
    /* CLOSE: the peer's status (WS_CLOSE_NO_STATUS when the frame had none);
     * ERROR: the status to send in our close frame (1002, 1009, or 1011). */
    uint16_t code;
    /* ERROR: a short static text for the log, e.g. "unmasked client frame". */
    const char *why;
    /* ERROR 1009: the size the message would have reached (fragments so far plus the
     * frame whose header announced too much). */
    uint64_t size;
};

/* One per connection. Small: the state of the frame being read and the message
 * being assembled; `buf` is NULL while the connection is idle. Treat as opaque. */
struct ws_reader {
    uint8_t *buf;        /* own buffer: a message's fragments, then a control payload */
    size_t cap;          /* its capacity */
    size_t msg_len;      /* bytes of the fragmented message held in buf */
    size_t max_message;  /* from the limits */
    uint64_t frame_len;  /* payload length of the frame being read */
    uint64_t frame_got;  /* payload bytes of it received so far */
    uint8_t hdr[14];     /* header bytes, while a header arrives in pieces */
    uint8_t hdr_got;     /* how many of them; 0 between frames */
    uint8_t mask[4];     /* masking key of the frame being read */
    uint8_t opcode;      /* of the frame being read */
    uint8_t state;       /* reading a header, a payload, or done (after CLOSE/ERROR) */
    bool release;        /* drop buf on the next call: its message was delivered */
    bool fin;            /* of the frame being read */
    bool deflate;        /* from the limits */
    bool msg_open;       /* a fragmented message is being assembled */
    bool msg_text;       /* its first frame was TEXT */
    bool msg_compressed; /* its first frame had RSV1 */
};

void ws_reader_init(struct ws_reader *r, const struct ws_reader_limits *lim);
/* Releases the reader's buffer and returns it to its initial state (same limits):
 * call when the connection ends, whatever state the reader is in. */
void ws_reader_free(struct ws_reader *r);

/* Consumes bytes of buf[0..len) and stops after at most one event. buf is writable:
 * payloads are unmasked in place. Returns the number of bytes consumed; *ev is
 * WS_EV_NONE when all given bytes were consumed without completing an event.
 *
 * Event data points into buf (zero copy) when the frame's whole payload lay in buf
 * and the frame is not part of a fragmented message: the common case allocates and
 * copies nothing. Otherwise it points into the reader's own buffer, which holds only
 * a frame that arrived in pieces or the fragments of a message being assembled; that
 * buffer is released at the start of the next call once its message has been
 * delivered (a call with len 0 does only that), so idle connections hold none.
 *
 * Control frames between the fragments of a message are delivered as their own
 * events without disturbing its assembly. Every protocol rule is checked from the
 * frame header as soon as the bytes concerned have arrived, before any payload is
 * stored; a message that would exceed max_message is refused (1009) from the header
 * of the frame that would pass it. After WS_EV_ERROR or WS_EV_CLOSE the reader
 * consumes nothing more (returns 0 with WS_EV_NONE). */
size_t ws_reader_feed(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_event *ev);

/* True when no frame and no message is partly received (for the read deadline):
 * between messages, or after CLOSE/ERROR. */
bool ws_reader_idle(const struct ws_reader *r);

/* For the read deadline of a frame in progress: its announced payload size (0 while
 * its header is incomplete) and the bytes of it (or of the header) received. */
void ws_reader_progress(const struct ws_reader *r, uint64_t *expected, uint64_t *received);

/* Server frame header for a payload of len bytes: FIN set, unmasked, RSV1 as given
 * (a compressed message). Returns the header length: 2, 4 or 10. */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], enum ws_opcode op, bool rsv1, uint64_t len);

/* A whole close frame with `code` and `reason` (NULL for none), the reason cut to
 * fit the 125-byte payload without splitting a UTF-8 sequence. WS_CLOSE_NO_STATUS
 * (or 0) gives a close frame without payload, as 1005 must never be sent: echoing
 * ev.code of a CLOSE event is always right. Returns the frame's length. */
size_t ws_close_frame(uint8_t out[WS_MAX_CLOSE_FRAME], uint16_t code, const char *reason);

/* Whether a close status may appear in a close frame (RFC 6455 §7.4, IANA registry):
 * 1000-1003, 1007-1014 and 3000-4999. */
bool ws_close_code_valid(uint16_t code);

#endif
