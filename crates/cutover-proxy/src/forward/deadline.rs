//! The request timeout around one upstream exchange, at the cost of one timer
//! registration per request.
//!
//! `tokio::time::timeout` polls its timer on every poll of the future it wraps: two
//! cooperative-budget checks, a waker registration and the timer's state each time. An
//! exchange is polled several times per request (the upstream's socket becoming
//! writable and readable, and the client connection's own wake-ups), so that repeated
//! work was a measurable share of the request path. [`within`] polls the timer once, to
//! register it with the task's waker, and afterwards reads whether it fired, which is
//! one atomic load; it polls the timer again only if the task's waker changes.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

/// Runs `future` for at most `limit`: its output, or [`Elapsed`] once `limit` has passed
/// without it. As with `tokio::time::timeout`, a future that is ready when the deadline
/// fires still wins.
///
/// A hand-written future rather than an `async fn`: an `async fn` keeps its argument and
/// the pinned local it moves into, so the wrapped future (the whole upstream exchange)
/// would take its room twice and be copied once more on every request.
pub(super) fn within<F: Future>(limit: Duration, future: F) -> Within<F> {
    Within {
        future,
        sleep: tokio::time::sleep(limit),
        registered: None,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    pub(super) struct Within<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: tokio::time::Sleep,
        // The waker the timer wakes, once it is registered.
        registered: Option<Waker>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if let Some(waker) = this.registered.as_ref()
            && waker.will_wake(cx.waker())
        {
            // The timer wakes this task when it fires; until then nothing to do.
            return if this.sleep.is_elapsed() {
                Poll::Ready(Err(Elapsed))
            } else {
                Poll::Pending
            };
        }
        *this.registered = Some(cx.waker().clone());
        // Outside the task's budget: a task out of budget would get `Pending` from the
        // timer without the timer being registered, and the deadline would never fire.
        let mut sleep = this.sleep;
        let poll_sleep = pin!(tokio::task::unconstrained(std::future::poll_fn(|cx| {
            sleep.as_mut().poll(cx)
        })));
        poll_sleep.poll(cx).map(|()| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_future_that_never_ends_times_out_at_its_deadline() {
        let started = tokio::time::Instant::now();
        let result = within(Duration::from_millis(250), std::future::pending::<()>()).await;
        assert_eq!(result, Err(Elapsed));
        assert_eq!(started.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_woken_many_times_still_times_out() {
        // Wakes its task every 10 ms and never completes: every poll after the first
        // reads the timer without polling it, and the deadline must still fire.
        let started = tokio::time::Instant::now();
        let busy = async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let result = within(Duration::from_millis(95), busy).await;
        assert_eq!(result, Err(Elapsed));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(95) && waited <= Duration::from_millis(100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_ends_in_time_gives_its_output() {
        let quick = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        };
        assert_eq!(within(Duration::from_secs(1), quick).await, Ok(7));
    }

    #[tokio::test]
    async fn a_task_out_of_budget_still_registers_its_deadline() {
        // Spend the task's cooperative budget, then start the deadline in the same poll.
        let result = within(Duration::from_millis(50), async {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            for _ in 0..1000 {
                let _ = tx.send(());
            }
            std::future::poll_fn(|cx| {
                while let Poll::Ready(Some(())) = rx.poll_recv(cx) {}
                Poll::<()>::Pending
            })
            .await
        });
        let outcome = tokio::time::timeout(Duration::from_secs(5), result).await;
        assert_eq!(outcome, Ok(Err(Elapsed)), "the deadline fired");
    }
}
