//! `chillcloud-sim`: simulated water-cooled chillers speaking Modbus TCP, with an HTTP control
//! interface. Prints one JSON line with the bound addresses once it is serving.

use std::net::SocketAddr;

use chillcloud_tests::sim::{self, SharedPlant};
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Simulated chillers (Trane Tracer CH530 register map) over Modbus TCP")]
struct Cli {
    /// Modbus TCP listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5020")]
    modbus: SocketAddr,
    /// Control interface listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Number of chillers, answering as unit ids 1 to N.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=247))]
    units: u8,
    /// How much faster than real time the simulated clock runs.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Simulated hour of the day to start at (default: the current UTC hour).
    #[arg(long)]
    start_hour: Option<f64>,
    /// Also serve every unit over Modbus RTU on this serial device (for example one end of a
    /// `socat` pseudo-terminal pair).
    #[arg(long)]
    rtu: Option<std::path::PathBuf>,
    /// Baud rate of the RTU line.
    #[arg(long, default_value_t = 19_200)]
    baud_rate: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let start_hour = cli.start_hour.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (now.as_secs() % 86_400) as f64 / 3600.0
    });
    let plant = SharedPlant::new(cli.units, start_hour);
    let modbus = tokio::net::TcpListener::bind(cli.modbus).await?;
    let control = tokio::net::TcpListener::bind(cli.control).await?;
    println!(
        "{}",
        serde_json::json!({
            "modbus": modbus.local_addr()?.to_string(),
            "control": control.local_addr()?.to_string(),
            "units": (1..=cli.units).collect::<Vec<_>>(),
        })
    );
    let rtu_plant = plant.clone();
    let rtu = async move {
        match &cli.rtu {
            Some(path) => sim::serve_modbus_rtu(rtu_plant, path, cli.baud_rate).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = sim::serve_modbus(plant.clone(), modbus) => result?,
        result = rtu => result?,
        result = axum::serve(control, sim::control_router(plant.clone())) => result?,
        () = sim::run_clock(plant, cli.speed) => {}
    }
    Ok(())
}
