/* copy_store: the --copy-store command (see copy_store.h): parses the two store specs,
 * opens both stores, copies documents with their keys, then tokens, and reports. */
#include "copy_store.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config.h"
#include "store.h"

#define DEFAULT_EXPIRATION 86400 /* the server's Expiration default, for redis: targets */

static void usage(FILE *out)
{
    fprintf(out, "Usage: zwibbler --copy-store --from SPEC --to SPEC [--overwrite]\n"
                 "\n"
                 "Copies every document (bytes and session keys) and every live token.\n"
                 "SPEC is one of:\n"
                 "  lmdb:DIR        the LMDB store of DataDir=DIR (files in DIR/lmdb/)\n"
                 "  sqlite:FILE     a SQLite zwibbler.db (or the directory that holds it)\n"
                 "  redis:HOST[:PORT][,user=U][,password=P][,expiration=SECONDS|never]\n"
                 "  config:PATH     the store named by a configuration file\n"
                 "A document that exists in the target is refused unless --overwrite.\n"
                 "Stop the servers of both stores first. See zwibbler(8).\n");
}

/* ---- store specs ----------------------------------------------------------------- */

struct spec {
    char *backend, *data_dir, *server, *user, *password;
    int64_t expiration;
    char label[512]; /* for messages: the spec without its password */
};

