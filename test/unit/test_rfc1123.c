/* test_rfc1123: the management API's date parser (addToken's expiration) against
 * what Go's time.Parse(time.RFC1123, s) answers — the reference server's parser. The
 * first table's expected values were produced by Go 1.19 on a UTC machine; the HTTP
 * behaviour is tested end to end in test/integration/test_mgmt_api.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "rfc1123.h"

#define BAD INT64_MIN

struct vector {
    const char *s;
    int64_t want; /* Unix seconds, or BAD when refused */
};

static void check(const struct vector *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int64_t t = -12345;
        int rc = rfc1123_parse(v[i].s, &t);
        if (v[i].want == BAD && rc != -1) fail_msg("accepted \"%s\" as %lld", v[i].s, (long long)t);
        if (v[i].want != BAD && (rc != 0 || t != v[i].want))
            fail_msg("\"%s\": rc %d, %lld, want %lld", v[i].s, rc, (long long)t,
                     (long long)v[i].want);
    }
}

/* Exactly what Go accepts and how it reads it. */
static void test_as_go_parses(void **state)
{
    (void)state;
    static const struct vector v[] = {
        { "Mon, 02 Jan 2006 15:04:05 GMT", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 UTC", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 PST", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 CEST", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 EST", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +0000", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +0023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +05", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 -5", BAD },
        { "Mon, 02 Jan 2006 15:04:05 GMT+5", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 GMT-05", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 GMT+24", BAD },
        { "Mon, 02 Jan 2006 5:04:05 GMT", 1136178245LL },
        { "Mon, 02 Jan 2006 05:04:05 GMT", 1136178245LL },
        { "Mon, 2 Jan 2006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05.123 GMT", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05,999999999999 GMT", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05. GMT", BAD },
        { "mon, 02 jan 2006 15:04:05 GMT", 1136214245LL },
        { "MON, 02 JAN 2006 15:04:05 GMT", 1136214245LL },
        { "Monday, 02 Jan 2006 15:04:05 GMT", BAD },
        { "Tue, 02 Jan 2006 15:04:05 GMT", 1136214245LL },
        { "Mon,  02  Jan  2006   15:04:05    GMT", 1136214245LL },
        { "Mon,02 Jan 2006 15:04:05 GMT", BAD },
        { " Mon, 02 Jan 2006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05 GMT ", BAD },
        { "Mon, 02 Jan 2006 15:04:05 gmt", BAD },
        { "Mon, 02 Jan 2006 15:04:05 Utc", BAD },
        { "Mon, 02 Jan 2006 15:04:05 UTCX", BAD },
        { "Mon, 02 Jan 2006 15:04:05 ChST", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 MeST", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 WITA", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 WIB", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 ABCD", BAD },
        { "Mon, 02 Jan 2006 15:04:05 ABCT", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 CHADT", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 CHADX", BAD },
        { "Mon, 02 Jan 2006 15:04:05 ABCDEF", BAD },
        { "Mon, 02 Jan 2006 15:04:05 AB", BAD },
        { "Mon, 02 Jan 2006 15:04:05 Z", BAD },
        { "Mon, 02 Jan 2006 15:04:05", BAD },
        { "Mon, 02 Jan 2006 15:04:05 PST8PDT", BAD },
        { "Mon, 29 Feb 2000 00:00:00 GMT", 951782400LL },
        { "Mon, 29 Feb 2001 00:00:00 GMT", BAD },
        { "Mon, 31 Apr 2001 00:00:00 GMT", BAD },
        { "Mon, 00 Jan 2001 00:00:00 GMT", BAD },
        { "Mon, 02 Jan 2006 24:00:00 GMT", BAD },
        { "Mon, 02 Jan 2006 23:60:00 GMT", BAD },
        { "Mon, 02 Jan 2006 23:59:60 GMT", BAD },
        { "Mon, 02 Jan 0000 00:00:00 GMT", -62167132800LL },
        { "Mon, 02 Jan 9999 23:59:59 GMT", 253370937599LL },
        { "Mon, 02 Jan 20061 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 206 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 015:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:4:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:5 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +00000", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 -0000", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +1", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +23", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +24", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +00023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +0000000000000000000023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 GMT+0023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 GMT+", BAD },
        { "Mon, 02 Jan 2006 15:04:05 GMTX", BAD },
        { "Mon, 02 Jan 2006 15:04:05 GMT+5X", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +5:00", BAD },
        { "Mon, 02 Jan 2006 15:04:05 -07:00", BAD },
        { "Mon, 02 Jan 2006 1:04:05 GMT", 1136163845LL },
        { "Mon, 02 Jan 2006 15:04:05.1234567890123 UTC", 1136214245LL },
        { "Mon, 02 Jan -006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan +006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05\tGMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05  +0000", 1136214245LL },
        { "Sun, 31 Dec 1899 23:59:59 GMT", -2208988801LL },
        { "Mon, 02 Jan 2006 +5:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +99999999999999999999", BAD },
    };
    check(v, sizeof v / sizeof *v);
}

/* Our earlier tests, kept: the epoch, leap days, far dates, weekday not checked. */
static void test_more_dates(void **state)
{
    (void)state;
    static const struct vector v[] = {
        { "Thu, 01 Jan 1970 00:00:00 GMT", 0 },
        { "Thu, 29 Feb 2024 23:59:59 GMT", 1709251199 },
        { "Fri, 31 Dec 2099 12:00:00 GMT", 4102401600LL },
        { "Sun, 02 Jan 2006 15:04:05 GMT", 1136214245 },
        { "Mon, 29 Feb 1900 15:04:05 GMT", BAD },
        { "Mon, 32 Jan 2006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 06 15:04:05 GMT", BAD },
        { "Mon 02 Jan 2006 15:04:05 GMT", BAD },
        { "Xyz, 02 Jan 2006 15:04:05 GMT", BAD },
        { "Mon, 02 Foo 2006 15:04:05 GMT", BAD },
        { "Mon, 02 Jan 2006 1a:04:05 GMT", BAD },
        { "2006-01-02T15:04:05Z", BAD },
        { "1136214245", BAD },
        { "tomorrow", BAD },
        { "", BAD },
        { "Mon,", BAD },
        { "Mon, 02 Jan 2006 15:", BAD },
    };
    check(v, sizeof v / sizeof *v);
    int64_t t;
    assert_int_equal(rfc1123_parse(NULL, &t), -1);
}

/* Beyond the reference, which refuses these: RFC 1123's +hhmm / -hhmm, applied. */
static void test_numeric_offsets(void **state)
{
    (void)state;
    static const struct vector v[] = {
        { "Mon, 02 Jan 2006 15:04:05 -0700", 1136239445LL },
        { "Mon, 02 Jan 2006 15:04:05 +0100", 1136210645LL },
        { "Mon, 02 Jan 2006 15:04:05 +0530", 1136214245LL - 5 * 3600 - 30 * 60 },
        { "Mon, 02 Jan 2006 15:04:05 -2359", 1136214245LL + 23 * 3600 + 59 * 60 },
        { "Mon, 02 Jan 2006 15:04:05 +0000", 1136214245LL },
        /* the reference's own reading (UTC) wins where it accepts the text */
        { "Mon, 02 Jan 2006 15:04:05 +0023", 1136214245LL },
        { "Mon, 02 Jan 2006 15:04:05 +2400", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +0060", BAD },
        { "Mon, 02 Jan 2006 15:04:05 +01000", BAD },
        { "Mon, 02 Jan 2006 15:04:05 GMT+0100", BAD },
    };
    check(v, sizeof v / sizeof *v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_as_go_parses),
        cmocka_unit_test(test_more_dates),
        cmocka_unit_test(test_numeric_offsets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
