import assert from "node:assert/strict";
import { test } from "node:test";
import { desiredOwners } from "../cluster/placement.js";

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
