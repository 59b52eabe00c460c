//! The sandbox helper as its own binary, for the crate's integration tests: reads a `Policy` on stdin, applies it.

fn main() {
    sandbox::exec_main()
}
