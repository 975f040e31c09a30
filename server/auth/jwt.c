/* jwt: owns HS256 token verification and the strict base64 decoders it needs. */
#include "jwt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

const char *jwt_strerror(int err)
{
    switch (err) {
    case JWT_OK: return "ok";
    case JWT_EFORMAT: return "malformed token";
    case JWT_EALG: return "algorithm not accepted";
    case JWT_ESIGNATURE: return "bad signature";
    case JWT_ECLAIMS: return "bad claims";
    case JWT_EEXPIRED: return "expired or not yet valid";
    case JWT_ENOMEM: return "out of memory";
    default: return "unknown error";
    }
}

/* ---- base64 ---- */

/* Value of c in the alphabet, or -1. The two alphabets differ only in 62 and 63. */
static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

/* Decodes `len` characters without padding. A final group of 1 character cannot
 * exist; the bits of a partial group that do not make a whole byte must be zero, so
 * every byte string has exactly one accepted encoding (no signature malleability). */
static long b64_decode_raw(const char *in, size_t len, uint8_t *out, int url)
{
    if (len % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i], url);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1; /* leftover bits must be zero */
    return (long)o;
}

long jwt_base64url_decode(const char *in, size_t len, uint8_t *out)
{
    return b64_decode_raw(in, len, out, 1);
}

long jwt_base64_decode(const char *in, size_t len, uint8_t *out)
{
    if (len % 4 != 0) return -1;
    size_t pad = 0;
    if (len >= 1 && in[len - 1] == '=') pad++;
    if (len >= 2 && in[len - 2] == '=') pad++;
    /* "x===" style over-padding leaves an '=' inside; b64_value refuses it. */
    return b64_decode_raw(in, len - pad, out, 0);
}

int jwt_key_decode(const char *text, int is_base64, uint8_t **key, size_t *key_len)
{
    size_t n = text ? strlen(text) : 0;
    /* +1 so that an empty key still gets a distinct, non-NULL buffer */
    uint8_t *buf = malloc(n + 4);
    if (!buf) return -1;
    if (!is_base64) {
        if (n) memcpy(buf, text, n);
        *key = buf;
        *key_len = n;
        return 0;
    }
    long d = jwt_base64_decode(text, n, buf);
    if (d < 0) {
        free(buf);
        return -1;
    }
    *key = buf;
    *key_len = (size_t)d;
    return 0;
}

/* ---- JSON helpers ---- */

/* Parses exactly `len` bytes as one JSON object. Embedded NULs are refused (cJSON
 * would silently stop at them). Returns NULL on any error. */
static cJSON *parse_object(const uint8_t *buf, size_t len)
{
    if (memchr(buf, 0, len)) return NULL;
    char *text = malloc(len + 1);
    if (!text) return NULL;
    memcpy(text, buf, len);
    text[len] = 0;
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    free(text);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* The member `name` when it appears exactly once; *dup is set when it appears more. */
static const cJSON *member(const cJSON *obj, const char *name, int *dup)
{
    const cJSON *found = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (c->string && strcmp(c->string, name) == 0) {
            if (found) *dup = 1;
            found = c;
        }
    }
    return found;
}

/* ---- verification ---- */

static int check_header(const uint8_t *buf, size_t len)
{
    cJSON *h = parse_object(buf, len);
    if (!h) return JWT_EFORMAT;
    int dup = 0;
    const cJSON *alg = member(h, "alg", &dup);
    const cJSON *crit = member(h, "crit", &dup);
    int rc = JWT_OK;
    /* Exactly "HS256": "none", "hs256", "HS512", RS256 ... all refused, so a token
     * can never choose a weaker check than the one the key was configured for. */
    if (dup || crit || !cJSON_IsString(alg) || strcmp(alg->valuestring, "HS256") != 0)
        rc = JWT_EALG;
    cJSON_Delete(h);
    return rc;
}

static void keep_permissions(const char *p, char out[8])
{
    int n = 0;
    for (const char *want = "rwa"; *want; want++)
        if (p && strchr(p, *want)) out[n++] = *want;
    out[n] = 0;
}

