/* test_store_lmdb: runs the store conformance suite against LMDB in a fresh temporary directory,
 * then LMDB-specific tests: map growth, group commit, a large document, sweep in steps, last-access
 * touches, key-size limits, the long-id layout, store_open dispatch, kill -9 durability, and append
 * latency with sync on. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <openssl/sha.h>

#include "lmdb_store.h"
#include "mono.h"
#include "store.h"
#include "store_conformance.h"

static char tmp_root[64];

struct lctx {
    char dir[128];
    int nosync;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The store's log lines (store_config.log): counted by level and text, and still
 * shown on stderr. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned log_opened, log_map_grown, log_bad_level;

static void log_capture(void *arg, int level, const char *msg)
{
    (void)arg;
    pthread_mutex_lock(&log_lock);
    if (level == STORE_LOG_INFO && !strncmp(msg, "lmdb: opened ", 13)) log_opened++;
    if (level == STORE_LOG_INFO && !strncmp(msg, "lmdb: map is now ", 17)) log_map_grown++;
    if (level < STORE_LOG_DEBUG || level > STORE_LOG_ERROR || strchr(msg, '\n')) log_bad_level++;
    pthread_mutex_unlock(&log_lock);
    fprintf(stderr, "[store log %d] %s\n", level, msg);
}

static unsigned log_count(unsigned *counter)
{
    pthread_mutex_lock(&log_lock);
    unsigned n = *counter;
    pthread_mutex_unlock(&log_lock);
    return n;
}

static struct store *lmdb_open_ctx(void *p)
{
    struct lctx *c = p;
    struct store_config cfg = {
        .backend = "lmdb", .data_dir = c->dir, .nosync = c->nosync, .log = { log_capture, NULL }
    };
    char err[256];
    struct store *s = store_open(&cfg, err, sizeof err);
    if (!s) fprintf(stderr, "open: %s\n", err);
    return s;
}

static void lmdb_reset_ctx(void *p)
{
    struct lctx *c = p;
    rm_rf(c->dir);
}

static struct lctx ctx_nosync, ctx_sync;

static double now_s(void) { return (double)mono_ns() / 1e9; }

/* Document contents are a function of the offset, with a prime period so that chunk
 * boundaries never line up with it; fill and compare go by memcpy/memcmp (fast also
 * under TSan). */
#define PERIOD 65521
static uint8_t pattern[PERIOD];

static void pattern_init(void)
{
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < PERIOD; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        pattern[i] = (uint8_t)x;
    }
}

static void fill(uint8_t *buf, uint64_t off, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t at = (size_t)((off + done) % PERIOD), take = PERIOD - at;
        if (take > n - done) take = n - done;
        memcpy(buf + done, pattern + at, take);
        done += take;
    }
}

/* Returns the index of the first byte of buf that differs from the pattern, or n. */
static size_t mismatch(const uint8_t *buf, uint64_t off, size_t n)
{
    for (size_t done = 0; done < n;) {
        size_t at = (size_t)((off + done) % PERIOD), take = PERIOD - at;
        if (take > n - done) take = n - done;
        if (memcmp(buf + done, pattern + at, take) != 0)
            for (size_t i = 0;; i++)
                if (buf[done + i] != pattern[at + i]) return done + i;
        done += take;
    }
    return n;
}

/* Checks a read from off against the pattern. */
static void check_read(struct store *s, const char *id, uint64_t off, uint64_t total)
{
    uint8_t *data = NULL;
    size_t n = 0;
    uint64_t t = 0;
    assert_int_equal(store_doc_read(s, id, strlen(id), off, &data, &n, &t), STORE_OK);
    assert_int_equal(t, total);
    assert_int_equal(n, total - off);
    size_t bad = mismatch(data, off, n);
    free(data);
    if (bad != n) fail_msg("byte %llu differs", (unsigned long long)(off + bad));
}

static int setup_fresh(void **state)
{
    lmdb_reset_ctx(&ctx_nosync);
    *state = lmdb_open_ctx(&ctx_nosync);
    return *state ? 0 : -1;
}

static int teardown_store(void **state)
{
    store_close(*state);
    return 0;
}

struct reader_arg {
    struct store *s;
    int *stop;
    int errors;
    unsigned reads;
};

