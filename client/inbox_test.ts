import { assert, assertEquals } from "./testing/assert.ts";
import {
  type IncomingMail,
  type MailReceipt,
  type PeerMessage,
  sealedFrameText,
} from "../shared/mod.ts";
import type { History, MessageVia } from "./history.ts";
import { type DiscardedMessage, Inbox } from "./inbox.ts";
import { keyringOf, memoryHistory, sealedBy } from "./testing/parts.ts";

interface Rig {
  inbox: Inbox;
  history: History;
  /** What the inbox sent back (acks, pongs), with the path. */
  replies: Array<[string, PeerMessage, MessageVia]>;
  mailbox: IncomingMail[];
  acked: MailReceipt[];
  acks: Array<[string, string]>;
  pongs: Array<[string, number, MessageVia]>;
  stored: Array<[string, number]>;
  discarded: DiscardedMessage[];
  rejected: { count: number };
  abort: AbortController;
}

/** bob's inbox, with his real keyring and history, and everything around it recorded. */
async function rig(directory: Record<string, "alice" | "bob" | "eve" | null> = {}): Promise<Rig> {
  const history = await memoryHistory("bob");
  const abort = new AbortController();
  const r: Omit<Rig, "inbox"> = {
    history,
    replies: [],
    mailbox: [],
    acked: [],
    acks: [],
    pongs: [],
    stored: [],
    discarded: [],
    rejected: { count: 0 },
    abort,
  };
  const inbox = new Inbox({
    me: "bob",
    history,
    keyring: await keyringOf("bob", directory),
    session: {
      mailFetch: () => Promise.resolve(structuredClone(r.mailbox)),
      mailAck: (receipts) => {
        r.acked.push(...receipts);
        return Promise.resolve();
      },
    },
    reply: (remote, msg, via) => r.replies.push([remote, msg, via]) > 0,
    acknowledge: (remote, id) => {
      r.acks.push([remote, id]);
      return Promise.resolve(remote === "alice");
    },
    onPong: (remote, seq, via) => r.pongs.push([remote, seq, via]),
    onStored: (from, count) => r.stored.push([from, count]),
    onDiscarded: (m) => r.discarded.push(m),
    onRejected: () => r.rejected.count++,
    now: () => 42,
  }, abort.signal);
  return { ...r, inbox };
}

function done(r: Rig): void {
  r.abort.abort();
  r.history.close();
}

const plain = (o: Record<string, unknown>) =>
  JSON.stringify({ v: 1, type: "chat", sentAt: 7, text: "hi", ...o });

Deno.test("inbox: one message on the data channel, the relay and the mailbox is stored once, acknowledged on each path", async () => {
  const r = await rig();
  try {
    const env = await sealedBy("alice", "bob", { id: "message-0001", sentAt: 5, text: "once" });
    await r.inbox.receiveLive("alice", sealedFrameText(env), "p2p");
    await r.inbox.receiveLive("alice", sealedFrameText(env), "relay");
    r.mailbox.push({ id: env.id, from: "alice", sentAt: 5, envelope: JSON.stringify(env) });
    await r.inbox.fetchMail();
    assertEquals(
      r.history.list("alice").map((m) => [m.text, m.sender, m.recipient, m.via, m.status]),
      [["once", "alice", "bob", "p2p", "delivered"]],
    );
    assertEquals(r.replies.map(([to, m, via]) => [to, m.type, via]), [
      ["alice", "ack", "p2p"],
      ["alice", "ack", "relay"],
    ]);
    assertEquals(r.acked, [{ id: env.id, from: "alice" }], "the mailbox entry is acknowledged");
    assertEquals(r.stored, [["alice", 1]], "shown once");
    assertEquals(r.rejected.count, 0);
  } finally {
    done(r);
  }
});

Deno.test("inbox: the same checks refuse plaintext, forged, misaddressed and malformed messages on every path, and show each", async () => {
  const r = await rig();
  try {
    const env = await sealedBy("alice", "bob", { id: "message-0002", sentAt: 5, text: "x" });
    // Live: the path says eve, the envelope says alice; a message in clear; junk.
    await r.inbox.receiveLive("eve", sealedFrameText(env), "relay");
    await r.inbox.receiveLive(
      "alice",
      plain({ id: "message-0003", from: "alice", to: "bob" }),
      "p2p",
    );
    await r.inbox.receiveLive("alice", "{not json", "relay");
    assertEquals(r.rejected.count, 3);
    // Mailbox: the same checks, plus the servers' record must name the message it carries.
    r.mailbox.push(
      { id: env.id, from: "eve", sentAt: 5, envelope: JSON.stringify(env) },
      { id: "message-0004", from: "alice", sentAt: 5, envelope: JSON.stringify(env) },
      {
        id: "message-0005",
        from: "alice",
        sentAt: 5,
        envelope: plain({ id: "message-0005", from: "alice", to: "bob" }),
      },
      { id: "message-0006", from: "alice", sentAt: 5, envelope: '{"v":1,"type":"ack"}' },
    );
    await r.inbox.fetchMail();
    assertEquals(r.rejected.count, 7);
    assertEquals(r.history.count(), 0, "nothing stored");
    assertEquals(r.replies.length, 0, "nothing acknowledged to the sender");
    assertEquals(r.acked.length, 4, "rejected mailbox entries are acknowledged, not kept");
    // Each one is shown as refused (never silently dropped), under the id it claims.
    assertEquals(r.discarded.length, 7);
    assert(r.discarded.every((d) => /^Message refused: /.test(d.text)));
    assertEquals(
      r.discarded.filter((d) => /not encrypted/.test(d.text)).map((d) => d.id),
      ["message-0003", "message-0005"],
    );
    assertEquals(r.discarded.slice(3).map((d) => d.id), [
      env.id,
      "message-0004",
      "message-0005",
      "message-0006",
    ]);
  } finally {
    done(r);
  }
});

