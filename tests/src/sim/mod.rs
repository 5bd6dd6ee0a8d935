//! The chiller simulator: several chillers behind one Modbus TCP server (one unit id each), a
//! clock that can run faster than real time, and an HTTP control interface for tests.

pub mod chiller;

use std::{
    future,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, put},
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_modbus::{
    ExceptionCode, Request, Response, SlaveRequest,
    server::tcp::{Server, accept_tcp_connection},
};

use chiller::NOISE_SPAN_K;
pub use chiller::{Chiller, Quirks, Scenario, StatusLayout, Wear};

/// Every simulated chiller, shared by the Modbus server, the clock and the control interface.
#[derive(Debug)]
pub struct Plant {
    chillers: Vec<Chiller>,
    /// Modbus requests answered or refused, for counting what a poller costs (benchmark P4).
    requests: u64,
    /// Write requests (function codes 5, 6, 15, 16) received, answered or refused: what a
    /// refused remote command must never cause.
    writes: u64,
    /// Simulated seconds since midnight.
    clock_s: f64,
}

/// A shared handle on the plant.
#[derive(Debug, Clone)]
pub struct SharedPlant(Arc<Mutex<Plant>>);

impl SharedPlant {
    /// `units` chillers with unit ids 1..=units, the clock starting at `start_hour`.
    pub fn new(units: u8, start_hour: f64) -> Self {
        let chillers = (1..=units).map(|id| Chiller::new(id, start_hour)).collect();
        Self(Arc::new(Mutex::new(Plant { chillers, requests: 0, writes: 0, clock_s: start_hour * 3600.0 })))
    }

    fn lock(&self) -> MutexGuard<'_, Plant> {
        // A panic while holding the lock leaves plain data behind; keep simulating.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the chiller with `unit_id`, if there is one.
    pub fn with_chiller<T>(&self, unit_id: u8, f: impl FnOnce(&mut Chiller) -> T) -> Option<T> {
        self.lock().chillers.iter_mut().find(|c| c.unit_id == unit_id).map(f)
    }

    /// Advances every chiller by `dt` simulated seconds.
    pub fn step(&self, dt: f64) {
        let mut plant = self.lock();
        plant.clock_s = (plant.clock_s + dt) % 86_400.0;
        let hour = plant.clock_s / 3600.0;
        for chiller in &mut plant.chillers {
            let noise = (rand::random::<f64>() - 0.5) * NOISE_SPAN_K;
            chiller.step(dt, hour, noise);
        }
    }

    /// Answers one request. On a serial line (`serial`), a unit id nobody has gets silence, as
    /// on a real RS-485 bus; over TCP it gets the exception a Modbus TCP gateway reports.
    fn handle(&self, request: SlaveRequest<'static>, serial: bool) -> Result<Option<Response>, ExceptionCode> {
        let unit_id = request.slave;
        {
            let mut plant = self.lock();
            plant.requests += 1;
            plant.writes += u64::from(matches!(
                request.request,
                Request::WriteSingleCoil(..)
                    | Request::WriteMultipleCoils(..)
                    | Request::WriteSingleRegister(..)
                    | Request::WriteMultipleRegisters(..)
            ));
        }
        let answer = self.with_chiller(unit_id, |chiller| {
            if chiller.scenario == Scenario::Offline {
                return Ok(None);
            }
            let response = match request.request {
                Request::ReadCoils(start, count) => Response::ReadCoils(chiller.coils(start, count)?),
                Request::ReadHoldingRegisters(start, count) => {
                    Response::ReadHoldingRegisters(chiller.holding_registers(start, count)?)
                }
                Request::ReadInputRegisters(start, count) => {
                    Response::ReadInputRegisters(chiller.input_registers(start, count)?)
                }
                Request::WriteSingleRegister(address, value) => {
                    chiller.write_holding(address, value)?;
                    Response::WriteSingleRegister(address, value)
                }
                Request::WriteMultipleRegisters(start, values) => {
                    for (i, value) in values.iter().enumerate() {
                        chiller.write_holding(start + i as u16, *value)?;
                    }
                    Response::WriteMultipleRegisters(start, values.len() as u16)
                }
                Request::WriteSingleCoil(address, value) => {
                    chiller.write_coil(address, value)?;
                    Response::WriteSingleCoil(address, value)
                }
                Request::WriteMultipleCoils(start, values) => {
                    for (i, value) in values.iter().enumerate() {
                        chiller.write_coil(start + i as u16, *value)?;
                    }
                    Response::WriteMultipleCoils(start, values.len() as u16)
                }
                _ => return Err(ExceptionCode::IllegalFunction),
            };
            Ok(Some(response))
        });
        match answer {
            Some(answer) => answer,
            None if serial => Ok(None),
            None => Err(ExceptionCode::GatewayTargetDevice),
        }
    }
}

