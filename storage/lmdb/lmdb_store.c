/* lmdb_store: the LMDB backend of store.h — chunked documents, group commit through
 * one committer thread, map growth on MDB_MAP_FULL, keys, tokens and expiry sweep.
 *
 * Layout (named databases, all integers big-endian so memcmp order is numeric order):
 *   docs     doc id (up to 511 bytes)            -> number u64, length u64,
 *                                                   last_chunk u64, last_access i64
 *   longdocs SHA-256(doc id) (longer ids)        -> the same 32-byte header, doc id
 *   chunks   number u64, offset u64              -> bytes [offset, offset + size)
 *   keys     id_len u16, doc id, name            -> version u32, value
 *        or  0xFFFF, SHA-256(doc id), name       -> version u32, value
 *   tokens   token                               -> expires i64, perms[8], user_len u32,
 *                                                   doc_len u32, user id, doc id
 *   tokusers user_len u16, user id, token        -> (empty)   per-user index
 *   tokexp   expires (sign-flipped u64), token    -> (empty)   expiry index for sweep
 *   meta     "format" -> u32, "next_doc" -> u64
 * Document numbers are never reused, so chunks of a deleted document can never be
 * mistaken for those of a later one. Keys carry a length-prefixed id because ids may
 * hold any byte (a separator would be ambiguous), and so exist without a docs row.
 *
 * Long ids: LMDB keys are at most 511 bytes, ids may be far longer (a protocol-3 INIT
 * carries up to 4 GiB). An id that fits is its own key, as it always was, so data
 * written before long ids existed reads the same. A longer id is keyed by its SHA-256
 * in longdocs, whose record keeps the full id after the header; every access compares
 * it, so a second id with the same hash is refused (STORE_EIO, logged) rather than
 * given the first one's bytes. A key whose (id, name) does not fit the direct form is
 * stored under 0xFFFF + SHA-256(id): the u16 of a direct key is an id length, at most
 * 509, so the two forms cannot meet. Key records do not repeat the id; a key of a long
 * id is only reached after its document was opened, whose record was compared.
 *
 * Concurrency: readers run their own MDB_RDONLY transactions (MDB_NOTLS: any thread,
 * any number up to max_readers). All writes go to the committer thread (group
 * commit). map_lock is a writer-preferring rwlock: every transaction, the committer's
 * write transaction included, holds it shared; growing the map takes it exclusively,
 * since mdb_env_set_mapsize needs no transaction alive in the process.
 */
#include "lmdb_store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/sha.h>

#include "bytes.h"
#include "commit_queue.h"
#include "mono.h"
#include "store.h"
#include "store_log.h"

#define MAX_KEY 511                   /* LMDB's compiled-in MDB_MAXKEYSIZE */
#define HASH_SIZE 32                  /* SHA-256, the key of a long id */
#define HASHED_PREFIX (2 + HASH_SIZE) /* 0xFFFF, SHA-256: keys of a long (id, name) */
#define MAX_KEY_NAME (MAX_KEY - HASHED_PREFIX)
#define INITIAL_MAP_SIZE ((size_t)64 << 20) /* doubled on MDB_MAP_FULL */
#define DEFAULT_MAX_READERS 4096
#define CHUNK_BUF_MAX 16384         /* upper bound of the merge size below */
#define TOUCH_GRANULARITY 10        /* s: a read refreshes last access at most this often */
#define TOUCH_FLUSH_NS 1000000000LL /* a pending touch waits at most this for a commit */
#define TOUCH_QUEUE_MAX 10000       /* ...or until this many operations are pending */
#define SWEEP_DOCS_PER_TXN 64
#define SWEEP_SCAN_PER_READ 4096 /* headers looked at per sweep read transaction */
#define SWEEP_TOKENS_PER_TXN 256
#define FORMAT_VERSION 1u
#define HEADER_SIZE 32
#define TOKEN_FIXED 24 /* expires, perms[8], user_len, doc_len */

/* ---- encoding ---------------------------------------------------------------- */

/* Signed seconds to an unsigned key that sorts in numeric order. */
static uint64_t time_key(int64_t t) { return (uint64_t)t ^ ((uint64_t)1 << 63); }

struct doc_header {
    uint64_t num;
    uint64_t length;
    uint64_t last_chunk; /* offset of the last chunk (meaningful when length > 0) */
    int64_t last_access;
};

static void header_encode(uint8_t *p, const struct doc_header *h)
{
    be_put64(p, h->num);
    be_put64(p + 8, h->length);
    be_put64(p + 16, h->last_chunk);
    be_put64(p + 24, (uint64_t)h->last_access);
}
static int header_decode(const MDB_val *v, struct doc_header *h)
{
    if (v->mv_size != HEADER_SIZE) return -1;
    const uint8_t *p = v->mv_data;
    h->num = be_get64(p);
    h->length = be_get64(p + 8);
    h->last_chunk = be_get64(p + 16);
    h->last_access = (int64_t)be_get64(p + 24);
    return 0;
}

/* ---- the store and its queue --------------------------------------------------- */

enum op_kind {
    OP_CREATE,
    OP_APPEND,
    OP_DELETE,
    OP_KEY_SET,
    OP_TOKEN_ADD,
    OP_USER_UPDATE,
    OP_TOUCH,
    OP_SWEEP_DOCS,
    OP_SWEEP_TOKENS,
};

/* One write request. Waited-for ops live on the caller's stack (their buffers stay
 * valid while the caller waits); touches are detached, heap-allocated, freed by the
 * committer. */
struct op {
    struct commit_queue_item item; /* first: the queue's items are ops */
    enum op_kind kind;
    const char *id; /* document id, token or user id */
    size_t id_len;
    const uint8_t *name;
    size_t name_len;
    const uint8_t *data;
    size_t len;
    uint64_t expected; /* append: expected length; key_set: old version */
    uint32_t new_version;
    const struct store_token *tok;
    const char *perms;
    int64_t now;    /* sweep: the caller's clock */
    int64_t cutoff; /* sweep docs: last access before this goes */
    MDB_val *cand;  /* sweep docs: candidate ids */
    size_t n_cand;
    /* results */
    int rc;
    uint64_t out;
    bool more;
};

static struct op *next_op(struct op *op) { return (struct op *)op->item.next; }

struct lmdb_store {
    struct store base;
    MDB_env *env;
    MDB_dbi docs, longdocs, chunks, keys, tokens, tokusers, tokexp, meta;
    bool nosync;
    struct store_log log;
    /* Small appends join the last chunk while it stays within this size: one page
     * less LMDB's 16-byte page header, so a full chunk fills one overflow page
     * exactly (4096 would spill into a second page and waste half the space). */
    size_t merge_max;
    pthread_rwlock_t map_lock;

    struct commit_queue queue; /* to the committer thread */

    pthread_mutex_t stats_lock;
    struct store_lmdb_stats stats;
};

static const struct store_methods lmdb_methods;

/* Maps an LMDB/errno code to a store code, logging backend failures. */
static int store_err(struct lmdb_store *ls, const char *what, int rc)
{
    if (rc == 0) return STORE_OK;
    if (rc == ENOMEM) return STORE_ENOMEM;
    if (rc == MDB_READERS_FULL) {
        store_log_warn(&ls->log, "lmdb: %s: %s (raise max readers)", what, mdb_strerror(rc));
        return STORE_EUNAVAILABLE;
    }
    store_log_error(&ls->log, "lmdb: %s: %s", what, mdb_strerror(rc));
    return STORE_EIO;
}

