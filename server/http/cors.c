/* cors: owns the Access-Control-* header set, so every /socket response agrees. */
#include "cors.h"

#include <civetweb.h>

void cors_write_headers(struct mg_connection *conn)
{
    const char *origin = mg_get_header(conn, "Origin");
    if (!origin || !*origin) return;
    /* The origin is echoed rather than "*": browsers refuse "*" with credentials,
     * and the management API is called with Basic credentials. */
    mg_response_header_add(conn, "Access-Control-Allow-Origin", origin, -1);
    mg_response_header_add(conn, "Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE",
                           -1);
    mg_response_header_add(conn, "Access-Control-Allow-Credentials", "true", -1);
    mg_response_header_add(conn, "Access-Control-Allow-Headers",
                           "Accept, Content-Type, Content-Length, Accept-Encoding, "
                           "X-CSRF-Token, Authorization",
                           -1);
    mg_response_header_add(conn, "Access-Control-Expose-Headers",
                           "Status, Content-Type, Content-Length", -1);
    /* The answer depends on Origin: caches must not serve one origin's to another. */
    mg_response_header_add(conn, "Vary", "Origin", -1);
}

int cors_send_preflight(struct mg_connection *conn)
{
    mg_response_header_start(conn, 200);
    cors_write_headers(conn);
    mg_response_header_add(conn, "Content-Length", "0", -1);
    mg_response_header_send(conn);
    return 200;
}
