/* store: the storage interface every backend implements (LMDB, SQLite, Redis, yours).
 *
 * A document is a byte string that only grows by appends; its length is its version.
 * Each document also has named keys (value + u32 version) and may be reached through
 * tokens. A backend is a struct whose first member is `struct store`, whose `methods`
 * point at a `struct store_methods` table, in the manner of sqlite3_io_methods.
 *
 * Thread safety: every method may be called from many threads at once on the same
 * store; the backend does its own locking. Calls block until done (an append returns
 * only once it is durable as far as the backend promises).
 *
 * Identifiers (document ids, key names, tokens, user ids) are byte strings given as
 * pointer + length; they need not be NUL-terminated and may hold any bytes. A backend
 * must take document ids of any length from 1 byte to at least 64 KiB (clients may
 * send them; the reference server takes any length) and key names of at least 400
 * bytes with any such id; the empty document id is refused with STORE_EINVAL. The
 * conformance suite (test/unit/store_conformance.c) checks both.
 *
 * Errors: every method returns STORE_OK (0) or one of the negative STORE_E* codes
 * below; store_strerror() names them. On STORE_EIO / STORE_EUNAVAILABLE the backend
 * also logs the underlying cause (through store_config.log).
 */
#ifndef ZW_STORE_H
#define ZW_STORE_H

#include <stddef.h>
#include <stdint.h>

/* Marks the library's public API. libzwibbler.a is built with every other symbol
 * hidden and made local, so an embedder can link to these names and no others. */
#ifndef ZW_PUBLIC
#define ZW_PUBLIC __attribute__((visibility("default")))
#endif

/* Version 2 added doc_list and token_list. A table of version 1 ends at sweep; the
 * wrappers below answer STORE_ENOTSUP for a method the table does not have. */
#define STORE_METHODS_VERSION 2

enum {
    STORE_OK = 0,
    STORE_ENOTFOUND = -1,    /* no such document / token */
    STORE_EEXISTS = -2,      /* document or token already exists */
    STORE_EMISMATCH = -3,    /* compare failed: length or key version differs */
    STORE_ERANGE = -4,       /* read offset past the end of the document */
    STORE_EIO = -5,          /* backend failure (disk, corruption, protocol) */
    STORE_ENOMEM = -6,       /* out of memory */
    STORE_EINVAL = -7,       /* argument the backend cannot store (e.g. id too long) */
    STORE_EUNAVAILABLE = -8, /* backend unreachable for now (e.g. Redis down); retry later */
    STORE_ENOTSUP = -9,      /* the backend does not have this (optional) method */
};

ZW_PUBLIC const char *store_strerror(int err);

struct store_methods;

/* Base of every backend instance. */
struct store {
    const struct store_methods *methods;
};

/* Called once per key by keys_get. Return 0 to go on, non-zero to stop early. */
typedef int (*store_key_fn)(void *arg, const uint8_t *name, size_t name_len,
                            const uint8_t *value, size_t value_len, uint32_t version);

/* Called once per document by doc_list with its id (not NUL-terminated; valid only
 * during the call). Return 0 to go on, non-zero to stop early. */
typedef int (*store_doc_fn)(void *arg, const char *id, size_t id_len);

struct store_token;

/* Called once per live token by token_list; the token and t's strings are valid only
 * during the call. Return 0 to go on, non-zero to stop early. */
typedef int (*store_token_fn)(void *arg, const char *token, size_t token_len,
                              const struct store_token *t);

/* A token registered by the management API. Strings are heap-allocated and
 * NUL-terminated when returned by token_get; release with store_token_clear(). */
struct store_token {
    char *doc_id;
    size_t doc_id_len;
    char *user_id;
    char permissions[8]; /* letters from "rwa", NUL-terminated */
    int64_t expires;     /* Unix seconds */
};

struct store_methods {
    int version; /* STORE_METHODS_VERSION */
    const char *name;

    /* Flushes and releases everything; the store is unusable afterwards. */
    void (*close)(struct store *s);

    /* A real round trip to the backend. STORE_OK when healthy. */
    int (*ping)(struct store *s);

    /* Creates a document holding `data` (may be empty) and refreshes its last access.
     * STORE_EEXISTS when it already exists (nothing changed). */
    int (*doc_create)(struct store *s, const char *id, size_t id_len,
                      const uint8_t *data, size_t len);