static void spec_free(struct spec *s)
{
    free(s->backend);
    free(s->data_dir);
    free(s->server);
    free(s->user);
    free(s->password);
    memset(s, 0, sizeof *s);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* sqlite:FILE or sqlite:DIR -> the directory the backend opens zwibbler.db in. */
static int spec_sqlite(struct spec *s, const char *path, char *err, size_t err_len)
{
    if (is_dir(path)) {
        s->data_dir = strdup(path);
        return 0;
    }
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (strcmp(base, "zwibbler.db") != 0) {
        snprintf(err, err_len,
                 "sqlite:%s: the file must be named zwibbler.db (the name the server uses); "
                 "rename it or give its directory",
                 path);
        return -1;
    }
    s->data_dir = slash == path ? strdup("/")
                  : slash       ? strndup(path, (size_t)(slash - path))
                                : strdup(".");
    return 0;
}

/* redis:ADDRESS[,key=value...] */
static int spec_redis(struct spec *s, const char *rest, bool target, char *err, size_t err_len)
{
    char *copy = strdup(rest);
    if (!copy) return -1;
    s->expiration = target ? DEFAULT_EXPIRATION : 0;
    char *save = NULL;
    const char *v = "";
    char *tok = strtok_r(copy, ",", &save);
    s->server = strdup(tok ? tok : "");
    while ((tok = strtok_r(NULL, ",", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) goto bad;
        *eq = 0;
        v = eq + 1;
        if (!strcmp(tok, "password")) {
            free(s->password);
            s->password = strdup(v);
        } else if (!strcmp(tok, "user")) {
            free(s->user);
            s->user = strdup(v);
        } else if (!strcmp(tok, "expiration")) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (!strcasecmp(v, "never"))
                n = 0;
            else if (errno || !*v || *end || n < 1)
                goto bad_exp;
            if (target) s->expiration = n; /* a source's TTLs are never refreshed */
        } else {
            *eq = '=';
            goto bad;
        }
    }
    free(copy);
    return 0;
bad_exp:
    snprintf(err, err_len, "redis: expiration '%s' is not a number of seconds or 'never'", v);
    free(copy);
    return -1;
bad:
    snprintf(err, err_len, "redis: unknown option '%s' (user=, password=, expiration=)", tok);
    free(copy);
    return -1;
}

/* config:PATH: the store the server would open with that file. */
static int spec_config(struct spec *s, const char *path, bool target, char *err, size_t err_len)
{
    struct config cfg;
    config_defaults(&cfg);
    char why[512];
    if (config_load(&cfg, path, 1, why, sizeof why)) {
        snprintf(err, err_len, "config: %s", why);
        config_free(&cfg);
        return -1;
    }
    s->backend = strdup(cfg.database);
    s->data_dir = strdup(cfg.data_dir);
    s->server = cfg.db_server ? strdup(cfg.db_server) : NULL;
    s->user = cfg.db_user ? strdup(cfg.db_user) : NULL;
    s->password = cfg.db_password ? strdup(cfg.db_password) : NULL;
    s->expiration = target ? cfg.expiration : 0;
    config_free(&cfg);
    return 0;
}

/* Fills s from text. A source must exist already (opening an embedded store creates
 * it, and copying from an empty new one would report success). */
static int spec_parse(struct spec *s, const char *text, bool target, char *err, size_t err_len)
{
    memset(s, 0, sizeof *s);
    const char *colon = strchr(text, ':');
    if (!colon || colon == text) {
        snprintf(err, err_len,
                 "'%s' is not a store (lmdb:DIR, sqlite:FILE, redis:HOST:PORT or "
                 "config:PATH)",
                 text);
        return -1;
    }
    size_t klen = (size_t)(colon - text);
    const char *rest = colon + 1;
    int rc = 0;
    if (klen == 4 && !strncmp(text, "lmdb", 4)) {
        s->backend = strdup("lmdb");
        s->data_dir = strdup(rest);
    } else if (klen == 6 && !strncmp(text, "sqlite", 6)) {
        s->backend = strdup("sqlite");
        rc = spec_sqlite(s, rest, err, err_len);
    } else if (klen == 5 && !strncmp(text, "redis", 5)) {
        s->backend = strdup("redis");
        rc = spec_redis(s, rest, target, err, err_len);
    } else if (klen == 6 && !strncmp(text, "config", 6)) {
        rc = spec_config(s, rest, target, err, err_len);
    } else {
        snprintf(err, err_len, "unknown store kind '%.*s' (lmdb, sqlite, redis or config)",
                 (int)klen, text);
        return -1;
    }
    if (rc) return -1;
    if (!s->backend || (!s->data_dir && strcmp(s->backend, "redis"))) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    if (!strcmp(s->backend, "redis"))
        snprintf(s->label, sizeof s->label, "redis:%s",
                 s->server && *s->server ? s->server : "localhost:6379");
    else
        snprintf(s->label, sizeof s->label, "%s:%s", s->backend, s->data_dir);
    if (target) return 0;
    char path[4096];
    if (!strcmp(s->backend, "lmdb")) {
        snprintf(path, sizeof path, "%s/lmdb/data.mdb", s->data_dir);
        if (!is_file(path)) {
            snprintf(err, err_len, "%s: no LMDB store (no %.400s)", s->label, path);
            return -1;
        }
    } else if (!strcmp(s->backend, "sqlite")) {
        snprintf(path, sizeof path, "%s/zwibbler.db", s->data_dir);
        if (!is_file(path)) {
            snprintf(err, err_len, "%s: no SQLite store (no %.400s)", s->label, path);
            return -1;
        }
    }
    return 0;
}

static struct store *spec_open(const struct spec *s, bool target, char *err, size_t err_len)
{
    struct store_config sc = {
        .backend = s->backend,
        .data_dir = s->data_dir,
        .server = s->server,
        .user = s->user,
        .password = s->password,
        /* An LMDB target skips the fsync per commit and is synced once when closed:
         * the copy is one writer, and a crash mid-copy means running it again. */
        .nosync = target && !strcmp(s->backend, "lmdb"),
        .expiration = s->expiration,
    };
    return store_open(&sc, err, err_len);
}

/* ---- a set of ids, so an id listed twice (Redis SCAN) is copied once ------------- */

struct idset {
    struct idset_entry {
        char *id;
        size_t len;
        uint64_t hash;
    } * slots;
    size_t cap, count;
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

/* Returns 1 if added, 0 if it was there, -1 out of memory. */
static int idset_add(struct idset *s, const char *id, size_t len)
{
    if ((s->count + 1) * 2 > s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 1024;
        struct idset_entry *n = calloc(ncap, sizeof *n);
        if (!n) return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slots[i].id) continue;
            size_t j = s->slots[i].hash & (ncap - 1);
            while (n[j].id) j = (j + 1) & (ncap - 1);
            n[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = n;
        s->cap = ncap;
    }
    uint64_t h = fnv1a(id, len);
    size_t j = h & (s->cap - 1);
    for (; s->slots[j].id; j = (j + 1) & (s->cap - 1))
        if (s->slots[j].hash == h && s->slots[j].len == len && !memcmp(s->slots[j].id, id, len))
            return 0;
    char *c = malloc(len ? len : 1);
    if (!c) return -1;
    memcpy(c, id, len);
    s->slots[j] = (struct idset_entry){ c, len, h };
    s->count++;
    return 1;
}

static void idset_free(struct idset *s)
{
    for (size_t i = 0; i < s->cap; i++) free(s->slots[i].id);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

/* ---- copying --------------------------------------------------------------------- */

struct copy {
    struct store *from, *to;
    bool overwrite;
    struct idset seen;
    int rc; /* first error (a store code), which stops the copy */
    const char *what;
    uint64_t docs, bytes, keys, tokens, replaced;
    uint64_t refused_docs, refused_tokens, keys_kept, vanished;
    uint64_t unchanged, unchanged_tokens; /* already in the target, identical */
};

/* Prints an id as a quoted string, bytes outside printable ASCII as \xNN. */
static void print_id(FILE *f, const char *id, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (isprint(c))
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    fputc('"', f);
}

static int fail(struct copy *c, int rc, const char *what)
{
    c->rc = rc;
    c->what = what;
    return 1; /* stops the listing */
}

struct key_copy {
    struct copy *c;
    const char *id;
    size_t id_len;
};

static int copy_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                    size_t value_len, uint32_t version)
{
    struct key_copy *k = arg;
    int rc =
        store_key_set(k->c->to, k->id, k->id_len, name, name_len, value, value_len, 0, version);
    if (rc == STORE_OK) {
        k->c->keys++;
        return 0;
    }
    if (rc == STORE_EMISMATCH) {
        /* The target kept keys of this id without a document: its key stays. */
        printf("kept: key ");
        print_id(stdout, (const char *)name, name_len);
        printf(" of document ");
        print_id(stdout, k->id, k->id_len);
        printf(": the target already has a key of that name\n");
        k->c->keys_kept++;
        return 0;
    }
    return fail(k->c, rc, "setting a key in the target");
}

/* Whether the target's document holds exactly these bytes. */
static bool same_doc(struct store *to, const char *id, size_t id_len, const uint8_t *data,
                     size_t len)
{
    uint8_t *have = NULL;
    size_t have_len = 0;
    if (store_doc_read(to, id, id_len, 0, &have, &have_len, NULL) != STORE_OK) return false;
    bool same = have_len == len && (len == 0 || memcmp(have, data, len) == 0);
    free(have);
    return same;
}

static bool same_token(const struct store_token *a, const struct store_token *b)
{
    return a->doc_id_len == b->doc_id_len && !memcmp(a->doc_id, b->doc_id, a->doc_id_len) &&
           !strcmp(a->user_id ? a->user_id : "", b->user_id ? b->user_id : "") &&
           !strcmp(a->permissions, b->permissions) && a->expires == b->expires;
}

static int copy_doc(void *arg, const char *id, size_t id_len)
{
    struct copy *c = arg;
    int added = idset_add(&c->seen, id, id_len);
    if (added < 0) return fail(c, STORE_ENOMEM, "listing documents");
    if (added == 0) return 0;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = store_doc_read(c->from, id, id_len, 0, &data, &len, NULL);
    if (rc == STORE_ENOTFOUND) { /* deleted (or expired) since it was listed */
        c->vanished++;
        return 0;
    }
    if (rc != STORE_OK) return fail(c, rc, "reading a document from the source");
    rc = store_doc_create(c->to, id, id_len, data, len);
    if (rc == STORE_EEXISTS && same_doc(c->to, id, id_len, data, len)) {
        /* Already copied (a run that is repeated or resumed): nothing to do. */
        free(data);
        c->unchanged++;
        return 0;
    }
    if (rc == STORE_EEXISTS && c->overwrite) {
        rc = store_doc_delete(c->to, id, id_len);
        if (rc == STORE_OK || rc == STORE_ENOTFOUND)
            rc = store_doc_create(c->to, id, id_len, data, len);
        if (rc == STORE_OK) c->replaced++;
    }
    free(data);
    if (rc == STORE_EEXISTS) {
        printf("refused: document ");
        print_id(stdout, id, id_len);
        printf(" exists in the target (--overwrite replaces it)\n");
        c->refused_docs++;
        return 0;
    }
    if (rc != STORE_OK) return fail(c, rc, "creating a document in the target");
    c->docs++;
    c->bytes += len;
    struct key_copy k = { c, id, id_len };
    rc = store_keys_get(c->from, id, id_len, copy_key, &k);
    if (rc != STORE_OK && c->rc == STORE_OK) return fail(c, rc, "reading keys from the source");
    return c->rc != STORE_OK;
}

static int copy_token(void *arg, const char *token, size_t token_len, const struct store_token *t)
{
    struct copy *c = arg;
    int added = idset_add(&c->seen, token, token_len);
    if (added < 0) return fail(c, STORE_ENOMEM, "listing tokens");
    if (added == 0) return 0;
    int rc = store_token_add(c->to, token, token_len, t);
    if (rc == STORE_EEXISTS) {
        struct store_token have;
        bool same = false;
        if (store_token_get(c->to, token, token_len, &have) == STORE_OK) {
            same = same_token(&have, t);
            store_token_clear(&have);
        }
        if (same) {
            c->unchanged_tokens++;
            return 0;
        }
    }
    if (rc == STORE_EEXISTS) {
        printf("refused: token ");
        print_id(stdout, token, token_len);
        printf(" exists in the target\n");
        c->refused_tokens++;
        return 0;
    }
    if (rc != STORE_OK) return fail(c, rc, "adding a token to the target");
    c->tokens++;
    return 0;
}

static int run_copy(struct copy *c)
{
    int rc = store_doc_list(c->from, copy_doc, c);
    if (rc == STORE_OK) rc = c->rc;
    if (rc != STORE_OK) {
        fprintf(stderr, "copy-store: %s: %s\n", c->what ? c->what : "listing documents",
                store_strerror(rc));
        return rc;
    }
    idset_free(&c->seen);
    c->what = NULL;
    rc = store_token_list(c->from, copy_token, c);
    if (rc == STORE_OK) rc = c->rc;
    if (rc != STORE_OK)
        fprintf(stderr, "copy-store: %s: %s\n", c->what ? c->what : "listing tokens",
                store_strerror(rc));
    return rc;
}

int copy_store_main(int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    bool overwrite = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--copy-store")) continue;
        if (!strcmp(a, "--overwrite"))
            overwrite = true;
        else if (!strcmp(a, "--from") && i + 1 < argc)
            from = argv[++i];
        else if (!strcmp(a, "--to") && i + 1 < argc)
            to = argv[++i];
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "copy-store: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!from || !to) {
        fprintf(stderr, "copy-store: --from and --to are both needed\n");
        usage(stderr);
        return 2;
    }
    if (!strcmp(from, to)) {
        fprintf(stderr, "copy-store: --from and --to name the same store\n");
        return 2;
    }
    struct spec src, dst;
    char err[1024];
    if (spec_parse(&src, from, false, err, sizeof err)) {
        fprintf(stderr, "copy-store: --from %s\n", err);
        spec_free(&src);
        return 2;
    }
    if (spec_parse(&dst, to, true, err, sizeof err)) {
        fprintf(stderr, "copy-store: --to %s\n", err);
        spec_free(&src);
        spec_free(&dst);
        return 2;
    }
    int status = 1;
    struct copy c = { .overwrite = overwrite };
    c.from = spec_open(&src, false, err, sizeof err);
    if (!c.from) {
        fprintf(stderr, "copy-store: --from %s: %s\n", src.label, err);
        goto out;
    }
    c.to = spec_open(&dst, true, err, sizeof err);
    if (!c.to) {
        fprintf(stderr, "copy-store: --to %s: %s\n", dst.label, err);
        goto out;
    }
    printf("copying from %s to %s%s\n", src.label, dst.label, overwrite ? " (--overwrite)" : "");
    fflush(stdout);
    int rc = run_copy(&c);
    printf("copied %llu documents (%llu bytes, %llu replaced), %llu keys, %llu tokens\n",
           (unsigned long long)c.docs, (unsigned long long)c.bytes, (unsigned long long)c.replaced,
           (unsigned long long)c.keys, (unsigned long long)c.tokens);
    if (c.refused_docs || c.refused_tokens || c.keys_kept)
        printf("refused %llu documents, %llu tokens; kept %llu keys of the target\n",
               (unsigned long long)c.refused_docs, (unsigned long long)c.refused_tokens,
               (unsigned long long)c.keys_kept);
    if (c.unchanged || c.unchanged_tokens)
        printf("already in the target (identical): %llu documents, %llu tokens\n",
               (unsigned long long)c.unchanged, (unsigned long long)c.unchanged_tokens);
    if (c.vanished)
        printf("%llu documents were deleted from the source during the copy\n",
               (unsigned long long)c.vanished);
    if (rc != STORE_OK)
        status = 1;
    else
        status = c.refused_docs || c.refused_tokens || c.keys_kept ? 3 : 0;
out:
    idset_free(&c.seen);
    store_close(c.to); /* an LMDB target is synced here */
    store_close(c.from);
    spec_free(&src);
    spec_free(&dst);
    return status;
}
