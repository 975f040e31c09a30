/* redis_sub: a pub/sub connection of the cluster (redis_sub.h). */
#include "redis_sub.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "redis_link.h"
#include "store_log.h"

struct redis_sub {
    struct redis_link *link;
    redisContext *ctx;
    unsigned epoch;
};

struct redis_sub *redis_sub_open(struct redis_link *l, char *why, size_t why_len)
{
    struct redis_sub *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    s->link = l;
    s->epoch = redis_link_epoch(l); /* before connecting: a loss meanwhile makes it stale */
    if (!(s->ctx = redis_link_connect(l, why, why_len))) goto fail;
    const char *argv[] = { "SUBSCRIBE", REDIS_EV_GLOBAL };
    size_t lens[] = { 9, strlen(REDIS_EV_GLOBAL) };
    if (redisAppendCommandArgv(s->ctx, 2, argv, lens) != REDIS_OK || redis_sub_flush(s)) {
        snprintf(why, why_len, "%s", s->ctx->errstr[0] ? s->ctx->errstr : "cannot subscribe");
        goto fail;
    }
    return s;
fail:
    redis_sub_close(s);
    return NULL;
}

void redis_sub_close(struct redis_sub *s)
{
    if (!s) return;
    if (s->ctx) redisFree(s->ctx);
    free(s);
}

int redis_sub_fd(const struct redis_sub *s) { return s->ctx->fd; }

bool redis_sub_stale(const struct redis_sub *s) { return redis_link_epoch(s->link) != s->epoch; }

const char *redis_sub_error(const struct redis_sub *s)
{
    return s->ctx->errstr[0] ? s->ctx->errstr : "connection lost";
}

int redis_sub_watch(struct redis_sub *s, const char *doc, size_t doc_len, bool on)
{
    size_t clen;
    char *chan = redis_event_channel(doc, doc_len, &clen);
    if (!chan) return -1;
    const char *cmd = on ? "SUBSCRIBE" : "UNSUBSCRIBE";
    const char *argv[] = { cmd, chan };
    size_t lens[] = { strlen(cmd), clen };
    int rc = redisAppendCommandArgv(s->ctx, 2, argv, lens) == REDIS_OK ? 0 : -1;
    free(chan);
    return rc;
}

int redis_sub_flush(struct redis_sub *s)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(s->ctx, &done) != REDIS_OK) return -1;
    return 0;
}

static void dispatch(struct redis_sub *s, const struct redis_sub_handler *h, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    const char *ch = r->element[1]->str;
    size_t chlen = r->element[1]->len, plen = strlen(REDIS_EV_CHANNEL);
    if (!strcmp(kind, "subscribe")) {
        if (chlen >= plen && !memcmp(ch, REDIS_EV_CHANNEL, plen))
            h->subscribed(h->arg, ch + plen, chlen - plen);
    } else if (!strcmp(kind, "message") && r->element[2]->type == REDIS_REPLY_STRING) {
        struct redis_event ev;
        const uint8_t *p = (const uint8_t *)r->element[2]->str;
        size_t len = r->element[2]->len;
        if (redis_event_decode(ch, chlen, p, len, &ev))
            store_log_warn(redis_link_log(s->link),
                           "cluster: malformed event (type 0x%02x, %zu bytes) on %.*s",
                           len ? p[0] : 0, len, (int)chlen, ch);
        else
            h->event(h->arg, &ev);
    }
}

int redis_sub_read(struct redis_sub *s, const struct redis_sub_handler *h)
{
    if (redisBufferRead(s->ctx) != REDIS_OK) return -1;
    for (;;) {
        void *reply;
        if (redisGetReplyFromReader(s->ctx, &reply) != REDIS_OK) return -1;
        if (!reply) return 0;
        dispatch(s, h, reply);
        freeReplyObject(reply);
    }
}
