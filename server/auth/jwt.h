/* jwt: verification of the HS256 JSON Web Tokens a client may send instead of a document id
 * (docs/protocol.md, Access control). Verification only: this server never issues tokens. Accepted:
 * exactly three base64url segments (RFC 7515 compact form, no padding, no stray characters,
 * canonical trailing bits); a header that is a JSON object whose "alg" is exactly "HS256" and that
 * has no "crit"; an HMAC-SHA256 signature over "header.payload" under the key, compared in constant
 * time; a payload that is a JSON object with a string "sub" (document id), an optional string "u"
 * (user id), an optional string "p" (permissions), a numeric "exp" later than now and, if present,
 * a numeric "nbf" not later than now. A claim that appears twice is refused (two JSON parsers could
 * read such a token differently). Everything else is refused. Thread-safe: no shared state. */
#ifndef ZW_JWT_H
#define ZW_JWT_H

#include <stddef.h>
#include <stdint.h>

/* Results of jwt_verify; jwt_strerror() names them (for logs: never log the token). */
enum {
    JWT_OK = 0,
    JWT_EFORMAT = -1,    /* not three base64url segments, or a segment is not JSON */
    JWT_EALG = -2,       /* header alg is not HS256 (none, RS256, ...) or has crit */
    JWT_ESIGNATURE = -3, /* signature does not match under the key */
    JWT_ECLAIMS = -4,    /* sub/u/p/exp/nbf missing, of the wrong type or repeated */
    JWT_EEXPIRED = -5,   /* exp <= now, or nbf > now */
    JWT_ENOMEM = -6,
};

const char *jwt_strerror(int err);

/* The claims of a verified token. Strings are malloc'd and NUL-terminated. */
struct jwt_claims {
    char *sub; /* document id */
    size_t sub_len;
    char *user;          /* "u"; "" when absent */
    char permissions[8]; /* the letters r, w, a found in "p", each once, in that order */
    int64_t exp;
};

/* Verifies `token` (len bytes, need not be NUL-terminated) under `key` at time `now`
 * (Unix seconds). Returns JWT_OK and fills *out (release with jwt_claims_clear), or
 * one of the negative JWT_E* codes with *out zeroed. */
int jwt_verify(const char *token, size_t len, const uint8_t *key, size_t key_len, int64_t now,
               struct jwt_claims *out);

void jwt_claims_clear(struct jwt_claims *c);

/* Turns the JWTKey setting into key bytes: the text itself, or its standard base64
 * decoding (padding required, as Go's StdEncoding) when `is_base64`. On success returns
 * 0 with *key malloc'd (free() it) and *key_len set; -1 when the base64 is invalid or
 * memory ran out. */
int jwt_key_decode(const char *text, int is_base64, uint8_t **key, size_t *key_len);

/* Strict decoders, shared with the management API's Basic auth parser. Both return the
 * decoded length, or -1 on any invalid input (bad character, wrong length, misplaced
 * or missing padding, non-zero trailing bits). `out` must hold 3 * (len / 4) + 3 bytes.
 * base64url takes no padding; standard base64 requires it. */
long jwt_base64url_decode(const char *in, size_t len, uint8_t *out);
long jwt_base64_decode(const char *in, size_t len, uint8_t *out);

#endif
