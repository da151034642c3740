/**
 * Two users in two separate Chromium processes, each connected to a different server of a
 * three-server cluster, chat over a WebRTC data channel; their history survives a reload.
 */
import assert from "node:assert/strict";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import {
  isChannelOpen,
  openApp,
  openChat,
  sendMessage,
  shownMessages,
  signIn,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function relayedThroughServers(servers: ServerProcess[]): Promise<number> {
  let total = 0;
  for (const s of servers) {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    for (const line of text.split("\n")) {
      if (line.startsWith('p2pchat_relayed_total{kind="relay"')) {
        total += Number(line.split(" ")[1]);
      }
    }
  }
  return total;
}

Deno.test("alice and bob on different servers chat over a data channel and keep history across reloads", async () => {
  await Deno.stat(`${ROOT}dist/index.html`).catch(() => {
    throw new Error("The client is not built: run `deno task build` first");
  });
  const servers = await startCluster(3);
  const browsers: TestBrowser[] = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [a, b] = browsers as [TestBrowser, TestBrowser];
    const alice = await openApp(a.browser, servers[0]!.url);
    const bob = await openApp(b.browser, servers[1]!.url);
    try {
      await signIn(alice, "alice", "alice-password", true);
      await signIn(bob, "bob", "bob-password-1", true);
      await waitForContact(alice, "bob", true);
      await waitForContact(bob, "alice", true);

      await openChat(alice, "bob");
      await openChat(bob, "alice");
      await sendMessage(alice, "hello bob");
      await waitForMessages(bob, ["hello bob"]);
      await sendMessage(bob, "hi alice, direct!");
      await waitForMessages(alice, ["hello bob", "hi alice, direct!"]);
      await waitForMessages(bob, ["hello bob", "hi alice, direct!"]);

      // The path was the data channel: both pages say so, the channel is open, and no server
      // relayed a single chat frame.
      for (const page of [alice, bob]) {
        const shown = await shownMessages(page);
        assert.deepEqual(shown.map((m) => m.via), ["p2p", "p2p"]);
      }
      assert.equal(await isChannelOpen(bob, "alice"), true);
      assert.equal(await relayedThroughServers(servers), 0);
      // The sender sees the acknowledgement.
      await alice.waitForFunction(() =>
        [...document.querySelectorAll('[data-testid="message"][data-from="alice"]')]
          .every((el) => el.getAttribute("data-status") === "delivered")
      );

      // Both reload: the session resumes and the whole conversation is still there.
      await Promise.all([alice.reload(), bob.reload()]);
      for (const [page, me, peer] of [[alice, "alice", "bob"], [bob, "bob", "alice"]] as const) {
        await page.waitForFunction(
          (name) => document.querySelector('[data-testid="me"]')?.textContent === name,
          { timeout: 20_000 },
          me,
        );
        await openChat(page, peer);
        await waitForMessages(page, ["hello bob", "hi alice, direct!"]);
      }
      assert.deepEqual(alice.errors.filter((e) => !/favicon/.test(e)), []);
      assert.deepEqual(bob.errors.filter((e) => !/favicon/.test(e)), []);
    } catch (err) {
      console.error("alice console:", alice.errors, "\nbob console:", bob.errors);
      throw err;
    }
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
