/* test_hub: unit tests for server/core/hub.c (and the single-server side of
 * hub_relay.c) over a real LMDB store and fake connections (core_fixture.h) — fan-out
 * in commit order, encoded once per layout, the delivery rule, closing a document,
 * updating a user's permissions, dropping a slow client while the others go on,
 * releasing documents, and four writers appending to one document at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "codec.h"
#include "core_fixture.h"
#include "hub_internal.h"
#include "message.h"
#include "session.h"
#include "store.h"

/* Appends through the session and checks the writer's ACK. */
static void append_ok(struct core_fixture *f, struct hub_client *c, uint64_t offset,
                      const char *data)
{
    cf_append(f, c, offset, data, strlen(data));
    cf_expect_one(f, c, msg_ack(1, offset + strlen(data)));
}

static void test_fanout_in_commit_order(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *o3 = cf_client(f), *o3b = cf_client(f),
                      *o2 = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_join(f, o3, "doc");
    cf_join(f, o3b, "doc");
    cf_init(f, o2, 2, 0, 0, 0, "doc", NULL, 0);
    struct cf_sent s;
    cf_take(f, o2, &s);
    cf_sent_free(&s);

    /* A and B take turns, each at the end the other left. */
    static const char *const parts[] = { "a1", "b1", "a2", "b2", "a3" };
    static const uint64_t offsets[] = { 0, 2, 4, 6, 8 };
    for (int i = 0; i < 5; i++) {
        struct hub_client *w = i % 2 ? b : a, *other = i % 2 ? a : b;
        append_ok(f, w, offsets[i], parts[i]);
        cf_expect_one(f, other, cf_msg_append(3, offsets[i], parts[i]));
    }

    /* The observers hold all five, in commit order, each in its own layout; the two v3
     * observers share each message (encoded once per layout). */
    struct message *slots3[8], *slots3b[8];
    struct outq_batch b3, b3b;
    outq_take(o3, slots3, 8, SIZE_MAX, &b3);
    outq_take(o3b, slots3b, 8, SIZE_MAX, &b3b);
    assert_int_equal(b3.n, 5);
    assert_int_equal(b3b.n, 5);
    for (int i = 0; i < 5; i++) {
        struct message *m = outq_slot_msg(b3.msgs[i]);
        assert_ptr_equal(m, outq_slot_msg(b3b.msgs[i]));
        struct message *want = msg_append(3, offsets[i], (const uint8_t *)parts[i], 2);
        assert_int_equal(m->len, want->len);
        assert_memory_equal(m->data, want->data, want->len);
        message_unref(want);
    }
    outq_release(&f->outq, &b3, b3.n);
    outq_release(&f->outq, &b3b, b3b.n);
    cf_take(f, o2, &s);
    assert_int_equal(s.n, 5);
    for (int i = 0; i < 5; i++)
        cf_expect_msg(&s, (size_t)i, cf_msg_append(2, offsets[i], parts[i]));
    cf_sent_free(&s);
    assert_int_equal(cf_doc_length(f, "doc"), 10);
}

/* Makes c a member of `doc` whose bytes end at `delivered_end`, as a joiner from
 * another path (cluster catch-up) would be: the hub alone, no session. */
static struct doc *join_at(struct core_fixture *f, struct hub_client *c, const char *doc,
                           uint64_t delivered_end)
{
    c->version = 3;
    struct doc *d = hub_doc_acquire(f->hub, doc, strlen(doc));
    assert_non_null(d);
    pthread_mutex_lock(&d->lock);
    hub_doc_join(f->hub, d, c, delivered_end);
    pthread_mutex_unlock(&d->lock);
    return d; /* the member's reference: hub_doc_leave gives it back */
}

static void fanout(struct core_fixture *f, struct doc *d, uint64_t offset, const char *data)
{
    pthread_mutex_lock(&d->lock);
    hub_fanout_append(f->hub, d, NULL, offset, (const uint8_t *)data, strlen(data));
    pthread_mutex_unlock(&d->lock);
}

