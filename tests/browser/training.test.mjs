// The product/on-call training track (docs/training/product-oncall.md) run end to end, so it
// cannot rot: its ```console blocks are executed as steps in a real headless Chromium and its
// ```sh blocks with bash, all in the order the reader meets them, against one real `dimmer serve`.
//
// A ```console line is an instruction a person reads and the test follows. Every line names what
// it touches by its accessible name (a label, or a role and name), never by a CSS selector:
//
//   open $DIMMER_SERVER                         open "/policy" works too (relative to the server)
//   reload the page
//   fill "Reason" with "errors up after deploy"
//   select "standard" in "Template"             an option's value or its whole label
//   check "Select ops.recommendations"
//   click the "Sign in" button                  also: the "Policy" link, the first "…" link
//   click the "Kill" button and confirm         accepts the confirmation the console asks for
//   see "running at stage 2 of 6"               some element's text contains it
//   see exactly "5%"                            an element's whole text is it
//   see the heading "Flags"                     also: the row, link, button, list, table, region,
//                                               chart (an SVG image) "…", by accessible name
//   see "owner_required" at "Owner"             the field is marked invalid, its description says it
//   see no "qa-7"                               nothing on the page shows it (after the page loaded)
//   in the "Advance the plan" form, fill "Reason" with "…"
//                                               scopes a step to a form, list, region, table,
//                                               group, row or navigation of that name
//
// `$NAME` in a quoted value or after `open` is the variable NAME as the ```sh blocks so far left it
// (DIMMER_SERVER and DIMMER_TOKEN are exported as docs/training/README.md says). A line of any
// other form fails the test with its line number, before the server starts: nothing is skipped.
//
// The sh blocks run as crates/cli/tests/cli/training.rs runs the other tracks: each with
// `bash -euo pipefail` in one scratch directory, DIMMER_SERVER, DIMMER_TOKEN and DIMMER_POLICY
// exported, the `dimmer` under test first on PATH, and what a block exports kept for the blocks
// (and console steps) after it. A `!` command must be the last of its block.
//
// The server is the binary in DIMMER_BIN (default the debug build in CARGO_TARGET_DIR or
// target/), the browser DIMMER_CHROMIUM (default /usr/bin/chromium). Outside CI a missing browser
// or binary is reported loudly and the run is skipped; in CI (`CI` set) it fails. Every wait is
// for a condition, never a fixed sleep.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve, delimiter } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const bin = process.env.DIMMER_BIN || join(targetDir, "debug", "dimmer");
const browserPath = process.env.DIMMER_CHROMIUM || "/usr/bin/chromium";
const policy = join(root, "examples", "dimmer-policy.yaml");
const TRACK = "docs/training/product-oncall.md";
/** How long one step may wait for what it looks for: the metrics section refreshes every 5 s,
 * and the machine may be busy; a step that passes waits only as long as its condition takes. */
const STEP_TIMEOUT_MS = 60000;

const missing = [
  [browserPath, "Chromium (set DIMMER_CHROMIUM, or apt-get install chromium chromium-driver)"],
  [bin, "the dimmer binary (cargo build -p dimmer-cli, or set DIMMER_BIN)"],
].filter(([path]) => !existsSync(path));
if (missing.length > 0) {
  const message = `TRAINING TRACK NOT RUN: missing ${missing.map(([p, what]) => `${what} at ${p}`).join("; ")}`;
  if (process.env.CI) throw new Error(message);
  console.error(`\n!!! ${message}\n`);
}
const skip = missing.length > 0 ? "missing browser or binary (see above)" : false;

// ---------------------------------------------------------------------------------------------
// The track as blocks and steps

const QUOTED = String.raw`"((?:[^"\\]|\\.)*)"`;
const SCOPES = { form: "form", list: "list", region: "region", table: "table", group: "group", row: "row", navigation: "navigation" };
const SEE_ROLES = { heading: "heading", row: "row", link: "link", button: "button", list: "list", table: "table", region: "region", chart: "img" };

