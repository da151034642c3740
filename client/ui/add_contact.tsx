/**
 * Adding a contact — by exact username, or by a link (`#add=<name>&fp=<key id>`) opened in this
 * app, which fills the form in and makes the servers' keys for that name match the link's key
 * id — and the user's own link with its QR code.
 */
import { useEffect, useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import {
  BadContactLinkError,
  type ContactLink,
  contactLink,
  parseContactLink,
} from "../contacts.ts";
import { QrCode } from "./fingerprint.tsx";

/** The contact link in the page's address, if any (then taken out of the address). */
function takeLinkFromAddress(): { link: ContactLink | null; error: string | null } {
  try {
    const link = parseContactLink(location.hash);
    if (link) history.replaceState(null, "", location.pathname + location.search);
    return { link, error: null };
  } catch (err) {
    history.replaceState(null, "", location.pathname + location.search);
    return { link: null, error: err instanceof BadContactLinkError ? err.message : String(err) };
  }
}

/** The add-contact form. */
export function AddContact({ model }: { model: ChatModel }) {
  const [name, setName] = useState("");
  const [link, setLink] = useState<ContactLink | null>(null);
  const [message, setMessage] = useState<{ text: string; isError: boolean } | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const read = () => {
      const { link, error } = takeLinkFromAddress();
      if (link) {
        setName(link.username);
        setLink(link);
        setMessage({
          text: `From a link: add ${link.username}? Their key must match the link's.`,
          isError: false,
        });
      } else if (error) setMessage({ text: error, isError: true });
    };
    read();
    addEventListener("hashchange", read);
    return () => removeEventListener("hashchange", read);
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const username = name.trim();
    if (!username || busy) return;
    setBusy(true);
    // The link's key id only holds for the name it came with.
    const keyId = link?.username === username ? link.keyId : undefined;
    const error = await model.addContact(username, keyId);
    setBusy(false);
    if (error) return setMessage({ text: error, isError: true });
    setName("");
    setLink(null);
    setMessage({ text: `${username} is now a contact`, isError: false });
  };

  return (
    <form class="add-contact" onSubmit={submit} aria-label="Add a contact">
      <label class="sr-only" for="add-contact-name">Username to add</label>
      <input
        id="add-contact-name"
        data-testid="add-contact-name"
        value={name}
        placeholder="Exact username"
        autocomplete="off"
        maxLength={32}
        onInput={(e) => {
          setName(e.currentTarget.value);
          setMessage(null);
        }}
      />
      <button type="submit" data-testid="add-contact-submit" disabled={busy || !name.trim()}>
        Add
      </button>
      {message && (
        <p
          class={message.isError ? "add-contact-error" : "add-contact-note"}
          data-testid="add-contact-message"
          data-error={String(message.isError)}
          role={message.isError ? "alert" : "status"}
        >
          {message.text}
        </p>
      )}
    </form>
  );
}

/** The user's own add-contact link and its QR code, for others to add them. */
export function MyContactLink({ model }: { model: ChatModel }) {
  const me = model.me.value;
  const [keyId, setKeyId] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    model.myKeyId().then((id) => live && setKeyId(id), () => live && setKeyId(null));
    return () => {
      live = false;
    };
  }, [me]);
  if (!me || !keyId) return null;
  const url = contactLink(location.origin, { username: me, keyId });
  return (
    <div class="my-link">
      <p>Others add you with this link (or by your exact username):</p>
      <code data-testid="my-contact-link">{url}</code>
      <QrCode text={url} label="QR code of your contact link" testId="my-contact-qr" />
    </div>
  );
}
