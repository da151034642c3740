/**
 * One logged-in session of one user in this page: from the moment the servers accept a login or
 * a resume until logout, supersession or a lost session. It owns everything that lives that
 * long — the local history, the keyring, the direct links ({@link Peers}), the delivery engine
 * ({@link Outbox}), the incoming path ({@link Inbox}), the hand-over receiver, pings and timers —
 * and the session-scoped state the views show (contacts, the open conversation, unread counts,
 * warnings). {@link UserSession.dispose} ends all of it at once: an `AbortController` underneath
 * stops timers and in-flight requests, closes links and the history, and deletes the unlocked
 * keys. A disposed session is no longer shown, and nothing it started writes the page's state.
 */
import { batch, signal } from "@preact/signals";
import {
  type ContactEntry,
  type IceServer,
  newMessageId,
  PEER_PROTOCOL_VERSION,
  type PeerMessage,
  type SignalData,
} from "../shared/mod.ts";
import { abortable } from "./abortable.ts";
import {
  addContact,
  blockUser,
  type ContactBook,
  EMPTY_BOOK,
  noteRequest,
  removeContact,
  senderKind,
  unblockUser,
} from "./contacts.ts";
import type { HandoverController, HandoverSource } from "./handover_controller.ts";
import type { HistoryReceiver } from "./handover.ts";
import type { History, MessageRow, MessageVia, SearchHit } from "./history.ts";
import { type DiscardedMessage, Inbox } from "./inbox.ts";
import {
  type ContactTrust,
  Keyring,
  type KeyStore,
  type OwnKeys,
  type PublicKeys,
  type SafetyCheck,
  UntrustedKeysError,
} from "./keyring.ts";
import { Outbox, type OutboxOptions } from "./outbox.ts";
import {
  bodyOf,
  cleanSnippet,
  encodeBody,
  foldOps,
  HIDDEN_TEXT,
  type MessageBody,
  MessageOpError,
  MessageOps,
  type MessageView,
} from "./message_ops.ts";
import { keyIdOf, trustStatus } from "./trust.ts";
import type { PeerLinkFactory, SelectedCandidates } from "./peer_link.ts";
import { Peers } from "./peers.ts";
import { MESSAGE_PAGE, MESSAGE_WINDOW, MessageWindow, type WindowPart } from "./message_window.ts";
import { FileTransfers, maxFileBytes, type ThumbnailData } from "./file_transfer.ts";
import { createMemoryFileStore, type FileStore, lazyFileStore } from "./file_store.ts";
import { ServerError, type SessionApi, type SessionInfo, type TabStorage } from "./session.ts";

/** Least time between two redraws of the open conversation during a hand-over, ms. */
const REFRESH_THROTTLE_MS = 250;
/** Retry delay of a failed ICE-server request, and the least delay of a renewal, ms. */
const ICE_RETRY_MS = 30_000;

/** Collaborators of a {@link UserSession}. */
export interface UserSessionDeps {
  /** The WebSocket session with the servers. */
  session: SessionApi;
  /** Creates direct links to other browsers. */
  createLink: PeerLinkFactory;
  /** Opens the local history of a user. */
  openHistory(owner: string): Promise<History>;
  /** Where the unlocked private keys and contacts' known keys are kept. */
  keyStore: KeyStore;
  /** The page's hand-overs (this session's receiver is made there). */
  handovers: HandoverController;
  /** Wall clock, ms since the epoch. */
  now(): number;
  /** Monotonic clock for round-trip measurements, ms. */
  monotonic(): number;
  /** The send time of a new message: strictly increasing in this page. */
  nextSentAt(): number;
  /** Shows an error to the user. */
  onError(err: unknown): void;
  /** Counts a rejected incoming message (tests, diagnostics). */
  onRejected(): void;
  /**
   * `count` new messages from `from` were stored; `latest()` reads the newest of that
   * conversation (only when a notification shows its text: most calls need no read).
   */
  onNewMessages?(from: string, count: number, latest: () => MessageRow | null): void;
  /**
   * This device's lasting storage: how far each contact has read, and the read-receipt setting
   * ({@link READ_RECEIPTS_KEY}). @default memory only
   */
  deviceStorage?: TabStorage;
  /** Whether the user can see the page now (read receipts wait for it). @default always */
  isVisible?(): boolean;
  /** The session got (new) ICE servers: the page's hand-over links use them too. */
  onIceServers?(servers: IceServer[]): void;
  /** Files: opens `owner`'s file store (IndexedDB in the browser). @default memory */
  openFileStore?(owner: string): Promise<FileStore>;
  /** Files: makes the thumbnail of an image (the browser's canvas). @default none */
  thumbnail?(bytes: Uint8Array<ArrayBuffer>, mime: string): Promise<ThumbnailData | null>;
}

/** Device setting: "off" when this user sends no read receipts. */
export const READ_RECEIPTS_KEY = "p2pchat.readReceipts";
/** A contact's "typing" shows this long after their last typing notice, ms. */
export const TYPING_SHOWN_MS = 6_000;
/** While the user types, a typing notice goes out at most this often, ms. */
export const TYPING_RESEND_MS = 3_000;

/** Configuration of a {@link UserSession}. */
export interface UserSessionOptions extends OutboxOptions {
  /** How long one ping waits for its pong, ms. @default 5000 */
  pingTimeoutMs?: number;
  /** How long a ping over the data channel waits for the channel to open, ms. @default 5000 */
  channelWaitMs?: number;
}

export { MESSAGE_PAGE, MESSAGE_WINDOW };