static int read_claims(const uint8_t *buf, size_t len, int64_t now, struct jwt_claims *out)
{
    cJSON *c = parse_object(buf, len);
    if (!c) return JWT_EFORMAT;
    int dup = 0, rc = JWT_ECLAIMS;
    const cJSON *sub = member(c, "sub", &dup);
    const cJSON *u = member(c, "u", &dup);
    const cJSON *p = member(c, "p", &dup);
    const cJSON *exp = member(c, "exp", &dup);
    const cJSON *nbf = member(c, "nbf", &dup);
    /* An empty sub would name the empty document id: never what a signer meant. */
    if (dup || !cJSON_IsString(sub) || !sub->valuestring[0] || (u && !cJSON_IsString(u)) ||
        (p && !cJSON_IsString(p)) || !cJSON_IsNumber(exp) || !isfinite(exp->valuedouble) ||
        (nbf && (!cJSON_IsNumber(nbf) || !isfinite(nbf->valuedouble))))
        goto done;
    /* Compared as doubles: an exp far in the future must not wrap when converted. */
    if (!(exp->valuedouble > (double)now) || (nbf && nbf->valuedouble > (double)now)) {
        rc = JWT_EEXPIRED;
        goto done;
    }
    rc = JWT_ENOMEM;
    out->sub_len = strlen(sub->valuestring);
    out->sub = strdup(sub->valuestring);
    out->user = strdup(u ? u->valuestring : "");
    if (!out->sub || !out->user) goto done;
    keep_permissions(p ? p->valuestring : "", out->permissions);
    out->exp = exp->valuedouble >= 9.2e18 ? INT64_MAX : (int64_t)exp->valuedouble;
    rc = JWT_OK;
done:
    cJSON_Delete(c);
    return rc;
}

int jwt_verify(const char *token, size_t len, const uint8_t *key, size_t key_len, int64_t now,
               struct jwt_claims *out)
{
    memset(out, 0, sizeof *out);
    const char *dot1 = token ? memchr(token, '.', len) : NULL;
    if (!dot1) return JWT_EFORMAT;
    const char *rest = dot1 + 1;
    const char *dot2 = memchr(rest, '.', len - (size_t)(rest - token));
    if (!dot2) return JWT_EFORMAT;
    const char *sig_txt = dot2 + 1;
    size_t h_len = (size_t)(dot1 - token), p_len = (size_t)(dot2 - rest);
    size_t s_len = len - (size_t)(sig_txt - token);
    /* An empty signature is let through to the header check, so that an unsigned
     * "alg":"none" token is reported as the algorithm it is. */
    if (memchr(sig_txt, '.', s_len) || h_len == 0 || p_len == 0) return JWT_EFORMAT;

    uint8_t *buf = malloc(h_len + p_len + 8);
    if (!buf) return JWT_ENOMEM;
    uint8_t sig[64];
    int rc = JWT_EFORMAT;
    long hd = jwt_base64url_decode(token, h_len, buf);
    if (hd < 0) goto done;
    rc = check_header(buf, (size_t)hd);
    if (rc != JWT_OK) goto done;

    /* The signature is checked before the payload is even decoded: nothing an
     * attacker writes into the claims is parsed unless it was signed with the key. */
    rc = JWT_ESIGNATURE;
    if (s_len != 43 || jwt_base64url_decode(sig_txt, s_len, sig) != 32) goto done;
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    static const uint8_t empty_key[1];
    if (!HMAC(EVP_sha256(), key_len ? key : empty_key, (int)key_len, (const unsigned char *)token,
              h_len + 1 + p_len, mac, &mac_len) ||
        mac_len != 32 || CRYPTO_memcmp(mac, sig, 32) != 0)
        goto done;

    rc = JWT_EFORMAT;
    long pd = jwt_base64url_decode(rest, p_len, buf);
    if (pd < 0) goto done;
    rc = read_claims(buf, (size_t)pd, now, out);
done:
    free(buf);
    if (rc != JWT_OK) jwt_claims_clear(out);
    return rc;
}

void jwt_claims_clear(struct jwt_claims *c)
{
    free(c->sub);
    free(c->user);
    memset(c, 0, sizeof *c);
}
