/** The compiled mirror of servelab's TypeScript sources (compiled.mjs). */
export declare const MIRROR: string;
/** Brings the mirror up to date and says whether it can be used. */
export declare function updateMirror(): boolean;
/** Runs the mirror's compiled modules from now on. */
export declare function useMirror(): void;
/** The URL to import a file by: the mirror's module for servelab's sources, the hooks for other TypeScript files. */
export declare function moduleUrl(path: string): Promise<string>;
