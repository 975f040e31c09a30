/* loadtest: the bundled load tester (`zwibbler --test URL ...`, docs/load-testing.md).
 *
 * Simulated teachers append small timestamped changes and simulated students only
 * receive; the tester reports connections, document length and screen-to-screen
 * time live, then a summary with percentiles and a data check. Its flags, their
 * defaults and help are one table in loadtest_opts.c (`zwibbler --test --help`).
 * Screen-to-screen time runs from a teacher's send (the time is in the change's
 * first 6 bytes) to each other client's receipt, students and other teachers
 * alike. At the end (--duration or the first Ctrl-C) teachers stop, the tester
 * waits up to 10 s for every client to receive the last changes, then fetches each
 * document with a fresh client and checks that every client's bytes (length and
 * CRC-32) equal it; a second Ctrl-C skips that check.
 * It runs in a single thread on epoll, so it can hold tens of thousands of
 * connections; it raises its open-file soft limit to the hard limit at start.
 */
#ifndef ZW_LOADTEST_H
#define ZW_LOADTEST_H

/* Runs the tester. argv is the whole command line (the flags are found anywhere in
 * it, "--test" included). Returns the process exit code: 0 when the run had no
 * errors and the data check passed, 1 otherwise, 2 on bad flags. */
int loadtest_main(int argc, char **argv);

#endif
