/**
 * Turns of the event loop, handed out one at a time: `next()` resolves at a later turn (in
 * `setImmediate`'s phase, after the turn's I/O), and never two waiters in one turn. Why: work
 * cut into slices that each wait for `setImmediate` still takes a whole turn when many such
 * loops run at once (every shard closing its minute together: 24 slices of ~10 ms between two
 * polls of the sockets), so the events arriving meanwhile waited seconds. Taking turns, they
 * get one slice per turn between them, and everything else runs in between.
 */
export class Turns {
  private readonly waiting: (() => void)[] = [];
  private scheduled = false;

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.waiting.shift()?.();
      if (this.waiting.length > 0) this.schedule();
    });
  }
}
