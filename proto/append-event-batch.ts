import { decodeAscii, type EventColumns, type RowGate } from "../actors/event-columns.js";
import { idFingerprintOfBytes } from "../actors/id-fingerprint.js";
import { emptyScan, scanEventBatch, type EventBatchScan } from "./event-batch-reader.js";

/** One scan, one column of absolute times and one of fingerprints, reused batch after batch (appending is synchronous). */
const scan = emptyScan();
let times = new Float64Array(1024);
let fingerprints = new Uint32Array(3 * 1024);


/**
 * Appends the events of one `EventBatch` (tally.proto) to `columns` as rows of message `message`,
 * each followed by `gate.admit(row)`: false drops the row again (a refused or duplicate event).
 *
 * Throws an Error (and only an Error), having appended nothing, when the batch is malformed:
 * bad protobuf, inconsistent column lengths, a dictionary index out of range, a tag key or value
 * name twice within an event, a ts outside the safe-integer range, or no source/kind column and
 * no `subject`. `subject` supplies source and kind when the batch leaves those columns empty.
 */
export function appendEventBatch(
  columns: EventColumns,
  bytes: Uint8Array,
  message: number,
  subject: { source: string; kind: string } | undefined,
  arrival: number,
  gate?: RowGate,
): void {
  let b: EventBatchScan;
  try {
    b = scanEventBatch(bytes, scan);
  } catch (err) {
    throw new Error(`EventBatch: invalid protobuf: ${err instanceof Error ? err.message : String(err)}`);
  }
  const n = b.ids.length / 2;
  checkStructure(b, n, subject);
  const ids = b.ids.data;
  const kinds = b.kinds.data;
  const sources = b.sources.data;
  const tagCounts = b.tagCounts.data;
  const tags = b.tags.data;
  const valueCounts = b.valueCounts.data;
  const valueNames = b.valueNames.data;
  const values = b.values.data;

  if (fingerprints.length < 3 * n) fingerprints = new Uint32Array(3 * n);
  for (let i = 0; i < n; i++) {
    const f = idFingerprintOfBytes(bytes, ids[2 * i]!, ids[2 * i + 1]!);
    fingerprints[3 * i] = f[0]!;
    fingerprints[3 * i + 1] = f[1]!;
    fingerprints[3 * i + 2] = f[2]!;
  }
  gate?.prepare?.(fingerprints, n);
  const dict = columns.dictionaryOf(b.dict);
  let kind = -1;
  let kindStart = -1;
  let kindEnd = -1;
  let t = 0;
  let v = 0;
  for (let i = 0; i < n; i++) {
    // Kinds of a batch are mostly one: a byte comparison with the previous one saves a string.
    if (b.kinds.length === 0) {
      if (kind < 0) kind = columns.internKind(subject!.kind);
    } else {
      const start = kinds[2 * i]!;
      const end = kinds[2 * i + 1]!;
      if (kind < 0 || !sameBytes(bytes, start, end, kindStart, kindEnd)) {
        kind = columns.internKind(decodeAscii(bytes, start, end));
        kindStart = start;
        kindEnd = end;
      }
    }
    const row = columns.beginRow(times[i]!, arrival, kind, message, i);
    columns.idStart[row] = ids[2 * i]!;
    columns.idEnd[row] = ids[2 * i + 1]!;
    if (b.sources.length > 0) {
      columns.sourceStart[row] = sources[2 * i]!;
      columns.sourceEnd[row] = sources[2 * i + 1]!;
    }
    for (let end = t + tagCounts[i]!; t < end; t++) columns.addTag(dict[tags[2 * t]!]!, dict[tags[2 * t + 1]!]!);
    for (let end = v + valueCounts[i]!; v < end; v++) columns.addValue(dict[valueNames[v]!]!, values[v]!);
    columns.setFingerprint(fingerprints, i);
    if (gate && !gate.admit(row)) columns.pop();
  }
}

