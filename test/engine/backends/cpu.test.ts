import { describe } from 'vitest';
import { opSuite } from './op_suite.ts';

describe('cpu backend (onnxruntime CPU provider) against the reference', () => opSuite('cpu'));
