import { assert, assertEquals } from "./testing/assert.ts";
import { deriveLogin, deriveSecret } from "./auth.ts";
import { createChatModel } from "./chat_model.ts";
import { createMemoryRowStores, History } from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { FakeCluster, FakeDirectNetwork } from "./testing/fakes.ts";

Deno.test("the secret sent to the server is derived, deterministic, and not the password", async () => {
  const a = await deriveSecret("alice", "alice-password");
  assertEquals(await deriveSecret("alice", "alice-password"), a);
  assert(a !== "alice-password" && !a.includes("alice-password"), "secret is not the password");
  assert(/^[A-Za-z0-9_-]{43}$/.test(a), "base64url of 256 bits");
  assert(a !== await deriveSecret("bob", "alice-password"), "salted by username");
  const { wrappingKey } = await deriveLogin("alice", "alice-password");
  assertEquals(wrappingKey.extractable, false);
});

Deno.test("register and login send only the derived secret; the wrapping key stays in memory", async () => {
  const sql = await loadSqlJs(
    decodeURIComponent(
      new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
    ),
  );
  const cluster = new FakeCluster();
  const model = createChatModel({
    session: cluster.connect(),
    createLink: new FakeDirectNetwork().factoryFor("alice"),
    openHistory: (owner) => History.open({ sql, openStore: createMemoryRowStores() }, owner),
  });
  model.start();
  try {
    assertEquals(await model.register("alice", "alice-password"), true, model.error.value ?? "");
    assertEquals(cluster.accounts.get("alice"), await deriveSecret("alice", "alice-password"));
    assertEquals(model.wrappingKey()?.extractable, false);
    model.logout();
    assertEquals(model.wrappingKey(), null);
    assertEquals(await model.login("alice", "alice-password"), true, model.error.value ?? "");
    assert(model.wrappingKey() !== null, "wrapping key kept after login");
  } finally {
    model.logout();
  }
});
