/* app: the parts of one running server that the HTTP, WebSocket and management
 * handlers share. Built by zwibbler.c, read-only once mounted. */
#ifndef ZW_APP_H
#define ZW_APP_H

struct config;
struct store;
struct hub;
struct webhook;

struct app {
    const struct config *cfg;
    struct store *store;
    struct hub *hub;
    struct webhook *webhook; /* NULL when no Webhook is configured */
    char *path;              /* where the endpoint is mounted, e.g. "/socket" */
};

#endif
