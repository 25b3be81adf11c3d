/** What each `servelab` command takes: `servelab --help` lists them all, `servelab <command> --help` prints one. */

interface Command {
  /** The command's forms, as typed. */
  synopsis: string[];
  /** What it does, in a line or two. */
  summary: string;
  /** [flag, meaning] pairs. */
  options: [string, string][];
  /** Whether SERVELAB_DEVICE matters to it. */
  device: boolean;
}

export const COMMANDS: Record<string, Command> = {
  kernel: {
    synopsis: ['kernel install [--user | --prefix DIR]', 'kernel start -f CONNECTION_FILE'],
    summary: 'register the Jupyter kernelspec servelab ("TypeScript (servelab)"), or run the kernel (Jupyter calls start)',
    options: [
      ['--user', 'install: into your own Jupyter data folder (no root needed)'],
      ['--prefix DIR', 'install: into DIR/share/jupyter/kernels, e.g. a virtual environment'],
      ['-f, --connection-file FILE', 'start: the connection file Jupyter writes for the kernel'],
    ],
    device: true,
  },
  build: {
    synopsis: ['build [--check] [--root DIR]'],
    summary: 'lessons/NN-slug.md -> notebooks/NN-slug.ipynb (reference solutions never go into a notebook)',
    options: [
      ['--check', 'write nothing; exit 1 listing stale or missing notebooks'],
      ['--root DIR', 'the project folder holding lessons/ and notebooks/ (default: the current folder)'],
    ],
    device: false,
  },
  report: {
    synopsis: ['report <lesson.md|notebook.ipynb>... [-o DIR] [--all] [--solutions] [--server URL --token T]'],
    summary: 'execute through the kernel and write standalone HTML reports and an index; exits 1 if a cell failed',
    options: [
      ['-o, --out DIR', 'where the reports go (default: reports)'],
      ['--all', "every lesson in lessons/, in order"],
      ['--solutions', "run each exercise's reference solution (lessons/NN-slug.solutions.md) instead of its starter code: a complete report for instructors; a missing solution is named and its starter code runs"],
      ['--server URL', 'run through the kernel of a Jupyter server at URL instead of one started here'],
      ['--token T', "the server's token"],
    ],
    device: true,
  },
  train: {
    synopsis: ['train [--preset builtin] [--out DIR] [--resume] [--stop-after N] [--checkpoint-dir DIR]'],
    summary: "train a preset from its seed with the engine's own gradients and AdamW; writes model.safetensors, config.json, tokenizer.json and training_log.json",
    options: [
      ['--preset NAME', 'the recipe (default: builtin, the model every lesson loads)'],
      ['--out DIR', 'where the trained model goes (default: models/builtin)'],
      ['--resume', "continue from the last checkpoint (same recipe and corpus) instead of starting over"],
      ['--stop-after N', "stop after N steps in all, keeping the recipe's schedule; --resume continues"],
      ['--checkpoint-dir DIR', 'where checkpoints go (default: a hidden folder beside --out)'],
    ],
    device: false,
  },
  generate: {
    synopsis: ['generate --prompt TEXT [--max-tokens N] [--temperature T ...] [--format F] [--model DIR] [--json]'],
    summary: 'continue a prompt with the built-in model (or --model), streaming the text; then prompt and new tokens, prefill ms, decode tokens/s and why it stopped. Ctrl-C stops at the next token and keeps the text',
    options: [
      ['-p, --prompt TEXT', 'the text to continue (echoed, then continued)'],
      ['--max-tokens N', 'new tokens at most (default 200); fewer when the context fills'],
      ['--temperature T', '0 (default) is greedy: the most likely token each step'],
      ['--top-k K', 'sample among the K most likely tokens only (default 0: all)'],
      ['--top-p P', 'sample among the most likely tokens whose probabilities sum to P (default 1: all)'],
      ['--seed S', 'seed of the sampling stream (default 0)'],
      ['--stop STR', 'stop once the text contains STR, kept out of it (repeatable)'],
      ['--format F', 'weight format of every Linear: fp32 (default), fp16, bf16, int8-tensor (one scale per tensor), int8 (vector-wise), llm.int8, int4'],
      ['--model DIR', 'a checkpoint folder (default: models/builtin)'],
      ['--json', 'print one JSON object (text, token ids, counts, timings) instead of streaming'],
    ],
    device: true,
  },
  eval: {
    synopsis: ['eval [--format F,...|all] [--model DIR] [--context N] [--bytes N] [--json]'],
    summary: "held-out loss (nats/byte), perplexity and bits per byte on Moby-Dick's held-out tail in each weight format, greedy agreement with fp32, weight bytes, beside the byte-trigram baseline",
    options: [
      ['--format F,...|all', 'weight formats to measure (default all: fp32, fp16, bf16, int8-tensor, int8, llm.int8, int4); fp32 is always measured first, as the reference of agreement'],
      ['--model DIR', 'a checkpoint folder (default: models/builtin)'],
      ['--context N', "window length (default: the model's context); each window starts from an empty cache"],
      ['--bytes N', 'score only the first N held-out bytes (default: all of them)'],
      ['--json', 'print the results as JSON'],
    ],
    device: true,
  },
  serve: {
    synopsis: [
      'serve --rate R --duration S [--dataset sharegpt|alpaca] [engine options] [--price-per-hour USD] [--json]',
      'serve --trace FILE [engine options] [--price-per-hour USD] [--json]',
      'serve --http HOST:PORT [engine options]',
    ],
    summary: 'replay a request trace through the serving engine (the built-in model, or --model) against the wall clock and print TTFT, TPOT and end-to-end latency, throughput, KV memory and preemptions; or serve OpenAI-style completions over HTTP. Ctrl-C stops at the next iteration',
    options: [
      ['--rate R', 'requests per second of a Poisson trace'],
      ['--duration S', 'the trace covers arrivals in [0, S) seconds'],
      ['--dataset NAME', "lengths like the vLLM paper's sharegpt (default) or alpaca, scaled to the model's context"],
      ['--trace FILE', 'replay a JSONL trace instead, one {"prompt", "max_tokens", "arrival_ms"?, "id"?, "n"?} a line; an unusable line is reported by number and skipped, and a request with n samples runs as n requests'],
      ['--http HOST:PORT', 'serve POST /v1/completions (JSON or server-sent events with "stream"), GET /v1/models and GET /health until Ctrl-C or SIGTERM; port 0 picks a free one, and the URL goes to stderr'],
      ['--layout L', 'KV cache layout: paged (default, vLLM), contiguous (a region per sequence) or token (LightLLM)'],
      ['--batching B', 'continuous (default: sequences join and leave at every iteration) or static (a batch runs until its longest member ends)'],
      ['--budget MiB', 'KV pool size (default 8)'],
      ['--block-size N', 'paged: tokens per block (default 16)'],
      ['--max-seqs N', 'sequences running at once (default 32)'],
      ['--preemption P', 'when memory runs out: recompute (default) or swap to host memory'],
      ['--chunked-prefill N', 'prefill prompts in chunks of N tokens beside the decodes (default 0: whole prompts)'],
      ['--seed N', 'seed of the trace and of sampling (default 0)'],
      ['--temperature T', '0 (default) is greedy; the whole engine samples at T, and an HTTP request may ask for T only'],
      ['--price-per-hour USD', 'price of the device per hour: adds the cost per million output tokens'],
      ['--format F', 'weight format of every Linear: fp32 (default), fp16, bf16, int8-tensor, int8, llm.int8, int4'],
      ['--model DIR', 'a checkpoint folder (default: models/builtin)'],
      ['--json', 'print the metrics as one JSON object'],
    ],
    device: true,
  },
  device: {
    synopsis: ['device [--json]'],
    summary: 'the selected device: GPU adapter (if any) and CPU (model, cores, SIMD)',
    options: [['--json', 'print it as JSON']],
    device: true,
  },
  bench: {
    synopsis: ['bench [--json] [--out FILE] [--quick] [--device cpu|webgpu]'],
    summary: 'GEMM throughput (fp32, int8, 4-bit), engine overhead, fp32 and int8 peaks; targets checked',
    options: [
      ['--json', 'print the results as JSON'],
      ['--out FILE', 'also save them to FILE'],
      ['--quick', 'fewer shapes and runs'],
      ['--device cpu|webgpu', 'the device to measure (default: SERVELAB_DEVICE, else cpu)'],
    ],
    device: true,
  },
  'gpu-check': {
    synopsis: ['gpu-check [--out DIR]'],
    summary: 'pack the WebGPU check into one folder for a GPU machine without Node or network',
    options: [['--out DIR', 'where the folder goes (default: gpu-check)']],
    device: false,
  },
};

