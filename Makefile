# The two commands of the README: `make run` and `make test`. Both install what is missing first.
.PHONY: deps browser-deps build run run-cluster test test-swift test-browser model soak lua

APT_PACKAGES := redis-server libhiredis-dev pkg-config
BROWSER_PACKAGES := chromium chromium-driver iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian/Ubuntu packages: redis-server (embedded default and tests), hiredis (the Redis protocol).
deps:
	@if command -v redis-server >/dev/null && pkg-config --exists hiredis 2>/dev/null; then :; else \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

# The real-browser test: Debian's Chromium and its driver, selenium from PyPI.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v ip >/dev/null; then :; else \
		echo "installing $(BROWSER_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(BROWSER_PACKAGES); \
	fi
	@python3 -c "import selenium" 2>/dev/null || python3 -m pip install -q selenium

build: deps
	swift build

# One node on http://127.0.0.1:8080 with a private redis-server; pass flags with ARGS="--port 9000".
run: deps
	swift run switchboard serve $(ARGS)

# A private Redis Cluster (3 primaries, each with a replica) and two nodes on it, on ports
# 8080 and 8081; Ctrl-C stops everything. Flags with ARGS="--nodes 3 --shards 2".
run-cluster: deps
	swift run switchboard cluster $(ARGS)

# Every test: Lua scripts (and that Lua/expanded/ matches them), Redis client, multi-node HTTP,
# join storms, the binary itself (each starts its own redis-server in a temporary directory);
# then real browsers.
test: test-swift test-browser

# Lua/expanded/: each script with its includes written out, to run by hand with
# `redis-cli --eval` (the nodes embed the same text at build time; a test checks they match).
lua:
	swift run -q FileEmbedder --expand Lua/expanded Lua/*.lua

# A run takes 2-4 minutes; one still going after 10 has stalled, which is a defect: the run
# fails and prints the tests that never finished and every thread's stack.
test-swift: deps
	swift build --build-tests
	Tests/Scripts/guarded-test-run.sh

# The whole suite RUNS times in a row, each run's time and result (add CPUS=0 to pin it to one
# core, HOG=1 for a busy loop per core beside it): `make soak RUNS=20 CPUS=0`.
soak: deps
	swift build --build-tests
	Tests/Scripts/soak.sh $(or $(RUNS),20)

# Two headless Chromiums on two nodes, in a private network namespace (needs root or
# unprivileged user namespaces). Screenshots in Tests/Browser/artifacts/.
test-browser: deps browser-deps
	Tests/Browser/run.sh

# The randomized model test with RUNS seeds more than CI's three: `make model RUNS=200`.
model: deps
	SWITCHBOARD_MODEL_RUNS=$(or $(RUNS),100) swift test --filter ModelTests