/* Reads a small document in a loop: read transactions racing the map resize. */
static void *reader_worker(void *p)
{
    struct reader_arg *a = p;
    while (!__atomic_load_n(a->stop, __ATOMIC_ACQUIRE)) {
        uint8_t *data = NULL;
        size_t n = 0;
        uint64_t len = 0;
        if (store_doc_read(a->s, "small", 5, 0, &data, &n, NULL) != STORE_OK || n != 5000)
            a->errors++;
        else if (mismatch(data, 0, n) != n)
            a->errors++;
        free(data);
        if (store_doc_length(a->s, "big", 3, &len) != STORE_OK) a->errors++;
        a->reads++;
    }
    return NULL;
}

/* ~80 MB in 1 MB appends: the 64 MiB initial map must grow, transparently, while
 * other threads keep reading. */
static void t_map_growth(void **state)
{
    struct store *s = *state;
    const size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    assert_non_null(buf);
    fill(buf, 0, 5000);
    assert_int_equal(store_doc_create(s, "small", 5, buf, 5000), STORE_OK);
    assert_int_equal(store_doc_create(s, "big", 3, NULL, 0), STORE_OK);
    unsigned grown_before = log_count(&log_map_grown);
    int stop = 0;
    struct reader_arg ra[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ra[i] = (struct reader_arg){ .s = s, .stop = &stop };
        assert_int_equal(pthread_create(&th[i], NULL, reader_worker, &ra[i]), 0);
    }
    uint64_t len = 0;
    for (int i = 0; i < 80; i++) {
        fill(buf, len, chunk);
        assert_int_equal(store_doc_append(s, "big", 3, len, buf, chunk, &len), STORE_OK);
    }
    free(buf);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    unsigned reads = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ra[i].errors, 0);
        reads += ra[i].reads;
    }
    print_message("      %u reads ran alongside the growth\n", reads);
    struct store_lmdb_stats st;
    store_lmdb_stats(s, &st);
    assert_true(st.map_resizes >= 1);
    assert_true(st.map_size > ((uint64_t)64 << 20));
    assert_int_equal(st.failed_commits, 0);
    /* each growth is logged through the configured callback */
    assert_int_equal(log_count(&log_map_grown) - grown_before, st.map_resizes);
    check_read(s, "big", len - 12345, len);
    check_read(s, "big", (uint64_t)40 << 20, len);
    print_message("      map grew %llu time(s) to %llu MiB\n", (unsigned long long)st.map_resizes,
                  (unsigned long long)(st.map_size >> 20));
    /* reopening keeps the grown map */
    store_close(s);
    *state = s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);
    assert_int_equal(store_doc_length(s, "big", 3, &len), STORE_OK);
    assert_int_equal(len, (uint64_t)80 << 20);
    check_read(s, "big", len - 1, len);
}

struct gc_arg {
    struct store *s;
    char id[16];
    int errors;
    pthread_barrier_t *barrier;
};

#define GC_THREADS 16
#define GC_APPENDS 20

static void *gc_worker(void *p)
{
    struct gc_arg *a = p;
    uint64_t len = 0;
    pthread_barrier_wait(a->barrier);
    for (int i = 0; i < GC_APPENDS; i++) {
        uint8_t buf[100];
        fill(buf, len, sizeof buf);
        if (store_doc_append(a->s, a->id, strlen(a->id), len, buf, sizeof buf, &len) != STORE_OK)
            a->errors++;
    }
    return NULL;
}

/* Durable store, many threads appending to their own documents: commits must carry
 * several appends each. */
