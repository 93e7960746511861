import assert from "node:assert/strict";
import { test } from "node:test";
import { desiredOwners, planMoves } from "../cluster/placement.js";

const shards = Array.from({ length: 32 }, (_, i) => `shard.${i}`);
const three = ["node-a", "node-b", "node-c"];
const four = [...three, "node-d"];

function changed(before: Map<string, string>, after: Map<string, string>): string[] {
  return [...after].filter(([unit, owner]) => before.get(unit) !== owner).map(([unit]) => unit);
}

test("every unit gets a live member, and every member gets some units", () => {
  const owners = desiredOwners(shards, three);
  assert.deepEqual([...owners.keys()], shards);
  for (const owner of owners.values()) assert.ok(three.includes(owner), owner);
  for (const member of three) {
    const count = [...owners.values()].filter((o) => o === member).length;
    assert.ok(count >= 4, `${member} owns only ${count} of 32`);
  }
});

test("no members: no owners", () => {
  assert.equal(desiredOwners(shards, []).size, 0);
});

test("the same member set gives the same owners whatever its order", () => {
  const reference = desiredOwners(shards, four);
  for (const order of [["node-d", "node-c", "node-b", "node-a"], ["node-b", "node-d", "node-a", "node-c"], [...four, "node-b"]]) {
    assert.deepEqual(desiredOwners(shards, order), reference, order.join(","));
  }
});

test("a fourth member takes about a quarter of the units, only ever from the others to itself", () => {
  const before = desiredOwners(shards, three);
  const after = desiredOwners(shards, four);
  const moved = changed(before, after);
  for (const unit of moved) assert.equal(after.get(unit), "node-d", `${unit} moved ${before.get(unit)} → ${after.get(unit)}`);
  // 8 is a fair share; consistent hashing with 32 units is lumpy, but not by more than half.
  assert.ok(moved.length >= 4 && moved.length <= 12, `${moved.length} of 32 units moved`);
  assert.equal([...after.values()].filter((o) => o === "node-d").length, moved.length);
});

test("a member leaving moves only its own units", () => {
  const before = desiredOwners(shards, four);
  const after = desiredOwners(shards, ["node-a", "node-b", "node-d"]);
  const moved = changed(before, after);
  assert.ok(moved.length > 0);
  for (const unit of moved) assert.equal(before.get(unit), "node-c", unit);
  assert.deepEqual(moved, [...before].filter(([, o]) => o === "node-c").map(([u]) => u));
});

test("a plan moves only what differs, orphans first, then by name, at most maxMoves", () => {
  const desired = desiredOwners(shards, four);
  // Current: the three-member layout, with two units unowned and two owned by a dead node.
  const current = new Map<string, string | null>(desiredOwners(shards, three));
  const stillPlaced = shards.filter((u) => desired.get(u) === current.get(u));
  const [unowned1, unowned2, deadOwned1, deadOwned2] = stillPlaced;
  current.set(unowned1!, null);
  current.delete(unowned2!);
  current.set(deadOwned1!, "node-x");
  current.set(deadOwned2!, "node-x");
  const live = new Set(four);

  const all = planMoves(current, desired, 1_000, live);
  const toNewMember = changed(desiredOwners(shards, three), desired);
  assert.equal(all.length, toNewMember.length + 4);
  const orphans = [unowned1!, unowned2!, deadOwned1!, deadOwned2!].sort();
  assert.deepEqual(all.slice(0, 4).map((m) => m.unit), orphans);
  for (const m of all.slice(0, 4)) assert.deepEqual(m, { unit: m.unit, from: null, to: desired.get(m.unit) });
  const rest = all.slice(4);
  assert.deepEqual(rest.map((m) => m.unit), [...toNewMember].sort());
  for (const m of rest) assert.deepEqual(m, { unit: m.unit, from: desiredOwners(shards, three).get(m.unit), to: "node-d" });

  assert.deepEqual(planMoves(current, desired, 3, live), all.slice(0, 3));
  assert.deepEqual(planMoves(current, desired, 0, live), []);
  assert.deepEqual(planMoves(new Map(desired), desired, 10, live), [], "nothing to do when every unit is in place");
  // Without the live set, a dead owner is just an owner: it is handed off from, after the unowned.
  const blind = planMoves(current, desired, 1_000);
  assert.deepEqual(blind.slice(0, 2).map((m) => m.unit), [unowned1!, unowned2!].sort());
  assert.equal(blind.find((m) => m.unit === deadOwned1)?.from, "node-x");
});
