//! Precise wake-ups for the publishers, and the quantum their schedules are
//! rounded to.
//!
//! tokio's timer has millisecond resolution and rounds every deadline up to
//! its own millisecond grid, so a publisher woken by it sends up to a
//! millisecond after its events were due, by an offset that changes from run
//! to run: too coarse when the latencies to tell apart are below a
//! millisecond. A [`Timer`] is a timerfd (the kernel's high-resolution timer,
//! no timer slack) polled by tokio's reactor, so a publisher wakes within
//! tens of µs of its deadline.
//!
//! A publisher's schedule is rounded up to its quantum: with 1 ms, the events
//! due in each millisecond go out together at its end, stamped with it; with
//! none (chat), each event goes out alone at its own due time.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// The quantum of every scenario but chat.
pub const TICK: Duration = Duration::from_millis(1);

/// The last multiple of `quantum_ns` at or before `ns`.
pub fn floor(ns: u64, quantum_ns: u64) -> u64 {
    let quantum_ns = quantum_ns.max(1);
    ns / quantum_ns * quantum_ns
}

/// The first multiple of `quantum_ns` at or after `ns`: when an event due at
/// `ns` is sent, and the time it is stamped with.
pub fn ceil(ns: u64, quantum_ns: u64) -> u64 {
    let quantum_ns = quantum_ns.max(1);
    ns.div_ceil(quantum_ns) * quantum_ns
}

/// A one-shot timer with sub-millisecond precision.
pub struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    pub fn new() -> io::Result<Timer> {
        // SAFETY: plain system call; the descriptor it returns is owned below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which keeps it open
        // and never swaps it for another.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(Timer { fd })
    }

    /// Waits until `deadline` (`Instant` is CLOCK_MONOTONIC on Linux, like
    /// the timer). Cancel-safe: the next call re-arms the timer.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        let Some(delay) = deadline
            .checked_duration_since(Instant::now())
            .filter(|delay| !delay.is_zero())
        else {
            return Ok(());
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: delay.as_secs() as libc::time_t,
                tv_nsec: delay.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        // Arming also resets the expiry count a cancelled wait left behind.
        let armed =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if armed < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let expired = ready.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let read =
                    unsafe { libc::read(fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
                if read < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            // Err: readiness left over from an earlier arming; wait again.
            if let Ok(result) = expired {
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_the_quantum() {
        let ms = 1_000_000;
        assert_eq!(floor(2_999_999, ms), 2_000_000);
        assert_eq!(floor(3_000_000, ms), 3_000_000);
        assert_eq!(ceil(2_000_001, ms), 3_000_000);
        assert_eq!(ceil(3_000_000, ms), 3_000_000);
        // No quantum: every time is its own.
        assert_eq!(floor(2_000_001, 0), 2_000_001);
        assert_eq!(ceil(2_000_001, 0), 2_000_001);
    }

    #[test]
    fn wakes_after_the_deadline_and_rearms() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut timer = Timer::new().unwrap();
            for delay_us in [300, 2000, 50] {
                let deadline = Instant::now() + Duration::from_micros(delay_us);
                timer.sleep_until(deadline).await.unwrap();
                let late = Instant::now() - deadline;
                assert!(Instant::now() >= deadline);
                // Generous: a shared test machine can be slow to schedule us.
                assert!(late < Duration::from_millis(200), "{late:?} late");
            }
            // A cancelled wait leaves nothing behind for the next.
            let cancelled = timer.sleep_until(Instant::now() + Duration::from_micros(100));
            drop(tokio::time::timeout(Duration::from_micros(1), cancelled).await);
            tokio::time::sleep(Duration::from_millis(2)).await;
            let deadline = Instant::now() + Duration::from_millis(3);
            timer.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline);
            // A deadline in the past returns at once.
            timer.sleep_until(Instant::now()).await.unwrap();
        });
    }
}