static void test_delivery_rule(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *m = cf_client(f);
    cf_init(f, a, 3, 2, 0, 0, "doc", "abc", 3); /* A has the 3 bytes: delivered_end 3 */
    struct cf_sent s;
    cf_take(f, a, &s);
    cf_sent_free(&s);
    struct doc *d = join_at(f, m, "doc", 0);
    assert_int_equal(a->delivered_end, 3);

    fanout(f, d, 0, "abc");
    cf_expect_nothing(f, a); /* already has them */
    cf_expect_one(f, m, cf_msg_append(3, 0, "abc"));
    assert_int_equal(m->delivered_end, 3);

    fanout(f, d, 0, "abc"); /* the same range again: nobody gets it twice */
    cf_expect_nothing(f, a);
    cf_expect_nothing(f, m);

    fanout(f, d, 3, "de");
    struct hub_client *both[] = { a, m };
    for (int i = 0; i < 2; i++) {
        cf_expect_one(f, both[i], cf_msg_append(3, 3, "de"));
        assert_int_equal(both[i]->delivered_end, 5);
    }

    /* An announced append (cluster delivery) that overlaps what a member has: only
     * the tail it lacks; one that it has entirely: nothing. */
    assert_int_equal(hub_deliver_append(f->hub, "doc", 3, 4, (const uint8_t *)"ef", 2), 0);
    for (int i = 0; i < 2; i++) {
        cf_expect_one(f, both[i], cf_msg_append(3, 5, "f"));
        assert_int_equal(both[i]->delivered_end, 6);
    }
    assert_int_equal(hub_deliver_append(f->hub, "doc", 3, 2, (const uint8_t *)"cdef", 4), 0);
    cf_expect_nothing(f, a);
    cf_expect_nothing(f, m);
    assert_int_equal(hub_deliver_append(f->hub, "nodoc", 5, 0, (const uint8_t *)"x", 1), 0);
}

static void test_close_document(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *c = cf_client(f), *x = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_join(f, c, "doc");
    cf_join(f, x, "other");
    cf_append(f, a, 0, "queued", 6); /* an ACK and two APPENDs still queued go first */
    assert_int_equal(hub_close_document(f->hub, "doc", 3, 1, "does not exist"), 3);
    struct hub_client *members[] = { a, b, c };
    for (int i = 0; i < 3; i++) {
        struct cf_sent s;
        cf_take(f, members[i], &s);
        assert_int_equal(s.n, 2);
        if (members[i] == a)
            cf_expect_msg(&s, 0, msg_ack(1, 6));
        else
            cf_expect_msg(&s, 0, cf_msg_append(3, 0, "queued"));
        cf_expect_msg(&s, 1, msg_error(1, "does not exist"));
        assert_int_equal(s.state, OUTQ_DRAINING);
        assert_int_equal(s.close_code, 1000);
        cf_sent_free(&s);
    }
    cf_expect_nothing(f, x);
    assert_int_equal(hub_close_document(f->hub, "nodoc", 5, 1, "does not exist"), 0);
}