    /* Stores the document's length in *len and refreshes its last access.
     * STORE_ENOTFOUND when missing. */
    int (*doc_length)(struct store *s, const char *id, size_t id_len, uint64_t *len);

    /* Reads bytes [offset, end). On STORE_OK *data is malloc'd (free() it; NULL when
     * *len is 0) and *len its size; *total, if not NULL, gets the document length
     * that the read saw. STORE_ENOTFOUND, STORE_ERANGE when offset > length. */
    int (*doc_read)(struct store *s, const char *id, size_t id_len, uint64_t offset,
                    uint8_t **data, size_t *len, uint64_t *total);

    /* Compare-length-and-append, atomically: appends `data` only when the document's
     * length equals `expected_len`. On STORE_OK *new_len is the length after the
     * append; on STORE_EMISMATCH nothing is stored and *new_len is the current
     * length. STORE_ENOTFOUND when missing. Returns only once durable. */
    int (*doc_append)(struct store *s, const char *id, size_t id_len,
                      uint64_t expected_len, const uint8_t *data, size_t len,
                      uint64_t *new_len);

    /* Deletes the document and all its keys. STORE_ENOTFOUND when missing. */
    int (*doc_delete)(struct store *s, const char *id, size_t id_len);

    /* Compare-version-and-set of a stored (session) key, atomically: accepted when the
     * key's version equals old_version, or when it does not exist and old_version is
     * 0; then it gets `value` and new_version. STORE_EMISMATCH otherwise. The
     * document need not exist as a row for its keys to be kept. */
    int (*key_set)(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                   size_t name_len, const uint8_t *value, size_t value_len,
                   uint32_t old_version, uint32_t new_version);

    /* Calls fn for every stored key of the document (none: STORE_OK, no calls). */
    int (*keys_get)(struct store *s, const char *id, size_t id_len, store_key_fn fn,
                    void *arg);

    /* Registers a token. STORE_EEXISTS when the token exists and has not expired. */
    int (*token_add)(struct store *s, const char *token, size_t token_len,
                     const struct store_token *t);

    /* Looks a token up. STORE_ENOTFOUND when unknown or expired. */
    int (*token_get)(struct store *s, const char *token, size_t token_len,
                     struct store_token *out);

    /* Sets the permissions of every token of the user. STORE_OK also when none. */
    int (*user_update)(struct store *s, const char *user_id, size_t user_len,
                       const char *permissions);

    /* Deletes documents (and their keys) whose last access is older than
     * now - max_idle seconds, and tokens that expired before now. Works in small
     * steps so that it never stalls other calls for long. Returns the number of
     * documents removed in *removed (may be NULL). */
    int (*sweep)(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed);

    /* ---- version 2: enumeration, for tools that copy or inspect a whole store
     * (`zwibbler --copy-store`). Both may be NULL: callers get STORE_ENOTSUP. ---- */

    /* Calls fn for every document's id. The backend reads ids in batches and calls fn
     * outside any transaction, so fn may call the store's other methods (read the
     * document, even delete it). Documents present for the whole listing are reported
     * at least once; one created or deleted meanwhile may or may not be; a backend
     * whose own enumeration can repeat an id (Redis SCAN while it resizes) may report
     * it twice, so callers that must not act twice keep their own set. No last access
     * is refreshed. STORE_OK also when there are none; fn stopping early is STORE_OK. */
    int (*doc_list)(struct store *s, store_doc_fn fn, void *arg);

    /* Calls fn for every token that has not expired, with what token_get would
     * return. Same batching, re-entrancy and at-least-once rules as doc_list. */
    int (*token_list)(struct store *s, store_token_fn fn, void *arg);
};

/* Log levels of store_log, lowest first. */
enum store_log_level { STORE_LOG_DEBUG, STORE_LOG_INFO, STORE_LOG_WARN, STORE_LOG_ERROR };

/* Where a backend writes its log lines (failures, map growth, reconnections): fn gets
 * one line, without a newline, and a STORE_LOG_* level. It may be called from any of
 * the store's threads, several at once, until the store is closed. With fn NULL the
 * lines go to stderr. */
struct store_log {
    void (*fn)(void *arg, int level, const char *msg);
    void *arg;
};

