/* store_conformance: owns the store.h test suite that every backend runs (see the
 * header). Worker threads never call cmocka asserts (they are not thread-safe): they
 * count what they saw and the test thread asserts on the counts afterwards. */
#include "store_conformance.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mono.h"

static const struct store_conformance *backend; /* the suite is not reentrant */
static unsigned test_counter;

struct tctx {
    struct store *s;
    char prefix[48];
    size_t prefix_len;
};

/* An id unique to this test: "<pid>-<test>-" + base (base may hold NUL bytes). */
struct id {
    char b[1200];
    size_t n;
};

static struct id mkid(const struct tctx *t, const void *base, size_t base_len)
{
    struct id id;
    memcpy(id.b, t->prefix, t->prefix_len);
    memcpy(id.b + t->prefix_len, base, base_len);
    id.n = t->prefix_len + base_len;
    return id;
}
#define ID(t, lit) mkid((t), (lit), sizeof(lit) - 1)

static int setup(void **state)
{
    struct tctx *t = calloc(1, sizeof *t);
    assert_non_null(t);
    if (backend->reset) backend->reset(backend->ctx);
    t->s = backend->open(backend->ctx);
    if (!t->s) {
        free(t);
        fail_msg("%s: open failed", backend->name);
    }
    snprintf(t->prefix, sizeof t->prefix, "conf%ld-%u-", (long)getpid(), ++test_counter);
    t->prefix_len = strlen(t->prefix);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tctx *t = *state;
    store_close(t->s);
    free(t);
    return 0;
}

static void create_str(struct store *s, struct id id, const char *data)
{
    assert_int_equal(store_doc_create(s, id.b, id.n, (const uint8_t *)data, strlen(data)),
                     STORE_OK);
}

/* Asserts that reading id from offset gives exactly `want` (want_len bytes). */
static void expect_read(struct store *s, struct id id, uint64_t offset, const void *want,
                        size_t want_len)
{
    uint8_t *data = (uint8_t *)"sentinel";
    size_t len = 12345;
    uint64_t total = 0;
    assert_int_equal(store_doc_read(s, id.b, id.n, offset, &data, &len, &total), STORE_OK);
    assert_int_equal(len, want_len);
    assert_int_equal(total, offset + want_len);
    if (want_len == 0)
        assert_null(data);
    else
        assert_memory_equal(data, want, want_len);
    free(data);
}

/* ---- keys helpers ---- */

struct key_list {
    int n;
    char names[16][64];
    size_t name_len[16];
    char values[16][64];
    size_t value_len[16];
    uint32_t versions[16];
    int stop_after; /* 0: never */
};

static int collect_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                       size_t value_len, uint32_t version)
{
    struct key_list *l = arg;
    if (l->n < 16 && name_len <= 64 && value_len <= 64) {
        memcpy(l->names[l->n], name, name_len);
        l->name_len[l->n] = name_len;
        memcpy(l->values[l->n], value, value_len);
        l->value_len[l->n] = value_len;
        l->versions[l->n] = version;
    }
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static int find_key(const struct key_list *l, const void *name, size_t name_len)
{
    for (int i = 0; i < l->n && i < 16; i++)
        if (l->name_len[i] == name_len && memcmp(l->names[i], name, name_len) == 0) return i;
    return -1;
}

static struct key_list get_keys(struct store *s, struct id id)
{
    struct key_list l;
    memset(&l, 0, sizeof l);
    assert_int_equal(store_keys_get(s, id.b, id.n, collect_key, &l), STORE_OK);
    return l;
}

static int key_set_str(struct store *s, struct id id, const char *name, const char *value,
                       uint32_t old_v, uint32_t new_v)
{
    return store_key_set(s, id.b, id.n, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
                         strlen(value), old_v, new_v);
}

/* ---- tests ---- */

static void t_strerror(void **state)
{
    (void)state;
    const int codes[] = { STORE_OK,           STORE_ENOTFOUND, STORE_EEXISTS, STORE_EMISMATCH,
                          STORE_ERANGE,       STORE_EIO,       STORE_ENOMEM,  STORE_EINVAL,
                          STORE_EUNAVAILABLE, STORE_ENOTSUP };
    const char *unknown = store_strerror(-1000);
    assert_non_null(unknown);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        const char *m = store_strerror(codes[i]);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        assert_string_not_equal(m, unknown);
        for (size_t j = 0; j < i; j++) assert_string_not_equal(m, store_strerror(codes[j]));
    }
}

static void t_ping(void **state)
{
    struct tctx *t = *state;
    assert_int_equal(store_ping(t->s), STORE_OK);
    assert_non_null(t->s->methods->name);
    assert_int_equal(t->s->methods->version, STORE_METHODS_VERSION);
}

static void t_create_exists(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), missing = ID(t, "missing"), empty = ID(t, "empty");
    uint64_t len = 99;
    assert_int_equal(store_doc_length(t->s, missing.b, missing.n, &len), STORE_ENOTFOUND);
    create_str(t->s, d, "hello");
    assert_int_equal(store_doc_length(t->s, d.b, d.n, &len), STORE_OK);
    assert_int_equal(len, 5);
    assert_int_equal(store_doc_create(t->s, d.b, d.n, (const uint8_t *)"other", 5), STORE_EEXISTS);
    expect_read(t->s, d, 0, "hello", 5);
    assert_int_equal(store_doc_create(t->s, empty.b, empty.n, NULL, 0), STORE_OK);
    assert_int_equal(store_doc_length(t->s, empty.b, empty.n, &len), STORE_OK);
    assert_int_equal(len, 0);
    expect_read(t->s, empty, 0, NULL, 0);
    assert_int_equal(store_doc_create(t->s, empty.b, empty.n, NULL, 0), STORE_EEXISTS);
}

static void t_read_offsets(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), missing = ID(t, "missing");
    create_str(t->s, d, "0123456789");
    expect_read(t->s, d, 0, "0123456789", 10);
    expect_read(t->s, d, 3, "3456789", 7);
    expect_read(t->s, d, 9, "9", 1);
    expect_read(t->s, d, 10, NULL, 0);
    uint8_t *data = NULL;
    size_t len = 0;
    uint64_t total = 0;
    assert_int_equal(store_doc_read(t->s, d.b, d.n, 11, &data, &len, &total), STORE_ERANGE);
    assert_int_equal(store_doc_read(t->s, d.b, d.n, UINT64_MAX, &data, &len, NULL), STORE_ERANGE);
    assert_int_equal(store_doc_read(t->s, missing.b, missing.n, 0, &data, &len, &total),
                     STORE_ENOTFOUND);
    /* total may be NULL */
    assert_int_equal(store_doc_read(t->s, d.b, d.n, 4, &data, &len, NULL), STORE_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(data, "456789", 6);
    free(data);
}

