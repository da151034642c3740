/**
 * History hand-over in real browsers (DESIGN §4): alice and bob chat live and through the
 * mailbox; then alice logs in on a second Chromium, through another server, while the first one
 * is open. The first shows "Signed in elsewhere", hands its whole history over an encrypted data
 * channel to the second, and stops; the second has every message — live ones that were never in
 * any mailbox included — in order, once each, and its pending messages complete, and the file
 * bob had sent to the first browser (byte-identical); a reload keeps them all.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { startCluster } from "../support/server_process.ts";
import {
  logOut,
  openApp,
  openChat,
  sendMessage,
  signIn,
  storedMessages,
  waitForChannel,
  waitForContact,
  waitForHandover,
  waitForMessages,
  waitForStatuses,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";
import {
  attachFile,
  randomBytes,
  sha256,
  storedDigest,
  waitForTransfer,
} from "../support/files_page.ts";
import {
  historyDatabases,
  historyDigest,
  loginNewAlice,
  seedAliceHistory,
  startHandoverWorld,
} from "../support/handover_world.ts";

/** Waits until `n` of `from`'s messages in the open conversation went to the mailbox. */
async function waitForMailboxCount(page: Page, from: string, n: number) {
  await page.waitForFunction(
    (sender, count) =>
      [...document.querySelectorAll(`[data-testid="message"][data-from="${sender}"]`)]
        .filter((el) => el.getAttribute("data-via") === "mailbox").length === count,
    { timeout: 40_000 },
    from,
    n,
  );
}

