/**
 * Generation in a notebook cell: the text grows in one output, redrawn in place through its display_id at most 10
 * times a second (Jupyter update_display_data), and ends with the token count, the decode rate and why it stopped.
 * An interrupt of the cell stops at the next token and keeps the text.
 */
import { randomUUID } from 'node:crypto';
import { generate, type GenerateOptions, type Generation } from '../../engine/model/generate.ts';
import type { LlamaModel } from '../../engine/model/llama.ts';
import { sink as currentSink, type DisplaySink, type MimeBundle } from './sink.ts';
import { escapeHtml } from './format.ts';
import { MIN_INTERVAL_MS, throttle } from './throttle.ts';


export interface CellGenerateOptions extends GenerateOptions {
  /** Least time between two redraws, at least 100 ms (10 Hz). */
  intervalMs?: number;
  /** Where the output goes. Default: the running cell's sink (whose signal also stops generation). */
  sink?: DisplaySink;
}

function bundle(prompt: string, text: string, footer: string | null): MimeBundle {
  const tail = footer === null ? '' : `<div style="color:#666;font-size:90%;margin-top:4px">${escapeHtml(footer)}</div>`;
  return {
    'text/plain': `${prompt}${text}${footer === null ? '' : `\n\n${footer}`}`,
    'text/html': `<pre style="white-space:pre-wrap;margin:0"><b>${escapeHtml(prompt)}</b>${escapeHtml(text)}</pre>${tail}`,
  };
}

/** The line under a finished generation: "N tokens, X tokens/s, stopped: reason". */
export function generationSummary(g: Generation): string {
  return `${g.tokens.length} tokens, ${g.tokensPerSec.toFixed(1)} tokens/s, stopped: ${g.stopReason}`;
}

/**
 * generate(model, prompt, opts) shown as it runs: the prompt in bold, the continuation growing after it. Returns the
 * Generation; an error (past the text already shown) is written under the text and thrown.
 */
export async function generateInCell(model: LlamaModel, prompt: string, opts: CellGenerateOptions = {}): Promise<Generation> {
  const { sink: given, intervalMs, ...genOpts } = opts;
  const s = given ?? currentSink();
  const displayId = randomUUID();
  let text = '';
  let shown = false;
  const show = (footer: string | null) => {
    s.display(bundle(prompt, text, footer), shown ? { displayId, update: true } : { displayId });
    shown = true;
  };
  const redraw = throttle(() => show(null), Math.max(MIN_INTERVAL_MS, intervalMs ?? MIN_INTERVAL_MS));
  redraw.flush(); // the prompt alone, at once: the first redraw comes an interval later
  let g: Generation;
  try {
    g = await generate(model, prompt, {
      ...genOpts,
      signal: genOpts.signal ?? s.signal,
      onText: (piece) => {
        text += piece;
        genOpts.onText?.(piece);
        redraw.changed();
      },
    });
  } catch (e) {
    redraw.cancel();
    show(`stopped: ${(e as Error).message}`);
    throw e;
  }
  redraw.cancel();
  text = g.text;
  show(generationSummary(g));
  return g;
}
