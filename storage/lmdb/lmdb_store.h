/* lmdb_store: what the LMDB backend offers beyond store.h — its commit statistics.
 *
 * The backend itself is opened with store_lmdb_open() (store.h). Facts a caller may
 * need to know:
 *
 * - Files live in <data_dir>/lmdb/ (created, with data_dir, when missing). One process
 *   at a time: the map is grown in-process, other processes would not know.
 * - Every write (doc_create, doc_append, doc_delete, key_set, token_add, user_update,
 *   the write half of sweep) is queued to one committer thread that runs everything
 *   pending in one write transaction and commits once (one fsync): group commit.
 *   Each operation keeps its own check (compare-length, compare-version, existence),
 *   evaluated in queue order inside that transaction. Callers return after the commit;
 *   when a commit fails every operation in it gets STORE_EIO.
 * - Durable unless store_config.nosync is set (tests and benchmarks only).
 * - Last access is refreshed by reads at most every 10 seconds per document, through
 *   the committer without making the reader wait; expiry is therefore exact to about
 *   10 seconds.
 * - Document ids of any length from 1 byte: ids over LMDB's 511-byte key size are
 *   keyed by their SHA-256, the full id kept in the record and compared on every
 *   access (a second id with the same hash gets STORE_EIO, never the first one's data).
 * - Limits from LMDB's 511-byte key size; beyond them every call returns STORE_EINVAL:
 *   key names up to 477 bytes with any id; tokens 1..503 bytes; 2 + user id + token
 *   <= 511; permissions at most 7 letters.
 */
#ifndef ZW_LMDB_STORE_H
#define ZW_LMDB_STORE_H

#include <stdint.h>

#include "store.h"

#define STORE_LMDB_HIST 16
#define STORE_LMDB_LAT_HIST 24

/* Counters since open. Thread-safe snapshot. */
struct store_lmdb_stats {
    uint64_t commits;        /* write transactions committed */
    uint64_t ops;            /* operations in committed transactions (touches included) */
    uint64_t max_batch;      /* most operations in one commit */
    uint64_t commit_ns;      /* total nanoseconds from txn begin to durable commit */
    uint64_t max_commit_ns;  /* longest single commit */
    uint64_t failed_commits; /* batches answered with STORE_EIO */
    uint64_t map_resizes;    /* times the map was grown after MDB_MAP_FULL */
    uint64_t map_size;       /* current map size in bytes */
    /* batch_hist[i]: commits of 2^i .. 2^(i+1)-1 operations (last bucket: and more) */
    uint64_t batch_hist[STORE_LMDB_HIST];
    /* commit_hist[i]: commits that took less than 2^i microseconds (and at least
     * 2^(i-1)); the last bucket: the rest. Same span as commit_ns. */
    uint64_t commit_hist[STORE_LMDB_LAT_HIST];
};

/* Fills *out. When s is not an LMDB store, *out is zeroed. */
ZW_PUBLIC void store_lmdb_stats(struct store *s, struct store_lmdb_stats *out);

#endif
