#!/bin/sh
# packfarm's shell example, run by the packfarm/shell-script buildpack as the `web` process.
set -eu
echo "Hello from a shell script on $(uname -m), running as uid $(id -u)."
