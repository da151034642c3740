/**
 * Phones: at Pixel 5 (393 × 851) and iPhone SE (375 × 667) sizes, on the login screen, the
 * contact list and an open chat, the header stays on one line, the page never scrolls sideways,
 * every control is at least 44 × 44 CSS px (a checkbox counts with its label) and has an
 * accessible name in Chromium's accessibility tree (the message input through a real label).
 * Screenshots go to a temporary folder, or to docs/ with UPDATE_SCREENSHOTS=1 (the committed
 * docs/phone-*.png come from such a run).
 */
import assert from "node:assert/strict";
import type { Page, SerializedAXNode } from "puppeteer-core";
import { launchBrowser, type TestBrowser } from "../support/browser.ts";
import { type ServerProcess, startCluster } from "../support/server_process.ts";
import {
  openApp,
  openChat,
  sendMessage,
  signIn,
  waitForContact,
  waitForMessages,
} from "../support/chat_page.ts";
import { assertClientBuilt } from "../support/two_users.ts";

const PHONES = [
  { name: "pixel5", user: "alice", width: 393, height: 851, deviceScaleFactor: 2 },
  { name: "iphone-se", user: "carol", width: 375, height: 667, deviceScaleFactor: 2 },
];
const ROOT = new URL("../../", import.meta.url).pathname;

/** What breaks the phone rules on the page as shown now (empty when all is well). */
function layoutProblems(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const problems: string[] = [];
    const visible = (el: Element) => {
      const r = el.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden";
    };
    const describe = (el: Element) =>
      `${el.tagName.toLowerCase()}${
        el.getAttribute("data-testid") ? `[${el.getAttribute("data-testid")}]` : ""
      } "${(el.textContent ?? "").trim().slice(0, 20)}"`;
    if (document.documentElement.scrollWidth > innerWidth) {
      problems.push(
        `page scrolls sideways: ${document.documentElement.scrollWidth} > ${innerWidth}`,
      );
    }
    // The header: one line (nothing wraps), everything inside it.
    const header = document.querySelector("header.top");
    if (header) {
      const box = header.getBoundingClientRect();
      if (box.height > 64) problems.push(`header is ${box.height} px tall (wrapped?)`);
      for (const child of header.children) {
        const r = child.getBoundingClientRect();
        const lineHeight = parseFloat(getComputedStyle(child).lineHeight) || 24;
        const isControl = child.tagName === "BUTTON";
        if (!isControl && r.height > lineHeight * 1.5) {
          problems.push(`${describe(child)} wraps (${r.height} px tall)`);
        }
        if (r.left < box.left - 0.5 || r.right > box.right + 0.5) {
          problems.push(`${describe(child)} sticks out of the header`);
        }
      }
    }
    // Touch targets.
    for (const el of document.querySelectorAll("button, input, select, textarea, a[href]")) {
      if (!visible(el)) continue;
      const target = (el as HTMLInputElement).type === "checkbox" ? el.closest("label") ?? el : el;
      const r = target.getBoundingClientRect();
      if (r.width < 44 || r.height < 44) {
        problems.push(`${describe(el)} is ${Math.round(r.width)} × ${Math.round(r.height)} px`);
      }
    }
    // Text fields are named by a label, not by their placeholder only.
    for (const el of document.querySelectorAll("input:not([type=checkbox]), textarea")) {
      const field = el as HTMLInputElement;
      if (visible(el) && (field.labels?.length ?? 0) === 0) {
        problems.push(`${describe(el)} has no label`);
      }
    }
    return problems;
  });
}

const CONTROL_ROLES = new Set(["button", "textbox", "checkbox", "link", "combobox", "searchbox"]);

/** Controls in the accessibility tree without a name, and the names of the text fields. */
async function accessibleNames(page: Page): Promise<{ unnamed: string[]; fields: string[] }> {
  const tree = await page.accessibility.snapshot({ interestingOnly: true });
  const unnamed: string[] = [];
  const fields: string[] = [];
  const walk = (node: SerializedAXNode | null | undefined) => {
    if (!node) return;
    if (CONTROL_ROLES.has(node.role)) {
      if (!node.name?.trim()) unnamed.push(`${node.role} (value ${node.value ?? ""})`);
      if (node.role === "textbox") fields.push(node.name ?? "");
    }
    for (const child of node.children ?? []) walk(child);
  };
  walk(tree);
  return { unnamed, fields };
}

async function checkScreen(page: Page, what: string, shotDir: string, shot: string) {
  assert.deepEqual(await layoutProblems(page), [], `${what}: layout`);
  const names = await accessibleNames(page);
  assert.deepEqual(names.unnamed, [], `${what}: every control has an accessible name`);
  await page.screenshot({ path: `${shotDir}/phone-${shot}.png` });
  return names;
}

Deno.test("phones: one-line header, 44 px touch targets and named controls at Pixel 5 and iPhone SE sizes", async () => {
  await assertClientBuilt();
  const shotDir = Deno.env.get("UPDATE_SCREENSHOTS") === "1"
    ? `${ROOT}docs`
    : await Deno.makeTempDir({ prefix: "p2pchat-phone-" });
  const servers: ServerProcess[] = await startCluster(1);
  let browser: TestBrowser | undefined;
  try {
    browser = await launchBrowser();
    const bob = await openApp(browser.browser, servers[0]!.url);
    await signIn(bob, "bob", "bob-password-1", true);
    for (const phone of PHONES) {
      const page = await openApp(browser.browser, servers[0]!.url);
      try {
        await page.setViewport({
          width: phone.width,
          height: phone.height,
          deviceScaleFactor: phone.deviceScaleFactor,
          isMobile: true,
          hasTouch: true,
        });
        await page.reload({ waitUntil: "load" });
        await page.waitForSelector('[data-testid="login"]');
        const login = await checkScreen(
          page,
          `${phone.name} login`,
          shotDir,
          `${phone.name}-login`,
        );
        assert.deepEqual(login.fields.sort(), ["Password", "Username"]);

        await signIn(page, phone.user, `${phone.user}-password`, true);
        await waitForContact(page, "bob", true);
        await checkScreen(page, `${phone.name} contacts`, shotDir, `${phone.name}-contacts`);

        await openChat(page, "bob");
        await sendMessage(page, `Hi bob, from a ${phone.name}`);
        // bob adds the phone's user by name (his tab in front for the clicks), then goes back.
        await bob.bringToFront();
        await waitForContact(bob, phone.user, true);
        await page.bringToFront();
        // Bob's page is a background tab (no animation frames for clicks): he answers through
        // the app's own actions.
        await bob.evaluate(async (to) => {
          const app = (globalThis as unknown as {
            p2pchat: { openChat(p: string): void; send(t: string): Promise<void> };
          }).p2pchat;
          app.openChat(to);
          await app.send("Hello! Reading you on my phone screenshot.");
        }, phone.user);
        await waitForMessages(page, [
          `Hi bob, from a ${phone.name}`,
          "Hello! Reading you on my phone screenshot.",
        ]);
        const chat = await checkScreen(page, `${phone.name} chat`, shotDir, `${phone.name}-chat`);
        assert.deepEqual(chat.fields, ["Message to bob"]);
      } catch (err) {
        console.error(`${phone.name} console:`, page.errors);
        throw err;
      } finally {
        await page.close();
      }
    }
  } finally {
    await browser?.close();
    await Promise.all(servers.map((s) => s.stop()));
    if (!shotDir.endsWith("docs")) await Deno.remove(shotDir, { recursive: true });
  }
});