/* Any length but 0: ids too long for an LMDB key are hashed (see the top). */
static bool valid_doc_id(size_t id_len) { return id_len > 0 && id_len <= UINT32_MAX; }

/* ---- map growth and read transactions ----------------------------------------- */

/* Doubles the map (or adopts another process's size when grow is false). Takes
 * map_lock exclusively: no transaction may be alive. Returns an LMDB code. */
static int remap(struct lmdb_store *ls, bool grow)
{
    pthread_rwlock_wrlock(&ls->map_lock);
    MDB_envinfo info;
    mdb_env_info(ls->env, &info);
    size_t size = grow ? info.me_mapsize * 2 : 0;
    int rc = mdb_env_set_mapsize(ls->env, size);
    if (rc == 0) mdb_env_info(ls->env, &info);
    pthread_rwlock_unlock(&ls->map_lock);
    if (rc) {
        store_log_error(&ls->log, "lmdb: growing the map to %zu bytes failed: %s", size,
                        mdb_strerror(rc));
        return rc;
    }
    pthread_mutex_lock(&ls->stats_lock);
    if (grow) ls->stats.map_resizes++;
    ls->stats.map_size = info.me_mapsize;
    pthread_mutex_unlock(&ls->stats_lock);
    store_log_info(&ls->log, "lmdb: map is now %zu MiB", info.me_mapsize >> 20);
    return 0;
}

static int read_begin(struct lmdb_store *ls, MDB_txn **txn)
{
    for (;;) {
        pthread_rwlock_rdlock(&ls->map_lock);
        int rc = mdb_txn_begin(ls->env, NULL, MDB_RDONLY, txn);
        if (rc == 0) return STORE_OK;
        pthread_rwlock_unlock(&ls->map_lock);
        /* Only if another process grew the map: adopt its size and retry. */
        if (rc == MDB_MAP_RESIZED && remap(ls, false) == 0) continue;
        return store_err(ls, "read transaction", rc);
    }
}

static void read_end(struct lmdb_store *ls, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&ls->map_lock);
}

/* ---- helpers used inside transactions (return LMDB codes) ----------------------- */

/* Where a document's header lives: its id in docs, or its SHA-256 in longdocs. The
 * key may point into ref->hash, so a doc_ref is used where it was made. */
struct doc_ref {
    MDB_dbi dbi;
    MDB_val key;
    bool is_long;
    uint8_t hash[HASH_SIZE];
};

static void doc_ref_init(struct lmdb_store *ls, const char *id, size_t id_len, struct doc_ref *r)
{
    r->is_long = id_len > MAX_KEY;
    if (!r->is_long) {
        r->dbi = ls->docs;
        r->key = (MDB_val){ id_len, (void *)id };
        return;
    }
    SHA256((const unsigned char *)id, id_len, r->hash);
    r->dbi = ls->longdocs;
    r->key = (MDB_val){ HASH_SIZE, r->hash };
}

/* Returned by header_get when a long id's hash is held by another id. */
#define ID_CLASH MDB_KEYEXIST

static int header_get(struct lmdb_store *ls, MDB_txn *txn, const char *id, size_t id_len,
                      struct doc_header *h)
{
    struct doc_ref r;
    doc_ref_init(ls, id, id_len, &r);
    MDB_val v;
    int rc = mdb_get(txn, r.dbi, &r.key, &v);
    if (rc) return rc;
    if (r.is_long) {
        if (v.mv_size != HEADER_SIZE + id_len ||
            memcmp((const uint8_t *)v.mv_data + HEADER_SIZE, id, id_len) != 0) {
            store_log_error(&ls->log,
                            "lmdb: two document ids (one of %zu bytes) share a SHA-256; "
                            "refusing the second",
                            id_len);
            return ID_CLASH;
        }
        v.mv_size = HEADER_SIZE;
    }
    if (header_decode(&v, h)) {
        store_log_error(&ls->log, "lmdb: document header of %zu bytes (want %d)", v.mv_size,
                        HEADER_SIZE);
        return MDB_CORRUPTED;
    }
    return 0;
}

static int header_put(struct lmdb_store *ls, MDB_txn *txn, const char *id, size_t id_len,
                      const struct doc_header *h)
{
    struct doc_ref r;
    doc_ref_init(ls, id, id_len, &r);
    MDB_val v = { HEADER_SIZE + (r.is_long ? id_len : 0), NULL };
    int rc = mdb_put(txn, r.dbi, &r.key, &v, MDB_RESERVE);
    if (rc) return rc;
    header_encode(v.mv_data, h);
    if (r.is_long) memcpy((uint8_t *)v.mv_data + HEADER_SIZE, id, id_len);
    return 0;
}

static int chunk_put(struct lmdb_store *ls, MDB_txn *txn, uint64_t num, uint64_t off,
                     const void *data, size_t len)
{
    uint8_t kb[16];
    be_put64(kb, num);
    be_put64(kb + 8, off);
    MDB_val k = { 16, kb }, v = { len, (void *)data };
    return mdb_put(txn, ls->chunks, &k, &v, 0);
}

/* Deletes every record of dbi whose key starts with prefix. */
static int delete_prefix(MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t plen)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc) return rc;
    MDB_val k = { plen, (void *)prefix }, v;
    /* After mdb_cursor_del the cursor already sits on the next record; LMDB's
     * MDB_NEXT knows this (C_DEL) and does not skip it. */
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
        rc = mdb_cursor_del(c, 0);
        if (rc) goto done;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) rc = 0;
done:
    mdb_cursor_close(c);
    return rc;
}

/* The prefix of a document's keys stored by hash: 0xFFFF, SHA-256(id). */
static size_t keys_hashed_prefix(uint8_t *buf, const char *id, size_t id_len)
{
    be_put16(buf, 0xFFFF);
    SHA256((const unsigned char *)id, id_len, buf + 2);
    return HASHED_PREFIX;
}

/* Key-record prefix of a document's key whose name is name_len bytes long: id_len
 * u16 + id when that leaves room for the name, else the hashed prefix. buf holds
 * MAX_KEY bytes. Returns the prefix length. */
static size_t keys_prefix(uint8_t *buf, const char *id, size_t id_len, size_t name_len)
{
    if (id_len > MAX_KEY - 2 || name_len > MAX_KEY - 2 - id_len)
        return keys_hashed_prefix(buf, id, id_len);
    be_put16(buf, (uint16_t)id_len);
    memcpy(buf + 2, id, id_len);
    return 2 + id_len;
}

/* The prefixes a document's keys may have: the direct one (short ids only), then the
 * hashed one. Returns how many (1 or 2); prefix[i] holds MAX_KEY bytes. */
static int keys_prefixes(uint8_t prefix[2][MAX_KEY], size_t plen[2], const char *id, size_t id_len)
{
    int n = 0;
    if (id_len <= MAX_KEY - 2) plen[n] = keys_prefix(prefix[n], id, id_len, 0), n++;
    plen[n] = keys_hashed_prefix(prefix[n], id, id_len);
    return n + 1;
}

