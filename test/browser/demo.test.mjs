// The demo board /socket/demo in headless Chromium: two users draw at once and see
// each other's strokes, presence and cursor; the server is restarted while they draw,
// both reconnect and nothing drawn is lost or doubled, here or in the stored document.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { launchBrowser, screenshot, Server, sleep, watchPage } from "./lib.mjs";

const state = (page) => page.evaluate(() => window.demo.state());

// Polls every page's state until pred holds for all, or fails with the last states.
async function until(pages, pred, what, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await Promise.all(pages.map(state));
    if (last.every(pred)) return last;
    if (Date.now() > end) {
      const brief = last.map(({ ids, ...s }) => ({ ...s, ids: ids.length }));
      assert.fail(`${what} not reached within ${ms} ms: ${JSON.stringify(brief)}`);
    }
    await sleep(100);
  }
}

// One stroke: a pointer drag across the canvas, starting at a spot chosen by n.
async function drawStroke(page, n) {
  const box = await page.locator("#canvas").boundingBox();
  const x = box.x + 40 + ((n * 379) % (box.width - 200)), y = box.y + 40 + ((n * 211) % (box.height - 120));
  await page.mouse.move(x, y);
  await page.mouse.down();
  for (let i = 1; i <= 6; i++) await page.mouse.move(x + i * 20, y + Math.sin(i + n) * 25, { steps: 2 });
  await page.mouse.up();
}
async function drawMany(page, from, count, pauseMs) {
  for (let i = 0; i < count; i++) { await drawStroke(page, from + i); await sleep(pauseMs); }
}

// The document as the server stores it, read with a fresh connection (INIT mode 1,
// offset 0; the first APPEND carries it all) from a page of that server.
async function storedStrokeIds(page, docId) {
  const text = await page.evaluate((docId) => new Promise((resolve, reject) => {
    const enc = new TextEncoder(), id = enc.encode(docId);
    // type 1, more 0, version 3, maxMessageSize 0, mode 1, generation 0, offset 0, id
    const m = new Uint8Array(25 + id.length), dv = new DataView(m.buffer);
    m[0] = 1; dv.setUint16(2, 3); m[8] = 1; dv.setUint32(21, id.length); m.set(id, 25);
    const ws = new WebSocket(location.href.replace(/^http/, "ws").replace(/\/demo.*$/, ""));
    ws.binaryType = "arraybuffer";
    const parts = [];
    const timer = setTimeout(() => reject(new Error("no document within 10 s")), 10000);
    ws.onopen = () => ws.send(m);
    ws.onmessage = (e) => {
      const u = new Uint8Array(e.data);
      parts.push(parts.length ? u.subarray(2) : u);
      if (u[1]) return; // continuations follow
      clearTimeout(timer); ws.close();
      const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0; for (const p of parts) { all.set(p, o); o += p.length; }
      if (all[0] !== 5) return reject(new Error(`got message type ${all[0]}`));
      resolve(new TextDecoder().decode(all.subarray(14)));
    };
    ws.onclose = () => reject(new Error("closed"));
  }), docId);
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l).id);
}

