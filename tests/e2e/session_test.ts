/**
 * One active session per user, in real browsers: alice logs in on a second browser while the
 * first is open; the first shows "Signed in elsewhere", stops (no reconnect), and the second
 * chats with bob.
 */
import assert from "node:assert/strict";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { startCluster } from "../support/server_process.ts";
import { holdsFor } from "../support/wait.ts";
import {
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

Deno.test("a second login of alice signs the first browser out; the second one chats", async () => {
  await Deno.stat(`${ROOT}dist/index.html`).catch(() => {
    throw new Error("The client is not built: run `deno task build` first");
  });
  const servers = await startCluster(2);
  const browsers: TestBrowser[] = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser(), await launchBrowser());
    const [a, b, c] = browsers as [TestBrowser, TestBrowser, TestBrowser];
    const oldAlice = await openApp(a.browser, servers[0]!.url);
    const bob = await openApp(c.browser, servers[1]!.url);
    try {
      await signIn(oldAlice, "alice", "alice-password", true);
      await signIn(bob, "bob", "bob-password-1", true);
      await waitForContact(oldAlice, "bob", true);

      // alice again, in another browser, through the other server.
      const newAlice = await openApp(b.browser, servers[1]!.url);
      await signIn(newAlice, "alice", "alice-password", false);

      // The first browser is told, back on the login screen, and stays offline.
      await oldAlice.waitForSelector('[data-testid="signed-out-reason"]', { timeout: 40_000 });
      const reason = await oldAlice.$eval(
        '[data-testid="signed-out-reason"]',
        (el) => el.textContent ?? "",
      );
      assert.match(reason, /Signed in elsewhere/);
      assert.equal(await oldAlice.$('[data-testid="me"]'), null);
      // No reconnect loop: it stays offline, checked throughout a few seconds (a loop would
      // retry within one).
      await holdsFor(
        "the replaced browser stays offline (no reconnect loop)",
        async () =>
          await oldAlice.$eval(
            '[data-testid="conn-status"]',
            (el) => el.getAttribute("data-status"),
          ) === "offline",
        3_000,
      );
      const health = await Promise.all(
        servers.map(async (s) => (await (await fetch(`${s.url}/healthz`)).json()).sessions),
      );
      assert.equal(health[0], 0, "the first server holds no session of alice any more");

      // The new session chats with bob.
      await waitForContact(newAlice, "bob", true);
      await openChat(newAlice, "bob");
      await sendMessage(newAlice, "hello from my new device");
      await openChat(bob, "alice");
      await waitForMessages(bob, ["hello from my new device"]);
      await sendMessage(bob, "welcome back");
      await waitForMessages(newAlice, ["hello from my new device", "welcome back"]);

      for (const page of [oldAlice, newAlice, bob]) {
        assert.deepEqual(page.errors.filter((e) => !/favicon/.test(e)), []);
      }
    } catch (err) {
      console.error("old alice console:", oldAlice.errors, "\nbob console:", bob.errors);
      throw err;
    }
  } finally {
    await Promise.all(browsers.map((br) => br.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
