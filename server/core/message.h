/* message: an encoded server->client message, shared by reference among the send
 * queues of every client it goes to (encode once: a message fanned out to N clients is
 * built one time). */
#ifndef ZW_MESSAGE_H
#define ZW_MESSAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The message as the frames of clients with permessage-deflate carry it: its pieces
 * for one split size, each compressed when that made it smaller. Built once per split
 * size by the first loop that needs it (framer.c), then shared; one allocation. */
struct message_variant {
    struct message_variant *next;
    uint32_t max_message;
    size_t npieces;
    struct message_piece {
        size_t off, len; /* in bytes[] */
        bool compressed;
    } * pieces;
    uint8_t *bytes;
};

struct message {
    atomic_int refs;
    size_t len;
    /* A control frame (ping, pong, close), already framed: written as it is, never
     * split or compressed. Everything else is a protocol message. */
    bool raw_frame;
    /* For a KEY INFORMATION about one key: the key name, so a newer update of the
     * same key can replace this one while both still wait in a queue. */
    const uint8_t *key_name;
    size_t key_name_len;
    _Atomic(struct message_variant *) variants;
    uint8_t data[];
};

/* A message of `len` bytes with one reference, or NULL when out of memory. */
struct message *message_new(size_t len);
static inline struct message *message_ref(struct message *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}
void message_unref(struct message *m);

/* Encoders into new shared messages (NULL when out of memory). */
struct message *msg_append(int version, uint64_t offset, const uint8_t *data, size_t len);
struct message *msg_ack(uint16_t ack, uint64_t length);
struct message *msg_error(uint16_t code, const char *text);
struct message *msg_set_key_ack(uint16_t ack, uint16_t request_id);
/* KEY INFORMATION about one key: superseded in a queue by a newer one (outq.c). */
struct message *msg_key_info_one(uint32_t version, const uint8_t *name, size_t name_len,
                                 const uint8_t *value, size_t value_len);

#endif
