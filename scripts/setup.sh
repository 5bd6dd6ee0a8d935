# Sourced by scripts/demo and scripts/test: installs the Debian/Ubuntu packages Chillcloud needs
# at run and test time, if any is missing. Needs root (or sudo) only when something is missing.

# Commands (or files) that must exist, and the package providing each.
chillcloud_required=(
  "/usr/lib/postgresql/*/bin/initdb:postgresql"
  "mosquitto:mosquitto"
  "mosquitto_passwd:mosquitto"
  "mosquitto_pub:mosquitto-clients"
  "/usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server"
  "curl:curl"
  "socat:socat"
  "openssl:openssl"
  "python3:python3"
  "python3 -m venv --help:python3-venv"
  "runuser:util-linux"
  "chromium:chromium"
  "node:nodejs"
  "npm:npm"
  # The remote doctor's PDF font (Chinese and Latin in one face), and the tests' PDF readers.
  "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc:fonts-wqy-microhei"
  "pdftoppm:poppler-utils"
  "pdftotext:poppler-utils"
  # Debian packages (scripts/package) and the test that installs them into a clean root.
  "dpkg-shlibdeps:dpkg-dev"
  "debootstrap:debootstrap"
  "lintian:lintian"
)

# The packages missing of `entries` (default: everything above).
chillcloud_missing_packages() {
  local entry probe package missing=()
  local entries=("$@")
  [ ${#entries[@]} -eq 0 ] && entries=("${chillcloud_required[@]}")
  for entry in "${entries[@]}"; do
    probe=${entry%:*}
    package=${entry##*:}
    case $probe in
      /*) compgen -G "$probe" >/dev/null || missing+=("$package") ;;
      *" "*) $probe >/dev/null 2>&1 || missing+=("$package") ;;
      *) command -v "$probe" >/dev/null 2>&1 || [ -x "/usr/sbin/$probe" ] || missing+=("$package") ;;
    esac
  done
  printf '%s\n' "${missing[@]}" | sort -u | grep -v '^$' || true
}

# Installs what `entries` (default: everything above) miss.
chillcloud_install_packages() {
  local missing
  missing=$(chillcloud_missing_packages "$@")
  [ -z "$missing" ] && return 0
  echo "installing missing packages: $(echo $missing)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "run as root or install: apt-get install $(echo $missing)" >&2; return 1; }
    sudo=sudo
  fi
  # Debian starts packaged services (PostgreSQL, Mosquitto, RabbitMQ) on install; the stack runs
  # its own instances instead, so a policy-rc.d that refuses starts is in place for the install
  # (a failing start would fail the install where no init system runs).
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && added_policy=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi
  command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.94 or newer (https://rustup.rs)" >&2; return 1; }
}

# The browser tests and benchmark P8 drive Debian's Chromium with playwright-core from npm.
chillcloud_install_browser_driver() {
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
}

# scripts/package builds the Debian packages with cargo-deb (a pinned version, from crates.io).
chillcloud_install_cargo_deb() {
  cargo deb --version 2>/dev/null | grep -qx "cargo-deb 3.8.0" && return 0
  cargo install --quiet --locked cargo-deb --version 3.8.0
}
