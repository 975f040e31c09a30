/* loadtest_loop: the load tester's event loop: one epoll instance for every
 * connection, plus a binary heap of per-client timers (connect times, teachers'
 * next changes). Timers are cancelled lazily: a popped entry whose time no longer
 * matches its client's is stale and dropped. */
#include "loadtest_client.h"
#include "loadtest_run.h"
#include "mono.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 1024

uint64_t lt_now_us(void) { return mono_us(); }

double lt_random(struct lt_run *run)
{
    uint64_t x = run->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    run->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

void lt_logv(struct lt_run *run, const char *fmt, ...)
{
    if (!run->opts->verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[%8.3f] ", (double)(lt_now_us() - run->t0_us) / 1e6);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int lt_loop_init(struct lt_run *run)
{
    run->epfd = epoll_create1(EPOLL_CLOEXEC);
    return run->epfd < 0 ? -1 : 0;
}

void lt_loop_free(struct lt_run *run)
{
    if (run->epfd >= 0) close(run->epfd);
    run->epfd = -1;
    free(run->timers);
    run->timers = NULL;
    run->n_timers = run->cap_timers = 0;
}

static void heap_swap(struct lt_timer *h, size_t a, size_t b)
{
    struct lt_timer t = h[a];
    h[a] = h[b];
    h[b] = t;
}

int lt_timer_set(struct lt_run *run, struct lt_client *c, uint64_t due_us)
{
    c->due_us = due_us;
    if (!due_us) return 0;
    if (run->n_timers == run->cap_timers) {
        size_t n = run->cap_timers ? run->cap_timers * 2 : 1024;
        struct lt_timer *t = realloc(run->timers, n * sizeof *t);
        if (!t) return -1;
        run->timers = t;
        run->cap_timers = n;
    }
    struct lt_timer *h = run->timers;
    size_t i = run->n_timers++;
    h[i] = (struct lt_timer){ due_us, c };
    while (i && h[(i - 1) / 2].due_us > h[i].due_us) {
        heap_swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return 0;
}

static void heap_pop(struct lt_run *run)
{
    struct lt_timer *h = run->timers;
    h[0] = h[--run->n_timers];
    size_t i = 0, n = run->n_timers;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].due_us < h[m].due_us) m = l;
        if (r < n && h[r].due_us < h[m].due_us) m = r;
        if (m == i) break;
        heap_swap(h, i, m);
        i = m;
    }
}

/* Fires every timer due by now. */
static void run_timers(struct lt_run *run, uint64_t now)
{
    while (run->n_timers && run->timers[0].due_us <= now) {
        struct lt_timer t = run->timers[0];
        heap_pop(run);
        if (t.client->due_us != t.due_us) continue; /* re-armed or disarmed since */
        t.client->due_us = 0;
        lt_client_timer(t.client);
    }
}

void lt_loop_poll(struct lt_run *run, uint64_t until_us)
{
    uint64_t now = lt_now_us();
    run_timers(run, now);
    uint64_t wake = until_us;
    while (run->n_timers && run->timers[0].client->due_us != run->timers[0].due_us)
        heap_pop(run); /* so a stale entry cannot cut the sleep short */
    if (run->n_timers && run->timers[0].due_us < wake) wake = run->timers[0].due_us;
    now = lt_now_us();
    int timeout = wake <= now ? 0 : (int)((wake - now + 999) / 1000);
    struct epoll_event ev[MAX_EVENTS];
    int n = epoll_wait(run->epfd, ev, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) {
        perror("loadtest: epoll_wait");
        return;
    }
    for (int i = 0; i < n; i++) lt_client_event(ev[i].data.ptr, ev[i].events);
    run_timers(run, lt_now_us());
}
