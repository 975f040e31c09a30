/* test_auth: unit tests for server/auth/auth.c over a real LMDB store in a temporary
 * directory — plain ids, registered tokens (and their expiry), JWTs with raw and base64
 * keys, the order between them, refusals without 'r', and the start-up key check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "app.h"
#include "auth.h"
#include "config.h"
#include "store.h"

static char tmp_root[] = "/tmp/zw-test-auth-XXXXXX";

struct ctx {
    struct config cfg;
    struct store *store;
    struct app app;
};

static int setup(void **state)
{
    struct ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    static int n;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/%d", tmp_root, n++);
    struct store_config sc = { .backend = "lmdb", .data_dir = dir, .nosync = 1 };
    char err[256];
    c->store = store_open(&sc, err, sizeof err);
    if (!c->store) fail_msg("store_open: %s", err);
    c->app.cfg = &c->cfg;
    c->app.store = c->store;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct ctx *c = *state;
    store_close(c->store);
    free(c);
    return 0;
}

static void add_token(struct ctx *c, const char *token, const char *doc, const char *user,
                      const char *perms, int64_t expires)
{
    struct store_token t = { .doc_id = (char *)doc,
                             .doc_id_len = strlen(doc),
                             .user_id = (char *)user,
                             .expires = expires };
    snprintf(t.permissions, sizeof t.permissions, "%s", perms);
    assert_int_equal(store_token_add(c->store, token, strlen(token), &t), STORE_OK);
}

static int resolve(struct ctx *c, const char *id, struct auth_result *r)
{
    return auth_resolve(&c->app, (const uint8_t *)id, strlen(id), r);
}

static void b64url(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    char *p = out, *q = out;
    for (; *p && *p != '='; p++) *q++ = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    *q = 0;
}

static char *mint(const char *payload, const void *key, size_t key_len)
{
    static char t[2048];
    const char *h = "{\"alg\":\"HS256\"}";
    b64url((const uint8_t *)h, strlen(h), t);
    strcat(t, ".");
    b64url((const uint8_t *)payload, strlen(payload), t + strlen(t));
    uint8_t mac[32];
    unsigned ml;
    HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)t, strlen(t), mac, &ml);
    strcat(t, ".");
    b64url(mac, 32, t + strlen(t));
    return t;
}

static void test_plain_id(void **state)
{
    struct ctx *c = *state;
    struct auth_result r;
    assert_int_equal(resolve(c, "my-doc", &r), 0);
    assert_int_equal(r.kind, AUTH_PLAIN);
    assert_string_equal(r.doc_id, "my-doc");
    assert_int_equal(r.doc_id_len, 6);
    assert_string_equal(r.user_id, "");
    assert_string_equal(r.permissions, "rw");
    assert_true(auth_can(&r, 'r') && auth_can(&r, 'w') && !auth_can(&r, 'a'));
    auth_result_clear(&r);
    /* Ids are byte strings. */
    assert_int_equal(auth_resolve(&c->app, (const uint8_t *)"a\0b", 3, &r), 0);
    assert_int_equal(r.doc_id_len, 3);
    assert_memory_equal(r.doc_id, "a\0b", 3);
    auth_result_clear(&r);
    /* Too long to be a token: still resolved (the session judges the length). */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(resolve(c, big, &r), 0);
    assert_int_equal(r.doc_id_len, sizeof big - 1);
    auth_result_clear(&r);
}

