/**
 * Contacts without a directory (issues #15 and #16), end to end on two real servers: alice
 * (Chromium) lists nobody until she adds someone; a misspelt name is refused clearly; she adds
 * bob (Firefox ESR where installed) by exact name. carol adds bob by his link (his profile shows
 * it with a QR code), and a link whose key id is not bob's is refused with a warning. carol,
 * whom alice has not added, writes to her: alice sees a request, reads it only by opening it,
 * and accepts — carol becomes a contact. mallory writes too and is blocked: mallory's next
 * message is delivered (acknowledged) but never shows. After a reload alice's contacts and
 * block list are still there.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "puppeteer-core";
import {
  FIREFOX_PATH,
  launchBrowser,
  launchFirefox,
  type TestBrowser,
} from "../support/browser.ts";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import { holdsFor, waitFor } from "../support/wait.ts";
import {
  addContact,
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";

const byId = (id: string) => `[data-testid="${id}"]`;

/** Whether a file exists (Firefox is optional outside CI). */
async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** The add-contact form's message after submitting `name` (waits for it to be an error). */
async function refusedAdd(page: Page, name: string): Promise<string> {
  await page.click(byId("add-contact-name"), { count: 3 });
  await page.type(byId("add-contact-name"), name);
  await page.click(byId("add-contact-submit"));
  await page.waitForSelector(`${byId("add-contact-message")}[data-error="true"]`, {
    timeout: 40_000,
  });
  return await page.$eval(byId("add-contact-message"), (el) => el.textContent ?? "");
}

/** The stored conversation of `page`'s user with `peer`, as texts. */
function stored(page: Page, peer: string): Promise<string[]> {
  return page.evaluate(
    async (p) =>
      (await (globalThis as unknown as {
        p2pchat: { messages(peer: string): Promise<Array<{ text: string }>> };
      }).p2pchat.messages(p)).map((m) => m.text),
    peer,
  );
}

/** The status of the last message `page` sent in its open conversation. */
function lastStatus(page: Page): Promise<string | null> {
  return page.$$eval(
    byId("message"),
    (els) => els.at(-1)?.getAttribute("data-status") ?? null,
  );
}

