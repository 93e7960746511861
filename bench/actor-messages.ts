// The actor system's own cost per message: N actors in memory, each sent a message round after
// round (one in eight also sends one on to a shared actor), through `ActorSystem` on a real
// RocksDB, ns per message for each round. Round 1 activates them (`fresh`: no store read).
// Run: npx tsc -p tsconfig.json && node dist/bench/actor-messages.js [actors] [rounds]
// (wrap in `flock /tmp/tally-cpu.lock` on a shared machine). Before the idle order moved an actor at
// most once per sweep tick, rounds after the first cost ~5,600 ns a message at 100k actors; ~300 after.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Actor, ActorContext } from "../runtime/actor.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { RocksStateStore } from "../runtime/state-store.js";

const actors = Number(process.argv[2] ?? 100_000);
const rounds = Number(process.argv[3] ?? 4);
const perRound = 20;

class Adder implements Actor<number> {
  private total = 0;
  receive(n: number, ctx: ActorContext<number>): void {
    this.total += n;
    if (n === 2) ctx.send("sink", 1);
  }
  snapshot(): Uint8Array {
    return Buffer.from(String(this.total));
  }
}

const dir = mkdtempSync(join(tmpdir(), "actor-messages-"));
const store = await RocksStateStore.open(dir);
const system = new ActorSystem<number>({ name: "adder", create: () => new Adder() }, store);
const keys = Array.from({ length: actors }, (_, i) => `k${i}`);
try {
  for (let round = 1; round <= rounds; round++) {
    const started = process.hrtime.bigint();
    for (let r = 0; r < perRound; r++) for (let i = 0; i < actors; i++) system.send(keys[i]!, (i & 7) === 0 ? 2 : 1, true);
    await system.idle();
    const ns = Number(process.hrtime.bigint() - started) / (perRound * actors);
    console.log(JSON.stringify({ actors, round, nsPerMessage: Math.round(ns) }));
  }
} finally {
  await system.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
