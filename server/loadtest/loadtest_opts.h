/* loadtest_opts: the load tester's command-line flags (listed in loadtest.h). */
#ifndef ZW_LOADTEST_OPTS_H
#define ZW_LOADTEST_OPTS_H

#include <stddef.h>

struct lt_opts {
    const char *url;   /* ws://host:port/path or wss://... */
    const char *docid; /* base document id */
    int teachers;
    int students;
    int docs;            /* >= 1 */
    double duration_s;   /* 0 = until SIGINT */
    double delay_ms;     /* mean gap between a teacher's changes; 0 = back to back */
    size_t change_bytes; /* >= LT_CHANGE_MIN */
    double spread_ms;    /* connections spread over this window */
    int json;
    int compression; /* offer permessage-deflate */
    int verbose;
    int tls_verify;
};

/* Smallest change: 4 bytes of milliseconds, 2 of microseconds, 4 of sender id. */
#define LT_CHANGE_MIN 10

/* Parses argv (the whole command line; argv[0] and the server's own --config /
 * --port pairs are skipped). Returns 0; 1 when --help asked for the usage (printed
 * to stderr); -1 after printing the problem and the usage to stderr. */
int lt_opts_parse(int argc, char **argv, struct lt_opts *o);

#endif
