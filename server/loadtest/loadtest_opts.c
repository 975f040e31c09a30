/* loadtest_opts: parses the load tester's flags. Accepts "--flag value",
 * "--flag=value" and the single-dash forms, since the reference's Go flag package
 * accepts all of them and scripts written for it must keep working. */
#include "loadtest_opts.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: zwibbler --test URL [--docid ID] [--teachers N] [--students M]\n"
            "         [--docs K] [--duration S] [--delay-ms D] [--change-bytes B]\n"
            "         [--connect-spread-ms T] [--json] [--tls-verify] [--verbose]\n"
            "  URL is ws://host:port/socket or wss://host:port/socket\n");
}

/* Parses a non-negative number; -1 when it is not one. */
static double parse_num(const char *flag, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0) {
        fprintf(stderr, "loadtest: %s wants a non-negative number, got '%s'\n", flag, s);
        return -1;
    }
    return v;
}

static int parse_int(const char *flag, const char *s, int *out)
{
    double v = parse_num(flag, s);
    if (v < 0 || v != floor(v) || v > 1e7) {
        if (v >= 0)
            fprintf(stderr, "loadtest: %s wants a whole number, got '%s'\n", flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int lt_opts_parse(int argc, char **argv, struct lt_opts *o)
{
    memset(o, 0, sizeof *o);
    o->docid = "loadtest";
    o->teachers = 1;
    o->students = 10;
    o->docs = 1;
    o->delay_ms = 1000;
    o->change_bytes = LT_CHANGE_MIN;
    o->spread_ms = 3000;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "-help")) {
            usage();
            return 1;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            fprintf(stderr, "loadtest: unexpected argument '%s'\n", a);
            goto bad;
        }
        a += a[1] == '-' ? 2 : 1;
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (nlen >= sizeof name) {
            fprintf(stderr, "loadtest: unknown flag '%s'\n", argv[i]);
            goto bad;
        }
        memcpy(name, a, nlen);
        name[nlen] = 0;
        if (eq)
            val = eq + 1;

        /* Boolean flags. */
        int *flag = !strcmp(name, "json")         ? &o->json
                    : !strcmp(name, "verbose")    ? &o->verbose
                    : !strcmp(name, "tls-verify") ? &o->tls_verify
                                                  : NULL;
        if (flag) {
            *flag = 1;
            continue;
        }
        static const char *const valued[] = {"test", "docid", "teachers", "students", "docs",
                                             "duration", "delay-ms", "change-bytes",
                                             "connect-spread-ms", "config", "port"};
        int known = 0;
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++)
            known |= !strcmp(name, valued[k]);
        if (!known) {
            fprintf(stderr, "loadtest: unknown flag '%s'\n", argv[i]);
            goto bad;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loadtest: %s needs a value\n", argv[i]);
                goto bad;
            }
            val = argv[++i];
        }
        double d;
        if (!strcmp(name, "test")) {
            o->url = val;
        } else if (!strcmp(name, "docid")) {
            o->docid = val;
        } else if (!strcmp(name, "teachers")) {
            if (parse_int(name, val, &o->teachers))
                goto bad;
        } else if (!strcmp(name, "students")) {
            if (parse_int(name, val, &o->students))
                goto bad;
        } else if (!strcmp(name, "docs")) {
            if (parse_int(name, val, &o->docs))
                goto bad;
        } else if (!strcmp(name, "duration")) {
            if ((d = parse_num(name, val)) < 0)
                goto bad;
            o->duration_s = d;
        } else if (!strcmp(name, "delay-ms")) {
            if ((d = parse_num(name, val)) < 0)
                goto bad;
            o->delay_ms = d;
        } else if (!strcmp(name, "change-bytes")) {
            int n;
            if (parse_int(name, val, &n))
                goto bad;
            o->change_bytes = (size_t)n;
        } else if (!strcmp(name, "connect-spread-ms")) {
            if ((d = parse_num(name, val)) < 0)
                goto bad;
            o->spread_ms = d;
        }
        /* else --config / --port: the server's own flags may share the command
         * line; they are not ours. */
    }
    if (!o->url || !*o->url) {
        fprintf(stderr, "loadtest: --test URL is required\n");
        goto bad;
    }
    if (o->docs < 1) {
        fprintf(stderr, "loadtest: --docs must be at least 1\n");
        goto bad;
    }
    if (o->change_bytes < LT_CHANGE_MIN || o->change_bytes > 16u << 20) {
        fprintf(stderr, "loadtest: --change-bytes must be between %d and %u\n",
                LT_CHANGE_MIN, 16u << 20);
        goto bad;
    }
    if (o->teachers + o->students < 1) {
        fprintf(stderr, "loadtest: no clients (--teachers and --students are 0)\n");
        goto bad;
    }
    return 0;
bad:
    usage();
    return -1;
}