describe("demo board", () => {
  let server, browser, pa, pb;
  const errors = [], doc = "browser-test-" + randomBytes(4).toString("hex");
  before(async () => {
    server = await new Server().init();
    await server.start();
    browser = await launchBrowser();
    // Two contexts: two users who share nothing but the server.
    pa = await (await browser.newContext({ viewport: { width: 1100, height: 760 } })).newPage();
    pb = await (await browser.newContext({ viewport: { width: 1100, height: 760 } })).newPage();
    for (const p of [pa, pb]) watchPage(p, errors);
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test("two users draw together: strokes, presence and cursor", async () => {
    await pa.goto(`${server.base}/socket/demo?doc=${doc}&name=Alice`, { timeout: 15000 });
    await pb.goto(`${server.base}/socket/demo?doc=${doc}&name=Bob`, { timeout: 15000 });
    await until([pa, pb], (s) => s.ready && s.peers.length === 1, "both connected and seeing one peer");
    const [sa, sb] = await Promise.all([state(pa), state(pb)]);
    assert.equal(sa.peers[0].name, "Bob");
    assert.equal(sb.peers[0].name, "Alice");
    assert.equal(await pa.locator("[data-peer]").count(), 1);

    // Both at once, so some appends race and are NACKed, caught up and retried.
    await Promise.all([drawMany(pa, 0, 5, 30), drawMany(pb, 100, 5, 30)]);
    const done = await until([pa, pb], (s) => s.strokes === 10 && s.pending === 0, "10 strokes on both boards");
    assert.deepEqual(done[0].ids, done[1].ids, "both boards hold the strokes in the same order");

    // B's pointer over the canvas shows on A's board.
    const box = await pb.locator("#canvas").boundingBox();
    await pb.mouse.move(box.x + 300, box.y + 200, { steps: 5 });
    const bId = await pb.evaluate(() => window.demo.me.id);
    await until([pa], (s) => s.cursors.includes(bId), "B's cursor on A's board", 5000);

    await screenshot(pa, "demo-alice.png");
    await screenshot(pb, "demo-bob.png");
    assert.deepEqual(errors, []);
  });

  test("a stroke refused at a stale offset (NACK) is caught up and retried", async () => {
    // A third user whose incoming messages are held back for a moment, so it draws
    // on a document it does not know has grown: the server must NACK its append.
    const pc = await (await browser.newContext({ viewport: { width: 1100, height: 760 } })).newPage();
    watchPage(pc, errors);
    let hold = false, route = null;
    const held = [];
    await pc.routeWebSocket(/\/socket$/, (ws) => {
      const srv = ws.connectToServer();
      route = ws;
      ws.onMessage((m) => srv.send(m));
      srv.onMessage((m) => (hold ? held.push(m) : ws.send(m)));
    });
    const n = (await state(pa)).strokes;
    await pc.goto(`${server.base}/socket/demo?doc=${doc}&name=Carol`, { timeout: 15000 });
    await until([pc], (s) => s.ready && s.strokes === n, "C connected and caught up");
    hold = true;
    await drawStroke(pb, 50);
    await until([pa], (s) => s.strokes === n + 1, "B's stroke committed");
    await drawStroke(pc, 60);
    // Wait for the server's answer to C's append (type 0x81), held like the rest.
    for (const end = Date.now() + 5000; !held.some((m) => typeof m !== "string" && m[0] === 0x81);) {
      assert.ok(Date.now() < end, `no answer to C's append held within 5 s (${held.length} held)`);
      await sleep(50);
    }
    // Held messages go out in order: B's APPEND, then the NACK.
    for (const m of held.splice(0)) route.send(m);
    hold = false;
    const done = await until([pa, pb, pc], (s) => s.strokes === n + 2 && s.pending === 0, `${n + 2} strokes everywhere`, 20000);
    assert.ok(done[2].nacks >= 1, "C's stroke was NACKed");
    assert.deepEqual(done[2].ids, done[0].ids);
    await pc.context().close();
    await until([pa, pb], (s) => s.peers.length === 1, "C gone from presence", 10000);
  });

  test("the server restarts mid-drawing: both reconnect, nothing is lost", async () => {
    const before = (await state(pa)).strokes;
    // Each draws 8 strokes over about 3 s; the server goes down after about 0.7 s and is
    // back about 1 s later, so some strokes are drawn while it is away.
    const drawing = Promise.all([drawMany(pa, 200, 8, 250), drawMany(pb, 300, 8, 250)]);
    await sleep(700);
    assert.equal(await server.stop(), 0, "server exit status after SIGTERM");
    await until([pa, pb], (s) => !s.ready, "both pages noticing the server is gone", 10000);
    await sleep(1000);
    await server.start();
    await drawing;
    const end = await until([pa, pb], (s) => s.ready && s.pending === 0 && s.strokes === before + 16,
      `${before + 16} strokes on both boards after the restart`, 30000);
    assert.deepEqual(end[0].ids, end[1].ids);
    assert.equal(new Set(end[0].ids).size, end[0].ids.length, "no stroke twice");
    assert.ok(end.every((s) => s.connects >= 2), "both pages reconnected");
    await until([pa, pb], (s) => s.peers.length === 1, "presence again after the restart", 10000);

    const stored = await storedStrokeIds(pa, doc);
    assert.deepEqual(stored, end[0].ids, "the stored document holds exactly the strokes on the boards");
    await screenshot(pa, "demo-after-restart.png");
  });
});
