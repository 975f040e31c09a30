/* test_store_redis: the Redis backend against a real redis-server that the test starts on a free
 * loopback port and stops afterwards — the shared conformance suite, the reference's key layout
 * (docs/protocol.md, Storage layouts) read and written, atomicity against other Redis clients, a
 * flushed script cache, passwords, riding out a Redis restart, and (STORE_BENCH=1) the append cost
 * on large documents. Skipped when redis-server is not installed. */
#include "store.h"
#include "store_conformance.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char tmp_dir[64];
static int port;
static pid_t redis_pid;
static char server[32];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts redis-server on `port` with data in tmp_dir; durable=1 turns on the AOF with
 * an fsync per write (what the reconnect test and the benchmark need). Returns once
 * it answers PING, or 0 on failure. */
static pid_t start_redis(int durable)
{
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1", "--save",
               "", "--appendonly", durable ? "yes" : "no", "--appendfsync", "always", "--dir",
               tmp_dir, "--loglevel", "warning", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        struct timespec ts = { 0, 50000000 };
        nanosleep(&ts, NULL);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return 0;
        redisContext *c = redisConnect("127.0.0.1", port);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return pid;
        } else if (c) {
            redisFree(c);
        }
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return 0;
}

static void stop_redis(pid_t pid, int sig)
{
    if (pid <= 0) return;
    kill(pid, sig);
    waitpid(pid, NULL, 0);
}

/* ---- raw Redis access, as another server (or the reference) would do ---- */

static redisContext *raw(void)
{
    redisContext *c = redisConnect("127.0.0.1", port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}

/* Runs a command (argv with lengths) and returns its reply; fails on error replies. */
static redisReply *rcmd(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR) fail_msg("redis: %s", r->str);
    return r;
}

static redisReply *rfmt(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR) fail_msg("redis: %s", r->str);
    return r;
}

static void rdo(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR) fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

static struct store *open_cfg(int64_t expiration, const char *password)
{
    struct store_config cfg = {
        .backend = "redis", .server = server, .password = password, .expiration = expiration
    };
    char err[256] = "";
    struct store *s = store_redis_open(&cfg, err, sizeof err);
    if (!s) fprintf(stderr, "redis open: %s\n", err);
    return s;
}

static struct store *conf_open(void *ctx)
{
    (void)ctx;
    return open_cfg(0, NULL);
}

static void conf_reset(void *ctx)
{
    (void)ctx;
    redisContext *c = redisConnect("127.0.0.1", port);
    if (c && !c->err) freeReplyObject(redisCommand(c, "FLUSHALL"));
    if (c) redisFree(c);
}

struct keys_seen {
    int n;
    char name[8][32];
    size_t name_len[8];
    char value[8][128];
    size_t value_len[8];
    uint32_t version[8];
};

static int see_key(void *arg, const uint8_t *name, size_t name_len, const uint8_t *value,
                   size_t value_len, uint32_t version)
{
    struct keys_seen *k = arg;
    if (k->n < 8 && name_len < 32 && value_len < 128) {
        memcpy(k->name[k->n], name, name_len);
        k->name_len[k->n] = name_len;
        memcpy(k->value[k->n], value, value_len);
        k->value_len[k->n] = value_len;
        k->version[k->n] = version;
    }
    k->n++;
    return 0;
}

static int find(const struct keys_seen *k, const char *name)
{
    for (int i = 0; i < k->n && i < 8; i++)
        if (k->name_len[i] == strlen(name) && !memcmp(k->name[i], name, k->name_len[i])) return i;
    return -1;
}

static const uint8_t BIN[] = { 'a', 0, 0xff, 0xfe, 0xc3, 0x28, 0x80, 'z', 0, 0xed, 0xa0, 0x80 };

/* A data set written with raw commands exactly as §10 describes (and as the
 * reference's go-redis code writes it) is served by our backend. */
