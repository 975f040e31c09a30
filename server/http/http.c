/* http: owns the CivetWeb context and routes /socket requests: WebSocket upgrades are
 * answered here and handed to the connection layer, plain HTTP goes to the text,
 * health and management handlers. */
#include "http.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "civetweb.h"
#include "civetweb_ext.h"
#include "config.h"
#include "conn.h"
#include "cors.h"
#include "log.h"
#include "metrics.h"
#include "mgmt_api.h"
#include "respond.h"
#include "store.h"
#include "tls.h"
#include "upgrade.h"
#include "web.h"

struct http_server {
    struct mg_context *ctx;
    const struct app *app;
    char tls_err[512]; /* why init_ssl failed, for http_start's caller */
};

static void send_text(struct mg_connection *conn, int status, const char *body)
{
    http_respond(conn, status, "text/plain; charset=utf-8", body, strlen(body));
}

/* 1 when the query string has a parameter called `name`, with or without a value
 * (`?ping`, `?x=1&ping=1`); parameter names are URL-decoded, as Go's Query() does. */
static int query_has(const char *qs, const char *name)
{
    size_t want = strlen(name);
    while (qs && *qs) {
        size_t seg = strcspn(qs, "&"), n = strcspn(qs, "=&");
        char decoded[64];
        if (n < sizeof decoded) {
            int d = mg_url_decode(qs, (int)n, decoded, (int)sizeof decoded, 1);
            if (d >= 0 && (size_t)d == want && !memcmp(decoded, name, want)) return 1;
        }
        qs += seg;
        if (*qs == '&') qs++;
    }
    return 0;
}

static int handle_http(struct mg_connection *conn, void *arg)
{
    const struct app *app = arg;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    size_t plen = strlen(app->path);
    const char *rest = ri->local_uri + plen; /* CivetWeb routed it here by prefix */
    if (strncmp(ri->local_uri, app->path, plen) || *rest) {
        int page = *rest == '/' ? web_handle(conn, app, rest) : 0; /* /test, /demo */
        if (page) return page;
        send_text(conn, 404, "Not found.");
        return 404;
    }
    if (!strcmp(ri->request_method, "OPTIONS")) return cors_send_preflight(conn);
    if (!strcmp(ri->request_method, "POST")) return mgmt_api_handle(conn, app);
    if (strcmp(ri->request_method, "GET") && strcmp(ri->request_method, "HEAD")) {
        send_text(conn, 405, "Method not allowed.");
        return 405;
    }
    if (query_has(ri->query_string, "ping")) {
        int rc = store_ping(app->store);
        if (rc) {
            log_warn("health check failed: %s", store_strerror(rc));
            send_text(conn, 500, "storage unavailable");
            return 500;
        }
        send_text(conn, 200, "OK");
        return 200;
    }
    send_text(conn, 200, "Zwibbler collaboration Server is running.");
    return 200;
}

/* The Prometheus endpoint (MetricsPath). */
static int handle_metrics(struct mg_connection *conn, void *arg)
{
    const struct app *app = arg;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (strcmp(ri->local_uri, app->cfg->metrics_path) != 0) {
        send_text(conn, 404, "Not found.");
        return 404;
    }
    if (strcmp(ri->request_method, "GET") && strcmp(ri->request_method, "HEAD")) {
        send_text(conn, 405, "Method not allowed.");
        return 405;
    }
    size_t n;
    char *body = metrics_render(app, &n);
    if (!body) {
        send_text(conn, 500, "out of memory");
        return 500;
    }
    http_respond(conn, 200, METRICS_CONTENT_TYPE, body, n);
    free(body);
    return 200;
}

/* CivetWeb's init_ssl: we configure the SSL_CTX ourselves (tls.c), because CivetWeb
 * wants certificate and key in one file and we take them separately. */
static int init_ssl(void *ssl_ctx, void *user_data)
{
    struct http_server *s = user_data;
    const struct config *cfg = s->app->cfg;
    if (tls_configure(ssl_ctx, cfg->cert_file, cfg->key_file, s->tls_err, sizeof s->tls_err))
        return -1;
    return 1;
}

