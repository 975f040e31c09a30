/* sqlite_store: the Database=sqlite backend, on the reference server's own zwibbler.db
 * schema (docs/protocol.md, Storage layouts) so that a deployment switching servers keeps its data.
 *
 * Shape:
 * - One writer connection, used only by a committer thread. Every change (create,
 *   append, delete, key set, token add, user update, sweep step, last-access touch) is
 *   an op queued to it; the committer takes all pending ops, runs them in ONE
 *   transaction (group commit: one WAL fsync for many appends), each op with its own
 *   checks and result, and wakes the callers only after COMMIT returned. One writer
 *   also means writers never fight over SQLite's single write lock inside this process.
 * - A small pool of read-only connections for reads (WAL lets them run while the
 *   committer writes).
 * - Appends let SQLite concatenate in one UPDATE: the document is never read into the
 *   application to be rewritten. Catch-up reads use incremental blob I/O, so only the
 *   bytes from the offset are copied out.
 * - Caveat of the reference schema: a document is one BLOB row, so SQLite rewrites the
 *   whole row on every append (cost grows with the document: milliseconds at 1 MB,
 *   ~150 ms at 20 MB). Reads refresh lastAccess at most every TOUCH_EVERY seconds for
 *   the same reason.
 */
#include "commit_queue.h"
#include "store.h"
#include "store_log.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The reference server's schema, verbatim (less its "PRAGMA foreign_keys=ON", see
 * sq_configure), so a file it created opens unchanged and a file we create opens in
 * the reference. */
static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS ZwibblerDocs (\n"
    "\tdocid TEXT PRIMARY KEY, \n"
    "\tlastAccess INTEGER,\n"
    "\tdata BLOB\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS ZwibblerKeys (\n"
    "\tdocID TEXT,\n"
    "\tname TEXT,\n"
    "\tvalue TEXT,\n"
    "\tversion NUMBER,\n"
    "\tUNIQUE(docID, name),\n"
    "\tFOREIGN KEY (docID) REFERENCES ZwibblerDocs(docID) ON DELETE CASCADE\n"
    ");\n"
    "CREATE TABLE IF NOT EXISTS ZwibblerTokens (\n"
    "\ttokenID TEXT UNIQUE,\n"
    "\tdocID TEXT,\n"
    "\tuserID TEXT,\n"
    "\tpermissions TEXT,\n"
    "\texpiration INTEGER\n"
    ");\n"
    "CREATE INDEX IF NOT EXISTS ZwibblerTokenUserIndex ON ZwibblerTokens(userID);\n";

/* Byte length of the data column whatever its storage class. The reference writes
 * BLOBs, but NULL (an empty []byte may be bound as NULL) or TEXT must not be misread:
 * length() of TEXT counts characters. length(data) straight on the column lets SQLite
 * answer from the record header without reading the blob's overflow pages. */
#define LEN_EXPR                                                                                   \
    "CASE typeof(data) WHEN 'blob' THEN length(data) WHEN 'null' THEN 0 "                          \
    "ELSE length(CAST(data AS BLOB)) END"

enum {
    ST_DOC_LEN,  /* docid -> byte length */
    ST_DOC_INFO, /* docid -> rowid, byte length */
    ST_DOC_INSERT,
    ST_DOC_APPEND,
    ST_DOC_TOUCH,
    ST_DOC_DELETE,
    ST_DOC_EXPIRE, /* delete one document if still idle */
    ST_DOC_IDLE,   /* list idle documents */
    ST_KEYS_DELETE,
    ST_KEY_GET,
    ST_KEY_UPDATE,
    ST_KEY_INSERT,
    ST_KEYS_LIST,
    ST_TOKEN_EXP,
    ST_TOKEN_DELETE,
    ST_TOKEN_INSERT,
    ST_TOKEN_GET,
    ST_USER_UPDATE,
    ST_TOKENS_EXPIRE,
    ST_PING,
    ST_BEGIN,
    ST_BEGIN_IMMEDIATE,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_DOC_LIST,   /* next batch of document ids, by rowid */
    ST_TOKEN_LIST, /* next batch of live tokens, by rowid */
    ST_COUNT
};

static const char *const SQL[ST_COUNT] = {
    [ST_DOC_LEN] = "SELECT " LEN_EXPR " FROM ZwibblerDocs WHERE docid=?1",
    [ST_DOC_INFO] = "SELECT rowid, " LEN_EXPR " FROM ZwibblerDocs WHERE docid=?1",
    [ST_DOC_INSERT] = "INSERT OR IGNORE INTO ZwibblerDocs(docid, lastAccess, data) "
                      "VALUES(?1, ?2, ?3)",
    /* || turns blobs into TEXT (bytes kept as they are); CAST makes the result a BLOB
     * again so that length() keeps counting bytes. COALESCE: a NULL document is empty. */
    [ST_DOC_APPEND] = "UPDATE ZwibblerDocs SET data=CAST(COALESCE(data, X'') || ?1 AS BLOB), "
                      "lastAccess=?2 WHERE docid=?3",
    [ST_DOC_TOUCH] = "UPDATE ZwibblerDocs SET lastAccess=?1 WHERE docid=?2",
    [ST_DOC_DELETE] = "DELETE FROM ZwibblerDocs WHERE docid=?1",
    [ST_DOC_EXPIRE] = "DELETE FROM ZwibblerDocs WHERE docid=?1 AND lastAccess < ?2",
    [ST_DOC_IDLE] = "SELECT docid FROM ZwibblerDocs WHERE lastAccess < ?1",
    [ST_KEYS_DELETE] = "DELETE FROM ZwibblerKeys WHERE docID=?1",
    [ST_KEY_GET] = "SELECT version FROM ZwibblerKeys WHERE docID=?1 AND name=?2",
    [ST_KEY_UPDATE] = "UPDATE ZwibblerKeys SET value=?3, version=?4 WHERE docID=?1 AND name=?2",
    [ST_KEY_INSERT] =
        "INSERT INTO ZwibblerKeys(docID, name, value, version) VALUES(?1, ?2, ?3, ?4)",
    [ST_KEYS_LIST] = "SELECT name, value, version FROM ZwibblerKeys WHERE docID=?1",
    [ST_TOKEN_EXP] = "SELECT expiration FROM ZwibblerTokens WHERE tokenID=?1",
    [ST_TOKEN_DELETE] = "DELETE FROM ZwibblerTokens WHERE tokenID=?1",
    [ST_TOKEN_INSERT] =
        "INSERT INTO ZwibblerTokens(tokenID, docID, userID, permissions, expiration) "
        "VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_TOKEN_GET] = "SELECT docID, userID, permissions, expiration FROM ZwibblerTokens "
                     "WHERE tokenID=?1 AND expiration > ?2",
    [ST_USER_UPDATE] = "UPDATE ZwibblerTokens SET permissions=?1 WHERE userID=?2",
    [ST_TOKENS_EXPIRE] = "DELETE FROM ZwibblerTokens WHERE rowid IN "
                         "(SELECT rowid FROM ZwibblerTokens WHERE expiration < ?1 LIMIT ?2)",
    [ST_PING] = "SELECT count(*) FROM (SELECT 1 FROM ZwibblerDocs LIMIT 1)",
    [ST_BEGIN] = "BEGIN",
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_DOC_LIST] =
        "SELECT rowid, docid FROM ZwibblerDocs WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
    [ST_TOKEN_LIST] = "SELECT rowid, tokenID, docID, userID, permissions, expiration "
                      "FROM ZwibblerTokens WHERE rowid > ?1 AND expiration > ?2 "
                      "ORDER BY rowid LIMIT ?3",
};

