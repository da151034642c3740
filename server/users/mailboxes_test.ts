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