/* CivetWeb's own complaints (a failed read, a bad request) name the peer. */
static int log_civetweb(const struct mg_connection *conn, const char *message)
{
    const struct mg_request_info *ri = conn ? mg_get_request_info(conn) : NULL;
    if (ri)
        log_warn("http (%s:%d): %s", ri->remote_addr, ri->remote_port, message);
    else
        log_warn("http: %s", message);
    return 1;
}

struct http_server *http_start(struct app *app, char *err, size_t err_len)
{
    const struct config *cfg = app->cfg;
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    s->app = app;
    /* Either key alone is a mistake that tls_check_files names, not plain HTTP. */
    bool tls = (cfg->cert_file && *cfg->cert_file) || (cfg->key_file && *cfg->key_file);
    if (tls && tls_check_files(cfg->cert_file, cfg->key_file, err, err_len)) {
        free(s);
        return NULL;
    }
    const char *mpath = cfg->metrics_path;
    if (mpath && *mpath && (mpath[0] != '/' || !strncmp(mpath, "/socket", 7))) {
        snprintf(err, err_len, "MetricsPath: '%s' must start with / and lie outside /socket",
                 mpath);
        free(s);
        return NULL;
    }
    char ports[300], threads[16], request_timeout[16];
    const char *addr = cfg->bind_address && *cfg->bind_address ? cfg->bind_address : "0.0.0.0";
    if (strchr(addr, ':'))
        snprintf(ports, sizeof ports, "[%s]:%d%s", addr, cfg->port, tls ? "s" : "");
    else
        snprintf(ports, sizeof ports, "%s:%d%s", addr, cfg->port, tls ? "s" : "");
    /* The pool serves HTTP requests and upgrades only: an upgraded WebSocket leaves it. */
    snprintf(threads, sizeof threads, "%d", cfg->http_threads);
    snprintf(request_timeout, sizeof request_timeout, "%d", cfg->request_timeout_ms);

    const char *options[40];
    int n = 0;
#define OPT(k, v) (options[n++] = (k), options[n++] = (v))
    OPT("listening_ports", ports);
    OPT("num_threads", threads);
    OPT("request_timeout_ms", request_timeout);
    OPT("max_request_size", "16384");
    OPT("tcp_nodelay", "1");
    OPT("connection_queue", "1024");
    OPT("listen_backlog", "1024");
    OPT("enable_keep_alive", "yes");
    /* An idle keep-alive connection holds a worker: give it back soon. */
    OPT("keep_alive_timeout_ms", "2000");
    /* CORS is ours (cors.c), answering with the request's own origin (§6). */
    OPT("access_control_allow_origin", "");
    OPT("access_control_allow_methods", "");
    OPT("access_control_allow_headers", "");
    /* TLS 1.2 and later; the rest of the TLS set-up is init_ssl's (tls.c). */
    if (tls) OPT("ssl_protocol_version", "4");
    options[n] = NULL;
#undef OPT

    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_civetweb;
    if (tls) cb.init_ssl = init_ssl;
    struct mg_init_data init = { .callbacks = &cb,
                                 .user_data = s,
                                 .configuration_options = options };
    struct mg_error_data error = { .text = err, .text_buffer_size = err_len };
    s->ctx = mg_start2(&init, &error);
    if (!s->ctx) {
        if (s->tls_err[0]) snprintf(err, err_len, "%s", s->tls_err);
        free(s);
        return NULL;
    }
    if (http_mount(s->ctx, app, "/socket")) {
        snprintf(err, err_len, "out of memory");
        mg_stop(s->ctx);
        free(s);
        return NULL;
    }
    if (mpath && *mpath) mg_set_request_handler(s->ctx, mpath, handle_metrics, (void *)app);
    return s;
}

int http_mount(struct mg_context *ctx, struct app *app, const char *path)
{
    if (!path || path[0] != '/' || app->path) return -1;
    app->path = strdup(path);
    if (!app->path) return -1;
    mg_set_request_handler(ctx, path, handle_http, app);
    /* Only the connect handler: it answers the upgrade and hands the connection over,
     * so CivetWeb never runs its own WebSocket loop for it. */
    mg_set_websocket_handler(ctx, path, upgrade_websocket, NULL, NULL, NULL, app);
    return 0;
}

void http_stop(struct http_server *s)
{
    if (!s) return;
    mg_stop(s->ctx);
    free(s);
}
