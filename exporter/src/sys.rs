//! The two system calls aya 0.13 does not wrap, kept in one place because
//! they are `unsafe`.
//!
//! - `bpf(BPF_PROG_TEST_RUN)`: runs the never-attached `flow_refresh` program
//!   on demand (see [`crate::open`]).
//! - `clock_gettime(CLOCK_TAI / CLOCK_REALTIME)`: the kernel stamps flows with
//!   `bpf_ktime_get_tai_ns`; userspace needs the TAI-UTC offset (see
//!   [`crate::clock`]). `std` exposes neither clock id.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// `BPF_PROG_TEST_RUN` from `enum bpf_cmd`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// Run a loaded program once with an empty context (`BPF_PROG_TEST_RUN`);
/// returns the program's return value.
pub(crate) fn prog_test_run(prog: impl AsFd) -> io::Result<u32> {
    let fd = prog.as_fd().as_raw_fd();
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid, zero-initialised `bpf_attr.test` that lives
    // across the call, and the size passed is its size; it names no user
    // buffers (data/ctx pointers are 0), so the kernel writes only into
    // `attr` itself (retval/duration). `fd` is borrowed from a live program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::from_mut(&mut attr),
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.retval)
}

/// `clock_gettime(clock)` in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> io::Result<i128> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

/// Current `CLOCK_TAI - CLOCK_REALTIME`, in nanoseconds: 37 s on a host whose
/// NTP daemon told the kernel the TAI offset, 0 where nothing did.
///
/// The kernel defines `CLOCK_TAI` as `CLOCK_REALTIME` plus an offset in whole
/// seconds, so the difference of two back-to-back reads is rounded to the
/// nearest second: exact, whatever the delay between the two reads.
pub(crate) fn tai_minus_realtime_ns() -> io::Result<i64> {
    let real = clock_ns(libc::CLOCK_REALTIME)?;
    let tai = clock_ns(libc::CLOCK_TAI)?;
    let secs = (tai - real + 500_000_000).div_euclid(1_000_000_000);
    i64::try_from(secs * 1_000_000_000).map_err(|_| io::Error::other("TAI-UTC offset out of range"))
}

/// Wait until `fd` is readable or `timeout` passes; `Ok(true)` if readable.
/// EINTR counts as "not readable yet" so the caller's loop can check for
/// shutdown.
pub(crate) fn poll_readable(fd: std::os::fd::RawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid pollfd that lives across the call and the
    // count passed is 1; `fd` is owned by the caller for the duration.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
}
