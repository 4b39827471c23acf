//! Lanes: the job's numbering of its input partitions, and their split between workers.
//!
//! Lane ids are assigned in a fixed order (topics in the order given, partitions ascending) and
//! lane `k` is read by worker `k % peers`. A live run and a replay of its capture therefore
//! give the same lanes to the same workers, which is half of what makes them agree; the other
//! half is that the source decides lateness per lane (see `crate::source`).

/// One input partition and its lane id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LaneId {
    /// Lane id, unique within the job.
    pub lane: u32,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

/// Numbers the partitions of `topics` (name, partition count) in order.
pub fn number_lanes(topics: &[(String, i32)]) -> Vec<LaneId> {
    let mut lanes = Vec::new();
    for (topic, partitions) in topics {
        for partition in 0..*partitions {
            lanes.push(LaneId { lane: lanes.len() as u32, topic: topic.clone(), partition });
        }
    }
    lanes
}

/// The lanes worker `index` of `peers` reads.
pub fn lanes_of(lanes: &[LaneId], index: usize, peers: usize) -> Vec<LaneId> {
    lanes.iter().filter(|l| l.lane as usize % peers.max(1) == index).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_has_exactly_one_worker() {
        let lanes = number_lanes(&[("flows".into(), 5), ("ip-events".into(), 2)]);
        assert_eq!(lanes.len(), 7);
        assert_eq!(lanes[5], LaneId { lane: 5, topic: "ip-events".into(), partition: 0 });
        for peers in 1..=4 {
            let mut all: Vec<u32> = (0..peers).flat_map(|i| lanes_of(&lanes, i, peers)).map(|l| l.lane).collect();
            all.sort_unstable();
            assert_eq!(all, (0..7).collect::<Vec<u32>>(), "{peers} workers");
        }
        assert!(lanes_of(&lanes, 0, 0).len() == 7, "0 peers is treated as 1");
    }
}
