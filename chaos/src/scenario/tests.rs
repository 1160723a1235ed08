//! Scenario files parse, bad ones say what to fix, and a seed always yields one schedule.

use super::{FaultKind, Order, Scenario, Target};

const TWO: &str = r#"
[run]
order = "weighted"
[[fault]]
kind = "kill-node"
weight = 3
[[fault]]
kind = "partition"
target = "replica"
hold = "5s"
"#;

#[test]
fn every_shipped_scenario_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("chaos/scenarios") {
        let path = e.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!s.description.is_empty(), "{} says what it is for", path.display());
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let s = Scenario::parse(TWO).expect("parses");
    assert_eq!(s.order, Order::Weighted);
    assert_eq!(s.fault[1].target, Target::Replica);
    assert_eq!(s.fault[1].hold.as_secs(), 5);
    let a = s.schedule(7, 200, true);
    assert_eq!(a, s.schedule(7, 200, true));
    assert_ne!(a, s.schedule(8, 200, true));
    let kills = a.iter().filter(|p| p.spec.kind == FaultKind::KillNode).count();
    assert!((120..=180).contains(&kills), "weights 3:1 give about 150 of 200, got {kills}");
}

#[test]
fn without_network_namespaces_partitions_are_left_out() {
    let s = Scenario::parse(TWO).expect("parses");
    assert!(s.schedule(1, 50, false).iter().all(|p| p.spec.kind == FaultKind::KillNode));
    assert_eq!((s.default_faults(true), s.default_faults(false)), (2, 1), "one per usable entry");
    let only_partition = TWO.replace("weight = 3", "weight = 0");
    let s = Scenario::parse(&only_partition).expect("parses");
    assert!(s.schedule(1, 5, false).is_empty());
}

#[test]
fn each_once_cycles_through_the_faults_in_file_order() {
    let s = Scenario::parse(&TWO.replace("order = \"weighted\"", "")).expect("parses");
    let kinds: Vec<FaultKind> = s.schedule(1, 3, true).iter().map(|p| p.spec.kind).collect();
    assert_eq!(kinds, [FaultKind::KillNode, FaultKind::Partition, FaultKind::KillNode]);
}

#[test]
fn bad_scenarios_say_what_to_fix() {
    let err = |t: &str| Scenario::parse(t).expect_err("refused");
    assert!(err("[run]\nfaults = 1\n").contains("fault"));
    assert!(err("[[fault]]\nkind = \"explode\"\n").contains("unknown variant"));
    assert!(err("[run]\npause = \"soon\"\n[[fault]]\nkind = \"kill-node\"\n").contains("run.pause"));
    assert!(err("[run]\nmembers = 2\n[[fault]]\nkind = \"kill-node\"\n").contains("3 to 9"));
    assert!(
        err("[[fault]]\nkind = \"old-primary-returns\"\ntarget = \"replica\"\n").contains("remove `target`")
    );
    assert!(err("[[fault]]\nkind = \"kill-node\"\nweight = 0\n").contains("weight above 0"));
    assert!(err("[[fault]]\nkind = \"kill-node\"\ncolour = 1\n").contains("colour"));
}
