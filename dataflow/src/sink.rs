//! Delivering output somewhere that acknowledges it, and knowing when it has.
//!
//! The job commits its input only after everything derived from it is delivered, so the
//! output stage must report delivery in the dataflow's own terms: the [`deliver`] operator hands
//! each output item (a piece of verdicts, an edge, an event) to a [`Sink`] and holds a capability
//! for the item's time until the sink says every record of that time (and earlier) is
//! acknowledged. A probe on the (empty) output streams of every `deliver` is then the *delivered
//! frontier*: every output at a time before it, of every kind, on every worker, is safely stored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use flowmap_operators::records::VerdictPiece;
use flowmap_operators::Time;
use flowmap_schema as wire;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// Why output could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The sink could not start (a broker away, a bad setting).
    #[error("output could not start: {0}")]
    Start(String),
    /// A record could not be handed to the transport (its queue is full for longer than the
    /// policy waits, a record too large, ...).
    #[error("output to '{topic}': {detail}")]
    Send {
        /// Where it was going.
        topic: String,
        /// The transport's error.
        detail: String,
    },
    /// Records were handed over but never acknowledged (after the transport's retries): the job
    /// stops without committing past them; a restart produces them again.
    #[error("{failed} output records to '{topic}' could not be delivered: {detail}")]
    Delivery {
        /// Records that failed.
        failed: u64,
        /// Where they were going.
        topic: String,
        /// The transport's last error.
        detail: String,
    },
}

/// Somewhere output items of type `T` go.
pub trait Sink<T>: 'static {
    /// Takes one item, at dataflow time `time`.
    ///
    /// # Errors
    /// A record that could not be handed to the transport.
    fn write(&mut self, time: Time, item: &T) -> Result<(), SinkError>;

    /// The earliest time with records written but not yet acknowledged (`None`: all are).
    ///
    /// # Errors
    /// A delivery that failed for good.
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError>;

    /// Waits until everything written is acknowledged.
    ///
    /// # Errors
    /// A delivery that failed for good.
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// Where flow records go (Kafka's output topic, the lake's flows table).
pub type FlowSink = dyn Sink<VerdictPiece>;
/// Where edges go.
pub type EdgeSink = dyn Sink<wire::Edge>;
/// Where events go.
pub type EventSink = dyn Sink<wire::Event>;

/// A sink shared between the operator and the runner.
pub type SharedSink<T> = Rc<RefCell<dyn Sink<T>>>;

/// Writes to every sink of a list: delivered when all of them are (a job writing flows to Kafka
/// and to the lake, for example).
pub struct Tee<T>(pub Vec<Box<dyn Sink<T>>>);

impl<T: 'static> Sink<T> for Tee<T> {
    fn write(&mut self, time: Time, item: &T) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.write(time, item))
    }
    fn undelivered(&mut self) -> Result<Option<Time>, SinkError> {
        let mut least: Option<Time> = None;
        for s in &mut self.0 {
            if let Some(t) = s.undelivered()? {
                least = Some(least.map_or(t, |l| l.min(t)));
            }
        }
        Ok(least)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

/// Hands `items` to `sink`; the returned (empty) stream's frontier is the delivered frontier.
/// A sink error is stored in `error` and stops delivery (the runner then stops the job).
pub fn deliver<'scope, T: Clone + 'static>(
    items: Stream<'scope, Time, Vec<T>>,
    sink: SharedSink<T>,
    error: Rc<RefCell<Option<SinkError>>>,
) -> Stream<'scope, Time, Vec<()>> {
    let scope = items.scope();
    items.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
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
                        for item in batch.iter() {
                            if let Err(e) = sink.write(time, item) {
                                error.borrow_mut().get_or_insert(e);
                            }
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
