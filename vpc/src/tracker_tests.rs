use super::*;

fn limits() -> Limits {
    Limits {
        max_bytes: 100,
        max_files: 3,
        max_wait: Duration::from_secs(5),
        visibility: Duration::from_secs(60),
        extend_before: Duration::from_secs(10),
    }
}

fn file(key: &str, size: u64) -> FileRef {
    FileRef { bucket: "b".into(), key: key.into(), size, etag: Some(format!("e-{key}")) }
}

fn msg(id: &str) -> MessageRef {
    MessageRef { id: id.into(), receipt: format!("r-{id}") }
}

fn keys(plan: &MouthfulPlan) -> Vec<String> {
    plan.items
        .iter()
        .map(|i| match i {
            Item::File(f) => f.key.clone(),
            Item::BadMessage { message_id, .. } => format!("bad:{message_id}"),
        })
        .collect()
}

fn ids(r: &[MessageRef]) -> Vec<&str> {
    let mut v: Vec<&str> = r.iter().map(|m| m.id.as_str()).collect();
    v.sort_unstable();
    v
}

#[test]
fn messages_are_deleted_only_after_their_mouthful_is_delivered() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m1"), vec![Item::File(file("a", 10)), Item::File(file("b", 10))], t0);
    t.receive(msg("m2"), vec![Item::File(file("c", 10)), Item::File(file("d", 10))], t0);
    assert_eq!(t.in_flight(), 2);
    // Full at 3 files.
    let first = t.next_mouthful(t0, false).unwrap();
    assert_eq!((first.id, keys(&first)), (0, vec!["a".to_string(), "b".into(), "c".into()]));
    // "d" alone is not due before max_wait.
    assert_eq!(t.next_mouthful(t0 + Duration::from_secs(4), false), None);
    let second = t.next_mouthful(t0 + Duration::from_secs(5), false).unwrap();
    assert_eq!((second.id, keys(&second)), (1, vec!["d".to_string()]));
    // Nothing is deletable before delivery.
    assert_eq!(t.delivered(0), Released::default());
    // Mouthful 0 delivered: m1 is done (a, b); m2 still waits for d.
    let r = t.delivered(1);
    assert_eq!(ids(&r.deletable), vec!["m1"]);
    assert_eq!(r.deletable[0].receipt, "r-m1");
    assert_eq!(r.files.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), vec!["a", "b", "c"]);
    t.forget("m1");
    let r = t.delivered(2);
    assert_eq!(ids(&r.deletable), vec!["m2"]);
    assert_eq!(r.files.len(), 1);
    t.forget("m2");
    assert!(t.is_idle());
    // Released once only.
    assert_eq!(t.delivered(2), Released::default());
}

#[test]
fn byte_bound_and_oversized_files() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m"), vec![Item::File(file("a", 60)), Item::File(file("b", 60)), Item::File(file("big", 500))], t0);
    assert_eq!(keys(&t.next_mouthful(t0, false).unwrap()), vec!["a"]);
    assert_eq!(keys(&t.next_mouthful(t0, false).unwrap()), vec!["b"]);
    assert_eq!(keys(&t.next_mouthful(t0, false).unwrap()), vec!["big"], "a file over max_bytes goes alone");
    assert_eq!(t.next_mouthful(t0, true), None);
    // Exactly max_bytes fills a mouthful.
    t.receive(msg("n"), vec![Item::File(file("c", 40)), Item::File(file("d", 60)), Item::File(file("e", 1))], t0);
    assert_eq!(keys(&t.next_mouthful(t0, false).unwrap()), vec!["c", "d"]);
    assert_eq!(t.next_mouthful(t0, false), None);
    assert_eq!(keys(&t.next_mouthful(t0, true).unwrap()), vec!["e"], "a flush takes a partial mouthful");
}

#[test]
fn empty_and_skipped_messages_are_deletable_at_once() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("test-event"), vec![], t0);
    assert_eq!(ids(&t.delivered(0).deletable), vec!["test-event"]);
}

#[test]
fn a_file_announced_twice_is_read_once_and_holds_both_messages() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m1"), vec![Item::File(file("a", 1))], t0);
    t.receive(msg("m2"), vec![Item::File(file("a", 1))], t0);
    let plan = t.next_mouthful(t0, true).unwrap();
    assert_eq!(keys(&plan), vec!["a"]);
    // A third announcement while it is in a mouthful joins that mouthful.
    t.receive(msg("m3"), vec![Item::File(file("a", 1))], t0);
    assert_eq!(t.next_mouthful(t0, true), None);
    assert_eq!(t.delivered(0), Released::default());
    let r = t.delivered(1);
    assert_eq!(ids(&r.deletable), vec!["m1", "m2", "m3"]);
    assert_eq!(r.files.len(), 1);
}