/** Everything that can be wrong with a batch as a whole; after it, appending cannot fail. */
function checkStructure(b: EventBatchScan, n: number, subject: { source: string; kind: string } | undefined): void {
  const fail = (msg: string): never => {
    throw new Error(`EventBatch: ${msg}`);
  };
  const expectLen = (name: string, len: number, want: number) => {
    if (len !== want) fail(`column ${name} has ${len} entries, expected ${want}`);
  };
  expectLen("ts", b.ts.length, n);
  expectLen("tag_counts", b.tagCounts.length, n);
  expectLen("value_counts", b.valueCounts.length, n);
  if (b.sources.length !== 0) expectLen("sources", b.sources.length / 2, n);
  else if (n > 0 && subject === undefined) fail("column sources is empty and no subject source was given");
  if (b.kinds.length !== 0) expectLen("kinds", b.kinds.length / 2, n);
  else if (n > 0 && subject === undefined) fail("column kinds is empty and no subject kind was given");
  expectLen("values", b.values.length, b.valueNames.length);

  const size = b.dict.length;
  const inDict = (col: string, pos: number, idx: number) => {
    if (idx >= size) fail(`${col}[${pos}] = ${idx} is outside the dictionary (size ${size})`);
  };
  // A sum of two numbers the reader gave (|x| <= 2^53) is exact whenever it is safe; an offset
  // between two safe timestamps may itself exceed 2^53 (then a bigint): add those as bigints.
  const tsOf = (i: number): number | bigint => b.tsBig.get(i) ?? b.ts.data[i]!;
  if (times.length < n) times = new Float64Array(2 * n);
  const first = n > 0 ? tsOf(0) : 0;
  for (let i = 0; i < n; i++) {
    const offset = i === 0 ? 0 : b.ts.data[i]!;
    if (typeof first === "number" && offset === offset /* not NaN: a number */) {
      const ts = first + offset;
      if (Number.isSafeInteger(ts)) {
        times[i] = ts;
        continue;
      }
    }
    const exact = BigInt(first) + BigInt(i === 0 ? 0 : tsOf(i));
    if (!Number.isSafeInteger(Number(exact)) || BigInt(Number(exact)) !== exact) fail(`ts of event ${i} (${exact}) is outside the safe-integer range`);
    times[i] = Number(exact);
  }
  let t = 0;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const tagCount = b.tagCounts.data[i]!;
    if (2 * (t + tagCount) > b.tags.length) fail(`tag_counts[${i}] = ${tagCount} runs past the end of column tags`);
    const tags = b.tags.data;
    for (let j = t, end = t + tagCount; j < end; j++) {
      inDict("tags", 2 * j, tags[2 * j]!);
      inDict("tags", 2 * j + 1, tags[2 * j + 1]!);
      for (let k = t; k < j; k++) {
        if (b.dict[tags[2 * k]!] === b.dict[tags[2 * j]!]) fail(`event ${i} has tag ${JSON.stringify(b.dict[tags[2 * j]!])} twice`);
      }
    }
    t += tagCount;
    const valueCount = b.valueCounts.data[i]!;
    if (v + valueCount > b.valueNames.length) fail(`value_counts[${i}] = ${valueCount} runs past the end of column value_names`);
    const names = b.valueNames.data;
    for (let j = v, end = v + valueCount; j < end; j++) {
      inDict("value_names", j, names[j]!);
      for (let k = v; k < j; k++) {
        if (b.dict[names[k]!] === b.dict[names[j]!]) fail(`event ${i} has value ${JSON.stringify(b.dict[names[j]!])} twice`);
      }
    }
    v += valueCount;
  }
  expectLen("tags", b.tags.length, 2 * t);
  expectLen("value_names", b.valueNames.length, v);
}

function sameBytes(bytes: Uint8Array, start: number, end: number, otherStart: number, otherEnd: number): boolean {
  if (end - start !== otherEnd - otherStart) return false;
  for (let i = 0; i < end - start; i++) if (bytes[start + i] !== bytes[otherStart + i]) return false;
  return true;
}
