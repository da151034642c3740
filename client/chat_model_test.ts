import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import {
  ACCOUNT_UNREACHABLE_TEXT,
  type ChatModel,
  type ChatModelDeps,
  type ChatModelOptions,
  createChatModel,
  OFFLINE_TEXT,
} from "./chat_model.ts";
import { createMemoryKeyStore } from "./keyring.ts";
import type { TabStorage } from "./session.ts";
import { createMemoryRowStores, History } from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";
import {
  deliveriesInFlight,
  FakeCluster,
  FakeDirectNetwork,
  type FakeSession,
} from "./testing/fakes.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import { type Envelope, seal } from "../shared/crypto/mod.ts";
import { sealedFrameText as liveText } from "../shared/mod.ts";

/** Pre-generated key pairs per user name (3072-bit RSA generation is slow). */
async function keysOf(username: string) {
  const keys = await testKeys();
  return username === "alice" ? keys.alice : username === "bob" ? keys.bob : keys.eve;
}

const sql = await loadSqlJs(
  decodeURIComponent(
    new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
  ),
);

interface World {
  cluster: FakeCluster;
  net: FakeDirectNetwork;
  stores: ReturnType<typeof createMemoryRowStores>;
  /** The row stores of users' second devices (another browser). */
  stores2?: ReturnType<typeof createMemoryRowStores>;
  clients: Array<{ model: ChatModel; session: FakeSession }>;
}

/** An envelope sealed by `from` for `to`, as their clients would make it. */
async function sealed(
  from: string,
  to: string,
  id: string,
  sentAt: number,
  text: string,
): Promise<Envelope> {
  const [sender, recipient] = [await keysOf(from), await keysOf(to)];
  return await seal(
    { id, from, to, sentAt, text },
    sender.signing.privateKey,
    recipient.encryption.publicKey,
    sender.encryption.publicKey,
  );
}

function world(): World {
  return {
    cluster: new FakeCluster(),
    net: new FakeDirectNetwork(),
    stores: createMemoryRowStores(),
    clients: [],
  };
}

/** A logged-in client for `username` (registered on the fly). */
async function client(
  w: World,
  username: string,
  channelWaitMs = 1000,
  options: ChatModelOptions & Pick<ChatModelDeps, "onNewMessages"> = {},
  befriend = true,
) {
  const session = w.cluster.connect();
  const { onNewMessages, ...rest } = options;
  const model = createChatModel({
    session,
    createLink: w.net.factoryFor(username),
    openHistory: (owner) => History.open({ sql, openStore: w.stores }, owner),
    generateKeys: () => keysOf(username),
    onNewMessages,
  }, { channelWaitMs, pingTimeoutMs: 1000, ...rest });
  model.start();
  assertEquals(await model.register(username, "password-1"), true, model.error.value ?? "");
  // Everyone signed in here and the newcomer add each other as contacts (by exact name).
  for (const other of befriend ? w.clients : []) {
    const name = other.model.me.value;
    if (!name || name === username) continue;
    assertEquals(await model.addContact(name), null);
    assertEquals(await other.model.addContact(username), null);
  }
  w.clients.push({ model, session });
  return { model, session };
}

/** alice logged in with the chat to bob open; bob registered, then logged out (offline). */
async function aliceWithBobOffline(
  w: World,
  channelWaitMs = 30,
  aliceOptions: ChatModelOptions = {},
) {
  const alice = await client(w, "alice", channelWaitMs, aliceOptions);
  const bob = await client(w, "bob", channelWaitMs);
  bob.model.logout();
  await waitFor(() => alice.model.contacts.value.every((c) => !c.online), "bob offline");
  alice.model.openChat("bob");
  return { alice, bob };
}

function shutdown(w: World): void {
  for (const c of w.clients) c.model.logout();
}

/**
 * Waits until nothing more happens by itself: no fake delivery in flight and no client with work
 * pending. Used before asserting that something did NOT happen.
 */
async function settled(w: World): Promise<void> {
  await waitFor(
    () => deliveriesInFlight() === 0 && w.clients.every((c) => !c.model.hasPendingWork()),
    "every client to settle",
  );
}

Deno.test("two users exchange a message over the data channel and the ack marks it delivered", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    await waitFor(
      () => alice.model.contacts.value.some((c) => c.username === "bob" && c.online),
      "alice sees bob online",
    );
    alice.model.openChat("bob");
    // Opening the chat opens the channel; a message sent before it is open goes via the relay.
    await waitFor(() => alice.model.isChannelOpen("bob"), "the data channel to open");
    await alice.model.send("hello bob");
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "delivered");
    const [sent] = alice.model.messages.value;
    assertEquals(sent?.via, "p2p");
    const received = bob.model.messagesWith("alice");
    assertEquals(received.map((m) => [m.text, m.sender, m.via]), [["hello bob", "alice", "p2p"]]);
    assertEquals(bob.model.unread.value.alice, 1);
    assertEquals(w.cluster.relayed.length, 0, "nothing went through the servers");

    // Bob replies on the same channel (he is the non-initiating side).
    bob.model.openChat("alice");
    await bob.model.send("hi alice");
    await waitFor(() => alice.model.messages.value.length === 2, "reply shown");
    assertEquals(alice.model.messages.value.map((m) => m.text), ["hello bob", "hi alice"]);
  } finally {
    shutdown(w);
  }
});

Deno.test("without a direct path a message goes through the server relay", async () => {
  const w = world();
  w.net.isBlocked = true;
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    await alice.model.send("via the servers");
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "delivered");
    assertEquals(alice.model.messages.value[0]?.via, "relay");
    assertEquals(bob.model.messagesWith("alice")[0]?.via, "relay");
    assert(w.cluster.relayed.length >= 2, "chat and ack were relayed");
  } finally {
    shutdown(w);
  }
});

