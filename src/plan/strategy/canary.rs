//! Canary: the new group takes a growing share of traffic in weighted steps, each held for its
//! pause, then all of it; the old groups then leave. With nothing in traffic to compare against,
//! it is a red/black.

use super::{Position, create, disable_olds, enable_new, healthy, hold, shift, verify};
use crate::plan::walk::Walk;
use crate::spec::CanaryStep;

/// The stages of a canary. Resumed, the pause of the step traffic is at is held again: how long
/// it had run is not observable.
pub(super) fn steps(w: &mut Walk, p: &Position, canary: &[CanaryStep]) {
    let n = p.desired.capacity.desired;
    create(w, p, n, 0);
    healthy(w, p, n);
    if !p.olds.is_empty() {
        for c in canary.iter().filter(|c| c.weight.0 < 100) {
            shift(w, p, c.weight.0);
            hold(w, p, c.weight.0, c.pause);
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
    use crate::actuation::rollback_of;
    use crate::spec::{CanaryStep, Duration, Percent, Strategy};

    fn canary() -> Strategy {
        Strategy::Canary {
            steps: vec![
                CanaryStep {
                    weight: Percent(10),
                    pause: Some(Duration::from_secs(30)),
                },
                CanaryStep {
                    weight: Percent(50),
                    pause: Some(Duration::from_secs(60)),
                },
            ],
            keep_disabled: 1,
            destroy_disabled_after: None,
            analysis: None,
        }
    }

    #[test]
    fn fresh_steps_through_the_weights_with_their_pauses() {
        let d = desired("2.0.0", 4, canary());
        let l = live(&d, vec![group(0, "1.0.0", 4, 4, 100)]);
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            [
                "create web-v001 (2.0.0, 4 instances, disabled)",
                "wait until 4 of web-v001 healthy (timeout 30s)",
                "shift traffic: web-v001 10%, web-v000 90%",
                "pause 30s",
                "shift traffic: web-v001 50%, web-v000 50%",
                "pause 1m",
                "enable web-v001",
                "disable web-v000",
            ]
        );
    }

    #[test]
    fn resumed_mid_way_holds_the_current_pause_again_and_rolls_back_from_the_start() {
        let d = desired("2.0.0", 4, canary());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 4, 4, 50), group(1, "2.0.0", 4, 4, 50)],
        );
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            ["pause 1m", "enable web-v001", "disable web-v000"]
        );
        // What ran before the resume is undone too.
        assert_eq!(
            text(&rollback_of(&r.done, Duration::from_secs(30))),
            [
                "shift traffic: web-v000 100%, web-v001 0%",
                "destroy web-v001"
            ]
        );
    }

    #[test]
    fn an_unhealthy_canary_is_waited_on_before_it_takes_more() {
        let d = desired("2.0.0", 4, canary());
        let l = live(
            &d,
            vec![group(0, "1.0.0", 4, 4, 90), group(1, "2.0.0", 4, 2, 10)],
        );
        assert_eq!(
            text(&roll_out(&position(&d, &l)).todo)[..3],
            [
                "wait until 4 of web-v001 healthy (timeout 30s)",
                "pause 30s",
                "shift traffic: web-v001 50%, web-v000 50%",
            ]
        );
    }

    #[test]
    fn without_a_group_in_traffic_it_is_a_red_black() {
        let d = desired("2.0.0", 2, canary());
        let l = live(&d, vec![group(0, "1.0.0", 2, 2, 0)]);
        assert_eq!(
            text(&roll_out(&position(&d, &l)).todo),
            [
                "create web-v001 (2.0.0, 2 instances, disabled)",
                "wait until 2 of web-v001 healthy (timeout 30s)",
                "enable web-v001",
            ]
        );
    }
}
