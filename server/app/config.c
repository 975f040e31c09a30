/* config: parsing of the Key=Value configuration file and its defaults. Every value
 * is checked; a value that cannot be used is an error naming the key. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    c->bind_address = strdup("0.0.0.0");
    c->port = 3000;
    c->compression = 1;
    c->database = strdup("lmdb");
    c->data_dir = strdup("/var/lib/zwibbler");
    c->expiration = 86400;
    c->max_connections = 0; /* auto: what the open-file limit allows */
    c->send_queue_bytes = 4u << 20;
    c->max_message_bytes = 16u << 20;
    c->max_doc_id_bytes = 65536;
    c->max_key_name_bytes = 256;
    c->max_key_value_bytes = 65536;
    c->max_api_body_bytes = 64u << 20;
    c->init_timeout_ms = 30000;
    c->read_timeout_ms = 30000;
    c->ping_interval_ms = 30000;
    c->request_timeout_ms = 5000;
    c->io_threads = 0; /* one per core */
    c->http_threads = 8;
    c->session_threads = 4;
    c->sync_commits = 1;
    c->webhook_delay_ms = 10000;
    c->test_page = 1;
    c->demo_page = 1;
    c->run_as_user = strdup("zwibbler");
    c->cluster = 1;
    c->cluster_key_ttl_ms = 15000;
    c->redis_master_name = strdup("zwibbler");
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) { *out = 1; return 0; }
        if (!strcasecmp(v, no[i])) { *out = 0; return 0; }
    }
    return -1;
}

/* Whole-string integer in [min, max]. */
static int parse_int(const char *v, long long min, long long max, long long *out)
{
    if (!*v) return -1;
    errno = 0;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < min || n > max) return -1;
    *out = n;
    return 0;
}

/* Byte sizes accept a K, M or G suffix (powers of 1024). */
static int parse_size(const char *v, size_t min, size_t max, size_t *out)
{
    if (!*v || !isdigit((unsigned char)*v)) return -1;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (errno || *end || n > (ULLONG_MAX >> shift)) return -1;
    n <<= shift;
    if (n < min || n > max) return -1;
    *out = (size_t)n;
    return 0;
}

static void set_str(char **field, const char *v)
{
    free(*field);
    *field = strdup(v);
}

enum kind { K_STR, K_BOOL, K_INT, K_SIZE };

struct key_spec {
    const char *name;
    enum kind kind;
    size_t offset;
    long long min, max; /* for K_INT and K_SIZE */
    const char *hint;   /* what a good value looks like, for error messages */
};

