/* webhook: owns the pending idle-session events and the thread that delivers them.
 *
 * Pending events live in a hash table (cancel by document id in O(1)) threaded on a
 * FIFO list. The delay is the same for every event, so insertion order is due order
 * and the sender only ever looks at the head of the list. */
#include "webhook.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "hub.h"
#include "log.h"
#include "mono.h"

#define NBUCKETS 4096 /* power of two; ~2.4 entries per bucket when full */

struct entry {
    struct entry *hnext;       /* hash chain */
    struct entry *prev, *next; /* FIFO, oldest first */
    uint64_t due_ns;           /* mono_ns() */
    uint32_t hash;
    size_t len;
    char id[];
};

struct webhook {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on a new head and on stop */
    pthread_t thread;
    atomic_int stopping; /* also read by curl's progress callback, unlocked */
    struct entry *buckets[NBUCKETS];
    struct entry *head, *tail;
    size_t count;
    uint64_t dropped;
    char *url, *user, *password;
    int delay_ms;
};

static uint32_t hash_id(const char *id, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h;
}

/* A log-safe rendering of a document id: printable ASCII, at most 64 characters. */
static void printable(const char *id, size_t len, char out[80])
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < 64; i++)
        out[o++] = (id[i] >= 0x20 && id[i] < 0x7f) ? id[i] : '?';
    if (len > 64) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
}

/* ---- the pending set (all called with lock held) ---- */

static struct entry **find_slot(struct webhook *w, const char *id, size_t len, uint32_t h)
{
    struct entry **pp = &w->buckets[h & (NBUCKETS - 1)];
    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->id, id, len) == 0) return pp;
    return pp;
}

static void fifo_unlink(struct webhook *w, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        w->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        w->tail = e->prev;
    e->prev = e->next = NULL;
}

static void fifo_append(struct webhook *w, struct entry *e)
{
    e->prev = w->tail;
    e->next = NULL;
    if (w->tail)
        w->tail->next = e;
    else
        w->head = e;
    w->tail = e;
}

/* Removes e from both structures; the caller frees it. */
static void remove_entry(struct webhook *w, struct entry *e)
{
    struct entry **pp = find_slot(w, e->id, e->len, e->hash);
    if (*pp == e) *pp = e->hnext;
    fifo_unlink(w, e);
    w->count--;
}

/* ---- delivery ---- */

