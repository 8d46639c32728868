#!/bin/sh
# The example app: greets whoever GREETING_NAME names (set it with `podman run --env GREETING_NAME=…`).
set -eu
echo "Hello, ${GREETING_NAME:-world}! This is $(id -un) on $(uname -m), built by packfarm."