/* Removes chunks, keys and (when present) the header of a document. */
static int delete_doc(struct lmdb_store *ls, MDB_txn *txn, const char *id, size_t id_len,
                      const struct doc_header *h)
{
    int rc;
    if (h) {
        uint8_t num[8];
        be_put64(num, h->num);
        rc = delete_prefix(txn, ls->chunks, num, 8);
        if (rc) return rc;
        struct doc_ref r;
        doc_ref_init(ls, id, id_len, &r);
        rc = mdb_del(txn, r.dbi, &r.key, NULL);
        if (rc) return rc;
    }
    uint8_t prefix[2][MAX_KEY];
    size_t plen[2];
    int n = keys_prefixes(prefix, plen, id, id_len);
    for (int i = 0; i < n; i++) {
        rc = delete_prefix(txn, ls->keys, prefix[i], plen[i]);
        if (rc) return rc;
    }
    return 0;
}

static int next_doc_number(struct lmdb_store *ls, MDB_txn *txn, uint64_t *num)
{
    MDB_val k = { 8, "next_doc" }, v;
    int rc = mdb_get(txn, ls->meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        *num = 1;
    else if (rc)
        return rc;
    else if (v.mv_size != 8)
        return MDB_CORRUPTED;
    else
        *num = be_get64(v.mv_data);
    uint8_t buf[8];
    be_put64(buf, *num + 1);
    v.mv_size = 8;
    v.mv_data = buf;
    return mdb_put(txn, ls->meta, &k, &v, 0);
}

/* Token record fields; strings point into the record. */
struct token_rec {
    int64_t expires;
    const char *perms; /* 8 bytes, NUL-padded */
    const char *user;
    size_t user_len;
    const char *doc;
    size_t doc_len;
};

static int token_decode(const MDB_val *v, struct token_rec *r)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < TOKEN_FIXED) return -1;
    r->expires = (int64_t)be_get64(p);
    r->perms = (const char *)p + 8;
    r->user_len = be_get32(p + 16);
    r->doc_len = be_get32(p + 20);
    if ((uint64_t)TOKEN_FIXED + r->user_len + r->doc_len != v->mv_size) return -1;
    r->user = (const char *)p + TOKEN_FIXED;
    r->doc = r->user + r->user_len;
    return 0;
}

static size_t user_index_key(uint8_t *buf, const char *user, size_t user_len, const char *token,
                             size_t token_len)
{
    be_put16(buf, (uint16_t)user_len);
    memcpy(buf + 2, user, user_len);
    memcpy(buf + 2 + user_len, token, token_len);
    return 2 + user_len + token_len;
}

static size_t expiry_key(uint8_t *buf, int64_t expires, const char *token, size_t token_len)
{
    be_put64(buf, time_key(expires));
    memcpy(buf + 8, token, token_len);
    return 8 + token_len;
}

/* Deletes a token's record and both index entries. */
static int token_remove(struct lmdb_store *ls, MDB_txn *txn, const char *token, size_t token_len,
                        const struct token_rec *r)
{
    uint8_t kb[MAX_KEY];
    int rc;
    if (2 + r->user_len + token_len <= MAX_KEY) {
        MDB_val k = { user_index_key(kb, r->user, r->user_len, token, token_len), kb };
        rc = mdb_del(txn, ls->tokusers, &k, NULL);
        if (rc && rc != MDB_NOTFOUND) return rc;
    }
    MDB_val k = { expiry_key(kb, r->expires, token, token_len), kb };
    rc = mdb_del(txn, ls->tokexp, &k, NULL);
    if (rc && rc != MDB_NOTFOUND) return rc;
    MDB_val tk = { token_len, (void *)token };
    rc = mdb_del(txn, ls->tokens, &tk, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* ---- operations run by the committer (return LMDB codes; result in op) --------- */

static int exec_create(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    struct doc_header h;
    int rc = header_get(ls, txn, op->id, op->id_len, &h);
    if (rc == 0) {
        op->rc = STORE_EEXISTS;
        return 0;
    }
    if (rc != MDB_NOTFOUND) return rc;
    h = (struct doc_header){ .length = op->len, .last_chunk = 0, .last_access = now };
    rc = next_doc_number(ls, txn, &h.num);
    if (rc) return rc;
    if (op->len) {
        rc = chunk_put(ls, txn, h.num, 0, op->data, op->len);
        if (rc) return rc;
    }
    rc = header_put(ls, txn, op->id, op->id_len, &h);
    if (rc) return rc;
    op->rc = STORE_OK;
    op->out = op->len;
    return 0;
}

static int exec_append(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    struct doc_header h;
    int rc = header_get(ls, txn, op->id, op->id_len, &h);
    if (rc == MDB_NOTFOUND) {
        op->rc = STORE_ENOTFOUND;
        return 0;
    }
    if (rc) return rc;
    if (h.length != op->expected) {
        op->rc = STORE_EMISMATCH;
        op->out = h.length;
        return 0;
    }
    if (op->len) {
        uint64_t last_len = h.length - h.last_chunk;
        if (h.length > 0 && last_len + op->len <= ls->merge_max) {
            /* Small append: rewrite the small last chunk with it, so a stream of tiny
             * appends makes ~4 KB records, each write costing at most ~4 KB. */
            uint8_t buf[CHUNK_BUF_MAX], kb[16];
            be_put64(kb, h.num);
            be_put64(kb + 8, h.last_chunk);
            MDB_val k = { 16, kb }, v;
            rc = mdb_get(txn, ls->chunks, &k, &v);
            if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != last_len)) {
                store_log_error(&ls->log,
                                "lmdb: last chunk of document %llu is missing or of the wrong size",
                                (unsigned long long)h.num);
                return MDB_CORRUPTED;
            }
            if (rc) return rc;
            memcpy(buf, v.mv_data, last_len);
            memcpy(buf + last_len, op->data, op->len);
            rc = chunk_put(ls, txn, h.num, h.last_chunk, buf, last_len + op->len);
        } else {
            rc = chunk_put(ls, txn, h.num, h.length, op->data, op->len);
            h.last_chunk = h.length;
        }
        if (rc) return rc;
        h.length += op->len;
    }
    h.last_access = now;
    rc = header_put(ls, txn, op->id, op->id_len, &h);
    if (rc) return rc;
    op->rc = STORE_OK;
    op->out = h.length;
    return 0;
}

static int exec_delete(struct lmdb_store *ls, MDB_txn *txn, struct op *op)
{
    struct doc_header h;
    int rc = header_get(ls, txn, op->id, op->id_len, &h);
    if (rc && rc != MDB_NOTFOUND) return rc;
    bool found = rc == 0;
    /* Keys go even without a docs row: they may exist before it (store.h). */
    rc = delete_doc(ls, txn, op->id, op->id_len, found ? &h : NULL);
    if (rc) return rc;
    op->rc = found ? STORE_OK : STORE_ENOTFOUND;
    return 0;
}

static int exec_key_set(struct lmdb_store *ls, MDB_txn *txn, struct op *op)
{
    uint8_t kb[MAX_KEY];
    size_t klen = keys_prefix(kb, op->id, op->id_len, op->name_len);
    memcpy(kb + klen, op->name, op->name_len);
    klen += op->name_len;
    MDB_val k = { klen, kb }, v;
    int rc = mdb_get(txn, ls->keys, &k, &v);
    if (rc == 0) {
        if (v.mv_size < 4) return MDB_CORRUPTED;
        if (be_get32(v.mv_data) != op->expected) {
            op->rc = STORE_EMISMATCH;
            return 0;
        }
    } else if (rc == MDB_NOTFOUND) {
        if (op->expected != 0) {
            op->rc = STORE_EMISMATCH;
            return 0;
        }
    } else {
        return rc;
    }
    v.mv_size = 4 + op->len;
    rc = mdb_put(txn, ls->keys, &k, &v, MDB_RESERVE);
    if (rc) return rc;
    be_put32(v.mv_data, op->new_version);
    if (op->len) memcpy((uint8_t *)v.mv_data + 4, op->data, op->len);
    op->rc = STORE_OK;
    return 0;
}

