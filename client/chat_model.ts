/**
 * The client's state and actions: who is logged in, contacts with presence, the open
 * conversation, and sending/receiving messages. Views read the signals and call the actions;
 * all I/O (server session, peer links, history storage, clocks) comes in through
 * {@link ChatModelDeps}, so two models can be wired together through fakes in a unit test.
 *
 * Delivery: a message goes over the data channel when it is open (waiting up to
 * `channelWaitMs` for it to open if the contact is online), otherwise through the servers as a
 * `relay` frame; when the contact is offline (or a relay is answered `peer_offline`) it is stored
 * in the contact's mailbox on the servers (`mail_send`, status `sent` = pending). The row's `via`
 * records which path was used. The receiver stores the message (idempotently by id) before
 * answering `ack` on the same path; the ack marks it `delivered`. Mailbox messages are fetched on
 * every session start (login, reload, failover), stored, then acknowledged with `mail_ack`; the
 * servers then tell the sender (`delivered`). While the WebSocket is down, messages that cannot
 * go over an open data channel stay `sending` and go out when the session is back. Messages to
 * one contact go out one flush at a time, in send order.
 * Every incoming peer message is validated (`parseLive`), and a chat message whose
 * `from`/`to` do not match the path it came from is rejected; the same holds for mailbox entries
 * (see `openFromMailbox`).
 *
 * End-to-end encryption (DESIGN §4, `keyring.ts`): registration generates the user's key pairs
 * and sends them with the private halves wrapped by the password's wrapping key; login unwraps
 * them; a reload takes them (non-extractable) from the key store. Chat messages travel on every
 * path as envelopes sealed for the recipient and the sender and signed by the sender; the
 * receiver verifies before storing. An envelope that fails verification is discarded and shown
 * as a warning in the conversation (`warnings`); a mailbox entry is acknowledged all the same,
 * so it does not come back. Accounts without keys (made before keys existed) keep the
 * plaintext path, which is shown (`unencrypted`) and logged.
 */
import { batch, signal } from "@preact/signals";
import {
  type ChatMessage,
  type ContactEntry,
  isValidUsername,
  MAX_MAIL_BATCH,
  MAX_TEXT_LENGTH,
  newMessageId,
  parseLiveFrame,
  PEER_PROTOCOL_VERSION,
  type PeerMessage,
  sealedFrameText,
  SECRET_RULE,
  USERNAME_RULE,
} from "../shared/mod.ts";
import { TamperedEnvelopeError, type UserKeyPairs } from "../shared/crypto/mod.ts";
import { deriveLogin } from "./auth.ts";
import {
  createAccountKeys,
  createMemoryKeyStore,
  Keyring,
  KeysLockedError,
  type KeyStore,
  type OwnKeys,
  type PublicKeys,
  unlockAccountKeys,
} from "./keyring.ts";
import type { History, MessageRow, MessageVia } from "./history.ts";
import {
  handoverKeysOf,
  type HandoverOutcome,
  HistoryReceiver,
  HistorySender,
} from "./handover.ts";
import { openFromMailbox, sealForMailbox } from "./mailbox.ts";
import type { PeerLinkFactory } from "./peer_link.ts";
import { Peers } from "./peers.ts";
import {
  type ConnectionStatus,
  ServerError,
  type SessionApi,
  type SessionInfo,
} from "./session.ts";

/**
 * Largest message text in UTF-8 bytes: its sealed envelope (base64url ciphertext plus two
 * wrapped keys and a signature) must fit the servers' 16 KiB relay and mailbox limits.
 */
export const MAX_TEXT_BYTES = 10_000;

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
}

/** A received message that failed verification and was discarded, as shown to the user. */
export interface DiscardedMessage {
  id: string;
  from: string;
  /** The sender's claimed time, ms since the epoch. */
  sentAt: number;
  /** What to show. */
  text: string;
}

/**
 * The history hand-over between this user's devices (DESIGN §4), as shown to the user: this
 * device `sending` (it was superseded) or `receiving` (it is the new one).
 */
export interface HandoverState {
  role: "sending" | "receiving";
  /** `connecting` until rows move, then `transferring`; `done` or `failed` at the end. */
  phase: "connecting" | "transferring" | "done" | "failed";
  /** Rows handed over (sender) or stored (receiver) so far. */
  done: number;
  /** Rows in the whole transfer (null on the receiver before the first batch). */
  total: number | null;
  /** What to show: a sentence. */
  text: string;
}

/** Configuration of the chat model. */
export interface ChatModelOptions {
  /** How long a send waits for the data channel to an online contact to open, ms. @default 5000 */
  channelWaitMs?: number;
  /** How long one ping waits for its pong, ms. @default 5000 */
  pingTimeoutMs?: number;
  /** Delay before retrying a mailbox send the servers could not take, ms. @default 5000 */
  mailRetryMs?: number;
  /**
   * How long after a contact is seen online our mailbox messages to them that are still not
   * known as delivered are offered again over a data channel (the servers' `delivered` notice may
   * have been lost), ms. @default 10000
   */
  mailboxRecheckMs?: number;
  /**
   * How much of the servers' hand-over grace the old device uses, leaving the rest as a margin
   * for the last messages, ms. @default 2000
   */
  handoverMarginMs?: number;
}

