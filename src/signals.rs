//! Signals, the way service managers speak to a proxy: SIGHUP reloads (systemd's
//! `ExecReload`), SIGTERM and SIGINT drain gracefully then exit (a second one exits at
//! once), SIGUSR1 is logrotate's "reopen your logs".
//!
//! [`install`] must run on the main thread before any other thread starts: it gives
//! each signal a handler (a process started with `&` from a script inherits an
//! *ignored* SIGINT, and an ignored signal is never delivered), then blocks them, and
//! every thread started afterwards inherits the mask. One thread then takes them with
//! `sigwait` and forwards them as events: no code runs in a signal handler.

use std::io;
use std::thread::JoinHandle;

/// A signal ringway acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Reload the config.
    Hup,
    /// Drain and exit.
    Term,
    /// Drain and exit (Ctrl-C).
    Int,
    /// Reopen log files.
    Usr1,
}

impl Signal {
    const ALL: [(libc::c_int, Signal); 4] = [
        (libc::SIGHUP, Signal::Hup),
        (libc::SIGTERM, Signal::Term),
        (libc::SIGINT, Signal::Int),
        (libc::SIGUSR1, Signal::Usr1),
    ];

    /// `SIGHUP`, ...
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Usr1 => "SIGUSR1",
        }
    }

    /// True for the signals that stop the proxy.
    pub fn stops(self) -> bool {
        matches!(self, Signal::Term | Signal::Int)
    }
}

/// The handled signals, blocked; returned by [`install`] for [`spawn_waiter`].
#[derive(Clone, Copy)]
pub struct Blocked(libc::sigset_t);

/// Never runs while the signals are blocked; it only replaces an inherited `SIG_IGN`.
extern "C" fn no_op(_: libc::c_int) {}

/// Installs handlers for the signals ringway acts on and blocks them in this thread
/// (and so in every thread it starts later).
pub fn install() -> io::Result<Blocked> {
    // SAFETY: plain libc calls on stack values we own; `no_op` is async-signal-safe.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for (sig, _) in Signal::ALL {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = no_op as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Blocked(set))
    }
}

/// Starts the thread that takes the blocked signals and hands each to `forward`.
pub fn spawn_waiter(
    blocked: Blocked,
    mut forward: impl FnMut(Signal) + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `blocked.0` is an initialized set; `sig` is written on success.
            let rc = unsafe { libc::sigwait(&blocked.0, &mut sig) };
            if rc != 0 {
                continue;
            }
            if let Some(&(_, s)) = Signal::ALL.iter().find(|(n, _)| *n == sig) {
                forward(s);
            }
        })
}
