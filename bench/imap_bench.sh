#!/usr/bin/env bash
# imap_bench.sh -- IMAP benchmark for pochta, optionally side by side with Dovecot 2.3
# (/work/shared/bench/anchors/postfix_dovecot.sh), with /work/shared/bench/imap_load.py.
#
#   bash bench/imap_bench.sh [--reference] [--messages N] [--reps N] [--duration S]
#                            [--idle-conns N] [--work DIR] [--out DIR]
#
# pochta: a data dir under WORK (pochta init --port-base 21000, users user1..user50 /
# pass-N), populated with N messages (default 10000) into user49 by
# /work/shared/bench/populate.py over IMAP APPEND, and kept for the next run with the same N.
# The reference: Dovecot's user50 gets the same N messages (same seed), also kept.
# Then, for each server, interleaved, --reps times (default 3):
#   ops_c1, ops_c20   the default op mix, 1 and 20 clients, --duration s (default 15)
#   search_text       UID SEARCH TEXT "zanzibar", 1 client, 5 searches
# and once: idle      --idle-conns IDLE connections (default 500; the reference 300) and
#                     10 push samples (SMTP delivery -> "* n EXISTS"), on a pochta started
#                     afresh; idle.json is the second of two such rounds (the allocator's
#                     arenas grown once, as in a server that has run a while), idle_fresh.json
#                     the first. After the op mix the heap held freed memory that new
#                     connections took, which made the figure depend on the op mix.
# Output: OUT/<server>/<case>.rep<k>.json and OUT/summary.md (medians, ratios).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BENCH_DIR:-/work/shared/bench}
PY=${PYTHON:-python3}
POCHTA="$REPO/.venv/bin/python -m pochta"
REFERENCE=0
MESSAGES=10000
REPS=3
DURATION=15
IDLE_CONNS=500
WORK=/tmp/pochta-imap-bench
OUT=""
while [ $# -gt 0 ]; do
    case $1 in
        --reference) REFERENCE=1 ;;
        --messages) MESSAGES=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --idle-conns) IDLE_CONNS=$2; shift ;;
        --work) WORK=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$WORK/results-$(date +%Y%m%d-%H%M%S)}
D=$WORK/data
mkdir -p "$OUT/pochta" "$OUT/logs"
[ "$REFERENCE" = 1 ] && mkdir -p "$OUT/reference"
ulimit -n 65536 2>/dev/null || true
say() { echo "[imap_bench $(date +%H:%M:%S)] $*" >&2; }

PID=""
stop_pochta() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"; timeout 30 tail --pid="$PID" -f /dev/null || kill -9 "$PID"
    fi
    PID=""
}
trap stop_pochta EXIT

make_data() {
    rm -rf "$D"
    say "creating $D with 50 users"
    $POCHTA init --data "$D" --hostname mail.example.test --domain example.test \
        --port-base 21000 --bind 127.0.0.1 >"$OUT/logs/init.log" 2>&1 || { say "init failed"; exit 1; }
    for n in $(seq 1 50); do
        echo "pass-$n" | $POCHTA --config "$D/pochta.toml" user add "user$n@example.test" \
            --password-stdin >>"$OUT/logs/init.log" 2>&1 || { say "user add failed"; exit 1; }
    done
    # The idle case opens hundreds of connections from 127.0.0.1; the IMAP limits (50 per IP,
    # 50 per account) would refuse them.
    sed -i 's/^max_connections_per_ip = 50$/max_connections_per_ip = 2000/; s/^max_connections_per_account = 50$/max_connections_per_account = 2000/' "$D/pochta.toml"
}
[ -f "$D/pochta.toml" ] || make_data
# ops_c20 runs 20 sessions of one account from 127.0.0.1: above imap.max_userip_connections
# (10, as Dovecot's mail_max_userip_connections); the reference stack sets 100, so do we.
$POCHTA --config "$D/pochta.toml" config set imap.max_userip_connections 100 >>"$OUT/logs/init.log" 2>&1 \
    || { say "config set failed: see $OUT/logs/init.log"; exit 1; }
PPIDS=$WORK/pochta_pids.sh
cat > "$PPIDS" <<EOF
#!/bin/sh
p=\$(cat "$WORK/serve.pid" 2>/dev/null) || exit 0
kill -0 "\$p" 2>/dev/null && echo "\$p \$(pgrep -d' ' -P "\$p")"
EOF
chmod +x "$PPIDS"

start_pochta() {
    $POCHTA --config "$D/pochta.toml" serve >>"$OUT/logs/pochta.log" 2>&1 &
    PID=$!; echo "$PID" > "$WORK/serve.pid"
    for _ in $(seq 1 100); do
        [ "$(grep -c 'event=ready' "$OUT/logs/pochta.log")" -ge "$READY_SEEN" ] && break
        sleep 0.1
    done
}
READY_SEEN=1
start_pochta
READY_SEEN=$(grep -c 'event=ready' "$OUT/logs/pochta.log")
sleep 2  # the IMAP workers say ready after the master

