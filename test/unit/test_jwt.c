/* test_jwt: unit tests for server/auth/jwt.c — valid HS256 tokens minted here with OpenSSL,
 * and every way a token can be wrong: algorithm, signature, segments, base64url,
 * JSON, claims, time. Also the strict base64 decoders and JWTKey decoding.
 *
 * Tokens are verified from an exactly-sized heap copy (no NUL after them), so that
 * under AddressSanitizer any read past the token is a crash, not a silent pass. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "jwt.h"

#define NOW 1700000000LL
static const char KEY[] = "secret-key";

/* ---- helpers ---- */

static void b64url(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
    }
    out[o] = 0;
}

/* header.payload.signature with an HS256 signature under key (whatever the header says). */
static char *mint_with_key(const char *header, const char *payload, const void *key, size_t key_len)
{
    char *t = malloc(4096);
    assert_non_null(t);
    b64url((const uint8_t *)header, strlen(header), t);
    strcat(t, ".");
    b64url((const uint8_t *)payload, strlen(payload), t + strlen(t));
    uint8_t mac[32];
    unsigned mlen = 0;
    assert_non_null(
        HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)t, strlen(t), mac, &mlen));
    strcat(t, ".");
    b64url(mac, 32, t + strlen(t));
    return t;
}

static char *mint(const char *header, const char *payload)
{
    return mint_with_key(header, payload, KEY, strlen(KEY));
}

static const char HS256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

static int verify_n(const char *token, size_t len, struct jwt_claims *c)
{
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, token, len);
    int rc = jwt_verify(copy, len, (const uint8_t *)KEY, strlen(KEY), NOW, c);
    free(copy);
    return rc;
}

static int verify(const char *token)
{
    struct jwt_claims c;
    int rc = verify_n(token, strlen(token), &c);
    if (rc == JWT_OK)
        jwt_claims_clear(&c);
    else
        assert_null(c.sub);
    return rc;
}

/* Mints and verifies, freeing the token. */
static int check(const char *header, const char *payload)
{
    char *t = mint(header, payload);
    int rc = verify(t);
    free(t);
    return rc;
}

/* ---- valid tokens ---- */

static void test_valid(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"sub\":\"doc-1\",\"u\":\"alice\",\"p\":\"rw\",\"exp\":1700000100}");
    struct jwt_claims c;
    assert_int_equal(verify_n(t, strlen(t), &c), JWT_OK);
    assert_string_equal(c.sub, "doc-1");
    assert_int_equal(c.sub_len, 5);
    assert_string_equal(c.user, "alice");
    assert_string_equal(c.permissions, "rw");
    assert_int_equal(c.exp, 1700000100);
    jwt_claims_clear(&c);
    assert_null(c.sub);
    free(t);
}

static void test_valid_minimal_claims(void **state)
{
    (void)state;
    char *t = mint("{\"alg\":\"HS256\"}", "{\"sub\":\"d\",\"exp\":1700000001}");
    struct jwt_claims c;
    assert_int_equal(verify_n(t, strlen(t), &c), JWT_OK);
    assert_string_equal(c.user, "");
    assert_string_equal(c.permissions, "");
    jwt_claims_clear(&c);
    free(t);
}

static void test_permissions_filtered(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"sub\":\"d\",\"p\":\"xaaw r!\",\"exp\":1800000000}");
    struct jwt_claims c;
    assert_int_equal(verify_n(t, strlen(t), &c), JWT_OK);
    assert_string_equal(c.permissions, "rwa");
    jwt_claims_clear(&c);
    free(t);
}

static void test_utf8_sub_and_extra_claims(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"iss\":\"school\",\"sub\":\"tableau \\u00e9\",\"exp\":1.8e9,"
                          "\"iat\":1,\"nbf\":1699999999}");
    struct jwt_claims c;
    assert_int_equal(verify_n(t, strlen(t), &c), JWT_OK);
    assert_string_equal(c.sub, "tableau \xc3\xa9");
    assert_int_equal(c.exp, 1800000000);
    jwt_claims_clear(&c);
    free(t);
}

static void test_base64_key(void **state)
{
    (void)state;
    const uint8_t raw[] = { 0x00, 0xff, 0x10, 0x80, 0x7f };
    char *t = mint_with_key(HS256, "{\"sub\":\"d\",\"exp\":1800000000}", raw, sizeof raw);
    uint8_t *key;
    size_t key_len;
    assert_int_equal(jwt_key_decode("AP8QgH8=", 1, &key, &key_len), 0);
    assert_int_equal(key_len, sizeof raw);
    assert_memory_equal(key, raw, sizeof raw);
    struct jwt_claims c;
    assert_int_equal(jwt_verify(t, strlen(t), key, key_len, NOW, &c), JWT_OK);
    jwt_claims_clear(&c);
    /* The same text used as a raw key does not verify. */
    assert_int_equal(jwt_verify(t, strlen(t), (const uint8_t *)"AP8QgH8=", 8, NOW, &c),
                     JWT_ESIGNATURE);
    free(key);
    free(t);
}

