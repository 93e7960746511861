import assert from "node:assert/strict";
import { test } from "node:test";
import type { Actor, ActorContext, ActorKind } from "../runtime/actor.js";
import { ActorSystem } from "../runtime/actor-system.js";
import { RocksStateStore } from "../runtime/state-store.js";
import { tempDir } from "./harness.js";

type Msg =
  | { type: "add"; n: number; slow?: boolean }
  | { type: "done" }
  | { type: "tick" }
  | { type: "arm"; ms: number }
  /** Adds `n`, then passes `n` on along `to` (one hop per actor). */
  | { type: "relay"; n: number; to: string[] };

/** A counter that records the order it saw messages in, and whether two ever overlapped. */
class Counter implements Actor<Msg> {
  static overlaps = 0;
  static activations = 0;
  private busy = false;
  ticks = 0;
  /** The `n` of every add and relay, in the order taken. */
  readonly seen: number[] = [];
  constructor(public total: number) {
    Counter.activations++;
  }
  async receive(msg: Msg, ctx: ActorContext<Msg>) {
    if (this.busy) Counter.overlaps++;
    this.busy = true;
    if (msg.type === "add" || msg.type === "relay") this.seen.push(msg.n);
    if (msg.type === "add") {
      if (msg.slow) await new Promise((r) => setImmediate(r));
      this.total += msg.n;
    } else if (msg.type === "done") ctx.passivate();
    else if (msg.type === "arm") ctx.setTimer("t", msg.ms, { type: "tick" });
    else if (msg.type === "tick") this.ticks++;
    else if (msg.type === "relay") {
      this.total += msg.n;
      const [next, ...rest] = msg.to;
      if (next) ctx.send(next, rest.length > 0 ? { type: "relay", n: msg.n, to: rest } : { type: "add", n: msg.n, slow: true });
    }
    this.busy = false;
  }
  snapshot() {
    return this.total === 0 ? undefined : Buffer.from(String(this.total));
  }
}

const kind: ActorKind<Msg> & { live: Map<string, Counter> } = {
  name: "counter",
  live: new Map(),
  create(key, state) {
    const actor = new Counter(state ? Number(Buffer.from(state).toString()) : 0);
    kind.live.set(key, actor);
    return actor;
  },
};

async function withStore<T>(fn: (store: RocksStateStore, dir: string) => Promise<T>): Promise<T> {
  const dir = tempDir();
  const store = await RocksStateStore.open(dir.path);
  try {
    return await fn(store, dir.path);
  } finally {
    await store.close();
    dir.remove();
  }
}

test("an actor is activated on its first message and takes one message at a time", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    Counter.overlaps = 0;
    for (let i = 1; i <= 100; i++) system.send("a", { type: "add", n: i, slow: i % 3 === 0 });
    system.send("b", { type: "add", n: 5 });
    await system.idle();
    assert.equal(kind.live.get("a")!.total, 5050);
    assert.equal(kind.live.get("b")!.total, 5);
    assert.equal(system.activeCount, 2);
    assert.equal(Counter.overlaps, 0);
    await system.stop();
  }));

test("messages are processed in send order across actors: one waiting for its stored state holds up later ones, so what they send on arrives in that order", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    system.send("x", { type: "add", n: 1 });
    system.send("x", { type: "done" });
    system.send("y", { type: "add", n: 1 });
    await system.checkpoint(); // x passivated, its state now only in the store; y still in memory
    assert.equal(system.activeCount, 1);
    system.send("x", { type: "relay", n: 10, to: ["r"] }); // x must read its state first
    system.send("y", { type: "relay", n: 20, to: ["r"] });
    system.send("r", { type: "add", n: 30 });
    await system.idle();
    // x's relay to r was sent once x had its state: after the add sent directly.
    assert.deepEqual(kind.live.get("r")!.seen, [30, 10, 20]);
    assert.equal(kind.live.get("x")!.total, 11);
    await system.stop();
  }));

test("a passivated actor's state waits for the checkpoint, and reactivation restores it", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    system.send("k", { type: "add", n: 41 });
    system.send("k", { type: "done" });
    await system.idle();
    assert.equal(system.activeCount, 0);
    assert.equal(await store.get("actor/counter/k"), undefined, "nothing written outside a checkpoint");
    const before = Counter.activations;
    system.send("k", { type: "add", n: 1 });
    await system.idle();
    assert.equal(Counter.activations, before + 1);
    assert.equal(kind.live.get("k")!.total, 42);
    system.send("k", { type: "done" });
    await system.checkpoint();
    assert.equal(Buffer.from((await store.get("actor/counter/k"))!).toString(), "42");
    await system.stop();
  }));

test("idle actors passivate by themselves; an empty snapshot deletes the stored state", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store, { idleMs: 20 });
    await store.write([["actor/counter/z", Buffer.from("7")]]);
    system.send("z", { type: "add", n: -7 });
    await system.idle();
    assert.equal(system.activeCount, 1);
    await eventuallyInactive(system, 0);
    await system.checkpoint();
    assert.equal(await store.get("actor/counter/z"), undefined);
    await system.stop();
  }));

