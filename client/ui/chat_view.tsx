/** The open conversation: messages and the input line. */
import { useEffect, useRef, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import type { MessageRow } from "../history.ts";
import { Fingerprint } from "./fingerprint.tsx";

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
  const keyChanged = peer ? model.keyChanged.value[peer] === true : false;
  const unencrypted = peer ? model.unencrypted.value[peer] === true : false;
  const listRef = useRef<HTMLOListElement>(null);

  useEffect(() => {
    const el = listRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages.length, discarded.length, peer]);

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
      {showKey && <Fingerprint model={model} user={peer} testId="fingerprint" />}
      {keyChanged && (
        <p class="warning" data-testid="key-changed" role="alert">
          The key of {peer}{" "}
          has changed since you last talked. Compare fingerprints out of band before trusting new
          messages.
        </p>
      )}
      {unencrypted && (
        <p class="warning" data-testid="unencrypted" role="status">
          {peer}'s account has no keys: messages with {peer} cannot be encrypted.
        </p>
      )}
      <ol class="messages" ref={listRef}>
        {messages.map((m) => (
          <li
            key={m.id}
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
                  {` · ${statusText(m, model.offlineNotice.value !== null)}`}
                </span>
              )}
            </span>
          </li>
        ))}
        {discarded.map((w) => (
          <li
            key={`tampered-${w.id}`}
            data-testid="tampered"
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
          value={draft}
          placeholder={`Message ${peer}`}
          maxLength={4000}
          autocomplete="off"
          onInput={(e) => setDraft(e.currentTarget.value)}
        />
        <button type="submit" class="primary" data-testid="send">Send</button>
      </form>
    </section>
  );
}
