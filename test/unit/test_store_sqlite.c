/* test_store_sqlite: the SQLite backend — the shared conformance suite, plus what only this backend
 * has: files laid out exactly as the reference server's zwibbler.db (docs/protocol.md, Storage
 * layouts) read and written, blobs kept binary, a database locked by another process ridden out,
 * and (STORE_BENCH=1) the append cost on large documents. */
#include "mono.h"
#include "store.h"
#include "store_conformance.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char base_dir[64];
static char conf_dir[128]; /* the conformance suite's data */

/* The reference server's schema, as it runs it at start (sqlitedb.go), with the
 * PRAGMA in front. */
static const char REF_SCHEMA[] =
    "PRAGMA foreign_keys=ON;\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS ZwibblerDocs (\n"
    "\tdocid TEXT PRIMARY KEY, \n"
    "\tlastAccess INTEGER,\n"
    "\tdata BLOB\n"
    ");\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS ZwibblerKeys (\n"
    "\tdocID TEXT,\n"
    "\tname TEXT,\n"
    "\tvalue TEXT,\n"
    "\tversion NUMBER,\n"
    "\tUNIQUE(docID, name),\n"
    "\tFOREIGN KEY (docID) REFERENCES ZwibblerDocs(docID) ON DELETE CASCADE\n"
    ");\n"
    "\n"
    "CREATE TABLE IF NOT EXISTS ZwibblerTokens (\n"
    "\ttokenID TEXT UNIQUE,\n"
    "\tdocID TEXT,\n"
    "\tuserID TEXT,\n"
    "\tpermissions TEXT,\n"
    "\texpiration INTEGER\n"
    ");\n"
    "\n"
    "CREATE INDEX IF NOT EXISTS ZwibblerTokenUserIndex ON ZwibblerTokens(userID);\n";

static void rm_db(const char *dir)
{
    char p[256];
    const char *suffix[] = { "", "-wal", "-shm", "-journal" };
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/zwibbler.db%s", dir, suffix[i]);
        unlink(p);
    }
}

static struct store *open_dir(const char *dir, int nosync)
{
    struct store_config cfg = { .backend = "sqlite", .data_dir = dir, .nosync = nosync };
    char err[256] = "";
    struct store *s = store_sqlite_open(&cfg, err, sizeof err);
    if (!s) fprintf(stderr, "open %s: %s\n", dir, err);
    return s;
}

static struct store *conf_open(void *ctx) { return open_dir(ctx, 0); }
static void conf_reset(void *ctx) { rm_db(ctx); }

/* A raw connection to <dir>/zwibbler.db, as another program would have. */
static sqlite3 *raw_open(const char *dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/zwibbler.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
}

/* Runs a query expected to give one row; returns its column 0 as text (static). */
static const char *raw_text(sqlite3 *db, const char *sql)
{
    static char out[4096];
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) fail_msg("%s: no row (%d)", sql, rc);
    const unsigned char *t = sqlite3_column_text(st, 0);
    snprintf(out, sizeof out, "%s", t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
    return out;
}

static void make_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", base_dir, name);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", out);
    assert_int_equal(system(cmd), 0);
    rm_db(out);
}

struct keys_seen {
    int n;
    char name[8][32];
    size_t name_len[8];
    char value[8][64];
    size_t value_len[8];
    uint32_t version[8];
};

static int see_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                   size_t value_len, uint32_t version)
{
    struct keys_seen *k = arg;
    if (k->n < 8 && name_len < 32 && value_len < 64) {
        memcpy(k->name[k->n], name, name_len);
        k->name_len[k->n] = name_len;
        memcpy(k->value[k->n], value, value_len);
        k->value_len[k->n] = value_len;
        k->version[k->n] = version;
    }
    k->n++;
    return 0;
}

static const uint8_t BIN[] = { 'a', 0, 0xff, 0xfe, 0xc3, 0x28, 0x80, 'z', 0, 0xed, 0xa0, 0x80 };

/* A zwibbler.db written the way the reference writes it (its schema, Go's bindings:
 * []byte as BLOB, strings as TEXT, ints as INTEGER) is served by our backend. */
