/** 4-bit packing layout and the NF4 code book against the published QLoRA / bitsandbytes values. */
import { describe, expect, it } from 'vitest';
import {
  NF4_CODE, assertEvenPack, nearestNf4, pack4, packInt4, unpack4, unpackInt4,
} from '../../../engine/dtype/index.ts';
import { createDevice, Graph } from '../../../engine/index.ts';

describe('pack4 / unpack4', () => {
  it('puts element 2i in the low nibble of byte i', () => {
    expect(Array.from(pack4(Uint8Array.of(0x1, 0x2, 0xf, 0x0)))).toEqual([0x21, 0x0f]);
    expect(Array.from(unpack4(Uint8Array.of(0xab, 0x5c), 4))).toEqual([0xb, 0xa, 0xc, 0x5]);
  });

  it("is MatMulNBits' order: onnxruntime reads the low nibble as the first element of a pair", async () => {
    // One block of K = 16 for one output: byte 0 holds codes 1 (k = 0) and 2 (k = 1); every other code is 8, the
    // default zero point, so it contributes 0. A one-hot x at k picks (code_k - 8) * scale.
    const dev = await createDevice('cpu');
    const codes = pack4(Uint8Array.of(1, 2, ...new Array(14).fill(8)));
    expect(Array.from(codes)).toEqual([0x21, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88, 0x88]);
    const g = new Graph('nibble order');
    const x = g.input('x', 'fp32', [2, 16]);
    const w = dev.tensor(codes, [1, 1, 8], 'uint8', { tag: 'weights' });
    const s = dev.tensor([0.5], [1], 'fp32', { tag: 'weights' });
    g.output(g.op('MatMulNBits', [x, g.constant('codes', w), g.constant('scales', s), null], { K: 16, N: 1, blockSize: 16, bits: 4 })[0]);
    const oneHot = new Float32Array(32);
    oneHot[0] = 1;        // row 0: k = 0
    oneHot[16 + 1] = 1;   // row 1: k = 1
    const [y] = await dev.run(g, [dev.tensor(oneHot, [2, 16])]);
    // Low nibble first: (1 - 8) * 0.5 and (2 - 8) * 0.5. bitsandbytes' order (high nibble first) would give -3, -3.5.
    expect(Array.from(y.toFloat32())).toEqual([-3.5, -3]);
    await dev.dispose();
  });

  it("is not bitsandbytes' order: a bitsandbytes byte read here comes back with the pair swapped", () => {
    // bitsandbytes' kQuantizeBlockwise: qvals[j] = code(vals[2j]) << 4 | code(vals[2j + 1]); hand-made for [1, 2]:
    const bitsandbytesByte = (1 << 4) | 2;
    expect(bitsandbytesByte).toBe(0x12);
    expect(Array.from(unpack4(Uint8Array.of(bitsandbytesByte), 2))).toEqual([2, 1]);
    const swapped = ((bitsandbytesByte & 0x0f) << 4) | (bitsandbytesByte >>> 4);
    expect(Array.from(unpack4(Uint8Array.of(swapped), 2))).toEqual([1, 2]);
  });

  it('round trips every code at every position, even and odd lengths', () => {
    for (const n of [0, 1, 2, 15, 16, 17, 1001]) {
      const values = Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) % 16);
      const bytes = pack4(values);
      expect(bytes.length).toBe(Math.ceil(n / 2));
      expect(Array.from(unpack4(bytes, n))).toEqual(Array.from(values));
    }
  });

  it('leaves the high nibble of an odd tail zero', () => {
    expect(Array.from(pack4(Uint8Array.of(0x3, 0x4, 0xf)))).toEqual([0x43, 0x0f]);
  });

  it('rejects codes above 15, naming index and value', () => {
    expect(() => pack4(Uint8Array.of(1, 16))).toThrow(RangeError);
    expect(() => pack4(Uint8Array.of(1, 2, 200))).toThrow(/values\[2\] = 200/);
  });

  it('rejects a numel the bytes cannot hold', () => {
    expect(() => unpack4(new Uint8Array(2), 5)).toThrow(RangeError);
    expect(() => unpack4(new Uint8Array(2), -1)).toThrow(RangeError);
    expect(() => unpack4(new Uint8Array(2), 1.5)).toThrow(RangeError);
    expect(unpack4(new Uint8Array(2), 3).length).toBe(3);
  });
});

