/* respond: writes a complete response: status, the common headers, body (respond.h). */
#include "respond.h"

#include <stdio.h>
#include <string.h>

#include <civetweb.h>

#include "cors.h"

int http_respond_with(struct mg_connection *conn, int status, const char *content_type,
                      const void *body, size_t len, const char *const *headers)
{
    char clen[32];
    snprintf(clen, sizeof clen, "%zu", len);
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", content_type, -1);
    mg_response_header_add(conn, "Content-Length", clen, -1);
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    for (size_t i = 0; headers && headers[i] && headers[i + 1]; i += 2)
        mg_response_header_add(conn, headers[i], headers[i + 1], -1);
    cors_write_headers(conn);
    mg_response_header_send(conn);
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (len && strcmp(ri->request_method, "HEAD") != 0) mg_write(conn, body, len);
    return status;
}

int http_respond(struct mg_connection *conn, int status, const char *content_type, const void *body,
                 size_t len)
{
    return http_respond_with(conn, status, content_type, body, len, NULL);
}
