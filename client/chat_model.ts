/**
 * The client's view model: signals the views render and actions they call (house style: "client
 * state in models, views thin"). It is a thin facade: logging in and out, unlocking keys, and
 * routing the servers' events to the current {@link UserSession}, which owns everything a
 * logged-in session does (history, links, outbox, inbox, pings) and ends it all on disposal. The
 * session-scoped signals here (contacts, the open conversation, unread counts…) read the current
 * session's, so a disposed session is no longer shown. All I/O (server session, peer links,
 * history storage, clocks) comes in through {@link ChatModelDeps}, so two models can be wired
 * together through fakes in a unit test.
 *
 * End-to-end encryption (DESIGN §4, `keyring.ts`): registration generates the user's key pairs
 * and sends them with the private halves wrapped by the password's wrapping key; login unwraps
 * them; a reload takes them (non-extractable) from the key store. There is no plaintext path: an
 * account without keys cannot log in here, a contact without keys cannot be written to, and a
 * contact whose keys changed cannot be written to until the user compares the safety number and
 * accepts them (`trust`, `safetyCheck`, `acceptKeys`).
 */
import { batch, computed, signal } from "@preact/signals";
import {
  type ContactEntry,
  type IceServer,
  isValidUsername,
  MAX_TEXT_LENGTH,
  SECRET_RULE,
  type SignalData,
  USERNAME_RULE,
} from "../shared/mod.ts";
import type { UserKeyPairs } from "../shared/crypto/mod.ts";
import { newCredentials, passwordLogin } from "./auth.ts";
import { HandoverController, type HandoverState } from "./handover_controller.ts";
import { DeferredHandover, type DeferredHandoverOptions } from "./deferred_handover.ts";
import type { History, MessageRow, SearchHit } from "./history.ts";
import type { DiscardedMessage } from "./inbox.ts";
import { foldOps, type MessageBody, type MessageView, plainText } from "./message_ops.ts";
import { MessageWindow } from "./message_window.ts";
import {
  type ContactTrust,
  createAccountKeys,
  createMemoryKeyStore,
  KeysLockedError,
  type KeyStore,
  type OwnKeys,
  type PublicKeys,
  type SafetyCheck,
  unlockAccountKeys,
} from "./keyring.ts";
import type { PeerLinkFactory, SelectedCandidates } from "./peer_link.ts";
import {
  type ConnectionStatus,
  ServerError,
  type SessionApi,
  type SessionInfo,
  type TabStorage,
} from "./session.ts";
import {
  READ_RECEIPTS_KEY,
  UserSession,
  type UserSessionDeps,
  type UserSessionOptions,
} from "./user_session.ts";

export type { ContactTrust, DiscardedMessage, HandoverState, SafetyCheck };

/** What a login into an account without keys says: nothing could be sent or read safely. */
export const NO_KEYS_TEXT = "This account has no keys (it was made before encryption): it " +
  "cannot be used, since every message must be encrypted. Please register a new account.";

/**
 * Largest message text in UTF-8 bytes: its sealed envelope (base64url ciphertext plus two
 * wrapped keys and a signature) must fit the servers' 16 KiB relay and mailbox limits.
 */
export const MAX_TEXT_BYTES = 10_000;

const SIGNED_IN_ELSEWHERE = "Signed in elsewhere.";

/** Collaborators of the chat model. */
export interface ChatModelDeps {
  /** The WebSocket session with the servers. */
  session: SessionApi;
  /** Creates direct links to other browsers. */
  createLink: PeerLinkFactory;
  /** Opens the local history of a user. */
  openHistory(owner: string): Promise<History>;
  /** Wall clock, ms since the epoch. @default Date.now */
  now?(): number;
  /** Monotonic clock for round-trip measurements, ms. @default performance.now */
  monotonic?(): number;
  /** Where the unlocked private keys and contacts' known keys are kept. @default memory */
  keyStore?: KeyStore;
  /** Generates a user's key pairs at registration. @default generateUserKeys */
  generateKeys?(): Promise<UserKeyPairs>;
  /**
   * Keeps why this device was last signed out without asking (and what became of its history),
   * so that a reload still says it. @default memory only
   */
  signedOutNote?: SignedOutNote;
  /**
   * This device's lasting state (localStorage in the browser): the keep-a-copy setting, a
   * deferred hand-over still awaited, a read-only copy kept. @default memory only
   */
  deviceStorage?: TabStorage;
  /** New messages from `from` were stored (see {@link UserSessionDeps.onNewMessages}). */
  onNewMessages?(from: string, count: number, latest: () => MessageRow | null): void;
  /** Whether the user can see the page now (read receipts wait for it). @default always */
  isVisible?(): boolean;
  /** Files: see {@link UserSessionDeps.openFileStore} and {@link UserSessionDeps.thumbnail}. */
  openFileStore?: UserSessionDeps["openFileStore"];
  thumbnail?: UserSessionDeps["thumbnail"];
}

/** Where the reason of the last sign-out is kept across reloads (localStorage in the browser). */
export interface SignedOutNote {
  load(): string | null;
  save(text: string | null): void;
}

