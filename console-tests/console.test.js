// Browser tests of the web console: a real `dronedelivery` process (embedded
// backends, fast simulation) on a free port, driven through headless Debian
// Chromium by Playwright, the way a person would use it.
//
//   node --test console.test.js                          # from console-tests/
//   node --test console.test.js -- --update-readme-shots # also refresh docs/console/*.png
//
// Environment:
//   DD_BIN             the binary (default ../target/debug/dronedelivery)
//   CHROMIUM           the browser (default /usr/bin/chromium)
//   CONSOLE_ARTIFACTS  where screenshots go (default ./artifacts)
//   UPDATE_README_SHOTS=1  same as --update-readme-shots
//
// Every screenshot is saved in the artifacts folder; with the flag the four
// shown in README.md are copied to docs/console/.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { generateKeyPairSync, sign as signBytes } from "node:crypto";
import { copyFile, mkdir, readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..");
const BIN = process.env.DD_BIN ?? join(ROOT, "target", "debug", "dronedelivery");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = resolve(process.env.CONSOLE_ARTIFACTS ?? join(HERE, "artifacts"));
const README_SHOTS = join(ROOT, "docs", "console");
const UPDATE_README = process.argv.includes("--update-readme-shots") || process.env.UPDATE_README_SHOTS === "1";
const TOKEN = "console-test-token";
const FLEET_SIZE = 20;
/** Deliveries sent besides the tracked one: more than there are drones, so some wait and some are given up (dead letters). */
const EXTRA_DELIVERIES = 32;
const VIEWPORT = { width: 1280, height: 900 };

/** The engine under test, and what the browser saw go wrong. */
const engine = { process: null, url: null, log: [] };
const problems = [];
let browser;
let context;
let page;

// --------------------------------------------------------------- helpers

/** Starts the binary on a free port; resolves once it logs its address. */
function startEngine() {
  return startProcess(engine, [
    "--admin-token", TOKEN,
    "--fleet-size", String(FLEET_SIZE),
    "--sim-speed", "150",
    "--tick-ms", "100",
    "--max-drone-wait-secs", "3",
    "--retry-delay-ms", "50",
  ]);
}

/** Starts `dronedelivery serve` with `extra` arguments into `engine` ({process, url, log}). */
function startProcess(engine, extra) {
  const args = ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", ...extra];
  const child = spawn(BIN, args, {
    env: { ...process.env, RUST_LOG: "info", NO_COLOR: "1" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  engine.process = child;
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`the engine did not start within 60 s:\n${engine.log.join("\n")}`)), 60_000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new Error(`could not run ${BIN}: ${e.message} (build it with cargo build -p dronedelivery-engine)`));
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the engine exited with ${code}:\n${engine.log.join("\n")}`));
    });
    createInterface({ input: child.stderr }).on("line", (line) => {
      engine.log.push(line);
      if (engine.log.length > 2000) engine.log.shift();
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.fields?.message === "listening" && entry.fields.address) {
        clearTimeout(timer);
        engine.url = `http://${entry.fields.address}`;
        resolvePromise();
      }
    });
  });
}

async function stopEngine(target = engine) {
  const child = target.process;
  if (!child || child.exitCode !== null) return;
  child.removeAllListeners("exit");
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timeout = new Promise((r) => setTimeout(() => r("timeout"), 25_000));
  if ((await Promise.race([exited, timeout])) === "timeout") child.kill("SIGKILL");
}

async function shot(name, { readme, fullPage = true, target = page } = {}) {
  const file = join(ARTIFACTS, `${name}.png`);
  await target.screenshot({ path: file, fullPage });
  if (readme && UPDATE_README) {
    await mkdir(README_SHOTS, { recursive: true });
    await copyFile(file, join(README_SHOTS, `${readme}.png`));
  }
}

async function apiJson(path, init = {}) {
  const res = await fetch(`${engine.url}${path}`, init);
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** A small deterministic generator, so every run sends the same load. */
function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Delivery requests between points of the default service area. */
async function sendLoad(count) {
  const next = random(42);
  const point = () => `${(47.47 + next() * 0.26).toFixed(4)},${(-122.43 + next() * 0.36).toFixed(4)}`;
  const ids = [];
  for (let i = 0; i < count; i++) {
    const res = await apiJson("/api/deliveryrequests", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        ownerId: "console-test",
        pickupLocation: point(),
        dropOffLocation: point(),
        confirmationRequired: "None",
        deadline: "",
        expedited: i % 3 === 0,
        packageInfo: { packageId: `console-${i}`, size: "Small", weight: 2, tag: "load" },
      }),
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    ids.push(res.body.deliveryId);
  }
  return ids;
}

