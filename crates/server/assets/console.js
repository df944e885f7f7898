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

/** Follows the flag's state in this environment. */
function follow(section) {
  const source = new EventSource(section.dataset.events);
  source.addEventListener("state", (event) => {
    applyLive(JSON.parse(event.data));
    section.dataset.connected = "true";
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
