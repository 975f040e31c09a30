/* cors: the cross-origin headers of the /socket HTTP endpoint (docs/protocol.md, HTTP endpoints),
 * shared by the plain HTTP responses and the management API. */
#ifndef ZW_CORS_H
#define ZW_CORS_H

struct mg_connection;

/* When the request has an Origin header, adds the Access-Control-* response headers
 * that allow that origin (methods POST, GET, OPTIONS, PUT, DELETE; credentials;
 * headers Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token,
 * Authorization) and "Vary: Origin". Does nothing without Origin.
 * Call between mg_response_header_start() and mg_response_header_send(). */
void cors_write_headers(struct mg_connection *conn);

/* Answers an OPTIONS (preflight) request: 200, the CORS headers, empty body.
 * Returns 200, for a CivetWeb request handler to return. */
int cors_send_preflight(struct mg_connection *conn);

#endif
