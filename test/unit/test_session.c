/* test_session: unit tests for server/core/session.c over a real LMDB store and a fake
 * connection (core_fixture.h) — INIT and its creation modes, appends and their ACK,
 * NACK and relay, read-only tokens, broadcasts, client keys, and the ways a session
 * ends a connection (which close code, and whether what was queued still goes). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "codec.h"
#include "core_fixture.h"
#include "hub.h"
#include "message.h"
#include "session.h"
#include "store.h"

/* The queue ended with ERROR `code` `text` alone, then a close frame 1000. */
static void expect_refused(struct core_fixture *f, struct hub_client *c, uint16_t code,
                           const char *text)
{
    struct cf_sent s;
    cf_take(f, c, &s);
    assert_int_equal(s.n, 1);
    cf_expect_msg(&s, 0, msg_error(code, text));
    assert_int_equal(s.state, OUTQ_DRAINING);
    assert_int_equal(s.close_code, 1000);
    cf_sent_free(&s);
    assert_false(session_joined(c));
}

static void test_init_creates_then_opens(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f);
    cf_init(f, a, 3, 2, 0, 0, "doc", "hello", 5);
    assert_true(session_joined(a));
    assert_int_equal(cf_doc_length(f, "doc"), 5);
    struct cf_sent s;
    cf_take(f, a, &s);
    assert_int_equal(s.n, 1);
    /* Created: the catch-up starts at the length (its own initial data is not echoed). */
    static const uint8_t empty_at_5[] = { 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5 };
    assert_int_equal(s.len[0], sizeof empty_at_5);
    assert_memory_equal(s.data[0], empty_at_5, sizeof empty_at_5);
    assert_int_equal(s.state, OUTQ_OPEN);
    cf_sent_free(&s);
    assert_int_equal(atomic_load(&a->max_message), CODEC_DEFAULT_MAX_MESSAGE);

    cf_append(f, a, 5, " world", 6);
    cf_take(f, a, &s);
    assert_int_equal(s.n, 1);
    static const uint8_t ack_11[] = { 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 11 };
    assert_memory_equal(s.data[0], ack_11, sizeof ack_11);
    cf_sent_free(&s);

    /* Mode 2 on an existing document. */
    struct hub_client *b = cf_client(f);
    cf_init(f, b, 3, 2, 0, 0, "doc", "x", 1);
    expect_refused(f, b, 2, "already exists");
    assert_int_equal(cf_doc_length(f, "doc"), 11);

    /* Mode 1 from offset 0 gets everything; a v2 client from offset 5, in its layout. */
    struct hub_client *c = cf_client(f);
    cf_init(f, c, 3, 1, 0, 0, "doc", NULL, 0);
    cf_expect_one(f, c, cf_msg_append(3, 0, "hello world"));
    struct hub_client *d = cf_client(f);
    cf_init(f, d, 2, 1, 0, 5, "doc", NULL, 0);
    cf_take(f, d, &s);
    assert_int_equal(s.n, 1);
    static const uint8_t v2_at_5[] = {
        0x02, 0, 0, 0, 0, 0, 0, 0, 0, 5, ' ', 'w', 'o', 'r', 'l', 'd'
    };
    assert_int_equal(s.len[0], sizeof v2_at_5);
    assert_memory_equal(s.data[0], v2_at_5, sizeof v2_at_5);
    cf_sent_free(&s);

    /* An offset past the end. */
    struct hub_client *e = cf_client(f);
    cf_init(f, e, 3, 1, 0, 12, "doc", NULL, 0);
    expect_refused(f, e, 3, "invalid offset");
}

static void test_mode1_on_missing_document(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f);
    cf_init(f, a, 3, 1, 0, 0, "missing", NULL, 0);
    expect_refused(f, a, 1, "does not exist");
    uint64_t len;
    assert_int_equal(store_doc_length(f->store, "missing", 7, &len), STORE_ENOTFOUND);
    assert_int_equal(cf_stats(f).documents, 0); /* the refused INIT let the document go */
}

static void test_error_is_one_message_whatever_the_split_size(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f);
    cf_init(f, a, 3, 1, 10, 0, "missing", NULL, 0);
    assert_int_equal(atomic_load(&a->max_message), 10); /* for the framer, which splits */
    struct cf_sent s;
    cf_take(f, a, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.len[0], 4 + strlen("does not exist"));
    cf_expect_msg(&s, 0, msg_error(1, "does not exist"));
    assert_int_equal(s.state, OUTQ_DRAINING);
    assert_int_equal(s.close_code, 1000);
    cf_sent_free(&s);
}

