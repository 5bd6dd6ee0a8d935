//! A session: one run of the gateway with one configuration, from a start or a reload to the
//! next. Its points are numbered here, once: each point's alias is its place among all the
//! devices' points, in order. The birth announces the numbering, the pollers tag their samples
//! with it, and the encoder looks each reading's decimals up by it.

use std::{collections::BTreeMap, sync::Arc};

use chillcloud_proto::{Birth, Device, PROTOCOL_VERSION, PointInfo};

use crate::{
    config::{Config, Transport},
    now_ms,
    poll::DevicePoller,
    status::StatusBoard,
    transport::SharedBus,
};

/// A session's number and its points' numbering.
pub struct Session {
    /// The number the birth and every data message carry.
    pub number: u64,
    /// The birth's devices, in configuration order, without their attributes (read from the
    /// devices when the session starts).
    devices: Vec<Device>,
    /// Each point's decimals, by alias.
    decimals: Vec<i32>,
    /// The server-held configuration version it runs (0: the file's own).
    config_version: u32,
}

impl Session {
    /// Session `number` of `config`.
    pub fn new(config: &Config, number: u64) -> Self {
        let mut decimals = Vec::new();
        let devices = (config.devices.iter())
            .map(|device| Device {
                id: device.id.clone(),
                attributes: BTreeMap::new(),
                profile: device.profile.clone(),
                family: device.family.clone(),
                display_name: device.display_name.clone(),
                model: device.model.clone(),
                points: (device.points.iter())
                    .map(|p| {
                        decimals.push(p.decimals);
                        PointInfo {
                            alias: decimals.len() as u32 - 1,
                            name: p.name.clone(),
                            unit: p.unit.clone(),
                            decimals: p.decimals,
                            writable: p.write.is_some(),
                            min: p.write.map(|w| w.min),
                            max: p.write.map(|w| w.max),
                            step: p.write.map(|w| w.step),
                        }
                    })
                    .collect(),
            })
            .collect();
        Self { number, devices, decimals, config_version: config.site_version }
    }

    /// The birth announcing the session, with each device's `attributes` (in device order;
    /// missing ones count as none).
    pub fn birth(&self, attributes: &[BTreeMap<String, String>]) -> Birth {
        let devices = (self.devices.iter().enumerate())
            .map(|(i, device)| Device { attributes: attributes.get(i).cloned().unwrap_or_default(), ..device.clone() })
            .collect();
        Birth {
            protocol_version: PROTOCOL_VERSION,
            session: self.number,
            software_version: env!("CARGO_PKG_VERSION").into(),
            time_ms: now_ms(),
            devices,
            config_version: self.config_version,
        }
    }

    /// Pollers for every device of `config` (the configuration the session was made from),
    /// reporting their health to `status`; devices on one RTU line share it.
    pub fn pollers(&self, config: &Config, status: &StatusBoard) -> Vec<DevicePoller> {
        let buses: Vec<Arc<SharedBus>> =
            config.buses.iter().cloned().map(|bus| Arc::new(SharedBus::new(bus))).collect();
        (config.devices.iter().zip(&self.devices))
            .map(|(device, announced)| {
                let bus = match device.transport {
                    Transport::Bus(index) => Some(buses[index].clone()),
                    Transport::Tcp { .. } => None,
                };
                // A device without points (the configuration refuses one) would tag nothing.
                let first_alias = announced.points.first().map_or(0, |p| p.alias);
                DevicePoller::new(device.clone(), first_alias, bus, status.clone())
            })
            .collect()
    }

    /// Each point's decimals, by alias: how its readings are encoded.
    pub fn decimals(&self) -> &[i32] {
        &self.decimals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_number_every_devices_points_in_order_and_index_their_decimals() {
        let device =
            |id: &str| format!("[[devices]]\nid = \"{id}\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\n");
        let config = crate::test_config(&(device("chiller-1") + &device("chiller-2")));
        let session = Session::new(&config, 7);
        let birth = session.birth(&[BTreeMap::from([("model".into(), "RTHD".into())])]);
        assert_eq!(birth.session, 7);
        assert_eq!(birth.devices[0].attributes.get("model").map(String::as_str), Some("RTHD"));
        assert!(birth.devices[1].attributes.is_empty(), "missing attributes count as none");
        let points: Vec<&PointInfo> = birth.devices.iter().flat_map(|d| &d.points).collect();
        let aliases: Vec<u32> = points.iter().map(|p| p.alias).collect();
        assert_eq!(aliases, (0..points.len() as u32).collect::<Vec<_>>());
        let decimals: Vec<i32> = points.iter().map(|p| p.decimals).collect();
        assert_eq!(session.decimals(), decimals);
        assert_eq!(session.pollers(&config, &StatusBoard::default()).len(), 2);
    }
}
