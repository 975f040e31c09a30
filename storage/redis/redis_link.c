/* redis_link: the connection layer shared by the Redis store and the cluster
 * (redis_link.h): where the primary is, the pool, AUTH, scripts, error classes,
 * reconnecting with a growing delay, and following Sentinel failovers. */
#include "redis_link.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "mono.h"
#include "redis_sentinel.h"
#include "store.h"
#include "store_log.h"

#define POOL_SIZE 16
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 250

struct redis_link {
    char *log_name;
    struct store_log log;
    char *user, *password;
    struct redis_sentinel *sentinel; /* NULL: the address is fixed */

    pthread_mutex_t lock; /* everything below */
    pthread_cond_t pool_cond;
    char *host; /* the primary as last found; a socket path when unix_socket */
    int port;
    bool unix_socket;
    bool find_primary; /* with Sentinels: ask them before the next connection */
    struct redis_conn conns[POOL_SIZE];
    int free_conns[POOL_SIZE];
    int nfree;
    bool down;           /* the last attempt failed */
    unsigned epoch;      /* bumped at each loss of the primary */
    int64_t next_try_ms; /* while down, no attempt before this */
    int backoff_ms;
};

static pthread_mutex_t sha_lock = PTHREAD_MUTEX_INITIALIZER;

static struct timeval ms_tv(int ms) { return (struct timeval){ ms / 1000, (ms % 1000) * 1000 }; }

char *redis_key(const char *prefix, const void *id, size_t id_len, size_t *out_len)
{
    size_t plen = strlen(prefix);
    char *k = malloc(plen + id_len + 1);
    if (!k) return NULL;
    memcpy(k, prefix, plen);
    if (id_len) memcpy(k + plen, id, id_len);
    k[plen + id_len] = 0;
    *out_len = plen + id_len;
    return k;
}

int redis_parse_server(const char *server, char **host_out, int *port, bool *unix_socket)
{
    if (!server || !*server) server = "localhost:6379";
    *port = 6379;
    *unix_socket = !strncmp(server, "unix:", 5) || server[0] == '/';
    if (*unix_socket) {
        *host_out = strdup(server[0] == '/' ? server : server + 5);
        return *host_out ? 0 : -1;
    }
    const char *host = server, *colon;
    size_t hlen;
    if (server[0] == '[') {
        const char *close = strchr(server, ']');
        if (!close) return -1;
        host = server + 1;
        hlen = (size_t)(close - host);
        colon = close[1] == ':' ? close + 1 : NULL;
        if (close[1] && !colon) return -1;
    } else {
        colon = strrchr(server, ':');
        hlen = colon ? (size_t)(colon - server) : strlen(server);
    }
    if (colon) {
        char *end;
        long p = strtol(colon + 1, &end, 10);
        if (*end || p <= 0 || p > 65535) return -1;
        *port = (int)p;
    }
    char *h = malloc(hlen + 1);
    if (!h) return -1;
    memcpy(h, host, hlen);
    h[hlen] = 0;
    *host_out = h;
    return 0;
}

const char *redis_link_where(struct redis_link *l, char *buf, size_t len)
{
    pthread_mutex_lock(&l->lock);
    if (l->unix_socket)
        snprintf(buf, len, "%s", l->host ? l->host : "?");
    else
        snprintf(buf, len, "%s:%d", l->host ? l->host : "?", l->port);
    pthread_mutex_unlock(&l->lock);
    return buf;
}

const struct store_log *redis_link_log(const struct redis_link *l) { return &l->log; }

unsigned redis_link_epoch(struct redis_link *l)
{
    pthread_mutex_lock(&l->lock);
    unsigned e = l->epoch;
    pthread_mutex_unlock(&l->lock);
    return e;
}

/* ---- connecting ---- */

/* Connects to one server, authenticates and checks that it is usable: PING, or with
 * Sentinels ROLE (it must still be the primary). NULL with a reason. */
