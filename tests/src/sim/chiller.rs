//! A water-cooled chiller's behaviour and its Modbus register map (Trane Tracer CH530 style).
//!
//! The register map is written from the controller's public point list independently of the
//! gateway's profile file, so a mistake in either shows up in the end-to-end tests.
//! Protocol (zero-based) addresses: coil 0 enable; holding 1 chilled-water setpoint (0.1 °C),
//! 2 current limit (%RLA); input 1 active setpoint, 2 %RLA, 4 evaporator leaving, 5 evaporator
//! entering, 6 condenser entering, 7 condenser leaving (0.1 °C), 8 status word (bit 0 running,
//! bit 1 alarm, bit 2 local control, bit 3 flow proven), 10 evaporator pressure (kPa), 11 evaporator
//! saturation (0.1 °C), 12 condenser pressure, 13 condenser saturation, 14-15 starts (u32),
//! 16-17 run hours (u32), 18 diagnostic code.
//!
//! Bit 3 of the status word is the chilled-water flow switch: set while flow is proven. The
//! simulated pump always runs, so it is set in every scenario except `low_flow`.
//!
//! Healthy operation (scenario `normal`, the clock's noise included, default 7 °C setpoint) stays
//! well inside the bands a fault rule would use: leaving water within 0.2 K of setpoint while
//! running, evaporator approach 1.5 + 1.5 x load K and condenser approach 1.2 + 1.5 x load K
//! (both under 3 K), condenser pressure under 1,000 kPa, evaporator saturation above 4 °C,
//! chilled-water ΔT 5 x load K (load 0.3 to 0.95), and no starts. Each fault scenario shows
//! within 2 to 5 simulated minutes (see [`Scenario`]).
//!
//! **Energy.** The simulator knows what the compressor draws, so the remote doctor's estimates
//! can be checked against the truth: the refrigeration cycle delivers the building's load,
//! `load x RATED_COOLING_KW`, at a fixed fraction of the Carnot coefficient of performance
//! between the saturation temperatures, `COP = CARNOT_EFFICIENCY x Te / (Tc - Te)` (kelvin), so
//! power grows with lift: a kelvin more of condensing temperature or less of evaporating
//! temperature costs 1/lift more (2.9 to 3.8 % at the 26 to 34 K this unit runs, the upper end of
//! the 2 to 3.5 % energy guides quote). The compressor current follows the power:
//! `%RLA = 100 x power / RATED_POWER_KW` (what the doctor reads without a power meter).
//! [`Wear`] adds the slow faults a month shows and an alarm does not: tubes fouling a fraction
//! of a kelvin a day. `energy_kwh` sums the power over simulated time.

use serde::{Deserialize, Serialize};
use tokio_modbus::ExceptionCode;

/// What the simulated chiller is made to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "scenario")]
pub enum Scenario {
    /// Healthy operation.
    #[default]
    Normal,
    /// Runs flat out but the chilled-water supply drifts several degrees above setpoint.
    CannotHold,
    /// Trips: stops with a diagnostic code and the alarm bit set.
    Trip {
        /// The diagnostic code shown in input register 30019.
        code: u16,
    },
    /// The leaving-water sensor freezes at its current reading.
    SensorStuck,
    /// The controller stops answering Modbus requests.
    Offline,
    /// A control fault overcools: while running, leaving water falls towards 1 °C and the
    /// evaporator saturation towards -2.5 °C (approach 3.5 K), the compressor at its current
    /// limit.
    FreezeRisk,
    /// The cooling tower has failed: while running, condenser water rises towards 37.5 °C
    /// entering and 42.5 °C leaving, condenser saturation towards 48.5 °C (about 1,270 kPa;
    /// over 1,200 kPa within 3 minutes, 1,250 within 5); the condenser approach is 6 K.
    HighHeadPressure,
    /// Fouled condenser tubes: the condenser approach rises by 1 K a minute, up to 8 K above
    /// normal; everything else stays normal.
    CondenserFouling,
    /// Fouled evaporator tubes: the evaporator approach rises by 1 K a minute, up to 8 K above
    /// normal, while the leaving water still holds its setpoint.
    EvaporatorFouling,
    /// Chilled-water flow lost: the flow-proven bit clears and the evaporator ΔT grows towards
    /// 12 K while the unit keeps running (the controller has not tripped yet).
    LowFlow,
    /// The unit starts and stops on its own: 90 s running, 90 s stopped, over and over.
    ShortCycling,
    /// The leaving-water sensor is open-circuit and reads -50.0 °C.
    SensorOpen,
}

/// How a controller differs from the reference register map, as real ones do by model and
/// firmware.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quirks {
    /// Input registers (protocol addresses) the controller does not have: a read that covers
    /// one is answered with exception 2, illegal data address.
    #[serde(default)]
    pub missing_input_registers: Vec<u16>,
    /// How the status word's bits are laid out.
    #[serde(default)]
    pub status_word: StatusLayout,
}

/// The status word's bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusLayout {
    /// Bit 0 running, bit 1 alarm, bit 2 local control, bit 3 flow proven (our reference sites).
    #[default]
    Reference,
    /// Bit 0 latched alarm, bit 1 running, bit 2 enabled, bit 3 capacity limited; no local/remote
    /// or flow-proven bit (a Tracer CH530 met in the field).
    Tracer,
}

/// Slow wear: approaches that creep up day by day, as fouled tubes make them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wear {
    /// How fast the condenser approach grows, K a simulated day.
    #[serde(default)]
    pub condenser_fouling_k_per_day: f64,
    /// How fast the evaporator approach grows, K a simulated day.
    #[serde(default)]
    pub evaporator_fouling_k_per_day: f64,
}