static void t_reads_reference_layout(void **state)
{
    (void)state;
    conf_reset(NULL);
    redisContext *c = raw();
    int64_t now = time(NULL);
    const char *set[] = { "SET", "zwibbler:bin", (const char *)BIN };
    size_t setl[] = { 3, 12, sizeof BIN };
    freeReplyObject(rcmd(c, 3, set, setl));
    rdo(c, "SET zwibbler:plain %s", "hello world");
    rdo(c, "SET zwibbler:empty %s", "");
    /* Go's json.Marshal(Key{Version, Name, Value}) with its HTML escaping */
    rdo(c, "HSET zwibbler-keys:plain page %s", "{\"Version\":7,\"Name\":\"page\",\"Value\":\"3\"}");
    rdo(c, "HSET zwibbler-keys:plain admin:lock %s",
        "{\"Version\":2,\"Name\":\"admin:lock\",\"Value\":\"\\u003cb\\u003e \\u0026 \\\"q\\\" "
        "\\n\\u0001 caf\xc3\xa9 \\u00e9\\ud83d\\ude00\"}");
    rdo(c, "HSET zwibbler-keys:plain spaced %s",
        " { \"value\" : \"v\" , \"name\":\"spaced\", \"extra\": [1, {\"a\": null}], \"version\" : "
        "3 } ");
    /* tokens: hash + TTL at expiry + the user's set */
    rdo(c, "HSET zwibbler-token:{token}:tok-live userID alice docID plain permissions rw");
    rdo(c, "EXPIREAT zwibbler-token:{token}:tok-live %lld", (long long)now + 3600);
    rdo(c, "SADD zwibbler-user:alice zwibbler-token:{token}:tok-live");
    rdo(c, "HSET zwibbler-token:{token}:tok-ro userID alice docID bin permissions r");
    rdo(c, "EXPIREAT zwibbler-token:{token}:tok-ro %lld", (long long)now + 7200);
    rdo(c, "SADD zwibbler-user:alice zwibbler-token:{token}:tok-ro");
    rdo(c, "SADD zwibbler-user:alice zwibbler-token:{token}:tok-gone"); /* expired long ago */

    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    uint64_t len;
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_length(s, "plain", 5, &len), STORE_OK);
    assert_int_equal(len, 11);
    assert_int_equal(store_doc_read(s, "bin", 3, 1, &data, &n, &len), STORE_OK);
    assert_int_equal(len, sizeof BIN);
    assert_int_equal(n, sizeof BIN - 1);
    assert_memory_equal(data, BIN + 1, n);
    free(data);
    assert_int_equal(store_doc_length(s, "empty", 5, &len), STORE_OK);
    assert_int_equal(len, 0);
    assert_int_equal(store_doc_append(s, "empty", 5, 0, BIN, sizeof BIN, &len), STORE_OK);

    struct keys_seen k = { 0 };
    assert_int_equal(store_keys_get(s, "plain", 5, see_key, &k), STORE_OK);
    assert_int_equal(k.n, 3);
    int p = find(&k, "page"), a = find(&k, "admin:lock"), sp = find(&k, "spaced");
    assert_true(p >= 0 && a >= 0 && sp >= 0);
    assert_int_equal(k.version[p], 7);
    assert_int_equal(k.value_len[p], 1);
    assert_memory_equal(k.value[p], "3", 1);
    assert_int_equal(k.version[a], 2);
    const char want[] = "<b> & \"q\" \n\x01 caf\xc3\xa9 \xc3\xa9\xf0\x9f\x98\x80";
    assert_int_equal(k.value_len[a], sizeof want - 1);
    assert_memory_equal(k.value[a], want, sizeof want - 1);
    assert_int_equal(k.version[sp], 3);
    assert_memory_equal(k.value[sp], "v", 1);
    /* compare-version against a version the reference wrote */
    assert_int_equal(
        store_key_set(s, "plain", 5, (const uint8_t *)"page", 4, (const uint8_t *)"4", 1, 6, 8),
        STORE_EMISMATCH);
    assert_int_equal(
        store_key_set(s, "plain", 5, (const uint8_t *)"page", 4, (const uint8_t *)"4", 1, 7, 8),
        STORE_OK);

    struct store_token t;
    assert_int_equal(store_token_get(s, "tok-live", 8, &t), STORE_OK);
    assert_int_equal(t.doc_id_len, 5);
    assert_memory_equal(t.doc_id, "plain", 5);
    assert_string_equal(t.user_id, "alice");
    assert_string_equal(t.permissions, "rw");
    assert_int_equal(t.expires, now + 3600);
    store_token_clear(&t);
    assert_int_equal(store_token_get(s, "tok-gone", 8, &t), STORE_ENOTFOUND);
    assert_int_equal(store_user_update(s, "alice", 5, "r"), STORE_OK);
    assert_int_equal(store_token_get(s, "tok-live", 8, &t), STORE_OK);
    assert_string_equal(t.permissions, "r");
    store_token_clear(&t);
    /* sweep drops the dead token's name from the user's set, as the reference does */
    assert_int_equal(store_sweep(s, now, 86400, NULL), STORE_OK);
    redisReply *r = rfmt(c, "SISMEMBER zwibbler-user:alice zwibbler-token:{token}:tok-gone");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    r = rfmt(c, "SCARD zwibbler-user:alice");
    assert_int_equal(r->integer, 2);
    freeReplyObject(r);
    store_close(s);
    redisFree(c);
}

