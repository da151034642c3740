/** Loads sql.js (SQLite compiled to WebAssembly) with its `.wasm` file at a given location. */
import initSqlJs from "sql.js";
import type { SqlJs } from "./history.ts";

/**
 * Loads sql.js; `wasmLocation` is a URL in the browser (`"sql-wasm.wasm"`, next to the page) or
 * a file path in Deno.
 */
export async function loadSqlJs(wasmLocation: string): Promise<SqlJs> {
  return (await initSqlJs({ locateFile: () => wasmLocation })) as SqlJs;
}
