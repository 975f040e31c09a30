/* codec: the Zwibbler wire format (docs/protocol.md, Framing and Messages) as pure functions over
 * bytes. Nothing here touches sockets, threads or storage. Decoders never read past the buffer they
 * are given and never allocate: decoded structs point into the input. Encoders write into caller-
 * owned memory sized with the matching *_size function. All integers on the wire are big-endian. */
#ifndef ZW_CODEC_H
#define ZW_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "bytes.h"

/* Message types (byte 0). */
enum {
    CODEC_INIT = 0x01,
    CODEC_APPEND_V2 = 0x02,
    CODEC_SET_KEY = 0x03,
    CODEC_BROADCAST = 0x04,
    CODEC_APPEND_V3 = 0x05,
    CODEC_CONTINUATION = 0xFF,
    CODEC_ERROR = 0x80,
    CODEC_ACK = 0x81,
    CODEC_KEY_INFO = 0x82,
    CODEC_SET_KEY_ACK = 0x83,
};

/* ERROR codes (docs/protocol.md, Error codes). */
enum {
    CODEC_ERR_UNSPECIFIED = 0,
    CODEC_ERR_DOES_NOT_EXIST = 1,
    CODEC_ERR_ALREADY_EXISTS = 2,
    CODEC_ERR_INVALID_OFFSET = 3,
    CODEC_ERR_ACCESS_DENIED = 4,
};

/* Default server->client split size when INIT says 0. */
#define CODEC_DEFAULT_MAX_MESSAGE 102400u

/* Decoder results: 0 on success, one of these (negative) otherwise. */
enum {
    CODEC_OK = 0,
    CODEC_E_SHORT = -1,    /* shorter than its fields, or a length field past the end */
    CODEC_E_VERSION = -2,  /* INIT version is neither 2 nor 3 */
    CODEC_E_TYPE = -3,     /* not the message type the decoder expects */
    CODEC_E_TOO_BIG = -4,  /* reassembly would pass the configured limit */
    CODEC_E_SEQUENCE = -5, /* continuation without a start, or start while one is open */
};

/* Human-readable text for a CODEC_E_* value (static string). */
const char *codec_strerror(int err);

struct codec_init {
    uint16_t version;          /* 2 or 3 */
    uint32_t max_message_size; /* as sent; 0 = no preference */
    uint8_t creation_mode;     /* 0 possibly create, 1 never, 2 always */
    uint32_t generation;       /* v3 only, reserved; 0 for v2 */
    uint64_t offset;
    const uint8_t *doc_id;
    size_t doc_id_len;
    const uint8_t *initial_data;
    size_t initial_data_len;
};

struct codec_append {
    uint32_t generation; /* 0 for v2 */
    uint64_t offset;
    const uint8_t *data;
    size_t data_len;
};

struct codec_set_key {
    uint16_t request_id;
    uint8_t lifetime; /* 0 = client key, otherwise session key */
    uint32_t old_version;
    uint32_t new_version;
    const uint8_t *name;
    size_t name_len;
    const uint8_t *value;
    size_t value_len;
};

struct codec_broadcast {
    const uint8_t *data;
    size_t data_len; /* dataLength as sent, checked against the message */
};

/* Each decoder takes one complete logical message (header included). */
int codec_decode_init(const uint8_t *msg, size_t len, struct codec_init *out);
/* Accepts type 0x02 (v2 layout) or 0x05 (v3 layout). */
int codec_decode_append(const uint8_t *msg, size_t len, struct codec_append *out);
int codec_decode_set_key(const uint8_t *msg, size_t len, struct codec_set_key *out);
int codec_decode_broadcast(const uint8_t *msg, size_t len, struct codec_broadcast *out);

/* ---- Encoders. Each *_size gives the exact byte count; encode returns it. ---- */

/* APPEND to a client of protocol `version` (2 -> type 0x02, 3 -> 0x05, generation 0). */
size_t codec_append_size(int version, size_t data_len);
size_t codec_encode_append(uint8_t *out, int version, uint64_t offset, const uint8_t *data,
                           size_t data_len);

size_t codec_broadcast_size(size_t data_len);
size_t codec_encode_broadcast(uint8_t *out, const uint8_t *data, size_t data_len);

size_t codec_error_size(size_t text_len);
size_t codec_encode_error(uint8_t *out, uint16_t code, const char *text, size_t text_len);

#define CODEC_ACK_SIZE 12u
size_t codec_encode_ack(uint8_t *out, uint16_t ack, uint64_t length);

#define CODEC_SET_KEY_ACK_SIZE 6u
size_t codec_encode_set_key_ack(uint8_t *out, uint16_t ack, uint16_t request_id);

/* KEY INFORMATION: a 2-byte header followed by any number of entries. Build with
 * codec_key_info_begin, then one codec_key_info_add per key. */
#define CODEC_KEY_INFO_HEADER 2u
size_t codec_key_info_entry_size(size_t name_len, size_t value_len);
size_t codec_key_info_begin(uint8_t *out);
size_t codec_key_info_add(uint8_t *out, uint32_t version, const uint8_t *name, size_t name_len,
                          const uint8_t *value, size_t value_len);

/* ---- Splitting (server -> client) ----
 * A logical message of `len` bytes sent to a client with split size `max`
 * (0 means CODEC_DEFAULT_MAX_MESSAGE; values below 3 are treated as 3 so that each
 * continuation carries at least one byte) goes out as codec_split_count() WebSocket
 * messages. Piece i is produced by codec_split_piece(): it writes the piece's header
 * into hdr (0 or 2 bytes, see below) and returns the range of `msg` that follows it.
 * Piece 0: the first min(len, max) bytes with byte 1 replaced by the "more" flag
 * (hdr receives the two replacement bytes and body starts at msg+2).
 * Piece i>0: hdr = {0xFF, more}, body = the next max-2 bytes. */
struct codec_piece {
    uint8_t hdr[2];
    const uint8_t *body;
    size_t body_len;
};
size_t codec_split_count(size_t len, uint32_t max);
void codec_split_piece(const uint8_t *msg, size_t len, uint32_t max, size_t index,
                       struct codec_piece *out);

/* ---- Reassembly (client -> server) ----
 * Feeds each received WebSocket message through codec_reasm_feed. Ownership: the
 * reassembler owns a growing heap buffer; codec_reasm_free releases it. */
struct codec_reasm {
    uint8_t *buf;
    size_t len, cap;
    size_t limit; /* largest logical message accepted; 0 = no limit */
    int open;     /* a message with more=1 is being collected */
};
void codec_reasm_init(struct codec_reasm *r, size_t limit);
void codec_reasm_free(struct codec_reasm *r);
/* Returns 1 when a complete logical message is ready (*msg and *msg_len point either
 * into `data` when it was complete on its own, or into r->buf; valid until the next
 * feed), 0 when more pieces are needed, or a negative CODEC_E_* on a protocol error
 * (message shorter than 2 bytes, continuation without a start, too big). Allocation
 * failure is reported as CODEC_E_TOO_BIG. */
int codec_reasm_feed(struct codec_reasm *r, const uint8_t *data, size_t len, const uint8_t **msg,
                     size_t *msg_len);

/* The big-endian helpers (bytes.h) under their earlier names, for the code that
 * still uses them (server/core/outq.c); new code calls be_get* / be_put*. */
#define codec_get16 be_get16
#define codec_get32 be_get32
#define codec_get64 be_get64
#define codec_put16 be_put16
#define codec_put32 be_put32
#define codec_put64 be_put64

#endif