#define BUSY_TIMEOUT_MS 5000 /* SQLite's own wait for a lock held by another process */
#define BUSY_RETRIES 6       /* then we retry that many times before giving up */
#define MAX_READERS 16
#define DEFAULT_READERS 4
#define SWEEP_CHUNK 64        /* documents deleted per committer op */
#define TOKEN_SWEEP_CHUNK 256 /* expired tokens deleted per committer op */
#define CHECKPOINT_FRAMES 1000
#define TOUCH_SLOTS 1024 /* remembered recent last-access refreshes */
#define TOUCH_EVERY 10   /* seconds between refreshes of one document by reads */

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    const struct store_log *log; /* the store's */
};

enum op_kind {
    OP_CREATE,
    OP_APPEND,
    OP_TOUCH,
    OP_DELETE,
    OP_KEY_SET,
    OP_TOKEN_ADD,
    OP_USER_UPDATE,
    OP_EXPIRE_DOCS,
    OP_EXPIRE_TOKENS,
};

/* One change for the committer. Arguments point into the caller's memory (it waits)
 * except for detached ops, which own a copy of their id and are freed by the
 * committer. */
struct sq_op {
    struct commit_queue_item item; /* first: the queue's items are ops */
    enum op_kind kind;
    const char *id;
    size_t id_len;
    const uint8_t *data; /* document bytes, or key value */
    size_t len;
    const uint8_t *name; /* key name */
    size_t name_len;
    uint64_t expected;
    uint32_t old_version, new_version;
    const struct store_token *tok;
    const char *token;
    size_t token_len;
    const char *perm;
    int64_t now;
    int64_t cutoff;
    char **ids; /* OP_EXPIRE_DOCS: ids (NUL-terminated) with lengths */
    size_t *id_lens;
    size_t nids;
    uint64_t count; /* OP_EXPIRE_*: rows removed */
    uint64_t new_len;
    int rc;
};

static struct sq_op *next_op(struct sq_op *op) { return (struct sq_op *)op->item.next; }

struct sq_store {
    struct store base;
    char *path;
    bool nosync;
    struct store_log log;

    /* Readers. */
    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    struct sq_conn readers[MAX_READERS];
    int nreaders;
    int free_readers[MAX_READERS];
    int nfree;

    /* Writer and its queue. */
    struct sq_conn writer;
    struct commit_queue queue; /* to the committer thread, the writer's only user */
    int wal_frames;            /* last WAL size seen by the wal hook (committer only) */
    /* Reads refresh lastAccess at most every TOUCH_EVERY seconds per document, so a
     * busy reader cannot flood the committer (id hash and time per slot). */
    pthread_mutex_t touch_lock;
    uint64_t touch_hash[TOUCH_SLOTS];
    int64_t touch_time[TOUCH_SLOTS];
};

static const struct store_methods sq_methods;

static int64_t now_seconds(void) { return (int64_t)time(NULL); }

static int sq_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW: return STORE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return STORE_EUNAVAILABLE;
    case SQLITE_NOMEM: return STORE_ENOMEM;
    case SQLITE_TOOBIG: return STORE_EINVAL;
    default: return STORE_EIO;
    }
}

static int sq_fail(struct sq_conn *c, int rc, const char *what)
{
    sqlite3 *db = c->db;
    store_log_error(c->log, "sqlite: %s: %s (%d)", what,
                    db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
    return sq_err(rc);
}

/* Sleeps a little more on each busy retry: another process holds the write lock. */
static void busy_backoff(int attempt)
{
    struct timespec ts = { 0, (long)(50 + attempt * 100) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Returns the prepared statement, preparing it on first use; NULL on failure (logged). */
static sqlite3_stmt *stmt(struct sq_conn *c, int which)
{
    if (!c->st[which]) {
        int rc = sqlite3_prepare_v3(c->db, SQL[which], -1, SQLITE_PREPARE_PERSISTENT, &c->st[which],
                                    NULL);
        if (rc != SQLITE_OK) {
            sq_fail(c, rc, SQL[which]);
            c->st[which] = NULL;
        }
    }
    return c->st[which];
}

static int bind_text(sqlite3_stmt *s, int i, const void *p, size_t n)
{
    return sqlite3_bind_text64(s, i, p ? (const char *)p : "", n, SQLITE_STATIC, SQLITE_UTF8);
}

/* A zero-length blob must be bound with a non-NULL pointer, or SQLite stores NULL. */
static int bind_blob(sqlite3_stmt *s, int i, const uint8_t *p, size_t n)
{
    static const uint8_t empty[1];
    return sqlite3_bind_blob64(s, i, n ? (const void *)p : (const void *)empty, n, SQLITE_STATIC);
}

/* Steps a statement that is being reused; SQLITE_BUSY is retried. */
static int step(sqlite3_stmt *s)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_step(s);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || attempt >= BUSY_RETRIES) break;
        sqlite3_reset(s);
        busy_backoff(attempt);
    }
    return rc;
}

