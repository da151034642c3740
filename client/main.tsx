/**
 * Browser entry point: wires the real collaborators (WebSocket session to this page's origin,
 * simple-peer links, sql.js + IndexedDB history) into the chat model, renders the app, registers
 * the service worker, and installs the test/benchmark hook `window.p2pchat`.
 *
 * `window.p2pchat` (for e2e tests and `bench:latency`):
 * - `username(): string | null` — the logged-in user of this tab.
 * - `isChannelOpen(peer): boolean` — whether the data channel to `peer` is open.
 * - `selectedCandidates(peer)` — the candidate types (`host`, `srflx`, `relay`) of the open
 *   channel to `peer`, from `getStats` (null without one).
 * - `dcOpenedAt: Record<string, number>` — `performance.now()` when the channel to each peer
 *   (last) opened.
 * - `pingPeer(peer, n): Promise<number[]>` — `n` sequential ping/pong round trips in ms over the
 *   data channel (waits up to 5 s for it to open; rejects if it does not).
 * - `pingRelay(peer, n): Promise<number[]>` — the same through the servers (`relay` frames whose
 *   payload is the JSON ping/pong).
 * - `messages(peer): Promise<MessageRow[]>` — the stored conversation with `peer`, ordered.
 * - `openChat(peer)`, `send(text)` — the UI actions, for scripted use.
 * - `sendRaw(text)` — sends `text` unchanged, as a hostile client could (message_ops.ts).
 * - `rejectedCount(): number` — peer messages rejected as malformed or forged.
 * - `seedHistory(peer, n, prefix)` — adds `n` delivered messages with `peer` (texts
 *   `${prefix} ${i}`, older than any live one) to the logged-in user's history in one import,
 *   to build long histories quickly; resolves how many were new.
 * - `historyDigest(): Promise<{count, digest}>` — the whole stored history, as a count and a
 *   SHA-256 over every row's fields, newest first (two devices with the same history agree).
 * - `historyDbs(): Promise<string[]>` — names of this origin's IndexedDB databases.
 * - `readOnlyDigest()` — the same digest over the read-only copy kept after a hand-over.
 * - `setKeepCopy(value)` — the "keep a read-only copy" setting.
 * - `files()` — every file transfer this session knows (progress, status), by file id.
 * - `fileDigest(id)` — SHA-256 (base64url) of file `id` as stored on this device, or null.
 * - `dropChannel(peer)` — drops the data channel to `peer` (an interrupted transfer).
 * The receiving side answers pings automatically on both paths.
 */
import { render } from "preact";
import { effect } from "@preact/signals";
import SimplePeer from "simple-peer";
import { createChatModel } from "./chat_model.ts";
import { History, openIdbRowStore } from "./history.ts";
import { createIdbKeyStore } from "./keyring.ts";
import { createSimplePeerLinkFactory, type SimplePeerConstructor } from "./simple_peer_link.ts";
import { Session } from "./session.ts";
import { loadSqlJs } from "./sql_loader.ts";
import { App } from "./ui/app.tsx";
import { makeThumbnail } from "./ui/attachment.tsx";
import { openIdbFileStore } from "./file_store.ts";
import type { FileProgress } from "./file_transfer.ts";
import { loadNotificationSettings, notificationFor, openChatRequest } from "./notifications.ts";
import type { MessageRow } from "./history.ts";
import type { SelectedCandidates } from "./peer_link.ts";

/** The hook installed on `window.p2pchat`. */
export interface P2pChatHook {
  username(): string | null;
  isChannelOpen(peer: string): boolean;
  /** The candidate types of the open data channel to `peer`, from `getStats` (null: none). */
  selectedCandidates(peer: string): Promise<SelectedCandidates | null>;
  readonly dcOpenedAt: Record<string, number>;
  pingPeer(peer: string, n: number): Promise<number[]>;
  pingRelay(peer: string, n: number): Promise<number[]>;
  messages(peer: string): Promise<MessageRow[]>;
  openChat(peer: string): void;
  send(text: string): Promise<void>;
  /** Sends `text` unchanged, as a hostile client could (message_ops.ts forms included). */
  sendRaw(text: string): Promise<void>;
  rejectedCount(): number;
  seedHistory(peer: string, n: number, prefix: string): Promise<number>;
  historyDigest(): Promise<{ count: number; digest: string }>;
  historyDbs(): Promise<string[]>;
  readOnlyDigest(): Promise<{ count: number; digest: string }>;
  setKeepCopy(value: boolean): void;
  files(): Record<string, FileProgress>;
  fileDigest(id: string): Promise<string | null>;
  dropChannel(peer: string): void;
}

const session = new Session(
  { openSocket: (url) => new WebSocket(url), storage: sessionStorage },
  { homeServer: location.origin },
);

/** localStorage key of why this browser was last signed out without asking. */
const SIGNED_OUT_KEY = "p2pchat.signedOut";

let sqlJs: ReturnType<typeof loadSqlJs> | null = null;

