/* maintenance: owns the sweep thread and its schedule. */
#include "maintenance.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "store.h"

struct maintenance {
    struct store *store;
    int64_t max_idle;
    int first_s, interval_s;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

static void *sweep_main(void *arg)
{
    struct maintenance *m = arg;
    int wait_s = m->first_s;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_s;
        while (!m->stopping && pthread_cond_timedwait(&m->wake, &m->lock, &until) != ETIMEDOUT) {}
        if (m->stopping) break;
        pthread_mutex_unlock(&m->lock);
        uint64_t removed = 0;
        /* With Expiration=never only tokens expire: no document is that old. */
        int64_t idle = m->max_idle > 0 ? m->max_idle : INT64_MAX / 2;
        int rc = store_sweep(m->store, (int64_t)time(NULL), idle, &removed);
        if (rc)
            log_error("expiry sweep failed: %s", store_strerror(rc));
        else if (removed)
            log_info("expiry sweep removed %llu idle documents", (unsigned long long)removed);
        pthread_mutex_lock(&m->lock);
        wait_s = m->interval_s;
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

struct maintenance *maintenance_start(struct store *store, int64_t max_idle, int first_s,
                                      int interval_s)
{
    struct maintenance *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->store = store;
    m->max_idle = max_idle;
    m->first_s = first_s;
    m->interval_s = interval_s;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->wake, NULL);
    if (pthread_create(&m->thread, NULL, sweep_main, m)) {
        free(m);
        return NULL;
    }
    return m;
}

void maintenance_stop(struct maintenance *m)
{
    if (!m) return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_cond_signal(&m->wake);
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
