/* loadtest_client: one simulated Zwibbler client of the load tester: a teacher
 * (appends timestamped changes, retries after NACK once caught up), a student
 * (only receives) or a checker (fetches a whole document for the data check).
 * Each keeps the length and CRC-32 of the bytes it has, not the bytes. */
#ifndef ZW_LOADTEST_CLIENT_H
#define ZW_LOADTEST_CLIENT_H

#include <stdint.h>

#include "loadtest_ws.h"

struct lt_run;
struct codec_reasm;

enum lt_role { LT_TEACHER, LT_STUDENT, LT_CHECKER };

enum lt_client_state {
    LT_C_IDLE,       /* not started */
    LT_C_CONNECTING, /* connecting, upgrading, or waiting for the catch-up APPEND */
    LT_C_LIVE,       /* caught up, receiving (and, for a teacher, appending) */
    LT_C_FAILED,     /* the connection failed or the server closed it */
    LT_C_CLOSED,     /* closed by us at the end (got_first says whether it was live) */
};

/* A checker refused (e.g. 503 while the server frees the slots of the clients
 * just closed) tries again this many times, this far apart. */
#define LT_CHECK_ATTEMPTS 40
#define LT_CHECK_RETRY_US 250000

struct lt_client {
    struct lt_ws ws;
    struct lt_run *run;
    uint8_t role, state;
    uint8_t hole;          /* a gap was seen: its bytes cannot match the document */
    uint8_t got_first;     /* the catch-up APPEND has arrived */
    uint8_t in_append;     /* a split APPEND is streaming in through continuations */
    uint8_t in_other;      /* a split message of another type is being reassembled */
    uint8_t pending;       /* teacher: an APPEND awaits its ACK/NACK */
    uint8_t applied_early; /* teacher: own change counted before its ACK (see .c) */
    uint8_t wait_catchup;  /* teacher: NACKed, waiting to reach nack_len */
    uint8_t stopped;       /* teacher: writes refused (read-only), no more changes */
    uint8_t attempts;      /* checker: connection attempts so far */
    int index;             /* teachers: sender id written in changes; others: number */
    int doc;
    uint64_t len;     /* bytes of the document this client has */
    uint32_t crc;     /* CRC-32 of those bytes */
    uint64_t app_off; /* where the next byte of a streaming APPEND belongs */
    uint64_t due_us;  /* armed timer, 0 = none (owned by the loop) */
    uint64_t pend_off, pend_sent_us, nack_len;
    uint8_t *change;           /* teacher: the change being sent (change_bytes) */
    struct codec_reasm *reasm; /* allocated only for split non-APPEND messages */
};

/* Prepares a client; role, index and doc as above. Returns 0, or -1 out of memory. */
int lt_client_setup(struct lt_client *c, struct lt_run *run, enum lt_role role, int index, int doc);
/* Starts connecting. Failures are counted and leave the client LT_C_FAILED. */
void lt_client_start(struct lt_client *c);
/* epoll reported events on the client's socket. */
void lt_client_event(struct lt_client *c, uint32_t events);
/* The client's timer fired: start connecting, or send the next change. */
void lt_client_timer(struct lt_client *c);
/* The run phase changed to drain: send nothing more. */
void lt_client_quiesce(struct lt_client *c);
/* Closes the connection (if any) without counting an error; frees buffers. */
void lt_client_close(struct lt_client *c);

#endif
