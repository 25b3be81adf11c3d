/**
 * The slope of Gelu (Hendrycks & Gimpel 2016), exact and in its tanh approximation, built from engine ops for the
 * op's gradient.
 */
import type { Value } from './graph.ts';
import type { GradGraph } from './infer.ts';
import { op1, scalarLike } from './grad_util.ts';

const SQRT_2PI = Math.sqrt(2 * Math.PI);

/**
 * Gelu'(x) = Phi(x) + x phi(x). Phi(x) is read off the forward output as y / x (exact to one rounding, also near 0,
 * as y = x Phi(x) carries the same relative error), and is 1/2 at x = 0.
 */
export function geluSlope(g: GradGraph, x: Value, y: Value): Value {
  const isZero = op1(g, 'Equal', [x, scalarLike(g, x, 0)]);
  const cdf = op1(g, 'Where', [isZero, scalarLike(g, x, 0.5), op1(g, 'Div', [y, x])]);
  const pdf = op1(g, 'Mul', [op1(g, 'Exp', [op1(g, 'Mul', [op1(g, 'Mul', [x, x]), scalarLike(g, x, -0.5)])]), scalarLike(g, x, 1 / SQRT_2PI)]);
  return op1(g, 'Add', [cdf, op1(g, 'Mul', [x, pdf])]);
}

/**
 * The tanh form 0.5 x (1 + tanh u), u = c (x + a x^3), with tanh u = 2 sigmoid(2u) - 1:
 * slope = s + 2 c x (1 + 3 a x^2) s (1 - s), s = sigmoid(2u).
 */
export function geluTanhSlope(g: GradGraph, x: Value): Value {
  const c = Math.sqrt(2 / Math.PI);
  const a = 0.044715;
  const k = (v: number) => scalarLike(g, x, v);
  const mul = (p: Value, q: Value) => op1(g, 'Mul', [p, q]);
  const x2 = mul(x, x);
  const s = op1(g, 'Sigmoid', [mul(mul(x, op1(g, 'Add', [k(1), mul(x2, k(a))])), k(2 * c))]);
  const du = mul(mul(x, op1(g, 'Add', [k(1), mul(x2, k(3 * a))])), k(2 * c));
  return op1(g, 'Add', [s, mul(du, mul(s, op1(g, 'Sub', [k(1), s])))]);
}
