import type { Actor, ActorContext, ActorKind } from "./actor.js";
import type { StateStore } from "./state-store.js";

export interface ActorSystemOptions {
  /** Passivate an actor that received nothing for this long. */
  idleMs?: number;
  /** Where a failing `receive` is reported; the actor stays alive and takes its next message. */
  onError?: (key: string, error: unknown) => void;
  /** Where this system's actors live in the store (default `actor/<kind>/`): one system per shard keeps shards apart. */
  prefix?: string;
}

/** One checkpoint's writes, as they go to the store (full store keys). */
export interface CheckpointChanges {
  puts: [string, Uint8Array][];
  deletes: string[];
}

/**
 * State kept beside the activations, outside any actor (a shard's table of plain windows): it
 * hands its changed states to every cut, so they are checkpointed with the actors', and forgets
 * everything when the system resets.
 */
export interface StateHolder {
  collect(put: (key: string, state: Uint8Array) => void): void;
  reset(): void;
}

/** A cut of the changed actors (`ActorSystem.cut`), to be written once. */
export interface ActorCut {
  readonly changes: CheckpointChanges;
  /** Writes the cut as `checkpoint` does; rejects if `replicate` or the store fails. */
  write(replicate?: (changes: CheckpointChanges) => Promise<[string, Uint8Array][] | void>): Promise<void>;
}

/**
 * One live actor. It is also the context its actor is given: one object per activation, with its
 * methods on the prototype, because an active window costs what its activation costs (README,
 * "Memory") and a million of them must fit in well under a GiB. So no closures per activation, no
 * queue of its own (the system's inbox holds every actor's messages), no timer map until one is
 * needed, and no idle timer (the system sweeps idle ones).
 */
class Activation<M> implements ActorContext<M> {
  /** Undefined while its state is being read (`loading`), or if that read failed (its messages are dropped). */
  actor?: Actor<M>;
  /** The read of its stored state, started on its first message: its messages wait for it. */
  loading?: Promise<void>;
  /** Its messages in the system's inbox, not yet processed. */
  queued = 0;
  /** Changed since its state was last checkpointed. */
  dirty = false;
  passivateRequested = false;
  /** The idle sweep's tick at which it last finished its messages (a small integer, not a boxed ms time). */
  idleSince: number;
  /** Processing-time timers by name, once it has set one. */
  timers?: Map<string, NodeJS.Timeout>;

  constructor(
    readonly key: string,
    private readonly system: ActorSystem<M>,
    /** The system's generation it was created in (see `reset`). */
    readonly generation: number,
    tick: number,
  ) {
    this.idleSince = tick;
  }

  send(to: string, message: M): void {
    // An activation left over from before a reset must not feed the new generation.
    if (this.system.isGeneration(this.generation)) this.system.send(to, message);
  }

  setTimer(name: string, ms: number, message: M): void {
    this.cancelTimer(name);
    const timer = setTimeout(() => {
      this.timers?.delete(name);
      if (this.system.isCurrent(this)) this.system.send(this.key, message);
    }, ms);
    (this.timers ??= new Map()).set(name, timer);
  }

  cancelTimer(name: string): void {
    const old = this.timers?.get(name);
    if (!old) return;
    clearTimeout(old);
    this.timers!.delete(name);
  }

  passivate(): void {
    this.passivateRequested = true;
  }

  clearTimers(): void {
    if (!this.timers) return;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers = undefined;
  }
}

/**
 * Hosts the activations of one actor kind on this node. State lives in the store under
 * `actor/<kind>/<key>` and is written only by `checkpoint`, in one atomic batch with whatever
 * position the caller records beside it: so the store always holds the actors exactly as of a
 * recorded position, and a crash rolls every actor back to the same point. A passivated actor's
 * snapshot waits in memory until that checkpoint (and serves its reactivation meanwhile).
 */
