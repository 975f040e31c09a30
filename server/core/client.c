/* client: the life cycle of a connection's shared record. Each part is emptied by its
 * owner when the connection ends (outq drops the queue, conn frees its buffers, the
 * session clears its state); the last reference frees what remains. */
#include "client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static atomic_uint_fast64_t next_client_id;

struct hub_client *client_new(const char *addr, bool tls)
{
    struct hub_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    atomic_init(&c->refs, 1);
    c->id = atomic_fetch_add(&next_client_id, 1) + 1;
    snprintf(c->addr, sizeof c->addr, "%s", addr && *addr ? addr : "?");
    c->tls = tls;
    pthread_mutex_init(&c->send.lock, NULL);
    c->io.fd = -1;
    return c;
}

void client_unref(struct hub_client *c)
{
    if (!c || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&c->send.lock);
    free(c);
}

void client_log(const struct hub_client *c, enum log_level level, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_msg(level, "client %llu (%s): %s", (unsigned long long)c->id, c->addr, text);
}
