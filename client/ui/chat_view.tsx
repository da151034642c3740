/** The open conversation: messages and the input line. */
import { useEffect, useRef, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import type { MessageRow } from "../history.ts";
import type { TrustEvent } from "../trust.ts";
import { Fingerprint, SafetyNumber } from "./fingerprint.tsx";

const STATUS_TEXT = {
  sending: "sending…",
  sent: "✓ sent, pending",
  delivered: "✓✓ delivered",
  failed: "not stored, will retry",
} as const;

const PATH_TEXT = { p2p: "direct", relay: "via server", mailbox: "mailbox" } as const;

/** The status line of one of my messages, as people read it (`offline`: no server answers). */
function statusText(m: MessageRow, offline: boolean): string {
  if (m.status === "sent" && m.via === "mailbox") return "✓ stored on the servers, pending";
  if (offline && (m.status === "sending" || m.status === "failed")) {
    return "queued on this device, goes out when a server is back";
  }
  return STATUS_TEXT[m.status];
}

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

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

/** The conversation's messages with the key markers between them, by time. */
function timeline(messages: MessageRow[], events: TrustEvent[]): TimelineItem[] {
  const items: Array<{ at: number; item: TimelineItem }> = [
    ...messages.map((m) => ({ at: m.sentAt, item: { message: m } })),
    ...events.map((e) => ({ at: e.at, item: { event: e } })),
  ];
  // Stable: messages keep their order, a marker goes after the messages of its moment.
  return items.sort((a, b) => a.at - b.at).map((x) => x.item);
}

/** Message list (own vs theirs, status, path) plus input and Send. */
export function ChatView({ model }: { model: ChatModel }) {
  const peer = model.openPeer.value;
  const me = model.me.value;
  const messages = model.messages.value;
  const isDirect = peer ? model.channels.value[peer] === true : false;
  const online = model.contacts.value.some((c) => c.username === peer && c.online);
  const [draft, setDraft] = useState("");
  const [showKey, setShowKey] = useState(false);
  const discarded = peer ? model.warnings.value[peer] ?? [] : [];
  const trust = peer ? model.trust.value[peer] : undefined;
  const keyChanged = trust?.status === "changed";
  const noKeys = trust?.status === "no_keys";
  const events = trust?.pin?.events ?? [];
  const listRef = useRef<HTMLOListElement>(null);

  useEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages.length, discarded.length, events.length, peer]);

  if (!peer) return <section class="chat empty">Pick a contact to start chatting.</section>;

  const submit = (e: Event) => {
    e.preventDefault();
    const text = draft;
    if (!text.trim()) return;
    setDraft("");
    void model.send(text);
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
      <ol class="messages" ref={listRef}>
        {timeline(messages, events).map((item) =>
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
                me={me}
                offline={model.offlineNotice.value !== null}
              />
            )
        )}
        {discarded.map((w) => (
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
      </ol>
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
          onInput={(e) => setDraft(e.currentTarget.value)}
        />
        <button type="submit" class="primary" data-testid="send" disabled={keyChanged || noKeys}>
          Send
        </button>
      </form>
    </section>
  );
}

/** One message of the conversation. */
function MessageItem(
  { m, me, offline }: { m: MessageRow; me: string | null; offline: boolean },
) {
  return (
    <li
      data-testid="message"
      data-id={m.id}
      data-from={m.sender}
      data-via={m.via}
      data-status={m.status}
      class={m.sender === me ? "message own" : "message theirs"}
    >
      <span class="text">{m.text}</span>
      <span class="meta">
        {time.format(m.sentAt)}
        {m.status === "failed" || m.status === "sending" ? "" : ` · ${PATH_TEXT[m.via]}`}
        {m.sender === me && (
          <span class="status" data-testid="message-status">
            {` · ${statusText(m, offline)}`}
          </span>
        )}
      </span>
    </li>
  );
}
