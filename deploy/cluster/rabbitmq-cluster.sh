#!/bin/bash
# A 3-node RabbitMQ cluster on loopback, for tests and benchmarks on one machine.
#
#   rabbitmq-cluster.sh start BASE_DIR BASE_PORT   start 3 nodes, wait until clustered, print ports
#   rabbitmq-cluster.sh start-node BASE_DIR I      (re)start node I (1..3), wait until it runs
#                                                  in the cluster again (e.g. after kill -9)
#   rabbitmq-cluster.sh status BASE_DIR            cluster_status of the running nodes
#   rabbitmq-cluster.sh ctl BASE_DIR I ARGS...     rabbitmqctl against node I
#   rabbitmq-cluster.sh drain BASE_DIR I           maintenance mode before a planned stop of node I
#   rabbitmq-cluster.sh stop BASE_DIR              stop all nodes and the cluster's epmd
#
# Env: RABBITMQ_ADMIN_USER / RABBITMQ_ADMIN_PASS (default admin/admin), MGMT=1 to enable the
#      management UI, PARALLEL=1 to boot the 3 nodes at once (start), DEADLINE seconds for each wait (default 120).
#
# Ports for node I (1..3), from BASE_PORT (B):
#   AMQP B+I-1, MQTT B+10+I-1, Erlang distribution B+20+I-1, management B+30+I-1 (MGMT=1),
#   epmd B+40, CLI tools' own distribution ports B+41..B+51.
# Node names rabbit-I@localhost; PIDs in BASE_DIR/nI.pid (the Erlang VM itself), output in
# BASE_DIR/nI.out. Data survives stop/start (delete BASE_DIR for a fresh cluster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RMQ_SBIN=${RMQ_SBIN:-/usr/lib/rabbitmq/bin}
export RABBITMQ_ADMIN_USER=${RABBITMQ_ADMIN_USER:-admin}
export RABBITMQ_ADMIN_PASS=${RABBITMQ_ADMIN_PASS:-admin}
DEADLINE=${DEADLINE:-120}
N=3

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

load() {  # load ports saved by `start`
    base=$(cd "$1" && pwd)
    [ -f "$base/cluster.env" ] || { echo "no cluster in $base" >&2; exit 1; }
    . "$base/cluster.env"
}

tool() {  # tool NAME I ARGS... : a RabbitMQ CLI tool against node I with the cluster's cookie and epmd
    local name=$1 i=$2; shift 2
    HOME=$base ERL_EPMD_PORT=$EPMD RABBITMQ_CTL_DIST_PORT_MIN=$((BP + 41)) \
        RABBITMQ_CTL_DIST_PORT_MAX=$((BP + 51)) \
        "$RMQ_SBIN/$name" -n "rabbit-$i@localhost" "$@"
}

ctl() { tool rabbitmqctl "$@"; }

start_epmd() {
    # Our own epmd on the cluster's port, loopback only, so clusters never share 4369.
    if ! (exec 3<>/dev/tcp/127.0.0.1/$EPMD) 2>/dev/null; then
        ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$EPMD" >"$base/epmd.out" 2>&1 &
        echo $! >"$base/epmd.pid"
        local t=$(( $(date +%s) + 10 ))
        until (exec 3<>/dev/tcp/127.0.0.1/$EPMD) 2>/dev/null; do
            [ "$(date +%s)" -lt $t ] || { echo "epmd did not start" >&2; exit 1; }
            sleep 0.05
        done
    fi
}

start_node() {  # start_node I : launch node I in the background, record its PID
    local i=$1 mgmt=""
    [ "${MGMT:-0}" = 1 ] && mgmt=$((BP + 30 + i - 1))
    local peers="rabbit-1@localhost,rabbit-2@localhost,rabbit-3@localhost"
    setsid "$here/rabbitmq-node.sh" "$i" "$base" $((BP + i - 1)) $((BP + 10 + i - 1)) \
        $((BP + 20 + i - 1)) "$EPMD" "$peers" $mgmt </dev/null >"$base/n$i.out" 2>&1 &
    echo $! >"$base/n$i.pid"
}

