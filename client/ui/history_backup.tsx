/** Export of the whole history to a passphrase-encrypted file, and import of such a file. */
import { useState } from "preact/hooks";
import type { ChatModel } from "../chat_model.ts";
import { exportHistory, HistoryFileError, importHistoryFile } from "../history_export.ts";

/** Rows imported per step (each step durable, the progress shown between them). */
const IMPORT_STEP = 5_000;

export function HistoryBackup({ model }: { model: ChatModel }) {
  const [passphrase, setPassphrase] = useState("");
  const [file, setFile] = useState<File | null>(null);
  const [status, setStatus] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const me = model.me.value;
  if (!me) return null;

  const run = async (work: () => Promise<string>) => {
    setBusy(true);
    try {
      setStatus(await work());
    } catch (err) {
      setStatus(
        err instanceof HistoryFileError ? err.message : `Failed: ${String(err)}. Try again.`,
      );
    } finally {
      setBusy(false);
    }
  };

  const doExport = () =>
    run(async () => {
      setStatus("Encrypting your history…");
      const rows = model.allMessages();
      const bytes = await exportHistory(me, rows, passphrase);
      const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `p2pchat-history-${me}-${new Date().toISOString().slice(0, 10)}.p2pchat`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      return `Exported ${rows.length} messages. Keep the file and its passphrase safe.`;
    });

  const doImport = () =>
    run(async () => {
      if (!file) return "Choose a history file first.";
      setStatus("Decrypting…");
      const rows = await importHistoryFile(
        new Uint8Array(await file.arrayBuffer()),
        passphrase,
        me,
      );
      let fresh = 0;
      for (let i = 0; i < rows.length; i += IMPORT_STEP) {
        fresh += await model.importHistory(rows.slice(i, i + IMPORT_STEP));
        setStatus(`Imported ${Math.min(i + IMPORT_STEP, rows.length)} of ${rows.length}…`);
      }
      return `Imported ${rows.length} messages (${fresh} new).`;
    });

  return (
    <fieldset class="backup" disabled={busy}>
      <legend>History backup</legend>
      <label class="setting">
        Passphrase
        <input
          type="password"
          data-testid="backup-passphrase"
          autocomplete="new-password"
          value={passphrase}
          onInput={(e) => setPassphrase(e.currentTarget.value)}
        />
      </label>
      <button type="button" data-testid="export-history" onClick={() => void doExport()}>
        Export history
      </button>
      <label class="setting">
        History file
        <input
          type="file"
          data-testid="import-file"
          accept=".p2pchat"
          onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)}
        />
      </label>
      <button type="button" data-testid="import-history" onClick={() => void doImport()}>
        Import
      </button>
      {status && <p role="status" data-testid="backup-status">{status}</p>}
    </fieldset>
  );
}
