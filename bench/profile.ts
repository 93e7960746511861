/** Summarizes a V8 `.cpuprofile` (from `node --cpu-prof`): the functions with the most self time. */
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { repoRoot } from "./harness.js";

export interface ProfileEntry {
  function: string;
  /** file:line, relative to the repository (or a node: / native location). */
  location: string;
  selfMs: number;
  selfPercent: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples: number[];
  timeDeltas: number[];
}

/** The `top` functions by self time, without "(idle)" (whose share is returned on its own). */
export function summarizeProfile(file: string, top: number): { idlePercent: number; top: ProfileEntry[] } {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const frames = new Map(profile.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, { function: string; location: string; us: number }>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const frame = frames.get(id)!;
    const us = profile.timeDeltas[i] ?? 0;
    total += us;
    const url = frame.url.startsWith("file://") ? relative(repoRoot, new URL(frame.url).pathname) : frame.url;
    const location = url ? `${url}:${frame.lineNumber + 1}` : "";
    const key = `${frame.functionName}@${location}`;
    const entry = self.get(key) ?? { function: frame.functionName || "(anonymous)", location, us: 0 };
    entry.us += us;
    self.set(key, entry);
  });
  const percent = (us: number) => Math.round((1000 * us) / total) / 10;
  const entries = [...self.values()].sort((a, b) => b.us - a.us);
  return {
    idlePercent: percent(entries.find((e) => e.function === "(idle)")?.us ?? 0),
    top: entries
      .filter((e) => e.function !== "(idle)")
      .slice(0, top)
      .map((e) => ({ function: e.function, location: e.location, selfMs: Math.round(e.us / 1000), selfPercent: percent(e.us) })),
  };
}
