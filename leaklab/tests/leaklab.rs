//! One test per pitfall: the shared leak detector calls the leaky variant `Leaking`
//! and the fixed one `Healthy`, and the fixed one passes every check. No timing is
//! asserted. The pool pitfalls (3 and 5) need the Postgres at `LEAKLAB_DATABASE_URL`
//! (default: the local one, database `leaklab`).

use shop_leaklab::{LabConfig, Pitfall, Variant, VariantReport, report};

fn run(pitfall: Pitfall) -> (VariantReport, VariantReport) {
    let mut config = LabConfig::default();
    if let Ok(url) = std::env::var("LEAKLAB_DATABASE_URL") {
        config.database_url = url;
    }
    let reports = shop_leaklab::run_pitfall(pitfall, &config).expect("the pitfall runs");
    let table = report::table(&reports);
    let [leaky, fixed]: [VariantReport; 2] = reports.try_into().expect("two variants");
    assert_eq!(leaky.variant, Variant::Leaky);
    assert_eq!(fixed.variant, Variant::Fixed);
    assert!(
        leaky.verdict.is_leaking(),
        "leaky variant not detected:\n{table}"
    );
    assert!(fixed.as_expected(), "fixed variant not healthy:\n{table}");
    (leaky, fixed)
}

#[test]
fn pitfall_1_a_detached_loop_is_detected_and_a_supervised_job_is_not() {
    run(Pitfall::DetachedLoop);
}

#[test]
fn pitfall_2_spawning_per_request_is_detected_and_work_inside_the_request_or_a_bounded_queue_is_not()
 {
    run(Pitfall::SpawnPerRequest);
}

#[test]
fn pitfall_3_a_dropped_deadline_is_detected_and_leaves_half_written_rows_and_a_carried_deadline_leaves_none()
 {
    let (leaky, fixed) = run(Pitfall::DroppedDeadline);
    // The damage the leak does, beside the growing count: rows a reader must never see.
    assert!(
        leaky.checks.iter().any(|check| !check.healthy),
        "{:?}",
        leaky.checks
    );
    assert!(
        fixed.checks.iter().all(|check| check.healthy),
        "{:?}",
        fixed.checks
    );
}

#[test]
fn pitfall_4_a_task_per_tick_is_detected_and_one_periodic_job_is_not() {
    run(Pitfall::TimerPerTick);
}

#[test]
fn pitfall_5_unbounded_waiting_on_an_exhausted_pool_is_detected_and_acquire_timeout_with_load_shedding_is_not()
 {
    run(Pitfall::UnboundedWaiting);
}
