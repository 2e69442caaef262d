//! Choosing the next server group sequence.

use crate::model::{Sequence, ServerGroup};

/// The sequence after the newest in use, wrapping after 999 and skipping sequences in use.
///
/// Sequences wrap, so "newest" is the one before the largest gap going round the circle:
/// with `{998, 999, 000}` live, the newest is `000` and the next is `001`.
pub fn next_sequence(in_use: &[Sequence]) -> Sequence {
    let mut seqs: Vec<u16> = in_use.iter().map(|s| s.get()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let Some(&last) = seqs.last() else {
        return Sequence::FIRST;
    };
    let modulus = u32::from(Sequence::MAX) + 1;
    let mut newest = last;
    let mut widest = 0u32;
    for (i, &s) in seqs.iter().enumerate() {
        let next = seqs
            .get(i + 1)
            .copied()
            .map_or(u32::from(seqs[0]) + modulus, u32::from);
        let gap = next - u32::from(s);
        if gap > widest {
            widest = gap;
            newest = s;
        }
    }
    let mut candidate = Sequence::new(u32::from(newest))
        .unwrap_or(Sequence::FIRST)
        .next();
    for _ in 0..modulus {
        if !seqs.contains(&candidate.get()) {
            return candidate;
        }
        candidate = candidate.next();
    }
    candidate
}

/// The newest group of a cluster by the circle rule of [`next_sequence`].
pub fn newest_sequence(groups: &[ServerGroup]) -> Option<Sequence> {
    if groups.is_empty() {
        return None;
    }
    let seqs: Vec<Sequence> = groups.iter().map(|g| g.sequence).collect();
    let next = next_sequence(&seqs);
    // The newest is the last one in use before `next`, going backwards.
    let mut s = next;
    for _ in 0..=Sequence::MAX {
        s = Sequence::new(
            u32::from(s.get())
                .checked_sub(1)
                .unwrap_or(u32::from(Sequence::MAX)),
        )
        .unwrap_or(Sequence::FIRST);
        if seqs.contains(&s) {
            return Some(s);
        }
    }
    None
}

/// Orders groups newest first, going back round the sequence circle from `newest`.
pub fn newest_first<'a>(
    groups: impl Iterator<Item = &'a ServerGroup>,
    newest: Sequence,
) -> Vec<&'a ServerGroup> {
    let mut v: Vec<&ServerGroup> = groups.collect();
    let modulus = i32::from(Sequence::MAX) + 1;
    v.sort_by_key(|g| (i32::from(newest.get()) - i32::from(g.sequence.get())).rem_euclid(modulus));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u16]) -> Vec<Sequence> {
        v.iter()
            .map(|&n| Sequence::new(u32::from(n)).unwrap())
            .collect()
    }

    #[test]
    fn picks_after_newest_and_wraps() {
        assert_eq!(next_sequence(&[]).get(), 0);
        assert_eq!(next_sequence(&s(&[0])).get(), 1);
        assert_eq!(next_sequence(&s(&[3, 7])).get(), 8);
        assert_eq!(next_sequence(&s(&[999])).get(), 0);
        assert_eq!(next_sequence(&s(&[998, 999, 0])).get(), 1);
        assert_eq!(next_sequence(&s(&[999, 0, 1])).get(), 2);
    }

    #[test]
    fn skips_sequences_in_use() {
        // 0..=998 and 999 all but one in use: the only free one is found.
        let mut all: Vec<u16> = (0..=999).collect();
        all.retain(|&n| n != 500);
        assert_eq!(next_sequence(&s(&all)).get(), 500);
    }
}