static void test_token(void **state)
{
    struct ctx *c = *state;
    int64_t later = (int64_t)time(NULL) + 3600;
    add_token(c, "tok-rw", "real", "alice", "rw", later);
    add_token(c, "tok-r", "real", "bob", "r", later);
    add_token(c, "tok-rwa", "real", "carol", "rwa", later);
    add_token(c, "tok-w", "real", "dave", "w", later);
    add_token(c, "tok-none", "real", "erin", "", later);
    add_token(c, "tok-old", "real", "frank", "rw", (int64_t)time(NULL) - 5);

    struct auth_result r;
    assert_int_equal(resolve(c, "tok-rw", &r), 0);
    assert_int_equal(r.kind, AUTH_TOKEN);
    assert_string_equal(r.doc_id, "real");
    assert_string_equal(r.user_id, "alice");
    assert_string_equal(r.permissions, "rw");
    auth_result_clear(&r);
    assert_int_equal(resolve(c, "tok-r", &r), 0);
    assert_false(auth_can(&r, 'w'));
    auth_result_clear(&r);
    assert_int_equal(resolve(c, "tok-rwa", &r), 0);
    assert_true(auth_can(&r, 'a'));
    auth_result_clear(&r);
    /* No r: refused. */
    assert_int_equal(resolve(c, "tok-w", &r), -1);
    assert_null(r.doc_id);
    assert_int_equal(resolve(c, "tok-none", &r), -1);
    /* Expired: not a token any more, so (no JWT key) a plain id naming itself. */
    assert_int_equal(resolve(c, "tok-old", &r), 0);
    assert_int_equal(r.kind, AUTH_PLAIN);
    assert_string_equal(r.doc_id, "tok-old");
    auth_result_clear(&r);
}

static void test_jwt(void **state)
{
    struct ctx *c = *state;
    c->cfg.jwt_key = "k3y";
    char payload[256];
    long now = (long)time(NULL);
    snprintf(payload, sizeof payload, "{\"sub\":\"jdoc\",\"u\":\"ann\",\"p\":\"r\",\"exp\":%ld}",
             now + 60);
    struct auth_result r;
    assert_int_equal(resolve(c, mint(payload, "k3y", 3), &r), 0);
    assert_int_equal(r.kind, AUTH_JWT);
    assert_string_equal(r.doc_id, "jdoc");
    assert_string_equal(r.user_id, "ann");
    assert_string_equal(r.permissions, "r");
    auth_result_clear(&r);
    /* Wrong key, plain id, expired, no r: all refused. */
    assert_int_equal(resolve(c, mint(payload, "k3Y", 3), &r), -1);
    assert_int_equal(resolve(c, "jdoc", &r), -1);
    snprintf(payload, sizeof payload, "{\"sub\":\"jdoc\",\"p\":\"rw\",\"exp\":%ld}", now - 1);
    assert_int_equal(resolve(c, mint(payload, "k3y", 3), &r), -1);
    snprintf(payload, sizeof payload, "{\"sub\":\"jdoc\",\"p\":\"wa\",\"exp\":%ld}", now + 60);
    assert_int_equal(resolve(c, mint(payload, "k3y", 3), &r), -1);
    /* A registered token still wins over JWT. */
    add_token(c, "registered", "tdoc", "u", "rw", now + 60);
    assert_int_equal(resolve(c, "registered", &r), 0);
    assert_int_equal(r.kind, AUTH_TOKEN);
    auth_result_clear(&r);
    c->cfg.jwt_key = NULL;
}

static void test_jwt_base64_key(void **state)
{
    struct ctx *c = *state;
    const uint8_t raw[] = { 0xde, 0xad, 0x00, 0xbe, 0xef };
    c->cfg.jwt_key = "3q0Avu8=";
    c->cfg.jwt_key_is_base64 = 1;
    char err[128];
    assert_int_equal(auth_check_config(&c->cfg, err, sizeof err), 0);
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sub\":\"b\",\"p\":\"rw\",\"exp\":%ld}",
             (long)time(NULL) + 60);
    struct auth_result r;
    assert_int_equal(resolve(c, mint(payload, raw, sizeof raw), &r), 0);
    assert_string_equal(r.doc_id, "b");
    auth_result_clear(&r);
    assert_int_equal(resolve(c, mint(payload, "3q0Avu8=", 8), &r), -1);
    /* An invalid base64 key: a start-up error, and every JWT refused if ignored. */
    c->cfg.jwt_key = "not*base64";
    assert_int_equal(auth_check_config(&c->cfg, err, sizeof err), -1);
    assert_non_null(strstr(err, "JWTKey"));
    assert_int_equal(resolve(c, mint(payload, raw, sizeof raw), &r), -1);
    /* Raw keys need no check. */
    c->cfg.jwt_key_is_base64 = 0;
    assert_int_equal(auth_check_config(&c->cfg, err, sizeof err), 0);
    c->cfg.jwt_key = NULL;
}

int main(void)
{
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jwt_base64_key, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    return rc;
}
