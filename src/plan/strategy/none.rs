//! None: apply directly. The new group goes into traffic as soon as it is healthy, beside the
//! old ones, which then leave.

use super::{Position, create, disable_olds, enable_new, healthy, verify};
use crate::plan::walk::Walk;

/// The stages of a direct rollout.
pub(super) fn steps(w: &mut Walk, p: &Position) {
    let n = p.desired.capacity.desired;
    create(w, p, n, 100);
    healthy(w, p, n);
    // Created in traffic; taken out by hand since, it goes back in.
    enable_new(w, p);
    disable_olds(w, p);
    verify(w, p);
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{desired, group, live, position, text};
    use super::super::roll_out;
    use crate::actuation::rollback_of;
    use crate::spec::{Duration, Strategy};

    #[test]
    fn creates_enabled_and_its_rollback_takes_it_out_first() {
        let d = desired("2.0.0", 2, Strategy::None {});
        let l = live(&d, vec![group(0, "1.0.0", 2, 2, 100)]);
        let r = roll_out(&position(&d, &l));
        assert_eq!(
            text(&r.todo),
            [
                "create web-v001 (2.0.0, 2 instances, enabled)",
                "wait until 2 of web-v001 healthy (timeout 30s)",
                "disable web-v000",
            ]
        );
        let ran: Vec<_> = r.todo.iter().filter_map(|s| s.op().cloned()).collect();
        assert_eq!(
            text(&rollback_of(&ran, Duration::from_secs(30))),
            [
                "shift traffic: web-v000 100%, web-v001 0%",
                "destroy web-v001"
            ]
        );
    }
}
