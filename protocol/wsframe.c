/* wsframe: owns RFC 6455 framing on the server side: reading client frames into
 * events (every rule of §5 a server must enforce) and building server frames.
 * Only the reader's own buffer allocates. */
#include "wsframe.h"

#include <stdlib.h>
#include <string.h>

#include "codec.h" /* big-endian helpers */

enum { R_HEADER, R_PAYLOAD, R_DONE };

#define B0_FIN 0x80u
#define B0_RSV1 0x40u
#define B0_RSV23 0x30u
#define B0_OPCODE 0x0Fu
#define B1_MASK 0x80u
#define B1_LEN 0x7Fu
#define OP_CONTROL 0x08u /* opcodes 8-15 are control frames */

void ws_reader_init(struct ws_reader *r, const struct ws_reader_limits *lim)
{
    memset(r, 0, sizeof *r);
    r->state = R_HEADER;
    r->max_message = lim->max_message;
    r->deflate = lim->deflate;
}

void ws_reader_free(struct ws_reader *r)
{
    struct ws_reader_limits lim = { r->max_message, r->deflate };

    free(r->buf);
    ws_reader_init(r, &lim);
}

bool ws_reader_idle(const struct ws_reader *r)
{
    return r->state == R_DONE || (r->state == R_HEADER && r->hdr_got == 0 && !r->msg_open);
}

void ws_reader_progress(const struct ws_reader *r, uint64_t *expected, uint64_t *received)
{
    bool payload = r->state == R_PAYLOAD;
    *expected = payload ? r->frame_len : 0;
    *received = payload ? r->frame_got : r->hdr_got;
}

/* Drops the reader's buffer and whatever it held. */
static void drop_buffer(struct ws_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
    r->msg_len = 0;
    r->msg_open = false;
    r->release = false;
}

/* The connection is over: nothing is read after an error, and nothing but the
 * error is reported, so the buffer can go at once. */
static size_t fail(struct ws_reader *r, struct ws_event *ev, uint16_t code, const char *why,
                   size_t consumed)
{
    drop_buffer(r);
    r->state = R_DONE;
    ev->kind = WS_EV_ERROR;
    ev->code = code;
    ev->why = why;
    return consumed;
}

/* ---- Header ---- */

/* Every client frame is masked (checked before this matters), so a header is two
 * bytes, the extended length, then the 4-byte key. */
static size_t header_size(uint8_t b1)
{
    unsigned l7 = b1 & B1_LEN;

    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + 4;
}

static uint64_t header_payload_len(const uint8_t *h)
{
    unsigned l7 = h[1] & B1_LEN;

    if (l7 == 126) return codec_get16(h + 2);
    if (l7 == 127) return codec_get64(h + 2);
    return l7;
}

/* The rules that the first two bytes settle; NULL when they pass. Checked as soon as
 * those bytes arrive, so a broken frame is refused before the rest of it. */
static const char *check_start(const struct ws_reader *r, uint8_t b0, uint8_t b1)
{
    unsigned op = b0 & B0_OPCODE;

    if (b0 & B0_RSV23) return "RSV2 or RSV3 set";
    if (op > WS_OP_BINARY && op != WS_OP_CLOSE && op != WS_OP_PING && op != WS_OP_PONG)
        return "unknown opcode";
    if (!(b1 & B1_MASK)) return "unmasked client frame";
    if (op & OP_CONTROL) {
        if (!(b0 & B0_FIN)) return "fragmented control frame";
        if (b0 & B0_RSV1) return "RSV1 on a control frame";
        if ((b1 & B1_LEN) > WS_MAX_CONTROL_PAYLOAD) return "control frame longer than 125 bytes";
        return NULL;
    }
    if (op == WS_OP_CONT) {
        if (!r->msg_open) return "continuation without a message";
        if (b0 & B0_RSV1) return "RSV1 on a continuation frame";
    } else {
        if (r->msg_open) return "new message inside a fragmented one";
        if ((b0 & B0_RSV1) && !r->deflate) return "RSV1 without permessage-deflate";
    }
    return NULL;
}

/* Reads the next frame header at buf[*pos], or finishes one begun by an earlier call
 * (collected in r->hdr). Returns 1 when it is complete (state becomes R_PAYLOAD), 0
 * when buf ran out first, -1 after reporting an error in *ev. */
static int read_header(struct ws_reader *r, const uint8_t *buf, size_t len, size_t *pos,
                       struct ws_event *ev)
{
    const uint8_t *h;
    const char *why;
    size_t avail = len - *pos, need;
    uint64_t plen;