static void test_update_user(void **state)
{
    struct core_fixture *f = *state;
    cf_add_token(f, "t-u1a", "doc", "u1", "rw");
    cf_add_token(f, "t-u1b", "doc", "u1", "rw");
    cf_add_token(f, "t-u2", "doc", "u2", "rw");
    struct hub_client *u1a = cf_client(f), *u1b = cf_client(f), *u2 = cf_client(f),
                      *plain = cf_client(f);
    const char *ids[] = { "t-u1a", "t-u1b", "t-u2" };
    struct hub_client *tok[] = { u1a, u1b, u2 };
    for (int i = 0; i < 3; i++) {
        cf_init(f, tok[i], 3, 0, 0, 0, ids[i], NULL, 0);
        assert_true(session_joined(tok[i]));
        struct cf_sent s;
        cf_take(f, tok[i], &s);
        cf_sent_free(&s);
    }
    cf_join(f, plain, "doc"); /* the same document by its plain id */

    assert_int_equal(hub_update_user(f->hub, "u1", 2, "r"), 2);
    cf_append(f, u1a, 0, "no", 2);
    struct cf_sent s;
    cf_take(f, u1a, &s);
    assert_int_equal(s.n, 1);
    cf_expect_msg(&s, 0, msg_ack(2, 0)); /* read-only now: not stored */
    cf_sent_free(&s);
    assert_int_equal(cf_doc_length(f, "doc"), 0);
    append_ok(f, u2, 0, "yes");
    struct hub_client *readers[] = { u1a, u1b, plain };
    for (int i = 0; i < 3; i++) {
        cf_expect_one(f, readers[i], cf_msg_append(3, 0, "yes"));
    }

    /* Losing 'r' ends the connection; the others stay. */
    assert_int_equal(hub_update_user(f->hub, "u1", 2, "w"), 2);
    for (int i = 0; i < 2; i++) {
        cf_take(f, tok[i], &s);
        assert_int_equal(s.n, 1);
        cf_expect_msg(&s, 0, msg_error(4, "access denied"));
        assert_int_equal(s.state, OUTQ_DRAINING);
        assert_int_equal(s.close_code, 1000);
        cf_sent_free(&s);
    }
    cf_expect_nothing(f, u2);
    cf_expect_nothing(f, plain);
    /* What such a client sent before its socket closed is not run: no append stored
     * or relayed, no key set. */
    uint64_t len = cf_doc_length(f, "doc");
    cf_append(f, u1a, len, "late", 4);
    cf_set_key(f, u1b, 9, 1, 0, 1, "k", "v");
    assert_int_equal(cf_doc_length(f, "doc"), len);
    cf_expect_nothing(f, u2);
    cf_expect_nothing(f, plain);
    assert_int_equal(hub_update_user(f->hub, "nobody", 6, "r"), 0);
    assert_int_equal(hub_update_user(f->hub, "", 0, "r"), 0); /* plain ids have no user */
    assert_true(auth_can(&plain->auth, 'w'));
}

static void test_slow_client_is_dropped_others_go_on(void **state)
{
    struct core_fixture *f = *state;
    f->outq.bound = 200;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *slow = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_join(f, slow, "doc");
    char chunk[101];
    memset(chunk, 'x', 100);
    chunk[100] = 0;
    /* Each APPEND is 114 bytes. A client is behind by what waits after the message in
     * flight: 114 after the second, 228 > 200 after the third. */
    for (int i = 0; i < 4; i++) {
        append_ok(f, a, (uint64_t)i * 100, chunk);
        cf_expect_one(f, b, cf_msg_append(3, (uint64_t)i * 100, chunk));
        assert_int_equal(outq_state(slow), i < 2 ? OUTQ_OPEN : OUTQ_DEAD);
        assert_int_equal(cf_stats(f).slow_disconnects, i < 2 ? 0 : 1);
    }
    struct cf_sent s;
    cf_take(f, slow, &s);
    assert_int_equal(s.n, 0); /* its queue was dropped */
    assert_int_equal(s.state, OUTQ_DEAD);
    assert_int_equal(s.close_code, 0);
    cf_sent_free(&s);
    assert_int_equal(cf_doc_length(f, "doc"), 400);
}

struct listener_counts {
    int active, idle;
};

static void on_active(void *arg, const char *id, size_t id_len)
{
    assert_int_equal(id_len, 3);
    assert_memory_equal(id, "doc", 3);
    ((struct listener_counts *)arg)->active++;
}

static void on_idle(void *arg, const char *id, size_t id_len)
{
    assert_int_equal(id_len, 3);
    assert_memory_equal(id, "doc", 3);
    ((struct listener_counts *)arg)->idle++;
}