static void t_append(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), missing = ID(t, "missing");
    uint64_t nl = 0;
    create_str(t->s, d, "ab");
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 2, (const uint8_t *)"cd", 2, &nl), STORE_OK);
    assert_int_equal(nl, 4);
    nl = 0;
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 2, (const uint8_t *)"xx", 2, &nl),
                     STORE_EMISMATCH);
    assert_int_equal(nl, 4);
    nl = 0;
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 5, (const uint8_t *)"xx", 2, &nl),
                     STORE_EMISMATCH);
    assert_int_equal(nl, 4);
    expect_read(t->s, d, 0, "abcd", 4);
    assert_int_equal(store_doc_append(t->s, missing.b, missing.n, 0, (const uint8_t *)"x", 1, &nl),
                     STORE_ENOTFOUND);
    assert_int_equal(store_doc_length(t->s, missing.b, missing.n, &nl), STORE_ENOTFOUND);
    /* empty append at the right length: accepted, nothing changes */
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 4, NULL, 0, &nl), STORE_OK);
    assert_int_equal(nl, 4);
    /* append to an empty document */
    struct id e = ID(t, "empty");
    assert_int_equal(store_doc_create(t->s, e.b, e.n, NULL, 0), STORE_OK);
    assert_int_equal(store_doc_append(t->s, e.b, e.n, 1, (const uint8_t *)"z", 1, &nl),
                     STORE_EMISMATCH);
    assert_int_equal(nl, 0);
    assert_int_equal(store_doc_append(t->s, e.b, e.n, 0, (const uint8_t *)"z", 1, &nl), STORE_OK);
    assert_int_equal(nl, 1);
    expect_read(t->s, e, 0, "z", 1);
}

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Many appends of mixed sizes against an in-memory model, then reads from many
 * offsets: catches chunking mistakes (merges, boundaries). */
static void t_append_model(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "model");
    size_t cap = 4u << 20, n = 0;
    uint8_t *model = malloc(cap);
    assert_non_null(model);
    uint32_t seed = 12345;
    for (size_t i = 0; i < 700; i++) model[i] = (uint8_t)rng_next(&seed);
    n = 700;
    assert_int_equal(store_doc_create(t->s, d.b, d.n, model, n), STORE_OK);
    for (int i = 0; i < 600; i++) {
        uint32_t r = rng_next(&seed);
        size_t len = r % 7 == 0 ? 3000 + r % 9000 : 1 + r % 200;
        if (r % 50 == 0) len = 0;
        if (n + len > cap) break;
        for (size_t j = 0; j < len; j++) model[n + j] = (uint8_t)rng_next(&seed);
        uint64_t nl = 0;
        assert_int_equal(store_doc_append(t->s, d.b, d.n, n, model + n, len, &nl), STORE_OK);
        n += len;
        assert_int_equal(nl, n);
    }
    uint64_t len = 0;
    assert_int_equal(store_doc_length(t->s, d.b, d.n, &len), STORE_OK);
    assert_int_equal(len, n);
    expect_read(t->s, d, 0, model, n);
    for (int i = 0; i < 200; i++) {
        size_t off = rng_next(&seed) % (n + 1);
        expect_read(t->s, d, off, model + off, n - off);
    }
    expect_read(t->s, d, n - 1, model + n - 1, 1);
    expect_read(t->s, d, n, NULL, 0);
    free(model);
}

static void t_binary_ids(void **state)
{
    struct tctx *t = *state;
    struct id a = ID(t, "a"), a0 = ID(t, "a\0"), a0b = ID(t, "a\0b"), ab = ID(t, "ab"),
              hi = ID(t, "\xff\xfe\x00\x01");
    create_str(t->s, a, "1");
    create_str(t->s, a0, "22");
    create_str(t->s, a0b, "333");
    create_str(t->s, ab, "4444");
    create_str(t->s, hi, "55555");
    expect_read(t->s, a, 0, "1", 1);
    expect_read(t->s, a0, 0, "22", 2);
    expect_read(t->s, a0b, 0, "333", 3);
    expect_read(t->s, ab, 0, "4444", 4);
    expect_read(t->s, hi, 0, "55555", 5);
    /* doc "a" + key "bc" must not be doc "ab" + key "c" */
    assert_int_equal(key_set_str(t->s, a, "bc", "x", 0, 1), STORE_OK);
    assert_int_equal(key_set_str(t->s, ab, "c", "y", 0, 2), STORE_OK);
    struct key_list la = get_keys(t->s, a), lab = get_keys(t->s, ab), la0 = get_keys(t->s, a0);
    assert_int_equal(la.n, 1);
    assert_memory_equal(la.names[0], "bc", 2);
    assert_int_equal(lab.n, 1);
    assert_memory_equal(lab.names[0], "c", 1);
    assert_int_equal(lab.versions[0], 2);
    assert_int_equal(la0.n, 0);
    /* deleting "a" leaves the others */
    assert_int_equal(store_doc_delete(t->s, a.b, a.n), STORE_OK);
    expect_read(t->s, a0, 0, "22", 2);
    expect_read(t->s, ab, 0, "4444", 4);
    assert_int_equal(get_keys(t->s, ab).n, 1);
    /* binary key names */
    assert_int_equal(store_key_set(t->s, hi.b, hi.n, (const uint8_t *)"n\0m", 3,
                                   (const uint8_t *)"v\0", 2, 0, 7),
                     STORE_OK);
    struct key_list lh = get_keys(t->s, hi);
    assert_int_equal(lh.n, 1);
    assert_int_equal(lh.name_len[0], 3);
    assert_memory_equal(lh.names[0], "n\0m", 3);
    assert_int_equal(lh.value_len[0], 2);
    assert_memory_equal(lh.values[0], "v\0", 2);
}

