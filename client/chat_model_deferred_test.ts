/**
 * The chat model's side of a deferred hand-over and of the read-only copy setting: a login told
 * that the old device is offline says where the history is, keeps saying it on this device
 * (a reload) until the history arrives; the setting lasts on the device.
 */
import { assert, assertEquals, waitFor } from "./testing/assert.ts";
import { FakeCluster, FakeDirectNetwork } from "./testing/fakes.ts";
import { memoryHistory } from "./testing/parts.ts";
import { testKeys } from "../shared/crypto/test_keys.ts";
import { createChatModel, DEFERRED_TEXT, SIGNED_OUT_TEXT } from "./chat_model.ts";
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
