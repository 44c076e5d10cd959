//! SetGuestDateTime: the host corrects the guest's wall clock (e.g. after a
//! VM snapshot restore). Only the policy decides whether it may.

/// Why the clock was not set.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    /// Microseconds outside 0..1_000_000, or a negative time.
    #[error("invalid time: Sec={sec} Usec={usec} (Sec must be >= 0, Usec in 0..1000000)")]
    Invalid {
        /// Seconds since the Epoch.
        sec: i64,
        /// Microseconds part.
        usec: i64,
    },
    /// The kernel refused (no CAP_SYS_TIME, or out of range).
    #[error("clock_settime(CLOCK_REALTIME): {0}")]
    Os(#[from] std::io::Error),
}

/// The timespec for `sec` seconds and `usec` microseconds since the Epoch.
pub fn timespec(sec: i64, usec: i64) -> Result<rustix::time::Timespec, ClockError> {
    if sec < 0 || !(0..1_000_000).contains(&usec) {
        return Err(ClockError::Invalid { sec, usec });
    }
    Ok(rustix::time::Timespec {
        tv_sec: sec,
        tv_nsec: usec * 1000,
    })
}

/// Sets `CLOCK_REALTIME`.
pub fn set_realtime(sec: i64, usec: i64) -> Result<(), ClockError> {
    let ts = timespec(sec, usec)?;
    rustix::time::clock_settime(rustix::time::ClockId::Realtime, ts)
        .map_err(|e| ClockError::Os(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_before_touching_the_clock() {
        let ts = timespec(1_700_000_000, 250_000).unwrap();
        assert_eq!(ts.tv_sec, 1_700_000_000);
        assert_eq!(ts.tv_nsec, 250_000_000);
        for (s, u) in [(-1, 0), (0, -1), (0, 1_000_000)] {
            assert!(matches!(
                set_realtime(s, u),
                Err(ClockError::Invalid { .. })
            ));
        }
    }
}
