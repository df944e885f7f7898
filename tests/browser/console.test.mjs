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

test("a writer edits targeting: an error at its field, a stale edit shows what changed meanwhile, then a revert from the history", { skip }, async () => {
  await api("POST", "/api/v1/flags", ADMIN, { key: "pricing-page", kind: "release", owner: "team-growth", description: "The new pricing page" });
  await api("POST", "/api/v1/flags/pricing-page/environments/staging/toggle", ADMIN, { enabled: true, reason: "try in staging" });
  const writer = (await api("POST", "/api/v1/tokens", ADMIN, { name: "erin", scope: "writer" })).token;
  const page = await signIn(writer);
  await page.goto(`${base}/flags/pricing-page?env=staging`);
  await page.getByRole("link", { name: "Edit targeting in staging" }).click();
  await page.getByRole("heading", { name: "Edit pricing-page in staging", level: 1 }).waitFor();

  // "Add a rule" posts the form back (it works without script too) and returns with an empty rule.
  await page.getByRole("button", { name: "Add a rule" }).click();
  const rule = page.getByRole("group", { name: "Rule 1", exact: true });
  await rule.waitFor();
  await rule.getByLabel("Attribute").fill("plan");
  await rule.getByLabel("Values").fill("pro\nteam");
  await rule.getByLabel("Serves").fill("maybe");
  await page.getByLabel("Targets served on").fill("vip-1");
  await page.getByLabel("Reason", { exact: true }).fill("pro plans first");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  const serveError = page.locator("#f-rules-0--serve-error");
  await serveError.waitFor();
  assert.match(await serveError.innerText(), /maybe/);
  assert.equal(await rule.getByLabel("Serves").getAttribute("aria-invalid"), "true");
  assert.equal(await rule.getByLabel("Attribute").inputValue(), "plan", "what was typed is kept");
  await shot(page, "edit-targeting-error");

  // Fixed, but meanwhile someone else changes the flag: the save is refused with both sides shown.
  await rule.getByLabel("Serves").fill("on");
  const current = await api("GET", "/api/v1/flags/pricing-page", ADMIN);
  const response = await fetch(`${base}/api/v1/flags/pricing-page/environments/staging`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json", "If-Match": String(current.version) },
    body: JSON.stringify({ enabled: true, targets: { off: ["bob"] }, reason: "bob opted out" }),
  });
  assert.equal(response.status, 200);
  await page.getByRole("button", { name: "Save", exact: true }).click();
  const stale = page.getByRole("heading", { name: "Changed meanwhile: your edit was not saved" });
  await stale.waitFor();
  const staleBox = page.locator("#stale");
  assert.match(await staleBox.innerText(), /bob opted out/);
  assert.match(await staleBox.innerText(), /targets\.off\[0\]/);
  assert.match(await staleBox.innerText(), /rules\[0\]\.serve\.variant/);
  let flag = await api("GET", "/api/v1/flags/pricing-page", ADMIN);
  assert.deepEqual(flag.environments.staging.targets, { off: ["bob"] }, "theirs stands");
  await shot(page, "edit-targeting-stale");

  await page.getByRole("button", { name: "Save over the current version" }).click();
  await page.getByRole("heading", { name: "pricing-page", level: 1 }).waitFor();
  flag = await api("GET", "/api/v1/flags/pricing-page", ADMIN);
  assert.equal(flag.environments.staging.rules[0].serve.variant, "on");
  assert.deepEqual(flag.environments.staging.targets.on, ["vip-1"]);

  // Revert: back to the configuration before that save, as a new audited change.
  await page.getByRole("link", { name: "History of pricing-page" }).click();
  await page.getByRole("link", { name: "Revert staging to before this change" }).first().click();
  await page.getByRole("heading", { name: "Revert pricing-page in staging", level: 1 }).waitFor();
  await shot(page, "revert");
  await page.getByLabel("Reason").fill("the rule went out too early");
  await page.getByRole("button", { name: "Revert staging" }).click();
  await page.getByRole("heading", { name: "pricing-page", level: 1 }).waitFor();
  flag = await api("GET", "/api/v1/flags/pricing-page", ADMIN);
  assert.equal(flag.environments.staging.rules, undefined, "the rule is gone again");
  assert.deepEqual(flag.environments.staging.targets, { off: ["bob"] });
  const audit = await api("GET", "/api/v1/audit?flag=pricing-page", ADMIN);
  assert.equal(audit.entries[0].actor, "erin");
  assert.match(audit.entries[0].reason, /the rule went out too early/);
  await page.context().close();
});