static redisContext *connect_one(struct redis_link *l, const char *host, int port, bool unix_socket,
                                 char *why, size_t why_len)
{
    redisContext *c = unix_socket
                          ? redisConnectUnixWithTimeout(host, ms_tv(REDIS_CONNECT_TIMEOUT_MS))
                          : redisConnectWithTimeout(host, port, ms_tv(REDIS_CONNECT_TIMEOUT_MS));
    redisReply *r = NULL;
    if (!c) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    if (c->err) goto ioerr;
    /* A hung server must not hang our threads: a call that times out fails and its
     * connection is dropped. */
    if (redisSetTimeout(c, ms_tv(REDIS_COMMAND_TIMEOUT_MS)) != REDIS_OK) goto ioerr;
    redisEnableKeepAlive(c);
    if (l->password) {
        r = l->user ? redisCommand(c, "AUTH %s %s", l->user, l->password)
                    : redisCommand(c, "AUTH %s", l->password);
        if (!r) goto ioerr;
        if (r->type == REDIS_REPLY_ERROR) {
            snprintf(why, why_len, "AUTH: %.*s", (int)r->len, r->str);
            goto fail;
        }
        freeReplyObject(r);
    }
    /* Proves the session is usable (e.g. that no password was needed). */
    if (!(r = redisCommand(c, l->sentinel ? "ROLE" : "PING"))) goto ioerr;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, why_len, "%.*s", (int)r->len, r->str);
        goto fail;
    }
    if (l->sentinel &&
        (r->type != REDIS_REPLY_ARRAY || !r->elements ||
         r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "master"))) {
        snprintf(why, why_len, "not the primary (ROLE says %s)",
                 r->type == REDIS_REPLY_ARRAY && r->elements &&
                         r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str
                     : "?");
        goto fail;
    }
    freeReplyObject(r);
    return c;
ioerr:
    snprintf(why, why_len, "%s", c->errstr[0] ? c->errstr : "connection failed");
fail:
    if (r) freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* A connection to the primary, asking the Sentinels first when it may have moved.
 * NULL with a reason; *asked (may be NULL) tells whether asking the Sentinels failed. */
static redisContext *connect_primary(struct redis_link *l, char *why, size_t why_len, bool *asked)
{
    pthread_mutex_lock(&l->lock);
    bool ask = l->sentinel && (l->find_primary || !l->host);
    pthread_mutex_unlock(&l->lock);
    if (asked) *asked = false;
    if (ask) {
        char *h;
        int p;
        if (redis_sentinel_primary(l->sentinel, &h, &p, why, why_len)) {
            if (asked) *asked = true;
            return NULL;
        }
        pthread_mutex_lock(&l->lock);
        if (!l->host || strcmp(l->host, h) || l->port != p)
            store_log_info(&l->log, "%s: the Sentinels name %s:%d as the primary", l->log_name, h,
                           p);
        free(l->host);
        l->host = h;
        l->port = p;
        l->find_primary = false;
        pthread_mutex_unlock(&l->lock);
    }
    pthread_mutex_lock(&l->lock);
    char *host = strdup(l->host);
    int port = l->port;
    bool unix_socket = l->unix_socket;
    pthread_mutex_unlock(&l->lock);
    if (!host) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    redisContext *c = connect_one(l, host, port, unix_socket, why, why_len);
    if (!c) {
        char tail[200];
        snprintf(tail, sizeof tail, "%s", why);
        if (unix_socket)
            snprintf(why, why_len, "%s: %s", host, tail);
        else
            snprintf(why, why_len, "%s:%d: %s", host, port, tail);
    }
    free(host);
    return c;
}

redisContext *redis_link_connect(struct redis_link *l, char *why, size_t why_len)
{
    return connect_primary(l, why, why_len, NULL);
}

/* Records that the primary is unreachable. Logs only at the transition, so that an
 * outage does not flood the log. */
static void mark_down(struct redis_link *l, const char *why)
{
    pthread_mutex_lock(&l->lock);
    if (l->sentinel) l->find_primary = true;
    if (!l->down) {
        if (l->unix_socket)
            store_log_error(&l->log, "%s: %s: unavailable (%s); will reconnect", l->log_name,
                            l->host, why);
        else
            store_log_error(&l->log, "%s: %s:%d: unavailable (%s); will reconnect", l->log_name,
                            l->host ? l->host : "?", l->port, why);
        l->down = true;
        l->epoch++;
        l->backoff_ms = BACKOFF_MIN_MS;
        l->next_try_ms = mono_ms(); /* the first retry may be immediate */
    } else {
        l->next_try_ms = mono_ms() + l->backoff_ms;
        l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    }
    pthread_mutex_unlock(&l->lock);
}

/* +switch-master: the Sentinels moved the primary. Every connection is renewed, now. */
static void primary_moved(void *arg, const char *host, int port)
{
    struct redis_link *l = arg;
    char *h = strdup(host);
    if (!h) return;
    pthread_mutex_lock(&l->lock);
    free(l->host);
    l->host = h;
    l->port = port;
    l->find_primary = false;
    l->epoch++;
    l->down = true; /* logs "connected again" on the first new connection */
    l->backoff_ms = BACKOFF_MIN_MS;
    l->next_try_ms = mono_ms();
    pthread_mutex_unlock(&l->lock);
}

/* ---- the pool ---- */

