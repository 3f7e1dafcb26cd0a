//! Sets `cfg(shared_fixtures)` when the shared HDX fixtures are on this machine, so that the
//! tests on them are reported as ignored where they are absent (see
//! `testkit/build/shared_fixtures.rs`).

#[path = "../testkit/build/shared_fixtures.rs"]
mod shared_fixtures;

fn main() {
    shared_fixtures::emit();
}
