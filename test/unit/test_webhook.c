/* test_webhook: unit tests for server/app/webhook.c — delivery of one event to an
 * in-process HTTP listener (body, Basic auth), cancellation by a rejoin, the bound on
 * pending events, shutdown with events pending, and many threads scheduling and
 * cancelling at once (run under TSan by `make test`). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "webhook.h"

/* ---- a one-request-at-a-time HTTP listener ---- */

struct listener {
    int fd, port;
    pthread_t thread;
    pthread_mutex_t lock;
    char requests[8][4096]; /* raw requests received */
    int count;
    int stop;
};

static void *listener_main(void *arg)
{
    struct listener *l = arg;
    for (;;) {
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0) {
            pthread_mutex_lock(&l->lock);
            int stop = l->stop;
            pthread_mutex_unlock(&l->lock);
            if (stop) return NULL;
            continue;
        }
        int c = accept(l->fd, NULL, NULL);
        if (c < 0) continue;
        char buf[4096];
        size_t n = 0;
        /* Read headers, then Content-Length bytes of body. */
        for (;;) {
            ssize_t r = read(c, buf + n, sizeof buf - 1 - n);
            if (r <= 0) break;
            n += (size_t)r;
            buf[n] = 0;
            char *end = strstr(buf, "\r\n\r\n");
            const char *cl = strcasestr(buf, "Content-Length:");
            if (end && cl && n >= (size_t)(end + 4 - buf) + (size_t)atoi(cl + 15)) break;
        }
        buf[n] = 0;
        pthread_mutex_lock(&l->lock);
        if (l->count < 8) snprintf(l->requests[l->count++], sizeof l->requests[0], "%s", buf);
        pthread_mutex_unlock(&l->lock);
        const char *reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        ssize_t w = write(c, reply, strlen(reply));
        (void)w;
        close(c);
    }
}

static void listener_start(struct listener *l)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->lock, NULL);
    l->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l->fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(l->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l->fd, 8), 0);
    socklen_t len = sizeof a;
    getsockname(l->fd, (struct sockaddr *)&a, &len);
    l->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&l->thread, NULL, listener_main, l), 0);
}

static void listener_stop(struct listener *l)
{
    pthread_mutex_lock(&l->lock);
    l->stop = 1;
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    close(l->fd);
    pthread_mutex_destroy(&l->lock);
}

static int listener_count(struct listener *l)
{
    pthread_mutex_lock(&l->lock);
    int n = l->count;
    pthread_mutex_unlock(&l->lock);
    return n;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Waits up to ms for the listener to have `want` requests. */
static int wait_count(struct listener *l, int want, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        if (listener_count(l) >= want) return listener_count(l);
        sleep_ms(10);
    }
    return listener_count(l);
}

static char *url_of(struct listener *l, char *buf, size_t n)
{
    snprintf(buf, n, "http://127.0.0.1:%d/hook", l->port);
    return buf;
}

/* ---- tests ---- */

static void test_delivers_form_with_basic_auth(void **state)
{
    (void)state;
    struct listener l;
    listener_start(&l);
    char url[64];
    struct webhook *w = webhook_start(url_of(&l, url, sizeof url), "admin", "pw", 50);
    assert_non_null(w);
    webhook_doc_idle(w, "a b&c", 5);
    assert_int_equal(webhook_pending(w), 1);
    assert_int_equal(wait_count(&l, 1, 5000), 1);
    const char *req = l.requests[0];
    assert_non_null(strstr(req, "POST /hook HTTP/1.1\r\n"));
    assert_non_null(strstr(req, "Content-Type: application/x-www-form-urlencoded"));
    assert_non_null(strstr(req, "Authorization: Basic YWRtaW46cHc=\r\n")); /* admin:pw */
    assert_non_null(strstr(req, "\r\n\r\nevent=idle-session&documentID=a%20b%26c"));
    assert_int_equal(webhook_pending(w), 0);
    webhook_stop(w);
    listener_stop(&l);
}

static void test_no_credentials_no_auth_header(void **state)
{
    (void)state;
    struct listener l;
    listener_start(&l);
    char url[64];
    struct webhook *w = webhook_start(url_of(&l, url, sizeof url), "", NULL, 0);
    assert_non_null(w);
    webhook_doc_idle(w, "doc\0bin", 7); /* ids are byte strings */
    assert_int_equal(wait_count(&l, 1, 5000), 1);
    assert_null(strstr(l.requests[0], "Authorization:"));
    assert_non_null(strstr(l.requests[0], "documentID=doc%00bin"));
    webhook_stop(w);
    listener_stop(&l);
}

