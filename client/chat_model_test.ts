import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { type ChatModel, createChatModel } from "./chat_model.ts";
import { createMemoryRowStores, History } from "./history.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { FakeCluster, FakeDirectNetwork, type FakeSession } from "./testing/fakes.ts";

const sql = await loadSqlJs(
  decodeURIComponent(
    new URL("../node_modules/sql.js/dist/sql-wasm.wasm", import.meta.url).pathname,
  ),
);

interface World {
  cluster: FakeCluster;
  net: FakeDirectNetwork;
  stores: ReturnType<typeof createMemoryRowStores>;
  clients: Array<{ model: ChatModel; session: FakeSession }>;
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
async function client(w: World, username: string, channelWaitMs = 1000) {
  const session = w.cluster.connect();
  const model = createChatModel({
    session,
    createLink: w.net.factoryFor(username),
    openHistory: (owner) => History.open({ sql, openStore: w.stores }, owner),
  }, { channelWaitMs, pingTimeoutMs: 1000 });
  model.start();
  assertEquals(await model.register(username, "password-1"), true, model.error.value ?? "");
  w.clients.push({ model, session });
  return { model, session };
}

function shutdown(w: World): void {
  for (const c of w.clients) c.model.logout();
}

async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 20));
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

Deno.test("a message whose sender field is forged is rejected", async () => {
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
    await settle();
    assertEquals(bob.model.messagesWith("alice").length, 0);
    assertEquals(bob.model.messagesWith("mallory").length, 0);
    assertEquals(bob.model.rejected.count, 2);
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
    const chat = JSON.stringify({
      v: 1,
      type: "chat",
      id: "dup-message-1",
      from: "alice",
      to: "bob",
      sentAt: 1,
      text: "twice",
    });
    bob.session.injectRelay("alice", chat);
    bob.session.injectRelay("alice", chat);
    await settle();
    assertEquals(bob.model.messagesWith("alice").length, 1);
    const acks = w.cluster.relayed.filter((r) => r.from === "bob" && r.payload.includes("ack"));
    assertEquals(acks.length, 2, "a duplicate is acknowledged again");
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

Deno.test("a message to an offline contact fails and is resent when they come online", async () => {
  const w = world();
  try {
    const alice = await client(w, "alice", 30);
    const bob = await client(w, "bob", 30);
    bob.model.logout();
    await waitFor(() => alice.model.contacts.value.every((c) => !c.online), "bob offline");
    alice.model.openChat("bob");
    await alice.model.send("are you there?");
    assertEquals(alice.model.messages.value[0]?.status, "failed");
    assertEquals(await bob.model.login("bob", "password-1"), true);
    await waitFor(() => alice.model.messages.value[0]?.status === "delivered", "resent");
    assertEquals(bob.model.messagesWith("alice").map((m) => m.text), ["are you there?"]);
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
