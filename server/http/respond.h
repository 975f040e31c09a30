/* respond: whole HTTP responses of the /socket endpoint (text, management API, pages),
 * so that every one carries the same headers. */
#ifndef ZW_RESPOND_H
#define ZW_RESPOND_H

#include <stddef.h>

struct mg_connection;

/* Sends `status` with Content-Type, Content-Length, "Cache-Control: no-store" and the
 * CORS headers (cors.h), then `len` bytes of body; no body when the request is HEAD
 * (Content-Length still says what GET would send). Returns status, for a CivetWeb
 * request handler to return. */
int http_respond(struct mg_connection *conn, int status, const char *content_type, const void *body,
                 size_t len);

/* The same with more headers: `headers` is a NULL-terminated list of name, value,
 * name, value, ... (NULL: none), sent after Cache-Control. */
int http_respond_with(struct mg_connection *conn, int status, const char *content_type,
                      const void *body, size_t len, const char *const *headers);

#endif
