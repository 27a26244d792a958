#!/usr/bin/env bash
# What the kernel holds behind a client that stops reading: a release node on a redis-server of
# its own; a client with a 4 KiB receive buffer opens /connect and never reads, a sender floods
# it with 60 KB relays. Prints the peak Send-Q of the node's socket (`ss`, every 5 relays) until
# the node cuts the stream off (a relay answered 202), then whether the socket is still there.
#   swift build -c release --product switchboard
#   Benchmarks/silent-reader.sh .build/release
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BIN_DIR (a folder holding switchboard)" >&2; exit 2; }
BIN=$1
WORK=$(mktemp -d)
REDIS_PORT=16397 NODE_PORT=18397
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS=($!)
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
SWITCHBOARD_LOG_LEVEL=error "$BIN/switchboard" serve --port "$NODE_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" --relay-rate 0 &
PIDS+=($!)
until curl -sf "http://127.0.0.1:$NODE_PORT/readyz" >/dev/null; do sleep 0.1; done
python3 - "$NODE_PORT" <<'PY'
import base64, json, socket, subprocess, sys, threading, time, urllib.request
PORT = int(sys.argv[1])
def post(path, token=None, body=b"{}"):
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if token: req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
def token(name): return json.loads(post("/access", body=json.dumps({"username": name}).encode())[1])["token"]
def peer_id(t): p = t.split(".")[1]; return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["id"]
def ss(client_port):
    out = subprocess.run(["ss", "-tnmi", "state", "all", f"( sport = :{PORT} and dport = :{client_port} )"], capture_output=True, text=True).stdout
    lines = [l for l in out.splitlines()[1:] if l.strip()]
    if not lines: return "no socket"
    f = lines[0].split()
    return f"{f[0]} Send-Q {int(f[2]) // 1024} KiB"
sleepy, sender = token("sleepy"), token("sender")
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.connect(("127.0.0.1", PORT))
s.send(f"GET /connect?token={sleepy} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
client_port = s.getsockname()[1]
sender_stream = socket.create_connection(("127.0.0.1", PORT))
sender_stream.send(f"GET /connect?token={sender} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
threading.Thread(target=lambda: [sender_stream.recv(65536) for _ in iter(int, 1)], daemon=True).start()
time.sleep(0.5)
print("join:", post("/slow/join", sender)[0], post("/slow/join", sleepy)[0])
payload = json.dumps({"sdp": "x" * 60000}).encode()
target, peak, statuses = peer_id(sleepy), 0, {}
for n in range(1, 2001):
    status = post(f"/relay/{target}/offer", sender, payload)[0]
    statuses[status] = statuses.get(status, 0) + 1
    if n % 5 == 0:
        state = ss(client_port)
        if "Send-Q" in state: peak = max(peak, int(state.split()[2]))
    if status != 200: break
print(f"after {n} relays {statuses}: node's socket Send-Q peaked at {peak} KiB")
for t in (0.1, 1, 5):
    time.sleep(t); print(f"+{t} s after the cut-off: {ss(client_port)}")
PY
