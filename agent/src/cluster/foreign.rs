//! Refusing another cluster's data: an agent whose data directory holds Raft state initialised
//! by a different cluster (same cluster and member names, as every `local up` cluster is called
//! `local`) must not run on it. The cluster id recorded at initialisation is compared with what
//! the configured peers report; when more of them disagree than agree (this member counting as
//! agreeing with itself), the data is the foreign one and the agent exits 65 with the fix.
//!
//! Owns only this check; must not change membership or data.

use std::path::PathBuf;
use std::time::Duration;

use pgquorum_core::MemberName;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::bootstrap::hello_all;
use crate::ha::ForeignData;

/// What the peers' answers say about this member's data.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some peer shares this member's cluster id, or every peer answered without a majority
    /// against it: the data is this cluster's.
    Ours,
    /// More peers report another cluster id than agree with this member's.
    Foreign {
        /// The peers' cluster id.
        theirs: String,
        /// The peers that report it.
        peers: Vec<MemberName>,
    },
    /// Not enough answers yet.
    Undecided,
}

/// Judges `mine` against the cluster ids the peers answered (`None`: no answer, or not
/// initialised), out of `others` peers asked.
pub fn judge(mine: &str, answers: &[(MemberName, Option<String>)], others: usize) -> Verdict {
    let known: Vec<(&MemberName, &str)> = answers
        .iter()
        .filter_map(|(n, id)| id.as_deref().filter(|i| !i.is_empty()).map(|i| (n, i)))
        .collect();
    let agree = 1 + known.iter().filter(|(_, id)| *id == mine).count();
    let against: Vec<(&MemberName, &str)> = known.iter().copied().filter(|(_, id)| *id != mine).collect();
    if against.len() > agree {
        let theirs = against[0].1.to_string();
        let peers = against.iter().filter(|(_, id)| *id == theirs).map(|(n, _)| (*n).clone()).collect();
        return Verdict::Foreign { theirs, peers };
    }
    if agree > 1 || known.len() == others { Verdict::Ours } else { Verdict::Undecided }
}

/// Runs at start-up until the peers have settled whether this member's Raft data belongs to
/// their cluster; ends with `ForeignData` (exit 65) when it does not.
pub async fn refuse_foreign_data(
    cluster: Cluster,
    initial: Vec<(MemberName, String)>,
    data_dir: PathBuf,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Fresh data is filled from this cluster's leader: nothing foreign to find.
    if !cluster.node.raft.is_initialized().await? {
        return Ok(());
    }
    let others = initial.iter().filter(|(n, _)| *n != cluster.me.name).count();
    loop {
        let mine = cluster.node.ident.cluster_id();
        if !mine.is_empty() && others > 0 {
            let answers: Vec<(MemberName, Option<String>)> = hello_all(&cluster, &initial)
                .await
                .into_iter()
                .map(|(n, r)| (n, r.ok().filter(|r| r.initialized).map(|r| r.cluster_id)))
                .collect();
            match judge(&mine, &answers, others) {
                Verdict::Ours => return Ok(()),
                Verdict::Undecided => {}
                Verdict::Foreign { theirs, peers } => {
                    let names: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
                    return Err(ForeignData(format!(
                        "data directory {dir} belongs to another cluster: its Raft state was initialised as cluster \
                         id {mine}, but {peers} (the majority of the peers) belong to cluster id {theirs}, under the \
                         same name {name:?}. It was probably copied or restored from another cluster. Move {dir} \
                         aside (keep it until you are sure) and start this agent again with an empty data_dir: it \
                         joins this cluster as a new member and copies Postgres from its primary",
                        dir = data_dir.display(),
                        peers = names.join(", "),
                        name = &*cluster.node.ident.cluster_name,
                    ))
                    .into());
                }
            }
        } else if others == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(ids: &[(&str, Option<&str>)]) -> Vec<(MemberName, Option<String>)> {
        ids.iter().map(|(n, id)| (MemberName::new(*n).expect("name"), id.map(String::from))).collect()
    }

    #[test]
    fn data_is_foreign_only_when_more_peers_disagree_than_agree() {
        let both_other = answers(&[("m1", Some("B")), ("m2", Some("B"))]);
        assert_eq!(
            judge("A", &both_other, 2),
            Verdict::Foreign {
                theirs: "B".into(),
                peers: vec![MemberName::new("m1").expect("name"), MemberName::new("m2").expect("name")]
            }
        );
        // The legitimate member next to a foreign one: one agrees, one does not.
        assert_eq!(judge("B", &answers(&[("m2", Some("B")), ("m3", Some("A"))]), 2), Verdict::Ours);
        // Only the foreign member answered: one against one is no majority; wait for more.
        assert_eq!(judge("B", &answers(&[("m2", None), ("m3", Some("A"))]), 2), Verdict::Undecided);
        assert_eq!(judge("A", &answers(&[("m1", Some("A")), ("m2", None)]), 2), Verdict::Ours);
        assert_eq!(judge("A", &answers(&[("m1", None), ("m2", None)]), 2), Verdict::Undecided);
        // A two-member cluster cannot tell which side is foreign.
        assert_eq!(judge("A", &answers(&[("m2", Some("B"))]), 1), Verdict::Ours);
    }
}
