//! tick emitter emits a `RaftMsg::Tick` event at a certain interval.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngExt;
use tracing::Instrument;
use tracing::Level;
use tracing::Span;

use crate::AsyncRuntime;
use crate::RaftTypeConfig;
use crate::async_runtime::Select2;
use crate::async_runtime::watch::WatchReceiver;
use crate::core::notification::Notification;
use crate::type_config::TypeConfigExt;
use crate::type_config::alias::AsyncRuntimeOf;
use crate::type_config::alias::JoinHandleOf;
use crate::type_config::alias::MpscSenderOf;
use crate::type_config::alias::OneshotReceiverOf;
use crate::type_config::alias::OneshotSenderOf;
use crate::type_config::alias::InstantOf;
use crate::type_config::alias::WatchReceiverOf;
use crate::type_config::alias::WatchSenderOf;
use crate::async_runtime::watch::WatchSender;
use crate::type_config::async_runtime::mpsc::MpscSender;
use crate::type_config::async_runtime::oneshot::OneshotSender;

/// Emit RaftMsg::Tick events at a regular `period` after a randomized first wait.
pub(crate) struct Tick<C>
where C: RaftTypeConfig
{
    period: Duration,
    first_wait: Duration,

    tx: MpscSenderOf<C, Notification<C>>,

    /// Emit event or not
    enabled: WatchReceiverOf<C, bool>,

    /// pgquorum: when the core needs its next tick.
    plan: Arc<TickPlan<C>>,
    poke: WatchReceiverOf<C, u64>,
}

/// pgquorum: when the core next needs a tick, published by the core after every step and read
/// by the tick loop (see `Tick::tick_loop`).
pub(crate) struct TickPlan<C>
where C: RaftTypeConfig
{
    state: Mutex<PlanState<C>>,
}

struct PlanState<C>
where C: RaftTypeConfig
{
    /// The core's next deadline; `None`: none (not a voter), tick at most every `IDLE_CAP`.
    next: Option<InstantOf<C>>,
    /// What the tick loop sleeps until, while it sleeps.
    sleeping_until: Option<InstantOf<C>>,
    /// That sleep is the idle cap, not the plan: a later deadline changes nothing.
    capped: bool,
    /// The earliest the next tick can come (the last tick plus the tick interval).
    floor: Option<InstantOf<C>>,
    /// A tick was sent and the core has not published a plan since: `next` may be the deadline
    /// that tick served.
    stale: bool,
    /// Wakes the tick loop (held here: the sender need not be `Sync`).
    poke: WatchSenderOf<C, u64>,
}

impl<C> TickPlan<C>
where C: RaftTypeConfig
{
    /// The longest the tick loop sleeps, whatever the plan says.
    const IDLE_CAP: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> (Arc<Self>, WatchReceiverOf<C, u64>) {
        let (poke, rx) = C::watch_channel(0u64);
        let plan = TickPlan {
            state: Mutex::new(PlanState {
                next: None,
                sleeping_until: None,
                capped: false,
                floor: None,
                stale: false,
                poke,
            }),
        };
        (Arc::new(plan), rx)
    }

    /// Records the core's next deadline; wakes the tick loop if it sleeps until another moment
    /// (earlier: so the tick is not late; later: so it sleeps on the new one instead of waking
    /// at the old, see `tick_loop`), or waits for a plan after a tick.
    pub(crate) fn set(&self, next: Option<InstantOf<C>>) {
        let mut p = self.state.lock().unwrap();
        p.next = next;
        // Not held back by the interval between ticks anyway (a deadline that stays passed during
        // an election would otherwise poke every step).
        let due = next.map(|n| p.floor.map_or(n, |f| n.max(f)));
        let moved = matches!((due, p.sleeping_until), (Some(n), Some(s)) if n < s || (n > s && !p.capped));
        if std::mem::take(&mut p.stale) || moved {
            p.poke.send_if_modified(|v| {
                *v += 1;
                true
            });
        }
    }
}

pub(crate) struct TickHandle<C>
where C: RaftTypeConfig
{
    shutdown: Mutex<Option<OneshotSenderOf<C, ()>>>,
    join_handle: Mutex<Option<JoinHandleOf<C, ()>>>,
}

