/** The application shell: header with connection status, then login or chat screens. */
import type { ChatModel } from "../chat_model.ts";
import { useState } from "preact/hooks";
import { ChatView } from "./chat_view.tsx";
import { Fingerprint } from "./fingerprint.tsx";
import { ContactList } from "./contact_list.tsx";
import { MyContactLink } from "./add_contact.tsx";
import { LoginView } from "./login_view.tsx";
import { HandoverStatus } from "./handover_status.tsx";
import { NotificationSettingsView } from "./notification_settings.tsx";
import { FileSizeSetting } from "./attachment.tsx";
import { HistoryBackup } from "./history_backup.tsx";

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
  const [showMyKey, setShowMyKey] = useState(false);
  return (
    <div class={model.openPeer.value ? "app chat-open" : "app"}>
      <header class="top">
        <span class="brand" translate={false}>P2P-Chat</span>
        <span class={`conn ${status}`} data-testid="conn-status" data-status={status}>
          {STATUS_TEXT[status]}
        </span>
        {me && (
          <>
            <span class="me" data-testid="me">{me}</span>
            <button
              type="button"
              class="link"
              data-testid="my-key"
              aria-expanded={showMyKey}
              onClick={() => setShowMyKey(!showMyKey)}
            >
              My key
            </button>
            <button
              type="button"
              class="link"
              data-testid="logout"
              onClick={() => model.logout()}
            >
              Log out
            </button>
          </>
        )}
      </header>
      {me
        ? (
          <>
            {showMyKey && (
              <section class="my-key" aria-label="My key">
                <p>Compare these with what your contacts see for you (by phone or in person).</p>
                <Fingerprint model={model} user={me} testId="my-fingerprint" />
                <MyContactLink model={model} />
                <label class="setting">
                  <input
                    type="checkbox"
                    data-testid="keep-copy-setting"
                    checked={model.keepCopy.value}
                    onChange={(e) => model.setKeepCopy(e.currentTarget.checked)}
                  />
                  Keep a read-only copy of my history on this device when I sign in elsewhere
                </label>
                <label class="setting">
                  <input
                    type="checkbox"
                    data-testid="read-receipts-setting"
                    checked={model.readReceipts.value}
                    onChange={(e) => model.setReadReceipts(e.currentTarget.checked)}
                  />
                  Send read receipts (contacts see when you have read their messages)
                </label>
                <NotificationSettingsView storage={localStorage} />
                <FileSizeSetting storage={localStorage} />
                <HistoryBackup model={model} />
              </section>
            )}
            {model.offlineNotice.value && (
              <p class="offline-banner" data-testid="offline-banner" role="status">
                {model.offlineNotice.value}
              </p>
            )}
            <HandoverStatus model={model} />
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
          </>
        )
        : <LoginView model={model} />}
    </div>
  );
}