/** Records what goes wrong in `target`'s page: script errors and console errors. */
function watch(target) {
  target.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  target.on("console", (m) => {
    // Chromium logs every 4xx answer to a fetch; the pages ask for unknown
    // deliveries and wrong tokens on purpose and show those answers.
    const expected = /^Failed to load resource: the server responded with a status of (401|403|404)/;
    if (m.type() === "error" && !expected.test(m.text())) problems.push(`console error on ${target.url()}: ${m.text()}`);
  });
}

// ------------------------------------------------- a local token issuer

const AUDIENCE = "api://dronedelivery";
const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/**
 * An OpenID Connect issuer on a free port: its discovery document and key
 * set (one P-256 key made here), and ES256 tokens signed with that key.
 */
async function startIssuer() {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "console-key", alg: "ES256", use: "sig" };
  const server = createServer((req, res) => {
    const documents = {
      "/.well-known/openid-configuration": { issuer: issuer.url, jwks_uri: `${issuer.url}/keys` },
      "/keys": { keys: [jwk] },
    };
    const doc = documents[req.url];
    res.writeHead(doc ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(doc ?? {}));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const issuer = {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => server.close(r)),
    /** A token for `owner` with `roles`, valid for `ttl` seconds. */
    token(owner, roles = [], ttl = 600) {
      const now = Math.floor(Date.now() / 1000);
      const input = `${b64url({ alg: "ES256", typ: "JWT", kid: jwk.kid })}.${b64url({
        iss: issuer.url,
        aud: AUDIENCE,
        sub: owner,
        roles,
        iat: now,
        nbf: now - 5,
        exp: now + ttl,
      })}`;
      const signature = signBytes("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
      return `${input}.${signature.toString("base64url")}`;
    },
  };
  return issuer;
}

/** Every form control has a label (axe checks more; this needs nothing installed). */
async function assertLabelled() {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((c) => c.type !== "hidden")
      .filter((c) => c.labels.length === 0 && !c.getAttribute("aria-label") && !c.getAttribute("aria-labelledby"))
      .map((c) => c.id || c.name || c.outerHTML),
  );
  assert.deepEqual(unlabelled, [], "form controls without a label");
}

let axeSource = null;

