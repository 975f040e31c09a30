/* upgrade: owns the server's side of the WebSocket handshake and the hand-over of an
 * upgraded connection from CivetWeb to the connection layer. */
#include "upgrade.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "app.h"
#include "civetweb.h"
#include "civetweb_ext.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "wsdeflate.h"

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* Sec-WebSocket-Accept for a key (RFC 6455, section 4.2.2). Returns -1 when the
 * key is not what a client sends. */
static int accept_value(const char *key, char out[32])
{
    char buf[128];
    size_t n = strlen(key);
    if (n == 0 || n > 64) return -1;
    memcpy(buf, key, n);
    memcpy(buf + n, WS_GUID, sizeof WS_GUID - 1);
    unsigned char sha[EVP_MAX_MD_SIZE];
    unsigned sha_len = 0;
    if (!EVP_Digest(buf, n + sizeof WS_GUID - 1, sha, &sha_len, EVP_sha1(), NULL)) return -1;
    EVP_EncodeBlock((unsigned char *)out, sha, (int)sha_len); /* 20 bytes -> 28 chars */
    return 0;
}

/* Whether the URL or the configuration turned compression off (Compression=0,
 * ?compression=0, as the reference server reads them). */
static bool compression_allowed(const struct app *app, const struct mg_request_info *ri)
{
    if (!app->cfg->compression) return false;
    char v[16];
    const char *qs = ri->query_string;
    if (qs && mg_get_var(qs, strlen(qs), "compression", v, sizeof v) >= 0)
        return !(!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "off"));
    return true;
}

/* Every Sec-WebSocket-Extensions header of the request, as one comma list. */
static void extension_offers(const struct mg_request_info *ri, char *out, size_t len)
{
    size_t n = 0;
    out[0] = 0;
    for (int i = 0; i < ri->num_headers; i++) {
        if (strcasecmp(ri->http_headers[i].name, "Sec-WebSocket-Extensions")) continue;
        int w = snprintf(out + n, len - n, "%s%s", n ? ", " : "", ri->http_headers[i].value);
        if (w < 0 || (size_t)w >= len - n) break;
        n += (size_t)w;
    }
}

static void refuse(struct mg_connection *conn, int status, const char *reason, const char *body)
{
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
              "Retry-After: 5\r\nConnection: close\r\n\r\n%s",
              status, reason, strlen(body), body);
}

int upgrade_websocket(const struct mg_connection *cconn, void *arg)
{
    struct mg_connection *conn = (struct mg_connection *)cconn;
    const struct app *app = arg;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    uint64_t open = conn_count(app->conns);
    if (open >= (uint64_t)app->max_connections) {
        refuse(conn, 503, "Service Unavailable", "Too many connections; retry.");
        log_warn("refused a connection from %s: %llu connections, MaxConnections is %d",
                 ri->remote_addr, (unsigned long long)open, app->max_connections);
        return 1;
    }
    char accept[32];
    const char *key = mg_get_header(conn, "Sec-WebSocket-Key");
    if (!key || accept_value(key, accept)) {
        refuse(conn, 400, "Bad Request", "Bad Sec-WebSocket-Key.");
        return 1;
    }
    char offers[1024], deflate[256] = "";
    bool use_deflate = false;
    if (compression_allowed(app, ri)) {
        extension_offers(ri, offers, sizeof offers);
        use_deflate = offers[0] && ws_deflate_negotiate(offers, deflate, sizeof deflate) == 1;
    }
    mg_printf(conn,
              "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: %s\r\n%s%s%s\r\n",
              accept, use_deflate ? "Sec-WebSocket-Extensions: " : "", use_deflate ? deflate : "",
              use_deflate ? "\r\n" : "");
    struct mg_zw_detached d;
    mg_zw_detach(conn, &d);
    struct conn_adoption a = { .fd = d.fd,
                               .ssl = d.ssl,
                               .early = (const uint8_t *)d.early,
                               .early_len = d.early_len,
                               .addr = ri->remote_addr,
                               .deflate = use_deflate };
    if (conn_adopt(app->conns, &a))
        log_warn("dropped a connection from %s: the server is stopping or out of memory",
                 ri->remote_addr);
    return 1;
}
