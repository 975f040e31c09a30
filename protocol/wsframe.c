/* wsframe: owns the rules of client frames (RFC 6455, sections 5 and 7): header
 * parsing, unmasking, assembly of fragments, control frames between them, the size
 * limit checked from the header before any payload is kept, and server frame headers. */
#include "wsframe.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"

void ws_reader_init(struct ws_reader *r, const struct ws_reader_limits *lim)
{
    memset(r, 0, sizeof *r);
    r->lim = *lim;
}

static void drop_message(struct ws_reader *r)
{
    free(r->msg);
    r->msg = NULL;
    r->msg_len = r->msg_cap = 0;
}

void ws_reader_free(struct ws_reader *r)
{
    drop_message(r);
}

bool ws_reader_idle(const struct ws_reader *r)
{
    return !r->in_frame && r->hdr_len == 0 && !r->msg_open;
}

void ws_reader_progress(const struct ws_reader *r, uint64_t *expected, uint64_t *received)
{
    *expected = r->in_frame ? r->payload_len : 0;
    *received = r->in_frame ? r->payload_got : r->hdr_len;
}

bool ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* XORs n bytes with the mask, the first byte being byte `offset` of the payload. */
static void unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    uint8_t m[8];
    for (int i = 0; i < 8; i++) m[i] = mask[(offset + (uint64_t)i) & 3];
    uint64_t m8;
    memcpy(&m8, m, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m8;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++) p[i] ^= m[i & 7];
}

static size_t fail(struct ws_reader *r, struct ws_event *ev, size_t consumed, uint16_t code,
                   const char *why)
{
    r->done = true;
    drop_message(r);
    ev->kind = WS_EV_ERROR;
    ev->code = code;
    ev->why = why;
    return consumed;
}

/* The header length once its first two bytes are known. */
static size_t header_size(const uint8_t *h)
{
    size_t n = 2 + 4; /* client frames carry a masking key; a missing one fails below */
    if (!(h[1] & 0x80)) n -= 4;
    uint8_t l = h[1] & 0x7F;
    return n + (l == 126 ? 2 : l == 127 ? 8 : 0);
}

/* Checks a complete header and starts its frame. Returns NULL, or why it is refused
 * (*code: the close code). */
static const char *start_frame(struct ws_reader *r, uint16_t *code, uint64_t *size)
{
    const uint8_t *h = r->hdr;
    *code = WS_CLOSE_PROTOCOL;
    r->fin = h[0] >> 7;
    r->rsv1 = (h[0] >> 6) & 1;
    r->opcode = h[0] & 0x0F;
    if (!(h[1] & 0x80)) return "unmasked client frame";
    if (h[0] & 0x30) return "reserved bits RSV2/RSV3 set";
    uint8_t l = h[1] & 0x7F;
    uint64_t len = l;
    size_t at = 2;
    if (l == 126) {
        len = be_get16(h + 2);
        at = 4;
    } else if (l == 127) {
        len = be_get64(h + 2);
        at = 10;
        if (len >> 63) return "64-bit length with its top bit set";
    }
    memcpy(r->mask, h + at, 4);
    bool control = r->opcode & 0x08;
    switch (r->opcode) {
    case WS_OP_CONT:
        if (!r->msg_open) return "continuation without a start";
        if (r->rsv1) return "RSV1 set on a continuation frame";
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (r->msg_open) return "new message inside a fragmented one";
        if (r->rsv1 && !r->lim.deflate) return "RSV1 set without a negotiated extension";
        break;
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!r->fin) return "fragmented control frame";
        if (len > 125) return "control frame over 125 bytes";
        if (r->rsv1) return "RSV1 set on a control frame";
        break;
    default: return "reserved opcode";
    }
    if (!control) {
        uint64_t total = r->msg_len + len; /* msg_len <= max_message: no overflow */
        if (total > r->lim.max_message) {
            *code = WS_CLOSE_TOO_BIG;
            *size = total;
            return r->msg_len ? "fragmented message" : "frame";
        }
        if (r->opcode != WS_OP_CONT) {
            r->msg_open = true;
            r->msg_text = r->opcode == WS_OP_TEXT;
            r->msg_compressed = r->rsv1;
        }
    }
    r->payload_len = len;
    r->payload_got = 0;
    r->in_frame = true;
    return NULL;
}

/* Grows the message buffer to hold `need` bytes (need <= max_message). */
static int reserve(struct ws_reader *r, size_t need)
{
    if (need <= r->msg_cap) return 0;
    size_t cap = r->msg_cap * 2 > need ? r->msg_cap * 2 : need;
    if (cap > r->lim.max_message) cap = r->lim.max_message;
    if (cap < need) cap = need;
    uint8_t *b = realloc(r->msg, cap ? cap : 1);
    if (!b) return -1;
    r->msg = b;
    r->msg_cap = cap;
    return 0;
}

