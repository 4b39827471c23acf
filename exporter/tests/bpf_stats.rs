//! The kernel's run-time statistics for the flow programs, read back for a
//! real probe (`flowmap_exporter::bpf_stats`). Needs root.
//!
//! The tests here run one at a time (`SERIAL`): which programs belong to
//! "this process" is decided by the descriptors the process holds, and one
//! test loads two probes on purpose.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use flowmap_exporter::abi;
use flowmap_exporter::bpf_stats::{process_program_stats, program_stats, BpfStats, BpfStatsError, ProgramStats};

static SERIAL: Mutex<()> = Mutex::new(());

fn by_name<'a>(stats: &'a [ProgramStats], name: &str) -> &'a ProgramStats {
    let found: Vec<_> = stats.iter().filter(|p| p.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` program expected: {stats:#?}");
    found[0]
}

/// Every loopback connection is two sockets, and each goes through at least
/// three state changes the tracepoint reports: the client CLOSE->SYN_SENT,
/// SYN_SENT->ESTABLISHED, ...->CLOSE; the accepted child ->SYN_RECV,
/// SYN_RECV->ESTABLISHED, ...->CLOSE. `flow_state` runs on each (and on every
/// other TCP state change of the host, which only adds).
const MIN_STATE_CHANGES_PER_CONNECTION: u64 = 6;

#[test]
fn flow_state_runs_are_counted_and_timed() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut probe = common::probe();
    let _on = match BpfStats::enable() {
        Ok(g) => g,
        Err(e) => panic!("enabling BPF statistics (needs root): {e}"),
    };
    let before = match program_stats(&probe) {
        Ok(s) => s,
        Err(e) => panic!("reading program statistics: {e}"),
    };
    assert_eq!(before.len(), 2, "flow_state and flow_refresh: {before:#?}");

    const CONNECTIONS: u64 = 50;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let server: SocketAddr = listener.local_addr().expect("listener address");
    for _ in 0..CONNECTIONS {
        let client = TcpStream::connect(server).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        drop(client);
        drop(accepted);
    }
    // Wait until both sides of every connection have closed (each close is
    // one event), so every state change has run.
    let events = common::collect(
        &mut probe,
        Duration::from_secs(10),
        |e| e.local == server || e.remote == server,
        |got| got.len() as u64 >= 2 * CONNECTIONS,
    );
    assert_eq!(events.len() as u64, 2 * CONNECTIONS);

    const REFRESHES: u64 = 3;
    for _ in 0..REFRESHES {
        probe.open_flows.refresh().expect("refresh");
    }

    let after = program_stats(&probe).expect("reading program statistics again");
    let state = by_name(&after, abi::FLOW_STATE_PROG).since(by_name(&before, abi::FLOW_STATE_PROG));
    assert!(
        state.run_count >= MIN_STATE_CHANGES_PER_CONNECTION * CONNECTIONS,
        "flow_state ran {} times for {CONNECTIONS} connections",
        state.run_count
    );
    assert!(state.run_time_ns > 0, "{state:?}");
    let ns = state.ns_per_run().expect("it ran");
    // Generous bounds: a run is a few hundred ns; a whole millisecond would
    // mean the statistics are not what we think they are.
    assert!(ns > 1.0 && ns < 1_000_000.0, "{ns} ns per run");

    let refresh = by_name(&after, abi::FLOW_REFRESH_PROG).since(by_name(&before, abi::FLOW_REFRESH_PROG));
    assert_eq!(refresh.run_count, REFRESHES, "BPF_PROG_TEST_RUN runs are counted too");
    assert!(refresh.run_time_ns > 0, "{refresh:?}");

    // The same programs, read from "outside" by process id.
    let by_pid = process_program_stats(std::process::id()).expect("by pid");
    let ids = |s: &[ProgramStats]| s.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&by_pid), ids(&after));
}

#[test]
fn a_process_without_the_probe_is_not_found() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = match std::process::Command::new("sleep").arg("10").spawn() {
        Ok(c) => c,
        Err(e) => {
            println!("SKIPPED: cannot run `sleep`: {e}");
            return;
        }
    };
    let res = process_program_stats(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(res, Err(BpfStatsError::NotFound { pid }) if pid == child.id()), "{res:?}");
    let gone = process_program_stats(u32::MAX);
    assert!(matches!(gone, Err(BpfStatsError::Proc { .. })), "{gone:?}");
}

#[test]
fn two_probes_in_one_process_are_ambiguous() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let first = common::probe();
    let second = common::probe();
    let res = program_stats(&first);
    assert!(matches!(res, Err(BpfStatsError::Ambiguous { count: 2, .. })), "{res:?}");
    drop(second);
    let res = program_stats(&first);
    assert!(res.is_ok(), "{res:?}");
}