/* Runs a statement with no result rows. Returns an SQLite code. */
static int exec_stmt(struct sq_conn *c, int which)
{
    sqlite3_stmt *s = stmt(c, which);
    if (!s) return SQLITE_ERROR;
    int rc = step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void conn_close(struct sq_conn *c)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(c->st[i]);
        c->st[i] = NULL;
    }
    if (c->db) sqlite3_close(c->db);
    c->db = NULL;
}

/* Runs a piece of SQL, retrying while another process holds the database. */
static int exec_retry(sqlite3 *db, const char *sql)
{
    int rc;
    for (int attempt = 0;; attempt++) {
        rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if ((rc != SQLITE_BUSY && rc != SQLITE_LOCKED) || attempt >= BUSY_RETRIES) break;
        busy_backoff(attempt);
    }
    return rc;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((struct sq_store *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

/* Opens one connection. The writer gets durability settings; readers are query-only.
 * Returns 0, or -1 with the reason in err. */
static int conn_open(struct sq_store *st, struct sq_conn *c, bool writer, char *err, size_t err_len)
{
    memset(c, 0, sizeof *c);
    c->log = &st->log;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(st->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "sqlite: cannot open %s: %s", st->path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    /* Foreign keys stay off: the store contract keeps a document's keys even without a
     * document row, and we delete keys with their document ourselves. */
    const char *common = "PRAGMA foreign_keys=OFF;";
    if ((rc = exec_retry(c->db, common)) != SQLITE_OK) goto sqlfail;
    if (writer) {
        /* WAL: readers never block the writer nor see half a commit. FULL: a commit
         * is fsync'ed before COMMIT returns, which is what lets us ACK afterwards. */
        if ((rc = exec_retry(c->db, "PRAGMA journal_mode=WAL;")) != SQLITE_OK) goto sqlfail;
        const char *sync = st->nosync ? "PRAGMA synchronous=OFF;" : "PRAGMA synchronous=FULL;";
        if ((rc = exec_retry(c->db, sync)) != SQLITE_OK) goto sqlfail;
        /* We checkpoint ourselves after waking the callers of a batch, so that a
         * checkpoint never adds to an ACK's latency. */
        if ((rc = exec_retry(c->db, "PRAGMA wal_autocheckpoint=0;"
                                    "PRAGMA journal_size_limit=67108864;")) != SQLITE_OK)
            goto sqlfail;
        if ((rc = exec_retry(c->db, SCHEMA)) != SQLITE_OK) goto sqlfail;
        sqlite3_wal_hook(c->db, wal_hook, st);
    } else {
        if ((rc = exec_retry(c->db, "PRAGMA query_only=1;")) != SQLITE_OK) goto sqlfail;
    }
    return 0;
sqlfail:
    snprintf(err, err_len, "sqlite: %s: %s", st->path, sqlite3_errmsg(c->db));
fail:
    conn_close(c);
    return -1;
}

/* ---- Committer ---------------------------------------------------------------- */

/* Each op returns a store code; *hard is set when SQLite itself failed, so that the
 * batch is redone op by op (one bad op must not fail the others). */

static int op_create(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    sqlite3_stmt *s = stmt(c, ST_DOC_INSERT);
    if (!s) goto fail;
    bind_text(s, 1, op->id, op->id_len);
    sqlite3_bind_int64(s, 2, op->now);
    bind_blob(s, 3, op->data, op->len);
    int rc = step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) {
        *hard = true;
        return sq_fail(c, rc, "create document");
    }
    return sqlite3_changes(c->db) ? STORE_OK : STORE_EEXISTS;
fail:
    *hard = true;
    return STORE_EIO;
}

/* Returns 1 with the length when the document exists, 0 when missing, or a negative
 * SQLite-failure store code. */
static int doc_len(struct sq_conn *c, const char *id, size_t id_len, uint64_t *len)
{
    sqlite3_stmt *s = stmt(c, ST_DOC_LEN);
    if (!s) return STORE_EIO;
    bind_text(s, 1, id, id_len);
    int rc = step(s);
    int out;
    if (rc == SQLITE_ROW) {
        sqlite3_int64 n = sqlite3_column_int64(s, 0);
        *len = n > 0 ? (uint64_t)n : 0;
        out = 1;
    } else if (rc == SQLITE_DONE) {
        out = 0;
    } else {
        out = sq_fail(c, rc, "document length");
    }
    sqlite3_reset(s);
    return out;
}

static int op_append(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    uint64_t cur = 0;
    int rc = doc_len(c, op->id, op->id_len, &cur);
    if (rc < 0) goto fail;
    if (rc == 0) return STORE_ENOTFOUND;
    op->new_len = cur;
    if (cur != op->expected) return STORE_EMISMATCH;
    /* Even an empty append goes through the UPDATE: it refreshes lastAccess. */
    sqlite3_stmt *s = stmt(c, ST_DOC_APPEND);
    if (!s) {
        rc = STORE_EIO;
        goto fail;
    }
    bind_blob(s, 1, op->data, op->len);
    sqlite3_bind_int64(s, 2, op->now);
    bind_text(s, 3, op->id, op->id_len);
    int src = step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (src != SQLITE_DONE) {
        rc = sq_fail(c, src, "append");
        goto fail;
    }
    op->new_len = cur + op->len;
    return STORE_OK;
fail:
    *hard = true;
    return rc;
}

static int op_touch(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    sqlite3_stmt *s = stmt(c, ST_DOC_TOUCH);
    if (!s) goto fail;
    sqlite3_bind_int64(s, 1, op->now);
    bind_text(s, 2, op->id, op->id_len);
    int rc = step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        *hard = true;
        return sq_fail(c, rc, "touch");
    }
    return STORE_OK;
fail:
    *hard = true;
    return STORE_EIO;
}

/* Deletes keys of a document (they outlive nothing: rows deleted with it). */
static int delete_keys(struct sq_conn *c, const char *id, size_t id_len)
{
    sqlite3_stmt *s = stmt(c, ST_KEYS_DELETE);
    if (!s) return STORE_EIO;
    bind_text(s, 1, id, id_len);
    int rc = step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? STORE_OK : sq_fail(c, rc, "delete keys");
}

static int op_delete(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    sqlite3_stmt *s = stmt(c, ST_DOC_DELETE);
    int rc = STORE_EIO;
    if (!s) goto fail;
    bind_text(s, 1, op->id, op->id_len);
    int src = step(s);
    sqlite3_reset(s);
    if (src != SQLITE_DONE) {
        rc = sq_fail(c, src, "delete document");
        goto fail;
    }
    bool found = sqlite3_changes(c->db) > 0;
    if ((rc = delete_keys(c, op->id, op->id_len)) != STORE_OK) goto fail;
    return found ? STORE_OK : STORE_ENOTFOUND;
fail:
    *hard = true;
    return rc;
}

static int op_key_set(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    int rc = STORE_EIO;
    sqlite3_stmt *s = stmt(c, ST_KEY_GET);
    if (!s) goto fail;
    bind_text(s, 1, op->id, op->id_len);
    bind_text(s, 2, op->name, op->name_len);
    int src = step(s);
    bool exists = src == SQLITE_ROW;
    sqlite3_int64 version = exists ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = sq_fail(c, src, "key get");
        goto fail;
    }
    if (exists ? version != (sqlite3_int64)op->old_version : op->old_version != 0)
        return STORE_EMISMATCH;
    /* Text, as the reference binds Go strings: a reference reader scans them back. */
    s = stmt(c, exists ? ST_KEY_UPDATE : ST_KEY_INSERT);
    if (!s) goto fail;
    bind_text(s, 1, op->id, op->id_len);
    bind_text(s, 2, op->name, op->name_len);
    bind_text(s, 3, op->data, op->len);
    sqlite3_bind_int64(s, 4, op->new_version);
    src = step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (src != SQLITE_DONE) {
        rc = sq_fail(c, src, "key set");
        goto fail;
    }
    return STORE_OK;
fail:
    *hard = true;
    return rc;
}

static int op_token_add(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    int rc = STORE_EIO;
    const struct store_token *t = op->tok;
    sqlite3_stmt *s = stmt(c, ST_TOKEN_EXP);
    if (!s) goto fail;
    bind_text(s, 1, op->token, op->token_len);
    int src = step(s);
    bool exists = src == SQLITE_ROW;
    sqlite3_int64 exp = exists ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (src != SQLITE_ROW && src != SQLITE_DONE) {
        rc = sq_fail(c, src, "token lookup");
        goto fail;
    }
    if (exists && exp > op->now) return STORE_EEXISTS;
    if (exists) { /* expired but not yet swept: the name is free again */
        s = stmt(c, ST_TOKEN_DELETE);
        if (!s) goto fail;
        bind_text(s, 1, op->token, op->token_len);
        src = step(s);
        sqlite3_reset(s);
        if (src != SQLITE_DONE) {
            rc = sq_fail(c, src, "token replace");
            goto fail;
        }
    }
    s = stmt(c, ST_TOKEN_INSERT);
    if (!s) goto fail;
    bind_text(s, 1, op->token, op->token_len);
    bind_text(s, 2, t->doc_id, t->doc_id_len);
    bind_text(s, 3, t->user_id, t->user_id ? strlen(t->user_id) : 0);
    bind_text(s, 4, t->permissions, strnlen(t->permissions, sizeof t->permissions));
    sqlite3_bind_int64(s, 5, t->expires);
    src = step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (src != SQLITE_DONE) {
        rc = sq_fail(c, src, "token add");
        goto fail;
    }
    return STORE_OK;
fail:
    *hard = true;
    return rc;
}

static int op_user_update(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    sqlite3_stmt *s = stmt(c, ST_USER_UPDATE);
    if (!s) goto fail;
    bind_text(s, 1, op->perm, strlen(op->perm));
    bind_text(s, 2, op->id, op->id_len);
    int rc = step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        *hard = true;
        return sq_fail(c, rc, "update user");
    }
    return STORE_OK;
fail:
    *hard = true;
    return STORE_EIO;
}

