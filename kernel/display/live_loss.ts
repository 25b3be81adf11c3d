/**
 * A training run's loss drawn as it trains: `train(dev, recipe, corpus, { onStep: liveLoss() })` in a cell shows a
 * live chart of loss against step, redrawn at most 10 times a second and closed at the recipe's last step.
 */
import type { StepLog, TrainState } from '../../engine/train/trainer.ts';
import { live, type LiveChart, type LiveOptions } from './live.ts';

export type StepCallback = ((log: StepLog, state: TrainState) => void) & { readonly chart: LiveChart };

/** An onStep callback feeding a new live chart (displayed at once); its chart is `callback.chart`. */
export function liveLoss(opts: Pick<LiveOptions, 'title' | 'sink' | 'signal' | 'height'> = {}): StepCallback {
  const chart = live({ title: 'training loss', ...opts, x: { key: 'step' }, series: { loss: { unit: 'nats/token' } } });
  const onStep = (log: StepLog, state: TrainState) => {
    chart.push({ step: log.step, loss: log.loss });
    if (state.step >= state.recipe.steps) chart.close();
  };
  return Object.assign(onStep, { chart });
}
