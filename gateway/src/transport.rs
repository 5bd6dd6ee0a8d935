//! Reaching a device over Modbus: its own TCP connection, or an RTU line it shares with other
//! devices (one request on the line at a time), with the timeouts, retries and reconnects that
//! keep a late answer from ever being taken for the next request's.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpStream, lookup_host},
    sync::Mutex,
    time::timeout,
};
use tokio_modbus::{
    client::{Context, Reader, Writer, rtu, tcp},
    slave::{Slave, SlaveContext},
};
use tracing::{debug, info};

use crate::{
    config::{BusConfig, BusEndpoint, DeviceConfig, Parity, Transport},
    modbus::{Payload, ReadBlock, RegisterKind},
    points::PointConfig,
};

/// Why a request to the device failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No answer in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection or the line failed mid-request, or the answer was malformed.
    #[error("connection failed: {0}")]
    Transport(#[from] tokio_modbus::Error),
    /// The device answered, refusing the request.
    #[error("device answered with exception {0}")]
    Exception(tokio_modbus::ExceptionCode),
    /// The device (or the serial device server) could not be reached.
    #[error("cannot resolve or connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// Not sent, since the device did not answer an earlier request of the same poll.
    #[error("skipped: an earlier request of this poll found the device unreachable")]
    Skipped,
}

/// An RTU line shared by the devices on it. Holding the lock is owning the line: one request
/// on it at a time, and the inter-frame silence kept before the next.
pub struct SharedBus {
    config: BusConfig,
    line: Mutex<Option<Context>>,
}

impl SharedBus {
    /// A line, opened on first use.
    pub fn new(config: BusConfig) -> Self {
        Self { config, line: Mutex::new(None) }
    }

    pub(crate) async fn open(&self, wait: Duration) -> Result<Context, RequestError> {
        match &self.config.endpoint {
            BusEndpoint::Serial { path, baud_rate, parity, data_bits, stop_bits } => {
                let builder = tokio_serial::new(path.to_string_lossy(), *baud_rate)
                    .parity(match parity {
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                        Parity::None => tokio_serial::Parity::None,
                    })
                    .data_bits(if *data_bits == 7 {
                        tokio_serial::DataBits::Seven
                    } else {
                        tokio_serial::DataBits::Eight
                    })
                    .stop_bits(if *stop_bits == 2 { tokio_serial::StopBits::Two } else { tokio_serial::StopBits::One });
                let stream = tokio_serial::SerialStream::open(&builder)
                    .map_err(|e| RequestError::Connect(path.display().to_string(), e.into()))?;
                info!(bus = %self.config.id, path = %path.display(), "serial line opened");
                Ok(rtu::attach(stream))
            }
            BusEndpoint::RtuOverTcp { address } => {
                let socket = resolve(address).await.map_err(|e| RequestError::Connect(address.clone(), e))?;
                let stream = timeout(wait, TcpStream::connect(socket))
                    .await
                    .map_err(|_| RequestError::Timeout(wait))?
                    .map_err(|e| RequestError::Connect(address.clone(), e))?;
                info!(bus = %self.config.id, %address, "connected to serial device server");
                Ok(rtu::attach(stream))
            }
        }
    }
}

/// How a poller reaches its device.
pub(crate) enum Link {
    /// Its own Modbus TCP connection, opened on first use.
    Tcp(Option<Context>),
    /// A line shared with other devices.
    Bus(Arc<SharedBus>),
}

