/**
 * The usual browser fixture: a three-server cluster, two Chromium processes, alice's page on
 * server 1 and bob's on server 2, both registered, each seeing the other online with the chat
 * open. Everything is torn down afterwards, and the pages' console errors are printed on failure.
 */
import { launchBrowser, type TestBrowser } from "./browser.ts";
import { type ServerProcess, startCluster } from "./server_process.ts";
import { openApp, openChat, signIn, waitForChannel, waitForContact } from "./chat_page.ts";

/** A page opened by {@link openApp}, collecting its console errors. */
export type AppPage = Awaited<ReturnType<typeof openApp>>;

/** What a test body receives. */
export interface AliceAndBob {
  servers: ServerProcess[];
  alice: AppPage;
  bob: AppPage;
}

const ROOT = new URL("../../", import.meta.url).pathname;

/** Fails with a clear message when the PWA has not been built. */
export async function assertClientBuilt(): Promise<void> {
  await Deno.stat(`${ROOT}dist/index.html`).catch(() => {
    throw new Error("The client is not built: run `deno task build` first");
  });
}

/** Variations of the fixture. */
export interface AliceAndBobOptions {
  /** How many servers. @default 3 */
  servers?: number;
  /** Environment of every server (e.g. a lower quota). */
  env?: Record<string, string>;
  /** Starts bob's browser (e.g. `launchFirefox`). @default launchBrowser */
  bobBrowser?: () => Promise<TestBrowser>;
  /**
   * "chat": each sees the other online with the chat open and the data channel up; "signed in":
   * both only registered (the body sets up the rest). @default "chat"
   */
  until?: "chat" | "signed in";
}

/** Runs `body` with alice and bob chatting through two different servers of three. */
export async function withAliceAndBob(
  body: (users: AliceAndBob) => Promise<void>,
  options: AliceAndBobOptions = {},
): Promise<void> {
  await assertClientBuilt();
  const servers = await startCluster(options.servers ?? 3, options.env ? { env: options.env } : {});
  const browsers: TestBrowser[] = [];
  try {
    browsers.push(await launchBrowser(), await (options.bobBrowser ?? launchBrowser)());
    const alice = await openApp(browsers[0]!.browser, servers[0]!.url);
    const bob = await openApp(browsers[1]!.browser, servers[1]!.url);
    try {
      await signIn(alice, "alice", "alice-password", true);
      await signIn(bob, "bob", "bob-password-1", true);
      if ((options.until ?? "chat") === "chat") {
        await waitForContact(alice, "bob", true);
        await waitForContact(bob, "alice", true);
        await openChat(alice, "bob");
        await openChat(bob, "alice");
        await waitForChannel(alice, "bob");
        await waitForChannel(bob, "alice");
      }
      await body({ servers, alice, bob });
    } catch (err) {
      console.error("alice console:", alice.errors, "\nbob console:", bob.errors);
      throw err;
    }
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await Promise.all(servers.map((s) => s.stop()));
  }
}
