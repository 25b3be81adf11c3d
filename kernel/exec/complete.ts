/** is_complete for TypeScript: a cell that ends inside an open block, call, string or template is incomplete. */
import { typescript } from './typescript.ts';

export function isComplete(code: string): { status: 'complete' | 'incomplete' | 'invalid'; indent?: string } {
  if (code.trim() === '') return { status: 'complete' };
  const ts = typescript();
  const out = ts.transpileModule(code, { reportDiagnostics: true, compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } });
  const errs = (out.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errs.length === 0) return { status: 'complete' };
  // A rough count (brackets inside strings count too), used only once the parser has already complained.
  const open = (code.match(/[{([]/g)?.length ?? 0) - (code.match(/[})\]]/g)?.length ?? 0);
  // More closers than openers can never be completed by typing more.
  if (open < 0) return { status: 'invalid' };
  const end = code.trimEnd().length;
  // The parser's complaints at the very end of the text mean "more to come" (a missing '}', ')', ']' or the end of a string).
  const atEnd = errs.every((d) => (d.start ?? 0) >= end - 1);
  if (!atEnd) return { status: 'invalid' };
  return { status: 'incomplete', indent: '  '.repeat(open) };
}
