/**
 * Gradients of LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019) over the last axis, recomputing the
 * per-row statistics rather than storing them (the forward op returns only its output). With xhat the normalized
 * input, r = 1/sqrt(var + eps) and g = dy * scale:
 *   LayerNorm: dx = r (g - mean(g) - xhat mean(g xhat));  RMSNorm: dx = r (g - xhat mean(g xhat));
 *   dscale = sum over rows of dy xhat;  dbias = sum over rows of dy.
 */
import type { Value } from './graph.ts';
import type { GradContext } from './infer.ts';
import { attrNum } from './infer.ts';
import { meanLast, op1, scalarLike, sumTo } from './grad_util.ts';

export function normGrad({ g, inputs: [x, scale, bias], attrs, dy: [d] }: GradContext, rms: boolean): (Value | null)[] {
  const op = rms ? 'RMSNorm' : 'LayerNormalization';
  const eps = attrNum(op, attrs, 'epsilon', rms ? 1e-6 : 1e-5);
  const mul = (a: Value, b: Value) => op1(g, 'Mul', [a, b]);
  const sub = (a: Value, b: Value) => op1(g, 'Sub', [a, b]);
  const xc = rms ? x! : sub(x!, meanLast(g, x!));
  const variance = meanLast(g, mul(xc, xc));
  const r = op1(g, 'Div', [scalarLike(g, x!, 1), op1(g, 'Sqrt', [op1(g, 'Add', [variance, scalarLike(g, x!, eps)])])]);
  const xhat = mul(xc, r);
  const gs = mul(d!, scale!);
  let centred = sub(gs, mul(xhat, meanLast(g, mul(gs, xhat))));
  if (!rms) centred = sub(centred, meanLast(g, gs));
  return [mul(r, centred), sumTo(g, mul(d!, xhat), scale!.shape), bias ? sumTo(g, d!, bias.shape) : null];
}
