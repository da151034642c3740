import assert from "node:assert/strict";
import { QuotaExceededError, TooOldError } from "../replication/mod.ts";
import { UserError } from "./errors.ts";
import { ManualClock } from "../../shared/clock.ts";
import { FakeConnection, FakeRing, fakeServer, TEST_ACCOUNT } from "./testing.ts";

const SECRET = "a".repeat(43);

Deno.test("mailboxes: receipts go to the senders the ring stored, not to the ones the recipient names", async () => {
  const server = fakeServer();
  const conns = new Map<string, FakeConnection>();
  for (const name of ["alice", "bob", "carol"]) {
    await server.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
    const conn = new FakeConnection(server.clock);
    server.sessions.connect(conn);
    await server.sessions.login(conn, name, SECRET);
    conns.set(name, conn);
  }
  await server.mailboxes.send("alice", "bob", [{
    id: "m-alice",
    sentAt: Date.now(),
    envelope: "x",
  }]);
  await server.mailboxes.send("carol", "bob", [{
    id: "m-carol",
    sentAt: Date.now(),
    envelope: "y",
  }]);
  // bob claims both came from carol.
  await server.mailboxes.acknowledge("bob", [
    { id: "m-alice", from: "carol" },
    { id: "m-carol", from: "carol" },
  ]);
  await server.clock.advance(0);
  const delivered = (name: string) =>
    conns.get(name)!.framesOf("delivered").flatMap((f) => f.ids).sort();
  assert.deepEqual(delivered("alice"), ["m-alice"]);
  assert.deepEqual(delivered("carol"), ["m-carol"]);
  assert.deepEqual(await server.mailboxes.fetch("bob"), { messages: [], more: false });
  await server.stop();
});

Deno.test("mailboxes: a sender's quota refused by the ring is quota_exceeded, with its message", async () => {
  // The recipient's primary checks the byte quota as it stores the batch (replicator tests).
  const message = `The mailbox of "bob" already holds 64.0 MB from you; one sender may leave ` +
    `at most 64.0 MB there: send this when "bob" is online, or once they have read what waits`;
  const ring = new FakeRing(new ManualClock());
  ring.storeMessages = () => Promise.reject(new QuotaExceededError(message));
  const server = fakeServer({ ring, clock: ring.clock });
  for (const name of ["alice", "bob"]) {
    await server.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
  }
  const refused = await server.mailboxes.send("alice", "bob", [
    { id: "a-1", sentAt: Date.now(), envelope: "c".repeat(15_000) },
  ]).then(() => null, (err) => err);
  assert.ok(refused instanceof UserError, String(refused));
  assert.deepEqual(ring.mail, []);
  assert.equal(refused.code, "quota_exceeded");
  assert.equal(refused.message, message);
  await server.stop();
});

Deno.test("mailboxes: a message older than the retention is refused as bad_frame, with its reason", async () => {
  const message = "Message m-1 was sent more than 30 days ago: it would expire unread, so it " +
    "was not stored";
  const ring = new FakeRing(new ManualClock());
  ring.storeMessages = () => Promise.reject(new TooOldError(message));
  const server = fakeServer({ ring, clock: ring.clock });
  for (const name of ["alice", "bob"]) {
    await server.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
  }
  const refused = await server.mailboxes.send("alice", "bob", [
    { id: "m-1", sentAt: 1, envelope: "x" },
  ]).then(() => null, (err) => err);
  assert.ok(refused instanceof UserError, String(refused));
  assert.equal(refused.code, "bad_frame");
  assert.equal(refused.message, message);
  assert.deepEqual(ring.mail, []);
  await server.stop();
});

Deno.test("mailboxes: a burst of sends is followed by a notice that started after each, at most one per 250 ms", async () => {
  const server = fakeServer();
  for (const name of ["alice", "bob"]) {
    await server.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
  }
  const bob = new FakeConnection(server.clock);
  server.sessions.connect(bob);
  await server.sessions.login(bob, "bob", SECRET);
  const notices = () => bob.framesOf("mail_waiting").length;
  const send = (id: string) =>
    server.mailboxes.send("alice", "bob", [{ id, sentAt: Date.now(), envelope: "x" }]);
  await send("m-1");
  await server.clock.advance(0);
  assert.equal(notices(), 1);
  // Two more right after: one notice covers both, 250 ms after the first started.
  await send("m-2");
  await send("m-3");
  await server.clock.advance(249);
  assert.equal(notices(), 1);
  await server.clock.advance(1);
  assert.equal(notices(), 2);
  await server.clock.advance(1000);
  assert.equal(notices(), 2);
  // Once quiet, the next send is told at once.
  await send("m-4");
  await server.clock.advance(0);
  assert.equal(notices(), 3);
  await server.stop();
});
