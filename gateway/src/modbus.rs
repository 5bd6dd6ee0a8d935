//! Modbus register maps: data types, how values are decoded from registers, and how a
//! device's points are merged into the fewest read requests.

use serde::Deserialize;

/// Most registers one read request may ask for (Modbus application protocol, 6.3 and 6.4).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Most coils or discrete inputs one read request may ask for (6.1 and 6.2).
pub const MAX_BITS_PER_READ: u16 = 2000;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Read-write bits (function codes 1, 5, 15).
    Coil,
    /// Read-only bits (function code 2).
    DiscreteInput,
    /// Read-only 16-bit registers (function code 4).
    Input,
    /// Read-write 16-bit registers (function codes 3, 6, 16).
    Holding,
}

impl RegisterKind {
    /// Whether the table holds single bits rather than 16-bit words.
    pub fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::DiscreteInput)
    }

    fn max_per_read(self) -> u16 {
        if self.is_bit() { MAX_BITS_PER_READ } else { MAX_REGISTERS_PER_READ }
    }
}

/// How the registers of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil or discrete input, read as 0 or 1.
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Two registers, IEEE 754 single precision.
    F32,
    /// Four registers, IEEE 754 double precision.
    F64,
    /// ASCII text, two characters a register, over the point's `length` registers. Read when a
    /// session starts and announced as a device attribute (model, serial number, firmware).
    String,
}

impl DataType {
    /// Whether the type is IEEE 754 floating point.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }

