/**
 * History backup in Chromium: alice exports her history to a passphrase-encrypted file (a real
 * download), signs out, and on a fresh browser — where no hand-over brings her history — imports
 * the file: a wrong passphrase imports nothing and says so; the right one restores every message.
 */
import assert from "node:assert/strict";
import { launchBrowser } from "../support/browser.ts";
import {
  logOut,
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForMessages,
} from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";
import { waitFor } from "../support/wait.ts";

const PASS = "a long backup passphrase";

Deno.test("alice exports her history to an encrypted file and imports it on a fresh browser", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    await sendMessage(alice, "first from alice");
    await waitForMessages(bob, ["first from alice"]);
    await sendMessage(bob, "reply from bob");
    await waitForMessages(alice, ["first from alice", "reply from bob"]);

    const downloads = await Deno.makeTempDir({ prefix: "p2pchat-downloads-" });
    const fresh = await launchBrowser();
    try {
      const cdp = await alice.createCDPSession();
      await cdp.send("Browser.setDownloadBehavior", { behavior: "allow", downloadPath: downloads });
      await alice.click('[data-testid="my-key"]');
      await alice.type('[data-testid="backup-passphrase"]', PASS);
      await alice.click('[data-testid="export-history"]');
      await alice.waitForFunction(
        () =>
          document.querySelector('[data-testid="backup-status"]')?.textContent?.startsWith(
            "Exported 2 messages",
          ),
        { timeout: 60_000 },
      );
      const file = await waitFor("the downloaded history file", async () => {
        for await (const e of Deno.readDir(downloads)) {
          if (e.name.endsWith(".p2pchat")) return `${downloads}/${e.name}`;
        }
        return null;
      }, 30_000);
      const bytes = await Deno.readFile(file);
      assert.ok(!new TextDecoder().decode(bytes).includes("reply from bob"), "encrypted");
      await logOut(alice);

      // A fresh browser: alice signed out on the old one, so no history comes with the login.
      const page = await openApp(fresh.browser, servers[0]!.url);
      await signIn(page, "alice", "alice-password", false);
      await openChat(page, "bob");
      assert.equal(await page.$$eval('[data-testid="message"]', (els) => els.length), 0);

      await page.click('[data-testid="my-key"]');
      const input = await page.$('[data-testid="import-file"]');
      await (input as unknown as { uploadFile(p: string): Promise<void> }).uploadFile(file);
      await page.type('[data-testid="backup-passphrase"]', "not the passphrase");
      await page.click('[data-testid="import-history"]');
      await page.waitForFunction(
        () =>
          document.querySelector('[data-testid="backup-status"]')?.textContent?.includes(
            "passphrase is wrong",
          ),
        { timeout: 60_000 },
      );
      assert.equal(await page.$$eval('[data-testid="message"]', (els) => els.length), 0);

      await page.$eval('[data-testid="backup-passphrase"]', (el) => {
        const input = el as HTMLInputElement;
        input.value = "";
        input.dispatchEvent(new Event("input", { bubbles: true }));
      });
      await page.type('[data-testid="backup-passphrase"]', PASS);
      await page.click('[data-testid="import-history"]');
      await page.waitForFunction(
        () =>
          document.querySelector('[data-testid="backup-status"]')?.textContent ===
            "Imported 2 messages (2 new).",
        { timeout: 60_000 },
      );
      await waitForMessages(page, ["first from alice", "reply from bob"]);
    } finally {
      await fresh.close();
      await Deno.remove(downloads, { recursive: true }).catch(() => {});
    }
  }));
