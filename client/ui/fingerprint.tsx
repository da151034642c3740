/** A user's key fingerprints, for comparing out of band (by phone, in person). */
import { useEffect, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";

/** Shows the fingerprints of `user`'s encryption and signing keys once they are loaded. */
export function Fingerprint(
  { model, user, testId }: { model: ChatModel; user: string; testId: string },
) {
  const [text, setText] = useState<{ encryption: string; signing: string } | null | undefined>(
    undefined,
  );
  useEffect(() => {
    let live = true;
    setText(undefined);
    model.fingerprints(user).then(
      (fp) => live && setText(fp),
      () => live && setText(null),
    );
    return () => {
      live = false;
    };
  }, [user, model.keyChanged.value[user]]);
  return (
    <div class="fingerprint" data-testid={testId} data-user={user}>
      {text === undefined
        ? "Loading the key…"
        : text === null
        ? `${user} has no keys: messages are not encrypted`
        : (
          <>
            <span class="fp-label">Encryption key</span>
            <code data-testid={`${testId}-encryption`}>{text.encryption}</code>
            <span class="fp-label">Signing key</span>
            <code data-testid={`${testId}-signing`}>{text.signing}</code>
          </>
        )}
    </div>
  );
}
