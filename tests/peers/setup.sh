#!/usr/bin/env bash
# Installs the third-party baseline peers for the P3 footprint benchmark:
#   - thingsboard-gateway (PyPI, pinned) + its Modbus deps into a venv at $1
#   - collectd-core (Debian; ships /usr/lib/collectd/modbus.so and mqtt.so) + the
#     libraries those two plugins load: libmodbus5, libmosquitto1
# Idempotent. Never leaves collectd running as a system service: we run our
# own foreground instance (collectd -f -C <conf>).
# Usage: tests/peers/setup.sh <venv-dir>     (e.g. target/peers-venv)
set -euo pipefail

VENV="${1:?usage: setup.sh <venv-dir>}"
LOG="$(mktemp)"; POLICY_ADDED=0
trap 'rm -f "$LOG"; [ "$POLICY_ADDED" = 0 ] || rm -f /usr/sbin/policy-rc.d' EXIT
# Run a command silently; show its output only if it fails.
quiet() { "$@" >"$LOG" 2>&1 || { cat "$LOG" >&2; return 1; }; }
# Versions: see tb-gateway-requirements.txt (thingsboard-gateway 3.8.5; pymodbus
# 3.9.2 is the exact version its modbus connector demands, else it pip-installs
# it at start-up).

# --- collectd + plugin libraries (Debian) ---------------------------------
if ! [ -e /usr/lib/collectd/modbus.so ] || ! ldconfig -p | grep -q 'libmodbus\.so\.5' \
        || ! ldconfig -p | grep -q 'libmosquitto\.so\.1'; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    # Block service start-up during install if no policy is in place already.
    if ! [ -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        POLICY_ADDED=1
    fi
    install_pkgs() {
        quiet $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends collectd-core libmodbus5 libmosquitto1
    }
    install_pkgs 2>/dev/null || { quiet $SUDO apt-get update -qq && install_pkgs; }
    [ "$POLICY_ADDED" = 0 ] || { $SUDO rm -f /usr/sbin/policy-rc.d; POLICY_ADDED=0; }
    # In case a service manager started it anyway: stop and disable it.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now collectd >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/collectd ]; then
        $SUDO /etc/init.d/collectd stop >/dev/null 2>&1 || true
        $SUDO update-rc.d collectd disable >/dev/null 2>&1 || true
    fi
fi

# --- thingsboard-gateway (PyPI), all versions pinned -----------------------
REQS="$(dirname "$0")/tb-gateway-requirements.txt"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if ! cmp -s "$REQS" "$VENV/.peers-requirements.txt"; then
    quiet "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
    cp "$REQS" "$VENV/.peers-requirements.txt"
fi

pyver() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
echo "peers installed: thingsboard-gateway $(pyver thingsboard-gateway) (pymodbus $(pyver pymodbus)) in $VENV;" \
     "collectd $(dpkg-query -W -f='${Version}' collectd-core) + libmodbus5 $(dpkg-query -W -f='${Version}' libmodbus5)" \
     "+ libmosquitto1 $(dpkg-query -W -f='${Version}' libmosquitto1)"
