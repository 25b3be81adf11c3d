/** Display state that lives as long as the kernel process, and its reset for a kernel restart. */
import { closeLiveCharts } from './live.ts';
import { plotlyJs } from './plotly.ts';

/** Live charts closed (their final state published) and plotly.js to be embedded again by the next plot. */
export function resetDisplay(): void {
  closeLiveCharts();
  plotlyJs.reset();
}
