/* store_conformance: the backend-independent test suite for store.h, in cmocka.
 *
 * Written once against store.h; every backend's unit test runs it:
 *
 *     static struct store *open_mine(void *ctx) { ... return store_xxx_open(&cfg, ...); }
 *     static void wipe_mine(void *ctx) { ... }        // optional
 *     struct store_conformance c = {"sqlite", open_mine, wipe_mine, &my_ctx, 0};
 *     failures += store_conformance_run(&c);
 *
 * Each test opens a store with open(ctx) in its setup and closes it in its teardown;
 * the persistence test also closes and opens again in the middle, so open() must
 * reach the same data every time (same directory, same Redis database). reset(ctx),
 * when given, is called before every open of a test's setup, with no store open, to
 * start from empty data; without it the suite still works, because every test uses
 * ids prefixed with the process id and a test number.
 *
 * Caveat: the sweep test calls sweep() with a clock far in the future, which deletes
 * every document of the store. Run the suite only on data dedicated to tests.
 *
 * What it covers: every method and error code, create/exists, reads from every kind
 * of offset, compare-length-and-append and its mismatch, binary ids (NUL bytes, ids
 * that prefix each other), delete removing keys and leaving nothing behind for a
 * re-created id, keys (compare-version, keys without a document row, early stop),
 * tokens (add/get/exists/expiry/replace/user_update), sweep of idle documents and
 * expired tokens, long ids (every size up to 64 KiB works, two 64 KiB ids differing in
 * their last byte are two documents, keys with 400-byte names on them), tokens too
 * long for the backend (STORE_EINVAL or working), persistence
 * across close and open, and from several threads at once: compare-and-append (one
 * winner per offset, the document equals the winners in order), readers during
 * appends (every read is a prefix), key version races and racing creates; listing
 * every document and live token (doc_list, token_list: batches, binary ids, early
 * stop, callbacks that call the store).
 */
#ifndef ZW_STORE_CONFORMANCE_H
#define ZW_STORE_CONFORMANCE_H

#include "store.h"

/* Backend expires documents and tokens by itself on the real clock (e.g. Redis TTLs),
 * so a sweep with a future clock cannot be expected to remove them: the sweep test
 * then checks only that sweep succeeds and removes nothing live. */
#define STORE_CONF_SELF_EXPIRING 1u

struct store_conformance {
    const char *name;                 /* names the cmocka group */
    struct store *(*open)(void *ctx); /* NULL on failure (the test fails) */
    void (*reset)(void *ctx);         /* may be NULL */
    void *ctx;
    unsigned flags; /* STORE_CONF_* */
};

/* Runs every test once. Returns the number of failed tests (0: all passed). */
int store_conformance_run(const struct store_conformance *backend);

#endif
