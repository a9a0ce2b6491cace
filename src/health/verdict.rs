//! The active checks' threshold: `rise` passes in a row mark a server up, `fall`
//! failures in a row mark it down. Pure: fed one check result at a time.

/// Consecutive results and the verdict of one server's active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    up: bool,
    passes: u32,
    fails: u32,
}

impl Verdict {
    /// The starting verdict.
    pub fn new(up: bool) -> Verdict {
        Verdict {
            up,
            passes: 0,
            fails: 0,
        }
    }

    /// The current verdict.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one check result; returns the new verdict when it flips.
    pub fn observe(&mut self, pass: bool, rise: u32, fall: u32) -> Option<bool> {
        if pass {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            if !self.up && self.passes >= rise {
                self.up = true;
                return Some(true);
            }
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            if self.up && self.fails >= fall {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_flip_after_rise_and_fall_in_a_row() {
        let mut v = Verdict::new(true);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), None, "a pass resets the failures");
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), None);
        assert_eq!(v.observe(false, 2, 3), Some(false));
        assert_eq!(v.observe(false, 2, 3), None, "flips once");
        assert_eq!(v.observe(true, 2, 3), None);
        assert_eq!(v.observe(true, 2, 3), Some(true));
        assert_eq!(v.observe(true, 2, 3), None);
        assert!(v.is_up());
    }
}
