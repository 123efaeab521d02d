#!/bin/bash
# Outbound delivery benchmark: pochta's smtp agent against Postfix's smtp(8), both relaying
# queued 4 KiB messages to the same Postfix smtp-sink on loopback (issue 5).
#
#   bash bench/outbound_bench.sh [--reference] [--messages N] [--reps R]
#
# pochta: a fresh data dir (`pochta init`), relayhost = [127.0.0.1]:SINK, N messages queued
# with bench/queue_fill.py while the server is down; then `pochta serve` starts, and the time
# from its `ready` line to an empty queue is the delivery time.
# Postfix (--reference, needs the anchor stack of /work/shared/bench/anchors): relayhost =
# [127.0.0.1]:SINK and defer_transports = smtp while N messages are submitted with
# smtp_load.py (so they wait in deferred/); then defer_transports is cleared, `postqueue -f`
# runs, and the time to an empty queue is the delivery time. main.cf is restored afterwards.
# Both sides keep their default concurrency per destination (20) and opportunistic TLS (the
# sink offers none). Medians of R repetitions go to OUT/summary.md, with the CPU time the
# whole machine was busy per message while the queue drained (/proc/stat; the sink and the
# kernel included: Postfix's delivery processes come and go, so they cannot be counted one
# by one).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$REPO/.venv/bin/python"
N=5000; REPS=3; REFERENCE=0; SINK_PORT=2526
WORK=/tmp/pochta-outbound-bench
while [ $# -gt 0 ]; do
    case "$1" in
        --reference) REFERENCE=1 ;;
        --messages) N=$2; shift ;;
        --reps) REPS=$2; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=$WORK/results-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
log() { echo "[outbound_bench $(date +%H:%M:%S)] $*" >&2; }