static int exec_token_add(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    const struct store_token *t = op->tok;
    const char *user = t->user_id ? t->user_id : "";
    size_t user_len = strlen(user);
    MDB_val k = { op->id_len, (void *)op->id }, v;
    int rc = mdb_get(txn, ls->tokens, &k, &v);
    if (rc == 0) {
        struct token_rec old;
        if (token_decode(&v, &old)) return MDB_CORRUPTED;
        if (old.expires > now) {
            op->rc = STORE_EEXISTS;
            return 0;
        }
        rc = token_remove(ls, txn, op->id, op->id_len, &old); /* expired: replace it */
        if (rc) return rc;
    } else if (rc != MDB_NOTFOUND) {
        return rc;
    }
    v.mv_size = TOKEN_FIXED + user_len + t->doc_id_len;
    rc = mdb_put(txn, ls->tokens, &k, &v, MDB_RESERVE);
    if (rc) return rc;
    uint8_t *p = v.mv_data;
    be_put64(p, (uint64_t)t->expires);
    memset(p + 8, 0, 8);
    memcpy(p + 8, t->permissions, strnlen(t->permissions, 7));
    be_put32(p + 16, (uint32_t)user_len);
    be_put32(p + 20, (uint32_t)t->doc_id_len);
    memcpy(p + TOKEN_FIXED, user, user_len);
    if (t->doc_id_len) memcpy(p + TOKEN_FIXED + user_len, t->doc_id, t->doc_id_len);

    uint8_t kb[MAX_KEY];
    MDB_val empty = { 0, NULL };
    MDB_val uk = { user_index_key(kb, user, user_len, op->id, op->id_len), kb };
    rc = mdb_put(txn, ls->tokusers, &uk, &empty, 0);
    if (rc) return rc;
    MDB_val ek = { expiry_key(kb, t->expires, op->id, op->id_len), kb };
    rc = mdb_put(txn, ls->tokexp, &ek, &empty, 0);
    if (rc) return rc;
    op->rc = STORE_OK;
    return 0;
}

static int exec_user_update(struct lmdb_store *ls, MDB_txn *txn, struct op *op)
{
    uint8_t prefix[MAX_KEY];
    size_t plen = 2 + op->id_len;
    be_put16(prefix, (uint16_t)op->id_len);
    memcpy(prefix + 2, op->id, op->id_len);
    char perms[8] = { 0 };
    memcpy(perms, op->perms, strnlen(op->perms, 7));

    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, ls->tokusers, &c);
    if (rc) return rc;
    MDB_val k = { plen, prefix }, v;
    uint64_t n = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
        MDB_val tk = { k.mv_size - plen, (uint8_t *)k.mv_data + plen }, tv;
        rc = mdb_get(txn, ls->tokens, &tk, &tv);
        if (rc == MDB_NOTFOUND) continue; /* stale index entry: harmless */
        if (rc) goto done;
        if (tv.mv_size < TOKEN_FIXED) {
            rc = MDB_CORRUPTED;
            goto done;
        }
        if (memcmp((uint8_t *)tv.mv_data + 8, perms, 8) == 0) continue;
        /* Records are small; rewrite through a copy since tv points into the map. */
        uint8_t *copy = malloc(tv.mv_size);
        if (!copy) {
            rc = ENOMEM;
            goto done;
        }
        memcpy(copy, tv.mv_data, tv.mv_size);
        memcpy(copy + 8, perms, 8);
        MDB_val nv = { tv.mv_size, copy };
        rc = mdb_put(txn, ls->tokens, &tk, &nv, 0);
        free(copy);
        if (rc) goto done;
        n++;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
done:
    mdb_cursor_close(c);
    if (rc == 0) {
        op->rc = STORE_OK;
        op->out = n;
    }
    return rc;
}

static int exec_touch(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    struct doc_header h;
    int rc = header_get(ls, txn, op->id, op->id_len, &h);
    if (rc == MDB_NOTFOUND) return 0; /* deleted meanwhile */
    if (rc) return rc;
    if (h.last_access >= now) return 0;
    h.last_access = now;
    return header_put(ls, txn, op->id, op->id_len, &h);
}

static int exec_sweep_docs(struct lmdb_store *ls, MDB_txn *txn, struct op *op)
{
    op->out = 0;
    for (size_t i = 0; i < op->n_cand; i++) {
        struct doc_header h;
        const char *id = op->cand[i].mv_data;
        size_t id_len = op->cand[i].mv_size;
        int rc = header_get(ls, txn, id, id_len, &h);
        if (rc == MDB_NOTFOUND) continue;
        if (rc) return rc;
        if (h.last_access >= op->cutoff) continue; /* used since the scan */
        rc = delete_doc(ls, txn, id, id_len, &h);
        if (rc) return rc;
        op->out++;
    }
    op->rc = STORE_OK;
    return 0;
}

static int exec_sweep_tokens(struct lmdb_store *ls, MDB_txn *txn, struct op *op)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, ls->tokexp, &c);
    if (rc) return rc;
    MDB_val k, v;
    uint64_t n = 0;
    op->more = false;
    uint64_t limit = time_key(op->now);
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size < 8 || be_get64(k.mv_data) > limit) break; /* expired iff <= now */
        if (n == SWEEP_TOKENS_PER_TXN) {
            op->more = true;
            break;
        }
        char token[MAX_KEY];
        size_t token_len = k.mv_size - 8;
        memcpy(token, (uint8_t *)k.mv_data + 8, token_len);
        int64_t expires = (int64_t)(be_get64(k.mv_data) ^ ((uint64_t)1 << 63));
        rc = mdb_cursor_del(c, 0);
        if (rc) goto done;
        MDB_val tk = { token_len, token }, tv;
        rc = mdb_get(txn, ls->tokens, &tk, &tv);
        if (rc == 0) {
            struct token_rec r;
            if (token_decode(&tv, &r)) {
                rc = MDB_CORRUPTED;
                goto done;
            }
            /* Only when the record is the one this index entry was made for. */
            if (r.expires == expires) rc = token_remove(ls, txn, token, token_len, &r);
        } else if (rc == MDB_NOTFOUND) {
            rc = 0;
        }
        if (rc) goto done;
        n++;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
done:
    mdb_cursor_close(c);
    if (rc == 0) {
        op->rc = STORE_OK;
        op->out = n;
    }
    return rc;
}

static int exec_op_kind(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    switch (op->kind) {
    case OP_CREATE: return exec_create(ls, txn, op, now);
    case OP_APPEND: return exec_append(ls, txn, op, now);
    case OP_DELETE: return exec_delete(ls, txn, op);
    case OP_KEY_SET: return exec_key_set(ls, txn, op);
    case OP_TOKEN_ADD: return exec_token_add(ls, txn, op, now);
    case OP_USER_UPDATE: return exec_user_update(ls, txn, op);
    case OP_TOUCH: return exec_touch(ls, txn, op, now);
    case OP_SWEEP_DOCS: return exec_sweep_docs(ls, txn, op);
    case OP_SWEEP_TOKENS: return exec_sweep_tokens(ls, txn, op);
    }
    return EINVAL;
}