/// Cooling the unit delivers at full load, kW (284 tons).
pub const RATED_COOLING_KW: f64 = 1000.0;
/// Compressor power at full load on design conditions (7 °C leaving, 30 °C condenser water
/// entering, clean tubes), kW: a COP of 5.6, 0.63 kW/ton.
pub const RATED_POWER_KW: f64 = 180.0;
/// The cycle's coefficient of performance as a fraction of Carnot's, set so that design
/// conditions draw [`RATED_POWER_KW`].
pub const CARNOT_EFFICIENCY: f64 = 0.6755;

/// Compressor power, kW, delivering `cooling_kw` between saturation temperatures `evap_sat` and
/// `cond_sat` (°C): the energy model's one formula.
pub fn compressor_power_kw(cooling_kw: f64, evap_sat: f64, cond_sat: f64) -> f64 {
    let (te, tc) = (evap_sat + 273.15, cond_sat + 273.15);
    cooling_kw * (tc - te) / (te * CARNOT_EFFICIENCY)
}

/// The state of one chiller.
#[derive(Debug, Clone, Serialize)]
pub struct Chiller {
    /// How its controller differs from the reference map.
    pub quirks: Quirks,
    /// Pulling a warm loop down after a start: the leaving water falls at the unit's full
    /// capacity, [`PULL_DOWN_K_PER_S`], rather than settling within a minute.
    pub pulling_down: bool,
    /// Modbus unit id.
    pub unit_id: u8,
    /// Remote enable command (coil 1).
    pub enabled: bool,
    /// The local/remote switch is at local (status word bit 2): someone at the panel has control.
    pub local: bool,
    /// Whether the compressor runs.
    pub running: bool,
    /// Chilled-water setpoint, °C.
    pub setpoint: f64,
    /// Current limit, %RLA.
    pub current_limit: u16,
    /// Active scenario.
    pub scenario: Scenario,
    /// Fraction of design load the building asks for.
    pub load: f64,
    /// What the building's daily load curve is multiplied by: below 1 the plant is oversized
    /// for it.
    pub load_scale: f64,
    /// Slow wear (fouling) going on.
    pub wear: Wear,
    /// Condenser approach the wear has added so far, K.
    pub worn_cond_k: f64,
    /// Evaporator approach the wear has added so far, K.
    pub worn_evap_k: f64,
    /// Compressor power now, kW.
    pub power_kw: f64,
    /// Electrical energy used since the simulator started, kWh.
    pub energy_kwh: f64,
    /// Cooling delivered since the simulator started, kWh.
    pub cooling_kwh: f64,
    /// Evaporator leaving water (chilled-water supply), °C.
    pub supply: f64,
    /// Evaporator entering water (chilled-water return), °C.
    pub ret: f64,
    /// Condenser entering water, °C.
    pub cond_in: f64,
    /// Condenser leaving water, °C.
    pub cond_out: f64,
    /// Evaporator saturation temperature, °C.
    pub evap_sat: f64,
    /// Condenser saturation temperature, °C.
    pub cond_sat: f64,
    /// Compressor current, %RLA.
    pub rla: f64,
    /// Compressor starts.
    pub starts: u32,
    /// Running hours (fractional).
    pub run_hours: f64,
    /// Active diagnostic code, 0 for none.
    pub diagnostic: u16,
    /// The reading the leaving-water sensor is stuck at.
    stuck_supply: Option<f64>,
    /// Evaporator approach added to the normal one by the scenario (fouling, overcooling), K.
    evap_extra: f64,
    /// Condenser approach added to the normal one by the scenario (fouling, high head), K.
    cond_extra: f64,
    /// Seconds into the short-cycling pattern.
    cycle_s: f64,
}

/// Span of the random disturbance the clock adds at each step: uniform within ± half of it, K.
pub const NOISE_SPAN_K: f64 = 0.1;

/// Amplitude of the leaving water's hunting around the setpoint, K.
const HUNTING_K: f64 = 0.15;
/// Period of that hunting, simulated seconds.
const HUNTING_PERIOD_S: f64 = 600.0;

/// Leaving water the overcooling control fault drives towards, °C.
const FREEZE_SUPPLY: f64 = 1.0;
/// Evaporator approach while overcooling, K: saturation about -2.5 °C at 1 °C leaving water.
const FREEZE_EVAP_APPROACH: f64 = 3.5;
/// Condenser entering water with the cooling tower failed, °C.
const HEAD_COND_IN: f64 = 37.5;
/// Condenser water ΔT with the cooling tower failed, K.
const HEAD_COND_RISE: f64 = 5.0;
/// Condenser approach with the cooling tower failed, K.
const HEAD_COND_APPROACH: f64 = 6.0;
/// How fast fouling raises an approach, K/s (1 K a minute).
const FOULING_RATE: f64 = 1.0 / 60.0;
/// How far fouling raises an approach, K.
const FOULING_MAX: f64 = 8.0;
/// Chilled-water ΔT the evaporator heads for without flow, K.
const LOW_FLOW_DELTA_T: f64 = 12.0;
/// Running time, then stopped time, of a short cycle, s.
const SHORT_CYCLE_HALF: f64 = 90.0;
/// What an open-circuit leaving-water sensor reads, °C.
const OPEN_SENSOR: f64 = -50.0;
/// How fast a start pulls a warm loop down at full capacity, K/s (0.5 K a minute).
pub const PULL_DOWN_K_PER_S: f64 = 0.5 / 60.0;

/// Saturation pressure of R-134a in kPa at `celsius`, from a Clausius-Clapeyron fit through
/// 0 °C (293 kPa) and 40 °C (1017 kPa); within 2 % over the chiller's range.
pub fn r134a_pressure_kpa(celsius: f64) -> f64 {
    (15.418 - 2660.0 / (celsius + 273.15)).exp()
}

