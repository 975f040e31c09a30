/* mgmt_api: owns the management API: credentials, form parsing into memory, and the
 * six methods of docs/protocol.md, Management API. */
#include "mgmt_api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "app.h"
#include "config.h"
#include "hub.h"
#include "jwt.h"
#include "log.h"
#include "respond.h"
#include "rfc1123.h"
#include "store.h"

/* ---- responses ---- */

/* Sent with every 401, so that a browser asks for the credentials. */
static const char *const ask_credentials[] = { "WWW-Authenticate", "Basic realm=\"Zwibbler\"",
                                               NULL };

static int respond_text(struct mg_connection *conn, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int respond_text(struct mg_connection *conn, int status, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof text) n = sizeof text - 1;
    return http_respond_with(conn, status, "text/plain; charset=utf-8", text, (size_t)n,
                             status == 401 ? ask_credentials : NULL);
}

/* Maps a storage failure to a status: the caller's fault, try later, or ours. */
static int respond_store_error(struct mg_connection *conn, const char *what, int err)
{
    log_error("mgmt: %s: %s", what, store_strerror(err));
    if (err == STORE_EINVAL) return respond_text(conn, 400, "Invalid argument");
    if (err == STORE_EUNAVAILABLE) return respond_text(conn, 503, "Storage unavailable");
    return respond_text(conn, 500, "Storage error");
}

/* ---- credentials ---- */

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL)) memset(out, 0, 32);
}

/* Constant time in the contents and lengths of both strings: each side is hashed to
 * a fixed size first, and both comparisons always run. */
static int secret_equal(const char *given, size_t given_len, const char *expected)
{
    unsigned char a[32], b[32];
    sha256(given, given_len, a);
    sha256(expected ? expected : "", expected ? strlen(expected) : 0, b);
    return CRYPTO_memcmp(a, b, 32) == 0;
}

/* 1 when the request carries Basic credentials equal to the configured ones. */
static int authorized(struct mg_connection *conn, const struct config *cfg)
{
    const char *user = cfg->secret_user ? cfg->secret_user : "";
    const char *pass = cfg->secret_password ? cfg->secret_password : "";
    if (!*user && !*pass) return 0; /* API disabled */
    const char *h = mg_get_header(conn, "Authorization");
    if (!h || strncasecmp(h, "Basic ", 6) != 0) return 0;
    h += 6;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t')) n--;
    if (n > 4096) return 0;
    uint8_t dec[3 * (4096 / 4) + 4];
    long d = jwt_base64_decode(h, n, dec);
    if (d < 0) return 0;
    const uint8_t *colon = memchr(dec, ':', (size_t)d);
    if (!colon) return 0;
    size_t ulen = (size_t)(colon - dec);
    int ok_user = secret_equal((const char *)dec, ulen, user);
    int ok_pass = secret_equal((const char *)colon + 1, (size_t)d - ulen - 1, pass);
    OPENSSL_cleanse(dec, sizeof dec);
    return ok_user & ok_pass;
}

/* ---- form fields ---- */

enum {
    F_METHOD,
    F_DOCUMENT_ID,
    F_CONTENTS,
    F_TOKEN,
    F_USER_ID,
    F_EXPIRATION,
    F_PERMISSIONS,
    F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "method", "documentID", "contents", "token", "userID", "expiration", "permissions",
};

struct field {
    char *data; /* NUL-terminated for convenience; may hold NULs (use len) */
    size_t len, cap;
    int present, is_file;
};

struct form {
    struct field f[F_COUNT];
    int current; /* field receiving chunks, -1 when skipping */
    size_t total, limit;
    int too_big, no_mem;
};

static int field_index(const char *name)
{
    for (int i = 0; i < F_COUNT; i++)
        if (strcmp(name, field_names[i]) == 0) return i;
    return -1;
}

static int on_field_found(const char *key, const char *filename, char *path, size_t pathlen,
                          void *arg)
{
    (void)path;
    (void)pathlen;
    struct form *fm = arg;
    int i = field_index(key);
    /* Unknown fields are skipped; for a repeated field the first value wins, as with
     * Go's FormValue in the reference server. After an error, everything is skipped. */
    if (i < 0 || fm->f[i].present || fm->too_big || fm->no_mem) {
        fm->current = -1;
        return MG_FORM_FIELD_STORAGE_SKIP;
    }
    fm->f[i].present = 1;
    fm->f[i].is_file = filename && *filename;
    fm->current = i;
    return MG_FORM_FIELD_STORAGE_GET; /* in memory, never a file on disk */
}

/* Called once per chunk; later chunks of the same field come with an empty key, so
 * the field is the one field_found chose.
 *
 * Errors return HANDLE_NEXT, never HANDLE_ABORT: CivetWeb 1.15's url-encoded parser
 * dereferences a NULL pointer when a value that spans several reads is aborted. The
 * rest of the body is then read and skipped without being stored. */