/* What we write is what the reference would have written. */
static void t_writes_reference_layout(void **state)
{
    (void)state;
    conf_reset(NULL);
    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    int64_t now = time(NULL);
    uint64_t len;
    assert_int_equal(store_doc_create(s, "d1", 2, BIN, 4), STORE_OK);
    assert_int_equal(store_doc_append(s, "d1", 2, 4, BIN + 4, sizeof BIN - 4, &len), STORE_OK);
    const char value[] = "<a&b>\"\\\n\t\x01\x7f caf\xc3\xa9 \xe2\x80\xa8";
    assert_int_equal(store_key_set(s, "d1", 2, (const uint8_t *)"page", 4, (const uint8_t *)value,
                                   sizeof value - 1, 0, 5),
                     STORE_OK);
    /* bytes JSON cannot carry as they are (NUL, invalid UTF-8) survive our own round
     * trip, including the script's compare-version on them */
    assert_int_equal(store_key_set(s, "d1", 2, (const uint8_t *)"bin", 3, BIN, sizeof BIN, 0, 1),
                     STORE_OK);
    assert_int_equal(store_key_set(s, "d1", 2, (const uint8_t *)"bin", 3, BIN, sizeof BIN, 1, 2),
                     STORE_OK);
    struct keys_seen k = { 0 };
    assert_int_equal(store_keys_get(s, "d1", 2, see_key, &k), STORE_OK);
    int b = find(&k, "bin");
    assert_true(b >= 0);
    assert_int_equal(k.version[b], 2);
    assert_int_equal(k.value_len[b], sizeof BIN);
    assert_memory_equal(k.value[b], BIN, sizeof BIN);
    struct store_token t = { .doc_id = "d1",
                             .doc_id_len = 2,
                             .user_id = "carol",
                             .permissions = "rwa",
                             .expires = now + 60 };
    assert_int_equal(store_token_add(s, "tk", 2, &t), STORE_OK);
    store_close(s);

    redisContext *c = raw();
    freeReplyObject(rfmt(c, "HDEL zwibbler-keys:d1 bin"));
    redisReply *r = rfmt(c, "GET zwibbler:d1");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, sizeof BIN);
    assert_memory_equal(r->str, BIN, sizeof BIN);
    freeReplyObject(r);
    r = rfmt(c, "TTL zwibbler:d1"); /* expiration 0: no TTL */
    assert_int_equal(r->integer, -1);
    freeReplyObject(r);
    r = rfmt(c, "HGET zwibbler-keys:d1 page");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_string_equal(r->str,
                        "{\"Version\":5,\"Name\":\"page\",\"Value\":\"\\u003ca\\u0026b\\u003e"
                        "\\\"\\\\\\n\\t\\u0001\x7f caf\xc3\xa9 \\u2028\"}");
    freeReplyObject(r);
    r = rfmt(c, "HGETALL zwibbler-token:{token}:tk");
    assert_int_equal(r->elements, 6);
    for (size_t i = 0; i < 6; i += 2) {
        const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
        if (!strcmp(f, "docID"))
            assert_string_equal(v, "d1");
        else if (!strcmp(f, "userID"))
            assert_string_equal(v, "carol");
        else if (!strcmp(f, "permissions"))
            assert_string_equal(v, "rwa");
        else
            fail_msg("unexpected token field %s", f);
    }
    freeReplyObject(r);
    r = rfmt(c, "TTL zwibbler-token:{token}:tk");
    assert_true(r->integer >= 58 && r->integer <= 60);
    freeReplyObject(r);
    r = rfmt(c, "SMEMBERS zwibbler-user:carol");
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, "zwibbler-token:{token}:tk");
    freeReplyObject(r);
    r = rfmt(c, "KEYS *");
    assert_int_equal(r->elements, 4); /* nothing else */
    freeReplyObject(r);
    redisFree(c);

    /* with Expiration set, documents and their keys carry a TTL refreshed on access */
    s = open_cfg(1000, NULL);
    assert_non_null(s);
    assert_int_equal(store_doc_create(s, "d2", 2, (const uint8_t *)"x", 1), STORE_OK);
    assert_int_equal(
        store_key_set(s, "d2", 2, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1),
        STORE_OK);
    c = raw();
    rdo(c, "EXPIRE zwibbler:d2 10");
    rdo(c, "EXPIRE zwibbler-keys:d2 10");
    assert_int_equal(store_doc_append(s, "d2", 2, 1, (const uint8_t *)"y", 1, &len), STORE_OK);
    r = rfmt(c, "TTL zwibbler:d2");
    assert_true(r->integer > 990);
    freeReplyObject(r);
    r = rfmt(c, "TTL zwibbler-keys:d2");
    assert_true(r->integer > 990);
    freeReplyObject(r);
    rdo(c, "EXPIRE zwibbler:d2 10");
    assert_int_equal(store_doc_length(s, "d2", 2, &len), STORE_OK);
    r = rfmt(c, "TTL zwibbler:d2");
    assert_true(r->integer > 990);
    freeReplyObject(r);
    redisFree(c);
    store_close(s);
}