test("reset rolls every actor back to the last checkpoint", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    system.send("r", { type: "add", n: 10 });
    system.send("s", { type: "add", n: 1 });
    await system.checkpoint([["position", Buffer.from("1")]]);
    system.send("r", { type: "add", n: 5 });
    system.send("s", { type: "done" });
    system.send("t", { type: "add", n: 3 });
    await system.idle();
    system.reset();
    assert.equal(system.activeCount, 0);
    system.send("r", { type: "add", n: 0 });
    system.send("t", { type: "add", n: 0 });
    await system.idle();
    assert.equal(kind.live.get("r")!.total, 10);
    assert.equal(kind.live.get("t")!.total, 0);
    await system.stop();
  }));

test("an actor's messages to other actors count as pending work: idle and checkpoint cover them", () =>
  withStore(async (store) => {
    // "c" and "d" are activated from the store (an asynchronous read) while the chain runs.
    await store.write([["actor/counter/c", Buffer.from("100")], ["actor/counter/d", Buffer.from("1000")]]);
    const system = new ActorSystem(kind, store);
    system.send("a", { type: "relay", n: 2, to: ["b", "c", "d"] });
    system.send("a", { type: "relay", n: 3, to: ["c"] });
    await system.checkpoint([["position", Buffer.from("9")]]);
    const stored = async (key: string) => Buffer.from((await store.get(`actor/counter/${key}`))!).toString();
    assert.deepEqual(await Promise.all(["a", "b", "c", "d"].map(stored)), ["5", "2", "105", "1002"]);

    // A reset drops what an actor of the old generation still sends.
    system.send("a", { type: "relay", n: 1, to: ["e"] });
    system.reset();
    await system.idle();
    assert.equal(system.activeCount, 0);
    await system.stop();
    assert.equal(await store.get("actor/counter/e"), undefined);
  }));

test("timers deliver their message to the actor", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    system.send("t", { type: "arm", ms: 10 });
    system.send("t", { type: "arm", ms: 15 }); // replaces the first: one tick only
    await system.idle();
    const actor = kind.live.get("t")!;
    while (actor.ticks === 0) await system.idle().then(() => new Promise((r) => setTimeout(r, 5)));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(actor.ticks, 1);
    await system.stop();
  }));

test("a checkpoint writes changed actors and the caller's position in one batch, and survives reopening", async () => {
  const dir = tempDir();
  try {
    let store = await RocksStateStore.open(dir.path);
    const system = new ActorSystem(kind, store);
    system.send("x", { type: "add", n: 3 });
    system.send("y", { type: "add", n: 4 });
    await system.idle();
    await system.checkpoint([["position", Buffer.from("17")]]);
    system.reset(); // (its idle sweep kept the test process alive for 75 s)
    await store.close();
    store = await RocksStateStore.open(dir.path);
    assert.equal(Buffer.from((await store.get("position"))!).toString(), "17");
    assert.equal(Buffer.from((await store.get("actor/counter/x"))!).toString(), "3");
    const keys: string[] = [];
    for await (const [key] of store.scan("actor/", "actor0")) keys.push(key);
    assert.deepEqual(keys, ["actor/counter/x", "actor/counter/y"]);
    await store.close();
  } finally {
    dir.remove();
  }
});

test("a failing receive is reported and the actor goes on with its next message", () =>
  withStore(async (store) => {
    const errors: string[] = [];
    const failing: ActorKind<number> = {
      name: "failing",
      create: () => ({
        sum: 0,
        receive(n: number) {
          if (n < 0) throw new Error("negative");
          (this as unknown as { sum: number }).sum += n;
        },
        snapshot() {
          return Buffer.from(String((this as unknown as { sum: number }).sum));
        },
      }),
    };
    const system = new ActorSystem(failing, store, { onError: (key, e) => errors.push(`${key}:${(e as Error).message}`) });
    system.send("f", 1);
    system.send("f", -1);
    system.send("f", 2);
    await system.stop();
    assert.deepEqual(errors, ["f:negative"]);
    assert.equal(Buffer.from((await store.get("actor/failing/f"))!).toString(), "3");
  }));