static void t_group_commit(void **state)
{
    (void)state;
    lmdb_reset_ctx(&ctx_sync);
    struct store *s = lmdb_open_ctx(&ctx_sync);
    assert_non_null(s);
    struct gc_arg args[GC_THREADS];
    pthread_t th[GC_THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, GC_THREADS);
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (struct gc_arg){ .s = s, .barrier = &barrier };
        snprintf(args[i].id, sizeof args[i].id, "gc%d", i);
        assert_int_equal(store_doc_create(s, args[i].id, strlen(args[i].id), NULL, 0), STORE_OK);
    }
    struct store_lmdb_stats before, after;
    store_lmdb_stats(s, &before);
    double t0 = now_s();
    for (int i = 0; i < GC_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, gc_worker, &args[i]), 0);
    for (int i = 0; i < GC_THREADS; i++) pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    pthread_barrier_destroy(&barrier);
    store_lmdb_stats(s, &after);
    for (int i = 0; i < GC_THREADS; i++) {
        assert_int_equal(args[i].errors, 0);
        check_read(s, args[i].id, 0, 100 * GC_APPENDS);
    }
    uint64_t commits = after.commits - before.commits, ops = after.ops - before.ops;
    assert_true(ops >= GC_THREADS * GC_APPENDS);
    assert_true(after.max_batch > 1);
    assert_true(commits < ops);
    print_message("      %d durable appends from %d threads: %llu commits, max batch %llu, "
                  "%.0f appends/s, avg commit %.2f ms\n",
                  GC_THREADS * GC_APPENDS, GC_THREADS, (unsigned long long)commits,
                  (unsigned long long)after.max_batch, GC_THREADS * GC_APPENDS / dt,
                  (double)(after.commit_ns - before.commit_ns) / 1e6 / (double)commits);
    store_close(s);
}

/* A 20 MB document built from mixed appends, read from many offsets. */
static void t_large_doc(void **state)
{
    struct store *s = *state;
    const size_t total = 20u << 20;
    uint8_t *buf = malloc(total);
    assert_non_null(buf);
    fill(buf, 0, total);
    assert_int_equal(store_doc_create(s, "large", 5, buf, 3000), STORE_OK);
    uint64_t len = 3000;
    const size_t sizes[] = { 1 << 20, 777, 100000, 5, 3 << 20, 4096, 1 };
    for (int i = 0; len < total; i++) {
        size_t n = sizes[i % 7];
        if (n > total - len) n = total - len;
        assert_int_equal(store_doc_append(s, "large", 5, len, buf + len, n, &len), STORE_OK);
    }
    free(buf);
    const uint64_t offs[] = { 0,
                              1,
                              2999,
                              3000,
                              3001,
                              (1 << 20) + 2999,
                              (1 << 20) + 3000,
                              (1 << 20) + 3001,
                              total / 2,
                              total / 3 + 7,
                              total - 4097,
                              total - 1,
                              total };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++)
        check_read(s, "large", offs[i], total);
    /* a tail read is cheap: it copies only the tail */
    double t0 = now_s();
    for (int i = 0; i < 1000; i++) check_read(s, "large", total - 100, total);
    print_message("      20 MB document: reading its last 100 bytes takes %.1f us\n",
                  (now_s() - t0) * 1e3);
    assert_int_equal(store_doc_delete(s, "large", 5), STORE_OK);
}

/* Sweep works in steps: more documents than one step, more tokens than one step. */
static void t_sweep_steps(void **state)
{
    struct store *s = *state;
    int64_t now = time(NULL);
    char id[32];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(id, sizeof id, "sw%03d", i);
        assert_int_equal(store_doc_create(s, id, (size_t)n, (const uint8_t *)"data", 4), STORE_OK);
        assert_int_equal(
            store_key_set(s, id, (size_t)n, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1),
            STORE_OK);
    }
    for (int i = 0; i < 600; i++) {
        int n = snprintf(id, sizeof id, "tok%03d", i);
        struct store_token t = { .doc_id = "d",
                                 .doc_id_len = 1,
                                 .user_id = "u",
                                 .permissions = "rw",
                                 .expires = now + (i % 2 ? 100 : 100000) };
        assert_int_equal(store_token_add(s, id, (size_t)n, &t), STORE_OK);
    }
    struct store_lmdb_stats a, b;
    store_lmdb_stats(s, &a);
    uint64_t removed = 0;
    assert_int_equal(store_sweep(s, now + 1000, 500, &removed), STORE_OK);
    store_lmdb_stats(s, &b);
    assert_int_equal(removed, 300);
    /* 300 docs at 64 per step + 300 tokens at 256 per step: at least 7 commits */
    assert_true(b.commits - a.commits >= 7);
    uint64_t len;
    assert_int_equal(store_doc_length(s, "sw150", 5, &len), STORE_ENOTFOUND);
    for (int i = 0; i < 600; i++) {
        int n = snprintf(id, sizeof id, "tok%03d", i);
        struct store_token got;
        int rc = store_token_get(s, id, (size_t)n, &got);
        assert_int_equal(rc, i % 2 ? STORE_ENOTFOUND : STORE_OK);
        if (rc == STORE_OK) store_token_clear(&got);
    }
    /* swept tokens left no index behind: user_update touches only the live ones */
    assert_int_equal(store_user_update(s, "u", 1, "r"), STORE_OK);
    struct store_token got;
    assert_int_equal(store_token_get(s, "tok000", 6, &got), STORE_OK);
    assert_string_equal(got.permissions, "r");
    store_token_clear(&got);
}