Deno.test("a superseded browser hands its whole history to alice's new browser", async () => {
  await assertClientBuilt();
  const servers = await startCluster(3);
  const browsers: TestBrowser[] = [];
  const pages: Array<{ name: string; errors: string[] }> = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser(), await launchBrowser());
    const [a, b, c] = browsers as [TestBrowser, TestBrowser, TestBrowser];
    const oldAlice = await openApp(a.browser, servers[0]!.url);
    const bob = await openApp(c.browser, servers[1]!.url);
    pages.push({ name: "old alice", errors: oldAlice.errors }, { name: "bob", errors: bob.errors });

    await signIn(oldAlice, "alice", "alice-password", true);
    await signIn(bob, "bob", "bob-password-1", true);
    await waitForContact(oldAlice, "bob", true);
    await waitForContact(bob, "alice", true);
    await openChat(oldAlice, "bob");
    await openChat(bob, "alice");
    await waitForChannel(oldAlice, "bob");

    // Live messages over the data channel: they are never in any mailbox.
    await sendMessage(oldAlice, "live 1 from alice");
    await waitForMessages(bob, ["live 1 from alice"]);
    await sendMessage(bob, "live 2 from bob");
    await waitForMessages(oldAlice, ["live 1 from alice", "live 2 from bob"]);
    await sendMessage(oldAlice, "live 3 from alice");
    const live: string[] = ["live 1 from alice", "live 2 from bob", "live 3 from alice"];
    await waitForMessages(bob, live);
    await waitForStatuses(oldAlice, "alice", "delivered", 2);
    const rows = await storedMessages(oldAlice, "bob");
    assert.deepEqual(rows.map((r) => r.via), ["p2p", "p2p", "p2p"]);
    // And a file from bob, complete on the first browser only (a file message shows no text).
    const notes = randomBytes(200_000);
    const dir = await Deno.makeTempDir({ prefix: "p2pchat-handover-" });
    await Deno.writeFile(`${dir}/notes.bin`, notes);
    await attachFile(bob, `${dir}/notes.bin`);
    const file = await waitForTransfer(
      oldAlice,
      "bob's file complete on the first browser",
      (t) => !t.outgoing && t.status === "complete",
    );
    await Deno.remove(dir, { recursive: true });
    live.push("");

    // Alice away: bob's messages wait in her mailbox; back on the first browser, she fetches
    // (and acknowledges) them, so afterwards they exist only on that browser.
    await logOut(oldAlice);
    await waitForContact(bob, "alice", false);
    await sendMessage(bob, "while you were away 1");
    await sendMessage(bob, "while you were away 2");
    await waitForMailboxCount(bob, "bob", 2);
    await signIn(oldAlice, "alice", "alice-password", false);
    await openChat(oldAlice, "bob");
    const fetched = [...live, "while you were away 1", "while you were away 2"];
    await waitForMessages(oldAlice, fetched);

    // Bob away: alice's next messages wait in his mailbox (pending on her side).
    await logOut(bob);
    await waitForContact(oldAlice, "bob", false);
    await sendMessage(oldAlice, "pending 1 for bob");
    await sendMessage(oldAlice, "pending 2 for bob");
    const all = [...fetched, "pending 1 for bob", "pending 2 for bob"];
    await waitForMessages(oldAlice, all);
    await waitForMailboxCount(oldAlice, "alice", 2);

    // Alice logs in on a second browser, through a third server, while the first is open.
    const newAlice = await openApp(b.browser, servers[2]!.url);
    pages.push({ name: "new alice", errors: newAlice.errors });
    await signIn(newAlice, "alice", "alice-password", false);

    // The first browser is told, hands its history over, and stops.
    await oldAlice.waitForSelector('[data-testid="signed-out-reason"]', { timeout: 40_000 });
    const reason = await oldAlice.$eval(
      '[data-testid="signed-out-reason"]',
      (el) => el.textContent ?? "",
    );
    assert.match(reason, /Signed in elsewhere/);
    const sent = await waitForHandover(oldAlice, "sending", "done");
    assert.match(sent, new RegExp(`${all.length} messages`));
    assert.equal(await oldAlice.$('[data-testid="me"]'), null);
    const status = await oldAlice.$eval(
      '[data-testid="conn-status"]',
      (el) => el.getAttribute("data-status"),
    );
    assert.equal(status, "offline", "the first browser stopped");
    const health = await (await fetch(`${servers[0]!.url}/healthz`)).json();
    assert.equal(health.sessions, 0, "the first server holds no session of alice");

    // The second browser has the whole history, in order, once each.
    const received = await waitForHandover(newAlice, "receiving", "done");
    assert.match(received, new RegExp(`${all.length} messages`));
    await openChat(newAlice, "bob");
    await waitForMessages(newAlice, all);
    const imported = await storedMessages(newAlice, "bob");
    assert.deepEqual(
      imported.map((r) => r.text),
      all.map((t) => t || "notes.bin"),
      "every message once, in order",
    );
    // Bob's file came with its message: complete, the same bytes.
    await waitForTransfer(
      newAlice,
      "the file on the new browser",
      (t) => t.id === file.id && t.status === "complete",
    );
    assert.equal(await storedDigest(newAlice, file.id), await sha256(notes));
    assert.equal(new Set(imported.map((r) => r.id)).size, all.length, "no duplicate ids");
    assert.deepEqual(
      imported.filter((r) => r.sender === "alice").map((r) => [r.text, r.status, r.via]),
      [
        ["live 1 from alice", "delivered", "p2p"],
        ["live 3 from alice", "delivered", "p2p"],
        ["pending 1 for bob", "sent", "mailbox"],
        ["pending 2 for bob", "sent", "mailbox"],
      ],
    );

    // Bob comes back: the pending messages reach him, and the new browser sees them delivered.
    await signIn(bob, "bob", "bob-password-1", false);
    await openChat(bob, "alice");
    await waitForMessages(bob, all);
    await waitForStatuses(newAlice, "alice", "delivered", 4);
    await sendMessage(bob, "welcome on your new device");
    await waitForMessages(newAlice, [...all, "welcome on your new device"]);

    // A reload of the second browser keeps everything.
    await newAlice.reload({ waitUntil: "load" });
    await newAlice.waitForFunction(
      () => document.querySelector('[data-testid="me"]')?.textContent === "alice",
      { timeout: 40_000 },
    );
    await openChat(newAlice, "bob");
    await waitForMessages(newAlice, [...all, "welcome on your new device"]);

    for (const page of pages) {
      assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), [], `${page.name} errors`);
    }
  } catch (err) {
    for (const page of pages) console.error(`${page.name} console:`, page.errors);
    // The servers' view of routing and sessions, to tell a lost notice from a client fault.
    const relevant = /deliver|presence|receipt|session|handover|peer_/;
    for (const sv of servers) {
      const lines = sv.logs().split("\n").filter((l) => relevant.test(l)).slice(-40);
      console.error(`server ${sv.url}:\n${lines.join("\n")}`);
    }
    throw err;
  } finally {
    await Promise.all(browsers.map((br) => br.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});

Deno.test("100,000 messages move from Chromium to alice's new Firefox newest first and leave the old one", async () => {
  await assertClientBuilt();
  // A 4 s grace: the transfer takes longer here, so it only completes because the servers extend
  // the grace while the old device reports progress. The new device is Firefox ESR.
  const world = await startHandoverWorld({
    env: { P2P_HANDOVER_GRACE_SECONDS: "4" },
    newDevice: "firefox",
  });
  const pages: Array<{ name: string; errors: string[] }> = [
    { name: "old alice", errors: world.oldAlice.errors },
    { name: "bob", errors: world.bob.errors },
  ];
  try {
    const n = 100_000;
    const newest = "the newest message, from alice";
    await seedAliceHistory(world, n, "old", newest);
    const before = await historyDigest(world.oldAlice);
    assert.equal(before.count, n + 1);

    const { page: newAlice, firstVisibleMs, startedAt: loginStartedAt } = await loginNewAlice(
      world,
      newest,
    );
    pages.push({ name: "new alice", errors: newAlice.errors });
    const shownAt = await newAlice.$eval(
      '[data-testid="handover-status"]',
      (el) => `${el.getAttribute("data-done")}/${el.getAttribute("data-total")}`,
    ).catch(() => "no status");
    console.log(`newest message shown ${Math.round(firstVisibleMs)} ms after login (${shownAt})`);

    // Progress is shown on both devices, then the ending with the count.
    const sent = await waitForHandover(world.oldAlice, "sending", "done", 180_000);
    console.log(`handed over ${Math.round(performance.now() - loginStartedAt)} ms after login`);
    assert.match(world.servers[0]!.logs(), /handover_extended/, "progress extended the grace");
    assert.match(sent, new RegExp(`${n + 1} messages`));
    assert.match(sent, /deleted from this one/);
    const received = await waitForHandover(newAlice, "receiving", "done", 60_000);
    assert.match(received, new RegExp(`${n + 1} messages`));

    // The same history on the new device, every row, field by field.
    assert.deepEqual(await historyDigest(newAlice), before);
    // Moved, not copied: the old browser keeps no history database.
    await world.oldAlice.waitForFunction(
      async () => !(await indexedDB.databases()).some((d) => d.name === "p2pchat-history-alice"),
      { timeout: 40_000 },
    );
    assert.deepEqual(
      (await historyDatabases(world.oldAlice)).filter((name) => name.startsWith("p2pchat-hist")),
      [],
    );
    // Reloaded, the old browser still says why it is signed out and where the history went.
    await world.oldAlice.reload({ waitUntil: "load" });
    await world.oldAlice.waitForSelector('[data-testid="signed-out-reason"]', { timeout: 40_000 });
    const why = await world.oldAlice.$eval(
      '[data-testid="signed-out-reason"]',
      (el) => el.textContent ?? "",
    );
    assert.match(why, /Signed in elsewhere/);
    assert.match(why, new RegExp(`${n + 1} messages\\) is now on your new device`));
    for (const page of pages) {
      assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), [], `${page.name} errors`);
    }
  } catch (err) {
    for (const page of pages) console.error(`${page.name} console:`, page.errors);
    throw err;
  } finally {
    await world.close();
  }
});

