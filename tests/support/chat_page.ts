/** Drives the PWA in a Chromium page the way a person would: by its visible controls. */
import type { Browser, Page } from "puppeteer-core";
import { waitFor } from "./wait.ts";

const byId = (id: string) => `[data-testid="${id}"]`;

/** Opens the app at `serverUrl` in a new page, collecting console errors for failure reports. */
export async function openApp(
  browser: Browser,
  serverUrl: string,
): Promise<Page & { errors: string[] }> {
  const page = await browser.newPage() as Page & { errors: string[] };
  page.errors = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") page.errors.push(msg.text());
  });
  page.on("pageerror", (err) => page.errors.push(String(err)));
  // Every Content-Security-Policy violation the page reports, for {@link cspViolations}.
  await page.evaluateOnNewDocument(() => {
    const seen: string[] = [];
    (globalThis as unknown as { cspViolations: string[] }).cspViolations = seen;
    document.addEventListener("securitypolicyviolation", (e) => {
      seen.push(`${e.violatedDirective} blocked ${e.blockedURI || "(inline)"} at ${e.sourceFile}`);
    });
  });
  await page.goto(serverUrl + "/", { waitUntil: "load" });
  return page;
}

/** The Content-Security-Policy violations the page reported since it was opened. */
export function cspViolations(page: Page): Promise<string[]> {
  return page.evaluate(() => [
    ...((globalThis as unknown as { cspViolations?: string[] }).cspViolations ?? []),
  ]);
}

/** Fills the login form and presses Register (which logs in) or Log in. */
export async function signIn(page: Page, username: string, password: string, register: boolean) {
  await page.waitForSelector(byId("username"));
  await page.type(byId("username"), username);
  await page.type(byId("password"), password);
  await page.click(byId(register ? "register" : "login"));
  await page.waitForFunction(
    (sel, name) => document.querySelector(sel)?.textContent === name,
    { timeout: 40_000 },
    byId("me"),
    username,
  );
}

/**
 * Adds `contact` by exact username with the add-contact form, unless already a contact, and
 * waits until the list shows them. Throws with the form's message when it refuses.
 */
export async function addContact(page: Page, contact: string) {
  await page.waitForSelector(byId("add-contact-name"), { timeout: 40_000 });
  if (await page.$(byId(`contact-${contact}`))) return;
  await page.click(byId("add-contact-name"), { count: 3 });
  await page.type(byId("add-contact-name"), contact);
  await page.click(byId("add-contact-submit"));
  const outcome = await page.waitForFunction(
    (listed, message) =>
      document.querySelector(listed)
        ? "added"
        : document.querySelector(`${message}[data-error="true"]`)?.textContent ?? false,
    { timeout: 40_000 },
    byId(`contact-${contact}`),
    byId("add-contact-message"),
  );
  const result = await outcome.jsonValue();
  if (result !== "added") throw new Error(`Adding ${contact} was refused: ${result}`);
}

/**
 * Waits until `contact` is listed with the given online status (adding them by name first if
 * they are not a contact yet: there is no directory).
 */
export async function waitForContact(page: Page, contact: string, online: boolean) {
  await addContact(page, contact);
  await page.waitForSelector(`${byId(`contact-${contact}`)}[data-online="${online}"]`, {
    timeout: 40_000,
  });
}

/**
 * Opens the conversation with `contact` (added by name first if not a contact yet). A click that lands while the list is being redrawn (a
 * busy page, a hand-over importing history) can be lost, so it clicks again until the chat shows.
 */
export async function openChat(page: Page, contact: string) {
  await addContact(page, contact);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await page.click(byId(`contact-${contact}`));
      await page.waitForSelector(byId("chat-input"), { timeout: 5_000 });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
  }
}

/**
 * Waits until the data channel from this page to `peer` is open: a message sent before it is
 * open goes through the servers (and shows "via server").
 */
export async function waitForChannel(page: Page, peer: string, timeoutMs = 40_000) {
  await page.waitForFunction(
    (name) =>
      (globalThis as unknown as { p2pchat?: { isChannelOpen(p: string): boolean } }).p2pchat
        ?.isChannelOpen(name) === true,
    { timeout: timeoutMs },
    peer,
  );
}

/** Types `text` and presses Send in the open conversation. */
export async function sendMessage(page: Page, text: string) {
  await page.type(byId("chat-input"), text);
  await page.click(byId("send"));
}

/** A message as the page shows it. */
export interface ShownMessage {
  text: string;
  from: string;
  via: string;
  status: string;
}

/** The messages of the open conversation, in display order. */
export function shownMessages(page: Page): Promise<ShownMessage[]> {
  return page.$$eval(byId("message"), (els) =>
    els.map((el) => ({
      text: el.querySelector(".text")?.textContent ?? "",
      from: el.getAttribute("data-from") ?? "",
      via: el.getAttribute("data-via") ?? "",
      status: el.getAttribute("data-status") ?? "",
    })));
}

/** Waits until the open conversation shows exactly `texts`, in this order. */
export async function waitForMessages(page: Page, texts: string[], timeoutMs = 40_000) {
  try {
    await page.waitForFunction(
      (sel, want) => {
        const got = [...document.querySelectorAll(sel)].map((el) =>
          el.querySelector(".text")?.textContent ?? ""
        );
        return JSON.stringify(got) === JSON.stringify(want);
      },
      { timeout: timeoutMs },
      byId("message"),
      texts,
    );
  } catch {
    const shown = (await shownMessages(page)).map((m) => m.text);
    throw new Error(
      `Expected messages ${JSON.stringify(texts)}, page shows ${JSON.stringify(shown)}`,
    );
  }
}

