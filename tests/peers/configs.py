#!/usr/bin/env python3
"""Config generator for the P3 footprint benchmark's third-party baseline peers.

Writes, for N simulated devices (Modbus unit ids 1..N on one Modbus TCP server),
each polled for the 100 input registers 100..199 (FC 4) every 1 s:
  <out>/tb/        thingsboard-gateway config (tb_gateway.json, modbus.json, logs.json)
  <out>/collectd/  collectd.conf (modbus plugin + a cheap write plugin)
  <out>/commands.json  exact argv/env/cwd to start each peer in the foreground
and prints the same as shell command lines. Stdlib only. Ports always come from the arguments.

Example:
  python3 tests/peers/configs.py --modbus 127.0.0.1:5020 --devices 100 \
      --out target/peers --mqtt 127.0.0.1:1883 [--mqtt-user U --mqtt-password P] \
      --venv target/peers-venv
"""
import argparse
import json
import os
import shlex

REG_FIRST, REG_COUNT = 100, 100  # input registers 100..199 (0-based protocol addresses)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def tb_config(a, tb_dir):
    mq_host, mq_port = hostport(a.mqtt)
    mb_host, mb_port = hostport(a.modbus)
    if a.mqtt_user is not None:
        security = {"type": "usernamePassword", "clientId": "tb-gateway-peer",
                    "username": a.mqtt_user, "password": a.mqtt_password or ""}
    else:  # anonymous broker: ThingsBoard puts the access token in the MQTT username
        security = {"type": "accessToken", "accessToken": "peer"}
    gateway = {
        "thingsboard": {
            "host": mq_host, "port": mq_port,
            "remoteShell": False, "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 3600,
            "handleDeviceRenaming": False,
            "syncDevicesSharedAttributesOnConnect": False,
            "security": security,
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
            # No ThingsBoard server to hand out limits: run unlimited.
            "rateLimits": "0:0,", "dpRateLimits": "0:0,", "messagesRateLimits": "0:0,",
            "deviceMessagesRateLimits": "0:0,", "deviceRateLimits": "0:0,",
            "deviceDpRateLimits": "0:0,",
        },
        "storage": {"type": "memory", "read_records_count": 100, "max_records_count": 100000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }
    slaves = [{
        "name": f"chiller{u}", "deviceName": f"chiller{u}", "deviceType": "chiller",
        "host": mb_host, "port": mb_port, "type": "tcp", "method": "socket",
        "unitId": u, "timeout": 5, "byteOrder": "BIG", "wordOrder": "BIG",
        "retries": 1, "retryOnEmpty": False, "retryOnInvalid": False,
        "pollPeriod": 1000,
        "connectAttemptTimeMs": 5000, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 5000,
        "attributes": [],
        # A "wide range" address reads the whole bank as ONE request of 100 registers
        # and emits one telemetry key per register (r100..r199).
        "timeseries": [{
            "tag": "r${address}", "type": "16uint", "functionCode": 4, "objectsCount": 1,
            "address": f"{REG_FIRST}-{REG_FIRST + REG_COUNT - 1}",
            "maxRegistersPerRequest": REG_COUNT,
        }],
        "attributeUpdates": [], "rpc": [],
    } for u in range(1, a.devices + 1)]
    # A fixed "id" keeps the gateway from rewriting modbus.json with a random one.
    modbus = {"name": "Modbus", "id": "p3-modbus", "logLevel": "WARNING", "master": {"slaves": slaves}}
    level = "WARNING"
    logs = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s |%(levelname)s| %(name)s - %(message)s"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f",
                                 "level": level, "stream": "ext://sys.stderr"}},
        "loggers": {name: {"handlers": ["console"], "level": level, "propagate": False}
                    for name in ("service", "connector", "converter", "tb_connection",
                                 "storage", "extension", "Modbus")},
        "root": {"level": level, "handlers": ["console"]},
    }
    # pymodbus 3.9.2 warns "BinaryPayloadDecoder is deprecated" on EVERY decode
    # (~10k lines/s here): keep it to errors.
    logs["loggers"]["pymodbus"] = {"handlers": ["console"], "level": "ERROR", "propagate": False}
    # The gateway persists its devices here; a stale copy only causes warnings.
    stale = os.path.join(tb_dir, "connected_devices.json")
    if os.path.exists(stale):
        os.remove(stale)
    for name, obj in (("tb_gateway.json", gateway), ("modbus.json", modbus), ("logs.json", logs)):
        with open(os.path.join(tb_dir, name), "w") as f:
            json.dump(obj, f, indent=1)


