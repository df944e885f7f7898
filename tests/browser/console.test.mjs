// End-to-end tests of the web console in a real headless Chromium, driven by Playwright.
//
// A real `dimmer serve` (the binary in DIMMER_BIN, default the workspace's debug build) runs on
// a free port with the example policy; the browser is DIMMER_CHROMIUM (default
// /usr/bin/chromium). Outside CI a missing browser or binary is reported loudly and the tests
// are skipped; in CI (`CI` set) they fail. With DIMMER_SCREENSHOTS=1 the main pages are written
// to docs/console/*.png (CI never sets it, so it never rewrites them). Every wait is for a
// condition, never a fixed sleep.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const bin = process.env.DIMMER_BIN || join(targetDir, "debug", "dimmer");
const browserPath = process.env.DIMMER_CHROMIUM || "/usr/bin/chromium";
const shots = process.env.DIMMER_SCREENSHOTS === "1";
const ADMIN = "dmr_browser_test_admin_0123456789";

const missing = [
  [browserPath, "Chromium (set DIMMER_CHROMIUM, or apt-get install chromium chromium-driver)"],
  [bin, "the dimmer binary (cargo build -p dimmer-cli, or set DIMMER_BIN)"],
].filter(([path]) => !existsSync(path));
if (missing.length > 0) {
  const message = `BROWSER TESTS NOT RUN: missing ${missing.map(([p, what]) => `${what} at ${p}`).join("; ")}`;
  if (process.env.CI) throw new Error(message);
  console.error(`\n!!! ${message}\n`);
}
const skip = missing.length > 0 ? "missing browser or binary (see above)" : false;

let server;
let base;
let dataDir;
let browser;

async function api(method, path, token, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json().catch(() => null);
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: join(root, "docs", "console", `${name}.png`), fullPage: true });
}

async function signIn(token) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${base}/sign-in`);
  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Flags", level: 1 }).waitFor();
  return page;
}

before(async () => {
  if (skip) return;
  dataDir = mkdtempSync(join(tmpdir(), "dimmer-browser-"));
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--policy", join(root, "examples", "dimmer-policy.yaml")], {
    env: { ...process.env, DIMMER_ADMIN_TOKEN: ADMIN, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((resolveBase, reject) => {
    let out = "";
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const found = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (found) resolveBase(found[1]);
    });
    server.on("exit", (code) => reject(new Error(`dimmer serve exited with ${code}: ${out}`)));
  });
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("a writer signs in, meets a policy error at its field, fixes it, kills with a reason and sees it live and in the history", { skip }, async () => {
  const writer = (await api("POST", "/api/v1/tokens", ADMIN, { name: "alice", scope: "writer" })).token;
  const page = await signIn(writer);
  await shot(page, "flags");

  await page.getByRole("link", { name: "New flag" }).first().click();
  await page.getByLabel("Key").fill("NewCheckout");
  await page.getByLabel("Owner").fill("team-payments");
  await page.getByLabel("Description").fill("The new checkout");
  await page.getByRole("button", { name: "Create flag" }).click();
  const keyError = page.locator("#key-error");
  await keyError.waitFor();
  assert.match(await keyError.innerText(), /key_pattern/);
  assert.equal(await page.getByLabel("Key").getAttribute("aria-invalid"), "true");
  assert.equal(await page.getByLabel("Owner").inputValue(), "team-payments", "what was typed is kept");
  await shot(page, "create-flag-policy-error");

  await page.getByLabel("Key").fill("new-checkout");
  await page.getByRole("button", { name: "Create flag" }).click();
  await page.getByRole("heading", { name: "new-checkout", level: 1 }).waitFor();

  await api("POST", "/api/v1/flags/new-checkout/environments/staging/toggle", ADMIN, { enabled: true, reason: "try in staging" });
  await page.getByRole("link", { name: "staging" }).click();
  const state = page.locator("#live-state");
  await page.waitForFunction(() => document.querySelector("#live")?.dataset.connected === "true");
  assert.equal(await state.innerText(), "On");

  // The kill goes out without a reload: a marker on the window survives only if the page stays.
  await page.evaluate(() => { window.stillTheSamePage = true; });
  page.once("dialog", (dialog) => dialog.accept());
  const killForm = page.locator("form", { has: page.getByRole("button", { name: "Kill" }) });
  await killForm.getByLabel("Reason").fill("p99 doubled after deploy");
  await killForm.getByRole("button", { name: "Kill" }).click();
  await page.waitForFunction(() => document.querySelector("#live-state")?.textContent === "Off");
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload");
  await page.locator("#live-status").filter({ hasText: "done" }).waitFor();
  await shot(page, "flag");

  await page.getByRole("link", { name: "History of new-checkout" }).click();
  const entry = page.locator("li.entry").first();
  await entry.waitFor();
  assert.match(await entry.innerText(), /release\.kill/);
  assert.match(await entry.innerText(), /p99 doubled after deploy/);
  assert.match(await entry.innerText(), /alice/);
  await shot(page, "history");
  await page.context().close();
});

test("a release plan shows its stages, the time left and its commands", { skip }, async () => {
  await api("POST", "/api/v1/flags", ADMIN, { key: "search-ranking", kind: "release", owner: "team-search", description: "Ranking v2" });
  await api("POST", "/api/v1/flags/search-ranking/environments/staging/plan", ADMIN, { stages: "internal,5%,25%,100%", dwell: "30m", reason: "start" });
  const page = await signIn(ADMIN);
  await page.goto(`${base}/flags/search-ranking?env=staging`);
  const stages = page.getByRole("list", { name: "Stages" });
  await stages.waitFor();
  assert.match(await stages.innerText(), /may advance in \d+ min/);
  await page.getByRole("button", { name: "Advance plan" }).waitFor();
  await shot(page, "release-plan");
  await page.context().close();
});

test("a reader sees the flag and no Kill button", { skip }, async () => {
  const reader = (await api("POST", "/api/v1/tokens", ADMIN, { name: "rita", scope: "reader" })).token;
  const page = await signIn(reader);
  await page.goto(`${base}/flags/new-checkout?env=staging`);
  await page.getByRole("heading", { name: "new-checkout", level: 1 }).waitFor();
  assert.equal(await page.getByRole("button", { name: "Kill" }).count(), 0);
  assert.equal(await page.getByRole("link", { name: "New flag" }).count(), 0);
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, "flag-reader-phone");
  await page.context().close();
});