#[test]
fn a_message_received_again_keeps_one_entry_with_the_new_receipt() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    assert!(t.receive(msg("m"), vec![Item::File(file("a", 1))], t0));
    assert!(!t.receive(MessageRef { id: "m".into(), receipt: "newer".into() }, vec![Item::File(file("a", 1))], t0));
    assert_eq!(t.in_flight(), 1);
    t.next_mouthful(t0, true).unwrap();
    let r = t.delivered(1);
    assert_eq!(r.deletable, vec![MessageRef { id: "m".into(), receipt: "newer".into() }]);
}

#[test]
fn visibility_is_extended_before_it_ends() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m"), vec![Item::File(file("a", 1))], t0);
    assert!(t.due_extensions(t0 + Duration::from_secs(50)).is_empty(), "10 s left is not less than 10 s");
    let due = t.due_extensions(t0 + Duration::from_secs(51));
    assert_eq!(ids(&due), vec!["m"]);
    // Extended to 51 + 60: due again only after 101.
    assert!(t.due_extensions(t0 + Duration::from_secs(100)).is_empty());
    assert_eq!(t.due_extensions(t0 + Duration::from_secs(102)).len(), 1);
}

#[test]
fn a_failed_file_releases_its_messages_without_deleting_them() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m1"), vec![Item::File(file("a", 1)), Item::File(file("b", 1))], t0);
    t.receive(msg("m2"), vec![Item::File(file("c", 1))], t0);
    let plan = t.next_mouthful(t0, true).unwrap();
    assert_eq!(ids(&t.failed(plan.id, &file("b", 1))), vec!["m1"]);
    assert_eq!(t.in_flight(), 1);
    let r = t.delivered(1);
    assert_eq!(ids(&r.deletable), vec!["m2"], "m1 is not deleted");
    let mut done: Vec<&str> = r.files.iter().map(|f| f.key.as_str()).collect();
    done.sort_unstable();
    assert_eq!(done, vec!["a", "c"], "b is not recorded as processed");
}

/// Regression: a message released after a failure and received again must not be deleted on
/// the strength of its earlier receipt's mouthful.
#[test]
fn a_released_message_received_again_waits_for_its_new_mouthful() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.receive(msg("m1"), vec![Item::File(file("a", 1))], t0);
    t.receive(msg("m2"), vec![Item::File(file("b", 1))], t0);
    let first = t.next_mouthful(t0, true).unwrap();
    // m1 is complete in mouthful 0 (waiting for it); then b fails, releasing m2 only.
    assert_eq!(ids(&t.failed(first.id, &file("b", 1))), vec!["m2"]);
    // m2 comes back and is queued again.
    t.receive(msg("m2"), vec![Item::File(file("b", 1))], t0);
    let r = t.delivered(1);
    assert_eq!(ids(&r.deletable), vec!["m1"], "m2's new receipt waits for mouthful 1");
    let second = t.next_mouthful(t0, true).unwrap();
    assert_eq!(second.id, 1);
    assert_eq!(ids(&t.delivered(2).deletable), vec!["m2"]);
}

#[test]
fn bad_messages_travel_in_a_mouthful_and_are_deleted_after_it() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    let bad = Item::BadMessage { message_id: "x".into(), reason: "not json".into(), body: "{".into() };
    t.receive(msg("x"), vec![bad], t0);
    assert_eq!(t.delivered(0), Released::default());
    let plan = t.next_mouthful(t0 + Duration::from_secs(5), false).unwrap();
    assert_eq!(keys(&plan), vec!["bad:x"]);
    assert_eq!(ids(&t.delivered(1).deletable), vec!["x"]);
}

#[test]
fn backfill_files_have_no_messages() {
    let t0 = Instant::now();
    let mut t = Tracker::new(limits());
    t.add_file(file("a", 1), t0);
    t.add_file(file("a", 1), t0);
    assert_eq!(t.pending(), 1, "listed twice, read once");
    t.next_mouthful(t0, true).unwrap();
    let r = t.delivered(1);
    assert_eq!(r.files.len(), 1);
    assert!(r.deletable.is_empty());
    assert!(t.is_idle());
}
