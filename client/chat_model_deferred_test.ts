/**
 * The chat model's side of a deferred hand-over and of the read-only copy setting: a login told
 * that the old device is offline says where the history is, keeps saying it on this device
 * (a reload) until the history arrives; the setting lasts on the device; the copy kept shows a
 * bounded window of a conversation, paged like the chat, with operations applied as there.
 */
import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { FakeCluster, FakeDirectNetwork } from "./testing/fakes.ts";
import { memoryHistory } from "./testing/parts.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import { createChatModel, DEFERRED_TEXT, SIGNED_OUT_TEXT } from "./chat_model.ts";
import type { MessageRow } from "./history.ts";
import { encodeBody, HIDDEN_TEXT } from "./message_ops.ts";
import { MESSAGE_PAGE, MESSAGE_WINDOW } from "./message_window.ts";
import type { TabStorage } from "./session.ts";

function deviceStorage(): TabStorage & { map: Map<string, string> } {
  const map = new Map<string, string>();
  return {
    map,
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => void map.set(k, v),
    removeItem: (k) => void map.delete(k),
  };
}

function modelOn(cluster: FakeCluster, net: FakeDirectNetwork, device: TabStorage) {
  const model = createChatModel({
    session: cluster.connect(),
    createLink: net.factoryFor("alice"),
    openHistory: memoryHistory,
    generateKeys: async () => (await testKeys()).alice,
    deviceStorage: device,
  });
  model.start();
  return model;
}

Deno.test("chat model: a deferred hand-over is said on the new device, after a reload too, until the history arrives", async () => {
  const cluster = new FakeCluster();
  const net = new FakeDirectNetwork();
  // alice's first device registers and goes away.
  const first = modelOn(cluster, net, deviceStorage());
  assertEquals(await first.register("alice", "password-1"), true, first.error.value ?? "");
  first.logout();

  cluster.deferred.add("alice");
  const device = deviceStorage();
  const fresh = modelOn(cluster, net, device);
  assertEquals(await fresh.login("alice", "password-1"), true, fresh.error.value ?? "");
  await waitFor(() => fresh.handover.value?.phase === "deferred", "the notice shows");
  assertEquals(fresh.handover.value?.role, "receiving");
  assertEquals(fresh.handover.value?.text, DEFERRED_TEXT);
  fresh.logout();

  // The page again on the same device: the notice is still there, though the servers do not
  // say it again.
  cluster.deferred.delete("alice");
  const again = modelOn(cluster, net, device);
  assertEquals(await again.login("alice", "password-1"), true, again.error.value ?? "");
  await waitFor(() => again.handover.value?.phase === "deferred", "the notice shows again");

  // The history arrives: the notice is gone for good.
  again.handover.value = { role: "receiving", phase: "done", done: 3, total: 3, text: "done" };
  assert(![...device.map.keys()].some((k) => k.includes("Deferred")), "nothing kept");
  again.logout();
  const third = modelOn(cluster, net, device);
  assertEquals(await third.login("alice", "password-1"), true);
  assertEquals(third.handover.value, null);
  third.logout();
});

Deno.test("chat model: after the old device signed out, the new one says no history will come, and forgets a wait", async () => {
  const cluster = new FakeCluster();
  const net = new FakeDirectNetwork();
  const first = modelOn(cluster, net, deviceStorage());
  assertEquals(await first.register("alice", "password-1"), true, first.error.value ?? "");
  first.logout();
  // This device was waiting for a deferred hand-over ...
  cluster.deferred.add("alice");
  const device = deviceStorage();
  const waiting = modelOn(cluster, net, device);
  assertEquals(await waiting.login("alice", "password-1"), true);
  await waitFor(() => waiting.handover.value?.text === DEFERRED_TEXT, "the deferred notice");
  waiting.logout();
  // ... when the servers say the old device signed out: nothing will arrive, and it says so.
  cluster.deferred.delete("alice");
  cluster.signedOut.add("alice");
  const told = modelOn(cluster, net, device);
  assertEquals(await told.login("alice", "password-1"), true);
  await waitFor(() => told.handover.value?.text === SIGNED_OUT_TEXT, "the signed-out notice");
  assertEquals(told.handover.value?.phase, "deferred");
  assert(![...device.map.keys()].some((k) => k.includes("Deferred")), "no wait is kept");
  told.logout();
});