/** One logged-in session; see the module comment. */
export class UserSession implements Disposable {
  /** The logged-in user. */
  readonly me: string;
  /** The session the servers granted. */
  readonly info: SessionInfo;
  /** The user's contacts (their contact book, kept on this device), with presence, by name. */
  readonly contacts = signal<ContactEntry[]>([]);
  /** People not in the contacts who wrote (message requests), by name. */
  readonly requests = signal<string[]>([]);
  /** Users this user blocked, by name. */
  readonly blocked = signal<string[]>([]);
  /** The user whose conversation is open. */
  readonly openPeer = signal<string | null>(null);
  /**
   * The shown part of the open conversation (a window of at most {@link MESSAGE_WINDOW}),
   * ordered by send time then id: the newest {@link MESSAGE_PAGE} messages at first, a page more
   * at each {@link showOlder} or {@link showNewer}, the pages at the other end dropped.
   */
  readonly messages: MessageWindow["messages"];
  /** Whether the open conversation has messages older than those in {@link messages}. */
  readonly hasOlder: MessageWindow["hasOlder"];
  /** Whether the open conversation has messages newer than those in {@link messages}. */
  readonly hasNewer: MessageWindow["hasNewer"];
  /** The shown part's paging (message_window.ts), shared with the read-only copy. */
  #window: MessageWindow;
  /** Messages that came in the open conversation while the reader was scrolled up. */
  readonly unseen = signal(0);
  /** A message to bring into view and mark (a search result the user picked), or null. */
  readonly focused = signal<string | null>(null);
  /** Contacts typing now (over the data channel). */
  readonly typing = signal<Record<string, true>>({});
  /** Per contact, the send time up to which they have read this user's messages. */
  readonly readUpTo = signal<Record<string, number>>({});
  #typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
  /** When this user last told the open chat's contact they were typing (0: not typing). */
  #typingSentAt = 0;
  /** Per contact, the newest of their messages this session said it read. */
  #readSent = new Map<string, number>();
  /** Users with an open data channel. */
  readonly channels = signal<Record<string, boolean>>({});
  /** Unread message counts per contact. */
  readonly unread = signal<Record<string, number>>({});
  /** Messages refused and discarded (in clear, forged, not from the pinned key), per contact. */
  readonly warnings = signal<Record<string, DiscardedMessage[]>>({});
  /**
   * How each contact's keys stand (pinned, changed and not yet accepted, none), as last looked
   * up; the records come from the key store, so a change shows again after a reload.
   */
  readonly trust = signal<Record<string, ContactTrust>>({});

  /** Shown messages once their replies, reactions, edits and deletes apply (message_ops.ts). */
  readonly views = signal<ReadonlyMap<string, MessageView>>(new Map());

  #deps: UserSessionDeps;
  #ops: MessageOps;
  #pingTimeoutMs: number;
  #channelWaitMs: number;
  #abort = new AbortController();
  #history: History;
  #keyring: Keyring;
  #peers: Peers;
  #outbox: Outbox;
  #inbox: Inbox;
  /** Files sent and received (issue 15). */
  readonly files: FileTransfers;
  #fileStore: FileStore;
  #receiver: HistoryReceiver | null = null;
  /** Handed to a hand-over: dispose neither closes the history nor deletes the keys. */
  #isDetached = false;
  /** Dispose leaves the unlocked keys in the key store (the servers' session goes on). */
  #keepsKeys = false;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #isRefreshDue = false;
  #pingSeq = 1;
  /** The ICE servers new links use (STUN, TURN with this session's credentials). */
  #iceServers: IceServer[] = [];
  #iceTimer: ReturnType<typeof setTimeout> | undefined;
  #pongWaiters = new Map<string, (answered: boolean) => void>();
  /** Other work in flight (presence refreshes after a failover or a `peer_offline`). */
  #tasks = 0;
  /** The contact book as last read or written (`contacts.ts`). */
  #book: ContactBook = EMPTY_BOOK;
  /** Book changes, one after another (each reads the last one's result). */
  #bookWrites: Promise<unknown> = Promise.resolve();
  /** Keys just looked up to add a contact, handed to the keyring's look-up once. */
  #lookedUp = new Map<string, PublicKeys>();

  /**
   * Enters the session `info` with the unlocked keys `own`:
   * opens the history, prepares the hand-over receiver and loads the contacts. When `signal`
   * aborts first (logout meanwhile), what was opened is disposed and the promise rejects.
   * `offline`: no server has resumed the session yet (a reload without a reachable server); the
   * contacts come from this device's cache, and {@link resumed} catches up once one answers.
   */
  static async open(
    deps: UserSessionDeps,
    options: UserSessionOptions,
    info: SessionInfo,
    own: OwnKeys,
    signal: AbortSignal,
    offline = false,
  ): Promise<UserSession> {
    const history = await deps.openHistory(info.username);
    if (signal.aborted) {
      history.close();
      throw signal.reason;
    }
    const s = new UserSession(deps, options, info, own, history);
    const onAbort = () => s.dispose();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await s.#init(own, offline);
    } catch (err) {
      // Failed to start (the connection dropped, say), not logged out: the servers' session and
      // its unlocked keys stay, so that the next resume can enter it again.
      s.#keepsKeys = !signal.aborted;
      s.dispose();
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    return s;
  }

