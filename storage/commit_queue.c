/* commit_queue: the queue, the committer thread and the wake-ups of group commit
 * (commit_queue.h). */
#include "commit_queue.h"

#include <time.h>

#include "mono.h"

/* Worth a batch now: someone waits, we are stopping, or the detached items are due. */
static bool batch_due(const struct commit_queue *q)
{
    if (!q->head) return false;
    return q->waiting > 0 || q->stopping || q->len >= q->defer_max || mono_ns() >= q->deadline_ns;
}

static void *committer_main(void *arg)
{
    struct commit_queue *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        while (!batch_due(q)) {
            if (!q->head && q->stopping) goto out;
            if (q->head) {
                struct timespec ts = mono_timespec(q->deadline_ns);
                pthread_cond_timedwait(&q->cond, &q->lock, &ts);
            } else {
                pthread_cond_wait(&q->cond, &q->lock);
            }
        }
        struct commit_queue_item *batch = q->head;
        size_t n = q->len;
        q->head = q->tail = NULL;
        q->len = q->waiting = q->detached = 0;
        pthread_mutex_unlock(&q->lock);

        q->run(q->arg, batch, n);

        pthread_mutex_lock(&q->lock);
        while (batch) {
            struct commit_queue_item *next = batch->next; /* a woken caller's item
                                                              vanishes with its stack */
            if (batch->detached) {
                q->release(q->arg, batch);
            } else {
                batch->done = true;
                pthread_cond_signal(&batch->cond);
            }
            batch = next;
        }
        if (q->after) {
            bool more = q->head != NULL;
            pthread_mutex_unlock(&q->lock);
            q->after(q->arg, more);
            pthread_mutex_lock(&q->lock);
        }
    }
out:
    pthread_mutex_unlock(&q->lock);
    return NULL;
}

int commit_queue_start(struct commit_queue *q)
{
    q->head = q->tail = NULL;
    q->len = q->waiting = q->detached = 0;
    q->stopping = false;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&q->lock, NULL);
    int rc = pthread_create(&q->thread, NULL, committer_main, q);
    if (rc) {
        pthread_cond_destroy(&q->cond);
        pthread_mutex_destroy(&q->lock);
        return rc;
    }
    q->started = true;
    return 0;
}

void commit_queue_stop(struct commit_queue *q)
{
    if (!q->started) return;
    pthread_mutex_lock(&q->lock);
    q->stopping = true;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    q->started = false;
}

/* Called with the lock held. */
static void enqueue(struct commit_queue *q, struct commit_queue_item *item)
{
    item->next = NULL;
    item->done = false;
    if (q->tail)
        q->tail->next = item;
    else
        q->head = item;
    q->tail = item;
    q->len++;
}

void commit_queue_submit(struct commit_queue *q, struct commit_queue_item *item)
{
    item->detached = false;
    pthread_cond_init(&item->cond, NULL);
    pthread_mutex_lock(&q->lock);
    enqueue(q, item);
    q->waiting++;
    pthread_cond_signal(&q->cond);
    while (!item->done) pthread_cond_wait(&item->cond, &q->lock);
    pthread_mutex_unlock(&q->lock);
    pthread_cond_destroy(&item->cond);
}

void commit_queue_post(struct commit_queue *q, struct commit_queue_item *item)
{
    item->detached = true;
    pthread_mutex_lock(&q->lock);
    enqueue(q, item);
    if (q->detached++ == 0) {
        q->deadline_ns = mono_ns() + q->defer_ns;
        pthread_cond_signal(&q->cond); /* switch the committer to a timed wait */
    } else if (q->len >= q->defer_max) {
        pthread_cond_signal(&q->cond);
    }
    pthread_mutex_unlock(&q->lock);
}
