/* codec: owns the byte layout of every Zwibbler message (docs/protocol.md, Framing and Messages):
 * decoding client messages, encoding server messages, splitting by maxMessageSize and reassembling
 * continuations. Only the reassembler allocates. */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

/* Reassembly buffers above this size are released once their message has been
 * consumed, so one large document upload does not pin memory for the connection's
 * lifetime. Smaller buffers are kept to avoid a malloc per split message. */
#define REASM_KEEP_MAX ((size_t)1 << 20)

const char *codec_strerror(int err)
{
    switch (err) {
    case CODEC_OK: return "ok";
    case CODEC_E_SHORT: return "message shorter than its fields";
    case CODEC_E_VERSION: return "unsupported protocol version";
    case CODEC_E_TYPE: return "unexpected message type";
    case CODEC_E_TOO_BIG: return "message too big";
    case CODEC_E_SEQUENCE: return "continuation out of sequence";
    }
    return "unknown codec error";
}

/* ---- Decoding ----
 * A cursor with a sticky failure flag: once a read runs past the end every later
 * read yields zero/empty, so a decoder reads all its fields straight through and
 * checks for truncation once. Lengths are compared against what is left, never
 * added to a position, so lengths near 2^32 (or SIZE_MAX) cannot wrap. */
struct reader {
    const uint8_t *p;
    size_t left;
    int short_read;
};

static void reader_init(struct reader *rd, const uint8_t *msg, size_t len)
{
    rd->p = msg;
    rd->left = len;
    rd->short_read = 0;
}

/* Returns the next n bytes, or NULL (marking the reader short) if fewer remain. */
static const uint8_t *take(struct reader *rd, size_t n)
{
    const uint8_t *at = rd->p;

    if (rd->short_read || rd->left < n) {
        rd->short_read = 1;
        return NULL;
    }
    rd->p += n;
    rd->left -= n;
    return at;
}

static uint8_t take8(struct reader *rd)
{
    const uint8_t *p = take(rd, 1);
    return p ? p[0] : 0;
}

static uint16_t take16(struct reader *rd)
{
    const uint8_t *p = take(rd, 2);
    return p ? be_get16(p) : 0;
}

static uint32_t take32(struct reader *rd)
{
    const uint8_t *p = take(rd, 4);
    return p ? be_get32(p) : 0;
}

static uint64_t take64(struct reader *rd)
{
    const uint8_t *p = take(rd, 8);
    return p ? be_get64(p) : 0;
}

/* n bytes as a (pointer, length) pair; u32 wire lengths always fit a size_t. */
static void take_bytes(struct reader *rd, size_t n, const uint8_t **out, size_t *out_len)
{
    *out = take(rd, n);
    *out_len = *out ? n : 0;
}

/* "rest of the message" fields: always succeed, possibly empty. */
static void take_rest(struct reader *rd, const uint8_t **out, size_t *out_len)
{
    take_bytes(rd, rd->left, out, out_len);
}

/* Consumes the 2-byte header and checks byte 0. The `more` byte is ignored: after
 * reassembly it is meaningless to the message body. */
static int take_header(struct reader *rd, uint8_t *type)
{
    const uint8_t *h = take(rd, 2);

    if (!h) return CODEC_E_SHORT;
    *type = h[0];
    return CODEC_OK;
}

int codec_decode_init(const uint8_t *msg, size_t len, struct codec_init *out)
{
    struct reader rd;
    uint8_t type;
    int rc;

    reader_init(&rd, msg, len);
    memset(out, 0, sizeof *out);
    if ((rc = take_header(&rd, &type)) != CODEC_OK) return rc;
    if (type != CODEC_INIT) return CODEC_E_TYPE;

    out->version = take16(&rd);
    out->max_message_size = take32(&rd);
    out->creation_mode = take8(&rd);
    if (out->version == 2) {
        out->offset = take64(&rd);
        take_bytes(&rd, take8(&rd), &out->doc_id, &out->doc_id_len);
    } else {
        /* Anything but 00 02 is read with the protocol-3 layout (docs/protocol.md, Messages),
         * and only then is the version judged. */
        out->generation = take32(&rd);
        out->offset = take64(&rd);
        take_bytes(&rd, take32(&rd), &out->doc_id, &out->doc_id_len);
    }
    take_rest(&rd, &out->initial_data, &out->initial_data_len);
    if (rd.short_read) return CODEC_E_SHORT;
    if (out->version != 3 && out->version != 2) return CODEC_E_VERSION;
    return CODEC_OK;
}

int codec_decode_append(const uint8_t *msg, size_t len, struct codec_append *out)
{
    struct reader rd;
    uint8_t type;
    int rc;

    reader_init(&rd, msg, len);
    memset(out, 0, sizeof *out);
    if ((rc = take_header(&rd, &type)) != CODEC_OK) return rc;
    if (type != CODEC_APPEND_V2 && type != CODEC_APPEND_V3) return CODEC_E_TYPE;

    if (type == CODEC_APPEND_V3) out->generation = take32(&rd);
    out->offset = take64(&rd);
    take_rest(&rd, &out->data, &out->data_len);
    return rd.short_read ? CODEC_E_SHORT : CODEC_OK;
}