static void t_reads_reference_file(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "ref");
    sqlite3 *db = raw_open(dir);
    raw_exec(db, "PRAGMA journal_mode=WAL;");
    raw_exec(db, REF_SCHEMA);
    int64_t now = time(NULL);
    sqlite3_stmt *st;
    /* documents */
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO ZwibblerDocs (docid, lastAccess, data) "
                                        "VALUES (?, ?, ?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    struct {
        const char *id;
        const void *data;
        int len;
        int64_t last;
    } docs[] = {
        { "plain", "hello world", 11, now },
        { "binary", BIN, (int)sizeof BIN, now },
        { "empty", "", 0, now },
        { "old", "stale", 5, now - 100000 },
    };
    for (size_t i = 0; i < 4; i++) {
        sqlite3_bind_text(st, 1, docs[i].id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, docs[i].last);
        sqlite3_bind_blob(st, 3, docs[i].len ? docs[i].data : "", docs[i].len, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    /* an empty []byte that went in as NULL, and text written by some other tool */
    raw_exec(db,
             "INSERT INTO ZwibblerDocs VALUES ('nulldoc', strftime('%s','now'), NULL);"
             "INSERT INTO ZwibblerDocs VALUES ('textdoc', strftime('%s','now'), 'caf\xc3\xa9');");
    /* keys */
    raw_exec(db, "INSERT INTO ZwibblerKeys(docID, name, value, version) VALUES "
                 "('plain', 'page', '3', 7), ('plain', 'admin:lock', '{\"by\":\"x\"}', 2),"
                 "('old', 'k', 'v', 1);");
    /* tokens */
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO ZwibblerTokens(tokenID, docID, userID, permissions, expiration) VALUES "
             "('tok-live', 'plain', 'alice', 'rw', %lld), ('tok-ro', 'binary', 'alice', 'r', %lld),"
             "('tok-dead', 'plain', 'bob', 'rwa', %lld);",
             (long long)now + 3600, (long long)now + 7200, (long long)now - 5);
    raw_exec(db, sql);
    sqlite3_close(db);

    struct store *s = open_dir(dir, 0);
    assert_non_null(s);
    uint64_t len;
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_length(s, "plain", 5, &len), STORE_OK);
    assert_int_equal(len, 11);
    assert_int_equal(store_doc_read(s, "plain", 5, 6, &data, &n, &len), STORE_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "world", 5);
    free(data);
    assert_int_equal(store_doc_read(s, "binary", 6, 0, &data, &n, NULL), STORE_OK);
    assert_int_equal(n, sizeof BIN);
    assert_memory_equal(data, BIN, sizeof BIN);
    free(data);
    assert_int_equal(store_doc_length(s, "empty", 5, &len), STORE_OK);
    assert_int_equal(len, 0);
    assert_int_equal(store_doc_length(s, "nulldoc", 7, &len), STORE_OK);
    assert_int_equal(len, 0);
    /* length of TEXT is its bytes, not its characters */
    assert_int_equal(store_doc_length(s, "textdoc", 7, &len), STORE_OK);
    assert_int_equal(len, 5);
    assert_int_equal(store_doc_append(s, "textdoc", 7, 5, (const uint8_t *)"\0!", 2, &len),
                     STORE_OK);
    assert_int_equal(len, 7);
    assert_int_equal(store_doc_append(s, "nulldoc", 7, 0, BIN, sizeof BIN, &len), STORE_OK);
    assert_int_equal(len, sizeof BIN);
    assert_int_equal(store_doc_read(s, "nulldoc", 7, 0, &data, &n, NULL), STORE_OK);
    assert_int_equal(n, sizeof BIN);
    assert_memory_equal(data, BIN, sizeof BIN);
    free(data);
    /* keys */
    struct keys_seen k = { 0 };
    assert_int_equal(store_keys_get(s, "plain", 5, see_key, &k), STORE_OK);
    assert_int_equal(k.n, 2);
    for (int i = 0; i < 2; i++) {
        if (k.name_len[i] == 4) {
            assert_memory_equal(k.name[i], "page", 4);
            assert_int_equal(k.version[i], 7);
            assert_int_equal(k.value_len[i], 1);
            assert_memory_equal(k.value[i], "3", 1);
        } else {
            assert_int_equal(k.name_len[i], 10);
            assert_int_equal(k.version[i], 2);
        }
    }
    assert_int_equal(
        store_key_set(s, "plain", 5, (const uint8_t *)"page", 4, (const uint8_t *)"4", 1, 6, 8),
        STORE_EMISMATCH);
    assert_int_equal(
        store_key_set(s, "plain", 5, (const uint8_t *)"page", 4, (const uint8_t *)"4", 1, 7, 8),
        STORE_OK);
    /* tokens */
    struct store_token t;
    assert_int_equal(store_token_get(s, "tok-live", 8, &t), STORE_OK);
    assert_int_equal(t.doc_id_len, 5);
    assert_memory_equal(t.doc_id, "plain", 5);
    assert_string_equal(t.user_id, "alice");
    assert_string_equal(t.permissions, "rw");
    assert_int_equal(t.expires, now + 3600);
    store_token_clear(&t);
    assert_int_equal(store_token_get(s, "tok-dead", 8, &t), STORE_ENOTFOUND);
    assert_int_equal(store_user_update(s, "alice", 5, "r"), STORE_OK);
    assert_int_equal(store_token_get(s, "tok-ro", 6, &t), STORE_OK);
    assert_string_equal(t.permissions, "r");
    store_token_clear(&t);
    /* expiry by lastAccess, as the reference's clean() */
    uint64_t removed = 0;
    assert_int_equal(store_sweep(s, now, 86400, &removed), STORE_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(store_doc_length(s, "old", 3, &len), STORE_ENOTFOUND);
    assert_int_equal(store_doc_length(s, "plain", 5, &len), STORE_OK);
    store_close(s);

    /* after us, the reference's view: same rows, data still BLOB, the old doc's keys
     * gone with it, the dead token swept */
    db = raw_open(dir);
    assert_string_equal(raw_text(db, "SELECT count(*) FROM ZwibblerKeys WHERE docID='old'"), "0");
    assert_string_equal(raw_text(db, "SELECT count(*) FROM ZwibblerTokens"), "2");
    assert_string_equal(raw_text(db, "SELECT typeof(data) FROM ZwibblerDocs WHERE docid='textdoc'"),
                        "blob");
    assert_string_equal(raw_text(db, "SELECT hex(data) FROM ZwibblerDocs WHERE docid='textdoc'"),
                        "636166C3A90021");
    assert_string_equal(raw_text(db, "SELECT value || '/' || version || '/' || typeof(version) "
                                     "FROM ZwibblerKeys WHERE docID='plain' AND name='page'"),
                        "4/8/integer");
    sqlite3_close(db);
}

