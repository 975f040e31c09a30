/* loadtest: the bundled load tester (`zwibbler --test URL ...`, docs/load-testing.md).
 *
 * Simulated teachers append small timestamped changes and simulated students only
 * receive; the tester reports connections, document length and screen-to-screen
 * time live, then a summary with percentiles and a data check. Flags (all optional
 * except --test URL):
 *   --docid ID            document id (default "loadtest"); with --docs K > 1 the
 *                         clients are spread over ID-0 .. ID-(K-1)
 *   --teachers N          clients that append (default 1)
 *   --students M          clients that only receive (default 10)
 *   --docs K              number of documents (default 1)
 *   --duration S          stop after S seconds, print the summary, exit 0 when
 *                         everything checked out and 1 otherwise (default: run
 *                         until Ctrl-C, which also prints the summary)
 *   --delay-ms D          mean interval between one teacher's changes (default 1000;
 *                         0 = the next change as soon as the previous one is ACKed)
 *   --change-bytes B      size of each change, at least 10 (default 10)
 *   --connect-spread-ms T connections are spread evenly over T ms (default 3000)
 *   --json                one JSON summary line on stdout; live lines go to stderr
 *   --tls-verify          verify the wss:// server certificate (default: not
 *                         verified, so self-signed test servers work)
 *   --verbose             log every connection event and error
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
