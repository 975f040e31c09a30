/* webhook: the idle-session webhook (docs/protocol.md, Idle webhook). When the last client leaves a
 * document, an event is scheduled `delay_ms` later; a client rejoining before then
 * cancels it. When due, one background thread POSTs
 *     event=idle-session&documentID=<url-encoded id>
 * (application/x-www-form-urlencoded) to the URL with libcurl, with HTTP Basic auth
 * when a user or password is set; connect timeout 5 s, whole request 10 s.
 *
 * Callers never block on the network: scheduling and cancelling only touch an
 * in-memory set under a mutex. The set is bounded (WEBHOOK_MAX_PENDING documents);
 * beyond that new events are dropped with a log line, so a slow or dead endpoint
 * cannot grow memory without bound. Failures (connection errors, non-2xx replies)
 * are logged and never retried. Events still pending at webhook_stop are dropped.
 *
 * Thread-safe: every function may be called from any thread.
 */
#ifndef ZW_WEBHOOK_H
#define ZW_WEBHOOK_H

#include <stddef.h>

#define WEBHOOK_MAX_PENDING 10000

struct webhook;
struct hub_listener;

/* Starts the sender thread. `user` and `password` may be NULL or empty (no auth).
 * The strings are copied. A negative delay is taken as 0. Returns NULL (and logs
 * why) when the thread or libcurl could not be set up. */
struct webhook *webhook_start(const char *url, const char *user, const char *password,
                              int delay_ms);

/* The document's last client left: schedule its event in delay_ms (re-scheduling it
 * if one was already pending). */
void webhook_doc_idle(struct webhook *w, const char *id, size_t len);

/* A client joined the document: cancel its pending event, if any. */
void webhook_doc_active(struct webhook *w, const char *id, size_t len);

/* Events currently scheduled (for metrics and tests). */
size_t webhook_pending(struct webhook *w);

/* Stops the thread (an in-flight request is aborted), drops pending events and frees
 * everything. NULL is accepted. */
void webhook_stop(struct webhook *w);

/* Adapters with the hub_listener signature; `arg` is the struct webhook * (NULL makes
 * them no-ops, for a server without a Webhook). */
void webhook_on_doc_idle(void *arg, const char *id, size_t id_len);
void webhook_on_doc_active(void *arg, const char *id, size_t id_len);

/* Fills *l with the two adapters and `w` as their argument. */
void webhook_listener(struct webhook *w, struct hub_listener *l);

#endif
