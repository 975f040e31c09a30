/* hub_keyview: in cluster mode, a document's keys as this server's members know them.
 *
 * Key changes reach a server as announcements, in the order the shared store took
 * them; announcements sent while the server was not subscribed (before a document's
 * subscription is in place, while the subscription was lost) are missed, and made up
 * for by a snapshot of the stored keys. The view is what lets that snapshot deliver
 * exactly the changes the members lack:
 *
 *  - Every member knows every entry of the view: a joiner gets the view, and every
 *    change delivered is applied to it, both under the document's lock.
 *  - An announcement or snapshot entry equal to the view is not sent again.
 *  - A local client's accepted write is remembered ("own") until it comes back, so
 *    that a snapshot never echoes a client's own write to it (an announcement
 *    carries its setter itself). The snapshot is read under the document's lock,
 *    under which local writes are made too, so no own write can be newer than it.
 *
 * Everything here runs with d->lock held. */
#include "hub_internal.h"

#include <stdlib.h>
#include <string.h>

#include "message.h"

struct kv_entry {
    uint8_t *name;
    size_t name_len;
    uint8_t *value; /* what the members know; valid when `known` */
    size_t value_len;
    uint32_t version;
    bool known;
    uint64_t own; /* local client whose accepted write (own_value, own_version) has
                       not come back yet; 0: none */
    uint8_t *own_value;
    size_t own_len;
    uint32_t own_version;
};

struct hub_keyview {
    struct kv_entry *e;
    size_t n, cap;
};

static uint8_t *dup(const uint8_t *p, size_t n)
{
    uint8_t *o = malloc(n ? n : 1);
    if (o && n) memcpy(o, p, n);
    return o;
}

static struct kv_entry *find(struct hub_keyview *v, const uint8_t *name, size_t len)
{
    if (!v) return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (v->e[i].name_len == len && !memcmp(v->e[i].name, name, len)) return &v->e[i];
    return NULL;
}

/* The entry for name, created (unknown) when missing. NULL when out of memory. */
static struct kv_entry *get(struct doc *d, const uint8_t *name, size_t len)
{
    if (!d->kview && !(d->kview = calloc(1, sizeof *d->kview))) return NULL;
    struct hub_keyview *v = d->kview;
    struct kv_entry *e = find(v, name, len);
    if (e) return e;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        struct kv_entry *ne = realloc(v->e, cap * sizeof *ne);
        if (!ne) return NULL;
        v->e = ne;
        v->cap = cap;
    }
    e = &v->e[v->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = dup(name, len))) return NULL;
    e->name_len = len;
    v->n++;
    return e;
}

static void drop(struct hub_keyview *v, struct kv_entry *e)
{
    free(e->name);
    free(e->value);
    free(e->own_value);
    *e = v->e[--v->n];
}

static bool same(const struct kv_entry *e, uint32_t version, const uint8_t *value, size_t len)
{
    return e->known && e->version == version && e->value_len == len &&
           !memcmp(e->value, value, len);
}

/* The local client whose own write this is, if any (and forgets it: it is back). */
static uint64_t take_own(struct kv_entry *e, uint32_t version, const uint8_t *value, size_t len)
{
    if (!e->own || e->own_version != version || e->own_len != len ||
        memcmp(e->own_value, value, len))
        return 0;
    uint64_t c = e->own;
    e->own = 0;
    free(e->own_value);
    e->own_value = NULL;
    return c;
}

void hub_keyview_own(struct doc *d, uint64_t client, uint32_t version, const uint8_t *name,
                     size_t name_len, const uint8_t *value, size_t value_len)
{
    struct kv_entry *e = get(d, name, name_len);
    uint8_t *copy = e ? dup(value, value_len) : NULL;
    if (!copy) return; /* then a snapshot may echo it: harmless, and only without memory */
    free(e->own_value);
    e->own = client;
    e->own_value = copy;
    e->own_len = value_len;
    e->own_version = version;
}

/* Sets the entry to (version, value) and sends it to every member but `except`. */
static void deliver(struct hub *h, struct doc *d, struct kv_entry *e, uint64_t except,
                    uint32_t version, const uint8_t *value, size_t len)
{
    uint8_t *copy = dup(value, len);
    if (!copy) return;
    free(e->value);
    e->value = copy;
    e->value_len = len;
    e->version = version;
    e->known = true;
    struct message *m = msg_key_info_one(version, e->name, e->name_len, value, len);
    if (!m) return;
    for (struct hub_client *o = d->clients; o; o = o->doc_next)
        if (o->id != except) outq_push(h->outq, o, m, false);
    message_unref(m);
}