/* Sets a document's stored last access, straight through LMDB with the store closed
 * (the layout is in lmdb_store.c: docs DB, 32-byte header, last access at 24). */
static void set_last_access(const char *dir, const char *id, int64_t when)
{
    char path[256];
    snprintf(path, sizeof path, "%s/lmdb", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, MDB_NOTLS, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "docs", 0, &dbi), 0);
    MDB_val k = { strlen(id), (void *)id }, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, 32);
    uint8_t hdr[32];
    memcpy(hdr, v.mv_data, 32);
    for (int i = 0; i < 8; i++) hdr[24 + i] = (uint8_t)((uint64_t)when >> (56 - 8 * i));
    v.mv_data = hdr;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Reads refresh last access without a commit of their own right away: the touch is
 * committed within about a second (or at close), and then protects the document
 * from the sweep. */
static void t_touch(void **state)
{
    struct store *s = *state;
    int64_t now = time(NULL);
    assert_int_equal(store_doc_create(s, "read", 4, (const uint8_t *)"r", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, "lenq", 4, (const uint8_t *)"l", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, "cold", 4, (const uint8_t *)"c", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, "late", 4, (const uint8_t *)"t", 1), STORE_OK);
    store_close(s);
    *state = NULL;
    set_last_access(ctx_nosync.dir, "read", now - 7200);
    set_last_access(ctx_nosync.dir, "lenq", now - 7200);
    set_last_access(ctx_nosync.dir, "cold", now - 7200);
    set_last_access(ctx_nosync.dir, "late", now - 7200);
    *state = s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);

    struct store_lmdb_stats a, b;
    store_lmdb_stats(s, &a);
    uint8_t *data;
    size_t n;
    uint64_t len;
    assert_int_equal(store_doc_read(s, "read", 4, 0, &data, &n, NULL), STORE_OK);
    free(data);
    assert_int_equal(store_doc_length(s, "lenq", 4, &len), STORE_OK);
    store_lmdb_stats(s, &b);
    assert_int_equal(b.commits, a.commits); /* the reader did not wait for a commit */
    usleep(1500 * 1000);
    store_lmdb_stats(s, &b);
    assert_int_equal(b.commits, a.commits + 1); /* ...which came on its own, once */
    assert_int_equal(b.ops, a.ops + 2);
    /* a touch still pending at close is written too */
    assert_int_equal(store_doc_length(s, "late", 4, &len), STORE_OK);
    store_close(s);
    *state = s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);

    uint64_t removed = 0;
    assert_int_equal(store_sweep(s, now, 3600, &removed), STORE_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(store_doc_length(s, "cold", 4, &len), STORE_ENOTFOUND);
    assert_int_equal(store_doc_length(s, "read", 4, &len), STORE_OK);
    assert_int_equal(store_doc_length(s, "lenq", 4, &len), STORE_OK);
    assert_int_equal(store_doc_length(s, "late", 4, &len), STORE_OK);
}

/* LMDB's 511-byte key limit: ids of any length (hashed past it), key names up to
 * 477 bytes for any id (stored under the id's hash when id + name do not fit). */