int redis_link_get(struct redis_link *l, struct redis_conn **out)
{
    pthread_mutex_lock(&l->lock);
    while (l->nfree == 0) pthread_cond_wait(&l->pool_cond, &l->lock);
    struct redis_conn *c = &l->conns[l->free_conns[--l->nfree]];
    bool stale = c->ctx && c->epoch != l->epoch;
    bool wait = l->down && mono_ms() < l->next_try_ms;
    pthread_mutex_unlock(&l->lock);

    if (stale) { /* made before the last loss: probably dead, or not the primary */
        redisFree(c->ctx);
        c->ctx = NULL;
    }
    if (!c->ctx) {
        if (wait) goto unavailable;
        char why[300];
        redisContext *ctx = connect_primary(l, why, sizeof why, NULL);
        if (!ctx) {
            mark_down(l, why);
            goto unavailable;
        }
        pthread_mutex_lock(&l->lock);
        if (l->down && l->unix_socket)
            store_log_info(&l->log, "%s: %s: connected again", l->log_name, l->host);
        else if (l->down)
            store_log_info(&l->log, "%s: %s:%d: connected again", l->log_name, l->host, l->port);
        l->down = false;
        l->backoff_ms = BACKOFF_MIN_MS;
        c->ctx = ctx;
        c->epoch = l->epoch;
        pthread_mutex_unlock(&l->lock);
    }
    *out = c;
    return STORE_OK;
unavailable:
    pthread_mutex_lock(&l->lock);
    l->free_conns[l->nfree++] = (int)(c - l->conns);
    pthread_cond_signal(&l->pool_cond);
    pthread_mutex_unlock(&l->lock);
    return STORE_EUNAVAILABLE;
}

void redis_link_put(struct redis_link *l, struct redis_conn *c, bool failed)
{
    if (failed && c->ctx) {
        char why[160];
        snprintf(why, sizeof why, "%s", c->ctx->errstr[0] ? c->ctx->errstr : "connection lost");
        redisFree(c->ctx);
        c->ctx = NULL;
        mark_down(l, why);
    }
    pthread_mutex_lock(&l->lock);
    l->free_conns[l->nfree++] = (int)(c - l->conns);
    pthread_cond_signal(&l->pool_cond);
    pthread_mutex_unlock(&l->lock);
}

/* ---- replies and scripts ---- */

int redis_link_reply_error(struct redis_link *l, const redisReply *r, const char *what)
{
    /* Passing states; the last two also mean the primary is elsewhere now. */
    static const char *const transient[] = { "LOADING", "BUSY",       "TRYAGAIN", "CLUSTERDOWN",
                                             "NOAUTH",  "NOREPLICAS", "READONLY", "MASTERDOWN" };
    enum { MOVED_FROM = 6 };
    store_log_error(&l->log, "%s: %s: %.*s", l->log_name, what, (int)r->len, r->str);
    for (size_t i = 0; i < sizeof transient / sizeof *transient; i++) {
        size_t n = strlen(transient[i]);
        if (r->len >= n && !strncmp(r->str, transient[i], n)) {
            if (i >= MOVED_FROM) mark_down(l, r->str);
            return STORE_EUNAVAILABLE;
        }
    }
    return STORE_EIO;
}

bool redis_reply_noscript(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && !strncmp(r->str, "NOSCRIPT", 8);
}

static void script_sha(struct redis_script *s, char out[41])
{
    pthread_mutex_lock(&sha_lock);
    if (!s->sha[0]) {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)s->src, strlen(s->src), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++) sprintf(s->sha + 2 * j, "%02x", md[j]);
    }
    memcpy(out, s->sha, 41);
    pthread_mutex_unlock(&sha_lock);
}

int redis_conn_append_script(struct redis_conn *c, struct redis_script *s, bool eval, int nkeys,
                             int nargs, const char *const *args, const size_t *lens)
{
    const char *argv[REDIS_MAX_SCRIPT_ARGS + 3];
    size_t argl[REDIS_MAX_SCRIPT_ARGS + 3];
    char sha[41], nk[8];
    if (nargs > REDIS_MAX_SCRIPT_ARGS) return -1;
    if (eval) {
        argv[0] = "EVAL", argl[0] = 4;
        argv[1] = s->src, argl[1] = strlen(s->src);
    } else {
        script_sha(s, sha);
        argv[0] = "EVALSHA", argl[0] = 7;
        argv[1] = sha, argl[1] = 40;
    }
    snprintf(nk, sizeof nk, "%d", nkeys);
    argv[2] = nk, argl[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) argv[3 + i] = args[i], argl[3 + i] = lens[i];
    return redisAppendCommandArgv(c->ctx, nargs + 3, argv, argl) == REDIS_OK ? 0 : -1;
}

