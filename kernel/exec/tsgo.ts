/**
 * A thin synchronous client of the native TypeScript compiler (tsgo, from @typescript/native-preview, whose version
 * package.json pins exactly): the package's own process client, which spawns tsgo and answers its file reads, and the
 * handful of JSON requests the cell checker makes. The package's full object model (its syntax-tree decoder and node
 * factories) would cost the kernel about 70 ms and 9 MB at start for what a cell never uses.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export interface Diagnostic {
  /** Offset of the first character, in UTF-16 code units. */
  pos: number;
  end: number;
  code: number;
  /** 1: error (the compiler's DiagnosticCategory). */
  category: number;
  text: string;
  messageChain?: Diagnostic[];
}

export interface SymbolRef {
  id: number;
  name: string;
}

interface TypeRef {
  id: number;
}

interface SignatureRef {
  id: number;
  flags: number;
}

interface ProcessClient {
  apiRequest(method: string, params: unknown): unknown;
  close(): void;
}

const PACKAGE = dirname(createRequire(import.meta.url).resolve('@typescript/native-preview/package.json'));
const internal = (rel: string) => import(pathToFileURL(join(PACKAGE, rel)).href);
const { Client } = (await internal('dist/api/sync/client.js')) as {
  Client: new (options: { cwd: string; tsserverPath: string; fs: { readFile(file: string): string | null | undefined } }) => ProcessClient;
};
const { default: exePath } = (await internal('lib/getExePath.js')) as { default: () => string };
/** Starts tsgo in a session of its own (tsgo.sh): Jupyter interrupts a kernel by signalling its process group. */
const LAUNCHER = join(dirname(fileURLToPath(import.meta.url)), 'tsgo.sh');

/** SignatureKind.Call; SignatureFlags.HasRestParameter. */
const CALL = 0;
const HAS_REST = 1;

/** One snapshot of one project: the program the checker asks about. */
export class TsgoProject {
  constructor(
    private readonly client: ProcessClient,
    readonly snapshot: number,
    readonly project: string,
  ) {}

  private ask<T>(method: string, params: Record<string, unknown> = {}): T {
    return this.client.apiRequest(method, { snapshot: this.snapshot, project: this.project, ...params }) as T;
  }

  diagnostics(file: string): Diagnostic[] {
    return [...(this.ask<Diagnostic[] | undefined>('getSyntacticDiagnostics', { file }) ?? []), ...(this.ask<Diagnostic[] | undefined>('getSemanticDiagnostics', { file }) ?? [])];
  }

  sourceFileCount(): number {
    return this.ask<string[] | undefined>('getSourceFileNames')?.length ?? 0;
  }

  completions(file: string, position: number): string[] {
    return this.ask<{ entries: { name: string }[] } | undefined>('getCompletionsAtPosition', { file, position })?.entries.map((e) => e.name) ?? [];
  }

  /** `name(a: A, ...rest: B[]): R` for each call signature of the name at a position, or `name: T`; and its documentation. */
  describe(file: string, position: number): { signature: string; doc: string } | null {
    const symbol = this.ask<SymbolRef | undefined>('getSymbolAtPosition', { file, position });
    if (!symbol) return null;
    const type = this.ask<TypeRef | undefined>('getTypeOfSymbol', { symbol: symbol.id });
    const text = (t: TypeRef | undefined) => (t ? this.ask<string>('typeToString', { type: t.id }) : 'any');
    const signatures = type ? this.ask<SignatureRef[]>('getSignaturesOfType', { type: type.id, kind: CALL }) : [];
    const lines = signatures.map((s) => {
      const params = this.ask<SymbolRef[] | undefined>('getParametersOfSignature', { objectId: s.id }) ?? [];
      const shown = params.map((p, i) => `${s.flags & HAS_REST && i === params.length - 1 ? '...' : ''}${p.name}: ${text(this.ask<TypeRef | undefined>('getTypeOfSymbol', { symbol: p.id }))}`);
      return `${symbol.name}(${shown.join(', ')}): ${text(this.ask<TypeRef | undefined>('getReturnTypeOfSignature', { signature: s.id }))}`;
    });
    const signature = lines.length ? lines.join('\n') : `${symbol.name}: ${text(type)}`;
    return { signature, doc: this.ask<string | undefined>('getDocumentationComment', { symbol: symbol.id }) ?? '' };
  }
}

/** The compiler's process, started by the first request; files the callback does not answer are read from disk. */
export class Tsgo {
  private client: ProcessClient | null = null;
  private latest: number | null = null;

  constructor(
    private readonly cwd: string,
    /** A file's text; null: no such file (without asking the disk); undefined: read it from the disk. */
    private readonly readFile: (file: string) => string | null | undefined,
  ) {}

  private start(): ProcessClient {
    if (!this.client) {
      // The launcher reads the compiler's path from its environment, set for this spawn only.
      const before = process.env.SERVELAB_TSGO;
      process.env.SERVELAB_TSGO = exePath();
      try {
        this.client = new Client({ cwd: this.cwd, tsserverPath: LAUNCHER, fs: { readFile: this.readFile } });
      } finally {
        if (before === undefined) delete process.env.SERVELAB_TSGO;
        else process.env.SERVELAB_TSGO = before;
      }
      this.client.apiRequest('initialize', null);
    }
    return this.client;
  }

  /**
   * A new snapshot with a project opened or files changed, and its project; the previous snapshot is released.
   * fileChanges: { changed: [files] } or { invalidateAll: true }.
   */
  update(config: string, params: { openProjects?: string[]; fileChanges?: { changed: string[] } | { invalidateAll: true } }): TsgoProject {
    const client = this.start();
    const data = client.apiRequest('updateSnapshot', params) as { snapshot: number; projects: { id: string; configFileName: string }[] };
    if (this.latest !== null) client.apiRequest('release', { snapshot: this.latest });
    this.latest = data.snapshot;
    const project = data.projects.find((p) => p.configFileName === config) ?? data.projects[0];
    return new TsgoProject(client, data.snapshot, project.id);
  }

  get started(): boolean {
    return this.client !== null;
  }

  close(): void {
    try {
      this.client?.close();
    } catch {
      // A process that already died has nothing left to close.
    }
    this.client = null;
    this.latest = null;
  }
}
