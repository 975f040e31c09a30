/* session: the protocol state machine of one connection (docs/protocol.md, Sessions
 * and Keys). Runs on the inbox worker that owns the client's messages; everything it
 * sends goes through the client's queue, and it ends a connection by asking the queue
 * to close (after an ERROR has gone out) or to drop everything. */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "client.h"
#include "codec.h"
#include "config.h"
#include "doc_keys.h"
#include "hub_internal.h"
#include "log.h"
#include "message.h"
#include "store.h"
#include "wsframe.h"

#define CLOSE 0
#define KEEP 1

void session_open(const struct app *app, struct hub_client *c)
{
    codec_reasm_init(&c->reasm, app->cfg->max_message_bytes);
    atomic_fetch_add(&app->hub->connections, 1);
}

bool session_joined(const struct hub_client *c)
{
    return atomic_load_explicit(&c->joined, memory_order_relaxed);
}

/* Ends the connection now, dropping what is queued, with a close frame `code`. */
static int fail(const struct app *app, struct hub_client *c, uint16_t code, const char *why)
{
    atomic_store(&c->closing, true);
    outq_kill(app->hub->outq, c, code, why);
    return CLOSE;
}

/* A message too short for its fields or with a length past its end closes only this
 * connection (docs/protocol.md, Malformed messages). */
static int bad_message(const struct app *app, struct hub_client *c, const char *what, int rc)
{
    client_log(c, LOG_WARN, "bad %s: %s; closing", what, codec_strerror(rc));
    return fail(app, c, WS_CLOSE_PROTOCOL, "malformed message");
}

/* ERROR `code`, then the connection closes once it has gone out. Queued like every
 * other message, so it is split at the client's maxMessageSize. */
static int refuse(const struct app *app, struct hub_client *c, uint16_t code, const char *text)
{
    client_log(c, LOG_INFO, "refused with ERROR %u %s", code, text);
    atomic_store(&c->closing, true);
    hub_send_error_and_close(app->hub, c, code, text);
    return CLOSE;
}

static int storage_failure(const struct app *app, struct hub_client *c, const char *what, int rc)
{
    char text[128];
    snprintf(text, sizeof text, "storage failure: %s", store_strerror(rc));
    client_log(c, LOG_ERROR, "%s: %s", what, store_strerror(rc));
    return refuse(app, c, CODEC_ERR_UNSPECIFIED, text);
}

