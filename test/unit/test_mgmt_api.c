/* test_mgmt_api: unit tests for the management API's strict RFC 1123 date parser
 * (addToken's expiration). The HTTP behaviour is tested end to end in
 * test/integration/test_mgmt_api.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "mgmt_api.h"

static int64_t parse_ok(const char *s)
{
    int64_t t = -12345;
    assert_int_equal(mgmt_parse_rfc1123(s, &t), 0);
    return t;
}

static void test_valid_dates(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("Mon, 02 Jan 2006 15:04:05 GMT"), 1136214245);
    assert_int_equal(parse_ok("Mon, 02 Jan 2006 15:04:05 UTC"), 1136214245);
    assert_int_equal(parse_ok("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    assert_int_equal(parse_ok("Thu, 29 Feb 2024 23:59:59 GMT"), 1709251199);
    assert_int_equal(parse_ok("Fri, 31 Dec 2099 12:00:00 GMT"), 4102401600LL);
    /* Names in any case, like Go's time.Parse. */
    assert_int_equal(parse_ok("mon, 02 JAN 2006 15:04:05 GMT"), 1136214245);
    /* The weekday is not checked against the date (neither does the reference). */
    assert_int_equal(parse_ok("Sun, 02 Jan 2006 15:04:05 GMT"), 1136214245);
}

static void test_invalid_dates(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "tomorrow",
        "2006-01-02T15:04:05Z",
        "1136214245",
        "Mon, 2 Jan 2006 15:04:05 GMT",     /* one-digit day */
        "Mon, 02 Jan 06 15:04:05 GMT",      /* two-digit year */
        "Mon, 02 Jan 2006 15:04 GMT",
        "Mon, 02 Jan 2006 15:04:05",
        "Mon, 02 Jan 2006 15:04:05 EST",
        "Mon, 02 Jan 2006 15:04:05 +0000",
        "Mon, 02 Jan 2006 15:04:05 GMT ",
        " Mon, 02 Jan 2006 15:04:05 GMT",
        "Mon 02 Jan 2006 15:04:05 GMT",
        "Xyz, 02 Jan 2006 15:04:05 GMT",
        "Mon, 02 Foo 2006 15:04:05 GMT",
        "Mon, 00 Jan 2006 15:04:05 GMT",
        "Mon, 32 Jan 2006 15:04:05 GMT",
        "Mon, 31 Apr 2006 15:04:05 GMT",
        "Mon, 29 Feb 2023 15:04:05 GMT",
        "Mon, 29 Feb 1900 15:04:05 GMT",
        "Mon, 02 Jan 2006 24:00:00 GMT",
        "Mon, 02 Jan 2006 15:60:05 GMT",
        "Mon, 02 Jan 2006 15:04:60 GMT",
        "Mon, 02 Jan 2006 1a:04:05 GMT",
        "Mon, 02 Jan 2006 15:04:05 gmt",
        "Monday, 02 Jan 2006 15:04:05 GMT",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t t = 0;
        if (mgmt_parse_rfc1123(bad[i], &t) != -1) fail_msg("accepted: \"%s\"", bad[i]);
    }
    int64_t t;
    assert_int_equal(mgmt_parse_rfc1123(NULL, &t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_dates),
        cmocka_unit_test(test_invalid_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
