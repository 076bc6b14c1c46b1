// Noroshi console: live status and live previews. Every page works without this script;
// it only saves reloads. No framework, nothing from another host.
"use strict";

// An announcement's state on every channel, polled every two seconds until each channel
// is done (sent, failed or cancelled).
function liveStatus(table) {
  const url = table.dataset.statusUrl;
  const note = document.getElementById("live-note");
  const headline = document.getElementById("announcement-status");
  const done = (s) => s === "sent" || s === "failed" || s === "cancelled";
  async function tick() {
    let finished = false;
    try {
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error(String(r.status));
      const v = await r.json();
      if (headline) headline.textContent = v.status_label;
      finished = v.channels.length > 0 && v.channels.every((c) => done(c.status))
        && !v.status.startsWith("awaiting");
      for (const c of v.channels) {
        const row = table.querySelector(`tr[data-channel="${CSS.escape(c.channel)}"]`);
        if (!row) continue;
        const cell = row.querySelector(".status");
        if (cell.dataset.status !== c.status) {
          cell.dataset.status = c.status;
          cell.textContent = c.status_label;
        }
        row.querySelector(".count").textContent = `${c.sent}／${c.total}`;
        row.querySelector(".last-error").textContent = c.last_error;
      }
      if (note) note.textContent = "";
    } catch (e) {
      if (note) note.textContent = document.documentElement.lang === "en"
        ? "Could not refresh the status; retrying."
        : "状況を更新できませんでした。再試行します。";
    }
    if (!finished) setTimeout(tick, 2000);
  }
  setTimeout(tick, 1000);
}

// Previews that follow the text as it is typed: the form is posted with action=preview
// (the server's own rendering, exactly what each platform receives) and the previews
// section is swapped in.
function livePreview(form) {
  const target = document.getElementById(form.dataset.preview);
  if (!target) return;
  let timer = null;
  let seq = 0;
  async function refresh() {
    const mine = ++seq;
    const body = new URLSearchParams(new FormData(form));
    body.set("action", "preview");
    try {
      const r = await fetch(form.action, { method: "POST", body, credentials: "same-origin" });
      const html = await r.text();
      if (mine !== seq) return;
      const doc = new DOMParser().parseFromString(html, "text/html");
      const fresh = doc.getElementById(form.dataset.preview);
      if (fresh) target.innerHTML = fresh.innerHTML;
    } catch (e) {
      // The buttons still work; nothing to do.
    }
  }
  form.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 600);
  });
}

// A send that needs an explicit second look: the button asks before the form goes.
function confirmBeforeSend(button) {
  button.addEventListener("click", (e) => {
    if (!window.confirm(button.dataset.confirm)) e.preventDefault();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("channel-status");
  if (table && table.dataset.statusUrl) liveStatus(table);
  document.querySelectorAll("form[data-preview]").forEach(livePreview);
  document.querySelectorAll("button[data-confirm]").forEach(confirmBeforeSend);
});
