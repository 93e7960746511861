import HashRing from "hashring";

/**
 * Virtual nodes per member. Passed explicitly because hashring otherwise derives the count from
 * `weight share × default × member count`, which floating point rounds to 40 or 39 (7 members):
 * old members' points would shift when one joins, moving units between them. With only ~32 units
 * balance is lumpy; 512 (× 4 points each) kept the busiest of 2–8 members within 1.5 units of a
 * fair share in a trial, against up to 7 over with 64. Building the ring costs ~2.5 ms per member.
 */
const vnodesPerMember = 512;

/**
 * Where each unit (e.g. `shard.7`) should live, by consistent hashing over the live members.
 * Every node computing it from the same member set gets the same answer, whatever order it
 * learned the members in. Adding a member only moves units to it; removing one only moves its own.
 */
export function desiredOwners(units: readonly string[], members: readonly string[]): Map<string, string> {
  const owners = new Map<string, string>();
  if (members.length === 0) return owners;
  const sorted = [...new Set(members)].sort();
  const ring = new HashRing(Object.fromEntries(sorted.map((id) => [id, { vnodes: vnodesPerMember }])));
  for (const unit of units) owners.set(unit, ring.get(unit)!);
  return owners;
}

export interface Move {
  unit: string;
  /** The current owner; null when nobody owns the unit or its owner is no longer a member. */
  from: string | null;
  to: string;
}

/**
 * The moves of one rebalance round: units whose owner differs from the desired one, at most
 * `maxMoves` so a joining node does not cause a storm. Orphaned units (no owner, or an owner not
 * in `liveMembers`) come first, since nobody is processing them; then by unit name (plain code
 * unit order, the same on every node). An orphan's `from` is null: there is nobody to hand off.
 */
export function planMoves(
  current: ReadonlyMap<string, string | null>,
  desired: ReadonlyMap<string, string>,
  maxMoves: number,
  liveMembers?: ReadonlySet<string>,
): Move[] {
  const moves: (Move & { orphan: boolean })[] = [];
  for (const [unit, to] of desired) {
    const owner = current.get(unit) ?? null;
    if (owner === to) continue;
    const orphan = owner === null || (liveMembers !== undefined && !liveMembers.has(owner));
    moves.push({ unit, from: orphan ? null : owner, to, orphan });
  }
  moves.sort((a, b) => (a.orphan !== b.orphan ? (a.orphan ? -1 : 1) : a.unit < b.unit ? -1 : a.unit > b.unit ? 1 : 0));
  return moves.slice(0, Math.max(0, maxMoves)).map(({ unit, from, to }) => ({ unit, from, to }));
}
