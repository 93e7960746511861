import { formatDuration, parseDuration } from "./durations.js";

/**
 * A window assigner (Flink's vocabulary): tumbling when `slideMs == sizeMs`, sliding otherwise.
 * Windows are aligned to the epoch, so to the clock: a 1-minute window is [10:00:00, 10:01:00).
 */
export interface WindowSpec {
  /** Stable name used in actor keys, result subjects and queries: `1m`, or `5m/30s` if sliding. */
  readonly id: string;
  readonly sizeMs: number;
  readonly slideMs: number;
}

export function parseWindow(input: unknown): WindowSpec {
  if (typeof input === "string" && input.includes("/")) {
    const [size, slide] = input.split("/");
    return makeWindow(parseDuration(size!), parseDuration(slide!));
  }
  if (typeof input === "string" || typeof input === "number") {
    const size = parseDuration(input);
    return makeWindow(size, size);
  }
  if (input && typeof input === "object" && "size" in input) {
    const { size, slide } = input as { size: string; slide?: string };
    const sizeMs = parseDuration(size);
    return makeWindow(sizeMs, slide === undefined ? sizeMs : parseDuration(slide));
  }
  throw new Error(`not a window: ${JSON.stringify(input)} (use "1m", "5m/30s" or {"size": "5m", "slide": "30s"})`);
}

export function makeWindow(sizeMs: number, slideMs: number): WindowSpec {
  if (!(sizeMs >= 1000) || !(slideMs >= 1000)) throw new Error("windows must be at least 1s");
  if (sizeMs % slideMs !== 0) throw new Error("a sliding window's size must be a multiple of its slide");
  const id = slideMs === sizeMs ? formatDuration(sizeMs) : `${formatDuration(sizeMs)}/${formatDuration(slideMs)}`;
  return { id, sizeMs, slideMs };
}

const sizes = new Map<string, number>();

/** The size of the windows named `id` (`1m`, `5m/30s`): an id spells its size exactly. */
export function windowSizeMs(id: string): number {
  let size = sizes.get(id);
  if (size === undefined) sizes.set(id, (size = parseWindow(id).sizeMs));
  return size;
}

/** Start of the newest window of `spec` that contains `ts` (a tumbling window's only one). */
export function lastWindowStart(spec: WindowSpec, ts: number): number {
  return ts - mod(ts, spec.slideMs);
}

/** Starts of every window of `spec` that contains `ts`, oldest first. */
export function windowStarts(spec: WindowSpec, ts: number): number[] {
  const last = lastWindowStart(spec, ts);
  const starts: number[] = [];
  for (let start = last - spec.sizeMs + spec.slideMs; start <= last; start += spec.slideMs) starts.push(start);
  return starts;
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}
