/** is_complete for TypeScript: a cell that ends inside an open block, call, string or template is incomplete. */
import { parseSync } from 'oxc-parser';

export function isComplete(code: string): { status: 'complete' | 'incomplete' | 'invalid'; indent?: string } {
  if (code.trim() === '') return { status: 'complete' };
  const { errors } = parseSync('cell.ts', code, { lang: 'ts', sourceType: 'module' });
  if (errors.length === 0) return { status: 'complete' };
  // A rough count (brackets inside strings count too), used only once the parser has already complained.
  const open = (code.match(/[{([]/g)?.length ?? 0) - (code.match(/[})\]]/g)?.length ?? 0);
  // More closers than openers can never be completed by typing more.
  if (open < 0) return { status: 'invalid' };
  const end = code.trimEnd().length;
  // The parser's complaints at the very end of the text mean "more to come": a missing '}', ')' or ']' is
  // reported at the end, an unterminated string, template or comment runs up to it.
  const atEnd = errors.every((e) => {
    const at = e.labels[0];
    return at !== undefined && (at.start >= end - 1 || at.end >= end);
  });
  if (!atEnd) return { status: 'invalid' };
  return { status: 'incomplete', indent: '  '.repeat(open) };
}
