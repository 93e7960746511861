/**
 * Event ids seen within a horizon of arrival time, to count a re-published event once.
 * Ids live in a few generations of Sets; a whole generation expires at once, so the cost is
 * O(1) per id and the horizon is honoured to within one generation.
 */
export class RecentIds {
  private generations: Set<string>[] = [new Set()];
  private generationStart: number;
  private readonly generationMs: number;

  constructor(
    readonly horizonMs: number,
    now: number,
    private readonly generationCount = 10,
  ) {
    this.generationMs = Math.max(1, Math.ceil(horizonMs / generationCount));
    this.generationStart = now;
  }

  /** True if `id` was already seen within the horizon; records it otherwise. */
  seen(id: string, now: number): boolean {
    this.rotate(now);
    for (const generation of this.generations) if (generation.has(id)) return true;
    this.generations[0]!.add(id);
    return false;
  }

  /** Remember ids recovered from a log (they count as seen now: kept for at least one more horizon). */
  restore(ids: Iterable<string>, now: number): void {
    this.rotate(now);
    for (const id of ids) this.generations[0]!.add(id);
  }

  get size(): number {
    let n = 0;
    for (const g of this.generations) n += g.size;
    return n;
  }

  /** Keeps at least `horizonMs` of ids: the current generation plus `generationCount` full ones. */
  private rotate(now: number) {
    const steps = Math.floor((now - this.generationStart) / this.generationMs);
    if (steps <= 0) return;
    if (steps > this.generationCount) this.generations = [new Set()];
    else {
      for (let i = 0; i < steps; i++) this.generations.unshift(new Set());
      this.generations.length = Math.min(this.generations.length, this.generationCount + 1);
    }
    this.generationStart += steps * this.generationMs;
  }
}
