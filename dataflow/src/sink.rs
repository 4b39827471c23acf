//! Delivering output somewhere that acknowledges it, and knowing when it has.
//!
//! The job commits its input only after everything derived from it is delivered, so the
//! output stage must report delivery in the dataflow's own terms: the [`deliver`] operator hands
//! each batch of attributed flows to a [`FlowSink`] and holds a capability for the batch's time
//! until the sink says every record of that time (and earlier) is acknowledged. A probe on its
//! (empty) output stream is then the *delivered frontier*: every output at a time before it,
//! on every worker, is safely stored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use flowmap_operators::{AttributedFlow, Time};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// Somewhere attributed flows go.
pub trait FlowSink: 'static {
    /// Takes the flows of one time.
    fn write(&mut self, time: Time, flows: &[AttributedFlow]) -> Result<(), String>;

    /// The earliest time with records written but not yet acknowledged (`None`: all are).
    /// An error if a delivery failed for good.
    fn undelivered(&mut self) -> Result<Option<Time>, String>;

    /// Waits until everything written is acknowledged.
    fn finish(&mut self) -> Result<(), String>;
}

/// A sink shared between the operator and the runner.
pub type SharedSink = Rc<RefCell<dyn FlowSink>>;

/// Hands `flows` to `sink`; the returned (empty) stream's frontier is the delivered frontier.
/// A sink error is stored in `error` and stops delivery (the runner then stops the job).
pub fn deliver<'scope>(
    flows: Stream<'scope, Time, Vec<AttributedFlow>>,
    sink: SharedSink,
    error: Rc<RefCell<Option<String>>>,
) -> Stream<'scope, Time, Vec<()>> {
    let scope = flows.scope();
    flows.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "Deliver",
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut held: BTreeMap<Time, Capability<Time>> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                let mut sink = sink.borrow_mut();
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(port) else { return };
                    let time = *cap.time();
                    for batch in data {
                        if let Err(e) = sink.write(time, batch) {
                            error.borrow_mut().get_or_insert(e);
                        }
                    }
                    held.entry(time).or_insert(cap);
                });
                let undelivered = match sink.undelivered() {
                    Ok(u) => u,
                    Err(e) => {
                        error.borrow_mut().get_or_insert(e);
                        return;
                    }
                };
                // Release every held time that is complete (the input has moved past it) and
                // fully acknowledged (no undelivered record at or before it).
                while let Some((&time, _)) = held.first_key_value() {
                    let complete = !frontier.less_equal(&time);
                    let acked = undelivered.is_none_or(|u| u > time);
                    if !(complete && acked) {
                        break;
                    }
                    held.pop_first();
                }
                if !held.is_empty() {
                    activator.activate_after(Duration::from_millis(5));
                }
            }
        },
    )
}