Deno.test("a message in clear, or whose sender field is forged, is refused and shown as refused", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    await client(w, "mallory");
    const forged = JSON.stringify({
      v: 1,
      type: "chat",
      id: "forged-0001",
      from: "alice",
      to: "bob",
      sentAt: Date.now(),
      text: "I am alice",
    });
    bob.session.injectRelay("mallory", forged);
    bob.session.injectRelay("mallory", "{not json");
    await waitFor(() => bob.model.rejected.count >= 2, "both rejected");
    assertEquals(bob.model.messagesWith("alice").length, 0);
    assertEquals(bob.model.messagesWith("mallory").length, 0);
    assertEquals(bob.model.rejected.count, 2);
    assertEquals(bob.model.warnings.value.mallory?.map((x) => x.id)[0], "forged-0001");
    assertEquals(bob.model.warnings.value.mallory?.length, 2);
    assertEquals(alice.model.rejected.count, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("a message arriving on both paths is stored and shown once", async () => {
  const w = world();
  try {
    await client(w, "alice");
    const bob = await client(w, "bob");
    const chat = liveText(await sealed("alice", "bob", "dup-message-1", 1, "twice"));
    bob.session.injectRelay("alice", chat);
    bob.session.injectRelay("alice", chat);
    // The receiver acknowledges only once the message is stored, and a duplicate again.
    const acks = () =>
      w.cluster.relayed.filter((r) => r.from === "bob" && r.payload.includes("ack"));
    await waitFor(() => acks().length === 2, "both copies acknowledged");
    assertEquals(bob.model.messagesWith("alice").length, 1);
  } finally {
    shutdown(w);
  }
});

Deno.test("pings are answered on the data channel and through the relay", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    await client(w, "bob");
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    const direct = await alice.model.pingPeer("bob", 3);
    const relayed = await alice.model.pingRelay("bob", 3);
    assertEquals(direct.length, 3);
    assertEquals(relayed.length, 3);
    assert(alice.model.isChannelOpen("bob"));
    assert(alice.model.dcOpenedAt().bob !== undefined);
  } finally {
    shutdown(w);
  }
});

Deno.test("mail stored while the recipient is online after all reaches them without a new login", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    // alice's view of bob is stale: she believes him offline, so her message goes to his mailbox.
    alice.session.events.onPresence?.("bob", false);
    alice.model.openChat("bob");
    await alice.model.send("are you there?");
    assertEquals(w.cluster.mailSent.flatMap((m) => m.ids).length, 1);
    // The servers tell bob's running session, which fetches at once.
    await waitFor(() => bob.model.messagesWith("alice").length === 1, "bob got the mail");
    assertEquals(bob.model.messagesWith("alice")[0]!.via, "mailbox");
    await waitFor(
      () => alice.model.messages.value.every((m) => m.status === "delivered"),
      "alice sees it delivered",
    );
  } finally {
    shutdown(w);
  }
});

Deno.test("mailbox messages whose delivered notice was lost are confirmed over p2p later", async () => {
  const w = world();
  try {
    const { alice, bob } = await aliceWithBobOffline(w, 30, { mailboxRecheckMs: 50 });
    for (const text of ["one", "two"]) await alice.model.send(text);
    w.cluster.loseDeliveredNotices = true;
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => bob.model.messagesWith("alice").length === 2, "bob got the mail");
    // No notice reached alice; once bob has been online a while, her client offers the two
    // again over a data channel, bob (who has them) acknowledges, and they show delivered.
    await waitFor(
      () => alice.model.messages.value.every((m) => m.status === "delivered"),
      "alice sees them delivered without the servers' notice",
    );
    assertEquals(alice.model.messages.value.map((m) => m.via), ["mailbox", "mailbox"]);
    assertEquals(bob.model.messagesWith("alice").map((m) => m.text), ["one", "two"]);
    assertEquals(w.cluster.relayed.length, 0, "mailbox messages are never relayed");
  } finally {
    shutdown(w);
  }
});

