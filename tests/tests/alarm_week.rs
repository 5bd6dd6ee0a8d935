//! A simulated week of normal operation through the shipped CH530 rules raises no alarm, and
//! the same harness shows a fault does: the rule engine driven in-process with the simulator's
//! registers, decoded as the CH530 profile reads them, at the simulator's noise, with a
//! controlled clock.

use std::{collections::HashMap, sync::Arc};

use chillcloud_server::alarms::{
    engine::{Change, CompiledRules, Engine, UnitSetup},
    rules,
};
use chillcloud_tests::sim::{Chiller, Scenario, chiller::NOISE_SPAN_K};
use rand::{Rng, SeedableRng};

/// Runs one chiller for `seconds` at 10 s steps (`fault` switched on at `fault_at`), feeding
/// every value that changed to the engine as a gateway would, and returns the raises.
fn simulate(seconds: i64, fault: Option<(i64, Scenario)>) -> Vec<(i64, String, u8)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let start_hour = 6.0;
    let mut chiller = Chiller::new(1, start_hour);
    let names: Vec<&str> = chiller.profile_values().iter().map(|(n, _)| *n).collect();
    let rules = Arc::new(CompiledRules::compile(&rules::unit_defaults("trane-ch530"), &names));
    assert!(rules.skipped.is_empty(), "every CH530 rule applies: {:?}", rules.skipped);
    let mut engine = Engine::default();
    engine.set_gateway("gw", Arc::new(CompiledRules::compile(&rules::site_defaults(), &[])), true, 0);
    let point_ids = names.iter().enumerate().map(|(i, n)| (i as i64, (*n).to_owned())).collect();
    engine.set_unit(UnitSetup {
        unit_id: 1,
        gateway: "gw".into(),
        points: point_ids,
        units_of_measure: HashMap::new(),
        derived_points: HashMap::new(),
        rules,
        unreadable_since: None,
    });
    let start_ms = 1_800_000_000_000;
    let mut last: Vec<Option<f64>> = vec![None; names.len()];
    let mut raises = Vec::new();
    let mut clock_s = start_hour * 3600.0;
    for second in (0..=seconds).step_by(10) {
        if let Some((at, scenario)) = fault
            && at == second
        {
            chiller.set_scenario(scenario);
        }
        clock_s = (clock_s + 10.0) % 86_400.0;
        chiller.step(10.0, clock_s / 3600.0, (rng.random::<f64>() - 0.5) * NOISE_SPAN_K);
        let now = start_ms + second * 1000;
        engine.gateway_seen("gw", now);
        // Report by exception with a snapshot every 60 s, as the gateway does by default.
        let snapshot = second % 60 == 0;
        let readings: Vec<(i64, i64, Option<f64>)> = chiller
            .profile_values()
            .iter()
            .enumerate()
            .filter(|(i, (_, v))| snapshot || last[*i] != Some(*v))
            .map(|(i, (_, v))| (i as i64, now, Some(*v)))
            .collect();
        for (id, _, value) in &readings {
            last[*id as usize] = *value;
        }
        let mut changes = engine.observe(&readings).changes;
        changes.extend(engine.tick(now + 5_000).changes);
        for change in changes {
            if let Change::Raise { rule, grade, at, .. } = change {
                raises.push(((at - start_ms) / 1000, rule, grade));
            }
        }
    }
    raises
}

#[test]
fn scenario_a_simulated_week_of_normal_operation_raises_no_alarm() {
    let raises = simulate(7 * 86_400, None);
    assert!(raises.is_empty(), "alarms in a normal week: {raises:?}");
}

#[test]
fn the_week_harness_does_see_a_fault() {
    // The same harness is not blind: the 5 °C case after a day of normal running.
    let raises = simulate(86_400 + 600, Some((86_400, Scenario::CannotHold)));
    let rules: Vec<&str> = raises.iter().map(|(_, rule, _)| rule.as_str()).collect();
    assert_eq!(rules, ["chw_supply_high"], "{raises:?}");
    let (at, _, grade) = &raises[0];
    assert_eq!(*grade, 1);
    assert!(*at > 86_400 && *at < 86_400 + 300, "raised at {at} s");
}