/** Configuration of the chat model (the session's timings, and the hand-over's margin). */
export interface ChatModelOptions extends UserSessionOptions {
  /**
   * How much of the servers' hand-over grace the old device uses, leaving the rest as a margin
   * for the last messages, ms. @default 2000
   */
  handoverMarginMs?: number;
  /** Retries of a deferred hand-over claim (old device). */
  deferred?: DeferredHandoverOptions;
}

/** What the new device says while its history waits on the offline old device. */
export const DEFERRED_TEXT = "Your history is on your other device, which is offline: it will " +
  "move here automatically when that device is next online (open the app there).";

/** The offline banner: no server answers, the history shown is this device's own. */
export const OFFLINE_TEXT = "Offline: no server is reachable. Your history is read from this " +
  "device; messages you write wait here and go out when a server is back. Retrying…";

/** Shown while the servers answer `unavailable` for this account (its copies are down). */
export const ACCOUNT_UNREACHABLE_TEXT =
  "The servers holding your account are unreachable, retrying…";

/**
 * How long the connection may stay down before the offline banner shows, ms (a reload's own
 * connect and resume take less, so the banner does not flash on every start).
 */
const OFFLINE_AFTER_MS = 600;

/** Longest total wait of a login that the servers answer `unavailable`, ms. */
const LOGIN_RETRY_FOR_MS = 120_000;

/** What the new device says when the user's previous device signed out (no hand-over comes). */
export const SIGNED_OUT_TEXT = "Your other device signed out: the history it holds stayed " +
  "there and will not move here.";

const KEEP_COPY_KEY = "p2pchat.keepCopy";
const READ_ONLY_KEY = "p2pchat.readOnlyCopy";
const deferredKey = (user: string) => `p2pchat.handoverDeferred.${user}`;

/**
 * A history kept read-only on this device after it was handed over, as shown: the shown part of
 * its open conversation is in {@link ChatModel.readOnlyChat}.
 */
export interface ReadOnlyCopy {
  user: string;
  /** The conversations it holds. */
  peers: string[];
  /** The conversation shown. */
  peer: string | null;
}

/** A stored session cannot open without a server: this device does not hold its keys. */
class OfflineStartError extends Error {
  override name = "OfflineStartError";
}