/** Each step form: a pattern over the whole line (after any scope) and what it becomes. */
const FORMS = [
  [new RegExp(`^open ${QUOTED}$`), ([url]) => ({ op: "open", url: unquote(url) })],
  [/^open ([^\s"]+)$/, ([url]) => ({ op: "open", url })],
  [/^reload the page$/, () => ({ op: "reload" })],
  [new RegExp(`^fill ${QUOTED} with ${QUOTED}$`), ([label, value]) => ({ op: "fill", label: unquote(label), value: unquote(value) })],
  [new RegExp(`^select ${QUOTED} in ${QUOTED}$`), ([option, label]) => ({ op: "select", option: unquote(option), label: unquote(label) })],
  [new RegExp(`^check ${QUOTED}$`), ([label]) => ({ op: "check", label: unquote(label) })],
  [
    new RegExp(`^click the (first )?${QUOTED} (button|link)( and confirm)?$`),
    ([first, name, role, confirm]) => ({ op: "click", first: Boolean(first), name: unquote(name), role, confirm: Boolean(confirm) }),
  ],
  [new RegExp(`^see the (${Object.keys(SEE_ROLES).join("|")}) ${QUOTED}$`), ([role, name]) => ({ op: "seeRole", role: SEE_ROLES[role], name: unquote(name) })],
  [new RegExp(`^see ${QUOTED} at ${QUOTED}$`), ([text, label]) => ({ op: "seeAt", text: unquote(text), label: unquote(label) })],
  [new RegExp(`^see exactly ${QUOTED}$`), ([text]) => ({ op: "see", text: unquote(text), exact: true })],
  [new RegExp(`^see no ${QUOTED}$`), ([text]) => ({ op: "seeNo", text: unquote(text) })],
  [new RegExp(`^see ${QUOTED}$`), ([text]) => ({ op: "see", text: unquote(text), exact: false })],
];
const SCOPE = new RegExp(`^in the ${QUOTED} (${Object.keys(SCOPES).join("|")}), (.*)$`);

/** A quoted value's text; `\"` and the other JSON escapes stand for themselves. */
function unquote(text) {
  try {
    return JSON.parse(`"${text}"`);
  } catch {
    throw new Error(`"${text}" is not a quoted value (a quote inside is written \\")`);
  }
}

/** One console line as a step, or an Error naming the line and what forms there are. */
export function parseStep(text, line) {
  let rest = text;
  let scope = null;
  const scoped = rest.match(SCOPE);
  if (scoped) {
    scope = { name: unquote(scoped[1]), role: SCOPES[scoped[2]] };
    rest = scoped[3];
  }
  for (const [pattern, make] of FORMS) {
    const found = rest.match(pattern);
    if (!found) continue;
    let step;
    try {
      step = make(found.slice(1));
    } catch (error) {
      throw new Error(`${TRACK} line ${line}: ${error.message}`);
    }
    if (scope && (step.op === "open" || step.op === "reload")) {
      throw new Error(`${TRACK} line ${line}: \`${step.op}\` is about the whole page and takes no "in the …" part`);
    }
    return { ...step, scope, line, source: text };
  }
  throw new Error(
    `${TRACK} line ${line}: unknown console step \`${text}\` (forms: open, reload the page, fill "…" with "…", select "…" in "…", check "…", ` +
      `click the [first] "…" button|link [and confirm], see ["…" | exactly "…" | no "…" | "…" at "…" | the ROLE "…"], ` +
      `each optionally after: in the "…" form|list|region|table|group|row|navigation,)`,
  );
}

/**
 * The ```sh and ```console blocks of a track in order, each with its line and `##` heading;
 * other fences are left alone. Errors name the line: an unclosed fence, an unknown step, a `!`
 * command that is not the last of its sh block (bash -e would not check it).
 */
export function parseTrack(markdown) {
  const lines = markdown.split("\n");
  const blocks = [];
  let heading = "(before the first heading)";
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.startsWith("## ")) {
      heading = line.slice(3).trim();
      continue;
    }
    const fence = line.trimStart().match(/^```(.*)$/);
    if (!fence) continue;
    const start = i + 1;
    const body = [];
    let closed = false;
    for (i++; i < lines.length; i++) {
      if (lines[i].trimStart().startsWith("```")) {
        closed = true;
        break;
      }
      body.push(lines[i]);
    }
    if (!closed) throw new Error(`${TRACK} line ${start}: a \`\`\` fence is not closed`);
    const info = fence[1].trim();
    if (info === "sh") {
      checkNegations(body, start);
      blocks.push({ kind: "sh", heading, line: start, text: body.join("\n") });
    } else if (info === "console") {
      const steps = [];
      body.forEach((text, n) => {
        const trimmed = text.trim();
        if (trimmed === "" || trimmed.startsWith("#")) return;
        steps.push(parseStep(trimmed, start + 1 + n));
      });
      blocks.push({ kind: "console", heading, line: start, steps });
    }
  }
  return blocks;
}

function checkNegations(body, start) {
  const commands = [];
  let continued = false;
  body.forEach((raw, n) => {
    const text = raw.trim();
    if (text === "" || text.startsWith("#")) return;
    if (continued) commands[commands.length - 1].text += text;
    else commands.push({ text, line: start + 1 + n });
    continued = text.endsWith("\\");
  });
  commands.forEach((c, n) => {
    if (c.text.startsWith("! ") && n + 1 !== commands.length) {
      throw new Error(`${TRACK} line ${c.line}: \`${c.text}\` must be the last command of its block, or bash -e ignores its result`);
    }
  });
}