test("a guarded plan is started from the console; SDK outcomes reach the charts; kill and restore reach OFREP", { skip }, async () => {
  await api("POST", "/api/v1/flags", ADMIN, { key: "search-v3", kind: "release", owner: "team-search", description: "Search v3" });
  const sdk = (await api("POST", "/api/v1/tokens", ADMIN, { name: "search-service", scope: "sdk", environment: "production" })).token;
  const page = await signIn(ADMIN);
  await page.goto(`${base}/flags/search-v3?env=production`);
  await page.getByRole("link", { name: "Start a release plan in production" }).click();
  await page.getByLabel("Template").selectOption("custom");
  await page.getByLabel("Custom stages").fill("10%,50%,100%");
  await page.getByLabel("Dwell of each custom stage").fill("30m");
  await page.getByLabel("Reason").fill("ranking v3 to everyone");
  await page.getByRole("button", { name: "Start plan" }).click();
  // The policy wants guards on production plans: the refusal sits at the first guard.
  const guardError = page.locator("#f-guards-0--name-error");
  await guardError.waitFor();
  assert.match(await guardError.innerText(), /needs guards/);
  await shot(page, "start-plan-policy-error");

  await page.getByLabel("Guard name (guard 1)").fill("errors");
  await page.getByLabel("Metric (guard 1)").fill("error_rate");
  await page.getByLabel("Limit (guard 1)").fill("0.25");
  await page.getByLabel("On a regression (guard 1)").selectOption("rollback");
  await page.getByRole("button", { name: "Start plan" }).click();
  await page.getByRole("heading", { name: "search-v3", level: 1 }).waitFor();
  await page.getByRole("list", { name: "Stages" }).waitFor();
  await page.getByRole("heading", { name: "What the guards say" }).waitFor();
  await page.waitForFunction(() => document.querySelector("#live")?.dataset.connected === "true");

  // An SDK reports outcomes: the charts pick them up without a reload.
  await page.evaluate(() => { window.stillTheSamePage = true; });
  const metrics = await fetch(`${base}/api/v1/sdk/metrics`, {
    method: "POST",
    headers: { Authorization: `Bearer ${sdk}`, "Content-Type": "application/json" },
    body: JSON.stringify({ sdk: "browser-test/1", metrics: [
      { flag: "search-v3", variant: "on", evaluations: 120, errors: 6, successes: 114 },
      { flag: "search-v3", variant: "off", evaluations: 880, errors: 9, successes: 871 },
    ] }),
  });
  assert.equal(metrics.status, 202);
  const onRow = page.locator("#metrics tr[data-variant=on]");
  await onRow.waitFor({ timeout: 20000 });
  assert.match(await onRow.innerText(), /120\s+6\s+5\.00%/);
  assert.equal(await page.locator("#metrics polyline").count() >= 2, true, "a line per variant");
  assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload");
  await shot(page, "release-plan-metrics");

  // Kill with a reason: an OFREP client gets the off variant, and the kill is marked on the charts.
  page.once("dialog", (dialog) => dialog.accept());
  const killForm = page.locator("form", { has: page.getByRole("button", { name: "Kill" }) });
  await killForm.getByLabel("Reason").fill("errors on on");
  await killForm.getByRole("button", { name: "Kill" }).click();
  await page.waitForFunction(() => document.querySelector("#live-state")?.textContent === "Off");
  const ofrep = async () => {
    const r = await fetch(`${base}/ofrep/v1/evaluate/flags/search-v3`, {
      method: "POST",
      headers: { Authorization: `Bearer ${sdk}`, "Content-Type": "application/json" },
      body: JSON.stringify({ context: { targetingKey: "user-1" } }),
    });
    return r.json();
  };
  assert.equal((await ofrep()).variant, "off");
  await page.locator("#metrics .mark").first().waitFor({ state: "attached", timeout: 20000 });

  page.once("dialog", (dialog) => dialog.accept());
  const restoreForm = page.locator("form", { has: page.getByRole("button", { name: "Restore" }) });
  await restoreForm.getByLabel("Reason").fill("fixed the index");
  await restoreForm.getByRole("button", { name: "Restore" }).click();
  await page.waitForFunction(() => document.querySelector("#live-state")?.textContent === "On");
  const audit = await api("GET", "/api/v1/audit?flag=search-v3", ADMIN);
  assert.equal(audit.entries[0].action, "release.restore");
  assert.equal(audit.entries[1].reason, "errors on on");
  await page.context().close();
});