/* What we write is what the reference would have written. */
static void t_writes_reference_layout(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "layout");
    struct store *s = open_dir(dir, 0);
    assert_non_null(s);
    int64_t now = time(NULL);
    uint64_t len;
    assert_int_equal(store_doc_create(s, "d1", 2, BIN, 4), STORE_OK);
    assert_int_equal(store_doc_append(s, "d1", 2, 4, BIN + 4, sizeof BIN - 4, &len), STORE_OK);
    assert_int_equal(store_doc_create(s, "d-empty", 7, NULL, 0), STORE_OK);
    assert_int_equal(
        store_key_set(s, "d1", 2, (const uint8_t *)"page", 4, (const uint8_t *)"12", 2, 0, 5),
        STORE_OK);
    struct store_token t = { .doc_id = "d1",
                             .doc_id_len = 2,
                             .user_id = "carol",
                             .permissions = "rwa",
                             .expires = now + 60 };
    assert_int_equal(store_token_add(s, "tk", 2, &t), STORE_OK);
    store_close(s);

    sqlite3 *db = raw_open(dir);
    /* the tables are the reference's, statement for statement */
    const char *want[][2] = {
        { "ZwibblerDocs", "CREATE TABLE ZwibblerDocs (\n\tdocid TEXT PRIMARY KEY, \n\tlastAccess "
                          "INTEGER,\n\tdata BLOB\n)" },
        { "ZwibblerKeys", "CREATE TABLE ZwibblerKeys (\n\tdocID TEXT,\n\tname TEXT,\n\tvalue TEXT,"
                          "\n\tversion NUMBER,\n\tUNIQUE(docID, name),\n\tFOREIGN KEY (docID) "
                          "REFERENCES ZwibblerDocs(docID) ON DELETE CASCADE\n)" },
        { "ZwibblerTokens", "CREATE TABLE ZwibblerTokens (\n\ttokenID TEXT UNIQUE,\n\tdocID TEXT,"
                            "\n\tuserID TEXT,\n\tpermissions TEXT,\n\texpiration INTEGER\n)" },
        { "ZwibblerTokenUserIndex",
          "CREATE INDEX ZwibblerTokenUserIndex ON ZwibblerTokens(userID)" },
    };
    for (size_t i = 0; i < 4; i++) {
        char q[200];
        snprintf(q, sizeof q, "SELECT sql FROM sqlite_master WHERE name='%s'", want[i][0]);
        assert_string_equal(raw_text(db, q), want[i][1]);
    }
    assert_string_equal(raw_text(db, "SELECT count(*) FROM sqlite_master WHERE sql IS NOT NULL"),
                        "4");
    assert_string_equal(raw_text(db, "PRAGMA journal_mode"), "wal");
    assert_string_equal(raw_text(db, "SELECT typeof(docid) || ' ' || typeof(lastAccess) || ' ' || "
                                     "typeof(data) || ' ' || hex(data) FROM ZwibblerDocs "
                                     "WHERE docid='d1'"),
                        "text integer blob 6100FFFEC328807A00EDA080");
    assert_string_equal(raw_text(db, "SELECT typeof(data) || length(data) FROM ZwibblerDocs "
                                     "WHERE docid='d-empty'"),
                        "blob0");
    long long last = atoll(raw_text(db, "SELECT lastAccess FROM ZwibblerDocs WHERE docid='d1'"));
    assert_true(last >= now && last <= now + 5);
    assert_string_equal(raw_text(db, "SELECT typeof(docID) || typeof(name) || typeof(value) || "
                                     "typeof(version) || ':' || docID || name || value || version "
                                     "FROM ZwibblerKeys"),
                        "texttexttextinteger:d1page125");
    char q[300];
    snprintf(q, sizeof q,
             "SELECT tokenID || docID || userID || permissions || "
             "(expiration = %lld) || typeof(expiration) FROM ZwibblerTokens",
             (long long)now + 60);
    assert_string_equal(raw_text(db, q), "tkd1carolrwa1integer");
    /* the reference's own queries find our rows (it binds Go strings as TEXT) */
    assert_string_equal(raw_text(db, "SELECT docID FROM ZwibblerTokens WHERE tokenID='tk' "
                                     "AND expiration > strftime('%s','now')"),
                        "d1");
    sqlite3_close(db);
}

