/* loadtest_opts: the load tester's flags — one table with each flag's value, default
 * and help text — their parsing and the usage printed from that table. Accepts
 * "--flag value", "--flag=value" and the single-dash forms, since the reference's Go
 * flag package accepts all of them and scripts written for it must keep working. */
#include "loadtest_opts.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind {
    K_BOOL,   /* int, set to 1 by its presence */
    K_STR,    /* const char *, pointing into argv */
    K_INT,    /* int, a whole number */
    K_SIZE,   /* size_t, a whole number */
    K_NUM,    /* double, a non-negative number */
    K_SERVER, /* the server's own flag, taking a value we ignore */
};

struct flag_spec {
    const char *name;
    const char *arg; /* what the value is, in the usage; NULL for booleans */
    enum kind kind;
    size_t offset;    /* in struct lt_opts */
    const char *def;  /* default, parsed like a value given on the command line */
    const char *help; /* lines after the first are indented in the usage */
};

#define F(field) offsetof(struct lt_opts, field)
#define STR(x) #x
#define XSTR(x) STR(x)
static const struct flag_spec flags[] = {
    { "test", "URL", K_STR, F(url), NULL,
      "the server's endpoint, ws://host:port/socket or\nwss://host:port/socket (required)" },
    { "docid", "ID", K_STR, F(docid), "loadtest",
      "document id; with --docs K > 1 the clients are spread\nover ID-0 .. ID-(K-1)" },
    { "teachers", "N", K_INT, F(teachers), "1", "clients that append" },
    { "students", "M", K_INT, F(students), "10", "clients that only receive" },
    { "docs", "K", K_INT, F(docs), "1", "number of documents" },
    { "duration", "S", K_NUM, F(duration_s), NULL,
      "stop after S seconds, print the summary, exit 0 when\n"
      "everything checked out and 1 otherwise (default: run\n"
      "until Ctrl-C, which also prints the summary)" },
    { "delay-ms", "D", K_NUM, F(delay_ms), "1000",
      "mean interval between one teacher's changes; 0: the\n"
      "next right after the previous one's ACK" },
    { "change-bytes", "B", K_SIZE, F(change_bytes), XSTR(LT_CHANGE_MIN),
      "size of each change, at least " XSTR(LT_CHANGE_MIN) },
    { "connect-spread-ms", "T", K_NUM, F(spread_ms), "3000",
      "connections are spread evenly over T ms" },
    { "compression", NULL, K_BOOL, F(compression), NULL,
      "offer permessage-deflate (what the server compresses\nis inflated here); bytes on the wire "
      "are reported" },
    { "json", NULL, K_BOOL, F(json), NULL,
      "one JSON summary line on stdout; the live lines go\nto stderr" },
    { "tls-verify", NULL, K_BOOL, F(tls_verify), NULL,
      "verify the wss:// server certificate (default: not\n"
      "verified, so self-signed test servers work)" },
    { "verbose", NULL, K_BOOL, F(verbose), NULL, "log every connection event and error" },
    /* The server's own flags may share the command line; they are not ours. */
    { "config", "PATH", K_SERVER, 0, NULL, NULL },
    { "port", "N", K_SERVER, 0, NULL, NULL },
};

static void usage(FILE *out)
{
    fprintf(out, "usage: zwibbler --test URL [flags]\n"
                 "Simulated teachers append small timestamped changes to shared documents and\n"
                 "simulated students receive them; prints connections, document length and\n"
                 "screen-to-screen time every second, then a summary with percentiles and a\n"
                 "check that every client holds the document's exact bytes.\n\n");
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        const struct flag_spec *f = &flags[i];
        if (!f->help) continue;
        char head[40];
        snprintf(head, sizeof head, "--%s%s%s", f->name, f->arg ? " " : "", f->arg ? f->arg : "");
        fprintf(out, "  %-22s ", head);
        for (const char *p = f->help; *p;) {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            fprintf(out, "%s%.*s", p == f->help ? "" : "\n                         ", (int)n, p);
            p += n + (nl != NULL);
        }
        if (f->def) fprintf(out, f->kind == K_STR ? " (default \"%s\")" : " (default %s)", f->def);
        fputc('\n', out);
    }
    fprintf(out, "\nEach flag may also be written --flag=value, -flag or -flag=value.\n"
                 "Exit status: 0 when the run had no errors and the data check passed,\n"
                 "1 otherwise, 2 on bad flags.\n");
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
        if (v >= 0) fprintf(stderr, "loadtest: %s wants a whole number, got '%s'\n", flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Stores val into the field of f. Returns 0, or -1 after printing the problem. */
static int set_value(struct lt_opts *o, const struct flag_spec *f, const char *val)
{
    void *field = (char *)o + f->offset;
    double d;
    int n;
    switch (f->kind) {
    case K_BOOL: *(int *)field = 1; return 0;
    case K_STR: *(const char **)field = val; return 0;
    case K_INT: return parse_int(f->name, val, (int *)field);
    case K_SIZE:
        if (parse_int(f->name, val, &n)) return -1;
        *(size_t *)field = (size_t)n;
        return 0;
    case K_NUM:
        if ((d = parse_num(f->name, val)) < 0) return -1;
        *(double *)field = d;
        return 0;
    case K_SERVER: return 0;
    }
    return -1;
}

static const struct flag_spec *find_flag(const char *name)
{
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (!strcmp(flags[i].name, name)) return &flags[i];
    return NULL;
}

/* Checks what no single flag can. Returns 0, or -1 after printing the problem. */
static int check(const struct lt_opts *o)
{
    if (!o->url || !*o->url) {
        fprintf(stderr, "loadtest: --test URL is required\n");
        return -1;
    }
    if (o->docs < 1) {
        fprintf(stderr, "loadtest: --docs must be at least 1\n");
        return -1;
    }
    if (o->change_bytes < LT_CHANGE_MIN || o->change_bytes > 16u << 20) {
        fprintf(stderr, "loadtest: --change-bytes must be between %d and %u\n", LT_CHANGE_MIN,
                16u << 20);
        return -1;
    }
    if (o->teachers + o->students < 1) {
        fprintf(stderr, "loadtest: no clients (--teachers and --students are 0)\n");
        return -1;
    }
    return 0;
}

int lt_opts_parse(int argc, char **argv, struct lt_opts *o)
{
    memset(o, 0, sizeof *o);
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        if (flags[i].def && set_value(o, &flags[i], flags[i].def)) return -1;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "-help")) {
            usage(stdout);
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
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const struct flag_spec *f = NULL;
        if (nlen < sizeof name) {
            memcpy(name, a, nlen);
            name[nlen] = 0;
            f = find_flag(name);
        }
        if (!f) {
            fprintf(stderr, "loadtest: unknown flag '%s'\n", argv[i]);
            goto bad;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (f->kind != K_BOOL && !val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "loadtest: %s needs a value\n", argv[i]);
                goto bad;
            }
            val = argv[++i];
        }
        if (set_value(o, f, val)) goto bad;
    }
    if (check(o)) goto bad;
    return 0;
bad:
    usage(stderr);
    return -1;
}
