/** The history hand-over between this user's devices, as a status line with progress. */
import type { ChatModel } from "../chat_model.ts";

/**
 * "Handing your history to your new device… n/N" on the superseded device, "Receiving history
 * from your other device… n/N" on the new one; a warning when it failed. Nothing otherwise.
 */
export function HandoverStatus({ model }: { model: ChatModel }) {
  const state = model.handover.value;
  if (!state) return null;
  const busy = state.phase === "connecting" || state.phase === "transferring";
  return (
    <div
      class={state.phase === "failed" ? "handover warning" : "handover"}
      data-testid="handover-status"
      data-role={state.role}
      data-phase={state.phase}
      data-done={String(state.done)}
      data-total={state.total === null ? "" : String(state.total)}
      role="status"
    >
      <span>{state.text}</span>
      {busy && state.total !== null && state.total > 0 && (
        <progress max={state.total} value={state.done} />
      )}
      {!busy && state.role === "receiving" && (
        <button
          type="button"
          class="link"
          onClick={() => model.handover.value = null}
        >
          Dismiss
        </button>
      )}
    </div>
  );
}