Deno.test("the old browser closed halfway: the new one keeps the newest part and says where the rest is", async () => {
  await assertClientBuilt();
  const world = await startHandoverWorld();
  try {
    const n = 100_000;
    const newest = "the newest message, from alice";
    await seedAliceHistory(world, n, "old", newest);
    const { page: newAlice } = await loginNewAlice(world, newest);

    // Halfway through (as the old device sees it), its browser tab closes.
    await world.oldAlice.waitForFunction(
      () => {
        const el = document.querySelector('[data-testid="handover-status"]');
        return Number(el?.getAttribute("data-done") ?? 0) > 0;
      },
      { timeout: 60_000, polling: 10 },
    );
    await world.oldAlice.close();

    // The new device says how much arrived and where the rest is, and keeps what arrived.
    const text = await waitForHandover(newAlice, "receiving", "failed", 90_000);
    const m = text.match(/(\d+) of (\d+) messages arrived/);
    assert(m, `the failure says what arrived: ${text}`);
    const arrived = Number(m[1]);
    assert.equal(Number(m[2]), n + 1);
    assert(arrived > 0 && arrived < n + 1, `${arrived} of ${n + 1}`);
    assert.match(text, /still on your other device/);
    assert.equal((await historyDigest(newAlice)).count, arrived, "what arrived stays");
    const shown = await newAlice.$$eval(
      '[data-testid="message"] .text',
      (els) => els.map((el) => el.textContent ?? ""),
    );
    assert.equal(shown.at(-1), newest, "the newest messages are the ones that arrived");
  } finally {
    await world.close();
  }
});
