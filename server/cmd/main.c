/* main: the zwibbler command: parses the command line and config, opens the store,
 * starts the hub and the HTTP server, and shuts everything down in order on SIGTERM
 * or SIGINT. `--test` hands over to the bundled load tester. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "copy_store.h"
#include "loadtest.h"
#include "log.h"
#include "privs.h"
#include "service.h"
#include "tls.h"
#include "zwibbler.h"
#include "zwibbler_core.h"

#define ZW_VERSION "0.1.0"
#define DEFAULT_CONFIG "/etc/zwibbler.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: zwibbler [--config PATH] [--port N]\n"
            "       zwibbler --test URL --docid ID --teachers N --students M [--verbose] [...]\n"
            "       zwibbler --install [--config PATH] | --uninstall\n"
            "       zwibbler --copy-store --from SPEC --to SPEC [--overwrite]\n"
            "       zwibbler --version | --help\n"
            "\n"
            "Zwibbler collaboration server. Clients connect to ws://HOST:PORT/socket.\n"
            "  --config PATH  configuration file (default " DEFAULT_CONFIG ", optional)\n"
            "  --port N       listen on port N instead of ServerPort\n"
            "  --test URL     run the load tester against URL (--test --help: its flags)\n"
            "  --install      install, enable and start the systemd service (as root)\n"
            "  --uninstall    stop, disable and remove the systemd service (as root)\n"
            "  --copy-store   copy documents, keys and tokens between stores\n"
            "                 (zwibbler --copy-store --help)\n"
            "  --version      print the version and build date\n"
            "\n"
            "The manual: man 8 zwibbler (man/zwibbler.8 in the source tree).\n");
}

static void raise_open_files(long want)
{
    struct rlimit rl = { .rlim_cur = (rlim_t)want, .rlim_max = (rlim_t)want };
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    if (old.rlim_max > rl.rlim_max) rl.rlim_max = old.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
        log_info("MaxFiles: open-file limit set to %ld", want);
        return;
    }
    int err = errno;
    rl.rlim_cur = old.rlim_max < (rlim_t)want ? old.rlim_max : (rlim_t)want;
    rl.rlim_max = old.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    log_warn("MaxFiles: cannot raise the open-file limit to %ld (%s); it is %llu", want,
             strerror(err), (unsigned long long)rl.rlim_cur);
}

/* Each connection holds a socket, so the open-file limit bounds MaxConnections: the
 * soft limit goes up to the hard one, and with MaxConnections=auto the limit that
 * results is the connection limit. */
static void check_open_files(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max && !cfg->max_files) { /* MaxFiles, when set, decides */
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    long reserve = config_files_reserve(cfg);
    if (cfg->max_connections > 0 && rl.rlim_cur < (rlim_t)(cfg->max_connections + reserve))
        log_warn("open-file limit %llu is below MaxConnections %d (+%ld for storage, logs and "
                 "HTTP); raise it with MaxFiles or ulimit -n",
                 (unsigned long long)rl.rlim_cur, cfg->max_connections, reserve);
}

/* Started as root: decides whether to become User. Returns 1 with *p filled when the
 * server will switch, 0 when it stays as it is, 2 when the user does not exist, -1 on
 * a lookup error. A missing user is not fatal, so that `sudo zwibbler` works on a
 * machine without the package (the .deb and --install create the user). */
static int choose_user(const struct config *cfg, struct privs *p)
{
    if (geteuid() != 0 || !cfg->run_as_user || !*cfg->run_as_user) return 0;
    char err[256];
    int rc = privs_lookup(cfg->run_as_user, p, err, sizeof err);
    if (rc < 0) {
        log_error("%s", err);
        return -1;
    }
    if (rc > 0) return 2;
    return p->uid == 0 ? 0 : 1;
}