static void t_delete(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), missing = ID(t, "missing");
    create_str(t->s, d, "first contents, long enough");
    for (int i = 0; i < 50; i++) {
        uint64_t len;
        assert_int_equal(store_doc_length(t->s, d.b, d.n, &len), STORE_OK);
        assert_int_equal(
            store_doc_append(t->s, d.b, d.n, len, (const uint8_t *)"0123456789", 10, NULL),
            STORE_OK);
    }
    assert_int_equal(key_set_str(t->s, d, "k1", "v1", 0, 1), STORE_OK);
    assert_int_equal(key_set_str(t->s, d, "k2", "v2", 0, 1), STORE_OK);
    assert_int_equal(store_doc_delete(t->s, d.b, d.n), STORE_OK);
    uint64_t len;
    assert_int_equal(store_doc_length(t->s, d.b, d.n, &len), STORE_ENOTFOUND);
    assert_int_equal(get_keys(t->s, d).n, 0);
    assert_int_equal(store_doc_delete(t->s, d.b, d.n), STORE_ENOTFOUND);
    assert_int_equal(store_doc_delete(t->s, missing.b, missing.n), STORE_ENOTFOUND);
    /* a re-created document starts fresh: no old bytes, no old keys */
    create_str(t->s, d, "new");
    expect_read(t->s, d, 0, "new", 3);
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 3, (const uint8_t *)"!", 1, NULL), STORE_OK);
    expect_read(t->s, d, 0, "new!", 4);
    assert_int_equal(get_keys(t->s, d).n, 0);
    assert_int_equal(key_set_str(t->s, d, "k1", "again", 0, 1), STORE_OK);
}

static void t_keys(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), norow = ID(t, "norow"), none = ID(t, "none");
    create_str(t->s, d, "x");
    assert_int_equal(key_set_str(t->s, d, "page", "1", 0, 1), STORE_OK);
    assert_int_equal(key_set_str(t->s, d, "page", "1b", 0, 1), STORE_EMISMATCH); /* exists */
    assert_int_equal(key_set_str(t->s, d, "page", "2", 1, 2), STORE_OK);
    assert_int_equal(key_set_str(t->s, d, "page", "3", 1, 3), STORE_EMISMATCH);
    assert_int_equal(key_set_str(t->s, d, "other", "z", 5, 6), STORE_EMISMATCH); /* absent */
    assert_int_equal(key_set_str(t->s, d, "lock", "", 0, 4), STORE_OK);          /* empty value */
    assert_int_equal(key_set_str(t->s, d, "page", "2b", 2, 2), STORE_OK); /* equal versions */
    struct key_list l = get_keys(t->s, d);
    assert_int_equal(l.n, 2);
    int p = find_key(&l, "page", 4), k = find_key(&l, "lock", 4);
    assert_true(p >= 0 && k >= 0);
    assert_int_equal(l.versions[p], 2);
    assert_int_equal(l.value_len[p], 2);
    assert_memory_equal(l.values[p], "2b", 2);
    assert_int_equal(l.versions[k], 4);
    assert_int_equal(l.value_len[k], 0);
    /* early stop */
    struct key_list stop;
    memset(&stop, 0, sizeof stop);
    stop.stop_after = 1;
    assert_int_equal(store_keys_get(t->s, d.b, d.n, collect_key, &stop), STORE_OK);
    assert_int_equal(stop.n, 1);
    /* keys of a document that has no row */
    assert_int_equal(key_set_str(t->s, norow, "k", "v", 0, 1), STORE_OK);
    l = get_keys(t->s, norow);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.versions[0], 1);
    uint64_t len;
    assert_int_equal(store_doc_length(t->s, norow.b, norow.n, &len), STORE_ENOTFOUND);
    /* none */
    assert_int_equal(get_keys(t->s, none).n, 0);
    /* a large value */
    static uint8_t big[100000];
    memset(big, 'b', sizeof big);
    assert_int_equal(
        store_key_set(t->s, d.b, d.n, (const uint8_t *)"big", 3, big, sizeof big, 0, 1), STORE_OK);
}

static void token_of(struct store_token *tok, const char *doc, size_t doc_len, char *user,
                     const char *perms, int64_t expires)
{
    memset(tok, 0, sizeof *tok);
    tok->doc_id = (char *)doc;
    tok->doc_id_len = doc_len;
    tok->user_id = user;
    snprintf(tok->permissions, sizeof tok->permissions, "%s", perms);
    tok->expires = expires;
}

static void t_tokens(void **state)
{
    struct tctx *t = *state;
    int64_t now = time(NULL);
    struct id tk1 = ID(t, "tok1"), tk2 = ID(t, "tok2"), tk3 = ID(t, "tok3"), old = ID(t, "expired"),
              unknown = ID(t, "unknown"), u1 = ID(t, "user1"), u2 = ID(t, "user2");
    char user1[64], user2[64];
    memcpy(user1, u1.b, u1.n);
    user1[u1.n] = 0;
    memcpy(user2, u2.b, u2.n);
    user2[u2.n] = 0;
    struct store_token tok, got;
    memset(&got, 0, sizeof got);

    token_of(&tok, "doc\0one", 7, user1, "rw", now + 3600);
    assert_int_equal(store_token_add(t->s, tk1.b, tk1.n, &tok), STORE_OK);
    assert_int_equal(store_token_add(t->s, tk1.b, tk1.n, &tok), STORE_EEXISTS);
    assert_int_equal(store_token_get(t->s, tk1.b, tk1.n, &got), STORE_OK);
    assert_int_equal(got.doc_id_len, 7);
    assert_memory_equal(got.doc_id, "doc\0one", 7);
    assert_string_equal(got.user_id, user1);
    assert_string_equal(got.permissions, "rw");
    assert_int_equal(got.expires, now + 3600);
    store_token_clear(&got);
    assert_null(got.doc_id);
    assert_null(got.user_id);
    assert_int_equal(store_token_get(t->s, unknown.b, unknown.n, &got), STORE_ENOTFOUND);

    token_of(&tok, "doc2", 4, user1, "r", now + 3600);
    assert_int_equal(store_token_add(t->s, tk2.b, tk2.n, &tok), STORE_OK);
    token_of(&tok, "doc3", 4, user2, "rwa", now + 3600);
    assert_int_equal(store_token_add(t->s, tk3.b, tk3.n, &tok), STORE_OK);

    /* expired: not found, and may be replaced */
    token_of(&tok, "docold", 6, user1, "rw", now - 10);
    assert_int_equal(store_token_add(t->s, old.b, old.n, &tok), STORE_OK);
    assert_int_equal(store_token_get(t->s, old.b, old.n, &got), STORE_ENOTFOUND);
    token_of(&tok, "docnew", 6, user2, "r", now + 600);
    assert_int_equal(store_token_add(t->s, old.b, old.n, &tok), STORE_OK);
    assert_int_equal(store_token_get(t->s, old.b, old.n, &got), STORE_OK);
    assert_int_equal(got.doc_id_len, 6);
    assert_memory_equal(got.doc_id, "docnew", 6);
    assert_string_equal(got.user_id, user2);
    store_token_clear(&got);

    /* user_update: all of user1's tokens, none of user2's */
    assert_int_equal(store_user_update(t->s, user1, strlen(user1), "a"), STORE_OK);
    assert_int_equal(store_token_get(t->s, tk1.b, tk1.n, &got), STORE_OK);
    assert_string_equal(got.permissions, "a");
    store_token_clear(&got);
    assert_int_equal(store_token_get(t->s, tk2.b, tk2.n, &got), STORE_OK);
    assert_string_equal(got.permissions, "a");
    store_token_clear(&got);
    assert_int_equal(store_token_get(t->s, tk3.b, tk3.n, &got), STORE_OK);
    assert_string_equal(got.permissions, "rwa");
    store_token_clear(&got);
    /* the replaced token moved to user2: user1's update must not have reached it */
    assert_int_equal(store_token_get(t->s, old.b, old.n, &got), STORE_OK);
    assert_string_equal(got.permissions, "r");
    store_token_clear(&got);
    assert_int_equal(store_user_update(t->s, user2, strlen(user2), ""), STORE_OK);
    assert_int_equal(store_token_get(t->s, tk3.b, tk3.n, &got), STORE_OK);
    assert_string_equal(got.permissions, "");
    store_token_clear(&got);
    assert_int_equal(store_user_update(t->s, "nobody-at-all", 13, "rw"), STORE_OK);
    store_token_clear(NULL);
}

