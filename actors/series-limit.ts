import { EventTimeTimers } from "./event-time-timers.js";

/** The dimension value of every `groupBy` tag of the series that takes the series past a rule's `maxSeries`. */
export const otherSeries = "__other__";

/** The dims of the `__other__` series of a rule: every `groupBy` tag set to `__other__`. */
export function otherDims(groupBy: readonly string[]): { dims: Record<string, string>; dimsId: string } {
  return {
    dims: Object.fromEntries(groupBy.map((name) => [name, otherSeries])),
    dimsId: JSON.stringify(groupBy.map(() => otherSeries)),
  };
}

/** One window a partial goes into, by `metric\twindow\tstart`, and the event time its state is purged at. */
export interface AdmissionWindow {
  id: string;
  dropAt: number;
}

/**
 * The series one shard admitted into each window, for `maxSeries` (README, "Cardinality"). It is
 * decided in mailbox order, so a replay decides the same; it is not checkpointed but rebuilt from
 * the stored window states (`restore`), which hold exactly the admitted series. A window's set is
 * forgotten when the window's state is purged.
 */
export class SeriesAdmission {
  private readonly windows = new Map<string, { series: Set<string>; dropAt: number }>();
  private readonly forgets = new EventTimeTimers();

  /**
   * Admits series `dimsId` into all of `windows` (a base window and the rollups above it, which
   * must not exceed the limit either) if each already holds it or holds fewer than `quota`
   * series; otherwise admits it nowhere and returns false: its partial folds into `__other__`.
   */
  admit(windows: readonly AdmissionWindow[], dimsId: string, quota: number): boolean {
    const sets = windows.map((w) => this.entry(w));
    if (!sets.every((set) => set.has(dimsId) || set.size < quota)) return false;
    for (const set of sets) set.add(dimsId);
    return true;
  }

  /** A series found in a stored window state after a restart: it was admitted, whatever the limit is now. */
  restore(windows: readonly AdmissionWindow[], dimsId: string): void {
    for (const w of windows) this.entry(w).add(dimsId);
  }

  /** Forgets the windows whose state the watermark purged. */
  advance(watermark: number): void {
    for (const id of this.forgets.due(watermark)) {
      const window = this.windows.get(id);
      // A window registered again later (a later purge time) keeps its set until then.
      if (window && window.dropAt <= watermark) this.windows.delete(id);
    }
  }

  /** Windows with a limit tracked here. */
  get size(): number {
    return this.windows.size;
  }

  private entry(w: AdmissionWindow): Set<string> {
    let window = this.windows.get(w.id);
    if (!window) {
      window = { series: new Set(), dropAt: w.dropAt };
      this.windows.set(w.id, window);
    }
    if (w.dropAt >= window.dropAt) {
      window.dropAt = w.dropAt;
      this.forgets.add(w.dropAt, w.id);
    }
    return window.series;
  }
}
