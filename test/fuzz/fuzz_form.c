/* fuzz_form: libFuzzer target for what the management API does with untrusted text
 * outside a live connection: the RFC 1123 date parser (mgmt_parse_rfc1123, the
 * addToken expiration), form fields looked up in a query string or url-encoded body
 * the way mgmt_api.c's form_add_query does (CivetWeb's mg_get_var into a buffer of
 * the query's length + 1), and the Basic credentials decoding (jwt_base64_decode with
 * the same bound and buffer as mgmt_api.c's authorized()).
 *
 * Not reachable here: the multipart/form-data parser (CivetWeb's
 * mg_handle_form_request needs a connection); it is exercised by the integration
 * tests instead. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "civetweb.h"
#include "jwt.h"
#include "hub.h"
#include "mgmt_api.h"
#include "rfc1123.h"

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) abort();                                                                         \
    } while (0)

static const char *const fields[] = {
    "method", "documentID", "contents", "token", "userID", "expiration", "permissions",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    CHECK(s);
    memcpy(s, data, size);
    s[size] = 0;
    size_t len = strlen(s); /* as C strings arrive from CivetWeb */

    int64_t t;
    if (rfc1123_parse(s, &t) == 0) /* years 0000-9999 as Go, give or take a zone offset */
        CHECK(t >= -62167219200LL - 86400 && t <= 253402300799LL + 86400);

    char *buf = malloc(len + 1);
    CHECK(buf);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int n = mg_get_var(s, len, fields[i], buf, len + 1);
        CHECK(n >= -2 && n <= (int)len);
        if (n >= 0) CHECK(buf[n] == 0);
    }
    free(buf);

    if (len <= 4096) {
        uint8_t dec[3 * (4096 / 4) + 4];
        long d = jwt_base64_decode(s, len, dec);
        CHECK(d >= -1 && d <= (long)(3 * (len / 4) + 3));
    }
    free(s);
    return 0;
}

/* mgmt_api.c's calls into the hub; never reached from the functions fuzzed here. */
int hub_close_document(struct hub *h, const char *id, size_t id_len, uint16_t code,
                       const char *text);
int hub_update_user(struct hub *h, const char *user, size_t user_len, const char *perms);
int hub_close_document(struct hub *h, const char *id, size_t id_len, uint16_t code,
                       const char *text)
{
    (void)h, (void)id, (void)id_len, (void)code, (void)text;
    abort();
}
int hub_update_user(struct hub *h, const char *user, size_t user_len, const char *perms)
{
    (void)h, (void)user, (void)user_len, (void)perms;
    abort();
}
