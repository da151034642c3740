/**
 * Reading the ring visualizer page (`/ring/view`) from a browser test: what the page shows, as
 * data (nodes in drawing order with their successor), plus Firefox launching for the
 * cross-browser check and the ring simulator as a child process.
 */
import puppeteer, { type Browser, type Page } from "puppeteer-core";

/** Where Debian installs Firefox ESR; override with FIREFOX_PATH. */
export const FIREFOX_PATH = Deno.env.get("FIREFOX_PATH") ?? "/usr/bin/firefox-esr";

/** One node as the page draws it. */
export interface ShownNode {
  id: string;
  address: string;
  /** Address of the successor the page draws for it ("" when none). */
  succ: string;
  live: boolean;
  pos: number;
  classes: string;
}

/** What the page shows now. */
export interface ShownRing {
  nodes: ShownNode[];
  violations: number;
  seq: number;
  timeline: string;
}

/** Reads the ring the page currently shows. */
export function shownRing(page: Page): Promise<ShownRing> {
  return page.evaluate(() => {
    const box = document.getElementById("ring")!;
    const nodes = [...box.querySelectorAll("g.node")].map((el) => ({
      id: el.getAttribute("data-id") ?? "",
      address: el.getAttribute("data-address") ?? "",
      succ: el.getAttribute("data-succ") ?? "",
      live: el.getAttribute("data-live") === "true",
      pos: Number(el.getAttribute("data-pos")),
      classes: el.getAttribute("class") ?? "",
    }));
    return {
      nodes,
      violations: Number(box.dataset.violations ?? "-1"),
      seq: Number(box.dataset.seq ?? "0"),
      timeline: document.querySelector(".timeline")?.textContent ?? "",
    };
  });
}

/**
 * Why `shown` is not exactly the ring of `expected` (server URLs) in id order with every
 * successor the next node, and no violations; `undefined` when it is.
 */
export function ringMismatch(shown: ShownRing, expected: string[]): string | undefined {
  const live = shown.nodes.filter((n) => n.live);
  const addresses = live.map((n) => n.address);
  if (shown.nodes.length !== live.length) {
    return `unreachable nodes still drawn: ${
      shown.nodes.filter((n) => !n.live).map((n) => n.address)
    }`;
  }
  if ([...addresses].sort().join() !== [...expected].sort().join()) {
    return `nodes ${addresses.join(", ")} instead of ${expected.join(", ")}`;
  }
  for (let i = 1; i < live.length; i++) {
    if (!(live[i - 1]!.id < live[i]!.id) || !(live[i - 1]!.pos < live[i]!.pos)) {
      return `nodes not in id order at ${i}`;
    }
  }
  for (let i = 0; i < live.length; i++) {
    const next = live[(i + 1) % live.length]!;
    if (live[i]!.succ !== next.address) {
      return `${live[i]!.address} drawn with successor ${live[i]!.succ}, expected ${next.address}`;
    }
  }
  if (shown.violations !== 0) return `${shown.violations} violations shown`;
  return undefined;
}

/** Whether Firefox is installed at {@link FIREFOX_PATH}. */
export async function hasFirefox(): Promise<boolean> {
  try {
    await Deno.stat(FIREFOX_PATH);
    return true;
  } catch {
    return false;
  }
}

/** Launches headless Firefox (WebDriver BiDi) with a fresh profile. */
export async function launchFirefox(): Promise<{ browser: Browser; close(): Promise<void> }> {
  const browser = await puppeteer.launch({
    browser: "firefox",
    executablePath: FIREFOX_PATH,
    headless: true,
  });
  return { browser, close: () => browser.close().catch(() => {}) };
}

/** The ring simulator (`scripts/ring_sim.ts`) running as a child process. */
export interface RingSimProcess {
  url: string;
  stop(): Promise<void>;
}

const ROOT = new URL("../../", import.meta.url).pathname;

/** Starts the simulator on a free port with `args`; resolves once it prints `ready`. */
export async function startRingSim(args: string[]): Promise<RingSimProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      `--allow-read=${ROOT}server/visualizer/page`,
      `${ROOT}scripts/ring_sim.ts`,
      "--port=0",
      ...args,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already ended */ }
    await child.status;
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("ring:sim did not start in 60 s")), 60_000);
      (async () => {
        let buffer = "";
        const decoder = new TextDecoder();
        for await (const chunk of child.stdout) {
          buffer += decoder.decode(chunk);
          const match = buffer.match(/^ready (\S+)$/m);
          if (match) {
            clearTimeout(timer);
            resolve(match[1]!);
          }
        }
        clearTimeout(timer);
        reject(new Error("ring:sim exited before ready"));
      })().catch(reject);
    });
    return { url, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
