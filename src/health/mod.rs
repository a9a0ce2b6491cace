//! Server health: who decides, who applies, and the pure rules in between.
//!
//! - [`passive`]: one worker's view of one server (passive failure windows, back-off,
//!   probation, the active verdict it was told). Applied on the request path, no I/O.
//! - [`verdict`]: the active checks' rise/fall threshold.
//! - [`machine`]: the one state machine per server, run by the control thread, that
//!   owns every transition (up, down, probation), logs each exactly once and says what
//!   to broadcast to the workers.
//!
//! Workers decide passive mark-downs locally (so the failing core reacts at once) and
//! report them; the control thread arbitrates between workers and the active checker.

pub mod machine;
pub mod passive;
pub mod verdict;

pub use passive::{MarkDown, Passive};
pub use verdict::Verdict;
