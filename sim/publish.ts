/**
 * Publishes the simulated fleet to NATS core subjects `telemetry.<source>.<kind>`.
 */
import type { NatsConnection } from "@nats-io/transport-node";
import type { TelemetryEvent } from "../actors/event.js";
import { Fleet, type FleetOptions } from "./fleet.js";

export interface SimulatorOptions {
  nc: NatsConnection;
  /** Number of robots (default 1000). */
  robots?: number;
  /** Mean status interval per robot in ms (default 3000). */
  intervalMs?: number;
  /** PRNG seed (default 1). */
  seed?: number;
  /** How often due events are published, ms (default 250). */
  tickMs?: number;
  /** Group events of the same source+kind in one tick into one JSON array message. */
  batch?: boolean;
  /** Called with publish errors (default: logged to stderr). */
  onError?: (e: unknown) => void;
  /** Further fleet options (sites, models, errorRate, ...). */
  fleet?: Omit<FleetOptions, "robots" | "intervalMs" | "seed" | "startMs">;
}

export interface SimulatorHandle {
  /** Stops the timer and flushes the connection. Idempotent. */
  stop(): Promise<void>;
  /** Number of events published so far (events, not messages, in batch mode). */
  published(): number;
}

/** The wire payload: source and kind live in the subject. */
function payloadOf(e: TelemetryEvent): { id: string; ts: number; tags: Record<string, string>; values: Record<string, number> } {
  return { id: e.id, ts: e.ts, tags: e.tags, values: e.values };
}

export function runSimulator(opts: SimulatorOptions): SimulatorHandle {
  const { nc } = opts;
  const tickMs = opts.tickMs ?? 250;
  if (!(tickMs > 0)) throw new Error(`tickMs must be > 0, got ${tickMs}`);
  const onError = opts.onError ?? ((e: unknown) => console.error("simulator:", e));
  const fleet = new Fleet({
    ...opts.fleet,
    robots: opts.robots,
    intervalMs: opts.intervalMs,
    seed: opts.seed,
    startMs: Date.now(),
    // After a long stall (suspended laptop, blocked loop) do not flood: replay at most 30 s.
    maxCatchUpMs: opts.fleet?.maxCatchUpMs ?? 30_000,
  });

  let count = 0;
  let stopped = false;

  const tick = (): void => {
    if (stopped) return;
    if (nc.isClosed()) {
      stopped = true;
      clearInterval(timer);
      onError(new Error("simulator: NATS connection closed"));
      return;
    }
    const events = fleet.eventsDue(Date.now());
    try {
      if (opts.batch) {
        const groups = new Map<string, ReturnType<typeof payloadOf>[]>();
        for (const e of events) {
          const subject = `telemetry.${e.source}.${e.kind}`;
          let g = groups.get(subject);
          if (!g) groups.set(subject, (g = []));
          g.push(payloadOf(e));
        }
        for (const [subject, g] of groups) {
          nc.publish(subject, JSON.stringify(g));
          count += g.length;
        }
      } else {
        for (const e of events) {
          nc.publish(`telemetry.${e.source}.${e.kind}`, JSON.stringify(payloadOf(e)));
          count++;
        }
      }
    } catch (e) {
      onError(e);
    }
  };

  const timer = setInterval(tick, tickMs);

  return {
    async stop(): Promise<void> {
      if (!stopped) {
        stopped = true;
        clearInterval(timer);
      }
      if (!nc.isClosed()) await nc.flush();
    },
    published: () => count,
  };
}