/* Another server appending to the same Redis: our compare-and-append sees it. */
static void t_atomic_against_other_clients(void **state)
{
    (void)state;
    conf_reset(NULL);
    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    redisContext *c = raw();
    uint64_t len;
    assert_int_equal(store_doc_create(s, "shared", 6, (const uint8_t *)"abc", 3), STORE_OK);
    rdo(c, "APPEND zwibbler:shared %s", "XYZ"); /* the other server won offset 3 */
    assert_int_equal(store_doc_append(s, "shared", 6, 3, (const uint8_t *)"d", 1, &len),
                     STORE_EMISMATCH);
    assert_int_equal(len, 6);
    assert_int_equal(store_doc_append(s, "shared", 6, 6, (const uint8_t *)"d", 1, &len), STORE_OK);
    assert_int_equal(len, 7);
    /* the script cache flushed under us (restart, failover, SCRIPT FLUSH): EVAL again */
    rdo(c, "SCRIPT FLUSH");
    assert_int_equal(store_doc_append(s, "shared", 6, 7, (const uint8_t *)"e", 1, &len), STORE_OK);
    assert_int_equal(
        store_key_set(s, "shared", 6, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1),
        STORE_OK);
    uint8_t *data;
    size_t n;
    assert_int_equal(store_doc_read(s, "shared", 6, 0, &data, &n, NULL), STORE_OK);
    assert_int_equal(n, 8);
    assert_memory_equal(data, "abcXYZde", 8);
    free(data);
    /* a key the other server changed */
    rdo(c, "HSET zwibbler-keys:shared k %s", "{\"Version\":9,\"Name\":\"k\",\"Value\":\"w\"}");
    assert_int_equal(
        store_key_set(s, "shared", 6, (const uint8_t *)"k", 1, (const uint8_t *)"x", 1, 1, 2),
        STORE_EMISMATCH);
    assert_int_equal(
        store_key_set(s, "shared", 6, (const uint8_t *)"k", 1, (const uint8_t *)"x", 1, 9, 10),
        STORE_OK);
    redisFree(c);
    store_close(s);
}