export class ActorSystem<M> {
  /** In the order they last went idle (oldest first), so the idle sweep stops at the first one not due. */
  private readonly activations = new Map<string, Activation<M>>();
  /** Snapshots of passivated actors not yet checkpointed; `null` means "delete". */
  private unsaved = new Map<string, Uint8Array | null>();
  /** The states of the cut being written (`cut`): newer than the store's until the write is done. */
  private saving?: Map<string, Uint8Array | null>;
  private writing?: Promise<void>;
  private readonly idleMs: number;
  private readonly onError: (key: string, error: unknown) => void;
  readonly prefix: string;
  private pending = 0;
  /**
   * Every message not yet processed, in the order sent, as (activation, message) pairs from
   * `head` on: one queue for all actors, so the system processes its messages strictly in send
   * order (see `deliver`).
   */
  private inbox: unknown[] = [];
  private head = 0;
  /** `deliver` is under way (maybe waiting for a state read): a send only queues. */
  private delivering = false;
  private drained: (() => void)[] = [];
  private generation = 0;
  /** Passivates idle activations, every quarter of `idleMs`; runs while there are any. */
  private sweeper?: NodeJS.Timeout;
  /** Sweeps so far: the clock activations go idle by. */
  private ticks = 0;
  /** Ticks an activation stays idle before it is passivated. */
  private readonly idleTicks: number;
  /** See `StateHolder`: one at a time, the latest set. */
  holder?: StateHolder;

  constructor(
    private readonly kind: ActorKind<M>,
    private readonly store: StateStore,
    options: ActorSystemOptions = {},
  ) {
    this.idleMs = options.idleMs ?? 60_000;
    this.idleTicks = this.idleMs > 0 ? 4 : 0;
    this.onError = options.onError ?? ((key, e) => console.error(`actor ${kind.name}/${key} failed:`, e));
    this.prefix = options.prefix ?? `actor/${kind.name}/`;
  }

  /**
   * Queue `message` for the actor `key`, activating it if needed. Never blocks. `fresh`: the
   * caller knows this actor has never been checkpointed (it keeps track of the keys it created),
   * so an activation starts empty without reading the store: one RocksDB read less per new actor,
   * which is most of what a new window costs when hundreds of thousands open every minute.
   */
  send(key: string, message: M, fresh = false): void {
    let activation = this.activations.get(key);
    if (!activation) {
      activation = this.activate(key);
      this.load(activation, fresh);
    }
    activation.queued++;
    this.pending++;
    this.inbox.push(activation, message);
    if (!this.delivering) void this.deliver();
  }

  /**
   * `state` for actor `key`, from outside (a `StateHolder` handing a key over to become an
   * actor): it is checkpointed as a passivated actor's would be, and the actor starts from it.
   */
  adopt(key: string, state: Uint8Array): void {
    if (this.activations.has(key)) throw new Error(`actor ${key} is active: its state cannot be handed to it`);
    this.unsaved.set(key, state);
  }

  /**
   * Drops actor `key`'s state without activating it: nothing is read, and the next cut deletes
   * its stored copy (a delete like a passivated actor's `undefined` snapshot, replicated the
   * same way). Only while it is not active: returns false, doing nothing, when it is, since its
   * queued messages and its state in memory come first; the caller then tells it by a message.
   * (A key the `holder` keeps is the holder's to drop.)
   */
  forget(key: string): boolean {
    if (this.activations.has(key)) return false;
    this.unsaved.set(key, null);
    return true;
  }

  /** Messages queued and not yet processed. */
  get pendingCount(): number {
    return this.pending;
  }

  get activeCount(): number {
    return this.activations.size;
  }

  /** Resolves once every queued message has been processed. */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  /**
   * Persist every actor changed since the last checkpoint (active or passivated), together with
   * `extra` entries, in one atomic write. Waits for queued messages (and a cut still being
   * written) first. `replicate` sees the same changes before the store does (to copy them
   * elsewhere) and may add entries of its own to the write (say, where the copy stands); if it
   * fails, nothing is written.
   */
  async checkpoint(
    extra: [string, Uint8Array][] = [],
    deletes: string[] = [],
    replicate?: (changes: CheckpointChanges) => Promise<[string, Uint8Array][] | void>,
  ): Promise<void> {
    for (;;) {
      if (this.writing) await this.writing.catch(() => undefined);
      else if (this.pending > 0) await this.idle();
      else return this.cut(extra, deletes).write(replicate);
    }
  }

