/**
 * Checks that imports between our components point downwards only (DESIGN §2): reads the
 * import and export-from specifiers of every .ts/.tsx file under server/, client/ and shared/,
 * and lists each one that breaks a rule below as `file:line → imported file: rule`.
 *
 * Usage: deno task check:imports   (exits 1 when there is a violation)
 */

/**
 * Which layers each layer may import (besides itself). A file's layer is its folder under
 * server/, or shared/ or client/ as a whole. Arrows point downwards only.
 */
export const LAYERS: Readonly<Record<string, readonly string[] | "anything">> = {
  "shared": [], //                     nothing of ours
  "client": ["shared"],
  "server/telemetry": ["shared"], //   the ground floor: metrics and Log
  "server/chord": ["shared"],
  "server/store": ["shared", "server/telemetry"],
  "server/discovery": ["shared", "server/telemetry"],
  "server/replication": ["server/chord", "server/store", "shared", "server/telemetry"],
  "server/cluster": [
    "server/chord",
    "server/store",
    "server/replication",
    "server/discovery",
    "shared",
    "server/telemetry",
  ],
  "server/users": [
    "server/cluster",
    "server/replication",
    "server/store",
    "server/chord",
    "shared",
    "server/telemetry",
  ],
  "server/api": [
    "server/users",
    "server/cluster",
    "server/replication",
    "server/store",
    "shared",
    "server/telemetry",
  ],
  "server/visualizer": ["server/cluster", "server/chord", "shared", "server/telemetry"],
  "server/main.ts": "anything", //     configuration and wiring
  "server/config.ts": "anything",
};

/**
 * The other rules:
 * - A file whose name starts with `_` is private to its folder: no file in another folder
 *   imports it (import the folder's `mod.ts` or a file not starting with `_`).
 * - Test files (`*_test.ts`, `*_test.tsx`) and `server/<folder>/testing*.ts` may import anything
 *   under server/ and shared/ (and their own layer), but never tests/.
 * - Nothing under server/, client/ or shared/ imports a file outside these three folders.
 */
export const FOLDERS = ["server", "client", "shared"] as const;

/** One import that breaks a rule. */
export interface Violation {
  /** The importing file, relative to the checked root. */
  file: string;
  /** 1-based line of the specifier. */
  line: number;
  /** The imported file, relative to the checked root. */
  imported: string;
  rule: string;
}

/** A relative import found in a source file. */
interface Specifier {
  specifier: string;
  line: number;
}

/**
 * The source with comments and template-literal text blanked out (newlines kept), so that an
 * `import` inside a comment or a generated code string is not read as one.
 */