/** `$NAME` and `${NAME}` replaced from `vars`; an unset one is an error naming the step. */
function expand(value, vars, step) {
  return value.replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_, name) => {
    if (vars[name] === undefined) throw new Error(`${TRACK} line ${step.line}: $${name} is not set by the blocks before it`);
    return vars[name];
  });
}

// ---------------------------------------------------------------------------------------------
// Running it

let server;
let base;
let adminToken;
let scratchDir;
let browser;

before(async () => {
  if (skip) return;
  scratchDir = mkdtempSync(join(tmpdir(), "dimmer-training-"));
  server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(scratchDir, "data"), "--policy", policy], {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  // As the README says: the server prints where it listens and, on a first start, the admin token.
  [base, adminToken] = await new Promise((found, reject) => {
    let out = "";
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const at = out.match(/listening on (http:\/\/[0-9.:]+)/);
      const token = out.match(/admin token \(shown once, keep it safe\): (\S+)/);
      if (at && token) found([at[1], token[1]]);
    });
    server.on("exit", (code) => reject(new Error(`dimmer serve exited with ${code}: ${out}`)));
  });
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
});

after(async () => {
  if (browser) await browser.close();
  if (server) server.kill("SIGTERM");
  if (scratchDir) rmSync(scratchDir, { recursive: true, force: true });
});

