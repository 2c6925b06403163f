//! Orloj binaries.
