/* http: the CivetWeb server: listening ports, TLS, worker threads, and the handlers
 * of /socket (WebSocket upgrades, GET text and ?ping, CORS, the management API). */
#ifndef ZW_HTTP_H
#define ZW_HTTP_H

#include <stddef.h>

struct app;
struct http_server;

struct mg_context;

/* Starts listening and mounts the endpoint at /socket. Returns NULL with a reason in
 * err on failure (port in use, bad certificate, ...). */
struct http_server *http_start(struct app *app, char *err, size_t err_len);

/* Serves the endpoint at `path` of a running CivetWeb context (the embedding API):
 * WebSocket upgrades, GET text and ?ping, CORS, the management API, path/test and
 * path/demo. Records the path in app->path (freed by its owner). Returns 0 or -1. */
int http_mount(struct mg_context *ctx, struct app *app, const char *path);
/* Stops accepting, closes every connection (their close handlers run) and returns. */
void http_stop(struct http_server *s);

#endif
