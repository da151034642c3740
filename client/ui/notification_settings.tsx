/** The notification settings, with the browser's permission asked when the user turns them on. */
import { useState } from "preact/hooks";
import {
  loadNotificationSettings,
  type NotificationSettings,
  saveNotificationSettings,
} from "../notifications.ts";

/** Two checkboxes: notify of new messages while the app is hidden; show their text. */
export function NotificationSettingsView({ storage }: { storage: Storage }) {
  const [settings, setSettings] = useState(() => loadNotificationSettings(storage));
  const [problem, setProblem] = useState<string | null>(null);
  const supported = "Notification" in globalThis;
  const save = (next: NotificationSettings) => {
    saveNotificationSettings(storage, next);
    setSettings(next);
  };
  const toggle = async (enabled: boolean) => {
    setProblem(null);
    if (!enabled) return save({ ...settings, enabled });
    const permission = Notification.permission === "default"
      ? await Notification.requestPermission()
      : Notification.permission;
    if (permission !== "granted") {
      return setProblem(
        "This browser blocks notifications from this site: allow them in the site settings " +
          "(the icon left of the address), then turn this on again.",
      );
    }
    save({ ...settings, enabled });
  };
  if (!supported) return <p class="setting">This browser cannot show notifications.</p>;
  return (
    <>
      <label class="setting">
        <input
          type="checkbox"
          data-testid="notify-setting"
          checked={settings.enabled}
          onChange={(e) => void toggle(e.currentTarget.checked)}
        />
        Notify me of new messages while the app is in the background
      </label>
      <label class="setting">
        <input
          type="checkbox"
          data-testid="notify-text-setting"
          checked={settings.showText}
          disabled={!settings.enabled}
          onChange={(e) => save({ ...settings, showText: e.currentTarget.checked })}
        />
        Show the message text in notifications (it can be read on a locked screen)
      </label>
      {problem && <p class="warning" role="alert" data-testid="notify-problem">{problem}</p>}
    </>
  );
}
