/**
 * Notifications in Chromium: off until alice turns them on (permission granted to the page),
 * then a message from bob while alice's app is in the background raises one notification naming
 * bob, with no text until she allows it; the tab title counts unread messages.
 */
import assert from "node:assert/strict";
import type { Page } from "puppeteer-core";
import { clickWhenLaidOut, sendMessage } from "../support/chat_page.ts";
import { withAliceAndBob } from "../support/two_users.ts";
import { holdsFor, waitFor } from "../support/wait.ts";

/** The notifications the page's service worker shows now. */
function shownNotifications(page: Page): Promise<{ title: string; body: string }[]> {
  return page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration();
    const list = reg ? await reg.getNotifications() : [];
    return list.map((n) => ({ title: n.title, body: n.body }));
  });
}

async function waitForNotification(page: Page, body: string): Promise<void> {
  await waitFor(
    `a notification "${body}" from bob`,
    async () => (await shownNotifications(page)).some((n) => n.title === "bob" && n.body === body),
    40_000,
    200,
  );
}

/** A hidden page runs no animation frames: wait by polling on a timer instead. */
const HIDDEN_POLL = { timeout: 40_000, polling: 200 };

Deno.test("a message while the app is hidden raises a notification, text only if allowed", () =>
  withAliceAndBob(async ({ alice, bob }) => {
    await alice.browserContext().overridePermissions(new URL(alice.url()).origin, [
      "notifications",
    ]);
    await alice.evaluate(() => navigator.serviceWorker.ready);

    // Off by default: a message while hidden raises nothing.
    const other = await alice.browserContext().newPage();
    await other.bringToFront();
    await alice.waitForFunction(() => document.visibilityState === "hidden", HIDDEN_POLL);
    await sendMessage(bob, "before opting in");
    await alice.waitForFunction(
      () =>
        [...document.querySelectorAll('[data-testid="message"] .text')].some((e) =>
          e.textContent === "before opting in"
        ),
      HIDDEN_POLL,
    );
    await holdsFor(
      "no notification while they are off",
      async () => (await shownNotifications(alice)).length === 0,
      2_000,
    );

    // Turned on in the settings.
    await alice.bringToFront();
    // The header re-renders as presence and contacts settle: click once the button is laid out.
    await (await alice.waitForSelector('[data-testid="my-key"]', { visible: true }))!.click();
    await clickWhenLaidOut(alice, '[data-testid="notify-setting"]');
    await alice.waitForFunction(
      () => (document.querySelector('[data-testid="notify-setting"]') as HTMLInputElement).checked,
      { timeout: 10_000 },
    );

    await other.bringToFront();
    await alice.waitForFunction(() => document.visibilityState === "hidden", HIDDEN_POLL);
    await sendMessage(bob, "the door code is 4711");
    await waitForNotification(alice, "New message");
    assert.ok(
      !(await shownNotifications(alice)).some((n) => n.body.includes("4711")),
      "no message text without permission",
    );

    // Text allowed: the next notification (replacing the last, one per contact) shows it.
    await alice.bringToFront();
    await clickWhenLaidOut(alice, '[data-testid="notify-text-setting"]');
    await other.bringToFront();
    await alice.waitForFunction(() => document.visibilityState === "hidden", HIDDEN_POLL);
    await sendMessage(bob, "see you at eight");
    await waitForNotification(alice, "see you at eight");
    assert.equal((await shownNotifications(alice)).length, 1, "one notification per contact");
  }));
