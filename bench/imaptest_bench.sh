#!/usr/bin/env bash
# imaptest_bench.sh -- imaptest (github.com/dovecot/imaptest) against pochta, optionally side
# by side with Dovecot 2.3 (/work/shared/bench/anchors/postfix_dovecot.sh).
#
#   bash bench/imaptest_bench.sh --imaptest-src DIR [--reference] [--reps N] [--secs S]
#                                [--clients N] [--work DIR] [--out DIR] [--compliance]
#
# DIR is an imaptest source tree (never part of this repository). Its last commit that builds
# against Debian 12's dovecot-dev 2.3 is 924f619; when DIR/src/imaptest is missing it is
# built there (autogen, configure --with-dovecot=/usr/lib/dovecot, make), which needs the
# Debian packages dovecot-dev, autoconf, automake, libtool and make. With dovecot-dev
# 2.3.19.1+dfsg1-2.1+deb12u7 or later (imap_parser_create takes a fourth argument) the
# build includes a one-line compatibility header the script writes into WORK.
#
# pochta: a data dir under WORK (pochta init --port-base 22000, users user1..user10 /
# pass-N, plaintext LOGIN allowed on loopback as imaptest does no TLS, per-IP limits
# raised). The reference: the anchor stack's user1..user10 / pass-N. Both get the same
# 400-message mbox (seeded, WORK/imaptest.mbox) as imaptest's source of APPENDs.
# For each server, alternating, --reps times (default 3), --clients clients (default 10)
# for --secs seconds (default 30):
#   persistent   imaptest logout=0 (sessions stay logged in)
#   default      imaptest's default profile (a login per cycle)
# Before each run the ten INBOXes of that server are emptied, so no run starts from what
# the runs before it left.
# Output: OUT/<server>/<case>.rep<k>.txt (imaptest's output), OUT/summary.md (cmd/s per
# run, medians and the ratio pochta/reference).
#
# --compliance runs imaptest's own compliance suite (DIR/src/tests) instead, one group at a
# time, against pochta (and the reference with --reference), as user1, and writes
# OUT/compliance.md: per server the groups that ran and passed, failed, or were skipped.
# imaptest (at 924f619) counts a group it skips for a capability the server lacks neither as
# failed nor as skipped (it prints 0/0 commands), so a group counts as run here only when it
# ran at least one command.
# The suite runs from a copy in WORK/tests with one fix: urlauth2 (at 924f619 and at
# imaptest's newest commit) has no "messages: 2" line, so its mailbox starts empty and its
# first command, FETCH 1:2, cannot succeed on any server; the copy adds that line, as its
# sibling urlauth has it.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BENCH_DIR:-/work/shared/bench}
PY=${PYTHON:-python3}
POCHTA="$REPO/.venv/bin/python -m pochta"
SRC=""
REFERENCE=0
REPS=3
SECS=30
CLIENTS=10
WORK=/tmp/pochta-imaptest
OUT=""
COMPLIANCE=0
while [ $# -gt 0 ]; do
    case $1 in
        --imaptest-src) SRC=$2; shift ;;
        --reference) REFERENCE=1 ;;
        --reps) REPS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --work) WORK=$2; shift ;;
        --out) OUT=$2; shift ;;
        --compliance) COMPLIANCE=1 ;;
        -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$SRC" ] || { echo "give --imaptest-src DIR (an imaptest source tree)" >&2; exit 2; }
OUT=${OUT:-$WORK/results-$(date +%Y%m%d-%H%M%S)}
D=$WORK/data
mkdir -p "$WORK" "$OUT/pochta" "$OUT/logs"
[ "$REFERENCE" = 1 ] && mkdir -p "$OUT/reference"
say() { echo "[imaptest_bench $(date +%H:%M:%S)] $*" >&2; }

IMAPTEST=$SRC/src/imaptest
if [ ! -x "$IMAPTEST" ]; then
    say "building imaptest in $SRC"
    # Debian 12's security update deb12u7 backported dovecot 2.4.5's imap_parser_create(),
    # which takes a fourth argument (parser limits; NULL: the defaults). imaptest 924f619
    # calls it with three: a header included first adds the NULL.
    COMPAT_FLAGS=""
    if grep -q "imap_parser_params \*params" /usr/include/dovecot/imap-parser.h 2>/dev/null; then
        printf '%s\n' '#include "lib.h"' '#include "imap-parser.h"' \
            '#define imap_parser_create(input, output, size) imap_parser_create(input, output, size, NULL)' \
            > "$WORK/imaptest-compat.h"
        COMPAT_FLAGS="-include $WORK/imaptest-compat.h"
    fi
    ( cd "$SRC" && { [ -x configure ] || ./autogen.sh; } \
        && ./configure --with-dovecot=/usr/lib/dovecot && make -j"$(nproc)" CPPFLAGS="$COMPAT_FLAGS" ) \
        >"$OUT/logs/build.log" 2>&1 || { say "build failed: see $OUT/logs/build.log"; exit 1; }
