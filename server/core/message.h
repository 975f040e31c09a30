/* message: an encoded server->client logical message, shared by reference among the
 * send queues of every client it goes to (encode once, share by reference). */
#ifndef ZW_MESSAGE_H
#define ZW_MESSAGE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct message {
    atomic_int refs;
    size_t len;
    /* For a KEY INFORMATION about one key: the key name, so a newer update of the
     * same key can replace this one while both still wait in a queue. */
    const uint8_t *key_name;
    size_t key_name_len;
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

#endif
