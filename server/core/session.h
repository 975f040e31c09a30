/* session: one WebSocket connection speaking the Zwibbler protocol (docs/protocol.md, Session and Keys):
 * reassembly, INIT and document resolution, appends, keys, broadcasts. Called from
 * CivetWeb's WebSocket handlers on the connection's own worker thread. */
#ifndef ZW_SESSION_H
#define ZW_SESSION_H

#include <stddef.h>
#include <stdint.h>

struct app;
struct hub_client;
struct mg_connection;

/* A new upgraded connection. NULL when out of memory. */
struct hub_client *session_open(const struct app *app, struct mg_connection *conn);
/* One WebSocket frame (`bits` = FIN and opcode byte as CivetWeb gives it). Returns 1
 * to keep the connection, 0 to close it. */
int session_frame(const struct app *app, struct hub_client *c, int bits,
                  const uint8_t *data, size_t len);
/* The connection is gone; c is released. */
void session_close(const struct app *app, struct hub_client *c);

#endif