Deno.test("a message to an offline contact goes to their mailbox and arrives at their next login", async () => {
  const w = world();
  try {
    const { alice, bob } = await aliceWithBobOffline(w, 30);
    for (const text of ["one", "two", "three"]) await alice.model.send(text);
    // Stored on the servers, pending: not failed, and nothing relayed.
    assertEquals(
      alice.model.messages.value.map((m) => [m.text, m.status, m.via]),
      [["one", "sent", "mailbox"], ["two", "sent", "mailbox"], ["three", "sent", "mailbox"]],
    );
    assertEquals(w.cluster.mailboxes.get("bob")?.length, 3);
    assertEquals(w.cluster.relayed.length, 0);

    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => bob.model.messagesWith("alice").length === 3, "bob got the mail");
    assertEquals(
      bob.model.messagesWith("alice").map((m) => [m.text, m.sender, m.via, m.status]),
      [
        ["one", "alice", "mailbox", "delivered"],
        ["two", "alice", "mailbox", "delivered"],
        ["three", "alice", "mailbox", "delivered"],
      ],
    );
    assertEquals(bob.model.unread.value.alice, 3);
    await waitFor(
      () => alice.model.messages.value.every((m) => m.status === "delivered"),
      "alice sees them delivered",
    );
    assertEquals(alice.model.messages.value.map((m) => m.via), ["mailbox", "mailbox", "mailbox"]);
    await waitFor(() => w.cluster.mailboxes.get("bob")?.length === 0, "mailbox emptied");

    // Once: another login finds nothing new, and nothing was resent directly.
    bob.model.logout();
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await settled(w);
    assertEquals(bob.model.messagesWith("alice").length, 3);
    assertEquals(w.cluster.mailSent.flatMap((s) => s.ids).length, 3);
    assertEquals(w.cluster.relayed.length, 0);
    assertEquals(bob.model.rejected.count, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("a message that reaches the peer both directly and through the mailbox is shown once", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    await waitFor(() => alice.model.isChannelOpen("bob"), "the data channel to open");
    await alice.model.send("direct first");
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "delivered");
    const [row] = alice.model.messages.value;
    assert(row);
    // The same message also sits in bob's mailbox (say, a retry that raced the data channel).
    const envelope = JSON.stringify(await sealed("alice", "bob", row.id, row.sentAt, row.text));
    w.cluster.mailboxes.set("bob", [{ id: row.id, from: "alice", sentAt: row.sentAt, envelope }]);
    bob.session.dropConnection();
    bob.session.restoreConnection();
    await waitFor(() => w.cluster.mailboxes.get("bob")?.length === 0, "acknowledged");
    assertEquals(bob.model.messagesWith("alice").map((m) => [m.text, m.via]), [[
      "direct first",
      "p2p",
    ]]);

    // And the other way round: first through the mailbox, then relayed again.
    const id = "mailbox-first-01";
    const sentAt = Date.now();
    const env = await sealed("alice", "bob", id, sentAt, "mailbox first");
    const text = liveText(env);
    w.cluster.mailboxes.set("bob", [{ id, from: "alice", sentAt, envelope: JSON.stringify(env) }]);
    bob.session.dropConnection();
    bob.session.restoreConnection();
    await waitFor(() => bob.model.messagesWith("alice").length === 2, "mail fetched");
    bob.session.injectRelay("alice", text);
    await settled(w);
    assertEquals(
      bob.model.messagesWith("alice").map((m) => [m.text, m.via]),
      [["direct first", "p2p"], ["mailbox first", "mailbox"]],
    );
    assertEquals(bob.model.unread.value.alice, 2);
    assertEquals(bob.model.rejected.count, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("mailbox entries in clear, forged or malformed are refused, shown, and acknowledged", async () => {
  const w = world();
  try {
    await client(w, "alice");
    // An account made before keys existed: even its messages in clear are refused now.
    w.cluster.accounts.set("mallory", "old-secret");
    const bob = await client(w, "bob");
    bob.model.logout();
    const chat = (id: string, from: string, to: string, text: string) =>
      JSON.stringify({ v: 1, type: "chat", id, from, to, sentAt: 1000, text });
    w.cluster.mailboxes.set("bob", [
      // mallory's server record, but the envelope claims alice wrote it
      {
        id: "forged-0001",
        from: "mallory",
        sentAt: 1000,
        envelope: chat("forged-0001", "alice", "bob", "I am alice"),
      },
      // addressed to someone else
      {
        id: "misdirect-01",
        from: "mallory",
        sentAt: 1001,
        envelope: chat("misdirect-01", "mallory", "carol", "hi"),
      },
      // id differs from the server's record
      {
        id: "swapped-0001",
        from: "mallory",
        sentAt: 1002,
        envelope: chat("other-id-001", "mallory", "bob", "hi"),
      },
      { id: "garbage-0001", from: "mallory", sentAt: 1003, envelope: "{not json" },
      {
        id: "genuine-0001",
        from: "mallory",
        sentAt: 1004,
        envelope: chat("genuine-0001", "mallory", "bob", "real"),
      },
    ]);
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => w.cluster.mailboxes.get("bob")?.length === 0, "all acknowledged");
    assertEquals(bob.model.messagesWith("alice").length, 0);
    assertEquals(bob.model.messagesWith("mallory").length, 0);
    assertEquals(bob.model.rejected.count, 5);
    assertEquals(bob.model.warnings.value.mallory?.map((x) => x.id), [
      "forged-0001",
      "misdirect-01",
      "swapped-0001",
      "garbage-0001",
      "genuine-0001",
    ]);
    assertEquals(w.cluster.mailAcked.flatMap((a) => a.messages).length, 5);
  } finally {
    shutdown(w);
  }
});

Deno.test("delivered notices mark only the sender's own messages to that recipient", async () => {
  const w = world();
  try {
    const { alice } = await aliceWithBobOffline(w, 30);
    await alice.model.send("pending one");
    const [row] = alice.model.messages.value;
    assert(row);
    assertEquals(row.status, "sent");
    // Another user cannot claim to have received it.
    alice.session.events.onDelivered?.("mallory", [row.id]);
    await settled(w);
    assertEquals(alice.model.messages.value[0]?.status, "sent");
    alice.session.events.onDelivered?.("bob", [row.id, "unknown-id-01"]);
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "delivered");
    // Status never moves back.
    alice.session.events.onDelivered?.("bob", [row.id]);
    await settled(w);
    assertEquals(alice.model.messages.value[0]?.status, "delivered");
  } finally {
    shutdown(w);
  }
});

Deno.test("a mailbox message later acknowledged directly by the peer is delivered", async () => {
  const w = world();
  try {
    const { alice, bob } = await aliceWithBobOffline(w, 1000);
    await alice.model.send("stored");
    assertEquals(alice.model.messages.value[0]?.via, "mailbox");
    const id = alice.model.messages.value[0]!.id;
    // Bob comes back but the mail is acknowledged only directly (e.g. mail_ack was lost).
    w.cluster.mailboxes.set("bob", []);
    assertEquals(await bob.model.login("bob", "password-1"), true);
    bob.model.openChat("alice");
    await waitFor(() => bob.model.isChannelOpen("alice"), "channel open");
    bob.session.injectRelay("alice", liveText(await sealed("alice", "bob", id, 1, "stored")));
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "delivered");
    assertEquals(alice.model.messages.value[0]?.via, "mailbox");
  } finally {
    shutdown(w);
  }
});

Deno.test("when the relay says peer_offline the message goes to the mailbox", async () => {
  const w = world();
  w.net.isBlocked = true;
  try {
    const alice = await client(w, "alice", 30);
    await client(w, "bob", 30);
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    // Bob vanishes without alice hearing of it (stale presence).
    w.cluster.online.delete("bob");
    alice.model.openChat("bob");
    await alice.model.send("are you there?");
    await waitFor(() => alice.model.messages.value[0]?.via === "mailbox", "moved to the mailbox");
    assertEquals(alice.model.messages.value[0]?.status, "sent");
    assertEquals(w.cluster.mailboxes.get("bob")?.map((m) => m.id), [
      alice.model.messages.value[0]!.id,
    ]);
    assertEquals(alice.model.error.value, null);
  } finally {
    shutdown(w);
  }
});

Deno.test("messages sent while the WebSocket is down stay sending and go out on reconnect", async () => {
  const w = world();
  try {
    const { alice, bob } = await aliceWithBobOffline(w, 30);
    alice.session.dropConnection();
    await alice.model.send("first");
    await alice.model.send("second");
    assertEquals(alice.model.messages.value.map((m) => m.status), ["sending", "sending"]);
    assertEquals(w.cluster.mailSent.length, 0);
    alice.session.restoreConnection();
    await waitFor(
      () => alice.model.messages.value.every((m) => m.status === "sent"),
      "sent after reconnect",
    );
    assertEquals(w.cluster.mailboxes.get("bob")?.map((m) => m.sentAt).length, 2);
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => bob.model.messagesWith("alice").length === 2, "received");
    assertEquals(bob.model.messagesWith("alice").map((m) => m.text), ["first", "second"]);
  } finally {
    shutdown(w);
  }
});

Deno.test("a refused mailbox send shows the servers' reason, is marked failed, and is retried", async () => {
  const w = world();
  try {
    const { alice } = await aliceWithBobOffline(w, 30, { mailRetryMs: 50 });
    w.cluster.mailError = { code: "mailbox_full", message: "bob's mailbox is full" };
    await alice.model.send("too much");
    assertEquals(alice.model.messages.value[0]?.status, "failed");
    assertEquals(alice.model.error.value, "bob's mailbox is full");
    w.cluster.mailError = null;
    await waitFor(() => alice.model.messages.value[0]?.status === "sent", "retried");
    assertEquals(alice.model.messages.value[0]?.via, "mailbox");
  } finally {
    shutdown(w);
  }
});