    if (r->hdr_got == 0 && avail >= 2 && avail >= header_size(buf[*pos + 1])) {
        /* The usual case: the whole header lies in buf, read it there. */
        h = buf + *pos;
        if ((why = check_start(r, h[0], h[1])) != NULL) {
            fail(r, ev, WS_CLOSE_PROTOCOL, why, 0);
            return -1;
        }
        need = header_size(h[1]);
        *pos += need;
    } else {
        for (;;) {
            need = r->hdr_got < 2 ? 2 : header_size(r->hdr[1]);
            if (r->hdr_got == need) break;
            if (*pos == len) return 0;
            size_t take = need - r->hdr_got < len - *pos ? need - r->hdr_got : len - *pos;
            memcpy(r->hdr + r->hdr_got, buf + *pos, take);
            r->hdr_got = (uint8_t)(r->hdr_got + take);
            *pos += take;
            if (r->hdr_got == 2 && (why = check_start(r, r->hdr[0], r->hdr[1])) != NULL) {
                fail(r, ev, WS_CLOSE_PROTOCOL, why, *pos);
                return -1;
            }
        }
        h = r->hdr;
    }

    plen = header_payload_len(h);
    if (plen >> 63) {
        fail(r, ev, WS_CLOSE_PROTOCOL, "64-bit length with the top bit set", *pos);
        return -1;
    }
    r->opcode = h[0] & B0_OPCODE;
    if (!(r->opcode & OP_CONTROL)) {
        /* msg_len <= max_message always holds, so this cannot wrap. The payload is
         * neither stored nor read before this check. */
        if (plen > (uint64_t)(r->max_message - r->msg_len)) {
            ev->size = plen + r->msg_len;
            fail(r, ev, WS_CLOSE_TOO_BIG, "message too big", *pos);
            return -1;
        }
        if (r->opcode != WS_OP_CONT) {
            r->msg_text = r->opcode == WS_OP_TEXT;
            r->msg_compressed = (h[0] & B0_RSV1) != 0;
        }
    }
    r->fin = (h[0] & B0_FIN) != 0;
    memcpy(r->mask, h + need - 4, 4);
    r->frame_len = plen;
    r->frame_got = 0;
    r->hdr_got = 0;
    r->state = R_PAYLOAD;
    return 1;
}

/* ---- Payload ---- */

/* XORs n bytes of src with the masking key into dst (which may be src), starting at
 * key byte `phase`. Eight bytes at a time: the key laid out twice from that phase. */
static void unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], size_t phase)
{
    uint8_t k8[8];
    uint64_t k, v;
    size_t i;

    for (i = 0; i < 8; i++) k8[i] = key[(phase + i) & 3];
    memcpy(&k, k8, sizeof k);
    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&v, src + i, sizeof v);
        v ^= k;
        memcpy(dst + i, &v, sizeof v);
    }
    for (; i < n; i++) dst[i] = src[i] ^ k8[i & 7];
}

/* Makes room for `need` bytes in the reader's buffer. A frame delivered alone gets
 * exactly its size; a fragmented message grows geometrically (many small fragments
 * must not cost a copy each), never past what the limit can use. */
static bool reserve(struct ws_reader *r, size_t need, bool exact)
{
    size_t cap = need, grown, most;
    uint8_t *p;

    if (need <= r->cap) return true;
    if (!exact) {
        most = r->max_message > SIZE_MAX - WS_MAX_CONTROL_PAYLOAD
                   ? SIZE_MAX
                   : r->max_message + WS_MAX_CONTROL_PAYLOAD;
        grown = r->cap > SIZE_MAX / 2 ? SIZE_MAX : r->cap * 2;
        if (grown > most) grown = most;
        if (grown > cap) cap = grown;
    }
    p = realloc(r->buf, cap);
    if (!p) return false;
    r->buf = p;
    r->cap = cap;
    return true;
}

/* A close payload is empty, or a valid status code and a reason. */
static size_t deliver_close(struct ws_reader *r, struct ws_event *ev, uint8_t *p, size_t n,
                            size_t consumed)
{
    if (n == 1)
        return fail(r, ev, WS_CLOSE_PROTOCOL, "close frame with a 1-byte payload", consumed);
    ev->code = WS_CLOSE_NO_STATUS;
    if (n >= 2) {
        ev->code = codec_get16(p);
        if (!ws_close_code_valid(ev->code))
            return fail(r, ev, WS_CLOSE_PROTOCOL, "invalid close code", consumed);
        p += 2;
        n -= 2;
    }
    ev->kind = WS_EV_CLOSE;
    ev->data = p;
    ev->len = n;
    /* Nothing more is read; the reason may sit in our buffer until the next call. */
    r->state = R_DONE;
    r->msg_open = false;
    r->release = true;
    return consumed;
}