static void test_leave_releases_the_document(void **state)
{
    struct core_fixture *f = *state;
    struct listener_counts n = { 0, 0 };
    f->hub->listener =
        (struct hub_listener){ .doc_active = on_active, .doc_idle = on_idle, .arg = &n };
    struct hub_client *a = cf_client(f), *b = cf_client(f), *c = cf_client(f), *d = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    assert_int_equal(cf_stats(f).documents, 1);
    assert_int_equal(n.active, 1);
    hub_doc_leave(f->hub, a);
    assert_null(a->doc);
    assert_int_equal(cf_stats(f).documents, 1);
    assert_int_equal(n.idle, 0);
    hub_doc_leave(f->hub, b);
    assert_int_equal(cf_stats(f).documents, 0);
    assert_int_equal(n.idle, 1);
    assert_null(hub_doc_find(f->hub, "doc", 3));
    hub_doc_leave(f->hub, b); /* no document: nothing */
    /* A refused INIT holds no document either. */
    cf_init(f, c, 3, 1, 0, 0, "missing", NULL, 0);
    assert_false(session_joined(c));
    assert_int_equal(cf_stats(f).documents, 0);
    /* A new member makes it live again. */
    cf_join(f, d, "doc");
    assert_int_equal(n.active, 2);
    assert_int_equal(cf_stats(f).documents, 1);
    cf_close(f, d);
    assert_int_equal(n.idle, 2);
    assert_int_equal(cf_stats(f).documents, 0);
}

/* ---- four writers at once ---- */

#define WRITERS 4
#define APPENDS 250
#define PART_LEN 7 /* "w%d:%03d;" */

struct writer {
    struct core_fixture *f;
    pthread_barrier_t *start;
    struct hub_client *c;
    int t;
    int acked, nacked;
    uint64_t end; /* end of the bytes this client has (its own ACKed, the others' relayed) */
    char error[200];
};

/* Checks messages `s` as client w receives them: relayed APPENDs must continue exactly
 * at w->end; its own append at `sent_at` of `sent_len` bytes is ACKed at the end it
 * makes, or NACKed with the length it already has. Returns 1 when a reply came. */
static int writer_check(struct writer *w, const struct cf_sent *s, uint64_t sent_at,
                        size_t sent_len)
{
    int replied = 0;
    for (size_t i = 0; i < s->n && !w->error[0]; i++) {
        const uint8_t *m = s->data[i];
        if (m[0] == CODEC_APPEND_V3 && s->len[i] >= 14) {
            uint64_t off = be_get64(m + 6);
            if (off != w->end)
                snprintf(w->error, sizeof w->error, "writer %d: APPEND at %llu, has %llu", w->t,
                         (unsigned long long)off, (unsigned long long)w->end);
            w->end = off + (s->len[i] - 14);
        } else if (m[0] == CODEC_ACK && s->len[i] == 12 && sent_len && !replied) {
            uint16_t ack = be_get16(m + 2);
            uint64_t len = be_get64(m + 4);
            replied = 1;
            if (ack == 1 && sent_at == w->end && len == w->end + sent_len) {
                w->end = len;
                w->acked++;
            } else if (ack == 0 && len == w->end && sent_at != len) {
                w->nacked++; /* every byte before the NACK's length was relayed first */
            } else {
                snprintf(w->error, sizeof w->error,
                         "writer %d: ACK %u length %llu for %zu bytes at %llu, has %llu", w->t, ack,
                         (unsigned long long)len, sent_len, (unsigned long long)sent_at,
                         (unsigned long long)w->end);
            }
        } else {
            snprintf(w->error, sizeof w->error, "writer %d: unexpected message type 0x%02x", w->t,
                     m[0]);
        }
    }
    return replied;
}

static void *writer_run(void *arg)
{
    struct writer *w = arg;
    pthread_barrier_wait(w->start); /* all at once, for contention */
    while (w->acked < APPENDS && !w->error[0]) {
        char part[32]; /* PART_LEN bytes: t < 10, acked < 1000 */
        snprintf(part, sizeof part, "w%d:%03d;", w->t, w->acked);
        uint64_t at = w->end;
        cf_append(w->f, w->c, at, part, PART_LEN);
        struct cf_sent s;
        cf_take(w->f, w->c, &s); /* the reply is queued before session_message returns */
        if (!writer_check(w, &s, at, PART_LEN) && !w->error[0])
            snprintf(w->error, sizeof w->error, "writer %d: no reply to an append", w->t);
        cf_sent_free(&s);
        sched_yield(); /* let the others in between: more interleaving, more NACKs */
    }
    return NULL;
}

