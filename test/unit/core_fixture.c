/* core_fixture: the shared set-up of the core's unit tests (core_fixture.h): store,
 * hub and fake loop, client messages in the wire layout, and reading queues back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "codec.h"
#include "core_fixture.h"
#include "hub.h"
#include "log.h"
#include "message.h"
#include "session.h"
#include "store.h"

static char root[128];

void cf_root_create(const char *name)
{
    snprintf(root, sizeof root, "/tmp/zw-test-%s-XXXXXX", name);
    if (!mkdtemp(root)) fail_msg("mkdtemp %s", root);
    /* Refusals and disconnections are expected here; an ordering bug (an error) is not. */
    log_set_level(LOG_ERROR);
}

void cf_root_remove(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

/* The fake loop: nothing to write, so the reference a wake-up hands over goes at once.
 * Called from any thread. */
static void fake_wake(void *arg, struct hub_client *c)
{
    struct core_fixture *f = arg;
    atomic_fetch_add(&f->wakes, 1);
    client_unref(c);
}

/* The store's own lines: its warnings and errors only (each set-up opens one). */
static void store_log_quiet(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level >= STORE_LOG_WARN) fprintf(stderr, "store: %s\n", msg);
}

int cf_setup(void **state)
{
    static int n;
    struct core_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "%s/%d", root, n++);
    config_defaults(&f->cfg);
    struct store_config sc = {
        .backend = "lmdb", .data_dir = f->dir, .nosync = 1, .log = { .fn = store_log_quiet }
    };
    char err[256];
    f->store = store_open(&sc, err, sizeof err);
    if (!f->store) fail_msg("store_open: %s", err);
    f->outq = (struct outq){
        .bound = f->cfg.send_queue_bytes, .counters = &f->counters, .wake = fake_wake, .wake_arg = f
    };
    f->hub = hub_create(&f->cfg, f->store, &f->outq, NULL);
    assert_non_null(f->hub);
    f->app.cfg = &f->cfg;
    f->app.store = f->store;
    f->app.hub = f->hub;
    *state = f;
    return 0;
}

int cf_teardown(void **state)
{
    struct core_fixture *f = *state;
    for (int i = 0; i < f->nclients; i++) {
        if (!f->closed[i]) session_close(&f->app, f->clients[i]);
        outq_closed(f->clients[i]);
        client_unref(f->clients[i]);
    }
    struct hub_stats st;
    hub_get_stats(f->hub, &st);
    assert_int_equal(st.connections, 0);
    assert_int_equal(st.documents, 0); /* every member's reference was given back */
    hub_destroy(f->hub);
    store_close(f->store);
    config_free(&f->cfg);
    free(f);
    return 0;
}

struct hub_client *cf_client(struct core_fixture *f)
{
    assert_true(f->nclients < CF_MAX_CLIENTS);
    struct hub_client *c = client_new("127.0.0.1", false);
    assert_non_null(c);
    session_open(&f->app, c);
    f->closed[f->nclients] = false;
    f->clients[f->nclients++] = c;
    return c;
}

void cf_close(struct core_fixture *f, struct hub_client *c)
{
    for (int i = 0; i < f->nclients; i++)
        if (f->clients[i] == c) {
            assert_false(f->closed[i]);
            f->closed[i] = true;
            session_close(&f->app, c);
            return;
        }
    fail_msg("not a fixture client");
}

void cf_send(struct core_fixture *f, struct hub_client *c, const void *msg, size_t len)
{
    session_message(&f->app, c, msg, len);
}

void cf_init(struct core_fixture *f, struct hub_client *c, int version, uint8_t mode,
             uint32_t max_message, uint64_t offset, const char *doc, const void *initial,
             size_t initial_len)
{
    size_t id_len = strlen(doc);
    uint8_t *m = malloc(32 + id_len + initial_len), *p = m;
    *p++ = CODEC_INIT;
    *p++ = 0;
    be_put16(p, (uint16_t)version);
    be_put32(p + 2, max_message);
    p[6] = mode;
    p += 7;
    if (version == 2) {
        be_put64(p, offset);
        p[8] = (uint8_t)id_len;
        p += 9;
    } else {
        be_put32(p, 0); /* generation */
        be_put64(p + 4, offset);
        be_put32(p + 12, (uint32_t)id_len);
        p += 16;
    }
    memcpy(p, doc, id_len);
    p += id_len;
    if (initial_len) memcpy(p, initial, initial_len);
    p += initial_len;
    cf_send(f, c, m, (size_t)(p - m));
    free(m);
}

void cf_append(struct core_fixture *f, struct hub_client *c, uint64_t offset, const void *data,
               size_t len)
{
    /* The client's layout is the one the server encodes for it. */
    uint8_t *m = malloc(codec_append_size(c->version, len));
    size_t n = codec_encode_append(m, c->version, offset, data, len);
    cf_send(f, c, m, n);
    free(m);
}