/* Bytes after the value are ignored, as the reference server does. */
int codec_decode_set_key(const uint8_t *msg, size_t len, struct codec_set_key *out)
{
    struct reader rd;
    uint8_t type;
    int rc;

    reader_init(&rd, msg, len);
    memset(out, 0, sizeof *out);
    if ((rc = take_header(&rd, &type)) != CODEC_OK) return rc;
    if (type != CODEC_SET_KEY) return CODEC_E_TYPE;

    out->request_id = take16(&rd);
    out->lifetime = take8(&rd);
    out->old_version = take32(&rd);
    out->new_version = take32(&rd);
    take_bytes(&rd, take32(&rd), &out->name, &out->name_len);
    take_bytes(&rd, take32(&rd), &out->value, &out->value_len);
    return rd.short_read ? CODEC_E_SHORT : CODEC_OK;
}

/* A dataLength shorter than the rest selects a prefix (trailing bytes ignored); a
 * longer one is a malformed message. */
int codec_decode_broadcast(const uint8_t *msg, size_t len, struct codec_broadcast *out)
{
    struct reader rd;
    uint8_t type;
    int rc;

    reader_init(&rd, msg, len);
    memset(out, 0, sizeof *out);
    if ((rc = take_header(&rd, &type)) != CODEC_OK) return rc;
    if (type != CODEC_BROADCAST) return CODEC_E_TYPE;

    take_bytes(&rd, take32(&rd), &out->data, &out->data_len);
    return rd.short_read ? CODEC_E_SHORT : CODEC_OK;
}

/* ---- Encoding ----
 * Sizes saturate at SIZE_MAX instead of wrapping, so an absurd length makes the
 * caller's allocation fail rather than succeed too small. */
static size_t size_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

static uint8_t *put_header(uint8_t *p, uint8_t type)
{
    p[0] = type;
    p[1] = 0;
    return p + 2;
}

/* Copies n bytes (src may be NULL when n is 0) and returns the end. */
static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
    if (n) memcpy(p, src, n);
    return p + n;
}

/* Length-prefixed string as in KEY INFORMATION. Lengths above 2^32-1 cannot be
 * represented; callers bound names and values far below that. */
static uint8_t *put_string32(uint8_t *p, const uint8_t *s, size_t n)
{
    be_put32(p, (uint32_t)n);
    return put_bytes(p + 4, s, n);
}

/* Protocol 2 gets the v2 layout; every other version the v3 one, mirroring INIT. */
static int append_is_v2(int version) { return version == 2; }

size_t codec_append_size(int version, size_t data_len)
{
    return size_add(append_is_v2(version) ? 10 : 14, data_len);
}

size_t codec_encode_append(uint8_t *out, int version, uint64_t offset, const uint8_t *data,
                           size_t data_len)
{
    uint8_t *p;

    if (append_is_v2(version)) {
        p = put_header(out, CODEC_APPEND_V2);
    } else {
        p = put_header(out, CODEC_APPEND_V3);
        be_put32(p, 0);
        p += 4;
    }
    be_put64(p, offset);
    p = put_bytes(p + 8, data, data_len);
    return (size_t)(p - out);
}

size_t codec_broadcast_size(size_t data_len) { return size_add(6, data_len); }

size_t codec_encode_broadcast(uint8_t *out, const uint8_t *data, size_t data_len)
{
    uint8_t *p = put_header(out, CODEC_BROADCAST);

    p = put_string32(p, data, data_len);
    return (size_t)(p - out);
}

size_t codec_error_size(size_t text_len) { return size_add(4, text_len); }

size_t codec_encode_error(uint8_t *out, uint16_t code, const char *text, size_t text_len)
{
    uint8_t *p = put_header(out, CODEC_ERROR);

    be_put16(p, code);
    p = put_bytes(p + 2, text, text_len);
    return (size_t)(p - out);
}

size_t codec_encode_ack(uint8_t *out, uint16_t ack, uint64_t length)
{
    uint8_t *p = put_header(out, CODEC_ACK);

    be_put16(p, ack);
    be_put64(p + 2, length);
    return CODEC_ACK_SIZE;
}

size_t codec_encode_set_key_ack(uint8_t *out, uint16_t ack, uint16_t request_id)
{
    uint8_t *p = put_header(out, CODEC_SET_KEY_ACK);

    be_put16(p, ack);
    be_put16(p + 2, request_id);
    return CODEC_SET_KEY_ACK_SIZE;
}

size_t codec_key_info_entry_size(size_t name_len, size_t value_len)
{
    return size_add(size_add(12, name_len), value_len);
}

size_t codec_key_info_begin(uint8_t *out)
{
    put_header(out, CODEC_KEY_INFO);
    return CODEC_KEY_INFO_HEADER;
}