Deno.test("inbox: an envelope that does not verify with the pinned key is refused and shown, on both paths", async () => {
  const r = await rig();
  try {
    const env = await sealedBy("eve", "bob", { id: "message-0007", sentAt: 9, text: "alice here" });
    const forged = { ...env, from: "alice" };
    await r.inbox.receiveLive("alice", sealedFrameText(forged), "relay");
    r.mailbox.push({ id: env.id, from: "alice", sentAt: 9, envelope: JSON.stringify(forged) });
    await r.inbox.fetchMail();
    assertEquals(r.discarded.map((d) => [d.id, d.from, d.sentAt]), [
      [env.id, "alice", 9],
      [env.id, "alice", 9],
    ]);
    assert(/^Message refused: .*does not verify/.test(r.discarded[0]!.text));
    assertEquals(r.rejected.count, 2);
    assertEquals(r.history.count(), 0);
    assertEquals(r.replies.length, 0, "a discarded live message is not acknowledged");
    assertEquals(r.acked.length, 1, "a discarded mailbox entry is");
  } finally {
    done(r);
  }
});

Deno.test("inbox: only the pinned key verifies: after the directory changes a sender's key, their genuine messages still open and the impostor's are refused", async () => {
  const directory: Record<string, "alice" | "bob" | "eve" | null> = {};
  const r = await rig(directory);
  try {
    const first = await sealedBy("alice", "bob", { id: "message-0101", sentAt: 5, text: "one" });
    await r.inbox.receiveLive("alice", sealedFrameText(first), "relay");
    // The directory now says alice has eve's keys, then none at all.
    directory.alice = "eve";
    const fake = await sealedBy("eve", "bob", { id: "message-0102", sentAt: 6, text: "two" });
    await r.inbox.receiveLive("alice", sealedFrameText({ ...fake, from: "alice" }), "relay");
    directory.alice = null;
    const second = await sealedBy("alice", "bob", { id: "message-0103", sentAt: 7, text: "three" });
    await r.inbox.receiveLive("alice", sealedFrameText(second), "relay");
    assertEquals(r.history.list("alice").map((m) => m.text), ["one", "three"]);
    assertEquals(r.discarded.map((d) => d.id), ["message-0102"]);
  } finally {
    done(r);
  }
});

Deno.test("inbox: a message from a contact without keys is refused", async () => {
  const r = await rig({ alice: null });
  try {
    const env = await sealedBy("alice", "bob", { id: "message-0104", sentAt: 5, text: "x" });
    await r.inbox.receiveLive("alice", sealedFrameText(env), "p2p");
    assertEquals(r.history.count(), 0);
    assertEquals(r.discarded.map((d) => d.id), ["message-0104"]);
    assert(/alice has no keys/.test(r.discarded[0]!.text), r.discarded[0]!.text);
  } finally {
    done(r);
  }
});

Deno.test("inbox: pings are answered on their path, pongs and acks are passed on", async () => {
  const r = await rig();
  try {
    await r.inbox.receiveLive("alice", '{"v":1,"type":"ping","seq":3}', "relay");
    await r.inbox.receiveLive("alice", '{"v":1,"type":"pong","seq":4}', "p2p");
    await r.inbox.receiveLive("alice", '{"v":1,"type":"ack","id":"message-0008"}', "p2p");
    await r.inbox.receiveLive("eve", '{"v":1,"type":"ack","id":"message-0008"}', "p2p");
    assertEquals(r.replies, [["alice", { v: 1, type: "pong", seq: 3 }, "relay"]]);
    assertEquals(r.pongs, [["alice", 4, "p2p"]]);
    assertEquals(r.acks, [["alice", "message-0008"], ["eve", "message-0008"]]);
    assertEquals(r.rejected.count, 1, "an ack for a message that is not theirs is rejected");
  } finally {
    done(r);
  }
});

Deno.test("inbox: once aborted it stores and answers nothing", async () => {
  const r = await rig();
  try {
    const env = await sealedBy("alice", "bob", { id: "message-0009", sentAt: 5, text: "late" });
    r.abort.abort();
    await r.inbox.receiveLive("alice", sealedFrameText(env), "p2p");
    await r.inbox.receiveLive("alice", '{"v":1,"type":"ping","seq":1}', "p2p");
    assertEquals(r.history.count(), 0);
    assertEquals(r.replies.length, 0);
    assertEquals(r.stored.length, 0);
  } finally {
    done(r);
  }
});
