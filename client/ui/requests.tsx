/**
 * Message requests (people not in the contacts who wrote) and blocked users: the lists under the
 * contacts, and the bar over a request's conversation that accepts or blocks its sender.
 */
import type { ChatModel } from "../chat_model.ts";

/** The requests (open one to read it) and the blocked users (each can be unblocked). */
export function RequestLists({ model }: { model: ChatModel }) {
  const requests = model.requests.value;
  const blocked = model.blocked.value;
  const open = model.openPeer.value;
  const unread = model.unread.value;
  return (
    <>
      {requests.length > 0 && (
        <section class="requests" aria-label="Message requests">
          <h2>Requests</h2>
          <ul>
            {requests.map((name) => (
              <li key={name}>
                <button
                  type="button"
                  data-testid={`request-${name}`}
                  class={name === open ? "contact selected" : "contact"}
                  onClick={() => model.openChat(name)}
                >
                  <span class="name">{name}</span>
                  {(unread[name] ?? 0) > 0 && <span class="badge">{unread[name]}</span>}
                </button>
              </li>
            ))}
          </ul>
        </section>
      )}
      {blocked.length > 0 && (
        <details class="blocked">
          <summary data-testid="blocked-list">Blocked ({blocked.length})</summary>
          <ul>
            {blocked.map((name) => (
              <li key={name} data-testid={`blocked-${name}`}>
                <span class="name">{name}</span>
                <button
                  type="button"
                  class="link"
                  data-testid={`unblock-${name}`}
                  onClick={() => void model.unblock(name)}
                >
                  Unblock
                </button>
              </li>
            ))}
          </ul>
        </details>
      )}
    </>
  );
}

/** Over the conversation with `peer` when they are a request: accept them, or block them. */
export function RequestBar({ model, peer }: { model: ChatModel; peer: string }) {
  if (!model.requests.value.includes(peer)) return null;
  return (
    <div class="request-bar" data-testid="request-bar" role="status">
      <p>{peer} is not in your contacts. Accept to add them, or block them.</p>
      <button
        type="button"
        data-testid="accept-request"
        onClick={() => void model.acceptRequest(peer)}
      >
        Accept
      </button>
      <button type="button" data-testid="block-user" onClick={() => void model.block(peer)}>
        Block
      </button>
    </div>
  );
}