void cf_set_key(struct core_fixture *f, struct hub_client *c, uint16_t request_id, uint8_t lifetime,
                uint32_t old_version, uint32_t new_version, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    uint8_t *m = malloc(21 + nl + vl), *p = m;
    p[0] = CODEC_SET_KEY;
    p[1] = 0;
    be_put16(p + 2, request_id);
    p[4] = lifetime;
    be_put32(p + 5, old_version);
    be_put32(p + 9, new_version);
    be_put32(p + 13, (uint32_t)nl);
    memcpy(p + 17, name, nl);
    be_put32(p + 17 + nl, (uint32_t)vl);
    memcpy(p + 21 + nl, value, vl);
    cf_send(f, c, m, 21 + nl + vl);
    free(m);
}

void cf_broadcast(struct core_fixture *f, struct hub_client *c, const void *data, size_t len)
{
    uint8_t *m = malloc(codec_broadcast_size(len));
    size_t n = codec_encode_broadcast(m, data, len);
    cf_send(f, c, m, n);
    free(m);
}

void cf_take(struct core_fixture *f, struct hub_client *c, struct cf_sent *s)
{
    memset(s, 0, sizeof *s);
    size_t cap = 0;
    struct message *slots[64];
    struct outq_batch b;
    for (;;) {
        outq_take(c, slots, 64, SIZE_MAX, &b);
        s->state = b.state;
        s->close_code = b.close_code;
        if (!b.n) break;
        for (size_t i = 0; i < b.n; i++) {
            struct message *m = outq_slot_msg(b.msgs[i]);
            if (s->n == cap) {
                cap = cap ? cap * 2 : 16;
                s->data = realloc(s->data, cap * sizeof *s->data);
                s->len = realloc(s->len, cap * sizeof *s->len);
                assert_non_null(s->data);
                assert_non_null(s->len);
            }
            s->data[s->n] = malloc(m->len ? m->len : 1);
            memcpy(s->data[s->n], m->data, m->len);
            s->len[s->n++] = m->len;
        }
        outq_release(&f->outq, &b, b.n);
    }
}

void cf_sent_free(struct cf_sent *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->data[i]);
    free(s->data);
    free(s->len);
    memset(s, 0, sizeof *s);
}

void cf_expect_nothing(struct core_fixture *f, struct hub_client *c)
{
    struct cf_sent s;
    cf_take(f, c, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.state, OUTQ_OPEN);
    cf_sent_free(&s);
}

void cf_expect_msg(const struct cf_sent *s, size_t i, struct message *expected)
{
    assert_non_null(expected);
    if (i >= s->n) fail_msg("message %zu expected; %zu queued", i, s->n);
    assert_int_equal(s->len[i], expected->len);
    assert_memory_equal(s->data[i], expected->data, expected->len);
    message_unref(expected);
}

void cf_expect_one(struct core_fixture *f, struct hub_client *c, struct message *expected)
{
    struct cf_sent s;
    cf_take(f, c, &s);
    assert_int_equal(s.n, 1);
    cf_expect_msg(&s, 0, expected);
    assert_int_equal(s.state, OUTQ_OPEN);
    cf_sent_free(&s);
}

struct message *cf_msg_append(int version, uint64_t offset, const char *data)
{
    return msg_append(version, offset, (const uint8_t *)data, strlen(data));
}

void cf_join(struct core_fixture *f, struct hub_client *c, const char *doc)
{
    cf_init(f, c, 3, 0, 0, 0, doc, NULL, 0);
    assert_true(session_joined(c));
    struct cf_sent s;
    cf_take(f, c, &s);
    assert_true(s.n >= 1);
    assert_int_equal(s.data[0][0], CODEC_APPEND_V3); /* the catch-up */
    assert_int_equal(s.state, OUTQ_OPEN);
    cf_sent_free(&s);
}

uint64_t cf_doc_length(struct core_fixture *f, const char *doc)
{
    uint64_t len = 0;
    assert_int_equal(store_doc_length(f->store, doc, strlen(doc), &len), STORE_OK);
    return len;
}

void cf_add_token(struct core_fixture *f, const char *token, const char *doc, const char *user,
                  const char *perms)
{
    struct store_token t = { .doc_id = (char *)doc,
                             .doc_id_len = strlen(doc),
                             .user_id = (char *)user,
                             .expires = (int64_t)time(NULL) + 3600 };
    snprintf(t.permissions, sizeof t.permissions, "%s", perms);
    assert_int_equal(store_token_add(f->store, token, strlen(token), &t), STORE_OK);
}

struct hub_stats cf_stats(struct core_fixture *f)
{
    struct hub_stats st;
    hub_get_stats(f->hub, &st);
    return st;
}
