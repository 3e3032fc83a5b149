//! Business time: grace periods and the not-reporting limit only count the
//! hours people are at work, so a laptop shut over a weekend is not an issue
//! on Monday morning.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::AuditError;

/// Longest span measured day by day; anything older is past every grace
/// (and [`BusinessHours::elapsed`] answers [`BusinessHours::FOREVER`]).
const MAX_DAYS: u64 = 800;

/// When people work: days of the week and one span of hours, in a zone.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    zone: Tz,
    days: Vec<Weekday>,
    start: NaiveTime,
    end: NaiveTime,
    /// Single days off.
    dates_off: BTreeSet<NaiveDate>,
    /// Days off every year, as (month, day).
    yearly_off: BTreeSet<(u32, u32)>,
}

impl BusinessHours {
    /// What [`BusinessHours::elapsed`] answers for spans of over 800 days.
    pub const FOREVER: Duration = Duration::from_secs(u64::MAX / 4);

    /// Builds business hours from the `[audit]` settings.
    pub fn new(
        timezone: Option<&str>,
        days: Option<&[String]>,
        hours: Option<&str>,
    ) -> Result<Self, AuditError> {
        let zone = match timezone {
            Some(name) => name.parse::<Tz>().map_err(|_| {
                AuditError::Config(format!(
                    "timezone {name:?} is not an IANA time zone name (e.g. \"Europe/Berlin\")"
                ))
            })?,
            None => system_zone(),
        };
        let days = match days {
            None => vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            Some(list) => list
                .iter()
                .map(|d| {
                    d.parse::<Weekday>().map_err(|_| {
                        AuditError::Config(format!(
                            "business_days: {d:?} is not a day of the week (mon, tue, ...)"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if days.is_empty() {
            return Err(AuditError::Config(
                "business_days is empty: grace periods would never end".into(),
            ));
        }
        let (start, end) = match hours {
            None => (
                NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
                NaiveTime::from_hms_opt(17, 0, 0).expect("valid time"),
            ),
            Some(text) => parse_hours(text)?,
        };
        Ok(Self {
            zone,
            days,
            start,
            end,
            dates_off: BTreeSet::new(),
            yearly_off: BTreeSet::new(),
        })
    }

    /// Adds days off (`[audit] holidays`): `YYYY-MM-DD` for one date,
    /// `MM-DD` for that date every year.
    pub fn with_holidays(mut self, holidays: &[String]) -> Result<Self, AuditError> {
        for h in holidays {
            let text = h.trim();
            // chrono's %Y takes short years too: "26-12-24" is not year 26.
            if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                && text.len() == 10
            {
                self.dates_off.insert(date);
                continue;
            }
            // A leap year, so that 02-29 is accepted.
            let yearly = text
                .split_once('-')
                .and_then(|(m, d)| Some((m.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
                .filter(|&(m, d)| NaiveDate::from_ymd_opt(2024, m, d).is_some());
            match yearly {
                Some(md) if text.len() == 5 => {
                    self.yearly_off.insert(md);
                }
                _ => {
                    return Err(AuditError::Config(format!(
                        "holidays: {h:?} is not a date like \"2026-12-24\" (one day) or \
                         \"12-25\" (every year)"
                    )));
                }
            }
        }
        Ok(self)
    }

    /// Whether people work on `day` at all.
    fn works_on(&self, day: NaiveDate) -> bool {
        self.days.contains(&day.weekday())
            && !self.dates_off.contains(&day)
            && !self.yearly_off.contains(&(day.month(), day.day()))
    }

    /// The length of one business day.
    pub fn day_length(&self) -> Duration {
        (self.end - self.start).to_std().unwrap_or_default()
    }

    /// Business time between two instants (zero if `to` is not later).
    pub fn elapsed(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::ZERO;
        }
        if (to - from).num_days() as u64 > MAX_DAYS {
            return Self::FOREVER;
        }
        let mut total = Duration::ZERO;
        let mut day = from.with_timezone(&self.zone).date_naive();
        let last = to.with_timezone(&self.zone).date_naive();
        while day <= last {
            if self.works_on(day)
                && let (Some(open), Some(close)) =
                    (self.at(day, self.start), self.at(day, self.end))
            {
                let a = open.max(from);
                let b = close.min(to);
                if b > a {
                    total += (b - a).to_std().unwrap_or_default();
                }
            }
            match day.checked_add_days(Days::new(1)) {
                Some(next) => day = next,
                None => break,
            }
        }
        total
    }

    /// A local time of a day as an instant (the earlier one when clocks go
    /// back; the next valid minute when they skip forward).
    fn at(&self, day: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let naive = day.and_time(time);
        match self.zone.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            chrono::LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
            // In a gap (clocks skipped forward): the first minute that
            // exists (gaps are 30 minutes to an hour or two).
            chrono::LocalResult::None => (1..=180).find_map(|m| {
                self.zone
                    .from_local_datetime(&(naive + chrono::Duration::minutes(m)))
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            }),
        }
    }

    /// Converts a setting such as `4h` or `2d` to business time: days are
    /// business days, everything smaller is business hours and minutes.
    pub fn span(&self, text: &str) -> Result<Duration, AuditError> {
        let d = humantime::parse_duration(text).map_err(|e| {
            AuditError::Config(format!(
                "{text:?} is not a duration like \"4h\" or \"2d\": {e}"
            ))
        })?;
        let days = d.as_secs() / 86_400;
        let rest = d - Duration::from_secs(days * 86_400);
        Ok(self.day_length() * days as u32 + rest)
    }

    /// The zone's name, for messages.
    pub fn zone_name(&self) -> &str {
        self.zone.name()
    }

    /// Days, hours, zone and days off, as `pdome-admin issues checks` shows
    /// them: "Mon Tue 09:00-17:00 UTC, except 12-25".
    pub fn summary(&self) -> String {
        let days: Vec<String> = self.days.iter().map(|d| d.to_string()).collect();
        let mut text = format!(
            "{} {}-{} {}",
            days.join(" "),
            self.start.format("%H:%M"),
            self.end.format("%H:%M"),
            self.zone.name()
        );
        let off: Vec<String> = self
            .yearly_off
            .iter()
            .map(|(m, d)| format!("{m:02}-{d:02}"))
            .chain(self.dates_off.iter().map(|d| d.to_string()))
            .collect();
        if !off.is_empty() {
            text.push_str(&format!(", except {}", off.join(" ")));
        }
        text
    }
}

fn parse_hours(text: &str) -> Result<(NaiveTime, NaiveTime), AuditError> {
    let bad = || {
        AuditError::Config(format!(
            "business_hours {text:?} must look like \"09:00-17:00\" (start before end)"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let start = NaiveTime::parse_from_str(a.trim(), "%H:%M").map_err(|_| bad())?;
    let end = NaiveTime::parse_from_str(b.trim(), "%H:%M").map_err(|_| bad())?;
    if start >= end {
        return Err(bad());
    }
    Ok((start, end))
}

/// The machine's zone (`TZ`, then /etc/localtime), UTC if unknown.
fn system_zone() -> Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn only_working_hours_count() {
        let b = BusinessHours::new(Some("UTC"), None, None).unwrap();
        // Friday 16:00 to Monday 10:00: one hour on Friday, one on Monday.
        assert_eq!(
            b.elapsed(t("2026-11-20T16:00:00Z"), t("2026-11-23T10:00:00Z")),
            hours(2)
        );
        // Inside one day.
        assert_eq!(
            b.elapsed(t("2026-11-24T09:30:00Z"), t("2026-11-24T12:00:00Z")),
            Duration::from_secs(150 * 60)
        );
        // A whole week is five days of eight hours.
        assert_eq!(
            b.elapsed(t("2026-11-23T00:00:00Z"), t("2026-11-30T00:00:00Z")),
            hours(40)
        );
        // Nights and weekends alone count nothing; backwards is zero.
        assert_eq!(
            b.elapsed(t("2026-11-21T08:00:00Z"), t("2026-11-22T20:00:00Z")),
            Duration::ZERO
        );
        assert_eq!(
            b.elapsed(t("2026-11-24T12:00:00Z"), t("2026-11-24T10:00:00Z")),
            Duration::ZERO
        );
    }

    #[test]
    fn zones_and_daylight_saving_are_respected() {
        let b = BusinessHours::new(Some("America/New_York"), None, Some("09:00-17:00")).unwrap();
        // 13:00-15:00 UTC is 08:00-10:00 in New York in winter: one hour.
        assert_eq!(
            b.elapsed(t("2026-11-24T13:00:00Z"), t("2026-11-24T15:00:00Z")),
            hours(1)
        );
        // In summer (EDT, UTC-4) the same UTC span is 09:00-11:00: two hours.
        assert_eq!(
            b.elapsed(t("2026-07-14T13:00:00Z"), t("2026-07-14T15:00:00Z")),
            hours(2)
        );
    }

    #[test]
    fn a_business_day_starting_in_a_daylight_saving_gap_starts_when_the_gap_ends() {
        // New York skipped 02:00-03:00 on Sunday 2026-03-08; Lord Howe
        // (UTC+10:30/+11) skips only half an hour, 02:00-02:30, on 2026-10-04.
        let ny = BusinessHours::new(
            Some("America/New_York"),
            Some(&["sun".to_string()]),
            Some("02:30-04:00"),
        )
        .unwrap();
        assert_eq!(
            ny.elapsed(t("2026-03-08T00:00:00Z"), t("2026-03-09T00:00:00Z")),
            hours(1),
            "03:00 EDT to 04:00 EDT"
        );
        let lh = BusinessHours::new(
            Some("Australia/Lord_Howe"),
            Some(&["sun".to_string()]),
            Some("02:10-03:00"),
        )
        .unwrap();
        assert_eq!(
            lh.elapsed(t("2026-10-03T00:00:00Z"), t("2026-10-05T00:00:00Z")),
            Duration::from_secs(30 * 60),
            "02:30 to 03:00 once the clocks have moved"
        );
        // Clocks going back: the day is an hour longer and counted as such.
        let back = BusinessHours::new(
            Some("America/New_York"),
            Some(&["sun".to_string()]),
            Some("00:30-03:00"),
        )
        .unwrap();
        assert_eq!(
            back.elapsed(t("2026-11-01T00:00:00Z"), t("2026-11-02T00:00:00Z")),
            Duration::from_secs(210 * 60),
            "00:30 EDT to 03:00 EST is three and a half hours"
        );
    }

    #[test]
    fn spans_count_days_as_business_days() {
        let b = BusinessHours::new(Some("UTC"), None, Some("08:00-18:00")).unwrap();
        assert_eq!(b.span("4h").unwrap(), hours(4));
        assert_eq!(b.span("2d").unwrap(), hours(20));
        assert_eq!(b.span("1d 3h").unwrap(), hours(13));
        assert!(b.span("soon").is_err());
    }

    #[test]
    fn holidays_are_not_business_time() {
        let b = BusinessHours::new(Some("UTC"), None, None)
            .unwrap()
            .with_holidays(&["2026-12-24".into(), "12-25".into(), " 02-29 ".into()])
            .unwrap();
        assert_eq!(
            b.summary(),
            "Mon Tue Wed Thu Fri 09:00-17:00 UTC, except 02-29 12-25 2026-12-24"
        );
        // Wednesday 23 December 16:00 to Monday 28 December 10:00: Thursday
        // 24 (that year only) and Friday 25 (every year) are off.
        assert_eq!(
            b.elapsed(t("2026-12-23T16:00:00Z"), t("2026-12-28T10:00:00Z")),
            hours(2)
        );
        // The next year, 24 December (a Friday) is a working day again.
        assert_eq!(
            b.elapsed(t("2027-12-24T00:00:00Z"), t("2027-12-25T00:00:00Z")),
            hours(8)
        );
        // 25 December 2028 is a Monday, and still off.
        assert_eq!(
            b.elapsed(t("2028-12-25T00:00:00Z"), t("2028-12-26T00:00:00Z")),
            Duration::ZERO
        );
        // 29 February, in a leap year, on a Tuesday.
        assert_eq!(
            b.elapsed(t("2028-02-29T00:00:00Z"), t("2028-03-01T00:00:00Z")),
            Duration::ZERO
        );
        // Dates are local: the first five UTC hours of 25 December are the
        // evening of the 24th in New York, which counts.
        let ny = BusinessHours::new(Some("America/New_York"), None, Some("00:00-23:59"))
            .unwrap()
            .with_holidays(&["12-25".into()])
            .unwrap();
        assert_eq!(
            ny.elapsed(t("2026-12-25T00:00:00Z"), t("2026-12-25T05:00:00Z")),
            Duration::from_secs(4 * 3600 + 59 * 60)
        );
        for bad in [
            "26-12-24",
            "christmas",
            "2026-13-01",
            "13-01",
            "02-30",
            "2026-12",
            "1-5",
        ] {
            let e = BusinessHours::new(Some("UTC"), None, None)
                .unwrap()
                .with_holidays(&[bad.into()])
                .unwrap_err();
            assert!(e.to_string().contains("12-25"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_settings_say_what_to_write() {
        let e = BusinessHours::new(Some("Mars/Olympus"), None, None).unwrap_err();
        assert!(e.to_string().contains("IANA"), "{e}");
        let e = BusinessHours::new(Some("UTC"), None, Some("17:00-09:00")).unwrap_err();
        assert!(e.to_string().contains("09:00-17:00"), "{e}");
        let e = BusinessHours::new(Some("UTC"), Some(&["funday".to_string()]), None).unwrap_err();
        assert!(e.to_string().contains("funday"), "{e}");
        let weekend =
            BusinessHours::new(Some("UTC"), Some(&["sat".into(), "sun".into()]), None).unwrap();
        assert_eq!(
            weekend.elapsed(t("2026-11-20T00:00:00Z"), t("2026-11-23T00:00:00Z")),
            hours(16)
        );
    }
}
