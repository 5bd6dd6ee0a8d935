//! Escalation policies and on-call rotations: pure functions of time, so tests drive them with
//! a controlled clock.
//!
//! A policy is levels, each reached `after_s` from the incident's start and adding its
//! audience; after the last level, everyone reached so far is paged again every `repeat_s` until
//! someone acknowledges. The steps are numbered: step `k < levels` is level `k`; step
//! `levels + n` is the `n`th repeat.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

message_error! {
    /// Why an escalation policy is refused, for people.
    pub struct InvalidPolicy;
}

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Who a level reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The site's on-call engineer (its service team when it has no rotation).
    OnCall,
    /// The site's whole service team.
    Service,
    /// The owner's contacts at the site.
    Owner,
    /// The service managers.
    Manager,
    /// The site's team chat rooms (and the team-wide ones): posted once per level that names
    /// them, never on repeats.
    Chat,
}

/// How a message reaches a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Web Push to the dashboard installed on their phone: instant and free.
    Push,
    /// A text message.
    Sms,
    /// A phone call that speaks the alarm; a keypress acknowledges.
    Voice,
    /// E-mail.
    Email,
}

impl Channel {
    /// Every channel, in the order people are reached by default.
    pub const ALL: [Channel; 4] = [Channel::Push, Channel::Sms, Channel::Voice, Channel::Email];

    /// Its name, as stored in the outbox and in preferences.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Push => "push",
            Channel::Sms => "sms",
            Channel::Voice => "voice",
            Channel::Email => "email",
        }
    }

    /// The channel of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// One escalation level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Seconds from the incident's start.
    pub after_s: f64,
    /// Who it adds.
    pub notify: Vec<Audience>,
    /// The channels this level reaches people by, whatever they chose (a call after an
    /// unanswered SMS); none: each person's own channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Vec<Channel>>,
}

/// An escalation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Levels, ascending in `after_s`; the first is usually at 0.
    pub levels: Vec<Level>,
    /// After the last level, everyone reached is paged again this often (none: never).
    pub repeat_s: Option<f64>,
}

/// Policies by grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Grade 1 to 4; missing grades use [`Policy::default_for`].
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, Policy>)]
    pub grades: std::collections::BTreeMap<u8, Policy>,
}

impl Policies {
    /// The policy for `grade`.
    pub fn for_grade(&self, grade: u8) -> Policy {
        self.grades.get(&grade).cloned().unwrap_or_else(|| Policy::default_for(grade))
    }
}

impl Policy {
    /// Defaults from the service table in docs/service-levels.md: critical faults reach the
    /// on-call engineer, the owner and the site's chat rooms at once, call the on-call engineer
    /// when that has not been acknowledged in 2 minutes, reach the whole team after 5 minutes and
    /// the managers after 30, repeated every 10 minutes; major ones pass on after 30 minutes;
    /// minor ones after 2 hours; warnings reach the on-call engineer once.
    pub fn default_for(grade: u8) -> Policy {
        use Audience::*;
        let level = |after_s: f64, notify: &[Audience]| Level { after_s, notify: notify.to_vec(), via: None };
        match grade {
            1 => Policy {
                levels: vec![
                    level(0.0, &[OnCall, Owner, Chat]),
                    Level { via: Some(vec![Channel::Voice]), ..level(120.0, &[OnCall]) },
                    level(300.0, &[Service]),
                    level(1800.0, &[Manager]),
                ],
                repeat_s: Some(600.0),
            },
            2 => Policy {
                levels: vec![level(0.0, &[OnCall, Chat]), level(1800.0, &[Service]), level(7200.0, &[Manager])],
                repeat_s: Some(1800.0),
            },
            3 => Policy { levels: vec![level(0.0, &[OnCall]), level(7200.0, &[Service])], repeat_s: Some(7200.0) },
            _ => Policy { levels: vec![level(0.0, &[OnCall])], repeat_s: None },
        }
    }