/** The chat model: signals to render and actions to call. */
export type ChatModel = ReturnType<typeof createChatModel>;

/** Creates the chat model. Call `start()` once to connect (and resume a stored session). */
export function createChatModel(deps: ChatModelDeps, options: ChatModelOptions = {}) {
  const session = deps.session;
  const now = deps.now ?? (() => Date.now());
  const monotonic = deps.monotonic ?? (() => performance.now());
  const channelWaitMs = options.channelWaitMs ?? 5_000;
  const pingTimeoutMs = options.pingTimeoutMs ?? 5_000;
  const mailRetryMs = options.mailRetryMs ?? 5_000;
  const mailboxRecheckMs = options.mailboxRecheckMs ?? 10_000;
  const handoverMarginMs = options.handoverMarginMs ?? 2_000;
  const keyStore = deps.keyStore ?? createMemoryKeyStore();

  // --- state -------------------------------------------------------------------------------
  /** The logged-in user, or null on the login screen. */
  const me = signal<string | null>(null);
  /** Connection to the servers. */
  const status = signal<ConnectionStatus>(session.status);
  /** Every other registered user, with presence, sorted by name. */
  const contacts = signal<ContactEntry[]>([]);
  /** The user whose conversation is open. */
  const openPeer = signal<string | null>(null);
  /** The open conversation, ordered by send time then id. */
  const messages = signal<MessageRow[]>([]);
  /** The last error to show the user (a sentence), or null. */
  const error = signal<string | null>(null);
  /**
   * Why the user was signed out without asking (a newer login elsewhere, a refused session), shown
   * on the login screen; null otherwise.
   */
  const signedOutReason = signal<string | null>(null);
  /** A login/register request is in flight. */
  const busy = signal(false);
  /** A stored session is being resumed (after a reload). */
  const restoring = signal(session.storedSession() !== null);
  /** Users with an open data channel. */
  const channels = signal<Record<string, boolean>>({});
  /** Unread message counts per contact. */
  const unread = signal<Record<string, number>>({});
  /** What a long login/register step is doing ("Generating your keys…"), or null. */
  const progress = signal<string | null>(null);
  /** Messages discarded because they failed verification, per contact. */
  const warnings = signal<Record<string, DiscardedMessage[]>>({});
  /** Contacts whose keys changed since they were last seen (this session). */
  const keyChanged = signal<Record<string, boolean>>({});
  /** Contacts known to have no keys: messages with them are not encrypted. */
  const unencrypted = signal<Record<string, boolean>>({});
  /** Whether the logged-in account has keys (false for old accounts: nothing is encrypted). */
  const hasKeys = signal(true);
  /** The history hand-over in progress or just ended on this device, or null. */
  const handover = signal<HandoverState | null>(null);

  let history: History | null = null;
  let peers: Peers | null = null;
  /**
   * The wrapping key derived from the password at login (memory only, non-extractable): it
   * unwraps the user's private keys. Null after logout, and after a reload (the session resumes
   * without the password).
   */
  let wrappingKey: CryptoKey | null = null;
  /** The keys unlocked by a login or register in this page, for the session it starts. */
  let unlocked: { user: string; keys: OwnKeys | null } | null = null;
  let keyring: Keyring | null = null;
  /** The session this model entered (whose unlocked keys are in the key store). */
  let current: SessionInfo | null = null;
  let entering: Promise<void> | null = null;
  let pingSeq = 1;
  /** `sentAt` of the last message sent from this page. */
  let lastSentAt = 0;
  const pongWaiters = new Map<string, () => void>();
  /** The latest queued flush per contact: flushes to one contact run one after another. */
  const flushes = new Map<string, Promise<void>>();
  /** Pending mailbox retries per contact. */
  const retryTimers = new Map<string, ReturnType<typeof setTimeout>>();
  const recheckTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** The mailbox fetch in progress, and whether another one was asked for meanwhile. */
  let fetching: Promise<void> | null = null;
  let fetchAgain = false;
  /** Peer messages and mailbox entries rejected as malformed or forged (tests, diagnostics). */
  const rejected = { count: 0 };
  /** The old device's hand-over, while this device was superseded and hands its history over. */
  let sender: { me: string; run: HistorySender } | null = null;
  /** The new device's acceptor of hand-over channels from its own username. */
  let receiver: HistoryReceiver | null = null;
  /** Signals that came before the session was entered (a hand-over offer can beat the login). */
  let early: Array<{ from: string; data: Record<string, unknown> }> = [];

  // --- session events ----------------------------------------------------------------------
  session.events = {
    onStatus(s) {
      status.value = s;
    },
    onPresence(username, online) {
      if (username === me.value) return;
      const list = contacts.value.filter((c) => c.username !== username);
      list.push({ username, online });
      contacts.value = sortContacts(list);
      // Online: unacknowledged messages go again (data channel or relay). Offline: what was
      // sent directly but never acknowledged goes to their mailbox.
      void flush(username, true);
      if (online) scheduleMailboxRecheck(username);
    },
    onSignal(from, data) {
      if (sender && from === sender.me) return sender.run.handleSignal(data);
      if (me.value && from === me.value) return receiver?.handleSignal(data);
      if (entering || (!me.value && (busy.value || restoring.value))) {
        // Logging in: keep a few, for the hand-over offer of this user's superseded device.
        if (early.length < 100) early.push({ from, data });
        return;
      }
      peers?.handleSignal(from, data);
    },
    onRelay(from, payload) {
      void onPeerText(from, payload, "relay");
    },
    onResumed(info) {
      void enter(info).catch((err) => {
        if (err instanceof KeysLockedError) signOut(err.message);
        else fail(err);
      });
    },
    onSessionLost(reason) {
      leave();
      error.value = `Session ended: ${reason}`;
      signedOutReason.value = reason;
    },
    onSuperseded(message, handoverMs) {
      if (handoverMs && handoverMs > handoverMarginMs && startHandover(handoverMs)) {
        signedOutReason.value = message;
        return;
      }
      leave();
      signedOutReason.value = message;
    },
    onHandoverClosed() {
      sender?.run.stop("The servers closed the connection before the hand-over ended");
    },
    onServerError(code, message) {
      if (code === "peer_offline") void onPeerOffline();
      else error.value = message;
    },
    onMailWaiting() {
      void fetchMail();
    },
    onDelivered(by, ids) {
      void markDelivered(by, ids);
    },
  };

  // --- helpers -----------------------------------------------------------------------------
  function fail(err: unknown): void {
    error.value = err instanceof Error ? err.message : String(err);
  }

  function refresh(): void {
    const peer = openPeer.value;
    messages.value = peer && history ? history.list(peer) : [];
  }

  /** Signs this tab out (without the user asking) and says why on the login screen. */
  function signOut(reason: string): void {
    leave();
    session.logout();
    session.start();
    error.value = reason;
    signedOutReason.value = reason;
  }

  /**
   * The unlocked keys for a session of `info.username`: from the login in this page, else from
   * the key store (a reload). Throws {@link KeysLockedError} when the account has keys but this
   * device does not hold them unlocked (the password is needed).
   */
  async function ownKeysFor(info: SessionInfo): Promise<OwnKeys | null> {
    if (unlocked?.user === info.username) return unlocked.keys;
    if (!info.keys) return null;
    const stored = await keyStore.loadOwn(info.username, info.token);
    if (stored && stored.encryptionPublic === info.keys.encryption) return stored;
    throw new KeysLockedError("Please log in again: your password is needed to unlock your keys");
  }

  async function fetchDirectoryKeys(user: string): Promise<PublicKeys | null> {
    try {
      const keys = await session.getKeys(user);
      if (unencrypted.value[user]) {
        const { [user]: _had, ...rest } = unencrypted.value;
        unencrypted.value = rest;
      }
      return keys;
    } catch (err) {
      if (err instanceof ServerError && err.code === "unknown_user") {
        console.warn(`"${user}" has no keys: messages with them are not encrypted`);
        unencrypted.value = { ...unencrypted.value, [user]: true };
        return null;
      }
      throw err;
    }
  }

  function addWarning(peer: string, w: DiscardedMessage): void {
    const list = warnings.value[peer] ?? [];
    if (list.some((x) => x.id === w.id)) return;
    warnings.value = { ...warnings.value, [peer]: [...list, w] };
    error.value = w.text;
    if (openPeer.value !== peer) {
      unread.value = { ...unread.value, [peer]: (unread.value[peer] ?? 0) + 1 };
    }
  }

  function discarded(from: string, id: string, sentAt: number, err: Error): DiscardedMessage {
    console.warn(`Discarded message ${id} from "${from}": ${err.message}`);
    return {
      id,
      from,
      sentAt,
      text: `A message from ${from} failed verification and was discarded`,
    };
  }

  /** The text sent over the data channel or relay for `row`: sealed, or plaintext (old accounts). */
  async function liveTextOf(k: Keyring, row: MessageRow): Promise<string> {
    const msg = chatMessageOf(row);
    const envelope = await k.seal(msg);
    return envelope ? sealedFrameText(envelope) : JSON.stringify(msg);
  }

  function isOnline(user: string): boolean {
    return contacts.value.some((c) => c.username === user && c.online);
  }

  function sendOn(remote: string, msg: PeerMessage, via: MessageVia): boolean {
    const text = JSON.stringify(msg);
    if (via === "p2p" && peers?.send(remote, text)) return true;
    if (session.status !== "online") return false;
    session.relay(remote, text);
    return true;
  }

  async function enter(info: SessionInfo): Promise<void> {
    if (me.value === info.username) {
      // Resumed after a failover: the links and history are still good; refresh presence, pick
      // up mail, and send what waited for the connection.
      contacts.value = sortContacts(await session.contacts());
      afterSessionStart();
      return;
    }
    if (entering) return entering;
    entering = (async () => {
      const own = await ownKeysFor(info);
      unlocked = null;
      const k = new Keyring({
        me: info.username,
        own,
        store: keyStore,
        fetchKeys: fetchDirectoryKeys,
        onKeyChanged(contact) {
          keyChanged.value = { ...keyChanged.value, [contact]: true };
          error.value = `The key of ${contact} changed: compare fingerprints before trusting it`;
        },
      });
      if (!own) console.warn(`"${info.username}" has no keys: messages are not encrypted`);
      const h = await deps.openHistory(info.username);
      const p = new Peers({
        me: info.username,
        createLink: deps.createLink,
        sendSignal: (to, data) => session.signal(to, data),
        now: monotonic,
      });
      p.events = {
        onOpen(remote) {
          channels.value = { ...channels.value, [remote]: true };
          void flush(remote, true);
        },
        onClose(remote) {
          const { [remote]: _gone, ...rest } = channels.value;
          channels.value = rest;
        },
        onMessage(remote, text) {
          void onPeerText(remote, text, "p2p");
        },
      };
      history = h;
      peers = p;
      keyring = k;
      current = info;
      receiver = own ? await receiverFor(info.username, own, h) : null;
      const list = await session.contacts();
      batch(() => {
        me.value = info.username;
        hasKeys.value = own !== null;
        contacts.value = sortContacts(list);
        restoring.value = false;
        error.value = null;
        signedOutReason.value = null;
        if (handover.value?.role === "sending") handover.value = null;
      });
    })();
    try {
      await entering;
    } finally {
      entering = null;
      const waiting = early;
      early = [];
      for (const { from, data } of waiting) session.events.onSignal?.(from, data);
    }
    afterSessionStart();
  }

  /** Accepts hand-over channels from `self`'s superseded device, importing into `h`. */
  async function receiverFor(self: string, own: OwnKeys, h: History): Promise<HistoryReceiver> {
    const r = new HistoryReceiver({
      me: self,
      keys: await handoverKeysOf(own),
      createLink: deps.createLink,
      sendSignal: (data) => session.signal(self, data),
      onProgress(done, total) {
        handover.value = {
          role: "receiving",
          phase: done < total ? "transferring" : "done",
          done,
          total,
          text: `Receiving history from your other device… ${done}/${total}`,
        };
      },
      async importRows(rows) {
        if (history !== h) throw new Error("Logged out during the hand-over");
        let fresh = 0;
        const toResend = new Set<string>();
        for (const row of rows) {
          if (await h.importRow(row)) fresh++;
          if (row.sender === self && row.status !== "delivered") toResend.add(row.peer);
        }
        if (history !== h) return fresh;
        refresh();
        // What the old device had not got delivered goes out from here now.
        for (const peer of toResend) void flush(peer, true);
        return fresh;
      },
    });
    r.onOutcome = (outcome) => {
      if (receiver !== r) return;
      handover.value = receivedState(outcome);
      if (!outcome.ok) error.value = handover.value.text;
    };
    return r;
  }

  function receivedState(outcome: HandoverOutcome): HandoverState {
    const total = handover.value?.total ?? null;
    return outcome.ok
      ? {
        role: "receiving",
        phase: "done",
        done: outcome.rows,
        total: outcome.rows,
        text: `History received from your other device: ${outcome.rows} messages`,
      }
      : {
        role: "receiving",
        phase: "failed",
        done: handover.value?.done ?? 0,
        total,
        text:
          `History from your other device was refused (${outcome.reason}): what arrived before ` +
          "stays, nothing else was imported. Log in on the other device again to retry",
      };
  }

  /**
   * This device was superseded and the servers keep its connection open `graceMs` for the
   * hand-over: stop being the user's session at once (links, flushes, mailbox), then hand the
   * whole history to the new device and only afterwards delete the unlocked keys. Returns false
   * when there is nothing to hand over with (no session, or an account without keys).
   */
  function startHandover(graceMs: number): boolean {
    const self = me.value;
    const h = history;
    const own = keyring?.own;
    const info = current;
    if (!self || !h || !own || !info) return false;
    // Detach the history and the keys from the model first, so that nothing else (flushes,
    // mailbox, the UI) touches them, and leave() neither closes nor deletes them yet.
    history = null;
    keyring = null;
    current = null;
    leave();
    const rows = h.all();
    const total = rows.length;
    const sending = (done: number, phase: HandoverState["phase"], text: string) => {
      handover.value = { role: "sending", phase, done, total, text };
    };
    sending(0, "connecting", "Signed in elsewhere — handing your history to your new device…");
    const finish = (outcome: HandoverOutcome) => {
      sender = null;
      h.close();
      void keyStore.deleteOwn(info.username, info.token).catch(() => {});
      session.stop();
      if (outcome.ok) {
        sending(total, "done", `Your history (${total} messages) is now on your new device.`);
      } else {
        console.warn(`History hand-over ended: ${outcome.reason}`);
        sending(
          handover.value?.done ?? 0,
          "failed",
          `Your history was not handed over: ${outcome.reason}. It stays on this device; ` +
            "messages waiting on the servers reach your new device anyway",
        );
      }
    };
    void handoverKeysOf(own).then((keys) => {
      const run = new HistorySender({
        me: self,
        keys,
        createLink: deps.createLink,
        sendSignal: (data) => session.signal(self, data),
        onProgress(done) {
          sending(
            done,
            "transferring",
            `Signed in elsewhere — handing your history to your new device… ${done}/${total}`,
          );
        },
      }, rows);
      sender = { me: self, run };
      return run.run(graceMs - handoverMarginMs);
    }).then(finish, (err) => finish({ ok: false, reason: (err as Error).message }));
    return true;
  }

  /** On every session start: fetch the mailbox, and send messages that waited for a session. */
  function afterSessionStart(): void {
    void fetchMail();
    const self = me.value;
    if (!self || !history) return;
    for (const peer of history.peersWithUnsent(self)) void flush(peer);
    // Messages the last session sent to online contacts but never saw acknowledged go again
    // (the receiver ignores a message id it already has, and acknowledges it).
    for (const c of contacts.value) {
      if (!c.online) continue;
      void flush(c.username, true);
      scheduleMailboxRecheck(c.username);
    }
  }

  function leave(): void {
    // The unlocked keys stay on this device only while its session lasts.
    if (current) void keyStore.deleteOwn(current.username, current.token).catch(() => {});
    current = null;
    receiver?.close();
    receiver = null;
    early = [];
    wrappingKey = null;
    unlocked = null;
    keyring = null;
    peers?.destroyAll();
    history?.close();
    peers = null;
    history = null;
    for (const t of retryTimers.values()) clearTimeout(t);
    retryTimers.clear();
    for (const t of recheckTimers.values()) clearTimeout(t);
    recheckTimers.clear();
    for (const w of pongWaiters.values()) w();
    batch(() => {
      me.value = null;
      contacts.value = [];
      openPeer.value = null;
      messages.value = [];
      channels.value = {};
      unread.value = {};
      warnings.value = {};
      keyChanged.value = {};
      unencrypted.value = {};
      restoring.value = false;
      handover.value = null;
    });
  }

  async function onPeerText(remote: string, text: string, via: MessageVia): Promise<void> {
    const self = me.value;
    const h = history;
    const k = keyring;
    if (!self || !h || !k) return;
    let msg: PeerMessage;
    try {
      const live = parseLiveFrame(text);
      if (live.type === "sealed") {
        const env = live.envelope;
        try {
          msg = await k.open(env, remote);
        } catch (err) {
          if (err instanceof TamperedEnvelopeError && env.from === remote && env.to === self) {
            rejected.count++;
            if (history === h) addWarning(remote, discarded(remote, env.id, env.sentAt, err));
            return;
          }
          throw err;
        }
      } else {
        msg = live;
        if (msg.type === "chat") {
          if (msg.from !== remote || msg.to !== self) {
            throw new Error(`it claims ${msg.from} → ${msg.to}`);
          }
          if (!(await k.allowsPlaintext(remote))) {
            throw new Error("an unencrypted chat message from an account with keys");
          }
          console.warn(`Accepted an unencrypted message from "${remote}" (no keys)`);
        }
      }
    } catch (err) {
      rejected.count++;
      console.warn(`Rejected message from "${remote}" via ${via}: ${(err as Error).message}`);
      return;
    }
    if (history !== h) return;
    switch (msg.type) {
      case "chat": {
        const isNew = await h.insert({
          id: msg.id,
          peer: remote,
          sender: remote,
          recipient: self,
          sentAt: msg.sentAt,
          receivedAt: now(),
          text: msg.text,
          via,
          status: "delivered",
        });
        // Acknowledge only once the message is durable; a duplicate is acknowledged again.
        sendOn(remote, { v: PEER_PROTOCOL_VERSION, type: "ack", id: msg.id }, via);
        if (isNew) {
          if (openPeer.value === remote) refresh();
          else unread.value = { ...unread.value, [remote]: (unread.value[remote] ?? 0) + 1 };
        }
        return;
      }
      case "ack": {
        const row = h.get(msg.id);
        // Only the recipient of our message may acknowledge it.
        if (!row || row.sender !== self || row.recipient !== remote) {
          rejected.count++;
          return;
        }
        await h.update(msg.id, { status: "delivered" });
        if (openPeer.value === remote) refresh();
        return;
      }
      case "ping":
        sendOn(remote, { v: PEER_PROTOCOL_VERSION, type: "pong", seq: msg.seq }, via);
        return;
      case "pong":
        pongWaiters.get(`${via}:${remote}:${msg.seq}`)?.();
        return;
    }
  }

  function chatMessageOf(row: MessageRow): ChatMessage {
    return {
      v: PEER_PROTOCOL_VERSION,
      type: "chat",
      id: row.id,
      from: row.sender,
      to: row.recipient,
      sentAt: row.sentAt,
      text: row.text,
    };
  }

  /**
   * Sends this user's undelivered messages to `peer`, after any flush to them already queued.
   * Always takes messages never handed to a path (`sending`, `failed`); with `unacked`, also
   * those sent directly (p2p or relay) but not acknowledged, and — only over a data channel that
   * is open, or that it opens with `openForMailbox` — those waiting in the peer's mailbox, so that
   * the peer's ack marks them
   * delivered even when the servers' `delivered` notice never comes (for example because this
   * user was offline when the peer fetched them). Mailbox messages are never relayed or stored
   * again: the servers hold them until the peer fetches them.
   */
  function flush(peer: string, unacked = false, openForMailbox = false): Promise<void> {
    const next = (flushes.get(peer) ?? Promise.resolve())
      .then(() => flushNow(peer, unacked, openForMailbox))
      .catch((err) => fail(err));
    flushes.set(peer, next);
    void next.then(() => {
      if (flushes.get(peer) === next) flushes.delete(peer);
    });
    return next;
  }

  async function flushNow(peer: string, unacked: boolean, openForMailbox: boolean): Promise<void> {
    const self = me.value;
    const h = history;
    const p = peers;
    const k = keyring;
    if (!self || !h || !p || !k) return;
    const inMailbox = (r: MessageRow) => r.status === "sent" && r.via === "mailbox";
    const wanted = () =>
      h.pending(self, peer).filter((r) =>
        r.status === "sending" || r.status === "failed" ||
        (unacked && r.status === "sent" && r.via !== "mailbox")
      );
    const recheck = () => unacked ? h.pending(self, peer).filter(inMailbox) : [];
    // Mailbox messages not yet known as delivered are offered again over a data channel (opened
    // for them only when asked): their ack marks them delivered if the servers' notice was lost.
    const waiting = () =>
      wanted().length > 0 || (recheck().length > 0 && (openForMailbox || p.isOpen(peer)));
    if (!waiting()) return;
    const done = new Set<string>();
    if (
      p.isOpen(peer) ||
      (isOnline(peer) && await p.waitOpen(peer, channelWaitMs))
    ) {
      if (history !== h) return; // logged out meanwhile
      const rows = h.pending(self, peer).filter((r) =>
        r.status === "sending" || r.status === "failed" || (unacked && r.status === "sent")
      );
      for (const row of rows) {
        const text = await liveTextOf(k, row);
        if (history !== h || !p.send(peer, text)) break;
        done.add(row.id);
        if (!inMailbox(row)) await h.update(row.id, { status: "sent", via: "p2p" });
      }
    }
    if (history !== h) return;
    const rest = wanted().filter((r) => !done.has(r.id));
    if (rest.length > 0 && session.status === "online") {
      if (isOnline(peer)) {
        for (const row of rest) {
          const text = await liveTextOf(k, row);
          if (history !== h) return;
          session.relay(peer, text);
          await h.update(row.id, { status: "sent", via: "relay" });
        }
      } else {
        await sendToMailbox(h, k, peer, rest);
      }
    }
    // Otherwise the WebSocket is down: the rows stay `sending` until the session is back.
    if (history === h && openPeer.value === peer) refresh();
  }

  /** Stores `rows` in `peer`'s mailbox, in batches; on refusal shows the servers' reason. */
  async function sendToMailbox(
    h: History,
    k: Keyring,
    peer: string,
    rows: MessageRow[],
  ): Promise<void> {
    for (let i = 0; i < rows.length; i += MAX_MAIL_BATCH) {
      const chunk = rows.slice(i, i + MAX_MAIL_BATCH);
      try {
        const mail = [];
        for (const r of chunk) {
          mail.push({
            id: r.id,
            sentAt: r.sentAt,
            envelope: await sealForMailbox(chatMessageOf(r), k),
          });
        }
        if (history !== h) return;
        await session.mailSend(peer, mail);
      } catch (err) {
        if (history !== h) return;
        const code = err instanceof ServerError ? err.code : "internal";
        if (code === "disconnected") return; // stays `sending`; sent again on reconnect
        if (code !== "timeout") {
          // Refused (full mailbox, storage unavailable, unknown user): say why, retry later.
          for (const r of rows.slice(i)) await h.update(r.id, { status: "failed" });
          error.value = err instanceof Error ? err.message : String(err);
        }
        if (code !== "unknown_user") scheduleRetry(peer);
        return;
      }
      if (history !== h) return;
      for (const r of chunk) await h.update(r.id, { status: "sent", via: "mailbox" });
    }
  }

  /** Later, if `peer` is still online, offers our undelivered mailbox messages over p2p. */
  function scheduleMailboxRecheck(peer: string): void {
    clearTimeout(recheckTimers.get(peer));
    recheckTimers.set(
      peer,
      setTimeout(() => {
        recheckTimers.delete(peer);
        if (isOnline(peer)) void flush(peer, true, true);
      }, mailboxRecheckMs),
    );
  }

  function scheduleRetry(peer: string): void {
    if (retryTimers.has(peer)) return;
    retryTimers.set(
      peer,
      setTimeout(() => {
        retryTimers.delete(peer);
        void flush(peer);
      }, mailRetryMs),
    );
  }

  /**
   * A relay or signal was answered `peer_offline`: our presence view was stale. Refresh it, and
   * move what went directly to now-offline contacts (unacknowledged) to their mailboxes.
   */
  async function onPeerOffline(): Promise<void> {
    if (!me.value || session.status !== "online") return;
    try {
      contacts.value = sortContacts(await session.contacts());
    } catch {
      return;
    }
    for (const c of contacts.value) if (!c.online) void flush(c.username, true);
  }

  /** Fetches this user's mailbox (again if asked while a fetch runs). */
  function fetchMail(): Promise<void> {
    if (fetching) {
      fetchAgain = true;
      return fetching;
    }
    fetching = (async () => {
      try {
        do {
          fetchAgain = false;
          await fetchMailOnce();
        } while (fetchAgain);
      } catch (err) {
        if (!(err instanceof ServerError && err.code === "disconnected")) fail(err);
      } finally {
        fetching = null;
      }
    })();
    return fetching;
  }

  async function fetchMailOnce(): Promise<void> {
    const self = me.value;
    const h = history;
    const k = keyring;
    if (!self || !h || !k) return;
    const mail = await session.mailFetch();
    if (history !== h) return;
    const fresh = new Map<string, number>();
    for (const m of mail) {
      let msg: ChatMessage;
      try {
        msg = await openFromMailbox(m.envelope, m.from, self, k);
        if (msg.id !== m.id) throw new Error(`Mailbox entry ${m.id} carries message ${msg.id}`);
      } catch (err) {
        rejected.count++;
        if (err instanceof TamperedEnvelopeError) {
          if (history === h) addWarning(m.from, discarded(m.from, m.id, m.sentAt, err));
        } else {
          console.warn(`Rejected mailbox entry from "${m.from}": ${(err as Error).message}`);
        }
        continue;
      }
      if (history !== h) return;
      const isNew = await h.insert({
        id: msg.id,
        peer: msg.from,
        sender: msg.from,
        recipient: self,
        sentAt: msg.sentAt,
        receivedAt: now(),
        text: msg.text,
        via: "mailbox",
        status: "delivered",
      });
      if (isNew) fresh.set(msg.from, (fresh.get(msg.from) ?? 0) + 1);
    }
    if (fresh.size > 0 && history === h) {
      const counts = { ...unread.value };
      for (const [from, n] of fresh) {
        if (openPeer.value !== from) counts[from] = (counts[from] ?? 0) + n;
      }
      unread.value = counts;
      refresh();
    }
    // Everything is durable now: acknowledge all of it, rejected entries included (they would
    // otherwise come back on every login).
    for (let i = 0; i < mail.length; i += MAX_MAIL_BATCH) {
      await session.mailAck(
        mail.slice(i, i + MAX_MAIL_BATCH).map((m) => ({ id: m.id, from: m.from })),
      );
    }
  }

  /** `by` received our messages `ids` from their mailbox. */
  async function markDelivered(by: string, ids: string[]): Promise<void> {
    const self = me.value;
    const h = history;
    if (!self || !h) return;
    for (const id of ids) {
      const row = h.get(id);
      // Only the recipient of our message can have received it.
      if (!row || row.sender !== self || row.recipient !== by) continue;
      await h.update(id, { status: "delivered" });
    }
    if (history === h && openPeer.value === by) refresh();
  }

  async function ping(peer: string, n: number, via: MessageVia): Promise<number[]> {
    if (via === "p2p" && !(await peers?.waitOpen(peer, channelWaitMs))) {
      throw new Error(`Cannot ping "${peer}": no open data channel`);
    }
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const seq = pingSeq++;
      const key = `${via}:${peer}:${seq}`;
      const start = monotonic();
      const answered = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), pingTimeoutMs);
        pongWaiters.set(key, () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      const sent = via === "p2p"
        ? peers?.send(peer, JSON.stringify({ v: PEER_PROTOCOL_VERSION, type: "ping", seq }))
        : sendOn(peer, { v: PEER_PROTOCOL_VERSION, type: "ping", seq }, "relay");
      const ok = sent && await answered;
      pongWaiters.delete(key);
      if (!ok) throw new Error(`Ping ${seq} to "${peer}" via ${via} got no answer`);
      times.push(monotonic() - start);
    }
    return times;
  }

  // --- actions -----------------------------------------------------------------------------
  function checkCredentials(username: string, password: string): void {
    if (!isValidUsername(username)) throw new Error(USERNAME_RULE);
    if (password.length < 8 || password.length > 256) throw new Error(SECRET_RULE);
  }

  async function withBusy(fn: () => Promise<void>): Promise<boolean> {
    busy.value = true;
    error.value = null;
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

  /** Connects to the home server; a session stored in this tab is resumed automatically. */
  function start(): void {
    session.start();
  }

  /** Logs in; resolves whether it succeeded (the error is in `error`). */
  function login(username: string, password: string): Promise<boolean> {
    return withBusy(async () => {
      username = username.trim();
      checkCredentials(username, password);
      const credentials = await deriveLogin(username, password);
      const info = await session.login(username, credentials.secret);
      let own: OwnKeys | null = null;
      try {
        own = info.keys ? await unlockAccountKeys(info.keys, credentials.wrappingKey) : null;
      } catch (err) {
        // Logged in, but the messages could not be read: do not stay half signed in.
        session.logout();
        session.start();
        throw err;
      }
      await begin(info, own, credentials.wrappingKey);
    });
  }

  /** Enters the session `info` with the keys unlocked by a login or register in this page. */
  async function begin(info: SessionInfo, own: OwnKeys | null, key: CryptoKey): Promise<void> {
    if (own) await keyStore.saveOwn(info.username, info.token, own);
    else console.warn(`"${info.username}" has no keys: messages are not encrypted`);
    wrappingKey = key;
    unlocked = { user: info.username, keys: own };
    await enter(info);
  }

  /** Creates an account and logs straight in; resolves whether it succeeded. */
  function register(username: string, password: string): Promise<boolean> {
    return withBusy(async () => {
      username = username.trim();
      checkCredentials(username, password);
      const credentials = await deriveLogin(username, password);
      progress.value = "Generating your keys…";
      let created;
      try {
        created = await createAccountKeys(credentials.wrappingKey, deps.generateKeys);
      } finally {
        progress.value = null;
      }
      await session.register(username, credentials.secret, created.account);
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
    batch(() => {
      openPeer.value = peer;
      if (peer) {
        const { [peer]: _read, ...rest } = unread.value;
        unread.value = rest;
      }
      refresh();
    });
    if (peer && isOnline(peer)) peers?.ensure(peer);
    // Look the contact's keys up now, so a key change or a missing key shows at once.
    if (peer) void keyring?.contactKeys(peer).catch(() => {});
  }

  /** Sends `text` to the open conversation. */
  async function send(text: string): Promise<void> {
    const self = me.value;
    const peer = openPeer.value;
    const h = history;
    text = text.trim();
    if (!self || !peer || !h || !text) return;
    if (text.length > MAX_TEXT_LENGTH || new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
      error.value = `Message is too long: at most ${MAX_TEXT_LENGTH} characters`;
      return;
    }
    const row: MessageRow = {
      id: newMessageId(),
      peer,
      sender: self,
      recipient: peer,
      // Strictly increasing, so messages sent within one millisecond keep their order.
      sentAt: lastSentAt = Math.max(now(), lastSentAt + 1),
      receivedAt: null,
      text,
      via: "p2p",
      status: "sending",
    };
    await h.insert(row);
    refresh();
    await flush(peer);
  }

  return {
    me,
    status,
    contacts,
    openPeer,
    messages,
    error,
    signedOutReason,
    busy,
    restoring,
    channels,
    unread,
    progress,
    warnings,
    keyChanged,
    unencrypted,
    hasKeys,
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
      return peers?.isOpen(peer) ?? false;
    },
    /** `monotonic()` when the data channel to each user opened. */
    dcOpenedAt(): Record<string, number> {
      return peers?.dcOpenedAt ?? {};
    },
    /** `n` sequential ping round trips over the data channel, in ms. */
    pingPeer(peer: string, n: number): Promise<number[]> {
      return ping(peer, n, "p2p");
    },
    /** `n` sequential ping round trips relayed through the servers, in ms. */
    pingRelay(peer: string, n: number): Promise<number[]> {
      return ping(peer, n, "relay");
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
      const k = keyring;
      if (!k) return null;
      return await k.fingerprints(user);
    },
    /** The stored conversation with `peer`. */
    messagesWith(peer: string): MessageRow[] {
      return history?.list(peer, 100_000) ?? [];
    },
  };
}

function sortContacts(list: ContactEntry[]): ContactEntry[] {
  return [...list].sort((a, b) => a.username < b.username ? -1 : a.username > b.username ? 1 : 0);
}