Deno.test("logging out ends what the session started: its links close and it shows nothing more", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    await alice.model.send("before");
    await waitFor(() => alice.model.isChannelOpen("bob"), "channel open");
    const link = w.net.linkOf("alice", "bob");
    alice.model.logout();
    assertEquals(link?.isOpen, false, "the data channel is closed");
    assertEquals(alice.model.me.value, null);
    assertEquals(alice.model.contacts.value, []);
    assertEquals(alice.model.messages.value, []);
    assertEquals(alice.model.channels.value, {});
    await waitFor(() => !bob.model.isChannelOpen("alice"), "bob sees the channel close");
    await settled(w);
    assertEquals(alice.model.error.value, null, "nothing of the old session reported an error");
  } finally {
    shutdown(w);
  }
});

Deno.test("a logout while the session is still being entered abandons it", async () => {
  const w = world();
  try {
    await client(w, "bob");
    const session = w.cluster.connect();
    let release = () => {};
    const gate = new Promise<void>((r) => release = r);
    const closed: string[] = [];
    let isOpening = false;
    const model = createChatModel({
      session,
      createLink: w.net.factoryFor("alice"),
      async openHistory(owner) {
        isOpening = true;
        await gate;
        const h = await History.open({ sql, openStore: w.stores }, owner);
        const close = h.close.bind(h);
        h.close = () => {
          closed.push(owner);
          close();
        };
        return h;
      },
      generateKeys: () => keysOf("alice"),
    }, { channelWaitMs: 30 });
    model.start();
    w.clients.push({ model, session });
    const registered = model.register("alice", "password-1");
    await waitFor(() => isOpening, "the session is being entered");
    model.logout();
    release();
    await registered;
    await settled(w);
    assertEquals(model.me.value, null, "the abandoned session is not entered");
    assertEquals(closed, ["alice"], "its history was opened, then closed");
    assertEquals(model.contacts.value, []);
  } finally {
    shutdown(w);
  }
});

Deno.test("history survives logging out and back in", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    await client(w, "bob");
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    await alice.model.send("remember me");
    alice.model.logout();
    assertEquals(alice.model.me.value, null);
    assertEquals(await alice.model.login("alice", "password-1"), true);
    alice.model.openChat("bob");
    assertEquals(alice.model.messages.value.map((m) => m.text), ["remember me"]);
  } finally {
    shutdown(w);
  }
});

Deno.test("login errors from the server are shown to the user", async () => {
  const w = world();
  try {
    await client(w, "alice");
    const other = await client(w, "bob");
    other.model.logout();
    assertEquals(await other.model.register("alice", "password-1"), false);
    assertEquals(other.model.error.value, 'Username "alice" is taken');
    assertEquals(await other.model.login("alice", "wrong-password"), false);
    assertEquals(other.model.error.value, "Wrong username or password");
    assertEquals(await other.model.login("a!", "password-1"), false);
    assert(other.model.error.value?.startsWith("Username must be"));
  } finally {
    shutdown(w);
  }
});

Deno.test("registration sends public keys and wrapped private keys; messages travel sealed on every path", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    const account = w.cluster.keys.get("alice");
    assert(account, "alice registered with keys");
    assert(!account.wrapped.includes("PRIVATE"), "no PEM private key");
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    await waitFor(() => alice.model.isChannelOpen("bob"), "the data channel to open");
    await alice.model.send("secret over the data channel");
    await waitFor(() => bob.model.messagesWith("alice").length === 1, "p2p arrived");
    w.net.isBlocked = true;
    alice.model.logout();
    assertEquals(await alice.model.login("alice", "password-1"), true);
    alice.model.openChat("bob");
    bob.model.openChat("alice");
    await alice.model.send("secret via the relay");
    await waitFor(() => bob.model.messagesWith("alice").length === 2, "relay arrived");
    await waitFor(
      () => alice.model.messages.value.every((m) => m.status === "delivered"),
      "acknowledged",
    );
    bob.model.logout();
    await waitFor(() => alice.model.contacts.value.every((c) => !c.online), "bob offline");
    await alice.model.send("secret in the mailbox");
    assertEquals(w.cluster.mailboxes.get("bob")?.length, 1);
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => bob.model.messagesWith("alice").length === 3, "mail arrived");
    assertEquals(
      bob.model.messagesWith("alice").map((m) => [m.text, m.via]),
      [
        ["secret over the data channel", "p2p"],
        ["secret via the relay", "relay"],
        ["secret in the mailbox", "mailbox"],
      ],
    );
    const wire = [
      ...w.net.sent.map((s) => s.text),
      ...w.cluster.relayed.map((r) => r.payload),
      ...w.cluster.mailSent.map((m) => JSON.stringify(m)),
    ];
    assert(wire.some((t) => t.includes('"type":"sealed"')), "sealed live messages");
    assert(w.cluster.relayed.length > 0 && w.net.sent.length > 0);
    for (const t of wire) assert(!t.includes("secret"), `plaintext on the wire: ${t}`);
    assertEquals(bob.model.rejected.count, 0);
    // Both see the same fingerprints.
    const mine = await bob.model.fingerprints("bob");
    assert(mine);
    assertEquals(JSON.stringify(await alice.model.fingerprints("bob")), JSON.stringify(mine));
  } finally {
    shutdown(w);
  }
});

