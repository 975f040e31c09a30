/* web: serves the embedded self-test and demo pages (see web.h). The pages hold no
 * secrets and no per-request data, so they are sent as stored; each request is a
 * small static write. */
#include "web.h"

#include <string.h>

#include "app.h"
#include "civetweb.h"
#include "config.h"
#include "respond.h"

/* The pages' scripts and styles are inline, so they need 'unsafe-inline'; everything
 * else is shut. connect-src 'self' admits ws:/wss: to the page's own host and port
 * (CSP level 3), which is the only place the pages connect to. */
static const char CSP[] =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

const struct web_asset *web_find(const char *name)
{
    for (size_t i = 0; i < web_assets_count; i++)
        if (!strcmp(web_assets[i].name, name)) return &web_assets[i];
    return NULL;
}

int web_handle(struct mg_connection *conn, const struct app *app, const char *path)
{
    const char *file;
    if (!strcmp(path, "/test") && app->cfg->test_page)
        file = "test.html";
    else if (!strcmp(path, "/demo") && app->cfg->demo_page)
        file = "demo.html";
    else
        return 0;
    const struct web_asset *a = web_find(file);
    const struct mg_request_info *ri = mg_get_request_info(conn);
    int head = !strcmp(ri->request_method, "HEAD");
    if (!a || (!head && strcmp(ri->request_method, "GET"))) return 0;

    /* Always fresh (no-store): after an upgrade the page must match the server it
     * tests. */
    static const char *const headers[] = {
        "Content-Security-Policy",
        CSP,
        "X-Content-Type-Options",
        "nosniff",
        "Referrer-Policy",
        "no-referrer",
        NULL,
    };
    return http_respond_with(conn, 200, "text/html; charset=utf-8", a->data, a->len, headers);
}