/* A hash clash fails only its own operation (before it wrote anything: header_get
 * comes first), not the batch it rides in. */
static int exec_op(struct lmdb_store *ls, MDB_txn *txn, struct op *op, int64_t now)
{
    int rc = exec_op_kind(ls, txn, op, now);
    if (rc != ID_CLASH) return rc;
    op->rc = STORE_EIO;
    return 0;
}

/* ---- the committer --------------------------------------------------------------- */

static void record_commit(struct lmdb_store *ls, size_t n, uint64_t ns)
{
    pthread_mutex_lock(&ls->stats_lock);
    struct store_lmdb_stats *st = &ls->stats;
    st->commits++;
    st->ops += n;
    if (n > st->max_batch) st->max_batch = n;
    st->commit_ns += ns;
    if (ns > st->max_commit_ns) st->max_commit_ns = ns;
    int b = 0;
    while (b < STORE_LMDB_HIST - 1 && (n >> (b + 1)) != 0) b++;
    st->batch_hist[b]++;
    uint64_t us = ns / 1000;
    int l = 0;
    while (l < STORE_LMDB_LAT_HIST - 1 && (us >> l) != 0) l++;
    st->commit_hist[l]++;
    pthread_mutex_unlock(&ls->stats_lock);
}

/* Runs n ops from `first` in one write transaction, growing the map on
 * MDB_MAP_FULL and splitting the batch on MDB_TXN_FULL (too many dirty pages). */
static void run_batch(struct lmdb_store *ls, struct op *first, size_t n)
{
    int rc;
    for (;;) {
        uint64_t t0 = mono_ns();
        MDB_txn *txn;
        pthread_rwlock_rdlock(&ls->map_lock);
        rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
        if (rc == 0) {
            int64_t now = time(NULL);
            struct op *op = first;
            for (size_t i = 0; i < n && rc == 0; i++, op = next_op(op))
                rc = exec_op(ls, txn, op, now);
            if (rc == 0)
                rc = mdb_txn_commit(txn); /* frees txn, also on failure */
            else
                mdb_txn_abort(txn);
        }
        pthread_rwlock_unlock(&ls->map_lock);
        if (rc == 0) {
            record_commit(ls, n, mono_ns() - t0);
            return;
        }
        if (rc == MDB_MAP_FULL && remap(ls, true) == 0) continue;
        if (rc == MDB_MAP_RESIZED && remap(ls, false) == 0) continue;
        if (rc == MDB_TXN_FULL && n > 1) {
            struct op *second = first;
            for (size_t i = 0; i < n / 2; i++) second = next_op(second);
            run_batch(ls, first, n / 2);
            run_batch(ls, second, n - n / 2);
            return;
        }
        break;
    }
    store_log_error(&ls->log, "lmdb: commit of %zu operation(s) failed: %s", n, mdb_strerror(rc));
    struct op *op = first;
    for (size_t i = 0; i < n; i++, op = next_op(op)) op->rc = STORE_EIO;
    pthread_mutex_lock(&ls->stats_lock);
    ls->stats.failed_commits++;
    pthread_mutex_unlock(&ls->stats_lock);
}

static void commit_batch(void *arg, struct commit_queue_item *first, size_t n)
{
    run_batch(arg, (struct op *)first, n);
}

static void free_touch(void *arg, struct commit_queue_item *item)
{
    (void)arg;
    free(item);
}

/* Queues op and waits for its commit. Returns op->rc. */
static int submit(struct lmdb_store *ls, struct op *op)
{
    op->rc = STORE_EIO;
    commit_queue_submit(&ls->queue, &op->item);
    return op->rc;
}

/* Refreshes a document's last access after a read, without waiting: the touch rides
 * along with the next commit, or gets its own within TOUCH_FLUSH_NS. */
static void maybe_touch(struct lmdb_store *ls, const char *id, size_t id_len, int64_t last)
{
    if ((int64_t)time(NULL) - last < TOUCH_GRANULARITY) return;
    struct op *op = calloc(1, sizeof *op + id_len);
    if (!op) return; /* only a hint; the next read retries */
    char *copy = (char *)(op + 1);
    memcpy(copy, id, id_len);
    op->kind = OP_TOUCH;
    op->id = copy;
    op->id_len = id_len;
    commit_queue_post(&ls->queue, &op->item);
}

/* ---- methods ----------------------------------------------------------------------- */

static int lmdb_ping(struct store *s)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    MDB_txn *txn;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    MDB_val k = { 6, "format" }, v;
    int mrc = mdb_get(txn, ls->meta, &k, &v);
    read_end(ls, txn);
    return store_err(ls, "ping", mrc);
}

static int lmdb_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data,
                           size_t len)
{
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    struct op op = { .kind = OP_CREATE, .id = id, .id_len = id_len, .data = data, .len = len };
    return submit((struct lmdb_store *)s, &op);
}

static int lmdb_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    MDB_txn *txn;
    struct doc_header h;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    int mrc = header_get(ls, txn, id, id_len, &h);
    read_end(ls, txn);
    if (mrc == MDB_NOTFOUND) return STORE_ENOTFOUND;
    if (mrc) return store_err(ls, "doc_length", mrc);
    *len = h.length;
    maybe_touch(ls, id, id_len, h.last_access);
    return STORE_OK;
}

/* Copies bytes [offset, offset + n) of document `num` into out, seeking straight to
 * the chunk that holds offset. Returns an LMDB code. */
static int copy_range(struct lmdb_store *ls, MDB_txn *txn, uint64_t num, uint64_t offset, size_t n,
                      uint8_t *out)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, ls->chunks, &c);
    if (rc) return rc;
    uint8_t kb[16];
    be_put64(kb, num);
    be_put64(kb + 8, offset);
    MDB_val k = { 16, kb }, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    /* Unless a chunk starts exactly at offset, the one holding it is the previous. */
    if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    else if (rc == 0 && !(k.mv_size == 16 && memcmp(k.mv_data, kb, 16) == 0))
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    size_t done = 0;
    while (rc == 0 && done < n) {
        if (k.mv_size != 16 || be_get64(k.mv_data) != num) break;
        uint64_t start = be_get64((uint8_t *)k.mv_data + 8);
        uint64_t pos = offset + done;
        if (start > pos || pos - start >= v.mv_size) break; /* a hole */
        size_t take = v.mv_size - (size_t)(pos - start);
        if (take > n - done) take = n - done;
        memcpy(out + done, (uint8_t *)v.mv_data + (pos - start), take);
        done += take;
        if (done < n) rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND) return rc;
    if (done != n) {
        store_log_error(&ls->log, "lmdb: document %llu: chunks do not cover bytes %llu..%llu",
                        (unsigned long long)num, (unsigned long long)(offset + done),
                        (unsigned long long)(offset + n));
        return MDB_CORRUPTED;
    }
    return 0;
}

