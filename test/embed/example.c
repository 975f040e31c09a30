/* example: embedding zwibbler-server in your own program (docs/embedding.md).
 *
 * Starts a CivetWeb server of its own with a page at "/", mounts the collaboration
 * endpoint at "/collab", and stores documents with a storage backend written right
 * here: a small in-memory store implementing store.h (documents and session keys;
 * no tokens). Usage: example PORT. Stops on SIGTERM or SIGINT.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "civetweb.h"
#include "zwibbler.h"

/* ---- an in-memory backend ---- */

struct mem_key {
    char *doc, *name;
    size_t doc_len, name_len;
    uint8_t *value;
    size_t value_len;
    uint32_t version;
    struct mem_key *next;
};

struct mem_doc {
    char *id;
    size_t id_len;
    uint8_t *data;
    size_t len, cap;
    struct mem_doc *next;
};

struct mem_store {
    struct store base; /* first, as store.h requires */
    pthread_mutex_t lock;
    struct mem_doc *docs;
    struct mem_key *keys;
};

static struct mem_doc *find_doc(struct mem_store *m, const char *id, size_t n)
{
    for (struct mem_doc *d = m->docs; d; d = d->next)
        if (d->id_len == n && !memcmp(d->id, id, n)) return d;
    return NULL;
}

static int grow_append(struct mem_doc *d, const uint8_t *data, size_t len)
{
    if (d->len + len > d->cap) {
        size_t cap = d->cap ? d->cap : 256;
        while (cap < d->len + len) cap *= 2;
        uint8_t *b = realloc(d->data, cap);
        if (!b) return STORE_ENOMEM;
        d->data = b;
        d->cap = cap;
    }
    if (len) memcpy(d->data + d->len, data, len);
    d->len += len;
    return STORE_OK;
}