/* Another process holding the write lock for a while: our writes wait and succeed. */
struct locker {
    const char *dir;
    pthread_barrier_t *locked;
};

static void *hold_lock(void *p)
{
    struct locker *l = p;
    sqlite3 *db = raw_open(l->dir);
    raw_exec(db, "BEGIN IMMEDIATE; UPDATE ZwibblerDocs SET lastAccess=lastAccess;");
    pthread_barrier_wait(l->locked);
    sleep(2);
    raw_exec(db, "COMMIT");
    sqlite3_close(db);
    return NULL;
}

static void t_busy_database(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "busy");
    struct store *s = open_dir(dir, 0);
    assert_non_null(s);
    assert_int_equal(store_doc_create(s, "d", 1, (const uint8_t *)"x", 1), STORE_OK);
    pthread_barrier_t b;
    pthread_barrier_init(&b, NULL, 2);
    struct locker l = { dir, &b };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hold_lock, &l), 0);
    pthread_barrier_wait(&b);
    uint64_t len;
    /* reads go on under WAL while the other holds the write lock */
    assert_int_equal(store_doc_length(s, "d", 1, &len), STORE_OK);
    assert_int_equal(store_doc_append(s, "d", 1, 1, (const uint8_t *)"y", 1, &len), STORE_OK);
    assert_int_equal(len, 2);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&b);
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_read(s, "d", 1, 0, &data, &n, NULL), STORE_OK);
    assert_memory_equal(data, "xy", 2);
    free(data);
    store_close(s);
}