Deno.test("a tampered or foreign-signed envelope, or a message in clear, is refused and shown as refused", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    await client(w, "mallory", 30);
    bob.model.logout();
    await waitFor(
      () => alice.model.contacts.value.every((c) => c.username !== "bob" || !c.online),
      "bob offline",
    );
    alice.model.openChat("bob");
    await alice.model.send("original words");
    const [entry] = w.cluster.mailboxes.get("bob") ?? [];
    assert(entry);
    const env = JSON.parse(entry.envelope) as Envelope;
    // A server flips the ciphertext.
    const c = env.ciphertext;
    env.ciphertext = (c[0] === "A" ? "B" : "A") + c.slice(1);
    entry.envelope = JSON.stringify(env);
    // Mallory signs a message that claims to be from alice... and a plaintext one.
    const forged = await sealed("mallory", "bob", "forged-by-mal1", 5, "I am alice");
    const claimed = { ...forged, from: "alice" };
    w.cluster.mailboxes.get("bob")!.push({
      id: claimed.id,
      from: "alice",
      sentAt: 5,
      envelope: JSON.stringify(claimed),
    }, {
      id: "plaintext-0001",
      from: "alice",
      sentAt: 6,
      envelope: JSON.stringify({
        v: 1,
        type: "chat",
        id: "plaintext-0001",
        from: "alice",
        to: "bob",
        sentAt: 6,
        text: "downgrade",
      }),
    });
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => w.cluster.mailboxes.get("bob")?.length === 0, "all acknowledged");
    assertEquals(bob.model.messagesWith("alice").length, 0);
    assertEquals(bob.model.warnings.value.alice?.map((x) => x.id), [
      entry.id,
      claimed.id,
      "plaintext-0001",
    ]);
    assert(/^Message refused/.test(bob.model.warnings.value.alice?.[0]?.text ?? ""));
    assert(/not encrypted/.test(bob.model.warnings.value.alice?.[2]?.text ?? ""));
    assertEquals(bob.model.rejected.count, 3);

    // Live: a relayed envelope signed by someone else is discarded too, and not acknowledged.
    const live = await sealed("mallory", "bob", "forged-live-01", 7, "hello from alice");
    bob.session.injectRelay("alice", liveText({ ...live, from: "alice" }));
    await waitFor(() => bob.model.warnings.value.alice?.length === 4, "live warning");
    assertEquals(bob.model.messagesWith("alice").length, 0);
    assertEquals(w.cluster.relayed.filter((r) => r.from === "bob").length, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("a contact without keys cannot be written to: nothing is stored or sent", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    w.cluster.accounts.set("mallory", "old-secret");
    alice.model.openChat("mallory");
    await waitFor(() => alice.model.trust.value.mallory?.status === "no_keys", "no keys shown");
    await alice.model.send("hello");
    assert(/mallory has no keys/.test(alice.model.error.value ?? ""), alice.model.error.value!);
    assertEquals(alice.model.messagesWith("mallory").length, 0);
    assertEquals(w.cluster.mailSent.length + w.cluster.relayed.length, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("an account without keys cannot log in: it could neither send nor read", async () => {
  const w = world();
  try {
    w.cluster.accounts.set("mallory", "old-secret");
    const m = await client(w, "alice", 30);
    m.model.logout();
    w.cluster.keys.delete("alice");
    assertEquals(await m.model.login("alice", "password-1"), false);
    assert(/has no keys/.test(m.model.error.value ?? ""), m.model.error.value ?? "");
    assertEquals(m.model.me.value, null);
  } finally {
    shutdown(w);
  }
});

Deno.test("a changed contact key blocks sending, also after logging in again, until the safety number is accepted", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    alice.model.openChat("bob");
    await alice.model.send("hello");
    await waitFor(() => bob.model.messagesWith("alice").length === 1, "first message arrives");
    assertEquals(alice.model.keyChanged.value.bob, undefined);
    const pinned = await alice.model.safetyCheck("bob");
    assert(pinned && !pinned.isPending);
    // Both sides compute the same safety number.
    assertEquals((await bob.model.safetyCheck("alice"))?.digits, pinned.digits);
    assert(/^(\d{5} ){5}\d{5}$/.test(pinned.digits), pinned.digits);
    const bobKeys = w.cluster.keys.get("bob")!;
    const eve = w.cluster.keys.get("alice")!;
    // The directory now answers "no keys" for bob, then other keys.
    w.cluster.keys.delete("bob");
    alice.model.openChat("bob");
    await waitFor(() => alice.model.keyChanged.value.bob === true, "change shown");
    assertEquals(alice.model.trust.value.bob?.pin?.pending?.keyId, null);
    w.cluster.keys.set("bob", { ...bobKeys, encryption: eve.encryption, signing: eve.signing });
    alice.model.logout();
    assertEquals(await alice.model.login("alice", "password-1"), true);
    assertEquals(alice.model.keyChanged.value.bob, true, "shown from the kept pin at once");
    alice.model.openChat("bob");
    await waitFor(() => !!alice.model.trust.value.bob?.pin?.pending?.keyId, "new key pending");
    assertEquals(alice.model.keyChanged.value.bob, true, "still blocked after logging in again");
    const sentBefore = w.cluster.mailSent.length + w.cluster.relayed.length;
    await alice.model.send("hello again");
    assert(/changed/.test(alice.model.error.value ?? ""), alice.model.error.value ?? "");
    assertEquals(alice.model.messagesWith("bob").length, 1, "nothing stored");
    assertEquals(w.cluster.mailSent.length + w.cluster.relayed.length, sentBefore, "nor sent");
    assertEquals(
      alice.model.trust.value.bob?.pin?.events.map((e) => e.kind),
      ["missing", "changed"],
      "markers where the key changed",
    );
    // The safety number of the new key differs; accepting it lets messages go again.
    const pending = await alice.model.safetyCheck("bob");
    assert(pending?.isPending);
    assert(pending.digits !== pinned.digits);
    assertEquals(await alice.model.acceptKeys("bob", pending.keyId), true);
    assertEquals(alice.model.keyChanged.value.bob, undefined);
    await alice.model.send("to the accepted key");
    assertEquals(alice.model.messagesWith("bob").length, 2);
    await waitFor(
      () => alice.model.messagesWith("bob").every((m) => m.status !== "sending"),
      "sent",
    );
    w.cluster.keys.set("bob", bobKeys);

    // Alice's wrapped private keys are altered: login fails with a clear error.
    alice.model.logout();
    const wrapped = JSON.parse(eve.wrapped);
    wrapped.signing.iv = wrapped.signing.iv === "AAAAAAAAAAAAAAAA"
      ? "BBBBBBBBBBBBBBBB"
      : "AAAAAAAAAAAAAAAA";
    w.cluster.keys.set("alice", { ...eve, wrapped: JSON.stringify(wrapped) });
    assertEquals(await alice.model.login("alice", "password-1"), false);
    assert(/cannot be unlocked/.test(alice.model.error.value ?? ""), alice.model.error.value ?? "");
    assertEquals(alice.model.me.value, null);
  } finally {
    shutdown(w);
  }
});

/** A second device of `username` (already registered) logging in. */
async function secondDevice(w: World, username: string, options: ChatModelOptions = {}) {
  const session = w.cluster.connect();
  const model = createChatModel({
    session,
    createLink: w.net.factoryFor(username),
    openHistory: (owner) =>
      History.open({ sql, openStore: w.stores2 ??= createMemoryRowStores() }, owner),
  }, { channelWaitMs: 30, pingTimeoutMs: 1000, ...options });
  model.start();
  assertEquals(await model.login(username, "password-1"), true, model.error.value ?? "");
  w.clients.push({ model, session });
  return { model, session };
}

Deno.test("a superseded device hands its whole history to the new one, which imports it once", async () => {
  const w = world();
  w.cluster.handoverMs = 5_000;
  const turn = { urls: ["turn:192.0.2.1:3478"], username: "1:alice", credential: "c2VjcmV0" };
  w.cluster.ice = { iceServers: [turn], expiresAt: Date.now() + 3_600_000 };
  try {
    const alice = await client(w, "alice", 30, { handoverMarginMs: 100 });
    const bob = await client(w, "bob", 30);
    await waitFor(() => alice.model.contacts.value.some((c) => c.online), "bob online");
    alice.model.openChat("bob");
    bob.model.openChat("alice");
    for (let i = 0; i < 3; i++) {
      await alice.model.send(`live ${i}`);
      await bob.model.send(`reply ${i}`);
    }
    await waitFor(() => alice.model.messagesWith("bob").length === 6, "six live messages");
    // One more from bob while alice's new device logs in: it goes to the new session.
    const newAlice = await secondDevice(w, "alice");
    await waitFor(
      () => alice.model.handover.value?.phase === "done",
      `old device done (${JSON.stringify(alice.model.handover.value)})`,
    );
    assertEquals(alice.model.me.value, null);
    assertEquals(alice.session.status, "offline");
    assertEquals(alice.model.signedOutReason.value, "Signed in elsewhere");
    await waitFor(() => newAlice.model.handover.value?.phase === "done", "new device done");
    const texts = newAlice.model.messagesWith("bob").map((m) => m.text);
    assertEquals(texts, ["live 0", "reply 0", "live 1", "reply 1", "live 2", "reply 2"]);
    assertEquals(newAlice.model.handover.value?.done, 6);
    // The old device's links are gone: bob now reaches alice's new device.
    await bob.model.send("after the hand-over");
    await waitFor(() => newAlice.model.messagesWith("bob").length === 7, "new message arrives");
    assertEquals(w.cluster.handovers.size, 0, "the grace ended with the hand-over");
    // Every link, chat and hand-over alike, used the session's ICE servers (two NATed devices
    // need TURN for a hand-over as much as for a chat).
    assert(w.net.iceServersUsed.length >= 3);
    for (const used of w.net.iceServersUsed) assertEquals(used, [turn]);
  } finally {
    shutdown(w);
  }
});

Deno.test("a key change not yet accepted follows the user to the new device with the hand-over", async () => {
  const w = world();
  w.cluster.handoverMs = 5_000;
  try {
    const alice = await client(w, "alice", 30, { handoverMarginMs: 100 });
    await client(w, "bob", 30);
    await client(w, "eve", 30);
    alice.model.openChat("bob");
    await alice.model.send("hello");
    // The directory now gives eve's keys as bob's: the old device blocks sending.
    const eve = w.cluster.keys.get("eve")!;
    w.cluster.keys.set("bob", { ...w.cluster.keys.get("bob")!, ...eve, wrapped: "x" });
    alice.model.openChat("bob");
    await waitFor(() => alice.model.keyChanged.value.bob === true, "change shown");
    await alice.model.block("eve");
    // The new device would pin eve's keys on first use; the old device's pin wins.
    const newAlice = await secondDevice(w, "alice");
    await waitFor(() => newAlice.model.handover.value?.phase === "done", "new device done");
    newAlice.model.openChat("bob");
    await waitFor(() => newAlice.model.keyChanged.value.bob === true, "the change is shown there");
    // The contact book came along too: bob a contact, eve (blocked on the old device) blocked.
    assertEquals(newAlice.model.contacts.value.map((c) => c.username), ["bob"]);
    assertEquals(newAlice.model.blocked.value, ["eve"]);
    assertEquals(newAlice.model.trust.value.bob?.pin?.events.map((e) => e.kind), ["changed"]);
    await newAlice.model.send("blocked");
    assertEquals(newAlice.model.messagesWith("bob").map((m) => m.text), ["hello"]);
  } finally {
    shutdown(w);
  }
});

Deno.test("without an answer from the new device the old one stops at the end of the grace", async () => {
  const w = world();
  w.cluster.handoverMs = 400;
  try {
    const alice = await client(w, "alice", 30, { handoverMarginMs: 100 });
    await client(w, "bob", 30);
    alice.model.openChat("bob");
    await alice.model.send("kept on this device");
    w.net.isBlocked = true; // no direct path between the two devices
    await secondDevice(w, "alice");
    await waitFor(() => alice.model.handover.value?.phase === "failed", "gave up");
    assertEquals(alice.session.status, "offline");
    assert(/not take the whole history in time/.test(alice.model.handover.value?.text ?? ""));
  } finally {
    shutdown(w);
  }
});

Deno.test("typing shows on the other side over the data channel only; read receipts mark own messages read", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    await waitFor(
      () => alice.model.contacts.value.some((c) => c.username === "bob" && c.online),
      "alice sees bob online",
    );
    alice.model.openChat("bob");
    bob.model.openChat("alice");
    await waitFor(() => alice.model.isChannelOpen("bob"), "the data channel opens");
    const relayedBefore = w.cluster.relayed.length;
    alice.model.typingNow();
    await waitFor(() => bob.model.typing.value.alice === true, "bob sees alice typing");
    alice.model.stoppedTyping();
    await waitFor(() => !bob.model.typing.value.alice, "alice stopped typing");
    assertEquals(w.cluster.relayed.length, relayedBefore, "typing never goes through the servers");

    // bob has the chat open (and, here, always visible): alice's message is read at once.
    await alice.model.send("are you there?");
    const sentAt = alice.model.messages.value[0]!.sentAt;
    await waitFor(() => (alice.model.readUpTo.value.bob ?? 0) >= sentAt, "alice sees it read");

    // With read receipts off, bob reads without telling.
    bob.model.setReadReceipts(false);
    await alice.model.send("second one");
    const second = alice.model.messages.value.at(-1)!;
    await waitFor(() => alice.model.messages.value.at(-1)?.status === "delivered", "delivered");
    await waitFor(() => bob.model.messagesWith("alice").length === 2, "bob has it");
    await settled(w);
    assert((alice.model.readUpTo.value.bob ?? 0) < second.sentAt, "not marked read");
    // Turned on again, the receipt for what is shown goes out.
    bob.model.setReadReceipts(true);
    await waitFor(() => (alice.model.readUpTo.value.bob ?? 0) >= second.sentAt, "read now");
  } finally {
    shutdown(w);
  }
});