Deno.test("contacts: by exact name and by link, message requests accepted or blocked, kept across a reload", async () => {
  await assertClientBuilt();
  const servers: ServerProcess[] = await startCluster(2);
  const browsers: TestBrowser[] = [];
  const pages: Array<Page & { errors: string[] }> = [];
  try {
    const chromium = await launchBrowser();
    browsers.push(chromium);
    // Each user in a browser context of their own: separate storage, like separate devices.
    const userPage = async (browser: Browser, url: string) => {
      const context = await browser.createBrowserContext();
      const page = await openApp(context as unknown as Browser, url);
      pages.push(page);
      return page;
    };
    const [s1, s2] = servers.map((s) => s.url) as [string, string];
    const alice = await userPage(chromium.browser, s1);
    const carol = await userPage(chromium.browser, s2);
    const mallory = await userPage(chromium.browser, s1);
    let bob: Page;
    if (await exists(FIREFOX_PATH)) {
      const firefox = await launchFirefox();
      browsers.push(firefox);
      bob = await firefox.browser.newPage();
      await bob.goto(`${s2}/`, { waitUntil: "load" });
    } else {
      if (Deno.env.get("CI") === "true") throw new Error(`Firefox not found at ${FIREFOX_PATH}`);
      console.warn(`Firefox not found at ${FIREFOX_PATH}: bob uses Chromium`);
      bob = await userPage(chromium.browser, s2);
    }
    await signIn(alice, "alice", "alice-password", true);
    await signIn(bob, "bob", "bob-password-1", true);
    await signIn(carol, "carol", "carol-password", true);
    await signIn(mallory, "mallory", "mallory-password", true);

    // No directory: nobody is listed until added, and a name that does not exist is refused.
    assert.equal(await alice.$$eval(".contacts .contact", (els) => els.length), 0);
    assert.match(await refusedAdd(alice, "bobb"), /no user named "bobb"/);
    await addContact(alice, "bob");
    await waitForContact(alice, "bob", true);

    // bob's profile shows his link and its QR code; carol opens it and adds him.
    await bob.click(byId("my-key"));
    await bob.waitForSelector(byId("my-contact-qr"), { timeout: 40_000 });
    const link = await bob.$eval(byId("my-contact-link"), (el) => el.textContent ?? "");
    assert.match(link, /#add=bob&fp=[A-Za-z0-9_-]{43}$/);
    // A link with someone else's key id (alice's) for bob: refused with a warning.
    await alice.click(byId("my-key"));
    await alice.waitForSelector(byId("my-contact-link"), { timeout: 40_000 });
    const aliceLink = await alice.$eval(byId("my-contact-link"), (el) => el.textContent ?? "");
    await alice.click(byId("my-key"));
    const forged = link.replace(/fp=.*$/, aliceLink.slice(aliceLink.indexOf("fp=")));
    await carol.goto(forged.replace(/^https?:\/\/[^/]+/, s2), { waitUntil: "load" });
    await carol.waitForFunction(
      (sel) => (document.querySelector(sel) as HTMLInputElement | null)?.value === "bob",
      { timeout: 40_000 },
      byId("add-contact-name"),
    );
    assert.equal(await carol.evaluate(() => location.hash), "", "the link leaves the address");
    await carol.click(byId("add-contact-submit"));
    await carol.waitForSelector(`${byId("add-contact-message")}[data-error="true"]`, {
      timeout: 40_000,
    });
    const warning = await carol.$eval(byId("add-contact-message"), (el) => el.textContent ?? "");
    assert.match(warning, /not the one in their link/);
    assert.equal(await carol.$(byId("contact-bob")), null, "not added");
    // The genuine link.
    await carol.goto(link.replace(/^https?:\/\/[^/]+/, s2), { waitUntil: "load" });
    await carol.waitForFunction(
      (sel) => (document.querySelector(sel) as HTMLInputElement | null)?.value === "bob",
      { timeout: 40_000 },
      byId("add-contact-name"),
    );
    await carol.click(byId("add-contact-submit"));
    await waitForContact(carol, "bob", true);

    // carol, a stranger to alice, writes: a request, its text shown only once opened.
    await openChat(carol, "alice");
    await sendMessage(carol, "hello alice, carol here");
    await alice.waitForSelector(byId("request-carol"), { timeout: 40_000 });
    const listText = await alice.$eval(".contacts", (el) => el.textContent ?? "");
    assert.ok(!listText.includes("carol here"), "no text in the list");
    assert.equal(await alice.$(byId("contact-carol")), null);
    await alice.click(byId("request-carol"));
    await waitForMessages(alice, ["hello alice, carol here"]);
    await alice.click(byId("accept-request"));
    await alice.waitForSelector(byId("contact-carol"), { timeout: 40_000 });
    assert.equal(await alice.$(byId("request-carol")), null);

    // mallory writes and is blocked; her next message is acknowledged and never shows.
    await openChat(mallory, "alice");
    await sendMessage(mallory, "mallory one");
    await alice.waitForSelector(byId("request-mallory"), { timeout: 40_000 });
    await alice.click(byId("request-mallory"));
    await waitForMessages(alice, ["mallory one"]);
    await alice.click(byId("block-user"));
    await alice.waitForSelector(byId("blocked-mallory"), { timeout: 40_000 });
    assert.equal(await alice.$(byId("request-mallory")), null);
    await sendMessage(mallory, "mallory two");
    await waitFor(
      "mallory's second message to be acknowledged",
      async () => (await lastStatus(mallory)) === "delivered",
      40_000,
    );
    await holdsFor(
      "mallory's second message never to show at alice",
      async () =>
        !(await stored(alice, "mallory")).includes("mallory two") &&
        (await alice.$(byId("request-mallory"))) === null,
      2_000,
    );

    // A reload: the contacts and the block list come back from this device.
    await alice.reload({ waitUntil: "load" });
    await waitForContact(alice, "bob", true);
    await alice.waitForSelector(byId("contact-carol"), { timeout: 40_000 });
    await alice.waitForSelector(byId("blocked-mallory"), { timeout: 40_000 });
    assert.deepEqual(
      await alice.$$eval(
        ".contacts .contact",
        (els) => els.map((e) => e.getAttribute("data-testid")),
      ),
      ["contact-bob", "contact-carol"],
    );
  } catch (err) {
    for (const p of pages) console.error("page console:", p.errors);
    throw err;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
});