static int lmdb_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                         uint8_t **data, size_t *len, uint64_t *total)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    MDB_txn *txn;
    struct doc_header h;
    uint8_t *buf = NULL;
    size_t n = 0;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    int mrc = header_get(ls, txn, id, id_len, &h);
    if (mrc == MDB_NOTFOUND) {
        rc = STORE_ENOTFOUND;
        goto fail;
    }
    if (mrc) goto fail_mdb;
    if (total) *total = h.length;
    if (offset > h.length) {
        rc = STORE_ERANGE;
        goto fail;
    }
    if (h.length - offset > SIZE_MAX) {
        rc = STORE_ENOMEM;
        goto fail;
    }
    n = (size_t)(h.length - offset);
    if (n) {
        buf = malloc(n);
        if (!buf) {
            rc = STORE_ENOMEM;
            goto fail;
        }
        mrc = copy_range(ls, txn, h.num, offset, n, buf);
        if (mrc) goto fail_mdb;
    }
    read_end(ls, txn);
    *data = buf;
    *len = n;
    maybe_touch(ls, id, id_len, h.last_access);
    return STORE_OK;
fail_mdb:
    rc = store_err(ls, "doc_read", mrc);
fail:
    read_end(ls, txn);
    free(buf);
    return rc;
}

static int lmdb_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected_len,
                           const uint8_t *data, size_t len, uint64_t *new_len)
{
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    struct op op = { .kind = OP_APPEND,
                     .id = id,
                     .id_len = id_len,
                     .data = data,
                     .len = len,
                     .expected = expected_len };
    int rc = submit((struct lmdb_store *)s, &op);
    if ((rc == STORE_OK || rc == STORE_EMISMATCH) && new_len) *new_len = op.out;
    return rc;
}

static int lmdb_doc_delete(struct store *s, const char *id, size_t id_len)
{
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    struct op op = { .kind = OP_DELETE, .id = id, .id_len = id_len };
    return submit((struct lmdb_store *)s, &op);
}

static int lmdb_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len,
                        uint32_t old_version, uint32_t new_version)
{
    if (!valid_doc_id(id_len) || name_len > MAX_KEY_NAME) return STORE_EINVAL;
    struct op op = { .kind = OP_KEY_SET,
                     .id = id,
                     .id_len = id_len,
                     .name = name,
                     .name_len = name_len,
                     .data = value,
                     .len = value_len,
                     .expected = old_version,
                     .new_version = new_version };
    return submit((struct lmdb_store *)s, &op);
}

/* Appends the keys under one prefix to *buf, packed as name_len u32, value_len u32,
 * version u32, name, value. Returns an LMDB code, or ENOMEM. */
static int pack_keys(MDB_cursor *c, const uint8_t *prefix, size_t plen, uint8_t **buf, size_t *used,
                     size_t *cap)
{
    MDB_val k = { plen, (void *)prefix }, v;
    int rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
        if (v.mv_size < 4) return MDB_CORRUPTED;
        size_t name_len = k.mv_size - plen, value_len = v.mv_size - 4;
        size_t need = 12 + name_len + value_len;
        if (*used + need > *cap) {
            size_t ncap = *cap ? *cap * 2 : 4096;
            while (ncap < *used + need) ncap *= 2;
            uint8_t *nb = realloc(*buf, ncap);
            if (!nb) return ENOMEM;
            *buf = nb;
            *cap = ncap;
        }
        uint8_t *p = *buf + *used;
        be_put32(p, (uint32_t)name_len);
        be_put32(p + 4, (uint32_t)value_len);
        memcpy(p + 8, v.mv_data, 4);
        memcpy(p + 12, (uint8_t *)k.mv_data + plen, name_len);
        memcpy(p + 12 + name_len, (uint8_t *)v.mv_data + 4, value_len);
        *used += need;
    }
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int lmdb_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    if (!valid_doc_id(id_len)) return STORE_EINVAL;
    uint8_t prefix[2][MAX_KEY];
    size_t plen[2];
    int nprefix = keys_prefixes(prefix, plen, id, id_len);
    /* Copied out, then fn runs after the transaction: fn may call the store again
     * (a nested read could deadlock against a waiting map resize). */
    uint8_t *buf = NULL;
    size_t used = 0, cap = 0;
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    int mrc = mdb_cursor_open(txn, ls->keys, &c);
    for (int i = 0; mrc == 0 && i < nprefix; i++)
        mrc = pack_keys(c, prefix[i], plen[i], &buf, &used, &cap);
    if (c) mdb_cursor_close(c);
    read_end(ls, txn);
    if (mrc) {
        free(buf);
        return mrc == ENOMEM ? STORE_ENOMEM : store_err(ls, "keys_get", mrc);
    }
    for (size_t off = 0; off < used;) {
        const uint8_t *p = buf + off;
        size_t name_len = be_get32(p), value_len = be_get32(p + 4);
        const uint8_t *name = p + 12;
        if (fn(arg, name, name_len, name + name_len, value_len, be_get32(p + 8))) break;
        off += 12 + name_len + value_len;
    }
    free(buf);
    return STORE_OK;
}

static int lmdb_token_add(struct store *s, const char *token, size_t token_len,
                          const struct store_token *t)
{
    size_t user_len = t->user_id ? strlen(t->user_id) : 0;
    if (token_len == 0 || 8 + token_len > MAX_KEY || 2 + user_len + token_len > MAX_KEY ||
        t->doc_id_len > UINT32_MAX || strnlen(t->permissions, 8) > 7)
        return STORE_EINVAL;
    struct op op = { .kind = OP_TOKEN_ADD, .id = token, .id_len = token_len, .tok = t };
    return submit((struct lmdb_store *)s, &op);
}

static char *dup_bytes(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n) memcpy(d, p, n);
        d[n] = 0;
    }
    return d;
}

static int lmdb_token_get(struct store *s, const char *token, size_t token_len,
                          struct store_token *out)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    if (token_len == 0 || 8 + token_len > MAX_KEY) return STORE_EINVAL;
    MDB_txn *txn;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    MDB_val k = { token_len, (void *)token }, v;
    struct token_rec r;
    int mrc = mdb_get(txn, ls->tokens, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        rc = STORE_ENOTFOUND;
        goto done;
    }
    if (mrc == 0 && token_decode(&v, &r)) mrc = MDB_CORRUPTED;
    if (mrc) {
        rc = store_err(ls, "token_get", mrc);
        goto done;
    }
    if (r.expires <= (int64_t)time(NULL)) {
        rc = STORE_ENOTFOUND;
        goto done;
    }
    memset(out, 0, sizeof *out);
    out->doc_id = dup_bytes(r.doc, r.doc_len);
    out->doc_id_len = r.doc_len;
    out->user_id = dup_bytes(r.user, r.user_len);
    memcpy(out->permissions, r.perms, 7);
    out->permissions[7] = 0;
    out->expires = r.expires;
    if (!out->doc_id || !out->user_id) {
        store_token_clear(out);
        rc = STORE_ENOMEM;
    }
done:
    read_end(ls, txn);
    return rc;
}

static int lmdb_user_update(struct store *s, const char *user_id, size_t user_len,
                            const char *permissions)
{
    if (2 + user_len > MAX_KEY || strnlen(permissions, 8) > 7) return STORE_EINVAL;
    struct op op = {
        .kind = OP_USER_UPDATE, .id = user_id, .id_len = user_len, .perms = permissions
    };
    return submit((struct lmdb_store *)s, &op);
}

/* Scans headers in short read transactions for documents idle since before cutoff,
 * and hands them to the committer SWEEP_DOCS_PER_TXN at a time; the committer checks
 * each again, since a document may have been used after the scan saw it. */