/* Large documents: every append keeps the bytes exact and the blob a blob; reads from
 * an offset get only the tail. */
static void t_large_document(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "large");
    struct store *s = open_dir(dir, 1);
    assert_non_null(s);
    size_t size = 3u << 20;
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    for (size_t i = 0; i < size; i++) buf[i] = (uint8_t)(i * 7 + (i >> 9));
    assert_int_equal(store_doc_create(s, "big", 3, buf, size / 2), STORE_OK);
    uint64_t len = size / 2;
    for (size_t off = size / 2; off < size; off += 100000) {
        size_t n = size - off < 100000 ? size - off : 100000;
        assert_int_equal(store_doc_append(s, "big", 3, off, buf + off, n, &len), STORE_OK);
    }
    assert_int_equal(len, size);
    uint8_t *data;
    size_t n;
    uint64_t total;
    assert_int_equal(store_doc_read(s, "big", 3, size - 12345, &data, &n, &total), STORE_OK);
    assert_int_equal(total, size);
    assert_int_equal(n, 12345);
    assert_memory_equal(data, buf + size - 12345, 12345);
    free(data);
    assert_int_equal(store_doc_read(s, "big", 3, 0, &data, &n, NULL), STORE_OK);
    assert_int_equal(n, size);
    assert_memory_equal(data, buf, size);
    free(data);
    store_close(s);
    sqlite3 *db = raw_open(dir);
    assert_string_equal(raw_text(db, "SELECT typeof(data) FROM ZwibblerDocs"), "blob");
    sqlite3_close(db);
    free(buf);
}

/* Many threads appending to their own documents: all succeed, durable (the committer
 * gathers them into shared commits). */
struct gc_arg {
    struct store *s;
    int thread, errors;
};

#define GC_THREADS 16
#define GC_APPENDS 50

static void *gc_worker(void *p)
{
    struct gc_arg *a = p;
    char id[16];
    int n = snprintf(id, sizeof id, "gc%d", a->thread);
    if (store_doc_create(a->s, id, (size_t)n, NULL, 0) != STORE_OK) a->errors++;
    uint64_t len = 0;
    for (int i = 0; i < GC_APPENDS; i++) {
        uint8_t b[10];
        memset(b, 'a' + a->thread, sizeof b);
        if (store_doc_append(a->s, id, (size_t)n, len, b, sizeof b, &len) != STORE_OK) a->errors++;
    }
    return NULL;
}

static double now_s(void) { return (double)mono_ns() / 1e9; }

static void t_group_commit(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "gc");
    struct store *s = open_dir(dir, 0);
    assert_non_null(s);
    struct gc_arg args[GC_THREADS];
    pthread_t th[GC_THREADS];
    double t0 = now_s();
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (struct gc_arg){ s, i, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, gc_worker, &args[i]), 0);
    }
    for (int i = 0; i < GC_THREADS; i++) pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    for (int i = 0; i < GC_THREADS; i++) assert_int_equal(args[i].errors, 0);
    print_message("      %d durable appends from %d threads in %.3f s (%.0f/s)\n",
                  GC_THREADS * GC_APPENDS, GC_THREADS, dt, GC_THREADS * GC_APPENDS / dt);
    store_close(s);
    sqlite3 *db = raw_open(dir);
    assert_string_equal(raw_text(db, "SELECT sum(length(data)) FROM ZwibblerDocs"),
                        "8000"); /* 16 threads * 50 * 10 */
    sqlite3_close(db);
}

/* kill -9 in the middle of appends: every append that was acknowledged is in the file
 * afterwards, and the file opens cleanly. The child reports each ACK through a pipe. */
static uint8_t crash_byte(uint64_t p) { return (uint8_t)(p * 29 + (p >> 7)); }