/// The building's load at `hour` of the day: low at night, peaking mid-afternoon.
pub fn daily_load(hour: f64) -> f64 {
    let peak = (-((hour - 14.5) / 4.5).powi(2)).exp();
    (0.3 + 0.65 * peak).clamp(0.2, 1.0)
}

fn approach(value: &mut f64, target: f64, dt: f64, tau: f64) {
    *value += (target - *value) * (1.0 - (-dt / tau).exp());
}

/// Moves `value` towards `target` by at most `step`.
fn ramp(value: &mut f64, target: f64, step: f64) {
    *value += (target - *value).clamp(-step, step);
}

fn tenths(celsius: f64) -> u16 {
    (celsius * 10.0).round() as i16 as u16
}

impl Chiller {
    /// A running chiller at steady state for `hour` of the day.
    pub fn new(unit_id: u8, hour: f64) -> Self {
        let mut chiller = Chiller {
            quirks: Quirks::default(),
            pulling_down: false,
            unit_id,
            enabled: true,
            local: false,
            running: true,
            setpoint: 7.0,
            current_limit: 100,
            scenario: Scenario::Normal,
            load: daily_load(hour),
            load_scale: 1.0,
            wear: Wear::default(),
            worn_cond_k: 0.0,
            worn_evap_k: 0.0,
            power_kw: 0.0,
            energy_kwh: 0.0,
            cooling_kwh: 0.0,
            supply: 7.0,
            ret: 12.0,
            cond_in: 29.0,
            cond_out: 34.0,
            evap_sat: 5.0,
            cond_sat: 36.0,
            rla: 60.0,
            starts: 1200 + u32::from(unit_id) * 37,
            run_hours: 15000.0 + f64::from(unit_id) * 211.0,
            diagnostic: 0,
            stuck_supply: None,
            evap_extra: 0.0,
            cond_extra: 0.0,
            cycle_s: 0.0,
        };
        // Settle into the steady state for the hour.
        for _ in 0..600 {
            chiller.step(10.0, hour, 0.0);
        }
        (chiller.energy_kwh, chiller.cooling_kwh) = (0.0, 0.0);
        chiller
    }

    /// Switches scenario.
    pub fn set_scenario(&mut self, scenario: Scenario) {
        self.stuck_supply = matches!(scenario, Scenario::SensorStuck).then_some(self.supply);
        match scenario {
            Scenario::Trip { code } => {
                self.running = false;
                self.diagnostic = code;
            }
            _ => self.diagnostic = 0,
        }
        self.cycle_s = 0.0;
        self.scenario = scenario;
    }

    /// Whether the chilled-water flow switch proves flow (status bit 3). The pump always runs,
    /// so only a flow failure clears it.
    pub fn flow_proven(&self) -> bool {
        self.scenario != Scenario::LowFlow
    }

    /// Advances the physics by `dt` seconds at `hour` of the day; `noise` is a small random
    /// disturbance in kelvin.
    pub fn step(&mut self, dt: f64, hour: f64, noise: f64) {
        self.load = (daily_load(hour) * self.load_scale).clamp(0.05, 1.0);
        self.worn_cond_k += self.wear.condenser_fouling_k_per_day * dt / 86_400.0;
        self.worn_evap_k += self.wear.evaporator_fouling_k_per_day * dt / 86_400.0;
        let evap_approach = 1.5 + 1.5 * self.load;
        let cond_approach = 1.2 + 1.5 * self.load;
        match self.scenario {
            Scenario::EvaporatorFouling => ramp(&mut self.evap_extra, FOULING_MAX, FOULING_RATE * dt),
            Scenario::FreezeRisk => {
                approach(&mut self.evap_extra, (FREEZE_EVAP_APPROACH - evap_approach).max(0.0), dt, 60.0)
            }
            _ => approach(&mut self.evap_extra, 0.0, dt, 30.0),
        }
        match self.scenario {
            Scenario::CondenserFouling => ramp(&mut self.cond_extra, FOULING_MAX, FOULING_RATE * dt),
            Scenario::HighHeadPressure => {
                approach(&mut self.cond_extra, (HEAD_COND_APPROACH - cond_approach).max(0.0), dt, 60.0)
            }
            _ => approach(&mut self.cond_extra, 0.0, dt, 30.0),
        }
        let cycled_off = match self.scenario {
            Scenario::ShortCycling => {
                self.cycle_s += dt;
                self.cycle_s % (2.0 * SHORT_CYCLE_HALF) >= SHORT_CYCLE_HALF
            }
            _ => false,
        };
        let tripped = matches!(self.scenario, Scenario::Trip { .. });
        let held_off = tripped || cycled_off;
        if self.enabled && !held_off && !self.running {
            self.running = true;
            self.starts += 1;
            // A loop that warmed while the unit stood is pulled down at full capacity.
            self.pulling_down = self.supply > self.setpoint + 1.0;
        }
        if !self.enabled || held_off {
            self.running = false;
            self.pulling_down = false;
        }
        if self.running {
            let (target_supply, forced_rla) = match self.scenario {
                // Short of capacity (fouled, low charge): flat out and still too warm.
                Scenario::CannotHold => (self.setpoint + 3.0 + 3.0 * self.load, Some(100.0)),
                // The control fault keeps loading the compressor past the setpoint.
                Scenario::FreezeRisk => (FREEZE_SUPPLY, Some(f64::from(self.current_limit))),
                // Capacity control hunts gently around the setpoint, as real ones do: a
                // leaving-water reading that never moves is a frozen sensor, not good control.
                _ => {
                    (self.setpoint + HUNTING_K * (hour * 3600.0 * std::f64::consts::TAU / HUNTING_PERIOD_S).sin(), None)
                }
            };
            let delta_t = match self.scenario {
                Scenario::LowFlow => LOW_FLOW_DELTA_T,
                _ => 5.0 * self.load,
            };
            let (cond_in, cond_rise, cond_tau) = match self.scenario {
                Scenario::HighHeadPressure => (HEAD_COND_IN, HEAD_COND_RISE, 60.0),
                _ => (27.0 + 3.0 * self.load, 5.0 * self.load, 300.0),
            };
            let forced_rla = if self.pulling_down {
                let falls_to = self.supply - PULL_DOWN_K_PER_S * dt;
                self.supply = falls_to.max(target_supply) + noise;
                self.pulling_down = falls_to > target_supply + 0.3;
                Some(f64::from(self.current_limit))
            } else {
                approach(&mut self.supply, target_supply + noise, dt, 60.0);
                forced_rla
            };
            approach(&mut self.ret, self.supply + delta_t, dt, 90.0);
            approach(&mut self.cond_in, cond_in, dt, cond_tau);
            approach(&mut self.cond_out, self.cond_in + cond_rise, dt, 60.0);
            self.evap_sat = self.supply - evap_approach - self.evap_extra - self.worn_evap_k;
            self.cond_sat = self.cond_out + cond_approach + self.cond_extra + self.worn_cond_k;
            // The current follows the power the load needs at this lift, up to the limit.
            let needed = compressor_power_kw(self.load * RATED_COOLING_KW, self.evap_sat, self.cond_sat);
            let rla = forced_rla.unwrap_or((100.0 * needed / RATED_POWER_KW).min(f64::from(self.current_limit)));
            approach(&mut self.rla, rla, dt, 20.0);
            self.cooling_kwh += self.load * RATED_COOLING_KW * dt / 3600.0;
            self.run_hours += dt / 3600.0;
        } else {
            approach(&mut self.rla, 0.0, dt, 5.0);
            approach(&mut self.supply, 14.0 + noise, dt, 600.0);
            approach(&mut self.ret, 14.5, dt, 600.0);
            approach(&mut self.cond_in, 25.0, dt, 900.0);
            approach(&mut self.cond_out, 25.0, dt, 600.0);
            self.evap_sat = self.supply - 0.5;
            self.cond_sat = self.cond_out + 0.5;
        }
        self.power_kw = self.rla / 100.0 * RATED_POWER_KW;
        self.energy_kwh += self.power_kw * dt / 3600.0;
    }