function memoryTabStorage(): TabStorage {
  const m = new Map<string, string>();
  return {
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

Deno.test("a reload with no server reachable shows contacts and history at once; messages written offline go out once, in order, on resume", async () => {
  const w = world();
  const keyStore = createMemoryKeyStore();
  const device = memoryTabStorage();
  const page = (session: ReturnType<FakeCluster["connect"]>) =>
    createChatModel({
      session,
      createLink: w.net.factoryFor("alice"),
      openHistory: (owner) => History.open({ sql, openStore: w.stores }, owner),
      generateKeys: () => keysOf("alice"),
      keyStore,
      deviceStorage: device,
    }, { channelWaitMs: 30, pingTimeoutMs: 1000 });
  try {
    const first = w.cluster.connect();
    const before = page(first);
    before.start();
    assertEquals(await before.register("alice", "password-1"), true, before.error.value ?? "");
    const bob = await client(w, "bob", 30);
    assertEquals(await before.addContact("bob"), null);
    assertEquals(await bob.model.addContact("alice"), null);
    await waitFor(() => before.contacts.value.some((c) => c.online), "bob online");
    before.openChat("bob");
    await before.send("before the outage");
    await waitFor(() => bob.model.messagesWith("alice").length === 1, "bob has it");

    // The page reloads while no server answers: same tab storage, same device.
    const token = `token-alice-0123456789`;
    first.dropConnection();
    const session = w.cluster.connect();
    session.stored = { username: "alice", token, expiresAt: Date.now() + 60_000, servers: [] };
    session.isUnreachable = true;
    const after = page(session);
    w.clients.push({ model: after, session });
    after.start();
    await waitFor(() => after.me.value === "alice", "the stored session opens offline");
    assertEquals(after.restoring.value, false);
    assertEquals(after.contacts.value, [{ username: "bob", online: false }]);
    after.openChat("bob");
    assertEquals(after.messages.value.map((m) => m.text), ["before the outage"]);
    await waitFor(() => after.offlineNotice.value === OFFLINE_TEXT, "the offline banner");

    await after.send("offline one");
    await after.send("offline two");
    assertEquals(after.messages.value.slice(1).map((m) => m.status), ["sending", "sending"]);
    await settled(w);
    assertEquals(bob.model.messagesWith("alice").length, 1, "nothing went out offline");

    session.restoreConnection();
    await waitFor(() => bob.model.messagesWith("alice").length === 3, "both arrive");
    assertEquals(bob.model.messagesWith("alice").map((m) => m.text), [
      "before the outage",
      "offline one",
      "offline two",
    ]);
    await waitFor(() => after.offlineNotice.value === null, "the banner goes");
    await settled(w);
    assertEquals(bob.model.messagesWith("alice").length, 3, "once each");
  } finally {
    shutdown(w);
  }
});

Deno.test("'unavailable' from the servers is not a refusal: a login retries by itself, a session is kept and says why", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    alice.model.logout();
    w.cluster.loginsUnavailable = 2;
    const shown: Array<string | null> = [];
    alice.model.progress.subscribe((p) => shown.push(p));
    assertEquals(
      await alice.model.login("alice", "password-1"),
      true,
      alice.model.error.value ?? "",
    );
    assertEquals(w.cluster.loginsUnavailable, 0);
    assert(shown.includes(ACCOUNT_UNREACHABLE_TEXT), "said why it waits");
    assertEquals(alice.model.progress.value, null);

    // Resumes answered `unavailable` after a dropped connection: the session stays.
    alice.session.dropConnection();
    alice.session.events.onResumeUnavailable?.("The servers holding this account are unreachable");
    assertEquals(alice.model.offlineNotice.value, ACCOUNT_UNREACHABLE_TEXT);
    assertEquals(alice.model.me.value, "alice");
    alice.session.restoreConnection();
    await waitFor(() => alice.model.offlineNotice.value === null, "recovered by itself");
    assertEquals(alice.model.me.value, "alice");
  } finally {
    shutdown(w);
  }
});