struct ModbusService {
    plant: SharedPlant,
    serial: bool,
}

impl tokio_modbus::server::Service for ModbusService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        future::ready(self.plant.handle(request, self.serial))
    }
}

/// Serves the plant over Modbus TCP on `listener` until the task is dropped.
pub async fn serve_modbus(plant: SharedPlant, listener: TcpListener) -> std::io::Result<()> {
    let server = Server::new(listener);
    let new_service = |_address: SocketAddr| Ok(Some(ModbusService { plant: plant.clone(), serial: false }));
    let on_connected = |stream, address| async move { accept_tcp_connection(stream, address, new_service) };
    server.serve(&on_connected, |error| tracing::debug!(%error, "modbus connection ended")).await
}

/// Serves the plant over Modbus RTU on the serial device at `path` (for tests, one end of a
/// `socat` pseudo-terminal pair) until the task is dropped. Every unit answers on the one line.
pub async fn serve_modbus_rtu(plant: SharedPlant, path: &std::path::Path, baud_rate: u32) -> std::io::Result<()> {
    let serial = tokio_serial::SerialStream::open(&tokio_serial::new(path.to_string_lossy(), baud_rate))?;
    tokio_modbus::server::rtu::Server::new(serial).serve_forever(ModbusService { plant, serial: true }).await
}

/// Advances the plant every 100 ms of real time, `speed` times faster than real time.
pub async fn run_clock(plant: SharedPlant, speed: f64) {
    let period = Duration::from_millis(100);
    let mut ticks = tokio::time::interval(period);
    loop {
        ticks.tick().await;
        plant.step(period.as_secs_f64() * speed);
    }
}

/// Each unit's leaving-water temperature as its input register reads (so a stuck or open sensor
/// shows here too), in Prometheus' text format: the value benchmark P6 has Prometheus watch.
fn prometheus_text(plant: &SharedPlant) -> String {
    let mut text = String::from(
        "# HELP chiller_evap_leaving_celsius Evaporator leaving water temperature\n# TYPE chiller_evap_leaving_celsius gauge\n",
    );
    for chiller in &plant.lock().chillers {
        if let Ok(registers) = chiller.input_registers(4, 1) {
            let celsius = f64::from(registers[0] as i16) / 10.0;
            text.push_str(&format!("chiller_evap_leaving_celsius{{unit=\"{}\"}} {celsius}\n", chiller.unit_id));
        }
    }
    text
}

#[derive(Deserialize)]
struct SetpointBody {
    celsius: f64,
}

#[derive(Deserialize)]
struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize)]
struct LocalBody {
    local: bool,
}

#[derive(Deserialize)]
struct LoadScaleBody {
    load_scale: f64,
}

type ControlResult = Result<Json<Chiller>, (StatusCode, String)>;

fn unit<T>(plant: &SharedPlant, unit_id: u8, f: impl FnOnce(&mut Chiller) -> T) -> ControlResult {
    plant
        .with_chiller(unit_id, |chiller| {
            f(chiller);
            Json(chiller.clone())
        })
        .ok_or((StatusCode::NOT_FOUND, format!("no unit {unit_id}")))
}

