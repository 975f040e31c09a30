// Helpers of the browser tests: the real server binary on a free loopback port, a
// private nginx, and Debian's Chromium driven by playwright-core. Every process they
// start is bounded in time and stopped by the caller's `after` hooks, even on failure.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../..");
export const BIN = process.env.ZWIBBLER_BIN || path.join(REPO, "build/release/zwibbler");
export const ARTIFACTS = path.join(REPO, "test/artifacts");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

// Daemons from Debian's packages live in /usr/sbin, which a non-root PATH may lack.
const sbin = (name) => (fs.existsSync(`/usr/sbin/${name}`) ? `/usr/sbin/${name}` : name);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Temporary directories go when the test process exits (kept with ZW_KEEP_TMP=1, to
// read server and nginx logs after a failure).
const tmpDirs = [];
process.on("exit", () => { if (!process.env.ZW_KEEP_TMP) for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true }); });
export function tmpDir(name) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `zw-browser-${name}-`));
  tmpDirs.push(d);
  return d;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

// Polls url until it answers 200, or throws after ms.
async function waitHttp(url, ms, proc, log) {
  const end = Date.now() + ms;
  for (;;) {
    if (proc.failed) throw new Error(`cannot start: ${proc.failed.message}`);
    if (proc.exitCode !== null || proc.signalCode) throw new Error(`exited early; log ${log}:\n${readTail(log)}`);
    try { if (await httpOk(url)) return; } catch { /* not up yet */ }
    if (Date.now() > end) throw new Error(`${url} not ready within ${ms} ms; log ${log}:\n${readTail(log)}`);
    await sleep(100);
  }
}
// GET url is 200; https is accepted with any certificate (tests use self-signed ones).
function httpOk(url) {
  const mod = url.startsWith("https:") ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(url, { rejectUnauthorized: false, timeout: 1000 }, (res) => { res.resume(); resolve(res.statusCode === 200); });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}
const readTail = (f) => { try { return fs.readFileSync(f, "utf8").slice(-3000); } catch { return ""; } };

// SIGTERM, then SIGKILL after ms. Resolves with the exit code or signal.
function stopProc(proc, ms = 10000) {
  if (!proc || proc.exitCode !== null || proc.signalCode) return Promise.resolve(proc?.exitCode ?? proc?.signalCode);
  return new Promise((resolve) => {
    const kill = setTimeout(() => proc.kill("SIGKILL"), ms);
    proc.once("exit", (code, sig) => { clearTimeout(kill); resolve(code ?? sig); });
    proc.kill("SIGTERM");
  });
}

// The real binary with a private config and data directory. start() may be called
// again after stop() (same config, same data): a restart.
export class Server {
  constructor(extra = {}) { this.extra = extra; this.proc = null; }
  async init() {
    this.dir = tmpDir("server");
    this.port = await freePort();
    this.conf = path.join(this.dir, "zwibbler.conf");
    this.log = path.join(this.dir, "server.log");
    const cfg = { ServerBindAddress: "127.0.0.1", ServerPort: this.port, DataDir: path.join(this.dir, "data"),
      MaxConnections: 256, ...this.extra };
    fs.mkdirSync(cfg.DataDir);
    fs.writeFileSync(this.conf, Object.entries(cfg).map(([k, v]) => `${k}=${v}\n`).join(""));
    return this;
  }
  get base() { return `${this.scheme || "http"}://127.0.0.1:${this.port}`; }
  async start() {
    const out = fs.openSync(this.log, "a");
    const proc = this.proc = spawn(BIN, ["--config", this.conf], { cwd: this.dir, stdio: ["ignore", out, out] });
    proc.once("error", (e) => { proc.failed = e; });
    fs.closeSync(out);
    await waitHttp(`${this.base}/socket`, 10000, this.proc, this.log);
  }
  async stop() {
    const how = await stopProc(this.proc);
    this.proc = null;
    return how;
  }
  logTail() { return readTail(this.log); }
}

// nginx with a private config on a free loopback port, in the foreground.
// `locations` is the text of its server block's locations.
export class Nginx {
  async start(locations) {
    this.dir = tmpDir("nginx");
    this.port = await freePort();
    const d = this.dir, conf = path.join(d, "nginx.conf");
    fs.writeFileSync(conf, `daemon off;
master_process off;
worker_processes 1;
pid ${d}/nginx.pid;
error_log ${d}/error.log info;
events { worker_connections 256; }
http {
  access_log ${d}/access.log;
  client_body_temp_path ${d}/body; proxy_temp_path ${d}/proxy; fastcgi_temp_path ${d}/fastcgi;
  uwsgi_temp_path ${d}/uwsgi; scgi_temp_path ${d}/scgi;
  server {
    listen 127.0.0.1:${this.port};
${locations}
  }
}
`);
    this.log = path.join(d, "error.log");
    const out = fs.openSync(path.join(d, "stderr.log"), "a");
    this.proc = spawn(sbin("nginx"), ["-p", d, "-c", conf, "-e", path.join(d, "error.log")], { stdio: ["ignore", out, out] });
    fs.closeSync(out);
    this.proc.on("error", () => {});
    const end = Date.now() + 10000;
    while (!(await canConnect(this.port))) {
      if (this.proc.exitCode !== null) throw new Error(`nginx exited: ${readTail(path.join(d, "stderr.log"))}${readTail(this.log)}`);
      if (Date.now() > end) throw new Error("nginx did not start within 10 s");
      await sleep(100);
    }
    return this;
  }
  get base() { return `http://127.0.0.1:${this.port}`; }
  stop() { return stopProc(this.proc, 5000); }
}
// Apache httpd with a private config (mod_proxy_http only) on a free loopback port, in
// the foreground. `body` is the config's proxy part.
export class Apache {
  async start(body) {
    this.dir = tmpDir("apache");
    this.port = await freePort();
    const d = this.dir, conf = path.join(d, "httpd.conf"), mods = "/usr/lib/apache2/modules";
    fs.writeFileSync(conf, `ServerRoot ${d}
PidFile ${d}/httpd.pid
ErrorLog ${d}/error.log
LogLevel warn
Listen 127.0.0.1:${this.port}
ServerName 127.0.0.1
LoadModule mpm_event_module ${mods}/mod_mpm_event.so
LoadModule authz_core_module ${mods}/mod_authz_core.so
LoadModule proxy_module ${mods}/mod_proxy.so
LoadModule proxy_http_module ${mods}/mod_proxy_http.so
${process.getuid?.() === 0 ? "User www-data\nGroup www-data" : ""}
${body}
`);
    this.log = path.join(d, "error.log");
    const out = fs.openSync(path.join(d, "stderr.log"), "a");
    this.proc = spawn(sbin("apache2"), ["-f", conf, "-DFOREGROUND"], { stdio: ["ignore", out, out] });
    fs.closeSync(out);
    this.proc.on("error", () => {});
    const end = Date.now() + 10000;
    while (!(await canConnect(this.port))) {
      if (this.proc.exitCode !== null) throw new Error(`apache2 exited: ${readTail(path.join(d, "stderr.log"))}${readTail(this.log)}`);
      if (Date.now() > end) throw new Error("apache2 did not start within 10 s");
      await sleep(100);
    }
    return this;
  }
  get base() { return `http://127.0.0.1:${this.port}`; }
  stop() { return stopProc(this.proc, 5000); }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

// Debian's Chromium with the flags that work as root on these machines; Playwright
// gives it a new empty user data directory.
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

// Page errors fail the test that owns the page.
export function watchPage(page, errors) {
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error" && !/WebSocket/.test(m.text())) errors.push(`console: ${m.text()}`); });
}

export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
