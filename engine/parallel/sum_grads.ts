/**
 * A parameter used by two segments (the tied embedding: the token embedding and the output head) gets two gradient
 * contributions; its gradient is their sum, taken in fp32 and rounded to the gradients' dtype, as autograd
 * accumulates a shared parameter's .grad.
 */
import { Tensor } from '../tensor/tensor.ts';
import { ShapeError } from '../errors.ts';

/** a + b in fp32, rounded to a's dtype, tagged 'grads' with a's label; both are disposed. */
export async function sumGrads(a: Tensor, b: Tensor): Promise<Tensor> {
  if (a.numel !== b.numel) throw new ShapeError('sumGrads', [a.shape, b.shape], 'two gradients of one parameter must have its shape');
  const x = Float32Array.from(await a.values());
  const y = await b.values();
  for (let i = 0; i < x.length; i++) x[i] += y[i];
  const sum = Tensor.from(a.device, x, a.shape, a.dtype, 'grads', a.label);
  a.dispose();
  b.dispose();
  return sum;
}
