/* loadtest: the load tester's driver: sets the process up (open-file limit,
 * signals), builds the simulated clients, runs the phases (run, drain, data
 * check) on the event loop and turns the counts into the summary and exit code. */
#include "loadtest.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "codec.h"
#include "loadtest_client.h"
#include "loadtest_report.h"
#include "loadtest_run.h"

#define SEC 1000000ull
#define DRAIN_US (10 * SEC) /* longest wait for clients to receive the last changes */
#define CHECK_US (60 * SEC) /* longest wait for the data-check fetches */
#define CHECK_PARALLEL 16   /* data-check fetches at a time */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted++;
}

static void setup_process(int clients)
{
    /* Each client is a socket: take every descriptor the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)clients + 32 > rl.rlim_cur)
            fprintf(stderr,
                    "loadtest: warning: %d clients but only %llu open files allowed "
                    "(raise the hard limit: ulimit -Hn)\n",
                    clients, (unsigned long long)rl.rlim_cur);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL); /* a dead peer is an error return, not a kill */
    sa.sa_handler = on_signal;     /* no SA_RESTART: epoll_wait returns at once */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Every client that can still catch up has all its document's bytes. */
static int drained(const struct lt_run *run)
{
    if (run->pending_appends || run->connecting) return 0;
    for (int i = 0; i < run->n_clients; i++) {
        const struct lt_client *c = &run->clients[i];
        if (c->state == LT_C_LIVE && c->len < run->docs[c->doc].len) return 0;
    }
    return 1;
}

static int build(struct lt_run *run)
{
    const struct lt_opts *o = run->opts;
    run->n_docs = o->docs;
    run->docs = calloc((size_t)o->docs, sizeof *run->docs);
    run->n_clients = o->teachers + o->students;
    run->clients = calloc((size_t)run->n_clients, sizeof *run->clients);
    run->checkers = calloc((size_t)o->docs, sizeof *run->checkers);
    size_t idl = strlen(o->docid) + 16;
    size_t init_size = 25 + idl, app = codec_append_size(3, o->change_bytes);
    run->send_buf = malloc(init_size > app ? init_size : app);
    if (!run->docs || !run->clients || !run->checkers || !run->send_buf) return -1;
    for (int d = 0; d < o->docs; d++) {
        if (!(run->docs[d].id = malloc(idl))) return -1;
        if (o->docs == 1)
            snprintf(run->docs[d].id, idl, "%s", o->docid);
        else
            snprintf(run->docs[d].id, idl, "%s-%d", o->docid, d);
    }
    /* Teachers are interleaved evenly among students, so that every connection
     * wave has its share of writers; documents are dealt round-robin. */
    int n = run->n_clients, t = 0, s = 0;
    for (int k = 0; k < n; k++) {
        int is_teacher =
            (int)((long long)(k + 1) * o->teachers / n) > (int)((long long)k * o->teachers / n);
        int rc = is_teacher ? lt_client_setup(&run->clients[k], run, LT_TEACHER, t, t % o->docs)
                            : lt_client_setup(&run->clients[k], run, LT_STUDENT, s, s % o->docs);
        if (rc) return -1;
        if (is_teacher)
            t++;
        else
            s++;
    }
    for (int d = 0; d < o->docs; d++)
        if (lt_client_setup(&run->checkers[d], run, LT_CHECKER, d, d)) return -1;
    return 0;
}

static void teardown(struct lt_run *run)
{
    if (run->clients)
        for (int i = 0; i < run->n_clients; i++) lt_client_close(&run->clients[i]);
    if (run->checkers)
        for (int d = 0; d < run->n_docs; d++) lt_client_close(&run->checkers[d]);
    if (run->docs)
        for (int d = 0; d < run->n_docs; d++) free(run->docs[d].id);
    free(run->clients);
    free(run->checkers);
    free(run->docs);
    free(run->send_buf);
    lt_ws_ctx_free(&run->ws);
    lt_loop_free(run);
}

/* Compares every live client with its document as the checker fetched it. */
static void judge(struct lt_run *run, struct lt_result *r)
{
    const struct lt_counts *c = &run->c;
    int idle = 0, shown = 0;
    r->expected = run->n_clients;
    for (int i = 0; i < run->n_clients; i++) {
        const struct lt_client *cl = &run->clients[i];
        if (cl->state == LT_C_IDLE && r->interrupted) {
            r->not_started++; /* never tried: not a failure of the server */
            continue;
        }
        int was_live = cl->state == LT_C_LIVE || (cl->state == LT_C_CLOSED && cl->got_first);
        if (cl->state == LT_C_IDLE || cl->state == LT_C_CONNECTING ||
            (cl->state == LT_C_CLOSED && !cl->got_first))
            idle++;
        if (!was_live || r->check_skipped) continue;
        const struct lt_doc *d = &run->docs[cl->doc];
        if (d->check != 1) continue;
        r->checked++;
        if (cl->hole || cl->len != d->check_len || cl->crc != d->check_crc) {
            r->mismatched++;
            if (shown++ < 3 || run->opts->verbose)
                fprintf(stderr,
                        "loadtest: data check: %s %d has %llu bytes (crc %08x%s), "
                        "document %s has %llu (crc %08x)\n",
                        cl->role == LT_TEACHER ? "teacher" : "student", cl->index,
                        (unsigned long long)cl->len, cl->crc, cl->hole ? ", with a gap" : "", d->id,
                        (unsigned long long)d->check_len, d->check_crc);
        }
    }
    for (int d = 0; d < run->n_docs && !r->check_skipped; d++)
        if (run->docs[d].check != 1) r->docs_unchecked++;
    r->not_connected = idle + (int)c->connect_errors;
    r->data_ok =
        !r->check_skipped && r->checked > 0 && r->mismatched == 0 && r->docs_unchecked == 0;
    r->errors = c->connect_errors + c->dropped + c->gaps + c->duplicates + c->ack_mismatches +
                c->readonly_acks + (unsigned long long)idle + (unsigned long long)r->mismatched +
                (unsigned long long)r->docs_unchecked;
    /* Ctrl-C is a normal end: the verdict rests on what was measured, and a check
     * that a Ctrl-C skipped is not a failure. */
    r->ok = r->errors == 0 && (r->data_ok || r->check_skipped);
}

int loadtest_main(int argc, char **argv)
{
    struct lt_opts o;
    int prc = lt_opts_parse(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 2;
    setup_process(o.teachers + o.students);

    struct lt_run run;
    memset(&run, 0, sizeof run);
    run.opts = &o;
    run.epfd = -1;
    struct lt_result res;
    memset(&res, 0, sizeof res);
    int rc = 1;
    char err[256];
    if (lt_loop_init(&run)) {
        perror("loadtest: epoll_create1");
        goto out;
    }
    if (lt_ws_ctx_init(&run.ws, o.url, o.tls_verify, run.epfd, err, sizeof err)) {
        fprintf(stderr, "loadtest: %s\n", err);
        goto out;
    }
    if (o.compression && lt_ws_ctx_offer_compression(&run.ws)) {
        fprintf(stderr, "loadtest: out of memory\n");
        goto out;
    }
    if (build(&run)) {
        fprintf(stderr, "loadtest: out of memory\n");
        goto out;
    }
    run.t0_us = lt_now_us();
    run.rng = run.t0_us * 0x9E3779B97F4A7C15ULL | 1;
    FILE *live = o.json ? stderr : stdout;
    fprintf(live,
            "Testing %s: %d teachers, %d students, %d document%s (%s%s), %zu-byte changes "
            "every %g ms on average, connections over %g ms\n",
            o.url, o.teachers, o.students, o.docs, o.docs > 1 ? "s" : "", run.docs[0].id,
            o.docs > 1 ? " ..." : "", o.change_bytes, o.delay_ms, o.spread_ms);
    for (int k = 0; k < run.n_clients; k++) {
        uint64_t at = (uint64_t)(o.spread_ms * 1000.0 * k / run.n_clients);
        if (lt_timer_set(&run, &run.clients[k], run.t0_us + at)) {
            fprintf(stderr, "loadtest: out of memory\n");
            goto out;
        }
    }

    /* Run: until --duration or Ctrl-C, a status line every second. */
    uint64_t end = o.duration_s > 0 ? run.t0_us + (uint64_t)(o.duration_s * 1e6) : UINT64_MAX;
    uint64_t next_status = run.t0_us + SEC;
    while (!interrupted) {
        uint64_t now = lt_now_us();
        if (now >= end) break;
        lt_loop_poll(&run, next_status < end ? next_status : end);
        if (lt_now_us() >= next_status) {
            lt_report_status(&run, live);
            next_status += SEC;
        }
    }
    res.interrupted = interrupted != 0;
    run.run_end_us = lt_now_us();
    res.run_s = (double)(run.run_end_us - run.t0_us) / 1e6;

    /* Drain: no new changes, no new connections; let the last ones arrive. */
    run.phase = LT_PHASE_DRAIN;
    int sigs = interrupted;
    for (int k = 0; k < run.n_clients; k++) lt_client_quiesce(&run.clients[k]);
    uint64_t deadline = lt_now_us() + DRAIN_US;
    while (!drained(&run) && lt_now_us() < deadline && interrupted == sigs)
        lt_loop_poll(&run, lt_now_us() + 100000);
    res.drain_timed_out = !drained(&run);

    /* Data check: one fresh client per document reads it from offset 0. The
     * clients' lengths and CRCs are final now, so they are closed first: a server
     * with a connection cap then has room for the checkers, a few at a time. */
    if (interrupted == sigs) {
        run.phase = LT_PHASE_CHECK;
        for (int k = 0; k < run.n_clients; k++) lt_client_close(&run.clients[k]);
        int next = 0, finished = 0;
        deadline = lt_now_us() + CHECK_US;
        while (finished < run.n_docs && lt_now_us() < deadline && interrupted == sigs) {
            while (next < run.n_docs && run.checks_open < CHECK_PARALLEL)
                lt_client_start(&run.checkers[next++]);
            lt_loop_poll(&run, lt_now_us() + 100000);
            finished = 0;
            for (int d = 0; d < next; d++) finished += run.docs[d].check != 0;
        }
    }
    res.check_skipped = interrupted != sigs;
    run.phase = LT_PHASE_DONE;

    judge(&run, &res);
    /* With --json, stdout carries only the JSON line; people still get the text. */
    lt_report_summary(&run, &res, o.json ? stderr : stdout);
    if (o.json) lt_report_json(&run, &res, stdout);
    rc = res.ok ? 0 : 1;
out:
    teardown(&run);
    return rc;
}
