/** A handed-over history kept on this device at the user's request: shown, never sent from. */
import type { ChatModel } from "../chat_model.ts";
import { shownText } from "../message_ops.ts";

/** The read-only copy: a clear statement, its conversations, and no way to write. */
export function ReadOnlyCopyView({ model }: { model: ChatModel }) {
  const copy = model.readOnly.value;
  if (!copy) return null;
  return (
    <section class="read-only" data-testid="readonly-copy" aria-label="Read-only copy">
      <p class="warning" data-testid="readonly-statement" role="status">
        Read-only copy of{" "}
        {copy.user}'s history. You signed in on another device, which now holds your history; this
        device keeps this copy at your request and cannot send messages. Log in here again to use
        this device.
      </p>
      <div class="read-only-peers">
        {copy.peers.map((peer) => (
          <button
            type="button"
            class={peer === copy.peer ? "link active" : "link"}
            data-testid="readonly-contact"
            data-username={peer}
            onClick={() => model.openReadOnlyChat(peer)}
          >
            {peer}
          </button>
        ))}
      </div>
      {copy.peer && (
        <ol class="messages" data-testid="readonly-messages">
          {copy.messages.map((m) => (
            <li data-testid="readonly-message" data-from={m.sender}>
              <span class="from">{m.sender}</span>{" "}
              <span class="text">{shownText(m.text) || "message deleted"}</span>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
