/** The list of contacts with their online status. */
import type { ChatModel } from "../chat_model.ts";
import { MessageSearch } from "./message_search.tsx";
import { AddContact } from "./add_contact.tsx";
import { RequestLists } from "./requests.tsx";

/**
 * The add-contact form, the contacts (an online dot each, unread counts; click opens the chat),
 * then the message requests and the blocked users.
 */
export function ContactList({ model }: { model: ChatModel }) {
  const open = model.openPeer.value;
  const unread = model.unread.value;
  const contacts = model.contacts.value;
  const changed = model.keyChanged.value;
  return (
    <nav class="contacts" aria-label="Contacts">
      <MessageSearch model={model} />
      <AddContact model={model} />
      {contacts.length === 0 && (
        <p class="empty">No contacts yet: add someone by their exact username or their link.</p>
      )}
      <ul>
        {contacts.map((c) => (
          <li key={c.username}>
            <button
              type="button"
              data-testid={`contact-${c.username}`}
              data-online={String(c.online)}
              class={c.username === open ? "contact selected" : "contact"}
              onClick={() => model.openChat(c.username)}
            >
              <span class={c.online ? "dot online" : "dot"} aria-hidden="true" />
              <span class="name">{c.username}</span>
              {changed[c.username] && (
                <span
                  class="key-changed"
                  title="This contact's key changed"
                  aria-label="key changed"
                >
                  ⚠
                </span>
              )}
              <span class="sr-only">{c.online ? "online" : "offline"}</span>
              {(unread[c.username] ?? 0) > 0 && <span class="badge">{unread[c.username]}</span>}
            </button>
            <button
              type="button"
              class="link remove-contact"
              data-testid={`remove-contact-${c.username}`}
              aria-label={`Remove ${c.username} from your contacts`}
              title="Remove from contacts"
              onClick={() => void model.removeContact(c.username)}
            >
              ×
            </button>
          </li>
        ))}
      </ul>
      <RequestLists model={model} />
    </nav>
  );
}
