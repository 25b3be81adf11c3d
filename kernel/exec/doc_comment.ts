/**
 * Documentation for inspect_request without JSDoc parsing: the checker parses JSDoc only where it changes types (as tsc
 * does), so the comment above a declaration is read from the file's text, as an editor's hover shows it.
 */
import type TS from 'typescript';

/** The text of the `/** ... *\/` comment above the declaration of the name at a position in a file, without its tags. */
export function docComment(ts: typeof TS, service: TS.LanguageService, file: string, pos: number): string {
  const def = service.getDefinitionAtPosition(file, pos)?.[0];
  const sf = def && service.getProgram()?.getSourceFile(def.fileName);
  if (!def || !sf) return '';
  let node: TS.Node | undefined = sf;
  for (let inner: TS.Node | undefined = sf; inner; ) {
    node = inner;
    inner = ts.forEachChild(inner, (c) => (c.getStart(sf) <= def.textSpan.start && def.textSpan.start < c.getEnd() ? c : undefined));
  }
  // Up from the name to its declaration, never past the body it sits in (that comment documents something else).
  const container = (n: TS.Node) => ts.isSourceFile(n) || ts.isModuleBlock(n) || ts.isInterfaceDeclaration(n) || ts.isClassLike(n) || ts.isTypeLiteralNode(n) || ts.isObjectLiteralExpression(n) || ts.isBlock(n);
  for (let n: TS.Node | undefined = node; n && !container(n); n = n.parent) {
    const ranges = ts.getLeadingCommentRanges(sf.text, n.getFullStart()) ?? [];
    const doc = ranges.reverse().find((r) => sf.text.startsWith('/**', r.pos));
    if (doc) {
      const lines = sf.text.slice(doc.pos + 3, doc.end - 2).split('\n').map((l) => l.replace(/^\s*\*? ?/, ''));
      const end = lines.findIndex((l) => l.startsWith('@'));
      return (end < 0 ? lines : lines.slice(0, end)).join('\n').trim();
    }
  }
  return '';
}
