/** Layers built from engine ops (a Linear in every weight format so far; the transformer's blocks join here). */
export { Linear, LINEAR_FORMATS, type LinearFormat, type LinearOptions, type LinearBytes, type LinearInfo } from './linear.ts';