static void t_crash_keeps_acked(void **state)
{
    (void)state;
    char dir[128];
    make_dir(dir, sizeof dir, "crash");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct store *s = open_dir(dir, 0);
        if (!s || store_doc_create(s, "c", 1, NULL, 0) != STORE_OK) _exit(2);
        uint64_t len = 0;
        for (;;) {
            uint8_t b[200];
            size_t n = 1 + len % 199;
            for (size_t i = 0; i < n; i++) b[i] = crash_byte(len + i);
            if (store_doc_append(s, "c", 1, len, b, n, &len) != STORE_OK) _exit(3);
            if (write(fds[1], &len, sizeof len) != sizeof len) _exit(4);
        }
    }
    close(fds[1]);
    uint64_t acked = 0, v;
    for (int i = 0; i < 300 && read(fds[0], &v, sizeof v) == sizeof v; i++) acked = v;
    kill(pid, SIGKILL);
    while (read(fds[0], &v, sizeof v) == sizeof v) acked = v;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_true(acked > 0);

    struct store *s = open_dir(dir, 0);
    assert_non_null(s);
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_read(s, "c", 1, 0, &data, &n, NULL), STORE_OK);
    assert_true(n >= acked);
    for (size_t i = 0; i < n; i++)
        if (data[i] != crash_byte(i)) fail_msg("byte %zu differs after the crash", i);
    free(data);
    store_close(s);
    print_message("      %llu bytes acknowledged before kill -9, %zu found\n",
                  (unsigned long long)acked, n);
}

static void t_bad_dir(void **state)
{
    (void)state;
    /* a directory that cannot be made: the reason names it */
    struct store_config cfg = { .backend = "sqlite", .data_dir = "/dev/null/zw" };
    char err[256] = "";
    assert_null(store_sqlite_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "/dev/null/zw"));
    /* a missing one is created */
    char dir[160];
    snprintf(dir, sizeof dir, "%s/new/sub", base_dir);
    cfg.data_dir = dir;
    struct store *s = store_sqlite_open(&cfg, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(store_ping(s), STORE_OK);
    store_close(s);
}

/* Append cost on a 1 MB and a 20 MB document, durable settings. */
static void bench_append(void)
{
    char dir[128];
    make_dir(dir, sizeof dir, "bench");
    struct store *s = open_dir(dir, 0);
    if (!s) return;
    size_t sizes[] = { 1u << 20, 20u << 20 };
    uint8_t *buf = malloc(20u << 20);
    for (size_t i = 0; i < (20u << 20); i++) buf[i] = (uint8_t)(i * 13);
    printf("  sqlite append cost (synchronous=FULL, 100-byte appends)\n");
    printf("  %-10s %10s %10s %10s\n", "doc size", "appends", "avg ms", "max ms");
    for (size_t k = 0; k < 2; k++) {
        char id[16];
        int n = snprintf(id, sizeof id, "bench%zu", k);
        store_doc_create(s, id, (size_t)n, buf, sizes[k]);
        uint64_t len = sizes[k];
        int count = 20;
        double total = 0, max = 0;
        for (int i = 0; i < count; i++) {
            double t0 = now_s();
            store_doc_append(s, id, (size_t)n, len, buf, 100, &len);
            double dt = now_s() - t0;
            total += dt;
            if (dt > max) max = dt;
        }
        printf("  %7zu MB %10d %10.2f %10.2f\n", sizes[k] >> 20, count, total / count * 1e3,
               max * 1e3);
    }
    free(buf);
    store_close(s);
}

static void rm_tree(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

int main(void)
{
    snprintf(base_dir, sizeof base_dir, "/tmp/zw-sqlite-XXXXXX");
    if (!mkdtemp(base_dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(conf_dir, sizeof conf_dir, "%s/conformance", base_dir);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", conf_dir);
    if (system(cmd) != 0) return 1;

    int failed = 0;
    struct store_conformance c = { "sqlite", conf_open, conf_reset, conf_dir, 0 };
    failed += store_conformance_run(&c);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_reads_reference_file),
        cmocka_unit_test(t_writes_reference_layout),
        cmocka_unit_test(t_busy_database),
        cmocka_unit_test(t_large_document),
        cmocka_unit_test(t_group_commit),
        cmocka_unit_test(t_crash_keeps_acked),
        cmocka_unit_test(t_bad_dir),
    };
    failed += cmocka_run_group_tests_name("sqlite backend", tests, NULL, NULL);
    if (getenv("STORE_BENCH")) bench_append();
    rm_tree(base_dir);
    return failed ? 1 : 0;
}