static void t_limits(void **state)
{
    struct store *s = *state;
    static char big[70000];
    memset(big, 'i', sizeof big);
    uint64_t len;
    assert_int_equal(store_doc_create(s, big, 511, (const uint8_t *)"x", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, big, 512, (const uint8_t *)"yy", 2), STORE_OK);
    assert_int_equal(store_doc_length(s, big, 511, &len), STORE_OK);
    assert_int_equal(len, 1);
    assert_int_equal(store_doc_length(s, big, 512, &len), STORE_OK);
    assert_int_equal(len, 2);
    assert_int_equal(store_doc_length(s, big, 513, &len), STORE_ENOTFOUND);
    assert_int_equal(store_doc_create(s, "", 0, NULL, 0), STORE_EINVAL);
    assert_int_equal(store_key_set(s, big, 100, (const uint8_t *)big, 409, NULL, 0, 0, 1),
                     STORE_OK);
    assert_int_equal(store_key_set(s, big, 100, (const uint8_t *)big, 410, NULL, 0, 0, 1),
                     STORE_OK);
    assert_int_equal(store_key_set(s, big, 65536, (const uint8_t *)big, 477, NULL, 0, 0, 1),
                     STORE_OK);
    assert_int_equal(store_key_set(s, big, 100, (const uint8_t *)big, 478, NULL, 0, 0, 1),
                     STORE_EINVAL);
    struct store_token t = { .doc_id = "d",
                             .doc_id_len = 1,
                             .user_id = "u",
                             .permissions = "rw",
                             .expires = time(NULL) + 100 };
    assert_int_equal(store_token_add(s, big, 504, &t), STORE_EINVAL); /* expiry key 8 + 504 */
    assert_int_equal(store_token_add(s, big, 503, &t), STORE_OK);
    char user[520];
    memset(user, 'u', 508);
    user[508] = 0;
    t.user_id = user; /* user index key 2 + 508 + 2 */
    assert_int_equal(store_token_add(s, "tk", 2, &t), STORE_EINVAL);
    user[507] = 0;
    assert_int_equal(store_token_add(s, "tk", 2, &t), STORE_OK);
    t.user_id = "u";
    struct store_token bad = t;
    memcpy(bad.permissions, "rwarwar", 8);
    assert_int_equal(store_token_add(s, "p", 1, &bad), STORE_OK);
    memcpy(bad.permissions, "rwarwarw", 8); /* not terminated within 8 */
    assert_int_equal(store_token_add(s, "q", 1, &bad), STORE_EINVAL);
    assert_int_equal(store_user_update(s, "u", 1, "rwarwarw"), STORE_EINVAL);
}

/* Short ids keep the layout LMDB stores always had (data written before long ids
 * existed reads the same); a long id lives under its SHA-256 with the full id beside
 * the header, and a record whose id differs (a hash clash) is refused, not served. */
static void t_long_id_layout(void **state)
{
    (void)state;
    lmdb_reset_ctx(&ctx_nosync);
    struct store *s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);
    static char a[1000], b[1000];
    memset(a, 'a', sizeof a);
    memset(b, 'b', sizeof b);
    assert_int_equal(store_doc_create(s, "short", 5, (const uint8_t *)"S", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, a, sizeof a, (const uint8_t *)"A", 1), STORE_OK);
    assert_int_equal(store_doc_create(s, b, sizeof b, (const uint8_t *)"B", 1), STORE_OK);
    store_close(s);

    char path[200];
    snprintf(path, sizeof path, "%s/lmdb", ctx_nosync.dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi docs, longdocs;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "docs", 0, &docs), 0);
    assert_int_equal(mdb_dbi_open(txn, "longdocs", 0, &longdocs), 0);
    MDB_val k = { 5, "short" }, v;
    assert_int_equal(mdb_get(txn, docs, &k, &v), 0);
    assert_int_equal(v.mv_size, 32);
    uint8_t ha[32], hb[32];
    SHA256((const unsigned char *)a, sizeof a, ha);
    SHA256((const unsigned char *)b, sizeof b, hb);
    MDB_val ka = { 32, ha }, kb = { 32, hb }, va, vb;
    assert_int_equal(mdb_get(txn, longdocs, &ka, &va), 0);
    assert_int_equal(va.mv_size, 32 + sizeof a);
    assert_memory_equal((uint8_t *)va.mv_data + 32, a, sizeof a);
    /* Fake a clash: a's hash now holds b's record. */
    assert_int_equal(mdb_get(txn, longdocs, &kb, &vb), 0);
    static uint8_t rec[32 + sizeof b];
    memcpy(rec, vb.mv_data, sizeof rec);
    MDB_val nv = { sizeof rec, rec };
    assert_int_equal(mdb_put(txn, longdocs, &ka, &nv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);
    uint64_t len;
    uint8_t *data = NULL;
    size_t n = 0;
    assert_int_equal(store_doc_length(s, a, sizeof a, &len), STORE_EIO);
    assert_int_equal(store_doc_read(s, a, sizeof a, 0, &data, &n, NULL), STORE_EIO);
    assert_int_equal(store_doc_append(s, a, sizeof a, 1, (const uint8_t *)"!", 1, NULL), STORE_EIO);
    assert_int_equal(store_doc_create(s, a, sizeof a, (const uint8_t *)"!", 1), STORE_EIO);
    /* the store goes on serving the others */
    assert_int_equal(store_doc_append(s, b, sizeof b, 1, (const uint8_t *)"b", 1, &len), STORE_OK);
    assert_int_equal(len, 2);
    assert_int_equal(store_doc_length(s, "short", 5, &len), STORE_OK);
    store_close(s);
}