/// The control interface: `GET /units`, `GET /units/{id}`, `GET /stats` (Modbus requests and writes),
/// `GET /metrics` (each unit's leaving-water reading for Prometheus, as its register shows it),
/// and `PUT /units/{id}/scenario`
/// (`{"scenario": "trip", "code": 47}`), `/setpoint` (`{"celsius": 6.5}`), `/enabled`, `/local`
/// (`{"local": true}`: the panel's local/remote switch), `/quirks` (`{"missing_input_registers":
/// [18], "status_word": "tracer"}`: how this controller differs from the reference map),
/// `/wear` (`{"condenser_fouling_k_per_day": 0.1}`: slow fouling) and `/load_scale`
/// (`{"load_scale": 0.5}`: a building that needs half the load curve). Each unit's state holds
/// its power, energy and cooling delivered (the remote doctor's ground truth).
///
/// Scenarios (see [`Scenario`]): `normal`, `cannot_hold`, `trip` (with `code`), `sensor_stuck`,
/// `offline`, and the faults `freeze_risk`, `high_head_pressure`, `condenser_fouling`,
/// `evaporator_fouling`, `low_flow`, `short_cycling`, `sensor_open`.
pub fn control_router(plant: SharedPlant) -> Router {
    Router::new()
        .route("/units", get(|State(plant): State<SharedPlant>| async move { Json(plant.lock().chillers.clone()) }))
        .route(
            "/stats",
            get(|State(plant): State<SharedPlant>| async move {
                let plant = plant.lock();
                Json(serde_json::json!({ "modbus_requests": plant.requests, "modbus_writes": plant.writes }))
            }),
        )
        .route("/metrics", get(|State(plant): State<SharedPlant>| async move { prometheus_text(&plant) }))
        .route(
            "/units/{unit_id}",
            get(|State(plant): State<SharedPlant>, Path(id): Path<u8>| async move { unit(&plant, id, |_| ()) }),
        )
        .route(
            "/units/{unit_id}/scenario",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(scenario): Json<Scenario>| async move {
                unit(&plant, id, |c| c.set_scenario(scenario))
            }),
        )
        .route(
            "/units/{unit_id}/setpoint",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(body): Json<SetpointBody>| async move {
                if !(-5.0..=20.0).contains(&body.celsius) {
                    return Err((StatusCode::UNPROCESSABLE_ENTITY, "setpoint must be between -5 and 20 °C".into()));
                }
                unit(&plant, id, |c| c.setpoint = body.celsius)
            }),
        )
        .route(
            "/units/{unit_id}/enabled",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(body): Json<EnabledBody>| async move {
                unit(&plant, id, |c| c.enabled = body.enabled)
            }),
        )
        .route(
            "/units/{unit_id}/quirks",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(quirks): Json<Quirks>| async move {
                unit(&plant, id, |c| c.quirks = quirks)
            }),
        )
        .route(
            "/units/{unit_id}/wear",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(wear): Json<Wear>| async move {
                if ![wear.condenser_fouling_k_per_day, wear.evaporator_fouling_k_per_day]
                    .iter()
                    .all(|k| (0.0..=5.0).contains(k))
                {
                    return Err((StatusCode::UNPROCESSABLE_ENTITY, "fouling must be 0 to 5 K a day".into()));
                }
                unit(&plant, id, |c| c.wear = wear)
            }),
        )
        .route(
            "/units/{unit_id}/load_scale",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(body): Json<LoadScaleBody>| async move {
                if !(0.1..=1.0).contains(&body.load_scale) {
                    return Err((StatusCode::UNPROCESSABLE_ENTITY, "load_scale must be 0.1 to 1".into()));
                }
                unit(&plant, id, |c| c.load_scale = body.load_scale)
            }),
        )
        .route(
            "/units/{unit_id}/local",
            put(|State(plant): State<SharedPlant>, Path(id): Path<u8>, Json(body): Json<LocalBody>| async move {
                unit(&plant, id, |c| c.local = body.local)
            }),
        )
        .with_state(plant)
}
