/** The application shell: header with connection status, then login or chat screens. */
import type { ChatModel } from "../chat_model.ts";
import { ChatView } from "./chat_view.tsx";
import { ContactList } from "./contact_list.tsx";
import { LoginView } from "./login_view.tsx";

const STATUS_TEXT = {
  offline: "offline",
  connecting: "connecting…",
  connected: "connected",
  online: "online",
} as const;

/** Root component. */
export function App({ model }: { model: ChatModel }) {
  const me = model.me.value;
  const status = model.status.value;
  return (
    <div class={model.openPeer.value ? "app chat-open" : "app"}>
      <header class="top">
        <span class="brand">P2P-Chat</span>
        <span class={`conn ${status}`} data-testid="conn-status" data-status={status}>
          {STATUS_TEXT[status]}
        </span>
        {me && (
          <>
            <span class="me" data-testid="me">{me}</span>
            <button type="button" class="link" onClick={() => model.logout()}>Log out</button>
          </>
        )}
      </header>
      {me
        ? (
          <main class="main">
            <ContactList model={model} />
            <ChatView model={model} />
            {model.error.value && (
              <p
                class="toast"
                role="alert"
                onClick={() => model.error.value = null}
              >
                {model.error.value}
              </p>
            )}
          </main>
        )
        : <LoginView model={model} />}
    </div>
  );
}