/** Runs one sh block as the reader's terminal would; returns the variables it leaves. */
function runSh(block, work, envFile, varsFile, baseEnv) {
  const script = `source '${envFile}'\ntrap 'export -p > "${envFile}"; env -0 > "${varsFile}"' EXIT\n${block.text}\n`;
  const run = spawnSync("bash", ["-euo", "pipefail", "-c", script], { cwd: work, env: baseEnv, encoding: "utf8" });
  if (run.status !== 0) {
    throw new Error(
      `${TRACK}, ${block.heading} (line ${block.line}): the sh block exited with ${run.status ?? run.signal}\n` +
        `--- block ---\n${block.text}\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`,
    );
  }
  const vars = {};
  for (const pair of readFileSync(varsFile, "utf8").split("\0")) {
    const eq = pair.indexOf("=");
    if (eq > 0) vars[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return vars;
}

/** The locator a step's scope gives (the page itself without one). */
function scopeOf(page, step) {
  return step.scope ? page.getByRole(step.scope.role, { name: step.scope.name, exact: true }) : page;
}

async function runStep(page, step, vars, dialogs) {
  const where = scopeOf(page, step);
  const value = (v) => expand(v, vars, step);
  switch (step.op) {
    case "open": {
      const url = value(step.url);
      await page.goto(url.startsWith("/") ? `${vars.DIMMER_SERVER}${url}` : url);
      return;
    }
    case "reload":
      await page.reload();
      return;
    case "fill":
      await where.getByLabel(step.label, { exact: true }).fill(value(step.value));
      return;
    case "select": {
      const option = value(step.option);
      const select = where.getByLabel(step.label, { exact: true });
      // An option is named by its value or its whole label, as a person reads either.
      const values = await select.evaluate((el) => [...el.options].map((o) => o.value));
      await select.selectOption(values.includes(option) ? { value: option } : { label: option });
      return;
    }
    case "check":
      await where.getByLabel(step.label, { exact: true }).check();
      return;
    case "click": {
      let target = where.getByRole(step.role, { name: step.name, exact: true });
      if (step.first) target = target.first();
      if (!step.confirm) {
        await target.click();
        return;
      }
      dialogs.confirming = true;
      const button = await target.elementHandle();
      try {
        await Promise.all([page.waitForEvent("dialog"), button.click()]);
      } finally {
        dialogs.confirming = false;
      }
      // The console disables the button while it sends the change, and clears the form's reason
      // when it is done: the next step starts once the button is usable again, as a person's
      // would, or its typing could be cleared by this change's answer.
      await button.waitForElementState("enabled").catch((error) => {
        if (!/not attached|detached/i.test(error.message)) throw error;
      });
      return;
    }
    case "see":
      await where.getByText(step.text, { exact: step.exact }).first().waitFor();
      return;
    case "seeRole":
      await where.getByRole(step.role, { name: step.name }).first().waitFor();
      return;
    case "seeNo":
      // Only after a step that waited for the page it checks: the page is rendered from the
      // server's state after the change, so absence here is the state, not a race.
      await where.getByText(step.text).first().waitFor({ state: "hidden" });
      assert.equal(await where.getByText(step.text).count(), 0, `"${step.text}" is on the page`);
      return;
    case "seeAt": {
      // The field that an error is attached to: marked invalid, its description saying so.
      const field = where.getByLabel(step.label, { exact: true }).and(page.locator('[aria-invalid="true"]'));
      await field.waitFor();
      const ids = ((await field.getAttribute("aria-describedby")) || "").split(/\s+/).filter(Boolean);
      assert.ok(ids.length > 0, `"${step.label}" is invalid but describes no error (no aria-describedby)`);
      await page.locator(ids.map((id) => `[id="${id}"]`).join(",")).filter({ hasText: step.text }).first().waitFor();
      return;
    }
    default:
      throw new Error(`${TRACK} line ${step.line}: no runner for ${step.op}`);
  }
}

/** What the page says in its status and alert regions (the likely reason a step failed), then all of it. */
async function pageSays(page) {
  try {
    const texts = await page.locator('[role="status"], [role="alert"]').allInnerTexts();
    const all = await page.locator("body").innerText({ timeout: 1000 });
    return `${page.url()}\n${texts.map((t) => t.trim()).filter(Boolean).join("\n")}\n--- the whole page, up to 6,000 characters ---\n${all.slice(0, 6000)}`;
  } catch (e) {
    return `(could not read the page: ${e.message})`;
  }
}

test("the training track's steps parse: every console line is a known form", () => {
  const blocks = parseTrack(readFileSync(join(root, TRACK), "utf8"));
  assert.ok(blocks.some((b) => b.kind === "console"), "console steps");
  assert.ok(blocks.some((b) => b.kind === "sh"), "sh blocks");
});

test("an unknown console step fails with its line number, and scopes and quotes parse", () => {
  const markdown = "# T\n\n## Lab 1\n\n```console\nfill \"Key\" with \"a \\\"b\\\"\"\n\nwave at the screen\n```\n";
  assert.throws(() => parseTrack(markdown), /product-oncall\.md line 8: unknown console step `wave at the screen`/);
  const [block] = parseTrack("## Lab 1\n```console\nin the \"Advance the plan\" form, click the \"Advance plan\" button and confirm\n```\n");
  assert.deepEqual(
    { ...block.steps[0], source: undefined },
    { op: "click", first: false, name: "Advance plan", role: "button", confirm: true, scope: { name: "Advance the plan", role: "form" }, line: 3, source: undefined },
  );
  assert.equal(parseStep('open "/policy"', 1).url, "/policy");
  assert.equal(parseStep("open $DIMMER_SERVER", 1).url, "$DIMMER_SERVER");
  assert.throws(() => parseStep('in the "Main" navigation, open "/"', 4), /line 4: `open` is about the whole page/);
  assert.throws(() => parseStep('see "\\q"', 5), /line 5: "\\q" is not a quoted value/);
  assert.throws(() => parseTrack("```sh\n! false\necho after\n```\n"), /line 2: `! false` must be the last command/);
  assert.throws(() => parseTrack("```console\nsee \"x\"\n"), /not closed/);
});

test("the product/on-call training track runs end to end in the console and the shell", { skip }, async () => {
  const blocks = parseTrack(readFileSync(join(root, TRACK), "utf8"));
  const work = join(scratchDir, "lab");
  mkdirSync(work);
  const envFile = join(scratchDir, "lab-env.sh");
  const varsFile = join(scratchDir, "lab-vars");
  writeFileSync(envFile, "");
  const baseEnv = {
    ...process.env,
    PATH: `${dirname(bin)}${delimiter}${process.env.PATH || ""}`,
    DIMMER_SERVER: base,
    DIMMER_TOKEN: adminToken,
    DIMMER_POLICY: policy,
  };
  let vars = { DIMMER_SERVER: base, DIMMER_TOKEN: adminToken, DIMMER_POLICY: policy };

  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  // A confirmation is accepted only where the track says "and confirm"; any other is refused
  // and fails the step that caused it, so the text and the test cannot disagree.
  const dialogs = { confirming: false, unexpected: [] };
  page.on("dialog", async (dialog) => {
    if (dialogs.confirming) {
      await dialog.accept();
    } else {
      dialogs.unexpected.push(dialog.message());
      await dialog.dismiss();
    }
  });

  try {
    for (const block of blocks) {
      if (block.kind === "sh") {
        vars = runSh(block, work, envFile, varsFile, baseEnv);
        continue;
      }
      for (const step of block.steps) {
        try {
          await runStep(page, step, vars, dialogs);
          if (dialogs.unexpected.length > 0) {
            throw new Error(`the console asked "${dialogs.unexpected.join('", "')}": write "and confirm" on the step that asks`);
          }
        } catch (error) {
          throw new Error(
            `${TRACK}, ${block.heading}, line ${step.line}: \`${step.source}\` failed: ${error.message}\n--- the page says ---\n${await pageSays(page)}`,
          );
        }
      }
    }
  } finally {
    await context.close();
  }
});