    /// Bit 0 running, bit 1 alarm (a diagnostic is active), bit 2 local control, bit 3
    /// chilled-water flow proven.
    fn status_word(&self) -> u16 {
        match self.quirks.status_word {
            StatusLayout::Reference => {
                u16::from(self.running)
                    | (u16::from(self.diagnostic != 0) << 1)
                    | (u16::from(self.local) << 2)
                    | (u16::from(self.flow_proven()) << 3)
            }
            StatusLayout::Tracer => {
                u16::from(self.diagnostic != 0)
                    | (u16::from(self.running) << 1)
                    | (u16::from(self.enabled) << 2)
                    | (u16::from(self.running && self.rla >= f64::from(self.current_limit) - 1.0) << 3)
            }
        }
    }

    /// Reads `count` input registers from `start`.
    pub fn input_registers(&self, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let end = u32::from(start) + u32::from(count);
        if self.quirks.missing_input_registers.iter().any(|&r| (u32::from(start)..end).contains(&u32::from(r))) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let supply = self.stuck_supply.unwrap_or(self.supply);
        let supply_sensor = match self.scenario {
            Scenario::SensorOpen => OPEN_SENSOR,
            _ => supply,
        };
        let run_hours = self.run_hours as u32;
        registers(start, count, INPUT_REGISTERS, |address| match address {
            1 => tenths(self.setpoint),
            2 => self.rla.round() as u16,
            4 => tenths(supply_sensor),
            5 => tenths(self.ret),
            6 => tenths(self.cond_in),
            7 => tenths(self.cond_out),
            8 => self.status_word(),
            10 => r134a_pressure_kpa(self.evap_sat).round() as u16,
            11 => tenths(self.evap_sat),
            12 => r134a_pressure_kpa(self.cond_sat).round() as u16,
            13 => tenths(self.cond_sat),
            14 => (self.starts >> 16) as u16,
            15 => self.starts as u16,
            16 => (run_hours >> 16) as u16,
            17 => run_hours as u16,
            18 => self.diagnostic,
            // The controller's model and serial as ASCII, two characters a register.
            MODEL_START..MODEL_END => {
                let text = format!("RTHD SIM-{:03}", self.unit_id);
                let bytes = text.as_bytes();
                let at = usize::from(address - MODEL_START) * 2;
                u16::from_be_bytes([bytes.get(at).copied().unwrap_or(0), bytes.get(at + 1).copied().unwrap_or(0)])
            }
            // The benchmark bank: 100 more sensor-like registers, each moving with the supply.
            BENCH_BANK_START..INPUT_REGISTERS => tenths(supply) + (address - BENCH_BANK_START),
            // Reserved registers read as zero, as on the controller.
            _ => 0,
        })
    }