/// One Modbus request.
#[derive(Clone, Copy)]
enum Operation<'a> {
    Read(&'a ReadBlock),
    Write { kind: RegisterKind, address: u16, payload: &'a Payload, multiple: bool },
}

impl Link {
    /// The link of a device on `bus`, or with its own TCP connection (opened on first use).
    pub(crate) fn new(bus: Option<Arc<SharedBus>>) -> Self {
        match bus {
            Some(bus) => Link::Bus(bus),
            None => Link::Tcp(None),
        }
    }

    /// Reads `block`, repeating a request that got no answer up to the device's `retries` times. An
    /// exception is the device's answer and is not repeated.
    pub(crate) async fn read(&mut self, device: &DeviceConfig, block: &ReadBlock) -> Result<Vec<u16>, RequestError> {
        let mut attempt = 0;
        loop {
            match self.request(device, Operation::Read(block)).await {
                Err(error) if !matches!(error, RequestError::Exception(_)) && attempt < device.retries => {
                    debug!(device = %device.id, %error, attempt, "request failed; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Writes `payload` to `point` of `device`, once: a write is never repeated on its own, since
    /// one that got no answer may still have been applied.
    pub(crate) async fn write(
        &mut self,
        device: &DeviceConfig,
        point: &PointConfig,
        payload: &Payload,
    ) -> Result<(), RequestError> {
        let multiple = point.write.is_some_and(|w| w.multiple);
        let operation = Operation::Write { kind: point.kind, address: point.address, payload, multiple };
        self.request(device, operation).await.map(drop)
    }

    /// Sends one request over the link (connecting, or taking the shared line, first); a read's
    /// answer is its words, a write's is empty.
    async fn request(&mut self, device: &DeviceConfig, operation: Operation<'_>) -> Result<Vec<u16>, RequestError> {
        let wait = device.timeout;
        match self {
            Link::Tcp(connection) => {
                if connection.is_none() {
                    let Transport::Tcp { host, port } = &device.transport else {
                        unreachable!("a device without a bus has a TCP transport")
                    };
                    let address = format!("{host}:{port}");
                    let socket = resolve(&address).await.map_err(|e| RequestError::Connect(address.clone(), e))?;
                    let connect = tcp::connect_slave(socket, Slave(device.unit_id));
                    let context = timeout(wait, connect)
                        .await
                        .map_err(|_| RequestError::Timeout(wait))?
                        .map_err(|e| RequestError::Connect(address.clone(), e))?;
                    info!(device = %device.id, %address, "connected");
                    *connection = Some(context);
                }
                let Some(context) = connection.as_mut() else { unreachable!("connected above") };
                let result = perform(context, operation, wait).await;
                if matches!(result, Err(RequestError::Timeout(_) | RequestError::Transport(_))) {
                    // The connection is in an unknown state (a late answer may still come); start
                    // afresh next time.
                    *connection = None;
                }
                result
            }
            Link::Bus(bus) => {
                let mut line = bus.line.lock().await;
                if line.is_none() {
                    *line = Some(bus.open(wait).await?);
                }
                let Some(context) = line.as_mut() else { unreachable!("opened above") };
                context.set_slave(Slave(device.unit_id));
                let result = perform(context, operation, wait).await;
                if matches!(result, Err(RequestError::Timeout(_) | RequestError::Transport(_))) {
                    // A late answer must not be taken for the next request's: let the line go
                    // quiet for another timeout, then reopen it (discarding whatever arrived).
                    tokio::time::sleep(wait).await;
                    *line = None;
                }
                // The line stays ours through the silence that ends the frame.
                tokio::time::sleep(bus.config.inter_frame_delay).await;
                result
            }
        }
    }
}

async fn perform(context: &mut Context, operation: Operation<'_>, wait: Duration) -> Result<Vec<u16>, RequestError> {
    match operation {
        Operation::Read(block) => read(context, block, wait).await,
        Operation::Write { kind, address, payload, multiple } => {
            debug_assert!(matches!(kind, RegisterKind::Coil | RegisterKind::Holding));
            let answer = match payload {
                Payload::Coil(on) if multiple => timeout(wait, context.write_multiple_coils(address, &[*on])).await,
                Payload::Coil(on) => timeout(wait, context.write_single_coil(address, *on)).await,
                Payload::Registers(words) if words.len() == 1 && !multiple => {
                    timeout(wait, context.write_single_register(address, words[0])).await
                }
                Payload::Registers(words) => timeout(wait, context.write_multiple_registers(address, words)).await,
            };
            answer.map_err(|_| RequestError::Timeout(wait))??.map_err(RequestError::Exception)?;
            Ok(Vec::new())
        }
    }
}

/// Sends one read request for `block` and waits up to `wait` for the answer.
pub(crate) async fn read(context: &mut Context, block: &ReadBlock, wait: Duration) -> Result<Vec<u16>, RequestError> {
    let (start, count) = (block.start, block.count);
    let words = match block.kind {
        RegisterKind::Coil => {
            timeout(wait, context.read_coils(start, count)).await.map(|r| r.map(|r| r.map(bits_to_words)))
        }
        RegisterKind::DiscreteInput => {
            timeout(wait, context.read_discrete_inputs(start, count)).await.map(|r| r.map(|r| r.map(bits_to_words)))
        }
        RegisterKind::Input => timeout(wait, context.read_input_registers(start, count)).await,
        RegisterKind::Holding => timeout(wait, context.read_holding_registers(start, count)).await,
    };
    let mut words = words.map_err(|_| RequestError::Timeout(wait))??.map_err(RequestError::Exception)?;
    // Bits come padded to whole bytes; registers must match exactly, or the answer belongs to
    // another request and would misalign every point.
    if block.kind.is_bit() && words.len() > usize::from(count) {
        words.truncate(usize::from(count));
    }
    if words.len() != usize::from(count) {
        return Err(RequestError::Transport(tokio_modbus::Error::Transport(std::io::Error::other(format!(
            "asked for {count} values, got {}",
            words.len()
        )))));
    }
    Ok(words)
}

fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}

pub(crate) async fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    lookup_host(address).await?.next().ok_or_else(|| std::io::Error::other("no address found"))
}
