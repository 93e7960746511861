import { createReadStream } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocketServer, type WebSocket } from "ws";
import { allWindows } from "../actors/rollups.js";
import type { MetricRule } from "../actors/rules.js";
import type { WindowResult } from "../actors/window-result.js";
import type { ResultQuery } from "../node/results-store.js";
import { activationDelayMs, type StoredRule } from "../node/rules-store.js";
import { toPoint } from "./points.js";

/** What the HTTP edge needs from a node. The edge stays thin: parse, call, serialize. */
export interface NodeApi {
  readonly isReady: boolean;
  readonly metricRules: readonly MetricRule[];
  query(q: ResultQuery): Promise<WindowResult[]>;
  /** Every result update (of `metric` only, if given: cheaper for the node than filtering here). */
  onResult(listener: (result: WindowResult) => void, metric?: string): () => void;
  publishEvents(events: { source: string; kind: string; body: unknown }[]): Promise<void>;
  status(): Promise<unknown>;
  readonly ruleAdmin: {
    list(): Promise<StoredRule[]>;
    put(definition: Record<string, unknown>, activeFrom: number): Promise<StoredRule>;
    remove(name: string): Promise<boolean>;
  };
}

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const staticFiles: Record<string, [file: string, type: string]> = {
  "/": [join(root, "dashboard", "index.html"), "text/html; charset=utf-8"],
  "/dashboard.js": [join(root, "dashboard", "dashboard.js"), "text/javascript; charset=utf-8"],
  "/uplot.js": [join(root, "node_modules", "uplot", "dist", "uPlot.iife.min.js"), "text/javascript; charset=utf-8"],
  "/uplot.css": [join(root, "node_modules", "uplot", "dist", "uPlot.min.css"), "text/css; charset=utf-8"],
};

