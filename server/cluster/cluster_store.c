/* cluster_store: the Redis store plus the DELETED and USER events (cluster_store.h).
 * Everything else goes to the Redis store unchanged. */
#include "cluster_store.h"

#include <string.h>

#include "log.h"
#include "redis_cluster.h"

static struct store *inner(struct store *s) { return ((struct cluster_store *)s)->inner; }

static void wrap_close(struct store *s) { store_close(inner(s)); }

static int wrap_ping(struct store *s) { return store_ping(inner(s)); }

static int wrap_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data,
                           size_t len)
{
    return store_doc_create(inner(s), id, id_len, data, len);
}

static int wrap_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    return store_doc_length(inner(s), id, id_len, len);
}

static int wrap_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                         uint8_t **data, size_t *len, uint64_t *total)
{
    return store_doc_read(inner(s), id, id_len, offset, data, len, total);
}

static int wrap_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected_len,
                           const uint8_t *data, size_t len, uint64_t *new_len)
{
    return store_doc_append(inner(s), id, id_len, expected_len, data, len, new_len);
}

/* Every server closes its clients of the document. */
static int wrap_doc_delete(struct store *s, const char *id, size_t id_len)
{
    struct cluster_store *cs = (struct cluster_store *)s;
    int rc = store_doc_delete(cs->inner, id, id_len);
    if (rc != STORE_OK) return rc;
    struct redis_event ev = { .kind = REDIS_EV_DELETED, .doc = id, .doc_len = id_len };
    if (redis_cluster_publish(cs->rc, &ev))
        log_warn("cluster: the deletion of %.*s could not be announced", (int)id_len, id);
    return rc;
}

static int wrap_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len,
                        uint32_t old_version, uint32_t new_version)
{
    return store_key_set(inner(s), id, id_len, name, name_len, value, value_len, old_version,
                         new_version);
}

static int wrap_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    return store_keys_get(inner(s), id, id_len, fn, arg);
}

static int wrap_token_add(struct store *s, const char *token, size_t token_len,
                          const struct store_token *t)
{
    return store_token_add(inner(s), token, token_len, t);
}

static int wrap_token_get(struct store *s, const char *token, size_t token_len,
                          struct store_token *out)
{
    return store_token_get(inner(s), token, token_len, out);
}

/* The new permissions also apply to the user's live connections on every server. */
static int wrap_user_update(struct store *s, const char *user_id, size_t user_len,
                            const char *permissions)
{
    struct cluster_store *cs = (struct cluster_store *)s;
    int rc = store_user_update(cs->inner, user_id, user_len, permissions);
    if (rc != STORE_OK) return rc;
    struct redis_event ev = { .kind = REDIS_EV_USER,
                              .name = (const uint8_t *)user_id,
                              .name_len = user_len,
                              .data = (const uint8_t *)permissions,
                              .data_len = permissions ? strlen(permissions) : 0 };
    if (redis_cluster_publish(cs->rc, &ev))
        log_warn("cluster: the update of user %.*s could not be announced", (int)user_len, user_id);
    return rc;
}

static int wrap_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    return store_sweep(inner(s), now, max_idle, removed);
}

static int wrap_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    return store_doc_list(inner(s), fn, arg);
}

static int wrap_token_list(struct store *s, store_token_fn fn, void *arg)
{
    return store_token_list(inner(s), fn, arg);
}

static const struct store_methods wrap_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "redis (cluster)",
    .close = wrap_close,
    .ping = wrap_ping,
    .doc_create = wrap_doc_create,
    .doc_length = wrap_doc_length,
    .doc_read = wrap_doc_read,
    .doc_append = wrap_doc_append,
    .doc_delete = wrap_doc_delete,
    .key_set = wrap_key_set,
    .keys_get = wrap_keys_get,
    .token_add = wrap_token_add,
    .token_get = wrap_token_get,
    .user_update = wrap_user_update,
    .sweep = wrap_sweep,
    .doc_list = wrap_doc_list,
    .token_list = wrap_token_list,
};

void cluster_store_init(struct cluster_store *cs, struct store *inner, struct redis_cluster *rc)
{
    cs->base.methods = &wrap_methods;
    cs->inner = inner;
    cs->rc = rc;
}
