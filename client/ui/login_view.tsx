/** The login/register screen. */
import { useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import { HandoverStatus } from "./handover_status.tsx";
import { ReadOnlyCopyView } from "./read_only_copy.tsx";

/** Username + password with Register and Log in buttons, and the error line. */
export function LoginView({ model }: { model: ChatModel }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const busy = model.busy.value;
  return (
    <form
      class="login"
      onSubmit={(e) => {
        e.preventDefault();
        void model.login(username, password);
      }}
    >
      <h1>P2P-Chat</h1>
      <p class="tagline">Messages go straight from browser to browser.</p>
      {model.signedOutReason.value && (
        <p class="signed-out" data-testid="signed-out-reason" role="status">
          {model.signedOutReason.value}
        </p>
      )}
      <HandoverStatus model={model} />
      <label>
        Username
        <input
          data-testid="username"
          name="username"
          autocomplete="username"
          autocapitalize="none"
          spellcheck={false}
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
        />
      </label>
      <label>
        Password
        <input
          data-testid="password"
          name="password"
          type="password"
          autocomplete="current-password"
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
      </label>
      <label class="setting">
        <input
          type="checkbox"
          data-testid="keep-copy"
          checked={model.keepCopy.value}
          onChange={(e) => model.setKeepCopy(e.currentTarget.checked)}
        />
        Keep a read-only copy of my history on this device when I sign in elsewhere
      </label>
      <div class="buttons">
        <button
          type="button"
          data-testid="register"
          disabled={busy}
          onClick={() => void model.register(username, password)}
        >
          Register
        </button>
        <button type="submit" class="primary" data-testid="login" disabled={busy}>
          Log in
        </button>
      </div>
      <p class="error" data-testid="auth-error" role="alert">
        {model.restoring.value
          ? (model.offlineNotice.value
            ? "Restoring your session: no server answers yet, retrying… You can also log in again."
            : "Restoring your session…")
          : model.progress.value ?? model.error.value ?? ""}
      </p>
      <ReadOnlyCopyView model={model} />
    </form>
  );
}