fi

# imaptest links libdovecot.so.0, which Debian keeps in /usr/lib/dovecot (not on the
# loader's path).
export LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$IMAPTEST" --help >/dev/null 2>"$OUT/logs/imaptest-start.log"
if grep -q "error while loading shared libraries" "$OUT/logs/imaptest-start.log"; then
    say "$IMAPTEST does not start: $(cat "$OUT/logs/imaptest-start.log")"; exit 1
fi

USERS=$WORK/users
for n in $(seq 1 10); do echo "user$n@example.test:pass-$n"; done > "$USERS"
MBOX=$WORK/imaptest.mbox
[ -f "$MBOX" ] || $PY - "$MBOX" <<'EOF'
import email.utils, random, sys, time
random.seed(400)
words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu zanzibar".split()
with open(sys.argv[1], "w") as f:
    for i in range(400):
        when = 1700000000 + i * 60
        f.write(f"From sender{i}@example.org {time.asctime(time.gmtime(when))}\n")
        f.write(f"From: Sender {i} <sender{i}@example.org>\nTo: user@example.test\n")
        f.write(f"Subject: message {i} {' '.join(random.choices(words, k=4))}\n")
        f.write(f"Date: {email.utils.formatdate(when)}\nMessage-ID: <{i}.imaptest@example.org>\n\n")
        for _ in range(random.randint(5, 120)):
            f.write(" ".join(random.choices(words, k=10)) + "\n")
        f.write("\n")
EOF

if [ ! -f "$D/pochta.toml" ]; then
    say "creating $D"
    $POCHTA init --data "$D" --hostname mail.example.test --domain example.test \
        --port-base 22000 --bind 127.0.0.1 >"$OUT/logs/init.log" 2>&1 || { say "init failed"; exit 1; }
    for n in $(seq 1 10); do
        echo "pass-$n" | $POCHTA --config "$D/pochta.toml" user add "user$n@example.test" \
            --password-stdin >>"$OUT/logs/init.log" 2>&1 || { say "user add failed"; exit 1; }
    done
    C="$POCHTA --config $D/pochta.toml config set"
    { $C imap.allow_plaintext_on_loopback true && $C imap.max_connections_per_ip 2000 \
        && $C imap.max_connections_per_account 2000; } >>"$OUT/logs/init.log" 2>&1 \
        || { say "config set failed: see $OUT/logs/init.log"; exit 1; }
fi

PID=""
stop_pochta() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID"; timeout 30 tail --pid="$PID" -f /dev/null || kill -9 "$PID"
    fi
    PID=""
}
trap stop_pochta EXIT
$POCHTA --config "$D/pochta.toml" serve >>"$OUT/logs/pochta.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q 'event=ready' "$OUT/logs/pochta.log" && break; sleep 0.1; done
sleep 2  # the IMAP workers say ready after the master
[ "$REFERENCE" = 1 ] && { bash "$B/anchors/postfix_dovecot.sh" start >>"$OUT/logs/anchor.log" 2>&1 \
    || { say "the reference did not start: see $OUT/logs/anchor.log"; exit 1; }; }

if [ "$COMPLIANCE" = 1 ]; then
    # Groups with a second connection as another user (urlauth2) need user2=: on pochta a
    # second account with user1's password (imaptest gives both the same); the reference
    # has none, so imaptest skips those groups there.
    echo pass-1 | $POCHTA --config "$D/pochta.toml" user add compliance2@example.test \
        --password-stdin >>"$OUT/logs/init.log" 2>&1 || true
    # Every connection of a group SELECTs the test mailbox, but only the first one (user1)
    # creates it: the second user's must exist before (imaptest's test-exec.c,
    # TEST_STARTUP_STATE_APPENDED).
    $PY - >>"$OUT/logs/init.log" 2>&1 <<'EOF' || say "could not create compliance2's imaptest mailbox"
import imaplib
with imaplib.IMAP4("127.0.0.1", 22143) as imap:
    imap.login("compliance2@example.test", "pass-1")
    kind, data = imap.create("imaptest")
    print("CREATE imaptest as compliance2:", kind, data)
    imap.logout()