static void mem_close(struct store *s)
{
    struct mem_store *m = (struct mem_store *)s;
    while (m->docs) {
        struct mem_doc *d = m->docs;
        m->docs = d->next;
        free(d->id);
        free(d->data);
        free(d);
    }
    while (m->keys) {
        struct mem_key *k = m->keys;
        m->keys = k->next;
        free(k->doc);
        free(k->name);
        free(k->value);
        free(k);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static int mem_ping(struct store *s)
{
    (void)s;
    return STORE_OK;
}

static int mem_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data,
                          size_t len)
{
    struct mem_store *m = (struct mem_store *)s;
    int rc = STORE_OK;
    pthread_mutex_lock(&m->lock);
    if (find_doc(m, id, id_len)) {
        rc = STORE_EEXISTS;
    } else {
        struct mem_doc *d = calloc(1, sizeof *d);
        char *copy = malloc(id_len + 1);
        if (!d || !copy || grow_append(d, data, len)) {
            free(d ? d->data : NULL);
            free(d);
            free(copy);
            rc = STORE_ENOMEM;
        } else {
            memcpy(copy, id, id_len);
            d->id = copy;
            d->id_len = id_len;
            d->next = m->docs;
            m->docs = d;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    struct mem_store *m = (struct mem_store *)s;
    pthread_mutex_lock(&m->lock);
    struct mem_doc *d = find_doc(m, id, id_len);
    if (d) *len = d->len;
    pthread_mutex_unlock(&m->lock);
    return d ? STORE_OK : STORE_ENOTFOUND;
}

static int mem_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                        uint8_t **data, size_t *len, uint64_t *total)
{
    struct mem_store *m = (struct mem_store *)s;
    int rc = STORE_OK;
    *data = NULL;
    *len = 0;
    pthread_mutex_lock(&m->lock);
    struct mem_doc *d = find_doc(m, id, id_len);
    if (!d)
        rc = STORE_ENOTFOUND;
    else if (offset > d->len)
        rc = STORE_ERANGE;
    else if (d->len > offset) {
        *len = d->len - offset;
        *data = malloc(*len);
        if (*data)
            memcpy(*data, d->data + offset, *len);
        else
            rc = STORE_ENOMEM;
    }
    if (d && total) *total = d->len;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected,
                          const uint8_t *data, size_t len, uint64_t *new_len)
{
    struct mem_store *m = (struct mem_store *)s;
    int rc;
    pthread_mutex_lock(&m->lock);
    struct mem_doc *d = find_doc(m, id, id_len);
    if (!d)
        rc = STORE_ENOTFOUND;
    else if (d->len != expected)
        rc = STORE_EMISMATCH;
    else
        rc = grow_append(d, data, len);
    if (d) *new_len = d->len;
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_doc_delete(struct store *s, const char *id, size_t id_len)
{
    struct mem_store *m = (struct mem_store *)s;
    pthread_mutex_lock(&m->lock);
    int rc = STORE_ENOTFOUND;
    for (struct mem_doc **p = &m->docs; *p; p = &(*p)->next) {
        struct mem_doc *d = *p;
        if (d->id_len == id_len && !memcmp(d->id, id, id_len)) {
            *p = d->next;
            free(d->id);
            free(d->data);
            free(d);
            rc = STORE_OK;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                       size_t name_len, const uint8_t *value, size_t value_len,
                       uint32_t old_version, uint32_t new_version)
{
    struct mem_store *m = (struct mem_store *)s;
    pthread_mutex_lock(&m->lock);
    struct mem_key *k = m->keys;
    while (k && !(k->doc_len == id_len && !memcmp(k->doc, id, id_len) && k->name_len == name_len &&
                  !memcmp(k->name, name, name_len)))
        k = k->next;
    int rc = STORE_OK;
    uint8_t *v = malloc(value_len ? value_len : 1);
    if (!v)
        rc = STORE_ENOMEM;
    else if (k ? k->version != old_version : old_version != 0)
        rc = STORE_EMISMATCH;
    else if (!k) {
        k = calloc(1, sizeof *k);
        if (k) k->doc = malloc(id_len ? id_len : 1), k->name = malloc(name_len ? name_len : 1);
        if (!k || !k->doc || !k->name) {
            if (k) free(k->doc), free(k->name);
            free(k);
            k = NULL;
            rc = STORE_ENOMEM;
        } else {
            memcpy(k->doc, id, id_len);
            memcpy(k->name, name, name_len);
            k->doc_len = id_len;
            k->name_len = name_len;
            k->next = m->keys;
            m->keys = k;
        }
    }
    if (rc == STORE_OK) {
        memcpy(v, value, value_len);
        free(k->value);
        k->value = v;
        k->value_len = value_len;
        k->version = new_version;
    } else {
        free(v);
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int mem_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    struct mem_store *m = (struct mem_store *)s;
    pthread_mutex_lock(&m->lock);
    for (struct mem_key *k = m->keys; k; k = k->next)
        if (k->doc_len == id_len && !memcmp(k->doc, id, id_len) &&
            fn(arg, (const uint8_t *)k->name, k->name_len, k->value, k->value_len, k->version))
            break;
    pthread_mutex_unlock(&m->lock);
    return STORE_OK;
}

/* This backend keeps no tokens: the management API's addToken is refused. */
static int mem_token_add(struct store *s, const char *t, size_t n, const struct store_token *tok)
{
    (void)s, (void)t, (void)n, (void)tok;
    return STORE_EINVAL;
}

static int mem_token_get(struct store *s, const char *t, size_t n, struct store_token *out)
{
    (void)s, (void)t, (void)n, (void)out;
    return STORE_ENOTFOUND;
}

static int mem_user_update(struct store *s, const char *u, size_t n, const char *perms)
{
    (void)s, (void)u, (void)n, (void)perms;
    return STORE_OK;
}

static int mem_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    (void)s, (void)now, (void)max_idle;
    if (removed) *removed = 0;
    return STORE_OK;
}

static const struct store_methods mem_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "memory",
    .close = mem_close,
    .ping = mem_ping,
    .doc_create = mem_doc_create,
    .doc_length = mem_doc_length,
    .doc_read = mem_doc_read,
    .doc_append = mem_doc_append,
    .doc_delete = mem_doc_delete,
    .key_set = mem_key_set,
    .keys_get = mem_keys_get,
    .token_add = mem_token_add,
    .token_get = mem_token_get,
    .user_update = mem_user_update,
    .sweep = mem_sweep,
};

static struct store *mem_store_open(void)
{
    struct mem_store *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->base.methods = &mem_methods;
    pthread_mutex_init(&m->lock, NULL);
    return &m->base;
}

/* ---- the host program ---- */

static int home_page(struct mg_connection *conn, void *arg)
{
    (void)arg;
    mg_send_http_ok(conn, "text/plain", 33);
    mg_write(conn, "my app, with a whiteboard server\n", 33);
    return 200;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char err[256];
    struct store *store = mem_store_open();
    const char *settings[] = { "InitTimeoutMs=5000", "SessionThreads=2", NULL };
    struct zwibbler *z = store ? zwibbler_create(NULL, settings, store, err, sizeof err) : NULL;
    if (!z) {
        fprintf(stderr, "zwibbler: %s\n", store ? err : "out of memory");
        return 1;
    }

    char ports[32];
    snprintf(ports, sizeof ports, "127.0.0.1:%s", argv[1]);
    /* Workers serve HTTP and upgrades only: open WebSockets do not hold them. */
    const char *options[] = { "listening_ports", ports, "num_threads", "8", NULL };
    mg_init_library(0);
    struct mg_callbacks cb = { 0 };
    struct mg_context *ctx = mg_start(&cb, NULL, options);
    if (!ctx) {
        fprintf(stderr, "cannot listen on %s\n", ports);
        zwibbler_destroy(z);
        store_close(store);
        return 1;
    }
    mg_set_request_handler(ctx, "/$", home_page, NULL);
    zwibbler_mount(z, ctx, "/collab");
    printf("listening on http://%s/ with the whiteboard at ws://%s/collab\n", ports, ports);
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);
    mg_stop(ctx);        /* first: no new connections or requests */
    zwibbler_destroy(z); /* closes the WebSockets (1001) */
    store_close(store);  /* ours: zwibbler does not close a store it was given */
    mg_exit_library();
    return 0;
}
