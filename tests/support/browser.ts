/**
 * Launches Debian's Chromium through puppeteer-core with the flags this project's tests need:
 * no sandbox (root), no background traffic, a fresh profile, and plain host ICE candidates
 * (no mDNS names) so two browser processes can open a data channel on a private network.
 */
import puppeteer, { type Browser } from "puppeteer-core";

/**
 * How to start a browser somewhere else (another network namespace): a wrapper program in place
 * of the browser, and the DevTools / WebDriver BiDi port puppeteer then connects to on loopback
 * (which the caller forwards there, see `port_forward.ts`).
 */
export interface RemoteLaunch {
  executablePath?: string;
  debuggingPort?: number;
}

/** Where Debian installs Chromium; override with CHROMIUM_PATH. */
export const CHROMIUM_PATH = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

/** A browser process with its own temporary profile directory. */
export interface TestBrowser {
  browser: Browser;
  close(): Promise<void>;
  /** Kills the browser process at once (SIGKILL), as a crash or a power cut would. */
  kill?(): void;
}

/**
 * Launches one headless Chromium process with a fresh `--user-data-dir`, or with `userDataDir`
 * (a profile that outlives the process: the caller removes it).
 */
export async function launchBrowser(
  options: { userDataDir?: string } & RemoteLaunch = {},
): Promise<TestBrowser> {
  const userDataDir = options.userDataDir ??
    await Deno.makeTempDir({ prefix: "p2pchat-chromium-" });
  const browser = await puppeteer.launch({
    executablePath: options.executablePath ?? CHROMIUM_PATH,
    headless: true,
    userDataDir,
    ...(options.debuggingPort ? { debuggingPort: options.debuggingPort } : { pipe: true }),
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--allow-loopback-in-peer-connection",
    ],
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      if (!options.userDataDir) await Deno.remove(userDataDir, { recursive: true }).catch(() => {});
    },
    kill() {
      browser.process()?.kill("SIGKILL");
    },
  };
}

/** Where Debian installs Firefox ESR; override with FIREFOX_PATH. */
export const FIREFOX_PATH = Deno.env.get("FIREFOX_PATH") ?? "/usr/bin/firefox-esr";

/**
 * Launches one headless Firefox ESR process (WebDriver BiDi) with a fresh profile, allowing
 * WebRTC between loopback and private addresses with plain host candidates, as Chromium's flags
 * do in {@link launchBrowser}.
 */
export async function launchFirefox(options: RemoteLaunch = {}): Promise<TestBrowser> {
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: options.executablePath ?? FIREFOX_PATH,
    headless: true,
    ...(options.debuggingPort ? { debuggingPort: options.debuggingPort } : {}),
    extraPrefsFirefox: {
      "media.peerconnection.ice.loopback": true,
      "media.peerconnection.ice.obfuscate_host_addresses": false,
      "media.peerconnection.ice.default_address_only": false,
      "network.proxy.type": 0,
      "browser.shell.checkDefaultBrowser": false,
      "datareporting.policy.dataSubmissionEnabled": false,
    },
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
    },
  };
}