static size_t discard_body(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

/* Aborts a transfer in flight when the server is stopping. */
static int progress(void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return atomic_load(&((struct webhook *)arg)->stopping) ? 1 : 0;
}

static void deliver(struct webhook *w, CURL *curl, const struct entry *e)
{
    char shown[80];
    printable(e->id, e->len, shown);
    char *enc = curl_easy_escape(curl, e->id, (int)e->len);
    if (!enc) {
        log_error("webhook: out of memory encoding document %s", shown);
        return;
    }
    static const char prefix[] = "event=idle-session&documentID=";
    size_t n = sizeof prefix - 1 + strlen(enc);
    char *body = malloc(n + 1);
    if (!body) {
        curl_free(enc);
        log_error("webhook: out of memory for document %s", shown);
        return;
    }
    memcpy(body, prefix, sizeof prefix - 1);
    strcpy(body + sizeof prefix - 1, enc);
    curl_free(enc);

    /* The handle is reused so keep-alive connections to the endpoint are kept;
     * options are set again each time after a reset for clarity. */
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, w->url);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)n);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, w);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    if (w->user || w->password) {
        curl_easy_setopt(curl, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(curl, CURLOPT_USERNAME, w->user ? w->user : "");
        curl_easy_setopt(curl, CURLOPT_PASSWORD, w->password ? w->password : "");
    }
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    /* The URL is not logged: it may carry credentials. */
    if (rc != CURLE_OK)
        log_warn("webhook: idle-session for document %s failed: %s", shown, curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        log_warn("webhook: idle-session for document %s answered HTTP %ld", shown, status);
    else
        log_info("webhook: idle-session for document %s sent (HTTP %ld)", shown, status);
    free(body);
}

static void *sender_main(void *arg)
{
    struct webhook *w = arg;
    CURL *curl = curl_easy_init();
    if (!curl) log_error("webhook: curl_easy_init failed; idle events will be dropped");
    pthread_mutex_lock(&w->lock);
    while (!atomic_load(&w->stopping)) {
        struct entry *e = w->head;
        if (!e) {
            pthread_cond_wait(&w->cond, &w->lock);
            continue;
        }
        if (e->due_ns > mono_ns()) {
            struct timespec ts = mono_timespec(e->due_ns);
            pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            continue;
        }
        remove_entry(w, e);
        /* Sent without the lock: sessions schedule and cancel while we wait on HTTP. */
        pthread_mutex_unlock(&w->lock);
        if (curl) deliver(w, curl, e);
        free(e);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    if (curl) curl_easy_cleanup(curl);
    return NULL;
}

/* ---- public ---- */

static char *dup_or_null(const char *s) { return (s && *s) ? strdup(s) : NULL; }

struct webhook *webhook_start(const char *url, const char *user, const char *password, int delay_ms)
{
    if (!url || !*url) return NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("webhook: libcurl initialisation failed");
        return NULL;
    }
    struct webhook *w = calloc(1, sizeof *w);
    if (!w) goto fail_curl;
    w->url = strdup(url);
    w->user = dup_or_null(user);
    w->password = dup_or_null(password);
    if (!w->url || (user && *user && !w->user) || (password && *password && !w->password))
        goto fail_mem;
    w->delay_ms = delay_ms < 0 ? 0 : delay_ms;
    atomic_init(&w->stopping, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) goto fail_mem;
    pthread_mutex_init(&w->lock, NULL);
    rc = pthread_create(&w->thread, NULL, sender_main, w);
    if (rc != 0) {
        log_error("webhook: cannot start thread: %s", strerror(rc));
        pthread_mutex_destroy(&w->lock);
        pthread_cond_destroy(&w->cond);
        goto fail_mem;
    }
    log_info("webhook: idle-session events enabled, delay %d ms", w->delay_ms);
    return w;
fail_mem:
    if (w) {
        free(w->url);
        free(w->user);
        free(w->password);
        free(w);
    }
    log_error("webhook: out of memory");
fail_curl:
    curl_global_cleanup();
    return NULL;
}

void webhook_doc_idle(struct webhook *w, const char *id, size_t len)
{
    if (!w) return;
    uint32_t h = hash_id(id, len);
    pthread_mutex_lock(&w->lock);
    struct entry **pp = find_slot(w, id, len, h);
    struct entry *e = *pp;
    if (e) {
        fifo_unlink(w, e); /* idle again: the delay restarts from now */
    } else if (w->count >= WEBHOOK_MAX_PENDING) {
        uint64_t dropped = ++w->dropped;
        pthread_mutex_unlock(&w->lock);
        /* One line for the first drop and then every 1000th, not one per document. */
        if (dropped == 1 || dropped % 1000 == 0)
            log_warn("webhook: %d events pending; dropped %llu idle events so far",
                     WEBHOOK_MAX_PENDING, (unsigned long long)dropped);
        return;
    } else {
        e = malloc(sizeof *e + len);
        if (!e) {
            pthread_mutex_unlock(&w->lock);
            log_error("webhook: out of memory; idle event dropped");
            return;
        }
        memcpy(e->id, id, len);
        e->len = len;
        e->hash = h;
        e->hnext = NULL;
        *pp = e;
        w->count++;
    }
    e->due_ns = mono_ns() + (uint64_t)w->delay_ms * 1000000u;
    fifo_append(w, e);
    int new_head = (w->head == e);
    pthread_mutex_unlock(&w->lock);
    if (new_head) pthread_cond_signal(&w->cond);
}

void webhook_doc_active(struct webhook *w, const char *id, size_t len)
{
    if (!w) return;
    uint32_t h = hash_id(id, len);
    pthread_mutex_lock(&w->lock);
    struct entry *e = *find_slot(w, id, len, h);
    if (e) remove_entry(w, e);
    pthread_mutex_unlock(&w->lock);
    /* No signal: the sender at worst wakes for a head that is gone and sleeps again. */
    free(e);
}

size_t webhook_pending(struct webhook *w)
{
    if (!w) return 0;
    pthread_mutex_lock(&w->lock);
    size_t n = w->count;
    pthread_mutex_unlock(&w->lock);
    return n;
}

void webhook_stop(struct webhook *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->stopping, 1);
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    if (w->count) log_info("webhook: %zu pending idle events dropped at shutdown", w->count);
    for (struct entry *e = w->head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w->url);
    free(w->user);
    free(w->password);
    free(w);
    curl_global_cleanup();
}

void webhook_on_doc_idle(void *arg, const char *id, size_t id_len)
{
    webhook_doc_idle(arg, id, id_len);
}

void webhook_on_doc_active(void *arg, const char *id, size_t id_len)
{
    webhook_doc_active(arg, id, id_len);
}

void webhook_listener(struct webhook *w, struct hub_listener *l)
{
    l->doc_idle = webhook_on_doc_idle;
    l->doc_active = webhook_on_doc_active;
    l->arg = w;
}
