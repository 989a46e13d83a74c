//! Revisions: routes and traffic split, exact in-flight accounting, precise dispatch.

pub mod queue;
