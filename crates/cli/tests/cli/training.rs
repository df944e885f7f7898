//! The training labs in `docs/training/` are executed: every ```sh block of each track runs in order
//! against a real `dimmer serve` (temporary data directory, free port, the example policy), so the
//! training cannot rot.
//!
//! The blocks of a track run one after the other in one scratch directory, each with
//! `bash -euo pipefail`, the way a reader runs them in one terminal: `DIMMER_SERVER`, `DIMMER_TOKEN`
//! and `DIMMER_POLICY` are exported as `docs/training/README.md` tells the reader to, the `dimmer`
//! under test is first on `PATH`, and what a block `export`s is seen by the blocks after it.
//! A command that must fail is written `! command` as the last line of its block (bash's `-e` does
//! not look at a `!` command anywhere else, so the extractor refuses one elsewhere).
//!
//! The product/on-call track is done in the web console: its ```console steps and its few ```sh
//! blocks depend on each other (the flag the console creates is the one the SDK traffic of a sh
//! block reports on), so neither runs alone. `tests/browser/training.test.mjs` runs the whole
//! track, steps and sh blocks in order, in headless Chromium; here it is only checked for shape
//! and for being wired to that test, so there is one way it runs, not two that could disagree.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::serve::{Served, scratch};

const TRACKS: [&str; 3] = ["engineers.md", "qa.md", "product-oncall.md"];

/// The track run by the browser test rather than here (see the module's documentation).
const CONSOLE_TRACK: &str = "product-oncall.md";

/// One ```sh block of a track, with the lab heading it belongs to.
#[derive(Debug)]
struct Block {
    heading: String,
    line: usize,
    text: String,
}

fn training_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/training")
}

fn read_track(name: &str) -> String {
    let path = training_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The ```sh blocks of a Markdown file in order, each under its nearest `##` heading. Other fences
/// (```text, ```yaml …) are skipped. A `!` command anywhere but the last line of a block is an
/// error: `bash -e` would not stop on it, so the refusal it shows would go untested.
fn sh_blocks(markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut heading = String::from("(before the first heading)");
    let mut lines = markdown.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.trim().to_owned();
            continue;
        }
        let Some(info) = line.trim_start().strip_prefix("```") else { continue };
        let mut body = Vec::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") {
                closed = true;
                break;
            }
            body.push(inner);
        }
        if !closed {
            return Err(format!("line {}: a ``` fence is not closed", number + 1));
        }
        if info.trim() != "sh" {
            continue;
        }
        // Logical commands: a line ending in `\` continues on the next one.
        let mut commands: Vec<String> = Vec::new();
        let mut continued = false;
        for l in body.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            match commands.last_mut() {
                Some(last) if continued => last.push_str(l),
                _ => commands.push(l.to_owned()),
            }
            continued = l.ends_with('\\');
        }
        for (i, command) in commands.iter().enumerate() {
            if command.starts_with("! ") && i + 1 != commands.len() {
                return Err(format!(
                    "line {}: `{command}` must be the last command of its block, or bash -e ignores its result",
                    number + 1
                ));
            }
        }
        blocks.push(Block { heading: heading.clone(), line: number + 1, text: body.join("\n") });
    }
    Ok(blocks)
}

/// The `##` headings under which a ```console block (steps done in the web console) stands.
fn console_headings(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut heading = String::new();
    for line in markdown.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.trim().to_owned();
        } else if line.trim_start().strip_prefix("```").is_some_and(|info| info.trim() == "console") {
            found.push(heading.clone());
        }
    }
    found
}

/// The `## Lab N` headings of a track.
fn labs(markdown: &str) -> Vec<&str> {
    markdown.lines().filter_map(|l| l.strip_prefix("## ")).filter(|h| h.starts_with("Lab ")).collect()
}

/// Stops the server even when a block fails and the test panics.
struct Server(Option<Served>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(served) = self.0.take() {
            served.kill();
        }
    }
}