static void t_open_dispatch(void **state)
{
    (void)state;
    char err[256] = "";
    struct store_config cfg = { .backend = "nosuch", .data_dir = ctx_nosync.dir };
    assert_null(store_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "nosuch"));
    cfg.backend = "lmdb";
    cfg.data_dir = NULL;
    err[0] = 0;
    assert_null(store_open(&cfg, err, sizeof err));
    assert_true(err[0] != 0);
    /* nested directories are created */
    char dir[256];
    snprintf(dir, sizeof dir, "%s/nested/deeper", tmp_root);
    cfg.data_dir = dir;
    struct store *s = store_open(&cfg, err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s->methods->name, "lmdb");
    assert_int_equal(store_ping(s), STORE_OK);
    struct store_lmdb_stats st;
    store_lmdb_stats(s, &st);
    assert_true(st.map_size >= ((uint64_t)64 << 20));
    store_close(s);
    store_close(NULL);
}

/* Log lines go through store_config.log when set, whole and at their level; without
 * it, to stderr. */
static void t_log(void **state)
{
    (void)state;
    lmdb_reset_ctx(&ctx_nosync);
    unsigned opened = log_count(&log_opened);
    struct store *s = lmdb_open_ctx(&ctx_nosync);
    assert_non_null(s);
    assert_int_equal(log_count(&log_opened), opened + 1);
    store_close(s);

    char path[128];
    snprintf(path, sizeof path, "%s/stderr.txt", tmp_root);
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    struct store_config cfg = { .backend = "lmdb", .data_dir = ctx_nosync.dir, .nosync = 1 };
    char err[256];
    s = store_open(&cfg, err, sizeof err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    assert_non_null(s);
    store_close(s);
    assert_int_equal(log_count(&log_opened), opened + 1); /* not through the callback */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_non_null(strstr(line, "INFO"));
    assert_non_null(strstr(line, "lmdb: opened "));
    assert_int_equal(log_count(&log_bad_level), 0);
}

/* A child appends durably and reports each acknowledged length; it is killed with
 * SIGKILL mid-stream. Every acknowledged byte must survive and the store must open. */
static void t_kill9(void **state)
{
    (void)state;
    lmdb_reset_ctx(&ctx_sync);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct store *s = lmdb_open_ctx(&ctx_sync);
        if (!s) _exit(2);
        if (store_doc_create(s, "crash", 5, NULL, 0) != STORE_OK) _exit(3);
        uint64_t len = 0;
        for (;;) {
            uint8_t buf[3000];
            size_t n = 1 + len % 2999;
            fill(buf, len, n);
            if (store_doc_append(s, "crash", 5, len, buf, n, &len) != STORE_OK) _exit(4);
            if (write(fds[1], &len, sizeof len) != sizeof len) _exit(5);
        }
    }
    close(fds[1]);
    uint64_t acked = 0, v;
    int acks = 0;
    for (; acks < 150; acks++) {
        if (read(fds[0], &v, sizeof v) != sizeof v) break;
        acked = v;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(fds[0], &v, sizeof v) == sizeof v) { /* acks sent before death */
        acked = v;
        acks++;
    }
    close(fds[0]);
    assert_true(WIFSIGNALED(status));
    assert_true(acked > 0);
    struct store *s = lmdb_open_ctx(&ctx_sync);
    assert_non_null(s);
    uint64_t len;
    assert_int_equal(store_doc_length(s, "crash", 5, &len), STORE_OK);
    assert_true(len >= acked);
    check_read(s, "crash", 0, len);
    print_message("      killed after %d acknowledged appends (%llu bytes); %llu bytes on disk\n",
                  acks, (unsigned long long)acked, (unsigned long long)len);
    store_close(s);
}

