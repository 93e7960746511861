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

/** A cut of the changed actors (`ActorSystem.cut`), to be written once. */
export interface ActorCut {
  readonly changes: CheckpointChanges;
  /** Writes the cut as `checkpoint` does; rejects if `replicate` or the store fails. */
  write(replicate?: (changes: CheckpointChanges) => Promise<[string, Uint8Array][] | void>): Promise<void>;
}

interface Activation<M> {
  readonly key: string;
  actor?: Actor<M>;
  readonly queue: M[];
  running: boolean;
  /** Changed since its state was last checkpointed. */
  dirty: boolean;
  passivateRequested: boolean;
  idleTimer?: NodeJS.Timeout;
  readonly timers: Map<string, NodeJS.Timeout>;
  readonly context: ActorContext<M>;
}

/**
 * Hosts the activations of one actor kind on this node. State lives in the store under
 * `actor/<kind>/<key>` and is written only by `checkpoint`, in one atomic batch with whatever
 * position the caller records beside it: so the store always holds the actors exactly as of a
 * recorded position, and a crash rolls every actor back to the same point. A passivated actor's
 * snapshot waits in memory until that checkpoint (and serves its reactivation meanwhile).
 */
export class ActorSystem<M> {
  private readonly activations = new Map<string, Activation<M>>();
  /** Snapshots of passivated actors not yet checkpointed; `null` means "delete". */
  private readonly unsaved = new Map<string, Uint8Array | null>();
  /** The states of the cut being written (`cut`): newer than the store's until the write is done. */
  private saving?: Map<string, Uint8Array | null>;
  private writing?: Promise<void>;
  private readonly idleMs: number;
  private readonly onError: (key: string, error: unknown) => void;
  readonly prefix: string;
  private pending = 0;
  private drained: (() => void)[] = [];
  private generation = 0;

  constructor(
    private readonly kind: ActorKind<M>,
    private readonly store: StateStore,
    options: ActorSystemOptions = {},
  ) {
    this.idleMs = options.idleMs ?? 60_000;
    this.onError = options.onError ?? ((key, e) => console.error(`actor ${kind.name}/${key} failed:`, e));
    this.prefix = options.prefix ?? `actor/${kind.name}/`;
  }

  /** Queue `message` for the actor `key`, activating it if needed. Never blocks. */
  send(key: string, message: M): void {
    const activation = this.activations.get(key) ?? this.activate(key);
    activation.queue.push(message);
    this.pending++;
    if (!activation.running) void this.drain(activation);
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
    const saving = new Map(this.unsaved);
    this.unsaved.clear();
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
    for (const activation of this.activations.values()) this.clearTimers(activation);
    this.activations.clear();
    this.unsaved.clear();
    this.saving = undefined;
    this.pending = 0;
    for (const resolve of this.drained.splice(0)) resolve();
  }

  /** Every actor key with state: checkpointed, unsaved or active. For rebuilding indexes after a restart. */
  async *storedStates(): AsyncIterable<[string, Uint8Array]> {
    for await (const [key, value] of this.store.scan(this.prefix, this.prefix + "\uffff")) {
      yield [key.slice(this.prefix.length), value];
    }
  }

  private activate(key: string): Activation<M> {
    const generation = this.generation;
    const activation: Activation<M> = {
      key,
      queue: [],
      running: false,
      dirty: false,
      passivateRequested: false,
      timers: new Map(),
      context: {
        key,
        send: (to, message) => {
          // An activation left over from before a reset must not feed the new generation.
          if (generation === this.generation) this.send(to, message);
        },
        setTimer: (name, ms, message) => {
          const old = activation.timers.get(name);
          if (old) clearTimeout(old);
          activation.timers.set(
            name,
            setTimeout(() => {
              activation.timers.delete(name);
              if (this.activations.get(key) === activation) this.send(key, message);
            }, ms),
          );
        },
        cancelTimer: (name) => {
          const old = activation.timers.get(name);
          if (old) clearTimeout(old);
          activation.timers.delete(name);
        },
        passivate: () => {
          activation.passivateRequested = true;
        },
      },
    };
    this.activations.set(key, activation);
    return activation;
  }

  private async drain(activation: Activation<M>): Promise<void> {
    const generation = this.generation;
    activation.running = true;
    if (activation.idleTimer) clearTimeout(activation.idleTimer);
    let processed = 0;
    try {
      if (!activation.actor) {
        const state = this.unsaved.has(activation.key)
          ? (this.unsaved.get(activation.key) ?? undefined)
          : this.saving?.has(activation.key)
            ? (this.saving.get(activation.key) ?? undefined)
            : await this.store.get(this.prefix + activation.key);
        if (generation !== this.generation) return;
        activation.actor = this.kind.create(activation.key, state);
      }
      while (activation.queue.length > 0 && generation === this.generation) {
        const message = activation.queue.shift()!;
        processed++;
        try {
          const done = activation.actor.receive(message, activation.context);
          if (done) await done;
        } catch (e) {
          this.onError(activation.key, e);
        }
        activation.dirty = true;
      }
      activation.running = false;
      if (generation !== this.generation) return;
      if (activation.passivateRequested) this.passivate(activation);
      else activation.idleTimer = setTimeout(() => this.passivate(activation), this.idleMs);
    } catch (e) {
      // The state could not be read: report it and drop what was queued.
      this.onError(activation.key, e);
      processed += activation.queue.length;
      activation.queue.length = 0;
      activation.running = false;
      if (this.activations.get(activation.key) === activation) this.activations.delete(activation.key);
    } finally {
      if (generation === this.generation) this.settle(processed);
    }
  }

  private passivate(activation: Activation<M>): void {
    if (activation.running || this.activations.get(activation.key) !== activation) return;
    this.activations.delete(activation.key);
    this.clearTimers(activation);
    if (activation.dirty && activation.actor) this.unsaved.set(activation.key, activation.actor.snapshot() ?? null);
  }

  private clearTimers(activation: Activation<M>) {
    if (activation.idleTimer) clearTimeout(activation.idleTimer);
    for (const t of activation.timers.values()) clearTimeout(t);
    activation.timers.clear();
  }

  private settle(n: number) {
    this.pending -= n;
    if (this.pending === 0) for (const resolve of this.drained.splice(0)) resolve();
  }
}