/** Runs axe-core (WCAG 2 A and AA rules) on the current page. */
async function assertAccessible(what) {
  await assertLabelled();
  if (axeSource === null) {
    const require = createRequire(import.meta.url);
    axeSource = await readFile(require.resolve("axe-core/axe.min.js"), "utf8");
  }
  // Evaluated through the DevTools protocol, which the page's CSP does not
  // govern, so the page keeps its real policy.
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  const violations = result.violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.map((n) => n.target.join(" ")).slice(0, 5).join("\n    ")}`,
  );
  assert.deepEqual(violations, [], `${what}: accessibility violations`);
}

/** No horizontal scrolling at the current viewport width. */
async function assertFitsWidth(what) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  assert.ok(scroll <= width + 1, `${what}: ${scroll}px wide in a ${width}px viewport`);
}

// ----------------------------------------------------------------- tests

describe("web console", { timeout: 300_000 }, () => {
  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    await startEngine();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    context = await browser.newContext({ viewport: VIEWPORT, locale: "en-GB", timezoneId: "UTC" });
    page = await context.newPage();
    watch(page);
  });

  after(async () => {
    await browser?.close();
    await stopEngine();
  });

  test("pages are served with a strict CSP and without errors", async () => {
    for (const path of ["/console", "/console/fleet", "/console/ops", "/console/track/x"]) {
      const res = await page.goto(`${engine.url}${path}`);
      assert.equal(res.status(), 200, path);
      assert.match(res.headers()["content-type"], /^text\/html/);
      assert.match(res.headers()["content-security-policy"], /script-src 'self'/);
    }
    const res = await page.goto(`${engine.url}/console/assets/no-such-file.js`);
    assert.equal(res.status(), 404);
  });

  let deliveryId;

  test("home: keyboard first, labelled, sends the example delivery", async () => {
    await page.goto(`${engine.url}/console`);
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent.trim()), "Skip to content");
    await page.waitForFunction(() => document.getElementById("engine-ready").textContent === "ready");
    await assertAccessible("home");
    await page.click("#request-details summary");
    const preview = JSON.parse(await page.textContent("#request-preview"));
    assert.equal(preview.ownerId, "myowner");
    assert.equal(preview.packageInfo.packageId, "mypackage");
    assert.equal(preview.expedited, true);
    await shot("01-home-request", { fullPage: true });
    await page.click("#request-details summary");
    await shot("01-home", { readme: "home", fullPage: false });
    await Promise.all([page.waitForURL(/\/console\/track\/[^/?]+/), page.click("#send")]);
    deliveryId = decodeURIComponent(new URL(page.url()).pathname.split("/").pop());
    assert.match(deliveryId, /^[0-9a-f-]{36}$/);
  });

  test("track: the delivery moves live and reaches Completed", async () => {
    await page.waitForSelector("#tracking:not([hidden])");
    assert.equal(await page.textContent("#delivery-id"), deliveryId);
    await page.waitForSelector('#live[data-state="live"], #live[data-state="finished"]');
    // In flight: the drone is drawn and an ETA counts down.
    await page.waitForSelector('#stage[data-stage="HeadedToPickup"], #stage[data-stage="HeadedToDropoff"]', { timeout: 30_000 });
    await page.waitForSelector("#plan .drone", { timeout: 30_000 });
    await page.waitForFunction(() => /^in /.test(document.getElementById("delivery-eta").textContent), null, { timeout: 30_000 });
    // Live: the drone closes in on the drop-off while the page watches.
    const distance = () =>
      page.evaluate(() => {
        const m = /([\d.]+) km from the drop-off/.exec(document.getElementById("plan-text").textContent);
        return m ? Number(m[1]) : null;
      });
    await page.waitForFunction(() => /km from the drop-off/.test(document.getElementById("plan-text").textContent), null, { timeout: 30_000 });
    const start = await distance();
    await page.waitForFunction(
      (from) => {
        const m = /([\d.]+) km from the drop-off/.exec(document.getElementById("plan-text").textContent);
        return m && Number(m[1]) <= from * 0.6;
      },
      start,
      { timeout: 60_000 },
    );
    await shot("02-track-in-flight", { readme: "track", fullPage: false });
    await assertAccessible("track");
    await page.waitForSelector('#stage[data-stage="Completed"]', { timeout: 120_000 });
    await page.waitForSelector('#live[data-state="finished"]');
    const stages = await page.$$eval("#timeline li", (items) => items.map((li) => `${li.dataset.stage}:${li.dataset.state}`));
    assert.deepEqual(stages, ["Created:done", "HeadedToPickup:done", "HeadedToDropoff:done", "Completed:done"]);
    assert.match(await page.textContent("#delivery-eta"), /^delivered at /);
    // The example's deadline is empty: none.
    assert.equal(await page.textContent("#deadline"), "none");
    const status = await apiJson(`/api/deliveries/${deliveryId}/status`);
    assert.equal(status.body.stageName, "Completed");
    assert.equal(status.body.deadline, null);
    await shot("03-track-completed");
  });

  test("track: readable on a phone", async () => {
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
    const small = await phone.newPage();
    const saved = page;
    page = small;
    try {
      await page.goto(`${engine.url}/console/track/${deliveryId}`);
      await page.waitForSelector('#stage[data-stage="Completed"]');
      await assertFitsWidth("track on a phone");
      await shot("04-track-phone");
      await page.goto(`${engine.url}/console/fleet`);
      await page.waitForSelector("#drones tbody tr");
      await assertFitsWidth("fleet on a phone");
      await page.goto(`${engine.url}/console/ops`);
      await assertFitsWidth("ops on a phone");
    } finally {
      page = saved;
      await phone.close();
    }
  });

  test("fleet: every drone is listed and moving, with stage counts and throughput", async () => {
    await page.goto(`${engine.url}/console/fleet`);
    // The load arrives while the page watches: throughput shows it.
    await page.waitForFunction(() => document.getElementById("rate-accepted").textContent !== "—");
    await sendLoad(EXTRA_DELIVERIES);
    await page.waitForFunction(() => Number(document.getElementById("rate-accepted").textContent) > 0, null, { timeout: 15_000 });
    await page.waitForFunction((n) => document.querySelectorAll("#drones tbody tr").length === n, FLEET_SIZE);
    await page.waitForFunction(() => document.querySelectorAll("#plan .drone").length > 0);
    assert.equal(await page.locator("#plan .depot").count(), 4);
    // Drones take the load: some fly, the rest wait.
    await page.waitForFunction(() => Number(document.getElementById("count-pickup").textContent) + Number(document.getElementById("count-dropoff").textContent) > 0);
    const first = await page.$$eval("#plan .drone", (gs) => gs.map((g) => g.style.transform).join());
    await page.waitForFunction((before) => [...document.querySelectorAll("#plan .drone")].map((g) => g.style.transform).join() !== before, first, { timeout: 10_000 });
    assert.ok(Number((await page.textContent("#count-completed")).replace(/\D/g, "")) >= 1);
    const battery = await page.textContent('#drones tbody tr[data-drone="drone-0000"] td:nth-of-type(2)');
    assert.match(battery, /^\d+ %$/);
    await page.check("#busy-only");
    const hidden = await page.locator("#drones tbody tr[hidden]").count();
    assert.ok(hidden < FLEET_SIZE);
    await page.uncheck("#busy-only");
    await assertAccessible("fleet");
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("05-fleet", { readme: "fleet", fullPage: false });
    await shot("05-fleet-full");
  });

  test("ops: token, supervision tree, restart with a confirm step, dead letter replay", async () => {
    await page.goto(`${engine.url}/console/ops`);
    assert.equal(await page.isVisible("#admin"), false);
    // A wrong token is refused and forgotten.
    await page.fill("#token", "wrong");
    await page.click('#token-form button[type="submit"]');
    await page.waitForFunction(() => /refused/.test(document.getElementById("auth-state").textContent));
    assert.equal(await page.evaluate(() => sessionStorage.getItem("dronedelivery.adminToken")), null);
    await page.fill("#token", TOKEN);
    await page.press("#token", "Enter");
    await page.waitForSelector("#admin:not([hidden])");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("dronedelivery.adminToken")), TOKEN);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    // The cluster: this engine alone, holding every partition.
    await page.waitForSelector("#engines tbody tr");
    const engines = await page.$$eval("#engines tbody tr", (trs) =>
      trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())),
    );
    assert.equal(engines.length, 1);
    assert.equal(engines[0][1], "16");
    assert.equal(engines[0][2], "0–15");
    assert.match(await page.textContent("#engines tbody th"), /this engine/);
    assert.match(await page.textContent("#cluster-summary"), /1 engine, 16 partitions/);
    const names = await page.$$eval("#tree li", (lis) => lis.map((li) => li.dataset.supervisor));
    assert.deepEqual(names, ["root", "fleet", "deliveries", "consumers", "workflow"]);
    const restarts = () => page.textContent('li[data-supervisor="fleet"] > .node dd[data-field="restarts"]').then(Number);
    const before = await restarts();

    // Escape cancels: nothing is restarted.
    await page.click('button[data-restart="fleet"]');
    await page.waitForSelector("#confirm[open]");
    await page.keyboard.press("Escape");
    await page.waitForSelector("#confirm", { state: "hidden" });
    assert.equal(await page.evaluate(() => document.activeElement.dataset.restart), "fleet");

    // Confirmed: restarted, and the count goes up.
    await page.click('button[data-restart="fleet"]');
    await page.waitForSelector("#confirm[open]");
    assert.match(await page.textContent("#confirm-title"), /Restart fleet\?/);
    await shot("06-ops-confirm", { fullPage: false });
    await page.click("#confirm-ok");
    await page.waitForFunction(() => /fleet restarted/.test(document.getElementById("ops-status").textContent), null, { timeout: 30_000 });
    await page.waitForFunction(
      (n) => Number(document.querySelector('li[data-supervisor="fleet"] > .node dd[data-field="restarts"]').textContent) > n,
      before,
      { timeout: 15_000 },
    );

    // Deliveries that waited too long for a drone were dead-lettered.
    await page.waitForSelector("#dead-letters tbody tr", { timeout: 30_000 });
    await assertAccessible("ops");
    await shot("07-ops", { readme: "ops", fullPage: true });
    assert.match(await page.textContent("#dead-letters tbody tr td:nth-of-type(2)"), /compensated|gave up/);
    const id = await page.getAttribute("#dead-letters tbody tr", "data-letter");
    await page.click(`button[data-replay="${id}"]`);
    await page.waitForSelector("#confirm[open]");
    await page.click("#confirm-ok");
    await page.waitForFunction((msg) => document.getElementById("ops-status").textContent.includes(msg), `Message ${id} is back on the queue`);
  });

  test("ops on a gateway: every engine listed, a worker's supervisor restarted through the gateway", async () => {
    // The split layout on Redis: one worker, one gateway (no actors of its
    // own); the page is served by the gateway.
    const redis = process.env.DD_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
    const common = [
      "--queue", "redis-streams",
      "--redis-url", redis,
      "--redis-prefix", `console-${process.pid}-${Date.now()}`,
      "--admin-token", TOKEN,
      "--fleet-size", "4",
      "--lease-secs", "2",
      "--sim-speed", "2000",
      "--tick-ms", "50",
    ];
    const worker = { process: null, url: null, log: [] };
    const gateway = { process: null, url: null, log: [] };
    try {
      await startProcess(worker, ["--role", "worker", ...common]);
      await startProcess(gateway, ["--role", "gateway", ...common]);
      await page.goto(`${gateway.url}/console/ops`);
      await page.fill("#token", TOKEN);
      await page.press("#token", "Enter");
      await page.waitForSelector("#admin:not([hidden])");
      // Both engines, with their roles; the gateway shows the worker's tree.
      await page.waitForFunction(() => document.querySelectorAll("#engines tbody tr").length === 2, null, { timeout: 15_000 });
      const rows = await page.$$eval("#engines tbody tr", (trs) =>
        trs.map((tr) => ({ id: tr.dataset.engine, cells: [...tr.cells].map((c) => c.textContent.trim()) })),
      );
      const roles = rows.map((r) => r.cells[3]).sort();
      assert.deepEqual(roles, ["gateway", "worker"]);
      const workerId = rows.find((r) => r.cells[3] === "worker").id;
      const gatewayRow = rows.find((r) => r.cells[3] === "gateway");
      assert.match(gatewayRow.cells[0], /this engine/);
      await page.waitForSelector(`button[data-engine-tree="${workerId}"][aria-pressed="true"]`);
      assert.match(await page.textContent("#tree-engine"), new RegExp(`of ${workerId} \\(worker\\)`));
      await page.waitForSelector('li[data-supervisor="fleet"]');
      const restarts = () => page.textContent('li[data-supervisor="fleet"] > .node dd[data-field="restarts"]').then(Number);
      const before = await restarts();

      // Restart the worker's fleet from the gateway's page.
      await page.click('button[data-restart="fleet"]');
      await page.waitForSelector("#confirm[open]");
      assert.match(await page.textContent("#confirm-text"), new RegExp(`on engine ${workerId}`));
      await page.click("#confirm-ok");
      await page.waitForFunction(
        (id) => document.getElementById("ops-status").textContent.includes(`fleet restarted on engine ${id}`),
        workerId,
        { timeout: 30_000 },
      );
      await page.waitForFunction(
        (n) => Number(document.querySelector('li[data-supervisor="fleet"] > .node dd[data-field="restarts"]').textContent) > n,
        before,
        { timeout: 15_000 },
      );
      // The worker itself counts the restart.
      const tree = await fetch(`${worker.url}/admin/supervisors`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
      assert.equal(tree.engine, workerId);
      assert.equal(tree.supervisors.find((s) => s.name === "fleet").restarts, before + 1);
      await assertAccessible("ops on a gateway");
      await shot("09-ops-gateway", { fullPage: true });

      // The gateway's fleet page shows what the worker completed.
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${gateway.url}/api/deliveryrequests`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            ownerId: "console-split",
            pickupLocation: "47.6,-122.3",
            dropOffLocation: "47.62,-122.32",
            confirmationRequired: "None",
            deadline: "",
            expedited: false,
            packageInfo: { packageId: `console-split-${i}`, size: "Small", weight: 2, tag: "split" },
          }),
        });
        assert.equal(res.status, 202);
      }
      await page.goto(`${gateway.url}/console/fleet`);
      await page.waitForFunction(() => Number(document.getElementById("count-completed").textContent) >= 3, null, { timeout: 30_000 });
      await page.waitForFunction(() => Number(document.getElementById("rate-completed").textContent) > 0, null, { timeout: 15_000 });
    } finally {
      // Leave the page first: its polling would report the stopped engine.
      await page.goto("about:blank");
      await stopEngine(gateway);
      await stopEngine(worker);
    }
  });

  test("track: a booked pickup is Scheduled, and a passed deadline shows at risk", async () => {
    const pickup = new Date(Date.now() + 24 * 3600 * 1000).toISOString();
    const res = await apiJson("/api/deliveryrequests", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        ownerId: "console-booked",
        pickupLocation: "47.61,-122.25",
        dropOffLocation: "47.62,-122.25",
        pickupTime: pickup,
        confirmationRequired: "None",
        deadline: "2020-01-01T00:00:00Z",
        expedited: false,
        packageInfo: { packageId: "console-booked", size: "Small", weight: 2, tag: "booked" },
      }),
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    await page.goto(`${engine.url}/console/track/${res.body.deliveryId}`);
    await page.waitForSelector('#stage[data-stage="Scheduled"]', { timeout: 15_000 });
    await page.waitForSelector('#at-risk[data-risk="yes"]', { timeout: 15_000 });
    assert.match(await page.textContent("#at-risk"), /passed before delivery/);
    assert.match(await page.textContent("#pickup-eta"), /^booked for /);
    const stages = await page.$$eval("#timeline li", (items) => items.map((li) => `${li.dataset.stage}:${li.dataset.state}`));
    assert.deepEqual(stages, ["Scheduled:current", "Created:upcoming", "HeadedToPickup:upcoming", "HeadedToDropoff:upcoming", "Completed:upcoming"]);
    const status = await apiJson(`/api/deliveries/${res.body.deliveryId}/status`);
    assert.equal(status.body.atRisk, true);
    assert.equal(new Date(status.body.scheduledFor).toISOString(), pickup);
    await assertAccessible("booked");
    await shot("09-track-booked-at-risk", { fullPage: false });
    await page.goto(`${engine.url}/console/fleet`);
    await page.waitForFunction(() => Number(document.getElementById("count-at-risk").textContent) >= 1, null, { timeout: 15_000 });
  });

  test("track: an unknown id is said to be unknown", async () => {
    await page.goto(`${engine.url}/console/track/no-such-delivery`);
    await page.waitForSelector("#not-found:not([hidden])", { timeout: 15_000 });
    assert.equal(await page.textContent("#not-found-id"), "no-such-delivery");
    assert.equal(await page.isVisible("#tracking"), false);
    await assertAccessible("not found");
    await shot("08-track-unknown", { fullPage: false });
  });

  test("with authentication on: sign in, see only what the token may see, tracked live with the token", async () => {
    const issuer = await startIssuer();
    const secured = { process: null, url: null, log: [] };
    const signedIn = await browser.newContext({ viewport: VIEWPORT, locale: "en-GB", timezoneId: "UTC" });
    const saved = page;
    page = await signedIn.newPage();
    watch(page);
    const alice = issuer.token("alice");
    const bob = issuer.token("bob");
    const dispatcher = issuer.token("desk", ["Dispatcher"]);
    const operator = issuer.token("ops", ["Operator"]);
    const storedToken = () => page.evaluate(() => sessionStorage.getItem("dronedelivery.token"));
    /** Signs in through the header's dialog (opened already, or opened with its button). */
    const signIn = async (token) => {
      if (!(await page.isVisible("#session-dialog[open]"))) await page.click("#sign-in");
      await page.fill("#session-token", token);
      await Promise.all([page.waitForEvent("load"), page.click("#session-submit")]);
      await page.waitForSelector("#session-who");
    };
    const signOut = () => Promise.all([page.waitForEvent("load"), page.click("#sign-out")]);
    try {
      await startProcess(secured, [
        "--auth-mode", "jwt",
        "--auth-issuer", issuer.url,
        "--auth-audience", AUDIENCE,
        "--auth-leeway-secs", "0",
        "--fleet-size", "6",
        "--sim-speed", "60",
        "--tick-ms", "100",
      ]);
      const base = secured.url;

      // No token: the home page asks for one; a bad one is refused and not kept.
      await page.goto(`${base}/console`);
      await page.waitForSelector("#session-dialog[open]");
      await assertAccessible("sign-in dialog");
      await shot("10-sign-in", { fullPage: false });
      await page.fill("#session-token", "not-a-token");
      await page.click("#session-submit");
      await page.waitForFunction(() => /refused this token/.test(document.getElementById("session-error").textContent));
      assert.equal(await storedToken(), null);

      // Alice signs in: the tab keeps her token (and nothing else does), the
      // header says who she is to the engine, the request is hers.
      await signIn(alice);
      assert.equal(await page.textContent("#session-who"), "alice · no roles");
      assert.equal(await storedToken(), alice);
      assert.equal(await page.evaluate(() => localStorage.length), 0);
      assert.equal((await signedIn.cookies()).length, 0);
      await page.click("#request-details summary");
      assert.equal(JSON.parse(await page.textContent("#request-preview")).ownerId, "alice");
      await Promise.all([page.waitForURL(/\/console\/track\/[^/?]+/), page.click("#send")]);
      const aliceDelivery = decodeURIComponent(new URL(page.url()).pathname.split("/").pop());

      // Her delivery is tracked live: the stream carries her token.
      await page.waitForSelector("#tracking:not([hidden])", { timeout: 30_000 });
      await page.waitForSelector('#live[data-state="live"], #live[data-state="finished"]', { timeout: 15_000 });
      await page.waitForSelector('#stage[data-stage="HeadedToPickup"], #stage[data-stage="HeadedToDropoff"]', { timeout: 60_000 });
      await page.waitForSelector("#plan .drone", { timeout: 30_000 });
      await assertAccessible("track, signed in");
      await shot("11-track-signed-in", { fullPage: false });

      // Bob's token does not find Alice's delivery; he sees the drones but not what they carry.
      await signOut();
      await signIn(bob);
      await page.goto(`${base}/console/track/${aliceDelivery}`);
      await page.waitForSelector("#not-found:not([hidden])", { timeout: 15_000 });
      await page.goto(`${base}/console/fleet`);
      await page.waitForSelector("#drones tbody tr");
      await page.waitForSelector("#fleet-scope:not([hidden])");
      await page.waitForSelector('#drones td [data-hidden="delivery"]', { timeout: 30_000 });
      assert.equal(await page.locator('#drones a[href^="/console/track/"]').count(), 0);
      await assertAccessible("fleet, owner token");
      // Nor may he use the operator page with his token.
      await page.goto(`${base}/console/ops`);
      await page.waitForFunction(() => /no Operator role/.test(document.getElementById("auth-state").textContent));
      assert.equal(await page.isVisible("#admin"), false);

      // A dispatcher sees which delivery each drone carries, and tracks any delivery.
      await signOut();
      await signIn(dispatcher);
      await page.goto(`${base}/console/fleet`);
      await page.waitForSelector(`#drones a[href="/console/track/${aliceDelivery}"]`, { timeout: 30_000 });
      assert.equal(await page.isVisible("#fleet-scope"), false);
      await page.goto(`${base}/console/track/${aliceDelivery}`);
      await page.waitForSelector("#tracking:not([hidden])", { timeout: 15_000 });

      // An operator uses the operations page without the admin token (this engine has none).
      await signOut();
      await signIn(operator);
      await page.goto(`${base}/console/ops`);
      await page.waitForSelector("#admin:not([hidden])", { timeout: 15_000 });
      assert.match(await page.textContent("#auth-state"), /Operator role/);
      await page.waitForSelector('li[data-supervisor="fleet"]');

      // A token that expires while a page is open is forgotten, and the page asks again.
      await signOut();
      await signIn(issuer.token("carol", [], 6));
      await page.goto(`${base}/console/fleet`);
      await page.waitForSelector("#drones tbody tr");
      await page.waitForSelector("#session-dialog[open]", { timeout: 30_000 });
      assert.match(await page.textContent("#session-error"), /refused the token/);
      assert.equal(await storedToken(), null);
      await page.waitForSelector("#sign-in");
    } finally {
      await page.goto("about:blank").catch(() => {});
      page = saved;
      await signedIn.close();
      await stopEngine(secured);
      await issuer.close();
    }
  });

  test("the browser reported no errors", () => {
    assert.deepEqual(problems, []);
  });
});