  /**
   * A consistent cut of every actor changed since the last cut, taken synchronously: call it
   * when idle, between two of the caller's input messages, and record the caller's position in
   * `extra`. Messages processed after it mark their actors dirty again, for the next cut, so the
   * caller can go on feeding actors while the cut is written. Until the write is done, the
   * cut's states serve reactivations: the store does not have them yet. One cut at a time.
   */
  cut(extra: [string, Uint8Array][] = [], deletes: string[] = []): ActorCut {
    if (this.pending > 0) throw new Error("a cut needs idle actors: queued messages would fall half in");
    if (this.saving) throw new Error("the previous cut is still being written");
    this.holder?.collect((key, state) => this.unsaved.set(key, state));
    // Taken whole, not copied: after a minute's close it holds a million final windows.
    const saving = this.unsaved;
    this.unsaved = new Map();
    for (const activation of this.activations.values()) {
      if (!activation.dirty || !activation.actor) continue;
      saving.set(activation.key, activation.actor.snapshot() ?? null);
      activation.dirty = false;
    }
    const puts: [string, Uint8Array][] = [...extra];
    const removed = [...deletes];
    for (const [key, state] of saving) {
      if (state) puts.push([this.prefix + key, state]);
      else removed.push(this.prefix + key);
    }
    this.saving = saving;
    const generation = this.generation;
    const changes = { puts, deletes: removed };
    return {
      changes,
      write: (replicate) => {
        const written = (async () => {
          try {
            const added = await replicate?.(changes);
            await this.store.write(added ? [...puts, ...added] : puts, removed);
          } catch (e) {
            // Not written: the cut's states go back to waiting for the next checkpoint.
            if (generation === this.generation) this.uncut(saving);
            throw e;
          }
        })();
        this.writing = written;
        // Registered before the caller's own await, so the caller resumes with the cut retired.
        const retire = () => {
          if (this.saving === saving) this.saving = undefined;
          if (this.writing === written) this.writing = undefined;
        };
        written.then(retire, retire);
        return written;
      },
    };
  }

  private uncut(saving: Map<string, Uint8Array | null>): void {
    for (const [key, state] of saving) {
      const activation = this.activations.get(key);
      // A live actor holds the same state or a newer one; otherwise the cut's is the latest.
      if (activation?.actor) activation.dirty = true;
      else if (!this.unsaved.has(key)) this.unsaved.set(key, state);
    }
  }

  /** Checkpoint, then drop every activation: a clean shutdown. */
  async stop(extra: [string, Uint8Array][] = []): Promise<void> {
    await this.checkpoint(extra);
    this.reset();
  }

  /**
   * Forget everything not checkpointed: every activation, timer and unsaved snapshot. The next
   * message reactivates from the store, i.e. from the last checkpoint. Used to recover from a
   * failure without restarting the process.
   */
  reset(): void {
    this.generation++;
    this.holder?.reset();
    for (const activation of this.activations.values()) activation.clearTimers();
    this.activations.clear();
    this.stopSweeper();
    this.unsaved.clear();
    this.saving = undefined;
    this.inbox = [];
    this.head = 0;
    this.delivering = false;
    this.pending = 0;
    for (const resolve of this.drained.splice(0)) resolve();
  }

  /** Every actor key with state: checkpointed, unsaved or active. For rebuilding indexes after a restart. */
  async *storedStates(): AsyncIterable<[string, Uint8Array]> {
    for await (const [key, value] of this.store.scan(this.prefix, this.prefix + "\uffff")) {
      yield [key.slice(this.prefix.length), value];
    }
  }

  /** @internal (for Activation): whether no reset happened since `generation`. */
  isGeneration(generation: number): boolean {
    return generation === this.generation;
  }

  /** @internal (for Activation): whether `activation` is still the live one for its key. */
  isCurrent(activation: Activation<M>): boolean {
    return this.activations.get(activation.key) === activation;
  }

  private activate(key: string): Activation<M> {
    const activation = new Activation(key, this, this.generation, this.ticks);
    this.activations.set(key, activation);
    this.sweeper ??= setInterval(() => this.sweep(), Math.max(1, this.idleMs / 4));
    return activation;
  }

  /**
   * A new activation's actor: empty when `fresh`, from an unsaved or cut state at once, or from
   * the store, read in the background (its messages wait in the inbox meanwhile).
   */
  private load(activation: Activation<M>, fresh: boolean): void {
    const key = activation.key;
    if (this.unsaved.has(key)) return this.create(activation, this.unsaved.get(key) ?? undefined);
    if (this.saving?.has(key)) return this.create(activation, this.saving.get(key) ?? undefined);
    if (fresh) return this.create(activation, undefined);
    const generation = this.generation;
    activation.loading = this.store.get(this.prefix + key).then(
      (state) => {
        activation.loading = undefined;
        if (generation === this.generation) this.create(activation, state);
      },
      (e) => {
        activation.loading = undefined;
        if (generation === this.generation) this.fail(activation, e);
      },
    );
  }