static void t_sweep(void **state)
{
    struct tctx *t = *state;
    int64_t now = time(NULL);
    bool self = backend->flags & STORE_CONF_SELF_EXPIRING;
    struct id d1 = ID(t, "idle1"), d2 = ID(t, "idle2"), tsoon = ID(t, "soon"),
              tlate = ID(t, "late");
    create_str(t->s, d1, "one");
    create_str(t->s, d2, "two");
    assert_int_equal(key_set_str(t->s, d1, "k", "v", 0, 1), STORE_OK);
    struct store_token tok;
    token_of(&tok, d1.b, d1.n, "u", "rw", now + 100);
    assert_int_equal(store_token_add(t->s, tsoon.b, tsoon.n, &tok), STORE_OK);
    token_of(&tok, d1.b, d1.n, "u", "rw", now + 100000);
    assert_int_equal(store_token_add(t->s, tlate.b, tlate.n, &tok), STORE_OK);

    /* nothing is idle for an hour yet */
    uint64_t removed = 99, len;
    assert_int_equal(store_sweep(t->s, now, 3600, &removed), STORE_OK);
    assert_int_equal(store_doc_length(t->s, d1.b, d1.n, &len), STORE_OK);
    assert_int_equal(store_doc_length(t->s, d2.b, d2.n, &len), STORE_OK);
    assert_int_equal(get_keys(t->s, d1).n, 1);
    struct store_token got;
    assert_int_equal(store_token_get(t->s, tsoon.b, tsoon.n, &got), STORE_OK);
    store_token_clear(&got);
    assert_int_equal(store_sweep(t->s, now, 3600, NULL), STORE_OK); /* removed may be NULL */

    /* two hours later: both documents idle, the short token expired */
    removed = 0;
    assert_int_equal(store_sweep(t->s, now + 7200, 3600, &removed), STORE_OK);
    if (!self) {
        assert_true(removed >= 2);
        assert_int_equal(store_doc_length(t->s, d1.b, d1.n, &len), STORE_ENOTFOUND);
        assert_int_equal(store_doc_length(t->s, d2.b, d2.n, &len), STORE_ENOTFOUND);
        assert_int_equal(get_keys(t->s, d1).n, 0);
        assert_int_equal(store_token_get(t->s, tsoon.b, tsoon.n, &got), STORE_ENOTFOUND);
    }
    assert_int_equal(store_token_get(t->s, tlate.b, tlate.n, &got), STORE_OK);
    store_token_clear(&got);
    /* a swept token's name is free again */
    token_of(&tok, "x", 1, "u", "r", now + 50);
    if (!self) assert_int_equal(store_token_add(t->s, tsoon.b, tsoon.n, &tok), STORE_OK);
}

/* Ids too long for the backend: STORE_EINVAL, or they fully work. Never EIO. */
static void t_oversize(void **state)
{
    struct tctx *t = *state;
    static char big[1000];
    memset(big, 'x', sizeof big);
    struct id d = mkid(t, big, sizeof big);
    int rc = store_doc_create(t->s, d.b, d.n, (const uint8_t *)"abc", 3);
    assert_true(rc == STORE_OK || rc == STORE_EINVAL);
    if (rc == STORE_OK) {
        expect_read(t->s, d, 1, "bc", 2);
        assert_int_equal(store_doc_append(t->s, d.b, d.n, 3, (const uint8_t *)"d", 1, NULL),
                         STORE_OK);
        assert_int_equal(store_doc_delete(t->s, d.b, d.n), STORE_OK);
    }
    struct id small = ID(t, "small");
    rc = store_key_set(t->s, small.b, small.n, (const uint8_t *)big, sizeof big,
                       (const uint8_t *)"v", 1, 0, 1);
    assert_true(rc == STORE_OK || rc == STORE_EINVAL);
    if (rc == STORE_OK) {
        struct key_list l = get_keys(t->s, small);
        assert_int_equal(l.n, 1);
    }
    struct store_token tok, got;
    token_of(&tok, "doc", 3, "user", "rw", time(NULL) + 100);
    rc = store_token_add(t->s, d.b, d.n, &tok);
    assert_true(rc == STORE_OK || rc == STORE_EINVAL);
    if (rc == STORE_OK) {
        assert_int_equal(store_token_get(t->s, d.b, d.n, &got), STORE_OK);
        store_token_clear(&got);
    }
}

/* A long id of n bytes: the test's prefix, then `fill` bytes, then `tail`. */
static char *long_id(const struct tctx *t, size_t n, char fill, const char *tail)
{
    char *id = malloc(n);
    assert_non_null(id);
    size_t tl = strlen(tail);
    assert_true(n >= t->prefix_len + tl);
    memcpy(id, t->prefix, t->prefix_len);
    memset(id + t->prefix_len, fill, n - t->prefix_len - tl);
    memcpy(id + n - tl, tail, tl);
    return id;
}

static struct key_list keys_of(struct store *s, const char *id, size_t n)
{
    struct key_list l;
    memset(&l, 0, sizeof l);
    assert_int_equal(store_keys_get(s, id, n, collect_key, &l), STORE_OK);
    return l;
}