/* Deletes the listed documents that are still idle (one touched since the listing
 * survives), with their keys. */
static int op_expire_docs(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    int rc = STORE_EIO;
    op->count = 0;
    for (size_t i = 0; i < op->nids; i++) {
        sqlite3_stmt *s = stmt(c, ST_DOC_EXPIRE);
        if (!s) goto fail;
        bind_text(s, 1, op->ids[i], op->id_lens[i]);
        sqlite3_bind_int64(s, 2, op->cutoff);
        int src = step(s);
        sqlite3_reset(s);
        if (src != SQLITE_DONE) {
            rc = sq_fail(c, src, "expire document");
            goto fail;
        }
        if (sqlite3_changes(c->db) == 0) continue;
        op->count++;
        if ((rc = delete_keys(c, op->ids[i], op->id_lens[i])) != STORE_OK) goto fail;
    }
    return STORE_OK;
fail:
    *hard = true;
    return rc;
}

static int op_expire_tokens(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    sqlite3_stmt *s = stmt(c, ST_TOKENS_EXPIRE);
    if (!s) goto fail;
    sqlite3_bind_int64(s, 1, op->now);
    sqlite3_bind_int64(s, 2, TOKEN_SWEEP_CHUNK);
    int rc = step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        *hard = true;
        return sq_fail(c, rc, "expire tokens");
    }
    op->count = (uint64_t)sqlite3_changes(c->db);
    return STORE_OK;
fail:
    *hard = true;
    return STORE_EIO;
}

