import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { parseLiveFrame } from "../shared/mod.ts";
import type { OutgoingMail } from "../shared/mod.ts";
import type { History, MessageRow } from "./history.ts";
import { type DirectLinks, Outbox, type OutboxOptions } from "./outbox.ts";
import { type ConnectionStatus, ServerError } from "./session.ts";
import type { Keyring } from "./keyring.ts";
import { keyringOf, memoryHistory } from "./testing/parts.ts";
import { countedTimers } from "./testing/timers.ts";

/** Data channels that are open or not as the test says; `ensure` only records the request. */
class FakeLinks implements DirectLinks {
  open = new Set<string>();
  sent: Array<{ to: string; text: string }> = [];
  ensured: string[] = [];
  isOpen(remote: string): boolean {
    return this.open.has(remote);
  }
  ensure(remote: string): void {
    this.ensured.push(remote);
  }
  send(remote: string, text: string): boolean {
    if (!this.isOpen(remote)) return false;
    this.sent.push({ to: remote, text });
    return true;
  }
}

/** The servers' side of an outbox: relay and mailbox, refusing when told to. */
class FakeServers {
  status: ConnectionStatus = "online";
  relayed: Array<{ to: string; payload: string }> = [];
  mail: Array<{ to: string; messages: OutgoingMail[] }> = [];
  refusals: ServerError[] = [];
  relay(to: string, payload: string): void {
    this.relayed.push({ to, payload });
  }
  mailSend(to: string, messages: OutgoingMail[]): Promise<void> {
    const refusal = this.refusals.shift();
    if (refusal) return Promise.reject(refusal);
    this.mail.push({ to, messages });
    return Promise.resolve();
  }
}

interface Rig {
  outbox: Outbox;
  history: History;
  links: FakeLinks;
  servers: FakeServers;
  online: Set<string>;
  errors: string[];
  abort: AbortController;
  timers: ReturnType<typeof countedTimers>;
}

async function rig(
  options: OutboxOptions = {},
  directory: Record<string, "alice" | "bob" | "eve" | null> = {},
): Promise<Rig & { keyring: Keyring }> {
  const history = await memoryHistory("alice");
  const links = new FakeLinks();
  const servers = new FakeServers();
  const online = new Set<string>();
  const errors: string[] = [];
  const abort = new AbortController();
  const timers = countedTimers();
  const keyring = await keyringOf("alice", directory);
  const outbox = new Outbox(
    {
      me: "alice",
      history,
      keyring,
      links,
      session: servers,
      isOnline: (user) => online.has(user),
      onChanged: () => {},
      onError: (err) => errors.push((err as Error).message),
      timers,
    },
    { mailRetryMs: 10, mailboxRecheckMs: 10, ...options },
    abort.signal,
  );
  return { outbox, history, links, servers, online, errors, abort, timers, keyring };
}

let seq = 0;
function row(text: string, peer = "bob"): MessageRow {
  seq++;
  return {
    id: `message-${String(seq).padStart(4, "0")}`,
    peer,
    sender: "alice",
    recipient: peer,
    sentAt: 1000 + seq,
    receivedAt: null,
    text,
    via: "p2p",
    status: "sending",
  };
}

function done(r: Rig): void {
  r.abort.abort();
  r.history.close();
}

Deno.test("outbox: a message goes sealed over an open data channel; only its recipient's ack delivers it", async () => {
  const r = await rig();
  try {
    r.online.add("bob");
    r.links.open.add("bob");
    const m = row("hello");
    await r.outbox.send(m);
    assertEquals([r.history.get(m.id)?.status, r.history.get(m.id)?.via], ["sent", "p2p"]);
    const [wire] = r.links.sent;
    assert(wire && !wire.text.includes("hello"), "no plaintext on the wire");
    assertEquals(parseLiveFrame(wire.text).type, "sealed");
    assertEquals(await r.outbox.acknowledge("eve", m.id), false, "eve cannot acknowledge it");
    assertEquals(r.history.get(m.id)?.status, "sent");
    assertEquals(await r.outbox.acknowledge("bob", m.id), true);
    assertEquals(r.history.get(m.id)?.status, "delivered");
    assertEquals(r.servers.relayed.length + r.servers.mail.length, 0, "nothing via the servers");
  } finally {
    done(r);
  }
});

