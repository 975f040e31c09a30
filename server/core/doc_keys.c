/* doc_keys: one namespace for a document's client and session keys — who holds a
 * name, the compare-and-set against it, and the KEY INFORMATION a joiner gets. */
#include "doc_keys.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "hub_internal.h"
#include "log.h"
#include "message.h"
#include "store.h"

static struct client_key *find_client_key(struct doc *d, const uint8_t *name, size_t len)
{
    for (size_t i = 0; i < d->nkeys; i++)
        if (d->keys[i].name_len == len && !memcmp(d->keys[i].name, name, len)) return &d->keys[i];
    return NULL;
}

/* Applies a client key write on a single server. Returns 1 when accepted. */
static int set_client_key(struct doc *d, struct hub_client *c, const struct codec_set_key *k)
{
    struct client_key *key = find_client_key(d, k->name, k->name_len);
    if (key ? key->version != k->old_version : k->old_version != 0) return 0;
    uint8_t *value = malloc(k->value_len ? k->value_len : 1);
    if (!value) return 0;
    memcpy(value, k->value, k->value_len);
    if (!key) {
        if (d->nkeys == d->keys_cap) {
            size_t cap = d->keys_cap ? d->keys_cap * 2 : 8;
            struct client_key *keys = realloc(d->keys, cap * sizeof *keys);
            if (!keys) {
                free(value);
                return 0;
            }
            d->keys = keys;
            d->keys_cap = cap;
        }
        uint8_t *name = malloc(k->name_len ? k->name_len : 1);
        if (!name) {
            free(value);
            return 0;
        }
        memcpy(name, k->name, k->name_len);
        key = &d->keys[d->nkeys++];
        key->name = name;
        key->name_len = k->name_len;
        key->value = NULL;
    }
    free(key->value);
    key->value = value;
    key->value_len = k->value_len;
    key->version = k->new_version;
    key->owner = c;
    return 1;
}

/* Looks for one name among the keys a hub_key_fn / store_key_fn is handed. */
struct name_probe {
    const uint8_t *name;
    size_t len;
    bool found;
};

static int probe_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                     size_t value_len, uint32_t version)
{
    (void)value;
    (void)value_len;
    (void)version;
    struct name_probe *p = arg;
    if (name_len == p->len && !memcmp(name, p->name, name_len)) p->found = true;
    return p->found; /* found: stop */
}

/* 1 when a client key holds the name, 0 when none does, -1 when Redis could not tell
 * (cluster mode; logged). */
static int client_key_held(struct hub *h, struct doc *d, const uint8_t *name, size_t len)
{
    if (!hub_clustered(h)) return find_client_key(d, name, len) != NULL;
    struct name_probe p = { name, len, false };
    return hub_cluster_client_keys(h, d, probe_key, &p) ? -1 : p.found;
}

/* 1 when a stored key holds the name, 0 when none does, -1 on a storage failure. */
static int session_key_held(struct hub *h, struct doc *d, const uint8_t *name, size_t len)
{
    struct name_probe p = { name, len, false };
    int rc = store_keys_get(h->store, d->id, d->id_len, probe_key, &p);
    if (rc) {
        log_error("keys of %.*s: %s", (int)d->id_len, d->id, store_strerror(rc));
        return -1;
    }
    return p.found;
}

int doc_keys_set(struct hub *h, struct doc *d, struct hub_client *c, const struct codec_set_key *k)
{
    /* w.lifetime: the kind of key the write lands in — the holder's, or the asked one
     * for a free name. A session write needs no lookup of stored keys (storage compares
     * against them itself), nor a client write in cluster mode of client keys (the
     * Redis script does): each write looks up at most the other kind. */
    struct codec_set_key w = *k;
    int held;
    if (k->lifetime == 0 && hub_clustered(h)) {
        held = session_key_held(h, d, k->name, k->name_len);
        if (held < 0) return 0;
        w.lifetime = held ? 1 : 0;
    } else {
        held = client_key_held(h, d, k->name, k->name_len);
        if (held < 0) return 0;
        if (held) {
            w.lifetime = 0;
        } else if (w.lifetime == 0) { /* one server: in memory first, storage if needed */
            held = session_key_held(h, d, k->name, k->name_len);
            if (held < 0) return 0;
            if (held) w.lifetime = 1;
        }
    }
    if ((w.lifetime == 0) != (k->lifetime == 0))
        client_log(c, LOG_DEBUG, "key %.*s is held by a %s key: written as one", (int)k->name_len,
                   (const char *)k->name, w.lifetime ? "session" : "client");
    int accepted;
    if (w.lifetime == 0) {
        accepted =
            hub_clustered(h) ? hub_cluster_client_key_set(h, d, c, &w) : set_client_key(d, c, &w);
    } else {
        int rc = store_key_set(h->store, d->id, d->id_len, w.name, w.name_len, w.value, w.value_len,
                               w.old_version, w.new_version);
        accepted = rc == STORE_OK;
        if (rc && rc != STORE_EMISMATCH)
            client_log(c, LOG_ERROR, "session key on %.*s: %s", (int)d->id_len, d->id,
                       store_strerror(rc));
    }
    if (accepted) hub_key_accepted(h, d, c, &w);
    return accepted;
}

