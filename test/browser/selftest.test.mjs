// The self-test page /socket/test in headless Chromium: all green against our server,
// directly and through an nginx that forwards WebSockets; red with a useful reason
// through an nginx that does not forward the Upgrade header. Also the config switches.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Apache, launchBrowser, Nginx, REPO, screenshot, Server, tmpDir, watchPage } from "./lib.mjs";

// Waits for the page's summary to settle and returns window.selftest.
async function runSelftest(page, url) {
  const res = await page.goto(url, { timeout: 15000 });
  assert.equal(res.status(), 200, `GET ${url}`);
  await page.waitForSelector("#summary:not([data-status=running])", { timeout: 60000 });
  return page.evaluate(() => window.selftest);
}
const failures = (r) => r.results.filter((x) => x.status !== "pass").map((x) => `${x.id}: ${x.status} ${x.reason}`);

describe("self-test page", () => {
  let server, nginx, apache, browser;
  before(async () => {
    server = await new Server().init();
    await server.start();
    nginx = await new Nginx().start(`
    # Wrong on purpose: no proxy_http_version 1.1 and no Upgrade/Connection headers.
    location /socket { proxy_pass http://127.0.0.1:${server.port}; }
    # Right: the nginx set-up of docs/deployment.md, under a prefix.
    location /board/socket {
      proxy_pass http://127.0.0.1:${server.port}/socket;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }`);
    // An Apache set-up (2.4.47+: mod_proxy_http upgrades WebSockets itself).
    apache = await new Apache().start(`<Location "/socket">
    ProxyPass "http://127.0.0.1:${server.port}/socket" upgrade=websocket
</Location>`);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await nginx?.stop();
    await apache?.stop();
    const how = await server?.stop();
    assert.equal(how, 0, `server exit: ${how}\n${server?.logTail()}`);
  });

  test("all checks pass against the server", async () => {
    const page = await browser.newPage(), errors = [];
    watchPage(page, errors);
    const r = await runSelftest(page, `${server.base}/socket/test`);
    await screenshot(page, "selftest.png");
    if (process.env.ZW_DOCS_SCREENSHOT) { // refreshes the picture of README and docs: docs/selftest.png
      await page.setViewportSize({ width: 860, height: 600 });
      await page.screenshot({ path: path.join(REPO, "docs/selftest.png"), fullPage: true });
    }
    assert.deepEqual(failures(r), []);
    assert.equal(r.status, "pass");
    assert.ok(r.results.length >= 13, `only ${r.results.length} checks`);
    // A real Chromium offers permessage-deflate and the server takes it.
    assert.match(r.results.find((x) => x.id === "compression").reason, /^negotiated/);
    assert.equal(await page.getAttribute("#summary", "data-status"), "pass");
    const rows = await page.$$eval("tr[data-check]", (trs) => trs.map((t) => t.dataset.status));
    assert.ok(rows.every((s) => s === "pass"), rows.join(","));
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("all checks pass through nginx set up for WebSockets, under a prefix", async () => {
    const page = await browser.newPage();
    const r = await runSelftest(page, `${nginx.base}/board/socket/test`);
    await screenshot(page, "selftest-nginx.png");
    assert.deepEqual(failures(r), []);
    assert.match(r.results.find((x) => x.id === "compression").reason, /^negotiated/); // passed through
    assert.match(r.results[0].reason, new RegExp(`ws://127\\.0\\.0\\.1:${nginx.port}/board/socket$`));
    await page.close();
  });

  test("all checks pass through Apache set up for WebSockets", async () => {
    const page = await browser.newPage();
    const r = await runSelftest(page, `${apache.base}/socket/test`);
    await screenshot(page, "selftest-apache.png");
    assert.deepEqual(failures(r), []);
    assert.match(r.results.find((x) => x.id === "compression").reason, /^negotiated/); // passed through
    await page.close();
  });

  test("a proxy without the Upgrade headers shows red with the reason", async () => {
    const page = await browser.newPage();
    const r = await runSelftest(page, `${nginx.base}/socket/test`);
    await screenshot(page, "selftest-broken-proxy.png");
    assert.equal(r.status, "fail");
    assert.equal(await page.getAttribute("#summary", "data-status"), "fail");
    const connect = r.results.find((x) => x.id === "connect");
    assert.equal(connect.status, "fail");
    assert.match(connect.reason, /WebSocket connection failed: the proxy may not forward the Upgrade header/);
    assert.match(await page.textContent("#hint"), /proxy_set_header Upgrade/);
    assert.ok(r.results.filter((x) => x.id !== "connect").every((x) => x.status === "skip"));
    await page.close();
  });

  test("the GET /socket text is unchanged and other paths are 404", async () => {
    const r = await fetch(`${server.base}/socket`);
    assert.equal(await r.text(), "Zwibbler collaboration Server is running.");
    assert.equal((await fetch(`${server.base}/socket/other`)).status, 404);
    const page = await fetch(`${server.base}/socket/test`);
    assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(page.headers.get("cache-control"), "no-store");
    assert.match(page.headers.get("content-security-policy"), /default-src 'none'.*connect-src 'self'/);
  });
});

describe("pages switched off", () => {
  let server;
  before(async () => { server = await new Server({ TestPage: "false", DemoPage: "off" }).init(); await server.start(); });
  after(async () => { await server?.stop(); });

  test("TestPage=false and DemoPage=off answer 404", async () => {
    assert.equal((await fetch(`${server.base}/socket/test`)).status, 404);
    assert.equal((await fetch(`${server.base}/socket/demo`)).status, 404);
    assert.equal((await fetch(`${server.base}/socket`)).status, 200);
  });
});

describe("over HTTPS", () => {
  let server, browser;
  before(async () => {
    // A throwaway self-signed certificate; the browser context is told to accept it.
    const d = tmpDir("tls"), cert = path.join(d, "cert.pem"), key = path.join(d, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore", timeout: 20000 });
    server = await new Server({ CertFile: cert, KeyFile: key }).init();
    server.scheme = "https";
    await server.start();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("the page served over https:// tests wss:// and passes", async () => {
    const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
    const r = await runSelftest(page, `${server.base}/socket/test`);
    await screenshot(page, "selftest-https.png");
    assert.deepEqual(failures(r), []);
    assert.match(r.results[0].reason, /^upgraded wss:\/\/127\.0\.0\.1:\d+\/socket$/);
    assert.match(r.results.find((x) => x.id === "compression").reason, /^negotiated/);
  });
});

describe("with JWTKey set", () => {
  let server, browser;
  before(async () => {
    server = await new Server({ JWTKey: "browser-test-key" }).init();
    await server.start();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("the self-test says plain ids are refused, and the demo stops retrying", async () => {
    const page = await browser.newPage();
    const r = await runSelftest(page, `${server.base}/socket/test`);
    assert.equal(r.results.find((x) => x.id === "connect").status, "pass");
    assert.match(r.results.find((x) => x.id === "create").reason, /ERROR 4 \(access denied\).*JWTKey/);
    await page.goto(`${server.base}/socket/demo`, { timeout: 15000 });
    await page.waitForSelector("#status[data-conn=denied]", { timeout: 10000 });
    await page.close();
  });
});