count() { # server port user pass
    $PY - "$@" <<'EOF'
import imaplib, sys
c = imaplib.IMAP4(sys.argv[1], int(sys.argv[2])); c.login(sys.argv[3], sys.argv[4])
print(int(c.select("INBOX")[1][0])); c.logout()
EOF
}
have=$(count 127.0.0.1 21143 user49@example.test pass-49)
if [ "$have" != "$MESSAGES" ]; then
    if [ "$have" != 0 ]; then
        say "pochta user49 has $have messages, not $MESSAGES: new data dir"
        stop_pochta; make_data; READY_SEEN=$(( $(grep -c 'event=ready' "$OUT/logs/pochta.log") + 1 ))
        start_pochta; sleep 2
    fi
    say "populating pochta user49 with $MESSAGES messages"
    $PY "$B/populate.py" --host 127.0.0.1 --port 21143 --user user49@example.test \
        --password pass-49 -m "$MESSAGES" > "$OUT/pochta/populate.json" 2>"$OUT/logs/populate-pochta.log"
fi
if [ "$REFERENCE" = 1 ]; then
    bash "$B/anchors/postfix_dovecot.sh" start >>"$OUT/logs/anchor.log" 2>&1
    have=$(count 127.0.0.1 143 user50@example.test pass-50)
    if [ "$have" != "$MESSAGES" ]; then
        say "populating Dovecot user50 with $MESSAGES messages (had $have: emptied first)"
        rm -rf /var/vmail/example.test/user50/Maildir
        $PY "$B/populate.py" --host 127.0.0.1 --port 143 --user user50@example.test \
            --password pass-50 -m "$MESSAGES" > "$OUT/reference/populate.json" 2>"$OUT/logs/populate-reference.log"
    fi
fi

load() { # dir case port user pass args...
    local dir=$1 name=$2 port=$3 user=$4 pass=$5; shift 5
    timeout 600 $PY "$B/imap_load.py" --host 127.0.0.1 --port "$port" --user "$user" \
        --password "$pass" "$@" 2>>"$OUT/logs/load.log" | tail -1 > "$OUT/$dir/$name.json"
}
for rep in $(seq 1 "$REPS"); do
    for side in pochta reference; do
        [ "$side" = reference ] && [ "$REFERENCE" = 0 ] && continue
        if [ "$side" = pochta ]; then port=21143; u=user49; p=pass-49; else port=143; u=user50; p=pass-50; fi
        say "rep $rep: $side"
        load "$side" "ops_c1.rep$rep" $port $u@example.test $p -c 1 --duration "$DURATION" --ops-per-client 1000000
        load "$side" "ops_c20.rep$rep" $port $u@example.test $p -c 20 --duration "$DURATION" --ops-per-client 1000000
        load "$side" "search_text.rep$rep" $port $u@example.test $p -c 1 --mix search_text=1 \
            --search-text zanzibar --ops-per-client 5
    done
done
say "idle connections and push latency (pochta restarted; a first round, then the measured one)"
stop_pochta; READY_SEEN=$(( $(grep -c 'event=ready' "$OUT/logs/pochta.log") + 1 ))
start_pochta; sleep 2
for round in idle_fresh idle; do
    load pochta "$round" 21143 user1@example.test pass-1 --idle-conns "$IDLE_CONNS" \
        --smtp-host 127.0.0.1 --smtp-port 21025 --user-fmt 'user{n}@example.test' \
        --pass-fmt 'pass-{n}' --users 48 --push-samples 10 --server-pids-cmd "$PPIDS"
    sleep 2  # the closed connections are gone from the server
done
if [ "$REFERENCE" = 1 ]; then
    load reference idle 143 user1@example.test pass-1 --idle-conns $((IDLE_CONNS * 3 / 5)) \
        --smtp-host 127.0.0.1 --smtp-port 25 --user-fmt 'user{n}@example.test' \
        --pass-fmt 'pass-{n}' --users 48 --push-samples 5 \
        --server-pids-cmd "pgrep -d' ' -f 'dovecot|imap'"
fi

$PY - "$OUT" "$REFERENCE" > "$OUT/summary.md" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, ref = Path(sys.argv[1]), sys.argv[2] == "1"
def runs(side, case):
    vals = []
    for f in sorted((out / side).glob(f"{case}.rep*.json")):
        try:
            vals.append(json.loads(f.read_text()))
        except ValueError:
            pass
    return vals
def med(xs):
    return statistics.median(xs) if xs else float("nan")
rows = [("ops/s, 1 client", "ops_c1", lambda d: d["ops_per_s"], "higher"),
        ("ops/s, 20 clients", "ops_c20", lambda d: d["ops_per_s"], "higher"),
        ("UID SEARCH TEXT p50 ms", "search_text", lambda d: d["latency_by_op"]["search_text"]["p50_ms"], "lower")]
print("| measure | pochta | reference | pochta/reference |\n|---|---:|---:|---:|")
for label, case, get, _ in rows:
    p = med([get(d) for d in runs("pochta", case)])
    r = med([get(d) for d in runs("reference", case)]) if ref else float("nan")
    print(f"| {label} | {p:.1f} | {r:.1f} | {p / r if ref and r else float('nan'):.2f} |")
for side, case in (("pochta", "idle_fresh"), ("pochta", "idle"), ("reference", "idle")):
    f = out / side / f"{case}.json"
    if side == "reference" and not ref:
        continue
    if f.exists():
        try:
            d = json.loads(f.read_text())
            keep = ("idle_conns_open", "rss_kib_per_conn", "pss_kib_per_conn", "push_samples",
                    "push_failed", "push_latency_from_accept")
            print(f"\n{side} {case}: {json.dumps({k: d.get(k) for k in keep})}")
        except ValueError:
            print(f"\n{side} {case}: no result")
EOF
cat "$OUT/summary.md"
