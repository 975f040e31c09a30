/* test_outq: unit tests for server/core/outq.c — the send queue's states, the bound on
 * a slow client, superseded key updates, giving back what a full socket did not take,
 * and the wake-ups that hand a client to its loop. A fake loop records the wake-ups. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "client.h"
#include "message.h"
#include "outq.h"

struct fake_loop {
    int wakes;
    struct hub_client *last;
};

static void fake_wake(void *arg, struct hub_client *c)
{
    struct fake_loop *f = arg;
    f->wakes++;
    f->last = c;
    client_unref(c); /* the loop's reference, released at once here */
}

struct fixture {
    struct outq_counters counters;
    struct fake_loop loop;
    struct outq q;
    struct hub_client *c;
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof f);
    f.q = (struct outq){
        .bound = 1000, .counters = &f.counters, .wake = fake_wake, .wake_arg = &f.loop
    };
    f.c = client_new("127.0.0.1", false);
    assert_non_null(f.c);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    outq_closed(f->c);
    client_unref(f->c);
    return 0;
}

static struct message *msg(size_t len, char fill)
{
    struct message *m = message_new(len);
    assert_non_null(m);
    memset(m->data, fill, len);
    return m;
}

static void push(struct fixture *f, size_t len, char fill, bool exempt, int expect)
{
    struct message *m = msg(len, fill);
    assert_int_equal(outq_push(&f->q, f->c, m, exempt), expect);
    message_unref(m);
}

static void test_first_push_wakes_once(void **state)
{
    struct fixture *f = *state;
    push(f, 10, 'a', false, 0);
    push(f, 10, 'b', false, 0);
    assert_int_equal(f->loop.wakes, 1); /* scheduled until the loop finds it empty */
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.state, OUTQ_OPEN);
    assert_int_equal(outq_slot_msg(b.msgs[0])->data[0], 'a');
    outq_release(&f->q, &b, 2);
    assert_int_equal(atomic_load(&f->counters.messages_out), 2);
    assert_int_equal(atomic_load(&f->counters.bytes_out), 20);
    outq_take(f->c, slots, 8, 1 << 20, &b); /* empty: no longer scheduled */
    assert_int_equal(b.n, 0);
    push(f, 10, 'c', false, 0);
    assert_int_equal(f->loop.wakes, 2);
    outq_take(f->c, slots, 8, 1 << 20, &b);
    outq_release(&f->q, &b, b.n);
}

static void test_take_respects_batch_limits(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 5; i++) push(f, 100, (char)('a' + i), true, 0);
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 2, 1 << 20, &b);
    assert_int_equal(b.n, 2);
    outq_release(&f->q, &b, 2);
    outq_take(f->c, slots, 8, 150, &b); /* stops once past max_bytes */
    assert_int_equal(b.n, 2);
    assert_int_equal(outq_slot_msg(b.msgs[0])->data[0], 'c');
    outq_release(&f->q, &b, 2);
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 1);
    outq_release(&f->q, &b, 1);
}

static void test_slow_client_is_killed_past_bound(void **state)
{
    struct fixture *f = *state;
    push(f, 600, 'a', false, 0); /* the message being sent does not count */
    push(f, 600, 'b', false, 0);
    push(f, 500, 'c', false, -1); /* 600 + 500 behind > 1000 */
    assert_int_equal(atomic_load(&f->counters.slow_disconnects), 1);
    assert_int_equal(outq_state(f->c), OUTQ_DEAD);
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 0); /* dropped */
    assert_int_equal(b.state, OUTQ_DEAD);
    assert_int_equal(b.close_code, 0);
    push(f, 1, 'd', true, -1); /* dead takes nothing, exempt or not */
}

static void test_exempt_messages_do_not_count(void **state)
{
    struct fixture *f = *state;
    push(f, 5000, 'a', true, 0); /* a catch-up larger than the bound */
    push(f, 900, 'b', false, 0);
    push(f, 900, 'c', false, 0); /* behind by 900 only: the oldest counted one is in flight */
    assert_int_equal(outq_state(f->c), OUTQ_OPEN);
}

static void test_newer_key_supersedes_queued(void **state)
{
    struct fixture *f = *state;
    struct message *k1 = msg_key_info_one(1, (const uint8_t *)"page", 4, (const uint8_t *)"1", 1);
    struct message *k2 = msg_key_info_one(2, (const uint8_t *)"page", 4, (const uint8_t *)"2", 1);
    struct message *other =
        msg_key_info_one(1, (const uint8_t *)"lock", 4, (const uint8_t *)"x", 1);
    assert_int_equal(outq_push(&f->q, f->c, k1, false), 0);
    assert_int_equal(outq_push(&f->q, f->c, other, false), 0);
    assert_int_equal(outq_push(&f->q, f->c, k2, false), 0);
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 2); /* k1 is gone */
    assert_ptr_equal(outq_slot_msg(b.msgs[0]), other);
    assert_ptr_equal(outq_slot_msg(b.msgs[1]), k2);
    outq_release(&f->q, &b, 2);
    message_unref(k1);
    message_unref(k2);
    message_unref(other);
}

static void test_give_back_keeps_order_and_offset(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 4; i++) push(f, 10, (char)('a' + i), false, 0);
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 3, 1 << 20, &b);
    assert_int_equal(b.n, 3);
    outq_release(&f->q, &b, 1);                                 /* 'a' went */
    assert_int_equal(outq_give_back(&f->q, f->c, &b, 1, 7), 0); /* 'b' went 7 bytes in */
    struct outq_batch b2;
    outq_take(f->c, slots, 8, 1 << 20, &b2);
    assert_int_equal(b2.n, 3);
    assert_int_equal(b2.sent_off, 7);
    assert_int_equal(outq_slot_msg(b2.msgs[0])->data[0], 'b');
    assert_int_equal(outq_slot_msg(b2.msgs[2])->data[0], 'd');
    outq_release(&f->q, &b2, 3);
}

static void test_drain_then_close(void **state)
{
    struct fixture *f = *state;
    push(f, 10, 'a', true, 0);
    outq_close_after_drain(&f->q, f->c, 1000);
    push(f, 10, 'b', true, -1); /* draining takes nothing new */
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.state, OUTQ_DRAINING);
    outq_release(&f->q, &b, 1);
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.n, 0);
    assert_int_equal(b.state, OUTQ_DRAINING); /* the loop closes now, with the code */
    assert_int_equal(b.close_code, 1000);
}

static void test_kill_drops_and_wakes(void **state)
{
    struct fixture *f = *state;
    push(f, 10, 'a', false, 0);
    struct message *slots[8];
    struct outq_batch b;
    outq_take(f->c, slots, 8, 1 << 20, &b);
    outq_release(&f->q, &b, b.n);
    outq_take(f->c, slots, 8, 1 << 20, &b); /* idle now */
    int wakes = f->loop.wakes;
    outq_kill(&f->q, f->c, 1002, "test");
    assert_int_equal(f->loop.wakes, wakes + 1); /* the loop must come and close it */
    outq_kill(&f->q, f->c, 1002, "again");
    assert_int_equal(f->loop.wakes, wakes + 1); /* once */
    outq_take(f->c, slots, 8, 1 << 20, &b);
    assert_int_equal(b.state, OUTQ_DEAD);
    assert_int_equal(b.close_code, 1002);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_push_wakes_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_respects_batch_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_client_is_killed_past_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exempt_messages_do_not_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_key_supersedes_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_give_back_keeps_order_and_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_then_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_drops_and_wakes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
