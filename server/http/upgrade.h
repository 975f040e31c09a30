/* upgrade: answers a WebSocket upgrade on the endpoint (RFC 6455 handshake, with
 * permessage-deflate when offered and allowed) and hands the connection to the
 * connection layer, so it holds no CivetWeb worker thread while it is open. */
#ifndef ZW_UPGRADE_H
#define ZW_UPGRADE_H

struct mg_connection;

/* CivetWeb's WebSocket connect handler (arg: the struct app). Always returns 1: either
 * the connection was taken over, or it got an HTTP error (503 past MaxConnections). */
int upgrade_websocket(const struct mg_connection *conn, void *arg);

#endif
