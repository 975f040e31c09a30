/* commit_queue: group commit for a backend with a single writer (LMDB, SQLite).
 *
 * Callers queue write operations and wait; one committer thread takes everything
 * pending and hands it to the backend's `run` as one batch, which the backend runs in
 * one transaction with one commit (one fsync for many appends). Each operation keeps
 * its own checks and result: the queue only orders, batches and wakes. A caller is
 * woken only after `run` returned, so an operation is durable before its caller
 * answers anyone.
 *
 * Detached items (a read's last-access refresh) are not waited for: they ride along
 * with the next batch, or get one of their own once the oldest has waited defer_ns or
 * defer_max items are pending.
 *
 * Thread safety: submit and post may be called from any number of threads; start and
 * stop from one.
 */
#ifndef ZW_COMMIT_QUEUE_H
#define ZW_COMMIT_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded (first) in the backend's operation. Owned by the queue from submit/post
 * until the caller is woken or, for a detached item, until `release`. */
struct commit_queue_item {
    struct commit_queue_item *next; /* the next operation of the batch, in queue order */
    bool detached;
    bool done;
    pthread_cond_t cond;
};

struct commit_queue {
    /* Set by the backend before commit_queue_start. */

    /* Runs the n items from `first` (linked by next, the last one's next is NULL) and
     * stores each one's result in it. Called on the committer thread only. */
    void (*run)(void *arg, struct commit_queue_item *first, size_t n);
    /* Frees a detached item after its batch ran. */
    void (*release)(void *arg, struct commit_queue_item *item);
    /* Optional: called after the callers of a batch were woken, with whether more
     * items wait (housekeeping that must not add to an answer's latency). */
    void (*after)(void *arg, bool more_queued);
    void *arg;
    uint64_t defer_ns; /* longest wait of a detached item for a batch to join */
    size_t defer_max;  /* pending items that start a batch regardless (0: at once) */

    /* Private. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the committer waits here (CLOCK_MONOTONIC) */
    struct commit_queue_item *head, *tail;
    size_t len, waiting, detached;
    uint64_t deadline_ns; /* mono_ns() by which the pending detached items are due */
    bool stopping, started;
    pthread_t thread;
};

/* Starts the committer thread. Returns 0, or an errno value (nothing to stop then). */
int commit_queue_start(struct commit_queue *q);

/* Runs everything still queued, detached items included, then ends the committer.
 * Nothing may be submitted or posted during or after it. Ignored when not started. */
void commit_queue_stop(struct commit_queue *q);

/* Queues item and waits until the batch holding it has run. */
void commit_queue_submit(struct commit_queue *q, struct commit_queue_item *item);

/* Queues item without waiting; the committer calls release once it has run. */
void commit_queue_post(struct commit_queue *q, struct commit_queue_item *item);

#endif
