//! Process-shared synchronization primitives (work in progress).
