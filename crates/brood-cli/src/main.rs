//! The `brood` command.

fn main() {}