/** The test hook the PWA installs on `window.p2pchat` (see client/main.tsx). */
export interface P2pChatHook {
  username(): string | null;
  isChannelOpen(peer: string): boolean;
  dcOpenedAt: Record<string, number>;
  pingPeer(peer: string, n: number): Promise<number[]>;
  pingRelay(peer: string, n: number): Promise<number[]>;
}

type HookWindow = { p2pchat: P2pChatHook };

/** Whether the page has an open data channel to `peer`. */
export function isChannelOpen(page: Page, peer: string): Promise<boolean> {
  return page.evaluate((p) => (globalThis as unknown as HookWindow).p2pchat.isChannelOpen(p), peer);
}

/** `performance.now()` at which the page's data channel to `peer` opened, if it did. */
export function dcOpenedAt(page: Page, peer: string): Promise<number | undefined> {
  return page.evaluate((p) => (globalThis as unknown as HookWindow).p2pchat.dcOpenedAt[p], peer);
}

/** `n` sequential round trips to `peer`, over the data channel or relayed by the servers. */
export function pingRoundTrips(
  page: Page,
  peer: string,
  n: number,
  path: "p2p" | "relay",
): Promise<number[]> {
  return page.evaluate(
    (p, count, via) => {
      const hook = (globalThis as unknown as HookWindow).p2pchat;
      return via === "p2p" ? hook.pingPeer(p, count) : hook.pingRelay(p, count);
    },
    peer,
    n,
    path,
  );
}

/**
 * Waits until every message from `sender` in the open conversation has `data-status` equal to
 * `status`, and there are exactly `count` of them; reports what the page shows on timeout.
 */
export async function waitForStatuses(
  page: Page,
  sender: string,
  status: string,
  count: number,
  timeoutMs = 40_000,
) {
  try {
    await page.waitForFunction(
      (sel, from, want, n) => {
        const els = [...document.querySelectorAll(`${sel}[data-from="${from}"]`)];
        return els.length === n && els.every((el) => el.getAttribute("data-status") === want);
      },
      { timeout: timeoutMs },
      byId("message"),
      sender,
      status,
      count,
    );
  } catch {
    const shown = (await shownMessages(page)).filter((m) => m.from === sender);
    throw new Error(
      `Expected ${count} messages from ${sender} with status "${status}", page shows ${
        JSON.stringify(shown)
      }`,
    );
  }
}

/** The status line the page shows under each of the open conversation's messages. */
export function shownStatusTexts(page: Page): Promise<string[]> {
  return page.$$eval(
    byId("message"),
    (els) => els.map((el) => el.querySelector(".meta")?.textContent ?? ""),
  );
}

/**
 * Records the payload of every WebSocket frame `page` sends or receives from now on (through the
 * DevTools protocol), into the returned array.
 */
export async function recordWebSocketFrames(page: Page): Promise<string[]> {
  const frames: string[] = [];
  const cdp = await page.createCDPSession();
  await cdp.send("Network.enable");
  cdp.on("Network.webSocketFrameSent", (e) => frames.push(e.response.payloadData));
  cdp.on("Network.webSocketFrameReceived", (e) => frames.push(e.response.payloadData));
  return frames;
}

/** Waits until the open conversation shows the warning that message `id` from `from` was discarded. */
export async function waitForTampered(page: Page, from: string, id: string, timeoutMs = 40_000) {
  await page.waitForSelector(`${byId("refused")}[data-from="${from}"][data-id="${id}"]`, {
    timeout: timeoutMs,
  });
}

/** Presses "Log out" and waits for the login screen. */
export async function logOut(page: Page) {
  await page.click(byId("logout"));
  await page.waitForSelector(byId("login"));
}

/**
 * Waits until the page shows the history hand-over (`role` "sending" on a superseded device,
 * "receiving" on the new one) in `phase`; returns the text shown. Reports what it shows instead.
 */
export async function waitForHandover(
  page: Page,
  role: "sending" | "receiving",
  phase: "done" | "failed",
  timeoutMs = 60_000,
): Promise<string> {
  const sel = `${byId("handover-status")}[data-role="${role}"][data-phase="${phase}"]`;
  try {
    await page.waitForSelector(sel, { timeout: timeoutMs });
  } catch {
    const shown = await page.$eval(byId("handover-status"), (el) => el.outerHTML).catch(() =>
      "nothing"
    );
    throw new Error(`Expected the hand-over ${role} ${phase}, page shows ${shown}`);
  }
  return await page.$eval(sel, (el) => el.textContent ?? "");
}

/** The stored conversation with `peer` (every row, in order), through the page's test hook. */
export function storedMessages(
  page: Page,
  peer: string,
): Promise<Array<{ id: string; text: string; sender: string; status: string; via: string }>> {
  return page.evaluate(
    (p) =>
      (globalThis as unknown as {
        p2pchat: {
          messages(
            p: string,
          ): Promise<
            Array<{ id: string; text: string; sender: string; status: string; via: string }>
          >;
        };
      }).p2pchat.messages(p),
    peer,
  );
}

/**
 * Clicks `selector` once it is laid out. A panel that just opened can re-render under the
 * pointer (its QR code and key fingerprints arrive a moment later): Puppeteer then finds the
 * node without a box ("not clickable") and has clicked nothing, so the click is tried again.
 */
export async function clickWhenLaidOut(page: Page, selector: string, timeoutMs = 20_000) {
  let last = "";
  await waitFor(`${selector} to take a click`, async () => {
    try {
      await page.click(selector);
      return true;
    } catch (err) {
      last = String(err);
      if (/not clickable|No element found|not an Element/.test(last)) return false;
      throw err;
    }
  }, timeoutMs).catch((err) => {
    throw new Error(`${err instanceof Error ? err.message : err} (last: ${last})`);
  });
}