/* Reads one reply of c. NULL when the connection failed. */
static redisReply *read_reply(struct redis_conn *c)
{
    void *r = NULL;
    if (redisGetReply(c->ctx, &r) != REDIS_OK) return NULL;
    return r;
}

/* The reply's store code; on STORE_OK *out gets it, else it is freed. */
static int take_reply(struct redis_link *l, redisReply *r, redisReply **out, const char *what)
{
    if (r->type == REDIS_REPLY_ERROR) {
        int rc = redis_link_reply_error(l, r, what);
        freeReplyObject(r);
        return rc;
    }
    *out = r;
    return STORE_OK;
}

int redis_link_call(struct redis_link *l, int argc, const char *const *argv, const size_t *lens,
                    redisReply **out, const char *what)
{
    struct redis_conn *c;
    int rc = redis_link_get(l, &c);
    if (rc != STORE_OK) return rc;
    redisReply *r = redisAppendCommandArgv(c->ctx, argc, (const char **)argv, lens) == REDIS_OK
                        ? read_reply(c)
                        : NULL;
    redis_link_put(l, c, r == NULL);
    if (!r) return STORE_EUNAVAILABLE;
    return take_reply(l, r, out, what);
}

int redis_link_eval(struct redis_link *l, struct redis_script *s, int nkeys, int nargs,
                    const char *const *args, const size_t *lens, redisReply **out, const char *what)
{
    struct redis_conn *c;
    int rc = redis_link_get(l, &c);
    if (rc != STORE_OK) return rc;
    redisReply *r =
        redis_conn_append_script(c, s, false, nkeys, nargs, args, lens) ? NULL : read_reply(c);
    if (redis_reply_noscript(r)) { /* the script cache was flushed (restart, failover) */
        freeReplyObject(r);
        r = redis_conn_append_script(c, s, true, nkeys, nargs, args, lens) ? NULL : read_reply(c);
    }
    redis_link_put(l, c, r == NULL);
    if (!r) return STORE_EUNAVAILABLE;
    return take_reply(l, r, out, what);
}

/* ---- life cycle ---- */

void redis_link_close(struct redis_link *l)
{
    if (!l) return;
    redis_sentinel_free(l->sentinel); /* stops the watcher, which calls into l */
    for (int i = 0; i < POOL_SIZE; i++)
        if (l->conns[i].ctx) redisFree(l->conns[i].ctx);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->pool_cond);
    free(l->host);
    free(l->user);
    free(l->password);
    free(l->log_name);
    free(l);
}

struct redis_link *redis_link_open(const struct redis_link_config *cfg, char *err, size_t err_len)
{
    struct redis_link *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->pool_cond, NULL);
    for (int i = 0; i < POOL_SIZE; i++) l->free_conns[l->nfree++] = POOL_SIZE - 1 - i;
    l->backoff_ms = BACKOFF_MIN_MS;
    l->log = cfg->log;
    l->log_name = strdup(cfg->log_name ? cfg->log_name : "redis");
    if (!l->log_name || (cfg->user && *cfg->user && !(l->user = strdup(cfg->user))) ||
        (cfg->password && *cfg->password && !(l->password = strdup(cfg->password)))) {
        snprintf(err, err_len, "out of memory");
        goto fail;
    }
    /* hiredis writes with write(): a Redis that went away would kill the process with
     * SIGPIPE instead of giving us EPIPE. Servers ignore it anyway; make sure. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;
        sigaction(SIGPIPE, &sa, NULL);
    }
    if (cfg->sentinels && *cfg->sentinels) {
        l->sentinel = redis_sentinel_new(cfg->sentinels, cfg->master_name, cfg->sentinel_password,
                                         l->log_name, &l->log, err, err_len);
        if (!l->sentinel) goto fail;
        l->find_primary = true;
    } else if (redis_parse_server(cfg->server, &l->host, &l->port, &l->unix_socket)) {
        snprintf(err, err_len, "bad server address '%s' (want host:port)",
                 cfg->server ? cfg->server : "");
        goto fail;
    }
    char why[600];
    bool asked;
    redisContext *c = connect_primary(l, why, sizeof why, &asked);
    if (!c) {
        if (asked)
            snprintf(err, err_len, "%s", why); /* names the setting */
        else
            snprintf(err, err_len, "cannot connect to %s", why);
        goto fail;
    }
    struct redis_conn *first = &l->conns[l->free_conns[l->nfree - 1]];
    first->ctx = c;
    first->epoch = l->epoch;
    if (l->sentinel && redis_sentinel_watch(l->sentinel, primary_moved, l)) {
        snprintf(err, err_len, "cannot start the Sentinel watcher thread");
        goto fail;
    }
    return l;
fail:
    redis_link_close(l);
    return NULL;
}
