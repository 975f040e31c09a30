/* http: the CivetWeb server: listening ports, TLS, worker threads, and the handlers
 * of /socket (WebSocket upgrades, GET text and ?ping, CORS, the management API). */
#ifndef ZW_HTTP_H
#define ZW_HTTP_H

#include <stddef.h>

struct app;
struct http_server;

/* Starts listening. Returns NULL with a reason in err on failure (port in use, bad
 * certificate, ...). */
struct http_server *http_start(const struct app *app, char *err, size_t err_len);
/* Stops accepting, closes every connection (their close handlers run) and returns. */
void http_stop(struct http_server *s);

#endif