/* One document under a long id: everything a short id can do. */
static void exercise_id(struct store *s, const char *id, size_t n)
{
    uint64_t len = 0;
    uint8_t *data = NULL;
    size_t got = 0;
    assert_int_equal(store_doc_length(s, id, n, &len), STORE_ENOTFOUND);
    assert_int_equal(store_doc_create(s, id, n, (const uint8_t *)"abc", 3), STORE_OK);
    assert_int_equal(store_doc_create(s, id, n, (const uint8_t *)"xyz", 3), STORE_EEXISTS);
    assert_int_equal(store_doc_append(s, id, n, 3, (const uint8_t *)"def", 3, &len), STORE_OK);
    assert_int_equal(len, 6);
    assert_int_equal(store_doc_append(s, id, n, 3, (const uint8_t *)"!", 1, &len), STORE_EMISMATCH);
    assert_int_equal(len, 6);
    assert_int_equal(store_doc_read(s, id, n, 2, &data, &got, NULL), STORE_OK);
    assert_int_equal(got, 4);
    assert_memory_equal(data, "cdef", 4);
    free(data);
    /* keys, with short and long names (a long name does not fit beside a medium id) */
    static char name[400];
    memset(name, 'n', sizeof name);
    assert_int_equal(
        store_key_set(s, id, n, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1), STORE_OK);
    assert_int_equal(
        store_key_set(s, id, n, (const uint8_t *)name, sizeof name, (const uint8_t *)"w", 1, 0, 5),
        STORE_OK);
    assert_int_equal(
        store_key_set(s, id, n, (const uint8_t *)name, sizeof name, (const uint8_t *)"w", 1, 0, 6),
        STORE_EMISMATCH);
    struct key_list l = keys_of(s, id, n);
    assert_int_equal(l.n, 2);
    int k = find_key(&l, "k", 1);
    assert_true(k >= 0);
    assert_int_equal(l.versions[k], 1);
    /* deleted with its keys; re-created fresh */
    assert_int_equal(store_doc_delete(s, id, n), STORE_OK);
    assert_int_equal(store_doc_length(s, id, n, &len), STORE_ENOTFOUND);
    assert_int_equal(keys_of(s, id, n).n, 0);
    assert_int_equal(store_doc_create(s, id, n, (const uint8_t *)"new", 3), STORE_OK);
}

/* Document ids of any length up to at least 64 KiB work on every backend. */
static void t_long_ids(void **state)
{
    struct tctx *t = *state;
    static const size_t sizes[] = { 255, 256, 400, 509, 510, 511, 512, 1000, 4096, 65536 };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        char *id = long_id(t, sizes[i], 'L', "#");
        exercise_id(t->s, id, sizes[i]);
        uint64_t len = 0;
        assert_int_equal(store_doc_length(t->s, id, sizes[i], &len), STORE_OK);
        assert_int_equal(len, 3);
        free(id);
    }
    /* two 64 KiB ids that differ only in their last byte are two documents */
    size_t n = 65536;
    char *a = long_id(t, n, 'p', "a"), *b = long_id(t, n, 'p', "b");
    assert_int_equal(store_doc_create(t->s, a, n, (const uint8_t *)"A", 1), STORE_OK);
    assert_int_equal(store_doc_create(t->s, b, n, (const uint8_t *)"BB", 2), STORE_OK);
    assert_int_equal(
        store_key_set(t->s, a, n, (const uint8_t *)"k", 1, (const uint8_t *)"a", 1, 0, 1),
        STORE_OK);
    assert_int_equal(
        store_key_set(t->s, b, n, (const uint8_t *)"k", 1, (const uint8_t *)"b", 1, 0, 7),
        STORE_OK);
    uint64_t la = 0, lb = 0;
    assert_int_equal(store_doc_append(t->s, a, n, 1, (const uint8_t *)"a", 1, &la), STORE_OK);
    assert_int_equal(store_doc_length(t->s, b, n, &lb), STORE_OK);
    assert_int_equal(la, 2);
    assert_int_equal(lb, 2);
    struct key_list ka = keys_of(t->s, a, n), kb = keys_of(t->s, b, n);
    assert_int_equal(ka.n, 1);
    assert_int_equal(kb.n, 1);
    assert_int_equal(ka.versions[0], 1);
    assert_int_equal(kb.versions[0], 7);
    /* and a 64 KiB id that extends another: also separate */
    char *ab = long_id(t, n + 1, 'p', "aa");
    uint64_t len = 0;
    assert_int_equal(store_doc_length(t->s, ab, n + 1, &len), STORE_ENOTFOUND);
    assert_int_equal(keys_of(t->s, ab, n + 1).n, 0);
    assert_int_equal(store_doc_delete(t->s, a, n), STORE_OK);
    assert_int_equal(store_doc_length(t->s, b, n, &lb), STORE_OK);
    assert_int_equal(keys_of(t->s, b, n).n, 1);
    /* a token may name a long document */
    struct store_token tok, got;
    struct id tk = ID(t, "long-doc-token");
    token_of(&tok, b, n, "user", "rw", time(NULL) + 3600);
    assert_int_equal(store_token_add(t->s, tk.b, tk.n, &tok), STORE_OK);
    assert_int_equal(store_token_get(t->s, tk.b, tk.n, &got), STORE_OK);
    assert_int_equal(got.doc_id_len, n);
    assert_memory_equal(got.doc_id, b, n);
    store_token_clear(&got);
    /* kept across close and open, and swept when idle */
    store_close(t->s);
    t->s = backend->open(backend->ctx);
    assert_non_null(t->s);
    assert_int_equal(store_doc_length(t->s, b, n, &lb), STORE_OK);
    assert_int_equal(lb, 2);
    if (!(backend->flags & STORE_CONF_SELF_EXPIRING)) {
        assert_int_equal(store_sweep(t->s, time(NULL) + 7200, 3600, NULL), STORE_OK);
        assert_int_equal(store_doc_length(t->s, b, n, &lb), STORE_ENOTFOUND);
        assert_int_equal(keys_of(t->s, b, n).n, 0);
    }
    free(a);
    free(b);
    free(ab);
}

