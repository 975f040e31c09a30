/* session: one connection speaking the Zwibbler protocol (docs/protocol.md, Sessions
 * and Keys): reassembly, INIT and document resolution, appends, keys, broadcasts.
 * session_message and session_close run on the inbox worker that owns the client's
 * messages, one at a time per client. */
#ifndef ZW_SESSION_H
#define ZW_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct app;
struct hub_client;

/* A new connection, before its first message. */
void session_open(const struct app *app, struct hub_client *c);
/* One whole WebSocket message (a protocol message or a piece of one). */
void session_message(const struct app *app, struct hub_client *c, const uint8_t *data, size_t len);
/* The connection is gone: c leaves its document. The last call for c. */
void session_close(const struct app *app, struct hub_client *c);
/* Whether INIT was accepted (any thread). */
bool session_joined(const struct hub_client *c);

#endif
