/* rfc1123: the management API's date parser, a transcription of what Go's
 * time.Parse(time.RFC1123, s) accepts (see rfc1123.h for the rules and why). */
#include "rfc1123.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }

/* A name of the list, compared on its first three letters in any case. */
static const char *name(const char *s, const char *const names[], int count, int *index)
{
    for (int i = 0; i < count; i++)
        if (strncasecmp(s, names[i], 3) == 0) {
            *index = i;
            return s + 3;
        }
    return NULL;
}

/* A layout space matches one or more spaces (Go's skip()). */
static const char *spaces(const char *s)
{
    if (!s || *s != ' ') return NULL;
    while (*s == ' ') s++;
    return s;
}

/* Exactly n digits. */
static const char *fixed(const char *s, int n, int *out)
{
    int v = 0;
    if (!s) return NULL;
    for (int i = 0; i < n; i++) {
        if (!is_digit(s[i])) return NULL;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return s + n;
}

/* Go's parseSignedOffset: a sign and at least one digit, value at most 23 (leading
 * zeros allowed, any number of them). Returns the end, or NULL. */
static const char *signed_hours(const char *s)
{
    if (*s != '+' && *s != '-') return NULL;
    const char *p = s + 1;
    bool big = false;
    int v = 0;
    while (is_digit(*p)) {
        v = v * 10 + (*p++ - '0');
        if (v > 23) big = true, v = 24; /* saturate: any larger value fails alike */
    }
    return p == s + 1 || big ? NULL : p;
}

/* Go's stdTZ: "UTC", or parseTimeZone. Returns the end of the zone, or NULL. */
static const char *zone(const char *s)
{
    if (strncmp(s, "UTC", 3) == 0) return s + 3;
    if (strlen(s) < 3) return NULL;
    if (strncmp(s, "ChST", 4) == 0 || strncmp(s, "MeST", 4) == 0) return s + 4;
    if (strncmp(s, "GMT", 3) == 0) {
        const char *end = s[3] ? signed_hours(s + 3) : NULL;
        return end ? end : s + 3; /* a bad offset leaves it as extra text */
    }
    if (*s == '+' || *s == '-') return signed_hours(s);
    int upper = 0;
    while (upper < 6 && is_upper(s[upper])) upper++;
    if (upper == 3) return s + 3;
    if (upper == 4 && (s[3] == 'T' || strncmp(s, "WITA", 4) == 0)) return s + 4;
    if (upper == 5 && s[4] == 'T') return s + 5;
    return NULL;
}

/* RFC 1123's numeric zone (+hhmm / -hhmm), beyond the reference: seconds east of UTC
 * through *offset. Returns the end, or NULL. */
static const char *numeric_zone(const char *s, int *offset)
{
    int hh, mm;
    if ((*s != '+' && *s != '-') || !fixed(s + 1, 2, &hh) || !fixed(s + 3, 2, &mm) || hh > 23 ||
        mm > 59)
        return NULL;
    *offset = (*s == '-' ? -1 : 1) * (hh * 3600 + mm * 60);
    return s + 5;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int rfc1123_parse(const char *s, int64_t *out)
{
    static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int wday = 0, mon = 0, day = 0, year = 0, hh = 0, mm = 0, ss = 0, offset = 0;
    if (!s) return -1;
    /* "Mon, 02 Jan 2006 15:04:05 MST" */
    const char *p = name(s, days, 7, &wday);
    if (!p || *p++ != ',') return -1;
    p = fixed(spaces(p), 2, &day);
    p = spaces(p);
    p = p ? name(p, months, 12, &mon) : NULL;
    p = fixed(spaces(p), 4, &year);
    p = spaces(p);
    if (!p || !is_digit(*p)) return -1;
    hh = *p++ - '0';
    if (is_digit(*p)) hh = hh * 10 + (*p++ - '0');
    if (*p++ != ':') return -1;
    p = fixed(p, 2, &mm);
    if (!p || *p++ != ':') return -1;
    p = fixed(p, 2, &ss);
    if (p && (*p == '.' || *p == ',') && is_digit(p[1])) /* fraction: read, ignored */
        for (p++; is_digit(*p);) p++;
    p = spaces(p);
    if (!p) return -1;
    const char *end = zone(p);
    if (!end || *end) { /* the reference's zones first, then the numeric extension */
        end = numeric_zone(p, &offset);
        if (!end || *end) return -1;
    }
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int maxd = mon == 1 && leap ? 29 : mdays[mon];
    if (day < 1 || day > maxd || hh > 23 || mm > 59 || ss > 59) return -1;
    *out = days_from_civil(year, mon + 1, day) * 86400 + hh * 3600 + mm * 60 + ss - offset;
    return 0;
}