#define F(field) offsetof(struct config, field)
static const struct key_spec keys[] = {
    {"ServerBindAddress", K_STR, F(bind_address), 0, 0, NULL},
    {"ServerPort", K_INT, F(port), 1, 65535, "a port number 1-65535"},
    {"CertFile", K_STR, F(cert_file), 0, 0, NULL},
    {"KeyFile", K_STR, F(key_file), 0, 0, NULL},
    {"Compression", K_BOOL, F(compression), 0, 0, "true or false"},
    {"Database", K_STR, F(database), 0, 0, NULL},
    {"DataDir", K_STR, F(data_dir), 0, 0, NULL},
    {"DbServer", K_STR, F(db_server), 0, 0, NULL},
    {"RedisServer", K_STR, F(db_server), 0, 0, NULL},
    {"DbUser", K_STR, F(db_user), 0, 0, NULL},
    {"DbPassword", K_STR, F(db_password), 0, 0, NULL},
    {"RedisPassword", K_STR, F(db_password), 0, 0, NULL},
    {"SecretUser", K_STR, F(secret_user), 0, 0, NULL},
    {"SecretPassword", K_STR, F(secret_password), 0, 0, NULL},
    {"JWTKey", K_STR, F(jwt_key), 0, 0, NULL},
    {"JWTKeyIsBase64", K_BOOL, F(jwt_key_is_base64), 0, 0, "true or false"},
    {"Webhook", K_STR, F(webhook), 0, 0, NULL},
    {"SendQueueBytes", K_SIZE, F(send_queue_bytes), 4096, 1LL << 32, "4K-4G"},
    {"MaxMessageBytes", K_SIZE, F(max_message_bytes), 1024, 1LL << 31, "1K-2G"},
    {"MaxDocIdBytes", K_SIZE, F(max_doc_id_bytes), 1, 16 << 20, "1-16M"},
    {"MaxKeyNameBytes", K_SIZE, F(max_key_name_bytes), 1, 400, "1-400"},
    {"MaxKeyValueBytes", K_SIZE, F(max_key_value_bytes), 0, 16 << 20, "0-16M"},
    {"MaxApiBodyBytes", K_SIZE, F(max_api_body_bytes), 1024, 1LL << 31, "1K-2G"},
    {"InitTimeoutMs", K_INT, F(init_timeout_ms), 100, 3600000, "100-3600000"},
    {"ReadTimeoutMs", K_INT, F(read_timeout_ms), 100, 3600000, "100-3600000"},
    {"PingIntervalMs", K_INT, F(ping_interval_ms), 1000, 3600000, "1000-3600000"},
    {"RequestTimeoutMs", K_INT, F(request_timeout_ms), 100, 600000, "100-600000"},
    {"WriteTimeoutMs", K_INT, F(request_timeout_ms), 100, 600000, "100-600000"}, /* older name */
    {"IoThreads", K_INT, F(io_threads), 0, 256, "0 (one per core) to 256"},
    {"HttpThreads", K_INT, F(http_threads), 2, 1024, "2-1024"},
    {"SessionThreads", K_INT, F(session_threads), 1, 256, "1-256"},
    {"SyncCommits", K_BOOL, F(sync_commits), 0, 0, "true or false"},
    {"LogFile", K_STR, F(log_file), 0, 0, NULL},
    {"WebhookDelayMs", K_INT, F(webhook_delay_ms), 0, 86400000, "0-86400000"},
    {"TestPage", K_BOOL, F(test_page), 0, 0, "true or false"},
    {"DemoPage", K_BOOL, F(demo_page), 0, 0, "true or false"},
    {"MetricsPath", K_STR, F(metrics_path), 0, 0, NULL},
    {"User", K_STR, F(run_as_user), 0, 0, NULL},
    {"Cluster", K_BOOL, F(cluster), 0, 0, "true or false"},
    {"ClusterKeyTtlMs", K_INT, F(cluster_key_ttl_ms), 1000, 3600000, "1000-3600000"},
    {"RedisSentinelPassword", K_STR, F(redis_sentinel_password), 0, 0, NULL},
    {"RedisMinReplicas", K_INT, F(redis_min_replicas), 0, 100, "a number of replicas 0-100"},
};
#undef F

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

/* Keys whose value needs more than a type check. */
static int parse_special(struct config *c, const char *key, const char *v, char *err,
                         size_t err_len, int *handled)
{
    *handled = 1;
    if (!strcasecmp(key, "Expiration")) {
        long long n;
        if (!strcasecmp(v, "never")) c->expiration = 0;
        else if (parse_int(v, 1, 100LL * 365 * 86400, &n) == 0) c->expiration = n;
        else {
            snprintf(err, err_len, "Expiration: '%s' is not a number of seconds or 'never'", v);
            return -1;
        }
        return 0;
    }
    if (!strcasecmp(key, "MaxFiles")) {
        long long n;
        if (parse_int(v, 64, 1LL << 30, &n)) {
            snprintf(err, err_len, "MaxFiles: '%s' is not a number 64-1073741824", v);
            return -1;
        }
        c->max_files = (long)n;
        return 0;
    }
    if (!strcasecmp(key, "MaxConnections")) {
        long long n;
        if (!strcasecmp(v, "auto")) c->max_connections = 0;
        else if (parse_int(v, 1, 1000000, &n) == 0) c->max_connections = (int)n;
        else {
            snprintf(err, err_len, "MaxConnections: '%s' is not 'auto' or a number 1-1000000", v);
            return -1;
        }
        return 0;
    }
    if (!strcasecmp(key, "SenderThreads")) {
        /* Older versions wrote with sender threads; the event loops do it now. */
        return 0;
    }
    if (!strcasecmp(key, "SwarmURL")) {
        if (c->swarm_count >= CONFIG_MAX_SWARM) {
            snprintf(err, err_len, "SwarmURL: more than %d entries", CONFIG_MAX_SWARM);
            return -1;
        }
        c->swarm_urls[c->swarm_count++] = strdup(v);
        return 0;
    }
    if (!strcasecmp(key, "RedisSentinels")) {
        /* host:port[,host:port...]: checked here, so that a typo is not first met as
         * an unreachable Sentinel */
        const char *p = v;
        while (*p) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t)(end - p) : strlen(p);
            char one[300];
            const char *colon = NULL;
            if (n && n < sizeof one) {
                memcpy(one, p, n);
                one[n] = 0;
                colon = strrchr(one, ':');
            }
            long long port;
            if (!colon || colon == one || parse_int(trim((char *)colon + 1), 1, 65535, &port)) {
                snprintf(err, err_len, "RedisSentinels: '%.*s' is not host:port (want host:port,host:port,...)",
                         (int)(n > 64 ? 64 : n), p);
                return -1;
            }
            p += n + (end ? 1 : 0);
        }
        set_str(&c->redis_sentinels, v);
        return 0;
    }
    if (!strcasecmp(key, "RedisMasterName")) {
        if (!*v || strpbrk(v, " \t")) {
            snprintf(err, err_len, "RedisMasterName: '%.64s' is not a Sentinel master name", v);
            return -1;
        }
        set_str(&c->redis_master_name, v);
        return 0;
    }
    if (!strcasecmp(key, "Database")) {
        if (strcasecmp(v, "lmdb") && strcasecmp(v, "sqlite") && strcasecmp(v, "redis")) {
            snprintf(err, err_len, "Database: unknown backend '%s' (lmdb, sqlite or redis)", v);
            return -1;
        }
        char *lower = strdup(v);
        for (char *p = lower; *p; p++) *p = (char)tolower((unsigned char)*p);
        free(c->database);
        c->database = lower;
        return 0;
    }
    *handled = 0;
    return 0;
}

