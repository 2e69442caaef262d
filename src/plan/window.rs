//! Deployment windows: is `now` inside one of an environment's windows?

use jiff::civil::Weekday as JWeekday;
use jiff::tz::TimeZone;

use crate::spec::{Weekday, Window};

fn weekday(w: JWeekday) -> Weekday {
    match w {
        JWeekday::Monday => Weekday::Mon,
        JWeekday::Tuesday => Weekday::Tue,
        JWeekday::Wednesday => Weekday::Wed,
        JWeekday::Thursday => Weekday::Thu,
        JWeekday::Friday => Weekday::Fri,
        JWeekday::Saturday => Weekday::Sat,
        JWeekday::Sunday => Weekday::Sun,
    }
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?)
}

/// Whether `now` falls in any window; no windows means always. A window whose end is before its
/// start wraps past midnight and belongs to the day it opens.
pub fn in_window(windows: &[Window], now: jiff::Timestamp) -> bool {
    if windows.is_empty() {
        return true;
    }
    windows.iter().any(|w| {
        let Ok(tz) = TimeZone::get(&w.timezone) else {
            return false;
        };
        let (Some(start), Some(end)) = (minutes(&w.start), minutes(&w.end)) else {
            return false;
        };
        let local = now.to_zoned(tz);
        let t =
            u32::from(local.hour().unsigned_abs()) * 60 + u32::from(local.minute().unsigned_abs());
        let today = weekday(local.weekday());
        let yesterday = weekday(local.weekday().previous());
        if start < end {
            w.days.contains(&today) && t >= start && t < end
        } else {
            (w.days.contains(&today) && t >= start) || (w.days.contains(&yesterday) && t < end)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(days: &[Weekday], start: &str, end: &str) -> Window {
        Window {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            timezone: "Europe/Berlin".into(),
        }
    }

    #[test]
    fn windows() {
        // 2026-11-23 is a Monday; 10:00 UTC is 11:00 in Berlin.
        let mon_11 = "2026-11-23T10:00:00Z".parse().unwrap();
        assert!(in_window(&[win(&[Weekday::Mon], "09:00", "16:00")], mon_11));
        assert!(!in_window(
            &[win(&[Weekday::Tue], "09:00", "16:00")],
            mon_11
        ));
        assert!(!in_window(
            &[win(&[Weekday::Mon], "12:00", "16:00")],
            mon_11
        ));
        // Sunday 22:00 to 02:00 covers Monday 01:00 Berlin.
        let mon_01 = "2026-11-23T00:00:00Z".parse().unwrap();
        assert!(in_window(&[win(&[Weekday::Sun], "22:00", "02:00")], mon_01));
        assert!(in_window(&[], mon_01));
    }
}
