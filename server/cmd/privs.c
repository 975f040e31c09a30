/* privs: owns the switch from root to the unprivileged User. */
#include "privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int privs_lookup(const char *user, struct privs *p, char *err, size_t err_len)
{
    char buf[16384];
    struct passwd pw, *found = NULL;
    if (strlen(user) >= sizeof p->name) {
        snprintf(err, err_len, "User: '%s' is too long", user);
        return -1;
    }
    int rc = getpwnam_r(user, &pw, buf, sizeof buf, &found);
    if (rc) {
        snprintf(err, err_len, "User: cannot look up '%s': %s", user, strerror(rc));
        return -1;
    }
    if (!found) return 1;
    snprintf(p->name, sizeof p->name, "%s", user);
    p->uid = pw.pw_uid;
    p->gid = pw.pw_gid;
    return 0;
}

/* The user's own groups only, as login would give them; root's groups must not
 * survive the switch. */
static int set_groups(const struct privs *p) { return initgroups(p->name, p->gid); }

int privs_enter(const struct privs *p)
{
    if (set_groups(p) || setegid(p->gid) || seteuid(p->uid)) return -1;
    return 0;
}

int privs_leave(void)
{
    if (seteuid(0) || setegid(0) || setgroups(0, NULL)) return -1;
    return 0;
}

int privs_drop(const struct privs *p, char *err, size_t err_len)
{
    if (geteuid() != 0 && privs_leave()) {
        snprintf(err, err_len, "User: cannot regain root to drop it: %s", strerror(errno));
        return -1;
    }
    if (set_groups(p) || setgid(p->gid) || setuid(p->uid)) {
        snprintf(err, err_len, "User: cannot become %s (uid %ld): %s", p->name, (long)p->uid,
                 strerror(errno));
        return -1;
    }
    if (p->uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
        snprintf(err, err_len, "User: root could be regained after becoming %s", p->name);
        return -1;
    }
    return 0;
}
