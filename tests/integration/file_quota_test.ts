/**
 * The per-sender byte quota of a mailbox (files, issue 15) on a real server process: file chunks
 * from one sender stop at `P2P_MAILBOX_SENDER_MB` with a typed `quota_exceeded` that stores
 * nothing, other senders and small messages still get through, and room comes back once the
 * recipient has read what waited.
 */
import assert from "node:assert/strict";
import { startServer } from "../support/server_process.ts";
import { waitFor } from "../support/wait.ts";
import { TestClient } from "../support/ws_client.ts";

const PASSWORD = "correct horse battery";

/** A chunk-sized mailbox entry (a file chunk is ~15,000 characters). */
const chunk = (tag: string, i: number) => ({
  id: `${tag}-chunk-${String(i).padStart(5, "0")}`,
  sentAt: Date.now(),
  envelope: "c".repeat(15_000),
});

Deno.test("file chunks from one sender stop at the per-sender quota with quota_exceeded, storing nothing", async () => {
  const server = await startServer({ env: { P2P_MAILBOX_SENDER_MB: "1" } });
  const clients: TestClient[] = [];
  const connect = async (user: string) => {
    const c = await TestClient.connect(server.url);
    clients.push(c);
    await c.login(user, PASSWORD, false);
    return c;
  };
  try {
    const reg = await TestClient.connect(server.url);
    for (const u of ["alice", "bob", "carol"]) await reg.register(u, PASSWORD);
    await reg.close();
    const alice = await connect("alice");
    // 1 MiB holds 69 chunks of 15,000 characters: three per frame until refused.
    let stored = 0;
    let refusal: Record<string, unknown> | null = null;
    while (!refusal) {
      const batch = [0, 1, 2].map((j) => chunk("a", stored + j));
      const r = await alice.request({ type: "mail_send", to: "bob", messages: batch }, 30_000);
      if (r.type === "ok") stored += batch.length;
      else refusal = r as unknown as Record<string, unknown>;
      assert.ok(stored < 200, "the quota never refused");
    }
    assert.equal(refusal.type, "error");
    assert.equal(refusal.code, "quota_exceeded");
    assert.match(String(refusal.message), /bob.*online/);
    assert.equal(stored, 69);
    // A short text message from the same sender still goes; so do another sender's chunks.
    const text = await alice.request({
      type: "mail_send",
      to: "bob",
      messages: [{ id: "alice-text-0001", sentAt: Date.now(), envelope: "t".repeat(300) }],
    });
    assert.equal(text.type, "ok", JSON.stringify(text));
    const carol = await connect("carol");
    const other = await carol.request({ type: "mail_send", to: "bob", messages: [chunk("c", 0)] });
    assert.equal(other.type, "ok", JSON.stringify(other));

    // Bob holds exactly what was accepted: the refused batch changed nothing.
    const bob = await connect("bob");
    const mail = await bob.request({ type: "mail_fetch" }, 30_000);
    assert.equal(mail.type, "mail");
    if (mail.type !== "mail") return;
    const fromAlice = mail.messages.filter((m) => m.from === "alice");
    assert.equal(fromAlice.length, stored + 1);
    assert.equal(mail.messages.filter((m) => m.from === "carol").length, 1);
    const ack = await bob.request({
      type: "mail_ack",
      messages: mail.messages.map((m) => ({ id: m.id, from: m.from })),
    }, 30_000);
    assert.equal(ack.type, "ok");

    // Once bob has read them, alice has room again (the server reads the mailbox anew).
    await waitFor(
      "alice's chunks to be accepted again after bob read them",
      async () => {
        const r = await alice.request({ type: "mail_send", to: "bob", messages: [chunk("b", 0)] });
        if (r.type === "error" && r.code !== "quota_exceeded") throw new Error(JSON.stringify(r));
        return r.type === "ok";
      },
      30_000,
      500,
    );
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});

Deno.test("file chunks sent at once by one sender do not pass the per-sender quota", async () => {
  const server = await startServer({ env: { P2P_MAILBOX_SENDER_MB: "1" } });
  const clients: TestClient[] = [];
  try {
    const reg = await TestClient.connect(server.url);
    for (const u of ["alice", "bob"]) await reg.register(u, PASSWORD);
    await reg.close();
    const alice = await TestClient.connect(server.url);
    clients.push(alice);
    await alice.login("alice", PASSWORD, false);
    // 40 frames of three chunks (120 chunks, 1.7 MiB), all sent before any answer: 1 MiB holds
    // 69 chunks, so exactly 23 frames fit, and every other one is refused whole.
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, f) =>
        alice.request({
          type: "mail_send",
          to: "bob",
          messages: [0, 1, 2].map((j) => chunk("p", f * 3 + j)),
        }, 60_000)),
    );
    const refused = answers.filter((r) => r.type !== "ok");
    for (const r of refused) {
      assert.equal(r.type === "error" && r.code, "quota_exceeded", JSON.stringify(r));
    }
    assert.equal(answers.length - refused.length, 23);

    const bob = await TestClient.connect(server.url);
    clients.push(bob);
    await bob.login("bob", PASSWORD, false);
    const ids: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await bob.request({ type: "mail_fetch", ...(after ? { after } : {}) }, 30_000);
      assert.equal(page.type, "mail", JSON.stringify(page));
      if (page.type !== "mail") return;
      ids.push(...page.messages.map((m) => m.id));
      if (!page.more) break;
      after = page.messages.at(-1)!.id;
    }
    // What was acknowledged is stored, whole frames only, and nothing more.
    assert.equal(ids.length, 69);
    const frames = new Set(ids.map((id) => Math.floor(Number(id.split("-").at(-1)) / 3)));
    assert.equal(frames.size, 23);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});