SINK_PID=""
cleanup() {
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null || true
    [ -n "${POCHTA_PID:-}" ] && kill "$POCHTA_PID" 2>/dev/null || true
    if [ -f "$WORK/main.cf.orig" ]; then
        cp "$WORK/main.cf.orig" /etc/postfix/main.cf && rm -f "$WORK/main.cf.orig"
        postfix reload >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

# smtp-sink: accepts everything, 256 connections backlog, as nobody.
smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 256 &
SINK_PID=$!
sleep 0.5

calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

machine_busy() {  # CPU seconds the whole machine has been busy (all cores, /proc/stat)
    awk '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / 100 }' /proc/stat
}

proc_cpu() {  # user+system seconds of a process and its children still alive
    local total=0
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$(awk -v t="$total" '{print t + ($14 + $15) / 100}' "/proc/$p/stat")
    done
    echo "$total"
}

run_pochta() {
    local rep=$1 D="$WORK/data"
    rm -rf "$D"
    "$PY" -m pochta init --data "$D" --hostname mail.example.test --domain example.test \
        --port-base 23000 --bind 127.0.0.1 --no-dkim >/dev/null
    sed -i -e 's/^relayhost = ""/relayhost = "[127.0.0.1]:'"$SINK_PORT"'"/' "$D/pochta.toml"
    grep -q "^relayhost = \"\[127.0.0.1\]:$SINK_PORT\"" "$D/pochta.toml"
    if [ -n "${PROCESSES:-}" ]; then sed -i "s/^processes = 0$/processes = $PROCESSES/" "$D/pochta.toml"; fi
    "$PY" "$REPO/bench/queue_fill.py" "$D/pochta.toml" "$N"
    local queued
    queued=$(find "$D/queue/incoming" -type f | wc -l)
    "$PY" -m pochta --config "$D/pochta.toml" serve 2> "$OUT/pochta-$rep.log" &
    POCHTA_PID=$!
    local t0="" t1 b0="" b1
    for _ in $(seq 1 600); do
        grep -q "event=ready" "$OUT/pochta-$rep.log" && { t0=$(date +%s.%N); b0=$(machine_busy); break; }
        sleep 0.05
    done
    [ -n "$t0" ] || { log "pochta did not start"; cat "$OUT/pochta-$rep.log" >&2; exit 1; }
    while :; do
        left=$(find "$D/queue/incoming" "$D/queue/active" "$D/queue/deferred" -type f | wc -l)
        [ "$left" -eq 0 ] && break
        sleep 0.05
    done
    t1=$(date +%s.%N); b1=$(machine_busy)
    local pids cpu delivered deferred
    pids="$POCHTA_PID $( (pgrep -P "$POCHTA_PID" || true) | tr "\n" " ")"
    # shellcheck disable=SC2086
    cpu=$(proc_cpu $pids)
    kill "$POCHTA_PID"; wait "$POCHTA_PID" 2>/dev/null || true; POCHTA_PID=""
    delivered=$(grep -c "event=delivered" "$OUT/pochta-$rep.log" || true)
    deferred=$(grep -c "event=deferred\|event=bounced" "$OUT/pochta-$rep.log" || true)
    echo "{\"server\": \"pochta\", \"rep\": $rep, \"queued\": $queued, \"delivered\": $delivered, \"not_delivered\": $deferred, \"seconds\": $(calc "$t1 - $t0"), \"msgs_per_s\": $(calc "$delivered / ($t1 - $t0)"), \"server_cpu_s\": $cpu, \"machine_cpu_s\": $(calc "$b1 - $b0")}"
}

postfix_queue_count() {
    find /var/spool/postfix/incoming /var/spool/postfix/active /var/spool/postfix/deferred \
        /var/spool/postfix/maildrop -type f 2>/dev/null | wc -l
}

run_postfix() {
    local rep=$1
    postsuper -d ALL >/dev/null 2>&1 || true
    postconf -e "relayhost = [127.0.0.1]:$SINK_PORT" "defer_transports = smtp"
    postfix reload >/dev/null 2>&1
    sleep 1
    python3 /work/shared/bench/smtp_load.py --host 127.0.0.1 --port 25 -n "$N" -c 10 --size 4k \
        --user-fmt 'rcpt{n}@remote.test' --users 1000 >/dev/null 2>&1 || true
    for _ in $(seq 1 600); do
        [ "$(find /var/spool/postfix/deferred -type f | wc -l)" -ge "$N" ] && break
        sleep 0.1
    done
    local queued; queued=$(find /var/spool/postfix/deferred -type f | wc -l)
    postconf -e "defer_transports ="
    postfix reload >/dev/null 2>&1
    sleep 1
    local t0 t1 b0 b1
    t0=$(date +%s.%N); b0=$(machine_busy)
    postqueue -f
    while [ "$(postfix_queue_count)" -gt 0 ]; do sleep 0.05; done
    t1=$(date +%s.%N); b1=$(machine_busy)
    # Postfix's delivery processes come and go, so only the machine's busy time is given.
    echo "{\"server\": \"postfix\", \"rep\": $rep, \"queued\": $queued, \"delivered\": $queued, \"seconds\": $(calc "$t1 - $t0"), \"msgs_per_s\": $(calc "$queued / ($t1 - $t0)"), \"machine_cpu_s\": $(calc "$b1 - $b0")}"
}

if [ "$REFERENCE" = 1 ]; then
    bash /work/shared/bench/anchors/postfix_dovecot.sh start >/dev/null 2>&1 || \
        bash /work/shared/bench/anchors/postfix_dovecot.sh setup >/dev/null
    cp /etc/postfix/main.cf "$WORK/main.cf.orig"
fi
for rep in $(seq 1 "$REPS"); do
    log "pochta rep $rep: $N messages"
    run_pochta "$rep" | tee -a "$OUT/runs.jsonl"
    if [ "$REFERENCE" = 1 ]; then
        log "postfix rep $rep: $N messages"
        run_postfix "$rep" | tee -a "$OUT/runs.jsonl"
    fi
done
"$PY" - "$OUT/runs.jsonl" > "$OUT/summary.md" <<'PYEOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in runs:
    by.setdefault(r["server"], []).append(r)
print("# Outbound benchmark: relay of queued 4 KiB messages to smtp-sink\n")
print("| server | runs | msgs/s (median) | each run | machine CPU ms/msg (median) |")
print("|---|---:|---:|---|---:|")
med = {}
for name, rs in by.items():
    rates = [r["msgs_per_s"] for r in rs]
    med[name] = statistics.median(rates)
    busy = statistics.median(1000 * r["machine_cpu_s"] / r["delivered"] for r in rs)
    print(f"| {name} | {len(rs)} | {med[name]:.1f} | {', '.join(f'{x:.1f}' for x in rates)} | "
          f"{busy:.2f} |")
print("\n(machine CPU: busy time of all cores from /proc/stat while the queue drained, the "
      "sink included)")
if "postfix" in med:
    print(f"\nratio pochta / postfix: **{med['pochta'] / med['postfix']:.2f}**")
PYEOF
cat "$OUT/summary.md"
log "results in $OUT"
