/**
 * `servelab eval`: what each weight format costs in quality. The model's held-out loss (nats per byte), perplexity and
 * bits per byte on Moby-Dick's held-out tail, once per format, with how often its greedy next byte agrees with fp32's
 * and the bytes its weights hold, beside the add-one byte trigram's numbers on the same bytes.
 */
import { parseArgs } from 'node:util';
import { ServelabError } from '../../engine/index.ts';
import { mobyDick } from '../../engine/train/corpus.ts';
import { crossEntropy, fitTrigram } from '../../engine/train/trigram.ts';
import { loadModel } from '../../engine/model/checkpoint.ts';
import { evaluate } from '../../engine/model/evaluate.ts';
import { LINEAR_FORMATS, type LinearFormat } from '../../engine/nn/linear.ts';
import { formatBytes } from '../display/format.ts';
import { numberOption, openModel, parseFormat } from './generate.ts';

export interface FormatRow {
  format: LinearFormat;
  /** Weight bytes on the device (model.bytes().total): linears in the format, embedding and norms fp32. */
  weightBytes: number;
  nats: number;
  perplexity: number;
  bitsPerByte: number;
  /** Share of scored positions whose greedy next token is fp32's; 1 for fp32 itself. */
  agreement: number;
  tokens: number;
  seconds: number;
}

/** "all", or formats separated by commas; fp32 comes first whatever was asked, since agreement is measured against it. */
export function parseFormats(text: string): LinearFormat[] {
  const asked = text === 'all' ? [...LINEAR_FORMATS] : text.split(',').map((f) => parseFormat(f.trim()));
  return ['fp32', ...new Set(asked.filter((f) => f !== 'fp32'))];
}

/** A row of cells padded to the columns' widths: text left, numbers right. */
function alignTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { format: { type: 'string' }, model: { type: 'string' }, json: { type: 'boolean' }, context: { type: 'string' }, bytes: { type: 'string' } },
  });
  const formats = parseFormats(values.format ?? 'all');
  const corpus = mobyDick();
  const maxBytes = numberOption('--bytes', values.bytes, { integer: true, min: 2 });
  const data = maxBytes === undefined ? corpus.heldOut : corpus.heldOut.subarray(0, maxBytes);
  const requestedContext = numberOption('--context', values.context, { integer: true, min: 1 });
  const tty = process.stderr.isTTY;

  const rows: FormatRow[] = [];
  let reference: Int32Array | undefined;
  // One device for every format: the first load checks the folder and says how to make a missing model.
  const { dev, model: first, dir } = await openModel(values.model, 'fp32');
  let context = 0;
  try {
    const ctx = first.cfg.maxPositions;
    context = requestedContext ?? ctx;
    if (context > ctx) throw new ServelabError(`--context ${context} is past the model's context of ${ctx}`);
    if (data.length - 1 < context) throw new ServelabError(`${data.length} held-out bytes make no window of ${context}; give --bytes at least ${context + 1}`);
    process.stderr.write(`evaluating ${dir} on ${data.length} of ${corpus.heldOut.length} held-out bytes of Moby-Dick in windows of ${context}: ${formats.join(', ')}\n`);
    for (const format of formats) {
      const model = format === 'fp32' ? first : await loadModel(dir, { device: dev, format });
      try {
        const t0 = performance.now();
        const onProgress = (done: number, total: number) => {
          if (tty) process.stderr.write(`\r  ${format.padEnd(8)} batch ${done}/${total}`);
        };
        const q = await evaluate(model, data, { context, agreeWith: reference, onProgress });
        const seconds = (performance.now() - t0) / 1000;
        reference ??= q.greedy;
        const row = { format, weightBytes: model.bytes().total, nats: q.nats, perplexity: q.perplexity, bitsPerByte: q.bitsPerByte, agreement: q.agreement ?? 1, tokens: q.tokens, seconds };
        rows.push(row);
        process.stderr.write(`${tty ? '\r' : ''}  ${format.padEnd(8)} ${q.nats.toFixed(4)} nats/byte in ${seconds.toFixed(1)} s\n`);
      } finally {
        model.dispose();
      }
    }
  } finally {
    first.dispose();
    await dev.dispose();
  }

  const tri = crossEntropy(fitTrigram(corpus.train), data);
  const trigram = { nats: tri.nats, bitsPerByte: tri.bitsPerByte, perplexity: tri.perplexity, bytes: tri.count, smoothing: 'add-one' };
  if (values.json) {
    console.log(JSON.stringify({ model: dir, heldOutBytes: corpus.heldOut.length, bytes: data.length, context, formats: rows, trigram }, null, 2));
    return 0;
  }
  const header = ['format', 'weights', 'nats/byte', 'bits/byte', 'perplexity', 'agrees with fp32', 'seconds'];
  const cells = rows.map((r) => [r.format, formatBytes(r.weightBytes), r.nats.toFixed(4), r.bitsPerByte.toFixed(4), r.perplexity.toFixed(3), `${(100 * r.agreement).toFixed(2)}%`, r.seconds.toFixed(1)]);
  cells.push(['byte trigram', '', tri.nats.toFixed(4), tri.bitsPerByte.toFixed(4), tri.perplexity.toFixed(3), '', '']);
  const scope = data.length === corpus.heldOut.length ? `all ${data.length} held-out bytes` : `the first ${data.length} of ${corpus.heldOut.length} held-out bytes (--bytes)`;
  console.log(`${dir}: ${scope} of Moby-Dick, ${rows[0].tokens} positions scored in windows of ${context}; the trigram (add-one) scores every byte`);
  console.log(alignTable(header, cells));
  return 0;
}