size_t codec_key_info_add(uint8_t *out, uint32_t version, const uint8_t *name, size_t name_len,
                          const uint8_t *value, size_t value_len)
{
    uint8_t *p = out;

    be_put32(p, version);
    p = put_string32(p + 4, name, name_len);
    p = put_string32(p, value, value_len);
    return (size_t)(p - out);
}

/* ---- Splitting ---- */

static size_t split_max(uint32_t max)
{
    if (max == 0) return CODEC_DEFAULT_MAX_MESSAGE;
    return max < 3 ? 3 : max;
}

/* A buffer shorter than the 2-byte header is not a message: nothing to send. */
size_t codec_split_count(size_t len, uint32_t max)
{
    size_t m = split_max(max), rest, step = m - 2;

    if (len < 2) return 0;
    if (len <= m) return 1;
    rest = len - m;
    /* Ceiling division written so it cannot overflow near SIZE_MAX. */
    return 1 + rest / step + (rest % step != 0);
}

void codec_split_piece(const uint8_t *msg, size_t len, uint32_t max, size_t index,
                       struct codec_piece *out)
{
    size_t m = split_max(max), step = m - 2, start, n;

    if (index >= codec_split_count(len, max)) {
        /* Out of range: an empty, final continuation rather than a stray read. */
        out->hdr[0] = CODEC_CONTINUATION;
        out->hdr[1] = 0;
        out->body = NULL;
        out->body_len = 0;
        return;
    }
    if (index == 0) {
        start = 2;
        n = (len <= m ? len : m) - 2;
        out->hdr[0] = msg[0];
    } else {
        /* index < count guarantees start < len, so this product cannot overflow. */
        start = m + (index - 1) * step;
        n = len - start < step ? len - start : step;
        out->hdr[0] = CODEC_CONTINUATION;
    }
    out->hdr[1] = start + n < len;
    out->body = msg + start;
    out->body_len = n;
}

/* ---- Reassembly ---- */

void codec_reasm_init(struct codec_reasm *r, size_t limit)
{
    r->buf = NULL;
    r->len = 0;
    r->cap = 0;
    r->limit = limit;
    r->open = 0;
}

void codec_reasm_free(struct codec_reasm *r)
{
    free(r->buf);
    codec_reasm_init(r, r->limit);
}

/* Drops whatever was collected (or last returned), keeping a modest buffer. */
static void reasm_reset(struct codec_reasm *r)
{
    r->open = 0;
    r->len = 0;
    if (r->cap > REASM_KEEP_MAX) codec_reasm_free(r);
}

static int over_limit(const struct codec_reasm *r, size_t len)
{
    return r->limit != 0 && len > r->limit;
}

/* Appends n bytes to the open message, growing geometrically but never past the
 * limit. Sizes are checked before any allocation so a hostile length costs nothing. */
static int reasm_append(struct codec_reasm *r, const uint8_t *src, size_t n)
{
    size_t need, cap;
    uint8_t *buf;

    if (n > SIZE_MAX - r->len) return CODEC_E_TOO_BIG;
    need = r->len + n;
    if (over_limit(r, need)) return CODEC_E_TOO_BIG;
    if (need > r->cap) {
        cap = r->cap > SIZE_MAX / 2 ? SIZE_MAX : r->cap * 2;
        if (cap < need) cap = need;
        if (r->limit != 0 && cap > r->limit) cap = r->limit;
        buf = realloc(r->buf, cap);
        if (!buf) return CODEC_E_TOO_BIG;
        r->buf = buf;
        r->cap = cap;
    }
    if (n) memcpy(r->buf + r->len, src, n);
    r->len = need;
    return CODEC_OK;
}

/* Every error discards the partial message: the caller is expected to close the
 * connection, and a reassembler reused after an error starts clean. */
int codec_reasm_feed(struct codec_reasm *r, const uint8_t *data, size_t len, const uint8_t **msg,
                     size_t *msg_len)
{
    int rc;

    /* A message returned from r->buf by the previous call is now consumed. */
    if (!r->open) reasm_reset(r);

    if (len < 2) {
        rc = CODEC_E_SHORT;
        goto fail;
    }
    if (data[0] == CODEC_CONTINUATION) {
        if (!r->open) {
            rc = CODEC_E_SEQUENCE;
            goto fail;
        }
        if ((rc = reasm_append(r, data + 2, len - 2)) != CODEC_OK) goto fail;
        if (data[1] != 0) return 0;
        /* The logical message reads as if it had been sent whole. */
        r->buf[1] = 0;
        r->open = 0;
        *msg = r->buf;
        *msg_len = r->len;
        return 1;
    }
    if (r->open) {
        rc = CODEC_E_SEQUENCE;
        goto fail;
    }
    if (over_limit(r, len)) {
        rc = CODEC_E_TOO_BIG;
        goto fail;
    }
    if (data[1] == 0) {
        *msg = data;
        *msg_len = len;
        return 1;
    }
    if ((rc = reasm_append(r, data, len)) != CODEC_OK) goto fail;
    r->open = 1;
    return 0;

fail:
    reasm_reset(r);
    return rc;
}
