/* client: one WebSocket connection, as every layer of the core sees it. client.c owns
 * its life cycle (creation, reference count, release); each part below has exactly one
 * owner, named in its heading, which alone reads and writes it under the stated rule. */
#ifndef ZW_CLIENT_H
#define ZW_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "codec.h"
#include "log.h"
#include "wsframe.h"

struct doc;
struct message;
struct conn_loop;
struct inbox_item;

/* The send queue's states (outq.c):
 *
 *   OPEN ──outq_close_after_drain──> DRAINING ──queue written, close frame sent──> DEAD
 *     └──────────────outq_kill, or the connection closed──────────────────────────> DEAD
 *
 * OPEN takes messages; DRAINING takes none and closes once what is queued has gone;
 * DEAD has dropped its queue and takes nothing. */
enum outq_state { OUTQ_OPEN, OUTQ_DRAINING, OUTQ_DEAD };

/* ---- send queue: outq.c, under `lock` (any thread) ---- */
struct client_send {
    pthread_mutex_t lock;
    struct message **ring; /* FIFO of queued messages; NULL slots were superseded */
    size_t head, count, cap;
    size_t queued_bytes;
    size_t sent_off; /* framed bytes of the first queued message already written */
    enum outq_state state;
    uint16_t close_code; /* the close frame to end with (0: none, just close) */
    bool scheduled;      /* handed to the connection's loop, which will write */
};

/* ---- the socket: conn.c, its event loop's thread only ---- */
enum conn_state { CONN_OPEN, CONN_CLOSING, CONN_CLOSED };
struct client_io {
    struct conn_loop *loop;
    int fd;
    void *ssl; /* SSL *, NULL for plain connections */
    enum conn_state state;
    bool deflate;    /* permessage-deflate negotiated */
    bool want_out;   /* waiting for room to write (EPOLLOUT) */
    bool paused;     /* not reading: the session has enough queued */
    bool partial;    /* the socket holds half a frame: no close frame may follow */
    uint32_t events; /* the epoll interest registered now */
    struct ws_reader reader;
    uint8_t *early; /* bytes CivetWeb read past the upgrade request */
    size_t early_len;
    uint8_t *tls_retry; /* bytes OpenSSL must be given again after WANT_WRITE */
    size_t tls_retry_len;
    int64_t connected_ms, last_rx_ms, frame_start_ms, last_ping_ms, close_deadline_ms;
    int unanswered_pings;
    struct hub_client *all_prev, *all_next; /* the loop's list of its connections */
    struct hub_client *again_next;          /* TLS bytes left to read (loop's list) */
    bool in_again, resume_now;
    /* under the loop's lock */
    struct hub_client *ready_next;
    bool in_ready, ready_resume;
};

/* ---- inbound messages waiting for the session: inbox.c, under its pool's lock ---- */
struct client_inbox {
    struct inbox_item *head, *tail;
    size_t bytes;
    bool scheduled; /* in the pool's run list or being run */
    bool closed;    /* the close item has been queued: nothing follows it */
    bool paused;    /* its loop stopped reading it: resume when it drains */
    struct hub_client *run_next;
};

struct hub_client {
    atomic_int refs;
    uint64_t id;   /* for log lines */
    char addr[48]; /* peer address, for log lines */
    bool tls;
    struct client_send send; /* outq.c */
    struct client_io io;     /* conn.c */
    struct client_inbox in;  /* inbox.c */

    /* ---- protocol state: session.c, on the one worker running this client ---- */
    struct {
        int version;                  /* protocol 2 or 3; 0 until INIT */
        _Atomic uint32_t max_message; /* split size: set by INIT, read by the loop */
        struct auth_result auth; /* permissions are also written by updateUser, under doc lock */
        struct codec_reasm reasm;
        atomic_bool joined; /* INIT accepted (read by the loop for InitTimeoutMs) */
        /* The server ended it (the session, or the hub for deleteDocument/updateUser):
         * messages already received are not run. Written from any thread. */
        atomic_bool closing;
    };

    /* ---- membership: hub.c, under the document's lock ---- */
    struct {
        struct doc *doc;        /* set at join */
        uint64_t delivered_end; /* end of the last range delivered (the delivery rule) */
        struct hub_client *doc_prev, *doc_next;
    };
};

/* A new client with one reference, or NULL when out of memory. */
struct hub_client *client_new(const char *addr, bool tls);
static inline struct hub_client *client_ref(struct hub_client *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}
/* Drops a reference; the last one frees every part. */
void client_unref(struct hub_client *c);

/* A log line that names the client: "client 12 (127.0.0.1): ...". */
void client_log(const struct hub_client *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