/* ---- the joiner's KEY INFORMATION ---- */

struct key_entry {
    uint8_t *bytes; /* name, then value */
    size_t name_len, value_len;
    uint32_t version;
    bool dropped;
};

struct key_list {
    struct key_entry *e;
    size_t n, cap;
    bool failed;
};

static int list_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                    size_t value_len, uint32_t version)
{
    struct key_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct key_entry *e = realloc(l->e, cap * sizeof *e);
        if (!e) goto fail;
        l->e = e;
        l->cap = cap;
    }
    uint8_t *bytes = malloc(name_len + value_len + 1);
    if (!bytes) goto fail;
    memcpy(bytes, name, name_len);
    if (value_len) memcpy(bytes + name_len, value, value_len);
    l->e[l->n++] = (struct key_entry){ bytes, name_len, value_len, version, false };
    return 0;
fail:
    l->failed = true;
    return 1;
}

static void list_free(struct key_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->e[i].bytes);
    free(l->e);
}

/* Encodes the entries not dropped after `at`; returns the new length. */
static size_t add_entries(uint8_t *out, size_t at, const struct key_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        if (!l->e[i].dropped)
            at += codec_key_info_add(out + at, l->e[i].version, l->e[i].bytes, l->e[i].name_len,
                                     l->e[i].bytes + l->e[i].name_len, l->e[i].value_len);
    return at;
}

void doc_keys_send_all(struct hub *h, struct doc *d, struct hub_client *c)
{
    struct key_list client = { 0 }, session = { 0 };
    if (hub_clustered(h)) {
        /* What the other members know (one entry per name), so that the events to
         * come fit it: read from Redis instead, a key changed just now would reach
         * the joiner twice, or its own write back (hub_keyview.c). */
        hub_keyview_each(d, list_key, &client);
    } else {
        for (size_t i = 0; i < d->nkeys && !client.failed; i++)
            list_key(&client, d->keys[i].name, d->keys[i].name_len, d->keys[i].value,
                     d->keys[i].value_len, d->keys[i].version);
    }
    int rc = hub_clustered(h) ? STORE_OK
                              : store_keys_get(h->store, d->id, d->id_len, list_key, &session);
    if (rc) log_error("document keys of %.*s: %s", (int)d->id_len, d->id, store_strerror(rc));
    /* One entry per name. Within each list names are unique; across them a name can
     * repeat only after two servers raced (cluster mode). Client keys are few. */
    size_t len = CODEC_KEY_INFO_HEADER;
    for (size_t i = 0; i < session.n; i++) {
        struct key_entry *s = &session.e[i];
        for (size_t j = 0; j < client.n && !s->dropped; j++) {
            struct key_entry *k = &client.e[j];
            if (k->dropped || k->name_len != s->name_len || memcmp(k->bytes, s->bytes, s->name_len))
                continue;
            log_warn("keys of %.*s: a client key and a session key share a name; sending "
                     "version %u",
                     (int)d->id_len, d->id, s->version >= k->version ? s->version : k->version);
            if (s->version >= k->version)
                k->dropped = true;
            else
                s->dropped = true;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        const struct key_list *l = pass ? &session : &client;
        for (size_t i = 0; i < l->n; i++)
            if (!l->e[i].dropped)
                len += codec_key_info_entry_size(l->e[i].name_len, l->e[i].value_len);
    }
    if (!client.failed && !session.failed && len > CODEC_KEY_INFO_HEADER) {
        struct message *m = message_new(len);
        if (m)
            add_entries(m->data, add_entries(m->data, codec_key_info_begin(m->data), &client),
                        &session);
        hub_send(h, c, m, true);
    }
    list_free(&client);
    list_free(&session);
}
