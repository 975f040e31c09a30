/* loadtest_report: what the load tester prints: the live status line, the final
 * summary for people and the one-line JSON summary for scripts. */
#ifndef ZW_LOADTEST_REPORT_H
#define ZW_LOADTEST_REPORT_H

#include <stdio.h>

struct lt_run;

/* Outcome of a run, computed by the driver at the end. */
struct lt_result {
    double run_s;        /* length of the RUN phase */
    int expected;        /* clients asked for */
    int not_connected;   /* clients never connected (failed, or never started) */
    int checked;         /* clients whose bytes were compared with the document */
    int mismatched;      /* ... and differed */
    int docs_unchecked;  /* documents the checker could not fetch */
    int drain_timed_out; /* clients were still behind when the check started */
    int check_skipped;   /* a second Ctrl-C cut the run short */
    int interrupted;     /* Ctrl-C (SIGINT/SIGTERM) ended the run: a normal end */
    int not_started;     /* ... before these clients' connect times came */
    int data_ok;
    unsigned long long errors;
    int ok;
};

/* One status line (elapsed time, connections, document length, screen-to-screen
 * over the last interval); resets the interval's figures. */
void lt_report_status(struct lt_run *run, FILE *f);
void lt_report_summary(const struct lt_run *run, const struct lt_result *r, FILE *f);
void lt_report_json(const struct lt_run *run, const struct lt_result *r, FILE *f);

#endif
