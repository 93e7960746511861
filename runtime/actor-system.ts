import type { Actor, ActorContext, ActorKind } from "./actor.js";
import type { StateStore } from "./state-store.js";

export interface ActorSystemOptions {
  /** Passivate an actor that received nothing for this long (its state is persisted first). */
  idleMs?: number;
  /** Where a failing `receive` is reported; the actor stays alive and takes its next message. */
  onError?: (key: string, error: unknown) => void;
}

interface Activation<M> {
  readonly key: string;
  actor?: Actor<M>;
  readonly queue: M[];
  running: boolean;
  /** Changed since its state was last written to the store. */
  dirty: boolean;
  passivateRequested: boolean;
  idleTimer?: NodeJS.Timeout;
  readonly timers: Map<string, NodeJS.Timeout>;
  readonly context: ActorContext<M>;
}

/**
 * Hosts the activations of one actor kind on this node. State lives in the store under
 * `actor/<kind>/<key>`; `checkpoint` writes every changed actor in one atomic batch with
 * whatever position the caller wants recorded beside it.
 */
export class ActorSystem<M> {
  private readonly activations = new Map<string, Activation<M>>();
  private readonly idleMs: number;
  private readonly onError: (key: string, error: unknown) => void;
  private readonly prefix: string;
  /** Snapshots of passivated actors still being written: a reactivation waits for them. */
  private readonly persisting = new Map<string, Promise<void>>();
  private pending = 0;
  private drained: (() => void)[] = [];
  private stopped = false;

  constructor(
    private readonly kind: ActorKind<M>,
    private readonly store: StateStore,
    options: ActorSystemOptions = {},
  ) {
    this.idleMs = options.idleMs ?? 60_000;
    this.onError = options.onError ?? ((key, e) => console.error(`actor ${kind.name}/${key} failed:`, e));
    this.prefix = `actor/${kind.name}/`;
  }

  /** Queue `message` for the actor `key`, activating it if needed. Never blocks. */
  send(key: string, message: M): void {
    if (this.stopped) throw new Error(`actor system ${this.kind.name} is stopped`);
    const activation = this.activations.get(key) ?? this.activate(key);
    activation.queue.push(message);
    this.pending++;
    if (!activation.running) void this.drain(activation);
  }

  /** Send `message` to every active actor (a watermark, a tick). */
  broadcast(message: M): void {
    for (const key of this.activations.keys()) this.send(key, message);
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
   * Persist every actor changed since the last checkpoint, together with `extra` entries, in one
   * atomic write. Call it when the system is idle, or the snapshot may miss queued messages.
   */
  async checkpoint(extra: [string, Uint8Array][] = []): Promise<void> {
    const puts: [string, Uint8Array][] = [...extra];
    const deletes: string[] = [];
    for (const activation of this.activations.values()) {
      if (!activation.dirty || !activation.actor) continue;
      this.collect(activation, puts, deletes);
    }
    await this.store.write(puts, deletes);
  }

  /** Passivate every actor (persisting its state) and refuse further messages. */
  async stop(): Promise<void> {
    await this.idle();
    this.stopped = true;
    const puts: [string, Uint8Array][] = [];
    const deletes: string[] = [];
    for (const activation of this.activations.values()) {
      this.clearTimers(activation);
      if (activation.dirty && activation.actor) this.collect(activation, puts, deletes);
    }
    this.activations.clear();
    await this.store.write(puts, deletes);
  }

  private activate(key: string): Activation<M> {
    const activation: Activation<M> = {
      key,
      queue: [],
      running: false,
      dirty: false,
      passivateRequested: false,
      timers: new Map(),
      context: {
        key,
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
    activation.running = true;
    if (activation.idleTimer) clearTimeout(activation.idleTimer);
    let processed = 0;
    try {
      if (!activation.actor) {
        await this.persisting.get(activation.key);
        const state = await this.store.get(this.prefix + activation.key);
        activation.actor = this.kind.create(activation.key, state);
      }
      while (activation.queue.length > 0) {
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
      if (activation.passivateRequested) await this.passivate(activation);
      else {
        activation.idleTimer = setTimeout(
          () => this.passivate(activation).catch((e) => this.onError(activation.key, e)),
          this.idleMs,
        );
      }
    } catch (e) {
      // Activation or persistence failed (state unreadable, disk full): report it, drop what was queued.
      this.onError(activation.key, e);
      processed += activation.queue.length;
      activation.queue.length = 0;
      activation.running = false;
      if (this.activations.get(activation.key) === activation) this.activations.delete(activation.key);
    } finally {
      // Settled only now, so `idle()` also covers the passivation write.
      this.settle(processed);
    }
  }

  private async passivate(activation: Activation<M>): Promise<void> {
    if (activation.running || this.activations.get(activation.key) !== activation) return;
    this.activations.delete(activation.key);
    this.clearTimers(activation);
    if (!activation.dirty || !activation.actor) return;
    const puts: [string, Uint8Array][] = [];
    const deletes: string[] = [];
    this.collect(activation, puts, deletes);
    this.pending++;
    const written = this.store.write(puts, deletes).finally(() => {
      if (this.persisting.get(activation.key) === written) this.persisting.delete(activation.key);
      this.settle(1);
    });
    this.persisting.set(activation.key, written);
    await written;
  }

  private collect(activation: Activation<M>, puts: [string, Uint8Array][], deletes: string[]) {
    const state = activation.actor!.snapshot();
    if (state) puts.push([this.prefix + activation.key, state]);
    else deletes.push(this.prefix + activation.key);
    activation.dirty = false;
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
