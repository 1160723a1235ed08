//! `pgquorumctl history`: every grant of the primary role, oldest first.

use pgquorum_proto::management::HistoryRequest;

use crate::{Failure, Output, client, table, time};

/// Runs `history`.
pub async fn run(endpoint: &str, output: Output) -> Result<(), Failure> {
    let mut c = client::connect(endpoint).await?;
    let r = c.history(HistoryRequest {}).await.map_err(client::failure)?.into_inner();
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = r
                .entries
                .iter()
                .map(|h| {
                    serde_json::json!({
                        "epoch": h.epoch, "primary": h.member,
                        "previous": (!h.previous.is_empty()).then_some(&h.previous),
                        "reason": h.reason, "at": time::utc(h.at_ms),
                        "lsn": (!h.lsn.is_empty()).then_some(&h.lsn),
                        "timeline": (h.timeline != 0).then_some(h.timeline),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows).expect("serialisable"));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = r
                .entries
                .iter()
                .map(|h| {
                    let dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
                    vec![
                        h.epoch.to_string(),
                        h.member.clone(),
                        dash(&h.previous),
                        h.reason.clone(),
                        time::utc(h.at_ms),
                        dash(&h.lsn),
                        if h.timeline == 0 { "-".into() } else { h.timeline.to_string() },
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["Epoch", "Primary", "Previous", "Reason", "At", "LSN", "TL"], &rows)
            );
        }
    }
    Ok(())
}
