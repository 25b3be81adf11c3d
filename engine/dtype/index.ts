/** The dtype layer: element types, fp16/bf16 conversion and 4-bit packing. */

export * from './dtype.ts';
export * from './fp16.ts';
export * from './bf16.ts';
export * from './packed4.ts';
