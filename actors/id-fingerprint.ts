/**
 * A 96-bit fingerprint of an event id: three 32-bit hashes computed by three different mixing
 * functions in one pass over the id's UTF-8 bytes (ids are short: one pass, no allocation).
 * The same id gives the same fingerprint whether it arrives as bytes (a protobuf batch, hashed
 * where it lies in the message) or as a string (JSON).
 * The words are returned in a reused array: read them before the next call.
 */
export function idFingerprintOfBytes(bytes: Uint8Array, start: number, end: number): Uint32Array {
  const length = end - start;
  let a = 0x811c9dc5 ^ length; // FNV-1a, finished with murmur's fmix32
  let b = 0x9747b28c; // murmur3-style per byte
  let c = 0x165667b1 + length; // xxhash32-style per byte
  for (let i = start; i < end; i++) {
    const unit = bytes[i]!;
    a = Math.imul(a ^ unit, 0x01000193);
    let k = Math.imul(unit, 0xcc9e2d51);
    k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
    b ^= k;
    b = (Math.imul((b << 13) | (b >>> 19), 5) + 0xe6546b64) | 0;
    c = (c + Math.imul(unit, 0x27d4eb2f)) | 0;
    c = Math.imul((c << 11) | (c >>> 21), 0x9e3779b1);
  }
  out[0] = fmix32(a);
  out[1] = fmix32(b ^ length);
  out[2] = fmix32(c);
  return out;
}

/** The fingerprint of `id`'s UTF-8 bytes, encoded into a reused buffer (ids are short). */
export function idFingerprint(id: string): Uint32Array {
  const { read, written } = utf8.encodeInto(id, scratch);
  if (read === id.length) return idFingerprintOfBytes(scratch, 0, written);
  const bytes = utf8.encode(id);
  return idFingerprintOfBytes(bytes, 0, bytes.length);
}

const scratch = new Uint8Array(1024);
const out = new Uint32Array(3);
const utf8 = new TextEncoder();

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
