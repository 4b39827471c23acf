//! Workload names of one worker's ownership index, in one growing byte buffer.
//!
//! Why not interned, reference-counted strings: every claim would then cost a pointer and a
//! table entry besides its name, and every lookup that copies a verdict would touch two
//! reference counts. Here a name costs its bytes plus a one- or two-byte length, a claim refers
//! to it by a 32-bit offset, and a name is written once per claim (claims grow in place, so a
//! stable owner writes its name once per run of evidence, not per heartbeat). Names of removed
//! records become garbage; [`Arena::compact`] rewrites the live ones when garbage reaches half
//! of them, which keeps the buffer within 1.5 times the live bytes (1.25 on average), at the
//! cost of a rewrite each time it grows by half (measured: about 2% of the core-lookup
//! benchmark's time).

/// The most bytes a name may have (longer names are refused where evidence is decoded).
pub const MAX_NAME: usize = 16_383;

/// Length-prefixed names (a 7-bit varint of one or two bytes, then the bytes).
#[derive(Debug, Default)]
pub struct Arena {
    bytes: Vec<u8>,
    /// Bytes of names not released yet.
    live: usize,
}

impl Arena {
    /// Appends a name (truncated to [`MAX_NAME`] bytes at a character boundary, which decoding
    /// never lets happen) and returns its offset.
    pub fn push(&mut self, name: &str) -> u32 {
        let mut end = name.len().min(MAX_NAME);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let name = &name[..end];
        let off = self.bytes.len() as u32;
        let len = name.len();
        if len < 0x80 {
            self.bytes.push(len as u8);
        } else {
            self.bytes.push(0x80 | (len & 0x7f) as u8);
            self.bytes.push((len >> 7) as u8);
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.live += Self::footprint(len);
        off
    }

    fn footprint(len: usize) -> usize {
        len + if len < 0x80 { 1 } else { 2 }
    }

    fn span(&self, off: u32) -> (usize, usize) {
        let off = off as usize;
        let Some(&first) = self.bytes.get(off) else { return (0, 0) };
        if first < 0x80 {
            (off + 1, first as usize)
        } else {
            let second = self.bytes.get(off + 1).copied().unwrap_or(0) as usize;
            (off + 2, (first & 0x7f) as usize | (second << 7))
        }
    }

    /// The name at `off` ("" for an offset this arena did not hand out).
    pub fn get(&self, off: u32) -> &str {
        let (from, len) = self.span(off);
        self.bytes.get(from..from + len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }

    /// Whether the name at `off` is `name`.
    pub fn is(&self, off: u32, name: &str) -> bool {
        let (from, len) = self.span(off);
        len == name.len() && self.bytes.get(from..from + len) == Some(name.as_bytes())
    }

    /// Marks the name at `off` as no longer referenced.
    pub fn release(&mut self, off: u32) {
        let (_, len) = self.span(off);
        self.live = self.live.saturating_sub(Self::footprint(len));
    }

    /// Whether garbage is at least half the live bytes (and the buffer is worth compacting).
    pub fn wants_compaction(&self) -> bool {
        self.bytes.len() > 1 << 16 && 2 * self.bytes.len() > 3 * self.live
    }

    /// Rewrites the live names into a fresh buffer. `each_ref` must call its argument once for
    /// every live reference; the argument moves the name and updates the reference in place.
    pub fn compact(&mut self, each_ref: impl FnOnce(&mut dyn FnMut(&mut u32))) {
        let old = std::mem::take(&mut self.bytes);
        let live = std::mem::take(&mut self.live);
        let old_arena = Arena { bytes: old, live };
        self.bytes.reserve(live);
        let mut moved = |r: &mut u32| {
            let name = old_arena.get(*r);
            *r = self.push(name);
        };
        each_ref(&mut moved);
        self.bytes.shrink_to(self.bytes.len() * 2);
    }

    /// Heap bytes held (capacity).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Bytes of live names.
    pub fn live_bytes(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_short_and_long() {
        let mut a = Arena::default();
        let long = "x".repeat(300);
        let (p, q, r) = (a.push("web"), a.push(&long), a.push(""));
        assert_eq!((a.get(p), a.get(q), a.get(r)), ("web", long.as_str(), ""));
        assert!(a.is(p, "web") && !a.is(p, "we") && !a.is(p, "webs"));
        assert_eq!(a.live_bytes(), 4 + 302 + 1);
        assert_eq!(a.get(10_000), "", "an unknown offset reads empty, never panics");
    }

    #[test]
    fn compaction_keeps_live_names_only() {
        let mut a = Arena::default();
        let mut refs: Vec<u32> = (0..20_000).map(|i| a.push(&format!("w{i}"))).collect();
        for r in &refs[..15_000] {
            a.release(*r);
        }
        refs.drain(..15_000);
        assert!(a.wants_compaction());
        let before = a.heap_bytes();
        a.compact(|f| refs.iter_mut().for_each(f));
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(a.get(*r), format!("w{}", 15_000 + i));
        }
        assert!(a.heap_bytes() < before / 2, "{} vs {before}", a.heap_bytes());
        assert_eq!(a.live_bytes(), 5_000 * 7, "w15000..w19999: 6 bytes and a length each");
        assert!(!a.wants_compaction());
    }
}
