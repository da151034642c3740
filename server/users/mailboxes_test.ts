import assert from "node:assert/strict";
import { FakeConnection, fakeServer, TEST_ACCOUNT } from "./testing.ts";

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
  await server.mailboxes.send("alice", "bob", [{ id: "m-alice", sentAt: 1, envelope: "x" }]);
  await server.mailboxes.send("carol", "bob", [{ id: "m-carol", sentAt: 2, envelope: "y" }]);
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

Deno.test("mailboxes: file chunks from one sender stop at its byte quota with quota_exceeded, storing nothing", async () => {
  const server = fakeServer({ mailboxes: { senderBytes: 50_000 } });
  for (const name of ["alice", "bob", "carol"]) {
    await server.accounts.register({ username: name, secret: SECRET, ...TEST_ACCOUNT });
  }
  const chunk = (id: string) => ({ id, sentAt: 1, envelope: "c".repeat(15_000) });
  await server.mailboxes.send("alice", "bob", [chunk("a-1"), chunk("a-2"), chunk("a-3")]);
  const refused = await server.mailboxes.send("alice", "bob", [chunk("a-4"), chunk("a-5")])
    .then(() => null, (err) => err);
  assert.equal(refused?.code, "quota_exceeded");
  assert.match(refused.message, /already holds .* from you.*"bob" is online/);
  // Small messages are not counted against it; another sender has its own share.
  await server.mailboxes.send("alice", "bob", [{ id: "a-text", sentAt: 2, envelope: "t" }]);
  await server.mailboxes.send("carol", "bob", [chunk("c-1"), chunk("c-2"), chunk("c-3")]);
  const ids = (await server.mailboxes.fetch("bob")).messages.map((m) => m.id).sort();
  assert.deepEqual(ids, ["a-1", "a-2", "a-3", "a-text", "c-1", "c-2", "c-3"]);
  await server.stop();
});
