/* web: serves the embedded self-test and demo pages (see web.h). The pages hold no
 * secrets and no per-request data, so they are sent as stored; each request is a
 * small static write. */
#include "web.h"

#include <stdio.h>
#include <string.h>

#include "app.h"
#include "civetweb.h"
#include "config.h"
#include "cors.h"

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

    char len[32];
    snprintf(len, sizeof len, "%zu", a->len);
    mg_response_header_start(conn, 200);
    mg_response_header_add(conn, "Content-Type", "text/html; charset=utf-8", -1);
    mg_response_header_add(conn, "Content-Length", len, -1);
    /* Always fresh: after an upgrade the page must match the server it tests. */
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    mg_response_header_add(conn, "Content-Security-Policy", CSP, -1);
    mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
    mg_response_header_add(conn, "Referrer-Policy", "no-referrer", -1);
    cors_write_headers(conn);
    mg_response_header_send(conn);
    if (!head) mg_write(conn, a->data, a->len);
    return 200;
}
