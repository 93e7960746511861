/** The suite's results as Markdown: every Tally figure beside a baseline of the same run, as a ratio. */
import type { Percentiles } from "./harness.js";
import type { BaselineRow, SettledMemory, SuiteResult, TallyRow } from "./suite.js";

const int = (n: number) => Math.round(n).toLocaleString("en-US");
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
const dec = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : "—");
const ratio = (a: number, b: number | undefined) => (b ? `${dec(a / b)}×` : "—");
/** "p50 / p99"; "≥" where unanswered probes or windows (counted with the time waited) make it a lower bound. */
const ms = (p: Percentiles, waited: number) =>
  p.n === 0 ? `none in ${Math.round(waited)} s` : `${p.censored ? "≥" : ""}${p.p50} / ${p.censored ? "≥" : ""}${p.p99}`;
const table = (head: string[], rows: string[][]) =>
  [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");

/**
 * Memory of an active window: (RSS − idle RSS) / active windows, once the load stopped and the node
 * drained it (in-flight buffers gone, windows still open: they live until the minute closes).
 */
/**
 * Where the RSS grew between two readings, per window of the later one (bytes): V8's heap in use
 * and committed but unused, the de-duplication tables, the other buffers outside the heap (the
 * window table's columns, mostly), RocksDB's own accounting, and the rest (the allocator's and
 * everything else native; file-backed pages apart).
 */
function growthSplit(from: SettledMemory, to: SettledMemory): string {
  const n = to.activeWindows;
  if (n <= 0 || to.dedupTablesBytes === undefined || to.rocksdb === undefined || from.rocksdb === undefined) return "";
  const rocks = (m: SettledMemory) => m.rocksdb!.memtables + m.rocksdb!.blockCache + m.rocksdb!.tableReaders;
  const parts: [string, number][] = [
    ["V8 heap in use", to.heapUsedBytes - from.heapUsedBytes],
    [`V8 heap committed, unused${unusedSpaces(to)}`, to.heapTotalBytes - to.heapUsedBytes - (from.heapTotalBytes - from.heapUsedBytes)],
    ["de-duplication tables", to.dedupTablesBytes - (from.dedupTablesBytes ?? 0)],
    ["other buffers outside the heap", to.externalBytes - to.dedupTablesBytes - (from.externalBytes - (from.dedupTablesBytes ?? 0))],
    [`RocksDB (memtables ${mib(to.rocksdb.memtables)}, block cache ${mib(to.rocksdb.blockCache)}, table readers ${mib(to.rocksdb.tableReaders)} MiB)`, rocks(to) - rocks(from)],
  ];
  const anonGrowth = (to.rssAnonBytes ?? to.rssBytes) - (from.rssAnonBytes ?? from.rssBytes);
  const known = parts.reduce((a, [, b]) => a + b, 0);
  parts.push(["the rest (allocator, other native)", anonGrowth - known]);
  return (
    `Anonymous RSS grew ${mib(anonGrowth)} MiB from idle (${int(anonGrowth / n)} bytes per window): ` +
    parts.map(([what, bytes]) => `${what} ${mib(bytes)} MiB (${int(bytes / n)} B)`).join(", ") +
    "."
  );
}

/** Where V8's heap holds resident bytes it does not use: " (new space 32, old space 70 MiB…)". */
function unusedSpaces(m: SettledMemory): string {
  if (!m.heapSpaces) return "";
  const spaces = Object.entries(m.heapSpaces)
    .map(([name, s]) => [name.replace(/_/g, " "), s.resident - s.used] as const)
    .filter(([, unused]) => unused >= 2 ** 20);
  return spaces.length > 0 ? ` (${spaces.map(([name, unused]) => `${name} ${mib(unused)}`).join(", ")} MiB)` : "";
}

export const bytesPerWindow = (r: TallyRow, at: SettledMemory = r.settled) => (at.activeWindows > 0 ? (at.rssBytes - r.idleRssBytes) / at.activeWindows : NaN);

export function markdown(result: SuiteResult): string {
  const limitOf = (mode: string) => result.baselines.find((b) => b.baseline === "limit" && b.mode === mode);
  const find = (key: BaselineRow["against"]) => result.rows.find((r) => key && r.scenario === key.scenario && r.variant === key.variant && r.mode === key.mode);
  const out: string[] = [];
  out.push(`# Tally benchmark (${result.smoke ? "smoke" : "full"} suite)`);
  out.push(
    `${result.startedAt}, ${result.machine.cpus} CPUs, Node ${result.machine.node}. Reproduce: \`make bench\` (\`node dist/bench/run.js${result.smoke ? " --smoke" : ""}\`). ` +
      `Every process on one machine: generator, nats-server, the Tally node and the baselines. Columns: bench/README.md.`,
  );

  out.push("## Tally, each figure beside the limit baseline of the same message shape");
  out.push(
    table(
      ["scenario", "variant", "messages", "events/s", "÷ limit", "CPU s / M events", "÷ limit", "node peak RSS MiB", "÷ limit", "provisional p50 / p99 ms", "transport p50 / p99 ms", "÷ transport (p99)", "final p50 / p99 ms", "after watermark p99 ms"],
      result.rows.map((r) => {
        const limit = limitOf(r.mode);
        const f = r.freshness;
        return [
          r.scenario,
          r.variant,
          r.mode,
          int(r.throughput.eventsPerSec),
          ratio(r.throughput.eventsPerSec, limit?.throughput.eventsPerSec),
          dec(r.throughput.cpuSecPerMillion),
          ratio(r.throughput.cpuSecPerMillion, limit?.throughput.cpuSecPerMillion),
          mib(r.peakRssBytes),
          ratio(r.peakRssBytes, limit?.peakRssBytes),
          ms(f.provisional, f.seconds),
          ms(f.transport, f.seconds),
          ratio(f.provisional.p99 ?? NaN, f.transport.p99 ?? undefined),
          ms(f.final, f.seconds),
          f.afterWatermark.n ? `${f.afterWatermark.censored ? "≥" : ""}${f.afterWatermark.p99}` : "—",
        ];
      }),
    ),
  );

  out.push("## Baselines (same run)");
  out.push(
    table(
      ["baseline", "messages", "what", "events/s", "CPU s / M events", "peak RSS MiB", "compared with", "Tally events/s", "Tally ÷ baseline", "Tally CPU ÷ baseline CPU"],
      result.baselines.map((b) => {
        const tally = b.baseline === "limit" ? result.rows.find((r) => r.mode === b.mode && r.scenario === "robots") : find(b.against);
        return [
          b.baseline,
          b.mode,
          b.what + (b.note ? ` (${b.note})` : ""),
          int(b.throughput.eventsPerSec),
          dec(b.throughput.cpuSecPerMillion),
          mib(b.peakRssBytes),
          tally ? `${tally.scenario}, ${tally.variant}, ${tally.mode}` : "—",
          tally ? int(tally.throughput.eventsPerSec) : "—",
          ratio(tally?.throughput.eventsPerSec ?? NaN, b.throughput.eventsPerSec),
          ratio(tally?.throughput.cpuSecPerMillion ?? NaN, b.throughput.cpuSecPerMillion),
        ];
      }),
    ),
  );

  out.push("## Targets (from the issue; reported, never failed on)");
  out.push(table(["target", "measured", "vs target", ""], targets(result).map((t) => [t.target, t.measured, t.ratio, t.met === undefined ? "not measured" : t.met ? "met" : "missed"])));

  const hc = result.rows.find((r) => r.scenario === "high cardinality");
  if (hc) {
    out.push("## Memory per active window (high cardinality)");
    out.push(
      `${int(hc.settled.activeWindows)} active windows (of ${int(hc.workload.devices ?? 0)} devices cycled) once the load stopped and the node ` +
        `drained it: node RSS ${mib(hc.settled.rssBytes)} MiB (${mib(hc.idleRssBytes)} MiB idle), ${int(bytesPerWindow(hc))} bytes per window above idle. ` +
        `Of that RSS, V8's heap ${mib(hc.settled.heapTotalBytes)} MiB (${mib(hc.settled.heapUsedBytes)} MiB in use, garbage included), buffers outside it ${mib(hc.settled.externalBytes)} MiB. ` +
        (hc.quiet
          ? `After a full GC, ${int(hc.quiet.quietMs / 1000)} s more without load and another full GC (windows still open): RSS ${mib(hc.quiet.rssBytes)} MiB, ` +
            `heap ${mib(hc.quiet.heapTotalBytes)} MiB (${mib(hc.quiet.heapUsedBytes)} in use), ${int(bytesPerWindow(hc, hc.quiet))} bytes per window above idle. `
          : "") +
        (hc.quiet && hc.idle ? `${growthSplit(hc.idle, hc.quiet)} ` : "") +
        `Under load: ${int(hc.peakActiveWindows)} windows at RSS ${mib(hc.rssAtPeakWindows)} MiB, peak RSS ${mib(hc.peakRssBytes)} MiB. ` +
        `The figures include everything the node holds for that load (de-duplication ids, result traffic), not only window state. ` +
        (hc.settled.activeWindows >= 1e6
          ? "This is the goal's scale (1M active windows)."
          : `The goal is 1M active windows; this run was scaled down: at the ${int(hc.throughput.eventsPerSec)} events/s it sustained, one node needs ` +
            `${int(1e6 / Math.max(1, hc.throughput.eventsPerSec))} s of events to open 1M windows, and at this cost per window ~${dec((hc.idleRssBytes + 1e6 * bytesPerWindow(hc)) / 2 ** 30, 1)} GiB.`),
    );
  }

  if (result.profile) {
    out.push(`## Where the node's CPU goes: ${result.profile.scenario} (\`node --cpu-prof\`, top 10 by self time)`);
    out.push(
      `A separate saturated run (${dec(result.profile.idlePercent, 1)}% of the profile is idle: start-up, warm-up, stop). ` +
        "Percentages are of all samples; `(garbage collector)` and `(program)` are V8's own.",
    );
    out.push(table(["#", "function", "location", "self ms", "self %"], result.profile.top.map((e, i) => [String(i + 1), `\`${e.function}\``, e.location || "—", String(e.selfMs), String(e.selfPercent)])));
  }
  if (result.skipped.length > 0) out.push("## Skipped\n\n" + result.skipped.map((s) => `- ${s}`).join("\n"));
  return out.join("\n\n") + "\n";
}

export interface Target {
  target: string;
  measured: string;
  ratio: string;
  met?: boolean;
}

/** The issue's targets against this run's numbers. */
export function targets(result: SuiteResult): Target[] {
  const row = (variant: string, mode: string) => result.rows.find((r) => r.scenario === "robots" && r.variant === variant && r.mode === mode);
  const headline = row("10k sources, count+avg", "protobuf ×1000");
  const jsonBatch = row("10k sources, count+avg", "JSON ×100");
  const limit = result.baselines.find((b) => b.baseline === "limit" && b.mode === "protobuf ×1000");
  const out: Target[] = [];
  const add = (target: string, measured: number | undefined, goal: number, show: (n: number) => string, atLeast = true) => {
    if (measured === undefined || !Number.isFinite(measured)) return out.push({ target, measured: "—", ratio: "—" });
    out.push({ target, measured: show(measured), ratio: `${dec(measured / goal)}×`, met: atLeast ? measured >= goal : measured < goal });
  };
  add("≥ 1,000,000 events/s, protobuf batches, count+avg (robots 10k)", headline?.throughput.eventsPerSec, 1e6, (n) => `${int(n)} events/s`);
  add("≥ 0.8 of the limit, same", headline && limit ? headline.throughput.eventsPerSec / limit.throughput.eventsPerSec : undefined, 0.8, (n) => `${dec(n)} of the limit`);
  add("≥ 300,000 events/s, JSON batches (robots 10k, count+avg)", jsonBatch?.throughput.eventsPerSec, 3e5, (n) => `${int(n)} events/s`);
  for (const b of result.baselines.filter((b) => b.baseline !== "limit")) {
    const tally = result.rows.find((r) => b.against && r.scenario === b.against.scenario && r.variant === b.against.variant && r.mode === b.against.mode);
    const goal = b.baseline === "statsd" ? 5 : 10;
    add(`≥ ${goal}× ${b.baseline === "statsd" ? "StatsD" : "naive Redis"} (${b.what})`, tally ? tally.throughput.eventsPerSec / b.throughput.eventsPerSec : undefined, goal, (n) => `${dec(n)}×`);
  }
  const worst = (pick: (r: TallyRow) => Percentiles) => {
    const measured = result.rows.filter((r) => pick(r).n > 0);
    return measured.length ? measured.reduce((a, b) => ((pick(a).p99 ?? 0) >= (pick(b).p99 ?? 0) ? a : b)) : undefined;
  };
  const p99 = (r: TallyRow | undefined, pick: (r: TallyRow) => Percentiles) => (r && pick(r).n > 0 ? pick(r).p99! : undefined);
  const provisional = (r: TallyRow) => r.freshness.provisional;
  const afterWatermark = (r: TallyRow) => r.freshness.afterWatermark;
  const worstProvisional = worst(provisional);
  const worstFinal = worst(afterWatermark);
  add("provisional p99 < 500 ms at half the sustained rate (robots 10k protobuf)", p99(headline, provisional), 500, (n) => `${int(n)} ms`, false);
  if (worstProvisional) add(`same, worst scenario (${worstProvisional.scenario}, ${worstProvisional.variant}, ${worstProvisional.mode})`, p99(worstProvisional, provisional), 500, (n) => `${int(n)} ms`, false);
  add("final < 1 s after the watermark passes end + lateness, p99 (robots 10k protobuf)", p99(headline, afterWatermark), 1000, (n) => `${int(n)} ms`, false);
  if (worstFinal) add(`same, worst scenario (${worstFinal.scenario}, ${worstFinal.variant}, ${worstFinal.mode})`, p99(worstFinal, afterWatermark), 1000, (n) => `${int(n)} ms`, false);
  const hc = result.rows.find((r) => r.scenario === "high cardinality");
  add("≤ 300 bytes per active count window (node RSS right after the load)", hc ? bytesPerWindow(hc) : undefined, 300, (n) => `${int(n)} bytes (${int(hc!.settled.activeWindows)} windows)`, false);
  if (hc?.quiet) add(`same, after ${int(hc.quiet.quietMs / 1000)} s without load between two full GCs`, bytesPerWindow(hc, hc.quiet), 300, (n) => `${int(n)} bytes (${int(hc.quiet!.activeWindows)} windows)`, false);
  add(
    "1M active windows < 1 GiB RSS (from the last reading above; extrapolated if the run had fewer)",
    hc ? hc.idleRssBytes + 1e6 * bytesPerWindow(hc, hc.quiet ?? hc.settled) : undefined,
    2 ** 30,
    (n) => `${mib(n)} MiB`,
    false,
  );
  return out;
}
