/* session: the protocol state machine of one connection (PROTOCOL.md §3-4). Runs on
 * the connection's CivetWeb worker thread; everything it sends goes through the
 * client's queue, except the last words before closing during INIT. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "civetweb.h"
#include "client.h"
#include "codec.h"
#include "config.h"
#include "hub_internal.h"
#include "log.h"
#include "message.h"
#include "store.h"

int mg_connection_socket(const struct mg_connection *conn);

#define CLOSE 0
#define KEEP 1

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void client_unref(struct hub_client *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    free(c->ring);
    free(c->frag);
    codec_reasm_free(&c->reasm);
    auth_result_clear(&c->auth);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

struct hub_client *session_open(const struct app *app, struct mg_connection *conn)
{
    struct hub *h = app->hub;
    struct hub_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->hub = h;
    c->conn = conn;
    c->fd = mg_connection_socket(conn);
    c->id = atomic_fetch_add(&h->next_client_id, 1) + 1;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    snprintf(c->addr, sizeof c->addr, "%s", ri && ri->remote_addr[0] ? ri->remote_addr : "?");
    c->tls = ri && ri->is_ssl;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->idle, NULL);
    codec_reasm_init(&c->reasm, app->cfg->max_message_bytes);
    c->connected_ms = now_ms();
    atomic_fetch_add(&h->connections, 1);
    hub_pending_add(h, c);
    return c;
}

/* A message too short for its fields or with a length past its end closes only this
 * connection (PROTOCOL §3.10). */
static int bad_message(const struct hub_client *c, const char *what, int rc)
{
    log_warn("client %llu (%s): bad %s: %s; closing", (unsigned long long)c->id, c->addr, what,
             codec_strerror(rc));
    return CLOSE;
}

/* During INIT nothing is queued yet, so the error can go straight out on this
 * thread before CivetWeb closes the connection. */
static int refuse(struct hub_client *c, uint16_t code, const char *text)
{
    uint8_t buf[256];
    size_t n = strlen(text);
    if (n > sizeof buf - 4) n = sizeof buf - 4;
    size_t len = codec_encode_error(buf, code, text, n);
    mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_BINARY, (const char *)buf, len);
    static const char normal_close[2] = {0x03, (char)0xE8};
    mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, normal_close, 2);
    log_info("client %llu (%s): refused with ERROR %u %s", (unsigned long long)c->id, c->addr, code, text);
    return CLOSE;
}

static int storage_failure(struct hub_client *c, const char *what, int rc)
{
    char text[128];
    snprintf(text, sizeof text, "storage failure: %s", store_strerror(rc));
    log_error("client %llu (%s): %s: %s", (unsigned long long)c->id, c->addr, what, store_strerror(rc));
    return refuse(c, CODEC_ERR_UNSPECIFIED, text);
}

/* Collects the session's client keys and the document's stored keys into one KEY
 * INFORMATION message. */
struct key_collector {
    uint8_t *buf;
    size_t len, cap;
    int failed;
};

static int collect_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint32_t version)
{
    struct key_collector *k = arg;
    size_t need = k->len + codec_key_info_entry_size(name_len, value_len);
    if (need > k->cap) {
        size_t cap = k->cap ? k->cap : 256;
        while (cap < need) cap *= 2;
        uint8_t *b = realloc(k->buf, cap);
        if (!b) {
            k->failed = 1;
            return 1;
        }
        k->buf = b;
        k->cap = cap;
    }
    k->len += codec_key_info_add(k->buf + k->len, version, name, name_len, value, value_len);
    return 0;
}

static void send_initial_keys(struct hub *h, struct doc *d, struct hub_client *c)
{
    struct key_collector k = {.buf = malloc(256), .cap = 256};
    if (!k.buf) return;
    k.len = codec_key_info_begin(k.buf);
    if (hub_clustered(h)) {
        /* What the other members know, so that the announcements to come fit it. */
        hub_keyview_each(d, collect_key, &k);
    } else {
        for (size_t i = 0; i < d->nkeys; i++)
            collect_key(&k, d->keys[i].name, d->keys[i].name_len, d->keys[i].value,
                        d->keys[i].value_len, d->keys[i].version);
        int rc = store_keys_get(h->store, d->id, d->id_len, collect_key, &k);
        if (rc) log_error("document keys of %.*s: %s", (int)d->id_len, d->id, store_strerror(rc));
    }
    if (!k.failed && k.len > CODEC_KEY_INFO_HEADER) {
        struct message *m = message_new(k.len);
        if (m) memcpy(m->data, k.buf, k.len);
        hub_send(h, c, m, true);
    }
    free(k.buf);
}

