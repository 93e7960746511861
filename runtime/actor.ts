/**
 * A virtual actor: addressed by key, activated on its first message (with its persisted state,
 * if any), fed one message at a time, and passivated when idle or done. It never knows where it
 * runs, nor how its state is stored: it only turns messages into state and effects.
 */
export interface Actor<M> {
  receive(message: M, context: ActorContext<M>): void | Promise<void>;
  /** The state worth keeping; `undefined` means "nothing": the stored copy is deleted. */
  snapshot(): Uint8Array | undefined;
}

export interface ActorContext<M> {
  readonly key: string;
  /**
   * Queue `message` for another actor of the same system (activating it if needed). It counts
   * as pending work like any other message, so `idle()` (and so a checkpoint) waits for it.
   */
  send(key: string, message: M): void;
  /** Deliver `message` to this actor after `ms`. A timer with the same name is replaced. */
  setTimer(name: string, ms: number, message: M): void;
  cancelTimer(name: string): void;
  /** Deactivate after this message: the snapshot is persisted, timers are dropped. */
  passivate(): void;
}

/** How to make actors of one kind. `state` is the last persisted snapshot, if any. */
export interface ActorKind<M> {
  readonly name: string;
  create(key: string, state: Uint8Array | undefined): Actor<M>;
}