def collectd_config(a, cd_dir):
    mb_host, mb_port = hostport(a.modbus)
    out = [f"""# collectd peer for the P3 footprint benchmark (generated by tests/peers/configs.py)
Hostname "peer"
FQDNLookup false
BaseDir "{cd_dir}"
PIDFile "{cd_dir}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
Interval 1
ReadThreads {a.collectd_read_threads}
WriteThreads 1
AutoLoadPlugin false

LoadPlugin logfile
<Plugin logfile>
  LogLevel warning
  File STDERR
  Timestamp true
</Plugin>
LoadPlugin modbus
"""]
    if a.collectd_write == "mqtt":
        mq_host, mq_port = hostport(a.mqtt)
        auth = ""
        if a.mqtt_user is not None:
            auth = f'    User "{a.mqtt_user}"\n    Password "{a.mqtt_password or ""}"\n'
        out.append(f"""LoadPlugin mqtt
<Plugin mqtt>
  <Publish "broker">
    Host "{mq_host}"
    Port {mq_port}
    ClientId "collectd-peer"
{auth}    QoS 0
    Prefix "collectd"
    StoreRates false
  </Publish>
</Plugin>
""")
    elif a.collectd_write == "csv":
        out.append(f"""LoadPlugin csv
<Plugin csv>
  DataDir "{cd_dir}/csv"
  StoreRates false
</Plugin>
""")
    # "none": no write plugin; collectd still polls and complains once that nothing stores values.
    out.append("<Plugin modbus>\n")
    # collectd 5.12's modbus plugin reads one value per <Data> block (no multi-register
    # reads), so the bank becomes 100 Data blocks = 100 requests per device per interval.
    for r in range(REG_FIRST, REG_FIRST + REG_COUNT):
        out.append(f'  <Data "r{r}">\n    RegisterBase {r}\n    RegisterType Uint16\n'
                   f'    RegisterCmd ReadInput\n    Type "gauge"\n    Instance "r{r}"\n  </Data>\n')
    collect = "".join(f'      Collect "r{r}"\n' for r in range(REG_FIRST, REG_FIRST + REG_COUNT))
    for u in range(1, a.devices + 1):
        # One Host block per device (its own TCP connection, read in parallel by ReadThreads).
        out.append(f'  <Host "chiller{u}">\n    Address "{mb_host}"\n    Port "{mb_port}"\n'
                   f'    Interval 1\n    <Slave {u}>\n      Instance "unit{u}"\n{collect}'
                   f'    </Slave>\n  </Host>\n')
    out.append("</Plugin>\n")
    with open(os.path.join(cd_dir, "collectd.conf"), "w") as f:
        f.write("".join(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modbus", required=True, help="sim Modbus TCP host:port")
    p.add_argument("--devices", type=int, required=True, help="N: unit ids 1..N")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--mqtt", required=True, help="MQTT broker host:port")
    p.add_argument("--mqtt-user", help="MQTT username (omit for an anonymous broker)")
    p.add_argument("--mqtt-password")
    p.add_argument("--venv", default="target/peers-venv", help="venv made by setup.sh")
    p.add_argument("--collectd-write", choices=("mqtt", "csv", "none"), default="mqtt",
                   help="collectd output: publish to the same broker (default), csv files, or none")
    p.add_argument("--collectd-read-threads", type=int, default=5)
    a = p.parse_args()

    out = os.path.abspath(a.out)
    tb_dir, cd_dir = os.path.join(out, "tb"), os.path.join(out, "collectd")
    for d in (tb_dir, cd_dir):
        os.makedirs(d, exist_ok=True)
    tb_config(a, tb_dir)
    collectd_config(a, cd_dir)

    venv = os.path.abspath(a.venv)
    here = os.path.dirname(os.path.abspath(__file__))
    env = {"PATH": "/usr/bin:/bin"}  # start both with a clean environment (see README)
    commands = {
        # tb_gateway_peer.py = the `thingsboard-gateway` console script plus the shims
        # it needs without a ThingsBoard server. The config dir is passed only via
        # TB_GW_CONFIG_DIR (the CLI takes no --config).
        "thingsboard-gateway": {
            "argv": [os.path.join(venv, "bin", "python"), os.path.join(here, "tb_gateway_peer.py")],
            "env": {**env, "TB_GW_CONFIG_DIR": tb_dir + os.sep}, "cwd": tb_dir},
        "collectd": {
            "argv": ["/usr/sbin/collectd", "-f", "-C", os.path.join(cd_dir, "collectd.conf")],
            "env": env, "cwd": cd_dir},
    }
    with open(os.path.join(out, "commands.json"), "w") as f:
        json.dump(commands, f, indent=1)
    for name, c in commands.items():
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in c["env"].items())
        print(f"{name}: cd {shlex.quote(c['cwd'])} && env -i {envs} {shlex.join(c['argv'])}")


if __name__ == "__main__":
    main()
