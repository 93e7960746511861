import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium, type Browser, type Page } from "playwright-core";
import { startHttp, type HttpEdge } from "../gateway/http-server.js";
import { eventually, startTestNats, startTestNode } from "./harness.js";

const rules = `
metrics:
  - name: events
    kind: "*"
    groupBy: [site]
    aggregates: [count]
    window: 1m
    lateness: 1m
`;

let nats: Awaited<ReturnType<typeof startTestNats>> | undefined;
let running: Awaited<ReturnType<typeof startTestNode>> | undefined;
let browser: Browser | undefined;
let restartedHttp: HttpEdge | undefined;

before(async () => {
  nats = await startTestNats();
  running = await startTestNode(nats.url, rules);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  // Each step on its own, so one failure does not leak the rest.
  await browser?.close().catch((e: unknown) => console.error("browser close:", e));
  await restartedHttp?.close().catch((e: unknown) => console.error("http close:", e));
  await running?.cleanup().catch((e: unknown) => console.error("node cleanup:", e));
  await nats?.cleanup().catch((e: unknown) => console.error("nats cleanup:", e));
});

let seq = 0;
function events(ts: number, sites: string[]) {
  return sites.map((site) => ({
    source: `robot-${site}`,
    kind: "status",
    body: { id: `dash-${site}-${seq++}`, ts, tags: { site }, values: {} },
  }));
}

const attr = (page: Page, name: string) => page.locator("#chart").getAttribute(name).then(Number);

test("the dashboard loads history, goes live and charts WebSocket updates", async () => {
  const node = running!;
  const base = `http://127.0.0.1:${node.http.port}`;
  // Every event carries the same time, so all fall in one 1-minute window: points = sites.
  const ts = Date.now();

  // Some history before the page exists: it must come from the query endpoint.
  await node.node.publishEvents(events(ts, ["berlin", "berlin"]));
  await eventually(async () => {
    const res = await fetch(`${base}/v1/metrics/events?window=1m`);
    const body = (await res.json()) as { points: { eventCount: number }[] };
    return body.points.some((p) => p.eventCount === 2) ? true : undefined;
  }, 15_000, "the berlin window in the query API");

  const page = await browser!.newPage({ viewport: { width: 1200, height: 720 } });
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()} for ${r.url()}`);
  });
  try {
    await page.goto(`${base}/`);
    await page.locator("#conn").filter({ hasText: /^live$/ }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator("#metric").inputValue(), "events");
    assert.equal(await page.locator("#window").inputValue(), "1m");
    assert.equal(await page.locator("#aggregate").inputValue(), "count");

    // History arrived over HTTP: one point (berlin), and the chart is drawn.
    await page.waitForFunction(() => Number(document.querySelector("#chart")?.getAttribute("data-points")) >= 1, null, { timeout: 15_000 });
    const updatesBefore = await attr(page, "data-updates");

    await node.node.publishEvents(events(ts, ["berlin", "tokyo", "tokyo", "tokyo"]));
    await page.waitForFunction(
      (before) => Number(document.querySelector("#chart")?.getAttribute("data-updates")) > before,
      updatesBefore,
      { timeout: 15_000 },
    );
    // Merged by (start, dims): exactly one window per site.
    await page.waitForFunction(() => document.querySelector("#chart")?.getAttribute("data-points") === "2", null, { timeout: 15_000 });
    assert.equal(await attr(page, "data-points"), 2);
    assert.ok((await attr(page, "data-updates")) > updatesBefore);

    await page.locator("#chart canvas").first().waitFor({ state: "attached", timeout: 5_000 });
    assert.ok((await page.locator("#chart canvas").count()) >= 1);
    const legend = page.locator("#chart .u-legend");
    await legend.filter({ hasText: "site=berlin" }).waitFor({ timeout: 5_000 });
    await legend.filter({ hasText: "site=tokyo" }).waitFor({ timeout: 5_000 });

    // The header follows /v1/status (refreshed every 2 s): 6 events so far.
    await page.locator("#c-events").filter({ hasText: /^6$/ }).waitFor({ timeout: 10_000 });
    await page.locator("#watermark").filter({ hasText: /behind/ }).waitFor({ timeout: 10_000 });
    // Every held window is counted as provisional, final or corrected in the summary.
    await page.waitForFunction(
      () => ["n-provisional", "n-final", "n-corrected"].reduce((n, id) => n + Number(document.getElementById(id)?.textContent), 0) === 2,
      null,
      { timeout: 5_000 },
    );

    await page.screenshot({ path: "/tmp/tally-dashboard.png", fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
  }
});

test("the dashboard reconnects after the socket drops and backfills what it missed", async () => {
  const node = running!;
  const port = node.http.port;
  const page = await browser!.newPage({ viewport: { width: 1200, height: 720 } });
  try {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.locator("#conn").filter({ hasText: /^live$/ }).waitFor({ timeout: 15_000 });
    await page.waitForFunction(() => Number(document.querySelector("#chart")?.getAttribute("data-points")) >= 2, null, { timeout: 15_000 });
    const pointsBefore = await attr(page, "data-points");

    // Take the HTTP edge away: the page notices and retries with backoff.
    await node.http.close();
    await page.locator("#conn").filter({ hasText: /offline/ }).waitFor({ timeout: 10_000 });

    // A new series while the page is disconnected; it must arrive through the re-query on reconnect.
    await node.node.publishEvents(events(Date.now(), ["paris"]));
    await eventually(async () => ((await node.node.query({ metric: "events", window: "1m", from: 0, to: Date.now() + 60_000, where: { site: "paris" } })).length ? true : undefined), 15_000, "the paris window");
    restartedHttp = await startHttp(node.node, port);

    await page.locator("#conn").filter({ hasText: /^live$/ }).waitFor({ timeout: 20_000 });
    await page.waitForFunction((n) => Number(document.querySelector("#chart")?.getAttribute("data-points")) === n, pointsBefore + 1, { timeout: 10_000 });

    // And live updates flow again on the new socket.
    const updatesBefore = await attr(page, "data-updates");
    await node.node.publishEvents(events(Date.now(), ["oslo"]));
    await page.waitForFunction((n) => Number(document.querySelector("#chart")?.getAttribute("data-points")) === n, pointsBefore + 2, { timeout: 10_000 });
    assert.ok((await attr(page, "data-updates")) > updatesBefore);
  } finally {
    await page.close();
  }
});
