//! Checkers of what clients saw, shared by the simulator (`crate::sim`),
//! the chaos tests and the load generator's `--check` mode: they take a
//! recorded history and say whether a correct system could have produced
//! it.

pub mod linearizability;
