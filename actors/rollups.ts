import { parseWindow, type WindowSpec } from "./windows.js";

/**
 * Rollups (README, "Rollups"): a rule's base window merges, once final, into its first rollup
 * window (`1m` → `1h`), which merges into the next (`1h` → `1d`). A finer window hands over its
 * whole state when it becomes final and every late delta after that, so the coarser one gets each
 * event exactly once and equals the merge of its finer windows. This file knows the shape of the
 * chain; the hand-over is the window actor's, the ordering the shard's.
 */
export interface RollupRule {
  readonly windows?: readonly WindowSpec[];
  readonly rollups?: readonly WindowSpec[];
}

/** Validates a rule's `rollups` against its windows (messages name the window at fault). */
export function parseRollups(input: unknown, windows: readonly WindowSpec[]): WindowSpec[] {
  if (input === undefined || (Array.isArray(input) && input.length === 0)) return [];
  if (!Array.isArray(input)) throw new Error('"rollups" must be a list of window sizes, like [1h, 1d]');
  const rollups = input.map(parseWindow);
  const first = rollups[0]!;
  const base = baseFor(windows, first);
  if (!base) {
    const tumbling = windows.filter(isTumbling).map((w) => w.id);
    throw new Error(
      tumbling.length === 0
        ? '"rollups" need a tumbling window to merge from (e.g. window: 1m)'
        : `rollup ${first.id} must be a multiple of one of the tumbling windows (${tumbling.join(", ")}) and larger`,
    );
  }
  let below = base;
  for (const w of rollups) {
    if (!isTumbling(w)) throw new Error(`rollup ${w.id} must be tumbling (a plain size like 1h)`);
    if (w.sizeMs <= below.sizeMs || w.sizeMs % below.sizeMs !== 0) {
      throw new Error(`rollup ${w.id} must be a multiple of ${below.id} and larger: each rollup merges whole windows of the level below`);
    }
    if (windows.some((x) => x.id === w.id)) throw new Error(`${w.id} is both a window and a rollup: list it once`);
    below = w;
  }
  return rollups;
}

/**
 * The window a rule's rollups merge from: the coarsest of its tumbling windows that the first
 * rollup is a multiple of (`1m` for windows `[10s, 1m]` and rollups `[1h]`: 60 hand-overs an
 * hour rather than 360).
 */
function baseFor(windows: readonly WindowSpec[], first: WindowSpec): WindowSpec | undefined {
  const fitting = windows.filter((w) => isTumbling(w) && w.sizeMs < first.sizeMs && first.sizeMs % w.sizeMs === 0);
  return fitting.sort((a, b) => b.sizeMs - a.sizeMs)[0];
}

function isTumbling(w: WindowSpec): boolean {
  return w.slideMs === w.sizeMs;
}

/** The levels of a rule's rollups, finest first: `[base, ...rollups]`; empty without rollups. */
export function rollupChain(rule: RollupRule): WindowSpec[] {
  const rollups = rule.rollups ?? [];
  if (rollups.length === 0) return [];
  const base = baseFor(rule.windows ?? [], rollups[0]!);
  return base ? [base, ...rollups] : [];
}

/**
 * 0 for the rule's own windows (the base included), i for its i-th rollup. A shard fires its
 * windows level by level, so a coarser window is told to finalize only after every finer one
 * due at the same watermark has handed its state over.
 */
export function rollupLevel(rule: RollupRule, windowId: string): number {
  return Math.max(0, (rule.rollups ?? []).findIndex((w) => w.id === windowId) + 1);
}

/** The window that window `windowId` starting at `start` merges into, or undefined (not in a chain, or the top). */
export function parentWindow(rule: RollupRule, windowId: string, start: number): { window: WindowSpec; start: number } | undefined {
  const chain = rollupChain(rule);
  const i = chain.findIndex((w) => w.id === windowId);
  if (i < 0 || i === chain.length - 1) return undefined;
  const window = chain[i + 1]!;
  return { window, start: start - mod(start, window.sizeMs) };
}

/** Every window of a rule as results and queries see them: its own windows, then its rollups. */
export function allWindows(rule: RollupRule): WindowSpec[] {
  return [...(rule.windows ?? []), ...(rule.rollups ?? [])];
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}