/* Expiration: a document not accessed for that long disappears with its keys. */
static void t_ttl_expiry(void **state)
{
    (void)state;
    conf_reset(NULL);
    struct store *s = open_cfg(1, NULL);
    assert_non_null(s);
    uint64_t len;
    assert_int_equal(store_doc_create(s, "short", 5, (const uint8_t *)"x", 1), STORE_OK);
    assert_int_equal(
        store_key_set(s, "short", 5, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1),
        STORE_OK);
    struct timespec ts = { 1, 600000000 };
    nanosleep(&ts, NULL);
    assert_int_equal(store_doc_length(s, "short", 5, &len), STORE_ENOTFOUND);
    struct keys_seen k = { 0 };
    assert_int_equal(store_keys_get(s, "short", 5, see_key, &k), STORE_OK);
    assert_int_equal(k.n, 0);
    store_close(s);
}

/* Data that is not ours to read: a wrong type is an error (never a crash), a malformed
 * key is skipped and the others still served. */
static void t_foreign_data(void **state)
{
    (void)state;
    conf_reset(NULL);
    redisContext *c = raw();
    rdo(c, "HSET zwibbler:hashdoc a b");
    rdo(c, "SET zwibbler-keys:strkeys oops");
    rdo(c, "HSET zwibbler-keys:mixed good %s", "{\"Version\":1,\"Name\":\"good\",\"Value\":\"g\"}");
    rdo(c, "HSET zwibbler-keys:mixed bad %s", "{\"Version\":2,\"Value\":\"unterminated}");
    redisFree(c);
    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    uint64_t len;
    assert_int_equal(store_doc_length(s, "hashdoc", 7, &len), STORE_EIO);
    assert_int_equal(store_doc_append(s, "hashdoc", 7, 0, (const uint8_t *)"x", 1, &len),
                     STORE_EIO);
    assert_int_equal(
        store_key_set(s, "strkeys", 7, (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, 0, 1),
        STORE_EIO);
    struct keys_seen k = { 0 };
    assert_int_equal(store_keys_get(s, "strkeys", 7, see_key, &k), STORE_EIO);
    assert_int_equal(store_keys_get(s, "mixed", 5, see_key, &k), STORE_OK);
    assert_int_equal(k.n, 1);
    assert_memory_equal(k.name[0], "good", 4);
    assert_int_equal(store_ping(s), STORE_OK); /* the connection survived all that */
    store_close(s);
}

static void t_password(void **state)
{
    (void)state;
    redisContext *c = raw();
    rdo(c, "CONFIG SET requirepass s3cret");
    struct store_config cfg = { .backend = "redis", .server = server };
    char err[256] = "";
    assert_null(store_redis_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "NOAUTH"));
    cfg.password = "wrong";
    assert_null(store_redis_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "AUTH"));
    cfg.password = "s3cret";
    struct store *s = store_redis_open(&cfg, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(store_ping(s), STORE_OK);
    uint64_t len;
    assert_int_equal(store_doc_length(s, "nothing", 7, &len), STORE_ENOTFOUND);
    store_close(s);
    rdo(c, "AUTH s3cret");
    rdo(c, "CONFIG SET requirepass %s", "");
    redisFree(c);
    /* bad addresses are start-up errors */
    cfg = (struct store_config){ .backend = "redis", .server = "127.0.0.1:notaport" };
    assert_null(store_redis_open(&cfg, err, sizeof err));
    char refused[32];
    snprintf(refused, sizeof refused, "127.0.0.1:%d", free_port());
    cfg.server = refused;
    assert_null(store_redis_open(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "cannot connect"));
}

