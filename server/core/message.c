/* message: allocation and reference counting of shared encoded messages. */
#include "message.h"

#include <stdlib.h>

struct message *message_new(size_t len)
{
    struct message *m = malloc(sizeof *m + len);
    if (!m) return NULL;
    atomic_init(&m->refs, 1);
    m->len = len;
    m->key_name = NULL;
    m->key_name_len = 0;
    return m;
}

void message_unref(struct message *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) free(m);
}