Deno.test("outbox: without a channel an online contact gets the relay, an offline one the mailbox", async () => {
  const r = await rig();
  try {
    r.online.add("bob");
    const toBob = row("relayed");
    await r.outbox.send(toBob);
    assertEquals([r.history.get(toBob.id)?.status, r.history.get(toBob.id)?.via], [
      "sent",
      "relay",
    ]);
    assertEquals(r.servers.relayed.map((x) => x.to), ["bob"]);
    const toEve = row("stored", "eve");
    await r.outbox.send(toEve);
    assertEquals([r.history.get(toEve.id)?.status, r.history.get(toEve.id)?.via], [
      "sent",
      "mailbox",
    ]);
    assertEquals(r.servers.mail.map((x) => [x.to, x.messages.map((m) => m.id)]), [
      ["eve", [toEve.id]],
    ]);
    // A mailbox message is never relayed or stored again by a later flush.
    r.online.add("eve");
    await r.outbox.flush("eve", true);
    assertEquals(r.servers.mail.length, 1);
    assertEquals(r.servers.relayed.map((x) => x.to), ["bob"]);
  } finally {
    done(r);
  }
});

Deno.test("outbox: while the channel is opening messages go through the servers at once, then over the channel", async () => {
  const r = await rig();
  try {
    r.online.add("bob");
    const first = row("first");
    const second = row("second");
    await r.outbox.send(first);
    await r.outbox.send(second);
    // No wait for the channel: both were relayed right away, and the channel was asked for.
    assertEquals(r.servers.relayed.length, 2);
    assertEquals([first, second].map((m) => r.history.get(m.id)?.via), ["relay", "relay"]);
    assertEquals(r.links.ensured, ["bob", "bob"]);
    r.links.open.add("bob");
    const third = row("third");
    await r.outbox.send(third);
    assertEquals([r.history.get(third.id)?.status, r.history.get(third.id)?.via], ["sent", "p2p"]);
    assertEquals(r.servers.relayed.length, 2, "nothing more through the servers");
    // The receiver acknowledges each id once stored; what arrived both ways is stored once.
    for (const m of [first, second, third]) assert(await r.outbox.acknowledge("bob", m.id));
    assertEquals(r.history.pending("alice", "bob").length, 0);
  } finally {
    done(r);
  }
});

Deno.test("outbox: what went over a channel that died unacknowledged goes again through the servers", async () => {
  const r = await rig();
  try {
    r.online.add("bob");
    r.links.open.add("bob");
    const m = row("lost on a dead channel");
    await r.outbox.send(m);
    assertEquals(r.history.get(m.id)?.via, "p2p");
    r.links.open.delete("bob");
    await r.outbox.flush("bob", true);
    assertEquals(r.servers.relayed.length, 1);
    assertEquals([r.history.get(m.id)?.status, r.history.get(m.id)?.via], ["sent", "relay"]);
  } finally {
    done(r);
  }
});

Deno.test("outbox: while the WebSocket is down messages stay sending, and go out on resume", async () => {
  const r = await rig();
  try {
    r.servers.status = "connecting";
    const a = row("first");
    const b = row("second");
    await r.outbox.send(a);
    await r.outbox.send(b);
    assertEquals([a, b].map((m) => r.history.get(m.id)?.status), ["sending", "sending"]);
    r.servers.status = "online";
    r.outbox.resume([]);
    await waitFor(() => r.servers.mail.length === 1, "mailbox send");
    assertEquals(r.servers.mail[0]?.messages.map((m) => m.id), [a.id, b.id], "in send order");
    await r.outbox.flush("bob");
    assertEquals([a, b].map((m) => r.history.get(m.id)?.via), ["mailbox", "mailbox"]);
  } finally {
    done(r);
  }
});