static int run_server(struct config *cfg)
{
    int rc = 1;
    char err[512] = "";
    struct zwibbler *zw = NULL;
    struct privs user;

    /* Block the stop signals before any thread exists (threads inherit the mask), so
     * that only this thread's sigwait takes them: a store or loop thread left
     * unblocked would receive SIGTERM and die by its default action, uncleanly. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (auth_check_config(cfg, err, sizeof err)) {
        log_error("%s", err);
        return 1;
    }
    /* As root: raising the hard limit needs it. */
    if (cfg->max_files) raise_open_files(cfg->max_files);
    check_open_files(cfg);
    /* Before anything is opened, so a bad certificate or key fails fast. */
    if (((cfg->cert_file && *cfg->cert_file) || (cfg->key_file && *cfg->key_file)) &&
        tls_check_files(cfg->cert_file, cfg->key_file, err, sizeof err)) {
        log_error("%s", err);
        return 1;
    }
    int choice = choose_user(cfg, &user);
    if (choice < 0) return 1;
    int switching = choice == 1;
    /* The store and the log are opened as User, so their files belong to it and a
     * directory it cannot write fails now rather than after the switch. */
    if (switching && privs_enter(&user)) {
        log_error("User: cannot switch to %s: %s", user.name, strerror(errno));
        return 1;
    }
    if (cfg->log_file && *cfg->log_file && log_open(cfg->log_file, 40u << 20)) {
        log_error("LogFile: cannot open %s: %s%s%s", cfg->log_file, strerror(errno),
                  switching ? " as user " : "", switching ? user.name : "");
        return 1;
    }
    /* Logged once the log file is open, where the operator will look. */
    if (choice == 2)
        log_warn("User: no user '%s' on this machine; running as root (create it, or set "
                 "User= to run as root without this warning)",
                 cfg->run_as_user);
    else if (geteuid() == 0 && !switching)
        log_info("running as root (User is empty)");

    zw = zwibbler_start(cfg, NULL, err, sizeof err);
    if (!zw) {
        log_error("%s%s%s", err, switching ? " (as user " : "", switching ? user.name : "");
        if (switching)
            log_error("DataDir %s must be writable by user %s", cfg->data_dir, user.name);
        goto out;
    }

    /* Root again to bind (ports below 1024) and read the key, then User for good. */
    if (switching && privs_leave()) {
        log_error("User: cannot return to root to bind the port: %s", strerror(errno));
        goto out;
    }
    if (zwibbler_listen(zw, err, sizeof err)) {
        log_error("cannot listen on %s:%d: %s", cfg->bind_address, cfg->port, err);
        goto out;
    }
    if (switching) {
        if (privs_drop(&user, err, sizeof err)) {
            log_error("%s", err);
            goto out;
        }
        log_info("running as user %s (uid %ld)", user.name, (long)user.uid);
    }
    log_info("zwibbler %s listening on %s:%d (%s), Database=%s, up to %d connections", ZW_VERSION,
             cfg->bind_address, cfg->port,
             cfg->cert_file && *cfg->cert_file ? "https/wss" : "http/ws", cfg->database,
             config_connection_limit(cfg));

    int sig = 0;
    sigwait(&stop, &sig);
    log_info("received %s; shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    zwibbler_destroy(zw); /* closes every connection first, then the store */
    if (rc == 0) log_info("stopped cleanly");
    log_close();
    return rc;
}

int main(int argc, char **argv)
{
    const char *config_path = DEFAULT_CONFIG;
    int config_given = 0, install = 0, uninstall = 0;
    long port = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--test")) return loadtest_main(argc, argv);
        if (!strcmp(argv[i], "--copy-store")) return copy_store_main(argc, argv);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--version")) {
            printf("zwibbler %s (built %s %s)\n", ZW_VERSION, __DATE__, __TIME__);
            return 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--install")) {
            install = 1;
        } else if (!strcmp(a, "--uninstall")) {
            uninstall = 1;
        } else if (!strcmp(a, "--config") && i + 1 < argc) {
            config_path = argv[++i];
            config_given = 1;
        } else if (!strcmp(a, "--port") && i + 1 < argc) {
            char *end;
            port = strtol(argv[++i], &end, 10);
            if (*end || port < 1 || port > 65535) {
                fprintf(stderr, "--port: '%s' is not a port number 1-65535\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    /* Thousands of worker threads would otherwise spread over 8 arenas per core,
     * each holding memory of its own. */
    mallopt(M_ARENA_MAX, 4);

    struct config cfg;
    config_defaults(&cfg);
    char err[512];
    if (config_load(&cfg, config_path, config_given, err, sizeof err)) {
        fprintf(stderr, "config: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    if (port) cfg.port = (int)port;
    int rc;
    if (install || uninstall)
        rc = install ? service_install(&cfg, config_path) : service_uninstall();
    else
        rc = run_server(&cfg);
    config_free(&cfg);
    return rc;
}
