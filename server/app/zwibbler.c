/* zwibbler: the library's life cycle (zwibbler.h): builds the store, webhook sender,
 * cluster link, hub and expiry sweep from a configuration, mounts the endpoint on a
 * CivetWeb context or starts one, and tears it all down in order. */
#include "zwibbler.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "http.h"
#include "hub.h"
#include "inbox.h"
#include "log.h"
#include "maintenance.h"
#include "session.h"
#include "webhook.h"
#include "zwibbler_core.h"

struct zwibbler {
    struct config own_cfg; /* when built from settings */
    bool owns_cfg;
    bool owns_store;
    struct app app;
    struct cluster *cluster;
    struct maintenance *maint;
    struct http_server *http;
};

/* ---- the path of a message: connection layer -> inbox worker -> session ---- */

static void on_opened(void *arg, struct hub_client *c)
{
    session_open(arg, c);
}

static bool on_message(void *arg, struct hub_client *c, const uint8_t *data, size_t len)
{
    const struct app *app = arg;
    return inbox_push(app->inbox, c, data, len);
}

static void on_closed(void *arg, struct hub_client *c)
{
    const struct app *app = arg;
    inbox_push_close(app->inbox, c);
}

static bool on_joined(void *arg, const struct hub_client *c)
{
    (void)arg;
    return session_joined(c);
}

static void run_message(void *arg, struct hub_client *c, const uint8_t *data, size_t len)
{
    session_message(arg, c, data, len);
}

static void run_close(void *arg, struct hub_client *c)
{
    session_close(arg, c);
}

static void resume_reading(void *arg, struct hub_client *c)
{
    const struct app *app = arg;
    conn_resume(app->conns, c);
}

/* The store's log lines (store_config.log) join the server's log. */
static void store_log_line(void *arg, int level, const char *msg)
{
    (void)arg;
    enum log_level l = level <= STORE_LOG_DEBUG ? LOG_DEBUG
                       : level == STORE_LOG_INFO ? LOG_INFO
                       : level == STORE_LOG_WARN ? LOG_WARN
                                                 : LOG_ERROR;
    log_msg(l, "%s", msg);
}

/* Starts everything for z with cfg, which must outlive z. On failure z is destroyed. */
static struct zwibbler *start(struct zwibbler *z, const struct config *cfg, struct store *store,
                              char *err, size_t err_len)
{
    z->app.cfg = cfg;
    z->app.store = store;
    if (!store) {
        struct store_config sc = {
            .backend = cfg->database,
            .data_dir = cfg->data_dir,
            .server = cfg->db_server,
            .user = cfg->db_user,
            .password = cfg->db_password,
            /* Readers are the threads that may read at once, not connections. */
            .max_readers = (size_t)(cfg->http_threads + cfg->session_threads) + 64,
            .nosync = !cfg->sync_commits,
            .expiration = cfg->expiration,
            .log = {store_log_line, NULL},
            .redis_sentinels = cfg->redis_sentinels,
            .redis_master_name = cfg->redis_master_name,
            .redis_sentinel_password = cfg->redis_sentinel_password,
            .redis_min_replicas = cfg->redis_min_replicas,
        };
        char why[400];
        z->app.store = store_open(&sc, why, sizeof why);
        if (!z->app.store) {
            snprintf(err, err_len, "Database=%s: %s", cfg->database, why);
            goto fail;
        }
        z->owns_store = true;
        /* Several servers on one Redis share live sessions (cluster.h); from here on
         * the cluster's store announces what is committed, and owns the Redis store. */
        if (cfg->cluster && !strcmp(cfg->database, "redis")) {
            z->cluster = cluster_start(cfg, z->app.store, why, sizeof why);
            if (!z->cluster) {
                snprintf(err, err_len, "Cluster: %s", why);
                goto fail;
            }
            z->app.store = cluster_store(z->cluster);
        }
    }
    if (cfg->webhook && *cfg->webhook) {
        z->app.webhook = webhook_start(cfg->webhook, cfg->secret_user, cfg->secret_password,
                                       cfg->webhook_delay_ms);
        if (!z->app.webhook) {
            snprintf(err, err_len, "Webhook: cannot start the webhook sender");
            goto fail;
        }
    }
    struct inbox_handlers ih = {.arg = &z->app, .message = run_message, .closed = run_close,
                                .resume = resume_reading, .resume_arg = &z->app};
    /* A client with this much unprocessed input is not read until it has less. */
    size_t pause_bytes = cfg->max_message_bytes < (1u << 20) ? cfg->max_message_bytes : (1u << 20);
    z->app.inbox = inbox_start(cfg->session_threads, pause_bytes, &ih);
    if (!z->app.inbox) {
        snprintf(err, err_len, "cannot start the session threads");
        goto fail;
    }
    z->app.max_connections = config_connection_limit(cfg);
    struct conn_config cc = {.loops = config_io_threads(cfg),
                             .max_message = cfg->max_message_bytes,
                             .init_timeout_ms = cfg->init_timeout_ms,
                             .read_timeout_ms = cfg->read_timeout_ms,
                             .ping_interval_ms = cfg->ping_interval_ms,
                             .send_queue_bytes = cfg->send_queue_bytes};
    struct conn_handlers ch = {.arg = &z->app, .opened = on_opened, .message = on_message,
                               .closed = on_closed, .joined = on_joined};
    z->app.conns = conn_layer_start(&cc, &ch, err, err_len);
    if (!z->app.conns) goto fail;
    struct hub_listener listener = {0};
    if (z->cluster) cluster_listener(z->cluster, z->app.webhook, &listener);
    else if (z->app.webhook) webhook_listener(z->app.webhook, &listener);
    z->app.hub = hub_create(cfg, z->app.store, conn_layer_outq(z->app.conns), &listener);
    if (!z->app.hub) {
        snprintf(err, err_len, "cannot start the hub (out of memory or threads)");
        goto fail;
    }
    if (z->cluster && cluster_run(z->cluster, z->app.hub)) {
        snprintf(err, err_len, "Cluster: cannot start its threads");
        goto fail;
    }
    z->maint = maintenance_start(z->app.store, cfg->expiration, 60, 3600);
    if (!z->maint) {
        snprintf(err, err_len, "cannot start the expiry sweep thread");
        goto fail;
    }
    return z;
fail:
    zwibbler_destroy(z);
    return NULL;
}