static int sweep_docs(struct lmdb_store *ls, MDB_dbi dbi, int64_t cutoff, uint64_t *removed)
{
    MDB_val cand[SWEEP_DOCS_PER_TXN];
    uint8_t last[MAX_KEY];
    size_t last_len = 0, n = 0;
    bool started = false, at_end = false;
    int rc = STORE_OK;
    while (!at_end) {
        MDB_txn *txn;
        MDB_cursor *c;
        rc = read_begin(ls, &txn);
        if (rc) break;
        int mrc = mdb_cursor_open(txn, dbi, &c);
        if (mrc) {
            read_end(ls, txn);
            rc = store_err(ls, "sweep", mrc);
            break;
        }
        MDB_val k = { last_len, last }, v;
        if (!started) {
            mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        } else {
            mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
            if (mrc == 0 && k.mv_size == last_len && memcmp(k.mv_data, last, last_len) == 0)
                mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        started = true;
        for (size_t scanned = 0;
             mrc == 0 && scanned < SWEEP_SCAN_PER_READ && n < SWEEP_DOCS_PER_TXN; scanned++) {
            struct doc_header h;
            memcpy(last, k.mv_data, k.mv_size);
            last_len = k.mv_size;
            MDB_val hv = v, id = k; /* in longdocs the id follows the header */
            if (dbi == ls->longdocs && v.mv_size >= HEADER_SIZE) {
                hv.mv_size = HEADER_SIZE;
                id = (MDB_val){ v.mv_size - HEADER_SIZE, (uint8_t *)v.mv_data + HEADER_SIZE };
            }
            if (header_decode(&hv, &h) == 0 && h.last_access < cutoff) {
                cand[n].mv_data = dup_bytes(id.mv_data, id.mv_size);
                if (!cand[n].mv_data) {
                    mrc = ENOMEM;
                    break;
                }
                cand[n++].mv_size = id.mv_size;
            }
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        read_end(ls, txn);
        if (mrc == MDB_NOTFOUND)
            at_end = true;
        else if (mrc)
            rc = store_err(ls, "sweep", mrc);
        if (n && rc == STORE_OK) {
            struct op op = { .kind = OP_SWEEP_DOCS, .cutoff = cutoff, .cand = cand, .n_cand = n };
            rc = submit(ls, &op);
            if (rc == STORE_OK) *removed += op.out;
        }
        for (size_t i = 0; i < n; i++) free(cand[i].mv_data);
        n = 0;
        if (rc) break;
    }
    return rc;
}

static int lmdb_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    uint64_t count = 0;
    int rc = STORE_OK;
    if (max_idle >= 0) rc = sweep_docs(ls, ls->docs, now - max_idle, &count);
    if (max_idle >= 0 && rc == STORE_OK) rc = sweep_docs(ls, ls->longdocs, now - max_idle, &count);
    while (rc == STORE_OK) {
        struct op op = { .kind = OP_SWEEP_TOKENS, .now = now };
        rc = submit(ls, &op);
        if (!op.more) break;
    }
    if (removed) *removed = count;
    return rc;
}

/* ---- enumeration (doc_list, token_list) ------------------------------------------ */

#define LIST_BATCH 256 /* entries copied out per read transaction */

/* Entries of one batch, packed as key_len u32, value_len u32, key, value. */
struct list_batch {
    uint8_t *buf;
    size_t used, cap;
    size_t count;
    uint8_t last[MAX_KEY]; /* the batch's last key: the next batch starts after it */
    size_t last_len;
    bool started, done;
};

/* Copies the next LIST_BATCH entries of dbi into b (values only when want_value), in
 * a short read transaction, so that the caller's callbacks run with none open.
 * Returns a store code. */
static int list_next_batch(struct lmdb_store *ls, MDB_dbi dbi, struct list_batch *b,
                           bool want_value)
{
    b->used = b->count = 0;
    MDB_txn *txn;
    MDB_cursor *c = NULL;
    int rc = read_begin(ls, &txn);
    if (rc) return rc;
    int mrc = mdb_cursor_open(txn, dbi, &c);
    if (mrc) goto fail_mdb;
    MDB_val k = { b->last_len, b->last }, v;
    if (!b->started) {
        mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    } else {
        mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == b->last_len && memcmp(k.mv_data, b->last, b->last_len) == 0)
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    for (; mrc == 0 && b->count < LIST_BATCH; mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        size_t vlen = want_value ? v.mv_size : 0;
        size_t need = 8 + k.mv_size + vlen;
        if (k.mv_size > MAX_KEY) {
            mrc = MDB_CORRUPTED;
            goto fail_mdb;
        }
        if (b->used + need > b->cap) {
            size_t ncap = b->cap ? b->cap * 2 : 16384;
            while (ncap < b->used + need) ncap *= 2;
            uint8_t *nb = realloc(b->buf, ncap);
            if (!nb) {
                rc = STORE_ENOMEM;
                goto fail;
            }
            b->buf = nb;
            b->cap = ncap;
        }
        uint8_t *p = b->buf + b->used;
        be_put32(p, (uint32_t)k.mv_size);
        be_put32(p + 4, (uint32_t)vlen);
        memcpy(p + 8, k.mv_data, k.mv_size);
        if (vlen) memcpy(p + 8 + k.mv_size, v.mv_data, vlen);
        b->used += need;
        b->count++;
        memcpy(b->last, k.mv_data, k.mv_size);
        b->last_len = k.mv_size;
    }
    if (mrc == MDB_NOTFOUND)
        b->done = true;
    else if (mrc)
        goto fail_mdb;
    b->started = true;
    mdb_cursor_close(c);
    read_end(ls, txn);
    return STORE_OK;
fail_mdb:
    rc = store_err(ls, "list", mrc);
fail:
    if (c) mdb_cursor_close(c);
    read_end(ls, txn);
    return rc;
}

static int lmdb_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    struct list_batch b = { 0 };
    int rc = STORE_OK;
    bool stop = false;
    while (!stop && !b.done && (rc = list_next_batch(ls, ls->docs, &b, false)) == STORE_OK) {
        for (size_t off = 0; off < b.used && !stop;) {
            const uint8_t *p = b.buf + off;
            size_t klen = be_get32(p);
            stop = fn(arg, (const char *)p + 8, klen) != 0;
            off += 8 + klen;
        }
    }
    free(b.buf);
    return rc;
}

static int lmdb_token_list(struct store *s, store_token_fn fn, void *arg)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    struct list_batch b = { 0 };
    int rc = STORE_OK;
    bool stop = false;
    int64_t now = (int64_t)time(NULL);
    while (!stop && !b.done && (rc = list_next_batch(ls, ls->tokens, &b, true)) == STORE_OK) {
        for (size_t off = 0; off < b.used && !stop;) {
            const uint8_t *p = b.buf + off;
            size_t klen = be_get32(p), vlen = be_get32(p + 4);
            off += 8 + klen + vlen;
            MDB_val v = { vlen, (void *)(p + 8 + klen) };
            struct token_rec r;
            if (token_decode(&v, &r)) {
                store_log_warn(&ls->log, "lmdb: token_list: skipping a malformed token record");
                continue;
            }
            if (r.expires <= now) continue;
            struct store_token t = { .doc_id = dup_bytes(r.doc, r.doc_len),
                                     .doc_id_len = r.doc_len,
                                     .user_id = dup_bytes(r.user, r.user_len),
                                     .expires = r.expires };
            memcpy(t.permissions, r.perms, 7);
            if (!t.doc_id || !t.user_id) {
                store_token_clear(&t);
                rc = STORE_ENOMEM;
                stop = true;
                break;
            }
            stop = fn(arg, (const char *)p + 8, klen, &t) != 0;
            store_token_clear(&t);
        }
    }
    free(b.buf);
    return rc;
}

