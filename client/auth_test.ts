import { assert, assertEquals } from "./testing/assert.ts";
import { deriveLogin, newCredentials } from "./auth.ts";
import { createChatModel } from "./chat_model.ts";
import { createAccountKeys } from "./keyring.ts";
import { createMemoryRowStores, History } from "./history.ts";
import { legacySalt } from "../shared/crypto/derive.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { FakeCluster, FakeDirectNetwork } from "./testing/fakes.ts";

const sql = await loadSqlJs(
  decodeURIComponent(
    new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
  ),
);

function modelOn(cluster: FakeCluster) {
  return createChatModel({
    session: cluster.connect(),
    createLink: new FakeDirectNetwork().factoryFor("alice"),
    openHistory: (owner) => History.open({ sql, openStore: createMemoryRowStores() }, owner),
  });
}

Deno.test("the secret sent to the server is derived with the account's salt, and is not the password", async () => {
  const first = await newCredentials("alice-password");
  const again = await deriveLogin("alice-password", first.salt);
  assertEquals(again.secret, first.secret);
  assert(!first.secret.includes("alice-password"), "secret is not the password");
  assert(/^[A-Za-z0-9_-]{43}$/.test(first.secret), "base64url of 256 bits");
  assert(/^[A-Za-z0-9_-]{22}$/.test(first.salt), "16 random bytes");
  const other = await newCredentials("alice-password");
  assert(other.salt !== first.salt && other.secret !== first.secret, "a new salt, a new secret");
  assertEquals(first.wrappingKey.extractable, false);
});

Deno.test("register sends a random salt with the derived secret; login derives with the salt the servers serve", async () => {
  const cluster = new FakeCluster();
  const model = modelOn(cluster);
  model.start();
  try {
    assertEquals(await model.register("alice", "alice-password"), true, model.error.value ?? "");
    const salt = cluster.salts.get("alice")!;
    assert(/^[A-Za-z0-9_-]{22}$/.test(salt), `a random salt was registered: ${salt}`);
    assertEquals(cluster.accounts.get("alice"), (await deriveLogin("alice-password", salt)).secret);
    assert(cluster.keys.has("alice"), "every account has keys");
    assertEquals(model.wrappingKey()?.extractable, false);
    model.logout();
    assertEquals(model.wrappingKey(), null);
    assertEquals(await model.login("alice", "alice-password"), true, model.error.value ?? "");
    assert(model.wrappingKey() !== null, "wrapping key kept after login");
    assertEquals(cluster.salts.get("alice"), salt, "a random salt stays");
  } finally {
    model.logout();
  }
});

Deno.test("a legacy account (salted with its name) moves to a random salt at its next login, keys wrapped again", async () => {
  const cluster = new FakeCluster();
  const old = await deriveLogin("alice-password", await legacySalt("alice"));
  const { account } = await createAccountKeys(old.wrappingKey);
  cluster.accounts.set("alice", old.secret);
  cluster.salts.set("alice", old.salt);
  cluster.keys.set("alice", account);
  const model = modelOn(cluster);
  model.start();
  try {
    assertEquals(await model.login("alice", "alice-password"), true, model.error.value ?? "");
    const salt = cluster.salts.get("alice")!;
    assert(/^[A-Za-z0-9_-]{22}$/.test(salt), `moved to a random salt: ${salt}`);
    const now = await deriveLogin("alice-password", salt);
    assertEquals(cluster.accounts.get("alice"), now.secret, "the secret derived with it");
    const keys = cluster.keys.get("alice")!;
    assert(keys.wrapped !== account.wrapped, "the private keys were wrapped again");
    assertEquals(keys.encryption, account.encryption, "the same key pairs");
    model.logout();
    // The next login derives with the new salt and unwraps the rewrapped keys.
    assertEquals(await model.login("alice", "alice-password"), true, model.error.value ?? "");
    assertEquals(cluster.salts.get("alice"), salt);
  } finally {
    model.logout();
  }
});