describe('packInt4 / unpackInt4', () => {
  it('stores two\'s complement nibbles, low first', () => {
    // -1 -> 0xf, 7 -> 0x7, -8 -> 0x8, 0 -> 0x0
    expect(Array.from(packInt4(Int8Array.of(-1, 7, -8, 0)))).toEqual([0x7f, 0x08]);
  });

  it('round trips -8..7 at even and odd lengths', () => {
    for (const n of [1, 16, 33]) {
      const values = Int8Array.from({ length: n }, (_, i) => (i % 16) - 8);
      expect(Array.from(unpackInt4(packInt4(values), n))).toEqual(Array.from(values));
    }
  });

  it('rejects values outside -8..7, naming index and value', () => {
    expect(() => packInt4(Int8Array.of(0, 8))).toThrow(/values\[1\] = 8/);
    expect(() => packInt4(Int8Array.of(-9))).toThrow(RangeError);
    expect(() => unpackInt4(new Uint8Array(1), 3)).toThrow(RangeError);
  });
});

describe('assertEvenPack', () => {
  it('accepts even counts and names the caller on odd ones', () => {
    expect(() => assertEvenPack(0, 'matmulNbits K')).not.toThrow();
    expect(() => assertEvenPack(64, 'matmulNbits K')).not.toThrow();
    expect(() => assertEvenPack(63, 'matmulNbits K')).toThrow(/matmulNbits K.*63/);
    expect(() => assertEvenPack(-2, 'x')).toThrow(RangeError);
  });
});

describe('NF4 code book', () => {
  // Dettmers et al., QLoRA (NeurIPS 2023), Appendix E; bitsandbytes functional.get_4bit_type('nf4').
  const published = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
  ];

  it('holds the 16 published values, sorted, with exact -1, 0 and 1', () => {
    expect(NF4_CODE.length).toBe(16);
    expect(Array.from(NF4_CODE)).toEqual(published.map(Math.fround));
    for (let i = 1; i < 16; i++) expect(NF4_CODE[i]).toBeGreaterThan(NF4_CODE[i - 1]);
    expect([NF4_CODE[0], NF4_CODE[7], NF4_CODE[15]]).toEqual([-1, 0, 1]);
  });

  it('maps each level to its own index and clamps outside [-1, 1]', () => {
    for (let i = 0; i < 16; i++) expect(nearestNf4(NF4_CODE[i])).toBe(i);
    expect(nearestNf4(-3)).toBe(0);
    expect(nearestNf4(-Infinity)).toBe(0);
    expect(nearestNf4(1.5)).toBe(15);
    expect(nearestNf4(Infinity)).toBe(15);
    expect(() => nearestNf4(NaN)).toThrow(RangeError);
  });

  it('sends an exact midpoint to the lower index', () => {
    for (let i = 0; i < 15; i++) {
      const mid = (NF4_CODE[i] + NF4_CODE[i + 1]) / 2;
      expect(nearestNf4(mid)).toBe(i);
      expect(nearestNf4(mid + 1e-12)).toBe(i + 1);
    }
  });

  it('agrees with a brute-force argmin over a fine grid', () => {
    for (let k = -2000; k <= 2000; k++) {
      const x = k / 1777;
      let best = 0;
      for (let i = 1; i < 16; i++) {
        if (Math.abs(x - NF4_CODE[i]) < Math.abs(x - NF4_CODE[best])) best = i;
      }
      expect(nearestNf4(x)).toBe(best);
    }
  });
});