    /// How many registers (or bits, for [`DataType::Bool`]) the type spans.
    pub fn width(self) -> u16 {
        match self {
            // A string's width is its point's `length`.
            DataType::Bool | DataType::U16 | DataType::I16 | DataType::String => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

/// The order of the 16-bit words of a multi-register value. Bytes within a word are
/// big-endian, as Modbus defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant word first (the Modbus convention, "ABCD").
    #[default]
    Big,
    /// Least significant word first ("CDAB"), common on PLCs.
    Little,
}

/// The order of the two bytes within each 16-bit register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// High byte first, as Modbus defines.
    #[default]
    Big,
    /// Low byte first ("BADC" and "DCBA" layouts with the word order).
    Little,
}

/// Decodes the raw value of a register-table point from exactly `data_type.width()` words.
pub fn decode_words(words: &[u16], data_type: DataType, order: WordOrder, bytes: ByteOrder) -> f64 {
    // Assemble the words most significant first into one big-endian integer.
    let mut raw: u64 = 0;
    let ordered: Box<dyn Iterator<Item = &u16>> = match order {
        WordOrder::Big => Box::new(words.iter()),
        WordOrder::Little => Box::new(words.iter().rev()),
    };
    for word in ordered {
        let word = if bytes == ByteOrder::Little { word.swap_bytes() } else { *word };
        raw = (raw << 16) | u64::from(word);
    }
    match data_type {
        DataType::Bool => (raw != 0) as u8 as f64,
        DataType::U16 => raw as u16 as f64,
        DataType::I16 => raw as u16 as i16 as f64,
        DataType::U32 => raw as u32 as f64,
        DataType::I32 => raw as u32 as i32 as f64,
        DataType::U64 => raw as f64,
        DataType::I64 => raw as i64 as f64,
        DataType::F32 => f64::from(f32::from_bits(raw as u32)),
        DataType::F64 => f64::from_bits(raw),
        DataType::String => f64::NAN,
    }
}

/// The raw register value of engineering value `value` on a point with `scale` and `offset`.
pub fn raw_of(value: f64, scale: f64, offset: f64) -> f64 {
    (value - offset) / scale
}

/// Encodes a raw value into the `data_type.width()` words [`decode_words`] reads it back from.
/// Integer types take the nearest whole number, refused outside the type's range; floats are
/// written as IEEE 754 (single precision rounds).
pub fn encode_words(raw: f64, data_type: DataType, order: WordOrder, bytes: ByteOrder) -> Result<Vec<u16>, String> {
    let whole = raw.round();
    let in_range = |low: f64, high: f64| {
        if raw.is_finite() && (low..=high).contains(&whole) {
            Ok(whole)
        } else {
            Err(format!("raw value {raw} is outside {low} to {high}"))
        }
    };
    // The value as one big-endian integer of the type's width.
    let bits: u64 = match data_type {
        DataType::Bool | DataType::String => return Err(format!("{data_type:?} is not written as registers")),
        DataType::U16 => in_range(0.0, f64::from(u16::MAX))? as u64,
        DataType::I16 => in_range(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16 as u64,
        DataType::U32 => in_range(0.0, f64::from(u32::MAX))? as u64,
        DataType::I32 => in_range(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32 as u64,
        // Beyond 2^53 a double no longer holds every whole number.
        DataType::U64 => in_range(0.0, 2f64.powi(53))? as u64,
        DataType::I64 => in_range(-(2f64.powi(53)), 2f64.powi(53))? as i64 as u64,
        DataType::F32 if raw.is_finite() && raw.abs() <= f64::from(f32::MAX) => u64::from((raw as f32).to_bits()),
        DataType::F64 if raw.is_finite() => raw.to_bits(),
        DataType::F32 | DataType::F64 => return Err(format!("{raw} is not a finite {data_type:?}")),
    };
    let width = usize::from(data_type.width());
    let mut words: Vec<u16> = (0..width).rev().map(|i| (bits >> (16 * i)) as u16).collect();
    if order == WordOrder::Little {
        words.reverse();
    }
    if bytes == ByteOrder::Little {
        words.iter_mut().for_each(|word| *word = word.swap_bytes());
    }
    Ok(words)
}

/// What a write puts on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A coil: function code 5, or 15 with `write_multiple`.
    Coil(bool),
    /// Registers: function code 6 for one, 16 for several or with `write_multiple`.
    Registers(Vec<u16>),
}

/// Decodes ASCII text stored two characters a register, dropping the padding (NUL or space)
/// at the end.
pub fn decode_string(words: &[u16], bytes: ByteOrder) -> String {
    let raw: Vec<u8> = words
        .iter()
        .flat_map(|word| match bytes {
            ByteOrder::Big => word.to_be_bytes(),
            ByteOrder::Little => word.to_le_bytes(),
        })
        .collect();
    String::from_utf8_lossy(&raw).trim_end_matches(['\0', ' ']).to_owned()
}

/// Where one point lives in the device, as the read planner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The table.
    pub kind: RegisterKind,
    /// Zero-based protocol (PDU) address of the first register or bit.
    pub address: u16,
    /// Registers or bits spanned.
    pub width: u16,
}

impl Span {
    /// Whether the two share a register (or bit) of the same table.
    pub fn overlaps(&self, other: &Span) -> bool {
        let end = |s: &Span| u32::from(s.address) + u32::from(s.width);
        self.kind == other.kind && u32::from(self.address) < end(other) && u32::from(other.address) < end(self)
    }
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    /// The table to read.
    pub kind: RegisterKind,
    /// Zero-based address of the first register or bit.
    pub start: u16,
    /// Registers or bits to read.
    pub count: u16,
    /// Indices into the spans given to [`plan_reads`].
    pub points: Vec<usize>,
}

/// Merges points into as few read requests as the protocol allows.
///
/// Points of one table are merged while the request stays within the protocol's limit and the
/// hole between neighbours is at most `max_gap` registers: reading a hole costs little on the
/// wire, but many devices answer "illegal address" for registers they do not implement, so the
/// gap is capped by configuration. A request never covers a register of `avoid`: registers the
/// device has refused (see `DevicePoller`), which would fail every request that covers them.
pub fn plan_reads(spans: &[Span], max_gap: u16, avoid: &[Span]) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].kind, spans[i].address));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in order {
        let span = spans[i];
        let end = u32::from(span.address) + u32::from(span.width);
        if let Some(block) = blocks.last_mut() {
            let block_end = u32::from(block.start) + u32::from(block.count);
            let merged = Span {
                kind: span.kind,
                address: block.start,
                width: (end.max(block_end) - u32::from(block.start)).min(u32::from(u16::MAX)) as u16,
            };
            let fits = block.kind == span.kind
                && u32::from(span.address) <= block_end + u32::from(max_gap)
                && u32::from(merged.width) <= u32::from(span.kind.max_per_read())
                && !avoid.iter().any(|a| a.overlaps(&merged));
            if fits {
                block.count = (end.max(block_end) - u32::from(block.start)) as u16;
                block.points.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock { kind: span.kind, start: span.address, count: span.width, points: vec![i] });
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(kind: RegisterKind, address: u16, width: u16) -> Span {
        Span { kind, address, width }
    }

    fn check(spans: &[Span], max_gap: u16, expected: &[(RegisterKind, u16, u16)]) {
        let blocks: Vec<_> = plan_reads(spans, max_gap, &[]).into_iter().map(|b| (b.kind, b.start, b.count)).collect();
        assert_eq!(blocks, expected);
    }

    #[test]
    fn contiguous_points_share_a_request_and_gaps_and_limits_split_them() {
        use RegisterKind::*;
        check(&[span(Holding, 0, 1), span(Holding, 1, 2), span(Holding, 3, 1)], 0, &[(Holding, 0, 4)]);
        check(&[span(Holding, 0, 1), span(Holding, 5, 1)], 3, &[(Holding, 0, 1), (Holding, 5, 1)]);
        check(&[span(Holding, 0, 1), span(Holding, 5, 1)], 4, &[(Holding, 0, 6)]);
        check(&[span(Input, 0, 1), span(Holding, 1, 1)], 10, &[(Input, 0, 1), (Holding, 1, 1)]);
        check(&[span(Holding, 0, 100), span(Holding, 100, 26)], 0, &[(Holding, 0, 100), (Holding, 100, 26)]);
        check(&[span(Holding, 0, 100), span(Holding, 100, 25)], 0, &[(Holding, 0, 125)]);
        check(&[span(Coil, 0, 1), span(Coil, 1999, 1)], 2000, &[(Coil, 0, 2000)]);
        // Overlapping points (a bit of a status word read twice) stay in one request.
        check(&[span(Holding, 10, 2), span(Holding, 10, 1)], 0, &[(Holding, 10, 2)]);
    }

    #[test]
    fn a_refused_register_is_never_covered_by_a_request() {
        use RegisterKind::*;
        let spans = [span(Input, 0, 1), span(Input, 1, 1), span(Input, 3, 2), span(Input, 5, 1)];
        let plan = |avoid: &[Span]| -> Vec<_> {
            plan_reads(&spans, 8, avoid).into_iter().map(|b| (b.kind, b.start, b.count)).collect()
        };
        assert_eq!(plan(&[]), [(Input, 0, 6)]);
        // The hole at 2 refused: two requests on either side of it.
        assert_eq!(plan(&[span(Input, 2, 1)]), [(Input, 0, 2), (Input, 3, 3)]);
        // Another table's register changes nothing.
        assert_eq!(plan(&[span(Holding, 2, 1)]), [(Input, 0, 6)]);
    }

    #[test]
    fn strings_decode_two_characters_a_register() {
        let words = [u16::from_be_bytes(*b"RT"), u16::from_be_bytes(*b"HD"), 0];
        assert_eq!(decode_string(&words, ByteOrder::Big), "RTHD");
        let swapped = [u16::from_le_bytes(*b"RT"), u16::from_le_bytes(*b"HD"), u16::from_le_bytes(*b"  ")];
        assert_eq!(decode_string(&swapped, ByteOrder::Little), "RTHD");
    }

    #[test]
    fn encoded_words_decode_to_the_same_value_in_every_type_and_order() {
        let cases = [
            (DataType::U16, 51234.0),
            (DataType::I16, -1234.0),
            (DataType::U32, 305_419_896.0),
            (DataType::I32, -123_456_789.0),
            (DataType::U64, 9_007_199_254_740_992.0),
            (DataType::I64, -9_876_543_210.0),
            (DataType::F32, 21.5),
            (DataType::F64, 1234.5678),
        ];
        for (data_type, value) in cases {
            for order in [WordOrder::Big, WordOrder::Little] {
                for bytes in [ByteOrder::Big, ByteOrder::Little] {
                    let words = encode_words(value, data_type, order, bytes).expect("encodable");
                    assert_eq!(words.len(), usize::from(data_type.width()));
                    assert_eq!(
                        decode_words(&words, data_type, order, bytes),
                        value,
                        "{data_type:?} {order:?} {bytes:?}"
                    );
                }
            }
        }
        assert_eq!(encode_words(-1234.0, DataType::I16, WordOrder::Big, ByteOrder::Big), Ok(vec![0xFB2E]));
        assert_eq!(encode_words(65.4, DataType::I16, WordOrder::Big, ByteOrder::Big), Ok(vec![65]));
        for (data_type, raw) in
            [(DataType::U16, -1.0), (DataType::U16, 65536.0), (DataType::I16, 40000.0), (DataType::F32, f64::NAN)]
        {
            assert!(encode_words(raw, data_type, WordOrder::Big, ByteOrder::Big).is_err(), "{data_type:?} {raw}");
        }
        assert_eq!(raw_of(6.5, 0.1, 0.0).round(), 65.0);
        assert_eq!(raw_of(0.0, 0.1, 40.0).round(), -400.0);
    }

    #[test]
    fn words_decode_in_both_orders() {
        use ByteOrder as B;
        use WordOrder as W;
        assert_eq!(decode_words(&[0xFB2E], DataType::I16, W::Big, B::Big), -1234.0);
        assert_eq!(decode_words(&[0x2EFB], DataType::I16, W::Big, B::Little), -1234.0);
        assert_eq!(decode_words(&[0x1234, 0x5678], DataType::U32, W::Big, B::Big), 305_419_896.0);
        assert_eq!(decode_words(&[0x5678, 0x1234], DataType::U32, W::Little, B::Big), 305_419_896.0);
        // "BADC" and "DCBA".
        assert_eq!(decode_words(&[0x3412, 0x7856], DataType::U32, W::Big, B::Little), 305_419_896.0);
        assert_eq!(decode_words(&[0x7856, 0x3412], DataType::U32, W::Little, B::Little), 305_419_896.0);
        let [hi, lo] = [(21.5f32.to_bits() >> 16) as u16, 21.5f32.to_bits() as u16];
        assert_eq!(decode_words(&[hi, lo], DataType::F32, W::Big, B::Big), 21.5);
        assert_eq!(decode_words(&[lo, hi], DataType::F32, W::Little, B::Big), 21.5);
        assert_eq!(decode_words(&[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], DataType::I64, W::Big, B::Big), -2.0);
    }
}
