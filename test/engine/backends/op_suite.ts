/** Registers the op suite (bench/op_cases.ts) for one backend, each case compared with the reference backend. */
import { expect, it } from 'vitest';
import { createDevice, type Device } from '../../../engine/index.ts';
import { CASES, runCase, type OpCase } from '../../../bench/op_cases.ts';

export function opSuite(kind: 'cpu' | 'webgpu' | 'reference', cases: OpCase[] = CASES): void {
  let dev: Device;
  let ref: Device;
  for (const c of cases) {
    it(`${c.name} matches the reference`, async () => {
      dev ??= await createDevice(kind);
      ref ??= await createDevice('reference');
      const r = await runCase(c, dev, ref);
      expect(r.detail, c.name).toBeNull();
    });
  }
}