static void t_persistence(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "doc"), gone = ID(t, "gone"), tk = ID(t, "tok");
    create_str(t->s, d, "persist");
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 7, (const uint8_t *)"ent", 3, NULL),
                     STORE_OK);
    assert_int_equal(key_set_str(t->s, d, "k", "val", 0, 3), STORE_OK);
    create_str(t->s, gone, "bye");
    assert_int_equal(store_doc_delete(t->s, gone.b, gone.n), STORE_OK);
    struct store_token tok, got;
    token_of(&tok, d.b, d.n, "user", "r", time(NULL) + 3600);
    assert_int_equal(store_token_add(t->s, tk.b, tk.n, &tok), STORE_OK);

    store_close(t->s);
    t->s = backend->open(backend->ctx);
    assert_non_null(t->s);

    expect_read(t->s, d, 0, "persistent", 10);
    struct key_list l = get_keys(t->s, d);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.versions[0], 3);
    assert_memory_equal(l.values[0], "val", 3);
    uint64_t len;
    assert_int_equal(store_doc_length(t->s, gone.b, gone.n, &len), STORE_ENOTFOUND);
    assert_int_equal(store_token_get(t->s, tk.b, tk.n, &got), STORE_OK);
    assert_int_equal(got.doc_id_len, d.n);
    store_token_clear(&got);
    /* and it goes on working */
    assert_int_equal(store_doc_append(t->s, d.b, d.n, 10, (const uint8_t *)"!", 1, &len), STORE_OK);
    assert_int_equal(len, 11);
}

/* ---- concurrency ---- */

#define THREADS 8
#define ATTEMPTS 200

struct win {
    uint64_t offset;
    uint32_t thread, attempt;
    uint32_t len;
};

struct append_arg {
    struct store *s;
    struct id id;
    uint32_t thread;
    uint64_t start;
    struct win wins[ATTEMPTS];
    int n_wins, mismatches, errors;
    pthread_barrier_t *barrier;
};

/* The payload of one attempt: its length and bytes follow from (thread, attempt). */
static uint32_t payload(uint32_t thread, uint32_t attempt, uint8_t *buf)
{
    uint32_t len = 4 + (thread * 7 + attempt * 13) % 60;
    for (uint32_t i = 0; i < len; i++) buf[i] = (uint8_t)(thread * 31 + attempt * 17 + i);
    buf[0] = (uint8_t)thread;
    buf[1] = (uint8_t)attempt;
    return len;
}

static void *append_worker(void *p)
{
    struct append_arg *a = p;
    uint64_t expected = a->start;
    uint8_t buf[64];
    pthread_barrier_wait(a->barrier);
    for (uint32_t i = 0; i < ATTEMPTS; i++) {
        uint32_t len = payload(a->thread, i, buf);
        uint64_t nl = 0;
        int rc = store_doc_append(a->s, a->id.b, a->id.n, expected, buf, len, &nl);
        if (rc == STORE_OK) {
            if (nl != expected + len) a->errors++;
            a->wins[a->n_wins++] = (struct win){ expected, a->thread, i, len };
            expected = nl;
        } else if (rc == STORE_EMISMATCH) {
            if (nl == expected) a->errors++; /* a mismatch must report another length */
            a->mismatches++;
            expected = nl;
        } else {
            a->errors++;
        }
    }
    return NULL;
}

static int win_cmp(const void *x, const void *y)
{
    const struct win *a = x, *b = y;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static void t_concurrent_append(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "race");
    create_str(t->s, d, "start");
    static struct append_arg args[THREADS];
    pthread_t th[THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (uint32_t i = 0; i < THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i] =
            (struct append_arg){ .s = t->s, .id = d, .thread = i, .start = 5, .barrier = &barrier };
        assert_int_equal(pthread_create(&th[i], NULL, append_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&barrier);

    static struct win all[THREADS * ATTEMPTS];
    int n = 0, mismatches = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(args[i].errors, 0);
        memcpy(all + n, args[i].wins, (size_t)args[i].n_wins * sizeof all[0]);
        n += args[i].n_wins;
        mismatches += args[i].mismatches;
    }
    assert_int_equal(n + mismatches, THREADS * ATTEMPTS);
    assert_true(n > 0);
    qsort(all, (size_t)n, sizeof all[0], win_cmp);
    /* one winner per offset, no gap: each starts where the previous ended */
    uint64_t off = 5;
    size_t total = 5;
    for (int i = 0; i < n; i++) {
        assert_int_equal(all[i].offset, off);
        off += all[i].len;
        total += all[i].len;
    }
    uint8_t *want = malloc(total), buf[64];
    assert_non_null(want);
    memcpy(want, "start", 5);
    size_t pos = 5;
    for (int i = 0; i < n; i++) {
        uint32_t len = payload(all[i].thread, all[i].attempt, buf);
        memcpy(want + pos, buf, len);
        pos += len;
    }
    expect_read(t->s, d, 0, want, total);
    free(want);
    print_message("      %d appends won, %d mismatched\n", n, mismatches);
}

/* Writers append bytes that depend only on their offset, so any reader can check
 * that what it read is exactly the stored prefix, while appends go on. */
static uint8_t byte_at(uint64_t p) { return (uint8_t)(p * 131 + (p >> 8) + 7); }

struct rw_arg {
    struct store *s;
    struct id id;
    int writer;
    int errors;
    unsigned reads;
    int capped;
    int *stop;
};

static void *rw_worker(void *p)
{
    struct rw_arg *a = p;
    uint32_t seed = 777u + (uint32_t)a->writer * 1000u + (uint32_t)(uintptr_t)p % 997u;
    if (a->writer) {
        uint64_t expected = 0;
        for (int i = 0; i < 150; i++) {
            uint8_t buf[300];
            size_t len = 1 + rng_next(&seed) % (i % 10 == 0 ? 300 : 40);
            for (size_t j = 0; j < len; j++) buf[j] = byte_at(expected + j);
            uint64_t nl = 0;
            int rc = store_doc_append(a->s, a->id.b, a->id.n, expected, buf, len, &nl);
            if (rc != STORE_OK && rc != STORE_EMISMATCH) a->errors++;
            expected = nl;
        }
        return NULL;
    }
    /* Until the writers are done, but for 5 s at most: a backend that starves
     * writers under read load still finishes the test, with a warning. */
    time_t give_up = time(NULL) + 5;
    while (!__atomic_load_n(a->stop, __ATOMIC_ACQUIRE) || a->reads < 10) {
        if (time(NULL) >= give_up) {
            a->capped = 1;
            break;
        }
        uint64_t len = 0;
        if (store_doc_length(a->s, a->id.b, a->id.n, &len) != STORE_OK) {
            a->errors++;
            break;
        }
        uint64_t off = len ? rng_next(&seed) % (len + 1) : 0;
        uint8_t *data = NULL;
        size_t n = 0;
        uint64_t total = 0;
        if (store_doc_read(a->s, a->id.b, a->id.n, off, &data, &n, &total) != STORE_OK ||
            total < len || total != off + n) {
            a->errors++;
        } else {
            for (size_t i = 0; i < n; i++)
                if (data[i] != byte_at(off + i)) {
                    a->errors++;
                    break;
                }
        }
        free(data);
        a->reads++;
    }
    return NULL;
}

static void t_concurrent_read_write(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "rw");
    assert_int_equal(store_doc_create(t->s, d.b, d.n, NULL, 0), STORE_OK);
    int stop = 0;
    struct rw_arg args[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (struct rw_arg){ .s = t->s, .id = d, .writer = i < 4, .stop = &stop };
        assert_int_equal(pthread_create(&th[i], NULL, rw_worker, &args[i]), 0);
    }
    uint64_t t0 = mono_ns();
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    uint64_t t1 = mono_ns();
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    unsigned reads = 0;
    int capped = 0;
    for (int i = 4; i < 8; i++) {
        pthread_join(th[i], NULL);
        reads += args[i].reads;
        capped |= args[i].capped;
    }
    for (int i = 0; i < 8; i++) assert_int_equal(args[i].errors, 0);
    print_message("      600 append attempts took %.0f ms beside %u reads%s\n",
                  (double)(t1 - t0) / 1e6, reads,
                  capped ? "; WARNING: readers stopped after 5 s: writers starve under reads" : "");
    uint64_t len;
    assert_int_equal(store_doc_length(t->s, d.b, d.n, &len), STORE_OK);
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_read(t->s, d.b, d.n, 0, &data, &n, NULL), STORE_OK);
    assert_int_equal(n, len);
    for (size_t i = 0; i < n; i++) assert_int_equal(data[i], byte_at(i));
    free(data);
}