static int run_op(struct sq_conn *c, struct sq_op *op, bool *hard)
{
    switch (op->kind) {
    case OP_CREATE: return op_create(c, op, hard);
    case OP_APPEND: return op_append(c, op, hard);
    case OP_TOUCH: return op_touch(c, op, hard);
    case OP_DELETE: return op_delete(c, op, hard);
    case OP_KEY_SET: return op_key_set(c, op, hard);
    case OP_TOKEN_ADD: return op_token_add(c, op, hard);
    case OP_USER_UPDATE: return op_user_update(c, op, hard);
    case OP_EXPIRE_DOCS: return op_expire_docs(c, op, hard);
    case OP_EXPIRE_TOKENS: return op_expire_tokens(c, op, hard);
    }
    return STORE_EINVAL;
}

static void rollback(struct sq_conn *c)
{
    if (!sqlite3_get_autocommit(c->db)) exec_stmt(c, ST_ROLLBACK);
}

/* Runs ops [first, end) in one transaction. Returns true when it committed; false
 * when SQLite failed, with every op's rc set to that failure, nothing stored, and
 * *hard telling whether an op (rather than BEGIN/COMMIT) failed. */
static bool run_txn(struct sq_store *st, struct sq_op *first, struct sq_op *end, bool *op_failed)
{
    struct sq_conn *c = &st->writer;
    *op_failed = false;
    int rc = SQLITE_OK, err = STORE_OK;
    for (int attempt = 0;; attempt++) {
        rc = exec_stmt(c, ST_BEGIN_IMMEDIATE);
        if ((rc & 0xff) != SQLITE_BUSY || attempt >= BUSY_RETRIES) break;
        busy_backoff(attempt);
    }
    if (rc != SQLITE_OK) {
        err = sq_fail(c, rc, "begin");
        goto fail;
    }
    for (struct sq_op *op = first; op != end; op = next_op(op)) {
        bool hard = false;
        op->rc = run_op(c, op, &hard);
        if (hard) {
            *op_failed = true;
            err = op->rc;
            goto fail;
        }
    }
    for (int attempt = 0;; attempt++) {
        rc = exec_stmt(c, ST_COMMIT);
        if ((rc & 0xff) != SQLITE_BUSY || attempt >= BUSY_RETRIES) break;
        busy_backoff(attempt);
    }
    if (rc != SQLITE_OK) {
        err = sq_fail(c, rc, "commit");
        goto fail;
    }
    return true;
fail:
    rollback(c);
    for (struct sq_op *op = first; op != end; op = next_op(op)) op->rc = err;
    return false;
}

static void run_batch(struct sq_store *st, struct sq_op *batch)
{
    bool op_failed;
    if (run_txn(st, batch, NULL, &op_failed) || !op_failed || !next_op(batch)) return;
    /* One op failed in SQLite and took the batch with it: redo each op alone so that
     * only the failing one reports the failure. */
    for (struct sq_op *op = batch; op; op = next_op(op)) run_txn(st, op, next_op(op), &op_failed);
}

static void commit_batch(void *arg, struct commit_queue_item *first, size_t n)
{
    (void)n; /* the batch ends at a NULL next */
    run_batch(arg, (struct sq_op *)first);
}

static void free_op(void *arg, struct commit_queue_item *item)
{
    (void)arg;
    struct sq_op *op = (struct sq_op *)item;
    free((char *)op->id);
    free(op);
}

/* After each batch, its callers already woken. A PASSIVE checkpoint never waits for
 * readers. Preferably between bursts, but under endless load the WAL must not grow
 * without bound either. */
static void maybe_checkpoint(void *arg, bool more_queued)
{
    struct sq_store *st = arg;
    if (st->wal_frames < CHECKPOINT_FRAMES ||
        (more_queued && st->wal_frames < 8 * CHECKPOINT_FRAMES))
        return;
    int rc = sqlite3_wal_checkpoint_v2(st->writer.db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) sq_fail(&st->writer, rc, "checkpoint");
    st->wal_frames = 0;
}

/* Queues op and waits until its batch committed (or failed). Returns op->rc. */
static int submit(struct sq_store *st, struct sq_op *op)
{
    commit_queue_submit(&st->queue, &op->item);
    return op->rc;
}

/* ---- Readers ------------------------------------------------------------------- */

static struct sq_conn *reader_get(struct sq_store *st)
{
    pthread_mutex_lock(&st->rlock);
    while (st->nfree == 0) pthread_cond_wait(&st->rcond, &st->rlock);
    struct sq_conn *c = &st->readers[st->free_readers[--st->nfree]];
    pthread_mutex_unlock(&st->rlock);
    return c;
}

static void reader_put(struct sq_store *st, struct sq_conn *c)
{
    pthread_mutex_lock(&st->rlock);
    st->free_readers[st->nfree++] = (int)(c - st->readers);
    pthread_cond_signal(&st->rcond);
    pthread_mutex_unlock(&st->rlock);
}

/* ---- Methods ------------------------------------------------------------------- */

static void sq_close(struct store *s)
{
    struct sq_store *st = (struct sq_store *)s;
    commit_queue_stop(&st->queue); /* commits what is queued first */
    for (int i = 0; i < st->nreaders; i++) conn_close(&st->readers[i]);
    if (st->writer.db) {
        /* Fold the WAL back so the file is complete on its own (e.g. when copied). */
        sqlite3_wal_checkpoint_v2(st->writer.db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        conn_close(&st->writer);
    }
    pthread_mutex_destroy(&st->rlock);
    pthread_cond_destroy(&st->rcond);
    pthread_mutex_destroy(&st->touch_lock);
    free(st->path);
    free(st);
}

static int sq_ping(struct store *s)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_conn *c = reader_get(st);
    int out = STORE_EIO;
    sqlite3_stmt *q = stmt(c, ST_PING);
    if (q) {
        int rc = step(q);
        out = rc == SQLITE_ROW ? STORE_OK : sq_fail(c, rc, "ping");
        sqlite3_reset(q);
    }
    reader_put(st, c);
    return out;
}

static int sq_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data,
                         size_t len)
{
    struct sq_op op = { .kind = OP_CREATE,
                        .id = id,
                        .id_len = id_len,
                        .data = data,
                        .len = len,
                        .now = now_seconds() };
    return submit((struct sq_store *)s, &op);
}