/** Passivation finishes with an async write; wait for the activation count it leads to. */
async function eventuallyInactive(system: ActorSystem<Msg>, count: number) {
  const deadline = Date.now() + 5000;
  while (system.activeCount !== count) {
    if (Date.now() > deadline) throw new Error(`still ${system.activeCount} active`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("a cut is consistent while it is written: later messages go to the next cut, and reactivation reads the cut, not the store", () =>
  withStore(async (store) => {
    const system = new ActorSystem(kind, store);
    system.send("p", { type: "add", n: 5 });
    system.send("p", { type: "done" }); // passivated: its state waits in memory
    system.send("q", { type: "add", n: 7 });
    await system.idle();
    const cut = system.cut([["position", Buffer.from("1")]]);
    assert.deepEqual(cut.changes.puts.map(([k, v]) => `${k}=${Buffer.from(v)}`).sort(), ["actor/counter/p=5", "actor/counter/q=7", "position=1"]);

    // The write is held back (the state log, in a shard); meanwhile the actors go on.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const written = cut.write(() => held);
    system.send("p", { type: "add", n: 1 }); // reactivated from the cut: the store has no "p" yet
    system.send("q", { type: "add", n: 1 });
    await system.idle();
    assert.equal(kind.live.get("p")!.total, 6);
    assert.equal(await store.get("actor/counter/p"), undefined);
    assert.throws(() => system.cut(), /still being written/);

    release();
    await written;
    assert.equal(Buffer.from((await store.get("actor/counter/q"))!).toString(), "7", "the store holds the cut, not later changes");
    await system.checkpoint([["position", Buffer.from("2")]]);
    assert.equal(Buffer.from((await store.get("actor/counter/p"))!).toString(), "6");
    assert.equal(Buffer.from((await store.get("actor/counter/q"))!).toString(), "8");
    await system.stop();
  }));

test("forget drops a passivated actor's state unread (a delete in the next cut, which replicates it, and which survives a failed write); an active actor is left to its messages", () =>
  withStore(async (store) => {
    let reads = 0;
    const counted = Object.assign(Object.create(store) as RocksStateStore, {
      get: (key: string) => {
        reads++;
        return store.get(key);
      },
    });
    const system = new ActorSystem(kind, counted);
    system.send("f", { type: "add", n: 3 });
    system.send("f", { type: "done" });
    system.send("g", { type: "add", n: 4 });
    await system.checkpoint();
    reads = 0;
    const before = Counter.activations;
    assert.equal(system.forget("g"), false, "active: not forgotten");
    assert.equal(system.forget("f"), true);
    assert.equal(Counter.activations, before, "nothing activated");
    // The cut that carries the delete fails to replicate: the delete waits for the next one.
    await assert.rejects(system.checkpoint([], [], async () => { throw new Error("log down"); }), /log down/);
    assert.equal(Buffer.from((await store.get("actor/counter/f"))!).toString(), "3");
    let replicated: string[] = [];
    await system.checkpoint([], [], async ({ deletes }) => void (replicated = deletes));
    assert.deepEqual(replicated, ["actor/counter/f"]);
    assert.equal(await store.get("actor/counter/f"), undefined);
    assert.equal(reads, 0, "no read");
    // A message after it finds nothing stored: the actor starts empty.
    system.send("f", { type: "add", n: 1 });
    system.send("g", { type: "add", n: 1 });
    await system.idle();
    assert.deepEqual([kind.live.get("f")!.total, kind.live.get("g")!.total], [1, 5]);
    await system.stop();
  }));

test("an actor whose state cannot be read is reported and its messages dropped; the messages after them go on, in order, and a later send reads again", { timeout: 10_000 }, () =>
  withStore(async (store) => {
    let failing = true;
    const flaky = Object.assign(Object.create(store) as RocksStateStore, {
      get: (key: string) => (failing && key.endsWith("/bad") ? Promise.reject(new Error("disk")) : store.get(key)),
    });
    const errors: string[] = [];
    const system = new ActorSystem(kind, flaky, { onError: (key, e) => errors.push(`${key}:${(e as Error).message}`) });
    system.send("bad", { type: "add", n: 1 });
    system.send("ok", { type: "relay", n: 2, to: ["r"] });
    system.send("bad", { type: "relay", n: 3, to: ["r"] });
    system.send("r", { type: "add", n: 4 });
    await system.idle();
    assert.deepEqual(errors, ["bad:disk"]);
    // bad's relay is dropped; ok's was sent once ok had processed it, after r's own add.
    assert.deepEqual(kind.live.get("r")!.seen, [4, 2]);
    assert.equal(system.pendingCount, 0);
    failing = false;
    system.send("bad", { type: "add", n: 5 });
    await system.idle();
    assert.equal(kind.live.get("bad")!.total, 5);
    await system.stop();
  }));

test("an actor whose snapshot throws when it passivates is reported and stays active; the inbox goes on", { timeout: 10_000 }, () =>
  withStore(async (store) => {
    let broken = true;
    const fragile: ActorKind<Msg> = {
      name: "fragile",
      create: (key, state) => {
        const actor = kind.create(key, state);
        const snapshot = actor.snapshot.bind(actor);
        actor.snapshot = () => {
          if (broken && key === "s") throw new Error("cannot encode");
          return snapshot();
        };
        return actor;
      },
    };
    const errors: string[] = [];
    const system = new ActorSystem(fragile, store, { onError: (key, e) => errors.push(`${key}:${(e as Error).message}`) });
    system.send("s", { type: "add", n: 2 });
    system.send("s", { type: "done" });
    system.send("t", { type: "add", n: 3 });
    await system.idle();
    assert.deepEqual(errors, ["s:cannot encode"]);
    assert.equal(system.activeCount, 2, "s is still active, with its state");
    assert.equal(kind.live.get("t")!.total, 3);
    broken = false;
    await system.stop();
    assert.equal(Buffer.from((await store.get("actor/fragile/s"))!).toString(), "2");
  }));
