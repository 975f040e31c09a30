/* app: the parts of one running server that the HTTP, WebSocket and management
 * handlers share. Built by zwibbler.c, read-only once mounted. */
#ifndef ZW_APP_H
#define ZW_APP_H

struct config;
struct store;
struct hub;
struct webhook;
struct conn_layer;
struct inbox;

struct app {
    const struct config *cfg;
    struct store *store;
    struct hub *hub;
    struct conn_layer *conns; /* every open WebSocket */
    struct inbox *inbox;      /* runs their messages */
    struct webhook *webhook;  /* NULL when no Webhook is configured */
    char *path;               /* where the endpoint is mounted, e.g. "/socket" */
    int max_connections;      /* the limit in force (MaxConnections, or what 'auto' gave) */
};

#endif