static void lmdb_close(struct store *s)
{
    struct lmdb_store *ls = (struct lmdb_store *)s;
    commit_queue_stop(&ls->queue); /* commits what is queued, touches included */
    if (ls->nosync) mdb_env_sync(ls->env, 1);
    mdb_env_close(ls->env);
    pthread_rwlock_destroy(&ls->map_lock);
    pthread_mutex_destroy(&ls->stats_lock);
    free(ls);
}

void store_lmdb_stats(struct store *s, struct store_lmdb_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s || s->methods != &lmdb_methods) return;
    struct lmdb_store *ls = (struct lmdb_store *)s;
    pthread_mutex_lock(&ls->stats_lock);
    *out = ls->stats;
    pthread_mutex_unlock(&ls->stats_lock);
}

static const struct store_methods lmdb_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "lmdb",
    .close = lmdb_close,
    .ping = lmdb_ping,
    .doc_create = lmdb_doc_create,
    .doc_length = lmdb_doc_length,
    .doc_read = lmdb_doc_read,
    .doc_append = lmdb_doc_append,
    .doc_delete = lmdb_doc_delete,
    .key_set = lmdb_key_set,
    .keys_get = lmdb_keys_get,
    .token_add = lmdb_token_add,
    .token_get = lmdb_token_get,
    .user_update = lmdb_user_update,
    .sweep = lmdb_sweep,
    .doc_list = lmdb_doc_list,
    .token_list = lmdb_token_list,
};

/* ---- open ---------------------------------------------------------------------------- */

/* mkdir -p. Returns 0 or an errno value. */
static int make_dirs(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0) continue;
        char c = *p;
        *p = 0;
        int rc = mkdir(path, 0750) == 0 || errno == EEXIST ? 0 : errno;
        *p = c;
        if (rc) return rc;
        if (!c) return 0;
    }
}

static int open_dbs(struct lmdb_store *ls)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(ls->env, NULL, 0, &txn);
    if (rc) return rc;
    struct {
        const char *name;
        MDB_dbi *dbi;
    } dbs[] = {
        { "docs", &ls->docs },     { "longdocs", &ls->longdocs }, { "chunks", &ls->chunks },
        { "keys", &ls->keys },     { "tokens", &ls->tokens },     { "tokusers", &ls->tokusers },
        { "tokexp", &ls->tokexp }, { "meta", &ls->meta },
    };
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
        if (rc) goto fail;
    }
    MDB_val k = { 6, "format" }, v;
    rc = mdb_get(txn, ls->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        uint8_t buf[4];
        be_put32(buf, FORMAT_VERSION);
        v.mv_size = 4;
        v.mv_data = buf;
        rc = mdb_put(txn, ls->meta, &k, &v, 0);
    } else if (rc == 0 && (v.mv_size != 4 || be_get32(v.mv_data) != FORMAT_VERSION)) {
        store_log_error(&ls->log, "lmdb: unknown data format (want version %u)", FORMAT_VERSION);
        rc = MDB_INCOMPATIBLE;
    }
    if (rc) goto fail;
    return mdb_txn_commit(txn);
fail:
    mdb_txn_abort(txn);
    return rc;
}

struct store *store_lmdb_open(const struct store_config *cfg, char *err, size_t err_len)
{
    struct lmdb_store *ls = NULL;
    char *path = NULL;
    bool locks = false;
    int rc;
    const char *what = "";
    if (!cfg->data_dir || !*cfg->data_dir) {
        snprintf(err, err_len, "lmdb: no data directory configured");
        return NULL;
    }
    size_t dlen = strlen(cfg->data_dir);
    path = malloc(dlen + sizeof "/lmdb");
    ls = calloc(1, sizeof *ls);
    if (!path || !ls) {
        rc = ENOMEM;
        what = "allocating";
        goto fail;
    }
    memcpy(path, cfg->data_dir, dlen);
    memcpy(path + dlen, "/lmdb", sizeof "/lmdb");
    rc = make_dirs(path);
    if (rc) {
        what = "creating the directory";
        goto fail;
    }

    ls->base.methods = &lmdb_methods;
    ls->nosync = cfg->nosync != 0;
    ls->log = cfg->log;
    unsigned max_readers = cfg->max_readers ? (unsigned)cfg->max_readers : DEFAULT_MAX_READERS;
    what = "opening the environment";
    rc = mdb_env_create(&ls->env);
    if (rc) goto fail;
    /* LMDB reopens with the map it is given (at least the used size), so leave
     * room to grow before the first MDB_MAP_FULL: half as much again as the file. */
    size_t map_size = INITIAL_MAP_SIZE;
    struct stat st;
    char data_file[4096];
    snprintf(data_file, sizeof data_file, "%s/data.mdb", path);
    if (stat(data_file, &st) == 0)
        while (map_size < (size_t)st.st_size + (size_t)st.st_size / 2) map_size *= 2;
    if ((rc = mdb_env_set_maxreaders(ls->env, max_readers)) ||
        (rc = mdb_env_set_maxdbs(ls->env, 16)) || (rc = mdb_env_set_mapsize(ls->env, map_size)))
        goto fail;
    /* MDB_NOTLS: read transactions belong to no thread; thousands of threads read. */
    rc = mdb_env_open(ls->env, path, MDB_NOTLS | (ls->nosync ? MDB_NOSYNC : 0), 0640);
    if (rc) goto fail;
    int dead = 0;
    mdb_reader_check(ls->env, &dead); /* slots of a killed previous process */
    what = "opening the databases";
    rc = open_dbs(ls);
    if (rc) goto fail;

    pthread_rwlockattr_t rwa;
    pthread_rwlockattr_init(&rwa);
    /* Writer-preferring, or a steady stream of readers would starve a map resize. */
    pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ls->map_lock, &rwa);
    pthread_rwlockattr_destroy(&rwa);
    pthread_mutex_init(&ls->stats_lock, NULL);
    locks = true;
    MDB_envinfo info;
    mdb_env_info(ls->env, &info);
    ls->stats.map_size = info.me_mapsize;
    MDB_stat est;
    mdb_env_stat(ls->env, &est);
    ls->merge_max = (est.ms_psize < CHUNK_BUF_MAX ? est.ms_psize : CHUNK_BUF_MAX) - 16;

    what = "starting the committer";
    ls->queue = (struct commit_queue){ .run = commit_batch,
                                       .release = free_touch,
                                       .arg = ls,
                                       .defer_ns = TOUCH_FLUSH_NS,
                                       .defer_max = TOUCH_QUEUE_MAX };
    rc = commit_queue_start(&ls->queue);
    if (rc) goto fail;
    store_log_info(&ls->log, "lmdb: opened %s (map %zu MiB, %u readers%s)", path,
                   info.me_mapsize >> 20, max_readers, ls->nosync ? ", NOSYNC" : "");
    free(path);
    return &ls->base;

fail:
    snprintf(err, err_len, "lmdb: %s %s: %s", what, path ? path : "", mdb_strerror(rc));
    if (ls) {
        if (ls->env) mdb_env_close(ls->env);
        if (locks) {
            pthread_rwlock_destroy(&ls->map_lock);
            pthread_mutex_destroy(&ls->stats_lock);
        }
        free(ls);
    }
    free(path);
    return NULL;
}