/* Reports the frame just completed (the last of its message for data frames). */
static size_t deliver(struct ws_reader *r, struct ws_event *ev, uint8_t *p, size_t n,
                      size_t consumed)
{
    switch (r->opcode) {
    case WS_OP_CLOSE: return deliver_close(r, ev, p, n, consumed);
    case WS_OP_PING: ev->kind = WS_EV_PING; break;
    case WS_OP_PONG: ev->kind = WS_EV_PONG; break;
    default:
        ev->kind = WS_EV_MESSAGE;
        ev->text = r->msg_text;
        ev->compressed = r->msg_compressed;
        break;
    }
    ev->data = p;
    ev->len = n;
    return consumed;
}

size_t ws_reader_feed(struct ws_reader *r, uint8_t *buf, size_t len, struct ws_event *ev)
{
    size_t pos = 0;

    memset(ev, 0, sizeof *ev);
    ev->kind = WS_EV_NONE;
    /* What the previous call delivered from our buffer has been handled. */
    if (r->release || r->state == R_DONE) drop_buffer(r);
    if (r->state == R_DONE) return 0;

    for (;;) {
        if (r->state == R_HEADER) {
            if (read_header(r, buf, len, &pos, ev) <= 0)
                return pos; /* out of bytes, or an error now in *ev */
        }

        bool control = (r->opcode & OP_CONTROL) != 0;
        size_t avail = len - pos;
        /* frame_len <= max_message (data) or 125 (control): it fits a size_t. */
        size_t flen = (size_t)r->frame_len;

        if (r->frame_got == 0 && avail >= flen && (control || (r->fin && !r->msg_open))) {
            /* Zero copy: a frame delivered alone whose payload lies whole in buf. */
            uint8_t *p = buf + pos;
            unmask(p, p, flen, r->mask, 0);
            pos += flen;
            r->state = R_HEADER;
            return deliver(r, ev, p, flen, pos);
        }

        /* Copy into our buffer, after the fragments held so far (msg_len is 0 when
         * no message is open). A control frame goes after them and is dropped once
         * delivered, leaving the fragments as they were. */
        size_t at = r->msg_len;
        size_t want = flen - (size_t)r->frame_got;
        if (want != 0 && avail == 0)
            return pos; /* reserve nothing before payload arrives: it may come whole */
        if (r->frame_got == 0 && !reserve(r, at + flen, r->fin && !r->msg_open))
            return fail(r, ev, WS_CLOSE_SERVER_ERROR, "out of memory", pos);
        size_t take = want < avail ? want : avail;
        if (take)
            unmask(r->buf + at + r->frame_got, buf + pos, take, r->mask, (size_t)r->frame_got & 3);
        r->frame_got += take;
        pos += take;
        if (r->frame_got < r->frame_len) return pos;
        r->state = R_HEADER;

        if (control) {
            if (!r->msg_open) r->release = true;
            return deliver(r, ev, r->buf + at, flen, pos);
        }
        r->msg_len += flen;
        if (!r->fin) {
            r->msg_open = true;
            continue;
        }
        size_t n = r->msg_len;
        r->msg_len = 0;
        r->msg_open = false;
        r->release = true;
        /* An empty message may have left the buffer unallocated; buf + pos is a
         * valid pointer either way (this call consumed at least the header). */
        return deliver(r, ev, n ? r->buf : buf + pos, n, pos);
    }
}

/* ---- Server frames ---- */

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], enum ws_opcode op, bool rsv1, uint64_t len)
{
    out[0] = (uint8_t)(B0_FIN | (rsv1 ? B0_RSV1 : 0) | ((unsigned)op & B0_OPCODE));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        codec_put16(out + 2, (uint16_t)len);
        return 4;
    }
    out[1] = 127;
    codec_put64(out + 2, len);
    return 10;
}

bool ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

size_t ws_close_frame(uint8_t out[WS_MAX_CLOSE_FRAME], uint16_t code, const char *reason)
{
    const size_t room = WS_MAX_CONTROL_PAYLOAD - 2;
    size_t n = 0;

    out[0] = B0_FIN | WS_OP_CLOSE;
    if (code == 0 || code == WS_CLOSE_NO_STATUS) {
        out[1] = 0;
        return 2;
    }
    codec_put16(out + 2, code);
    if (reason) {
        n = strnlen(reason, room + 1);
        /* Cut before the character that straddles the limit: a reason that is not
         * valid UTF-8 makes browsers fail the close (RFC 6455 §5.5.1). */
        if (n > room)
            for (n = room; n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80; n--)
                ;
        memcpy(out + 4, reason, n);
    }
    out[1] = (uint8_t)(2 + n);
    return 4 + n;
}
