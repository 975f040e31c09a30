/* inbox: owns each client's queue of inbound messages (client.h, struct client_inbox)
 * and the worker threads that run them. */
#include "inbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

#define ITEMS_PER_TURN 16

struct inbox_item {
    struct inbox_item *next;
    size_t len;
    uint8_t data[];
};

struct inbox {
    struct inbox_handlers h;
    size_t pause_bytes;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct hub_client *run_head, *run_tail;
    bool stopping;
    int nthreads;
    pthread_t *threads;
};

/* Called with ib->lock held: puts c in the run list unless it is there or running. */
static void schedule(struct inbox *ib, struct hub_client *c)
{
    struct client_inbox *in = &c->in;
    if (in->scheduled) return;
    in->scheduled = true;
    in->run_next = NULL;
    if (ib->run_tail)
        ib->run_tail->in.run_next = c;
    else
        ib->run_head = c;
    ib->run_tail = c;
    pthread_cond_signal(&ib->wake);
}

bool inbox_push(struct inbox *ib, struct hub_client *c, const uint8_t *data, size_t len)
{
    struct inbox_item *it = malloc(sizeof *it + len);
    if (!it) {
        client_log(c, LOG_ERROR, "out of memory queueing a message; dropped");
        return false;
    }
    it->next = NULL;
    it->len = len;
    memcpy(it->data, data, len);
    pthread_mutex_lock(&ib->lock);
    struct client_inbox *in = &c->in;
    if (in->tail)
        in->tail->next = it;
    else
        in->head = it;
    in->tail = it;
    in->bytes += len;
    schedule(ib, c);
    bool pause = c->in.bytes > ib->pause_bytes;
    if (pause) c->in.paused = true;
    pthread_mutex_unlock(&ib->lock);
    return pause;
}

void inbox_push_close(struct inbox *ib, struct hub_client *c)
{
    client_ref(c); /* until the close has run */
    pthread_mutex_lock(&ib->lock);
    c->in.closed = true;
    schedule(ib, c);
    pthread_mutex_unlock(&ib->lock);
}

/* Runs up to ITEMS_PER_TURN of c's items; requeues c when more are left. */
static void run_client(struct inbox *ib, struct hub_client *c)
{
    for (int n = 0; n < ITEMS_PER_TURN; n++) {
        pthread_mutex_lock(&ib->lock);
        struct inbox_item *it = c->in.head;
        if (!it && c->in.closed) { /* the end comes after every message */
            pthread_mutex_unlock(&ib->lock);
            ib->h.closed(ib->h.arg, c);
            client_unref(c); /* the close's reference: c may be gone now */
            return;
        }
        if (!it) {
            c->in.scheduled = false;
            pthread_mutex_unlock(&ib->lock);
            return;
        }
        c->in.head = it->next;
        if (!c->in.head) c->in.tail = NULL;
        c->in.bytes -= it->len;
        bool resume = c->in.paused && c->in.bytes <= ib->pause_bytes / 2 && !c->in.closed;
        if (resume) c->in.paused = false;
        pthread_mutex_unlock(&ib->lock);
        if (resume) ib->h.resume(ib->h.resume_arg, c);
        ib->h.message(ib->h.arg, c, it->data, it->len);
        free(it);
    }
    pthread_mutex_lock(&ib->lock);
    if (c->in.head || c->in.closed) { /* after the others */
        c->in.run_next = NULL;
        if (ib->run_tail)
            ib->run_tail->in.run_next = c;
        else
            ib->run_head = c;
        ib->run_tail = c;
    } else {
        c->in.scheduled = false;
    }
    pthread_mutex_unlock(&ib->lock);
}

static void *worker_main(void *arg)
{
    struct inbox *ib = arg;
    pthread_mutex_lock(&ib->lock);
    for (;;) {
        struct hub_client *c = ib->run_head;
        if (!c) {
            if (ib->stopping) break;
            pthread_cond_wait(&ib->wake, &ib->lock);
            continue;
        }
        ib->run_head = c->in.run_next;
        if (!ib->run_head)
            ib->run_tail = NULL;
        else
            pthread_cond_signal(&ib->wake); /* more work: another worker may take it */
        pthread_mutex_unlock(&ib->lock);
        run_client(ib, c);
        pthread_mutex_lock(&ib->lock);
    }
    pthread_mutex_unlock(&ib->lock);
    return NULL;
}

struct inbox *inbox_start(int threads, size_t pause_bytes, const struct inbox_handlers *h)
{
    struct inbox *ib = calloc(1, sizeof *ib);
    if (!ib) return NULL;
    ib->h = *h;
    ib->pause_bytes = pause_bytes;
    pthread_mutex_init(&ib->lock, NULL);
    pthread_cond_init(&ib->wake, NULL);
    ib->threads = calloc((size_t)(threads > 0 ? threads : 1), sizeof *ib->threads);
    if (!ib->threads) goto fail;
    for (; ib->nthreads < (threads > 0 ? threads : 1); ib->nthreads++)
        if (pthread_create(&ib->threads[ib->nthreads], NULL, worker_main, ib)) goto fail;
    return ib;
fail:
    inbox_stop(ib);
    return NULL;
}

void inbox_stop(struct inbox *ib)
{
    if (!ib) return;
    pthread_mutex_lock(&ib->lock);
    ib->stopping = true;
    pthread_cond_broadcast(&ib->wake);
    pthread_mutex_unlock(&ib->lock);
    for (int i = 0; i < ib->nthreads; i++) pthread_join(ib->threads[i], NULL);
    free(ib->threads);
    pthread_cond_destroy(&ib->wake);
    pthread_mutex_destroy(&ib->lock);
    free(ib);
}
