/**
 * Replies, reactions, edits and deletes in the conversation view (client/message_ops.ts): what a
 * message shows once they apply (the quoted message above it, the edited text, "message
 * deleted", reaction counts under it), the actions a message offers, and the composer's
 * "replying to" / "editing" line.
 */
import { useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import type { MessageRow } from "../history.ts";
import { type MessageView, REACTIONS } from "../message_ops.ts";

/** What the composer does with the next text: a reply, or an edit of an own message. */
export type ComposeMode =
  | { kind: "reply"; id: string; sender: string; snippet: string }
  | { kind: "edit"; id: string };

/** Whether two views show the same (a message redraws only when its view changes). */
export function sameView(a: MessageView | undefined, b: MessageView | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.text === b.text && a.deleted === b.deleted && a.editedAt === b.editedAt &&
    a.replyTo?.id === b.replyTo?.id && a.replyTo?.snippet === b.replyTo?.snippet &&
    a.replyTo?.deleted === b.replyTo?.deleted &&
    a.reactions.map((r) => `${r.emoji}${r.count}${r.mine}`).join() ===
      b.reactions.map((r) => `${r.emoji}${r.count}${r.mine}`).join();
}

/**
 * The quoted message above a reply; clicking it brings the original into view (without
 * `onOpen`: shown only).
 */
function Quote(
  { view, onOpen }: { view: MessageView; onOpen?: (id: string) => void },
) {
  const q = view.replyTo;
  if (!q) return null;
  const content = (
    <>
      <strong data-testid="quote-sender">{q.sender ?? "unknown"}</strong>
      <span data-testid="quote-snippet">
        {q.deleted ? "message deleted" : q.sender === null ? "message not loaded" : q.snippet}
      </span>
    </>
  );
  if (!onOpen) {
    return <span class="quote" data-testid="reply-quote" data-reply-to={q.id}>{content}</span>;
  }
  return (
    <button
      type="button"
      class="quote"
      data-testid="reply-quote"
      data-reply-to={q.id}
      onClick={() => onOpen(q.id)}
    >
      {content}
    </button>
  );
}

/**
 * The body of a message: the quote of a reply, the (edited) text or "message deleted", and the
 * reaction counts (each toggles this user's reaction). Without `model` (the read-only copy),
 * nothing in it acts: the quote and the counts are shown only.
 */
export function MessageBody(
  { m, view, model, onOpenQuote, textless = false }: {
    m: MessageRow;
    view: MessageView | undefined;
    model?: ChatModel;
    onOpenQuote?: (id: string) => void;
    /** The message is a file: its attachment, shown before, names it (no text line). */
    textless?: boolean;
  },
) {
  if (!view) return textless ? null : <span class="text">{m.text}</span>;
  if (view.deleted) {
    return <span class="text deleted" data-testid="deleted">message deleted</span>;
  }
  return (
    <>
      <Quote view={view} onOpen={onOpenQuote} />
      {!textless && <span class="text">{view.text}</span>}
      {view.editedAt !== null && <span class="edited" data-testid="edited">edited</span>}
      {view.reactions.length > 0 && (
        <span class="reactions" data-testid="reactions">
          {view.reactions.map((r) =>
            !model
              ? (
                <span
                  key={r.emoji}
                  class="reaction"
                  data-testid="reaction"
                  data-emoji={r.emoji}
                  data-count={r.count}
                >
                  {`${r.emoji} ${r.count}`}
                </span>
              )
              : (
                <button
                  type="button"
                  key={r.emoji}
                  class={r.mine ? "reaction mine" : "reaction"}
                  data-testid="reaction"
                  data-emoji={r.emoji}
                  data-count={r.count}
                  data-mine={r.mine ? "true" : "false"}
                  aria-pressed={r.mine}
                  title={r.mine ? "Take your reaction back" : "React too"}
                  onClick={() =>
                    void model.sendOp({ kind: "react", target: m.id, emoji: r.emoji, on: !r.mine })}
                >
                  {`${r.emoji} ${r.count}`}
                </button>
              )
          )}
        </span>
      )}
    </>
  );
}

/** The actions of one message, behind a small "⋯" button. */
export function MessageActions(
  { m, own, view, model, onCompose }: {
    m: MessageRow;
    own: boolean;
    view: MessageView | undefined;
    model: ChatModel;
    onCompose: (mode: ComposeMode) => void;
  },
) {
  const [open, setOpen] = useState(false);
  if (!view || view.deleted) return null;
  const mine = new Set(view.reactions.filter((r) => r.mine).map((r) => r.emoji));
  const act = (fn: () => void) => () => {
    setOpen(false);
    fn();
  };
  return (
    <span class="message-actions">
      <button
        type="button"
        class="link"
        data-testid="message-actions"
        aria-expanded={open}
        aria-label="Message actions"
        onClick={() => setOpen(!open)}
      >
        ⋯
      </button>
      {open && (
        <span class="action-bar" data-testid="action-bar">
          {REACTIONS.map((emoji) => (
            <button
              type="button"
              key={emoji}
              class={mine.has(emoji) ? "react mine" : "react"}
              data-testid="react"
              data-emoji={emoji}
              aria-pressed={mine.has(emoji)}
              onClick={act(() =>
                void model.sendOp({ kind: "react", target: m.id, emoji, on: !mine.has(emoji) })
              )}
            >
              {emoji}
            </button>
          ))}
          <button
            type="button"
            class="link"
            data-testid="action-reply"
            onClick={act(() =>
              onCompose({
                kind: "reply",
                id: m.id,
                sender: m.sender,
                snippet: view.text.slice(0, 80),
              })
            )}
          >
            Reply
          </button>
          {own && (
            <button
              type="button"
              class="link"
              data-testid="action-edit"
              onClick={act(() => onCompose({ kind: "edit", id: m.id }))}
            >
              Edit
            </button>
          )}
          {own && (
            <button
              type="button"
              class="link"
              data-testid="action-delete-everyone"
              onClick={act(() => void model.sendOp({ kind: "delete", target: m.id }))}
            >
              Delete for everyone
            </button>
          )}
          {(!own || m.status === "delivered") && (
            <button
              type="button"
              class="link"
              data-testid="action-delete-me"
              onClick={act(() => void model.deleteForMe(m.id))}
            >
              Delete for me
            </button>
          )}
        </span>
      )}
    </span>
  );
}

/** The composer's line saying what the next send does, with a way out. */
export function ComposeBanner(
  { mode, onCancel }: { mode: ComposeMode | null; onCancel: () => void },
) {
  if (!mode) return null;
  return (
    <div class="compose-mode" data-testid="compose-mode" data-kind={mode.kind}>
      <span>
        {mode.kind === "reply" ? `Replying to ${mode.sender}: ${mode.snippet}` : "Editing"}
      </span>
      <button type="button" class="link" data-testid="compose-cancel" onClick={onCancel}>
        Cancel
      </button>
    </div>
  );
}

/**
 * Sends `text` as the composer's mode says: a reply, an edit, or (no mode) a plain message.
 * Resolves whether it went out (an edit or reply refused shows its error).
 */
export function sendDraft(
  model: ChatModel,
  mode: ComposeMode | null,
  text: string,
): Promise<boolean> {
  text = text.trim();
  if (mode?.kind === "reply") return model.sendOp({ kind: "reply", replyTo: mode.id, text });
  if (mode?.kind === "edit") return model.sendOp({ kind: "edit", target: mode.id, text });
  return model.send(text).then(() => true);
}
