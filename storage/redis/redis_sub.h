/* redis_sub: one subscriber connection to the cluster's channels (redis_events.h):
 * the cluster-wide channel always, and the channels of the documents asked for.
 * Not thread-safe: one thread owns a subscriber. */
#ifndef ZW_REDIS_SUB_H
#define ZW_REDIS_SUB_H

#include <stdbool.h>
#include <stddef.h>

#include "redis_events.h"

struct redis_link;
struct redis_sub;

/* Connects to the link's primary and subscribes to REDIS_EV_GLOBAL. NULL with a
 * reason in why. */
struct redis_sub *redis_sub_open(struct redis_link *l, char *why, size_t why_len);
void redis_sub_close(struct redis_sub *s);

/* The socket to poll for input. */
int redis_sub_fd(const struct redis_sub *s);
/* Whether the link lost its primary since this subscriber connected (redis_link_epoch):
 * it may be listening to a server that is no longer the primary; open a new one. */
bool redis_sub_stale(const struct redis_sub *s);

/* Queues SUBSCRIBE (on) or UNSUBSCRIBE of a document's channel; redis_sub_flush sends
 * what is queued. Return 0, or -1 when the connection failed. */
int redis_sub_watch(struct redis_sub *s, const char *doc, size_t doc_len, bool on);
int redis_sub_flush(struct redis_sub *s);

struct redis_sub_handler {
    /* A document's channel is in place: from here on nothing is missed. */
    void (*subscribed)(void *arg, const char *doc, size_t doc_len);
    void (*event)(void *arg, const struct redis_event *ev);
    void *arg;
};

/* Reads what has arrived and hands it over in order (malformed messages are logged and
 * skipped). Returns 0, or -1 when the connection failed (close it, open another). */
int redis_sub_read(struct redis_sub *s, const struct redis_sub_handler *h);
/* What failed, for a log line. */
const char *redis_sub_error(const struct redis_sub *s);

#endif
