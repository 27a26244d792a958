# The two commands of the README: `make run` and `make test`. Both install what is missing first.
.PHONY: deps build run test

APT_PACKAGES := redis-server libhiredis-dev pkg-config
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian/Ubuntu packages: redis-server (embedded default and tests), hiredis (the Redis protocol).
deps:
	@if command -v redis-server >/dev/null && pkg-config --exists hiredis 2>/dev/null; then :; else \
		echo "installing $(APT_PACKAGES)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

build: deps
	swift build

# One node on http://127.0.0.1:8080 with a private redis-server; pass flags with ARGS="--port 9000".
run: deps
	swift run switchboard serve $(ARGS)

# Every test: Lua scripts, Redis client, multi-node HTTP, join storms, the binary itself.
# Each test starts its own redis-server in a temporary directory.
test: deps
	swift test