/* Refreshes lastAccess after a read without waiting for a commit: it only feeds
 * expiry, counted in hours, and the queue keeps it ordered before any later change.
 * Skipped when the document was refreshed in the last TOUCH_EVERY seconds. */
static void touch(struct sq_store *st, const char *id, size_t id_len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < id_len; i++) h = (h ^ (uint8_t)id[i]) * 1099511628211ull;
    int64_t now = now_seconds();
    size_t slot = h % TOUCH_SLOTS;
    pthread_mutex_lock(&st->touch_lock);
    bool recent = st->touch_hash[slot] == h && now - st->touch_time[slot] < TOUCH_EVERY &&
                  now >= st->touch_time[slot];
    if (!recent) {
        st->touch_hash[slot] = h;
        st->touch_time[slot] = now;
    }
    pthread_mutex_unlock(&st->touch_lock);
    if (recent) return;
    struct sq_op *op = calloc(1, sizeof *op);
    char *copy = malloc(id_len ? id_len : 1);
    if (!op || !copy) { /* only the refresh is lost */
        free(op);
        free(copy);
        return;
    }
    memcpy(copy, id, id_len);
    op->kind = OP_TOUCH;
    op->id = copy;
    op->id_len = id_len;
    op->now = now;
    commit_queue_post(&st->queue, &op->item);
}

static int sq_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_conn *c = reader_get(st);
    int rc = doc_len(c, id, id_len, len);
    reader_put(st, c);
    if (rc < 0) return rc;
    if (rc == 0) return STORE_ENOTFOUND;
    touch(st, id, id_len);
    return STORE_OK;
}

static int sq_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                       uint8_t **data, size_t *len, uint64_t *total)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_conn *c = reader_get(st);
    sqlite3_blob *blob = NULL;
    uint8_t *buf = NULL;
    int out = STORE_OK, rc;
    bool in_txn = false, touched = false;
    *data = NULL;
    *len = 0;

    /* One read transaction, so that the length and the bytes are one snapshot. */
    if ((rc = exec_stmt(c, ST_BEGIN)) != SQLITE_OK) {
        out = sq_fail(c, rc, "begin read");
        goto done;
    }
    in_txn = true;
    sqlite3_stmt *q = stmt(c, ST_DOC_INFO);
    if (!q) {
        out = STORE_EIO;
        goto done;
    }
    bind_text(q, 1, id, id_len);
    rc = step(q);
    sqlite3_int64 rowid = 0, n = 0;
    if (rc == SQLITE_ROW) {
        rowid = sqlite3_column_int64(q, 0);
        n = sqlite3_column_int64(q, 1);
    }
    sqlite3_reset(q);
    if (rc == SQLITE_DONE) {
        out = STORE_ENOTFOUND;
        goto done;
    }
    if (rc != SQLITE_ROW) {
        out = sq_fail(c, rc, "read document");
        goto done;
    }
    uint64_t doclen = n > 0 ? (uint64_t)n : 0;
    if (total) *total = doclen;
    if (offset > doclen) {
        out = STORE_ERANGE;
        goto done;
    }
    uint64_t want = doclen - offset;
    if (want == 0) goto done;
    if (want > (uint64_t)INT32_MAX) { /* sqlite3_blob_read takes int sizes */
        out = STORE_EINVAL;
        goto done;
    }
    /* Incremental blob I/O copies out only [offset, end), not the whole document. */
    rc = sqlite3_blob_open(c->db, "main", "ZwibblerDocs", "data", rowid, 0, &blob);
    if (rc != SQLITE_OK) {
        out = sq_fail(c, rc, "open document blob");
        goto done;
    }
    buf = malloc((size_t)want);
    if (!buf) {
        out = STORE_ENOMEM;
        goto done;
    }
    rc = sqlite3_blob_read(blob, buf, (int)want, (int)offset);
    if (rc != SQLITE_OK) {
        out = sq_fail(c, rc, "read document blob");
        goto done;
    }
    *data = buf;
    *len = (size_t)want;
    buf = NULL;
done:
    if (out == STORE_OK) touched = true;
    free(buf);
    if (blob) sqlite3_blob_close(blob);
    if (in_txn) rollback(c);
    reader_put(st, c);
    if (touched) touch(st, id, id_len);
    return out;
}

static int sq_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected_len,
                         const uint8_t *data, size_t len, uint64_t *new_len)
{
    struct sq_op op = { .kind = OP_APPEND,
                        .id = id,
                        .id_len = id_len,
                        .data = data,
                        .len = len,
                        .expected = expected_len,
                        .now = now_seconds() };
    int rc = submit((struct sq_store *)s, &op);
    if (new_len && (rc == STORE_OK || rc == STORE_EMISMATCH)) *new_len = op.new_len;
    return rc;
}

static int sq_doc_delete(struct store *s, const char *id, size_t id_len)
{
    struct sq_op op = { .kind = OP_DELETE, .id = id, .id_len = id_len };
    return submit((struct sq_store *)s, &op);
}

static int sq_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                      size_t name_len, const uint8_t *value, size_t value_len, uint32_t old_version,
                      uint32_t new_version)
{
    struct sq_op op = { .kind = OP_KEY_SET,
                        .id = id,
                        .id_len = id_len,
                        .name = name,
                        .name_len = name_len,
                        .data = value,
                        .len = value_len,
                        .old_version = old_version,
                        .new_version = new_version };
    return submit((struct sq_store *)s, &op);
}

static int sq_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_conn *c = reader_get(st);
    int out = STORE_OK;
    sqlite3_stmt *q = stmt(c, ST_KEYS_LIST);
    if (!q) {
        out = STORE_EIO;
        goto done;
    }
    bind_text(q, 1, id, id_len);
    int rc;
    while ((rc = step(q)) == SQLITE_ROW) {
        /* column_blob reads TEXT or BLOB as its bytes; NULL reads as empty. */
        const uint8_t *name = sqlite3_column_blob(q, 0);
        size_t name_len = (size_t)sqlite3_column_bytes(q, 0);
        const uint8_t *value = sqlite3_column_blob(q, 1);
        size_t value_len = (size_t)sqlite3_column_bytes(q, 1);
        uint32_t version = (uint32_t)sqlite3_column_int64(q, 2);
        if (fn(arg, name ? name : (const uint8_t *)"", name_len,
               value ? value : (const uint8_t *)"", value_len, version))
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) out = sq_fail(c, rc, "list keys");
    sqlite3_reset(q);
