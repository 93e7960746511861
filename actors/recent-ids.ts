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

  get size(): number {
    let n = 0;
    for (const g of this.generations) n += g.size;
    return n;
  }

  private rotate(now: number) {
    while (now - this.generationStart >= this.generationMs) {
      this.generations.unshift(new Set());
      if (this.generations.length > this.generationCount + 1) this.generations.pop();
      this.generationStart += this.generationMs;
      if (now - this.generationStart > this.horizonMs) this.generationStart = now;
    }
  }
}
