// Dimmer console: progressive enhancement, served from the binary as an ES module (the page's
// Content-Security-Policy allows no inline script). Without it, every form still works by a
// plain post and a redirect; with it, changes ask for confirmation, are sent without leaving
// the page, and the flag's state follows the server live through EventSource.

/** Shows `text` in the page's live region (read out by screen readers). */
function announce(text, isError) {
  const status = document.getElementById("live-status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

/** Applies a `state` event to the elements marked `data-live`. */
function applyLive(live) {
  for (const el of document.querySelectorAll("[data-live]")) {
    const value = live[el.dataset.live];
    if (value === undefined) continue;
    el.textContent = String(value);
    if (el.dataset.live === "state") {
      el.classList.toggle("on", live.enabled);
      el.classList.toggle("off", !live.enabled);
    }
  }
}

/** Fetches the metrics section again (its charts are drawn on the server) and swaps it in. */
async function refreshMetrics() {
  const section = document.querySelector("[data-refresh]");
  if (!section) return;
  try {
    const response = await fetch(section.dataset.refresh, { headers: { "X-Fragment": "1" }, credentials: "same-origin" });
    if (!response.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await response.text();
    const fresh = holder.querySelector("[data-refresh]");
    // Keep a person's focus: do not replace the section while they are using its window control.
    if (fresh && !section.contains(document.activeElement)) section.replaceWith(fresh);
  } catch {
    // The next refresh tries again.
  }
}

/** Follows the flag's state in this environment. */
function follow(section) {
  const source = new EventSource(section.dataset.events);
  source.addEventListener("state", (event) => {
    applyLive(JSON.parse(event.data));
    section.dataset.connected = "true";
    refreshMetrics();
  });
  source.addEventListener("error", () => {
    section.dataset.connected = "false";
  });
}

/** Sends a confirmed change without leaving the page. */
async function submit(form, event) {
  event.preventDefault();
  if (!form.reportValidity()) return;
  if (!window.confirm(form.dataset.confirm)) return;
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  try {
    const response = await fetch(form.action, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(new FormData(form)),
      credentials: "same-origin",
    });
    const body = await response.json().catch(() => null);
    if (response.ok) {
      announce(`${button ? button.textContent : "Change"}: done${body && body.changed === false ? " (nothing to change)" : ""}.`);
      for (const input of form.querySelectorAll("input[name=reason]")) input.value = "";
    } else {
      const message = body && body.error ? body.error.message : `the server answered ${response.status}`;
      announce(`Not done: ${message}`, true);
    }
  } catch (error) {
    announce(`Not done: ${error}`, true);
  } finally {
    if (button) button.disabled = false;
  }
}

for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => submit(form, event));
}
for (const section of document.querySelectorAll("[data-events]")) {
  follow(section);
}
if (document.querySelector("[data-refresh]")) {
  setInterval(refreshMetrics, 5000);
}