Deno.test("outbox: a refused mailbox send is marked failed, reported, and retried", async () => {
  const r = await rig();
  try {
    r.servers.refusals.push(new ServerError("mailbox_full", "bob's mailbox is full"));
    const m = row("too much");
    await r.outbox.send(m);
    assertEquals(r.history.get(m.id)?.status, "failed");
    assertEquals(r.errors, ["bob's mailbox is full"]);
    await waitFor(() => r.history.get(m.id)?.status === "sent", "retried");
    assertEquals(r.history.get(m.id)?.via, "mailbox");
  } finally {
    done(r);
  }
});

Deno.test("outbox: the servers' delivered notice marks only our messages to that recipient", async () => {
  const r = await rig();
  try {
    const m = row("pending");
    await r.outbox.send(m);
    await r.outbox.markDelivered("eve", [m.id]);
    assertEquals(r.history.get(m.id)?.status, "sent");
    await r.outbox.markDelivered("bob", [m.id, "unknown-id-01"]);
    assertEquals(r.history.get(m.id)?.status, "delivered");
  } finally {
    done(r);
  }
});

Deno.test("outbox: once aborted it sends nothing and its retry timer is gone", async () => {
  const r = await rig({ mailRetryMs: 60_000 });
  try {
    r.servers.refusals.push(new ServerError("unavailable", "No replica reachable"));
    const m = row("later");
    await r.outbox.send(m);
    assertEquals(r.history.get(m.id)?.status, "failed");
    assert(!r.outbox.isBusy);
    assertEquals(r.timers.pending.size, 1, "a retry is scheduled");
    r.outbox.recheckLater("bob");
    assertEquals(r.timers.pending.size, 2, "and a recheck");
    r.abort.abort();
    assertEquals(r.timers.pending.size, 0, "both timers are gone");
    await r.outbox.flush("bob");
    r.outbox.recheckLater("bob");
    assertEquals(r.timers.pending.size, 0);
    assertEquals(r.servers.mail.length, 0);
  } finally {
    done(r);
  }
});

Deno.test("outbox: nothing goes out on any path to a contact without keys, or whose key changed, until the new key is accepted", async () => {
  const directory: Record<string, "alice" | "bob" | "eve" | null> = { eve: null };
  const r = await rig({}, directory);
  try {
    r.online.add("eve");
    r.links.open.add("eve");
    const toEve = row("for eve", "eve");
    await r.outbox.send(toEve);
    assertEquals(r.history.get(toEve.id)?.status, "sending", "waits: eve has no keys");
    // Bob is pinned on first use; then the directory answers "no keys", then eve's keys.
    r.online.add("bob");
    r.links.open.add("bob");
    await r.outbox.send(row("first"));
    assertEquals(r.links.sent.length, 1);
    directory.bob = null;
    assertEquals((await r.keyring.trustOf("bob", true)).status, "changed");
    const blocked = row("while changed");
    await r.outbox.send(blocked);
    directory.bob = "eve";
    assertEquals((await r.keyring.trustOf("bob", true)).status, "changed");
    r.online.delete("bob");
    r.links.open.delete("bob");
    await r.outbox.flush("bob");
    assertEquals(r.history.get(blocked.id)?.status, "sending");
    assertEquals(r.links.sent.length, 1, "nothing more on the data channel");
    assertEquals([r.servers.relayed.length, r.servers.mail.length], [0, 0], "nor via the servers");
    assertEquals(r.errors, []);
    // The user compares and accepts the key now shown: the waiting message goes, sealed for it.
    const check = await r.keyring.safetyCheck("bob");
    assert(check?.isPending);
    await r.keyring.accept("bob", check.keyId);
    await r.outbox.flush("bob");
    assertEquals(r.history.get(blocked.id)?.status, "sent");
    const [mail] = r.servers.mail;
    assertEquals(mail?.messages.map((m) => m.id), [blocked.id]);
    assertEquals(JSON.parse(mail!.messages[0]!.envelope).to, "bob");
  } finally {
    done(r);
  }
});