impl<C> Drop for TickHandle<C>
where C: RaftTypeConfig
{
    /// Signal the tick loop to stop, without waiting for it to stop.
    fn drop(&mut self) {
        if self.shutdown.lock().unwrap().is_none() {
            return;
        }
        let _ = self.shutdown();
    }
}

impl<C> Tick<C>
where C: RaftTypeConfig
{
    pub(crate) fn spawn(
        period: Duration,
        tx: MpscSenderOf<C, Notification<C>>,
        enabled: WatchReceiverOf<C, bool>,
        plan: (Arc<TickPlan<C>>, WatchReceiverOf<C, u64>),
    ) -> TickHandle<C> {
        let this = Self {
            period,
            first_wait: Self::sample_first_wait(period),
            enabled,
            tx,
            plan: plan.0,
            poke: plan.1,
        };

        let (shutdown, shutdown_rx) = C::oneshot();

        let shutdown = Mutex::new(Some(shutdown));
        let join_handle = C::spawn(this.tick_loop(shutdown_rx).instrument(tracing::span!(
            parent: &Span::current(),
            Level::DEBUG,
            "tick"
        )));

        TickHandle {
            shutdown,
            join_handle: Mutex::new(Some(join_handle)),
        }
    }

    /// Add a random phase offset from `[0, period)` to the first wait.
    fn sample_first_wait(period: Duration) -> Duration {
        if period.is_zero() {
            return period;
        }
        AsyncRuntimeOf::<C>::thread_rng().random_range(period..period * 2)
    }

    /// pgquorum: ticks when the core next needs one ([`TickPlan`]), not every `period`. The
    /// core publishes that moment after every step (the leader's next heartbeat, a voter's
    /// election deadline) and pokes this loop when it moves; the loop then sleeps until the new
    /// one. A follower's deadline moves later with every heartbeat: re-arming the sleep then
    /// (on the wake-up that brought the heartbeat) means the runtime never wakes for the old
    /// deadline, nor for moving it down tokio's timer wheel. Ticks are never closer than
    /// `period`, so while a deadline has passed (an election under way) this ticks every
    /// `period`, as upstream always does.
    pub(crate) async fn tick_loop(mut self, cancel_rx: OneshotReceiverOf<C, ()>) {
        let mut i = 0;

        let mut cancel = std::pin::pin!(cancel_rx);
        // As if the last tick had been `period` before the randomized first one.
        let mut last_tick = C::now() + (self.first_wait - self.period.min(self.first_wait));

        loop {
            let now = C::now();
            let at = {
                let mut p = self.plan.state.lock().unwrap();
                let cap = now + TickPlan::<C>::IDLE_CAP;
                // Until the core has taken the last tick in, its deadline is unknown: it pokes.
                let due = if p.stale { cap } else { p.next.map_or(cap, |n| n.min(cap)) };
                let at = due.max(last_tick + self.period);
                p.sleeping_until = Some(at);
                p.capped = due == cap;
                p.floor = Some(last_tick + self.period);
                at
            };

            let sleep_fut = std::pin::pin!(C::sleep_until(at));
            let poked = std::pin::pin!(self.poke.changed());
            match C::select2(cancel.as_mut(), C::select2(sleep_fut, poked)).await {
                Select2::First(_) => {
                    tracing::info!("TickLoop received cancel signal, quit");
                    return;
                }
                // The deadline moved: plan again.
                Select2::Second(Select2::Second(Ok(()))) => continue,
                Select2::Second(Select2::Second(Err(_closed))) => {
                    tracing::info!("TickLoop: RaftCore dropped its tick plan, quit");
                    return;
                }
                Select2::Second(Select2::First(_)) => {}
            }

            let now = C::now();
            {
                let mut p = self.plan.state.lock().unwrap();
                p.sleeping_until = None;
                // The deadline moved later while this slept: no tick, sleep until the new one.
                if !p.stale && p.next.is_some_and(|next| now < next) {
                    continue;
                }
            }

            let enabled = *self.enabled.borrow_watched();
            if !enabled {
                let enabled_fut = std::pin::pin!(self.enabled.wait_until(|enabled| *enabled));

                let selected = C::select2(cancel.as_mut(), enabled_fut).await;
                match selected {
                    Select2::First(_) => {
                        tracing::info!("TickLoop received cancel signal while disabled, quit");
                        return;
                    }
                    Select2::Second(Err(_closed)) => {
                        tracing::info!("TickLoop: RuntimeConfig dropped while disabled, quit");
                        return;
                    }
                    Select2::Second(Ok(_)) => {
                        tracing::debug!("Tick re-enabled");
                    }
                }
                continue;
            }

            i += 1;
            last_tick = C::now();
            self.plan.state.lock().unwrap().stale = true;

            let send_res = self.tx.send(Notification::Tick { i }).await;
            if let Err(_e) = send_res {
                tracing::info!("Stopping tick_loop(), main loop terminated");
                break;
            } else {
                tracing::debug!("Tick sent: {}", i)
            }
        }
    }
}