struct zwibbler *zwibbler_start(const struct config *cfg, struct store *store, char *err, size_t err_len)
{
    struct zwibbler *z = calloc(1, sizeof *z);
    if (!z) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    return start(z, cfg, store, err, err_len);
}

struct zwibbler *zwibbler_create(const char *config_path, const char *const *settings,
                                 struct store *store, char *err, size_t err_len)
{
    struct zwibbler *z = calloc(1, sizeof *z);
    if (!z) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    /* The server keeps its own configuration, so the caller's settings may go away. */
    struct config *cfg = &z->own_cfg;
    config_defaults(cfg);
    z->owns_cfg = true;
    if (config_path && config_load(cfg, config_path, 1, err, err_len)) goto fail;
    for (size_t i = 0; settings && settings[i]; i++) {
        char why[300] = "";
        int rc = config_parse_line(cfg, settings[i], why, sizeof why);
        if (rc < 0) {
            snprintf(err, err_len, "%s", why);
            goto fail;
        }
        if (rc > 0) log_warn("%s", why);
    }
    return start(z, cfg, store, err, err_len);
fail:
    zwibbler_destroy(z);
    return NULL;
}

int zwibbler_mount(struct zwibbler *z, struct mg_context *ctx, const char *path)
{
    return http_mount(ctx, &z->app, path);
}

int zwibbler_listen(struct zwibbler *z, char *err, size_t err_len)
{
    z->http = http_start(&z->app, err, err_len);
    return z->http ? 0 : -1;
}

void zwibbler_destroy(struct zwibbler *z)
{
    if (!z) return;
    http_stop(z->http);            /* no new connections */
    conn_layer_stop(z->app.conns); /* closes every connection... */
    inbox_stop(z->app.inbox);      /* ...and their sessions leave their documents */
    cluster_stop(z->cluster);
    maintenance_stop(z->maint);
    hub_destroy(z->app.hub);
    conn_layer_free(z->app.conns);
    if (z->app.webhook) webhook_stop(z->app.webhook);
    if (z->owns_store) store_close(z->app.store);
    cluster_free(z->cluster);
    free(z->app.path);
    if (z->owns_cfg) config_free(&z->own_cfg);
    free(z);
}