static int on_init(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct hub *h = app->hub;
    struct codec_init in;
    int rc = codec_decode_init(msg, len, &in);
    if (rc) return bad_message(c, "INIT", rc);
    if (in.creation_mode > 2) {
        log_warn("client %llu (%s): INIT with unknown creation mode %u; closing",
                 (unsigned long long)c->id, c->addr, in.creation_mode);
        return CLOSE;
    }
    hub_pending_remove(h, c);
    c->version = in.version;
    c->max_message = in.max_message_size ? in.max_message_size : CODEC_DEFAULT_MAX_MESSAGE;

    rc = auth_resolve(app, in.doc_id, in.doc_id_len, &c->auth);
    if (rc == -1) return refuse(c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (rc) return refuse(c, CODEC_ERR_UNSPECIFIED, "storage failure: cannot check access");
    if (!auth_can(&c->auth, 'r')) return refuse(c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (c->auth.doc_id_len == 0 || c->auth.doc_id_len > app->cfg->max_doc_id_bytes)
        return refuse(c, CODEC_ERR_UNSPECIFIED, "document id is empty or too long");

    int mode = in.creation_mode;
    bool writer = auth_can(&c->auth, 'w');
    if (!writer && mode == 2) return refuse(c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (!writer && mode == 0) mode = 1;

    struct doc *d = hub_doc_acquire(h, c->auth.doc_id, c->auth.doc_id_len);
    if (!d) return refuse(c, CODEC_ERR_UNSPECIFIED, "out of memory");
    pthread_mutex_lock(&d->lock);

    uint64_t length = 0, start;
    bool created = false;
    int result = KEEP;
    rc = store_doc_length(h->store, d->id, d->id_len, &length);
    if (rc == STORE_ENOTFOUND && mode != 1) {
        rc = store_doc_create(h->store, d->id, d->id_len, in.initial_data, in.initial_data_len);
        if (rc == STORE_OK) {
            created = true;
            length = in.initial_data_len;
        } else if (rc == STORE_EEXISTS) { /* another server created it just now */
            rc = store_doc_length(h->store, d->id, d->id_len, &length);
        }
    }
    if (rc == STORE_ENOTFOUND) {
        result = writer ? refuse(c, CODEC_ERR_DOES_NOT_EXIST, "does not exist")
                        : refuse(c, CODEC_ERR_ACCESS_DENIED, "access denied");
        goto out;
    }
    if (rc) {
        result = storage_failure(c, "opening the document", rc);
        goto out;
    }
    if (!created && mode == 2) {
        result = refuse(c, CODEC_ERR_ALREADY_EXISTS, "already exists");
        goto out;
    }

    /* Catch-up: always one APPEND, even empty — it tells the client it is connected. */
    start = created ? length : in.offset;
    if (start > length) {
        result = refuse(c, CODEC_ERR_INVALID_OFFSET, "invalid offset");
        goto out;
    }
    uint8_t *bytes = NULL;
    size_t nbytes = 0;
    if (start < length) {
        uint64_t total;
        rc = store_doc_read(h->store, d->id, d->id_len, start, &bytes, &nbytes, &total);
        if (rc) {
            result = rc == STORE_ERANGE ? refuse(c, CODEC_ERR_INVALID_OFFSET, "invalid offset")
                                        : storage_failure(c, "reading the document", rc);
            goto out;
        }
    }
    struct message *m = msg_append(c->version, start, bytes, nbytes);
    free(bytes);
    if (!m) {
        result = refuse(c, CODEC_ERR_UNSPECIFIED, "out of memory");
        goto out;
    }
    hub_send(h, c, m, true);
    hub_doc_join(h, d, c, start + nbytes);
    send_initial_keys(h, d, c);
    log_info("client %llu (%s): joined document %.*s (protocol %d, offset %llu, %s)",
             (unsigned long long)c->id, c->addr, (int)d->id_len, d->id, c->version,
             (unsigned long long)start, created ? "created" : "opened");
    pthread_mutex_unlock(&d->lock);
    return KEEP;
out:
    pthread_mutex_unlock(&d->lock);
    hub_doc_release(h, d);
    return result;
}

static int on_append(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct hub *h = app->hub;
    struct codec_append a;
    int rc = codec_decode_append(msg, len, &a);
    if (rc) return bad_message(c, "APPEND", rc);
    struct doc *d = c->doc;
    pthread_mutex_lock(&d->lock);
    uint64_t length = 0;
    if (!auth_can(&c->auth, 'w')) {
        /* Read-only: the data counts as empty (PROTOCOL §3.6). */
        rc = store_doc_length(h->store, d->id, d->id_len, &length);
        if (rc == STORE_OK) hub_send(h, c, msg_ack(a.offset == length ? 2 : 0, length), false);
    } else {
        rc = store_doc_append(h->store, d->id, d->id_len, a.offset, a.data, a.data_len, &length);
        if (rc == STORE_OK) {
            atomic_fetch_add(&h->appends_accepted, 1);
            hub_append_committed(h, d, c, a.offset, a.data, a.data_len, length);
        } else if (rc == STORE_EMISMATCH) {
            atomic_fetch_add(&h->appends_rejected, 1);
            hub_append_refused(h, d, c, length);
        }
    }
    if (rc == STORE_ENOTFOUND) {
        hub_send(h, c, msg_error(CODEC_ERR_DOES_NOT_EXIST, "does not exist"), false);
    } else if (rc != STORE_OK && rc != STORE_EMISMATCH) {
        char text[128];
        snprintf(text, sizeof text, "storage failure: %s", store_strerror(rc));
        log_error("client %llu (%s): append to %.*s: %s", (unsigned long long)c->id, c->addr,
                  (int)d->id_len, d->id, store_strerror(rc));
        hub_send(h, c, msg_error(CODEC_ERR_UNSPECIFIED, text), false);
    }
    pthread_mutex_unlock(&d->lock);
    return KEEP;
}

static struct client_key *find_client_key(struct doc *d, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < d->nkeys; i++)
        if (d->keys[i].name_len == len && !memcmp(d->keys[i].name, name, len)) return &d->keys[i];
    return NULL;
}

/* Applies a client key write (lifetime 0). Returns 1 when accepted. */
static int set_client_key(struct doc *d, struct hub_client *c, const struct codec_set_key *k)
{
    struct client_key *key = find_client_key(d, k->name, k->name_len);
    if (key ? key->version != k->old_version : k->old_version != 0) return 0;
    uint8_t *value = malloc(k->value_len ? k->value_len : 1);
    if (!value) return 0;
    memcpy(value, k->value, k->value_len);
    if (!key) {
        if (d->nkeys == d->keys_cap) {
            size_t cap = d->keys_cap ? d->keys_cap * 2 : 8;
            struct client_key *keys = realloc(d->keys, cap * sizeof *keys);
            if (!keys) {
                free(value);
                return 0;
            }
            d->keys = keys;
            d->keys_cap = cap;
        }
        uint8_t *name = malloc(k->name_len ? k->name_len : 1);
        if (!name) {
            free(value);
            return 0;
        }
        memcpy(name, k->name, k->name_len);
        key = &d->keys[d->nkeys++];
        key->name = name;
        key->name_len = k->name_len;
        key->value = NULL;
    }
    free(key->value);
    key->value = value;
    key->value_len = k->value_len;
    key->version = k->new_version;
    key->owner = c;
    return 1;
}

static int on_set_key(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct hub *h = app->hub;
    struct codec_set_key k;
    int rc = codec_decode_set_key(msg, len, &k);
    if (rc) return bad_message(c, "SET KEY", rc);
    struct doc *d = c->doc;
    pthread_mutex_lock(&d->lock);
    int accepted = 0;
    if (k.name_len > app->cfg->max_key_name_bytes || k.value_len > app->cfg->max_key_value_bytes) {
        log_warn("client %llu (%s): key name or value over the configured limit; rejected",
                 (unsigned long long)c->id, c->addr);
    } else if (k.name_len >= 6 && !memcmp(k.name, "admin:", 6) && !auth_can(&c->auth, 'a')) {
        accepted = 0;
    } else if (k.lifetime == 0) {
        accepted = hub_clustered(h) ? hub_cluster_client_key_set(h, d, c, &k) : set_client_key(d, c, &k);
    } else {
        rc = store_key_set(h->store, d->id, d->id_len, k.name, k.name_len, k.value, k.value_len,
                           k.old_version, k.new_version);
        accepted = rc == STORE_OK;
        if (rc && rc != STORE_EMISMATCH)
            log_error("client %llu (%s): session key on %.*s: %s", (unsigned long long)c->id, c->addr,
                      (int)d->id_len, d->id, store_strerror(rc));
    }
    if (accepted) hub_key_accepted(h, d, c, &k);
    if (!accepted || k.old_version != k.new_version)
        hub_send(h, c, msg_set_key_ack(accepted ? 1 : 0, k.request_id), false);
    pthread_mutex_unlock(&d->lock);
    return KEEP;
}

static int on_broadcast(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct codec_broadcast b;
    int rc = codec_decode_broadcast(msg, len, &b);
    if (rc) return bad_message(c, "BROADCAST", rc);
    struct message *m = message_new(codec_broadcast_size(b.data_len));
    if (!m) return KEEP;
    codec_encode_broadcast(m->data, b.data, b.data_len);
    hub_broadcast(app->hub, c->doc, c, m, b.data, b.data_len);
    message_unref(m);
    return KEEP;
}

/* One complete logical message. */
static int dispatch(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    uint8_t type = msg[0];
    if (!c->doc) {
        if (type == CODEC_INIT && c->version == 0) return on_init(app, c, msg, len);
        log_warn("client %llu (%s): first message has type 0x%02x, not INIT; closing",
                 (unsigned long long)c->id, c->addr, type);
        return CLOSE;
    }
    switch (type) {
    case CODEC_INIT:
        log_warn("client %llu (%s): second INIT; closing", (unsigned long long)c->id, c->addr);
        return CLOSE;
    case CODEC_APPEND_V2:
    case CODEC_APPEND_V3: return on_append(app, c, msg, len);
    case CODEC_SET_KEY: return on_set_key(app, c, msg, len);
    case CODEC_BROADCAST: return on_broadcast(app, c, msg, len);
    default:
        log_info("client %llu (%s): ignoring message of unknown type 0x%02x",
                 (unsigned long long)c->id, c->addr, type);
        return KEEP;
    }
}

static int feed(const struct app *app, struct hub_client *c, const uint8_t *data, size_t len)
{
    const uint8_t *msg;
    size_t msg_len;
    int rc = codec_reasm_feed(&c->reasm, data, len, &msg, &msg_len);
    if (rc < 0) {
        log_warn("client %llu (%s): protocol error: %s; closing", (unsigned long long)c->id, c->addr,
                 codec_strerror(rc));
        return CLOSE;
    }
    return rc == 1 ? dispatch(app, c, msg, msg_len) : KEEP;
}

/* Collects WebSocket-level fragments (FIN = 0) into one message. */
static int add_fragment(const struct app *app, struct hub_client *c, const uint8_t *data, size_t len)
{
    if (len > app->cfg->max_message_bytes - c->frag_len) {
        log_warn("client %llu (%s): fragmented message over %zu bytes; closing",
                 (unsigned long long)c->id, c->addr, app->cfg->max_message_bytes);
        return CLOSE;
    }
    if (c->frag_len + len > c->frag_cap) {
        size_t cap = c->frag_cap ? c->frag_cap : 4096;
        while (cap < c->frag_len + len) cap *= 2;
        uint8_t *b = realloc(c->frag, cap);
        if (!b) return CLOSE;
        c->frag = b;
        c->frag_cap = cap;
    }
    if (len) memcpy(c->frag + c->frag_len, data, len); /* c->frag may still be NULL */
    c->frag_len += len;
    return KEEP;
}

int session_frame(const struct app *app, struct hub_client *c, int bits, const uint8_t *data, size_t len)
{
    int opcode = bits & 0x0F;
    bool fin = (bits & 0x80) != 0;
    atomic_fetch_add_explicit(&app->hub->bytes_in, len, memory_order_relaxed);
    switch (opcode) {
    case MG_WEBSOCKET_OPCODE_BINARY:
        if (c->frag_open) {
            log_warn("client %llu (%s): new message inside a fragmented one; closing",
                     (unsigned long long)c->id, c->addr);
            return CLOSE;
        }
        if (fin) return feed(app, c, data, len);
        c->frag_open = true;
        c->frag_len = 0;
        return add_fragment(app, c, data, len);
    case MG_WEBSOCKET_OPCODE_CONTINUATION: {
        if (!c->frag_open) {
            log_warn("client %llu (%s): WebSocket continuation without a start; closing",
                     (unsigned long long)c->id, c->addr);
            return CLOSE;
        }
        if (add_fragment(app, c, data, len) == CLOSE) return CLOSE;
        if (!fin) return KEEP;
        c->frag_open = false;
        int rc = feed(app, c, c->frag, c->frag_len);
        c->frag_len = 0;
        if (c->frag_cap > (1u << 20)) { /* don't keep a big buffer pinned */
            free(c->frag);
            c->frag = NULL;
            c->frag_cap = 0;
        }
        return rc;
    }
    case MG_WEBSOCKET_OPCODE_TEXT:
        log_warn("client %llu (%s): text frame (the protocol is binary); closing",
                 (unsigned long long)c->id, c->addr);
        return CLOSE;
    case MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE:
        return CLOSE;
    case MG_WEBSOCKET_OPCODE_PING:
    case MG_WEBSOCKET_OPCODE_PONG:
        return KEEP;
    default:
        log_warn("client %llu (%s): unknown WebSocket opcode %d; closing", (unsigned long long)c->id,
                 c->addr, opcode);
        return CLOSE;
    }
}

void session_close(const struct app *app, struct hub_client *c)
{
    struct hub *h = app->hub;
    hub_pending_remove(h, c);
    outq_client_closed(h->outq, c);
    if (c->doc) {
        log_info("client %llu (%s): left document %.*s", (unsigned long long)c->id, c->addr,
                 (int)c->doc->id_len, c->doc->id);
        hub_doc_leave(h, c);
    }
    atomic_fetch_sub(&h->connections, 1);
    client_unref(c);
}
