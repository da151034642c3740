/** The open conversation: messages and the input line. */
import { Component } from "preact";
import { useLayoutEffect, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import type { MessageRow } from "../history.ts";
import type { TrustEvent } from "../trust.ts";
import { Fingerprint, SafetyNumber } from "./fingerprint.tsx";
import { DELETED_TEXT, type MessageView } from "../message_ops.ts";
import {
  ComposeBanner,
  type ComposeMode,
  MessageActions,
  MessageBody,
  sameView,
  sendDraft,
} from "./message_actions.tsx";
import { AttachButton, Attachment } from "./attachment.tsx";
import { RequestBar } from "./requests.tsx";
import { PageButton, useMessageList } from "./message_list.tsx";

const STATUS_TEXT = {
  sending: "sending…",
  sent: "✓ sent, pending",
  delivered: "✓✓ delivered",
  failed: "not stored, will retry",
} as const;

const PATH_TEXT = { p2p: "direct", relay: "via server", mailbox: "mailbox" } as const;

/** The status line of one of my messages, as people read it (`offline`: no server answers). */
function statusText(m: MessageRow, read: boolean, offline: boolean): string {
  if (read) return "✓✓ read";
  if (m.status === "sent" && m.via === "mailbox") return "✓ stored on the servers, pending";
  if (offline && (m.status === "sending" || m.status === "failed")) {
    return "queued on this device, goes out when a server is back";
  }
  return STATUS_TEXT[m.status];
}

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

interface ItemProps {
  m: MessageRow;
  own: boolean;
  /** The message a search result pointed to: marked. */
  focused: boolean;
  /** Own message the contact has read. */
  read: boolean;
  /** No server answers: unsent messages are queued on this device. */
  offline: boolean;
  /** The message once its replies, reactions, edits and deletes apply. */
  view: MessageView | undefined;
  /** Where a message's file reads its progress from, and replies/reactions are sent. */
  model: ChatModel;
  onCompose: (mode: ComposeMode) => void;
  onOpenQuote: (id: string) => void;
}

/**
 * One message. A row object is replaced whenever its message changes (the history hands out
 * fresh rows), so a row that is the same object as last time is not diffed again: a send in a
 * conversation of 1,000 shown messages redraws one or two items, not all of them.
 */
class MessageItem extends Component<ItemProps> {
  override shouldComponentUpdate(next: ItemProps): boolean {
    return !sameRow(next.m, this.props.m) || next.own !== this.props.own ||
      next.focused !== this.props.focused || next.read !== this.props.read ||
      next.offline !== this.props.offline || !sameView(next.view, this.props.view);
  }

  override render() {
    const { m, own, focused, read, offline, view, model } = this.props;
    return (
      <li
        data-testid="message"
        data-id={m.id}
        data-from={m.sender}
        data-via={m.via}
        data-status={m.status}
        data-read={read ? "true" : undefined}
        class={(own ? "message own" : "message theirs") + (focused ? " focused" : "")}
      >
        {m.attachment && !view?.deleted && m.text !== DELETED_TEXT && (
          <Attachment model={model} id={m.id} attachment={m.attachment} own={own} />
        )}
        <MessageBody
          m={m}
          view={view}
          model={model}
          onOpenQuote={this.props.onOpenQuote}
          textless={!!m.attachment}
        />
        <span class="meta">
          {time.format(m.sentAt)}
          {m.status === "failed" || m.status === "sending" ? "" : ` · ${PATH_TEXT[m.via]}`}
          {own && (
            <span class="status" data-testid="message-status">
              {` · ${statusText(m, read, offline)}`}
            </span>
          )}
          <MessageActions
            m={m}
            own={own}
            view={view}
            model={model}
            onCompose={this.props.onCompose}
          />
        </span>
      </li>
    );
  }
}

/** Whether two rows show the same (only status and path change once a message is stored). */
function sameRow(a: MessageRow, b: MessageRow): boolean {
  return a.id === b.id && a.status === b.status && a.via === b.via && a.text === b.text;
}

/** What a marker in the conversation says about a contact's keys. */
function eventText(peer: string, e: TrustEvent): string {
  switch (e.kind) {
    case "changed":
      return `The servers gave another key for ${peer} here: sending stopped until you compare`;
    case "missing":
      return `The servers said ${peer} has no keys here: sending stopped`;
    case "accepted":
      return `You accepted a new key for ${peer} here`;
    case "restored":
      return `The servers gave ${peer}'s trusted key again here`;
  }
}

type TimelineItem = { message: MessageRow } | { event: TrustEvent };

/**
 * The shown messages with the key markers between them, by time: a marker shows with the part
 * of the conversation it falls in (before the first shown message only if none is older, after
 * the last only if none is newer).
 */
function timeline(
  messages: MessageRow[],
  events: TrustEvent[],
  ends: { hasOlder: boolean; hasNewer: boolean },
): TimelineItem[] {
  const from = ends.hasOlder ? messages[0]?.sentAt ?? Infinity : -Infinity;
  const to = ends.hasNewer ? messages.at(-1)?.sentAt ?? -Infinity : Infinity;
  const items: Array<{ at: number; item: TimelineItem }> = [
    ...messages.map((m) => ({ at: m.sentAt, item: { message: m } })),
    ...events.filter((e) => e.at >= from && e.at <= to).map((e) => ({
      at: e.at,
      item: { event: e },
    })),
  ];
  // Stable: messages keep their order, a marker goes after the messages of its moment.
  return items.sort((a, b) => a.at - b.at).map((x) => x.item);
}

/**
 * Message list (own vs theirs, status, path) plus input and Send. The list holds a window of the
 * conversation whatever its length, paged as the reader scrolls (message_list.tsx).
 */
export function ChatView({ model }: { model: ChatModel }) {
  const peer = model.openPeer.value;
  const me = model.me.value;
  const messages = model.messages.value;
  const isDirect = peer ? model.channels.value[peer] === true : false;
  const online = model.contacts.value.some((c) => c.username === peer && c.online);
  const [draft, setDraft] = useState("");
  const [showKey, setShowKey] = useState(false);
  const [mode, setMode] = useState<ComposeMode | null>(null);
  const views = model.views.value;
  const discarded = peer ? model.warnings.value[peer] ?? [] : [];
  const trust = peer ? model.trust.value[peer] : undefined;
  const keyChanged = trust?.status === "changed";
  const noKeys = trust?.status === "no_keys";
  const events = trust?.pin?.events ?? [];
  const hasOlder = model.hasOlder.value;
  const hasNewer = model.hasNewer.value;
  // Messages that came while the reader was scrolled up: "new messages" is offered.
  const unseen = model.unseen.value;
  const last = messages.at(-1);
  const focused = model.focused.value;
  const readUpTo = peer ? model.readUpTo.value[peer] ?? 0 : 0;
  const isTyping = peer ? model.typing.value[peer] === true : false;
  const offline = model.offlineNotice.value !== null;
  const list = useMessageList(model, peer, {
    isOwnNew: last?.sender === me && last?.status === "sending",
    endChanges: [discarded.length, events.length],
  });
  const { listRef, following, toNewest } = list;

  useLayoutEffect(() => setMode(null), [peer]);

  // A search result picked: bring its message into view (the reader is no longer at the end).
  useLayoutEffect(() => {
    const el = focused
      ? listRef.current?.querySelector(`[data-id="${CSS.escape(focused)}"]`)
      : null;
    if (!el) return;
    el.scrollIntoView({ block: "center" });
    following.current = false;
    model.follow(false);
  }, [focused, peer]);

  if (!peer) return <section class="chat empty">Pick a contact to start chatting.</section>;

  const submit = (e: Event) => {
    e.preventDefault();
    const text = draft;
    if (!text.trim()) return;
    setDraft("");
    setMode(null);
    model.stoppedTyping();
    // One's own message shows at the end: the view goes there.
    if (model.hasNewer.peek()) toNewest();
    void sendDraft(model, mode, text);
  };

  const compose = (next: ComposeMode) => {
    setMode(next);
    if (next.kind === "edit") setDraft(views.get(next.id)?.text ?? "");
    document.getElementById("chat-input")?.focus();
  };

  /** A reply's quote was clicked: its original comes into view (loaded first if need be). */
  const openQuote = (id: string) => {
    const el = listRef.current?.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (el) {
      el.scrollIntoView({ block: "center" });
      following.current = false;
      model.follow(false);
    } else model.showMessage(peer, id);
  };

  return (
    <section class="chat" aria-label={`Chat with ${peer}`}>
      <header class="chat-header">
        <button
          type="button"
          class="back"
          onClick={() => model.openChat(null)}
          aria-label="Back to contacts"
        >
          ‹
        </button>
        <span class={online ? "dot online" : "dot"} aria-hidden="true" />
        <strong>{peer}</strong>
        <span class="path">
          {isDirect
            ? "direct (p2p)"
            : online
            ? "via server"
            : "offline: messages wait on the servers"}
        </span>
        <button
          type="button"
          class="link"
          data-testid="show-fingerprint"
          aria-expanded={showKey}
          onClick={() => setShowKey(!showKey)}
        >
          {showKey ? "Hide key" : "Key"}
        </button>
      </header>
      <RequestBar model={model} peer={peer} />
      {showKey && (
        <>
          <Fingerprint model={model} user={peer} testId="fingerprint" />
          {!keyChanged && <SafetyNumber model={model} peer={peer} />}
        </>
      )}
      {keyChanged && (
        <div class="warning" data-testid="key-changed" role="alert">
          <p>
            {trust?.pin?.pending?.keyId === null
              ? `The servers now say ${peer} has no keys, but you have a key of ${peer} that you ` +
                "trust. Nothing is sent to them until the servers give that key again, or you " +
                "compare and accept a new one."
              : `The key of ${peer} changed. Nothing is sent to ${peer} until you compare the ` +
                "safety number with them and accept the new key."}
          </p>
          <SafetyNumber model={model} peer={peer} />
        </div>
      )}
      {noKeys && (
        <p class="warning" data-testid="no-keys" role="status">
          {`${peer} has no keys: messages to ${peer} cannot be encrypted, so you cannot write ` +
            `to ${peer}.`}
        </p>
      )}
      <ol
        class="messages"
        ref={listRef}
        data-testid="messages"
        onScroll={list.onScroll}
      >
        {hasOlder && <PageButton list={list} paged={model} />}
        {timeline(messages, events, { hasOlder, hasNewer }).map((item) =>
          "event" in item
            ? (
              <li
                key={`key-${item.event.at}-${item.event.kind}`}
                data-testid="key-marker"
                data-kind={item.event.kind}
                class="message key-marker"
              >
                <span class="text">
                  {`${item.event.kind === "changed" || item.event.kind === "missing" ? "⚠" : "✓"} ${
                    eventText(peer, item.event)
                  } · ${time.format(item.event.at)}`}
                </span>
              </li>
            )
            : (
              <MessageItem
                key={item.message.id}
                m={item.message}
                own={item.message.sender === me}
                focused={item.message.id === focused}
                read={item.message.sender === me && item.message.sentAt <= readUpTo}
                offline={offline}
                view={views.get(item.message.id)}
                model={model}
                onCompose={compose}
                onOpenQuote={openQuote}
              />
            )
        )}
        {hasNewer && <PageButton list={list} paged={model} newer />}
        {!hasNewer && discarded.map((w) => (
          <li
            key={`refused-${w.id}`}
            data-testid="refused"
            data-id={w.id}
            data-from={w.from}
            class="message warning"
            role="alert"
          >
            <span class="text">⚠ {w.text}</span>
          </li>
        ))}
        {(hasNewer || unseen > 0) && (
          <li class="jump-newest">
            <button type="button" data-testid="jump-newest" onClick={toNewest}>
              {unseen === 1
                ? "1 new message ↓"
                : unseen > 1
                ? `${unseen} new messages ↓`
                : "Newest messages ↓"}
            </button>
          </li>
        )}
      </ol>
      <p class="typing" data-testid="typing" aria-live="polite">
        {isTyping ? `${peer} is typing…` : ""}
      </p>
      <ComposeBanner
        mode={mode}
        onCancel={() => {
          if (mode?.kind === "edit") setDraft("");
          setMode(null);
        }}
      />
      <form class="composer" onSubmit={submit}>
        <label class="sr-only" for="chat-input">Message to {peer}</label>
        <input
          id="chat-input"
          data-testid="chat-input"
          disabled={keyChanged || noKeys}
          value={draft}
          placeholder={`Message ${peer}`}
          maxLength={4000}
          autocomplete="off"
          onInput={(e) => {
            const value = e.currentTarget.value;
            setDraft(value);
            if (value) model.typingNow();
            else model.stoppedTyping();
          }}
          onBlur={() => model.stoppedTyping()}
        />
        <AttachButton model={model} disabled={keyChanged || noKeys} />
        <button type="submit" class="primary" data-testid="send" disabled={keyChanged || noKeys}>
          Send
        </button>
      </form>
    </section>
  );
}
