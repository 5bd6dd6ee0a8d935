"""A third-party Modbus TCP server (pymodbus) holding known values of every type the gateway
decodes, in both word orders, for the interoperability tests. Every write request it receives
is printed as a JSON line (function code, protocol address, values), so a test can check what
went on the wire. It answers Read Device Identification as vendor "Pymodbus".

Usage: pymodbus_server.py PORT
"""

import asyncio
import json
import logging
import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus import ModbusDeviceIdentification
from pymodbus.server import StartAsyncTcpServer


def words(fmt, value, little_word_order=False):
    """The 16-bit registers of `value` packed big-endian, optionally least significant word first."""
    raw = struct.pack(">" + fmt, value)
    registers = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return registers[::-1] if little_word_order else registers


# Protocol address 0 onwards; the test's gateway config mirrors this layout.
HOLDING = (
    words("H", 51234)  # 0: u16
    + words("h", -1234)  # 1: i16
    + words("I", 305419896)  # 2-3: u32, big word order
    + words("i", -123456789, little_word_order=True)  # 4-5: i32, little word order
    + words("f", 21.5)  # 6-7: f32, big word order
    + words("f", -3.25, little_word_order=True)  # 8-9: f32, little word order
    + words("h", 72)  # 10: i16 x 0.1 = 7.2
    + words("d", 1234.5678)  # 11-14: f64
    + words("q", -9876543210, little_word_order=True)  # 15-18: i64, little word order
    + words("H", 0)  # 19: u16, for writes with function code 16
)
INPUT = words("I", 123456) + words("h", -400)  # 0-1: u32 x 0.01; 2: i16 x 0.1 + 40


def log_writes(sending, pdu):
    """Prints each write request received (pymodbus's PDU trace hook) and passes it on."""
    if not sending and pdu.function_code in (5, 6, 15, 16):
        if pdu.function_code in (6, 16):
            values = list(pdu.registers)
        else:
            values = [int(bit) for bit in pdu.bits[: max(pdu.count, 1)]]
        print(json.dumps({"fc": pdu.function_code, "address": pdu.address, "values": values}), flush=True)
    return pdu


def main():
    port = int(sys.argv[1])
    logging.basicConfig(level=logging.WARNING)
    # pymodbus's data blocks are addressed from 1 (register 1 is protocol address 0).
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [True, False, True] + [False] * 5),
        di=ModbusSequentialDataBlock(1, [False, True] + [False] * 6),
        hr=ModbusSequentialDataBlock(1, HOLDING),
        ir=ModbusSequentialDataBlock(1, INPUT),
    )
    context = ModbusServerContext(devices={1: device}, single=False)
    # What it answers to Read Device Identification (function 43/14), for the commissioning scan.
    identity = ModbusDeviceIdentification(
        info_name={"VendorName": "Pymodbus", "ProductCode": "PM-INTEROP", "MajorMinorRevision": "3.16"}
    )
    asyncio.run(
        StartAsyncTcpServer(
            context=context, identity=identity, address=("127.0.0.1", port), trace_pdu=log_writes
        )
    )


if __name__ == "__main__":
    main()