function codeOnly(source: string): string {
  let out = "";
  let i = 0;
  const blank = (s: string) => s.replace(/[^\n]/g, " ");
  while (i < source.length) {
    const c = source[i]!;
    const next = source[i + 1];
    if (c === "/" && next === "/") {
      const end = source.indexOf("\n", i);
      const stop = end === -1 ? source.length : end;
      out += blank(source.slice(i, stop));
      i = stop;
    } else if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end === -1 ? source.length : end + 2;
      out += blank(source.slice(i, stop));
      i = stop;
    } else if (c === '"' || c === "'") {
      // A string ends at its quote, or (a regex literal read as a string) at the line's end.
      let j = i + 1;
      while (j < source.length && source[j] !== c && source[j] !== "\n") {
        j += source[j] === "\\" ? 2 : 1;
      }
      out += source.slice(i, j + 1);
      i = j + 1;
    } else if (c === "`") {
      let j = i + 1;
      while (j < source.length && source[j] !== "`") j += source[j] === "\\" ? 2 : 1;
      out += "`" + blank(source.slice(i + 1, j)) + "`";
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT_PATTERNS = [
  // import x from "…", import { a } from "…", import type …, export { a } from "…", export * from
  /\b(?:import|export)\b[^;"'`]*?\bfrom\s*(["'])([^"'\n]+)\1/g,
  // import "…" (side effects)
  /\bimport\s*(["'])([^"'\n]+)\1/g,
  // import("…")
  /\bimport\s*\(\s*(["'])([^"'\n]+)\1\s*\)/g,
];

/** The relative (`./`, `../`) import and export-from specifiers of `source`, with their lines. */
export function relativeSpecifiers(source: string): Specifier[] {
  const code = codeOnly(source);
  const found = new Map<number, Specifier>();
  for (const pattern of IMPORT_PATTERNS) {
    for (const m of code.matchAll(pattern)) {
      const specifier = m[2]!;
      if (!specifier.startsWith("./") && !specifier.startsWith("../")) continue;
      // The position of the specifier itself (a multi-line import names it on its last line).
      const at = m.index! + m[0].lastIndexOf(specifier);
      const line = code.slice(0, at).split("\n").length;
      found.set(at, { specifier, line });
    }
  }
  return [...found.entries()].sort(([a], [b]) => a - b).map(([, s]) => s);
}

/** The layer (a key of {@link LAYERS}) of `path` (relative to the root), or undefined. */
export function layerOf(path: string): string | undefined {
  if (path.startsWith("shared/")) return "shared";
  if (path.startsWith("client/")) return "client";
  const top = path.match(/^server\/([^/]+)$/);
  if (top) return `server/${top[1]}` in LAYERS ? `server/${top[1]}` : undefined;
  const folder = path.match(/^server\/([^/]+)\//);
  if (folder && `server/${folder[1]}` in LAYERS) return `server/${folder[1]}`;
  return undefined;
}

/** Whether `path` is a test file or a server test helper, which may import across layers. */
export function isTestFile(path: string): boolean {
  return /_test\.tsx?$/.test(path) || /^server\/[^/]+\/testing[^/]*\.ts$/.test(path);
}

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/") + 1);
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** Resolves `specifier` (relative) against `from` (a root-relative path); undefined if outside. */
function resolve(from: string, specifier: string): string | undefined {
  const parts = dirname(from).split("/").filter(Boolean);
  for (const part of specifier.split("/")) {
    if (part === "." || part === "") continue;
    if (part === "..") {
      if (!parts.length) return undefined;
      parts.pop();
    } else parts.push(part);
  }
  return parts.join("/");
}

/** The rule `file` breaks by importing `imported` (both root-relative), if any. */
export function ruleBroken(file: string, imported: string): string | undefined {
  if (!FOLDERS.some((f) => imported.startsWith(`${f}/`))) {
    return `files under ${FOLDERS.join("/, ")}/ never import from outside them`;
  }
  if (basename(imported).startsWith("_") && dirname(imported) !== dirname(file)) {
    return `${basename(imported)} is private to ${dirname(imported)}: import its mod.ts`;
  }
  const from = layerOf(file);
  const to = layerOf(imported);
  if (isTestFile(file)) {
    if (imported.startsWith("server/") || imported.startsWith("shared/")) return undefined;
    if (from !== undefined && to === from) return undefined;
    return "test files may import only server/, shared/ and their own layer";
  }
  if (from === undefined) {
    return `${file} is in no layer: add its folder to the LAYERS table of scripts/check_imports.ts`;
  }
  if (to === from) return undefined;
  const may = LAYERS[from]!;
  if (may === "anything") return undefined;
  if (to !== undefined && may.includes(to)) return undefined;
  return may.length
    ? `${from} may import only ${may.join(", ")}`
    : `${from} imports nothing of ours`;
}

/** Every .ts/.tsx file under `root`'s server/, client/ and shared/, root-relative, sorted. */
export async function sourceFiles(root: string): Promise<string[]> {
  const files: string[] = [];
  async function walk(dir: string): Promise<void> {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(`${root}/${dir}`)];
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    for (const e of entries) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory && e.name !== "node_modules") await walk(path);
      else if (e.isFile && /\.tsx?$/.test(e.name)) files.push(path);
    }
  }
  for (const f of FOLDERS) await walk(f);
  return files.sort();
}

/** Checks every source file under `root`; returns the violations, in file and line order. */
export async function checkImports(root: string): Promise<Violation[]> {
  const violations: Violation[] = [];
  for (const file of await sourceFiles(root)) {
    const source = await Deno.readTextFile(`${root}/${file}`);
    for (const { specifier, line } of relativeSpecifiers(source)) {
      const imported = resolve(file, specifier) ?? specifier;
      const rule = ruleBroken(file, imported);
      if (rule) violations.push({ file, line, imported, rule });
    }
  }
  return violations;
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
  const violations = await checkImports(root);
  for (const v of violations) console.log(`${v.file}:${v.line} → ${v.imported}: ${v.rule}`);
  if (violations.length) {
    console.log(
      `\nimports: ${violations.length} against the layer rules (scripts/check_imports.ts)`,
    );
    Deno.exit(1);
  }
  console.log(`imports: all point downwards (${(await sourceFiles(root)).length} files checked)`);
}
