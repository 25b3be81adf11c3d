/**
 * Prefix caching's hit rate in a replay (vLLM, SOSP 2023, section 4.4): the tokens found cached as each sequence is
 * first admitted, read from the block manager, against the best a shared-prefix trace allows.
 */
import type { ServingEngine } from '../engine/serve/engine.ts';
import type { TraceRequest } from '../engine/serve/trace.ts';

/**
 * Prefix-cache hits of a paged engine, read after each iteration from the block manager: the cached tokens of every
 * sequence at its first admission. A hit whose prefix group (the `p<k>` of sharedPrefixTrace's ids) was first
 * admitted in that same iteration is counted apart: its blocks were registered by a request whose keys and values
 * the iteration had not written yet.
 */
export class PrefixHits {
  hitTokens = 0;
  promptTokens = 0;
  sameStepHitTokens = 0;
  private readonly seen = new Set<string>();
  private readonly groupStep = new Map<string, number>();
  private step = 0;

  constructor(private readonly prompts: ReadonlyMap<string, number>) {}

  observe(engine: ServingEngine): void {
    this.step++;
    const bm = engine.cache.blockManager;
    for (const id of engine.cache.sequences()) {
      const key = String(id);
      if (this.seen.has(key)) continue;
      this.seen.add(key);
      const hit = bm.numCachedTokens(id);
      const group = key.split('-')[0];
      if (!this.groupStep.has(group)) this.groupStep.set(group, this.step);
      this.hitTokens += hit;
      this.promptTokens += this.prompts.get(key) ?? 0;
      if (hit > 0 && this.groupStep.get(group) === this.step) this.sameStepHitTokens += hit;
    }
  }

  get hitRate(): number {
    return this.promptTokens > 0 ? this.hitTokens / this.promptTokens : 0;
  }
}

/** The best hit rate of a shared-prefix trace: each prefix's full blocks hit for every request but its first. */
export function bestHitRate(trace: readonly TraceRequest[], prefixTokens: number, blockSize: number): number {
  const prompts = trace.reduce((a, r) => a + r.prompt.length, 0);
  // vLLM caps a hit at prompt - 1 tokens: the last prompt token is always computed.
  const perHit = (r: TraceRequest) => Math.min(Math.floor(prefixTokens / blockSize), Math.floor((r.prompt.length - 1) / blockSize)) * blockSize;
  const first = new Set<string>();
  let hits = 0;
  for (const r of [...trace].sort((a, b) => a.arrivalMs - b.arrivalMs)) {
    const group = r.id.split('-')[0];
    if (first.has(group)) hits += perHit(r);
    else first.add(group);
  }
  return prompts > 0 ? hits / prompts : 0;
}
