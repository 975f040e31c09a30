/* service: owns installing and removing the systemd unit of a hand-installed binary. */
#include "service.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

#define UNIT_PATH "/etc/systemd/system/zwibbler.service"
#define UNIT_NAME "zwibbler.service"
#define PACKAGED_EXEC "ExecStart=/usr/bin/zwibbler --config /etc/zwibbler.conf\n"

extern char **environ;

/* conf/zwibbler.service, turned into a C string by the Makefile, so the unit that
 * --install writes cannot drift from the one the package ships. */
static const char unit_template[] =
#include "zwibbler_service.inc"
    ;

/* Runs argv[0] (found on PATH) without a shell. Returns its exit status, or -1 when it
 * could not be run or was killed. */
static int run(const char *const argv[])
{
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
    if (rc) {
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int systemd_running(void)
{
    struct stat st;
    if (stat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode)) return 1;
    fprintf(
        stderr,
        "systemd is not running on this machine (no /run/systemd/system); nothing was changed.\n"
        "Start the server yourself instead, e.g.: zwibbler --config /etc/zwibbler.conf\n");
    return 0;
}

static int need_root(const char *what)
{
    if (geteuid() == 0) return 1;
    fprintf(stderr, "%s: must be run as root (sudo zwibbler %s)\n", what, what);
    return 0;
}

/* mkdir -p, then chown to the user (so the unprivileged server can write there). */
static int make_dir(const char *path, const struct passwd *pw)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0750) && errno != EEXIST) return -1;
    if (pw && chown(buf, pw->pw_uid, pw->pw_gid)) return -1;
    return 0;
}

static int ensure_user(const char *user, struct passwd **pw_out)
{
    *pw_out = NULL;
    if (!user || !*user) return 0; /* User= empty: the server stays root */
    struct passwd *pw = getpwnam(user);
    if (!pw) {
        const char *argv[] = { "useradd",      "--system",
                               "--user-group", "--no-create-home",
                               "--home-dir",   "/var/lib/zwibbler",
                               "--shell",      "/usr/sbin/nologin",
                               "--comment",    "Zwibbler collaboration server",
                               user,           NULL };
        if (run(argv) != 0) {
            fprintf(stderr, "--install: could not create the user '%s'\n", user);
            return -1;
        }
        printf("created system user %s\n", user);
        pw = getpwnam(user);
        if (!pw) return -1;
    }
    *pw_out = pw;
    return 0;
}

static int write_unit(const char *exe, const char *config_path)
{
    const char *at = strstr(unit_template, PACKAGED_EXEC);
    if (!at) {
        fprintf(stderr, "--install: built-in unit has no ExecStart line\n");
        return -1;
    }
    char tmp[] = UNIT_PATH ".tmp";
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "--install: %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "%.*sExecStart=%s --config %s\n%s", (int)(at - unit_template), unit_template, exe,
            config_path, at + strlen(PACKAGED_EXEC));
    if (fclose(f) || chmod(tmp, 0644) || rename(tmp, UNIT_PATH)) {
        fprintf(stderr, "--install: %s: %s\n", UNIT_PATH, strerror(errno));
        unlink(tmp);
        return -1;
    }
    printf("wrote %s (ExecStart=%s --config %s)\n", UNIT_PATH, exe, config_path);
    return 0;
}

/* The directory part of a path ("" when there is none). */
static void dir_of(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash && slash != out)
        *slash = 0;
    else
        out[0] = 0;
}

int service_install(const struct config *cfg, const char *config_path)
{
    if (!need_root("--install") || !systemd_running()) return 1;
    char exe[PATH_MAX], conf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        fprintf(stderr, "--install: cannot find this program's path: %s\n", strerror(errno));
        return 1;
    }
    exe[n] = 0;
    if (!realpath(config_path, conf)) {
        fprintf(stderr,
                "--install: config %s: %s (write it first; the service reads it at every start)\n",
                config_path, strerror(errno));
        return 1;
    }
    struct passwd *pw;
    if (ensure_user(cfg->run_as_user, &pw)) return 1;
    char logdir[PATH_MAX] = "";
    if (cfg->log_file && *cfg->log_file) dir_of(cfg->log_file, logdir, sizeof logdir);
    if ((cfg->data_dir && *cfg->data_dir && make_dir(cfg->data_dir, pw)) ||
        (*logdir && make_dir(logdir, pw))) {
        fprintf(stderr, "--install: cannot prepare DataDir or the LogFile folder: %s\n",
                strerror(errno));
        return 1;
    }
    if (write_unit(exe, conf)) return 1;
    const char *reload[] = { "systemctl", "daemon-reload", NULL };
    const char *enable[] = { "systemctl", "enable", UNIT_NAME, NULL };
    const char *restart[] = { "systemctl", "restart", UNIT_NAME, NULL };
    if (run(reload) || run(enable) || run(restart)) {
        fprintf(stderr, "--install: systemctl failed; see `systemctl status zwibbler`\n");
        return 1;
    }
    printf("zwibbler service enabled and started; logs: %s\n",
           cfg->log_file && *cfg->log_file ? cfg->log_file : "journalctl -u zwibbler");
    return 0;
}

int service_uninstall(void)
{
    if (!need_root("--uninstall") || !systemd_running()) return 1;
    struct stat st;
    if (stat(UNIT_PATH, &st)) {
        fprintf(stderr, "--uninstall: %s is not there; nothing to remove%s\n", UNIT_PATH,
                stat("/lib/systemd/system/" UNIT_NAME, &st) == 0
                    ? " (the service comes from the package: apt remove zwibbler)"
                    : "");
        return 1;
    }
    const char *stop[] = { "systemctl", "stop", UNIT_NAME, NULL };
    const char *disable[] = { "systemctl", "disable", UNIT_NAME, NULL };
    const char *reload[] = { "systemctl", "daemon-reload", NULL };
    run(stop);
    run(disable);
    if (unlink(UNIT_PATH)) {
        fprintf(stderr, "--uninstall: %s: %s\n", UNIT_PATH, strerror(errno));
        return 1;
    }
    run(reload);
    printf("removed %s; data, logs, config and user are kept\n", UNIT_PATH);
    return 0;
}