  private constructor(
    deps: UserSessionDeps,
    options: UserSessionOptions,
    info: SessionInfo,
    own: OwnKeys,
    history: History,
  ) {
    this.#deps = deps;
    this.#pingTimeoutMs = options.pingTimeoutMs ?? 5_000;
    this.#channelWaitMs = options.channelWaitMs ?? 5_000;
    this.me = info.username;
    this.info = info;
    this.#history = history;
    this.#ops = new MessageOps(history);
    this.#window = new MessageWindow(history, (peer, rows) => {
      this.views.value = peer
        ? foldOps(rows, history.ops(peer), this.me, (id) => history.get(id))
        : new Map();
    });
    this.messages = this.#window.messages;
    this.hasOlder = this.#window.hasOlder;
    this.hasNewer = this.#window.hasNewer;
    this.readUpTo.value = this.#loadReadUpTo();
    const aborted = this.#abort.signal;
    this.#keyring = new Keyring({
      me: this.me,
      own,
      store: deps.keyStore,
      fetchKeys: (user) => this.#fetchDirectoryKeys(user),
      onTrust: (trust) => {
        if (!aborted.aborted) this.trust.value = { ...this.trust.value, [trust.contact]: trust };
      },
      now: deps.now,
    });
    this.#peers = new Peers({
      me: this.me,
      createLink: deps.createLink,
      sendSignal: (to, data) => deps.session.signal(to, data),
      now: deps.monotonic,
      iceServers: () => this.#iceServers,
    });
    // A new network (Wi-Fi to mobile, a new address): the old candidate pairs may be gone.
    const onNetworkChange = () => this.#peers.restartIce();
    globalThis.addEventListener?.("online", onNetworkChange, { signal: aborted });
    (globalThis.navigator as { connection?: EventTarget } | undefined)?.connection
      ?.addEventListener?.("change", onNetworkChange, { signal: aborted });
    this.#outbox = new Outbox(
      {
        me: this.me,
        history,
        keyring: this.#keyring,
        links: this.#peers,
        session: deps.session,
        isOnline: (user) => this.#isOnline(user),
        onChanged: (peer) => {
          this.#changed(peer);
          void this.files?.checkMailbox();
        },
        onError: (err) => this.#fail(err),
      },
      options,
      aborted,
    );
    this.#fileStore = lazyFileStore(() =>
      deps.openFileStore?.(this.me) ?? Promise.resolve(createMemoryFileStore())
    );
    this.files = new FileTransfers({
      me: this.me,
      history,
      store: this.#fileStore,
      links: this.#peers,
      mailSend: (peer, mail) => abortable(deps.session.mailSend(peer, mail), aborted),
      control: (peer, frame) =>
        void this.#sendOn(peer, frame, this.#peers.isOpen(peer) ? "p2p" : "relay"),
      isOnline: (user) => this.#isOnline(user),
      maxBytes: () => maxFileBytes(deps.deviceStorage),
      onError: (err) => this.#fail(err),
      onRejected: () => deps.onRejected(),
      thumbnail: deps.thumbnail,
    }, aborted);
    this.#inbox = new Inbox({
      me: this.me,
      history,
      keyring: this.#keyring,
      session: {
        mailFetch: () => abortable(deps.session.mailFetch(), aborted),
        mailAck: (receipts) => abortable(deps.session.mailAck(receipts), aborted),
      },
      reply: (remote, msg, via) => this.#sendOn(remote, msg, via),
      acknowledge: (remote, id) => this.#outbox.acknowledge(remote, id),
      onPong: (remote, seq, via) => this.#pongWaiters.get(`${via}:${remote}:${seq}`)?.(true),
      onTyping: (remote, active) => this.#setTyping(remote, active),
      onRead: (remote, upTo) => this.#theyRead(remote, upTo),
      isBlocked: (from) => this.#book.blocked.includes(from),
      onStored: (from, count) => {
        this.#setTyping(from, false);
        // A stranger's message is a request: its text shows once opened, not in a notification.
        const isRequest = senderKind(this.#book, from) === "request";
        if (isRequest) void this.#changeBook((b) => noteRequest(b, from));
        deps.onNewMessages?.(from, count, () => {
          if (isRequest) return null;
          const row = this.#history.list(from, 1)[0] ?? null;
          return row && { ...row, text: foldOps([row], [], this.me).get(row.id)?.text ?? "" };
        });
        if (this.openPeer.value === from) {
          if (!this.#window.following) this.unseen.value += count;
          this.#refresh();
        } else {this.unread.value = {
            ...this.unread.value,
            [from]: (this.unread.value[from] ?? 0) + count,
          };}
      },
      afterStore: (row) => this.#afterStore(row),
      onOps: (from) => this.#changed(from),
      onDiscarded: (w) => this.#addWarning(w),
      onFileFrame: (remote, frame, via) => this.files.receive(remote, frame, via),
      onFileOffer: (from, id) => void this.files.offered(from, id),
      takeMail: (m) => this.files.takeMail(m),
      onRejected: () => deps.onRejected(),
      now: deps.now,
    }, aborted);
    this.#peers.events = {
      onOpen: (remote) => {
        this.channels.value = { ...this.channels.value, [remote]: true };
        void this.#outbox.flush(remote, true);
        void this.files.channelOpened(remote);
      },
      onClose: (remote) => {
        const { [remote]: _gone, ...rest } = this.channels.value;
        this.channels.value = rest;
        // What went over the channel unacknowledged goes again through the servers now.
        if (!this.isDisposed) void this.#outbox.flush(remote, true);
        if (!this.isDisposed) void this.files.channelClosed(remote);
      },
      onMessage: (remote, text) => void this.#receive(remote, text, "p2p"),
    };
  }

  async #init(own: OwnKeys, offline: boolean): Promise<void> {
    const aborted = this.#abort.signal;
    const receiver = await this.#deps.handovers.receiverFor(
      this.me,
      own,
      this.#history,
      aborted,
      {
        afterImport: (undelivered) => {
          this.#refreshSoon();
          // What the old device had not got delivered goes out from here now.
          for (const peer of undelivered) void this.#outbox.flush(peer, true);
        },
        afterTrust: () => {
          // The old device's pinned keys were merged into the store: look them up again.
          this.#keyring.invalidate();
          // Its contact book too: read it again, and watch the contacts it brought.
          void this.#changeBook((b) => b).then(() => this.#watchContacts()).catch(() => {});
          const peer = this.openPeer.value;
          if (peer) void this.#keyring.trustOf(peer).catch(() => {});
        },
        onFailed: (text) => this.#fail(text),
        adoptFiles: (rows, carried) => this.files.adopt(rows, carried),
      },
    );
    if (aborted.aborted) {
      receiver.close();
      throw aborted.reason;
    }
    this.#receiver = receiver;
    // What this device kept shows at once (a change not yet accepted, its markers), before the
    // directory is asked again.
    const kept = await this.#deps.keyStore.listPins(this.me).catch(() => []);
    if (aborted.aborted) throw aborted.reason;
    const trust: Record<string, ContactTrust> = {};
    for (const pin of kept) {
      trust[pin.contact] = { contact: pin.contact, status: trustStatus(pin), pin };
    }
    this.trust.value = { ...trust, ...this.trust.value };
    // The contact book lives on this device: it shows at once, offline or not.
    this.#showBook(await this.#deps.keyStore.loadBook(this.me));
    if (aborted.aborted) throw aborted.reason;
    // No server yet: `resumed` asks the servers for the contacts' presence later.
    if (offline) return;
    await Promise.all([this.#watchContacts(), this.#refreshIce()]);
  }

  /** Shows `book`: the contacts (keeping the presence known), the requests, the blocked. */
  #showBook(book: ContactBook): void {
    this.#book = book;
    const online = new Set(this.contacts.value.filter((c) => c.online).map((c) => c.username));
    batch(() => {
      this.contacts.value = book.contacts.map((username) => ({
        username,
        online: online.has(username),
      }));
      this.requests.value = book.requests;
      this.blocked.value = book.blocked;
    });
  }

  /**
   * Applies `change` to the contact book (after the changes already queued), keeps it and shows
   * it. It starts from the stored book: a hand-over may have merged into it meanwhile.
   */
  #changeBook(change: (book: ContactBook) => ContactBook): Promise<ContactBook> {
    const run = this.#bookWrites.then(async () => {
      const before = await this.#deps.keyStore.loadBook(this.me);
      const after = change(before);
      if (after !== before) await this.#deps.keyStore.saveBook(this.me, after);
      if (!this.isDisposed) this.#showBook(after);
      return after;
    });
    this.#bookWrites = run.catch(() => {});
    return run;
  }

  /**
   * Sends the contacts as this connection's watch list (the servers then tell their presence
   * changes, and only theirs) and shows their status now.
   */
  async #watchContacts(): Promise<void> {
    const names = this.#book.contacts;
    const list = await abortable(this.#deps.session.watch(names), this.#abort.signal);
    const online = new Set(list.filter((c) => c.online).map((c) => c.username));
    // The book may have changed meanwhile: what it holds now is shown.
    this.contacts.value = this.#book.contacts.map((username) => ({
      username,
      online: online.has(username),
    }));
  }

  /**
   * Adds `username` as a contact after looking their keys up by exact name, and pins them. With
   * `keyId` (from their link), the servers' keys must have that id, or nothing is added.
   * Rejects with a sentence to show: no such user, too many look-ups, a key that does not match.
   */
  async addContact(username: string, keyId?: string): Promise<void> {
    if (username === this.me) throw new Error("That is you: add someone else");
    let keys: PublicKeys;
    try {
      keys = await abortable(this.#deps.session.getKeys(username), this.#abort.signal);
    } catch (err) {
      if (err instanceof ServerError && err.code === "unknown_user") {
        throw new Error(`There is no user named "${username}": check the exact spelling`);
      }
      if (err instanceof ServerError && err.code === "rate_limited") {
        throw new Error(`${err.message}. Nothing was added.`);
      }
      throw err;
    }
    if (keyId !== undefined && await keyIdOf(keys) !== keyId) {
      throw new Error(
        `Warning: the key the servers give for ${username} is not the one in their link. ` +
          "They were not added: ask them for their link again, or compare safety numbers",
      );
    }
    // The keyring pins what was just looked up (trust on first use, or a change to accept).
    this.#lookedUp.set(username, keys);
    await this.#keyring.trustOf(username, true);
    await this.#changeBook((b) => addContact(b, username));
    await this.#watchContacts();
  }

  /** A message request is accepted: its sender becomes a contact. */
  async acceptRequest(username: string): Promise<void> {
    await this.#changeBook((b) => addContact(b, username));
    await this.#watchContacts();
  }

  /** `username` is no contact any more. */
  async removeContact(username: string): Promise<void> {
    await this.#changeBook((b) => removeContact(b, username));
    await this.#watchContacts();
  }

  /**
   * Blocks `username`: their later messages are acknowledged and dropped unseen, their direct
   * links refused; an open link to them closes.
   */
  async block(username: string): Promise<void> {
    await this.#changeBook((b) => blockUser(b, username));
    this.#peers.drop(username);
    if (this.openPeer.value === username) this.openChat(null);
    await this.#watchContacts();
  }

  /** `username` is no longer blocked. */
  async unblock(username: string): Promise<void> {
    await this.#changeBook((b) => unblockUser(b, username));
  }

  /** This user's key id, for their add-contact link. */
  myKeyId(): Promise<string> {
    const own = this.#keyring.own;
    return keyIdOf({ encryption: own.encryptionPublic, signing: own.signingPublic });
  }

  /**
   * Asks the servers for ICE servers, and again before their TURN credentials expire (halfway
   * through their lifetime). Links opened later use them; open links keep their connection.
   * Without an answer, links use host candidates only (one LAN) and messages go through the
   * servers where no direct path is found.
   */
  async #refreshIce(): Promise<void> {
    clearTimeout(this.#iceTimer);
    const aborted = this.#abort.signal;
    let delay = ICE_RETRY_MS;
    try {
      const grant = await abortable(this.#deps.session.iceServers(), aborted);
      this.#iceServers = grant.iceServers;
      this.#deps.onIceServers?.(grant.iceServers);
      if (grant.expiresAt === 0) return;
      delay = Math.max(ICE_RETRY_MS, (grant.expiresAt - this.#deps.now()) / 2);
    } catch {
      if (aborted.aborted) return;
    }
    this.#iceTimer = setTimeout(() => void this.#refreshIce(), delay);
  }

  /**
   * Whether this session is still processing something it was asked to do: a flush, an
   * incoming message, a mailbox fetch, a presence refresh. Tests wait for it to be false
   * instead of sleeping; timers waiting to fire (retries, rechecks) do not count.
   */
  get hasPendingWork(): boolean {
    return !this.isDisposed && (this.#outbox.isBusy || this.#inbox.isBusy || this.#tasks > 0);
  }

  /** Whether {@link dispose} was called. */
  get isDisposed(): boolean {
    return this.#abort.signal.aborted;
  }

  /**
   * On every session start (login, reload, failover): fetches the mailbox, and sends what
   * waited for a session.
   */
  start(): void {
    void this.fetchMail();
    this.#outbox.resume(this.contacts.value.filter((c) => c.online).map((c) => c.username));
  }

  /** The session was resumed after a failover: the links and history are still good. */
  resumed(): Promise<void> {
    return this.#task(async () => {
      await Promise.all([this.#watchContacts(), this.#refreshIce()]);
      this.start();
    });
  }

  /** Fetches this user's mailbox (again if asked while a fetch runs). */
  async fetchMail(): Promise<void> {
    try {
      await this.#inbox.fetchMail();
    } catch (err) {
      if (!(err instanceof ServerError && err.code === "disconnected")) this.#fail(err);
    }
  }

  /** A contact came online or went offline. */
  setPresence(username: string, online: boolean): void {
    if (username === this.me || this.isDisposed) return;
    if (!this.contacts.value.some((c) => c.username === username)) return;
    this.contacts.value = this.contacts.value.map((c) =>
      c.username === username ? { username, online } : c
    );
    // Online: unacknowledged messages go again (data channel or relay). Offline: what was
    // sent directly but never acknowledged goes to their mailbox.
    void this.#outbox.flush(username, true);
    if (online) this.#outbox.recheckLater(username);
  }

  /** A WebRTC signal from `from`: this user's other device (a hand-over) or a contact. */
  handleSignal(from: string, data: SignalData): void {
    if (this.isDisposed) return;
    if (from === this.me) this.#receiver?.handleSignal(data);
    // A blocked user's offers are refused: no link, no answer.
    else if (!this.#book.blocked.includes(from)) this.#peers.handleSignal(from, data);
  }

  /** A payload the servers relayed from `from`. */
  receiveRelay(from: string, payload: string): void {
    void this.#receive(from, payload, "relay");
  }

  /** The servers say `by` received our messages `ids` from their mailbox. */
  markDelivered(by: string, ids: string[]): void {
    if (this.isDisposed) return;
    void this.#outbox.markDelivered(by, ids).catch((err) => this.#fail(err));
  }

  /**
   * A relay or signal was answered `peer_offline`: our presence view was stale. Refresh it, and
   * move what went directly to now-offline contacts (unacknowledged) to their mailboxes.
   */
  peerOffline(): Promise<void> {
    if (this.isDisposed || this.#deps.session.status !== "online") return Promise.resolve();
    return this.#task(async () => {
      try {
        await this.#watchContacts();
      } catch {
        return;
      }
      for (const c of this.contacts.value) {
        if (!c.online) void this.#outbox.flush(c.username, true);
      }
    });
  }

  /** Opens the conversation with `peer` and starts opening a data channel to them. */
  openChat(peer: string | null): void {
    if (this.isDisposed) return;
    batch(() => {
      this.openPeer.value = peer;
      this.focused.value = null;
      this.#window.reset();
      this.unseen.value = 0;
      if (peer) {
        const { [peer]: _read, ...rest } = this.unread.value;
        this.unread.value = rest;
      }
      this.#refresh();
    });
    if (peer && this.#isOnline(peer)) this.#peers.ensure(peer);
    // Ask the directory for the contact's keys now, so a key change or missing keys show at once.
    if (peer) void this.#keyring.trustOf(peer, true).catch(() => {});
  }

  /**
   * Shows a page of older messages of the open conversation (the user scrolled to the top);
   * false if every message is already shown.
   */
  showOlder(): boolean {
    const peer = this.openPeer.value;
    if (this.isDisposed || !peer) return false;
    const isShown = this.#window.showOlder(peer);
    this.#sendReadReceipt();
    return isShown;
  }

  /**
   * Shows a page of newer messages of the open conversation (the user scrolled down to the end
   * of an older part); false if the newest is already shown.
   */
  showNewer(): boolean {
    const peer = this.openPeer.value;
    if (this.isDisposed || !peer) return false;
    const isShown = this.#window.showNewer(peer);
    this.#sendReadReceipt();
    return isShown;
  }

  /** Shows the newest page of the open conversation (the reader jumps back to the end). */
  showNewest(): void {
    const peer = this.openPeer.value;
    if (this.isDisposed || !peer) return;
    batch(() => {
      this.#window.reset();
      this.unseen.value = 0;
      this.#refresh();
    });
  }

  /**
   * Whether the reader is at the newest message: new messages then come into the window (the
   * oldest shown ones leave it); else the window stays on what they read.
   */
  follow(following: boolean): void {
    this.#window.following = following;
    if (following && this.unseen.peek() > 0) this.unseen.value = 0;
  }

  /**
   * The user is typing in the open chat: tells the contact over the data channel (never through
   * the servers), at most every {@link TYPING_RESEND_MS}.
   */
  typingNow(): void {
    const peer = this.openPeer.value;
    if (!peer || this.isDisposed || !this.#peers.isOpen(peer)) return;
    const now = this.#deps.now();
    if (now - this.#typingSentAt < TYPING_RESEND_MS) return;
    if (this.#sendTyping(peer, true)) this.#typingSentAt = now;
  }

  /** The user stopped typing (sent, or cleared the input). */
  stoppedTyping(): void {
    const peer = this.openPeer.value;
    if (!peer || this.#typingSentAt === 0) return;
    this.#typingSentAt = 0;
    this.#sendTyping(peer, false);
  }

  /** A typing notice, over the data channel only; false if no channel is open. */
  #sendTyping(peer: string, active: boolean): boolean {
    return this.#peers.send(
      peer,
      JSON.stringify({ v: PEER_PROTOCOL_VERSION, type: "typing", active }),
    );
  }

  /** The page became visible: what is shown now has been read. */
  pageVisible(): void {
    this.#sendReadReceipt();
  }

  /** Messages of the local history with every word of `input`, newest first (at most 50). */
  search(input: string): SearchHit[] {
    return this.isDisposed
      ? []
      : this.#history.search(input).map((h) => ({ ...h, snippet: cleanSnippet(h.snippet) }));
  }

  /**
   * Opens the conversation with `peer` showing message `id` (however old), marked. False if
   * there is no such message there.
   */
  showMessage(peer: string, id: string): boolean {
    if (this.isDisposed) return false;
    const row = this.#history.get(id);
    if (!row || row.peer !== peer) return false;
    const part = this.#window.around(peer, row);
    if (!part) return false;
    if (this.openPeer.value !== peer) this.openChat(peer);
    batch(() => {
      this.#window.following = false;
      this.#show(peer, part);
      this.focused.value = id;
    });
    return true;
  }

  /**
   * Sends `text` (checked by the caller) to the open conversation. Throws
   * {@link UntrustedKeysError} (storing nothing) when the contact's keys are not pinned and
   * unchanged: nothing can be sealed for them.
   */
  async send(text: string): Promise<void> {
    await this.#sendText(text);
  }

  /** Sends `text` to the open conversation; resolves its stored row (null if nothing was). */
  async #sendText(text: string): Promise<MessageRow | null> {
    const peer = this.openPeer.value;
    if (!peer || this.isDisposed) return null;
    // Offline, what this device has kept decides; the outbox checks again before sending.
    const trust = await this.#keyring.trustOf(peer).catch(() => this.#keyring.storedTrust(peer));
    if (this.isDisposed) return null;
    if (trust.status !== "trusted") throw new UntrustedKeysError(peer, trust.status);
    const row: MessageRow = {
      id: newMessageId(),
      peer,
      sender: this.me,
      recipient: peer,
      sentAt: this.#deps.nextSentAt(),
      receivedAt: null,
      text,
      via: "p2p",
      status: "sending",
    };
    await this.#outbox.send(row);
    return row;
  }

  /**
   * Sends a reply, reaction, edit or delete (message_ops.ts) in the open conversation, as a
   * message of its own. Throws {@link MessageOpError} (sending nothing) when its target is not a
   * message of this conversation, or not this user's own for an edit or delete.
   */
  async sendOp(body: MessageBody): Promise<void> {
    const peer = this.openPeer.value;
    if (!peer || this.isDisposed) return;
    const targetId = "target" in body ? body.target : body.kind === "reply" ? body.replyTo : null;
    if (targetId !== null) {
      const target = this.#history.get(targetId);
      const kind = target ? bodyOf(target.text).kind : null;
      if (!target || target.peer !== peer || kind === "deleted" || kind === "hidden") {
        throw new MessageOpError("That message is not in this conversation");
      }
      if ((body.kind === "edit" || body.kind === "delete") && target.sender !== this.me) {
        throw new MessageOpError("Only your own messages can be edited or deleted");
      }
    }
    const row = await this.#sendText(encodeBody(body));
    if (row) await this.#afterStore(row);
    this.#refresh();
  }

  /** Deletes message `id` on this device only (an own message only once delivered). */
  async deleteForMe(id: string): Promise<void> {
    const row = this.#history.get(id);
    if (!row || this.isDisposed) return;
    if (row.sender === this.me && row.status !== "delivered") {
      throw new MessageOpError("A message on its way cannot be deleted here only");
    }
    await this.#history.replaceText(id, HIDDEN_TEXT);
    this.#refresh();
  }

  async #afterStore(row: MessageRow): Promise<void> {
    try {
      await this.#ops.afterStore(row);
    } catch (err) {
      this.#fail(err);
    }
  }

  /**
   * Sends a file to the open conversation (files, issue 15): checked against the size limit
   * (throws `FileTooLargeError`, storing nothing) and the contact's keys like {@link send}; its
   * message goes like any other, and its chunks follow (`file_transfer.ts`).
   */
  async sendFile(file: { name: string; type: string; bytes: Uint8Array<ArrayBuffer> }) {
    const peer = this.openPeer.value;
    if (!peer || this.isDisposed) return;
    const trust = await this.#keyring.trustOf(peer).catch(() => this.#keyring.storedTrust(peer));
    if (this.isDisposed) return;
    if (trust.status !== "trusted") throw new UntrustedKeysError(peer, trust.status);
    const id = newMessageId();
    const meta = await this.files.prepare(id, peer, file);
    await this.#outbox.send({
      id,
      peer,
      sender: this.me,
      recipient: peer,
      sentAt: this.#deps.nextSentAt(),
      receivedAt: null,
      text: meta.name,
      via: "p2p",
      status: "sending",
      attachment: JSON.stringify(meta),
    });
    await this.files.announced(id);
  }

  /** `n` sequential ping round trips to `peer` over the data channel or the relay, in ms. */
  async ping(peer: string, n: number, via: MessageVia): Promise<number[]> {
    const aborted = this.#abort.signal;
    if (via === "p2p" && !(await this.#peers.waitOpen(peer, this.#channelWaitMs))) {
      throw new Error(`Cannot ping "${peer}": no open data channel`);
    }
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      if (aborted.aborted) throw new Error(`Cannot ping "${peer}": logged out`);
      const seq = this.#pingSeq++;
      const key = `${via}:${peer}:${seq}`;
      const start = this.#deps.monotonic();
      const answered = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), this.#pingTimeoutMs);
        this.#pongWaiters.set(key, (ok) => {
          clearTimeout(timer);
          resolve(ok);
        });
      });
      const sent = this.#sendOn(peer, { v: PEER_PROTOCOL_VERSION, type: "ping", seq }, via);
      const ok = sent && await answered;
      this.#pongWaiters.delete(key);
      if (!ok) throw new Error(`Ping ${seq} to "${peer}" via ${via} got no answer`);
      times.push(this.#deps.monotonic() - start);
    }
    return times;
  }

  /** Drops the data channel to `peer` (tests: an interrupted file transfer). */
  dropChannel(peer: string): void {
    if (!this.isDisposed) this.#peers.drop(peer);
  }

  /** Whether the data channel to `peer` is open. */
  isChannelOpen(peer: string): boolean {
    return !this.isDisposed && this.#peers.isOpen(peer);
  }

  /** The candidate types of the open data channel to `peer` (`srflx`, `relay`…), if any. */
  selectedCandidates(peer: string): Promise<SelectedCandidates | null> {
    return this.isDisposed ? Promise.resolve(null) : this.#peers.selectedCandidates(peer);
  }

  /** `monotonic()` when the data channel to each user opened. */
  get dcOpenedAt(): Record<string, number> {
    return this.#peers.dcOpenedAt;
  }

  /** Fingerprints of `user`'s public keys (this user's own included); null without keys. */
  fingerprints(user: string): Promise<PublicKeys | null> {
    return this.#keyring.fingerprints(user);
  }

  /** The safety number of this user and `user` to compare (with the keys to accept, if any). */
  safetyCheck(user: string): Promise<SafetyCheck | null> {
    return this.#keyring.safetyCheck(user);
  }

  /**
   * The user compared the safety number and accepts `user`'s keys `keyId`: they are pinned, and
   * the messages that waited go out.
   */
  async acceptKeys(user: string, keyId: string): Promise<void> {
    if (this.isDisposed) return;
    await this.#keyring.accept(user, keyId);
    void this.#outbox.flush(user, true);
  }

  /** The stored conversation with `peer`. */
  messagesWith(peer: string): MessageRow[] {
    return this.isDisposed ? [] : this.#history.list(peer, 100_000);
  }

  /** Every stored message, newest first. */
  allMessages(): MessageRow[] {
    return this.isDisposed ? [] : this.#history.newestFirst();
  }

  /**
   * Adds rows to the history as a hand-over would; resolves how many were new, once they are
   * durable and any snapshot they made due is saved (so a reload right after opens at rest).
   */
  async importHistory(rows: MessageRow[]): Promise<number> {
    const fresh = await this.#history.importRows(rows);
    await this.#history.snapshotIfDue();
    this.#refresh();
    return fresh;
  }

  /**
   * Ends this session for a history hand-over: like {@link dispose}, except that the history
   * and the unlocked keys are handed to the caller instead of being closed and deleted. Null
   * when already disposed.
   */
  detachForHandover(): HandoverSource | null {
    const own = this.#keyring.own;
    if (this.isDisposed) return null;
    this.#isDetached = true;
    this.dispose();
    return { info: this.info, history: this.#history, own };
  }

  /** Ends everything this session started (idempotent). */
  dispose(): void {
    if (this.isDisposed) return;
    this.#abort.abort(new DOMException("The session ended", "AbortError"));
    if (!this.#isDetached && !this.#keepsKeys) {
      // The unlocked keys stay on this device only while its session lasts.
      void this.#deps.keyStore.deleteOwn(this.info.username, this.info.token).catch(() => {});
    }
    this.#receiver?.close();
    this.#receiver = null;
    this.#peers.destroyAll();
    if (!this.#isDetached) this.#history.close();
    this.#fileStore.close();
    clearTimeout(this.#refreshTimer);
    for (const timer of this.#typingTimers.values()) clearTimeout(timer);
    this.#typingTimers.clear();
    clearTimeout(this.#iceTimer);
    for (const answer of this.#pongWaiters.values()) answer(false);
    this.#pongWaiters.clear();
  }

  /** Same as {@link dispose}, for `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  async #task(fn: () => Promise<void>): Promise<void> {
    this.#tasks++;
    try {
      await fn();
    } finally {
      this.#tasks--;
    }
  }

  async #receive(remote: string, text: string, via: MessageVia): Promise<void> {
    if (this.isDisposed) return;
    try {
      await this.#inbox.receiveLive(remote, text, via);
    } catch (err) {
      this.#fail(err);
    }
  }

  #sendOn(remote: string, msg: PeerMessage, via: MessageVia): boolean {
    if (this.isDisposed) return false;
    const text = JSON.stringify(msg);
    if (via === "p2p" && this.#peers.send(remote, text)) return true;
    if (this.#deps.session.status !== "online") return false;
    this.#deps.session.relay(remote, text);
    return true;
  }

  async #fetchDirectoryKeys(user: string): Promise<PublicKeys | null> {
    const fresh = this.#lookedUp.get(user);
    if (fresh) {
      this.#lookedUp.delete(user);
      return fresh;
    }
    try {
      return await abortable(this.#deps.session.getKeys(user), this.#abort.signal);
    } catch (err) {
      // "No keys": the keyring then refuses to seal for them (and blocks a pinned contact).
      if (err instanceof ServerError && err.code === "unknown_user") return null;
      throw err;
    }
  }

  #addWarning(w: DiscardedMessage): void {
    const peer = w.from;
    const list = this.warnings.value[peer] ?? [];
    if (list.some((x) => x.id === w.id)) return;
    this.warnings.value = { ...this.warnings.value, [peer]: [...list, w] };
    this.#fail(w.text);
    if (this.openPeer.value !== peer) {
      this.unread.value = { ...this.unread.value, [peer]: (this.unread.value[peer] ?? 0) + 1 };
    }
  }

  #isOnline(user: string): boolean {
    return this.contacts.value.some((c) => c.username === user && c.online);
  }

  #changed(peer: string): void {
    if (this.openPeer.value === peer) this.#refresh();
  }

  /**
   * Refreshes now, and at most once more within {@link REFRESH_THROTTLE_MS}: a hand-over imports
   * a batch every few ms, and redrawing the conversation for each would slow it down.
   */
  #refreshSoon(): void {
    if (this.#refreshTimer !== undefined) {
      this.#isRefreshDue = true;
      return;
    }
    this.#refresh();
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined;
      if (this.#isRefreshDue) {
        this.#isRefreshDue = false;
        this.#refreshSoon();
      }
    }, REFRESH_THROTTLE_MS);
  }

  /**
   * Reads the shown part again (a message stored, changed or hidden): see
   * {@link MessageWindow.refresh}.
   */
  #refresh(): void {
    if (this.isDisposed) return;
    this.#window.refresh(this.openPeer.value);
    this.#sendReadReceipt();
  }

  /** Shows `part` of the conversation with `peer`, with its folded operations. */
  #show(peer: string, part: WindowPart): void {
    this.#window.show(peer, part);
    this.#sendReadReceipt();
  }

  /**
   * Tells the open chat's contact how far this user has read (the newest message of theirs
   * shown, while the page is visible), unless read receipts are turned off.
   */
  #sendReadReceipt(): void {
    const peer = this.openPeer.value;
    if (!peer || this.isDisposed || !(this.#deps.isVisible?.() ?? true)) return;
    if (this.#deps.deviceStorage?.getItem(READ_RECEIPTS_KEY) === "off") return;
    const newest = this.messages.value.findLast((m) => m.sender === peer);
    if (!newest || newest.sentAt <= (this.#readSent.get(peer) ?? 0)) return;
    if (!this.#isOnline(peer) && !this.#peers.isOpen(peer)) return;
    const via = this.#peers.isOpen(peer) ? "p2p" : "relay";
    if (this.#sendOn(peer, { v: PEER_PROTOCOL_VERSION, type: "read", upTo: newest.sentAt }, via)) {
      this.#readSent.set(peer, newest.sentAt);
    }
  }

  #setTyping(remote: string, active: boolean): void {
    clearTimeout(this.#typingTimers.get(remote));
    this.#typingTimers.delete(remote);
    if (active) {
      this.#typingTimers.set(
        remote,
        setTimeout(() => this.#setTyping(remote, false), TYPING_SHOWN_MS),
      );
      if (!this.typing.value[remote]) this.typing.value = { ...this.typing.value, [remote]: true };
    } else if (this.typing.value[remote]) {
      const { [remote]: _was, ...rest } = this.typing.value;
      this.typing.value = rest;
    }
  }

  /** `remote` read our messages up to `upTo` (never beyond this moment: see the receipt). */
  #theyRead(remote: string, upTo: number): void {
    const until = Math.min(upTo, this.#deps.now());
    if (until <= (this.readUpTo.value[remote] ?? 0)) return;
    this.readUpTo.value = { ...this.readUpTo.value, [remote]: until };
    this.#deps.deviceStorage?.setItem(this.#readKey(), JSON.stringify(this.readUpTo.value));
  }

  #readKey(): string {
    return `p2pchat.readUpTo.${this.me}`;
  }

  #loadReadUpTo(): Record<string, number> {
    try {
      const v = JSON.parse(this.#deps.deviceStorage?.getItem(this.#readKey()) ?? "{}");
      const out: Record<string, number> = {};
      for (const [k, n] of Object.entries(v ?? {})) {
        if (typeof n === "number" && Number.isSafeInteger(n)) out[k] = n;
      }
      return out;
    } catch {
      return {};
    }
  }

  #fail(err: unknown): void {
    if (!this.isDisposed) this.#deps.onError(err);
  }
}
