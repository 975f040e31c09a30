/* config: the settings of one server process, read from a Key=Value file
 * (docs/configuration.md) and the command line. */
#ifndef ZW_CONFIG_H
#define ZW_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_SWARM 16

struct config {
    /* the reference server's keys (docs/configuration.md) */
    char *bind_address;        /* ServerBindAddress, "0.0.0.0" */
    int port;                  /* ServerPort, 3000 */
    char *cert_file, *key_file;/* CertFile, KeyFile */
    int compression;           /* Compression: permessage-deflate when offered, 1 */
    char *database;            /* Database: lmdb | sqlite | redis */
    char *data_dir;            /* DataDir, /var/lib/zwibbler */
    char *db_server, *db_user, *db_password; /* DbServer/RedisServer, DbUser, DbPassword/RedisPassword */
    int64_t expiration;        /* Expiration seconds; 0 = never; default 86400 */
    char *secret_user, *secret_password; /* SecretUser, SecretPassword */
    char *jwt_key;             /* JWTKey */
    int jwt_key_is_base64;     /* JWTKeyIsBase64 */
    char *webhook;             /* Webhook */
    long max_files;            /* MaxFiles; 0 = leave as is */
    char *swarm_urls[CONFIG_MAX_SWARM]; /* SwarmURL (may repeat) */
    int swarm_count;

    /* ours */
    int max_connections;       /* MaxConnections: simultaneous WebSockets; 0 = auto, what
                                  the open-file limit allows (config_connection_limit) */
    size_t send_queue_bytes;   /* SendQueueBytes: per-client bound, 4 MiB */
    size_t max_message_bytes;  /* MaxMessageBytes: inbound logical message, 16 MiB */
    size_t max_doc_id_bytes;   /* MaxDocIdBytes: 64 KiB (every backend takes any length) */
    size_t max_key_name_bytes; /* MaxKeyNameBytes: 256 */
    size_t max_key_value_bytes;/* MaxKeyValueBytes: 65536 */
    size_t max_api_body_bytes; /* MaxApiBodyBytes: 64 MiB (createDocument contents) */
    int init_timeout_ms;       /* InitTimeoutMs: 30000 */
    int read_timeout_ms;       /* ReadTimeoutMs: a started frame must arrive within this
                                  (+1 s per 16 KiB of payload), 30000 */
    int ping_interval_ms;      /* PingIntervalMs: WebSocket ping after this much silence, 30000 */
    int request_timeout_ms;    /* RequestTimeoutMs (older name WriteTimeoutMs): how long an
                                  HTTP worker waits for a request's headers or a stalled
                                  response write; bounds silent connections, 5000 */
    int io_threads;            /* IoThreads: event loops owning the WebSockets; 0 = one per core */
    int http_threads;          /* HttpThreads: CivetWeb workers for HTTP and upgrades, 8 */
    int session_threads;       /* SessionThreads: workers running sessions' messages, 4 */
    int sync_commits;          /* SyncCommits: 1 = fsync each commit (durable) */
    char *log_file;            /* LogFile: empty = stderr only */
    int webhook_delay_ms;      /* WebhookDelayMs: 10000 */
    int test_page;             /* TestPage: serve /socket/test, 1 */
    int demo_page;             /* DemoPage: serve /socket/demo, 1 */
    char *metrics_path;        /* MetricsPath: empty = off */
    char *run_as_user;         /* User: drop to this user when started as root, "zwibbler" */
    int cluster;               /* Cluster: with Database=redis, share live sessions with the
                                  other servers of that Redis (cluster.h), 1 */
    int cluster_key_ttl_ms;    /* ClusterKeyTtlMs: a dead server's client keys vanish
                                  within this, 15000 */
    char *redis_sentinels;     /* RedisSentinels: host:port,... find the primary through
                                  these Sentinels; empty = use DbServer */
    char *redis_master_name;   /* RedisMasterName: the primary's name there, "zwibbler" */
    char *redis_sentinel_password; /* RedisSentinelPassword: AUTH at the Sentinels */
    int redis_min_replicas;    /* RedisMinReplicas: acknowledge an append only once this
                                  many replicas have it (WAIT), 0 */
};

/* Fills every field with its default. */
void config_defaults(struct config *c);

/* Reads PATH over the current values. A missing file is an error only when
 * `must_exist`. Returns 0, or -1 with a message naming the file, line and key in err. */
int config_load(struct config *c, const char *path, int must_exist, char *err, size_t err_len);

/* Parses one "Key=Value" line (comments and blank lines are accepted and ignored).
 * Returns 0, 1 for an unknown key (warning text in err), or -1 on a bad value. */
int config_parse_line(struct config *c, const char *line, char *err, size_t err_len);

/* The connection limit in force: MaxConnections, or with 'auto' the open-file limit
 * less what storage, logs, the HTTP workers and the listeners need. */
int config_connection_limit(const struct config *c);
/* Open files kept for other than WebSockets: storage, logs, listeners, HTTP. */
long config_files_reserve(const struct config *c);
/* IoThreads in force (one per core when 0). */
int config_io_threads(const struct config *c);

void config_free(struct config *c);

#endif
