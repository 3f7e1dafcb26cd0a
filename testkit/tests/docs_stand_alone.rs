//! The repository's comments, scripts and docs stand alone: none may send a reader to a file
//! outside the repository. The RQ protocol and the old service's behaviour are described in
//! `docs/rq-protocol.md` and `docs/hdx-contract.md`; a reference to the external notes they
//! were first written from (a `shared/spec` folder beside the repository) helps nobody who has
//! only this repository.
//!
//! The one path outside the repository that stays is `../shared/fixtures`: tests look there for
//! the old service's known results, when a checkout of them sits beside the repository.

use std::path::Path;
use std::process::Command;

/// This file, which has to name what it looks for.
const SELF: &str = "testkit/tests/docs_stand_alone.rs";

/// Names of the external notes. `rq-protocol.md` is also the name of our own document, so it is
/// allowed where it means ours (see [`refers_to_our_doc`]); `architecture.md` is matched with
/// its case, so our `ARCHITECTURE.md` is not caught.
const EXTERNAL_NAMES: [&str; 7] = [
    "shared/spec",
    "rq-protocol.md",
    "hdx-behaviour.md",
    "architecture.md",
    "gdal-notes.md",
    "containers.md",
    "style-examples.md",
];

/// Files the repository has: tracked ones, and new ones not ignored (so a file is checked
/// before its first commit too).
fn repository_files(root: &Path) -> Vec<String> {
    let output = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .expect("this test lists the repository's files with `git ls-files`: is git installed?");
    assert!(
        output.status.success(),
        "`git ls-files` failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<String> = output
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Whether the mention of `rq-protocol.md` at byte `at` of `line` (in file `path`) means our
/// `docs/rq-protocol.md`: written as that path, or as a relative name inside `docs/`.
fn refers_to_our_doc(path: &str, line: &str, at: usize) -> bool {
    line[..at].ends_with("docs/") || (path.starts_with("docs/") && !line[..at].ends_with('/'))
}

/// Every mention in `text` (the file `path`) of something outside the repository, as
/// `path:line: text`.
fn outside_references(path: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut bad = false;
        for name in EXTERNAL_NAMES {
            for (at, _) in line.match_indices(name) {
                if name == "rq-protocol.md" && refers_to_our_doc(path, line, at) {
                    continue;
                }
                bad = true;
            }
        }
        for (at, _) in line.match_indices("../shared/") {
            if !line[at..].starts_with("../shared/fixtures") {
                bad = true;
            }
        }
        if bad {
            found.push(format!("{path}:{}: {}", number + 1, line.trim()));
        }
    }
    found
}

#[test]
fn no_file_refers_to_notes_outside_the_repository() {
    let root = testkit::workspace_root();
    let mut found = Vec::new();
    let mut read = 0;
    for path in repository_files(&root) {
        if path == SELF {
            continue;
        }
        // Deleted but still tracked, or not text (images, archives): nothing to read.
        let Ok(bytes) = std::fs::read(root.join(&path)) else {
            continue;
        };
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        read += 1;
        found.extend(outside_references(&path, &text));
    }
    assert!(
        read > 50,
        "only {read} text files read: is this a checkout of the repository?"
    );
    assert!(
        found.is_empty(),
        "{} line(s) send the reader outside the repository; say it in docs/ (rq-protocol.md, \
         hdx-contract.md) and point there instead:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_check_catches_what_it_should_and_nothing_else() {
    let bad = [
        (
            "hdx-jobs/src/x.rs",
            "//! See shared/spec/rq-protocol.md §5.",
        ),
        ("hdx-jobs/src/x.rs", "/// rq-protocol.md §9: vectors."),
        ("scripts/x.sh", "# from ../shared/spec/hdx-behaviour.md"),
        ("docs/x.md", "as gdal-notes.md says"),
        ("docs/x.md", "see ../shared/notes.txt"),
        ("README.md", "grown from architecture.md"),
        ("README.md", "[spec](../shared/spec/rq-protocol.md)"),
    ];
    for (path, line) in bad {
        assert_eq!(
            outside_references(path, line).len(),
            1,
            "{path}: {line} must be caught"
        );
    }
    let good = [
        (
            "hdx-jobs/src/x.rs",
            "//! The worker (docs/rq-protocol.md §5.2).",
        ),
        (
            "docs/ARCHITECTURE.md",
            "what Python writes ([rq-protocol.md](rq-protocol.md) §5)",
        ),
        ("README.md", "[protocol](docs/rq-protocol.md)"),
        ("testkit/src/lib.rs", r#".join("../shared/fixtures")"#),
        ("docs/ARCHITECTURE.md", "the picture of ARCHITECTURE.md"),
    ];
    for (path, line) in good {
        assert!(
            outside_references(path, line).is_empty(),
            "{path}: {line} must pass"
        );
    }
}