#define KEY_ATTEMPTS 100

struct key_arg {
    struct store *s;
    struct id id;
    uint32_t thread;
    uint32_t won[KEY_ATTEMPTS];
    int n_won, errors;
};

static int version_of(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                      size_t value_len, uint32_t version)
{
    (void)value;
    (void)value_len;
    if (name_len == 4 && memcmp(name, "race", 4) == 0) *(uint32_t *)arg = version;
    return 0;
}

static void *key_worker(void *p)
{
    struct key_arg *a = p;
    for (int i = 0; i < KEY_ATTEMPTS; i++) {
        uint32_t v = 0;
        if (store_keys_get(a->s, a->id.b, a->id.n, version_of, &v) != STORE_OK) a->errors++;
        char value[32];
        int vl = snprintf(value, sizeof value, "%u:%u", a->thread, v + 1);
        int rc = store_key_set(a->s, a->id.b, a->id.n, (const uint8_t *)"race", 4,
                               (const uint8_t *)value, (size_t)vl, v, v + 1);
        if (rc == STORE_OK)
            a->won[a->n_won++] = v + 1;
        else if (rc != STORE_EMISMATCH)
            a->errors++;
    }
    return NULL;
}

static void t_concurrent_keys(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "keys");
    create_str(t->s, d, "k");
    struct key_arg args[THREADS];
    pthread_t th[THREADS];
    for (uint32_t i = 0; i < THREADS; i++) {
        args[i] = (struct key_arg){ .s = t->s, .id = d, .thread = i };
        assert_int_equal(pthread_create(&th[i], NULL, key_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    static uint32_t owner[THREADS * KEY_ATTEMPTS + 2];
    memset(owner, 0, sizeof owner);
    uint32_t total = 0;
    for (uint32_t i = 0; i < THREADS; i++) {
        assert_int_equal(args[i].errors, 0);
        for (int j = 0; j < args[i].n_won; j++) {
            uint32_t v = args[i].won[j];
            assert_true(v >= 1 && v <= THREADS * KEY_ATTEMPTS);
            assert_int_equal(owner[v], 0); /* one winner per version */
            owner[v] = i + 1;
            total++;
        }
    }
    for (uint32_t v = 1; v <= total; v++) assert_int_not_equal(owner[v], 0); /* no gap */
    struct key_list l = get_keys(t->s, d);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.versions[0], total);
    char want[32];
    int wl = snprintf(want, sizeof want, "%u:%u", owner[total] - 1, total);
    assert_int_equal(l.value_len[0], (size_t)wl);
    assert_memory_equal(l.values[0], want, (size_t)wl);
}

struct create_arg {
    struct store *s;
    struct id id;
    char content[24];
    int rc;
    pthread_barrier_t *barrier;
};

static void *create_worker(void *p)
{
    struct create_arg *a = p;
    pthread_barrier_wait(a->barrier);
    a->rc =
        store_doc_create(a->s, a->id.b, a->id.n, (const uint8_t *)a->content, strlen(a->content));
    return NULL;
}

static void t_concurrent_create(void **state)
{
    struct tctx *t = *state;
    struct id d = ID(t, "create");
    struct create_arg args[THREADS];
    pthread_t th[THREADS];
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct create_arg){ .s = t->s, .id = d, .barrier = &barrier };
        snprintf(args[i].content, sizeof args[i].content, "creator-%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, create_worker, &args[i]), 0);
    }
    int winner = -1;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (args[i].rc == STORE_OK) {
            assert_int_equal(winner, -1);
            winner = i;
        } else {
            assert_int_equal(args[i].rc, STORE_EEXISTS);
        }
    }
    pthread_barrier_destroy(&barrier);
    assert_true(winner >= 0);
    expect_read(t->s, d, 0, args[winner].content, strlen(args[winner].content));
}

/* ---- enumeration (version 2) ---- */

struct listed {
    const struct tctx *t;
    struct id ids[400];
    int n;          /* ids of this test seen (duplicates included) */
    int calls;      /* all calls, other tests' data included */
    int stop_after; /* 0: never */
    struct store_token toks[8];
    struct store *s; /* when set: each callback also reads the document (re-entrancy) */
    int reads_ok;
};

static int own(const struct tctx *t, const char *id, size_t id_len)
{
    return id_len >= t->prefix_len && memcmp(id, t->prefix, t->prefix_len) == 0;
}

static int list_doc_cb(void *arg, const char *id, size_t id_len)
{
    struct listed *l = arg;
    l->calls++;
    if (own(l->t, id, id_len) && l->n < 400 && id_len <= sizeof l->ids[0].b) {
        memcpy(l->ids[l->n].b, id, id_len);
        l->ids[l->n].n = id_len;
        l->n++;
        uint64_t len;
        if (l->s && store_doc_length(l->s, id, id_len, &len) == STORE_OK) l->reads_ok++;
    }
    return l->stop_after && l->calls >= l->stop_after;
}

static int count_id(const struct listed *l, struct id id)
{
    int c = 0;
    for (int i = 0; i < l->n; i++) c += l->ids[i].n == id.n && memcmp(l->ids[i].b, id.b, id.n) == 0;
    return c;
}