    /// Checks levels and repeat.
    pub fn check(&self) -> Result<(), InvalidPolicy> {
        if self.levels.is_empty() {
            return Err("a policy needs at least one level".into());
        }
        const MONTH_S: f64 = 30.0 * 86_400.0;
        if self.levels.windows(2).any(|w| w[1].after_s < w[0].after_s)
            || self.levels.iter().any(|l| !(l.after_s.is_finite() && (0.0..=MONTH_S).contains(&l.after_s)))
        {
            return Err("levels are ascending in after_s, from 0 to 30 days".into());
        }
        if self.repeat_s.is_some_and(|r| !(r.is_finite() && (10.0..=MONTH_S).contains(&r))) {
            return Err("repeat_s is 10 s to 30 days".into());
        }
        if self.levels.iter().any(|l| l.via.as_ref().is_some_and(|via| via.is_empty() || via.len() > 4)) {
            return Err("a level's via names 1 to 4 channels".into());
        }
        Ok(())
    }

    /// When step `step` is due, for an incident opened at `opened`; `None` after the last.
    pub fn step_at(&self, opened: Millis, step: usize) -> Option<Millis> {
        let ms = |s: f64| (s * 1000.0) as Millis;
        match self.levels.get(step) {
            Some(level) => Some(opened + ms(level.after_s)),
            None => {
                let last = self.levels.last()?;
                let repeats = (step - self.levels.len() + 1) as f64;
                self.repeat_s.map(|r| opened + ms(last.after_s + repeats * r))
            }
        }
    }

    /// The channels step `step` reaches people by (none: their own); a repeat uses their own.
    pub fn via(&self, step: usize) -> Option<&[Channel]> {
        self.levels.get(step).and_then(|level| level.via.as_deref())
    }

    /// Who step `step` reaches: its level's audience, or everyone's on a repeat (but the chat
    /// rooms, which hear of an incident once per level).
    pub fn audience(&self, step: usize) -> Vec<Audience> {
        match self.levels.get(step) {
            Some(level) => level.notify.clone(),
            None => {
                let mut all: Vec<Audience> = Vec::new();
                for audience in self.levels.iter().flat_map(|l| &l.notify).filter(|a| **a != Audience::Chat) {
                    if !all.contains(audience) {
                        all.push(*audience);
                    }
                }
                all
            }
        }
    }

    /// The steps due at `now` after `steps_done`, and when the next one is due. Overdue steps
    /// (the server was down) are paged together, once.
    pub fn due(&self, opened: Millis, steps_done: usize, now: Millis) -> (Vec<usize>, Option<Millis>) {
        let mut due = Vec::new();
        let mut step = steps_done;
        // Bounded: a server down for a month does not page a thousand repeats at once.
        while let Some(at) = self.step_at(opened, step).filter(|_| due.len() < 100) {
            if at > now {
                return (due, Some(at));
            }
            due.push(step);
            step += 1;
        }
        (due, None)
    }
}

/// Who is on call in a rotation at `now`: an override covering `now` wins, else the member
/// whose turn it is.
pub fn on_call(
    members: &[i64],
    period_days: i64,
    starts_at: Millis,
    overrides: &[(i64, Millis, Millis)],
    now: Millis,
) -> Option<i64> {
    if let Some((person, _, _)) = overrides.iter().find(|(_, from, to)| (*from..*to).contains(&now)) {
        return Some(*person);
    }
    let period = period_days.max(1) * 86_400_000;
    let turn = (now - starts_at).max(0) / period;
    members.get((turn as usize) % members.len().max(1)).copied()
}

