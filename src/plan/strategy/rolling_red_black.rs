//! Rolling red/black: the new group grows in steps (percent of capacity) and takes the same
//! share of traffic at each step, each step waited on; then it takes all traffic and the old
//! groups leave.

use super::{Position, create, disable_olds, enable_new, healthy, hold, shift, verify};
use crate::plan::walk::{self, Walk};
use crate::spec::{Duration, Percent};

/// Instances of the new group at `percent` of `desired` (at least one).
fn size_at(desired: u32, percent: u8) -> u32 {
    (desired * u32::from(percent))
        .div_ceil(100)
        .max(1)
        .min(desired.max(1))
}

/// The stages of a rolling red/black.
pub(super) fn steps(w: &mut Walk, p: &Position, percents: &[Percent], pause: Option<Duration>) {
    let desired = p.desired.capacity.desired;
    if p.olds.is_empty() {
        return super::red_black::steps(w, p);
    }
    let mut pcts: Vec<u8> = percents.iter().map(|p| p.0).collect();
    if pcts.last() != Some(&100) {
        pcts.push(100);
    }
    let observed = p.new.map_or(0, |g| g.capacity);
    for (i, pct) in pcts.iter().enumerate() {
        let n = size_at(desired, *pct);
        if i == 0 {
            create(w, p, n, 0);
        } else {
            let (name, seq) = (p.name(), p.sequence);
            w.op(observed >= n, |sim| walk::resize(sim, &name, seq, n));
        }
        healthy(w, p, n);
        if *pct < 100 {
            shift(w, p, *pct);
            hold(w, p, *pct, pause);
        }
    }
    enable_new(w, p);
    disable_olds(w, p);
    verify(w, p);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{desired, group, live, position, text};
    use super::super::roll_out;
    use crate::spec::{Percent, Strategy};

    fn rrb() -> Strategy {
        Strategy::RollingRedBlack {
            steps: vec![Percent(25), Percent(50)],
            keep_disabled: 1,
            destroy_disabled_after: None,
            pause: None,
            analysis: None,
        }
    }

    #[test]
    fn fresh_grows_and_shifts_step_by_step() {
        let d = desired("2.0.0", 4, rrb());
        let l = live(&d, vec![group(0, "1.0.0", 4, 4, 100)]);
        assert_eq!(
            text(&roll_out(&position(&d, &l)).todo),
            [
                "create web-v001 (2.0.0, 1 instance, disabled)",
                "wait until 1 of web-v001 healthy (timeout 30s)",
                "shift traffic: web-v001 25%, web-v000 75%",
                "resize web-v001 1 -> 2",
                "wait until 2 of web-v001 healthy (timeout 30s)",
                "shift traffic: web-v001 50%, web-v000 50%",
                "resize web-v001 2 -> 4",
                "wait until 4 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }

    #[test]
    fn resumed_at_the_second_step_carries_on_from_its_size() {
        let d = desired("2.0.0", 4, rrb());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 4, 4, 50), group(1, "2.0.0", 2, 2, 50)],
        );
        let r = roll_out(&position(&d, &l));
        assert_eq!(r.done.len(), 4, "{:?}", r.done);
        assert_eq!(
            text(&r.todo),
            [
                "resize web-v001 2 -> 4",
                "wait until 4 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }
}
