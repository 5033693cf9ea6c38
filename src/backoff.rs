//! One back-off policy for every retry loop of the daemon (a sink waiting
//! for its target, a source restarting its child or reopening its socket,
//! an append waiting for disk space): exponential with a cap, reset after
//! a success, and a wait that ends early when the daemon stops.

use std::time::Duration;

use crate::shutdown::Shutdown;

/// Exponential back-off with a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits `initial` first, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// Back to the initial wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The next wait; the one after it is doubled (up to the cap).
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Waits the next step; false when the daemon stops meanwhile.
    pub async fn wait(&mut self, shutdown: &mut Shutdown) -> bool {
        let d = self.step();
        tokio::select! {
            _ = shutdown.recv() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        assert_eq!(
            [b.step(), b.step(), b.step(), b.step()],
            [ms(100), ms(200), ms(350), ms(350)]
        );
        b.reset();
        assert_eq!(b.step(), ms(100));
    }

    #[tokio::test]
    async fn wait_ends_on_shutdown() {
        let (trigger, mut shutdown) = crate::shutdown::ShutdownTrigger::new();
        trigger.fire();
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!b.wait(&mut shutdown).await);
    }
}