EOF
    TESTS=$WORK/tests
    rm -rf "$TESTS" && cp -r "$SRC/src/tests" "$TESTS"
    if ! grep -q '^messages:' "$TESTS/urlauth2"; then
        sed -i '/^capabilities:/a messages: 2' "$TESTS/urlauth2"
    fi
    for side in pochta reference; do
        second=""; [ "$side" = pochta ] && second="user2=compliance2@example.test"
        [ "$side" = reference ] && [ "$REFERENCE" = 0 ] && continue
        port=22143; [ "$side" = reference ] && port=143
        mkdir -p "$OUT/$side/compliance"
        for group in $(cd "$TESTS" && ls | grep -v '\.mbox$'); do
            [ -f "$TESTS/$group" ] || continue
            say "compliance: $side $group"
            ( cd "$OUT/$side/compliance" && timeout 300 "$IMAPTEST" host=127.0.0.1 port="$port" \
                user=user1@example.test $second pass=pass-1 test="$TESTS/$group" \
                > "$group.txt" 2>&1 )
        done
    done
    $PY - "$OUT" <<'EOF' | tee "$OUT/compliance.md"
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| server | groups | ran and passed | failed | skipped (no command ran) |")
print("|---|---:|---:|---:|---:|")
details = []
for side in ("pochta", "reference"):
    files = sorted((out / side / "compliance").glob("*.txt"))
    if not files:
        continue
    passed, failed, skipped = [], [], []
    for f in files:
        text = f.read_text(errors="replace")
        counts = [tuple(map(int, m)) for m in re.findall(r"(\d+)/(\d+) individual commands failed", text)]
        ran = sum(total for _, total in counts)
        bad = sum(fails for fails, _ in counts)
        group_failed = re.search(r"test groups: (\d+) failed", text)
        if bad or (group_failed and int(group_failed.group(1))):
            failed.append(f.stem)  # including a group whose set-up failed
        elif ran == 0:
            skipped.append(f.stem)
        else:
            passed.append(f.stem)
    print(f"| {side} | {len(files)} | {len(passed)} | {len(failed)} | {len(skipped)} |")
    details.append(f"{side}: failed: {' '.join(failed) or '-'}; skipped: {' '.join(skipped) or '-'}")
print()
print("\n\n".join(details))
EOF
    exit 0
fi

empty_inboxes() { # port: every run starts from the same state on either server, whatever
    # the runs before it (or anything else) left in the ten INBOXes
    $PY - "$1" >>"$OUT/logs/empty.log" 2>&1 <<'EOF' || say "could not empty the INBOXes on port $1"
import imaplib, sys
for n in range(1, 11):
    with imaplib.IMAP4("127.0.0.1", int(sys.argv[1])) as imap:
        imap.login(f"user{n}@example.test", f"pass-{n}")
        kind, data = imap.select("INBOX")
        if int(data[0] or 0):
            imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()
        print(f"port {sys.argv[1]} user{n}: {int(data[0] or 0)} messages removed")
        imap.logout()
EOF
}
run() { # side case port args...
    local side=$1 name=$2 port=$3; shift 3
    empty_inboxes "$port"
    timeout $((SECS + 120)) "$IMAPTEST" host=127.0.0.1 port="$port" userfile="$USERS" user=unused \
        mbox="$MBOX" clients="$CLIENTS" secs="$SECS" "$@" > "$OUT/$side/$name.txt" 2>&1
}
for rep in $(seq 1 "$REPS"); do
    for side in pochta reference; do
        [ "$side" = reference ] && [ "$REFERENCE" = 0 ] && continue
        port=22143; [ "$side" = reference ] && port=143
        say "rep $rep: $side"
        run "$side" "persistent.rep$rep" $port logout=0
        run "$side" "default.rep$rep" $port
    done
done

# cmd/s of a run: the sum of the counts under "Totals:" (the last line of numbers) over
# --secs; errors: imaptest's "Error:" lines.
$PY - "$OUT" "$SECS" <<'EOF' | tee "$OUT/summary.md"
import re, statistics, sys
from pathlib import Path
out, secs = Path(sys.argv[1]), float(sys.argv[2])
def rate(path):
    text = path.read_text(errors="replace")
    if "Totals:" not in text:
        return None, text.count("Error:")
    rows = [l for l in text.split("Totals:")[1].splitlines() if re.fullmatch(r"[\s\d]+", l) and l.strip()]
    return sum(map(int, rows[-1].split())) / secs, text.count("Error:")
print("| case | server | cmd/s per run | median | errors |")
print("|---|---|---|---:|---:|")
medians = {}
for case in ("persistent", "default"):
    for side in ("pochta", "reference"):
        runs = sorted((out / side).glob(f"{case}.rep*.txt"))
        if not runs:
            continue
        got = [rate(p) for p in runs]
        rates = [r for r, _ in got if r is not None]
        med = statistics.median(rates) if rates else float("nan")
        medians[(case, side)] = med
        errors = sum(e for _, e in got)
        print(f"| {case} | {side} | {', '.join(f'{r:.0f}' for r in rates)} | {med:.0f} | {errors} |")
for case in ("persistent", "default"):
    if (case, "reference") in medians:
        print(f"\n{case}: pochta/reference = {medians[(case, 'pochta')] / medians[(case, 'reference')]:.2f}")
EOF