/* Many threads, each its own document: the appender pipelines them. */
#define PL_THREADS 16
#define PL_APPENDS 100

struct pl_arg {
    struct store *s;
    int thread, errors;
};

static void *pl_worker(void *p)
{
    struct pl_arg *a = p;
    char id[16];
    int n = snprintf(id, sizeof id, "pl%d", a->thread);
    if (store_doc_create(a->s, id, (size_t)n, NULL, 0) != STORE_OK) a->errors++;
    uint64_t len = 0;
    for (int i = 0; i < PL_APPENDS; i++) {
        uint8_t b[10];
        memset(b, 'a' + a->thread, sizeof b);
        if (store_doc_append(a->s, id, (size_t)n, len, b, sizeof b, &len) != STORE_OK) a->errors++;
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void t_pipelined_appends(void **state)
{
    (void)state;
    conf_reset(NULL);
    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    struct pl_arg args[PL_THREADS];
    pthread_t th[PL_THREADS];
    double t0 = now_s();
    for (int i = 0; i < PL_THREADS; i++) {
        args[i] = (struct pl_arg){ s, i, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, pl_worker, &args[i]), 0);
    }
    for (int i = 0; i < PL_THREADS; i++) pthread_join(th[i], NULL);
    double dt = now_s() - t0;
    for (int i = 0; i < PL_THREADS; i++) assert_int_equal(args[i].errors, 0);
    print_message("      %d appends from %d threads in %.3f s (%.0f/s)\n", PL_THREADS * PL_APPENDS,
                  PL_THREADS, dt, PL_THREADS * PL_APPENDS / dt);
    for (int i = 0; i < PL_THREADS; i++) {
        char id[16];
        int n = snprintf(id, sizeof id, "pl%d", i);
        uint64_t len;
        assert_int_equal(store_doc_length(s, id, (size_t)n, &len), STORE_OK);
        assert_int_equal(len, PL_APPENDS * 10);
    }
    store_close(s);
}

/* Redis killed and restarted: calls fail with STORE_EUNAVAILABLE meanwhile, the store
 * comes back by itself, and every acknowledged append is still there. */
static void t_reconnect(void **state)
{
    (void)state;
    stop_redis(redis_pid, SIGTERM);
    redis_pid = start_redis(1);
    assert_true(redis_pid > 0);
    struct store *s = open_cfg(0, NULL);
    assert_non_null(s);
    uint64_t len = 1;
    assert_int_equal(store_doc_create(s, "rc", 2, (const uint8_t *)"a", 1), STORE_OK);
    for (int i = 0; i < 20; i++)
        assert_int_equal(store_doc_append(s, "rc", 2, len, (const uint8_t *)"b", 1, &len),
                         STORE_OK);
    uint64_t acked = len;
    assert_int_equal(acked, 21);

    stop_redis(redis_pid, SIGKILL); /* no shutdown: only what was fsync'ed survives */
    redis_pid = 0;
    uint64_t l2;
    assert_int_equal(store_doc_append(s, "rc", 2, acked, (const uint8_t *)"c", 1, &l2),
                     STORE_EUNAVAILABLE);
    assert_int_equal(store_ping(s), STORE_EUNAVAILABLE);
    assert_int_equal(store_doc_length(s, "rc", 2, &l2), STORE_EUNAVAILABLE);
    struct store_token t;
    assert_int_equal(store_token_get(s, "x", 1, &t), STORE_EUNAVAILABLE);

    redis_pid = start_redis(1);
    assert_true(redis_pid > 0);
    int ok = 0;
    for (int i = 0; i < 150 && !ok; i++) { /* backoff is at most 5 s */
        ok = store_ping(s) == STORE_OK;
        if (!ok) {
            struct timespec ts = { 0, 100000000 };
            nanosleep(&ts, NULL);
        }
    }
    assert_true(ok);
    assert_int_equal(store_doc_length(s, "rc", 2, &l2), STORE_OK);
    assert_int_equal(l2, acked);
    assert_int_equal(store_doc_append(s, "rc", 2, acked, (const uint8_t *)"c", 1, &l2), STORE_OK);
    assert_int_equal(l2, acked + 1);
    /* every pooled connection was renewed: many calls in parallel all work */
    uint8_t *data;
    size_t n;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(store_doc_read(s, "rc", 2, 0, &data, &n, NULL), STORE_OK);
        free(data);
    }
    store_close(s);
    stop_redis(redis_pid, SIGTERM);
    redis_pid = start_redis(0);
    assert_true(redis_pid > 0);
}