static void test_append_acks_writer_and_relays_to_others(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *c = cf_client(f);
    cf_init(f, a, 3, 0, 0, 0, "doc", "abc", 3);
    cf_expect_nothing(f, b);
    struct cf_sent s;
    cf_take(f, a, &s);
    cf_sent_free(&s);
    cf_join(f, b, "doc");
    cf_init(f, c, 2, 1, 0, 0, "doc", NULL, 0);
    cf_expect_one(f, c, cf_msg_append(2, 0, "abc"));

    cf_append(f, a, 3, "de", 2);
    cf_expect_one(f, a, msg_ack(1, 5)); /* the ACK only: never its own bytes back */
    cf_expect_one(f, b, cf_msg_append(3, 3, "de"));
    cf_expect_one(f, c, cf_msg_append(2, 3, "de"));

    cf_append(f, c, 5, "f", 1); /* a v2 writer */
    cf_expect_one(f, c, msg_ack(1, 6));
    cf_expect_one(f, a, cf_msg_append(3, 5, "f"));
    cf_expect_one(f, b, cf_msg_append(3, 5, "f"));

    assert_int_equal(cf_doc_length(f, "doc"), 6);
    assert_int_equal(cf_stats(f).appends_accepted, 2);
    assert_int_equal(cf_stats(f).appends_rejected, 0);
}

static void test_stale_offset_is_nacked_and_not_relayed(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_append(f, a, 0, "ab", 2);
    cf_expect_one(f, a, msg_ack(1, 2));
    cf_expect_one(f, b, cf_msg_append(3, 0, "ab"));

    cf_append(f, b, 0, "zz", 2); /* B had not seen A's append yet */
    cf_append(f, b, 7, "zz", 2); /* past the end */
    struct cf_sent s;
    cf_take(f, b, &s);
    assert_int_equal(s.n, 2);
    cf_expect_msg(&s, 0, msg_ack(0, 2));
    cf_expect_msg(&s, 1, msg_ack(0, 2));
    cf_sent_free(&s);
    cf_expect_nothing(f, a);
    assert_int_equal(cf_doc_length(f, "doc"), 2);
    assert_int_equal(cf_stats(f).appends_rejected, 2);
}

static void test_read_only_token(void **state)
{
    struct core_fixture *f = *state;
    cf_add_token(f, "tok-r", "doc", "reader", "r");
    cf_add_token(f, "tok-r-missing", "nowhere", "reader", "r");
    struct hub_client *w = cf_client(f), *r = cf_client(f);
    cf_init(f, w, 3, 0, 0, 0, "doc", "abc", 3);
    struct cf_sent s;
    cf_take(f, w, &s);
    cf_sent_free(&s);

    cf_init(f, r, 3, 0, 0, 0, "tok-r", NULL, 0); /* mode 0 is read as 1 */
    cf_expect_one(f, r, cf_msg_append(3, 0, "abc"));
    cf_append(f, r, 3, "xx", 2);
    cf_append(f, r, 0, "yy", 2);
    cf_take(f, r, &s);
    assert_int_equal(s.n, 2);
    cf_expect_msg(&s, 0, msg_ack(2, 3)); /* read-only: the data counts as empty */
    cf_expect_msg(&s, 1, msg_ack(0, 3));
    cf_sent_free(&s);
    cf_expect_nothing(f, w);
    assert_int_equal(cf_doc_length(f, "doc"), 3);
    assert_int_equal(cf_stats(f).appends_accepted, 0);

    struct hub_client *r2 = cf_client(f), *r3 = cf_client(f);
    cf_init(f, r2, 3, 2, 0, 0, "tok-r", NULL, 0);
    expect_refused(f, r2, 4, "access denied");
    cf_init(f, r3, 3, 0, 0, 0, "tok-r-missing", NULL, 0); /* may not create it */
    expect_refused(f, r3, 4, "access denied");
    uint64_t len;
    assert_int_equal(store_doc_length(f->store, "nowhere", 7, &len), STORE_ENOTFOUND);
}

static void test_broadcast_goes_to_others_only(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *c = cf_client(f), *x = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_join(f, c, "doc");
    cf_join(f, x, "another");
    cf_broadcast(f, a, "hi", 2);
    static const uint8_t bc[] = { 0x04, 0, 0, 0, 0, 2, 'h', 'i' };
    struct hub_client *others[] = { b, c };
    for (int i = 0; i < 2; i++) {
        struct cf_sent s;
        cf_take(f, others[i], &s);
        assert_int_equal(s.n, 1);
        assert_int_equal(s.len[0], sizeof bc);
        assert_memory_equal(s.data[0], bc, sizeof bc);
        cf_sent_free(&s);
    }
    cf_expect_nothing(f, a);
    cf_expect_nothing(f, x);
    assert_int_equal(cf_doc_length(f, "doc"), 0); /* nothing stored */
}

