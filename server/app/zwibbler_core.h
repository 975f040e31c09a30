/* zwibbler_core: the library's entry for the zwibbler binary, which has already
 * parsed its configuration (and may have changed user) before starting the core. */
#ifndef ZW_ZWIBBLER_CORE_H
#define ZW_ZWIBBLER_CORE_H

#include <stddef.h>

struct config;
struct store;
struct zwibbler;

/* Like zwibbler_create, with a parsed configuration that the caller keeps alive until
 * zwibbler_destroy. */
struct zwibbler *zwibbler_start(const struct config *cfg, struct store *store, char *err,
                                size_t err_len);

#endif
