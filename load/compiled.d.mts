/** The compiled mirror of servelab's TypeScript sources (compiled.mjs). */
export interface Tree {
  root: string;
  /** Top-level folders of root whose .ts files are mirrored. */
  dirs: string[];
  mirror: string;
}
export declare const SERVELAB: Tree;
/** Brings a tree's mirror up to date and says whether it can be used. */
export declare function updateMirror(tree?: Tree): boolean;
/** Runs a tree's mirror modules from now on. */
export declare function useMirror(tree?: Tree): void;
/** The URL to import a file by: the mirror's module for a mirrored source, the hooks for other TypeScript files. */
export declare function moduleUrl(path: string): Promise<string>;