/* ---- algorithm ---- */

static void test_alg_none(void **state)
{
    (void)state;
    /* Unsigned, as an attacker would send it. */
    char t[512];
    const char *h = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    const char *p = "{\"sub\":\"d\",\"p\":\"rwa\",\"exp\":1800000000}";
    b64url((const uint8_t *)h, strlen(h), t);
    strcat(t, ".");
    b64url((const uint8_t *)p, strlen(p), t + strlen(t));
    strcat(t, ".");
    assert_int_equal(verify(t), JWT_EALG);
    /* Even with a valid HMAC appended. */
    assert_int_equal(check(h, p), JWT_EALG);
}

static void test_other_algs(void **state)
{
    (void)state;
    const char *p = "{\"sub\":\"d\",\"exp\":1800000000}";
    assert_int_equal(check("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"HS512\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"HS384\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"hs256\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"HS256 \"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"\"}", p), JWT_EALG);
    assert_int_equal(check("{\"typ\":\"JWT\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":256}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":null}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":[\"HS256\"]}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"HS256\",\"alg\":\"none\"}", p), JWT_EALG);
    assert_int_equal(check("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", p), JWT_EALG);
}

/* ---- signature ---- */

static void test_wrong_key(void **state)
{
    (void)state;
    char *t = mint_with_key(HS256, "{\"sub\":\"d\",\"exp\":1800000000}", "other", 5);
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    free(t);
    t = mint_with_key(HS256, "{\"sub\":\"d\",\"exp\":1800000000}", "secret-ke", 9);
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    free(t);
    t = mint_with_key(HS256, "{\"sub\":\"d\",\"exp\":1800000000}", "", 0);
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    free(t);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"sub\":\"d\",\"p\":\"r\",\"exp\":1800000000}");
    char *good = mint(HS256, "{\"sub\":\"d\",\"p\":\"rw\",\"exp\":1800000000}");
    /* Payload of one token with the signature of the other. */
    char *dot = strrchr(t, '.'), *gdot = strrchr(good, '.');
    char mixed[1024];
    snprintf(mixed, sizeof mixed, "%.*s%s", (int)(gdot - good), good, dot);
    assert_int_equal(verify(mixed), JWT_ESIGNATURE);
    /* One flipped character in the payload. */
    char *p = strchr(t, '.') + 3;
    *p = (*p == 'A') ? 'B' : 'A';
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    free(t);
    free(good);
}

static void test_signature_shapes(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"sub\":\"d\",\"exp\":1800000000}");
    size_t n = strlen(t);
    /* Truncated by one and by many characters. */
    assert_int_equal(verify_n(t, n - 1, &(struct jwt_claims){ 0 }), JWT_ESIGNATURE);
    assert_int_equal(verify_n(t, n - 20, &(struct jwt_claims){ 0 }), JWT_ESIGNATURE);
    /* Cut right after the second dot: empty signature. */
    assert_int_equal(verify_n(t, (size_t)(strrchr(t, '.') - t) + 1, &(struct jwt_claims){ 0 }),
                     JWT_ESIGNATURE);
    /* Extra characters and padding after the signature. */
    char longer[1024];
    snprintf(longer, sizeof longer, "%sA", t);
    assert_int_equal(verify(longer), JWT_ESIGNATURE);
    snprintf(longer, sizeof longer, "%s=", t);
    assert_int_equal(verify(longer), JWT_ESIGNATURE);
    /* The last character carries 2 unused bits: another character with the same
     * 4 used bits decodes to the same MAC but must still be refused. */
    char *last = t + n - 1;
    const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alpha, *last) - alpha);
    *last = alpha[v ^ 1];
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    /* A non-base64url character in the signature. */
    *last = '+';
    assert_int_equal(verify(t), JWT_ESIGNATURE);
    free(t);
}

/* ---- structure and encoding ---- */