wait_port() {  # wait_port PORT PID : until PORT accepts (node booted far enough) or deadline
    local t=$(( $(date +%s) + DEADLINE ))
    until (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || { echo "node pid $2 died, see $base/*.out and n*/log" >&2; exit 1; }
        [ "$(date +%s)" -lt $t ] || { echo "timeout waiting for port $1" >&2; exit 1; }
        sleep 0.1
    done
}

running_count() {  # number of running nodes the cluster reports, as seen from node I
    ctl "$1" cluster_status --formatter json 2>/dev/null |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null || echo 0
}

wait_clustered() {  # wait_clustered I : until node I is booted and sees all N nodes running
    wait_port $((BP + 10 + $1 - 1)) "$(cat "$base/n$1.pid")"   # booted (MQTT opens last)
    local t=$(( $(date +%s) + DEADLINE ))
    until [ "$(running_count "$1")" = "$N" ]; do
        [ "$(date +%s)" -lt $t ] || { echo "timeout: cluster not formed" >&2; exit 1; }
        sleep 0.2
    done
}

print_ports() {
    for i in 1 2 3; do
        echo "rabbit-$i@localhost pid=$(cat "$base/n$i.pid") amqp=$((BP + i - 1)) mqtt=$((BP + 10 + i - 1)) dist=$((BP + 20 + i - 1))$([ "${MGMT:-0}" = 1 ] && echo " mgmt=$((BP + 30 + i - 1))")"
    done
    echo "epmd=$EPMD  cookie=$base/.erlang.cookie  admin=$RABBITMQ_ADMIN_USER"
}

cmd=${1:-}; shift || true
case "$cmd" in
start)
    [ $# -eq 2 ] || { sed -n '2,20p' "$0" >&2; exit 64; }
    mkdir -p "$1"; base=$(cd "$1" && pwd); BP=$2; EPMD=$((BP + 40))
    printf 'BP=%s\nEPMD=%s\nMGMT=%s\n' "$BP" "$EPMD" "${MGMT:-0}" >"$base/cluster.env"
    t0=$(now)
    start_epmd
    # Node 1 first: with classic_config a node that finds no booted peer forms a cluster of its
    # own, so nodes started at the same instant could form separate clusters. 2 and 3 then join
    # node 1 in parallel. (On restart with existing data the nodes rejoin on their own.)
    # PARALLEL=1 starts all three at once, relying on classic_config's lock and retries.
    start_node 1
    if [ "${PARALLEL:-0}" != 1 ]; then
        wait_port $((BP + 10)) "$(cat "$base/n1.pid")"    # MQTT listener: last to open at boot
        echo "node 1 up after $(elapsed "$t0") s" >&2
    fi
    start_node 2; start_node 3
    # Every node booted (its plugins too: MQTT opens last) and seeing the others: a node killed
    # while another still boots can leave that one waiting for its tables.
    for i in 1 2 3; do wait_clustered "$i"; done
    echo "cluster of $N formed after $(elapsed "$t0") s" >&2
    print_ports
    ;;
start-node)
    load "$1"; i=$2
    if [ -f "$base/n$i.pid" ]; then   # a just-killed VM takes a moment to go away
        p=$(cat "$base/n$i.pid"); t=$(( $(date +%s) + 10 ))
        while kill -0 "$p" 2>/dev/null && [ "$(date +%s)" -lt $t ]; do sleep 0.1; done
        kill -0 "$p" 2>/dev/null && { echo "node $i already running (pid $p)" >&2; exit 1; }
    fi
    t0=$(now)
    start_epmd; start_node "$i"
    wait_clustered "$i"
    echo "node $i running in the cluster after $(elapsed "$t0") s" >&2
    ;;
status)
    load "$1"
    for i in 1 2 3; do ctl "$i" cluster_status 2>/dev/null && exit 0; done; exit 1
    ;;
ctl)
    load "$1"; i=$2; shift 2; ctl "$i" "$@"
    ;;
drain)
    # Maintenance mode before a planned stop: quorum queue leaders move to the other nodes and
    # clients are disconnected while the node still runs. A restarted node leaves it by itself.
    load "$1"; tool rabbitmq-upgrade "$2" drain
    ;;
stop)
    load "$1"
    for i in 1 2 3; do   # SIGTERM = clean shutdown of the VM; SIGKILL after the deadline
        p=$(cat "$base/n$i.pid" 2>/dev/null || true)
        [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
    done
    for i in 1 2 3; do
        p=$(cat "$base/n$i.pid" 2>/dev/null || true); [ -n "$p" ] || continue
        t=$(( $(date +%s) + 60 ))
        while kill -0 "$p" 2>/dev/null; do
            [ "$(date +%s)" -lt $t ] || { kill -KILL "$p" 2>/dev/null || true; break; }
            sleep 0.1
        done
        rm -f "$base/n$i.pid"
    done
    [ -f "$base/epmd.pid" ] && { kill "$(cat "$base/epmd.pid")" 2>/dev/null || true; rm -f "$base/epmd.pid"; }
    echo "stopped" >&2
    ;;
*)
    sed -n '2,20p' "$0" >&2; exit 64 ;;
esac
