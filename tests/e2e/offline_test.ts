/**
 * The offline path in real browsers: bob is offline; alice (on server 1) sends 3 messages, which
 * her page shows as pending (stored on the servers); bob opens the app on another server (3),
 * logs in and sees all 3 once each, in order (from the mailbox, or over the data channel alice's
 * page offers them on as soon as it opens); alice's page then shows them delivered.
 */
import assert from "node:assert/strict";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { startCluster } from "../support/server_process.ts";
import {
  openApp,
  openChat,
  sendMessage,
  shownMessages,
  shownStatusTexts,
  signIn,
  waitForContact,
  waitForMessages,
  waitForStatuses,
} from "../support/chat_page.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const TEXTS = ["first while you were away", "second one", "third and last"];

async function mailFrames(url: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const text = await (await fetch(`${url}/metrics`)).text();
  for (const line of text.split("\n")) {
    const m = line.match(/^p2pchat_mail_frames_total\{kind="(\w+)",result="(\w+)"\} (\d+)/);
    if (m) counts[`${m[1]}:${m[2]}`] = (counts[`${m[1]}:${m[2]}`] ?? 0) + Number(m[3]);
  }
  return counts;
}

Deno.test("bob offline: alice's 3 messages wait on the servers and reach him on another server, in order", async () => {
  await Deno.stat(`${ROOT}dist/index.html`).catch(() => {
    throw new Error("The client is not built: run `deno task build` first");
  });
  const servers = await startCluster(3);
  const browsers: TestBrowser[] = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [a, b] = browsers as [TestBrowser, TestBrowser];
    const alice = await openApp(a.browser, servers[0]!.url);
    const oldBob = await openApp(b.browser, servers[1]!.url);
    await signIn(alice, "alice", "alice-password", true);
    await signIn(oldBob, "bob", "bob-password-1", true);
    await waitForContact(alice, "bob", true);

    // Bob closes his page: he is offline.
    await oldBob.close();
    await waitForContact(alice, "bob", false);

    await openChat(alice, "bob");
    for (const text of TEXTS) await sendMessage(alice, text);
    await waitForMessages(alice, TEXTS);
    // Stored on the servers, not yet delivered: pending.
    await waitForStatuses(alice, "alice", "sent", 3);
    assert.deepEqual((await shownMessages(alice)).map((m) => m.via), [
      "mailbox",
      "mailbox",
      "mailbox",
    ]);
    for (const line of await shownStatusTexts(alice)) assert.match(line, /pending/);

    // Bob comes back through another server, in a fresh page (no local history there).
    const bob = await openApp(b.browser, servers[2]!.url);
    try {
      await signIn(bob, "bob", "bob-password-1", false);
      await openChat(bob, "alice");
      // Each message once, in send order (waitForMessages compares the whole list), from alice.
      // Which path brought each one first is not fixed: bob's client fetches his mailbox while it
      // opens a data channel to alice, and alice's client offers her undelivered mailbox
      // messages over that channel as soon as it opens (so that bob's ack marks them delivered
      // even if the servers' notice is lost); bob keeps whichever copy of an id comes first.
      await waitForMessages(bob, TEXTS);
      const shown = await shownMessages(bob);
      assert.deepEqual(shown.map((m) => m.from), TEXTS.map(() => "alice"));
      for (const m of shown) assert.ok(m.via === "mailbox" || m.via === "p2p", `via ${m.via}`);

      // Alice's page learns they were delivered (and, since bob has the chat open in view, may
      // already show them read: read implies delivered).
      await waitForStatuses(alice, "alice", "delivered", 3);
      for (const line of await shownStatusTexts(alice)) assert.match(line, /delivered|read/);

      // Once: a reload of bob's page shows the same 3, no duplicates.
      await bob.reload();
      await bob.waitForFunction(
        () => document.querySelector('[data-testid="me"]')?.textContent === "bob",
        { timeout: 40_000 },
      );
      await openChat(bob, "alice");
      await waitForMessages(bob, TEXTS);

      const frames = await Promise.all(servers.map((s) => mailFrames(s.url)));
      const total = (key: string) => frames.reduce((n, f) => n + (f[key] ?? 0), 0);
      // Alice's messages went into the mailbox (batched when they queue up), all accepted.
      assert.ok(total("mail_send:ok") >= 1 && total("mail_send:ok") <= 3, "mail_send accepted");
      assert.equal(
        Object.keys(frames.reduce((a, f) => ({ ...a, ...f }), {})).filter((k) => !k.endsWith(":ok"))
          .length,
        0,
        "no mailbox request failed",
      );
      assert.ok(total("mail_ack:ok") >= 1, "bob acknowledged");
      for (const page of [alice, bob]) {
        assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), []);
      }
    } catch (err) {
      console.error("alice console:", alice.errors, "\nbob console:", bob.errors);
      for (const s of servers) {
        console.error(s.url, await mailFrames(s.url).catch(() => ({})));
        console.error(s.logs().split("\n").filter((l) => /mail|deliver|error/i.test(l)).join("\n"));
      }
      throw err;
    }
  } finally {
    await Promise.all(browsers.map((br) => br.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
