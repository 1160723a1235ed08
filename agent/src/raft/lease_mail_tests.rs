//! `LeaseMail`: an order goes out once, with the first reply at or after its due time and not
//! after its time; only a note accepted after the send and naming it confirms it; the leader
//! answers a carried renewal once, in the same term, through the coordinator.

use super::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn order(due: Instant) -> Order {
    Order { member: "m1".into(), epoch: 3, due, not_after: due + MS(500) }
}

fn vote(term: u64) -> Vote {
    Vote::new_committed(term, 1)
}

/// Lets the tasks the mail spawned run.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_renewal_goes_out_once_with_the_first_reply_after_its_due_time() {
    let mail = LeaseMail::default();
    let t0 = Instant::now();
    mail.arm(order(t0 + MS(10)));
    assert_eq!(mail.renewal_to_send(t0), None, "not yet due");
    let r = mail.renewal_to_send(t0 + MS(10)).expect("due");
    assert_eq!((r.member.as_str(), r.epoch), ("m1", 3));
    assert_eq!(mail.renewal_to_send(t0 + MS(20)), None, "only once");
    let sent = mail.disarm().expect("the loop learns it went out");
    assert_eq!(sent, Sent { id: r.id, epoch: 3, at: t0 + MS(10) });
    assert_eq!(mail.disarm(), None);
    assert_eq!(mail.carried(), 1);
}

#[tokio::test]
async fn a_disarmed_or_overdue_order_is_never_sent() {
    let mail = LeaseMail::default();
    let t0 = Instant::now();
    mail.arm(order(t0));
    assert_eq!(mail.disarm(), None);
    assert_eq!(mail.renewal_to_send(t0 + MS(1)), None, "taken back");
    mail.arm(order(t0));
    assert_eq!(mail.renewal_to_send(t0 + MS(501)), None, "past its time: the loop renews by call");
    assert_eq!(mail.disarm(), None);
    assert_eq!(mail.carried(), 0);
}

#[tokio::test]
async fn renewal_numbers_differ_between_runs_of_the_agent() {
    let (a, b) = (LeaseMail::default(), LeaseMail::default());
    let t0 = Instant::now();
    a.arm(order(t0));
    b.arm(order(t0));
    let (ra, rb) = (a.renewal_to_send(t0).expect("due"), b.renewal_to_send(t0).expect("due"));
    assert_ne!(ra.id, rb.id, "a note for an earlier run's renewal must not name this run's");
}

#[tokio::test]
async fn only_a_note_accepted_after_the_send_and_naming_the_renewal_confirms_it() {
    let mail = std::sync::Arc::new(LeaseMail::default());
    let t0 = Instant::now();
    mail.arm(order(t0));
    let first = mail.renewal_to_send(t0).expect("due");
    // A note for the next renewal's number, accepted before that renewal goes out (an earlier
    // run's, say), is forgotten when it does.
    mail.note_accepted(&LeaseNote { epoch: 3, id: first.id + 1, ttl_ms: 1500 });
    mail.disarm();
    mail.arm(order(t0));
    mail.renewal_to_send(t0).expect("due");
    let sent = mail.disarm().expect("sent");
    assert_eq!(sent.id, first.id + 1);
    let waiting = tokio::spawn({
        let mail = mail.clone();
        async move { mail.confirmation(sent).await }
    });
    mail.note_accepted(&LeaseNote { epoch: 3, id: first.id, ttl_ms: 1500 });
    mail.note_accepted(&LeaseNote { epoch: 2, id: sent.id, ttl_ms: 1500 });
    settle().await;
    assert!(!waiting.is_finished(), "a stale note, another renewal's, or another epoch's confirms nothing");
    mail.note_accepted(&LeaseNote { epoch: 3, id: sent.id, ttl_ms: 1500 });
    assert_eq!(waiting.await.expect("task"), MS(1500));
}

#[tokio::test]
async fn the_leader_answers_each_carried_renewal_once_under_its_vote_through_the_coordinator() {
    let mail = std::sync::Arc::new(LeaseMail::default());
    let renewal = LeaseRenewal { member: "m1".into(), epoch: 3, id: 5 };
    mail.renewal_arrived(2, renewal.clone(), Instant::now(), vote(7));
    assert_eq!(mail.note_for(2, &vote(7)), None, "no coordinator yet: no note");
    mail.set_confirmer(Box::new(|target, arrived, vote| {
        let ok = target == 2 && vote.leader_id().term == 7 && arrived.renewal.epoch == 3;
        Box::pin(async move { if ok { Ok(MS(1500)) } else { Err("refused".to_string()) } })
    }));
    mail.renewal_arrived(2, renewal.clone(), Instant::now(), vote(7));
    settle().await;
    assert_eq!(mail.note_for(3, &vote(7)), None, "another peer's AppendEntries carries nothing");
    assert_eq!(mail.note_for(2, &vote(7)), Some(LeaseNote { epoch: 3, id: 5, ttl_ms: 1500 }));
    assert_eq!(mail.note_for(2, &vote(7)), None, "answered once");
    mail.renewal_arrived(2, renewal.clone(), Instant::now(), vote(6));
    settle().await;
    assert_eq!(mail.note_for(2, &vote(7)), None, "asked under another vote: dropped");
    assert_eq!(mail.note_for(2, &vote(6)), None, "and gone");
    mail.renewal_arrived(2, renewal, Instant::now(), vote(8));
    settle().await;
    assert_eq!(mail.note_for(2, &vote(8)), None, "refused by the coordinator: no note");
}

#[tokio::test]
async fn no_appendentries_waits_for_the_coordinator_and_a_late_answer_goes_with_a_later_one() {
    let mail = std::sync::Arc::new(LeaseMail::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = std::sync::Mutex::new(Some(rx));
    mail.set_confirmer(Box::new(move |_, _, _| {
        let rx = rx.lock().expect("not poisoned").take();
        Box::pin(async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok(MS(1500))
        })
    }));
    mail.renewal_arrived(2, LeaseRenewal { member: "m1".into(), epoch: 3, id: 9 }, Instant::now(), vote(7));
    settle().await;
    assert_eq!(mail.note_for(2, &vote(7)), None, "the coordinator has not answered: nothing, at once");
    tx.send(()).expect("confirmer waiting");
    settle().await;
    assert_eq!(mail.note_for(2, &vote(7)), Some(LeaseNote { epoch: 3, id: 9, ttl_ms: 1500 }));
}

#[tokio::test]
async fn a_late_note_for_an_earlier_renewal_does_not_replace_the_current_ones() {
    let mail = LeaseMail::default();
    let t0 = Instant::now();
    mail.arm(order(t0));
    let first = mail.renewal_to_send(t0).expect("due");
    mail.disarm();
    mail.arm(order(t0));
    let second = mail.renewal_to_send(t0).expect("due");
    let sent = mail.disarm().expect("sent");
    mail.note_accepted(&LeaseNote { epoch: 3, id: second.id, ttl_ms: 1500 });
    mail.note_accepted(&LeaseNote { epoch: 3, id: first.id, ttl_ms: 1500 });
    let got = tokio::time::timeout(MS(100), mail.confirmation(sent)).await;
    assert_eq!(got, Ok(MS(1500)), "the current renewal stays confirmed");
}
