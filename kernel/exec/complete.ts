/** is_complete for TypeScript: a cell that ends inside an open block, call, string or template is incomplete. */
import ts from 'typescript';

export function isComplete(code: string): { status: 'complete' | 'incomplete' | 'invalid'; indent?: string } {
  if (code.trim() === '') return { status: 'complete' };
  const out = ts.transpileModule(code, { reportDiagnostics: true, compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } });
  const errs = (out.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errs.length === 0) return { status: 'complete' };
  const end = code.trimEnd().length;
  // The parser's complaints at the very end of the text mean "more to come" (a missing '}', ')', ']' or the end of a string).
  const atEnd = errs.every((d) => (d.start ?? 0) >= end - 1);
  if (!atEnd) return { status: 'invalid' };
  const open = (code.match(/[{([]/g)?.length ?? 0) - (code.match(/[})\]]/g)?.length ?? 0);
  return { status: 'incomplete', indent: '  '.repeat(Math.max(0, open)) };
}