/* Append cost on a 1 MB and a 20 MB document, AOF with appendfsync=always. */
static void bench_append(void)
{
    stop_redis(redis_pid, SIGTERM);
    redis_pid = start_redis(1);
    if (!redis_pid) return;
    struct store *s = open_cfg(0, NULL);
    if (!s) return;
    size_t sizes[] = { 1u << 20, 20u << 20 };
    uint8_t *buf = malloc(20u << 20);
    for (size_t i = 0; i < (20u << 20); i++) buf[i] = (uint8_t)(i * 13);
    printf("  redis append cost (appendonly yes, appendfsync always, 100-byte appends)\n");
    printf("  %-10s %10s %10s %10s\n", "doc size", "appends", "avg ms", "max ms");
    for (size_t k = 0; k < 2; k++) {
        char id[16];
        int n = snprintf(id, sizeof id, "bench%zu", k);
        store_doc_create(s, id, (size_t)n, buf, sizes[k]);
        uint64_t len = sizes[k];
        int count = 50;
        double total = 0, max = 0;
        for (int i = 0; i < count; i++) {
            double t0 = now_s();
            store_doc_append(s, id, (size_t)n, len, buf, 100, &len);
            double dt = now_s() - t0;
            total += dt;
            if (dt > max) max = dt;
        }
        printf("  %7zu MB %10d %10.2f %10.2f\n", sizes[k] >> 20, count, total / count * 1e3,
               max * 1e3);
    }
    free(buf);
    store_close(s);
}

int main(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        printf("redis-server not installed: Redis backend tests skipped\n");
        return 0;
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/zw-redis-XXXXXX");
    if (!mkdtemp(tmp_dir) || (port = free_port()) <= 0) {
        perror("setup");
        return 1;
    }
    snprintf(server, sizeof server, "127.0.0.1:%d", port);
    redis_pid = start_redis(0);
    if (!redis_pid) {
        fprintf(stderr, "cannot start redis-server on port %d\n", port);
        return 1;
    }
    int failed = 0;
    struct store_conformance c = { "redis", conf_open, conf_reset, NULL, STORE_CONF_SELF_EXPIRING };
    failed += store_conformance_run(&c);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_reads_reference_layout),
        cmocka_unit_test(t_writes_reference_layout),
        cmocka_unit_test(t_atomic_against_other_clients),
        cmocka_unit_test(t_ttl_expiry),
        cmocka_unit_test(t_foreign_data),
        cmocka_unit_test(t_password),
        cmocka_unit_test(t_pipelined_appends),
        cmocka_unit_test(t_reconnect),
    };
    failed += cmocka_run_group_tests_name("redis backend", tests, NULL, NULL);
    if (getenv("STORE_BENCH")) bench_append();
    stop_redis(redis_pid, SIGTERM);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_dir);
    return failed ? 1 : 0;
}