static void t_doc_list(void **state)
{
    struct tctx *t = *state;
    struct listed *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->t = t;
    if (store_doc_list(t->s, list_doc_cb, l) == STORE_ENOTSUP) {
        free(l);
        skip();
    }
    /* More than one batch, binary ids, and glob characters for backends that match. */
    enum { N = 300 };
    static struct id ids[N + 3];
    char base[32];
    for (int i = 0; i < N; i++) {
        snprintf(base, sizeof base, "list-%03d", i);
        ids[i] = mkid(t, base, strlen(base));
        create_str(t->s, ids[i], i % 2 ? "x" : "");
    }
    ids[N] = ID(t, "bin\0id\xff");
    ids[N + 1] = ID(t, "glob*?[x]");
    ids[N + 2] = ID(t, "gone");
    for (int i = N; i < N + 3; i++) create_str(t->s, ids[i], "data");
    assert_int_equal(store_doc_delete(t->s, ids[N + 2].b, ids[N + 2].n), STORE_OK);
    /* keys and tokens are not documents */
    struct id keyonly = ID(t, "keys-without-document");
    assert_int_equal(key_set_str(t->s, keyonly, "k", "v", 0, 1), STORE_OK);

    memset(l, 0, sizeof *l);
    l->t = t;
    l->s = t->s;
    assert_int_equal(store_doc_list(t->s, list_doc_cb, l), STORE_OK);
    for (int i = 0; i < N + 2; i++) assert_true(count_id(l, ids[i]) >= 1);
    assert_int_equal(count_id(l, ids[N + 2]), 0);
    assert_int_equal(count_id(l, keyonly), 0);
    /* Nothing else of ours; repeats (allowed) stay rare. */
    assert_true(l->n >= N + 2 && l->n <= 2 * (N + 2));
    assert_int_equal(l->reads_ok, l->n);

    /* Early stop: exactly as many calls as asked for. */
    memset(l, 0, sizeof *l);
    l->t = t;
    l->stop_after = 5;
    assert_int_equal(store_doc_list(t->s, list_doc_cb, l), STORE_OK);
    assert_int_equal(l->calls, 5);
    free(l);
}

static int list_token_cb(void *arg, const char *token, size_t token_len,
                         const struct store_token *tok)
{
    struct listed *l = arg;
    l->calls++;
    if (own(l->t, token, token_len) && l->n < 8) {
        memcpy(l->ids[l->n].b, token, token_len);
        l->ids[l->n].n = token_len;
        struct store_token *c = &l->toks[l->n];
        *c = *tok;
        c->doc_id = malloc(tok->doc_id_len + 1);
        memcpy(c->doc_id, tok->doc_id, tok->doc_id_len);
        c->user_id = strdup(tok->user_id);
        l->n++;
    }
    return l->stop_after && l->calls >= l->stop_after;
}

static void t_token_list(void **state)
{
    struct tctx *t = *state;
    struct listed *l = calloc(1, sizeof *l);
    assert_non_null(l);
    l->t = t;
    if (store_token_list(t->s, list_token_cb, l) == STORE_ENOTSUP) {
        free(l);
        skip();
    }
    for (int i = 0; i < l->n; i++) store_token_clear(&l->toks[i]);
    memset(l, 0, sizeof *l);
    l->t = t;
    int64_t now = time(NULL);
    struct id tk1 = ID(t, "tok1"), tk2 = ID(t, "tok\0two"), old = ID(t, "expired");
    char user[64];
    struct id u = ID(t, "user");
    memcpy(user, u.b, u.n);
    user[u.n] = 0;
    struct store_token tok;
    token_of(&tok, "doc\0one", 7, user, "rw", now + 3600);
    assert_int_equal(store_token_add(t->s, tk1.b, tk1.n, &tok), STORE_OK);
    token_of(&tok, "doc2", 4, "", "r", now + 7200);
    assert_int_equal(store_token_add(t->s, tk2.b, tk2.n, &tok), STORE_OK);
    token_of(&tok, "doc3", 4, user, "rwa", now - 10);
    assert_int_equal(store_token_add(t->s, old.b, old.n, &tok), STORE_OK);

    assert_int_equal(store_token_list(t->s, list_token_cb, l), STORE_OK);
    int seen1 = 0, seen2 = 0;
    for (int i = 0; i < l->n; i++) {
        struct id *id = &l->ids[i];
        struct store_token *g = &l->toks[i];
        assert_false(id->n == old.n && memcmp(id->b, old.b, old.n) == 0);
        if (id->n == tk1.n && memcmp(id->b, tk1.b, tk1.n) == 0) {
            seen1++;
            assert_int_equal(g->doc_id_len, 7);
            assert_memory_equal(g->doc_id, "doc\0one", 7);
            assert_string_equal(g->user_id, user);
            assert_string_equal(g->permissions, "rw");
            assert_int_equal(g->expires, now + 3600);
        } else if (id->n == tk2.n && memcmp(id->b, tk2.b, tk2.n) == 0) {
            seen2++;
            assert_int_equal(g->doc_id_len, 4);
            assert_memory_equal(g->doc_id, "doc2", 4);
            assert_string_equal(g->user_id, "");
            assert_string_equal(g->permissions, "r");
            assert_int_equal(g->expires, now + 7200);
        } else {
            fail_msg("token_list reported a token this test did not add");
        }
    }
    assert_true(seen1 >= 1 && seen2 >= 1);
    for (int i = 0; i < l->n; i++) store_token_clear(&l->toks[i]);

    memset(l, 0, sizeof *l);
    l->t = t;
    l->stop_after = 1;
    assert_int_equal(store_token_list(t->s, list_token_cb, l), STORE_OK);
    assert_int_equal(l->calls, 1);
    for (int i = 0; i < l->n; i++) store_token_clear(&l->toks[i]);
    free(l);
}

int store_conformance_run(const struct store_conformance *b)
{
    backend = b;
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_strerror),
        T(t_ping),
        T(t_create_exists),
        T(t_read_offsets),
        T(t_append),
        T(t_append_model),
        T(t_binary_ids),
        T(t_delete),
        T(t_keys),
        T(t_tokens),
        T(t_sweep),
        T(t_oversize),
        T(t_long_ids),
        T(t_persistence),
        T(t_concurrent_append),
        T(t_concurrent_read_write),
        T(t_concurrent_keys),
        T(t_concurrent_create),
        T(t_doc_list),
        T(t_token_list),
    };
#undef T
    char name[128];
    snprintf(name, sizeof name, "store conformance: %s", b->name);
    return _cmocka_run_group_tests(name, tests, sizeof tests / sizeof tests[0], NULL, NULL);
}