done:
    reader_put(st, c);
    return out;
}

static int sq_token_add(struct store *s, const char *token, size_t token_len,
                        const struct store_token *t)
{
    struct sq_op op = {
        .kind = OP_TOKEN_ADD, .token = token, .token_len = token_len, .tok = t, .now = now_seconds()
    };
    return submit((struct sq_store *)s, &op);
}

static char *dup_column(sqlite3_stmt *q, int col, size_t *len_out)
{
    const void *p = sqlite3_column_blob(q, col);
    size_t n = (size_t)sqlite3_column_bytes(q, col);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    if (n) memcpy(out, p, n);
    out[n] = 0;
    if (len_out) *len_out = n;
    return out;
}

static int sq_token_get(struct store *s, const char *token, size_t token_len,
                        struct store_token *out)
{
    struct sq_store *st = (struct sq_store *)s;
    struct sq_conn *c = reader_get(st);
    int ret = STORE_OK;
    memset(out, 0, sizeof *out);
    sqlite3_stmt *q = stmt(c, ST_TOKEN_GET);
    if (!q) {
        ret = STORE_EIO;
        goto done;
    }
    bind_text(q, 1, token, token_len);
    sqlite3_bind_int64(q, 2, now_seconds());
    int rc = step(q);
    if (rc == SQLITE_ROW) {
        out->doc_id = dup_column(q, 0, &out->doc_id_len);
        out->user_id = dup_column(q, 1, NULL);
        const unsigned char *p = sqlite3_column_text(q, 2);
        snprintf(out->permissions, sizeof out->permissions, "%s", p ? (const char *)p : "");
        out->expires = sqlite3_column_int64(q, 3);
        if (!out->doc_id || !out->user_id) {
            free(out->doc_id);
            free(out->user_id);
            memset(out, 0, sizeof *out);
            ret = STORE_ENOMEM;
        }
    } else if (rc == SQLITE_DONE) {
        ret = STORE_ENOTFOUND;
    } else {
        ret = sq_fail(c, rc, "token get");
    }
    sqlite3_reset(q);
done:
    reader_put(st, c);
    return ret;
}

static int sq_user_update(struct store *s, const char *user_id, size_t user_len,
                          const char *permissions)
{
    struct sq_op op = { .kind = OP_USER_UPDATE,
                        .id = user_id,
                        .id_len = user_len,
                        .perm = permissions ? permissions : "" };
    return submit((struct sq_store *)s, &op);
}

/* Lists idle documents on a reader, then deletes them in small committer ops so
 * that appends queued meanwhile wait at most one small step. A negative max_idle
 * keeps every document (tokens are still swept), as the LMDB backend does. */
static int sq_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    struct sq_store *st = (struct sq_store *)s;
    char **ids = NULL;
    size_t *lens = NULL, n = 0, cap = 0;
    uint64_t total = 0;
    int out = STORE_OK;

    if (max_idle >= 0) {
        int64_t cutoff = now - max_idle;
        struct sq_conn *c = reader_get(st);
        sqlite3_stmt *q = stmt(c, ST_DOC_IDLE);
        int rc = SQLITE_ERROR;
        if (q) {
            sqlite3_bind_int64(q, 1, cutoff);
            while ((rc = step(q)) == SQLITE_ROW) {
                if (n == cap) {
                    size_t ncap = cap ? cap * 2 : 64;
                    char **nids = realloc(ids, ncap * sizeof *nids);
                    if (nids) ids = nids;
                    size_t *nlens = realloc(lens, ncap * sizeof *nlens);
                    if (nlens) lens = nlens;
                    if (!nids || !nlens) {
                        rc = SQLITE_NOMEM;
                        break;
                    }
                    cap = ncap;
                }
                if (!(ids[n] = dup_column(q, 0, &lens[n]))) {
                    rc = SQLITE_NOMEM;
                    break;
                }
                n++;
            }
            sqlite3_reset(q);
        }
        if (rc != SQLITE_DONE) out = sq_fail(c, rc, "list idle documents");
        reader_put(st, c);
        for (size_t i = 0; out == STORE_OK && i < n; i += SWEEP_CHUNK) {
            struct sq_op op = { .kind = OP_EXPIRE_DOCS,
                                .ids = ids + i,
                                .id_lens = lens + i,
                                .nids = n - i < SWEEP_CHUNK ? n - i : SWEEP_CHUNK,
                                .cutoff = cutoff };
            out = submit(st, &op);
            total += op.count;
        }
    }
    for (;;) {
        if (out != STORE_OK) break;
        struct sq_op op = { .kind = OP_EXPIRE_TOKENS, .now = now };
        out = submit(st, &op);
        if (op.count < TOKEN_SWEEP_CHUNK) break;
    }
    for (size_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(lens);
    if (removed) *removed = total;
    return out;
}

/* ---- Enumeration ---------------------------------------------------------------- */

#define LIST_BATCH 256 /* rows copied out per reader use */

/* One batch of rows, copied out so that callbacks run with the reader given back
 * (they may call the store, and the pool is small). */
struct sq_row {
    char *col[3]; /* doc: id; token: token, docID, userID */
    size_t len[3];
    char perms[8];
    int64_t expires;
};

static void rows_free(struct sq_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 3; j++) free(rows[i].col[j]);
}

/* Reads up to LIST_BATCH rows after *after (a rowid) into rows; tokens when `tokens`.
 * Returns a store code; *n is the number read. */