static int on_field_get(const char *key, const char *value, size_t len, void *arg)
{
    (void)key;
    struct form *fm = arg;
    if (fm->current < 0 || fm->too_big || fm->no_mem) return MG_FORM_FIELD_HANDLE_NEXT;
    fm->total += len;
    if (fm->total > fm->limit) {
        fm->too_big = 1;
        return MG_FORM_FIELD_HANDLE_NEXT;
    }
    struct field *f = &fm->f[fm->current];
    if (f->len + len + 1 > f->cap) {
        size_t cap = f->cap ? f->cap : 256;
        while (cap < f->len + len + 1) cap *= 2;
        char *p = realloc(f->data, cap);
        if (!p) {
            fm->no_mem = 1;
            return MG_FORM_FIELD_HANDLE_NEXT;
        }
        f->data = p;
        f->cap = cap;
    }
    memcpy(f->data + f->len, value, len);
    f->len += len;
    f->data[f->len] = 0;
    return MG_FORM_FIELD_HANDLE_GET;
}

static void form_free(struct form *fm)
{
    for (int i = 0; i < F_COUNT; i++) free(fm->f[i].data);
}

/* Fields the body did not have are taken from the query string (Go's FormValue
 * merges both, body first). */
static void form_add_query(struct form *fm, const char *qs)
{
    if (!qs || !*qs) return;
    size_t qlen = strlen(qs);
    for (int i = 0; i < F_COUNT; i++) {
        struct field *f = &fm->f[i];
        if (f->present) continue;
        char *buf = malloc(qlen + 1); /* a decoded value is never longer than the query */
        if (!buf) return;
        int n = mg_get_var(qs, qlen, field_names[i], buf, qlen + 1);
        if (n < 0) {
            free(buf);
            continue;
        }
        f->data = buf;
        f->len = f->cap = (size_t)n;
        f->present = 1;
    }
}

/* A present, non-empty text value (empty counts as missing, as in the reference). */
static const struct field *get(const struct form *fm, int i)
{
    const struct field *f = &fm->f[i];
    return (f->present && f->len > 0) ? f : NULL;
}

/* Reads the body into *fm. Returns 0, or the status of the error response sent. */
static int read_form(struct mg_connection *conn, const struct app *app, struct form *fm)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    memset(fm, 0, sizeof *fm);
    fm->current = -1;
    fm->limit = app->cfg->max_api_body_bytes ? app->cfg->max_api_body_bytes : 64u << 20;
    if (ri->content_length > 0 && (unsigned long long)ri->content_length > fm->limit)
        return respond_text(conn, 413, "Request body too large");

    const char *te = mg_get_header(conn, "Transfer-Encoding");
    int has_body = ri->content_length > 0 || (te && strcasecmp(te, "identity") != 0);
    if (has_body) {
        struct mg_form_data_handler h = {
            .field_found = on_field_found,
            .field_get = on_field_get,
            .field_store = NULL,
            .user_data = fm,
        };
        int rc = mg_handle_form_request(conn, &h);
        if (fm->too_big) return respond_text(conn, 413, "Request body too large");
        if (fm->no_mem) return respond_text(conn, 500, "Out of memory");
        if (rc < 0) return respond_text(conn, 400, "Malformed form data");
    }
    form_add_query(fm, ri->query_string);
    return 0;
}

/* ---- methods ---- */

#define REQUIRE(var, idx)                                                                          \
    const struct field *var = get(fm, idx);                                                        \
    if (!var) return respond_text(conn, 400, "Missing %s", field_names[idx])

static void keep_permissions(const struct field *p, char out[8])
{
    int n = 0;
    for (const char *want = "rwa"; *want; want++)
        if (p && memchr(p->data, *want, p->len)) out[n++] = *want;
    out[n] = 0;
}

static int create_document(struct mg_connection *conn, const struct app *app, const struct form *fm)
{
    REQUIRE(doc, F_DOCUMENT_ID);
    /* A text field must be non-empty; an uploaded file may be empty (as reference). */
    const struct field *c = &fm->f[F_CONTENTS];
    if (!c->present || (!c->is_file && c->len == 0))
        return respond_text(conn, 400, "Missing contents");
    int rc = store_doc_create(app->store, doc->data, doc->len, (const uint8_t *)c->data, c->len);
    if (rc == STORE_EEXISTS) return respond_text(conn, 409, "Document already exists");
    if (rc != STORE_OK) return respond_store_error(conn, "createDocument", rc);
    return respond_text(conn, 200, "OK");
}

static int delete_document(struct mg_connection *conn, const struct app *app, const struct form *fm)
{
    REQUIRE(doc, F_DOCUMENT_ID);
    /* Clients first, so none of them can append between the delete and its close. */
    if (app->hub) hub_close_document(app->hub, doc->data, doc->len, 1, "does not exist");
    int rc = store_doc_delete(app->store, doc->data, doc->len);
    if (rc != STORE_OK && rc != STORE_ENOTFOUND)
        return respond_store_error(conn, "deleteDocument", rc);
    return respond_text(conn, 200, "OK");
}

