#!/usr/bin/env bash
# Install the non-Python tools the tests run: the AsyncAPI validator (scripts/asyncapi: the AsyncAPI
# project's @asyncapi/parser at the version of its package-lock.json, with `npm ci`), Graphviz
# (`dot`, for the topology SVG) and RabbitMQ (for the tests' own servers). Debian's nodejs/npm are
# installed first when node or npm is missing, Debian's graphviz when dot is, and rabbitmq-server
# when its server script is (RS_RABBITMQ_SERVER: where it is looked for); that needs root (or sudo). `npm ci` runs only when
# scripts/asyncapi/node_modules is missing or older than package.json / package-lock.json, so a
# repeated run does nothing and needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
if ! command -v dot >/dev/null; then packages+=(graphviz); fi
# RabbitMQ for the tests' own servers (reactive_services.testing.local_rabbitmq; its system service is not used)
rabbitmq_server=${RS_RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}
if [ ! -x "$rabbitmq_server" ]; then packages+=(rabbitmq-server); fi
if [ "${#packages[@]}" -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then SUDO="sudo"; else
            echo "error: ${packages[*]} missing and installing them needs root (apt-get install ${packages[*]})" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    # wait for the dpkg lock rather than fail when another apt-get runs at the same time
    apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    $SUDO "${apt[@]}" install -y "${packages[@]}" >/dev/null 2>&1 \
        || { $SUDO "${apt[@]}" update >/dev/null && $SUDO "${apt[@]}" install -y "${packages[@]}" >/dev/null; }
    command -v node >/dev/null && command -v npm >/dev/null && command -v dot >/dev/null && [ -x "$rabbitmq_server" ]
fi

# the stamp is written after a successful `npm ci` only: an interrupted install is redone
validator=scripts/asyncapi
stamp=$validator/node_modules/.installed
if [ ! -e "$stamp" ] || [ "$validator/package-lock.json" -nt "$stamp" ] || [ "$validator/package.json" -nt "$stamp" ]; then
    # --ignore-scripts: the parser needs no install script (one dependency's is a telemetry ping)
    (cd "$validator" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$stamp"
fi
