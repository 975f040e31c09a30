/* store: the backend-independent part of store.h — error names, token release and
 * opening a backend by name. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One table, so codes and their messages cannot drift apart. */
#define STORE_ERRORS(X)                                                                            \
    X(STORE_OK, "ok")                                                                              \
    X(STORE_ENOTFOUND, "not found")                                                                \
    X(STORE_EEXISTS, "already exists")                                                             \
    X(STORE_EMISMATCH, "length or version mismatch")                                               \
    X(STORE_ERANGE, "offset past the end of the document")                                         \
    X(STORE_EIO, "storage failure")                                                                \
    X(STORE_ENOMEM, "out of memory")                                                               \
    X(STORE_EINVAL, "argument cannot be stored (too long or empty)")                               \
    X(STORE_EUNAVAILABLE, "storage unavailable, retry later")                                      \
    X(STORE_ENOTSUP, "not supported by this storage backend")

const char *store_strerror(int err)
{
#define STORE_ERROR_CASE(code, msg)                                                                \
    case code: return msg;
    switch (err) {
        STORE_ERRORS(STORE_ERROR_CASE)
    }
#undef STORE_ERROR_CASE
    return "unknown storage error";
}

void store_token_clear(struct store_token *t)
{
    if (!t) return;
    free(t->doc_id);
    free(t->user_id);
    memset(t, 0, sizeof *t);
}

struct store *store_open(const struct store_config *cfg, char *err, size_t err_len)
{
    const char *name = cfg->backend && *cfg->backend ? cfg->backend : "lmdb";
    if (strcmp(name, "lmdb") == 0) return store_lmdb_open(cfg, err, err_len);
    if (strcmp(name, "sqlite") == 0) return store_sqlite_open(cfg, err, err_len);
    if (strcmp(name, "redis") == 0) return store_redis_open(cfg, err, err_len);
    snprintf(err, err_len, "unknown storage backend \"%s\" (expected lmdb, sqlite or redis)", name);
    return NULL;
}
