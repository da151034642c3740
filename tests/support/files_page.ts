/** Files in the PWA (issue 15), driven through its file input, read through `window.p2pchat`. */
import type { Page } from "puppeteer-core";
import { waitFor } from "./wait.ts";

/** What `window.p2pchat.files()` reports of one transfer. */
export interface ShownTransfer {
  id: string;
  peer: string;
  outgoing: boolean;
  status: string;
  done: number;
  total: number;
  sentChunks: number;
  lastRunChunks: number;
  resumedFrom: number;
  error?: string;
}

interface FilesHook {
  p2pchat: {
    files(): Record<string, ShownTransfer>;
    fileDigest(id: string): Promise<string | null>;
    dropChannel(peer: string): void;
  };
}

/** Every transfer the page's session knows. */
export function transfers(page: Page): Promise<ShownTransfer[]> {
  return page.evaluate(() => Object.values((globalThis as unknown as FilesHook).p2pchat.files()));
}

/** The SHA-256 (base64url) of file `id` as stored in the page, or null. */
export function storedDigest(page: Page, id: string): Promise<string | null> {
  return page.evaluate((i) => (globalThis as unknown as FilesHook).p2pchat.fileDigest(i), id);
}

/** Drops the page's data channel to `peer`. */
export function dropChannel(page: Page, peer: string): Promise<void> {
  return page.evaluate((p) => (globalThis as unknown as FilesHook).p2pchat.dropChannel(p), peer);
}

/** Attaches the file at `path` in the open chat, as a user picking it would. */
export async function attachFile(page: Page, path: string): Promise<void> {
  const input = await page.waitForSelector('[data-testid="file-input"]');
  if (!input) throw new Error("no file input");
  await (input as unknown as { uploadFile(path: string): Promise<void> }).uploadFile(path);
}

/** Waits until the page knows a transfer matching `pick`; returns it. */
export function waitForTransfer(
  page: Page,
  what: string,
  pick: (t: ShownTransfer) => boolean,
  timeoutMs = 60_000,
): Promise<ShownTransfer> {
  return waitFor(what, async () => (await transfers(page)).find(pick), timeoutMs, 100);
}

/** The SHA-256 of `bytes`, base64url. */
export async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return btoa(String.fromCharCode(...hash)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}

/** `n` random bytes. */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** A PNG of `w`×`h` drawn in `page` (a gradient), as bytes. */
export async function makePng(page: Page, w: number, h: number): Promise<Uint8Array<ArrayBuffer>> {
  const b64 = await page.evaluate(
    async (width, height) => {
      const canvas = new OffscreenCanvas(width, height);
      const ctx = canvas.getContext("2d")!;
      const g = ctx.createLinearGradient(0, 0, width, height);
      g.addColorStop(0, "#c33");
      g.addColorStop(1, "#33c");
      ctx.fillStyle = g;
      ctx.fillRect(0, 0, width, height);
      const bytes = new Uint8Array(await (await canvas.convertToBlob()).arrayBuffer());
      let s = "";
      for (let i = 0; i < bytes.length; i += 0x8000) {
        s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      }
      return btoa(s);
    },
    w,
    h,
  );
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