    /// The values of the CH530 points as the gateway's profile decodes the input registers
    /// (signed tenths of °C, kPa, a 32-bit starts counter, flags), by point name: what the
    /// in-process harnesses feed the server's code.
    pub fn profile_values(&self) -> Vec<(&'static str, f64)> {
        let r = self.input_registers(0, 20).expect("the reference map has registers 0 to 19");
        let tenths = |a: usize| f64::from(r[a] as i16) / 10.0;
        vec![
            ("active_setpoint", tenths(1)),
            ("capacity_rla", f64::from(r[2])),
            ("evap_leaving_temp", tenths(4)),
            ("evap_entering_temp", tenths(5)),
            ("cond_entering_temp", tenths(6)),
            ("cond_leaving_temp", tenths(7)),
            ("running", f64::from(r[8] & 1)),
            ("diagnostic_active", f64::from((r[8] >> 1) & 1)),
            ("flow_proven", f64::from((r[8] >> 3) & 1)),
            ("evap_refrig_pressure", f64::from(r[10])),
            ("evap_refrig_temp", tenths(11)),
            ("cond_refrig_pressure", f64::from(r[12])),
            ("cond_refrig_temp", tenths(13)),
            ("compressor_starts", f64::from(u32::from(r[14]) << 16 | u32::from(r[15]))),
            ("diagnostic_code", f64::from(r[18])),
        ]
    }

    /// Reads `count` holding registers from `start`.
    pub fn holding_registers(&self, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        registers(start, count, 3, |address| match address {
            1 => tenths(self.setpoint),
            2 => self.current_limit,
            _ => 0,
        })
    }

    /// Reads `count` coils from `start`.
    pub fn coils(&self, start: u16, count: u16) -> Result<Vec<bool>, ExceptionCode> {
        check_range(start, count, 2)?;
        Ok((start..start + count).map(|address| address == 0 && self.enabled).collect())
    }

    /// Writes one holding register.
    pub fn write_holding(&mut self, address: u16, value: u16) -> Result<(), ExceptionCode> {
        match address {
            1 => {
                let celsius = f64::from(value as i16) / 10.0;
                if !(-5.0..=20.0).contains(&celsius) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                self.setpoint = celsius;
            }
            2 if (20..=100).contains(&value) => self.current_limit = value,
            2 => return Err(ExceptionCode::IllegalDataValue),
            _ => return Err(ExceptionCode::IllegalDataAddress),
        }
        Ok(())
    }

    /// Writes one coil.
    pub fn write_coil(&mut self, address: u16, value: bool) -> Result<(), ExceptionCode> {
        match address {
            0 => self.enabled = value,
            1 => {}
            _ => return Err(ExceptionCode::IllegalDataAddress),
        }
        Ok(())
    }
}

/// Input registers the simulator serves: the CH530's 19, then reserved ones, then a bank of 100
/// registers (protocol addresses 100 to 199) that benchmarks poll as "100 registers a device".
const INPUT_REGISTERS: u16 = 200;
/// First register of the benchmark bank.
pub const BENCH_BANK_START: u16 = 100;
/// Registers (protocol addresses 20 to 27) holding the model and serial as text, for string
/// points.
const MODEL_START: u16 = 20;
const MODEL_END: u16 = 28;

fn check_range(start: u16, count: u16, size: u16) -> Result<(), ExceptionCode> {
    if count == 0 || u32::from(start) + u32::from(count) > u32::from(size) {
        Err(ExceptionCode::IllegalDataAddress)
    } else {
        Ok(())
    }
}

