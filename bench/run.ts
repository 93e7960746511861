// The benchmark suite: `make bench` (full, ≤ 10 min on 2 cores) or `make bench-smoke` (CI, < 2 min).
// Run: npx tsc -p tsconfig.json && node dist/bench/run.js [--smoke] [--only robots,hot-key,...] [--out DIR]
// Writes DIR/latest.md and DIR/latest.json (smoke: DIR/smoke.*; default DIR bench/results/). See bench/README.md.
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { repoRoot } from "./harness.js";
import { markdown, targets } from "./report.js";
import { highCardinality } from "./scenarios/high-cardinality.js";
import { hotKey } from "./scenarios/hot-key.js";
import { lateDuplicates } from "./scenarios/late-duplicates.js";
import { robots } from "./scenarios/robots.js";
import { Suite } from "./suite.js";

const scenarios = { robots, "hot-key": hotKey, "late-duplicates": lateDuplicates, "high-cardinality": highCardinality };

const { values } = parseArgs({ options: { smoke: { type: "boolean" }, only: { type: "string" }, out: { type: "string" } } });
const only = values.only?.split(",") ?? Object.keys(scenarios);
for (const name of only) if (!(name in scenarios)) throw new Error(`unknown scenario ${name} (known: ${Object.keys(scenarios).join(", ")})`);
const out = resolve(values.out ?? join(repoRoot, "bench", "results"));

const suite = new Suite(!!values.smoke);
const startedAt = Date.now();
const failed: string[] = [];
for (const [name, scenario] of Object.entries(scenarios)) {
  if (!only.includes(name)) continue;
  try {
    await scenario(suite);
  } catch (e) {
    // Keep going: the other scenarios' numbers are still worth having; the exit code says it failed.
    suite.log(`${name} failed: ${(e as Error).stack ?? e}`);
    failed.push(name);
    suite.result.skipped.push(`${name}: FAILED: ${(e as Error).message.split("\n")[0]}`);
  }
}
const seconds = Math.round((Date.now() - startedAt) / 1000);
suite.log(`done in ${seconds} s`);

mkdirSync(out, { recursive: true });
const name = values.smoke ? "smoke" : "latest"; // a smoke run never overwrites the full suite's results
const md = markdown(suite.result) + `\nThe suite took ${seconds} s.\n`;
writeFileSync(join(out, `${name}.md`), md);
writeFileSync(join(out, `${name}.json`), JSON.stringify({ ...suite.result, seconds, targets: targets(suite.result) }, null, 2) + "\n");
process.stdout.write(md);
// Child processes (generators, nats-servers) are gone; end despite any lingering handle.
process.exit(failed.length > 0 ? 1 : 0);
