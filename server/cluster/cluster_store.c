/* cluster_store: the store a clustered server uses. It is the Redis store, except
 * that compare-and-append runs the cluster's script, which announces the committed
 * bytes in the same atomic step (the ordering invariant across servers needs both or
 * neither), and that a deleted document is announced so every server closes its
 * clients of it. Everything else goes to the Redis store unchanged. */
#include "cluster_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static struct store *inner(struct store *s) { return ((struct cluster *)s)->inner; }

static void cs_close(struct store *s)
{
    struct cluster *cl = (struct cluster *)s;
    store_close(cl->inner);
    cluster_free(cl);
}

static int cs_ping(struct store *s) { return store_ping(inner(s)); }

static int cs_doc_create(struct store *s, const char *id, size_t id_len, const uint8_t *data, size_t len)
{
    return store_doc_create(inner(s), id, id_len, data, len);
}

static int cs_doc_length(struct store *s, const char *id, size_t id_len, uint64_t *len)
{
    return store_doc_length(inner(s), id, id_len, len);
}

static int cs_doc_read(struct store *s, const char *id, size_t id_len, uint64_t offset,
                       uint8_t **data, size_t *len, uint64_t *total)
{
    return store_doc_read(inner(s), id, id_len, offset, data, len, total);
}

static int cs_doc_append(struct store *s, const char *id, size_t id_len, uint64_t expected_len,
                         const uint8_t *data, size_t len, uint64_t *new_len)
{
    struct cluster *cl = (struct cluster *)s;
    size_t dlen, klen, clen;
    char *doc = cl_key("zwibbler:", id, id_len, &dlen);
    char *keys = cl_key("zwibbler-keys:", id, id_len, &klen);
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    int rc = STORE_ENOMEM;
    if (!doc || !keys || !chan) goto out;
    char exp[24], expected[24];
    uint8_t header[9] = {'A'};
    cl_put64(header + 1, expected_len);
    snprintf(exp, sizeof exp, "%" PRId64, cl->expiration);
    snprintf(expected, sizeof expected, "%" PRIu64, expected_len);
    const char *args[] = {doc, keys, expected, len ? (const char *)data : "", exp, chan, (const char *)header};
    size_t lens[] = {dlen, klen, strlen(expected), len, strlen(exp), clen, sizeof header};
    redisReply *r = clr_script(&cl->redis, CLS_APPEND, 2, 7, args, lens);
    if (!r) {
        /* Unknown whether it was applied: never an ACK. If it was, the announcement
         * reaches everyone, the writer included (its delivery rule lets it in). */
        rc = STORE_EUNAVAILABLE;
        goto out;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long status = r->element[0]->integer;
        if (new_len) *new_len = (uint64_t)r->element[1]->integer;
        rc = status == 1 ? STORE_OK : status == 0 ? STORE_EMISMATCH : STORE_ENOTFOUND;
    } else {
        log_error("cluster: append: unexpected reply %.*s", r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
                  r->type == REDIS_REPLY_ERROR ? r->str : "");
        rc = r->type == REDIS_REPLY_ERROR && (!strncmp(r->str, "LOADING", 7) || !strncmp(r->str, "BUSY", 4))
                 ? STORE_EUNAVAILABLE
                 : STORE_EIO;
    }
    freeReplyObject(r);
out:
    free(doc);
    free(keys);
    free(chan);
    return rc;
}

static int cs_doc_delete(struct store *s, const char *id, size_t id_len)
{
    struct cluster *cl = (struct cluster *)s;
    int rc = store_doc_delete(cl->inner, id, id_len);
    if (rc != STORE_OK) return rc;
    size_t clen;
    char *chan = cl_key(CL_CHANNEL, id, id_len, &clen);
    if (!chan) return rc;
    uint8_t msg[9] = {'D'};
    cl_put64(msg + 1, cl->sid);
    const char *argv[] = {"PUBLISH", chan, (const char *)msg};
    size_t lens[] = {7, clen, sizeof msg};
    redisReply *r = clr_command(&cl->redis, 3, argv, lens);
    if (r) freeReplyObject(r);
    free(chan);
    return rc;
}

static int cs_key_set(struct store *s, const char *id, size_t id_len, const uint8_t *name,
                      size_t name_len, const uint8_t *value, size_t value_len,
                      uint32_t old_version, uint32_t new_version)
{
    return store_key_set(inner(s), id, id_len, name, name_len, value, value_len, old_version, new_version);
}

static int cs_keys_get(struct store *s, const char *id, size_t id_len, store_key_fn fn, void *arg)
{
    return store_keys_get(inner(s), id, id_len, fn, arg);
}

static int cs_token_add(struct store *s, const char *token, size_t token_len, const struct store_token *t)
{
    return store_token_add(inner(s), token, token_len, t);
}

static int cs_token_get(struct store *s, const char *token, size_t token_len, struct store_token *out)
{
    return store_token_get(inner(s), token, token_len, out);
}

/* The new permissions also apply to the user's live connections on every server. */
static int cs_user_update(struct store *s, const char *user_id, size_t user_len, const char *permissions)
{
    struct cluster *cl = (struct cluster *)s;
    int rc = store_user_update(cl->inner, user_id, user_len, permissions);
    if (rc != STORE_OK) return rc;
    size_t plen = permissions ? strlen(permissions) : 0;
    uint8_t *msg = malloc(13 + user_len + plen);
    if (!msg) return rc;
    msg[0] = 'U';
    cl_put64(msg + 1, cl->sid);
    for (int i = 0; i < 4; i++) msg[9 + i] = (uint8_t)(user_len >> (24 - 8 * i));
    memcpy(msg + 13, user_id, user_len);
    if (plen) memcpy(msg + 13 + user_len, permissions, plen);
    const char *argv[] = {"PUBLISH", CL_GLOBAL, (const char *)msg};
    size_t lens[] = {7, strlen(CL_GLOBAL), 13 + user_len + plen};
    redisReply *r = clr_command(&cl->redis, 3, argv, lens);
    if (r) freeReplyObject(r);
    free(msg);
    return rc;
}

static int cs_sweep(struct store *s, int64_t now, int64_t max_idle, uint64_t *removed)
{
    return store_sweep(inner(s), now, max_idle, removed);
}

static int cs_doc_list(struct store *s, store_doc_fn fn, void *arg)
{
    return store_doc_list(inner(s), fn, arg);
}

static int cs_token_list(struct store *s, store_token_fn fn, void *arg)
{
    return store_token_list(inner(s), fn, arg);
}

static const struct store_methods cs_methods = {
    .version = STORE_METHODS_VERSION,
    .name = "redis (cluster)",
    .close = cs_close,
    .ping = cs_ping,
    .doc_create = cs_doc_create,
    .doc_length = cs_doc_length,
    .doc_read = cs_doc_read,
    .doc_append = cs_doc_append,
    .doc_delete = cs_doc_delete,
    .key_set = cs_key_set,
    .keys_get = cs_keys_get,
    .token_add = cs_token_add,
    .token_get = cs_token_get,
    .user_update = cs_user_update,
    .sweep = cs_sweep,
    .doc_list = cs_doc_list,
    .token_list = cs_token_list,
};

void cluster_store_init(struct cluster *cl)
{
    cl->store.methods = &cs_methods;
}
