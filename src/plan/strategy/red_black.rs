//! Red/black: the new group beside the old, out of traffic until all its instances are
//! healthy, then in traffic, then the old groups out (kept for a fast rollback).

use super::{Position, create, disable_olds, enable_new, healthy, verify};
use crate::plan::walk::Walk;

/// The stages of a red/black.
pub(super) fn steps(w: &mut Walk, p: &Position) {
    let n = p.desired.capacity.desired;
    create(w, p, n, 0);
    healthy(w, p, n);
    enable_new(w, p);
    disable_olds(w, p);
    verify(w, p);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{desired, group, live, position, text};
    use super::super::roll_out;
    use crate::spec::Strategy;

    fn red_black() -> Strategy {
        Strategy::RedBlack {
            keep_disabled: 1,
            destroy_disabled_after: None,
        }
    }

    #[test]
    fn fresh_creates_waits_enables_then_disables_the_old_group() {
        let d = desired("2.0.0", 3, red_black());
        let l = live(&d, vec![group(0, "1.0.0", 3, 3, 100)]);
        let r = roll_out(&position(&d, &l));
        assert!(r.done.is_empty());
        assert_eq!(
            text(&r.todo),
            [
                "create web-v001 (2.0.0, 3 instances, disabled)",
                "wait until 3 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }

    #[test]
    fn resumed_after_the_enable_only_disables_the_old_group() {
        let d = desired("2.0.0", 3, red_black());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 3, 3, 100), group(1, "2.0.0", 3, 3, 100)],
        );
        let r = roll_out(&position(&d, &l));
        assert_eq!(r.done.len(), 2, "create and enable are done: {:?}", r.done);
        assert_eq!(text(&r.todo), ["disable web-v000"]);
    }

    #[test]
    fn resumed_before_the_enable_waits_for_health_first() {
        let d = desired("2.0.0", 3, red_black());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 3, 3, 100), group(1, "2.0.0", 3, 1, 0)],
        );
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            [
                "wait until 3 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }

    #[test]
    fn converged_has_nothing_left() {
        let d = desired("2.0.0", 3, red_black());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 3, 3, 0), group(1, "2.0.0", 3, 3, 100)],
        );
        assert!(roll_out(&position(&d, &l)).todo.is_empty());
    }
}