Deno.test("a restore that hangs (no server answers, keys not on this device) never holds a new login up", async () => {
  const w = world();
  try {
    const bob = await client(w, "bob", 30);
    bob.model.logout();
    const session = w.cluster.connect();
    session.stored = {
      username: "bob",
      token: "token-of-another-device-0123",
      expiresAt: Date.now() + 60_000,
      servers: [],
    };
    session.isUnreachable = true;
    const model = createChatModel({
      session,
      createLink: w.net.factoryFor("bob"),
      openHistory: (owner) => History.open({ sql, openStore: w.stores }, owner),
    }, { channelWaitMs: 30 });
    w.clients.push({ model, session });
    model.start();
    await waitFor(() => model.offlineNotice.value === OFFLINE_TEXT, "no server answers");
    assertEquals(model.restoring.value, true, "still restoring: nothing to open offline");
    assertEquals(model.me.value, null);
    assertEquals(await model.login("bob", "password-1"), true, model.error.value ?? "");
    assertEquals(model.restoring.value, false);
    assertEquals(model.me.value, "bob");
  } finally {
    shutdown(w);
  }
});

Deno.test("contacts: added by exact name only; presence only of contacts; no such user is said clearly", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30, {}, false);
    const bob = await client(w, "bob", 30, {}, false);
    await settled(w);
    assertEquals(alice.model.contacts.value, [], "no directory: nobody is listed by itself");
    assertEquals(alice.session.watching.size, 0);
    const missing = await alice.model.addContact("bobby");
    assert(missing?.includes('no user named "bobby"'), String(missing));
    assertEquals(alice.model.contacts.value, []);
    assertEquals(await alice.model.addContact("bob"), null);
    assertEquals(alice.model.contacts.value, [{ username: "bob", online: true }]);
    assertEquals([...alice.session.watching], ["bob"], "the watch list is the contacts");
    assertEquals(alice.model.trust.value.bob?.status, "trusted", "the keys are pinned");
    // bob does not watch alice: he hears nothing of her going offline and online.
    alice.model.logout();
    await settled(w);
    await alice.model.login("alice", "password-1");
    await waitFor(() => alice.model.contacts.value[0]?.online === true, "bob online again");
    bob.model.logout();
    await waitFor(() => alice.model.contacts.value[0]?.online === false, "bob offline");
    await alice.model.removeContact("bob");
    assertEquals(alice.model.contacts.value, []);
    assertEquals(alice.session.watching.size, 0);
  } finally {
    shutdown(w);
  }
});