fn registers(start: u16, count: u16, size: u16, read: impl Fn(u16) -> u16) -> Result<Vec<u16>, ExceptionCode> {
    check_range(start, count, size)?;
    Ok((start..start + count).map(read).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_chiller_holds_its_setpoint_and_moves_plausibly() {
        let mut chiller = Chiller::new(1, 14.0);
        assert!((chiller.supply - 7.0).abs() < 0.2, "supply {}", chiller.supply);
        assert!(chiller.ret > chiller.supply + 3.0);
        assert!(chiller.cond_out > chiller.cond_in);
        assert!(chiller.cond_sat > chiller.cond_out && chiller.evap_sat < chiller.supply);
        let hours = chiller.run_hours;
        for _ in 0..360 {
            chiller.step(10.0, 3.0, 0.0);
        }
        assert!(chiller.rla < 40.0, "night load is low: {}", chiller.rla);
        assert!((chiller.run_hours - hours - 1.0).abs() < 1e-6);
    }

    #[test]
    fn power_follows_load_and_lift() {
        // Design conditions draw the rated power.
        let design = compressor_power_kw(RATED_COOLING_KW, 4.0, 37.7);
        assert!((design - RATED_POWER_KW).abs() < 1.0, "{design} kW at design");
        // A kelvin of lift costs 1/lift more power at the same load.
        let fouled = compressor_power_kw(RATED_COOLING_KW, 4.0, 38.7);
        assert!((fouled / design - 1.0 - 1.0 / 33.7).abs() < 1e-9);

        let mut clean = Chiller::new(1, 14.0);
        let mut worn = clean.clone();
        worn.wear.condenser_fouling_k_per_day = 2.0;
        for _ in 0..8640 {
            clean.step(10.0, 14.0, 0.0);
            worn.step(10.0, 14.0, 0.0);
        }
        assert!((worn.worn_cond_k - 2.0).abs() < 1e-9, "a day of wear: {}", worn.worn_cond_k);
        assert!((worn.cond_sat - clean.cond_sat - 2.0).abs() < 1e-6);
        let extra = worn.power_kw / clean.power_kw - 1.0;
        assert!((0.05..0.08).contains(&extra), "2 K of condenser fouling costs {extra}");
        assert!((clean.rla - 100.0 * clean.power_kw / RATED_POWER_KW).abs() < 1e-9, "%RLA follows the power");
        assert!((clean.energy_kwh - 24.0 * clean.power_kw).abs() < 1.0, "a day at steady power: {}", clean.energy_kwh);
    }

    #[test]
    fn scenarios_change_what_the_registers_say() {
        let mut chiller = Chiller::new(1, 14.0);
        chiller.set_scenario(Scenario::CannotHold);
        for _ in 0..60 {
            chiller.step(10.0, 14.0, 0.0);
        }
        let supply = f64::from(chiller.input_registers(4, 1).expect("readable")[0] as i16) / 10.0;
        assert!(supply > 10.0, "supply {supply} drifts above the 7 °C setpoint");

        chiller.set_scenario(Scenario::Trip { code: 47 });
        chiller.step(1.0, 14.0, 0.0);
        let registers = chiller.input_registers(8, 11).expect("readable");
        assert_eq!(registers[0] & 0b11, 0b10, "stopped, alarm bit set");
        assert_eq!(registers[10], 47);

        chiller.set_scenario(Scenario::Normal);
        let starts = chiller.starts;
        chiller.step(1.0, 14.0, 0.0);
        assert!(chiller.running);
        assert_eq!(chiller.starts, starts + 1);
    }

    #[test]
    fn writes_take_effect_and_bad_writes_are_refused() {
        let mut chiller = Chiller::new(1, 14.0);
        chiller.write_holding(1, 55).expect("5.5 °C is allowed");
        assert_eq!(chiller.input_registers(1, 1).expect("readable"), vec![55]);
        assert_eq!(chiller.write_holding(1, (-100i16) as u16), Err(ExceptionCode::IllegalDataValue));
        assert_eq!(chiller.input_registers(200, 1), Err(ExceptionCode::IllegalDataAddress));
        chiller.write_coil(0, false).expect("stop");
        chiller.step(1.0, 14.0, 0.0);
        assert!(!chiller.running);
    }

    /// What a fault rule sees: the input registers, decoded as the gateway's profile does.
    #[derive(Debug)]
    struct Readings {
        supply: f64,
        ret: f64,
        cond_in: f64,
        cond_out: f64,
        running: bool,
        alarm: bool,
        flow_proven: bool,
        evap_pressure: f64,
        evap_sat: f64,
        cond_pressure: f64,
        cond_sat: f64,
        starts: u32,
    }

    impl Readings {
        fn of(chiller: &Chiller) -> Self {
            let r = chiller.input_registers(0, 19).expect("readable");
            let celsius = |address: usize| f64::from(r[address] as i16) / 10.0;
            Readings {
                supply: celsius(4),
                ret: celsius(5),
                cond_in: celsius(6),
                cond_out: celsius(7),
                running: r[8] & 1 != 0,
                alarm: r[8] & 0b10 != 0,
                flow_proven: r[8] & 0b1000 != 0,
                evap_pressure: f64::from(r[10]),
                evap_sat: celsius(11),
                cond_pressure: f64::from(r[12]),
                cond_sat: celsius(13),
                starts: (u32::from(r[14]) << 16) | u32::from(r[15]),
            }
        }

        fn evap_approach(&self) -> f64 {
            self.supply - self.evap_sat
        }

        fn cond_approach(&self) -> f64 {
            self.cond_sat - self.cond_out
        }

        fn delta_t(&self) -> f64 {
            self.ret - self.supply
        }

        /// Why these readings are not those of a healthy running chiller, if they are not.
        fn unhealthy(&self, setpoint: f64) -> Option<String> {
            let problems = [
                (!self.running, "not running"),
                (self.alarm, "alarm bit set"),
                (!self.flow_proven, "flow not proven"),
                ((self.supply - setpoint).abs() > 1.5, "leaving water off setpoint"),
                (self.evap_approach() >= 4.0, "evaporator approach"),
                (self.cond_approach() >= 4.0, "condenser approach"),
                (self.cond_pressure >= 1100.0, "condenser pressure"),
                (self.evap_sat <= 1.0, "evaporator saturation"),
                (self.delta_t() >= 8.0 || self.delta_t() <= 0.0, "chilled-water ΔT"),
            ];
            let found: Vec<_> = problems.iter().filter(|(bad, _)| *bad).map(|(_, what)| *what).collect();
            (!found.is_empty()).then(|| format!("{}: {self:?}", found.join(", ")))
        }
    }

    /// Runs `chiller` for `seconds` at `hour` in 10 s steps without noise.
    fn run(chiller: &mut Chiller, seconds: f64, hour: f64) -> Readings {
        for _ in 0..(seconds / 10.0).round() as usize {
            chiller.step(10.0, hour, 0.0);
        }
        Readings::of(chiller)
    }

    /// Peak load (mid-afternoon) and low load (night), the two ends of the daily curve.
    const HOURS: [f64; 2] = [14.5, 3.0];

    /// A healthy chiller switched to `scenario` at `hour`.
    fn faulted(scenario: Scenario, hour: f64) -> (Chiller, Readings) {
        let mut chiller = Chiller::new(1, hour);
        let before = Readings::of(&chiller);
        assert_eq!(before.unhealthy(7.0), None, "healthy before {scenario:?} at {hour} h");
        chiller.set_scenario(scenario);
        (chiller, before)
    }

    /// Back to `normal`, the unit is healthy again within 10 minutes and stays so.
    fn recovers(mut chiller: Chiller, hour: f64) {
        chiller.set_scenario(Scenario::Normal);
        run(&mut chiller, 600.0, hour);
        for _ in 0..60 {
            let now = run(&mut chiller, 10.0, hour);
            assert_eq!(now.unhealthy(7.0), None, "healthy again after normal at {hour} h");
        }
    }

    #[test]
    fn scenarios_are_named_as_the_control_interface_takes_them() {
        for (json, scenario) in [
            (r#"{"scenario":"normal"}"#, Scenario::Normal),
            (r#"{"scenario":"cannot_hold"}"#, Scenario::CannotHold),
            (r#"{"scenario":"trip","code":47}"#, Scenario::Trip { code: 47 }),
            (r#"{"scenario":"sensor_stuck"}"#, Scenario::SensorStuck),
            (r#"{"scenario":"offline"}"#, Scenario::Offline),
            (r#"{"scenario":"freeze_risk"}"#, Scenario::FreezeRisk),
            (r#"{"scenario":"high_head_pressure"}"#, Scenario::HighHeadPressure),
            (r#"{"scenario":"condenser_fouling"}"#, Scenario::CondenserFouling),
            (r#"{"scenario":"evaporator_fouling"}"#, Scenario::EvaporatorFouling),
            (r#"{"scenario":"low_flow"}"#, Scenario::LowFlow),
            (r#"{"scenario":"short_cycling"}"#, Scenario::ShortCycling),
            (r#"{"scenario":"sensor_open"}"#, Scenario::SensorOpen),
        ] {
            assert_eq!(serde_json::from_str::<Scenario>(json).expect("parses"), scenario);
            assert_eq!(serde_json::to_string(&scenario).expect("serializes"), json);
        }
    }

    #[test]
    fn freeze_risk_overcools_the_water_and_the_evaporator() {
        for hour in HOURS {
            let (mut chiller, _) = faulted(Scenario::FreezeRisk, hour);
            let now = run(&mut chiller, 180.0, hour);
            assert!(now.running && now.flow_proven && !now.alarm, "{now:?}");
            assert!(now.supply < 2.0 && now.evap_sat < -1.5, "falling after 3 minutes at {hour} h: {now:?}");
            let now = run(&mut chiller, 120.0, hour);
            assert!((now.supply - 1.0).abs() <= 0.2, "leaving water near 1 °C after 5 minutes at {hour} h: {now:?}");
            assert!((now.evap_sat + 2.5).abs() <= 0.3, "saturation near -2.5 °C at {hour} h: {now:?}");
            assert!(now.evap_pressure < 280.0, "pressure follows the saturation: {now:?}");
            recovers(chiller, hour);
        }
    }

    #[test]
    fn high_head_pressure_heats_the_condenser_water_and_raises_the_pressure() {
        for hour in HOURS {
            let (mut chiller, _) = faulted(Scenario::HighHeadPressure, hour);
            let now = run(&mut chiller, 180.0, hour);
            assert!(now.running && !now.alarm, "{now:?}");
            assert!(now.cond_in > 35.0 && now.cond_pressure > 1150.0, "rising after 3 minutes at {hour} h: {now:?}");
            let now = run(&mut chiller, 120.0, hour);
            assert!(
                now.cond_in >= 37.0 && now.cond_out >= 41.5,
                "condenser water after 5 minutes at {hour} h: {now:?}"
            );
            assert!(now.cond_sat >= 47.5 && now.cond_pressure >= 1250.0, "head after 5 minutes at {hour} h: {now:?}");
            assert!((now.supply - 7.0).abs() < 0.2, "the chilled water is still held: {now:?}");
            recovers(chiller, hour);
        }
    }

    #[test]
    fn condenser_fouling_raises_the_condenser_approach_a_kelvin_a_minute() {
        for hour in HOURS {
            let (mut chiller, before) = faulted(Scenario::CondenserFouling, hour);
            let now = run(&mut chiller, 180.0, hour);
            let rise = now.cond_approach() - before.cond_approach();
            assert!((2.5..=3.5).contains(&rise), "3 minutes: {rise} K at {hour} h: {now:?}");
            let now = run(&mut chiller, 420.0, hour);
            let rise = now.cond_approach() - before.cond_approach();
            assert!((7.5..=8.5).contains(&rise), "capped at 8 K: {rise} K at {hour} h: {now:?}");
            assert!((now.cond_in - before.cond_in).abs() < 0.2 && (now.cond_out - before.cond_out).abs() < 0.2);
            assert!((now.evap_approach() - before.evap_approach()).abs() < 0.2 && (now.supply - 7.0).abs() < 0.2);
            assert!(now.running && now.flow_proven && !now.alarm);
            recovers(chiller, hour);
        }
    }

    #[test]
    fn evaporator_fouling_raises_the_evaporator_approach_while_the_setpoint_holds() {
        for hour in HOURS {
            let (mut chiller, before) = faulted(Scenario::EvaporatorFouling, hour);
            let now = run(&mut chiller, 180.0, hour);
            let rise = now.evap_approach() - before.evap_approach();
            assert!((2.5..=3.5).contains(&rise), "3 minutes: {rise} K at {hour} h: {now:?}");
            let now = run(&mut chiller, 420.0, hour);
            let rise = now.evap_approach() - before.evap_approach();
            assert!((7.5..=8.5).contains(&rise), "capped at 8 K: {rise} K at {hour} h: {now:?}");
            assert!((now.supply - 7.0).abs() < 0.2, "the setpoint holds: {now:?}");
            assert!((now.cond_approach() - before.cond_approach()).abs() < 0.2);
            assert!(now.running && now.flow_proven && !now.alarm);
            recovers(chiller, hour);
        }
    }

    #[test]
    fn low_flow_clears_the_flow_bit_and_widens_the_delta_t() {
        for hour in HOURS {
            let (mut chiller, before) = faulted(Scenario::LowFlow, hour);
            assert!(before.flow_proven, "flow is proven in normal operation");
            let now = run(&mut chiller, 10.0, hour);
            assert!(!now.flow_proven && now.running && !now.alarm, "still running without flow: {now:?}");
            let now = run(&mut chiller, 170.0, hour);
            assert!(now.delta_t() >= 10.0, "ΔT after 3 minutes at {hour} h: {now:?}");
            let now = run(&mut chiller, 120.0, hour);
            assert!(now.delta_t() >= 11.5 && now.running, "ΔT after 5 minutes at {hour} h: {now:?}");
            assert!((now.supply - 7.0).abs() < 0.2);
            recovers(chiller, hour);
        }
    }

    #[test]
    fn short_cycling_starts_and_stops_every_90_seconds() {
        for hour in HOURS {
            let (mut chiller, before) = faulted(Scenario::ShortCycling, hour);
            let (mut was_running, mut edges, mut since, mut runs, mut stops) = (true, 0, 0.0, vec![], vec![]);
            for _ in 0..180 {
                let now = run(&mut chiller, 10.0, hour);
                since += 10.0;
                if now.running != was_running {
                    if now.running {
                        edges += 1;
                        stops.push(since);
                    } else {
                        runs.push(since);
                    }
                    since = 0.0;
                    was_running = now.running;
                }
                assert!(!now.alarm, "no diagnostic: it restarts on its own");
            }
            let now = Readings::of(&chiller);
            assert_eq!(edges, 10, "30 minutes of 3-minute cycles at {hour} h");
            assert_eq!(now.starts - before.starts, edges, "every start counted");
            assert!(runs.iter().chain(&stops).all(|&s| s == 90.0), "runs {runs:?}, stops {stops:?}");
            recovers(chiller, hour);
        }
    }

    #[test]
    fn an_open_leaving_water_sensor_reads_minus_50() {
        let (mut chiller, before) = faulted(Scenario::SensorOpen, 14.5);
        let now = run(&mut chiller, 60.0, 14.5);
        assert_eq!(chiller.input_registers(4, 1).expect("readable"), vec![(-500i16) as u16]);
        assert_eq!(now.supply, -50.0);
        assert!((now.ret - before.ret).abs() < 0.2 && (now.evap_sat - before.evap_sat).abs() < 0.2);
        assert!(now.running && now.flow_proven && !now.alarm && (chiller.supply - 7.0).abs() < 0.2);
        recovers(chiller, 14.5);
    }

    #[test]
    fn a_normal_chiller_stays_healthy_for_a_week_with_the_clocks_noise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start_hour = 6.0;
        let mut chiller = Chiller::new(1, start_hour);
        let mut clock_s = start_hour * 3600.0;
        let mut starts_an_hour_ago = Readings::of(&chiller).starts;
        let mut worst = [0.0f64; 5];
        for step in 1..=7 * 24 * 360 {
            clock_s = (clock_s + 10.0) % 86_400.0;
            let noise = (rng.random::<f64>() - 0.5) * NOISE_SPAN_K;
            chiller.step(10.0, clock_s / 3600.0, noise);
            let now = Readings::of(&chiller);
            if let Some(problem) = now.unhealthy(chiller.setpoint) {
                panic!("after {} s: {problem}", step * 10);
            }
            for (worst, value) in worst.iter_mut().zip([
                (now.supply - chiller.setpoint).abs(),
                now.evap_approach(),
                now.cond_approach(),
                now.cond_pressure,
                now.delta_t(),
            ]) {
                *worst = worst.max(value);
            }
            if step % 360 == 0 {
                assert!(now.starts - starts_an_hour_ago <= 1, "at most one start an hour");
                starts_an_hour_ago = now.starts;
            }
        }
        // Well inside the bands, not just inside them.
        let [deviation, evap_approach, cond_approach, cond_pressure, delta_t] = worst;
        // The control's hunting (0.15 K) plus a reading's rounding to 0.1 K.
        assert!(deviation <= 0.25, "leaving water within {deviation} K of setpoint");
        assert!(evap_approach < 3.1 && cond_approach < 2.8, "approaches {evap_approach} and {cond_approach} K");
        assert!(cond_pressure < 1000.0 && delta_t < 5.0, "{cond_pressure} kPa, ΔT {delta_t} K");
    }

    #[test]
    fn a_start_after_a_long_stop_pulls_the_warm_loop_down_at_full_capacity() {
        let mut chiller = Chiller::new(1, 14.5);
        chiller.enabled = false;
        let stopped = run(&mut chiller, 600.0, 14.5);
        assert!(!stopped.running && stopped.supply > 10.5, "the loop warms in 10 minutes stopped: {stopped:?}");
        chiller.enabled = true;
        let started = run(&mut chiller, 180.0, 14.5);
        assert!(started.running && started.supply - 7.0 > 2.0, "still pulling down after 3 minutes: {started:?}");
        assert!(chiller.rla > 95.0, "at full capacity while it does: {}", chiller.rla);
        let settled = run(&mut chiller, 600.0, 14.5);
        assert_eq!(settled.unhealthy(7.0), None, "settled 13 minutes after the start");
    }

    #[test]
    fn a_quirky_controller_refuses_missing_registers_and_lays_out_its_status_word_its_own_way() {
        let mut chiller = Chiller::new(1, 14.5);
        chiller.quirks = Quirks { missing_input_registers: vec![18], status_word: StatusLayout::Tracer };
        assert_eq!(chiller.input_registers(1, 18), Err(ExceptionCode::IllegalDataAddress));
        assert!(chiller.input_registers(1, 17).is_ok());
        assert_eq!(chiller.input_registers(8, 1).expect("readable")[0] & 0b0110, 0b0110, "running and enabled");
    }

    #[test]
    fn refrigerant_pressures_match_r134a_tables() {
        assert!((r134a_pressure_kpa(10.0) - 415.0).abs() < 10.0);
        assert!((r134a_pressure_kpa(50.0) - 1318.0).abs() < 25.0);
    }
}
