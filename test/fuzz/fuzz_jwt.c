/* fuzz_jwt: libFuzzer target for server/auth/jwt.c — jwt_verify on arbitrary tokens (under
 * a fixed key, at a fixed time), the two strict base64 decoders and jwt_key_decode.
 * A token the fuzzer cannot sign (it does not know the key... unless it finds it in
 * the seed corpus, which holds valid tokens) must be refused; an accepted one must
 * have sane claims. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static const uint8_t KEY[] = "fuzz-secret";
#define NOW 1700000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jwt_claims c;
    int rc = jwt_verify((const char *)data, size, KEY, sizeof KEY - 1, NOW, &c);
    if (rc == JWT_OK) {
        CHECK(c.sub && strlen(c.sub) == c.sub_len);
        CHECK(c.user);
        CHECK(c.exp > NOW);
        CHECK(memchr(c.permissions, 0, sizeof c.permissions));
        for (const char *p = c.permissions; *p; p++) CHECK(*p == 'r' || *p == 'w' || *p == 'a');
        jwt_claims_clear(&c);
    } else {
        CHECK(rc < 0 && jwt_strerror(rc) != NULL);
        CHECK(c.sub == NULL && c.user == NULL);
    }

    uint8_t *out = malloc(3 * (size / 4) + 3);
    CHECK(out);
    long n = jwt_base64url_decode((const char *)data, size, out);
    CHECK(n >= -1 && n <= (long)(3 * (size / 4) + 3));
    n = jwt_base64_decode((const char *)data, size, out);
    CHECK(n >= -1 && n <= (long)(3 * (size / 4) + 3));
    free(out);

    char *text = malloc(size + 1);
    CHECK(text);
    memcpy(text, data, size);
    text[size] = 0;
    uint8_t *key = NULL;
    size_t key_len = 0;
    if (jwt_key_decode(text, size && data[0] & 1, &key, &key_len) == 0) free(key);
    free(text);
    return 0;
}