static void test_client_key_lives_with_its_owner(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f), *c = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_set_key(f, a, 7, 0, 0, 1, "page", "3");
    struct cf_sent s;
    cf_expect_one(f, a, msg_set_key_ack(1, 7));
    cf_take(f, b, &s);
    assert_int_equal(s.n, 1);
    static const uint8_t info[] = { 0x82, 0,   0,   0,   0, 1, 0, 0, 0,  4,
                                    'p',  'a', 'g', 'e', 0, 0, 0, 1, '3' };
    assert_int_equal(s.len[0], sizeof info);
    assert_memory_equal(s.data[0], info, sizeof info);
    cf_sent_free(&s);

    /* A joiner is told the key after its catch-up. */
    cf_init(f, c, 3, 0, 0, 0, "doc", NULL, 0);
    cf_take(f, c, &s);
    assert_int_equal(s.n, 2);
    cf_expect_msg(&s, 0, cf_msg_append(3, 0, ""));
    assert_int_equal(s.len[1], sizeof info);
    assert_memory_equal(s.data[1], info, sizeof info);
    cf_sent_free(&s);

    /* A write against an old version is refused and announced to no one. */
    cf_set_key(f, b, 9, 0, 0, 1, "page", "4");
    cf_expect_one(f, b, msg_set_key_ack(0, 9));
    cf_expect_nothing(f, a);
    cf_expect_nothing(f, c);

    /* The owner leaves: the key goes, announced empty with version + 1. */
    cf_close(f, a);
    static const uint8_t gone[] = {
        0x82, 0, 0, 0, 0, 2, 0, 0, 0, 4, 'p', 'a', 'g', 'e', 0, 0, 0, 0
    };
    struct hub_client *others[] = { b, c };
    for (int i = 0; i < 2; i++) {
        cf_take(f, others[i], &s);
        assert_int_equal(s.n, 1);
        assert_int_equal(s.len[0], sizeof gone);
        assert_memory_equal(s.data[0], gone, sizeof gone);
        cf_sent_free(&s);
    }
    /* And a later joiner hears of no key. */
    struct hub_client *d = cf_client(f);
    cf_init(f, d, 3, 0, 0, 0, "doc", NULL, 0);
    cf_take(f, d, &s);
    assert_int_equal(s.n, 1);
    cf_sent_free(&s);
}

static void test_first_message_not_init(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f);
    cf_join(f, a, "doc");
    struct hub_client *b = cf_client(f);
    static const uint8_t append[] = { 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'x' };
    cf_send(f, b, append, sizeof append);
    struct cf_sent s;
    cf_take(f, b, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.state, OUTQ_DEAD);
    assert_int_equal(s.close_code, 1008);
    cf_sent_free(&s);
    /* Whatever follows is ignored: no INIT, no document, no bytes counted. */
    uint64_t in = cf_stats(f).bytes_in;
    cf_init(f, b, 3, 0, 0, 0, "doc", NULL, 0);
    assert_false(session_joined(b));
    assert_int_equal(cf_stats(f).bytes_in, in);
    cf_expect_nothing(f, a);
    assert_int_equal(cf_doc_length(f, "doc"), 0);
}

static void test_second_init_closes(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f);
    cf_join(f, a, "doc");
    cf_init(f, a, 3, 0, 0, 0, "doc", NULL, 0);
    struct cf_sent s;
    cf_take(f, a, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.state, OUTQ_DEAD);
    assert_int_equal(s.close_code, 1008);
    cf_sent_free(&s);
}

static void test_malformed_append_closes_with_1002(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    cf_append(f, a, 0, "ok", 2);
    static const uint8_t short_append[] = { 0x05, 0, 0, 0, 0, 0, 0, 0, 2 }; /* offset cut short */
    cf_send(f, a, short_append, sizeof short_append);
    struct cf_sent s;
    cf_take(f, a, &s);
    assert_int_equal(s.n, 0); /* the ACK still queued is dropped: the close is at once */
    assert_int_equal(s.state, OUTQ_DEAD);
    assert_int_equal(s.close_code, 1002);
    cf_sent_free(&s);
    cf_expect_one(f, b, cf_msg_append(3, 0, "ok"));
    /* A well-formed append afterwards is not run. */
    cf_append(f, a, 2, "no", 2);
    assert_int_equal(cf_doc_length(f, "doc"), 2);
    cf_expect_nothing(f, b);
}