/* A control frame's whole payload: its event. */
static void control_event(struct ws_reader *r, uint8_t *p, size_t n, struct ws_event *ev)
{
    ev->data = p;
    ev->len = n;
    if (r->opcode == WS_OP_PING) {
        ev->kind = WS_EV_PING;
    } else if (r->opcode == WS_OP_PONG) {
        ev->kind = WS_EV_PONG;
    } else {
        ev->kind = WS_EV_CLOSE;
        ev->code = WS_CLOSE_NO_STATUS;
        if (n >= 2) {
            ev->code = be_get16(p);
            ev->data = p + 2;
            ev->len = n - 2;
        }
        r->done = true;
    }
}

static void message_event(struct ws_reader *r, uint8_t *p, size_t n, struct ws_event *ev)
{
    ev->kind = WS_EV_MESSAGE;
    ev->text = r->msg_text;
    ev->compressed = r->msg_compressed;
    ev->data = p;
    ev->len = n;
    r->msg_open = false;
}

size_t ws_reader_feed(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_event *ev)
{
    memset(ev, 0, sizeof *ev);
    if (r->done) return 0;
    if (!r->msg_open && r->msg) drop_message(r); /* delivered by the previous call */
    size_t pos = 0;
    while (pos < len) {
        if (!r->in_frame) {
            size_t need = r->hdr_len < 2 ? 2 : header_size(r->hdr);
            while (r->hdr_len < need && pos < len) {
                r->hdr[r->hdr_len++] = buf[pos++];
                if (r->hdr_len == 2) need = header_size(r->hdr);
            }
            if (r->hdr_len < need) return pos;
            uint16_t code;
            uint64_t size = 0;
            const char *why = start_frame(r, &code, &size);
            r->hdr_len = 0;
            if (why) {
                ev->size = size;
                return fail(r, ev, pos, code, why);
            }
        }
        bool control = r->opcode & 0x08;
        size_t avail = len - pos;
        uint64_t want = r->payload_len - r->payload_got;
        if (control) {
            size_t n = avail < want ? avail : (size_t)want;
            uint8_t *p = buf + pos;
            if (r->payload_got == 0 && n == want) { /* whole: from buf */
                unmask(p, n, r->mask, 0);
            } else {
                memcpy(r->ctl + r->payload_got, p, n);
                unmask(r->ctl + r->payload_got, n, r->mask, r->payload_got);
                p = r->ctl;
            }
            pos += n;
            r->payload_got += n;
            if (r->payload_got < r->payload_len) return pos;
            r->in_frame = false;
            size_t total = (size_t)r->payload_len;
            if (r->opcode == WS_OP_CLOSE && total == 1)
                return fail(r, ev, pos, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload");
            if (r->opcode == WS_OP_CLOSE && total >= 2 &&
                !ws_close_code_valid(be_get16(p)))
                return fail(r, ev, pos, WS_CLOSE_PROTOCOL, "close frame with an invalid status code");
            control_event(r, p, total, ev);
            return pos;
        }
        /* A data frame. A whole unfragmented message in buf goes out from there. */
        if (r->payload_got == 0 && r->fin && r->msg_len == 0 && avail >= want) {
            uint8_t *p = buf + pos;
            unmask(p, (size_t)want, r->mask, 0);
            pos += (size_t)want;
            r->in_frame = false;
            message_event(r, p, (size_t)want, ev);
            return pos;
        }
        size_t n = avail < want ? avail : (size_t)want;
        if (reserve(r, r->msg_len + (size_t)want))
            return fail(r, ev, pos, WS_CLOSE_SERVER_ERROR, "out of memory for a message");
        memcpy(r->msg + r->msg_len, buf + pos, n);
        unmask(r->msg + r->msg_len, n, r->mask, r->payload_got);
        r->msg_len += n;
        r->payload_got += n;
        pos += n;
        if (r->payload_got < r->payload_len) return pos;
        r->in_frame = false;
        if (r->fin) {
            message_event(r, r->msg, r->msg_len, ev);
            r->msg_len = 0; /* the buffer itself goes at the next call */
            return pos;
        }
    }
    return pos;
}

size_t ws_frame_header(uint8_t out[10], enum ws_opcode op, bool rsv1, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (rsv1 ? 0x40 : 0) | op);
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        be_put16(out + 2, (uint16_t)len);
        return 4;
    }
    out[1] = 127;
    be_put64(out + 2, len);
    return 10;
}

size_t ws_close_frame(uint8_t out[127], uint16_t code, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123) n = 123;
    size_t h = ws_frame_header(out, WS_OP_CLOSE, false, 2 + n);
    be_put16(out + h, code);
    if (n) memcpy(out + h + 2, reason, n);
    return h + 2 + n;
}
