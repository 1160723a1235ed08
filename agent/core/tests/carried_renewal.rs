//! `lease::pair_is_quorum`, the rule that lets a Raft leader confirm a renewal inside the
//! AppendEntries that its primary's member accepts: it may do so only where every quorum that
//! could elect another leader includes the leader or that member. Checked exhaustively over
//! every membership of up to five voters (single and joint) and every pair.

use std::collections::BTreeSet;

use pgquorum_core::ha::rules::lease::pair_is_quorum;

/// Every subset of `0..n` (as sets of node ids).
fn subsets(n: u8) -> Vec<BTreeSet<u8>> {
    (0u32..1 << n).map(|bits| (0..n).filter(|i| bits & (1 << i) != 0).collect()).collect()
}

/// Whether some majority of `set` leaves out both `a` and `b` (it could elect a leader without
/// either of them): every subset of `set` larger than half of it, looked at one by one.
fn majority_without(set: &BTreeSet<u8>, a: u8, b: u8) -> bool {
    subsets(5)
        .into_iter()
        .filter(|m| m.is_subset(set) && 2 * m.len() > set.len())
        .any(|m| !m.contains(&a) && !m.contains(&b))
}

#[test]
fn the_pair_is_a_quorum_exactly_when_no_majority_of_any_voter_set_leaves_both_out() {
    let sets: Vec<_> = subsets(5).into_iter().filter(|s| !s.is_empty()).collect();
    let mut checked = 0;
    for (i, first) in sets.iter().enumerate() {
        // A single voter set, and joint ones (a membership change in progress).
        let joints = std::iter::once(None).chain(sets[i..].iter().map(Some));
        for second in joints {
            let voters: Vec<_> = std::iter::once(first.clone()).chain(second.cloned()).collect();
            for leader in 0..5u8 {
                for peer in 0..5u8 {
                    let safe = leader != peer && voters.iter().all(|s| !majority_without(s, leader, peer));
                    assert_eq!(
                        pair_is_quorum(&voters, &leader, &peer),
                        safe,
                        "voters {voters:?}, leader {leader}, peer {peer}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 10_000, "checked {checked} cases");
}

#[test]
fn three_voters_carry_renewals_and_five_do_not() {
    let three: [BTreeSet<u64>; 1] = [[1, 2, 3].into()];
    let five: [BTreeSet<u64>; 1] = [[1, 2, 3, 4, 5].into()];
    assert!(pair_is_quorum(&three, &1, &2));
    assert!(!pair_is_quorum(&five, &1, &2), "five voters: two are no majority");
    assert!(
        !pair_is_quorum(&[three[0].clone(), five[0].clone()], &1, &2),
        "joint: a majority of both sets needed"
    );
    assert!(!pair_is_quorum(&three, &1, &1), "the leader alone is not a pair");
    assert!(!pair_is_quorum(&three, &1, &4), "a learner is not a voter");
    assert!(!pair_is_quorum::<u64>(&[], &1, &2), "no membership known");
}