/* APPEND v3 of `data` at `offset`, sent as a first piece and continuations of `piece`
 * bytes of body each. */
static void send_in_pieces(struct core_fixture *f, struct hub_client *c, uint64_t offset,
                           const uint8_t *data, size_t len, size_t piece)
{
    uint8_t msg[512];
    size_t n = codec_encode_append(msg, 3, offset, data, len);
    assert_true(n <= sizeof msg);
    uint8_t buf[512];
    size_t first = 14 + piece < n ? 14 + piece : n;
    memcpy(buf, msg, first);
    buf[1] = first < n;
    cf_send(f, c, buf, first);
    for (size_t at = first; at < n; at += piece) {
        size_t k = n - at < piece ? n - at : piece;
        buf[0] = CODEC_CONTINUATION;
        buf[1] = at + k < n;
        memcpy(buf + 2, msg + at, k);
        cf_send(f, c, buf, 2 + k);
    }
}

static void test_message_over_the_limit_via_continuations(void **state)
{
    struct core_fixture *f = *state;
    f->cfg.max_message_bytes = 100; /* read by session_open */
    struct hub_client *a = cf_client(f), *b = cf_client(f);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    uint8_t data[200];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)('a' + i % 26);

    /* 14 + 86 = 100 bytes in three pieces: reassembled and accepted. */
    send_in_pieces(f, a, 0, data, 86, 30);
    struct cf_sent s;
    cf_expect_one(f, a, msg_ack(1, 86));
    cf_expect_one(f, b, msg_append(3, 0, data, 86));

    /* 14 + 87 = 101 bytes: the ERROR goes out, then the connection closes with 1009. */
    send_in_pieces(f, a, 86, data, 87, 30);
    cf_take(f, a, &s);
    assert_int_equal(s.n, 1);
    cf_expect_msg(&s, 0, msg_error(0, "message larger than the server's limit of 100 bytes"));
    assert_int_equal(s.state, OUTQ_DRAINING);
    assert_int_equal(s.close_code, 1009);
    cf_sent_free(&s);
    cf_expect_nothing(f, b);
    assert_int_equal(cf_doc_length(f, "doc"), 86);

    /* The session closed it: a valid append that still arrives is not run. */
    uint64_t in = cf_stats(f).bytes_in;
    cf_append(f, a, 86, "late", 4);
    assert_int_equal(cf_doc_length(f, "doc"), 86);
    assert_int_equal(cf_stats(f).bytes_in, in);
    cf_expect_nothing(f, b);
}

static void test_close_leaves_the_document(void **state)
{
    struct core_fixture *f = *state;
    struct hub_client *a = cf_client(f), *b = cf_client(f);
    assert_int_equal(cf_stats(f).connections, 2);
    cf_join(f, a, "doc");
    cf_join(f, b, "doc");
    assert_int_equal(cf_stats(f).documents, 1);
    cf_close(f, a);
    assert_int_equal(cf_stats(f).connections, 1);
    assert_int_equal(cf_stats(f).documents, 1);
    cf_append(f, b, 0, "solo", 4); /* relayed to no one, A included */
    struct cf_sent s;
    cf_expect_one(f, b, msg_ack(1, 4));
    cf_take(f, a, &s);
    assert_int_equal(s.n, 0);
    cf_sent_free(&s);
    cf_close(f, b);
    assert_int_equal(cf_stats(f).connections, 0);
    assert_int_equal(cf_stats(f).documents, 0);
}

int main(void)
{
    cf_root_create("session");
#define T(name) cmocka_unit_test_setup_teardown(name, cf_setup, cf_teardown)
    const struct CMUnitTest tests[] = {
        T(test_init_creates_then_opens),
        T(test_mode1_on_missing_document),
        T(test_error_is_one_message_whatever_the_split_size),
        T(test_append_acks_writer_and_relays_to_others),
        T(test_stale_offset_is_nacked_and_not_relayed),
        T(test_read_only_token),
        T(test_broadcast_goes_to_others_only),
        T(test_client_key_lives_with_its_owner),
        T(test_first_message_not_init),
        T(test_second_init_closes),
        T(test_malformed_append_closes_with_1002),
        T(test_message_over_the_limit_via_continuations),
        T(test_close_leaves_the_document),
    };
#undef T
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    cf_root_remove();
    return rc;
}
