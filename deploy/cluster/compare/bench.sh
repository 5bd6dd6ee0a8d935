#!/bin/bash
# bench.sh NAME MQTT_PORTS CONSUMER_ENGINE CONSUMER_PORT "BROKER_PIDS" [PROCS CLIENTS DURATION [RATE]]
# Runs consume.py and load.py together; CPU seconds of the broker PIDs, of the whole machine
# and idle%, from /proc over the run.
set -u; cd "$(dirname "$0")"
name=$1 ports=$2 ceng=$3 cport=$4 pids=$5 procs=${6:-5} clients=${7:-50} dur=${8:-35} rate=${9:-0}
hz=$(getconf CLK_TCK)
cpu() { local s=0; for p in $pids; do s=$((s + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $s; }
sys() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat; }
c0=$(cpu); read t0 i0 < <(sys); s0=$(date +%s.%N)
python3 consume.py "$ceng" "$cport" "$dur" > /tmp/bench-$name-consume.out 2>&1 &
cpid=$!
python3 load.py "$ports" "$procs" "$clients" "$dur" 20 "$rate" | tee /tmp/bench-$name-load.out
wait $cpid; cat /tmp/bench-$name-consume.out
c1=$(cpu); read t1 i1 < <(sys); s1=$(date +%s.%N)
python3 -c "
w=$s1-$s0; b=($c1-$c0)/$hz; t=($t1-$t0); i=($i1-$i0)
print(f'RESULT $name: wall {w:.1f} s, broker CPU {b:.1f} s = {b/w:.2f} cores; machine busy {100*(t-i)/t:.0f}% of 2 cores')"