static int dbl_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Append latency with sync on: empty document vs 20 MB document. One thread, so each
 * append is its own commit (one fsync). Alternating the two and taking medians keeps
 * disk noise (other processes syncing) out of the comparison. */
static void t_latency(void **state)
{
    (void)state;
    lmdb_reset_ctx(&ctx_sync);
    struct store *s = lmdb_open_ctx(&ctx_sync);
    assert_non_null(s);
    const size_t big = 20u << 20;
    uint8_t *buf = malloc(big);
    assert_non_null(buf);
    fill(buf, 0, big);
    assert_int_equal(store_doc_create(s, "small", 5, NULL, 0), STORE_OK);
    assert_int_equal(store_doc_create(s, "huge", 4, buf, big), STORE_OK);
    free(buf);
    enum { ROUNDS = 100 };
    static double lat[2][ROUNDS];
    const char *ids[2] = { "small", "huge" };
    uint64_t len[2] = { 0, big };
    for (int i = 0; i < ROUNDS; i++) {
        for (int d = 0; d < 2; d++) {
            uint8_t b[100];
            fill(b, len[d], sizeof b);
            double t0 = now_s();
            assert_int_equal(
                store_doc_append(s, ids[d], strlen(ids[d]), len[d], b, sizeof b, &len[d]),
                STORE_OK);
            lat[d][i] = (now_s() - t0) * 1e6;
        }
    }
    for (int d = 0; d < 2; d++) {
        check_read(s, ids[d], len[d] - 1000, len[d]);
        qsort(lat[d], ROUNDS, sizeof lat[d][0], dbl_cmp);
    }
    print_message(
        "      durable 100-byte append, one thread (median / p90 us): empty doc %.0f / %.0f,"
        " 20 MB doc %.0f / %.0f\n",
        lat[0][ROUNDS / 2], lat[0][ROUNDS * 9 / 10], lat[1][ROUNDS / 2], lat[1][ROUNDS * 9 / 10]);
    /* bounded: rewriting 20 MB would cost tens of milliseconds per append */
    assert_true(lat[1][ROUNDS / 2] < lat[0][ROUNDS / 2] * 3 + 3000);
    store_close(s);
}

int main(void)
{
    pattern_init();
    snprintf(tmp_root, sizeof tmp_root, "/tmp/zw-lmdb-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(ctx_nosync.dir, sizeof ctx_nosync.dir, "%s/nosync", tmp_root);
    ctx_nosync.nosync = 1;
    snprintf(ctx_sync.dir, sizeof ctx_sync.dir, "%s/sync", tmp_root);
    ctx_sync.nosync = 0;

    struct store_conformance conf = { "lmdb", lmdb_open_ctx, lmdb_reset_ctx, &ctx_nosync, 0 };
    int failed = store_conformance_run(&conf);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(t_map_growth, setup_fresh, teardown_store),
        cmocka_unit_test(t_group_commit),
        cmocka_unit_test_setup_teardown(t_large_doc, setup_fresh, teardown_store),
        cmocka_unit_test_setup_teardown(t_sweep_steps, setup_fresh, teardown_store),
        cmocka_unit_test_setup_teardown(t_touch, setup_fresh, teardown_store),
        cmocka_unit_test_setup_teardown(t_limits, setup_fresh, teardown_store),
        cmocka_unit_test(t_long_id_layout),
        cmocka_unit_test(t_open_dispatch),
        cmocka_unit_test(t_log),
        cmocka_unit_test(t_kill9),
        cmocka_unit_test(t_latency),
    };
    failed += cmocka_run_group_tests_name("lmdb backend", tests, NULL, NULL);
    rm_rf(tmp_root);
    return failed ? 1 : 0;
}