test("a writer creates a segment, meets an error at its clause, fixes it and uses it in a rule", { skip }, async () => {
  const writer = (await api("POST", "/api/v1/tokens", ADMIN, { name: "sofia", scope: "writer" })).token;
  const page = await signIn(writer);
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Segments" }).click();
  await page.getByRole("heading", { name: "Segments", level: 1 }).waitFor();
  await page.getByRole("link", { name: "New segment" }).click();
  await page.getByRole("heading", { name: "New segment", level: 1 }).waitFor();
  await page.getByLabel("Key", { exact: true }).fill("beta-testers");
  await page.getByLabel("Description").fill("People trying new things first");
  await page.getByLabel("Included keys").fill("alice\nbob");

  // "Add a rule" posts the form back and returns with an empty clause; the typing is kept.
  await page.getByRole("button", { name: "Add a rule" }).click();
  const rule = page.getByRole("group", { name: "Segment rule 1", exact: true });
  await rule.waitFor();
  assert.equal(await page.getByLabel("Included keys").inputValue(), "alice\nbob");
  await rule.getByLabel("Values").fill("pro");
  await page.getByLabel("Reason", { exact: true }).fill("a beta programme");
  await page.getByRole("button", { name: "Create segment" }).click();
  const attributeError = page.locator("#f-rules-0--clauses-0--attribute-error");
  await attributeError.waitFor();
  assert.match(await attributeError.innerText(), /needs an attribute/);
  assert.equal(await rule.getByLabel("Attribute").getAttribute("aria-invalid"), "true");
  assert.equal(await page.getByLabel("Key", { exact: true }).inputValue(), "beta-testers", "what was typed is kept");
  await shot(page, "segment-error");

  await rule.getByLabel("Attribute").fill("plan");
  await page.getByRole("button", { name: "Create segment" }).click();
  await page.getByRole("heading", { name: "Segment beta-testers", level: 1 }).waitFor();
  const segment = await api("GET", "/api/v1/segments/beta-testers", ADMIN);
  assert.deepEqual(segment.included, ["alice", "bob"]);
  assert.deepEqual(segment.rules[0].clauses[0], { attribute: "plan", op: "in", values: ["pro"] });

  // Used in a flag's rule through the targeting editor.
  await api("POST", "/api/v1/flags", ADMIN, { key: "beta-banner", kind: "release", owner: "team-growth", description: "A banner for beta testers" });
  await page.goto(`${base}/flags/beta-banner?env=staging`);
  await page.getByRole("link", { name: "Edit targeting in staging" }).click();
  await page.getByRole("button", { name: "Add a rule" }).click();
  const flagRule = page.getByRole("group", { name: "Rule 1", exact: true });
  await flagRule.waitFor();
  await flagRule.getByLabel("Operator").selectOption("in_segment");
  await flagRule.getByLabel("Values").fill("beta-testers");
  await flagRule.getByLabel("Serves").fill("on");
  await page.getByLabel("Reason", { exact: true }).fill("banner for the beta");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByRole("heading", { name: "beta-banner", level: 1 }).waitFor();
  const flag = await api("GET", "/api/v1/flags/beta-banner", ADMIN);
  assert.deepEqual(flag.environments.staging.rules[0].clauses[0], { op: "in_segment", values: ["beta-testers"] });

  await page.goto(`${base}/segments`);
  const row = page.getByRole("row", { name: /beta-testers/ });
  await row.waitFor();
  assert.match(await row.innerText(), /beta-banner/);
  await shot(page, "segments");
  const audit = await api("GET", "/api/v1/audit?actor=sofia", ADMIN);
  assert.ok(audit.entries.some((e) => e.action === "segment.create" && e.reason === "a beta programme"));
  await page.context().close();
});

