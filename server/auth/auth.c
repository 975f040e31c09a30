/* auth: owns document id resolution (plain id, registered token, JWT) and the
 * permission rules that apply when a client opens a document. */
#include "auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "app.h"
#include "config.h"
#include "jwt.h"
#include "log.h"
#include "store.h"

/* Takes ownership of nothing; copies everything into *out. Returns 0 or -2. */
static int fill(struct auth_result *out, enum auth_kind kind, const char *doc, size_t doc_len,
                const char *user, const char *perms)
{
    out->kind = kind;
    out->doc_id = malloc(doc_len + 1);
    out->user_id = strdup(user ? user : "");
    if (!out->doc_id || !out->user_id) {
        auth_result_clear(out);
        return -2;
    }
    if (doc_len) memcpy(out->doc_id, doc, doc_len);
    out->doc_id[doc_len] = 0;
    out->doc_id_len = doc_len;
    snprintf(out->permissions, sizeof out->permissions, "%s", perms ? perms : "");
    return 0;
}

static int resolve_jwt(const struct config *cfg, const uint8_t *id, size_t id_len, int64_t now,
                       struct auth_result *out)
{
    uint8_t *key = NULL;
    size_t key_len = 0;
    /* Decoded per call: a few bytes, and no state to share between threads. */
    if (jwt_key_decode(cfg->jwt_key, cfg->jwt_key_is_base64, &key, &key_len) != 0) {
        log_error("auth: JWTKey is not valid base64; refusing every JWT");
        return -1;
    }
    struct jwt_claims c;
    int rc = jwt_verify((const char *)id, id_len, key, key_len, now, &c);
    OPENSSL_cleanse(key, key_len); /* the key should not linger in freed heap memory */
    free(key);
    if (rc == JWT_ENOMEM) return -2;
    if (rc != JWT_OK) {
        log_info("auth: JWT refused: %s", jwt_strerror(rc));
        return -1;
    }
    rc = fill(out, AUTH_JWT, c.sub, c.sub_len, c.user, c.permissions);
    jwt_claims_clear(&c);
    return rc;
}

int auth_resolve(const struct app *app, const uint8_t *id, size_t id_len, struct auth_result *out)
{
    memset(out, 0, sizeof *out);
    const struct config *cfg = app->cfg;
    int64_t now = (int64_t)time(NULL);

    struct store_token tok;
    memset(&tok, 0, sizeof tok);
    int src = store_token_get(app->store, (const char *)id, id_len, &tok);
    /* An id the store cannot even hold as a token (empty, too long) is no token. */
    if (src == STORE_EINVAL) src = STORE_ENOTFOUND;
    if (src == STORE_OK && tok.expires <= now) {
        /* A backend may sweep lazily; an expired token is as good as none. */
        store_token_clear(&tok);
        src = STORE_ENOTFOUND;
    }
    int rc;
    if (src == STORE_OK) {
        rc = fill(out, AUTH_TOKEN, tok.doc_id, tok.doc_id_len, tok.user_id, tok.permissions);
        store_token_clear(&tok);
    } else if (src != STORE_ENOTFOUND) {
        log_error("auth: token lookup failed: %s", store_strerror(src));
        return -2;
    } else if (cfg && cfg->jwt_key && cfg->jwt_key[0]) {
        rc = resolve_jwt(cfg, id, id_len, now, out);
    } else {
        return fill(out, AUTH_PLAIN, (const char *)id, id_len, "", "rw");
    }
    if (rc != 0) return rc;
    if (!auth_can(out, 'r')) {
        log_info("auth: %s without read permission refused",
                 out->kind == AUTH_JWT ? "JWT" : "token");
        auth_result_clear(out);
        return -1;
    }
    return 0;
}

void auth_result_clear(struct auth_result *r)
{
    free(r->doc_id);
    free(r->user_id);
    r->doc_id = r->user_id = NULL;
    r->doc_id_len = 0;
    r->permissions[0] = 0;
}

int auth_check_config(const struct config *cfg, char *err, size_t err_len)
{
    if (!cfg->jwt_key || !cfg->jwt_key[0] || !cfg->jwt_key_is_base64) return 0;
    uint8_t *key = NULL;
    size_t key_len = 0;
    if (jwt_key_decode(cfg->jwt_key, 1, &key, &key_len) != 0) {
        snprintf(err, err_len, "JWTKey: not valid base64 (JWTKeyIsBase64 is true)");
        return -1;
    }
    OPENSSL_cleanse(key, key_len);
    free(key);
    return 0;
}