function memoryStorage(): TabStorage {
  const m = new Map<string, string>();
  return {
    getItem: (k) => m.get(k) ?? null,
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
}

/** The chat model: signals to render and actions to call. */
export type ChatModel = ReturnType<typeof createChatModel>;

const NONE = {} as Record<string, never>;
const NO_CONTACTS: ContactEntry[] = [];
const NO_NAMES: string[] = [];
const NO_MESSAGES: MessageRow[] = [];
const NO_VIEWS: ReadonlyMap<string, MessageView> = new Map();

/** Creates the chat model. Call `start()` once to connect (and resume a stored session). */
export function createChatModel(deps: ChatModelDeps, options: ChatModelOptions = {}) {
  const session = deps.session;
  const now = deps.now ?? (() => Date.now());
  const monotonic = deps.monotonic ?? (() => performance.now());
  const handoverMarginMs = options.handoverMarginMs ?? 2_000;
  const keyStore = deps.keyStore ?? createMemoryKeyStore();

  // --- state -------------------------------------------------------------------------------
  /** The logged-in session, or null on the login screen. */
  const current = signal<UserSession | null>(null);
  /** Connection to the servers. */
  const status = signal<ConnectionStatus>(session.status);
  /** The last error to show the user (a sentence), or null. */
  const error = signal<string | null>(null);
  /**
   * Why the user was signed out without asking (a newer login elsewhere, a refused session), shown
   * on the login screen; null otherwise.
   */
  const note = deps.signedOutNote ?? { load: () => null, save: () => {} };
  const signedOutReason = signal<string | null>(note.load());
  /** A login/register request is in flight. */
  const busy = signal(false);
  /** A stored session is being resumed (after a reload). */
  const restoring = signal(session.storedSession() !== null);
  /**
   * No server has answered for a while (the connection is down, or the servers holding the
   * account answer `unavailable`): the banner text, or null while connected.
   */
  const offlineNotice = signal<string | null>(null);
  /** The servers answered `unavailable` for this account since the last successful resume. */
  let accountUnreachable = false;
  let offlineTimer: ReturnType<typeof setTimeout> | undefined;
  /** Shows the offline banner once the connection stayed down {@link OFFLINE_AFTER_MS}. */
  function watchConnection(s: ConnectionStatus): void {
    if (s === "online" || s === "connected") {
      // A server answers (`connected`: the session is being resumed, or there is none).
      clearTimeout(offlineTimer);
      offlineTimer = undefined;
      if (s === "online") accountUnreachable = false;
      offlineNotice.value = accountUnreachable ? ACCOUNT_UNREACHABLE_TEXT : null;
      return;
    }
    if (accountUnreachable) offlineNotice.value = ACCOUNT_UNREACHABLE_TEXT;
    if (offlineTimer !== undefined || offlineNotice.value !== null) return;
    offlineTimer = setTimeout(() => {
      offlineTimer = undefined;
      if (session.status === "connecting" || session.status === "offline") {
        offlineNotice.value = accountUnreachable ? ACCOUNT_UNREACHABLE_TEXT : OFFLINE_TEXT;
      }
    }, OFFLINE_AFTER_MS);
  }
  /** What a long login/register step is doing ("Generating your keys…"), or null. */
  const progress = signal<string | null>(null);
  /** The history hand-over in progress or just ended on this device, or null. */
  const handover = signal<HandoverState | null>(null);
  /** Peer messages and mailbox entries rejected as malformed or forged (tests, diagnostics). */
  const rejected = { count: 0 };
  const device = deps.deviceStorage ?? memoryStorage();
  /** The setting: keep a read-only copy of the history here when signing in elsewhere. */
  const keepCopy = signal(device.getItem(KEEP_COPY_KEY) === "1");
  const readReceipts = signal(device.getItem(READ_RECEIPTS_KEY) !== "off");
  /** The read-only copy kept on this device, once opened, or null. */
  const readOnly = signal<ReadOnlyCopy | null>(null);
  let readOnlyHistory: History | null = null;
  const readOnlyViews = signal<ReadonlyMap<string, MessageView>>(NO_VIEWS);
  /**
   * The shown part of the copy's open conversation: the same bounded window, read by keyset
   * pages, as the chat's (message_window.ts), so a copy of 100,000 opens like a chat.
   */
  const readOnlyWindow = new MessageWindow({
    page: (...args) => readOnlyHistory?.page(...args) ?? [],
  }, (peer, rows) => {
    const h = readOnlyHistory;
    const user = readOnly.peek()?.user;
    readOnlyViews.value = peer && h && user
      ? foldOps(rows, h.ops(peer), user, (id) => h.get(id))
      : NO_VIEWS;
  });
  /** Runs `fn` with the copy's open conversation, if one is open. */
  const inReadOnlyChat = <T>(fn: (peer: string) => T, none: T): T => {
    const peer = readOnly.peek()?.peer;
    return peer && readOnlyHistory ? fn(peer) : none;
  };

  /** The ICE servers of the latest session: a hand-over between NATed devices needs them too. */
  let iceServers: IceServer[] = [];
  const handovers = new HandoverController({
    session,
    createLink: (options, handlers) =>
      deps.createLink({ ...options, iceServers: options.iceServers ?? iceServers }, handlers),
    keyStore,
    state: handover,
    keepCopy: () => keepCopy.value,
    openFileStore: deps.openFileStore,
    onKeptCopy(user) {
      device.setItem(READ_ONLY_KEY, user);
      void openReadOnly();
    },
  });
  const deferred = new DeferredHandover({
    session,
    keyStore,
    openHistory: deps.openHistory,
    handovers,
    state: handover,
  }, { marginMs: handoverMarginMs, ...options.deferred });
  /** The claim of a deferred hand-over running on the login screen, if any. */
  let claiming: AbortController | null = null;
  // The new device keeps saying where its history is until it arrived (a reload too).
  handover.subscribe((h) => {
    const me = current.peek()?.me;
    if (!me || h?.role !== "receiving") return;
    if (h.phase === "transferring" || h.phase === "done") device.removeItem(deferredKey(me));
    if (h.phase === "failed") device.setItem(deferredKey(me), h.text);
  });
  // A superseded device says, after a reload too, why it is signed out and where its history is.
  handover.subscribe((h) => {
    if (h?.role !== "sending" || (h.phase !== "done" && h.phase !== "failed")) return;
    note.save(`${signedOutReason.value ?? SIGNED_IN_ELSEWHERE} ${h.text}`);
  });
  /**
   * The wrapping key derived from the password at login (memory only, non-extractable): it
   * unwraps the user's private keys. Null after logout, and after a reload (the session resumes
   * without the password).
   */
  let wrappingKey: CryptoKey | null = null;
  /** The keys unlocked by a login or register in this page, for the session it starts. */
  let unlocked: { user: string; keys: OwnKeys } | null = null;
  /** The session being entered, and how to abandon it (a logout meanwhile). */
  let entering: { promise: Promise<void>; abort: AbortController; offline: boolean } | null = null;
  /** Signals that came before the session was entered (a hand-over offer can beat the login). */
  let early: Array<{ from: string; data: SignalData }> = [];
  /** `sentAt` of the last message sent from this page. */
  let lastSentAt = 0;

  function fail(err: unknown): void {
    error.value = err instanceof Error ? err.message : String(err);
  }

  // --- session events ----------------------------------------------------------------------
  session.events = {
    onStatus(s) {
      status.value = s;
      watchConnection(s);
    },
    onResumeUnavailable() {
      // Not a refusal: the session stays, and the session retries by itself.
      accountUnreachable = true;
      offlineNotice.value = ACCOUNT_UNREACHABLE_TEXT;
    },
    onPresence(username, online) {
      current.value?.setPresence(username, online);
    },
    onSignal(from, data) {
      if (handovers.handleSignal(from, data)) return;
      const s = current.value;
      if (s && from === s.me) return s.handleSignal(from, data);
      if (entering || (!s && (busy.value || restoring.value))) {
        // Logging in: keep a few, for the hand-over offer of this user's superseded device.
        if (early.length < 100) early.push({ from, data });
        return;
      }
      s?.handleSignal(from, data);
    },
    onRelay(from, payload) {
      current.value?.receiveRelay(from, payload);
    },
    onResumed(info) {
      void enter(info).catch((err) => {
        if (err instanceof KeysLockedError) signOut(err.message);
        else fail(err);
      });
    },
    onSessionLost(reason) {
      // Refused because a login elsewhere replaced the session while this device was offline
      // (asleep, say): the history and keys stay, so that it can claim the hand-over it owes.
      const replaced = /replaced by a newer login/.test(reason);
      if (replaced) current.value?.detachForHandover()?.history.close();
      leave();
      if (replaced) claimDeferred();
      error.value = `Session ended: ${reason}`;
      signedOutReason.value = reason;
      note.save(reason);
    },
    onSuperseded(message, handoverMs) {
      if (!(handoverMs && handoverMs > handoverMarginMs && startHandover(handoverMs))) leave();
      signedOutReason.value = message;
      note.save(message);
    },
    onHandoverClosed() {
      handovers.onConnectionClosed();
    },
    onServerError(code, message) {
      if (code === "peer_offline") void current.value?.peerOffline();
      else error.value = message;
    },
    onMailWaiting() {
      void current.value?.fetchMail();
    },
    onDelivered(by, ids) {
      current.value?.markDelivered(by, ids);
    },
  };

  // --- session lifecycle -------------------------------------------------------------------
  /** Signs this tab out (without the user asking) and says why on the login screen. */
  function signOut(reason: string): void {
    leave();
    session.logout();
    session.start();
    error.value = reason;
    signedOutReason.value = reason;
    note.save(reason);
  }

  /**
   * The unlocked keys for a session of `info.username`: from the login in this page, else from
   * the key store (a reload). Throws {@link KeysLockedError} when this device does not hold them
   * unlocked (the password is needed).
   */
  async function ownKeysFor(info: SessionInfo): Promise<OwnKeys> {
    if (unlocked?.user === info.username) return unlocked.keys;
    const stored = await keyStore.loadOwn(info.username, info.token);
    // A resume carries the public keys only (the device kept its unlocked private keys): the
    // stored ones must be those.
    const publicKeys = info.publicKeys ?? info.keys;
    if (stored && (!publicKeys || stored.encryptionPublic === publicKeys.encryption)) return stored;
    throw new KeysLockedError("Please log in again: your password is needed to unlock your keys");
  }

  /** The unlocked keys this device kept for the stored session `info`, for an offline start. */
  async function storedKeysFor(info: SessionInfo): Promise<OwnKeys> {
    const stored = await keyStore.loadOwn(info.username, info.token);
    if (!stored) throw new OfflineStartError();
    return stored;
  }

  async function enter(info: SessionInfo): Promise<void> {
    const running = current.value;
    if (running?.me === info.username) {
      // Resumed after a failover: refresh presence, pick up mail, send what waited.
      await running.resumed();
      return;
    }
    if (entering?.offline) {
      // An offline start is opening: once open, it catches up with the servers.
      await entering.promise.catch(() => {});
      const opened = current.value;
      if (opened?.me === info.username) return await opened.resumed();
      if (opened === null && !entering) return await open(info, false);
      return;
    }
    if (entering) return entering.promise;
    return await open(info, false);
  }

  /**
   * Offline-first: a session stored in this tab opens at once from this device (history, keys,
   * cached contacts), without waiting for a server to resume it. Not when this device does not
   * hold the session's unlocked keys: the resume (or a new login) decides then.
   */
  async function openOffline(info: SessionInfo): Promise<void> {
    try {
      await open(info, true);
    } catch (err) {
      if (!(err instanceof OfflineStartError)) {
        console.warn(`Could not open the stored session offline: ${(err as Error).message}`);
      }
    }
  }

  /**
   * Opens the session `info`: with `offline`, from this device alone (history, stored keys and
   * cached contacts), before any server answered.
   */
  async function open(info: SessionInfo, offline: boolean): Promise<void> {
    const abort = new AbortController();
    const promise = (async () => {
      const own = offline ? await storedKeysFor(info) : await ownKeysFor(info);
      if (!offline) unlocked = null;
      abort.signal.throwIfAborted();
      const s = await UserSession.open(
        {
          session,
          createLink: deps.createLink,
          openHistory: deps.openHistory,
          keyStore,
          handovers,
          now,
          monotonic,
          // Strictly increasing, so messages sent within one millisecond keep their order.
          nextSentAt: () => lastSentAt = Math.max(now(), lastSentAt + 1),
          onError: fail,
          onRejected: () => rejected.count++,
          onNewMessages: deps.onNewMessages,
          openFileStore: deps.openFileStore,
          thumbnail: deps.thumbnail,
          deviceStorage: device,
          isVisible: deps.isVisible,
          onIceServers: (servers) => iceServers = servers,
        },
        options,
        info,
        own,
        abort.signal,
        offline,
      );
      if (info.handover === "deferred") device.setItem(deferredKey(info.username), DEFERRED_TEXT);
      // A device that signed out owes no hand-over, and will not send one: nothing is awaited.
      if (info.handover === "signed_out") device.removeItem(deferredKey(info.username));
      const awaited = info.handover === "signed_out"
        ? SIGNED_OUT_TEXT
        : device.getItem(deferredKey(info.username));
      batch(() => {
        current.value = s;
        restoring.value = false;
        error.value = null;
        signedOutReason.value = null;
        if (handover.value?.role === "sending") handover.value = null;
        if (awaited && handover.value === null) {
          handover.value = {
            role: "receiving",
            phase: "deferred",
            done: 0,
            total: null,
            text: awaited,
          };
        }
        note.save(null);
      });
    })();
    entering = { promise, abort, offline };
    try {
      await promise;
    } catch (err) {
      // Abandoned by a logout meanwhile: nothing to report.
      if (!abort.signal.aborted) throw err;
    } finally {
      entering = null;
      const waiting = early;
      early = [];
      for (const { from, data } of waiting) session.events.onSignal?.(from, data);
    }
    // An offline start waits for the resume to fetch mail and send (see `enter`).
    if (!abort.signal.aborted && !offline) current.value?.start();
  }

  /**
   * This device was superseded and the servers keep its connection open `graceMs` for the
   * hand-over: the session ends at once (links, flushes, mailbox), handing its history and keys
   * to the hand-over, which deletes the keys only afterwards. Returns false when there is
   * nothing to hand over (no session).
   */
  function startHandover(graceMs: number): boolean {
    const source = current.value?.detachForHandover();
    if (!source) return false;
    leave();
    handovers.startSending(source, graceMs, handoverMarginMs);
    return true;
  }

  /** Ends the current session (and one being entered), back to the login screen. */
  function leave(): void {
    entering?.abort.abort(new DOMException("Logged out", "AbortError"));
    const s = current.value;
    early = [];
    unlocked = null;
    wrappingKey = null;
    batch(() => {
      current.value = null;
      restoring.value = false;
      handover.value = null;
    });
    s?.dispose();
  }

  // --- actions -----------------------------------------------------------------------------
  function checkCredentials(username: string, password: string): void {
    if (!isValidUsername(username)) throw new Error(USERNAME_RULE);
    if (password.length < 8 || password.length > 256) throw new Error(SECRET_RULE);
  }

  async function withBusy(fn: () => Promise<void>): Promise<boolean> {
    busy.value = true;
    error.value = null;
    // A restore that hangs (no server answers) never holds a new login up.
    restoring.value = false;
    if (entering?.offline && current.value === null) {
      entering.abort.abort(new DOMException("Logging in again", "AbortError"));
    }
    try {
      await fn();
      return true;
    } catch (err) {
      fail(err);
      return false;
    } finally {
      busy.value = false;
    }
  }

  /** Enters the session `info` with the keys unlocked by a login or register in this page. */
  async function begin(info: SessionInfo, own: OwnKeys, key: CryptoKey): Promise<void> {
    await keyStore.saveOwn(info.username, info.token, own);
    wrappingKey = key;
    unlocked = { user: info.username, keys: own };
    await enter(info);
  }

  /**
   * Connects to the home server; a session stored in this tab is resumed automatically. Without
   * one, a hand-over this device still owes (its session was replaced while it was offline) is
   * claimed, and a read-only copy kept here is opened.
   */
  function start(): void {
    const stored = session.storedSession();
    if (stored) void openOffline(stored);
    session.start();
    if (device.getItem(READ_ONLY_KEY)) void openReadOnly();
    if (session.storedSession() === null) claimDeferred();
  }

  /** Claims the hand-overs this device still owes, until a login on this page. */
  function claimDeferred(): void {
    if (claiming) return;
    const abort = new AbortController();
    claiming = abort;
    void deferred.run(abort.signal).finally(() => {
      if (claiming === abort) claiming = null;
    });
  }

  function stopClaiming(): void {
    claiming?.abort();
    claiming = null;
  }

  /** Opens the read-only copy kept on this device (after a hand-over with the setting on). */
  async function openReadOnly(): Promise<void> {
    const user = device.getItem(READ_ONLY_KEY);
    if (!user || readOnlyHistory) return;
    try {
      const h = await deps.openHistory(user);
      readOnlyHistory = h;
      readOnly.value = { user, peers: h.peers(), peer: null };
    } catch (err) {
      console.warn(`Could not open the read-only copy: ${(err as Error).message}`);
    }
  }

  function closeReadOnly(): void {
    readOnlyHistory?.close();
    readOnlyHistory = null;
    batch(() => {
      readOnly.value = null;
      readOnlyWindow.reset();
      readOnlyWindow.refresh(null);
    });
  }

  /** Logs in; resolves whether it succeeded (the error is in `error`). */
  function login(username: string, password: string): Promise<boolean> {
    return withBusy(async () => {
      username = username.trim();
      checkCredentials(username, password);
      stopClaiming();
      closeReadOnly();
      device.removeItem(READ_ONLY_KEY);
      const { info, wrappingKey } = await passwordLogin(
        {
          loginParams: (name) => session.loginParams(name),
          login: loginRetrying,
          rekey: (salt, secret, wrapped) => session.rekey(salt, secret, wrapped),
        },
        username,
        password,
      );
      const credentials = { wrappingKey };
      let own: OwnKeys;
      try {
        if (!info.keys) throw new KeysLockedError(NO_KEYS_TEXT);
        own = await unlockAccountKeys(info.keys, credentials.wrappingKey);
      } catch (err) {
        // Logged in, but the messages could not be read: do not stay half signed in.
        session.logout();
        session.start();
        throw err;
      }
      await begin(info, own, credentials.wrappingKey);
    });
  }

  /**
   * Logs in, retrying while the servers answer `unavailable` (the copies of the account are
   * down: not a refusal), for at most {@link LOGIN_RETRY_FOR_MS}; says so meanwhile.
   */
  async function loginRetrying(username: string, secret: string): Promise<SessionInfo> {
    const deadline = now() + LOGIN_RETRY_FOR_MS;
    try {
      for (let delay = 500;; delay = Math.min(delay * 2, 5_000)) {
        try {
          return await session.login(username, secret);
        } catch (err) {
          if (!(err instanceof ServerError && err.code === "unavailable") || now() > deadline) {
            throw err;
          }
          progress.value = ACCOUNT_UNREACHABLE_TEXT;
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    } finally {
      progress.value = null;
    }
  }

  /** Creates an account and logs straight in; resolves whether it succeeded. */
  function register(username: string, password: string): Promise<boolean> {
    return withBusy(async () => {
      username = username.trim();
      checkCredentials(username, password);
      stopClaiming();
      const credentials = await newCredentials(password);
      progress.value = "Generating your keys…";
      let created;
      try {
        created = await createAccountKeys(credentials.wrappingKey, deps.generateKeys);
      } finally {
        progress.value = null;
      }
      await session.register(username, credentials.secret, credentials.salt, created.account);
      const info = await session.login(username, credentials.secret);
      await begin(info, created.own, credentials.wrappingKey);
    });
  }

  /** Logs out of this tab (history stays on this device). */
  function logout(): void {
    leave();
    session.logout();
    session.start();
  }

  /** Opens the conversation with `peer` and starts opening a data channel to them. */
  function openChat(peer: string | null): void {
    current.value?.openChat(peer);
  }

  /** Sends `text` to the open conversation. */
  async function send(text: string): Promise<void> {
    const s = current.value;
    text = plainText(text).trim();
    if (!s || !s.openPeer.value || !text) return;
    if (text.length > MAX_TEXT_LENGTH || new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      error.value = `Message is too long: at most ${MAX_TEXT_LENGTH} characters`;
      return;
    }
    try {
      await s.send(text);
    } catch (err) {
      // Not sealable for the contact (changed or missing keys): say so, nothing was stored.
      fail(err);
    }
  }

  /** Sends a file to the open conversation; a refusal (too large, keys) shows as an error. */
  async function sendFile(file: { name: string; type: string; bytes: Uint8Array<ArrayBuffer> }) {
    const s = current.value;
    if (!s || !s.openPeer.value) return;
    try {
      await s.sendFile(file);
    } catch (err) {
      fail(err);
    }
  }

  /** The current session's `pick`, or `none` without one. */
  function ofSession<T>(pick: (s: UserSession) => T, none: T) {
    return computed(() => {
      const s = current.value;
      return s ? pick(s) : none;
    });
  }

  return {
    /** Files of the current session (issue 15), or null. */
    files: ofSession((s) => s.files, null as UserSession["files"] | null),
    sendFile,
    /** Drops the data channel to `peer` (tests). */
    dropChannel(peer: string): void {
      current.value?.dropChannel(peer);
    },
    /** The setting: keep a read-only copy of the history here after a hand-over. */
    keepCopy,
    /** Sets {@link keepCopy} (kept on this device). */
    setKeepCopy(value: boolean): void {
      keepCopy.value = value;
      if (value) device.setItem(KEEP_COPY_KEY, "1");
      else device.removeItem(KEEP_COPY_KEY);
    },
    /** The read-only copy of a handed-over history kept here, or null. */
    readOnly,
    /** Shows the conversation with `peer` of the read-only copy (its newest page). */
    openReadOnlyChat(peer: string): void {
      const copy = readOnly.value;
      if (!copy || !readOnlyHistory || !copy.peers.includes(peer)) return;
      batch(() => {
        readOnly.value = { ...copy, peer };
        readOnlyWindow.reset();
        readOnlyWindow.refresh(peer);
      });
    },
    /**
     * The shown part of the read-only copy's open conversation and its paging, like the chat's
     * (`messages`, `hasOlder`, `showOlder`…); nothing here writes.
     */
    readOnlyChat: {
      messages: readOnlyWindow.messages,
      hasOlder: readOnlyWindow.hasOlder,
      hasNewer: readOnlyWindow.hasNewer,
      /** Shown messages once their replies, reactions, edits and deletes apply. */
      views: readOnlyViews,
      showOlder: (): boolean => inReadOnlyChat((peer) => readOnlyWindow.showOlder(peer), false),
      showNewer: (): boolean => inReadOnlyChat((peer) => readOnlyWindow.showNewer(peer), false),
      showNewest: (): void => inReadOnlyChat((peer) => readOnlyWindow.showNewest(peer), undefined),
      follow(following: boolean): void {
        readOnlyWindow.following = following;
      },
    },
    /** Every message of the read-only copy, newest first (tests compare devices). */
    readOnlyMessages(): MessageRow[] {
      return readOnlyHistory?.newestFirst() ?? [];
    },
    /** The logged-in user, or null on the login screen. */
    me: ofSession((s) => s.me, null as string | null),
    status,
    /** The user's contacts (kept on this device), with presence, sorted by name. */
    contacts: ofSession((s) => s.contacts.value, NO_CONTACTS),
    /** People not in the contacts who wrote (message requests). */
    requests: ofSession((s) => s.requests.value, NO_NAMES),
    /** Users this user blocked. */
    blocked: ofSession((s) => s.blocked.value, NO_NAMES),
    /**
     * Adds `username` as a contact by exact name (with `keyId`: from their link, which the
     * servers' keys must match). Resolves null when added, else the sentence saying why not.
     */
    async addContact(username: string, keyId?: string): Promise<string | null> {
      const s = current.value;
      if (!s) return "Sign in first";
      try {
        await s.addContact(username, keyId);
        return null;
      } catch (err) {
        return err instanceof Error ? err.message : String(err);
      }
    },
    /** Accepts the message request of `username`: they become a contact. */
    acceptRequest: async (username: string): Promise<void> =>
      await current.value?.acceptRequest(username).catch(fail),
    /** Removes `username` from the contacts. */
    removeContact: async (username: string): Promise<void> =>
      await current.value?.removeContact(username).catch(fail),
    /** Blocks `username`: their messages are dropped unseen, their calls refused. */
    block: async (username: string): Promise<void> =>
      await current.value?.block(username).catch(fail),
    /** Unblocks `username`. */
    unblock: async (username: string): Promise<void> =>
      await current.value?.unblock(username).catch(fail),
    /** The logged-in user's key id, for their add-contact link; null when signed out. */
    async myKeyId(): Promise<string | null> {
      return await current.value?.myKeyId() ?? null;
    },
    /** The user whose conversation is open. */
    openPeer: ofSession((s) => s.openPeer.value, null as string | null),
    /** The open conversation, ordered by send time then id. */
    messages: ofSession((s) => s.messages.value, NO_MESSAGES),
    /** Whether the open conversation has older messages than those shown. */
    hasOlder: ofSession((s) => s.hasOlder.value, false),
    /** Shows a page of older messages (dropping as many newer ones); false if none is older. */
    showOlder(): boolean {
      return current.value?.showOlder() ?? false;
    },
    /** Messages that came in the open conversation while the reader was scrolled up. */
    unseen: ofSession((s) => s.unseen.value, 0),
    /** Whether the open conversation has newer messages than those shown (the reader is back). */
    hasNewer: ofSession((s) => s.hasNewer.value, false),
    /** Shows a page of newer messages (dropping as many older ones); false if none is newer. */
    showNewer(): boolean {
      return current.value?.showNewer() ?? false;
    },
    /** Shows the newest messages of the open conversation again. */
    showNewest(): void {
      current.value?.showNewest();
    },
    /** The reader is at the newest message (new ones move the view along), or is not. */
    follow(following: boolean): void {
      current.value?.follow(following);
    },
    /** Contacts typing now. */
    typing: ofSession((s) => s.typing.value, NONE as Record<string, true>),
    /** Per contact, the send time up to which they have read this user's messages. */
    readUpTo: ofSession((s) => s.readUpTo.value, NONE as Record<string, number>),
    /** The user is typing in the open chat. */
    typingNow(): void {
      current.value?.typingNow();
    },
    /** The user stopped typing. */
    stoppedTyping(): void {
      current.value?.stoppedTyping();
    },
    /** The page became visible. */
    pageVisible(): void {
      current.value?.pageVisible();
    },
    /** Whether this user sends read receipts (a setting of this device). */
    readReceipts,
    setReadReceipts(on: boolean): void {
      device.setItem(READ_RECEIPTS_KEY, on ? "on" : "off");
      readReceipts.value = on;
      if (on) current.value?.pageVisible();
    },
    /** The message to bring into view and mark, or null. */
    focused: ofSession((s) => s.focused.value, null as string | null),
    /** Messages of the local history with every word of `input`, newest first. */
    search(input: string): SearchHit[] {
      return current.value?.search(input) ?? [];
    },
    /** Opens the conversation with `peer` at message `id`; false if it is not there. */
    showMessage(peer: string, id: string): boolean {
      return current.value?.showMessage(peer, id) ?? false;
    },
    error,
    /** The offline banner's text while no server answers for this session, else null. */
    offlineNotice,
    signedOutReason,
    busy,
    restoring,
    /** Users with an open data channel. */
    channels: ofSession((s) => s.channels.value, NONE as Record<string, boolean>),
    /** Unread message counts per contact. */
    unread: ofSession((s) => s.unread.value, NONE as Record<string, number>),
    progress,
    /** Messages refused and discarded (in clear, forged, not from the pinned key), per contact. */
    warnings: ofSession((s) => s.warnings.value, NONE as Record<string, DiscardedMessage[]>),
    /** How each contact's keys stand (pinned, changed and not accepted, none), as looked up. */
    trust: ofSession((s) => s.trust.value, NONE as Record<string, ContactTrust>),
    /** Contacts whose keys changed and were not accepted yet: sending to them is blocked. */
    keyChanged: ofSession(
      (s) =>
        Object.fromEntries(
          Object.values(s.trust.value).filter((t) => t.status === "changed").map((t) => [
            t.contact,
            true,
          ]),
        ),
      NONE as Record<string, boolean>,
    ),
    handover,
    rejected,
    start,
    login,
    register,
    logout,
    openChat,
    send,
    /** Whether the data channel to `peer` is open. */
    isChannelOpen(peer: string): boolean {
      return current.value?.isChannelOpen(peer) ?? false;
    },
    /** The candidate types of the open data channel to `peer` (`srflx`, `relay`…), if any. */
    selectedCandidates(peer: string): Promise<SelectedCandidates | null> {
      return current.value?.selectedCandidates(peer) ?? Promise.resolve(null);
    },
    /** `monotonic()` when the data channel to each user opened. */
    dcOpenedAt(): Record<string, number> {
      return current.value?.dcOpenedAt ?? {};
    },
    /** `n` sequential ping round trips over the data channel, in ms. */
    pingPeer(peer: string, n: number): Promise<number[]> {
      return pingVia(peer, n, "p2p");
    },
    /** `n` sequential ping round trips relayed through the servers, in ms. */
    pingRelay(peer: string, n: number): Promise<number[]> {
      return pingVia(peer, n, "relay");
    },
    /**
     * Whether a login, or work the current session was asked to do, is still in progress (tests
     * wait for this to be false instead of sleeping).
     */
    hasPendingWork(): boolean {
      return entering !== null || busy.value || (current.value?.hasPendingWork ?? false);
    },
    /** The wrapping key of the logged-in user, if they logged in with a password in this page. */
    wrappingKey(): CryptoKey | null {
      return wrappingKey;
    },
    /**
     * Fingerprints of `user`'s public keys (the logged-in user's own included), for comparing
     * out of band; null if the account has no keys.
     */
    async fingerprints(user: string): Promise<PublicKeys | null> {
      return await current.value?.fingerprints(user) ?? null;
    },
    /**
     * The safety number of the logged-in user and `peer` to compare aloud or by QR code: with
     * the keys awaiting acceptance after a change, else the pinned ones; null if none known.
     */
    async safetyCheck(peer: string): Promise<SafetyCheck | null> {
      return await current.value?.safetyCheck(peer) ?? null;
    },
    /**
     * The user compared the safety number for `peer`'s keys `keyId` and accepts them; resolves
     * whether it worked (else the reason is in `error`).
     */
    async acceptKeys(peer: string, keyId: string): Promise<boolean> {
      try {
        await current.value?.acceptKeys(peer, keyId);
        return true;
      } catch (err) {
        fail(err);
        return false;
      }
    },
    /** Shown messages once their replies, reactions, edits and deletes apply. */
    views: ofSession((s) => s.views.value, NO_VIEWS),
    /**
     * Sends a reply, reaction, edit or delete-for-everyone in the open conversation (see
     * message_ops.ts); false (the error shown) if it was refused.
     */
    async sendOp(body: MessageBody): Promise<boolean> {
      try {
        await current.value?.sendOp(body);
        return true;
      } catch (err) {
        fail(err);
        return false;
      }
    },
    /** Deletes a message on this device only. */
    async deleteForMe(id: string): Promise<void> {
      await current.value?.deleteForMe(id).catch(fail);
    },
    /** Sends `text` as it is, markers and all (tests: what a hostile client would send). */
    sendRaw(text: string): Promise<void> {
      return current.value?.send(text) ?? Promise.resolve();
    },
    /** The stored conversation with `peer`. */
    messagesWith(peer: string): MessageRow[] {
      return current.value?.messagesWith(peer) ?? [];
    },
    /** Every stored message of the logged-in user, newest first (tests compare devices). */
    allMessages(): MessageRow[] {
      return current.value?.allMessages() ?? [];
    },
    /**
     * Adds `rows` to the logged-in user's history as a hand-over would (tests and benchmarks
     * build long histories this way); resolves how many were new.
     */
    importHistory(rows: MessageRow[]): Promise<number> {
      const s = current.value;
      if (!s) return Promise.reject(new Error("Cannot import history: not logged in"));
      return s.importHistory(rows);
    },
  };

  function pingVia(peer: string, n: number, via: "p2p" | "relay"): Promise<number[]> {
    const s = current.value;
    if (!s) return Promise.reject(new Error(`Cannot ping "${peer}": not logged in`));
    return s.ping(peer, n, via);
  }
}
