import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { cacheStatements } from "./statement_cache.ts";

Deno.test("statement cache: the same SQL text gets the statement compiled before, with fresh results", () => {
  const db = cacheStatements(new DatabaseSync(":memory:"));
  db.exec("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)");
  const insert = db.prepare("INSERT INTO t VALUES (?, ?)");
  insert.run("a", 1);
  assert.equal(db.prepare("INSERT INTO t VALUES (?, ?)"), insert);
  db.prepare("INSERT INTO t VALUES (?, ?)").run("b", 2);
  const select = "SELECT v FROM t WHERE k = ?";
  assert.deepEqual({ ...db.prepare(select).get("a") }, { v: 1 });
  assert.deepEqual({ ...db.prepare(select).get("b") }, { v: 2 });
  assert.deepEqual(db.prepare(select).get("c"), undefined);
  assert.deepEqual({ ...db.prepare("SELECT count(*) AS n FROM t").get() }, { n: 2 });
  db.close();
});

Deno.test("statement cache: past its size the least recently used statement is compiled again", () => {
  const db = cacheStatements(new DatabaseSync(":memory:"), 2);
  const a = db.prepare("SELECT 1 AS x");
  const b = db.prepare("SELECT 2 AS x");
  assert.equal(db.prepare("SELECT 1 AS x"), a); // a is now the most recent
  db.prepare("SELECT 3 AS x"); // drops b
  assert.equal(db.prepare("SELECT 1 AS x"), a);
  const b2 = db.prepare("SELECT 2 AS x");
  assert.notEqual(b2, b);
  assert.deepEqual({ ...b2.get() }, { x: 2 });
  db.close();
});
