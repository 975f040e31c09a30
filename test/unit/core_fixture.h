/* core_fixture: the concurrency core (session, hub, outq) without sockets, for
 * test_session and test_hub. A real LMDB store in a temporary directory, a hub whose
 * send queues wake a fake loop (it counts the wake-up and drops the reference: nothing
 * is written anywhere), clients made by hand, their messages built with the wire
 * layout, and what each client was sent read back with outq_take. */
#ifndef ZW_CORE_FIXTURE_H
#define ZW_CORE_FIXTURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "client.h"
#include "config.h"
#include "hub.h"
#include "outq.h"

#define CF_MAX_CLIENTS 32

struct core_fixture {
    char dir[256];
    struct config cfg; /* config_defaults; a test may change it before cf_client */
    struct store *store;
    struct outq_counters counters;
    struct outq outq; /* bound = cfg.send_queue_bytes; a test may lower it */
    struct hub *hub;
    struct app app;
    atomic_int wakes;
    struct hub_client *clients[CF_MAX_CLIENTS];
    bool closed[CF_MAX_CLIENTS];
    int nclients;
};

/* Creates the temporary root for the fixtures of one test program (main, once). */
void cf_root_create(const char *name);
/* Removes it with everything under it (main, at the end). */
void cf_root_remove(void);

/* cmocka set-up and tear-down: *state is a struct core_fixture. The tear-down closes
 * every client still open and checks that the hub was left with no connection and no
 * live document. */
int cf_setup(void **state);
int cf_teardown(void **state);

/* A new client whose session is open (session_open), protocol state empty. */
struct hub_client *cf_client(struct core_fixture *f);
/* session_close for c (once; the tear-down does it for those left open). */
void cf_close(struct core_fixture *f, struct hub_client *c);

/* ---- client -> server messages, run through session_message ---- */
void cf_send(struct core_fixture *f, struct hub_client *c, const void *msg, size_t len);
/* INIT in the layout of `version` (2 or 3). */
void cf_init(struct core_fixture *f, struct hub_client *c, int version, uint8_t mode,
             uint32_t max_message, uint64_t offset, const char *doc, const void *initial,
             size_t initial_len);
/* APPEND in the layout of c's protocol version. */
void cf_append(struct core_fixture *f, struct hub_client *c, uint64_t offset, const void *data,
               size_t len);
void cf_set_key(struct core_fixture *f, struct hub_client *c, uint16_t request_id, uint8_t lifetime,
                uint32_t old_version, uint32_t new_version, const char *name, const char *value);
void cf_broadcast(struct core_fixture *f, struct hub_client *c, const void *data, size_t len);

/* ---- server -> client: what a client's queue holds ---- */
struct cf_sent {
    size_t n;
    uint8_t **data; /* copies of the messages, in queue order */
    size_t *len;
    enum outq_state state; /* the queue's state once emptied */
    uint16_t close_code;
};
/* Takes everything queued for c (as its loop would) into *s; frees nothing earlier. */
void cf_take(struct core_fixture *f, struct hub_client *c, struct cf_sent *s);
void cf_sent_free(struct cf_sent *s);
/* Takes everything and checks that nothing was queued and the queue is still open. */
void cf_expect_nothing(struct core_fixture *f, struct hub_client *c);

/* Checks that message i of s has exactly the bytes of `expected` (which it releases). */
void cf_expect_msg(const struct cf_sent *s, size_t i, struct message *expected);
/* Takes everything queued for c and checks it is exactly `expected` (released), with
 * the queue still open. */
void cf_expect_one(struct core_fixture *f, struct hub_client *c, struct message *expected);
/* An APPEND of the bytes of string `data` in the layout of `version`. */
struct message *cf_msg_append(int version, uint64_t offset, const char *data);

/* Registers a token for `doc`, valid for an hour. */
void cf_add_token(struct core_fixture *f, const char *token, const char *doc, const char *user,
                  const char *perms);
/* The hub's counters now. */
struct hub_stats cf_stats(struct core_fixture *f);

/* Joins c to `doc` (INIT v3, possibly create) and takes its catch-up. */
void cf_join(struct core_fixture *f, struct hub_client *c, const char *doc);
/* The stored length of `doc` (fails the test when it has none). */
uint64_t cf_doc_length(struct core_fixture *f, const char *doc);

#endif
