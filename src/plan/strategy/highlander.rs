//! Highlander: a red/black after which no other group survives. The older groups are destroyed
//! by the cleanup that follows every rollout (highlander keeps none disabled), only once the new
//! group is enabled and healthy.

use super::Position;
use crate::plan::walk::Walk;

/// The stages of a highlander: those of a red/black.
pub(super) fn steps(w: &mut Walk, p: &Position) {
    super::red_black::steps(w, p);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{desired, group, live, position, text};
    use super::super::roll_out;
    use crate::spec::Strategy;

    #[test]
    fn rolls_out_as_red_black_and_keeps_nothing_disabled() {
        let d = desired("2.0.0", 2, Strategy::Highlander {});
        assert_eq!(d.strategy.keep_disabled(), 0);
        let l = live(&d, vec![group(0, "1.0.0", 2, 2, 100)]);
        assert_eq!(
            text(&roll_out(&position(&d, &l)).todo),
            [
                "create web-v001 (2.0.0, 2 instances, disabled)",
                "wait until 2 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }
}
