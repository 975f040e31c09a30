/* redis_events: what servers sharing one Redis tell each other (cluster mode), and
 * how it is written on the Redis channels. A document's events go on its channel
 * REDIS_EV_CHANNEL<docId>, in the order Redis committed them; cluster-wide ones on
 * REDIS_EV_GLOBAL. Numbers are big-endian. The byte values are the wire format
 * (first byte of a message): servers of different builds must agree on them. */
#ifndef ZW_REDIS_EVENTS_H
#define ZW_REDIS_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#define REDIS_EV_CHANNEL "zwibbler-ch:" /* + docId */
#define REDIS_EV_GLOBAL "zwibbler-cluster"

enum redis_event_kind {
    /* on a document's channel */
    REDIS_EV_APPEND = 'A',      /* offset u64, data: committed bytes */
    REDIS_EV_BROADCAST = 'B',   /* server u64, client u64, data */
    REDIS_EV_CLIENT_KEY = 'K',  /* server u64, client u64, version u32, nameLen u32, name, value */
    REDIS_EV_KEY_REMOVED = 'R', /* server u64, 0 u64, version u32, nameLen u32, name: a client
                                   key whose owner left (or whose server died) */
    REDIS_EV_SESSION_KEY = 'S', /* server u64, client u64, version u32, name: re-read it */
    REDIS_EV_DELETED = 'D',     /* server u64: the document was deleted */
    /* on REDIS_EV_GLOBAL */
    REDIS_EV_DOC_ACTIVE = 'J', /* docId: a document got its first server (idle webhook) */
    REDIS_EV_USER = 'U',       /* server u64, userLen u32, user, permissions (updateUser) */
};

/* One event, decoded; pointers are into the message (or the caller's buffers). */
struct redis_event {
    enum redis_event_kind kind;
    const char *doc; /* its document (the channel's; J's payload) */
    size_t doc_len;
    uint64_t server, client; /* who made it: server id, that server's client id */
    uint64_t offset;         /* APPEND */
    uint32_t version;        /* CLIENT_KEY, KEY_REMOVED, SESSION_KEY */
    const uint8_t *name;     /* key name; USER: the user id */
    size_t name_len;
    const uint8_t *data; /* APPEND bytes, BROADCAST data, key value; USER: permissions */
    size_t data_len;
};

/* The message for ev in a new buffer (*len bytes); NULL when out of memory. APPEND
 * and KEY_REMOVED are published by scripts, which write their tails (data; version
 * and name): for those only the header is made. */
uint8_t *redis_event_encode(const struct redis_event *ev, size_t *len);

/* The channel of a document (doc NULL: REDIS_EV_GLOBAL) in a new NUL-terminated
 * buffer; NULL when out of memory. */
char *redis_event_channel(const char *doc, size_t doc_len, size_t *len);

/* Decodes a message received on channel `chan`. Returns 0, or -1 when it is not a
 * well-formed event (logged by the caller). */
int redis_event_decode(const char *chan, size_t chan_len, const uint8_t *msg, size_t len,
                       struct redis_event *ev);

#endif