static void test_segments(void **state)
{
    (void)state;
    struct jwt_claims c;
    assert_int_equal(verify_n("", 0, &c), JWT_EFORMAT);
    assert_int_equal(verify("."), JWT_EFORMAT);
    assert_int_equal(verify(".."), JWT_EFORMAT);
    assert_int_equal(verify("..."), JWT_EFORMAT);
    assert_int_equal(verify("abc"), JWT_EFORMAT);
    assert_int_equal(verify("abc.def"), JWT_EFORMAT);
    assert_int_equal(verify("my-document-id"), JWT_EFORMAT);
    char *t = mint(HS256, "{\"sub\":\"d\",\"exp\":1800000000}");
    char buf[1024];
    snprintf(buf, sizeof buf, "%s.xyz", t);
    assert_int_equal(verify(buf), JWT_EFORMAT);
    snprintf(buf, sizeof buf, ".%s", t);
    assert_int_equal(verify(buf), JWT_EFORMAT);
    /* Header only up to the first dot, nothing else. */
    snprintf(buf, sizeof buf, "%.*s", (int)(strchr(t, '.') - t + 1), t);
    assert_int_equal(verify(buf), JWT_EFORMAT);
    free(t);
    assert_int_equal(jwt_verify(NULL, 0, (const uint8_t *)KEY, 3, NOW, &c), JWT_EFORMAT);
}

static void test_bad_base64_header(void **state)
{
    (void)state;
    char *t = mint(HS256, "{\"sub\":\"d\",\"exp\":1800000000}");
    const char bad[] = { '+', '/', '=', ' ', '*', '\n', '\0', (char)0xc3 };
    for (size_t i = 0; i < sizeof bad; i++) {
        char *copy = strdup(t);
        copy[2] = bad[i];
        struct jwt_claims c;
        assert_int_equal(verify_n(copy, strlen(t), &c), JWT_EFORMAT);
        free(copy);
    }
    free(t);
    /* A header whose length leaves one dangling character (len % 4 == 1). */
    assert_int_equal(verify("eyJhbGciOiJIUzI1NiJ9A.e30.AAAA"), JWT_EFORMAT);
}

static void test_padded_segments(void **state)
{
    (void)state;
    /* {"alg":"HS256"} is 15 bytes: base64url "eyJhbGciOiJIUzI1NiJ9" needs no padding;
     * {"alg":"HS256" } (16 bytes) needs "==" which base64url JWTs must not carry. */
    char *t = mint("{\"alg\":\"HS256\" }", "{\"sub\":\"d\",\"exp\":1800000000}");
    char *dot = strchr(t, '.');
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s==%s", (int)(dot - t), t, dot);
    assert_int_equal(verify(buf), JWT_EFORMAT);
    free(t);
}

static void test_bad_json(void **state)
{
    (void)state;
    const char *p = "{\"sub\":\"d\",\"exp\":1800000000}";
    assert_int_equal(check("not json", p), JWT_EFORMAT);
    assert_int_equal(check("[\"HS256\"]", p), JWT_EFORMAT);
    assert_int_equal(check("\"HS256\"", p), JWT_EFORMAT);
    assert_int_equal(check("{\"alg\":\"HS256\"", p), JWT_EFORMAT);
    assert_int_equal(check("{\"alg\":\"HS256\"}x", p), JWT_EFORMAT);
    assert_int_equal(check("{\"alg\":\"HS256\"}{}", p), JWT_EFORMAT);
    assert_int_equal(check("", p), JWT_EFORMAT);
    assert_int_equal(check(HS256, "garbage"), JWT_EFORMAT);
    assert_int_equal(check(HS256, "[1,2]"), JWT_EFORMAT);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000"), JWT_EFORMAT);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000} trailing"), JWT_EFORMAT);
    /* Trailing whitespace is still one JSON value. */
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000} \n"), JWT_OK);
}

static void test_payload_with_nul(void **state)
{
    (void)state;
    /* A payload whose bytes hold a NUL: {"sub":"d","exp":1800000000}\0{"p":"rwa"} */
    uint8_t payload[64];
    const char a[] = "{\"sub\":\"d\",\"exp\":1800000000}";
    const char b[] = "{\"p\":\"rwa\"}";
    memcpy(payload, a, sizeof a); /* includes the NUL */
    memcpy(payload + sizeof a, b, sizeof b - 1);
    size_t plen = sizeof a + sizeof b - 1;
    char t[1024];
    b64url((const uint8_t *)HS256, strlen(HS256), t);
    strcat(t, ".");
    b64url(payload, plen, t + strlen(t));
    uint8_t mac[32];
    unsigned mlen;
    HMAC(EVP_sha256(), KEY, (int)strlen(KEY), (const uint8_t *)t, strlen(t), mac, &mlen);
    strcat(t, ".");
    b64url(mac, 32, t + strlen(t));
    assert_int_equal(verify(t), JWT_EFORMAT);
}

/* ---- claims ---- */