impl<C> TickHandle<C>
where C: RaftTypeConfig
{
    /// Signal the tick loop to stop. And return a JoinHandle to wait for the loop to stop.
    ///
    /// If it is called twice, the second call will return None.
    pub(crate) fn shutdown(&self) -> Option<JoinHandleOf<C, ()>> {
        {
            let shutdown = {
                let mut x = self.shutdown.lock().unwrap();
                x.take()
            };

            if let Some(shutdown) = shutdown {
                let send_res = shutdown.send(());
                tracing::info!("Timer shutdown signal sent: {send_res:?}");
            } else {
                tracing::warn!("Double call to Raft::shutdown()");
            }
        }

        {
            let mut x = self.join_handle.lock().unwrap();
            x.take()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Duration;

    use openraft_rt::deterministic_rng::DeterministicRng;
    use openraft_rt_tokio::TokioRuntime;
    use rand::RngExt;

    use crate::AsyncRuntime;
    use crate::OptionalSend;
    use crate::RaftTypeConfig;
    use crate::async_runtime::MpscReceiver;
    use crate::async_runtime::watch::WatchSender;
    use crate::core::Tick;
    use crate::core::TickHandle;
    use crate::core::TickPlan;
    use crate::core::notification::Notification;
    use crate::type_config::alias::InstantOf;
    use crate::type_config::alias::MpscSenderOf;
    use crate::type_config::TypeConfigExt;
    use crate::type_config::alias::MpscReceiverOf;

    #[derive(Debug, Clone, Copy, Default, Eq, PartialEq, Ord, PartialOrd)]
    #[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
    pub(crate) struct TickUTConfig {}
    impl RaftTypeConfig for TickUTConfig {
        type D = u64;
        type R = ();
        type NodeId = u64;
        type Node = ();
        type Term = u64;
        type LeaderId = crate::impls::leader_id_adv::LeaderId<u64, u64>;
        type Vote = crate::impls::Vote<Self::LeaderId>;
        type Payload = crate::EntryPayload<Self::D, Self::NodeId, Self::Node>;
        type Entry = crate::Entry<<Self::LeaderId as crate::vote::RaftLeaderId>::Committed, Self::Payload>;
        type AsyncRuntime = TokioRuntime;
        type Responder<T>
            = crate::impls::OneshotResponder<Self, T>
        where T: OptionalSend + 'static;
        type Batch<T>
            = crate::impls::InlineBatch<T>
        where T: OptionalSend + 'static;
        type ErrorSource = anyerror::AnyError;
    }

    /// A runtime whose `thread_rng()` is seeded, so sampled first waits are reproducible.
    type SeededRuntime = DeterministicRng<TokioRuntime>;

    crate::declare_raft_types!(
        SeededTickConfig:
            D = u64,
            R = (),
            Node = (),
            AsyncRuntime = SeededRuntime,
    );

    /// Run `future` with `seed` installed as the deterministic RNG seed.
    fn run_seeded<F, T>(seed: u64, future: F) -> T
    where
        F: Future<Output = T>,
        T: Send,
    {
        let mut runtime = TokioRuntime::new(1);
        runtime.block_on(SeededRuntime::scope(seed, future))
    }

    #[test]
    fn test_sample_first_wait_preserves_duration_precision() {
        const SEED: u64 = 7;
        const SAMPLES: usize = 8;

        let periods = [
            Duration::from_millis(100),
            Duration::from_micros(100),
            Duration::from_secs(10),
        ];

        for period in periods {
            let sampled = run_seeded(SEED, async {
                (0..SAMPLES).map(|_| Tick::<SeededTickConfig>::sample_first_wait(period)).collect::<Vec<_>>()
            });

            let expected = run_seeded(SEED, async {
                (0..SAMPLES)
                    .map(|_| SeededRuntime::thread_rng().random_range(period..period * 2))
                    .collect::<Vec<_>>()
            });

            assert_eq!(
                expected, sampled,
                "the whole sequence must be reproducible; period={period:?}"
            );
            assert!(
                sampled.iter().all(|d| (period..period * 2).contains(d)),
                "{sampled:?} must all fall inside the first-wait range for {period:?}"
            );
            assert!(
                sampled.iter().any(|d| *d != period),
                "draws must not collapse to the period: {sampled:?}"
            );
        }

        let sampled = run_seeded(SEED, async {
            Tick::<SeededTickConfig>::sample_first_wait(Duration::ZERO)
        });
        assert_eq!(Duration::ZERO, sampled);
    }

    #[test]
    fn test_sample_first_wait_is_uniformly_distributed() {
        const SEED: u64 = 11;
        const BUCKETS: usize = 10;
        const SAMPLES_PER_BUCKET: usize = 1_000;
        const MAX_DEVIATION: usize = SAMPLES_PER_BUCKET / 10;

        let period = Duration::from_millis(100);
        let sampled = run_seeded(SEED, async {
            (0..BUCKETS * SAMPLES_PER_BUCKET)
                .map(|_| Tick::<SeededTickConfig>::sample_first_wait(period))
                .collect::<Vec<_>>()
        });

        let mut counts = [0_usize; BUCKETS];
        for first_wait in sampled {
            let offset = first_wait - period;
            let bucket = (offset.as_nanos() * BUCKETS as u128 / period.as_nanos()) as usize;
            counts[bucket] += 1;
        }

        assert!(
            counts.iter().all(|count| count.abs_diff(SAMPLES_PER_BUCKET) <= MAX_DEVIATION),
            "each bucket must be within 10% of the expected count {SAMPLES_PER_BUCKET}: {counts:?}"
        );
    }

    /// Receive the next notification, asserting it is a tick, and return its number.
    async fn recv_tick<C>(rx: &mut MpscReceiverOf<C, Notification<C>>) -> u64
    where C: RaftTypeConfig {
        match rx.recv().await {
            Some(Notification::Tick { i }) => i,
            Some(other) => unreachable!("expect a Tick notification, got: {other}"),
            None => unreachable!("the tick channel closed before a tick arrived"),
        }
    }

    /// Spawns a tick loop with `period` and a plan whose deadline is `first`.
    fn spawn_planned(
        period: Duration,
        first: Option<InstantOf<TickUTConfig>>,
        tx: MpscSenderOf<TickUTConfig, Notification<TickUTConfig>>,
    ) -> (TickHandle<TickUTConfig>, Arc<TickPlan<TickUTConfig>>) {
        let (_enable_tx, enabled) = TickUTConfig::watch_channel(true);
        std::mem::forget(_enable_tx);
        let (plan, poke) = TickPlan::<TickUTConfig>::new();
        plan.set(first);
        (Tick::<TickUTConfig>::spawn(period, tx, enabled, (plan.clone(), poke)), plan)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn test_shutdown_interrupts_first_wait() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            // A first wait far longer than this test's own timeout: the loop can only finish by
            // observing the shutdown signal.
            let (th, _plan) = spawn_planned(Duration::from_secs(10), Some(TickUTConfig::now()), tx);

            TickUTConfig::sleep(ms(50)).await;
            let join_handle = th.shutdown().unwrap();

            TickUTConfig::timeout(ms(500), join_handle)
                .await
                .expect("tick loop must stop while still inside the first wait")
                .expect("tick loop must not panic");
            assert!(rx.recv().await.is_none(), "no tick should precede the first wait");
        });
    }

    /// pgquorum: one tick at the planned deadline, none before it; after the core plans the
    /// next deadline, nothing until then.
    #[test]
    fn test_ticks_at_the_planned_deadline_only() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(20), Some(start + ms(300)), tx);

            let early = TickUTConfig::timeout(ms(270), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(early.is_err(), "a tick came before the deadline");
            let first = TickUTConfig::timeout(ms(100), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, first.expect("no tick at the deadline"));
            assert!(TickUTConfig::now() >= start + ms(300), "the tick came before the deadline");

            // The core takes the tick in and plans the next deadline 400 ms out.
            let next = TickUTConfig::now() + ms(400);
            plan.set(Some(next));
            let early = TickUTConfig::timeout(ms(360), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(early.is_err(), "a tick came between planned deadlines");
            let second = TickUTConfig::timeout(ms(100), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(2, second.expect("no tick at the second deadline"));
            assert!(TickUTConfig::now() >= next);

            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: a deadline that moves later (a follower hearing from its leader) is not ticked
    /// at its old time.
    #[test]
    fn test_a_deadline_moved_later_is_not_ticked_early() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(20), Some(start + ms(200)), tx);
            for k in 1..=4u64 {
                TickUTConfig::sleep(ms(100)).await;
                plan.set(Some(start + ms(200 + 100 * k)));
            }
            // The deadline is now start + 600 ms.
            let early = TickUTConfig::timeout_at(start + ms(570), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(early.is_err(), "a tick came at a deadline that had moved");
            let tick = TickUTConfig::timeout(ms(150), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, tick.expect("no tick at the last deadline"));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: the loop re-arms its sleep when the deadline moves later, on the step that
    /// moved it, so the runtime does not wake at the old deadline.
    #[test]
    fn test_a_deadline_moved_later_re_arms_the_sleep_at_once() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(20), Some(start + ms(200)), tx);
            let sleeping_until = || plan.state.lock().unwrap().sleeping_until;
            TickUTConfig::sleep(ms(50)).await;
            assert_eq!(Some(start + ms(200)), sleeping_until());
            plan.set(Some(start + ms(400)));
            // The loop runs on this runtime: give it a turn, no time passes.
            for _ in 0..10 {
                if sleeping_until() == Some(start + ms(400)) {
                    break;
                }
                TickUTConfig::sleep(Duration::ZERO).await;
            }
            assert_eq!(Some(start + ms(400)), sleeping_until(), "the sleep was not re-armed");
            let tick = TickUTConfig::timeout_at(start + ms(500), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, tick.expect("no tick at the moved deadline"));
            assert!(TickUTConfig::now() >= start + ms(400));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: a deadline that moves earlier than the one slept on wakes the loop.
    #[test]
    fn test_an_earlier_deadline_wakes_the_loop() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(20), Some(start + ms(900)), tx);
            TickUTConfig::sleep(ms(100)).await;
            plan.set(Some(start + ms(200)));
            let tick = TickUTConfig::timeout_at(start + ms(300), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, tick.expect("the earlier deadline was not ticked"));
            assert!(TickUTConfig::now() >= start + ms(200));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: while the deadline stays passed (an election under way), it ticks every period,
    /// as upstream; the period is a floor between ticks.
    #[test]
    fn test_a_passed_deadline_ticks_every_period() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(50), Some(start), tx);
            let mut at = Vec::new();
            while TickUTConfig::now() < start + ms(600) {
                let i = TickUTConfig::timeout(ms(200), recv_tick::<TickUTConfig>(&mut rx)).await;
                i.expect("a passed deadline must keep ticking");
                at.push(TickUTConfig::now());
                // The core takes the tick in; its deadline is still the passed one.
                plan.set(Some(start));
            }
            let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(gaps.iter().all(|g| *g >= ms(45)), "ticks closer than the period: {gaps:?}");
            assert!(gaps.iter().all(|g| *g <= ms(120)), "ticks further apart than the period: {gaps:?}");
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: after a tick, the loop waits for the core's next plan instead of waking a
    /// period later to find the deadline it served.
    #[test]
    fn test_after_a_tick_the_loop_waits_for_the_plan() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(20), Some(start + ms(100)), tx);
            assert_eq!(1, TickUTConfig::timeout(ms(300), recv_tick::<TickUTConfig>(&mut rx)).await.unwrap());
            // The core is slow to take the tick in: no second tick for the deadline just served.
            let again = TickUTConfig::timeout(ms(300), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(again.is_err(), "the served deadline was ticked again before a new plan");
            // The core's plan arrives; it is due now.
            plan.set(Some(TickUTConfig::now()));
            let next = TickUTConfig::timeout(ms(100), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(2, next.expect("the new plan was not ticked"));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: the core may publish the deadline a tick served once more before it takes that
    /// tick in (an iteration already under way); the plan after it is what counts.
    #[test]
    fn test_a_served_deadline_published_again_does_not_tick_twice() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let start = TickUTConfig::now();
            let (th, plan) = spawn_planned(ms(50), Some(start + ms(100)), tx);
            assert_eq!(1, TickUTConfig::timeout(ms(300), recv_tick::<TickUTConfig>(&mut rx)).await.unwrap());
            let ticked = TickUTConfig::now();
            plan.set(Some(start + ms(100)));
            TickUTConfig::sleep(ms(10)).await;
            let next = ticked + ms(400);
            plan.set(Some(next));
            let early = TickUTConfig::timeout_at(next - ms(30), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(early.is_err(), "the served deadline was ticked again");
            let tick = TickUTConfig::timeout(ms(150), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(2, tick.expect("no tick at the new deadline"));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: disabling a running tick stops it until it is enabled again, then it ticks at
    /// the deadline that passed meanwhile.
    #[test]
    fn test_a_tick_disabled_while_running_stops_and_resumes() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let (switch, enabled) = TickUTConfig::watch_channel(true);
            let (plan, poke) = TickPlan::<TickUTConfig>::new();
            let start = TickUTConfig::now();
            plan.set(Some(start + ms(50)));
            let th = Tick::<TickUTConfig>::spawn(ms(20), tx, enabled, (plan.clone(), poke));
            assert_eq!(1, TickUTConfig::timeout(ms(300), recv_tick::<TickUTConfig>(&mut rx)).await.unwrap());
            switch.send(false).unwrap();
            plan.set(Some(TickUTConfig::now() + ms(50)));
            TickUTConfig::sleep(ms(300)).await;
            assert!(rx.try_recv().is_err(), "a disabled tick must not emit");
            switch.send(true).unwrap();
            let tick = TickUTConfig::timeout(ms(200), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(2, tick.expect("re-enabling must tick the passed deadline"));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// pgquorum: without a deadline (a learner) the loop still ticks, at most every `IDLE_CAP`.
    #[test]
    fn test_no_deadline_ticks_at_the_idle_cap() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let (th, _plan) = spawn_planned(ms(20), None, tx);
            let early = TickUTConfig::timeout(TickPlan::<TickUTConfig>::IDLE_CAP - ms(100), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert!(early.is_err(), "ticked without a deadline before the idle cap");
            let tick = TickUTConfig::timeout(ms(300), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, tick.expect("no tick at the idle cap"));
            th.shutdown().unwrap().await.unwrap();
        });
    }

    /// A disabled tick emits nothing and resumes when re-enabled.
    #[test]
    fn test_a_disabled_tick_resumes_when_enabled() {
        TickUTConfig::run(async {
            let (tx, mut rx) = TickUTConfig::mpsc(1024);
            let (switch, enabled) = TickUTConfig::watch_channel(false);
            let (plan, poke) = TickPlan::<TickUTConfig>::new();
            plan.set(Some(TickUTConfig::now()));
            let th = Tick::<TickUTConfig>::spawn(ms(10), tx, enabled, (plan.clone(), poke));
            TickUTConfig::sleep(ms(200)).await;
            assert!(rx.try_recv().is_err(), "a disabled tick must not emit");
            switch.send(true).unwrap();
            let i = TickUTConfig::timeout(Duration::from_secs(1), recv_tick::<TickUTConfig>(&mut rx)).await;
            assert_eq!(1, i.expect("re-enabling must resume ticking"));
            th.shutdown().unwrap().await.unwrap();
        });
    }
}