  private create(activation: Activation<M>, state: Uint8Array | undefined): void {
    try {
      activation.actor = this.kind.create(activation.key, state);
    } catch (e) {
      this.fail(activation, e);
    }
  }

  /** Its state could not be read: reported, and its messages are dropped; a later send starts afresh. */
  private fail(activation: Activation<M>, e: unknown): void {
    this.onError(activation.key, e);
    if (this.activations.get(activation.key) === activation) this.activations.delete(activation.key);
  }

  /**
   * Processes the inbox in send order, one message at a time: a message whose actor still waits
   * for its stored state holds up every later one, to any actor. Why: an actor's effects on
   * other actors (a window's hand-ups to its rollup window) must arrive in an order fixed by the
   * mailbox, not by which actors happened to be in memory, so that a replay after a crash
   * re-emits exactly the same revisions (README, "Exactly once"). The reads themselves overlap:
   * each starts on its actor's first message. Synchronous while nothing needs waiting for, so a
   * send to an actor in memory is processed before `send` returns (and messages it sends, after
   * it, in order).
   */
  private async deliver(): Promise<void> {
    const generation = this.generation;
    this.delivering = true;
    while (this.head < this.inbox.length) {
      const activation = this.inbox[this.head] as Activation<M>;
      if (activation.loading) {
        await activation.loading;
        if (generation !== this.generation) return;
        continue;
      }
      const message = this.inbox[this.head + 1] as M;
      this.inbox[this.head] = this.inbox[this.head + 1] = undefined;
      this.head += 2;
      // A long busy spell (reads keep it from ever running dry) must not keep what it consumed.
      if (this.head >= 8192 && this.head * 2 >= this.inbox.length) {
        this.inbox = this.inbox.slice(this.head);
        this.head = 0;
      }
      activation.queued--;
      if (activation.actor) {
        try {
          const done = activation.actor.receive(message, activation);
          if (done) await done;
        } catch (e) {
          this.onError(activation.key, e);
        }
        if (generation !== this.generation) return;
        activation.dirty = true;
        if (activation.queued === 0) {
          // (A snapshot that throws must not stop the inbox: reported, and the actor stays active.)
          if (activation.passivateRequested) this.tryPassivate(activation);
          else this.wentIdle(activation);
        }
      }
      this.settle(1);
    }
    this.inbox.length = 0;
    this.head = 0;
    this.delivering = false;
  }

  private tryPassivate(activation: Activation<M>): void {
    try {
      this.passivate(activation);
    } catch (e) {
      this.onError(activation.key, e);
    }
  }

  private passivate(activation: Activation<M>): void {
    if (activation.queued > 0 || this.activations.get(activation.key) !== activation) return;
    // Taken first: if it throws, the actor stays active with its state (the next cut tries again).
    const state = activation.dirty && activation.actor ? (activation.actor.snapshot() ?? null) : undefined;
    this.activations.delete(activation.key);
    activation.clearTimers();
    if (state !== undefined) this.unsaved.set(activation.key, state);
    if (this.activations.size === 0) this.stopSweeper();
  }

  /** It has processed its messages: it moves to the end of the idle order. */
  private wentIdle(activation: Activation<M>): void {
    // Once per sweep tick at most: the order needs only idle ticks sorted, and a delete and set of
    // the Map per message cost ~5 µs each with 100k actors taking messages round after round
    // (V8 rehashing a Map whose entries keep moving to its end).
    if (activation.idleSince === this.ticks) return;
    activation.idleSince = this.ticks;
    this.activations.delete(activation.key);
    this.activations.set(activation.key, activation);
  }

  /**
   * Passivates every activation idle for `idleMs`: one interval timer for the whole system rather
   * than a timer per actor. Passivation comes between `idleMs` and `1.25 × idleMs` after the last
   * message (it went idle within some tick, and more than 4 ticks of `idleMs / 4` passed). The
   * oldest come first, so it stops at the first one not idle long enough.
   */
  private sweep(): void {
    this.ticks++;
    for (const activation of this.activations.values()) {
      if (this.ticks - activation.idleSince <= this.idleTicks) break;
      // One still working (or with messages waiting) is moved to the end when it finishes.
      if (activation.queued === 0) this.tryPassivate(activation);
    }
    if (this.activations.size === 0) this.stopSweeper();
  }

  private stopSweeper(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  private settle(n: number) {
    this.pending -= n;
    if (this.pending === 0) for (const resolve of this.drained.splice(0)) resolve();
  }
}
