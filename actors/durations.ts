const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `10s`, `1m`, `2h`, `7d` (or a plain number of ms) into milliseconds. */
export function parseDuration(text: string | number): number {
  if (typeof text === "number" && Number.isFinite(text) && text >= 0) return text;
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(String(text).trim());
  if (!match) throw new Error(`not a duration: ${JSON.stringify(text)} (use e.g. 500ms, 10s, 1m, 2h, 7d)`);
  return Math.round(Number(match[1]) * units[match[2]!]!);
}

/** The shortest exact spelling of `ms`: 60000 → `1m`, 1500 → `1500ms`. */
export function formatDuration(ms: number): string {
  for (const unit of ["d", "h", "m", "s"]) {
    const size = units[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