Deno.test("chat model: the keep-a-copy setting lasts on the device and is off by default", () => {
  const cluster = new FakeCluster();
  const net = new FakeDirectNetwork();
  const device = deviceStorage();
  const model = modelOn(cluster, net, device);
  assertEquals(model.keepCopy.value, false, "delete by default");
  model.setKeepCopy(true);
  assertEquals(modelOn(cluster, net, device).keepCopy.value, true);
  model.setKeepCopy(false);
  assertEquals(modelOn(cluster, net, device).keepCopy.value, false);
});

Deno.test("chat model: a read-only copy shows a window of a long conversation, paged like the chat, edits applied and forged ones not", async () => {
  const cluster = new FakeCluster();
  const net = new FakeDirectNetwork();
  const device = deviceStorage();
  const msg = (i: number, over: Partial<MessageRow> = {}): MessageRow => ({
    id: `copy-${String(i).padStart(5, "0")}`,
    peer: "bob",
    sender: i % 2 ? "alice" : "bob",
    recipient: i % 2 ? "bob" : "alice",
    sentAt: 1_000 + i,
    receivedAt: 1_000 + i,
    text: `copy ${i}`,
    via: "p2p",
    status: "delivered",
    ...over,
  });
  const n = 1_000;
  const rows = Array.from({ length: n }, (_, i) => msg(i));
  const last = rows[n - 1]!; // alice's (odd: alice wrote it)
  // Rows of the other device as it kept them: an edit by alice, a forged one by bob, a message
  // deleted there only, another conversation.
  rows.push(
    msg(n + 1, { text: encodeBody({ kind: "edit", target: last.id, text: "corrected" }) }),
    msg(n + 2, { text: encodeBody({ kind: "edit", target: last.id, text: "forged" }) }),
    msg(n + 3, { text: HIDDEN_TEXT }),
    msg(n + 6, { peer: "carol", recipient: "carol", sender: "alice" }),
  );
  const history = await memoryHistory("alice");
  assertEquals(await history.importRows(rows), n + 4);
  device.setItem("p2pchat.readOnlyCopy", "alice");
  const model = createChatModel({
    session: cluster.connect(),
    createLink: net.factoryFor("alice"),
    openHistory: (owner) => owner === "alice" ? Promise.resolve(history) : memoryHistory(owner),
    generateKeys: async () => (await testKeys()).alice,
    deviceStorage: device,
  });
  model.start();
  await waitFor(() => model.readOnly.value !== null, "the copy opened");
  assertEquals(model.readOnly.value, { user: "alice", peers: ["bob", "carol"], peer: null });
  const chat = model.readOnlyChat;
  assertEquals(chat.messages.value, []);

  model.openReadOnlyChat("bob");
  const ids = () => chat.messages.value.map((r) => r.id);
  const idsOf = (from: number, to: number) => rows.slice(from, to).map((r) => r.id);
  assertEquals(ids(), idsOf(n - MESSAGE_PAGE, n), "the newest page, without operations");
  assert(chat.hasOlder.value && !chat.hasNewer.value);
  assertEquals(chat.views.value.get(last.id)?.text, "corrected", "alice's edit applies");
  assert(chat.views.value.get(last.id)?.editedAt !== null);

  chat.follow(false);
  let pages = 0;
  while (chat.showOlder()) {
    pages++;
    assert(chat.messages.value.length <= MESSAGE_WINDOW, `${chat.messages.value.length} shown`);
  }
  assertEquals(pages, n / MESSAGE_PAGE - 1);
  assertEquals(ids(), idsOf(0, MESSAGE_WINDOW), "up to the first message");
  assert(!chat.hasOlder.value && chat.hasNewer.value);
  assert(chat.showNewer());
  assertEquals(ids(), idsOf(MESSAGE_PAGE, MESSAGE_PAGE + MESSAGE_WINDOW));
  chat.showNewest();
  assertEquals(ids(), idsOf(n - MESSAGE_PAGE, n));
  assert(!chat.hasNewer.value);

  // Another conversation, then one the copy does not hold (nothing changes).
  model.openReadOnlyChat("carol");
  assertEquals(chat.messages.value.map((r) => r.text), [`copy ${n + 6}`]);
  assert(!chat.hasOlder.value);
  model.openReadOnlyChat("nobody");
  assertEquals(model.readOnly.value?.peer, "carol");

  // Nothing here writes to the copy: sending without a session stores nothing.
  await model.send("from the copy");
  assertEquals(history.count(), n + 4);
});