static int on_init(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct hub *h = app->hub;
    struct codec_init in;
    int rc = codec_decode_init(msg, len, &in);
    if (rc) return bad_message(app, c, "INIT", rc);
    if (in.creation_mode > 2) {
        /* Newer clients may define more modes; the reference opens them as mode 0. */
        client_log(c, LOG_INFO, "INIT with unknown creation mode %u, read as 0 (possibly create)",
                   in.creation_mode);
        in.creation_mode = 0;
    }
    c->version = in.version;
    c->max_message = in.max_message_size ? in.max_message_size : CODEC_DEFAULT_MAX_MESSAGE;

    rc = auth_resolve(app, in.doc_id, in.doc_id_len, &c->auth);
    if (rc == -1) return refuse(app, c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (rc) return refuse(app, c, CODEC_ERR_UNSPECIFIED, "storage failure: cannot check access");
    if (!auth_can(&c->auth, 'r')) return refuse(app, c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (c->auth.doc_id_len == 0)
        return refuse(app, c, CODEC_ERR_UNSPECIFIED, "document id is empty");
    if (c->auth.doc_id_len > app->cfg->max_doc_id_bytes) {
        client_log(c, LOG_WARN, "document id of %zu bytes, MaxDocIdBytes is %zu",
                   c->auth.doc_id_len, app->cfg->max_doc_id_bytes);
        return refuse(app, c, CODEC_ERR_UNSPECIFIED, "document id is too long");
    }

    int mode = in.creation_mode;
    bool writer = auth_can(&c->auth, 'w');
    if (!writer && mode == 2) return refuse(app, c, CODEC_ERR_ACCESS_DENIED, "access denied");
    if (!writer && mode == 0) mode = 1;

    struct doc *d = hub_doc_acquire(h, c->auth.doc_id, c->auth.doc_id_len);
    if (!d) return refuse(app, c, CODEC_ERR_UNSPECIFIED, "out of memory");
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
        result = writer ? refuse(app, c, CODEC_ERR_DOES_NOT_EXIST, "does not exist")
                        : refuse(app, c, CODEC_ERR_ACCESS_DENIED, "access denied");
        goto out;
    }
    if (rc) {
        result = storage_failure(app, c, "opening the document", rc);
        goto out;
    }
    if (!created && mode == 2) {
        result = refuse(app, c, CODEC_ERR_ALREADY_EXISTS, "already exists");
        goto out;
    }

    /* Catch-up: always one APPEND, even empty — it tells the client it is connected. */
    start = created ? length : in.offset;
    if (start > length) {
        result = refuse(app, c, CODEC_ERR_INVALID_OFFSET, "invalid offset");
        goto out;
    }
    uint64_t end;
    struct message *m = hub_catch_up(h, d, c->version, start, length, &end, &rc);
    if (!m) {
        result = rc == STORE_ERANGE   ? refuse(app, c, CODEC_ERR_INVALID_OFFSET, "invalid offset")
                 : rc == STORE_ENOMEM ? refuse(app, c, CODEC_ERR_UNSPECIFIED, "out of memory")
                                      : storage_failure(app, c, "reading the document", rc);
        goto out;
    }
    hub_send(h, c, m, true);
    hub_doc_join(h, d, c, end);
    atomic_store(&c->joined, true);
    doc_keys_send_all(h, d, c);
    client_log(c, LOG_INFO, "joined document %.*s (protocol %d, offset %llu, %s)", (int)d->id_len,
               d->id, c->version, (unsigned long long)start, created ? "created" : "opened");
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
    if (rc) return bad_message(app, c, "APPEND", rc);
    struct doc *d = c->doc;
    pthread_mutex_lock(&d->lock);
    uint64_t length = 0;
    if (!auth_can(&c->auth, 'w')) {
        /* Read-only: the data counts as empty (docs/protocol.md, Session, step 6). */
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
        client_log(c, LOG_ERROR, "append to %.*s: %s", (int)d->id_len, d->id, store_strerror(rc));
        hub_send(h, c, msg_error(CODEC_ERR_UNSPECIFIED, text), false);
    }
    pthread_mutex_unlock(&d->lock);
    return KEEP;
}

static int on_set_key(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct hub *h = app->hub;
    struct codec_set_key k;
    int rc = codec_decode_set_key(msg, len, &k);
    if (rc) return bad_message(app, c, "SET KEY", rc);
    struct doc *d = c->doc;
    pthread_mutex_lock(&d->lock);
    int accepted = 0;
    if (k.name_len > app->cfg->max_key_name_bytes || k.value_len > app->cfg->max_key_value_bytes) {
        client_log(c, LOG_WARN,
                   "SET KEY rejected: name of %zu bytes (MaxKeyNameBytes %zu), "
                   "value of %zu bytes (MaxKeyValueBytes %zu)",
                   k.name_len, app->cfg->max_key_name_bytes, k.value_len,
                   app->cfg->max_key_value_bytes);
    } else if (k.name_len >= 6 && !memcmp(k.name, "admin:", 6) && !auth_can(&c->auth, 'a')) {
        accepted = 0;
    } else {
        accepted = doc_keys_set(h, d, c, &k);
    }
    if (!accepted || k.old_version != k.new_version)
        hub_send(h, c, msg_set_key_ack(accepted ? 1 : 0, k.request_id), false);
    pthread_mutex_unlock(&d->lock);
    return KEEP;
}

static int on_broadcast(const struct app *app, struct hub_client *c, const uint8_t *msg, size_t len)
{
    struct codec_broadcast b;
    int rc = codec_decode_broadcast(msg, len, &b);
    if (rc) return bad_message(app, c, "BROADCAST", rc);
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
        client_log(c, LOG_WARN, "first message has type 0x%02x, not INIT; closing", type);
        return fail(app, c, WS_CLOSE_POLICY, "first message is not INIT");
    }
    switch (type) {
    case CODEC_INIT:
        client_log(c, LOG_WARN, "second INIT; closing");
        return fail(app, c, WS_CLOSE_POLICY, "second INIT");
    case CODEC_APPEND_V2:
    case CODEC_APPEND_V3: return on_append(app, c, msg, len);
    case CODEC_SET_KEY: return on_set_key(app, c, msg, len);
    case CODEC_BROADCAST: return on_broadcast(app, c, msg, len);
    default: client_log(c, LOG_INFO, "ignoring message of unknown type 0x%02x", type); return KEEP;
    }
}

void session_message(const struct app *app, struct hub_client *c, const uint8_t *data, size_t len)
{
    if (atomic_load(&c->closing)) return;
    atomic_fetch_add_explicit(&app->hub->bytes_in, len, memory_order_relaxed);
    const uint8_t *msg;
    size_t msg_len;
    int rc = codec_reasm_feed(&c->reasm, data, len, &msg, &msg_len);
    if (rc == CODEC_E_TOO_BIG) {
        /* Told why, so the application does not resend the same change forever. */
        char text[128];
        snprintf(text, sizeof text, "message larger than the server's limit of %zu bytes",
                 app->cfg->max_message_bytes);
        client_log(c, LOG_WARN, "message too big: over the limit of %zu bytes; closing",
                   app->cfg->max_message_bytes);
        atomic_store(&c->closing, true);
        hub_send(app->hub, c, msg_error(CODEC_ERR_UNSPECIFIED, text), true);
        outq_close_after_drain(app->hub->outq, c, WS_CLOSE_TOO_BIG);
        return;
    }
    if (rc < 0) {
        client_log(c, LOG_WARN, "protocol error: %s; closing", codec_strerror(rc));
        fail(app, c, WS_CLOSE_PROTOCOL, "protocol error");
        return;
    }
    if (rc == 1) dispatch(app, c, msg, msg_len);
}

void session_close(const struct app *app, struct hub_client *c)
{
    struct hub *h = app->hub;
    if (c->doc) {
        client_log(c, LOG_INFO, "left document %.*s", (int)c->doc->id_len, c->doc->id);
        hub_doc_leave(h, c);
    }
    codec_reasm_free(&c->reasm);
    auth_result_clear(&c->auth);
    atomic_fetch_sub(&h->connections, 1);
}
