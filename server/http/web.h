/* web: the two pages served beside the WebSocket endpoint, /socket/test (a self-test
 * that runs the protocol the way a Zwibbler client does) and /socket/demo (a small
 * shared whiteboard). Their HTML is embedded in the binary at build time
 * (scripts/embed.sh), so an install needs no web root and no CDN. */
#ifndef ZW_WEB_H
#define ZW_WEB_H

#include <stddef.h>

struct app;
struct mg_connection;

/* One embedded file, generated into build/<variant>/gen/web_assets.c. */
struct web_asset {
    const char *name; /* file name under server/http/web/, e.g. "test.html" */
    const unsigned char *data;
    size_t len;
};
extern const struct web_asset web_assets[];
extern const size_t web_assets_count;

/* Looks up an embedded file by name; NULL when there is none. */
const struct web_asset *web_find(const char *name);

/* Answers a GET or HEAD for `path`, the part after the mount point ("/test",
 * "/demo"), when it is one of the pages and the configuration serves it. Returns the
 * HTTP status sent, or 0 when `path` is not a page this server serves, or the method
 * is not GET or HEAD (the caller answers 404 then). */
int web_handle(struct mg_connection *conn, const struct app *app, const char *path);

#endif