const model = createChatModel({
  session,
  createLink: createSimplePeerLinkFactory(SimplePeer as SimplePeerConstructor),
  async openHistory(owner) {
    sqlJs ??= loadSqlJs(new URL("sql-wasm.wasm", location.href).href);
    return History.open({ sql: await sqlJs, openStore: openIdbRowStore }, owner);
  },
  keyStore: createIdbKeyStore(),
  deviceStorage: localStorage,
  openFileStore: openIdbFileStore,
  thumbnail: makeThumbnail,
  isVisible: () => document.visibilityState === "visible",
  onNewMessages(from, count, latest) {
    if (document.visibilityState !== "hidden") return;
    const settings = loadNotificationSettings(localStorage);
    if (!settings.enabled || !("Notification" in globalThis)) return;
    if (Notification.permission !== "granted") return;
    const shown = settings.showText ? latest() : null;
    const { title, options } = notificationFor(from, count, shown, settings.showText);
    void navigator.serviceWorker?.getRegistration().then(async (reg) => {
      if (reg) await reg.showNotification(title, options);
      else new Notification(title, options);
    }).catch((err) => console.warn("Notification not shown:", err));
  },
  signedOutNote: {
    load: () => localStorage.getItem(SIGNED_OUT_KEY),
    save(text) {
      if (text === null) localStorage.removeItem(SIGNED_OUT_KEY);
      else localStorage.setItem(SIGNED_OUT_KEY, text);
    },
  },
});

const hook: P2pChatHook = {
  username: () => model.me.value,
  isChannelOpen: (peer) => model.isChannelOpen(peer),
  selectedCandidates: (peer) => model.selectedCandidates(peer),
  get dcOpenedAt() {
    return model.dcOpenedAt();
  },
  pingPeer: (peer, n) => model.pingPeer(peer, n),
  pingRelay: (peer, n) => model.pingRelay(peer, n),
  messages: (peer) => Promise.resolve(model.messagesWith(peer)),
  openChat: (peer) => model.openChat(peer),
  send: (text) => model.send(text),
  sendRaw: (text) => model.sendRaw(text),
  rejectedCount: () => model.rejected.count,
  seedHistory(peer, n, prefix) {
    const me = model.me.value ?? "";
    const base = Date.now() - 1_000_000_000;
    const rows: MessageRow[] = Array.from({ length: n }, (_, i) => {
      const mine = i % 2 === 0;
      return {
        id: `seed-${prefix}-${String(i).padStart(7, "0")}`,
        peer,
        sender: mine ? me : peer,
        recipient: mine ? peer : me,
        sentAt: base + i * 10,
        receivedAt: mine ? null : base + i * 10 + 5,
        text: `${prefix} ${i}`,
        via: "p2p",
        status: "delivered",
      };
    });
    return model.importHistory(rows);
  },
  historyDigest: () => digestOf(model.allMessages()),
  readOnlyDigest: () => digestOf(model.readOnlyMessages()),
  setKeepCopy: (value) => model.setKeepCopy(value),
  files: () => model.files.value?.progress.value ?? {},
  async fileDigest(id) {
    const bytes = await model.files.value?.content(id);
    if (!bytes) return null;
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return btoa(String.fromCharCode(...hash)).replaceAll("+", "-").replaceAll("/", "_")
      .replaceAll("=", "");
  },
  dropChannel: (peer) => model.dropChannel(peer),
  async historyDbs() {
    return (await indexedDB.databases()).map((d) => d.name ?? "");
  },
};
(globalThis as unknown as { p2pchat: P2pChatHook }).p2pchat = hook;

/** A count and a SHA-256 over every field of `rows` (two devices with the same history agree). */
async function digestOf(rows: MessageRow[]): Promise<{ count: number; digest: string }> {
  const text = rows.map((r) =>
    [r.id, r.peer, r.sender, r.recipient, r.sentAt, r.receivedAt, r.text, r.via, r.status]
      .join("\u0000")
  ).join("\n");
  const hash = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const digest = [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return { count: rows.length, digest };
}

model.start();
render(<App model={model} />, document.getElementById("app")!);

// Unread messages in the page title (the tab and the installed app's window show it).
effect(() => {
  const unread = Object.values(model.unread.value).reduce((a, b) => a + b, 0);
  document.title = unread > 0 ? `(${unread}) P2P-Chat` : "P2P-Chat";
});

// Back in view: what the open chat shows now has been read.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") model.pageVisible();
});

// A clicked notification opens its conversation: in this window (the service worker's message),
// or in a new one (`?chat=` in the address, once signed in).
navigator.serviceWorker?.addEventListener("message", (e) => {
  const peer = openChatRequest(e.data);
  if (peer) model.openChat(peer);
});
const chatInAddress = openChatRequest({
  type: "p2pchat-chat",
  peer: new URLSearchParams(location.search).get("chat"),
});
if (chatInAddress) {
  const stop = effect(() => {
    if (!model.me.value) return;
    model.openChat(chatInAddress);
    queueMicrotask(() => stop());
  });
}

if ("serviceWorker" in navigator && location.protocol !== "file:") {
  navigator.serviceWorker.register("sw.js").catch((err) => {
    console.warn("Service worker not registered:", err);
  });
}