Deno.test("message requests: a stranger's message waits under requests; accept or block; a blocked sender's messages are acked and dropped", async () => {
  const w = world();
  const notified: Array<{ from: string; text: string | null }> = [];
  try {
    const alice = await client(w, "alice", 30, {
      onNewMessages: (from, _n, latest) => notified.push({ from, text: latest()?.text ?? null }),
    }, false);
    const carol = await client(w, "carol", 30, {}, false);
    const mallory = await client(w, "mallory", 30, {}, false);
    for (const stranger of [carol, mallory]) {
      assertEquals(await stranger.model.addContact("alice"), null);
      stranger.model.openChat("alice");
      await stranger.model.send(`hello from ${stranger.model.me.value}`);
    }
    await waitFor(() => alice.model.requests.value.length === 2, "two requests");
    assertEquals(alice.model.requests.value, ["carol", "mallory"]);
    assertEquals(alice.model.contacts.value, []);
    assertEquals(notified.map((n) => n.text), [null, null], "no text before it is opened");
    assertEquals(alice.model.messagesWith("carol").map((m) => m.text), ["hello from carol"]);

    alice.model.acceptRequest("carol");
    await waitFor(() => alice.model.contacts.value.length === 1, "carol a contact");
    assertEquals(alice.model.contacts.value, [{ username: "carol", online: true }]);
    assertEquals(alice.model.requests.value, ["mallory"]);

    alice.model.block("mallory");
    await waitFor(() => alice.model.blocked.value.length === 1, "mallory blocked");
    assertEquals(alice.model.requests.value, []);
    // mallory's next messages: live (relay) and from the mailbox. Acknowledged, never shown.
    await mallory.model.send("still here");
    await waitFor(
      () => mallory.model.messagesWith("alice").at(-1)?.status === "delivered",
      "mallory's message acknowledged",
    );
    alice.model.logout();
    await settled(w);
    await mallory.model.send("while you were away");
    await waitFor(
      () => w.cluster.mailSent.some((m) => m.from === "mallory"),
      "mallory's message in the mailbox",
    );
    await alice.model.login("alice", "password-1");
    await waitFor(
      () => w.cluster.mailAcked.some((a) => a.messages.some((m) => m.from === "mallory")),
      "mallory's mail acknowledged",
    );
    await settled(w);
    assertEquals(alice.model.messagesWith("mallory").map((m) => m.text), ["hello from mallory"]);
    assertEquals(alice.model.requests.value, []);
    assertEquals(alice.model.blocked.value, ["mallory"], "the block list is kept");
    // Her offers are refused: no data channel opens.
    mallory.model.openChat(null);
    mallory.model.openChat("alice");
    await settled(w);
    assertEquals(alice.model.isChannelOpen("mallory"), false);
    // Unblocked, a new message from her is a request again.
    alice.model.unblock("mallory");
    await waitFor(() => alice.model.blocked.value.length === 0, "unblocked");
    await mallory.model.send("third try");
    await waitFor(() => alice.model.requests.value.includes("mallory"), "a request again");
  } finally {
    shutdown(w);
  }
});

Deno.test("a long conversation shows a window of it: pages older and newer by keyset, the other end dropped; a reader scrolled up is not moved by new messages", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice");
    const bob = await client(w, "bob");
    const seeded = Array.from({ length: 400 }, (_, i) => ({
      id: `seed-${String(i).padStart(4, "0")}`,
      peer: "bob",
      sender: i % 2 ? "alice" : "bob",
      recipient: i % 2 ? "bob" : "alice",
      sentAt: 1_000 + i,
      receivedAt: i % 2 ? null : 1_000 + i,
      text: `seed ${i}`,
      via: "p2p" as const,
      status: "delivered" as const,
    }));
    assertEquals(await alice.model.importHistory(seeded), 400);
    const m = alice.model;
    const ids = () => m.messages.value.map((r) => r.id);
    const idsOf = (from: number, to: number) => seeded.slice(from, to).map((r) => r.id);
    m.openChat("bob");
    assertEquals(ids(), idsOf(350, 400), "the newest page first");
    assert(m.hasOlder.value && !m.hasNewer.value);

    // Up to the first message: never more than the window, the newest rows dropped on the way.
    m.follow(false);
    let pages = 0;
    while (m.showOlder()) {
      pages++;
      assert(m.messages.value.length <= 150, `${m.messages.value.length} shown`);
    }
    assertEquals(pages, 7);
    assertEquals(ids(), idsOf(0, 150));
    assert(!m.hasOlder.value && m.hasNewer.value);

    // A message from bob while alice reads old ones: her window stays, she is told of it.
    bob.model.openChat("alice");
    await bob.model.send("new one");
    await waitFor(() => m.unseen.value === 1, "alice told of the new message");
    assertEquals(ids(), idsOf(0, 150), "the window stays on what alice reads");

    // Down again to the newest, which now includes bob's message.
    while (m.showNewer()) assert(m.messages.value.length <= 150);
    assertEquals(m.messages.value.at(-1)?.text, "new one");
    assertEquals(m.messages.value.length, 150);
    assert(m.hasOlder.value && !m.hasNewer.value);
    m.follow(true);
    assertEquals(m.unseen.value, 0);

    // Following the newest: new messages join the window and it stays bounded.
    for (let i = 0; i < 3; i++) await bob.model.send(`more ${i}`);
    await waitFor(() => m.messages.value.at(-1)?.text === "more 2", "followed");
    assert(m.messages.value.length <= 150);
    assertEquals(m.unseen.value, 0);

    // A search result far back: the window around it, marked.
    assertEquals(m.showMessage("bob", seeded[200]!.id), true);
    assertEquals(ids(), idsOf(175, 225));
    assertEquals(m.focused.value, seeded[200]!.id);
    assert(m.hasOlder.value && m.hasNewer.value);
    assertEquals(m.showMessage("bob", "no-such-id"), false);

    // Back to the newest.
    m.showNewest();
    assertEquals(m.messages.value.at(-1)?.text, "more 2");
    assertEquals(m.messages.value.length, 50);
    assert(!m.hasNewer.value);
  } finally {
    shutdown(w);
  }
});
