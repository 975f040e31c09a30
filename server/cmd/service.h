/* service: `zwibbler --install` / `--uninstall`: puts the server under systemd, as the
 * reference server's install command does, for a binary installed by hand (the .deb
 * ships its own unit and does not need this).
 *
 * --install (as root): creates the User from the config when missing (a system user,
 * no login), creates DataDir and the LogFile's folder owned by it, writes
 * /etc/systemd/system/zwibbler.service (conf/zwibbler.service with ExecStart set to
 * this binary and config), then daemon-reload, enable and (re)start.
 * --uninstall: stop, disable, remove that unit file, daemon-reload. Data, logs, the
 * config and the user are kept.
 * Without a running systemd (no /run/systemd/system) both say so and change nothing.
 */
#ifndef ZW_SERVICE_H
#define ZW_SERVICE_H

struct config;

/* Both return a process exit status (0 on success) after printing what they did or
 * why they could not. `config_path` is made absolute for the unit. */
int service_install(const struct config *cfg, const char *config_path);
int service_uninstall(void);

#endif
