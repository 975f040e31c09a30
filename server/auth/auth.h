/* auth: turns the id a client sends in INIT into a document id, user and permissions
 * (docs/protocol.md, Access control): a plain id, a token registered through the management API, or
 * a JWT when JWTKey is configured. Order of resolution: a registered, unexpired token always wins;
 * otherwise, with a JWT key configured, the id must be a valid JWT (plain ids are refused);
 * otherwise the id is the document id itself, with read and write permission. Thread-safe: no
 * shared state beyond the store, which is thread-safe. */
#ifndef ZW_AUTH_H
#define ZW_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct app;
struct config;

enum auth_kind { AUTH_PLAIN, AUTH_TOKEN, AUTH_JWT };

struct auth_result {
    char *doc_id; /* malloc'd, NUL-terminated (may hold other NULs; use doc_id_len) */
    size_t doc_id_len;
    char *user_id;       /* malloc'd, NUL-terminated; "" for plain ids */
    char permissions[8]; /* letters of "rwa" */
    enum auth_kind kind; /* how the id was resolved (for logs) */
};

/* Resolves `id`. Returns 0 and fills *out (free with auth_result_clear), or -1 when
 * access is denied (the caller sends ERROR 4 `access denied` and closes), or -2 when
 * the store failed (ERROR 0 with a storage message). A token or JWT whose permissions
 * lack 'r' is refused here with -1, so a successful result always may read. The
 * reason for a refusal is logged without the token itself. */
int auth_resolve(const struct app *app, const uint8_t *id, size_t id_len, struct auth_result *out);
void auth_result_clear(struct auth_result *r);

static inline int auth_can(const struct auth_result *r, char perm)
{
    for (const char *p = r->permissions; *p; p++)
        if (*p == perm) return 1;
    return 0;
}

/* Checks the auth settings at start-up (a JWTKeyIsBase64 key that is not valid
 * base64), so that a bad key is a start-up error rather than every JWT refused.
 * Returns 0, or -1 with a message naming the key in err. */
int auth_check_config(const struct config *cfg, char *err, size_t err_len);

#endif