/* Settings a backend may read; unused fields are ignored. */
struct store_config {
    const char *backend;   /* "lmdb", "sqlite", "redis" */
    const char *data_dir;  /* embedded stores keep their files here */
    const char *server;    /* host:port for server backends */
    const char *user;
    const char *password;
    size_t max_readers;    /* LMDB: concurrent reading threads */
    int nosync;            /* 1: skip fsync (tests/benchmarks only) */
    int64_t expiration;    /* Redis: idle seconds before a document expires through its
                              TTL, refreshed on each access (0 = never) */
    struct store_log log;  /* copied by the backend at open */
    const char *redis_sentinels;         /* Redis: "host:port,...": find the primary
                                            through these Sentinels (NULL: use server) */
    const char *redis_master_name;       /* Redis: the primary's name at the Sentinels */
    const char *redis_sentinel_password; /* Redis: AUTH at the Sentinels (NULL: none) */
    int redis_min_replicas;              /* Redis: acknowledge an append only once this
                                            many replicas have it (WAIT); 0 = none */
};

/* Opens the backend named by cfg->backend. On failure returns NULL and writes a
 * one-line reason into err. */
ZW_PUBLIC struct store *store_open(const struct store_config *cfg, char *err, size_t err_len);

/* Backend constructors, for programs that pick one themselves. */
ZW_PUBLIC struct store *store_lmdb_open(const struct store_config *cfg, char *err, size_t err_len);
ZW_PUBLIC struct store *store_sqlite_open(const struct store_config *cfg, char *err, size_t err_len);
ZW_PUBLIC struct store *store_redis_open(const struct store_config *cfg, char *err, size_t err_len);

ZW_PUBLIC void store_token_clear(struct store_token *t);

/* Call wrappers, so callers never write s->methods->fn(s, ...) by hand. */
static inline void store_close(struct store *s) { if (s) s->methods->close(s); }
static inline int store_ping(struct store *s) { return s->methods->ping(s); }
static inline int store_doc_create(struct store *s, const char *id, size_t id_len,
                                   const uint8_t *data, size_t len)
{ return s->methods->doc_create(s, id, id_len, data, len); }
static inline int store_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{ return s->methods->doc_length(s, id, id_len, len); }
static inline int store_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                                 uint8_t **data, size_t *len, uint64_t *total)
{ return s->methods->doc_read(s, id, id_len, offset, data, len, total); }
static inline int store_doc_append(struct store *s, const char *id, size_t id_len,
                                   uint64_t expected_len, const uint8_t *data, size_t len,
                                   uint64_t *new_len)
{ return s->methods->doc_append(s, id, id_len, expected_len, data, len, new_len); }
static inline int store_doc_delete(struct store *s, const char *id, size_t id_len)
{ return s->methods->doc_delete(s, id, id_len); }
static inline int store_key_set(struct store *s, const char *id, size_t id_len,
                                const uint8_t *name, size_t name_len, const uint8_t *value,
                                size_t value_len, uint32_t old_version, uint32_t new_version)
{ return s->methods->key_set(s, id, id_len, name, name_len, value, value_len, old_version, new_version); }
static inline int store_keys_get(struct store *s, const char *id, size_t id_len,
                                 store_key_fn fn, void *arg)
{ return s->methods->keys_get(s, id, id_len, fn, arg); }
static inline int store_token_add(struct store *s, const char *token, size_t token_len,
                                  const struct store_token *t)
{ return s->methods->token_add(s, token, token_len, t); }
static inline int store_token_get(struct store *s, const char *token, size_t token_len,
                                  struct store_token *out)
{ return s->methods->token_get(s, token, token_len, out); }
static inline int store_user_update(struct store *s, const char *user_id, size_t user_len,
                                    const char *permissions)
{ return s->methods->user_update(s, user_id, user_len, permissions); }
static inline int store_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{ return s->methods->sweep(s, now, max_idle, removed); }

static inline int store_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    if (s->methods->version < 2 || !s->methods->doc_list) return STORE_ENOTSUP;
    return s->methods->doc_list(s, fn, arg);
}
static inline int store_token_list(struct store *s, store_token_fn fn, void *arg)
{
    if (s->methods->version < 2 || !s->methods->token_list) return STORE_ENOTSUP;
    return s->methods->token_list(s, fn, arg);
}

#endif