int config_parse_line(struct config *c, const char *line, char *err, size_t err_len)
{
    char buf[4096];
    if (strlen(line) >= sizeof buf) {
        snprintf(err, err_len, "line longer than %zu bytes", sizeof buf - 1);
        return -1;
    }
    strcpy(buf, line);
    char *s = trim(buf);
    if (!*s || *s == '#') return 0;
    char *eq = strchr(s, '=');
    if (!eq) {
        snprintf(err, err_len, "'%.64s' is not Key=Value", s);
        return -1;
    }
    *eq = 0;
    char *key = trim(s), *v = trim(eq + 1);

    int handled;
    if (parse_special(c, key, v, err, err_len, &handled)) return -1;
    if (handled) return 0;

    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const struct key_spec *k = &keys[i];
        if (strcasecmp(key, k->name)) continue;
        char *field = (char *)c + k->offset;
        long long n;
        size_t z;
        int b;
        switch (k->kind) {
        case K_STR: set_str((char **)field, v); return 0;
        case K_BOOL:
            if (parse_bool(v, &b)) break;
            *(int *)field = b;
            return 0;
        case K_INT:
            if (parse_int(v, k->min, k->max, &n)) break;
            *(int *)field = (int)n;
            return 0;
        case K_SIZE:
            if (parse_size(v, (size_t)k->min, (size_t)k->max, &z)) break;
            *(size_t *)field = z;
            return 0;
        }
        snprintf(err, err_len, "%s: '%.64s' is not valid (expected %s)", k->name, v, k->hint);
        return -1;
    }
    snprintf(err, err_len, "unknown key '%.64s' ignored", key);
    return 1;
}

int config_load(struct config *c, const char *path, int must_exist, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!must_exist && errno == ENOENT) return 0;
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096], msg[512];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        msg[0] = 0;
        int r = config_parse_line(c, line, msg, sizeof msg);
        if (r < 0) {
            snprintf(err, err_len, "%s:%d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
        if (r > 0) fprintf(stderr, "warning: %s:%d: %s\n", path, lineno, msg);
    }
    fclose(f);
    return rc;
}

void config_free(struct config *c)
{
    char **strs[] = {&c->bind_address, &c->cert_file, &c->key_file, &c->database,
                     &c->data_dir, &c->db_server, &c->db_user, &c->db_password,
                     &c->secret_user, &c->secret_password, &c->jwt_key, &c->webhook,
                     &c->log_file, &c->metrics_path, &c->run_as_user, &c->redis_sentinels,
                     &c->redis_master_name, &c->redis_sentinel_password};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    for (int i = 0; i < c->swarm_count; i++) free(c->swarm_urls[i]);
    c->swarm_count = 0;
}

long config_files_reserve(const struct config *c)
{
    /* Each HTTP worker may hold a connection and a file; storage, logs and the
     * listeners need a few dozen more. */
    return 64 + 2L * c->http_threads;
}

int config_connection_limit(const struct config *c)
{
    if (c->max_connections > 0) return c->max_connections;
    struct rlimit rl;
    long files = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur
                                                                                   : 1024;
    long n = files - config_files_reserve(c);
    return n < 16 ? 16 : n > 1000000 ? 1000000 : (int)n;
}

int config_io_threads(const struct config *c)
{
    if (c->io_threads > 0) return c->io_threads;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}