static int list_batch(struct sq_store *st, bool tokens, int64_t *after, struct sq_row *rows,
                      size_t *n)
{
    struct sq_conn *c = reader_get(st);
    int out = STORE_OK, rc = SQLITE_ERROR;
    *n = 0;
    sqlite3_stmt *q = stmt(c, tokens ? ST_TOKEN_LIST : ST_DOC_LIST);
    if (q) {
        sqlite3_bind_int64(q, 1, *after);
        if (tokens) sqlite3_bind_int64(q, 2, now_seconds());
        sqlite3_bind_int(q, tokens ? 3 : 2, LIST_BATCH);
        while ((rc = step(q)) == SQLITE_ROW) {
            struct sq_row *r = &rows[*n];
            memset(r, 0, sizeof *r);
            *after = sqlite3_column_int64(q, 0);
            int ncols = tokens ? 3 : 1;
            bool ok = true;
            for (int j = 0; j < ncols; j++)
                ok &= (r->col[j] = dup_column(q, 1 + j, &r->len[j])) != NULL;
            (*n)++;
            if (!ok) {
                rc = SQLITE_NOMEM;
                break;
            }
            if (tokens) {
                const unsigned char *p = sqlite3_column_text(q, 4);
                snprintf(r->perms, sizeof r->perms, "%s", p ? (const char *)p : "");
                r->expires = sqlite3_column_int64(q, 5);
            }
        }
        sqlite3_reset(q);
    }
    if (rc != SQLITE_DONE) out = sq_fail(c, rc, tokens ? "list tokens" : "list documents");
    reader_put(st, c);
    return out;
}

static int sq_list(struct sq_store *st, bool tokens, store_doc_fn doc_fn, store_token_fn token_fn,
                   void *arg)
{
    struct sq_row *rows = malloc(LIST_BATCH * sizeof *rows);
    if (!rows) return STORE_ENOMEM;
    int64_t after = 0;
    int out = STORE_OK;
    bool stop = false;
    while (!stop) {
        size_t n = 0;
        out = list_batch(st, tokens, &after, rows, &n);
        for (size_t i = 0; out == STORE_OK && i < n && !stop; i++) {
            struct sq_row *r = &rows[i];
            if (!tokens) {
                stop = doc_fn(arg, r->col[0], r->len[0]) != 0;
                continue;
            }
            struct store_token t = { .doc_id = r->col[1],
                                     .doc_id_len = r->len[1],
                                     .user_id = r->col[2],
                                     .expires = r->expires };
            memcpy(t.permissions, r->perms, sizeof t.permissions);
            stop = token_fn(arg, r->col[0], r->len[0], &t) != 0;
        }
        rows_free(rows, n);
        if (out != STORE_OK || n < LIST_BATCH) break;
    }
    free(rows);
    return out;
}

static int sq_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    return sq_list((struct sq_store *)s, false, fn, NULL, arg);
}

static int sq_token_list(struct store *s, store_token_fn fn, void *arg)
{
    return sq_list((struct sq_store *)s, true, NULL, fn, arg);
}

static const struct store_methods sq_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .doc_create = sq_doc_create,
    .doc_length = sq_doc_length,
    .doc_read = sq_doc_read,
    .doc_append = sq_doc_append,
    .doc_delete = sq_doc_delete,
    .key_set = sq_key_set,
    .keys_get = sq_keys_get,
    .token_add = sq_token_add,
    .token_get = sq_token_get,
    .user_update = sq_user_update,
    .sweep = sq_sweep,
    .doc_list = sq_doc_list,
    .token_list = sq_token_list,
};

/* mkdir -p (0750, as the LMDB backend). Returns 0 or an errno value. */
static int make_dirs(const char *dir)
{
    char *p = strdup(dir);
    int rc = 0;
    if (!p) return ENOMEM;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q) continue;
        char c = *q;
        *q = 0;
        if (mkdir(p, 0750) != 0 && errno != EEXIST) rc = errno;
        *q = c;
        if (rc || !c) break;
    }
    free(p);
    return rc;
}

/* Opens <data_dir>/zwibbler.db, creating the directory, the file and the reference
 * tables when missing. Returns NULL with a reason in err on failure. */
struct store *store_sqlite_open(const struct store_config *cfg, char *err, size_t err_len)
{
    struct sq_store *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, err_len, "sqlite: out of memory");
        return NULL;
    }
    st->base.methods = &sq_methods;
    st->nosync = cfg->nosync != 0;
    st->log = cfg->log;
    pthread_mutex_init(&st->rlock, NULL);
    pthread_cond_init(&st->rcond, NULL);
    pthread_mutex_init(&st->touch_lock, NULL);

    const char *dir = cfg->data_dir && *cfg->data_dir ? cfg->data_dir : "/var/lib/zwibbler";
    size_t plen = strlen(dir) + sizeof "/zwibbler.db";
    if (!(st->path = malloc(plen))) {
        snprintf(err, err_len, "sqlite: out of memory");
        goto fail;
    }
    snprintf(st->path, plen, "%s/zwibbler.db", dir);
    struct stat sb;
    int mrc = make_dirs(dir);
    if (mrc) {
        snprintf(err, err_len, "sqlite: data directory %s: %s", dir, strerror(mrc));
        goto fail;
    }
    if (stat(dir, &sb) != 0) {
        snprintf(err, err_len, "sqlite: data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, err_len, "sqlite: data directory %s: not a directory", dir);
        goto fail;
    }
    if (!sqlite3_threadsafe()) {
        snprintf(err, err_len, "sqlite: library built without thread support");
        goto fail;
    }
    if (conn_open(st, &st->writer, true, err, err_len) != 0) goto fail;

    int nreaders = cfg->max_readers
                       ? (int)(cfg->max_readers < MAX_READERS ? cfg->max_readers : MAX_READERS)
                       : DEFAULT_READERS;
    for (int i = 0; i < nreaders; i++) {
        if (conn_open(st, &st->readers[i], false, err, err_len) != 0) goto fail;
        st->nreaders++;
        st->free_readers[st->nfree++] = i;
    }
    /* Touches are not deferred: a batch starts as soon as anything is queued. */
    st->queue = (struct commit_queue){
        .run = commit_batch, .release = free_op, .after = maybe_checkpoint, .arg = st
    };
    if (commit_queue_start(&st->queue) != 0) {
        snprintf(err, err_len, "sqlite: cannot start committer thread");
        goto fail;
    }
    return &st->base;
fail:
    sq_close(&st->base);
    return NULL;
}
