/**
 * Reuse of prepared statements. `node:sqlite` compiles a statement on every `prepare`, and a
 * statement's native memory is only freed when the garbage collector finalizes it; with a small JS
 * heap that is rare, so a store that prepares per call pays the compile each time (about 5× the
 * cost of running a small query here) and its process grows by hundreds of MB under load
 * (bench:scale). The stores keep calling `prepare`; this makes it return the statement compiled
 * before for the same SQL text.
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";

/** Most statements kept per database; the least recently used one beyond is dropped. */
export const STATEMENT_CACHE_SIZE = 256;

/**
 * Makes `db.prepare` return a cached statement for SQL text it saw before (least recently used
 * dropped past `max`) and returns `db`. Safe because every use of a statement here runs to its end
 * synchronously (`run`, `get`, `all`; no `iterate`) and none changes a statement's options.
 */
export function cacheStatements(db: DatabaseSync, max = STATEMENT_CACHE_SIZE): DatabaseSync {
  const prepare = db.prepare.bind(db);
  const cache = new Map<string, StatementSync>();
  db.prepare = (sql: string): StatementSync => {
    let statement = cache.get(sql);
    if (statement) {
      cache.delete(sql); // re-inserted below: the Map's order is the order of last use
    } else {
      statement = prepare(sql);
      if (cache.size >= max) cache.delete(cache.keys().next().value!);
    }
    cache.set(sql, statement);
    return statement;
  };
  return db;
}