const SUMMARY_COLUMN = 25;

const ENVIRONMENT = `environment:
  SERVELAB_DEVICE=auto|cpu|webgpu|reference   device selection (default auto)`;

/** `text` wrapped into lines of at most `columns` characters, the lines after the first indented by `width`. */
function wrap(text: string, width: number, columns = 100): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && width + line.length + 1 + word.length > columns) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(width)}`);
}

/** The overview `servelab --help` prints. */
export function usage(): string {
  const lines = ['usage: servelab <command> [options]', '', 'commands:'];
  for (const c of Object.values(COMMANDS)) {
    const forms = c.synopsis.map((s) => `  ${s}`);
    const last = forms.pop()!;
    lines.push(...forms);
    // A short form takes its summary on the same line; a long one on the next.
    if (last.length < SUMMARY_COLUMN - 1) lines.push(`${last.padEnd(SUMMARY_COLUMN)}${wrap(c.summary, SUMMARY_COLUMN)}`);
    else lines.push(last, `${' '.repeat(SUMMARY_COLUMN)}${wrap(c.summary, SUMMARY_COLUMN)}`);
  }
  lines.push('', "`servelab <command> --help` describes one command's options.", '', ENVIRONMENT);
  return lines.join('\n');
}

/** One command's usage, as `servelab <command> --help` prints it. */
export function commandUsage(name: keyof typeof COMMANDS | string): string {
  const c = COMMANDS[name];
  const width = Math.max(...c.options.map(([flag]) => flag.length)) + 4;
  return [
    ...c.synopsis.map((s, i) => `${i === 0 ? 'usage:' : '      '} servelab ${s}`),
    '',
    c.summary,
    '',
    'options:',
    ...c.options.map(([flag, text]) => `  ${flag.padEnd(width - 2)}${wrap(text, width)}`),
    ...(c.device ? ['', ENVIRONMENT] : []),
  ].join('\n');
}

/** `--help` or `-h` anywhere among a command's arguments. */
export const wantsHelp = (args: readonly string[]) => args.some((a) => a === '--help' || a === '-h');
