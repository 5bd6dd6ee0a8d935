//! A water-cooled chiller's behaviour and its Modbus register map (Trane Tracer CH530 style).
//!
//! The register map is written from the controller's public point list independently of the
//! gateway's profile file, so a mistake in either shows up in the end-to-end tests.
//! Protocol (zero-based) addresses: coil 0 enable; holding 1 chilled-water setpoint (0.1 °C),
//! 2 current limit (%RLA); input 1 active setpoint, 2 %RLA, 4 evaporator leaving, 5 evaporator
//! entering, 6 condenser entering, 7 condenser leaving (0.1 °C), 8 status word (bit 0 running,
//! bit 1 alarm, bit 2 local), 10 evaporator pressure (kPa), 11 evaporator saturation (0.1 °C),
//! 12 condenser pressure, 13 condenser saturation, 14-15 starts (u32), 16-17 run hours (u32),
//! 18 diagnostic code.

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
}

/// The state of one chiller.
#[derive(Debug, Clone, Serialize)]
pub struct Chiller {
    /// Modbus unit id.
    pub unit_id: u8,
    /// Remote enable command (coil 1).
    pub enabled: bool,
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
}

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

fn tenths(celsius: f64) -> u16 {
    (celsius * 10.0).round() as i16 as u16
}

impl Chiller {
    /// A running chiller at steady state for `hour` of the day.
    pub fn new(unit_id: u8, hour: f64) -> Self {
        let mut chiller = Chiller {
            unit_id,
            enabled: true,
            running: true,
            setpoint: 7.0,
            current_limit: 100,
            scenario: Scenario::Normal,
            load: daily_load(hour),
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
        };
        // Settle into the steady state for the hour.
        for _ in 0..600 {
            chiller.step(10.0, hour, 0.0);
        }
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
        self.scenario = scenario;
    }

    /// Advances the physics by `dt` seconds at `hour` of the day; `noise` is a small random
    /// disturbance in kelvin.
    pub fn step(&mut self, dt: f64, hour: f64, noise: f64) {
        self.load = daily_load(hour);
        let tripped = matches!(self.scenario, Scenario::Trip { .. });
        if self.enabled && !tripped && !self.running {
            self.running = true;
            self.starts += 1;
        }
        if !self.enabled || tripped {
            self.running = false;
        }
        if self.running {
            let (target_supply, rla) = match self.scenario {
                // Short of capacity (fouled, low charge): flat out and still too warm.
                Scenario::CannotHold => (self.setpoint + 3.0 + 3.0 * self.load, 100.0),
                _ => (self.setpoint, (self.load * 100.0).min(f64::from(self.current_limit))),
            };
            approach(&mut self.supply, target_supply + noise, dt, 60.0);
            approach(&mut self.rla, rla, dt, 20.0);
            approach(&mut self.ret, self.supply + 5.0 * self.load, dt, 90.0);
            approach(&mut self.cond_in, 27.0 + 3.0 * self.load, dt, 300.0);
            approach(&mut self.cond_out, self.cond_in + 5.0 * self.load, dt, 60.0);
            self.evap_sat = self.supply - 1.5 - 1.5 * self.load;
            self.cond_sat = self.cond_out + 1.2 + 1.5 * self.load;
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
    }

    fn status_word(&self) -> u16 {
        u16::from(self.running) | (u16::from(self.diagnostic != 0) << 1)
    }

    /// Reads `count` input registers from `start`.
    pub fn input_registers(&self, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
        let supply = self.stuck_supply.unwrap_or(self.supply);
        let run_hours = self.run_hours as u32;
        registers(start, count, INPUT_REGISTERS, |address| match address {
            1 => tenths(self.setpoint),
            2 => self.rla.round() as u16,
            4 => tenths(supply),
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

    #[test]
    fn refrigerant_pressures_match_r134a_tables() {
        assert!((r134a_pressure_kpa(10.0) - 415.0).abs() < 10.0);
        assert!((r134a_pressure_kpa(50.0) - 1318.0).abs() < 25.0);
    }
}
