/* privs: giving up root. A server started as root binds its port and reads its TLS
 * key as root, and does everything else as an unprivileged user (config key User).
 *
 * Sequence used by main: privs_lookup, then privs_enter (effective ids become the
 * user's, so the files the store and the log create belong to that user and are
 * checked against its rights), privs_leave (back to root for binding and the key),
 * privs_drop (for good: real, effective and saved ids, supplementary groups).
 * glibc applies each change to every thread of the process.
 */
#ifndef ZW_PRIVS_H
#define ZW_PRIVS_H

#include <stddef.h>
#include <sys/types.h>

struct privs {
    char name[64];
    uid_t uid;
    gid_t gid;
};

/* Looks up `user`. Returns 0 when found, 1 when no such user exists, -1 on a lookup
 * error (message in err). */
int privs_lookup(const char *user, struct privs *p, char *err, size_t err_len);

/* Switches the effective ids (and groups) to the user's, keeping root as real and
 * saved id. Returns 0, or -1 with errno set. */
int privs_enter(const struct privs *p);

/* Back to effective root after privs_enter. Returns 0, or -1 with errno set. */
int privs_leave(void);

/* Becomes the user for good and checks that root cannot be regained. Returns 0, or
 * -1 with a message in err (the process must then stop: it is in a mixed state). */
int privs_drop(const struct privs *p, char *err, size_t err_len);

#endif
