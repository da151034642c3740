import assert from "node:assert/strict";
import { fakeServer, TEST_ACCOUNT } from "./testing.ts";
import { UserError } from "./errors.ts";
import { legacySalt } from "./accounts.ts";
import { accountVersion, credentialsOf } from "../store/mod.ts";

const SECRET = "s".repeat(43);

Deno.test("accounts: a server that missed a replacement notice reads the ring again once its cache entry expires", async () => {
  const server = fakeServer();
  await server.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  const mine = (await server.accounts.get("alice"))!;
  // The ring now holds an older registration, and this server was not told.
  server.ring.accounts.set("alice", { ...mine, hash: mine.hash.replace(/.$/, "x"), createdAt: 0 });
  assert.equal((await server.accounts.get("alice"))!.createdAt, mine.createdAt, "cached");
  await server.clock.advance(300_001);
  assert.equal((await server.accounts.get("alice"))!.createdAt, 0);
});

Deno.test("accounts: a replacement notice replaces the cached account and is told once", async () => {
  const server = fakeServer();
  await server.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  const mine = (await server.accounts.get("alice"))!;
  const lost: string[] = [];
  server.accounts.onLost((username, version) => lost.push(`${username}:${version}`));
  const older = { ...mine, hash: mine.hash.replace(/.$/, "x"), createdAt: 0 };
  server.ring.replaceAccount(older);
  server.ring.accounts.set("alice", mine); // a late duplicate notice of the same replacement
  server.ring.replaceAccount(older);
  assert.equal((await server.accounts.get("alice"))!.createdAt, 0);
  assert.equal(lost.length, 1);
  assert.ok(server.accounts.hasLost("alice", lost[0]!.slice("alice:".length)));
});

Deno.test("accounts: a retried registration with the same secret and keys succeeds; any other is taken", async () => {
  const keys = { encryption: "e".repeat(120), signing: "s".repeat(120), wrapped: "w".repeat(40) };
  const first = fakeServer();
  const salt = TEST_ACCOUNT.salt;
  await first.accounts.register({ username: "alice", secret: SECRET, salt, keys });
  const stored = first.ring.accounts.get("alice")!;
  // The retry reaches another server (the first one's answer was cut off).
  const other = fakeServer({ ring: first.ring, clock: first.clock });
  await other.accounts.register({ username: "alice", secret: SECRET, salt, keys: { ...keys } });
  assert.deepEqual(first.ring.accounts.get("alice"), stored, "the stored registration, unchanged");
  for (
    const attempt of [
      { secret: "t".repeat(43), salt, keys },
      { secret: SECRET, salt, keys: { ...keys, wrapped: "x".repeat(40) } },
      { secret: SECRET, salt: "b".repeat(22), keys },
    ]
  ) {
    await assert.rejects(
      other.accounts.register({ username: "alice", ...attempt }),
      (err: Error & { code?: string }) => err.code === "username_taken",
    );
  }
  assert.deepEqual(first.ring.accounts.get("alice"), stored);
});

Deno.test("accounts: while the ring cannot answer, a name read recently still logs in from its cached copy; others are 'unavailable'", async () => {
  const server = fakeServer();
  await server.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  server.ring.unavailable = true;
  const alice = await server.accounts.verify("alice", SECRET);
  assert.equal(alice?.username, "alice");
  assert.equal(await server.accounts.verify("alice", "x".repeat(43)), undefined, "wrong secret");
  await assert.rejects(
    server.accounts.verify("bob", SECRET),
    (err) => err instanceof UserError && err.code === "unavailable",
  );
  // Once the cached copy expires, alice's login needs the ring too.
  await server.clock.advance(300_001);
  await assert.rejects(
    server.accounts.verify("alice", SECRET),
    (err) => err instanceof UserError && err.code === "unavailable",
  );
});

Deno.test("accounts: the salt served before login: the account's, a fixed fake one for an unknown name, the name-derived one for a legacy account", async () => {
  const server = fakeServer();
  await server.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  assert.deepEqual(await server.accounts.loginParams("alice"), { salt: TEST_ACCOUNT.salt });
  const ghost = (await server.accounts.loginParams("ghost")).salt;
  assert.match(ghost, /^[A-Za-z0-9_-]{22}$/, "the same form as a real one");
  assert.equal((await server.accounts.loginParams("ghost")).salt, ghost, "stable");
  // Another server of the ring (same secret) serves the same fake salt; other names differ.
  const other = fakeServer({ self: "http://node-b:8000", ring: server.ring, clock: server.clock });
  assert.equal((await other.accounts.loginParams("ghost")).salt, ghost);
  assert.notEqual((await other.accounts.loginParams("ghost2")).salt, ghost);
  // A legacy account (made before salts were random) answers SHA-256("p2p-chat:" + name).
  const { salt: _salt, ...legacy } = server.ring.accounts.get("alice")!;
  server.ring.accounts.set("bob", { ...legacy, username: "bob" });
  assert.equal((await server.accounts.loginParams("bob")).salt, await legacySalt("bob"));
  server.ring.unavailable = true;
  await assert.rejects(
    server.accounts.loginParams("carol"),
    (err) => err instanceof UserError && err.code === "unavailable",
  );
});

Deno.test("accounts: a rekey replaces salt, secret and wrapped keys together; the registration stays the same", async () => {
  const server = fakeServer();
  await server.accounts.register({ username: "alice", secret: SECRET, ...TEST_ACCOUNT });
  const before = server.ring.accounts.get("alice")!;
  const NEW = "n".repeat(43);
  await server.accounts.rekey(before, {
    salt: "b".repeat(22),
    secret: NEW,
    wrapped: "x".repeat(40),
  });
  const after = server.ring.accounts.get("alice")!;
  assert.equal(accountVersion(after), accountVersion(before), "the same registration");
  assert.deepEqual((await server.accounts.loginParams("alice")).salt, "b".repeat(22));
  assert.equal(await server.accounts.verify("alice", SECRET), undefined, "the old secret is dead");
  assert.equal((await server.accounts.verify("alice", NEW))?.username, "alice");
  assert.equal(credentialsOf(after).wrapped, "x".repeat(40));
});

Deno.test("accounts: a registration without keys is refused with its own code and stores nothing", async () => {
  const server = fakeServer();
  await assert.rejects(
    server.accounts.register(
      {
        username: "alice",
        secret: SECRET,
        salt: TEST_ACCOUNT.salt,
      } as unknown as Parameters<typeof server.accounts.register>[0],
    ),
    (err) => err instanceof UserError && err.code === "keys_required",
  );
  assert.equal(server.ring.accounts.has("alice"), false);
});
