/** A handed-over history kept on this device at the user's request: shown, never sent from. */
import { Component } from "preact";
import type { ChatModel } from "../chat_model.ts";
import type { MessageRow } from "../history.ts";
import { DELETED_TEXT, type MessageView } from "../message_ops.ts";
import { MessageBody, sameView } from "./message_actions.tsx";
import { Attachment } from "./attachment.tsx";
import { PageButton, useMessageList } from "./message_list.tsx";

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

interface ItemProps {
  m: MessageRow;
  /** Written by the copy's owner. */
  own: boolean;
  view: MessageView | undefined;
  model: ChatModel;
}

/**
 * One message of the copy, as the chat shows it (its edits, deletes, reply quote and reactions
 * applied; a file by its name) but with nothing to act on: no actions, no reaction buttons.
 */
class ReadOnlyItem extends Component<ItemProps> {
  override shouldComponentUpdate(next: ItemProps): boolean {
    return next.m !== this.props.m || next.own !== this.props.own ||
      !sameView(next.view, this.props.view);
  }

  override render() {
    const { m, own, view, model } = this.props;
    return (
      <li
        data-testid="readonly-message"
        data-id={m.id}
        data-from={m.sender}
        class={own ? "message own" : "message theirs"}
      >
        <span class="from">{m.sender}</span>{" "}
        {m.attachment && !view?.deleted && m.text !== DELETED_TEXT && (
          <Attachment model={model} id={m.id} attachment={m.attachment} own={own} />
        )}
        <MessageBody m={m} view={view} textless={!!m.attachment} />
        <span class="meta">{time.format(m.sentAt)}</span>
      </li>
    );
  }
}

/**
 * The read-only copy: a clear statement, its conversations, and no way to write. The open
 * conversation shows a window of it, paged as the reader scrolls, like the chat.
 */
export function ReadOnlyCopyView({ model }: { model: ChatModel }) {
  const copy = model.readOnly.value;
  const paged = model.readOnlyChat;
  const messages = paged.messages.value;
  const views = paged.views.value;
  const list = useMessageList(paged, copy?.peer ?? null);
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
            aria-pressed={peer === copy.peer}
            onClick={() => model.openReadOnlyChat(peer)}
          >
            {peer}
          </button>
        ))}
      </div>
      {copy.peer && (
        <ol
          class="messages"
          data-testid="readonly-messages"
          aria-label={`Conversation with ${copy.peer} (read-only)`}
          ref={list.listRef}
          onScroll={list.onScroll}
        >
          {paged.hasOlder.value && <PageButton list={list} paged={paged} />}
          {messages.map((m) => (
            <ReadOnlyItem
              key={m.id}
              m={m}
              own={m.sender === copy.user}
              view={views.get(m.id)}
              model={model}
            />
          ))}
          {paged.hasNewer.value && <PageButton list={list} paged={paged} newer />}
          {paged.hasNewer.value && (
            <li class="jump-newest">
              <button type="button" data-testid="jump-newest" onClick={list.toNewest}>
                Newest messages ↓
              </button>
            </li>
          )}
        </ol>
      )}
    </section>
  );
}
