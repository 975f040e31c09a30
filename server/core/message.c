/* message: allocation and reference counting of shared encoded messages. */
#include "message.h"

#include <stdlib.h>
#include <string.h>

#include "codec.h"

struct message *message_new(size_t len)
{
    struct message *m = malloc(sizeof *m + len);
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    m->len = len;
    m->raw_frame = false;
    m->key_name = NULL;
    m->key_name_len = 0;
    atomic_init(&m->variants, NULL);
    return m;
}

void message_unref(struct message *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) return;
    for (struct message_variant *v = atomic_load(&m->variants), *next; v; v = next) {
        next = v->next;
        free(v);
    }
    free(m);
}

/* ---- encoders: one new shared message each ---- */

struct message *msg_append(int version, uint64_t offset, const uint8_t *data, size_t len)
{
    struct message *m = message_new(codec_append_size(version, len));
    if (m) codec_encode_append(m->data, version, offset, data, len);
    return m;
}

struct message *msg_ack(uint16_t ack, uint64_t length)
{
    struct message *m = message_new(CODEC_ACK_SIZE);
    if (m) codec_encode_ack(m->data, ack, length);
    return m;
}

struct message *msg_error(uint16_t code, const char *text)
{
    size_t n = strlen(text);
    struct message *m = message_new(codec_error_size(n));
    if (m) codec_encode_error(m->data, code, text, n);
    return m;
}

struct message *msg_set_key_ack(uint16_t ack, uint16_t request_id)
{
    struct message *m = message_new(CODEC_SET_KEY_ACK_SIZE);
    if (m) codec_encode_set_key_ack(m->data, ack, request_id);
    return m;
}

struct message *msg_key_info_one(uint32_t version, const uint8_t *name, size_t name_len,
                                 const uint8_t *value, size_t value_len)
{
    struct message *m =
        message_new(CODEC_KEY_INFO_HEADER + codec_key_info_entry_size(name_len, value_len));
    if (!m) return NULL;
    size_t n = codec_key_info_begin(m->data);
    codec_key_info_add(m->data + n, version, name, name_len, value, value_len);
    /* The entry is version u32, nameLength u32, name: point at the name inside. */
    m->key_name = m->data + n + 8;
    m->key_name_len = name_len;
    return m;
}
