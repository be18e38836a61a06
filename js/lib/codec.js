// Binary arrays from the kernel: {dtype, shape, data}. `data` may arrive as a
// DataView, an ArrayBuffer or a typed array, and a DataView/typed array may be a
// window into a larger buffer, so byteOffset and byteLength are always honoured.
// Every packed array a view reads (traits, reply buffers, pushes, exported pages) goes
// through decode(); see protocol.js for which message carries which array.

const SIZES = { float32: 4, float16: 2, uint8: 1, uint16: 2, int32: 4 };

/** A Uint8Array over exactly the bytes of `data` (no copy). */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`expected binary data, received ${Object.prototype.toString.call(data)}`);
}

/** Bytes of a base64 string (browser atob, or Buffer under node for the tests). */
export function fromBase64(s) {
  if (typeof atob === "function") {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  return new Uint8Array(Buffer.from(s, "base64"));
}

/** IEEE 754 half -> float. */
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

let HALF_TABLE = null;
function halfTable() {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) HALF_TABLE[i] = halfToFloat(i);
  }
  return HALF_TABLE;
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Decode a packed array. Returns {data, shape, dtype}; float16 becomes Float32Array.
 * Little-endian, as Python packs it; copies only when alignment requires it.
 */
export function decode(packed, dataOverride) {
  const { dtype, shape } = packed;
  const size = SIZES[dtype];
  if (!size) throw new Error(`unknown dtype ${dtype}`);
  const bytes = asBytes(dataOverride ?? packed.data);
  const n = product(shape);
  if (bytes.byteLength !== n * size) {
    throw new Error(`${dtype}${JSON.stringify(shape)} needs ${n * size} bytes, received ${bytes.byteLength}`);
  }
  // Typed arrays need an offset that is a multiple of the element size.
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset } = aligned;
  let data;
  if (dtype === "uint8") data = new Uint8Array(buffer, byteOffset, n);
  else if (dtype === "float32") data = new Float32Array(buffer, byteOffset, n);
  else if (dtype === "int32") data = new Int32Array(buffer, byteOffset, n);
  else {
    const u16 = new Uint16Array(buffer, byteOffset, n);
    if (dtype === "uint16") data = u16;
    else {
      const table = halfTable();
      data = new Float32Array(n);
      for (let i = 0; i < n; i++) data[i] = table[u16[i]];
    }
  }
  return { data, shape: shape.slice(), dtype };
}

/** Largest finite value of an array-like (0 for empty). */
export function maxOf(arr) {
  let m = 0;
  for (let i = 0; i < arr.length; i++) if (arr[i] > m && arr[i] !== Infinity) m = arr[i];
  return m;
}
