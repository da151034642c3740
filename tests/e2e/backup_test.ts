/**
 * History backup in Chromium: alice exports her history to a passphrase-encrypted file (a real
 * download), signs out, and on a fresh browser — where no hand-over brings her history — imports
 * the file: a wrong passphrase imports nothing and says so; the right one restores every message,
 * and the image and the file bob had sent her: the image shows, the file downloads byte-identical;
 * a file she had refused (over her size limit) was not in the export and says so.
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
import { attachFile, makePng, randomBytes, sha256 } from "../support/files_page.ts";

const PASS = "a long backup passphrase";

Deno.test("alice exports her history to an encrypted file and imports it on a fresh browser", () =>
  withAliceAndBob(async ({ servers, alice, bob }) => {
    await sendMessage(alice, "first from alice");
    await waitForMessages(bob, ["first from alice"]);
    await sendMessage(bob, "reply from bob");
    await waitForMessages(alice, ["first from alice", "reply from bob"]);

    const downloads = await Deno.makeTempDir({ prefix: "p2pchat-downloads-" });
    // bob sends alice an image and a file; both arrive complete in her browser.
    const png = await makePng(bob, 320, 200);
    const notes = randomBytes(300_000);
    await Deno.writeFile(`${downloads}/sunset.png`, png);
    await Deno.writeFile(`${downloads}/notes.bin`, notes);
    await attachFile(bob, `${downloads}/sunset.png`);
    await attachFile(bob, `${downloads}/notes.bin`);
    for (const name of ["sunset.png", "notes.bin"]) {
      await alice.waitForSelector(
        `[data-testid="attachment"][data-name="${name}"][data-status="complete"]`,
        { timeout: 60_000 },
      );
    }
    // A file over alice's size limit: refused in her browser, so not in her export.
    await alice.evaluate(() => localStorage.setItem("p2pchat.maxFileMb", "0.1"));
    await Deno.writeFile(`${downloads}/big.bin`, randomBytes(200_000));
    await attachFile(bob, `${downloads}/big.bin`);
    await alice.waitForSelector(
      '[data-testid="attachment"][data-name="big.bin"][data-status="refused"]',
      { timeout: 60_000 },
    );
    for (const name of ["sunset.png", "notes.bin", "big.bin"]) {
      await Deno.remove(`${downloads}/${name}`);
    }
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
            "Exported 5 messages and 2 files.",
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
      const clear = new TextDecoder("latin1").decode(bytes);
      assert.ok(!clear.includes("reply from bob") && !clear.includes("notes.bin"), "encrypted");
      assert.ok(bytes.length > notes.length + png.length, "the files are in it");
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
            "Imported 5 messages (5 new) and 2 files. 1 file not in the export: it shows as " +
              "not on this device.",
        { timeout: 60_000 },
      );
      await waitForMessages(page, ["first from alice", "reply from bob", "", "", ""]);
      const refused = await page.waitForSelector(
        '[data-testid="attachment"][data-name="big.bin"][data-status="missing"]',
        { timeout: 30_000 },
      );
      assert.equal(
        await refused!.$eval('[data-testid="file-missing"]', (el) => el.textContent),
        "file not on this device — ask bob to send it again",
      );

      // The image shows, full size; the file downloads with the same bytes bob sent.
      const image = await page.waitForSelector(
        '[data-testid="attachment"][data-name="sunset.png"][data-status="complete"] button:not([disabled])',
        { timeout: 30_000 },
      );
      await image!.click();
      const size = await page.waitForFunction(() => {
        const img = document.querySelector('[data-testid="full-image"]') as HTMLImageElement;
        return img?.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null;
      }, { timeout: 20_000 });
      assert.deepEqual(await size.jsonValue(), [320, 200]);
      await page.click('[data-testid="full-image"]');
      const saved = await Deno.makeTempDir({ prefix: "p2pchat-saved-" });
      try {
        const freshCdp = await page.createCDPSession();
        await freshCdp.send("Browser.setDownloadBehavior", {
          behavior: "allow",
          downloadPath: saved,
        });
        const link = await page.waitForSelector(
          '[data-testid="attachment"][data-name="notes.bin"] [data-testid="file-download"]',
          { timeout: 30_000 },
        );
        await link!.click();
        const got = await waitFor("notes.bin downloaded", async () => {
          const bytes = await Deno.readFile(`${saved}/notes.bin`).catch(() => null);
          return bytes?.length === notes.length ? bytes : null;
        }, 30_000);
        assert.equal(await sha256(got), await sha256(notes));
      } finally {
        await Deno.remove(saved, { recursive: true }).catch(() => {});
      }
    } finally {
      await fresh.close();
      await Deno.remove(downloads, { recursive: true }).catch(() => {});
    }
  }));