test("a writer adds a variant and meets the error for removing one that targeting serves", { skip }, async () => {
  const writer = (await api("POST", "/api/v1/tokens", ADMIN, { name: "vera", scope: "writer" })).token;
  const page = await signIn(writer);
  await page.goto(`${base}/flags/beta-banner?env=staging`);
  await page.getByRole("link", { name: "Edit variants" }).click();
  await page.getByRole("heading", { name: "Variants of beta-banner", level: 1 }).waitFor();
  await page.getByRole("button", { name: "Add a variant" }).click();
  await page.getByLabel("Key of variant 3").fill("teaser");
  await page.getByLabel("Value of variant 3").fill("true");
  await page.getByLabel("Reason", { exact: true }).fill("a teaser variant");
  await page.getByRole("button", { name: "Save variants" }).click();
  await page.getByRole("heading", { name: "beta-banner", level: 1 }).waitFor();
  let flag = await api("GET", "/api/v1/flags/beta-banner", ADMIN);
  assert.deepEqual(flag.variants, { on: true, off: false, teaser: true });

  // Staging's rule serves "on": removing it is refused, at the row that removed it.
  await page.getByRole("link", { name: "Edit variants" }).click();
  await page.getByLabel("Remove variant 1").check();
  await page.getByRole("button", { name: "Save variants" }).click();
  const keyError = page.locator("#f-variants-0--key-error");
  await keyError.waitFor();
  assert.match(await keyError.innerText(), /unknown variant "on"/);
  assert.equal(await page.getByLabel("Key of variant 1").getAttribute("aria-invalid"), "true");
  await shot(page, "variants-error");
  flag = await api("GET", "/api/v1/flags/beta-banner", ADMIN);
  assert.equal(flag.variants.on, true, "nothing saved");
  await page.context().close();
});

test("a reader sees segments and variants without their write controls", { skip }, async () => {
  const reader = (await api("POST", "/api/v1/tokens", ADMIN, { name: "ravi", scope: "reader" })).token;
  const page = await signIn(reader);
  await page.goto(`${base}/segments`);
  await page.getByRole("heading", { name: "Segments", level: 1 }).waitFor();
  assert.equal(await page.getByRole("link", { name: "New segment" }).count(), 0);
  await page.getByRole("link", { name: "beta-testers" }).click();
  await page.getByRole("heading", { name: "Segment beta-testers", level: 1 }).waitFor();
  assert.equal(await page.getByRole("button").filter({ hasText: /Save|Delete|Add/ }).count(), 0);
  assert.equal(await page.getByRole("textbox").count(), 0, "no inputs at all");
  await page.goto(`${base}/flags/beta-banner?env=staging`);
  await page.getByRole("heading", { name: "beta-banner", level: 1 }).waitFor();
  assert.equal(await page.getByRole("link", { name: "Edit variants" }).count(), 0);
  await page.context().close();
});