/// Runs every ```sh block of one track against a fresh server; panics naming the track, the lab,
/// the block and what it printed at the first block that exits non-zero.
fn run_track(name: &str) {
    let markdown = read_track(name);
    let blocks = sh_blocks(&markdown).unwrap_or_else(|e| panic!("{name}: {e}"));
    let dir = scratch(&format!("training-{}", name.trim_end_matches(".md")));
    let server = Server(Some(Served::start_with(&dir.join("data"), &["--policy", &example_policy()])));
    let served = server.0.as_ref().expect("started");
    let token = served.token.clone().expect("a first start prints the admin token");
    let work = dir.join("lab");
    std::fs::create_dir_all(&work).expect("lab dir");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_dimmer"));
    let bin = exe.parent().expect("the binary's directory");
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    // What a block exports is kept for the next one, like variables in the reader's terminal.
    let saved_env = dir.join("lab-env.sh");
    std::fs::write(&saved_env, "").expect("env file");
    for block in &blocks {
        let script = format!(
            "source '{env}'\ntrap 'export -p > \"{env}\"' EXIT\n{text}\n",
            env = saved_env.display(),
            text = block.text
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&work)
            .env("PATH", &path)
            .env("DIMMER_SERVER", &served.base)
            .env("DIMMER_TOKEN", &token)
            .env("DIMMER_POLICY", example_policy())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "docs/training/{name}, {heading} (line {line}): the block exited with {status}\n--- block ---\n{text}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            heading = block.heading,
            line = block.line,
            status = out.status,
            text = block.text,
            stdout = String::from_utf8_lossy(&out.stdout),
            stderr = String::from_utf8_lossy(&out.stderr),
        );
    }
    drop(server);
}

fn example_policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dimmer-policy.yaml").display().to_string()
}

#[test]
fn training_extractor_finds_sh_blocks_under_their_lab_and_skips_other_fences() {
    let markdown = "# T\n\n## Lab 1: one\n\n```sh\necho a\n```\n\n```text\nnot run\n```\n\n## Lab 2: two\n\n```sh\n# a comment\necho b\n! false\n```\n";
    let blocks = sh_blocks(markdown).expect("blocks");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!((blocks[0].heading.as_str(), blocks[0].text.as_str()), ("Lab 1: one", "echo a"));
    assert_eq!(blocks[1].heading, "Lab 2: two");
    assert!(blocks[1].text.ends_with("! false"));
    assert_eq!(labs(markdown), ["Lab 1: one", "Lab 2: two"]);
}

#[test]
fn training_extractor_refuses_a_negated_command_that_bash_e_would_not_check() {
    let err = sh_blocks("## Lab 1\n\n```sh\n! false \\\n  --flag\necho after\n```\n").expect_err("refused");
    assert!(err.contains("must be the last command"), "{err}");
    assert!(sh_blocks("```sh\necho open\n").expect_err("unclosed").contains("not closed"));
}

#[test]
fn training_tracks_each_have_at_least_five_labs_with_commands_and_a_quiz_with_answers() {
    for name in TRACKS {
        let markdown = read_track(name);
        let labs = labs(&markdown);
        assert!(labs.len() >= 5, "{name}: {} labs: {labs:?}", labs.len());
        let blocks = sh_blocks(&markdown).unwrap_or_else(|e| panic!("{name}: {e}"));
        let console = console_headings(&markdown);
        for lab in &labs {
            let has_sh = blocks.iter().any(|b| b.heading == *lab);
            let has_console = console.iter().any(|h| h == lab);
            assert!(has_sh || has_console, "{name}: {lab} has no ```sh or ```console block");
        }
        // Only the console track has console steps: in another track nothing would run them.
        assert_eq!(name == CONSOLE_TRACK, !console.is_empty(), "{name}: ```console blocks {console:?}");
        assert!(markdown.contains("\n## Quiz"), "{name}: no quiz");
        let quiz = &markdown[markdown.find("\n## Quiz").expect("quiz")..];
        let asked = quiz.split("<details>").next().unwrap_or_default();
        let questions = asked.lines().filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())).count();
        assert!(questions >= 5, "{name}: {questions} quiz questions");
        assert!(quiz.contains("<details>") && quiz.contains("</details>"), "{name}: the answers are not in <details>");
    }
}

#[test]
fn training_engineers_track_runs_against_a_real_server() {
    run_track("engineers.md");
}

#[test]
fn training_qa_track_runs_against_a_real_server() {
    run_track("qa.md");
}

#[test]
fn training_product_oncall_track_is_run_by_the_browser_test_and_not_here() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    let read = |file: &str| {
        std::fs::read_to_string(browser.join(file)).unwrap_or_else(|e| panic!("read tests/browser/{file}: {e}"))
    };
    let runner = read("training.test.mjs");
    assert!(
        runner.contains(&format!("docs/training/{CONSOLE_TRACK}")),
        "training.test.mjs does not run {CONSOLE_TRACK}"
    );
    let package: serde_json::Value = serde_json::from_str(&read("package.json")).expect("package.json is JSON");
    let script = package["scripts"]["test"].as_str().unwrap_or_default();
    assert!(script.contains("training.test.mjs"), "npm test does not run training.test.mjs: {script:?}");
}