static int dump_document(struct mg_connection *conn, const struct app *app, const struct form *fm,
                         int with_body)
{
    REQUIRE(doc, F_DOCUMENT_ID);
    if (!with_body) {
        uint64_t len = 0;
        int rc = store_doc_length(app->store, doc->data, doc->len, &len);
        if (rc == STORE_ENOTFOUND) return respond_text(conn, 404, "Not found");
        if (rc != STORE_OK) return respond_store_error(conn, "checkDocument", rc);
        return respond_text(conn, 200, "OK");
    }
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = store_doc_read(app->store, doc->data, doc->len, 0, &data, &len, NULL);
    if (rc == STORE_ENOTFOUND) return respond_text(conn, 404, "Not found");
    if (rc != STORE_OK) return respond_store_error(conn, "dumpDocument", rc);
    int status = http_respond(conn, 200, "text/plain", data, len);
    free(data);
    return status;
}

static int add_token(struct mg_connection *conn, const struct app *app, const struct form *fm)
{
    REQUIRE(doc, F_DOCUMENT_ID);
    REQUIRE(token, F_TOKEN);
    REQUIRE(user, F_USER_ID);
    REQUIRE(exp, F_EXPIRATION);
    int64_t expires;
    if (memchr(exp->data, 0, exp->len) || rfc1123_parse(exp->data, &expires) != 0)
        return respond_text(conn, 400, "Incorrect expires format");
    if (memchr(user->data, 0, user->len)) return respond_text(conn, 400, "Invalid userID");

    struct store_token t;
    memset(&t, 0, sizeof t);
    int rc = store_token_get(app->store, token->data, token->len, &t);
    if (rc == STORE_OK) {
        store_token_clear(&t);
        return respond_text(conn, 409, "Token already exists");
    }
    if (rc != STORE_ENOTFOUND) return respond_store_error(conn, "addToken", rc);

    const struct field *contents = get(fm, F_CONTENTS);
    if (contents) {
        rc = store_doc_create(app->store, doc->data, doc->len, (const uint8_t *)contents->data,
                              contents->len);
        if (rc == STORE_EEXISTS) return respond_text(conn, 409, "Document already exists");
        if (rc != STORE_OK) return respond_store_error(conn, "addToken", rc);
    }
    t.doc_id = doc->data;
    t.doc_id_len = doc->len;
    t.user_id = user->data;
    keep_permissions(get(fm, F_PERMISSIONS), t.permissions);
    t.expires = expires;
    rc = store_token_add(app->store, token->data, token->len, &t);
    if (rc == STORE_EEXISTS) return respond_text(conn, 409, "Token already exists");
    if (rc != STORE_OK) return respond_store_error(conn, "addToken", rc);
    return respond_text(conn, 200, "OK");
}

static int update_user(struct mg_connection *conn, const struct app *app, const struct form *fm)
{
    REQUIRE(user, F_USER_ID);
    char perms[8];
    /* Missing or empty permissions revoke everything, as in the reference. */
    keep_permissions(get(fm, F_PERMISSIONS), perms);
    int rc = store_user_update(app->store, user->data, user->len, perms);
    if (rc != STORE_OK) return respond_store_error(conn, "updateUser", rc);
    if (app->hub) hub_update_user(app->hub, user->data, user->len, perms);
    return respond_text(conn, 200, "OK");
}

int mgmt_api_handle(struct mg_connection *conn, const struct app *app)
{
    if (!authorized(conn, app->cfg)) {
        log_info("mgmt: request refused: bad or missing credentials");
        return respond_text(conn, 401, "Unauthorized");
    }
    struct form fm;
    int status = read_form(conn, app, &fm);
    if (status) goto done;

    const struct field *m = get(&fm, F_METHOD);
    const char *method = m && !memchr(m->data, 0, m->len) ? m->data : "";
    if (strcmp(method, "createDocument") == 0)
        status = create_document(conn, app, &fm);
    else if (strcmp(method, "deleteDocument") == 0)
        status = delete_document(conn, app, &fm);
    else if (strcmp(method, "dumpDocument") == 0)
        status = dump_document(conn, app, &fm, 1);
    else if (strcmp(method, "checkDocument") == 0)
        status = dump_document(conn, app, &fm, 0);
    else if (strcmp(method, "addToken") == 0)
        status = add_token(conn, app, &fm);
    else if (strcmp(method, "updateUser") == 0)
        status = update_user(conn, app, &fm);
    else {
        status = respond_text(conn, 400, "Unknown 'method' parameter");
        method = "(unknown)";
    }
    log_info("mgmt: %s -> %d", method, status);
done:
    form_free(&fm);
    return status;
}