static void test_rejoin_cancels(void **state)
{
    (void)state;
    struct listener l;
    listener_start(&l);
    char url[64];
    struct webhook *w = webhook_start(url_of(&l, url, sizeof url), NULL, NULL, 300);
    webhook_doc_idle(w, "doc", 3);
    webhook_doc_idle(w, "other", 5);
    sleep_ms(100);
    webhook_doc_active(w, "doc", 3);
    webhook_doc_active(w, "never-idle", 10); /* unknown: no effect */
    assert_int_equal(webhook_pending(w), 1);
    assert_int_equal(wait_count(&l, 1, 5000), 1);
    sleep_ms(500);
    assert_int_equal(listener_count(&l), 1);
    assert_non_null(strstr(l.requests[0], "documentID=other"));
    webhook_stop(w);
    listener_stop(&l);
}

static void test_idle_again_restarts_delay(void **state)
{
    (void)state;
    struct listener l;
    listener_start(&l);
    char url[64];
    struct webhook *w = webhook_start(url_of(&l, url, sizeof url), NULL, NULL, 400);
    webhook_doc_idle(w, "doc", 3);
    sleep_ms(250);
    webhook_doc_idle(w, "doc", 3); /* re-scheduled, still one entry */
    assert_int_equal(webhook_pending(w), 1);
    sleep_ms(250); /* 500 ms after the first: would have fired without the restart */
    assert_int_equal(listener_count(&l), 0);
    assert_int_equal(wait_count(&l, 1, 5000), 1);
    sleep_ms(300);
    assert_int_equal(listener_count(&l), 1);
    webhook_stop(w);
    listener_stop(&l);
}

static void test_pending_is_bounded(void **state)
{
    (void)state;
    struct webhook *w = webhook_start("http://127.0.0.1:9/never", NULL, NULL, 3600000);
    assert_non_null(w);
    char id[32];
    for (int i = 0; i < WEBHOOK_MAX_PENDING + 500; i++) {
        int n = snprintf(id, sizeof id, "doc-%d", i);
        webhook_doc_idle(w, id, (size_t)n);
    }
    assert_int_equal(webhook_pending(w), WEBHOOK_MAX_PENDING);
    /* Cancelling makes room again. */
    webhook_doc_active(w, "doc-0", 5);
    webhook_doc_idle(w, "late", 4);
    assert_int_equal(webhook_pending(w), WEBHOOK_MAX_PENDING);
    /* Stop with everything pending: prompt, no leak (ASan). */
    webhook_stop(w);
}

static void test_unreachable_endpoint_and_prompt_stop(void **state)
{
    (void)state;
    /* Port 9 (discard) is closed here: each attempt fails at once and is logged. */
    struct webhook *w = webhook_start("http://127.0.0.1:9/x", "u", "p", 0);
    for (int i = 0; i < 20; i++) webhook_doc_idle(w, "d", 1);
    sleep_ms(200);
    assert_int_equal(webhook_pending(w), 0);
    webhook_stop(w);
}

struct hammer_arg {
    struct webhook *w;
    unsigned seed;
};

static void *hammer(void *p)
{
    struct hammer_arg *a = p;
    char id[16];
    for (int i = 0; i < 3000; i++) {
        a->seed = a->seed * 1103515245u + 12345u;
        int n = snprintf(id, sizeof id, "d%u", (a->seed >> 8) % 64);
        if (a->seed & 0x10000)
            webhook_doc_idle(a->w, id, (size_t)n);
        else
            webhook_doc_active(a->w, id, (size_t)n);
    }
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    struct listener l;
    listener_start(&l);
    char url[64];
    struct webhook *w = webhook_start(url_of(&l, url, sizeof url), NULL, NULL, 1);
    pthread_t t[4];
    struct hammer_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct hammer_arg){ w, (unsigned)i * 7919u + 1 };
        pthread_create(&t[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    assert_true(webhook_pending(w) <= 64);
    webhook_stop(w);
    listener_stop(&l);
}

static void test_listener_adapters(void **state)
{
    (void)state;
    struct hub_listener hl;
    webhook_listener(NULL, &hl);
    assert_ptr_equal(hl.doc_idle, webhook_on_doc_idle);
    assert_ptr_equal(hl.doc_active, webhook_on_doc_active);
    assert_null(hl.arg);
    /* A server without a Webhook passes NULL: the adapters do nothing. */
    hl.doc_idle(hl.arg, "x", 1);
    hl.doc_active(hl.arg, "x", 1);
    assert_null(webhook_start("", NULL, NULL, 10));
    assert_null(webhook_start(NULL, NULL, NULL, 10));
    assert_int_equal(webhook_pending(NULL), 0);
    webhook_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delivers_form_with_basic_auth),
        cmocka_unit_test(test_no_credentials_no_auth_header),
        cmocka_unit_test(test_rejoin_cancels),
        cmocka_unit_test(test_idle_again_restarts_delay),
        cmocka_unit_test(test_pending_is_bounded),
        cmocka_unit_test(test_unreachable_endpoint_and_prompt_stop),
        cmocka_unit_test(test_many_threads),
        cmocka_unit_test(test_listener_adapters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
