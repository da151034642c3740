/**
 * Two users in two separate Chromium processes, each connected to a different server of a
 * three-server cluster, chat over a WebRTC data channel; their history survives a reload.
 */
import assert from "node:assert/strict";
import type { ServerProcess } from "../support/server_process.ts";
import {
  isChannelOpen,
  openChat,
  sendMessage,
  shownMessages,
  waitForMessages,
} from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";

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

Deno.test("alice and bob on different servers chat over a data channel and keep history across reloads", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
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
        { timeout: 40_000 },
        me,
      );
      await openChat(page, peer);
      await waitForMessages(page, ["hello bob", "hi alice, direct!"]);
    }
    assert.deepEqual(alice.errors.filter((e) => !/favicon/.test(e)), []);
    assert.deepEqual(bob.errors.filter((e) => !/favicon/.test(e)), []);
  }));