void hub_keyview_changed(struct hub *h, struct doc *d, uint64_t setter, uint32_t version,
                         const uint8_t *name, size_t name_len, const uint8_t *value,
                         size_t value_len)
{
    struct kv_entry *e = get(d, name, name_len);
    if (!e) return;
    uint64_t own = take_own(e, version, value, value_len);
    if (same(e, version, value, value_len)) return; /* every member has it */
    deliver(h, d, e, setter ? setter : own, version, value, value_len);
}

void hub_keyview_removed(struct hub *h, struct doc *d, uint32_t version, const uint8_t *name,
                         size_t name_len)
{
    struct kv_entry *e = find(d->kview, name, name_len);
    if (!e) return;
    /* No member knows it (only an own write waits): nothing to take back. */
    struct message *m = e->known ? msg_key_info_one(version, name, name_len, NULL, 0) : NULL;
    drop(d->kview, e); /* `name` may be the entry's: used above, not below */
    if (m) hub_send_others(h, d, NULL, m);
    message_unref(m);
}

/* A snapshot of the stored keys, copied out of the reader's buffers. */
struct snap_key {
    const uint8_t *name, *value; /* one allocation, at name */
    size_t name_len, value_len;
    uint32_t version;
};

struct snapshot {
    struct snap_key *keys;
    size_t n, cap;
    bool failed;
};

static int snapshot_add(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                        size_t value_len, uint32_t version)
{
    struct snapshot *s = arg;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct snap_key *k = realloc(s->keys, cap * sizeof *k);
        if (!k) goto fail;
        s->keys = k;
        s->cap = cap;
    }
    uint8_t *copy = malloc(name_len + value_len + 1);
    if (!copy) goto fail;
    memcpy(copy, name, name_len);
    if (value_len) memcpy(copy + name_len, value, value_len);
    s->keys[s->n++] = (struct snap_key){ .name = copy,
                                         .name_len = name_len,
                                         .value = copy + name_len,
                                         .value_len = value_len,
                                         .version = version };
    return 0;
fail:
    s->failed = true;
    return 1;
}

int hub_keyview_sync(struct hub *h, struct doc *d, hub_keys_reader read, void *arg)
{
    struct snapshot s = { 0 };
    int rc = read(arg, snapshot_add, &s);
    if (rc == 0 && s.failed) rc = -1;
    /* A name held twice (two servers raced to give it to a client key and to a session
     * key): the higher version counts, the later-read session key on a tie, as for a
     * joiner on one server (doc_keys.c). */
    for (size_t i = 0; rc == 0 && i < s.n; i++)
        for (size_t j = i + 1; j < s.n && s.keys[i].name; j++)
            if (s.keys[j].name && s.keys[j].name_len == s.keys[i].name_len &&
                !memcmp(s.keys[j].name, s.keys[i].name, s.keys[i].name_len)) {
                size_t drop = s.keys[i].version > s.keys[j].version ? j : i;
                free((void *)s.keys[drop].name);
                s.keys[drop].name = NULL;
            }
    for (size_t i = 0; rc == 0 && i < s.n; i++)
        if (s.keys[i].name)
            hub_keyview_changed(h, d, 0, s.keys[i].version, s.keys[i].name, s.keys[i].name_len,
                                s.keys[i].value, s.keys[i].value_len);
    struct hub_keyview *v = rc == 0 ? d->kview : NULL;
    for (size_t i = 0; v && i < v->n;) {
        struct kv_entry *e = &v->e[i];
        /* Local writes are made under d->lock, as this is: any still remembered is
         * older than the snapshot, which has it or what replaced it. */
        e->own = 0;
        bool stored = false;
        for (size_t j = 0; j < s.n && !stored; j++)
            stored = s.keys[j].name && s.keys[j].name_len == e->name_len &&
                     !memcmp(s.keys[j].name, e->name, e->name_len);
        if (stored || !e->known) {
            i++;
            continue;
        }
        /* What the members know and the store no longer has went while nobody here
         * was listening (a client key whose owner left): removed, as its removal
         * would have been announced. */
        hub_keyview_removed(h, d, e->version + 1, e->name, e->name_len); /* moves the last here */
    }
    for (size_t i = 0; i < s.n; i++) free((void *)s.keys[i].name);
    free(s.keys);
    return rc;
}

int hub_keyview_each(struct doc *d, hub_key_fn fn, void *arg)
{
    struct hub_keyview *v = d->kview;
    for (size_t i = 0; v && i < v->n; i++)
        if (v->e[i].known && fn(arg, v->e[i].name, v->e[i].name_len, v->e[i].value,
                                v->e[i].value_len, v->e[i].version))
            return 1;
    return 0;
}

void hub_keyview_free(struct doc *d)
{
    struct hub_keyview *v = d->kview;
    if (!v) return;
    while (v->n) drop(v, &v->e[v->n - 1]);
    free(v->e);
    free(v);
    d->kview = NULL;
}
