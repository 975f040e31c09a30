/* rfc1123: parses the management API's dates (addToken's `expiration`) exactly as
 * the reference server does, which hands them to Go's time.Parse(time.RFC1123, s).
 *
 * Accepted, as Go accepts them:
 *   "Mon, 02 Jan 2006 15:04:05 GMT"   the canonical form;
 *   day and month names in any letter case; the weekday is not checked against the
 *   date; one or more spaces wherever the layout has one; a one- or two-digit hour;
 *   a two-digit day, minute and second; a four-digit year (0000-9999);
 *   a fraction after the seconds (".123" or ",123", any number of digits, ignored);
 *   as the zone:
 *     "UTC";
 *     an abbreviation: three capital letters (GMT, PST, EST, ...), four ending in T
 *       (CEST, AEDT, ...), five ending in T, or ChST, MeST, WITA;
 *     "GMT" followed by a signed hour (GMT+5, GMT-05), at most 23;
 *     a signed number (+0000, -0000, +05, +23) whose value is at most 23.
 *   Every zone of that list is read as UTC: the wall-clock time given is taken as a
 *   UTC time, whatever the abbreviation or number says. That is what Go does for an
 *   abbreviation the server's own time zone does not define, and for "GMT+5" and
 *   the signed numbers always; the reference runs on UTC machines, where no
 *   abbreviation but UTC is defined. (On a machine set to, say, America/Los_Angeles
 *   the reference would read PST as UTC-8; we never depend on the machine's zone.)
 * Accepted beyond the reference (which refuses them, so no caller can depend on
 * another reading): a numeric offset of exactly four digits, +hhmm or -hhmm with
 *   hh <= 23 and mm <= 59 (RFC 1123's own numeric zone, e.g. "-0700", as PHP's
 *   DATE_RFC1123 writes it), which is applied: 15:04:05 -0700 is 22:04:05 UTC.
 *   Four-digit numbers the reference accepts (+0000 to +0023) keep its reading.
 * Refused: anything else — a missing zone or seconds, a one-digit day, a two-digit
 * year, leading or trailing blanks, tabs, lower-case zones, out-of-range fields
 * (hour 24, second 60, 31 April, 29 February outside leap years).
 */
#ifndef ZW_RFC1123_H
#define ZW_RFC1123_H

#include <stdint.h>

/* Parses NUL-terminated s. Returns 0 and sets *out to Unix seconds, or -1 (s NULL or
 * not a date per the rules above). Pure; safe from any thread. */
int rfc1123_parse(const char *s, int64_t *out);

#endif