const maxBodyBytes = 8 << 20;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface HttpEdge {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Serves the query API, event ingestion, the result WebSocket and the dashboard. */
export async function startHttp(node: NodeApi, port: number, host = "127.0.0.1"): Promise<HttpEdge> {
  const server = createServer((req, res) => {
    handle(node, req, res).catch((e: unknown) => {
      const status = e instanceof HttpError ? e.status : 500;
      if (status === 500) console.error("http:", e);
      if (!res.headersSent) json(res, status, { error: (e as Error).message });
      else res.end();
    });
  });
  const sockets = new WebSocketServer({ noServer: true, maxPayload: 64 << 10 });
  server.on("upgrade", (req, socket, head) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname !== "/v1/subscribe") return socket.destroy();
    sockets.handleUpgrade(req, socket, head, (ws) => subscribe(node, ws, url.searchParams));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address();
  return {
    server,
    port: typeof address === "object" && address ? address.port : port,
    async close() {
      for (const ws of sockets.clients) ws.terminate();
      sockets.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function handle(node: NodeApi, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://x");
  const path = url.pathname;
  if (req.method === "GET" && path === "/healthz") {
    return json(res, node.isReady ? 200 : 503, { status: node.isReady ? "ok" : "starting" });
  }
  if (req.method === "GET" && path === "/v1/status") {
    // `?gc`: a full collection first, so memory readings hold no garbage. Only a node started with
    // `--expose-gc` (the benchmarks') has one to call; elsewhere it is ignored.
    if (url.searchParams.has("gc")) (globalThis as { gc?: () => void }).gc?.();
    return json(res, 200, await node.status());
  }
  if (req.method === "GET" && path === "/v1/metrics") {
    return json(res, 200, { metrics: node.metricRules.map(describeRule) });
  }
  const metricPath = /^\/v1\/metrics\/([^/]+)$/.exec(path);
  if (req.method === "GET" && metricPath) return json(res, 200, await queryMetric(node, decodeURIComponent(metricPath[1]!), url.searchParams));
  if (req.method === "POST" && path === "/v1/events") return json(res, 202, await postEvents(node, req));
  if (req.method === "GET" && path === "/v1/audit") return json(res, 200, await audit(node, url.searchParams));
  if (req.method === "GET" && path === "/v1/rules") return json(res, 200, { rules: (await node.ruleAdmin.list()).map(describeStored) });
  const rulePath = /^\/v1\/rules\/([^/]+)$/.exec(path);
  if (rulePath && req.method === "PUT") return json(res, 200, await putRule(node, decodeURIComponent(rulePath[1]!), req));
  if (rulePath && req.method === "DELETE") {
    const name = decodeURIComponent(rulePath[1]!);
    if (!(await node.ruleAdmin.remove(name))) throw new HttpError(404, `no rule "${name}"`);
    return json(res, 200, { removed: name });
  }
  const file = staticFiles[path];
  if (req.method === "GET" && file) {
    res.writeHead(200, { "Content-Type": file[1], "Cache-Control": "no-cache" });
    createReadStream(file[0]).on("error", () => res.end()).pipe(res);
    return;
  }
  throw new HttpError(404, `no route for ${req.method} ${path}`);
}

function describeStored(stored: StoredRule) {
  return { ...stored.definition, activeFrom: new Date(stored.activeFrom).toISOString() };
}

/** `PUT /v1/rules/<name>` with a rule definition (as in a rules file) as the body. */
async function putRule(node: NodeApi, name: string, req: IncomingMessage) {
  let definition: unknown;
  try {
    definition = JSON.parse(await readBody(req));
  } catch (e) {
    throw new HttpError(400, `body is not JSON: ${(e as Error).message}`);
  }
  if (!definition || typeof definition !== "object" || Array.isArray(definition)) throw new HttpError(400, "the body is one rule object");
  const rule = { name, ...(definition as Record<string, unknown>) };
  if (rule.name !== name) throw new HttpError(400, `the rule's name "${String(rule.name)}" differs from the path's "${name}"`);
  if (name.startsWith("_")) throw new HttpError(400, `metric names starting with "_" are reserved`);
  try {
    return describeStored(await node.ruleAdmin.put(rule, Date.now() + activationDelayMs));
  } catch (e) {
    throw new HttpError(400, (e as Error).message);
  }
}

function describeRule(rule: MetricRule) {
  return {
    name: rule.name,
    kind: rule.kind,
    value: rule.value ?? null,
    groupBy: rule.groupBy,
    where: rule.where,
    aggregates: rule.aggregates,
    windows: allWindows(rule).map((w) => w.id),
    rollups: rule.rollups.map((w) => w.id),
    maxSeries: rule.maxSeries ?? null,
    lateness: rule.latenessMs,
  };
}

async function queryMetric(node: NodeApi, name: string, params: URLSearchParams) {
  const rule = node.metricRules.find((r) => r.name === name);
  if (!rule) throw new HttpError(404, `unknown metric "${name}"`);
  const { from, to } = timeRange(params);
  const window = params.get("window") ?? coarsestWindow(rule, from, to);
  const windows = allWindows(rule);
  if (!windows.some((w) => w.id === window)) {
    throw new HttpError(400, `metric "${name}" has no window "${window}" (it has ${windows.map((w) => w.id).join(", ")})`);
  }
  const where = parseWhere(params.get("where"));
  const results = await node.query({ metric: name, window, from, to, where });
  return { metric: name, window, points: results.map(toPoint) };
}

/**
 * Per minute of arrival: what was accepted and what became of it, from the exactly-once `_audit`
 * metric. `balanced` is the check a user runs: accepted = aggregated + unmatched + duplicates + dlq.
 * `folded` (events folded into a metric's `__other__` series) is informational, outside it.
 */
async function audit(node: NodeApi, params: URLSearchParams) {
  const { from, to } = timeRange(params);
  const results = await node.query({ metric: "_audit", window: "1m", from, to, where: {} });
  const minutes = new Map<number, Record<string, number | string | boolean>>();
  for (const r of results) {
    const row = minutes.get(r.start) ?? { start: r.start, status: "final", accepted: 0, aggregated: 0, unmatched: 0, duplicates: 0, dlq: 0, folded: 0 };
    row[r.dims.counter!] = (r.values.count as number | null) ?? 0;
    if (r.status === "provisional") row.status = "provisional";
    minutes.set(r.start, row);
  }
  const rows = [...minutes.values()].sort((a, b) => (a.start as number) - (b.start as number));
  for (const row of rows) {
    const n = (k: string) => row[k] as number;
    row.balanced = n("accepted") === n("aggregated") + n("unmatched") + n("duplicates") + n("dlq");
  }
  return { minutes: rows };
}

/**
 * Without `window=`, a query gets the coarsest of the rule's tumbling windows (rollups included)
 * whose boundaries `from` and `to` fall on (fewest points for the same answer), else the finest
 * window.
 */
export function coarsestWindow(rule: MetricRule, from: number, to: number): string {
  const bySize = allWindows(rule).sort((a, b) => b.sizeMs - a.sizeMs);
  const fits = bySize.find((w) => w.slideMs === w.sizeMs && to - from >= w.sizeMs && from % w.sizeMs === 0 && to % w.sizeMs === 0);
  return (fits ?? bySize[bySize.length - 1]!).id;
}

/** `from` and `to` of a query: ms or ISO-8601; by default the last hour (and the minute ahead). */
function timeRange(params: URLSearchParams): { from: number; to: number } {
  const now = Date.now();
  return {
    from: params.has("from") ? parseTime(params.get("from")!, "from") : now - 3_600_000,
    to: params.has("to") ? parseTime(params.get("to")!, "to") : now + 60_000,
  };
}

function parseTime(text: string, name: string): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms)) throw new HttpError(400, `"${name}" must be ms since the epoch or ISO-8601, not ${JSON.stringify(text)}`);
  return ms;
}

/** `where=site:berlin,code:E101` */
function parseWhere(text: string | null): Record<string, string> {
  const where: Record<string, string> = {};
  if (!text) return where;
  for (const pair of text.split(",")) {
    const i = pair.indexOf(":");
    if (i <= 0) throw new HttpError(400, `"where" takes tag:value pairs separated by commas, not ${JSON.stringify(pair)}`);
    where[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return where;
}

const token = /^[A-Za-z0-9_-]{1,128}$/;

/** Body: one event or an array; each names its `source` and `kind` (or `?source=&kind=` for all). */
async function postEvents(node: NodeApi, req: IncomingMessage) {
  const url = new URL(req.url ?? "/", "http://x");
  const body = await readBody(req);
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch (e) {
    throw new HttpError(400, `body is not JSON: ${(e as Error).message}`);
  }
  const items = Array.isArray(doc) ? doc : [doc];
  const out: { source: string; kind: string; body: unknown }[] = [];
  for (const item of items) {
    const { source = url.searchParams.get("source"), kind = url.searchParams.get("kind"), ...event } = (item ?? {}) as Record<string, unknown>;
    if (typeof source !== "string" || !token.test(source) || typeof kind !== "string" || !token.test(kind)) {
      throw new HttpError(400, 'every event needs "source" and "kind" (letters, digits, _ or -), in the event or as query parameters');
    }
    out.push({ source, kind, body: event });
  }
  await node.publishEvents(out);
  return { accepted: out.length };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        reject(new HttpError(413, `body larger than ${maxBodyBytes} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString()));
    req.on("error", reject);
  });
}

/** `/v1/subscribe?metric=NAME[&window=1m][&where=tag:value,…]`: every stored result update, as JSON. */
function subscribe(node: NodeApi, ws: WebSocket, params: URLSearchParams) {
  const metric = params.get("metric");
  const window = params.get("window");
  let where: Record<string, string>;
  try {
    where = parseWhere(params.get("where"));
  } catch (e) {
    ws.close(1008, (e as Error).message.slice(0, 120));
    return;
  }
  // (The node hands over only results of `metric`, when given.)
  const unsubscribe = node.onResult((result) => {
    if (window && result.window !== window) return;
    for (const k in where) if (result.dims[k] !== where[k]) return;
    // A client that cannot keep up is cut off rather than buffered without bound.
    if (ws.bufferedAmount > 8 << 20) return ws.terminate();
    ws.send(JSON.stringify({ type: "result", metric: result.metric, window: result.window, point: toPoint(result) }));
  }, metric || undefined);
  ws.on("close", unsubscribe);
  ws.on("error", unsubscribe);
  ws.on("message", () => {}); // clients have nothing to say yet; ignore rather than fail
  ws.send(JSON.stringify({ type: "subscribed", metric, window, where }));
}

function json(res: ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}