/* An observer's queue: every APPEND contiguous from 0, joined into *out. */
static size_t observer_bytes(struct core_fixture *f, struct hub_client *c, int version,
                             uint8_t *out, size_t cap)
{
    struct cf_sent s;
    cf_take(f, c, &s);
    size_t hdr = version == 2 ? 10 : 14, end = 0;
    assert_int_equal(s.n, WRITERS * APPENDS);
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal(s.data[i][0], version == 2 ? CODEC_APPEND_V2 : CODEC_APPEND_V3);
        uint64_t off = be_get64(s.data[i] + hdr - 8);
        if (off != end)
            fail_msg("append %zu at %llu, expected %zu", i, (unsigned long long)off, end);
        size_t n = s.len[i] - hdr;
        assert_true(end + n <= cap);
        memcpy(out + end, s.data[i] + hdr, n);
        end += n;
    }
    assert_int_equal(s.state, OUTQ_OPEN);
    cf_sent_free(&s);
    return end;
}

static void test_concurrent_writers_one_order(void **state)
{
    struct core_fixture *f = *state;
    struct writer w[WRITERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, WRITERS);
    struct hub_client *o3 = cf_client(f), *o2 = cf_client(f);
    cf_join(f, o3, "doc");
    cf_init(f, o2, 2, 0, 0, 0, "doc", NULL, 0);
    struct cf_sent s;
    cf_take(f, o2, &s);
    cf_sent_free(&s);
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){ .f = f, .start = &start, .c = cf_client(f), .t = i };
        cf_join(f, w[i].c, "doc");
    }
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, writer_run, &w[i]), 0);
    for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    const size_t total = WRITERS * APPENDS * PART_LEN;
    int nacked = 0;
    for (int i = 0; i < WRITERS; i++) {
        if (w[i].error[0]) fail_msg("%s", w[i].error);
        assert_int_equal(w[i].acked, APPENDS);
        nacked += w[i].nacked;
        /* What was relayed to it after its last append completes its copy. */
        cf_take(f, w[i].c, &s);
        writer_check(&w[i], &s, 0, 0);
        cf_sent_free(&s);
        if (w[i].error[0]) fail_msg("%s", w[i].error);
        assert_int_equal(w[i].end, total);
    }
    assert_int_equal(cf_stats(f).appends_accepted, WRITERS * APPENDS);
    assert_int_equal(cf_stats(f).appends_rejected, nacked);

    uint8_t *stored = NULL;
    size_t n = 0;
    uint64_t len = 0;
    assert_int_equal(store_doc_read(f->store, "doc", 3, 0, &stored, &n, &len), STORE_OK);
    assert_int_equal(n, total);
    static uint8_t seen[WRITERS * APPENDS * PART_LEN];
    for (int v = 2; v <= 3; v++) {
        assert_int_equal(observer_bytes(f, v == 2 ? o2 : o3, v, seen, sizeof seen), total);
        assert_memory_equal(seen, stored, total);
    }
    /* Each writer's parts are in the document once each, in its own order. */
    int next[WRITERS] = { 0 };
    for (size_t at = 0; at < total; at += PART_LEN) {
        int t, k;
        assert_int_equal(sscanf((const char *)stored + at, "w%1d:%3d;", &t, &k), 2);
        assert_true(t >= 0 && t < WRITERS);
        assert_int_equal(k, next[t]);
        next[t]++;
    }
    free(stored);
    printf("concurrent writers: %d appends, %d NACKed and retried\n", WRITERS * APPENDS, nacked);
}

int main(void)
{
    cf_root_create("hub");
#define T(name) cmocka_unit_test_setup_teardown(name, cf_setup, cf_teardown)
    const struct CMUnitTest tests[] = {
        T(test_fanout_in_commit_order),
        T(test_delivery_rule),
        T(test_close_document),
        T(test_update_user),
        T(test_slow_client_is_dropped_others_go_on),
        T(test_leave_releases_the_document),
        T(test_concurrent_writers_one_order),
    };
#undef T
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cf_root_remove();
    return rc;
}