static void test_claims(void **state)
{
    (void)state;
    assert_int_equal(check(HS256, "{\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"\",\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":42,\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":null,\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"u\":7,\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"p\":[\"r\"],\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"p\":\"r\",\"p\":\"rwa\",\"exp\":1800000000}"),
                     JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"sub\":\"e\",\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000,\"exp\":1}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":\"1800000000\"}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":true}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":null}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000,\"nbf\":\"x\"}"), JWT_ECLAIMS);
    /* Claim names are case-sensitive. */
    assert_int_equal(check(HS256, "{\"SUB\":\"d\",\"exp\":1800000000}"), JWT_ECLAIMS);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"EXP\":1800000000}"), JWT_ECLAIMS);
}

static void test_expiry(void **state)
{
    (void)state;
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1700000000}"), JWT_EEXPIRED);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1699999999}"), JWT_EEXPIRED);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":0}"), JWT_EEXPIRED);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":-1e300}"), JWT_EEXPIRED);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1700000001}"), JWT_OK);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1e300}"), JWT_OK);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000,\"nbf\":1700000001}"),
                     JWT_EEXPIRED);
    assert_int_equal(check(HS256, "{\"sub\":\"d\",\"exp\":1800000000,\"nbf\":1700000000}"), JWT_OK);
}

/* ---- base64 decoders and keys ---- */

static void test_base64_std(void **state)
{
    (void)state;
    uint8_t out[64];
    assert_int_equal(jwt_base64_decode("", 0, out), 0);
    assert_int_equal(jwt_base64_decode("YQ==", 4, out), 1);
    assert_int_equal(out[0], 'a');
    assert_int_equal(jwt_base64_decode("YWI=", 4, out), 2);
    assert_int_equal(jwt_base64_decode("YWJj", 4, out), 3);
    assert_memory_equal(out, "abc", 3);
    assert_int_equal(jwt_base64_decode("+/+/", 4, out), 3);
    assert_int_equal(jwt_base64_decode("YQ=", 3, out), -1);  /* short padding */
    assert_int_equal(jwt_base64_decode("YQ", 2, out), -1);   /* missing padding */
    assert_int_equal(jwt_base64_decode("YR==", 4, out), -1); /* non-zero spare bits */
    assert_int_equal(jwt_base64_decode("Y===", 4, out), -1);
    assert_int_equal(jwt_base64_decode("====", 4, out), -1);
    assert_int_equal(jwt_base64_decode("Y=Q=", 4, out), -1);
    assert_int_equal(jwt_base64_decode("YQ==YQ==", 8, out), -1);
    assert_int_equal(jwt_base64_decode("-_-_", 4, out), -1); /* url alphabet */
    assert_int_equal(jwt_base64_decode("YW J", 4, out), -1);
}

static void test_base64url(void **state)
{
    (void)state;
    uint8_t out[64];
    assert_int_equal(jwt_base64url_decode("YQ", 2, out), 1);
    assert_int_equal(jwt_base64url_decode("-_-_", 4, out), 3);
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(jwt_base64url_decode("YQ==", 4, out), -1);
    assert_int_equal(jwt_base64url_decode("+/+/", 4, out), -1);
    assert_int_equal(jwt_base64url_decode("Y", 1, out), -1);
    assert_int_equal(jwt_base64url_decode("YR", 2, out), -1);
}

static void test_key_decode(void **state)
{
    (void)state;
    uint8_t *key;
    size_t len;
    assert_int_equal(jwt_key_decode("plain text key", 0, &key, &len), 0);
    assert_int_equal(len, 14);
    assert_memory_equal(key, "plain text key", 14);
    free(key);
    assert_int_equal(jwt_key_decode("c2VjcmV0", 1, &key, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(key, "secret", 6);
    free(key);
    assert_int_equal(jwt_key_decode("not base64!", 1, &key, &len), -1);
    assert_int_equal(jwt_key_decode("c2VjcmV0=", 1, &key, &len), -1);
    assert_int_equal(jwt_key_decode("", 1, &key, &len), 0);
    assert_int_equal(len, 0);
    free(key);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = JWT_ENOMEM; e <= JWT_OK; e++) assert_non_null(jwt_strerror(e));
    assert_string_equal(jwt_strerror(12345), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_valid_minimal_claims),
        cmocka_unit_test(test_permissions_filtered),
        cmocka_unit_test(test_utf8_sub_and_extra_claims),
        cmocka_unit_test(test_base64_key),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_other_algs),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_signature_shapes),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_bad_base64_header),
        cmocka_unit_test(test_padded_segments),
        cmocka_unit_test(test_bad_json),
        cmocka_unit_test(test_payload_with_nul),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_base64_std),
        cmocka_unit_test(test_base64url),
        cmocka_unit_test(test_key_decode),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
