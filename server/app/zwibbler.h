/* zwibbler: the collaboration server as a library — the one header a C program
 * includes to serve Zwibbler clients from its own CivetWeb server, with a storage
 * backend of its choice, including one it implements itself (see store.h, included
 * below, for the backend interface). The zwibbler binary is built on these calls.
 *
 * Link with build/release/libzwibbler.a (CivetWeb is inside it) and
 *   -llmdb -lcjson -lsqlite3 -lhiredis -lcurl -lssl -lcrypto -lz -ldl -lm -pthread
 * The archive exports the calls declared here, store.h's and lmdb_store.h's (all
 * zwibbler_* and store_*) and CivetWeb's mg_*; every other name in it is local.
 *
 * Minimal use:
 *     struct zwibbler *z = zwibbler_create(NULL, settings, my_store, err, sizeof err);
 *     struct mg_context *ctx = mg_start(...);            // your CivetWeb server
 *     zwibbler_mount(z, ctx, "/socket");
 *     ...
 *     mg_stop(ctx);                                       // first: closes connections
 *     zwibbler_destroy(z);
 *
 * Thread safety: create, mount, listen and destroy are called from one thread; the
 * handlers they install are called by CivetWeb from many.
 */
#ifndef ZWIBBLER_H
#define ZWIBBLER_H

#include <stddef.h>

#include "store.h"

struct mg_context;
struct zwibbler;

/* Builds a server from configuration: the file at config_path (NULL for none), then
 * `settings`, a NULL-terminated array of "Key=Value" lines (NULL for none) with the
 * keys of the configuration file (docs/configuration.md). `store` is a backend you
 * opened or wrote yourself, which the server uses but does not close; NULL opens the
 * one the configuration names (Database, DataDir, ...), closed by zwibbler_destroy.
 * Starts the connection layer's event loops, the session workers, the expiry sweep
 * and the webhook sender.
 * Returns NULL with a one-line reason in err (naming the bad key, if any). */
ZW_PUBLIC struct zwibbler *zwibbler_create(const char *config_path, const char *const *settings,
                                           struct store *store, char *err, size_t err_len);

/* Serves the collaboration endpoint at `path` (e.g. "/socket") of a CivetWeb context
 * you started: WebSocket upgrades, GET (text and ?ping), CORS, the management API
 * (POST) and the test and demo pages under path/test and path/demo. An upgraded
 * WebSocket leaves the context's worker thread at once: the server's own event loops
 * (IoThreads) own it from then on, so the context's num_threads only bounds the HTTP
 * requests and handshakes in progress, not the open connections (MaxConnections
 * does). The context must be the CivetWeb inside libzwibbler.a, which this hand-over
 * relies on. Call once, before clients arrive.
 * Returns 0, or -1 when the path is not "/..." or memory ran out. */
ZW_PUBLIC int zwibbler_mount(struct zwibbler *z, struct mg_context *ctx, const char *path);

/* Starts the server's own CivetWeb server as configured (ServerBindAddress,
 * ServerPort, CertFile/KeyFile, MaxConnections, ...) serving /socket: what the
 * zwibbler binary does. Returns 0, or -1 with a reason in err (port in use, bad
 * certificate, ...). */
ZW_PUBLIC int zwibbler_listen(struct zwibbler *z, char *err, size_t err_len);

/* Stops the server's own CivetWeb server if it listens, then everything
 * zwibbler_create started; closes the store if it opened it. With zwibbler_mount,
 * stop your CivetWeb context first. NULL is ignored. */
ZW_PUBLIC void zwibbler_destroy(struct zwibbler *z);

#endif
