//! Units (chillers): what the fleet is made of, their latest values and history, as viewers
//! see them.

pub mod api;
