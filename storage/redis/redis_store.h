/* redis_store: what the Redis backend shares with other Redis users in the program
 * (the cluster link), so that both read DbServer the same way. */
#ifndef ZW_REDIS_STORE_H
#define ZW_REDIS_STORE_H

#include <stdbool.h>

/* Splits a DbServer value: "host:port", "[v6]:port", "host" (port 6379), or a Unix
 * socket path ("/..." or "unix:/..."); NULL or empty means localhost:6379. On success
 * *host is malloc'd. Returns 0, or -1 for a malformed address or port. */
int redis_parse_server(const char *server, char **host, int *port, bool *unix_socket);

#endif
