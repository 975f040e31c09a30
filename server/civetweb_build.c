/* civetweb_build: compiles CivetWeb (from Debian's source package, see scripts/deps.sh)
 * into our binary and adds the one accessor its API lacks: the socket of a
 * connection, so another thread can shut a stalled client down (shutdown(2) makes
 * CivetWeb's own read loop end and run the close handler) and poll it for space. */
#include "civetweb.c"

int mg_connection_socket(const struct mg_connection *conn)
{
    return (int)conn->client.sock;
}
