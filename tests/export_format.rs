use std::time::Duration;

use arbiter_events::*;

#[test]
fn smoke() -> Result<(), Box<dyn std::error::Error>> {
    let collector = Collector::builder()
        .key(AnonymizationKey::from_bytes([7; 32]))
        .clock(ManualClock::new(1_700_000_000_000_000_000))
        .build()?;
    collector.record(Event::RoutingDecision(RoutingDecision {
        task_id: "task-1".into(),
        selected_agent: "agent-a".into(),
        strategy: RoutingStrategy::LoadBalance,
        confidence: 0.5,
        alternatives: vec![Alternative {
            agent_id: "agent-b".into(),
            score: 0.4,
            reason: "slow".into(),
        }],
        rationale: "why".into(),
    }))?;
    let run = collector.start_task("task-1", "agent-a", Attributes::new().with("k", 1))?;
    drop(run);
    collector.flush(Duration::from_secs(5))?;
    let export = collector.export(&ExportRequest::after(Cursor::START))?;
    assert_eq!(export.len(), 3);
    let file = read_export(export.to_msgpack().as_slice())?;
    assert_eq!(file.records.len(), 3);
    println!("{}", serde_json::to_string(&file.records)?);
    let stats = collector.stats();
    println!("{}", serde_json::to_string_pretty(&stats)?);
    assert_eq!(stats.stored, 3);
    Ok(())
}
