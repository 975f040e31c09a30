/* loadtest_run: the state of one load-test run, shared by the event loop
 * (loadtest_loop.c), the simulated clients (loadtest_client.c), the report
 * (loadtest_report.c) and the driver (loadtest.c). One thread owns all of it. */
#ifndef ZW_LOADTEST_RUN_H
#define ZW_LOADTEST_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "loadtest_hist.h"
#include "loadtest_opts.h"
#include "loadtest_ws.h"

struct lt_client;

enum lt_phase {
    LT_PHASE_RUN,   /* clients connect, teachers append */
    LT_PHASE_DRAIN, /* teachers stop; wait until every client has every byte */
    LT_PHASE_CHECK, /* one fresh client per document fetches it for the data check */
    LT_PHASE_DONE,
};

struct lt_doc {
    char *id;
    uint64_t len; /* longest length any of its clients has seen */
    int check;    /* data check: 0 pending, 1 fetched, -1 failed */
    uint64_t check_len;
    uint32_t check_crc;
};

/* Event counts over the whole run. */
struct lt_counts {
    uint64_t connected;      /* clients that completed INIT and catch-up */
    uint64_t connect_errors; /* failed before catch-up completed */
    uint64_t dropped;        /* live connections lost before the end */
    uint64_t server_errors;  /* ERROR messages received */
    uint64_t appends_sent;
    uint64_t acks, nacks, readonly_acks;
    uint64_t deliveries; /* APPENDs received after catch-up, all clients */
    uint64_t delivered_bytes;
    uint64_t gaps;            /* an APPEND started past what the client had */
    uint64_t duplicates;      /* APPENDs starting below the client's end */
    uint64_t duplicate_bytes; /* bytes received twice that way */
    uint64_t ack_mismatches;  /* ACK/NACK inconsistent with the stream */
    uint64_t untimed;         /* live APPENDs with no timestamp we recognise */
};

/* One second of screen-to-screen time, for the live status line. */
struct lt_window {
    uint64_t n, sum_us, min_us, max_us;
};

struct lt_timer {
    uint64_t due_us;
    struct lt_client *client;
};

struct lt_run {
    const struct lt_opts *opts;
    struct lt_ws_ctx ws;
    int epfd;
    enum lt_phase phase;
    uint64_t t0_us;      /* monotonic time the run started */
    uint64_t run_end_us; /* when the RUN phase ended (0 while running) */
    struct lt_client *clients;
    int n_clients;
    struct lt_client *checkers; /* one per document */
    struct lt_doc *docs;
    int n_docs;
    int live;            /* clients connected now */
    int connecting;      /* connections started but not yet caught up */
    int pending_appends; /* teachers' appends awaiting ACK/NACK */
    int checks_open;     /* data-check fetches not yet finished */
    int failures_shown;  /* failures printed without --verbose */
    struct lt_counts c;
    struct lt_hist s2s;     /* screen-to-screen, microseconds */
    struct lt_hist ack_rtt; /* teacher's send to its ACK, microseconds */
    struct lt_window win;
    uint8_t *send_buf; /* one encoded APPEND at a time */
    uint64_t rng;
    struct lt_timer *timers; /* min-heap on due_us */
    size_t n_timers, cap_timers;
};

/* Monotonic clock in microseconds. */
uint64_t lt_now_us(void);
/* Uniform random number in [0, 1). */
double lt_random(struct lt_run *run);
/* Verbose log line (only with --verbose), prefixed by the run time. */
void lt_logv(struct lt_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- loop (loadtest_loop.c) ---- */
/* Creates the epoll instance. Returns 0, or -1 with errno set. */
int lt_loop_init(struct lt_run *run);
void lt_loop_free(struct lt_run *run);
/* Arms the client's single timer for due_us (0 disarms it); an earlier setting is
 * forgotten. Returns 0, or -1 when out of memory. */
int lt_timer_set(struct lt_run *run, struct lt_client *c, uint64_t due_us);
/* Runs due timers and socket events until until_us or until one batch of socket
 * events was handled, whichever is first. */
void lt_loop_poll(struct lt_run *run, uint64_t until_us);

#endif