/// `count` turns of a rotation, from the one under way at `from`: each `(person, start, end)`,
/// by the rule [`on_call`] follows when no override covers the time.
pub fn turns(
    members: &[i64],
    period_days: i64,
    starts_at: Millis,
    from: Millis,
    count: usize,
) -> Vec<(i64, Millis, Millis)> {
    if members.is_empty() {
        return Vec::new();
    }
    let period = period_days.max(1) * 86_400_000;
    let first = (from - starts_at).max(0) / period;
    (first..first + count as i64)
        .map(|turn| {
            let start = starts_at + turn * period;
            (members[(turn as usize) % members.len()], start, start + period)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turns_shown_are_who_is_paged_then() {
        let (members, start) = ([7, 8, 9], 1_000_000);
        let week = 7 * 86_400_000;
        let now = start + 10 * week + 3;
        let shown = turns(&members, 7, start, now, 4);
        assert_eq!(shown.len(), 4);
        assert!(shown[0].1 <= now && now < shown[0].2, "the first turn is under way");
        for (person, from, to) in shown {
            assert_eq!(to - from, week);
            for t in [from, from + week / 2, to - 1] {
                assert_eq!(on_call(&members, 7, start, &[], t), Some(person));
            }
        }
    }

    const MIN: Millis = 60_000;

    #[test]
    fn a_critical_incident_walks_its_levels_then_repeats_until_acknowledged() {
        let policy = Policy::default_for(1);
        let opened = 1_000_000;
        // At the start: the on-call engineer, the owner and the chat rooms, by their own channels.
        assert_eq!(policy.due(opened, 0, opened), (vec![0], Some(opened + 2 * MIN)));
        assert_eq!(policy.audience(0), [Audience::OnCall, Audience::Owner, Audience::Chat]);
        assert_eq!(policy.via(0), None);
        // Unanswered for 2 minutes: a call to the on-call engineer.
        assert_eq!(policy.due(opened, 1, opened + 2 * MIN), (vec![1], Some(opened + 5 * MIN)));
        assert_eq!((policy.audience(1), policy.via(1)), (vec![Audience::OnCall], Some(&[Channel::Voice][..])));
        // Nothing more before 5 minutes.
        assert_eq!(policy.due(opened, 2, opened + 5 * MIN - 1), (vec![], Some(opened + 5 * MIN)));
        assert_eq!(policy.due(opened, 2, opened + 5 * MIN), (vec![2], Some(opened + 30 * MIN)));
        assert_eq!(policy.audience(2), [Audience::Service]);
        assert_eq!(policy.due(opened, 3, opened + 30 * MIN), (vec![3], Some(opened + 40 * MIN)));
        // Then everyone every 10 minutes, by their own channels; the chat rooms heard it once.
        assert_eq!(policy.due(opened, 4, opened + 40 * MIN), (vec![4], Some(opened + 50 * MIN)));
        assert_eq!(policy.audience(4), [Audience::OnCall, Audience::Owner, Audience::Service, Audience::Manager]);
        assert_eq!(policy.via(4), None);
    }

    #[test]
    fn overdue_steps_are_paged_together() {
        let policy = Policy::default_for(1);
        assert_eq!(policy.due(0, 0, 31 * MIN), (vec![0, 1, 2, 3], Some(40 * MIN)));
    }

    #[test]
    fn a_warning_is_paged_once() {
        let policy = Policy::default_for(4);
        assert_eq!(policy.due(0, 0, 0), (vec![0], None));
        assert_eq!(policy.due(0, 1, 1_000 * MIN), (vec![], None));
    }

    #[test]
    fn rotations_take_turns_and_overrides_win() {
        let day = 86_400_000;
        let members = [10, 20, 30];
        assert_eq!(on_call(&members, 1, 0, &[], 0), Some(10));
        assert_eq!(on_call(&members, 1, 0, &[], day + 1), Some(20));
        assert_eq!(on_call(&members, 1, 0, &[], 3 * day), Some(10));
        assert_eq!(on_call(&members, 7, 0, &[], 8 * day), Some(20));
        assert_eq!(on_call(&members, 1, 0, &[(99, day, 2 * day)], day + 5), Some(99));
        assert_eq!(on_call(&members, 1, 0, &[(99, day, 2 * day)], 2 * day), Some(30));
    }

    #[test]
    fn bad_policies_are_refused() {
        let mut policy = Policy::default_for(2);
        policy.levels.swap(0, 1);
        assert!(policy.check().is_err());
        assert!(Policy { levels: vec![], repeat_s: None }.check().is_err());
        let mut silent = Policy::default_for(1);
        silent.levels[1].via = Some(vec![]);
        assert!(silent.check().is_err());
        assert!(Policy { repeat_s: Some(1.0), ..Policy::default_for(1) }.check().is_err());
    }
}
